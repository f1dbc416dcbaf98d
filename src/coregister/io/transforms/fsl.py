"""FSL FLIRT matrices: the 4x4 text files of ``flirt -omat``, ``-init`` and ``-applyxfm``, and ``convert_xfm``.

Direction and coordinates (FLIRT's documentation, FSL FAQ "What is the format
of the matrix used by FLIRT"): a FLIRT matrix maps a point of the **input**
image (``-in``, our *moving* image) to the **reference** image (``-ref``, our
*fixed* image), both in FSL's *scaled-voxel* coordinates: voxel index times
voxel size (mm), with the origin at the centre of the first voxel. It does
not use either image's world (scanner) coordinates, which is why it means
nothing without both images. FSL works in a radiological voxel order: when
an image's NIfTI ``sform`` (or ``qform`` when ``sform_code`` is 0) has a
**positive determinant** (neurological storage, e.g. RAS), the first voxel
axis is flipped, ``x_fsl = (nx - 1 - i) * dx``; with a negative determinant
(e.g. LAS, radiological) ``x_fsl = i * dx``.

coregister's transforms go the other way, fixed (reference) world points to
moving world points, in LPS mm. For FLIRT matrix ``F``::

    ours = moving.affine @ inv(S_moving) @ inv(F) @ S_reference @ inv(reference.affine)

with ``affine`` the image's world-from-index matrix (LPS, index order
``(x, y, z)``, which is NIfTI's ``(i, j, k)``) and ``S`` the scaled-voxel
matrix above (:func:`scaled_voxel_matrix`). NiTransforms' ``fsl`` reader and
writer use the same relation (checked by the tests on every case).

FSL is 3D only; only linear maps are FLIRT matrices (``fnirt`` warps are not
read here).
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path

import numpy as np

from coregister.conventions import flip_ras_lps
from coregister.errors import GeometryError, UnreadableInputError, UnsupportedFormatError
from coregister.image import SpatialImage
from coregister.transforms import Affine, LinearTransform, Transform, linear_members

__all__ = ["flirt_matrix", "from_flirt_matrix", "read_fsl", "scaled_voxel_matrix", "write_fsl"]

logger = logging.getLogger(__name__)

_NUMBER = re.compile(r"^[\s\d.eE+\-]+$")


def _check_3d(image: SpatialImage, role: str) -> None:
    if image.ndim != 3:
        raise GeometryError(f"FSL FLIRT matrices are 3D; the {role} image is {image.ndim}D")


def scaled_voxel_matrix(image: SpatialImage) -> np.ndarray:
    """FSL's scaled-voxel coordinates from the image's ITK index ``(x, y, z)``: a 4x4 matrix.

    ``diag(spacing)``, with the first axis flipped (``(nx - 1 - i) * dx``)
    when the image's NIfTI affine has a positive determinant, as FSL does.
    The determinant is the same in RAS (NIfTI) and LPS (ours): the RAS/LPS
    flip negates two axes.

    Examples
    --------
    >>> import numpy as np
    >>> from coregister import SpatialImage
    >>> las = SpatialImage(np.zeros((2, 3, 4)), origin=(0, 0, 0), spacing=(2, 2, 3), direction=np.diag([1, -1, 1]))
    >>> scaled_voxel_matrix(las).tolist()   # LAS: radiological, no flip
    [[2.0, 0.0, 0.0, 0.0], [0.0, 2.0, 0.0, 0.0], [0.0, 0.0, 3.0, 0.0], [0.0, 0.0, 0.0, 1.0]]
    >>> ras = las.replace(direction=np.diag([-1, -1, 1]))
    >>> scaled_voxel_matrix(ras)[0].tolist()  # RAS: x_fsl = (4 - 1 - i) * 2
    [-2.0, 0.0, 0.0, 6.0]
    """
    _check_3d(image, "given")
    scale = np.diag([*image.spacing, 1.0])
    nifti_affine = flip_ras_lps(image.affine)
    if np.linalg.det(nifti_affine[:3, :3]) > 0:
        flip = np.eye(4)
        flip[0, 0] = -1.0
        flip[0, 3] = image.size[0] - 1
        return scale @ flip
    return scale


def from_flirt_matrix(matrix: np.ndarray, *, reference: SpatialImage, moving: SpatialImage) -> Affine:
    """Our transform (reference/fixed LPS -> moving LPS) from a FLIRT matrix (moving scaled-voxel -> reference).

    Parameters
    ----------
    matrix : ndarray (4, 4)
        As ``flirt -omat`` writes it: ``-in`` (moving) to ``-ref`` (reference).
    reference, moving : SpatialImage
        FLIRT's ``-ref`` and ``-in`` images.

    Examples
    --------
    >>> import numpy as np
    >>> from coregister import SpatialImage
    >>> grid = SpatialImage(np.zeros((10, 10, 10)), origin=(0, 0, 0), spacing=(1, 1, 1), direction=np.diag([1, -1, 1]))
    >>> shift = np.eye(4); shift[0, 3] = 2.0    # moving voxel x + 2 is the reference voxel x
    >>> from_flirt_matrix(shift, reference=grid, moving=grid).offset.tolist()
    [-2.0, 0.0, 0.0]
    """
    _check_3d(reference, "reference")
    _check_3d(moving, "moving")
    flirt = np.asarray(matrix, dtype=float)
    if flirt.shape != (4, 4) or not np.allclose(flirt[3], [0, 0, 0, 1], atol=1e-6):
        raise GeometryError(f"a FLIRT matrix is 4x4 with last row 0 0 0 1; got {np.round(flirt, 6).tolist()}")
    ours = (
        moving.affine
        @ np.linalg.inv(scaled_voxel_matrix(moving))
        @ np.linalg.inv(flirt)
        @ scaled_voxel_matrix(reference)
        @ np.linalg.inv(reference.affine)
    )
    return Affine.from_homogeneous(ours)


def flirt_matrix(transform: Transform, *, reference: SpatialImage, moving: SpatialImage) -> np.ndarray:
    """The FLIRT matrix (moving scaled-voxel -> reference) of a linear transform (reference -> moving, LPS).

    ``flirt -in MOVING -ref REFERENCE -applyxfm -init M`` with this matrix
    resamples the moving image as ``coregister.apply(transform, moving,
    reference=reference)`` does.
    """
    _check_3d(reference, "reference")
    _check_3d(moving, "moving")
    members = linear_members(transform)
    if not transform.is_linear or len(members) != 1:
        raise UnsupportedFormatError(
            f"a FLIRT matrix holds one linear map; {type(transform).__name__} is not linear: write it as ITK (.h5), "
            "ANTs or elastix"
        )
    linear: LinearTransform = members[0]
    return (
        scaled_voxel_matrix(reference)
        @ np.linalg.inv(reference.affine)
        @ np.linalg.inv(linear.homogeneous)
        @ moving.affine
        @ np.linalg.inv(scaled_voxel_matrix(moving))
    )


def parse_flirt(text: str, where: str) -> np.ndarray:
    """The 4x4 matrix of a FLIRT text file (4 rows of 4 numbers; blank lines ignored)."""
    rows = [line.split() for line in text.splitlines() if line.strip()]
    if len(rows) != 4 or any(len(r) != 4 for r in rows) or not all(_NUMBER.match(" ".join(r)) for r in rows):
        raise UnreadableInputError(f"{where} is not a FLIRT matrix: expected 4 lines of 4 numbers")
    try:
        return np.array(rows, dtype=float)
    except ValueError as exc:
        raise UnreadableInputError(f"{where} is not a FLIRT matrix: {exc}") from exc


def looks_like_flirt(text: str) -> bool:
    """Whether ``text`` is 4 lines of 4 numbers ending in ``0 0 0 1``."""
    try:
        matrix = parse_flirt(text, "text")
    except UnreadableInputError:
        return False
    return bool(np.allclose(matrix[3], [0, 0, 0, 1]))


def read_fsl(path: str | os.PathLike[str], *, reference: SpatialImage, moving: SpatialImage) -> Affine:
    """Read a FLIRT matrix file as our transform (reference/fixed -> moving, LPS mm); see the module notes."""
    path = Path(path)
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise UnreadableInputError(f"cannot read the FLIRT matrix {str(path)!r}: {exc}") from exc
    return from_flirt_matrix(parse_flirt(text, repr(str(path))), reference=reference, moving=moving)


def write_fsl(transform: Transform, path: str | os.PathLike[str], *, reference: SpatialImage, moving: SpatialImage) -> Path:
    """Write a linear transform as a FLIRT matrix file (``-in`` moving to ``-ref`` reference), atomically.

    Numbers are written with 17 significant digits (FSL reads any float
    format), so a read gives the same matrix to the last bit or two.
    """
    from coregister._files import atomic_path

    matrix = flirt_matrix(transform, reference=reference, moving=moving)
    matrix[3] = [0.0, 0.0, 0.0, 1.0]
    text = "\n".join("  ".join(f"{v:.17g}" for v in row) for row in matrix) + "\n"
    path = Path(path)
    with atomic_path(path) as tmp:
        tmp.write_text(text)
    return path
