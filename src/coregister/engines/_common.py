"""What several engines need alike: image centres, grey images, validity masks, pixel-grid matrices in world space."""

from __future__ import annotations

import logging

import numpy as np

from coregister.config import RegistrationConfig
from coregister.errors import GeometryError
from coregister.image import SpatialImage
from coregister.preprocess import luminance_if_colour, warp_fill_masks
from coregister.transforms import Transform

__all__ = [
    "EXCLUDE_WARP_FILL",
    "grey_pair",
    "is_conformal",
    "refuse_series",
    "valid_pair",
    "valid_pixels",
    "world_from_pixel",
]

logger = logging.getLogger(__name__)

#: Stage ``extra`` key: ``False`` keeps a 2D pair's warp fill in the correlation (default True: left out).
EXCLUDE_WARP_FILL = "exclude_warp_fill"


def refuse_series(image: SpatialImage, name: str) -> None:
    """A 4D series (volumes on a trailing time axis, as a 4D NIfTI, MetaImage or SimpleITK image reads) is refused.

    It is not one image to register: its volumes would otherwise be averaged
    like colour channels. True channels (RGB photos, vector images, raster
    bands) are registered on their luminance. Every way into an engine
    (:func:`coregister.register`, the pipeline's ``prepare``, an engine's
    ``run``) passes :func:`grey_pair`, so a series is refused on each.

    Examples
    --------
    >>> import numpy as np
    >>> series = SpatialImage(np.zeros((4, 5, 6, 2), np.float32), origin=(0, 0, 0), spacing=(1, 1, 1),
    ...                       meta={"trailing_axis": "time"})
    >>> try:
    ...     refuse_series(series, "moving")
    ... except GeometryError as exc:
    ...     print(str(exc).split(";")[0])
    the moving image is a 4D series of 2 volumes of 6 x 5 x 4, not one 3D image
    """
    if image.meta.get("trailing_axis") != "time" or image.n_channels < 2:
        return
    source = image.meta.get("source_path")
    where = f" ({source!r})" if source else ""
    raise GeometryError(
        f"the {name} image{where} is a 4D series of {image.n_channels} volumes of {' x '.join(map(str, image.size))}, "
        "not one 3D image; realign its volumes with coregister.motion(...) (the `coregister motion` command), "
        "or register one volume: coregister.read(path, volume=i)"
    )


def grey_pair(fixed: SpatialImage, moving: SpatialImage) -> tuple[SpatialImage, SpatialImage, list[str]]:
    """``(fixed, moving, warnings)``: multi-channel images replaced by their luminance, each replacement noted.

    A 4D series is refused (:func:`refuse_series`), never averaged.
    """
    refuse_series(fixed, "fixed")
    refuse_series(moving, "moving")
    channels = (fixed.n_channels if fixed.has_channels else 1, moving.n_channels if moving.has_channels else 1)
    fixed, fixed_note = luminance_if_colour(fixed)
    moving, moving_note = luminance_if_colour(moving)
    if fixed_note and moving_note and channels[0] == channels[1]:  # a colour pair: one note, not the same one twice
        return fixed, moving, [f"fixed and moving images: registered on the luminance of {channels[0]}-channel images"]
    warnings = [f"{name} image: {note}" for name, note in (("fixed", fixed_note), ("moving", moving_note)) if note]
    return fixed, moving, warnings


def valid_pixels(image: SpatialImage, mask: np.ndarray | None, name: str = "mask") -> np.ndarray:
    """The image's own valid pixels (mask, nodata, finite values), and ``mask`` where one is given."""
    valid = image.valid_mask()
    if mask is None:
        return valid
    mask = np.asarray(mask, dtype=bool)
    if mask.shape != image.shape:
        raise GeometryError(
            f"{name} of shape {mask.shape} does not fit the image's spatial shape {image.shape}; give a mask on its grid"
        )
    return valid & mask


def valid_pair(
    fixed: SpatialImage,
    moving: SpatialImage,
    fixed_mask: np.ndarray | None,
    moving_mask: np.ndarray | None,
    config: RegistrationConfig,
    *,
    transform: Transform | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Both images' valid pixels (:func:`valid_pixels`), less each 2D image's warp fill the other does not share.

    A warped photo's constant border pulls correlation-based engines off by
    tenths of a pixel (:func:`coregister.preprocess.warp_fill_masks`): the
    ECC engines and the feature engine leave it out of 2D pairs unless a
    stage sets ``(EXCLUDE_WARP_FILL, False)`` in its ``extra``. Give
    ``transform`` (fixed -> moving) when an estimate is at hand: fill is
    then told from a shared background through it, not by position. Volumes
    are not searched (their backgrounds are shared, and the search costs a
    labelling of every voxel).

    Examples
    --------
    >>> import cv2
    >>> from skimage import data
    >>> photo = SpatialImage(data.camera(), origin=(0, 0), spacing=(1, 1))
    >>> turned = photo.replace(array=cv2.warpAffine(data.camera(), cv2.getRotationMatrix2D((256, 256), 10, 1), (512, 512)))
    >>> fixed_valid, moving_valid = valid_pair(photo, turned, None, None, RegistrationConfig())
    >>> bool(moving_valid[0, 0]), bool(moving_valid[256, 256])  # the black corner is left out, the middle kept
    (False, True)
    """
    fixed_valid = valid_pixels(fixed, fixed_mask, "fixed_mask")
    moving_valid = valid_pixels(moving, moving_mask, "moving_mask")
    wanted = all(dict(stage.extra).get(EXCLUDE_WARP_FILL, True) for stage in config.stages)
    if fixed.ndim != 2 or moving.ndim != 2 or fixed.has_channels or moving.has_channels or not wanted:
        return fixed_valid, moving_valid
    fixed_fill, moving_fill = warp_fill_masks(fixed, moving, transform=transform)
    if fixed_fill is not None:
        logger.info("fixed image: %d warp-fill pixels left out", int((~fixed_fill & fixed_valid).sum()))
        fixed_valid = fixed_valid & fixed_fill
    if moving_fill is not None:
        logger.info("moving image: %d warp-fill pixels left out", int((~moving_fill & moving_valid).sum()))
        moving_valid = moving_valid & moving_fill
    return fixed_valid, moving_valid


def is_conformal(image: SpatialImage) -> bool:
    """True when a 2D index -> world map is a rotation times one isotropic scale (then pixel rigid = world rigid)."""
    lin = image.affine[:2, :2]
    gram = lin.T @ lin
    return bool(np.allclose(gram, gram[0, 0] * np.eye(2), rtol=1e-9, atol=0) and np.linalg.det(lin) > 0)


def world_from_pixel(matrix: np.ndarray, fixed: SpatialImage, moving: SpatialImage) -> np.ndarray:
    """A fixed-index -> moving-index homogeneous map as a fixed-world -> moving-world one (``W_m . M . W_f^-1``)."""
    world = moving.affine @ matrix @ np.linalg.inv(fixed.affine)
    return world / world[-1, -1]
