"""Memory bounded by the data: oversized headers refused before allocating, registrations estimated before they run.

The oversized-header files of the catalogue are read in a separate process
whose address space is limited (``resource.setrlimit(RLIMIT_AS)``) to what
it maps after its imports plus 512 MB: each read must end in a
:class:`~coregister.errors.CoregisterError` (never a bare ``MemoryError``)
and the process's peak resident memory must stay far below what the header
claims. The figures (claimed, allowed, measured peak above the baseline)
are printed (``pytest -s``) for the record.
"""

from __future__ import annotations

import gzip
import json
import os
import struct
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

import coregister as cr
from coregister.cli import EXIT_ERROR, EXIT_OK, main
from coregister.errors import MemoryLimitError
from coregister.io.plain import _claimed_size
from coregister.pipeline.memory import estimate_peak

#: a read may add this much resident memory above the baseline (the oversized claims are gigabytes to terabytes)
PEAK_BOUND = 64 * 2**20

_READER = r"""
import json, os, resource, sys, warnings
warnings.simplefilter("ignore")
import numpy as np, nibabel, rasterio, SimpleITK, cv2, pydicom  # the readers' libraries, loaded before the limit
import coregister as cr
from coregister._memory import max_memory
from coregister.errors import CoregisterError

def status(key):
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024

cr.read(sys.argv[2])  # a small file through every step once: lazily loaded modules and pools now, not in the cases
baseline = status("VmHWM")
resource.setrlimit(resource.RLIMIT_AS, (status("VmSize") + 512 * 2**20, resource.RLIM_INFINITY))
cases = json.loads(sys.argv[1])
out = []
for name, path in cases:
    try:
        cr.read(path)
        error, message = None, ""
    except CoregisterError as exc:
        error, message = type(exc).__name__, str(exc)
    except MemoryError as exc:
        error, message = "MemoryError", str(exc)
    out.append({"name": name, "error": error, "message": message, "allowed": max_memory(),
                "peak_above_baseline": status("VmHWM") - baseline})
print(json.dumps(out))
"""


def oversized_files(folder: Path, data) -> dict[str, tuple[Path, int]]:
    """The catalogue's oversized-header files: name -> (path, bytes the header claims)."""
    files: dict[str, tuple[Path, int]] = {}
    raw = bytearray(data("medical/nibabel_anat_func/anatomical.nii").read_bytes())
    struct.pack_into(">8h", raw, 40, 3, 1024, 1024, 1024, 1, 1, 1, 1)
    (folder / "huge.nii").write_bytes(bytes(raw))
    files["nifti 1024^3 int16 in 70 kB"] = (folder / "huge.nii", 2 * 1024**3)
    header = nib.Nifti1Header()
    header.set_data_shape((10000, 10000, 10000))
    header.set_data_dtype(np.int16)
    (folder / "bomb.nii.gz").write_bytes(gzip.compress(header.binaryblock + bytes(4) + bytes(1000)))
    files["nifti.gz 10^12 voxels int16"] = (folder / "bomb.nii.gz", 2 * 10**12)
    from test_hostile_inputs import dicom_series, sparse_geotiff

    files["sparse GeoTIFF 40000^2 uint8 (200 kB)"] = (sparse_geotiff(folder / "sparse.tif"), 40000**2)
    png = bytearray(data("medical/itk_brainweb_2d/BrainT1Slice.png").read_bytes())
    struct.pack_into(">II", png, 16, 100000, 100000)
    (folder / "huge.png").write_bytes(bytes(png))
    width, height, per_pixel = _claimed_size(bytes(png[:64]))
    files["PNG 100000^2 (70 kB)"] = (folder / "huge.png", width * height * per_pixel)
    lung = data("medical/itk_ratlung_2d/RatLungSlice1.mha").read_text().split("ElementDataFile")[0]
    lung = lung.replace("DimSize = 128 128", "DimSize = 100000 100000")
    (folder / "huge.mha").write_bytes(lung.encode() + b"ElementDataFile = LOCAL\n" + bytes(100))
    files["MetaImage 100000^2 uint8"] = (folder / "huge.mha", 100000**2)
    import pydicom

    series = folder / "series"
    for file in dicom_series(series):
        ds = pydicom.dcmread(file)
        ds.Rows = ds.Columns = 60000
        ds.save_as(file)
    files["DICOM 6 slices of 60000^2 int16"] = (series, 6 * 2 * 60000**2)
    return files


def test_oversized_headers_are_refused_within_a_limited_address_space(data, tmp_path: Path) -> None:
    files = oversized_files(tmp_path, data)
    cases = [(name, str(path)) for name, (path, _) in files.items()]
    small = data("medical/itk_brainweb_2d/BrainT1Slice.png")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(Path(cr.__file__).resolve().parents[1]),
                                                       os.environ.get("PYTHONPATH", "")]))
    env.pop("COREGISTER_MAX_MEMORY", None)
    run = subprocess.run([sys.executable, "-c", _READER, json.dumps(cases), str(small)], capture_output=True,
                         text=True, timeout=300, env=env)
    assert run.returncode == 0, run.stderr[-3000:]
    results = json.loads(run.stdout.strip().splitlines()[-1])
    print("\ncase | claimed | allowed | measured peak above baseline | error")
    for result in results:
        claimed = files[result["name"]][1]
        print(f"{result['name']} | {claimed / 1e9:.3g} GB | {result['allowed'] / 1e6:.0f} MB | "
              f"{result['peak_above_baseline'] / 1e6:.1f} MB | {result['error']}: {result['message'][:140]}")
        assert result["error"] in ("UnreadableInputError", "MemoryLimitError"), result
        assert result["peak_above_baseline"] < PEAK_BOUND, result
        assert result["allowed"] < 600 * 2**20  # the limit follows ulimit -v when nothing else is set


def test_max_memory_refuses_a_read_on_the_command_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from test_hostile_inputs import sparse_geotiff

    path = sparse_geotiff(tmp_path / "sparse.tif")
    capsys.readouterr()
    assert main(["info", str(path), "--max-memory", "100M"]) == EXIT_ERROR
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(lines) == 1 and "would need 6.4 GB, more than the 100 MB allowed (COREGISTER_MAX_MEMORY=100M)" in lines[0]
    os.environ.pop("COREGISTER_MAX_MEMORY", None)  # --max-memory set it for the process


# ------------------------------------------------------------------ registrations
FIXED = "medical/itk_brainweb_2d/BrainProtonDensitySliceBorder20.png"
MOVING = "medical/itk_brainweb_2d/BrainProtonDensitySliceShifted13x17y.png"


def _between(fixed: cr.SpatialImage, moving: cr.SpatialImage) -> int:
    """A limit the full-resolution run exceeds and the run coarsened by 2 fits."""
    full, half = estimate_peak(fixed, moving), estimate_peak(fixed, moving, factor=2)
    assert half.peak < full.peak
    return int((full.peak + half.peak) / 2)


def test_a_registration_over_the_limit_is_refused_with_both_figures(data, monkeypatch: pytest.MonkeyPatch) -> None:
    fixed, moving = cr.read(data(FIXED)), cr.read(data(MOVING))
    monkeypatch.setenv("COREGISTER_MAX_MEMORY", str(_between(fixed, moving)))
    with pytest.raises(MemoryLimitError, match=r"registering 221 x 257 onto 221 x 257 pixels needs about [\d.]+ MB "
                                               r"\(inputs .*, registration .*\), more than the [\d.]+ MB allowed"):
        cr.register(fixed, moving, preset="translation")


def test_fit_memory_registers_on_a_coarser_grid_with_a_note(data, monkeypatch: pytest.MonkeyPatch) -> None:
    fixed, moving = cr.read(data(FIXED)), cr.read(data(MOVING))
    monkeypatch.setenv("COREGISTER_MAX_MEMORY", str(_between(fixed, moving)))
    result = cr.register(fixed, moving, preset="translation", fit_memory=True)
    assert any("grids 2 times coarser per axis to fit in memory" in w for w in result.warnings), result.warnings
    np.testing.assert_allclose(result.transform.translation, [13.0, 17.0], atol=0.5)  # px; the truth of the pair


def test_the_command_line_refuses_or_fits(data, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    fixed, moving = cr.read(data(FIXED)), cr.read(data(MOVING))
    limit = str(_between(fixed, moving))
    args = ["register", str(data(FIXED)), str(data(MOVING)), "--preset", "translation", "--max-memory", limit]
    capsys.readouterr()
    try:
        assert main([*args, "-o", str(tmp_path / "a")]) == EXIT_ERROR
        lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
        assert len(lines) == 1 and "--fit-memory" in lines[0] and "allowed" in lines[0], lines
        assert main([*args, "-o", str(tmp_path / "b"), "--fit-memory", "-q"]) == EXIT_OK
        assert (tmp_path / "b" / "registered.png").is_file()
    finally:
        os.environ.pop("COREGISTER_MAX_MEMORY", None)


def test_a_displacement_field_stage_counts_in_the_estimate(data, monkeypatch: pytest.MonkeyPatch) -> None:
    """syn's demons hold 160 bytes per voxel of their finest level: a limit the affine fits, syn does not."""
    from coregister import presets
    from coregister.engines.sitk.engine import field_level_voxels
    from coregister.pipeline.memory import FIELD_BYTES_PER_VOXEL

    fixed, moving = cr.read(data(FIXED)), cr.read(data(MOVING))
    voxels = field_level_voxels(presets.syn(ndim=2).stages[-1], fixed.size, fixed.spacing)
    assert voxels == 221 * 257  # 2D: every pixel
    linear, field = estimate_peak(fixed, moving), estimate_peak(fixed, moving, field_voxels=voxels)
    assert field.working - linear.working == pytest.approx(voxels * FIELD_BYTES_PER_VOXEL)
    monkeypatch.setenv("COREGISTER_MAX_MEMORY", str(int((linear.peak + field.peak) / 2)))
    affine = cr.register(fixed, moving, preset="affine").transform  # fits: the pair's known shift
    np.testing.assert_allclose(affine.transform_points([[120.0, 130.0]])[0], [133.0, 147.0], atol=0.5)
    with pytest.raises(MemoryLimitError, match="registering 221 x 257 onto 221 x 257 pixels needs"):
        cr.register(fixed, moving, preset="syn")
