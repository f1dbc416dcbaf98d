"""Phase correlation (issue 4's sub-pixel translation line, issue 5's known-shift line): real data, known shifts.

Ground truth: the content of a real image is moved by a known sub-pixel amount with
``scipy.ndimage.shift`` (cubic spline), so the correction to find is minus that amount.
"""

from __future__ import annotations

import math

import nibabel as nib
import numpy as np
import pytest
import rasterio
from affine import Affine
from conftest import require_data
from scipy import ndimage
from skimage import transform as sktf

from coregister import SpatialImage, Translation
from coregister.config import RegistrationConfig, Stage, TransformModel
from coregister.conventions import geotransform_to_geometry
from coregister.engines import get_engine
from coregister.engines.phase import PhaseEngine
from coregister.errors import ConfigError, GeometryError, RegistrationFailed
from coregister.phase import fourier_mellin, phase_correlate

# >= 10 shifts, fractions 0.3-0.4 and 0.6-0.7 included, where plain upsampled correlation is pulled to whole pixels
KNOWN_SHIFTS = [
    (0.30, 0.35), (0.65, -0.40), (-0.70, 0.62), (1.35, -2.66), (0.50, 0.50), (-0.33, 0.68),
    (2.38, 1.31), (0.10, -0.90), (-1.64, 0.37), (0.61, 0.39), (0.25, -0.75), (-0.36, -0.64),
]


@pytest.fixture(scope="module")
def landsat() -> np.ndarray:
    with rasterio.open(require_data("geospatial/rasterio_landsat7/RGB.byte.tif")) as ds:
        return ds.read(2).astype(np.float64)


def _window(image: np.ndarray, r0: int = 230, c0: int = 270, n: int = 256) -> np.ndarray:
    return image[r0 : r0 + n, c0 : c0 + n]


def test_subpixel_known_shifts_gradient(landsat: np.ndarray) -> None:
    """RGB.byte.tif band 2, 256 x 256 window inside the footprint: 0.02 px mean, 0.04 px worst (issue 4 and 5)."""
    reference = _window(landsat)
    errors = []
    for shift in KNOWN_SHIFTS:
        target = _window(ndimage.shift(landsat, shift, order=3, mode="nearest"))
        found = phase_correlate(reference, target)
        errors.append(math.hypot(found.shift[0] + shift[0], found.shift[1] + shift[1]))
        assert found.converged
        assert found.reliability > 0.5
    assert np.mean(errors) < 0.02
    assert np.max(errors) < 0.04


def test_plain_upsampling_is_pulled_to_whole_pixels(landsat: np.ndarray) -> None:
    """The bias the refinement removes: scikit-image's upsampled DFT alone misses fractions 0.3-0.4 by ~0.1 px."""
    reference = _window(landsat)
    errors = []
    for shift in [(0.35, 0.0), (0.0, -0.65), (0.62, 0.38)]:
        target = _window(ndimage.shift(landsat, shift, order=3, mode="nearest"))
        plain = phase_correlate(reference, target, refine="upsample")
        refined = phase_correlate(reference, target, refine="gradient")
        errors.append((math.hypot(plain.shift[0] + shift[0], plain.shift[1] + shift[1]),
                       math.hypot(refined.shift[0] + shift[0], refined.shift[1] + shift[1])))
    plain_err, refined_err = np.array(errors).T
    assert plain_err.mean() > 0.05
    assert refined_err.max() < 0.01


@pytest.mark.parametrize("shift", [(0.37, -0.64), (-1.62, 2.33)])
def test_subpixel_under_masks(landsat: np.ndarray, shift: tuple[float, float]) -> None:
    """A window across the scene's nodata collar (value 0): masked integer search, sub-pixel fit under the masks."""
    reference = landsat[0:256, 60:316]  # the upper-left corner of the footprint: about a third is nodata
    target = ndimage.shift(landsat, shift, order=3, mode="nearest")[0:256, 60:316]
    ref_valid = reference > 0
    # the shifted nodata border rings under the cubic spline: call pixels near it invalid too
    tgt_valid = ndimage.binary_erosion(ndimage.shift(landsat > 0, shift, order=0)[0:256, 60:316], iterations=2)
    assert 0.1 < 1 - ref_valid.mean() < 0.6
    found = phase_correlate(reference, target, mask=ref_valid, target_mask=tgt_valid)
    assert "masked" in found.method
    assert math.hypot(found.shift[0] + shift[0], found.shift[1] + shift[1]) < 0.02


def test_spatialimage_inputs_use_their_nodata(landsat: np.ndarray) -> None:
    reference = SpatialImage(landsat[0:256, 60:316], origin=(0, 0), spacing=(1, 1), nodata=0)
    moved = np.where(landsat > 0, ndimage.shift(landsat, (0.4, 0.6), order=3, mode="nearest"), 0)
    target = reference.replace(array=moved[0:256, 60:316])
    found = phase_correlate(reference, target)
    assert math.hypot(found.shift[0] + 0.4, found.shift[1] + 0.6) < 0.05


def test_3d_translation(data) -> None:
    """MNI152 (a 64^3 block at the centre): a 3D sub-pixel translation within 0.02 voxel."""
    volume = np.asarray(nib.load(data("medical/antspy/mni.nii.gz")).dataobj, dtype=np.float64)
    centre = np.array(volume.shape) // 2
    block = tuple(slice(c - 32, c + 32) for c in centre)
    shift = (0.63, -1.37, 0.35)
    found = phase_correlate(volume[block], ndimage.shift(volume, shift, order=3)[block])
    assert np.linalg.norm(np.add(found.shift, shift)) < 0.02


@pytest.mark.parametrize(
    ("angle", "scale", "shift"),
    [(12.0, 1.0, (0.0, 0.0)), (-25.0, 1.1, (3.3, -2.1)), (40.0, 0.9, (-5.0, 7.0)), (170.0, 1.0, (1.5, 0.5))],
)
def test_fourier_mellin_rotation_scale(landsat: np.ndarray, angle: float, scale: float, shift: tuple) -> None:
    """Rotation + scale + shift of a 320 x 320 block of RGB.byte.tif: corners within 0.1 px."""
    reference = landsat[200:520, 240:560]
    centre = np.array([(reference.shape[1] - 1) / 2, (reference.shape[0] - 1) / 2])
    theta = math.radians(-angle)
    true = np.eye(3)  # reference pixel (col, row) -> target pixel
    true[:2, :2] = scale * np.array([[math.cos(theta), -math.sin(theta)], [math.sin(theta), math.cos(theta)]])
    true[:2, 2] = centre - true[:2, :2] @ centre + np.array(shift)[::-1]
    target = sktf.warp(reference, np.linalg.inv(true), order=3, preserve_range=True)
    found = fourier_mellin(reference, target)
    corners = np.array([[40, 40, 1], [280, 40, 1], [40, 280, 1], [280, 280, 1]], float)
    error = np.linalg.norm((corners @ found.matrix.T - corners @ true.T)[:, :2], axis=1)
    assert abs((found.angle_deg - angle + 180) % 360 - 180) < 0.05
    assert abs(found.scale / scale - 1) < 0.001
    assert error.max() < 0.1


def _geo_image(array: np.ndarray) -> SpatialImage:
    origin, spacing, direction = geotransform_to_geometry(Affine(300.0, 0.0, 101985.0, 0.0, -300.0, 2826915.0))
    return SpatialImage(array, origin=origin, spacing=spacing, direction=direction, crs="EPSG:32618")


@pytest.mark.parametrize("shift", [(0.35, -1.65), (-2.6, 0.7)])
def test_engine_translation_in_world_units(landsat: np.ndarray, shift: tuple[float, float]) -> None:
    """North-up raster (direction diag(1, -1), 300 m pixels): the transform maps fixed -> moving in metres."""
    fixed = _geo_image(_window(landsat))
    moving = fixed.replace(array=_window(ndimage.shift(landsat, shift, order=3, mode="nearest")))
    out = get_engine("phase").run(fixed, moving, RegistrationConfig(stages=(Stage(model=TransformModel.TRANSLATION),)))
    assert out.engine == "phase"
    assert isinstance(out.transform, Translation)
    # moving content sits shift (rows down, cols right) away: +cols is +x (east), +rows is -y (south)
    expected = np.array([300.0 * shift[1], -300.0 * shift[0]])
    # fixed point p shows what moving shows at p + expected
    assert np.linalg.norm(out.transform.translation - expected) < 0.02 * 300


def test_engine_with_initial_transform_composes(landsat: np.ndarray) -> None:
    fixed = _geo_image(_window(landsat))
    moving = fixed.replace(array=_window(ndimage.shift(landsat, (0.0, 2.4), order=3, mode="nearest")))
    initial = Translation([600.0, 0.0])  # 2 px east: the engine finds the remaining 0.4 px
    config = RegistrationConfig(stages=(Stage(model=TransformModel.TRANSLATION),))
    out = PhaseEngine().run(fixed, moving, config, initial=initial)
    assert abs(out.transform.transform_points([[0.0, 0.0]])[0][0] - 720.0) < 6.0


def test_engine_similarity_2d(landsat: np.ndarray) -> None:
    reference = landsat[200:520, 240:560]
    fixed = SpatialImage(reference, origin=(0.0, 0.0), spacing=(2.0, 2.0))
    moving = fixed.replace(array=sktf.rotate(reference, 15.0, preserve_range=True))
    out = PhaseEngine().run(fixed, moving, RegistrationConfig(stages=(Stage(model=TransformModel.RIGID),)))
    angle = math.degrees(math.atan2(out.transform.matrix[1, 0], out.transform.matrix[0, 0]))
    assert abs(abs(angle) - 15.0) < 0.05
    assert abs(np.linalg.det(out.transform.matrix) - 1.0) < 1e-9  # rigid: scale fixed at 1


def test_errors_name_the_fix(landsat: np.ndarray) -> None:
    reference = _window(landsat)
    with pytest.raises(GeometryError, match="shape"):
        phase_correlate(reference, reference[:-1])
    with pytest.raises(ConfigError, match="refine"):
        phase_correlate(reference, reference, refine="parabola")
    with pytest.raises(RegistrationFailed, match="valid"):
        phase_correlate(reference, reference, mask=np.zeros(reference.shape, bool))
    with pytest.raises(RegistrationFailed, match="max_shift_px"):
        phase_correlate(reference, _window(ndimage.shift(landsat, (0, 5), order=3)), max_shift_px=2.0)
