"""NIfTI-1/-2 (``.nii``, ``.nii.gz``) through nibabel.

The files are nibabel's; the crossings (nibabel's RAS world to ITK's LPS,
its ``(i, j, k)`` array to ``(z, y, x)``, the header fields kept in
``meta``) are those of :meth:`coregister.SpatialImage.from_nibabel` and
:meth:`~coregister.SpatialImage.to_nibabel`, done in one place
(:mod:`coregister.image._nibabel`).

Which of the two NIfTI affines is used follows nibabel: the sform when
``sform_code > 0``, else the qform. ITK (and so SimpleITK, ANTs, elastix)
takes the sform only when ``sform_code == 1`` or ``qform_code == 0``; a file
whose two affines disagree therefore lands in different places in the two
families of tools. :func:`read_nifti` warns about it
(:class:`~coregister.errors.GeometryWarning`) and lets you choose with
``affine_source=``. :func:`write_nifti` writes sform = qform, so every
reader agrees on our outputs.
"""

from __future__ import annotations

import gzip
import logging
import os
import zlib
from pathlib import Path

import nibabel as nib
from nibabel.filebasedimages import ImageFileError

from coregister._files import atomic_path
from coregister.errors import UnreadableInputError, UnsupportedFormatError
from coregister.image import SpatialImage
from coregister.image._nibabel import image_parts, nifti_image
from coregister.io._text import one_line

__all__ = ["read_nifti", "write_nifti"]

logger = logging.getLogger(__name__)

_SUFFIXES = (".nii", ".nii.gz")


def _load_unnamed(path: Path) -> nib.Nifti1Image | nib.Nifti2Image:
    """A NIfTI file whose name has no ``.nii``/``.nii.gz`` (nibabel picks its reader by name): from its bytes.

    Gzip is recognised by its magic number; NIfTI-2 by its header size (540,
    against NIfTI-1's 348, in either byte order). The whole file is read
    into memory.
    """
    data = path.read_bytes()
    if data[:2] == b"\x1f\x8b":
        data = gzip.decompress(data)
    sizeof_hdr = {int.from_bytes(data[:4], order) for order in ("little", "big")}  # type: ignore[arg-type]
    if 540 in sizeof_hdr:
        return nib.Nifti2Image.from_bytes(data)
    if 348 in sizeof_hdr and data[344:348] == b"ni1\x00":
        raise ImageFileError("a NIfTI-1 header of a .hdr/.img pair: the voxels are in another file; rename it .hdr")
    return nib.Nifti1Image.from_bytes(data)


def read_nifti(path: str | os.PathLike[str], *, volume: int | None = None, affine_source: str = "auto") -> SpatialImage:
    """Read a NIfTI-1 or NIfTI-2 file (``.nii``, ``.nii.gz``) into a :class:`~coregister.SpatialImage`.

    Parameters
    ----------
    path : path-like
        The file.
    volume : int, optional
        For a 4D file, read only this volume (negative counts from the end)
        as a 3D image. Without it, a 4D file becomes a 3D image with a
        trailing time axis.
    affine_source : {"auto", "sform", "qform"}
        ``"auto"`` follows nibabel (sform when ``sform_code > 0``, else
        qform). Name one form to override, for example ``"qform"`` to read a
        file as ITK does when its two affines disagree.

    Returns
    -------
    SpatialImage
        Geometry in ITK/LPS millimetres (a file whose xyzt units say metres
        or microns is converted to mm, as ITK does; the unit is kept in
        ``meta`` and written back). Values have ``scl_slope`` and
        ``scl_inter`` applied, in the smallest dtype that holds them exactly
        (an unscaled ``int16`` file stays ``int16``). ``meta`` holds
        ``source_path``, ``format`` (``"nifti"``), ``affine_source``
        (``"sform"``, ``"qform"`` or ``"pixdim"``), ``stored_dtype``,
        ``rescale_slope``, ``rescale_intercept``, ``trailing_axis``
        (``"none"``, ``"time"``, ``"vector"``) and ``nifti`` (the header
        fields :func:`write_nifti` writes back).

    Raises
    ------
    UnreadableInputError
        Missing, truncated or corrupt file.
    GeometryError
        ``affine_source`` names a form whose code is 0.

    Warns
    -----
    GeometryWarning
        sform and qform disagree (and ``affine_source="auto"``), or the file
        has neither.

    Examples
    --------
    >>> import numpy as np, tempfile, pathlib
    >>> from coregister import SpatialImage
    >>> img = SpatialImage(np.arange(24, dtype=np.int16).reshape(2, 3, 4), origin=(1, 2, 3), spacing=(1, 1, 2.5))
    >>> path = write_nifti(img, pathlib.Path(tempfile.mkdtemp()) / "a.nii.gz")
    >>> back = read_nifti(path)
    >>> back.same_geometry(img), np.array_equal(back.array, img.array), back.dtype
    (True, True, dtype('int16'))
    >>> back.meta["affine_source"], back.orientation
    ('sform', 'LPS')
    """
    path = Path(path)
    if not path.is_file():
        raise UnreadableInputError(f"{str(path)!r} does not exist or is not a file; check the path")
    try:
        image = nib.load(path) if path.name.lower().endswith(_SUFFIXES) else _load_unnamed(path)
    except (ImageFileError, OSError, EOFError, ValueError, zlib.error) as exc:
        raise UnreadableInputError(
            f"{str(path)!r} is not a readable NIfTI file ({one_line(exc)}); check that it is complete"
        ) from exc
    if not isinstance(image, nib.Nifti1Image | nib.Nifti2Image):
        raise UnsupportedFormatError(f"{str(path)!r} is a {type(image).__name__}, not a single-file NIfTI; convert it")
    parts = image_parts(image, volume=volume, affine_source=affine_source, name=repr(str(path)))
    parts["meta"] = {"source_path": str(path), **parts["meta"]}
    return SpatialImage(**parts)


# --------------------------------------------------------------------- writing
def write_nifti(image: SpatialImage, path: str | os.PathLike[str]) -> Path:
    """Write ``image`` as NIfTI-1 (``.nii`` or ``.nii.gz``), atomically.

    The sform and the qform are both the image's geometry (LPS converted
    back to RAS), so nibabel, ITK and every other reader agree on it. Their
    codes come from ``image.meta["nifti"]`` when the image was read from a
    NIfTI file; otherwise (or when both were 0) both are 1 (scanner), as ITK
    writes. Header fields kept in ``meta["nifti"]`` (xyzt units, descrip,
    intent, dim_info, slice timing, cal_min/max, time step) are written back,
    and so are ``scl_slope``/``scl_inter`` with the stored dtype when the
    values still invert to it exactly (otherwise the values are written
    unscaled in their own dtype: nothing is lost).

    A 3D image with a trailing axis becomes a 4D file; a 2D image a 2D file.
    2D images with channels are refused (use ``.mha``, ``.nrrd`` or ``.tif``).

    Parameters
    ----------
    image : SpatialImage
    path : path-like
        Ends in ``.nii`` or ``.nii.gz``; the folder must exist.

    Returns
    -------
    Path
        ``path``.

    Examples
    --------
    >>> import numpy as np, tempfile, pathlib, nibabel
    >>> from coregister import SpatialImage
    >>> img = SpatialImage(np.zeros((2, 3, 4), np.float32), origin=(10, 20, 30), spacing=(1, 2, 3))
    >>> out = write_nifti(img, pathlib.Path(tempfile.mkdtemp()) / "b.nii")
    >>> nibabel.load(out).affine[:3, 3].tolist()   # RAS on disk
    [-10.0, -20.0, 30.0]
    """
    path = Path(path)
    if not path.name.lower().endswith((".nii", ".nii.gz")):
        raise UnsupportedFormatError(f"write_nifti needs a .nii or .nii.gz path, got {str(path)!r}")
    if image.ndim == 2 and image.has_channels:
        raise UnsupportedFormatError(
            f"cannot write a 2D image with {image.n_channels} channels to NIfTI ({str(path)!r}); "
            "write .mha, .nrrd or .tif instead, or pick a channel with image.channel(i)"
        )
    nifti = nifti_image(image, name=f"writing {str(path)!r}", stored=True)
    with atomic_path(path) as tmp:
        nifti.to_filename(tmp)
    header = nifti.header
    logger.debug("wrote %s: %s %s, sform/qform codes %d/%d", path, nifti.shape, header.get_data_dtype(),
                 int(header["sform_code"]), int(header["qform_code"]))
    return path
