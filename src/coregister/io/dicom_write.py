"""Write a :class:`~coregister.SpatialImage` as a derived DICOM series: one file per slice, built with pydicom.

The series is what a PACS or a viewer expects of a derived image: the
patient, the study and the frame of reference of the image's source
(``meta["dicom"]``, which a registered image inherits from the fixed image,
whose grid it lies on), a new SeriesInstanceUID, ImageType
``DERIVED\\SECONDARY``, and the geometry of every slice in the Image Plane
module (ImagePositionPatient, ImageOrientationPatient, PixelSpacing), so that
GDCM (SimpleITK, ITK, 3D Slicer), pydicom and :func:`coregister.read` place
each voxel where the image had it.

UIDs are derived (``pydicom.uid.generate_uid(entropy_srcs=...)``) from the
source UIDs, the pixel values and the geometry: writing the same image twice
gives the same series, which a PACS then treats as one.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import os
import re
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import (
    CTImageStorage,
    ExplicitVRLittleEndian,
    MRImageStorage,
    SecondaryCaptureImageStorage,
    generate_uid,
)
from pydicom.valuerep import format_number_as_ds

from coregister._files import _UMASK, check_writable, part_folder
from coregister.errors import (
    ConfigError,
    GeometryError,
    OutputExistsError,
    UnsupportedFormatError,
)
from coregister.image import SpatialImage
from coregister.io.detect import FORMATS
from coregister.io.dicom import KEPT_TAGS

__all__ = [
    "KEPT_FROM_SOURCE",
    "SERIES_FILE_PATTERN",
    "check_series_folder",
    "derived_series_options",
    "move_series_folder",
    "with_patient_of",
    "write_dicom",
]

logger = logging.getLogger(__name__)

#: names of the files :func:`write_dicom` writes (``IM000001.dcm``, ...); a folder holding only these may be replaced
SERIES_FILE_PATTERN = re.compile(r"IM\d{6}\.dcm")
_FILE_NAME = "IM{:06d}.dcm"

#: tags copied from ``meta["dicom"]`` into every file: patient, study, frame of reference, and series facts that
#: stay true of a derived image (the body part, the patient's position that the patient coordinates refer to)
KEPT_FROM_SOURCE = (
    "SpecificCharacterSet",
    *(tag for tag in KEPT_TAGS if tag.startswith(("Patient", "Study")) or tag in ("AccessionNumber", "ReferringPhysicianName")),
    "FrameOfReferenceUID",
    "BodyPartExamined",
)
#: type 2 attributes of the patient and study modules: present, empty when unknown
_EMPTY_WHEN_UNKNOWN = (
    "PatientName", "PatientBirthDate", "PatientSex", "StudyID", "StudyDate", "StudyTime", "AccessionNumber",
    "ReferringPhysicianName",
)  # fmt: skip

_SOP_CLASSES = {"CT": CTImageStorage, "MR": MRImageStorage}
_INT16 = np.iinfo(np.int16)
_UINT16 = np.iinfo(np.uint16)
#: quantised values use stored values -32767..32767, leaving one step each side for the rounding of the DS strings
_QUANTISED_HALF_RANGE = 32767
_DESCRIPTION = "registered by coregister"
_LO_MAX = 64  # characters of a LO value (SeriesDescription)
_ORTHONORMAL_ATOL = 1e-6


@dataclasses.dataclass(frozen=True)
class _Encoding:
    """Stored pixel values and the rescale that turns them back into the image's values."""

    stored: np.ndarray  # int16 or uint16, axes (z, y, x)
    slope: str  # DS strings exactly as written: the values readers will use
    intercept: str
    exact: bool

    @property
    def step(self) -> float:
        return float(self.slope)


def _ds(value: float) -> str:
    """``value`` as a DICOM decimal string (at most 16 characters)."""
    return format_number_as_ds(float(value))


def _integer_encoding(values: np.ndarray, *, signed: bool) -> _Encoding | None:
    """Integer values stored exactly (int16, uint16, or int16 shifted by an integer intercept), else None."""
    low, high = int(values.min()), int(values.max())
    if (signed or low < 0) and _INT16.min <= low and high <= _INT16.max:
        return _Encoding(values.astype(np.int16), "1", "0", exact=True)
    if low >= 0 and high <= _UINT16.max:
        return _Encoding(values.astype(np.uint16), "1", "0", exact=True)
    if high - low <= _UINT16.max:  # a span of 65536 values: shift it into int16 with an integer intercept
        shift = low - _INT16.min
        return _Encoding((values.astype(np.int64) - shift).astype(np.int16), "1", str(shift), exact=True)
    return None


def _quantised(values: np.ndarray) -> _Encoding:
    """int16 with a slope and intercept spanning the value range; error at most half a step (``slope / 2``)."""
    low, high = float(values.min()), float(values.max())
    if high == low:
        intercept = _ds(low)
        return _Encoding(np.zeros(values.shape, np.int16), "1", intercept, exact=float(intercept) == low)
    slope = _ds((high - low) / (2 * _QUANTISED_HALF_RANGE))
    intercept = _ds(low + _QUANTISED_HALF_RANGE * float(slope))
    stored = np.rint((values.astype(np.float64) - float(intercept)) / float(slope))
    stored = np.clip(stored, _INT16.min, _INT16.max).astype(np.int16)
    return _Encoding(stored, slope, intercept, exact=False)


def _encode(image: SpatialImage, where: str) -> _Encoding:
    values = np.asarray(image.array)
    if values.dtype == bool:
        values = values.astype(np.uint8)
    if values.dtype.kind not in "iuf":
        raise UnsupportedFormatError(
            f"{where}: DICOM cannot store {values.dtype} pixels; cast the array to a real dtype"
        )
    if values.dtype.kind == "f":
        if not np.all(np.isfinite(values)):
            raise UnsupportedFormatError(
                f"{where}: the image holds NaN or infinite values, which DICOM cannot store; replace them first, "
                "e.g. image.replace(array=np.nan_to_num(image.array, nan=0.0))"
            )
        rounded = np.rint(values)
        if np.array_equal(values, rounded) and (encoding := _integer_encoding(rounded.astype(np.int64), signed=True)):
            logger.info(
                "%s: %s values are whole numbers: stored exactly as %s", where, values.dtype, encoding.stored.dtype
            )
            return encoding
    else:
        encoding = _integer_encoding(values, signed=values.dtype.kind == "i")
        if encoding is not None:
            return encoding
    encoding = _quantised(values)
    level = logging.INFO if values.dtype.kind == "f" else logging.WARNING
    logger.log(
        level,
        "%s: %s values in [%g, %g] quantised to int16 with RescaleSlope %s, RescaleIntercept %s "
        "(error at most %.6g, half a step)",
        where, values.dtype, float(values.min()), float(values.max()), encoding.slope, encoding.intercept,
        encoding.step / 2,
    )  # fmt: skip
    return encoding


def _geometry_3d(image: SpatialImage) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Origin, spacing and direction of ``image`` as a 3D grid (a plane becomes one slice, 1 mm thick)."""
    if image.ndim == 3:
        return np.array(image.origin), np.array(image.spacing), np.array(image.direction)
    direction = np.eye(3)
    direction[:2, :2] = image.direction
    return np.array([*image.origin, 0.0]), np.array([*image.spacing, 1.0]), direction


def _check_writable_image(image: SpatialImage, where: str) -> None:
    if image.has_channels:
        raise UnsupportedFormatError(
            f"{where}: the image has a trailing axis of {image.n_channels} channels or volumes "
            f"(array shape {image.array.shape}); a DICOM series holds one grayscale volume: write one with "
            "image.channel(i), or write the whole array as NIfTI (.nii.gz) or MetaImage (.mha)"
        )
    if image.crs is not None:
        raise UnsupportedFormatError(
            f"{where}: the image is a map raster (CRS {image.crs.to_string()!r}); DICOM holds patient coordinates: "
            "write it as GeoTIFF (.tif)"
        )
    _, _, direction = _geometry_3d(image)
    if not np.allclose(direction.T @ direction, np.eye(3), atol=_ORTHONORMAL_ATOL):
        raise GeometryError(
            f"{where}: the direction {np.round(direction, 6).tolist()} is not orthonormal (a sheared grid); DICOM "
            "slices are planes with orthogonal rows, columns and normal: resample onto an orthonormal grid first "
            "(coregister.apply with an orthonormal reference) or write NIfTI"
        )


def _digest(encoding: _Encoding, origin: np.ndarray, spacing: np.ndarray, direction: np.ndarray) -> str:
    hasher = hashlib.sha256()
    stored = np.ascontiguousarray(encoding.stored)
    hasher.update(f"{stored.dtype.str}{stored.shape}{encoding.slope}|{encoding.intercept}".encode())
    hasher.update(np.round(np.concatenate([origin, spacing, direction.ravel()]), 9).tobytes())
    hasher.update(stored.tobytes())
    return hasher.hexdigest()


def _plain_values(value: Any) -> Any:
    return list(value) if isinstance(value, tuple | list) else value


def _needs_unicode(source: Mapping[str, Any]) -> bool:
    return any(isinstance(v, str) and not v.isascii() for v in source.values())


def _series_dataset(
    encoding: _Encoding,
    *,
    source: Mapping[str, Any],
    modality: str,
    series_uid: str,
    series_description: str,
    series_number: int,
    digest: str,
) -> Dataset:
    """The attributes every file of the series shares."""
    ds = Dataset()
    for keyword in KEPT_FROM_SOURCE:
        if source.get(keyword) not in (None, ""):
            setattr(ds, keyword, _plain_values(source[keyword]))
    if "SpecificCharacterSet" not in ds and (_needs_unicode(source) or not series_description.isascii()):
        ds.SpecificCharacterSet = "ISO_IR 192"
    if not source:  # no source identifiers: a new patient and study, named after the content
        ds.PatientID = f"CR{digest[:10].upper()}"
    if "StudyInstanceUID" not in ds:
        ds.StudyInstanceUID = generate_uid(entropy_srcs=["coregister study", digest])
    if "FrameOfReferenceUID" not in ds:
        ds.FrameOfReferenceUID = generate_uid(entropy_srcs=["coregister frame of reference", digest])
    for keyword in (*_EMPTY_WHEN_UNKNOWN, "PatientID"):
        if keyword not in ds:
            setattr(ds, keyword, "")
    ds.SOPClassUID = _SOP_CLASSES.get(modality, SecondaryCaptureImageStorage)
    ds.Modality = modality
    ds.SeriesInstanceUID = series_uid
    ds.SeriesNumber = series_number
    ds.SeriesDescription = series_description
    ds.ImageType = ["DERIVED", "SECONDARY"]
    ds.DerivationDescription = "resampled onto this frame of reference by coregister" + (
        "" if encoding.exact else f"; values quantised to int16, step {encoding.slope}"
    )
    ds.SoftwareVersions = f"coregister {_version()}"
    ds.Manufacturer = ""
    ds.PositionReferenceIndicator = ""
    ds.RescaleSlope = encoding.slope
    ds.RescaleIntercept = encoding.intercept
    ds.RescaleType = "US"  # unspecified: the values are the source image's, in its units
    low, high = (float(v) for v in (encoding.stored.min(), encoding.stored.max()))
    slope, intercept = float(encoding.slope), float(encoding.intercept)
    ds.WindowCenter = _ds((low + high) / 2 * slope + intercept)
    ds.WindowWidth = _ds(max((high - low) * slope, slope))
    if ds.SOPClassUID in (CTImageStorage, MRImageStorage) and "PatientPosition" not in ds:
        ds.PatientPosition = ""  # type 2C for CT and MR images (C.7.3.1): present, empty when the source has none
    if ds.SOPClassUID == CTImageStorage:
        ds.KVP = ""
        ds.AcquisitionNumber = ""
    elif ds.SOPClassUID == MRImageStorage:
        ds.ScanningSequence = "RM"  # research mode: the acquisition is not this series'
        ds.SequenceVariant = "NONE"
        # type 2 (RepetitionTime 2C: required unless the sequence is EP without SK, C.8.3.1): present, empty
        for keyword in ("ScanOptions", "MRAcquisitionType", "RepetitionTime", "EchoTime", "EchoTrainLength"):
            setattr(ds, keyword, "")
    else:
        ds.ConversionType = "WSD"  # workstation
    return ds


def _version() -> str:
    from coregister._version import __version__

    return __version__


def _slice_dataset(
    series: Dataset, encoding: _Encoding, k: int, *, origin: np.ndarray, spacing: np.ndarray, direction: np.ndarray
) -> Dataset:
    ds = Dataset()
    ds.update(series)
    sop_uid = generate_uid(entropy_srcs=[str(series.SeriesInstanceUID), "instance", str(k)])
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = series.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = sop_uid
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPInstanceUID = sop_uid
    ds.InstanceNumber = k + 1
    position = origin + k * spacing[2] * direction[:, 2]
    normal = np.cross(direction[:, 0], direction[:, 1])
    ds.ImagePositionPatient = [_ds(v) for v in position]
    ds.ImageOrientationPatient = [_ds(v) for v in direction[:, :2].T.ravel()]
    ds.PixelSpacing = [_ds(spacing[1]), _ds(spacing[0])]  # row spacing (between rows: y), column spacing (x)
    ds.SliceThickness = _ds(spacing[2])
    ds.SpacingBetweenSlices = _ds(spacing[2])
    ds.SliceLocation = _ds(float(position @ normal))
    ds.set_pixel_data(np.ascontiguousarray(encoding.stored[k]), "MONOCHROME2", 16, generate_instance_uid=False)
    return ds


# ------------------------------------------------------------------ the folder
def check_series_folder(folder: str | os.PathLike[str], *, overwrite: bool = False) -> Path:
    """Raise :class:`~coregister.errors.OutputExistsError` unless a series may be written into ``folder``.

    A new folder or an empty one may be written. With ``overwrite=True``, so
    may a folder holding only files named like :func:`write_dicom`'s
    (``IM000001.dcm``...), a series written before; anything else in it is
    never deleted. Call it before long work whose result goes there.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> folder = pathlib.Path(tempfile.mkdtemp())
    >>> check_series_folder(folder / "new") == folder / "new"
    True
    >>> _ = (folder / "notes.txt").write_text("mine")
    >>> check_series_folder(folder, overwrite=True)
    Traceback (most recent call last):
    ...
    coregister.errors.OutputExistsError: ...holds files that are not a coregister DICOM series (notes.txt); ...
    """
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise OutputExistsError(f"{str(folder)!r} exists and is not a folder; a DICOM series is written into a folder")
    entries = sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []
    if not entries:
        return folder
    foreign = [name for name in entries if not SERIES_FILE_PATTERN.fullmatch(name) or not (folder / name).is_file()]
    if foreign:
        shown = ", ".join(foreign[:5]) + (", ..." if len(foreign) > 5 else "")
        raise OutputExistsError(
            f"{str(folder)!r} holds files that are not a coregister DICOM series ({shown}); refusing to replace "
            "them: write the series into a new or empty folder"
        )
    if not overwrite:
        raise OutputExistsError(
            f"{str(folder)!r} already holds a DICOM series ({len(entries)} files); write into a new or empty folder, "
            "or pass overwrite=True to replace it"
        )
    return folder


def _swap_in(staged: Path, target: Path) -> None:
    """Rename the finished folder ``staged`` to ``target``; a replaced series is removed only once the new one is in."""
    if not target.exists() or not any(target.iterdir()):
        os.replace(staged, target)  # rename(2) replaces an empty folder
        return
    old = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".old", dir=staged.parent))
    os.replace(target, old)
    try:
        os.replace(staged, target)
    except BaseException:
        os.replace(old, target)
        raise
    shutil.rmtree(old, ignore_errors=True)


def move_series_folder(staged: str | os.PathLike[str], target: str | os.PathLike[str]) -> Path:
    """Move the series folder ``staged`` to ``target``, replacing a series written there before.

    ``target`` may be absent, empty, or hold a series written by
    :func:`write_dicom` (see :func:`check_series_folder`); the old series is
    removed only once the new one is in place. Both must be on one file
    system (``staged`` is usually a hidden sibling folder).
    """
    staged, target = Path(staged), Path(target)
    check_series_folder(target, overwrite=True)
    _swap_in(staged, target)
    return target


def with_patient_of(registered: SpatialImage, moving: SpatialImage) -> SpatialImage:
    """``registered`` carrying ``moving``'s patient and study when its own grid (the fixed image's) has none.

    A registered image inherits the fixed image's metadata. When the fixed
    image is not DICOM (a template, a NIfTI) but the moving one is, the
    derived series belongs to the moving image's patient and study, not to
    a patient invented for it; its frame of reference stays new (the grid is
    the fixed image's, not the moving scanner's), and so does the patient
    position.

    Examples
    --------
    >>> import numpy as np
    >>> from coregister import SpatialImage
    >>> grid = SpatialImage(np.zeros((2, 2, 2)), origin=(0, 0, 0), spacing=(1, 1, 1))
    >>> ct = grid.replace(meta={"dicom": {"PatientID": "P7", "FrameOfReferenceUID": "1.2.3", "Modality": "CT"}})
    >>> with_patient_of(grid, ct).meta["dicom"]
    {'PatientID': 'P7'}
    """
    if registered.meta.get("dicom") or not moving.meta.get("dicom"):
        return registered
    source = moving.meta["dicom"]
    kept = {k: source[k] for k in KEPT_FROM_SOURCE if k in source and k not in ("FrameOfReferenceUID", "PatientPosition")}
    return registered.replace(meta={**registered.meta, "dicom": kept})


def derived_series_options(moving: SpatialImage) -> dict[str, str]:
    """``modality`` and ``series_description`` for a registered image whose values come from ``moving``.

    A registered image inherits the fixed image's identifiers (its patient,
    study and frame of reference are right), but its values are the moving
    image's: the modality is the moving image's (``"OT"`` when it was not
    DICOM) and the description names the moving series (or file).

    Examples
    --------
    >>> import numpy as np
    >>> from coregister import SpatialImage
    >>> flair = SpatialImage(np.zeros((2, 2, 2)), origin=(0, 0, 0), spacing=(1, 1, 1),
    ...                      meta={"source_path": "/data/flair.nii.gz"})
    >>> derived_series_options(flair)
    {'modality': 'OT', 'series_description': 'flair registered by coregister'}
    """
    source = moving.meta.get("dicom") or {}
    name = str(source.get("SeriesDescription") or "").strip()
    if not name and moving.meta.get("source_path"):
        name = Path(str(moving.meta["source_path"])).name
        suffix = next((x for f in FORMATS.values() for x in f if name.lower().endswith(x)), "")
        name = name[: len(name) - len(suffix)]
    return {"modality": str(source.get("Modality") or "OT"), "series_description": _description(name)}


def _description(base: str) -> str:
    """``"<base> registered by coregister"``, with ``base`` shortened to fit 64 characters."""
    if not base:
        return _DESCRIPTION
    return f"{base[: _LO_MAX - len(_DESCRIPTION) - 1].rstrip()} {_DESCRIPTION}"


def write_dicom(
    image: SpatialImage,
    folder: str | os.PathLike[str],
    *,
    series_description: str | None = None,
    series_number: int | None = None,
    modality: str | None = None,
    values_from: SpatialImage | None = None,
    overwrite: bool = False,
) -> Path:
    """Write ``image`` as a derived DICOM series into ``folder``, one file per slice (``IM000001.dcm``...).

    Geometry (LPS millimetres are DICOM patient coordinates): slice ``k``
    has ImagePositionPatient ``origin + k * spacing_z * direction[:, 2]``,
    ImageOrientationPatient the first two direction columns, PixelSpacing
    ``(spacing_y, spacing_x)`` (row spacing first), SliceThickness and
    SpacingBetweenSlices ``spacing_z``. Oblique and feet-first grids keep
    their direction. DICOM readers rebuild the slice axis as the cross
    product of the first two columns, so a left-handed direction (third
    column opposite to it, as in NIfTI files stored LAS, like the MNI
    template) reads back with the slice order reversed: every voxel keeps
    its world position. A 2D image becomes one slice, 1 mm thick.

    Pixels: integer values that fit int16 or uint16 (or span at most 65536
    values, stored with an integer RescaleIntercept) are stored exactly, and
    so are floating-point values that are all whole numbers in that range.
    Other values are **quantised** to int16 with RescaleSlope
    ``(max - min) / 65534`` and a RescaleIntercept at mid-range (both rounded
    to the 16 characters of a DICOM decimal string, and used as rounded):
    every value comes back within half a step, ``RescaleSlope / 2``. The
    quantisation is logged and stated in DerivationDescription.

    Identifiers: the patient, study and FrameOfReferenceUID tags of
    ``image.meta["dicom"]`` are kept (a registered image carries the fixed
    image's, whose grid and frame of reference it shares); the
    SeriesInstanceUID and the SOPInstanceUIDs are new, derived from the
    source UIDs, the pixel values and the geometry, so the same image
    written twice gives the same UIDs. Without ``meta["dicom"]`` (a NIfTI
    source, say), a new patient (PatientID ``CR`` + a content hash, no
    name) and a new study and frame of reference are made up. ImageType is
    ``DERIVED\\SECONDARY``; SOPClassUID is CT or MR Image Storage for those
    modalities, Secondary Capture otherwise.

    Parameters
    ----------
    image : SpatialImage
        A grayscale 3D (or 2D) image in patient (LPS) coordinates.
    folder : path-like
        Created; its parent must exist. The series is written into a hidden
        sibling folder and renamed into place, so a failure leaves nothing.
    series_description : str, optional
        Default: the source's SeriesDescription followed by "registered by
        coregister" (64 characters at most).
    series_number : int, optional
        Default: 1000 + the source's SeriesNumber (1001 without one).
    modality : str, optional
        Default: ``meta["dicom"]["Modality"]``, else ``"OT"``. A registered
        image carries the fixed image's modality: give the moving image's
        when it differs (``coregister register`` and ``apply`` do).
    values_from : SpatialImage, optional
        The image whose values ``image`` holds (the moving image of a
        registration; ``image`` is it resampled onto the fixed grid): its
        modality and description label the series (unless ``modality`` or
        ``series_description`` is given), and its patient and study are used
        when ``image`` has none (:func:`with_patient_of`).
    overwrite : bool
        Replace a folder that holds a series written before (files named
        ``IM######.dcm`` only); other files are never deleted.

    Returns
    -------
    Path
        ``folder``.

    Raises
    ------
    UnsupportedFormatError
        Channels or volumes on a trailing axis (RGB, 4D), a map raster,
        non-finite values.
    GeometryError
        A sheared (non-orthonormal) direction.
    OutputExistsError
        ``folder`` exists and is not empty (see ``overwrite``).

    Examples
    --------
    >>> import numpy as np, tempfile, pathlib, pydicom
    >>> from coregister import SpatialImage
    >>> image = SpatialImage(np.arange(24, dtype=np.int16).reshape(2, 3, 4), origin=(1, 2, 3), spacing=(0.5, 0.8, 2))
    >>> folder = write_dicom(image, pathlib.Path(tempfile.mkdtemp()) / "series")
    >>> sorted(p.name for p in folder.iterdir())
    ['IM000001.dcm', 'IM000002.dcm']
    >>> second = pydicom.dcmread(folder / "IM000002.dcm")
    >>> [float(v) for v in second.ImagePositionPatient], [float(v) for v in second.PixelSpacing], second.Modality
    ([1.0, 2.0, 5.0], [0.8, 0.5], 'OT')
    >>> second.pixel_array.tolist()
    [[12, 13, 14, 15], [16, 17, 18, 19], [20, 21, 22, 23]]
    """
    if values_from is not None:
        derived = derived_series_options(values_from)
        modality = modality or derived["modality"]
        series_description = series_description or derived["series_description"]
        image = with_patient_of(image, values_from)
    folder = check_writable(folder, folder=True, fix="choose another output folder")
    where = f"writing DICOM series {str(folder)!r}"
    check_series_folder(folder, overwrite=overwrite)
    _check_writable_image(image, where)
    source = dict(image.meta.get("dicom") or {})
    modality = str(modality or source.get("Modality") or "OT").upper()
    encoding = _encode(image, where)
    origin, spacing, direction = _geometry_3d(image)
    stored = encoding.stored if image.ndim == 3 else encoding.stored[np.newaxis]
    encoding = dataclasses.replace(encoding, stored=stored)
    if np.linalg.det(direction) < 0:
        logger.info(
            "%s: the direction is left-handed; DICOM readers take the slice axis as the cross product of the row and "
            "column directions, so the series reads back with its %d slices in reverse order (same world positions)",
            where, stored.shape[0],
        )  # fmt: skip
    digest = _digest(encoding, origin, spacing, direction)
    if series_description is None:
        series_description = _description(str(source.get("SeriesDescription") or "").strip())
    elif len(series_description) > _LO_MAX:
        raise ConfigError(f"series_description {series_description!r} is longer than 64 characters; shorten it")
    if series_number is None:
        series_number = 1000 + int(source.get("SeriesNumber") or 1)
    series_uid = generate_uid(
        entropy_srcs=[
            "coregister derived series",
            str(source.get("SeriesInstanceUID", "")),
            str(source.get("StudyInstanceUID", "")),
            str(source.get("FrameOfReferenceUID", "")),
            modality,
            series_description,
            str(series_number),
            digest,
        ]
    )
    series = _series_dataset(
        encoding,
        source=source,
        modality=modality,
        series_uid=series_uid,
        series_description=series_description,
        series_number=series_number,
        digest=digest,
    )
    parent = folder.parent if str(folder.parent) else Path(".")
    # removed on any failure or interrupt, swept if killed; the series is staged under the folder's own name, so a
    # write that runs out of room names the file as it would have been (folder/IM000003.dcm)
    with part_folder(parent, folder.name, stands_for=parent) as stage:
        staged = stage / folder.name
        staged.mkdir()
        for k in range(stored.shape[0]):
            ds = _slice_dataset(series, encoding, k, origin=origin, spacing=spacing, direction=direction)
            ds.save_as(staged / _FILE_NAME.format(k + 1), enforce_file_format=True)
        os.chmod(staged, 0o777 & ~_UMASK)  # the series gets the permissions mkdir would give
        _swap_in(staged, folder)
    logger.info(
        "wrote %s: %d slices of %dx%d, %s, SOP class %s, series %s",
        folder, stored.shape[0], stored.shape[2], stored.shape[1], modality, series.SOPClassUID.name, series_uid,
    )  # fmt: skip
    return folder
