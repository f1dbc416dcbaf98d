"""Matching windows: where to put them in the overlap, and matching one by phase correlation.

The overlap is found on a coarse copy of the reference grid (at most about
a thousand pixels on a side): reference and target validity (nodata, masks,
bad-data masks) are decimated, the target's warped onto that grid, and the
two intersected. A window is a candidate when nearly all of it lies in that
overlap.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from typing import Any

import numpy as np
from scipy import ndimage

from coregister.errors import RegistrationFailed
from coregister.geo._raster import GeoRaster, Grid, coarse_grid, coarse_valid, read_on_grid
from coregister.geo.result import WindowMatch
from coregister.phase import phase_correlate

logger = logging.getLogger(__name__)

__all__ = ["MatchOptions", "Overlap", "consensus", "find_overlap", "match_arrays", "match_strip", "match_window", "place_windows", "shown_beyond"]


def shown_beyond(value: float, limit: float, *, below: bool, digits: int = 2, scale: float = 1.0) -> str:
    """``value * scale`` rounded to ``digits`` decimals, or more where that rounding would meet ``limit * scale``.

    A message that rejects a window for a value below (``below=True``) or
    above a limit must not show a number that contradicts it
    ("reliability 0.30 < 0.3").

    Examples
    --------
    >>> shown_beyond(0.2996, 0.3, below=True), shown_beyond(0.14, 0.3, below=True)
    ('0.2996', '0.14')
    >>> shown_beyond(0.5004, 0.5, below=False), shown_beyond(0.795, 0.8, below=True, digits=0, scale=100)
    ('0.5004', '79.5')
    """
    value, limit = value * scale, limit * scale
    for places in range(digits, digits + 8):
        text = f"{value:.{places}f}"
        if (float(text) < limit) if below else (float(text) > limit):
            return text
    return f"{value:.{digits}f}"


@dataclasses.dataclass(frozen=True)
class MatchOptions:
    """How windows are matched and when a match is trusted.

    Attributes
    ----------
    window_px : int
        Side of the square window in reference pixels.
    min_reliability : float
        Phase-correlation reliability (0-1) below which a window is rejected.
    min_valid_fraction : float
        Fraction of the window that must hold valid data on both sides.
    max_shift_px : float
        Corrections longer than this (reference pixels) are rejected.
    max_iterations : int
        Gauss-Newton iterations of the sub-pixel fit.
    """

    window_px: int = 256
    min_reliability: float = 0.3
    min_valid_fraction: float = 0.8
    max_shift_px: float = 20.0
    max_iterations: int = 12


@dataclasses.dataclass(frozen=True)
class Overlap:
    """Where both rasters hold valid data, on a coarse copy of the reference grid."""

    grid: Grid  # the coarse grid
    valid: np.ndarray  # bool, coarse
    reference_valid: np.ndarray
    target_valid: np.ndarray

    @property
    def fraction_of_reference(self) -> float:
        """Share of the reference's valid area that the target covers."""
        total = int(self.reference_valid.sum())
        return float(self.valid.sum()) / total if total else 0.0


def find_overlap(reference: GeoRaster, target: GeoRaster, grid: Grid, *, max_size: int = 1024) -> Overlap:
    """Intersect the footprints (valid data) of both rasters on a coarse copy of ``grid``."""
    coarse = coarse_grid(grid, max_size)
    ref_ok = coarse_valid(reference, coarse)
    tgt_ok = coarse_valid(target, coarse)
    overlap = ref_ok & tgt_ok
    if not overlap.any():
        raise RegistrationFailed(
            f"the target {target.name!r} does not overlap the reference {reference.name!r} where both hold data; "
            "check the CRS, nodata values and bad-data masks"
        )
    return Overlap(coarse, overlap, ref_ok, tgt_ok)


def place_windows(
    overlap: Overlap, grid: Grid, *, window_px: int, count: int, min_inside: float = 0.97
) -> list[tuple[int, int]]:
    """Centres ``(row, col)`` (reference pixels) of up to ``count`` windows spread over the overlap.

    A lattice over the overlap; points whose window lies (``min_inside``)
    inside it are kept, nearest to the overlap's centroid first (that one is
    where AROSICS would put its single window).
    """
    coarse = overlap.grid
    factor_r = grid.height / coarse.height
    factor_c = grid.width / coarse.width
    size_r = max(1, int(math.ceil(window_px / factor_r)))
    size_c = max(1, int(math.ceil(window_px / factor_c)))
    inside = ndimage.uniform_filter(overlap.valid.astype(np.float32), size=(size_r, size_c), mode="constant")
    ok = inside >= min_inside
    # keep the whole window inside the reference grid
    half_r, half_c = size_r // 2 + 1, size_c // 2 + 1
    ok[:half_r] = ok[-half_r:] = False
    ok[:, :half_c] = ok[:, -half_c:] = False
    if not ok.any():
        best = float(inside.max())
        if best < 0.6:
            return []
        ok = inside >= best - 1e-6
    rows, cols = np.nonzero(ok)
    area = rows.size
    step = max(min(size_r, size_c), int(math.sqrt(area / max(count, 1))))
    centroid = np.array([rows.mean(), cols.mean()])
    picks: list[tuple[int, int]] = []
    r0, c0 = rows.min(), cols.min()
    for lattice_step in (step, max(1, step // 2), max(1, step // 4)):
        lattice = ok.copy()
        lattice[(np.arange(ok.shape[0]) - r0) % lattice_step != 0, :] = False
        lattice[:, (np.arange(ok.shape[1]) - c0) % lattice_step != 0] = False
        lr, lc = np.nonzero(lattice)
        if lr.size >= min(count, area):
            break
    order = np.argsort(np.hypot(lr - centroid[0], lc - centroid[1]))
    # the point of the usable area nearest to the centroid goes first
    first = int(np.argmin(np.hypot(rows - centroid[0], cols - centroid[1])))
    candidates = [(int(rows[first]), int(cols[first]))] + [(int(lr[i]), int(lc[i])) for i in order]
    seen: set[tuple[int, int]] = set()
    for r, c in candidates:
        if (r, c) in seen:
            continue
        seen.add((r, c))
        x, y = coarse.xy(r, c)
        row, col = grid.rowcol(x, y)
        picks.append((int(round(float(row))), int(round(float(col)))))
        if len(picks) >= count:
            break
    return picks


def match_window(
    reference: GeoRaster, target: GeoRaster, grid: Grid, row: int, col: int, options: MatchOptions
) -> WindowMatch:
    """Match the window centred on reference pixel ``(row, col)``: the target is read onto the reference grid.

    Rejections (``used=False`` with a reason): too little valid data, the
    sub-pixel fit did not converge, reliability below the threshold, a shift
    beyond ``max_shift_px``, or a shift that does not raise the local similarity.
    """
    n = options.window_px
    sub = grid.subgrid(row - n // 2, col - n // 2, n, n)
    ref_values, ref_ok = read_on_grid(reference, sub)
    tgt_values, tgt_ok = read_on_grid(target, sub)
    return match_arrays(grid, row, col, ref_values, ref_ok, tgt_values, tgt_ok, options)


def match_strip(
    reference: GeoRaster, target: GeoRaster, grid: Grid, centres: list[tuple[int, int]], options: MatchOptions
) -> list[WindowMatch]:
    """Match windows whose centres share one row: both rasters are read once, as a strip, and sliced.

    Tie-point grids overlap heavily (256 px windows every 100 px): one read
    (and one warp) per row instead of one per window.
    """
    n = options.window_px
    row = centres[0][0]
    c0 = min(c for _, c in centres) - n // 2
    c1 = max(c for _, c in centres) - n // 2 + n
    strip = grid.subgrid(row - n // 2, c0, n, c1 - c0)
    ref_values, ref_ok = read_on_grid(reference, strip)
    tgt_values, tgt_ok = read_on_grid(target, strip)
    out = []
    for r, c in centres:
        sl = (slice(None), slice(c - n // 2 - c0, c - n // 2 - c0 + n))
        out.append(match_arrays(grid, r, c, ref_values[sl], ref_ok[sl], tgt_values[sl], tgt_ok[sl], options))
    return out


def match_arrays(
    grid: Grid,
    row: int,
    col: int,
    ref_values: np.ndarray,
    ref_ok: np.ndarray,
    tgt_values: np.ndarray,
    tgt_ok: np.ndarray,
    options: MatchOptions,
) -> WindowMatch:
    """Match one window from arrays already on the reference grid (see :func:`match_window`)."""
    n = options.window_px
    x, y = grid.xy(row, col)
    base: dict[str, Any] = {"row": int(row), "col": int(col), "x": float(x), "y": float(y), "size_px": int(n)}
    nan2 = (math.nan, math.nan)
    both = float((ref_ok & tgt_ok).mean())
    if both < options.min_valid_fraction:
        return WindowMatch(**base, shift_px=nan2, shift_map=nan2, valid_fraction=both,
                           reason=f"only {shown_beyond(both, options.min_valid_fraction, below=True, digits=0, scale=100)} % "
                                  f"of the window holds valid data on both sides (< {100 * options.min_valid_fraction:g} %)")
    if float(np.std(ref_values[ref_ok])) == 0.0 or float(np.std(tgt_values[tgt_ok])) == 0.0:
        return WindowMatch(**base, shift_px=nan2, shift_map=nan2, valid_fraction=both, reason="featureless (constant)")
    try:
        found = phase_correlate(
            ref_values, tgt_values,
            mask=None if ref_ok.all() else ref_ok,
            target_mask=None if tgt_ok.all() else tgt_ok,
            max_iterations=options.max_iterations,
            skip_below=0.5 * options.min_reliability,
        )
    except RegistrationFailed as exc:
        return WindowMatch(**base, shift_px=nan2, shift_map=nan2, valid_fraction=both, reason=str(exc))
    drow, dcol = found.shift
    dx, dy = grid.linear @ np.array([dcol, drow])
    common: dict[str, Any] = {
        **base,
        "shift_px": (float(dcol), float(drow)),
        "shift_map": (float(dx), float(dy)),
        "reliability": found.reliability,
        "peak_ratio": found.peak_ratio,
        "ncc": found.ncc,
        "ncc_before": found.ncc_before,
        "std_px": found.std_px,
        "valid_fraction": found.valid_fraction,
    }
    reason = ""
    if found.method.startswith("skipped"):
        reason = f"unreliable at the whole-pixel match already (below {0.5 * options.min_reliability:.2f})"
    elif not found.method.startswith("gradient"):
        reason = "the sub-pixel fit failed (the images differ too much here)"
    elif not found.converged:
        reason = f"the sub-pixel fit did not converge in {options.max_iterations} iterations"
    elif found.reliability < options.min_reliability:
        reason = f"reliability {shown_beyond(found.reliability, options.min_reliability, below=True)} < {options.min_reliability:g}"
    elif math.hypot(dcol, drow) > options.max_shift_px:
        shown = shown_beyond(math.hypot(dcol, drow), options.max_shift_px, below=False, digits=1)
        reason = f"shift {shown} px > max_shift_px={options.max_shift_px:g}"
    elif math.isfinite(found.ncc_before) and found.ncc < found.ncc_before:
        reason = f"the shift lowers the similarity (ncc {found.ncc_before:.3f} -> {found.ncc:.3f})"
    return WindowMatch(**common, used=not reason, reason=reason)


def consensus(matches: list[WindowMatch], *, outlier_px: float) -> tuple[np.ndarray, list[WindowMatch]]:
    """Robust global shift (columns, rows) from the accepted matches: the median, after removing outliers.

    Outliers lie further than ``outlier_px`` from the first median; the
    estimate is the median of the rest (real scenes vary by a tenth of a pixel
    or more from place to place: the median is the shift that leaves most of
    the scene best aligned). Returns the shift and the matches with ``used``
    updated (outliers get a reason).
    """
    accepted = [m for m in matches if m.used]
    if not accepted:
        return np.array([math.nan, math.nan]), matches
    shifts = np.array([m.shift_px for m in accepted])
    median = np.median(shifts, axis=0)
    distance = np.hypot(*(shifts - median).T)
    keep = distance <= outlier_px
    estimate = np.median(shifts[keep], axis=0)
    updated = []
    index = 0
    for m in matches:
        if m.used:
            if not keep[index]:
                m = dataclasses.replace(
                    m, used=False,
                    reason=f"outlier: {shown_beyond(distance[index], outlier_px, below=False)} px from the median of the windows",
                )
            index += 1
        updated.append(m)
    return estimate, updated
