"""The quality verdict on a correction found by phase-correlation windows (``shift`` and ``local`` modes).

Those modes run no registration engine, so nothing has judged their answer;
here :func:`coregister.pipeline.verify` judges it exactly as
:func:`coregister.pipeline.register` judges an engine's. Both rasters are
read on one decimated copy of the reference grid over the overlap
(:func:`overlap_grid`, at most :data:`VERIFY_MAX_SIDE_PX` pixels on a side,
memory of that size: :func:`~coregister.geo._raster.read_coarse`), and the
correction becomes a transform of that grid's world frame, the reference
CRS: reference map point -> the map point where the target shows it
(fixed -> moving, ITK's direction): a :class:`~coregister.transforms.Translation`
for a shift, a :class:`~coregister.transforms.BSpline` interpolating the
displacement field of ``local``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
from scipy import ndimage

from coregister.config import Metric
from coregister.conventions import geotransform_to_geometry
from coregister.geo._raster import GeoRaster, Grid, read_coarse
from coregister.geo.windows import Overlap
from coregister.image import SpatialImage
from coregister.pipeline import QualityReport, verify
from coregister.transforms import BSpline, Transform

__all__ = ["VERIFY_MAX_SIDE_PX", "VERIFY_METRIC", "field_transform", "judge_correction", "overlap_grid"]

#: the verification grid has at most this many pixels on a side (about a million pixels)
VERIFY_MAX_SIDE_PX = 1024
#: what the verdict on a window-based correction is judged on: mutual information, as for ``affine``. Measured on
#: the verification grid, before -> after the correction found: the two Sentinel-2 dates (clouds hold their
#: correlation at 0.127, near the check's floor of 0.1), MI 0.241 -> 0.261 (shift) and 0.255 (local), while the
#: correlation got *worse* through the right shift (0.1269 -> 0.1254) and would have failed it; the shift negated
#: and multiplied by 5, MI 0.143 (failed). rgb1 against its EPSG:3857 "NIR" band offset by 0.3 px, MI
#: 1.369 -> 1.365 (-0.3 %: linear interpolation smooths; within the check's 1 % tolerance), 3 px off, MI 0.80 (failed)
VERIFY_METRIC = Metric.MATTES
#: control points of the B-spline standing for a local field, beyond the verification grid on each side
_MARGIN_POINTS = 3

Correction = Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]


def overlap_grid(grid: Grid, overlap: Overlap, *, max_side_px: int) -> tuple[Grid, int]:
    """The block of ``grid`` that bounds the overlap, decimated by a whole factor to at most ``max_side_px`` a side.

    Returns the grid and the decimation factor.
    """
    rows, cols = np.nonzero(overlap.valid)
    coarse = overlap.grid
    x0, y0 = coarse.corner_xy(rows.min(), cols.min())  # the overlap's outer corners
    x1, y1 = coarse.corner_xy(rows.max() + 1, cols.max() + 1)
    r_a, c_a = grid.rowcol([x0, x1], [y0, y1])
    r0, r1 = max(0, int(math.floor(min(r_a)))), min(grid.height, int(math.ceil(max(r_a))) + 1)
    c0, c1 = max(0, int(math.floor(min(c_a)))), min(grid.width, int(math.ceil(max(c_a))) + 1)
    factor = max(1, math.ceil(max(r1 - r0, c1 - c0) / max_side_px))
    return grid.subgrid(r0, c0, math.ceil((r1 - r0) / factor), math.ceil((c1 - c0) / factor), step=factor), factor


def field_transform(grid: Grid, correct: Correction, *, spacing_px: float) -> BSpline:
    """The correction as a cubic B-spline of ``grid``'s world frame: it passes through ``correct`` at its control points.

    Control points lie every ``spacing_px`` pixels of ``grid``, and three
    beyond each side so that the whole grid lies in the spline's support;
    their coefficients are the displacements ``correct(p) - p`` prefiltered
    (:func:`scipy.ndimage.spline_filter`), so the spline interpolates them.

    Examples
    --------
    >>> from affine import Affine
    >>> grid = Grid(Affine(10.0, 0.0, 500000.0, 0.0, -10.0, 5000000.0), None, 60, 40)
    >>> def correct(x, y):  # a field: 5 m west at the west edge, 5 m east at the east edge
    ...     return x + (x - 500200.0) / 40.0, y - 3.0
    >>> spline = field_transform(grid, correct, spacing_px=8)
    >>> points = np.array([[500105.0, 4999805.0], [500295.0, 4999605.0]])
    >>> np.round(spline.transform_points(points) - points, 1).tolist()  # -2.375 and +2.375 m east, 3 m south
    [[-2.4, -3.0], [2.4, -3.0]]
    """
    step = float(spacing_px)
    n_rows = int(math.ceil((grid.height - 1) / step)) + 1 + 2 * _MARGIN_POINTS
    n_cols = int(math.ceil((grid.width - 1) / step)) + 1 + 2 * _MARGIN_POINTS
    rows = (np.arange(n_rows, dtype=float) - _MARGIN_POINTS) * step
    cols = (np.arange(n_cols, dtype=float) - _MARGIN_POINTS) * step
    x, y = grid.xy(*np.meshgrid(rows, cols, indexing="ij"))
    cx, cy = correct(x, y)
    coefficients = np.stack([ndimage.spline_filter(np.asarray(d, dtype=float), order=3, mode="mirror")
                             for d in (cx - x, cy - y)])
    origin, spacing, direction = geotransform_to_geometry(grid.transform)
    first = grid.xy(rows[0], cols[0])
    return BSpline(coefficients, grid_origin=[float(v) for v in first], grid_spacing=spacing * step,
                   grid_direction=direction)


def judge_correction(
    reference: GeoRaster,
    target: GeoRaster,
    grid: Grid,
    overlap: Overlap,
    correction: Transform | Correction,
    *,
    metric: Metric | str = VERIFY_METRIC,
    max_side_px: int = VERIFY_MAX_SIDE_PX,
    field_spacing_px: float = 32.0,
) -> tuple[QualityReport, dict[str, Any]]:
    """The quality verdict on a correction, by :func:`coregister.pipeline.verify` over the overlap.

    Parameters
    ----------
    reference, target : GeoRaster
        The pair as opened for matching.
    grid : Grid
        The reference grid.
    overlap : Overlap
        Where both hold data.
    correction : Transform or callable
        Reference map point -> where the target shows it (reference CRS):
        a transform, or a function of ``(x, y)`` arrays (a local field), made
        a B-spline with control points every ``field_spacing_px`` reference
        pixels (at least every 4 pixels of the verification grid).
    metric : Metric or str
        The measure that must not get worse.
    max_side_px : int
        Largest side of the verification grid.

    Returns
    -------
    quality : QualityReport
    figures : dict
        ``metrics`` (before and after, as :class:`~coregister.pipeline.Result` has them),
        ``grid`` (the verification grid) and ``decimation`` (its factor).
    """
    sub, factor = overlap_grid(grid, overlap, max_side_px=max_side_px)
    fixed_values, fixed_ok = read_coarse(reference, sub)
    moving_values, moving_ok = read_coarse(target, sub)
    origin, spacing, direction = geotransform_to_geometry(sub.transform)
    geometry: dict[str, Any] = {"origin": tuple(origin), "spacing": tuple(spacing), "direction": direction}
    fixed = SpatialImage(fixed_values, mask=fixed_ok, **geometry)
    moving = SpatialImage(moving_values, mask=moving_ok, **geometry)
    if isinstance(correction, Transform):
        transform = correction
    else:
        transform = field_transform(sub, correction, spacing_px=max(4.0, field_spacing_px / factor))
    result = verify(fixed, moving, transform, metric=metric, engine="phase-windows", fixed_mask=fixed_ok,
                    moving_mask=moving_ok)
    figures = {"metrics": {k: dict(v) for k, v in result.metrics.items()}, "grid": sub.to_dict(),
               "decimation": factor}
    return result.quality, figures
