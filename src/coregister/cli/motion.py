"""``coregister motion``: realign the volumes of a 4D series (fMRI, DCE, DWI) and report the head motion.

Writes into OUTDIR:

* ``realigned.<the series' extension>``: every volume resampled once onto
  the reference, with the input's header (repetition time, units, slice
  timing, description, xform codes);
* ``motion.tsv``: ``trans_x trans_y trans_z rot_x rot_y rot_z`` (mm,
  radians, fMRIPrep's columns and conventions) and
  ``framewise_displacement`` (mm, ``n/a`` for the first volume), one row per
  volume;
* ``motion.json``: the reference, the volumes above ``--fd-threshold``, the
  volumes whose registration failed its quality check, each volume's
  transform as a world matrix;
* ``transforms/volume-NNNN.tfm``: each volume's transform (reference points
  -> that volume's points, ITK), for ``coregister apply``;
* ``report.html`` (unless ``--no-report``): the parameters and framewise
  displacement plotted, the series before and after.

The outputs appear together (written into a locked ``.part`` folder beside
OUTDIR, moved in at the end); an OUTDIR holding an earlier run's outputs is
replaced only with ``--overwrite``.
Exit code 3 when a volume's registration failed its quality check (the
outputs are written all the same); volumes that merely moved a lot are
listed, not an error.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click

from coregister._files import check_writable, refuse_overwriting_input
from coregister.cli import QualityCheckFailed
from coregister.cli._options import overwrite_option
from coregister.cli._output import command_line, echo_json, json_option, print_table, quiet
from coregister.errors import OutputExistsError

__all__ = ["motion_command"]

logger = logging.getLogger(__name__)

_FETCH = "coregister data fetch nibabel_anat_func --dest data"
_SERIES = "data/nibabel_anat_func/functional.nii"
_TRANSFORMS = "transforms"
_NAMES = ("motion.tsv", "motion.json", "report.html")
_OVERWRITE_FOLDER = "pass --overwrite to replace them, or choose another -o folder"


def _reference(value: str) -> str | int:
    text = value.strip().lower()
    if text.lstrip("-").isdigit():
        return int(text)
    return text


@contextlib.contextmanager
def _staging(outdir: Path, names: list[str], *, overwrite: bool) -> Iterator[Path]:
    """A locked ``.part`` folder beside ``outdir`` whose contents replace the same names in ``outdir`` when the block succeeds.

    An ``outdir`` holding an earlier run's outputs (any of ``names``) is
    refused unless ``overwrite`` (the caller checks before the work; this
    checks again before moving in: another run may have written meanwhile);
    a killed run's ``.part`` folder is swept by the next run
    (:func:`coregister._files.part_folder`).
    """
    from coregister._files import PART_MARKER, part_folder
    from coregister.outputs import refuse_existing_outputs

    parent = outdir.parent if str(outdir.parent) else Path(".")
    if outdir.exists() and not outdir.is_dir():
        raise OutputExistsError(f"{str(outdir)!r} exists and is not a folder; choose another -o")
    with part_folder(parent, outdir.name) as staging:
        yield staging
        refuse_existing_outputs(outdir, names, overwrite=overwrite, fix=_OVERWRITE_FOLDER)
        earlier_run = (outdir / "motion.json").is_file()
        outdir.mkdir(exist_ok=True)
        items = sorted(item for item in staging.iterdir() if item.name != PART_MARKER)
        written = {item.name for item in items}
        for item in sorted(items, key=lambda i: i.name == "motion.json"):  # motion.json last: it says the rest is there
            target = outdir / item.name
            if item.is_dir() and target.is_dir() and all(p.suffix == ".tfm" for p in target.iterdir()):
                shutil.rmtree(target)  # the transforms of an earlier run: replaced, not merged
            os.replace(item, target)
        if earlier_run:  # what an earlier run wrote and this one did not (a report, another extension) goes
            for stale in [outdir / name for name in _NAMES] + sorted(outdir.glob("realigned.*")):
                if stale.name not in written and stale.is_file():
                    stale.unlink()


@click.command(
    "motion",
    epilog=(
        "\b\nExample (no network needed; nibabel's 20-volume EPI series):\n"
        f"  {_FETCH}\n"
        f"  coregister motion {_SERIES} -o motion-out --reference mean"
    ),
)
@click.argument("series", type=click.Path(path_type=Path))
@click.option("-o", "--outdir", type=click.Path(path_type=Path), required=True, help="Output folder (created if needed).")
@click.option("--reference", "reference", default="middle", show_default=True, metavar="middle|mean|first|last|INDEX",
              help="The volume every volume is registered to: middle, first, last, an index (0-based), or mean "
              "(two passes, as SPM's realign: to the middle volume, then to the mean of that result).")
@click.option("--fd-threshold", type=float, default=0.5, show_default=True,
              help="List the volumes whose framewise displacement (Power et al. 2012) exceeds this many mm.")
@click.option("--interpolation", type=click.Choice(["linear", "bspline"], case_sensitive=False), default="linear",
              show_default=True, help="How the volumes are resampled onto the reference.")
@click.option("--mask", type=click.Path(path_type=Path), default=None,
              help="A mask on the series' grid (non-zero = compare there), e.g. a brain mask.")
@click.option("--workers", type=click.IntRange(min=1), default=None,
              help="Worker processes (default: the machine's cores, for a series large enough to gain from them).")
@click.option("--report/--no-report", default=True, show_default=True, help="Write OUTDIR/report.html.")
@overwrite_option
@json_option
@click.pass_context
def motion_command(
    ctx: click.Context,
    series: Path,
    outdir: Path,
    reference: str,
    fd_threshold: float,
    interpolation: str,
    mask: Path | None,
    workers: int | None,
    report: bool,
    as_json: bool,
    overwrite: bool = False,
) -> None:
    """Realign every volume of the 4D SERIES rigidly to a reference; write the realigned series and the motion.

    The six motion parameters per volume go to OUTDIR/motion.tsv with
    fMRIPrep's columns (trans_x trans_y trans_z in mm, rot_x rot_y rot_z in
    radians) and the framewise displacement. Exit code 3: a volume's
    registration failed its quality check (the outputs are written all the
    same). An OUTDIR holding an earlier run's outputs is replaced only with
    --overwrite.
    """
    from coregister.io import read, write
    from coregister.medical.motion_correction import motion
    from coregister.outputs import refuse_existing_outputs, registered_name

    check_writable(outdir, folder=True, fix="choose another -o folder")
    image = read(series)
    if not image.has_channels or image.ndim != 3:
        from coregister.errors import GeometryError

        raise GeometryError(
            f"{str(series)!r} is not a 4D series ({image.ndim}D, {' x '.join(map(str, image.size))}, "
            f"{image.n_channels} volume(s)); `coregister motion` realigns the volumes of a 4D NIfTI or MetaImage file"
        )
    image_name = registered_name(series).replace("registered", "realigned", 1)
    for name in (image_name, *_NAMES):
        for source in (series, mask):
            refuse_overwriting_input(outdir / name, source, fix="choose another -o folder")
    names = [image_name, *_NAMES, _TRANSFORMS]
    refuse_existing_outputs(outdir, names, overwrite=overwrite, fix=_OVERWRITE_FOLDER)  # before minutes of work
    mask_values = _mask(mask, image) if mask is not None else None

    with _volume_progress(ctx) as progress:
        result = motion(image, reference=_reference(reference), fd_threshold_mm=fd_threshold,
                        interpolation=interpolation, mask=mask_values, workers=workers, progress=progress)
    with _staging(outdir, names, overwrite=overwrite) as staging:
        write(result.realigned, staging / image_name)
        (staging / "motion.tsv").write_text(result.to_tsv())
        folder = staging / _TRANSFORMS
        folder.mkdir()
        for k, transform in enumerate(result.transforms):
            transform.save(folder / f"volume-{k:04d}.tfm")
        summary = _summary(result, series, outdir, image_name, report)
        import json

        (staging / "motion.json").write_text(json.dumps(summary, indent=2) + "\n")
        if report:
            from coregister.qc.motion_report import write_motion_report

            write_motion_report(result, staging / "report.html", series=image, command=command_line(ctx))
    if as_json:
        echo_json(summary)
    elif not quiet():
        _print(result, summary)
    if not result.passed:
        reasons = "; ".join(f"volume {k}: {'; '.join(result.results[k].quality.failures)}" for k in result.failed[:5])
        raise QualityCheckFailed(f"{len(result.failed)} of {result.n_volumes} volumes failed their quality check: "
                                 f"{reasons}{' ...' if len(result.failed) > 5 else ''} (outputs written; see motion.json)")


def _mask(path: Path, image: Any) -> Any:
    import numpy as np

    from coregister.errors import GeometryError
    from coregister.io import read

    mask = read(path)
    if mask.has_channels:
        mask = mask.channel(0)
    if mask.ndim != 3 or not mask.same_geometry(image, atol=1e-4):
        raise GeometryError(f"the mask {str(path)!r} does not lie on the series' grid ({' x '.join(map(str, image.size))}); "
                            "resample it onto one volume with `coregister apply`")
    values = np.asarray(mask.array) != 0
    if not values.any():
        raise GeometryError(f"the mask {str(path)!r} has no non-zero voxel; check the file")
    return values


@contextlib.contextmanager
def _volume_progress(ctx: click.Context) -> Iterator[Any]:
    from coregister.cli._progress import file_progress

    with file_progress(ctx, "realigning") as bar:
        if bar is None:
            yield None
        else:
            yield lambda done, total: bar("volumes", done, total)


def _summary(result: Any, series: Path, outdir: Path, image_name: str, report: bool) -> dict[str, Any]:
    outputs = [outdir / image_name, outdir / "motion.tsv", outdir / "motion.json", outdir / _TRANSFORMS]
    if report:
        outputs.append(outdir / "report.html")
    return {
        **result.to_dict(),
        "input": str(series),
        "outputs": [str(p) for p in outputs],
        "transforms": [t.homogeneous.tolist() for t in result.transforms],
        "transforms_map": "reference points -> volume points (LPS mm, ITK's convention)",
    }


def _print(result: Any, summary: dict[str, Any]) -> None:
    fd = summary["framewise_displacement_mm"]
    state = "every volume passed its quality check" if result.passed else f"{len(result.failed)} volume(s) FAILED their quality check"
    click.echo(f"realigned {result.n_volumes} volumes to {'the mean' if result.reference_volume is None else f'volume {result.reference_volume}'}"
               f" in {result.time_s:.2f} s: {state}")
    outliers = result.outliers
    rows = [("framewise displacement, mean", f"{fd['mean']:.3f} mm"), ("framewise displacement, max", f"{fd['max']:.3f} mm"),
            (f"volumes above {result.fd_threshold_mm:g} mm", f"{len(outliers)}" + (f": {', '.join(map(str, outliers[:20]))}"
                                                                                 f"{' ...' if len(outliers) > 20 else ''}"
                                                                                 if outliers else ""))]
    print_table(None, ["", ""], rows, justify=["left", "left"])
    click.echo("wrote " + ", ".join(summary["outputs"]))
