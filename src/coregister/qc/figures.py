"""The pictures of the quality-control reports: checkerboards, colour and edge overlays, differences, curves and arrows.

Intensities are brought to 0..1 (each image on its own robust percentiles,
:func:`coregister._pictures.stretch`, or histogram equalisation for pairs
whose radiometry differs); volumes are shown on three orthogonal planes
through the centre, oriented radiologically (patient left on the right of
axial and coronal views, anterior at the top of axial views, superior at the
top of the others: :func:`coregister._pictures.lps_planes`). Each figure
comes back as a base64 PNG for a data URI (:mod:`coregister.qc.html` puts it
on the page).

Pictures are drawn with matplotlib's Agg canvas directly (no pyplot state),
so reports can be written from worker threads.

Examples
--------
>>> import numpy as np
>>> checkerboard(np.zeros((4, 4)), np.ones((4, 4)), tiles=2)[0].tolist()
[0.0, 0.0, 1.0, 1.0]
"""

from __future__ import annotations

import base64
import dataclasses
import io
import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from coregister._pictures import lps_planes, stretch
from coregister.image import SpatialImage
from coregister.transforms import Transform

__all__ = ["checkerboard"]

if TYPE_CHECKING:
    from coregister.pipeline.result import Result
    from coregister.qc.geo_report import TiePoints

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


def _resampled(transform: Transform, moving: SpatialImage, fixed: SpatialImage) -> SpatialImage:
    """``moving`` resampled onto ``fixed``'s grid by ``transform`` to be drawn: float32, NaN outside the moving image."""
    from coregister.resample import apply

    return apply(transform, moving, reference=fixed, output_dtype=np.float32, default_value=float("nan"))


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
    aspects = [1.0, 1.0, 1.0]
    for values in arrays:
        three, aspects = lps_planes(values, image.direction, image.spacing)
        views.append(three)
    planes = [_Plane(name, aspect) for name, aspect in zip(("axial", "coronal", "sagittal"), aspects, strict=True)]
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


def _tie_point_figure(reference: SpatialImage, points: TiePoints, *, pixel_size: float) -> str:
    gray = stretch(_luminance(reference), reference.valid_mask())
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
