"""Raster access for the geo workflows: grids, open datasets (paths or in-memory images), reads onto another grid.

Everything here reads **windows**: memory is set by the window, never by the
scene. A :class:`GeoRaster` wraps an open rasterio dataset (a file, or an
in-memory GeoTIFF made from a :class:`~coregister.SpatialImage`), the band
used for matching, the nodata value and where it came from (declared by the
file, given by the user, or detected as a constant fill in the corners, as
AROSICS does), and an optional bad-data mask (clouds; nonzero = bad).

Pixel conventions: rasterio windows and geotransforms address pixel
**corners**; :class:`Grid` positions are pixel **centres** (pixel ``(row, col)``'s
centre at whole ``row, col``, as in ITK). Every conversion goes through
:mod:`coregister.conventions`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
from affine import Affine
from rasterio.crs import CRS as RioCRS
from rasterio.enums import MaskFlags, Resampling
from rasterio.io import MemoryFile
from rasterio.windows import Window

from coregister.conventions import (
    map_to_pixel_centre,
    map_to_pixel_corner,
    pixel_centre_to_map,
    pixel_corner_to_map,
    subgrid_geotransform,
)
from coregister.errors import ConfigError, GeometryError, UnreadableInputError
from coregister.image import SpatialImage
from coregister.image._xarray import dataarray_parts, is_dataarray

logger = logging.getLogger(__name__)

__all__ = ["GeoRaster", "Grid", "detect_fill_value", "open_raster", "read_coarse", "read_on_grid"]

#: GDAL block cache for the geo workflows (the default, 5 % of RAM, would let a whole scene sit in the cache)
GDAL_CACHE_MB = 128


@dataclasses.dataclass(frozen=True)
class Grid:
    """A georeferenced pixel grid: geotransform (pixel corners), CRS and size.

    Positions (:meth:`xy`, :meth:`rowcol`) are pixel centres; the arithmetic is
    :mod:`coregister.conventions`'.

    Examples
    --------
    >>> from affine import Affine
    >>> grid = Grid(Affine(10.0, 0.0, 500000.0, 0.0, -10.0, 5000000.0), None, 300, 200)
    >>> [float(v) for v in grid.xy(0, 0)], [float(v) for v in grid.rowcol(500005.0, 4999995.0)]
    ([500005.0, 4999995.0], [0.0, 0.0])
    >>> grid.subgrid(20, 10, 50, 40, step=2).transform
    Affine(20.0, 0.0, 500100.0,
           0.0, -20.0, 4999800.0)
    """

    transform: Affine
    crs: RioCRS | None
    width: int
    height: int

    @classmethod
    def of(cls, dataset: Any) -> Grid:
        """The grid of an open rasterio dataset."""
        return cls(dataset.transform, dataset.crs, int(dataset.width), int(dataset.height))

    @property
    def pixel_size(self) -> tuple[float, float]:
        """Length of one column step and one row step in map units."""
        t = self.transform
        return math.hypot(t.a, t.d), math.hypot(t.b, t.e)

    @property
    def linear(self) -> np.ndarray:
        """2 x 2 matrix taking ``(d_col, d_row)`` in pixels to ``(dx, dy)`` in map units."""
        t = self.transform
        return np.array([[t.a, t.b], [t.d, t.e]])

    def subgrid(self, row: int, col: int, height: int, width: int, *, step: int = 1) -> Grid:
        """The grid of a block of this grid starting at pixel ``(row, col)``, ``height x width`` pixels of ``step x step``."""
        return Grid(subgrid_geotransform(self.transform, row, col, step=step), self.crs, int(width), int(height))

    def xy(self, rows: Any, cols: Any) -> tuple[np.ndarray, np.ndarray]:
        """Map coordinates of pixel centres (fractional rows/columns allowed)."""
        return pixel_centre_to_map(self.transform, rows, cols)

    def rowcol(self, x: Any, y: Any) -> tuple[np.ndarray, np.ndarray]:
        """Fractional (row, col) of pixel centres at map coordinates (inverse of :meth:`xy`)."""
        return map_to_pixel_centre(self.transform, x, y)

    def corner_xy(self, rows: Any, cols: Any) -> tuple[np.ndarray, np.ndarray]:
        """Map coordinates of positions in the corner frame (pixel edges: ``(0, 0)`` is the grid's top-left corner)."""
        return pixel_corner_to_map(self.transform, rows, cols)

    def aligned_offset(self, other: Grid, *, tolerance_px: float = 1e-6) -> tuple[int, int] | None:
        """``(row, col)`` of this grid's first pixel in ``other`` when both share CRS, pixel size and alignment."""
        if (self.crs is None) != (other.crs is None) or (self.crs is not None and self.crs != other.crs):
            return None
        a, b = self.transform, other.transform
        scale = max(abs(a.a), abs(a.b), abs(a.d), abs(a.e))
        if any(abs(u - v) > 1e-9 * scale for u, v in zip((a.a, a.b, a.d, a.e), (b.a, b.b, b.d, b.e), strict=True)):
            return None
        row, col = (float(v) for v in map_to_pixel_corner(b, a.c, a.f))
        if abs(col - round(col)) > tolerance_px or abs(row - round(row)) > tolerance_px:
            return None
        return int(round(row)), int(round(col))

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "transform": list(self.transform)[:6],
            "crs": self.crs.to_string() if self.crs is not None else None,
            "width": self.width,
            "height": self.height,
        }


@dataclasses.dataclass
class GeoRaster:
    """An open raster for the geo workflows (see the module docstring)."""

    dataset: Any
    band: int
    nodata: float | None
    nodata_source: str
    name: str
    meta: dict[str, Any]
    valid_array: np.ndarray | None = None
    bad: GeoRaster | None = None
    path: Path | None = None

    @property
    def grid(self) -> Grid:
        """The raster's own grid."""
        return Grid.of(self.dataset)

    @property
    def count(self) -> int:
        """Number of bands."""
        return int(self.dataset.count)

    @property
    def dtype(self) -> np.dtype:
        """Pixel type of the bands."""
        return np.dtype(self.dataset.dtypes[0])

    @property
    def has_gdal_mask(self) -> bool:
        """Whether GDAL holds a per-dataset mask or alpha band (used when no nodata value applies)."""
        flags = self.dataset.mask_flag_enums[self.band - 1]
        return MaskFlags.per_dataset in flags or MaskFlags.alpha in flags

    def read_block(self, window: Window, *, band: int | None = None) -> np.ndarray:
        """Read a window of one band (must lie inside the raster)."""
        return self.dataset.read(band or self.band, window=window)

    def valid_block(self, window: Window, values: np.ndarray) -> np.ndarray:
        """Valid pixels of a block read from this raster (nodata, GDAL mask, in-memory mask, non-finite)."""
        valid = np.ones(values.shape, dtype=bool)
        if values.dtype.kind == "f":
            valid &= np.isfinite(values)
        if self.nodata is not None:
            valid &= ~np.isnan(values) if math.isnan(self.nodata) else values != self.nodata
        elif self.has_gdal_mask:
            valid &= self.dataset.read_masks(self.band, window=window) > 0
        if self.valid_array is not None:
            r0, c0 = int(window.row_off), int(window.col_off)
            valid &= self.valid_array[r0 : r0 + values.shape[0], c0 : c0 + values.shape[1]]
        return valid


def _corner_blocks(dataset: Any, band: int, size: int) -> list[np.ndarray]:
    h, w = dataset.height, dataset.width
    size = max(1, min(size, h, w))
    offsets = [(0, 0), (0, w - size), (h - size, 0), (h - size, w - size)]
    return [dataset.read(band, window=Window(c, r, size, size)) for r, c in offsets]


def detect_fill_value(dataset: Any, band: int = 1, *, size: int = 3) -> tuple[float | None, str]:
    """Detect a fill value from constant corners (AROSICS's rule) for rasters that declare no nodata.

    Each corner's ``size x size`` block that holds one single value is a
    candidate; when the candidates agree, that value is the fill value.

    Returns
    -------
    value, reason : float or None, str
        ``None`` when no corner is constant or constant corners disagree
        (the reason says which).

    Examples
    --------
    >>> import numpy as np
    >>> from rasterio.io import MemoryFile
    >>> array = np.arange(100, dtype=np.uint16).reshape(10, 10) + 1
    >>> array[:4, :4] = 0            # one filled corner, the others hold data
    >>> from affine import Affine
    >>> profile = dict(driver="GTiff", width=10, height=10, count=1, dtype="uint16", crs="EPSG:32633",
    ...                transform=Affine(10.0, 0.0, 500000.0, 0.0, -10.0, 5000000.0))
    >>> with MemoryFile() as mem, mem.open(**profile) as ds:
    ...     ds.write(array, 1)
    ...     detect_fill_value(ds)
    (0.0, 'constant 0 in 1 of 4 corners')
    """
    values = []
    for block in _corner_blocks(dataset, band, size):
        flat = block.ravel()
        if flat.dtype.kind == "f" and np.isnan(flat).all():
            values.append(math.nan)
        elif flat.min() == flat.max():
            values.append(float(flat[0]))
    if not values:
        return None, "no constant corner"
    finite = [v for v in values if not math.isnan(v)]
    if len(finite) != len(values) and finite:
        return None, f"constant corners disagree ({values})"
    if finite and len(set(finite)) > 1:
        return None, f"constant corners disagree ({sorted(set(finite))})"
    value = finite[0] if finite else math.nan
    return value, f"constant {value:g} in {len(values)} of 4 corners"


def _memory_dataset(image: SpatialImage, stack: contextlib.ExitStack) -> tuple[Any, np.ndarray | None]:
    from coregister.io.raster import raster_profile

    if image.ndim != 2:
        raise GeometryError(f"a geospatial raster is 2D; got a {image.ndim}D image {image!r}")
    if image.crs is None:
        raise GeometryError(
            f"{image!r} has no CRS; the geo workflows need georeferenced rasters "
            "(georeference it first: coregister.geo.georeference, command line: coregister geo georef)"
        )
    profile = raster_profile(image)
    profile.update(driver="GTiff")
    for key in ("compress", "predictor", "photometric"):
        profile.pop(key, None)
    memfile = stack.enter_context(MemoryFile())
    with memfile.open(**profile) as dst:
        data = image.array if image.has_channels else image.array[..., np.newaxis]
        dst.write(np.moveaxis(np.asarray(data), -1, 0))
    dataset = stack.enter_context(memfile.open())
    valid = None if image.mask is None else np.asarray(image.mask, dtype=bool)
    return dataset, valid


@contextlib.contextmanager
def open_raster(
    source: Any,
    *,
    role: str,
    band: int = 1,
    nodata: float | None = None,
    bad_data_mask: Any = None,
) -> Iterator[GeoRaster]:
    """Open a path, SpatialImage or rioxarray DataArray as a :class:`GeoRaster` (nodata declared, given, or detected).

    Parameters
    ----------
    source : path, SpatialImage or xarray.DataArray
        A georeferenced raster. A path is read by GDAL window by window; a
        DataArray (numpy- or dask-backed) window by window too
        (:class:`~coregister.geo._dataarray.DataArrayDataset`); a
        SpatialImage is held in memory as it is.
    role : str
        ``"reference"``/``"target"`` (for messages).
    band : int
        Band used for matching, counted from 1.
    nodata : float, optional
        Overrides the declared or detected nodata value.
    bad_data_mask : path, SpatialImage or DataArray, optional
        Raster of bad data (clouds, shadows): nonzero = do not use. Any grid
        and CRS; it is read with nearest neighbour onto the grids needed.
    """
    with contextlib.ExitStack() as stack:
        # rasterio passes GDAL_CACHEMAX to GDALSetCacheMax: bytes, not megabytes
        stack.enter_context(rasterio.Env(GDAL_CACHEMAX=GDAL_CACHE_MB * 2**20))
        valid_array = None
        path: Path | None = None
        if isinstance(source, SpatialImage):
            dataset, valid_array = _memory_dataset(source, stack)
            meta = dict(source.meta)
            name = str(meta.get("source_path") or f"in-memory {role}")
        elif is_dataarray(source):  # read window by window: a dask-backed array is never computed whole
            from coregister.geo._dataarray import DataArrayDataset

            dataset = DataArrayDataset(source)
            meta = dict(dataarray_parts(source, load=False)["meta"])
            name = str(dataset.name or f"in-memory {role} DataArray")
        else:
            path = Path(source)
            if not path.exists():
                raise UnreadableInputError(f"{role} raster {str(path)!r} does not exist; check the path")
            from coregister.io.raster import open_dataset, read_raster

            dataset = stack.enter_context(open_dataset(path, what=f"{role} raster"))

            meta = dict(read_raster(path, window=((0, 1), (0, 1)), masked=False).meta)
            name = str(path)
        if dataset.crs is None:
            raise GeometryError(
                f"the {role} raster {name!r} has no CRS; the geo workflows need georeferenced rasters "
                "(georeference it first: coregister.geo.georeference, command line: coregister geo georef)"
            )
        if not 1 <= band <= dataset.count:
            raise ConfigError(f"band {band} does not exist in the {role} raster {name!r}: it has bands 1..{dataset.count}")
        if nodata is not None:
            value, how = float(nodata), "given"
        elif dataset.nodatavals[band - 1] is not None:
            value, how = float(dataset.nodatavals[band - 1]), "declared"
        elif valid_array is not None or MaskFlags.per_dataset in dataset.mask_flag_enums[band - 1]:
            value, how = None, "mask"
        else:
            value, reason = detect_fill_value(dataset, band)
            how = f"detected ({reason})" if value is not None else f"none ({reason})"
            if value is not None:
                logger.info("%s raster %s declares no nodata; fill value %g detected: %s", role, name, value, reason)
        bad = None
        if bad_data_mask is not None:
            bad = stack.enter_context(open_raster(bad_data_mask, role=f"{role} bad-data mask", nodata=math.nan))
            bad.nodata = None
        yield GeoRaster(dataset, band, value, how, name, meta, valid_array=valid_array, bad=bad, path=path)


# ----------------------------------------------------------------------------- reading onto a grid
def _source_window(src: GeoRaster, grid: Grid, margin_px: int) -> Window | None:
    """The block of ``src`` that covers ``grid`` (plus a margin), clipped to the raster; None when disjoint."""
    from rasterio.warp import transform_bounds

    corners_x, corners_y = grid.corner_xy([0, 0, grid.height, grid.height], [0, grid.width, 0, grid.width])
    left, bottom, right, top = min(corners_x), min(corners_y), max(corners_x), max(corners_y)
    if src.dataset.crs != grid.crs:
        left, bottom, right, top = transform_bounds(grid.crs, src.dataset.crs, left, bottom, right, top, densify_pts=21)
    rows, cols = map_to_pixel_corner(src.dataset.transform, [left, left, right, right], [bottom, top, bottom, top])
    c0 = max(0, math.floor(min(cols)) - margin_px)
    r0 = max(0, math.floor(min(rows)) - margin_px)
    c1 = min(src.dataset.width, math.ceil(max(cols)) + margin_px)
    r1 = min(src.dataset.height, math.ceil(max(rows)) + margin_px)
    if c1 <= c0 or r1 <= r0:
        return None
    return Window(c0, r0, c1 - c0, r1 - r0)


def read_on_grid(
    src: GeoRaster,
    grid: Grid,
    *,
    band: int | None = None,
    resampling: Resampling = Resampling.cubic,
    dtype: Any = np.float64,
) -> tuple[np.ndarray, np.ndarray]:
    """Values of one band of ``src`` on ``grid`` (any CRS, size, alignment) and where they are valid.

    A grid aligned with the raster's (same CRS and pixel size, whole-pixel
    offset) is read directly: no resampling, values exact. Otherwise the
    covering block is read and warped by GDAL (``rasterio.warp.reproject``)
    with ``resampling``; nodata stays out of the interpolation.

    Returns
    -------
    values : ndarray (grid.height, grid.width)
        Invalid pixels hold 0.
    valid : ndarray of bool
        False outside the raster, on nodata, masked or bad-data pixels.
    """
    from rasterio.warp import reproject

    band = band or src.band
    values = np.zeros((grid.height, grid.width), dtype=dtype)
    valid = np.zeros((grid.height, grid.width), dtype=bool)
    offset = grid.aligned_offset(src.grid)
    if offset is not None:
        r0, c0 = offset
        rr0, cc0 = max(r0, 0), max(c0, 0)
        rr1, cc1 = min(r0 + grid.height, src.dataset.height), min(c0 + grid.width, src.dataset.width)
        if rr1 > rr0 and cc1 > cc0:
            window = Window(cc0, rr0, cc1 - cc0, rr1 - rr0)
            block = src.read_block(window, band=band)
            dst = (slice(rr0 - r0, rr1 - r0), slice(cc0 - c0, cc1 - c0))
            values[dst] = block
            valid[dst] = src.valid_block(window, block)
    else:
        window = _source_window(src, grid, margin_px=4)
        if window is not None:
            block = src.read_block(window, band=band)
            ok = src.valid_block(window, block)
            source = np.where(ok, block, np.nan).astype(np.float64)
            warped = np.full((grid.height, grid.width), np.nan)
            reproject(
                source,
                warped,
                src_transform=subgrid_geotransform(src.dataset.transform, window.row_off, window.col_off),
                src_crs=src.dataset.crs,
                src_nodata=np.nan,
                dst_transform=grid.transform,
                dst_crs=grid.crs,
                dst_nodata=np.nan,
                resampling=resampling,
            )
            valid = np.isfinite(warped)
            values[valid] = warped[valid]
    if src.bad is not None:
        bad_values, bad_known = read_on_grid(src.bad, grid, band=1, resampling=Resampling.nearest)
        valid &= ~(bad_known & (bad_values != 0))
    return values, valid


def coarse_grid(grid: Grid, max_size: int) -> Grid:
    """A grid over the same area with at most ``max_size`` pixels on a side (whole-pixel decimation)."""
    factor = max(1, math.ceil(max(grid.width, grid.height) / max_size))
    width, height = math.ceil(grid.width / factor), math.ceil(grid.height / factor)
    return grid.subgrid(0, 0, height, width, step=factor)


def coarse_valid(src: GeoRaster, grid: Grid) -> np.ndarray:
    """Where ``src`` has valid data on a (coarse) ``grid``: nearest-neighbour decimation, window-free but small.

    The raster is decimated by GDAL (overviews when present) to about the
    grid's resolution, then warped onto the grid; memory stays that of the
    small arrays.
    """
    from rasterio.warp import reproject

    ds = src.dataset
    sx, sy = grid.pixel_size
    px, py = src.grid.pixel_size
    factor = max(1.0, min(sx / px, sy / py))
    height = max(1, int(round(ds.height / factor)))
    width = max(1, int(round(ds.width / factor)))
    block = ds.read(src.band, out_shape=(height, width), resampling=Resampling.nearest)
    ok = np.ones(block.shape, bool)
    if block.dtype.kind == "f":
        ok &= np.isfinite(block)
    if src.nodata is not None:
        ok &= ~np.isnan(block) if math.isnan(src.nodata) else block != src.nodata
    elif src.has_gdal_mask:
        ok &= ds.read_masks(src.band, out_shape=(height, width), resampling=Resampling.nearest) > 0
    if src.valid_array is not None:
        from scipy import ndimage

        zoom = (height / src.valid_array.shape[0], width / src.valid_array.shape[1])
        ok &= ndimage.zoom(src.valid_array.astype(np.uint8), zoom, order=0, grid_mode=True, mode="nearest")[
            :height, :width
        ].astype(bool)
    small = subgrid_geotransform(ds.transform, step=(ds.width / width, ds.height / height))
    out = np.zeros((grid.height, grid.width), dtype=np.uint8)
    reproject(
        ok.astype(np.uint8) + 1,  # 0 stays "outside"
        out,
        src_transform=small,
        src_crs=ds.crs,
        src_nodata=0,
        dst_transform=grid.transform,
        dst_crs=grid.crs,
        dst_nodata=0,
        resampling=Resampling.nearest,
    )
    valid = out == 2
    if src.bad is not None:
        bad = coarse_valid_values(src.bad, grid)
        valid &= ~bad
    return valid


def read_coarse(src: GeoRaster, grid: Grid) -> tuple[np.ndarray, np.ndarray]:
    """Values of ``src``'s band on a coarse ``grid`` and where they are valid, in memory of the grid's size.

    GDAL reads the block of ``src`` that covers the grid decimated to about
    the grid's resolution (block averages; overviews when present), and the
    decimated block is warped onto the grid (bilinear): the scene is never
    held at full resolution. Validity is read the same way (nearest
    neighbour: nodata, GDAL mask, in-memory mask), less one decimated pixel
    along its edges (an average there may mix in fill values), and the
    bad-data mask's pixels are left out.

    Returns
    -------
    values : ndarray (grid.height, grid.width) float32
        Invalid pixels hold 0.
    valid : ndarray of bool
    """
    from rasterio.warp import reproject
    from scipy import ndimage

    ds = src.dataset
    sx, sy = grid.pixel_size
    px, py = src.grid.pixel_size
    factor = max(1.0, min(sx / px, sy / py))
    values = np.zeros((grid.height, grid.width), np.float32)
    window = _source_window(src, grid, margin_px=int(math.ceil(2 * factor)))
    if window is None:
        return values, np.zeros(values.shape, bool)
    shape = (max(1, int(round(window.height / factor))), max(1, int(round(window.width / factor))))
    block = ds.read(src.band, window=window, out_shape=shape, resampling=Resampling.average).astype(np.float32)
    sample = ds.read(src.band, window=window, out_shape=shape, resampling=Resampling.nearest)
    ok = np.isfinite(sample) if sample.dtype.kind == "f" else np.ones(shape, bool)
    if src.nodata is not None:
        ok &= ~np.isnan(sample) if math.isnan(src.nodata) else sample != src.nodata
    elif src.has_gdal_mask:
        ok &= ds.read_masks(src.band, window=window, out_shape=shape, resampling=Resampling.nearest) > 0
    if src.valid_array is not None:
        r0, c0 = int(window.row_off), int(window.col_off)
        part = src.valid_array[r0 : r0 + int(window.height), c0 : c0 + int(window.width)].astype(np.uint8)
        zoom = (shape[0] / part.shape[0], shape[1] / part.shape[1])
        ok &= ndimage.zoom(part, zoom, order=0, grid_mode=True, mode="nearest")[: shape[0], : shape[1]].astype(bool)
    ok = ndimage.binary_erosion(ok, border_value=1)
    warped = np.full(values.shape, np.nan, np.float32)
    reproject(
        np.where(ok, block, np.float32(np.nan)),
        warped,
        src_transform=subgrid_geotransform(ds.transform, window.row_off, window.col_off,
                                           step=(window.width / shape[1], window.height / shape[0])),
        src_crs=ds.crs,
        src_nodata=np.nan,
        dst_transform=grid.transform,
        dst_crs=grid.crs,
        dst_nodata=np.nan,
        resampling=Resampling.bilinear,
    )
    valid = np.isfinite(warped)
    if src.bad is not None:
        valid &= ~coarse_valid_values(src.bad, grid)
    values[valid] = warped[valid]
    return values, valid


def coarse_valid_values(mask_src: GeoRaster, grid: Grid) -> np.ndarray:
    """Pixels of a coarse ``grid`` touched by nonzero values of a bad-data mask raster (max resampling)."""
    from rasterio.warp import reproject

    ds = mask_src.dataset
    sx, sy = grid.pixel_size
    px, py = mask_src.grid.pixel_size
    # read at about 4x the grid's resolution (nearest), then let any bad sample mark its coarse pixel
    factor = max(1.0, min(sx / px, sy / py) / 4.0)
    height = max(1, int(round(ds.height / factor)))
    width = max(1, int(round(ds.width / factor)))
    block = (ds.read(1, out_shape=(height, width), resampling=Resampling.nearest) != 0).astype(np.float32)
    out = np.zeros((grid.height, grid.width), dtype=np.float32)
    reproject(
        block,
        out,
        src_transform=subgrid_geotransform(ds.transform, step=(ds.width / width, ds.height / height)),
        src_crs=ds.crs,
        dst_transform=grid.transform,
        dst_crs=grid.crs,
        resampling=Resampling.max,
    )
    return out > 0
