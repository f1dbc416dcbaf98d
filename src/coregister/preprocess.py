"""Intensity preprocessing from the field: grey levels, normalisation, smoothing, gradients, contrast equalisation.

Every function takes a :class:`~coregister.image.SpatialImage` and returns a
new one on the same grid (origin, spacing, direction, crs, nodata, mask and
metadata kept) holding ``float32`` values. Smoothing and gradients work in
physical units (``sigma_mm`` is in world units: millimetres for medical
images, map units for rasters, pixels for plain photos), so they mean the
same on anisotropic volumes.

* :func:`to_grayscale`: luminance of an RGB(A) image (scikit-image weights).
* :func:`normalize_intensity`: z-score, min-max or percentile scaling to ``float32``.
* :func:`gaussian_smooth`: Gaussian smoothing in world units.
* :func:`gradient_magnitude`: Gaussian-derivative gradient magnitude, the usual
  trick to make ECC or correlation work across modalities (edges agree where
  intensities do not).
* :func:`clahe`: contrast-limited adaptive histogram equalisation (OpenCV in 2D,
  scikit-image in 3D, with one meaning of ``clip_limit``).
* :func:`equalize_histogram`: global histogram equalisation (scikit-image).
* :func:`fill_mask`: the valid region of an image whose outside was filled
  with a constant (a warped photo's black border).
* :func:`warp_fill_masks`: for a pair, each image's fill that the other image
  does not share (what ECC must ignore; a shared background is kept).
* :func:`is_binary` and :func:`mask_as_image`: a binary mask (an organ or
  lung segmentation) as an image an intensity metric can follow: its signed
  distance to the boundary, or the mask smoothed.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import SimpleITK as sitk
from scipy import ndimage
from skimage import exposure

from coregister._opencv import cv2
from coregister.errors import ConfigError, CoregisterError
from coregister.image import SpatialImage

__all__ = [
    "clahe",
    "clamp_outliers",
    "equalize_histogram",
    "fill_mask",
    "gaussian_smooth",
    "gradient_magnitude",
    "is_binary",
    "mask_as_image",
    "normalize_intensity",
    "to_grayscale",
    "warp_fill_masks",
]

logger = logging.getLogger(__name__)

_NORMALIZE_METHODS = ("zscore", "minmax", "percentile")


def _float_image(image: SpatialImage, array: np.ndarray) -> SpatialImage:
    return image.replace(array=np.ascontiguousarray(array, dtype=np.float32))


def _check_sigma(sigma_mm: float | Sequence[float], ndim: int) -> tuple[float, ...]:
    sigma = np.broadcast_to(np.asarray(sigma_mm, dtype=float), (ndim,))
    if not np.all(np.isfinite(sigma)) or np.any(sigma < 0):
        raise ConfigError(f"sigma_mm={sigma_mm!r} must be finite and >= 0 (one value, or one per axis x, y[, z])")
    return tuple(float(s) for s in sigma)


def _per_channel(image: SpatialImage, function: object) -> np.ndarray:
    """Apply ``function(2D/3D float32 array) -> array`` to each channel."""
    values = np.asarray(image.array, dtype=np.float32)
    if not image.has_channels:
        return function(values)  # type: ignore[operator]
    return np.stack([function(np.ascontiguousarray(values[..., c])) for c in range(image.n_channels)], axis=-1)  # type: ignore[operator]


def _sitk_scalar(image: SpatialImage, values: np.ndarray) -> sitk.Image:
    out = sitk.GetImageFromArray(np.ascontiguousarray(values, dtype=np.float32))
    out.SetOrigin(image.origin)
    out.SetSpacing(image.spacing)
    out.SetDirection(tuple(float(v) for v in image.direction.ravel()))
    return out


def to_grayscale(image: SpatialImage) -> SpatialImage:
    """Luminance of a colour image as ``float32``; a single-channel image is only converted to ``float32``.

    Three channels are read as RGB and four as RGBA (alpha composited on
    black is *not* done: alpha is dropped), with scikit-image's
    ``rgb2gray`` weights (0.2125, 0.7154, 0.0721) applied to the values as
    they are (no rescaling to [0, 1]). Other channel counts are averaged.

    Examples
    --------
    >>> import numpy as np
    >>> from coregister.image import SpatialImage
    >>> rgb = SpatialImage(np.full((2, 3, 3), 100, np.uint8), origin=(0, 0), spacing=(1, 1))
    >>> g = to_grayscale(rgb)
    >>> g.shape, g.has_channels, g.dtype, float(g.array[0, 0])
    ((2, 3), False, dtype('float32'), 100.0)
    """
    values = np.asarray(image.array, dtype=np.float32)
    if not image.has_channels:
        return _float_image(image, values)
    n = image.n_channels
    if n == 1:
        gray = values[..., 0]
    elif n in (3, 4):
        weights = np.array([0.2125, 0.7154, 0.0721], dtype=np.float32)
        gray = values[..., :3] @ weights
    else:
        logger.info("averaging %d channels into one grey image", n)
        gray = values.mean(axis=-1)
    return _float_image(image, gray)


def normalize_intensity(
    image: SpatialImage,
    *,
    method: str = "zscore",
    mask: np.ndarray | None = None,
    percentiles: tuple[float, float] = (0.5, 99.5),
) -> SpatialImage:
    """Scale intensities to ``float32``: z-score, min-max to [0, 1], or percentiles to [0, 1] (clipped).

    Statistics come from the pixels inside ``mask`` (default: the image's
    :meth:`~coregister.image.SpatialImage.valid_mask`); every pixel is scaled.

    Parameters
    ----------
    image : SpatialImage
    method : {"zscore", "minmax", "percentile"}
    mask : ndarray of bool, optional
        Spatial-shape mask of the pixels that set the statistics.
    percentiles : (float, float)
        Lower and upper percentile mapped to 0 and 1 by ``"percentile"``.

    Examples
    --------
    >>> import numpy as np
    >>> from coregister.image import SpatialImage
    >>> img = SpatialImage(np.arange(6, dtype=np.uint8).reshape(2, 3), origin=(0, 0), spacing=(1, 1))
    >>> normalize_intensity(img, method="minmax").array.tolist()
    [[0.0, 0.20000000298023224, 0.4000000059604645], [0.6000000238418579, 0.800000011920929, 1.0]]
    >>> z = normalize_intensity(img)
    >>> round(float(z.array.mean()), 6), round(float(z.array.std()), 6)
    (0.0, 1.0)
    """
    if method not in _NORMALIZE_METHODS:
        raise ConfigError(f"method={method!r} is not a normalisation; choose one of {', '.join(_NORMALIZE_METHODS)}")
    values = np.asarray(image.array, dtype=np.float64)
    region = image.valid_mask() if mask is None else np.asarray(mask, dtype=bool)
    if region.shape != image.shape:
        raise ConfigError(f"mask of shape {region.shape} does not match the image's spatial shape {image.shape}")
    inside = values[region]
    if inside.size == 0:
        raise ConfigError("the mask selects no pixel; give a mask with at least one True pixel inside the image")
    inside = inside[np.isfinite(inside)]
    if method == "zscore":
        offset, scale = float(inside.mean()), float(inside.std())
    elif method == "minmax":
        offset, scale = float(inside.min()), float(inside.max() - inside.min())
    else:
        low, high = np.percentile(inside, percentiles)
        offset, scale = float(low), float(high - low)
    out = (values - offset) / (scale if scale > 0 else 1.0)
    if method == "percentile":
        out = np.clip(out, 0.0, 1.0)
    return _float_image(image, out)


def gaussian_smooth(image: SpatialImage, *, sigma_mm: float | Sequence[float]) -> SpatialImage:
    """Gaussian smoothing with a standard deviation in world units (a separable FIR Gaussian, see :func:`smooth_array`).

    Parameters
    ----------
    image : SpatialImage
    sigma_mm : float or sequence of float
        Standard deviation in world units (one value, or one per axis
        ``(x, y[, z])``). 0 leaves that axis alone.

    Examples
    --------
    >>> import numpy as np
    >>> from coregister.image import SpatialImage
    >>> a = np.zeros((31, 31), np.float32); a[15, 15] = 1.0
    >>> out = gaussian_smooth(SpatialImage(a, origin=(0, 0), spacing=(0.5, 0.5)), sigma_mm=1.0)
    >>> round(float(out.array.sum()), 4), round(float(out.array[15, 15]), 4)  # 2 px = 1 mm
    (1.0, 0.0398)
    """
    sigma = _check_sigma(sigma_mm, image.ndim)
    if max(sigma) == 0:
        return _float_image(image, image.array)
    sigma_px = [s / sp for s, sp in zip(sigma, image.spacing, strict=True)]

    def smooth(values: np.ndarray) -> np.ndarray:
        return smooth_array(values, sigma_px)

    return _float_image(image, _per_channel(image, smooth))


def smooth_array(values: np.ndarray, sigma_px: Sequence[float]) -> np.ndarray:
    """Gaussian smoothing of a 2D/3D array with standard deviations in pixels along ``(x, y[, z])``.

    A separable FIR Gaussian truncated at 3.5 sigma: OpenCV's ``sepFilter2D``
    in 2D, SciPy's ``gaussian_filter`` in 3D (on a 1 mm MNI volume 5x faster
    than SimpleITK's recursive Gaussian on a busy two-core machine), both
    with a mirrored border. Sigmas below 0.01 px leave an axis alone.
    Returns ``float32``.
    """
    values = np.ascontiguousarray(values, dtype=np.float32)
    sigma_px = [float(s) for s in sigma_px]
    if max(sigma_px) < 0.01:
        return values
    if values.ndim == 2:
        sx, sy = sigma_px
        return cv2.sepFilter2D(values, cv2.CV_32F, _kernel(sx), _kernel(sy), borderType=cv2.BORDER_REFLECT)
    sigma_zyx = [s if s >= 0.01 else 0.0 for s in sigma_px[::-1]]
    return ndimage.gaussian_filter(values, sigma_zyx, mode="reflect", truncate=3.5)


def _kernel(sigma_px: float) -> np.ndarray:
    if sigma_px < 0.01:
        return np.ones(1, dtype=np.float32)
    radius = max(1, int(np.ceil(3.5 * sigma_px)))
    x = np.arange(-radius, radius + 1, dtype=np.float64)
    k = np.exp(-0.5 * (x / sigma_px) ** 2)
    return (k / k.sum()).astype(np.float32)


def gradient_magnitude(image: SpatialImage, *, sigma_mm: float = 1.0) -> SpatialImage:
    """Gradient magnitude of the Gaussian-smoothed image, per world unit.

    Registering gradient-magnitude images with ECC or correlation aligns
    edges, which different modalities share even where their intensities
    disagree. Uses SimpleITK's ``GradientMagnitudeRecursiveGaussian``, which
    honours spacing and direction.

    Parameters
    ----------
    image : SpatialImage
    sigma_mm : float
        Scale of the Gaussian derivative, in world units (> 0).

    Examples
    --------
    >>> import numpy as np
    >>> from coregister.image import SpatialImage
    >>> ramp = SpatialImage(np.tile(np.arange(40, dtype=np.float32) * 3.0, (40, 1)), origin=(0, 0), spacing=(2, 2))
    >>> g = gradient_magnitude(ramp, sigma_mm=2.0)
    >>> round(float(g.array[20, 20]), 3)  # 3 per pixel = 1.5 per mm
    1.5
    """
    sigma = float(sigma_mm)
    if not (np.isfinite(sigma) and sigma > 0):
        raise ConfigError(f"sigma_mm={sigma_mm!r} must be positive (world units, e.g. one pixel spacing)")

    def grad(values: np.ndarray) -> np.ndarray:
        out = sitk.GradientMagnitudeRecursiveGaussian(_sitk_scalar(image, values), sigma)
        return sitk.GetArrayViewFromImage(out).astype(np.float32)

    return _float_image(image, _per_channel(image, grad))


def _unit_range(values: np.ndarray, region: np.ndarray) -> np.ndarray:
    inside = values[region & np.isfinite(values)]
    low, high = (float(inside.min()), float(inside.max())) if inside.size else (0.0, 1.0)
    scale = high - low if high > low else 1.0
    return np.clip((values - low) / scale, 0.0, 1.0)


def clahe(
    image: SpatialImage,
    *,
    clip_limit: float = 2.0,
    tiles: int | Sequence[int] = 8,
) -> SpatialImage:
    """Contrast-limited adaptive histogram equalisation, values in [0, 1] as ``float32``.

    The image is first scaled to [0, 1] over its valid pixels and binned in
    256 grey levels. 2D images use OpenCV's ``createCLAHE``; 3D volumes use
    scikit-image's ``equalize_adapthist``, with ``clip_limit`` converted so
    it means the same in both: the histogram of a tile is clipped at
    ``clip_limit`` times its mean bin count (OpenCV's meaning; scikit-image's
    normalised clip limit is ``clip_limit / 256``).

    Parameters
    ----------
    image : SpatialImage
    clip_limit : float
        Contrast limit relative to a flat histogram (2.0, OpenCV's default;
        scikit-image's default 0.01 corresponds to 2.56).
    tiles : int or sequence of int
        Number of contextual regions along each axis ``(x, y[, z])``.

    Examples
    --------
    >>> import numpy as np
    >>> from skimage import data
    >>> from coregister.image import SpatialImage
    >>> out = clahe(SpatialImage(data.moon(), origin=(0, 0), spacing=(1, 1)))
    >>> out.dtype, float(out.array.min()) >= 0.0, float(out.array.max()) <= 1.0
    (dtype('float32'), True, True)
    >>> bool(out.array.std() > data.moon().std() / 255)  # contrast went up
    True
    """
    if not (np.isfinite(clip_limit) and clip_limit > 0):
        raise ConfigError(f"clip_limit={clip_limit!r} must be positive (2.0 is OpenCV's default)")
    tiles_xyz = tuple(int(t) for t in np.broadcast_to(np.asarray(tiles), (image.ndim,)))
    if min(tiles_xyz) < 1:
        raise ConfigError(f"tiles={tiles!r}: give at least one region per axis")
    region = image.valid_mask()

    def equalise(values: np.ndarray) -> np.ndarray:
        unit = _unit_range(values.astype(np.float64), region)
        if values.ndim == 2:
            eight = np.round(unit * 255.0).astype(np.uint8)
            engine = cv2.createCLAHE(clipLimit=float(clip_limit), tileGridSize=tiles_xyz)
            return engine.apply(eight).astype(np.float32) / 255.0
        kernel = [max(1, int(np.ceil(n / t))) for n, t in zip(values.shape, tiles_xyz[::-1], strict=True)]
        out = exposure.equalize_adapthist(unit, kernel_size=kernel, clip_limit=clip_limit / 256.0, nbins=256)
        return out.astype(np.float32)

    return _float_image(image, _per_channel(image, equalise))


def equalize_histogram(image: SpatialImage, *, nbins: int = 256, mask: np.ndarray | None = None) -> SpatialImage:
    """Global histogram equalisation to [0, 1] (scikit-image's ``equalize_hist``) as ``float32``.

    The cumulative histogram comes from the pixels in ``mask`` (default: the
    image's valid pixels); every pixel is mapped.

    Examples
    --------
    >>> import numpy as np
    >>> from coregister.image import SpatialImage
    >>> img = SpatialImage(np.array([[200, 0, 110, 60]], np.uint8), origin=(0, 0), spacing=(1, 1))
    >>> equalize_histogram(img, nbins=4).array.round(3).tolist()
    [[1.0, 0.25, 0.675, 0.425]]
    """
    if int(nbins) < 2:
        raise ConfigError(f"nbins={nbins!r}: use at least 2 bins (256 for 8-bit images)")
    region = image.valid_mask() if mask is None else np.asarray(mask, dtype=bool)
    if region.shape != image.shape:
        raise ConfigError(f"mask of shape {region.shape} does not match the image's spatial shape {image.shape}")

    def equalise(values: np.ndarray) -> np.ndarray:
        return exposure.equalize_hist(values.astype(np.float64), nbins=int(nbins), mask=region).astype(np.float32)

    return _float_image(image, _per_channel(image, equalise))


#: the share of voxels at each end of the intensities that clamp_outliers may clamp ...
OUTLIER_SHARE = 0.005
#: ... judged on at most this many of them (every k-th: the percentiles of a million points are as good)
_OUTLIER_POINTS = 1_000_000


def clamp_outliers(
    image: SpatialImage, valid: np.ndarray | None = None, *, share: float = OUTLIER_SHARE
) -> tuple[SpatialImage, str | None]:
    """Intensities clamped to their ``share`` and ``1 - share`` quantiles where the outer ones span more than the rest.

    Histogram metrics (Mattes MI, joint-histogram MI) spread their bins from
    the lowest value to the highest: where a few voxels (a high-dynamic-range
    photo's highlights, metal in a CT, a spike) reach further than the rest of
    the image spans, most bins hold almost nothing and the structure falls
    into two or three of them. ANTs winsorises every image at the 0.5th and
    99.5th percentiles; this touches only the images that need it. Returns
    the image (the same object when untouched) and a note saying what was
    done (None when nothing was).

    Parameters
    ----------
    image : SpatialImage
        A single-channel image.
    valid : ndarray of bool, optional
        The voxels whose values count (a mask; default all finite ones).
    share : float
        The share of voxels at each end that may be clamped.

    Examples
    --------
    >>> import numpy as np
    >>> values = np.linspace(0.0, 1.0, 10_000).reshape(100, 100).astype(np.float32)
    >>> plain = SpatialImage(values, origin=(0, 0), spacing=(1, 1))
    >>> clamp_outliers(plain)[0] is plain
    True
    >>> spiked = plain.replace(array=np.where(values > 0.999, 1e4, values).astype(np.float32))
    >>> clamped, note = clamp_outliers(spiked)
    >>> float(clamped.array.max()) < 1.0, note.startswith("intensities clamped to 0.005..")
    (True, True)
    """
    values = np.asarray(image.array)
    inside = values[valid] if valid is not None else values.ravel()
    if inside.size > _OUTLIER_POINTS:
        inside = inside[:: int(math.ceil(inside.size / _OUTLIER_POINTS))]
    inside = inside[np.isfinite(inside)] if np.issubdtype(inside.dtype, np.floating) else inside
    if inside.size < 2:
        return image, None
    lowest, low, high, highest = (float(v) for v in np.percentile(inside, [0, 100 * share, 100 * (1 - share), 100]))
    if not high > low or (highest - high) + (low - lowest) <= high - low:
        return image, None
    note = (f"intensities clamped to {low:.4g}..{high:.4g} (the {share:.1%} at each end span {lowest:.4g}..{low:.4g} "
            f"and {high:.4g}..{highest:.4g}, more than the rest), so that histograms resolve the structure")
    return image.replace(array=np.clip(values, low, high).astype(np.float32, copy=False)), note


def luminance_if_colour(image: SpatialImage) -> tuple[SpatialImage, str | None]:
    """``(grey image, note)``: the luminance of a multi-channel image and a note saying so, else the image as is.

    A grey image stored with equal colour channels (R = G = B, as many PNG
    slices are; an alpha channel aside) loses nothing by being read as one
    channel: its first channel comes back, without a note.

    Examples
    --------
    >>> import numpy as np
    >>> from coregister.image import SpatialImage
    >>> grey = np.full((2, 2, 3), 7, np.uint8)
    >>> image, note = luminance_if_colour(SpatialImage(grey, origin=(0, 0), spacing=(1, 1)))
    >>> image.has_channels, image.dtype, note
    (False, dtype('uint8'), None)
    """
    if not image.has_channels:
        return image, None
    values = np.asarray(image.array)
    colour = values[..., :3] if image.n_channels in (3, 4) else values
    if all(np.array_equal(colour[..., 0], colour[..., c]) for c in range(1, colour.shape[-1])):
        logger.debug("a %d-channel image with equal colour channels: its first channel is used", image.n_channels)
        return image.channel(0), None
    note = f"registered on the luminance of a {image.n_channels}-channel image"
    return to_grayscale(image), note



def fill_mask(
    image: SpatialImage, *, value: float | None = None, min_pixels: int = 64, margin_px: int = 2
) -> np.ndarray:
    """Valid-pixel mask of an image whose outside was filled with a constant: False on the fill.

    The fill is every pixel exactly equal to ``value`` in a region connected
    to the image edge, like the black border ``cv2.warpPerspective`` or
    ``scipy.ndimage.rotate`` leave. Without ``value``, each corner's value is
    a candidate (a warped image's fill reaches at least one corner), and
    edge-connected runs of it of at least ``min_pixels`` pixels are fill. Give
    the result as ``moving_mask`` (or ``image.replace(mask=...)``): ECC then
    ignores the border instead of being pulled by it (0.4-0.8 px on a
    512 x 512 photo warped by a homography). The ECC and feature engines
    find such a border in 2D pairs themselves (:func:`warp_fill_masks`,
    which keeps a background both images share); this function is for
    other uses and for fills they cannot tell apart. Do not use it where a constant
    background is data (the zero background around a head is part of its
    silhouette), and mind that an 8-bit photo's flat runs along its edge
    (saturated sky) are taken as fill too. Interpolation kernels blend the fill into a thin band of
    valid pixels next to it, which pulls as hard as the fill itself: the fill,
    and the outside of the image, are grown by ``margin_px`` pixels (2 covers
    cubic interpolation).

    Parameters
    ----------
    image : SpatialImage
    value : float, optional
        The fill value (all channels equal to it); default: the corners' values.
    min_pixels : int
        Smallest edge-connected run that counts as fill.
    margin_px : int
        Pixels of blending around the fill to leave out as well.

    Examples
    --------
    >>> import numpy as np
    >>> from scipy import ndimage
    >>> from skimage import data
    >>> turned = ndimage.rotate(data.camera(), 30, reshape=False, order=1)
    >>> valid = fill_mask(SpatialImage(turned, origin=(0, 0), spacing=(1, 1)))
    >>> bool(valid[256, 256]), bool(valid[0, 0]), round(float(1 - valid.mean()), 2)
    (True, False, 0.18)
    """
    values = np.asarray(image.array)
    candidates = _corner_values(image) if value is None else [np.asarray(value, dtype=values.dtype)]
    fill = _edge_fill(image, candidates, min_pixels=min_pixels)
    if margin_px > 0 and fill.any():  # the outside of the image counts as fill: blending reaches the edge rows too
        valid = ndimage.binary_erosion(~fill, structure=np.ones((3,) * image.ndim, bool), iterations=int(margin_px))
        return valid
    return ~fill


def _corner_values(image: SpatialImage) -> list[np.ndarray]:
    """The distinct values (pixels, or channel vectors) at the image's corners."""
    values = np.asarray(image.array)
    spatial = values.shape[: image.ndim]
    corner_index = [
        tuple(0 if (k >> axis) & 1 == 0 else n - 1 for axis, n in enumerate(spatial)) for k in range(2**image.ndim)
    ]
    return list({np.asarray(values[c]).tobytes(): np.asarray(values[c]) for c in corner_index}.values())


def _edge_fill(image: SpatialImage, candidates: Sequence[np.ndarray], *, min_pixels: int) -> np.ndarray:
    """Pixels equal to one of ``candidates`` in a connected run of at least ``min_pixels`` that touches the edge."""
    values = np.asarray(image.array)
    spatial = values.shape[: image.ndim]
    edge = np.zeros(spatial, dtype=bool)
    for axis in range(image.ndim):
        index: list[Any] = [slice(None)] * image.ndim
        for end in (0, -1):
            index[axis] = end
            edge[tuple(index)] = True
    fill = np.zeros(spatial, dtype=bool)
    for candidate in candidates:
        equal = values == candidate if not image.has_channels else np.all(values == candidate, axis=-1)
        labels, count = ndimage.label(equal)
        if count == 0:
            continue
        sizes = np.bincount(labels.ravel())
        touching = np.unique(labels[edge & equal])
        touching = touching[(touching > 0) & (sizes[touching] >= min_pixels)]
        if touching.size:
            fill |= np.isin(labels, touching)
    return fill


def warp_fill_masks(
    fixed: SpatialImage,
    moving: SpatialImage,
    *,
    transform: Any = None,
    min_pixels: int = 64,
    margin_px: int = 2,
) -> tuple[np.ndarray | None, np.ndarray | None]:
    """Valid-pixel masks that leave out each image's warp fill: the constant border a resampling left, and only that.

    Candidate fill is what :func:`fill_mask` finds (edge-connected
    constant runs), restricted to corner values that are zero or the
    image's minimum or maximum: what resampling libraries fill with (a flat
    run of a mid-range value is content). Each image's *unshared* fill is
    the part whose counterpart in the other image is not fill of the same
    value; only its parts that reach the image's edge count (a warp fill is
    where the warp looked outside its source).

    With ``transform`` (fixed -> moving, e.g. a feature fit good to a pixel
    or two), counterparts are found through it: a background both images
    hold maps onto itself (within 2 pixels), and what is left unshared is
    warp fill. Without it, counterparts are taken at the
    same world position, and a background both images hold, moved, leaves
    unshared crescents in both: an image's unshared fill is taken as warp
    fill only when it is more than 1.5 times the other's (in world area).
    Warp fill is left out grown by ``margin_px`` (interpolation blends the
    fill into its neighbours). The engines that measure correlation (ECC,
    the feature engine's ECC refinement) apply this automatically to 2D
    pairs; call it yourself for other uses.

    Parameters
    ----------
    fixed, moving : SpatialImage
        Single-channel images, of any geometry.
    transform : Transform, optional
        Fixed -> moving map (ITK's convention) relating the two images.
    min_pixels : int
        Smallest edge-connected constant run that counts as fill.
    margin_px : int
        Pixels of blending around the fill to leave out as well.

    Returns
    -------
    (ndarray of bool or None, ndarray of bool or None)
        For the fixed and the moving image, True where to measure; None
        when the image has no warp fill.

    Examples
    --------
    >>> import cv2
    >>> from skimage import data
    >>> photo = data.camera()
    >>> h = np.array([[1.02, 0.03, -9.0], [-0.02, 0.97, 11.0], [2e-5, 1e-5, 1.0]])  # fixed -> moving pixels
    >>> warped = cv2.warpPerspective(photo, h, (512, 512))  # black wedges where it saw outside the photo
    >>> fixed, moving = (SpatialImage(v, origin=(0, 0), spacing=(1, 1)) for v in (photo, warped))
    >>> fixed_valid, moving_valid = warp_fill_masks(fixed, moving)
    >>> fixed_valid, bool(moving_valid[256, 256]), bool(moving_valid[0, 0]), round(float(1 - moving_valid.mean()), 3)
    (None, True, False, 0.05)
    >>> from coregister.transforms import Homography
    >>> _, through = warp_fill_masks(fixed, moving, transform=Homography(h))
    >>> bool((through == moving_valid).mean() > 0.99)
    True
    >>> warp_fill_masks(moving, moving)  # a fill both images share is content
    (None, None)
    """
    candidates = list({c.tobytes(): c for c in (*_fill_values(fixed), *_fill_values(moving))}.values())
    fixed_fill = _edge_fill(fixed, candidates, min_pixels=min_pixels)
    moving_fill = _edge_fill(moving, candidates, min_pixels=min_pixels)
    if not (fixed_fill.any() or moving_fill.any()):
        return None, None
    inverse = None
    if transform is not None:
        try:
            inverse = transform.inverse()
        except (CoregisterError, np.linalg.LinAlgError) as exc:  # a B-spline has no closed-form inverse
            logger.debug("warp fill: no inverse of %s (%s); comparing at the same world position", transform, exc)
    structure = np.ones((3,) * fixed.ndim, bool)
    # through an estimate off by a pixel or two, a shared edge leaves slivers: the counterpart fill is widened
    tolerance = _SHARED_TOLERANCE_PX if inverse is not None else 0
    fixed_own = fixed_fill & ~_pulled(moving_fill, moving, fixed, transform if inverse is not None else None, tolerance)
    moving_own = moving_fill & ~_pulled(fixed_fill, fixed, moving, inverse, tolerance)
    fixed_own = _touching_edge(fixed_own, min_pixels=min_pixels)
    moving_own = _touching_edge(moving_own, min_pixels=min_pixels)
    fixed_area = float(fixed_own.sum()) * float(np.prod(fixed.spacing))
    moving_area = float(moving_own.sum()) * float(np.prod(moving.spacing))
    out: list[np.ndarray | None] = []
    for own, area, other_area in ((fixed_own, fixed_area, moving_area), (moving_own, moving_area, fixed_area)):
        if int(own.sum()) < min_pixels or (inverse is None and area <= _WARP_FILL_RATIO * other_area):
            out.append(None)
            continue
        if margin_px > 0:
            own = ndimage.binary_dilation(own, structure=structure, iterations=int(margin_px))
        logger.debug("warp fill: %d of %d pixels left out", int(own.sum()), own.size)
        out.append(~own)
    return out[0], out[1]


#: Through a transform, fill within this many pixels of the other image's fill counts as shared.
_SHARED_TOLERANCE_PX = 2
#: Without a transform, an image's unshared fill is warp fill when it exceeds the other image's this many times.
_WARP_FILL_RATIO = 1.5


def _fill_values(image: SpatialImage) -> list[np.ndarray]:
    """Corner values a resampling could have filled with: zero (every library's default) or the image's extremes.

    A flat run of a mid-range value along the edge (a grey wall, the
    saturated-but-not-maximal sky) is content, not fill.
    """
    values = np.asarray(image.array)
    finite = values[np.isfinite(values)] if np.issubdtype(values.dtype, np.floating) else values
    if finite.size == 0:
        return []
    low, high = finite.min(), finite.max()
    return [c for c in _corner_values(image) if np.all(c == 0) or np.all(c == low) or np.all(c == high)]


def _touching_edge(mask: np.ndarray, *, min_pixels: int) -> np.ndarray:
    """The connected parts of ``mask`` of at least ``min_pixels`` pixels that touch the array's edge."""
    labels, count = ndimage.label(mask)
    if count == 0:
        return mask
    edge = np.ones(mask.shape, bool)
    edge[(slice(1, -1),) * mask.ndim] = False
    sizes = np.bincount(labels.ravel())
    touching = np.unique(labels[edge & mask])
    touching = touching[(touching > 0) & (sizes[touching] >= min_pixels)]
    return np.isin(labels, touching)


def _pulled(mask: np.ndarray, source: SpatialImage, grid: SpatialImage, transform: Any, widen_px: int = 0) -> np.ndarray:
    """``mask`` (on ``source``'s grid, widened by ``widen_px`` pixels) at ``transform``'s images of ``grid``'s pixel
    centres (identity: the same world position), nearest neighbour; False outside ``source``."""
    if not mask.any():
        return np.zeros(grid.shape, bool)
    if widen_px > 0:
        mask = ndimage.binary_dilation(mask, structure=np.ones((3,) * mask.ndim, bool), iterations=int(widen_px))
    if transform is None and source.same_geometry(grid):
        return mask
    from coregister.resample import apply
    from coregister.transforms import Translation

    image = SpatialImage(mask.astype(np.uint8), origin=source.origin, spacing=source.spacing, direction=source.direction)
    through = transform if transform is not None else Translation(np.zeros(grid.ndim))
    return np.asarray(apply(through, image, reference=grid, interpolation="nearest").array) > 0


def is_binary(image: SpatialImage) -> bool:
    """Whether ``image`` is a mask: one channel and exactly two distinct values (boolean, 0/1, 0/255...).

    Examples
    --------
    >>> import numpy as np
    >>> from coregister.image import SpatialImage
    >>> disc = (np.hypot(*np.mgrid[-8:8, -8:8]) < 5).astype(np.uint8) * 255
    >>> is_binary(SpatialImage(disc, origin=(0, 0), spacing=(1, 1)))
    True
    >>> is_binary(SpatialImage(disc.astype(float) / 3 + np.eye(16), origin=(0, 0), spacing=(1, 1)))
    False
    """
    if image.has_channels:
        return False
    values = np.asarray(image.array)
    if values.dtype == bool:
        return bool(values.any() and not values.all())
    first = values.flat[0] if values.size else 0
    other = values[values != first]
    return bool(other.size and np.all(other == other.flat[0]))


#: :func:`mask_as_image` defaults: distances clipped at this many voxels (of the finest axis) on either side,
#: and the smoothing sigma in voxels
_DISTANCE_CLIP_VOXELS = 20.0
_MASK_SIGMA_VOXELS = 2.0


def mask_as_image(
    image: SpatialImage, *, how: str = "distance", clip_mm: float | None = None, sigma_mm: float | None = None
) -> SpatialImage:
    """A binary mask turned into a smooth image an intensity metric can register.

    A mask's values are flat everywhere but on its boundary: a metric
    compares nothing inside or outside, and its gradient lives on a
    one-voxel rim. Two remedies:

    * ``how="distance"``: the **signed distance** to the mask's boundary in
      world units (SimpleITK's ``SignedMaurerDistanceMap``: negative inside,
      positive outside), clipped at ``clip_mm`` (default 20 voxels of the
      finest axis) on either side. Every voxel near the organ says how far
      the boundary is, so distant parts of the boundary pull too; the
      values mean the same in both images, which suits correlation and the
      demons alike.
    * ``how="smooth"``: the mask (0/1) smoothed by a Gaussian of
      ``sigma_mm`` (default 2 voxels of the finest axis): a soft rim a few
      voxels wide.

    The larger value counts as inside. Returns ``float32`` on the same grid.

    Examples
    --------
    >>> import numpy as np
    >>> from coregister.image import SpatialImage
    >>> disc = SpatialImage((np.hypot(*np.mgrid[-20:21, -20:21]) <= 10).astype(np.uint8), origin=(0, 0), spacing=(0.5, 0.5))
    >>> distance = mask_as_image(disc)
    >>> round(float(distance.array[20, 20]), 1), round(float(distance.array[20, 0]), 1)  # mm inside (-), outside (+)
    (-4.5, 5.0)
    >>> smooth = mask_as_image(disc, how="smooth")
    >>> 0.4 < float(smooth.array[20, 30]) < 0.6  # on the boundary
    True
    """
    if how not in ("distance", "smooth"):
        raise ConfigError(f"how={how!r}: a mask becomes an image as its signed 'distance' or 'smooth'ed")
    if not is_binary(image):
        raise ConfigError("mask_as_image needs a binary image (two distinct values); this one is not")
    values = np.asarray(image.array)
    inside = values > values.min() if values.dtype != bool else values
    finest = float(min(image.spacing))
    if how == "smooth":
        sigma = _MASK_SIGMA_VOXELS * finest if sigma_mm is None else float(sigma_mm)
        return gaussian_smooth(image.replace(array=inside.astype(np.float32)), sigma_mm=sigma)
    mask = sitk.GetImageFromArray(inside.astype(np.uint8))
    mask.SetSpacing(image.spacing)
    distance = sitk.SignedMaurerDistanceMap(mask, insideIsPositive=False, squaredDistance=False, useImageSpacing=True)
    clip = _DISTANCE_CLIP_VOXELS * finest if clip_mm is None else float(clip_mm)
    return _float_image(image, np.clip(sitk.GetArrayFromImage(distance), -clip, clip))
