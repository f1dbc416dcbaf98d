"""The configuration a preset and the user's options make, and the engine that runs it.

One place decides both, for the API and the command line alike:
:func:`configure` turns a preset name and options into a
:class:`~coregister.config.RegistrationConfig` (refusing options that do not
apply), and :func:`route` names the engine a configuration runs on
(:attr:`~coregister.config.EngineName.AUTO` meaning the fallback chain).
"""

from __future__ import annotations

from coregister import presets
from coregister.config import EngineName, Initialisation, Metric, RegistrationConfig, TransformModel
from coregister.errors import ConfigError

__all__ = ["configure", "route"]


def route(config: RegistrationConfig) -> EngineName:
    """The engine ``config`` runs on; :attr:`EngineName.AUTO` is the fallback chain.

    ``metric="ecc"`` in any stage selects the ECC engine; ``engine="auto"``
    (``preset="auto"``) the fallback chain; a homography stage (or
    ``engine="features"``) the feature engine; otherwise ``config.engine``.

    Examples
    --------
    >>> from coregister.config import Stage
    >>> [route(presets.get(p, ndim=2)).value for p in ("rigid", "auto", "homography")]
    ['sitk', 'auto', 'features']
    >>> route(presets.rigid().replace(stages=(Stage(metric="ecc"),))).value
    'ecc'
    """
    if any(Metric.parse(s.metric) is Metric.ECC for s in config.stages):
        return EngineName.ECC
    engine = EngineName.parse(config.engine)
    if engine is EngineName.AUTO:
        return engine
    if engine is EngineName.FEATURES or any(TransformModel.parse(s.model) is TransformModel.HOMOGRAPHY
                                            for s in config.stages):
        return EngineName.FEATURES
    return engine


def configure(
    preset: str = "rigid",
    *,
    ndim: int = 3,
    precise: bool = False,
    metric: Metric | str | None = None,
    initialisation: Initialisation | str | None = None,
    iterations: int | None = None,
    detector: str | None = None,
    initial_given: bool = False,
) -> RegistrationConfig:
    """The configuration of ``preset`` with the user's options applied.

    Parameters
    ----------
    preset : str
        A name from :data:`coregister.presets.PRESETS`.
    ndim : int
        2 or 3: the images' dimension.
    precise : bool
        The precise family of the preset.
    metric : str, optional
        Replaces every stage's metric (``ecc`` routes to the ECC engine).
    initialisation : str, optional
        How the first stage's start is found (``geometry``, ``moments``,
        ``phase``, ``features``, ``none``).
    iterations : int, optional
        Every stage's iteration cap, at every level.
    detector : str, optional
        Keypoint detector of a feature-based registration (``orb``, ``sift``...).
    initial_given : bool
        Whether the caller starts from a transform of its own (then
        ``initialisation`` makes no sense).

    Returns
    -------
    RegistrationConfig

    Raises
    ------
    ConfigError
        An option that does not apply: an initialisation beside a starting
        transform, a detector where no keypoints are used.

    Examples
    --------
    >>> configure("affine", iterations=50).stages[-1].iterations
    50
    >>> configure("rigid", detector="sift")
    Traceback (most recent call last):
    ...
    coregister.errors.ConfigError: the keypoint detector 'sift' (--detector, detector=) applies to feature-based ...
    """
    if initialisation is not None and initial_given:
        raise ConfigError("give a starting transform (--initial-transform, initial_transform=) or an initialisation "
                          "(--initialisation, initialisation=), not both: a starting transform needs no search")
    config = presets.get(preset, precise=precise, ndim=ndim)
    if metric is not None:
        config = presets.with_metric(config, metric)
    if initialisation is not None:
        config = config.replace(initialisation=Initialisation.parse(initialisation))
    if iterations is not None:
        if int(iterations) < 1:
            raise ConfigError(f"iterations={iterations}: give a positive number of iterations")
        # every stage, every level: a per-level schedule would override the count
        config = config.replace(stages=tuple(s.replace(iterations=int(iterations), iterations_per_level=None)
                                             for s in config.stages))
    if detector is None:
        return config
    config = config.replace(stages=tuple(
        s.replace(extra=(*((k, v) for k, v in s.extra if k != "detector"), ("detector", str(detector).lower())))
        for s in config.stages
    ))
    features_init = Initialisation.parse(config.initialisation) is Initialisation.FEATURES and not initial_given
    if route(config) in (EngineName.FEATURES, EngineName.AUTO) or features_init:
        return config
    raise ConfigError(
        f"the keypoint detector {detector!r} (--detector, detector=) applies to feature-based registration (preset "
        f"homography or auto, or initialisation features); preset {preset!r} uses no keypoints"
    )
