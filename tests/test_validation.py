"""A seeded subset of the validation corpus (``benchmarks/corpus.py``): right answers pass, wrong ones do not.

The whole corpus is the benchmark (``benchmarks/validate.py``, hundreds of
registrations); these few cases run in the default test run so that a change
that breaks the defaults or the quality check on one of its classes fails here.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from conftest import require_data

import coregister as cr

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import corpus  # noqa: E402
import validate  # noqa: E402


@pytest.fixture(scope="module", autouse=True)
def _volume() -> None:
    """The corpus reads its volume from the same data root (``COREGISTER_TEST_DATA``) as the tests."""
    require_data(corpus.VOLUMES["kmeans-t1"])


@pytest.mark.parametrize(
    ("kind", "name", "seed"),
    [
        ("similarity", "camera", 1),  # textured; the moving image's valid region as mask
        ("affine", "astronaut", 2),
        ("perspective", "camera", 2),  # a homography: the preset's model
        ("translation", "moon-hdr", 1),  # four decades of dynamic range
    ],
)
def test_photos_within_tolerance_pass(kind: str, name: str, seed: int) -> None:
    case = corpus.case_2d(kind, name, seed)
    row = corpus.run(case)
    assert row["error"] <= case.tolerance, row
    assert row["verdict"] == "passed", row


def test_multimodal_volume_within_tolerance_passes() -> None:
    case = corpus.case_3d("multi", "kmeans-t1", 1)
    row = corpus.run(case)
    assert row["error"] <= case.tolerance, row
    assert row["verdict"] == "passed", row


def test_a_deformation_within_tolerance_passes_and_demons_on_a_contrast_they_cannot_map_do_not_and_name_the_fix() -> None:
    """``syn`` on a 2 mm head under a known warp passes; the same pair with a T2-like remap ends about 5 mm off
    (its demons compare intensities) and fails: the whole answer shares less information than its linear part
    alone (measured 0.586 against 0.620). Before that rule it passed, on information above the unregistered
    pair's (0.590 against 0.584)."""
    require_data(corpus.VOLUMES["mni"])
    right = corpus.case_deform("mni", 1)
    row = corpus.run(right)
    assert row["error"] <= right.tolerance and row["verdict"] == "passed", row
    wrong = next(c for c in corpus.broken_cases(1) if c.cls == "broken/demons-on-multimodal")  # mni, seed 1
    row = corpus.run(wrong)
    assert row["error"] > 5 * wrong.tolerance, row  # wrong, as built
    assert row["verdict"] == "failed", row
    finding = next(f for f in row["failures"] if "worse than its linear part alone" in f)
    assert "metric='mattes'" in finding, finding  # the fix it names
    # which takes the pair nearer the truth than the unregistered images (measured 2.14 against 2.91 mm; the
    # demons about 5); before syn's ITK metrics had their optimiser's scales, 3.05
    fixed = corpus.case_deform_multi("mni", 1)
    assert fixed.options["metric"] == "mattes"
    row = corpus.run(fixed)
    assert row["error"] < 0.8 * fixed.error(cr.Translation((0.0, 0.0, 0.0))), row


@pytest.mark.parametrize("seed", [1, 5])
def test_thick_slices_onto_thin_ones_within_tolerance(seed: int) -> None:
    """9 mm slices onto the 3 mm ones they were made from (rigid): the 3 mm volume is smoothed to the 9 mm
    resolution and points are drawn everywhere. Matched against the sharp volume's edges, these ended 0.56 and
    0.60 mm off (a tolerance of 0.46); matched, 0.22 and 0.23."""
    case = corpus.case_3d("aniso", "kmeans-t1", seed)
    row = corpus.run(case)
    assert row["error"] <= case.tolerance, row
    assert row["verdict"] == "passed", row


def test_a_partial_field_of_view_is_registered_over_its_own_voxels() -> None:
    """A moving head cropped to 55-75 % of its slices: drawn over the whole fixed head, the points that fall
    outside the crop change with the transform and pulled this affine 4.6 mm along the cut (and it passed);
    finished over the moving image (the last stage run again the other way round, inverted), 0.12 mm."""
    require_data(corpus.VOLUMES["mni"])
    case = corpus.case_3d("partial", "mni", 10)
    stages: list[str] = []
    result = cr.register(case.fixed, case.moving, **case.options, seed=10,
                         progress=lambda stage, level, iteration, metric: stages.append(stage))
    assert result.extras["sampled_over"] == "moving"
    assert list(dict.fromkeys(stages)) == ["rigid", "affine", "affine, other way round"]  # the finish says so
    assert 0.55 <= result.extras["moving_field_share"] <= 0.75
    assert case.error(result.transform) <= case.tolerance
    assert result.passed



def test_a_failed_answer_settled_on_edge_points_is_refined_everywhere_and_left_uncertain() -> None:
    """Colin27 under a plain affine warp (seed 10): the points on the fixed head's strongest edges led the descent
    12 mm off, and the check failed it. The last stage again from there, on three times the points drawn
    everywhere, ends within tolerance; a refinement from an answer the check did not pass is at best uncertain."""
    require_data(corpus.VOLUMES["colin27"])
    case = corpus.case_3d("mono", "colin27", 10)
    stages: list[str] = []
    result = cr.register(case.fixed, case.moving, **case.options,
                         progress=lambda stage, level, iteration, metric: stages.append(stage))
    assert [a.quality.verdict.value for a in result.attempts] == ["failed", "uncertain"]
    assert stages[-1] == "affine, points everywhere"
    assert case.error(result.transform) <= case.tolerance
    assert result.verdict.value == "uncertain"
    assert "a local refinement shows an optimum" in result.quality.failures[-1]

def _broken(cls: str, seed: int = 1) -> corpus.Case:
    return next(c for c in corpus.broken_cases(seed) if c.cls == cls)


@pytest.mark.parametrize("cls", ["broken/stopped-early-3d", "broken/ncc-on-multimodal", "broken/unrelated-photos",
                                 "broken/far-start-2d"])
def test_broken_runs_are_not_passed_when_wrong(cls: str) -> None:
    case = _broken(cls)
    row = corpus.run(case)
    assert "refused" in row or row["error"] <= case.tolerance or row["verdict"] != "passed", row


def test_an_answer_a_checkerboard_square_off_is_not_passed() -> None:
    """The board repeats every 50 px: the check moves the answer by one repeat and finds the truth there."""
    case = corpus.case_2d("affine", "checkerboard", 4)
    row = corpus.run(case)
    assert row["error"] > 5 * case.tolerance, row  # the engine stops one square off ...
    assert row["verdict"] == "failed", row  # ... and the alignment a repeat away shares more information
    assert max(row["measures"]["repeat_gains"]) > 0.1, row
    assert any("repeats itself 50 units away" in f for f in row["failures"]), row


def test_a_right_answer_on_a_checkerboard_is_uncertain() -> None:
    """Alignments one square apart score alike: the check says it cannot tell rather than passing."""
    case = corpus.case_2d("translation", "checkerboard", 1)
    row = corpus.run(case)
    assert row["error"] <= case.tolerance, row
    assert row["verdict"] == "uncertain", row
    assert [round(s) for s in row["measures"]["repeat_shifts"]] == [50, 50, 50, 50], row


def test_a_mirrored_projective_answer_is_not_passed() -> None:
    """Keypoints matched on a silhouette fit a homography that mirrors the horse and sends part of it to infinity."""
    case = corpus.case_2d("perspective", "horse", 2)
    row = corpus.run(case)
    assert row["error"] > 5 * case.tolerance, row
    assert row["verdict"] == "failed", row
    assert any("horizon crosses the fixed image" in f for f in row["failures"]), row


def test_a_photo_that_does_not_repeat_has_no_repeat_evidence() -> None:
    row = corpus.run(corpus.case_2d("similarity", "camera", 2))
    assert row["verdict"] == "passed", row
    assert "repeat_shifts" not in row["measures"], row


def test_a_mask_over_background_is_refused() -> None:
    row = corpus.run(_broken("broken/mask-on-background"))
    assert row["refused"].startswith("GeometryError") and "covers no structure" in row["refused"], row


def test_check_record_counts_false_acceptance_and_rejection() -> None:
    rows = [
        {"case": "a", "error": 0.05, "tolerance": 0.1, "verdict": "passed", "failures": []},
        {"case": "b", "error": 0.08, "tolerance": 0.1, "verdict": "uncertain", "failures": ["tie"]},  # false rejection
        {"case": "c", "error": 0.3, "tolerance": 0.1, "verdict": "passed", "failures": []},  # not gross: not counted
        {"case": "d", "error": 0.6, "tolerance": 0.1, "verdict": "passed", "failures": []},  # false acceptance
        {"case": "e", "error": 9.0, "tolerance": 0.1, "verdict": "failed", "failures": ["x"]},
        {"case": "f", "refused": "ConfigError: mask"},
    ]
    record = validate.check_record(rows)
    assert (record["gross_answers"], record["false_accepted"]) == (2, 1)
    assert (record["good_answers"], record["false_rejected"]) == (2, 1)
    assert record["false_acceptance_rate"] == 0.5 and record["false_rejection_rate"] == 0.5
    assert record["refused"] == 1 and record["runs"] == 6


def test_a_photo_over_four_decades_registers_with_its_highlights_clamped() -> None:
    """Mattes bins span the lowest to the highest value: the moon's highlights (0.5 % of it, up to 1e4) would
    leave its structure two bins; clamped for the registration, the answer holds (it was 1.07 px off, passed)."""
    import coregister as cr

    case = corpus.case_2d("similarity", "moon-hdr", 1)
    result = cr.register(case.fixed, case.moving, **case.options)
    assert case.error(result.transform) <= case.tolerance
    assert result.passed
    assert any("clamped to" in w for w in result.warnings), result.warnings


def test_ordinary_intensities_are_not_clamped() -> None:
    from coregister.preprocess import clamp_outliers

    for name in ("camera", "checkerboard", "coins", "astronaut"):
        image = corpus.case_2d("translation", name, 1).fixed
        out, note = clamp_outliers(image)
        assert out is image and note is None, (name, note)
    volume = corpus.volume("kmeans-t1")
    out, note = clamp_outliers(volume)
    assert out is volume and note is None, note
