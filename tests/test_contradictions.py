"""Inputs that contradict themselves are named: a sheared grid, a mask over background, images that do not meet."""

from __future__ import annotations

import numpy as np
import pytest

import coregister as cr
from coregister.errors import GeometryError
from coregister.qc import synthetic

BRAINWEB = "medical/itk_brainweb_2d/BrainProtonDensitySliceBorder20.png"


def _slice(data) -> cr.SpatialImage:
    image = cr.read(data(BRAINWEB)).channel(0)
    return image.replace(array=np.asarray(image.array, np.float32))


@pytest.mark.parametrize("shear", [0.3, 0.7])
def test_sheared_grid_is_resampled_and_said(data, shear: float) -> None:
    """A direction with shear (legal in a NIfTI sform): registered on an orthonormal grid, the answer still right."""
    plain = _slice(data)
    columns = np.array([[1.0, shear], [0.0, 1.0]])
    direction = columns / np.linalg.norm(columns, axis=0)
    fixed = plain.replace(direction=direction)
    truth = cr.Translation([4.0, -3.0])
    moving = synthetic.warp(fixed, truth)
    result = cr.register(fixed, moving, preset="translation")
    sheared = [w for w in result.warnings if "voxel grid is sheared" in w]
    assert len(sheared) == 2 and "orthonormal grid" in sheared[0]
    assert np.linalg.norm(result.transform.translation - truth.translation) < 0.05
    assert result.passed


def test_orthonormal_grid_gets_no_note(data) -> None:
    fixed = _slice(data).replace(direction=cr.transforms.rotation_matrix(np.deg2rad(30.0)))
    result = cr.register(fixed, synthetic.warp(fixed, cr.Translation([2.0, 1.0])), preset="translation")
    assert not [w for w in result.warnings if "sheared" in w]


def test_mask_over_background_is_refused(data) -> None:
    fixed = _slice(data)
    moving = synthetic.warp(fixed, cr.Translation([3.0, 2.0]))
    corner = np.zeros(fixed.shape, bool)
    corner[:20, :20] = True  # BrainWeb's border: flat black
    with pytest.raises(GeometryError, match="covers no structure"):
        cr.register(fixed, moving, preset="translation", fixed_mask=corner)
    with pytest.raises(GeometryError, match="moving mask covers no structure"):
        cr.register(fixed, moving, preset="translation", moving_mask=corner)


def test_mask_over_anatomy_is_kept(data) -> None:
    fixed = _slice(data)
    moving = synthetic.warp(fixed, cr.Translation([3.0, 2.0]))
    centre = np.zeros(fixed.shape, bool)
    centre[80:200, 60:180] = True
    result = cr.register(fixed, moving, preset="translation", fixed_mask=centre)
    assert np.linalg.norm(result.transform.translation - [3.0, 2.0]) < 0.05


def test_images_apart_in_space_are_noted(data) -> None:
    fixed = _slice(data)
    far = fixed.replace(origin=(1000.0, -2000.0))
    result = cr.register(fixed, far, preset="translation")
    assert any("do not overlap in physical space" in w for w in result.warnings)
    assert np.linalg.norm(result.transform.translation - [1000.0, -2000.0]) < 0.05  # the centres were aligned
    near = cr.register(fixed, fixed.replace(origin=(5.0, 0.0)), preset="translation")
    assert not any("physical space" in w for w in near.warnings)
