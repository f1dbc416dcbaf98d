"""``coregister batch PAIRS.csv -o OUTDIR``, ``coregister batch --bids DATASET --template T -o DERIVATIVES``: many
registrations through Dask (local cluster or a scheduler)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from coregister.cli._options import metric_choices, preset_names, root_setting
from coregister.cli._output import echo_json, json_option, print_table, quiet

__all__ = ["batch"]


_EXAMPLE = (
    "\b\nExample (no network needed; a T1 head against two moved copies; paths in PAIRS are relative to its folder):\n"
    "  coregister data fetch nibabel_anat_func --dest data\n"
    "  printf 'fixed,moving\\nanatomical.nii,reoriented_anat_moved.nii\\nanatomical.nii,resampled_anat_moved.nii\\n' \\\n"
    "    > data/nibabel_anat_func/pairs.csv\n"
    "  coregister batch data/nibabel_anat_func/pairs.csv -o batch-out --workers 1"
)


@click.command(context_settings={"help_option_names": ["-h", "--help"]}, epilog=_EXAMPLE)
@click.argument("pairs", type=click.Path(exists=True, dir_okay=False, path_type=Path), required=False)
@click.option("-o", "--output", "output", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="Output folder: one sub-folder per pair, plus summary.csv and summary.json (with --bids: a "
                   "BIDS-derivatives dataset).")
@click.option("--bids", "bids_dataset", type=click.Path(exists=True, file_okay=False, path_type=Path), default=None,
              help="Instead of PAIRS: a BIDS dataset whose images (--suffix) are registered to --template (pybids).")
@click.option("--template", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="--bids: the template image, the fixed image of every registration.")
@click.option("--suffix", default="T1w", show_default=True, help="--bids: which images (T1w, T2w, FLAIR...).")
@click.option("--space", default=None,
              help="--bids: the space-/to- label of the outputs (default: the template's tpl- entity or its name).")
@click.option("--participant-label", "participant_label", multiple=True,
              help="--bids: only this participant (01 or sub-01; repeatable).")
@click.option("--scheduler", default=None, metavar="ADDRESS",
              help="Address of an existing dask.distributed scheduler (tcp://host:8786); default: a local cluster.")
@click.option("--workers", type=click.IntRange(min=1), default=None,
              help="Workers of the local cluster (default: the CPU count, at most one per pair).")
@click.option("--threads", type=click.IntRange(min=1), default=None,
              help="ITK threads per registration, metrics included (faster, not bit-identical). Default: metrics "
                   "on one thread, pyramids and resampling on CPU count / workers.")
@click.option("--preset", type=click.Choice(preset_names()), default="rigid", show_default=True,
              help="Preset for rows whose 'preset' cell is empty.")
@click.option("--metric", type=click.Choice(metric_choices()), default=None,
              help="Metric for rows whose 'metric' cell is empty (default: the preset's).")
@click.option("--seed", type=int, default=0, show_default=True, help="Sampling seed of every registration.")
@click.option("--report", is_flag=True, help="Also write each pair's report.html.")
@click.option("--threaded", is_flag=True, help="Local cluster with thread workers instead of processes.")
@click.option("--overwrite", is_flag=True,
              help="Replace registration outputs in a pair's folder that this batch did not write (a rerun resumes "
              "anyway: pairs done with the same inputs and options are kept, changed ones redone).")
@click.option("--allow-outside", is_flag=True,
              help="Let relative paths in PAIRS lead out of its folder (../); absolute paths are always taken as written.")
@json_option
@click.pass_context
def batch(
    ctx: click.Context,
    pairs: Path | None,
    output: Path,
    bids_dataset: Path | None,
    template: Path | None,
    suffix: str,
    space: str | None,
    participant_label: tuple[str, ...],
    scheduler: str | None,
    workers: int | None,
    threads: int | None,
    preset: str,
    metric: str | None,
    seed: int,
    report: bool,
    threaded: bool,
    as_json: bool,
    overwrite: bool = False,
    allow_outside: bool = False,
) -> None:
    """Register every pair listed in PAIRS (CSV: fixed,moving[,name,preset,metric,fixed_mask,moving_mask,fixed_series,moving_series]).

    Each pair runs as one Dask task that reads its inputs and writes
    OUTPUT/<name>/registered.<ext>, transform.tfm and result.json itself;
    OUTPUT/summary.csv and summary.json list every pair's status, engine,
    time and metrics. Relative paths in PAIRS are relative to its folder.
    A rerun into the same OUTPUT resumes: pairs already done with the same
    inputs and options are kept, changed ones are redone.

    With --bids DATASET --template T instead of PAIRS, pybids finds the
    DATASET's *_<suffix> images and OUTPUT becomes a BIDS-derivatives
    dataset: sub-XX/anat/sub-XX_space-<space>_<suffix>.nii.gz with its JSON
    sidecar, sub-XX_from-<suffix>_to-<space>_mode-image_xfm.h5 (and the
    inverse), dataset_description.json.

    Exit code 1 when a pair could not be registered, 3 when one failed its
    quality check (after all pairs ran and the summary was written).

    """
    from coregister._files import check_writable
    from coregister.batch import PairStatus, quiet_dask_logging, read_pairs, run_batch
    from coregister.cli import QualityCheckFailed
    from coregister.cli._progress import file_progress

    if (pairs is None) == (bids_dataset is None):
        raise click.UsageError("give either PAIRS (a CSV file) or --bids DATASET")
    if bids_dataset is None and (template is not None or space is not None or participant_label):
        raise click.UsageError("--template, --space and --participant-label go with --bids DATASET")
    if bids_dataset is not None and template is None:
        raise click.UsageError("--bids needs --template (the image every subject is registered to)")
    check_writable(output, folder=True, parents=True, fix="choose another -o folder")

    jobs = None
    if pairs is not None:
        jobs = read_pairs(pairs, preset=preset, metric=metric, allow_outside=allow_outside)  # before dask: fail fast
    if (root_setting("verbose", ctx) or 0) < 2:  # dask's scheduler and nanny log every start and stop at INFO; show them with -vv only
        quiet_dask_logging()
    options: dict[str, Any] = dict(scheduler=scheduler, workers=workers, threads_per_registration=threads,
                                   processes=not threaded, report=report, seed=seed, overwrite=overwrite)
    if bids_dataset is not None:
        from coregister.bids import find_jobs, run_bids

        assert template is not None
        count = len(find_jobs(bids_dataset, template, suffix=suffix, space=space, participant_label=participant_label,
                              preset=preset, metric=metric))
        with file_progress(ctx, f"{count} images") as bar:
            summary = run_bids(
                bids_dataset, template, output, suffix=suffix, space=space, participant_label=participant_label,
                preset=preset, metric=metric, **options,
                progress=None if bar is None else (lambda outcome, done, total: bar(outcome.name, done, total)),
            )
        jobs_count = len(summary.outcomes)
    else:
        assert jobs is not None
        with file_progress(ctx, f"{len(jobs)} pairs") as bar:
            summary = run_batch(
                jobs, output, **options,
                progress=None if bar is None else (lambda outcome, done, total: bar(outcome.name, done, total)),
            )
        jobs_count = len(jobs)
    if as_json:
        echo_json(summary.to_dict())
    elif not quiet():
        rows = []
        for o in summary.outcomes:
            before, after = o.metrics.get("before", {}), o.metrics.get("after", {})
            key = next((k for k in ("ncc", "mi") if k in after), None)
            change = f"{key} {before.get(key, float('nan')):.3f}→{after[key]:.3f}" if key else "-"
            status = o.status.value + (" (kept)" if o.reused else "")
            rows.append((o.name, status, o.engine or "-", f"{o.time_s:.2f}", change))
        print_table(
            f"{len(rows)} pairs in {summary.wall_s:.1f} s ({summary.scheduler}); summary: {summary.summary_csv}",
            ("pair", "status", "engine", "time (s)", "before → after"),
            rows,
            justify=("left", "left", "left", "right", "left"),
        )
    for o in summary.outcomes:  # errors: shown under -q and --json too
        if o.error:
            click.echo(f"{o.name}: {o.error}", err=True)
    counts = summary.counts
    if counts[PairStatus.ERROR.value]:
        raise click.ClickException(f"{counts[PairStatus.ERROR.value]} of {jobs_count} pairs could not be registered; see {summary.summary_csv}")
    if counts[PairStatus.QUALITY_FAILED.value]:
        raise QualityCheckFailed(f"{counts[PairStatus.QUALITY_FAILED.value]} of {jobs_count} pairs failed the quality check; see {summary.summary_csv}")
