"""How right a registration is and how regular its transform: landmark errors (TRE), label overlap, folding.

These answer "how right is the transform?" where the truth is known from
outside the images: corresponding landmarks picked on both images (target
registration error, in world units: mm for medical volumes) and label maps
(segmentations) carried through the transform (Dice, Jaccard and HD95 per
label, from :mod:`coregister.medical.overlap`); and "is it a plausible
deformation?": the folding fraction and the spread of the log-Jacobian on
the fixed grid. :func:`evaluate` gives them all in one :class:`Evaluation`,
the measures Learn2Reg reports. The similarity measures a registration
optimises and judges itself by live in :mod:`coregister.measures`.

Transforms map fixed-space points to moving space (DESIGN convention 3):
corresponding landmarks ``(p_fixed, p_moving)`` of a perfect registration
satisfy ``transform(p_fixed) == p_moving``, and the moving labels are
resampled onto the fixed grid through the transform.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from coregister.config import Interpolation
from coregister.errors import ConfigError, GeometryError
from coregister.image import SpatialImage
from coregister.measures import jacobian_determinant
from coregister.medical.landmarks import Landmarks
from coregister.medical.overlap import integer_labels, overlap_scores
from coregister.resample import apply, transform_points
from coregister.transforms import Composite, Homography, LinearTransform, Transform

__all__ = [
    "Evaluation",
    "JacobianSummary",
    "LabelScore",
    "PointError",
    "evaluate",
    "jacobian_summary",
    "landmark_errors",
    "tre",
]


def landmark_errors(transform: Transform, fixed_points: Any, moving_points: Any) -> np.ndarray:
    """Per-landmark distance between ``transform(fixed_points)`` and ``moving_points`` (moving-space units).

    ``transform`` maps fixed-space points to moving space, so corresponding
    landmarks ``(p_fixed, p_moving)`` of a perfect registration give 0.

    Examples
    --------
    >>> from coregister import Translation
    >>> landmark_errors(Translation([1.0, 0.0]), [[0.0, 0.0], [1.0, 1.0]], [[1.0, 0.0], [2.0, 4.0]]).tolist()
    [0.0, 3.0]
    """
    fixed_points = np.atleast_2d(np.asarray(fixed_points, dtype=float))
    moving_points = np.atleast_2d(np.asarray(moving_points, dtype=float))
    if fixed_points.shape != moving_points.shape:
        raise GeometryError(
            f"{len(fixed_points)} fixed landmarks of shape {fixed_points.shape} vs moving landmarks of shape "
            f"{moving_points.shape}; give corresponding (n, d) arrays"
        )
    mapped = np.atleast_2d(transform_points(transform, fixed_points))
    return np.linalg.norm(mapped - moving_points, axis=1)


def tre(transform: Transform, fixed_points: Any, moving_points: Any) -> float:
    """Mean target registration error of corresponding landmarks (world units: mm, map units, px).

    ``transform`` maps fixed-space points to moving space; the error of each
    pair is ``|transform(p_fixed) - p_moving|``.

    Examples
    --------
    >>> from coregister import Translation
    >>> tre(Translation([1.0, 0.0]), [[0.0, 0.0], [1.0, 1.0]], [[1.0, 0.0], [2.0, 4.0]])
    1.5
    """
    return float(landmark_errors(transform, fixed_points, moving_points).mean())


# --------------------------------------------------------------------------- the transform's regularity


@dataclass(frozen=True)
class JacobianSummary:
    """How a transform changes volume on the fixed grid: its Jacobian determinant's extremes and spread.

    Attributes
    ----------
    minimum, maximum : float
        Of the determinant (below 0: the map folds there).
    folding_fraction : float
        Fraction of the voxels whose determinant is at or below 0.
    sd_log_jacobian : float
        Standard deviation of ``log(det)``, determinants clipped to
        ``[1e-9, 1e9]`` first (Learn2Reg's SDlogJ); 0 for a linear map.
    voxels : int
        Voxels the figures cover.
    """

    minimum: float
    maximum: float
    folding_fraction: float
    sd_log_jacobian: float
    voxels: int

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return asdict(self)


def jacobian_summary(transform: Transform, grid: SpatialImage, *, mask: Any = None) -> JacobianSummary:
    """The Jacobian determinant of ``transform`` at every voxel of ``grid`` (or of ``mask``), summarised.

    ``transform`` maps fixed to moving points and ``grid`` is the fixed
    image; the determinant comes from
    :func:`coregister.measures.jacobian_determinant` on the full grid
    (constant, and computed once, for a linear transform; ``det(H) / w^3``
    for a homography, which ITK has no transform for).

    Examples
    --------
    >>> from coregister import Affine
    >>> grid = SpatialImage(np.zeros((4, 5)), origin=(0, 0), spacing=(1, 1))
    >>> jacobian_summary(Affine(np.diag([2.0, 0.5])), grid)
    JacobianSummary(minimum=1.0, maximum=1.0, folding_fraction=0.0, sd_log_jacobian=0.0, voxels=20)
    >>> jacobian_summary(Affine(np.diag([-1.0, 1.0])), grid).folding_fraction  # a mirror folds everywhere
    1.0
    """
    if transform.ndim != grid.ndim:
        raise GeometryError(f"a {transform.ndim}D transform has no Jacobian on a {grid.ndim}D grid; give the fixed image")
    keep = np.ones(grid.shape[: grid.ndim], bool) if mask is None else np.asarray(getattr(mask, "array", mask), bool)
    if keep.shape != grid.shape[: grid.ndim]:
        raise GeometryError(f"mask of shape {keep.shape} does not fit the grid of shape {grid.shape[: grid.ndim]}")
    count = int(keep.sum())
    linear = transform.flattened() if isinstance(transform, Composite) and transform.is_linear else transform
    if isinstance(linear, LinearTransform):
        det = np.full(min(count, 1), float(np.linalg.det(linear.matrix)))
    elif isinstance(transform, Homography):  # ITK has none; det J = det(H) / w^3 at each pixel centre (w: the third row)
        w = grid.world_grid()[keep] @ transform.matrix[2, :2] + transform.matrix[2, 2]
        det = float(np.linalg.det(transform.matrix)) / w**3
    else:
        det = jacobian_determinant(transform, grid).array[keep]
    if det.size == 0:
        return JacobianSummary(float("nan"), float("nan"), float("nan"), float("nan"), 0)
    log = np.log(np.clip(det, 1e-9, 1e9))
    return JacobianSummary(float(det.min()), float(det.max()), float(np.mean(det <= 0)), float(np.std(log)), count)


# --------------------------------------------------------------------------- everything a paper reports


@dataclass(frozen=True)
class LabelScore:
    """Overlap of one label: the fixed labels against the moving labels resampled onto the fixed grid.

    ``hd95_mm`` is NaN when the label is absent from either map;
    ``warped_voxels`` counts the label in the moving labels resampled onto
    the fixed grid.
    """

    label: int
    dice: float
    jaccard: float
    hd95_mm: float
    fixed_voxels: int
    warped_voxels: int


@dataclass(frozen=True)
class PointError:
    """One landmark pair: where the transform puts the fixed landmark, and how far that is from the moving one."""

    label: str
    fixed: tuple[float, ...]
    moving: tuple[float, ...]
    mapped: tuple[float, ...]
    error_mm: float


def _mean(values: list[float]) -> float | None:
    finite = [v for v in values if math.isfinite(v)]
    return float(np.mean(finite)) if finite else None


def _number(value: float | None) -> float | None:
    return None if value is None or not math.isfinite(value) else float(value)


@dataclass(frozen=True)
class Evaluation:
    """The accuracy and regularity of one registration: what Learn2Reg reports.

    Attributes
    ----------
    labels : tuple of LabelScore
        Dice, Jaccard and HD95 of each label.
    points : tuple of PointError
        The target registration error of each landmark pair.
    jacobian : JacobianSummary or None
        Folding and log-Jacobian spread of the transform on the fixed grid.
    """

    labels: tuple[LabelScore, ...] = ()
    points: tuple[PointError, ...] = ()
    jacobian: JacobianSummary | None = None

    @property
    def mean_dice(self) -> float | None:
        """Mean Dice over the labels (None without labels)."""
        return _mean([s.dice for s in self.labels])

    @property
    def mean_jaccard(self) -> float | None:
        """Mean Jaccard index over the labels."""
        return _mean([s.jaccard for s in self.labels])

    @property
    def mean_hd95_mm(self) -> float | None:
        """Mean HD95 over the labels present in both maps."""
        return _mean([s.hd95_mm for s in self.labels])

    def tre_mm(self, statistic: str) -> float | None:
        """``mean``, ``median`` or ``max`` of the landmark errors (None without landmarks)."""
        errors = np.array([p.error_mm for p in self.points])
        if statistic not in ("mean", "median", "max"):
            raise ConfigError(f"statistic {statistic!r} is not one of mean, median, max")
        if not errors.size:
            return None
        return float(np.mean(errors) if statistic == "mean" else np.median(errors) if statistic == "median" else errors.max())

    def summary(self) -> dict[str, float | None]:
        """The single numbers, by name (None where the inputs for one were not given)."""
        jacobian = self.jacobian
        return {
            "dice_mean": self.mean_dice,
            "jaccard_mean": self.mean_jaccard,
            "hd95_mean_mm": self.mean_hd95_mm,
            "tre_mean_mm": self.tre_mm("mean"),
            "tre_median_mm": self.tre_mm("median"),
            "tre_max_mm": self.tre_mm("max"),
            "folding_fraction": None if jacobian is None else _number(jacobian.folding_fraction),
            "sd_log_jacobian": None if jacobian is None else _number(jacobian.sd_log_jacobian),
            "jacobian_min": None if jacobian is None else _number(jacobian.minimum),
        }

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form: the summary, each label, each landmark and the Jacobian (NaN written as null)."""
        return {
            "summary": self.summary(),
            "labels": [{**asdict(s), "hd95_mm": _number(s.hd95_mm)} for s in self.labels],
            "landmarks": [{**asdict(p), "fixed": list(p.fixed), "moving": list(p.moving), "mapped": list(p.mapped)}
                          for p in self.points],
            "jacobian": None if self.jacobian is None else {k: _number(v) if isinstance(v, float) else v
                                                            for k, v in self.jacobian.to_dict().items()},
        }

    def rows(self) -> list[tuple[str, str, float | None, str]]:
        """One ``(measure, item, value, unit)`` row per number: per label, per landmark, then the summary (a CSV's rows)."""
        out: list[tuple[str, str, float | None, str]] = []
        for s in self.labels:
            out += [("dice", str(s.label), s.dice, ""), ("jaccard", str(s.label), s.jaccard, ""),
                    ("hd95", str(s.label), _number(s.hd95_mm), "mm")]
        out += [("tre", p.label, p.error_mm, "mm") for p in self.points]
        for name, value in self.summary().items():
            if value is not None:
                measure, _, unit = name.partition("_mm")
                out.append((measure, "", value, "mm" if name.endswith("_mm") else ""))
        return out


def _label_image(value: SpatialImage, what: str) -> SpatialImage:
    if value.has_channels:
        raise GeometryError(f"the {what} have {value.n_channels} channels; give a label map of one value per voxel")
    integer_labels(value.array)  # refuses intensities
    return value


def _label_scores(
    transform: Transform, fixed: SpatialImage, moving: SpatialImage, labels: Any, percentile: float, interpolation: Interpolation
) -> tuple[LabelScore, ...]:
    fixed = _label_image(fixed, "fixed labels")
    moving = _label_image(moving, "moving labels")
    if not transform.ndim == fixed.ndim == moving.ndim:
        raise GeometryError(
            f"a {transform.ndim}D transform with {fixed.ndim}D fixed and {moving.ndim}D moving labels; give label maps of the "
            "registration's dimension"
        )
    warped = apply(transform, moving, reference=fixed, interpolation=interpolation)
    return tuple(LabelScore(label, *scores) for label, scores in overlap_scores(fixed, warped, labels=labels,
                                                                                 percentile=percentile).items())


def _point_errors(transform: Transform, fixed: Any, moving: Any) -> tuple[PointError, ...]:
    fixed = fixed if isinstance(fixed, Landmarks) else Landmarks(fixed)
    moving = moving if isinstance(moving, Landmarks) else Landmarks(moving)
    if len(fixed) != len(moving) or fixed.ndim != moving.ndim:
        raise GeometryError(
            f"{len(fixed)} fixed landmarks ({fixed.ndim}D) but {len(moving)} moving landmarks ({moving.ndim}D); "
            "give corresponding landmark files, one moving point per fixed point"
        )
    if fixed.ndim != transform.ndim:
        raise GeometryError(f"{fixed.ndim}D landmarks cannot be mapped by a {transform.ndim}D transform")
    moving = moving.ordered_like(fixed)
    mapped = np.atleast_2d(transform_points(transform, fixed.points))
    errors = np.linalg.norm(mapped - moving.points, axis=1)
    return tuple(PointError(label, tuple(f.tolist()), tuple(m.tolist()), tuple(p.tolist()), float(e))
                 for label, f, m, p, e in zip(fixed.labels, fixed.points, moving.points, mapped, errors, strict=True))


def evaluate(
    transform: Transform,
    *,
    fixed_labels: SpatialImage | None = None,
    moving_labels: SpatialImage | None = None,
    fixed_landmarks: Landmarks | Any = None,
    moving_landmarks: Landmarks | Any = None,
    grid: SpatialImage | None = None,
    labels: Any = None,
    percentile: float = 95.0,
    interpolation: Interpolation | str = Interpolation.NEAREST,
    jacobian_mask: Any = None,
) -> Evaluation:
    """Score a registration against labels and landmarks, and its transform's regularity on the fixed grid.

    ``transform`` maps fixed-space points to moving space (DESIGN convention
    3): the moving labels are resampled onto the fixed labels' grid through it
    (nearest neighbour) and compared label by label (Dice, Jaccard, HD95);
    each fixed landmark is mapped forward and its distance to the
    corresponding moving landmark is its target registration error
    (landmarks pair by position, or by label when both files name every
    point uniquely).

    Parameters
    ----------
    transform : Transform
        Fixed -> moving point map (``Result.transform``, or :func:`coregister.read_transform`).
    fixed_labels, moving_labels : SpatialImage, optional
        Label maps of the fixed and the moving image (both or neither).
    fixed_landmarks, moving_landmarks : Landmarks or array_like, optional
        Corresponding points in LPS world coordinates (both or neither).
    grid : SpatialImage, optional
        The fixed image, for the Jacobian (default: ``fixed_labels``; with
        neither, no Jacobian). The fixed labels must lie on it.
    labels : sequence of int, optional
        Labels to score (default: every non-zero label in either map).
    percentile : float
        Of the Hausdorff distance (95: HD95).
    interpolation : {"nearest", "label-gaussian"}
        How the moving labels are resampled onto the fixed grid.
    jacobian_mask : array_like of bool, optional
        Voxels of ``grid`` the Jacobian figures cover (default: all).

    Returns
    -------
    Evaluation

    Examples
    --------
    >>> from coregister import Translation
    >>> fixed = SpatialImage(np.pad(np.ones((4, 4), np.uint8), 3), origin=(0, 0), spacing=(1, 1))
    >>> moving = SpatialImage(np.roll(fixed.array, 1, axis=1), origin=(0, 0), spacing=(1, 1))  # shifted 1 px in x
    >>> result = evaluate(Translation([1.0, 0.0]), fixed_labels=fixed, moving_labels=moving,
    ...                   fixed_landmarks=[[3.0, 3.0]], moving_landmarks=[[4.0, 3.0]])
    >>> result.mean_dice, result.tre_mm("max"), result.jacobian.folding_fraction
    (1.0, 0.0, 0.0)
    """
    if (fixed_labels is None) != (moving_labels is None):
        raise ConfigError("give both the fixed and the moving labels, or neither")
    if (fixed_landmarks is None) != (moving_landmarks is None):
        raise ConfigError("give both the fixed and the moving landmarks, or neither")
    how: Interpolation = Interpolation.parse(interpolation)
    if how not in (Interpolation.NEAREST, Interpolation.LABEL_GAUSSIAN):
        raise ConfigError(f"label maps are resampled with nearest or label-gaussian interpolation, not {how.value!r}")
    if not isinstance(transform, Transform):
        raise GeometryError(f"expected a coregister Transform, got {type(transform).__name__}; see coregister.read_transform")
    grid = fixed_labels if grid is None else grid
    if grid is not None and fixed_labels is not None and not fixed_labels.same_geometry(grid):
        raise GeometryError(
            f"the fixed labels ({fixed_labels.size} voxels at {fixed_labels.spacing}) lie on another grid than the fixed "
            f"image ({grid.size} at {grid.spacing}); give the labels of the fixed image, on its grid"
        )
    points = () if fixed_landmarks is None else _point_errors(transform, fixed_landmarks, moving_landmarks)  # cheap: first
    scores: tuple[LabelScore, ...] = ()
    if fixed_labels is not None and moving_labels is not None:
        scores = _label_scores(transform, fixed_labels, moving_labels, labels, percentile, how)
    summary = None if grid is None else jacobian_summary(transform, grid, mask=jacobian_mask)
    return Evaluation(scores, points, summary)
