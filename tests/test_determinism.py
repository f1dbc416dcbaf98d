"""Same inputs, same seed: same transform (to 1e-6 with several threads, bit-identical with one), and the seed
and thread count recorded in the result.

Real data: the ITK BrainWeb slices and MNI152 (``medical/antspy/mni.nii.gz``, bin-averaged to 2 mm to keep
this quick) warped by a seeded rigid transform.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

import coregister as cr
from coregister.qc import synthetic

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples"))
from ct_to_mr import in_plane_coarse  # noqa: E402  the example's own --small resampling

BRAINWEB = "medical/itk_brainweb_2d/"


@pytest.fixture(scope="module")
def mni_pair() -> tuple[cr.SpatialImage, cr.SpatialImage]:
    from conftest import require_data

    mni = cr.read(require_data("medical/antspy/mni.nii.gz"))
    fixed = cr.SpatialImage.from_sitk(sitk.BinShrink(mni.to_sitk(), [2, 2, 2]))
    truth = synthetic.random_rigid(fixed, 21)
    return fixed, synthetic.degrade(synthetic.warp(fixed, truth), 21)


@pytest.fixture
def slices(data) -> tuple[cr.SpatialImage, cr.SpatialImage]:
    fixed = cr.read(data(BRAINWEB + "BrainT1SliceBorder20.png"))
    moving = cr.read(data(BRAINWEB + "BrainProtonDensitySliceR10X13Y17.png"))
    return fixed, moving


def _parameters(result: cr.Result) -> np.ndarray:
    return result.transform.homogeneous


@pytest.mark.parametrize("preset", ["rigid", "affine"])
def test_repeat_runs_agree_to_1e6(mni_pair, preset):
    fixed, moving = mni_pair
    first = cr.register(fixed, moving, preset=preset, seed=3)
    second = cr.register(fixed, moving, preset=preset, seed=3)
    np.testing.assert_allclose(_parameters(first), _parameters(second), rtol=0, atol=1e-6)


@pytest.mark.parametrize("preset", ["rigid", "affine"])
def test_one_thread_is_bit_identical(mni_pair, preset):
    fixed, moving = mni_pair
    first = cr.register(fixed, moving, preset=preset, seed=3, threads=1)
    second = cr.register(fixed, moving, preset=preset, seed=3, threads=1)
    assert np.array_equal(_parameters(first), _parameters(second))
    assert [h.metric_values for h in first.history] == [h.metric_values for h in second.history]
    assert first.threads == second.threads == 1


def test_default_runs_are_bit_identical_on_a_flat_multimodal_optimum(data):
    # CT (feet first) to T2 MR of the MRI-DIR phantom, 5 mm slices: with the Mattes metric on 2 threads, three runs
    # landed 0.15 degrees and 0.5 mm apart (ITK adds the threads' derivative buffers in the order they finish);
    # the default runs the metric on one thread
    # (here at 2 mm in-plane, as examples/ct_to_mr.py --small runs it: an answer settled on edge points and the last
    # stage again on points drawn everywhere, both deterministic)
    phantom = "medical/mri_dir_phantom/"
    mr, ct = (in_plane_coarse(cr.read(data(phantom + name)), 2.0) for name in ("MR_T2_every2nd", "CT_every8th"))
    first, second = (cr.register(mr, ct, preset="rigid") for _ in range(2))
    assert len(first.attempts) == 2
    assert np.array_equal(_parameters(first), _parameters(second))
    assert [h.metric_values for h in first.history] == [h.metric_values for h in second.history]


def test_seed_changes_the_samples_not_the_answer(slices):
    fixed, moving = slices
    results = [cr.register(fixed, moving, preset="rigid", seed=s, threads=1) for s in (1, 2)]
    assert not np.array_equal(_parameters(results[0]), _parameters(results[1]))
    points = fixed.world_grid().reshape(-1, 2)
    assert synthetic.mean_displacement_error(results[0].transform, results[1].transform, points) < 0.2


def test_seed_and_threads_are_recorded(slices, tmp_path):
    fixed, moving = slices
    result = cr.register(fixed, moving, preset="translation", seed=17, threads=2)
    saved = json.loads(result.save_json(tmp_path / "result.json").read_text())
    assert (saved["seed"], saved["threads"]) == (17, 2)
    assert (saved["config"]["seed"], saved["config"]["threads"]) == (17, 2)
    default = cr.register(fixed, moving, preset="translation")
    # by default the registration runs on one thread (bit-identical runs) and the pyramids on all of them
    assert default.threads == 1
    assert default.extras["pyramid_threads"] == sitk.ProcessObject.GetGlobalDefaultNumberOfThreads()
    assert default.seed == 0


def test_the_process_wide_thread_count_is_restored(slices):
    # the engine sets SimpleITK's process-wide default to one thread while it optimises; it must give it back,
    # after a run that worked and after one that failed
    fixed, moving = slices
    before = sitk.ProcessObject.GetGlobalDefaultNumberOfThreads()
    cr.register(fixed, moving, preset="translation")
    assert sitk.ProcessObject.GetGlobalDefaultNumberOfThreads() == before
    with pytest.raises(cr.CoregisterError):  # a start with no overlap: SimpleITK raises inside the engine
        cr.register(fixed, moving, preset="translation", initial_transform=cr.Translation([1e6, 1e6]))
    assert sitk.ProcessObject.GetGlobalDefaultNumberOfThreads() == before


@pytest.mark.parametrize("preset", ["rigid", "affine"])
def test_pyramids_built_alongside_do_not_change_the_answer(mni_pair, preset):
    # by default the pyramid levels are built on a second thread (all cores) while the optimiser runs on one;
    # with threads=1 everything runs in turn on one thread: the same transform, bit for bit, and the same traces
    fixed, moving = mni_pair
    default = cr.register(fixed, moving, preset=preset, seed=3)
    if default.extras["pyramid_threads"] == 1:
        pytest.skip("one core: nothing is built alongside")
    serial = cr.register(fixed, moving, preset=preset, seed=3, threads=1)
    assert np.array_equal(_parameters(default), _parameters(serial))
    assert [h.metric_values for h in default.history] == [h.metric_values for h in serial.history]


def test_a_failure_on_the_pyramid_thread_reaches_the_caller(mni_pair, monkeypatch):
    # an error met while building a level (on whichever thread) is raised by register, and no builder thread
    # is left running
    import threading

    from coregister.engines.sitk import pyramid

    def broken(*args, **kwargs):
        raise RuntimeError("edge mask broke")

    monkeypatch.setattr(pyramid, "_edge_mask", broken)
    fixed, moving = mni_pair
    with pytest.raises(RuntimeError, match="edge mask broke"):
        cr.register(fixed, moving, preset="rigid", seed=3)
    assert not [t for t in threading.enumerate() if t.name == "coregister-pyramid"]
