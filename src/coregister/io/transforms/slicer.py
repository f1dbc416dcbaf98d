"""3D Slicer transforms: linear, B-spline and grid transforms as Slicer saves and loads them.

Direction, in Slicer's words: a transform node has a *to parent* and a *from
parent* direction. Slicer **saves** a transform to a file as ITK does,
**from parent** (the resampling direction) in **LPS** millimetres. Put the
moving volume under a transform node: its *to parent* maps the moving
volume's coordinates into the parent (world) space where the fixed volume
lies, so its *from parent*, the file's content, maps fixed (world) points
to moving points in LPS: exactly a coregister transform. So:

* a ``.tfm``/``.txt``/``.h5`` Slicer saved reads as our transform (fixed ->
  moving), and ours written as ``.tfm`` (linear, B-spline) or ``.h5``
  (anything with a grid transform) loads in Slicer with the same meaning:
  apply it to the moving volume and the volume lands on the fixed one;
* a grid transform saved as a displacement-field image (``.nrrd``,
  ``.nii.gz``, ``.mha``) holds *from parent* displacement vectors in LPS
  (Slicer writes NRRD ``space: left-posterior-superior``), one per voxel
  of the grid;
* the 4x4 matrix Slicer's Transforms module **displays** (and
  ``GetMatrixTransformToParent`` returns) is the *to parent* matrix in
  **RAS**: the inverse of ours, with the RAS/LPS flip.
  :func:`to_slicer_matrix` and :func:`from_slicer_matrix` convert it.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from coregister.conventions import point_map_ras_lps
from coregister.errors import GeometryError, UnsupportedFormatError
from coregister.image import SpatialImage
from coregister.io.transforms._field import (
    FieldParts,
    field_parts,
    read_field_image,
    sample_displacements,
    write_field_image,
)
from coregister.transforms import Affine, Transform, linear_members, read_transform

__all__ = ["FIELD_SUFFIXES", "from_slicer_matrix", "read_slicer", "to_slicer_matrix", "write_slicer"]

#: suffixes of displacement-field images (Slicer's grid transforms saved as images)
FIELD_SUFFIXES = (".nrrd", ".nhdr", ".nii.gz", ".nii", ".mha", ".mhd")


def to_slicer_matrix(transform: Transform) -> np.ndarray:
    """The 4x4 *to parent* RAS matrix Slicer shows for a linear transform (fixed -> moving, LPS) of ours.

    Examples
    --------
    >>> from coregister import Translation
    >>> to_slicer_matrix(Translation([1.0, 2.0, 3.0]))[:3, 3].tolist()   # to parent = inverse; LPS -> RAS
    [1.0, 2.0, -3.0]
    """
    members = linear_members(transform)
    if not transform.is_linear or len(members) != 1 or transform.ndim != 3:
        raise UnsupportedFormatError(f"Slicer's matrix is for a 3D linear transform, not a {transform.ndim}D {type(transform).__name__}")
    return np.asarray(np.linalg.inv(point_map_ras_lps(members[0].homogeneous)))


def from_slicer_matrix(matrix: np.ndarray) -> Affine:
    """Our transform (fixed -> moving, LPS) from the *to parent* RAS matrix Slicer shows for the moving volume's node.

    Examples
    --------
    >>> import numpy as np
    >>> to_parent = np.eye(4); to_parent[:3, 3] = [1.0, 2.0, -3.0]
    >>> from_slicer_matrix(to_parent).offset.tolist()
    [1.0, 2.0, 3.0]
    """
    m = np.asarray(matrix, dtype=float)
    if m.shape != (4, 4) or not np.allclose(m[3], [0, 0, 0, 1]):
        raise GeometryError(f"Slicer's matrix is 4x4 with last row 0 0 0 1; got {np.round(m, 6).tolist()}")
    return Affine.from_homogeneous(point_map_ras_lps(np.linalg.inv(m)))


def _is_field_image(path: Path) -> bool:
    return path.name.lower().endswith(FIELD_SUFFIXES)


def read_slicer(path: str | os.PathLike[str]) -> Transform:
    """Read a transform Slicer saved: an ITK file (``.tfm``, ``.txt``, ``.h5``, ``.mat``) or a grid image (``.nrrd``...)."""
    path = Path(path)
    if _is_field_image(path):
        return read_field_image(path)
    return read_transform(path)


def write_slicer(transform: Transform, path: str | os.PathLike[str], *, reference: SpatialImage | None = None) -> Path:
    """Write ``transform`` (fixed -> moving) for Slicer: an ITK ``.tfm``/``.h5``, or a grid image.

    A path ending in ``.nrrd``, ``.nii.gz`` or ``.mha`` writes the whole
    transform as one displacement-field image (a grid transform), sampled on
    the field's own grid or, for anything else, on ``reference``'s grid.
    A ``.h5`` holds any chain (fields included); a ``.tfm`` holds linear and
    B-spline transforms.
    """
    path = Path(path)
    if _is_field_image(path):
        parts = field_parts(transform)
        if parts is None:
            if reference is None:
                raise UnsupportedFormatError(
                    f"writing {str(path)!r} as a grid transform samples it on the fixed image's grid: give reference="
                )
            parts = FieldParts(sample_displacements(transform, reference), np.array(reference.origin),
                               np.array(reference.spacing), np.array(reference.direction))  # fmt: skip
        return write_field_image(parts, path)
    if path.suffix.lower() not in (".h5", ".hdf5") and _holds_field(transform):
        raise UnsupportedFormatError(f"a grid (displacement-field) transform goes into a .h5 file for Slicer, not {str(path)!r}")
    return transform.save(path)


def _holds_field(transform: Transform) -> bool:
    members = getattr(transform, "transforms", (transform,))
    return any(field_parts(m) is not None for m in members)
