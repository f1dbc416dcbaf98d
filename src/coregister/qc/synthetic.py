"""Known warps for validating a registration: seeded random transforms, warped and degraded images, the error.

The way to trust a registration pipeline on your own data is to move an
image by a transform you chose, register it back, and measure how far the
answer is from the truth. This module does the three steps:

* :func:`random_rigid`, :func:`random_affine`, :func:`random_bspline`:
  seeded transforms within stated bounds, about the image centre;
* :func:`warp`: the moving image for a fixed -> moving transform (the fixed
  image resampled through its inverse), and :func:`degrade`: noise, a
  smooth multiplicative bias field and a non-monotonic intensity remap (a
  T2-like contrast), so that a monomodal metric no longer applies;
* :func:`mean_displacement_error`: the mean distance between two
  transforms' images of a set of points (for example :func:`head_points`,
  the voxels above a low intensity threshold);
* :func:`random_motion` and :func:`motion_series`: a 4D series (fMRI-like)
  of a head moving by a known rigid trajectory, with noise and a slow
  signal drift, each volume sampled once from a finer source (the truth
  for motion correction);
* :func:`write_shifted_raster`: a raster file whose content is moved by a
  known sub-pixel shift, geotransform kept (the truth for geospatial
  coregistration: the correction to find is minus the shift).

Every transform maps fixed-space points to moving space.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import SimpleITK as sitk

from coregister.errors import GeometryError
from coregister.image import SpatialImage
from coregister.transforms import Affine, BSpline, Rigid, Transform, rotation_matrix

__all__ = [
    "degrade",
    "resample_through",
    "head_points",
    "mean_displacement_error",
    "motion_series",
    "random_affine",
    "random_bspline",
    "random_motion",
    "random_rigid",
    "warp",
    "write_shifted_raster",
]


def _rng(seed: int | np.random.Generator) -> np.random.Generator:
    return seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)


def random_rigid(
    image: SpatialImage,
    seed: int | np.random.Generator,
    *,
    max_angle_deg: float = 10.0,
    max_shift_mm: float = 10.0,
) -> Rigid:
    """A seeded rigid transform about the image centre: angles and shifts uniform in ``±max``.

    In 3D each Euler angle (about x, y, z) and each shift component is drawn
    independently; in 2D one angle and two shifts.

    Examples
    --------
    >>> import numpy as np
    >>> img = SpatialImage(np.zeros((20, 30)), origin=(0, 0), spacing=(1, 1))
    >>> t = random_rigid(img, 0)
    >>> bool(abs(t.angles_deg[0]) <= 10 and np.all(np.abs(t.translation) <= 10)), t.center.tolist()
    (True, [14.5, 9.5])
    """
    rng = _rng(seed)
    n_angles = 1 if image.ndim == 2 else 3
    angles = np.deg2rad(rng.uniform(-max_angle_deg, max_angle_deg, n_angles))
    shift = rng.uniform(-max_shift_mm, max_shift_mm, image.ndim)
    return Rigid(rotation_matrix(angles.tolist() if n_angles == 3 else float(angles[0])), shift, image.world_centre)


def random_affine(
    image: SpatialImage,
    seed: int | np.random.Generator,
    *,
    max_angle_deg: float = 10.0,
    max_shift_mm: float = 10.0,
    scale_range: tuple[float, float] = (0.9, 1.1),
    max_shear: float = 0.05,
) -> Affine:
    """A seeded affine transform about the image centre: ``A = R S K`` (rotation, scales, unit upper shear).

    Examples
    --------
    >>> import numpy as np
    >>> from coregister.transforms import decompose
    >>> img = SpatialImage(np.zeros((8, 8, 8)), origin=(0, 0, 0), spacing=(1, 1, 1))
    >>> parts = decompose(random_affine(img, 1).matrix)
    >>> bool(all(0.9 <= s <= 1.1 for s in parts["scales"]) and all(abs(h) <= 0.05 + 1e-9 for h in parts["shears"]))
    True
    """
    rng = _rng(seed)
    d = image.ndim
    n_angles = 1 if d == 2 else 3
    angles = np.deg2rad(rng.uniform(-max_angle_deg, max_angle_deg, n_angles))
    rotation = rotation_matrix(angles.tolist() if n_angles == 3 else float(angles[0]))
    scales = np.diag(rng.uniform(scale_range[0], scale_range[1], d))
    shear = np.eye(d)
    shear[np.triu_indices(d, 1)] = rng.uniform(-max_shear, max_shear, d * (d - 1) // 2)
    shift = rng.uniform(-max_shift_mm, max_shift_mm, d)
    return Affine(rotation @ scales @ shear, shift, image.world_centre)


def random_bspline(
    image: SpatialImage,
    seed: int | np.random.Generator,
    *,
    mesh_mm: float = 50.0,
    max_displacement_mm: float = 4.0,
) -> BSpline:
    """A seeded smooth cubic B-spline over the image: random coefficients on a ``mesh_mm`` grid.

    Coefficients are uniform in ``±max_displacement_mm`` per axis, so no
    displacement exceeds that bound (B-spline weights sum to one); with a
    mesh much coarser than the displacement, the map does not fold.

    Examples
    --------
    >>> import numpy as np
    >>> img = SpatialImage(np.zeros((64, 64)), origin=(0, 0), spacing=(1, 1))
    >>> b = random_bspline(img, 0, mesh_mm=20.0)
    >>> bool(np.abs(b.displacement(img.world_grid().reshape(-1, 2))).max() <= 4.0)
    True
    """
    rng = _rng(seed)
    extent = [n * s for n, s in zip(image.size, image.spacing, strict=True)]
    mesh = [max(1, int(round(e / mesh_mm))) for e in extent]
    reference = image.to_sitk() if not image.has_channels else image.channel(0).to_sitk()
    tx = sitk.BSplineTransformInitializer(reference, mesh, 3)
    tx.SetParameters(tuple(rng.uniform(-max_displacement_mm, max_displacement_mm, len(tx.GetParameters())).tolist()))
    from coregister.transforms import from_sitk

    out = from_sitk(tx)
    assert isinstance(out, BSpline)
    return out


def warp(image: SpatialImage, transform: Transform, *, inverse: Transform | None = None) -> SpatialImage:
    """The moving image for which ``transform`` is the true fixed -> moving map.

    ``moving(y) = image(transform⁻¹(y))`` on ``image``'s grid (linear
    interpolation, 0 outside). A B-spline has no closed-form inverse: pass
    ``inverse`` explicitly, or build the truth the other way round: resample
    through a map ``S`` with :func:`resample_through`, and the true
    fixed -> moving map is ``S⁻¹`` (``BSpline.inverse_points``).

    Parameters
    ----------
    image : SpatialImage
        The fixed image.
    transform : Transform
        The fixed -> moving map the registration should recover.
    inverse : Transform, optional
        The inverse of ``transform`` when it has no closed form.

    Examples
    --------
    >>> import numpy as np
    >>> from coregister import Translation
    >>> img = SpatialImage(np.arange(25.0).reshape(5, 5), origin=(0, 0), spacing=(1, 1))
    >>> moved = warp(img, Translation([1.0, 0.0]))  # content moves +1 in x
    >>> moved.array[0, 1:].tolist() == img.array[0, :-1].tolist()
    True
    """
    if transform.ndim != image.ndim:
        raise GeometryError(f"a {transform.ndim}D transform cannot warp a {image.ndim}D image")
    back = inverse if inverse is not None else transform.inverse()
    return resample_through(image, back)


def resample_through(image: SpatialImage, transform: Transform) -> SpatialImage:
    """``image`` sampled at ``transform(x)`` for every pixel centre ``x`` of its own grid (linear, 0 outside)."""
    source = image.to_sitk()
    values = sitk.Resample(source, source, transform.to_sitk(), sitk.sitkLinear, 0.0, sitk.sitkFloat32)
    return image.replace(array=sitk.GetArrayFromImage(values), mask=None, nodata=None)


def degrade(
    image: SpatialImage,
    seed: int | np.random.Generator,
    *,
    noise: float = 0.01,
    bias: float = 0.02,
    remap: str | None = "t2",
) -> SpatialImage:
    """Noise, a smooth bias field and a non-monotonic remap, as a different scanner or contrast would give.

    Intensities are first scaled so that the 99.5th percentile of the
    non-zero values is 1. Then:

    * ``remap="t2"``: values above 0.1 (tissue) become ``1.3 - v + 0.15 sin(8 v)``
      (dark becomes bright, with a ripple, so no monotonic map undoes it);
      values below stay (background stays dark). ``None`` keeps the contrast;
    * a multiplicative bias field ``exp(c · (x, y, z, xy))`` over the image's
      normalised coordinates, ``c`` normal with standard deviation ``bias``;
    * Gaussian noise of standard deviation ``noise``.

    Returns a float32 image on the same grid.

    Examples
    --------
    >>> import numpy as np
    >>> img = SpatialImage(np.linspace(0, 1, 400).reshape(20, 20), origin=(0, 0), spacing=(1, 1))
    >>> out = degrade(img, 0, noise=0.0, bias=0.0)
    >>> round(float(img.array[10, 0]), 4), round(float(img.array[19, 19]), 4)  # mid grey, brightest
    (0.5013, 1.0)
    >>> round(float(out.array[10, 0]), 4), round(float(out.array[19, 19]), 4)  # brighter, darker
    (0.6798, 0.4424)
    """
    rng = _rng(seed)
    values = np.asarray(image.array, dtype=np.float64)
    positive = values[values > 0]
    top = float(np.percentile(positive, 99.5)) if positive.size else 1.0
    values = values / (top if top > 0 else 1.0)
    if remap == "t2":
        values = np.where(values > 0.1, 1.3 - values + 0.15 * np.sin(8.0 * values), values)
    elif remap is not None:
        raise GeometryError(f"remap={remap!r}: choose 't2' or None")
    if bias > 0:
        axes = np.meshgrid(*[np.linspace(-1.0, 1.0, n) for n in image.shape], indexing="ij")
        coefficients = rng.normal(0.0, bias, image.ndim + 1)
        exponent = sum(c * a for c, a in zip(coefficients, axes, strict=False)) + coefficients[-1] * axes[-1] * axes[-2]
        values = values * np.exp(exponent)
    if noise > 0:
        values = values + rng.normal(0.0, noise, values.shape)
    return image.replace(array=values.astype(np.float32), mask=None, nodata=None)


def head_points(image: SpatialImage, *, threshold_fraction: float = 0.05, step: int = 1) -> np.ndarray:
    """World coordinates of the voxels brighter than ``threshold_fraction`` of the 99th percentile (every ``step``-th).

    Examples
    --------
    >>> import numpy as np
    >>> img = SpatialImage(np.eye(3), origin=(0, 0), spacing=(2, 2))
    >>> head_points(img).tolist()
    [[0.0, 0.0], [2.0, 2.0], [4.0, 4.0]]
    """
    values = np.asarray(image.array, dtype=float)
    positive = values[values > 0]
    level = threshold_fraction * (float(np.percentile(positive, 99)) if positive.size else 0.0)
    index = np.argwhere(values > level)[::step, ::-1].astype(float)
    return image.index_to_world(index)


def mean_displacement_error(estimate: Transform, truth: Transform | Any, points: Sequence[Sequence[float]] | np.ndarray) -> float:
    """Mean distance between ``estimate(p)`` and ``truth(p)`` over ``points`` (world units).

    ``truth`` may be a transform or a callable mapping an ``(n, d)`` array of
    points (for example a numerically inverted B-spline).

    Examples
    --------
    >>> from coregister import Translation
    >>> mean_displacement_error(Translation([1.0, 0.0]), Translation([0.0, 0.0]), [[0.0, 0.0], [5.0, 5.0]])
    1.0
    """
    pts = np.atleast_2d(np.asarray(points, dtype=float))
    mapped = truth.transform_points(pts) if isinstance(truth, Transform) else np.asarray(truth(pts))
    return float(np.linalg.norm(np.atleast_2d(estimate.transform_points(pts)) - mapped, axis=1).mean())




def random_motion(
    n_volumes: int,
    seed: int | np.random.Generator,
    *,
    centre: Sequence[float] = (0.0, 0.0, 0.0),
    max_shift_mm: float = 3.0,
    max_angle_deg: float = 3.0,
) -> tuple[Rigid, ...]:
    """A seeded head-motion trajectory: one rigid pose per volume, about ``centre``.

    Each of the six parameters (three shifts, three Euler angles) follows a
    smoothed random walk with two sudden jumps (a head nod), is centred on
    its mean and scaled so that its largest magnitude is between half and
    all of ``max_shift_mm`` or ``max_angle_deg``.

    Returns
    -------
    tuple of Rigid
        Pose ``M_k`` of volume ``k``: a point of the head at rest lies at
        ``M_k(p)`` in volume ``k`` (:func:`motion_series` samples volume
        ``k`` at ``M_k⁻¹``). The fixed -> moving map that registers volume
        ``k`` to volume ``r`` is ``M_k ∘ M_r⁻¹``.

    Examples
    --------
    >>> import numpy as np
    >>> poses = random_motion(20, 0)
    >>> len(poses), max(float(np.abs(p.translation).max()) for p in poses) <= 3.0
    (20, True)
    >>> max(float(np.abs(p.angles_deg).max()) for p in poses) <= 3.0 + 1e-9
    True
    """
    from scipy import ndimage

    rng = _rng(seed)
    walk = np.cumsum(rng.normal(0.0, 1.0, (n_volumes, 6)), axis=0)
    walk = ndimage.gaussian_filter1d(walk, 2.0, axis=0) if n_volumes > 1 else walk
    for start in rng.choice(n_volumes, size=min(2, n_volumes), replace=False):
        walk[start:] += rng.normal(0.0, 2.0, 6)
    walk -= walk.mean(axis=0)
    peak = np.abs(walk).max(axis=0)
    walk = walk / np.where(peak > 0, peak, 1.0) * rng.uniform(0.5, 1.0, 6)
    shifts, angles = walk[:, :3] * max_shift_mm, np.deg2rad(walk[:, 3:] * max_angle_deg)
    return tuple(Rigid.from_angles(a, translation=t, center=centre) for t, a in zip(shifts, angles, strict=True))


def motion_series(
    source: SpatialImage,
    grid: SpatialImage,
    poses: Sequence[Rigid],
    *,
    seed: int | np.random.Generator = 0,
    noise: float = 0.01,
    drift: float = 0.05,
    fwhm_mm: Sequence[float] | None = None,
) -> SpatialImage:
    """A 4D series on ``grid``: ``source`` moved by each pose, blurred to the grid's resolution, noisy and drifting.

    Volume ``k`` is ``source`` sampled at ``poses[k]⁻¹(y)`` for every voxel
    centre ``y`` of ``grid``: a cubic B-spline of ``source`` smoothed by a
    Gaussian of ``fwhm_mm`` (default: the grid's spacing, a voxel's point
    spread), each volume sampled once, so that no volume is smoother than
    another. Then the signal drifts (volume ``k`` scaled by
    ``1 + drift * k / (n - 1)``) and Gaussian noise of standard deviation
    ``noise`` times the first volume's 99th percentile is added.

    Parameters
    ----------
    source : SpatialImage
        A finer 3D image (a 1 mm head).
    grid : SpatialImage
        The series' grid (its values are not used).
    poses : sequence of Rigid
        One pose per volume (:func:`random_motion`).
    seed : int or Generator
        Seed of the noise.
    noise, drift : float
        Noise level and total drift, as fractions of the signal.
    fwhm_mm : sequence of float, optional
        Blur along the grid's axes ``(x, y, z)``.

    Returns
    -------
    SpatialImage
        ``grid``'s geometry, float32 values with a trailing time axis
        (``meta["trailing_axis"] == "time"``).

    Examples
    --------
    >>> import numpy as np
    >>> z, y, x = np.mgrid[0:40, 0:40, 0:40]
    >>> ball = SpatialImage((((x - 20.0) ** 2 + (y - 20.0) ** 2 + (z - 20.0) ** 2) < 100).astype(np.float32),
    ...                     origin=(0, 0, 0), spacing=(1, 1, 1))
    >>> grid = SpatialImage(np.zeros((10, 10, 10), np.float32), origin=(1.5, 1.5, 1.5), spacing=(4, 4, 4))
    >>> poses = (Rigid(np.eye(3), [0.0, 0.0, 0.0]), Rigid(np.eye(3), [4.0, 0.0, 0.0]))
    >>> series = motion_series(ball, grid, poses, noise=0.0, drift=0.0)
    >>> series.array.shape, series.meta["trailing_axis"]
    ((10, 10, 10, 2), 'time')
    >>> bool(np.allclose(series.array[5, 5, 5:9, 1], series.array[5, 5, 4:8, 0], atol=1e-3))  # moved one voxel in x
    True
    """
    from scipy import ndimage

    if source.ndim != 3 or grid.ndim != 3 or source.has_channels:
        raise GeometryError("motion_series needs a single-channel 3D source and a 3D grid")
    rng = _rng(seed)
    points = grid.world_grid().reshape(-1, 3)
    corners = grid.index_to_world(np.array(np.meshgrid(*[[0, n - 1] for n in grid.size], indexing="ij")).reshape(3, -1).T)
    reach = np.vstack([source.world_to_index(pose.inverse().transform_points(corners)) for pose in poses])
    fwhm = np.asarray(grid.spacing if fwhm_mm is None else fwhm_mm, dtype=float)
    # the blur along each source axis: the grid's blur projected onto it, in source voxels
    cosines = np.asarray(source.direction).T @ np.asarray(grid.direction)
    sigma_xyz = np.sqrt((cosines**2) @ (fwhm / 2.3548) ** 2) / np.asarray(source.spacing)
    margin = np.ceil(3.0 * sigma_xyz + 4.0).astype(int)
    low = np.maximum(np.floor(reach.min(axis=0)).astype(int) - margin, 0)
    high = np.minimum(np.ceil(reach.max(axis=0)).astype(int) + margin + 1, np.asarray(source.size))
    crop = np.asarray(source.array, dtype=np.float64)[low[2]:high[2], low[1]:high[1], low[0]:high[0]]
    coefficients = ndimage.spline_filter(ndimage.gaussian_filter(crop, sigma_xyz[::-1]), order=3)
    volumes = []
    scale = 1.0
    for k, pose in enumerate(poses):
        index = source.world_to_index(pose.inverse().transform_points(points)) - low
        values = ndimage.map_coordinates(coefficients, index[:, ::-1].T, order=3, prefilter=False, mode="constant")
        if k == 0:
            positive = values[values > 0]
            scale = float(np.percentile(positive, 99)) if positive.size else 1.0
        values = values * (1.0 + drift * k / max(len(poses) - 1, 1)) + rng.normal(0.0, noise * scale, values.shape)
        volumes.append(values.reshape(grid.shape).astype(np.float32))
    return grid.replace(array=np.stack(volumes, axis=-1), mask=None, nodata=None, meta={"trailing_axis": "time"})

def write_shifted_raster(
    source: str | os.PathLike[str],
    output: str | os.PathLike[str],
    shift_px: tuple[float, float],
    *,
    window: tuple[tuple[int, int], tuple[int, int]] | None = None,
) -> Path:
    """Write ``source`` with every band's content moved by ``shift_px`` (rows, cols); geotransform kept.

    The bands are shifted with ``scipy.ndimage.shift`` (cubic spline, edge
    values extended); the valid area (pixels differing from nodata in every
    band) moves with them, to the nearest pixel, and what the shift brings in
    from outside is set to nodata. Integer values are rounded and clipped to
    the dtype's range and to at least 1, so that no valid pixel becomes the
    nodata value 0. The output is an untiled GeoTIFF with the source's
    profile otherwise (dtype, CRS, compression), declaring the source's
    nodata, or 0 when the source has none. A registration of the
    output (target) to the unshifted source (reference) should find the
    correction ``(-shift_px[1], -shift_px[0])`` in (cols, rows).

    Parameters
    ----------
    source : path
        A raster rasterio reads (GeoTIFF); never overwritten.
    output : path
        The GeoTIFF to write (atomically).
    shift_px : (float, float)
        How far the content moves, in pixels, along rows (down) and columns (right).
    window : ((int, int), (int, int)), optional
        ``((row_start, row_stop), (col_start, col_stop))``: shift and write
        only that block of ``source`` (its geotransform moved to the block).

    Returns
    -------
    Path
        ``output``.

    Examples
    --------
    >>> import rasterio, tempfile
    >>> folder = Path(tempfile.mkdtemp())
    >>> values = np.zeros((1, 16, 16), np.uint8)
    >>> values[0, 4:12, 4:12] = 200  # a bright square on a nodata background
    >>> profile = dict(driver="GTiff", width=16, height=16, count=1, dtype="uint8", nodata=0,
    ...                crs="EPSG:32633", transform=rasterio.Affine(10, 0, 400000, 0, -10, 5800000))
    >>> with rasterio.open(folder / "source.tif", "w", **profile) as dst:
    ...     dst.write(values)
    >>> out = write_shifted_raster(folder / "source.tif", folder / "moved.tif", (2.0, -1.0))
    >>> with rasterio.open(out) as ds:
    ...     moved = ds.read(1)
    ...     ds.transform == profile["transform"], ds.nodata
    (True, 0.0)
    >>> bool(np.array_equal(moved[6:14, 3:11], values[0, 4:12, 4:12]))  # 2 px down, 1 px left
    True
    """
    import rasterio
    from affine import Affine as GeoTransform
    from rasterio.windows import Window
    from scipy import ndimage

    from coregister._files import atomic_path, refuse_overwriting_input
    from coregister.io.raster import open_dataset

    refuse_overwriting_input(Path(output), source, fix="write the shifted raster to another path")
    with open_dataset(source, what="raster to shift") as ds:
        block = Window.from_slices(*window) if window else None
        profile = ds.profile
        data = ds.read(window=block).astype(np.float64)
        if block is not None:
            profile.update(width=int(block.width), height=int(block.height),
                           transform=ds.transform @ GeoTransform.translation(block.col_off, block.row_off))
        nodata = ds.nodata if ds.nodata is not None else 0
    valid = np.all(data != nodata, axis=0)
    moved_valid = ndimage.shift(valid.astype(np.uint8), shift_px, order=0, mode="constant") > 0
    moved = np.stack([ndimage.shift(band, shift_px, order=3, mode="nearest") for band in data])
    dtype = np.dtype(profile["dtype"])
    if np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        moved = np.clip(np.rint(moved), max(info.min, 1), info.max)
    moved = moved.astype(dtype)
    moved[:, ~moved_valid] = nodata
    profile.pop("blockxsize", None)
    profile.pop("blockysize", None)
    profile.update(driver="GTiff", tiled=False, nodata=nodata)
    with atomic_path(output) as tmp, rasterio.open(tmp, "w", **profile) as dst:
        dst.write(moved)
    return Path(output)
