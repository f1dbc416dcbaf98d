"""Overlap of label maps on one grid: Dice and Jaccard per label, and surface distances (the Hausdorff distance, HD95).

Label maps compared here lie on one grid: resample the moving labels onto
the fixed grid first with ``coregister.apply(..., interpolation="nearest")``
(:func:`coregister.medical.evaluate` does). 0 is background.
Surface distances run between voxel centres in world units (mm for medical
images) through SimpleITK's exact Euclidean distance maps.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

from coregister.errors import GeometryError
from coregister.image import SpatialImage

__all__ = ["dice", "dice_per_label", "hausdorff_per_label", "jaccard_per_label", "overlap_scores", "surface_distances"]


def _as_array(value: Any) -> np.ndarray:
    return value.array if isinstance(value, SpatialImage) else np.asarray(value)


def integer_labels(values: np.ndarray) -> np.ndarray:
    """A label map's values as int64; refuses floats that are not whole numbers (an intensity image, or labels resampled linearly)."""
    if values.dtype == np.bool_:
        return values.astype(np.int64)
    if values.dtype.kind == "f":
        if not np.all(np.isfinite(values)) or not np.array_equal(values, np.rint(values)):
            raise GeometryError("label maps must hold integer values; resample labels with interpolation='nearest'")
    return values.astype(np.int64)


def _label_counts(labels_a: Any, labels_b: Any, labels: Any) -> dict[int, tuple[int, int, int]]:
    """``label -> (|A|, |B|, |A ∩ B|)`` voxel counts of each chosen label (default: every non-zero label in either map)."""
    if isinstance(labels_a, SpatialImage) and isinstance(labels_b, SpatialImage) and not labels_a.same_geometry(labels_b):
        raise GeometryError("the label maps lie on different grids; resample one onto the other with interpolation='nearest'")
    a, b = _as_array(labels_a), _as_array(labels_b)
    if a.shape != b.shape:
        raise GeometryError(f"label maps of shapes {a.shape} and {b.shape} differ; resample one onto the other's grid")
    a, b = integer_labels(a).ravel(), integer_labels(b).ravel()
    low = min(int(a.min(initial=0)), int(b.min(initial=0)))
    a, b = a - low, b - low  # bincount needs non-negative values
    size = int(max(a.max(initial=0), b.max(initial=0))) + 1
    count_a = np.bincount(a, minlength=size)
    count_b = np.bincount(b, minlength=size)
    overlap = np.bincount(a[a == b], minlength=size)
    if labels is None:
        chosen = [int(v) + low for v in np.flatnonzero((count_a + count_b) > 0) if int(v) + low != 0]
    else:
        chosen = [int(v) for v in labels]
    out = {}
    for label in chosen:
        i = label - low
        inside = 0 <= i < size
        out[label] = (int(count_a[i]), int(count_b[i]), int(overlap[i])) if inside else (0, 0, 0)
    return out


def _dice(count_a: int, count_b: int, overlap: int) -> float:
    return float(2.0 * overlap / (count_a + count_b)) if count_a + count_b else 0.0


def _jaccard(count_a: int, count_b: int, overlap: int) -> float:
    return float(overlap / (count_a + count_b - overlap)) if count_a + count_b else 0.0


def dice_per_label(labels_a: Any, labels_b: Any, *, labels: Any = None) -> dict[int, float]:
    """Dice coefficient ``2 |A ∩ B| / (|A| + |B|)`` of each label of two label maps on one grid.

    Parameters
    ----------
    labels_a, labels_b : ndarray or SpatialImage
        Integer (or integer-valued float, or boolean) label maps of the same
        shape; 0 is background.
    labels : sequence of int, optional
        Labels to score (default: every non-zero label in either map).

    Examples
    --------
    >>> import numpy as np
    >>> a = np.array([0, 1, 1, 2, 2]); b = np.array([0, 1, 2, 2, 2])
    >>> {k: round(v, 4) for k, v in dice_per_label(a, b).items()}
    {1: 0.6667, 2: 0.8}
    """
    return {label: _dice(*counts) for label, counts in _label_counts(labels_a, labels_b, labels).items()}


def jaccard_per_label(labels_a: Any, labels_b: Any, *, labels: Any = None) -> dict[int, float]:
    """Jaccard index ``|A ∩ B| / |A ∪ B|`` of each label of two label maps on one grid (as :func:`dice_per_label`).

    Examples
    --------
    >>> import numpy as np
    >>> a = np.array([0, 1, 1, 2, 2]); b = np.array([0, 1, 2, 2, 2])
    >>> {k: round(v, 4) for k, v in jaccard_per_label(a, b).items()}
    {1: 0.5, 2: 0.6667}
    """
    return {label: _jaccard(*counts) for label, counts in _label_counts(labels_a, labels_b, labels).items()}


def dice(labels_a: Any, labels_b: Any, *, labels: Any = None) -> float:
    """Mean Dice coefficient over the labels of two label maps (a single Dice for binary masks).

    Examples
    --------
    >>> import numpy as np
    >>> dice(np.array([0, 1, 1, 0], bool), np.array([0, 1, 0, 0], bool))
    0.6666666666666666
    """
    scores = dice_per_label(labels_a, labels_b, labels=labels)
    return float(np.mean(list(scores.values()))) if scores else 0.0


# --------------------------------------------------------------------------- surface distances


def _spacing_of(value: Any, ndim: int) -> tuple[float, ...]:
    return tuple(float(v) for v in value.spacing) if isinstance(value, SpatialImage) else (1.0,) * ndim


def _surface(mask: np.ndarray, spacing: tuple[float, ...]) -> sitk.Image:
    """The voxels of ``mask`` with a face neighbour outside it (SimpleITK's label contour), as a 0/1 image."""
    image = sitk.GetImageFromArray(mask.astype(np.uint8))
    image.SetSpacing(spacing)
    return sitk.LabelContour(image, fullyConnected=False, backgroundValue=0)


def _distance_to(surface: sitk.Image) -> np.ndarray:
    """World distance (spacing applied) from every voxel centre to the nearest voxel of ``surface`` (0 on it)."""
    distance = sitk.SignedMaurerDistanceMap(surface, insideIsPositive=False, squaredDistance=False, useImageSpacing=True,
                                            backgroundValue=0)
    return np.maximum(sitk.GetArrayViewFromImage(distance), 0.0)


def surface_distances(mask_a: np.ndarray, mask_b: np.ndarray, spacing: tuple[float, ...]) -> tuple[np.ndarray, np.ndarray]:
    """Distances from each surface voxel of ``mask_a`` to the surface of ``mask_b``, and from ``b``'s to ``a``'s.

    A surface voxel is a voxel of the mask with a face neighbour outside it
    (the grid's edge counts as outside); distances run between voxel centres,
    in world units (``spacing``, ITK order ``(x, y[, z])``), through
    SimpleITK's exact Euclidean distance map (Maurer). Either mask empty:
    two empty arrays.

    Examples
    --------
    >>> a = np.zeros((1, 7), bool); a[0, 1:3] = True
    >>> b = np.zeros((1, 7), bool); b[0, 4:6] = True
    >>> [d.tolist() for d in surface_distances(a, b, (0.5, 1.0))]
    [[1.5, 1.0], [1.0, 1.5]]
    """
    if not mask_a.any() or not mask_b.any():
        return np.zeros(0), np.zeros(0)
    pad = [(1, 1)] * mask_a.ndim  # so that a label touching the grid's edge has a surface there
    surface_a = _surface(np.pad(mask_a, pad), spacing)
    surface_b = _surface(np.pad(mask_b, pad), spacing)
    on_a = sitk.GetArrayViewFromImage(surface_a) > 0
    on_b = sitk.GetArrayViewFromImage(surface_b) > 0
    return _distance_to(surface_b)[on_a], _distance_to(surface_a)[on_b]


def _boxes(values: np.ndarray, low: int) -> list[tuple[slice, ...] | None]:
    """The bounding box of each label (index ``label - low + 1``) of an integer label map."""
    return list(ndimage.find_objects((values - (low - 1)).astype(np.int64, copy=False)))


def _union_box(box_a: tuple[slice, ...] | None, box_b: tuple[slice, ...] | None) -> tuple[slice, ...]:
    boxes = [b for b in (box_a, box_b) if b is not None]
    return tuple(slice(min(b[k].start for b in boxes), max(b[k].stop for b in boxes)) for k in range(len(boxes[0])))


def hausdorff_per_label(labels_a: Any, labels_b: Any, *, labels: Any = None, percentile: float = 95.0) -> dict[int, float]:
    """The ``percentile`` Hausdorff distance (world units: mm) of each label of two label maps on one grid.

    For each label, the distances from every surface voxel of one map's
    region to the other's surface, both ways (:func:`surface_distances`,
    SimpleITK distance maps, each label cropped to its bounding box); the
    score is the larger of the two directions' ``percentile`` (95: HD95, as
    Learn2Reg and MONAI report it; 100: the Hausdorff distance). NaN where
    the label is absent from either map.

    Parameters
    ----------
    labels_a, labels_b : SpatialImage or ndarray
        Label maps on one grid (arrays: spacing 1).
    labels : sequence of int, optional
        Labels to score (default: every non-zero label in either map).
    percentile : float
        0 to 100.

    Examples
    --------
    >>> a = np.zeros((1, 9), np.uint8); a[0, 1:4] = 1; a[0, 6:8] = 2
    >>> b = np.zeros((1, 9), np.uint8); b[0, 2:5] = 1
    >>> hausdorff_per_label(a, b, percentile=100.0)
    {1: 1.0, 2: nan}
    """
    counts = _label_counts(labels_a, labels_b, labels)
    a, b = integer_labels(_as_array(labels_a)), integer_labels(_as_array(labels_b))
    return _hausdorff(a, b, counts, _spacing_of(labels_a, a.ndim), percentile)


def _hausdorff(
    a: np.ndarray, b: np.ndarray, counts: dict[int, tuple[int, int, int]], spacing: tuple[float, ...], percentile: float
) -> dict[int, float]:
    low = min(int(a.min(initial=0)), int(b.min(initial=0)))
    boxes_a, boxes_b = _boxes(a, low), _boxes(b, low)
    out = {}
    for label, (count_a, count_b, _) in counts.items():
        if not (count_a and count_b):
            out[label] = float("nan")
            continue
        box = _union_box(boxes_a[label - low], boxes_b[label - low])
        to_b, to_a = surface_distances(a[box] == label, b[box] == label, spacing)
        out[label] = float(max(np.percentile(to_b, percentile), np.percentile(to_a, percentile)))
    return out


def overlap_scores(
    labels_a: Any, labels_b: Any, *, labels: Any = None, percentile: float = 95.0
) -> dict[int, tuple[float, float, float, int, int]]:
    """``label -> (dice, jaccard, hausdorff, voxels in a, voxels in b)`` of two label maps on one grid, counted once.

    The same numbers as :func:`dice_per_label`, :func:`jaccard_per_label`
    and :func:`hausdorff_per_label` (``percentile``), for the price of one
    pass over the maps.

    Examples
    --------
    >>> a = np.zeros((1, 9), np.uint8); a[0, 1:4] = 1
    >>> b = np.zeros((1, 9), np.uint8); b[0, 2:5] = 1
    >>> overlap_scores(a, b, percentile=100.0)
    {1: (0.6666666666666666, 0.5, 1.0, 3, 3)}
    """
    counts = _label_counts(labels_a, labels_b, labels)
    a, b = integer_labels(_as_array(labels_a)), integer_labels(_as_array(labels_b))
    distances = _hausdorff(a, b, counts, _spacing_of(labels_a, a.ndim), percentile)
    return {label: (_dice(*n), _jaccard(*n), distances[label], n[0], n[1]) for label, n in counts.items()}
