"""Memory figures (issue 15): what a header or a registration claims, what is allowed, and the measured peak.

For each oversized-header file of ``tests/test_memory_limits.py`` (built by
its ``oversized_files``) and for one 3D registration (the 1 mm MNI152
template of ``../shared/data/medical/antspy/mni.nii.gz`` against itself
shifted by (4, -3, 2) mm, preset ``rigid``, then the moving image resampled
onto the fixed grid as ``coregister register`` writes it), one fresh worker
process does the work and this script reads its peak resident memory with
``resource.getrusage(RUSAGE_CHILDREN).ru_maxrss`` (each case is measured from
a process of its own, so one case's peak never hides another's).

* claimed: what the header says the pixels need; for the registration, the
  estimate :func:`coregister.pipeline.memory.estimate_peak` makes before it
  starts (inputs plus working memory);
* allowed: :func:`coregister._memory.max_memory` in the worker
  (``--max-memory`` sets ``COREGISTER_MAX_MEMORY``; else the machine's memory
  or ``ulimit -v``);
* measured: the worker's peak RSS, and that peak above a baseline worker
  that imports the same libraries and reads one small PNG.

Run from the repository root (prints the table as markdown)::

    .venv/bin/python benchmarks/bench_memory.py [--max-memory 4G] [--json memory.json]

Not a test; pytest never collects it.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("COREGISTER_TEST_DATA", REPO.parent / "shared" / "data")).resolve()
SMALL = "medical/itk_brainweb_2d/BrainT1Slice.png"
MNI = "medical/antspy/mni.nii.gz"
SHIFT_MM = (4.0, -3.0, 2.0)

#: the worker: imports, one small read (as the test does), then the case; prints a JSON line
_WORKER = r"""
import json, sys, warnings
warnings.simplefilter("ignore")
import numpy as np, nibabel, rasterio, SimpleITK, cv2, pydicom
import coregister as cr
from coregister._memory import max_memory
from coregister.errors import CoregisterError

kind, path, small = sys.argv[1], sys.argv[2], sys.argv[3]
cr.read(small)
out = {"allowed": max_memory(), "error": None, "message": "", "claimed": None}
try:
    if kind == "read":
        cr.read(path)
    elif kind == "register":
        from coregister.pipeline.memory import estimate_peak

        fixed = cr.read(path)
        moving = fixed.replace(origin=tuple(np.asarray(fixed.origin) + np.asarray(json.loads(sys.argv[4]))))
        estimate = estimate_peak(fixed, moving)
        out["claimed"], out["allowed"] = estimate.peak, estimate.allowed
        result = cr.register(fixed, moving, preset="rigid")
        cr.apply(result.transform, moving, reference=fixed)
        out["message"] = f"{result.verdict.value}, translation {np.round(result.transform.translation, 2).tolist()} mm"
except CoregisterError as exc:
    out["error"], out["message"] = type(exc).__name__, str(exc)
except MemoryError as exc:
    out["error"], out["message"] = "MemoryError", str(exc)
print(json.dumps(out))
"""

#: the measurer: runs one worker and reports its peak RSS as the kernel counts it for a waited-for child
_MEASURER = r"""
import json, resource, subprocess, sys
run = subprocess.run([sys.executable, "-c", sys.argv[1], *sys.argv[2:]], capture_output=True, text=True)
if run.returncode != 0:
    sys.exit(run.stderr[-3000:])
worker = json.loads(run.stdout.strip().splitlines()[-1])
worker["peak_rss"] = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024  # Linux: kB
print(json.dumps(worker))
"""


def measure(kind: str, path: Path, *extra: str, env: dict[str, str]) -> dict[str, Any]:
    """One case in a worker of its own; its figures and peak RSS."""
    run = subprocess.run([sys.executable, "-c", _MEASURER, _WORKER, kind, str(path), str(DATA / SMALL), *extra],
                         capture_output=True, text=True, env=env, timeout=1800)
    if run.returncode != 0:
        raise SystemExit(f"{kind} {path}: {run.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(run.stdout.strip().splitlines()[-1])
    return result


def _mb(size: float | None) -> str:
    if size is None:
        return "-"
    return f"{size / 1e9:.3g} GB" if size >= 1e9 else f"{size / 1e6:.0f} MB"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--max-memory", help="COREGISTER_MAX_MEMORY for the workers (default: unset)")
    parser.add_argument("--json", type=Path, help="write the figures here too")
    args = parser.parse_args(argv)
    sys.path.insert(0, str(REPO / "tests"))
    from test_memory_limits import oversized_files

    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO / "src"), os.environ.get("PYTHONPATH", "")]))
    env.pop("COREGISTER_MAX_MEMORY", None)
    if args.max_memory:
        env["COREGISTER_MAX_MEMORY"] = args.max_memory
    rows = []
    baseline = measure("none", DATA / SMALL, env=env)["peak_rss"]
    with tempfile.TemporaryDirectory() as scratch:
        for name, (path, claimed) in oversized_files(Path(scratch), lambda relative: DATA / relative).items():
            figures = measure("read", path, env=env)
            rows.append({"case": f"read: {name}", **figures, "claimed": claimed})
    figures = measure("register", DATA / MNI, json.dumps(SHIFT_MM), env=env)
    rows.append({"case": "register: MNI152 1 mm (182 x 218 x 182) vs itself shifted, rigid", **figures})

    print(f"baseline (imports and one small read): {_mb(baseline)} peak RSS\n")
    print("| case | claimed | allowed | measured peak RSS | above baseline | outcome |")
    print("|---|---:|---:|---:|---:|---|")
    for row in rows:
        outcome = f"{row['error']}: {row['message'][:110]}" if row["error"] else row["message"]
        outcome = outcome.replace("|", "\\|").replace("\n", " ")
        print(f"| {row['case']} | {_mb(row['claimed'])} | {_mb(row['allowed'])} | {_mb(row['peak_rss'])} | "
              f"{_mb(max(0, row['peak_rss'] - baseline))} | {outcome} |")
    if args.json:
        args.json.write_text(json.dumps({"baseline_rss": baseline, "rows": rows}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
