"""The automatic fallback chain behind ``register(preset="auto")``: try, check, fall back, choose.

An engine that returns is not an engine that succeeded: OpenCV's ECC and
every local optimiser converge to wrong answers without raising. So each
attempt is judged by the **quality check** (metric before/after on the
fixed mask, plausible scale and shear, iteration cap; see
:mod:`coregister.qc.quality`) and by how well the images then agree
(normalised correlation on the fixed mask); an exception or a failed check
becomes a reason in ``warnings`` and the next engine is tried.

Order of attempts:

* **2D**: the ECC engine (intensity, fast, sub-pixel), then the feature
  engine (keypoints + robust fit + ECC refinement: any rotation, large
  viewpoint changes), then the SimpleITK engine (mutual information:
  multimodal pairs). For a homography, or when ``config.initialisation``
  is ``features``, features go first (a viewpoint change is what
  intensity methods cannot capture).
* **3D**: the SimpleITK engine, then the ECC engine.

The chain stops at the first attempt that passes the check with a
normalised correlation of at least ``accept_ncc`` in magnitude (0.8;
``("accept_ncc", v)`` in the last stage's ``extra``); otherwise it returns
the best attempt that passed (highest ``|NCC|``), or, when none passed, the
best attempt with the failure said in ``warnings``. Correlation is a
monomodal yardstick: for multimodal pairs choose an MI preset directly.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from coregister.config import EngineName, Initialisation, Metric, ProgressCallback, RegistrationConfig, TransformModel
from coregister.engines.base import EngineOutput
from coregister.errors import ConfigError, CoregisterError, GeometryError, RegistrationFailed
from coregister.image import SpatialImage
from coregister.qc.quality import check
from coregister.transforms import Transform, Translation

__all__ = ["Attempt", "attempt_order", "run_auto"]

logger = logging.getLogger(__name__)

_ACCEPT_NCC = 0.8


@dataclasses.dataclass(frozen=True)
class Attempt:
    """One engine's try in the chain and how it was judged."""

    engine: str
    passed: bool
    ncc: float
    reasons: tuple[str, ...]
    time_s: float

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (goes into ``EngineOutput.extras["chain"]``)."""
        return {
            "engine": self.engine,
            "passed": self.passed,
            "ncc": None if not math.isfinite(self.ncc) else self.ncc,
            "reasons": list(self.reasons),
            "time_s": self.time_s,
        }


def attempt_order(ndim: int, config: RegistrationConfig) -> tuple[EngineName, ...]:
    """The engines :func:`run_auto` tries, in order, for images of ``ndim`` dimensions.

    Examples
    --------
    >>> from coregister.config import RegistrationConfig, Stage
    >>> [e.value for e in attempt_order(2, RegistrationConfig(stages=(Stage(model="rigid"),)))]
    ['ecc', 'features', 'sitk']
    >>> [e.value for e in attempt_order(2, RegistrationConfig(stages=(Stage(model="homography"),)))]
    ['features', 'ecc']
    >>> [e.value for e in attempt_order(3, RegistrationConfig())]
    ['sitk', 'ecc']
    """
    model = TransformModel.parse(config.stages[-1].model) if config.stages else TransformModel.RIGID
    if ndim == 3:
        return (EngineName.SITK, EngineName.ECC)
    if model is TransformModel.HOMOGRAPHY:  # SimpleITK has no projective transform
        return (EngineName.FEATURES, EngineName.ECC)
    if Initialisation.parse(config.initialisation) is Initialisation.FEATURES:
        return (EngineName.FEATURES, EngineName.ECC, EngineName.SITK)
    if model is TransformModel.BSPLINE:
        return (EngineName.SITK,)
    return (EngineName.ECC, EngineName.FEATURES, EngineName.SITK)


def _engine_config(engine: EngineName, config: RegistrationConfig) -> RegistrationConfig:
    """The configuration an engine gets: ECC and features keep the stages' models, not their MI settings."""
    if engine is EngineName.FEATURES:
        # features need no initial transform; ECC refinement keeps to the last stage's model
        return config.replace(stages=config.stages[-1:], initialisation=Initialisation.GEOMETRY)
    if engine is EngineName.ECC:
        stages = tuple(s for s in config.stages if TransformModel.parse(s.model) is not TransformModel.BSPLINE)
        if not stages:
            raise ConfigError("the ECC engine has no B-spline model")
        init = Initialisation.parse(config.initialisation)
        if init is Initialisation.FEATURES:
            init = Initialisation.GEOMETRY
        return config.replace(stages=stages, initialisation=init)
    return config


def _metrics(
    fixed: SpatialImage, moving: SpatialImage, transform: Transform, mask: np.ndarray | None, threads: int | None
) -> dict[str, float]:
    from coregister.qc.metrics import compare

    try:
        return compare(fixed, moving, transform, mask=mask, threads=threads)
    except (CoregisterError, RuntimeError) as exc:  # a transform that cannot be resampled is a failed attempt
        logger.info("metrics failed: %s", exc)
        return {"ncc": float("nan"), "mi": float("nan"), "mse": float("nan"), "overlap": 0.0}


def _quality(
    fixed: SpatialImage,
    moving: SpatialImage,
    output: EngineOutput,
    before: Mapping[str, float],
    after: Mapping[str, float],
    metric: Metric,
) -> tuple[bool, list[str]]:
    """The quality check of :mod:`coregister.qc.quality` on an engine's output: ``(passed, reasons)``."""
    verdict = check(fixed, moving, output.transform, before, after, metric=metric, hit_iteration_cap=output.hit_iteration_cap)
    return bool(verdict.passed), list(verdict.warnings)


def _judged_metric(engine: EngineName, config: RegistrationConfig) -> Metric:
    """What an attempt optimised, hence what must not get worse: correlation for ECC and features."""
    if engine in (EngineName.ECC, EngineName.OPENCV_ECC, EngineName.FEATURES):
        return Metric.ECC
    return Metric.parse(config.stages[-1].metric) if config.stages else Metric.MATTES


def _identity(ndim: int) -> Transform:
    return Translation(np.zeros(ndim))


def run_auto(
    fixed: SpatialImage,
    moving: SpatialImage,
    config: RegistrationConfig,
    *,
    initial: Transform | None = None,
    fixed_mask: np.ndarray | None = None,
    moving_mask: np.ndarray | None = None,
    progress: ProgressCallback | None = None,
    engines: Sequence[EngineName | str] | None = None,
    get_engine: Callable[[EngineName], Any] | None = None,
) -> EngineOutput:
    """Register with the first engine whose answer passes the quality check, falling back on failure.

    Parameters
    ----------
    fixed, moving : SpatialImage
        Same dimension (2D or 3D).
    config : RegistrationConfig
        The stages' models drive every engine; ``("accept_ncc", v)`` in the
        last stage's ``extra`` sets the correlation that ends the chain early.
    initial : Transform, optional
        Fixed -> moving starting transform, given to the intensity engines.
    fixed_mask, moving_mask : ndarray of bool, optional
        Pixels to use, on each image's grid.
    progress : callable, optional
        ``progress(stage, level, iteration, metric)`` from the engines.
    engines : sequence of engine names, optional
        Override :func:`attempt_order`.
    get_engine : callable, optional
        Engine factory (default :func:`coregister.engines.get_engine`).

    Returns
    -------
    EngineOutput
        The chosen attempt's output: ``engine`` names the engine that
        produced the answer, ``warnings`` hold the reasons for each fallback
        (and the chosen attempt's own), ``extras["chain"]`` lists every
        attempt with its verdict, ``extras["passed"]`` the chosen one's.

    Raises
    ------
    RegistrationFailed
        When no engine produced any transform.

    Examples
    --------
    >>> import numpy as np
    >>> from scipy import ndimage
    >>> from skimage import color, data
    >>> from coregister.config import RegistrationConfig, Stage
    >>> fixed = SpatialImage(color.rgb2gray(data.astronaut()).astype(np.float32), origin=(0, 0), spacing=(1, 1))
    >>> turned = ndimage.rotate(fixed.array, 60, reshape=False, order=3)  # beyond ECC's capture range here
    >>> out = run_auto(fixed, fixed.replace(array=turned), RegistrationConfig(stages=(Stage(model="rigid"),)))
    >>> out.engine, round(float(out.transform.angles_deg[0]))
    ('features', -60)
    >>> out.warnings[0].startswith("ecc:")  # why the ECC answer was not kept
    True
    """
    if fixed.ndim != moving.ndim:
        raise GeometryError(
            f"fixed image is {fixed.ndim}D and moving image is {moving.ndim}D; register images of the same dimension"
        )
    if get_engine is None:
        from coregister.engines import get_engine as factory
    else:
        factory = get_engine  # type: ignore[assignment]
    order = tuple(EngineName.parse(e) for e in engines) if engines is not None else attempt_order(fixed.ndim, config)
    if not order:
        raise ConfigError("the fallback chain needs at least one engine")
    options = dict(config.stages[-1].extra) if config.stages else {}
    accept_ncc = float(options.get("accept_ncc", _ACCEPT_NCC))
    mask = None if fixed_mask is None else np.asarray(fixed_mask, dtype=bool)
    before = _metrics(fixed, moving, initial if initial is not None else _identity(fixed.ndim), mask, config.threads)

    attempts: list[Attempt] = []
    results: list[tuple[EngineOutput, Attempt]] = []
    warnings: list[str] = []
    for name in order:
        started = time.perf_counter()
        try:
            engine = factory(name)
            output = engine.run(
                fixed,
                moving,
                _engine_config(name, config),
                initial=initial if name is not EngineName.FEATURES else None,
                fixed_mask=fixed_mask,
                moving_mask=moving_mask,
                progress=progress,
            )
        except (RegistrationFailed, ConfigError, GeometryError, ImportError) as exc:
            reason = f"{name.value}: {exc}"
            warnings.append(reason)
            attempts.append(Attempt(name.value, False, float("nan"), (str(exc),), time.perf_counter() - started))
            logger.info("fallback chain: %s", reason)
            continue
        except Exception as exc:  # an engine's library failing (cv2.error, ITK exceptions) is a fallback, not a crash
            if type(exc).__module__.split(".")[0] not in ("cv2", "SimpleITK", "numpy", "scipy"):
                raise
            reason = f"{name.value}: {type(exc).__name__}: {str(exc).strip().splitlines()[-1] if str(exc).strip() else ''}"
            warnings.append(reason)
            attempts.append(Attempt(name.value, False, float("nan"), (reason,), time.perf_counter() - started))
            continue
        after = _metrics(fixed, moving, output.transform, mask, config.threads)
        passed, reasons = _quality(fixed, moving, output, before, after, _judged_metric(name, config))
        if bool(output.extras.get("failed")):
            passed = False
            reasons = [*reasons, "the engine reported that it did not converge", *output.warnings]
        ncc = float(after.get("ncc", np.nan))
        attempt = Attempt(output.engine or name.value, passed, ncc, tuple(reasons), time.perf_counter() - started)
        attempts.append(attempt)
        results.append((output, attempt))
        if passed and abs(ncc) >= accept_ncc:  # |NCC|: an inverted contrast aligned is aligned
            break
        why = "; ".join(reasons) if reasons else f"NCC {ncc:.3f} below {accept_ncc}"
        warnings.append(f"{attempt.engine}: {why}")
        logger.info("fallback chain: %s did not settle it (%s)", attempt.engine, why)
    if not results:
        raise RegistrationFailed("no engine produced a transform: " + " | ".join(warnings))
    chosen, verdict = _choose(results)
    if not verdict.passed:
        warnings.append(f"no engine passed the quality check; returning {verdict.engine}'s answer (highest NCC)")
    elif attempts[-1] is not verdict:
        warnings.append(f"chose {verdict.engine} (NCC {verdict.ncc:.4f}) among the attempts")
    extras = dict(chosen.extras)
    extras["chain"] = [a.to_dict() for a in attempts]
    extras["passed"] = verdict.passed
    # the chosen attempt's own warnings come after the chain's reasons
    return dataclasses.replace(chosen, warnings=tuple(dict.fromkeys([*warnings, *chosen.warnings])), extras=extras)


def _choose(results: list[tuple[EngineOutput, Attempt]]) -> tuple[EngineOutput, Attempt]:
    """The passing attempt with the highest NCC; the highest NCC overall when none passed."""

    def key(item: tuple[EngineOutput, Attempt]) -> tuple[bool, float]:
        ncc = item[1].ncc
        return item[1].passed, abs(ncc) if math.isfinite(ncc) else -np.inf

    return max(results, key=key)
