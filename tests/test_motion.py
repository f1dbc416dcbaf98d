"""Motion correction of 4D series: known motion recovered, fMRIPrep's parameters, headers kept, 4D refused elsewhere.

The accuracy series is MNI152 (1 mm, ``medical/antspy/mni.nii.gz``) moved by
a seeded head-motion trajectory (up to 3 mm and 3 degrees per axis, two
sudden jumps), blurred to and sampled once on a 48 x 56 x 48 grid of 4 mm
(the whole head in the field of view, as an fMRI run has it), 12 volumes,
with 1 % noise (of the 99th percentile: a temporal SNR of 50-100 in the
brain) and a 5 % signal drift. The truth for volume ``k`` registered to
volume ``r`` is ``M_k ∘ M_r⁻¹``; its parameters are computed by the same
:func:`motion_parameters`, so the comparison is in the TSV's own units.
"""

from __future__ import annotations

import json
import pickle
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

import coregister as cr
from coregister.errors import ConfigError, GeometryError
from coregister.medical import framewise_displacement, motion, motion_parameters
from coregister.pipeline import register_series
from coregister.qc.synthetic import motion_series, random_motion

N_VOLUMES = 12
#: per-volume parameter tolerances of the issue
MAX_SHIFT_ERROR_MM = 0.05
MAX_ANGLE_ERROR_DEG = 0.05


@pytest.fixture(scope="module")
def moving_head() -> tuple[cr.SpatialImage, tuple[cr.Rigid, ...]]:
    from conftest import require_data

    mni = cr.read(require_data("medical/antspy/mni.nii.gz"))
    size, spacing = np.array([48, 56, 48]), np.array([4.0, 4.0, 4.0])
    direction = np.asarray(mni.direction)
    origin = mni.world_centre - direction @ ((size - 1) / 2 * spacing)
    grid = cr.SpatialImage(np.zeros(tuple(size[::-1]), np.float32), origin=tuple(origin), spacing=tuple(spacing),
                           direction=direction)
    poses = random_motion(N_VOLUMES, 7, centre=grid.world_centre, max_shift_mm=3.0, max_angle_deg=3.0)
    return motion_series(mni, grid, poses, seed=7, noise=0.01, drift=0.05), poses


def _truth(poses: tuple[cr.Rigid, ...], reference: int) -> list[cr.Affine]:
    back = np.linalg.inv(poses[reference].homogeneous)
    return [cr.Affine.from_homogeneous(pose.homogeneous @ back) for pose in poses]


def _errors(result, poses) -> tuple[np.ndarray, np.ndarray]:  # type: ignore[no-untyped-def]
    truth = motion_parameters(_truth(poses, N_VOLUMES // 2), result.reference)
    error = np.abs(result.parameters - truth)
    return error[:, :3], np.rad2deg(error[:, 3:])


def test_synthetic_motion_is_large_enough_to_matter(moving_head) -> None:
    _, poses = moving_head
    shifts = np.array([p.translation for p in poses])
    angles = np.array([p.angles_deg for p in poses])
    assert np.abs(shifts).max() > 2.0 and np.abs(angles).max() > 2.0  # up to 3 mm and 3 degrees
    assert np.abs(shifts).max() <= 3.0 and np.abs(angles).max() <= 3.0 + 1e-9


@pytest.mark.parametrize("reference", ["middle", "mean"])
def test_known_motion_recovered_per_volume(moving_head, reference: str) -> None:
    series, poses = moving_head
    result = motion(series, reference=reference)
    shift_error, angle_error = _errors(result, poses)
    assert shift_error.max() < MAX_SHIFT_ERROR_MM, shift_error.max(axis=1)
    assert angle_error.max() < MAX_ANGLE_ERROR_DEG, angle_error.max(axis=1)
    assert result.passed and result.passes == (2 if reference == "mean" else 1)
    assert result.reference_volume == (None if reference == "mean" else N_VOLUMES // 2)
    # every volume resampled once onto the reference grid: the realigned series agrees with the reference
    realigned = np.asarray(result.realigned.array)
    assert realigned.shape == series.array.shape and realigned.dtype == np.float32
    centre = tuple(slice(n // 4, 3 * n // 4) for n in series.shape)
    before = np.mean(np.std(np.asarray(series.array)[centre], axis=-1))
    after = np.mean(np.std(realigned[centre], axis=-1))
    assert after < 0.5 * before


def test_workers_give_the_same_answer(moving_head) -> None:
    series, _ = moving_head
    small = series.replace(array=np.asarray(series.array)[..., :5])
    one = motion(small, workers=1)
    two = motion(small, workers=2)  # the two chains in two spawned processes
    assert np.array_equal(one.parameters, two.parameters)
    assert [r.verdict for r in one.results] == [r.verdict for r in two.results]


def test_reference_choices(moving_head) -> None:
    series, _ = moving_head
    small = series.replace(array=np.asarray(series.array)[..., :3])
    for reference, index in (("first", 0), ("last", 2), (1, 1), (-1, 2)):
        result = motion(small, reference=reference)
        assert result.reference_volume == index
        assert np.allclose(result.parameters[index], 0.0, atol=1e-3)  # the reference does not move
    with pytest.raises(ConfigError, match="out of range"):
        motion(small, reference=3)
    with pytest.raises(ConfigError, match="choose one of"):
        motion(small, reference="median")


# --------------------------------------------------------------------------- parameters and FD

def _grid(direction: list[float]) -> cr.SpatialImage:
    z, y, x = np.mgrid[0:20, 0:24, 0:22]
    values = np.exp(-((x - 9.0) ** 2 + (y - 13.0) ** 2 + (z - 10.0) ** 2) / 40.0).astype(np.float32)
    return cr.SpatialImage(values, origin=(10.0, -20.0, 5.0), spacing=(2.0, 2.5, 3.0), direction=np.diag(direction))


def test_parameters_follow_mcflirt_whatever_the_storage_order() -> None:
    """The same physical motion gives the same parameters for an LAS-stored and an RAS-stored reference."""
    motions = [cr.Translation([-2.0, 0.0, 0.0]), cr.Translation([0.0, -1.5, 0.0]), cr.Translation([0.0, 0.0, 1.0])]
    las = motion_parameters(motions, _grid([1.0, -1.0, 1.0]))
    ras = motion_parameters(motions, _grid([-1.0, -1.0, 1.0]))
    np.testing.assert_allclose(las, ras, atol=1e-12)
    # towards the subject's right (+x RAS), anterior (+y RAS), superior (+z): MCFLIRT's signs
    np.testing.assert_allclose(las[:, :3], [[2.0, 0, 0], [0, -1.5, 0], [0, 0, -1.0]], atol=1e-12)
    np.testing.assert_allclose(las[:, 3:], 0.0, atol=1e-12)


def test_rotation_about_the_centre_of_gravity_has_no_translation() -> None:
    from scipy import ndimage

    reference = _grid([1.0, -1.0, 1.0])
    index = np.asarray(ndimage.center_of_mass(np.asarray(reference.array)))[::-1]
    centre = reference.index_to_world([index])[0]
    turn = cr.Rigid.from_angles(np.deg2rad([0.0, 0.0, 2.0]), center=centre)  # about the S axis
    (params,) = motion_parameters([turn], reference)
    np.testing.assert_allclose(params[:3], 0.0, atol=1e-6)
    np.testing.assert_allclose(np.abs(params[3:]), [0.0, 0.0, np.deg2rad(2.0)], atol=1e-12)


def test_framewise_displacement_is_power_2012() -> None:
    params = np.array([[0, 0, 0, 0, 0, 0], [0.1, -0.2, 0.05, 0.001, -0.002, 0.0], [0.1, -0.2, 0.05, 0.001, -0.002, 0.0]])
    fd = framewise_displacement(params)
    assert np.isnan(fd[0])
    np.testing.assert_allclose(fd[1:], [0.1 + 0.2 + 0.05 + 50 * 0.003, 0.0])
    np.testing.assert_allclose(framewise_displacement(params, radius_mm=80)[1], 0.35 + 80 * 0.003)


def test_tsv_has_fmriprep_columns(moving_head) -> None:
    series, _ = moving_head
    result = motion(series.replace(array=np.asarray(series.array)[..., :4]), fd_threshold_mm=0.2)
    lines = result.to_tsv().splitlines()
    assert lines[0].split("\t") == ["trans_x", "trans_y", "trans_z", "rot_x", "rot_y", "rot_z", "framewise_displacement"]
    rows = [line.split("\t") for line in lines[1:]]
    assert len(rows) == 4 and rows[0][-1] == "n/a"
    np.testing.assert_allclose(np.array([r[:6] for r in rows], float), result.parameters, rtol=1e-7, atol=1e-9)
    fd = np.array([float(r[-1]) for r in rows[1:]])
    assert result.outliers == tuple(int(k) + 1 for k in np.flatnonzero(fd > 0.2))


# --------------------------------------------------------------------------- real series, headers kept

HEADER_FIELDS = ("xyzt_units", "slice_code", "slice_start", "slice_end", "slice_duration", "toffset", "intent_code",
                 "sform_code", "qform_code", "dim_info")


@pytest.mark.parametrize("name", ["functional.nii", "example4d.nii.gz"])
def test_real_series_end_to_end_with_header_kept(name: str, tmp_path: Path) -> None:
    from conftest import require_data

    source = require_data(f"medical/nibabel_anat_func/{name}")
    run = subprocess.run([sys.executable, "-m", "coregister", "motion", str(source), "-o", str(tmp_path / "out"),
                          "--reference", "mean", "--json"], capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr
    summary = json.loads(run.stdout)
    original = nib.load(source)
    written = tmp_path / "out" / ("realigned.nii" if name.endswith(".nii") else "realigned.nii.gz")
    realigned = nib.load(written)
    before, after = original.header, realigned.header
    assert realigned.shape == original.shape
    np.testing.assert_allclose(after["pixdim"][1:5], before["pixdim"][1:5], rtol=1e-6)  # voxel sizes and TR
    assert after["pixdim"][0] == before["pixdim"][0]  # qfac
    for field in HEADER_FIELDS:
        assert np.array_equal(np.asarray(after[field]), np.asarray(before[field])), field
    assert after.get_xyzt_units() == before.get_xyzt_units() and after.get_zooms()[3] == before.get_zooms()[3]
    np.testing.assert_allclose(after.get_sform(), before.get_sform(), atol=1e-4)
    np.testing.assert_allclose(after.get_qform(), before.get_qform(), atol=1e-4)
    assert after["descrip"].tobytes().split(b"\0")[0] == before["descrip"].tobytes().split(b"\0")[0]
    tsv = (tmp_path / "out" / "motion.tsv").read_text().splitlines()
    assert len(tsv) == 1 + original.shape[3]
    assert len(list((tmp_path / "out" / "transforms").glob("volume-*.tfm"))) == original.shape[3]
    assert summary["volumes"] == original.shape[3] and summary["reference"] == "mean"
    assert (tmp_path / "out" / "report.html").stat().st_size > 20_000
    # a volume resampled with its saved transform by `coregister apply` is the realigned volume
    first = cr.read_transform(tmp_path / "out" / "transforms" / "volume-0001.tfm")
    volume = cr.read(source, volume=1)
    again = cr.apply(first, volume, reference=volume, output_dtype=np.float32)
    np.testing.assert_allclose(again.array, np.asarray(cr.read(written).array)[..., 1], atol=1e-3 * np.ptp(volume.array))
    # an earlier run's outputs are replaced only with --overwrite (refused before any work)
    refused = subprocess.run([sys.executable, "-m", "coregister", "motion", str(source), "-o", str(tmp_path / "out")],
                             capture_output=True, text=True, timeout=120)
    assert refused.returncode == 1 and "pass --overwrite" in refused.stderr, refused.stderr


def test_motion_command_refuses_a_3d_image(tmp_path: Path) -> None:
    from conftest import require_data

    source = require_data("medical/nibabel_anat_func/anatomical.nii")
    run = subprocess.run([sys.executable, "-m", "coregister", "motion", str(source), "-o", str(tmp_path / "o")],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 1
    assert "not a 4D series" in run.stderr and len(run.stderr.strip().splitlines()) == 1


# --------------------------------------------------------------------------- 4D where 3D is expected

def test_register_refuses_a_4d_series_and_points_to_motion(tmp_path: Path) -> None:
    from conftest import require_data

    series = cr.read(require_data("medical/nibabel_anat_func/functional.nii"))
    one = cr.read(require_data("medical/nibabel_anat_func/functional.nii"), volume=0)
    with pytest.raises(GeometryError, match=r"4D series of 20 volumes.*coregister\.motion"):
        cr.register(one, series)
    with pytest.raises(GeometryError, match="coregister motion"):
        cr.register(series, one)
    # a 4D MetaImage reads as a series too, and is refused the same way
    path = cr.write(series, tmp_path / "series.mha")
    with pytest.raises(GeometryError, match="4D series"):
        cr.register(one, cr.read(path))
    run = subprocess.run([sys.executable, "-m", "coregister", "register", str(require_data(
        "medical/nibabel_anat_func/functional.nii")), str(require_data("medical/nibabel_anat_func/anatomical.nii")),
        "-o", str(tmp_path / "r")], capture_output=True, text=True, timeout=120)
    assert run.returncode == 1 and "coregister motion" in run.stderr and len(run.stderr.strip().splitlines()) == 1


def test_colour_and_vector_images_still_register() -> None:
    y, x = np.mgrid[0:64, 0:64]
    grey = np.exp(-((x - 30.0) ** 2 + (y - 34.0) ** 2) / 90.0) + 0.5 * (x > 40)
    rgb = np.stack([grey, 0.5 * grey, 0.2 * grey], axis=-1).astype(np.float32)
    fixed = cr.SpatialImage(rgb, origin=(0, 0), spacing=(1, 1))
    from scipy import ndimage

    moving = fixed.replace(array=ndimage.shift(rgb, (1.0, 2.0, 0.0), order=3))
    result = cr.register(fixed, moving, preset="translation")
    np.testing.assert_allclose(result.transform.translation, [2.0, 1.0], atol=0.05)  # content moved +2 x, +1 y
    assert any("luminance" in w for w in result.warnings)


def test_motion_refuses_what_is_not_a_series() -> None:
    volume = cr.SpatialImage(np.zeros((4, 5, 6), np.float32), origin=(0, 0, 0), spacing=(1, 1, 1))
    with pytest.raises(GeometryError, match="4D series"):
        motion(volume)
    with pytest.raises(GeometryError, match="at least two"):
        motion(volume.replace(array=np.zeros((4, 5, 6, 1), np.float32)))


# --------------------------------------------------------------------------- the pipeline's series, and pickling

def test_register_series_fails_one_volume_not_the_series(moving_head) -> None:
    series, poses = moving_head
    reference = series.channel(6).replace(meta={})
    flat = reference.replace(array=np.zeros(reference.shape, np.float32))  # an empty volume (a dropped frame)
    volumes = [series.channel(k).replace(meta={}) for k in (7, 8)]
    results = register_series(reference, [volumes[0], flat, volumes[1]], config=cr.medical.motion_correction.motion_config())
    assert [r.passed for r in results] == [True, False, True]
    assert results[1].quality.failures  # why, in words
    truth = _truth(poses, 6)
    for result, k in ((results[0], 7), (results[2], 8)):
        assert np.abs(result.transform.homogeneous - truth[k].homogeneous).max() < 0.1


def test_images_and_results_pickle() -> None:
    image = cr.SpatialImage(np.arange(24, dtype=np.float32).reshape(2, 3, 4), origin=(1, 2, 3), spacing=(1, 1, 2),
                            meta={"nifti": {"descrip": "x"}, "format": "nifti"})
    back = pickle.loads(pickle.dumps(image))
    assert back.same_geometry(image) and np.array_equal(back.array, image.array)
    assert back.meta["nifti"]["descrip"] == "x" and not back.array.flags.writeable
    y, x = np.mgrid[0:48, 0:48]
    blob = cr.SpatialImage((np.exp(-((x - 20.0) ** 2 + (y - 26.0) ** 2) / 60.0) + 0.5 * (x > 30)).astype(np.float32),
                           origin=(0, 0), spacing=(1, 1))
    result = cr.register(blob, blob.replace(array=np.roll(np.asarray(blob.array), 2, axis=1)), preset="translation")
    again = pickle.loads(pickle.dumps(result))
    assert json.dumps(again.to_dict(), sort_keys=True) == json.dumps(result.to_dict(), sort_keys=True)
    assert again.quality.verdict is result.quality.verdict and len(again.history) == len(result.history)
