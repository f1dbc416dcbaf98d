"""MRI cohort to a template: register every subject's T1 to MNI152 through Dask, then carry the atlas labels back.

Each subject is registered to the template (fixed = template, moving =
subject) as one Dask task that reads and writes its own files; the summary
lands in ``OUT/summary.csv``. The transform maps template points to subject
points, so the template's label atlas is brought into each subject's space
by resampling it with the *inverse* transform, nearest neighbour.

Data: ``antspy`` (MNI152 1 mm template ``mni.nii.gz``, its atlas ``mnia.nii.gz``,
Colin27 ``ch2.nii.gz``) and ``itk_kmeans_t1_3d`` (another subject's T1).

    python examples/mri_cohort_to_template.py --data-root ../shared/data -o cohort-out
    python examples/mri_cohort_to_template.py --small --data-root ../shared/data   # all at 3 mm, 1 worker

The same from the shell::

    printf 'fixed,moving\\n%s,%s\\n' mni.nii.gz ch2.nii.gz > pairs.csv
    coregister batch pairs.csv -o cohort-out --preset affine
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from _common import dataset, parser, setup

import coregister as cr
from coregister.batch import PairJob, PairStatus, quiet_dask_logging, run_batch


def coarse_copy(image: cr.SpatialImage, spacing_mm: float, *, labels: bool = False) -> cr.SpatialImage:
    """``image`` resampled onto a grid of ``spacing_mm`` covering the same extent (same origin corner and direction)."""
    size = np.array(image.size) * np.array(image.spacing)
    new_size = np.maximum(1, np.round(size / spacing_mm)).astype(int)
    corner = image.index_to_world([[-0.5] * image.ndim])[0]
    origin = corner + image.direction @ np.full(image.ndim, spacing_mm / 2)
    grid = cr.SpatialImage(np.zeros(new_size[::-1], np.uint8), origin=origin, spacing=[spacing_mm] * image.ndim,
                           direction=image.direction)
    identity = cr.Translation(np.zeros(image.ndim))
    return cr.apply(identity, image, reference=grid, interpolation="nearest" if labels else "linear")


def main(argv: list[str] | None = None) -> int:
    p = parser(__doc__.splitlines()[0], default_out="cohort-out")
    p.add_argument("--preset", default="affine", help="registration preset (default affine)")
    p.add_argument("--workers", type=int, default=None, help="Dask workers (default: one per core; 1 with --small)")
    args = p.parse_args(argv)
    setup(args)
    if not args.verbose:
        quiet_dask_logging()
    antspy = dataset("antspy", args)
    kmeans = dataset("itk_kmeans_t1_3d", args)
    template_path, atlas_path = antspy / "mni.nii.gz", antspy / "mnia.nii.gz"
    subjects = [antspy / "ch2.nii.gz", kmeans / "KmeansTest_T1UCharRaw.nii.gz"]
    if args.small:  # everything at 3 mm: a few seconds per subject
        small = args.out / "inputs_3mm"
        small.mkdir(exist_ok=True)
        template_path = cr.write(coarse_copy(cr.read(template_path), 3.0), small / "template.nii.gz")
        atlas_path = cr.write(coarse_copy(cr.read(atlas_path), 3.0, labels=True), small / "atlas.nii.gz")
        subjects = [cr.write(coarse_copy(cr.read(s), 3.0), small / s.name) for s in subjects]
    jobs = [PairJob(name=s.name.split(".")[0], fixed=template_path, moving=s, preset=args.preset) for s in subjects]
    summary = run_batch(jobs, args.out, workers=args.workers or (1 if args.small else None), processes=not args.small)

    atlas = cr.read(atlas_path)
    print(f"{'subject':<24} {'status':<15} {'ncc before':>10} {'ncc after':>10} {'time (s)':>9}  labels in subject space")
    for outcome in summary.outcomes:
        line = f"{outcome.name:<24} {outcome.status.value:<15} "
        if outcome.status is PairStatus.ERROR:
            print(line + outcome.error)
            continue
        subject = cr.read(Path(outcome.moving))
        transform = cr.read_transform(args.out / outcome.name / "transform.tfm")  # template -> subject points
        labels = cr.apply(transform.inverse(), atlas, reference=subject, interpolation="nearest")
        labels_path = cr.write(labels, args.out / outcome.name / "atlas_in_subject.nii.gz")
        ncc = (outcome.metrics.get("before", {}).get("ncc", float("nan")), outcome.metrics.get("after", {}).get("ncc", float("nan")))
        print(line + f"{ncc[0]:>10.3f} {ncc[1]:>10.3f} {outcome.time_s:>9.2f}  {labels_path}")
    print(f"summary: {summary.summary_csv}")
    return 0 if all(o.status is PairStatus.DONE for o in summary.outcomes) else 3


if __name__ == "__main__":
    sys.exit(main())
