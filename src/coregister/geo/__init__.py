"""Geospatial workflows: coregistration of rasters (shift, affine, local), change maps, georeferencing.

>>> from coregister import geo
>>> sorted(name for name in geo.__all__ if not name[0].isupper())
['change', 'coregister', 'georeference']

Every function takes paths (read window by window, so whole scenes stay in
bounded memory) or :class:`~coregister.SpatialImage` values, and returns a
:class:`GeoResult`. Corrections are reported as the correction applied to
the target: in reference pixels (columns, rows counted downwards) and in map
units of the reference CRS (x east, y north).
"""

from __future__ import annotations

import importlib
from typing import Any

from coregister.geo.coreg import coregister
from coregister.geo.result import GeoResult, WindowMatch

__all__ = ["GeoResult", "WindowMatch", "change", "coregister", "georeference"]

_LAZY = {"change": "coregister.geo.change", "georeference": "coregister.geo.georef"}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'coregister.geo' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
