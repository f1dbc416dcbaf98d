"""Geospatial coregistration: coregister.geo beside AROSICS (COREG, COREG_LOCAL), same files, one run.

Run from the repository root (not collected by pytest)::

    .venv/bin/python benchmarks/bench_geo.py [--skip-big] [--big-grid 200] [--json bench_geo.json]

Every case runs in its own process (ours in this venv, AROSICS in its own,
``~/.cache/coregister-peers/arosics/bin/python``, or ``--arosics PYTHON``);
the harness samples the resident memory of the whole process tree every
20 ms (AROSICS's local grid uses a pool of worker processes: the peak is the
largest sum over the tree) and takes the CPU time of the process and its
children from ``getrusage``. Inside each process the computation is timed
apart from start-up (imports, reading).

Cases
-----
1. Known shifts: ``RGB.byte.tif`` (and an 800 x 800 block of the Sentinel-2
   reference) with every band's content moved by 12 known sub-pixel shifts
   (``scipy.ndimage.shift``, cubic; geotransform kept; pixels the shift brings in
   from outside set to nodata). Error: distance between the correction found
   and minus the shift, in pixels. AROSICS ``COREG`` with its defaults
   (256 x 256 window at the centre of the overlap), ours ``mode="shift"`` with
   its defaults (up to 49 windows of 256 x 256).
2. The real Sentinel-2 pair, global: AROSICS ``COREG`` and ours ``shift``;
   time, peak memory, shift.
3. The real Sentinel-2 pair, local grid of 100 px, 256 x 256 windows:
   AROSICS ``COREG_LOCAL`` (``calculate_spatial_shifts``, its default filters)
   and ours ``mode="local"`` (tie points, RANSAC, field; no output written, as
   AROSICS writes none in that call); CPU time per tie point, peak memory.
4. Whole scene: a 10980 x 10980 uint16 reference tiled from the real
   Sentinel-2 texture (mirrored) and a target made from it by a smooth known
   displacement field (0.3-1.2 px), both tiled GeoTIFFs; ours ``local`` with the
   output written (all blocks resampled); peak resident memory and the error of
   the tie points against the known field.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path
from typing import Any

import numpy as np

from coregister.qc.synthetic import write_shifted_raster

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("COREGISTER_TEST_DATA", REPO.parent / "shared" / "data"))
S2 = DATA / "geospatial" / "arosics_s2_T33UUU"
S2_REF = S2 / "ref_S2A_20160608T153121_T33UUU_sub.tif"
S2_TGT = S2 / "tgt_S2A_20160529T153631_T33UUU_sub.tif"
LANDSAT = DATA / "geospatial" / "rasterio_landsat7" / "RGB.byte.tif"
KNOWN_SHIFTS = [
    (0.30, 0.35), (0.65, -0.40), (-0.70, 0.62), (1.35, -2.66), (0.50, 0.50), (-0.33, 0.68),
    (2.38, 1.31), (0.10, -0.90), (-1.64, 0.37), (0.61, 0.39), (0.25, -0.75), (-0.36, -0.64),
]

# ----------------------------------------------------------------------------- worker programs
OURS_SHIFT = """
import json, sys, time
t0 = time.perf_counter()
from coregister.geo import coregister
pairs = json.loads(sys.argv[1]); out = []
t1 = time.perf_counter()
for ref, tgt in pairs:
    s = time.perf_counter(); r = coregister(ref, tgt); e = time.perf_counter() - s
    out.append({"shift_px": list(r.shift_px), "time_s": e, "windows": len(r.used_windows)})
print(json.dumps({"results": out, "import_s": t1 - t0}))
"""

AROSICS_SHIFT = """
import json, sys, time, warnings
warnings.filterwarnings("ignore")
t0 = time.perf_counter()
from arosics import COREG
pairs = json.loads(sys.argv[1]); out = []
t1 = time.perf_counter()
for ref, tgt in pairs:
    s = time.perf_counter()
    cr = COREG(ref, tgt, q=True, progress=False)
    cr.calculate_spatial_shifts()
    e = time.perf_counter() - s
    ok = bool(cr.success)
    out.append({"shift_px": [cr.x_shift_px, cr.y_shift_px] if ok else None, "time_s": e,
                "reliability": float(cr.shift_reliability) if ok and cr.shift_reliability is not None else None})
print(json.dumps({"results": out, "import_s": t1 - t0}))
"""

OURS_LOCAL = """
import json, sys, time
t0 = time.perf_counter()
from coregister.geo import coregister
ref, tgt, grid, output, tie_points = json.loads(sys.argv[1])
t1 = time.perf_counter()
r = coregister(ref, tgt, mode="local", grid_spacing_px=grid, output=output, tie_points=tie_points)
e = time.perf_counter() - t1
used = r.used_windows
print(json.dumps({"points": len(r.windows), "valid": len(used), "mean_shift_px": list(r.shift_px), "time_s": e,
                  "import_s": t1 - t0, "field": dict(r.field),
                  "tie_points": [[w.row, w.col, w.shift_px[0], w.shift_px[1]] for w in used]}))
"""

AROSICS_LOCAL = """
import json, sys, time, warnings
warnings.filterwarnings("ignore")
t0 = time.perf_counter()
from arosics import COREG_LOCAL
ref, tgt, grid = json.loads(sys.argv[1])
t1 = time.perf_counter()
crl = COREG_LOCAL(ref, tgt, grid_res=grid, window_size=(256, 256), q=True, progress=False)
crl.calculate_spatial_shifts()
e = time.perf_counter() - t1
tbl = crl.CoRegPoints_table
matched = tbl[tbl["X_SHIFT_M"] != crl.outFillVal]
valid = matched[matched["OUTLIER"] == False]  # noqa: E712
print(json.dumps({"points": int(len(tbl)), "matched": int(len(matched)), "valid": int(len(valid)),
                  "mean_shift_px": [float(valid["X_SHIFT_PX"].mean()), float(valid["Y_SHIFT_PX"].mean())],
                  "time_s": e, "import_s": t1 - t0}))
"""


def run_measured(python: str, program: str, argument: Any) -> dict[str, Any]:
    """Run ``program`` with ``python`` in its own process; its JSON, wall time, CPU time and peak tree RSS."""
    import psutil

    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    # output to files, not pipes: a pipe nobody reads until the end fills up and blocks the child
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        proc = subprocess.Popen([python, "-c", textwrap.dedent(program), json.dumps(argument)],
                                stdout=out, stderr=err, text=True, cwd=REPO)
        peak = 0
        handle = psutil.Process(proc.pid)
        while proc.poll() is None:
            try:
                rss = handle.memory_info().rss + sum(c.memory_info().rss for c in handle.children(recursive=True))
                peak = max(peak, rss)
            except psutil.Error:
                pass
            time.sleep(0.05)
        proc.wait()
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read(), err.read()
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    if proc.returncode != 0:
        raise RuntimeError(f"{python} failed ({proc.returncode}):\n{stderr[-3000:]}")
    lines = [line for line in stdout.splitlines() if line.startswith("{")]
    result = json.loads(lines[-1])
    # ru_maxrss of children is the largest single process; the sampled tree sum is what we report
    result.update(wall_s=wall, cpu_s=cpu, peak_rss_mb=peak / 2**20,
                  max_child_rss_mb=after.ru_maxrss / 1024, stderr_lines=len(stderr.splitlines()),
                  stderr_head=stderr[:300])
    return result


# ----------------------------------------------------------------------------- data
def displacement(rows: np.ndarray, cols: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """The known field of the whole-scene case: content moved by (d_rows, d_cols) px, smooth, 0.3-1.2 px."""
    u, v = rows / size, cols / size
    d_rows = 0.6 + 0.3 * np.sin(2 * np.pi * u) * np.cos(np.pi * v)
    d_cols = -0.5 + 0.4 * v + 0.2 * np.cos(2 * np.pi * u)
    return d_rows, d_cols


def write_big_scene(folder: Path, size: int = 10980, block: int = 1024) -> tuple[Path, Path]:
    """A size x size uint16 reference tiled (mirrored) from the real Sentinel-2 texture, and its displaced target."""
    import rasterio
    from affine import Affine
    from scipy import ndimage

    with rasterio.open(S2_REF) as ds:
        texture = ds.read(1, window=((300, 3000), (800, 2300))).astype(np.float32)  # inside the footprint
        crs = ds.crs
    coeffs = ndimage.spline_filter(texture, order=3, mode="mirror")
    profile = {"driver": "GTiff", "width": size, "height": size, "count": 1, "dtype": "uint16", "crs": crs,
               "transform": Affine(10.0, 0.0, 300000.0, 0.0, -10.0, 5900040.0), "tiled": True,
               "blockxsize": 256, "blockysize": 256, "compress": "deflate", "nodata": 0, "bigtiff": "IF_SAFER"}
    paths = folder / "big_ref.tif", folder / "big_tgt.tif"
    with rasterio.open(paths[0], "w", **profile) as ref, rasterio.open(paths[1], "w", **profile) as tgt:
        for r0 in range(0, size, block):
            for c0 in range(0, size, block):
                h, w = min(block, size - r0), min(block, size - c0)
                rows, cols = np.mgrid[r0 : r0 + h, c0 : c0 + w].astype(np.float64)
                window = rasterio.windows.Window(c0, r0, w, h)
                ref_values = ndimage.map_coordinates(coeffs, [rows, cols], order=3, prefilter=False, mode="mirror")
                d_rows, d_cols = displacement(rows, cols, size)
                tgt_values = ndimage.map_coordinates(coeffs, [rows - d_rows, cols - d_cols], order=3, prefilter=False,
                                                     mode="mirror")
                ref.write(np.clip(np.rint(ref_values), 1, 65535).astype(np.uint16), 1, window=window)
                tgt.write(np.clip(np.rint(tgt_values), 1, 65535).astype(np.uint16), 1, window=window)
    return paths


# ----------------------------------------------------------------------------- cases
def known_shifts(folder: Path, ours: str, arosics: str | None) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, source, window in (("landsat", LANDSAT, None), ("sentinel2", S2_REF, ((1000, 1800), (900, 1700)))):
        reference = write_shifted_raster(source, folder / f"{name}_ref.tif", (0.0, 0.0), window=window)
        pairs = [(str(reference), str(write_shifted_raster(source, folder / f"{name}_t{k}.tif", s, window=window)))
                 for k, s in enumerate(KNOWN_SHIFTS)]
        entry: dict[str, Any] = {}
        for peer, python, program in (("ours", ours, OURS_SHIFT), ("arosics", arosics, AROSICS_SHIFT)):
            if python is None:
                continue
            run = run_measured(python, program, pairs)
            errors = []
            for shift, res in zip(KNOWN_SHIFTS, run["results"], strict=True):
                if res["shift_px"] is None:
                    errors.append(math.inf)
                else:
                    errors.append(math.hypot(res["shift_px"][0] + shift[1], res["shift_px"][1] + shift[0]))
            entry[peer] = {"errors_px": errors, "mean_px": float(np.mean(errors)), "worst_px": float(np.max(errors)),
                           "median_time_s": float(np.median([r["time_s"] for r in run["results"]])),
                           "peak_rss_mb": run["peak_rss_mb"]}
        out[name] = entry
    return out


def s2_global(ours: str, arosics: str | None) -> dict[str, Any]:
    out = {}
    for peer, python, program in (("ours", ours, OURS_SHIFT), ("arosics", arosics, AROSICS_SHIFT)):
        if python is None:
            continue
        run = run_measured(python, program, [(str(S2_REF), str(S2_TGT))])
        res = run["results"][0]
        out[peer] = {"shift_px": res["shift_px"], "compute_s": res["time_s"], "wall_s": run["wall_s"],
                     "cpu_s": run["cpu_s"], "peak_rss_mb": run["peak_rss_mb"]}
    return out


def s2_local(ours: str, arosics: str | None, grid: int) -> dict[str, Any]:
    out = {}
    runs = [("ours", ours, OURS_LOCAL, [str(S2_REF), str(S2_TGT), grid, None, None])]
    if arosics is not None:
        runs.append(("arosics", arosics, AROSICS_LOCAL, [str(S2_REF), str(S2_TGT), grid]))
    for peer, python, program, argument in runs:
        run = run_measured(python, program, argument)
        run.pop("tie_points", None)
        run["cpu_per_point_ms"] = 1000 * run["cpu_s"] / max(run["points"], 1)
        out[peer] = run
    return out


def big_scene(folder: Path, ours: str, grid: int) -> dict[str, Any]:
    started = time.perf_counter()
    ref, tgt = write_big_scene(folder)
    made = time.perf_counter() - started
    run = run_measured(ours, OURS_LOCAL, [str(ref), str(tgt), grid, str(folder / "big_out.tif"),
                                          str(folder / "big_tie_points.csv")])
    run["output_mb"] = (folder / "big_out.tif").stat().st_size / 2**20
    points = np.array(run.pop("tie_points"))
    true_rows, true_cols = displacement(points[:, 0], points[:, 1], 10980)
    # the correction is minus the displacement
    errors = np.hypot(points[:, 2] + true_cols, points[:, 3] + true_rows)
    run.update(scene_written_s=made, tie_point_error_median_px=float(np.median(errors)),
               tie_point_error_p95_px=float(np.percentile(errors, 95)))
    run["cpu_per_point_ms"] = 1000 * run["cpu_s"] / max(run["points"], 1)
    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--arosics", default=str(Path.home() / ".cache/coregister-peers/arosics/bin/python"))
    parser.add_argument("--grid", type=int, default=100, help="tie-point spacing for the Sentinel-2 local case")
    parser.add_argument("--big-grid", type=int, default=200, help="tie-point spacing for the 10980 x 10980 case")
    parser.add_argument("--skip-big", action="store_true")
    parser.add_argument("--only-big", action="store_true", help="run only the 10980 x 10980 case")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    arosics = args.arosics if Path(args.arosics).exists() else None
    if arosics is None:
        print(f"AROSICS not found at {args.arosics}; running ours only", file=sys.stderr)
    ours = sys.executable
    report: dict[str, Any] = {"date": time.strftime("%Y-%m-%d %H:%M"), "load": os.getloadavg()}
    with tempfile.TemporaryDirectory(prefix="bench_geo_") as tmp:
        folder = Path(tmp)
        if not args.only_big:
            report["known_shifts"] = known_shifts(folder, ours, arosics)
            print(json.dumps(report["known_shifts"], indent=1, default=str), flush=True)
            report["s2_global"] = s2_global(ours, arosics)
            print(json.dumps(report["s2_global"], indent=1), flush=True)
            report["s2_local"] = s2_local(ours, arosics, args.grid)
            print(json.dumps(report["s2_local"], indent=1), flush=True)
        if not args.skip_big:
            report["big_scene"] = big_scene(folder, ours, args.big_grid)
            print(json.dumps(report["big_scene"], indent=1), flush=True)
    report["load_after"] = os.getloadavg()
    print(markdown(report))
    if args.json:
        args.json.write_text(json.dumps(report, indent=1, default=str))


def markdown(report: dict[str, Any]) -> str:
    lines = ["| case | peer | result | time | peak RSS |", "|---|---|---|---:|---:|"]
    for name, entry in report.get("known_shifts", {}).items():
        for peer, r in entry.items():
            lines.append(f"| known shifts, {name} (12) | {peer} | mean {r['mean_px']:.4f} px, worst {r['worst_px']:.4f} px "
                         f"| {1000 * r['median_time_s']:.0f} ms median | {r['peak_rss_mb']:.0f} MB |")
    for peer, r in report.get("s2_global", {}).items():
        shift = ", ".join(f"{v:+.3f}" for v in r["shift_px"]) if r["shift_px"] else "failed"
        lines.append(f"| S2 pair, global | {peer} | ({shift}) px | {r['compute_s']:.2f} s ({r['wall_s']:.1f} s with start-up) "
                     f"| {r['peak_rss_mb']:.0f} MB |")
    for peer, r in report.get("s2_local", {}).items():
        lines.append(f"| S2 pair, local grid | {peer} | {r['points']} points, {r['valid']} valid, mean "
                     f"({r['mean_shift_px'][0]:+.3f}, {r['mean_shift_px'][1]:+.3f}) px | {r['cpu_s']:.1f} s CPU "
                     f"({r['cpu_per_point_ms']:.1f} ms/point), {r['wall_s']:.1f} s wall | {r['peak_rss_mb']:.0f} MB |")
    if "big_scene" in report:
        r = report["big_scene"]
        lines.append(f"| 10980 x 10980, local + output | ours | {r['points']} points, {r['valid']} valid, tie-point error "
                     f"median {r['tie_point_error_median_px']:.3f} px | {r['wall_s']:.0f} s wall, {r['cpu_s']:.0f} s CPU "
                     f"| {r['peak_rss_mb']:.0f} MB |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
