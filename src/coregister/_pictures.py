"""Small pictures of images, shared by the reports and the notebook views: windowing, overlays, planes, PNG.

* :func:`robust_window` / :func:`stretch`: each image on its **own** robust
  percentiles (a constant fill, CT padding or a zero background, left out),
  so that a CT's range does not swamp an MR and two scans of one modality
  look alike where they agree;
* :func:`equalise`: histogram equalisation, for pairs whose radiometry
  differs (dates, seasons, sensors);
* :func:`colour_overlay`: fixed in magenta, moving in green, grey where they
  agree; only fixed (grey) where the moving image has no data;
* :func:`edge_overlay`: for multimodal pairs, whose intensities do not
  compare: the fixed image in grey, its edges in magenta, the moving image's
  in green (white where they coincide);
* :func:`lps_planes`: three orthogonal planes through a volume's centre,
  oriented radiologically;
* :func:`png_base64`: a picture as base64 PNG for a data URI (Pillow), scaled
  to a bounded size.

Everything here is numpy in, numpy out (plus Pillow for PNG), so that every
room can draw: the image type, the pipeline's results, the reports.

Examples
--------
>>> import numpy as np
>>> values = np.r_[np.full(50, -2048.0), np.linspace(-1000.0, 1000.0, 50)]   # CT padding, then data
>>> [round(v) for v in robust_window(values)]
[-980, 990]
>>> colour_overlay(np.array([[1.0, 0.0]]), np.array([[0.0, 1.0]])).tolist()
[[[1.0, 0.0, 1.0], [0.0, 1.0, 0.0]]]
"""

from __future__ import annotations

import base64
import io
from collections.abc import Sequence

import numpy as np

__all__ = [
    "colour_overlay",
    "edge_overlay",
    "edges",
    "equalise",
    "fill_value",
    "img_tag",
    "lps_planes",
    "png_base64",
    "robust_window",
    "stretch",
]

#: percentiles of an image's own values mapped to black and white
WINDOW_PERCENTILES = (1.0, 99.5)
#: a single value holding at least this fraction of an image is its fill (padding, background) and left out of the window
FILL_FRACTION = 0.02
_SAMPLE = 1_000_000


def fill_value(values: np.ndarray, valid: np.ndarray | None = None) -> float | None:
    """The image's fill: its minimum when that one value holds at least 2 % of the valid pixels (and not all), else None.

    CT padding (-2048, -3024), a zero background, the zeros a resampler
    puts outside the field of view.

    Examples
    --------
    >>> fill_value(np.r_[np.zeros(10), np.arange(1.0, 91.0)]), fill_value(np.arange(100.0))
    (0.0, None)
    """
    sample = _sample(values, valid)
    if sample.size == 0:
        return None
    lowest = sample.min()
    at_lowest = sample == lowest
    return float(lowest) if at_lowest.mean() >= FILL_FRACTION and not at_lowest.all() else None


def _sample(values: np.ndarray, valid: np.ndarray | None) -> np.ndarray:
    finite = np.isfinite(values)
    use = finite if valid is None else (finite & valid)
    sample = np.asarray(values[use], dtype=np.float64)
    if sample.size > _SAMPLE:  # an even subsample: the same percentiles, a fraction of the time
        sample = sample[:: sample.size // _SAMPLE]
    return sample


def robust_window(values: np.ndarray, valid: np.ndarray | None = None) -> tuple[float, float]:
    """``(low, high)``: the 1st and 99.5th percentiles of the valid, finite values, without a fill value.

    The image's minimum, when one value holds at least 2 % of it (CT
    padding at -2048 or -3024, a zero background, a warp's fill), is left
    out, so the window spans the data.
    """
    sample = _sample(values, valid)
    if sample.size == 0:
        return 0.0, 1.0
    fill = fill_value(values, valid)
    if fill is not None:
        sample = sample[sample != fill]
    low, high = (float(v) for v in np.percentile(sample, WINDOW_PERCENTILES))
    if high <= low:
        high = low + 1.0
    return low, high


def stretch(values: np.ndarray, valid: np.ndarray | None = None) -> np.ndarray:
    """``values`` mapped to 0..1 (float32) on their own :func:`robust_window`; invalid and non-finite pixels 0."""
    low, high = robust_window(values, valid)
    with np.errstate(invalid="ignore"):
        out = np.clip((np.asarray(values, dtype=np.float64) - low) / (high - low), 0.0, 1.0)
    out[~np.isfinite(out)] = 0.0
    if valid is not None:
        out[~valid] = 0.0
    return out.astype(np.float32)


def equalise(values: np.ndarray, valid: np.ndarray | None = None) -> np.ndarray:
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


def colour_overlay(fixed: np.ndarray, moving: np.ndarray, both: np.ndarray | None = None) -> np.ndarray:
    """RGB: the fixed image in magenta (red + blue), the moving image in green (inputs in 0..1).

    Where both are bright the pixel is white, where both are dark black: an
    aligned pair looks grey, misaligned edges show colour fringes. Outside
    ``both`` (where the moving image has no data) the fixed image is shown
    in grey, so that no colour stands for missing data.
    """
    rgb = np.stack([fixed, moving, fixed], axis=-1)
    if both is not None:
        rgb[~both] = np.asarray(fixed)[~both][:, np.newaxis]
    return rgb


def edges(values: np.ndarray, valid: np.ndarray | None = None, *, sigma: float | None = None) -> np.ndarray:
    """Canny edges (scikit-image) of a 0..1 picture, none outside ``valid`` or along its border.

    The thresholds are quantiles of the gradient (the strongest 10 % of
    pixels seed edges), so images of any contrast give comparable maps.
    ``sigma`` (pixels) defaults to 1.5, more on large pictures (one 150th of
    the long side), whose lines are also drawn thicker, so that the edges
    of a 512-pixel slice show the anatomy, not its texture, at report size.
    """
    from scipy import ndimage
    from skimage.feature import canny

    values = np.asarray(values, dtype=np.float64)
    if values.ndim != 2 or min(values.shape) < 3:
        return np.zeros(values.shape, bool)
    side = max(values.shape)
    sigma = max(1.5, side / 150.0) if sigma is None else sigma
    mask = None if valid is None else ndimage.binary_erosion(valid, iterations=2)
    found = np.asarray(canny(values, sigma=sigma, low_threshold=0.75, high_threshold=0.9, use_quantiles=True,
                             mask=mask), dtype=bool)
    thicken = int(round(side / 300.0))
    return ndimage.binary_dilation(found, iterations=thicken) if thicken else found


def edge_overlay(fixed: np.ndarray, moving: np.ndarray, fixed_valid: np.ndarray | None = None,
                 moving_valid: np.ndarray | None = None, *, aspect: float = 1.0) -> np.ndarray:
    """RGB for a multimodal pair: the fixed image in grey, its edges in magenta, the moving image's in green.

    Edges that coincide are white: an aligned pair shows white outlines
    with thin fringes; a misaligned one, magenta and green outlines apart.
    A plane whose rows are ``aspect`` times as far apart as its columns (a
    slice across 5 mm sections) is first brought to square pixels, so that
    edges are found as they are seen; the picture then has square pixels.

    Examples
    --------
    >>> square = np.zeros((32, 32)); square[8:24, 8:24] = 1.0
    >>> shifted = np.roll(square, (3, 4), axis=(0, 1))
    >>> aligned, apart = edge_overlay(square, 1.0 - square), edge_overlay(square, shifted)
    >>> white = lambda rgb: int((rgb.min(axis=-1) > 0.99).sum())
    >>> white(aligned) > 3 * white(apart)
    True
    """
    if abs(aspect - 1.0) > 1e-3:
        from scipy import ndimage

        rows = int(round(np.shape(fixed)[0] * aspect))
        factor = (rows / np.shape(fixed)[0], 1.0)
        fixed, moving = (ndimage.zoom(np.asarray(v, np.float32), factor, order=1, grid_mode=True, mode="nearest")
                         for v in (fixed, moving))
        fixed_valid, moving_valid = (None if v is None else ndimage.zoom(np.asarray(v, np.uint8), factor, order=0,
                                                                         grid_mode=True, mode="nearest").astype(bool)
                                     for v in (fixed_valid, moving_valid))
    grey = 0.25 + 0.5 * np.asarray(fixed, dtype=np.float32)
    rgb = np.repeat(grey[..., np.newaxis], 3, axis=-1)
    fixed_edges, moving_edges = edges(fixed, fixed_valid), edges(moving, moving_valid)
    rgb[fixed_edges] = (1.0, 0.0, 1.0)
    rgb[moving_edges] = (0.0, 1.0, 0.0)
    rgb[fixed_edges & moving_edges] = (1.0, 1.0, 1.0)
    return rgb


def lps_planes(values: np.ndarray, direction: np.ndarray, spacing: Sequence[float]) -> tuple[list[np.ndarray], list[float]]:
    """Axial, coronal and sagittal planes through the centre of a ``(z, y, x[, c])`` volume, and their aspect ratios.

    Axes are brought along world L, P, S (nearest axes) and the planes
    oriented radiologically: patient left on the right of axial and coronal
    views, anterior at the top of axial views, superior at the top of the
    others. An aspect ratio is a plane's row spacing over its column spacing.
    """
    volume, steps = _lps_volume(values, direction, spacing)
    cx, cy, cz = (n // 2 for n in volume.shape[:3])
    planes = [np.swapaxes(volume[:, :, cz], 0, 1), np.swapaxes(volume[:, cy, :], 0, 1)[::-1],
              np.swapaxes(volume[cx, :, :], 0, 1)[::-1]]
    sl, sp, ss = steps
    return planes, [sp / sl, ss / sl, ss / sp]


def _lps_volume(values: np.ndarray, direction: np.ndarray, spacing: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    """Reorder a ``(z, y, x)`` array so that its axes run along world L, P, S (nearest axes); returns (v[L, P, S], spacing)."""
    extra = tuple(range(3, values.ndim))
    indexed = np.transpose(values, (2, 1, 0, *extra))  # (x, y, z) index order
    direction = np.asarray(direction, dtype=float)
    world_axis = np.argmax(np.abs(direction), axis=0)  # world axis of each index axis
    if len(set(world_axis.tolist())) != 3:
        return indexed, np.asarray(spacing, dtype=float)
    order = [int(np.where(world_axis == w)[0][0]) for w in range(3)]
    out = np.transpose(indexed, (*order, *extra))
    for w, i in enumerate(order):
        if direction[w, i] < 0:
            out = np.flip(out, axis=w)
    return out, np.asarray(spacing, dtype=float)[order]


def png_base64(picture: np.ndarray, *, aspect: float = 1.0, max_side: int = 256) -> str:
    """A 0..1 grey ``(h, w)`` or RGB ``(h, w, 3)`` picture as base64 PNG, ``max_side`` pixels at most on a side.

    Colour pictures are stored with a 256-colour palette (small, for
    notebooks and reports that are mailed).

    ``aspect`` (row spacing over column spacing) stretches the rows so that
    the picture is not distorted.

    Examples
    --------
    >>> import base64, io
    >>> from PIL import Image
    >>> text = png_base64(np.linspace(0, 1, 200).reshape(10, 20), aspect=2.0, max_side=64)
    >>> Image.open(io.BytesIO(base64.b64decode(text))).size
    (64, 64)
    """
    from PIL import Image

    values = np.clip(np.nan_to_num(np.asarray(picture, dtype=np.float64)), 0.0, 1.0)
    image = Image.fromarray(np.round(values * 255).astype(np.uint8))
    height, width = values.shape[0] * max(aspect, 1e-6), values.shape[1]
    scale = max_side / max(height, width)
    size = (max(1, int(round(width * scale))), max(1, int(round(height * scale))))
    image = image.resize(size, Image.Resampling.BILINEAR if scale > 1 else Image.Resampling.LANCZOS)
    if image.mode == "RGB":  # a 256-colour palette: a third of the bytes, the same picture at this size
        image = image.quantize(colors=256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", optimize=True)
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def img_tag(png: str, alt: str, *, title: str = "", width: int | None = None) -> str:
    """An ``<img>`` of a base64 PNG (a data URI: a notebook or page stays self-contained).

    ``width`` (screen pixels) enlarges a small picture, pixels kept sharp.
    """
    import html

    caption = f' title="{html.escape(title, quote=True)}"' if title else ""
    size = f"width:{int(width)}px;image-rendering:pixelated;" if width else ""
    return (f'<img alt="{html.escape(alt, quote=True)}"{caption} src="data:image/png;base64,{png}" '
            f'style="{size}margin:2px">')
