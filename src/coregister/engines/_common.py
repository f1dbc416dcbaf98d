"""What several engines need alike: image centres, grey images, validity masks, pixel-grid matrices in world space."""

from __future__ import annotations

import numpy as np

from coregister.errors import GeometryError
from coregister.image import SpatialImage
from coregister.preprocess import luminance_if_colour

__all__ = ["grey_pair", "is_conformal", "valid_pixels", "world_centre", "world_from_pixel"]


def world_centre(image: SpatialImage) -> np.ndarray:
    """World coordinates of the image's centre (the middle of its pixel centres).

    Examples
    --------
    >>> world_centre(SpatialImage(np.zeros((3, 5)), origin=(10.0, 0.0), spacing=(2.0, 1.0))).tolist()
    [14.0, 1.0]
    """
    return image.index_to_world([[(n - 1) / 2.0 for n in image.size]])[0]


def grey_pair(fixed: SpatialImage, moving: SpatialImage) -> tuple[SpatialImage, SpatialImage, list[str]]:
    """``(fixed, moving, warnings)``: multi-channel images replaced by their luminance, each replacement noted."""
    warnings: list[str] = []
    fixed, note = luminance_if_colour(fixed)
    if note:
        warnings.append("fixed: " + note)
    moving, note = luminance_if_colour(moving)
    if note:
        warnings.append("moving: " + note)
    return fixed, moving, warnings


def valid_pixels(image: SpatialImage, mask: np.ndarray | None, name: str = "mask") -> np.ndarray:
    """The image's own valid pixels (mask, nodata, finite values), and ``mask`` where one is given."""
    valid = image.valid_mask()
    if mask is None:
        return valid
    mask = np.asarray(mask, dtype=bool)
    if mask.shape != image.shape:
        raise GeometryError(f"{name} of shape {mask.shape} does not match the image's spatial shape {image.shape}")
    return valid & mask


def is_conformal(image: SpatialImage) -> bool:
    """True when a 2D index -> world map is a rotation times one isotropic scale (then pixel rigid = world rigid)."""
    lin = image.affine[:2, :2]
    gram = lin.T @ lin
    return bool(np.allclose(gram, gram[0, 0] * np.eye(2), rtol=1e-9, atol=0) and np.linalg.det(lin) > 0)


def world_from_pixel(matrix: np.ndarray, fixed: SpatialImage, moving: SpatialImage) -> np.ndarray:
    """A fixed-index -> moving-index homogeneous map as a fixed-world -> moving-world one (``W_m . M . W_f^-1``)."""
    world = moving.affine @ matrix @ np.linalg.inv(fixed.affine)
    return world / world[-1, -1]
