"""The displacement-field stage (model ``syn``): a dense, diffeomorphic deformation estimated level by level.

The stage runs after the linear stages, on the fixed grid: the moving image
is resampled once through the transforms they found, and a displacement
field ``u`` on the fixed grid (coarse to fine over the stage's levels)
makes ``fixed(x)`` match ``moving(linear(x + u(x)))``. The stage's answer is
a :class:`~coregister.transforms.DisplacementField` applied first, then the
linear map: ``Composite((linear, field))``, as ANTs composes its
``0GenericAffine.mat`` and ``1Warp.nii.gz``.

Two machineries, both SimpleITK's, picked by the stage's metric:

* ``mse`` (the ``syn`` preset's default): ITK's **diffeomorphic demons**
  (``DiffeomorphicDemonsRegistrationFilter``, Vercauteren et al. 2009) with
  **symmetric** forces (the ESM gradient, the mean of the fixed and the
  warped moving image's gradients). Greedy: each iteration composes an
  update field with the total one, steps limited to half a voxel, through
  the first-order exponential ``id + u``, as ANTs' greedy SyN composes its
  steps (at half a voxel, scaling and squaring moved the mean error by at
  most 0.002 mm on five known warps and took 1.7 times as long per
  iteration; the smoothed total field and the fold guard keep the map
  invertible); the update is smoothed by a Gaussian of
  ``update_sigma_voxels`` (fluid) and the whole field by one of
  ``field_sigma_voxels`` (elastic). The demons force compares intensities,
  so the moving image is first histogram-matched to the fixed one
  (``HistogramMatchingImageFilter``): the monomodal path, and the fast one
  (tens of milliseconds per iteration on a 2 mm head).
* ``ncc`` or ``mattes``/``mi``: ``ImageRegistrationMethod`` optimising a
  ``DisplacementFieldTransform`` with Gaussian smoothing of the update and
  of the total field (``SetSmoothingGaussianOnUpdate``), dense metric on
  every voxel: ITK's ANTS neighbourhood correlation (local normalised
  cross-correlation, radius ``Stage.extra`` ``"radius"``, default 2 voxels)
  or Mattes mutual information, regular gradient descent with the learning
  rate estimated at every iteration (scales from physical shift) so that
  the largest step is a fifth of a voxel (ANTs' SyN gradient step). The
  metrics ANTs' SyN uses, through the same ITK classes; an order of
  magnitude slower per iteration than the demons here.

Neither is SyN's midpoint scheme (both images deformed half way and the two
half fields inverted at every iteration): the symmetry here is that of the
demons forces. The inverse is computed once at the end (SimpleITK's
``InvertDisplacementField``, :meth:`~coregister.transforms.DisplacementField.inverse`)
and states its residual.

Levels are the engine's (:func:`~coregister.engines.sitk.levels.plan_levels`):
bin-averaged, shrink factors per axis from the spacing, the finest level
no finer than ``Stage.finest_spacing_mm``, then, where that stopped above
the image's own voxels, ``Stage.full_resolution_iterations`` on them.
Every voxel takes part (no sampling); the demons run on all threads and
are deterministic (every voxel's update is its own; the global sums ITK
keeps only report the metric, and its early stop on the RMS change is
off), the ITK metrics on
the configured threads (one by default, for the same reason as the linear
stages).
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import SimpleITK as sitk

from coregister import _interrupt as interrupt
from coregister.config import Metric, ProgressCallback, Stage
from coregister.engines.base import LevelHistory
from coregister.engines.sitk.levels import LevelPlan
from coregister.engines.sitk.observer import abortable, stop_now
from coregister.engines.sitk.pyramid import Pyramid
from coregister.engines.sitk.threads import default_threads
from coregister.errors import ConfigError, RegistrationFailed
from coregister.transforms import DisplacementField, LinearTransform, Transform

__all__ = ["FieldStage", "run_field_stage", "scale_to_min_jacobian"]

logger = logging.getLogger(__name__)

#: histogram matching of the moving image to the fixed one before the demons (ITK's demons examples use these)
_HISTOGRAM_LEVELS = 256
_MATCH_POINTS = 15
#: demons: largest update per iteration, in voxels of the level (ITK's default)
_MAX_STEP_VOXELS = 0.5
#: the moving image resampled through a linear map that is not a coregister LinearTransform (a user's start)
_PREWARP_INTERPOLATOR = sitk.sitkBSpline
#: ncc/mattes: largest shift per iteration, in voxels of the level (ANTs' SyN gradient step, ``SyN[0.2, 3, 0]``)
_METRIC_STEP_VOXELS = 0.2
#: ANTS neighbourhood correlation: default radius in voxels (ANTs' SyN default: 4 at 1 mm; 2 on 2 mm levels)
_CC_RADIUS = 2


@dataclasses.dataclass(frozen=True)
class FieldStage:
    """What the displacement-field stage hands back: its field and its trace."""

    field: DisplacementField
    history: tuple[LevelHistory, ...]
    final_metric: float
    warnings: tuple[str, ...] = ()


def _cast_vector(image: sitk.Image) -> sitk.Image:
    return image if image.GetPixelID() == sitk.sitkVectorFloat64 else sitk.Cast(image, sitk.sitkVectorFloat64)


def _zero_field(grid: sitk.Image) -> sitk.Image:
    field = sitk.Image(grid.GetSize(), sitk.sitkVectorFloat64, grid.GetDimension())
    field.CopyInformation(grid)
    return field


def _onto(field: sitk.Image | None, grid: sitk.Image, threads: int) -> sitk.Image:
    """The field (any grid) resampled linearly onto ``grid`` (zero where there is none yet)."""
    if field is None:
        return _zero_field(grid)
    if (field.GetSize() == grid.GetSize() and np.allclose(field.GetOrigin(), grid.GetOrigin())
            and np.allclose(field.GetSpacing(), grid.GetSpacing()) and np.allclose(field.GetDirection(), grid.GetDirection())):
        return field
    resampler = sitk.ResampleImageFilter()
    resampler.SetReferenceImage(grid)
    resampler.SetInterpolator(sitk.sitkLinear)
    resampler.SetOutputPixelType(sitk.sitkVectorFloat64)
    resampler.SetNumberOfThreads(threads)
    # outside the old field's grid (a partial last bin), its nearest value: the transform extrapolates so too
    resampler.SetUseNearestNeighborExtrapolator(True)
    return resampler.Execute(field)


def prewarped(
    moving: sitk.Image, grid: sitk.Image, linear: sitk.Transform | None, threads: int
) -> sitk.Image:
    """The moving image resampled onto ``grid`` through the linear stages' transform (linear, 0 outside)."""
    resampler = sitk.ResampleImageFilter()
    resampler.SetReferenceImage(grid)
    resampler.SetInterpolator(_PREWARP_INTERPOLATOR)
    resampler.SetDefaultPixelValue(0.0)
    resampler.SetOutputPixelType(sitk.sitkFloat32)
    resampler.SetNumberOfThreads(threads)
    if linear is not None:
        resampler.SetTransform(linear)
    return resampler.Execute(moving)


def histogram_matched(moving: sitk.Image, fixed: sitk.Image, threads: int) -> sitk.Image:
    """``moving``'s intensities mapped onto ``fixed``'s histogram (quantiles above each image's mean), as the demons need."""
    flt = sitk.HistogramMatchingImageFilter()
    flt.SetNumberOfHistogramLevels(_HISTOGRAM_LEVELS)
    flt.SetNumberOfMatchPoints(_MATCH_POINTS)
    flt.ThresholdAtMeanIntensityOn()
    flt.SetNumberOfThreads(threads)
    return flt.Execute(moving, fixed)


def _same_grid(a: sitk.Image, b: sitk.Image) -> bool:
    return (a.GetSize() == b.GetSize() and np.allclose(a.GetOrigin(), b.GetOrigin(), atol=1e-6)
            and np.allclose(a.GetSpacing(), b.GetSpacing(), atol=1e-9)
            and np.allclose(a.GetDirection(), b.GetDirection(), atol=1e-9))


def _field_of(transform: sitk.Transform, grid: sitk.Image) -> sitk.Image:
    """``transform(x) - x`` at the pixel centres of ``grid``."""
    return sitk.TransformToDisplacementField(transform, sitk.sitkVectorFloat64, grid.GetSize(), grid.GetOrigin(),
                                             grid.GetSpacing(), grid.GetDirection())


def _without_linear(total: sitk.Image, linear: LinearTransform) -> sitk.Image:
    """The field ``u`` with ``linear(x + u(x)) = x + w(x)`` at every grid point, from the total field ``w``."""
    values = sitk.GetArrayFromImage(total)
    shape = values.shape
    points = np.stack(np.meshgrid(*[np.arange(n, dtype=float) for n in shape[:-1]], indexing="ij")[::-1], axis=-1)
    direction = np.array(total.GetDirection()).reshape(total.GetDimension(), -1)
    world = points.reshape(-1, total.GetDimension()) @ (direction * np.array(total.GetSpacing())).T + np.array(total.GetOrigin())
    inverse = linear.inverse()
    inner = inverse.transform_points(world + values.reshape(-1, total.GetDimension())) - world
    out = sitk.GetImageFromArray(inner.reshape(shape), isVector=True)
    out.CopyInformation(total)
    return out


def run_field_stage(
    fixed: Pyramid,
    moving: sitk.Image,
    linear: sitk.Transform | None,
    stage: Stage,
    levels: Sequence[LevelPlan],
    iterations: Sequence[int],
    *,
    name: str,
    threads: int,
    metric_threads: int,
    fixed_mask: sitk.Image | None = None,
    progress: ProgressCallback | None = None,
    linear_value: Transform | None = None,
) -> FieldStage:
    """Estimate the stage's displacement field on the fixed grid, coarse to fine.

    Parameters
    ----------
    fixed : Pyramid
        The fixed image's pyramid (its levels are the stage's levels).
    moving : sitk.Image
        The moving image, float32, on its own grid.
    linear : sitk.Transform, optional
        The transform the earlier stages found (fixed -> moving), applied
        after the field.
    stage : Stage
        Model ``syn``: metric, smoothing sigmas, fold guard.
    levels, iterations : sequences
        The stage's levels (coarse to fine) and each one's iterations.
    name : str
        The stage's name in the history and the progress callback.
    threads : int
        Threads of the demons and the resampling (their answer does not
        depend on it).
    metric_threads : int
        Threads of the ITK metrics (``ncc``/``mattes``), whose sums do.
    fixed_mask : sitk.Image, optional
        Where the ITK metrics are evaluated (the demons use every voxel).
    progress : callable, optional
        ``progress(stage, level, iteration, metric)``.
    linear_value : Transform, optional
        ``linear`` as a coregister value. When it is linear, the demons
        start from its displacement (``linear(x) - x``) on the moving image
        as it lies, rather than on the moving image resampled through it: a
        resampling through a scale or rotation blurs the image by an amount
        that varies from voxel to voxel, and the demons chase that pattern
        (known smooth warp of a 2 mm head: 0.45 mm error without a linear
        stage, 0.47-0.51 mm with one when resampled, even by cubic
        B-splines). The linear map is taken back out of the answer exactly,
        grid point by grid point.

    Returns
    -------
    FieldStage
        ``field`` maps fixed-space points to the linear stages' input space.
    """
    metric = Metric.parse(stage.metric)
    warnings: list[str] = []
    grid = fixed.level(levels[-1])
    start: LinearTransform | None = None
    if metric is Metric.MSE:
        if linear is None or isinstance(linear_value, LinearTransform):
            start = linear_value if isinstance(linear_value, LinearTransform) else None
            # on the fixed grid as it lies: no resampling at all when the two grids agree
            on_grid = moving if _same_grid(moving, fixed.image) else prewarped(moving, fixed.image, None, threads)
        else:
            on_grid = prewarped(moving, fixed.image, linear, threads)
        matched = histogram_matched(on_grid, fixed.image, threads)
        moving_pyr = Pyramid(matched, None, threads)
        if fixed_mask is not None:
            warnings.append(f"{name}: the demons use every voxel; the fixed mask applies to the linear stages only")
    elif metric in (Metric.NCC, Metric.MATTES, Metric.MI):
        moving_pyr = None
    else:
        raise ConfigError(f"a displacement-field stage runs on mse (demons), ncc or mattes; not {metric.value!r}")
    history: list[LevelHistory] = []
    field: sitk.Image | None = None
    final_metric = float("nan")
    for level, (plan, count) in enumerate(zip(levels, iterations, strict=True)):
        fixed_level = fixed.level(plan)
        started = time.perf_counter()
        values: list[float] = []
        initial = _onto(field, fixed_level, threads)
        if field is None and start is not None:
            initial = _field_of(start.to_sitk(), fixed_level)
        if moving_pyr is not None:
            field, stop = _demons_level(fixed_level, moving_pyr.level(plan), initial, stage, count, threads, values,
                                        lambda i, v, lv=level: progress(name, lv, i, v) if progress else None)
        else:
            field, stop = _metric_level(fixed_level, moving, initial, linear, stage, metric, count, metric_threads,
                                        fixed.level_mask(plan.factors) if fixed_mask is not None else None, values,
                                        lambda i, v, lv=level: progress(name, lv, i, v) if progress else None)
        final_metric = values[-1] if values else float("nan")
        logger.debug("%s level %d %s: %d iterations in %.3f s, metric %.6g", name, level, plan.factors, len(values),
                     time.perf_counter() - started, final_metric)
        history.append(LevelHistory(stage=name, level=level, shrink_factor=float(plan.nominal_factor),
                                    smoothing_sigma_mm=float(plan.sigma_mm), metric_values=tuple(values),
                                    stop_reason=stop))
    assert field is not None
    field = _onto(field, grid, threads)
    if start is not None:
        field = _without_linear(field, start)
    result = DisplacementField.from_sitk_image(field)
    if stage.min_jacobian is not None:
        result, scale = scale_to_min_jacobian(result, float(stage.min_jacobian))
        if scale < 1.0:
            warnings.append(f"{name}: the field's Jacobian determinant fell below {stage.min_jacobian:g}; the fold guard "
                            f"scaled it by {scale:.3g}")
    return FieldStage(result, tuple(history), final_metric, tuple(warnings))


def _demons_level(
    fixed: sitk.Image, moving: sitk.Image, initial: sitk.Image, stage: Stage, iterations: int, threads: int,
    values: list[float], report: object,
) -> tuple[sitk.Image, str]:
    flt = sitk.DiffeomorphicDemonsRegistrationFilter()
    flt.SetNumberOfThreads(threads)
    flt.SetNumberOfIterations(int(iterations))
    flt.SetUseGradientType(sitk.DiffeomorphicDemonsRegistrationFilter.Symmetric)
    flt.SetUseFirstOrderExp(True)  # steps of half a voxel: exp(u) ~ id + u (the module's docstring)
    flt.SetMaximumUpdateStepLength(_MAX_STEP_VOXELS)
    flt.SetMaximumRMSError(0.0)  # a fixed number of iterations: no early stop on a thread-summed figure
    flt.SetSmoothDisplacementField(stage.field_sigma_voxels > 0)
    if stage.field_sigma_voxels > 0:
        flt.SetStandardDeviations(float(stage.field_sigma_voxels))
    flt.SetSmoothUpdateField(stage.update_sigma_voxels > 0)
    if stage.update_sigma_voxels > 0:
        flt.SetUpdateFieldStandardDeviations(float(stage.update_sigma_voxels))

    def on_iteration() -> None:
        value = float(flt.GetMetric())
        values.append(value)
        report(len(values) - 1, value)  # type: ignore[operator]

    try:
        # the filter's own thread count does not reach the smoothing and warping filters it runs inside: they take
        # the process default, which the engine holds at the metric's count (one by default) for the linear stages
        with default_threads(threads):
            out = _observed(flt, lambda: flt.Execute(fixed, moving, initial), on_iteration, flt.StopRegistration)
    except RuntimeError as exc:
        raise RegistrationFailed(f"SimpleITK's demons failed: {str(exc).strip().splitlines()[-1]}") from exc
    return _cast_vector(out), f"{flt.GetElapsedIterations()} demons iterations (fixed schedule)"


def _metric_level(
    fixed: sitk.Image, moving: sitk.Image, initial: sitk.Image, linear: sitk.Transform | None, stage: Stage,
    metric: Metric, iterations: int, threads: int, mask: sitk.Image | None, values: list[float], report: object,
) -> tuple[sitk.Image, str]:
    tx = sitk.DisplacementFieldTransform(sitk.Image(initial))
    spacing = float(np.mean(fixed.GetSpacing()))
    # ITK's variances are in voxels squared (its Gaussian operator works on the field's grid)
    tx.SetSmoothingGaussianOnUpdate(varianceForUpdateField=float(stage.update_sigma_voxels) ** 2,
                                    varianceForTotalField=float(stage.field_sigma_voxels) ** 2)
    method = sitk.ImageRegistrationMethod()
    method.SetNumberOfThreads(threads)
    if metric is Metric.NCC:
        method.SetMetricAsANTSNeighborhoodCorrelation(int(dict(stage.extra).get("radius", _CC_RADIUS)))
    elif metric is Metric.MI:
        method.SetMetricAsJointHistogramMutualInformation(numberOfHistogramBins=stage.histogram_bins)
    else:
        method.SetMetricAsMattesMutualInformation(numberOfHistogramBins=stage.histogram_bins)
    method.SetMetricSamplingStrategy(method.NONE)  # a dense field needs every voxel
    method.SetInterpolator(sitk.sitkLinear)
    if mask is not None:
        method.SetMetricFixedMask(mask)
    method.SetOptimizerAsGradientDescent(
        learningRate=1.0, numberOfIterations=int(iterations), convergenceMinimumValue=1e-7, convergenceWindowSize=10,
        estimateLearningRate=method.EachIteration, maximumStepSizeInPhysicalUnits=_METRIC_STEP_VOXELS * spacing,
    )
    # the learning-rate estimate scales the step by the largest shift it moves a point: without a scales estimator
    # the step is the raw metric gradient (Mattes: about 1e-5 mm per iteration on a 2 mm head; the field stood still)
    method.SetOptimizerScalesFromPhysicalShift()
    if linear is not None:
        method.SetMovingInitialTransform(linear)
    method.SetInitialTransform(tx, inPlace=True)

    def on_iteration() -> None:
        value = float(method.GetMetricValue())
        values.append(value)
        report(len(values) - 1, value)  # type: ignore[operator]

    try:
        _observed(method, lambda: method.Execute(fixed, moving), on_iteration, method.StopRegistration)
    except RuntimeError as exc:
        raise RegistrationFailed(
            f"SimpleITK's displacement-field registration failed: {str(exc).strip().splitlines()[-1]}"
        ) from exc
    return _cast_vector(tx.GetDisplacementField()), method.GetOptimizerStopConditionDescription()


def _observed(process: Any, execute: Callable[[], Any], step: Callable[[], None], stop: Callable[[], object]) -> Any:
    """``execute()`` with ``step`` called on each iteration event, as the engine's optimiser runs (engine.py).

    Nothing may escape into ITK (SimpleITK would print a traceback and turn
    any exception, a progress callback's error or a Ctrl-C, into a
    RuntimeError): an exception is kept, the process stopped at once
    (:func:`~coregister.engines.sitk.observer.stop_now`) and the exception
    raised again once ``execute`` has returned; so is a signal the command
    line noted meanwhile (:mod:`coregister._interrupt`).
    """
    raised: list[BaseException] = []

    def on_iteration() -> None:
        try:
            if raised:
                return
            if not interrupt.pending():
                step()
                return
        except BaseException as exc:  # noqa: B036 - a KeyboardInterrupt or Interrupted above all
            raised.append(exc)
        stop_now(stop)

    process.AddCommand(sitk.sitkIterationEvent, on_iteration)
    try:
        try:
            with interrupt.deferred(), abortable():
                out = execute()
        finally:
            process.RemoveAllCommands()
    except RuntimeError:
        if raised:
            raise raised[0] from None
        interrupt.raise_pending()
        raise
    if raised:
        raise raised[0]
    interrupt.raise_pending()
    return out


def min_jacobian(field: DisplacementField) -> float:
    """The smallest Jacobian determinant of ``x -> x + u(x)`` at the field's own grid points."""
    from coregister.measures import jacobian_determinant

    return float(jacobian_determinant(field, field.field).array.min())


def scale_to_min_jacobian(field: DisplacementField, floor: float, *, steps: int = 12) -> tuple[DisplacementField, float]:
    """The fold guard: ``field`` scaled by the largest ``s <= 1`` (bisection) whose Jacobian stays at or above ``floor``.

    ``s = 0`` is the identity (determinant 1), so a scale is always found
    for ``floor < 1``; the field is returned as it is when it already
    satisfies the floor.
    """
    if min_jacobian(field) >= floor:
        return field, 1.0
    low, high = 0.0, 1.0
    for _ in range(steps):
        middle = 0.5 * (low + high)
        if min_jacobian(_scaled(field, middle)) >= floor:
            low = middle
        else:
            high = middle
    logger.info("fold guard: displacement field scaled by %.4g to keep its Jacobian determinant above %g", low, floor)
    return _scaled(field, low), low


def _scaled(field: DisplacementField, scale: float) -> DisplacementField:
    return DisplacementField(field.field.replace(array=field.vectors * scale))
