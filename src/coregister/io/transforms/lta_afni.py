"""FreeSurfer LTA and AFNI matrices, converted by NiTransforms (PyPI ``nitransforms``, extra ``interop``).

NiTransforms (the converter fMRIPrep uses) reads and writes these formats
right, including their image-dependent conventions (LTA's RAS/voxel types
and volume geometries, AFNI's oblique "deoblique" handling); coregister
lets it do so. Its linear transforms map **reference** points to **moving**
points in **RAS**, ours the same in LPS: :func:`~coregister.conventions.point_map_ras_lps`
is the only conversion. Both formats need the reference (fixed) and moving
images; they are handed to NiTransforms as header-only NIfTI images built
from their geometry.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from coregister.conventions import flip_ras_lps, point_map_ras_lps
from coregister.errors import MissingDependencyError, UnreadableInputError, UnsupportedFormatError
from coregister.image import SpatialImage
from coregister.transforms import Affine, Transform, linear_members

__all__ = ["NITRANSFORMS_FORMATS", "read_nitransforms", "write_nitransforms"]

#: our format name -> NiTransforms' ``fmt``
NITRANSFORMS_FORMATS = {"lta": "fs", "afni": "afni"}


def _linear_module() -> Any:
    try:
        import nitransforms.linear as ntl
    except ImportError as exc:
        raise MissingDependencyError(
            "FreeSurfer LTA and AFNI matrices are converted by NiTransforms: pip install 'coregister[interop]'"
        ) from exc
    return ntl


def _header_image(image: SpatialImage) -> Any:
    """A NIfTI image with ``image``'s grid and no data to speak of (a broadcast zero), for NiTransforms."""
    import nibabel as nib

    if image.ndim != 3:
        raise UnsupportedFormatError(f"LTA and AFNI matrices are 3D; the image is {image.ndim}D")
    return nib.Nifti1Image(np.broadcast_to(np.uint8(0), tuple(image.size)), flip_ras_lps(image.affine))


def read_nitransforms(
    path: str | os.PathLike[str], fmt: str, *, reference: SpatialImage, moving: SpatialImage
) -> Affine:
    """Read an LTA (``fmt="lta"``) or AFNI (``fmt="afni"``) matrix as our transform (reference -> moving, LPS)."""
    ntl = _linear_module()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            value = ntl.load(Path(path), fmt=NITRANSFORMS_FORMATS[fmt], reference=_header_image(reference),
                             moving=_header_image(moving))  # fmt: skip
    except (ValueError, TypeError, KeyError, OSError) as exc:
        raise UnreadableInputError(f"NiTransforms cannot read {str(path)!r} as {fmt}: {exc}") from exc
    matrix = np.asarray(value.matrix, dtype=float)
    if matrix.shape != (4, 4):
        raise UnsupportedFormatError(f"{str(path)!r} holds {matrix.shape[0]} matrices; coregister reads one")
    return Affine.from_homogeneous(point_map_ras_lps(matrix))


def write_nitransforms(
    transform: Transform, path: str | os.PathLike[str], fmt: str, *, reference: SpatialImage, moving: SpatialImage
) -> Path:
    """Write a linear transform (reference -> moving, LPS) as an LTA or AFNI matrix through NiTransforms."""
    from coregister._files import atomic_path

    ntl = _linear_module()
    members = linear_members(transform)
    if not transform.is_linear or len(members) != 1:
        raise UnsupportedFormatError(f"{fmt} holds one linear map, not a {type(transform).__name__}")
    ras = point_map_ras_lps(members[0].homogeneous)
    path = Path(path)
    with atomic_path(path) as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ntl.Affine(ras, reference=_header_image(reference)).to_filename(
            tmp, fmt=NITRANSFORMS_FORMATS[fmt], moving=_header_image(moving)
        )
    return path
