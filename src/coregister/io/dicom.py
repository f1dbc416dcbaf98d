"""DICOM series (folders, file lists, single and multi-frame files).

Pixels and geometry come from SimpleITK's GDCM reader
(``ImageSeriesReader.GetGDCMSeriesIDs`` / ``GetGDCMSeriesFileNames``), tags
from pydicom. What this module adds to them:

* a folder with several series is refused unless one is chosen
  (:class:`~coregister.errors.AmbiguousSeriesError` lists them);
* slices are ordered by their position along the slice normal (the cross
  product of the two ImageOrientationPatient vectors), so head-first and
  feet-first series land the same way, and the slice spacing is checked:
  ITK silently averages uneven gaps, we refuse them
  (:class:`~coregister.errors.NonUniformSpacingError`, naming the gap) or,
  on request, resample onto a uniform grid;
* rescale slope/intercept are applied and the values kept in the smallest
  dtype that holds them exactly (CT Hounsfield units usually stay ``int16``);
* patient, study, series and frame-of-reference identifiers go into
  ``meta["dicom"]`` for a derived series later.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
import os
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import SimpleITK as sitk
from pydicom.errors import InvalidDicomError

from coregister._scaling import smallest_exact_dtype
from coregister._stderr import captured_stderr
from coregister._warn import warn
from coregister.conventions import orientation_code
from coregister.errors import (
    AmbiguousSeriesError,
    ConfigError,
    GeometryError,
    GeometryWarning,
    NonUniformSpacingError,
    UnreadableInputError,
    UnsupportedFormatError,
)
from coregister.image import SpatialImage
from coregister.io._guard import check_path, claim_within_file, guarded, within_memory
from coregister.io._text import one_line

__all__ = ["SeriesInfo", "list_series", "read_dicom"]

logger = logging.getLogger(__name__)

#: identifiers and descriptive tags kept in ``meta["dicom"]`` (for a derived series and for ``coregister info``)
KEPT_TAGS = (
    "PatientID",
    "PatientName",
    "PatientBirthDate",
    "PatientSex",
    "PatientAge",
    "PatientPosition",
    "StudyInstanceUID",
    "StudyID",
    "StudyDate",
    "StudyTime",
    "StudyDescription",
    "AccessionNumber",
    "ReferringPhysicianName",
    "SeriesInstanceUID",
    "SeriesNumber",
    "SeriesDescription",
    "SeriesDate",
    "SeriesTime",
    "Modality",
    "FrameOfReferenceUID",
    "SOPClassUID",
    "Manufacturer",
    "ManufacturerModelName",
    "InstitutionName",
    "BodyPartExamined",
    "ImageType",
    "PhotometricInterpretation",
    "BitsAllocated",
    "BitsStored",
    "PixelRepresentation",
    "SliceThickness",
    "WindowCenter",
    "WindowWidth",
    "SpecificCharacterSet",
)

#: slices whose positions stray from a uniform grid by more than this fraction of the spacing (or 0.01 mm) are non-uniform
_UNIFORM_RELATIVE = 0.01
_UNIFORM_ABSOLUTE_MM = 0.01
#: two slices closer than this (mm) along the normal are duplicates
_DUPLICATE_MM = 1e-3
#: resampling a non-uniform series never makes more slices than this
_MAX_RESAMPLED_SLICES = 4096


@dataclasses.dataclass(frozen=True)
class SeriesInfo:
    """One DICOM series found in a folder.

    Attributes
    ----------
    uid : str
        SeriesInstanceUID.
    description : str
        SeriesDescription ("" when absent).
    modality : str
        CT, MR, PT...
    number : int or None
        SeriesNumber.
    n_files : int
        Files of the series in the folder.
    size : tuple of int
        ``(columns, rows, slices)``; for a multi-frame file, slices are frames.
    patient_position : str
        HFS, FFS, ... ("" when absent).
    orientation : str
        ITK orientation code of the slice axes (``"LPS"`` for axial
        head-first), ``""`` when the files carry no geometry.
    folder : str
        Folder holding the files.
    files : tuple of str
        The files, ordered as GDCM sorts them.
    """

    uid: str
    description: str
    modality: str
    number: int | None
    n_files: int
    size: tuple[int, ...]
    patient_position: str
    orientation: str
    folder: str
    files: tuple[str, ...] = dataclasses.field(repr=False, compare=False)

    def label(self) -> str:
        """One line naming the series, for messages and listings."""
        description = f" {self.description!r}" if self.description else ""
        return f"{self.uid}{description} ({self.modality or '?'}, {self.n_files} file{'s' * (self.n_files != 1)})"


# ------------------------------------------------------------------ helpers
@contextlib.contextmanager
def _itk_warnings_off() -> Iterator[None]:
    """Silence ITK's stderr warnings (we check and report spacing ourselves), restoring the previous state."""
    previous = sitk.ProcessObject.GetGlobalWarningDisplay()
    sitk.ProcessObject.SetGlobalWarningDisplay(False)
    try:
        yield
    finally:
        sitk.ProcessObject.SetGlobalWarningDisplay(previous)


def _read_header(path: str | Path) -> pydicom.Dataset:
    try:
        try:
            return pydicom.dcmread(path, stop_before_pixels=True)
        except InvalidDicomError:
            # no preamble/"DICM" (old exports): accept it only if it parses into image tags
            header = pydicom.dcmread(path, stop_before_pixels=True, force=True)
            if "Rows" not in header or "SOPClassUID" not in header:
                raise
            return header
    except (InvalidDicomError, OSError, EOFError, ValueError, TypeError, AttributeError) as exc:
        raise UnreadableInputError(
            f"{str(path)!r} is not a readable DICOM file ({one_line(exc)}); check the file"
        ) from exc


def _plain(value: Any) -> Any:
    """A pydicom value as JSON-friendly Python (str, int, float or a tuple of them)."""
    if isinstance(value, pydicom.multival.MultiValue | list | tuple):
        return tuple(_plain(v) for v in value)
    if isinstance(value, int | float | str):
        return type(value)(value) if not isinstance(value, bool) else value
    if isinstance(value, pydicom.valuerep.DSfloat | pydicom.valuerep.DSdecimal):
        return float(value)
    if isinstance(value, pydicom.valuerep.IS):
        return int(value)
    return str(value)


def _kept_tags(header: pydicom.Dataset) -> dict[str, Any]:
    return {tag: _plain(header.get(tag)) for tag in KEPT_TAGS if header.get(tag) not in (None, "")}


def _frames(header: pydicom.Dataset) -> int:
    return int(header.get("NumberOfFrames", 1) or 1)


def _has_geometry(header: pydicom.Dataset) -> bool:
    if "ImagePositionPatient" in header and "ImageOrientationPatient" in header:
        return True
    groups = list(header.get("SharedFunctionalGroupsSequence", [])) + list(
        header.get("PerFrameFunctionalGroupsSequence", [])[:1]
    )
    has_orientation = any("PlaneOrientationSequence" in g for g in groups)
    has_position = any("PlanePositionSequence" in g for g in groups)
    return has_orientation and has_position


def _slice_axes(header: pydicom.Dataset) -> np.ndarray | None:
    """Columns: row direction, column direction, normal (LPS), or None without ImageOrientationPatient."""
    try:
        iop = header.get("ImageOrientationPatient")
        if iop is None or len(iop) != 6:
            return None
        row, col = np.array([float(v) for v in iop[:3]]), np.array([float(v) for v in iop[3:]])
    except (TypeError, ValueError):  # a malformed element: no geometry to use
        return None
    normal = np.cross(row, col)
    if not np.all(np.isfinite(normal)) or np.linalg.norm(normal) < 1e-6:
        return None
    return np.column_stack([row, col, normal / np.linalg.norm(normal)])


def _series_info(folder: Path, uid: str, files: Sequence[str], header: pydicom.Dataset | None = None) -> SeriesInfo:
    """What :func:`list_series` reports; ``header`` is the first file's, when the caller has read it already."""
    header = header if header is not None else _read_header(files[0])
    axes = _slice_axes(header)
    number = header.get("SeriesNumber")
    slices = _frames(header) if len(files) == 1 else len(files)
    return SeriesInfo(
        uid=uid,
        description=str(header.get("SeriesDescription", "") or "").strip(),
        modality=str(header.get("Modality", "") or ""),
        number=int(number) if number not in (None, "") else None,
        n_files=len(files),
        size=(int(header.get("Columns", 0)), int(header.get("Rows", 0)), slices),
        patient_position=str(header.get("PatientPosition", "") or ""),
        orientation=orientation_code(axes) if axes is not None else "",
        folder=str(folder),
        files=tuple(files),
    )


def _sort_key(info: SeriesInfo) -> tuple[Any, ...]:
    return (info.number is None, info.number or 0, info.description, info.uid)


def list_series(folder: str | os.PathLike[str], *, recursive: bool = False) -> list[SeriesInfo]:
    """List the DICOM series in ``folder`` (GDCM's scan), ordered by series number.

    Parameters
    ----------
    folder : path-like
    recursive : bool
        Also scan every subfolder (each series is listed with its folder).

    Returns
    -------
    list of SeriesInfo
        The index of a series in this list is what ``read_dicom(folder,
        series=index)`` takes. Empty when no DICOM file is found.

    Examples
    --------
    >>> import pathlib, shutil, tempfile, pydicom.data
    >>> folder = pathlib.Path(tempfile.mkdtemp())
    >>> for name in ("CT_small.dcm", "MR_small.dcm"):
    ...     _ = shutil.copy(pydicom.data.get_testdata_file(name, read=False), folder)
    >>> [(s.modality, s.n_files, s.size) for s in list_series(folder)]
    [('CT', 1, (128, 128, 1)), ('MR', 1, (64, 64, 1))]
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise UnreadableInputError(f"{str(folder)!r} is not a folder; give the folder that holds the DICOM files")
    folders = [folder] if not recursive else [Path(root) for root, _, _ in sorted(os.walk(folder))]
    found = []
    for current in folders:
        for uid, files in _scan_folder(current).items():
            found.append(_series_info(current, uid, files))
    return sorted(found, key=lambda s: (s.folder, *_sort_key(s)))


def _scan_folder(folder: Path) -> dict[str, list[str]]:
    """SeriesInstanceUID -> files (GDCM's order) of the DICOM images directly in ``folder``.

    GDCM's scan aborts on some malformed files; pydicom's scan (which skips
    files it cannot parse and files without pixels) takes over then. Files
    that claim to be DICOM (the ``DICM`` preamble) are screened with pydicom
    first (:func:`_screen`): GDCM spends seconds and a gigabyte on a corrupt
    file of two kilobytes.
    """
    _screen(folder)
    try:
        with _itk_warnings_off(), captured_stderr(f"scanning {folder}"):
            uids = sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(folder))
            return {
                uid: list(files)
                for uid in uids
                if (files := sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder), uid))
            }
    except RuntimeError as exc:
        logger.warning("GDCM could not scan %s (%s); scanning with pydicom", folder, one_line(exc))
    groups: dict[str, list[str]] = {}
    for file in sorted(p for p in folder.iterdir() if p.is_file()):
        try:
            header = pydicom.dcmread(file, stop_before_pixels=True)
        except (InvalidDicomError, OSError, EOFError, ValueError, TypeError, AttributeError):
            continue
        if "Rows" in header and "SeriesInstanceUID" in header:
            groups.setdefault(str(header.SeriesInstanceUID), []).append(str(file))
    return groups


#: the SOP class of a DICOMDIR (a folder's index: DICOM, but no series of its own)
_DICOMDIR_CLASS = "1.2.840.10008.1.3.10"


def _screen(folder: Path) -> None:
    """Refuse, naming it, a file of ``folder`` that claims to be DICOM but does not parse into one of a series."""
    for file in sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".")):
        if not _looks_like_dicom(file):
            continue
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # pydicom's notes on what it tolerates: the verdict below decides
            try:
                header = pydicom.dcmread(file, stop_before_pixels=True)
            except Exception as exc:  # any parser failure: the file is broken
                raise UnreadableInputError(
                    f"{str(file)!r} in the DICOM folder cannot be read ({type(exc).__name__}: {one_line(exc)}): it is "
                    "truncated or corrupt, and the series it belongs to cannot be told; re-copy it or move it out"
                ) from exc
            meta = getattr(header, "file_meta", None)
            index = str(getattr(meta, "MediaStorageSOPClassUID", "") or "") == _DICOMDIR_CLASS
            if not index and not (header.get("SeriesInstanceUID") and "SOPClassUID" in header):
                raise UnreadableInputError(
                    f"{str(file)!r} in the DICOM folder is cut short or corrupt (its header ends before naming its "
                    "series and class), and the series it belongs to cannot be told; re-copy it or move it out"
                )


def _subfolders_with_dicom(folder: Path, limit: int = 5) -> list[str]:
    hits = []
    for root, _, _ in sorted(os.walk(folder)):
        if Path(root) != folder and _scan_folder(Path(root)):
            hits.append(str(Path(root).relative_to(folder)))
            if len(hits) >= limit:
                break
    return hits


def _choose(candidates: list[SeriesInfo], series: str | int | None, where: str) -> SeriesInfo:
    listing = "; ".join(f"[{i}] {s.label()}" for i, s in enumerate(candidates))
    if series is None:
        if len(candidates) == 1:
            return candidates[0]
        raise AmbiguousSeriesError(
            f"{where} holds {len(candidates)} DICOM series: {listing}; choose one with series=<index or "
            "SeriesInstanceUID> (command line: --series; list them with coregister dicom ls FOLDER)"
        )
    if isinstance(series, int | np.integer) and not isinstance(series, bool):
        if -len(candidates) <= series < len(candidates):
            return candidates[series]
        raise ConfigError(f"series={series} is out of range: {where} holds {len(candidates)} series: {listing}")
    by_uid = [s for s in candidates if s.uid == str(series)]
    by_description = [s for s in candidates if s.description == str(series)]
    if by_uid:
        return by_uid[0]
    if len(by_description) == 1:
        return by_description[0]
    if len(by_description) > 1:
        raise AmbiguousSeriesError(
            f"series description {series!r} matches {len(by_description)} series in {where}; pass the SeriesInstanceUID "
            f"instead: {listing}"
        )
    raise ConfigError(f"no series {series!r} (UID or description) in {where}; it holds: {listing}")


# ------------------------------------------------------------------ checks before reading pixels
#: transfer syntaxes whose pixel data is stored raw (its length is known from the header)
_UNCOMPRESSED = {"1.2.840.10008.1.2", "1.2.840.10008.1.2.1", "1.2.840.10008.1.2.2", "1.2.840.10008.1.2.1.99"}


def _looks_like_dicom(path: Path) -> bool:
    try:
        with open(path, "rb") as handle:
            head = handle.read(132)
    except OSError:
        return False
    return len(head) == 132 and head[128:132] == b"DICM"


def _refuse_unreadable_members(folder: Path, chosen: SeriesInfo, candidates: Sequence[SeriesInfo]) -> None:
    """Refuse a folder where a file of the chosen series (or a DICOM file of unknown series) cannot be read.

    GDCM's scan leaves out files it cannot parse, without a word: a
    truncated slice would vanish from its series, and the gap it leaves
    would be blamed on the spacing (or interpolated over).
    """
    listed = {str(Path(f).resolve()) for s in candidates for f in s.files}
    for file in sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".")):
        if str(file.resolve()) in listed or not _looks_like_dicom(file):
            continue
        try:
            header = pydicom.dcmread(file, stop_before_pixels=True)
        except Exception as exc:  # any parser failure: the file is broken, its series unknown
            raise UnreadableInputError(
                f"{str(file)!r} in the DICOM folder cannot be read ({type(exc).__name__}: {one_line(exc)}): it is "
                "truncated or corrupt, and the series it belongs to cannot be told; re-copy it or move it out"
            ) from exc
        uid = str(header.get("SeriesInstanceUID", "") or "")
        if not uid or "SOPClassUID" not in header:
            raise UnreadableInputError(
                f"{str(file)!r} in the DICOM folder is cut short or corrupt (its header ends before naming its series "
                "and class), and the series it belongs to cannot be told; re-copy it or move it out"
            )
        if uid == chosen.uid and "Rows" in header:
            raise UnreadableInputError(
                f"{str(file)!r} belongs to series {chosen.uid} but GDCM cannot read it (truncated or corrupt); "
                "re-copy it, or move it out to read the series without it"
            )


def _expected_pixel_bytes(header: pydicom.Dataset) -> int:
    rows, columns = int(header.get("Rows", 0) or 0), int(header.get("Columns", 0) or 0)
    bits = int(header.get("BitsAllocated", 16) or 16)
    samples = int(header.get("SamplesPerPixel", 1) or 1)
    return (rows * columns * _frames(header) * samples * bits + 7) // 8


def _check_pixels(files: Sequence[str], headers: Sequence[pydicom.Dataset], where: str) -> None:
    """Refuse, naming the file, a slice whose header is absurd, an element of which runs past the end of the
    file, or whose pixel data is missing or cut short.

    GDCM trusts element lengths: a corrupt length of 4 GB near the end of a
    40 kB file made it allocate 4 GB and spend seconds before failing. Each
    top-level element's declared length is compared with the bytes left in
    the file first (pydicom reads the lengths without the values).
    """
    for file, header in zip(files, headers, strict=True):
        rows, columns = int(header.get("Rows", 0) or 0), int(header.get("Columns", 0) or 0)
        if rows <= 0 or columns <= 0 or _frames(header) <= 0:
            raise UnreadableInputError(
                f"{where}: {Path(file).name} has a broken header ({rows} rows, {columns} columns, "
                f"{_frames(header)} frames); re-export the series"
            )
        syntax = str(getattr(getattr(header, "file_meta", None), "TransferSyntaxUID", "") or "1.2.840.10008.1.2")
        expected = _expected_pixel_bytes(header)
        size = os.path.getsize(file)
        if syntax in _UNCOMPRESSED and size < expected:
            claim_within_file(expected, size, Path(file), f"{rows} x {columns} x {_frames(header)} frames", what="DICOM")
        full = pydicom.dcmread(file, defer_size=16, force=True)
        pixels = None
        for tag in list(full.keys()):
            element = full.get_item(tag, keep_deferred=True)  # still raw: its declared length, the value unread
            length, tell = getattr(element, "length", None), getattr(element, "value_tell", None)
            if length is None or tell is None or length == 0xFFFFFFFF:
                continue
            if tell + length > size:
                raise UnreadableInputError(
                    f"{where}: {Path(file).name} is truncated or corrupt: its element {element.tag} claims {length} "
                    f"bytes from byte {tell}, and the file ends at byte {size}; re-copy the file"
                )
            if element.tag == 0x7FE00010:
                pixels = length
        if "PixelData" not in full or (syntax in _UNCOMPRESSED and pixels is not None and pixels < expected):
            raise UnreadableInputError(
                f"{where}: {Path(file).name} is truncated: its pixel data is missing or shorter than the "
                f"{expected} bytes its header claims ({rows} x {columns} x {_frames(header)} frames); re-copy the file"
            )


# ------------------------------------------------------------------ reading
@guarded("DICOM")
def read_dicom(
    path_or_files: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
    *,
    series: str | int | None = None,
    resample_nonuniform: bool = False,
) -> SpatialImage:
    """Read a DICOM series (a folder or a list of files) or a single DICOM file.

    Parameters
    ----------
    path_or_files : path-like or sequence of path-like
        A folder (its series are found by GDCM, not recursively), a list of
        files, or one file (read on its own; a multi-frame file gives a
        volume).
    series : int or str, optional
        Which series when there are several: an index into
        :func:`list_series`, a SeriesInstanceUID, or a SeriesDescription that
        names exactly one series.
    resample_nonuniform : bool
        Resample a series with uneven slice gaps onto a uniform grid (linear
        interpolation along the slice normal, spacing = the smallest gap,
        first and last slices kept; integer data rounded back) instead of
        raising :class:`~coregister.errors.NonUniformSpacingError`.

    Returns
    -------
    SpatialImage
        3D, LPS millimetres: origin at the first slice's ImagePositionPatient
        (slices ordered along the normal of ImageOrientationPatient), values
        with RescaleSlope/RescaleIntercept applied. ``meta`` holds
        ``source_path``, ``format`` (``"dicom"``), ``series_uid``, ``files``
        (in slice order), ``slice_positions_mm`` (along the normal, as
        acquired), ``stored_dtype``, ``rescale_slope``,
        ``rescale_intercept``, ``resampled`` and ``dicom`` (patient, study,
        series and frame-of-reference identifiers and descriptive tags).

    Raises
    ------
    UnreadableInputError
        Missing path, no DICOM in the folder, unreadable files (a truncated
        or corrupt file of the series is named, never silently left out).
    MemoryLimitError
        The volume would need more than the allowed memory (checked before reading pixels).
    AmbiguousSeriesError
        Several series and no ``series=``.
    NonUniformSpacingError
        Uneven slice gaps (the message names the largest).
    GeometryError
        Slices with different orientations or at the same position.

    Warns
    -----
    GeometryWarning
        Files without ImagePositionPatient/ImageOrientationPatient: unit
        spacing and origin 0.

    Examples
    --------
    >>> import pydicom.data
    >>> ct = read_dicom(pydicom.data.get_testdata_file("CT_small.dcm", read=False))
    >>> ct.size, ct.dtype, ct.meta["dicom"]["Modality"]
    ((128, 128, 1), dtype('int16'), 'CT')
    """
    with warnings.catch_warnings():
        # pydicom warns about each value that breaks its VR ("Invalid value for VR DS: 'NaN'"); this reader checks
        # the values it uses and names the file and element itself
        warnings.filterwarnings("ignore", message="Invalid value for VR", category=UserWarning)
        return _read_dicom(path_or_files, series, resample_nonuniform)


def _read_dicom(
    path_or_files: str | os.PathLike[str] | Sequence[str | os.PathLike[str]], series: str | int | None,
    resample_nonuniform: bool,
) -> SpatialImage:
    if isinstance(path_or_files, str | os.PathLike):
        path = check_path(path_or_files, folder_ok=True)
        if path.is_dir():
            return _read_folder(path, series, resample_nonuniform)
        if series is not None:
            logger.info("series=%r ignored: %s is a single file", series, path)
        return _read_single_file(path)
    files = [Path(f) for f in path_or_files]
    if not files:
        raise UnreadableInputError("an empty list of DICOM files was given; pass at least one file or a folder")
    return _read_file_list(files, series, resample_nonuniform)


def _read_folder(folder: Path, series: str | int | None, resample: bool) -> SpatialImage:
    candidates = list_series(folder)
    if not candidates:
        below = _subfolders_with_dicom(folder)
        hint = f"; its subfolders {', '.join(below)} do: pass one of them" if below else ""
        raise UnreadableInputError(f"no DICOM series in folder {str(folder)!r}{hint}")
    chosen = _choose(candidates, series, f"folder {str(folder)!r}")
    _refuse_unreadable_members(folder, chosen, candidates)
    return _read_series(chosen, source=folder, resample=resample)


def _read_file_list(files: list[Path], series: str | int | None, resample: bool) -> SpatialImage:
    for file in files:
        if not file.is_file():
            raise UnreadableInputError(f"{str(file)!r} does not exist or is not a file; check the list")
    groups: dict[str, list[tuple[str, pydicom.Dataset]]] = {}
    for file in files:
        header = _read_header(file)
        groups.setdefault(str(header.get("SeriesInstanceUID", "")), []).append((str(file), header))
    candidates = sorted(
        (_series_info(Path(group[0][0]).parent, uid, [f for f, _ in group], group[0][1]) for uid, group in groups.items()),
        key=_sort_key,
    )
    chosen = _choose(candidates, series, f"the {len(files)} files given")
    headers = [h for _, h in groups[chosen.uid]]
    return _read_series(chosen, source=Path(chosen.files[0]).parent, resample=resample, headers=headers)


def _read_single_file(path: Path) -> SpatialImage:
    header = _read_header(path)
    info = _series_info(path.parent, str(header.get("SeriesInstanceUID", "")), [str(path)], header)
    image = _read_series(info, source=path, resample=False, headers=[header])
    if _frames(header) == 1:
        logger.info(
            "read one slice of series %s from %s; read its folder (or a list of its files) for the volume",
            info.uid,
            path.name,
        )
    return image


def _headers(files: Sequence[str]) -> list[pydicom.Dataset]:
    return [_read_header(f) for f in files]


def _ordered(files: Sequence[str], headers: list[pydicom.Dataset], where: str) -> tuple[list[int], np.ndarray]:
    """Slice order along the normal and the sorted positions (mm); checks orientation and duplicates."""
    axes = [_slice_axes(h) for h in headers]
    reference = axes[0]
    if reference is None:
        raise GeometryError(
            f"{where}: {Path(files[0]).name} has ImageOrientationPatient {_value(headers[0], 'ImageOrientationPatient')}, "
            "not two independent direction vectors; the file is malformed"
        )
    for file, other, header in zip(files, axes, headers, strict=True):
        if other is None or not np.allclose(other, reference, atol=1e-4):
            raise GeometryError(
                f"{where}: {Path(file).name} has ImageOrientationPatient {_value(header, 'ImageOrientationPatient') if other is None else other[:, :2].T.ravel().round(5).tolist()}, "
                f"unlike {reference[:, :2].T.ravel().round(5).tolist()} of the first file; the series mixes orientations "
                "(a localizer?): pass the files of one orientation as a list"
            )
    normal = reference[:, 2]
    positions = np.array([float(np.dot(_position(f, h, where), normal)) for f, h in zip(files, headers, strict=True)])
    order = sorted(range(len(files)), key=lambda i: (positions[i], i))
    sorted_positions = positions[order]
    gaps = np.diff(sorted_positions)
    if gaps.size and gaps.min() < _DUPLICATE_MM:
        k = int(np.argmin(gaps))
        raise GeometryError(
            f"{where}: {Path(files[order[k]]).name} and {Path(files[order[k + 1]]).name} lie at the same position "
            f"({sorted_positions[k]:.3f} mm along the normal); the series holds several volumes (echoes, phases, "
            "time points): pass the files of one volume as a list"
        )
    return order, sorted_positions


def _value(header: pydicom.Dataset, keyword: str) -> Any:
    try:
        return _plain(header.get(keyword))
    except Exception:  # a malformed value cannot even be shown as itself
        return "(unreadable)"


def _position(file: str, header: pydicom.Dataset, where: str) -> np.ndarray:
    """ImagePositionPatient as three finite numbers, or a GeometryError naming the file and the value."""
    try:
        position = np.array([float(v) for v in header.ImagePositionPatient], dtype=float)
    except Exception:
        position = np.array([])
    if position.shape != (3,) or not np.all(np.isfinite(position)):
        raise GeometryError(
            f"{where}: {Path(file).name} has ImagePositionPatient {_value(header, 'ImagePositionPatient')}, not "
            "three finite numbers; the file is malformed"
        )
    return position


def _check_uniform(positions: np.ndarray, files: Sequence[str], where: str, resample: bool) -> bool:
    """True when the slices are evenly spaced; raises NonUniformSpacingError unless resampling is asked for."""
    if positions.size < 3:
        return True
    gaps = np.diff(positions)
    mean = (positions[-1] - positions[0]) / (positions.size - 1)
    deviation = np.abs(positions - (positions[0] + mean * np.arange(positions.size)))
    if deviation.max() <= max(_UNIFORM_ABSOLUTE_MM, _UNIFORM_RELATIVE * mean):
        return True
    if resample:
        return False
    typical = float(np.median(gaps))
    k = int(np.argmax(np.abs(gaps - typical)))
    raise NonUniformSpacingError(
        f"{where}: slices are not evenly spaced: {Path(files[k]).name} and {Path(files[k + 1]).name} "
        f"(slices {k} and {k + 1}) are {gaps[k]:.4g} mm apart where the median gap is {typical:.4g} mm "
        f"(gaps {np.round(gaps, 4).tolist()[:8]}{'...' if gaps.size > 8 else ''}); a missing slice or a mixed series? "
        "Pass resample_nonuniform=True (--resample-nonuniform) to resample onto a uniform grid"
    )


def _needs_float(headers: list[pydicom.Dataset]) -> bool:
    for h in headers:
        slope, intercept = float(h.get("RescaleSlope", 1) or 1), float(h.get("RescaleIntercept", 0) or 0)
        if not (math.isfinite(slope) and math.isfinite(intercept)) or slope == 0:
            raise UnreadableInputError(
                f"a file of series {h.get('SeriesInstanceUID', '?')} has RescaleSlope {slope} and RescaleIntercept "
                f"{intercept}: the values cannot be scaled; the file is malformed"
            )
        if slope != round(slope) or intercept != round(intercept):
            return True
    return False


def _stored_dtype(header: pydicom.Dataset) -> np.dtype:
    bits = int(header.get("BitsAllocated", 16) or 16)
    signed = int(header.get("PixelRepresentation", 0) or 0) == 1
    if bits not in (8, 16, 32, 64):
        return np.dtype(np.uint16)
    return np.dtype(f"{'int' if signed else 'uint'}{bits}")


def _scaling(headers: list[pydicom.Dataset]) -> tuple[float | None, float | None]:
    pairs = {(float(h.get("RescaleSlope", 1) or 1), float(h.get("RescaleIntercept", 0) or 0)) for h in headers}
    if len(pairs) == 1:
        return pairs.pop()
    return None, None  # varies per slice


def _execute(files: Sequence[str], as_float: bool) -> sitk.Image:
    reader: sitk.ImageSeriesReader | sitk.ImageFileReader
    if len(files) == 1:  # the series reader makes a multi-frame file 4D; the file reader keeps it 3D
        reader = sitk.ImageFileReader()
        reader.SetFileName(str(files[0]))
    else:
        reader = sitk.ImageSeriesReader()
        reader.SetFileNames([str(f) for f in files])
    if as_float:
        reader.SetOutputPixelType(sitk.sitkFloat64)
    try:
        with _itk_warnings_off(), captured_stderr(f"reading {files[0]}"):
            return reader.Execute()
    except RuntimeError as exc:
        detail = one_line(exc)
        raise UnreadableInputError(
            f"GDCM could not read the series starting at {str(files[0])!r} ({detail}); "
            "compressed transfer syntaxes GDCM lacks need converting first"
        ) from exc


def _resample_uniform(stack: sitk.Image, positions: np.ndarray, offsets: np.ndarray, axes: np.ndarray) -> sitk.Image:
    """Resample a stack whose slices sit at ``positions`` (mm along the normal) onto a uniform grid.

    The stack is given a stand-in geometry with slice index as its third
    coordinate; a displacement field, constant in-plane, maps each point of
    the uniform output grid to the fractional slice (and in-plane offset)
    where the acquired data for it lie; SimpleITK's linear interpolation
    does the rest.
    """
    span = positions[-1] - positions[0]
    smallest = float(np.diff(positions).min())
    count = int(round(span / smallest)) + 1
    if count > _MAX_RESAMPLED_SLICES:
        raise GeometryError(
            f"resampling would make {count} slices (smallest gap {smallest:.4g} mm over {span:.4g} mm); "
            "the series is too irregular to resample"
        )
    step = span / (count - 1)
    origin = np.array(stack.GetOrigin())
    spacing = stack.GetSpacing()
    direction = tuple(axes.ravel())
    stand_in = sitk.Image(stack)
    stand_in.SetSpacing((spacing[0], spacing[1], 1.0))
    stand_in.SetOrigin(tuple(origin))
    stand_in.SetDirection(direction)

    reference = sitk.Image([stack.GetSize()[0], stack.GetSize()[1], count], sitk.sitkUInt8)
    reference.SetSpacing((spacing[0], spacing[1], step))
    reference.SetOrigin(tuple(origin))
    reference.SetDirection(direction)

    along = np.arange(count) * step  # output slice positions relative to the first slice
    relative = positions - positions[0]
    fractional = np.interp(along, relative, np.arange(positions.size, dtype=float))
    in_plane = np.column_stack([np.interp(along, relative, offsets[:, i]) for i in range(2)])
    local = np.column_stack([-in_plane, fractional - along])  # displacement in (row, col, normal) axes
    world = local @ axes.T
    extent = np.array(stack.GetSize()[:2]) * np.array(spacing[:2])
    field = np.broadcast_to(world[:, np.newaxis, np.newaxis, :], (count, 2, 2, 3)).copy()
    field_image = sitk.GetImageFromArray(field, isVector=True)
    field_image.SetSpacing((float(extent[0] + 2), float(extent[1] + 2), step))
    field_image.SetOrigin(tuple(origin + axes[:, :2] @ np.array([-1.0, -1.0])))
    field_image.SetDirection(direction)
    transform = sitk.DisplacementFieldTransform(field_image)
    return sitk.Resample(stand_in, reference, transform, sitk.sitkLinear, 0.0, sitk.sitkFloat64)


def _read_series(
    info: SeriesInfo, *, source: Path, resample: bool, headers: list[pydicom.Dataset] | None = None
) -> SpatialImage:
    """The series as one image; ``headers`` (one per file, in ``info.files`` order) when already read."""
    files = list(info.files)
    where = f"series {info.uid} in {info.folder!r}"
    headers = headers if headers is not None else _headers(files)
    first = headers[0]
    multiframe = any(_frames(h) > 1 for h in headers)
    if multiframe and len(files) > 1:
        raise UnsupportedFormatError(
            f"{where} is split over {len(files)} multi-frame files; read them one by one (pass a single file)"
        )
    geometric = all(_has_geometry(h) for h in headers)
    if not geometric:
        warn(
            f"{where}: no ImagePositionPatient/ImageOrientationPatient in {Path(files[0]).name if len(files) == 1 else 'its files'}: "
            "read with origin 0, unit slice spacing and identity direction; do not mix it with images in patient space",
            GeometryWarning,
        )
    _check_pixels(files, headers, where)
    as_float = _needs_float(headers)
    voxels = sum(int(h.get("Rows", 0) or 0) * int(h.get("Columns", 0) or 0) * _frames(h) for h in headers)
    within_memory(voxels * (8 if as_float else _stored_dtype(first).itemsize) * 3, Path(info.folder),
                  f"{len(files)} file(s), {voxels} voxels")
    positions: np.ndarray | None = None
    uniform = True
    if geometric and not multiframe and len(files) > 1:
        order, positions = _ordered(files, headers, where)
        files = [files[i] for i in order]
        headers = [headers[i] for i in order]
        uniform = _check_uniform(positions, files, where, resample)
    image = _execute(files, as_float)
    stored = _stored_dtype(first)

    if not uniform:
        axes = _slice_axes(first)
        assert axes is not None and positions is not None
        origin = np.array(headers[0].ImagePositionPatient, float)
        offsets = np.array([(np.array(h.ImagePositionPatient, float) - origin) @ axes[:, :2] for h in headers])
        image = _resample_uniform(image, positions, offsets, axes)
        logger.info(
            "%s: resampled %d uneven slices onto %d at %.4g mm",
            where,
            len(files),
            image.GetSize()[2],
            image.GetSpacing()[2],
        )

    if image.GetDimension() == 2:
        image = sitk.JoinSeries(image)
    array = sitk.GetArrayFromImage(image)
    if not uniform and not as_float:
        # linear interpolation of integer data: round back into the values' integer type
        array = np.rint(array)
    array = array.astype(smallest_exact_dtype(array, prefer=stored if not as_float else None), copy=False)
    slope, intercept = _scaling(headers)
    meta = {
        "source_path": str(source),
        "format": "dicom",
        "series_uid": info.uid,
        "files": tuple(str(f) for f in files),
        "slice_positions_mm": tuple(float(p) for p in positions) if positions is not None else (),
        "stored_dtype": stored.name,
        "rescale_slope": slope,
        "rescale_intercept": intercept,
        "resampled": not uniform,
        "dicom": _kept_tags(first),
    }
    result = SpatialImage(
        array,
        origin=image.GetOrigin(),
        spacing=image.GetSpacing(),
        direction=np.array(image.GetDirection()).reshape(3, 3),
        meta=meta,
    )
    logger.debug("read %s: %r", where, result)
    return result
