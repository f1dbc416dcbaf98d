"""The README's CT-to-MR pair (MRI-DIR phantom) beside elastix and ANTsPy: one answer each, scored the same way.

Issue 12.6: the phantom's CT (0.39 x 0.39 x 5 mm) onto its T2 MR (0.5 x 0.5 x
5 mm) has no known truth, so the answers are compared by what they optimise
and with each other:

* **MI**: Mattes mutual information (SimpleITK, 50 bins, every voxel of the
  MR grid, linear interpolation; lower is better), the same scorer for
  every answer;
* **distances**: the mean distance (mm) between two answers' images of the
  MR's phantom voxels (above 5 % of its 99th percentile, every 50th), for
  every pair of methods.

Methods, each in its own process (``bench_3d``'s runners, the peers in
their own environments from ``../shared/peers/install.sh``): ``ours``
(``register(preset="rigid")``: Mattes MI, what ``coregister register
--preset rigid --metric mattes`` runs), ``ours-small`` (the same on both
images resampled to 2 mm in-plane first, as ``examples/ct_to_mr.py
--small``), ``ours-precise``, ``elastix`` (its default rigid map) and
``ants`` (ANTsPy ``Rigid``).

    .venv/bin/python benchmarks/bench_ctmr.py
    .venv/bin/python benchmarks/bench_ctmr.py --methods ours,ours-small,elastix

Not a test: pytest never collects it.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np
import SimpleITK as sitk

import coregister as cr

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples"))
import bench_3d  # noqa: E402
from ct_to_mr import in_plane_coarse  # noqa: E402

PHANTOM = bench_3d.DATA / "medical" / "mri_dir_phantom"
METHODS = ("ours", "ours-small", "ours-precise", "elastix", "ants")


def mutual_information(mr: sitk.Image, ct: sitk.Image, matrix: np.ndarray) -> float:
    """Mattes MI (50 bins) of the CT through ``matrix`` (MR -> CT points, 4x4) over every voxel of the MR grid."""
    method = sitk.ImageRegistrationMethod()
    method.SetMetricAsMattesMutualInformation(numberOfHistogramBins=50)
    method.SetMetricSamplingStrategy(method.NONE)
    method.SetInterpolator(sitk.sitkLinear)
    tx = sitk.AffineTransform(3)
    tx.SetMatrix(matrix[:3, :3].ravel().tolist())
    tx.SetTranslation(matrix[:3, 3].tolist())
    method.SetInitialTransform(tx)
    return float(method.MetricEvaluate(mr, ct))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--timeout", type=float, default=900.0)
    args = parser.parse_args(argv)
    methods = [m for m in args.methods.split(",") if m]
    mr, ct = cr.read(PHANTOM / "MR_T2_every2nd"), cr.read(PHANTOM / "CT_every8th")
    work = Path(tempfile.mkdtemp(prefix="bench_ctmr_"))
    paths = {"full": (work / "mr.nii", work / "ct.nii"), "small": (work / "mr_small.nii", work / "ct_small.nii")}
    cr.write(mr, paths["full"][0])
    cr.write(ct, paths["full"][1])
    cr.write(in_plane_coarse(mr, 2.0), paths["small"][0])
    cr.write(in_plane_coarse(ct, 2.0), paths["small"][1])
    for runner in {bench_3d.METHODS[m.replace("-small", "")][0] for m in methods}:
        (work / f"run_{runner}.py").write_text(bench_3d._COMMON + bench_3d.RUNNERS[runner])

    answers: dict[str, np.ndarray] = {}
    rows = []
    mr_sitk = sitk.Cast(mr.to_sitk(), sitk.sitkFloat32)
    ct_sitk = sitk.Cast(ct.to_sitk(), sitk.sitkFloat32)
    for name in methods:
        fixed, moving = paths["small" if name.endswith("-small") else "full"]
        out = bench_3d.run_method(name.replace("-small", ""), work, fixed,
                                  {"kind": "rigid", "moving": moving, "seed": 0}, args.timeout)
        if out is None or "failed" in out:
            rows.append(f"| {name} | {out.get('failed') if out else 'not run'} | | | |")
            continue
        matrix = np.asarray(out["matrix"], float)
        answers[name] = matrix
        passed = out.get("passed")
        verdict = "" if passed is None else ("passed" if passed else "not passed")
        rows.append(f"| {name} | {out['reg_s']:.1f} | {mutual_information(mr_sitk, ct_sitk, matrix):.4f} | "
                    f"{out.get('iterations', '')} | {verdict} |")
        print(rows[-1], flush=True)

    values = np.asarray(mr.array, float)
    inside = np.argwhere(values > 0.05 * np.percentile(values, 99))[::50, ::-1].astype(float)
    points = mr.index_to_world(inside)
    names = list(answers)
    lines = ["| method | reg s | MI (every MR voxel) | iterations per level | check |", "|---|---:|---:|---|---|", *rows,
             "", "| mean distance (mm) | " + " | ".join(names) + " |", "|---|" + "---:|" * len(names)]
    for a in names:
        moved_a = points @ answers[a][:3, :3].T + answers[a][:3, 3]
        cells = []
        for b in names:
            moved_b = points @ answers[b][:3, :3].T + answers[b][:3, 3]
            cells.append(f"{np.linalg.norm(moved_a - moved_b, axis=1).mean():.2f}")
        lines.append(f"| {a} | " + " | ".join(cells) + " |")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
