"""The ECC engine's driver: stages over the pyramid from an initial matrix, a warp-fill refit, and the engine class.

:func:`ecc_register` runs each stage of the configuration over its pyramid
(:mod:`~coregister.engines.ecc.pyramid`), one level after another through
the solver (:mod:`~coregister.engines.ecc.solver`), and returns an
:class:`~coregister.engines.base.EngineOutput`; :class:`EccEngine` is the same
behind the :class:`~coregister.engines.base.Engine` protocol.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from typing import Any

import numpy as np
from scipy import ndimage

from coregister._blas import single_threaded_blas
from coregister.config import (
    Initialisation,
    ProgressCallback,
    RegistrationConfig,
    Stage,
    TransformModel,
)
from coregister.engines._common import EXCLUDE_WARP_FILL, grey_pair, valid_pair
from coregister.engines._models import initial_matrix, model_generators, project, transform_from_matrix
from coregister.engines.base import EngineOutput, LevelHistory
from coregister.engines.ecc.pyramid import MIN_SAMPLES, build_levels, default_pyramid, stage_pyramid
from coregister.engines.ecc.solver import rotation_search, solve_level
from coregister.errors import ConfigError, GeometryError, RegistrationFailed
from coregister.image import SpatialImage
from coregister.transforms import Transform

__all__ = ["EccEngine", "ecc_register"]

logger = logging.getLogger(__name__)

# fixed samples per level (a seeded random subset when a level has more pixels): 2D 16384 reach
# ~0.01 px on textured 512 x 512 photos
_DEFAULT_MAX_SAMPLES = {2: 1 << 14, 3: 1 << 16}


def ecc_register(
    fixed: SpatialImage,
    moving: SpatialImage,
    config: RegistrationConfig | None = None,
    *,
    initial: Transform | None = None,
    fixed_mask: np.ndarray | None = None,
    moving_mask: np.ndarray | None = None,
    progress: ProgressCallback | None = None,
) -> EngineOutput:
    """Estimate the fixed -> moving transform that maximises the enhanced correlation coefficient.

    Parameters
    ----------
    fixed, moving : SpatialImage
        2D or 3D images (colour images are registered on their luminance).
        Geometry (origin, spacing, direction) is honoured: the answer is in
        world units.
    config : RegistrationConfig, optional
        Each stage's ``model`` (translation, rigid, similarity, affine,
        homography in 2D), ``shrink_factors``/``smoothing_sigmas_mm`` (chosen
        by :func:`default_pyramid` when None) and ``iterations`` (cap per
        level) are used, and the number of fixed samples per level
        (``("max_samples", n)`` in ``extra``, else the stage's ``max_samples``
        field where it has one, else 16384 in 2D and 65536 in 3D). Defaults
        to one affine stage.
    initial : Transform, optional
        Starting fixed -> moving transform (linear or homography); otherwise
        ``config.initialisation`` decides (image centres by default). With
        ``config.rotation_search``, the first stage's coarsest level is run
        from rotated starts (every 30 degrees in 2D, the 24 axis-aligned
        turns in 3D) and the best-correlated one is kept: large rotations
        without features.
    fixed_mask, moving_mask : ndarray of bool, optional
        Pixels to use, on each image's grid, combined with the images' own
        masks and nodata.
    progress : callable, optional
        ``progress(stage, level, iteration, rho)`` after each iteration
        (``rho``, the ECC, rises towards 1).

    Returns
    -------
    EngineOutput
        ``transform`` maps fixed-space points to moving space; ``history``
        holds the ECC per iteration and level; ``extras["ecc"]`` is the last
        coefficient computed (also ``final_metric``); ``converged`` is False when
        the finest level stopped on a failure (reasons in ``warnings``).

    Examples
    --------
    >>> import numpy as np
    >>> from scipy import ndimage
    >>> from skimage import data
    >>> from coregister.config import RegistrationConfig, Stage
    >>> fixed = SpatialImage(data.camera().astype(np.float32), origin=(0, 0), spacing=(1, 1))
    >>> moved = ndimage.shift(fixed.array, (-2.3, 3.6), order=3, mode="nearest")  # content moves by (+3.6, -2.3) px
    >>> out = ecc_register(fixed, fixed.replace(array=moved), RegistrationConfig(stages=(Stage(model="translation"),)))
    >>> np.round(out.transform.translation, 1).tolist()  # fixed (x, y) -> moving (x + 3.6, y - 2.3)
    [3.6, -2.3]
    """
    with single_threaded_blas():
        out = _ecc_register(
            fixed, moving, config, initial=initial, fixed_mask=fixed_mask, moving_mask=moving_mask, progress=progress
        )
        return _refit_without_warp_fill(out, fixed, moving, config, fixed_mask, moving_mask, progress)


def _refit_without_warp_fill(
    first: EngineOutput,
    fixed: SpatialImage,
    moving: SpatialImage,
    config: RegistrationConfig | None,
    fixed_mask: np.ndarray | None,
    moving_mask: np.ndarray | None,
    progress: ProgressCallback | None,
) -> EngineOutput:
    """Second look at a 2D pair's warp fill, through the transform just found.

    The first run told warp fill from a shared background by position
    (:func:`coregister.engines._common.valid_pair`); through the answer the
    two are told apart exactly. Where that changes the masks (a background
    moved with the subject, a photo's own dark region), the finest levels
    are run again from the answer with the corrected masks.
    """
    config = config or RegistrationConfig(stages=(Stage(model=TransformModel.AFFINE),))
    if fixed.ndim != 2 or not first.converged or not config.stages:
        return first
    grey_fixed, grey_moving, _ = grey_pair(fixed, moving)
    by_position = valid_pair(grey_fixed, grey_moving, fixed_mask, moving_mask, config)
    through = valid_pair(grey_fixed, grey_moving, fixed_mask, moving_mask, config, transform=first.transform)
    if all(np.array_equal(a, b) for a, b in zip(by_position, through, strict=True)):
        return first
    last = config.stages[-1]
    factors, sigmas = default_pyramid(fixed.shape, fixed.spacing, min_size=128, max_levels=2)
    stage = Stage(
        model=last.model, shrink_factors=factors, smoothing_sigmas_mm=sigmas, iterations=last.iterations,
        extra=(*((k, v) for k, v in last.extra if k == "max_samples"), (EXCLUDE_WARP_FILL, False)),
    )
    logger.info("ECC: warp-fill masks corrected through the first answer; finest levels run again")
    second = _ecc_register(
        fixed, moving, config.replace(stages=(stage,), rotation_search=False), initial=first.transform,
        fixed_mask=through[0], moving_mask=through[1], progress=progress,
    )
    if not second.converged:
        return first
    extras = {**second.extras, "optimisation_time_s": first.extras.get("optimisation_time_s", 0.0)
              + second.extras.get("optimisation_time_s", 0.0)}
    return dataclasses.replace(
        second, history=first.history + second.history, warnings=tuple(dict.fromkeys(first.warnings + second.warnings)),
        extras=extras,
    )


def _ecc_register(
    fixed: SpatialImage,
    moving: SpatialImage,
    config: RegistrationConfig | None,
    *,
    initial: Transform | None,
    fixed_mask: np.ndarray | None,
    moving_mask: np.ndarray | None,
    progress: ProgressCallback | None,
) -> EngineOutput:
    config = config or RegistrationConfig(stages=(Stage(model=TransformModel.AFFINE),))
    if fixed.ndim != moving.ndim:
        raise GeometryError(
            f"fixed image is {fixed.ndim}D and moving image is {moving.ndim}D; register images of the same dimension"
        )
    fixed, moving, warnings = grey_pair(fixed, moving)
    fixed_all, moving_all = valid_pair(fixed, moving, fixed_mask, moving_mask, config)
    fixed_valid = _valid(fixed_all, "fixed_mask")
    moving_valid = _valid(moving_all, "moving_mask")
    d = fixed.ndim
    rng = np.random.default_rng(config.seed)

    matrix = initial_matrix(initial, d)
    if matrix is None:
        matrix = np.eye(d + 1)
        init = Initialisation.parse(config.initialisation)
        if init is Initialisation.GEOMETRY:
            matrix[:d, d] = moving.world_centre - fixed.world_centre
        elif init is Initialisation.MOMENTS:
            matrix[:d, d] = _centre_of_mass(moving, moving_valid) - _centre_of_mass(fixed, fixed_valid)
        elif init in (Initialisation.PHASE, Initialisation.FEATURES):
            raise ConfigError(
                f"initialisation {init.value!r} comes from another engine; coregister.register runs it first "
                "and passes its answer as the initial transform"
            )

    history: list[LevelHistory] = []
    hit_cap = False
    last_failed = False
    final_rho = float("nan")
    model = TransformModel.AFFINE
    started = time.perf_counter()
    fixed_centre = fixed.world_centre
    for stage_number, stage in enumerate(config.stages):
        model = TransformModel.parse(stage.model)
        gens = model_generators(model, d)
        matrix = project(matrix, model, fixed_centre)
        factors, sigmas = stage_pyramid(stage, fixed)
        max_samples = int(_stage_option(stage, "max_samples", getattr(stage, "max_samples", None) or _DEFAULT_MAX_SAMPLES[d]))
        levels = build_levels(fixed, moving, fixed_valid, moving_valid, factors, sigmas, max_samples, rng)
        if not levels:
            raise RegistrationFailed(
                f"the fixed mask leaves fewer than {MIN_SAMPLES} samples at every level; give a larger mask"
            )
        stage_name = f"{stage_number}:{model.value}"
        search = bool(config.rotation_search) and stage_number == 0 and model is not TransformModel.TRANSLATION
        for level_index, level in enumerate(levels):
            if search and level_index == 0:
                matrix, note = rotation_search(level, matrix, gens, model, fixed_centre, stage_name)
                if note:
                    warnings.append(note)
            outcome = solve_level(
                level,
                matrix,
                gens,
                iterations=int(stage.iterations),
                finest=level_index == len(levels) - 1,
                stage_name=stage_name,
                level_index=level_index,
                progress=progress,
            )
            matrix = outcome.matrix
            history.append(
                LevelHistory(
                    stage=stage_name,
                    level=level_index,
                    shrink_factor=float(level.shrink),
                    smoothing_sigma_mm=level.sigma_mm,
                    metric_values=outcome.rho,
                    stop_reason=outcome.stop_reason,
                )
            )
            if outcome.rho:
                final_rho = outcome.rho[-1]
            if outcome.failed:
                warnings.append(f"ECC stage {stage_name}, level {level_index} (shrink {level.shrink}): {outcome.stop_reason}")
            hit_cap = outcome.hit_cap
            last_failed = outcome.failed
        logger.debug("ECC stage %s done: rho %.6f", stage_name, final_rho)
    transform = transform_from_matrix(matrix, model, center=fixed_centre)
    elapsed = time.perf_counter() - started
    return EngineOutput(
        transform=transform,
        engine=EccEngine.name,
        history=tuple(history),
        warnings=tuple(warnings),
        hit_iteration_cap=hit_cap,
        converged=not last_failed,
        final_metric=final_rho,
        extras={"ecc": final_rho, "optimisation_time_s": elapsed},
    )


def _valid(valid: np.ndarray, name: str) -> np.ndarray | None:
    if not valid.any():
        raise ConfigError(f"the {name.replace('_', ' ')} (with the image's own mask/nodata) selects no pixel")
    return None if bool(valid.all()) else valid


def _centre_of_mass(image: SpatialImage, valid: np.ndarray | None) -> np.ndarray:
    values = np.asarray(image.array, dtype=np.float64)
    weights = values - values[valid].min() if valid is not None else values - values.min()
    if valid is not None:
        weights = np.where(valid, weights, 0.0)
    total = weights.sum()
    if total <= 0:
        return image.world_centre
    com = np.array(ndimage.center_of_mass(weights))[::-1]
    return image.index_to_world(com[np.newaxis, :])[0]


def _stage_option(stage: Stage, key: str, default: Any) -> Any:
    return dict(stage.extra).get(key, default)


class EccEngine:
    """The ECC engine (``metric="ecc"``): :func:`ecc_register` behind the :class:`~coregister.engines.base.Engine` protocol.

    Examples
    --------
    >>> EccEngine.name
    'ecc'
    """

    name = "ecc"

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
        """Estimate the fixed -> moving transform; see :func:`ecc_register`."""
        return ecc_register(
            fixed, moving, config, initial=initial, fixed_mask=fixed_mask, moving_mask=moving_mask, progress=progress
        )

