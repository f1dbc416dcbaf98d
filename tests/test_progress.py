"""Progress bars: one per stage and level on a terminal, nothing in a pipe or under ``-q``."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from rich.console import Console

from coregister.cli import main
from coregister.cli._progress import RegistrationBars, progress_enabled, registration_progress


class _Terminal(io.StringIO):
    """A stderr stand-in that says it is a terminal."""

    def isatty(self) -> bool:
        return True


def _drive(bars: RegistrationBars, plan: list[tuple[str, int, int]]) -> None:
    for stage, level, iterations in plan:
        for iteration in range(iterations):
            bars(stage, level, iteration, -0.1 * iteration)


@pytest.mark.parametrize(
    "plan",
    [
        [("rigid", 0, 5), ("rigid", 1, 3), ("rigid", 2, 2)],
        [("rigid", 0, 4), ("affine", 0, 6), ("affine", 1, 2), ("bspline", 0, 3)],
    ],
)
def test_one_bar_per_stage_and_level(plan: list[tuple[str, int, int]]) -> None:
    console = Console(file=io.StringIO(), force_terminal=True, width=120)
    with RegistrationBars(console=console, iterations={"rigid": 10}) as bars:
        _drive(bars, plan)
    assert bars.levels_seen == [(stage, level) for stage, level, _ in plan]
    text = console.file.getvalue()
    for stage, level, _ in plan:
        assert f"{stage} level {level}" in text
    finished = {task.description: task for task in bars._progress.tasks}
    assert all(task.finished for task in finished.values()), "every level's bar is completed when the block ends"
    assert finished[f"{plan[0][0]} level 0"].completed == plan[0][2]


def test_bars_only_on_a_terminal_and_not_quiet(monkeypatch: pytest.MonkeyPatch) -> None:
    assert not progress_enabled(stream=io.StringIO())
    assert progress_enabled(stream=_Terminal())
    monkeypatch.setattr("sys.stderr", io.StringIO())
    with registration_progress() as progress:
        assert progress is None  # a pipe: no callback at all, so the engine pays nothing


@pytest.mark.parametrize("quiet", [False, True])
def test_command_draws_bars_on_a_terminal_unless_quiet(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, quiet: bool) -> None:
    terminal = _Terminal()
    monkeypatch.setattr("sys.stderr", terminal)
    args = (["-q"] if quiet else []) + ["data", "fetch", "nibabel_anat_func", "--dest", str(tmp_path)]
    assert main(args) == 0
    drawn = terminal.getvalue()
    if quiet:
        assert drawn == ""
    else:
        assert "fetching nibabel_anat_func" in drawn and "5/5" in drawn
