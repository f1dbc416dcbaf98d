"""Runs stopped by a signal leave nothing half-written, say so in one line, and a later run cleans up after a kill.

Each test starts ``coregister register`` in its own process, waits for a
marker on stderr (the engine has started; the registered image is written
and the report is being drawn) and sends SIGINT, SIGTERM or SIGKILL:

* SIGINT/SIGTERM: exit 130/143, one line (``coregister: interrupted`` /
  ``terminated``) besides the log lines asked for with ``-v``, no traceback;
  the output folder holds the complete outputs or nothing, and no
  temporary ``.part`` folder is left;
* SIGKILL: the output folder holds the complete outputs or nothing; a
  ``.part`` folder may be left, and the next run in the same place removes
  it.

The SimpleITK engine stops its optimiser at the iteration the signal
comes in: its iteration observer calls ``StopRegistration`` or, for the
optimisers that cannot be asked (LBFGSB, the B-spline stage's), ends
``Execute`` itself. That is asserted on what the engine logs, not on the
time: the level at which the signal was seen says it ran no further
iteration, and no later level starts. A progress callback that fails stops
the optimiser the same way.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

import coregister
import coregister as cr
from coregister._files import PART_MARKER, part_folder, sweep_parts

ANATOMICAL = "medical/nibabel_anat_func/anatomical.nii"
MOVED = "medical/nibabel_anat_func/reoriented_anat_moved.nii"
FIXED_2D = "medical/itk_brainweb_2d/BrainProtonDensitySliceBorder20.png"
MOVING_2D = "medical/itk_brainweb_2d/BrainProtonDensitySliceShifted13x17y.png"

OPTIMISING = r"coregister\.pipeline\.register: registering"
WRITING = r"coregister\.io\.plain: wrote .*registered\.png"
OUTPUTS_2D = {"registered.png", "transform.tfm", "result.json", "report.html"}
OUTPUTS_3D = {"registered.nii", "transform.tfm", "result.json"}


#: the processes import the coregister these tests import (a relative PYTHONPATH would not survive cwd=tmp_path)
ENV = dict(os.environ, COLUMNS="120", PYTHONPATH=os.pathsep.join(
    [str(Path(coregister.__file__).resolve().parents[1]), os.environ.get("PYTHONPATH", "")]))


def _start(args: list[str], cwd: Path) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "coregister", *args], cwd=cwd, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True, env=ENV)


def run_and_signal(
    args: list[str], cwd: Path, marker: str, signum: int, delay_s: float = 0.0, wait_s: float = 240
) -> tuple[int, list[str], float]:
    """Run ``coregister ARGS``, send ``signum`` ``delay_s`` after ``marker`` shows on stderr; exit code, stderr, seconds.

    The process must end within ``wait_s`` of the signal.
    """
    proc = _start(args, cwd)
    lines: list[str] = []
    seen = threading.Event()

    def pump() -> None:
        assert proc.stderr is not None
        for line in proc.stderr:
            lines.append(line.rstrip("\n"))
            if re.search(marker, line):
                seen.set()

    reader = threading.Thread(target=pump, daemon=True)
    reader.start()
    assert seen.wait(240), f"the marker {marker!r} never showed:\n" + "\n".join(lines[-20:])
    time.sleep(delay_s)
    sent = time.perf_counter()
    proc.send_signal(signum)
    try:
        code = proc.wait(timeout=wait_s)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=60)
    took = time.perf_counter() - sent
    reader.join(timeout=10)
    assert proc.stderr is not None
    proc.stderr.close()
    return code, lines, took


def _own_lines(lines: list[str]) -> list[str]:
    """stderr without the log lines asked for with -v/-vv."""
    return [line for line in lines if line.strip() and not re.match(r"(DEBUG|INFO|WARNING) \S+: ", line)]


def _parts(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".part"))


def _complete_or_absent(outdir: Path, expected: set[str]) -> bool:
    if not outdir.exists():
        return True
    return {p.name for p in outdir.iterdir()} in (set(), expected)


@pytest.mark.parametrize("signum, code, word", [(signal.SIGINT, 130, "interrupted"), (signal.SIGTERM, 143, "terminated")])
def test_a_signal_during_optimisation_stops_the_engine_and_leaves_nothing(
    data, tmp_path: Path, signum: int, code: int, word: str
) -> None:
    args = ["register", str(data(ANATOMICAL)), str(data(MOVED)), "-o", str(tmp_path / "out"), "--preset", "bspline",
            "-vv"]
    # inside the B-spline level (0.7 s of a 1.2 s run here): a fixed delay after the run's start came after its end
    # once the run got faster
    returned, lines, took = run_and_signal(args, tmp_path, OPTIMISING_BSPLINE, signum, delay_s=0.2)
    print(f"{signal.Signals(signum).name}: exit {returned} {took:.2f} s after the signal")
    assert returned == code, lines[-10:]
    assert _own_lines(lines) == [f"coregister: {word}"], lines
    assert not (tmp_path / "out").exists() and _parts(tmp_path) == []


#: the engine's debug line when a level's optimiser has made its first iteration (logged from the observer)
OPTIMISING_BSPLINE = r"coregister\.engines\.sitk\.engine: bspline level 0 .*: optimising, (\d+) iterations at most"
#: its info line when a signal ended a level
STOPPED = r"coregister\.engines\.sitk\.engine: (\w+) level (\d+) .*: interrupted at iteration (\d+) of (\d+), stopped (\d+) "
#: the lines that say a level started or finished
LEVEL = r"coregister\.engines\.sitk\.engine: \w+ level \d+ .*: (optimising|\d+ points)"


def test_ctrl_c_ends_the_optimisation_at_the_iteration_it_came_in_and_no_later_level_runs(data, tmp_path: Path) -> None:
    """LBFGSB (the B-spline stage) cannot be asked to stop: before its observer ended ``Execute`` itself, a Ctrl-C
    at its first iteration let it run on to convergence (124 iterations here; a capped fine level, minutes)."""
    cap = 100_000  # far more than the level needs: only the signal can end it early
    args = ["register", str(data(ANATOMICAL)), str(data(MOVED)), "-o", str(tmp_path / "out"), "--preset", "bspline",
            "--iterations", str(cap), "-vv"]
    returned, lines, took = run_and_signal(args, tmp_path, OPTIMISING_BSPLINE, signal.SIGINT, wait_s=120)
    print(f"exit {returned} {took:.2f} s after the signal")
    assert returned == 130, lines[-10:]
    assert _own_lines(lines) == ["coregister: interrupted"], lines
    started = next(k for k, line in enumerate(lines) if re.search(OPTIMISING_BSPLINE, line))
    stopped = [(k, match.groups()) for k, line in enumerate(lines) if (match := re.search(STOPPED, line))]
    assert len(stopped) == 1, lines[started:]
    at, (stage, level, iteration, of, later) = stopped[0]
    # the observer saw the signal in the level that was running, which ran no iteration after it
    assert (stage, level, int(of), int(later)) == ("bspline", "0", cap, 0), lines[at]
    assert int(iteration) < cap
    assert not [line for line in lines[started + 1 :] if re.search(LEVEL, line)]  # the level did not finish, none began
    assert not (tmp_path / "out").exists() and _parts(tmp_path) == []


def test_a_failing_progress_callback_ends_an_lbfgsb_level_at_once(data, monkeypatch: pytest.MonkeyPatch) -> None:
    import SimpleITK as sitk

    fixed, moving = cr.read(data(ANATOMICAL)), cr.read(data(MOVED))
    ran: list[tuple[str, int]] = []  # (optimiser, iterations) of each level, however Execute ended
    execute = sitk.ImageRegistrationMethod.Execute

    def recorded(self: sitk.ImageRegistrationMethod, *args: object) -> object:
        try:
            return execute(self, *args)
        finally:
            ran.append((self.GetOptimizerStopConditionDescription().split(":")[0], self.GetOptimizerIteration()))

    monkeypatch.setattr(sitk.ImageRegistrationMethod, "Execute", recorded)

    def progress(stage: str, level: int, iteration: int, metric: float) -> None:
        if stage == "bspline":
            raise ValueError("the progress bar broke")

    with pytest.raises(ValueError, match="the progress bar broke"):
        cr.register(fixed, moving, preset="bspline", progress=progress)
    # the B-spline level (LBFGSB, 30 iterations at most) ended at the iteration that failed, not at its cap
    assert ran[-1][1] <= 1 and len(ran) == 4, ran


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM, signal.SIGKILL])
def test_a_signal_while_writing_leaves_all_outputs_or_none(data, tmp_path: Path, signum: int) -> None:
    args = ["register", str(data(FIXED_2D)), str(data(MOVING_2D)), "-o", str(tmp_path / "out"), "--preset", "translation",
            "--report", "-vv"]
    returned, lines, took = run_and_signal(args, tmp_path, WRITING, signum)
    print(f"{signal.Signals(signum).name}: exit {returned} {took:.2f} s after the signal")
    assert _complete_or_absent(tmp_path / "out", OUTPUTS_2D), sorted(p.name for p in (tmp_path / "out").iterdir())
    if signum == signal.SIGKILL:
        assert returned == -signal.SIGKILL
        left = _parts(tmp_path)  # what a killed process could not clean: the next run does
        again = subprocess.run([sys.executable, "-m", "coregister", *args[:-1], "--overwrite", "-q"], cwd=tmp_path,
                               capture_output=True, text=True, timeout=240, env=ENV)
        assert again.returncode == 0, again.stderr
        assert _parts(tmp_path) == [], left
        assert {p.name for p in (tmp_path / "out").iterdir()} == OUTPUTS_2D
    else:
        assert returned in (0, 128 + signum), lines[-10:]  # 0: the signal came after the last rename
        assert _own_lines(lines) == ([] if returned == 0 else [f"coregister: {'interrupted' if signum == 2 else 'terminated'}"])
        assert _parts(tmp_path) == []


def test_a_killed_optimisation_writes_nothing_and_the_rerun_completes(data, tmp_path: Path) -> None:
    args = ["register", str(data(ANATOMICAL)), str(data(MOVED)), "-o", str(tmp_path / "out"), "--preset", "rigid", "-v"]
    returned, _, _ = run_and_signal(args, tmp_path, OPTIMISING, signal.SIGKILL)
    assert returned == -signal.SIGKILL and not (tmp_path / "out").exists()
    again = subprocess.run([sys.executable, "-m", "coregister", *args[:-1], "-q"], cwd=tmp_path, capture_output=True,
                           text=True, timeout=240, env=ENV)
    assert again.returncode in (0, 3), again.stderr
    assert {p.name for p in (tmp_path / "out").iterdir()} == OUTPUTS_3D and _parts(tmp_path) == []


# ------------------------------------------------------------------ the sweep
_HOLDER = """
import sys, time
from coregister._files import part_folder
with part_folder(sys.argv[1], "out.tif") as stage:
    (stage / "out.tif").write_bytes(b"half")
    print(stage, flush=True)
    time.sleep(600)
"""


def test_the_sweep_removes_what_a_killed_process_left_and_keeps_a_live_ones(tmp_path: Path) -> None:
    holder = subprocess.Popen([sys.executable, "-c", _HOLDER, str(tmp_path)], stdout=subprocess.PIPE, text=True, env=ENV)
    try:
        assert holder.stdout is not None
        stage = Path(holder.stdout.readline().strip())
        assert stage.is_dir() and (stage / PART_MARKER).is_file()
        assert sweep_parts(tmp_path) == [] and stage.is_dir()  # locked by a live process: kept
        with part_folder(tmp_path, "other.tif"):  # a write beside it sweeps too, and keeps it
            assert stage.is_dir()
    finally:
        holder.kill()
        holder.wait(timeout=60)
        if holder.stdout is not None:
            holder.stdout.close()
    assert sweep_parts(tmp_path) == [stage] and not stage.exists()


def test_the_sweep_leaves_folders_it_did_not_make(tmp_path: Path) -> None:
    lookalike = tmp_path / ".notes.abcd1234.part"  # the user's: no marker inside
    lookalike.mkdir()
    (lookalike / "mine.txt").write_text("keep")
    assert sweep_parts(tmp_path) == [] and (lookalike / "mine.txt").read_text() == "keep"
