"""DICOM a PACS and a planning system accept: registration objects and derived series (``coregister.io.dicom_registration``).

* A linear registration is a Spatial Registration object whose matrix maps
  the moving frame to the fixed frame (PS3.3 C.20.2.1.1): the inverse of
  ours. A deformable one is a Deformable Spatial Registration object,
  applied to fixed coordinates to find the moving ones (C.20.3.1.1): ours.
  Reading either back gives the transform to 1e-9 (the matrices) and the
  grid's float32 vectors exactly.
* Every object the package writes has the Type 1 and 2 attributes of its
  IOD's modules (the table in ``dicom_iods.py``, from PS3.3).
* ``coregister register --output-format dicom --dicom-registration`` writes
  the derived series in the fixed image's frame of reference and the
  registration object beside it, referencing both series.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pydicom
import pytest
from dicom_iods import IODS, missing_attributes
from pydicom.uid import generate_uid

import coregister as cr
from coregister.cli import main
from coregister.io.dicom_registration import (
    DEFORMABLE_SPATIAL_REGISTRATION,
    SPATIAL_REGISTRATION,
    read_registration,
    write_registration,
)
from coregister.io.dicom_write import write_dicom
from coregister.io.transforms._field import displacement_field, field_parts, sample_displacements
from coregister.transforms import linear_members

CT_FOLDER = "medical/mri_dir_phantom/CT_every8th"
MR_FOLDER = "medical/mri_dir_phantom/MR_T2_every2nd"
MATRIX_ATOL = 1e-9


def _copy_slices(source: Path, count: int, offset: int, folder: Path) -> Path:
    files = sorted(source.glob("*.dcm"), key=lambda f: float(pydicom.dcmread(f, stop_before_pixels=True).ImagePositionPatient[2]))
    folder.mkdir()
    for path in files[offset : offset + count]:
        shutil.copy(path, folder)
    return folder


@pytest.fixture(scope="module")
def series(tmp_path_factory: pytest.TempPathFactory) -> dict[str, cr.SpatialImage]:
    """Three CT slices and three MR slices of the MRI-DIR phantom: two studies, two frames of reference."""
    from conftest import require_data

    root = tmp_path_factory.mktemp("series")
    ct = cr.read(_copy_slices(require_data(CT_FOLDER), 3, 22, root / "ct"))
    mr = cr.read(_copy_slices(require_data(MR_FOLDER), 3, 20, root / "mr"))
    assert ct.meta["dicom"]["FrameOfReferenceUID"] != mr.meta["dicom"]["FrameOfReferenceUID"]
    assert ct.meta["dicom"]["StudyInstanceUID"] != mr.meta["dicom"]["StudyInstanceUID"]
    return {"ct": ct, "mr": mr}


def _linear(kind: str) -> cr.Transform:
    centre = [10.0, -20.0, 30.0]
    return {
        "translation": cr.Translation([3.25, -2.5, 7.75]),
        "rigid": cr.Rigid.from_angles(np.deg2rad([3.0, -2.0, 8.0]), translation=[3.3, -2.1, 7.7], center=centre),
        "similarity": cr.Similarity.from_angles(1.05, np.deg2rad([1.0, 2.0, -4.0]), translation=[1.0, 2.0, 3.0], center=centre),
        "affine": cr.Affine([[1.02, 0.03, 0.0], [-0.01, 0.97, 0.02], [0.0, 0.01, 1.01]], [4.0, -1.0, 2.5], centre),
        "rigid_after_translation": cr.Composite((cr.Rigid.from_angles(np.deg2rad([0.0, 5.0, 0.0]), center=centre),
                                                 cr.Translation([1.0, 2.0, 3.0]))),  # fmt: skip
    }[kind]


def _items(ds: pydicom.Dataset) -> list[pydicom.Dataset]:
    return list(ds.RegistrationSequence)


@pytest.mark.parametrize(("kind", "matrix_type"),
                         [("translation", "RIGID"), ("rigid", "RIGID"), ("similarity", "RIGID_SCALE"), ("affine", "AFFINE"),
                          ("rigid_after_translation", "RIGID")])  # fmt: skip
def test_a_linear_registration_is_a_spatial_registration_object(
    series: dict[str, cr.SpatialImage], tmp_path: Path, kind: str, matrix_type: str
) -> None:
    ct, mr = series["ct"], series["mr"]
    transform = _linear(kind)
    path = write_registration(transform, tmp_path / "registration.dcm", fixed=ct, moving=mr)
    ds = pydicom.dcmread(path)
    assert ds.SOPClassUID == SPATIAL_REGISTRATION and ds.Modality == "REG"
    assert ds.FrameOfReferenceUID == ct.meta["dicom"]["FrameOfReferenceUID"]  # the Registered RCS: the fixed image's
    fixed_item, moving_item = _items(ds)
    assert [fixed_item.FrameOfReferenceUID, moving_item.FrameOfReferenceUID] == [
        ct.meta["dicom"]["FrameOfReferenceUID"], mr.meta["dicom"]["FrameOfReferenceUID"]]  # fmt: skip
    matrices = [np.array(item.MatrixRegistrationSequence[0].MatrixSequence[0].FrameOfReferenceTransformationMatrix,
                         dtype=float).reshape(4, 4) for item in (fixed_item, moving_item)]  # fmt: skip
    assert np.array_equal(matrices[0], np.eye(4))
    # the direction of C.20.2.1.1: the matrix takes a point of the moving (source) frame to the fixed frame
    fixed_points = ct.world_grid().reshape(-1, 3)[::20011]
    moving_points = transform.transform_points(fixed_points)
    assert np.abs((np.c_[moving_points, np.ones(len(moving_points))] @ matrices[1].T)[:, :3] - fixed_points).max() < 1e-9
    assert moving_item.MatrixRegistrationSequence[0].MatrixSequence[0].FrameOfReferenceTransformationMatrixType == matrix_type
    # both series are referenced, image by image
    instances = {str(pydicom.dcmread(f, stop_before_pixels=True).SOPInstanceUID) for f in mr.meta["files"]}
    assert {str(r.ReferencedSOPInstanceUID) for r in moving_item.ReferencedImageSequence} == instances
    back = read_registration(path)
    assert back.referenced_series.keys() == {ct.meta["dicom"]["SeriesInstanceUID"], mr.meta["dicom"]["SeriesInstanceUID"]}
    assert back.source_frame_of_reference_uid == mr.meta["dicom"]["FrameOfReferenceUID"]
    (whole,) = linear_members(transform)
    assert np.abs(back.transform.homogeneous - whole.homogeneous).max() < MATRIX_ATOL  # type: ignore[attr-defined]
    assert np.abs(cr.read_transform(path).transform_points(fixed_points) - moving_points).max() < MATRIX_ATOL


def _deformable(kind: str, fixed: cr.SpatialImage) -> cr.Transform:
    z, y, x = np.meshgrid(*[np.arange(n, dtype=float) for n in fixed.shape], indexing="ij")
    u = np.stack([2.0 * np.sin(x / 40.0), 1.5 * np.cos(y / 30.0), 0.5 * np.sin(z + x / 50.0)], axis=-1)
    field = displacement_field(u, origin=fixed.origin, spacing=fixed.spacing, direction=fixed.direction)
    spline = cr.BSpline(np.random.default_rng(5).normal(0, 2.0, (3, 5, 6, 6)), grid_origin=np.array(fixed.world_centre) - 120.0,
                        grid_spacing=[60.0, 60.0, 60.0])  # fmt: skip
    return {"field": field, "affine_field": cr.Composite((_linear("affine"), field)),
            "rigid_bspline": cr.Composite((_linear("rigid"), spline))}[kind]  # fmt: skip


@pytest.mark.parametrize("kind", ["field", "affine_field", "rigid_bspline"])
def test_a_deformable_registration_is_a_deformable_spatial_registration_object(
    series: dict[str, cr.SpatialImage], tmp_path: Path, kind: str
) -> None:
    ct, mr = series["ct"], series["mr"]
    transform = _deformable(kind, ct)
    # a B-spline is sampled on a grid: the fixed image's, or one given (here 8 times coarser in plane)
    grid = ct.replace(array=np.zeros((ct.shape[0], 64, 64)), spacing=(ct.spacing[0] * 8, ct.spacing[1] * 8, ct.spacing[2])) \
        if kind == "rigid_bspline" else None
    path = write_registration(transform, tmp_path / "registration.dcm", fixed=ct, moving=mr, grid=grid)
    ds = pydicom.dcmread(path)
    assert ds.SOPClassUID == DEFORMABLE_SPATIAL_REGISTRATION
    (item,) = ds.DeformableRegistrationSequence
    assert item.SourceFrameOfReferenceUID == mr.meta["dicom"]["FrameOfReferenceUID"]
    post = np.array(item.PostDeformationMatrixRegistrationSequence[0].FrameOfReferenceTransformationMatrix, float).reshape(4, 4)
    linear = transform.transforms[0].homogeneous if kind != "field" else np.eye(4)  # type: ignore[attr-defined]
    assert np.abs(post - linear).max() < MATRIX_ATOL  # C.20.3.1.1: registered (fixed) -> source (moving), as ours

    back = read_registration(path)
    members = back.transform.transforms if isinstance(back.transform, cr.Composite) else (back.transform,)
    parts = field_parts(members[-1])
    assert parts is not None
    nonlinear = transform.transforms[-1] if isinstance(transform, cr.Composite) else transform
    expected = sample_displacements(nonlinear, grid or ct)
    assert np.array_equal(parts.displacements, expected.astype(np.float32).astype(np.float64))  # VR OF: float32
    if kind != "field":
        assert np.abs(members[0].homogeneous - linear).max() < MATRIX_ATOL  # type: ignore[attr-defined]
    points = (grid or ct).world_grid().reshape(-1, 3)[::997]  # where the grid samples the deformation
    assert np.abs(back.transform.transform_points(points) - transform.transform_points(points)).max() < 1e-5


# ------------------------------------------------------------------ the IOD tables
def _objects(series: dict[str, cr.SpatialImage], folder: Path, data: Callable[[str], Path]) -> dict[str, pydicom.Dataset]:
    ct, mr = series["ct"], series["mr"]
    nifti = cr.read(data("medical/nibabel_anat_func/anatomical.nii"))
    written = {
        "ct_series": write_dicom(ct, folder / "ct"),
        "mr_series": write_dicom(mr, folder / "mr"),
        "mr_values_on_ct_grid": write_dicom(ct, folder / "mr_on_ct", values_from=mr),
        "secondary_capture_from_nifti": write_dicom(nifti, folder / "sc"),
        "mr_from_nifti": write_dicom(nifti, folder / "mr_nifti", modality="MR"),
        "spatial_registration": write_registration(_linear("rigid"), folder / "sro.dcm", fixed=ct, moving=mr),
        "deformable_spatial_registration": write_registration(_deformable("affine_field", ct), folder / "dsro.dcm",
                                                              fixed=ct, moving=mr),  # fmt: skip
    }
    return {name: pydicom.dcmread(sorted(p.iterdir())[0] if p.is_dir() else p) for name, p in written.items()}


def test_every_dicom_object_written_has_the_attributes_its_iod_requires(
    series: dict[str, cr.SpatialImage], tmp_path: Path, data: Callable[[str], Path]
) -> None:
    objects = _objects(series, tmp_path, data)
    assert {str(ds.SOPClassUID) for ds in objects.values()} == set(IODS)  # every class the package writes is covered
    problems = {name: missing for name, ds in objects.items() if (missing := missing_attributes(ds))}
    assert not problems, problems
    # the check can fail: an object without a Type 2 attribute, or with an empty Type 1 one inside a sequence
    sro = objects["spatial_registration"]
    del sro.PatientID
    sro.RegistrationSequence[1].MatrixRegistrationSequence[0].MatrixSequence[0].FrameOfReferenceTransformationMatrixType = ""
    assert missing_attributes(sro) == [
        "PatientID (Type 2) is absent",
        "RegistrationSequence[1]>MatrixRegistrationSequence[0]>MatrixSequence[0]>FrameOfReferenceTransformationMatrixType "
        "(Type 1) is empty",
    ]


# ------------------------------------------------------------------ the command line
def test_register_writes_the_registration_object_beside_the_derived_series(
    series: dict[str, cr.SpatialImage], tmp_path: Path
) -> None:
    """A CT series and the same CT moved by (3, -2, 0) mm in another frame of reference, both DICOM."""
    crop = series["ct"].replace(array=np.array(series["ct"].array[:, 180:230, 200:256]),
                                origin=tuple(series["ct"].index_to_world([[200, 180, 0]])[0]))  # fmt: skip
    fixed_folder = write_dicom(crop, tmp_path / "fixed")
    fixed = cr.read(fixed_folder)
    moved_tags = {**fixed.meta["dicom"], "FrameOfReferenceUID": generate_uid(), "SeriesInstanceUID": generate_uid(),
                  "SeriesDescription": "moved"}  # fmt: skip
    moving_folder = write_dicom(fixed.replace(origin=tuple(np.array(fixed.origin) + [3.0, -2.0, 0.0]),
                                              meta={**fixed.meta, "dicom": moved_tags}), tmp_path / "moving")  # fmt: skip
    outdir = tmp_path / "out"
    assert main(["register", str(fixed_folder), str(moving_folder), "-o", str(outdir), "--preset", "translation",
                 "--output-format", "dicom", "--dicom-registration"]) == 0  # fmt: skip
    assert sorted(p.name for p in outdir.iterdir()) == ["registered_dicom", "registration.dcm", "result.json", "transform.tfm"]
    derived = pydicom.dcmread(sorted((outdir / "registered_dicom").iterdir())[0])
    sro = pydicom.dcmread(outdir / "registration.dcm")
    fixed_frame = fixed.meta["dicom"]["FrameOfReferenceUID"]
    assert derived.FrameOfReferenceUID == sro.FrameOfReferenceUID == fixed_frame  # the derived series stays in it
    assert [item.FrameOfReferenceUID for item in sro.RegistrationSequence] == [fixed_frame, moved_tags["FrameOfReferenceUID"]]
    saved = cr.read_transform(outdir / "transform.tfm")
    from_dicom = cr.read_transform(outdir / "registration.dcm")
    points = fixed.world_grid().reshape(-1, 3)[::97]
    assert np.abs(from_dicom.transform_points(points) - saved.transform_points(points)).max() < MATRIX_ATOL
    assert np.abs(saved.transform_points(points[:1])[0] - points[0] - [3.0, -2.0, 0.0]).max() < 0.1  # mm
    referenced = read_registration(outdir / "registration.dcm").referenced_series
    moving = cr.read(moving_folder)
    assert set(referenced) == {fixed.meta["dicom"]["SeriesInstanceUID"], moving.meta["dicom"]["SeriesInstanceUID"]}
    assert referenced[moving.meta["dicom"]["SeriesInstanceUID"]] == tuple(
        str(pydicom.dcmread(f, stop_before_pixels=True).SOPInstanceUID) for f in moving.meta["files"])  # fmt: skip


def test_the_registration_object_needs_two_dicom_series(
    series: dict[str, cr.SpatialImage], tmp_path: Path, data: Callable[[str], Path], capsys: pytest.CaptureFixture[str]
) -> None:
    nifti = str(data("medical/nibabel_anat_func/anatomical.nii"))
    code = main(["register", nifti, nifti, "-o", str(tmp_path / "out"), "--dicom-registration"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "is not DICOM" in err
    assert not (tmp_path / "out").exists()
    with pytest.raises(cr.ConfigError, match="read the moving image from its DICOM series"):
        write_registration(_linear("rigid"), tmp_path / "r.dcm", fixed=series["ct"], moving=cr.read(nifti))
