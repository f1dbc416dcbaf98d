"""Preprocessing: values against the libraries' own results, physical units, geometry kept."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from scipy import ndimage
from skimage import color, data, exposure

from coregister import preprocess
from coregister.errors import ConfigError
from coregister.image import SpatialImage


def _image(values: np.ndarray, spacing: tuple[float, ...] = (1.0, 1.0), **kwargs: object) -> SpatialImage:
    ndim = len(spacing)
    angle = np.deg2rad(20.0)
    direction = np.eye(ndim)
    direction[:2, :2] = [[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]]
    return SpatialImage(values, origin=tuple(float(v) for v in range(3, 3 + ndim)), spacing=spacing, direction=direction, **kwargs)  # type: ignore[arg-type]


def _same_grid(a: SpatialImage, b: SpatialImage) -> bool:
    return a.same_geometry(b, atol=0) and a.meta == b.meta and a.crs == b.crs and a.nodata == b.nodata


def test_grayscale_matches_scikit_image() -> None:
    rgb = data.astronaut()
    image = _image(rgb, meta={"source": "astronaut"})
    gray = preprocess.to_grayscale(image)
    assert gray.dtype == np.float32 and not gray.has_channels and _same_grid(gray, image)
    np.testing.assert_allclose(gray.array, color.rgb2gray(rgb) * 255.0, atol=2e-3)


@pytest.mark.parametrize("method", ["zscore", "minmax", "percentile"])
def test_normalisation_uses_the_mask_for_its_statistics(method: str) -> None:
    values = data.camera().astype(np.float64)
    keep = np.zeros(values.shape, bool)
    keep[100:300, 50:400] = True
    out = preprocess.normalize_intensity(_image(values), method=method, mask=keep).array
    inside = out[keep]
    if method == "zscore":
        assert inside.mean() == pytest.approx(0.0, abs=1e-5) and inside.std() == pytest.approx(1.0, abs=1e-5)
    elif method == "minmax":
        assert inside.min() == pytest.approx(0.0) and inside.max() == pytest.approx(1.0)
    else:
        low, high = np.percentile(values[keep], (0.5, 99.5))
        np.testing.assert_allclose(out, np.clip((values - low) / (high - low), 0, 1), atol=1e-6)
    with pytest.raises(ConfigError, match="normalisation"):
        preprocess.normalize_intensity(_image(values), method="histogram")


def test_gaussian_smoothing_is_in_world_units() -> None:
    values = data.camera().astype(np.float32)
    image = _image(values, spacing=(0.5, 2.0))
    out = preprocess.gaussian_smooth(image, sigma_mm=2.0)  # 4 px along x, 1 px along y
    expected = ndimage.gaussian_filter(values, (1.0, 4.0), mode="reflect", truncate=3.5)
    np.testing.assert_allclose(out.array, expected, atol=0.05)
    assert _same_grid(out, image)
    with pytest.raises(ConfigError, match="sigma_mm"):
        preprocess.gaussian_smooth(image, sigma_mm=-1.0)


def test_gaussian_smoothing_3d_and_channels() -> None:
    volume = np.random.default_rng(0).normal(size=(12, 20, 24)).astype(np.float32)
    out = preprocess.gaussian_smooth(_image(volume, spacing=(1.0, 1.0, 3.0)), sigma_mm=(2.0, 1.0, 3.0))
    np.testing.assert_allclose(out.array, ndimage.gaussian_filter(volume, (1.0, 1.0, 2.0), truncate=3.5), atol=1e-5)
    rgb = _image(data.astronaut())
    smooth = preprocess.gaussian_smooth(rgb, sigma_mm=1.5)
    assert smooth.array.shape == rgb.array.shape
    np.testing.assert_allclose(
        smooth.array[..., 1], preprocess.gaussian_smooth(rgb.channel(1), sigma_mm=1.5).array, atol=1e-4
    )


def test_gradient_magnitude_per_world_unit() -> None:
    y, x = np.mgrid[0:64, 0:64].astype(np.float32)
    ramp = _image(3.0 * x + 1.0 * y, spacing=(0.5, 2.0))  # 6 per mm along x, 0.5 per mm along y
    out = preprocess.gradient_magnitude(ramp, sigma_mm=2.0)
    assert out.array[32, 32] == pytest.approx(np.hypot(6.0, 0.5), rel=1e-3)
    assert _same_grid(out, ramp)


def test_clahe_2d_is_opencvs_and_raises_contrast() -> None:
    moon = data.moon()
    out = preprocess.clahe(_image(moon), clip_limit=3.0, tiles=4)
    eight = np.round((moon - moon.min()) / np.ptp(moon) * 255).astype(np.uint8)
    expected = cv2.createCLAHE(clipLimit=3.0, tileGridSize=(4, 4)).apply(eight) / 255.0
    np.testing.assert_allclose(out.array, expected, atol=1e-6)
    assert out.array.std() > (moon / 255.0).std()


def test_clahe_3d_uses_scikit_image_with_the_same_clip_meaning() -> None:
    volume = np.stack([data.moon()[::4, ::4]] * 8).astype(np.float32)
    out = preprocess.clahe(_image(volume, spacing=(1.0, 1.0, 1.0)), clip_limit=2.56, tiles=(4, 4, 1))
    unit = (volume - volume.min()) / np.ptp(volume)
    expected = exposure.equalize_adapthist(unit, kernel_size=(8, 32, 32), clip_limit=0.01, nbins=256)
    np.testing.assert_allclose(out.array, expected, atol=1e-6)


def test_equalize_histogram_over_the_mask() -> None:
    values = data.camera()
    keep = np.zeros(values.shape, bool)
    keep[:, 256:] = True
    out = preprocess.equalize_histogram(_image(values), mask=keep).array
    inside = out[keep]
    # equalised: the values inside the mask spread evenly over [0, 1]
    assert np.quantile(inside, 0.5) == pytest.approx(0.5, abs=0.03)
    assert np.quantile(inside, 0.25) == pytest.approx(0.25, abs=0.03)


def test_fill_mask_finds_a_warped_border_and_nothing_else() -> None:
    camera = data.camera()
    turned = ndimage.rotate(camera, 25, reshape=False, order=1)
    inside = ndimage.rotate(np.ones_like(camera), 25, reshape=False, order=0).astype(bool)
    valid = preprocess.fill_mask(_image(turned))
    assert not (valid & ~inside).any()  # no fill pixel is called valid
    assert (inside & ~valid).sum() < 0.02 * inside.sum()  # the margin costs little
    noisy = camera + np.random.default_rng(0).normal(0, 1, camera.shape)  # no constant run along its edge
    assert preprocess.fill_mask(_image(noisy), margin_px=0).all()


def _homography_warp(values: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``(warped, inside)``: ``values`` through a seeded homography (corners moved by up to 10 %), black outside."""
    h, w = values.shape
    corners = np.array([[0, 0], [w - 1, 0], [w - 1, h - 1], [0, h - 1]], np.float32)
    moved = corners + (np.random.default_rng(seed).uniform(-0.1, 0.1, (4, 2)) * [w, h]).astype(np.float32)
    matrix = cv2.getPerspectiveTransform(corners, moved)
    warped = cv2.warpPerspective(values, matrix, (w, h), flags=cv2.INTER_LINEAR)
    inside = cv2.warpPerspective(np.ones_like(values), matrix, (w, h), flags=cv2.INTER_NEAREST) > 0
    return warped, inside


def _grey(name: str) -> np.ndarray:
    values = getattr(data, name)()
    return cv2.cvtColor(values, cv2.COLOR_RGB2GRAY) if values.ndim == 3 else values


@pytest.mark.parametrize("name", ["camera", "astronaut"])
@pytest.mark.parametrize("seed", [0, 1])
def test_warp_fill_masks_leave_out_the_wedges_and_keep_flat_content(name: str, seed: int) -> None:
    photo = _grey(name)
    warped, inside = _homography_warp(photo, seed)
    fixed_valid, moving_valid = preprocess.warp_fill_masks(_image(photo), _image(warped))
    # the photo's own flat runs (the astronaut's black corner, the camera's bright wall) are content
    assert fixed_valid is None
    assert moving_valid is not None
    fill = ~inside & (warped == 0)
    # every fill pixel is left out (but for a few cut off from the edge by a shared black region), except where the
    # photo itself is black at the same place (shared, consistent) ...
    assert (moving_valid & fill & (photo != 0)).sum() <= 0.001 * fill.sum()
    # ... and nothing else but black pixels and the 2-pixel blending margin around them
    black = ndimage.binary_dilation(warped == 0, structure=np.ones((3, 3), bool), iterations=2)
    assert not (inside & ~moving_valid & ~black).any()
    assert (inside & ~moving_valid).sum() < 0.06 * inside.sum()
    if name == "astronaut":
        # where both images are black (the photo's dark corner, away from the wedges) the moving image is kept
        shared = (photo == 0) & (warped == 0) & ndimage.binary_erosion(inside, iterations=5)
        assert shared.sum() > 10000 and moving_valid[shared].mean() > 0.8  # (fill_mask would drop it all)


def test_warp_fill_masks_keep_a_background_both_images_hold(data) -> None:
    """BrainWeb PD and its copy shifted by (13, 17) px: the zero background moved with the head; it is
    information (the silhouette), not fill, so nothing is left out."""
    import coregister as cr

    folder = "medical/itk_brainweb_2d"
    fixed = preprocess.to_grayscale(cr.read(data(f"{folder}/BrainProtonDensitySliceBorder20.png")))
    moving = preprocess.to_grayscale(cr.read(data(f"{folder}/BrainProtonDensitySliceShifted13x17y.png")))
    for image in (fixed, moving):  # a large flat background at the image's minimum, touching the edge
        assert (~preprocess.fill_mask(image, margin_px=0)).mean() > 0.3
    assert preprocess.warp_fill_masks(fixed, moving) == (None, None)


@pytest.mark.parametrize("other", ["itself", "noise"])
def test_warp_fill_masks_find_nothing_without_a_fill(other: str) -> None:
    camera = _image(data.camera())
    noise = np.random.default_rng(0).normal(120, 40, camera.shape).astype(np.float32)
    partner = camera if other == "itself" else camera.replace(array=noise)
    assert preprocess.warp_fill_masks(camera, partner) == (None, None)


@pytest.mark.parametrize("name", ["camera", "astronaut"])
def test_warp_fill_masks_through_the_transform_find_exactly_the_fill(name: str) -> None:
    """Given the fixed -> moving map (as the feature engine has before its ECC refinement), the fill is told from
    the photo's own black regions exactly: all of it is left out, nothing shared is."""
    from coregister.transforms import Homography

    photo = _grey(name)
    h, w = photo.shape
    corners = np.array([[0, 0], [w - 1, 0], [w - 1, h - 1], [0, h - 1]], np.float32)
    matrix = cv2.getPerspectiveTransform(corners, corners + (np.random.default_rng(1).uniform(-0.1, 0.1, (4, 2))
                                                             * [w, h]).astype(np.float32))
    warped = cv2.warpPerspective(photo, matrix, (w, h), flags=cv2.INTER_LINEAR)
    inside = cv2.warpPerspective(np.ones_like(photo), matrix, (w, h), flags=cv2.INTER_NEAREST) > 0
    fixed = SpatialImage(photo, origin=(0.0, 0.0), spacing=(1.0, 1.0))
    fixed_valid, moving_valid = preprocess.warp_fill_masks(fixed, fixed.replace(array=warped),
                                                           transform=Homography(matrix.astype(float)))
    assert fixed_valid is None and moving_valid is not None
    assert not (moving_valid & ~inside & (warped == 0)).any()
    black = ndimage.binary_dilation(warped == 0, structure=np.ones((3, 3), bool), iterations=4)
    assert not (inside & ~moving_valid & ~black).any()  # content is kept, up to the margin along the fill


def test_warp_fill_masks_compare_at_the_same_world_position() -> None:
    """The moving image on a coarser grid (2 px pixels over the same area): its fill is still told from the
    fixed image's content by world position."""
    photo = _grey("camera")
    warped, inside = _homography_warp(photo, 3)
    fixed = SpatialImage(photo, origin=(0.0, 0.0), spacing=(1.0, 1.0))
    coarse = cv2.resize(warped, (256, 256), interpolation=cv2.INTER_NEAREST)
    moving = SpatialImage(coarse, origin=(0.5, 0.5), spacing=(2.0, 2.0))
    fixed_valid, moving_valid = preprocess.warp_fill_masks(fixed, moving)
    assert fixed_valid is None and moving_valid is not None
    coarse_inside = cv2.resize(inside.astype(np.uint8), (256, 256), interpolation=cv2.INTER_NEAREST) > 0
    fill = ~coarse_inside & (coarse == 0)
    assert fill.sum() > 1000 and not (moving_valid & fill).any()
    assert (coarse_inside & ~moving_valid).sum() < 0.05 * coarse_inside.sum()


def test_gradient_magnitude_makes_ecc_work_across_modalities(data) -> None:
    """BrainWeb T1 (fixed) against PD shifted by (13, 17) mm: ECC on raw intensities is pulled off by the
    different contrasts; on gradient magnitudes (edges both modalities share) it lands within 0.2 mm."""
    import coregister as cr
    from coregister.config import RegistrationConfig, Stage
    from coregister.engines.ecc import ecc_register

    fixed = preprocess.to_grayscale(cr.read(data("medical/itk_brainweb_2d/BrainT1SliceBorder20.png")))
    moving = preprocess.to_grayscale(cr.read(data("medical/itk_brainweb_2d/BrainProtonDensitySliceShifted13x17y.png")))
    config = RegistrationConfig(stages=(Stage(model="translation"),))
    raw = ecc_register(fixed, moving, config).transform.translation
    edges = ecc_register(
        preprocess.gradient_magnitude(fixed, sigma_mm=1.0), preprocess.gradient_magnitude(moving, sigma_mm=1.0), config
    ).transform.translation
    assert np.linalg.norm(edges - (13.0, 17.0)) < 0.2
    assert np.linalg.norm(raw - (13.0, 17.0)) > np.linalg.norm(edges - (13.0, 17.0))
