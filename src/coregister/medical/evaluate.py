"""Accuracy of a registration against known correspondences: landmark errors (TRE) and label overlap (Dice).

These answer "how right is the transform?" where the truth is known from
outside the images: corresponding landmarks picked on both images (target
registration error, in world units: mm for medical volumes) and label maps
(segmentations) carried through the transform (Dice overlap per label).
The similarity measures a registration optimises and judges itself by live
in :mod:`coregister.measures`.

Transforms map fixed-space points to moving space (DESIGN convention 3):
corresponding landmarks ``(p_fixed, p_moving)`` of a perfect registration
satisfy ``transform(p_fixed) == p_moving``. Label maps compared by Dice lie on
one grid: resample the moving labels onto the fixed grid first with
``coregister.apply(..., interpolation="nearest")``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from coregister.errors import GeometryError
from coregister.image import SpatialImage
from coregister.resample import transform_points
from coregister.transforms import Transform

__all__ = ["dice", "dice_per_label", "landmark_errors", "tre"]


def _as_array(value: Any) -> np.ndarray:
    return value.array if isinstance(value, SpatialImage) else np.asarray(value)


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


def _integer_labels(values: np.ndarray) -> np.ndarray:
    if values.dtype == np.bool_:
        return values.astype(np.int64)
    if values.dtype.kind == "f":
        if not np.all(np.isfinite(values)) or not np.array_equal(values, np.rint(values)):
            raise GeometryError("label maps must hold integer values; resample labels with interpolation='nearest'")
    return values.astype(np.int64)


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
    if isinstance(labels_a, SpatialImage) and isinstance(labels_b, SpatialImage) and not labels_a.same_geometry(labels_b):
        raise GeometryError("the label maps lie on different grids; resample one onto the other with interpolation='nearest'")
    a, b = _as_array(labels_a), _as_array(labels_b)
    if a.shape != b.shape:
        raise GeometryError(f"label maps of shapes {a.shape} and {b.shape} differ; resample one onto the other's grid")
    a, b = _integer_labels(a).ravel(), _integer_labels(b).ravel()
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
        total = (count_a[i] + count_b[i]) if 0 <= i < size else 0
        out[label] = float(2.0 * overlap[i] / total) if total else 0.0
    return out


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
