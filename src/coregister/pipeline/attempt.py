"""One attempt: the pair as engines and the check see it, one engine run, and its judgement, each done once.

:func:`prepare` turns the user's images and masks into a :class:`Pair`
(grey images, validity masks, the reduced grid the metrics are measured
on); :func:`attempt` runs one engine on it and judges the answer with the
quality check (:func:`coregister.pipeline.quality.check`). Both the plain
route and the fallback chain call these, so an answer is measured and
judged exactly once.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import re
import time
from collections.abc import Mapping
from typing import Any

import numpy as np

from coregister.config import EngineName, Metric, ProgressCallback, RegistrationConfig, TransformModel
from coregister.engines import EngineOutput, get_engine
from coregister.engines._common import grey_pair, valid_pixels
from coregister.errors import CoregisterError, GeometryError, RegistrationFailed
from coregister.image import SpatialImage
from coregister.pipeline.evidence import chance, coverage, figures, overlay, probe, repeats
from coregister.pipeline.quality import check, deformable_members
from coregister.pipeline.result import Attempt, QualityReport, Verdict
from coregister.transforms import Composite, Transform, Translation, linear_members

__all__ = ["Judged", "Pair", "attempt", "before_metrics", "failed_attempt", "is_engine_failure", "judge", "judged_metric",
           "prepare", "run_engine"]

logger = logging.getLogger(__name__)

#: before/after metrics are computed on the fixed grid subsampled to at most this many points
METRICS_MAX_POINTS = 500_000


@dataclasses.dataclass(frozen=True)
class Pair:
    """The registration's inputs as engines and the quality check see them.

    ``fixed``/``moving`` are single-channel (colour replaced by luminance,
    ``notes`` says so); the masks combine the user's masks with each image's
    own validity (None: every pixel valid and no mask given). ``view`` is the
    fixed image subsampled by a whole ``stride`` for the metrics, with
    ``view_mask`` on it.
    """

    fixed: SpatialImage
    moving: SpatialImage
    fixed_mask: np.ndarray | None
    moving_mask: np.ndarray | None
    view: SpatialImage
    view_mask: np.ndarray | None
    stride: int
    notes: tuple[str, ...] = ()


@dataclasses.dataclass(frozen=True)
class Judged:
    """An engine's output with the metrics after it and the quality verdict on it."""

    output: EngineOutput
    after: Mapping[str, float]
    quality: QualityReport
    record: Attempt


def _mask_array(mask: Any, image: SpatialImage, name: str) -> np.ndarray | None:
    """The user's mask combined with the image's own validity; None when none is given and every pixel is valid.

    A mask over flat background is refused: nothing in it can tell one
    alignment from another (its values vary by less than 2 % of the image's
    robust range, the 0.5th to 99.5th percentile).
    """
    if isinstance(mask, SpatialImage):
        if not mask.same_geometry(image):
            raise GeometryError(
                f"the {name} lies on another grid than its image; resample it onto the image's grid with "
                "coregister.apply(..., interpolation='nearest')"
            )
        mask = mask.array
    valid = valid_pixels(image, mask, name)
    if mask is not None and not np.any(mask):
        raise GeometryError(f"{name} is empty: mark at least some voxels True (True = use)")
    if mask is not None:
        _refuse_flat(image, valid, name)
    return None if mask is None and bool(valid.all()) else valid


#: a masked region whose values vary by less than this fraction of the image's robust range holds no structure
_FLAT_FRACTION = 0.02


def _refuse_flat(image: SpatialImage, valid: np.ndarray, name: str) -> None:
    values = np.asarray(image.array)
    if image.has_channels:
        values = values.mean(axis=-1)
    inside = values[valid]
    everywhere = values[image.valid_mask()] if values.size <= 4_000_000 else values[image.valid_mask()][::7]
    if inside.size == 0 or everywhere.size == 0:
        return
    low, high = np.percentile(everywhere, [0.5, 99.5])
    spread = float(np.std(inside))
    if high > low and spread < _FLAT_FRACTION * float(high - low):
        raise GeometryError(
            f"the {name} covers no structure: the image varies by {spread:.3g} (standard deviation) inside it, "
            f"less than {_FLAT_FRACTION:.0%} of its range {float(high - low):.3g}; draw the mask over what should "
            "align (anatomy, objects), or leave it out"
        )


def _metrics_view(image: SpatialImage, mask: np.ndarray | None, max_points: int) -> tuple[SpatialImage, np.ndarray | None, int]:
    """The fixed image (and mask) subsampled by a whole stride so that before/after metrics stay cheap."""
    n = math.prod(image.shape)
    stride = max(1, int(math.ceil((n / max_points) ** (1.0 / image.ndim) - 1e-9)))
    if stride == 1:
        return image, mask, 1
    index = (slice(None, None, stride),) * image.ndim
    view = SpatialImage(
        np.asarray(image.array)[index],
        origin=image.origin,
        spacing=tuple(s * stride for s in image.spacing),
        direction=image.direction,
        crs=image.crs,
        nodata=image.nodata,
        mask=None if image.mask is None else np.asarray(image.mask)[index],
    )
    return view, None if mask is None else mask[index], stride


def prepare(fixed: SpatialImage, moving: SpatialImage, fixed_mask: Any = None, moving_mask: Any = None,
            initial: Transform | None = None, *, max_metric_points: int = METRICS_MAX_POINTS) -> Pair:
    """The :class:`Pair` the engines and the check work on (masks: arrays or images on each image's grid).

    Inputs that contradict themselves are named here, once: a sheared voxel
    grid is resampled onto an orthonormal one (``notes`` says so), a mask
    over flat background is refused, and images whose extents do not meet in
    physical space (through ``initial`` when given) are noted. The metrics
    and the quality check look at the fixed grid subsampled to at most
    ``max_metric_points`` points.
    """
    notes: list[str] = []
    fixed_valid = _mask_array(fixed_mask, fixed, "fixed mask")
    moving_valid = _mask_array(moving_mask, moving, "moving mask")
    fixed_grey, moving_grey, grey_notes = grey_pair(fixed, moving)
    notes += grey_notes
    _refuse_constant(fixed_grey, fixed_valid, "fixed")
    _refuse_constant(moving_grey, moving_valid, "moving")
    fixed_grey, fixed_valid = _deshear(fixed_grey, fixed_valid, "fixed", notes)
    moving_grey, moving_valid = _deshear(moving_grey, moving_valid, "moving", notes)
    overlap_note = _physical_overlap_note(fixed_grey, moving_grey, initial)
    if overlap_note:
        notes.append(overlap_note)
    view, view_mask, stride = _metrics_view(fixed_grey, fixed_valid, max_metric_points)
    return Pair(fixed_grey, moving_grey, fixed_valid, moving_valid, view, view_mask, stride, tuple(notes))


def _refuse_constant(image: SpatialImage, valid: np.ndarray | None, name: str) -> None:
    """A constant image (over its valid voxels) holds nothing to align: refused before any engine runs."""
    values = np.asarray(image.array)
    inside = values[valid] if valid is not None else values.ravel()
    if np.issubdtype(inside.dtype, np.floating):
        inside = inside[np.isfinite(inside)]
    if inside.size and inside.min() == inside.max():
        raise RegistrationFailed(
            f"the {name} image is constant (every valid voxel is {inside.flat[0]:g}): there is nothing to align; "
            "check the file (an empty export, a wrong channel or window)"
        )


#: largest deviation of a direction matrix's columns from orthonormal that counts as rounding
_SHEAR_TOLERANCE = 1e-4


def _deshear(
    image: SpatialImage, valid: np.ndarray | None, name: str, notes: list[str]
) -> tuple[SpatialImage, np.ndarray | None]:
    """A sheared voxel grid (a NIfTI sform may be) resampled onto the orthonormal grid nearest to it.

    The new grid takes the rotation of the direction's polar decomposition,
    the same spacing and an extent covering the image; values are linear,
    and pixels the image does not cover are left out of the masks. The
    registration's answer is a world map, so it applies to the original image.
    """
    direction = np.asarray(image.direction, dtype=float)
    deviation = float(np.max(np.abs(direction.T @ direction - np.eye(image.ndim))))
    if deviation <= _SHEAR_TOLERANCE:
        return image, valid
    from coregister.resample import resample_values
    from coregister.transforms import Translation

    u, _, vt = np.linalg.svd(direction)
    rotation = u @ vt
    spacing = np.asarray(image.spacing, dtype=float)
    local = image.world_corners @ rotation  # coordinates along the new grid's axes
    low, high = local.min(axis=0), local.max(axis=0)
    size = np.maximum(1, np.ceil((high - low) / spacing - 1e-9)).astype(int)
    origin = rotation @ (low + 0.5 * spacing)
    grid = SpatialImage(np.zeros(tuple(size[::-1]), np.float32), origin=tuple(origin), spacing=tuple(spacing),
                        direction=rotation)
    source = image if valid is None else image.replace(mask=valid, nodata=None)
    values, inside = resample_values(Translation(np.zeros(image.ndim)), source, reference=grid, interpolation="linear")
    shear = float(np.max(np.abs((rotation.T @ direction) - np.eye(image.ndim))))
    notes.append(
        f"the {name} image's voxel grid is sheared (its direction matrix departs from orthonormal by up to "
        f"{shear:.3g}): it was resampled onto the nearest orthonormal grid for the registration "
        f"({' x '.join(map(str, size))} voxels of {' x '.join(f'{s:g}' for s in spacing)} mm); the answer maps world "
        "points, so it applies to the original image"
    )
    return grid.replace(array=np.where(inside, values, 0).astype(np.float32)), np.asarray(inside, dtype=bool)


def _physical_overlap_note(fixed: SpatialImage, moving: SpatialImage, initial: Transform | None) -> str | None:
    """A note when the images' world boxes do not meet (through ``initial``: fixed points -> moving space)."""
    fixed_box = fixed.world_corners
    if initial is not None:
        try:
            fixed_box = initial.transform_points(fixed_box)
        except (CoregisterError, ValueError):
            return None
    moving_box = moving.world_corners
    low = np.maximum(fixed_box.min(axis=0), moving_box.min(axis=0))
    high = np.minimum(fixed_box.max(axis=0), moving_box.max(axis=0))
    if np.all(high > low):
        return None
    gap = float(np.linalg.norm(np.maximum(low - high, 0.0)))
    return (
        f"the images do not overlap in physical space (their extents are {gap:.1f} world units apart"
        f"{' through the initial transform' if initial is not None else ''}): check their origins and directions; "
        "the registration starts from their aligned centres unless the initialisation is 'none'"
    )


def _identity(ndim: int) -> Transform:
    from coregister.transforms import Translation

    return Translation(np.zeros(ndim))


def before_metrics(pair: Pair, threads: int | None) -> dict[str, float]:
    """The similarity of the pair as it lies (identity transform), on the metrics grid."""
    return figures(overlay(pair.view, pair.moving, _identity(pair.fixed.ndim), mask=pair.view_mask, threads=threads),
                   with_ssim=True)


#: perturbed starts the probe runs besides polishing the answer itself (2D, 3D). In 3D they caught no wrong answer
#: that polishing missed on the validation corpus's broken runs (far starts, stopped optimisers, the wrong metric:
#: each polished 1.2-2.8 probe voxels away to 22-52 % more information), and on a template against another subject
#: they end 12-14 mm away at 1-3 % more or less information (estimators of mutual information disagree that much
#: there): no evidence, a third of the check's time. Repeated 2D textures need them. Two restarts in 3D on the
#: corpus's partial, thick-slice and CT-MR classes (90 runs) left 10 of their 11 false acceptances passed (one CT-MR
#: answer became uncertain): the perturbed starts return to the wrong answer, which is mutual information's optimum
PROBE_RESTARTS = {2: 4, 3: 0}
#: shifts at which the fixed image repeats itself that the check moves the answer by (2D, 3D): 3D scans do not
#: repeat, and the validation corpus's 3D classes were not run with it
REPEAT_SHIFTS = {2: 4, 3: 0}


def judged_metric(engine: str, config: RegistrationConfig) -> Metric:
    """What an answer is judged on: what its engine optimised (correlation for ECC and features).

    Examples
    --------
    >>> from coregister import presets
    >>> judged_metric("features", presets.rigid()).value, judged_metric("sitk", presets.rigid()).value
    ('ecc', 'mattes')
    >>> judged_metric("sitk", presets.syn()).value  # demons (mean squares on histogram-matched images)
    'mattes'
    """
    if engine in (EngineName.ECC.value, EngineName.OPENCV_ECC.value, EngineName.FEATURES.value):
        return Metric.ECC
    if not config.stages:
        return Metric.MATTES
    last = config.stages[-1]
    if last.runs_demons:
        # the demons compare the moving image histogram-matched to the fixed one; the raw images' mean squares
        # say little when their scales differ (T1 heads of 0-133 and 0-8364), mutual information is unmoved by it
        return Metric.MATTES
    return Metric.parse(last.metric)


def run_engine(
    name: EngineName,
    pair: Pair,
    config: RegistrationConfig,
    *,
    initial: Transform | None,
    progress: ProgressCallback | None,
) -> EngineOutput:
    """Run engine ``name`` on the pair (the answer maps fixed-space points to moving space).

    A 3D linear registration whose moving volume is a part of the fixed one's
    field of view (no longer along any world axis, at most
    :data:`SMALLER_FIELD` of its volume) is finished the other way round:
    from the answer, the last stage runs again, all its levels, with the
    images swapped, and its inverse is the answer, so that the final points
    are drawn over the smaller field of view, where both images have data.
    Drawn over the larger one, the share of points that land outside the
    other image changes with the transform and pulls the optimum along the
    cut (moving volumes cropped to 55-75 % of their slices, 20 cases: worst
    error 4.6 mm, 0.19 mm finished this way). The first run stays as it was:
    run the other way round from the start, one affine of 30 left its
    capture range (33 mm); finishing with the last stage's finest level
    alone left one 3.4 mm off. The price: the last stage runs twice
    (+0.5-4.5 s on the corpus's partial volumes). Fields of view that each
    reach beyond the other (a CT and an MR of one phantom) are left alone:
    run the other way round, the README's CT-to-MR pair ended 18 mm off.
    """
    engine = get_engine(name)
    output = engine.run(pair.fixed, pair.moving, config, initial=initial, fixed_mask=pair.fixed_mask,
                        moving_mask=pair.moving_mask, progress=progress)
    if not _sample_over_moving(name, pair, config):
        return output
    finishing: ProgressCallback | None = None
    if progress is not None:
        def finishing(stage: str, level: int, iteration: int, metric: float) -> None:
            progress(f"{stage}, other way round", level, iteration, metric)  # a second pass, not the first again

    finish = engine.run(pair.moving, pair.fixed, config.replace(stages=config.stages[-1:]),
                        initial=output.transform.inverse(), fixed_mask=pair.moving_mask, moving_mask=pair.fixed_mask,
                        progress=finishing)
    share = _volume(pair.moving) / _volume(pair.fixed)
    logger.info("finished the other way round: the moving image's field of view is %.0f %% of the fixed one's",
                100 * share)
    # the finishing run's "fixed" image is the caller's moving one: its notes say so in the caller's words
    notes = tuple(_SWAP_WORDS.sub(lambda m: _SWAPPED[m.group(0)], w) for w in finish.warnings)
    return dataclasses.replace(
        output, transform=finish.transform.inverse(), history=(*output.history, *finish.history),
        warnings=tuple(dict.fromkeys((*output.warnings, *notes))), converged=finish.converged,
        hit_iteration_cap=output.hit_iteration_cap or finish.hit_iteration_cap, final_metric=finish.final_metric,
        extras={**output.extras, "sampled_over": "moving", "moving_field_share": share},
        points_on_edges=finish.points_on_edges,
    )


#: a moving volume within the fixed field of view that covers at most this share of its volume is finished the
#: other way round
SMALLER_FIELD = 0.8
#: an unconfirmed 3D answer settled on the fixed image's edges runs its last stage again on this many times the points,
#: drawn everywhere (:func:`settle_everywhere`)
EVERYWHERE_POINTS = 3
#: ... and at most this many per level (what the precise preset draws: three times as many made its refinement of the
#: phantom's CT onto MR take minutes)
EVERYWHERE_MAX_POINTS = 200_000


def settle_everywhere(
    name: EngineName, pair: Pair, config: RegistrationConfig, judged: Judged, before: Mapping[str, float], *,
    progress: ProgressCallback | None,
) -> Judged | None:
    """The last stage again, from ``judged``'s answer, on points drawn everywhere; None where it does not apply.

    By default the SimpleITK engine draws a 3D stage's points from the 10 %
    of fixed voxels with the strongest gradient: where the moving image has
    the same structures (one modality, or a remap of it) its edges are there
    too, and the points are spent where the metric changes. Two modalities
    need not share their edges: a T2 MR's strongest edges are soft tissue
    that a CT shows flat. On the MRI-DIR phantom's CT onto its 5 mm-slice MR
    the edge points settled 12 mm from where the peers and a dense polish
    agree (mutual information over the whole MR grid -0.447 against
    ANTsPy's -0.4885), and the check could not confirm it. So an answer the
    check does not pass, settled on edge points by a linear 3D stage, is
    not returned as it is: from it the last stage runs again, every level,
    on :data:`EVERYWHERE_POINTS` times the points (at most
    :data:`EVERYWHERE_MAX_POINTS`) drawn over the whole fixed image, and is
    judged again (as many points drawn everywhere left the 2 mm and 0.5 mm
    in-plane runs of that pair 2.8 mm apart; three times as many, 1.0-1.2
    mm). Its verdict is at best uncertain: from a start the check did not
    pass, a local refinement shows an optimum, not that it is the right one
    (the phantom's CT moved by 5 degrees and 8 mm: refined answers 8-22 mm
    off passed). The better verdict is kept, and between two alike the one
    that shares more information on the metrics grid (``register``'s
    ``_better``): a Colin27 case that ended 12 mm off and
    failed is refined to 0.04 mm, uncertain. Answers the check passes run
    once, as before.
    """
    stage = config.stages[-1]
    if (EngineName.parse(name) is not EngineName.SITK or judged.quality.passed or pair.fixed.ndim != 3
            or not judged.output.points_on_edges
            or not _all_linear(config)):
        return None
    more = {key: max(getattr(stage, key), min(EVERYWHERE_POINTS * getattr(stage, key), EVERYWHERE_MAX_POINTS))
            for key in ("max_samples", "coarse_max_samples") if getattr(stage, key) is not None}
    again = config.replace(stages=(stage.replace(edge_sampling_fraction=None, **more),))
    relabelled: ProgressCallback | None = None
    if progress is not None:
        def relabelled(stage_name: str, level: int, iteration: int, metric: float) -> None:
            progress(f"{stage_name}, points everywhere", level, iteration, metric)

    began = time.perf_counter()
    logger.info("the answer settled on edge points is %s: its last stage again on points drawn everywhere",
                judged.quality.verdict.value)
    output = run_engine(name, pair, again, initial=judged.output.transform, progress=relabelled)
    # the history holds both runs; whether the answer converged is the refinement's own (it ran every level of the
    # stage again from the first answer: the README's CT onto MR stopped at its cap of 200 on edge points, and its
    # refinement converged in 90)
    output = dataclasses.replace(output, history=(*judged.output.history, *output.history))
    settled = judge(pair, output, before, config, began)
    if not settled.quality.passed:
        return settled
    # a local refinement from an answer the check did not pass shows that it ended at an optimum, not that the
    # optimum is the right one (on the phantom's CT moved by 5 degrees and 8 mm, such refinements passed 8-22 mm off)
    quality = dataclasses.replace(settled.quality, verdict=Verdict.UNCERTAIN, failures=(
        *settled.quality.failures,
        f"refined on points drawn everywhere from an answer the check did not pass ({'; '.join(judged.quality.failures)}):"
        " a local refinement shows an optimum, not that it is the right one"))
    return dataclasses.replace(settled, quality=quality, record=dataclasses.replace(settled.record, quality=quality))


_INVERTIBLE = (TransformModel.TRANSLATION, TransformModel.RIGID, TransformModel.SIMILARITY, TransformModel.AFFINE)


_SWAPPED = {"fixed": "moving", "moving": "fixed", "Fixed": "Moving", "Moving": "Fixed"}
_SWAP_WORDS = re.compile(r"\b(fixed|moving|Fixed|Moving)\b")


def _all_linear(config: RegistrationConfig) -> bool:
    """Whether every stage estimates an invertible linear model (translation up to affine)."""
    return all(TransformModel.parse(s.model) in _INVERTIBLE for s in config.stages)


def _volume(image: SpatialImage) -> float:
    return float(math.prod(image.shape) * math.prod(image.spacing))


def _within_field(inner: SpatialImage, outer: SpatialImage) -> bool:
    """``inner``'s world bounding box is no longer than ``outer``'s along any axis (5 % for rotated grids)."""
    return bool(np.all(np.ptp(inner.world_corners, axis=0) <= 1.05 * np.ptp(outer.world_corners, axis=0)))


def _sample_over_moving(name: EngineName, pair: Pair, config: RegistrationConfig) -> bool:
    """Whether the SimpleITK engine should draw its points over the moving image (see :func:`run_engine`)."""
    return (EngineName.parse(name) is EngineName.SITK and pair.fixed.ndim == 3 == pair.moving.ndim
            and _all_linear(config)
            and _volume(pair.moving) <= SMALLER_FIELD * _volume(pair.fixed) and _within_field(pair.moving, pair.fixed))


def _gain(pair: Pair, other: Transform, mi_after: float, threads: int | None) -> float:
    """How much more information (a fraction) the pair shares through ``other`` than through the answer.

    Measured on the metrics grid, where the answer was judged: on the probe's
    coarse grid, polishing moves even a right answer and perturbed starts end
    in ties where the optimum is broad (a template against another subject);
    only an alignment that is better at the answer's own resolution shows
    that the answer stopped short of its optimum or chose one of several.
    """
    measured = _figures_through(pair, other, threads, "polished answer")
    mi = measured["mi"] if measured is not None else float("nan")
    return (mi - mi_after) / abs(mi_after) if mi_after and math.isfinite(mi_after) and math.isfinite(mi) else 0.0


def _figures_through(pair: Pair, transform: Transform, threads: int | None, what: str) -> dict[str, float] | None:
    """The pair's figures on the metrics grid through ``transform``; None (logged) where it cannot be resampled."""
    try:
        return figures(overlay(pair.view, pair.moving, transform, mask=pair.view_mask, threads=threads))
    except (CoregisterError, RuntimeError) as exc:
        logger.info("%s could not be measured: %s", what, exc)
        return None


def _linear_part(transform: Transform) -> Transform | None:
    """A deformable answer without its deformable members (None for an answer that has none, or nothing else)."""
    linear = linear_members(transform)
    if not linear or not deformable_members(transform):
        return None
    return linear[0] if len(linear) == 1 else Composite(linear)


def judge(
    pair: Pair, output: EngineOutput, before: Mapping[str, float], config: RegistrationConfig, started: float,
) -> Judged:
    """Measure ``output`` on the metrics grid, gather the evidence and give the quality verdict on it."""
    transform = output.transform
    try:
        over = overlay(pair.view, pair.moving, transform, mask=pair.view_mask, threads=config.threads)
    except (CoregisterError, RuntimeError) as exc:  # a transform that cannot be resampled is a failed answer
        logger.info("metrics failed: %s", exc)
        over = None
    if over is None:
        after: dict[str, float] = {"ncc": float("nan"), "mi": float("nan"), "mse": float("nan"), "ssim": float("nan"),
                                   "overlap": 0.0}
        shared = local = probed = None
    else:
        after = figures(over, with_ssim=True)
        shared = chance(over, seed=config.seed)
        local = coverage(over, seed=config.seed)
        probed = probe(pair.fixed, pair.moving, transform, over, fixed_mask=pair.fixed_mask,
                       moving_mask=pair.moving_mask, restarts=PROBE_RESTARTS.get(pair.fixed.ndim, 2),
                       seed=config.seed, threads=config.threads) if output.converged and after["overlap"] > 0 else None
        if probed is not None:  # the probe's ends judged at the answer's own resolution, not on its coarse grid
            probed["polish_gain"] = _gain(pair, probed.pop("polished"), after["mi"], config.threads)
            probed["restart_gains"] = [_gain(pair, end, after["mi"], config.threads) for end in probed.pop("ends")]
    repeated = None
    if over is not None and after["overlap"] > 0 and REPEAT_SHIFTS.get(pair.fixed.ndim, 0):
        repeated = [{"shift": float(np.linalg.norm(s)),
                     "gain": _gain(pair, transform @ Translation(s), after["mi"], config.threads)}
                    for s in repeats(over, count=REPEAT_SHIFTS[pair.fixed.ndim])]
    linear = _linear_part(transform)
    linear_only = None
    if linear is not None and over is not None and after["overlap"] > 0:
        linear_only = _figures_through(pair, linear, config.threads, "the answer's linear part")
    quality = check(pair.fixed, pair.moving, transform, before, after,
                    metric=judged_metric(output.engine, config), hit_iteration_cap=output.hit_iteration_cap,
                    chance=shared, coverage=local, probe=probed, repeats=repeated, linear_only=linear_only,
                    demons=any(s.runs_demons for s in config.stages))
    if not output.converged:
        reason = "the engine did not converge at its finest level" + (f" ({output.history[-1].stop_reason})"
                                                                        if output.history else "")
        quality = QualityReport(Verdict.FAILED, failures=(*quality.failures, reason), notes=quality.notes,
                                measures=quality.measures)
    ncc = float(after.get("ncc", float("nan")))
    record = Attempt(engine=output.engine, quality=quality, ncc=ncc, time_s=time.perf_counter() - started)
    return Judged(output=output, after=after, quality=quality, record=record)


def attempt(
    name: EngineName,
    pair: Pair,
    config: RegistrationConfig,
    before: Mapping[str, float],
    *,
    initial: Transform | None = None,
    progress: ProgressCallback | None = None,
) -> Judged:
    """Run engine ``name`` and judge its answer.

    Raises what the engine raises (:class:`~coregister.errors.RegistrationFailed`
    when it could produce no transform at all).
    """
    started = time.perf_counter()
    output = run_engine(name, pair, config, initial=initial, progress=progress)
    return judge(pair, output, before, config, started)


def failed_attempt(name: EngineName, error: BaseException, started: float) -> Attempt:
    """The record of an engine that raised instead of answering."""
    text = str(error).strip()
    if type(error).__module__.split(".")[0] in ("cv2", "SimpleITK", "numpy", "scipy"):
        text = f"{type(error).__name__}: {text.splitlines()[-1] if text else ''}"
    return Attempt(engine=name.value, quality=None, ncc=float("nan"), time_s=time.perf_counter() - started, error=text)


def is_engine_failure(error: BaseException) -> bool:
    """Whether ``error`` is an engine failing (ours, or its library's: cv2, ITK, numpy, scipy) rather than a bug."""
    if isinstance(error, CoregisterError | ImportError):
        return True
    return type(error).__module__.split(".")[0] in ("cv2", "SimpleITK", "numpy", "scipy")
