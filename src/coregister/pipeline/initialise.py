"""The starting transform another engine finds (phase correlation, features), in one place for every engine.

Geometry and moments initialisations are each engine's own (they are cheap
and engine-specific); ``initialisation="phase"`` and ``"features"`` run a
second engine first, and that happens here: the intensity engine then starts
from its answer (``initial=``) with its own initialisation turned off.
"""

from __future__ import annotations

import logging

import numpy as np

from coregister.config import EngineName, Initialisation, RegistrationConfig, Stage, TransformModel
from coregister.engines import get_engine
from coregister.errors import ConfigError, GeometryError, RegistrationFailed
from coregister.image import SpatialImage
from coregister.pipeline.result import Start

__all__ = ["find_start", "needs_start"]

logger = logging.getLogger(__name__)

# stage options the phase and feature engines read when they initialise another engine
_PROBE_OPTIONS = frozenset({"detector", "max_features", "ratio", "robust", "reprojection_threshold_px"})
# ... and what they found that a user checks (copied into Start.findings)
_PROBE_FINDINGS = ("detector", "inliers", "reprojection_error_px", "phase")


def needs_start(config: RegistrationConfig) -> bool:
    """Whether ``config``'s initialisation runs another engine first (phase correlation or features).

    Examples
    --------
    >>> from coregister import presets
    >>> needs_start(presets.rigid()), needs_start(presets.rigid().replace(initialisation="phase"))
    (False, True)
    """
    return Initialisation.parse(config.initialisation) in (Initialisation.PHASE, Initialisation.FEATURES)


def find_start(
    config: RegistrationConfig,
    fixed: SpatialImage,
    moving: SpatialImage,
    fixed_mask: np.ndarray | None,
    moving_mask: np.ndarray | None,
    notes: list[str],
) -> tuple[Start | None, RegistrationConfig]:
    """Run the phase-correlation or feature engine for a starting transform when ``config`` asks for one.

    Returns the start found (None when no engine ran or it failed) and the
    configuration left to run: initialisation ``none`` after a start (the
    engine starts from it), ``geometry`` after a failure (``notes`` says why).
    Transforms map fixed-space points to moving space.
    """
    how = Initialisation.parse(config.initialisation)
    if not needs_start(config):
        return None, config
    engine_name = EngineName.PHASE if how is Initialisation.PHASE else EngineName.FEATURES
    model = TransformModel.TRANSLATION if how is Initialisation.PHASE else TransformModel.AFFINE
    # the feature engine's options (detector, ratio, ...) travel in the user's last stage; an intensity stage's own
    # options (relaxation, ...) mean nothing to it
    options = tuple((k, v) for k, v in (config.stages[-1].extra if config.stages else ()) if k in _PROBE_OPTIONS)
    probe = RegistrationConfig(stages=(Stage(model=model, extra=options),), initialisation=Initialisation.GEOMETRY,
                               engine=engine_name, seed=config.seed, threads=config.threads,
                               name=f"{how.value}-initialisation")
    try:
        if engine_name is EngineName.FEATURES and fixed.ndim != 2:
            raise ConfigError("feature initialisation is 2D only")
        found = get_engine(engine_name).run(fixed, moving, probe, fixed_mask=fixed_mask, moving_mask=moving_mask)
    except (RegistrationFailed, ConfigError, GeometryError, ImportError) as exc:
        notes.append(f"{how.value} initialisation failed ({exc}); started from the image centres instead")
        return None, config.replace(initialisation=Initialisation.GEOMETRY)
    logger.info("%s initialisation: %s", how.value, found.transform.to_dict().get("translation"))
    findings = {k: found.extras[k] for k in _PROBE_FINDINGS if k in found.extras}
    start = Start(method=how.value, engine=found.engine, transform=found.transform, findings=findings)
    return start, config.replace(initialisation=Initialisation.NONE)
