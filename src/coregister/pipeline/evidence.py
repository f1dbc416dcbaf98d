"""The evidence the quality check weighs: what an answer does to the pair, measured once per answer.

* :func:`overlay`: the moving image resampled onto the metrics grid through
  the answer, once; :func:`figures` (NCC, MI, MSE, overlap), :func:`chance`
  (the information the pair shares beyond what shuffled values share) and
  :func:`coverage` (how much of the overlap shares information, block by
  block) are all computed from it.
* :func:`probe`: the answer polished with Mattes mutual information on a
  coarse grid, from the answer itself and from a few perturbed starts around
  it. A right answer sits at an optimum that every nearby start returns to;
  an answer stopped early, found with a metric that cannot handle the
  contrast, or caught in one of several similar optima does not.

"The metric improved" is not evidence of success: each of these separates
right from wrong answers on the validation corpus (``benchmarks/validate.py``).
Transforms map fixed-space points to moving space.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from typing import Any

import numpy as np

from coregister.config import EngineName, Initialisation, Metric, Optimizer, RegistrationConfig, Stage, TransformModel
from coregister.engines import get_engine
from coregister.engines.sitk.levels import axis_factors
from coregister.errors import CoregisterError
from coregister.image import SpatialImage
from coregister.measures import mutual_information, ncc, pair_figures, resampled_pair, ssim
from coregister.transforms import (
    Affine,
    Composite,
    Rigid,
    Similarity,
    Transform,
    Translation,
    linear_members,
    rotation_matrix,
)

__all__ = ["Overlay", "chance", "coverage", "figures", "overlay", "probe", "repeats"]

logger = logging.getLogger(__name__)

#: chance level of the mutual information: the mean over this many shuffles of the moving values
_SHUFFLES = 3
#: points the chance figures use at most (a whole stride of the overlap)
_CHANCE_MAX_POINTS = 250_000


@dataclasses.dataclass(frozen=True)
class Overlay:
    """The fixed metrics grid and the moving image resampled onto it through one transform.

    ``keep`` marks the points compared: the fixed image's valid pixels, the
    mask, and where the moving image had data; ``region`` counts the points
    the fixed mask offers (the denominator of the overlap).
    """

    grid: SpatialImage
    fixed: np.ndarray
    moving: np.ndarray
    keep: np.ndarray
    region: int


def overlay(view: SpatialImage, moving: SpatialImage, transform: Transform, *, mask: np.ndarray | None = None,
            threads: int | None = None) -> Overlay:
    """Resample ``moving`` onto ``view`` through ``transform`` (linear), with the points that can be compared."""
    fixed, values, keep, n_region = resampled_pair(view, moving, transform, mask=mask, threads=threads)
    return Overlay(view, fixed, values, keep, n_region)


def figures(over: Overlay, *, bins: int = 32, with_ssim: bool = False) -> dict[str, float]:
    """NCC, mutual information (nats), MSE and overlap of the pair through the overlay's transform.

    The figures :func:`coregister.measures.compare` gives, from the overlay
    already resampled; its SSIM too with ``with_ssim`` (the costliest of
    them: the figures a result reports ask for it, the check's own
    comparisons do not).
    """
    a = over.fixed[over.keep]
    b = over.moving[over.keep]
    if a.size == 0:
        logger.warning("the moving image does not overlap the fixed mask through this transform")
    out = {**pair_figures(a, b, bins=bins), "overlap": float(a.size / over.region) if over.region else 0.0}
    if with_ssim:
        out["ssim"] = ssim(over.fixed, over.moving, over.keep) if a.size else float("nan")
    return out


def _strided(over: Overlay, max_points: int) -> tuple[np.ndarray, np.ndarray]:
    a = over.fixed[over.keep].astype(np.float64)
    b = over.moving[over.keep].astype(np.float64)
    stride = max(1, int(math.ceil(a.size / max(1, max_points))))
    return a[::stride], b[::stride]


def chance(over: Overlay, *, bins: int = 32, seed: int = 0, max_points: int = _CHANCE_MAX_POINTS) -> dict[str, float]:
    """How far the pair agrees through the transform beyond chance: the figures of the absolute check.

    Returns ``mi`` (nats), ``mi_chance`` (the same with the moving values
    shuffled, mean of three shuffles: what unrelated images with these
    histograms score), ``fixed_entropy`` (the most ``mi`` can be), ``ncc``
    and ``points``.
    """
    a, b = _strided(over, max_points)
    if a.size < 2:
        return {"mi": 0.0, "mi_chance": 0.0, "fixed_entropy": 0.0, "ncc": 0.0, "points": float(a.size)}
    rng = np.random.default_rng(seed)
    # the mean of a few shuffles: one shuffle's estimate varies by a tenth of itself on a few thousand points
    shuffled = float(np.mean([mutual_information(a, rng.permutation(b), bins=bins) for _ in range(_SHUFFLES)]))
    return {
        "mi": mutual_information(a, b, bins=bins),
        "mi_chance": shuffled,
        "fixed_entropy": mutual_information(a, a, bins=bins),  # I(X; X) = H(X) on the same bins
        "ncc": ncc(a, b),
        "points": float(a.size),
    }


#: blocks per axis of the local coverage (2D, 3D)
_BLOCKS = {2: 4, 3: 3}
#: a block is compared when it holds at least this many points ...
_BLOCK_MIN_POINTS = 300
#: ... and its fixed values vary by at least this fraction of their spread over the whole overlap
_BLOCK_MIN_STRUCTURE = 0.05
_BLOCK_BINS = 16


def coverage(over: Overlay, *, seed: int = 0) -> dict[str, Any]:
    """How much of the overlap shares information through the transform, block by block.

    The metrics grid is cut into 4 x 4 (2D) or 3 x 3 x 3 (3D) blocks; in each
    block with enough points and structure, the mutual information of the
    pair beyond its shuffled level is taken as a fraction of the block's own
    entropy. A right answer lets most blocks share information (the images
    agree everywhere); an answer that aligns one large region and leaves the
    rest misaligned, or unrelated images, leave many blocks at chance.

    Returns ``blocks`` (compared), ``excess`` (per block) and
    ``shared_fraction`` (of the blocks, those with an excess above 5 %).
    """
    d = over.fixed.ndim
    n = _BLOCKS.get(d, 3)
    edges = [np.linspace(0, s, n + 1).astype(int) for s in over.fixed.shape]
    spread = float(np.std(over.fixed[over.keep])) if over.keep.any() else 0.0
    rng = np.random.default_rng(seed)
    excesses = []
    for index in np.ndindex(*([n] * d)):
        block = tuple(slice(edges[axis][i], edges[axis][i + 1]) for axis, i in enumerate(index))
        keep = over.keep[block]
        if int(keep.sum()) < _BLOCK_MIN_POINTS:
            continue
        a = over.fixed[block][keep].astype(np.float64)
        b = over.moving[block][keep].astype(np.float64)
        if spread <= 0 or float(np.std(a)) < _BLOCK_MIN_STRUCTURE * spread:
            continue
        entropy = mutual_information(a, a, bins=_BLOCK_BINS)
        if entropy <= 0:
            continue
        shared = mutual_information(a, b, bins=_BLOCK_BINS)
        shuffled = float(np.mean([mutual_information(a, rng.permutation(b), bins=_BLOCK_BINS) for _ in range(2)]))
        excesses.append((shared - shuffled) / entropy)
    shared_fraction = float(np.mean([e > 0.05 for e in excesses])) if excesses else float("nan")
    return {"blocks": len(excesses), "excess": excesses, "shared_fraction": shared_fraction}


# --------------------------------------------------------------------------------------------- repeats
#: the fixed image repeats itself where the correlation of the overlap with itself shifted reaches this ...
_REPEAT_MIN_PEAK = 0.5
#: ... over at least this share of the overlap
_REPEAT_MIN_SHARE = 0.5


def repeats(over: Overlay, *, count: int = 4, min_peak: float = _REPEAT_MIN_PEAK) -> list[np.ndarray]:
    """World-space shifts by which the fixed image nearly repeats itself over the overlap (strongest first).

    The secondary peaks of the overlap's normalised autocorrelation (the
    lobe around no shift left out) where it reaches ``min_peak`` over at
    least half of the overlap: a checkerboard repeats at its period, most
    photographs and scans nowhere. An answer moved by such a shift is
    another alignment the pair may score alike; :func:`coregister.pipeline.
    attempt.judge` measures each.

    Examples
    --------
    >>> import numpy as np
    >>> from coregister.image import SpatialImage
    >>> from coregister.transforms import Translation
    >>> board = np.kron((np.indices((4, 4)).sum(0) % 2).astype(np.float32), np.ones((16, 16), np.float32))
    >>> grid = SpatialImage(board, origin=(0.0, 0.0), spacing=(0.5, 0.5))
    >>> shifts = repeats(overlay(grid, grid, Translation([0.0, 0.0])))
    >>> sorted(np.abs(s).tolist() for s in shifts)  # one 8-unit square along both axes: the same colour again
    [[8.0, 8.0], [8.0, 8.0], [8.0, 8.0], [8.0, 8.0]]
    """
    from scipy import ndimage, signal
    from skimage.feature import peak_local_max

    keep = over.keep
    if count <= 0 or keep.sum() < 2:
        return []
    values = over.fixed.astype(np.float64)
    centred = np.where(keep, values - values[keep].mean(), 0.0)
    inside = keep.astype(np.float64)

    def flip(a: np.ndarray) -> np.ndarray:
        return a[(slice(None, None, -1),) * a.ndim]

    product = signal.fftconvolve(centred, flip(centred))
    shared = signal.fftconvolve(inside, flip(inside))
    energy = signal.fftconvolve(centred * centred, flip(inside)) * signal.fftconvolve(inside, flip(centred * centred))
    valid = shared > _REPEAT_MIN_SHARE * keep.sum()
    correlation = np.where(valid & (energy > 0), product / np.sqrt(np.maximum(energy, 1e-300)), 0.0)
    zero = tuple(n - 1 for n in keep.shape)
    lobes = ndimage.label(correlation > min_peak)[0]
    correlation[lobes == lobes[zero]] = 0.0
    peaks = peak_local_max(correlation, min_distance=2, threshold_abs=min_peak, exclude_border=False,
                           num_peaks=count)
    origin = over.grid.index_to_world(np.zeros((1, keep.ndim)))[0]
    steps = (np.asarray(peaks, dtype=float) - np.asarray(zero, dtype=float))[:, ::-1]  # (x, y[, z]) index steps
    return [over.grid.index_to_world(step[None, :])[0] - origin for step in steps]


# --------------------------------------------------------------------------------------------- probe
#: points of the coarse grid the probe polishes on (the grid is the fixed image shrunk by a whole factor)
_PROBE_POINTS = {2: 1 << 16, 3: 1 << 16}
#: random sample points per probe run
_PROBE_SAMPLES = {2: 1 << 14, 3: 12_000}
#: iterations per probe run
_PROBE_ITERATIONS = 60
#: perturbed starts: rotation (degrees), shift (probe voxels), scale (models that have one)
_PERTURB_DEG, _PERTURB_VOXELS, _PERTURB_SCALE = 10.0, 3.0, 1.1
#: perturbed starts polish on a grid this many times coarser (per axis) than the answer's polish, with as many
#: times fewer samples per axis
_RESTART_COARSER = 2


def _model_of(transform: Transform) -> TransformModel | None:
    """The linear model that can hold ``transform`` (None: a homography or a deformable part)."""
    if isinstance(transform, Composite):
        if not transform.is_linear:
            return None
        members = linear_members(transform)
        models = [_model_of(m) for m in members]
        if any(m is None for m in models):
            return None
        order = [TransformModel.TRANSLATION, TransformModel.RIGID, TransformModel.SIMILARITY, TransformModel.AFFINE]
        return max(models, key=lambda m: order.index(m))  # type: ignore[arg-type]
    if isinstance(transform, Translation):
        return TransformModel.TRANSLATION
    if isinstance(transform, Rigid):
        return TransformModel.RIGID
    if isinstance(transform, Similarity):
        return TransformModel.SIMILARITY
    if isinstance(transform, Affine):
        return TransformModel.AFFINE
    return None


def _perturbations(ndim: int, model: TransformModel, centre: np.ndarray, voxel: float, count: int,
                   seed: int) -> list[Transform]:
    """``count`` seeded starts around the identity: turned, shifted and (where the model scales) scaled."""
    rng = np.random.default_rng(10_007 + seed)
    out: list[Transform] = []
    for k in range(count):
        sign = 1.0 if k % 2 == 0 else -1.0
        if ndim == 2:
            rotation = rotation_matrix(float(np.deg2rad(sign * _PERTURB_DEG)))
        else:
            axis = rng.normal(size=3)
            axis /= np.linalg.norm(axis)
            angle = np.deg2rad(sign * _PERTURB_DEG)
            cross = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
            rotation = np.eye(3) + np.sin(angle) * cross + (1 - np.cos(angle)) * cross @ cross
        if model is TransformModel.TRANSLATION:
            rotation = np.eye(ndim)
        scale = _PERTURB_SCALE ** sign if model in (TransformModel.SIMILARITY, TransformModel.AFFINE) else 1.0
        direction = rng.normal(size=ndim)
        shift = _PERTURB_VOXELS * voxel * direction / np.linalg.norm(direction)
        out.append(Affine(scale * rotation, shift, centre))
    return out


def _points(over: Overlay, max_points: int = 8000) -> np.ndarray:
    index = np.argwhere(over.keep)[:, ::-1].astype(float)
    stride = max(1, int(math.ceil(len(index) / max_points)))
    return over.grid.index_to_world(index[::stride])


def _distance(a: Transform, b: Transform, points: np.ndarray) -> float:
    return float(np.mean(np.linalg.norm(a.transform_points(points) - b.transform_points(points), axis=1)))


def probe_grid(fixed: SpatialImage) -> tuple[int, float]:
    """The probe's shrink factor and the mean size (geometric) of its grid's voxels, in world units.

    The factor brings the fixed image to about ``2^16`` voxels; the engine
    shrinks coarse axes less (:func:`~coregister.engines.sitk.levels.axis_factors`),
    so the probe's voxel is measured on the grid it gets: on 0.5 x 0.5 x 5 mm
    slices a factor of 6 gives 3 x 3 x 5 mm voxels (3.56 mm), which six times
    the mean spacing made 12 mm, and "half a probe voxel" 6 mm.

    Examples
    --------
    >>> import numpy as np
    >>> mr = SpatialImage(np.zeros((47, 512, 512), np.uint8), origin=(0, 0, 0), spacing=(0.5, 0.5, 5.0))
    >>> factor, voxel = probe_grid(mr)
    >>> factor, round(voxel, 2)
    (6, 3.56)
    >>> factor, voxel = probe_grid(SpatialImage(np.zeros((64, 64, 64), np.uint8), origin=(0, 0, 0), spacing=(2, 2, 2)))
    >>> factor, round(voxel, 6)
    (2, 4.0)
    """
    d = fixed.ndim
    factor = max(1, int(math.ceil((math.prod(fixed.shape) / _PROBE_POINTS[d]) ** (1.0 / d) - 1e-9)))
    level_spacing = [f * s for f, s in zip(axis_factors(factor, fixed.size, fixed.spacing), fixed.spacing, strict=True)]
    return factor, float(np.prod(level_spacing) ** (1.0 / d))


def probe(
    fixed: SpatialImage,
    moving: SpatialImage,
    transform: Transform,
    over: Overlay,
    *,
    fixed_mask: np.ndarray | None,
    moving_mask: np.ndarray | None,
    restarts: int,
    seed: int = 0,
    threads: int | None = None,
) -> dict[str, Any] | None:
    """Polish ``transform`` with Mattes MI on a coarse grid, from itself and from ``restarts`` perturbed starts.

    Returns None where the answer is not linear (a homography, a
    deformable part: no SimpleITK model holds it). Otherwise, in world units
    and probe voxels (the coarse grid's mean voxel size): ``polished`` and
    ``ends`` (the polished answer, where each perturbed start ended), ``moved`` (how far polishing moves the answer),
    ``metric`` (the polished answer's Mattes MI on the probe's grid) and
    ``restart_distances`` (how far each perturbed start ends from the
    polished answer). How much better each end is, the perturbed starts'
    grid being coarser than the polish's, is measured by
    :func:`coregister.pipeline.attempt.judge` at the answer's resolution.
    """
    model = _model_of(transform)
    if model is None:
        return None
    d = fixed.ndim
    factor, voxel = probe_grid(fixed)
    engine = get_engine(EngineName.SITK)

    def config(shrink: int, samples: int) -> RegistrationConfig:
        size = shrink * float(np.mean(fixed.spacing))
        stage = Stage(model=model, metric=Metric.MATTES, optimizer=Optimizer.REGULAR_STEP, shrink_factors=(shrink,),
                      iterations=_PROBE_ITERATIONS, learning_rate=0.5, min_step=0.01 * size, histogram_bins=32,
                      max_samples=samples, edge_sampling_fraction=None, smoothing_voxels=0.5)
        return RegistrationConfig(stages=(stage,), initialisation=Initialisation.NONE, engine=EngineName.SITK,
                                  seed=seed, threads=threads, name="probe")

    def polish(start: Transform, settings: RegistrationConfig) -> tuple[Transform, float]:
        out = engine.run(fixed, moving, settings, initial=start, fixed_mask=fixed_mask, moving_mask=moving_mask)
        return out.transform, float(out.final_metric)

    points = _points(over)
    # perturbed starts only look for a better optimum elsewhere, and judge() remeasures where they end at the
    # answer's own resolution: a grid twice as coarse finds them at a quarter of the cost
    coarse = config(factor * _RESTART_COARSER, max(1, _PROBE_SAMPLES[d] // _RESTART_COARSER ** d))
    try:
        polished, value = polish(transform, config(factor, _PROBE_SAMPLES[d]))
        ends = [polish(transform @ p, coarse) for p in _perturbations(d, model, fixed.world_centre, voxel, restarts, seed)]
    except (CoregisterError, RuntimeError) as exc:  # a start that leaves no overlap: no evidence either way
        logger.info("probe failed: %s", exc)
        return None
    return {
        "probe_voxel": voxel,
        "polished": polished,
        "ends": [t for t, _ in ends],
        "moved": _distance(transform, polished, points) / voxel,
        "metric": value,
        "restart_distances": [_distance(polished, t, points) / voxel for t, _ in ends],
    }
