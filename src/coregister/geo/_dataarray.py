"""A rioxarray DataArray read as the geo workflows read a raster file: window by window, never whole.

:class:`DataArrayDataset` offers the part of rasterio's dataset interface
that :mod:`coregister.geo._raster` and :mod:`coregister.geo.warp` use
(``read`` with a window and an ``out_shape``, ``read_masks``,
``block_windows``, the grid and nodata attributes). Every read selects the
window from the DataArray and computes only that: a dask-backed array
(``rioxarray.open_rasterio(path, chunks=...)``, or any lazy computation)
loads the chunks the window touches, and decimated reads of the whole scene
(the coarse overlap, previews) go strip by strip, so memory is set by a
strip, not by the scene.

Examples
--------
>>> import numpy as np, xarray as xr, rioxarray
>>> from affine import Affine
>>> from rasterio.windows import Window
>>> values = np.arange(24, dtype=np.float32).reshape(4, 6)
>>> array = xr.DataArray(values, dims=("y", "x")).rio.write_transform(Affine(10.0, 0, 500000.0, 0, -10.0, 5000000.0))
>>> ds = DataArrayDataset(array.rio.write_crs("EPSG:32633"))
>>> ds.width, ds.height, ds.count, ds.crs.to_epsg()
(6, 4, 1, 32633)
>>> ds.read(1, window=Window(2, 1, 3, 2)).tolist()
[[8.0, 9.0, 10.0], [14.0, 15.0, 16.0]]
>>> ds.read(1, out_shape=(2, 3), resampling=Resampling.average).tolist()
[[3.5, 5.5, 7.5], [15.5, 17.5, 19.5]]
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
from rasterio.crs import CRS as RioCRS
from rasterio.enums import MaskFlags, Resampling
from rasterio.windows import Window

from coregister.image._xarray import spatial_dims

__all__ = ["DataArrayDataset"]

#: source pixels read at once by a decimated read (a strip of rows of the scene)
STRIP_PIXELS = 1 << 20


class DataArrayDataset:
    """A 2D or ``(band, y, x)`` rioxarray DataArray behind the rasterio dataset calls of the geo workflows."""

    def __init__(self, array: Any) -> None:
        y_dim, x_dim, band_dim = spatial_dims(array)
        self.array = array if band_dim is not None else array.expand_dims("band")
        self.band_dim = band_dim or "band"
        self.y_dim, self.x_dim = y_dim, x_dim
        self.count, self.height, self.width = (int(n) for n in self.array.shape)
        self.transform = array.rio.transform(recalc=False)
        crs = array.rio.crs
        self.crs = None if crs is None else RioCRS.from_user_input(crs)
        nodata = array.rio.nodata
        if nodata is None and array.rio.encoded_nodata is not None and np.dtype(array.dtype).kind == "f":
            nodata = math.nan
        self.nodata = None if nodata is None else float(nodata)
        self.nodatavals = (self.nodata,) * self.count
        self.dtypes = (np.dtype(array.dtype).name,) * self.count
        flag = [MaskFlags.nodata] if self.nodata is not None else [MaskFlags.all_valid]
        self.mask_flag_enums = tuple(list(flag) for _ in range(self.count))
        self.name = str(array.name) if array.name is not None else None

    # ----------------------------------------------------------------- windows
    def _indexes(self, indexes: int | Sequence[int] | None) -> tuple[list[int], bool]:
        if indexes is None:
            return list(range(1, self.count + 1)), False
        if isinstance(indexes, int | np.integer):
            return [int(indexes)], True
        return [int(i) for i in indexes], False

    def _block(self, bands: list[int], rows: slice, cols: slice) -> np.ndarray:
        """``(bands, rows, cols)`` values: only this block is computed."""
        part = self.array.isel({self.band_dim: [b - 1 for b in bands], self.y_dim: rows, self.x_dim: cols})
        return np.asarray(part.data)

    @staticmethod
    def _slices(window: Window | None, height: int, width: int) -> tuple[slice, slice]:
        if window is None:
            return slice(0, height), slice(0, width)
        r0, c0 = int(window.row_off), int(window.col_off)
        return slice(r0, r0 + int(window.height)), slice(c0, c0 + int(window.width))

    def read(
        self,
        indexes: int | Sequence[int] | None = None,
        *,
        window: Window | None = None,
        out_shape: Sequence[int] | None = None,
        resampling: Resampling = Resampling.nearest,
    ) -> np.ndarray:
        """rasterio's ``read``: one band (2D) or several (3D), a window, optionally decimated to ``out_shape``."""
        bands, single = self._indexes(indexes)
        rows, cols = self._slices(window, self.height, self.width)
        if out_shape is None:
            out = self._block(bands, rows, cols)
        else:
            shape = (int(out_shape[-2]), int(out_shape[-1]))
            out = self._decimated(bands, rows, cols, shape, resampling)
        return out[0] if single else out

    def read_masks(
        self,
        indexes: int | Sequence[int] | None = None,
        *,
        window: Window | None = None,
        out_shape: Sequence[int] | None = None,
        resampling: Resampling = Resampling.nearest,
    ) -> np.ndarray:
        """rasterio's ``read_masks``: 255 where a pixel holds data (not nodata, finite), 0 elsewhere."""
        values = self.read(indexes, window=window, out_shape=out_shape, resampling=Resampling.nearest)
        return np.where(self._valid(values), np.uint8(255), np.uint8(0))

    def _valid(self, values: np.ndarray) -> np.ndarray:
        valid = np.isfinite(values) if values.dtype.kind == "f" else np.ones(values.shape, bool)
        if self.nodata is not None and not math.isnan(self.nodata):
            valid &= values != self.nodata
        return valid

    def block_windows(self, bidx: int = 0) -> Iterator[tuple[tuple[int, int], Window]]:
        """The array's chunks as windows (512-pixel blocks for a numpy-backed array)."""
        chunks = getattr(self.array.data, "chunks", None)
        row_sizes = chunks[1] if chunks else _even(self.height, 512)
        col_sizes = chunks[2] if chunks else _even(self.width, 512)
        r0 = 0
        for i, h in enumerate(row_sizes):
            c0 = 0
            for j, w in enumerate(col_sizes):
                yield (i, j), Window(c0, r0, int(w), int(h))
                c0 += int(w)
            r0 += int(h)

    # --------------------------------------------------------------- decimation
    def _decimated(
        self, bands: list[int], rows: slice, cols: slice, shape: tuple[int, int], resampling: Resampling
    ) -> np.ndarray:
        """The block ``rows x cols`` decimated to ``shape`` (nearest: the pixel under each centre; average: the bin's
        valid mean), read in strips of whole output rows."""
        src_h, src_w = rows.stop - rows.start, cols.stop - cols.start
        out_h, out_w = shape
        dtype = np.dtype(self.dtypes[0]) if resampling is Resampling.nearest else np.dtype(np.float64)
        out = np.zeros((len(bands), out_h, out_w), dtype)
        row_edges = np.floor(np.arange(out_h + 1) * src_h / out_h).astype(int)
        col_edges = np.floor(np.arange(out_w + 1) * src_w / out_w).astype(int)
        centre_rows = np.minimum(((np.arange(out_h) + 0.5) * src_h / out_h).astype(int), src_h - 1)
        centre_cols = np.minimum(((np.arange(out_w) + 0.5) * src_w / out_w).astype(int), src_w - 1)
        rows_per_strip = max(1, STRIP_PIXELS // max(1, src_w * len(bands)))
        i = 0
        while i < out_h:
            j = i + 1  # whole output rows whose source rows fit in one strip
            while j < out_h and row_edges[j + 1] - row_edges[i] <= rows_per_strip:
                j += 1
            if resampling is Resampling.nearest:
                wanted = centre_rows[i:j]
                block = self._block(bands, slice(rows.start + int(wanted.min()), rows.start + int(wanted.max()) + 1), cols)
                out[:, i:j] = block[:, wanted - wanted.min()][:, :, centre_cols]
            else:
                lo, hi = int(row_edges[i]), max(int(row_edges[j]), int(row_edges[i]) + 1)
                block = self._block(bands, slice(rows.start + lo, rows.start + hi), cols).astype(np.float64)
                valid = self._valid(block)
                block[~valid] = 0.0
                r_starts = np.clip(row_edges[i:j] - lo, 0, block.shape[1] - 1)
                c_starts = np.clip(col_edges[:-1], 0, block.shape[2] - 1)
                sums = np.add.reduceat(np.add.reduceat(block, r_starts, axis=1), c_starts, axis=2)
                counts = np.add.reduceat(np.add.reduceat(valid.astype(np.float64), r_starts, axis=1), c_starts, axis=2)
                fill = self.nodata if self.nodata is not None else 0.0
                with np.errstate(invalid="ignore", divide="ignore"):
                    out[:, i:j] = np.where(counts > 0, sums / np.maximum(counts, 1), fill)
            i = j
        return out


def _even(total: int, size: int) -> tuple[int, ...]:
    return tuple(min(size, total - start) for start in range(0, total, size))
