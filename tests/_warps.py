"""Seeded known warps of real photographs and of the MNI152 head, shared by the ECC, feature and chain tests.

Every warp is a 3x3 homogeneous matrix ``M`` in pixel coordinates ``(x, y)``
that maps **fixed** pixels to **moving** pixels (the direction every
coregister transform has): the moving image is ``moving(M x) = fixed(x)``,
made by sampling the fixed image at ``M^-1 y`` with cubic splines. Pixels
whose source falls outside the fixed image are black and marked invalid in
the returned mask (the warped border).

Volumes are warped in world space: the moving array is ``fixed`` resampled
through ``truth``'s inverse (SimpleITK, cubic B-spline, 0 outside), so
``truth`` (a coregister transform) is the fixed -> moving map to recover.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import SimpleITK as sitk
from scipy import ndimage
from skimage import color, data

from coregister.image import SpatialImage
from coregister.transforms import Homography, Transform


def photo(name: str) -> np.ndarray:
    """A scikit-image bundled photograph as float32 grey values in 0-255."""
    values = getattr(data, name)()
    if values.ndim == 3:
        values = color.rgb2gray(values[..., :3]) * 255.0
    return values.astype(np.float32)


def similarity_matrix(shape: tuple[int, int], angle_deg: float, scale: float, shift: np.ndarray) -> np.ndarray:
    """Rotation and scale about the image centre, then a shift (pixels)."""
    h, w = shape
    centre = np.array([(w - 1) / 2.0, (h - 1) / 2.0])
    a = np.deg2rad(angle_deg)
    linear = scale * np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
    matrix = np.eye(3)
    matrix[:2, :2] = linear
    matrix[:2, 2] = centre + np.asarray(shift, float) - linear @ centre
    return matrix


def random_warp(kind: str, shape: tuple[int, int], seed: int) -> np.ndarray:
    """A seeded warp of ``kind``: translation (sub-pixel, up to 10 px), rigid and similarity (rotation up to
    30 degrees, scale 0.8-1.25), affine (plus shears/anisotropic scales up to 12 %), homography (each corner
    moved by up to 10 % of the image size)."""
    rng = np.random.default_rng(seed)
    h, w = shape
    if kind == "translation":
        matrix = np.eye(3)
        matrix[:2, 2] = rng.uniform(-10, 10, 2)
        return matrix
    if kind in ("rigid", "similarity"):
        scale = 1.0 if kind == "rigid" else float(np.exp(rng.uniform(np.log(0.8), np.log(1.25))))
        return similarity_matrix(shape, rng.uniform(-30, 30), scale, rng.uniform(-15, 15, 2))
    if kind == "affine":
        matrix = similarity_matrix(shape, rng.uniform(-20, 20), 1.0, rng.uniform(-15, 15, 2))
        centre = np.array([(w - 1) / 2.0, (h - 1) / 2.0])
        extra = np.eye(2) + rng.uniform(-0.12, 0.12, (2, 2))
        linear = matrix[:2, :2] @ extra
        matrix[:2, 2] = matrix[:2, :2] @ centre + matrix[:2, 2] - linear @ centre
        matrix[:2, :2] = linear
        return matrix
    if kind == "homography":
        corners = np.array([[0, 0], [w - 1, 0], [w - 1, h - 1], [0, h - 1]], np.float32)
        moved = corners + (rng.uniform(-0.1, 0.1, (4, 2)) * [w, h]).astype(np.float32)
        return cv2.getPerspectiveTransform(corners, moved).astype(float)
    raise ValueError(kind)


def warp(values: np.ndarray, matrix: np.ndarray, *, noise: float = 0.0, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``(moving, valid)``: ``moving(y) = values(M^-1 y)`` (cubic spline), black and invalid outside, plus noise."""
    h, w = values.shape
    inverse = np.linalg.inv(matrix)
    yy, xx = np.mgrid[0:h, 0:w].astype(float)
    source = inverse @ np.stack([xx.ravel(), yy.ravel(), np.ones(xx.size)])
    source = source[:2] / source[2]
    moved = ndimage.map_coordinates(values.astype(float), [source[1], source[0]], order=3, mode="constant", cval=0.0)
    valid = (source[0] >= 0) & (source[0] <= w - 1) & (source[1] >= 0) & (source[1] <= h - 1)
    moved = moved.reshape(h, w)
    if noise:
        moved = moved + np.random.default_rng(seed + 1000).normal(0.0, noise, moved.shape)
    return moved.astype(np.float32), valid.reshape(h, w)


def pair(name: str, kind: str, seed: int, *, noise: float = 2.0) -> tuple[SpatialImage, SpatialImage, np.ndarray, np.ndarray]:
    """``(fixed, moving, moving_valid, M)`` for a bundled photo warped by ``random_warp(kind, ..., seed)``."""
    values = photo(name)
    matrix = random_warp(kind, values.shape, seed)
    moved, valid = warp(values, matrix, noise=noise, seed=seed)
    fixed_values = values + np.random.default_rng(seed + 2000).normal(0.0, noise, values.shape).astype(np.float32)
    fixed = SpatialImage(fixed_values, origin=(0, 0), spacing=(1, 1))
    return fixed, fixed.replace(array=moved), valid, matrix


def matrix_of(transform: Transform) -> np.ndarray:
    """The 3x3 point map of a 2D linear transform or homography."""
    if isinstance(transform, Homography):
        return np.asarray(transform.matrix)
    return np.asarray(transform.homogeneous)  # type: ignore[attr-defined]


def mean_error_px(estimate: Transform, truth: np.ndarray, shape: tuple[int, int]) -> float:
    """Mean displacement between the estimated and true maps over every pixel of the fixed image."""
    h, w = shape
    yy, xx = np.mgrid[0:h, 0:w].astype(float)
    points = np.stack([xx.ravel(), yy.ravel()], axis=1)
    expected = Homography(truth).transform_points(points)
    return float(np.mean(np.linalg.norm(estimate.transform_points(points) - expected, axis=1)))


def corner_error_px(estimate: Transform, truth: np.ndarray, shape: tuple[int, int]) -> float:
    """Mean displacement at the four image corners (the usual homography error)."""
    h, w = shape
    corners = np.array([[0, 0], [w - 1, 0], [w - 1, h - 1], [0, h - 1]], float)
    expected = Homography(truth).transform_points(corners)
    return float(np.mean(np.linalg.norm(estimate.transform_points(corners) - expected, axis=1)))


# ------------------------------------------------------------------ volumes
MNI = "medical/antspy/mni.nii.gz"


def mni(data: Callable[[str], Path], *, shrink: int = 1, sigma_mm: float = 0.0) -> SpatialImage:
    """MNI152 (1 mm), or smoothed by ``sigma_mm`` and shrunk by ``shrink`` per axis."""
    image = sitk.ReadImage(str(data(MNI)), sitk.sitkFloat32)
    if shrink > 1:
        image = sitk.Shrink(sitk.SmoothingRecursiveGaussian(image, sigma_mm), [shrink] * 3)
    return SpatialImage.from_sitk(image)


def warp_volume(fixed: SpatialImage, truth: Transform) -> np.ndarray:
    """The moving array for which ``truth`` is the fixed -> moving map (on the fixed grid, 0 outside)."""
    image = fixed.to_sitk()
    return sitk.GetArrayFromImage(sitk.Resample(image, image, truth.inverse().to_sitk(), sitk.sitkBSpline, 0.0))


def head_error_mm(estimate: Transform, truth: Transform, fixed: SpatialImage) -> float:
    """Mean distance between the estimated and true maps over the head (voxels brighter than 1000)."""
    head = fixed.world_grid()[np.asarray(fixed.array) > 1000]
    return float(np.linalg.norm(estimate.transform_points(head) - truth.transform_points(head), axis=1).mean())
