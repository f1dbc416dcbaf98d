"""Deformable registration benchmark: ``syn`` and ``bspline`` beside ANTsPy SyN and elastix, one run (issue 13).

Cases (``--cases``, comma-separated):

* ``known``: MNI152 (``../shared/data/medical/antspy/mni.nii.gz``) under a
  known smooth deformation ``G`` (a cubic B-spline with random coefficients
  on a 40 mm mesh, up to 6 mm, seed 13: the test suite's case), both images
  bin-averaged to 2 mm. The true fixed -> moving map is ``G⁻¹`` (inverted
  point by point on ``G`` sampled at 1 mm). Scored:
  mean displacement error inside the head (mm, at every second 2 mm voxel),
  mean Dice over the 116 labels of ``mnia.nii.gz`` (the atlas warped by
  ``G`` at 1 mm, carried back through each answer onto the 1 mm atlas,
  nearest neighbour), and the Jacobian determinant of the answer at every
  voxel of the fixed (2 mm) grid: minimum, folding fraction (share <= 0).
  ``--warps SEED:MM,...`` adds the same case under other deformations
  (``known-s5-9mm``: seed 5, up to 9 mm), so that a schedule is judged on
  more than the one warp it was tuned on.
* ``colin``: Colin27 (``ch2.nii.gz``) to MNI152 at 1 mm. Scored: head-mask
  Dice (each image above 10 % of its 99th percentile, holes filled, carried
  by nearest neighbour) and the Jacobian on the full 1 mm grid.
* ``multi``: the ``known`` case's moving image with a T2-like remap (dark
  and bright swapped, with a ripple), a smooth bias field and 1 % noise
  (``synthetic.degrade``, seed 13): deformable registration across
  contrasts. Ours ``syn`` on Mattes (``metric="mattes"``: the demons
  compare intensities) and ``bspline``; ANTsPy's SyN and SyNQuick and
  elastix use mutual information by default. Scored as ``known``.
* ``masks``: issue 13's point 6, binary masks (an organ segmentation):
  the brain mask of ``mnia.nii.gz`` (labels > 0) at 2 mm and the same mask
  warped by ``G`` (nearest neighbour). Scored: mean displacement error over
  the mask's voxels, mask Dice. Ours with ``binary_inputs`` as-is, signed
  distance and smoothing, beside a plain SimpleITK affine + B-spline script.
* ``ants-check`` (point 3): ours ``syn`` on the ``known`` case writes its
  outputs as ``coregister register`` does (``warp.nii.gz`` + ``affine.mat``,
  and ``transform.h5``); ANTsPy's ``apply_transforms`` resamples the moving
  image with them and the difference to ``coregister.apply`` is reported,
  beside a control that leaves the warp out (``affine.mat`` alone), which
  must differ: both resamplers are ITK's, so agreement to the last bit is
  possible, and the control shows that the comparison can see a difference.

Methods, each registration in **its own process** (peers in their own
virtual environments, ``~/.cache/coregister-peers/*/bin/python``, from
``../shared/peers/install.sh``), the registration call timed alone
(``time.perf_counter``, its library imported before the clock starts) and
the process's peak resident memory (``VmHWM``) reported:

* ``ours-syn``, ``ours-bspline``: ``coregister.register(fixed, moving, preset=...)``
  (the whole call: engine, metrics, the quality check with its full-grid
  Jacobian); the answer saved as ``.h5``;
* ``ants-syn``: ANTsPy ``ants.registration(type_of_transform="SyN")``;
  ``ants-quick``: ``type_of_transform="antsRegistrationSyNQuick[s]"``; the
  answer read from ``fwdtransforms`` (``1Warp.nii.gz`` applied first, then
  ``0GenericAffine.mat``);
* ``elastix``: itk-elastix ``elastix_registration_method`` with the
  default ``affine`` and ``bspline`` parameter maps; the answer written by
  ``transformix_deformation_field`` (one field on the fixed grid);
* ``sitk-script`` (masks only): a plain SimpleITK script, the SimpleITK
  notebooks' settings: centred initialisation, affine (Mattes 50 bins, 1 %
  random sampling, regular-step descent, shrink 4-2-1 / sigmas 2-1-0 mm,
  scales from physical shift), then a 40 mm B-spline (L-BFGS-B, 100
  iterations, shrink 2-1).

Every answer is scored here, in this process, with the same code.

Run from the repository root::

    .venv/bin/python benchmarks/bench_deformable.py --json bench_deformable.json --out bench_deformable.md

Not a test: pytest never collects it.
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
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

import coregister as cr
from coregister.io.transforms import read_transform
from coregister.measures import jacobian_determinant
from coregister.qc import synthetic
from coregister.transforms import Composite, sampled_field

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("COREGISTER_TEST_DATA", ROOT.parent / "shared" / "data"))
PEERS = Path(os.environ.get("COREGISTER_PEERS", Path.home() / ".cache" / "coregister-peers"))
ANTSPY = DATA / "medical" / "antspy"
LABELS = 116

# ------------------------------------------------------------------------------------------------ runners
# argv = fixed, moving, variant, outdir; each prints one JSON line: reg_s, cpu_s, read_s, rss_mb, files (the
# answer, in the order the harness reads it)
_COMMON = textwrap.dedent(
    """
    import json, sys, time, os
    fixed_path, moving_path, variant, outdir = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4]

    def finish(read_s, reg_s, cpu_s, files, **extra):
        with open("/proc/self/status") as status:
            rss_mb = next(int(line.split()[1]) for line in status if line.startswith("VmHWM")) / 1024.0
        print(json.dumps({"read_s": read_s, "reg_s": reg_s, "cpu_s": cpu_s, "rss_mb": rss_mb, "files": files, **extra}))
    """
)

RUNNERS = {
    "ours": textwrap.dedent(
        """
        import coregister as cr
        import coregister.pipeline, coregister.engines.sitk, coregister.measures  # the library, as `import ants`
        from coregister import presets
        variant, _, metric = variant.partition("@")
        preset, _, binary = variant.partition(":")
        config = presets.get(preset)
        if metric:
            config = presets.with_metric(config, metric)
        if binary:
            config = config.replace(binary_inputs=binary)
        t = time.perf_counter(); fixed = cr.read(fixed_path); moving = cr.read(moving_path); read_s = time.perf_counter() - t
        c = time.process_time(); t = time.perf_counter()
        result = cr.register(fixed, moving, config=config)
        reg_s = time.perf_counter() - t; cpu_s = time.process_time() - c
        path = result.transform.save(os.path.join(outdir, "transform.h5"))
        finish(read_s, reg_s, cpu_s, [str(path)], passed=result.passed, warnings=list(result.warnings))
        """
    ),
    "ants": textwrap.dedent(
        """
        import ants, shutil
        t = time.perf_counter(); fixed = ants.image_read(fixed_path); moving = ants.image_read(moving_path)
        read_s = time.perf_counter() - t
        c = time.process_time(); t = time.perf_counter()
        out = ants.registration(fixed, moving, type_of_transform=variant, random_seed=1)
        reg_s = time.perf_counter() - t; cpu_s = time.process_time() - c
        files = []
        for i, f in enumerate(out["fwdtransforms"]):  # [1Warp.nii.gz, 0GenericAffine.mat]: the first acts first
            name = os.path.join(outdir, f"{i}_{os.path.basename(f)}")
            shutil.copy(f, name); files.append(name)
        finish(read_s, reg_s, cpu_s, files)
        """
    ),
    "elastix": textwrap.dedent(
        """
        import itk
        t = time.perf_counter(); fixed = itk.imread(fixed_path, itk.F); moving = itk.imread(moving_path, itk.F)
        read_s = time.perf_counter() - t
        params = itk.ParameterObject.New()
        params.AddParameterMap(params.GetDefaultParameterMap("affine"))
        params.AddParameterMap(params.GetDefaultParameterMap("bspline"))
        c = time.process_time(); t = time.perf_counter()
        _, result = itk.elastix_registration_method(fixed, moving, parameter_object=params, log_to_console=False)
        reg_s = time.perf_counter() - t; cpu_s = time.process_time() - c
        field = itk.transformix_deformation_field(moving, result)
        path = os.path.join(outdir, "field.nii.gz")
        itk.imwrite(field, path)
        finish(read_s, reg_s, cpu_s, [path])
        """
    ),
    "sitk": textwrap.dedent(
        """
        import SimpleITK as sitk
        t = time.perf_counter()
        fixed = sitk.ReadImage(fixed_path, sitk.sitkFloat32); moving = sitk.ReadImage(moving_path, sitk.sitkFloat32)
        read_s = time.perf_counter() - t
        c = time.process_time(); t = time.perf_counter()
        init = sitk.CenteredTransformInitializer(fixed, moving, sitk.AffineTransform(3),
                                                 sitk.CenteredTransformInitializerFilter.GEOMETRY)
        r = sitk.ImageRegistrationMethod()
        r.SetMetricAsMattesMutualInformation(50); r.SetMetricSamplingStrategy(r.RANDOM); r.SetMetricSamplingPercentage(0.01, 1)
        r.SetInterpolator(sitk.sitkLinear)
        r.SetOptimizerAsRegularStepGradientDescent(1.0, 1e-4, 300, relaxationFactor=0.5)
        r.SetOptimizerScalesFromPhysicalShift()
        r.SetShrinkFactorsPerLevel([4, 2, 1]); r.SetSmoothingSigmasPerLevel([2, 1, 0]); r.SmoothingSigmasAreSpecifiedInPhysicalUnitsOn()
        r.SetInitialTransform(init, inPlace=True)
        r.Execute(fixed, moving)
        mesh = [max(1, int(round(n * s / 40.0))) for n, s in zip(fixed.GetSize(), fixed.GetSpacing())]
        spline = sitk.BSplineTransformInitializer(fixed, mesh, 3)
        b = sitk.ImageRegistrationMethod()
        b.SetMetricAsMattesMutualInformation(50); b.SetMetricSamplingStrategy(b.RANDOM); b.SetMetricSamplingPercentage(0.05, 1)
        b.SetInterpolator(sitk.sitkLinear)
        b.SetOptimizerAsLBFGSB(gradientConvergenceTolerance=1e-5, numberOfIterations=100)
        b.SetShrinkFactorsPerLevel([2, 1]); b.SetSmoothingSigmasPerLevel([1, 0]); b.SmoothingSigmasAreSpecifiedInPhysicalUnitsOn()
        b.SetMovingInitialTransform(init)
        b.SetInitialTransform(spline, inPlace=True)
        b.Execute(fixed, moving)
        reg_s = time.perf_counter() - t; cpu_s = time.process_time() - c
        path = os.path.join(outdir, "transform.h5")
        sitk.WriteTransform(sitk.CompositeTransform([init, spline]), path)
        finish(read_s, reg_s, cpu_s, [path])
        """
    ),
}

#: method -> (runner, interpreter, variant per case)
METHODS = {
    "ours-syn": ("ours", Path(sys.executable), {"known": "syn", "colin": "syn", "multi": "syn@mattes"}),
    "ours-bspline": ("ours", Path(sys.executable), {"known": "bspline", "colin": "bspline", "multi": "bspline"}),
    "ants-syn": ("ants", PEERS / "ants" / "bin" / "python", {"known": "SyN", "colin": "SyN", "multi": "SyN"}),
    "ants-quick": ("ants", PEERS / "ants" / "bin" / "python",
                   {"known": "antsRegistrationSyNQuick[s]", "colin": "antsRegistrationSyNQuick[s]",
                    "multi": "antsRegistrationSyNQuick[s]"}),
    "elastix": ("elastix", PEERS / "elastix" / "bin" / "python",
                {"known": "default", "colin": "default", "multi": "default"}),
    "sitk-script": ("sitk", PEERS / "elastix" / "bin" / "python", {"masks": "affine+bspline"}),
    **{f"ours-{p}-{b}": ("ours", Path(sys.executable), {"masks": f"{p}:{b}"})
       for p in ("bspline", "syn") for b in ("as-is", "distance", "smooth")},
}
DEFAULT_METHODS = ("ours-syn", "ours-bspline", "ants-syn", "ants-quick", "elastix", "sitk-script",
                   *(f"ours-{p}-{b}" for p in ("bspline", "syn") for b in ("as-is", "distance", "smooth")))


def _kind(case: str) -> str:
    """``known`` for every known-deformation case (``known-s5-9mm``, ``multi``), else the case itself."""
    return "known" if case.startswith("known") or case == "multi" else case


def run_method(name: str, runner_dir: Path, fixed: Path, moving: Path, case: str, outdir: Path, timeout_s: float) -> dict | None:
    runner, python, variants = METHODS[name]
    key = case if case in variants else _kind(case)
    if key not in variants:
        return None
    outdir.mkdir(parents=True, exist_ok=True)
    command = [str(python), str(runner_dir / f"run_{runner}.py"), str(fixed), str(moving), variants[key], str(outdir)]
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    try:
        # in the method's own folder: transformix writes its deformationField.nii into the working directory
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout_s, env=env, check=False,
                              cwd=outdir)
    except subprocess.TimeoutExpired:
        return {"failed": f"timed out after {timeout_s:.0f} s"}
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode != 0 or not lines:
        tail = (done.stderr.strip().splitlines() or ["no output"])[-1]
        return {"failed": f"exit {done.returncode}: {tail[:300]}"}
    return json.loads(lines[-1])


def answer(files: list[str]) -> cr.Transform:
    """The fixed -> moving map a runner wrote: one file, or ANTs' list (the first listed acts first on points)."""
    parts = [read_transform(f) for f in files]
    return parts[0] if len(parts) == 1 else Composite(tuple(parts[::-1]))


# ------------------------------------------------------------------------------------------------ cases
def _shrunk(image: cr.SpatialImage) -> cr.SpatialImage:
    return cr.SpatialImage.from_sitk(sitk.BinShrink(image.to_sitk(), [2] * image.ndim))


def _head(image: cr.SpatialImage) -> np.ndarray:
    values = np.asarray(image.array, dtype=float)
    mask = ndimage.binary_fill_holes(values > 0.1 * np.percentile(values[values > 0], 99))
    labels, count = ndimage.label(mask)
    if count > 1:
        mask = labels == 1 + int(np.argmax(ndimage.sum(mask, labels, range(1, count + 1))))
    return mask


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    return float(2.0 * np.count_nonzero(a & b) / max(1, np.count_nonzero(a) + np.count_nonzero(b)))


def _label_dice(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.astype(np.int64).ravel(), b.astype(np.int64).ravel()
    both = np.bincount(a[a == b], minlength=LABELS + 1)[1:]
    sizes = np.bincount(a, minlength=LABELS + 1)[1:] + np.bincount(b, minlength=LABELS + 1)[1:]
    return float(np.mean(2.0 * both[sizes > 0] / sizes[sizes > 0]))


def make_cases(folder: Path, cases: list[str], warps: Sequence[tuple[int, float]] = ()) -> dict:
    out: dict = {}
    mni = cr.read(ANTSPY / "mni.nii.gz")
    if {"known", "masks", "ants-check", "multi"} & set(cases):
        atlas = cr.read(ANTSPY / "mnia.nii.gz")
        fixed = _shrunk(mni)
        cr.write(fixed, folder / "known_fixed.nii.gz")
        points = synthetic.head_points(fixed, step=2)
        for seed, mm in [(13, 6.0), *[w for w in warps if w != (13, 6.0)]]:
            name = "known" if (seed, mm) == (13, 6.0) else f"known-s{seed}-{mm:g}mm"
            warp = synthetic.random_bspline(mni, seed, mesh_mm=40.0, max_displacement_mm=mm)
            cr.write(_shrunk(synthetic.resample_through(mni, warp)), folder / f"{name}_moving.nii.gz")
            # G inverted point by point on its field sampled at 1 mm (vectorised; linear interpolation of the
            # 40 mm spline there is exact to about 0.002 mm)
            field = sampled_field(warp, mni)
            out[name] = {
                "fixed": folder / "known_fixed.nii.gz", "moving": folder / f"{name}_moving.nii.gz", "grid": fixed,
                "points": points, "truth": field.inverse_points(points), "atlas": atlas,
                "moving_atlas": cr.apply(warp, atlas, reference=atlas, interpolation="nearest"),
            }
            if name == "known":  # the first: the masks and multi cases move by the same deformation
                known_warp, known_field = warp, field
        if "multi" in cases:
            moving = synthetic.degrade(cr.read(folder / "known_moving.nii.gz"), 13, noise=0.01, bias=0.05, remap="t2")
            cr.write(moving, folder / "multi_moving.nii.gz")
            out["multi"] = {**out["known"], "moving": folder / "multi_moving.nii.gz"}
        if "masks" in cases:
            brain = fixed.replace(array=(cr.apply(cr.Translation([0, 0, 0]), atlas, reference=fixed,
                                                  interpolation="nearest").array > 0).astype(np.uint8))
            moved = cr.apply(known_warp, brain, reference=brain, interpolation="nearest")
            cr.write(brain, folder / "mask_fixed.nii.gz")
            cr.write(moved, folder / "mask_moving.nii.gz")
            inside = brain.index_to_world(np.argwhere(np.asarray(brain.array) > 0)[::3, ::-1].astype(float))
            out["masks"] = {"fixed": folder / "mask_fixed.nii.gz", "moving": folder / "mask_moving.nii.gz",
                            "grid": brain, "points": inside, "truth": known_field.inverse_points(inside), "mask": brain,
                            "moving_mask": moved}
    if "colin" in cases:
        out["colin"] = {"fixed": ANTSPY / "mni.nii.gz", "moving": ANTSPY / "ch2.nii.gz", "grid": mni,
                        "moving_image": cr.read(ANTSPY / "ch2.nii.gz")}
    return out


def score(case: str, data: dict, transform: cr.Transform) -> dict:
    case = _kind(case)
    grid = data["grid"]
    det = jacobian_determinant(transform, grid).array  # every voxel of the fixed grid
    figures = {"min_jacobian": float(det.min()), "folding_fraction": float(np.mean(det <= 0))}
    if case in ("known", "masks"):
        error = np.linalg.norm(transform.transform_points(data["points"]) - data["truth"], axis=1)
        figures["error_mm"] = float(error.mean())
    if case == "known":
        back = cr.apply(transform, data["moving_atlas"], reference=data["atlas"], interpolation="nearest")
        figures["label_dice"] = _label_dice(np.asarray(back.array), np.asarray(data["atlas"].array))
    if case == "masks":
        back = cr.apply(transform, data["moving_mask"], reference=data["mask"], interpolation="nearest")
        figures["mask_dice"] = _dice(np.asarray(back.array) > 0, np.asarray(data["mask"].array) > 0)
    if case == "colin":
        moving = data["moving_image"]
        head = moving.replace(array=_head(moving).astype(np.uint8))
        carried = cr.apply(transform, head, reference=grid, interpolation="nearest").array > 0
        figures["head_dice"] = _dice(_head(grid), carried)
    return figures


def ants_check(folder: Path, data: dict, timeout_s: float) -> dict:
    """Our ``syn`` outputs applied by ANTsPy beside ``coregister.apply``: the largest and mean difference in the head."""
    from coregister.outputs import write_deformation

    fixed, moving = cr.read(data["fixed"]), cr.read(data["moving"])
    result = cr.register(fixed, moving, preset="syn")
    out = folder / "ants-check"
    out.mkdir(exist_ok=True)
    write_deformation(out, result.transform, fixed)
    result.transform.save(out / "transform.h5")
    ours = cr.apply(result.transform, moving, reference=fixed, output_dtype=np.float32)
    cr.write(ours, out / "ours.nii.gz")
    script = textwrap.dedent(
        f"""
        import ants, numpy as np
        fixed = ants.image_read({str(data['fixed'])!r}); moving = ants.image_read({str(data['moving'])!r})
        a = ants.apply_transforms(fixed, moving, [{str(out / 'warp.nii.gz')!r}, {str(out / 'affine.mat')!r}],
                                  interpolator="linear")
        b = ants.apply_transforms(fixed, moving, [{str(out / 'transform.h5')!r}], interpolator="linear")
        c = ants.apply_transforms(fixed, moving, [{str(out / 'affine.mat')!r}], interpolator="linear")
        ants.image_write(a, {str(out / 'ants_pair.nii.gz')!r}); ants.image_write(b, {str(out / 'ants_h5.nii.gz')!r})
        ants.image_write(c, {str(out / 'control_affine_only.nii.gz')!r})
        """
    )
    subprocess.run([str(PEERS / "ants" / "bin" / "python"), "-c", script], check=True, timeout=timeout_s,
                   env=dict(os.environ, PYTHONWARNINGS="ignore"))
    head = _head(fixed)
    scale = float(np.percentile(np.asarray(fixed.array)[head], 99))
    figures = {}
    # the control leaves the warp out: it must differ by about the warp's effect, or the comparison sees nothing
    for name in ("ants_pair", "ants_h5", "control_affine_only"):
        theirs = np.asarray(cr.read(out / f"{name}.nii.gz").array, dtype=np.float64)
        diff = np.abs(theirs - np.asarray(ours.array, dtype=np.float64))[head]
        figures[name] = {"max_abs": float(diff.max()), "mean_abs": float(diff.mean()),
                         "max_relative_to_p99": float(diff.max() / scale)}
    return figures


def table(results: list[dict], load: list[float]) -> str:
    lines = [f"load average during the run: {', '.join(f'{v:.1f}' for v in load)} (2 cores)", ""]
    for case in dict.fromkeys(r["case"] for r in results):
        rows = [r for r in results if r["case"] == case]
        quality = {"known": ("error_mm", "label_dice"), "colin": ("head_dice",),
                   "masks": ("error_mm", "mask_dice")}[_kind(case)]
        lines += [f"### {case}", "", "| method | reg s | CPU s | peak RSS MB | " + " | ".join(quality)
                  + " | min Jacobian | folding fraction |", "|---|---:|---:|---:|" + "---:|" * (len(quality) + 2)]
        for r in rows:
            if "failed" in r:
                lines.append(f"| {r['method']} | {r['failed']} |")
                continue
            cells = " | ".join(f"{r[q]:.4f}" for q in quality)
            lines.append(f"| {r['method']} | {r['reg_s']:.1f} | {r['cpu_s']:.1f} | {r['rss_mb']:.0f} | {cells} "
                         f"| {r['min_jacobian']:.3f} | {r['folding_fraction']:.2e} |")
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", default="known,colin,masks,ants-check")
    parser.add_argument("--methods", default=",".join(DEFAULT_METHODS), help=f"any of {', '.join(METHODS)}")
    parser.add_argument("--warps", default="", help="more known-deformation cases, SEED:MM,... (e.g. 5:9,7:3)")
    parser.add_argument("--timeout", type=float, default=3600.0, help="seconds per registration")
    parser.add_argument("--out", type=Path, help="write the markdown table here too")
    parser.add_argument("--json", type=Path, help="write every measurement here")
    args = parser.parse_args(argv)
    cases = args.cases.split(",")
    methods = [m for m in args.methods.split(",") if Path(METHODS[m][1]).exists()]
    results: list[dict] = []
    load = [os.getloadavg()[0]]
    with tempfile.TemporaryDirectory(prefix="bench-deformable-") as tmp:
        folder = Path(tmp)
        for runner, body in RUNNERS.items():
            (folder / f"run_{runner}.py").write_text(_COMMON + body)
        warps = [(int(seed), float(mm)) for seed, _, mm in (w.partition(":") for w in args.warps.split(",") if w)]
        data = make_cases(folder, cases, warps)
        order = [c for c in cases if c != "ants-check"]
        asked = {c: c if c in order else _kind(c) for c in data}  # "multi" by name, "known-s5-9mm" as "known"
        for case in sorted(data, key=lambda c: order.index(asked[c]) if asked[c] in order else len(order)):
            if asked[case] not in order:
                continue
            for method in methods:
                started = time.perf_counter()
                measured = run_method(method, folder, data[case]["fixed"], data[case]["moving"], case,
                                      folder / case / method, args.timeout)
                if measured is None:
                    continue
                load.append(os.getloadavg()[0])
                row = {"case": case, "method": method, **measured}
                if "failed" not in measured:
                    row.update(score(case, data[case], answer(measured["files"])))
                print(json.dumps({k: v for k, v in row.items() if k not in ("files", "warnings")}),
                      f"({time.perf_counter() - started:.0f} s with scoring)", flush=True)
                results.append(row)
        check = ants_check(folder, data["known"], args.timeout) if "ants-check" in cases and "known" in data else None
    text = table(results, load)
    if check is not None:
        text += "\nANTsPy apply_transforms with our syn outputs against coregister.apply (head voxels): " + json.dumps(check)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")
    if args.json:
        args.json.write_text(json.dumps({"results": results, "ants_check": check, "load": load}, indent=2, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
