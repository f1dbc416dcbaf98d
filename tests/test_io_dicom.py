"""DICOM reading (``coregister.io.dicom``): series choice, slice order and spacing, rescale, odd files.

Ground truth is pydicom's reading of each file (ImagePositionPatient,
ImageOrientationPatient, PixelSpacing, pixel_array, rescale tags) and
SimpleITK's series reader. Real files: ``medical/dicom_small`` and
``medical/mri_dir_phantom``. Series with chosen geometry (oblique, uneven,
sheared, rescaled) are built in ``tmp_path`` from the real ``MR_small.dcm``
slice by rewriting its geometry tags, so the expected positions are known
exactly. (Regular MRI-DIR series against SimpleITK, feet-first/head-first:
``test_io_conformance.py``.)
"""

from __future__ import annotations

import math
import random
import shutil
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
from pydicom.uid import generate_uid

import coregister as cr
from coregister.errors import (
    AmbiguousSeriesError,
    ConfigError,
    GeometryError,
    GeometryWarning,
    NonUniformSpacingError,
    UnreadableInputError,
)
from coregister.io.dicom import SeriesInfo, list_series, read_dicom

MR_SMALL = "medical/dicom_small/MR_small.dcm"
CT_SMALL = "medical/dicom_small/CT_small.dcm"
EMRI = "medical/dicom_small/emri_small.dcm"
CT2 = "medical/dicom_small/CT2_series"
CT_FOLDER = "medical/mri_dir_phantom/CT_every8th"
MR_FOLDER = "medical/mri_dir_phantom/MR_T2_every2nd"


def _rescaled(ds: pydicom.Dataset) -> np.ndarray:
    return ds.pixel_array * float(ds.get("RescaleSlope", 1)) + float(ds.get("RescaleIntercept", 0))


def _rotation(axis: Sequence[float], degrees: float) -> np.ndarray:
    axis = np.asarray(axis, float) / np.linalg.norm(axis)
    x, y, z = axis
    k = np.array([[0, -z, y], [z, 0, -x], [-y, x, 0]])
    a = math.radians(degrees)
    return np.eye(3) + math.sin(a) * k + (1 - math.cos(a)) * k @ k


def make_series(
    template: Path,
    folder: Path,
    positions_mm: Sequence[float],
    *,
    axes: np.ndarray | None = None,
    in_plane_mm: Sequence[tuple[float, float]] | None = None,
    rescale: Sequence[tuple[float, float]] | None = None,
    origin: Sequence[float] = (-10.0, 20.0, 30.0),
) -> tuple[str, np.ndarray]:
    """Write a series of copies of a real slice at chosen positions along the normal.

    Slice k holds the template's pixels + 7 k (so a wrong order shows), its
    ImagePositionPatient is ``origin + positions_mm[k] * normal`` (+ an
    in-plane offset), and files are named in a shuffled order so that names
    say nothing about positions. Returns the SeriesInstanceUID and the axes
    (columns: row direction, column direction, normal).
    """
    folder.mkdir(parents=True, exist_ok=True)
    axes = np.eye(3) if axes is None else axes
    uid = generate_uid()
    names = list(range(len(positions_mm)))
    random.Random(5).shuffle(names)
    for k, position in enumerate(positions_mm):
        ds = pydicom.dcmread(template)
        pixels = (ds.pixel_array.astype(np.int32) + 7 * k).astype(np.int16)
        ds.set_pixel_data(pixels, "MONOCHROME2", 16)
        ds.SeriesInstanceUID = uid
        ds.InstanceNumber = len(positions_mm) - k  # deliberately against the positions
        ds.ImageOrientationPatient = [float(v) for v in np.concatenate([axes[:, 0], axes[:, 1]])]
        shift = np.zeros(3) if in_plane_mm is None else axes[:, :2] @ np.array(in_plane_mm[k])
        ds.ImagePositionPatient = [float(v) for v in np.asarray(origin) + position * axes[:, 2] + shift]
        if rescale is not None:
            ds.RescaleSlope, ds.RescaleIntercept = rescale[k]
        ds.save_as(folder / f"slice{names[k]:03d}.dcm")
    return uid, axes


@pytest.fixture
def two_series(data: Callable[[str], Path], tmp_path: Path) -> Path:
    """A folder holding three files of the MRI-DIR CT series and three of the MR series."""
    folder = tmp_path / "mixed"
    folder.mkdir()
    for source in (CT_FOLDER, MR_FOLDER):
        files = sorted(
            data(source).glob("*.dcm"),
            key=lambda f: float(pydicom.dcmread(f, stop_before_pixels=True).ImagePositionPatient[2]),
        )
        for file in files[10:13]:  # three neighbouring slices: an evenly spaced series
            shutil.copy(file, folder / f"{source.rsplit('/', 1)[1]}_{file.name}")
    return folder


def test_list_series_of_a_mixed_folder(two_series: Path) -> None:
    series = list_series(two_series)
    assert [(s.modality, s.n_files, s.description, s.number) for s in series] == [
        ("MR", 3, "T2", 6),
        ("CT", 3, "CT", 8),
    ]
    for info in series:
        assert all(pydicom.dcmread(f, stop_before_pixels=True).SeriesInstanceUID == info.uid for f in info.files)
        assert info.size == (512, 512, 3)
    assert [s.patient_position for s in series] == ["HFS", "FFS"]


def test_ambiguous_folder_names_every_series_and_the_fix(two_series: Path) -> None:
    with pytest.raises(AmbiguousSeriesError) as caught:
        read_dicom(two_series)
    message = str(caught.value)
    for info in list_series(two_series):
        assert info.uid in message and f"({info.modality}, 3 files)" in message
    assert "series=" in message and "dicom ls" in message
    assert isinstance(caught.value, ValueError)


@pytest.mark.parametrize("choice", [0, "T2", "uid", -2])
def test_series_chosen_by_index_description_or_uid(choice: object, two_series: Path) -> None:
    mr = list_series(two_series)[0]
    image = read_dicom(two_series, series=mr.uid if choice == "uid" else choice)
    assert image.meta["series_uid"] == mr.uid and image.meta["dicom"]["Modality"] == "MR"
    assert image.size == (512, 512, 3)


@pytest.mark.parametrize("choice", [5, "no such series"])
def test_unknown_series_is_a_config_error(choice: object, two_series: Path) -> None:
    with pytest.raises(ConfigError, match="holds"):
        read_dicom(two_series, series=choice)


def test_recursive_listing_finds_series_in_subfolders(data: Callable[[str], Path]) -> None:
    root = data("medical/mri_dir_phantom")
    assert list_series(root) == []
    found = list_series(root, recursive=True)
    assert [(Path(s.folder).name, s.n_files) for s in found] == [("CT_every8th", 52), ("MR_T2_every2nd", 47)]
    assert all(isinstance(s, SeriesInfo) for s in found)


def test_file_list_in_any_order_equals_the_folder(data: Callable[[str], Path]) -> None:
    folder = data(MR_FOLDER)
    files = sorted(folder.glob("*.dcm"))
    random.Random(1).shuffle(files)
    from_list = cr.read(files)
    from_folder = cr.read(folder)
    assert from_list.same_geometry(from_folder, atol=0)
    np.testing.assert_array_equal(from_list.array, from_folder.array)
    assert from_list.meta["files"] == from_folder.meta["files"]


def test_identifiers_kept_for_a_derived_series(data: Callable[[str], Path]) -> None:
    image = cr.read(data(CT_FOLDER))
    first = pydicom.dcmread(image.meta["files"][0], stop_before_pixels=True)
    tags = image.meta["dicom"]
    for keyword in (
        "PatientID",
        "StudyInstanceUID",
        "SeriesInstanceUID",
        "FrameOfReferenceUID",
        "Modality",
        "StudyDate",
    ):
        assert tags[keyword] == str(first.get(keyword)), keyword
    assert tags["PatientName"] == str(first.PatientName)
    assert image.meta["series_uid"] == first.SeriesInstanceUID
    assert (image.meta["rescale_slope"], image.meta["rescale_intercept"]) == (1.0, -1024.0)
    assert image.meta["stored_dtype"] == "int16" and image.dtype == np.int16  # HU fit int16: no widening
    positions = np.array(image.meta["slice_positions_mm"])
    np.testing.assert_allclose(np.diff(positions), 5.0, atol=1e-6)


@pytest.mark.parametrize("relative", [CT_SMALL, MR_SMALL])
def test_single_file(relative: str, data: Callable[[str], Path]) -> None:
    path = data(relative)
    ds = pydicom.dcmread(path)
    image = cr.read(path)
    assert image.size == (ds.Columns, ds.Rows, 1)
    np.testing.assert_allclose(image.origin, np.array(ds.ImagePositionPatient, float), atol=1e-9)
    np.testing.assert_allclose(image.spacing[:2], [float(ds.PixelSpacing[1]), float(ds.PixelSpacing[0])], atol=1e-9)
    np.testing.assert_array_equal(image.array[0], _rescaled(ds))
    assert image.dtype == np.int16
    assert image.meta["source_path"] == str(path)


def test_multiframe_without_geometry_warns_and_reads_unit_spacing(data: Callable[[str], Path]) -> None:
    path = data(EMRI)
    with pytest.warns(GeometryWarning, match="no ImagePositionPatient") as caught:
        image = cr.read(path)
    assert caught[0].filename == __file__  # attributed to the caller's line
    ds = pydicom.dcmread(path)
    assert image.shape == (10, 64, 64) and image.dtype == np.uint16
    assert image.spacing == (1.0, 1.0, 1.0) and image.origin == (0.0, 0.0, 0.0)
    np.testing.assert_array_equal(image.array, ds.pixel_array)


def test_nonuniform_series_is_refused_with_the_gap(data: Callable[[str], Path]) -> None:
    with pytest.raises(NonUniformSpacingError) as caught:
        cr.read(data(CT2))
    message = str(caught.value)
    assert "202.5 mm apart" in message and "1.25 mm" in message
    assert "17106" in message and "17136" in message and "resample_nonuniform=True" in message
    assert isinstance(caught.value, GeometryError)


def test_nonuniform_series_resampled_on_request(data: Callable[[str], Path]) -> None:
    image = cr.read(data(CT2), resample_nonuniform=True)
    files = image.meta["files"]
    slices = [pydicom.dcmread(f) for f in files]
    positions = [float(ds.ImagePositionPatient[2]) for ds in slices]
    assert image.meta["resampled"] and image.dtype == np.int16
    assert image.spacing[2] == pytest.approx(1.25, abs=1e-4)
    assert image.size[2] == 165  # (105.52 - -99.48) / 1.25 + 1
    for ds, z in zip(slices, positions, strict=True):
        k = round((z - positions[0]) / image.spacing[2])
        np.testing.assert_allclose(image.index_to_world([[0, 0, k]])[0][2], z, atol=1e-4)
        np.testing.assert_array_equal(image.array[k], _rescaled(ds))  # acquired slices come back unchanged
    # between the first two acquired slices: linear interpolation along z, rounded to integers
    k = 81
    weight = (image.index_to_world([[0, 0, k]])[0][2] - positions[0]) / (positions[1] - positions[0])
    expected = (1 - weight) * _rescaled(slices[0]) + weight * _rescaled(slices[1])
    assert np.abs(image.array[k] - expected).max() <= 0.5 + 1e-6


def test_sheared_uneven_series_resampled_with_its_in_plane_offsets(data: Callable[[str], Path], tmp_path: Path) -> None:
    """Slices shifted in-plane by whole pixels (a tilted stack) are resampled onto the first slice's grid."""
    template = data(MR_SMALL)
    spacing = 0.3125
    offsets = [(0.0, 0.0), (2 * spacing, 0.0), (2 * spacing, -3 * spacing), (4 * spacing, -6 * spacing)]
    make_series(template, tmp_path / "s", [0.0, 2.0, 6.0, 8.0], in_plane_mm=offsets)
    with pytest.raises(NonUniformSpacingError):
        cr.read(tmp_path / "s")
    image = cr.read(tmp_path / "s", resample_nonuniform=True)
    assert image.size[2] == 5 and image.spacing[2] == pytest.approx(2.0)
    base = pydicom.dcmread(template).pixel_array.astype(np.int16)
    for k, m in enumerate([0, 1, 3, 4]):
        di, dj = round(offsets[k][0] / spacing), round(offsets[k][1] / spacing)
        # output pixel (x, y) samples acquired slice k at (x - di, y - dj)
        expected = np.roll(base + 7 * k, (dj, di), axis=(0, 1))
        rows = slice(max(dj, 0), base.shape[0] + min(dj, 0))
        cols = slice(max(di, 0), base.shape[1] + min(di, 0))
        np.testing.assert_array_equal(image.array[m][rows, cols], expected[rows, cols])
    # slice 2 (4 mm, half-way between acquired slices 1 and 2) blends them
    assert image.array[2].mean() == pytest.approx(0.5 * (image.array[1].mean() + image.array[3].mean()), rel=0.05)


@pytest.mark.parametrize(
    ("axis", "degrees"),
    [((1, 0, 0), 30.0), ((0, 1, 0), -62.0), ((1, 1, 1), 45.0), ((0, 0, 1), 180.0)],
)
def test_oblique_series_geometry(
    axis: tuple[float, ...], degrees: float, data: Callable[[str], Path], tmp_path: Path
) -> None:
    rotation = _rotation(axis, degrees)
    positions = [-4.0, -2.0, 0.0, 2.0, 4.0]
    _, axes = make_series(data(MR_SMALL), tmp_path / "s", positions, axes=rotation)
    image = cr.read(tmp_path / "s")
    np.testing.assert_allclose(image.direction, axes, atol=1e-6)  # DS strings keep ~1e-7
    np.testing.assert_allclose(image.spacing, (0.3125, 0.3125, 2.0), atol=1e-5)
    np.testing.assert_allclose(image.origin, np.array([-10.0, 20.0, 30.0]) - 4.0 * axes[:, 2], atol=1e-5)
    for k in range(len(positions)):  # slice k in position order holds pixels + 7 k
        assert int(image.array[k, 0, 0]) - int(image.array[0, 0, 0]) == 7 * k
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(tmp_path / "s")))
    reference = reader.Execute()
    assert image.same_geometry(cr.SpatialImage.from_sitk(reference), atol=1e-5)
    np.testing.assert_array_equal(image.array, sitk.GetArrayViewFromImage(reference))


def test_mixed_orientations_are_refused(data: Callable[[str], Path], tmp_path: Path) -> None:
    make_series(data(MR_SMALL), tmp_path / "a", [0.0, 2.0, 4.0])
    uid = pydicom.dcmread(next((tmp_path / "a").iterdir())).SeriesInstanceUID
    ds = pydicom.dcmread(data(MR_SMALL))
    ds.SeriesInstanceUID = uid
    ds.SOPInstanceUID = generate_uid()
    ds.ImageOrientationPatient = [0.0, 1.0, 0.0, 0.0, 0.0, -1.0]  # a sagittal localizer in the same series
    ds.save_as(tmp_path / "a" / "localizer.dcm")
    with pytest.raises(GeometryError, match="mixes orientations"):
        cr.read(sorted((tmp_path / "a").iterdir()))


def test_duplicate_positions_are_refused(data: Callable[[str], Path], tmp_path: Path) -> None:
    make_series(data(MR_SMALL), tmp_path / "d", [0.0, 2.0, 2.0, 4.0])
    with pytest.raises(GeometryError, match="same position"):
        cr.read(tmp_path / "d")


@pytest.mark.parametrize(
    ("rescale", "dtype"),
    [
        ([(0.5, 0.0)] * 3, np.float32),  # halves: exact in float32
        ([(1.0, -1024.0)] * 3, np.int16),  # integer intercept: integers, still int16
        ([(2.0, 100000.0)] * 3, np.int32),  # beyond int16: widened, exact
        ([(1.0, 0.0), (2.0, 0.0), (0.25, 10.0)], np.float32),  # per-slice scaling
        ([(0.1, 0.0)] * 3, np.float64),  # 0.1 is not a float32
    ],
)
def test_rescale_applied_in_the_smallest_exact_dtype(
    rescale: list[tuple[float, float]], dtype: type, data: Callable[[str], Path], tmp_path: Path
) -> None:
    make_series(data(MR_SMALL), tmp_path / "r", [0.0, 1.0, 2.0], rescale=rescale)
    image = cr.read(tmp_path / "r")
    assert image.dtype == dtype
    for k, file in enumerate(image.meta["files"]):
        ds = pydicom.dcmread(file)
        np.testing.assert_array_equal(image.array[k], ds.pixel_array.astype(np.float64) * rescale[k][0] + rescale[k][1])
    per_slice = len(set(rescale)) > 1
    assert (image.meta["rescale_slope"] is None) == per_slice


def test_dicom_without_preamble_is_recognised_by_content(data: Callable[[str], Path], tmp_path: Path) -> None:
    ds = pydicom.dcmread(data(MR_SMALL))
    ds.preamble = None
    ds.file_meta = pydicom.dataset.FileMetaDataset()
    bare = tmp_path / "IMG0001"  # no extension, no "DICM"
    pydicom.dcmwrite(bare, ds, enforce_file_format=False, implicit_vr=True, little_endian=True)
    assert bare.read_bytes()[128:132] != b"DICM"
    assert cr.io.detect_format(bare) == "dicom"
    image = cr.read(bare)
    reference = cr.read(data(MR_SMALL))
    assert image.same_geometry(reference, atol=0)
    np.testing.assert_array_equal(image.array, reference.array)


def test_not_dicom_file_is_unreadable(tmp_path: Path) -> None:
    fake = tmp_path / "notes.dcm"
    fake.write_text("this is a text file\n" * 20)
    with pytest.raises(UnreadableInputError, match="not a readable DICOM"):
        cr.read(fake)


def test_reading_quietly(data: Callable[[str], Path]) -> None:
    """A regular series reads without any warning (ITK's own stderr warnings are for uneven series only)."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        image = cr.read(data(MR_FOLDER))
    assert image.orientation == "LPS"
