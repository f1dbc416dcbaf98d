"""Displacement fields (ANTs ``*Warp.nii.gz``, Slicer grid transforms, elastix and DICOM deformation grids).

A displacement field maps a fixed-space point ``x`` to ``x + u(x)`` in moving
space, ``u`` sampled on a grid in LPS millimetres (ITK's
``DisplacementFieldTransform``: linear interpolation between samples, zero
displacement outside the grid). Files hold it as an ITK vector image: a NIfTI
of shape ``(x, y, z, 1, 3)`` with intent ``vector`` (ANTs), an NRRD or
MetaImage with vector pixels (Slicer), the vectors in **LPS** whatever the
container (NIfTI's RAS is not applied to the vectors).

The transform is :class:`coregister.transforms.DisplacementField`; the
readers and writers of this package work on its samples and grid as
:class:`FieldParts`, built by :func:`displacement_field` and taken apart by
:func:`field_parts`.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import SimpleITK as sitk

from coregister.errors import GeometryError, UnreadableInputError
from coregister.image import SpatialImage
from coregister.io._guard import check_path, guarded, within_memory
from coregister.io._text import one_line
from coregister.io.itk import check_header_claims
from coregister.transforms import DisplacementField, Transform, sampled_field

__all__ = [
    "FieldParts",
    "displacement_field",
    "field_parts",
    "read_field_image",
    "sample_displacements",
    "write_field_image",
]


@dataclass(frozen=True)
class FieldParts:
    """A displacement field's samples and grid.

    ``displacements`` has shape ``(*grid, d)`` with the grid in array order
    ``(z, y, x)``; vectors in LPS millimetres, ITK order ``(x, y, z)``.
    ``origin``, ``spacing`` (ITK order) and ``direction`` (columns) place the
    grid, as for a :class:`~coregister.SpatialImage`.
    """

    displacements: np.ndarray
    origin: np.ndarray
    spacing: np.ndarray
    direction: np.ndarray

    @property
    def ndim(self) -> int:
        return int(self.displacements.shape[-1])

    def grid_points(self) -> np.ndarray:
        """World (LPS) position of every sample, shape ``(*grid, d)``."""
        shape = self.displacements.shape[:-1]
        index = np.stack(np.meshgrid(*[np.arange(n) for n in shape[::-1]], indexing="ij"), axis=-1)  # (x, y[, z], d)
        index = np.moveaxis(index, list(range(self.ndim)), list(range(self.ndim))[::-1])  # grid axes -> (z, y, x)
        steps = self.direction * self.spacing[np.newaxis, :]
        return index @ steps.T + self.origin

    def to_sitk_image(self) -> sitk.Image:
        image = sitk.GetImageFromArray(np.ascontiguousarray(self.displacements, dtype=np.float64), isVector=True)
        image.SetOrigin(tuple(float(v) for v in self.origin))
        image.SetSpacing(tuple(float(v) for v in self.spacing))
        image.SetDirection(tuple(float(v) for v in self.direction.ravel()))
        return image

    @classmethod
    def from_sitk_image(cls, image: sitk.Image) -> FieldParts:
        ndim = image.GetDimension()
        if image.GetNumberOfComponentsPerPixel() != ndim:
            raise GeometryError(
                f"a {ndim}D displacement field needs {ndim} components per pixel, not "
                f"{image.GetNumberOfComponentsPerPixel()}"
            )
        return cls(
            np.asarray(sitk.GetArrayFromImage(image), dtype=np.float64),
            np.array(image.GetOrigin(), dtype=float),
            np.array(image.GetSpacing(), dtype=float),
            np.array(image.GetDirection(), dtype=float).reshape(ndim, ndim),
        )


def displacement_field(
    displacements: Any, *, origin: Any, spacing: Any, direction: Any = None
) -> DisplacementField:
    """A displacement-field transform (fixed -> moving) from its samples and grid.

    Parameters
    ----------
    displacements : array_like, shape ``(*grid, d)``
        Grid in array order ``(z, y, x)``; vectors in LPS mm, order ``(x, y[, z])``.
    origin, spacing : sequence of float
        ITK order ``(x, y[, z])``.
    direction : array_like (d, d), optional
        Columns: the world directions of the grid's index axes (identity).

    Examples
    --------
    >>> import numpy as np
    >>> u = np.zeros((2, 3, 4, 3)); u[..., 0] = 1.5          # 1.5 mm along x everywhere on the grid
    >>> field = displacement_field(u, origin=[0, 0, 0], spacing=[1, 1, 1])
    >>> field.transform_points([[1.0, 1.0, 0.5]]).tolist()
    [[2.5, 1.0, 0.5]]
    """
    values = np.array(displacements, dtype=np.float64)
    ndim = values.shape[-1] if values.ndim else 0
    if ndim not in (2, 3) or values.ndim != ndim + 1:
        raise GeometryError(f"displacements of shape {values.shape}: expected (*grid, d) with d = 2 or 3 grid axes")
    if not np.all(np.isfinite(values)):
        raise GeometryError("the displacement field holds NaN or infinite vectors; fill them (0 = no displacement)")
    grid = np.eye(ndim) if direction is None else np.array(direction, dtype=float).reshape(ndim, ndim)
    spacing_ = np.array(spacing, dtype=float).reshape(-1)
    if spacing_.size != ndim or np.any(spacing_ <= 0):
        raise GeometryError(f"spacing {spacing_.tolist()} must hold {ndim} positive values")
    corner = tuple(float(v) for v in np.array(origin, dtype=float).reshape(ndim))
    return DisplacementField(SpatialImage(values, origin=corner, spacing=tuple(float(v) for v in spacing_), direction=grid))


def field_parts(transform: Transform) -> FieldParts | None:
    """The samples and grid of a displacement-field transform, else ``None``."""
    if isinstance(transform, DisplacementField):
        grid = transform.field
        return FieldParts(transform.vectors, np.array(grid.origin, dtype=float), np.array(grid.spacing, dtype=float),
                          np.asarray(grid.direction, dtype=float).reshape(grid.ndim, grid.ndim))
    return None


def sample_displacements(transform: Transform, grid: FieldParts | Any) -> np.ndarray:
    """``transform(x) - x`` at every point of a grid (a :class:`FieldParts` or a SpatialImage), shape ``(*grid, d)``.

    The vectors of :func:`coregister.transforms.sampled_field` (ITK's
    ``TransformToDisplacementFieldFilter``: the transform's own values at
    the grid points, not an interpolation).
    """
    if isinstance(grid, FieldParts):
        grid = SpatialImage(np.zeros(grid.displacements.shape[:-1], np.uint8), origin=tuple(map(float, grid.origin)),
                            spacing=tuple(map(float, grid.spacing)), direction=grid.direction)
    return sampled_field(transform, grid).vectors


@guarded("displacement field")
def read_field_image(path: str | os.PathLike[str]) -> DisplacementField:
    """Read a displacement field stored as an ITK vector image (ANTs ``*Warp.nii.gz``, Slicer ``.nrrd``/``.mha``).

    The vectors are taken as they are stored, world (LPS) millimetres, which
    is what ITK, ANTs and 3D Slicer write whatever the container's own
    convention. Before a voxel is read, the header is checked as the image
    readers check theirs (:func:`~coregister.io.itk.check_header_claims`):
    a field the file cannot hold, or one that would need more than the
    allowed memory once held as float64, is refused. SimpleITK's own
    messages are logged, not printed.

    Raises
    ------
    UnreadableInputError
        Not a field (components per pixel other than its dimension), a
        header claiming more than the file holds, a file SimpleITK cannot read.
    MemoryLimitError
        The field would need more than the allowed memory.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> u = np.zeros((2, 3, 4, 3)); u[..., 0] = 1.5
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "x1Warp.nii.gz"
    >>> _ = displacement_field(u, origin=[0, 0, 0], spacing=[1, 1, 1]).save(path)
    >>> read_field_image(path).transform_points([[1.0, 1.0, 0.5]]).tolist()
    [[2.5, 1.0, 0.5]]
    """
    from coregister._stderr import captured_stderr

    path = check_path(path)
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        with captured_stderr(f"reading {path}"):
            reader.ReadImageInformation()
        components, dimension = int(reader.GetNumberOfComponents()), int(reader.GetDimension())
        if components != dimension:
            raise UnreadableInputError(
                f"{str(path)!r} is an image with {components} component(s) per pixel, not a {dimension}D "
                "displacement field (one world component per axis); read images with coregister.read"
            )
        stored = check_header_claims(reader, path, what="displacement field")
        values = math.prod(int(n) for n in reader.GetSize()) * components
        within_memory(stored + 2 * 8 * values, path, f"a {dimension}D field of {values // components} vectors, "
                      "read and held as float64")
        with captured_stderr(f"reading {path}"):
            image = reader.Execute()
    except RuntimeError as exc:
        raise UnreadableInputError(f"SimpleITK cannot read {str(path)!r}: {one_line(exc)}") from exc
    return DisplacementField.from_sitk_image(sitk.Cast(image, sitk.sitkVectorFloat64))


def write_field_image(parts: FieldParts, path: Path) -> Path:
    """Write a field as an ITK vector image (a 5D NIfTI ``(x, y, z, 1, 3)`` with intent vector for ``.nii.gz``), atomically."""
    from coregister._files import atomic_path
    from coregister._stderr import captured_stderr

    image = parts.to_sitk_image()
    with atomic_path(path) as tmp, captured_stderr(f"writing {path}"):  # the temporary name keeps the suffix (ITK's writer)
        sitk.WriteImage(image, str(tmp))
    return path
