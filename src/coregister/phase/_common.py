"""What the translation and the rotation/scale estimates share: input arrays and masks, the mean fill, the
apodisation window, the phase-correlation peak and the normalised correlation.

Private to :mod:`coregister.phase`.
"""

from __future__ import annotations

import functools
import math
from typing import Any

import numpy as np
from scipy import fft as sfft

from coregister.errors import GeometryError
from coregister.image import SpatialImage

__all__: list[str] = []  # helpers of the modules of coregister.phase; nothing here is public

_EDGE_PX = 2  # B-spline coefficients within this many pixels of an edge or a masked pixel are not trusted


def _as_array_and_mask(image: Any, mask: Any, name: str) -> tuple[np.ndarray, np.ndarray | None]:
    if isinstance(image, SpatialImage):
        if image.has_channels:
            raise GeometryError(
                f"{name} has {image.n_channels} channels; phase correlation takes one: pass image.channel(i)"
            )
        valid = image.valid_mask()
        array = np.array(image.array, dtype=np.float64)
        mask = valid if mask is None else (np.asarray(mask, dtype=bool) & valid)
    else:
        array = np.array(image, dtype=np.float64)
    if array.ndim not in (2, 3):
        raise GeometryError(f"{name} has shape {array.shape}; phase correlation takes 2D or 3D single-channel arrays")
    finite = np.isfinite(array)
    if not finite.all():
        mask = finite if mask is None else (np.asarray(mask, dtype=bool) & finite)
    if mask is not None:
        mask = np.asarray(mask, dtype=bool)
        if mask.shape != array.shape:
            raise GeometryError(f"mask of shape {mask.shape} does not match {name} of shape {array.shape}")
        if mask.all():
            mask = None
    return array, mask


def _fill(array: np.ndarray, mask: np.ndarray | None) -> np.ndarray:
    """Copy with invalid pixels set to the mean of the valid ones (no edges appear at masked areas' borders)."""
    if mask is None:
        return array
    out = array.copy()
    out[~mask] = array[mask].mean() if mask.any() else 0.0
    return out


@functools.lru_cache(maxsize=8)
def _apodize(shape: tuple[int, ...]) -> np.ndarray:
    """Separable Tukey window (flat centre, cosine taper on the outer 15 % of each side); cached, read-only.

    Built from ``numpy.hanning`` halves (the Tukey window's definition), which
    spares importing ``scipy.signal`` (a second of start-up) for one formula.
    """
    window = np.ones(shape)
    for axis, n in enumerate(shape):
        taper = np.ones(n)
        width = int(0.15 * n)
        if width >= 2:
            ramp = np.hanning(2 * width + 1)[:width]
            taper[:width] = ramp
            taper[n - width :] = ramp[::-1]
        window = window * taper.reshape([-1 if a == axis else 1 for a in range(len(shape))])
    window.flags.writeable = False
    return window


def _phase_peak(
    ref_freq: np.ndarray, tgt_freq: np.ndarray, radius: int = 2, *, real_shape: tuple[int, ...] | None = None
) -> tuple[float, np.ndarray]:
    """Phase-correlation surface: its main peak over the highest peak outside the peak's neighbourhood, and
    the whole-pixel shift at the peak (scikit-image's sign and wrap-around convention).

    With ``real_shape``, the spectra are half spectra (``rfftn``) of real images of that shape.
    """
    product = ref_freq * tgt_freq.conj()
    product /= np.maximum(np.abs(product), 1e-12)
    if real_shape is not None:
        surface = np.abs(sfft.irfftn(product, s=real_shape))
    else:
        surface = np.abs(sfft.ifftn(product))
    peak_index = np.unravel_index(int(np.argmax(surface)), surface.shape)
    peak = float(surface[peak_index])
    rolled = np.roll(surface, [radius - int(i) for i in peak_index], axis=tuple(range(surface.ndim)))
    rolled[tuple(slice(0, 2 * radius + 1) for _ in peak_index)] = 0.0
    second = float(rolled.max())
    shift = np.array(peak_index, dtype=float)
    size = np.array(surface.shape)
    wrap = shift > np.trunc(size / 2)
    shift[wrap] -= size[wrap]
    return (peak / second if second > 0 else math.inf), shift


def _peak_ratio(ref_freq: np.ndarray, tgt_freq: np.ndarray) -> float:
    return _phase_peak(ref_freq, tgt_freq)[0]


def _dot(a: np.ndarray, b: np.ndarray) -> float:
    """Inner product (callers run with one BLAS thread: OpenBLAS threads spin on these thin products)."""
    return float(np.dot(a, b))


def _ncc(a: np.ndarray, b: np.ndarray) -> float:
    a = a - a.mean()
    b = b - b.mean()
    denom = math.sqrt(_dot(a, a) * _dot(b, b))
    return _dot(a, b) / denom if denom > 0 else 0.0
