"""JSON forms of the result types: values made plain, and ``to_json``/``save_json`` from a ``to_dict``.

At the bottom of the package beside :mod:`coregister._files`: the pipeline's
:class:`~coregister.pipeline.result.Result` and the geo workflows'
:class:`~coregister.geo.result.GeoResult` share it.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from coregister._files import atomic_path

__all__ = ["JsonMethods", "plain"]


class JsonMethods:
    """``to_json`` and ``save_json`` of a result type, from its ``to_dict``."""

    def to_dict(self) -> dict[str, Any]:
        raise NotImplementedError

    def to_json(self, **kwargs: Any) -> str:
        """JSON text of :meth:`to_dict`."""
        return json.dumps(self.to_dict(), **kwargs)

    def save_json(self, path: str | os.PathLike[str]) -> Path:
        """Write :meth:`to_json` atomically to ``path``."""
        path = Path(path)
        with atomic_path(path) as tmp:
            tmp.write_text(self.to_json(indent=2))
        return path


def plain(value: Any, *, nan_to_none: bool = False) -> Any:
    """``value`` made JSON-ready, for the results' ``to_dict``.

    Mappings become dicts with string keys, sequences lists, numpy values,
    enums and paths Python ones; with ``nan_to_none``, NaN and infinities
    become ``None`` (strict JSON, as the geo results write).

    Examples
    --------
    >>> plain({1: (np.float32(0.5), np.array([np.nan])), "path": Path("a.tif")})
    {'1': [0.5, [nan]], 'path': 'a.tif'}
    >>> plain([np.inf, 2.0], nan_to_none=True)
    [None, 2.0]
    """
    from enum import Enum

    if isinstance(value, Mapping):
        return {str(k): plain(v, nan_to_none=nan_to_none) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [plain(v, nan_to_none=nan_to_none) for v in value]
    if isinstance(value, np.ndarray | np.generic):
        return plain(value.tolist(), nan_to_none=nan_to_none)
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, Enum):
        return value.value
    if nan_to_none and isinstance(value, float) and not math.isfinite(value):
        return None
    return value
