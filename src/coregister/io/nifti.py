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

import contextlib
import logging
import math
import os
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
from nibabel.arrayproxy import ArrayProxy
from nibabel.filebasedimages import ImageFileError

from coregister._files import OVERWRITE_FIX, atomic_path, refuse_existing
from coregister._memory import max_memory
from coregister._scaling import is_identity_scaling
from coregister._warn import warn
from coregister.errors import GeometryError, GeometryWarning, UnreadableInputError, UnsupportedFormatError
from coregister.image import SpatialImage
from coregister.image._nibabel import image_parts, nifti_image, spatial_slice
from coregister.io._guard import check_path, claim_within_file, deflate_bound, guarded, within_memory
from coregister.io._text import one_line

__all__ = ["read_nifti", "write_nifti"]

logger = logging.getLogger(__name__)

_SUFFIXES = (".nii", ".nii.gz")


def _gunzip_bounded(data: bytes, path: Path) -> bytes:
    """``gzip.decompress`` that stops at the allowed memory instead of following a bomb to the end."""
    limit = max_memory()
    inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
    out = inflater.decompress(data, limit + 1)
    if len(out) > limit:
        within_memory(len(out), path, f"gzip data expanding past {len(out)} bytes")
    return out


def _load_unnamed(path: Path) -> nib.Nifti1Image | nib.Nifti2Image:
    """A NIfTI file whose name has no ``.nii``/``.nii.gz`` (nibabel picks its reader by name): from its bytes.

    Gzip is recognised by its magic number; NIfTI-2 by its header size (540,
    against NIfTI-1's 348, in either byte order). The whole file is read
    into memory (decompressed only up to the allowed memory).
    """
    data = path.read_bytes()
    if data[:2] == b"\x1f\x8b":
        data = _gunzip_bounded(data, path)
    sizeof_hdr = {int.from_bytes(data[:4], order) for order in ("little", "big")}  # type: ignore[arg-type]
    if 540 in sizeof_hdr:
        return nib.Nifti2Image.from_bytes(data)
    if 348 in sizeof_hdr and data[344:348] == b"ni1\x00":
        raise ImageFileError("a NIfTI-1 header of a .hdr/.img pair: the voxels are in another file; rename it .hdr")
    return nib.Nifti1Image.from_bytes(data)


def _check_claims(header: Any, shape: tuple[int, ...], index: tuple[Any, ...], path: Path, scaled: bool) -> None:
    """Refuse a header whose dimensions are absurd or whose pixels the file cannot hold, before reading them.

    An uncompressed file must hold ``vox_offset`` plus every voxel the
    header claims; a gzip file cannot expand by more than 1032 to 1; and the
    arrays the read makes (the stored values, their copy in array order,
    the scaled values in float64) must fit in the allowed memory.
    """
    if not shape or any(n <= 0 for n in shape):
        raise UnreadableInputError(
            f"{str(path)!r} has a broken header: its dimensions {shape} include 0 or a negative size; "
            "re-export the file"
        )
    itemsize = np.dtype(header.get_data_dtype()).itemsize
    total = math.prod(shape) * itemsize
    described = f"shape {shape}, {np.dtype(header.get_data_dtype()).name}"
    size = path.stat().st_size
    if path.name.lower().endswith(".gz") or _gzipped(path):
        claim_within_file(total, deflate_bound(size), path, described + ", gzip", what="NIfTI", compressed=size)
    else:
        offset = int(header["vox_offset"])
        claim_within_file(total, max(0, size - offset), path, described, what="NIfTI")
    selected = math.prod(len(range(*i.indices(n))) if isinstance(i, slice) else 1 for i, n in zip(index, shape, strict=False))
    within_memory(selected * (2 * itemsize + (16 if scaled else 0)), path, described)


def _gzipped(path: Path) -> bool:
    with open(path, "rb") as handle:
        return handle.read(2) == b"\x1f\x8b"


@contextlib.contextmanager
def _nibabel_reports() -> Iterator[list[str]]:
    """Collect what nibabel's header checks report while loading (it fixes some fields and prints a line for each).

    nibabel logs those fixes ("pixdim[1,2,3] should be positive; setting to
    abs of pixdim values") to its own stderr handler; the reader turns them
    into one GeometryWarning each, or an error when the fix would change the
    geometry it uses.
    """
    from nibabel import imageglobals

    messages: list[str] = []

    class _Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            messages.append(record.getMessage())

    target = imageglobals.logger
    handlers, propagate = list(target.handlers), target.propagate
    collect = _Collect()
    for handler in handlers:
        target.removeHandler(handler)
    target.addHandler(collect)
    target.propagate = False
    try:
        yield messages
    finally:
        target.removeHandler(collect)
        for handler in handlers:
            target.addHandler(handler)
        target.propagate = propagate


def _report_fixes(messages: list[str], chosen: str, path: Path) -> None:
    for message in dict.fromkeys(messages):
        if "non-zero" in message and chosen in ("qform", "pixdim"):
            raise GeometryError(
                f"{str(path)!r}: the {chosen} it is read with has a voxel size of 0 or NaN (nibabel: {message}); "
                "re-export the file with its voxel sizes"
            )
        warn(f"{str(path)!r}: nibabel fixed its header: {message}", GeometryWarning)


def _affine_choice(header: Any, affine_source: str) -> str:
    """Which form :func:`~coregister.image._nibabel.image_parts` reads a file's geometry from (no warnings here)."""
    if affine_source in ("sform", "qform"):
        return affine_source
    if int(header["sform_code"]) > 0:
        return "sform"
    return "qform" if int(header["qform_code"]) > 0 else "pixdim"


@guarded("NIfTI")
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
        Missing, truncated or corrupt file; a header whose dimensions are
        absurd or whose voxels the file cannot hold (checked before reading).
    MemoryLimitError
        The voxels would need more than the allowed memory
        (``COREGISTER_MAX_MEMORY``, ``--max-memory``).
    GeometryError
        ``affine_source`` names a form whose code is 0, or a geometry that is
        not finite or has zero spacing.

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
    path = check_path(path)
    try:
        with _nibabel_reports() as fixes:
            image = nib.load(path) if path.name.lower().endswith(_SUFFIXES) else _load_unnamed(path)
    except (ImageFileError, OSError, EOFError, ValueError, zlib.error) as exc:
        raise UnreadableInputError(
            f"{str(path)!r} is not a readable NIfTI file ({one_line(exc)}); check that it is complete"
        ) from exc
    if not isinstance(image, nib.Nifti1Image | nib.Nifti2Image):
        raise UnsupportedFormatError(f"{str(path)!r} is a {type(image).__name__}, not a single-file NIfTI; convert it")
    header = image.header
    shape = tuple(int(n) for n in image.shape)
    proxy = image.dataobj
    if not isinstance(proxy, ArrayProxy):  # nib.load always gives a proxy; anything else is a bug upstream
        raise UnreadableInputError(f"{str(path)!r}: nibabel returned {type(proxy).__name__}, not an on-disk array")
    index, _ = spatial_slice(shape, volume, repr(str(path)))
    _check_claims(header, shape, index, path, not is_identity_scaling(float(proxy.slope), float(proxy.inter)))
    _report_fixes(fixes, _affine_choice(header, affine_source), path)
    parts = image_parts(image, volume=volume, affine_source=affine_source, name=repr(str(path)))
    parts["meta"] = {"source_path": str(path), **parts["meta"]}
    return SpatialImage(**parts)


# --------------------------------------------------------------------- writing
def write_nifti(image: SpatialImage, path: str | os.PathLike[str], *, overwrite: bool = False) -> Path:
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
    overwrite : bool
        Replace an existing file at ``path`` (otherwise
        :class:`~coregister.errors.OutputExistsError`, before any work).

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
    refuse_existing(path, overwrite=overwrite, fix=OVERWRITE_FIX)
    if image.ndim == 2 and image.has_channels:
        raise UnsupportedFormatError(
            f"cannot write a 2D image with {image.n_channels} channels to NIfTI ({str(path)!r}); "
            "write .mha, .nrrd or .tif instead, or pick a channel with image.channel(i)"
        )
    nifti = nifti_image(image, name=f"writing {str(path)!r}", stored=True)
    with atomic_path(path, overwrite=overwrite, fix=OVERWRITE_FIX) as tmp:
        nifti.to_filename(tmp)
    header = nifti.header
    logger.debug("wrote %s: %s %s, sform/qform codes %d/%d", path, nifti.shape, header.get_data_dtype(),
                 int(header["sform_code"]), int(header["qform_code"]))
    return path
