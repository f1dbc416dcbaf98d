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
    relative paths are relative to the CSV file's folder and may not climb
    out of it (``../``) unless ``allow_outside=True`` (``--allow-outside``);
    absolute paths are taken as written.
``name``
    Output sub-folder (default: ``<row number>_<moving file stem>``): one
    plain name, no ``/`` or ``..``.
``preset``, ``metric``, ``fixed_mask``, ``moving_mask``
    As for :func:`coregister.register` (empty = default).
``fixed_series``, ``moving_series``
    For a DICOM folder that holds several series: which one to read (an
    index as :func:`coregister.io.dicom.list_series` orders them, a
    SeriesInstanceUID, or a description naming one series; empty = the
    folder's only series).

A rerun into the same output folder resumes: a pair whose folder holds the
outputs of an earlier run with the same fingerprint (the inputs' contents,
the row's options, the seed; :func:`fingerprint`) is not registered again,
a pair whose inputs or options changed is redone, and a pair whose worker
died is run again by another worker (Dask reschedules it) without being
written twice: a pair's outputs appear together, ``result.json`` last, and
a worker that finds them already there with its fingerprint keeps them.

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
import hashlib
import io
import json
import logging
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from coregister.errors import ConfigError, CoregisterError, MissingDependencyError, UnreadableInputError

__all__ = ["BatchSummary", "PairJob", "PairOutcome", "PairStatus", "fingerprint", "quiet_dask_logging", "read_pairs",
           "run_batch", "run_pair"]

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
                      threads: int | None, overwrite: bool = False, provenance: dict[str, Any] | None = None) -> list[Path]:
        """Write the pair's files: ``OUTDIR/<name>/`` as ``coregister register`` writes them (a subclass may name them
        otherwise: :class:`coregister.bids.BidsJob`), appearing together (:func:`~coregister.outputs.publish_registration`,
        ``result.json`` last, ``provenance`` recorded in it); an earlier run's outputs are replaced only with ``overwrite``."""
        from coregister.outputs import publish_registration, registered_name

        folder = out_dir / self.name
        folder.parent.mkdir(parents=True, exist_ok=True)
        # the same files, names and dtypes as `coregister register`
        return publish_registration(
            folder, result, fixed, moving, image_name=registered_name(self.fixed), overwrite=overwrite,
            fix="rerun the batch with overwrite=True (command line: --overwrite) to replace them, or choose another "
            "output folder", report=report, threads=threads, provenance=provenance,
        )


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
    #: True when an earlier run's outputs (same fingerprint) were kept instead of registering again
    reused: bool = False

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
def read_pairs(
    path: str | os.PathLike[str], *, preset: str = "rigid", metric: str | None = None, allow_outside: bool = False
) -> list[PairJob]:
    """Read a pairs CSV (see the module docstring) into jobs; ``preset``/``metric`` fill empty cells.

    The file is data: its cells are paths, names and option values, never
    evaluated. Relative paths resolve against the file's folder and may not
    climb out of it unless ``allow_outside``.

    Raises
    ------
    ConfigError
        Missing ``fixed``/``moving`` columns, an unknown column, an empty
        cell in a required column, a relative path that leaves the file's
        folder, a name that is not one plain folder name, or duplicate
        names, each naming the row.
    """
    path = Path(path)
    if not path.is_file():
        raise UnreadableInputError(f"pairs file {str(path)!r} does not exist")
    base = path.parent
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise UnreadableInputError(
            f"pairs file {str(path)!r} is not UTF-8 text (byte {exc.start}: {exc.reason}); save it as a UTF-8 CSV file"
        ) from exc
    try:
        return _parse_pairs(text, path, base, preset=preset, metric=metric, allow_outside=allow_outside)
    except csv.Error as exc:
        raise ConfigError(f"pairs file {str(path)!r} is not a readable CSV file ({exc}); check its quoting") from exc


def _parse_pairs(
    text: str, path: Path, base: Path, *, preset: str, metric: str | None, allow_outside: bool
) -> list[PairJob]:
    if "\x00" in text:
        raise ConfigError(f"pairs file {str(path)!r} holds NUL characters: it is not a text (CSV) file")
    with io.StringIO(text, newline="") as handle:
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

            def resolve(cell: str, column: str, number: int = number) -> Path:
                candidate = Path(cell).expanduser()
                if candidate.is_absolute():
                    return candidate
                joined = base / candidate
                if not allow_outside and not _inside(joined, base):
                    raise ConfigError(
                        f"pairs file {str(path)!r}, row {number}: the {column!r} path {cell!r} leads out of the pairs "
                        "file's folder; give an absolute path, move the pairs file, or allow it with "
                        "allow_outside=True (command line: --allow-outside)"
                    )
                return joined

            moving = resolve(cells["moving"], "moving")
            stem = moving.name.split(".")[0] or f"pair{number}"
            name = cells.get("name") or f"{number}_{stem}"
            if name in (".", "..") or "/" in name or "\\" in name or name.startswith(".") or "\x00" in name:
                raise ConfigError(
                    f"pairs file {str(path)!r}, row {number}: name {name!r} is not a plain folder name; the outputs go "
                    "to OUTDIR/<name>: give a name without '/', '\\' or a leading '.'"
                )
            jobs.append(
                PairJob(
                    name=name,
                    fixed=resolve(cells["fixed"], "fixed"),
                    moving=moving,
                    preset=cells.get("preset") or preset,
                    metric=cells.get("metric") or metric,
                    fixed_mask=resolve(cells["fixed_mask"], "fixed_mask") if cells.get("fixed_mask") else None,
                    moving_mask=resolve(cells["moving_mask"], "moving_mask") if cells.get("moving_mask") else None,
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


def _inside(path: Path, folder: Path) -> bool:
    """Whether ``path`` (made absolute, ``..`` and links resolved) lies in ``folder``."""
    try:
        Path(os.path.realpath(path)).relative_to(os.path.realpath(folder))
    except ValueError:
        return False
    return True


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


def _digest_path(path: Path | None, digest: Any) -> None:
    """Feed the contents of a file, or of every file of a folder (a DICOM series) in name order, to ``digest``."""
    if path is None:
        digest.update(b"<none>")
        return
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    for file in files:
        digest.update(str(file.relative_to(path) if path.is_dir() else file.name).encode("utf-8", "surrogateescape"))
        with open(file, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)


def fingerprint(job: PairJob, *, report: bool = False, seed: int = 0) -> str:
    """The sha256 of what decides a pair's outputs: its inputs' contents, its options and the seed.

    A rerun keeps a pair's outputs only when its ``result.json`` records the
    same fingerprint. Thread counts are left out (the default runs are
    bit-identical on any number of threads), and so are paths: a moved but
    unchanged input does not redo a pair.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> folder = pathlib.Path(tempfile.mkdtemp())
    >>> _ = (folder / "a.png").write_bytes(b"one"); _ = (folder / "b.png").write_bytes(b"two")
    >>> job = PairJob("p", folder / "a.png", folder / "b.png")
    >>> fingerprint(job) == fingerprint(job), fingerprint(job) == fingerprint(job, seed=1)
    (True, False)
    """
    digest = hashlib.sha256()
    options = {"preset": job.preset, "metric": job.metric, "fixed_series": job.fixed_series,
               "moving_series": job.moving_series, "report": bool(report), "seed": int(seed)}
    digest.update(json.dumps(options, sort_keys=True).encode())
    for path in (job.fixed, job.moving, job.fixed_mask, job.moving_mask):
        _digest_path(path, digest)
    return digest.hexdigest()


def _earlier(folder: Path, key: str) -> PairOutcome | None:
    """What an earlier run with fingerprint ``key`` left complete in ``folder``, as an outcome; None otherwise."""
    from coregister.outputs import recorded_outputs

    names = recorded_outputs(folder)
    if not names:
        return None
    try:
        saved = json.loads((folder / "result.json").read_text())
    except (OSError, ValueError):
        return None
    batch = saved.get("batch") if isinstance(saved, dict) else None
    if not isinstance(batch, dict) or batch.get("fingerprint") != key:
        return None
    if not all((folder / name).exists() for name in names):
        return None
    status = PairStatus.DONE if saved.get("verdict") == "passed" else PairStatus.QUALITY_FAILED
    metrics = saved.get("metrics") if isinstance(saved.get("metrics"), dict) else {}
    return PairOutcome(
        folder.name, status, str(batch.get("fixed", "")), str(batch.get("moving", "")), engine=str(saved.get("engine", "")),
        time_s=float(saved.get("time_s") or 0.0), metrics={k: dict(v) for k, v in metrics.items() if isinstance(v, dict)},
        warnings=tuple(str(w) for w in saved.get("warnings") or ()), outputs=tuple(str(folder / n) for n in names),
        reused=True,
    )


def run_pair(
    job: PairJob, out_dir: str | os.PathLike[str], *, report: bool = False, seed: int = 0, threads: int | None = 1,
    overwrite: bool = False, pyramid_threads: int | None = None,
) -> PairOutcome:
    """Read, register and write one pair (runs in a Dask worker; safe to call directly).

    ``threads`` is :func:`coregister.register`'s: N threads everywhere, or
    None for its bit-identical default (the metrics on one thread), in which
    case the pyramids and the outputs' resampling use ``pyramid_threads``
    (None: all cores).

    The job checks and writes its own outputs (:meth:`PairJob.check_outputs`,
    :meth:`PairJob.write_outputs`). Errors become a :class:`PairOutcome` with
    status ``error`` and the message, so one bad pair does not stop the
    batch. A pair whose folder already holds this pair's outputs with the
    same :func:`fingerprint` is not registered again (the outcome says
    ``reused``); outputs of an earlier batch run with another fingerprint are
    replaced; a folder holding other registration outputs is refused unless
    ``overwrite``.
    """
    import coregister as cr

    start = time.perf_counter()
    folder = Path(out_dir) / job.name
    name, fixed_name, moving_name = job.name, str(job.fixed), str(job.moving)
    try:
        job.check_outputs(Path(out_dir))
        key = fingerprint(job, report=report, seed=seed)
        kept = _earlier(folder, key)
        if kept is not None:
            logger.info("pair %s: kept the outputs of an earlier run with the same inputs and options", job.name)
            return dataclasses.replace(kept, name=name, fixed=fixed_name, moving=moving_name,
                                       wall_s=time.perf_counter() - start)
        # outputs this batch wrote before for other inputs or options are the batch's to replace
        ours = _batch_record(folder) is not None
        fixed = _read_input(job.fixed, job.fixed_series, "fixed_series")
        moving = _read_input(job.moving, job.moving_series, "moving_series")
        masks = {}
        if job.fixed_mask is not None:
            masks["fixed_mask"] = cr.read(job.fixed_mask).array > 0
        if job.moving_mask is not None:
            masks["moving_mask"] = cr.read(job.moving_mask).array > 0
        from coregister.pipeline import pyramid_threads as pyramids_on

        # with threads None the engine builds its pyramids on the process default and keeps its metrics on one
        with pyramids_on(pyramid_threads if threads is None else None):
            result = cr.register(fixed, moving, preset=job.preset, metric=job.metric, seed=seed, threads=threads,
                                 **masks)
        if _earlier(folder, key) is not None:  # another worker finished this pair meanwhile: keep its outputs
            kept = _earlier(folder, key)
            assert kept is not None
            return dataclasses.replace(kept, name=name, fixed=fixed_name, moving=moving_name,
                                       wall_s=time.perf_counter() - start)
        provenance = {"batch": {"fingerprint": key, "fixed": fixed_name, "moving": moving_name}}
        outputs = job.write_outputs(Path(out_dir), result, fixed, moving, report=report,
                                    threads=threads if threads is not None else pyramid_threads,
                                    overwrite=overwrite or ours, provenance=provenance)
    except (CoregisterError, OSError, ValueError, RuntimeError, MemoryError) as exc:
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


def _batch_record(folder: Path) -> dict[str, Any] | None:
    try:
        saved = json.loads((folder / "result.json").read_text())
    except (OSError, ValueError):
        return None
    batch = saved.get("batch") if isinstance(saved, dict) else None
    return batch if isinstance(batch, dict) and isinstance(batch.get("fingerprint"), str) else None


# -------------------------------------------------------------------- batch
def _summary_files(outcomes: Sequence[PairOutcome], out_dir: Path, meta: dict[str, Any]) -> tuple[Path, Path]:
    from coregister._files import atomic_path

    metric_names = sorted({m for o in outcomes for stage in o.metrics.values() for m in stage})
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(
        ["name", "status", "engine", "time_s", "wall_s", *[f"{m}_{w}" for m in metric_names for w in ("before", "after")],
         "warnings", "error", "fixed", "moving", "reused"]
    )
    for o in outcomes:
        values = [o.metrics.get(w, {}).get(m, "") for m in metric_names for w in ("before", "after")]
        writer.writerow(
            [o.name, o.status.value, o.engine, f"{o.time_s:.4f}", f"{o.wall_s:.4f}", *values, " | ".join(o.warnings), o.error,
             o.fixed, o.moving, "yes" if o.reused else ""]
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
    overwrite: bool = False,
    allow_outside: bool = False,
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
        ITK threads inside each registration, metrics included (faster, but
        ITK's parallel sums then vary in the last bits from run to run).
        Default: the metrics on one thread, so that every pair's answer is
        bit-identical run after run, and the pyramids and resampling on CPU
        count / workers threads (at least 1: workers do not oversubscribe
        the cores).
    processes : bool
        Local cluster only: workers in separate processes (default) or threads.
    report : bool
        Also write each pair's HTML report.
    seed : int
        Sampling seed passed to every registration.
    progress : callable, optional
        ``progress(outcome, done, total)`` called as each pair finishes.
    overwrite : bool
        Replace registration outputs found in a pair's folder that this
        batch did not write (outputs an earlier batch wrote are resumed or
        redone anyway, see the module docstring).
    allow_outside : bool
        Let relative paths of a pairs file lead out of its folder.

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

    jobs = read_pairs(pairs, allow_outside=allow_outside) if isinstance(pairs, str | os.PathLike) else list(pairs)
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
        threads = threads_per_registration
        each = max(1, cores // n_workers)
        futures = client.map(run_pair, jobs, out_dir=str(out), report=report, seed=seed, threads=threads,
                             pyramid_threads=each, overwrite=overwrite, pure=False)
        index = {future.key: i for i, future in enumerate(futures)}
        outcomes: list[PairOutcome | None] = [None] * len(jobs)
        for done, future in enumerate(as_completed(futures), start=1):
            job = jobs[index[future.key]]
            try:
                outcome = future.result()
            except Exception as exc:  # the task itself died: its workers were lost too often (dask's KilledWorker)
                logger.error("pair %s was lost: %s", job.name, exc)
                outcome = PairOutcome(job.name, PairStatus.ERROR, str(job.fixed), str(job.moving),
                                      error=f"{type(exc).__name__}: {exc}")
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
    meta = {"wall_s": wall, "scheduler": address, "workers": n_workers, "threads_per_registration": threads,
            "pyramid_threads": threads or each, "seed": seed}
    csv_path, json_path = _summary_files(final, out, meta)
    return BatchSummary(final, wall, csv_path, json_path, address)
