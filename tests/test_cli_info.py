"""``coregister info`` on every image file of the shared data, and ``coregister dicom ls``.

Each fact ``info --json`` prints is checked against a reference reader:
SimpleITK (size, spacing, origin of medical and plain images; GDCM's series
reader for DICOM folders), nibabel (value range of NIfTI files, NaN kept),
rasterio (size, CRS, bounds = the pixel corners' extent, value range of the
valid pixels of GeoTIFF/JPEG 2000 files).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import rasterio
import SimpleITK as sitk
from conftest import fresh_user_path, shared_data_root
from pyproj import CRS

from coregister.cli import main
from coregister.io.dicom import list_series

_SKIP_SUFFIXES = (".md", ".txt", ".raw", ".zraw", ".npz")
_DICOM_FOLDERS = [
    "medical/mri_dir_phantom/CT_every8th",
    "medical/mri_dir_phantom/MR_T2_every2nd",
    "medical/dicom_small/CT2_series",
]


def _image_files() -> list[str]:
    """Every image file in the shared data (the MRI-DIR slices as their two folders)."""
    root = shared_data_root()
    if not root.is_dir():
        return ["medical/antspy/mni.nii.gz"]  # the data fixture then skips (or fails under CI)
    files = [
        p.relative_to(root).as_posix()
        for p in sorted(root.rglob("*"))
        if p.is_file()
        and not p.name.endswith(_SKIP_SUFFIXES)
        and p.name != "SHA256SUMS"
        and "mri_dir_phantom" not in p.parts
    ]
    return files + _DICOM_FOLDERS


def _info_json(path: Path, capsys: pytest.CaptureFixture[str], *extra: str) -> dict:
    code = main(["info", "--json", *extra, str(path)])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    return json.loads(captured.out)


def _reference_sitk(path: Path) -> sitk.Image:
    if path.is_dir():
        reader = sitk.ImageSeriesReader()
        reader.SetFileNames(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(path)))
        return reader.Execute()
    return sitk.ReadImage(str(path))


def _check_against_rasterio(path: Path, facts: dict) -> None:
    with rasterio.open(path) as ds:
        assert facts["size"] == [ds.width, ds.height]
        assert facts["channels"] == ds.count
        if ds.crs is None or ds.transform.is_identity:
            assert "crs" not in facts  # pixel grid (the RPC raster): no map bounds
            return
        assert CRS.from_user_input(facts["crs"]) == CRS.from_user_input(ds.crs.to_wkt())
        bounds = facts["bounds"]
        np.testing.assert_allclose(
            [bounds["left"], bounds["bottom"], bounds["right"], bounds["top"]], list(ds.bounds), rtol=0, atol=1e-6
        )
        valid = ds.read(masked=True)  # per band, nodata masked: what gdalinfo -stats counts
        assert facts["nodata"] == ds.nodata
    assert facts["value_range"] == [float(valid.min()), float(valid.max())]


@pytest.mark.parametrize("relative", _image_files())
def test_info_facts_equal_the_reference_readers(
    relative: str, data: Callable[[str], Path], capsys: pytest.CaptureFixture[str]
) -> None:
    path = data(relative)
    extra = ("--resample-nonuniform",) if relative.endswith("CT2_series") else ()
    facts = _info_json(path, capsys, *extra)
    assert facts["path"] == str(path)
    if path.suffix.lower() in (".tif", ".jp2") and facts["format"] != "tiff":
        _check_against_rasterio(path, facts)
        return
    reference = _reference_sitk(path)
    n = facts["dimensions"]
    size = list(reference.GetSize()[:n])
    if extra:  # uneven series: resampled onto 1.25 mm, the same first slice and extent
        assert facts["size"][:2] == size[:2] and facts["size"][2] == 165
        assert facts["series"]["resampled"] is True
    else:
        assert facts["size"] == size
        np.testing.assert_allclose(facts["spacing"], reference.GetSpacing()[:n], rtol=0, atol=1e-6)
    np.testing.assert_allclose(facts["origin"], reference.GetOrigin()[:n], rtol=0, atol=1e-6)
    direction = np.array(reference.GetDirection()).reshape(reference.GetDimension(), -1)[:n, :n]
    np.testing.assert_allclose(facts["direction"], direction, rtol=0, atol=1e-6)
    if facts["format"] == "nifti":
        values = np.asarray(nib.load(path).get_fdata())
        assert facts["value_range"] == pytest.approx([np.nanmin(values), np.nanmax(values)], rel=1e-12)
    elif facts["format"] in ("itk", "dicom", "tiff") and not extra:
        values = sitk.GetArrayViewFromImage(reference)
        assert facts["value_range"] == [float(values.min()), float(values.max())]
    if facts["format"] == "dicom":
        series_ids = sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(path if path.is_dir() else path.parent))
        assert facts["series"]["uid"] in series_ids


def test_text_output_of_a_nifti_file(data: Callable[[str], Path], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["info", str(data("medical/antspy/mni.nii.gz"))]) == 0
    out = capsys.readouterr().out
    assert "182 x 218 x 182" in out and "(LAS)" in out and "-90, 126, -72" in out
    assert re.search(r"affine source\s*│\s*sform", out) and "0 .. 8364" in out


def test_text_output_of_a_geotiff(data: Callable[[str], Path], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["info", str(data("geospatial/rasterio_landsat7/RGB.byte.tif"))]) == 0
    out = capsys.readouterr().out
    assert "EPSG:32618" in out and "(north-up)" in out and "3 channels" in out
    assert "left 101985, bottom 2611485, right 339315, top 2826915" in out


def test_text_output_of_a_dicom_series(data: Callable[[str], Path], capsys: pytest.CaptureFixture[str]) -> None:
    folder = data("medical/mri_dir_phantom/CT_every8th")
    assert main(["info", str(folder)]) == 0
    out = capsys.readouterr().out
    assert "#8 'CT' CT, 52 file(s)" in out and "FFS" in out and "intercept -1024" in out
    assert "1.3.6.1.4.1.14519.5.2.1.1706.4996" in out


def test_warnings_are_reported_with_the_facts(data: Callable[[str], Path], capsys: pytest.CaptureFixture[str]) -> None:
    facts = _info_json(data("medical/dicom_small/emri_small.dcm"), capsys)
    assert len(facts["warnings"]) == 1 and "no ImagePositionPatient" in facts["warnings"][0]


def test_series_option_picks_one_series(data: Callable[[str], Path], capsys: pytest.CaptureFixture[str]) -> None:
    folder = data("medical/dicom_small")
    expected = list_series(folder)[2]
    facts = _info_json(folder, capsys, "--series", "2")
    assert facts["series"]["uid"] == expected.uid and facts["size"] == [64, 64, 10]
    assert _info_json(folder, capsys, "--series", expected.uid)["series"]["uid"] == expected.uid


@pytest.mark.parametrize(
    ("relative", "option"),
    [("medical/antspy/mni.nii.gz", ["--series", "1"]), ("medical/dicom_small/MR_small.dcm", ["--volume", "0"])],
)
def test_options_for_another_format_are_usage_errors(
    relative: str, option: list[str], data: Callable[[str], Path], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["info", *option, str(data(relative))]) == 2
    assert f"{option[0]} applies to" in capsys.readouterr().err


def test_volume_option(data: Callable[[str], Path], capsys: pytest.CaptureFixture[str]) -> None:
    facts = _info_json(data("medical/nibabel_anat_func/functional.nii"), capsys, "--volume", "3")
    assert facts["channels"] == 1 and facts["size"] == [17, 21, 3]


def _example(help_text: str) -> str:
    """The shell lines after the last ``Example...:`` line, continuation backslashes kept (bash joins them)."""
    lines = help_text.rstrip().splitlines()
    index = max(i for i, line in enumerate(lines) if line.strip().startswith("Example") and line.rstrip().endswith(":"))
    return "\n".join(line.strip() for line in lines[index + 1 :])


@pytest.mark.parametrize(
    ("command", "expected"),
    [(["info"], "anatomical.nii"), (["dicom", "ls"], "1.3.6.1.4.1.5962.1.1.0.0.0.1196530851.28319.0.2")],
)
def test_help_ends_with_an_example_that_runs(
    command: list[str], expected: str, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    assert main([*command, "--help"]) == 0
    example = _example(capsys.readouterr().out)
    assert any(line.startswith(f"coregister {' '.join(command)} ") for line in example.splitlines()), example
    env = {**os.environ, "PATH": fresh_user_path(tmp_path / "bin")}  # no `python` of ours: a fresh user's PATH
    run = subprocess.run(["bash", "-euo", "pipefail", "-c", example], capture_output=True, text=True, env=env,
                         cwd=tmp_path, timeout=120)
    assert run.returncode == 0, run.stderr
    assert expected in run.stdout


def test_dicom_ls_lists_every_series(data: Callable[[str], Path], capsys: pytest.CaptureFixture[str]) -> None:
    folder = data("medical/dicom_small")
    assert main(["dicom", "ls", str(folder)]) == 0
    lines = capsys.readouterr().out.splitlines()
    expected = list_series(folder)
    assert lines[0].split()[:3] == ["#", "number", "modality"] and len(lines) == 1 + len(expected)
    for index, (line, series) in enumerate(zip(lines[1:], expected, strict=True)):
        assert line.split()[0] == str(index) and line.endswith(series.uid)
    assert main(["dicom", "ls", "--json", str(folder)]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert [(s["index"], s["uid"], s["n_files"]) for s in listed] == [
        (i, s.uid, s.n_files) for i, s in enumerate(expected)
    ]


def test_dicom_ls_recursive(data: Callable[[str], Path], capsys: pytest.CaptureFixture[str]) -> None:
    root = data("medical/mri_dir_phantom")
    assert main(["dicom", "ls", str(root)]) == 0
    assert "try --recursive" in capsys.readouterr().out
    assert main(["dicom", "ls", "-r", str(root)]) == 0
    rows = capsys.readouterr().out.splitlines()[1:]
    assert [row.split()[1:4] for row in rows] == [["CT_every8th", "8", "CT"], ["MR_T2_every2nd", "6", "MR"]]


def test_dicom_ls_missing_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["dicom", "ls", str(tmp_path / "nowhere")]) == 1
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and "does not exist" in err[0]


# ------------------------------------------------------------ C libraries and the one-line rule
def _console(*args: str) -> subprocess.CompletedProcess[str]:
    """The installed console script in a fresh process: capsys cannot see what C code writes to fd 2."""
    script = Path(sys.executable).parent / "coregister"
    return subprocess.run([str(script), *args], capture_output=True, text=True, timeout=120)


def test_libpng_warnings_stay_off_stderr(data: Callable[[str], Path]) -> None:
    """This PNG carries an sCAL chunk libpng rejects ('libpng warning: sCAL: invalid unit'): not the user's problem."""
    run = _console("info", "--json", str(data("medical/itk_brainweb_2d/BrainProtonDensitySliceBSplined10.png")))
    assert run.returncode == 0 and run.stderr == ""
    assert json.loads(run.stdout)["format"] == "png"


def test_truncated_png_is_one_line_without_opencv_warnings(data: Callable[[str], Path], tmp_path: Path) -> None:
    truncated = tmp_path / "truncated.png"
    truncated.write_bytes(data("medical/itk_brainweb_2d/BrainProtonDensitySliceBorder20.png").read_bytes()[:3000])
    run = _console("info", str(truncated))
    assert run.returncode == 1
    lines = [line for line in run.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("coregister: error: cannot decode"), lines


def test_captured_stderr_logs_what_c_code_writes(capfd: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture) -> None:
    import ctypes
    import ctypes.util
    import logging

    from coregister._stderr import captured_stderr

    libc = ctypes.CDLL(ctypes.util.find_library("c"))
    with caplog.at_level(logging.DEBUG, logger="coregister._stderr"), captured_stderr("a C call"):
        libc.write(2, b"chatter from C\n", 15)
    libc.write(2, b"after\n", 6)  # fd 2 is back
    assert capfd.readouterr().err == "after\n"
    assert any("a C call wrote to stderr: chatter from C" in r.getMessage() for r in caplog.records)
