"""How a geospatial correction shows itself in a notebook: the verdict, the correction, a before/after overlay.

The overlay is a full-resolution square of the reference (:data:`DETAIL_PX`
pixels, at the centre of the windows used), where a correction of a
fraction of a pixel is visible: the target on it before the correction and
through it after (``shift`` and ``affine``: exactly; ``local``: by the mean
correction of the tie points, as the caption says). Each is windowed on
its own robust percentiles over the square: reference magenta, target
green, grey where they agree.
:class:`~coregister.geo.result.GeoResult` draws it by itself when its
inputs were files that still exist; ``result.show(reference, target)``
draws it for rasters held in memory.
"""

from __future__ import annotations

import html
import math
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from affine import Affine

from coregister._pictures import colour_overlay, img_tag, png_base64, stretch

if TYPE_CHECKING:
    from coregister.geo.result import GeoResult

__all__ = ["DETAIL_PX", "GeoView", "geo_result_html"]

#: side of the full-resolution square drawn, in reference pixels
DETAIL_PX = 128
_COLOURS = {"passed": ("#dafbe1", "#116329"), "failed": ("#ffebe9", "#a40e26"), "uncertain": ("#fff8c5", "#7d4e00")}


def _fmt(values: Any, digits: int = 3) -> str:
    return ", ".join(f"{float(v):+.{digits}f}" for v in values)


def geo_result_html(result: GeoResult) -> str:
    """The text part of the view: verdict, mode, correction, windows, quality measure, output."""
    back, fore = _COLOURS.get(result.verdict.value, ("#eaeef2", "#1b1f24"))
    badge = (f'<span style="background:{back};color:{fore};padding:1px 8px;border-radius:8px;font-weight:600">'
             f"{html.escape(result.verdict.value)}</span>")
    rows: list[tuple[str, str]] = []
    if result.shift_px is not None and result.shift_map is not None:
        rows += [("correction (columns, rows)", _fmt(result.shift_px) + " px"),
                 ("correction (x east, y north)", _fmt(result.shift_map) + " map units")]
    if result.transform is not None:
        parts = result.transform.to_dict().get("decomposition") or {}
        if parts:
            rows += [("rotation (degrees)", _fmt(parts["angles_deg"])), ("scales", _fmt(parts["scales"], 5))]
    if result.windows:
        noun = "tie points" if result.mode == "local" else "windows"
        rows.append((f"{noun} used", f"{len(result.used_windows)} of {len(result.windows)}"))
    measures = result.quality.measures
    if {"measure", "before", "after"} <= set(measures):
        rows.append(("quality measure", f"{measures['measure']} {float(measures['before']):.4g} → "
                                        f"{float(measures['after']):.4g}"))
    change = result.extras.get("change")
    if isinstance(change, dict):
        rows.append(("change map", f"{change.get('kind')}: {100 * float(change.get('changed_fraction', math.nan)):.2f} % "
                                   "changed" if "changed_fraction" in change else str(change.get("kind"))))
    if result.output is not None:
        rows.append(("output", str(result.output)))
    rows.append(("time", f"{result.time_s:.2f} s"))
    table = "".join(f'<tr><td style="text-align:left">{html.escape(k)}</td><td style="text-align:left">'
                    f"{html.escape(v)}</td></tr>" for k, v in rows)
    notes = "".join(f"<li>{html.escape(w)}</li>" for w in result.warnings[:4])
    return (f'<div class="coregister-georesult"><div><b>coregister GeoResult</b> ({html.escape(result.mode)}) {badge}'
            f"</div><table>{table}</table>" + (f"<ul>{notes}</ul>" if notes else "") + "</div>")


class GeoView:
    """A geospatial correction with its rasters, for a notebook (made by ``GeoResult.show(reference, target)``)."""

    def __init__(self, result: GeoResult, reference: Any, target: Any) -> None:
        self.result = result
        self.reference = reference
        self.target = target

    def _detail(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, str]:
        """Reference, target before and target after on a full-resolution square of the reference."""
        from coregister.geo._raster import open_raster, read_on_grid

        result = self.result
        band = int(result.reference.get("band", 1) or 1)
        target_band = int(result.target.get("band", 1) or 1)
        with open_raster(self.reference, role="reference", band=band) as ref, \
                open_raster(self.target, role="target", band=target_band) as tgt:
            grid = ref.grid
            used = result.used_windows
            if used:
                row = int(np.median([w.row for w in used]))
                col = int(np.median([w.col for w in used]))
            else:
                row, col = grid.height // 2, grid.width // 2
            side = min(DETAIL_PX, grid.height, grid.width)
            r0 = int(np.clip(row - side // 2, 0, grid.height - side))
            c0 = int(np.clip(col - side // 2, 0, grid.width - side))
            square = grid.subgrid(r0, c0, side, side)
            fixed, fixed_ok = read_on_grid(ref, square)
            before, before_ok = read_on_grid(tgt, square)
            note = ""
            if result.transform is not None:  # reference map point -> target map point
                matrix = np.asarray(result.transform.to_dict()["world_matrix"], float)
                moved = Affine(*matrix[0], *matrix[1]) @ square.transform
            else:
                dx, dy = result.shift_map if result.shift_map is not None else (0.0, 0.0)
                moved = Affine.translation(-dx, -dy) @ square.transform
                note = " (by the tie points' mean correction)" if result.mode == "local" else ""
            after, after_ok = read_on_grid(tgt, type(square)(moved, square.crs, side, side))
        both = fixed_ok & before_ok & after_ok
        use = both if both.any() else None
        f, b, a = (stretch(v, use) for v in (fixed, before, after))
        return (colour_overlay(f, b, fixed_ok & before_ok), colour_overlay(f, a, fixed_ok & after_ok),
                np.asarray(grid.pixel_size), note)

    def _repr_html_(self) -> str:
        before, after, pixel, note = self._detail()
        # one PNG pixel per reference pixel, drawn twice as large: the pictures stay a few tens of kB
        pictures = (img_tag(png_base64(before, max_side=DETAIL_PX), "before", title="before", width=2 * DETAIL_PX)
                    + img_tag(png_base64(after, max_side=DETAIL_PX), "after", title="after", width=2 * DETAIL_PX))
        caption = (f"A {before.shape[1]} × {before.shape[0]} px square of the reference at full resolution "
                   f"({pixel[0]:g} map units per pixel): before | after{note}; reference magenta, target green, "
                   "each on its own percentiles.")
        return (geo_result_html(self.result) + f'<div class="coregister-overlay">{pictures}'
                f'<div style="color:#57606a">{html.escape(caption)}</div></div>')


def files_of(result: GeoResult) -> tuple[Path, Path] | None:
    """The reference and target files a result was computed from, when both still exist."""
    names = [result.reference.get("name"), result.target.get("name")]
    if all(isinstance(n, str | os.PathLike) and Path(n).is_file() for n in names):
        return Path(str(names[0])), Path(str(names[1]))
    return None
