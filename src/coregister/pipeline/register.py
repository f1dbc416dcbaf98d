"""``register``: the one entry point that aligns two images and returns a :class:`~coregister.pipeline.result.Result`.

The flow, once and in this order: check the pair and the options, make the
configuration (:func:`~coregister.pipeline.routing.configure`), pick the
engine (:func:`~coregister.pipeline.routing.route`), find the starting
transform when another engine must (:mod:`~coregister.pipeline.initialise`),
run the engine, or the fallback chain for ``preset="auto"``
(:mod:`~coregister.pipeline.fallback`), measure the answer and give the
quality verdict (:mod:`~coregister.pipeline.attempt`), and return one typed
:class:`Result`.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import logging
import math
import time
from collections.abc import Sequence
from typing import Any, Literal

import SimpleITK as sitk

from coregister import presets
from coregister.config import EngineName, Initialisation, Metric, ProgressCallback, RegistrationConfig, Stage
from coregister.engines._common import refuse_series
from coregister.engines.sitk.engine import field_level_voxels
from coregister.engines.sitk.threads import default_threads
from coregister.errors import ConfigError, GeometryError
from coregister.image import SpatialImage
from coregister.image.kinds import as_spatial_image
from coregister.pipeline.attempt import Judged, Pair, before_metrics, judge, prepare, run_engine, settle_everywhere
from coregister.pipeline.fallback import run_chain
from coregister.pipeline.initialise import find_start
from coregister.pipeline.memory import fit_to_memory
from coregister.pipeline.result import Result, Start, Verdict
from coregister.pipeline.routing import configure, route
from coregister.transforms import Transform

__all__ = ["pyramid_threads", "register", "run_auto", "verify"]

logger = logging.getLogger(__name__)


def _as_image(value: Any, name: str) -> SpatialImage:
    image = as_spatial_image(value, name=name)
    refuse_series(image, name)  # before the memory estimate and the engine; grey_pair refuses it too
    return image


def _resolved(
    preset: str, metric: Metric | str | None, config: RegistrationConfig | None, precise: bool, ndim: int,
    seed: int, threads: int | None,
) -> RegistrationConfig:
    if config is None:
        config = configure(preset, ndim=ndim, precise=precise, metric=metric)
    elif not isinstance(config, RegistrationConfig):
        raise ConfigError(f"config is a {type(config).__name__}; give a coregister.config.RegistrationConfig")
    elif metric is not None:
        config = presets.with_metric(config, metric)
    if threads is not None and int(threads) < 1:
        raise ConfigError(f"threads={threads}: give a positive number of threads, or None for all cores")
    return config.replace(seed=int(seed), threads=config.threads if threads is None else int(threads))


def pyramid_threads(threads: int | None) -> contextlib.AbstractContextManager[None]:
    """Registrations run inside build their pyramids and resample on ``threads`` threads (None: left alone).

    With :func:`register`'s default ``threads=None`` the metrics stay on one
    thread, so the answers are the same bit for bit: the batch runner gives
    each worker its share of the cores this way.

    Examples
    --------
    >>> import SimpleITK as sitk
    >>> with pyramid_threads(1):
    ...     inside = sitk.ProcessObject.GetGlobalDefaultNumberOfThreads()
    >>> inside
    1
    """
    return default_threads(threads)


def register(
    fixed: Any,
    moving: Any,
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
    fit_memory: bool = False,
) -> Result:
    """Align ``moving`` to ``fixed`` in world space.

    Parameters
    ----------
    fixed, moving : SpatialImage, SimpleITK.Image, nibabel image or xarray.DataArray
        2D or 3D images, as the user holds them (converted without a copy
        where the kind allows: :mod:`coregister.image.kinds`). Multi-channel
        images are registered on their luminance (``Result.warnings`` says so).
    preset : str
        ``translation``, ``rigid`` (default), ``similarity``, ``affine``,
        ``bspline`` (rigid, affine, then B-spline), ``homography`` (2D, feature
        engine) or ``auto`` (the fallback chain); see :mod:`coregister.presets`.
    metric : str, optional
        Overrides every stage's metric: ``mattes`` (the presets' default),
        ``mi``, ``ncc``, ``mse``, or ``ecc`` (runs the ECC engine).
    config : RegistrationConfig, optional
        A full configuration (:func:`coregister.pipeline.configure` makes one
        from a preset and options); replaces ``preset`` and ``precise``.
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
    fit_memory : bool
        The run's peak memory is estimated before it starts
        (:mod:`coregister.pipeline.memory`); one that would exceed the
        allowed memory (``COREGISTER_MAX_MEMORY``, ``--max-memory``) is
        refused with :class:`~coregister.errors.MemoryLimitError`, or, with
        ``fit_memory=True``, runs on grids coarsened by the smallest whole
        factor that fits (``Result.warnings`` says so).

    Returns
    -------
    Result
        ``transform`` maps fixed-space points to moving space (resample the
        moving image onto the fixed grid with :func:`coregister.apply`);
        ``metrics["before"]``/``["after"]`` hold NCC, MI, MSE and SSIM over the fixed
        mask; ``quality`` is the verdict (``passed``, ``failed`` or
        ``uncertain``) with the measures behind it.

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
    >>> res.verdict.value, res.engine, res.metrics["after"]["ncc"] > res.metrics["before"]["ncc"]
    ('passed', 'sitk', True)
    """
    return _register(fixed, moving, preset=preset, metric=metric, config=config, precise=precise,
                     fixed_mask=fixed_mask, moving_mask=moving_mask, initial_transform=initial_transform, seed=seed,
                     threads=threads, progress=progress, fit_memory=fit_memory)


def run_auto(
    fixed: SpatialImage,
    moving: SpatialImage,
    config: RegistrationConfig,
    *,
    initial_transform: Transform | None = None,
    fixed_mask: Any = None,
    moving_mask: Any = None,
    progress: ProgressCallback | None = None,
    engines: Sequence[EngineName | str] | None = None,
) -> Result:
    """:func:`register` through the fallback chain with ``config``'s stages, optionally with chosen ``engines``.

    ``Result.attempts`` lists every engine tried with its verdict; ``warnings``
    start with the reason for each fallback.

    Examples
    --------
    >>> import numpy as np
    >>> from scipy import ndimage
    >>> from skimage import color, data
    >>> from coregister.config import RegistrationConfig, Stage
    >>> fixed = SpatialImage(color.rgb2gray(data.astronaut()).astype(np.float32), origin=(0, 0), spacing=(1, 1))
    >>> turned = ndimage.rotate(fixed.array, 60, reshape=False, order=3)  # beyond ECC's capture range here
    >>> res = run_auto(fixed, fixed.replace(array=turned), RegistrationConfig(stages=(Stage(model="rigid"),)))
    >>> res.engine, round(float(res.transform.angles_deg[0])), [a.engine for a in res.attempts]
    ('features', -60, ['ecc', 'features'])
    >>> res.warnings[0].startswith("ecc:")  # why the ECC answer was not kept
    True
    """
    return _register(fixed, moving, config=config.replace(engine=EngineName.AUTO), fixed_mask=fixed_mask,
                     moving_mask=moving_mask, initial_transform=initial_transform, progress=progress, engines=engines)


def verify(
    fixed: SpatialImage,
    moving: SpatialImage,
    transform: Transform,
    *,
    metric: Metric | str = Metric.NCC,
    engine: str = "given",
    fixed_mask: Any = None,
    moving_mask: Any = None,
    threads: int | None = None,
) -> Result:
    """Judge a transform found outside the engines (geospatial windows, a user's own) as :func:`register` judges its own.

    The pair is measured before and through ``transform`` (fixed -> moving
    points) on the same reduced grid, and the quality check gives its verdict
    with ``metric`` as the measure that must not get worse.

    Returns
    -------
    Result
        ``transform`` as given, ``engine`` as named, the metrics, and the
        verdict in ``quality``.

    Examples
    --------
    >>> import numpy as np
    >>> from scipy import ndimage
    >>> from coregister import Translation
    >>> y, x = np.mgrid[0:96, 0:96]
    >>> blob = np.exp(-((x - 50.0) ** 2 + (y - 40.0) ** 2) / 150) + np.exp(-((x - 30.0) ** 2 + (y - 62.0) ** 2) / 60)
    >>> fixed = SpatialImage(blob, origin=(0, 0), spacing=(1, 1))
    >>> moving = fixed.replace(array=ndimage.shift(blob, (2.0, 3.0), order=3))  # content 3 px right, 2 px down
    >>> verify(fixed, moving, Translation([3.0, 2.0])).verdict.value
    'passed'
    >>> verify(fixed, moving, Translation([-9.0, -6.0])).verdict.value
    'failed'
    """
    from coregister.engines import EngineOutput

    fixed, moving = _as_image(fixed, "fixed"), _as_image(moving, "moving")
    if not fixed.ndim == moving.ndim == transform.ndim:
        raise GeometryError(f"a {transform.ndim}D transform cannot map a {fixed.ndim}D fixed image to a "
                            f"{moving.ndim}D moving one; give images and transform of one dimension")
    config = RegistrationConfig(stages=(Stage(metric=Metric.parse(metric)),), threads=threads, name="verify")
    pair = prepare(fixed, moving, fixed_mask, moving_mask)
    started = time.perf_counter()
    before = before_metrics(pair, threads)
    judged = judge(pair, EngineOutput(transform=transform, engine=engine), before, config, started)
    return _result(judged, before, pair, config, time.perf_counter() - started, start=None,
                   attempts=(judged.record,), warnings=pair.notes)


def _register(
    fixed: Any,
    moving: Any,
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
    engines: Sequence[EngineName | str] | None = None,
    fit_memory: bool = False,
) -> Result:
    fixed = _as_image(fixed, "fixed")
    moving = _as_image(moving, "moving")
    if fixed.ndim != moving.ndim:
        raise GeometryError(
            f"fixed image is {fixed.ndim}D {fixed.size} and moving image is {moving.ndim}D {moving.size}: "
            "register images of the same dimension (take a slice of the volume, or stack the slices)"
        )
    if initial_transform is not None and initial_transform.ndim != fixed.ndim:
        raise GeometryError(f"initial_transform is {initial_transform.ndim}D but the images are {fixed.ndim}D")
    config = _resolved(preset, metric, config, precise, fixed.ndim, seed, threads)
    field_voxels = max((field_level_voxels(s, fixed.size, fixed.spacing) for s in config.stages), default=0)
    fixed, moving, (fixed_mask, moving_mask), memory_note = fit_to_memory(
        fixed, moving, (fixed_mask, moving_mask), allow_coarser=fit_memory, field_voxels=field_voxels
    )
    pair = prepare(fixed, moving, fixed_mask, moving_mask, initial_transform)
    notes = ([memory_note] if memory_note else []) + list(pair.notes)
    engine = route(config)
    logger.info("registering %s onto %s with %s (%s)", pair.moving.size, pair.fixed.size, engine.value, config.name)

    started = time.perf_counter()
    start: Start | None = None
    initial = initial_transform
    # the feature engine finds its own start; the fallback chain tries it first, with the projective model beside the
    # affine (a start found here would hand the chain's intensity engines an affine and keep it from choosing)
    if initial is None and engine not in (EngineName.FEATURES, EngineName.AUTO):
        start, config = find_start(config, pair.fixed, pair.moving, pair.fixed_mask, pair.moving_mask, notes)
        initial = None if start is None else start.transform
    # the "before" figures need no answer: computed on a second thread while the engine (one thread by default)
    # runs, unless the caller asked for one thread
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        before_job = pool.submit(before_metrics, pair, config.threads) if config.threads != 1 else None
        if engine is EngineName.AUTO:
            before = before_job.result() if before_job is not None else before_metrics(pair, config.threads)
            chosen = run_chain(pair, config, before, initial=initial, progress=progress, engines=engines)
            judged, attempts, fallbacks = chosen.judged, chosen.attempts, chosen.warnings
        else:
            judged, before = _run_one(engine, pair, config, initial, progress, before_job)
            attempts, fallbacks = (judged.record,), ()
            if start is not None and not judged.quality.passed:
                # the start another engine found may be what went wrong (keypoints matched across a change of
                # contrast): the same engine again from the image centres, and the better-judged answer kept
                retry_config = config.replace(initialisation=Initialisation.GEOMETRY)
                began = time.perf_counter()
                retry = judge(pair, run_engine(engine, pair, retry_config, initial=None, progress=progress), before,
                              retry_config, began)
                attempts = (judged.record, retry.record)
                if _better(retry, judged):
                    fallbacks = (f"the answer from the {start.method} start was not kept ({'; '.join(judged.quality.failures)}); "
                                 "the registration from the image centres was",)
                    judged, start = retry, None
            settled = settle_everywhere(engine, pair, config, judged, before, progress=progress)
            if settled is not None:
                attempts = (*attempts, settled.record)
                if _better(settled, judged, tie="mi"):
                    fallbacks = (*fallbacks, f"the answer settled on the fixed image's edges was not kept "
                                 f"({'; '.join(judged.quality.failures)}); its last stage again on points drawn "
                                 "everywhere was")
                    judged = settled
    elapsed = time.perf_counter() - started
    return _result(judged, before, pair, config, elapsed, start=start, attempts=attempts,
                   warnings=(*notes, *fallbacks))


_RANK = {Verdict.PASSED: 2, Verdict.UNCERTAIN: 1, Verdict.FAILED: 0}


def _better(a: Judged, b: Judged, *, tie: Literal["ncc", "mi"] = "ncc") -> bool:
    """Whether answer ``a`` is judged better than ``b``: a better verdict, else a higher figure after.

    ``tie="ncc"``: the larger |NCC| (answers from different starts or
    engines); ``tie="mi"``: the larger mutual information on the metrics
    grid (an answer and its refinement, on a pair NCC may not suit).
    """
    rank_a, rank_b = _RANK[a.quality.verdict], _RANK[b.quality.verdict]
    if rank_a != rank_b:
        return rank_a > rank_b
    if tie == "mi":
        fig_a, fig_b = float(a.after.get("mi", math.nan)), float(b.after.get("mi", math.nan))
    else:
        fig_a, fig_b = abs(a.record.ncc), abs(b.record.ncc)
    return bool(fig_a > fig_b) if math.isfinite(fig_a) and math.isfinite(fig_b) else math.isfinite(fig_a)


def _run_one(
    engine: EngineName, pair: Pair, config: RegistrationConfig, initial: Transform | None,
    progress: ProgressCallback | None, before_job: concurrent.futures.Future[dict[str, float]] | None,
) -> tuple[Judged, dict[str, float]]:
    """One engine, judged once; the "before" figures are awaited only when the judgement needs them."""
    began = time.perf_counter()
    output = run_engine(engine, pair, config, initial=initial, progress=progress)
    before = before_job.result() if before_job is not None else before_metrics(pair, config.threads)
    return judge(pair, output, before, config, began), before


def _result(
    judged: Judged, before: dict[str, float], pair: Pair, config: RegistrationConfig, elapsed: float, *,
    start: Start | None, attempts: tuple[Any, ...], warnings: tuple[str, ...],
) -> Result:
    output = judged.output
    used_threads = output.extras.get("threads")
    if used_threads is None:
        used_threads = config.threads if config.threads is not None else sitk.ProcessObject.GetGlobalDefaultNumberOfThreads()
    extras = dict(output.extras)
    extras["metrics_grid_stride"] = pair.stride
    # what the pair needed (luminance), the fallbacks, the engine's own notes, then the quality check's findings
    ordered = dict.fromkeys((*warnings, *output.warnings, *judged.quality.warnings))
    return Result(
        transform=output.transform,
        metrics={"before": before, "after": dict(judged.after)},
        history=output.history,
        time_s=elapsed,
        engine=output.engine,
        warnings=tuple(ordered),
        quality=judged.quality,
        seed=config.seed,
        threads=int(used_threads),
        config=config.to_dict(),
        final_metric=output.final_metric,
        start=start,
        attempts=attempts,
        extras=extras,
    )

