"""Batches that survive: a rerun resumes, a lost worker loses no pair and writes none twice, a bad pair is recorded.

Small 2D pairs (brainweb slices) keep these fast. The worker test starts a
real ``dask scheduler`` and two ``dask worker`` processes on loopback,
kills one with SIGKILL once the batch is under way, and watches every
pair's ``result.json`` from the moment it appears: the file it saw first is
the one at the end (same inode, same bytes), so no pair was written twice.
"""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

import coregister as cr
from coregister.batch import PairJob, PairStatus, run_batch

pytest.importorskip("dask.distributed")

FIXED = "medical/itk_brainweb_2d/BrainProtonDensitySliceBorder20.png"
MOVINGS = ("BrainProtonDensitySliceShifted13x17y.png", "BrainProtonDensitySliceR10X13Y17.png",
           "BrainProtonDensitySliceRotated10.png")
ENV = dict(os.environ, PYTHONPATH=os.pathsep.join([str(Path(cr.__file__).resolve().parents[1]),
                                                   os.environ.get("PYTHONPATH", "")]))


def _inputs(data, folder: Path) -> tuple[Path, list[Path]]:
    """Copies of the brainweb slices (the resume test edits one)."""
    folder.mkdir()
    fixed = folder / "fixed.png"
    fixed.write_bytes(data(FIXED).read_bytes())
    movings = []
    for name in MOVINGS:
        target = folder / name
        target.write_bytes((data(FIXED).parent / name).read_bytes())
        movings.append(target)
    return fixed, movings


def _stamp(path: Path) -> tuple[int, int, bytes]:
    info = os.stat(path)
    return info.st_ino, info.st_mtime_ns, path.read_bytes()


def test_a_rerun_keeps_finished_pairs_redoes_changed_ones_and_records_failures(data, tmp_path: Path) -> None:
    fixed, movings = _inputs(data, tmp_path / "in")
    jobs = [PairJob("shift", fixed, movings[0], preset="translation"),
            PairJob("turn", fixed, movings[2], preset="rigid"),
            PairJob("broken", fixed, tmp_path / "in" / "missing.png", preset="translation")]
    out = tmp_path / "out"
    first = run_batch(jobs, out, workers=1, processes=False)
    assert [o.status for o in first.outcomes] == [PairStatus.DONE, PairStatus.DONE, PairStatus.ERROR]
    assert "missing.png" in first.outcomes[2].error and not any(o.reused for o in first.outcomes)
    stamps = {name: _stamp(out / name / "result.json") for name in ("shift", "turn")}
    saved = json.loads((out / "shift" / "result.json").read_text())
    assert len(saved["batch"]["fingerprint"]) == 64 and saved["outputs"][-1] == "result.json"

    second = run_batch(jobs, out, workers=1, processes=False)
    assert [(o.status, o.reused) for o in second.outcomes] == [
        (PairStatus.DONE, True), (PairStatus.DONE, True), (PairStatus.ERROR, False)]
    assert {name: _stamp(out / name / "result.json") for name in stamps} == stamps
    assert second.outcomes[0].metrics == first.outcomes[0].metrics  # the kept pair reports what it found

    movings[2].write_bytes(movings[1].read_bytes())  # the "turn" pair's moving image changed
    third = run_batch(jobs, out, workers=1, processes=False)
    assert [o.reused for o in third.outcomes] == [True, False, False]
    assert _stamp(out / "shift" / "result.json") == stamps["shift"]
    assert _stamp(out / "turn" / "result.json") != stamps["turn"]
    summary = json.loads((out / "summary.json").read_text())
    assert [p["reused"] for p in summary["pairs"]] == [True, False, False]

    stamps = {name: _stamp(out / name / "result.json") for name in ("shift", "turn")}
    changed = [dataclasses.replace(jobs[0], preset="rigid"), *jobs[1:]]  # same files, another configuration
    fourth = run_batch(changed, out, workers=1, processes=False)
    assert [(o.status, o.reused) for o in fourth.outcomes] == [
        (PairStatus.DONE, False), (PairStatus.DONE, True), (PairStatus.ERROR, False)]
    assert _stamp(out / "shift" / "result.json") != stamps["shift"]
    assert _stamp(out / "turn" / "result.json") == stamps["turn"]
    assert json.loads((out / "shift" / "result.json").read_text())["transform"]["type"] == "Rigid"


def test_a_folder_of_outputs_the_batch_did_not_write_is_refused_unless_overwrite(data, tmp_path: Path) -> None:
    fixed, movings = _inputs(data, tmp_path / "in")
    job = PairJob("shift", fixed, movings[0], preset="translation")
    (tmp_path / "out" / "shift").mkdir(parents=True)
    (tmp_path / "out" / "shift" / "registered.png").write_bytes(b"someone else's")
    refused = run_batch([job], tmp_path / "out", workers=1, processes=False)
    assert refused.outcomes[0].status is PairStatus.ERROR and "overwrite=True" in refused.outcomes[0].error
    assert (tmp_path / "out" / "shift" / "registered.png").read_bytes() == b"someone else's"
    done = run_batch([job], tmp_path / "out", workers=1, processes=False, overwrite=True)
    assert done.outcomes[0].status is PairStatus.DONE


# ------------------------------------------------------------------ a worker lost mid-run
def _start(module: str, *args: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-m", module, *args], env=ENV, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)


def _wait_for(predicate, seconds: float, what: str) -> None:  # type: ignore[no-untyped-def]
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def test_a_killed_worker_loses_no_pair_and_writes_none_twice(data, tmp_path: Path) -> None:
    from dask.distributed import Client

    fixed, movings = _inputs(data, tmp_path / "in")
    jobs = [PairJob(f"pair{i}", fixed, movings[i % len(movings)], preset="affine") for i in range(6)]
    out = tmp_path / "out"
    scheduler_file = tmp_path / "scheduler.json"
    processes = [_start("distributed.cli.dask_scheduler", "--host", "127.0.0.1", "--port", "0", "--no-dashboard",
                        "--scheduler-file", str(scheduler_file))]
    try:
        _wait_for(scheduler_file.exists, 120, "the scheduler")
        address = json.loads(scheduler_file.read_text())["address"]
        workers = [_start("distributed.cli.dask_worker", address, "--nthreads", "1", "--no-nanny", "--host", "127.0.0.1",
                          "--no-dashboard", "--name", f"w{i}") for i in range(2)]
        processes += workers
        with Client(address, timeout=60) as client:
            _wait_for(lambda: len(client.scheduler_info()["workers"]) == 2, 120, "two workers")

        first_seen: dict[str, tuple[int, int, bytes]] = {}
        stop = threading.Event()

        def watch() -> None:
            while True:  # one last pass after the batch returns: the last pairs land just before it does
                finished = stop.is_set()
                for job in jobs:
                    path = out / job.name / "result.json"
                    if job.name not in first_seen and path.exists():
                        first_seen[job.name] = _stamp(path)
                if finished:
                    return
                time.sleep(0.02)

        result: dict[str, object] = {}
        batch = threading.Thread(target=lambda: result.setdefault("summary", run_batch(jobs, out, scheduler=address)))
        watcher = threading.Thread(target=watch, daemon=True)
        watcher.start()
        batch.start()
        _wait_for(lambda: bool(first_seen), 240, "the first finished pair")
        workers[0].send_signal(signal.SIGKILL)  # busy with a pair of its own by now (two workers, six pairs)
        workers[0].wait(timeout=60)
        batch.join(timeout=600)
        stop.set()
        watcher.join(timeout=10)
    finally:
        for process in processes:
            process.kill()
            process.wait(timeout=60)

    summary = result["summary"]
    assert [o.status for o in summary.outcomes] == [PairStatus.DONE] * len(jobs)  # type: ignore[attr-defined]
    for job in jobs:
        assert sorted(p.name for p in (out / job.name).iterdir()) == ["registered.png", "result.json", "transform.tfm"]
        assert _stamp(out / job.name / "result.json") == first_seen[job.name], job.name  # written once
    assert not [p for p in out.iterdir() if p.name.endswith(".part")]
