"""The quality check run after every registration.

It looks at what a registration returned and says whether to trust it:

* the similarity the registration optimised got **worse** than before
  (compared on the fixed mask, from :func:`coregister.measures.compare`
  figures), or the images barely overlap any more;
* the images share **no structure** through the answer, whatever it
  improved (:func:`chance_figures`): the mutual information after exceeds
  what the same values score once the moving ones are shuffled by less
  than ``min_information`` (2 %) of the fixed image's entropy; for the
  correlation-type metrics (NCC, ECC, mean squares) the correlation is
  below ``min_ncc`` in magnitude. A brain registered to pure noise ends
  at chance level (measured: an excess of 0-0.2 % of the entropy, 2D and
  3D), real pairs far above it (15-65 %: BrainWeb T1/PD, CT/MR,
  SPM-resampled T1, degraded MNI, the demo's remapped T1; a brain slice
  against an unrelated photograph 8 %), and the demo's multimodal pair
  forced onto correlation, which misaligns it, at 1.8 %;
* the linear part has a **scale** outside ``scale_range``, a **shear**
  above ``max_shear``, or a **reflection**;
* a deformable answer (a B-spline or a displacement field) **folds** space:
  its Jacobian determinant, computed at every voxel of the fixed image's
  full grid (:func:`coregister.measures.jacobian_determinant`, slab by
  slab), is zero or negative somewhere; the measures carry the smallest and
  largest determinant and the folding fraction (the share of voxels at or
  below zero);
* a deformable answer shares **less than its own linear part**: the judged
  figure (mutual information for the demons and the Mattes stages) through
  the whole answer is worse than through its linear members alone, by more
  than the tolerance: the deformation undid what the linear stages found
  (the ``syn`` demons compare intensities; on a pair whose contrast they
  cannot map, a T2-like remap, they end several millimetres off while the
  information through the whole answer still rises above the unregistered
  pair's);
* an optimiser level **stopped at its iteration cap** (a warning only: the
  answer may still be good, but it did not converge by its own criterion).

Findings go into the :class:`~coregister.pipeline.result.QualityReport`
(``failures`` decide the verdict, ``notes`` do not); they are logged (INFO),
never issued with :func:`warnings.warn`. A failed check is exit code 3 on the
command line.

Transforms map fixed-space points to moving space.
"""

from __future__ import annotations

import itertools
import logging
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from coregister.config import Metric
from coregister.errors import ConfigError
from coregister.image import SpatialImage
from coregister.pipeline.result import QualityReport, Verdict
from coregister.transforms import (
    BSpline,
    Composite,
    DisplacementField,
    Homography,
    Transform,
    decompose,
    linear_members,
)

__all__ = [
    "MAX_SHEAR",
    "SCALE_RANGE",
    "chance_figures",
    "check",
    "deformable_members",
    "jacobian_figures",
    "jacobian_determinant_range",
    "judged_measure",
]

logger = logging.getLogger(__name__)

# which figure of compare() judges a run, and whether higher is better
_MEASURES = {
    Metric.MATTES: ("mi", True),
    Metric.MI: ("mi", True),
    Metric.NCC: ("ncc", True),  # judged on |ncc|: inverted contrast is a match too
    Metric.ECC: ("ncc", True),
    Metric.MSE: ("mse", False),
}
# chance_figures works on the fixed grid subsampled by a whole stride to at most this many points
_CHANCE_MAX_POINTS = 250_000
# chance level of the mutual information: the mean over this many shuffles of the moving values
_SHUFFLES = 3
# metrics judged on correlation (the absolute floor is on |ncc|)
_CORRELATION_METRICS = (Metric.NCC, Metric.ECC, Metric.MSE)

#: acceptable scales of a linear part, and the largest acceptable shear term (the one source of these limits:
#: the quality check fails a run outside them and the HTML report flags them)
SCALE_RANGE = (0.5, 2.0)
MAX_SHEAR = 0.3


def judged_measure(metric: Metric | str | None) -> tuple[str, bool]:
    """The :func:`~coregister.measures.compare` key that judges a run optimising ``metric``, and whether higher is better.

    Examples
    --------
    >>> judged_measure("mattes"), judged_measure("mse"), judged_measure(None)
    (('mi', True), ('mse', False), ('mi', True))
    """
    if metric is None:
        return _MEASURES[Metric.MATTES]
    return _MEASURES[Metric.parse(metric)]


def chance_figures(
    fixed: SpatialImage,
    moving: SpatialImage,
    transform: Transform,
    *,
    mask: Any = None,
    bins: int = 32,
    seed: int = 0,
    max_points: int = _CHANCE_MAX_POINTS,
) -> dict[str, float]:
    """How far the pair agrees through ``transform`` beyond chance: the figures of the absolute check.

    The moving image is resampled onto the fixed grid (subsampled by a whole
    stride to at most ``max_points`` points) through ``transform`` (fixed ->
    moving points), over the fixed image's valid pixels, ``mask`` and the
    moving image's data, as :func:`coregister.measures.compare` does.

    Parameters
    ----------
    fixed, moving : SpatialImage
        Single-channel images of one dimension.
    transform : Transform
        Fixed -> moving point map.
    mask : ndarray of bool, optional
        On the fixed grid, True where to measure.
    bins : int
        Joint-histogram bins per image.
    seed : int
        Seed of the shuffle.
    max_points : int
        Largest number of fixed-grid points used.

    Returns
    -------
    dict
        ``mi`` (mutual information, nats), ``mi_chance`` (the same with the
        moving values shuffled, mean of three shuffles: what unrelated images
        with these histograms score), ``fixed_entropy`` (nats, the most ``mi`` can be), ``ncc`` and
        ``points``.

    Examples
    --------
    >>> import numpy as np
    >>> from coregister import SpatialImage, Translation
    >>> y, x = np.mgrid[0:128, 0:128]
    >>> blob = SpatialImage(np.exp(-((x - 60.0) ** 2 + (y - 68.0) ** 2) / 400), origin=(0, 0), spacing=(1, 1))
    >>> noise = blob.replace(array=np.random.default_rng(0).uniform(size=(128, 128)))
    >>> same = chance_figures(blob, blob, Translation([0.0, 0.0]))
    >>> bool(same["mi"] > 20 * same["mi_chance"]), round(same["mi"] / same["fixed_entropy"], 3)
    (True, 1.0)
    >>> unrelated = chance_figures(blob, noise, Translation([0.0, 0.0]))
    >>> bool(unrelated["mi"] < 3 * unrelated["mi_chance"])
    True
    """
    from coregister.pipeline.evidence import chance, overlay

    n = math.prod(fixed.shape)
    stride = max(1, int(math.ceil((n / max(1, max_points)) ** (1.0 / fixed.ndim) - 1e-9)))
    index = (slice(None, None, stride),) * fixed.ndim
    grid = SpatialImage(
        np.asarray(fixed.array)[index], origin=fixed.origin, spacing=tuple(s * stride for s in fixed.spacing),
        direction=fixed.direction, mask=None if fixed.mask is None else np.asarray(fixed.mask)[index],
        nodata=fixed.nodata,
    )
    view_mask = None if mask is None else np.asarray(mask, dtype=bool)[index]
    return chance(overlay(grid, moving, transform, mask=view_mask), bins=bins, seed=seed, max_points=max_points)


def deformable_members(transform: Transform) -> list[BSpline | DisplacementField]:
    """The B-splines and displacement fields in ``transform`` (itself, or a composite's members).

    Examples
    --------
    >>> import numpy as np
    >>> from coregister import Affine, BSpline, Composite
    >>> spline = BSpline(np.zeros((2, 4, 4)), grid_origin=(0, 0), grid_spacing=(10, 10))
    >>> deformable_members(Composite((Affine(np.eye(2)), spline))) == [spline], deformable_members(Affine(np.eye(2)))
    (True, [])
    """
    if isinstance(transform, BSpline | DisplacementField):
        return [transform]
    if isinstance(transform, Composite):
        return [t for t in transform.transforms if isinstance(t, BSpline | DisplacementField)]
    return []


def jacobian_figures(transform: Transform, reference: SpatialImage) -> dict[str, float]:
    """Jacobian determinant figures of the deformable members of ``transform`` on ``reference``'s full grid.

    Every voxel of the grid is computed (slab by slab); consecutive
    deformable members (the composed splines of an injective B-spline
    stage) are judged together, as one map; a member acting after a linear
    map is judged on its own (the linear part's determinant is a constant,
    checked through its scales and reflection).

    Returns
    -------
    dict
        ``min_jacobian``, ``max_jacobian`` and ``folding_fraction`` (the share
        of voxels where the determinant is at or below zero); empty for a
        transform without a deformable member.

    Examples
    --------
    >>> import numpy as np
    >>> from coregister import BSpline, SpatialImage
    >>> ref = SpatialImage(np.zeros((40, 40)), origin=(0, 0), spacing=(1, 1))
    >>> coefficients = np.zeros((2, 7, 7))
    >>> coefficients[0, 3, 3] = 30.0  # one control point pushed 3 mesh cells: space folds
    >>> figures = jacobian_figures(BSpline(coefficients, (-10, -10), (10, 10)), ref)
    >>> figures["min_jacobian"] < 0 < figures["folding_fraction"] < 0.1
    True
    """
    from coregister.measures import jacobian_determinant

    runs = _deformable_runs(transform)
    if not runs:
        return {}
    lows, highs, folded = [], [], []
    for member in runs:
        det = jacobian_determinant(member, reference).array
        lows.append(float(det.min()))
        highs.append(float(det.max()))
        folded.append(float(np.count_nonzero(det <= 0)) / det.size)
    return {"min_jacobian": min(lows), "max_jacobian": max(highs), "folding_fraction": max(folded)}


def _deformable_runs(transform: Transform) -> list[Transform]:
    """The deformable members of ``transform``, each run of consecutive ones as one composite (judged as a whole)."""
    if not isinstance(transform, Composite):
        return deformable_members(transform)  # type: ignore[return-value]
    runs = (tuple(run) for warp, run in itertools.groupby(transform.transforms,
                                                          lambda m: isinstance(m, BSpline | DisplacementField)) if warp)
    return [run[0] if len(run) == 1 else Composite(run) for run in runs]


def jacobian_determinant_range(transform: BSpline | DisplacementField, reference: SpatialImage) -> tuple[float, float]:
    """Smallest and largest Jacobian determinant of a B-spline or a displacement field on ``reference``'s full grid.

    Examples
    --------
    >>> import numpy as np
    >>> from coregister import BSpline, SpatialImage
    >>> ref = SpatialImage(np.zeros((40, 40)), origin=(0, 0), spacing=(1, 1))
    >>> coefficients = np.zeros((2, 7, 7))
    >>> smooth = BSpline(coefficients, grid_origin=(-10, -10), grid_spacing=(10, 10))
    >>> jacobian_determinant_range(smooth, ref)
    (1.0, 1.0)
    >>> coefficients[0, 3, 3] = 30.0  # one control point pushed 3 mesh cells: space folds
    >>> jacobian_determinant_range(BSpline(coefficients, (-10, -10), (10, 10)), ref)[0] < 0
    True
    """
    figures = jacobian_figures(transform, reference)
    return figures["min_jacobian"], figures["max_jacobian"]


def _absolute_findings(
    fixed: SpatialImage,
    moving: SpatialImage,
    transform: Transform,
    metric: Metric,
    chance: Mapping[str, float] | None,
    mask: Any,
    figures: dict[str, Any],
    *,
    min_information: float,
    min_ncc: float,
) -> list[str]:
    """The absolute part of :func:`check`: does the pair share structure through the answer at all?"""
    if chance is None:
        if fixed.has_channels or moving.has_channels or fixed.ndim != moving.ndim:
            return []
        chance = chance_figures(fixed, moving, transform, mask=mask)
    mi, mi_chance = float(chance["mi"]), float(chance["mi_chance"])
    entropy = float(chance["fixed_entropy"])
    if entropy <= 0:
        logger.info("quality check: the fixed image is constant where it overlaps; no absolute similarity check")
        return []
    # the mutual information a histogram estimate gives beyond what unrelated values score: a few points and
    # many bins raise both alike (32 x 32 bins over 2,300 points: 0.2 nats of chance alone)
    excess = (mi - mi_chance) / entropy
    figures.update(mi_chance=mi_chance, information_fraction=excess)
    findings = []
    if excess < min_information:
        findings.append(
            f"no shared structure: mutual information {mi:.3g} nats after registration against {mi_chance:.3g} for "
            f"the same values shuffled, an excess of {excess:.1%} of the fixed image's entropy (needs "
            f"{min_information:.0%}): check that the images show the same thing and overlap"
        )
    if metric in _CORRELATION_METRICS:
        correlation = abs(float(chance["ncc"]))
        figures["abs_ncc"] = correlation
        if correlation < min_ncc:
            findings.append(
                f"|ncc| {correlation:.3g} after registration is below {min_ncc:g}: the images do not correlate "
                "through this transform (for images of different contrasts use metric='mattes')"
            )
    return findings


#: polishing moves a right answer by less than this many probe voxels
MAX_POLISH_VOXELS = 1.0
#: a perturbed start that ends further than this many probe voxels away found another optimum ...
MAX_RESTART_VOXELS = 1.0
#: ... which is better, not a tie, when its mutual information is higher by more than this fraction
RESTART_GAIN = 0.01
#: polishing moves right answers by less than this many probe voxels (the validation corpus: at most 0.42); a pair
#: that is an exact copy shifted by whole pixels shares far more information at the exact shift than 0.1 pixel off
MIN_POLISH_MOVE = 0.5
#: polishing that moves the answer by more than MIN_POLISH_MOVE to more information than this (a fraction, at the
#: answer's resolution) found a different alignment: mutual-information estimators of different bins and samplings
#: disagree by a few percent where the optimum is broad (a template against another subject: 2.5-3.2 %), right
#: answers of the validation corpus gain at most 4.3 %; answers stopped early or found on the wrong metric 15-50 %
MIN_POLISH_GAIN = 0.1
#: two alignments whose mutual information differs by less than this fraction cannot be told apart: twice the
#: 2.5-3.2 % by which estimators disagree where the optimum is broad. Polishing that moves the answer by more than
#: a probe voxel to this much more information leaves it uncertain (answers from a start 35-60 degrees off, 50-60
#: mm wrong: 7.9-9.1 %)
DISTINCT_GAIN = 0.05
#: a right answer lets at least this share of the overlap's structured blocks share information
MIN_SHARED_BLOCKS = 0.5
#: a volume whose coarsest spacing is this many times its finest has thick slices (clinical 3-5 mm slices of
#: 0.4-1 mm pixels: 3-12; the CT-MR example resampled to 2 mm pixels: 2.5)
THICK_SLICES = 2.5


def _has_thick_slices(image: SpatialImage) -> bool:
    """A 3D image whose slices are :data:`THICK_SLICES` or more times thicker than its pixels.

    Examples
    --------
    >>> import numpy as np
    >>> _has_thick_slices(SpatialImage(np.zeros((4, 8, 8)), origin=(0, 0, 0), spacing=(0.5, 0.5, 5.0)))
    True
    >>> _has_thick_slices(SpatialImage(np.zeros((4, 8, 8)), origin=(0, 0, 0), spacing=(1.0, 1.0, 1.2)))
    False
    """
    return image.ndim == 3 and max(image.spacing) >= THICK_SLICES * min(image.spacing)


def _evidence_findings(
    coverage: Mapping[str, Any] | None, probe: Mapping[str, Any] | None, figures: dict[str, Any], findings: list[str],
    notes: list[str], *, thick_slices: bool = False,
) -> list[str]:
    """Add what the probe and the local coverage prove wrong to ``findings``; return what they leave uncertain."""
    uncertain: list[str] = []
    if coverage is not None and coverage.get("blocks", 0) >= 4:
        shared = float(coverage["shared_fraction"])
        figures.update(shared_blocks=shared, blocks=int(coverage["blocks"]))
        if shared < MIN_SHARED_BLOCKS:
            findings.append(
                f"only {shared:.0%} of the overlap's structured blocks share information through the answer (needs "
                f"{MIN_SHARED_BLOCKS:.0%}): the images agree in a part of the overlap only"
            )
    if probe is None:
        return uncertain
    voxel = float(probe["probe_voxel"])
    moved = float(probe["moved"])
    figures.update(probe_voxel=voxel, polish_moved_voxels=moved, restart_voxels=list(probe["restart_distances"]),
                   restart_gains=list(probe["restart_gains"]))
    gain = float(probe.get("polish_gain", math.inf))
    figures.update(polish_gain=gain)
    where = (f"polishing it on a {voxel:.3g}-unit grid moves it by {moved * voxel:.3g} units ({moved:.2g} voxels of "
             f"that grid) to an alignment that shares {abs(gain):.1%} {'less' if gain < 0 else 'more'} information")
    if gain > MIN_POLISH_GAIN and math.isfinite(gain) and moved > MIN_POLISH_MOVE:
        # even under a probe voxel: a right answer is an optimum, and no alignment near it shares that much more
        findings.append(f"the answer is not at an optimum of mutual information: {where}; it may have stopped "
                        "early or optimised a metric the contrast does not suit")
    elif moved > MAX_POLISH_VOXELS and gain > DISTINCT_GAIN:
        uncertain.append(f"the answer may not be at an optimum of mutual information: {where} (more than the "
                         f"{DISTINCT_GAIN:.0%} by which estimators disagree); check it by eye")
    elif thick_slices and moved > MIN_POLISH_MOVE and gain <= DISTINCT_GAIN:
        # right answers of the validation corpus polish by at most 0.42 probe voxels, its thick-slice classes
        # included; CT onto a 5 mm-slice MR polished by 0.66-0.94 voxels of 12 mm (before the probe's voxel was
        # measured on its own grid: 3.56 mm there) to alignments the estimators cannot tell from it, 9-17 mm from
        # the truth, and passed; on the 3.56 mm voxels the README's answer, 12 mm off, polishes by 1.8 voxels to
        # 4 % more. Isotropic pairs are left alone: a template against another subject polishes by 0.97-1.3
        # voxels to 1-3 % more, the broad optimum of two anatomies, not a doubt
        uncertain.append(f"{where}, no clearer optimum than the answer, and its slices are {THICK_SLICES:g} or more "
                         "times thicker than their pixels: the pair does not pin the alignment down to a voxel of "
                         "that grid; check it by eye")
    elif moved > MAX_POLISH_VOXELS and gain > RESTART_GAIN:
        notes.append(f"{where}: the optimum is broad, or the answer stopped a little short of it")
    elif moved > MAX_POLISH_VOXELS and gain < -RESTART_GAIN:
        # the coarse grid's optimum is elsewhere and the fine grid prefers the answer: a right answer is an optimum
        # at every scale; one that exists at the finest only fits detail the images do not share
        uncertain.append(
            f"polishing the answer on a {voxel:.3g}-unit grid moves it by {moved * voxel:.3g} units ({moved:.2g} "
            f"voxels of that grid) to an alignment that shares {-gain:.1%} less information at full resolution: the "
            "alignment holds at one scale only (unrelated images, or structure too weak to align); check it by eye"
        )
    for distance, gain in zip(probe["restart_distances"], probe["restart_gains"], strict=True):
        if distance <= MAX_RESTART_VOXELS:
            continue
        if gain > MIN_POLISH_GAIN:
            findings.append(
                f"a start near the answer ends {distance * voxel:.3g} units away with {gain:.1%} more mutual "
                "information: the answer is a local optimum, not the best alignment nearby"
            )
        elif gain > RESTART_GAIN:
            uncertain.append(
                f"a start near the answer ends {distance * voxel:.3g} units away with {gain:.1%} more mutual "
                "information: the optimum is broad or there are several; check it by eye"
            )
        elif gain >= -RESTART_GAIN:  # a tie: two alignments the pair scores alike (a worse end proves nothing)
            uncertain.append(
                f"a start near the answer ends {distance * voxel:.3g} units away with as much mutual information "
                f"({gain:+.1%}): the images do not pin the alignment down (a repeated texture, a thick-slice or "
                "low-contrast pair); check it by eye"
            )
    return uncertain


def _projective_findings(transform: Homography, fixed: SpatialImage) -> list[str]:
    """A projective map must keep the fixed image on one side of its horizon and not mirror it.

    Its Jacobian determinant at ``x`` is ``det(H) / w(x)^3`` with ``w(x)`` the
    third row of ``H`` applied to ``x``: where ``w`` changes sign over the
    image, points on the horizon go to infinity; where ``det(H) w`` is
    negative, the image is mirrored. ``w`` is linear, so the image's corners
    decide. A camera looking at a plane gives neither (keypoints matched on a
    silhouette gave both, 260 px off, and passed).

    Examples
    --------
    >>> import numpy as np
    >>> from coregister import SpatialImage
    >>> image = SpatialImage(np.zeros((100, 120), np.float32), origin=(0, 0), spacing=(1, 1))
    >>> _projective_findings(Homography([[1.0, 0.1, 2.0], [0.0, 1.0, 0.0], [1e-3, 0.0, 1.0]]), image)
    []
    >>> print(_projective_findings(Homography([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [-0.02, 0.0, 1.0]]), image)[0])
    the projective map's horizon crosses the fixed image (w from -1.39 to 1.01 over its corners): part of it goes to infinity
    """
    world = fixed.world_corners
    matrix = np.asarray(transform.matrix, dtype=float)
    w = np.c_[world, np.ones(len(world))] @ matrix[-1]
    if w.min() <= 0 < w.max():
        return [f"the projective map's horizon crosses the fixed image (w from {w.min():.3g} to {w.max():.3g} over its "
                "corners): part of it goes to infinity"]
    if float(np.linalg.det(matrix)) * float(w[0]) <= 0:
        return ["the projective map mirrors the image (its Jacobian determinant is negative over the fixed image)"]
    return []


def _repeat_findings(repeats: Sequence[Mapping[str, float]], figures: dict[str, Any], findings: list[str]) -> list[str]:
    """Add an alignment a repeat away that is better to ``findings``; return the ones that tie (ambiguous answers)."""
    uncertain: list[str] = []
    if not repeats:
        return uncertain
    figures.update(repeat_shifts=[float(r["shift"]) for r in repeats], repeat_gains=[float(r["gain"]) for r in repeats])
    for shift, gain in ((float(r["shift"]), float(r["gain"])) for r in repeats):
        if gain > MIN_POLISH_GAIN:
            findings.append(
                f"the fixed image repeats itself {shift:.3g} units away, and the answer moved by that much shares "
                f"{gain:.1%} more mutual information: the answer is a repeat away from the best alignment"
            )
        elif gain >= -DISTINCT_GAIN:  # a right answer on a checkerboard, moved by one square: -2.1 to -2.8 %
            uncertain.append(
                f"the fixed image repeats itself {shift:.3g} units away, and the answer moved by that much scores "
                f"alike ({gain:+.1%} mutual information): the images do not tell these alignments apart (a repeated "
                "pattern); check it by eye"
            )
    return uncertain


def check(
    fixed: SpatialImage,
    moving: SpatialImage,
    transform: Transform,
    before: Mapping[str, float],
    after: Mapping[str, float],
    *,
    metric: Metric | str | None = Metric.MATTES,
    hit_iteration_cap: bool = False,
    scale_range: tuple[float, float] = SCALE_RANGE,
    max_shear: float = MAX_SHEAR,
    tolerance: float = 0.01,
    min_overlap: float = 0.25,
    chance: Mapping[str, float] | None = None,
    mask: Any = None,
    min_information: float = 0.02,
    min_ncc: float = 0.1,
    coverage: Mapping[str, Any] | None = None,
    probe: Mapping[str, Any] | None = None,
    repeats: Sequence[Mapping[str, float]] | None = None,
    linear_only: Mapping[str, float] | None = None,
    demons: bool = False,
) -> QualityReport:
    """Judge a registration's answer.

    Parameters
    ----------
    fixed, moving : SpatialImage
        The registered pair (the fixed grid is where a deformable answer's
        Jacobian is computed, at every voxel).
    transform : Transform
        The answer, mapping fixed-space points to moving space.
    before, after : mapping
        :func:`coregister.measures.compare` figures through the identity and
        through ``transform`` (``ncc``, ``mi``, ``mse``, ``overlap``), on the
        fixed mask.
    metric : Metric or str, optional
        What the registration optimised; it picks the figure that must not
        get worse (``mi`` for Mattes/MI, ``|ncc|`` for NCC and ECC, ``mse``).
    hit_iteration_cap : bool
        Whether an optimiser level of the run that produced the answer
        stopped at its iteration cap (a refinement's own levels, not those
        of the answer it started from).
    scale_range : (float, float)
        Acceptable scales of the linear part.
    max_shear : float
        Largest acceptable shear term of the linear part.
    tolerance : float
        Relative worsening tolerated before a run counts as worse (rounding
        and interpolation move a perfect start a little).
    min_overlap : float
        Smallest acceptable share of the fixed mask that the moved image covers.
    chance : mapping, optional
        :func:`chance_figures` of the pair through ``transform`` (computed
        here, on ``mask``, when not given).
    mask : ndarray of bool, optional
        The fixed mask the figures are measured on.
    min_information : float
        Smallest acceptable excess of the mutual information after over its
        chance level (the same values, the moving ones shuffled), as a
        fraction of the fixed image's entropy.
    min_ncc : float
        Smallest acceptable ``|ncc|`` after a run judged on correlation
        (NCC, ECC, mean squares).
    coverage : mapping, optional
        :func:`coregister.pipeline.evidence.coverage` of the answer: the share
        of the overlap's blocks whose images share information.
    probe : mapping, optional
        :func:`coregister.pipeline.evidence.probe` of the answer: how far
        polishing it with Mattes MI moves it, and where perturbed starts end.
    repeats : sequence of mapping, optional
        The answer moved by each shift at which the fixed image repeats itself
        (:func:`coregister.pipeline.evidence.repeats`): ``shift`` (its length,
        world units) and ``gain`` (how much more mutual information the pair
        shares through it, a fraction).
    linear_only : mapping, optional
        For a deformable answer: the figures (as ``after``) through its linear
        members alone; the judged figure must not be worse through the whole
        answer.
    demons : bool
        The deformation came from the demons (``syn`` on mean squares), which
        compare intensities: a deformation worse than its linear part then
        names the metric to use across contrasts.

    Returns
    -------
    QualityReport

    Examples
    --------
    >>> import numpy as np
    >>> from coregister import Affine, SpatialImage
    >>> y, x = np.mgrid[0:48, 0:48]
    >>> img = SpatialImage(np.exp(-((x - 20.0) ** 2 + (y - 26.0) ** 2) / 60), origin=(0, 0), spacing=(1, 1))
    >>> good = check(img, img, Affine(np.eye(2)), {"mi": 0.5}, {"mi": 0.9})
    >>> good.passed, good.warnings
    (True, ())
    >>> bad = check(img, img, Affine(np.diag([3.0, 1.0])), {"mi": 0.5}, {"mi": 0.4})
    >>> bad.passed
    False
    >>> for w in bad.warnings: print(w)
    mi got worse: 0.5 before, 0.4 after
    scale 3 is outside [0.5, 2]
    >>> noise = img.replace(array=np.random.default_rng(1).normal(size=(48, 48)))
    >>> print(check(img, noise, Affine(np.eye(2)), {"mi": 0.01}, {"mi": 0.02}).warnings[0])  # doctest: +ELLIPSIS
    no shared structure: mutual information 0.1... nats after registration against 0.1... for the same values shuffled...
    """
    if scale_range[0] <= 0 or scale_range[0] >= scale_range[1]:
        raise ConfigError(f"scale_range {scale_range} must be (low, high) with 0 < low < high")
    findings: list[str] = []
    notes: list[str] = []
    figures: dict[str, Any] = {}

    key, higher_is_better = judged_measure(metric)
    if key in before and key in after:
        b, a = float(before[key]), float(after[key])
        if key == "ncc":
            b, a = abs(b), abs(a)
        figures.update(measure=key, before=b, after=a)
        label = "|ncc|" if key == "ncc" else key

        def worse(than: float) -> bool:  # ``a`` worse than ``than`` by more than the tolerance
            return a < than - tolerance * abs(than) if higher_is_better else a > than + tolerance * abs(than)

        if math.isfinite(b) and math.isfinite(a):
            if worse(b):
                findings.append(f"{label} got worse: {b:.4g} before, {a:.4g} after")
        elif not math.isfinite(a):
            findings.append(f"{key} after registration is {a}: the images do not overlap through this transform")
        if linear_only is not None and key in linear_only and math.isfinite(a):
            lin = abs(float(linear_only[key])) if key == "ncc" else float(linear_only[key])
            figures["linear_only"] = lin
            if math.isfinite(lin) and worse(lin):
                hint = ("; syn's demons compare intensities and need the same contrast in both images: across "
                        "contrasts use metric='mattes' (--metric mattes)" if demons else "")
                findings.append(f"the deformation made {label} worse than its linear part alone: {lin:.4g} through the "
                                f"linear part, {a:.4g} through the whole answer{hint}")
    findings.extend(_absolute_findings(
        fixed, moving, transform, Metric.parse(metric) if metric is not None else Metric.MATTES, chance, mask,
        figures, min_information=min_information, min_ncc=min_ncc,
    ))
    if "overlap" in after:
        overlap = float(after["overlap"])
        figures["overlap"] = overlap
        if overlap < min_overlap:
            findings.append(
                f"the moved image covers {overlap:.0%} of the fixed mask (less than {min_overlap:.0%}): "
                "it was pushed out of the field of view"
            )

    scales: list[float] = []
    shears: list[float] = []
    for member in linear_members(transform):
        parts = decompose(member.matrix)
        scales.extend(abs(s) for s in parts["scales"])
        shears.extend(parts["shears"])
        if parts["reflection"]:
            findings.append("the linear part mirrors the image (negative determinant)")
    if scales:
        figures["scales"] = scales
        figures["shears"] = shears
        for s in scales:
            if not scale_range[0] <= s <= scale_range[1]:
                findings.append(f"scale {s:.4g} is outside [{scale_range[0]:g}, {scale_range[1]:g}]")
        for sh in shears:
            if abs(sh) > max_shear:
                findings.append(f"shear {sh:.4g} exceeds {max_shear:g} in magnitude")

    if isinstance(transform, Homography):
        findings.extend(_projective_findings(transform, fixed))

    jacobian = jacobian_figures(transform, fixed)
    if jacobian:
        figures.update(jacobian)
        low = jacobian["min_jacobian"]
        if low <= 0:
            what = "B-spline" if any(isinstance(m, BSpline) for m in deformable_members(transform)) else "displacement field"
            findings.append(
                f"the {what} folds space: Jacobian determinant down to {low:.3g} (must stay > 0), "
                f"{jacobian['folding_fraction']:.3%} of the fixed grid's voxels folded"
            )

    if hit_iteration_cap:
        notes.append(
            "an optimiser level stopped at its iteration cap: it may not have converged (raise the stages' "
            "iterations; command line: --iterations N)"
        )
    figures["hit_iteration_cap"] = bool(hit_iteration_cap)

    uncertain = _evidence_findings(coverage, probe, figures, findings, notes,
                                   thick_slices=_has_thick_slices(fixed) or _has_thick_slices(moving))
    uncertain.extend(_repeat_findings(repeats or (), figures, findings))

    # logged at INFO: the findings travel with the answer (QualityReport.warnings, Result.warnings), and the
    # caller decides how loud a failed check is (the command line: exit code 3 and one line on stderr)
    for message in (*findings, *uncertain, *notes):
        logger.info("quality check: %s", message)
    if findings:
        return QualityReport(Verdict.FAILED, failures=(*findings, *uncertain), notes=tuple(notes), measures=figures)
    if uncertain:
        return QualityReport(Verdict.UNCERTAIN, failures=tuple(uncertain), notes=tuple(notes), measures=figures)
    return QualityReport(Verdict.PASSED, notes=tuple(notes), measures=figures)
