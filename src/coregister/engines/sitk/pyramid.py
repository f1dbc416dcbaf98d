"""The image pyramid: bin-averaged, smoothed levels of each image and its mask, and the inputs of each level.

* **Pyramid.** Both images are reduced by bin averaging
  (``BinShrinkImageFilter``: each coarse voxel is the mean of the fine ones it
  covers, an anti-aliasing box filter) from the previous level, never from
  full resolution again, then Gaussian-smoothed on the reduced grid (by
  default half a voxel of that level, ``Stage.smoothing_voxels``: on noisy,
  bias-corrupted multimodal heads this halved the error of the 1 mm level).
  ITK's own pyramid smooths the full-resolution moving
  image at every level and never shrinks it; on a 1 mm head that alone
  costs more than a whole registration here. Each level then runs as one
  ``ImageRegistrationMethod`` on the reduced pair (shrink 1, no smoothing).
  While ITK optimises one level on one thread (the default), a second thread
  builds the next levels' images and masks (:func:`prefetching`).
* **Where points are drawn.** From the fixed mask and, when the stage's
  ``edge_sampling_fraction`` is set, only from that fraction of fixed voxels
  with the strongest gradient: flat regions add nothing to the metric's
  gradient, so the same number of points pins the optimum down better
  (:func:`level_inputs`).
* **Pairs of different resolution.** Where one image's voxels are
  :data:`RESOLUTION_MISMATCH` or more times longer along an axis of the
  other (a thick-slice scan against an isotropic one), the finer image is
  smoothed along that axis to the coarser one's resolution at every level
  (:func:`resolution_floor`), and points are drawn from the whole region,
  not its edges: the finer image's sharpest edges are the ones the coarser
  image cannot show.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import dataclasses
import logging
import math
import threading
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

from coregister.config import Stage
from coregister.engines.sitk.levels import LevelPlan, axis_factors, samples_wanted
from coregister.engines.sitk.threads import all_threads
from coregister.errors import GeometryError
from coregister.image import SpatialImage

__all__ = [
    "RESOLUTION_MISMATCH",
    "LevelInputs",
    "Pyramid",
    "level_inputs",
    "prefetching",
    "resolution_floor",
    "to_sitk_float",
    "to_sitk_mask",
]

logger = logging.getLogger(__name__)

# the edge mask is found on a grid of at most this many voxels
_EDGE_GRID_MAX_VOXELS = 1_500_000
#: an image whose voxels are this many times longer than the other's along one of its axes has a coarser resolution
#: there, and the finer image is smoothed to it (:func:`resolution_floor`)
RESOLUTION_MISMATCH = 1.5


def resolution_floor(image: sitk.Image, other: sitk.Image) -> tuple[float, ...] | None:
    """Per-axis Gaussian sigma (world units, ITK axis order) that brings ``image`` to ``other``'s resolution.

    A voxel of width ``w`` along a direction averages like a box of variance
    ``w^2 / 12``; along each axis of ``image`` the widths of ``other``'s voxel
    add up as ``sum_j (u . v_j)^2 w_j^2`` over its axes ``v_j``. Where
    ``other`` is :data:`RESOLUTION_MISMATCH` or more times coarser, the sigma
    is the square root of the variance it has more; elsewhere 0. None when
    no axis is that much coarser. Thick slices against isotropic voxels (a
    1 x 1 x 15 mm scan onto a 1 x 1 x 5 mm one, 3 mm onto 1 mm slices, 9 mm
    onto 3 mm, under rigid and affine motion, 18 cases): the error over
    the tolerance went from a median of 2.5 and a worst of 7.9 to 1.0 and
    3.6 with this and points drawn everywhere (benchmarks/validate.py).

    Examples
    --------
    >>> fine = sitk.Image([8, 8, 8], sitk.sitkFloat32); fine.SetSpacing([1.0, 1.0, 5.0])
    >>> thick = sitk.Image([8, 8, 4], sitk.sitkFloat32); thick.SetSpacing([1.0, 1.0, 15.0])
    >>> [round(s, 3) for s in resolution_floor(fine, thick)]  # sqrt((15^2 - 5^2) / 12) along z
    [0.0, 0.0, 4.082]
    >>> resolution_floor(thick, fine) is None
    True
    """
    dim = image.GetDimension()
    own = np.asarray(image.GetDirection(), float).reshape(dim, dim)
    theirs = np.asarray(other.GetDirection(), float).reshape(dim, dim) * np.asarray(other.GetSpacing(), float)
    widths = np.sqrt(((own.T @ theirs) ** 2).sum(axis=1))  # other's voxel width along each axis of image
    spacing = np.asarray(image.GetSpacing(), float)
    coarser = widths >= RESOLUTION_MISMATCH * spacing
    if not coarser.any():
        return None
    return tuple(float(v) for v in np.where(coarser, np.sqrt(np.maximum(widths**2 - spacing**2, 0.0) / 12.0), 0.0))


def to_sitk_float(image: SpatialImage) -> sitk.Image:
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


def to_sitk_mask(mask: np.ndarray | None, reference: sitk.Image, name: str) -> sitk.Image | None:
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


class Pyramid:
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

    def __init__(
        self, image: sitk.Image, mask: sitk.Image | None, threads: int | None, *,
        floor_sigma_mm: Sequence[float] | None = None,
    ) -> None:
        self.image = image
        self.mask = mask
        self.threads = threads
        #: extra smoothing per axis (world units) at every level: the other image's resolution (resolution_floor)
        self.floor_sigma_mm = tuple(floor_sigma_mm) if floor_sigma_mm is not None else None
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
            floor = self.floor_sigma_mm or (0.0,) * image.GetDimension()
            sigmas = [math.hypot(plan.sigma_mm, f) for f in floor]
            return _smooth(image, sigmas, self.threads) if max(sigmas) > 0 else image

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


def _smooth(image: sitk.Image, sigma_mm: Sequence[float], threads: int | None) -> sitk.Image:
    """Gaussian smoothing with standard deviation ``sigma_mm`` per axis (ITK order) in world units.

    Below 0.8 voxel (the default half voxel), a 3-tap kernel ``[w, 1 - 2w, w]``
    with ``2 w = sigma²`` has exactly the Gaussian's variance and is applied
    with SciPy, axis by axis: 4x cheaper than ITK's sampled Gaussian and 6x
    cheaper than its recursive one (which is inaccurate below a voxel) on a
    1 mm head. Each axis pass is cut into slabs across another axis and the
    slabs run on ``threads`` threads (SciPy releases the GIL); every line is
    filtered whole, so the result does not depend on the thread count.
    Larger sigmas use ITK's sampled Gaussian kernel.
    """
    sigma_px = [sigma / s for sigma, s in zip(sigma_mm, image.GetSpacing(), strict=True)]
    if max(sigma_px) <= 0.8:
        values = sitk.GetArrayFromImage(image)
        workers = max(1, int(threads) if threads is not None else all_threads())
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
    flt.SetVariance([float(sigma) ** 2 for sigma in sigma_mm])
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


@dataclasses.dataclass(frozen=True)
class LevelInputs:
    """What one level hands ITK: the images, the masks, and how many points to draw from how many voxels."""

    fixed: sitk.Image
    moving: sitk.Image
    sample_mask: sitk.Image | None
    moving_mask: sitk.Image | None
    n_region: int
    wanted: int
    #: whether the points are drawn from the fixed image's strongest edges only (``edge_sampling_fraction``)
    on_edges: bool = False


def level_inputs(
    stage: Stage, plan: LevelPlan, fixed_pyr: Pyramid, moving_pyr: Pyramid, *, final: bool
) -> LevelInputs:
    """The pyramid images and masks of one level of one stage (built on first use, by whichever thread asks first)."""
    fixed = fixed_pyr.level(plan)
    moving_factors = axis_factors(plan.nominal_factor, moving_pyr.image.GetSize(), moving_pyr.image.GetSpacing())
    moving_plan = LevelPlan(moving_factors, plan.sigma_mm)
    moving = moving_pyr.level(moving_plan)
    region = fixed_pyr.level_mask(plan.factors)
    n_region = (
        int(np.count_nonzero(sitk.GetArrayViewFromImage(region))) if region is not None else math.prod(fixed.GetSize())
    )
    wanted = samples_wanted(stage, n_region, final=final)
    sample_mask = region
    matched = fixed_pyr.floor_sigma_mm is not None or moving_pyr.floor_sigma_mm is not None
    on_edges = False
    if wanted < n_region and stage.edge_sampling_fraction is not None and not matched:
        fraction = max(stage.edge_sampling_fraction, wanted / n_region)
        if fraction < 1.0:
            sample_mask, volume_fraction = fixed_pyr.edge_mask(plan.factors, fraction)
            n_region = max(1, int(volume_fraction * math.prod(fixed.GetSize())))
            on_edges = True
    if sample_mask is not None:
        # every point lies in the mask: hand ITK only the fixed image's box around it (its set-up scans the
        # whole fixed image, mask test per voxel: 40 ms less per 1 mm level of a head)
        fixed = fixed_pyr.cropped(plan, sample_mask)
    moving_mask = moving_pyr.level_mask(moving_plan.factors)
    return LevelInputs(fixed, moving, sample_mask, moving_mask, n_region, wanted, on_edges)


@contextlib.contextmanager
def prefetching(
    stages: Sequence[Stage], plans: Sequence[Sequence[LevelPlan]], fixed_pyr: Pyramid, moving_pyr: Pyramid,
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
                    level_inputs(stage, plan, fixed_pyr, moving_pyr, final=level == len(levels) - 1)
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
