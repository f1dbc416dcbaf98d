"""nibabel images <-> :class:`~coregister.SpatialImage`: the crossing behind ``from_nibabel``, ``to_nibabel`` and NIfTI files.

The crossings happen here and nowhere else on this path: nibabel's RAS
world becomes ITK's LPS (:func:`~coregister.conventions.flip_ras_lps`) and
its ``(i, j, k)`` array becomes ``(z, y, x)``
(:func:`~coregister.conventions.ijk_to_zyx`), both as views of the same
memory where the values need no conversion. :mod:`coregister.io.nifti`
reads and writes files through the same two functions.

Which of the two NIfTI affines is used follows nibabel: the sform when
``sform_code > 0``, else the qform (what ``image.affine`` holds). ITK (and
so SimpleITK, ANTs, elastix) takes the sform only when ``sform_code == 1``
or ``qform_code == 0``; an image whose two affines disagree therefore lands
in different places in the two families of tools: a
:class:`~coregister.errors.GeometryWarning` says so and ``affine_source=``
chooses. Converted back, the sform and the qform are both the image's
geometry, so every reader agrees on our outputs.
"""

from __future__ import annotations

import logging
import zlib
from typing import Any

import nibabel as nib
import numpy as np
from nibabel.arrayproxy import ArrayProxy

from coregister._scaling import apply_rescale, is_identity_scaling, unapply_rescale
from coregister._warn import warn
from coregister.conventions import flip_ras_lps, geometry_from_affine, ijk_to_zyx, zyx_to_ijk
from coregister.errors import (
    ConfigError,
    GeometryError,
    GeometryWarning,
    UnreadableInputError,
    UnsupportedFormatError,
)

__all__ = ["image_parts", "nifti_image", "spatial_slice"]

logger = logging.getLogger(__name__)

AFFINE_SOURCES = ("auto", "sform", "qform")
#: affines whose voxel-corner positions differ by more than this (mm) "disagree"
_DISAGREE_MM = 1e-3
DEFAULT_XFORM_CODE = 1  # scanner_anat: the code ITK writes; both nibabel and ITK then read the sform
#: NIfTI spatial units -> millimetres (coregister's medical geometry is in mm; ITK converts the same way)
_MM_PER_UNIT = {"meter": 1000.0, "mm": 1.0, "micron": 0.001, "unknown": 1.0}
_WRITABLE_KINDS = "biufc"


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


def to_mm(space_unit: str) -> np.ndarray:
    """Homogeneous scaling from a NIfTI spatial unit to millimetres (applied to the world side)."""
    scale = _MM_PER_UNIT.get(space_unit, 1.0)
    return np.diag([scale, scale, scale, 1.0])


def _itk_choice(sform_code: int, qform_code: int) -> str:
    """The affine ITK's NiftiImageIO uses (measured with SimpleITK 2.5 for every code pair)."""
    if sform_code > 0 and (sform_code == 1 or qform_code == 0):
        return "sform"
    if qform_code > 0:
        return "qform"
    return "pixdim"


def _choose_affine(header: Any, shape: tuple[int, ...], affine_source: str, name: str) -> tuple[np.ndarray, str]:
    sform_code, qform_code = int(header["sform_code"]), int(header["qform_code"])
    if affine_source not in AFFINE_SOURCES:
        raise ConfigError(f"affine_source={affine_source!r} is not one of {AFFINE_SOURCES}")
    if affine_source != "auto":
        code = sform_code if affine_source == "sform" else qform_code
        if code == 0:
            raise GeometryError(
                f"{name} has {affine_source}_code 0 (no {affine_source}); use affine_source='auto' or the other form"
            )
        affine = header.get_sform() if affine_source == "sform" else header.get_qform()
        return affine, affine_source
    if sform_code > 0:
        chosen, affine = "sform", header.get_sform()
    elif qform_code > 0:
        chosen, affine = "qform", header.get_qform()
    else:
        warn(
            f"{name} has neither sform nor qform (both codes 0): geometry built from pixdim as nibabel does "
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
                f"{name}: sform (code {sform_code}) and qform (code {qform_code}) disagree by up to "
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


def spatial_slice(shape: tuple[int, ...], volume: int | None, name: str) -> tuple[tuple[Any, ...], str]:
    """Index into the nibabel array, and what the trailing axis is: ``none``, ``time`` or ``vector``."""
    ndim = len(shape)
    if ndim > 5 or (ndim == 5 and shape[3] != 1):
        raise UnsupportedFormatError(
            f"{name} has shape {shape}: coregister reads 2D, 3D, 4D (time) and 5D vector (i, j, k, 1, c) "
            "NIfTI; split the file with nibabel first"
        )
    trailing = {4: "time", 5: "vector"}.get(ndim, "none")
    count = shape[-1] if trailing != "none" else 1
    if volume is None:
        return ((slice(None),) * 3 + (0, slice(None)) if ndim == 5 else (slice(None),) * ndim), trailing
    if not -count <= volume < count:
        raise ConfigError(f"volume={volume} is out of range for {name}, which has {count} volume(s) (0..{count - 1})")
    if trailing == "none":
        return ((slice(None),) * ndim, "none")
    return ((slice(None),) * 3 + ((0,) if ndim == 5 else ()) + (volume,), "none")


def _geometry_2d(lps: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """In-plane geometry of a 2D image, or ``None`` when its plane is not ``z = 0`` (then read it as one slice)."""
    if np.any(lps[2, :2] != 0) or lps[2, 3] != 0 or np.any(lps[:2, 2] != 0):
        return None
    affine = np.eye(3)
    affine[:2, :2] = lps[:2, :2]
    affine[:2, 2] = lps[:2, 3]
    return geometry_from_affine(affine)


def _native(values: np.ndarray) -> np.ndarray:
    """Native byte order (nibabel's ``anatomical.nii`` is big-endian): a view when it already is, else a copy."""
    native = np.dtype(values.dtype.name)
    return values.view(native) if values.dtype.isnative else values.astype(native)


def _values(image: Any, index: tuple[Any, ...], name: str) -> tuple[np.ndarray, str, float, float]:
    """``(values, stored dtype name, slope, intercept)`` of a nibabel image.

    A file-backed array is read raw and rescaled exactly here (an unscaled
    ``int16`` file stays ``int16``); an in-memory array is the values
    themselves (no copy), and its header's data type and scaling say how it
    is to be stored.
    """
    proxy = image.dataobj
    if isinstance(proxy, ArrayProxy):
        try:
            stored = _native(np.asarray(_raw_proxy(proxy)[index]))
        except (OSError, EOFError, ValueError, zlib.error) as exc:
            detail = " ".join(str(exc).split())[:300] or type(exc).__name__
            raise UnreadableInputError(
                f"{name} is truncated or corrupt: its data could not be read ({detail}); re-copy or re-export the file"
            ) from exc
        slope, intercept = float(proxy.slope), float(proxy.inter)
        return apply_rescale(stored, slope, intercept), stored.dtype.name, slope, intercept
    values = _native(np.asanyarray(proxy)[index])
    header = image.header
    stored_dtype = np.dtype(header.get_data_dtype()).name if hasattr(header, "get_data_dtype") else values.dtype.name
    raw_slope, raw_intercept = header.get_slope_inter() if hasattr(header, "get_slope_inter") else (None, None)
    slope = 1.0 if raw_slope is None or not np.isfinite(raw_slope) else float(raw_slope)
    intercept = 0.0 if raw_intercept is None or not np.isfinite(raw_intercept) else float(raw_intercept)
    return values, stored_dtype, slope, intercept


def image_parts(
    image: Any, *, volume: int | None = None, affine_source: str = "auto", name: str | None = None
) -> dict[str, Any]:
    """The :class:`~coregister.SpatialImage` fields of a nibabel image (``SpatialImage(**parts)``).

    Parameters
    ----------
    image : nibabel image
        A NIfTI-1 or NIfTI-2 image (its header fields are kept in ``meta``),
        or any other nibabel spatial image (MGH, MINC...: geometry from its
        ``affine``).
    volume : int, optional
        For a 4D image, take only this volume (negative counts from the end).
    affine_source : {"auto", "sform", "qform"}
        ``"auto"``: ``image.affine`` (nibabel's choice: the sform when
        ``sform_code > 0``, else the qform). Name one form to override.
    name : str, optional
        How messages name the image (default: its file name, or "the nibabel image").
    """
    if not isinstance(image, nib.spatialimages.SpatialImage):
        raise UnsupportedFormatError(f"a {type(image).__name__} is not a nibabel spatial image; give a nibabel image")
    filename = image.get_filename() if hasattr(image, "get_filename") else None
    name = name or (repr(str(filename)) if filename else "the nibabel image")
    shape = tuple(int(n) for n in image.shape)
    header: Any = image.header
    nifti = isinstance(image, nib.Nifti1Pair | nib.Nifti2Pair)
    index, trailing = spatial_slice(shape, volume, name)
    if nifti:
        sform_code, qform_code = int(header["sform_code"]), int(header["qform_code"])
        best = header.get_best_affine()
        if affine_source == "auto" and not np.allclose(image.affine, best, rtol=0, atol=1e-9, equal_nan=True):
            affine, chosen = np.asarray(image.affine, float), "affine"  # set in memory after the header was made
        else:
            affine, chosen = _choose_affine(header, shape, affine_source, name)
        space_unit = header.get_xyzt_units()[0]
    else:
        if affine_source != "auto":
            raise ConfigError(f"affine_source={affine_source!r} applies to NIfTI images; {name} is a {type(image).__name__}")
        affine, chosen, space_unit = np.asarray(image.affine, float), "affine", "mm"
    if not np.all(np.isfinite(affine)):
        raise GeometryError(
            f"{name}: its {chosen} holds values that are not finite ({np.asarray(affine)[:3].round(4).tolist()}); "
            "re-export the file with its geometry"
        )
    values, stored_dtype, slope, intercept = _values(image, index, name)

    lps = to_mm(space_unit) @ flip_ras_lps(affine)
    geometry = _geometry_2d(lps) if len(shape) == 2 else None
    if geometry is not None:
        array = ijk_to_zyx(values, 2)
    else:
        if values.ndim == 2:
            values = values[:, :, np.newaxis]
        geometry = geometry_from_affine(lps)
        array = ijk_to_zyx(values, 3)
    if isinstance(image.dataobj, ArrayProxy):  # values read from the file: fresh memory, laid out as every reader's
        array = np.ascontiguousarray(array)
    origin, spacing, direction = geometry
    identity = is_identity_scaling(slope, intercept)
    meta: dict[str, Any] = {
        "format": "nifti" if nifti else "nibabel",
        "affine_source": chosen,
        "stored_dtype": stored_dtype,
        "rescale_slope": 1.0 if identity else slope,
        "rescale_intercept": 0.0 if identity else intercept,
        "trailing_axis": trailing,
    }
    if nifti:
        meta["nifti"] = _header_fields(header, sform_code, qform_code)
    if volume is not None and len(shape) >= 4:
        meta["volume"] = volume % shape[-1]
    logger.debug("%s: shape %s, %s affine, stored %s -> %s", name, shape, chosen, stored_dtype, array.dtype)
    return {
        "array": array,
        "origin": tuple(float(v) for v in origin),
        "spacing": tuple(float(v) for v in spacing),
        "direction": direction,
        "meta": meta,
    }


# --------------------------------------------------------------------- back to nibabel
def _stored_values(image: Any) -> tuple[np.ndarray, float | None, float | None]:
    """The array to store and its scaling: the source's scaling when it inverts exactly, else none."""
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
            logger.info("values no longer fit the source's scaling; storing them unscaled as %s", values.dtype)
    return values, None, None


def _ras_affine(image: Any, space_unit: str) -> np.ndarray:
    lps = image.affine
    if image.ndim == 2:
        full = np.eye(4)
        full[:2, :2] = lps[:2, :2]
        full[:2, 3] = lps[:2, 2]
        lps = full
    return flip_ras_lps(np.linalg.inv(to_mm(space_unit)) @ lps)


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


def nifti_image(image: Any, *, name: str = "the image", stored: bool = False) -> nib.Nifti1Image:
    """A ``nibabel.Nifti1Image`` of ``image`` (a :class:`~coregister.SpatialImage`): RAS world, ``(i, j, k)`` array.

    The sform and the qform are both the image's geometry (LPS converted
    back to RAS), with the codes, units and header fields kept in
    ``image.meta["nifti"]`` (both codes 1, scanner, for an image that was
    not NIfTI). With ``stored=False`` (``SpatialImage.to_nibabel``) the data
    are the values themselves, a view where the dtype allows; the header's
    data type and ``scl_slope``/``scl_inter`` record how the source stored
    them. With ``stored=True`` (for writing a file) the data are the stored
    values, the source's scaling inverted where it inverts exactly.

    Warns
    -----
    GeometryWarning
        The direction is sheared: the sform keeps it, a qform cannot.
    """
    if image.ndim == 2 and image.has_channels:
        raise UnsupportedFormatError(
            f"cannot convert a 2D image with {image.n_channels} channels to NIfTI ({name}); "
            "write .mha, .nrrd or .tif instead, or pick a channel with image.channel(i)"
        )
    if stored:
        data, slope, intercept = _stored_values(image)
    else:
        data = np.asarray(image.array)
        if data.dtype.kind not in _WRITABLE_KINDS or data.dtype == np.float16:
            data, slope, intercept = _stored_values(image)  # bool, float16: converted as a file would hold them
        else:
            slope, intercept = None, None
    data = zyx_to_ijk(data, image.ndim)
    fields = dict(image.meta.get("nifti", {})) if image.meta.get("format") == "nifti" else {}
    ras = _ras_affine(image, fields.get("xyzt_units", ("mm", "sec"))[0])
    sform_code = int(fields.get("sform_code", DEFAULT_XFORM_CODE))
    qform_code = int(fields.get("qform_code", DEFAULT_XFORM_CODE))
    if sform_code == 0 and qform_code == 0:
        sform_code = qform_code = DEFAULT_XFORM_CODE
    direction = np.asarray(image.direction)
    if not np.allclose(direction.T @ direction, np.eye(image.ndim), atol=1e-6):
        sform_code, qform_code = sform_code or DEFAULT_XFORM_CODE, qform_code or DEFAULT_XFORM_CODE
        warn(
            f"{name}: the direction is not orthonormal (sheared); the sform keeps it exactly "
            "(nibabel, FSL, SPM read it), but a qform cannot hold a shear and ITK-based tools (SimpleITK, ANTs, "
            "elastix) refuse sheared sforms and fall back to the qform, which drops the shear; "
            "resample onto an orthonormal grid for them",
            GeometryWarning,
        )

    nifti = nib.Nifti1Image(data, ras, dtype=data.dtype)
    header = nifti.header
    header.set_sform(ras, code=sform_code)
    header.set_qform(ras, code=qform_code)
    if data.ndim == 4 and fields.get("time_step"):
        header.set_zooms(header.get_zooms()[:3] + (fields["time_step"],))
    _fill_header(header, fields)
    if stored:
        header.set_slope_inter(*((slope, intercept) if slope is not None else (1.0, 0.0)))
    else:
        _declare_storage(header, image, data.dtype)
    return nifti


def _declare_storage(header: Any, image: Any, dtype: np.dtype) -> None:
    """An in-memory image's header: the stored data type and scaling of its source, when they still apply."""
    meta = image.meta
    slope, intercept = meta.get("rescale_slope"), meta.get("rescale_intercept")
    stored = meta.get("stored_dtype")
    if meta.get("format") == "nifti" and stored and not is_identity_scaling(slope, intercept):
        raw = unapply_rescale(np.asarray(image.array), slope, intercept, np.dtype(stored))
        if raw is not None:
            header.set_data_dtype(np.dtype(stored))
            header.set_slope_inter(slope, intercept)
            return
    header.set_data_dtype(dtype)
    header.set_slope_inter(np.nan, np.nan)
