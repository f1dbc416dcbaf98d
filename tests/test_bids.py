"""``coregister batch --bids``: a BIDS cohort in, a BIDS-derivatives dataset out, indexed again by pybids.

A tiny dataset is built from ``../shared/data``: the Colin 27 head
(ANTsPy's ``ch2``) at 4 mm as ``sub-01``, and the same head with its
world geometry moved by a known rigid transform ``E`` as ``sub-02``
(session 1, run 1); the template is the MNI152 head at 4 mm
(``tpl-MNI152_res-04_T1w.nii.gz``). Every registration maps template points
to subject points, so ``sub-02``'s answer must be ``E`` after ``sub-01``'s.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import coregister as cr
from coregister import Rigid, SpatialImage, Translation
from coregister.cli import main

pytest.importorskip("bids", reason="pybids is not installed (pip install 'coregister[bids]')")

E = Rigid.from_angles(np.deg2rad([4.0, -3.0, 6.0]), translation=(5.0, -4.0, 3.0), center=(0.0, 0.0, 0.0))


def _downsampled(image: SpatialImage, step: int) -> SpatialImage:
    grid = SpatialImage(
        np.zeros(tuple(n // step for n in image.shape), np.uint8),
        origin=tuple(image.index_to_world([[(step - 1) / 2.0] * 3])[0]),
        spacing=tuple(s * step for s in image.spacing), direction=image.direction,
    )
    return cr.apply(Translation(np.zeros(3)), image, reference=grid, output_dtype=np.float32)


def _moved(image: SpatialImage, rigid: Rigid) -> SpatialImage:
    """The same voxels, their world positions moved by ``rigid`` (a point p of ``image`` is at rigid(p) in the copy)."""
    matrix = rigid.homogeneous @ image.affine
    return image.replace(origin=tuple(matrix[:3, 3]), direction=matrix[:3, :3] / np.asarray(image.spacing))


@pytest.fixture(scope="module")
def cohort(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    from conftest import require_data

    root = tmp_path_factory.mktemp("bids")
    dataset = root / "dataset"
    (dataset / "sub-01" / "anat").mkdir(parents=True)
    (dataset / "sub-02" / "ses-1" / "anat").mkdir(parents=True)
    (dataset / "dataset_description.json").write_text(json.dumps({"Name": "tiny", "BIDSVersion": "1.9.0"}))
    (dataset / "participants.tsv").write_text("participant_id\nsub-01\nsub-02\n")
    head = _downsampled(cr.read(require_data("medical/antspy/ch2.nii.gz")), 4)
    cr.write(head, dataset / "sub-01" / "anat" / "sub-01_T1w.nii.gz")
    cr.write(_moved(head, E), dataset / "sub-02" / "ses-1" / "anat" / "sub-02_ses-1_run-1_T1w.nii.gz")
    template = cr.write(_downsampled(cr.read(require_data("medical/antspy/mni.nii.gz")), 4),
                        root / "tpl-MNI152_res-04_T1w.nii.gz")
    derivatives = root / "derivatives"
    code = main(["-q", "batch", "--bids", str(dataset), "--suffix", "T1w", "--template", str(template),
                 "-o", str(derivatives), "--preset", "affine", "--workers", "1", "--threaded"])
    assert code == 0
    return {"dataset": dataset, "template": template, "derivatives": derivatives}


SUB01 = "sub-01/anat/sub-01"
SUB02 = "sub-02/ses-1/anat/sub-02_ses-1_run-1"


def test_derivatives_are_a_bids_dataset(cohort: dict[str, Path]) -> None:
    deriv = cohort["derivatives"]
    description = json.loads((deriv / "dataset_description.json").read_text())
    assert description["DatasetType"] == "derivative" and description["BIDSVersion"]
    assert description["GeneratedBy"][0]["Name"] == "coregister" and description["GeneratedBy"][0]["Version"]
    assert description["DatasetLinks"]["raw"] == cohort["dataset"].resolve().as_uri()
    for stem in (SUB01, SUB02):
        for tail in ("_space-MNI152_T1w.nii.gz", "_space-MNI152_T1w.json", "_from-T1w_to-MNI152_mode-image_xfm.h5",
                     "_from-MNI152_to-T1w_mode-image_xfm.h5"):
            assert (deriv / (stem + tail)).is_file(), stem + tail
    sidecar = json.loads((deriv / (SUB02 + "_space-MNI152_T1w.json")).read_text())
    assert sidecar["Sources"] == ["bids:raw:sub-02/ses-1/anat/sub-02_ses-1_run-1_T1w.nii.gz"]
    assert sidecar["Registration"]["Verdict"] == "passed"
    template = cr.read(cohort["template"])
    assert cr.read(deriv / (SUB01 + "_space-MNI152_T1w.nii.gz")).same_geometry(template, atol=1e-6)


def test_pybids_indexes_the_derivatives(cohort: dict[str, Path]) -> None:
    import bids

    layout = bids.BIDSLayout(str(cohort["dataset"]), derivatives=str(cohort["derivatives"]), validate=False)
    images = layout.get(scope="derivatives", space="MNI152", suffix="T1w", extension=".nii.gz")
    assert sorted(Path(f.path).name for f in images) == ["sub-01_space-MNI152_T1w.nii.gz",
                                                         "sub-02_ses-1_run-1_space-MNI152_T1w.nii.gz"]
    forward = layout.get(scope="derivatives", suffix="xfm", extension=".h5", mode="image", **{"from": "T1w", "to": "MNI152"})
    assert sorted((f.entities["subject"], f.entities.get("session")) for f in forward) == [("01", None), ("02", "1")]
    assert layout.get(scope="derivatives", suffix="xfm", extension=".h5", **{"from": "MNI152", "to": "T1w"})


def test_the_transforms_agree_with_the_known_move(cohort: dict[str, Path]) -> None:
    """sub-02 is sub-01 moved by E: its template -> subject map is E after sub-01's; each inverse undoes its forward."""
    deriv = cohort["derivatives"]
    t1 = cr.read_transform(deriv / (SUB01 + "_from-T1w_to-MNI152_mode-image_xfm.h5"))
    t2 = cr.read_transform(deriv / (SUB02 + "_from-T1w_to-MNI152_mode-image_xfm.h5"))
    back = cr.read_transform(deriv / (SUB01 + "_from-MNI152_to-T1w_mode-image_xfm.h5"))
    template = cr.read(cohort["template"])
    head = template.world_grid()[np.asarray(template.array) > np.percentile(template.array, 60)]
    error = np.linalg.norm(t2.transform_points(head) - E.transform_points(t1.transform_points(head)), axis=1)
    assert error.mean() < 1.0  # mm; a quarter of the 4 mm voxels
    np.testing.assert_allclose(back.transform_points(t1.transform_points(head)), head, atol=1e-6)


def test_bids_usage_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    not_bids = tmp_path / "plain"
    not_bids.mkdir()
    template = tmp_path / "t.nii.gz"
    cr.write(SpatialImage(np.zeros((4, 4, 4), np.float32), origin=(0, 0, 0), spacing=(1, 1, 1)), template)
    assert main(["batch", "--bids", str(not_bids), "-o", str(tmp_path / "d")]) == 2  # no --template
    assert "--template" in capsys.readouterr().err
    code = main(["batch", "--bids", str(not_bids), "--template", str(template), "-o", str(tmp_path / "d")])
    assert code != 0 and "dataset_description.json" in capsys.readouterr().err
