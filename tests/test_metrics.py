"""Similarity measures (``coregister.measures``) and accuracy measures (``coregister.medical.evaluate``) on real images,
against independent computations."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk
from nibabel.affines import from_matvec
from nibabel.eulerangles import euler2mat

import coregister as cr
from coregister.errors import GeometryError
from coregister.measures import compare, mse, mutual_information, ncc, ssim
from coregister.medical import dice, dice_per_label, landmark_errors, tre
from coregister.resample import apply

BRAINWEB = "medical/itk_brainweb_2d"


def _read_gray_png(path) -> cr.SpatialImage:
    """The BrainWeb PNGs are stored as RGB with R=G=B (see the data MANIFEST): read them as 8-bit grey."""
    return cr.SpatialImage.from_sitk(sitk.ReadImage(str(path), sitk.sitkUInt8))


def _mi_reference(a: np.ndarray, b: np.ndarray, bins: int) -> float:
    """Mutual information from numpy's histogram2d (equal-width bins over each array's range), in nats."""
    joint, _, _ = np.histogram2d(a.ravel(), b.ravel(), bins=bins)
    p = joint / joint.sum()
    pa, pb = p.sum(axis=1), p.sum(axis=0)
    nz = p > 0
    return float(np.sum(p[nz] * np.log(p[nz] / np.outer(pa, pb)[nz])))


@pytest.fixture(scope="module")
def pd_t1() -> tuple[cr.SpatialImage, cr.SpatialImage]:
    from conftest import require_data

    return (
        _read_gray_png(require_data(f"{BRAINWEB}/BrainProtonDensitySliceBorder20.png")),
        _read_gray_png(require_data(f"{BRAINWEB}/BrainT1SliceBorder20.png")),
    )


def test_array_helpers_against_independent_formulas(pd_t1) -> None:
    pd, t1 = (np.asarray(im.array, dtype=np.float64) for im in pd_t1)
    assert ncc(pd, t1) == pytest.approx(np.corrcoef(pd.ravel(), t1.ravel())[0, 1], abs=1e-12)
    assert ncc(pd, 2.5 * pd - 7) == pytest.approx(1.0, abs=1e-12)
    assert ncc(pd, -pd) == pytest.approx(-1.0, abs=1e-12)
    assert mse(pd, t1) == pytest.approx(np.mean((pd - t1) ** 2), rel=1e-12)
    for bins in (16, 32, 64):
        assert mutual_information(pd, t1, bins=bins) == pytest.approx(_mi_reference(pd, t1, bins), rel=1e-3)
    mask = pd > 20
    assert ncc(pd, t1, mask) == pytest.approx(np.corrcoef(pd[mask], t1[mask])[0, 1], abs=1e-12)
    assert mutual_information(pd, t1, mask) == pytest.approx(_mi_reference(pd[mask], t1[mask], 32), rel=1e-3)


def test_mutual_information_sees_through_a_non_monotonic_remap(pd_t1) -> None:
    """T1 and PD are aligned; MI with a scrambled-contrast copy of T1 equals MI with T1, NCC does not."""
    pd, t1 = (np.asarray(im.array, dtype=np.float64) for im in pd_t1)
    levels = np.unique(t1)
    level_index = np.searchsorted(levels, t1).astype(np.float64)  # grey levels numbered 0..L-1
    remapped = np.random.default_rng(3).permutation(len(levels)).astype(np.float64)[level_index.astype(int)]
    bins = len(levels)  # L equal-width bins over 0..L-1: one level per bin, so the remap is one-to-one on bins
    mi_t1 = mutual_information(pd, level_index, bins=bins)
    assert mi_t1 > 0.5
    assert mutual_information(pd, remapped, bins=bins) == pytest.approx(mi_t1, rel=1e-9)
    assert mi_t1 == pytest.approx(_mi_reference(pd, level_index, bins), rel=1e-9)
    assert abs(ncc(pd, remapped)) < 0.8 * abs(ncc(pd, t1))


def test_compare_recovers_the_known_shift(data) -> None:
    """``Shifted13x17y`` is PD Border20 moved by (13, 17) mm: that translation (fixed -> moving) aligns them."""
    fixed = _read_gray_png(data(f"{BRAINWEB}/BrainProtonDensitySliceBorder20.png"))
    moving = _read_gray_png(data(f"{BRAINWEB}/BrainProtonDensitySliceShifted13x17y.png"))
    truth = compare(fixed, moving, cr.Translation([13.0, 17.0]))
    before = compare(fixed, moving, cr.Translation([0.0, 0.0]))
    wrong_way = compare(fixed, moving, cr.Translation([-13.0, -17.0]))
    assert truth["ncc"] > 0.999 and truth["mse"] < 1.0
    assert before["ncc"] < 0.8 and wrong_way["ncc"] < before["ncc"] + 0.2
    assert truth["mi"] > 1.5 * before["mi"]
    assert truth["overlap"] < 1.0 and before["overlap"] == 1.0  # 13 and 17 px of the fixed image fall outside


def test_compare_equals_helpers_on_resampled_image(data) -> None:
    """compare = resample (linear) + helpers over fixed mask and where the moving image has data."""
    fixed = cr.read(data("medical/nibabel_anat_func/reoriented_anat_moved.nii"))
    moving = cr.read(data("medical/nibabel_anat_func/anatomical.nii"))
    flip = np.diag([-1.0, -1.0, 1.0, 1.0])
    truth = cr.Affine.from_homogeneous(flip @ np.linalg.inv(from_matvec(euler2mat(0.1, 0.2, 0.3), [3, 4, 5])) @ flip)
    head = np.asarray(fixed.array) > 0.1 * float(np.max(fixed.array))
    result = compare(fixed, moving, truth, mask=head)
    resampled = apply(truth, moving, reference=fixed, output_dtype=np.float64)
    region = head & (resampled.mask if resampled.mask is not None else True)
    assert result["ncc"] == pytest.approx(ncc(fixed.array, resampled.array, region), abs=1e-9)
    assert result["mse"] == pytest.approx(mse(fixed.array, resampled.array, region), rel=1e-6)
    assert result["mi"] == pytest.approx(mutual_information(fixed.array, resampled.array, region), rel=1e-6)
    assert result["overlap"] == pytest.approx(region.sum() / head.sum())
    assert result["ncc"] > 0.99
    identity = compare(fixed, moving, cr.Translation([0.0, 0.0, 0.0]), mask=head)
    assert identity["ncc"] < result["ncc"] - 0.1 and identity["mi"] < result["mi"]


def test_ssim_is_scikit_images_on_the_overlap(data) -> None:
    """SSIM beside NCC, MI and MSE: scikit-image's structural_similarity, averaged where the pair overlaps."""
    from skimage.metrics import structural_similarity

    fixed = _read_gray_png(data(f"{BRAINWEB}/BrainProtonDensitySliceBorder20.png"))
    moving = _read_gray_png(data(f"{BRAINWEB}/BrainProtonDensitySliceShifted13x17y.png"))
    truth, before = compare(fixed, moving, cr.Translation([13.0, 17.0])), compare(fixed, moving, cr.Translation([0.0, 0.0]))
    assert truth["ssim"] > 0.99 and before["ssim"] < 0.6 and -1.0 <= before["ssim"] <= 1.0
    a = np.asarray(fixed.array, np.float64)
    b = apply(cr.Translation([0.0, 0.0]), moving, reference=fixed, output_dtype=np.float64).array
    _, full = structural_similarity(a, b, win_size=7, data_range=float(a.max() - a.min()), full=True)
    assert ssim(a, b) == pytest.approx(float(full[3:-3, 3:-3].mean()), abs=1e-4)  # float32 inside compare's helper


def test_ssim_of_a_volume_and_in_result_json(data, tmp_path) -> None:
    from coregister.cli import main

    fixed = data("medical/nibabel_anat_func/anatomical.nii")
    moving = data("medical/nibabel_anat_func/reoriented_anat_moved.nii")
    assert main(["-q", "register", str(fixed), str(moving), "-o", str(tmp_path / "out")]) == 0
    import json

    metrics = json.loads((tmp_path / "out" / "result.json").read_text())["metrics"]
    assert metrics["after"]["ssim"] > metrics["before"]["ssim"] + 0.2
    volume = np.asarray(cr.read(fixed).array, np.float64)
    assert ssim(volume, volume) == pytest.approx(1.0) and ssim(volume[:2], volume[:2]) == pytest.approx(1.0)  # slice-wise


def test_compare_multichannel_raster_with_nodata(data) -> None:
    """Landsat RGB with nodata: compared on the channel mean, only where both images have data."""
    image = cr.read(data("geospatial/rasterio_landsat7/RGB.byte.tif"))
    shift = cr.Translation([600.0, -600.0])  # two pixels
    same = compare(image, image, cr.Translation([0.0, 0.0]))
    shifted = compare(image, image, shift)
    assert same["ncc"] == pytest.approx(1.0, abs=1e-9) and same["mse"] < 1e-9
    assert same["overlap"] == 1.0  # the fixed image's own nodata is outside the comparison
    assert shifted["ncc"] < same["ncc"] and 0.95 < shifted["overlap"] < 1.0
    luminance = np.asarray(image.array, dtype=np.float64).mean(axis=-1)
    assert same["mi"] == pytest.approx(_mi_reference(luminance[image.valid_mask()], luminance[image.valid_mask()], 32), rel=1e-3)


def test_compare_refuses_mismatched_inputs(pd_t1) -> None:
    pd, _ = pd_t1
    with pytest.raises(GeometryError, match="3D"):
        compare(pd, pd, cr.Translation([0.0, 0.0, 0.0]))
    with pytest.raises(GeometryError, match="mask"):
        compare(pd, pd, cr.Translation([0.0, 0.0]), mask=np.ones((3, 3), bool))


def test_tre_and_landmark_errors() -> None:
    rng = np.random.default_rng(0)
    truth = cr.Rigid.from_angles(np.deg2rad([3.0, -2.0, 5.0]), translation=[4.0, -1.0, 2.0], center=[0.0, 10.0, -5.0])
    fixed_points = rng.uniform(-60, 60, (25, 3))
    moving_points = truth.transform_points(fixed_points)
    assert tre(truth, fixed_points, moving_points) == pytest.approx(0.0, abs=1e-12)
    off = cr.Translation([1.0, 2.0, 2.0]) @ truth  # every landmark 3 mm off
    np.testing.assert_allclose(landmark_errors(off, fixed_points, moving_points), 3.0, atol=1e-9)
    assert tre(off, fixed_points, moving_points) == pytest.approx(3.0)
    # Landmarks the wrong way round are not silently accepted as correct.
    assert tre(truth, moving_points, fixed_points) > 5.0
    with pytest.raises(GeometryError, match="corresponding"):
        tre(truth, fixed_points, moving_points[:-1])


@pytest.fixture(scope="module")
def kmeans_labels() -> cr.SpatialImage:
    from conftest import require_data

    return cr.read(require_data("medical/itk_kmeans_t1_3d/KmeansTest_T1KmeansPrelimSegmentation.nii.gz"))


def _dice_reference(a: np.ndarray, b: np.ndarray, label: int) -> float:
    x, y = a == label, b == label
    return 2.0 * np.logical_and(x, y).sum() / (x.sum() + y.sum())


def test_dice_against_direct_count(kmeans_labels: cr.SpatialImage) -> None:
    labels = kmeans_labels
    moved = apply(cr.Translation(labels.direction @ [2.0, 0.0, 0.0]), labels, interpolation="nearest")  # one voxel
    scores = dice_per_label(labels, moved)
    assert sorted(scores) == [1, 2, 3, 4, 5, 6]
    for label, score in scores.items():
        assert score == pytest.approx(_dice_reference(labels.array, moved.array, label), abs=1e-12)
    assert dice(labels, moved) == pytest.approx(np.mean(list(scores.values())))
    assert dice(labels, labels) == 1.0
    assert dice(labels.array == 1, moved.array == 1) == pytest.approx(scores[1])
    assert dice_per_label(labels, moved, labels=[3]) == {3: scores[3]}


def test_dice_on_a_float_atlas(data) -> None:
    """The AAL-like atlas in MNI space is stored as float32 with integer values 0..116."""
    atlas = cr.read(data("medical/antspy/mnia.nii.gz"))
    cropped = np.asarray(atlas.array)[60:120, 60:160, 40:140]
    shifted = np.roll(cropped, 1, axis=2)
    scores = dice_per_label(cropped, shifted)
    present = sorted(set(np.unique(cropped).astype(int)) | set(np.unique(shifted).astype(int)) - {0})
    assert sorted(scores) == [p for p in present if p != 0]
    for label in scores:
        assert scores[label] == pytest.approx(_dice_reference(cropped, shifted, label), abs=1e-12)
    with pytest.raises(GeometryError, match="nearest"):
        dice(cropped + 0.5, cropped)
    with pytest.raises(GeometryError, match="shapes"):
        dice(cropped, cropped[:-1])
