"""``coregister --config FILE.toml``: option defaults per command, command line wins, mistakes are usage errors (2)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from coregister.cli import EXIT_USAGE, main


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "coregister.toml"
    path.write_text(text)
    return path


@pytest.mark.parametrize("key", ["json", "as_json", "as-json"])
def test_config_sets_a_flag(tmp_path: Path, capsys: pytest.CaptureFixture[str], key: str) -> None:
    config = _write(tmp_path, f"[data.ls]\n{key} = true\n")
    assert main(["--config", str(config), "data", "ls"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert "nibabel_anat_func" in [d["name"] for d in listed]


def test_config_sets_options_and_arguments_and_the_command_line_wins(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    dest_a, dest_b = tmp_path / "a", tmp_path / "b"
    config = _write(
        tmp_path,
        f'[data.fetch]\nname = "nibabel_anat_func"\ndest = "{dest_a.as_posix()}"\nfile = ["anatomical.nii"]\njson = true\n',
    )
    assert main(["--config", str(config), "data", "fetch"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["path"] == str(dest_a / "nibabel_anat_func") and out["files"] == ["anatomical.nii"]
    assert main(["--config", str(config), "data", "fetch", "--dest", str(dest_b)]) == 0
    assert json.loads(capsys.readouterr().out)["path"] == str(dest_b / "nibabel_anat_func")


@pytest.mark.parametrize(
    "text, message",
    [
        ("[data.ls]\ncolour = 1\n", "[data.ls] has no option 'colour'; valid keys: json"),
        ("[nosuchcommand]\nx = 1\n", "top-level key 'nosuchcommand' is not a [command] table"),
        ("preset = 'rigid'\n", "top-level key 'preset' is not a [command] table"),
        ("[data.nosub]\nx = 1\n", "[data] has no command 'nosub'"),
        ("[data.ls\n", "is not valid TOML"),
    ],
)
def test_config_mistakes_are_usage_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str, message: str) -> None:
    config = _write(tmp_path, text)
    assert main(["--config", str(config), "data", "ls"]) == EXIT_USAGE
    assert message in capsys.readouterr().err


def test_config_file_must_exist(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--config", str(tmp_path / "absent.toml"), "data", "ls"]) == EXIT_USAGE
    assert "does not exist" in capsys.readouterr().err
