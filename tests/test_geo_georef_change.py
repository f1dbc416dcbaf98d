"""Georeferencing (issue 5: a rotated, rescaled crop of RGB.byte.tif without geotransform, corner error < 0.5 px;
GCP fits of order 1-3 with RMSE) and change maps, on ../shared/data/geospatial."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import rasterio
from conftest import require_data
from skimage import transform as sktf

from coregister import SpatialImage
from coregister.errors import ConfigError
from coregister.geo import change, georeference
from coregister.qc.synthetic import write_shifted_raster

LANDSAT = "geospatial/rasterio_landsat7/RGB.byte.tif"


def _crop(data: np.ndarray, angle_deg: float, scale: float, centre: tuple[float, float], size: int) -> tuple[np.ndarray, np.ndarray]:
    """A crop turned by ``angle_deg`` and magnified by ``scale``; and the matrix crop pixel -> scene pixel (centres)."""
    theta = math.radians(angle_deg)
    linear = np.array([[math.cos(theta), -math.sin(theta)], [math.sin(theta), math.cos(theta)]]) / scale
    matrix = np.eye(3)
    matrix[:2, :2] = linear
    matrix[:2, 2] = np.array(centre) - linear @ np.full(2, (size - 1) / 2)
    bands = [sktf.warp(data[..., k].astype(float), matrix, output_shape=(size, size), order=3, preserve_range=True)
             for k in range(data.shape[-1])]
    return np.clip(np.rint(np.stack(bands, -1)), 0, 255).astype(np.uint8), matrix


@pytest.mark.parametrize(("angle", "scale"), [(10.0, 1.2), (-25.0, 0.8), (45.0, 1.0)])
def test_georeference_rotated_rescaled_crop(tmp_path: Path, angle: float, scale: float) -> None:
    """The crop is written as a plain PNG (no georeferencing) and georeferenced against the full scene."""
    from coregister.io import write

    path = require_data(LANDSAT)
    with rasterio.open(path) as ds:
        data, scene = np.moveaxis(ds.read(), 0, -1), ds.transform
    size = 300
    crop, matrix = _crop(data, angle, scale, (400.0, 350.0), size)
    image_path = write(SpatialImage(crop, origin=(0, 0), spacing=(1, 1)), tmp_path / "crop.png")
    result = georeference(image_path, base=path, output=tmp_path / "crop.tif")
    with rasterio.open(result.output) as out:
        found, crs = out.transform, out.crs
        assert out.count == 3 and (out.width, out.height) == (size, size)
    assert crs.to_epsg() == 32618
    errors = []
    for col, row in ((0, 0), (size, 0), (size, size), (0, size)):
        s = matrix @ np.array([col - 0.5, row - 0.5, 1.0])  # crop corner -> scene pixel centre coordinates
        tx, ty = scene @ (s[0] + 0.5, s[1] + 0.5)
        fx, fy = found @ (col, row)
        errors.append(math.hypot(tx - fx, ty - fy) / 300.0)
    assert max(errors) < 0.5
    assert result.extras["inliers"] > 20
    assert result.passed and result.quality.measures["after"] > result.quality.measures["before"]  # the registration's


def test_georeference_from_gcps_orders(tmp_path: Path) -> None:
    """GCPs taken from the file's own geotransform: order 1 reproduces it; orders 2-3 are written as GCPs."""
    path = require_data(LANDSAT)
    with rasterio.open(path) as ds:
        t, width, height = ds.transform, ds.width, ds.height
    rng = np.random.default_rng(0)
    pixels = rng.uniform(0, [width, height], size=(12, 2))
    xy = np.array([t @ tuple(p) for p in pixels])
    gcp_file = tmp_path / "gcps.csv"
    gcp_file.write_text("pixel,line,x,y\n" + "\n".join(f"{p[0]},{p[1]},{q[0]},{q[1]}" for p, q in zip(pixels, xy, strict=True)))
    result = georeference(path, gcps=gcp_file, crs="EPSG:32618", output=tmp_path / "order1.tif")
    assert result.extras["rmse_map"] < 1e-6
    assert result.passed and dict(result.quality.measures) == {}  # GCPs: nothing to compare, passed
    with rasterio.open(result.output) as out:
        assert out.transform.almost_equals(t, precision=1e-6)
        assert out.crs.to_epsg() == 32618
    second = georeference(path, gcps=gcp_file, crs="EPSG:32618", order=2, output=tmp_path / "order2.tif")
    assert second.extras["rmse_map"] < 1e-6
    with rasterio.open(second.output) as out:
        gcps, gcp_crs = out.gcps
        assert len(gcps) == 12 and gcp_crs.to_epsg() == 32618
    with pytest.raises(ConfigError, match="at least 10"):
        georeference(path, gcps=np.c_[pixels, xy][:6], crs="EPSG:32618", order=3)
    with pytest.raises(ConfigError, match="crs"):
        georeference(path, gcps=gcp_file)


def test_change_map_on_the_reference_grid(tmp_path: Path) -> None:
    """A target moved by a sub-pixel shift and with one block changed: the change map shows the block, not the shift."""
    path = require_data(LANDSAT)
    with rasterio.open(path) as ds:
        profile, data = ds.profile, ds.read()
    later = data.astype(np.int16)
    later[:, 300:360, 380:440] += 60
    later = np.where(data > 0, np.clip(later, 1, 255), 0).astype(np.uint8)
    with rasterio.open(tmp_path / "changed.tif", "w", **profile) as dst:
        dst.write(later)
    target = write_shifted_raster(tmp_path / "changed.tif", tmp_path / "later.tif", (0.4, -0.7))
    result = change(path, target, output=tmp_path / "change.tif", kind="difference")
    assert result.passed and result.to_dict()["verdict"] == "passed"
    with rasterio.open(result.output) as out, rasterio.open(path) as ref:
        assert out.transform == ref.transform and out.dtypes[0] == "float32"
        diff = out.read(1)
        assert np.isnan(diff[ref.read(1) == 0]).all()  # nodata wherever the reference is invalid
    assert np.nanmedian(diff[305:355, 385:435]) > 40
    quiet = diff[200:280, 450:550]
    assert abs(np.nanmedian(quiet)) < 2 and np.nanpercentile(np.abs(quiet), 90) < 15
    ratio = change(path, target, output=tmp_path / "ratio.tif", kind="ratio")
    with rasterio.open(ratio.output) as out:
        assert abs(np.nanmedian(out.read(1)[200:280, 450:550]) - 1) < 0.02
