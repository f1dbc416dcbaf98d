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
from coregister.errors import ConfigError, CoregisterError, GeometryError, RegistrationFailed
from coregister.image import SpatialImage
from coregister.pipeline.evidence import figures, overlay
from coregister.pipeline.result import Start
from coregister.transforms import Transform, Translation

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


_LINEAR_ORDER = (TransformModel.TRANSLATION, TransformModel.RIGID, TransformModel.SIMILARITY, TransformModel.AFFINE)


def _feature_model(config: RegistrationConfig) -> TransformModel:
    """The model keypoints fit for a start: the registration's own linear model, an affine at most.

    A translation preset starts from a translation (a rotation the stages cannot undo would stay in the
    answer); a B-spline or homography preset from an affine.

    Examples
    --------
    >>> from coregister import presets
    >>> _feature_model(presets.translation(ndim=2)).value, _feature_model(presets.bspline(ndim=2)).value
    ('translation', 'affine')
    """
    models = [TransformModel.parse(s.model) for s in config.stages]
    linear = [m for m in models if m in _LINEAR_ORDER]
    if not linear or len(linear) < len(models):
        return TransformModel.AFFINE
    return max(linear, key=_LINEAR_ORDER.index)


#: a start from keypoints needs at least this many inlier matches: a handful fits any model to chance matches
MIN_START_INLIERS = 8


def _doubtful_start(
    fixed: SpatialImage, moving: SpatialImage, start: Transform, findings: dict[str, object], mask: np.ndarray | None,
) -> str:
    """Why a start from keypoints should not be used ("" when it may).

    Keypoints matched across a change of contrast (a T1 slice against a PD
    one) or on a texture that repeats give a few chance matches, and any
    model fits a few matches: such a start is kept only if it rests on
    enough inliers and the images share more information through it than
    through the image centres' alignment it replaces.
    """
    inliers = int(findings.get("inliers", 0))  # type: ignore[call-overload]
    if inliers < MIN_START_INLIERS:
        return f"{inliers} inlier matches, fewer than {MIN_START_INLIERS}"
    centres = Translation(np.asarray(moving.world_centre) - np.asarray(fixed.world_centre))
    try:
        through_start = figures(overlay(fixed, moving, start, mask=mask))["mi"]
        through_centres = figures(overlay(fixed, moving, centres, mask=mask))["mi"]
    except (CoregisterError, RuntimeError) as exc:
        return f"it cannot be resampled: {exc}"
    if not through_start > through_centres:
        return (f"the images share less information through it (mutual information {through_start:.3f}) than "
                f"through the image centres ({through_centres:.3f})")
    return ""


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
    model = TransformModel.TRANSLATION if how is Initialisation.PHASE else _feature_model(config)
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
    if engine_name is EngineName.FEATURES:
        doubt = _doubtful_start(fixed, moving, found.transform, findings, fixed_mask)
        if doubt:
            notes.append(f"the feature initialisation was not used ({doubt}); started from the image centres instead")
            return None, config.replace(initialisation=Initialisation.GEOMETRY)
    start = Start(method=how.value, engine=found.engine, transform=found.transform, findings=findings)
    return start, config.replace(initialisation=Initialisation.NONE)
