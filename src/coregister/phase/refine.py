"""The default sub-pixel refinement of :func:`~coregister.phase.phase_correlate`: a Gauss-Newton fit of
shift, gain and offset on the images themselves.

The target is interpolated by a cubic B-spline shifted by separable slicing
(exact derivatives, four multiply-adds per axis); both images are smoothed
first, which removes the pull towards whole pixels that interpolation itself
causes (see :func:`_gradient_refine`). Masked pixels and the edges are left
out. Private to :mod:`coregister.phase`.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np
from scipy import ndimage

from coregister.phase._common import _EDGE_PX, _dot, _fill, _ncc

__all__: list[str] = []  # used by coregister.phase.correlate; nothing here is public


def _bspline_weights(frac: float, derivative: bool = False) -> np.ndarray:
    """Cubic B-spline weights (or their derivative) of coefficients ``x - n - m``, ``m = -1, 0, 1, 2``, at fraction ``frac``."""
    f = frac
    g = 1.0 - f
    if derivative:
        return np.array([g * g / 2.0, 2.0 * f - 1.5 * f * f, -2.0 * g + 1.5 * g * g, -f * f / 2.0])
    return np.array([g**3 / 6.0, 2.0 / 3.0 - f * f + f**3 / 2.0, 2.0 / 3.0 - g * g + g**3 / 2.0, f**3 / 6.0])


def _shifted_region(shape: tuple[int, ...], shift: np.ndarray) -> tuple[slice, ...] | None:
    """Output region where ``target(x - shift)`` can be interpolated from trusted coefficients."""
    region = []
    for n_px, d in zip(shape, shift, strict=True):
        whole = math.floor(d)
        lo = max(0, whole + 2 + _EDGE_PX)
        hi = min(n_px, n_px + whole - 1 - _EDGE_PX)
        if hi - lo < 4:
            return None
        region.append(slice(lo, hi))
    return tuple(region)


def _shift_axis(values: np.ndarray, axis: int, d: float, sl: slice, derivative: bool) -> np.ndarray:
    """One separable pass of :func:`_shift_coefficients` along ``axis``."""
    whole = math.floor(d)
    weights = _bspline_weights(d - whole, derivative=derivative)
    acc = None
    for m, weight in zip((-1, 0, 1, 2), weights, strict=True):
        start = sl.start - whole - m
        index = [slice(None)] * values.ndim
        index[axis] = slice(start, start + (sl.stop - sl.start))
        term = values[tuple(index)] * values.dtype.type(weight)
        acc = term if acc is None else acc + term
    assert acc is not None
    return acc


def _shift_coefficients(
    coeffs: np.ndarray, shift: np.ndarray, region: tuple[slice, ...], derivative_axis: int | None = None
) -> np.ndarray:
    """Sample the cubic B-spline ``s(x - shift)`` (or its derivative along one axis) for ``x`` in ``region``.

    Separable, slicing only: four multiply-adds per axis.
    """
    out = coeffs
    for axis, (d, sl) in enumerate(zip(shift, region, strict=True)):
        out = _shift_axis(out, axis, d, sl, axis == derivative_axis)
    return out


def _shift_with_gradient(
    coeffs: np.ndarray, shift: np.ndarray, region: tuple[slice, ...]
) -> tuple[np.ndarray, Any]:
    """``s(x - shift)`` over ``region``, and a function giving its gradient (computed only when asked).

    In 2D the first pass is shared between the value and the column derivative.
    """
    if coeffs.ndim != 2:
        value = _shift_coefficients(coeffs, shift, region)
        return value, lambda: [_shift_coefficients(coeffs, shift, region, derivative_axis=k) for k in range(coeffs.ndim)]
    plain_rows = _shift_axis(coeffs, 0, shift[0], region[0], False)
    value = _shift_axis(plain_rows, 1, shift[1], region[1], False)

    def gradient() -> list[np.ndarray]:
        d_cols = _shift_axis(plain_rows, 1, shift[1], region[1], True)
        d_rows = _shift_axis(_shift_axis(coeffs, 0, shift[0], region[0], True), 1, shift[1], region[1], False)
        return [d_rows, d_cols]

    return value, gradient


@dataclasses.dataclass
class _Fit:
    shift: np.ndarray
    gain: float
    offset: float
    ncc: float
    ncc_before: float
    std_px: float
    iterations: int
    converged: bool
    valid_fraction: float


def _moved_mask(ok: np.ndarray | None, region: tuple[slice, ...], shift: np.ndarray) -> np.ndarray | None:
    """``ok(x - shift)`` (nearest) for ``x`` in ``region``."""
    if ok is None:
        return None
    nearest = np.round(shift).astype(int)
    return ok[tuple(slice(sl.start - k, sl.stop - k) for sl, k in zip(region, nearest, strict=True))]


def _gradient_refine(
    reference: np.ndarray,
    ref_mask: np.ndarray | None,
    target: np.ndarray,
    tgt_mask: np.ndarray | None,
    start: np.ndarray,
    *,
    max_iterations: int,
    tolerance_px: float,
    max_step_px: float,
    sigma_px: float,
) -> _Fit | None:
    """Gauss-Newton fit of ``reference(x) ~ gain * target(x - d) + offset`` over the valid pixels.

    The target is a cubic B-spline (exact derivatives). Both images are
    first smoothed with a Gaussian of ``sigma_px``: interpolating at a
    fraction of a pixel smooths the fine detail that a whole-pixel position
    keeps, which pulls the least-squares optimum towards whole pixels by a few
    hundredths of a pixel on sharp images; without that detail the optimum
    stays put (smoothing both images alike does not move it), and the fit
    converges in about three iterations.
    """
    ndim = reference.ndim
    ref_f, tgt_f = _fill(reference, ref_mask), _fill(target, tgt_mask)
    if sigma_px > 0:
        ref_f = ndimage.gaussian_filter(ref_f, sigma_px, mode="mirror", truncate=3.0)
        tgt_f = ndimage.gaussian_filter(tgt_f, sigma_px, mode="mirror", truncate=3.0)
    coeffs = ndimage.spline_filter(tgt_f, order=3, mode="mirror", output=np.float32)
    # a masked pixel's filled value leaks into its neighbours (smoothing, spline coefficients)
    erode = _EDGE_PX + 1 + int(math.ceil(2 * sigma_px))
    ref_ok = None if ref_mask is None else ndimage.binary_erosion(ref_mask, iterations=erode, border_value=1)
    tgt_ok = None if tgt_mask is None else ndimage.binary_erosion(tgt_mask, iterations=erode, border_value=1)
    d = np.array(start, dtype=float)
    gain = math.nan
    offset = 0.0  # on centred values (see below)
    converged = False
    iterations = 0
    residual = w = normal = None
    previous: tuple[np.ndarray, float, float, float, np.ndarray] | None = None
    halvings = 0
    # one pixel set for the whole fit (every shift within max_step_px of the start can be sampled on it):
    # the objective then changes continuously with the shift, and Gauss-Newton converges in a few steps
    region = None
    for corner in (start - max_step_px, start + max_step_px):
        found = _shifted_region(reference.shape, corner)
        if found is None:
            return None
        region = found if region is None else tuple(
            slice(max(a.start, b.start), min(a.stop, b.stop)) for a, b in zip(region, found, strict=True)
        )
    assert region is not None
    if any(sl.stop - sl.start < 8 for sl in region):
        return None
    valid = None if ref_ok is None else ref_ok[region]
    if tgt_ok is not None:
        # target pixels valid wherever the shift may take them
        reach = int(math.ceil(max_step_px)) + 1
        moved = _moved_mask(ndimage.binary_erosion(tgt_ok, iterations=reach, border_value=1), region, start)
        assert moved is not None
        valid = moved if valid is None else (valid & moved)
    if valid is not None and valid.sum() < 16 * (ndim + 2):
        return None
    # float32 arithmetic, centred values (the sums of products then lose nothing that matters to the step);
    # the model is r - r_mean ~ gain * (w - w_mean) + offset, with both means fixed at the start
    r_ref = (ref_f[region].ravel() if valid is None else ref_f[region][valid]).astype(np.float32)
    r_mean = float(r_ref.mean())
    r_ref -= np.float32(r_mean)
    w_mean = math.nan
    for iterations in range(1, 2 * max_iterations + 2):  # noqa: B007 - halvings and the last pass only evaluate
        warped, gradient = _shift_with_gradient(coeffs, d, region)
        w = warped.ravel() if valid is None else warped[valid]
        if math.isnan(gain):  # start from the least-squares gain
            w_mean = float(w.mean())
            var = _dot(w - np.float32(w_mean), w - np.float32(w_mean))
            gain = _dot(w - np.float32(w_mean), r_ref) / var if var > 0 else 1.0
        w = w - np.float32(w_mean)
        residual = r_ref - (np.float32(gain) * w + np.float32(offset))
        residual64 = residual.astype(np.float64)
        mse = _dot(residual64, residual64) / residual.size
        if previous is not None and mse > previous[3] and halvings < 6:
            # the quadratic model overshot (textures whose similarity is not convex a pixel away): halve the step
            step = previous[4] * 0.5
            d = previous[0] + step[:ndim]
            gain, offset = previous[1] + float(step[ndim]), previous[2] + float(step[ndim + 1])
            previous = (previous[0], previous[1], previous[2], previous[3], step)
            halvings += 1
            converged = bool(np.max(np.abs(step[:ndim])) < tolerance_px)
            continue
        halvings = 0
        if iterations >= max_iterations + 1 or converged:
            break
        jac = np.empty((ndim + 2, w.size), dtype=np.float32)  # float32 passes; products summed by BLAS
        for k, g_w in enumerate(gradient()):
            # d/d(shift) of gain * t(x - d) is -gain * (grad t)(x - d), exact from the spline
            jac[k] = -gain * (g_w.ravel() if valid is None else g_w[valid])
        jac[ndim] = w
        jac[ndim + 1] = 1.0
        normal = (jac @ jac.T).astype(np.float64)  # one BLAS thread (see coregister._blas)
        try:
            step = np.linalg.solve(normal, (jac @ residual).astype(np.float64))
        except np.linalg.LinAlgError:
            return None
        longest = float(np.max(np.abs(step[:ndim])))
        if longest > 0.5:  # no jump beyond half a pixel per iteration
            step *= 0.5 / longest
        previous = (d.copy(), gain, offset, mse, step)
        d = d + step[:ndim]
        gain += float(step[ndim])
        offset += float(step[ndim + 1])
        if np.max(np.abs(d - start)) > max_step_px:
            return None
        converged = bool(np.max(np.abs(step[:ndim])) < tolerance_px)
    assert residual is not None and w is not None and r_ref is not None
    # similarity before and after the shift, on the same pixels
    same = np.ones(w.size, bool)
    unshifted = (tgt_f[region] if valid is None else tgt_f[region][valid]).astype(np.float32)
    if tgt_ok is not None:
        same = tgt_ok[region].ravel() if valid is None else tgt_ok[region][valid]
    ncc_before = _ncc(r_ref[same], unshifted.ravel()[same]) if same.sum() > 16 else math.nan
    ncc_after = _ncc(r_ref[same], w[same]) if same.sum() > 16 else _ncc(r_ref, w)
    dof = max(w.size - (ndim + 2), 1)
    sigma2 = _dot(residual, residual) / dof
    std = math.inf
    if normal is not None:
        try:
            cov = sigma2 * np.linalg.inv(normal)[:ndim, :ndim]
            std = math.sqrt(max(float(np.linalg.eigvalsh(cov).max()), 0.0))
        except np.linalg.LinAlgError:
            pass
    return _Fit(
        shift=d,
        gain=float(gain),
        offset=float(r_mean + offset - gain * w_mean),
        ncc=ncc_after,
        ncc_before=ncc_before,
        std_px=std,
        iterations=iterations - 1,
        converged=converged,
        valid_fraction=w.size / reference.size,
    )
