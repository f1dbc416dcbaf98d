"""SimpleITK intensity engine: multi-resolution registration on ``SimpleITK.ImageRegistrationMethod``.

What it does, stage by stage (a :class:`~coregister.config.Stage` is one
transform model optimised over a resolution pyramid):

* **Pyramid.** Both images are reduced by bin averaging
  (``BinShrinkImageFilter``: each coarse voxel is the mean of the fine ones it
  covers, an anti-aliasing box filter) from the previous level, never from
  full resolution again, then Gaussian-smoothed on the reduced grid (by
  default half a voxel of that level, ``Stage.smoothing_voxels``: on noisy,
  bias-corrupted multimodal heads this halved the error of the 1 mm level).
  ITK's own pyramid smooths the full-resolution moving
  image at every level and never shrinks it; on a 1 mm head that alone
  costs more than a whole registration here. Each level then runs as one
  ``ImageRegistrationMethod`` on the reduced pair (shrink 1, no smoothing),
  the transform carried in place from level to level. While ITK optimises
  one level on one thread (the default), a second thread builds the next
  levels' images and masks.
* **Levels** are chosen from the image size and spacing when the stage
  leaves ``shrink_factors`` as None (:func:`plan_levels`): factors 1, 2, 4,
  ... while the smallest axis keeps enough voxels, per axis so that
  anisotropic voxels become closer to isotropic.
* **Sampling.** Each level uses ``max_samples`` random points
  (``coarse_max_samples`` on the levels before the stage's finest, when set;
  seeded by the config's seed; all voxels when the level has fewer), drawn from the fixed
  mask and, when ``edge_sampling_fraction`` is set, only from that fraction
  of fixed voxels with the strongest gradient: flat regions add nothing to
  the metric's gradient, so the same number of points pins the optimum
  down better.
* **Metric and optimiser.** Mattes mutual information (default),
  joint-histogram MI, normalised correlation or mean squares; regular-step
  or plain gradient descent with scales from physical shift (steps in
  millimetres; the step shrinks by ``Stage.extra`` ``"relaxation"``, default
  0.6, when the gradient turns back) and a convergence window, or L-BFGS-B
  (B-spline). The
  moving image's gradient is taken by central differences at the sample
  points rather than from a full gradient image per level.
* **Stages** chain as ITK chains them: the transforms earlier stages found
  are the moving initial transform of the next stage, which starts at the
  identity about the same centre. The answer is one value of
  :mod:`coregister.transforms`: the composed linear map (``Translation``,
  ``Rigid``, ``Similarity`` or ``Affine``) for linear stages, a
  ``Composite`` (linear part, then B-spline) otherwise.

Every transform maps fixed-space points to moving space (ITK's convention).
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import dataclasses
import logging
import math
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

from coregister.config import (
    Initialisation,
    Metric,
    Optimizer,
    ProgressCallback,
    RegistrationConfig,
    Stage,
    TransformModel,
)
from coregister.engines.base import EngineOutput, LevelHistory
from coregister.errors import ConfigError, GeometryError, RegistrationFailed
from coregister.image import SpatialImage
from coregister.transforms import (
    Affine,
    Composite,
    LinearTransform,
    Rigid,
    Similarity,
    Transform,
    Translation,
    from_sitk,
)

__all__ = ["LevelPlan", "SitkEngine", "plan_levels"]

logger = logging.getLogger(__name__)

# smallest number of voxels (pixels) along any axis at the coarsest automatic level (3D: 12, so that a 3 mm
# head still gets a 12 mm level, where an affine catches a 1.2x scale; with 16 it settled at 0.89)
_MIN_COARSE_VOXELS = {2: 32, 3: 12}
# coarsest automatic shrink factor
_MAX_AUTO_FACTOR = 8
# sampling points below which a level simply uses every voxel of its region
_MIN_SAMPLES = 256
# the edge mask is found on a grid of at most this many voxels
_EDGE_GRID_MAX_VOXELS = 1_500_000
# regular-step descent shrinks its step by this factor when the gradient turns back (Stage.extra "relaxation")
_RELAXATION = 0.6
# the rotation search refines this many of its best grid rotations
_ROTATION_CANDIDATES = 3
# where a level draws at most 1/factor^d of its candidate voxels, ITK draws them from a virtual grid this much coarser
_VIRTUAL_FACTOR = 2
# first step of the levels after the first, in voxels of the level
_LATER_STEP = 0.25
# first step of the first level of the stages after the first, in voxels of the level
_STAGE_STEP = 0.5


@dataclasses.dataclass(frozen=True)
class LevelPlan:
    """One pyramid level: per-axis shrink factors (ITK order ``x, y[, z]``) and extra smoothing."""

    factors: tuple[int, ...]
    sigma_mm: float

    @property
    def nominal_factor(self) -> int:
        """The largest per-axis factor (what the history reports)."""
        return max(self.factors)


def _axis_factors(nominal: int, size: Sequence[int], spacing: Sequence[float]) -> tuple[int, ...]:
    """Per-axis factors for a nominal factor: coarse axes shrink less, no axis below 4 voxels."""
    finest = min(spacing)
    out = []
    for n, s in zip(size, spacing, strict=True):
        f = max(1, int(round(nominal * finest / s)))
        f = min(f, max(1, n // 4))
        out.append(f)
    return tuple(out)


def plan_levels(
    size: Sequence[int],
    spacing: Sequence[float],
    *,
    shrink_factors: Sequence[int] | None = None,
    smoothing_sigmas_mm: Sequence[float] | None = None,
    finest_factor: int = 1,
    coarsest_factor: int | None = None,
    smoothing_voxels: float = 0.0,
) -> tuple[LevelPlan, ...]:
    """The pyramid levels of a stage, coarse to fine.

    Parameters
    ----------
    size : sequence of int
        Fixed image size in ITK order ``(x, y[, z])``.
    spacing : sequence of float
        Fixed image spacing (world units per voxel).
    shrink_factors : sequence of int, optional
        Nominal factor per level (applied to the finest axis; coarser axes
        shrink proportionally less). None: powers of two from 1 up to 8
        while the smallest axis keeps at least 12 voxels (3D) or 32 pixels
        (2D).
    smoothing_sigmas_mm : sequence of float, optional
        Gaussian sigma in world units applied after bin averaging. None:
        ``smoothing_voxels`` times each level's (finest) voxel size.
    finest_factor, coarsest_factor : int
        Automatic levels only: keep the factors within these bounds (the
        coarsest automatic level is kept whatever the bounds, so a small image
        still gets one level).
    smoothing_voxels : float
        Sigma of the automatic smoothing, in voxels of each level (0: bin
        averaging alone).

    Returns
    -------
    tuple of LevelPlan

    Examples
    --------
    >>> [p.factors for p in plan_levels((182, 218, 182), (1.0, 1.0, 1.0))]
    [(8, 8, 8), (4, 4, 4), (2, 2, 2), (1, 1, 1)]
    >>> [p.factors for p in plan_levels((256, 256, 33), (1.0, 1.0, 5.0))]
    [(8, 8, 2), (4, 4, 1), (2, 2, 1), (1, 1, 1)]
    >>> [p.factors for p in plan_levels((221, 257), (1.0, 1.0))]
    [(4, 4), (2, 2), (1, 1)]
    >>> [p.factors for p in plan_levels((182, 218, 182), (1.0, 1.0, 1.0), finest_factor=4)]
    [(8, 8, 8), (4, 4, 4)]
    """
    size = tuple(int(n) for n in size)
    spacing = tuple(float(s) for s in spacing)
    ndim = len(size)
    if shrink_factors is None:
        finest = min(spacing)
        physical_min = min(n * s for n, s in zip(size, spacing, strict=True))
        top = 1
        while top * 2 <= _MAX_AUTO_FACTOR and physical_min / (top * 2 * finest) >= _MIN_COARSE_VOXELS[ndim]:
            top *= 2
        nominal = [top >> k for k in range(int(math.log2(top)) + 1)]
        kept = [f for f in nominal if f >= finest_factor and (coarsest_factor is None or f <= coarsest_factor)]
        nominal = kept or nominal[:1]
    else:
        nominal = [int(f) for f in shrink_factors]
        if not nominal or min(nominal) < 1:
            raise ConfigError(f"shrink_factors {tuple(shrink_factors)} must be a non-empty sequence of integers >= 1")
    if smoothing_sigmas_mm is None:
        sigmas = [float(smoothing_voxels) * f * min(spacing) for f in nominal]
    else:
        sigmas = [float(s) for s in smoothing_sigmas_mm]
        if len(sigmas) != len(nominal) or min(sigmas) < 0:
            raise ConfigError(
                f"smoothing_sigmas_mm {tuple(smoothing_sigmas_mm)} must give one non-negative sigma per level "
                f"({len(nominal)} levels from shrink factors {tuple(nominal)})"
            )
    return tuple(
        LevelPlan(_axis_factors(f, size, spacing), s) for f, s in zip(nominal, sigmas, strict=True)
    )


class _Pyramid:
    """Bin-averaged (and optionally smoothed) versions of one image and its mask, built once and shared by stages.

    Safe to use from two threads (the engine prepares later levels on a
    second thread while ITK optimises the current one): each item is built
    once, by the first thread that asks for it, and the other waits for it.
    Every item is built the same way whichever thread builds it, and in
    whatever order (a shrunk level always comes from the level with half its
    even factors, odd ones from 1), so the result does not depend on the
    timing. The two threads may hand the same input image to ITK filters at
    once (ITK then records the same requested region twice; the pixels are
    only read).
    """

    def __init__(self, image: sitk.Image, mask: sitk.Image | None, threads: int | None) -> None:
        self.image = image
        self.mask = mask
        self.threads = threads
        self._lock = threading.Lock()
        self._items: dict[tuple[Any, ...], concurrent.futures.Future[Any]] = {}
        self._done(("shrunk", (1,) * image.GetDimension()), image)
        self._done(("mask", (1,) * image.GetDimension()), mask)

    def _done(self, key: tuple[Any, ...], value: Any) -> None:
        future: concurrent.futures.Future[Any] = concurrent.futures.Future()
        future.set_result(value)
        self._items[key] = future

    def _once(self, key: tuple[Any, ...], build: Callable[[], Any]) -> Any:
        """The item under ``key``, built by ``build()`` on first request (other threads wait for it)."""
        mine: concurrent.futures.Future[Any] = concurrent.futures.Future()
        try:
            with self._lock:
                future = self._items.setdefault(key, mine)
            if future is mine:
                mine.set_result(build())
        except BaseException as exc:
            # whatever stopped the build (an error, Ctrl-C), a thread waiting for this item gets it too
            if self._items.get(key) is mine and not mine.done():
                mine.set_exception(exc)
            raise
        return future.result()

    def _filter(self, flt: Any) -> Any:
        if self.threads is not None:
            flt.SetNumberOfThreads(self.threads)
        return flt

    def shrunk(self, factors: tuple[int, ...]) -> sitk.Image:
        def build() -> sitk.Image:
            # from the level with half the (even) factors: 8 from 4 from 2 from 1, one fixed chain whatever was
            # asked first (a bin average of bin averages equals the direct one up to float rounding)
            base = tuple(f // 2 if f % 2 == 0 else 1 for f in factors)
            if base == factors:
                base = (1,) * len(factors)
            flt = self._filter(sitk.BinShrinkImageFilter())
            flt.SetShrinkFactors([b // a for a, b in zip(base, factors, strict=True)])
            return flt.Execute(self.shrunk(base))

        return self._once(("shrunk", tuple(factors)), build)

    def level(self, plan: LevelPlan) -> sitk.Image:
        def build() -> sitk.Image:
            image = self.shrunk(plan.factors)
            return _smooth(image, plan.sigma_mm, self.threads) if plan.sigma_mm > 0 else image

        return self._once(("level", plan.factors, plan.sigma_mm), build)

    def edge_mask(self, factors: tuple[int, ...], fraction: float) -> tuple[sitk.Image, float]:
        """Mask of the strongest-gradient ``fraction`` of the (masked) voxels, and the share of the grid it covers.

        Found on a grid of at most ~1.5 million voxels (twice as coarse as
        ``factors`` if needed): the mask is looked up in world space, so it
        serves the finer level as it is, and costs a fraction of the time.
        """
        grid = tuple(factors)
        while math.prod(n // f for n, f in zip(self.image.GetSize(), grid, strict=True)) > _EDGE_GRID_MAX_VOXELS:
            doubled = tuple(min(2 * f, max(1, n // 4)) for n, f in zip(self.image.GetSize(), grid, strict=True))
            if doubled == grid:
                break
            grid = doubled

        def build() -> tuple[sitk.Image, float]:
            mask = _edge_mask(self.shrunk(grid), self.level_mask(grid), fraction, self.threads)
            share = float(np.count_nonzero(sitk.GetArrayViewFromImage(mask))) / math.prod(mask.GetSize())
            return mask, share

        return self._once(("edges", grid, round(fraction, 6)), build)

    def cropped(self, plan: LevelPlan, mask: sitk.Image) -> sitk.Image:
        """The level image cut to the bounding box of ``mask`` (any grid; world geometry kept)."""
        # keyed by the mask's identity: the masks come from this pyramid's caches, which keep them alive
        key = ("crop", plan.factors, plan.sigma_mm, id(mask))
        return self._once(key, lambda: _crop_to_mask(self.level(plan), mask))

    def level_mask(self, factors: tuple[int, ...]) -> sitk.Image | None:
        """The mask on a level's grid: a coarse voxel is in when most of the fine voxels it covers are."""
        if self.mask is None:
            return None
        mask = self.mask

        def build() -> sitk.Image:
            flt = self._filter(sitk.BinShrinkImageFilter())
            flt.SetShrinkFactors(list(factors))
            fraction = flt.Execute(sitk.Cast(mask, sitk.sitkFloat32))
            return sitk.Cast(fraction >= 0.5, sitk.sitkUInt8)

        return self._once(("mask", tuple(factors)), build)


def _smooth(image: sitk.Image, sigma_mm: float, threads: int | None) -> sitk.Image:
    """Gaussian smoothing with standard deviation ``sigma_mm`` in world units.

    Below 0.8 voxel (the default half voxel), a 3-tap kernel ``[w, 1 - 2w, w]``
    with ``2 w = sigma²`` has exactly the Gaussian's variance and is applied
    with SciPy, axis by axis: 4x cheaper than ITK's sampled Gaussian and 6x
    cheaper than its recursive one (which is inaccurate below a voxel) on a
    1 mm head. Each axis pass is cut into slabs across another axis and the
    slabs run on ``threads`` threads (SciPy releases the GIL); every line is
    filtered whole, so the result does not depend on the thread count.
    Larger sigmas use ITK's sampled Gaussian kernel.
    """
    sigma_px = [sigma_mm / s for s in image.GetSpacing()]
    if max(sigma_px) <= 0.8:
        values = sitk.GetArrayFromImage(image)
        workers = max(1, int(threads) if threads is not None else _all_threads())
        with concurrent.futures.ThreadPoolExecutor(workers) as pool:
            for axis, sigma in zip(range(values.ndim), reversed(sigma_px), strict=True):  # array axes are (z, y, x)
                w = 0.5 * sigma * sigma
                if w > 0 and values.shape[axis] > 2:
                    kernel = np.array([w, 1.0 - 2.0 * w, w], dtype=np.float32)
                    values = _correlate_in_slabs(values, kernel, axis, pool, workers)
        out = sitk.GetImageFromArray(values)
        out.CopyInformation(image)
        return out
    flt = sitk.DiscreteGaussianImageFilter()
    if threads is not None:
        flt.SetNumberOfThreads(threads)
    flt.SetVariance(float(sigma_mm) ** 2)
    flt.SetUseImageSpacing(True)
    flt.SetMaximumError(0.01)
    flt.SetMaximumKernelWidth(64)
    return flt.Execute(image)


def _correlate_in_slabs(
    values: np.ndarray, kernel: np.ndarray, axis: int, pool: concurrent.futures.Executor, workers: int
) -> np.ndarray:
    """``ndimage.correlate1d`` along ``axis``, computed in slabs cut across the longest other axis."""
    out = np.empty_like(values)
    across = max((a for a in range(values.ndim) if a != axis), key=lambda a: values.shape[a])
    bounds = np.linspace(0, values.shape[across], min(workers, values.shape[across]) + 1).astype(int)

    def slab(start: int, stop: int) -> None:
        where = [slice(None)] * values.ndim
        where[across] = slice(start, stop)
        ndimage.correlate1d(values[tuple(where)], kernel, axis=axis, mode="nearest", output=out[tuple(where)])

    for done in [pool.submit(slab, int(a), int(b)) for a, b in zip(bounds[:-1], bounds[1:], strict=True)]:
        done.result()
    return out


def _crop_to_mask(image: sitk.Image, mask: sitk.Image) -> sitk.Image:
    """``image`` restricted to the box (plus one voxel) that holds every voxel of ``mask``; the whole image if none."""
    values = sitk.GetArrayViewFromImage(mask)
    inside = np.argwhere(values > 0)
    if inside.size == 0:
        return image
    low, high = inside.min(axis=0)[::-1] - 0.5, inside.max(axis=0)[::-1] + 0.5  # ITK index order, voxel edges
    corners = np.array(np.meshgrid(*zip(low, high, strict=True), indexing="ij")).reshape(len(low), -1).T
    points = [mask.TransformContinuousIndexToPhysicalPoint(c.tolist()) for c in corners]
    index = np.array([image.TransformPhysicalPointToContinuousIndex(p) for p in points])
    size = np.array(image.GetSize())
    start = np.clip(np.floor(index.min(axis=0)).astype(int) - 1, 0, size - 1)
    stop = np.clip(np.ceil(index.max(axis=0)).astype(int) + 2, 1, size)
    if np.all(start == 0) and np.all(stop == size):
        return image
    return sitk.RegionOfInterest(image, (stop - start).tolist(), start.tolist())


def _to_sitk_float(image: SpatialImage) -> sitk.Image:
    """Single-channel float32 SimpleITK image with the same geometry; non-finite values become 0."""
    if image.has_channels:
        raise GeometryError(
            f"the SimpleITK engine registers single-channel images; this one has {image.n_channels} channels "
            "(coregister.register uses the luminance; pass image.channel(i) to choose one)"
        )
    values = np.asarray(image.array)
    if values.dtype != np.float32:
        values = values.astype(np.float32)
    if not np.all(np.isfinite(values)):
        values = np.where(np.isfinite(values), values, np.float32(0))
    out = sitk.GetImageFromArray(np.ascontiguousarray(values))
    out.SetOrigin(image.origin)
    out.SetSpacing(image.spacing)
    out.SetDirection(tuple(float(v) for v in image.direction.ravel()))
    return out


def _to_sitk_mask(mask: np.ndarray | None, reference: sitk.Image, name: str) -> sitk.Image | None:
    if mask is None:
        return None
    mask = np.asarray(mask, dtype=bool)
    expected = reference.GetSize()[::-1]
    if mask.shape != expected:
        raise GeometryError(f"{name} of shape {mask.shape} does not fit the image's shape {expected}; give a mask on its grid")
    if not mask.any():
        raise GeometryError(f"{name} is empty: no voxel is marked usable")
    if mask.all():
        return None
    out = sitk.GetImageFromArray(mask.astype(np.uint8))
    out.CopyInformation(reference)
    return out


def _new_transform(model: TransformModel, fixed: sitk.Image, stage: Stage) -> sitk.Transform:
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


def _set_center(tx: sitk.Transform, center: Sequence[float]) -> None:
    if hasattr(tx, "SetCenter"):
        tx.SetCenter(tuple(float(c) for c in center))


def _itk_seed(seed: int, stage: int, level: int) -> int:
    # SimpleITK reads seed 0 as "use the wall clock": never pass it
    return (int(seed) * 1009 + stage * 97 + level) % 2_147_483_629 + 1


def _edge_mask(image: sitk.Image, region: sitk.Image | None, fraction: float, threads: int | None) -> sitk.Image:
    """Mask of the ``fraction`` of voxels (inside ``region``) with the strongest gradient magnitude."""
    flt = sitk.GradientMagnitudeImageFilter()
    if threads is not None:
        flt.SetNumberOfThreads(threads)
    magnitude = sitk.GetArrayFromImage(flt.Execute(image))
    inside = magnitude if region is None else magnitude[sitk.GetArrayViewFromImage(region) > 0]
    k = max(1, int(round(fraction * inside.size)))
    threshold = np.partition(inside.ravel(), inside.size - k)[inside.size - k]
    # where most voxels are flat (a head's background), the threshold can be 0: keep only voxels with an edge
    keep = magnitude >= threshold if threshold > 0 else magnitude > 0
    if region is not None:
        keep &= sitk.GetArrayViewFromImage(region) > 0
    out = sitk.GetImageFromArray(keep.astype(np.uint8))
    out.CopyInformation(image)
    return out


def _set_metric(method: sitk.ImageRegistrationMethod, stage: Stage) -> None:
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


def _level_spacing(image: sitk.Image) -> float:
    return float(np.mean(image.GetSpacing()))


def _set_optimizer(
    method: sitk.ImageRegistrationMethod, stage: Stage, iterations: int, spacing_mm: float, step_voxels: float,
    final: bool,
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
        method.SetOptimizerAsLBFGSB(
            gradientConvergenceTolerance=1e-5,
            numberOfIterations=int(iterations),
            maximumNumberOfCorrections=5,
            maximumNumberOfFunctionEvaluations=max(4 * int(iterations), 100),
            costFunctionConvergenceFactor=1e7,
        )
    else:
        raise ConfigError(
            f"optimizer {opt.value!r} is not a SimpleITK optimizer here; choose regular-step, gradient-descent or lbfgsb"
        )


def _stage_name(stage: Stage, index: int, stages: Sequence[Stage]) -> str:
    name = stage.model.value
    if sum(1 for s in stages if s.model is stage.model) > 1:
        name = f"{name}{index}"
    return name


@dataclasses.dataclass
class _LevelRun:
    history: LevelHistory
    hit_cap: bool
    final_metric: float


@dataclasses.dataclass(frozen=True)
class _LevelInputs:
    """What one level hands ITK: the images, the masks, and how many points to draw from how many voxels."""

    fixed: sitk.Image
    moving: sitk.Image
    sample_mask: sitk.Image | None
    moving_mask: sitk.Image | None
    n_region: int
    wanted: int


def _level_inputs(
    stage: Stage, plan: LevelPlan, fixed_pyr: _Pyramid, moving_pyr: _Pyramid, *, final: bool
) -> _LevelInputs:
    """The pyramid images and masks of one level of one stage (built on first use, by whichever thread asks first)."""
    fixed = fixed_pyr.level(plan)
    moving_factors = _axis_factors(plan.nominal_factor, moving_pyr.image.GetSize(), moving_pyr.image.GetSpacing())
    moving_plan = LevelPlan(moving_factors, plan.sigma_mm)
    moving = moving_pyr.level(moving_plan)
    region = fixed_pyr.level_mask(plan.factors)
    n_region = (
        int(np.count_nonzero(sitk.GetArrayViewFromImage(region))) if region is not None else math.prod(fixed.GetSize())
    )
    wanted = _samples_wanted(stage, n_region, final=final)
    sample_mask = region
    if wanted < n_region and stage.edge_sampling_fraction is not None:
        fraction = max(stage.edge_sampling_fraction, wanted / n_region)
        if fraction < 1.0:
            sample_mask, volume_fraction = fixed_pyr.edge_mask(plan.factors, fraction)
            n_region = max(1, int(volume_fraction * math.prod(fixed.GetSize())))
    if sample_mask is not None:
        # every point lies in the mask: hand ITK only the fixed image's box around it (its set-up scans the
        # whole fixed image, mask test per voxel: 40 ms less per 1 mm level of a head)
        fixed = fixed_pyr.cropped(plan, sample_mask)
    moving_mask = moving_pyr.level_mask(moving_plan.factors)
    return _LevelInputs(fixed, moving, sample_mask, moving_mask, n_region, wanted)


@contextlib.contextmanager
def _prefetching(
    stages: Sequence[Stage], plans: Sequence[Sequence[LevelPlan]], fixed_pyr: _Pyramid, moving_pyr: _Pyramid,
    *, enabled: bool,
) -> Iterator[None]:
    """Build every level's images and masks on a background thread while the body runs (stopped when it ends).

    The registration itself runs on one thread by default, so a second core
    would idle; the pyramids (bin shrinking, smoothing, edge masks, crops)
    are the same whichever thread builds them. An error met here is met
    again, and reported, by the engine's own request for the same item.
    """
    if not enabled:
        yield
        return
    stop = threading.Event()

    def build_all() -> None:
        for stage, levels in zip(stages, plans, strict=True):
            for level, plan in enumerate(levels):
                if stop.is_set():
                    return
                try:
                    _level_inputs(stage, plan, fixed_pyr, moving_pyr, final=level == len(levels) - 1)
                except Exception as exc:  # the engine asks for the same item and raises it there
                    logger.debug("pyramid prefetch stopped: %s", exc)
                    return

    worker = threading.Thread(target=build_all, name="coregister-pyramid", daemon=True)
    worker.start()
    try:
        yield
    finally:
        stop.set()
        worker.join()


class SitkEngine:
    """The SimpleITK intensity engine behind :func:`coregister.register` (see the module docstring).

    Examples
    --------
    >>> import numpy as np
    >>> from scipy import ndimage
    >>> from coregister import SpatialImage
    >>> from coregister.config import RegistrationConfig, Stage
    >>> y, x = np.mgrid[0:96, 0:96]
    >>> blob = np.exp(-((x - 50.0) ** 2 + (y - 44.0) ** 2) / 200) + 0.5 * np.exp(-((x - 30.0) ** 2 + (y - 60.0) ** 2) / 60)
    >>> fixed = SpatialImage(blob.astype(np.float32), origin=(0, 0), spacing=(1, 1))
    >>> moved = ndimage.shift(blob, (2.0, -3.0), order=3)  # content moves by (-3, +2) px in (x, y)
    >>> config = RegistrationConfig(stages=(Stage(model="translation", metric="mse"),))
    >>> out = SitkEngine().run(fixed, fixed.replace(array=moved.astype(np.float32)), config)
    >>> np.round(out.transform.translation, 1).tolist()  # fixed (x, y) -> moving (x - 3, y + 2)
    [-3.0, 2.0]
    """

    name = "sitk"

    def run(
        self,
        fixed: SpatialImage,
        moving: SpatialImage,
        config: RegistrationConfig,
        *,
        initial: Transform | None = None,
        fixed_mask: np.ndarray | None = None,
        moving_mask: np.ndarray | None = None,
        progress: ProgressCallback | None = None,
    ) -> EngineOutput:
        """Estimate the transform mapping fixed-space points to moving space.

        ``config.threads`` is set on every filter and registration method and,
        while the registration runs, as SimpleITK's process-wide default too:
        ITK's metrics take their thread count from that default, not from the
        registration method (measured: with only the method set to one thread,
        repeated runs still differed at 1e-9).

        ``config.threads=None`` (the default) runs the registration methods on
        one thread and builds the pyramids (bin shrinking, smoothing: the same
        result on any number of threads) on all of SimpleITK's default threads,
        the later levels' on a second thread while the optimiser runs, so that
        a run is bit-identical to the next (and to ``threads=1``). ITK's Mattes metric adds
        its threads' derivative buffers in the order they finish; on a flat
        optimum the optimiser turns those last bits into different paths
        (measured, CT to T2 MR of the MRI-DIR phantom on 2 threads: three runs
        0.15 degrees and 0.5 mm apart, identical on one thread). An explicit
        ``threads=N`` is used everywhere (on a 1 mm head, two threads are about
        25 % faster than the default). The
        process-wide default is restored when the run ends (or fails); while
        it runs, other threads of the process that use SimpleITK see it too.

        Parameters
        ----------
        fixed, moving : SpatialImage
            Single-channel 2D or 3D images of the same dimension.
        config : RegistrationConfig
            Stages (model, metric, optimiser, pyramid, sampling), initialisation,
            seed and threads.
        initial : Transform, optional
            A fixed -> moving transform the first stage starts from (it becomes
            the moving initial transform: stages refine on top of it and the
            answer includes it). Replaces ``config.initialisation``.
        fixed_mask, moving_mask : ndarray of bool, optional
            On each image's grid; True = use.
        progress : callable, optional
            ``progress(stage, level, iteration, metric)`` at every iteration.

        Returns
        -------
        EngineOutput
        """
        pyramid_threads = config.threads if config.threads is not None else _all_threads()
        with _default_threads(config.threads if config.threads is not None else 1):
            return self._run(fixed, moving, config, initial=initial, fixed_mask=fixed_mask, moving_mask=moving_mask,
                             progress=progress, pyramid_threads=pyramid_threads)

    def _run(
        self,
        fixed: SpatialImage,
        moving: SpatialImage,
        config: RegistrationConfig,
        *,
        initial: Transform | None,
        fixed_mask: np.ndarray | None,
        moving_mask: np.ndarray | None,
        progress: ProgressCallback | None,
        pyramid_threads: int,
    ) -> EngineOutput:
        if not config.stages:
            raise ConfigError("the configuration has no stage; give at least one Stage")
        stages = tuple(_normalised(s) for s in config.stages)
        if fixed.ndim != moving.ndim:
            raise GeometryError(f"fixed image is {fixed.ndim}D and moving image is {moving.ndim}D; register images of one dimension")
        threads = config.threads if config.threads is not None else 1  # the registration methods'
        fixed_img = _to_sitk_float(fixed)
        moving_img = _to_sitk_float(moving)
        fixed_pyr = _Pyramid(fixed_img, _to_sitk_mask(fixed_mask, fixed_img, "fixed mask"), pyramid_threads)
        moving_pyr = _Pyramid(moving_img, _to_sitk_mask(moving_mask, moving_img, "moving mask"), pyramid_threads)

        warnings: list[str] = []
        history: list[LevelHistory] = []
        hit_cap = False
        final_metric = float("nan")
        extras: dict[str, Any] = {
            "threads": threads,
            "pyramid_threads": pyramid_threads,
        }

        # ---------------------------------------------------------------- initialisation
        plans = [
            plan_levels(fixed_img.GetSize(), fixed_img.GetSpacing(), shrink_factors=s.shrink_factors,
                        smoothing_sigmas_mm=s.smoothing_sigmas_mm, finest_factor=s.finest_factor,
                        coarsest_factor=s.coarsest_factor, smoothing_voxels=s.smoothing_voxels)
            for s in stages
        ]
        parts: list[sitk.Transform] = []  # applied last first: [initial, stage0, stage1, ...]
        user_initial: Transform | None = initial
        if initial is not None:
            if initial.ndim != fixed.ndim:
                raise GeometryError(f"initial transform is {initial.ndim}D but the images are {fixed.ndim}D")
            try:
                parts.append(initial.to_sitk())
            except Exception as exc:  # a Homography has no ITK form
                raise ConfigError(
                    f"the SimpleITK engine cannot start from a {type(initial).__name__}: {exc}"
                ) from exc
        first_tx = _new_transform(stages[0].model, fixed_img, stages[0])
        center: tuple[float, ...] = tuple(fixed.world_centre.tolist())
        coarse = plans[0][0]
        if stages[0].model is not TransformModel.BSPLINE:
            how = Initialisation.parse(config.initialisation) if initial is None else Initialisation.NONE
            if how is Initialisation.NONE:  # rotations about the image centre
                _set_center(first_tx, center)
            else:
                center = self._initialise(first_tx, how, fixed_img, moving_img, fixed_pyr, moving_pyr, coarse)
        if config.rotation_search and initial is None:
            if stages[0].model in (TransformModel.RIGID, TransformModel.SIMILARITY, TransformModel.AFFINE):
                best = self._rotation_search(first_tx, stages[0], fixed_pyr.level(coarse), moving_pyr.level(coarse),
                                             fixed_pyr.level_mask(coarse.factors), config, threads)
                extras["rotation_search_deg"] = best
            else:
                warnings.append(f"rotation_search ignored: the first stage estimates a {stages[0].model.value}, not a rotation")

        coarse_virtual = not any(s.model is TransformModel.BSPLINE for s in stages)
        # from here the pyramid levels of every stage are built on a second thread, coarse to fine, while ITK
        # optimises (the checks and the initialisation above ran first, on this thread alone)
        with _prefetching(stages, plans, fixed_pyr, moving_pyr, enabled=pyramid_threads > 1):
            # ---------------------------------------------------------------- stages
            for index, (stage, levels) in enumerate(zip(stages, plans, strict=True)):
                tx = first_tx if index == 0 else _new_transform(stage.model, fixed_img, stage)
                if index > 0 and stage.model is not TransformModel.BSPLINE:
                    _set_center(tx, center)
                name = _stage_name(stage, index, stages)
                moving_initial = sitk.CompositeTransform(list(parts)) if parts else None
                iterations = _iterations_per_level(stage, len(levels))
                for level, plan in enumerate(levels):
                    run = self._run_level(
                        tx, stage, name, index, level, plan, levels, iterations[level], fixed_pyr, moving_pyr,
                        moving_initial, config, threads, progress, coarse_virtual=coarse_virtual,
                    )
                    history.append(run.history)
                    hit_cap = hit_cap or run.hit_cap
                    final_metric = run.final_metric
                    _quantise(tx)
                parts.append(tx)

        stage_parts = [from_sitk(t) for t in parts[1 if user_initial is not None else 0:]]
        all_parts = ([user_initial] if user_initial is not None else []) + stage_parts
        transform = _compose(all_parts, center)
        return EngineOutput(
            transform=transform,
            engine=self.name,
            history=tuple(history),
            warnings=tuple(warnings),
            hit_iteration_cap=hit_cap,
            final_metric=final_metric,
            extras=extras,
        )

    # ------------------------------------------------------------------ helpers
    def _initialise(
        self,
        tx: Any,
        how: Initialisation,
        fixed: sitk.Image,
        moving: sitk.Image,
        fixed_pyr: _Pyramid,
        moving_pyr: _Pyramid,
        coarse: LevelPlan,
    ) -> tuple[float, ...]:
        """Set the first stage's centre and translation; return the centre (fixed space)."""
        if how in (Initialisation.GEOMETRY, Initialisation.MOMENTS):
            mode = sitk.CenteredTransformInitializerFilter.GEOMETRY
            f_img, m_img = fixed, moving
            if how is Initialisation.MOMENTS:
                mode = sitk.CenteredTransformInitializerFilter.MOMENTS
                # centres of mass of the bin-averaged images: the same up to a fraction of a voxel, far cheaper
                f_img, m_img = fixed_pyr.shrunk(coarse.factors), moving_pyr.shrunk(
                    _axis_factors(coarse.nominal_factor, moving.GetSize(), moving.GetSpacing())
                )
            probe = sitk.Euler2DTransform() if fixed.GetDimension() == 2 else sitk.Euler3DTransform()
            init = sitk.CenteredTransformInitializer(f_img, m_img, probe, mode)
            center = tuple(init.GetCenter())
            if isinstance(tx, sitk.TranslationTransform):
                tx.SetOffset(init.GetTranslation())
            else:
                tx.SetCenter(center)
                tx.SetTranslation(init.GetTranslation())
            return center
        raise ConfigError(
            f"initialisation {how.value!r} comes from another engine; coregister.register runs it first "
            "and passes its answer as initial_transform"
        )

    def _rotation_search(
        self,
        tx: Any,
        stage: Stage,
        fixed: sitk.Image,
        moving: sitk.Image,
        mask: sitk.Image | None,
        config: RegistrationConfig,
        threads: int | None,
    ) -> list[float]:
        """Try a coarse grid of rotations about the centre at the coarsest level; keep the best (in place).

        Every grid rotation is scored by the metric; the best few (a head's
        outline alone makes turns 180 degrees apart score alike) are then
        refined by a short rigid descent on the same level, and the one that
        ends with the best metric wins.
        """
        ndim = fixed.GetDimension()
        center = tx.GetCenter()
        translation = tx.GetTranslation() if hasattr(tx, "GetTranslation") else (0.0,) * ndim

        def rigid(angles: Sequence[float]) -> Any:
            out = sitk.Euler2DTransform() if ndim == 2 else sitk.Euler3DTransform()
            out.SetCenter(center)
            out.SetParameters((*angles, *translation))
            return out

        def method_for(iterations: int) -> sitk.ImageRegistrationMethod:
            method = sitk.ImageRegistrationMethod()
            _set_metric(method, stage.replace(histogram_bins=min(stage.histogram_bins, 32)))
            method.SetInterpolator(sitk.sitkLinear)
            method.SetMetricSamplingStrategy(method.NONE)
            method.MetricUseFixedImageGradientFilterOff()
            method.MetricUseMovingImageGradientFilterOff()
            if mask is not None:
                method.SetMetricFixedMask(mask)
            if threads is not None:
                method.SetNumberOfThreads(threads)
            spacing = _level_spacing(fixed)
            method.SetOptimizerAsRegularStepGradientDescent(spacing, 0.05 * spacing, iterations, relaxationFactor=0.6)
            method.SetOptimizerScalesFromPhysicalShift()
            return method

        grid: list[tuple[float, ...]]
        if ndim == 2:
            grid = [(float(a),) for a in np.deg2rad(np.arange(-180, 180, 15))]
        else:
            values = [float(v) for v in np.deg2rad([-90.0, -45.0, 0.0, 45.0, 90.0, 180.0])]
            grid = [(a, b, c) for a in values for b in values for c in values]
        scored: list[tuple[float, tuple[float, ...]]] = []
        evaluator = method_for(1)
        for angles in grid:
            evaluator.SetInitialTransform(rigid(angles), inPlace=True)
            try:
                scored.append((evaluator.MetricEvaluate(fixed, moving), tuple(angles)))
            except RuntimeError:  # no overlap at this rotation
                continue
        if not scored:
            logger.warning("rotation search: no rotation of the grid overlaps; kept the initial rotation")
            return [0.0] * (1 if ndim == 2 else 3)
        scored.sort(key=lambda item: item[0])
        best_value, best = math.inf, None  # type: tuple[float, Any]
        for _, angles in scored[:_ROTATION_CANDIDATES]:
            candidate = rigid(angles)
            refine = method_for(50)
            refine.SetInitialTransform(candidate, inPlace=True)
            try:
                refine.Execute(fixed, moving)
            except RuntimeError:
                continue
            value = refine.GetMetricValue()
            if value < best_value:
                best_value, best = value, candidate
        if best is None:
            best = rigid(scored[0][1])
        matrix = np.array(best.GetMatrix()).reshape(ndim, ndim)
        if isinstance(tx, sitk.Euler2DTransform | sitk.Euler3DTransform):
            tx.SetParameters(best.GetParameters())
        else:  # similarity (the rotation at scale 1) or affine
            tx.SetMatrix(tuple(matrix.ravel()))
            tx.SetTranslation(best.GetTranslation())
        angles_deg = np.rad2deg(np.array(best.GetParameters()[: 1 if ndim == 2 else 3]))
        logger.info("rotation search: best start %s deg (metric %.5g)", angles_deg.round(1).tolist(), best_value)
        return [float(v) for v in angles_deg]

    def _run_level(
        self,
        tx: sitk.Transform,
        stage: Stage,
        name: str,
        stage_index: int,
        level: int,
        plan: LevelPlan,
        levels: Sequence[LevelPlan],
        iterations: int,
        fixed_pyr: _Pyramid,
        moving_pyr: _Pyramid,
        moving_initial: sitk.Transform | None,
        config: RegistrationConfig,
        threads: int | None,
        progress: ProgressCallback | None,
        *,
        coarse_virtual: bool,
    ) -> _LevelRun:
        final = level == len(levels) - 1
        inputs = _level_inputs(stage, plan, fixed_pyr, moving_pyr, final=final)
        fixed, moving, n_region, wanted = inputs.fixed, inputs.moving, inputs.n_region, inputs.wanted
        method = sitk.ImageRegistrationMethod()
        if threads is not None:
            method.SetNumberOfThreads(threads)
        _set_metric(method, stage)
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
        method.SetMetricSamplingPercentage(percentage, _itk_seed(config.seed, stage_index, level))

        spacing_mm = _level_spacing(fixed)
        # The very first level may move a voxel per step. Later levels start from an answer good to a fraction
        # of their voxel. A later stage's first level starts from an aligned pair but may have to travel far
        # along its new parameters (a 20 % scale for an affine after a rigid stage).
        if level == 0:
            step_voxels = 1.0 if stage_index == 0 else _STAGE_STEP
        else:
            step_voxels = _LATER_STEP
        _set_optimizer(method, stage, iterations, spacing_mm, step_voxels, final)
        if moving_initial is not None:
            method.SetMovingInitialTransform(moving_initial)
        method.SetInitialTransform(tx, inPlace=True)

        values: list[float] = []

        def on_iteration() -> None:
            value = float(method.GetMetricValue())
            values.append(value)
            if progress is not None:
                progress(name, level, int(method.GetOptimizerIteration()), value)

        method.AddCommand(sitk.sitkIterationEvent, on_iteration)
        started = time.perf_counter()
        try:
            method.Execute(fixed, moving)
        except RuntimeError as exc:
            message = str(exc).strip().splitlines()[-1] if str(exc).strip() else repr(exc)
            raise RegistrationFailed(
                f"SimpleITK registration failed at stage {name!r}, level {level} (shrink {plan.factors}): {message}. "
                "The images may not overlap: check their geometry, or start closer with initial_transform"
            ) from exc
        stop = method.GetOptimizerStopConditionDescription()
        done = int(method.GetOptimizerIteration())
        hit_cap = done >= iterations or "maximum number of iterations" in stop.lower()
        drawn, valid = min(wanted, n_region), int(method.GetMetricNumberOfValidPoints())
        logger.debug("%s level %d %s: %d points (%d valid), %d iterations in %.3f s, metric %.6g, %s", name, level,
                     plan.factors, drawn, valid, done, time.perf_counter() - started, method.GetMetricValue(), stop)
        history = LevelHistory(
            stage=name,
            level=level,
            shrink_factor=float(plan.nominal_factor),
            smoothing_sigma_mm=float(plan.sigma_mm),
            metric_values=tuple(values),
            stop_reason=stop,
            samples=drawn,
            valid_samples=valid,
        )
        return _LevelRun(history, hit_cap, float(method.GetMetricValue()))


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


def _quantise(tx: sitk.Transform) -> None:
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


def _all_threads() -> int:
    """SimpleITK's process-wide default thread count (all cores unless the user or ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS set it)."""
    return int(sitk.ProcessObject.GetGlobalDefaultNumberOfThreads())


_THREADS_LOCK = threading.Lock()
_THREADS_STATE = {"active": 0, "previous": 0}


@contextlib.contextmanager
def _default_threads(threads: int | None) -> Iterator[None]:
    """SimpleITK's process-wide default thread count set to ``threads`` for the duration (None: left alone).

    Nested or concurrent uses restore the original default when the last one
    ends; concurrent registrations asking for different counts share the last
    count set.
    """
    if threads is None:
        yield
        return
    with _THREADS_LOCK:
        if _THREADS_STATE["active"] == 0:
            _THREADS_STATE["previous"] = sitk.ProcessObject.GetGlobalDefaultNumberOfThreads()
        _THREADS_STATE["active"] += 1
        sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(int(threads))
    try:
        yield
    finally:
        with _THREADS_LOCK:
            _THREADS_STATE["active"] -= 1
            if _THREADS_STATE["active"] == 0:
                sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(_THREADS_STATE["previous"])


def _normalised(stage: Stage) -> Stage:
    """Enum fields parsed from strings (``Stage(model="rigid")`` is accepted)."""
    return stage.replace(
        model=TransformModel.parse(stage.model),
        metric=Metric.parse(stage.metric),
        optimizer=Optimizer.parse(stage.optimizer),
    )


def _iterations_per_level(stage: Stage, n_levels: int) -> tuple[int, ...]:
    given = stage.iterations_per_level
    if given is None:
        return (int(stage.iterations),) * n_levels
    given = tuple(int(v) for v in given)
    if len(given) != n_levels or min(given) < 1:
        raise ConfigError(
            f"iterations_per_level {given} must give one positive count per level ({n_levels} levels)"
        )
    return given


def _samples_wanted(stage: Stage, n_region: int, *, final: bool) -> int:
    """Sample points for a level with ``n_region`` usable voxels (``n_region`` or more means all of them)."""
    if not final and stage.coarse_max_samples is not None:
        wanted = int(stage.coarse_max_samples)
    elif stage.max_samples is not None:
        wanted = int(stage.max_samples)
    else:
        wanted = int(math.ceil(stage.sampling_fraction * n_region))
    return max(_MIN_SAMPLES, wanted)


def _compose(parts: Sequence[Transform], center: Sequence[float]) -> Transform:
    """One transform for a chain applied last first (``parts[0]`` is applied last)."""
    if len(parts) == 1 and not isinstance(parts[0], Composite):
        return parts[0]
    flat: list[Transform] = []
    for part in parts:
        flat.extend(part.transforms if isinstance(part, Composite) else [part])
    if all(isinstance(p, LinearTransform) for p in flat):
        return _linear_product(flat, center)
    merged: list[Transform] = []
    run: list[Transform] = []
    for part in flat:
        if isinstance(part, LinearTransform):
            run.append(part)
            continue
        if run:
            merged.append(_linear_product(run, center))
            run = []
        merged.append(part)
    if run:
        merged.append(_linear_product(run, center))
    return merged[0] if len(merged) == 1 else Composite(tuple(merged))


def _linear_product(parts: Sequence[Transform], center: Sequence[float]) -> Transform:
    """The product of linear transforms, as the narrowest type that holds it, about ``center``."""
    h = np.eye(parts[0].ndim + 1)
    for part in parts:
        h = h @ part.homogeneous  # type: ignore[attr-defined]
    matrix, offset = h[:-1, :-1], h[:-1, -1]
    c = np.asarray(center, dtype=float)
    translation = offset + matrix @ c - c
    kinds = {type(p) for p in parts}
    if kinds <= {Translation}:
        return Translation(offset)
    if kinds <= {Translation, Rigid}:
        rotation = _orthonormal(matrix)
        return Rigid(rotation, translation, c)
    if kinds <= {Translation, Rigid, Similarity}:
        scale = float(abs(np.linalg.det(matrix)) ** (1.0 / matrix.shape[0]))
        return Similarity(scale, _orthonormal(matrix / scale), translation, c)
    return Affine(matrix, translation, c)


def _orthonormal(matrix: np.ndarray) -> np.ndarray:
    """The nearest rotation (polar factor) of a matrix that is a rotation up to rounding."""
    u, _, vt = np.linalg.svd(matrix)
    return u @ vt

