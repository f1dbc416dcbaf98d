"""How a geospatial coregistration runs: one frozen :class:`CoregOptions` value, and the enums of its choices.

:func:`coregister.geo.coregister` and :func:`coregister.geo.change` take the
same options, as a value (``options=CoregOptions(...)``) or as keywords
(``mode="local"``), both read by :func:`coreg_options`; the command line's
``--mode``, ``--field`` and ``--interpolation`` choices come from these enums.

>>> options = CoregOptions(mode="local", window_px=128)
>>> options.mode, options.field, options.window_px
(<Mode.LOCAL: 'local'>, <Field.SMOOTH: 'smooth'>, 128)
>>> coreg_options(options, grid_spacing_px=64).grid_spacing_px
64
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import numbers
import os
from typing import Any

from coregister.config import _StrEnum
from coregister.errors import ConfigError
from coregister.image import SpatialImage

__all__ = ["CoregOptions", "Field", "Interpolation", "Mode", "coreg_options"]


class Mode(_StrEnum):
    """What correction :func:`coregister.geo.coregister` finds (``mode=``, the command line's ``--mode``)."""

    SHIFT = "shift"  #: one global sub-pixel shift (phase correlation in windows over the overlap)
    AFFINE = "affine"  #: a global affine (Mattes mutual information registration, started from the shift)
    LOCAL = "local"  #: a grid of tie points and a displacement field through them


class Field(_StrEnum):
    """The displacement field of ``mode="local"`` (``field=``, the command line's ``--field``)."""

    SMOOTH = "smooth"  #: thin-plate spline through the kept tie points
    POLYNOMIAL = "polynomial"  #: a polynomial of ``polynomial_order`` (1-3), least squares


class Interpolation(_StrEnum):
    """The kernel that resamples the target (``interpolation=``, the command line's ``--interpolation``)."""

    CUBIC = "cubic"  #: cubic B-spline (intensities)
    LINEAR = "linear"
    NEAREST = "nearest"  #: class (palette) rasters

    @property
    def order(self) -> int:
        """Spline order of the kernel (3, 1, 0).

        >>> Interpolation.parse("Linear").order
        1
        """
        return {"cubic": 3, "linear": 1, "nearest": 0}[self.value]


#: A raster as the geo workflows take it: a path, a :class:`~coregister.SpatialImage`, or a rioxarray
#: DataArray (read window by window); typed loosely since xarray is optional.
Source = Any


@dataclasses.dataclass(frozen=True)
class CoregOptions:
    """Every option of a geospatial coregistration (see :func:`coregister.geo.coregister` for each one's meaning).

    Strings are accepted for the enum fields (``mode="local"``) and parsed;
    an invalid value raises :class:`~coregister.errors.ConfigError` naming it
    and the choices.

    Attributes
    ----------
    mode : Mode
        ``shift``, ``affine`` or ``local``.
    reference_band, target_band : int
        Bands matched, counted from 1.
    nodata, target_nodata : float, optional
        Nodata values overriding what the files declare.
    reference_mask, target_mask : path or SpatialImage, optional
        Bad-data masks (nonzero = do not use).
    window_px : int
        Side of the matching windows (reference pixels, at least 32).
    max_windows : int
        ``shift``/``affine``: windows tried.
    grid_spacing_px : int
        ``local``: distance between tie points.
    min_reliability : float
        Windows below this phase-correlation reliability (0-1) are rejected.
    max_shift_px : float
        Corrections longer than this are rejected.
    outlier_px : float
        ``shift``: distance from the windows' median beyond which a window is
        an outlier; ``local``: RANSAC residual threshold.
    field : Field
        ``local``: ``smooth`` or ``polynomial``.
    polynomial_order : int
        Order (1-3) of the polynomial field.
    resample : bool
        ``shift``: resample onto the reference grid instead of moving the geotransform.
    interpolation : Interpolation, optional
        Resampling kernel; None: cubic (nearest for palette rasters when coregistering).
    cog : bool
        Write a Cloud-Optimised GeoTIFF.
    seed : int
        Seed of RANSAC.

    Examples
    --------
    >>> CoregOptions(field="Polynomial", polynomial_order=2).field
    <Field.POLYNOMIAL: 'polynomial'>
    >>> CoregOptions(mode="elastic")
    Traceback (most recent call last):
    ...
    coregister.errors.ConfigError: 'elastic' is not a valid mode; choose one of: shift, affine, local
    """

    mode: Mode = Mode.SHIFT
    reference_band: int = 1
    target_band: int = 1
    nodata: float | None = None
    target_nodata: float | None = None
    reference_mask: Source | None = None
    target_mask: Source | None = None
    window_px: int = 256
    max_windows: int = 49
    grid_spacing_px: int = 100
    min_reliability: float = 0.3
    max_shift_px: float = 20.0
    outlier_px: float = 0.5
    field: Field = Field.SMOOTH
    polynomial_order: int = 1
    resample: bool = False
    interpolation: Interpolation | None = None
    cog: bool = False
    seed: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "mode", Mode.parse(self.mode))
        object.__setattr__(self, "field", Field.parse(self.field))
        if self.interpolation is not None:
            object.__setattr__(self, "interpolation", Interpolation.parse(self.interpolation))
        for name, low in (("reference_band", 1), ("target_band", 1), ("max_windows", 1), ("grid_spacing_px", 1)):
            object.__setattr__(self, name, _whole(name, getattr(self, name), low))
        object.__setattr__(self, "window_px", _whole("window_px", self.window_px, 32,
                                                     fix="too small for sub-pixel matching; use 64 or more (default 256)"))
        if self.polynomial_order not in (1, 2, 3):
            raise ConfigError(f"polynomial_order={self.polynomial_order!r}: choose a polynomial order of 1, 2 or 3")
        if not 0.0 <= float(self.min_reliability) <= 1.0:
            raise ConfigError(f"min_reliability={self.min_reliability!r}: give a reliability between 0 and 1 (default 0.3)")
        for name in ("max_shift_px", "outlier_px"):
            value = float(getattr(self, name))
            if not (value > 0 and math.isfinite(value)):
                raise ConfigError(f"{name}={getattr(self, name)!r}: give a positive distance in reference pixels")

    def replace(self, **changes: Any) -> CoregOptions:
        """A copy with some options replaced (checked as the constructor checks them)."""
        _check_names(changes)
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form: enums as their values, masks as their paths (``"in-memory"`` for an image).

        >>> CoregOptions(mode="local").to_dict()["mode"]
        'local'
        """
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if isinstance(value, _StrEnum):
                value = value.value
            elif isinstance(value, SpatialImage):
                value = str(value.meta.get("source_path") or "in-memory")
            elif value is not None and not isinstance(value, str | os.PathLike | bool | int | float):
                value = "in-memory"  # a DataArray mask
            elif isinstance(value, os.PathLike):
                value = os.fspath(value)
            out[f.name] = value
        return out


def _whole(name: str, value: Any, low: int, *, fix: str | None = None) -> int:
    """``value`` as an int when it is a whole number of at least ``low``; a ConfigError naming it otherwise."""
    whole = isinstance(value, numbers.Integral) or (isinstance(value, float) and value.is_integer())
    if isinstance(value, bool) or not whole or value < low:
        raise ConfigError(f"{name}={value!r}: " + (fix or f"give a whole number of at least {low}"))
    return int(value)


_NAMES = tuple(f.name for f in dataclasses.fields(CoregOptions))


def _check_names(keywords: dict[str, Any]) -> None:
    for name in keywords:
        if name not in _NAMES:
            near = difflib.get_close_matches(name, _NAMES, n=1)
            hint = f"did you mean {near[0]!r}? " if near else ""
            raise ConfigError(f"{name!r} is not a coregistration option; {hint}the options are: {', '.join(_NAMES)}")


def coreg_options(options: CoregOptions | None = None, /, **keywords: Any) -> CoregOptions:
    """The options of a run: ``options`` (default :class:`CoregOptions`) with ``keywords`` replacing its fields.

    The one place :func:`coregister.geo.coregister` and :func:`coregister.geo.change`
    read their keyword options.

    Examples
    --------
    >>> coreg_options(mode="local", field="polynomial").field.value
    'polynomial'
    >>> coreg_options(window=128)
    Traceback (most recent call last):
    ...
    coregister.errors.ConfigError: 'window' is not a coregistration option; did you mean 'window_px'? ...
    """
    if options is not None and not isinstance(options, CoregOptions):
        raise ConfigError(f"options is a {type(options).__name__}; give a coregister.geo.CoregOptions")
    return (options or CoregOptions()).replace(**keywords) if keywords else (options or CoregOptions())
