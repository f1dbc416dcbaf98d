"""``register_series``: many moving images onto one fixed image, each answer judged as :func:`register` judges one.

The volumes of a time series (fMRI, DCE, DWI) are registered one after
another to one reference through the same steps as :func:`register`: the
pair is prepared, the engine runs, the answer is measured and given its
quality verdict, and each volume gets its own :class:`Result`. What differs
is what a series allows:

* each volume can start from the previous volume's answer (``chain=True``):
  a head moves little from one volume to the next, so the engine starts
  next to its answer and needs few iterations;
* the before/after metrics and the quality check look at the fixed grid
  subsampled to at most :data:`SERIES_METRICS_MAX_POINTS` points (a series
  of small volumes is measured hundreds of times);
* an engine that raises on one volume (an empty or constant volume) fails
  that volume's verdict instead of the whole series.

Every transform maps fixed-space points to moving space (ITK's convention).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from coregister._blas import single_threaded_blas
from coregister.config import EngineName, RegistrationConfig
from coregister.errors import ConfigError, GeometryError, RegistrationFailed
from coregister.image import SpatialImage
from coregister.pipeline.attempt import attempt, before_metrics, failed_attempt, is_engine_failure, prepare
from coregister.pipeline.initialise import find_start
from coregister.pipeline.register import _as_image, _resolved, _result
from coregister.pipeline.result import QualityReport, Result, Verdict
from coregister.pipeline.routing import route
from coregister.transforms import Rigid, Transform

__all__ = ["SERIES_METRICS_MAX_POINTS", "register_series"]

logger = logging.getLogger(__name__)

#: before/after metrics and the quality check of each volume of a series: the fixed grid subsampled to at most this
#: many points (64 x 64 x 36 voxels: every second voxel along each axis)
SERIES_METRICS_MAX_POINTS = 40_000


def register_series(
    fixed: SpatialImage,
    moving: Sequence[SpatialImage],
    *,
    preset: str = "rigid",
    config: RegistrationConfig | None = None,
    initial_transforms: Sequence[Transform | None] | None = None,
    chain: bool = True,
    fixed_mask: Any = None,
    seed: int = 0,
    threads: int | None = None,
    progress: Callable[[int, Result], None] | None = None,
) -> tuple[Result, ...]:
    """Register each image of ``moving`` onto ``fixed``, in order; one judged :class:`Result` per image.

    Parameters
    ----------
    fixed : SpatialImage
        The reference (a volume of the series, or its mean).
    moving : sequence of SpatialImage
        The images to register to it, in the order they are run.
    preset, config :
        As for :func:`register` (one engine: ``preset="auto"`` is refused).
    initial_transforms : sequence of Transform or None, optional
        One start per image (``None`` entries: see ``chain``).
    chain : bool
        An image without a start of its own starts from the previous image's
        answer when that answer passed its quality check; otherwise (and for
        the first) from the configuration's initialisation.
    fixed_mask : ndarray of bool or SpatialImage, optional
        On the fixed grid, True where to measure.
    seed, threads :
        As for :func:`register`.
    progress : callable, optional
        ``progress(index, result)`` after each image.

    Returns
    -------
    tuple of Result
        In the order of ``moving``. An image the engine could not register at
        all has an identity transform and a ``failed`` verdict saying why.

    Examples
    --------
    >>> import numpy as np
    >>> from scipy import ndimage
    >>> from coregister import SpatialImage
    >>> from coregister.config import Initialisation, Metric, RegistrationConfig, Stage
    >>> z, y, x = np.mgrid[0:24, 0:32, 0:32]
    >>> blob = np.exp(-((x - 15.0) ** 2 / 40 + (y - 17.0) ** 2 / 60 + (z - 11.0) ** 2 / 30)) + 0.5 * (x > 20)
    >>> fixed = SpatialImage(blob.astype(np.float32), origin=(0, 0, 0), spacing=(2, 2, 2))
    >>> moved = [fixed.replace(array=ndimage.shift(blob, (0, 0, s), order=3).astype(np.float32)) for s in (0.5, 1.0)]
    >>> config = RegistrationConfig(stages=(Stage(model="rigid", metric=Metric.ECC, shrink_factors=(1,)),),
    ...                             initialisation=Initialisation.NONE)
    >>> results = register_series(fixed, moved, config=config)
    >>> [round(float(r.transform.offset[0]), 2) for r in results], [r.verdict.value for r in results]
    ([1.0, 2.0], ['passed', 'passed'])
    """
    fixed = _as_image(fixed, "fixed")
    volumes = [_as_image(image, f"moving[{k}]") for k, image in enumerate(moving)]
    starts: list[Transform | None] = list(initial_transforms) if initial_transforms is not None else [None] * len(volumes)
    if len(starts) != len(volumes):
        raise ConfigError(f"{len(starts)} initial transforms for {len(volumes)} images; give one (or None) per image")
    for k, image in enumerate(volumes):
        if image.ndim != fixed.ndim:
            raise GeometryError(f"moving[{k}] is {image.ndim}D but the fixed image is {fixed.ndim}D; register images of "
                                "the same dimension")
    config = _resolved(preset, None, config, False, fixed.ndim, seed, threads)
    engine = route(config)
    if engine is EngineName.AUTO:
        raise ConfigError("a series is registered by one engine: give a preset or configuration other than 'auto'")
    results: list[Result] = []
    previous: Transform | None = None
    with single_threaded_blas():  # thin products, repeated: spinning BLAS threads cost more than they bring
        for k, image in enumerate(volumes):
            start = starts[k] if starts[k] is not None else (previous if chain else None)
            result = _one(fixed, image, config, engine, start, fixed_mask)
            results.append(result)
            if result.passed:
                previous = result.transform
            logger.debug("series image %d: %s in %.3f s", k, result.verdict.value, result.time_s)
            if progress is not None:
                progress(k, result)
    return tuple(results)


def _one(fixed: SpatialImage, moving: SpatialImage, config: RegistrationConfig, engine: EngineName,
         initial: Transform | None, fixed_mask: Any) -> Result:
    """One image of the series through the pipeline's steps (as :func:`register` runs them for one engine)."""
    started = time.perf_counter()
    try:
        pair = prepare(fixed, moving, fixed_mask, None, initial, max_metric_points=SERIES_METRICS_MAX_POINTS)
    except RegistrationFailed as exc:  # nothing to align (an empty volume, a dropped frame): this image fails, not the series
        return _failed(engine, exc, started, config, fixed.ndim, before={}, notes=[], who="the pipeline")
    notes = list(pair.notes)
    start = None
    run_config = config
    if initial is None and engine is not EngineName.FEATURES:
        start, run_config = find_start(config, pair.fixed, pair.moving, pair.fixed_mask, pair.moving_mask, notes)
        initial = None if start is None else start.transform
    before = before_metrics(pair, config.threads)
    try:
        judged = attempt(engine, pair, run_config, before, initial=initial)
    except Exception as exc:  # noqa: BLE001 - an engine's own failure fails this image only; bugs propagate
        if not is_engine_failure(exc):
            raise
        return _failed(engine, exc, started, config, fixed.ndim, before=before, notes=notes)
    return _result(judged, before, pair, run_config, time.perf_counter() - started, start=start,
                   attempts=(judged.record,), warnings=tuple(notes))


def _failed(engine: EngineName, error: BaseException, started: float, config: RegistrationConfig, ndim: int, *,
            before: dict[str, float], notes: list[str], who: str = "") -> Result:
    """The failed answer for one image of the series: the identity, the reason in words."""
    record = failed_attempt(engine, error, started)
    reason = f"{who or f'the {engine.value} engine'} could not register this image: {record.error}"
    return Result(
        transform=Rigid(np.eye(ndim)),
        metrics={"before": before},
        time_s=time.perf_counter() - started,
        engine=engine.value,
        warnings=(reason, *notes),
        quality=QualityReport(Verdict.FAILED, failures=(reason,)),
        seed=config.seed,
        threads=config.threads or 1,
        config=config.to_dict(),
        attempts=(record,),
    )
