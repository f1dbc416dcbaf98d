"""Geospatial workflows: coregistration of rasters (shift, affine, local), change maps, georeferencing.

>>> from coregister import geo
>>> sorted(name for name in geo.__all__ if not name[0].isupper())
['change', 'coregister', 'georeference']

Every function takes paths (read window by window, so whole scenes stay in
bounded memory) or :class:`~coregister.SpatialImage` values, and returns a
:class:`GeoResult` with the quality verdict on its answer. The options of a
coregistration are one frozen :class:`CoregOptions` value (or the same
names as keywords). Corrections are reported as the correction applied to
the target: in reference pixels (columns, rows counted downwards) and in map
units of the reference CRS (x east, y north).
"""

from __future__ import annotations

from coregister.geo.change_map import change
from coregister.geo.coreg import coregister
from coregister.geo.georef import georeference
from coregister.geo.options import CoregOptions, Field, Interpolation, Mode
from coregister.geo.result import GeoResult, WindowMatch

__all__ = ["CoregOptions", "Field", "GeoResult", "Interpolation", "Mode", "WindowMatch", "change", "coregister", "georeference"]
