"""DICOM Spatial Registration and Deformable Spatial Registration objects: a registration a PACS and a TPS can use.

A registration of a moving DICOM series onto a fixed DICOM series is written
as one file (one SOP instance) in the fixed image's study, series modality
``REG``, referencing both series (Common Instance Reference module) and
both frames of reference:

* a linear transform: **Spatial Registration** (SOP class
  1.2.840.10008.5.1.4.1.1.66.1). Its Frame of Reference UID is the fixed
  image's (the *Registered RCS*). The Registration Sequence has two items:
  the fixed images (their frame of reference, an identity matrix, code
  DCM 125021 "Frame of Reference Identity") and the moving images (their
  frame of reference and the matrix, code DCM 125024 "Image Content-based
  Alignment"). **Direction** (PS3.3 C.20.2.1.1, PS3.17 O): the matrix
  registers the item's *Source RCS* to the *Registered RCS*: it maps a
  point of the **moving** frame to the **fixed** frame, ``A = M B`` with
  ``B`` in the moving frame and ``A`` in the fixed one, both LPS patient
  mm. That is the **inverse** of a coregister transform (fixed -> moving);
  the writer inverts, the reader inverts back. The matrix type is RIGID,
  RIGID_SCALE or AFFINE as the matrix is (C.20.2.1.2).
* a transform with a non-linear part: **Deformable Spatial Registration**
  (1.2.840.10008.5.1.4.1.1.66.3). **Direction** (C.20.3.1.1): it is
  applied to *Registered RCS* (fixed) coordinates and gives the *Source
  RCS* (moving) coordinate to sample, the same direction as ours: first
  the Pre Deformation matrix, then the offset of the deformation grid,
  then the Post Deformation matrix. We write the transform ``L(R(x))``
  (``L`` its last-applied linear members, ``R`` the rest) as Pre =
  identity, grid offsets ``R(x) - x`` sampled on the fixed image's grid
  (or on the field's own grid when ``R`` is one displacement field), Post
  = ``L``. Vector Grid Data is float32 (VR OF): the offsets come back to
  float32 precision, the matrices to the 16 characters of a decimal string.

Reading gives back a :class:`RegistrationObject` whose ``transform`` maps
fixed points to moving points (ours), whichever object it was.
"""

from __future__ import annotations

import datetime as _datetime
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence as DicomSequence
from pydicom.uid import ExplicitVRLittleEndian, generate_uid
from pydicom.valuerep import format_number_as_ds

from coregister.errors import ConfigError, GeometryError, UnreadableInputError, UnsupportedFormatError
from coregister.image import SpatialImage
from coregister.io.transforms._field import FieldParts, displacement_field, field_parts, sample_displacements
from coregister.transforms import Affine, Composite, LinearTransform, Transform, linear_members, linear_product

__all__ = [
    "DEFORMABLE_SPATIAL_REGISTRATION",
    "SPATIAL_REGISTRATION",
    "RegistrationObject",
    "read_registration",
    "registration_dataset",
    "write_registration",
]

logger = logging.getLogger(__name__)

SPATIAL_REGISTRATION = "1.2.840.10008.5.1.4.1.1.66.1"
DEFORMABLE_SPATIAL_REGISTRATION = "1.2.840.10008.5.1.4.1.1.66.3"

_IDENTITY_CODE = ("125021", "DCM", "Frame of Reference Identity")
_CONTENT_CODE = ("125024", "DCM", "Image Content-based Alignment")
_PATIENT_STUDY = ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyDate", "StudyTime",
                  "ReferringPhysicianName", "StudyID", "AccessionNumber")  # fmt: skip
_COPIED = ("SpecificCharacterSet", "StudyDescription", "PatientAge", "IssuerOfPatientID")
_ORTHO_ATOL = 1e-9


@dataclass(frozen=True)
class RegistrationObject:
    """A registration read from (or written as) a DICOM SRO or Deformable SRO.

    Attributes
    ----------
    transform : Transform
        Maps fixed (Registered RCS) points to moving (Source RCS) points, LPS mm.
    sop_class_uid : str
        :data:`SPATIAL_REGISTRATION` or :data:`DEFORMABLE_SPATIAL_REGISTRATION`.
    frame_of_reference_uid : str
        The Registered RCS (the fixed images' frame of reference).
    source_frame_of_reference_uid : str
        The moving images' frame of reference.
    referenced_series : dict
        SeriesInstanceUID -> the SOPInstanceUIDs referenced in it.
    """

    transform: Transform
    sop_class_uid: str
    frame_of_reference_uid: str
    source_frame_of_reference_uid: str
    referenced_series: dict[str, tuple[str, ...]]


# --------------------------------------------------------------------- helpers
def _code(value: tuple[str, str, str]) -> Dataset:
    item = Dataset()
    item.CodeValue, item.CodingSchemeDesignator, item.CodeMeaning = value
    return item


def _matrix_values(matrix: np.ndarray) -> list[str]:
    return [format_number_as_ds(float(v)) for v in np.asarray(matrix, dtype=float).ravel()]


def matrix_type(matrix: np.ndarray) -> str:
    """``RIGID`` (orthonormal, proper), ``RIGID_SCALE`` (orthogonal columns) or ``AFFINE`` (PS3.3 C.20.2.1.2).

    Examples
    --------
    >>> import numpy as np
    >>> matrix_type(np.eye(4)), matrix_type(np.diag([2.0, 1.0, 1.0, 1.0])), matrix_type(np.array(
    ...     [[1, 0.2, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1.0]]))
    ('RIGID', 'RIGID_SCALE', 'AFFINE')
    """
    linear = np.asarray(matrix, dtype=float)[:3, :3]
    gram = linear.T @ linear
    if np.allclose(gram, np.eye(3), atol=_ORTHO_ATOL) and np.linalg.det(linear) > 0:
        return "RIGID"
    if np.allclose(gram, np.diag(np.diag(gram)), atol=_ORTHO_ATOL * max(1.0, float(np.abs(gram).max()))):
        return "RIGID_SCALE"
    return "AFFINE"


def _matrix_item(matrix: np.ndarray) -> Dataset:
    item = Dataset()
    item.FrameOfReferenceTransformationMatrixType = matrix_type(matrix)
    item.FrameOfReferenceTransformationMatrix = _matrix_values(matrix)
    return item


def _dicom_facts(image: SpatialImage, role: str) -> dict[str, Any]:
    tags = dict(image.meta.get("dicom") or {})
    files = tuple(image.meta.get("files") or ())
    missing = [k for k in ("FrameOfReferenceUID", "StudyInstanceUID", "SeriesInstanceUID") if not tags.get(k)]
    if image.meta.get("format") != "dicom" or not files or missing:
        raise ConfigError(
            f"a DICOM registration object references the {role} images by their UIDs: read the {role} image from its "
            "DICOM series (coregister.read(folder))" + (f"; it lacks {', '.join(missing)}" if missing else "")
        )
    if image.ndim != 3:
        raise GeometryError(f"a DICOM registration object registers 3D patient coordinates; the {role} image is {image.ndim}D")
    return {"tags": tags, "files": files}


def _instances(files: Sequence[str]) -> list[tuple[str, str]]:
    """(SOPClassUID, SOPInstanceUID) of each file of a series, in the order given."""
    out = []
    for name in files:
        header = pydicom.dcmread(name, stop_before_pixels=True, specific_tags=["SOPClassUID", "SOPInstanceUID"])
        out.append((str(header.SOPClassUID), str(header.SOPInstanceUID)))
    return out


def _image_references(instances: Sequence[tuple[str, str]]) -> DicomSequence:
    items = []
    for sop_class, sop_instance in instances:
        item = Dataset()
        item.ReferencedSOPClassUID = sop_class
        item.ReferencedSOPInstanceUID = sop_instance
        items.append(item)
    return DicomSequence(items)


def _series_item(series_uid: str, instances: Sequence[tuple[str, str]]) -> Dataset:
    item = Dataset()
    item.SeriesInstanceUID = series_uid
    refs = []
    for sop_class, sop_instance in instances:
        ref = Dataset()
        ref.ReferencedSOPClassUID = sop_class
        ref.ReferencedSOPInstanceUID = sop_instance
        refs.append(ref)
    item.ReferencedInstanceSequence = DicomSequence(refs)
    return item


def _split_linear(transform: Transform) -> tuple[np.ndarray, Transform | None]:
    """``(L, R)`` with ``transform = L o R``: ``L`` the last-applied linear members (4x4), ``R`` the rest (None if none)."""
    if transform.is_linear:  # a linear transform, or a chain of them: one matrix
        (whole,) = linear_members(transform)
        return whole.homogeneous, None
    members = list(transform.transforms) if isinstance(transform, Composite) else [transform]
    outer: list[LinearTransform] = []
    while members and isinstance(members[0], LinearTransform):
        outer.append(members.pop(0))  # type: ignore[arg-type]
    rest: Transform = members[0] if len(members) == 1 else Composite(tuple(members))
    return (linear_product(outer).homogeneous if outer else np.eye(4)), rest


def _right_handed(parts: FieldParts) -> FieldParts:
    """The grid with its slice axis along row x column (as DICOM defines it), reversing the slices if needed."""
    direction = parts.direction
    if np.linalg.det(direction) > 0:
        return parts
    flipped = direction.copy()
    flipped[:, 2] *= -1
    last = parts.origin + (parts.displacements.shape[0] - 1) * parts.spacing[2] * direction[:, 2]
    return FieldParts(np.ascontiguousarray(parts.displacements[::-1]), last, parts.spacing, flipped)


def _grid_parts(rest: Transform, fixed: SpatialImage, grid: SpatialImage | None) -> FieldParts:
    parts = field_parts(rest)
    if parts is not None and grid is None:
        return parts
    on = grid if grid is not None else fixed
    return FieldParts(sample_displacements(rest, on), np.array(on.origin, dtype=float), np.array(on.spacing, dtype=float),
                      np.array(on.direction, dtype=float))  # fmt: skip


# --------------------------------------------------------------------- writing
def registration_dataset(
    transform: Transform,
    *,
    fixed: SpatialImage,
    moving: SpatialImage,
    grid: SpatialImage | None = None,
    description: str = "registration by coregister",
    when: _datetime.datetime | None = None,
) -> Dataset:
    """The registration object as a pydicom dataset (see :func:`write_registration`)."""
    from coregister._version import __version__

    if transform.ndim != 3:
        raise GeometryError(f"a DICOM registration object holds a 3D transform, not a {transform.ndim}D one")
    fixed_facts, moving_facts = _dicom_facts(fixed, "fixed"), _dicom_facts(moving, "moving")
    ftags, mtags = fixed_facts["tags"], moving_facts["tags"]
    fixed_instances, moving_instances = _instances(fixed_facts["files"]), _instances(moving_facts["files"])
    linear_part, rest = _split_linear(transform)
    deformable = rest is not None
    when = when or _datetime.datetime.now()

    entropy = [str(ftags["SeriesInstanceUID"]), str(mtags["SeriesInstanceUID"]), transform.to_json()[:100_000]]
    ds = Dataset()
    for keyword in _COPIED:
        if ftags.get(keyword):
            setattr(ds, keyword, ftags[keyword])
    if "SpecificCharacterSet" not in ds and (not description.isascii() or
                                            any(isinstance(v, str) and not v.isascii() for v in ftags.values())):
        ds.SpecificCharacterSet = "ISO_IR 192"
    ds.SOPClassUID = DEFORMABLE_SPATIAL_REGISTRATION if deformable else SPATIAL_REGISTRATION
    ds.SOPInstanceUID = generate_uid(entropy_srcs=["coregister registration instance", *entropy])
    # Patient and General Study: the fixed image's (the registered frame of reference belongs to its study)
    for keyword in _PATIENT_STUDY:
        setattr(ds, keyword, ftags.get(keyword, "") or "")
    ds.StudyInstanceUID = ftags["StudyInstanceUID"]
    # General Series, Spatial Registration Series
    ds.Modality = "REG"
    ds.SeriesInstanceUID = generate_uid(entropy_srcs=["coregister registration series", *entropy])
    ds.SeriesNumber = 2000 + int(ftags.get("SeriesNumber") or 1)
    ds.SeriesDescription = description[:64]
    # Frame of Reference: the Registered RCS is the fixed image's
    ds.FrameOfReferenceUID = ftags["FrameOfReferenceUID"]
    ds.PositionReferenceIndicator = ""
    # General Equipment (+ Enhanced General Equipment for the deformable object)
    ds.Manufacturer = "coregister"
    ds.ManufacturerModelName = "coregister"
    ds.DeviceSerialNumber = "coregister"
    ds.SoftwareVersions = f"coregister {__version__}"
    # Spatial Registration / Deformable Spatial Registration, Content Identification
    ds.ContentDate = when.strftime("%Y%m%d")
    ds.ContentTime = when.strftime("%H%M%S")
    ds.InstanceNumber = 1
    ds.ContentLabel = "REGISTRATION"
    ds.ContentDescription = description[:64]
    ds.ContentCreatorName = ""
    if deformable:
        assert rest is not None
        ds.DeformableRegistrationSequence = DicomSequence(
            [_deformable_item(linear_part, rest, fixed, grid, mtags, moving_instances)]
        )
    else:
        moving_to_fixed = np.linalg.inv(linear_part)  # the SRO matrix registers the moving frame to the fixed frame
        ds.RegistrationSequence = DicomSequence([
            _registration_item(str(ftags["FrameOfReferenceUID"]), fixed_instances, np.eye(4), _IDENTITY_CODE,
                               "the fixed images: the registered frame of reference"),
            _registration_item(str(mtags["FrameOfReferenceUID"]), moving_instances, moving_to_fixed, _CONTENT_CODE,
                               "moving frame -> fixed frame (coregister)"),
        ])  # fmt: skip
    # Common Instance Reference: both series, by study
    same_study = [(ftags["SeriesInstanceUID"], fixed_instances)]
    other: dict[str, list[tuple[str, Any]]] = {}
    if mtags["StudyInstanceUID"] == ftags["StudyInstanceUID"]:
        if mtags["SeriesInstanceUID"] != ftags["SeriesInstanceUID"]:
            same_study.append((mtags["SeriesInstanceUID"], moving_instances))
    else:
        other.setdefault(str(mtags["StudyInstanceUID"]), []).append((mtags["SeriesInstanceUID"], moving_instances))
    ds.ReferencedSeriesSequence = DicomSequence([_series_item(str(uid), inst) for uid, inst in same_study])
    if other:
        studies = []
        for study_uid, series in other.items():
            item = Dataset()
            item.StudyInstanceUID = study_uid
            item.ReferencedSeriesSequence = DicomSequence([_series_item(str(uid), inst) for uid, inst in series])
            studies.append(item)
        ds.StudiesContainingOtherReferencedInstancesSequence = DicomSequence(studies)
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    return ds


def _registration_item(frame_uid: str, instances: Sequence[tuple[str, str]], matrix: np.ndarray,
                       code: tuple[str, str, str], comment: str) -> Dataset:  # fmt: skip
    item = Dataset()
    item.FrameOfReferenceUID = frame_uid
    item.ReferencedImageSequence = _image_references(instances)
    registration = Dataset()
    registration.FrameOfReferenceTransformationComment = comment
    registration.RegistrationTypeCodeSequence = DicomSequence([_code(code)])
    registration.MatrixSequence = DicomSequence([_matrix_item(matrix)])
    item.MatrixRegistrationSequence = DicomSequence([registration])
    return item


def _deformable_item(linear_part: np.ndarray, rest: Transform, fixed: SpatialImage, grid: SpatialImage | None,
                     mtags: dict[str, Any], moving_instances: Sequence[tuple[str, str]]) -> Dataset:  # fmt: skip
    parts = _right_handed(_grid_parts(rest, fixed, grid))
    item = Dataset()
    item.SourceFrameOfReferenceUID = mtags["FrameOfReferenceUID"]
    item.ReferencedImageSequence = _image_references(moving_instances)
    item.FrameOfReferenceTransformationComment = "fixed (registered) frame -> moving (source) frame (coregister)"
    item.RegistrationTypeCodeSequence = DicomSequence([_code(_CONTENT_CODE)])
    item.PreDeformationMatrixRegistrationSequence = DicomSequence([_matrix_item(np.eye(4))])
    item.PostDeformationMatrixRegistrationSequence = DicomSequence([_matrix_item(linear_part)])
    cell = Dataset()
    cell.ImagePositionPatient = [format_number_as_ds(float(v)) for v in parts.origin]
    cell.ImageOrientationPatient = [format_number_as_ds(float(v)) for v in parts.direction[:, :2].T.ravel()]
    cell.GridDimensions = [int(n) for n in parts.displacements.shape[:3][::-1]]
    cell.GridResolution = [float(v) for v in parts.spacing]
    cell.VectorGridData = np.ascontiguousarray(parts.displacements, dtype="<f4").tobytes()
    item.DeformableRegistrationGridSequence = DicomSequence([cell])
    return item


def write_registration(
    transform: Transform,
    path: str | os.PathLike[str],
    *,
    fixed: SpatialImage,
    moving: SpatialImage,
    grid: SpatialImage | None = None,
    description: str = "registration by coregister",
) -> Path:
    """Write ``transform`` (fixed -> moving) as a DICOM (Deformable) Spatial Registration object, atomically.

    Parameters
    ----------
    transform : Transform
        Maps fixed-space points to moving space (what :func:`coregister.register` returns).
        Linear: a Spatial Registration object; with a non-linear member: a
        Deformable Spatial Registration object (see the module notes for
        the directions each one stores).
    path : path-like
        The file (``registration.dcm``).
    fixed, moving : SpatialImage
        The two series, read from DICOM (their UIDs and files are referenced).
        The object joins the fixed image's patient and study.
    grid : SpatialImage, optional
        Where a deformable part is sampled (default: the fixed image's grid;
        a displacement field keeps its own grid).
    description : str
        SeriesDescription and ContentDescription (64 characters at most).

    Returns
    -------
    Path
    """
    from coregister._files import atomic_path

    ds = registration_dataset(transform, fixed=fixed, moving=moving, grid=grid, description=description)
    path = Path(path)
    with atomic_path(path) as tmp:
        ds.save_as(tmp, enforce_file_format=True)
    logger.info("wrote %s: %s, registered frame of reference %s, source %s", path, ds.SOPClassUID.name,
                ds.FrameOfReferenceUID, moving.meta["dicom"]["FrameOfReferenceUID"])  # fmt: skip
    return path


# --------------------------------------------------------------------- reading
def _matrix(sequence: Any, where: str) -> np.ndarray:
    items = list(sequence or [])
    if len(items) != 1:
        raise UnsupportedFormatError(f"{where}: {len(items)} matrices in one registration; coregister reads one")
    values = np.array([float(v) for v in items[0].FrameOfReferenceTransformationMatrix], dtype=float)
    if values.size != 16:
        raise UnreadableInputError(f"{where}: a Frame of Reference Transformation Matrix has 16 values, not {values.size}")
    return values.reshape(4, 4)


def _referenced(ds: Dataset) -> dict[str, tuple[str, ...]]:
    out: dict[str, tuple[str, ...]] = {}
    series_items = list(ds.get("ReferencedSeriesSequence", []))
    for study in ds.get("StudiesContainingOtherReferencedInstancesSequence", []):
        series_items.extend(study.get("ReferencedSeriesSequence", []))
    for item in series_items:
        out[str(item.SeriesInstanceUID)] = tuple(str(r.ReferencedSOPInstanceUID) for r in item.get("ReferencedInstanceSequence", []))
    return out


def read_registration(path: str | os.PathLike[str], *, source_frame_of_reference_uid: str | None = None) -> RegistrationObject:
    """Read a (Deformable) Spatial Registration object; its transform maps fixed points to moving points (ours).

    Parameters
    ----------
    path : path-like
    source_frame_of_reference_uid : str, optional
        Which registered frame of reference is the moving one, when the
        object registers several (default: the one item that is not the
        registered frame itself).
    """
    path = Path(path)
    where = repr(str(path))
    try:
        ds = pydicom.dcmread(path)
    except (pydicom.errors.InvalidDicomError, OSError) as exc:
        raise UnreadableInputError(f"{where} is not a DICOM file: {exc}") from exc
    sop_class = str(ds.get("SOPClassUID", ""))
    registered = str(ds.get("FrameOfReferenceUID", ""))
    if sop_class == SPATIAL_REGISTRATION:
        items = list(ds.get("RegistrationSequence", []))
        candidates = [it for it in items if str(it.get("FrameOfReferenceUID", "")) != registered
                      or not np.allclose(_matrix(it.MatrixRegistrationSequence[0].MatrixSequence, where), np.eye(4))]  # fmt: skip
        if source_frame_of_reference_uid is not None:
            candidates = [it for it in items if str(it.get("FrameOfReferenceUID", "")) == source_frame_of_reference_uid]
        if len(candidates) != 1:
            raise UnsupportedFormatError(
                f"{where} registers {len(candidates)} frames of reference other than its own; name the moving one "
                "with source_frame_of_reference_uid="
            )
        item = candidates[0]
        moving_to_fixed = _matrix(item.MatrixRegistrationSequence[0].MatrixSequence, where)
        transform: Transform = Affine.from_homogeneous(np.linalg.inv(moving_to_fixed))
        source = str(item.get("FrameOfReferenceUID", ""))
    elif sop_class == DEFORMABLE_SPATIAL_REGISTRATION:
        items = list(ds.get("DeformableRegistrationSequence", []))
        if source_frame_of_reference_uid is not None:
            items = [it for it in items if str(it.SourceFrameOfReferenceUID) == source_frame_of_reference_uid]
        with_grid = [it for it in items if it.get("DeformableRegistrationGridSequence")]
        if len(with_grid) != 1:
            raise UnsupportedFormatError(f"{where} holds {len(with_grid)} deformation grids; name the moving frame with "
                                         "source_frame_of_reference_uid=")  # fmt: skip
        item = with_grid[0]
        transform = _deformable_transform(item, where)
        source = str(item.SourceFrameOfReferenceUID)
    else:
        raise UnsupportedFormatError(
            f"{where} is not a Spatial Registration ({SPATIAL_REGISTRATION}) or Deformable Spatial Registration "
            f"({DEFORMABLE_SPATIAL_REGISTRATION}) object (SOP class {sop_class or 'missing'})"
        )
    return RegistrationObject(transform, sop_class, registered, source, _referenced(ds))


def _deformable_transform(item: Dataset, where: str) -> Transform:
    cell = item.DeformableRegistrationGridSequence[0]
    size = [int(v) for v in cell.GridDimensions]
    spacing = np.array([float(v) for v in cell.GridResolution], dtype=float)
    orientation = np.array([float(v) for v in cell.ImageOrientationPatient], dtype=float)
    row, column = orientation[:3], orientation[3:]
    direction = np.column_stack([row, column, np.cross(row, column)])
    vectors = np.frombuffer(cell.VectorGridData, dtype="<f4")
    if vectors.size != 3 * int(np.prod(size)):
        raise UnreadableInputError(f"{where}: Vector Grid Data holds {vectors.size} values for a {size} grid of 3-vectors")
    field = displacement_field(vectors.reshape(size[2], size[1], size[0], 3).astype(np.float64),
                               origin=[float(v) for v in cell.ImagePositionPatient], spacing=spacing,
                               direction=direction)  # fmt: skip
    pre = _matrix(item.PreDeformationMatrixRegistrationSequence, where) if "PreDeformationMatrixRegistrationSequence" in item else np.eye(4)
    post = _matrix(item.PostDeformationMatrixRegistrationSequence, where) if "PostDeformationMatrixRegistrationSequence" in item else np.eye(4)
    members: list[Transform] = [Affine.from_homogeneous(m) for m in (post,) if not np.array_equal(m, np.eye(4))]
    members.append(field)
    members.extend(Affine.from_homogeneous(m) for m in (pre,) if not np.array_equal(m, np.eye(4)))
    return members[0] if len(members) == 1 else Composite(tuple(members))
