"""The quality check run after every registration.

It looks at what a registration returned and says whether to trust it:

* the similarity the registration optimised got **worse** than before
  (compared on the fixed mask, from :func:`coregister.qc.metrics.compare`
  figures), or the images barely overlap any more;
* the linear part has a **scale** outside ``scale_range``, a **shear**
  above ``max_shear``, or a **reflection**;
* a B-spline **folds** space: its Jacobian determinant, sampled on the
  fixed grid with ``SimpleITK.DisplacementFieldJacobianDeterminant``, is
  zero or negative somewhere;
* an optimiser level **stopped at its iteration cap** (a warning only: the
  answer may still be good, but it did not converge by its own criterion).

Findings go into :attr:`QualityReport.warnings`; they are logged, never
issued with :func:`warnings.warn`. A failed check is exit code 3 on the
command line.

Transforms map fixed-space points to moving space.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

import numpy as np
import SimpleITK as sitk

from coregister.config import Metric
from coregister.errors import ConfigError
from coregister.image import SpatialImage
from coregister.transforms import BSpline, Composite, LinearTransform, Transform, decompose

__all__ = ["QualityReport", "check", "jacobian_determinant_range", "judged_measure"]

logger = logging.getLogger(__name__)

# which figure of compare() judges a run, and whether higher is better
_MEASURES = {
    Metric.MATTES: ("mi", True),
    Metric.MI: ("mi", True),
    Metric.NCC: ("ncc", True),  # judged on |ncc|: inverted contrast is a match too
    Metric.ECC: ("ncc", True),
    Metric.MSE: ("mse", False),
}
# the Jacobian is sampled on the fixed grid reduced to at most this many points
_JACOBIAN_MAX_POINTS = 2_000_000


@dataclasses.dataclass(frozen=True)
class QualityReport:
    """Outcome of :func:`check`.

    Attributes
    ----------
    passed : bool
        False when a finding makes the answer untrustworthy (command-line
        exit code 3). An iteration cap alone leaves it True.
    warnings : tuple of str
        One sentence per finding, naming the figure and the threshold.
    figures : mapping
        What was measured: ``measure``, ``before``, ``after``, ``scales``,
        ``shears``, ``min_jacobian``, ``overlap``.
    """

    passed: bool
    warnings: tuple[str, ...] = ()
    figures: Mapping[str, Any] = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "warnings", tuple(self.warnings))
        object.__setattr__(self, "figures", MappingProxyType(dict(self.figures)))


def judged_measure(metric: Metric | str | None) -> tuple[str, bool]:
    """The :func:`~coregister.qc.metrics.compare` key that judges a run optimising ``metric``, and whether higher is better.

    Examples
    --------
    >>> judged_measure("mattes"), judged_measure("mse"), judged_measure(None)
    (('mi', True), ('mse', False), ('mi', True))
    """
    if metric is None:
        return _MEASURES[Metric.MATTES]
    return _MEASURES[Metric.parse(metric)]


def _linear_members(transform: Transform) -> list[LinearTransform]:
    if isinstance(transform, LinearTransform):
        return [transform]
    if isinstance(transform, Composite):
        flat = transform.flattened()
        members = flat.transforms if isinstance(flat, Composite) else (flat,)
        return [t for t in members if isinstance(t, LinearTransform)]
    return []


def _bspline_members(transform: Transform) -> list[BSpline]:
    if isinstance(transform, BSpline):
        return [transform]
    if isinstance(transform, Composite):
        return [t for t in transform.transforms if isinstance(t, BSpline)]
    return []


def jacobian_determinant_range(transform: BSpline, reference: SpatialImage) -> tuple[float, float]:
    """Smallest and largest Jacobian determinant of a B-spline on (a reduced copy of) ``reference``'s grid.

    The grid is bin-reduced to at most two million points; a cubic B-spline
    is smooth between its control points, so this misses no folding of a
    mesh coarser than the reduced grid.

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
    size = np.array(reference.size, dtype=float)
    spacing = np.array(reference.spacing, dtype=float)
    factor = max(1.0, (float(np.prod(size)) / _JACOBIAN_MAX_POINTS) ** (1.0 / reference.ndim))
    new_size = [max(2, int(math.ceil(n / factor))) for n in size]
    new_spacing = spacing * (size - 1) / np.maximum(np.array(new_size) - 1, 1)
    field = sitk.TransformToDisplacementField(
        transform.to_sitk(),
        sitk.sitkVectorFloat64,
        new_size,
        reference.origin,
        tuple(float(v) for v in new_spacing),
        tuple(float(v) for v in reference.direction.ravel()),
    )
    det = sitk.GetArrayFromImage(sitk.DisplacementFieldJacobianDeterminant(field))
    return float(det.min()), float(det.max())


def check(
    fixed: SpatialImage,
    moving: SpatialImage,
    transform: Transform,
    before: Mapping[str, float],
    after: Mapping[str, float],
    *,
    metric: Metric | str | None = Metric.MATTES,
    hit_iteration_cap: bool = False,
    scale_range: tuple[float, float] = (0.5, 2.0),
    max_shear: float = 0.3,
    tolerance: float = 0.01,
    min_overlap: float = 0.25,
) -> QualityReport:
    """Judge a registration's answer.

    Parameters
    ----------
    fixed, moving : SpatialImage
        The registered pair (the fixed grid is where a B-spline's Jacobian is
        sampled).
    transform : Transform
        The answer, mapping fixed-space points to moving space.
    before, after : mapping
        :func:`coregister.qc.metrics.compare` figures through the identity and
        through ``transform`` (``ncc``, ``mi``, ``mse``, ``overlap``), on the
        fixed mask.
    metric : Metric or str, optional
        What the registration optimised; it picks the figure that must not
        get worse (``mi`` for Mattes/MI, ``|ncc|`` for NCC and ECC, ``mse``).
    hit_iteration_cap : bool
        Whether any optimiser level stopped at its iteration cap.
    scale_range : (float, float)
        Acceptable scales of the linear part.
    max_shear : float
        Largest acceptable shear term of the linear part.
    tolerance : float
        Relative worsening tolerated before a run counts as worse (rounding
        and interpolation move a perfect start a little).
    min_overlap : float
        Smallest acceptable share of the fixed mask that the moved image covers.

    Returns
    -------
    QualityReport

    Examples
    --------
    >>> import numpy as np
    >>> from coregister import Affine, SpatialImage
    >>> img = SpatialImage(np.zeros((8, 8)), origin=(0, 0), spacing=(1, 1))
    >>> good = check(img, img, Affine(np.eye(2)), {"mi": 0.5}, {"mi": 0.9})
    >>> good.passed, good.warnings
    (True, ())
    >>> bad = check(img, img, Affine(np.diag([3.0, 1.0])), {"mi": 0.5}, {"mi": 0.4})
    >>> bad.passed
    False
    >>> for w in bad.warnings: print(w)
    mi got worse: 0.5 before, 0.4 after
    scale 3 is outside [0.5, 2]
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
        if math.isfinite(b) and math.isfinite(a):
            worse = a < b - tolerance * abs(b) if higher_is_better else a > b + tolerance * abs(b)
            if worse:
                label = "|ncc|" if key == "ncc" else key
                findings.append(f"{label} got worse: {b:.4g} before, {a:.4g} after")
        elif not math.isfinite(a):
            findings.append(f"{key} after registration is {a}: the images do not overlap through this transform")
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
    for member in _linear_members(transform):
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

    splines = _bspline_members(transform)
    if splines:
        low = min(jacobian_determinant_range(s, fixed)[0] for s in splines)
        figures["min_jacobian"] = low
        if low <= 0:
            findings.append(f"the B-spline folds space: Jacobian determinant down to {low:.3g} (must stay > 0)")

    if hit_iteration_cap:
        notes.append("an optimiser level stopped at its iteration cap: it may not have converged (raise iterations)")
    figures["hit_iteration_cap"] = bool(hit_iteration_cap)

    for message in findings:
        logger.warning("quality check: %s", message)
    for message in notes:
        logger.info("quality check: %s", message)
    return QualityReport(passed=not findings, warnings=(*findings, *notes), figures=figures)
