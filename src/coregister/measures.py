"""Similarity measures (NCC, mutual information, MSE, SSIM) and the Jacobian determinant of a transform.

:func:`compare` is what :func:`coregister.register` calls before and after a
run: it resamples the moving image onto the fixed grid (SimpleITK, linear)
and computes every measure in one pass with numpy, over the fixed mask and
only where the resampled moving image has data; SSIM (scikit-image's
``structural_similarity``) over the same overlap. The array-level helpers
(:func:`ncc`, :func:`mutual_information`, :func:`mse`, :func:`ssim`) are for
code that already holds two aligned arrays. Accuracy against known correspondences
(landmark errors, Dice overlap of label maps) is in
:mod:`coregister.medical.evaluate` and :mod:`coregister.medical.overlap`.

Transforms map fixed-space points to moving space (DESIGN convention 3).
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from coregister.errors import GeometryError
from coregister.image import SpatialImage
from coregister.resample import resample_values
from coregister.transforms import Transform

__all__ = [
    "compare",
    "pair_figures",
    "resampled_pair",
    "jacobian_determinant",
    "mse",
    "mutual_information",
    "ncc",
    "ssim",
]

logger = logging.getLogger(__name__)


def _as_array(value: Any) -> np.ndarray:
    return value.array if isinstance(value, SpatialImage) else np.asarray(value)


def _select(a: Any, b: Any, mask: Any) -> tuple[np.ndarray, np.ndarray]:
    """The values of ``a`` and ``b`` where ``mask`` (and both finite), as float64 vectors."""
    a, b = _as_array(a), _as_array(b)
    if a.shape != b.shape:
        raise GeometryError(f"arrays of shapes {a.shape} and {b.shape} differ; resample one onto the other's grid first")
    keep = np.ones(a.shape, dtype=bool) if mask is None else np.asarray(_as_array(mask), dtype=bool)
    if keep.shape != a.shape:
        raise GeometryError(f"mask of shape {keep.shape} does not fit arrays of shape {a.shape}")
    for arr in (a, b):
        if arr.dtype.kind == "f":
            keep = keep & np.isfinite(arr)
    return a[keep].astype(np.float64, copy=False), b[keep].astype(np.float64, copy=False)  # indexing copied them


def _ncc_mse(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """NCC and MSE in one pass of dot products; ``a`` and ``b`` are float64 and are centred in place."""
    if a.size == 0:
        return 0.0, float("nan")
    diff = a - b
    mse = float(diff @ diff) / a.size  # directly: the moments would cancel when the images nearly agree
    del diff
    a -= a.mean()
    b -= b.mean()
    saa, sbb, sab = float(a @ a), float(b @ b), float(a @ b)
    denominator = float(np.sqrt(saa * sbb))
    # a constant image carries no correlation information
    return (sab / denominator if denominator > 0.0 else 0.0), mse


def _mse(a: np.ndarray, b: np.ndarray) -> float:
    if a.size == 0:
        return float("nan")
    diff = a - b
    return float(diff @ diff) / diff.size


def _bin_index(values: np.ndarray, bins: int) -> np.ndarray:
    """Equal-width bin of each value over its own range (float32 arithmetic: bins are coarse)."""
    low, high = float(values.min()), float(values.max())
    if high <= low:
        return np.zeros(values.shape, dtype=np.intp)
    scaled = values.astype(np.float32)  # a copy
    scaled -= np.float32(low)
    scaled *= np.float32(bins / (high - low))
    index = scaled.astype(np.intp)
    np.clip(index, 0, bins - 1, out=index)  # the maximum falls in the last bin
    return index


def _mutual_information(a: np.ndarray, b: np.ndarray, bins: int) -> float:
    if bins < 2:
        raise GeometryError(f"bins={bins}: a joint histogram needs at least 2 bins per image (32 is usual)")
    if a.size == 0:
        return 0.0
    index = _bin_index(a, bins)
    index *= bins
    index += _bin_index(b, bins)
    p = np.bincount(index, minlength=bins * bins).reshape(bins, bins) / a.size
    pa = p.sum(axis=1, keepdims=True)
    pb = p.sum(axis=0, keepdims=True)
    nz = p > 0
    return float(max(0.0, np.sum(p[nz] * np.log(p[nz] / (pa @ pb)[nz]))))


def ncc(a: Any, b: Any, mask: Any = None) -> float:
    """Normalised cross-correlation (Pearson's r) of two aligned arrays, in [-1, 1].

    Parameters
    ----------
    a, b : ndarray or SpatialImage
        Same shape. Non-finite values are left out.
    mask : ndarray of bool, optional
        Where to compare (True = use).

    Returns
    -------
    float
        0 when either array is constant over the mask or the mask is empty.

    Examples
    --------
    >>> import numpy as np
    >>> x = np.arange(10.0)
    >>> ncc(x, 3 * x + 1), ncc(x, -x)
    (1.0, -1.0)
    """
    return _ncc_mse(*_select(a, b, mask))[0]


def mse(a: Any, b: Any, mask: Any = None) -> float:
    """Mean squared difference of two aligned arrays (NaN when the mask is empty).

    Examples
    --------
    >>> import numpy as np
    >>> mse(np.zeros(4), np.array([0.0, 1.0, 2.0, 3.0]))
    3.5
    """
    return _mse(*_select(a, b, mask))


def mutual_information(a: Any, b: Any, mask: Any = None, *, bins: int = 32) -> float:
    """Mutual information (nats) from the joint histogram of two aligned arrays.

    Each array's range over the mask is split into ``bins`` equal bins.

    Examples
    --------
    >>> import numpy as np
    >>> x = np.repeat(np.arange(4), 100)
    >>> remapped = np.array([2.0, 0.0, 3.0, 1.0])[x]  # non-monotonic, but one-to-one: MI = log(4)
    >>> bool(np.isclose(mutual_information(x, remapped, bins=4), np.log(4)))
    True
    >>> mutual_information(x, np.zeros_like(x))
    0.0
    """
    return _mutual_information(*_select(a, b, mask), bins)


#: side of SSIM's square (cubic) window, in pixels: scikit-image's default
SSIM_WINDOW = 7


def _ssim(a: np.ndarray, b: np.ndarray, keep: np.ndarray) -> float:
    """Mean SSIM over ``keep`` (pixels whose whole window lies in it, when there are any)."""
    from scipy import ndimage
    from skimage.metrics import structural_similarity

    if not keep.any():
        return float("nan")
    a = np.where(keep, a, a[keep].mean()).astype(np.float32)  # outside the overlap: flat, so it adds no structure
    b = np.where(keep, b, b[keep].mean()).astype(np.float32)
    low, high = float(a[keep].min()), float(a[keep].max())
    thin = [n for n in a.shape if n < 3]
    if thin:  # a volume one or two pixels thick: slice by slice along that axis
        axis = a.shape.index(thin[0])
        values = [_ssim(np.take(a, i, axis), np.take(b, i, axis), np.take(keep, i, axis)) for i in range(a.shape[axis])]
        weights = [int(np.take(keep, i, axis).sum()) for i in range(a.shape[axis])]
        finite = [(v, w) for v, w in zip(values, weights, strict=True) if np.isfinite(v) and w]
        return float(np.average([v for v, _ in finite], weights=[w for _, w in finite])) if finite else float("nan")
    win = min(SSIM_WINDOW, *(n if n % 2 else n - 1 for n in a.shape))
    _, full = structural_similarity(a, b, win_size=win, data_range=(high - low) or 1.0, full=True)
    inside = ndimage.minimum_filter(keep.astype(np.uint8), size=win, mode="constant", cval=0).astype(bool)
    return float(full[inside].mean() if inside.any() else full[keep].mean())


def ssim(a: Any, b: Any, mask: Any = None) -> float:
    """Structural similarity (scikit-image's ``structural_similarity``) of two aligned 2D or 3D arrays, over ``mask``.

    A 7-pixel square window in 2D, a 7-voxel cube in 3D (smaller along
    axes shorter than 7; slice by slice along an axis under 3 pixels);
    the data range is ``a``'s over the mask. Values outside the mask are
    replaced by each array's mean there, and the SSIM map is averaged over
    the pixels whose whole window lies in the mask (all of the mask when
    none does).

    Examples
    --------
    >>> import numpy as np
    >>> y, x = np.mgrid[0:32, 0:32]
    >>> image = np.sin(x / 3.0) + np.cos(y / 4.0)
    >>> ssim(image, image), round(ssim(image, image + 0.5 * np.random.default_rng(0).normal(size=image.shape)), 2)
    (1.0, 0.65)
    """
    a, b = _as_array(a), _as_array(b)
    if a.shape != b.shape:
        raise GeometryError(f"arrays of shapes {a.shape} and {b.shape} differ; resample one onto the other's grid first")
    keep = np.ones(a.shape, bool) if mask is None else np.asarray(_as_array(mask), dtype=bool)
    keep = keep & np.isfinite(a) & np.isfinite(b)
    return _ssim(a, b, keep)


def _intensity(image: SpatialImage, values: np.ndarray) -> np.ndarray:
    """Scalar intensity: multi-channel images are compared on their channel mean."""
    return values.mean(axis=-1) if image.has_channels else values


def resampled_pair(
    fixed: SpatialImage, moving: SpatialImage, transform: Transform, *, mask: Any = None, threads: int | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """``moving`` resampled onto ``fixed``'s grid through ``transform`` (linear), with the points to compare.

    Returns the fixed and the resampled moving intensities (channel means),
    ``keep`` (the fixed image's valid pixels and ``mask``, where the moving
    image had data) and the number of points the fixed region offers (the
    denominator of the overlap). :func:`compare` measures them; the quality
    check measures them once per answer in several ways.
    """
    values, valid = resample_values(transform, moving, reference=fixed, interpolation="linear", threads=threads)
    region = fixed.valid_mask() if (fixed.mask is not None or fixed.nodata is not None or fixed.dtype.kind == "f") else None
    if mask is not None:
        user = np.asarray(_as_array(mask), dtype=bool)
        if isinstance(mask, SpatialImage) and not mask.same_geometry(fixed):
            raise GeometryError("the mask's grid differs from the fixed image's; resample it with coregister.apply(..., interpolation='nearest')")
        if user.shape != fixed.shape:
            raise GeometryError(f"mask of shape {user.shape} does not fit the fixed image's shape {fixed.shape}")
        region = user if region is None else region & user
    n_region = int(region.sum()) if region is not None else int(np.prod(fixed.shape))
    keep = valid if region is None else valid & region
    return _intensity(fixed, np.asarray(fixed.array)), _intensity(moving, values), keep, n_region


def compare(
    fixed: SpatialImage,
    moving: SpatialImage,
    transform: Transform,
    *,
    mask: Any = None,
    bins: int = 32,
    threads: int | None = None,
) -> dict[str, float]:
    """Similarity of ``fixed`` and ``moving`` resampled onto its grid through ``transform``.

    ``transform`` maps fixed-space points to moving space, as
    :func:`coregister.register` returns it. The moving image is resampled
    with linear interpolation; the measures are computed over the fixed
    image's valid pixels (``mask``, nodata, finite), ``mask`` if given, and
    where the resampled moving image has data. Multi-channel images are
    compared on their channel mean. :func:`coregister.register` calls it on
    the fixed grid reduced to at most 500,000 points, so SSIM (:func:`ssim`:
    on the image, a 7-pixel window in 2D, a 7-voxel cube in 3D) stays a
    fraction of the run.

    Parameters
    ----------
    fixed, moving : SpatialImage
    transform : Transform
        Fixed -> moving point map (an identity gives the "before" figures).
    mask : ndarray of bool or SpatialImage, optional
        On the fixed grid, True where to compare.
    bins : int
        Joint-histogram bins per image for mutual information.
    threads : int, optional
        Threads for the resampling.

    Returns
    -------
    dict
        ``ncc`` (normalised cross-correlation), ``mi`` (mutual information,
        nats), ``mse`` (mean squared difference, NaN without overlap),
        ``ssim`` (structural similarity over the overlap, NaN without one) and
        ``overlap`` (fraction of the fixed mask where the moving image has
        data).

    Examples
    --------
    >>> import numpy as np
    >>> from coregister import SpatialImage, Translation
    >>> y, x = np.mgrid[0:32, 0:32]
    >>> fixed = SpatialImage(np.exp(-((x - 16.0) ** 2 + (y - 15.0) ** 2) / 40), origin=(0, 0), spacing=(1, 1))
    >>> moving = SpatialImage(np.exp(-((x - 18.0) ** 2 + (y - 15.0) ** 2) / 40), origin=(0, 0), spacing=(1, 1))
    >>> round(compare(fixed, moving, Translation([2.0, 0.0]))["ncc"], 9)
    1.0
    >>> compare(fixed, moving, Translation([0.0, 0.0]))["ncc"] < 0.95
    True
    """
    if transform.ndim != fixed.ndim or moving.ndim != fixed.ndim:
        raise GeometryError(
            f"cannot compare a {fixed.ndim}D fixed image with a {moving.ndim}D moving image through a "
            f"{transform.ndim}D transform; give images and transform of the same dimension"
        )
    fixed_values, moving_values, keep, n_region = resampled_pair(fixed, moving, transform, mask=mask, threads=threads)
    a = fixed_values[keep]
    b = moving_values[keep]
    if a.size == 0:
        logger.warning("the moving image does not overlap the fixed mask through this transform")
    return {**pair_figures(a, b, bins=bins), "ssim": _ssim(fixed_values, moving_values, keep),
            "overlap": float(a.size / n_region) if n_region else 0.0}


def pair_figures(a: np.ndarray, b: np.ndarray, *, bins: int = 32) -> dict[str, float]:
    """NCC, mutual information (nats) and MSE of two aligned vectors of values, in one pass.

    Examples
    --------
    >>> x = np.linspace(0.0, 1.0, 50)
    >>> figures = pair_figures(x, 2 * x + 1)
    >>> round(figures["ncc"], 9), round(figures["mse"], 4)
    (1.0, 2.3367)
    """
    mi = _mutual_information(np.asarray(a), np.asarray(b), bins)
    correlation, mean_squares = _ncc_mse(np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64))
    return {"ncc": correlation, "mi": mi, "mse": mean_squares}


#: points of the displacement field computed at once by :func:`jacobian_determinant` (bounds its memory)
_JACOBIAN_SLAB_POINTS = 1 << 18


def jacobian_determinant(transform: Transform, grid: SpatialImage, *, max_points: int | None = None) -> SpatialImage:
    """Jacobian determinant of ``transform`` at the pixel centres of ``grid`` (or of an evenly reduced copy).

    The transform maps fixed to moving points; the determinant is the local
    volume (area) change, and a value at or below 0 means the map folds.
    Derivatives are central differences of the sampled point map (one-sided
    at the grid's edges), taken in world units through the grid's direction
    and spacing: exact for linear maps, whatever the direction. The map is
    sampled slab by slab, so memory stays bounded on a full 1 mm grid.

    Parameters
    ----------
    transform : Transform
    grid : SpatialImage
        The fixed image (only its geometry is used).
    max_points : int, optional
        Reduce the grid evenly (per axis) to at most about this many points;
        None (the default) uses every pixel of ``grid``.

    Returns
    -------
    SpatialImage
        The determinants (float64) on the grid they were computed on.

    Examples
    --------
    >>> from coregister import Affine
    >>> grid = SpatialImage(np.zeros((20, 30)), origin=(0, 0), spacing=(2.0, 1.0))
    >>> det = jacobian_determinant(Affine(np.array([[1.5, 0.2], [0.0, 0.8]])), grid)
    >>> det.shape, round(float(det.array.min()), 12), round(float(det.array.max()), 12)  # 1.5 * 0.8
    ((20, 30), 1.2, 1.2)
    >>> jacobian_determinant(Affine(np.eye(2)), grid, max_points=150).shape
    (10, 15)
    """
    import SimpleITK as sitk

    sampled = grid
    if max_points is not None and int(np.prod(grid.shape)) > max_points:
        step = (float(np.prod(grid.shape)) / max(1, max_points)) ** (1.0 / grid.ndim)
        new_shape = tuple(max(3, int(round(n / step))) for n in grid.shape)
        new_spacing = tuple(sp * n / m for sp, n, m in zip(grid.spacing, grid.size, new_shape[::-1], strict=True))
        first_corner = grid.index_to_world([[-0.5] * grid.ndim])[0]
        origin = tuple(first_corner + grid.direction @ (0.5 * np.asarray(new_spacing)))
        sampled = SpatialImage(np.zeros(new_shape, np.uint8), origin=origin, spacing=new_spacing, direction=grid.direction)
    ndim = sampled.ndim
    shape = sampled.shape
    direction = [float(v) for v in np.asarray(sampled.direction).ravel()]
    world_from_index = np.linalg.inv(np.asarray(sampled.direction) @ np.diag(sampled.spacing))
    itk = transform.to_sitk()
    per_slice = int(np.prod(shape[1:]))
    rows = max(1, _JACOBIAN_SLAB_POINTS // max(1, per_slice))
    det = np.empty(shape, np.float64)
    for start in range(0, shape[0], rows):
        stop = min(shape[0], start + rows)
        low, high = max(0, start - 1), min(shape[0], stop + 1)  # one row of halo: central differences as on the whole
        corner = [0] * ndim
        corner[-1] = low  # index order (x, y[, z]): the first array axis is the last index axis
        size = [*sampled.size[:-1], high - low]
        field = sitk.TransformToDisplacementField(
            itk, sitk.sitkVectorFloat64, [int(v) for v in size],
            [float(v) for v in sampled.index_to_world([corner])[0]], [float(v) for v in sampled.spacing], direction,
        )
        displacement = sitk.GetArrayFromImage(field)  # (rows, y, x, d) or (rows, x, d), world components
        # d u / d index along x, y[, z] (array axes reversed); an axis of one pixel has no derivative
        gradients = [np.gradient(displacement, axis=a) if displacement.shape[a] > 1 else np.zeros_like(displacement)
                     for a in range(ndim - 1, -1, -1)]
        # [..., component, world axis]: the index derivatives through world_from_index, column by column (most
        # grids are axis-aligned: one product per column), plus the identity
        jac = np.empty((*displacement.shape, ndim))
        for w in range(ndim):
            terms = [gradients[a] * world_from_index[a, w] for a in range(ndim) if world_from_index[a, w] != 0.0]
            jac[..., w] = sum(terms[1:], terms[0])  # an invertible matrix has no zero column
            jac[..., w, w] += 1.0
        det[start:stop] = _determinant(jac[start - low: start - low + stop - start])
    return sampled.replace(array=det, mask=None, nodata=None)


def _determinant(m: np.ndarray) -> np.ndarray:
    """Determinants of a stack of 2 x 2 or 3 x 3 matrices by cofactors (LAPACK's batched LU is several times slower)."""
    if m.shape[-1] == 2:
        return m[..., 0, 0] * m[..., 1, 1] - m[..., 0, 1] * m[..., 1, 0]
    if m.shape[-1] == 3:
        return (m[..., 0, 0] * (m[..., 1, 1] * m[..., 2, 2] - m[..., 1, 2] * m[..., 2, 1])
                - m[..., 0, 1] * (m[..., 1, 0] * m[..., 2, 2] - m[..., 1, 2] * m[..., 2, 0])
                + m[..., 0, 2] * (m[..., 1, 0] * m[..., 2, 1] - m[..., 1, 1] * m[..., 2, 0]))
    return np.asarray(np.linalg.det(m))
