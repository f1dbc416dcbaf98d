"""One level's ``SimpleITK.ImageRegistrationMethod``: transform, metric, optimiser, sampling, and its rounded answer.

* **Metric and optimiser.** Mattes mutual information (default),
  joint-histogram MI, normalised correlation or mean squares; regular-step
  or plain gradient descent with scales from physical shift (steps in
  millimetres; the step shrinks by ``Stage.extra`` ``"relaxation"``, default
  0.6, when the gradient turns back) and a convergence window, or L-BFGS-B
  (B-spline). The
  moving image's gradient is taken by central differences at the sample
  points rather than from a full gradient image per level.
* **Sampling.** The level's points are drawn at random, seeded by the
  config's seed, the stage and the level (:func:`level_method`); where a
  level draws few of its voxels, from a virtual grid twice as coarse.
* **Rounding.** Each level's answer is rounded to a fine fixed grid
  (:func:`quantise`) so that multi-threaded runs agree.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import SimpleITK as sitk

from coregister.config import Metric, Optimizer, Stage, TransformModel
from coregister.engines.sitk.bspline import injective_bound
from coregister.engines.sitk.pyramid import LevelInputs
from coregister.errors import ConfigError

__all__ = ["level_method", "level_spacing", "new_transform", "quantise", "set_center", "set_metric"]

# regular-step descent shrinks its step by this factor when the gradient turns back (Stage.extra "relaxation")
_RELAXATION = 0.6
# where a level draws at most 1/factor^d of its candidate voxels, ITK draws them from a virtual grid this much coarser
_VIRTUAL_FACTOR = 2
# first step of the levels after the first, in voxels of the level
_LATER_STEP = 0.25
# first step of the first level of the stages after the first, in voxels of the level
_STAGE_STEP = 0.5


def new_transform(model: TransformModel, fixed: sitk.Image, stage: Stage) -> sitk.Transform:
    """An identity SimpleITK transform of ``model`` on ``fixed`` (a B-spline's mesh from ``stage.bspline_mesh_mm``)."""
    ndim = fixed.GetDimension()
    if model is TransformModel.TRANSLATION:
        return sitk.TranslationTransform(ndim)
    if model is TransformModel.RIGID:
        return sitk.Euler2DTransform() if ndim == 2 else sitk.Euler3DTransform()
    if model is TransformModel.SIMILARITY:
        return sitk.Similarity2DTransform() if ndim == 2 else sitk.Similarity3DTransform()
    if model is TransformModel.AFFINE:
        return sitk.AffineTransform(ndim)
    if model is TransformModel.BSPLINE:
        extent = [n * s for n, s in zip(fixed.GetSize(), fixed.GetSpacing(), strict=True)]
        mesh = [max(1, int(round(e / stage.bspline_mesh_mm))) for e in extent]
        return sitk.BSplineTransformInitializer(fixed, mesh, 3)
    raise ConfigError(
        f"transform model {model.value!r} is not estimated by the SimpleITK engine; "
        "homographies come from the feature engine (preset='homography')"
    )


def set_center(tx: sitk.Transform, center: Sequence[float]) -> None:
    """Put the centre of rotation and scale of ``tx`` at ``center`` (world units); a translation or B-spline has none."""
    if hasattr(tx, "SetCenter"):
        tx.SetCenter(tuple(float(c) for c in center))


def _itk_seed(seed: int, stage: int, level: int) -> int:
    # SimpleITK reads seed 0 as "use the wall clock": never pass it
    return (int(seed) * 1009 + stage * 97 + level) % 2_147_483_629 + 1


def set_metric(method: sitk.ImageRegistrationMethod, stage: Stage) -> None:
    """Give ``method`` the stage's metric."""
    metric = stage.metric
    if metric is Metric.MATTES:
        method.SetMetricAsMattesMutualInformation(numberOfHistogramBins=stage.histogram_bins)
    elif metric is Metric.MI:
        method.SetMetricAsJointHistogramMutualInformation(numberOfHistogramBins=stage.histogram_bins)
    elif metric is Metric.NCC:
        method.SetMetricAsCorrelation()
    elif metric is Metric.MSE:
        method.SetMetricAsMeanSquares()
    else:
        raise ConfigError(f"metric {metric.value!r} is not a SimpleITK metric; metric='ecc' runs the ECC engine")


def level_spacing(image: sitk.Image) -> float:
    """The mean voxel size of a level (world units), the unit of the optimiser's steps."""
    return float(np.mean(image.GetSpacing()))


def _set_optimizer(
    method: sitk.ImageRegistrationMethod, stage: Stage, iterations: int, spacing_mm: float, step_voxels: float,
    final: bool, bound: float | None = None,
) -> None:
    opt = stage.optimizer
    if opt is Optimizer.REGULAR_STEP:
        # steps in millimetres (physical-shift scales), ``step_voxels`` voxels of the level at first
        step = (stage.learning_rate if stage.learning_rate is not None else 1.0) * step_voxels * spacing_mm
        min_step = stage.min_step if final else max(stage.min_step, 0.01 * spacing_mm)
        method.SetOptimizerAsRegularStepGradientDescent(
            learningRate=float(step),
            minStep=float(min_step),
            numberOfIterations=int(iterations),
            relaxationFactor=float(dict(stage.extra).get("relaxation", _RELAXATION)),
            gradientMagnitudeTolerance=1e-12,
        )
        method.SetOptimizerScalesFromPhysicalShift()
    elif opt is Optimizer.GRADIENT_DESCENT:
        method.SetOptimizerAsGradientDescent(
            learningRate=float(stage.learning_rate if stage.learning_rate is not None else 1.0),
            numberOfIterations=int(iterations),
            convergenceMinimumValue=float(stage.convergence_min_value),
            convergenceWindowSize=int(stage.convergence_window),
            estimateLearningRate=method.EachIteration,
            maximumStepSizeInPhysicalUnits=float(spacing_mm),
        )
        method.SetOptimizerScalesFromPhysicalShift()
    elif opt is Optimizer.LBFGSB:
        bounds = {} if bound is None else {"lowerBound": -float(bound), "upperBound": float(bound)}
        method.SetOptimizerAsLBFGSB(
            gradientConvergenceTolerance=1e-5,
            numberOfIterations=int(iterations),
            maximumNumberOfCorrections=5,
            maximumNumberOfFunctionEvaluations=max(4 * int(iterations), 100),
            costFunctionConvergenceFactor=1e7,
            **bounds,
        )
    else:
        raise ConfigError(
            f"optimizer {opt.value!r} is not a SimpleITK optimizer here; choose regular-step, gradient-descent or lbfgsb"
        )


def level_method(
    tx: sitk.Transform,
    stage: Stage,
    inputs: LevelInputs,
    *,
    stage_index: int,
    level: int,
    iterations: int,
    final: bool,
    seed: int,
    threads: int | None,
    moving_initial: sitk.Transform | None,
    coarse_virtual: bool,
) -> sitk.ImageRegistrationMethod:
    """The ITK registration of one level of one stage, set up to optimise ``tx`` in place (not yet run).

    ``inputs`` holds the level's images, masks and point counts,
    ``moving_initial`` the transforms the earlier stages found (None for the
    first stage without an initial transform), ``final`` whether this is the
    stage's finest level; ``coarse_virtual`` allows drawing the points from a
    grid twice as coarse where the level draws few of its voxels (3D only).
    """
    fixed, n_region, wanted = inputs.fixed, inputs.n_region, inputs.wanted
    method = sitk.ImageRegistrationMethod()
    if threads is not None:
        method.SetNumberOfThreads(threads)
    set_metric(method, stage)
    method.SetInterpolator(sitk.sitkLinear)
    method.MetricUseFixedImageGradientFilterOff()
    method.MetricUseMovingImageGradientFilterOff()
    if inputs.sample_mask is not None:
        method.SetMetricFixedMask(inputs.sample_mask)
    if inputs.moving_mask is not None:
        method.SetMetricMovingMask(inputs.moving_mask)
    # Random points, never the voxel centres themselves: ITK jitters each point within its voxel, which
    # keeps linear interpolation's grid artefacts out of the metric (on voxel centres, a dense affine
    # run on a 2 mm head settled 0.2 mm from the truth). ITK draws percentage x (all voxels) points and
    # keeps those inside the mask.
    percentage = min(1.0, wanted / n_region)
    coarse = _VIRTUAL_FACTOR ** fixed.GetDimension()
    if coarse_virtual and fixed.GetDimension() == 3 and percentage * coarse <= 1.0:
        # ITK copies its virtual domain (by default the fixed image) at every level before drawing points:
        # on a grid twice as coarse the copy costs an eighth (40 ms less per 1 mm level of a head), and ITK
        # draws the same number of candidates from it. Each point is jittered by a third of a virtual voxel
        # (2/3 of a fixed one): the density of points varies by about 20 % with a period of two fixed
        # voxels, but not with the fixed grid's own period, the one that biases linear interpolation. The
        # optimiser's scales, taken from the virtual domain's corners, move by under 1 %. Not when a
        # B-spline stage follows: from the linear answers found this way its L-BFGS-B took about 150
        # evaluations at its first level instead of 90-110 (MNI 1 mm, three seeds), 50 % more time.
        _set_coarse_virtual_domain(method, fixed, _VIRTUAL_FACTOR)
        percentage *= coarse
    method.SetMetricSamplingStrategy(method.RANDOM)
    method.SetMetricSamplingPercentage(percentage, _itk_seed(seed, stage_index, level))

    spacing_mm = level_spacing(fixed)
    # The very first level may move a voxel per step. Later levels start from an answer good to a fraction
    # of their voxel. A later stage's first level starts from an aligned pair but may have to travel far
    # along its new parameters (a 20 % scale for an affine after a rigid stage).
    if level == 0:
        step_voxels = 1.0 if stage_index == 0 else _STAGE_STEP
    else:
        step_voxels = _LATER_STEP
    bound = None
    if stage.injective and isinstance(tx, sitk.BSplineTransform):
        if stage.optimizer is not Optimizer.LBFGSB:
            raise ConfigError(f"an injective B-spline stage bounds its coefficients, which only lbfgsb can; not "
                              f"{stage.optimizer.value!r} (set optimizer='lbfgsb' or injective=False)")
        bound = injective_bound(tx)
    _set_optimizer(method, stage, iterations, spacing_mm, step_voxels, final, bound)
    if moving_initial is not None:
        method.SetMovingInitialTransform(moving_initial)
    method.SetInitialTransform(tx, inPlace=True)
    return method


def _coarse_grid(image: sitk.Image, factor: int) -> tuple[list[int], tuple[float, ...], list[float]]:
    """Size, origin and spacing of a grid ``factor`` times coarser than ``image`` that covers all of it.

    Coarse voxel ``i`` spans fine voxels ``factor*i ... factor*i + factor - 1``
    (as ``BinShrinkImageFilter`` bins them); a last, partial bin is kept.
    """
    size = [max(1, -(-n // factor)) for n in image.GetSize()]
    spacing = [s * factor for s in image.GetSpacing()]
    origin = image.TransformContinuousIndexToPhysicalPoint([0.5 * (factor - 1)] * image.GetDimension())
    return size, origin, spacing


def _set_coarse_virtual_domain(method: sitk.ImageRegistrationMethod, image: sitk.Image, factor: int) -> None:
    """Make ITK draw its points from a grid ``factor`` times coarser than ``image``, over the same box."""
    size, origin, spacing = _coarse_grid(image, factor)
    method.SetVirtualDomain(size, origin, spacing, image.GetDirection())


# Grid each level's answer is rounded to: 1e-7 in world units (translations, B-spline coefficients) and 1e-9 for
# dimensionless parameters (angles in radians, matrix entries, scales, versor components), i.e. about 1e-7 mm
# of displacement at 100 mm from the centre.
_WORLD_QUANTUM = 1e-7
_UNIT_QUANTUM = 1e-9


def quantise(tx: sitk.Transform) -> None:
    """Round a level's parameters to a fine fixed grid (in place), so that runs agree to about 1e-7.

    ITK's Mattes metric merges its threads' derivative buffers in the order the
    threads finish, so multi-threaded runs differ in the last bits; the
    optimiser amplifies such differences from level to level (measured: 1e-12 in
    the metric at the second level, 1e-3 mm in the answer). Rounding every
    level's answer to a grid far coarser than that noise, and far finer than any
    accuracy that matters, hands the next level the same start in every run.
    """
    values = np.array(tx.GetParameters(), dtype=float)
    if values.size == 0:
        return
    world = np.ones(values.size, dtype=bool)
    if isinstance(tx, sitk.Euler2DTransform | sitk.Similarity2DTransform):
        world[: values.size - 2] = False  # (scale,) angle, then the translation
    elif isinstance(tx, sitk.Euler3DTransform):
        world[:3] = False
    elif isinstance(tx, sitk.Similarity3DTransform):
        world[:3] = False  # versor
        world[-1] = False  # scale
    elif isinstance(tx, sitk.AffineTransform):
        ndim = tx.GetDimension()
        world[: ndim * ndim] = False
    quantum = np.where(world, _WORLD_QUANTUM, _UNIT_QUANTUM)
    tx.SetParameters(tuple((np.round(values / quantum) * quantum).tolist()))
