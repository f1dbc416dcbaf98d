"""Binary masks registered as distance maps (``BinaryInputs.DISTANCE``, the deformable presets' default).

A head mask of ITK's BrainWeb slice (``BrainProtonDensitySlice.png``
thresholded, holes filled, its largest component) is moved by a known smooth
deformation ``G`` (a cubic B-spline on a 40 mm mesh, up to 6 mm; nearest
neighbour, so the moving image is a mask too): ``moving(y) = mask(G(y))``,
and the true fixed -> moving map is ``G⁻¹``. Registered with ``bspline`` and
with ``syn`` as signed distance maps (the presets' choice) and as the raw
masks (``BinaryInputs.AS_IS``), the distance maps must recover the mask's
boundary better: a smaller mean error of the boundary points against ``G⁻¹``
and a higher Dice of the mask carried back.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from scipy import ndimage

import coregister as cr
from coregister import presets
from coregister.config import BinaryInputs
from coregister.qc import synthetic

SLICE = "medical/itk_brainweb_2d/BrainProtonDensitySlice.png"
#: mean boundary error (mm) the distance-map answer stays below, and by how much it beats the raw masks'. Measured:
#: bspline 1.57 mm (raw masks 2.17, identity 1.85), syn 1.02 mm (raw masks 2.68). Errors against G⁻¹ include the
#: slide along the boundary, which a mask cannot show, so they stay near a millimetre.
BOUNDARY_ERROR_MM = {"bspline": 1.75, "syn": 1.3}
MIN_GAIN_MM = {"bspline": 0.3, "syn": 1.0}
#: Dice of the mask carried back (measured: bspline 0.9965, raw 0.9963; syn 0.9988, raw 0.9973; identity 0.986)
MIN_DICE = 0.995


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    return float(2.0 * np.count_nonzero(a & b) / (np.count_nonzero(a) + np.count_nonzero(b)))


@pytest.fixture(scope="module")
def masks() -> dict[str, Any]:
    from conftest import require_data

    image = cr.read(require_data(SLICE))
    image = image.channel(0) if image.has_channels else image
    values = np.asarray(image.array, dtype=float)
    mask = ndimage.binary_fill_holes(values > 0.1 * np.percentile(values[values > 0], 99))
    labels, count = ndimage.label(mask)
    mask = labels == 1 + int(np.argmax(ndimage.sum(mask, labels, range(1, count + 1))))
    fixed = image.replace(array=mask.astype(np.uint8))
    warp = synthetic.random_bspline(fixed, 3, mesh_mm=40.0, max_displacement_mm=6.0)
    moving = cr.apply(warp, fixed, reference=fixed, interpolation="nearest")  # mask(G(y)): still a mask
    boundary = fixed.index_to_world(np.argwhere(mask & ~ndimage.binary_erosion(mask))[:, ::-1].astype(float))
    return {"fixed": fixed, "moving": moving, "mask": mask, "boundary": boundary, "truth": warp.inverse_points(boundary)}


def _scores(masks: dict[str, Any], preset: str, how: BinaryInputs) -> tuple[float, float, cr.Result]:
    config = presets.get(preset, ndim=2).replace(binary_inputs=how)
    result = cr.register(masks["fixed"], masks["moving"], config=config)
    error = np.linalg.norm(result.transform.transform_points(masks["boundary"]) - masks["truth"], axis=1).mean()
    back = cr.apply(result.transform, masks["moving"], reference=masks["fixed"], interpolation="nearest").array > 0
    return float(error), _dice(masks["mask"], back), result


@pytest.mark.parametrize("preset", ["bspline", "syn"])
def test_distance_maps_recover_a_masks_boundary_better_than_the_raw_masks(masks: dict[str, Any], preset: str) -> None:
    assert presets.get(preset, ndim=2).binary_inputs is BinaryInputs.DISTANCE  # the preset's own choice
    identity_error = np.linalg.norm(masks["boundary"] - masks["truth"], axis=1).mean()
    error, dice, result = _scores(masks, preset, BinaryInputs.DISTANCE)
    raw_error, raw_dice, _ = _scores(masks, preset, BinaryInputs.AS_IS)
    assert any("signed distance maps" in w for w in result.warnings)
    assert error < BOUNDARY_ERROR_MM[preset] < identity_error, (error, raw_error, identity_error)
    assert error < raw_error - MIN_GAIN_MM[preset], (error, raw_error)
    assert dice > MIN_DICE, (dice, raw_dice)
    if preset == "syn":  # the B-spline's two Dice differ by 2e-4 only: its boundary error is what tells them apart
        assert dice > raw_dice + 0.001, (dice, raw_dice)
    assert result.quality.measures["folding_fraction"] == 0.0
