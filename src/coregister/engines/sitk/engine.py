"""The SimpleITK engine: stages chained as ITK chains them, each optimised level by level.

* **Stages** chain as ITK chains them: the transforms earlier stages found
  are the moving initial transform of the next stage, which starts at the
  identity about the same centre. Each level of a stage is one
  ``ImageRegistrationMethod`` on that level's pair
  (:func:`~coregister.engines.sitk.method.level_method`), the transform
  carried in place from level to level. The answer is one value of
  :mod:`coregister.transforms` (:func:`~coregister.transforms.compose`): the
  composed linear map (``Translation``, ``Rigid``, ``Similarity`` or
  ``Affine``) for linear stages, a ``Composite`` (linear part, then
  B-spline) otherwise.
* **Initialisation** by the images' centres or centres of mass, and an
  optional grid search over rotations at the coarsest level.

Every transform maps fixed-space points to moving space (ITK's convention).
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import SimpleITK as sitk

from coregister import _interrupt as interrupt
from coregister.config import (
    BinaryInputs,
    Initialisation,
    Metric,
    ProgressCallback,
    RegistrationConfig,
    Stage,
    TransformModel,
)
from coregister.engines._common import refuse_series
from coregister.engines.base import EngineOutput, LevelHistory
from coregister.engines.sitk.bspline import (
    coarse_mesh,
    extended,
    injective_bound,
    refined,
    refinement_factors,
    scale_to_min_jacobian,
)
from coregister.engines.sitk.field import run_field_stage
from coregister.engines.sitk.levels import LevelPlan, axis_factors, iterations_per_level, normalised, plan_levels
from coregister.engines.sitk.method import level_method, level_spacing, new_transform, quantise, set_center, set_metric
from coregister.engines.sitk.observer import abortable, stop_now
from coregister.engines.sitk.pyramid import (
    LevelInputs,
    Pyramid,
    level_inputs,
    prefetching,
    resolution_floor,
    to_sitk_float,
    to_sitk_mask,
)
from coregister.engines.sitk.threads import all_threads, default_threads
from coregister.errors import ConfigError, GeometryError, RegistrationFailed
from coregister.image import SpatialImage
from coregister.preprocess import clamp_outliers, is_binary, mask_as_image
from coregister.transforms import Transform, compose, from_sitk

__all__ = ["SitkEngine"]

logger = logging.getLogger(__name__)

# the rotation search refines this many of its best grid rotations
_ROTATION_CANDIDATES = 3


#: models whose stage runs its own levels (engines.sitk.field), not the loop below
_OWN_LOOP = (TransformModel.SYN,)


#: a coefficient at this share of its injectivity bound counts as having reached it
_SATURATED = 0.95


def _saturated(tx: sitk.Transform) -> bool:
    """Whether a B-spline's largest coefficient has reached its injectivity bound."""
    values = np.abs(np.asarray(tx.GetParameters()))
    return bool(values.size and values.max() >= _SATURATED * injective_bound(sitk.BSplineTransform(tx)))


def _prewarped(inputs: LevelInputs, transform: sitk.Transform, reach_mm: float) -> LevelInputs:
    """``inputs`` with the moving level resampled through ``transform`` onto the fixed level grown by ``reach_mm``.

    ITK's metrics cannot take a B-spline among the moving-initial
    transforms (they need its Jacobian with respect to position, which
    ``BSplineTransform`` does not implement), and a sampled displacement
    field in its place made the level 2.4 times slower (Colin27 -> MNI152):
    the composed splines are applied to the moving level once, onto the
    fixed level's grid grown by ``reach_mm`` (where the spline being
    optimised may carry a point), by cubic B-spline interpolation (linear
    interpolation blurs the image unevenly, and the spline chases that
    pattern: a known 9 mm warp of a 2 mm head settled 0.515 mm off through
    a linear prewarp, 0.438 mm through a cubic one, and 0.460 mm when the
    first spline went on within its bound instead). A moving mask
    (resampled, nearest) keeps the points that fall outside the moving
    image out of the metric, as they were.
    """
    grid = inputs.fixed
    ndim = grid.GetDimension()
    spacing = np.array(grid.GetSpacing())
    pad = np.ceil(reach_mm / spacing).astype(int) + 1
    origin = np.array(grid.GetOrigin()) - np.array(grid.GetDirection()).reshape(ndim, ndim) @ (pad * spacing)
    size = [int(n) + 2 * int(p) for n, p in zip(grid.GetSize(), pad, strict=True)]
    reference = sitk.Image(size, sitk.sitkUInt8)
    reference.SetOrigin(tuple(origin.tolist()))
    reference.SetSpacing(grid.GetSpacing())
    reference.SetDirection(grid.GetDirection())
    # the splines evaluated once per point (ITK's B-spline transform is the slow part), then two cheap resamplings
    field = sitk.DisplacementFieldTransform(sitk.TransformToDisplacementField(
        transform, sitk.sitkVectorFloat64, reference.GetSize(), reference.GetOrigin(), reference.GetSpacing(),
        reference.GetDirection()))
    moving = sitk.Resample(inputs.moving, reference, field, sitk.sitkBSpline, 0.0, inputs.moving.GetPixelID())
    inside = inputs.moving_mask
    if inside is None:
        inside = sitk.Image(inputs.moving.GetSize(), sitk.sitkUInt8) + 1
        inside.CopyInformation(inputs.moving)
    mask = sitk.Resample(inside, reference, field, sitk.sitkNearestNeighbor, 0, sitk.sitkUInt8)
    return dataclasses.replace(inputs, moving=moving, moving_mask=mask)


def _pyramid_threads(config: RegistrationConfig) -> int:
    """Threads of the work whose answer does not depend on them (pyramid, resampling): the config's, else all."""
    return config.threads if config.threads is not None else all_threads()


def _runs_own_levels(stage: Stage) -> bool:
    """A displacement field: :func:`~coregister.engines.sitk.field.run_field_stage` runs its levels."""
    return stage.model in _OWN_LOOP


def _finest_factor(stage: Stage, spacing: Sequence[float]) -> int:
    """The stage's finest automatic shrink factor; a field stage's finest level has voxels of ``finest_spacing_mm`` or more."""
    if stage.finest_spacing_mm is None:
        return stage.finest_factor
    factor = 1
    while factor * 2 * min(spacing) <= float(stage.finest_spacing_mm) + 1e-9:
        factor *= 2
    return max(stage.finest_factor, factor)


def _coarsest_factor(stage: Stage, spacing: Sequence[float]) -> int | None:
    """A field stage with a per-level schedule spans that many levels up from its finest; others keep their own bound."""
    if stage.model is not TransformModel.SYN or stage.iterations_per_level is None or stage.coarsest_factor is not None:
        return stage.coarsest_factor
    return _finest_factor(stage, spacing) * 2 ** (len(stage.iterations_per_level) - 1)


#: the most voxels a field stage's extra full-resolution level runs on: ITK's demons hold about 160 bytes per voxel
#: of their level (Colin27 -> MNI152, 7.2 million voxels: 1.8 GB at the peak with the level, 0.63 GB without), so a
#: 0.5-0.7 mm CT of 100 million voxels would need 16 GB for five iterations
FULL_RESOLUTION_MAX_VOXELS = 1 << 24


def _full_resolution(stage: Stage, size: Sequence[int], spacing: Sequence[float]) -> bool:
    """A field stage adds a level on the image's own voxels below the ones ``finest_spacing_mm`` allowed."""
    return (stage.model is TransformModel.SYN and stage.full_resolution_iterations > 0
            and _finest_factor(stage, spacing) > 1 and math.prod(size) <= FULL_RESOLUTION_MAX_VOXELS)


def field_level_voxels(stage: Stage, size: Sequence[int], spacing: Sequence[float]) -> int:
    """Voxels of the finest level a displacement-field stage runs on (0 for other stages): what its memory grows with.

    Parameters
    ----------
    stage : Stage
    size, spacing : sequences
        The fixed image's, in ITK order ``(x, y[, z])``.

    Examples
    --------
    >>> from coregister import presets
    >>> syn = presets.syn().stages[-1]
    >>> field_level_voxels(syn, (182, 218, 182), (1.0, 1.0, 1.0))  # a 1 mm head: five iterations at 1 mm
    7221032
    >>> field_level_voxels(syn, (512, 512, 400), (0.7, 0.7, 0.7))  # 105 million voxels: the 1.4 mm level
    13107200
    >>> field_level_voxels(presets.rigid().stages[0], (182, 218, 182), (1.0, 1.0, 1.0))
    0
    """
    if stage.model is not TransformModel.SYN:
        return 0
    factor = 1 if _full_resolution(stage, size, spacing) else _finest_factor(stage, spacing)
    return math.prod(n // f for n, f in zip(size, axis_factors(factor, size, spacing), strict=True))


def _stage_levels(stage: Stage, image: sitk.Image) -> tuple[LevelPlan, ...]:
    size, spacing = image.GetSize(), image.GetSpacing()
    levels = plan_levels(size, spacing, shrink_factors=stage.shrink_factors,
                         smoothing_sigmas_mm=stage.smoothing_sigmas_mm, finest_factor=_finest_factor(stage, spacing),
                         coarsest_factor=_coarsest_factor(stage, spacing), smoothing_voxels=stage.smoothing_voxels)
    if _full_resolution(stage, size, spacing):
        levels = (*levels, LevelPlan((1,) * image.GetDimension(), 0.0))
    return levels


def _own_iterations(stage: Stage, n_levels: int, image: sitk.Image) -> tuple[int, ...]:
    """A field stage's iterations per level: on a small image, fewer levels than its schedule names keep the finest
    ones' counts; its full-resolution level (:func:`_stage_levels`) comes last."""
    full = _full_resolution(stage, image.GetSize(), image.GetSpacing())
    extra = (int(stage.full_resolution_iterations),) if full else ()
    scheduled = n_levels - len(extra)
    given = stage.iterations_per_level
    if stage.model is TransformModel.SYN and given is not None and len(given) > scheduled:
        return (*(int(v) for v in given[-scheduled:]), *extra)
    return (*iterations_per_level(stage, scheduled), *extra)


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
    on_edges: bool = False


class SitkEngine:
    """The SimpleITK intensity engine behind :func:`coregister.register` (see :mod:`coregister.engines.sitk`).

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
        pyramid_threads = _pyramid_threads(config)
        with default_threads(config.threads if config.threads is not None else 1):
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
        stages = tuple(normalised(s) for s in config.stages)
        refuse_series(fixed, "fixed")
        refuse_series(moving, "moving")
        if fixed.ndim != moving.ndim:
            raise GeometryError(f"fixed image is {fixed.ndim}D and moving image is {moving.ndim}D; register images of one dimension")
        threads = config.threads if config.threads is not None else 1  # the registration methods'
        warnings: list[str] = []
        binary = BinaryInputs.parse(config.binary_inputs)
        if binary is not BinaryInputs.AS_IS and is_binary(fixed) and is_binary(moving):
            how = "distance" if binary is BinaryInputs.DISTANCE else "smooth"
            fixed, moving = mask_as_image(fixed, how=how), mask_as_image(moving, how=how)
            warnings.append(f"both images are binary masks: registered as their {'signed distance maps' if how == 'distance' else 'smoothed masks'}")
        if any(Metric.parse(s.metric) in (Metric.MATTES, Metric.MI) for s in stages):
            # histogram metrics bin from the lowest value to the highest: outliers that span more than the rest of
            # an image leave its structure a few bins (a moon photo over four decades: every preset 0.8-1.1 px off)
            fixed, fixed_note = clamp_outliers(fixed, fixed_mask)
            moving, moving_note = clamp_outliers(moving, moving_mask)
            warnings.extend(f"{name} image: {note}" for name, note in (("fixed", fixed_note), ("moving", moving_note))
                            if note)
        fixed_img = to_sitk_float(fixed)
        moving_img = to_sitk_float(moving)
        fixed_pyr = Pyramid(fixed_img, to_sitk_mask(fixed_mask, fixed_img, "fixed mask"), pyramid_threads,
                            floor_sigma_mm=resolution_floor(fixed_img, moving_img))
        moving_pyr = Pyramid(moving_img, to_sitk_mask(moving_mask, moving_img, "moving mask"), pyramid_threads,
                             floor_sigma_mm=resolution_floor(moving_img, fixed_img))

        history: list[LevelHistory] = []
        hit_cap = False
        on_edges = False
        final_metric = float("nan")
        extras: dict[str, Any] = {
            "threads": threads,
            "pyramid_threads": pyramid_threads,
        }

        # ---------------------------------------------------------------- initialisation
        plans = [_stage_levels(s, fixed_img) for s in stages]
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
        first_tx = new_transform(stages[0].model, fixed_img, stages[0]) if stages[0].model not in _OWN_LOOP else None
        center: tuple[float, ...] = tuple(fixed.world_centre.tolist())
        coarse = plans[0][0]
        if first_tx is not None and stages[0].model is not TransformModel.BSPLINE:
            how = Initialisation.parse(config.initialisation) if initial is None else Initialisation.NONE
            if how is Initialisation.NONE:  # rotations about the image centre
                set_center(first_tx, center)
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
        # the stages that run their own levels (a displacement field, a refined B-spline) build no pyramid here
        prefetched = [(s, p) for s, p in zip(stages, plans, strict=True) if not _runs_own_levels(s)]
        # from here the pyramid levels of every stage are built on a second thread, coarse to fine, while ITK
        # optimises (the checks and the initialisation above ran first, on this thread alone)
        with prefetching([s for s, _ in prefetched], [p for _, p in prefetched], fixed_pyr, moving_pyr,
                         enabled=pyramid_threads > 1):
            # ---------------------------------------------------------------- stages
            for index, (stage, levels) in enumerate(zip(stages, plans, strict=True)):
                if _runs_own_levels(stage):
                    name = _stage_name(stage, index, stages)
                    moving_initial = sitk.CompositeTransform(list(parts)) if parts else None
                    done = run_field_stage(
                        fixed_pyr, moving_img, moving_initial, stage, levels,
                        _own_iterations(stage, len(levels), fixed_img), name=name, threads=pyramid_threads,
                        metric_threads=threads, fixed_mask=fixed_pyr.mask,
                        progress=progress, linear_value=compose([from_sitk(t) for t in parts]) if parts else None,
                    )
                    parts.append(done.field.to_sitk())
                    history.extend(done.history)
                    final_metric = done.final_metric
                    warnings.extend(done.warnings)
                    continue
                mesh_factors = refinement_factors(len(levels), stage.bspline_refinements)
                if stage.model is TransformModel.BSPLINE and mesh_factors[-1] > 1:
                    # the mesh starts 2^r times coarser and is refined (exactly) where the factors double
                    tx = sitk.BSplineTransformInitializer(
                        fixed_img, coarse_mesh(fixed_img, stage.bspline_mesh_mm, mesh_factors[-1].bit_length() - 1), 3
                    )
                else:
                    tx = first_tx if index == 0 and first_tx is not None else new_transform(stage.model, fixed_img, stage)
                if index > 0 and stage.model is not TransformModel.BSPLINE:
                    set_center(tx, center)
                name = _stage_name(stage, index, stages)
                moving_initial = sitk.CompositeTransform(list(parts)) if parts else None
                iterations = iterations_per_level(stage, len(levels))
                injective = stage.model is TransformModel.BSPLINE and stage.injective
                through: tuple[sitk.Transform, float] | None = None  # the splines frozen so far, composed
                frozen: list[sitk.Transform] = []  # ... as they stand in ``parts`` (extended)
                for level, plan in enumerate(levels):
                    doubles = stage.model is TransformModel.BSPLINE and level > 0 and mesh_factors[level] > mesh_factors[level - 1]
                    if injective and level > 0 and (doubles or _saturated(tx)):
                        # the spline reached its bound (it wanted to move further) or the mesh is refined: a fresh
                        # bounded spline on this level's mesh, composed on it; each cannot fold, so neither can
                        # their composition (engines.sitk.bspline.injective_bound)
                        logger.info("%s level %d: a fresh B-spline is composed on the last one", name, level)
                        tx, warned = self._fold_guard(tx, fixed_img, stage, name)  # each spline alone, then all
                        warnings.extend(warned)
                        tx, through = self._composed(sitk.BSplineTransform(tx), parts, fixed_img, stage, mesh_factors,
                                                     level, len(levels) - level)
                        frozen.append(parts[-1])
                    elif doubles:
                        tx = refined(tx)
                    run = self._run_level(
                        tx, stage, name, index, level, plan, levels, iterations[level], fixed_pyr, moving_pyr,
                        moving_initial, config, threads, progress, coarse_virtual=coarse_virtual, through=through,
                    )
                    history.append(run.history)
                    hit_cap = hit_cap or run.hit_cap
                    final_metric = run.final_metric
                    on_edges = run.on_edges  # the last level's: where the answer was settled
                    quantise(tx)
                if stage.model is TransformModel.BSPLINE:
                    tx, warned = self._fold_guard(tx, fixed_img, stage, name, after=frozen)
                    warnings.extend(warned)
                parts.append(tx)

        stage_parts = [from_sitk(t) for t in parts[1 if user_initial is not None else 0:]]
        all_parts = ([user_initial] if user_initial is not None else []) + stage_parts
        transform = compose(all_parts, center=center)
        return EngineOutput(
            transform=transform,
            engine=self.name,
            history=tuple(history),
            warnings=tuple(warnings),
            hit_iteration_cap=hit_cap,
            final_metric=final_metric,
            extras=extras,
            points_on_edges=on_edges,
        )

    # ------------------------------------------------------------------ helpers
    @staticmethod
    def _composed(
        tx: sitk.BSplineTransform, parts: list[sitk.Transform], fixed: sitk.Image, stage: Stage, mesh_factors: Sequence[int],
        level: int, later: int,
    ) -> tuple[sitk.BSplineTransform, tuple[sitk.Transform, float]]:
        """Freeze ``tx`` into ``parts`` and start a fresh spline on ``level``'s mesh.

        Returns the fresh spline and what the levels from here register it
        through: ``parts`` composed, and how far (world units) the ``later``
        splines (the fresh one included) may carry a point: each moves one
        by at most its bound, and meshes only get finer, so this level's
        bound is the largest. ``tx`` is extended (exactly) that far beyond
        its domain, where ITK would take it for the identity.
        """
        doublings = (mesh_factors[-1] // mesh_factors[level]).bit_length() - 1
        fresh = sitk.BSplineTransformInitializer(fixed, coarse_mesh(fixed, stage.bspline_mesh_mm, doublings), 3)
        reach = later * injective_bound(fresh, along_mesh=True)
        cells = int(math.ceil(reach / min(tx.GetCoefficientImages()[0].GetSpacing())))
        parts.append(extended(tx, cells))
        return fresh, (sitk.CompositeTransform(list(parts)), reach)

    @staticmethod
    def _fold_guard(
        tx: sitk.Transform, fixed: sitk.Image, stage: Stage, name: str, *, after: Sequence[sitk.Transform] = (),
    ) -> tuple[sitk.Transform, list[str]]:
        """The B-spline scaled back until its Jacobian determinant stays above the stage's floor (engines.sitk.bspline).

        ``after``: the splines frozen before it (applied after it); the floor
        is then checked on their composition, the last spline alone scaled.
        """
        if stage.min_jacobian is None:
            return tx, []
        spline = from_sitk(tx)
        guarded, scale = scale_to_min_jacobian(spline, fixed, float(stage.min_jacobian),  # type: ignore[arg-type]
                                               after=[from_sitk(t) for t in after])
        if scale == 1.0:
            return tx, []
        return guarded.to_sitk(), [f"{name}: the B-spline's Jacobian determinant fell below {stage.min_jacobian:g}; "
                                   f"the fold guard scaled it by {scale:.3g}"]

    def _initialise(
        self,
        tx: Any,
        how: Initialisation,
        fixed: sitk.Image,
        moving: sitk.Image,
        fixed_pyr: Pyramid,
        moving_pyr: Pyramid,
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
                    axis_factors(coarse.nominal_factor, moving.GetSize(), moving.GetSpacing())
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
            set_metric(method, stage.replace(histogram_bins=min(stage.histogram_bins, 32)))
            method.SetInterpolator(sitk.sitkLinear)
            method.SetMetricSamplingStrategy(method.NONE)
            method.MetricUseFixedImageGradientFilterOff()
            method.MetricUseMovingImageGradientFilterOff()
            if mask is not None:
                method.SetMetricFixedMask(mask)
            if threads is not None:
                method.SetNumberOfThreads(threads)
            spacing = level_spacing(fixed)
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
        fixed_pyr: Pyramid,
        moving_pyr: Pyramid,
        moving_initial: sitk.Transform | None,
        config: RegistrationConfig,
        threads: int | None,
        progress: ProgressCallback | None,
        *,
        coarse_virtual: bool,
        through: tuple[sitk.Transform, float] | None = None,
    ) -> _LevelRun:
        final = level == len(levels) - 1
        inputs = level_inputs(stage, plan, fixed_pyr, moving_pyr, final=final)
        if through is not None:  # an injective stage's composed round: the moving level resampled through the rest
            # deterministic whatever the thread count (each voxel its own): on the pyramid's threads
            with default_threads(_pyramid_threads(config)):
                inputs = _prewarped(inputs, *through)
            moving_initial = None
        fixed, moving, n_region, wanted = inputs.fixed, inputs.moving, inputs.n_region, inputs.wanted
        method = level_method(
            tx, stage, inputs, stage_index=stage_index, level=level, iterations=iterations, final=final,
            seed=config.seed, threads=threads, moving_initial=moving_initial, coarse_virtual=coarse_virtual,
        )

        values: list[float] = []
        raised: list[BaseException] = []
        stopping: list[int] = []

        def on_iteration() -> None:
            # Nothing may escape into ITK: SimpleITK would print a traceback and turn any exception (a progress
            # callback's error, a Ctrl-C) into a RuntimeError. It is kept, the optimiser stopped at once, and it
            # is raised again, itself, once Execute has returned; so is a signal the command line noted meanwhile.
            try:
                if raised:
                    return
                if interrupt.pending():
                    stopping.append(int(method.GetOptimizerIteration()))  # one entry per event after the signal
                else:
                    value = float(method.GetMetricValue())
                    if not values:  # the optimiser is running: a signal from now on stops it here (see _interrupt)
                        logger.debug("%s level %d %s: optimising, %d iterations at most", name, level, plan.factors,
                                     iterations)
                    values.append(value)
                    if progress is not None:
                        progress(name, level, int(method.GetOptimizerIteration()), value)
                    return
            except BaseException as exc:  # noqa: B036 - a KeyboardInterrupt or Interrupted above all
                raised.append(exc)
            stop_now(method.StopRegistration)  # LBFGSB cannot be asked to stop: its Execute is ended (observer.py)

        def stop_if_interrupted() -> None:
            if interrupt.pending() and stopping:
                logger.info("%s level %d %s: interrupted at iteration %d of %d, stopped %d iteration(s) later; no later "
                            "level runs", name, level, plan.factors, stopping[0], iterations, len(stopping) - 1)
            interrupt.raise_pending()

        method.AddCommand(sitk.sitkIterationEvent, on_iteration)
        started = time.perf_counter()
        try:
            try:
                with interrupt.deferred(), abortable():
                    method.Execute(fixed, moving)
            finally:
                method.RemoveAllCommands()
            if raised:
                raise raised[0]
            stop_if_interrupted()
        except RuntimeError as exc:
            if raised:
                raise raised[0] from None
            stop_if_interrupted()
            if "error executing the Python Callable" in str(exc):
                # only an exception raised between two of the observer's lines escapes it: Python's own Ctrl-C
                raise KeyboardInterrupt from None
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
        return _LevelRun(history, hit_cap, float(method.GetMetricValue()), inputs.on_edges)
