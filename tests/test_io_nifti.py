"""NIfTI specifics (``coregister.io.nifti``): scaling, volumes, affine choice, header fields, what the writer refuses.

Ground truth: nibabel's own view of the files (raw on-disk arrays, header
fields, affines) and, for the affine choice, SimpleITK. Files with chosen
headers are made in ``tmp_path`` from the real ``anatomical.nii`` data.
(Round trips over every format and the cross-checks against SimpleITK on
every real NIfTI file: ``test_io_conformance.py``.)
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk

import coregister as cr
from coregister.errors import ConfigError, GeometryError, GeometryWarning, UnsupportedFormatError
from coregister.io.nifti import read_nifti, write_nifti

ANATOMICAL = "medical/nibabel_anat_func/anatomical.nii"
FUNCTIONAL = "medical/nibabel_anat_func/functional.nii"
EXAMPLE4D = "medical/nibabel_anat_func/example4d.nii.gz"


def _raw_anatomical(data: Callable[[str], Path]) -> tuple[np.ndarray, np.ndarray]:
    image = nib.load(data(ANATOMICAL))
    return np.asarray(image.dataobj.get_unscaled()).astype(np.int16), image.affine


def _save(path: Path, raw: np.ndarray, affine: np.ndarray, *, slope: float = 1.0, inter: float = 0.0) -> Path:
    image = nib.Nifti1Image(raw, affine, dtype=raw.dtype)
    image.header.set_slope_inter(slope, inter)
    image.to_filename(path)
    return path


@pytest.mark.parametrize(
    ("slope", "inter", "dtype"),
    [
        (1.0, 0.0, np.int16),  # unscaled int16 stays int16
        (1.0, -1024.0, np.int16),  # values still fit int16
        (2.0, 30000.0, np.int32),  # integers beyond int16: widened, same signedness
        (0.5, 0.0, np.float32),  # halves are exact in float32
        (0.1, 3.0, np.float64),  # 0.1 (as the header's float32) times int16 needs float64
    ],
)
def test_scaling_applied_in_the_smallest_exact_dtype(
    slope: float, inter: float, dtype: type, data: Callable[[str], Path], tmp_path: Path
) -> None:
    raw, affine = _raw_anatomical(data)
    path = _save(tmp_path / "scaled.nii.gz", raw, affine, slope=slope, inter=inter)
    image = read_nifti(path)
    assert image.dtype == dtype
    expected = raw.astype(np.float64) * np.float32(slope) + np.float32(inter)
    np.testing.assert_array_equal(image.array, expected.transpose(2, 1, 0))
    assert image.meta["stored_dtype"] == "int16"
    # written back: the same stored integers and the same scaling on disk
    written = nib.load(write_nifti(image, tmp_path / "again.nii"))
    assert written.header.get_data_dtype() == np.int16
    assert (written.dataobj.slope, written.dataobj.inter) == pytest.approx((np.float32(slope), np.float32(inter)))
    np.testing.assert_array_equal(np.asarray(written.dataobj.get_unscaled()), raw)


def test_values_off_the_scaling_grid_are_written_unscaled(data: Callable[[str], Path], tmp_path: Path) -> None:
    image = cr.read(data(FUNCTIONAL))
    changed = image.replace(array=image.array + 0.25)  # e.g. after resampling
    written = write_nifti(changed, tmp_path / "changed.nii")
    on_disk = nib.load(written)
    assert on_disk.header.get_data_dtype() == np.float64
    assert (on_disk.dataobj.slope, on_disk.dataobj.inter) == (1.0, 0.0)
    np.testing.assert_array_equal(read_nifti(written).array, changed.array)


@pytest.mark.parametrize("volume", [0, 7, 19, -1, -20])
def test_one_volume_of_a_4d_file(volume: int, data: Callable[[str], Path]) -> None:
    whole = cr.read(data(FUNCTIONAL))
    one = cr.read(data(FUNCTIONAL), volume=volume)
    assert not one.has_channels and one.same_geometry(whole, atol=0)
    np.testing.assert_array_equal(one.array, whole.array[..., volume])
    assert one.meta["volume"] == volume % 20 and one.meta["trailing_axis"] == "none"


@pytest.mark.parametrize(("relative", "volume"), [(FUNCTIONAL, 20), (FUNCTIONAL, -21), (ANATOMICAL, 1)])
def test_volume_out_of_range(relative: str, volume: int, data: Callable[[str], Path]) -> None:
    with pytest.raises(ConfigError, match=f"volume={volume} is out of range"):
        cr.read(data(relative), volume=volume)


def test_time_axis_and_time_step_survive(data: Callable[[str], Path], tmp_path: Path) -> None:
    source = nib.load(data(EXAMPLE4D))
    written = nib.load(cr.write(cr.read(data(EXAMPLE4D)), tmp_path / "epi.nii.gz"))
    assert written.shape == source.shape
    assert written.header.get_zooms() == pytest.approx(source.header.get_zooms(), abs=1e-6)
    assert written.header.get_xyzt_units() == source.header.get_xyzt_units()
    assert written.header.get_dim_info() == source.header.get_dim_info()


def test_header_fields_written_back(data: Callable[[str], Path], tmp_path: Path) -> None:
    raw, affine = _raw_anatomical(data)
    made = nib.Nifti1Image(raw, affine, dtype=np.int16)
    header = made.header
    header.set_xyzt_units("micron", "msec")
    header["descrip"] = b"coregister header test"
    header["aux_file"] = b"aux.txt"
    header.set_intent("t test", (12.0,), name="tstat")
    header.set_dim_info(freq=0, phase=1, slice=2)
    header["slice_code"], header["slice_start"], header["slice_end"] = 1, 0, 24
    header["slice_duration"], header["toffset"] = 0.07, 1.5
    header["cal_min"], header["cal_max"] = -10.0, 3000.0
    made.set_sform(affine, code=4)  # mni
    made.set_qform(affine, code=3)  # talairach
    made.to_filename(tmp_path / "fields.nii")

    image = cr.read(tmp_path / "fields.nii")
    fields = image.meta["nifti"]
    assert fields["descrip"] == "coregister header test" and fields["intent"] == "t test"
    out = nib.load(cr.write(image, tmp_path / "copy.nii.gz")).header
    for key in ("descrip", "aux_file", "intent_code", "intent_p1", "intent_name", "dim_info", "slice_code"):
        assert out[key] == header[key], key
    for key in ("slice_start", "slice_end", "slice_duration", "toffset", "cal_min", "cal_max"):
        assert float(out[key]) == pytest.approx(float(header[key])), key
    assert out.get_xyzt_units() == ("micron", "msec")
    assert (int(out["sform_code"]), int(out["qform_code"])) == (4, 3)


def test_geometry_from_pixdim_when_no_affine_is_declared(data: Callable[[str], Path], tmp_path: Path) -> None:
    raw, affine = _raw_anatomical(data)
    made = nib.Nifti1Image(raw, affine, dtype=np.int16)
    made.set_sform(affine, code=0)
    made.set_qform(affine, code=0)
    made.to_filename(tmp_path / "bare.nii")
    with pytest.warns(GeometryWarning, match="neither sform nor qform"):
        image = cr.read(tmp_path / "bare.nii")
    assert image.meta["affine_source"] == "pixdim"
    expected = np.diag([-1.0, -1.0, 1.0, 1.0]) @ nib.load(tmp_path / "bare.nii").affine
    np.testing.assert_allclose(image.affine, expected, atol=1e-6)
    # written back with an explicit affine: now every reader agrees
    back = nib.load(cr.write(image, tmp_path / "fixed.nii"))
    assert (int(back.header["sform_code"]), int(back.header["qform_code"])) == (1, 1)


@pytest.mark.parametrize(("choice", "error"), [("sform", GeometryError), ("both", ConfigError)])
def test_bad_affine_source(choice: str, error: type, data: Callable[[str], Path]) -> None:
    # ch2.nii.gz has sform_code 0: there is no sform to choose
    with pytest.raises(error, match=choice):
        cr.read(data("medical/antspy/ch2.nii.gz"), affine_source=choice)


def test_agreeing_forms_are_not_warned_about(data: Callable[[str], Path]) -> None:
    """mni.nii.gz has sform code 1 and qform code 2, equal affines: nothing to warn about."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        image = cr.read(data("medical/antspy/mni.nii.gz"))
    assert image.meta["affine_source"] == "sform" and image.orientation == "LAS"


def test_2d_image_writes_a_2d_nifti(data: Callable[[str], Path], tmp_path: Path) -> None:
    image = cr.read(data("medical/itk_brainweb_2d/BrainT1SliceBorder20DirectionPlus30.mhd"))
    written = cr.write(image, tmp_path / "slice.nii.gz")
    assert nib.load(written).shape == (221, 257)
    reference = sitk.ReadImage(str(written))
    assert reference.GetDimension() == 2
    np.testing.assert_allclose(reference.GetOrigin(), image.origin, atol=1e-6)
    np.testing.assert_allclose(np.array(reference.GetDirection()).reshape(2, 2), image.direction, atol=1e-6)
    back = cr.read(written)
    assert back.ndim == 2 and back.same_geometry(image)


def test_2d_image_with_channels_is_refused(data: Callable[[str], Path], tmp_path: Path) -> None:
    photo = cr.read(data("photos/skimage_motorcycle_stereo/motorcycle_left.png"))
    with pytest.raises(UnsupportedFormatError, match=r"\.mha, \.nrrd or \.tif"):
        cr.write(photo, tmp_path / "photo.nii.gz")
    assert list(tmp_path.iterdir()) == []


def test_sheared_geometry_warns_and_keeps_the_sform(data: Callable[[str], Path], tmp_path: Path) -> None:
    image = cr.read(data(ANATOMICAL))
    shear = np.array([[1.0, 0.2, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
    sheared = image.replace(direction=shear / np.linalg.norm(shear, axis=0))
    with pytest.warns(GeometryWarning, match="not orthonormal"):
        written = cr.write(sheared, tmp_path / "shear.nii")
    with pytest.warns(GeometryWarning, match="disagree"):  # reading it says so too
        back = cr.read(written)
    np.testing.assert_allclose(back.affine, sheared.affine, atol=1e-5)
    assert back.meta["affine_source"] == "sform"
    # ITK refuses the sheared sform and reads the (orthonormal) qform: same origin, no shear
    reference = sitk.ReadImage(str(written))
    np.testing.assert_allclose(reference.GetOrigin(), back.origin, atol=1e-4)
    direction = np.array(reference.GetDirection()).reshape(3, 3)
    np.testing.assert_allclose(direction.T @ direction, np.eye(3), atol=1e-6)


def test_vector_nifti_reads_with_a_channel_axis(data: Callable[[str], Path], tmp_path: Path) -> None:
    raw, affine = _raw_anatomical(data)
    field = np.stack([raw, -raw, raw // 2], axis=-1)[:, :, :, np.newaxis, :]  # (i, j, k, 1, 3)
    image = nib.Nifti1Image(field, affine, dtype=np.int16)
    image.header.set_intent("vector")
    image.to_filename(tmp_path / "vector.nii.gz")
    ours = cr.read(tmp_path / "vector.nii.gz")
    assert ours.meta["trailing_axis"] == "vector" and ours.n_channels == 3
    np.testing.assert_array_equal(ours.array[..., 1], -raw.transpose(2, 1, 0))


def test_read_angle_of_example4d_oblique_affine(data: Callable[[str], Path]) -> None:
    """example4d's affine is oblique: a rotation of about 9.3 degrees about x, which we keep (not snapped)."""
    image = cr.read(data(EXAMPLE4D), volume=0)
    tilt = math.degrees(math.acos(abs(image.direction[1, 1])))  # index y against world y
    assert tilt == pytest.approx(math.degrees(math.asin(0.162)), abs=0.1)
    assert image.orientation == "LAS"
    np.testing.assert_allclose(image.direction.T @ image.direction, np.eye(3), atol=1e-6)


@pytest.mark.parametrize(("unit", "mm_per_unit"), [("micron", 0.001), ("meter", 1000.0), ("mm", 1.0), ("unknown", 1.0)])
def test_spatial_units_become_millimetres_as_in_itk(
    unit: str, mm_per_unit: float, data: Callable[[str], Path], tmp_path: Path
) -> None:
    raw, affine = _raw_anatomical(data)
    made = nib.Nifti1Image(raw, affine, dtype=np.int16)
    made.header.set_xyzt_units(unit, "sec")
    made.to_filename(tmp_path / "units.nii")
    image = cr.read(tmp_path / "units.nii")
    reference = sitk.ReadImage(str(tmp_path / "units.nii"))
    np.testing.assert_allclose(image.spacing, np.array(reference.GetSpacing()), rtol=1e-12)
    np.testing.assert_allclose(image.origin, np.array(reference.GetOrigin()), rtol=1e-7, atol=1e-9)
    np.testing.assert_allclose(image.spacing, np.full(3, 2.0 * mm_per_unit), rtol=1e-12)
    written = nib.load(cr.write(image, tmp_path / "copy.nii"))  # the file's own unit is written back
    assert written.header.get_xyzt_units()[0] == unit
    np.testing.assert_allclose(written.affine, affine, rtol=1e-7, atol=1e-9)


# ------------------------------------------------------------ files without an extension
def _nifti2_copy(data: Callable[[str], Path], folder: Path) -> Path:
    source = nib.load(data(ANATOMICAL))
    path = folder / "anat2.nii"
    nib.save(nib.Nifti2Image(np.asanyarray(source.dataobj), source.affine, nib.Nifti2Header.from_header(source.header)),
             path)
    return path


@pytest.mark.parametrize("name", ["anatomical.nii", "mni.nii.gz", "nifti2.nii"])
def test_nifti_without_an_extension_reads_like_the_named_file(
    data: Callable[[str], Path], tmp_path: Path, name: str
) -> None:
    """Detection knows an extension-less NIfTI by its magic (gzipped or not); nibabel picks its reader by name,
    so the bytes are read directly: same array, geometry and header fields as the named file."""
    named = {
        "anatomical.nii": lambda: data(ANATOMICAL),
        "mni.nii.gz": lambda: data("medical/antspy/mni.nii.gz"),
        "nifti2.nii": lambda: _nifti2_copy(data, tmp_path),
    }[name]()
    bare = tmp_path / "scan"
    bare.write_bytes(named.read_bytes())
    assert cr.io.detect_format(bare) == "nifti"
    expected, got = cr.read(named), cr.read(bare)
    assert got.array.dtype == expected.array.dtype
    np.testing.assert_array_equal(got.array, expected.array)
    assert got.same_geometry(expected, atol=1e-6)
    assert {k: v for k, v in got.meta.items() if k != "source_path"} == {
        k: v for k, v in expected.meta.items() if k != "source_path"
    }
    assert got.meta["source_path"] == str(bare)


def test_truncated_nifti_without_an_extension_is_unreadable(data: Callable[[str], Path], tmp_path: Path) -> None:
    from coregister.errors import UnreadableInputError

    bare = tmp_path / "scan"
    bare.write_bytes(data("medical/antspy/mni.nii.gz").read_bytes()[:20000])
    with pytest.raises(UnreadableInputError, match="not a readable NIfTI file"):
        cr.read(bare)
