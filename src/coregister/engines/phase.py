"""Phase correlation: sub-pixel translation (also under masks) and rotation + scale (Fourier-Mellin).

Three pieces, usable on their own or as an initialiser for every engine:

* :func:`phase_correlate`: the translation between two images (2D or 3D)
  from scikit-image's :func:`~skimage.registration.phase_cross_correlation`,
  refined to a small fraction of a pixel. Plain upsampled phase correlation
  is pulled towards whole pixels (about 0.1 px wrong at fractions 0.3-0.4 and
  0.6-0.7); the default refinement (``refine="gradient"``) is a Gauss-Newton
  fit of shift, gain and offset on the images themselves (cubic B-spline
  interpolation of the target), which works under masks too (scikit-image's
  masked variant is integer-pixel only).
* :func:`fourier_mellin`: rotation and scale from the log-polar resampled
  Fourier magnitudes (:func:`skimage.transform.warp_polar`), then the
  translation by :func:`phase_correlate`.
* :class:`PhaseEngine`: the engine protocol (``name = "phase"``) on
  :class:`~coregister.SpatialImage`: a :class:`~coregister.Translation` (or
  :class:`~coregister.Similarity`) in world units mapping fixed-space points
  to moving space (ITK's direction).

Shift convention: a :class:`PhaseShift` holds the **correction** in pixels,
in array axis order (``(rows, cols)`` in 2D): moving the target's content by
``shift`` (``scipy.ndimage.shift(target, shift)``) lays it on the reference,
as scikit-image reports it. Equivalently, reference pixel ``x`` shows the
same thing as target pixel ``x - shift``.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import math
from typing import Any

import numpy as np
from scipy import fft as sfft
from scipy import ndimage

from coregister._blas import one_blas_thread
from coregister.config import ProgressCallback, RegistrationConfig, TransformModel
from coregister.engines.base import EngineOutput
from coregister.errors import ConfigError, GeometryError, RegistrationFailed
from coregister.image import SpatialImage
from coregister.transforms import Affine, Similarity, Transform, Translation

__all__ = ["PhaseEngine", "PhaseShift", "PhaseSimilarity", "fourier_mellin", "phase_correlate"]

logger = logging.getLogger(__name__)

_REFINE = ("gradient", "upsample", "iterate")
_EDGE_PX = 2  # B-spline coefficients within this many pixels of an edge or a masked pixel are not trusted


@dataclasses.dataclass(frozen=True)
class PhaseShift:
    """The translation found between two images, as the correction applied to the target.

    Attributes
    ----------
    shift : tuple of float
        Correction in pixels, array axis order (``(rows, cols)`` in 2D,
        ``(planes, rows, cols)`` in 3D): ``scipy.ndimage.shift(target, shift)``
        lies on the reference. Reference pixel ``x`` shows target pixel ``x - shift``.
    reliability : float
        0 (meaningless) to 1 (certain): ``(1 - 1 / peak_ratio) * |ncc|``.
    peak_ratio : float
        Height of the phase-correlation peak over the highest peak outside
        its 5-pixel neighbourhood (1 means no distinct peak).
    error : float
        Normalised RMS error after alignment, ``sqrt(1 - ncc**2)`` (Fienup's
        translation-invariant error, gain and offset removed).
    ncc : float
        Normalised cross-correlation of the aligned images over the pixels valid in both.
    ncc_before : float
        The same correlation with the images as given (no shift): a shift
        that does not raise it does not improve the match.
    std_px : float
        Standard deviation of the shift estimated from the least-squares fit
        (largest axis of the error ellipse; pixels are assumed independent, so
        it is optimistic on smooth images). NaN when ``refine`` is not ``"gradient"``.
    gain, offset : float
        Intensity model ``reference ~ gain * target + offset`` at the solution.
    iterations : int
        Refinement iterations run.
    converged : bool
        Whether the refinement met its tolerance (always True without refinement).
    method : str
        ``"gradient"``, ``"upsample"``, ``"iterate"`` (refinement) with ``"+masked"``
        when the integer search used scikit-image's masked correlation (more
        than a tenth of the pixels masked; fewer are filled with the mean).
    valid_fraction : float
        Fraction of reference pixels used (valid in both images after the shift).
    """

    shift: tuple[float, ...]
    reliability: float
    peak_ratio: float
    error: float
    ncc: float
    std_px: float = math.nan
    ncc_before: float = math.nan
    gain: float = 1.0
    offset: float = 0.0
    iterations: int = 0
    converged: bool = True
    method: str = "gradient"
    valid_fraction: float = 1.0

    @property
    def magnitude_px(self) -> float:
        """Length of the shift vector in pixels."""
        return float(np.hypot.reduce(np.asarray(self.shift)))

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (NaN becomes ``None``)."""
        out = dataclasses.asdict(self)
        out["shift"] = list(self.shift)
        return {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in out.items()}


@dataclasses.dataclass(frozen=True)
class PhaseSimilarity:
    """Rotation, scale and translation between two 2D images (Fourier-Mellin).

    Attributes
    ----------
    angle_deg : float
        Rotation of the target's content relative to the reference's,
        counter-clockwise as displayed (rows down), in degrees.
    scale : float
        Size of the target's content over the reference's.
    matrix : ndarray, shape (3, 3)
        Homogeneous map from reference pixel coordinates ``(col, row)`` to
        target pixel coordinates (the fixed -> moving direction in pixels).
    translation : PhaseShift
        The residual translation found after undoing rotation and scale.
    reliability : float
        Reliability of the rotation/scale peak times that of the translation.
    """

    angle_deg: float
    scale: float
    matrix: np.ndarray
    translation: PhaseShift
    reliability: float

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "angle_deg": self.angle_deg,
            "scale": self.scale,
            "matrix": np.asarray(self.matrix).tolist(),
            "translation": self.translation.to_dict(),
            "reliability": self.reliability,
        }


# ----------------------------------------------------------------------------- helpers
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


def _dot(a: np.ndarray, b: np.ndarray) -> float:
    """Inner product (callers run with one BLAS thread: OpenBLAS threads spin on these thin products)."""
    return float(np.dot(a, b))


def _ncc(a: np.ndarray, b: np.ndarray) -> float:
    a = a - a.mean()
    b = b - b.mean()
    denom = math.sqrt(_dot(a, a) * _dot(b, b))
    return _dot(a, b) / denom if denom > 0 else 0.0


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


def _aligned_ncc(reference: np.ndarray, target: np.ndarray, shift: np.ndarray, mask: np.ndarray | None) -> float:
    """NCC of ``reference`` and ``target`` moved by the whole-pixel part of ``shift`` (for unrefined results)."""
    whole = np.round(shift).astype(int)
    ref_sl, tgt_sl = [], []
    for n_px, k in zip(reference.shape, whole, strict=True):
        lo, hi = max(0, k), min(n_px, n_px + k)
        if hi - lo < 2:
            return 0.0
        ref_sl.append(slice(lo, hi))
        tgt_sl.append(slice(lo - k, hi - k))
    a = reference[tuple(ref_sl)]
    b = target[tuple(tgt_sl)]
    if mask is not None:
        keep = mask[tuple(ref_sl)]
        return _ncc(a[keep], b[keep])
    return _ncc(a.ravel(), b.ravel())


# ----------------------------------------------------------------------------- public
@one_blas_thread
def phase_correlate(
    reference: np.ndarray | SpatialImage,
    target: np.ndarray | SpatialImage,
    *,
    mask: np.ndarray | None = None,
    target_mask: np.ndarray | None = None,
    refine: str = "gradient",
    upsample_factor: int = 100,
    max_iterations: int = 20,
    tolerance_px: float = 1e-3,
    smoothing_px: float = 1.0,
    max_shift_px: float | None = None,
    skip_below: float = 0.0,
) -> PhaseShift:
    """Find the translation between two images by phase correlation, refined below a hundredth of a pixel.

    Parameters
    ----------
    reference, target : ndarray or SpatialImage
        Two 2D (or 3D) single-channel images of the same shape, on the same
        pixel grid. A SpatialImage's nodata, mask and non-finite pixels are
        excluded.
    mask : ndarray of bool, optional
        Valid pixels of ``reference`` (True = use).
    target_mask : ndarray of bool, optional
        Valid pixels of ``target``; defaults to ``mask`` as in scikit-image.
    refine : {"gradient", "upsample", "iterate"}
        Sub-pixel refinement. ``"gradient"`` (default): Gauss-Newton fit of
        shift, gain and offset with cubic B-spline interpolation of the
        target, on both images smoothed by ``smoothing_px``, under the masks. ``"upsample"``: scikit-image's upsampled DFT
        alone (masked pixels replaced by the mean), biased towards whole
        pixels by up to about 0.1 px. ``"iterate"``: shift the target by the
        estimate and correlate again, three times.
    upsample_factor : int
        Upsampling of scikit-image's DFT for ``"upsample"``/``"iterate"``.
    max_iterations : int
        Gauss-Newton iterations at most.
    tolerance_px : float
        Stop when an update moves the shift by less than this (pixels).
    smoothing_px : float
        Gaussian sigma applied to both images before the Gauss-Newton fit
        (removes the interpolation bias towards whole pixels; 0 disables).
    max_shift_px : float, optional
        Refuse shifts longer than this (:class:`~coregister.errors.RegistrationFailed`).
    skip_below : float
        Skip the sub-pixel fit when the whole-pixel match is already less
        reliable than this (the result is the whole-pixel one, ``converged=False``):
        saves time on windows over clouds or water in a tie-point grid.

    Returns
    -------
    PhaseShift
        ``shift`` is the correction in array axis order: moving the target's
        content by it (``scipy.ndimage.shift(target, shift)``) lays it on the reference.

    Raises
    ------
    GeometryError
        Shapes differ, or the images are not 2D/3D single-channel.
    RegistrationFailed
        Too few valid pixels overlap, or the shift exceeds ``max_shift_px``.

    Examples
    --------
    >>> import numpy as np
    >>> from scipy import ndimage
    >>> rng = np.random.default_rng(0)
    >>> reference = ndimage.gaussian_filter(rng.normal(size=(96, 96)), 2)
    >>> target = ndimage.shift(reference, (1.3, -2.7), order=3)   # content moved down 1.3, left 2.7
    >>> found = phase_correlate(reference, target)
    >>> np.round(found.shift, 2).tolist()                          # the correction undoes it
    [-1.3, 2.7]
    >>> found.reliability > 0.5
    True
    """
    if refine not in _REFINE:
        raise ConfigError(f"refine={refine!r} is not one of {', '.join(_REFINE)}")
    ref, ref_mask = _as_array_and_mask(reference, mask, "reference")
    tgt, tgt_mask = _as_array_and_mask(target, target_mask if target_mask is not None else mask, "target")
    if ref.shape != tgt.shape:
        raise GeometryError(
            f"reference {ref.shape} and target {tgt.shape} differ in shape; bring the target onto the reference grid first"
        )
    n_valid = ref.size if ref_mask is None else int(ref_mask.sum())
    if n_valid < 64 or (tgt_mask is not None and tgt_mask.sum() < 64):
        raise RegistrationFailed(
            f"only {n_valid} valid reference pixels; phase correlation needs at least 64 valid pixels on both sides"
        )
    ref_f = _fill(ref, ref_mask)
    tgt_f = _fill(tgt, tgt_mask)
    window = _apodize(ref.shape)
    ref_windowed = ((ref_f - ref_f.mean()) * window).astype(np.float32)
    tgt_windowed = ((tgt_f - tgt_f.mean()) * window).astype(np.float32)
    # half spectra for the surface (real images); full ones only where scikit-image's upsampled DFT needs them
    peak_ratio, whole_pixels = _phase_peak(sfft.rfftn(ref_windowed), sfft.rfftn(tgt_windowed), real_shape=ref.shape)

    @functools.cache
    def spectra() -> tuple[np.ndarray, np.ndarray]:
        return sfft.fftn(ref_windowed), sfft.fftn(tgt_windowed)

    from skimage.registration import phase_cross_correlation

    # scikit-image's masked correlation (Padfield) costs a dozen padded FFTs: worth it when much is masked;
    # a few masked pixels filled with the mean do not move the peak
    invalid = max(0.0 if ref_mask is None else 1 - ref_mask.mean(), 0.0 if tgt_mask is None else 1 - tgt_mask.mean())
    # (its padded FFTs are 2^ndim times the image: in 3D beyond ~2 M voxels, the mean fill is used instead)
    padfield = invalid > 0.1 and ref.size * 2**ref.ndim <= 16_000_000
    if padfield:
        # integer-pixel only (scikit-image's masked variant); sub-pixel is ours below
        coarse = phase_cross_correlation(
            ref_f,
            tgt_f,
            reference_mask=ref_mask if ref_mask is not None else np.ones(ref.shape, bool),
            moving_mask=tgt_mask if tgt_mask is not None else np.ones(ref.shape, bool),
        )[0]
    elif refine == "gradient":
        coarse = whole_pixels  # the surface's peak, as phase_cross_correlation(upsample_factor=1) finds it
    else:
        coarse = phase_cross_correlation(*spectra(), space="fourier", upsample_factor=upsample_factor)[0]
    coarse = np.asarray(coarse, dtype=float)
    method = refine + ("+masked" if padfield else "")

    fit: _Fit | None = None
    if refine == "gradient" and skip_below > 0:
        joint = ref_mask if tgt_mask is None else (tgt_mask if ref_mask is None else ref_mask & tgt_mask)
        whole = abs(_aligned_ncc(ref_f, tgt_f, coarse, joint)) * max(0.0, 1.0 - 1.0 / peak_ratio)
        if whole < skip_below:
            refine = "skipped"
            method = "skipped" + ("+masked" if padfield else "")
    if refine == "gradient":
        fit = _gradient_refine(
            ref, ref_mask, tgt, tgt_mask, coarse,
            max_iterations=max_iterations, tolerance_px=tolerance_px, max_step_px=2.0, sigma_px=smoothing_px,
        )
        if fit is None:
            logger.debug("gradient refinement failed from %s; keeping the upsampled estimate", coarse.tolist())
            coarse = np.asarray(
                phase_cross_correlation(*spectra(), space="fourier", upsample_factor=upsample_factor)[0],
                dtype=float,
            ) if not padfield else coarse
            method = "upsample" + ("+masked" if padfield else "")
    elif refine == "iterate":
        estimate = coarse
        for _ in range(3):
            moved = ndimage.shift(tgt_f, estimate, order=3, mode="nearest")
            moved_freq = sfft.fftn(((moved - moved.mean()) * window).astype(np.float32))
            step = phase_cross_correlation(spectra()[0], moved_freq, space="fourier", upsample_factor=upsample_factor)[0]
            estimate = estimate + np.asarray(step, dtype=float)
        coarse = estimate

    extra: dict[str, Any]
    if fit is not None:
        shift, ncc = fit.shift, fit.ncc
        extra = {
            "std_px": fit.std_px, "ncc_before": fit.ncc_before, "gain": fit.gain, "offset": fit.offset,
            "iterations": fit.iterations, "converged": fit.converged, "valid_fraction": fit.valid_fraction,
        }
    else:
        shift = coarse
        joint = ref_mask if tgt_mask is None else (tgt_mask if ref_mask is None else ref_mask & tgt_mask)
        ncc = _aligned_ncc(ref_f, tgt_f, shift, joint)
        extra = {"valid_fraction": n_valid / ref.size, "converged": refine not in ("gradient", "skipped")}
    if max_shift_px is not None and float(np.max(np.abs(shift))) > max_shift_px:
        raise RegistrationFailed(
            f"phase correlation found a shift of {np.round(shift, 2).tolist()} px, beyond max_shift_px={max_shift_px}; "
            "raise max_shift_px or start from a better initial alignment"
        )
    reliability = max(0.0, 1.0 - 1.0 / peak_ratio) * min(abs(ncc), 1.0) if math.isfinite(peak_ratio) else abs(ncc)
    return PhaseShift(
        shift=tuple(float(v) for v in shift),
        reliability=float(reliability),
        peak_ratio=float(peak_ratio),
        error=float(math.sqrt(max(0.0, 1.0 - ncc * ncc))),
        ncc=float(ncc),
        method=method,
        **extra,
    )


def _log_polar_magnitude(image: np.ndarray, radius: int, n_angles: int) -> np.ndarray:
    """Fourier magnitude of a band-passed, apodized image on a log-polar grid (half circle: it is symmetric)."""
    from skimage.filters import difference_of_gaussians
    from skimage.transform import warp_polar

    band = difference_of_gaussians(image, 2.0)
    spectrum = np.abs(sfft.fftshift(sfft.fft2(band * _apodize(image.shape))))
    polar = warp_polar(spectrum, radius=radius, output_shape=(2 * n_angles, n_angles), scaling="log", order=1)
    return polar[:n_angles]


def _rotation_scale(reference: np.ndarray, target: np.ndarray, allow_scale: bool) -> tuple[float, float, float]:
    """Angle (degrees, modulo 180) and scale of the target's content relative to the reference's; peak ratio."""
    from skimage.registration import phase_cross_correlation

    n_angles = 180
    radius = max(8, min(reference.shape) // 4)  # the low-to-mid frequencies carry the structure
    ref_lp = _log_polar_magnitude(reference, radius, n_angles)
    tgt_lp = _log_polar_magnitude(target, radius, n_angles)
    found = phase_cross_correlation(ref_lp, tgt_lp, upsample_factor=20, normalization=None)[0]
    peak = _peak_ratio(sfft.fftn(ref_lp - ref_lp.mean()), sfft.fftn(tgt_lp - tgt_lp.mean()))
    angle = float(found[0]) * 180.0 / n_angles
    klog = n_angles / math.log(radius)  # columns per unit of log-radius
    scale = float(math.exp(float(found[1]) / klog)) if allow_scale else 1.0
    return angle, scale, peak


def _similarity_matrix(angle_deg: float, scale: float, centre: np.ndarray) -> np.ndarray:
    """Reference pixel ``(col, row)`` -> target pixel for content turned ``angle_deg`` ccw (as displayed) and scaled."""
    theta = math.radians(-angle_deg)  # rows point down: a ccw turn on screen is clockwise in (col, row)
    linear = np.eye(3)
    linear[:2, :2] = scale * np.array([[math.cos(theta), -math.sin(theta)], [math.sin(theta), math.cos(theta)]])
    linear[:2, 2] = centre - linear[:2, :2] @ centre
    return linear


def _warp_back(target: np.ndarray, target_mask: np.ndarray | None, matrix: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Target resampled on the reference frame through ``matrix`` (reference pixel -> target pixel), and its mask."""
    from skimage.transform import AffineTransform, warp

    tform = AffineTransform(matrix=matrix)
    moved = warp(target, tform, order=3, mode="constant", cval=np.nan, preserve_range=True)
    ok = np.isfinite(moved)
    if target_mask is not None:
        ok &= warp(target_mask.astype(float), tform, order=0, mode="constant", cval=0.0) > 0.5
    ok = ndimage.binary_erosion(ok, iterations=2)
    return np.where(ok, moved, 0.0), ok


def _refine_similarity(
    reference: np.ndarray,
    ref_mask: np.ndarray | None,
    target: np.ndarray,
    tgt_mask: np.ndarray | None,
    matrix: np.ndarray,
    *,
    allow_scale: bool,
    max_iterations: int = 30,
) -> tuple[np.ndarray, float, float] | None:
    """Gauss-Newton fit of ``reference(p) ~ gain * target(M p) + offset`` over rotation, [scale], translation.

    ``M`` maps reference pixels ``(col, row)`` to target pixels and is
    parametrised about the image centre as ``M q = s R(theta) q + c + t``.
    Returns the refined matrix and the normalised correlation at the end and at the start.
    """
    centre = np.array([(reference.shape[1] - 1) / 2.0, (reference.shape[0] - 1) / 2.0])
    lin = matrix[:2, :2]
    log_s = 0.5 * math.log(abs(np.linalg.det(lin)))
    theta = math.atan2(lin[1, 0], lin[0, 0])
    trans = matrix[:2, :2] @ centre + matrix[:2, 2] - centre
    coeffs = ndimage.spline_filter(target, order=3, mode="mirror")
    tgt_ok = None if tgt_mask is None else ndimage.binary_erosion(tgt_mask, iterations=_EDGE_PX + 1, border_value=1)
    rows, cols = np.mgrid[0 : reference.shape[0], 0 : reference.shape[1]].astype(np.float64)
    q = np.stack([cols.ravel() - centre[0], rows.ravel() - centre[1]])
    ref_flat = reference.ravel()
    ref_ok = np.ones(ref_flat.size, bool) if ref_mask is None else ref_mask.ravel()
    gain, offset = math.nan, 0.0
    ncc = first_ncc = math.nan
    extent = float(np.abs(q).max())
    for _ in range(max_iterations):
        s = math.exp(log_s)
        rot = np.array([[math.cos(theta), -math.sin(theta)], [math.sin(theta), math.cos(theta)]])
        pos = s * rot @ q + (centre + trans)[:, None]  # (col, row) in the target
        inside = (pos[0] >= 2) & (pos[0] <= target.shape[1] - 3) & (pos[1] >= 2) & (pos[1] <= target.shape[0] - 3)
        valid = ref_ok & inside
        if tgt_ok is not None:
            near = np.clip(np.round(pos).astype(int), 0, [[target.shape[1] - 1], [target.shape[0] - 1]])
            valid &= tgt_ok[near[1], near[0]]
        if valid.sum() < 64:
            return None
        warped = ndimage.map_coordinates(coeffs, [pos[1], pos[0]], order=3, prefilter=False, mode="nearest")
        # gradient of the target at pos: grad_p(w) = M^T grad t  =>  grad t = M^-T grad_p(w)
        g_row_p, g_col_p = np.gradient(warped.reshape(reference.shape))
        m_inv_t = np.linalg.inv(s * rot).T
        g_col = m_inv_t[0, 0] * g_col_p.ravel()[valid] + m_inv_t[0, 1] * g_row_p.ravel()[valid]
        g_row = m_inv_t[1, 0] * g_col_p.ravel()[valid] + m_inv_t[1, 1] * g_row_p.ravel()[valid]
        w = warped[valid]
        r = ref_flat[valid]
        if math.isnan(gain):
            wm, rm = w.mean(), r.mean()
            var = _dot(w - wm, w - wm)
            gain = _dot(w - wm, r - rm) / var if var > 0 else 1.0
            offset = float(rm - gain * wm)
        residual = r - (gain * w + offset)
        ncc = _ncc(r, w)
        if math.isnan(first_ncc):
            first_ncc = ncc
        qv = q[:, valid]
        rq = s * rot @ qv  # d pos / d log_s
        drot = s * np.array([[-math.sin(theta), -math.cos(theta)], [math.cos(theta), -math.sin(theta)]]) @ qv
        columns = [gain * (g_col * drot[0] + g_row * drot[1])]
        if allow_scale:
            columns.append(gain * (g_col * rq[0] + g_row * rq[1]))
        columns += [gain * g_col, gain * g_row, w, np.ones_like(w)]
        jac = np.stack(columns)
        normal = jac @ jac.T
        try:
            step = np.linalg.solve(normal, jac @ residual)
        except np.linalg.LinAlgError:
            return None
        k = 0
        theta += float(step[k])
        k += 1
        if allow_scale:
            log_s += float(step[k])
            k += 1
        trans = trans + step[k : k + 2]
        gain += float(step[k + 2])
        offset += float(step[k + 3])
        moved_px = abs(step[0]) * extent + (abs(step[1]) * extent if allow_scale else 0.0) + np.abs(step[k : k + 2]).max()
        if moved_px < 1e-3:
            break
    s = math.exp(log_s)
    out = np.eye(3)
    out[:2, :2] = s * np.array([[math.cos(theta), -math.sin(theta)], [math.sin(theta), math.cos(theta)]])
    out[:2, 2] = centre + trans - out[:2, :2] @ centre
    return out, ncc, first_ncc


@one_blas_thread
def fourier_mellin(
    reference: np.ndarray | SpatialImage,
    target: np.ndarray | SpatialImage,
    *,
    mask: np.ndarray | None = None,
    target_mask: np.ndarray | None = None,
    max_scale: float = 2.0,
    allow_scale: bool = True,
    refine: bool = True,
) -> PhaseSimilarity:
    """Find rotation, scale and translation between two 2D images (Fourier-Mellin).

    The magnitudes of the images' spectra do not depend on translation;
    resampled on a log-polar grid (:func:`skimage.transform.warp_polar`), a
    rotation becomes a shift along the angle axis and a scaling a shift along
    the log-radius axis, both found by phase correlation. A second pass on
    the target turned and scaled back refines them; the translation is then
    found by :func:`phase_correlate`, and all four parameters are refined
    together by least squares on the images. The 180-degree ambiguity of the
    magnitude spectrum is resolved by trying both.

    Parameters
    ----------
    reference, target : ndarray or SpatialImage
        2D single-channel images of the same shape.
    mask, target_mask : ndarray of bool, optional
        Valid pixels (True = use), as in :func:`phase_correlate`.
    max_scale : float
        Largest scale ratio accepted (either way).
    allow_scale : bool
        False fixes the scale at 1 (rotation and translation only).
    refine : bool
        Finish with a Gauss-Newton fit of angle, scale, translation, gain and
        offset on the images (cubic B-spline interpolation, under the masks).

    Returns
    -------
    PhaseSimilarity
        ``matrix`` maps reference pixel coordinates ``(col, row)`` to target pixel coordinates.

    Examples
    --------
    >>> import numpy as np
    >>> from skimage import data, transform
    >>> reference = data.camera()[64:448, 64:448].astype(float)
    >>> target = transform.rotate(reference, 12.0, preserve_range=True)   # content turned 12 degrees ccw
    >>> found = fourier_mellin(reference, target, allow_scale=False)
    >>> round(found.angle_deg)
    12
    """
    ref, ref_mask = _as_array_and_mask(reference, mask, "reference")
    tgt, tgt_mask = _as_array_and_mask(target, target_mask if target_mask is not None else mask, "target")
    if ref.ndim != 2 or ref.shape != tgt.shape:
        raise GeometryError(f"Fourier-Mellin takes two 2D images of one shape; got {ref.shape} and {tgt.shape}")
    ref_f, tgt_f = _fill(ref, ref_mask), _fill(tgt, tgt_mask)
    centre = np.array([(ref.shape[1] - 1) / 2.0, (ref.shape[0] - 1) / 2.0])
    angle, scale, peak = _rotation_scale(ref_f, tgt_f, allow_scale)
    if not (1.0 / max_scale <= scale <= max_scale):
        raise RegistrationFailed(
            f"Fourier-Mellin found a scale of {scale:.3f}, outside [1/{max_scale}, {max_scale}]; "
            "the images may not overlap enough: crop them to a common area first"
        )
    best: tuple[float, PhaseSimilarity] | None = None
    for candidate in (angle, angle + 180.0):
        linear = _similarity_matrix(candidate, scale, centre)
        # second pass on the target turned and scaled back: the residual is small, and measured better
        moved, ok = _warp_back(tgt_f, tgt_mask, linear)
        if ok.sum() < 64:
            continue
        d_angle, d_scale, _ = _rotation_scale(ref_f, _fill(moved, ok), allow_scale)
        d_angle = (d_angle + 90.0) % 180.0 - 90.0
        if abs(d_angle) < 5.0 and 0.95 < d_scale < 1.05:
            linear = linear @ _similarity_matrix(d_angle, d_scale, centre)
            moved, ok = _warp_back(tgt_f, tgt_mask, linear)
        try:
            shift = phase_correlate(ref, moved, mask=ref_mask, target_mask=ok)
        except RegistrationFailed:
            continue
        # reference p ~ moved(p - shift) = target(L (p - shift)); shift is (row, col)
        translate = np.eye(3)
        translate[:2, 2] = -np.asarray(shift.shift)[::-1]
        matrix = linear @ translate
        if refine:
            refined = _refine_similarity(ref, ref_mask, tgt_f, tgt_mask, matrix, allow_scale=allow_scale)
            if refined is not None and abs(refined[1]) >= abs(refined[2]) - 1e-3:
                matrix = refined[0]
                shift = dataclasses.replace(shift, ncc=float(refined[1]), error=math.sqrt(max(0.0, 1 - refined[1] ** 2)))
        lin = matrix[:2, :2]
        result = PhaseSimilarity(
            angle_deg=float((math.degrees(-math.atan2(lin[1, 0], lin[0, 0])) + 180.0) % 360.0 - 180.0),
            scale=float(math.sqrt(abs(np.linalg.det(lin)))),
            matrix=matrix,
            translation=shift,
            reliability=float(max(0.0, 1.0 - 1.0 / peak) * shift.reliability) if math.isfinite(peak)
            else shift.reliability,
        )
        if best is None or abs(shift.ncc) > best[0]:
            best = (abs(shift.ncc), result)
    if best is None:
        raise RegistrationFailed("Fourier-Mellin left too little overlap after undoing rotation and scale")
    return best[1]


# ----------------------------------------------------------------------------- engine
def _resample_onto(fixed: SpatialImage, moving: SpatialImage, transform: Transform | None) -> tuple[np.ndarray, np.ndarray]:
    """The moving image (first channel) sampled on the fixed grid through ``transform`` (fixed -> moving), and its mask."""
    import SimpleITK as sitk

    moving1 = moving.channel(0) if moving.has_channels else moving
    values = moving1.replace(array=np.asarray(moving1.array, dtype=np.float64), mask=None, nodata=None)
    tx = transform.to_sitk() if transform is not None else sitk.Transform(fixed.ndim, sitk.sitkIdentity)
    reference = fixed.channel(0) if fixed.has_channels else fixed
    ref_sitk = reference.replace(array=np.zeros(reference.shape, np.float32), mask=None, nodata=None).to_sitk()
    out = sitk.Resample(values.to_sitk(), ref_sitk, tx, sitk.sitkBSpline, math.nan, sitk.sitkFloat64)
    array = sitk.GetArrayFromImage(out)
    valid_src = moving1.valid_mask()
    if not valid_src.all():
        mask_img = moving1.replace(array=valid_src.astype(np.uint8), mask=None, nodata=None).to_sitk()
        moved = sitk.GetArrayFromImage(sitk.Resample(mask_img, ref_sitk, tx, sitk.sitkNearestNeighbor, 0))
        valid = np.isfinite(array) & (moved > 0)
    else:
        valid = np.isfinite(array)
    return np.where(valid, array, 0.0), valid


class PhaseEngine:
    """Phase correlation behind the engine protocol: a translation (or similarity) in world units.

    The moving image is sampled on the fixed grid (through ``initial`` when
    given), the correction is found in fixed pixels and converted to a
    transform mapping fixed-space points to moving space (ITK's direction):
    ``moving_point = fixed_point + translation``. Stages asking for
    ``rigid``/``similarity``/``affine`` in 2D get Fourier-Mellin's similarity
    (rotation and scale); anything else gets a translation.

    Examples
    --------
    >>> import numpy as np
    >>> from scipy import ndimage
    >>> from coregister import SpatialImage
    >>> from coregister.config import RegistrationConfig, Stage, TransformModel
    >>> rng = np.random.default_rng(1)
    >>> base = ndimage.gaussian_filter(rng.normal(size=(80, 80)), 2)
    >>> fixed = SpatialImage(base, origin=(0.0, 0.0), spacing=(2.0, 2.0))
    >>> moving = fixed.replace(array=ndimage.shift(base, (0.0, 3.0), order=3))  # content 3 px = 6 mm to +x
    >>> config = RegistrationConfig(stages=(Stage(model=TransformModel.TRANSLATION),))
    >>> out = PhaseEngine().run(fixed, moving, config)
    >>> np.round(out.transform.translation, 3).tolist()                       # fixed point + 6 mm in moving
    [6.0, 0.0]
    """

    name = "phase"

    def run(
        self,
        fixed: SpatialImage,
        moving: SpatialImage,
        config: RegistrationConfig,
        *,
        initial: Transform | None = None,
        fixed_mask: np.ndarray | None = None,
        moving_mask: np.ndarray | None = None,
        progress: ProgressCallback | None = None,
    ) -> EngineOutput:
        """Estimate the transform mapping fixed-space points to moving space (see the class docstring)."""
        if fixed.ndim != moving.ndim:
            raise GeometryError(f"fixed is {fixed.ndim}D and moving {moving.ndim}D; register images of one dimension")
        warnings: list[str] = []
        if moving_mask is not None:
            moving = moving.replace(mask=np.asarray(moving_mask, bool) & moving.valid_mask())
        same_grid = initial is None and fixed.same_geometry(moving)
        if same_grid:
            moving1 = moving.channel(0) if moving.has_channels else moving
            target = np.asarray(moving1.array, dtype=np.float64)
            target_valid = moving1.valid_mask()
        else:
            target, target_valid = _resample_onto(fixed, moving, initial)
        fixed1 = fixed.channel(0) if fixed.has_channels else fixed
        reference = np.asarray(fixed1.array, dtype=np.float64)
        ref_valid = fixed1.valid_mask()
        if fixed_mask is not None:
            ref_valid &= np.asarray(fixed_mask, dtype=bool)
        model = config.stages[0].model if config.stages else TransformModel.TRANSLATION
        index_to_world = fixed.affine  # homogeneous, index in ITK order (x, y[, z])
        extras: dict[str, Any] = {}
        if fixed.ndim == 2 and model in (TransformModel.RIGID, TransformModel.SIMILARITY, TransformModel.AFFINE):
            if model is TransformModel.AFFINE:
                warnings.append("phase correlation estimates a similarity, not an affine; shear left at zero")
            found = fourier_mellin(
                reference, target, mask=ref_valid, target_mask=target_valid,
                allow_scale=model is not TransformModel.RIGID,
            )
            world = index_to_world @ found.matrix @ np.linalg.inv(index_to_world)
            transform: Transform = _linear_from_world(world)
            extras["phase"] = found.to_dict()
            reliability = found.reliability
        else:
            shift = phase_correlate(reference, target, mask=ref_valid, target_mask=target_valid)
            step = -np.asarray(shift.shift, dtype=float)[::-1]  # reference index x -> target index x - shift (ITK order)
            transform = Translation(index_to_world[:-1, :-1] @ step)
            extras["phase"] = shift.to_dict()
            reliability = shift.reliability
        if progress is not None:
            progress("phase", 0, 1, float(reliability))
        if initial is not None:
            transform = initial @ transform
        if reliability < 0.2:
            warnings.append(f"phase correlation is unreliable here (reliability {reliability:.2f} < 0.2)")
        return EngineOutput(transform=transform, engine=self.name, warnings=tuple(warnings), extras=extras)


def _linear_from_world(world: np.ndarray) -> Transform:
    """A Similarity when the homogeneous world matrix is a scaled rotation, an Affine otherwise."""
    matrix = world[:-1, :-1]
    scale = math.sqrt(abs(float(np.linalg.det(matrix))))
    rotation = matrix / scale
    if np.allclose(rotation @ rotation.T, np.eye(2), atol=1e-9) and np.linalg.det(rotation) > 0:
        return Similarity(scale, rotation, translation=world[:-1, -1])
    return Affine.from_homogeneous(world)

