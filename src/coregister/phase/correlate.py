"""The translation between two images (2D or 3D) by phase correlation, refined to a small fraction of a pixel.

:func:`phase_correlate` starts from scikit-image's
:func:`~skimage.registration.phase_cross_correlation` (its masked variant
when much is masked). Plain upsampled phase correlation is pulled towards
whole pixels (about 0.1 px wrong at fractions 0.3-0.4 and 0.6-0.7); the
default refinement (``refine="gradient"``, :mod:`coregister.phase.refine`)
is a Gauss-Newton fit of shift, gain and offset on the images themselves
(cubic B-spline interpolation of the target), which works under masks too
(scikit-image's masked variant is integer-pixel only).

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
from coregister.errors import ConfigError, GeometryError, RegistrationFailed
from coregister.image import SpatialImage
from coregister.phase._common import _apodize, _as_array_and_mask, _fill, _ncc, _phase_peak
from coregister.phase.refine import _Fit, _gradient_refine

__all__ = ["PhaseShift", "phase_correlate"]

logger = logging.getLogger(__name__)

_REFINE = ("gradient", "upsample", "iterate")


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
