"""MetaImage/NRRD specifics (``coregister.io.itk``): compression, 4D and vector pixels, header pairs, atomic writes.

Ground truth: SimpleITK's reading of the files we write and the header
text itself. (Geometry of every real ``.mha``/``.mhd`` against SimpleITK and
the round trips over every format: ``test_io_conformance.py``.)
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

import coregister as cr
from coregister.errors import UnreadableInputError, UnsupportedFormatError, UnwritableOutputError
from coregister.io.itk import read_itk, write_itk

VM_CT = "medical/simpleitk_notebook_data/vm_head_ct.mha"  # compressed
ORIENTED = "medical/simpleitk_notebook_data/head_mr_oriented.mha"  # uncompressed, DICOM tags in the header
PLUS30 = "medical/itk_brainweb_2d/BrainT1SliceBorder20DirectionPlus30.mhd"  # detached, .zraw


def _header_text(path: Path) -> str:
    return path.read_bytes()[:2048].split(b"\x00", 1)[0].decode("latin-1")


@pytest.mark.parametrize(
    ("relative", "compress", "expected"),
    [(VM_CT, None, True), (VM_CT, False, False), (ORIENTED, None, False), (ORIENTED, True, True)],
)
@pytest.mark.parametrize("suffix", [".mha", ".nrrd"])
def test_compression_follows_the_source_unless_told(
    relative: str, compress: bool | None, expected: bool, suffix: str, data: Callable[[str], Path], tmp_path: Path
) -> None:
    image = read_itk(data(relative))
    written = write_itk(image, tmp_path / f"out{suffix}", compress=compress)
    text = _header_text(written)
    if suffix == ".mha":
        assert ("CompressedData = True" in text) == expected
    else:
        assert ("encoding: gzip" in text) == expected
    assert read_itk(written).meta["compressed"] == expected
    np.testing.assert_array_equal(read_itk(written).array, image.array)


@pytest.mark.parametrize(("suffix", "data_file"), [(".mhd", "plus30.zraw"), (".nhdr", "plus30.raw.gz")])
def test_detached_header_and_data_file(
    suffix: str, data_file: str, data: Callable[[str], Path], tmp_path: Path
) -> None:
    image = read_itk(data(PLUS30))  # compressed source: the copy is compressed too
    written = write_itk(image, tmp_path / f"plus30{suffix}")
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([f"plus30{suffix}", data_file])
    reference = sitk.ReadImage(str(written))
    np.testing.assert_allclose(np.array(reference.GetDirection()).reshape(2, 2), image.direction, atol=1e-6)
    np.testing.assert_array_equal(sitk.GetArrayViewFromImage(reference), image.array)


@pytest.mark.parametrize("suffix", [".mhd", ".mha", ".nrrd"])
def test_failed_write_leaves_nothing(
    suffix: str, data: Callable[[str], Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    image = read_itk(data(PLUS30))
    original = sitk.ImageFileWriter.Execute

    def write_then_fail(self: sitk.ImageFileWriter, *args: object) -> None:
        original(self, *args)  # the files exist in the staging place...
        raise RuntimeError("disk full")  # ...and then the write fails

    monkeypatch.setattr(sitk.ImageFileWriter, "Execute", write_then_fail)
    with pytest.raises(UnwritableOutputError, match="disk full"):
        write_itk(image, tmp_path / f"out{suffix}")
    assert list(tmp_path.iterdir()) == []


def test_header_pairs_are_kept(data: Callable[[str], Path], tmp_path: Path) -> None:
    image = read_itk(data(ORIENTED))
    tags = {k: v for k, v in image.meta["itk_metadata"].items() if "|" in k}
    assert tags["0010|0010"] == "Wes Turner" and len(tags) > 50
    for suffix in (".nrrd", ".mha"):
        back = read_itk(write_itk(image, tmp_path / f"copy{suffix}"))
        assert {k: back.meta["itk_metadata"].get(k) for k in tags} == tags
        # reader-added and layout keys are not copied as data
        text = _header_text(tmp_path / f"copy{suffix}")
        assert "ITK_InputFilterName" not in text and "NRRD_" not in text and "MET_MOD_UNKNOWN" not in text


def test_time_axis_is_written_4d(data: Callable[[str], Path], tmp_path: Path) -> None:
    epi = cr.read(data("medical/nibabel_anat_func/functional.nii"))
    written = cr.write(epi, tmp_path / "epi.mha")
    reference = sitk.ReadImage(str(written))
    assert reference.GetDimension() == 4 and reference.GetSize() == (*epi.size, 20)
    np.testing.assert_allclose(reference.GetOrigin()[:3], epi.origin, atol=1e-9)
    back = cr.read(written)
    assert back.meta["trailing_axis"] == "time" and back.n_channels == 20
    np.testing.assert_array_equal(back.array, epi.array)


@pytest.mark.parametrize("suffix", [".mha", ".nrrd"])
def test_colour_is_a_vector_pixel(suffix: str, data: Callable[[str], Path], tmp_path: Path) -> None:
    photo = cr.read(data("photos/skimage_motorcycle_stereo/motorcycle_left.png"))
    written = cr.write(photo, tmp_path / f"photo{suffix}")
    reference = sitk.ReadImage(str(written))
    assert reference.GetNumberOfComponentsPerPixel() == 3 and reference.GetDimension() == 2
    np.testing.assert_array_equal(sitk.GetArrayViewFromImage(reference), photo.array)


def test_complex_pixels(data: Callable[[str], Path], tmp_path: Path) -> None:
    slice_ = cr.read(data("medical/itk_ratlung_2d/RatLungSlice1.mha"))
    spectrum = slice_.replace(array=np.fft.fft2(slice_.array.astype(np.float64)))
    back = cr.read(cr.write(spectrum, tmp_path / "spectrum.nrrd"))
    assert back.dtype == np.complex128
    np.testing.assert_array_equal(back.array, spectrum.array)
    with pytest.raises(UnsupportedFormatError, match="no complex pixel type"):
        cr.write(spectrum, tmp_path / "spectrum.mha")


def test_missing_data_file(data: Callable[[str], Path], tmp_path: Path) -> None:
    header = tmp_path / "alone.mhd"
    shutil.copy(data(PLUS30), header)  # names a .zraw that is not there
    with pytest.raises(UnreadableInputError, match="alone.mhd"):
        cr.read(header)


def test_write_refuses_other_suffixes(tmp_path: Path) -> None:
    image = cr.SpatialImage(np.zeros((2, 3), np.uint8), origin=(0, 0), spacing=(1, 1))
    with pytest.raises(UnsupportedFormatError, match=r"\.mha"):
        write_itk(image, tmp_path / "out.vtk")
