"""The GDAL corner <-> ITK centre crossing of :mod:`coregister.conventions`: each function against its inverse,
against SpatialImage's index <-> world, and against rasterio's own window arithmetic."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from affine import Affine
from rasterio.windows import Window
from rasterio.windows import transform as window_transform

from coregister import SpatialImage
from coregister.conventions import (
    centre_geotransform,
    corner_geotransform,
    geometry_to_geotransform,
    geotransform_to_geometry,
    map_to_pixel_centre,
    map_to_pixel_corner,
    pixel_centre_to_map,
    pixel_corner_to_map,
    subgrid_geotransform,
)

GEOTRANSFORMS = [
    pytest.param(Affine(30.0, 0.0, 101985.0, 0.0, -30.0, 2826915.0), id="north-up"),
    pytest.param(Affine(10.0, 0.0, 330000.0, 0.0, 10.0, 5830000.0), id="south-up"),
    pytest.param(Affine.translation(500000.0, 4100000.0) @ Affine.rotation(17.0) @ Affine.scale(2.5, -4.0), id="rotated"),
    pytest.param(Affine(1.0, 0.3, -5.0, 0.1, -1.0, 7.0), id="sheared"),
]


@pytest.fixture
def points() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    return rng.uniform(-3, 800, 200), rng.uniform(-3, 600, 200)


@pytest.mark.parametrize("transform", GEOTRANSFORMS)
def test_pixel_centres_round_trip(transform: Affine, points: tuple[np.ndarray, np.ndarray]) -> None:
    rows, cols = points
    x, y = pixel_centre_to_map(transform, rows, cols)
    back_rows, back_cols = map_to_pixel_centre(transform, x, y)
    np.testing.assert_allclose(back_rows, rows, atol=1e-8)
    np.testing.assert_allclose(back_cols, cols, atol=1e-8)


@pytest.mark.parametrize("transform", GEOTRANSFORMS)
def test_pixel_corners_round_trip_and_sit_half_a_pixel_from_centres(transform: Affine,
                                                                    points: tuple[np.ndarray, np.ndarray]) -> None:
    rows, cols = points
    x, y = pixel_corner_to_map(transform, rows, cols)
    back_rows, back_cols = map_to_pixel_corner(transform, x, y)
    np.testing.assert_allclose(back_rows, rows, atol=1e-8)
    np.testing.assert_allclose(back_cols, cols, atol=1e-8)
    centre_rows, centre_cols = map_to_pixel_centre(transform, x, y)
    np.testing.assert_allclose(centre_rows, rows - 0.5, atol=1e-8)
    np.testing.assert_allclose(centre_cols, cols - 0.5, atol=1e-8)
    # GDAL's own application of the geotransform is the corner frame
    gx, gy = transform @ (cols[0], rows[0])
    assert (x[0], y[0]) == pytest.approx((gx, gy), abs=1e-9)


@pytest.mark.parametrize("transform", GEOTRANSFORMS)
def test_centre_geotransform_round_trips_and_agrees_with_spatialimage(transform: Affine,
                                                                       points: tuple[np.ndarray, np.ndarray]) -> None:
    assert corner_geotransform(centre_geotransform(transform)).almost_equals(transform, precision=1e-9)
    rows, cols = points
    origin, spacing, direction = geotransform_to_geometry(transform)
    image = SpatialImage(np.zeros((4, 4)), origin=tuple(origin), spacing=tuple(spacing), direction=direction)
    world = image.index_to_world(np.c_[cols, rows])  # ITK index order (x=col, y=row)
    x, y = pixel_centre_to_map(transform, rows, cols)
    np.testing.assert_allclose(np.c_[x, y], world, rtol=0, atol=1e-6)
    cx, cy = centre_geotransform(transform) @ (cols[0], rows[0])
    assert (cx, cy) == pytest.approx((x[0], y[0]), abs=1e-6)
    assert geometry_to_geotransform(origin, spacing, direction).almost_equals(transform, precision=1e-6)


@pytest.mark.parametrize("transform", GEOTRANSFORMS)
@pytest.mark.parametrize(("row", "col", "step"), [(0, 0, 1), (17, 40, 1), (5, 3, 4), (0, 0, (2.5, 3.0))])
def test_subgrid_geotransform_is_rasterios_window_then_a_decimation(transform: Affine, row: int, col: int,
                                                                     step: float | tuple[float, float]) -> None:
    with warnings.catch_warnings():  # rasterio's window transform composes with affine's deprecated `*`
        warnings.simplefilter("ignore", PendingDeprecationWarning)
        expected = window_transform(Window(col, row, 10, 10), transform)
    sx, sy = step if isinstance(step, tuple) else (step, step)
    expected = expected @ Affine.scale(sx, sy)
    assert subgrid_geotransform(transform, row, col, step=step).almost_equals(expected, precision=1e-9)
    # the first pixel of the subgrid covers the block of `step` pixels from (row, col): its centre
    x, y = pixel_centre_to_map(subgrid_geotransform(transform, row, col, step=step), 0, 0)
    ex, ey = pixel_centre_to_map(transform, row + (sy - 1) / 2, col + (sx - 1) / 2)
    assert (float(x), float(y)) == pytest.approx((float(ex), float(ey)), abs=1e-6)
