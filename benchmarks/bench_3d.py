"""3D registration benchmark: coregister's presets beside elastix, ANTsPy and a SimpleITK script, one run.

Cases: MNI152 at 1 mm (``../shared/data/medical/antspy/mni.nii.gz``) is the
fixed image; each moving image is that template warped by a seeded rigid
(up to 10 degrees and 10 mm per axis) or affine (plus scales 0.9-1.1 and
shears up to 0.05) transform about its centre, then degraded by
:func:`coregister.qc.synthetic.degrade`: a non-monotonic intensity remap,
a smooth multiplicative bias field and Gaussian noise (see ``--remap``,
``--bias``, ``--noise``), so that a monomodal metric or a run that stops at a
coarse level does not pass. The same cases (``--cases`` seeds per kind) go
to every method.

Protocol (issue 3): each method runs in **its own process** (the peers in
their own virtual environments, ``~/.cache/coregister-peers/*/bin/python``,
installed by ``../shared/peers/install.sh``); inside it, reading the images
and the registration call are timed apart (``time.perf_counter``; process
CPU time beside it), and the process's peak resident memory
(``VmHWM``) is reported. Methods are interleaved case by case so that a
change of load on the shared machine hits all of them. Accuracy: mean
displacement (mm) between the recovered and the true fixed -> moving map
over the head voxels of the fixed image (above 5 % of the 99th percentile).
Per method and kind: medians over the cases. A time ratio "peer / ours"
counts only on the cases where our error is at or below the peer's.

Methods:

* ``ours``: ``coregister.register(fixed, moving, preset=KIND)`` (the whole
  call: engine, before/after metrics, quality check; by default the optimiser
  runs on one thread, so that runs are bit-identical); ``ours-threads``: the
  same with ``threads=os.cpu_count()`` everywhere (faster, no longer
  bit-identical); ``ours-precise``: with ``precise=True``;
* ``elastix``: itk-elastix ``elastix_registration_method`` with
  ``GetDefaultParameterMap("rigid"|"affine")``, logging off (its call also
  resamples the result image, as it always does);
* ``ants``: ANTsPy ``ants.registration(type_of_transform="Rigid"|"Affine")``
  and ``ants-fast`` (``"AffineFast"``, affine kind only), ``random_seed=1``;
* ``sitk``: a SimpleITK script with the SimpleITK notebooks' settings
  (Mattes MI 50 bins, 1 % random sampling, linear interpolation,
  ``CenteredTransformInitializer(GEOMETRY)``, shrink 4-2-1 with sigmas 2-1-0
  mm, scales from physical shift) and regular-step descent
  (learning rate 1, min step 1e-4, 300 iterations, relaxation 0.5);
  ``sitk-gd``: the notebooks' plain gradient descent (learning rate 1, 100
  iterations, convergence 1e-6 over 10);
* ``dipy`` (``--with-dipy``, slow: minutes per case): ``dipy.align`` affine
  pipeline (centre of mass, translation, rigid[, affine]) with its defaults.

Run from the repository root::

    .venv/bin/python benchmarks/bench_3d.py --cases 3 --out bench_3d.md

Not a test: pytest never collects it.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import numpy as np

import coregister as cr
from coregister.qc import synthetic

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("COREGISTER_TEST_DATA", ROOT.parent / "shared" / "data"))
PEERS = Path(os.environ.get("COREGISTER_PEERS", Path.home() / ".cache" / "coregister-peers"))

# ------------------------------------------------------------------------------------------------ runners
# Each runner is a small script run by the method's own interpreter: argv = fixed, moving, kind, seed;
# it prints one JSON line: the fixed -> moving map as a 4x4 LPS matrix, read and registration times,
# CPU time and peak RSS of its process.
_COMMON = textwrap.dedent(
    """
    import json, sys, time
    import numpy as np
    fixed_path, moving_path, kind, seed = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])

    def finish(matrix, read_s, reg_s, cpu_s, **extra):
        # VmHWM: this process's own peak (ru_maxrss would carry the parent's peak across exec)
        with open("/proc/self/status") as status:
            rss_mb = next(int(line.split()[1]) for line in status if line.startswith("VmHWM")) / 1024.0
        print(json.dumps({"matrix": np.asarray(matrix, float).tolist(), "read_s": read_s, "reg_s": reg_s,
                          "cpu_s": cpu_s, "rss_mb": rss_mb, **extra}))

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
        import coregister.pipeline, coregister.engines.sitk, coregister.measures  # the library, as `import ants`
        import os
        threads = os.cpu_count() if kind.endswith("-threads") else None  # None: the optimiser on one thread
        kind = kind.replace("-threads", "")
        precise = kind.endswith("-precise"); preset = kind.replace("-precise", "")
        t = time.perf_counter(); fixed = cr.read(fixed_path); moving = cr.read(moving_path); read_s = time.perf_counter() - t
        c = time.process_time(); t = time.perf_counter()
        result = cr.register(fixed, moving, preset=preset, precise=precise, seed=seed, threads=threads)
        reg_s = time.perf_counter() - t; cpu_s = time.process_time() - c
        tx = result.transform
        finish(tx.homogeneous, read_s, reg_s, cpu_s, engine_s=result.time_s, passed=result.passed,
               iterations=[h.iterations for h in result.history])
        """
    ),
    "elastix": textwrap.dedent(
        """
        import itk
        t = time.perf_counter(); fixed = itk.imread(fixed_path, itk.F); moving = itk.imread(moving_path, itk.F)
        read_s = time.perf_counter() - t
        params = itk.ParameterObject.New()
        params.AddParameterMap(params.GetDefaultParameterMap(kind))
        c = time.process_time(); t = time.perf_counter()
        _, result = itk.elastix_registration_method(fixed, moving, parameter_object=params, log_to_console=False)
        reg_s = time.perf_counter() - t; cpu_s = time.process_time() - c
        p = result.GetParameterMap(0)
        values = [float(v) for v in p["TransformParameters"]]; center = [float(v) for v in p["CenterOfRotationPoint"]]
        if kind == "rigid":
            import SimpleITK as sitk
            e = sitk.Euler3DTransform(); e.SetCenter(center)
            e.SetComputeZYX("ComputeZYX" in p and p["ComputeZYX"][0] == "true"); e.SetParameters(values)
            matrix = homogeneous(e.GetMatrix(), e.GetTranslation(), center)
        else:
            matrix = homogeneous(values[:9], values[9:], center)
        finish(matrix, read_s, reg_s, cpu_s)
        """
    ),
    "ants": textwrap.dedent(
        """
        import ants, SimpleITK as sitk
        t = time.perf_counter(); fixed = ants.image_read(fixed_path); moving = ants.image_read(moving_path)
        read_s = time.perf_counter() - t
        kinds = {"rigid": "Rigid", "affine": "Affine", "affine-fast": "AffineFast"}
        c = time.process_time(); t = time.perf_counter()
        out = ants.registration(fixed, moving, type_of_transform=kinds[kind], random_seed=seed)
        reg_s = time.perf_counter() - t; cpu_s = time.process_time() - c
        tx = sitk.ReadTransform(out["fwdtransforms"][0])
        tx = tx.Downcast() if hasattr(tx, "Downcast") else tx
        while isinstance(tx, sitk.CompositeTransform):
            tx = tx.GetNthTransform(0).Downcast()
        matrix = homogeneous(tx.GetMatrix(), tx.GetTranslation(), tx.GetCenter())
        finish(matrix, read_s, reg_s, cpu_s)
        """
    ),
    "sitk": textwrap.dedent(
        """
        import SimpleITK as sitk
        gd = kind.endswith("-gd"); model = kind.replace("-gd", "")
        t = time.perf_counter()
        fixed = sitk.ReadImage(fixed_path, sitk.sitkFloat32); moving = sitk.ReadImage(moving_path, sitk.sitkFloat32)
        read_s = time.perf_counter() - t
        c = time.process_time(); t = time.perf_counter()
        initial = sitk.CenteredTransformInitializer(
            fixed, moving, sitk.Euler3DTransform() if model == "rigid" else sitk.AffineTransform(3),
            sitk.CenteredTransformInitializerFilter.GEOMETRY)
        method = sitk.ImageRegistrationMethod()
        method.SetMetricAsMattesMutualInformation(numberOfHistogramBins=50)
        method.SetMetricSamplingStrategy(method.RANDOM)
        method.SetMetricSamplingPercentage(0.01, seed)
        method.SetInterpolator(sitk.sitkLinear)
        if gd:
            method.SetOptimizerAsGradientDescent(learningRate=1.0, numberOfIterations=100,
                                                 convergenceMinimumValue=1e-6, convergenceWindowSize=10)
        else:
            method.SetOptimizerAsRegularStepGradientDescent(learningRate=1.0, minStep=1e-4, numberOfIterations=300,
                                                            relaxationFactor=0.5)
        method.SetOptimizerScalesFromPhysicalShift()
        method.SetShrinkFactorsPerLevel([4, 2, 1])
        method.SetSmoothingSigmasPerLevel([2, 1, 0])
        method.SmoothingSigmasAreSpecifiedInPhysicalUnitsOn()
        method.SetInitialTransform(initial, inPlace=False)
        tx = method.Execute(fixed, moving)
        reg_s = time.perf_counter() - t; cpu_s = time.process_time() - c
        while isinstance(tx, sitk.CompositeTransform):
            tx = tx.GetNthTransform(0)
        tx = tx.Downcast()
        finish(homogeneous(tx.GetMatrix(), tx.GetTranslation(), tx.GetCenter()), read_s, reg_s, cpu_s)
        """
    ),
    "dipy": textwrap.dedent(
        """
        import nibabel as nib
        from dipy.align import affine_registration
        t = time.perf_counter(); f = nib.load(fixed_path); m = nib.load(moving_path)
        fa, ma = np.asarray(f.dataobj, np.float32), np.asarray(m.dataobj, np.float32); read_s = time.perf_counter() - t
        pipeline = ["center_of_mass", "translation", "rigid"] + (["affine"] if kind == "affine" else [])
        c = time.process_time(); t = time.perf_counter()
        _, ras = affine_registration(ma, fa, moving_affine=m.affine, static_affine=f.affine, pipeline=pipeline)
        reg_s = time.perf_counter() - t; cpu_s = time.process_time() - c
        flip = np.diag([-1.0, -1.0, 1.0, 1.0])  # dipy maps static (fixed) RAS points to moving RAS points
        finish(flip @ ras @ flip, read_s, reg_s, cpu_s)
        """
    ),
}

# method -> (runner, interpreter, kind argument per case kind)
METHODS = {
    "ours": ("ours", sys.executable, {"rigid": "rigid", "affine": "affine"}),
    "ours-precise": ("ours", sys.executable, {"rigid": "rigid-precise", "affine": "affine-precise"}),
    # threads=all cores everywhere: faster, no longer bit-identical run to run (the default optimises on one thread)
    "ours-threads": ("ours", sys.executable, {"rigid": "rigid-threads", "affine": "affine-threads"}),
    "elastix": ("elastix", PEERS / "elastix" / "bin" / "python", {"rigid": "rigid", "affine": "affine"}),
    "ants": ("ants", PEERS / "ants" / "bin" / "python", {"rigid": "rigid", "affine": "affine"}),
    "ants-fast": ("ants", PEERS / "ants" / "bin" / "python", {"affine": "affine-fast"}),
    "sitk": ("sitk", PEERS / "elastix" / "bin" / "python", {"rigid": "rigid", "affine": "affine"}),
    "sitk-gd": ("sitk", PEERS / "elastix" / "bin" / "python", {"rigid": "rigid-gd", "affine": "affine-gd"}),
    "dipy": ("dipy", PEERS / "dipy" / "bin" / "python", {"rigid": "rigid", "affine": "affine"}),
}
DEFAULT_METHODS = ("ours", "ours-threads", "ours-precise", "elastix", "ants", "ants-fast", "sitk", "sitk-gd")


def make_cases(folder: Path, kinds: list[str], seeds: list[int], *, noise: float, bias: float, remap: str | None):
    """Write the fixed image and one moving image per (kind, seed); return the cases with their truths."""
    fixed = cr.read(DATA / "medical" / "antspy" / "mni.nii.gz")
    fixed_path = folder / "fixed.nii"
    cr.write(fixed, fixed_path)
    cases = []
    for kind in kinds:
        for seed in seeds:
            make = synthetic.random_rigid if kind == "rigid" else synthetic.random_affine
            truth = make(fixed, seed)
            moving = synthetic.degrade(synthetic.warp(fixed, truth), seed, noise=noise, bias=bias, remap=remap)
            path = folder / f"moving_{kind}_{seed}.nii"
            cr.write(moving, path)
            cases.append({"kind": kind, "seed": seed, "moving": path, "truth": truth})
    return fixed, fixed_path, cases


def make_corpus_cases(folder: Path, classes: list[str], seeds: list[int]):
    """The 3D classes of the validation corpus (``benchmarks/corpus.py``), each case with its own fixed image."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import corpus

    cases = []
    for name in classes:
        kind, volume = name.removeprefix("3d-").split("/")
        for seed in seeds:
            case = corpus.case_3d(kind, volume, seed)
            stem = f"{kind}_{volume}_{seed}"
            fixed_path, moving_path = folder / f"fixed_{volume}.nii", folder / f"moving_{stem}.nii"
            if not fixed_path.exists():
                cr.write(case.fixed, fixed_path)
            cr.write(case.moving, moving_path)
            cases.append({"kind": case.options["preset"], "cls": name, "seed": seed, "fixed": fixed_path,
                          "moving": moving_path, "truth": case.truth, "points": case.points,
                          "tolerance": case.tolerance})
    return cases


def run_method(name: str, runner_dir: Path, fixed_path: Path, case: dict, timeout_s: float) -> dict | None:
    runner, python, kinds = METHODS[name]
    if case["kind"] not in kinds:
        return None
    script = runner_dir / f"run_{runner}.py"
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    fixed_path = case.get("fixed", fixed_path)
    command = [str(python), str(script), str(fixed_path), str(case["moving"]), kinds[case["kind"]], str(case["seed"])]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout_s, env=env, check=False)
    except subprocess.TimeoutExpired:
        return {"failed": f"timed out after {timeout_s:.0f} s"}
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode != 0 or not lines:
        tail = (done.stderr.strip().splitlines() or ["no output"])[-1]
        return {"failed": f"exit {done.returncode}: {tail[:200]}"}
    return json.loads(lines[-1])


def _median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def report(results: list[dict], methods: list[str], kinds: list[str]) -> str:
    lines = [
        "| method | kind | cases | median reg s | median CPU s | median read s | median error mm | worst error mm "
        "| median peak RSS MB |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for kind in kinds:
        for name in methods:
            rows = [r for r in results if r["method"] == name and r["kind"] == kind and "error_mm" in r]
            failed = [r for r in results if r["method"] == name and r["kind"] == kind and "failed" in r]
            if not rows and not failed:
                continue
            errors = [r["error_mm"] for r in rows]
            lines.append(
                f"| {name} | {kind} | {len(rows)}{f' ({len(failed)} failed)' if failed else ''} "
                f"| {_median([r['reg_s'] for r in rows]):.2f} | {_median([r['cpu_s'] for r in rows]):.2f} "
                f"| {_median([r['read_s'] for r in rows]):.2f} | {_median(errors):.4f} | {max(errors, default=float('nan')):.4f} "
                f"| {_median([r['rss_mb'] for r in rows]):.0f} |"
            )
    lines += ["", "Time ratio peer / ours, per case where our error is at or below the peer's (else: ours worse):", ""]
    lines += ["| ours | peer | kind | ratios (median) | cases where ours is less accurate |", "|---|---|---|---|---|"]
    for ours in [m for m in methods if m.startswith("ours")]:
        for peer in [m for m in methods if not m.startswith("ours")]:
            for kind in kinds:
                ratios, worse = [], []
                for seed in sorted({r["seed"] for r in results}):
                    a = next((r for r in results if (r["method"], r["kind"], r["seed"]) == (ours, kind, seed)), None)
                    b = next((r for r in results if (r["method"], r["kind"], r["seed"]) == (peer, kind, seed)), None)
                    if not a or not b or "error_mm" not in a or "error_mm" not in b:
                        continue
                    if a["error_mm"] <= b["error_mm"]:
                        ratios.append(b["reg_s"] / a["reg_s"])
                    else:
                        worse.append(f"seed {seed}: {a['error_mm']:.4f} vs {b['error_mm']:.4f}")
                if ratios or worse:
                    shown = ", ".join(f"{v:.1f}" for v in ratios)
                    lines.append(f"| {ours} | {peer} | {kind} | {shown} ({_median(ratios):.1f}) | {'; '.join(worse) or '-'} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=3, help="seeds per kind (default 3)")
    parser.add_argument("--first-seed", type=int, default=1)
    parser.add_argument("--kinds", default="rigid,affine")
    parser.add_argument("--methods", default=",".join(DEFAULT_METHODS), help=f"any of {', '.join(METHODS)}")
    parser.add_argument("--with-dipy", action="store_true", help="add dipy (minutes per case)")
    parser.add_argument("--noise", type=float, default=0.01, help="noise sigma, fraction of the 99.5th percentile")
    parser.add_argument("--bias", type=float, default=0.02, help="bias-field coefficient sigma")
    parser.add_argument("--remap", default="t2", help="'t2' or 'none'")
    parser.add_argument("--corpus", help="3D classes of the validation corpus instead of the MNI cases, e.g. "
                        "3d-aniso/vhp-mr,3d-multi/mni, or 'all' (odd seeds rigid, even affine; see corpus.py)")
    parser.add_argument("--timeout", type=float, default=900.0, help="seconds per registration")
    parser.add_argument("--out", type=Path, help="write the markdown table here too")
    parser.add_argument("--json", type=Path, help="write every measurement here")
    args = parser.parse_args(argv)

    kinds = args.kinds.split(",")
    methods = args.methods.split(",") + (["dipy"] if args.with_dipy else [])
    missing = [m for m in methods if not Path(METHODS[m][1]).exists()]
    if missing:
        print(f"skipping {missing}: no interpreter (run ../shared/peers/install.sh)", file=sys.stderr)
        methods = [m for m in methods if m not in missing]
    seeds = list(range(args.first_seed, args.first_seed + args.cases))
    results: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="bench3d-") as tmp:
        folder = Path(tmp)
        for runner, body in RUNNERS.items():
            (folder / f"run_{runner}.py").write_text(_COMMON + body)
        remap = None if args.remap == "none" else args.remap
        if args.corpus:
            names = [f"3d-{k}/{v}" for k in ("mono", "multi", "partial", "aniso") for v in
                     ("mni", "colin27", "kmeans-t1", "vhp-mr")] if args.corpus == "all" else args.corpus.split(",")
            cases, fixed_path, head = make_corpus_cases(folder, names, seeds), None, None
        else:
            fixed, fixed_path, cases = make_cases(folder, kinds, seeds, noise=args.noise, bias=args.bias, remap=remap)
            head = synthetic.head_points(fixed, step=4)
        for case in cases:
            for name in methods:
                started = time.perf_counter()
                out = run_method(name, folder, fixed_path, case, args.timeout)
                if out is None:
                    continue
                row = {"method": name, "kind": case.get("cls", case["kind"]), "seed": case["seed"], **out}
                if "matrix" in out:
                    estimate = cr.Affine.from_homogeneous(np.array(out["matrix"]))
                    row["error_mm"] = synthetic.mean_displacement_error(
                        estimate, case["truth"], case.get("points", head))
                    row.pop("matrix")
                results.append(row)
                status = f"error {row['error_mm']:.4f} mm, reg {row['reg_s']:.2f} s" if "error_mm" in row else row["failed"]
                print(f"{row['kind']} seed {case['seed']} {name}: {status} "
                      f"(process {time.perf_counter() - started:.1f} s)", file=sys.stderr, flush=True)
    if args.corpus:
        kinds = list(dict.fromkeys(c["cls"] for c in cases))
    header = (
        (f"corpus {args.corpus}, {len(seeds)} seeds per class (odd rigid, even affine); " if args.corpus else
         f"MNI152 1 mm, {len(seeds)} cases per kind, remap={args.remap}, bias={args.bias}, noise={args.noise}; ")
        + f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} at the end"
    )
    table = header + "\n\n" + report(results, methods, kinds)
    print(table)
    if args.out:
        args.out.write_text(table + "\n")
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
