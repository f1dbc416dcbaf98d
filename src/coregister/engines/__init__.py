"""Registration engines: each turns (fixed, moving, config) into a transform, knowing nothing about files.

Engines are looked up by :class:`~coregister.config.EngineName` through
:func:`get_engine`; modules load on first use.
"""

from __future__ import annotations

import importlib

from coregister.config import EngineName
from coregister.engines.base import Engine, EngineOutput
from coregister.errors import ConfigError

__all__ = ["Engine", "EngineOutput", "get_engine"]

_ENGINES = {
    EngineName.SITK: "coregister.engines.sitk:SitkEngine",
    EngineName.ECC: "coregister.engines.ecc:EccEngine",
    EngineName.OPENCV_ECC: "coregister.engines.opencv_ecc:OpenCvEccEngine",
    EngineName.FEATURES: "coregister.engines.features:FeatureEngine",
    EngineName.PHASE: "coregister.engines.phase:PhaseEngine",
}


def get_engine(name: EngineName | str) -> Engine:
    """Instantiate the engine called ``name``."""
    key = EngineName.parse(name)
    if key not in _ENGINES:
        raise ConfigError(f"engine {key.value!r} is chosen by the fallback chain, not directly; use one of "
                          + ", ".join(e.value for e in _ENGINES))
    module, attr = _ENGINES[key].split(":")
    return getattr(importlib.import_module(module), attr)()
