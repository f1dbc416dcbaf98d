"""``coregister geo coreg|change|georef`` on real rasters: outputs, JSON, one-line errors and exit codes."""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path

import numpy as np
import pytest
import rasterio
from conftest import require_data

from coregister.cli import main

S2 = "geospatial/arosics_s2_T33UUU"


@pytest.fixture(scope="module")
def pair() -> tuple[str, str]:
    return (str(require_data(f"{S2}/ref_S2A_20160608T153121_T33UUU_sub.tif")),
            str(require_data(f"{S2}/tgt_S2A_20160529T153631_T33UUU_sub.tif")))


def test_coreg_shift_json(tmp_path: Path, pair: tuple[str, str], capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "corrected.tif"
    assert main(["geo", "coreg", *pair, "-o", str(out), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["mode"] == "shift" and result["output"] == str(out)
    assert result["verdict"] == "passed" and result["quality"]["measures"]["measure"] == "mi"
    dcol, drow = result["shift_px"]
    assert abs(dcol + 0.6) < 0.1 and abs(drow - 1.8) < 0.15
    assert result["reference"]["nodata_source"].startswith("detected")
    with rasterio.open(out) as ds, rasterio.open(pair[1]) as src:
        assert ds.transform.c == pytest.approx(src.transform.c + result["target_offset"][0])


@pytest.mark.parametrize(
    ("options", "source"),
    [([], "detected"), (["--nodata", "0"], "given"), (["--resample"], "detected"), (["--target-nodata", "0"], "given")],
)
def test_corrected_target_declares_the_fill_value(tmp_path: Path, pair: tuple[str, str], options: list[str],
                                                   source: str, capsys: pytest.CaptureFixture[str]) -> None:
    """Neither S2 file declares nodata (0 fills the corners); the corrected target must declare the 0 the run used,
    so that GDAL tools skip it; resampled pixels outside the target hold it."""
    out = tmp_path / "corrected.tif"
    assert main(["geo", "coreg", *pair, "-o", str(out), "--max-windows", "9", "--json", *options]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["target"]["nodata"] == 0 and result["target"]["nodata_source"].startswith(source)
    with rasterio.open(out) as ds, rasterio.open(pair[1]) as src, rasterio.open(pair[0]) as ref:
        assert src.nodata is None and ds.nodata == 0 and ds.nodatavals == (0.0,)
        if "--resample" in options:
            assert ds.transform == ref.transform
            # reference pixels west of the target's footprint: nothing to resample there
            west = int((src.transform.c - ref.transform.c) / ref.res[0]) - 2
            assert west > 0 and (ds.read(1, window=((0, ds.height), (0, west))) == 0).all()
            assert (ds.read_masks(1) == 0).mean() > 0.3  # GDAL's own mask now sees the fill
        else:
            assert ds.transform.c == pytest.approx(src.transform.c + result["target_offset"][0])


def test_change_map_declares_nan_outside(tmp_path: Path, pair: tuple[str, str]) -> None:
    out = tmp_path / "change.tif"
    assert main(["geo", "change", *pair, "-o", str(out), "--nodata", "0"]) == 0
    with rasterio.open(out) as ds, rasterio.open(pair[1]) as src, rasterio.open(pair[0]) as ref:
        assert ds.dtypes == ("float32",) and ds.nodata is not None and ds.nodata != ds.nodata  # NaN declared
        west = int((src.transform.c - ref.transform.c) / ref.res[0]) - 2
        assert np.isnan(ds.read(1, window=((0, ds.height), (0, west)))).all()
        assert (ds.read_masks(1) == 0).mean() > 0.3


def test_change_reports_the_map_it_wrote(
    tmp_path: Path, pair: tuple[str, str], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """``geo change`` names the map, its statistics and the fraction changed; no coregistration table, notes not repeated."""
    monkeypatch.setenv("COLUMNS", "300")  # the table wraps a path longer than its column (pytest's are ~90 characters)
    out = tmp_path / "change.tif"
    assert main(["geo", "change", *pair, "-o", str(out)]) == 0
    captured = capsys.readouterr()
    text = " ".join(captured.out.split())
    assert "geo change: change map" in text and str(out) in text and "difference: target - reference" in text
    changed = re.search(r"changed │ ([\d.]+) % \((\d+) pixels", text)
    assert changed is not None, text
    with rasterio.open(out) as ds:
        values = ds.read(1)
    valid = np.isfinite(values)
    stats = json.loads(json.dumps(_change_json(pair, tmp_path)))["extras"]["change"]
    assert int(changed.group(2)) == stats["changed_pixels"] and stats["valid_pixels"] == int(valid.sum())
    beyond = np.abs(values[valid] - stats["median"]) > stats["threshold"]
    assert int(beyond.sum()) == stats["changed_pixels"]
    assert "geo shift" not in text and "target geotransform moved by" not in text
    assert captured.err.count("warning:") == 0 and captured.err.count("note(s) from the coregistration") <= 1


def _change_json(pair: tuple[str, str], folder: Path) -> dict:
    import contextlib
    import io

    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        assert main(["geo", "change", *pair, "-o", str(folder / "again.tif"), "--json"]) == 0
    return json.loads(buffer.getvalue())


def test_a_nodata_the_pixels_cannot_hold_is_refused_before_matching(tmp_path: Path, pair: tuple[str, str],
                                                                     capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["geo", "coreg", *pair, "-o", str(tmp_path / "c.tif"), "--target-nodata", "-9999"]) == 1
    err = capsys.readouterr().err
    assert "nodata -9999 cannot be stored in the uint16 pixels" in err and "--target-nodata" in err
    assert not (tmp_path / "c.tif").exists()


def test_coreg_nodata_override_and_table(tmp_path: Path, pair: tuple[str, str], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["geo", "coreg", *pair, "-o", str(tmp_path / "c.tif"), "--nodata", "0", "--max-windows", "9"]) == 0
    captured = capsys.readouterr()
    assert "correction (columns, rows)" in captured.out
    assert "quality check" in captured.out and "passed (mi " in captured.out
    assert "fill value" not in captured.err  # given, not detected


@pytest.mark.parametrize("command", ["coreg", "change"])
def test_a_correction_that_fails_the_quality_check_exits_3(tmp_path: Path, pair: tuple[str, str], command: str,
                                                          capsys: pytest.CaptureFixture[str],
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """The shift negated and multiplied by 5: outputs written, the verdict in the summary, the reasons on stderr, 3."""
    import coregister.geo.coreg as coreg
    from coregister.cli import EXIT_QUALITY

    right = coreg.consensus
    monkeypatch.setattr(coreg, "consensus", lambda matches, *, outlier_px: (lambda e, m: (-5 * e, m))(
        *right(matches, outlier_px=outlier_px)))
    out = tmp_path / "out.tif"
    assert main(["geo", command, *pair, "-o", str(out), "--max-windows", "9"]) == EXIT_QUALITY
    captured = capsys.readouterr()
    assert out.exists()
    assert "FAILED the quality check (mi " in captured.out
    last = captured.err.strip().splitlines()[-1]
    assert "the coregistration failed its quality check: mi got worse" in last


def test_change_and_georef(tmp_path: Path, pair: tuple[str, str], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["geo", "change", *pair, "-o", str(tmp_path / "change.tif"), "--kind", "ratio", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["extras"]["change"]["kind"] == "ratio"
    gcps = tmp_path / "gcps.csv"
    gcps.write_text("pixel,line,x,y\n0,0,330000,5862000\n2400,0,354000,5862000\n0,3200,330000,5830000\n2400,3200,354000,5830000\n")
    assert main(["geo", "georef", pair[0], "--gcps", str(gcps), "--crs", "EPSG:32633", "-o", str(tmp_path / "g.tif"), "--json"]) == 0
    found = json.loads(capsys.readouterr().out)["extras"]["geotransform"]
    assert found == pytest.approx([10.0, 0.0, 330000.0, 0.0, -10.0, 5862000.0], abs=1e-6)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["geo", "coreg", "missing.tif", "missing2.tif", "-o", "x.tif"], "does not exist"),
        (["geo", "georef", "missing.tif", "-o", "x.tif"], "exactly one of"),
    ],
)
def test_errors_are_one_line(tmp_path: Path, args: list[str], message: str, capsys: pytest.CaptureFixture[str],
                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    if args[1] == "georef":
        args = [*args[:2], str(require_data(f"{S2}/ref_S2A_20160608T153121_T33UUU_sub.tif")), *args[3:]]
    assert main(args) == 1
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1
    assert not (tmp_path / "x.tif").exists()


def test_refuses_to_overwrite_the_target(pair: tuple[str, str], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["geo", "coreg", *pair, "-o", pair[1]]) == 1
    assert "overwrite" in capsys.readouterr().err


@pytest.mark.parametrize("role", ["reference", "target"])
@pytest.mark.parametrize("command", ["coreg", "change"])
def test_an_image_without_georeferencing_is_one_line_without_rasterio_warnings(
    tmp_path: Path, pair: tuple[str, str], capsys: pytest.CaptureFixture[str], role: str, command: str
) -> None:
    """A PNG has no geotransform: rasterio warns (NotGeoreferencedWarning) when it is opened; the geo workflows
    open rasters through the same opener as the readers, which keeps that warning in, and say it in one line.
    (With ``filterwarnings = error`` an escaped warning would fail this test as an exception.)"""
    import warnings

    photo = str(require_data("medical/itk_brainweb_2d/BrainT1SliceBorder20.png"))
    inputs = [photo, pair[1]] if role == "reference" else [pair[0], photo]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert main(["geo", command, *inputs, "-o", str(tmp_path / "x.tif")]) == 1
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(lines) == 1 and f"the {role} raster" in lines[0] and "has no CRS" in lines[0], lines
    assert "coregister geo georef" in lines[0]  # the command-line user's way out, beside the function's name
    assert not (tmp_path / "x.tif").exists()


def test_geo_choices_come_from_the_api() -> None:
    """The command line offers exactly what the geo functions accept (the enums of coregister.geo.options, a tuple each
    for the change kinds and georeferencing methods); ``geo change`` takes every coregistration option ``geo coreg`` does."""
    import click

    from coregister.cli.geo import geo
    from coregister.geo.change_map import KINDS
    from coregister.geo.georef import METHODS
    from coregister.geo.options import CoregOptions, Field, Interpolation, Mode

    def choices(command: str, option: str) -> tuple[str, ...]:
        params = {p.name: p for p in geo.commands[command].params}
        kind = params[option].type
        assert isinstance(kind, click.Choice)
        return tuple(kind.choices)

    for command in ("coreg", "change"):
        assert choices(command, "mode") == tuple(m.value for m in Mode)
        assert choices(command, "field") == tuple(f.value for f in Field)
        assert choices(command, "interpolation") == tuple(i.value for i in Interpolation)
    options = {f.name for f in dataclasses.fields(CoregOptions)}
    api_only = {"max_shift_px", "outlier_px", "seed"}
    assert options - {p.name for p in geo.commands["coreg"].params} == api_only
    assert options - {p.name for p in geo.commands["change"].params} == api_only | {"resample"}
    assert choices("change", "kind") == KINDS
    assert choices("georef", "method") == METHODS
