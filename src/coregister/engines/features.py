"""Feature-based 2D registration: keypoints, descriptor matching, a robust fit, optional ECC refinement.

The pipeline practitioners reach for with photos taken from different
viewpoints, where intensity methods have no capture range:

1. detect keypoints and compute descriptors **once per image** (ORB by
   default, SIFT on request; AKAZE and BRISK only where the installed OpenCV
   provides them: ``opencv-python-headless`` 5.0 does not), inside the
   images' valid masks;
2. match descriptors (brute force, Hamming for binary descriptors, L2 for
   SIFT) and keep matches that pass Lowe's ratio test;
3. fit the model robustly: MAGSAC (``cv2.USAC_MAGSAC``, where available)
   for affine and homography, RANSAC for similarity/rigid
   (``estimateAffinePartial2D`` has no USAC variant), a one-point consensus
   for translation; then a least-squares fit on the inliers (Kabsch/Umeyama
   for rigid and similarity);
4. optionally (default) refine the estimate with the ECC engine
   (:func:`coregister.engines.ecc.ecc_register`) started from it, which takes
   the answer from keypoint precision (0.1-1 px) to intensity precision
   (~0.01 px). A warped image's constant border would pull it off by tenths
   of a pixel: it is found through the feature fit and left out
   (:func:`coregister.preprocess.warp_fill_masks`; a background both images
   share is kept).

Keypoints live on pixel grids; the fit is taken to world coordinates as
``P = W_moving . H . W_fixed^-1``, so the transform maps fixed-space points
to moving space like every engine's. ``extras`` carries the keypoint,
match and inlier counts and the inliers' reprojection error (px).
"""

from __future__ import annotations

import logging
import time
from typing import Any

import numpy as np

from coregister._opencv import cv2
from coregister.config import Detector, ProgressCallback, RegistrationConfig, Stage, TransformModel
from coregister.engines._common import (
    EXCLUDE_WARP_FILL,
    grey_pair,
    is_conformal,
    valid_pair,
    valid_pixels,
    world_from_pixel,
)
from coregister.engines._models import project, transform_from_matrix
from coregister.engines.base import EngineOutput, LevelHistory
from coregister.engines.ecc import default_pyramid, ecc_register
from coregister.errors import ConfigError, GeometryError, RegistrationFailed
from coregister.image import SpatialImage
from coregister.transforms import Transform

__all__ = ["DETECTORS", "FeatureEngine", "available_detectors", "detect", "match"]

logger = logging.getLogger(__name__)

DETECTORS = tuple(d.value for d in Detector)
_FACTORIES = {"orb": "ORB_create", "sift": "SIFT_create", "akaze": "AKAZE_create", "brisk": "BRISK_create"}
_BINARY = {"orb", "akaze", "brisk"}
_MIN_MATCHES = {
    TransformModel.TRANSLATION: 3,
    TransformModel.RIGID: 4,
    TransformModel.SIMILARITY: 4,
    TransformModel.AFFINE: 6,
    TransformModel.HOMOGRAPHY: 8,
}


def available_detectors() -> tuple[str, ...]:
    """Detectors the installed OpenCV provides, among ``orb``, ``sift``, ``akaze``, ``brisk``.

    Examples
    --------
    >>> {"orb", "sift"} <= set(available_detectors())
    True
    """
    return tuple(name for name in DETECTORS if hasattr(cv2, _FACTORIES[name]))


def _create(detector: str, max_features: int) -> Any:
    if detector not in DETECTORS:
        raise ConfigError(f"detector={detector!r}: choose one of {', '.join(DETECTORS)}")
    if not hasattr(cv2, _FACTORIES[detector]):
        raise ConfigError(
            f"the installed OpenCV {cv2.__version__} has no {detector.upper()}; use one of "
            f"{', '.join(available_detectors())} (opencv-contrib would clash with opencv-python-headless)"
        )
    factory = getattr(cv2, _FACTORIES[detector])
    if detector == "orb":
        return factory(nfeatures=int(max_features))
    if detector == "sift":
        return factory(nfeatures=int(max_features))
    return factory()


def _to_uint8(values: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """8-bit version for the detectors: the 0.5-99.5 percentiles of the valid pixels to 0-255, the median to mid-grey.

    The power law that brings the median to 128 leaves ordinary photographs
    nearly as they are (gamma 0.7-1.4) and opens up the shadows of a
    high-dynamic-range image, whose linear 8-bit version is black but for its
    highlights (no keypoint there).

    Examples
    --------
    >>> hdr = np.exp(np.linspace(0.0, 9.0, 1000)).reshape(20, 50)  # four decades
    >>> out = _to_uint8(hdr, np.ones(hdr.shape, bool))
    >>> float(np.median(out)), int(out.min()), int(out.max())  # linearly, the median would be 3
    (127.5, 0, 255)
    """
    inside = values[valid]
    if inside.size == 0:
        raise ConfigError("the mask selects no pixel; features need a non-empty valid region")
    low, middle, high = np.percentile(inside, (0.5, 50.0, 99.5))
    if high <= low:
        return np.clip(values - low, 0, 255).astype(np.uint8)
    unit = np.clip((values - low) / (high - low), 0.0, 1.0)
    median = float(np.clip((middle - low) / (high - low), 1e-3, 1 - 1e-3))
    gamma = float(np.clip(np.log(0.5) / np.log(median), 0.1, 10.0))
    return np.round(255.0 * unit**gamma).astype(np.uint8)


def detect(
    image: np.ndarray, *, valid: np.ndarray | None = None, detector: str = "orb", max_features: int = 2000
) -> tuple[np.ndarray, np.ndarray | None]:
    """Keypoints (``(n, 2)`` pixel coordinates ``(x, y)``) and descriptors of a 2D array.

    Parameters
    ----------
    image : ndarray (H, W)
        Grey values (any dtype; scaled to 8 bits by percentiles).
    valid : ndarray of bool, optional
        Where keypoints may be detected.
    detector : {"orb", "sift", "akaze", "brisk"}
    max_features : int
        Keypoint budget (ORB and SIFT).

    Examples
    --------
    >>> from skimage import data
    >>> points, descriptors = detect(data.camera(), max_features=500)
    >>> points.shape[1], descriptors.shape[0] == points.shape[0], 400 < len(points) <= 500
    (2, True, True)
    """
    values = np.asarray(image, dtype=np.float64)
    if values.ndim != 2:
        raise GeometryError(f"feature detection needs a 2D grey image; got shape {values.shape}")
    valid = np.ones(values.shape, bool) if valid is None else np.asarray(valid, bool)
    eight = _to_uint8(values, valid)
    mask = None if bool(valid.all()) else np.where(valid, np.uint8(255), np.uint8(0))
    keypoints, descriptors = _create(detector, max_features).detectAndCompute(eight, mask)
    points = np.array([kp.pt for kp in keypoints], dtype=np.float64).reshape(-1, 2)
    return points, descriptors


def match(
    descriptors_fixed: np.ndarray | None,
    descriptors_moving: np.ndarray | None,
    *,
    binary: bool,
    ratio: float = 0.8,
) -> np.ndarray:
    """Index pairs ``(i_fixed, i_moving)`` of descriptor matches that pass Lowe's ratio test, shape ``(m, 2)``.

    Examples
    --------
    >>> import numpy as np
    >>> a = np.array([[0, 0], [10, 0], [0, 10]], np.float32)
    >>> match(a, a + 0.5, binary=False).tolist()
    [[0, 0], [1, 1], [2, 2]]
    """
    if not (0 < ratio <= 1):
        raise ConfigError(f"ratio={ratio!r}: Lowe's ratio test needs a value in (0, 1], typically 0.7-0.8")
    if descriptors_fixed is None or descriptors_moving is None or len(descriptors_fixed) < 2 or len(descriptors_moving) < 2:
        return np.zeros((0, 2), dtype=np.intp)
    matcher = cv2.BFMatcher(cv2.NORM_HAMMING if binary else cv2.NORM_L2)
    pairs = []
    for candidates in matcher.knnMatch(descriptors_fixed, descriptors_moving, k=2):
        if len(candidates) == 2 and candidates[0].distance < ratio * candidates[1].distance:
            pairs.append((candidates[0].queryIdx, candidates[0].trainIdx))
        elif len(candidates) == 1:
            pairs.append((candidates[0].queryIdx, candidates[0].trainIdx))
    return np.array(pairs, dtype=np.intp).reshape(-1, 2)


# --------------------------------------------------------------- fitting
def _fit_translation(src: np.ndarray, dst: np.ndarray, threshold: float) -> tuple[np.ndarray | None, np.ndarray]:
    """One-point consensus: the displacement most matches agree with (within ``threshold``), averaged over them."""
    shifts = dst - src
    candidates = shifts if len(shifts) <= 500 else shifts[np.linspace(0, len(shifts) - 1, 500).astype(int)]
    votes = (np.linalg.norm(shifts[None, :, :] - candidates[:, None, :], axis=2) < threshold).sum(axis=1)
    best = candidates[int(np.argmax(votes))]
    inliers = np.linalg.norm(shifts - best, axis=1) < threshold
    matrix = np.eye(3)
    matrix[:2, 2] = shifts[inliers].mean(axis=0)
    return matrix, inliers


def _umeyama(src: np.ndarray, dst: np.ndarray, *, with_scale: bool) -> np.ndarray:
    """Least-squares rotation (and scale) plus translation taking ``src`` to ``dst`` (Umeyama 1991)."""
    mu_s, mu_d = src.mean(axis=0), dst.mean(axis=0)
    a, b = src - mu_s, dst - mu_d
    u, sigma, vt = np.linalg.svd(b.T @ a / len(src))
    sign = np.diag([1.0, np.sign(np.linalg.det(u @ vt)) or 1.0])
    rotation = u @ sign @ vt
    scale = float(np.trace(np.diag(sigma) @ sign) / (a**2).sum(axis=1).mean()) if with_scale else 1.0
    matrix = np.eye(3)
    matrix[:2, :2] = scale * rotation
    matrix[:2, 2] = mu_d - scale * rotation @ mu_s
    return matrix


def _robust_method(name: str) -> int:
    if name == "magsac":
        if not hasattr(cv2, "USAC_MAGSAC"):
            logger.info("the installed OpenCV has no USAC_MAGSAC; using RANSAC")
            return cv2.RANSAC
        return cv2.USAC_MAGSAC
    if name == "ransac":
        return cv2.RANSAC
    raise ConfigError(f"robust={name!r}: choose 'magsac' or 'ransac'")


def _fit(
    model: TransformModel, src: np.ndarray, dst: np.ndarray, *, threshold: float, robust: str, seed: int
) -> tuple[np.ndarray | None, np.ndarray]:
    """Robust fit of ``model`` to matched pixel coordinates; ``(3x3 matrix or None, inlier mask)``."""
    cv2.setRNGSeed(int(seed))
    s32, d32 = src.astype(np.float32), dst.astype(np.float32)
    if model is TransformModel.TRANSLATION:
        return _fit_translation(src, dst, threshold)
    if model is TransformModel.HOMOGRAPHY:
        h, inliers = cv2.findHomography(s32, d32, _robust_method(robust), threshold, maxIters=5000, confidence=0.999)
        if h is None:
            return None, np.zeros(len(src), bool)
        inl = inliers.ravel().astype(bool)
        if inl.sum() >= 8:  # least-squares homography on the inliers (DLT, OpenCV normalises the points)
            h_ls, _ = cv2.findHomography(s32[inl], d32[inl], 0)
            if h_ls is not None:
                h = h_ls
        return np.asarray(h, dtype=np.float64), inl
    if model is TransformModel.AFFINE:
        a, inliers = cv2.estimateAffine2D(
            s32, d32, method=_robust_method(robust), ransacReprojThreshold=threshold, maxIters=5000, confidence=0.999
        )
    else:  # rigid, similarity: 4-dof RANSAC (no USAC variant exists for it), then a least-squares refit
        a, inliers = cv2.estimateAffinePartial2D(
            s32, d32, method=cv2.RANSAC, ransacReprojThreshold=threshold, maxIters=5000, confidence=0.999
        )
    if a is None:
        return None, np.zeros(len(src), bool)
    inl = inliers.ravel().astype(bool)
    matrix = np.eye(3)
    matrix[:2] = a
    if model in (TransformModel.RIGID, TransformModel.SIMILARITY) and inl.sum() >= 2:
        matrix = _umeyama(src[inl], dst[inl], with_scale=model is TransformModel.SIMILARITY)
    elif model is TransformModel.AFFINE and inl.sum() >= 3:
        design = np.c_[src[inl], np.ones(int(inl.sum()))]
        solution, *_ = np.linalg.lstsq(design, dst[inl], rcond=None)
        matrix[:2] = solution.T
    return matrix, inl


def gric(residuals: np.ndarray, sigma: float, parameters: int) -> float:
    """Torr's geometric robust information criterion of a 2D point map fitted to ``len(residuals)`` matches.

    Lower is better. ``residuals`` are transfer errors (px), ``sigma`` the
    matches' noise (px), ``parameters`` the model's degrees of freedom (6 for
    an affine, 8 for a homography). Both maps are 2-manifolds in the 4D space
    of a match (d = 2, r = 4); outliers cost a bounded 2 (r - d) each, and each
    parameter log(r n).

    Examples
    --------
    >>> exact = np.zeros(100)
    >>> gric(exact, 0.5, 8) - gric(exact, 0.5, 6)  # the same fit: the extra parameters cost 2 log(400)
    11.98...
    """
    d, r, n = 2, 4, len(residuals)
    rho = np.minimum((np.asarray(residuals) / max(sigma, 1e-9)) ** 2, 2.0 * (r - d))
    return float(rho.sum() + np.log(r) * d * n + np.log(r * n) * parameters)


#: degrees of freedom of the models :func:`gric` compares
_PARAMETERS = {TransformModel.TRANSLATION: 2, TransformModel.RIGID: 3, TransformModel.SIMILARITY: 4,
               TransformModel.AFFINE: 6, TransformModel.HOMOGRAPHY: 8}
#: the matches' noise is taken no smaller than this (px): keypoint positions are quantised by the detector
_MIN_SIGMA_PX = 0.3


def _select_model(
    candidates: tuple[TransformModel, ...], src: np.ndarray, dst: np.ndarray, *, threshold: float, robust: str, seed: int,
) -> tuple[TransformModel, dict[str, float]]:
    """The candidate model the matches support best by :func:`gric` (each fitted robustly to the same matches)."""
    fits = {m: _fit(m, src, dst, threshold=threshold, robust=robust, seed=seed) for m in candidates}
    usable = {m: f for m, f in fits.items() if f[0] is not None and int(f[1].sum()) >= _MIN_MATCHES[m]}
    if not usable:
        return candidates[-1], {}
    # the noise of the matches, from the most general model's inliers (robust: median absolute residual)
    general = max(usable, key=lambda m: _PARAMETERS[m])
    matrix, inliers = usable[general]
    spread = _reprojection_error(matrix, src[inliers], dst[inliers])  # type: ignore[arg-type]
    sigma = max(_MIN_SIGMA_PX, 1.4826 * float(np.median(spread)))
    scores = {m.value: gric(_reprojection_error(f[0], src, dst), sigma, _PARAMETERS[m])  # type: ignore[arg-type]
              for m, f in usable.items()}
    chosen = min(usable, key=lambda m: scores[m.value])
    logger.info("model selection (GRIC, sigma %.2f px): %s -> %s", sigma, scores, chosen.value)
    return chosen, scores


def _article(word: str) -> str:
    """``"an"`` before a vowel, else ``"a"``: "an affine", "a homography"."""
    return "an" if word[:1].lower() in "aeiou" else "a"


def _remedies(detector: str, others: str) -> str:
    """What to try next: SIFT (by its API and command-line names) unless it was SIFT already, then ``others``.

    Examples
    --------
    >>> _remedies("orb", "a looser ratio")
    "try detector='sift' (--detector sift on the command line) or a looser ratio"
    >>> _remedies("sift", "a looser ratio")
    'try a looser ratio'
    """
    if detector == Detector.SIFT.value:
        return f"try {others}"
    return f"try detector='sift' (--detector sift on the command line) or {others}"


def _reprojection_error(matrix: np.ndarray, src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    mapped = np.c_[src, np.ones(len(src))] @ matrix.T
    mapped = mapped[:, :2] / mapped[:, 2:3]
    return np.linalg.norm(mapped - dst, axis=1)


class FeatureEngine:
    """Keypoints + robust fit (+ ECC refinement) behind the :class:`~coregister.engines.base.Engine` protocol (2D).

    Options, in the (last) stage's ``extra``:

    ``detector``
        ``"orb"`` (default), ``"sift"``; ``"akaze"``/``"brisk"`` where OpenCV has them.
    ``max_features``
        Keypoints per image (default 2000).
    ``ratio``
        Lowe's ratio (default 0.8 for binary descriptors, 0.75 for SIFT).
    ``robust``
        ``"magsac"`` (default; ``cv2.USAC_MAGSAC``) or ``"ransac"``.
    ``reprojection_threshold_px``
        Inlier threshold (default 3 px).
    ``refine``
        ``True`` (default): ECC refinement of the fit with the same model.
    ``select_models``
        Models to choose among (e.g. ``("affine", "homography")``): each is
        fitted to the same matches and the one with the lowest :func:`gric`
        is kept (``extras["model"]``, ``extras["gric"]``); the fallback chain
        of ``preset="auto"`` asks for it on photographs.

    The model is the last stage's ``model`` (homography, affine, similarity,
    rigid or translation). ``extras``: ``keypoints`` (fixed, moving),
    ``matches``, ``inliers``, ``reprojection_error_px`` (RMS over inliers, of
    the feature fit), ``detector``, ``refined``, and the features-only
    transform as ``feature_transform``.

    Examples
    --------
    >>> import numpy as np
    >>> from skimage import data
    >>> from coregister.config import RegistrationConfig, Stage
    >>> from coregister.engines.ecc import ecc_register
    >>> fixed = SpatialImage(data.camera().astype(np.float32), origin=(0, 0), spacing=(1, 1))
    >>> from coregister.transforms import Homography
    >>> import cv2
    >>> h = np.array([[1.05, 0.03, -12.0], [-0.02, 0.98, 7.0], [2e-5, -1e-5, 1.0]])  # fixed -> moving pixels
    >>> moving = fixed.replace(array=cv2.warpPerspective(fixed.array, h, (512, 512), flags=cv2.INTER_CUBIC))
    >>> from coregister.preprocess import fill_mask
    >>> config = RegistrationConfig(stages=(Stage(model="homography"),))
    >>> out = FeatureEngine().run(fixed, moving, config, moving_mask=fill_mask(moving))  # ignore the black border
    >>> out.engine, out.extras["inliers"] > 50
    ('features', True)
    >>> corners = np.array([[0.0, 0.0], [511.0, 0.0], [511.0, 511.0], [0.0, 511.0]])
    >>> err = np.linalg.norm(out.transform.transform_points(corners) - Homography(h).transform_points(corners), axis=1)
    >>> bool(err.mean() < 0.1)
    True
    """

    name = "features"

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
        """Estimate the fixed -> moving transform from matched keypoints (``initial`` is not needed and is ignored)."""
        if fixed.ndim != 2 or moving.ndim != 2:
            raise GeometryError(
                f"feature registration is 2D; these images are {fixed.ndim}D and {moving.ndim}D (use an intensity engine)"
            )
        started = time.perf_counter()
        stage = config.stages[-1] if config.stages else Stage(model=TransformModel.HOMOGRAPHY)
        model = TransformModel.parse(stage.model)
        if model not in _MIN_MATCHES:
            raise ConfigError(f"features estimate translation, rigid, similarity, affine or homography; not {model.value!r}")
        options = dict(stage.extra)
        detector = str(options.get("detector", "orb")).lower()
        ratio = float(options.get("ratio", 0.8 if detector in _BINARY else 0.75))
        threshold = float(options.get("reprojection_threshold_px", 3.0))
        robust = str(options.get("robust", "magsac")).lower()
        refine = bool(options.get("refine", True))
        max_features = int(options.get("max_features", 2000))
        if initial is not None:
            logger.info("the feature engine ignores the initial transform (keypoints need none)")

        fixed, moving, warnings = grey_pair(fixed, moving)
        fixed_valid = valid_pixels(fixed, fixed_mask, "fixed_mask")
        moving_valid = valid_pixels(moving, moving_mask, "moving_mask")

        # 1-2: detect once per image, match
        points_f, desc_f = detect(np.asarray(fixed.array), valid=fixed_valid, detector=detector, max_features=max_features)
        points_m, desc_m = detect(np.asarray(moving.array), valid=moving_valid, detector=detector, max_features=max_features)
        pairs = match(desc_f, desc_m, binary=detector in _BINARY, ratio=ratio)
        needed = _MIN_MATCHES[model]
        if len(pairs) < needed:
            raise RegistrationFailed(
                f"{detector.upper()} found {len(points_f)} and {len(points_m)} keypoints but only {len(pairs)} matches "
                f"passed the ratio test ({ratio}); {_article(model.value)} {model.value} needs {needed}: "
                + _remedies(detector, "a larger max_features or a looser ratio")
            )
        src, dst = points_f[pairs[:, 0]], points_m[pairs[:, 1]]

        # 3: robust fit in pixel coordinates, then to world coordinates
        candidates = tuple(TransformModel.parse(m) for m in options.get("select_models", ()))
        selection: dict[str, float] = {}
        if len(candidates) > 1:
            model, selection = _select_model(candidates, src, dst, threshold=threshold, robust=robust, seed=config.seed)
            needed = _MIN_MATCHES[model]
        fit_model = model
        if model in (TransformModel.RIGID, TransformModel.SIMILARITY) and not (is_conformal(fixed) and is_conformal(moving)):
            fit_model = TransformModel.AFFINE  # a pixel rigid/similarity is not a world one on anisotropic pixels
        pixel_matrix, inliers = _fit(fit_model, src, dst, threshold=threshold, robust=robust, seed=config.seed)
        n_inliers = int(inliers.sum())
        if pixel_matrix is None or n_inliers < needed:
            raise RegistrationFailed(
                f"{len(pairs)} {detector.upper()} matches but only {n_inliers} agree on one {model.value} "
                f"(threshold {threshold} px); the images may not overlap, or "
                + _remedies(detector, "a looser reprojection_threshold_px")
            )
        residuals = _reprojection_error(pixel_matrix, src[inliers], dst[inliers])
        rms = float(np.sqrt(np.mean(residuals**2)))
        centre = fixed.world_centre
        try:
            world = project(world_from_pixel(pixel_matrix, fixed, moving), model, centre)
            feature_transform = transform_from_matrix(world, model, center=centre)
        except (np.linalg.LinAlgError, ValueError) as exc:  # a degenerate fit (all inliers on a line, say)
            raise RegistrationFailed(
                f"the {model.value} fitted to {n_inliers} {detector.upper()} inliers is degenerate ({exc}); "
                + _remedies(detector, "a stricter ratio")
            ) from exc
        history = [LevelHistory(f"features:{detector}", 0, 1.0, 0.0, (rms,), f"{n_inliers} inliers of {len(pairs)} matches")]
        extras: dict[str, Any] = {
            "detector": detector,
            "keypoints": (len(points_f), len(points_m)),
            "matches": len(pairs),
            "inliers": n_inliers,
            "inlier_ratio": n_inliers / len(pairs),
            "reprojection_error_px": rms,
            "feature_transform": feature_transform.to_dict(),
            "refined": False,
        }
        if selection:
            extras["model"] = model.value
            extras["gric"] = selection
        logger.debug("features: %d matches, %d inliers, rms %.3f px", len(pairs), n_inliers, rms)

        # 4: ECC refinement from the feature estimate
        transform: Transform = feature_transform
        hit_cap = False
        if refine:
            # ECC is pulled by a warped image's constant border: left out, told from a shared background
            # through the feature fit
            fixed_valid, moving_valid = valid_pair(fixed, moving, fixed_mask, moving_mask, config, transform=feature_transform)
            transform, refined, ecc_out = _refine(fixed, moving, feature_transform, model, stage, config, fixed_mask=fixed_valid,
                                                  moving_mask=moving_valid, progress=progress)
            if ecc_out is not None:
                history.extend(ecc_out.history)
                hit_cap = ecc_out.hit_iteration_cap
                extras["ecc"] = ecc_out.extras.get("ecc")
            if refined:
                extras["refined"] = True
            else:
                warnings.append(f"ECC refinement of the feature fit failed; kept the {detector.upper()} estimate"
                                + (f" ({'; '.join(ecc_out.warnings)})" if ecc_out is not None and ecc_out.warnings else ""))
        extras["optimisation_time_s"] = time.perf_counter() - started
        return EngineOutput(
            transform=transform,
            engine=self.name,
            history=tuple(history),
            warnings=tuple(warnings),
            hit_iteration_cap=hit_cap,
            extras=extras,
        )


def _refine(
    fixed: SpatialImage,
    moving: SpatialImage,
    start: Transform,
    model: TransformModel,
    stage: Stage,
    config: RegistrationConfig,
    *,
    fixed_mask: np.ndarray,
    moving_mask: np.ndarray,
    progress: ProgressCallback | None,
) -> tuple[Transform, bool, EngineOutput | None]:
    """ECC refinement started from the feature fit (a short pyramid: the fit is within a few pixels)."""
    factors = stage.shrink_factors or _refinement_factors(fixed.shape)
    refine_stage = Stage(
        model=model,
        shrink_factors=tuple(factors),
        smoothing_sigmas_mm=None if stage.shrink_factors is None else stage.smoothing_sigmas_mm,
        iterations=stage.iterations,
        # the masks given already leave out the warp fill
        extra=(*((k, v) for k, v in stage.extra if k == "max_samples"), (EXCLUDE_WARP_FILL, False)),
    )
    try:
        out = ecc_register(
            fixed,
            moving,
            config.replace(stages=(refine_stage,)),
            initial=start,
            fixed_mask=fixed_mask,
            moving_mask=moving_mask,
            progress=progress,
        )
    except (RegistrationFailed, ConfigError, GeometryError) as exc:
        logger.info("ECC refinement failed: %s", exc)
        return start, False, None
    return (out.transform, True, out) if out.converged else (start, False, out)


def _refinement_factors(shape: tuple[int, ...]) -> tuple[int, ...]:
    """Pyramid for refining a feature fit: down to about 128 px, at most 3 levels."""
    return default_pyramid(shape, (1.0,) * len(shape), min_size=128, max_levels=3)[0]
