"""3D registration on real heads: MNI152 (``medical/antspy/mni.nii.gz``) warped by seeded known transforms,
and nibabel's SPM12-resampled anatomical (``medical/nibabel_anat_func``).

Errors are mean displacements (mm) between the recovered and the true
fixed -> moving transform over the head voxels of the fixed image (values
above 5 % of the 99th percentile), as in issue 3. The MNI cases use the full
1 mm template, where the issue's thresholds were measured.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

import coregister as cr
from coregister.qc import synthetic

MNI = "medical/antspy/mni.nii.gz"
NIBABEL = "medical/nibabel_anat_func/"


@pytest.fixture(scope="module")
def mni() -> cr.SpatialImage:
    from conftest import require_data

    return cr.read(require_data(MNI))


@pytest.fixture(scope="module")
def head(mni) -> np.ndarray:
    return synthetic.head_points(mni, step=4)


@pytest.mark.slow
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_rigid_mni(mni, head, seed):
    truth = synthetic.random_rigid(mni, seed, max_angle_deg=10.0, max_shift_mm=10.0)
    result = cr.register(mni, synthetic.warp(mni, truth), preset="rigid")
    assert isinstance(result.transform, cr.Rigid)
    assert synthetic.mean_displacement_error(result.transform, truth, head) < 0.015
    assert result.passed, result.warnings
    assert result.engine == "sitk"


@pytest.mark.slow
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_affine_mni(mni, head, seed):
    truth = synthetic.random_affine(mni, seed, scale_range=(0.9, 1.1), max_shear=0.05)
    result = cr.register(mni, synthetic.warp(mni, truth), preset="affine")
    assert isinstance(result.transform, cr.Affine)
    assert synthetic.mean_displacement_error(result.transform, truth, head) < 0.08
    assert result.passed, result.warnings
    # staged as ITK stages: rigid on the coarse levels, then the affine map down to full resolution
    stages = [h.stage for h in result.history]
    assert stages == sorted(stages, key=["rigid", "affine"].index) and set(stages) == {"rigid", "affine"}
    assert result.history[-1].shrink_factor == 1


@pytest.mark.slow
@pytest.mark.parametrize("seed", [1, 2])
def test_multimodal_rigid_mni(mni, head, seed):
    # intensities remapped non-monotonically (T2-like, with a ripple), a smooth bias field and noise:
    # only a multimodal metric (Mattes MI, the presets' default) can align this
    truth = synthetic.random_rigid(mni, seed)
    moving = synthetic.degrade(synthetic.warp(mni, truth), seed, noise=0.01, bias=0.02, remap="t2")
    result = cr.register(mni, moving, preset="rigid", metric="mattes")
    assert synthetic.mean_displacement_error(result.transform, truth, head) < 0.05
    assert result.passed, result.warnings


@pytest.mark.slow
@pytest.mark.parametrize(("preset", "threshold_mm"), [("rigid", 0.002), ("affine", 0.05)])
def test_precise_reaches_antspy_accuracy(mni, head, preset, threshold_mm):
    # ANTsPy's 'Rigid'/'Affine' reach 0.002 / 0.05 mm on these cases (issue 3)
    make = synthetic.random_rigid if preset == "rigid" else synthetic.random_affine
    truth = make(mni, 4)
    result = cr.register(mni, synthetic.warp(mni, truth), preset=preset, precise=True)
    assert result.config["name"] == f"{preset}-precise"
    assert synthetic.mean_displacement_error(result.transform, truth, head) < threshold_mm


def test_nibabel_spm_resampling_recovers_documented_transform(data):
    # nibabel's tests/data/make_moved_anat.py builds
    #     moved_affine = from_matvec(euler2mat(0.1, 0.2, 0.3), [3, 4, 5]) @ anatomical.affine
    # and SPM12 resampled that "moved" image onto a 4 mm RAS grid (reoriented_anat_moved.nii).
    # Derivation of the fixed -> moving transform, with fixed = anatomical.nii and moving = the SPM output:
    #  * voxel v of the moved image lies at world (RAS) point M A v, where A = anatomical.affine and
    #    M = from_matvec(R, t); in the anatomical image the same voxel (same tissue) lies at A v;
    #  * so the tissue at RAS point p in the anatomical image is at M p in the moved image, and SPM's
    #    resampling onto another grid keeps world positions: fixed -> moving is p -> M p in RAS;
    #  * coregister works in LPS: p_lps = F p_ras with F = diag(-1, -1, 1), so the LPS map is F M F
    #    (rotation F R F, translation F t = (-3, -4, 5)).
    from nibabel.affines import from_matvec
    from nibabel.eulerangles import euler2mat

    fixed = cr.read(data(NIBABEL + "anatomical.nii"))
    moving = cr.read(data(NIBABEL + "reoriented_anat_moved.nii"))
    flip = np.diag([-1.0, -1.0, 1.0, 1.0])
    truth = cr.Affine.from_homogeneous(flip @ from_matvec(euler2mat(0.1, 0.2, 0.3), [3, 4, 5]) @ flip)
    result = cr.register(fixed, moving, preset="rigid")
    head = synthetic.head_points(fixed, threshold_fraction=0.1)
    assert synthetic.mean_displacement_error(result.transform, truth, head) < 0.3
    assert result.passed, result.warnings


@pytest.mark.slow
def test_bspline_recovers_smooth_deformation_without_folding(mni, head):
    # moving(y) = fixed(S(y)) with S = rigid o bspline (small rigid motion: 3 degrees, 3 mm; B-spline with
    # random coefficients on a 50 mm mesh, displacements up to 4 mm), so the true fixed -> moving map is
    # S^-1: x -> B^-1(R^-1(x)), the B-spline inverted numerically
    rigid = cr.Rigid.from_angles(np.deg2rad([2.0, -1.5, 3.0]), translation=[2.0, -3.0, 1.5], center=mni.world_centre)
    spline = synthetic.random_bspline(mni, 7, mesh_mm=50.0, max_displacement_mm=4.0)
    moving = synthetic.resample_through(mni, cr.Composite((rigid, spline)))
    sample = head[::8]

    def truth(points: np.ndarray) -> np.ndarray:
        return spline.inverse_points(rigid.inverse().transform_points(points))

    result = cr.register(mni, moving, preset="bspline")
    assert isinstance(result.transform, cr.Composite)
    assert any(isinstance(t, cr.BSpline) for t in result.transform.transforms)
    linear_only = cr.register(mni, moving, preset="affine").transform
    error = synthetic.mean_displacement_error(result.transform, truth, sample)
    assert error < 0.5
    assert error < 0.5 * synthetic.mean_displacement_error(linear_only, truth, sample)
    assert result.quality.measures["min_jacobian"] > 0
    assert result.passed, result.warnings


def test_rotation_search_3d(mni):
    # a head turned a quarter turn about one axis and tilted (4 mm copy of MNI152 to keep the grid search quick)
    import SimpleITK as sitk

    from coregister import presets

    small = cr.SpatialImage.from_sitk(sitk.BinShrink(mni.to_sitk(), [4, 4, 4]))
    centre = small.world_centre
    truth = cr.Rigid.from_angles(np.deg2rad([8.0, -5.0, 95.0]), translation=[4.0, -6.0, 3.0], center=centre)
    moving = synthetic.warp(small, truth)
    head = synthetic.head_points(small)
    config = presets.rigid().replace(rotation_search=True)
    result = cr.register(small, moving, config=config)
    assert synthetic.mean_displacement_error(result.transform, truth, head) < 0.2
    plain = cr.register(small, moving, preset="rigid")
    assert synthetic.mean_displacement_error(plain.transform, truth, head) > 5.0


def test_coarse_levels_use_fewer_sample_points(mni):
    # the 3D presets draw 15k points on the levels before the finest and 20k on the finest (max_samples); a
    # level with fewer usable voxels uses them all; the count of each level is in the history and result.json
    import json

    import SimpleITK as sitk

    from coregister.config import RegistrationConfig, Stage

    small = cr.SpatialImage.from_sitk(sitk.BinShrink(mni.to_sitk(), [2, 2, 2]))  # 91 x 109 x 91, levels 4-2-1
    truth = synthetic.random_rigid(small, 5, max_angle_deg=3.0, max_shift_mm=3.0)
    moving = synthetic.warp(small, truth)
    result = cr.register(small, moving, preset="rigid")
    coarsest = math.prod(n // 4 for n in small.size)  # 22 x 27 x 22 voxels after bin shrinking by 4
    assert [h.shrink_factor for h in result.history] == [4.0, 2.0, 1.0]
    assert [h.samples for h in result.history] == [min(coarsest, 15_000), 15_000, 20_000]
    assert [h["samples"] for h in json.loads(result.to_json())["history"]] == [h.samples for h in result.history]
    assert synthetic.mean_displacement_error(result.transform, truth, synthetic.head_points(small)) < 0.05
    # without coarse_max_samples every level draws max_samples
    stage = Stage(model="rigid", max_samples=3_000, edge_sampling_fraction=0.1, iterations=20)
    same = cr.register(small, moving, config=RegistrationConfig(stages=(stage,)))
    assert [h.samples for h in same.history] == [3_000, 3_000, 3_000]
    fewer = cr.register(small, moving, config=RegistrationConfig(stages=(stage.replace(coarse_max_samples=1_000),)))
    assert [h.samples for h in fewer.history] == [1_000, 1_000, 3_000]
    # where a level draws at most an eighth of its voxels, ITK draws from a virtual grid twice as coarse: the
    # points it evaluates are still about as many as asked for
    dense = cr.register(small, moving, config=RegistrationConfig(stages=(stage.replace(edge_sampling_fraction=None),)))
    for level in dense.history:
        assert abs(level.valid_samples - level.samples) < 0.1 * level.samples, level


def test_coarse_virtual_grid_covers_the_fixed_image():
    # where a level draws few of its voxels, ITK draws them from a grid twice as coarse (cheaper set-up); that
    # grid's bins are BinShrink's bins, and it covers the odd last row too
    import SimpleITK as sitk

    from coregister.engines.sitk.method import _coarse_grid

    image = sitk.Image([10, 7, 5], sitk.sitkFloat32)
    image.SetSpacing((1.0, 1.5, 3.0))
    image.SetOrigin((-20.0, 4.0, 7.5))
    image.SetDirection(cr.Rigid.from_angles(np.deg2rad([0.0, 0.0, 30.0])).matrix.ravel().tolist())
    size, origin, spacing = _coarse_grid(image, 2)
    shrunk = sitk.BinShrink(image, [2, 2, 2])
    assert size == [5, 4, 3] and list(shrunk.GetSize()) == [5, 3, 2]
    np.testing.assert_allclose(origin, shrunk.GetOrigin(), atol=1e-9)
    np.testing.assert_allclose(spacing, shrunk.GetSpacing(), atol=1e-12)
    # the far corner of the fine grid lies inside the coarse grid's last voxel
    coarse = sitk.Image(size, sitk.sitkUInt8)
    coarse.SetSpacing(spacing)
    coarse.SetOrigin(origin)
    coarse.SetDirection(image.GetDirection())
    corner = image.TransformContinuousIndexToPhysicalPoint([n - 0.5 for n in image.GetSize()])
    assert np.all(np.array(coarse.TransformPhysicalPointToContinuousIndex(corner)) <= np.array(size) - 0.5 + 1e-9)


@pytest.mark.slow
def test_ecc_through_a_3d_preset_keeps_its_points(mni, head):
    # the 3D presets give the SimpleITK engine 15k/20k points per level and the ECC engine (metric="ecc") its own
    # 40k (Stage.extra "max_samples"): with 20k this case settled at 0.0078 mm, with 40k at 0.0027
    truth = synthetic.random_rigid(mni, 1, max_angle_deg=10.0, max_shift_mm=10.0)
    result = cr.register(mni, synthetic.warp(mni, truth), preset="rigid", metric="ecc")
    assert result.engine == "ecc"
    assert synthetic.mean_displacement_error(result.transform, truth, head) < 0.005
