"""The fallback chain behind ``register(preset="auto")``: try, check, fall back, choose.

An engine that returns is not an engine that succeeded: OpenCV's ECC and
every local optimiser converge to wrong answers without raising. So each
attempt is judged by the **quality check** (metric before/after on the
fixed mask, plausible scale and shear, iteration cap; see
:mod:`coregister.pipeline.quality`), once, and by how well the images then agree
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
``("accept_ncc", v)`` in the last stage's ``extra``); otherwise it keeps
the best attempt that passed (highest ``|NCC|``), or, when none passed, the
best attempt with the failure said in ``warnings``. Correlation is a
monomodal yardstick: for multimodal pairs choose an MI preset directly.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from collections.abc import Mapping, Sequence

import numpy as np

from coregister.config import EngineName, Initialisation, ProgressCallback, RegistrationConfig, TransformModel
from coregister.errors import ConfigError, RegistrationFailed
from coregister.pipeline.attempt import Judged, Pair, attempt, failed_attempt, is_engine_failure
from coregister.pipeline.result import Attempt
from coregister.transforms import Transform

__all__ = ["Chosen", "attempt_order", "run_chain"]

logger = logging.getLogger(__name__)

_ACCEPT_NCC = 0.8


@dataclasses.dataclass(frozen=True)
class Chosen:
    """The chain's outcome: the kept attempt, every attempt's record in order, and the reasons for each fallback."""

    judged: Judged
    attempts: tuple[Attempt, ...]
    warnings: tuple[str, ...]


#: the models only the SimpleITK engine estimates
_DEFORMABLE = (TransformModel.BSPLINE, TransformModel.SYN)


def attempt_order(ndim: int, config: RegistrationConfig) -> tuple[EngineName, ...]:
    """The engines :func:`run_chain` tries, in order, for images of ``ndim`` dimensions.

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
    if model in _DEFORMABLE:
        return (EngineName.SITK,)
    return (EngineName.ECC, EngineName.FEATURES, EngineName.SITK)


def _engine_config(engine: EngineName, config: RegistrationConfig) -> RegistrationConfig:
    """The configuration an engine gets: ECC and features keep the stages' models, not their MI settings.

    With ``initialisation="features"`` the feature engine is the chain's first attempt; the intensity
    engines after it start from the image centres.
    """
    if engine is EngineName.FEATURES:
        # features need no initial transform; ECC refinement keeps to the last stage's model, or to the projective
        # map when the matches support it better than an affine (a view from another angle)
        last = config.stages[-1]
        if TransformModel.parse(last.model) is TransformModel.AFFINE and "select_models" not in dict(last.extra):
            last = last.replace(extra=(*last.extra, ("select_models", ("affine", "homography"))))
        return config.replace(stages=(last,), initialisation=Initialisation.GEOMETRY, engine=engine)
    init = Initialisation.parse(config.initialisation)
    if init is Initialisation.FEATURES:
        init = Initialisation.GEOMETRY
    if engine is EngineName.ECC:
        stages = tuple(s for s in config.stages if TransformModel.parse(s.model) not in _DEFORMABLE)
        if not stages:
            raise ConfigError("the ECC engine has no deformable model (B-spline, displacement field)")
        return config.replace(stages=stages, initialisation=init, engine=engine)
    return config.replace(initialisation=init, engine=engine)


def run_chain(
    pair: Pair,
    config: RegistrationConfig,
    before: Mapping[str, float],
    *,
    initial: Transform | None = None,
    progress: ProgressCallback | None = None,
    engines: Sequence[EngineName | str] | None = None,
) -> Chosen:
    """Try the engines in turn; keep the first answer that passes with ``|NCC| >= accept_ncc``, else the best one.

    Parameters
    ----------
    pair : Pair
        The prepared images and masks (:func:`coregister.pipeline.attempt.prepare`).
    config : RegistrationConfig
        The stages' models drive every engine; ``("accept_ncc", v)`` in the
        last stage's ``extra`` sets the correlation that ends the chain early.
    before : mapping
        The pair's metrics before registration.
    initial : Transform, optional
        Fixed -> moving starting transform, given to the intensity engines.
    progress : callable, optional
        ``progress(stage, level, iteration, metric)`` from the engines.
    engines : sequence of engine names, optional
        Override :func:`attempt_order`.

    Raises
    ------
    RegistrationFailed
        When no engine produced any transform.
    """
    order = tuple(EngineName.parse(e) for e in engines) if engines is not None else attempt_order(pair.fixed.ndim, config)
    if not order:
        raise ConfigError("the fallback chain needs at least one engine")
    accept_ncc = float(dict(config.stages[-1].extra).get("accept_ncc", _ACCEPT_NCC)) if config.stages else _ACCEPT_NCC

    attempts: list[Attempt] = []
    judged_ones: list[Judged] = []
    warnings: list[str] = []
    for name in order:
        started = time.perf_counter()
        try:
            judged = attempt(name, pair, _engine_config(name, config), before,
                             initial=initial if name is not EngineName.FEATURES else None, progress=progress)
        except Exception as exc:  # an engine (or its library) failing is a fallback, not a crash
            if not is_engine_failure(exc):
                raise
            record = failed_attempt(name, exc, started)
            attempts.append(record)
            warnings.append(f"{name.value}: {record.error}")
            logger.info("fallback chain: %s failed: %s", name.value, record.error)
            continue
        attempts.append(judged.record)
        judged_ones.append(judged)
        ncc = judged.record.ncc
        if judged.quality.passed and abs(ncc) >= accept_ncc:  # |NCC|: an inverted contrast aligned is aligned
            break
        reasons = judged.quality.warnings
        why = "; ".join(reasons) if reasons else f"NCC {ncc:.3f} below {accept_ncc}"
        warnings.append(f"{judged.record.engine}: {why}")
        logger.info("fallback chain: %s did not settle it (%s)", judged.record.engine, why)
    if not judged_ones:
        raise RegistrationFailed("no engine produced a transform: " + " | ".join(warnings))
    chosen = _choose(judged_ones)
    if not chosen.quality.passed:
        warnings.append(f"no engine passed the quality check; returning {chosen.record.engine}'s answer (highest NCC)")
    elif attempts[-1] is not chosen.record:
        warnings.append(f"chose {chosen.record.engine} (NCC {chosen.record.ncc:.4f}) among the attempts")
    return Chosen(judged=chosen, attempts=tuple(attempts), warnings=tuple(warnings))


def _choose(candidates: list[Judged]) -> Judged:
    """The passing attempt with the highest |NCC|; the highest |NCC| overall when none passed."""

    def key(item: Judged) -> tuple[bool, float]:
        ncc = item.record.ncc
        return item.quality.passed, abs(ncc) if math.isfinite(ncc) else -np.inf

    return max(candidates, key=key)
