"""``register``: the one entry point that aligns two images and returns a :class:`~coregister.result.Result`.

It validates the pair, picks the engine (SimpleITK by default; ECC for
``metric="ecc"``, features for ``preset="homography"``, the fallback chain
for ``preset="auto"``), times it, measures the similarity before and after,
and runs the quality check (:func:`coregister.qc.quality.check`).
"""

from __future__ import annotations

import concurrent.futures
import importlib
import logging
import math
import time
from typing import Any

import numpy as np
import SimpleITK as sitk

from coregister.config import (
    EngineName,
    Initialisation,
    Metric,
    ProgressCallback,
    RegistrationConfig,
    Stage,
    TransformModel,
)
from coregister.engines import EngineOutput, get_engine
from coregister.engines._common import grey_pair, valid_pixels
from coregister.errors import ConfigError, GeometryError, RegistrationFailed
from coregister.image import SpatialImage
from coregister.result import Result
from coregister.transforms import Transform, Translation

__all__ = ["register", "route"]

logger = logging.getLogger(__name__)

#: before/after metrics are computed on the fixed grid subsampled to at most this many points
_METRICS_MAX_POINTS = 500_000
_CHAIN = "chain"


def _as_image(value: Any, name: str) -> SpatialImage:
    if isinstance(value, SpatialImage):
        return value
    if isinstance(value, sitk.Image):
        return SpatialImage.from_sitk(value)
    raise ConfigError(
        f"{name} is a {type(value).__name__}; give a coregister.SpatialImage (read one with coregister.read(path)) "
        "or a SimpleITK.Image"
    )


def _mask_array(mask: Any, image: SpatialImage, name: str) -> np.ndarray | None:
    """The user's mask combined with the image's own validity (:func:`~coregister.engines._common.valid_pixels`).

    None when no mask is given and every pixel of the image is valid (the engines then sample without a mask).
    """
    if isinstance(mask, SpatialImage):
        if not mask.same_geometry(image):
            raise GeometryError(
                f"the {name} lies on another grid than its image; resample it onto the image's grid with "
                "coregister.apply(..., interpolation='nearest')"
            )
        mask = mask.array
    valid = valid_pixels(image, mask, name)
    if mask is not None and not np.any(mask):
        raise GeometryError(f"{name} is empty: mark at least some voxels True (True = use)")
    return None if mask is None and bool(valid.all()) else valid


def route(preset: str, config: RegistrationConfig, *, config_given: bool = False) -> str:
    """The engine a registration runs on: an :class:`~coregister.config.EngineName` value or ``"chain"``.

    ``metric="ecc"`` (any stage) selects the ECC engine; a homography (or
    ``preset="homography"``) the feature engine; ``preset="auto"`` the
    fallback chain; an explicit ``config.engine`` itself; otherwise SimpleITK.

    Examples
    --------
    >>> from coregister import presets
    >>> route("rigid", presets.rigid()), route("auto", presets.auto()), route("homography", presets.homography(ndim=2))
    ('sitk', 'chain', 'features')
    >>> route("rigid", presets.rigid().replace(stages=(Stage(metric="ecc"),)))
    'ecc'
    """
    stages = config.stages
    if any(Metric.parse(s.metric) is Metric.ECC for s in stages):
        return EngineName.ECC.value
    engine = EngineName.parse(config.engine)
    if engine is EngineName.FEATURES or any(TransformModel.parse(s.model) is TransformModel.HOMOGRAPHY for s in stages):
        return EngineName.FEATURES.value
    key = str(preset).strip().lower()
    if engine is EngineName.AUTO and ((key.startswith("auto") and not config_given) or config.name.startswith("auto")):
        return _CHAIN
    if engine is EngineName.AUTO:
        return EngineName.SITK.value
    return engine.value


def _resolve_config(
    preset: str, metric: Metric | str | None, config: RegistrationConfig | None, precise: bool, ndim: int,
    seed: int, threads: int | None,
) -> RegistrationConfig:
    if config is None:
        from coregister import presets

        config = presets.get(preset, precise=precise, ndim=ndim)
    elif not isinstance(config, RegistrationConfig):
        raise ConfigError(f"config is a {type(config).__name__}; give a coregister.config.RegistrationConfig")
    if metric is not None:
        chosen = Metric.parse(metric)
        config = config.replace(stages=tuple(s.replace(metric=chosen) for s in config.stages))
    if threads is not None and int(threads) < 1:
        raise ConfigError(f"threads={threads}: give a positive number of threads, or None for all cores")
    return config.replace(seed=int(seed), threads=config.threads if threads is None else int(threads))


# stage options the phase and feature engines read when they initialise another engine
_PROBE_OPTIONS = frozenset({"detector", "max_features", "ratio", "robust", "reprojection_threshold_px"})
# ... and what they found that a user checks (copied into Result.extras["initialisation"])
_PROBE_FINDINGS = ("detector", "inliers", "reprojection_error_px", "phase")


def _initial_from_engine(
    config: RegistrationConfig, fixed: SpatialImage, moving: SpatialImage,
    fixed_mask: np.ndarray | None, moving_mask: np.ndarray | None, notes: list[str],
) -> tuple[Transform | None, RegistrationConfig, dict[str, Any] | None]:
    """Run the phase-correlation or feature engine for a starting transform when the config asks for it.

    Returns the starting transform, the config left to run, and what the initialising engine found (for
    ``Result.extras["initialisation"]``), or None when no engine ran or it failed.
    """
    how = Initialisation.parse(config.initialisation)
    if how not in (Initialisation.PHASE, Initialisation.FEATURES):
        return None, config, None
    engine_name = EngineName.PHASE if how is Initialisation.PHASE else EngineName.FEATURES
    model = TransformModel.TRANSLATION if how is Initialisation.PHASE else TransformModel.AFFINE
    # the feature engine's options (detector, ratio, ...) travel in the user's last stage; the SimpleITK stage's own
    # options (relaxation, ...) mean nothing to it
    options = tuple((k, v) for k, v in (config.stages[-1].extra if config.stages else ()) if k in _PROBE_OPTIONS)
    probe = RegistrationConfig(stages=(Stage(model=model, extra=options),), initialisation=Initialisation.GEOMETRY,
                               seed=config.seed, threads=config.threads, name=f"{how.value}-initialisation")
    try:
        found = get_engine(engine_name).run(fixed, moving, probe, fixed_mask=fixed_mask, moving_mask=moving_mask)
    except (RegistrationFailed, ConfigError, GeometryError, ImportError) as exc:
        notes.append(f"{how.value} initialisation failed ({exc}); started from the image centres instead")
        return None, config.replace(initialisation=Initialisation.GEOMETRY), None
    logger.info("%s initialisation: %s", how.value, found.transform.to_dict().get("translation"))
    summary = {"engine": found.engine, "transform": found.transform.to_dict()}
    summary.update({k: found.extras[k] for k in _PROBE_FINDINGS if k in found.extras})
    return found.transform, config.replace(initialisation=Initialisation.NONE), summary


def _metrics_view(image: SpatialImage, mask: np.ndarray | None) -> tuple[SpatialImage, np.ndarray | None, int]:
    """The fixed image (and mask) subsampled by a whole stride so that before/after metrics stay cheap."""
    n = math.prod(image.shape)
    stride = max(1, int(math.ceil((n / _METRICS_MAX_POINTS) ** (1.0 / image.ndim) - 1e-9)))
    if stride == 1:
        return image, mask, 1
    index = (slice(None, None, stride),) * image.ndim
    view = SpatialImage(
        np.asarray(image.array)[index],
        origin=image.origin,
        spacing=tuple(s * stride for s in image.spacing),
        direction=image.direction,
        crs=image.crs,
        nodata=image.nodata,
        mask=None if image.mask is None else np.asarray(image.mask)[index],
    )
    return view, None if mask is None else mask[index], stride


def register(
    fixed: SpatialImage,
    moving: SpatialImage,
    *,
    preset: str = "rigid",
    metric: Metric | str | None = None,
    config: RegistrationConfig | None = None,
    precise: bool = False,
    fixed_mask: Any = None,
    moving_mask: Any = None,
    initial_transform: Transform | None = None,
    seed: int = 0,
    threads: int | None = None,
    progress: ProgressCallback | None = None,
) -> Result:
    """Align ``moving`` to ``fixed`` in world space.

    Parameters
    ----------
    fixed, moving : SpatialImage
        2D or 3D images (a ``SimpleITK.Image`` is accepted too). Multi-channel
        images are registered on their luminance (``Result.warnings`` says so).
    preset : str
        ``translation``, ``rigid`` (default), ``similarity``, ``affine``,
        ``bspline`` (rigid, affine, then B-spline), ``homography`` (2D, feature
        engine) or ``auto`` (the fallback chain); see :mod:`coregister.presets`.
    metric : str, optional
        Overrides every stage's metric: ``mattes`` (the presets' default),
        ``mi``, ``ncc``, ``mse``, or ``ecc`` (runs the ECC engine).
    config : RegistrationConfig, optional
        A full configuration; replaces ``preset`` and ``precise``.
    precise : bool
        The precise preset family (ANTsPy-like accuracy, more time).
    fixed_mask, moving_mask : ndarray of bool or SpatialImage, optional
        On each image's grid, True where to measure. An image's own mask and
        nodata are added automatically.
    initial_transform : Transform, optional
        Fixed -> moving starting point (replaces the config's initialisation);
        the answer includes it.
    seed : int
        Seed of the random sampling (replaces ``config.seed``).
    threads : int, optional
        SimpleITK threads. None (the default): the SimpleITK engine optimises
        on one thread and builds its pyramids on all cores (the next levels'
        on a second thread while it optimises; the "before" metrics too), so
        the answer is bit-identical run after run. ``threads=N`` uses N
        threads everywhere: faster, but ITK's parallel sums vary in the last
        bits and a flat optimum can turn that into visible differences.
        ``threads=1`` runs everything in turn on one thread (the same answer
        as the default).
    progress : callable, optional
        ``progress(stage, level, iteration, metric)`` at every iteration.

    Returns
    -------
    Result
        ``transform`` maps fixed-space points to moving space (resample the
        moving image onto the fixed grid with :func:`coregister.apply`);
        ``metrics["before"]``/``["after"]`` hold NCC, MI and MSE over the fixed
        mask; ``passed``/``warnings`` come from the quality check.

    Examples
    --------
    >>> import numpy as np
    >>> from scipy import ndimage
    >>> import coregister as cr
    >>> y, x = np.mgrid[0:128, 0:128]
    >>> blobs = np.exp(-((x - 70.0) ** 2 + (y - 60.0) ** 2) / 300) + np.exp(-((x - 40.0) ** 2 + (y - 80.0) ** 2) / 80)
    >>> fixed = cr.SpatialImage(blobs.astype(np.float32), origin=(0, 0), spacing=(1, 1))
    >>> moving = fixed.replace(array=ndimage.shift(blobs, (3.0, -2.0), order=3).astype(np.float32))
    >>> res = cr.register(fixed, moving, preset="translation")
    >>> np.round(res.transform.translation, 1).tolist()  # fixed (x, y) -> moving (x - 2, y + 3)
    [-2.0, 3.0]
    >>> res.passed, res.engine, res.metrics["after"]["ncc"] > res.metrics["before"]["ncc"]
    (True, 'sitk', True)
    """
    fixed = _as_image(fixed, "fixed")
    moving = _as_image(moving, "moving")
    if fixed.ndim != moving.ndim:
        raise GeometryError(
            f"fixed image is {fixed.ndim}D {fixed.size} and moving image is {moving.ndim}D {moving.size}: "
            "register images of the same dimension (take a slice of the volume, or stack the slices)"
        )
    if initial_transform is not None and initial_transform.ndim != fixed.ndim:
        raise GeometryError(f"initial_transform is {initial_transform.ndim}D but the images are {fixed.ndim}D")
    config_given = config is not None
    config = _resolve_config(preset, metric, config, precise, fixed.ndim, seed, threads)
    fixed_mask_array = _mask_array(fixed_mask, fixed, "fixed mask")
    moving_mask_array = _mask_array(moving_mask, moving, "moving mask")
    fixed_grey, moving_grey, notes = grey_pair(fixed, moving)

    engine_name = route(preset, config, config_given=config_given)
    logger.info("registering %s onto %s with %s (%s)", moving_grey.size, fixed_grey.size, engine_name, config.name)
    started = time.perf_counter()
    initial = initial_transform
    initialisation = None
    if initial is None and engine_name == EngineName.SITK.value:
        initial, config, initialisation = _initial_from_engine(
            config, fixed_grey, moving_grey, fixed_mask_array, moving_mask_array, notes
        )
    from coregister.qc.metrics import compare
    from coregister.qc.quality import chance_figures, check

    view, view_mask, stride = _metrics_view(fixed_grey, fixed_mask_array)
    identity = Translation(np.zeros(fixed.ndim))
    # the "before" figures need no answer: computed on a second thread while the engine (one thread by default)
    # runs, unless the caller asked for one thread
    before_job: concurrent.futures.Future[dict[str, float]] | None = None
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        if config.threads != 1:
            before_job = pool.submit(compare, view, moving_grey, identity, mask=view_mask, threads=config.threads)
        output = _run_engine(engine_name, fixed_grey, moving_grey, config, initial, fixed_mask_array, moving_mask_array,
                             progress)
        elapsed = time.perf_counter() - started
    if before_job is not None:
        before = before_job.result()
    else:
        before = compare(view, moving_grey, identity, mask=view_mask, threads=config.threads)
    after = compare(view, moving_grey, output.transform, mask=view_mask, threads=config.threads)
    # a feature match optimised no intensity metric: judge it on correlation
    judged = Metric.NCC if output.engine == EngineName.FEATURES.value else Metric.parse(config.stages[-1].metric)
    chance = chance_figures(view, moving_grey, output.transform, mask=view_mask)
    report = check(
        fixed_grey, moving_grey, output.transform, before, after, metric=judged,
        hit_iteration_cap=output.hit_iteration_cap, chance=chance,
    )
    used_threads = output.extras.get("threads")
    if used_threads is None:
        used_threads = config.threads if config.threads is not None else sitk.ProcessObject.GetGlobalDefaultNumberOfThreads()
    extras = dict(output.extras)
    extras["quality"] = dict(report.figures)
    extras["metrics_grid_stride"] = stride
    if initialisation is not None:
        extras["initialisation"] = initialisation
    return Result(
        transform=output.transform,
        metrics={"before": before, "after": after},
        history=output.history,
        time_s=elapsed,
        engine=output.engine,
        warnings=(*notes, *output.warnings, *report.warnings),
        passed=report.passed,
        seed=config.seed,
        threads=int(used_threads),
        config=config.to_dict(),
        extras=extras,
    )


def _run_engine(
    engine_name: str,
    fixed: SpatialImage,
    moving: SpatialImage,
    config: RegistrationConfig,
    initial: Transform | None,
    fixed_mask: np.ndarray | None,
    moving_mask: np.ndarray | None,
    progress: ProgressCallback | None,
) -> EngineOutput:
    options: dict[str, Any] = {
        "initial": initial, "fixed_mask": fixed_mask, "moving_mask": moving_mask, "progress": progress,
    }
    if engine_name == _CHAIN:
        chain = importlib.import_module("coregister.engines.chain")
        return chain.run_auto(fixed, moving, config, **options)
    return get_engine(engine_name).run(fixed, moving, config, **options)
