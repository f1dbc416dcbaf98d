"""Do the tools themselves apply the transforms coregister writes for them? elastix (transformix) and ANTs, one run.

For each transform kind (translation, rigid, similarity, affine, B-spline,
displacement field, affine + B-spline, rigid + field), made about the centre
of nibabel's anatomical T1 (``../shared/data/medical/nibabel_anat_func``):

* **elastix**: ``coregister.write_transform(..., format="elastix")`` writes
  ``TransformParameters*.txt``; transformix (itk-elastix, in its own virtual
  environment, ``~/.cache/coregister-peers/elastix``) maps 300 fixed-space
  points with them (``SetFixedPointSetFileName``; it prints 6 decimals);
  error = max distance to ``transform.transform_points`` (mm).
* **ANTs**: ``format="ants"`` writes ``0GenericAffine.mat`` /
  ``1Warp.nii.gz``; ANTsPy's ``apply_transforms`` (``~/.cache/coregister-peers/ants``)
  resamples three ramp images (each voxel holds its world x, y or z) with the
  files in the ``-t`` order we return, so the value at a fixed voxel is where
  ANTs maps it (exact for linear interpolation; float32 output); error = max
  over 300 voxels. A B-spline is written as a warp sampled on the fixed grid,
  so the points are voxel centres.
* **the other way**: elastix's own registration output (rigid -> affine ->
  B-spline chain) and ANTs' own (``SyN``: affine + warp), read by
  ``coregister.read_transform``, against transformix's and
  ``apply_transforms``' mapping of the same points.

Run from the repository root::

    .venv/bin/python benchmarks/bench_interop.py --out bench_interop.md

Not a test: pytest never collects it (the tests check the same directions on
files elastix and ANTs wrote, kept in ``tests/data``, without the peers).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import numpy as np

import coregister as cr
from coregister.io.transforms._field import displacement_field

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("COREGISTER_TEST_DATA", ROOT.parent / "shared" / "data"))
PEERS = Path(os.environ.get("COREGISTER_PEERS", Path.home() / ".cache" / "coregister-peers"))
ANAT = DATA / "medical" / "nibabel_anat_func" / "anatomical.nii"

TRANSFORMIX = textwrap.dedent(
    """
    import itk, json, sys, numpy as np, os, re
    tp, points, out = sys.argv[1:4]
    os.makedirs(out, exist_ok=True)
    po = itk.ParameterObject.New(); po.ReadParameterFile(tp)
    size = [int(v) for v in po.GetParameterMap(po.GetNumberOfParameterMaps() - 1)["Size"]]
    tf = itk.TransformixFilter.New(Input=itk.image_from_array(np.zeros(size[::-1], np.float32)), TransformParameterObject=po)
    tf.SetFixedPointSetFileName(points); tf.SetOutputDirectory(out); tf.SetLogToConsole(False)
    tf.UpdateLargestPossibleRegion()
    text = open(os.path.join(out, "outputpoints.txt")).read()
    found = [[float(v) for v in m.split()] for m in re.findall(r"OutputPoint = \\[([^\\]]*)\\]", text)]
    print(json.dumps(found))
    """
)

ANTS_APPLY = textwrap.dedent(
    """
    import ants, json, sys, numpy as np
    fixed_path, transforms, picks = sys.argv[1], json.loads(sys.argv[2]), np.array(json.loads(sys.argv[3]))
    fixed = ants.image_read(fixed_path)
    big, origin, step = (90, 90, 90), (-120.0, -120.0, -120.0), 2.75
    grids = np.meshgrid(*[np.arange(n, dtype=float) for n in big], indexing="ij")
    found = []
    for axis in range(3):
        ramp = ants.from_numpy((origin[axis] + grids[axis] * step).astype(np.float64), origin=origin, spacing=(step,) * 3)
        out = ants.apply_transforms(fixed, ramp, transformlist=transforms, interpolator="linear").numpy()
        found.append(out[tuple(picks.T)].tolist())
    print(json.dumps(np.array(found).T.tolist()))
    """
)


def transforms(grid: cr.SpatialImage) -> dict[str, cr.Transform]:
    rng = np.random.default_rng(14)
    centre = grid.world_centre
    rigid = cr.Rigid.from_angles(np.deg2rad([4.0, -7.0, 11.0]), translation=[2.5, -1.5, 3.0], center=centre)
    affine = cr.Affine(np.eye(3) + rng.normal(0, 0.04, (3, 3)), [1.0, -2.0, 0.5], centre)
    spline = cr.BSpline(rng.normal(0, 1.5, (3, 6, 7, 6)), grid_origin=centre - 40.0, grid_spacing=[16.0, 16.0, 16.0])
    z, y, x = np.meshgrid(*[np.arange(n, dtype=float) for n in grid.shape], indexing="ij")
    smooth = np.stack([1.5 * np.sin(x / 5.0) * np.cos(z / 4.0), 1.2 * np.cos(y / 6.0), 0.8 * np.sin((x + y) / 7.0)], axis=-1)
    field = displacement_field(smooth, origin=grid.origin, spacing=grid.spacing, direction=grid.direction)
    return {
        "translation": cr.Translation([1.25, -3.5, 2.0]),
        "rigid": rigid,
        "similarity": cr.Similarity.from_angles(1.08, np.deg2rad([-3.0, 5.0, 2.0]), translation=[1.0, 0.0, -2.0], center=centre),
        "affine": affine,
        "bspline": spline,
        "field": field,
        "affine_bspline": cr.Composite((affine, spline)),
        "rigid_field": cr.Composite((rigid, field)),
    }


def _peer(name: str, code: str, *args: str) -> object:
    python = PEERS / name / "bin" / "python"
    if not python.exists():
        raise FileNotFoundError(f"peer {name} not installed at {python} (../shared/peers/install.sh)")
    run = subprocess.run([str(python), "-c", code, *args], capture_output=True, text=True, timeout=600)
    if run.returncode != 0:
        raise RuntimeError(f"{name} failed: {run.stderr[-2000:]}")
    return json.loads(run.stdout.strip().splitlines()[-1])


def elastix_error(transform: cr.Transform, grid: cr.SpatialImage, folder: Path, points: np.ndarray) -> float:
    written = cr.write_transform(transform, folder / "TransformParameters.txt", format="elastix", reference=grid)
    point_file = folder / "points.txt"
    point_file.write_text(f"point\n{len(points)}\n" + "\n".join(" ".join(f"{v:.6f}" for v in p) for p in points) + "\n")
    theirs = np.array(_peer("elastix", TRANSFORMIX, str(written[-1]), str(point_file), str(folder / "out")))
    return float(np.abs(theirs - transform.transform_points(np.round(points, 6))).max())


def ants_error(transform: cr.Transform, grid: cr.SpatialImage, fixed_path: Path, folder: Path, picks: np.ndarray) -> float:
    written = cr.write_transform(transform, folder / "ants_", format="ants", reference=grid)
    theirs = np.array(_peer("ants", ANTS_APPLY, str(fixed_path), json.dumps([str(p) for p in written]),
                            json.dumps(picks[:, ::-1].tolist())))  # fmt: skip  (ANTsPy arrays are (x, y, z))
    ours = transform.transform_points(grid.index_to_world(picks[:, ::-1]))
    return float(np.abs(theirs - ours).max())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, help="Also write the table (Markdown) here.")
    args = parser.parse_args(argv)
    grid = cr.read(ANAT)
    rng = np.random.default_rng(0)
    size = np.array(grid.size)
    continuous = rng.uniform(2, size - 3, (300, 3))  # index (x, y, z) inside the grid
    points = grid.index_to_world(continuous)
    picks = np.column_stack([rng.integers(2, n - 2, 300) for n in grid.shape])  # array index (z, y, x)
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        fixed_path = Path(scratch) / "fixed.nii.gz"
        cr.write(grid.replace(array=np.asarray(grid.array, dtype=np.float32)), fixed_path)
        for kind, transform in transforms(grid).items():
            folder = Path(scratch) / kind
            (folder / "ants").mkdir(parents=True)
            on_voxels = grid.index_to_world(picks[:, ::-1].astype(float))
            elastix_points = on_voxels if kind in ("field", "rigid_field") else points
            row = {"kind": kind, "elastix": elastix_error(transform, grid, folder, elastix_points),
                   "ants": ants_error(transform, grid, fixed_path, folder / "ants", picks)}  # fmt: skip
            rows.append(row)
            print(f"{kind:15s} transformix {row['elastix']:.2e} mm   antsApplyTransforms {row['ants']:.2e} mm", flush=True)
    table = ["| transform written by coregister | transformix: max error (mm) | antsApplyTransforms: max error (mm) |",
             "|---|---:|---:|"]  # fmt: skip
    table += [f"| {r['kind']} | {r['elastix']:.1e} | {r['ants']:.1e} |" for r in rows]
    text = "\n".join(table) + "\n"
    print(text)
    if args.out:
        args.out.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
