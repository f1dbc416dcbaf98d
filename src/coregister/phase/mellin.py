"""Rotation and scale between two 2D images (Fourier-Mellin), then the translation.

:func:`fourier_mellin` resamples the Fourier magnitudes on a log-polar grid
(:func:`skimage.transform.warp_polar`), where a rotation and a scaling become
shifts found by phase correlation; the translation follows from
:func:`~coregister.phase.phase_correlate`, and all four parameters are
refined together on the images (:func:`_refine_similarity`).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np
from scipy import fft as sfft
from scipy import ndimage

from coregister._blas import one_blas_thread
from coregister.errors import GeometryError, RegistrationFailed
from coregister.image import SpatialImage
from coregister.phase._common import _EDGE_PX, _apodize, _as_array_and_mask, _dot, _fill, _ncc, _peak_ratio
from coregister.phase.correlate import PhaseShift, phase_correlate

__all__ = ["PhaseSimilarity", "fourier_mellin"]


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
