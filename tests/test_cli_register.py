"""``coregister register`` and ``coregister apply`` run for real (``coregister.cli.main``) on real 2D data.

BrainWeb PD slices from the ITK examples: ``BrainProtonDensitySliceShifted13x17y.png`` is
``BrainProtonDensitySliceBorder20.png`` with its content moved by (+13, +17) px (1 mm pixels), so the
fixed -> moving transform that aligns them is the translation (13, 17) mm (see the data MANIFEST).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

import coregister as cr
from coregister.cli import EXIT_ERROR, EXIT_OK, EXIT_QUALITY, main
from coregister.cli.register import registered_name
from coregister.measures import ncc

BRAINWEB = "medical/itk_brainweb_2d"
FIXED = f"{BRAINWEB}/BrainProtonDensitySliceBorder20.png"
MOVING = f"{BRAINWEB}/BrainProtonDensitySliceShifted13x17y.png"
MASK = f"{BRAINWEB}/BrainProtonDensitySliceBorder20Mask.png"
VOLUME = "medical/nibabel_anat_func/anatomical.nii"
SHIFT_MM = np.array([13.0, 17.0])


def _stderr_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.strip()]


# ------------------------------------------------------------------ apply
def test_apply_resamples_onto_the_reference(data, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    transform = cr.Translation(SHIFT_MM).save(tmp_path / "shift.tfm")
    out = tmp_path / "moved_on_fixed.png"
    code = main(["apply", str(transform), str(data(MOVING)), "--reference", str(data(FIXED)), "-o", str(out)])
    assert code == EXIT_OK, capsys.readouterr().err
    fixed, result = cr.read(data(FIXED)), cr.read(out)
    assert result.same_geometry(fixed) and result.dtype == np.uint8
    inside = np.ones(fixed.shape, bool)
    inside[-17:, :] = False  # the last 17 rows and 13 columns sample outside the moving image
    inside[:, -13:] = False
    np.testing.assert_array_equal(result.array[inside], np.asarray(fixed.array)[inside])
    assert (np.asarray(result.array)[~inside] == 0).all()


def test_apply_nearest_keeps_a_mask_binary(data, tmp_path: Path) -> None:
    transform = cr.Rigid.from_angles(np.deg2rad(7.0), translation=[2.3, -1.6], center=[110.0, 128.0]).save(tmp_path / "r.tfm")
    out = tmp_path / "mask_moved.png"
    code = main(
        ["apply", str(transform), str(data(MASK)), "--reference", str(data(FIXED)), "-o", str(out), "--interpolation", "nearest"]
    )
    assert code == EXIT_OK
    assert set(np.unique(cr.read(out).array).tolist()) == {0, 255}
    linear = tmp_path / "mask_linear.png"
    assert main(["apply", str(transform), str(data(MASK)), "--reference", str(data(FIXED)), "-o", str(linear)]) == EXIT_OK
    assert len(np.unique(cr.read(linear).array)) > 2  # linear blends the edge: the option matters


@pytest.mark.parametrize("case", ["missing_transform", "missing_image", "dimension_mismatch", "unknown_output_format"])
def test_apply_errors_are_one_line_exit_1(data, tmp_path: Path, capsys: pytest.CaptureFixture[str], case: str) -> None:
    tfm2 = cr.Translation([1.0, 2.0]).save(tmp_path / "t2.tfm")
    tfm3 = cr.Translation([1.0, 2.0, 3.0]).save(tmp_path / "t3.tfm")
    out = tmp_path / "out.png"
    args = {
        "missing_transform": [str(tmp_path / "nope.tfm"), str(data(MOVING)), "--reference", str(data(FIXED)), "-o", str(out)],
        "missing_image": [str(tfm2), str(tmp_path / "nope.png"), "--reference", str(data(FIXED)), "-o", str(out)],
        "dimension_mismatch": [str(tfm3), str(data(MOVING)), "--reference", str(data(FIXED)), "-o", str(out)],
        "unknown_output_format": [str(tfm2), str(data(MOVING)), "--reference", str(data(FIXED)), "-o", str(tmp_path / "o.xyz")],
    }[case]
    capsys.readouterr()
    assert main(["apply", *args]) == EXIT_ERROR
    lines = _stderr_lines(capsys.readouterr().err)
    assert len(lines) == 1 and lines[0].startswith("coregister: error:"), lines
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t2.tfm", "t3.tfm"]  # nothing written


def test_registered_name_follows_the_fixed_image(data) -> None:
    assert registered_name(data(FIXED)) == "registered.png"
    assert registered_name(data(VOLUME)) == "registered.nii"
    assert registered_name(data("medical/mri_dir_phantom/MR_T2_every2nd")) == "registered.nii.gz"
    assert registered_name(data("medical/dicom_small/CT_small.dcm")) == "registered.nii.gz"


# ------------------------------------------------------------------ register
def test_register_writes_every_output(data, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    outdir = tmp_path / "reg"
    code = main(
        ["register", str(data(FIXED)), str(data(MOVING)), "-o", str(outdir), "--preset", "translation",
         "--metric", "ncc", "--seed", "7", "--threads", "1", "--json"]
    )
    captured = capsys.readouterr()
    assert code == EXIT_OK, captured.err
    assert sorted(p.name for p in outdir.iterdir()) == ["registered.png", "result.json", "transform.tfm"]
    assert [p.name for p in tmp_path.iterdir()] == ["reg"]  # no staging folder left behind

    # The transform is a real ITK file and recovers the known shift.
    tx = sitk.ReadTransform(str(outdir / "transform.tfm"))
    np.testing.assert_allclose(np.array(tx.TransformPoint((50.0, 60.0))) - [50.0, 60.0], SHIFT_MM, atol=0.2)
    ours = cr.read_transform(outdir / "transform.tfm")
    np.testing.assert_allclose(ours.transform_points([[50.0, 60.0]]), [tx.TransformPoint((50.0, 60.0))], atol=1e-9)

    result = json.loads((outdir / "result.json").read_text())
    assert result["seed"] == 7 and result["threads"] == 1
    assert result["metrics"]["after"]["ncc"] > result["metrics"]["before"]["ncc"]
    printed = json.loads(captured.out)
    assert printed["seed"] == 7 and len(printed["outputs"]) == 3

    fixed, registered = cr.read(data(FIXED)), cr.read(outdir / "registered.png")
    assert registered.same_geometry(fixed, atol=1e-6) and registered.dtype == fixed.dtype
    assert ncc(fixed.array, registered.array, registered.array > 0) > 0.99


def test_register_with_masks_and_report(data, tmp_path: Path) -> None:
    outdir = tmp_path / "masked"
    code = main(
        ["register", str(data(FIXED)), str(data(MOVING)), "-o", str(outdir), "--preset", "translation",
         "--fixed-mask", str(data(MASK)), "--report"]
    )
    assert code in (EXIT_OK, EXIT_QUALITY)
    assert sorted(p.name for p in outdir.iterdir()) == ["registered.png", "report.html", "result.json", "transform.tfm"]
    assert "<img" in (outdir / "report.html").read_text()


@pytest.mark.parametrize("case", ["missing_moving", "dimension_mismatch", "bad_format", "missing_mask"])
def test_register_errors_are_one_line_exit_1_and_write_nothing(
    data, tmp_path: Path, capsys: pytest.CaptureFixture[str], case: str
) -> None:
    bad = tmp_path / "notes.txt"
    bad.write_text("not an image\n")
    fixed, moving = str(data(FIXED)), str(data(MOVING))
    outdir = tmp_path / "out"
    args = {
        "missing_moving": [fixed, str(tmp_path / "nope.png")],
        "dimension_mismatch": [fixed, str(data(VOLUME))],
        "bad_format": [fixed, str(bad)],
        "missing_mask": [fixed, moving, "--fixed-mask", str(tmp_path / "nope_mask.png")],
    }[case]
    capsys.readouterr()
    assert main(["register", *args, "-o", str(outdir)]) == EXIT_ERROR
    lines = _stderr_lines(capsys.readouterr().err)
    assert len(lines) == 1 and lines[0].startswith("coregister: error:"), lines
    if case == "dimension_mismatch":
        assert "2D" in lines[0] and "3D" in lines[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]  # no output folder, no staging folder


# ------------------------------------------------------------ inputs are never overwritten
@pytest.fixture
def own_copies(data, tmp_path: Path) -> Path:
    """A folder with copies of the fixed and moving images and a transform (the user's own files)."""
    folder = tmp_path / "ow"
    folder.mkdir()
    (folder / "fixed.png").write_bytes(data(FIXED).read_bytes())
    (folder / "moving.png").write_bytes(data(MOVING).read_bytes())
    cr.Translation(SHIFT_MM).save(folder / "T.tfm")
    return folder


def _contents(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


@pytest.mark.parametrize("target", ["moving.png", "fixed.png", "T.tfm"])
def test_apply_refuses_to_overwrite_an_input(own_copies: Path, capsys: pytest.CaptureFixture[str], target: str) -> None:
    before = _contents(own_copies)
    capsys.readouterr()
    code = main(["apply", str(own_copies / "T.tfm"), str(own_copies / "moving.png"), "--reference",
                 str(own_copies / "fixed.png"), "-o", str(own_copies / target)])
    lines = _stderr_lines(capsys.readouterr().err)
    assert code == EXIT_ERROR
    assert len(lines) == 1 and "refusing to overwrite the input" in lines[0] and target in lines[0], lines
    assert _contents(own_copies) == before  # every input byte for byte, and no new file


def test_apply_refuses_a_link_to_an_input(own_copies: Path) -> None:
    (own_copies / "link.png").symlink_to(own_copies / "moving.png")
    before = _contents(own_copies)
    code = main(["apply", str(own_copies / "T.tfm"), str(own_copies / "moving.png"), "--reference",
                 str(own_copies / "fixed.png"), "-o", str(own_copies / "link.png")])
    assert code == EXIT_ERROR and _contents(own_copies) == before


@pytest.mark.parametrize("role", ["fixed", "moving"])
def test_register_refuses_a_folder_holding_an_input_by_an_output_name(
    own_copies: Path, capsys: pytest.CaptureFixture[str], role: str
) -> None:
    # The fixed image named like the registered output, or the moving image named like result.json's neighbour:
    # either way writing into its folder would replace it.
    name = {"fixed": "registered.png", "moving": "transform.tfm"}[role]
    (own_copies / name).write_bytes((own_copies / f"{role}.png").read_bytes())
    fixed = own_copies / ("registered.png" if role == "fixed" else "fixed.png")
    moving = own_copies / ("transform.tfm" if role == "moving" else "moving.png")
    before = _contents(own_copies)
    capsys.readouterr()
    code = main(["register", str(fixed), str(moving), "-o", str(own_copies), "--preset", "translation"])
    lines = _stderr_lines(capsys.readouterr().err)
    assert code == EXIT_ERROR
    assert len(lines) == 1 and "refusing to overwrite the input" in lines[0] and name in lines[0], lines
    assert _contents(own_copies) == before


# ------------------------------------------------- initialisation, initial transform, detector
@pytest.fixture
def far_pair(data, tmp_path: Path) -> tuple[Path, Path]:
    """A BrainWeb slice on a 400 x 400 black canvas, and a copy whose content moved by (+55, -38) px."""
    from scipy import ndimage

    slice_ = np.asarray(cr.read(data(FIXED)).array)[..., 0]
    canvas = np.zeros((400, 400), np.uint8)
    canvas[70 : 70 + slice_.shape[0], 90 : 90 + slice_.shape[1]] = slice_
    moved = np.clip(np.round(ndimage.shift(canvas.astype(float), (-38.0, 55.0), order=1)), 0, 255).astype(np.uint8)
    fixed, moving = tmp_path / "far_fixed.png", tmp_path / "far_moving.png"
    cr.write(cr.SpatialImage(canvas, origin=(0.0, 0.0), spacing=(1.0, 1.0)), fixed)
    cr.write(cr.SpatialImage(moved, origin=(0.0, 0.0), spacing=(1.0, 1.0)), moving)
    return fixed, moving


@pytest.mark.parametrize(("start", "first_ecc"), [("none", (0.3, 0.7)), ("moments", (0.99, 1.0)), ("file", (0.99, 1.0))])
def test_register_starts_where_it_is_told(
    far_pair: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str], start: str,
    first_ecc: tuple[float, float],
) -> None:
    """ECC's first correlation shows where the run started: from the identity (none) the slices overlap badly;
    from the centres of mass, or from a given transform (the truth here), they are aligned from the start."""
    truth = cr.Translation([55.0, -38.0]).save(tmp_path / "truth.tfm")
    how = ["--initial-transform", str(truth)] if start == "file" else ["--initialisation", start]
    capsys.readouterr()
    code = main(["register", *map(str, far_pair), "-o", str(tmp_path / "out"), "--preset", "translation",
                 "--metric", "ecc", *how, "--json"])
    out = capsys.readouterr()
    assert code == EXIT_OK, out.err
    result = json.loads(out.out)
    low, high = first_ecc
    assert low < result["history"][0]["metric_values"][0] < high
    if start != "file":
        assert result["config"]["initialisation"] == start
    np.testing.assert_allclose(result["transform"]["translation"], [55.0, -38.0], atol=0.01)


@pytest.fixture
def photo_pair(tmp_path: Path) -> tuple[Path, Path]:
    from skimage import data as skdata

    from coregister._opencv import cv2
    from coregister.cli.demo import photo_truth

    grey = cv2.cvtColor(skdata.astronaut(), cv2.COLOR_RGB2GRAY)
    warped = cv2.warpPerspective(grey, photo_truth(grey.shape), (grey.shape[1], grey.shape[0]), flags=cv2.INTER_LINEAR)
    fixed, moving = tmp_path / "photo.png", tmp_path / "photo_warped.png"
    cr.write(cr.SpatialImage(grey, origin=(0.0, 0.0), spacing=(1.0, 1.0)), fixed)
    cr.write(cr.SpatialImage(warped, origin=(0.0, 0.0), spacing=(1.0, 1.0)), moving)
    return fixed, moving


@pytest.mark.parametrize("detector", [None, "sift"])
def test_register_detector_reaches_the_feature_engine(
    photo_pair: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str], detector: str | None
) -> None:
    option = [] if detector is None else ["--detector", detector]
    capsys.readouterr()
    code = main(["register", *map(str, photo_pair), "-o", str(tmp_path / "out"), "--preset", "homography", *option,
                 "--json"])
    out = capsys.readouterr()
    assert code == EXIT_OK, out.err
    result = json.loads(out.out)
    assert result["engine"] == "features" and result["extras"]["detector"] == (detector or "orb")


@pytest.mark.parametrize("detector", ["orb", "sift"])
def test_register_detector_reaches_the_feature_initialisation(
    photo_pair: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str], detector: str
) -> None:
    # the SimpleITK engine starts from the features' affine, found with the detector asked for
    capsys.readouterr()
    code = main(["register", *map(str, photo_pair), "-o", str(tmp_path / "out"), "--preset", "affine",
                 "--initialisation", "features", "--detector", detector, "--json"])
    out = capsys.readouterr()
    assert code == EXIT_OK, out.err
    result = json.loads(out.out)
    start = result["start"]
    assert result["engine"] == "sitk" and start["engine"] == "features" and start["detector"] == detector
    assert start["inliers"] > 50


@pytest.mark.parametrize(
    ("args", "message"),
    [
        # 2D presets start from keypoints (the detector chooses them); from the image centres none are used
        (["--preset", "rigid", "--initialisation", "geometry", "--detector", "sift"],
         "(--detector, detector=) applies to feature-based registration"),
        (["--preset", "rigid", "--initialisation", "moments", "--initial-transform", "t.tfm"], "not both"),
    ],
)
def test_register_refuses_options_that_would_be_ignored(
    photo_pair: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    cr.Translation([0.0, 0.0]).save(tmp_path / "t.tfm")
    args = [str(tmp_path / a) if a == "t.tfm" else a for a in args]
    capsys.readouterr()
    assert main(["register", *map(str, photo_pair), "-o", str(tmp_path / "out"), *args]) == EXIT_ERROR
    lines = _stderr_lines(capsys.readouterr().err)
    assert len(lines) == 1 and message in lines[0], lines
    assert not (tmp_path / "out").exists()


def test_a_rerun_into_the_same_folder_leaves_no_file_of_the_earlier_run(data, tmp_path: Path) -> None:
    out = tmp_path / "out"
    # one-channel copies of the slices (stored as R = G = B): a DICOM series holds grey values
    fixed, moving = (cr.write(cr.read(data(p), grayscale=True), tmp_path / Path(p).name) for p in (FIXED, MOVING))
    args = ["register", str(fixed), str(moving), "-o", str(out), "--preset", "translation"]
    assert main([*args, "--report"]) == EXIT_OK
    (out / "notes.txt").write_text("the user's own file")
    assert (out / "report.html").is_file()
    before = json.loads((out / "result.json").read_text())
    assert main([*args, "--preset", "rigid"]) == EXIT_ERROR  # the folder holds a registration: --overwrite replaces it
    assert main([*args, "--preset", "rigid", "--overwrite"]) == EXIT_OK
    # the report described the translation run: it goes with it; the user's file stays
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt", "registered.png", "result.json", "transform.tfm"]
    after = json.loads((out / "result.json").read_text())
    assert (before["transform"]["type"], after["transform"]["type"]) == ("Translation", "Rigid")
    # the registered image changes form: the earlier one goes, both ways
    assert main([*args, "--output-format", "dicom", "--overwrite"]) == EXIT_OK
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt", "registered_dicom", "result.json", "transform.tfm"]
    assert main([*args, "--overwrite"]) == EXIT_OK
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt", "registered.png", "result.json", "transform.tfm"]


def test_a_first_run_leaves_the_users_files_with_output_names_alone(data, tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "report.html").write_text("the user's own page")
    args = ["register", str(data(FIXED)), str(data(MOVING)), "-o", str(out), "--preset", "translation"]
    assert main(args) == EXIT_OK
    assert (out / "report.html").read_text() == "the user's own page"
