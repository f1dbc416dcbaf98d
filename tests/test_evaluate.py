"""Scoring a registration (``coregister.medical``): label maps through transforms, overlap, HD95, TRE, folding.

Every measure is checked against an answer known without it: Dice and
Jaccard of shifted blocks counted by hand, the 95th-percentile Hausdorff
distance of two concentric spheres (the difference of their radii, to a
voxel) and SimpleITK's own Hausdorff filter and scipy's distance transform on
the same surfaces, the TRE of a transform off the truth by a known
translation, the Jacobian of linear maps. Label maps warped with nearest and
label-Gaussian interpolation keep their dtype and their label set (the
ANTsPy atlas ``mnia``, at 2 mm to keep the test short).
"""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk
from scipy import ndimage
from scipy.spatial.transform import Rotation

import coregister as cr
from coregister.errors import ConfigError, GeometryError
from coregister.measures import jacobian_determinant
from coregister.medical import (
    Landmarks,
    dice_per_label,
    evaluate,
    hausdorff_per_label,
    jaccard_per_label,
    jacobian_summary,
)
from coregister.medical.overlap import surface_distances


@pytest.fixture(scope="module")
def atlas() -> cr.SpatialImage:
    """The ANTsPy atlas (116 labels, float32 on disk) on a 2 mm grid, nearest neighbour."""
    from conftest import require_data

    full = cr.read(require_data("medical/antspy/mnia.nii.gz"))
    origin = np.asarray(full.origin) + full.direction @ [0.5, 0.5, 0.5]
    grid = cr.SpatialImage(np.zeros((91, 109, 91), np.uint8), origin=tuple(origin), spacing=(2.0, 2.0, 2.0),
                           direction=full.direction)
    return cr.apply(cr.Translation([0.0, 0.0, 0.0]), full, reference=grid, interpolation="nearest")


def _rigid() -> cr.Rigid:
    return cr.Rigid(Rotation.from_euler("xyz", [3.0, -2.0, 4.0], degrees=True).as_matrix(), [2.5, -1.5, 3.0],
                    center=[0.0, -18.0, 18.0])


def _labels(image: cr.SpatialImage) -> set[int]:
    return set(np.unique(image.array).astype(int).tolist())


# --------------------------------------------------------------------------- label maps through a transform


@pytest.mark.parametrize("dtype", [np.uint8, np.int16, np.uint16, np.int32, np.float32])
def test_nearest_keeps_dtype_and_every_label(atlas: cr.SpatialImage, dtype: type) -> None:
    labels = atlas.replace(array=atlas.array.astype(dtype))
    out = cr.apply(_rigid(), labels, interpolation="nearest")
    assert out.dtype == np.dtype(dtype)
    assert _labels(out) == _labels(atlas) and len(_labels(out)) == 117  # 116 regions and background


@pytest.mark.parametrize("dtype", [np.uint8, np.float32])
def test_label_gaussian_keeps_dtype_and_every_label(atlas: cr.SpatialImage, dtype: type) -> None:
    labels = atlas.replace(array=atlas.array.astype(dtype))
    out = cr.apply(_rigid(), labels, interpolation="label-gaussian")
    nearest = cr.apply(_rigid(), labels, interpolation="nearest")
    assert out.dtype == np.dtype(dtype) and _labels(out) == _labels(atlas)
    assert (out.array == nearest.array).mean() > 0.9  # the same map, borders smoothed


@pytest.mark.parametrize("interpolation", ["nearest", "label-gaussian"])
def test_label_interpolation_invents_no_label(interpolation: str) -> None:
    """Labels 1 and 3 side by side, labels far apart in value (-5, 2035): linear makes a 2 between them, these never do."""
    array = np.zeros((12, 16, 20), np.int16)
    array[:, :, 4:10], array[:, :, 10:16] = 1, 3
    array[2:5, 2:6, 2:8], array[6:10, 10:14, 12:18] = -5, 2035
    labels = cr.SpatialImage(array, origin=(0, 0, 0), spacing=(1.0, 1.5, 2.0))
    shift = cr.Translation([0.5, 0.25, 0.5])  # half voxels: every border voxel is between two labels
    out = cr.apply(shift, labels, interpolation=interpolation)
    assert out.dtype == np.int16 and _labels(out) <= {-5, 0, 1, 3, 2035}
    assert {1, 3, -5, 2035} <= _labels(out)
    linear = cr.apply(shift, labels.replace(array=array.astype(np.float32)), interpolation="linear")
    assert np.any(np.isclose(linear.array, 2.0))  # the check can fail: linear interpolation does invent labels


# --------------------------------------------------------------------------- overlap


def _block(shape: tuple[int, ...], start: tuple[int, ...], size: int, label: int = 1) -> np.ndarray:
    out = np.zeros(shape, np.uint8)
    out[tuple(slice(s, s + size) for s in start)] = label
    return out


def test_dice_and_jaccard_of_shifted_blocks() -> None:
    """Cubes moved 3 voxels along x: 10-voxel ones share 7 x 10 x 10 voxels (Dice 1400/2000, Jaccard 700/1300), 4-voxel
    ones 1 x 4 x 4 (Dice 32/128, Jaccard 16/112)."""
    a = _block((20, 20, 32), (5, 5, 5), 10) + _block((20, 20, 32), (0, 0, 24), 4, label=2)
    b = _block((20, 20, 32), (5, 5, 8), 10) + _block((20, 20, 32), (0, 0, 27), 4, label=2)
    assert dice_per_label(a, b) == {1: 0.7, 2: 0.25}
    assert jaccard_per_label(a, b) == {1: 700 / 1300, 2: 16 / 112}
    grid = cr.SpatialImage(a, origin=(0, 0, 0), spacing=(1, 1, 1))
    moving = cr.SpatialImage(b, origin=(0, 0, 0), spacing=(1, 1, 1))
    identity = evaluate(cr.Translation([0.0, 0.0, 0.0]), fixed_labels=grid, moving_labels=moving)
    assert [(s.label, s.dice, s.jaccard, s.fixed_voxels, s.warped_voxels) for s in identity.labels] == [
        (1, 0.7, 700 / 1300, 1000, 1000), (2, 0.25, 16 / 112, 64, 64)]
    assert identity.mean_dice == pytest.approx(0.475) and identity.mean_hd95_mm > 0.0
    # the transform that undoes the shift (fixed x -> moving x + 3) recovers both labels exactly
    undone = evaluate(cr.Translation([3.0, 0.0, 0.0]), fixed_labels=grid, moving_labels=moving)
    assert undone.mean_dice == 1.0 and undone.mean_jaccard == 1.0 and undone.mean_hd95_mm == 0.0


def _ball(shape: tuple[int, ...], spacing: tuple[float, ...], radius: float) -> np.ndarray:
    axes = [(np.arange(n) - (n - 1) / 2) * s for n, s in zip(shape, spacing[::-1], strict=True)]
    z, y, x = np.meshgrid(*axes, indexing="ij")
    return (x**2 + y**2 + z**2) <= radius**2


@pytest.mark.parametrize("spacing", [(0.5, 0.5, 0.5), (0.4, 0.5, 0.75)])
def test_hd95_of_concentric_spheres_is_the_difference_of_radii(spacing: tuple[float, float, float]) -> None:
    shape = (48, 60, 76)
    small, large = _ball(shape, spacing, 6.0), _ball(shape, spacing, 10.0)
    labels_a = cr.SpatialImage(small.astype(np.uint8), origin=(0, 0, 0), spacing=spacing)
    labels_b = cr.SpatialImage(large.astype(np.uint8), origin=(0, 0, 0), spacing=spacing)
    hd95 = hausdorff_per_label(labels_a, labels_b)[1]
    assert abs(hd95 - 4.0) <= max(spacing)  # surfaces of voxels: the radii to a voxel
    hd = hausdorff_per_label(labels_a, labels_b, percentile=100.0)[1]
    assert hd95 <= hd <= 4.0 + max(spacing)


def test_surface_distances_agree_with_simpleitk_and_scipy() -> None:
    """Our distances (Maurer maps on label contours) against scipy's exact EDT, and their maximum against SimpleITK's filter."""
    spacing = (0.7, 1.1, 1.9)
    rng = np.random.default_rng(5)
    a = ndimage.binary_opening(ndimage.gaussian_filter(rng.normal(size=(30, 34, 38)), 3) > 0.02, iterations=2)
    b = np.roll(a, (2, -1, 3), axis=(0, 1, 2))
    to_b, to_a = surface_distances(a, b, spacing)

    def contour(mask: np.ndarray) -> np.ndarray:
        padded = np.pad(mask, 1)
        return padded & ~ndimage.binary_erosion(padded, structure=ndimage.generate_binary_structure(3, 1), border_value=0)

    surface_a, surface_b = contour(a), contour(b)
    exact = ndimage.distance_transform_edt(~surface_b, sampling=spacing[::-1])[surface_a]
    np.testing.assert_allclose(np.sort(to_b), np.sort(exact), rtol=0, atol=1e-5)  # float32 maps
    images = []
    for surface in (surface_a, surface_b):
        image = sitk.GetImageFromArray(surface.astype(np.uint8))
        image.SetSpacing(spacing)
        images.append(image)
    hausdorff = sitk.HausdorffDistanceImageFilter()
    hausdorff.Execute(*images)
    assert abs(max(to_b.max(), to_a.max()) - hausdorff.GetHausdorffDistance()) < 1e-5


def test_hausdorff_of_a_missing_label_is_nan_and_skipped_in_the_mean() -> None:
    a = _block((10, 10, 10), (1, 1, 1), 3) + _block((10, 10, 10), (5, 5, 5), 3, label=2)
    b = _block((10, 10, 10), (1, 1, 1), 3)
    grid = cr.SpatialImage(a, origin=(0, 0, 0), spacing=(1, 1, 1))
    scores = evaluate(cr.Translation([0.0, 0.0, 0.0]), fixed_labels=grid, moving_labels=grid.replace(array=b))
    assert np.isnan(scores.labels[1].hd95_mm) and scores.labels[1].dice == 0.0
    assert scores.mean_hd95_mm == 0.0 and scores.mean_dice == 0.5
    assert scores.to_dict()["labels"][1]["hd95_mm"] is None  # JSON has no NaN


# --------------------------------------------------------------------------- landmarks and the Jacobian


def test_tre_of_a_transform_off_by_a_known_translation() -> None:
    """Truth T; the estimate T(p + d): every landmark is off by |R d| = |d| in moving space."""
    truth = _rigid()
    offset = np.array([0.6, -0.8, 1.2])
    estimate = truth @ cr.Translation(offset)
    rng = np.random.default_rng(2)
    fixed = Landmarks(rng.uniform(-60, 60, size=(7, 3)), labels=[f"L{i}" for i in range(7)])
    moving = cr.transform_points(truth, fixed)
    scores = evaluate(estimate, fixed_landmarks=fixed, moving_landmarks=moving)
    expected = float(np.linalg.norm(offset))
    for statistic in ("mean", "median", "max"):
        assert scores.tre_mm(statistic) == pytest.approx(expected, abs=1e-9)
    assert tuple(p.label for p in scores.points) == fixed.labels
    assert evaluate(truth, fixed_landmarks=fixed, moving_landmarks=moving).tre_mm("max") < 1e-9
    # the moving file listing the same labels in another order pairs by label
    shuffled = Landmarks(moving.points[::-1], moving.labels[::-1])
    assert evaluate(truth, fixed_landmarks=fixed, moving_landmarks=shuffled).tre_mm("max") < 1e-9
    assert scores.jacobian is None  # no grid given, no labels: no Jacobian


def test_jacobian_of_linear_maps() -> None:
    grid = cr.SpatialImage(np.zeros((6, 7, 8)), origin=(0, 0, 0), spacing=(1.0, 2.0, 1.5))
    scaled = jacobian_summary(cr.Affine(np.diag([2.0, 1.5, 0.5])), grid)
    assert (scaled.minimum, scaled.maximum, scaled.folding_fraction, scaled.sd_log_jacobian, scaled.voxels) == (
        pytest.approx(1.5), pytest.approx(1.5), 0.0, 0.0, 336)
    mirrored = jacobian_summary(cr.Composite((cr.Affine(np.diag([-1.0, 1.0, 1.0])), cr.Translation([1.0, 2.0, 3.0]))), grid)
    assert mirrored.folding_fraction == 1.0 and mirrored.minimum == pytest.approx(-1.0)


def test_jacobian_of_a_homography_matches_finite_differences() -> None:
    """ITK has no projective transform: the determinant ``det(H) / w^3`` against central differences of the point map."""
    homography = cr.Homography(np.array([[1.1, 0.02, 2.0], [0.01, 0.95, 3.0], [2e-3, -1e-3, 1.0]]))
    grid = cr.SpatialImage(np.zeros((20, 30)), origin=(0, 0), spacing=(1, 1))
    points = grid.world_grid().reshape(-1, 2)
    step = 1e-4
    columns = [(homography.transform_points(points + d) - homography.transform_points(points - d)) / (2 * step)
               for d in ([step, 0.0], [0.0, step])]
    numeric = np.linalg.det(np.stack(columns, axis=-1))
    summary = jacobian_summary(homography, grid)
    assert summary.minimum == pytest.approx(numeric.min(), rel=1e-7) and summary.maximum == pytest.approx(numeric.max(), rel=1e-7)
    assert summary.sd_log_jacobian == pytest.approx(float(np.std(np.log(numeric))), rel=1e-5) and summary.folding_fraction == 0.0


def test_jacobian_of_a_folding_bspline_counts_its_folds() -> None:
    """A B-spline with one large control-point step folds a region: its fraction matches the determinant map's."""
    grid = cr.SpatialImage(np.zeros((24, 26, 28)), origin=(0, 0, 0), spacing=(1.0, 1.0, 1.0))
    image = grid.to_sitk()
    itk = sitk.BSplineTransformInitializer(image, [4, 4, 4], order=3)
    parameters = np.zeros(len(itk.GetParameters()))
    parameters[len(parameters) // 3 // 2] = 30.0  # one x coefficient near the middle: a fold along x
    itk.SetParameters(parameters.tolist())
    transform = cr.transforms.from_sitk(itk)
    summary = jacobian_summary(transform, grid)
    det = jacobian_determinant(transform, grid).array
    assert 0.0 < summary.folding_fraction < 0.5 and summary.minimum < 0.0
    assert summary.folding_fraction == float(np.mean(det <= 0))
    assert summary.sd_log_jacobian == pytest.approx(float(np.std(np.log(np.clip(det, 1e-9, 1e9)))))


# --------------------------------------------------------------------------- refusals


def test_evaluate_refuses_mismatched_inputs(atlas: cr.SpatialImage) -> None:
    small = cr.SpatialImage(np.zeros((5, 6, 7), np.uint8), origin=(0, 0, 0), spacing=(1, 1, 1))
    identity = cr.Translation([0.0, 0.0, 0.0])
    with pytest.raises(GeometryError, match="lie on another grid than the fixed image"):
        evaluate(identity, fixed_labels=small, moving_labels=atlas, grid=atlas)
    with pytest.raises(GeometryError, match="3 fixed landmarks .* but 2 moving landmarks"):
        evaluate(identity, fixed_landmarks=np.zeros((3, 3)), moving_landmarks=np.zeros((2, 3)))
    with pytest.raises(ConfigError, match="both the fixed and the moving labels"):
        evaluate(identity, fixed_labels=atlas)
    with pytest.raises(GeometryError, match="integer values"):
        evaluate(identity, fixed_labels=atlas.replace(array=atlas.array + 0.5), moving_labels=atlas)
    with pytest.raises(ConfigError, match="nearest or label-gaussian"):
        evaluate(identity, fixed_labels=atlas, moving_labels=atlas, interpolation="linear")
