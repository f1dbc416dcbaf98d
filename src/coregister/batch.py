"""Many registrations through Dask: a cohort to a template, a time series to one date.

A pairs file (CSV) lists one registration per row. Each row becomes one
Dask task that reads its own inputs, registers, and writes its own outputs
(``OUTDIR/<name>/registered.<ext>``, ``transform.tfm``, ``result.json``, and
``report.html`` when asked); only the small :class:`PairOutcome` travels
back through the scheduler. By default a :class:`~dask.distributed.LocalCluster`
is started on this machine; give ``scheduler="tcp://host:8786"`` to use an
existing ``dask.distributed`` cluster (its workers must see the same paths).

The pairs file: a header row, then one row per pair. Columns:

``fixed``, ``moving`` (required)
    Image paths (any format :func:`coregister.read` reads, or DICOM folders);
    relative paths are relative to the CSV file's folder.
``name``
    Output sub-folder (default: ``<row number>_<moving file stem>``).
``preset``, ``metric``, ``fixed_mask``, ``moving_mask``
    As for :func:`coregister.register` (empty = default).
``fixed_series``, ``moving_series``
    For a DICOM folder that holds several series: which one to read (an
    index as :func:`coregister.io.dicom.list_series` orders them, a
    SeriesInstanceUID, or a description naming one series; empty = the
    folder's only series).

Examples
--------
>>> import tempfile, pathlib
>>> folder = pathlib.Path(tempfile.mkdtemp())
>>> _ = (folder / "pairs.csv").write_text("fixed,moving,preset\\nt1.nii.gz,flair.nii.gz,rigid\\n")
>>> jobs = read_pairs(folder / "pairs.csv")
>>> jobs[0].name, jobs[0].moving == folder / "flair.nii.gz", jobs[0].preset
('1_flair', True, 'rigid')
"""

from __future__ import annotations

import csv
import dataclasses
import enum
import io
import json
import logging
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from coregister.errors import ConfigError, CoregisterError, MissingDependencyError, UnreadableInputError

__all__ = ["BatchSummary", "PairJob", "PairOutcome", "PairStatus", "quiet_dask_logging", "read_pairs", "run_batch", "run_pair"]

logger = logging.getLogger(__name__)

_COLUMNS = ("name", "fixed", "moving", "preset", "metric", "fixed_mask", "moving_mask", "fixed_series", "moving_series")


class PairStatus(str, enum.Enum):
    """How one pair ended."""

    DONE = "done"  #: registered, quality check passed
    QUALITY_FAILED = "quality-failed"  #: registered and written, but the quality check failed
    ERROR = "error"  #: no result (unreadable input, mismatched dimensions, ...)


@dataclasses.dataclass(frozen=True)
class PairJob:
    """One registration of a batch (paths only: the worker reads the images itself)."""

    name: str
    fixed: Path
    moving: Path
    preset: str = "rigid"
    metric: str | None = None
    fixed_mask: Path | None = None
    moving_mask: Path | None = None
    #: which series of a DICOM folder holding several: index, SeriesInstanceUID or description (None: the only one)
    fixed_series: int | str | None = None
    moving_series: int | str | None = None

    def check_outputs(self, out_dir: Path) -> None:
        """Refuse, before any work, a folder where an output would replace an input (``OUTDIR/<name>/``)."""
        from coregister.outputs import refuse_overwriting_inputs, registered_name

        refuse_overwriting_inputs(
            out_dir / self.name, registered_name(self.fixed), [self.fixed, self.moving, self.fixed_mask, self.moving_mask],
            fix="give the pair another name or choose another output folder",
        )

    def write_outputs(self, out_dir: Path, result: Any, fixed: Any, moving: Any, *, report: bool,
                      threads: int | None) -> list[Path]:
        """Write the pair's files: ``OUTDIR/<name>/`` as ``coregister register`` writes them (a subclass may name them
        otherwise: :class:`coregister.bids.BidsJob`)."""
        from coregister.outputs import registered_name, write_registration

        folder = out_dir / self.name
        folder.mkdir(parents=True, exist_ok=True)
        # the same files, names and dtypes as `coregister register`
        return write_registration(folder, result, fixed, moving, image_name=registered_name(self.fixed), report=report,
                                  threads=threads)


@dataclasses.dataclass(frozen=True)
class PairOutcome:
    """What a worker sends back: small, JSON-ready."""

    name: str
    status: PairStatus
    fixed: str
    moving: str
    engine: str = ""
    time_s: float = 0.0
    wall_s: float = 0.0
    metrics: dict[str, dict[str, float]] = dataclasses.field(default_factory=dict)
    warnings: tuple[str, ...] = ()
    error: str = ""
    outputs: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["status"] = self.status.value
        out["warnings"] = list(self.warnings)
        out["outputs"] = list(self.outputs)
        return out


@dataclasses.dataclass(frozen=True)
class BatchSummary:
    """All outcomes of a batch, in the pairs file's order, and where the summary files are."""

    outcomes: tuple[PairOutcome, ...]
    wall_s: float
    summary_csv: Path
    summary_json: Path
    scheduler: str

    @property
    def counts(self) -> dict[str, int]:
        """Number of pairs per :class:`PairStatus` value."""
        return {status.value: sum(o.status is status for o in self.outcomes) for status in PairStatus}

    def to_dict(self) -> dict[str, Any]:
        return {
            "wall_s": self.wall_s,
            "scheduler": self.scheduler,
            "counts": self.counts,
            "summary_csv": str(self.summary_csv),
            "summary_json": str(self.summary_json),
            "pairs": [o.to_dict() for o in self.outcomes],
        }


def _distributed() -> Any:
    """``dask.distributed``, or a :class:`~coregister.errors.MissingDependencyError` that says how to install it."""
    try:
        import dask.distributed
    except ImportError as exc:
        raise MissingDependencyError(
            f"batch registration runs on dask.distributed, which is not installed ({exc}); "
            "install it with: pip install 'coregister[dist]'"
        ) from exc
    return dask.distributed


def quiet_dask_logging(level: int = logging.WARNING) -> None:
    """Raise dask's loggers to ``level``: its scheduler and workers log every start and stop at INFO.

    For scripts and the command line (the library itself never configures
    logging). Dask sets its loggers' levels when it is imported, so this
    imports it first.
    """
    _distributed()  # creates the loggers whose levels are set below

    for name in [n for n in logging.root.manager.loggerDict if n.split(".")[0] in ("distributed", "dask")]:
        logger_ = logging.getLogger(name)
        if logger_.level < level:
            logger_.setLevel(level)


# ------------------------------------------------------------------ reading
def read_pairs(path: str | os.PathLike[str], *, preset: str = "rigid", metric: str | None = None) -> list[PairJob]:
    """Read a pairs CSV (see the module docstring) into jobs; ``preset``/``metric`` fill empty cells.

    Raises
    ------
    ConfigError
        Missing ``fixed``/``moving`` columns, an unknown column, an empty
        cell in a required column, or duplicate names, each naming the row.
    """
    path = Path(path)
    if not path.is_file():
        raise UnreadableInputError(f"pairs file {str(path)!r} does not exist")
    base = path.parent
    with path.open(newline="", encoding="utf-8-sig") as handle:
        reader = csv.DictReader(handle)
        header = [h.strip() for h in (reader.fieldnames or [])]
        missing = [c for c in ("fixed", "moving") if c not in header]
        if missing:
            raise ConfigError(f"pairs file {str(path)!r} lacks column(s) {missing}; its header is {header}")
        unknown = [c for c in header if c not in _COLUMNS]
        if unknown:
            raise ConfigError(f"pairs file {str(path)!r} has unknown column(s) {unknown}; allowed: {', '.join(_COLUMNS)}")
        jobs: list[PairJob] = []
        for number, row in enumerate(reader, start=1):
            cells = {k.strip(): (v or "").strip() for k, v in row.items() if k is not None}
            if not any(cells.values()):
                continue
            for column in ("fixed", "moving"):
                if not cells.get(column):
                    raise ConfigError(f"pairs file {str(path)!r}, row {number}: the {column!r} cell is empty")

            def resolve(cell: str) -> Path:
                candidate = Path(cell).expanduser()
                return candidate if candidate.is_absolute() else base / candidate

            moving = resolve(cells["moving"])
            stem = moving.name.split(".")[0] or f"pair{number}"
            jobs.append(
                PairJob(
                    name=cells.get("name") or f"{number}_{stem}",
                    fixed=resolve(cells["fixed"]),
                    moving=moving,
                    preset=cells.get("preset") or preset,
                    metric=cells.get("metric") or metric,
                    fixed_mask=resolve(cells["fixed_mask"]) if cells.get("fixed_mask") else None,
                    moving_mask=resolve(cells["moving_mask"]) if cells.get("moving_mask") else None,
                    fixed_series=_series_cell(cells.get("fixed_series", "")),
                    moving_series=_series_cell(cells.get("moving_series", "")),
                )
            )
    names = [j.name for j in jobs]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ConfigError(f"pairs file {str(path)!r}: names {duplicates} appear more than once; output folders must differ")
    if not jobs:
        raise ConfigError(f"pairs file {str(path)!r} lists no pair")
    return jobs


def _series_cell(cell: str) -> int | str | None:
    """A ``*_series`` cell: an index (digits), a UID or description, or None when empty."""
    if not cell:
        return None
    return int(cell) if cell.lstrip("-").isdigit() else cell


# ----------------------------------------------------------------- one pair
def _read_input(path: Path, series: int | str | None, column: str) -> Any:
    """Read one input of a pair; ``column`` picks its DICOM series and is what the reader's hint names."""
    import coregister as cr
    from coregister.errors import AmbiguousSeriesError
    from coregister.io import detect_format

    if series is None:
        try:
            return cr.read(path)
        except AmbiguousSeriesError as exc:  # the reader's hint names the command line's option: name the column
            import re

            hint = f"(pairs file: the {column!r} column"
            named, count = re.subn(r"\(command line: [^;)]*", hint, str(exc), count=1)
            raise AmbiguousSeriesError(named if count else f"{exc} {hint})") from exc
    if detect_format(path) != "dicom":
        raise ConfigError(f"the {column!r} cell ({series!r}) applies to a DICOM folder; {str(path)!r} is not one: empty it")
    return cr.read(path, series=series)


def run_pair(job: PairJob, out_dir: str | os.PathLike[str], *, report: bool = False, seed: int = 0, threads: int | None = 1) -> PairOutcome:
    """Read, register and write one pair (runs in a Dask worker; safe to call directly).

    The job checks and writes its own outputs (:meth:`PairJob.check_outputs`,
    :meth:`PairJob.write_outputs`). Errors become a :class:`PairOutcome` with status ``error`` and the
    message, so one bad pair does not stop the batch.
    """
    import coregister as cr

    start = time.perf_counter()
    name, fixed_name, moving_name = job.name, str(job.fixed), str(job.moving)
    try:
        job.check_outputs(Path(out_dir))
        fixed = _read_input(job.fixed, job.fixed_series, "fixed_series")
        moving = _read_input(job.moving, job.moving_series, "moving_series")
        masks = {}
        if job.fixed_mask is not None:
            masks["fixed_mask"] = cr.read(job.fixed_mask).array > 0
        if job.moving_mask is not None:
            masks["moving_mask"] = cr.read(job.moving_mask).array > 0
        result = cr.register(fixed, moving, preset=job.preset, metric=job.metric, seed=seed, threads=threads, **masks)
        outputs = job.write_outputs(Path(out_dir), result, fixed, moving, report=report, threads=threads)
    except (CoregisterError, OSError, ValueError, RuntimeError) as exc:
        logger.error("pair %s failed: %s", job.name, exc)
        return PairOutcome(
            name, PairStatus.ERROR, fixed_name, moving_name, error=f"{type(exc).__name__}: {exc}",
            wall_s=time.perf_counter() - start,
        )
    return PairOutcome(
        name,
        PairStatus.DONE if result.passed else PairStatus.QUALITY_FAILED,
        fixed_name,
        moving_name,
        engine=result.engine,
        time_s=result.time_s,
        wall_s=time.perf_counter() - start,
        metrics={k: dict(v) for k, v in result.metrics.items()},
        warnings=tuple(result.warnings),
        outputs=tuple(str(p) for p in outputs),
    )


# -------------------------------------------------------------------- batch
def _summary_files(outcomes: Sequence[PairOutcome], out_dir: Path, meta: dict[str, Any]) -> tuple[Path, Path]:
    from coregister._files import atomic_path

    metric_names = sorted({m for o in outcomes for stage in o.metrics.values() for m in stage})
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(
        ["name", "status", "engine", "time_s", "wall_s", *[f"{m}_{w}" for m in metric_names for w in ("before", "after")],
         "warnings", "error", "fixed", "moving"]
    )
    for o in outcomes:
        values = [o.metrics.get(w, {}).get(m, "") for m in metric_names for w in ("before", "after")]
        writer.writerow(
            [o.name, o.status.value, o.engine, f"{o.time_s:.4f}", f"{o.wall_s:.4f}", *values, " | ".join(o.warnings), o.error,
             o.fixed, o.moving]
        )
    csv_path, json_path = out_dir / "summary.csv", out_dir / "summary.json"
    with atomic_path(csv_path) as tmp:
        tmp.write_text(buffer.getvalue(), encoding="utf-8")
    with atomic_path(json_path) as tmp:
        tmp.write_text(json.dumps({**meta, "pairs": [o.to_dict() for o in outcomes]}, indent=2), encoding="utf-8")
    return csv_path, json_path


def run_batch(
    pairs: Sequence[PairJob] | str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    *,
    scheduler: str | None = None,
    workers: int | None = None,
    threads_per_registration: int | None = None,
    processes: bool = True,
    report: bool = False,
    seed: int = 0,
    progress: Callable[[PairOutcome, int, int], None] | None = None,
) -> BatchSummary:
    """Register every pair through Dask and write ``summary.csv`` and ``summary.json`` into ``out_dir``.

    Parameters
    ----------
    pairs : sequence of PairJob, or the path of a pairs CSV
    out_dir : path
        Created if needed; one sub-folder per pair.
    scheduler : str, optional
        Address of an existing ``dask.distributed`` scheduler
        (``tcp://host:8786``); default: a local cluster on this machine.
    workers : int, optional
        Local cluster only: number of workers (default: the CPU count, at most the number of pairs).
    threads_per_registration : int, optional
        ITK threads inside each registration (default: CPU count / workers,
        at least 1, so that workers do not oversubscribe the cores).
    processes : bool
        Local cluster only: workers in separate processes (default) or threads.
    report : bool
        Also write each pair's HTML report.
    seed : int
        Sampling seed passed to every registration.
    progress : callable, optional
        ``progress(outcome, done, total)`` called as each pair finishes.

    Returns
    -------
    BatchSummary

    Raises
    ------
    MissingDependencyError
        ``dask.distributed`` is not installed (``pip install 'coregister[dist]'``).
    """
    distributed = _distributed()
    Client, LocalCluster, as_completed = distributed.Client, distributed.LocalCluster, distributed.as_completed

    jobs = read_pairs(pairs) if isinstance(pairs, str | os.PathLike) else list(pairs)
    if not jobs:
        raise ConfigError("no pair to register")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    cores = os.cpu_count() or 1
    start = time.perf_counter()
    cluster = None
    if scheduler is None:
        n_workers = max(1, min(workers or cores, len(jobs)))
        cluster = LocalCluster(
            n_workers=n_workers, threads_per_worker=1, processes=processes, dashboard_address=":0",
            silence_logs=logging.ERROR,
        )
        client = Client(cluster)
    else:
        if workers is not None:
            raise ConfigError("--workers sets the size of a local cluster; with --scheduler the cluster's own workers are used")
        n_workers = 0
        client = Client(scheduler)
    try:
        n_workers = n_workers or max(1, len(client.scheduler_info().get("workers", {})))
        threads = threads_per_registration or max(1, cores // n_workers)
        futures = client.map(run_pair, jobs, out_dir=str(out), report=report, seed=seed, threads=threads, pure=False)
        index = {future.key: i for i, future in enumerate(futures)}
        outcomes: list[PairOutcome | None] = [None] * len(jobs)
        for done, future in enumerate(as_completed(futures), start=1):
            outcome = future.result()
            outcomes[index[future.key]] = outcome
            if progress is not None:
                progress(outcome, done, len(jobs))
        address = scheduler or "local"
    finally:
        client.close()
        if cluster is not None:
            cluster.close()
    wall = time.perf_counter() - start
    final = tuple(o for o in outcomes if o is not None)
    meta = {"wall_s": wall, "scheduler": address, "workers": n_workers, "threads_per_registration": threads, "seed": seed}
    csv_path, json_path = _summary_files(final, out, meta)
    return BatchSummary(final, wall, csv_path, json_path, address)
