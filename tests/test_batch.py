"""Batch registration through Dask: pairs file parsing, a 1-worker local cluster, an existing scheduler, the summary.

Pairs: BrainWeb PD slices from ITK's examples; ``BrainProtonDensitySliceShifted13x17y.png`` is
``BrainProtonDensitySliceBorder20.png`` with its content moved by exactly (13, 17) px (1 mm pixels), so a
translation registration must find the fixed -> moving translation (13, 17) mm.
"""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

import numpy as np
import pytest

import coregister as cr
from coregister.batch import PairJob, PairStatus, read_pairs, run_batch, run_pair
from coregister.cli import main
from coregister.errors import ConfigError, CoregisterError, MissingDependencyError

BRAINWEB = "medical/itk_brainweb_2d"


def _pairs_file(tmp_path: Path, data, rows: list[str], header: str = "fixed,moving,name,preset,metric") -> Path:
    folder = data(BRAINWEB)
    path = tmp_path / "pairs.csv"
    path.write_text("\n".join([header, *[r.format(d=folder) for r in rows]]) + "\n")
    return path


FIXED = "{d}/BrainProtonDensitySliceBorder20.png"
SHIFTED = "{d}/BrainProtonDensitySliceShifted13x17y.png"


def test_read_pairs_resolves_relative_paths_and_fills_defaults(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    path = tmp_path / "sub" / "pairs.csv"
    path.write_text("fixed,moving,preset\nt1.nii.gz,a/flair.nii.gz,\n/abs/t1.nii.gz,b.nii.gz,affine\n")
    jobs = read_pairs(path, preset="similarity", metric="ncc")
    assert [j.name for j in jobs] == ["1_flair", "2_b"]
    assert jobs[0].fixed == tmp_path / "sub" / "t1.nii.gz" and jobs[0].moving == tmp_path / "sub" / "a" / "flair.nii.gz"
    assert jobs[1].fixed == Path("/abs/t1.nii.gz")
    assert [j.preset for j in jobs] == ["similarity", "affine"] and {j.metric for j in jobs} == {"ncc"}


@pytest.mark.parametrize(
    "text, message",
    [
        ("fixed,img\na,b\n", r"lacks column\(s\) \['moving'\]"),
        ("fixed,moving,colour\na,b,red\n", r"unknown column\(s\) \['colour'\]"),
        ("fixed,moving\na,\n", "row 1: the 'moving' cell is empty"),
        ("fixed,moving,name\na,b,x\nc,d,x\n", r"names \['x'\] appear more than once"),
        ("fixed,moving\n", "lists no pair"),
    ],
)
def test_read_pairs_refuses_bad_files(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "pairs.csv"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message):
        read_pairs(path)


def _translation(folder: Path) -> np.ndarray:
    return cr.read_transform(folder / "transform.tfm").transform_points([[0.0, 0.0]])[0]


def test_batch_on_a_one_worker_local_cluster(data, tmp_path: Path) -> None:
    pairs = _pairs_file(
        tmp_path, data,
        [f"{FIXED},{SHIFTED},shift,translation,ncc", f"{FIXED},{{d}}/missing.png,broken,translation,ncc",
         f"{FIXED},{{d}}/BrainProtonDensitySliceR10X13Y17.png,rotated,rigid,ncc"],
    )
    seen: list[tuple[str, int, int]] = []
    summary = run_batch(pairs, tmp_path / "out", workers=1, processes=False, progress=lambda o, d, t: seen.append((o.name, d, t)))
    assert [o.name for o in summary.outcomes] == ["shift", "broken", "rotated"]  # the pairs file's order
    assert sorted(d for _, d, _ in seen) == [1, 2, 3] and {t for *_, t in seen} == {3}
    status = {o.name: o.status for o in summary.outcomes}
    assert status == {"shift": PairStatus.DONE, "broken": PairStatus.ERROR, "rotated": PairStatus.DONE}
    assert "missing.png" in summary.outcomes[1].error
    np.testing.assert_allclose(_translation(tmp_path / "out" / "shift"), [13.0, 17.0], atol=0.2)
    fixed = cr.read(data(f"{BRAINWEB}/BrainProtonDensitySliceBorder20.png"))
    registered = cr.read(tmp_path / "out" / "shift" / "registered.png")
    assert registered.same_geometry(fixed)
    assert summary.counts == {"done": 2, "quality-failed": 0, "error": 1}
    with summary.summary_csv.open() as handle:
        rows = list(csv.DictReader(handle))
    assert [r["status"] for r in rows] == ["done", "error", "done"]
    assert float(rows[0]["ncc_after"]) > float(rows[0]["ncc_before"])
    saved = json.loads(summary.summary_json.read_text())
    assert saved["workers"] == 1 and [p["name"] for p in saved["pairs"]] == ["shift", "broken", "rotated"]
    assert not (tmp_path / "out" / "broken").exists(), "a failed pair leaves no folder"


def test_batch_answers_are_those_of_register_bit_for_bit(data, tmp_path: Path) -> None:
    """One worker on a multi-core machine: the batch's default keeps ITK's metrics on one thread, as register does.

    With the metrics on two threads (the batch's old default), Colin27 -> MNI152 at 3 mm moved by 1e-9 to 4e-8
    from run to run; the pyramids and the resampling still use the worker's share of the cores.
    """
    import SimpleITK as sitk

    paths = []
    for name in ("mni", "ch2"):
        full = cr.read(data(f"medical/antspy/{name}.nii.gz"))
        image = cr.SpatialImage.from_sitk(sitk.BinShrink(full.to_sitk(), [3] * 3))
        paths.append(cr.write(image, tmp_path / f"{name}_3mm.nii.gz"))
    pairs = tmp_path / "pairs.csv"
    pairs.write_text(f"fixed,moving,name,preset\n{paths[0]},{paths[1]},colin,affine\n")
    summary = run_batch(pairs, tmp_path / "out", workers=1, processes=False)
    assert summary.counts["error"] == 0, summary.outcomes
    saved = json.loads(summary.summary_json.read_text())
    assert saved["threads_per_registration"] is None and saved["pyramid_threads"] >= 1
    direct = cr.register(cr.read(paths[0]), cr.read(paths[1]), preset="affine")
    batch = cr.read_transform(tmp_path / "out" / "colin" / "transform.tfm")
    assert batch.to_sitk().GetParameters() == direct.transform.to_sitk().GetParameters()


def test_batch_on_an_existing_scheduler(data, tmp_path: Path) -> None:
    from dask.distributed import LocalCluster

    folder = data(BRAINWEB)
    job = PairJob("shift", folder / "BrainProtonDensitySliceBorder20.png", folder / "BrainProtonDensitySliceShifted13x17y.png",
                  preset="translation", metric="ncc")
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=False, dashboard_address=":0") as cluster:
        summary = run_batch([job], tmp_path / "out", scheduler=cluster.scheduler_address, report=True)
    assert summary.scheduler == cluster.scheduler_address
    assert summary.outcomes[0].status is PairStatus.DONE
    assert (tmp_path / "out" / "shift" / "report.html").is_file()
    np.testing.assert_allclose(_translation(tmp_path / "out" / "shift"), [13.0, 17.0], atol=0.2)
    with pytest.raises(ConfigError, match="--workers sets the size of a local cluster"):
        run_batch([job], tmp_path / "out2", scheduler=cluster.scheduler_address, workers=2)


def test_run_pair_directly_reports_errors_as_outcomes(tmp_path: Path) -> None:
    outcome = run_pair(PairJob("x", tmp_path / "nope.nii.gz", tmp_path / "nope2.nii.gz"), tmp_path)
    assert outcome.status is PairStatus.ERROR and "nope.nii.gz" in outcome.error


def test_run_pair_refuses_to_overwrite_its_inputs(data, tmp_path: Path) -> None:
    # The pair's output folder is the folder of its fixed image, which is named like the registered output.
    folder = tmp_path / "pair"
    folder.mkdir()
    fixed, moving = folder / "registered.png", folder / "moving.png"
    fixed.write_bytes((data(BRAINWEB) / "BrainProtonDensitySliceBorder20.png").read_bytes())
    moving.write_bytes((data(BRAINWEB) / "BrainProtonDensitySliceShifted13x17y.png").read_bytes())
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    outcome = run_pair(PairJob("pair", fixed, moving, preset="translation"), tmp_path, threads=1)
    assert outcome.status is PairStatus.ERROR and "refusing to overwrite the input" in outcome.error
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before


def test_cli_batch_exit_codes_and_json(data, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    good = _pairs_file(tmp_path, data, [f"{FIXED},{SHIFTED},shift,translation,ncc"])
    assert main(["batch", str(good), "-o", str(tmp_path / "a"), "--workers", "1", "--threaded", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["counts"]["done"] == 1 and out["pairs"][0]["outputs"]
    (tmp_path / "bad").mkdir()
    bad = _pairs_file(tmp_path / "bad", data, [f"{FIXED},{{d}}/missing.png,gone,translation,ncc"])
    assert main(["batch", str(bad), "-o", str(tmp_path / "b"), "--workers", "1", "--threaded"]) == 1
    err = capsys.readouterr().err
    assert "1 of 1 pairs could not be registered" in err and (tmp_path / "b" / "summary.csv").is_file()


def test_without_distributed_batch_says_which_extra_to_install(
    data, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A machine without dask.distributed: the library raises a CoregisterError, the command prints one line."""
    for name in ("distributed", "dask.distributed"):
        monkeypatch.setitem(sys.modules, name, None)  # `import dask.distributed` now raises ImportError
    pairs = _pairs_file(tmp_path, data, [f"{FIXED},{SHIFTED},shift,translation,ncc"])
    with pytest.raises(MissingDependencyError, match=r"pip install 'coregister\[dist\]'") as caught:
        run_batch(pairs, tmp_path / "lib")
    assert isinstance(caught.value, CoregisterError) and isinstance(caught.value, ImportError)
    capsys.readouterr()
    assert main(["batch", str(pairs), "-o", str(tmp_path / "cli")]) == 1
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("coregister: error:") and "coregister[dist]" in lines[0], lines


# ------------------------------------------------------------------ DICOM folders of several series
def test_read_pairs_series_columns(tmp_path: Path) -> None:
    path = tmp_path / "pairs.csv"
    path.write_text("fixed,moving,fixed_series,moving_series\nct,mr,,2\nct,mr2,1.2.840.99,T2 axial\n")
    jobs = read_pairs(path)
    assert [(j.fixed_series, j.moving_series) for j in jobs] == [(None, 2), ("1.2.840.99", "T2 axial")]


@pytest.mark.parametrize("column", ["index", "uid"])
def test_run_pair_reads_the_series_its_row_names(data, tmp_path: Path, column: str) -> None:
    from test_cli_newcomer import SERIES_SHIFT_MM, write_two_series

    fixed, both, listing = write_two_series(data, tmp_path)
    cell = "1" if column == "index" else listing[1].uid
    pairs = tmp_path / "pairs.csv"
    pairs.write_text(f"fixed,moving,name,preset,metric,moving_series\n{fixed},{both},p,translation,ncc,{cell}\n")
    (job,) = read_pairs(pairs)
    outcome = run_pair(job, tmp_path / "out", threads=1)
    assert outcome.status is PairStatus.DONE, outcome.error
    shift = cr.read_transform(tmp_path / "out" / "p" / "transform.tfm").transform_points([[0.0, 0.0, 0.0]])[0]
    np.testing.assert_allclose(shift, SERIES_SHIFT_MM, atol=0.05)


@pytest.mark.parametrize(("role", "column"), [("fixed", "fixed_series"), ("moving", "moving_series")])
def test_run_pair_without_a_series_names_the_column(data, tmp_path: Path, role: str, column: str) -> None:
    from test_cli_newcomer import write_two_series

    fixed, both, _ = write_two_series(data, tmp_path)
    job = PairJob("p", both, fixed) if role == "fixed" else PairJob("p", fixed, both)
    outcome = run_pair(job, tmp_path / "out", threads=1)
    assert outcome.status is PairStatus.ERROR and "holds 2 DICOM series" in outcome.error
    assert f"(pairs file: the {column!r} column;" in outcome.error and "--series" not in outcome.error


def test_run_pair_series_cell_for_a_file_that_is_not_dicom(data, tmp_path: Path) -> None:
    folder = data(BRAINWEB)
    job = PairJob("p", folder / "BrainProtonDensitySliceBorder20.png", folder / "BrainProtonDensitySliceShifted13x17y.png",
                  moving_series=1)
    outcome = run_pair(job, tmp_path / "out", threads=1)
    assert outcome.status is PairStatus.ERROR and "'moving_series' cell (1) applies to a DICOM folder" in outcome.error
