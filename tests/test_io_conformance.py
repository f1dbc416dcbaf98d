"""One conformance suite for every format coregister writes, plus cross-checks against the reference readers.

Part 1 (``test_round_trip``): each case is an image read from the real data
(``../shared/data``) and written with :func:`coregister.write` to every
lossless format that can hold it (DICOM: a derived series folder); reading it back must give the array
bit-exact and in the same dtype, the geometry within 1e-6, the CRS, nodata
and mask unchanged, and the format's header fields kept (NIfTI codes,
units, descrip, intent, scaling; MetaImage/NRRD key/value pairs; the
GeoTIFF profile, tags and band descriptions). Writing the read-back image
again must change nothing (idempotence). JPEG is lossy: checked with a
tolerance.

Part 2: our geometry against SimpleITK (NIfTI, 4D NIfTI volume by volume,
MHA/MHD, the MRI-DIR DICOM series) and nibabel (our NIfTI output), the
MRI-DIR feet-first CT and head-first MR, the +30 degree ``.mhd`` files, and a
NIfTI whose sform and qform disagree.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import warnings
from collections.abc import Callable
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
from conftest import require_data

import coregister as cr
from coregister.errors import GeometryWarning
from coregister.image import SpatialImage

# --------------------------------------------------------------------------- cases


def crop(image: SpatialImage, z: slice | None, y: slice, x: slice) -> SpatialImage:
    """A block of ``image`` with its own geometry (origin moved to the block's first pixel centre)."""
    index = [x.start or 0, y.start or 0] + ([z.start or 0] if z is not None else [])
    origin = image.index_to_world([index])[0]
    block = (z, y, x) if z is not None else (y, x)
    mask = None if image.mask is None else image.mask[block]
    return image.replace(array=np.ascontiguousarray(image.array[block]), origin=origin, mask=mask)


@functools.cache
def _read(relative: str, **options: object) -> SpatialImage:
    return cr.read(require_data(relative), **options)


def _nifti_anatomical() -> SpatialImage:
    return _read("medical/nibabel_anat_func/anatomical.nii")  # big-endian int16, LAS, header with descrip


def _nifti_labels() -> SpatialImage:
    return _read("medical/itk_kmeans_t1_3d/KmeansTest_T1KmeansPrelimSegmentation.nii.gz")


def _mni_block() -> SpatialImage:
    return crop(_read("medical/antspy/mni.nii.gz"), slice(60, 90), slice(80, 120), slice(50, 100))


def _epi_4d() -> SpatialImage:
    return crop(_read("medical/nibabel_anat_func/example4d.nii.gz"), slice(8, 16), slice(20, 60), slice(30, 90))


def _fmri_scaled() -> SpatialImage:
    return _read("medical/nibabel_anat_func/functional.nii")  # int16 on disk with scl_slope/scl_inter


def _mr_oblique() -> SpatialImage:
    return _read("medical/simpleitk_notebook_data/head_mr_oriented.mha")  # oblique direction, DICOM tags in header


def _ct_hounsfield() -> SpatialImage:
    ct = _read("medical/mri_dir_phantom/CT_every8th")
    return crop(ct, slice(20, 26), slice(180, 300), slice(200, 330))


def _brain_plus30() -> SpatialImage:
    return _read("medical/itk_brainweb_2d/BrainT1SliceBorder20DirectionPlus30.mhd")


def _brain_png_grey() -> SpatialImage:
    return _read("medical/itk_brainweb_2d/BrainT1SliceBorder20.png", grayscale=True)


def _photo_rgb() -> SpatialImage:
    return crop(_read("photos/skimage_motorcycle_stereo/motorcycle_left.png"), None, slice(200, 320), slice(300, 460))


def _landsat_rgb() -> SpatialImage:
    return _read("geospatial/rasterio_landsat7/RGB.byte.tif")  # EPSG:32618, nodata 0, 3 bands


def _s2_block() -> SpatialImage:
    return cr.read(
        require_data("geospatial/arosics_s2_T33UUU/ref_S2A_20160608T153121_T33UUU_sub.tif"),
        window=((1200, 1400), (800, 1100)),
    )


def _hillshade_block() -> SpatialImage:
    return cr.read(require_data("geospatial/rasterio_landsat7/shade.tif"), window=((100, 300), (200, 450)))


def _plain_tiff() -> SpatialImage:
    return _read("medical/simpleitk_notebook_data/B1.tiff")


def _rpc_raster() -> SpatialImage:
    return _read("geospatial/rpc_dg/test_rpcs.tif")  # uint16 pixel grid, RPCs in meta


def _as(dtype: str, build: Callable[[], SpatialImage]) -> Callable[[], SpatialImage]:
    def cast() -> SpatialImage:
        image = build()
        values = image.array
        if np.dtype(dtype).kind in "iu":
            info = np.iinfo(dtype)
            assert values.min() >= info.min and values.max() <= info.max, "cast would clip: pick another case"
        return image.replace(array=values.astype(dtype))

    return cast


@dataclasses.dataclass(frozen=True)
class Case:
    name: str
    build: Callable[[], SpatialImage]
    ndim: int
    channels: bool
    dtype: str
    geospatial: bool = False
    pixel_grid: bool = False  # origin 0, spacing 1, identity direction (what PNG/plain TIFF can hold)
    nodata: bool = False  # carries nodata/mask: only (Geo)TIFF stores that


CASES = [
    Case("t1-int16-bigendian-LAS", _nifti_anatomical, 3, False, "int16"),
    Case("labels-uint8", _nifti_labels, 3, False, "uint8"),
    Case("labels-int32", _as("int32", _nifti_labels), 3, False, "int32"),
    Case("labels-int8", _as("int8", _nifti_labels), 3, False, "int8"),
    Case("mni-float32", _mni_block, 3, False, "float32"),
    Case("mni-float64", _as("float64", _mni_block), 3, False, "float64"),
    Case("epi-4d-int16", _epi_4d, 3, True, "int16"),
    Case("fmri-scaled-float64", _fmri_scaled, 3, True, "float64"),
    Case("mr-oblique-int16", _mr_oblique, 3, False, "int16"),
    Case("ct-hounsfield-int16", _ct_hounsfield, 3, False, "int16"),
    Case(
        "ct-uint32",
        _as("uint32", lambda: _ct_hounsfield().replace(array=_ct_hounsfield().array + 2048)),
        3,
        False,
        "uint32",
    ),
    Case("brain2d-plus30-uint8", _brain_plus30, 2, False, "uint8"),
    Case("brain2d-png-grey-uint8", _brain_png_grey, 2, False, "uint8", pixel_grid=True),
    Case("brain2d-uint16", _as("uint16", _brain_png_grey), 2, False, "uint16", pixel_grid=True),
    Case("photo-rgb-uint8", lambda: _photo_rgb().replace(origin=(0.0, 0.0)), 2, True, "uint8", pixel_grid=True),
    Case("plain-tiff-uint8", _plain_tiff, 2, False, "uint8", pixel_grid=True),
    Case("rpc-raster-uint16", _rpc_raster, 2, False, "uint16", pixel_grid=True, nodata=True),
    Case("landsat-rgb-nodata", _landsat_rgb, 2, True, "uint8", geospatial=True, nodata=True),
    Case("s2-uint16", _s2_block, 2, False, "uint16", geospatial=True),
    Case("s2-float32", _as("float32", _s2_block), 2, False, "float32", geospatial=True),
    Case("s2-int16", _as("int16", _s2_block), 2, False, "int16", geospatial=True),
    Case("hillshade-3857-nodata255", _hillshade_block, 2, False, "uint8", geospatial=True, nodata=True),
]


@dataclasses.dataclass(frozen=True)
class Format:
    suffix: str
    accepts: Callable[[Case], bool]
    name: str | None = None  # ``format=`` for cr.write where the suffix does not say it (a DICOM series folder)


_GDAL_DTYPES = {"uint8", "int8", "uint16", "int16", "uint32", "int32", "float32", "float64"}


def _medical(case: Case) -> bool:
    return not case.geospatial and not case.nodata


FORMATS = {
    "nii": Format(".nii", lambda c: _medical(c) and not (c.ndim == 2 and c.channels)),
    "nii.gz": Format(".nii.gz", lambda c: _medical(c) and not (c.ndim == 2 and c.channels)),
    "mha": Format(".mha", _medical),
    "mhd": Format(".mhd", _medical),
    "nrrd": Format(".nrrd", _medical),
    "geotiff": Format(".tif", lambda c: c.ndim == 2 and c.geospatial and c.dtype in _GDAL_DTYPES),
    "geotiff-no-crs": Format(
        ".tif", lambda c: c.ndim == 2 and _medical(c) and not c.pixel_grid and c.dtype in _GDAL_DTYPES
    ),
    "tiff-plain": Format(
        ".tif", lambda c: c.ndim == 2 and c.pixel_grid and not c.geospatial and c.dtype in _GDAL_DTYPES
    ),
    "png": Format(".png", lambda c: c.ndim == 2 and c.pixel_grid and _medical(c) and c.dtype in ("uint8", "uint16")),
    # a derived series: 16-bit grey volumes whose axes form a right-handed frame (a DICOM series cannot list its
    # slices against the normal of its ImageOrientationPatient; tests/test_io_dicom_write.py covers the rest)
    "dicom": Format("", lambda c: c.ndim == 3 and _medical(c) and not c.channels and c.dtype in ("int16", "uint16")
                    and _right_handed(c), name="dicom"),
}


def _right_handed(case: Case) -> bool:
    return bool(np.linalg.det(np.asarray(case.build().direction)) > 0)

PAIRS = [
    pytest.param(case, fmt, id=f"{case.name}->{name}")
    for case in CASES
    for name, fmt in FORMATS.items()
    if fmt.accepts(case)
]


def test_every_format_and_case_is_exercised() -> None:
    """The matrix covers every writable format, 2D/3D, channels, several dtypes and geospatial cases."""
    used_formats = {(p.values[1].suffix, p.values[1].name) for p in PAIRS}
    assert used_formats == {(f.suffix, f.name) for f in FORMATS.values()}
    cases = [p.values[0] for p in PAIRS]
    assert {c.ndim for c in cases} == {2, 3}
    assert {c.channels for c in cases} == {False, True}
    assert len({c.dtype for c in cases}) >= 8
    assert all(any(p.values[0] is case for p in PAIRS) for case in CASES)


# --------------------------------------------------------------------------- checks

_NIFTI_FIELDS = (
    "sform_code",
    "qform_code",
    "xyzt_units",
    "descrip",
    "aux_file",
    "intent_code",
    "intent_params",
    "intent_name",
    "dim_info",
    "slice_code",
    "slice_start",
    "slice_end",
    "slice_duration",
    "toffset",
    "cal_min",
    "cal_max",
    "time_step",
)
_PROFILE_FIELDS = ("compress", "predictor", "tiled", "blockxsize", "blockysize", "interleave", "photometric")


def _assert_same_image(back: SpatialImage, image: SpatialImage, *, float32_header: bool = False) -> None:
    """Array bit-exact, same dtype; geometry within 1e-6 (plus float32 rounding where the header is float32)."""
    assert back.dtype == image.dtype
    assert back.array.shape == image.array.shape
    np.testing.assert_array_equal(back.array, image.array, strict=True)
    # NIfTI-1 stores the affine in float32: ~1e-5 mm at 100 mm from the origin is the format's own precision
    rtol = 2.0**-23 if float32_header else 0.0
    np.testing.assert_allclose(back.origin, image.origin, rtol=rtol, atol=1e-6)
    np.testing.assert_allclose(back.spacing, image.spacing, rtol=rtol, atol=1e-6)
    np.testing.assert_allclose(back.direction, image.direction, rtol=0, atol=1e-6)
    assert back.crs == image.crs
    assert back.nodata == image.nodata or (
        back.nodata is not None and math.isnan(back.nodata) and math.isnan(image.nodata)
    )
    if image.mask is not None and not image.mask.all():
        assert back.mask is not None
        np.testing.assert_array_equal(back.mask, image.mask)


def _assert_header_fields(back: SpatialImage, image: SpatialImage, fmt: Format) -> None:
    meta, source = back.meta, image.meta
    if fmt.suffix.startswith(".nii"):
        assert meta["format"] == "nifti"
        if source.get("format") == "nifti":
            for key in _NIFTI_FIELDS:
                assert meta["nifti"][key] == source["nifti"][key], key
            for key in ("rescale_slope", "rescale_intercept", "trailing_axis"):
                assert meta[key] == source[key], key
        else:  # not from NIfTI: both codes 1 (scanner), as ITK writes, so every reader takes the same affine
            assert (meta["nifti"]["sform_code"], meta["nifti"]["qform_code"]) == (1, 1)
        scaled = (meta["rescale_slope"], meta["rescale_intercept"]) != (1.0, 0.0)
        # scaled values go back to the source's stored dtype; unscaled ones are stored as they are
        assert meta["stored_dtype"] == (source["stored_dtype"] if scaled else str(image.dtype))
        assert meta["affine_source"] == "sform"
    elif fmt.suffix in (".mha", ".mhd", ".nrrd"):
        assert meta["format"] == "itk"
        if source.get("format") == "itk":
            kept = {k: v for k, v in source["itk_metadata"].items() if "|" in k}  # the DICOM tags of head_mr_oriented
            assert {k: meta["itk_metadata"].get(k) for k in kept} == kept
            assert meta["compressed"] == source["compressed"]
    elif fmt.suffix in (".tif", ".tiff"):
        pixel_grid = (
            image.origin == (0.0, 0.0) and image.spacing == (1.0, 1.0) and np.array_equal(image.direction, np.eye(2))
        )
        georeferenced = image.crs is not None or source.get("rpcs") or not pixel_grid
        assert meta["format"] == ("geotiff" if georeferenced else "tiff")
        if source.get("format") in ("geotiff", "tiff"):
            if source["profile"]["dtype"] == str(image.dtype):  # a cast image may need another predictor
                for key in _PROFILE_FIELDS:
                    assert meta["profile"][key] == source["profile"][key], key
            for key in ("tags", "band_descriptions", "colorinterp", "rpcs", "scales", "offsets"):
                assert meta[key] == source[key], key
    elif fmt.suffix == ".png":
        assert meta["format"] == "png"
    elif fmt.name == "dicom":
        assert meta["format"] == "dicom"
        tags, kept = meta["dicom"], source.get("dicom", {})
        for key in ("PatientID", "StudyInstanceUID", "FrameOfReferenceUID", "Modality"):
            if key in kept:
                assert tags[key] == kept[key], key
        assert tags["SeriesInstanceUID"] != kept.get("SeriesInstanceUID")  # a derived series is a new series


@pytest.mark.parametrize(("case", "fmt"), PAIRS)
def test_round_trip(case: Case, fmt: Format, tmp_path: Path) -> None:
    image = case.build()
    assert (image.ndim, image.has_channels, str(image.dtype), image.crs is not None) == (
        case.ndim,
        case.channels,
        case.dtype,
        case.geospatial,
    )
    options = {} if fmt.name is None else {"format": fmt.name}
    first = cr.write(image, tmp_path / f"first{fmt.suffix}", **options)
    back = cr.read(first)
    _assert_same_image(back, image, float32_header=fmt.suffix.startswith(".nii"))
    _assert_header_fields(back, image, fmt)
    assert back.meta["source_path"] == str(first)
    again = cr.read(cr.write(back, tmp_path / f"second{fmt.suffix}", **options))
    _assert_same_image(again, back)  # what came back from the format is stored exactly
    _assert_header_fields(again, back, fmt)
    leftovers = [p.name for p in tmp_path.iterdir() if ".part" in p.name or p.name.startswith(".")]
    assert leftovers == []


@pytest.mark.parametrize("relative", ["medical/antspy/r16slice.jpg", "medical/antspy/r85slice.jpg"])
def test_jpeg_round_trip_within_tolerance(relative: str, data: Callable[[str], Path], tmp_path: Path) -> None:
    """JPEG is lossy: geometry exact, values within a few grey levels on average."""
    image = cr.read(data(relative))
    back = cr.read(cr.write(image, tmp_path / "copy.jpg"))
    assert back.same_geometry(image, atol=1e-12) and back.dtype == image.dtype
    error = np.abs(back.array.astype(float) - image.array.astype(float))
    assert error.mean() < 2.0
    assert np.percentile(error, 99) <= 16


# ------------------------------------------------------------- reference readers

NIFTI_FILES = [
    "medical/antspy/ch2.nii.gz",
    "medical/antspy/mni.nii.gz",
    "medical/antspy/mnia.nii.gz",
    "medical/antspy/surf.nii.gz",
    "medical/itk_kmeans_t1_3d/KmeansTest_T1KmeansPrelimSegmentation.nii.gz",
    "medical/itk_kmeans_t1_3d/KmeansTest_T1RawSkullStrip.nii.gz",
    "medical/itk_kmeans_t1_3d/KmeansTest_T1UCharRaw.nii.gz",
    "medical/nibabel_anat_func/anatomical.nii",
    "medical/nibabel_anat_func/reoriented_anat_moved.nii",
    "medical/nibabel_anat_func/resampled_anat_moved.nii",
]
NIFTI_4D = ["medical/nibabel_anat_func/example4d.nii.gz", "medical/nibabel_anat_func/functional.nii"]
ITK_FILES = [
    "medical/simpleitk_notebook_data/head_mr_oriented.mha",
    "medical/simpleitk_notebook_data/vm_head_ct.mha",
    "medical/simpleitk_notebook_data/vm_head_mri.mha",
    "medical/itk_ratlung_2d/RatLungSlice1.mha",
    "medical/itk_ratlung_2d/RatLungSlice2.mha",
    "medical/itk_brainweb_2d/BrainT1SliceBorder20DirectionPlus30.mhd",
    "medical/itk_brainweb_2d/BrainProtonDensitySliceShifted13x17yDirectionPlus30.mhd",
]


def _sitk_geometry(image: sitk.Image) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    n = image.GetDimension()
    return np.array(image.GetOrigin()), np.array(image.GetSpacing()), np.array(image.GetDirection()).reshape(n, n)


def _assert_geometry(ours: SpatialImage, origin: np.ndarray, spacing: np.ndarray, direction: np.ndarray) -> None:
    np.testing.assert_allclose(ours.origin, origin, rtol=0, atol=1e-6)
    np.testing.assert_allclose(ours.spacing, spacing, rtol=0, atol=1e-6)
    np.testing.assert_allclose(ours.direction, direction, rtol=0, atol=1e-6)


@pytest.mark.parametrize("relative", NIFTI_FILES + ITK_FILES)
def test_geometry_and_values_equal_simpleitk(relative: str, data: Callable[[str], Path]) -> None:
    path = data(relative)
    reference = sitk.ReadImage(str(path))
    ours = cr.read(path)
    _assert_geometry(ours, *_sitk_geometry(reference))
    assert ours.size == reference.GetSize()
    expected = sitk.GetArrayViewFromImage(reference)
    if relative.endswith((".nii", ".nii.gz")):
        # resampled_anat_moved.nii holds NaN outside the field of view (SPM's convention); nibabel and we keep
        # them, SimpleITK reads them as 0
        stored = np.asarray(nib.load(path).dataobj).transpose(2, 1, 0)
        np.testing.assert_array_equal(np.isnan(ours.array), np.isnan(stored))
        assert not np.isnan(expected).any()
        np.testing.assert_array_equal(np.nan_to_num(ours.array, nan=0.0), expected)
    else:
        np.testing.assert_array_equal(ours.array, expected)


@pytest.mark.parametrize("relative", NIFTI_4D)
def test_4d_nifti_equals_simpleitk_volume_by_volume(relative: str, data: Callable[[str], Path]) -> None:
    path = data(relative)
    reference = sitk.ReadImage(str(path))
    origin, spacing, direction = _sitk_geometry(reference)
    whole = cr.read(path)
    count = reference.GetSize()[3]
    assert whole.n_channels == count and whole.meta["trailing_axis"] == "time"
    for t in range(count):
        volume = cr.read(path, volume=t)
        _assert_geometry(volume, origin[:3], spacing[:3], direction[:3, :3])
        expected = sitk.GetArrayViewFromImage(reference)[t]
        # SimpleITK applies scl_slope/scl_inter in float32; we compute in float64 (exact): equal to float32 precision
        np.testing.assert_allclose(volume.array, expected, rtol=1e-6, atol=0)
        np.testing.assert_array_equal(volume.array, whole.array[..., t])
    # nibabel's own scaled values, computed in float64, are ours exactly
    np.testing.assert_array_equal(whole.array, np.asarray(nib.load(path).get_fdata()).transpose(2, 1, 0, 3))


@pytest.mark.parametrize("folder", ["medical/mri_dir_phantom/CT_every8th", "medical/mri_dir_phantom/MR_T2_every2nd"])
def test_regular_dicom_series_equals_simpleitk_series_reader(folder: str, data: Callable[[str], Path]) -> None:
    path = data(folder)
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(path)))
    reference = reader.Execute()
    ours = cr.read(path)
    _assert_geometry(ours, *_sitk_geometry(reference))
    np.testing.assert_array_equal(ours.array, sitk.GetArrayViewFromImage(reference))


@pytest.mark.parametrize(
    ("folder", "position", "slices", "spacing_mm"),
    [
        ("medical/mri_dir_phantom/CT_every8th", "FFS", 52, (0.390625, 0.390625, 5.0)),
        ("medical/mri_dir_phantom/MR_T2_every2nd", "HFS", 47, (0.5, 0.5, 5.0)),
    ],
)
def test_feet_first_and_head_first_series_land_where_their_tags_say(
    folder: str, position: str, slices: int, spacing_mm: tuple[float, ...], data: Callable[[str], Path]
) -> None:
    """Every slice k sits at its file's ImagePositionPatient and holds that file's pixels (rescaled)."""
    image = cr.read(data(folder))
    assert image.meta["dicom"]["PatientPosition"] == position
    assert image.size[2] == slices
    np.testing.assert_allclose(image.spacing, spacing_mm, atol=1e-6)
    files = image.meta["files"]
    first = pydicom.dcmread(files[0])
    row, col = np.array(first.ImageOrientationPatient[:3], float), np.array(first.ImageOrientationPatient[3:], float)
    np.testing.assert_allclose(image.direction, np.column_stack([row, col, np.cross(row, col)]), atol=1e-9)
    for k in (0, 1, slices // 2, slices - 1):
        ds = pydicom.dcmread(files[k])
        np.testing.assert_allclose(
            image.index_to_world([[0, 0, k]])[0], np.array(ds.ImagePositionPatient, float), atol=1e-6
        )
        expected = ds.pixel_array * float(ds.get("RescaleSlope", 1)) + float(ds.get("RescaleIntercept", 0))
        np.testing.assert_array_equal(image.array[k], expected)
    # in-plane: column 1 of row 0 is one pixel along the row direction (DICOM's first IOP vector)
    step = image.index_to_world([[1, 0, 0]])[0] - image.index_to_world([[0, 0, 0]])[0]
    np.testing.assert_allclose(step, row * float(first.PixelSpacing[1]), atol=1e-9)


@pytest.mark.parametrize(
    "relative",
    [
        "medical/itk_brainweb_2d/BrainT1SliceBorder20DirectionPlus30.mhd",
        "medical/itk_brainweb_2d/BrainProtonDensitySliceShifted13x17yDirectionPlus30.mhd",
    ],
)
@pytest.mark.parametrize("suffix", [".mha", ".nrrd", ".nii.gz"])
def test_plus30_direction_is_read_and_kept(
    relative: str, suffix: str, data: Callable[[str], Path], tmp_path: Path
) -> None:
    image = cr.read(data(relative))
    angle = math.degrees(math.atan2(image.direction[1, 0], image.direction[0, 0]))
    assert angle == pytest.approx(30.0, abs=1e-5)
    np.testing.assert_allclose(image.direction @ image.direction.T, np.eye(2), atol=1e-6)
    written = cr.write(image, tmp_path / f"plus30{suffix}")
    back = sitk.ReadImage(str(written))
    np.testing.assert_allclose(np.array(back.GetDirection()).reshape(2, 2), image.direction, atol=1e-6)
    np.testing.assert_array_equal(cr.read(written).array, image.array)


@pytest.mark.parametrize("relative", NIFTI_FILES[:4] + NIFTI_4D)
def test_our_nifti_reads_the_same_in_nibabel_and_simpleitk(
    relative: str, data: Callable[[str], Path], tmp_path: Path
) -> None:
    source = data(relative)
    written = cr.write(cr.read(source), tmp_path / "copy.nii.gz")
    original, ours = nib.load(source), nib.load(written)
    np.testing.assert_allclose(ours.affine, original.affine, rtol=0, atol=1e-6)
    np.testing.assert_allclose(ours.header.get_sform(), ours.header.get_qform(), rtol=0, atol=1e-5)
    assert ours.header.get_data_dtype() == original.header.get_data_dtype().newbyteorder("=")
    np.testing.assert_array_equal(np.asarray(ours.dataobj), np.asarray(original.dataobj))
    a, b = sitk.ReadImage(str(source)), sitk.ReadImage(str(written))
    for x, y in zip(_sitk_geometry(a), _sitk_geometry(b), strict=True):
        np.testing.assert_allclose(y, x, rtol=0, atol=1e-5)


def _disagreeing_nifti(path: Path, sform_code: int, qform_code: int) -> tuple[np.ndarray, np.ndarray]:
    """The real anatomical T1 with its qform moved by (12, -7, 5) mm and rotated 10 degrees about z."""
    source = nib.load(require_data("medical/nibabel_anat_func/anatomical.nii"))
    sform = source.affine.copy()
    c, s = math.cos(math.radians(10)), math.sin(math.radians(10))
    rotation = np.array([[c, -s, 0, 0], [s, c, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]])
    qform = rotation @ sform
    qform[:3, 3] += [12.0, -7.0, 5.0]
    image = nib.Nifti1Image(np.asarray(source.dataobj), sform)
    image.set_sform(sform, code=sform_code)
    image.set_qform(qform, code=qform_code)
    image.to_filename(path)
    return sform, image.header.get_qform()


@pytest.mark.parametrize(
    ("sform_code", "qform_code", "ours", "itk"),
    [(2, 1, "sform", "qform"), (4, 2, "sform", "qform"), (1, 2, "sform", "sform")],
)
def test_nifti_with_disagreeing_sform_and_qform(
    sform_code: int, qform_code: int, ours: str, itk: str, tmp_path: Path
) -> None:
    path = tmp_path / "disagree.nii.gz"
    sform, qform = _disagreeing_nifti(path, sform_code, qform_code)
    with pytest.warns(GeometryWarning, match="disagree") as caught:
        image = cr.read(path)
    message = str(caught[0].message)
    assert ("would choose differently" in message) == (itk != ours)
    assert f"affine_source='{'qform' if ours == 'sform' else 'sform'}'" in message
    assert image.meta["affine_source"] == ours
    chosen = {"sform": sform, "qform": qform}
    lps = np.diag([-1.0, -1.0, 1.0, 1.0])
    np.testing.assert_allclose(image.affine, lps @ chosen[ours], atol=1e-6)

    # the documented ITK choice is what SimpleITK really does
    reference = sitk.ReadImage(str(path))
    np.testing.assert_allclose(reference.GetOrigin(), (lps @ chosen[itk])[:3, 3], atol=1e-4)
    other = "qform" if ours == "sform" else "sform"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        as_other = cr.read(path, affine_source=other)  # an explicit choice is not warned about
    np.testing.assert_allclose(as_other.affine, lps @ chosen[other], atol=1e-6)
    as_itk = cr.read(path, affine_source=itk) if itk != ours else image
    _assert_geometry(as_itk, *_sitk_geometry(reference))
