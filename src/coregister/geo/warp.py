"""Writing the corrected target: a new geotransform only, or resampled onto the reference grid block by block.

Both writers go through :func:`coregister.io.raster.raster_writer` (atomic,
profile and metadata of the target kept, ``cog=True`` for a Cloud-Optimised
GeoTIFF) and hold one block of the output (plus the target pixels it needs)
in memory at a time.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from affine import Affine
from rasterio.windows import Window
from scipy import ndimage

from coregister._stderr import captured_stderr
from coregister.config import ProgressCallback
from coregister.conventions import geotransform_to_geometry
from coregister.errors import ConfigError
from coregister.geo._raster import GeoRaster, Grid
from coregister.image import SpatialImage

logger = logging.getLogger(__name__)

__all__ = ["output_nodata", "resampled_copy", "sample_block", "shifted_copy"]

#: output block side when resampling (pixels)
BLOCK_PX = 512

# (rows, cols) of reference pixel centres -> fractional (rows, cols) in the target raster, NaN where undefined
Mapping2D = Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]


def _template(grid: Grid, dtype: np.dtype, count: int, nodata: float | None, meta: dict[str, Any]) -> SpatialImage:
    origin, spacing, direction = geotransform_to_geometry(grid.transform)
    shape = (grid.height, grid.width) if count == 1 else (grid.height, grid.width, count)
    meta = dict(meta)
    meta["transform"] = tuple(grid.transform)[:6]
    meta["crs_wkt"] = grid.crs.to_wkt() if grid.crs is not None else None
    meta.pop("source_path", None)
    return SpatialImage(
        np.broadcast_to(np.zeros((), dtype), shape),
        origin=tuple(origin),
        spacing=tuple(spacing),
        direction=direction,
        crs=grid.crs.to_wkt() if grid.crs is not None else None,
        nodata=nodata,
        meta=meta,
    )


def shifted_copy(
    target: GeoRaster, path: str | os.PathLike[str], offset: tuple[float, float], *, cog: bool = False
) -> Path:
    """Copy the target with its geotransform moved by ``offset`` (x, y in its CRS units): pixels bit-identical.

    Every band, compression, tiling, descriptions and tags are kept as they
    are. The nodata declared is the target's as the run used it (declared,
    given, or a fill value detected in its corners), so GDAL tools treat a
    detected fill as no data too; a target whose validity is a GDAL mask
    keeps its declaration (none).
    """
    from coregister.io.raster import raster_writer

    ds = target.dataset
    moved = Affine.translation(*offset) @ ds.transform
    grid = Grid(moved, ds.crs, ds.width, ds.height)
    nodata = target.nodata if target.nodata is not None else ds.nodata
    template = _template(grid, np.dtype(ds.dtypes[0]), ds.count, nodata, target.meta)
    with raster_writer(path, template, cog=cog, overwrite=True) as dst:
        for _, window in ds.block_windows(1):
            block = ds.read(window=window)
            with captured_stderr(f"writing {path}"):  # libtiff's own line on a full disk: the error says it
                dst.write(block, window=window)
    return Path(path)


def _fill_invalid(block: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Invalid pixels take the value of the nearest valid one (no nodata enters the interpolation)."""
    if valid.all() or not valid.any():
        return block
    index = ndimage.distance_transform_edt(~valid, return_distances=False, return_indices=True)
    return block[tuple(index)]


def _cast(values: np.ndarray, dtype: np.dtype) -> np.ndarray:
    if dtype.kind in "iu":
        info = np.iinfo(dtype)
        return np.clip(np.rint(values), info.min, info.max).astype(dtype)
    return values.astype(dtype)


def _avoid(values: np.ndarray, nodata: float) -> np.ndarray:
    """Valid integer values that landed on ``nodata`` (interpolation, clipping) moved one step off it, as GDAL's warper does."""
    if values.dtype.kind not in "iu" or not np.isfinite(nodata):
        return values
    clash = values == nodata
    if clash.any():
        step = 1 if nodata < np.iinfo(values.dtype).max else -1
        values = values.copy()
        values[clash] = int(nodata) + step
    return values


def output_nodata(target: GeoRaster) -> tuple[float, str | None]:
    """Nodata of the resampled output: the target's (declared, given or detected), else 0 or NaN (with a warning).

    Raises
    ------
    ConfigError
        The target's nodata value cannot be stored in its pixel type (a
        ``nodata=`` of -9999 for ``uint16`` pixels, NaN for integers).
    """
    if target.nodata is not None:
        _check_storable(target.nodata, target.dtype, target.name)
        return target.nodata, None
    if target.dtype.kind == "f":
        return math.nan, "the target has no nodata value; NaN marks pixels outside it in the output"
    return 0.0, "the target has no nodata value; 0 marks pixels outside it in the output (set nodata= to choose)"


def _check_storable(value: float, dtype: np.dtype, name: str) -> None:
    if dtype.kind == "f":
        return
    info = np.iinfo(dtype)
    if math.isnan(value) or not (float(value).is_integer() and info.min <= value <= info.max):
        raise ConfigError(
            f"nodata {value:g} cannot be stored in the {dtype} pixels of {name!r} ({info.min}..{info.max}); "
            "give a nodata value in that range (nodata=/target_nodata=, command line: --nodata/--target-nodata)"
        )


def sample_block(
    target: GeoRaster, src_rows: np.ndarray, src_cols: np.ndarray, *, order: int = 3, bands: list[int] | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Sample bands of the target at fractional pixel positions (one output block).

    Only the target pixels the block needs are read. Nodata never enters the
    interpolation (invalid pixels take their nearest valid neighbour's value
    first); an output pixel is valid where its nearest source pixels are.

    Returns
    -------
    values : ndarray (n_bands, h, w) float64
    good : ndarray of bool (h, w)
    """
    ds = target.dataset
    bands = bands or list(range(1, ds.count + 1))
    values = np.zeros((len(bands), *src_rows.shape))
    finite = np.isfinite(src_rows) & np.isfinite(src_cols)
    inside = finite & (src_rows > -0.5) & (src_rows < ds.height - 0.5) & (src_cols > -0.5) & (src_cols < ds.width - 0.5)
    if not inside.any():
        return values, inside
    margin = 3 if order == 3 else 1
    rr0 = max(0, int(math.floor(src_rows[inside].min())) - margin)
    rr1 = min(ds.height, int(math.ceil(src_rows[inside].max())) + margin + 1)
    cc0 = max(0, int(math.floor(src_cols[inside].min())) - margin)
    cc1 = min(ds.width, int(math.ceil(src_cols[inside].max())) + margin + 1)
    window = Window(cc0, rr0, cc1 - cc0, rr1 - rr0)
    source = ds.read(bands, window=window)
    match = target.read_block(window) if target.band not in bands else source[bands.index(target.band)]
    valid = target.valid_block(window, match)
    coords = np.array([np.where(inside, src_rows - rr0, -1.0), np.where(inside, src_cols - cc0, -1.0)])
    # a pixel is valid where the nearest source pixels are (bilinear weight of valid >= 1/2); "nearest", not
    # "constant": scipy's constant mode zeroes points past the last pixel centre, which lost the last row or
    # column to nodata whenever the correction pointed a fraction of a pixel beyond it (``inside`` bounds the rest)
    weight = ndimage.map_coordinates(valid.astype(np.float32), coords, order=1, mode="nearest")
    good = inside & (weight >= 0.5)
    for k in range(len(bands)):
        band = _fill_invalid(source[k].astype(np.float64), valid)
        if order == 3:
            values[k] = ndimage.map_coordinates(
                ndimage.spline_filter(band, order=3, mode="mirror"), coords, order=3, prefilter=False, mode="mirror"
            )
        else:
            values[k] = ndimage.map_coordinates(band, coords, order=order, mode="nearest")
    return values, good


def resampled_copy(
    target: GeoRaster,
    grid: Grid,
    path: str | os.PathLike[str],
    mapping: Mapping2D,
    *,
    order: int = 3,
    nodata: float,
    cog: bool = False,
    progress: ProgressCallback | None = None,
    block_px: int = BLOCK_PX,
) -> Path:
    """Resample every band of the target onto ``grid`` through ``mapping``, one output block at a time.

    Parameters
    ----------
    target : GeoRaster
        The raster to resample.
    grid : Grid
        Output grid (the reference's).
    mapping : callable
        ``(rows, cols)`` of output pixel centres -> fractional ``(rows, cols)``
        in the target (its pixel centres at whole numbers), NaN where undefined.
    order : int
        Spline order: 3 (cubic B-spline), 1 (linear) or 0 (nearest, for classes).
    nodata : float
        Written where the target has no valid data.
    """
    from coregister.io.raster import raster_writer

    ds = target.dataset
    dtype = np.dtype(ds.dtypes[0])
    template = _template(grid, dtype, ds.count, nodata, target.meta)
    blocks = [
        (r, c, min(block_px, grid.height - r), min(block_px, grid.width - c))
        for r in range(0, grid.height, block_px)
        for c in range(0, grid.width, block_px)
    ]
    fill = nodata if not (math.isnan(nodata) and dtype.kind in "iu") else 0
    with raster_writer(path, template, cog=cog, overwrite=True) as dst:
        for index, (r0, c0, h, w) in enumerate(blocks):
            rows, cols = np.mgrid[r0 : r0 + h, c0 : c0 + w].astype(np.float64)
            values, good = sample_block(target, *mapping(rows, cols), order=order)
            out = np.full((ds.count, h, w), fill, dtype=dtype)
            for b in range(ds.count):
                out[b][good] = _avoid(_cast(values[b][good], dtype), fill)
            with captured_stderr(f"writing {path}"):
                dst.write(out, window=Window(c0, r0, w, h))
            if progress is not None:
                progress("writing", 0, index, float(len(blocks)))
    return Path(path)
