"""How a :class:`~coregister.SpatialImage` shows itself in a notebook: its geometry and a small picture.

A 2D image is drawn whole (colour as colour), a volume on three orthogonal
planes through its centre, oriented radiologically; each windowed on its
own robust percentiles, reduced to a few hundred pixels: the HTML stays
well under 100 kB, whatever the image's size.
"""

from __future__ import annotations

import html
from typing import Any

import numpy as np

from coregister._pictures import img_tag, lps_planes, png_base64, stretch

__all__ = ["image_html", "picture_planes"]

#: longest side of a notebook picture, in screen pixels
PICTURE_PX = 240
#: a 2D image is decimated to about this many pixels on its long side before it is windowed
_WORK_PX = 720


def _decimated(values: np.ndarray) -> tuple[np.ndarray, int]:
    step = max(1, int(np.ceil(max(values.shape[:2]) / _WORK_PX)))
    return values[::step, ::step], step


def picture_planes(image: Any) -> list[tuple[str, np.ndarray, float]]:
    """``(name, picture in 0..1 (grey or RGB), aspect)`` for each view of ``image``: the image, or three planes."""
    values = np.asarray(image.array)
    if image.ndim == 2:
        small, step = _decimated(values)
        sx, sy = image.spacing
        if image.has_channels and image.n_channels in (3, 4):
            rgb = small[..., :3].astype(np.float64)
            low, high = np.nanpercentile(rgb, [1.0, 99.5]) if np.isfinite(rgb).any() else (0.0, 1.0)
            picture = np.clip((rgb - low) / ((high - low) or 1.0), 0.0, 1.0)
        else:
            grey = small[..., 0] if image.has_channels else small
            picture = stretch(grey.astype(np.float64), _valid(image, step))
        return [("", picture, sy / sx)]
    grey = values[..., 0] if image.has_channels else values
    planes, aspects = lps_planes(grey, image.direction, image.spacing)
    valid_planes, _ = lps_planes(image.valid_mask(), image.direction, image.spacing)
    names = ("axial", "coronal", "sagittal")
    return [(name, stretch(plane.astype(np.float64), ok), aspect)
            for name, plane, ok, aspect in zip(names, planes, valid_planes, aspects, strict=True)]


def _valid(image: Any, step: int) -> np.ndarray | None:
    if image.mask is None and image.nodata is None:
        return None
    return image.valid_mask()[::step, ::step]


def _rows(image: Any) -> list[tuple[str, str]]:
    rows = [
        ("size (x, y[, z])", " × ".join(str(n) for n in image.size) + (f" × {image.n_channels} channels"
                                                                       if image.has_channels else "")),
        ("spacing", ", ".join(f"{v:.6g}" for v in image.spacing)),
        ("origin (first pixel centre)", ", ".join(f"{v:.6g}" for v in image.origin)),
        ("CRS" if image.crs is not None else "orientation",
         image.crs.to_string() if image.crs is not None else image.orientation),
        ("dtype", str(image.dtype)),
    ]
    if image.nodata is not None:
        rows.append(("nodata", f"{image.nodata:g}"))
    source = image.meta.get("source_path")
    if source:
        rows.append(("file", str(source)))
    return rows


def image_html(image: Any) -> str:
    """The notebook view of ``image``: a table of its geometry beside its picture(s)."""
    table = "".join(f'<tr><td style="text-align:left">{html.escape(k)}</td><td style="text-align:left">'
                    f"{html.escape(v)}</td></tr>" for k, v in _rows(image))
    side = PICTURE_PX if image.ndim == 2 else PICTURE_PX * 2 // 3
    pictures = "".join(img_tag(png_base64(picture, aspect=aspect, max_side=side), f"{name or 'image'} view",
                               title=name) for name, picture, aspect in picture_planes(image))
    return (f'<div class="coregister-spatialimage"><b>SpatialImage</b>'
            f'<div style="display:flex;flex-wrap:wrap;align-items:flex-start;gap:8px">'
            f'<table>{table}</table><div>{pictures}</div></div></div>')
