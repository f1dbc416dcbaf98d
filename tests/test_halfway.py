"""Longitudinal pairs in a halfway space: symmetric (swapping the images gives the same space), halves that compose
into the whole, the known motion recovered, and ``register --halfway`` writing both images on one grid.

Data: nibabel's T1 head (``medical/nibabel_anat_func/anatomical.nii``, 2 mm) as the baseline; the follow-up is
the same head moved by a known rigid transform (and, for the command line, SPM12's resampling of it onto a 4 mm
grid, ``reoriented_anat_moved.nii``: two grids of different spacing and size).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import coregister as cr
from coregister.errors import ConfigError
from coregister.medical import halfway
from coregister.medical.longitudinal import matrix_midpoint, matrix_sqrt
from coregister.transforms import rotation_matrix

ANAT = "medical/nibabel_anat_func/anatomical.nii"
MOVED = "medical/nibabel_anat_func/reoriented_anat_moved.nii"


@pytest.fixture(scope="module")
def pair() -> tuple[cr.SpatialImage, cr.SpatialImage, cr.Rigid]:
    from conftest import require_data

    baseline = cr.read(require_data(ANAT))
    truth = cr.Rigid.from_angles(np.deg2rad([3.0, -2.0, 5.0]), translation=[4.0, -3.0, 2.0], center=baseline.world_centre)
    follow_up = cr.apply(truth.inverse(), baseline, interpolation="bspline")  # follow_up(truth(x)) = baseline(x)
    return baseline, follow_up, truth


def _grid_points(image: cr.SpatialImage) -> np.ndarray:
    return image.world_grid().reshape(-1, image.ndim)[::7]


def test_swapping_the_images_gives_the_same_halfway_space(pair) -> None:
    baseline, follow_up, _ = pair
    one = halfway(baseline, follow_up)
    two = halfway(follow_up, baseline)
    assert one.grid.same_geometry(two.grid, atol=1e-6)
    points = _grid_points(one.grid)
    # halfway points land on the same baseline and follow-up points whichever image came first
    assert np.abs(one.to_fixed.transform_points(points) - two.to_moving.transform_points(points)).max() < 1e-3
    assert np.abs(one.to_moving.transform_points(points) - two.to_fixed.transform_points(points)).max() < 1e-3
    np.testing.assert_allclose(one.transform.homogeneous @ two.transform.homogeneous, np.eye(4), atol=1e-9)
    np.testing.assert_allclose(one.fixed.array, two.moving.array, atol=1e-3 * np.ptp(baseline.array))


def test_halves_compose_into_the_whole_and_recover_the_motion(pair) -> None:
    baseline, follow_up, truth = pair
    result = halfway(baseline, follow_up)
    assert result.passed
    half, back = result.to_moving.homogeneous, result.to_fixed.homogeneous
    np.testing.assert_allclose(half @ np.linalg.inv(back), result.transform.homogeneous, atol=1e-9)  # H ∘ H = T
    np.testing.assert_allclose(half @ half, result.transform.homogeneous, atol=1e-9)
    np.testing.assert_allclose(back @ half, np.eye(4), atol=1e-12)
    points = _grid_points(baseline)
    error = np.linalg.norm(result.transform.transform_points(points) - truth.transform_points(points), axis=1)
    assert error.mean() < 0.2, error.mean()  # 2 mm voxels
    angle = np.rad2deg(np.arccos((np.trace(truth.rotation) - 1) / 2))
    half_angle = np.rad2deg(np.arccos((np.trace(result.to_moving.matrix) - 1) / 2))
    assert abs(half_angle - angle / 2) < 0.1
    # both images resampled once onto one grid, where they agree
    assert result.fixed.same_geometry(result.moving)
    a, b = np.asarray(result.fixed.array, float), np.asarray(result.moving.array, float)
    inside = (a > 0) & (b > 0)
    assert np.corrcoef(a[inside], b[inside])[0, 1] > 0.98
    assert result.inverse_consistency_mm < 1.0


def test_matrix_square_root_and_midpoint() -> None:
    turn = np.eye(4)
    turn[:3, :3] = rotation_matrix(np.deg2rad([10.0, -20.0, 30.0]))
    turn[:3, 3] = [5.0, -4.0, 3.0]
    root = matrix_sqrt(turn)
    np.testing.assert_allclose(root @ root, turn, atol=1e-12)
    np.testing.assert_allclose(root[:3, :3] @ root[:3, :3].T, np.eye(3), atol=1e-12)  # still a rotation
    other = np.eye(4)
    other[:3, 3] = [1.0, 2.0, 3.0]
    middle = matrix_midpoint(turn, other)
    np.testing.assert_allclose(middle, matrix_midpoint(other, turn), atol=1e-12)  # symmetric
    np.testing.assert_allclose(np.linalg.inv(middle), matrix_midpoint(np.linalg.inv(turn), np.linalg.inv(other)),
                               atol=1e-12)  # inverting both inverts it


@pytest.mark.parametrize("preset", ["bspline", "syn"])
def test_deformable_presets_are_refused(pair, preset: str) -> None:
    baseline, follow_up, _ = pair
    with pytest.raises(ConfigError, match="linear"):
        halfway(baseline, follow_up, preset=preset)


def test_register_halfway_command(tmp_path: Path) -> None:
    from conftest import require_data

    fixed, moving = require_data(ANAT), require_data(MOVED)
    out = tmp_path / "hw"
    run = subprocess.run([sys.executable, "-m", "coregister", "register", str(fixed), str(moving), "-o", str(out),
                          "--halfway", "--json"], capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr
    written = sorted(p.name for p in out.iterdir())
    assert written == ["fixed_halfway.nii", "halfway_to_fixed.tfm", "halfway_to_moving.tfm", "moving_halfway.nii",
                       "result.json", "transform.tfm"]
    a, b = cr.read(out / "fixed_halfway.nii"), cr.read(out / "moving_halfway.nii")
    assert a.same_geometry(b, atol=1e-5)
    to_fixed, to_moving = cr.read_transform(out / "halfway_to_fixed.tfm"), cr.read_transform(out / "halfway_to_moving.tfm")
    whole = cr.read_transform(out / "transform.tfm")
    np.testing.assert_allclose(to_moving.homogeneous @ np.linalg.inv(to_fixed.homogeneous), whole.homogeneous, atol=1e-6)
    # the halfway fixed image is the fixed image resampled by halfway_to_fixed
    again = cr.apply(to_fixed, cr.read(fixed), reference=a)
    np.testing.assert_allclose(again.array, a.array, atol=1e-3 * np.ptp(a.array))
    summary = json.loads((out / "result.json").read_text())
    assert summary["passed"] and summary["forward"]["verdict"] == summary["backward"]["verdict"] == "passed"
    assert sorted(summary["outputs"]) == written  # what a later --overwrite may replace
    again_run = subprocess.run([sys.executable, "-m", "coregister", "register", str(fixed), str(moving), "-o", str(out),
                                "--halfway"], capture_output=True, text=True, timeout=120)
    assert again_run.returncode == 1 and "pass --overwrite" in again_run.stderr  # refused before any work
    refused = subprocess.run([sys.executable, "-m", "coregister", "register", str(fixed), str(moving), "-o",
                              str(tmp_path / "x"), "--halfway", "--initial-transform", str(out / "transform.tfm")],
                             capture_output=True, text=True, timeout=120)
    assert refused.returncode == 2 and "--halfway" in refused.stderr
