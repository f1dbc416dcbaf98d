"""Writing a derived DICOM series (``coregister.io.dicom_write``, ``cr.write(..., format="dicom")``, ``--output-format dicom``).

Every series written here is read back twice: by coregister (GDCM pixels and
geometry, pydicom tags) and by SimpleITK's ``ImageSeriesReader`` alone, as a
PACS viewer or ITK tool would. Sources are real: slices of the MRI-DIR CT
(feet-first) and T2 MR series, ``MR_small.dcm``, and crops of the MNI152
template (whole numbers in float32, and resampled by a sub-voxel shift, as a
registration writes it) and its label atlas (NIfTI, stored LAS: a left-handed
LPS direction). Oblique and feet-first grids are the CT crop with its direction
replaced by a known rotation.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
from pydicom.dataset import validate_file_meta
from pydicom.uid import CTImageStorage, MRImageStorage, SecondaryCaptureImageStorage

import coregister as cr
from coregister.cli import main
from coregister.errors import ConfigError, DiskFullError, GeometryError, OutputExistsError, UnsupportedFormatError
from coregister.io.dicom import read_dicom
from coregister.io.dicom_write import derived_series_options, write_dicom

CT_FOLDER = "medical/mri_dir_phantom/CT_every8th"
MR_FOLDER = "medical/mri_dir_phantom/MR_T2_every2nd"
MR_SMALL = "medical/dicom_small/MR_small.dcm"
MNI = "medical/antspy/mni.nii.gz"
MNI_LABELS = "medical/antspy/mnia.nii.gz"
PHOTO = "medical/itk_brainweb_2d/BrainT1SliceBorder20.png"
GEOMETRY_ATOL = 1e-6
EXIT_OK = 0

PATIENT_STUDY_TAGS = ("PatientID", "PatientName", "StudyInstanceUID", "StudyDate", "FrameOfReferenceUID")


def _rotation(rx: float, ry: float, rz: float) -> np.ndarray:
    """A proper rotation (degrees about x, then y, then z)."""
    cx, cy, cz = np.cos(np.radians([rx, ry, rz]))
    sx, sy, sz = np.sin(np.radians([rx, ry, rz]))
    x = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    y = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    z = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    return z @ y @ x


def _crop(image: cr.SpatialImage, start_xyz: tuple[int, int, int], size_xyz: tuple[int, int, int]) -> cr.SpatialImage:
    """A sub-volume with its geometry (origin moved to the first kept voxel)."""
    (x0, y0, z0), (nx, ny, nz) = start_xyz, size_xyz
    array = np.array(image.array[z0 : z0 + nz, y0 : y0 + ny, x0 : x0 + nx])
    return image.replace(array=array, origin=tuple(image.index_to_world([[x0, y0, z0]])[0]))


def _slices(folder: Path, count: int, offset: int) -> list[Path]:
    """``count`` consecutive slices (by position) of a DICOM series folder, from the ``offset``-th."""
    files = sorted(folder.glob("*.dcm"), key=lambda f: float(pydicom.dcmread(f, stop_before_pixels=True).ImagePositionPatient[2]))
    return files[offset : offset + count]


@pytest.fixture(scope="module")
def sources() -> dict[str, cr.SpatialImage]:
    from conftest import require_data

    ct = _crop(read_dicom(_slices(require_data(CT_FOLDER), 5, 22)), (200, 180, 0), (40, 36, 5))
    mr = _crop(read_dicom(_slices(require_data(MR_FOLDER), 4, 20)), (220, 200, 0), (32, 28, 4))
    mni = _crop(cr.read(require_data(MNI)), (70, 90, 80), (30, 26, 6))
    labels = _crop(cr.read(require_data(MNI_LABELS)), (70, 90, 80), (30, 26, 6))
    resampled = cr.apply(cr.Translation([0.3, -0.45, 0.2]), mni, reference=mni)  # what a registration writes
    feet_first = np.array([[-1.0, 0, 0], [0, 1, 0], [0, 0, -1]])  # columns: x to the right, y posterior, z to the feet
    return {
        "ct_feet_first_series": ct,
        "mr_t2_series": mr,
        "mr_small_single_slice": cr.read(require_data(MR_SMALL)),
        "ct_oblique_anisotropic": ct.replace(
            direction=_rotation(12.0, -25.0, 40.0), origin=(-31.5, 17.25, 88.125), spacing=(0.7, 0.45, 3.0)
        ),
        "ct_feet_first_flipped": ct.replace(direction=feet_first),
        "ct_int32_beyond_int16": ct.replace(array=ct.array.astype(np.int32) + 70000),  # exact, integer intercept
        "ct_float_scaled": ct.replace(array=ct.array.astype(np.float32) * np.float32(0.37) + np.float32(0.1)),
        "mni_nifti_whole_numbers_left_handed": mni,
        "mni_resampled_float_left_handed": resampled,
        "mni_labels_nifti_whole_numbers": labels,
    }


def _as_dicom_reads(image: cr.SpatialImage) -> cr.SpatialImage:
    """What a DICOM reader gives back: the slice axis along the cross product of the rows and columns.

    For a left-handed direction that is the same voxels in reverse slice order.
    """
    if np.linalg.det(image.direction) > 0:
        return image
    direction = np.array(image.direction)
    direction[:, 2] *= -1
    last = image.index_to_world([[0, 0, image.shape[0] - 1]])[0]
    return image.replace(array=np.array(image.array[::-1]), origin=tuple(last), direction=direction)


def _sitk_read(folder: Path) -> sitk.Image:
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder)))
    return reader.Execute()


def _step(folder: Path) -> float:
    return float(pydicom.dcmread(folder / "IM000001.dcm", stop_before_pixels=True).RescaleSlope)


def _check_values(read: np.ndarray, expected: np.ndarray, folder: Path) -> None:
    if np.issubdtype(expected.dtype, np.integer) or np.array_equal(expected, np.round(expected)):
        assert np.array_equal(read, expected), f"max difference {np.abs(read - expected.astype(float)).max()}"
    else:  # quantised: every value within half a rescale step
        error = np.abs(read.astype(np.float64) - expected.astype(np.float64)).max()
        assert error <= _step(folder) / 2 * (1 + 1e-9), f"error {error} > half step {_step(folder) / 2}"


CASES = [
    "ct_feet_first_series",
    "mr_t2_series",
    "mr_small_single_slice",
    "ct_oblique_anisotropic",
    "ct_feet_first_flipped",
    "ct_int32_beyond_int16",
    "ct_float_scaled",
    "mni_nifti_whole_numbers_left_handed",
    "mni_resampled_float_left_handed",
    "mni_labels_nifti_whole_numbers",
]


@pytest.mark.parametrize("case", CASES)
def test_round_trip_through_coregister_and_simpleitk(sources: dict[str, cr.SpatialImage], case: str, tmp_path: Path) -> None:
    image = sources[case]
    folder = cr.write(image, tmp_path / "series", format="dicom")
    expected = _as_dicom_reads(image)
    assert len(list(folder.iterdir())) == image.shape[0]

    ours = cr.read(folder)
    assert ours.shape == expected.shape
    assert ours.same_geometry(expected, atol=GEOMETRY_ATOL), (ours, expected)
    _check_values(ours.array, np.asarray(expected.array), folder)

    itk = _sitk_read(folder)
    assert itk.GetSize() == expected.size
    np.testing.assert_allclose(itk.GetOrigin(), expected.origin, atol=GEOMETRY_ATOL, rtol=0)
    np.testing.assert_allclose(itk.GetSpacing(), expected.spacing, atol=GEOMETRY_ATOL, rtol=0)
    np.testing.assert_allclose(np.reshape(itk.GetDirection(), (3, 3)), expected.direction, atol=GEOMETRY_ATOL, rtol=0)
    _check_values(sitk.GetArrayFromImage(itk), np.asarray(expected.array), folder)


@pytest.mark.parametrize("case", ["ct_float_scaled", "mni_resampled_float_left_handed"])
def test_float_values_are_quantised_to_int16_and_logged(
    sources: dict[str, cr.SpatialImage], case: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    image = sources[case]
    with caplog.at_level(logging.INFO, logger="coregister.io.dicom_write"):
        folder = write_dicom(image, tmp_path / "series")
    first = pydicom.dcmread(folder / "IM000001.dcm")
    values = np.asarray(image.array, np.float64)
    expected_step = (values.max() - values.min()) / 65534
    assert first.BitsAllocated == 16 and first.PixelRepresentation == 1  # int16
    assert float(first.RescaleSlope) == pytest.approx(expected_step, rel=1e-9)
    assert "quantised to int16" in caplog.text and str(first.RescaleSlope) in caplog.text
    assert "quantised" in first.DerivationDescription


def test_identifiers_kept_and_new_series_uids(sources: dict[str, cr.SpatialImage], tmp_path: Path) -> None:
    image = sources["ct_feet_first_series"]
    source = image.meta["dicom"]
    first = write_dicom(image, tmp_path / "a")
    again = write_dicom(image, tmp_path / "b")
    headers = [pydicom.dcmread(f) for f in sorted(first.iterdir())]
    for header in headers:
        for tag in PATIENT_STUDY_TAGS:
            assert str(header.get(tag)) == str(source[tag]), tag
        assert header.Modality == "CT" and header.SOPClassUID == CTImageStorage
        assert header.PatientPosition == source["PatientPosition"] == "FFS"
        assert list(header.ImageType) == ["DERIVED", "SECONDARY"]
        assert "registered by coregister" in header.SeriesDescription
    series_uids = {h.SeriesInstanceUID for h in headers}
    assert len(series_uids) == 1 and series_uids != {source["SeriesInstanceUID"]}
    sop_uids = [h.SOPInstanceUID for h in headers]
    assert len(set(sop_uids)) == len(sop_uids) == image.shape[0]
    assert source["SeriesInstanceUID"] not in sop_uids
    # the same input twice: the same UIDs; other values: another series
    assert [pydicom.dcmread(f).SOPInstanceUID for f in sorted(again.iterdir())] == sop_uids
    changed = write_dicom(image.replace(array=np.array(image.array) + 1), tmp_path / "c")
    assert pydicom.dcmread(changed / "IM000001.dcm").SeriesInstanceUID not in series_uids


@pytest.mark.parametrize(
    ("case", "sop_class", "modality"),
    [
        ("ct_feet_first_series", CTImageStorage, "CT"),
        ("mr_t2_series", MRImageStorage, "MR"),
        ("mni_resampled_float_left_handed", SecondaryCaptureImageStorage, "OT"),
    ],
)
def test_every_file_is_a_dicom_file(
    sources: dict[str, cr.SpatialImage], case: str, sop_class: str, modality: str, tmp_path: Path
) -> None:
    folder = write_dicom(sources[case], tmp_path / "series")
    for path in sorted(folder.iterdir()):
        assert path.read_bytes()[128:132] == b"DICM"  # preamble and prefix of the DICOM file format
        header = pydicom.dcmread(path)  # force=False: refuses anything but the file format
        validate_file_meta(header.file_meta, enforce_standard=True)
        assert header.file_meta.MediaStorageSOPInstanceUID == header.SOPInstanceUID
        assert header.file_meta.MediaStorageSOPClassUID == header.SOPClassUID == sop_class
        assert header.Modality == modality
        assert header.pixel_array.shape == (header.Rows, header.Columns) == sources[case].shape[1:]


def test_nifti_source_gets_a_new_patient_and_study(sources: dict[str, cr.SpatialImage], tmp_path: Path) -> None:
    image = sources["mni_resampled_float_left_handed"]
    assert "dicom" not in image.meta
    header = pydicom.dcmread(write_dicom(image, tmp_path / "a") / "IM000001.dcm")
    again = pydicom.dcmread(write_dicom(image, tmp_path / "b") / "IM000001.dcm")
    assert header.PatientID.startswith("CR") and len(header.PatientID) == 12
    assert header.PatientName == ""
    for tag in ("PatientID", "StudyInstanceUID", "FrameOfReferenceUID", "SeriesInstanceUID", "SOPInstanceUID"):
        assert header.get(tag) and header.get(tag) == again.get(tag), tag
    assert header.SeriesDescription == "registered by coregister" and header.SeriesNumber == 1001


def test_two_dimensional_image_is_one_slice(data: Callable[[str], Path], tmp_path: Path) -> None:
    plane = cr.read(data(PHOTO), grayscale=True).replace(origin=(-12.5, 30.0), spacing=(0.8, 1.2))
    read = cr.read(write_dicom(plane, tmp_path / "series"))
    assert read.shape == (1, *plane.shape)
    np.testing.assert_allclose(read.origin, (-12.5, 30.0, 0.0), atol=GEOMETRY_ATOL)
    np.testing.assert_allclose(read.spacing, (0.8, 1.2, 1.0), atol=GEOMETRY_ATOL)
    assert np.array_equal(read.array[0], plane.array)


def test_existing_folder_refused_and_replaced_only_with_overwrite(
    sources: dict[str, cr.SpatialImage], tmp_path: Path
) -> None:
    image = sources["mr_small_single_slice"]
    folder = write_dicom(image, tmp_path / "series")
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    other = image.replace(array=np.array(image.array) // 2)
    with pytest.raises(OutputExistsError, match=r"already holds a DICOM series \(1 files\).*overwrite=True"):
        write_dicom(other, folder)
    with pytest.raises(OutputExistsError, match="already holds"):
        cr.write(other, folder, format="dicom")
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before
    write_dicom(other, folder, overwrite=True)
    assert np.array_equal(cr.read(folder).array, other.array)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["series"]  # no staging or old folder left

    own = tmp_path / "own"
    own.mkdir()
    (own / "notes.txt").write_text("mine")
    with pytest.raises(OutputExistsError, match=r"not a coregister DICOM series \(notes.txt\)"):
        write_dicom(image, own, overwrite=True)
    assert [p.name for p in own.iterdir()] == ["notes.txt"]
    empty = tmp_path / "empty"
    empty.mkdir()
    assert len(list(write_dicom(image, empty).iterdir())) == 1


def test_rgb_and_unstorable_images_refused(data: Callable[[str], Path], sources: dict[str, cr.SpatialImage], tmp_path: Path) -> None:
    rgb = cr.read(data(PHOTO))
    assert rgb.has_channels and rgb.n_channels == 3
    with pytest.raises(UnsupportedFormatError, match=r"3 channels or volumes.*image\.channel\(i\).*NIfTI"):
        write_dicom(rgb, tmp_path / "rgb")
    image = sources["ct_float_scaled"]
    values = np.array(image.array)
    values[0, 0, 0] = np.nan
    with pytest.raises(UnsupportedFormatError, match="NaN or infinite.*nan_to_num"):
        cr.write(image.replace(array=values), tmp_path / "nan", format="dicom")
    sheared = image.replace(direction=[[1, 0.2, 0], [0, 1, 0], [0, 0, 1]])
    with pytest.raises(GeometryError, match="not orthonormal"):
        write_dicom(sheared, tmp_path / "sheared")
    with pytest.raises(ConfigError, match="longer than 64"):
        write_dicom(image, tmp_path / "long", series_description="x" * 65)
    assert list(tmp_path.iterdir()) == []  # nothing written, no staging folder left


def test_failure_while_writing_leaves_nothing(
    sources: dict[str, cr.SpatialImage], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    written: list[str] = []
    save_as = pydicom.Dataset.save_as

    def failing_save_as(self: pydicom.Dataset, filename: Path, *args: object, **kwargs: object) -> None:
        if len(written) == 2:
            raise OSError(28, "No space left on device")
        written.append(str(filename))
        save_as(self, filename, *args, **kwargs)

    monkeypatch.setattr(pydicom.Dataset, "save_as", failing_save_as)
    with pytest.raises(DiskFullError, match="no space left on the device") as raised:
        write_dicom(sources["ct_feet_first_series"], tmp_path / "series")
    # the file named as the user would have seen it, not inside the temporary folder
    assert f"'{tmp_path / 'series' / 'IM'}" in str(raised.value) and ".part" not in str(raised.value)
    assert len(written) == 2 and list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("name", "options", "message"),
    [
        ("out.dcm", {}, "a DICOM series is a folder.*format='dicom'"),
        ("out.nii.gz", {"format": "dicom"}, "names a file; give a folder path"),
        ("out_folder", {}, "choose a suffix coregister writes.*or a folder with format='dicom'"),
        ("out.nii.gz", {"format": "raster"}, "does not match the suffix"),
        ("out_folder", {"format": "dcm"}, "format='dcm' is not one coregister writes"),
    ],
)
def test_write_dispatch_refuses_ambiguous_paths(
    sources: dict[str, cr.SpatialImage], tmp_path: Path, name: str, options: dict[str, str], message: str
) -> None:
    with pytest.raises(UnsupportedFormatError, match=message):
        cr.write(sources["mr_small_single_slice"], tmp_path / name, **options)
    assert list(tmp_path.iterdir()) == []


def test_derived_series_options_name_the_moving_series(sources: dict[str, cr.SpatialImage]) -> None:
    mr = sources["mr_t2_series"]
    assert derived_series_options(mr) == {
        "modality": "MR",
        "series_description": f"{mr.meta['dicom']['SeriesDescription']} registered by coregister",
    }
    assert derived_series_options(sources["mni_resampled_float_left_handed"])["modality"] == "OT"


def _ct_series(data: Callable[[str], Path], folder: Path) -> Path:
    """Five slices of the phantom CT copied into ``folder``: a small DICOM series the command line can read."""
    folder.mkdir()
    for path in _slices(data(CT_FOLDER), 5, 22):
        shutil.copy(path, folder)
    return folder


def test_cli_register_and_apply_write_a_dicom_series(data: Callable[[str], Path], tmp_path: Path) -> None:
    """A DICOM CT fixed, a moving NIfTI of the same voxels displaced by (3, -2, 0) mm."""
    fixed_folder = _ct_series(data, tmp_path / "ct")
    fixed = cr.read(fixed_folder)
    shift_mm = np.array([3.0, -2.0, 0.0])
    moving = fixed.replace(origin=tuple(np.array(fixed.origin) + shift_mm), meta={})
    cr.write(moving, tmp_path / "moving.nii.gz")
    outdir = tmp_path / "out"
    args = ["register", str(fixed_folder), str(tmp_path / "moving.nii.gz"), "-o", str(outdir), "--preset", "translation"]
    assert main([*args, "--output-format", "dicom"]) == EXIT_OK
    assert sorted(p.name for p in outdir.iterdir()) == ["registered_dicom", "result.json", "transform.tfm"]

    recovered = cr.read_transform(outdir / "transform.tfm")
    assert np.linalg.norm(recovered.transform_points([[0.0, 0.0, 0.0]])[0] - shift_mm) < 0.1  # mm
    registered = cr.read(outdir / "registered_dicom")
    assert registered.same_geometry(fixed, atol=GEOMETRY_ATOL)
    assert np.abs(registered.array.astype(float) - fixed.array).mean() < 1.0  # HU, over a range of thousands
    header = pydicom.dcmread(outdir / "registered_dicom" / "IM000001.dcm")
    for tag in PATIENT_STUDY_TAGS:
        assert str(header.get(tag)) == str(fixed.meta["dicom"][tag]), tag
    assert header.SeriesInstanceUID != fixed.meta["dicom"]["SeriesInstanceUID"]
    assert (header.Modality, header.SeriesDescription) == ("OT", "moving registered by coregister")

    # a second run replaces the series; apply writes one into its -o folder
    assert main([*args, "--output-format", "dicom", "--overwrite"]) == EXIT_OK
    assert len(list((outdir / "registered_dicom").iterdir())) == fixed.shape[0]
    applied = tmp_path / "applied"
    assert main(["apply", str(outdir / "transform.tfm"), str(tmp_path / "moving.nii.gz"), "--reference",
                 str(fixed_folder), "-o", str(applied), "--output-format", "dicom"]) == EXIT_OK  # fmt: skip
    assert np.array_equal(cr.read(applied).array, registered.array)


@pytest.mark.parametrize("description", ["Müller FLAIR", "脑 T1"])
def test_a_non_ascii_description_is_stored_as_utf8(
    sources: dict[str, cr.SpatialImage], tmp_path: Path, description: str
) -> None:
    # a NIfTI source declares no character set: the description alone must switch the series to UTF-8
    image = sources["mni_resampled_float_left_handed"]
    header = pydicom.dcmread(write_dicom(image, tmp_path / "s", series_description=description) / "IM000001.dcm")
    assert header.SpecificCharacterSet == "ISO_IR 192"
    assert header.SeriesDescription == description


def test_a_nifti_fixed_takes_the_dicom_movings_patient(data: Callable[[str], Path], tmp_path: Path) -> None:
    """A template-like NIfTI fixed, a DICOM CT moving: the derived series is the CT patient's, on a new frame."""
    moving_folder = _ct_series(data, tmp_path / "ct")
    moving = cr.read(moving_folder)
    shifted = tuple(np.array(moving.origin) + [3.0, -2.0, 0.0])  # a known shift to recover
    cr.write(moving.replace(origin=shifted, meta={}), tmp_path / "fixed.nii.gz")
    outdir = tmp_path / "out"
    assert main(["register", str(tmp_path / "fixed.nii.gz"), str(moving_folder), "-o", str(outdir), "--preset",
                 "translation", "--output-format", "dicom"]) == EXIT_OK
    header = pydicom.dcmread(outdir / "registered_dicom" / "IM000001.dcm")
    for tag in (t for t in PATIENT_STUDY_TAGS if t != "FrameOfReferenceUID"):
        assert str(header.get(tag)) == str(moving.meta["dicom"][tag]), tag
    assert header.FrameOfReferenceUID != moving.meta["dicom"]["FrameOfReferenceUID"]
    assert header.Modality == "CT"
