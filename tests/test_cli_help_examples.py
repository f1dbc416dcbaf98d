"""Every ``--help`` ends with a real example, and that example runs as written.

Each command's (and group's) help text must end with an ``Example...:``
block of shell lines. The block is run with ``bash`` exactly as printed, in
a scratch folder laid out like the repository (``../shared/data`` next to
it points at the real data), with this virtual environment's ``coregister``
on the ``PATH`` but not its ``python``: a fresh user has ``coregister`` (from
pip or pipx) and the system's ``python3`` without our dependencies, and
often no ``python`` at all, so there ``python`` is not found and
``python3`` is an interpreter without site-packages; it must exit 0. The demo's example is run by
``test_demo.py`` (it takes most of a minute), so here it is only checked to
be the README's command.

Also checked for every command: it accepts ``--config`` (through the root
group) and commands that print a result accept ``--json``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import click
import pytest
from conftest import fresh_user_path

from coregister.cli import cli

REPO = Path(__file__).resolve().parents[1]
SLOW_EXAMPLES = {"demo": "test_demo.py runs it"}


def _walk(group: click.Group, ctx: click.Context, prefix: tuple[str, ...]) -> list[tuple[tuple[str, ...], click.Command]]:
    found: list[tuple[tuple[str, ...], click.Command]] = [(prefix, group)]
    for name in group.list_commands(ctx):
        command = group.get_command(ctx, name)
        if command is None:
            continue
        sub = click.Context(command, info_name=name, parent=ctx)
        if isinstance(command, click.Group):
            found += _walk(command, sub, (*prefix, name))
        else:
            found.append(((*prefix, name), command))
    return found


def _commands() -> list[tuple[tuple[str, ...], click.Command]]:
    return _walk(cli, click.Context(cli, info_name="coregister"), ())


COMMANDS = _commands()


def _help(path: tuple[str, ...]) -> str:
    result = subprocess.run(
        [sys.executable, "-m", "coregister", *path, "--help"], capture_output=True, text=True, env={**os.environ, "COLUMNS": "200"}
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def example_lines(help_text: str) -> list[str]:
    """The shell lines of the last ``Example...:`` block, which must end the help text."""
    lines = help_text.rstrip().splitlines()
    starts = [i for i, line in enumerate(lines) if line.strip().lower().startswith("example") and line.rstrip().endswith(":")]
    assert starts, "the help has no 'Example:' block"
    block = [line.strip() for line in lines[starts[-1] + 1 :]]
    assert block and all(block), "the example block must be the end of the help, with no blank line inside"
    joined: list[str] = []
    for line in block:
        if joined and joined[-1].endswith("\\"):
            joined[-1] = joined[-1][:-1].rstrip() + " " + line
        else:
            joined.append(line)
    return joined


def test_the_fresh_user_path_has_no_python_of_ours(tmp_path: Path) -> None:
    path = fresh_user_path(tmp_path / "bin")
    assert shutil.which("coregister", path=path) == str(tmp_path / "bin" / "coregister")
    assert subprocess.run(["python", "-c", "pass"], env={**os.environ, "PATH": path}, capture_output=True).returncode == 127
    bare = subprocess.run(["python3", "-c", "import nibabel"], env={**os.environ, "PATH": path}, capture_output=True)
    assert bare.returncode != 0  # no site-packages: what a system python3 outside the venv sees


@pytest.mark.parametrize("path", [p for p, _ in COMMANDS], ids=lambda p: " ".join(p) or "coregister")
def test_help_ends_with_an_example_that_runs(path: tuple[str, ...], data, tmp_path: Path) -> None:
    commands = example_lines(_help(path))
    assert any(line.startswith("coregister " + " ".join(path)) for line in commands), commands
    name = " ".join(path)
    if name in SLOW_EXAMPLES or path == ():
        assert commands == ["coregister demo -o coregister-demo"], "the demo's help example is the README's command"
        pytest.skip(f"example of {name or 'coregister'} runs in test_demo.py")
    shared = tmp_path / "shared"
    shared.mkdir()
    (shared / "data").symlink_to(data("."), target_is_directory=True)
    work = tmp_path / "repo"
    work.mkdir()
    env = {**os.environ, "PATH": fresh_user_path(tmp_path / "bin")}
    env.pop("VIRTUAL_ENV", None)
    script = "\n".join(commands)
    bash = shutil.which("bash") or "/bin/bash"
    result = subprocess.run([bash, "-euo", "pipefail", "-c", script], cwd=work, capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, f"{script}\nexit {result.returncode}\n{result.stderr[-2000:]}"


PRINTS_A_RESULT = {("register",), ("apply",), ("info",), ("batch",), ("demo",), ("data", "ls"), ("data", "info"), ("data", "fetch"),
                   ("dicom", "ls"), ("geo", "coreg"), ("geo", "change"), ("geo", "georef")}


@pytest.mark.parametrize("path", sorted(p for p, c in COMMANDS if p in PRINTS_A_RESULT), ids=" ".join)
def test_result_commands_offer_json(path: tuple[str, ...]) -> None:
    command = dict(COMMANDS)[path]
    assert any("--json" in getattr(param, "opts", ()) for param in command.params), f"coregister {' '.join(path)} has no --json"


def test_root_help_offers_config() -> None:
    text = _help(())
    assert "--config FILE" in text and "-q, --quiet" in text and "-v, --verbose" in text
