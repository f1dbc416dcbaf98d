"""A ``syn`` registration's folder, scored by ``coregister evaluate`` and read back from every deformable format.

MNI152 (``medical/antspy/mni.nii.gz``) and its 116-label atlas
(``mnia.nii.gz``), resampled onto a 3 mm grid with LPS axes (so a DICOM
series keeps the grid as it is), are moved by a known smooth deformation
``G`` (a cubic B-spline on a 40 mm mesh, up to 6 mm): ``moving(y) =
fixed(G(y))``, so the true fixed -> moving map is ``G⁻¹``. Both images are
written as DICOM MR series and registered by the command line as a user
would: ``coregister register FIXED MOVING --preset syn --dicom-registration
-o OUT``. Then:

* ``coregister evaluate OUT`` with the fixed and moving atlases and 20
  landmark pairs (moving points ``m`` in the head and their fixed
  counterparts ``G(m)``): the mean Dice is above 0.9 and above the
  identity's by 0.05, the mean TRE below 1.2 mm and below half the
  identity's, no folding, a log-Jacobian spread that is not zero.
* The answer (``OUT/transform.h5``: the affine after a displacement field)
  written as ANTs files, as an elastix chain and as a DICOM Deformable
  Spatial Registration object (the one the command wrote, and one written
  here), and read back, maps interior points (voxel centres inside the head,
  and points between them) as the answer does. Why these bounds: each format
  keeps the field on its own grid (nothing is resampled), so the only loss
  is in how numbers are stored. ANTs and elastix: the field as a float64
  NIfTI, the affine in double precision (ITK ``.mat``, elastix text written
  with ``repr``): 1e-9 mm (measured: 0). DICOM: the vectors in float32 (VR
  OF): displacements of at most ~10 mm rounded to 24 bits lose at most
  10 * 2^-24 ≈ 6e-7 mm, and linear interpolation between rounded samples
  errs no more than the samples do; the matrices as decimal strings of 16
  characters (about 1e-11 mm at 100 mm from the origin): 1e-5 mm, an order
  above that (measured: 1.2e-7 mm).

The module's two tests take about 20 s together, most of it the registration
(3 mm: on a 4 mm grid the identity's Dice is already 0.93 and tells little).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import pytest

import coregister as cr
from coregister.cli import EXIT_OK, main
from coregister.io.dicom_registration import DEFORMABLE_SPATIAL_REGISTRATION, read_registration, write_registration
from coregister.io.dicom_write import write_dicom
from coregister.io.transforms import read_transform, write_transform
from coregister.io.transforms.ants import read_ants, write_ants
from coregister.medical import Landmarks, write_landmarks
from coregister.qc import synthetic

ANTSPY = "medical/antspy/"
SPACING_MM = 3.0
LANDMARKS = 20
#: float64 fields and double-precision affines (ANTs, elastix); float32 vectors (DICOM): see the module notes
EXACT_ATOL_MM = 1e-9
FLOAT32_ATOL_MM = 1e-5


@pytest.fixture(scope="module")
def case(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    from conftest import require_data

    folder = tmp_path_factory.mktemp("syn_outputs")
    mni = cr.read(require_data(ANTSPY + "mni.nii.gz"))
    atlas = cr.read(require_data(ANTSPY + "mnia.nii.gz"))
    corners = np.array([[i, j, k] for i in (0, mni.size[0] - 1) for j in (0, mni.size[1] - 1) for k in (0, mni.size[2] - 1)], float)
    world = mni.index_to_world(corners)
    low, high = world.min(axis=0), world.max(axis=0)
    size = np.floor((high - low) / SPACING_MM).astype(int) + 1
    grid = cr.SpatialImage(np.zeros(tuple(size[::-1]), np.float32), origin=tuple(low), spacing=(SPACING_MM,) * 3)
    identity = cr.Translation([0.0, 0.0, 0.0])
    fixed = cr.apply(identity, mni, reference=grid)
    fixed_labels = cr.apply(identity, atlas, reference=grid, interpolation="nearest")
    warp = synthetic.random_bspline(fixed, 13, mesh_mm=40.0, max_displacement_mm=6.0)
    moving = synthetic.resample_through(fixed, warp)
    moving_labels = cr.apply(warp, fixed_labels, reference=fixed_labels, interpolation="nearest")  # labels(G(y))

    fixed_dicom = write_dicom(fixed, folder / "fixed", modality="MR")
    moving_dicom = write_dicom(moving, folder / "moving", modality="MR")
    cr.write(fixed_labels, folder / "fixed_labels.nii.gz")
    cr.write(moving_labels, folder / "moving_labels.nii.gz")
    head = synthetic.head_points(moving)
    moving_points = head[np.random.default_rng(0).choice(len(head), LANDMARKS, replace=False)]
    write_landmarks(Landmarks(warp.transform_points(moving_points)), folder / "fixed_landmarks.csv")
    write_landmarks(Landmarks(moving_points), folder / "moving_landmarks.csv")
    identity.save(folder / "identity.tfm")

    out = folder / "out"
    code = main(["register", str(fixed_dicom), str(moving_dicom), "--preset", "syn", "--dicom-registration", "-o", str(out),
                 "--quiet"])  # fmt: skip
    assert code == EXIT_OK
    return {"folder": folder, "out": out, "fixed": cr.read(fixed_dicom), "moving": cr.read(moving_dicom),
            "answer": read_transform(out / "transform.h5")}  # fmt: skip


def _evaluate(case: dict[str, Any], source: Path, name: str, *extra: str) -> dict[str, Any]:
    folder = case["folder"]
    code = main(["evaluate", str(source), *extra,
                 "--fixed-labels", str(folder / "fixed_labels.nii.gz"), "--moving-labels", str(folder / "moving_labels.nii.gz"),
                 "--fixed-landmarks", str(folder / "fixed_landmarks.csv"),
                 "--moving-landmarks", str(folder / "moving_landmarks.csv"), "-o", str(folder / name), "--quiet"])  # fmt: skip
    assert code == EXIT_OK
    return json.loads((folder / name / "evaluation.json").read_text(encoding="utf-8"))


def test_evaluate_scores_the_syn_folder(case: dict[str, Any]) -> None:
    answer = case["answer"]
    assert isinstance(answer, cr.Composite) and isinstance(answer.transforms[-1], cr.DisplacementField)
    scored = _evaluate(case, case["out"], "scored")  # the folder: transform.h5, and registered.nii.gz for the grid
    before = _evaluate(case, case["folder"] / "identity.tfm", "before", "--fixed", str(case["out"] / "registered.nii.gz"))
    summary, identity = scored["summary"], before["summary"]
    assert len(scored["labels"]) == 116 and len(scored["landmarks"]) == LANDMARKS
    # measured: Dice 0.931 (identity 0.833), TRE mean 0.76 mm (identity 1.94 mm), min J 0.66, sd log J 0.050
    assert summary["dice_mean"] > 0.9 and summary["dice_mean"] > identity["dice_mean"] + 0.05, (summary, identity)
    assert summary["tre_mean_mm"] < 1.2 and summary["tre_mean_mm"] < 0.5 * identity["tre_mean_mm"], (summary, identity)
    assert summary["tre_max_mm"] < identity["tre_max_mm"]
    assert summary["folding_fraction"] == 0.0 and summary["jacobian_min"] > 0.0
    assert 0.0 < summary["sd_log_jacobian"] < 0.2 and identity["sd_log_jacobian"] == 0.0
    # the Jacobian covers every voxel of the fixed grid, and agrees with the one the registration wrote
    fixed = case["fixed"]
    assert scored["jacobian"]["voxels"] == int(np.prod(fixed.shape))
    written = cr.read(case["out"] / "jacobian.nii.gz")
    assert written.same_geometry(fixed)
    assert abs(float(np.min(written.array)) - summary["jacobian_min"]) < 1e-5


def _interior_points(case: dict[str, Any]) -> np.ndarray:
    """Voxel centres inside the head (every 7th) and points a random fraction of a voxel away from them."""
    centres = synthetic.head_points(case["fixed"], step=7)
    jitter = np.random.default_rng(5).uniform(-0.5 * SPACING_MM, 0.5 * SPACING_MM, centres.shape)
    return np.vstack([centres, centres + jitter])


def _gap(a: cr.Transform, b: cr.Transform, points: np.ndarray) -> float:
    return float(np.abs(a.transform_points(points) - b.transform_points(points)).max())


def test_the_syn_answer_reads_back_from_ants_elastix_and_dicom(case: dict[str, Any], tmp_path: Path) -> None:
    answer, out = case["answer"], case["out"]
    points = _interior_points(case)
    moved = np.linalg.norm(answer.transform_points(points) - points, axis=1)
    assert moved.max() > 2.0  # a real deformation: a format that dropped a part would be seen

    for name in ("ants", "elastix"):
        (tmp_path / name).mkdir()
    # ANTs: the files the registration wrote (antsApplyTransforms -t order), and the ones write_ants names
    assert _gap(read_ants([out / "warp.nii.gz", out / "affine.mat"]), answer, points) < EXACT_ATOL_MM
    files = write_ants(answer, tmp_path / "ants" / "syn_", reference=case["fixed"], inverse_warp=True)
    assert [Path(p).name for p in files.forward] == ["syn_1Warp.nii.gz", "syn_0GenericAffine.mat"]
    assert _gap(read_ants(files.forward), answer, points) < EXACT_ATOL_MM
    # the inverse files take moving points back as the answer's own inverse does
    moving_points = answer.transform_points(points[: len(points) // 2])
    assert _gap(read_ants(files.inverse), answer.inverse(), moving_points) < EXACT_ATOL_MM

    # elastix: a chain of parameter files, the last for transformix
    chain = write_transform(answer, tmp_path / "elastix" / "TransformParameters.txt", format="elastix",
                            reference=case["fixed"])  # fmt: skip
    assert len(chain) == 2
    assert _gap(read_transform(chain[-1], format="elastix"), answer, points) < EXACT_ATOL_MM

    # DICOM Deformable Spatial Registration: the one `register --dicom-registration` wrote, and one written here
    for path in (out / "registration.dcm",
                 write_registration(answer, tmp_path / "registration.dcm", fixed=case["fixed"], moving=case["moving"])):
        assert pydicom.dcmread(path, stop_before_pixels=True).SOPClassUID == DEFORMABLE_SPATIAL_REGISTRATION
        back = read_registration(path)
        assert back.source_frame_of_reference_uid == case["moving"].meta["dicom"]["FrameOfReferenceUID"]
        assert _gap(back.transform, answer, points) < FLOAT32_ATOL_MM
