"""The objects users hold, in and out: nibabel images and rioxarray DataArrays round-trip through SpatialImage, and
``register``, ``apply`` and ``geo.coregister`` take them directly (``like="input"`` gives the same kind back).

Round trips keep the geometry to 1e-9 and the metadata exactly; numpy-backed
values are shared, not copied; a dask-backed DataArray goes through
``geo.coregister`` window by window, never computed whole.
"""

from __future__ import annotations

import math
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk

import coregister as cr
from coregister import Rigid, SpatialImage, Translation, geo

xr = pytest.importorskip("xarray", reason="xarray is not installed (pip install 'coregister[xarray]')")
rioxarray = pytest.importorskip("rioxarray", reason="rioxarray is not installed (pip install 'coregister[xarray]')")

GEOMETRY_ATOL = 1e-9


def _same_geometry(a: SpatialImage, b: SpatialImage) -> None:
    assert a.shape == b.shape
    np.testing.assert_allclose(a.origin, b.origin, atol=GEOMETRY_ATOL, rtol=0)
    np.testing.assert_allclose(a.spacing, b.spacing, atol=GEOMETRY_ATOL, rtol=0)
    np.testing.assert_allclose(a.direction, b.direction, atol=GEOMETRY_ATOL, rtol=0)


def _without_source(meta: object) -> dict:
    return {k: v for k, v in dict(meta).items() if k != "source_path"}  # type: ignore[call-overload]


# ------------------------------------------------------------------------------------------------ nibabel
def test_from_nibabel_reads_as_the_reader_does(data) -> None:
    path = data("medical/nibabel_anat_func/anatomical.nii")
    mine, theirs = cr.read(path), SpatialImage.from_nibabel(nib.load(path))
    _same_geometry(theirs, mine)
    assert np.array_equal(theirs.array, mine.array) and theirs.dtype == mine.dtype
    assert _without_source(theirs.meta) == _without_source(mine.meta)


def _header_image() -> nib.Nifti1Image:
    rng = np.random.default_rng(0)
    turn = Rigid.from_angles(np.deg2rad([7.0, -4.0, 95.0])).matrix  # an oblique, permuted grid
    ras = np.eye(4)
    ras[:3, :3] = turn @ np.diag([2.1, 1.9, 2.9])
    ras[:3, 3] = [40.0, -12.5, 7.25]
    image = nib.Nifti1Image(rng.integers(-300, 3000, (6, 7, 5)).astype(np.int16), ras)
    header = image.header
    header.set_sform(ras, code=4)  # MNI
    header.set_qform(ras, code=1)  # scanner
    header.set_xyzt_units("micron", "msec")
    header["descrip"] = b"round trip"
    header.set_intent("t test", (12.0,), "stat")
    header.set_dim_info(freq=0, phase=1, slice=2)
    header["slice_duration"] = 0.05
    header["cal_min"], header["cal_max"] = -300.0, 3000.0
    return image


def test_nibabel_round_trip_keeps_geometry_header_and_values() -> None:
    source = _header_image()
    image = SpatialImage.from_nibabel(source)
    assert np.shares_memory(image.array, source.dataobj), "an in-memory nibabel image is wrapped, not copied"
    back = image.to_nibabel()
    assert np.shares_memory(np.asanyarray(back.dataobj), image.array), "and converted back without a copy"
    np.testing.assert_allclose(back.affine, source.affine, atol=GEOMETRY_ATOL, rtol=0)
    for header in (back.header,):
        assert (int(header["sform_code"]), int(header["qform_code"])) == (4, 1)
        assert header.get_xyzt_units() == ("micron", "msec")
        assert header["descrip"].item() == b"round trip"
        assert header.get_intent() == source.header.get_intent()
        assert header.get_dim_info() == (0, 1, 2)
        assert float(header["slice_duration"]) == pytest.approx(0.05)
        assert (float(header["cal_min"]), float(header["cal_max"])) == (-300.0, 3000.0)
    assert np.array_equal(np.asanyarray(back.dataobj), np.asanyarray(source.dataobj))
    again = SpatialImage.from_nibabel(back)
    _same_geometry(again, image)
    assert np.array_equal(again.array, image.array) and dict(again.meta) == dict(image.meta)
    assert image.spacing[0] == pytest.approx(2.1e-3)  # microns read as millimetres, as ITK does


def test_scaled_nifti_keeps_its_storage_through_nibabel(tmp_path: Path) -> None:
    stored = np.arange(60, dtype=np.int16).reshape(3, 4, 5)
    source = nib.Nifti1Image(stored, np.diag([1.5, 1.5, 3.0, 1.0]))
    source.header.set_slope_inter(2.0, -10.0)
    path = tmp_path / "scaled.nii.gz"
    nib.save(source, path)
    image = cr.read(path)
    back = image.to_nibabel()
    assert back.header.get_data_dtype() == np.int16 and back.header.get_slope_inter() == (2.0, -10.0)
    np.testing.assert_array_equal(back.get_fdata(), stored * 2.0 - 10.0)
    assert dict(SpatialImage.from_nibabel(back).meta) == _without_source(image.meta)


# ------------------------------------------------------------------------------------------------ xarray
def test_from_xarray_reads_as_the_reader_does(data) -> None:
    path = data("geospatial/rasterio_landsat7/RGB.byte.tif")
    array = rioxarray.open_rasterio(path)
    image, read = SpatialImage.from_xarray(array), cr.read(path)
    _same_geometry(image, read)
    assert np.array_equal(image.array, read.array) and image.crs == read.crs and image.nodata == read.nodata == 0
    assert np.shares_memory(image.array, array.data), "a numpy-backed DataArray is wrapped, not copied"


@pytest.mark.parametrize("masked", [False, True])
def test_xarray_round_trip_keeps_geometry_crs_nodata_and_bands(data, masked: bool) -> None:
    array = rioxarray.open_rasterio(data("geospatial/rasterio_landsat7/RGB.byte.tif"), masked=masked)
    image = SpatialImage.from_xarray(array)
    back = image.to_xarray()
    assert back.dims == array.dims and back.name == array.name
    assert back.rio.transform().almost_equals(array.rio.transform(), precision=GEOMETRY_ATOL)
    assert back.rio.crs == array.rio.crs
    assert back["band"].values.tolist() == array["band"].values.tolist() == [1, 2, 3]
    np.testing.assert_allclose(back["x"].values, array["x"].values, atol=GEOMETRY_ATOL, rtol=0)
    np.testing.assert_allclose(back["y"].values, array["y"].values, atol=GEOMETRY_ATOL, rtol=0)
    assert np.array_equal(back.values, array.values, equal_nan=True)
    if masked:
        assert math.isnan(image.nodata) and back.rio.encoded_nodata == array.rio.encoded_nodata == 0
    else:
        assert back.rio.nodata == array.rio.nodata == 0
    again = SpatialImage.from_xarray(back)
    _same_geometry(again, image)
    assert np.array_equal(again.array, image.array, equal_nan=True) and dict(again.meta) == dict(image.meta)
    assert again.crs == image.crs and (again.nodata == image.nodata or (math.isnan(again.nodata) and masked))


def test_a_rotated_geotransform_round_trips() -> None:
    from affine import Affine

    transform = Affine(8.0, 3.0, 500000.0, 2.0, -9.0, 4000000.0)
    array = xr.DataArray(np.arange(20.0).reshape(4, 5), dims=("y", "x")).rio.write_transform(transform)
    image = SpatialImage.from_xarray(array.rio.write_crs("EPSG:32633"))
    assert not np.allclose(image.direction, np.diag(np.diag(image.direction)))
    assert image.to_xarray().rio.transform().almost_equals(transform, precision=GEOMETRY_ATOL)


# ------------------------------------------------------------------------------------- the entry points
def test_register_and_apply_take_nibabel_images_and_give_them_back(data) -> None:
    fixed = nib.load(data("medical/nibabel_anat_func/anatomical.nii"))
    moving = nib.load(data("medical/nibabel_anat_func/reoriented_anat_moved.nii"))
    result = cr.register(fixed, moving)
    assert result.passed
    out = cr.apply(result.transform, moving, reference=fixed, like="input")
    assert isinstance(out, nib.Nifti1Image) and out.shape == fixed.shape
    np.testing.assert_allclose(out.affine, fixed.affine, atol=1e-6)
    assert isinstance(cr.apply(result.transform, moving, reference=fixed, like="sitk"), sitk.Image)


def test_apply_takes_a_dataarray_and_gives_one_back(data) -> None:
    array = rioxarray.open_rasterio(data("geospatial/rasterio_landsat7/RGB.byte.tif")).isel(band=0)
    pixel = SpatialImage.from_xarray(array).spacing[0]
    out = cr.apply(Translation([pixel, 0.0]), array, like="input")
    assert out.dims == ("y", "x") and out.rio.crs == array.rio.crs
    assert out.rio.transform().almost_equals(array.rio.transform(), precision=GEOMETRY_ATOL)
    assert np.array_equal(out.values[:, :-2], array.values[:, 1:-1])  # one pixel to the east


def test_geo_coregister_reads_a_dask_dataarray_window_by_window(data) -> None:
    """The S2 pair as dask arrays: the same correction as from the files, and no computed block near the scene's size."""
    import dask
    from dask.callbacks import Callback

    folder = data("geospatial/arosics_s2_T33UUU")
    ref_path = folder / "ref_S2A_20160608T153121_T33UUU_sub.tif"
    tgt_path = folder / "tgt_S2A_20160529T153631_T33UUU_sub.tif"
    from_files = geo.coregister(ref_path, tgt_path, mode="shift")
    reference = rioxarray.open_rasterio(ref_path, chunks={"x": 256, "y": 256})
    target = rioxarray.open_rasterio(tgt_path, chunks={"x": 256, "y": 256})
    sizes: list[int] = []

    class Sizes(Callback):
        def _posttask(self, key, result, dsk, state, worker_id):  # type: ignore[no-untyped-def]
            if hasattr(result, "size"):
                sizes.append(int(np.size(result)))

    with Sizes(), dask.config.set(scheduler="synchronous"):
        result = geo.coregister(reference, target, mode="shift", like="input")
    np.testing.assert_allclose(result.shift_px, from_files.shift_px, atol=1e-9)
    assert result.passed
    scene = int(np.prod(reference.shape))
    assert sizes and max(sizes) <= scene // 4, (max(sizes), scene)
    corrected = result.corrected
    assert isinstance(corrected.data, dask.array.Array), "shift mode moves the geotransform only: still lazy"
    expected = target.rio.transform()
    dx, dy = result.target_offset
    assert corrected.rio.transform().almost_equals(type(expected).translation(dx, dy) @ expected, precision=1e-6)


def test_geo_coregister_resampled_output_like_a_dataarray() -> None:
    from scipy import ndimage

    rng = np.random.default_rng(1)
    scene = ndimage.gaussian_filter(rng.normal(size=(240, 260)), 2) * 100 + 1000
    reference = SpatialImage(scene.astype(np.float32), origin=(500005.0, 4999995.0), spacing=(10.0, 10.0),
                             direction=np.diag([1.0, -1.0]), crs="EPSG:32633")
    moved = ndimage.shift(scene, (0.4, -0.7), order=3, mode="nearest").astype(np.float32)
    target = reference.replace(array=moved).to_xarray()
    result = geo.coregister(reference.to_xarray(), target, window_px=128, max_windows=4, resample=True, like="input")
    corrected = result.corrected
    assert type(corrected).__name__ == "DataArray" and corrected.shape == target.shape
    assert corrected.rio.transform().almost_equals(target.rio.transform(), precision=GEOMETRY_ATOL)
    inner = (slice(10, -10), slice(10, -10))
    assert np.abs(corrected.values[inner] - scene[inner]).mean() < np.abs(moved[inner] - scene[inner]).mean() / 3
