"""The HTML quality-control report: one self-contained file that shows at a glance whether a registration worked.

Everything is inside the one ``.html`` file (pictures as base64 PNG data URIs,
inline CSS, no script, no external link), so it opens offline, can be mailed
and archived. What it shows:

* before/after checkerboards, colour overlays (fixed magenta, moving green:
  aligned structures turn grey/white) and difference images; for volumes on
  three orthogonal planes through the centre of the fixed image, oriented
  radiologically (patient left on the right of axial and coronal views,
  anterior at the top of axial views, superior at the top of the others);
* the optimiser's metric per iteration, one curve per stage and level;
* metrics before and after, with the direction of improvement;
* the transform's world matrix and its decomposition (angles, scales,
  shears), unusual values flagged;
* for deformable transforms, the Jacobian determinant map and the fraction of
  the fixed grid where it is not positive (folding);
* for geospatial runs, the tie-point vectors drawn over the reference image
  (:func:`write_geo_report`).

Pictures are drawn with matplotlib's Agg canvas directly (no pyplot state),
so reports can be written from worker threads.

Examples
--------
>>> import numpy as np, tempfile, pathlib
>>> from coregister import SpatialImage, Result, Rigid, apply
>>> yy, xx = np.mgrid[0:64, 0:64]
>>> blob = np.exp(-((xx - 30) ** 2 + (yy - 34) ** 2) / 90.0) + 0.5 * (xx > 40)
>>> fixed = SpatialImage(blob.astype(np.float32), origin=(0, 0), spacing=(1, 1))
>>> truth = Rigid.from_angles(np.deg2rad(5.0), translation=(2.0, -1.0), center=(32, 32))
>>> moving = apply(truth.inverse(), fixed)
>>> result = Result(transform=truth, metrics={"before": {"ncc": 0.8}, "after": {"ncc": 0.99}}, engine="sitk")
>>> path = write_report(result, fixed, moving, apply(truth, moving, reference=fixed),
...                     pathlib.Path(tempfile.mkdtemp()) / "report.html")
>>> text = path.read_text()
>>> text.count("<img "), "5.000" in text
(3, True)
"""

from __future__ import annotations

import base64
import dataclasses
import html
import io
import logging
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from coregister.image import SpatialImage
from coregister.measures import jacobian_determinant
from coregister.pipeline.quality import MAX_SHEAR, SCALE_RANGE
from coregister.pipeline.result import Result
from coregister.transforms import (
    BSpline,
    Composite,
    Homography,
    LinearTransform,
    Transform,
    Translation,
    linear_members,
)

__all__ = [
    "DETAIL_PX",
    "PREVIEW_MAX_PX",
    "TiePoints",
    "checkerboard",
    "colour_overlay",
    "transform_flags",
    "write_geo_report",
    "write_report",
]

if TYPE_CHECKING:
    from coregister.geo.result import GeoResult

logger = logging.getLogger(__name__)

#: Rotations beyond this are flagged (scales and shears are flagged at the quality check's limits,
#: :data:`coregister.pipeline.quality.SCALE_RANGE` and :data:`~coregister.pipeline.quality.MAX_SHEAR`).
MAX_ANGLE_DEG = 45.0
#: The Jacobian map is computed on the fixed grid, subsampled to at most this many points.
JACOBIAN_MAX_POINTS = 600_000
_DPI = 80


# ---------------------------------------------------------------- image maths
def _luminance(image: SpatialImage, array: np.ndarray | None = None) -> np.ndarray:
    values = np.asarray(image.array if array is None else array, dtype=np.float32)
    if values.ndim == image.ndim + 1:
        if values.shape[-1] in (3, 4):
            values = values[..., :3] @ np.array([0.2125, 0.7154, 0.0721], dtype=np.float32)
        else:
            values = values[..., 0]
    return values


def _normalise(values: np.ndarray, valid: np.ndarray | None = None) -> np.ndarray:
    """Map the 1st..99.5th percentile of the valid, finite values to 0..1 (clipped)."""
    finite = np.isfinite(values)
    use = finite if valid is None else (finite & valid)
    if not use.any():
        return np.zeros(values.shape, dtype=np.float32)
    sample = values[use]
    if sample.size > 1_000_000:  # percentiles of an even subsample: same picture, a fraction of the time
        sample = sample[:: sample.size // 1_000_000]
    low, high = np.percentile(sample, [1.0, 99.5])
    if high <= low:
        high = low + 1.0
    out = np.clip((values - low) / (high - low), 0.0, 1.0)
    out[~finite] = 0.0
    return out.astype(np.float32)


def _equalise(values: np.ndarray, valid: np.ndarray | None = None) -> np.ndarray:
    """Map each value to its quantile among the valid, finite values (0..1): histogram equalisation.

    Two acquisitions with different radiometry (dates, seasons, sensors) then
    look alike where they agree, so overlays and differences show geometry,
    not brightness; a cloud takes the top quantiles of one image only.
    """
    finite = np.isfinite(values)
    use = finite if valid is None else (finite & valid)
    if not use.any():
        return np.zeros(values.shape, dtype=np.float32)
    levels = np.unique(np.quantile(values[use], np.linspace(0.0, 1.0, 257)))
    if levels.size < 2:
        return np.where(finite, 0.5, 0.0).astype(np.float32)
    out = np.interp(values, levels, np.linspace(0.0, 1.0, levels.size))
    out[~finite] = 0.0
    return out.astype(np.float32)


def checkerboard(a: np.ndarray, b: np.ndarray, *, tiles: int = 8) -> np.ndarray:
    """Alternate square tiles of ``a`` and ``b`` (same shape), ``tiles`` along the longest axis.

    Examples
    --------
    >>> checkerboard(np.zeros((4, 4)), np.ones((4, 4)), tiles=2).astype(int).tolist()
    [[0, 0, 1, 1], [0, 0, 1, 1], [1, 1, 0, 0], [1, 1, 0, 0]]
    """
    if a.shape != b.shape:
        raise ValueError(f"checkerboard needs equal shapes, got {a.shape} and {b.shape}")
    side = max(1, int(math.ceil(max(a.shape) / tiles)))
    index = sum(np.indices(a.shape) // side)
    return np.where(index % 2 == 0, a, b)


def colour_overlay(fixed: np.ndarray, moving: np.ndarray) -> np.ndarray:
    """RGB image: the fixed image in magenta (red + blue), the moving image in green (inputs in 0..1).

    Where both are bright the pixel is white, where both are dark it is
    black: a well aligned pair looks grey, misaligned edges show colour
    fringes.

    Examples
    --------
    >>> colour_overlay(np.array([[1.0, 0.0]]), np.array([[0.0, 1.0]])).tolist()
    [[[1.0, 0.0, 1.0], [0.0, 1.0, 0.0]]]
    """
    return np.stack([fixed, moving, fixed], axis=-1)


def _lps_volume(values: np.ndarray, direction: np.ndarray, spacing: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    """Reorder a ``(z, y, x)`` array so that its axes run along world L, P, S (nearest axes); returns (v[L, P, S], spacing)."""
    indexed = np.transpose(values, (2, 1, 0))  # (x, y, z) index order
    direction = np.asarray(direction, dtype=float)
    world_axis = np.argmax(np.abs(direction), axis=0)  # world axis of each index axis
    if len(set(world_axis.tolist())) != 3:
        return indexed, np.asarray(spacing, dtype=float)
    order = [int(np.where(world_axis == w)[0][0]) for w in range(3)]
    out = np.transpose(indexed, order)
    for w, i in enumerate(order):
        if direction[w, i] < 0:
            out = np.flip(out, axis=w)
    return out, np.asarray(spacing, dtype=float)[order]


@dataclasses.dataclass(frozen=True)
class _Plane:
    name: str
    aspect: float  # row spacing / column spacing


def _planes(image: SpatialImage, arrays: Sequence[np.ndarray]) -> tuple[list[_Plane], list[list[np.ndarray]]]:
    """Views to draw: the image itself (2D) or three orthogonal planes through the centre (3D)."""
    if image.ndim == 2:
        sx, sy = image.spacing
        return [_Plane("", sy / sx)], [[a] for a in arrays]
    views: list[list[np.ndarray]] = []
    spacing = np.asarray(image.spacing)
    for values in arrays:
        v, spacing = _lps_volume(values, image.direction, image.spacing)
        cx, cy, cz = (n // 2 for n in v.shape)
        views.append([v[:, :, cz].T, v[:, cy, :].T[::-1], v[cx, :, :].T[::-1]])
    sl, sp, ss = spacing
    planes = [_Plane("axial", sp / sl), _Plane("coronal", ss / sl), _Plane("sagittal", ss / sp)]
    return planes, views


# ------------------------------------------------------------------- pictures
def _figure(width_in: float, height_in: float) -> Any:
    from matplotlib.figure import Figure

    return Figure(figsize=(width_in, height_in), dpi=_DPI, layout="constrained")


def _png(fig: Any) -> str:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=_DPI)
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def _grid_figure(
    panels: Sequence[Sequence[np.ndarray]],
    *,
    row_titles: Sequence[str],
    col_titles: Sequence[str],
    aspects: Sequence[float],
    cmap: str | None = "gray",
    vmin: float | None = 0.0,
    vmax: float | None = 1.0,
    colorbar: str | None = None,
    height_in: float | None = None,
) -> str:
    """``panels[row][col]`` drawn as images; columns share an aspect ratio (``aspects[col]``); rows ``height_in`` high."""
    rows, cols = len(panels), len(panels[0])
    widths = []
    for col in range(cols):
        h, w = panels[0][col].shape[:2]
        widths.append(w / max(h * aspects[col], 1e-9))
    height_in = height_in or (3.0 if rows > 1 else 4.2)
    fig = _figure(min(height_in * sum(widths) + 0.6 * (colorbar is not None), 13.0), height_in * rows)
    axes = fig.subplots(rows, cols, squeeze=False, gridspec_kw={"width_ratios": widths})
    shown = None
    for r in range(rows):
        for c in range(cols):
            ax = axes[r][c]
            shown = ax.imshow(panels[r][c], cmap=cmap, vmin=vmin, vmax=vmax, aspect=aspects[c], interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            title = " ".join(t for t in (row_titles[r], col_titles[c]) if t)
            ax.set_title(title, fontsize=10)
    if colorbar and shown is not None:
        fig.colorbar(shown, ax=axes.ravel().tolist(), shrink=0.8, label=colorbar)
    return _png(fig)


def _convergence_figure(result: Result) -> str | None:
    if not result.history or not any(h.metric_values for h in result.history):
        return None
    fig = _figure(8.0, 3.4)
    ax = fig.subplots()
    start = 0
    for index, level in enumerate(result.history):
        values = np.asarray(level.metric_values, dtype=float)
        if values.size == 0:
            continue
        x = np.arange(start, start + values.size)
        label = f"{level.stage} L{level.level} (shrink {level.shrink_factor:g}, σ {level.smoothing_sigma_mm:g})"
        ax.plot(x, values, lw=1.4, color=f"C{index % 10}", label=label)
        if start:
            ax.axvline(start - 0.5, color="0.8", lw=0.8)
        start += values.size
    ax.set_xlabel("iteration (all levels, in order)")
    ax.set_ylabel("metric (lower is better for ITK metrics)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="best", ncol=1 if len(result.history) <= 6 else 2)
    return _png(fig)


# ---------------------------------------------------------------- transforms
def _linear_part(transform: Transform) -> LinearTransform | None:
    """The linear members of ``transform`` as one map (runs a B-spline separates merged too), None without any."""
    members = linear_members(transform)
    if len(members) > 1:
        members = linear_members(Composite(members))
    return members[0] if members else None


def _deformable(transform: Transform) -> bool:
    if isinstance(transform, BSpline):
        return True
    return isinstance(transform, Composite) and any(isinstance(t, BSpline) for t in transform.transforms)


def transform_flags(transform: Transform) -> list[str]:
    """Plain-language flags on unusual values of a transform's linear part (empty when all looks ordinary).

    Flags scales outside the quality check's ``SCALE_RANGE`` ([0.5, 2]),
    shears above its ``MAX_SHEAR`` (0.3), rotations above 45 degrees and
    reflections.

    Examples
    --------
    >>> from coregister import Affine
    >>> transform_flags(Affine(np.diag([2.5, 1.0])))
    ['scale 2.5 along axis 0 is outside [0.5, 2]']
    >>> transform_flags(Affine(np.eye(2)))
    []
    """
    linear = _linear_part(transform)
    if linear is None:
        return []
    parts = linear.to_dict()["decomposition"]
    flags = []
    for axis, scale in enumerate(parts["scales"]):
        if not SCALE_RANGE[0] <= abs(scale) <= SCALE_RANGE[1]:
            flags.append(f"scale {abs(scale):.3g} along axis {axis} is outside [{SCALE_RANGE[0]:g}, {SCALE_RANGE[1]:g}]")
    for index, shear in enumerate(parts["shears"]):
        if abs(shear) > MAX_SHEAR:
            flags.append(f"shear {shear:.3g} (term {index}) exceeds {MAX_SHEAR:g}")
    for axis, angle in enumerate(parts["angles_deg"]):
        if abs(angle) > MAX_ANGLE_DEG:
            flags.append(f"rotation {angle:.1f} degrees (angle {axis}) exceeds {MAX_ANGLE_DEG:g} degrees")
    if parts["reflection"]:
        flags.append("the matrix includes a reflection (negative determinant)")
    return flags


# -------------------------------------------------------------------- geo
@dataclasses.dataclass(frozen=True)
class TiePoints:
    """Tie points to draw over a reference raster: positions and shifts in map units, and whether each was kept.

    ``x``, ``y``: map coordinates of the windows' centres; ``dx``, ``dy``: the
    correction found there (map units, x east, y north); ``kept``: True for
    points used in the fit; ``reason``: why a point was rejected (optional).
    """

    x: np.ndarray
    y: np.ndarray
    dx: np.ndarray
    dy: np.ndarray
    kept: np.ndarray
    reliability: np.ndarray | None = None
    unmatched: int = 0  #: points without a vector (the match failed), not drawn

    @classmethod
    def from_records(cls, records: Any) -> TiePoints:
        """From a mapping of columns or a sequence of mappings with ``x, y, dx, dy`` (and ``kept``, ``reliability``)."""
        if isinstance(records, TiePoints):
            return records
        if isinstance(records, Mapping):
            columns = {k: np.asarray(v) for k, v in records.items()}
        else:
            rows = list(records)
            columns = {k: np.asarray([r[k] for r in rows]) for k in (rows[0].keys() if rows else ("x", "y", "dx", "dy"))}
        n = len(columns.get("x", []))
        kept = np.asarray(columns.get("kept", np.ones(n, bool))).astype(bool)
        rel = columns.get("reliability")
        x, y = np.asarray(columns["x"], float), np.asarray(columns["y"], float)
        dx, dy = np.asarray(columns["dx"], float), np.asarray(columns["dy"], float)
        finite = np.isfinite(x) & np.isfinite(y) & np.isfinite(dx) & np.isfinite(dy)  # failed matches have no vector
        return cls(
            x=x[finite], y=y[finite], dx=dx[finite], dy=dy[finite], kept=kept[finite],
            reliability=None if rel is None else np.asarray(rel, float)[finite], unmatched=int((~finite).sum()),
        )


def _tie_point_figure(reference: SpatialImage, points: TiePoints, *, pixel_size: float) -> str:
    gray = _normalise(_luminance(reference), reference.valid_mask())
    corners = reference.index_to_world([[-0.5, -0.5], [reference.size[0] - 0.5, reference.size[1] - 0.5]])
    (x0, y0), (x1, y1) = corners
    height = 6.0
    aspect = abs((y1 - y0) / (x1 - x0)) if x1 != x0 else 1.0
    fig = _figure(min(12.0, height / max(aspect, 1e-3) + 1.2), height)
    ax = fig.subplots()
    ax.imshow(gray, cmap="gray", extent=(x0, x1, y1, y0) if y1 < y0 else (x0, x1, y0, y1), vmin=0, vmax=1)
    magnitudes = np.hypot(points.dx, points.dy)
    typical = float(np.median(magnitudes[points.kept])) if points.kept.any() else float(np.median(magnitudes) or 1.0)
    span = max(abs(x1 - x0), abs(y1 - y0))
    scale = (0.04 * span) / max(typical, 1e-12)  # median arrow = 4 % of the scene
    kept = points.kept
    if kept.any():
        ax.quiver(
            points.x[kept], points.y[kept], points.dx[kept] * scale, points.dy[kept] * scale,
            color="#19d219", angles="xy", scale_units="xy", scale=1.0, width=0.003, label=f"kept ({int(kept.sum())})",
        )
    if (~kept).any():  # rejected vectors are unreliable by definition: mark where they are, do not draw them
        ax.scatter(points.x[~kept], points.y[~kept], marker="x", s=14, linewidths=0.8, color="#ff3030",
                   label=f"rejected ({int((~kept).sum())})")
    ax.set_xlim(min(x0, x1), max(x0, x1))
    ax.set_ylim(min(y0, y1), max(y0, y1))
    ax.ticklabel_format(useOffset=False, style="plain")
    ax.set_xlabel("x (map units, east)")
    ax.set_ylabel("y (map units, north)")
    ax.set_title(
        f"tie-point corrections, arrows x{scale:.3g} (median {typical / pixel_size:.3g} px)", fontsize=10
    )
    ax.legend(loc="upper right", fontsize=8)
    return _png(fig)


# ---------------------------------------------------------------------- HTML
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

_HIGHER_IS_BETTER = {"ncc": True, "mi": True, "mse": False, "tre": False, "dice": True, "rmse": False}


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


def _transform_html(transform: Transform, units: str) -> str:
    parts = [f"<p>Type <code>{_esc(type(transform).__name__)}</code>; it maps fixed-space points to moving space "
             f"(ITK's convention). World units: {_esc(units)}.</p>"]
    if isinstance(transform, Homography):
        parts.append("<p>Projective matrix (pixel coordinates):</p>" + _matrix_html(transform.matrix))
        h = np.asarray(transform.matrix, float)
        perspective = h[2, :2] / h[2, 2]
        parts.append(f"<p>Perspective terms: {_num(perspective[0], 6)}, {_num(perspective[1], 6)}</p>")
        return "".join(parts)
    if isinstance(transform, Composite):
        members = ", ".join(type(t).__name__ for t in transform.transforms)
        parts.append(f"<p>Composite of {_esc(members)} (the last is applied first).</p>")
    linear = _linear_part(transform)
    if linear is not None:
        decomposition = linear.to_dict()["decomposition"]
        title = "World matrix" + (" of the linear members" if isinstance(transform, Composite) else "")
        parts.append(f"<p>{title} (homogeneous, fixed → moving):</p>" + _matrix_html(linear.homogeneous))
        offset = linear.offset
        flags = transform_flags(linear)
        cells = [
            ("rotation (degrees)", decomposition["angles_deg"], lambda v: abs(v) > MAX_ANGLE_DEG),
            ("scales", decomposition["scales"], lambda v: not SCALE_RANGE[0] <= abs(v) <= SCALE_RANGE[1]),
            ("shears", decomposition["shears"], lambda v: abs(v) > MAX_SHEAR),
            (f"offset of the world matrix ({units})", offset.tolist(), lambda v: False),
            (f"translation about centre c ({units})", linear.translation.tolist(), lambda v: False),
            (f"centre c ({units})", linear.center.tolist(), lambda v: False),
        ]
        rows = []
        for name, values, unusual in cells:
            tds = "".join(
                f'<td class="{"flag" if unusual(v) else ""}">{_num(v, 4)}</td>' for v in values
            )
            rows.append(f'<tr><td class="l">{_esc(name)}</td>{tds}</tr>')
        reflection = "yes" if decomposition["reflection"] else "no"
        rows.append(f'<tr><td class="l">reflection</td><td class="{"flag" if decomposition["reflection"] else ""}">{reflection}</td></tr>')
        parts.append('<table id="decomposition">' + "".join(rows) + "</table>")
        parts.append("<p>Two ways to write the same map: moving = A · fixed + offset (the world matrix) "
                     "= A · (fixed − c) + c + translation (ITK's parameters about the centre c; result.json's "
                     "<code>translation</code> and <code>center</code>).</p>")
        if flags:
            parts.append('<p class="flag">Unusual: ' + "; ".join(_esc(f) for f in flags) + ".</p>")
        else:
            parts.append('<p class="better">No unusual value in the decomposition.</p>')
    for member in transform.transforms if isinstance(transform, Composite) else (transform,):
        if isinstance(member, BSpline):
            info = member.to_dict()
            parts.append(
                f"<p>B-spline: order {info['order']}, control grid {info['grid_shape']}, "
                f"spacing {[round(v, 3) for v in info['grid_spacing']]} {units}, "
                f"largest coefficient {_num(info['max_coefficient'])} {units}.</p>"
            )
    return "".join(parts)


#: How the report names each metric of :class:`coregister.config.Metric`.
METRIC_NAMES = {"mattes": "Mattes MI", "mi": "joint-histogram MI", "ncc": "normalised correlation",
                "mse": "mean squares", "ecc": "ECC"}


def _final_metric_name(result: Result) -> str:
    """The metric of the last stage that ran (what ``Result.final_metric`` measures), or ``""`` when not recorded."""
    stages = result.config.get("stages") if isinstance(result.config, Mapping) else None
    if not stages:
        return ""
    last = stages[-1]
    name = str(last.get("metric", "") if isinstance(last, Mapping) else getattr(last, "metric", "") or "")
    return METRIC_NAMES.get(name, name)


def _image_summary(image: SpatialImage, name: str) -> str:
    if image.crs is not None:
        where = f"CRS {image.crs.to_string()}"
    elif _units(image) == "pixels":
        where = "pixel grid"
    else:
        where = f"orientation {image.orientation}"
    source = image.meta.get("source_path", "")
    return (
        f'<tr><td class="l">{_esc(name)}</td><td class="l">{_esc(" x ".join(map(str, image.size)))}</td>'
        f'<td class="l">{_esc(", ".join(f"{s:g}" for s in image.spacing))}</td><td class="l">{_esc(where)}</td>'
        f'<td class="l">{_esc(image.dtype)}{" x " + str(image.n_channels) if image.has_channels else ""}</td>'
        f'<td class="l">{_esc(source)}</td></tr>'
    )


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


def _resampled(transform: Transform, moving: SpatialImage, fixed: SpatialImage) -> SpatialImage:
    from coregister.resample import apply

    return apply(transform, moving, reference=fixed, output_dtype=np.float32, default_value=float("nan"))


def _comparison_sections(
    fixed: SpatialImage, before: SpatialImage, after: SpatialImage, *, equalise: bool = False
) -> list[str]:
    fixed_valid = fixed.mask if fixed.mask is not None else np.ones(fixed.shape, bool)
    f = _luminance(fixed)
    b = _luminance(before)
    a = _luminance(after)
    fixed_valid = fixed_valid & np.isfinite(f)
    b_valid = np.isfinite(b) & (before.mask if before.mask is not None else True)
    a_valid = np.isfinite(a) & (after.mask if after.mask is not None else True)
    # each image stretched over the overlap of both (after registration), so that their contrasts compare
    overlap = fixed_valid & a_valid
    stretch = _equalise if equalise else _normalise
    f_n = stretch(f, overlap if overlap.any() else fixed_valid)
    b_n = stretch(b, (b_valid & overlap) if (b_valid & overlap).any() else b_valid)
    a_n = stretch(a, overlap if overlap.any() else a_valid)
    b_n[~b_valid] = 0.0
    a_n[~a_valid] = 0.0
    planes, views = _planes(fixed, [f_n, b_n, a_n])
    fv, bv, av = views
    n = len(planes)

    def arrange(make: Any) -> tuple[list[list[np.ndarray]], list[str], list[str], list[float]]:
        """2D: one row (before | after); 3D: rows before/after, one column per plane."""
        before_row = [make(fv[i], bv[i]) for i in range(n)]
        after_row = [make(fv[i], av[i]) for i in range(n)]
        if fixed.ndim == 2:
            return [[before_row[0], after_row[0]]], [""], ["before", "after"], [planes[0].aspect] * 2
        return [before_row, after_row], ["before", "after"], [p.name for p in planes], [p.aspect for p in planes]

    panels, rows, cols, aspects = arrange(checkerboard)
    board = _grid_figure(panels, row_titles=rows, col_titles=cols, aspects=aspects)
    panels, rows, cols, aspects = arrange(colour_overlay)
    overlay = _grid_figure(panels, row_titles=rows, col_titles=cols, aspects=aspects, cmap=None, vmin=None, vmax=None)
    panels, rows, cols, aspects = arrange(lambda f, m: f - m)
    difference = _grid_figure(
        panels, row_titles=rows, col_titles=cols, aspects=aspects, cmap="RdBu_r", vmin=-1.0, vmax=1.0,
        colorbar="fixed − moving (normalised)",
    )
    where = "three orthogonal planes through the centre of the fixed image" if fixed.ndim == 3 else "the fixed grid"
    return [
        '<section id="checkerboard"><h2>Checkerboard</h2>'
        + _figure_html(board, f"Alternating tiles of the fixed and the moving image on {where}; "
                       "edges continue across tiles when aligned.", "checkerboard before and after")
        + "</section>",
        '<section id="overlay"><h2>Colour overlay</h2>'
        + _figure_html(overlay, "Fixed in magenta, moving in green: aligned structures are grey or white, "
                       "misalignment shows as colour fringes.", "colour overlay before and after")
        + "</section>",
        '<section id="difference"><h2>Difference</h2>'
        + _figure_html(difference, ("Fixed minus moving, each histogram-equalised over the overlap (dates and sensors differ "
                                    "in brightness)." if equalise else
                                    "Normalised fixed minus moving intensities (meaningful for same-modality pairs)."),
                       "difference before and after")
        + "</section>",
    ]


def _jacobian_section(transform: Transform, fixed: SpatialImage) -> str:
    jacobian = jacobian_determinant(transform, fixed, max_points=JACOBIAN_MAX_POINTS)
    det, grid = jacobian.array, jacobian
    folding = float(np.mean(det <= 0))
    planes, views = _planes(grid, [det])
    fig = _grid_figure(
        [views[0]], row_titles=[""], col_titles=[p.name or "Jacobian determinant" for p in planes],
        aspects=[p.aspect for p in planes], cmap="RdBu_r", vmin=0.0, vmax=2.0, colorbar="Jacobian determinant",
    )
    verdict = (
        f'<p class="flag">Folding: the map is not invertible on {100 * folding:.3f} % of the grid '
        f"(Jacobian determinant ≤ 0).</p>"
        if folding > 0
        else '<p class="better">No folding: the Jacobian determinant is positive everywhere.</p>'
    )
    return (
        '<section id="jacobian"><h2>Deformation</h2>'
        f'<table><tr><th class="l">Jacobian determinant</th><th>min</th><th>median</th><th>max</th>'
        f'<th>folding fraction</th></tr><tr><td class="l">on {"x".join(map(str, grid.size))} points</td>'
        f"<td>{_num(det.min())}</td><td>{_num(np.median(det))}</td><td>{_num(det.max())}</td>"
        f'<td id="folding-fraction">{folding:.6f}</td></tr></table>'
        + verdict
        + _figure_html(fig, "Local volume change of the fixed → moving map: 1 = unchanged, < 1 shrinks, > 1 expands.",
                       "Jacobian determinant map")
        + "</section>"
    )


def write_report(
    result: Result,
    fixed: SpatialImage,
    moving: SpatialImage,
    registered: SpatialImage | None,
    path: str | os.PathLike[str],
    *,
    title: str | None = None,
    command: str | None = None,
) -> Path:
    """Write the self-contained HTML quality-control report of a registration.

    Parameters
    ----------
    result : Result
        What :func:`coregister.register` returned. Its transform maps
        fixed-space points to moving space.
    fixed, moving : SpatialImage
        The images that were registered.
    registered : SpatialImage or None
        The moving image resampled onto the fixed grid by ``result.transform``
        (``coregister.apply(result.transform, moving, reference=fixed)``);
        computed here when ``None``.
    path : path
        The ``.html`` file to write (atomically).
    title : str, optional
        Page title (default: the engine and the input names).
    command : str, optional
        The command line that ran (the command-line interface passes it),
        shown in the summary.

    Returns
    -------
    Path
        ``path``.
    """
    if fixed.ndim != moving.ndim:
        from coregister.errors import GeometryError

        raise GeometryError(f"fixed is {fixed.ndim}D and moving {moving.ndim}D; a report needs images of one dimension")
    transform = result.transform
    before = _resampled(Translation(np.zeros(fixed.ndim)), moving, fixed)
    after = _resampled(transform, moving, fixed) if registered is None else registered
    if not after.same_geometry(fixed):
        after = _resampled(Translation(np.zeros(fixed.ndim)), after, fixed)
    names = [os.path.basename(str(img.meta.get("source_path", ""))) for img in (fixed, moving)]
    title = title or (f"coregister: {names[1]} → {names[0]}" if all(names) else "coregister registration report")
    status = (
        '<span class="badge pass">quality check passed</span>'
        if result.passed
        else '<span class="badge fail">quality check FAILED (exit code 3)</span>'
    )
    config_name = result.config.get("name", "") if isinstance(result.config, Mapping) else ""
    metric = _final_metric_name(result)
    final = result.final_metric
    final_text = (f"{metric} {_num(final)}" if metric else _num(final)) if math.isfinite(final) else "-"
    header = (
        f"<header><h1>{_esc(title)}</h1><p>{status}</p>"
        + (f'<p id="command">Command: <code>{_esc(command)}</code></p>' if command else "")
        + '<table id="summary"><tr><th class="l">engine</th><th class="l">preset</th><th class="l">final metric</th>'
        '<th>time (s)</th><th>seed</th><th>threads</th></tr>'
        f'<tr><td class="l">{_esc(result.engine or "-")}</td><td class="l">{_esc(config_name or "-")}</td>'
        f'<td class="l" id="final-metric">{final_text}</td>'
        f"<td>{result.time_s:.3f}</td><td>{result.seed}</td><td>{result.threads}</td></tr></table>"
        '<table id="inputs"><tr><th class="l">image</th><th class="l">size (x, y[, z])</th><th class="l">spacing</th>'
        '<th class="l">space</th><th class="l">type</th><th class="l">file</th></tr>'
        + _image_summary(fixed, "fixed")
        + _image_summary(moving, "moving")
        + "</table></header>"
    )
    warnings = (
        '<section id="warnings"><h2>Warnings</h2><ul class="warn">'
        + "".join(f"<li>{_esc(w)}</li>" for w in result.warnings)
        + "</ul></section>"
        if result.warnings
        else ""
    )
    sections = [header, warnings, '<section id="metrics"><h2>Metrics</h2>' + _metrics_html(result.metrics) + "</section>"]
    sections += _comparison_sections(fixed, before, after)
    convergence = _convergence_figure(result)
    sections.append(
        '<section id="convergence"><h2>Convergence</h2>'
        + (
            _figure_html(convergence, "Optimiser metric per iteration, one curve per stage and pyramid level.", "convergence curves")
            if convergence
            else "<p>This engine recorded no per-iteration history.</p>"
        )
        + "</section>"
    )
    sections.append('<section id="transform"><h2>Transform</h2>' + _transform_html(transform, _units(fixed)) + "</section>")
    if _deformable(transform):
        sections.append(_jacobian_section(transform, fixed))
    extras: dict[str, Any] = {"final_metric": final} if math.isfinite(final) else {}
    extras.update((k, v) for k, v in result.extras.items() if isinstance(v, int | float | str | bool))
    if extras:
        labels = {"final_metric": f"final_metric ({metric}; ITK minimises it)" if metric else "final_metric"}
        sections.append(
            '<section id="extras"><h2>Engine figures</h2><table>'
            + "".join(f'<tr><td class="l">{_esc(labels.get(k, k))}</td><td>{_num(v)}</td></tr>' for k, v in extras.items())
            + "</table></section>"
        )
    return _write(path, _page(title, sections))


#: Rasters given as paths are drawn from a preview of at most this many pixels on the long side.
PREVIEW_MAX_PX = 1200


def _raster_preview(path: str | os.PathLike[str], band: int, max_px: int, *, nodata: float | None = None) -> SpatialImage:
    """Band ``band`` of a raster, decimated so that its long side is at most ``max_px`` (memory bounded)."""
    import rasterio
    from affine import Affine as GeoAffine
    from rasterio.vrt import WarpedVRT

    from coregister.conventions import geotransform_to_geometry
    from coregister.io.raster import open_dataset

    with open_dataset(path) as ds:
        factor = max(1.0, max(ds.width, ds.height) / max_px)
        width, height = max(1, round(ds.width / factor)), max(1, round(ds.height / factor))
        if nodata is not None and ds.nodata is None:
            with WarpedVRT(ds, src_nodata=nodata, nodata=nodata) as vrt:  # declare the fill so averaging skips it
                values = vrt.read(band, out_shape=(height, width), masked=True, resampling=rasterio.enums.Resampling.average)
        else:
            values = ds.read(band, out_shape=(height, width), masked=True, resampling=rasterio.enums.Resampling.average)
        transform = ds.transform @ GeoAffine.scale(ds.width / width, ds.height / height)
        crs = ds.crs.to_wkt() if ds.crs else None
    origin, spacing, direction = geotransform_to_geometry(transform)
    array = np.ma.filled(values.astype(np.float32), np.nan)
    return SpatialImage(array, origin=tuple(origin), spacing=tuple(spacing), direction=direction, crs=crs,
                        meta={"source_path": str(path), "format": "geotiff"})


def _warped_onto(grid: SpatialImage, path: str | os.PathLike[str], band: int, *, nodata: float | None = None) -> SpatialImage:
    """Band ``band`` of the raster at ``path`` reprojected onto ``grid`` (any CRS; GDAL's warper, bilinear)."""
    import rasterio
    from rasterio.vrt import WarpedVRT

    from coregister.conventions import geometry_to_geotransform
    from coregister.io.raster import open_dataset

    height, width = grid.shape
    transform = geometry_to_geotransform(grid.origin, grid.spacing, grid.direction)
    with open_dataset(path) as ds, WarpedVRT(
        ds, crs=grid.crs.to_wkt() if grid.crs else ds.crs, transform=transform, width=width, height=height,
        resampling=rasterio.enums.Resampling.bilinear,
        **({"src_nodata": nodata, "nodata": nodata} if nodata is not None and ds.nodata is None else {}),
    ) as vrt:
        values = vrt.read(band, masked=True)
    array = np.ma.filled(values.astype(np.float32), np.nan)
    return SpatialImage(array, origin=grid.origin, spacing=grid.spacing, direction=grid.direction, crs=grid.crs,
                        meta={"source_path": str(path)})


#: Side (reference pixels) of the full-resolution detail of the geo report.
DETAIL_PX = 256


def _pixel_size(source: SpatialImage | str | os.PathLike[str], band: int) -> tuple[float, float]:
    """The raster's own pixel size (x, y) in map units: the file's, not its preview's."""
    if isinstance(source, SpatialImage):
        return float(source.spacing[0]), float(source.spacing[1])
    from coregister.io.raster import open_dataset

    with open_dataset(source) as ds:
        return float(ds.res[0]), float(ds.res[1])


def _geo_summary_rows(result: GeoResult | None, sources: Mapping[str, Any], command: str | None) -> list[tuple[str, str]]:
    """Mode, command line and the files of the run (the result's names where the images came from memory)."""
    rows: list[tuple[str, str]] = []
    if result is not None:
        rows.append(("mode", result.mode))
    if command:
        rows.append(("command", command))
    names = {
        "reference": result.reference.get("name") if result is not None else None,
        "target": result.target.get("name") if result is not None else None,
        "corrected": str(result.output) if result is not None and result.output is not None else None,
    }
    for role, label in (("reference", "reference"), ("target", "target"), ("corrected", "output")):
        source = sources[role]
        if isinstance(source, SpatialImage):
            name = source.meta.get("source_path") or names[role]
        else:
            name = str(source) if source is not None else names[role]
        if name:
            rows.append((label, str(name)))
    return rows


def _detail_centre(result: GeoResult | None, reference: SpatialImage) -> tuple[float, float]:
    """Map point the detail is centred on: the most reliable used window, else the reference's centre."""
    used = [] if result is None else [w for w in result.windows if w.used]
    if used:
        best = max(used, key=lambda w: w.reliability)
        return best.x, best.y
    centre = reference.world_centre
    return float(centre[0]), float(centre[1])


def _full_resolution_crop(
    source: SpatialImage | str | os.PathLike[str], centre: tuple[float, float], side_px: int, band: int, nodata: float | None
) -> SpatialImage:
    """A ``side_px`` square of the reference at its own resolution around ``centre`` (map units); NaN where no data."""
    if isinstance(source, SpatialImage):
        col, row = source.world_to_index([centre])[0]
        height, width = source.shape[:2]
        r0 = int(np.clip(round(row) - side_px // 2, 0, max(0, height - side_px)))
        c0 = int(np.clip(round(col) - side_px // 2, 0, max(0, width - side_px)))
        values = _luminance(source)[r0 : r0 + side_px, c0 : c0 + side_px].astype(np.float32)
        valid = np.asarray(source.valid_mask()[r0 : r0 + side_px, c0 : c0 + side_px])
        if valid.ndim == 3:
            valid = np.asarray(valid.all(axis=-1))
        values = np.where(valid, values, np.nan).astype(np.float32)
        corner = tuple(source.index_to_world([[c0, r0]])[0])
        return SpatialImage(values, origin=corner, spacing=source.spacing, direction=source.direction, crs=source.crs)
    from affine import Affine as GeoAffine
    from rasterio.windows import Window

    from coregister.conventions import geotransform_to_geometry
    from coregister.io.raster import open_dataset

    with open_dataset(source) as ds:
        col, row = ~ds.transform @ centre
        r0 = int(np.clip(math.floor(row) - side_px // 2, 0, max(0, ds.height - side_px)))
        c0 = int(np.clip(math.floor(col) - side_px // 2, 0, max(0, ds.width - side_px)))
        window = Window(c0, r0, min(side_px, ds.width - c0), min(side_px, ds.height - r0))
        values = ds.read(band, window=window, masked=True).astype(np.float32)
        transform = ds.transform @ GeoAffine.translation(c0, r0)  # rasterio's window_transform warns (affine's `*`)
        crs = ds.crs.to_wkt() if ds.crs else None
    array = np.ma.filled(values, np.nan)
    if nodata is not None and math.isfinite(nodata):
        array[array == nodata] = np.nan
    origin, spacing, direction = geotransform_to_geometry(transform)
    return SpatialImage(array, origin=tuple(origin), spacing=tuple(spacing), direction=direction, crs=crs)


def _detail_section(
    sources: Mapping[str, Any],
    preview: SpatialImage,
    result: GeoResult | None,
    side_px: int,
    *,
    bands: tuple[int, int],
    nodata: tuple[float | None, float | None],
) -> str:
    """Before/after checkerboard and overlay of a full-resolution square of the reference."""
    crop = _full_resolution_crop(sources["reference"], _detail_centre(result, preview), side_px, bands[0], nodata[0])
    identity = Translation(np.zeros(2))

    def onto_crop(source: Any) -> SpatialImage:
        if isinstance(source, SpatialImage):
            return _resampled(identity, source, crop)
        image = _warped_onto(crop, source, bands[1], nodata=nodata[1])
        return image.replace(array=image.array.astype(np.float32))

    before = onto_crop(sources["target"])
    after = onto_crop(sources["corrected"]) if sources["corrected"] is not None else before
    f, b, a = (np.asarray(_luminance(img), np.float32) for img in (crop, before, after))
    overlap = np.isfinite(f) & np.isfinite(a)
    f_n = _equalise(f, overlap if overlap.any() else None)
    b_n = _equalise(b, (overlap & np.isfinite(b)) if (overlap & np.isfinite(b)).any() else None)
    a_n = _equalise(a, overlap if overlap.any() else None)
    for values, image in ((b_n, b), (a_n, a)):
        values[~np.isfinite(image)] = 0.0

    def grey(values: np.ndarray) -> np.ndarray:
        return np.repeat(values[..., np.newaxis], 3, axis=-1)

    panels = [[grey(checkerboard(f_n, b_n, tiles=8)), grey(checkerboard(f_n, a_n, tiles=8))],
              [colour_overlay(f_n, b_n), colour_overlay(f_n, a_n)]]
    aspect = float(crop.spacing[1] / crop.spacing[0])
    figure = _grid_figure(panels, row_titles=["checkerboard", "overlay"], col_titles=["before", "after"],
                          aspects=[aspect, aspect], cmap=None, vmin=None, vmax=None, height_in=5.0)
    height, width = crop.shape[:2]
    x, y = crop.world_centre[:2]
    where = "the most reliable window" if result is not None and any(w.used for w in result.windows) else "the scene's centre"
    return (
        '<section id="detail"><h2>Full-resolution detail</h2>'
        + _figure_html(figure, f"{width} x {height} reference pixels at full resolution around ({x:.1f}, {y:.1f}), "
                       f"{where}: a shift of a pixel or two, invisible in the views above, breaks the "
                       "checkerboard's edges and fringes the overlay (reference magenta, target green) before the "
                       "correction.", "full-resolution detail before and after")
        + "</section>"
    )


def write_geo_report(
    reference: SpatialImage | str | os.PathLike[str],
    target: SpatialImage | str | os.PathLike[str],
    corrected: SpatialImage | str | os.PathLike[str] | None,
    path: str | os.PathLike[str],
    *,
    reference_band: int = 1,
    target_band: int = 1,
    reference_nodata: float | None = None,
    target_nodata: float | None = None,
    tie_points: Any = None,
    shift_px: Sequence[float] | None = None,
    metrics: Mapping[str, Mapping[str, float]] | None = None,
    warnings: Sequence[str] = (),
    details: Mapping[str, Any] | None = None,
    title: str | None = None,
    result: GeoResult | None = None,
    command: str | None = None,
    detail_px: int = DETAIL_PX,
) -> Path:
    """Write the HTML report of a geospatial coregistration: what ran, before/after views and the tie-point vectors.

    Parameters
    ----------
    reference, target : SpatialImage or path
        The reference raster and the target as given (georeferenced). Paths
        are read as previews (long side at most ``PREVIEW_MAX_PX`` pixels,
        the target reprojected onto the reference preview by GDAL), so whole
        scenes in any CRS cost little memory; images must share the
        reference's CRS.
    corrected : SpatialImage, path or None
        The corrected target (any grid); ``None`` shows only the "before" state.
    path : path
        The ``.html`` file (written atomically).
    reference_band, target_band : int
        Bands drawn from paths (counted from 1; the corrected target uses ``target_band``).
    reference_nodata, target_nodata : float, optional
        Values drawn as "no data" (for files that declare none but fill with,
        say, 0; default: the ``result``'s ``reference["nodata"]``/``target["nodata"]``).
    tie_points : TiePoints, mapping of columns or sequence of records, optional
        ``x, y`` (map units), ``dx, dy`` (correction, map units, x east, y
        north), optional ``kept`` and ``reliability``: drawn as arrows over
        the reference, kept in green and rejected in red (default: the
        ``result``'s windows).
    shift_px : (columns, rows), optional
        A global correction in reference pixels, shown in the summary
        (default: the ``result``'s).
    metrics : mapping, optional
        ``{"before": {...}, "after": {...}}``.
    warnings, details : optional
        Listed as they are (warnings default to the ``result``'s).
    title : str, optional
    result : GeoResult, optional
        What :func:`coregister.geo.coregister` returned: the summary then
        shows the mode, the input and output paths, the correction in
        pixels and in map units, the windows used and the time, and the
        full-resolution detail is centred on its most reliable window.
    command : str, optional
        The command line that ran (the command-line interface passes it).
    detail_px : int
        Side of the full-resolution detail (reference pixels) drawn before
        and after, where a shift of a pixel or two is visible (at preview
        scale it is not); 0 leaves it out.

    Returns
    -------
    Path
    """
    identity = Translation(np.zeros(2))
    if result is not None:
        reference_nodata = reference_nodata if reference_nodata is not None else result.reference.get("nodata")
        target_nodata = target_nodata if target_nodata is not None else result.target.get("nodata")
        tie_points = tie_points if tie_points is not None or not result.windows else result.tie_points
        shift_px = shift_px if shift_px is not None else result.shift_px
        warnings = warnings or result.warnings
    sources = {"reference": reference, "target": target, "corrected": corrected}
    pixel_size = _pixel_size(reference, reference_band)
    if not isinstance(reference, SpatialImage):
        reference = _raster_preview(reference, reference_band, PREVIEW_MAX_PX, nodata=reference_nodata)

    def on_reference(source: SpatialImage | str | os.PathLike[str]) -> SpatialImage:
        if not isinstance(source, SpatialImage):
            return _warped_onto(reference, source, target_band, nodata=target_nodata)
        if (source.crs is None) != (reference.crs is None) or (source.crs is not None and source.crs != reference.crs):
            from coregister.errors import GeometryError

            raise GeometryError("an image in another CRS than the reference's: give its path, it is reprojected for the report")
        return _resampled(identity, source, reference)

    before = on_reference(target)
    after = on_reference(corrected) if corrected is not None else before
    title = title or "coregister: geospatial coregistration report"
    units = _units(reference)
    pixel = float(min(pixel_size))
    rows = _geo_summary_rows(result, sources, command)
    rows += [("reference CRS", reference.crs.to_string() if reference.crs is not None else "none"),
             ("reference pixel size (x, y)", f"{pixel_size[0]:g} x {pixel_size[1]:g} {units}")]
    if shift_px is not None:
        rows.append(("correction (columns, rows)", f"{shift_px[0]:+.3f}, {shift_px[1]:+.3f} px"))
    if result is not None and result.shift_map is not None:
        label = "mean correction" if result.mode == "local" else "correction"
        rows.append((f"{label} (x east, y north)", f"{result.shift_map[0]:+.3f}, {result.shift_map[1]:+.3f} {units}"))
    if result is not None and result.windows:
        noun = "tie points" if result.mode == "local" else "windows"
        rows.append((f"{noun} used", f"{len(result.used_windows)} of {len(result.windows)}"))
    if result is not None:
        failures = "; ".join(result.quality.failures)
        rows.append(("quality check", result.verdict.value + (f": {failures}" if failures else "")))
        rows.append(("time", f"{result.time_s:.2f} s"))
    for key, value in (details or {}).items():
        rows.append((str(key), value if isinstance(value, str) else _num(value)))
    header = (
        f"<header><h1>{_esc(title)}</h1>"
        '<table id="summary">' + "".join(f'<tr><td class="l">{_esc(k)}</td><td class="l">{_esc(v)}</td></tr>' for k, v in rows)
        + "</table></header>"
    )
    sections = [header]
    if warnings:
        sections.append('<section id="warnings"><h2>Warnings</h2><ul class="warn">'
                        + "".join(f"<li>{_esc(w)}</li>" for w in warnings) + "</ul></section>")
    if metrics:
        sections.append('<section id="metrics"><h2>Metrics</h2>' + _metrics_html(metrics) + "</section>")
    sections += _comparison_sections(reference, before, after, equalise=True)
    if detail_px > 0:
        sections.append(_detail_section(sources, reference, result, detail_px, bands=(reference_band, target_band),
                                        nodata=(reference_nodata, target_nodata)))
    if tie_points is not None:
        points = TiePoints.from_records(tie_points)
        if len(points.x):
            figure = _tie_point_figure(reference, points, pixel_size=pixel)
            kept = int(points.kept.sum())
            unmatched = f" ({points.unmatched} more had no match)" if points.unmatched else ""
            sections.append(
                '<section id="tie-points"><h2>Tie points</h2>'
                f"<p>{kept} of {len(points.x) + points.unmatched} tie points kept{unmatched}.</p>"
                + _figure_html(figure, "Correction vectors at each tie point (exaggerated; the title gives the factor).",
                               "tie-point vectors")
                + "</section>"
            )
    return _write(path, _page(title, sections))
