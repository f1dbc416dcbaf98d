"""The one result type every registration returns."""

from __future__ import annotations

import dataclasses
import json
import math
import os
from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Any

from coregister.transforms import Transform

__all__ = ["LevelHistory", "Result"]


class _JsonMethods:
    """``to_json`` and ``save_json`` of a result type, from its ``to_dict``."""

    def to_dict(self) -> dict[str, Any]:
        raise NotImplementedError

    def to_json(self, **kwargs: Any) -> str:
        """JSON text of :meth:`to_dict`."""
        return json.dumps(self.to_dict(), **kwargs)

    def save_json(self, path: str | os.PathLike[str]) -> Path:
        """Write :meth:`to_json` atomically to ``path``."""
        from coregister.io._atomic import atomic_path

        path = Path(path)
        with atomic_path(path) as tmp:
            tmp.write_text(self.to_json(indent=2))
        return path


@dataclasses.dataclass(frozen=True)
class LevelHistory:
    """Optimiser trace of one pyramid level of one stage."""

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
class Result(_JsonMethods):
    """What :func:`coregister.register` returns, whatever the engine.

    Attributes
    ----------
    transform : Transform
        Maps fixed-space points to moving space (resample the moving image
        onto the fixed grid with :func:`coregister.apply`).
    metrics : mapping
        ``{"before": {...}, "after": {...}}`` with ``ncc``, ``mi``, ``mse``
        (and ``tre``/``dice`` when landmarks or labels were given).
    history : tuple of LevelHistory
        Per stage and level, the metric at every iteration.
    time_s : float
        Wall time of the registration itself (reading and writing excluded).
    engine : str
        The engine that produced the answer (``sitk``, ``ecc``, ``opencv-ecc``,
        ``features``, ``phase``).
    warnings : tuple of str
        Quality-check findings and fallbacks; empty when all is well.
    passed : bool
        False when the quality check failed (command-line exit code 3).
    seed, threads : int
        What decided the outcome besides the images and config.
    config : mapping
        The configuration that ran, as plain data.
    extras : mapping
        Engine-specific figures (inlier count, reprojection error, windows...).
    """

    transform: Transform
    metrics: Mapping[str, Mapping[str, float]]
    history: tuple[LevelHistory, ...] = ()
    time_s: float = 0.0
    engine: str = ""
    warnings: tuple[str, ...] = ()
    passed: bool = True
    seed: int = 0
    threads: int = 1
    config: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    extras: Mapping[str, Any] = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "metrics", MappingProxyType({k: dict(v) for k, v in self.metrics.items()}))
        object.__setattr__(self, "history", tuple(self.history))
        object.__setattr__(self, "warnings", tuple(self.warnings))
        object.__setattr__(self, "config", MappingProxyType(dict(self.config)))
        object.__setattr__(self, "extras", MappingProxyType(dict(self.extras)))

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form: transform (with its world matrix and decomposition), metrics, history, provenance."""
        return {
            "engine": self.engine,
            "passed": self.passed,
            "warnings": list(self.warnings),
            "time_s": self.time_s,
            "seed": self.seed,
            "threads": self.threads,
            "metrics": {k: dict(v) for k, v in self.metrics.items()},
            "transform": self.transform.to_dict(),
            "history": [
                {**dataclasses.asdict(h), "metric_values": list(h.metric_values), "iterations": h.iterations}
                for h in self.history
            ],
            "config": _plain(self.config),
            "extras": _plain(self.extras),
        }


def _plain(value: Any, *, nan_to_none: bool = False) -> Any:
    """``value`` made JSON-ready, for the results' ``to_dict``.

    Mappings become dicts with string keys, sequences lists, numpy values and
    paths Python ones; with ``nan_to_none``, NaN and infinities become
    ``None`` (strict JSON, as the geo results write).

    Examples
    --------
    >>> import numpy as np
    >>> _plain({1: (np.float32(0.5), np.array([np.nan])), "path": Path("a.tif")})
    {'1': [0.5, [nan]], 'path': 'a.tif'}
    >>> _plain([np.inf, 2.0], nan_to_none=True)
    [None, 2.0]
    """
    import numpy as np

    if isinstance(value, Mapping):
        return {str(k): _plain(v, nan_to_none=nan_to_none) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v, nan_to_none=nan_to_none) for v in value]
    if isinstance(value, np.ndarray | np.generic):
        return _plain(value.tolist(), nan_to_none=nan_to_none)
    if isinstance(value, Path):
        return str(value)
    if nan_to_none and isinstance(value, float) and not math.isfinite(value):
        return None
    return value
