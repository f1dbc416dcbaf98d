"""The report page and its pieces: style, escaping, numbers, tables, figures, the page itself and its file.

A report is one self-contained ``.html`` file: pictures as base64 PNG data
URIs, inline CSS, no script, no external link, so it opens offline, can be
mailed and archived. The pieces here serve both reports
(:func:`coregister.qc.report.write_report` and
:func:`coregister.qc.geo_report.write_geo_report`), including the
before/after comparison sections (checkerboard, colour overlay, difference)
that both show.

Examples
--------
>>> _num(0.123456), _num(123456.0), _num(True), _esc("a < b")
('0.1235', '1.235e+05', 'yes', 'a &lt; b')
"""

from __future__ import annotations

import html
import logging
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from coregister._pictures import colour_overlay, edge_overlay, fill_value, stretch
from coregister._pictures import equalise as equalised
from coregister.image import SpatialImage
from coregister.qc.figures import _grid_figure, _luminance, _planes, checkerboard

__all__: list[str] = []

logger = logging.getLogger(__name__)


_CSS = """
body{font-family:system-ui,-apple-system,'Segoe UI',Roboto,sans-serif;margin:0 auto;max-width:1100px;padding:1.2em;
color:#1b1f24;background:#fff}
h1{font-size:1.5em;margin:.2em 0}h2{font-size:1.15em;margin-top:1.6em;border-bottom:1px solid #d0d7de;padding-bottom:.2em}
table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #d0d7de;padding:.25em .6em;text-align:right;
font-variant-numeric:tabular-nums}th{background:#f6f8fa}td.l,th.l{text-align:left}
.badge{display:inline-block;padding:.2em .7em;border-radius:1em;font-weight:600}
.pass{background:#dafbe1;color:#116329}.fail{background:#ffebe9;color:#a40e26}
.flag{color:#a40e26;font-weight:600}.better{color:#116329}.worse{color:#a40e26}
figure{margin:.6em 0}figure img{max-width:100%;height:auto;border:1px solid #eaeef2}
figcaption{font-size:.9em;color:#57606a}ul.warn li{color:#a40e26}code{font-size:.95em}
footer{margin-top:2em;font-size:.85em;color:#57606a}
"""

_HIGHER_IS_BETTER = {"ncc": True, "mi": True, "mse": False, "ssim": True, "tre": False, "dice": True, "rmse": False}


def _esc(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _num(value: Any, digits: int = 4) -> str:
    if isinstance(value, bool | np.bool_):
        return "yes" if value else "no"
    if isinstance(value, int | np.integer):
        return str(int(value))
    if isinstance(value, float | np.floating):
        v = float(value)
        if not math.isfinite(v):
            return str(v)
        if v != 0 and (abs(v) >= 1e5 or abs(v) < 1e-3):
            return f"{v:.{digits}g}"
        return f"{v:.{digits}f}" if abs(v) < 1e4 else f"{v:.1f}"
    return _esc(value)


def _figure_html(png: str | None, caption: str, alt: str) -> str:
    if png is None:
        return ""
    return (
        f'<figure><img alt="{_esc(alt)}" src="data:image/png;base64,{png}">'
        f"<figcaption>{_esc(caption)}</figcaption></figure>"
    )


def _metrics_html(metrics: Mapping[str, Mapping[str, float]]) -> str:
    before = dict(metrics.get("before", {}))
    after = dict(metrics.get("after", {}))
    names = list(dict.fromkeys([*before, *after]))
    if not names:
        return "<p>No metrics were computed.</p>"
    rows = []
    for name in names:
        b, a = before.get(name), after.get(name)
        verdict = ""
        if isinstance(b, int | float) and isinstance(a, int | float) and name in _HIGHER_IS_BETTER and a != b:
            better = (a > b) == _HIGHER_IS_BETTER[name]
            verdict = '<span class="better">better</span>' if better else '<span class="worse">worse</span>'
        direction = {True: "higher is better", False: "lower is better"}.get(_HIGHER_IS_BETTER.get(name, None), "")  # type: ignore[arg-type]
        rows.append(
            f'<tr><td class="l">{_esc(name)}</td><td>{_num(b) if b is not None else "-"}</td>'
            f'<td>{_num(a) if a is not None else "-"}</td><td class="l">{verdict}</td><td class="l">{direction}</td></tr>'
        )
    return (
        '<table id="metrics-table"><tr><th class="l">metric</th><th>before</th><th>after</th>'
        '<th class="l">change</th><th class="l"></th></tr>' + "".join(rows) + "</table>"
    )


def _matrix_html(matrix: np.ndarray) -> str:
    rows = "".join("<tr>" + "".join(f"<td>{_num(v, 6)}</td>" for v in row) + "</tr>" for row in np.asarray(matrix))
    return f'<table class="matrix">{rows}</table>'


def _page(title: str, sections: Sequence[str]) -> str:
    from coregister._version import __version__

    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        '<link rel="icon" href="data:,">'
        f"<title>{_esc(title)}</title><style>{_CSS}</style></head><body>"
        + "".join(sections)
        + f"<footer>Written by coregister {_esc(__version__)}. This file is self-contained: "
        "it needs no network and no other file.</footer></body></html>\n"
    )


def _write(path: str | os.PathLike[str], text: str) -> Path:
    from coregister._files import atomic_path

    path = Path(path)
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    logger.info("report written to %s (%.0f kB)", path, path.stat().st_size / 1000)
    return path


def _units(image: SpatialImage) -> str:
    if image.crs is not None:
        try:
            unit = image.crs.axis_info[0].unit_name
        except (IndexError, AttributeError):
            unit = "map units"
        return unit or "map units"
    photo = image.meta.get("format") in ("png", "jpeg", "bmp", "tiff")
    pixel_grid = np.allclose(image.origin, 0.0) and np.allclose(image.spacing, 1.0) and np.allclose(image.direction, np.eye(image.ndim))
    return "pixels" if photo or (image.ndim == 2 and pixel_grid and not image.meta) else "mm"


# ------------------------------------------------- sections both reports show
def _comparison_sections(
    fixed: SpatialImage, before: SpatialImage, after: SpatialImage, *, equalise: bool = False, edges: bool = False
) -> list[str]:
    """Checkerboard, colour overlay and difference before and after (and, with ``edges``, the edge overlay).

    Each image is windowed on its own robust percentiles (a CT's range does
    not swamp an MR; two scans of one modality look alike where they agree),
    or, with ``equalise``, histogram-equalised over the overlap (dates and
    sensors differ in brightness). Where the moving image has no data the
    overlays show the fixed image in grey.
    """
    f = _luminance(fixed)
    b = _luminance(before)
    a = _luminance(after)
    fixed_valid = (fixed.mask if fixed.mask is not None else np.ones(fixed.shape, bool)) & np.isfinite(f)
    b_valid = np.isfinite(b) & (before.mask if before.mask is not None else True)
    a_valid = np.isfinite(a) & (after.mask if after.mask is not None else True)
    if equalise:
        overlap = fixed_valid & a_valid
        f_n = equalised(f, overlap if overlap.any() else fixed_valid)
        b_n = equalised(b, (b_valid & overlap) if (b_valid & overlap).any() else b_valid)
        a_n = equalised(a, overlap if overlap.any() else a_valid)
    else:
        f_n, b_n, a_n = stretch(f, fixed_valid), stretch(b, b_valid), stretch(a, a_valid)
        for values, valid in ((b, b_valid), (a, a_valid)):  # the moving image's own fill (zeros outside its field
            fill = fill_value(values, valid)                # of view) is not data: grey in the overlays, as outside,
            if fill is not None:                            # and nor are the pixels interpolated from it
                from scipy import ndimage

                valid &= ~ndimage.binary_dilation(values == fill, iterations=2)
    b_n[~b_valid] = 0.0
    a_n[~a_valid] = 0.0
    planes, views = _planes(fixed, [f_n, b_n, a_n, fixed_valid & b_valid, fixed_valid & a_valid,
                                    fixed_valid, b_valid, a_valid])
    fv, bv, av, b_both, a_both, f_ok, b_ok, a_ok = views
    n = len(planes)

    def arrange(make: Any) -> tuple[list[list[np.ndarray]], list[str], list[str], list[float]]:
        """2D: one row (before | after); 3D: rows before/after, one column per plane."""
        before_row = [make(i, fv[i], bv[i], b_both[i], b_ok[i]) for i in range(n)]
        after_row = [make(i, fv[i], av[i], a_both[i], a_ok[i]) for i in range(n)]
        if fixed.ndim == 2:
            return [[before_row[0], after_row[0]]], [""], ["before", "after"], [planes[0].aspect] * 2
        return [before_row, after_row], ["before", "after"], [p.name for p in planes], [p.aspect for p in planes]

    panels, rows, cols, aspects = arrange(lambda i, f, m, both, ok: checkerboard(f, m))
    board = _grid_figure(panels, row_titles=rows, col_titles=cols, aspects=aspects)
    panels, rows, cols, aspects = arrange(lambda i, f, m, both, ok: colour_overlay(f, m, both))
    overlay = _grid_figure(panels, row_titles=rows, col_titles=cols, aspects=aspects, cmap=None, vmin=None, vmax=None)
    panels, rows, cols, aspects = arrange(lambda i, f, m, both, ok: np.where(both, f - m, 0.0))
    difference = _grid_figure(
        panels, row_titles=rows, col_titles=cols, aspects=aspects, cmap="RdBu_r", vmin=-1.0, vmax=1.0,
        colorbar="fixed − moving (normalised)",
    )
    where = "three orthogonal planes through the centre of the fixed image" if fixed.ndim == 3 else "the fixed grid"
    window = ("each histogram-equalised over the overlap" if equalise
              else "each image windowed on its own 1st-99.5th percentiles")
    sections = [
        '<section id="checkerboard"><h2>Checkerboard</h2>'
        + _figure_html(board, f"Alternating tiles of the fixed and the moving image on {where} ({window}); "
                       "edges continue across tiles when aligned.", "checkerboard before and after")
        + "</section>",
        '<section id="overlay"><h2>Colour overlay</h2>'
        + _figure_html(overlay, f"Fixed in magenta, moving in green ({window}): aligned structures are grey or white, "
                       "misalignment shows as colour fringes; grey alone where the moving image has no data.",
                       "colour overlay before and after")
        + "</section>",
    ]
    if edges:
        panels, rows, cols, aspects = arrange(
            lambda i, f, m, both, ok: edge_overlay(f, m, f_ok[i], ok, aspect=planes[i].aspect))
        edge_figure = _grid_figure(panels, row_titles=rows, col_titles=cols, aspects=[1.0] * len(aspects), cmap=None,
                                   vmin=None, vmax=None)  # square pixels already
        sections.append(
            '<section id="edges"><h2>Edge overlay</h2>'
            + _figure_html(edge_figure, "For images of different modalities, whose intensities do not compare: the fixed "
                           "image in grey, its edges in magenta, the moving image's edges in green; edges that "
                           "coincide are white.", "edge overlay before and after")
            + "</section>")
    sections.append(
        '<section id="difference"><h2>Difference</h2>'
        + _figure_html(difference, ("Fixed minus moving, each histogram-equalised over the overlap (dates and sensors differ "
                                    "in brightness)." if equalise else
                                    "Fixed minus moving, each windowed on its own percentiles (meaningful for "
                                    "same-modality pairs)."),
                       "difference before and after")
        + "</section>")
    return sections
