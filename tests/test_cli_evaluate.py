"""``coregister evaluate`` end to end: the ANTsPy atlas moved by a known rigid motion, scored with the truth and without.

The fixed labels are ``antspy/mnia.nii.gz`` (116 labels; at 2 mm to keep the
test short); the moving labels are the same atlas carried by a known
fixed -> moving rigid transform ``T`` (moving(y) = atlas(T^-1 y), nearest
neighbour), and the landmarks are label centroids on the fixed atlas (3D
Slicer ``.fcsv``, RAS) and their images under ``T`` (``.mrk.json``, LPS).
Scored with ``T`` the labels overlap as well as two nearest-neighbour
resamplings allow and the landmarks to 1e-6 mm; scored with the identity,
both are far off. The JSON and CSV written with ``-o`` are read back.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage
from scipy.spatial.transform import Rotation

import coregister as cr
from coregister.cli import EXIT_ERROR, EXIT_OK, main
from coregister.medical import Landmarks, write_landmarks

TRUTH = cr.Rigid(Rotation.from_euler("xyz", [4.0, -3.0, 5.0], degrees=True).as_matrix(), [3.0, -2.0, 4.5],
                 center=[0.0, -18.0, 18.0])
CENTROID_LABELS = [1, 5, 12, 23, 37, 48, 59, 70, 85, 101]


@pytest.fixture(scope="module")
def case(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    from conftest import require_data

    folder = tmp_path_factory.mktemp("evaluate")
    full = cr.read(require_data("medical/antspy/mnia.nii.gz"))
    origin = np.asarray(full.origin) + full.direction @ [0.5, 0.5, 0.5]
    grid = cr.SpatialImage(np.zeros((91, 109, 91), np.uint8), origin=tuple(origin), spacing=(2.0, 2.0, 2.0),
                           direction=full.direction)
    atlas = cr.apply(cr.Translation([0.0, 0.0, 0.0]), full, reference=grid, interpolation="nearest")
    moved = cr.apply(TRUTH.inverse(), atlas, interpolation="nearest")  # moving(y) = atlas(T^-1 y)
    cr.write(atlas, folder / "fixed_labels.nii.gz")
    cr.write(moved, folder / "moving_labels.nii.gz")
    centroids = ndimage.center_of_mass(np.ones(atlas.shape), atlas.array, CENTROID_LABELS)
    fixed = Landmarks(atlas.index_to_world(np.asarray(centroids)[:, ::-1]), labels=[f"region {n}" for n in CENTROID_LABELS])
    write_landmarks(fixed, folder / "fixed.fcsv", coordinate_system="RAS")
    write_landmarks(cr.transform_points(TRUTH, fixed), folder / "moving.mrk.json", coordinate_system="LPS")
    write_landmarks(Landmarks(fixed.points[:-1]), folder / "nine.csv")
    TRUTH.save(folder / "truth.tfm")
    cr.Translation([0.0, 0.0, 0.0]).save(folder / "identity.tfm")
    result = folder / "reg-out"  # a registration's folder: its transform and the registered image on the fixed grid
    result.mkdir()
    TRUTH.save(result / "transform.tfm")
    cr.write(atlas.replace(array=np.zeros(atlas.shape, np.float32)), result / "registered.nii.gz")
    (result / "result.json").write_text(json.dumps({"transform": TRUTH.to_dict(), "engine": "sitk", "metrics": {}}))
    return {name: folder / name for name in ("fixed_labels.nii.gz", "moving_labels.nii.gz", "fixed.fcsv", "moving.mrk.json",
                                             "nine.csv", "truth.tfm", "identity.tfm", "reg-out")} | {"folder": folder}


def _evaluate(case: dict[str, Path], source: str, out: Path, *extra: str) -> int:
    return main(["evaluate", str(case[source]), "--fixed-labels", str(case["fixed_labels.nii.gz"]),
                 "--moving-labels", str(case["moving_labels.nii.gz"]), "--fixed-landmarks", str(case["fixed.fcsv"]),
                 "--moving-landmarks", str(case["moving.mrk.json"]), "-o", str(out), *extra])


def test_scored_with_the_truth_and_with_the_identity(case: dict[str, Path], tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    assert _evaluate(case, "truth.tfm", tmp_path / "truth") == EXIT_OK, capsys.readouterr().err
    printed = capsys.readouterr().out
    assert "dice" in printed and "summary" in printed and "region 101" in printed
    truth = json.loads((tmp_path / "truth" / "evaluation.json").read_text())
    assert _evaluate(case, "identity.tfm", tmp_path / "identity") == EXIT_OK
    identity = json.loads((tmp_path / "identity" / "evaluation.json").read_text())

    assert len(truth["labels"]) == 116 and [p["label"] for p in truth["landmarks"]] == [f"region {n}" for n in CENTROID_LABELS]
    summary, before = truth["summary"], identity["summary"]
    assert summary["tre_max_mm"] < 1e-6  # the landmarks went through RAS .fcsv and LPS .mrk.json and back
    assert summary["dice_mean"] > 0.95 and before["dice_mean"] < 0.5
    assert summary["hd95_mean_mm"] < 1.0 and before["hd95_mean_mm"] > 5.0  # half a voxel; off by the motion
    expected = np.linalg.norm(np.array([p["moving"] for p in truth["landmarks"]]) - [p["fixed"] for p in truth["landmarks"]],
                              axis=1)
    assert before["tre_mean_mm"] == pytest.approx(float(expected.mean()), abs=1e-9) and before["tre_mean_mm"] > 5.0
    assert summary["folding_fraction"] == 0.0 and summary["sd_log_jacobian"] == 0.0
    assert summary["jacobian_min"] == pytest.approx(1.0, abs=1e-12)

    with open(tmp_path / "truth" / "evaluation.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert list(rows[0]) == ["measure", "item", "value", "unit"]
    dice = {r["item"]: float(r["value"]) for r in rows if r["measure"] == "dice"}
    assert dice == {str(s["label"]): s["dice"] for s in truth["labels"]}
    assert [float(r["value"]) for r in rows if r["measure"] == "tre"] == [p["error_mm"] for p in truth["landmarks"]]
    assert {r["measure"]: float(r["value"]) for r in rows if r["item"] == ""}["dice_mean"] == summary["dice_mean"]


def test_a_registration_folder_gives_the_same_scores(case: dict[str, Path], tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    assert _evaluate(case, "reg-out", tmp_path / "folder", "--json") == EXIT_OK, capsys.readouterr().err
    printed = json.loads(capsys.readouterr().out)
    assert _evaluate(case, "truth.tfm", tmp_path / "file", "-q") == EXIT_OK
    from_file = json.loads((tmp_path / "file" / "evaluation.json").read_text())
    written = json.loads((tmp_path / "folder" / "evaluation.json").read_text())
    assert written["inputs"]["transform"] == str(case["reg-out"] / "transform.tfm")
    assert printed["summary"] == written["summary"] == from_file["summary"]
    assert printed["outputs"] == [str(tmp_path / "folder" / n) for n in ("evaluation.json", "evaluation.csv")]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"--fixed-labels": "moving_labels.nii.gz", "--fixed": "crop"}, "lie on another grid than the fixed image"),
        ({"--moving-landmarks": "nine.csv"}, "10 fixed landmarks (3D) but 9 moving landmarks"),
        ({"--moving-labels": None}, "give both --fixed-labels and --moving-labels"),
        ({"source": "missing.tfm"}, "does not exist"),
        ({"--moving-labels": "fixed.fcsv"}, "fixed.fcsv"),
    ],
)
def test_bad_input_is_one_line_and_exit_1(case: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                          change: dict[str, str | None], message: str) -> None:
    options = {"source": "truth.tfm", "--fixed-labels": "fixed_labels.nii.gz", "--moving-labels": "moving_labels.nii.gz",
               "--fixed-landmarks": "fixed.fcsv", "--moving-landmarks": "moving.mrk.json", **change}
    if options.get("--fixed") == "crop":
        crop = cr.read(case["fixed_labels.nii.gz"])
        cr.write(crop.replace(array=crop.array[:40]), tmp_path / "crop.nii.gz")
        options["--fixed"] = str(tmp_path / "crop.nii.gz")
    argv = ["evaluate", str(case["folder"] / str(options.pop("source")))]
    for flag, name in options.items():
        if name is not None:
            argv += [flag, name if Path(name).is_absolute() else str(case["folder"] / name)]
    assert main(argv + ["-o", str(tmp_path / "out")]) == EXIT_ERROR
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 1 and err[0].startswith("coregister: error: ") and message in err[0], err
    assert not (tmp_path / "out" / "evaluation.json").exists()
