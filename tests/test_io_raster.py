"""GeoTIFF / TIFF / JPEG 2000 reading and writing (``coregister.io.raster``) on the real rasters.

Ground truth: rasterio itself. Our index -> world must equal rasterio's
``dataset.xy(row, col)`` (pixel centres) on every GeoTIFF in
``geospatial/``; a file we write must read back in rasterio with the same
transform, CRS WKT, nodata, profile and metadata to the last digit, and our
own reader must give back the array bit-exact and the geometry exactly.
"""

from __future__ import annotations

import logging
import math
import os
import stat
import warnings

import numpy as np
import pytest
import rasterio
import SimpleITK as sitk
import tifffile
from affine import Affine
from rasterio.control import GroundControlPoint
from rasterio.enums import ColorInterp, MaskFlags
from rasterio.errors import NotGeoreferencedWarning
from rasterio.windows import Window

import coregister as cr
from coregister.conventions import geometry_to_geotransform
from coregister.errors import ConfigError, GeometryWarning, UnreadableInputError, UnsupportedFormatError
from coregister.io.raster import raster_profile, raster_writer, read_raster, write_raster

LANDSAT = "geospatial/rasterio_landsat7/RGB.byte.tif"
S2_REF_TIF = "geospatial/arosics_s2_T33UUU/ref_S2A_20160608T153121_T33UUU_sub.tif"
RPC = "geospatial/rpc_dg/test_rpcs.tif"
PLAIN_TIFF = "medical/simpleitk_notebook_data/B1.tiff"

#: every GeoTIFF with a geotransform in the shared data
GEOTIFFS = [
    S2_REF_TIF,
    "geospatial/arosics_s2_T33UUU/tgt_S2A_20160529T153631_T33UUU_sub.tif",
    LANDSAT,
    "geospatial/rasterio_landsat7/rgb1.tif",
    "geospatial/rasterio_landsat7/rgb2.tif",
    "geospatial/rasterio_landsat7/rgb3.tif",
    "geospatial/rasterio_landsat7/rgb4.tif",
    "geospatial/rasterio_landsat7/rgb1_fake_nir_epsg3857.tif",
    "geospatial/rasterio_landsat7/shade.tif",
]


def _pixels(height: int, width: int) -> list[tuple[int, int]]:
    """Corners, centre and a few seeded interior pixels as (row, col)."""
    rng = np.random.default_rng(20240611)
    fixed = [(0, 0), (0, width - 1), (height - 1, 0), (height - 1, width - 1), (height // 2, width // 3)]
    return fixed + [
        (int(r), int(c)) for r, c in zip(rng.integers(0, height, 5), rng.integers(0, width, 5), strict=True)
    ]


def _rasterio_view(path) -> dict:
    """What gdalinfo would print about a file, as rasterio reports it."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)  # rasterio's own note on plain TIFFs
        return _rasterio_view_quiet(path)


def _rasterio_view_quiet(path) -> dict:
    with rasterio.open(path) as ds:
        structure = ds.tags(ns="IMAGE_STRUCTURE")
        return {
            "driver": ds.driver,
            "size": (ds.width, ds.height, ds.count),
            "dtypes": ds.dtypes,
            "transform": tuple(ds.transform),
            "crs": ds.crs.to_wkt() if ds.crs else None,
            "nodata": ds.nodata,
            "tiled": ds.profile.get("tiled"),
            "block": ds.block_shapes,
            "compress": ds.profile.get("compress"),
            "interleave": ds.profile.get("interleave"),
            "predictor": structure.get("PREDICTOR"),
            "colorinterp": ds.colorinterp,
            "descriptions": ds.descriptions,
            "tags": ds.tags(),
            "band_tags": [ds.tags(b) for b in ds.indexes],
            "scales": ds.scales,
            "offsets": ds.offsets,
            "units": ds.units,
            "mask_flags": ds.mask_flag_enums,
            "rpcs": ds.rpcs.to_dict() if ds.rpcs else None,
            "gcps": ([g.asdict() for g in ds.gcps[0]], ds.gcps[1].to_wkt() if ds.gcps[1] else None),
        }


# ----------------------------------------------------------------------------- geometry against rasterio
@pytest.mark.parametrize("relative", GEOTIFFS)
def test_index_to_world_equals_rasterio_xy(data, relative):
    path = data(relative)
    img = read_raster(path)
    with rasterio.open(path) as ds:
        pixels = _pixels(ds.height, ds.width)
        rows, cols = (list(v) for v in zip(*pixels, strict=True))
        xs, ys = ds.xy(rows, cols)  # pixel centres
        expected = np.column_stack([xs, ys])
        bounds = ds.bounds
        assert img.crs is not None and img.crs.equals(ds.crs.to_wkt())
        assert img.nodata == ds.nodata or (img.nodata is None and ds.nodata is None)
        assert img.shape == (ds.height, ds.width)
        assert img.n_channels == ds.count
    ours = img.index_to_world(np.column_stack([cols, rows]))
    step = max(img.spacing)
    np.testing.assert_allclose(ours, expected, rtol=0, atol=1e-9 * step)
    # north-up: direction diag(1, -1); the outer pixel corners give rasterio's bounds
    np.testing.assert_array_equal(img.direction, np.diag([1.0, -1.0]))
    corners = img.index_to_world([[-0.5, -0.5], [img.size[0] - 0.5, img.size[1] - 0.5]])
    np.testing.assert_allclose(corners, [[bounds.left, bounds.top], [bounds.right, bounds.bottom]], rtol=0, atol=1e-6)


# ----------------------------------------------------------------------------- round trips, checked by rasterio
@pytest.mark.parametrize(
    "relative",
    [
        LANDSAT,
        "geospatial/rasterio_landsat7/rgb1.tif",
        "geospatial/rasterio_landsat7/rgb1_fake_nir_epsg3857.tif",
        "geospatial/rasterio_landsat7/shade.tif",
        S2_REF_TIF,
        RPC,
        PLAIN_TIFF,
    ],
)
def test_written_file_reads_back_identically_in_rasterio(data, relative, tmp_path):
    source = data(relative)
    img = read_raster(source)
    out = write_raster(img, tmp_path / ("copy_" + source.name))
    assert _rasterio_view(out) == _rasterio_view(source)
    back = read_raster(out)
    np.testing.assert_array_equal(back.array, img.array)
    assert back.array.dtype == img.array.dtype
    assert back.origin == img.origin and back.spacing == img.spacing
    np.testing.assert_array_equal(back.direction, img.direction)
    assert (back.crs is None and img.crs is None) or back.crs == img.crs
    assert back.nodata == img.nodata or (back.nodata is None and img.nodata is None)
    if img.mask is None:
        assert back.mask is None
    else:
        np.testing.assert_array_equal(back.mask, img.mask)
    assert back.meta["format"] == img.meta["format"]


def test_dispatch_reads_and_writes_through_raster_module(data, tmp_path):
    img = cr.read(data(LANDSAT))
    assert img.meta["format"] == "geotiff" and img.meta["driver"] == "GTiff"
    out = cr.write(img, tmp_path / "rgb.tif")
    assert np.array_equal(cr.read(out).array, img.array)
    with pytest.raises(cr.OutputExistsError):
        cr.write(cr.read(out), out)


# ----------------------------------------------------------------------------- rotated geotransforms
@pytest.mark.parametrize("angle_deg", [12.5, -30.0, 97.0])
def test_rotated_geotransform_round_trips_exactly(data, tmp_path, angle_deg):
    with rasterio.open(data(LANDSAT)) as ds:
        pixels = ds.read(1, window=Window(100, 120, 96, 64))
        crs = ds.crs
    theta = math.radians(angle_deg)
    size = 30.0
    # north-up turned by theta: +col points along (cos, sin), +row along (sin, -cos)
    c, s_ = math.cos(theta), math.sin(theta)
    gt = Affine(size * c, size * s_, 250000.0, size * s_, -size * c, 2700000.0)
    source = tmp_path / "rotated.tif"
    with rasterio.open(
        source, "w", driver="GTiff", width=96, height=64, count=1, dtype="uint8", crs=crs, transform=gt
    ) as dst:
        dst.write(pixels, 1)
    img = read_raster(source)
    expected_direction = np.array([[c, s_], [s_, -c]])
    np.testing.assert_allclose(img.direction, expected_direction, rtol=0, atol=1e-12)
    assert img.spacing == pytest.approx((size, size), abs=1e-12)
    with rasterio.open(source) as ds:
        rows, cols = [0, 63, 10, 40], [0, 95, 50, 3]
        xs, ys = ds.xy(rows, cols)
    np.testing.assert_allclose(
        img.index_to_world(np.column_stack([cols, rows])), np.column_stack([xs, ys]), rtol=0, atol=1e-8
    )
    out = write_raster(img, tmp_path / "rotated_copy.tif")
    with rasterio.open(out) as ds:
        assert tuple(ds.transform) == tuple(gt)  # to the last bit
    # the same geometry given directly (no transform in meta) round-trips to the last few ulps
    fresh = cr.SpatialImage(img.array, origin=img.origin, spacing=img.spacing, direction=img.direction, crs=img.crs)
    out2 = write_raster(fresh, tmp_path / "rotated_fresh.tif")
    with rasterio.open(out2) as ds:
        np.testing.assert_allclose(tuple(ds.transform), tuple(gt), rtol=1e-14, atol=1e-9)
    again = read_raster(out2)
    np.testing.assert_allclose(again.direction, img.direction, rtol=0, atol=1e-14)
    np.testing.assert_allclose(again.origin, img.origin, rtol=0, atol=1e-8)


def test_south_up_and_pixel_is_point_are_kept(data, tmp_path):
    with rasterio.open(data(LANDSAT)) as ds:
        pixels = ds.read(2, window=Window(0, 0, 40, 30))
        crs = ds.crs
    gt = Affine(300.0, 0.0, 101985.0, 0.0, 300.0, 2600000.0)  # rows go north
    source = tmp_path / "point.tif"
    with rasterio.open(
        source, "w", driver="GTiff", width=40, height=30, count=1, dtype="uint8", crs=crs, transform=gt
    ) as dst:
        dst.write(pixels, 1)
        dst.update_tags(AREA_OR_POINT="Point")
    img = read_raster(source)
    np.testing.assert_array_equal(img.direction, np.eye(2))
    assert img.meta["tags"]["AREA_OR_POINT"] == "Point"
    out = write_raster(img, tmp_path / "point_copy.tif")
    assert _rasterio_view(out) == _rasterio_view(source)


# ----------------------------------------------------------------------------- georeferencing edge cases
def test_rpc_raster_keeps_its_pixel_grid_and_rpcs(data, tmp_path):
    path = data(RPC)
    img = read_raster(path)
    assert img.crs is None  # never the identity geotransform read as degrees
    assert img.origin == (0.0, 0.0) and img.spacing == (1.0, 1.0)
    np.testing.assert_array_equal(img.direction, np.eye(2))
    with rasterio.open(path) as ds:
        assert img.meta["rpcs"] == ds.rpcs.to_dict()
        assert img.meta["georef_crs_wkt"] == ds.crs.to_wkt()
        np.testing.assert_array_equal(img.array, ds.read(1))
    assert img.meta["format"] == "geotiff" and img.meta["transform"] is None
    out = write_raster(img, tmp_path / "rpcs.tif")
    view = _rasterio_view(out)
    assert view["rpcs"] == _rasterio_view(path)["rpcs"] and view["rpcs"]["line_off"] == 2295.0
    assert view["transform"] == tuple(Affine.identity())


def test_rpcs_are_dropped_once_the_grid_changes(data, tmp_path, caplog):
    img = read_raster(data(RPC))
    crop = img.replace(array=img.array[10:50, 20:60], mask=None)
    with caplog.at_level(logging.WARNING, logger="coregister.io.raster"):
        out = write_raster(crop, tmp_path / "crop.tif")
    assert "RPCs/GCPs" in caplog.text
    assert _rasterio_view(out)["rpcs"] is None


def test_gcp_raster_keeps_its_pixel_grid_and_gcps(data, tmp_path):
    with rasterio.open(data(LANDSAT)) as ds:
        pixels = ds.read(window=Window(0, 0, 60, 50))
    gcps = [
        GroundControlPoint(row=0.0, col=0.0, x=-77.5, y=25.5, z=0.0, id="a"),
        GroundControlPoint(row=0.0, col=60.0, x=-77.3, y=25.52, z=0.0, id="b"),
        GroundControlPoint(row=50.0, col=0.0, x=-77.48, y=25.35, z=0.0, id="c"),
        GroundControlPoint(row=50.0, col=60.0, x=-77.29, y=25.36, z=10.0, id="d"),
    ]
    source = tmp_path / "gcps.tif"
    with rasterio.open(
        source, "w", driver="GTiff", width=60, height=50, count=3, dtype="uint8", gcps=gcps, crs="EPSG:4326"
    ) as dst:
        dst.write(pixels)
    img = read_raster(source)
    assert img.crs is None and img.origin == (0.0, 0.0) and img.spacing == (1.0, 1.0)
    with rasterio.open(source) as ds:
        assert img.meta["gcps"] == tuple(g.asdict() for g in ds.gcps[0])
    assert [(g["row"], g["col"], g["x"]) for g in img.meta["gcps"]] == [(g.row, g.col, g.x) for g in gcps]
    assert "4326" in img.meta["gcps_crs_wkt"]
    out = write_raster(img, tmp_path / "gcps_copy.tif")
    assert _rasterio_view(out)["gcps"] == _rasterio_view(source)["gcps"]
    np.testing.assert_array_equal(read_raster(out).array, np.moveaxis(pixels, 0, -1))


def test_plain_tiff_is_a_plain_image(data, tmp_path):
    path = data(PLAIN_TIFF)
    img = read_raster(path)  # no NotGeoreferencedWarning may escape (warnings are errors)
    assert img.meta["format"] == "tiff" and img.crs is None
    assert img.origin == (0.0, 0.0) and img.spacing == (1.0, 1.0)
    np.testing.assert_array_equal(img.array, tifffile.imread(path))
    out = write_raster(img, tmp_path / "plain.tif")
    with tifffile.TiffFile(out) as tif:
        names = {tag.name for tag in tif.pages[0].tags.values()}
    assert not names & {"ModelTransformationTag", "ModelPixelScaleTag", "ModelTiepointTag", "GeoKeyDirectoryTag"}
    np.testing.assert_array_equal(tifffile.imread(out), img.array)


def test_geotransform_without_crs_reads_its_geometry(data, tmp_path):
    with rasterio.open(data(LANDSAT)) as ds:
        pixels = ds.read(1, window=Window(0, 0, 50, 40))
        gt = ds.transform
    source = tmp_path / "nocrs.tif"
    with rasterio.open(source, "w", driver="GTiff", width=50, height=40, count=1, dtype="uint8", transform=gt) as dst:
        dst.write(pixels, 1)
    img = read_raster(source)
    assert img.crs is None and img.meta["format"] == "geotiff"
    assert img.origin == pytest.approx((gt.c + gt.a / 2, gt.f + gt.e / 2), abs=1e-9)
    out = write_raster(img, tmp_path / "nocrs_copy.tif")
    assert _rasterio_view(out)["transform"] == tuple(gt) and _rasterio_view(out)["crs"] is None


# ----------------------------------------------------------------------------- bands, metadata, masks
def test_bands_descriptions_tags_scales_units_round_trip(data, tmp_path):
    source = tmp_path / "described.tif"
    with rasterio.open(data(LANDSAT)) as ds:
        profile = ds.profile
        pixels = ds.read()
    profile.update(tiled=True, blockxsize=128, blockysize=128, compress="lzw", predictor=2, interleave="band")
    with rasterio.open(source, "w", **profile) as dst:
        dst.write(pixels)
        dst.descriptions = ("red (B3)", "green (B2)", "blue (B1)")
        dst.update_tags(SENSOR="ETM+", ACQUIRED="2001-05-03")
        for b in (1, 2, 3):
            dst.update_tags(b, WAVELENGTH_NM=str(660 - 100 * (b - 1)))
        dst.scales = (0.01, 0.02, 0.03)
        dst.offsets = (-1.0, 0.0, 1.5)
        dst.units = ("reflectance", "reflectance", "W/m2")
    img = read_raster(source)
    assert img.meta["band_descriptions"] == ("red (B3)", "green (B2)", "blue (B1)")
    assert img.meta["profile"]["compress"] == "lzw" and img.meta["profile"]["predictor"] == 2
    out = write_raster(img, tmp_path / "described_copy.tif")
    assert _rasterio_view(out) == _rasterio_view(source)
    # a band subset keeps the order asked for, and the metadata of those bands
    sub = read_raster(source, bands=[3, 1])
    np.testing.assert_array_equal(sub.array, np.moveaxis(pixels[[2, 0]], 0, -1))
    assert sub.meta["band_descriptions"] == ("blue (B1)", "red (B3)") and sub.meta["units"] == ("W/m2", "reflectance")
    out_sub = write_raster(sub, tmp_path / "sub.tif")
    with rasterio.open(out_sub) as ds:
        assert ds.descriptions == ("blue (B1)", "red (B3)") and ds.scales == (0.03, 0.01)
        assert ds.tags(1)["WAVELENGTH_NM"] == "460"
    single = read_raster(source, bands=[2])
    assert single.array.ndim == 2 and single.meta["colorinterp"] == ("green",)


@pytest.mark.parametrize("bands", [[0], [4], []])
def test_band_numbers_outside_the_file_are_refused(data, bands):
    with pytest.raises(ConfigError, match="band"):
        read_raster(data(LANDSAT), bands=bands)


def test_nodata_mask_and_masked_false(data):
    path = data(LANDSAT)
    img = read_raster(path)
    with rasterio.open(path) as ds:
        np.testing.assert_array_equal(img.mask, ds.dataset_mask() > 0)
    assert img.meta["mask_source"] == "nodata"
    np.testing.assert_array_equal(img.mask, img.valid_mask())
    raw = read_raster(path, masked=False)
    assert raw.mask is None and raw.nodata == 0.0


def test_mask_beyond_nodata_is_written_as_internal_mask(data, tmp_path):
    img = read_raster(data(LANDSAT))
    mask = np.array(img.mask)
    mask[300:400, 200:500] = False  # e.g. clouds: valid pixels the user excludes
    out = write_raster(img.replace(mask=mask), tmp_path / "masked.tif")
    with rasterio.open(out) as ds:
        assert ds.mask_flag_enums[0] == [MaskFlags.per_dataset]
    back = read_raster(out)
    np.testing.assert_array_equal(back.mask, mask)
    assert back.meta["mask_source"] == "internal" and back.nodata == 0.0
    np.testing.assert_array_equal(back.array, img.array)


def test_alpha_band_gives_the_mask(data, tmp_path):
    with rasterio.open(data(LANDSAT)) as ds:
        rgb = ds.read()
        profile = ds.profile
    alpha = np.where(rgb.any(axis=0), 255, 0).astype(np.uint8)
    alpha[:50] = 0
    profile.update(count=4, photometric="RGB", alpha="YES")  # GDAL's way to declare the 4th band alpha
    profile.pop("nodata")
    source = tmp_path / "rgba.tif"
    with rasterio.open(source, "w", **profile) as dst:
        dst.write(np.concatenate([rgb, alpha[np.newaxis]]))
        dst.colorinterp = [ColorInterp.red, ColorInterp.green, ColorInterp.blue, ColorInterp.alpha]
    img = read_raster(source)
    assert img.n_channels == 4 and img.meta["mask_source"] == "alpha"
    np.testing.assert_array_equal(img.mask, alpha > 0)
    out = write_raster(img, tmp_path / "rgba_copy.tif")
    view = _rasterio_view(out)
    assert view["colorinterp"][3] == ColorInterp.alpha and view["mask_flags"] == _rasterio_view(source)["mask_flags"]
    np.testing.assert_array_equal(read_raster(out).mask, alpha > 0)


def test_palette_colormap_round_trips(data, tmp_path):
    with rasterio.open(data(LANDSAT)) as ds:
        classes = (ds.read(1, window=Window(0, 0, 64, 48)) // 64).astype(np.uint8)
        crs, gt = ds.crs, ds.transform
    cmap = {0: (0, 0, 0, 255), 1: (255, 0, 0, 255), 2: (0, 255, 0, 255), 3: (0, 0, 255, 255)}
    source = tmp_path / "classes.tif"
    with rasterio.open(
        source, "w", driver="GTiff", width=64, height=48, count=1, dtype="uint8", crs=crs, transform=gt
    ) as dst:
        dst.write(classes, 1)
        dst.write_colormap(1, cmap)
    img = read_raster(source)
    assert img.meta["colorinterp"] == ("palette",)
    out = write_raster(img, tmp_path / "classes_copy.tif")
    with rasterio.open(out) as ds:
        assert ds.colorinterp == (ColorInterp.palette,)
        assert {k: ds.colormap(1)[k] for k in cmap} == cmap


# ----------------------------------------------------------------------------- windows
def test_window_read_has_the_geometry_of_the_block(data):
    path = data(S2_REF_TIF)
    img = read_raster(path, window=((1000, 1256), (700, 956)))
    with rasterio.open(path) as ds:
        block = ds.read(1, window=Window(700, 1000, 256, 256))
        x, y = ds.xy(1000 + 17, 700 + 5)
    np.testing.assert_array_equal(img.array, block)
    np.testing.assert_allclose(img.index_to_world([[5, 17]])[0], [x, y], rtol=0, atol=1e-6)
    assert img.meta["window"] == ((1000, 1256), (700, 956))
    with pytest.raises(ConfigError, match="outside"):
        read_raster(path, window=((3100, 3300), (0, 10)))


def test_windowed_writing_with_a_zero_stride_template(data, tmp_path):
    source = read_raster(data(S2_REF_TIF), window=((0, 512), (0, 640)))
    template = source.replace(array=np.broadcast_to(np.zeros((), source.dtype), source.shape), mask=None)
    out = tmp_path / "windows.tif"
    with raster_writer(out, template) as dst:
        for row in range(0, 512, 128):
            dst.write(source.array[np.newaxis, row : row + 128], window=Window(0, row, 640, 128))
    back = read_raster(out)
    np.testing.assert_array_equal(back.array, source.array)
    assert back.same_geometry(source, atol=0)
    assert raster_profile(template)["predictor"] == 2


def test_failed_write_leaves_nothing(data, tmp_path):
    img = read_raster(data(LANDSAT))
    out = tmp_path / "never.tif"
    with pytest.raises(RuntimeError, match="boom"), raster_writer(out, img, cog=True) as dst:
        dst.write(np.moveaxis(img.array, -1, 0))
        raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []


# ----------------------------------------------------------------------------- COG and JPEG 2000
def test_cog_has_overviews_and_cog_layout(data, tmp_path):
    img = read_raster(data(LANDSAT))
    out = write_raster(img, tmp_path / "cog.tif", cog=True)
    with rasterio.open(out) as ds:
        assert ds.tags(ns="IMAGE_STRUCTURE")["LAYOUT"] == "COG"
        assert ds.profile["tiled"] and ds.block_shapes[0] == (512, 512)
        assert ds.overviews(1) == [2]
        assert ds.colorinterp == (ColorInterp.red, ColorInterp.green, ColorInterp.blue)
        assert ds.nodata == 0.0 and tuple(ds.transform)[:6] == img.meta["transform"]
    back = read_raster(out)
    np.testing.assert_array_equal(back.array, img.array)
    assert back.meta["profile"]["layout"] == "COG"
    small_blocks = write_raster(img, tmp_path / "cog256.tif", cog=True, blocksize=256, overview_resampling="average")
    with rasterio.open(small_blocks) as ds:
        assert ds.block_shapes[0] == (256, 256) and ds.overviews(1) == [2, 4]


@pytest.mark.parametrize("stem", ["ref_S2A_20160608T153121_T33UUU_sub", "tgt_S2A_20160529T153631_T33UUU_sub"])
def test_jp2_reads_pixel_identical_to_its_tif_twin(data, stem):
    jp2 = read_raster(data(f"geospatial/arosics_s2_T33UUU/{stem}.jp2"))
    tif = read_raster(data(f"geospatial/arosics_s2_T33UUU/{stem}.tif"))
    assert jp2.meta["format"] == "jp2" and tif.meta["format"] == "geotiff"
    np.testing.assert_array_equal(jp2.array, tif.array)
    assert jp2.same_geometry(tif, atol=0) and jp2.crs == tif.crs


def test_jp2_writing_is_lossless(data, tmp_path):
    img = read_raster(data(S2_REF_TIF), window=((1200, 1456), (800, 1120)))
    out = write_raster(img, tmp_path / "crop.jp2")
    with rasterio.open(out) as ds:
        assert ds.driver == "JP2OpenJPEG"
        assert ds.tags(ns="IMAGE_STRUCTURE")["COMPRESSION_REVERSIBILITY"] == "LOSSLESS"
    back = read_raster(out)
    np.testing.assert_array_equal(back.array, img.array)
    assert back.same_geometry(img, atol=1e-9) and back.crs == img.crs


# ----------------------------------------------------------------------------- refusals
def test_volume_is_refused_with_the_fix(tmp_path):
    volume = cr.SpatialImage(np.zeros((3, 4, 5), np.int16), origin=(0, 0, 0), spacing=(1, 1, 1))
    with pytest.raises(UnsupportedFormatError, match=r"\.nii\.gz or \.mha"):
        write_raster(volume, tmp_path / "volume.tif")
    assert not (tmp_path / "volume.tif").exists()


@pytest.mark.parametrize(
    ("dtype", "nodata"), [(np.uint8, -9999.0), (np.uint16, 70000.0), (np.int16, 0.5), (np.uint8, float("nan"))]
)
def test_nodata_the_dtype_cannot_hold_is_refused(tmp_path, dtype, nodata):
    img = cr.SpatialImage(
        np.zeros((4, 4), dtype),
        origin=(0.5, -0.5),
        spacing=(1, 1),
        direction=np.diag([1.0, -1.0]),
        crs="EPSG:32633",
        nodata=nodata,
    )
    with pytest.raises(ConfigError, match="nodata"):
        write_raster(img, tmp_path / "bad.tif")


def test_float_pixels_are_refused_by_jpeg2000(tmp_path):
    img = cr.SpatialImage(np.zeros((4, 4), np.float32), origin=(0, 0), spacing=(1, 1))
    with pytest.raises(UnsupportedFormatError, match=r"\.tif"):
        write_raster(img, tmp_path / "float.jp2")


def test_unreadable_raster_is_reported(tmp_path):
    bad = tmp_path / "truncated.tif"
    bad.write_bytes(b"II*\x00" + bytes(20))
    with pytest.raises(UnreadableInputError, match="truncated.tif"):
        read_raster(bad)
    with pytest.raises(UnreadableInputError, match="does not exist"):
        read_raster(tmp_path / "missing.tif")


def test_new_image_gets_tiled_compressed_defaults(tmp_path):
    img = cr.SpatialImage(
        np.arange(600 * 200, dtype=np.float32).reshape(600, 200),
        origin=(1000.5, 2000.5),
        spacing=(1.0, 1.0),
        direction=np.diag([1.0, -1.0]),
        crs="EPSG:32633",
        nodata=float("nan"),
    )
    out = write_raster(img, tmp_path / "new.tif")
    view = _rasterio_view(out)
    assert view["compress"] == "deflate" and view["tiled"] and view["predictor"] == "3"
    assert math.isnan(view["nodata"])
    assert view["transform"] == tuple(geometry_to_geotransform(img.origin, img.spacing, img.direction))
    back = read_raster(out)
    np.testing.assert_array_equal(back.array, img.array)
    assert back.same_geometry(img, atol=0) and back.crs.to_epsg() == 32633


@pytest.mark.parametrize("name", ["out.tif", "out.png"])
def test_outputs_get_the_usual_permissions(data, tmp_path, name):
    img = cr.read(data(PLAIN_TIFF))
    out = cr.write(img, tmp_path / name)
    umask = os.umask(0o022)
    os.umask(umask)
    assert stat.S_IMODE(out.stat().st_mode) == 0o666 & ~umask  # not mkstemp's 0600
    np.testing.assert_array_equal(cr.read(out).array, img.array)


def test_band_statistics_are_never_left_stale(data, tmp_path):
    img = read_raster(data(LANDSAT))
    assert "STATISTICS_MEAN" in img.meta["band_tags"][0]
    crop = img.replace(array=img.array[100:300, 200:500], mask=None, origin=tuple(img.index_to_world([[200, 100]])[0]))
    out = write_raster(crop, tmp_path / "crop.tif")
    with rasterio.open(out) as ds:
        assert not any(k.startswith("STATISTICS_") for k in ds.tags(1))
        assert ds.xy(0, 0) == pytest.approx(tuple(img.index_to_world([[200, 100]])[0]), abs=1e-6)
    with raster_writer(tmp_path / "new_pixels.tif", img) as dst:  # pixels written later are new pixels
        dst.write(np.zeros((3, *img.shape), np.uint8))
    with rasterio.open(tmp_path / "new_pixels.tif") as ds:
        assert not any(k.startswith("STATISTICS_") for k in ds.tags(1))


def test_window_written_back_has_the_exact_window_geotransform(data, tmp_path):
    path = data(LANDSAT)
    block = read_raster(path, window=((101, 300), (37, 250)))
    out = write_raster(block, tmp_path / "block.tif")
    with rasterio.open(path) as ds:
        expected = ds.transform @ Affine.translation(37, 101)  # the corner of pixel (row 101, col 37)
    with rasterio.open(out) as ds:
        assert tuple(ds.transform) == tuple(expected) and (ds.width, ds.height) == (213, 199)
        np.testing.assert_array_equal(np.moveaxis(ds.read(), 0, -1), block.array)


def test_tiff_stack_warns_that_only_the_first_page_is_read(data, tmp_path):
    pages = [tifffile.imread(data(f"medical/simpleitk_notebook_data/{name}.tiff")) for name in ("B1", "B2")]
    stack = tmp_path / "stack.tif"
    tifffile.imwrite(stack, np.stack(pages))
    with pytest.warns(GeometryWarning, match="2 pages"):
        img = read_raster(stack)
    np.testing.assert_array_equal(img.array, pages[0])


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.int16, np.float32])
def test_new_plain_tiff_reads_identically_in_simpleitk(data, tmp_path, dtype):
    slice_ = cr.read(data("medical/itk_brainweb_2d/BrainT1Slice.png"), grayscale=True).array
    array = (slice_.astype(np.float64) * 97.3 - 5000.0).astype(dtype) if dtype != np.uint8 else slice_
    out = write_raster(cr.SpatialImage(array, origin=(0, 0), spacing=(1, 1)), tmp_path / "plain.tif")
    view = _rasterio_view(out)
    assert not view["tiled"] and view["compress"] == "deflate" and view["transform"] == tuple(Affine.identity())
    np.testing.assert_array_equal(sitk.GetArrayFromImage(sitk.ReadImage(str(out))), array)


def test_four_band_image_is_not_taken_for_rgba_unless_it_is(data, tmp_path):
    rgb = cr.read(data("photos/skimage_motorcycle_stereo/motorcycle_left.png")).array[:64, :96]
    fourth = np.zeros(rgb.shape[:2], np.uint8)  # e.g. a near-infrared band that is 0 in places
    fourth[10:] = 200
    bands = np.dstack([rgb, fourth])
    out = write_raster(cr.SpatialImage(bands, origin=(0, 0), spacing=(1, 1)), tmp_path / "four.tif")
    back = read_raster(out)
    assert back.mask is None and back.meta["colorinterp"][3] != "alpha"
    np.testing.assert_array_equal(back.array, bands)
    # a PNG's RGBA stays RGBA, with its transparency as the mask
    png = cr.write(cr.SpatialImage(bands, origin=(0, 0), spacing=(1, 1)), tmp_path / "rgba.png")
    out_rgba = write_raster(cr.read(png), tmp_path / "rgba.tif")
    back_rgba = read_raster(out_rgba)
    assert back_rgba.meta["colorinterp"] == ("red", "green", "blue", "alpha")
    np.testing.assert_array_equal(back_rgba.mask, fourth > 0)
    np.testing.assert_array_equal(back_rgba.array, bands)
