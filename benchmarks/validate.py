"""Validation: hundreds of registrations with a known truth, per case class; worst case, failure rate, check rates.

Runs every case of :mod:`corpus` through ``coregister.register`` with the
preset its class names, and prints per class: the number of cases, the
median and worst error, the failure rate (error above the class tolerance),
the gross-failure rate (above five times the tolerance), the verdicts and the
median time. Then the quality check's record over every run, the broken ones
included:

* **false acceptance**: answers more than five times their class tolerance
  off whose verdict is "passed", over all such answers;
* **false rejection**: answers within their tolerance whose verdict is not
  "passed", over all such answers. A refusal (an error raised, e.g. a mask
  over background) is neither: it is counted apart.

``--with-elastix`` also runs itk-elastix's default rigid/affine parameter map
on every 3D case (each in its own process, in the peer's environment from
``../shared/peers/install.sh``) and lists the cases where ours is less
accurate. Run from the repository root::

    .venv/bin/python benchmarks/validate.py --json validate.json --out validate.md
    .venv/bin/python benchmarks/validate.py --classes 3d- --with-elastix

Not a test: pytest never collects it (``tests/test_validation.py`` runs a
seeded subset).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import corpus  # noqa: E402

import coregister as cr  # noqa: E402

PEERS = Path(os.environ.get("COREGISTER_PEERS", Path.home() / ".cache" / "coregister-peers"))


def _median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def _fmt(value: float) -> str:
    if not math.isfinite(value):
        return "-" if math.isnan(value) else "inf"
    return f"{value:.3g}" if value < 100 else f"{value:.0f}"


def class_table(rows: list[dict[str, Any]]) -> str:
    """Per class: cases, median/worst error, failure rates, verdicts, median time."""
    lines = ["| class | cases | median error | worst error | tolerance | failed (> tol) | gross (> 5 tol) "
             "| passed / failed / uncertain / refused | median s |", "|---|---:|---:|---:|---:|---:|---:|---|---:|"]
    for cls in dict.fromkeys(r["cls"] for r in rows):
        group = [r for r in rows if r["cls"] == cls]
        errors = [r["error"] for r in group if "error" in r]
        tol = next((r["tolerance"] for r in group if "tolerance" in r), float("nan"))
        unit = next((r["unit"] for r in group if "unit" in r), "")
        failed = sum(1 for e in errors if e > tol)
        gross = sum(1 for e in errors if e > 5 * tol)
        verdicts = [r.get("verdict", "refused") for r in group]
        counts = " / ".join(str(verdicts.count(v)) for v in ("passed", "failed", "uncertain", "refused"))
        lines.append(
            f"| {cls} | {len(group)} | {_fmt(_median(errors))} {unit} | {_fmt(max(errors, default=float('nan')))} {unit} "
            f"| {_fmt(tol)} | {failed}/{len(errors)} | {gross}/{len(errors)} | {counts} "
            f"| {_median([r['time_s'] for r in group]):.2f} |"
        )
    return "\n".join(lines)


def check_record(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """False-acceptance and false-rejection rates of the quality check over ``rows``."""
    judged = [r for r in rows if "error" in r]
    gross = [r for r in judged if r["error"] > 5 * r["tolerance"]]
    good = [r for r in judged if r["error"] <= r["tolerance"]]
    accepted = [r for r in gross if r["verdict"] == "passed"]
    rejected = [r for r in good if r["verdict"] != "passed"]
    return {
        "runs": len(rows),
        "refused": sum(1 for r in rows if "refused" in r),
        "gross_answers": len(gross),
        "false_accepted": len(accepted),
        "false_acceptance_rate": len(accepted) / len(gross) if gross else 0.0,
        "good_answers": len(good),
        "false_rejected": len(rejected),
        "false_rejection_rate": len(rejected) / len(good) if good else 0.0,
        "false_accepted_cases": [f"{r['case']} ({r['error']:.3g})" for r in accepted],
        "false_rejected_cases": [f"{r['case']} ({'; '.join(r['failures']) or r['verdict']})" for r in rejected],
    }


# ----------------------------------------------------------------------------------------------- elastix
_ELASTIX = r"""
import json, sys, time
import itk, numpy as np, SimpleITK as sitk
fixed_path, moving_path, kind = sys.argv[1:4]
fixed = itk.imread(fixed_path, itk.F); moving = itk.imread(moving_path, itk.F)
params = itk.ParameterObject.New(); params.AddParameterMap(params.GetDefaultParameterMap(kind))
t = time.perf_counter()
_, result = itk.elastix_registration_method(fixed, moving, parameter_object=params, log_to_console=False)
reg_s = time.perf_counter() - t
p = result.GetParameterMap(0)
values = [float(v) for v in p["TransformParameters"]]; center = [float(v) for v in p["CenterOfRotationPoint"]]
if kind == "rigid":
    e = sitk.Euler3DTransform(); e.SetCenter(center)
    e.SetComputeZYX("ComputeZYX" in p and p["ComputeZYX"][0] == "true"); e.SetParameters(values)
    a, tr = np.array(e.GetMatrix()).reshape(3, 3), np.array(e.GetTranslation())
else:
    a, tr = np.array(values[:9]).reshape(3, 3), np.array(values[9:])
c = np.array(center); h = np.eye(4); h[:3, :3] = a; h[:3, 3] = tr + c - a @ c
print(json.dumps({"matrix": h.tolist(), "reg_s": reg_s}))
"""


def run_elastix(case: corpus.Case, folder: Path) -> dict[str, Any]:
    python = PEERS / "elastix" / "bin" / "python"
    fixed_path, moving_path = folder / "fixed.nii", folder / "moving.nii"
    cr.write(case.fixed, fixed_path, overwrite=True)  # a scratch folder, one pair after another
    cr.write(case.moving, moving_path, overwrite=True)
    script = folder / "elastix_runner.py"
    script.write_text(_ELASTIX)
    kind = case.options.get("preset", "rigid")
    done = subprocess.run([str(python), str(script), str(fixed_path), str(moving_path), kind], capture_output=True,
                          text=True, env=dict(os.environ, PYTHONWARNINGS="ignore"), check=False)
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    for path in (fixed_path, moving_path):
        path.unlink(missing_ok=True)
    if done.returncode or not lines:
        return {"case": case.name, "cls": case.cls, "refused": (done.stderr.strip().splitlines() or ["no output"])[-1]}
    out = json.loads(lines[-1])
    estimate = cr.Affine.from_homogeneous(np.array(out["matrix"]))
    return {"case": case.name, "cls": case.cls, "error": case.error(estimate), "time_s": out["reg_s"]}


# ----------------------------------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--classes", default="", help="run only classes whose name contains one of these (comma-separated)")
    parser.add_argument("--seeds", type=int, default=10, help="seeds per 3D / CT-MR class (default 10)")
    parser.add_argument("--photo-seeds", type=int, default=4, help="seeds per 2D class (default 4)")
    parser.add_argument("--quick", action="store_true", help="a few classes and seeds (what the tests run)")
    parser.add_argument("--with-elastix", action="store_true", help="run elastix's default maps on the 3D cases too")
    parser.add_argument("--json", type=Path, help="write every run here")
    parser.add_argument("--out", type=Path, help="write the markdown tables here too")
    args = parser.parse_args(argv)

    wanted = [w for w in args.classes.split(",") if w]
    table = corpus.classes(args.seeds, photos_seeds=args.photo_seeds, quick=args.quick)
    rows: list[dict[str, Any]] = []
    peer_rows: list[dict[str, Any]] = []
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="validate-") as tmp:
        for cls, build in table.items():
            if wanted and not any(w in cls for w in wanted):
                continue
            for case in build():
                row = corpus.run(case)
                rows.append(row)
                shown = f"{row['error']:.4g} {row['unit']} {row['verdict']}" if "error" in row else row["refused"][:80]
                print(f"{case.name}: {shown} ({row['time_s']:.2f} s)", file=sys.stderr, flush=True)
                if (args.with_elastix and case.fixed.ndim == 3 and case.broken is None
                        and case.options.get("preset") in ("rigid", "affine")):  # elastix's rigid/affine maps
                    peer = run_elastix(case, Path(tmp))
                    peer_rows.append(peer)
                    if "error" in peer:
                        print(f"    elastix: {peer['error']:.4g} mm ({peer['time_s']:.2f} s)", file=sys.stderr, flush=True)
    corpus_rows = [r for r in rows if not r.get("broken")]
    record = check_record(rows)
    text = [
        f"{len(rows)} registrations ({len(corpus_rows)} corpus, {len(rows) - len(corpus_rows)} broken) in "
        f"{time.perf_counter() - started:.0f} s; {os.cpu_count()} CPUs, coregister {cr.__version__}",
        "",
        class_table(rows),
        "",
        f"Quality check: false acceptance {record['false_accepted']}/{record['gross_answers']} "
        f"({record['false_acceptance_rate']:.1%}) of the answers more than 5x their tolerance off; "
        f"false rejection {record['false_rejected']}/{record['good_answers']} ({record['false_rejection_rate']:.1%}) "
        f"of the answers within tolerance; {record['refused']} runs refused.",
    ]
    if record["false_accepted_cases"]:
        text.append("False acceptances: " + "; ".join(record["false_accepted_cases"]))
    if record["false_rejected_cases"]:
        text.append("False rejections: " + "; ".join(record["false_rejected_cases"][:40]))
    if peer_rows:
        text += ["", "elastix (default maps) on the same 3D cases:", "", class_table(
            [{**p, "tolerance": next(r["tolerance"] for r in rows if r["case"] == p["case"]), "unit": "mm",
              "verdict": "passed"} if "error" in p else p for p in peer_rows])]
        worse = []
        for p in peer_rows:
            ours = next(r for r in rows if r["case"] == p["case"])
            if "error" in p and "error" in ours and ours["error"] > p["error"]:
                worse.append(f"{p['case']}: ours {ours['error']:.4f} vs elastix {p['error']:.4f}")
        text.append("")
        text.append(f"Cases where ours is less accurate than elastix: {len(worse)} of {len(peer_rows)}"
                    + (": " + "; ".join(worse) if worse else ""))
    output = "\n".join(text)
    print(output)
    if args.out:
        args.out.write_text(output + "\n")
    if args.json:
        args.json.write_text(json.dumps({"runs": rows, "elastix": peer_rows, "check": record}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
