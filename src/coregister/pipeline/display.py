"""How a registration shows itself in a notebook: the verdict, the key metrics, the transform, an overlay.

:class:`~coregister.pipeline.result.Result` holds no image (it stays small
and serialisable), so its own view is text: verdict, metrics before and
after, the transform's angles, scales and translation. ``result.show(fixed,
moving)`` gives a :class:`RegistrationView` that draws the pair before and
after as well: a colour overlay (each image on its own robust percentiles),
or an edge overlay for images of different modalities. Pictures are small
base64 PNGs: the notebook stays light.

Examples
--------
>>> import numpy as np
>>> from coregister import Result, Translation
>>> res = Result(Translation([1.0, 2.0]), {"before": {"ncc": 0.5}, "after": {"ncc": 0.9}}, engine="sitk")
>>> text = res._repr_html_()
>>> "passed" in text and "0.9000" in text and "<img" not in text
True
"""

from __future__ import annotations

import html
import math
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

from coregister._pictures import colour_overlay, edge_overlay, fill_value, img_tag, lps_planes, png_base64, stretch
from coregister.transforms import Composite, Homography, Transform, Translation, linear_members

if TYPE_CHECKING:
    from coregister.pipeline.result import Result

__all__ = ["RegistrationView", "result_html"]

_COLOURS = {"passed": ("#dafbe1", "#116329"), "failed": ("#ffebe9", "#a40e26"), "uncertain": ("#fff8c5", "#7d4e00")}
#: side of each overlay picture, in screen pixels
OVERLAY_PX = 200
_MEASURES = ("ncc", "mi", "mse", "ssim", "overlap")


def _num(value: Any) -> str:
    if not isinstance(value, int | float) or isinstance(value, bool):
        return html.escape(str(value))
    v = float(value)
    if not math.isfinite(v):
        return str(v)
    return f"{v:.4g}" if v != 0 and (abs(v) >= 1e4 or abs(v) < 1e-3) else f"{v:.4f}"


def _badge(verdict: str) -> str:
    back, fore = _COLOURS.get(verdict, ("#eaeef2", "#1b1f24"))
    return (f'<span style="background:{back};color:{fore};padding:1px 8px;border-radius:8px;font-weight:600">'
            f"{html.escape(verdict)}</span>")


def _metrics_rows(metrics: Mapping[str, Mapping[str, float]]) -> str:
    before, after = dict(metrics.get("before", {})), dict(metrics.get("after", {}))
    names = [n for n in _MEASURES if n in before or n in after] + sorted(
        n for n in {*before, *after} if n not in _MEASURES)
    if not names:
        return ""
    rows = "".join(f"<tr><td>{html.escape(n)}</td><td>{_num(before.get(n, '-'))}</td><td>{_num(after.get(n, '-'))}</td></tr>"
                   for n in names)
    return f"<table><tr><th>metric</th><th>before</th><th>after</th></tr>{rows}</table>"


def _transform_rows(transform: Transform) -> str:
    """Type, and for the linear part: rotation angles (degrees), scales, shears and translation."""
    kind = type(transform).__name__
    if isinstance(transform, Composite):
        kind += " of " + ", ".join(type(t).__name__ for t in transform.transforms)
    rows = [("transform", kind + " (fixed → moving points)")]
    if not isinstance(transform, Homography):
        members = linear_members(transform)
        if len(members) > 1:
            members = linear_members(Composite(members))
        if members:
            linear = members[0]
            parts = linear.to_dict()["decomposition"]
            rows += [("rotation (degrees)", ", ".join(f"{v:.3f}" for v in parts["angles_deg"])),
                     ("scales", ", ".join(f"{v:.4f}" for v in parts["scales"])),
                     ("shears", ", ".join(f"{v:.4f}" for v in parts["shears"])),
                     ("translation", ", ".join(f"{v:.3f}" for v in linear.translation))]
    else:
        rows.append(("matrix", "; ".join(", ".join(f"{v:.4g}" for v in row) for row in np.asarray(transform.matrix))))
    return "".join(f'<tr><td style="text-align:left">{html.escape(k)}</td><td style="text-align:left">'
                   f"{html.escape(v)}</td></tr>" for k, v in rows)


def result_html(result: Result) -> str:
    """The notebook view of a :class:`~coregister.pipeline.result.Result` (text and tables, no picture)."""
    head = (f"<b>coregister Result</b> {_badge(result.verdict.value)} engine <code>{html.escape(result.engine or '-')}"
            f"</code>, {result.time_s:.2f} s")
    reasons = "".join(f"<li>{html.escape(w)}</li>" for w in result.warnings[:5])
    more = f"<li>… {len(result.warnings) - 5} more</li>" if len(result.warnings) > 5 else ""
    return (f'<div class="coregister-result"><div>{head}</div>'
            f'<div style="display:flex;flex-wrap:wrap;gap:12px;align-items:flex-start">{_metrics_rows(result.metrics)}'
            f"<table>{_transform_rows(result.transform)}</table></div>"
            + (f"<ul>{reasons}{more}</ul>" if reasons else "") + "</div>")


class RegistrationView:
    """A registration with its images, for a notebook: :meth:`_repr_html_` draws the pair before and after.

    Made by ``Result.show(fixed, moving)``; holds references to the images
    (no copy) until drawn.
    """

    def __init__(self, result: Result, fixed: Any, moving: Any, *, edges: bool | None = None) -> None:
        from coregister.image.kinds import as_spatial_image

        self.result = result
        self.fixed = as_spatial_image(fixed, name="fixed")
        self.moving = as_spatial_image(moving, name="moving")
        stages = result.config.get("stages") if isinstance(result.config, Mapping) else None
        metric = str(stages[-1].get("metric", "")) if stages and isinstance(stages[-1], Mapping) else ""
        self.edges = metric in ("mattes", "mi") if edges is None else bool(edges)

    def _views(self, transform: Transform) -> list[tuple[str, np.ndarray, np.ndarray, np.ndarray, np.ndarray, float]]:
        """``(plane, fixed 0..1, moving 0..1, fixed valid, moving valid, aspect)`` of the pair through ``transform``."""
        from coregister.resample import apply

        fixed, moving = _reduced(self.fixed), self.moving
        moved = apply(transform, moving, reference=fixed, output_dtype=np.float32, default_value=float("nan"))
        f, m = (_grey(img) for img in (fixed, moved))
        f_ok = fixed.valid_mask() & np.isfinite(f)
        m_ok = np.isfinite(m) & (moved.mask if moved.mask is not None else True)
        fill = fill_value(m, m_ok)
        if fill is not None:
            m_ok &= m != fill
        if fixed.ndim == 2:
            return [("", stretch(f, f_ok), stretch(m, m_ok), f_ok, m_ok, fixed.spacing[1] / fixed.spacing[0])]
        views = []
        for values in (f, m, f_ok, m_ok):
            views.append(lps_planes(values, fixed.direction, fixed.spacing))
        names = ("axial", "coronal", "sagittal")
        return [(names[i], stretch(views[0][0][i], views[2][0][i]), stretch(views[1][0][i], views[3][0][i]),
                 views[2][0][i], views[3][0][i], views[0][1][i]) for i in range(3)]

    def _pictures(self, transform: Transform, label: str) -> str:
        out = []
        side = OVERLAY_PX if self.fixed.ndim == 2 else OVERLAY_PX * 2 // 3
        for plane, f, m, f_ok, m_ok, aspect in self._views(transform):
            if self.edges:
                rgb, shown_aspect = edge_overlay(f, m, f_ok, m_ok, aspect=aspect), 1.0
            else:
                rgb, shown_aspect = colour_overlay(f, m, f_ok & m_ok), aspect
            title = f"{label} {plane}".strip()
            out.append(img_tag(png_base64(rgb, aspect=shown_aspect, max_side=side), f"overlay {title}", title=title))
        return f'<div><span style="display:inline-block;width:3.5em">{label}</span>{"".join(out)}</div>'

    def _repr_html_(self) -> str:
        ndim = self.fixed.ndim
        what = ("edges: fixed magenta, moving green, white where they coincide" if self.edges
                else "fixed magenta, moving green, grey where they agree")
        return (result_html(self.result)
                + f'<div class="coregister-overlay"><div style="color:#57606a">Overlay ({what})</div>'
                + self._pictures(Translation(np.zeros(ndim)), "before")
                + self._pictures(self.result.transform, "after") + "</div>")


#: pictures are drawn from the fixed grid reduced (by a whole stride) to at most this many pixels on a side
_GRID_PX = 400


def _reduced(image: Any) -> Any:
    """``image`` on every n-th pixel, so that the longest side has at most :data:`_GRID_PX` pixels (itself if small)."""
    step = max(1, int(np.ceil(max(image.shape) / _GRID_PX)))
    if step == 1:
        return image
    index = (slice(None, None, step),) * image.ndim
    return image.replace(array=image.array[index], spacing=tuple(s * step for s in image.spacing),
                         mask=None if image.mask is None else image.mask[index])


def _grey(image: Any) -> np.ndarray:
    values = np.asarray(image.array, dtype=np.float32)
    if image.has_channels:
        values = values[..., :3].mean(axis=-1) if image.n_channels >= 3 else values[..., 0]
    return values
