"""Displacement fields (ANTs ``*Warp.nii.gz``, Slicer grid transforms, elastix and DICOM deformation grids).

A displacement field maps a fixed-space point ``x`` to ``x + u(x)`` in moving
space, ``u`` sampled on a grid in LPS millimetres (ITK's
``DisplacementFieldTransform``: linear interpolation between samples, zero
displacement outside the grid). Files hold it as an ITK vector image: a NIfTI
of shape ``(x, y, z, 1, 3)`` with intent ``vector`` (ANTs), an NRRD or
MetaImage with vector pixels (Slicer), the vectors in **LPS** whatever the
container (NIfTI's RAS is not applied to the vectors).

:class:`DisplacementField` here is a small stand-in until
:mod:`coregister.transforms` has a displacement-field transform of its own.
Only :func:`displacement_field` (build one) and :func:`field_parts` (take one
apart) know the class; every reader and writer in this package goes through
them, so switching to the shared class changes those two functions.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import SimpleITK as sitk

from coregister.errors import GeometryError, UnreadableInputError
from coregister.transforms import Transform

__all__ = [
    "DisplacementField",
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


@dataclass(frozen=True, eq=False)
class DisplacementField(Transform):
    """A dense displacement field: fixed-space ``x`` maps to ``x + u(x)`` in moving space (LPS mm).

    ``u`` is linearly interpolated between the samples of ``parts`` and is
    zero outside the grid, as ITK's ``DisplacementFieldTransform`` does. It
    has no closed-form inverse (ANTs writes the inverse as a second field,
    ``*InverseWarp.nii.gz``).

    Examples
    --------
    >>> import numpy as np
    >>> u = np.zeros((2, 3, 4, 3)); u[..., 0] = 1.5          # 1.5 mm along x everywhere on the grid
    >>> field = displacement_field(u, origin=[0, 0, 0], spacing=[1, 1, 1])
    >>> field.transform_points([[1.0, 1.0, 0.5]]).tolist()
    [[2.5, 1.0, 0.5]]
    """

    parts: FieldParts
    kind: ClassVar[str] = "displacement_field"

    @property
    def ndim(self) -> int:
        return self.parts.ndim

    def to_sitk(self) -> sitk.Transform:
        return sitk.DisplacementFieldTransform(self.parts.to_sitk_image())

    def to_dict(self) -> dict[str, Any]:
        return {
            "type": "DisplacementField",
            "ndim": self.ndim,
            "fixed_to_moving": True,
            "grid_shape": list(self.parts.displacements.shape[:-1]),
            "grid_origin": self.parts.origin.tolist(),
            "grid_spacing": self.parts.spacing.tolist(),
            "grid_direction": self.parts.direction.tolist(),
            "max_displacement_mm": float(np.linalg.norm(self.parts.displacements, axis=-1).max(initial=0.0)),
        }


def displacement_field(
    displacements: Any, *, origin: Any, spacing: Any, direction: Any = None
) -> Transform:
    """A displacement-field transform (fixed -> moving) from its samples and grid.

    Parameters
    ----------
    displacements : array_like, shape ``(*grid, d)``
        Grid in array order ``(z, y, x)``; vectors in LPS mm, order ``(x, y[, z])``.
    origin, spacing : sequence of float
        ITK order ``(x, y[, z])``.
    direction : array_like (d, d), optional
        Columns: the world directions of the grid's index axes (identity).
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
    values.flags.writeable = False
    parts = FieldParts(values, np.array(origin, dtype=float).reshape(ndim), spacing_, grid)
    return DisplacementField(parts)


def field_parts(transform: Transform) -> FieldParts | None:
    """The samples and grid of a displacement-field transform, else ``None``."""
    if isinstance(transform, DisplacementField):
        return transform.parts
    return None


def sample_displacements(transform: Transform, grid: FieldParts | Any) -> np.ndarray:
    """``transform(x) - x`` at every point of a grid (a :class:`FieldParts` or a SpatialImage), shape ``(*grid, d)``.

    ITK's ``TransformToDisplacementFieldFilter`` evaluates the transform at
    every grid point (in C++, on all threads); the values are the transform's
    own, not an interpolation.
    """
    if isinstance(grid, FieldParts):
        origin, spacing, direction, shape = grid.origin, grid.spacing, grid.direction, grid.displacements.shape[:-1]
    else:
        origin, spacing, direction = np.array(grid.origin), np.array(grid.spacing), np.array(grid.direction)
        shape = grid.shape[: grid.ndim]
    sampler = sitk.TransformToDisplacementFieldFilter()
    sampler.SetOutputPixelType(sitk.sitkVectorFloat64)
    sampler.SetSize([int(n) for n in shape[::-1]])
    sampler.SetOutputOrigin([float(v) for v in origin])
    sampler.SetOutputSpacing([float(v) for v in spacing])
    sampler.SetOutputDirection([float(v) for v in np.asarray(direction).ravel()])
    return np.asarray(sitk.GetArrayFromImage(sampler.Execute(transform.to_sitk())), dtype=np.float64)


def read_field_image(path: str | os.PathLike[str]) -> Transform:
    """Read a displacement field written as an ITK vector image (ANTs ``*Warp.nii.gz``, Slicer ``.nrrd``/``.mha``).

    The vectors are taken as they are stored, LPS millimetres, which is what
    ITK, ANTs and 3D Slicer write whatever the container's own convention.
    """
    path = Path(path)
    try:
        image = sitk.ReadImage(str(path))
    except RuntimeError as exc:
        raise UnreadableInputError(f"SimpleITK cannot read the displacement field {str(path)!r}: {str(exc).strip().splitlines()[-1]}") from exc
    if image.GetNumberOfComponentsPerPixel() != image.GetDimension():
        raise UnreadableInputError(
            f"{str(path)!r} is not a displacement field: {image.GetNumberOfComponentsPerPixel()} component(s) per "
            f"voxel on a {image.GetDimension()}D grid (a field holds one vector of {image.GetDimension()} per voxel)"
        )
    parts = FieldParts.from_sitk_image(image)
    return displacement_field(parts.displacements, origin=parts.origin, spacing=parts.spacing, direction=parts.direction)


def write_field_image(parts: FieldParts, path: Path) -> Path:
    """Write a field as an ITK vector image (a 5D NIfTI ``(x, y, z, 1, 3)`` with intent vector for ``.nii.gz``), atomically."""
    from coregister._files import atomic_path

    with atomic_path(path) as tmp:  # the temporary name keeps the suffix, which picks ITK's writer
        sitk.WriteImage(parts.to_sitk_image(), str(tmp))
    return path
