"""``coregister demo``: the README's first command, run as written, gives the table, the outputs and the reports.

The README's quick-start block installs the package and then runs
``coregister demo -o coregister-demo``; here the package is installed
already, so the test runs that last command exactly (the same string is
also the root group's and the demo's ``--help`` example) in a scratch
folder, with no network. Each case has a known truth (see
``coregister.cli.demo``); the command exits 0 only when every case is
within its tolerance (the NCC case must fail, and does).
"""

from __future__ import annotations

import json
import os
import re
import shlex
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import coregister as cr
from coregister.cli.demo import CASES, GEO_SHIFT_PX, photo_truth, remap_contrast, spm_truth

REPO = Path(__file__).resolve().parents[1]


def _readme_demo_command() -> str:
    text = (REPO / "README.md").read_text()
    block = re.search(r"<!-- demo-command -->\s*```bash\n(.*?)\n```\s*<!-- /demo-command -->", text, re.S)
    assert block, "README.md lost its <!-- demo-command --> block"
    return block.group(1).split("&&")[-1].strip()


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[subprocess.CompletedProcess[str], Path]:
    command = _readme_demo_command()
    assert command.endswith("coregister demo -o coregister-demo"), command
    work = tmp_path_factory.mktemp("fresh-user")
    argv = shlex.split(command)
    argv[0] = str(Path(sys.executable).parent / Path(argv[0]).name)  # .venv/bin/coregister of this environment
    env = {**os.environ, "COLUMNS": "120"}
    env.pop("COREGISTER_DATA", None)
    result = subprocess.run(argv, cwd=work, capture_output=True, text=True, env=env, timeout=600)
    return result, work / "coregister-demo"


def test_demo_prints_the_table_and_succeeds(demo_run: tuple[subprocess.CompletedProcess[str], Path]) -> None:
    result, _ = demo_run
    assert result.returncode == 0, result.stdout + result.stderr
    table = result.stdout
    rows = {}
    for line in table.splitlines():
        cells = [c.strip() for c in re.split(r"[│┃]", line) if c.strip()]
        if cells and cells[0] in CASES:
            rows[cells[0]] = cells
    assert sorted(rows) == sorted(CASES), table
    for case, (_, engine, time_s, error, limit, verdict) in rows.items():
        assert engine and float(time_s) > 0, case
        assert re.fullmatch(r"[0-9.]+ (mm|px)", error) and re.fullmatch(r"[0-9.]+ (mm|px)", limit), case
        assert verdict == ("fails (expected)" if case.endswith("-ncc") else "ok"), (case, verdict)
    assert result.stderr.strip() == "", "no warning or progress noise when stderr is not a terminal"


@pytest.mark.parametrize("case", CASES)
def test_demo_writes_outputs_and_reports(demo_run: tuple[subprocess.CompletedProcess[str], Path], case: str) -> None:
    _, out = demo_run
    folder = out / case
    assert (folder / "report.html").is_file() and (folder / "result.json").is_file()
    html = (folder / "report.html").read_text()
    assert html.startswith("<!DOCTYPE html>") and html.count("data:image/png;base64,") >= 3
    assert not re.search(r'(src|href)="(?!data:)', html), "reports are self-contained"
    if case == "geo-shift":
        corrected = cr.read(folder / "corrected.tif")
        target = cr.read(folder / "target.tif")
        assert corrected.crs == target.crs and np.array_equal(corrected.array, target.array), "shift mode keeps pixels"
        # the geotransform moved by the correction: (-0.37, -0.62) px = (-3.7 m east, +6.2 m north)
        np.testing.assert_allclose(np.subtract(corrected.origin, target.origin), [-3.7, 6.2], atol=0.5)
        return
    registered = next(p for p in folder.iterdir() if p.name.startswith("registered."))
    if case.startswith("t1"):
        fixed = cr.read(Path(str(cr.cli.demo.nibabel_data())) / "anatomical.nii")
        assert cr.read(registered).same_geometry(fixed)
        saved = cr.read_transform(folder / "transform.tfm")
        assert isinstance(saved, cr.transforms.LinearTransform)
    else:
        assert cr.read(registered).shape == (512, 512)
        assert isinstance(cr.read_transform(folder / "transform.json"), cr.Homography)


def test_demo_json_reports_errors_against_the_truth(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from coregister.cli import main

    assert main(["demo", "-o", str(tmp_path), "--case", "t1-rigid", "--case", "photo-homography", "--no-report", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    rows = {c["case"]: c for c in out["cases"]}
    assert rows["t1-rigid"]["error"] < 1.0 and rows["t1-rigid"]["unit"] == "mm"
    assert rows["photo-homography"]["error"] < 0.1 and rows["photo-homography"]["engine"] == "features"
    assert rows["photo-homography"]["tolerance"] == 0.1
    assert all(c["as_expected"] for c in out["cases"])
    assert not (tmp_path / "t1-rigid" / "report.html").exists()


def test_demo_needs_no_network(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Every socket connection fails: the bundled-data cases still run."""
    from coregister.cli import main

    def refuse(*args: object, **kwargs: object) -> None:
        raise OSError("network disabled in this test")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    assert main(["demo", "-o", str(tmp_path), "--case", "t1-multimodal", "--case", "geo-shift", "--no-report"]) == 0
    assert "t1-multimodal" in capsys.readouterr().out


def test_case_truths() -> None:
    """The truths the demo scores against, checked independently."""
    # nibabel's make_moved_anat.py: euler2mat(z=0.1, y=0.2, x=0.3) rotates about z first, then y, then x
    # (nibabel.eulerangles: M = Rx @ Ry @ Rz), RAS, then shifts by (3, 4, 5) mm
    truth = spm_truth()
    rz, ry, rx = 0.1, 0.2, 0.3
    cz, sz, cy, sy, cx, sx = np.cos(rz), np.sin(rz), np.cos(ry), np.sin(ry), np.cos(rx), np.sin(rx)
    ras = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]]) @ np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]]) @ np.array(
        [[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]]
    )
    flip = np.diag([-1.0, -1.0, 1.0])
    np.testing.assert_allclose(truth.matrix, flip @ ras @ flip, atol=1e-12)
    np.testing.assert_allclose(truth.offset, flip @ [3.0, 4.0, 5.0], atol=1e-12)
    # photo: corners move by 2-6 % of the size along each axis
    h = photo_truth((512, 512))
    corners = np.array([[0, 0, 1], [511, 0, 1], [511, 511, 1], [0, 511, 1]], float)
    moved = (h @ corners.T).T
    moved = moved[:, :2] / moved[:, 2:]
    shift = np.abs(moved - corners[:, :2])
    assert np.all(shift <= 0.06 * 512 + 1e-3) and np.all(shift >= 0.02 * 512 - 1e-3)
    # remap: one-to-one (below the robust maximum, the 99.9th percentile, where it clips) but not monotonic
    values = np.linspace(0, 100, 1001)
    mapped = remap_contrast(values)[values < np.percentile(values, 99.9)]
    assert len(np.unique(np.round(mapped, 6))) == len(mapped) and np.any(np.diff(mapped) < 0)
    assert 0 < GEO_SHIFT_PX[0] < 1 and 0 < GEO_SHIFT_PX[1] < 1
