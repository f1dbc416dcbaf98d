"""Resampling images, label maps and points through a transform.

Every transform maps points of the **fixed** (reference) space to the
**moving** space (DESIGN convention 3). That is what resampling needs: for
each pixel centre ``x`` of the output grid (the reference's), the output value
is the moving image sampled at ``transform(x)``. Landmarks given in fixed
space therefore map forward with :func:`transform_points`; landmarks given in
moving space need ``inverse=True``.

Intensities are interpolated linearly (or with a cubic B-spline); label maps
with nearest neighbour (or label-Gaussian), never the reverse (DESIGN
convention 4). Integer data are rounded and clipped back to their dtype.
"""

from __future__ import annotations

import logging
from typing import Any, Protocol, TypeVar, overload, runtime_checkable

import numpy as np
import SimpleITK as sitk

from coregister._opencv import cv2
from coregister.config import Interpolation
from coregister.errors import GeometryError
from coregister.image import SpatialImage
from coregister.image.kinds import as_spatial_image, resolve_like, to_kind
from coregister.transforms import BSpline, Composite, Homography, Transform

__all__ = ["apply", "resample_values", "transform_points"]

logger = logging.getLogger(__name__)

_SITK_INTERPOLATORS = {
    Interpolation.LINEAR: sitk.sitkLinear,
    Interpolation.BSPLINE: sitk.sitkBSpline,
    Interpolation.NEAREST: sitk.sitkNearestNeighbor,
    Interpolation.LABEL_GAUSSIAN: sitk.sitkLabelGaussian,
}
_CV2_INTERPOLATORS = {Interpolation.LINEAR: cv2.INTER_LINEAR, Interpolation.NEAREST: cv2.INTER_NEAREST}
# A resampled validity fraction at or above this counts as "every contributing pixel had data".
_VALID_FRACTION = 1.0 - 1e-6


def _work_dtype(dtype: np.dtype) -> np.dtype:
    """The floating type the interpolation runs in: exact for the input's values."""
    dtype = np.dtype(dtype)
    if dtype.kind == "c":
        raise GeometryError(f"cannot resample complex data ({dtype}); resample the real and imaginary parts apart")
    if dtype == np.float64 or (dtype.kind in "iu" and dtype.itemsize >= 4):
        return np.dtype(np.float64)
    return np.dtype(np.float32)


def _is_pixel_geometry(image: SpatialImage) -> bool:
    """Origin 0, spacing 1, identity direction: world coordinates equal ITK indices."""
    return (
        image.ndim == 2
        and np.allclose(image.origin, 0.0, atol=1e-12)
        and np.allclose(image.spacing, 1.0, atol=1e-12)
        and np.allclose(image.direction, np.eye(2), atol=1e-12)
    )


def _cast_to(values: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """Round and clip floating values into ``dtype`` (integer, bool) or cast (float)."""
    dtype = np.dtype(dtype)
    if dtype == np.bool_:
        return values > 0.5
    if dtype.kind in "iu":
        info = np.iinfo(dtype)
        return np.clip(np.rint(values), info.min, info.max).astype(dtype)
    return values.astype(dtype, copy=False)


def _needs_valid_mask(image: SpatialImage) -> bool:
    return image.mask is not None or (image.nodata is not None and not np.isnan(image.nodata))


def _sitk_transform(transform: Transform, reference: SpatialImage) -> sitk.Transform:
    """A SimpleITK transform for ``transform``; a sampled displacement field where ITK has no equivalent."""
    if not _contains_homography(transform):
        return transform.to_sitk()
    # ITK has no projective transform: sample the point map on the output grid (exact at every pixel centre).
    grid = reference.world_grid().reshape(-1, reference.ndim)
    displacement = np.asarray(transform.transform_points(grid)) - grid
    field = sitk.GetImageFromArray(displacement.reshape(*reference.shape, reference.ndim).astype(np.float64), isVector=True)
    field.SetOrigin(reference.origin)
    field.SetSpacing(reference.spacing)
    field.SetDirection(tuple(float(v) for v in reference.direction.ravel()))
    return sitk.DisplacementFieldTransform(field)


def _contains_homography(transform: Transform) -> bool:
    if isinstance(transform, Homography):
        return True
    return isinstance(transform, Composite) and any(_contains_homography(t) for t in transform.transforms)


class _Sampler:
    """Resamples float planes/volumes of one moving grid onto one reference grid through one transform."""

    def __init__(
        self,
        transform: Transform,
        moving: SpatialImage,
        reference: SpatialImage,
        interpolation: Interpolation,
        work_dtype: np.dtype,
        threads: int | None,
    ) -> None:
        self.moving = moving
        self.reference = reference
        self.interpolation = interpolation
        self.work_dtype = work_dtype
        self.homography: np.ndarray | None = None
        if (
            isinstance(transform, Homography)
            and interpolation in _CV2_INTERPOLATORS
            and _is_pixel_geometry(moving)
            and _is_pixel_geometry(reference)
        ):
            # World = index on both sides: OpenCV warps in index space; H maps output (fixed) pixels to input
            # (moving) pixels, which is what WARP_INVERSE_MAP expects.
            self.homography = np.asarray(transform.matrix, dtype=np.float64)
            self.filter = None
            logger.debug("homography resampled with OpenCV warpPerspective in pixel space")
            return
        resampler = sitk.ResampleImageFilter()
        resampler.SetOutputOrigin(reference.origin)
        resampler.SetOutputSpacing(reference.spacing)
        resampler.SetOutputDirection(tuple(float(v) for v in reference.direction.ravel()))
        resampler.SetSize(tuple(int(v) for v in reference.size))
        resampler.SetTransform(_sitk_transform(transform, reference))
        resampler.SetOutputPixelType(sitk.sitkFloat64 if work_dtype == np.float64 else sitk.sitkFloat32)
        resampler.SetDefaultPixelValue(float("nan"))
        if threads is not None:
            resampler.SetNumberOfThreads(int(threads))
        self.filter = resampler

    def _moving_sitk(self, values: np.ndarray) -> sitk.Image:
        image = sitk.GetImageFromArray(np.ascontiguousarray(values, dtype=self.work_dtype))
        image.SetOrigin(self.moving.origin)
        image.SetSpacing(self.moving.spacing)
        image.SetDirection(tuple(float(v) for v in self.moving.direction.ravel()))
        return image

    def __call__(self, values: np.ndarray, interpolation: Interpolation | None = None) -> np.ndarray:
        """Resample ``values`` (moving grid). ITK: samples outside the moving image are NaN; OpenCV: 0."""
        interpolation = interpolation or self.interpolation
        if self.homography is not None:
            height, width = self.reference.shape
            return cv2.warpPerspective(
                np.ascontiguousarray(values, dtype=self.work_dtype),
                self.homography,
                (width, height),
                flags=_CV2_INTERPOLATORS[interpolation] | cv2.WARP_INVERSE_MAP,
                borderMode=cv2.BORDER_CONSTANT,
                borderValue=0.0,
            )
        assert self.filter is not None
        self.filter.SetInterpolator(_SITK_INTERPOLATORS[interpolation])
        return sitk.GetArrayFromImage(self.filter.Execute(self._moving_sitk(values)))


def resample_values(
    transform: Transform,
    image: SpatialImage,
    *,
    reference: SpatialImage | None = None,
    interpolation: Interpolation | str = Interpolation.LINEAR,
    threads: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Resample ``image`` onto ``reference``'s grid as floating values, with the mask of valid output pixels.

    The lower-level half of :func:`apply`: no rounding, no fill value, no
    metadata. ``transform`` maps reference (fixed) points to ``image``
    (moving) points.

    Parameters
    ----------
    transform : Transform
        Fixed -> moving point map.
    image : SpatialImage
        The moving image.
    reference : SpatialImage, optional
        Output grid (default: ``image``'s own).
    interpolation : Interpolation or str
        ``linear``, ``bspline``, ``nearest`` or ``label-gaussian``.
    threads : int, optional
        Threads for SimpleITK's resampler (default: SimpleITK's global default).

    Returns
    -------
    values : ndarray
        float32 (float64 for 32/64-bit integer or float64 input), spatial
        shape of ``reference`` plus ``image``'s channel axis if any; invalid
        pixels are NaN.
    valid : ndarray of bool
        True where the output sampled the moving image inside its grid and
        only from pixels with data (mask, nodata and NaN respected).

    Examples
    --------
    >>> import numpy as np
    >>> from coregister import SpatialImage, Translation
    >>> img = SpatialImage(np.arange(12.0).reshape(3, 4), origin=(0, 0), spacing=(1, 1))
    >>> values, valid = resample_values(Translation([1.0, 0.0]), img)
    >>> values[0].tolist(), valid[0].tolist()
    ([1.0, 2.0, 3.0, nan], [True, True, True, False])
    """
    interp = Interpolation.parse(interpolation)
    reference = image if reference is None else reference
    _check_compatible(transform, image, reference)
    work = _work_dtype(image.dtype)
    sampler = _Sampler(transform, image, reference, interp, work, threads)

    # Pixels without data (mask, nodata, NaN) are zeroed before interpolation and the fraction of the
    # interpolation weight that fell on pixels with data is resampled apart: an output pixel is valid when all
    # of it did. (NaN propagation would also taint neighbours of zero weight, and B-spline would spread it.)
    source_valid = image.valid_mask() if (_needs_valid_mask(image) or image.dtype.kind == "f") else None
    if source_valid is not None and source_valid.all():
        source_valid = None
    channels = [image.array[..., c] for c in range(image.n_channels)] if image.has_channels else [image.array]
    outputs = []
    for values in channels:
        values = np.asarray(values, dtype=work)
        if source_valid is not None:
            values = np.where(source_valid, values, 0.0).astype(work, copy=False)
        outputs.append(sampler(values))
    valid = ~np.isnan(outputs[0])  # ITK: outside the moving image (the default value is NaN)
    if source_valid is not None or sampler.homography is not None:
        # OpenCV blends its border value in: the fraction also says whether the sample fell inside the image.
        weights = np.ones(image.shape, dtype=work) if source_valid is None else source_valid.astype(work)
        footprint = Interpolation.NEAREST if interp == Interpolation.NEAREST else Interpolation.LINEAR
        fraction = sampler(weights, footprint)
        valid &= np.nan_to_num(fraction, nan=0.0) >= _VALID_FRACTION
    for out in outputs:
        out[~valid] = np.nan
    values = np.stack(outputs, axis=-1) if image.has_channels else outputs[0]
    return values, valid


def _check_compatible(transform: Transform, image: SpatialImage, reference: SpatialImage) -> None:
    if not isinstance(transform, Transform):
        raise GeometryError(f"expected a coregister Transform, got {type(transform).__name__}; see coregister.read_transform")
    if not (transform.ndim == image.ndim == reference.ndim):
        raise GeometryError(
            f"a {transform.ndim}D transform cannot resample a {image.ndim}D image onto a {reference.ndim}D grid; "
            "give images and transform of the same dimension"
        )
    if image.crs is not None and reference.crs is not None and image.crs != reference.crs:
        raise GeometryError(
            f"moving CRS {image.crs.to_string()!r} differs from the reference CRS {reference.crs.to_string()!r}; "
            "reproject the moving raster first (coregister.geo), a registration transform does not change CRS"
        )


# Metadata that describes the pixel values (per band, display range) rather than the grid: it comes from the
# moving image, whose values the output holds, or is dropped.
_VALUE_KEYS = ("bands", "band_tags", "band_descriptions", "colorinterp", "colormaps", "scales", "offsets", "units")
_NIFTI_VALUE_FIELDS = ("cal_min", "cal_max")


def _derived_meta(reference: SpatialImage, image: SpatialImage, dtype: np.dtype, nodata: float | None) -> dict[str, Any]:
    """The reference's metadata (grid, CRS, header, profile), made true for the resampled moving values."""
    meta = dict(reference.meta)
    meta.pop("source_path", None)  # the output was not read from that file
    for key in _VALUE_KEYS:
        if key in image.meta:
            meta[key] = image.meta[key]
        else:
            meta.pop(key, None)
    if isinstance(meta.get("nifti"), dict):
        meta["nifti"] = {k: v for k, v in meta["nifti"].items() if k not in _NIFTI_VALUE_FIELDS}
    if image.has_channels and "trailing_axis" in image.meta:
        meta["trailing_axis"] = image.meta["trailing_axis"]
    elif not image.has_channels:
        meta.pop("trailing_axis", None)
    profile = meta.get("profile")
    if isinstance(profile, dict):
        meta["profile"] = {**profile, "dtype": np.dtype(dtype).name, "nodata": nodata}
    return meta


@overload
def apply(
    transform: Transform, image: Any, *, reference: Any = ..., interpolation: Interpolation | str = ...,
    default_value: float = ..., output_dtype: Any = ..., threads: int | None = ..., like: None = ...,
) -> SpatialImage: ...


@overload
def apply(
    transform: Transform, image: Any, *, reference: Any = ..., interpolation: Interpolation | str = ...,
    default_value: float = ..., output_dtype: Any = ..., threads: int | None = ..., like: str,
) -> Any: ...


def apply(
    transform: Transform,
    image: Any,
    *,
    reference: Any = None,
    interpolation: Interpolation | str = Interpolation.LINEAR,
    default_value: float = 0.0,
    output_dtype: Any = None,
    threads: int | None = None,
    like: str | None = None,
) -> Any:
    """Resample ``image`` (moving) onto ``reference``'s grid (fixed) through ``transform``.

    ``transform`` maps fixed-space points to moving space (ITK's convention,
    what :func:`coregister.register` returns): each output pixel centre ``x``
    takes the moving image's value at ``transform(x)``. Composite transforms
    apply their last member first.

    Parameters
    ----------
    transform : Transform
        Fixed -> moving point map (any :mod:`coregister.transforms` value;
        a :class:`~coregister.Homography` is resampled with OpenCV's
        ``warpPerspective`` when both images have pixel geometry and the
        interpolation is linear or nearest (OpenCV places samples to 1/32
        pixel), through a displacement field sampled at every output pixel
        (exact) otherwise).
    image : SpatialImage, SimpleITK.Image, nibabel image or xarray.DataArray
        The moving image; a trailing channel axis is resampled channel by
        channel.
    reference : same kinds, optional
        The grid, CRS and metadata of the output (default: ``image`` itself).
    interpolation : Interpolation or str
        ``linear`` (default) or ``bspline`` for intensities; ``nearest`` or
        ``label-gaussian`` for label maps.
    default_value : float
        Value of output pixels without data (outside the moving image, or
        where it had no data) when the moving image has no ``nodata`` value;
        with one, those pixels get ``nodata``.
    output_dtype : dtype, optional
        Output dtype (default: the moving image's); integer outputs are
        rounded and clipped to the dtype's range.
    threads : int, optional
        Threads for SimpleITK's resampler (default: SimpleITK's global default).
    like : {"input", "spatialimage", "sitk", "nibabel", "xarray"}, optional
        Return the output as this kind of object; ``"input"``: the kind of
        ``image`` (a nibabel image in, a nibabel image out). Default: a
        :class:`~coregister.SpatialImage`.

    Returns
    -------
    SpatialImage (or the kind ``like`` names)
        Reference geometry, CRS and metadata (raster profile dtype/count/nodata
        updated); the moving image's nodata; ``mask`` marking where the moving
        image had data (None when it had data everywhere).

    Examples
    --------
    >>> import numpy as np
    >>> from coregister import SpatialImage, Translation
    >>> img = SpatialImage(np.array([[0, 10, 20, 30]], np.uint8), origin=(0, 0), spacing=(1, 1))
    >>> out = apply(Translation([0.5, 0.0]), img, default_value=255)
    >>> out.array.tolist(), out.dtype.name, out.mask.tolist()
    ([[5, 15, 25, 255]], 'uint8', [[True, True, True, False]])
    >>> apply(Translation([0.5, 0.0]), img, interpolation="nearest", output_dtype=np.float32).array.tolist()
    [[10.0, 20.0, 30.0, 0.0]]
    >>> apply(Translation([0.5, 0.0]), img.to_sitk(), like="input").GetSize()   # a SimpleITK image in, one out
    (4, 1)
    """
    kind = resolve_like(like, image)
    image = as_spatial_image(image, name="image")
    reference = image if reference is None else as_spatial_image(reference, name="reference")
    values, valid = resample_values(transform, image, reference=reference, interpolation=interpolation, threads=threads)
    dtype = np.dtype(image.dtype if output_dtype is None else output_dtype)
    nodata = image.nodata
    fill = nodata if nodata is not None else default_value
    invalid = ~valid
    if invalid.any():
        if image.has_channels:
            values[invalid, :] = fill
        else:
            values[invalid] = fill
    array = _cast_to(values, dtype)
    out = SpatialImage(
        array,
        origin=reference.origin,
        spacing=reference.spacing,
        direction=reference.direction,
        crs=reference.crs if reference.crs is not None else image.crs,
        nodata=nodata,
        mask=None if valid.all() else valid,
        meta=_derived_meta(reference, image, dtype, nodata),
    )
    return to_kind(out, kind)


_Points = TypeVar("_Points", bound="PointSet")


@runtime_checkable
class PointSet(Protocol):
    """Points that carry more than coordinates (:class:`coregister.medical.Landmarks`): mapped, they keep the rest."""

    @property
    def points(self) -> np.ndarray: ...

    def with_points(self: _Points, points: Any) -> _Points: ...


@overload
def transform_points(transform: Transform, points: _Points, *, inverse: bool = False) -> _Points: ...
@overload
def transform_points(transform: Transform, points: Any, *, inverse: bool = False) -> np.ndarray: ...


def transform_points(transform: Transform, points: Any, *, inverse: bool = False) -> Any:
    """Map points through ``transform``: fixed space -> moving space, or moving -> fixed with ``inverse=True``.

    Registration transforms map fixed-space points to moving space, so
    landmarks picked on the fixed image map forward; landmarks picked on the
    moving image need ``inverse=True`` (solved numerically for a B-spline or
    a composite holding one).

    Parameters
    ----------
    transform : Transform
        Fixed -> moving point map.
    points : array_like, shape (n, d) or (d,), or Landmarks
        World coordinates (LPS mm for medical images, map units for rasters),
        ITK order ``(x, y[, z])``; or a :class:`coregister.medical.Landmarks`
        (any value with ``points`` and ``with_points``).
    inverse : bool
        Map moving-space points to fixed space instead.

    Returns
    -------
    ndarray or Landmarks
        Same shape as ``points``; landmarks come back as landmarks, their
        labels kept.

    Examples
    --------
    >>> from coregister import Translation
    >>> transform_points(Translation([1.0, 2.0]), [[0.0, 0.0]]).tolist()
    [[1.0, 2.0]]
    >>> transform_points(Translation([1.0, 2.0]), [1.0, 2.0], inverse=True).tolist()
    [0.0, 0.0]
    """
    if isinstance(points, PointSet):  # landmarks: labels travel with their points
        return points.with_points(transform_points(transform, points.points, inverse=inverse))
    if not inverse:
        return np.asarray(transform.transform_points(points))
    if isinstance(transform, BSpline | Composite):
        return np.asarray(transform.inverse_points(points))
    return np.asarray(transform.inverse().transform_points(points))
