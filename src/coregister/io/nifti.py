"""NIfTI-1/-2 (``.nii``, ``.nii.gz``) through nibabel.

The crossings happen here and nowhere else in this format's path: nibabel's
RAS world becomes ITK's LPS (:func:`~coregister.conventions.flip_ras_lps`)
and its ``(i, j, k)`` array becomes ``(z, y, x)``
(:func:`~coregister.conventions.ijk_to_zyx`).

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
from coregister.conventions import flip_ras_lps, geometry_from_affine, ijk_to_zyx, zyx_to_ijk
from coregister.errors import (
    ConfigError,
    GeometryError,
    GeometryWarning,
    UnreadableInputError,
    UnsupportedFormatError,
)
from coregister.image import SpatialImage
from coregister.io._guard import check_path, claim_within_file, deflate_bound, guarded, within_memory
from coregister.io._scaling import apply_rescale, is_identity_scaling, unapply_rescale
from coregister.io._text import one_line
from coregister.io._warn import warn

__all__ = ["read_nifti", "write_nifti"]

logger = logging.getLogger(__name__)

_AFFINE_SOURCES = ("auto", "sform", "qform")
#: affines whose voxel-corner positions differ by more than this (mm) "disagree"
_DISAGREE_MM = 1e-3
_DEFAULT_XFORM_CODE = 1  # scanner_anat: the code ITK writes; both nibabel and ITK then read the sform


def _text(value: Any) -> str:
    raw = value.item() if hasattr(value, "item") else value
    if isinstance(raw, bytes):
        raw = raw.split(b"\x00", 1)[0].decode("latin-1")
    return str(raw).rstrip()


def _corners(shape: tuple[int, ...]) -> np.ndarray:
    extent = [(0, max(n - 1, 0)) for n in (tuple(shape[:3]) + (1, 1))[:3]]
    grid = np.array(np.meshgrid(*extent, indexing="ij")).reshape(3, -1)
    return np.vstack([grid, np.ones(grid.shape[1])])


def _max_disagreement_mm(a: np.ndarray, b: np.ndarray, shape: tuple[int, ...]) -> float:
    corners = _corners(shape)
    return float(np.max(np.linalg.norm((a @ corners - b @ corners)[:3], axis=0)))


#: NIfTI spatial units -> millimetres (coregister's medical geometry is in mm; ITK converts the same way)
_MM_PER_UNIT = {"meter": 1000.0, "mm": 1.0, "micron": 0.001, "unknown": 1.0}


def _to_mm(space_unit: str) -> np.ndarray:
    """Homogeneous scaling from the file's spatial unit to millimetres (applied to the world side)."""
    scale = _MM_PER_UNIT.get(space_unit, 1.0)
    return np.diag([scale, scale, scale, 1.0])


def _itk_choice(sform_code: int, qform_code: int) -> str:
    """The affine ITK's NiftiImageIO uses (measured with SimpleITK 2.5 for every code pair)."""
    if sform_code > 0 and (sform_code == 1 or qform_code == 0):
        return "sform"
    if qform_code > 0:
        return "qform"
    return "pixdim"


def _choose_affine(header: Any, shape: tuple[int, ...], affine_source: str, path: Path) -> tuple[np.ndarray, str]:
    sform_code, qform_code = int(header["sform_code"]), int(header["qform_code"])
    if affine_source not in _AFFINE_SOURCES:
        raise ConfigError(f"affine_source={affine_source!r} is not one of {_AFFINE_SOURCES}")
    if affine_source != "auto":
        code = sform_code if affine_source == "sform" else qform_code
        if code == 0:
            raise GeometryError(
                f"{str(path)!r} has {affine_source}_code 0 (no {affine_source}); "
                f"use affine_source='auto' or the other form"
            )
        affine = header.get_sform() if affine_source == "sform" else header.get_qform()
        return affine, affine_source
    if sform_code > 0:
        chosen, affine = "sform", header.get_sform()
    elif qform_code > 0:
        chosen, affine = "qform", header.get_qform()
    else:
        warn(
            f"{str(path)!r} has neither sform nor qform (both codes 0): geometry built from pixdim as nibabel does "
            "(ITK would put the origin at 0 instead); check the orientation before registering",
            GeometryWarning,
        )
        return header.get_base_affine(), "pixdim"
    if sform_code > 0 and qform_code > 0 and np.all(np.isfinite(header.get_sform())) and np.all(
        np.isfinite(header.get_qform())
    ):
        gap = _max_disagreement_mm(header.get_sform(), header.get_qform(), shape)
        if gap > _DISAGREE_MM:
            itk = _itk_choice(sform_code, qform_code)
            other = "qform" if chosen == "sform" else "sform"
            itk_says = (
                f"ITK/SimpleITK would choose differently (the {itk})"
                if itk != chosen
                else f"ITK/SimpleITK also uses the {itk}, other tools may not"
            )
            warn(
                f"{str(path)!r}: sform (code {sform_code}) and qform (code {qform_code}) disagree by up to "
                f"{gap:.3g} mm; read with the {chosen} as nibabel does, {itk_says}; "
                f"pass affine_source='{other}' to use the {other}",
                GeometryWarning,
            )
    return affine, chosen


def _header_fields(header: Any, sform_code: int, qform_code: int) -> dict[str, Any]:
    intent_name, intent_params, intent_label = header.get_intent()
    freq, phase, slice_ = header.get_dim_info()
    space_unit, time_unit = header.get_xyzt_units()
    zooms = header.get_zooms()
    return {
        "version": 2 if isinstance(header, nib.Nifti2Header) else 1,
        "sform_code": sform_code,
        "qform_code": qform_code,
        "xyzt_units": (space_unit, time_unit),
        "descrip": _text(header["descrip"]),
        "aux_file": _text(header["aux_file"]),
        "intent_code": int(header["intent_code"]),
        "intent": intent_name,
        "intent_params": tuple(float(p) for p in intent_params),
        "intent_name": intent_label,
        "dim_info": (freq, phase, slice_),
        "slice_code": int(header["slice_code"]),
        "slice_start": int(header["slice_start"]),
        "slice_end": int(header["slice_end"]),
        "slice_duration": float(header["slice_duration"]),
        "toffset": float(header["toffset"]),
        "cal_min": float(header["cal_min"]),
        "cal_max": float(header["cal_max"]),
        "time_step": float(zooms[3]) if len(zooms) > 3 else None,
    }


def _raw_proxy(proxy: ArrayProxy) -> ArrayProxy:
    """The same on-disk array without nibabel's scaling (we apply it ourselves, exactly)."""
    return ArrayProxy(
        proxy.file_like, (proxy.shape, proxy.dtype, proxy.offset, 1.0, 0.0), mmap=False, order=proxy.order
    )


def _spatial_slice(shape: tuple[int, ...], volume: int | None, path: Path) -> tuple[tuple[Any, ...], str]:
    """Index into the on-disk array, and what the trailing axis is: ``none``, ``time`` or ``vector``."""
    ndim = len(shape)
    if ndim > 5 or (ndim == 5 and shape[3] != 1):
        raise UnsupportedFormatError(
            f"{str(path)!r} has shape {shape}: coregister reads 2D, 3D, 4D (time) and 5D vector (i, j, k, 1, c) "
            "NIfTI; split the file with nibabel first"
        )
    trailing = {4: "time", 5: "vector"}.get(ndim, "none")
    count = shape[-1] if trailing != "none" else 1
    if volume is None:
        return ((slice(None),) * 3 + (0, slice(None)) if ndim == 5 else (slice(None),) * ndim), trailing
    if not -count <= volume < count:
        raise ConfigError(
            f"volume={volume} is out of range for {str(path)!r}, which has {count} volume(s) (0..{count - 1})"
        )
    if trailing == "none":
        return ((slice(None),) * ndim, "none")
    return ((slice(None),) * 3 + ((0,) if ndim == 5 else ()) + (volume,), "none")


def _geometry_2d(lps: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """In-plane geometry of a 2D file, or ``None`` when its plane is not ``z = 0`` (then read it as one slice)."""
    if np.any(lps[2, :2] != 0) or lps[2, 3] != 0 or np.any(lps[:2, 2] != 0):
        return None
    affine = np.eye(3)
    affine[:2, :2] = lps[:2, :2]
    affine[:2, 2] = lps[:2, 3]
    return geometry_from_affine(affine)


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
    sform_code, qform_code = int(header["sform_code"]), int(header["qform_code"])
    index, trailing = _spatial_slice(shape, volume, path)
    proxy = image.dataobj
    if not isinstance(proxy, ArrayProxy):  # nib.load always gives a proxy; anything else is a bug upstream
        raise UnreadableInputError(f"{str(path)!r}: nibabel returned {type(proxy).__name__}, not an on-disk array")
    _check_claims(header, shape, index, path, not is_identity_scaling(float(proxy.slope), float(proxy.inter)))
    affine, chosen = _choose_affine(header, shape, affine_source, path)
    _report_fixes(fixes, chosen, path)
    if not np.all(np.isfinite(affine)):
        raise GeometryError(
            f"{str(path)!r}: its {chosen} holds values that are not finite ({np.asarray(affine)[:3].round(4).tolist()}); "
            "re-export the file with its geometry"
        )
    try:
        stored = np.asarray(_raw_proxy(proxy)[index])
    except (OSError, EOFError, ValueError, zlib.error) as exc:
        raise UnreadableInputError(
            f"{str(path)!r} is truncated or corrupt: its data could not be read ({one_line(exc)}); re-copy or re-export the file"
        ) from exc
    native = np.dtype(stored.dtype.name)  # native byte order (anatomical.nii is big-endian)
    stored = stored.view(native) if stored.dtype.isnative else stored.astype(native)
    slope, intercept = float(proxy.slope), float(proxy.inter)
    values = apply_rescale(stored, slope, intercept)

    lps = _to_mm(header.get_xyzt_units()[0]) @ flip_ras_lps(affine)
    geometry = _geometry_2d(lps) if len(shape) == 2 else None
    if geometry is not None:
        array = ijk_to_zyx(values, 2)
    else:
        if values.ndim == 2:
            values = values[:, :, np.newaxis]
        geometry = geometry_from_affine(lps)
        array = ijk_to_zyx(values, 3)
    origin, spacing, direction = geometry
    fields = _header_fields(header, sform_code, qform_code)
    meta = {
        "source_path": str(path),
        "format": "nifti",
        "affine_source": chosen,
        "stored_dtype": stored.dtype.name,
        "rescale_slope": 1.0 if is_identity_scaling(slope, intercept) else slope,
        "rescale_intercept": 0.0 if is_identity_scaling(slope, intercept) else intercept,
        "trailing_axis": trailing,
        "nifti": fields,
    }
    if volume is not None and len(shape) >= 4:
        meta["volume"] = volume % shape[-1]
    logger.debug("read %s: shape %s, %s affine, %s -> %s", path, shape, chosen, stored.dtype, array.dtype)
    return SpatialImage(
        np.ascontiguousarray(array),
        origin=tuple(float(v) for v in origin),
        spacing=tuple(float(v) for v in spacing),
        direction=direction,
        meta=meta,
    )


# --------------------------------------------------------------------- writing
_WRITABLE_KINDS = "biufc"


def _stored_values(image: SpatialImage) -> tuple[np.ndarray, float | None, float | None]:
    """The array to put on disk and its scaling: the source's scaling when it inverts exactly, else none."""
    values = np.asarray(image.array)
    if values.dtype == bool:
        values = values.astype(np.uint8)
    elif values.dtype == np.float16:
        values = values.astype(np.float32)
    elif values.dtype.kind not in _WRITABLE_KINDS:
        raise UnsupportedFormatError(f"NIfTI cannot store dtype {values.dtype}; cast the array to a numeric dtype")
    meta = image.meta
    if meta.get("format") == "nifti" and "stored_dtype" in meta:
        slope, intercept = meta.get("rescale_slope"), meta.get("rescale_intercept")
        if not is_identity_scaling(slope, intercept):
            raw = unapply_rescale(values, slope, intercept, np.dtype(meta["stored_dtype"]))
            if raw is not None:
                return raw, slope, intercept
            logger.info("values no longer fit the source's scaling; writing them unscaled as %s", values.dtype)
    return values, None, None


def _ras_affine(image: SpatialImage, space_unit: str) -> np.ndarray:
    lps = image.affine
    if image.ndim == 2:
        full = np.eye(4)
        full[:2, :2] = lps[:2, :2]
        full[:2, 3] = lps[:2, 2]
        lps = full
    return flip_ras_lps(np.linalg.inv(_to_mm(space_unit)) @ lps)


def _fill_header(header: Any, fields: dict[str, Any]) -> None:
    header.set_xyzt_units(*fields.get("xyzt_units", ("mm", "sec")))
    header["descrip"] = fields.get("descrip", "")[:79].encode("latin-1", "replace")
    header["aux_file"] = fields.get("aux_file", "")[:23].encode("latin-1", "replace")
    if fields.get("intent_code"):
        header.set_intent(fields["intent_code"], fields.get("intent_params", ()), fields.get("intent_name", ""))
    if any(v is not None for v in fields.get("dim_info", ())):
        header.set_dim_info(*fields["dim_info"])
    for key in ("slice_code", "slice_start", "slice_end", "slice_duration", "toffset", "cal_min", "cal_max"):
        if key in fields:
            header[key] = fields[key]


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
    data, slope, intercept = _stored_values(image)
    data = zyx_to_ijk(data, image.ndim)
    fields = dict(image.meta.get("nifti", {})) if image.meta.get("format") == "nifti" else {}
    ras = _ras_affine(image, fields.get("xyzt_units", ("mm", "sec"))[0])
    sform_code = int(fields.get("sform_code", _DEFAULT_XFORM_CODE))
    qform_code = int(fields.get("qform_code", _DEFAULT_XFORM_CODE))
    if sform_code == 0 and qform_code == 0:
        sform_code = qform_code = _DEFAULT_XFORM_CODE
    direction = np.asarray(image.direction)
    if not np.allclose(direction.T @ direction, np.eye(image.ndim), atol=1e-6):
        sform_code, qform_code = sform_code or _DEFAULT_XFORM_CODE, qform_code or _DEFAULT_XFORM_CODE
        warn(
            f"writing {str(path)!r}: the direction is not orthonormal (sheared); the sform keeps it exactly "
            "(nibabel, FSL, SPM read it), but a qform cannot hold a shear and ITK-based tools (SimpleITK, ANTs, "
            "elastix) refuse sheared sforms and fall back to the qform, which drops the shear; "
            "resample onto an orthonormal grid for them",
            GeometryWarning,
        )

    nifti = nib.Nifti1Image(np.ascontiguousarray(data), ras, dtype=data.dtype)
    header = nifti.header
    header.set_sform(ras, code=sform_code)
    header.set_qform(ras, code=qform_code)
    if data.ndim == 4 and fields.get("time_step"):
        header.set_zooms(header.get_zooms()[:3] + (fields["time_step"],))
    _fill_header(header, fields)
    if slope is not None:
        header.set_slope_inter(slope, intercept)
    else:
        header.set_slope_inter(1.0, 0.0)
    with atomic_path(path, overwrite=overwrite, fix=OVERWRITE_FIX) as tmp:
        nifti.to_filename(tmp)
    logger.debug("wrote %s: %s %s, sform/qform codes %d/%d", path, data.shape, data.dtype, sform_code, qform_code)
    return path
