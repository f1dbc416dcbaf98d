"""The automatic fallback chain: judged by the quality check, not by the absence of an exception."""

from __future__ import annotations

import numpy as np
import pytest
from _warps import head_error_mm, mean_error_px, mni, pair, photo, similarity_matrix, warp, warp_volume

from coregister.config import EngineName, Initialisation, RegistrationConfig, Stage
from coregister.engines.ecc import ecc_register
from coregister.errors import RegistrationFailed
from coregister.image import SpatialImage
from coregister.pipeline import run_auto
from coregister.pipeline.fallback import attempt_order
from coregister.transforms import Rigid


def _config(model: str, **extra: object) -> RegistrationConfig:
    return RegistrationConfig(stages=(Stage(model=model, extra=tuple(extra.items())),))  # type: ignore[arg-type]


def _rotated_pair(name: str, angle_deg: float) -> tuple[SpatialImage, SpatialImage, np.ndarray, np.ndarray]:
    values = photo(name)
    truth = similarity_matrix(values.shape, angle_deg, 1.0, np.array([8.0, -5.0]))
    moved, valid = warp(values, truth, noise=2.0, seed=3)
    fixed = SpatialImage(values, origin=(0, 0), spacing=(1, 1))
    return fixed, fixed.replace(array=moved), valid, truth


@pytest.mark.parametrize(("name", "angle"), [("astronaut", 60.0), ("coins", -60.0)])
def test_rescue_of_a_60_degree_rotation(name: str, angle: float) -> None:
    """Intensity registration alone lands far off; the chain falls back to features and gets it right."""
    fixed, moving, valid, truth = _rotated_pair(name, angle)
    alone = ecc_register(fixed, moving, _config("rigid"), moving_mask=valid)
    assert mean_error_px(alone.transform, truth, fixed.shape) > 10.0
    out = run_auto(fixed, moving, _config("rigid"), moving_mask=valid)
    assert out.engine == "features"
    assert isinstance(out.transform, Rigid)
    assert mean_error_px(out.transform, truth, fixed.shape) < 0.05
    chain = out.attempts
    assert [a.engine for a in chain] == ["ecc", "features"]
    assert chain[0].ncc < 0.8 and chain[1].passed and chain[1].ncc > 0.95
    assert out.warnings[0].startswith("ecc:") and out.passed


def test_easy_pair_stops_at_the_intensity_engine() -> None:
    fixed, moving, valid, truth = pair("camera", "similarity", 1)
    out = run_auto(fixed, moving, _config("similarity"), moving_mask=valid)
    assert out.engine == "ecc"
    assert [a.engine for a in out.attempts] == ["ecc"]
    assert mean_error_px(out.transform, truth, fixed.shape) < 0.05
    assert not [w for w in out.warnings if w.startswith(("ecc:", "features:"))]


def test_opencv_ecc_failure_becomes_a_reason_not_a_crash() -> None:
    """OpenCV's ECC raises cv2.error (or stalls) on this pair; the chain carries on to the feature engine."""
    fixed, moving, valid, truth = _rotated_pair("astronaut", 60.0)
    out = run_auto(fixed, moving, _config("rigid"), moving_mask=valid, engines=["opencv-ecc", "features"])
    assert out.engine == "features"
    assert any(w.startswith("opencv-ecc:") for w in out.warnings)
    assert mean_error_px(out.transform, truth, fixed.shape) < 0.05


def test_homography_tries_features_first() -> None:
    fixed, moving, valid, truth = pair("astronaut", "homography", 2)
    out = run_auto(fixed, moving, _config("homography"), moving_mask=valid)
    assert out.engine == "features" and len(out.attempts) == 1
    assert out.extras["inliers"] > 100  # the chosen engine's extras travel with the answer


def test_no_transform_at_all_raises() -> None:
    # a smooth ramp: not constant (a constant image is refused before any engine), but without a keypoint
    ramp = SpatialImage(np.tile(np.linspace(0.0, 255.0, 96, dtype=np.float32), (96, 1)), origin=(0, 0), spacing=(1, 1))
    with pytest.raises(RegistrationFailed, match="no engine produced a transform"):
        run_auto(ramp, ramp, _config("homography"), engines=["features"])


def test_nothing_passes_returns_the_best_with_a_warning() -> None:
    fixed = SpatialImage(photo("camera"), origin=(0, 0), spacing=(1, 1))
    noise = np.random.default_rng(1).normal(120, 40, fixed.shape).astype(np.float32)
    out = run_auto(fixed, fixed.replace(array=noise), _config("rigid"), engines=["ecc"])
    assert out.passed is False
    assert any("no engine passed the quality check" in w for w in out.warnings)


def test_3d_chain_with_the_ecc_engine(data) -> None:
    fixed = mni(data, shrink=3, sigma_mm=1.5)
    truth = Rigid.from_angles(np.deg2rad([4.0, -3.0, 6.0]), translation=(5.0, -4.0, 3.0), center=fixed.world_centre)
    out = run_auto(fixed, fixed.replace(array=warp_volume(fixed, truth)), _config("rigid"), engines=["ecc"])
    assert out.engine == "ecc" and out.passed
    assert head_error_mm(out.transform, truth, fixed) < 0.05


@pytest.mark.parametrize(
    ("ndim", "model", "initialisation", "expected"),
    [
        (2, "rigid", "geometry", ["ecc", "features", "sitk"]),
        (2, "affine", "features", ["features", "ecc", "sitk"]),
        (2, "homography", "geometry", ["features", "ecc"]),
        (2, "bspline", "geometry", ["sitk"]),
        (3, "rigid", "geometry", ["sitk", "ecc"]),
    ],
)
def test_attempt_order(ndim: int, model: str, initialisation: str, expected: list[str]) -> None:
    config = RegistrationConfig(stages=(Stage(model=model),), initialisation=Initialisation.parse(initialisation))
    assert [e.value for e in attempt_order(ndim, config)] == expected
    assert all(isinstance(e, EngineName) for e in attempt_order(ndim, config))


def test_register_auto_preset_goes_through_the_chain() -> None:
    """``coregister.register(preset="auto")``: Result.engine names the engine that produced the answer and
    Result.warnings carry the reason for the fallback."""
    import coregister as cr

    fixed, moving, valid, truth = _rotated_pair("astronaut", 60.0)
    # started from the image centres, ECC cannot turn 60 degrees: the chain falls back to the feature engine
    config = cr.presets.auto(ndim=2).replace(initialisation="geometry")
    result = cr.register(fixed, moving, config=config, moving_mask=valid)
    assert result.engine == "features" and result.passed
    assert any(w.startswith("ecc:") for w in result.warnings)
    assert mean_error_px(result.transform, truth, fixed.shape) < 0.05
    assert result.attempts[-1].engine == "features"
    # the 2D chain tries matched features first (an affine or a projective map, whichever the matches support)
    direct = cr.register(fixed, moving, preset="auto", moving_mask=valid)
    assert direct.engine == "features" and direct.passed and len(direct.attempts) == 1
    assert mean_error_px(direct.transform, truth, fixed.shape) < 0.05


@pytest.mark.parametrize(("options", "engine"), [({"preset": "similarity", "metric": "ecc"}, "ecc"),
                                                 ({"preset": "homography"}, "features")])
def test_register_routes_to_these_engines(options: dict[str, str], engine: str) -> None:
    import coregister as cr

    kind = "homography" if options["preset"] == "homography" else "similarity"
    fixed, moving, valid, truth = pair("camera", kind, 4)
    result = cr.register(fixed, moving, moving_mask=valid, **options)
    assert result.engine == engine
    error = mean_error_px(result.transform, truth, fixed.shape)
    assert error < (0.1 if kind == "homography" else 0.05)
