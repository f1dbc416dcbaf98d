"""OpenCV's ECC (``cv2.findTransformECC`` and relatives) as an engine, for 2D images.

OpenCV estimates a warp between pixel grids; this module takes it to world
coordinates and back (``P = W_moving . W . W_fixed^-1`` with ``W_*`` the
images' world-from-index matrices), so its answer is a
:mod:`coregister.transforms` value like every other engine's, mapping
fixed-space points to moving space.

What the wrapper adds to a bare ``findTransformECC`` call:

* a pyramid (``cv2.pyrDown``), coarse to fine, each level started from the
  previous one; or OpenCV's own ``findTransformECCMultiScale`` where the
  installed OpenCV has it (``extra=(("opencv_pyramid", "multiscale"),)``);
* validity masks on both sides (``findTransformECCWithMask``, OpenCV >= 4.13 /
  5): the fixed mask, and the moving image's valid region, which OpenCV warps
  with the current estimate, so a warped black border stops pulling the
  answer (without it a 4-level pyramid stalls 0.36-0.45 px off on 512 x 512
  photos);
* ``cv2.error`` (OpenCV raises when the correlation would decrease) becomes
  a warning and the last good estimate, never an exception: the fallback
  chain's quality check decides what to do with it.
"""

from __future__ import annotations

import logging
import time

import numpy as np

from coregister._opencv import cv2
from coregister.config import Initialisation, ProgressCallback, RegistrationConfig, Stage, TransformModel
from coregister.engines._common import grey_pair, is_conformal, valid_pair, world_from_pixel
from coregister.engines._models import initial_matrix, project, transform_from_matrix
from coregister.engines.base import EngineOutput, LevelHistory
from coregister.engines.ecc import default_pyramid
from coregister.errors import ConfigError, GeometryError
from coregister.image import SpatialImage
from coregister.transforms import Transform

__all__ = ["OpenCvEccEngine", "has_multiscale", "has_masked_ecc"]

logger = logging.getLogger(__name__)

_MOTION = {
    TransformModel.TRANSLATION: cv2.MOTION_TRANSLATION,
    TransformModel.RIGID: cv2.MOTION_EUCLIDEAN,
    TransformModel.SIMILARITY: cv2.MOTION_AFFINE,  # OpenCV has no similarity model: affine, then projected
    TransformModel.AFFINE: cv2.MOTION_AFFINE,
    TransformModel.HOMOGRAPHY: cv2.MOTION_HOMOGRAPHY,
}


def has_multiscale() -> bool:
    """Whether the installed OpenCV has ``findTransformECCMultiScale``."""
    return hasattr(cv2, "findTransformECCMultiScale")


def has_masked_ecc() -> bool:
    """Whether the installed OpenCV has ``findTransformECCWithMask`` (masks on both images)."""
    return hasattr(cv2, "findTransformECCWithMask")


def _uint8_mask(valid: np.ndarray | None, shape: tuple[int, ...]) -> np.ndarray:
    if valid is None:
        return np.full(shape, 255, np.uint8)
    return np.where(valid, np.uint8(255), np.uint8(0))


class OpenCvEccEngine:
    """OpenCV's ECC behind the :class:`~coregister.engines.base.Engine` protocol (2D only).

    Options in the stage's ``extra``: ``("opencv_pyramid", "levels" | "multiscale" | "none")``
    (default ``"levels"``: a ``cv2.pyrDown`` pyramid with masks),
    ``("gauss_filter_size", 5)`` (OpenCV's ``gaussFiltSize``, odd) and
    ``("levels", n)`` (pyramid depth; default from the image size, as
    :func:`coregister.engines.ecc.default_pyramid`).

    Examples
    --------
    >>> import numpy as np
    >>> from scipy import ndimage
    >>> from skimage import data
    >>> from coregister.config import RegistrationConfig, Stage
    >>> fixed = SpatialImage(data.camera().astype(np.float32), origin=(0, 0), spacing=(1, 1))
    >>> moved = ndimage.shift(fixed.array, (1.5, -4.0), order=3, mode="nearest")
    >>> config = RegistrationConfig(stages=(Stage(model="translation"),))
    >>> out = OpenCvEccEngine().run(fixed, fixed.replace(array=moved), config)
    >>> out.engine, np.round(out.transform.translation, 1).tolist()
    ('opencv-ecc', [-4.0, 1.5])
    """

    name = "opencv-ecc"

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
        """Estimate the fixed -> moving transform with OpenCV's ECC, stage by stage."""
        if fixed.ndim != 2 or moving.ndim != 2:
            raise GeometryError(
                f"OpenCV's ECC is 2D; these images are {fixed.ndim}D and {moving.ndim}D (use engine 'ecc' for volumes)"
            )
        fixed, moving, warnings = grey_pair(fixed, moving)
        fixed_valid, moving_valid = valid_pair(fixed, moving, fixed_mask, moving_mask, config)
        centre = fixed.world_centre

        world = initial_matrix(initial, 2)
        if world is None:
            world = np.eye(3)
            if Initialisation.parse(config.initialisation) is not Initialisation.NONE:
                world[:2, 2] = moving.world_centre - centre
                if Initialisation.parse(config.initialisation) is not Initialisation.GEOMETRY:
                    logger.info("OpenCV ECC starts from the image centres (initialisation %s is for other engines)",
                                config.initialisation)
        fixed_values = np.ascontiguousarray(np.where(fixed_valid, fixed.array, 0), dtype=np.float32)
        moving_values = np.ascontiguousarray(np.where(moving_valid, moving.array, 0), dtype=np.float32)
        conformal = is_conformal(fixed) and is_conformal(moving)

        history: list[LevelHistory] = []
        model = TransformModel.AFFINE
        hit_cap = False
        failures = 0
        last_failed = False
        final_rho = float("nan")
        started = time.perf_counter()
        for stage_number, stage in enumerate(config.stages):
            model = TransformModel.parse(stage.model)
            if model not in _MOTION:
                raise ConfigError(f"OpenCV's ECC estimates translation, rigid, affine or homography; not {model.value!r}")
            motion = _MOTION[model]
            if model in (TransformModel.RIGID, TransformModel.SIMILARITY) and not conformal:
                motion = cv2.MOTION_AFFINE  # a pixel-grid rigid is not a world rigid on anisotropic pixels
            world = project(world, model, centre)
            warp = np.linalg.inv(moving.affine) @ world @ fixed.affine  # fixed index -> moving index
            stage_name = f"{stage_number}:{model.value}"
            warp, stage_history, stage_warnings, rho, capped = _run_stage(
                fixed_values, moving_values, fixed_valid, moving_valid, warp, motion, stage, stage_name, progress
            )
            last_failed = not stage_history or not stage_history[-1].metric_values
            history.extend(stage_history)
            warnings.extend(stage_warnings)
            failures += len(stage_warnings)
            hit_cap = capped
            if np.isfinite(rho):
                final_rho = rho
            world = world_from_pixel(warp, fixed, moving)
            if model is TransformModel.SIMILARITY or motion != _MOTION[model]:
                world = project(world, model, centre)
        elapsed = time.perf_counter() - started
        return EngineOutput(
            transform=transform_from_matrix(world, model, center=centre),
            engine=self.name,
            history=tuple(history),
            warnings=tuple(warnings),
            hit_iteration_cap=hit_cap,
            converged=not (last_failed or not np.isfinite(final_rho)),
            final_metric=final_rho,
            extras={"ecc": final_rho, "optimisation_time_s": elapsed},
        )


def _pyramid_depth(stage: Stage, shape: tuple[int, ...]) -> int:
    options = dict(stage.extra)
    if "levels" in options:
        return max(1, int(options["levels"]))
    if stage.shrink_factors is not None:
        return max(1, int(round(np.log2(max(stage.shrink_factors)))) + 1)
    return len(default_pyramid(shape, (1.0,) * len(shape))[0])


def _run_stage(
    fixed: np.ndarray,
    moving: np.ndarray,
    fixed_valid: np.ndarray,
    moving_valid: np.ndarray,
    warp: np.ndarray,
    motion: int,
    stage: Stage,
    stage_name: str,
    progress: ProgressCallback | None,
) -> tuple[np.ndarray, list[LevelHistory], list[str], float, bool]:
    options = dict(stage.extra)
    mode = str(options.get("opencv_pyramid", "levels"))
    if mode not in ("levels", "multiscale", "none"):
        raise ConfigError(f"opencv_pyramid={mode!r}: choose 'levels', 'multiscale' or 'none'")
    gauss = int(options.get("gauss_filter_size", 5))
    if gauss < 1 or gauss % 2 == 0:
        raise ConfigError(f"gauss_filter_size={gauss}: OpenCV needs an odd size >= 1")
    iterations = int(stage.iterations)
    criteria = (cv2.TERM_CRITERIA_COUNT | cv2.TERM_CRITERIA_EPS, iterations, 1e-6)
    depth = 1 if mode == "none" else _pyramid_depth(stage, fixed.shape)
    history: list[LevelHistory] = []
    warnings: list[str] = []
    rho = float("nan")
    capped = False
    homography = motion == cv2.MOTION_HOMOGRAPHY

    def as_cv(w: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(w if homography else w[:2], dtype=np.float32)

    def from_cv(w: np.ndarray) -> np.ndarray:
        out = np.eye(3)
        out[: w.shape[0]] = w
        return out

    if mode == "multiscale":
        if not has_multiscale():
            raise ConfigError("the installed OpenCV has no findTransformECCMultiScale; use opencv_pyramid='levels'")
        params = cv2.ECCParameters()
        params.motionType = motion
        params.nlevels = depth
        params.criteria = criteria
        params.gaussFiltSize = gauss
        try:
            rho, out = cv2.findTransformECCMultiScale(
                fixed, moving, as_cv(warp), params, _uint8_mask(fixed_valid, fixed.shape), _uint8_mask(moving_valid, moving.shape)
            )
            warp = from_cv(out)
        except cv2.error as exc:
            warnings.append(f"OpenCV ECC (multiscale) stage {stage_name} did not converge: {_reason(exc)}")
        history.append(LevelHistory(stage_name, 0, 1.0, 0.0, (float(rho),) if np.isfinite(rho) else (), "opencv multiscale"))
        return warp, history, warnings, float(rho), capped

    fixed_levels = [(fixed, fixed_valid)]
    moving_levels = [(moving, moving_valid)]
    for _ in range(depth - 1):
        f, fv = fixed_levels[-1]
        m, mv = moving_levels[-1]
        fixed_levels.append((cv2.pyrDown(f), _shrink_mask(fv)))
        moving_levels.append((cv2.pyrDown(m), _shrink_mask(mv)))
    for level in range(depth - 1, -1, -1):
        values: tuple[float, ...]
        scale = np.diag([2.0**level, 2.0**level, 1.0])
        level_warp = np.linalg.inv(scale) @ warp @ scale
        f, fv = fixed_levels[level]
        m, mv = moving_levels[level]
        try:
            if has_masked_ecc():
                rho, out = cv2.findTransformECCWithMask(
                    f, m, _uint8_mask(fv, f.shape), _uint8_mask(mv, m.shape), as_cv(level_warp), motion, criteria, gauss
                )
            else:  # older OpenCV: the moving mask only
                rho, out = cv2.findTransformECC(f, m, as_cv(level_warp), motion, criteria, _uint8_mask(mv, m.shape), gauss)
            warp = scale @ from_cv(out) @ np.linalg.inv(scale)
            stop, values = "opencv converged", (float(rho),)
        except cv2.error as exc:
            stop, values = f"did not converge: {_reason(exc)}", ()
            warnings.append(f"OpenCV ECC stage {stage_name}, level {depth - 1 - level} (shrink {2**level}) {stop}")
        if progress is not None and values:
            progress(stage_name, depth - 1 - level, 0, values[0])
        history.append(LevelHistory(stage_name, depth - 1 - level, float(2**level), 0.0, values, stop))
    return warp, history, warnings, float(rho), capped


def _shrink_mask(mask: np.ndarray) -> np.ndarray:
    """Mask for a ``pyrDown`` level: valid where the 5x5 kernel saw only valid pixels."""
    eroded = cv2.erode(mask.astype(np.uint8), np.ones((5, 5), np.uint8), borderType=cv2.BORDER_REPLICATE)
    return eroded[::2, ::2].astype(bool)


def _reason(exc: cv2.error) -> str:
    text = str(exc).strip().splitlines()
    for line in text:
        if "error:" in line:
            return line.split("error:", 1)[1].strip()
    return text[-1] if text else type(exc).__name__
