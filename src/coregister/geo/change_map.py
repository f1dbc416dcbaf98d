"""``coregister.geo.change``: coregister, then a change map (difference, ratio, normalised difference) on the reference grid."""

from __future__ import annotations

import dataclasses
import math
import os
import time
from typing import Any

import numpy as np
from rasterio.windows import Window

from coregister._stderr import captured_stderr
from coregister.config import ProgressCallback
from coregister.errors import ConfigError
from coregister.geo._raster import read_on_grid
from coregister.geo.coreg import _check_output, _estimate, _mapping, _open_pair, _raster_info
from coregister.geo.options import CoregOptions, Interpolation, Source, coreg_options
from coregister.geo.result import GeoResult
from coregister.geo.warp import BLOCK_PX, _template, sample_block

__all__ = ["KINDS", "change"]

#: ``kind=`` of :func:`change` (the command line's ``--kind``).
KINDS = ("difference", "ratio", "normalized-difference")


def _combine(kind: str, ref: np.ndarray, tgt: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The change value and where it is defined."""
    with np.errstate(divide="ignore", invalid="ignore"):
        if kind == "difference":
            return tgt - ref, np.ones(ref.shape, bool)
        if kind == "ratio":
            return tgt / ref, ref != 0
        total = tgt + ref
        return (tgt - ref) / total, total != 0


#: a pixel has changed when its value lies more than this many robust standard deviations from the median change
CHANGE_SIGMAS = 3.0
_SAMPLE = 1_000_000


class _Statistics:
    """Statistics of the change map, gathered block by block: sums, extremes, and an even sample for the median."""

    def __init__(self, pixels: int) -> None:
        self.count = 0
        self.total = self.total_abs = self.total_sq = 0.0
        self.low, self.high = math.inf, -math.inf
        self.step = max(1, pixels // _SAMPLE)
        self.sample: list[np.ndarray] = []

    def add(self, values: np.ndarray) -> None:
        if values.size == 0:
            return
        v = values.astype(np.float64)
        self.count += v.size
        self.total += float(v.sum())
        self.total_abs += float(np.abs(v).sum())
        self.total_sq += float(v @ v)
        self.low, self.high = min(self.low, float(v.min())), max(self.high, float(v.max()))
        self.sample.append(v[:: self.step])

    def summary(self, path: Any, blocks: list[tuple[int, int, int, int]]) -> dict[str, Any]:
        """Counts, mean, spread, and the fraction changed: beyond :data:`CHANGE_SIGMAS` robust sigmas of the median.

        The robust sigma is 1.4826 times the median absolute deviation (of an
        even sample of at most a million values); the changed pixels are then
        counted exactly, reading the map back block by block.
        """
        import rasterio

        if not self.count:
            return {"valid_pixels": 0, "mean_abs": math.nan, "changed_pixels": 0, "changed_fraction": math.nan}
        mean = self.total / self.count
        sample = np.concatenate(self.sample)
        median = float(np.median(sample))
        sigma = 1.4826 * float(np.median(np.abs(sample - median)))
        threshold = CHANGE_SIGMAS * sigma
        changed = 0
        with rasterio.open(path) as ds:
            for r0, c0, h, w in blocks:
                values = ds.read(1, window=Window(c0, r0, w, h))
                with np.errstate(invalid="ignore"):
                    changed += int((np.abs(values - median) > threshold).sum())  # NaN compares False
        return {
            "valid_pixels": self.count,
            "mean": mean,
            "mean_abs": self.total_abs / self.count,
            "std": math.sqrt(max(0.0, self.total_sq / self.count - mean * mean)),
            "min": self.low,
            "max": self.high,
            "median": median,
            "robust_sigma": sigma,
            "threshold": threshold,
            "changed_pixels": changed,
            "changed_fraction": changed / self.count,
        }


def change(
    reference: Source,
    target: Source,
    *,
    output: str | os.PathLike[str],
    kind: str = "difference",
    progress: ProgressCallback | None = None,
    options: CoregOptions | None = None,
    **keywords: Any,
) -> GeoResult:
    """Coregister the target to the reference, then write a change map on the reference grid.

    The target's band is resampled onto the reference grid through the
    correction found (``mode`` and every other option as in
    :func:`coregister.geo.coregister`) and compared with the reference's
    band, block by block.

    Parameters
    ----------
    reference, target : path or SpatialImage
        Georeferenced rasters (any CRS and resolution).
    output : path
        The change map (float32 GeoTIFF, nodata NaN wherever either input is
        invalid, masked or outside the other).
    kind : {"difference", "ratio", "normalized-difference"}
        ``target - reference``, ``target / reference`` or
        ``(target - reference) / (target + reference)``.
    progress : callable, optional
        ``progress(stage, 0, done, total)``.
    options : CoregOptions, optional
        How the target is coregistered first; keywords given beside it replace its fields.
    **keywords
        Any option of :func:`coregister.geo.coregister` (``mode``, ``window_px``,
        ``nodata``, masks, ``max_windows``...; a field of
        :class:`~coregister.geo.options.CoregOptions`). ``interpolation``
        samples the target for the map (default cubic); ``cog`` writes the map
        as a Cloud-Optimised GeoTIFF; ``resample`` has no effect (the map is
        always on the reference grid).

    Returns
    -------
    GeoResult
        The coregistration's result (with its quality verdict), with
        ``output`` the change map and ``extras["change"]`` its kind and
        statistics: valid pixels, mean, mean absolute value, standard
        deviation, extremes, median, and the pixels that changed (more than
        three robust standard deviations, 1.4826 x MAD, from the median) as
        a count and a fraction of the valid pixels.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> import numpy as np
    >>> import rasterio
    >>> from scipy import ndimage
    >>> from coregister import SpatialImage
    >>> rng = np.random.default_rng(0)
    >>> scene = ndimage.gaussian_filter(rng.normal(size=(200, 200)), 2) * 100 + 1000
    >>> reference = SpatialImage(scene, origin=(500005.0, 4999995.0), spacing=(10.0, 10.0),
    ...                          direction=np.diag([1.0, -1.0]), crs="EPSG:32633")
    >>> later = scene.copy(); later[80:120, 80:120] += 300          # something new in the middle
    >>> later += rng.normal(0.0, 5.0, later.shape)                     # and another day's sensor noise
    >>> target = reference.replace(array=ndimage.shift(later, (0.3, -0.6), order=3, mode="nearest"))
    >>> out = pathlib.Path(tempfile.mkdtemp()) / "change.tif"
    >>> result = change(reference, target, output=out, window_px=64)
    >>> with rasterio.open(out) as ds:
    ...     diff = ds.read(1)
    >>> bool(np.nanmedian(diff[90:110, 90:110]) > 250), bool(abs(np.nanmedian(diff[20:60, 20:60])) < 5)
    (True, True)
    >>> round(result.extras["change"]["changed_fraction"], 2)   # the 40 x 40 square of 200 x 200, and its edges
    0.05
    """
    started = time.perf_counter()
    kind = kind.replace("_", "-").lower()
    if kind not in KINDS:
        raise ConfigError(f"kind={kind!r} is not one of {', '.join(KINDS)}")
    options = coreg_options(options, **keywords)
    out_path = _check_output(output, reference, target)
    assert out_path is not None
    order = (options.interpolation or Interpolation.CUBIC).order
    from coregister.io.raster import raster_writer

    with _open_pair(reference, target, options) as (ref, tgt):
        estimate = _estimate(ref, tgt, options, tie_points=None, progress=progress)
        grid = ref.grid
        mapping = _mapping(grid, tgt, estimate.correct)
        meta: dict[str, Any] = {"tags": {"COREGISTER_CHANGE": kind}, "band_descriptions": (f"{kind} target - reference",)}
        template = _template(grid, np.dtype(np.float32), 1, math.nan, meta)
        blocks = [(r, c, min(BLOCK_PX, grid.height - r), min(BLOCK_PX, grid.width - c))
                  for r in range(0, grid.height, BLOCK_PX) for c in range(0, grid.width, BLOCK_PX)]
        stats = _Statistics(grid.height * grid.width)
        with raster_writer(out_path, template, cog=options.cog, overwrite=True) as dst:
            for index, (r0, c0, h, w) in enumerate(blocks):
                ref_values, ref_ok = read_on_grid(ref, grid.subgrid(r0, c0, h, w))
                rows, cols = np.mgrid[r0 : r0 + h, c0 : c0 + w].astype(np.float64)
                tgt_values, tgt_ok = sample_block(tgt, *mapping(rows, cols), order=order, bands=[tgt.band])
                value, defined = _combine(kind, ref_values, tgt_values[0])
                ok = ref_ok & tgt_ok & defined & np.isfinite(value)
                out = np.full((h, w), np.nan, np.float32)
                out[ok] = value[ok]
                stats.add(out[ok])
                with captured_stderr(f"writing {out_path}"):  # libtiff's own line on a full disk: the error says it
                    dst.write(out, 1, window=Window(c0, r0, w, h))
                if progress is not None:
                    progress("writing", 0, index, float(len(blocks)))
        extras = {"change": {"kind": kind, "output": str(out_path), **stats.summary(out_path, blocks)}}
        result = GeoResult(
            mode=options.mode.value,
            output=out_path,
            reference=_raster_info(ref),
            target=_raster_info(tgt),
            warnings=tuple(estimate.warnings),
            time_s=time.perf_counter() - started,
            config={"kind": kind, **options.to_dict()},
            **estimate.fields,
        )
    return dataclasses.replace(result, extras={**dict(result.extras), **extras})


