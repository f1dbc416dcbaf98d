"""Every ``--help`` ends with a real example, and that example runs as written, in any folder.

Each command's (and group's) help text must end with an ``Example...:``
block of shell lines. An example that needs files starts with the
``coregister data fetch NAME --dest DIR`` line that brings them and uses
paths under ``DIR``, so it runs in any folder. The block is run with
``bash`` exactly as printed, in an empty scratch folder (not the repository
root, and with no ``../shared/data`` beside it), with this virtual
environment's ``coregister`` on the ``PATH`` but not its ``python``: a fresh
user has ``coregister`` (from pip or pipx) and the system's ``python3``
without our dependencies, and often no ``python`` at all, so there
``python`` is not found and ``python3`` is an interpreter without
site-packages; it must exit 0. The run is offline (HTTP proxies point at a
closed port): files that the fetch line would download are copied from
``../shared/data`` into its destination first, so the fetch verifies their
checksums instead; sets that ship in installed packages (nibabel's,
pydicom's, scikit-image's) are copied by the fetch itself. The demo's example
is run by ``test_demo.py`` (it takes most of a minute), so here it is only
checked to be the README's command.

Also checked for every command: it accepts ``--config`` (through the root
group) and commands that print a result accept ``--json``.
"""

from __future__ import annotations

import importlib.util
import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import click
import pytest
from conftest import fresh_user_path

from coregister import data as datasets
from coregister.cli import cli

REPO = Path(__file__).resolve().parents[1]
SLOW_EXAMPLES = {"demo": "test_demo.py runs it"}
#: every download fails at once: HTTP(S) through a proxy on a closed port
OFFLINE = {key: "http://127.0.0.1:9" for key in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy")}


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


def fetch_lines(commands: list[str]) -> list[tuple[str, str, list[str]]]:
    """``(name, dest, files)`` of each ``coregister data fetch NAME --dest DEST [--file F ...]`` line."""
    fetches = []
    for line in commands:
        words = shlex.split(line)
        if words[:3] != ["coregister", "data", "fetch"]:
            continue
        options: dict[str, list[str]] = {"--dest": [], "--file": []}
        assert len(words) % 2 == 0, f"every option of the fetch line takes one value: {line!r}"
        for flag, value in zip(words[4::2], words[5::2], strict=True):
            assert flag in options, f"unexpected {flag} in {line!r}"
            options[flag].append(value)
        assert len(options["--dest"]) == 1, f"the fetch line names its destination: {line!r}"
        fetches.append((words[3], options["--dest"][0], options["--file"]))
    return fetches


def _needs_network(entry: datasets.DataFile) -> bool:
    """Whether fetching ``entry`` downloads it (no installed package ships a copy)."""
    return entry.url is not None and (entry.package is None or importlib.util.find_spec(entry.package) is None)


def _place_downloads(fetches: list[tuple[str, str, list[str]]], work: Path, data) -> None:
    """Copy what the example's fetch lines would download from ``../shared/data`` into their destinations."""
    for name, dest, files in fetches:
        dataset = datasets.get_dataset(name)
        for entry in dataset.files:
            if (files and entry.path not in files) or not _needs_network(entry):
                continue
            target = work / dest / name / entry.path
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(data(f"{dataset.shared_path}/{entry.path}"), target)


@pytest.mark.parametrize("path", [p for p, _ in COMMANDS], ids=lambda p: " ".join(p) or "coregister")
def test_help_ends_with_an_example_that_runs(path: tuple[str, ...], data, tmp_path: Path) -> None:
    commands = example_lines(_help(path))
    assert any(line.startswith("coregister " + " ".join(path)) for line in commands), commands
    assert not any("../" in line for line in commands), f"the example reaches outside its folder: {commands}"
    name = " ".join(path)
    if name in SLOW_EXAMPLES or path == ():
        assert commands == ["coregister demo -o coregister-demo"], "the demo's help example is the README's command"
        pytest.skip(f"example of {name or 'coregister'} runs in test_demo.py")
    fetches = fetch_lines(commands)
    if fetches:
        assert commands[0].startswith("coregister data fetch "), "an example that needs data starts by fetching it"
    work = tmp_path / "anywhere"
    work.mkdir()
    _place_downloads(fetches, work, data)
    env = {**os.environ, "PATH": fresh_user_path(tmp_path / "bin"), **OFFLINE}
    env.pop("VIRTUAL_ENV", None)
    env.pop("NO_PROXY", None)
    env.pop("no_proxy", None)
    env.pop("COREGISTER_DATA", None)
    script = "\n".join(commands)
    bash = shutil.which("bash") or "/bin/bash"
    result = subprocess.run([bash, "-euo", "pipefail", "-c", script], cwd=work, capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, f"{script}\nexit {result.returncode}\n{result.stderr[-2000:]}"


def test_fetch_lines_are_parsed() -> None:
    lines = ["coregister data fetch dicom_small --dest data --file CT2_series/17106 --file CT2_series/17136",
             "coregister dicom ls data/dicom_small/CT2_series", "coregister data fetch nibabel_anat_func --dest d"]
    assert fetch_lines(lines) == [("dicom_small", "data", ["CT2_series/17106", "CT2_series/17136"]),
                                  ("nibabel_anat_func", "d", [])]


PRINTS_A_RESULT = {("register",), ("apply",), ("evaluate",), ("info",), ("batch",), ("demo",), ("data", "ls"), ("data", "info"), ("data", "fetch"),
                   ("dicom", "ls"), ("geo", "coreg"), ("geo", "change"), ("geo", "georef")}


@pytest.mark.parametrize("path", sorted(p for p, c in COMMANDS if p in PRINTS_A_RESULT), ids=" ".join)
def test_result_commands_offer_json(path: tuple[str, ...]) -> None:
    command = dict(COMMANDS)[path]
    assert any("--json" in getattr(param, "opts", ()) for param in command.params), f"coregister {' '.join(path)} has no --json"


def test_root_help_offers_config() -> None:
    text = _help(())
    assert "--config FILE" in text and "-q, --quiet" in text and "-v, --verbose" in text
