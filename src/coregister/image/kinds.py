"""The image objects users hold, in and out: SimpleITK images, nibabel images, rioxarray DataArrays, SpatialImages.

:func:`as_spatial_image` takes any of them (what :func:`coregister.register`,
:func:`coregister.apply` and :func:`coregister.geo.coregister` call on their
inputs); :func:`kind_of` names the kind of an object and :func:`to_kind`
converts a :class:`~coregister.SpatialImage` back to a kind, which is what
``like="input"`` does with a result.

Examples
--------
>>> import numpy as np
>>> import SimpleITK as sitk
>>> from coregister import SpatialImage
>>> image = SpatialImage(np.zeros((3, 4), np.float32), origin=(1.0, 2.0), spacing=(0.5, 0.5))
>>> kind_of(image), kind_of(image.to_sitk()), kind_of(image.to_nibabel())
('spatialimage', 'sitk', 'nibabel')
>>> back = to_kind(image, "sitk")
>>> isinstance(back, sitk.Image), back.GetOrigin()
(True, (1.0, 2.0))
>>> as_spatial_image(back, name="fixed").same_geometry(image)
True
"""

from __future__ import annotations

from typing import Any

import SimpleITK as sitk

from coregister.errors import ConfigError
from coregister.image import SpatialImage
from coregister.image._xarray import is_dataarray

__all__ = ["KINDS", "as_spatial_image", "kind_of", "resolve_like", "to_kind"]

#: The kinds :func:`to_kind` makes (``like=`` takes these names, or ``"input"``).
KINDS = ("spatialimage", "sitk", "nibabel", "xarray")


def _is_nibabel(value: Any) -> bool:
    if type(value).__module__.split(".")[0] != "nibabel":
        return False
    import nibabel as nib

    return isinstance(value, nib.spatialimages.SpatialImage)


def kind_of(value: Any) -> str | None:
    """``"spatialimage"``, ``"sitk"``, ``"nibabel"``, ``"xarray"``, or None for anything else (a path...)."""
    if isinstance(value, SpatialImage):
        return "spatialimage"
    if isinstance(value, sitk.Image):
        return "sitk"
    if _is_nibabel(value):
        return "nibabel"
    if is_dataarray(value):
        return "xarray"
    return None


def as_spatial_image(value: Any, *, name: str) -> SpatialImage:
    """``value`` as a :class:`~coregister.SpatialImage` (itself when it is one; no copy where the kind allows).

    Raises
    ------
    ConfigError
        ``value`` is none of the kinds (the message names ``name`` and what to give).
    """
    kind = kind_of(value)
    if kind == "spatialimage":
        return value
    if kind == "sitk":
        return SpatialImage.from_sitk(value)
    if kind == "nibabel":
        return SpatialImage.from_nibabel(value)
    if kind == "xarray":
        return SpatialImage.from_xarray(value)
    raise ConfigError(
        f"{name} is a {type(value).__name__}; give a coregister.SpatialImage (read one with coregister.read(path)), "
        "a SimpleITK.Image, a nibabel image or a rioxarray DataArray"
    )


def resolve_like(like: str | None, example: Any) -> str | None:
    """The kind ``like=`` asks for: ``"input"`` means ``example``'s kind; None keeps a SpatialImage.

    Examples
    --------
    >>> import numpy as np
    >>> resolve_like("input", SpatialImage(np.zeros((2, 2)), origin=(0, 0), spacing=(1, 1)).to_sitk())
    'sitk'
    >>> resolve_like(None, object()) is None
    True
    """
    if like is None:
        return None
    if like == "input":
        return kind_of(example) or "spatialimage"
    if like not in KINDS:
        raise ConfigError(f"like={like!r}: give 'input' (the kind passed in) or one of {', '.join(KINDS)}")
    return like


def to_kind(image: SpatialImage, kind: str | None) -> Any:
    """``image`` converted to ``kind`` (one of :data:`KINDS`; None or ``"spatialimage"``: itself)."""
    if kind in (None, "spatialimage"):
        return image
    if kind == "sitk":
        return image.to_sitk()
    if kind == "nibabel":
        return image.to_nibabel()
    if kind == "xarray":
        return image.to_xarray()
    raise ConfigError(f"unknown kind {kind!r}; choose one of {', '.join(KINDS)}")
