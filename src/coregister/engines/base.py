"""The small protocol every engine implements."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any, Protocol

import numpy as np

from coregister.config import ProgressCallback, RegistrationConfig
from coregister.image import SpatialImage
from coregister.result import LevelHistory
from coregister.transforms import Transform

__all__ = ["Engine", "EngineOutput"]


@dataclasses.dataclass(frozen=True)
class EngineOutput:
    """What an engine hands back to :func:`coregister.register`, which adds metrics and the quality check."""

    transform: Transform
    engine: str
    history: tuple[LevelHistory, ...] = ()
    warnings: tuple[str, ...] = ()
    hit_iteration_cap: bool = False
    extras: Mapping[str, Any] = dataclasses.field(default_factory=dict)


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
        only when they cannot produce any transform.
        """
        ...
