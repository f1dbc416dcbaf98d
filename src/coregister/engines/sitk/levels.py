"""The pyramid levels of a stage, and the iterations and sample points of each level.

* **Levels** are chosen from the image size and spacing when the stage
  leaves ``shrink_factors`` as None (:func:`plan_levels`): factors 1, 2, 4,
  ... while the smallest axis keeps enough voxels, per axis so that
  anisotropic voxels become closer to isotropic.
* **Sample points.** Each level uses ``max_samples`` random points
  (``coarse_max_samples`` on the levels before the stage's finest, when set;
  all voxels when the level has fewer): :func:`samples_wanted`.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

from coregister.config import Metric, Optimizer, Stage, TransformModel
from coregister.errors import ConfigError

__all__ = ["LevelPlan", "axis_factors", "iterations_per_level", "normalised", "plan_levels", "samples_wanted"]

# smallest number of voxels (pixels) along any axis at the coarsest automatic level (3D: 12, so that a 3 mm
# head still gets a 12 mm level, where an affine catches a 1.2x scale; with 16 it settled at 0.89)
_MIN_COARSE_VOXELS = {2: 32, 3: 12}
# coarsest automatic shrink factor
_MAX_AUTO_FACTOR = 8
# sampling points below which a level simply uses every voxel of its region
_MIN_SAMPLES = 256


@dataclasses.dataclass(frozen=True)
class LevelPlan:
    """One pyramid level: per-axis shrink factors (ITK order ``x, y[, z]``) and extra smoothing."""

    factors: tuple[int, ...]
    sigma_mm: float

    @property
    def nominal_factor(self) -> int:
        """The largest per-axis factor (what the history reports)."""
        return max(self.factors)


def axis_factors(nominal: int, size: Sequence[int], spacing: Sequence[float]) -> tuple[int, ...]:
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
        LevelPlan(axis_factors(f, size, spacing), s) for f, s in zip(nominal, sigmas, strict=True)
    )


def normalised(stage: Stage) -> Stage:
    """Enum fields parsed from strings (``Stage(model="rigid")`` is accepted)."""
    return stage.replace(
        model=TransformModel.parse(stage.model),
        metric=Metric.parse(stage.metric),
        optimizer=Optimizer.parse(stage.optimizer),
    )


def iterations_per_level(stage: Stage, n_levels: int) -> tuple[int, ...]:
    """The iteration cap of each of the stage's ``n_levels`` levels."""
    given = stage.iterations_per_level
    if given is None:
        return (int(stage.iterations),) * n_levels
    given = tuple(int(v) for v in given)
    if len(given) != n_levels or min(given) < 1:
        raise ConfigError(
            f"iterations_per_level {given} must give one positive count per level ({n_levels} levels)"
        )
    return given


def samples_wanted(stage: Stage, n_region: int, *, final: bool) -> int:
    """Sample points for a level with ``n_region`` usable voxels (``n_region`` or more means all of them)."""
    if not final and stage.coarse_max_samples is not None:
        wanted = int(stage.coarse_max_samples)
    elif stage.max_samples is not None:
        wanted = int(stage.max_samples)
    else:
        wanted = int(math.ceil(stage.sampling_fraction * n_region))
    return max(_MIN_SAMPLES, wanted)
