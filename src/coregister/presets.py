"""Named registration recipes: functions that return a :class:`~coregister.config.RegistrationConfig`.

Each preset comes in two families:

* the default (``precise=False``) aims at elastix's default parameter maps'
  accuracy in a fraction of their time: Mattes mutual information on a
  bin-averaged pyramid, a few tens of thousands of random points per level
  drawn from the strongest fixed-image edges, regular-step descent with
  millimetre steps (scales from physical shift) that stops when its step
  falls below 1 µm;
* ``precise=True`` aims at ANTsPy's accuracy: many more points per level and
  a 0.1 µm final step, in more time.

Levels (shrink factors) are chosen from each image's size and spacing when
the registration runs, so one preset serves a 1 mm head, a 4 mm EPI volume
and a 2D slice. Presets are plain values: change any field with
``config.replace(...)`` or ``stage.replace(...)``.

Examples
--------
>>> from coregister import presets
>>> config = presets.get("affine")
>>> [s.model.value for s in config.stages]
['rigid', 'affine']
>>> presets.rigid(precise=True).stages[0].max_samples > presets.rigid().stages[0].max_samples
True
>>> presets.names()
['translation', 'rigid', 'similarity', 'affine', 'bspline', 'syn', 'homography', 'auto']
"""

from __future__ import annotations

import math

from coregister.config import (
    BinaryInputs,
    EngineName,
    Initialisation,
    Metric,
    Optimizer,
    RegistrationConfig,
    Stage,
    TransformModel,
)
from coregister.errors import ConfigError

__all__ = [
    "PRESETS",
    "affine",
    "auto",
    "bspline",
    "get",
    "homography",
    "names",
    "rigid",
    "similarity",
    "syn",
    "translation",
    "with_metric",
]

#: preset names accepted by :func:`get` and ``coregister.register(preset=...)``
PRESETS = ("translation", "rigid", "similarity", "affine", "bspline", "syn", "homography", "auto")


def _linear_stage(model: TransformModel, *, precise: bool, ndim: int) -> Stage:
    if ndim == 2:
        # 2D images are small: every pixel (or many) is affordable; a gentler step reduction keeps the
        # descent going along the rotation-translation valley of a slice (0.5 stopped 1.4 degrees short
        # on the ITK brainweb pair; on its T1/PD pair, 0.8 and a 1 µm final step gave 0.13-0.14 mm for
        # every seed, 0.6 and 2 µm 0.13-0.65)
        samples = 1 << 18 if precise else 1 << 16
        edge = None if precise else 0.25
        extra: tuple[tuple[str, object], ...] = (("relaxation", 0.8),)
        coarse_samples = None
    else:
        samples = 200_000 if precise else 20_000
        edge = 0.2 if precise else 0.1
        # the levels before the finest only bring the next one into range: 15k points there (a 1 mm head,
        # 12 plain warps x 2 seeds: worst 0.0067 mm; with 20k on every level one start stopped 0.0153 mm off,
        # the regular-step descent shrinking its step early, and with 40k the run took 1.2 s instead of 0.8)
        coarse_samples = None if precise else 15_000
        # the ECC engine (metric="ecc") draws one point set per level and reads ``extra`` "max_samples" first: it
        # keeps 40k (plain MNI warps: 0.0026-0.0038 mm with 40k, 0.0049-0.0078 with 20k)
        extra = () if precise else (("max_samples", 40_000),)
    # Half a voxel of Gaussian smoothing per level reduces the effect of noise and interpolation on rigid
    # motion (degraded 1 mm MNI: 0.030 -> 0.015 mm); it does not commute with a scaling, so models with a
    # scale go without it (affine: 0.069 with it, 0.056 without)
    smoothing = 0.5 if model in (TransformModel.TRANSLATION, TransformModel.RIGID) else 0.0
    if smoothing and precise and ndim == 3:
        # 0.7 voxel: plain warps of 1 mm MNI 0.0011-0.0018 mm over 6 cases and seeds (0.0011-0.0030 with 0.5)
        smoothing = 0.7
    return Stage(
        model=model,
        metric=Metric.MATTES,
        smoothing_voxels=smoothing,
        optimizer=Optimizer.REGULAR_STEP,
        iterations=400 if precise else 200,
        min_step=1e-4 if precise else (1e-3 if ndim == 2 else 2e-3),
        histogram_bins=32,
        max_samples=samples,
        coarse_max_samples=coarse_samples,
        edge_sampling_fraction=edge,
        extra=extra,
    )


def _config(name: str, stages: tuple[Stage, ...], *, precise: bool, ndim: int, **options: object) -> RegistrationConfig:
    # 2D photos turn, scale and shear far beyond an intensity optimiser's reach from the image centres (30 degrees
    # and a 1.2 scale sent the SimpleITK engine 15-90 px off on 11 of 14 photographs of the validation corpus);
    # keypoints find the start at any angle and scale, and the intensity stages refine it. Where keypoints find
    # nothing to match (multimodal pairs, no texture), the pipeline starts from the image centres.
    start = Initialisation.FEATURES if ndim == 2 else Initialisation.GEOMETRY
    settings: dict[str, object] = {"initialisation": start, **options}
    return RegistrationConfig(stages=stages, name=f"{name}-precise" if precise else name, **settings)  # type: ignore[arg-type]


def translation(*, precise: bool = False, ndim: int = 3) -> RegistrationConfig:
    """A shift only, Mattes MI.

    Examples
    --------
    >>> translation().stages[0].model.value
    'translation'
    """
    return _config("translation", (_linear_stage(TransformModel.TRANSLATION, precise=precise, ndim=ndim),), precise=precise, ndim=ndim)


def rigid(*, precise: bool = False, ndim: int = 3) -> RegistrationConfig:
    """Rotation and translation (Euler angles), Mattes MI; images centred first.

    Examples
    --------
    >>> rigid().name, rigid(precise=True).name
    ('rigid', 'rigid-precise')
    """
    return _config("rigid", (_linear_stage(TransformModel.RIGID, precise=precise, ndim=ndim),), precise=precise, ndim=ndim)


def similarity(*, precise: bool = False, ndim: int = 3) -> RegistrationConfig:
    """Rotation, isotropic scale and translation, Mattes MI.

    Examples
    --------
    >>> similarity().stages[0].model.value
    'similarity'
    """
    return _config("similarity", (_linear_stage(TransformModel.SIMILARITY, precise=precise, ndim=ndim),), precise=precise, ndim=ndim)


def affine(*, precise: bool = False, ndim: int = 3) -> RegistrationConfig:
    """Rigid, then a full affine map on top of it (Mattes MI both).

    Examples
    --------
    >>> [s.model.value for s in affine().stages]
    ['rigid', 'affine']
    """
    rigid_stage = _linear_stage(TransformModel.RIGID, precise=precise, ndim=ndim)
    # the rigid stage only brings the affine one into its capture range: its coarse levels suffice
    # (levels of 4 voxels and coarser); the affine stage then runs on every level, the coarsest included,
    # where a large scale difference is caught (a 1.2x larger subject head: NCC 0.73 after, against 0.52
    # when the affine stage started a level finer)
    rigid_stage = rigid_stage.replace(min_step=1e-2, max_samples=20_000, coarse_max_samples=None, finest_factor=4)
    if ndim == 3 and not precise:
        # its last level is 4 voxels: a step of 1 % of that voxel and 8k points are enough there (10 degraded
        # 1 mm cases: 7 % less time than with 15k, median error 0.069 mm against 0.066, every case still at or
        # below elastix's; 6 plain warps: the same 0.038-0.044 mm)
        rigid_stage = rigid_stage.replace(min_step=4e-2, max_samples=8_000)
    # 48 bins for the matrix: coarse histograms pulled the scales (degraded 1 mm MNI: 0.056 mm error with
    # 32 bins, 0.039 with 48, 0.27 with 16)
    affine_stage = _linear_stage(TransformModel.AFFINE, precise=precise, ndim=ndim).replace(histogram_bins=48)
    # 3D default: as for the rigid preset, 15k points before the finest level and 20k on it (with 30k on every
    # level a degraded 1 mm case took 1.4 s instead of 0.9, and the errors were the same to within 0.01 mm)
    if ndim == 3 and precise:
        # the strongest 10 % of edges rather than 20 %: 0.036-0.071 mm against 0.042-0.074 on degraded cases
        affine_stage = affine_stage.replace(edge_sampling_fraction=0.1)
    return _config("affine", (rigid_stage, affine_stage), precise=precise, ndim=ndim)


def bspline(*, precise: bool = False, ndim: int = 3) -> RegistrationConfig:
    """Rigid, affine, then a cubic B-spline free-form deformation (L-BFGS-B), composed into one ``Composite``.

    The control-point mesh is about 40 mm (30 mm when precise), optimised on
    the levels of 4 and 2 voxels (down to full resolution when precise).
    SimpleITK's B-spline metrics evaluate the transform's full Jacobian at
    every point (measured: 15 µs per point on a 40 mm mesh over a 1 mm
    head), so this stage uses few points and iterations. The spline cannot
    fold: L-BFGS-B keeps every coefficient within Choi & Lee's injectivity
    bound (the mesh spacing over 2.48 in 3D, 2.05 in 2D), and where the
    spline reaches it at the end of a level, the next level optimises a
    fresh bounded spline composed on it (Rueckert et al. 2006), so the
    levels together move further than one bounded spline (Colin27 ->
    MNI152 at 1 mm reaches the bound on its first level). A fold guard
    (:mod:`coregister.engines.sitk.bspline`) also scales the last spline
    back towards the identity if its Jacobian determinant anywhere on the
    fixed grid falls below 0.05. A mesh refined level by
    level (``Stage.bspline_refinements``: the first level on a mesh 2, 4...
    times coarser) is there for pairs that need it; on the known smooth 6 mm
    warp of a 2 mm head it lost accuracy at this iteration budget (80 then
    40 mm: 0.92 mm; 40 then 20 mm: 0.65 mm; one 40 mm mesh: 0.43 mm), so it
    is not the default. A pair of binary masks is registered as their signed
    distance maps (``binary_inputs``).

    Examples
    --------
    >>> [s.model.value for s in bspline().stages]
    ['rigid', 'affine', 'bspline']
    >>> bspline().stages[-1].min_jacobian, bspline().binary_inputs.value
    (0.05, 'distance')
    """
    linear = affine(precise=precise, ndim=ndim).stages
    deformable = Stage(
        model=TransformModel.BSPLINE,
        metric=Metric.MATTES,
        optimizer=Optimizer.LBFGSB,
        iterations=60 if precise else 30,
        # precise: 64 bins. On twelve known warps of 2 mm heads (four volumes, 3-9 mm; four of them remapped
        # T2-like) the default with 64 came nearer the truth every time (bench_deformable's four MNI152 warps
        # 0.19-0.34 mm against 0.28-0.39, a higher label Dice on each; remapped 0.75-2.78 against 1.02-2.83) but took
        # 1.75 times as long (47 s against 27 on the 6 mm warp, alone on 2 cores), so the default keeps elastix's 32;
        # precise on Colin27 under a known warp: 0.142 mm against 0.153. syn on Mattes keeps ANTs' 32 (64 was worse)
        histogram_bins=64 if precise else 32,
        bspline_mesh_mm=30.0 if precise else 40.0,
        min_jacobian=0.05,
        injective=True,
        max_samples=40_000 if precise else 20_000,
        edge_sampling_fraction=None,
        coarsest_factor=4,
        finest_factor=1 if precise else 2,
        smoothing_voxels=0.5,
    )
    return _config("bspline", (*linear, deformable), precise=precise, ndim=ndim, binary_inputs=BinaryInputs.DISTANCE)


def syn(*, precise: bool = False, ndim: int = 3) -> RegistrationConfig:
    """Rigid, affine, then a dense diffeomorphic displacement field: atlas to subject and back in one call.

    The deformable stage (:mod:`coregister.engines.sitk.field`) is greedy and
    diffeomorphic: ITK's diffeomorphic demons with symmetric forces on the
    moving image resampled through the affine answer and histogram-matched
    to the fixed one, each update composed to first order (as ANTs' greedy
    SyN composes its steps), the whole field smoothed by a Gaussian of 1.5
    voxels after every iteration; three levels of 8, 4 and 2 mm, and five
    iterations on the image's own voxels where they are finer and number
    at most 2^24 (a 1 mm head: 7.2 million; the level takes 160 bytes per
    voxel) (precise: every level down to them, with more iterations); a
    fold guard at a Jacobian determinant of 0.05; the affine stage stops at
    its level of 2 voxels (the field corrects the rest; precise: on the
    image's own voxels). ``metric="ncc"`` (ANTS
    neighbourhood correlation) or ``metric="mattes"`` replace the demons by SimpleITK's
    ``ImageRegistrationMethod`` on a ``DisplacementFieldTransform`` (the
    metrics ANTs' SyN uses, with its smoothing and schedule:
    :func:`with_metric`). The answer is ``Composite((affine,
    field))``, the field applied first; ``result.transform.inverse()`` is
    the field's numerical inverse (its residual stated) then the affine's.
    A pair of binary masks is registered as their signed distance maps.

    Examples
    --------
    >>> config = syn()
    >>> [s.model.value for s in config.stages], config.stages[-1].metric.value
    (['rigid', 'affine', 'syn'], 'mse')
    >>> config.stages[-1].finest_spacing_mm, syn(precise=True).stages[-1].finest_spacing_mm
    (2.0, None)
    >>> config.stages[1].finest_factor, syn(precise=True).stages[1].finest_factor  # the affine stage's last level
    (2, 1)
    """
    linear = affine(precise=precise, ndim=ndim).stages
    if not precise:
        # the field corrects what the affine map leaves: its level of 2 voxels is enough (eight known warps of a
        # 2 mm head: the same mean error to within 0.004 mm, 0.2 s less; ANTsPy's SyN skips it too)
        linear = tuple(s.replace(finest_factor=2) if s.model is TransformModel.AFFINE else s for s in linear)
    deformable = Stage(
        model=TransformModel.SYN,
        metric=Metric.MSE,
        optimizer=Optimizer.GRADIENT_DESCENT,
        # known 6 mm warp of a 2 mm head: 0.45 mm with (40, 30, 30) and with (60, 40, 30), 0.44 with (40, 30, 50);
        # a field sigma of 1.0 voxel 0.51 mm (and folds closer), 2.0 0.45; smoothing the levels 0.55.
        # Five known warps (3-9 mm, bench_deformable --warps): the last ten iterations at 2 mm of (40, 30, 30)
        # bought 0.005-0.021 mm of mean error and 0.0006-0.0015 of label Dice for a third of the stage's time;
        # without them the error is still 0.04-0.22 mm below ANTsPy's SyN and SyNQuick on all five, the Dice
        # higher on four (on the 3 mm warp SyNQuick's is higher with or without them); more iterations at 4 mm
        # bought nothing
        iterations_per_level=(100, 60, 40) if precise else (40, 30, 20),
        field_sigma_voxels=1.5,
        update_sigma_voxels=0.0,
        min_jacobian=0.05,
        finest_spacing_mm=None if (precise or ndim == 2) else 2.0,
        # Colin27 -> MNI152 at 1 mm: head Dice 0.9753 stopping at 2 mm, 0.9761 with five iterations at 1 mm (ANTsPy
        # SyN 0.9761), in twice the time (8 -> 15 s; elastix 47 s, ANTsPy 84 s). Known 6 and 9 mm warps of the 1 mm
        # head: 0.339/0.467 mm -> 0.312/0.426 mm (3 iterations 0.319, 10 0.300 at 18 s)
        full_resolution_iterations=5,
        smoothing_voxels=0.0,
        histogram_bins=32,
    )
    return _config("syn", (*linear, deformable), precise=precise, ndim=ndim, binary_inputs=BinaryInputs.DISTANCE)


def homography(*, precise: bool = False, ndim: int = 2) -> RegistrationConfig:
    """2D only: a projective map from feature matches (the ``features`` engine; ITK has no projective transform).

    Examples
    --------
    >>> homography().engine.value, homography().stages[0].model.value
    ('features', 'homography')
    """
    if ndim != 2:
        raise ConfigError(f"a homography maps 2D images; this registration is {ndim}D: use preset 'affine'")
    stage = Stage(model=TransformModel.HOMOGRAPHY, metric=Metric.NCC, optimizer=Optimizer.GAUSS_NEWTON)
    return _config("homography", (stage,), precise=precise, ndim=ndim, engine=EngineName.FEATURES,
                   initialisation=Initialisation.NONE)


def auto(*, precise: bool = False, ndim: int = 3) -> RegistrationConfig:
    """The fallback chain (:mod:`coregister.pipeline.fallback`): the :func:`affine` stages, then other engines if they fail.

    Examples
    --------
    >>> auto().engine.value
    'auto'
    """
    return affine(precise=precise, ndim=ndim).replace(engine=EngineName.AUTO, name="auto-precise" if precise else "auto")


_BUILDERS = {
    "translation": translation,
    "rigid": rigid,
    "similarity": similarity,
    "affine": affine,
    "bspline": bspline,
    "syn": syn,
    "homography": homography,
    "auto": auto,
}


def names() -> list[str]:
    """Names :func:`get` accepts."""
    return list(PRESETS)


#: a ``syn`` stage on ``ncc`` or ``mattes`` follows ANTs' SyN defaults (``SyN[0.2, 3, 0]``, ``40x20x0`` on shrink
#: factors 4-2-1): the update smoothed by a Gaussian of variance 3 voxels², 40 then 20 iterations on the levels of 4
#: and 2 voxels, none on the image's own voxels. The total field is smoothed by one voxel: ANTs smooths none, but its
#: SyN keeps the map regular by its midpoint scheme, which this greedy one lacks (without it the fold guard had to
#: scale the BrainWeb slice pair's field back, by 0.55 with ncc). The demons' smoothing (1.5 voxels of the total
#: field, none of the update) stopped these metrics' levels after 9-14 iterations, the metric getting worse. Four
#: remapped known warps of 2 mm heads (3d-deform-multi, seeds 1-4), mattes: 2.14, 1.50, 1.58, 0.68 mm off in 4-6 s
#: with this schedule; 2.16, 1.53, 1.63, 0.67 in 16-21 s with the demons' (40, 30, 20) down to the image's voxels;
#: ncc on the same warps unremapped: 1.42, 1.29, 1.40, 0.46 in 8-15 s against 1.46, 1.34, 1.44, 0.32 in 28-78 s
SYN_METRIC_STAGE = {"update_sigma_voxels": math.sqrt(3.0), "field_sigma_voxels": 1.0,
                    "iterations_per_level": (40, 20), "finest_factor": 2, "finest_spacing_mm": None,
                    "full_resolution_iterations": 0}


def with_metric(config: RegistrationConfig, metric: Metric | str) -> RegistrationConfig:
    """``config`` with every stage on ``metric`` (``register(metric=...)``, ``--metric``).

    A ``syn`` stage that leaves the demons (``mse``) for ``ncc`` or
    ``mattes``/``mi`` also takes ANTs' SyN smoothing and schedule
    (:data:`SYN_METRIC_STAGE`, in both families): the demons' smoothing of
    the total field suits their small, regular steps, not a metric's
    gradient, and these metrics cost ten times the demons per iteration.

    Examples
    --------
    >>> stage = with_metric(syn(), "mattes").stages[-1]
    >>> stage.metric.value, round(stage.update_sigma_voxels, 3), stage.field_sigma_voxels, stage.iterations_per_level
    ('mattes', 1.732, 1.0, (40, 20))
    >>> with_metric(syn(), "mse").stages[-1].field_sigma_voxels  # the demons keep theirs
    1.5
    """
    chosen = Metric.parse(metric)

    def moved(stage: Stage) -> Stage:
        if stage.runs_demons and chosen is not Metric.MSE:
            return stage.replace(metric=chosen, **SYN_METRIC_STAGE)
        return stage.replace(metric=chosen)

    return config.replace(stages=tuple(moved(s) for s in config.stages))


def get(name: str, *, precise: bool = False, ndim: int = 3) -> RegistrationConfig:
    """The configuration of a named preset.

    Parameters
    ----------
    name : str
        One of :data:`PRESETS` (case-insensitive; ``"rigid-precise"`` is
        ``rigid`` with ``precise=True``).
    precise : bool
        The precise family: ANTsPy-like accuracy, more time.
    ndim : int
        2 or 3: 2D images use more of their (fewer) pixels.

    Returns
    -------
    RegistrationConfig

    Examples
    --------
    >>> get("rigid-precise").name
    'rigid-precise'
    >>> get("warp")
    Traceback (most recent call last):
    ...
    coregister.errors.ConfigError: unknown preset 'warp'; choose one of: translation, rigid, similarity, affine, bspline, syn, homography, auto
    """
    key = str(name).strip().lower().replace("_", "-")
    if key.endswith("-precise"):
        key, precise = key[: -len("-precise")], True
    if ndim not in (2, 3):
        raise ConfigError(f"ndim={ndim}: presets exist for 2D and 3D images")
    builder = _BUILDERS.get(key)
    if builder is None:
        raise ConfigError(f"unknown preset {name!r}; choose one of: {', '.join(PRESETS)}")
    return builder(precise=precise, ndim=ndim)
