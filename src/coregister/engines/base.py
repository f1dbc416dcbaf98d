"""The small protocol every engine implements, and what an engine hands back.

An engine turns ``(fixed, moving, config)`` into a fixed -> moving transform
and an :class:`EngineOutput`. It knows nothing about files, formats or the
quality check: the pipeline (:mod:`coregister.pipeline`) measures and judges
what it returns.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any, Protocol

import numpy as np

from coregister.config import ProgressCallback, RegistrationConfig
from coregister.image import SpatialImage
from coregister.transforms import Transform

__all__ = ["Engine", "EngineOutput", "LevelHistory"]


@dataclasses.dataclass(frozen=True)
class LevelHistory:
    """Optimiser trace of one pyramid level of one stage.

    Examples
    --------
    >>> LevelHistory("0:rigid", 0, 4.0, 2.0, (-0.2, -0.5, -0.6)).iterations
    3
    """

    stage: str
    level: int
    shrink_factor: float
    smoothing_sigma_mm: float
    metric_values: tuple[float, ...]
    stop_reason: str = ""
    #: metric sample points asked for at this level (None: the engine does not sample, or did not say)
    samples: int | None = None
    #: of those, the points the metric could evaluate at the level's last iteration (inside both images and masks)
    valid_samples: int | None = None

    @property
    def iterations(self) -> int:
        """Number of iterations run at this level."""
        return len(self.metric_values)


@dataclasses.dataclass(frozen=True)
class EngineOutput:
    """What an engine hands back to the pipeline, which adds the metrics, the quality verdict and the fallback.

    Attributes
    ----------
    transform : Transform
        Maps fixed-space points to moving space.
    engine : str
        The engine that produced it (an :class:`~coregister.config.EngineName` value).
    history : tuple of LevelHistory
        Per stage and level, the metric at every iteration.
    warnings : tuple of str
        What the engine noticed on the way (a failed initialisation, an ignored option).
    hit_iteration_cap : bool
        Whether a level stopped at its iteration cap rather than by its own criterion.
    converged : bool
        False when the engine's finest level ended on a failure (a singular
        system, a collapsed overlap): the transform is its last estimate, not
        an answer it stands by.
    final_metric : float
        The optimised metric at the end (NaN when the engine has none).
    extras : mapping
        Engine-specific figures for ``result.json`` (inlier count, reprojection
        error, ECC coefficient, threads...): shown, never read back by callers.
    points_on_edges : bool
        Whether the finest level's metric points were drawn from the fixed
        image's strongest edges only (the SimpleITK engine's
        ``edge_sampling_fraction``): the pipeline refines such an answer
        on points drawn everywhere when the check cannot confirm it.
    """

    transform: Transform
    engine: str
    history: tuple[LevelHistory, ...] = ()
    warnings: tuple[str, ...] = ()
    hit_iteration_cap: bool = False
    converged: bool = True
    final_metric: float = float("nan")
    extras: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    points_on_edges: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "history", tuple(self.history))
        object.__setattr__(self, "warnings", tuple(self.warnings))
        object.__setattr__(self, "extras", MappingProxyType(dict(self.extras)))

    @property
    def iterations(self) -> int:
        """Iterations run over every stage and level.

        Examples
        --------
        >>> from coregister import Translation
        >>> out = EngineOutput(Translation([0.0, 0.0]), "sitk", history=(LevelHistory("0", 0, 2.0, 1.0, (1.0, 2.0)),
        ...                                                               LevelHistory("0", 1, 1.0, 0.0, (3.0,))))
        >>> out.iterations, out.converged
        (3, True)
        """
        return sum(h.iterations for h in self.history)


class Engine(Protocol):
    """An engine: images and config in, a fixed -> moving transform out."""

    name: str

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

        ``fixed_mask``/``moving_mask`` are boolean arrays on the images' grids
        (True = use); engines raise :class:`~coregister.errors.RegistrationFailed`
        only when they cannot produce any transform, and say ``converged=False``
        when they produced one they do not stand by.
        """
        ...
