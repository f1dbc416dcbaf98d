"""4D motion-correction benchmark: ``coregister.motion`` beside ANTsPy's ``motion_correction``, one run, one series.

The series (issue 14): MNI152 at 1 mm (``../shared/data/medical/antspy/mni.nii.gz``)
moved by a seeded head-motion trajectory (:func:`coregister.qc.synthetic.random_motion`:
up to 3 mm and 3 degrees per axis, a smoothed random walk with two sudden
jumps), blurred to and sampled once on a 64 x 64 x 36 grid of 3 x 3 x 4 mm
(:func:`coregister.qc.synthetic.motion_series`), 200 volumes, 1 % noise (of
the 99th percentile) and a 5 % signal drift; written as one float32 NIfTI.
Every method registers every volume to the middle volume.

Protocol (as ``bench_3d.py``): each method runs in its own process (the peer
in its own virtual environment, ``~/.cache/coregister-peers/ants/bin/python``);
reading the series and the correction are timed apart (``time.perf_counter``;
the process's CPU time beside it, its children's too), and the peak resident
memory of the process (``VmHWM``) and of its largest worker process are
reported. Methods:

* ``ours``: ``coregister.motion(series, reference=middle, workers=N)`` with
  the default configuration (the ECC engine, rigid, two levels, each volume
  starting from its neighbour's answer, each judged by the quality check),
  resampling included; ``--workers`` processes (default 2: the two chains);
  ``ours-1`` the same in one process;
* ``ants``: ANTsPy ``ants.motion_correction(image, fixed=middle volume,
  type_of_transform="Rigid")`` (resampling included, as it always does);
  ``ants-bold``: the same with ``"BOLDRigid"``, the function's default (two
  levels, 100 and 20 iterations).

Accuracy, per volume, against the truth ``M_k ∘ M_r⁻¹`` (reference points ->
volume points): the rotation error (the angle of ``R_estimate⁻¹ R_truth``,
degrees), the translation error at the reference's centre of gravity (mm),
and the largest error over the six fMRIPrep parameters
(:func:`coregister.medical.motion_parameters`, mm and degrees); median and
worst over the volumes.

Run from the repository root::

    .venv/bin/python benchmarks/bench_motion.py --out bench_motion.md

(``--volumes 60`` for a quicker run; ``--methods ours,ants``.) Not a test:
pytest never collects it.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import numpy as np

import coregister as cr
from coregister.medical import motion_parameters
from coregister.qc.synthetic import motion_series, random_motion

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("COREGISTER_TEST_DATA", ROOT.parent / "shared" / "data"))
PEERS = Path(os.environ.get("COREGISTER_PEERS", Path.home() / ".cache" / "coregister-peers"))

# Each runner: argv = series path, reference index, option; prints one JSON line with the per-volume
# reference -> volume maps (4x4 LPS), read and correction times, CPU times and peak memory.
_COMMON = textwrap.dedent(
    """
    import json, resource, sys, time
    import numpy as np
    series_path, reference, option = sys.argv[1], int(sys.argv[2]), sys.argv[3]

    def finish(matrices, read_s, run_s, cpu_s, **extra):
        with open("/proc/self/status") as status:
            rss_mb = next(int(line.split()[1]) for line in status if line.startswith("VmHWM")) / 1024.0
        children = resource.getrusage(resource.RUSAGE_CHILDREN)
        print(json.dumps({"matrices": np.asarray(matrices, float).tolist(), "read_s": read_s, "run_s": run_s,
                          "cpu_s": cpu_s, "children_cpu_s": children.ru_utime + children.ru_stime,
                          "rss_mb": rss_mb, "worker_rss_mb": children.ru_maxrss / 1024.0, **extra}))

    def homogeneous(matrix, translation, center):
        a = np.asarray(matrix, float).reshape(3, 3); c = np.asarray(center, float); t = np.asarray(translation, float)
        h = np.eye(4); h[:3, :3] = a; h[:3, 3] = t + c - a @ c
        return h
    """
)

RUNNERS = {
    "ours": textwrap.dedent(
        """
        import coregister as cr
        import coregister.medical, coregister.pipeline  # the library, as `import ants`

        if __name__ == "__main__":  # the workers are spawned: they import this script again
            workers = int(option)
            t = time.perf_counter(); series = cr.read(series_path); read_s = time.perf_counter() - t
            c = time.process_time(); t = time.perf_counter()
            result = cr.motion(series, reference=reference, workers=workers)
            run_s = time.perf_counter() - t; cpu_s = time.process_time() - c
            finish([tx.homogeneous for tx in result.transforms], read_s, run_s, cpu_s,
                   failed_volumes=len(result.failed), iterations=[sum(h.iterations for h in r.history) for r in result.results])
        """
    ),
    "ants": textwrap.dedent(
        """
        import ants, SimpleITK as sitk
        t = time.perf_counter(); image = ants.image_read(series_path); read_s = time.perf_counter() - t
        fixed = ants.slice_image(image, axis=3, idx=reference)
        c = time.process_time(); t = time.perf_counter()
        out = ants.motion_correction(image, fixed=fixed, type_of_transform=option, random_seed=1)
        run_s = time.perf_counter() - t; cpu_s = time.process_time() - c
        matrices = []
        for files in out["motion_parameters"]:
            tx = sitk.ReadTransform(files[0])
            tx = tx.Downcast() if hasattr(tx, "Downcast") else tx
            while isinstance(tx, sitk.CompositeTransform):
                tx = tx.GetNthTransform(0).Downcast()
            matrices.append(homogeneous(tx.GetMatrix(), tx.GetTranslation(), tx.GetCenter()))
        finish(matrices, read_s, run_s, cpu_s)
        """
    ),
}

# method -> (runner, interpreter, option)
METHODS = {
    "ours": ("ours", sys.executable, "2"),
    "ours-1": ("ours", sys.executable, "1"),
    "ants": ("ants", PEERS / "ants" / "bin" / "python", "Rigid"),
    "ants-bold": ("ants", PEERS / "ants" / "bin" / "python", "BOLDRigid"),
}
DEFAULT_METHODS = ("ours", "ours-1", "ants", "ants-bold")


def make_series(folder: Path, volumes: int, seed: int) -> tuple[Path, cr.SpatialImage, list[cr.Affine], int]:
    """Write the series; return its path, the reference volume, the true reference -> volume maps and its index."""
    mni = cr.read(DATA / "medical" / "antspy" / "mni.nii.gz")
    size, spacing = np.array([64, 64, 36]), np.array([3.0, 3.0, 4.0])
    direction = np.asarray(mni.direction)
    origin = mni.world_centre - direction @ ((size - 1) / 2 * spacing)
    grid = cr.SpatialImage(np.zeros(tuple(size[::-1]), np.float32), origin=tuple(origin), spacing=tuple(spacing),
                           direction=direction)
    poses = random_motion(volumes, seed, centre=grid.world_centre, max_shift_mm=3.0, max_angle_deg=3.0)
    series = motion_series(mni, grid, poses, seed=seed, noise=0.01, drift=0.05)
    path = folder / "series.nii.gz"
    cr.write(series, path)
    reference = volumes // 2
    back = np.linalg.inv(poses[reference].homogeneous)
    truth = [cr.Affine.from_homogeneous(p.homogeneous @ back) for p in poses]
    return path, series.channel(reference).replace(meta={}), truth, reference


def run_method(name: str, runner_dir: Path, series: Path, reference: int, timeout_s: float) -> dict:
    runner, python, option = METHODS[name]
    if not Path(python).exists():
        return {"failed": f"{python} not found (install the peers: ../shared/peers/install.sh)"}
    command = [str(python), str(runner_dir / f"run_{runner}.py"), str(series), str(reference), option]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout_s, check=False,
                              env=dict(os.environ, PYTHONWARNINGS="ignore"))
    except subprocess.TimeoutExpired:
        return {"failed": f"timed out after {timeout_s:.0f} s"}
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode != 0 or not lines:
        tail = (done.stderr.strip().splitlines() or ["no output"])[-1]
        return {"failed": f"exit {done.returncode}: {tail[:200]}"}
    return json.loads(lines[-1])


def errors(matrices: list[list[list[float]]], truth: list[cr.Affine], reference: cr.SpatialImage) -> dict[str, np.ndarray]:
    """Per-volume rotation error (deg), translation error at the centre of gravity (mm), worst parameter errors."""
    from scipy import ndimage

    index = np.asarray(ndimage.center_of_mass(np.asarray(reference.array, float)))[::-1]
    centre = np.append(reference.index_to_world([index])[0], 1.0)
    estimates = [cr.Affine.from_homogeneous(np.asarray(m)) for m in matrices]
    rotation, shift = [], []
    for estimate, true in zip(estimates, truth, strict=True):
        relative = estimate.matrix.T @ true.matrix
        rotation.append(np.rad2deg(np.arccos(np.clip((np.trace(relative) - 1) / 2, -1.0, 1.0))))
        shift.append(np.linalg.norm((estimate.homogeneous @ centre - true.homogeneous @ centre)[:3]))
    ours, theirs = motion_parameters(estimates, reference), motion_parameters(truth, reference)
    gap = np.abs(ours - theirs)
    return {"rotation_deg": np.array(rotation), "shift_mm": np.array(shift),
            "param_mm": gap[:, :3].max(axis=1), "param_deg": np.rad2deg(gap[:, 3:].max(axis=1))}


def report(rows: list[tuple[str, dict, dict | None]], volumes: int, loads: tuple[tuple[float, ...], tuple[float, ...]]) -> str:
    lines = [
        f"Series: 64 x 64 x 36 voxels of 3 x 3 x 4 mm, {volumes} volumes, reference volume {volumes // 2}; "
        f"{os.cpu_count()} CPUs; load average (1, 5, 15 min) {', '.join(f'{v:.1f}' for v in loads[0])} at the start, "
        f"{', '.join(f'{v:.1f}' for v in loads[1])} at the end.",
        "",
        "| method | time (s) | s / volume | CPU s (process + workers) | peak MB (process; largest worker) | "
        "rotation error, median / worst (deg) | translation error at the centre, median / worst (mm) | "
        "worst parameter error (mm; deg) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, run, err in rows:
        if err is None:
            lines.append(f"| {name} | failed: {run.get('failed')} | | | | | | |")
            continue
        worker = f"; {run['worker_rss_mb']:.0f}" if run.get("worker_rss_mb", 0) > 1 else ""
        lines.append(
            f"| {name} | {run['run_s']:.1f} | {run['run_s'] / volumes:.3f} | "
            f"{run['cpu_s']:.1f} + {run['children_cpu_s']:.1f} | {run['rss_mb']:.0f}{worker} | "
            f"{np.median(err['rotation_deg']):.4f} / {err['rotation_deg'].max():.4f} | "
            f"{np.median(err['shift_mm']):.4f} / {err['shift_mm'].max():.4f} | "
            f"{err['param_mm'].max():.4f}; {err['param_deg'].max():.4f} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--volumes", type=int, default=200)
    parser.add_argument("--seed", type=int, default=14)
    parser.add_argument("--methods", default=",".join(DEFAULT_METHODS))
    parser.add_argument("--timeout", type=float, default=3600.0, help="Seconds per method run.")
    parser.add_argument("--out", type=Path, default=None, help="Also write the table to this Markdown file.")
    args = parser.parse_args(argv)
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    unknown = sorted(set(methods) - set(METHODS))
    if unknown:
        parser.error(f"unknown methods {unknown}; choose from {sorted(METHODS)}")
    start_load = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="bench_motion_") as scratch:
        folder = Path(scratch)
        for runner, body in RUNNERS.items():
            (folder / f"run_{runner}.py").write_text(_COMMON + body)
        began = time.perf_counter()
        path, reference, truth, index = make_series(folder, args.volumes, args.seed)
        print(f"series written in {time.perf_counter() - began:.1f} s: {path.stat().st_size / 1e6:.1f} MB", file=sys.stderr)
        rows: list[tuple[str, dict, dict | None]] = []
        for name in methods:
            began = time.perf_counter()
            run = run_method(name, folder, path, index, args.timeout)
            err = None if "failed" in run else errors(run["matrices"], truth, reference)
            rows.append((name, run, err))
            outcome = f"failed: {run['failed']}" if err is None else f"{run['run_s']:.1f} s"
            print(f"{name}: {outcome} (wall {time.perf_counter() - began:.1f} s)", file=sys.stderr)
    table = report(rows, args.volumes, (start_load, os.getloadavg()))
    print(table)
    if args.out:
        args.out.write_text(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
