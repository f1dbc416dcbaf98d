"""A write that runs out of room (a full disk, a quota, ``ulimit -f``) says so in one line and leaves nothing.

The command-line cases run ``coregister`` in its own process under a
file-size limit (``RLIMIT_FSIZE``, SIGXFSZ ignored, so that a write past the
limit fails with ``EFBIG`` as a write to a full disk fails with ``ENOSPC``),
small enough that the output cannot fit. Each writer meets it its own way:
nibabel and Python's files raise ``OSError`` with the code, numpy's
``tofile`` raises one without it, ITK raises a ``RuntimeError``, ITK's text
transform writer and GDAL's TIFF writer carry on as if nothing happened,
and HDF5 (inside ITK) would crash the process at exit. Every case must end
the same way: exit code 1, one line ``coregister: error: cannot write
'OUT': it reached this process's file-size limit ...`` (no traceback, no
line of ITK, HDF5 or libtiff), no output and no ``.part`` folder left, the
inputs as they were. The device-full (``ENOSPC``) and quota paths, which
need a full file system to happen for real, are driven in-process.
"""

from __future__ import annotations

import errno
import hashlib
import os
import resource
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

import coregister
import coregister as cr
from coregister import _files
from coregister.errors import DiskFullError, UnwritableOutputError

ANATOMICAL = "medical/nibabel_anat_func/anatomical.nii"
MOVED = "medical/nibabel_anat_func/reoriented_anat_moved.nii"
FIXED_2D = "medical/itk_brainweb_2d/BrainProtonDensitySliceBorder20.png"
MOVING_2D = "medical/itk_brainweb_2d/BrainProtonDensitySliceShifted13x17y.png"
S2 = "geospatial/arosics_s2_T33UUU"

#: the processes import the coregister these tests import (a relative PYTHONPATH would not survive cwd=tmp_path)
ENV = dict(os.environ, COLUMNS="200", PYTHONPATH=os.pathsep.join(
    [str(Path(coregister.__file__).resolve().parents[1]), os.environ.get("PYTHONPATH", "")]))


def _limited(size: int) -> Callable[[], None]:
    def limit() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails (EFBIG) instead of killing
        resource.setrlimit(resource.RLIMIT_FSIZE, (size, resource.RLIM_INFINITY))

    return limit


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _tree(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


# what each command writes, how big the limit is, and the output its message must name (relative to the run folder)
CASES = {
    # nibabel: OSError(EFBIG) from its file object, inside the output folder's staging
    "register_nifti": (["register", "in/anatomical.nii", "in/moved.nii", "-o", "out"], 20_000, "out/registered.nii"),
    # numpy's tofile: "N requested and M written", no error code
    "register_png": (["register", "in/fixed.png", "in/moving.png", "-o", "out", "--preset", "translation"], 5_000,
                     "out/registered.png"),
    # ITK's image writer: a RuntimeError
    "apply_mha": (["apply", "in/t.tfm", "in/moved.nii", "--reference", "in/anatomical.nii", "-o", "moved.mha"], 3_000,
                  "moved.mha"),
    # ITK's text transform writer: no error at all, the file stops at the limit
    "convert_text": (["transform", "convert", "in/t.tfm", "t.txt"], 100, "t.txt"),
    # HDF5 inside ITK: refused before the write (a failed HDF5 write crashes the process at exit)
    "convert_hdf5": (["transform", "convert", "in/t.tfm", "t.h5"], 2_000, "t.h5"),
    # GDAL's GTiff writer, window by window: libtiff prints its own line on stderr
    "geo_coreg": (["geo", "coreg", "in/ref.tif", "in/tgt.tif", "-o", "corrected.tif"], 200_000, "corrected.tif"),
}


def _inputs(case: str, data: Callable[[str], Path], folder: Path) -> None:
    """The case's inputs, copied (writable) into ``folder/in``."""
    folder.mkdir()
    if case.startswith("geo"):
        shutil.copy(data(f"{S2}/ref_S2A_20160608T153121_T33UUU_sub.tif"), folder / "ref.tif")
        shutil.copy(data(f"{S2}/tgt_S2A_20160529T153631_T33UUU_sub.tif"), folder / "tgt.tif")
    elif case == "register_png":
        shutil.copy(data(FIXED_2D), folder / "fixed.png")
        shutil.copy(data(MOVING_2D), folder / "moving.png")
    else:
        shutil.copy(data(ANATOMICAL), folder / "anatomical.nii")
        shutil.copy(data(MOVED), folder / "moved.nii")
        cr.Rigid.from_angles(np.deg2rad([4.0, -3.0, 2.0]), translation=[3.0, -2.0, 5.0], center=[0.0, 20.0, 0.0]).save(
            folder / "t.tfm"
        )
    for path in folder.iterdir():
        path.chmod(0o644)


@pytest.mark.parametrize("case", list(CASES))
def test_a_command_that_hits_the_file_size_limit_says_so_in_one_line_and_leaves_nothing(
    data: Callable[[str], Path], tmp_path: Path, case: str
) -> None:
    args, limit, output = CASES[case]
    _inputs(case, data, tmp_path / "in")
    before = {p.name: (_digest(p), p.stat().st_mtime_ns) for p in (tmp_path / "in").iterdir()}
    run = subprocess.run([sys.executable, "-m", "coregister", *args, "-q"], cwd=tmp_path, capture_output=True,
                         text=True, timeout=300, env=ENV, preexec_fn=_limited(limit))
    lines = [line for line in run.stderr.splitlines() if line.strip()]
    assert run.returncode == 1, run.stderr
    assert len(lines) == 1, run.stderr  # no traceback, no line of ITK, HDF5 or libtiff
    assert lines[0].startswith(f"coregister: error: cannot write {output!r}: it "), lines[0]
    assert f"this process's file-size limit of {limit:,} bytes (ulimit -f)" in lines[0], lines[0]
    assert ".part" not in lines[0] and "raise the limit" in lines[0], lines[0]
    assert _tree(tmp_path) == sorted(["in", *(f"in/{name}" for name in before)])  # no output, no .part folder
    assert {p.name: (_digest(p), p.stat().st_mtime_ns) for p in (tmp_path / "in").iterdir()} == before


# ------------------------------------------------------------ full devices and quotas, driven in-process
RIGID = cr.Rigid.from_angles([0.1, 0.2, 0.3], translation=[1.0, 2.0, 3.0])
IMAGE = cr.SpatialImage(np.arange(24, dtype=np.float32).reshape(2, 3, 4), origin=(1.0, 2.0, 3.0), spacing=(1.0, 1.0, 2.0))


@pytest.mark.parametrize("code, words", [(errno.ENOSPC, "no space left on the device that holds"),
                                         (errno.EDQUOT, "the disk quota on")])
def test_a_write_that_fills_the_device_names_the_output_and_what_was_written(
    tmp_path: Path, code: int, words: str
) -> None:
    target = tmp_path / "out.bin"
    with pytest.raises(DiskFullError) as caught, _files.atomic_path(target) as tmp:
        tmp.write_bytes(b"x" * 1234)
        raise OSError(code, os.strerror(code))  # what the next write() says on a full device
    message = str(caught.value)
    assert message.startswith(f"cannot write {str(target)!r}: {words} {str(tmp_path)!r}"), message
    assert "after writing 1,234 bytes of it" in message and ".part" not in message
    assert caught.value.errno == code and isinstance(caught.value, UnwritableOutputError | OSError)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("free, full", [(0, True), (10**12, False)])
def test_a_library_error_without_a_code_is_put_down_to_the_disk_only_when_the_disk_is_full(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, free: int, full: bool
) -> None:
    monkeypatch.setattr(_files, "_free_bytes", lambda folder: free)
    original = sitk.ImageFileWriter.Execute

    def write_then_fail(self: sitk.ImageFileWriter, *args: object) -> None:
        original(self, *args)
        raise RuntimeError("ITK ERROR: ImageFileWriter: could not write file")  # what ITK says, without errno

    monkeypatch.setattr(sitk.ImageFileWriter, "Execute", write_then_fail)
    with pytest.raises(UnwritableOutputError) as caught:
        cr.write(IMAGE, tmp_path / "out.mha")
    assert isinstance(caught.value, DiskFullError) == full, caught.value
    if full:
        assert str(caught.value).startswith(f"cannot write {str(tmp_path / 'out.mha')!r}: no space left"), caught.value
    else:
        assert "could not write file" in str(caught.value)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("free, error", [(0, "no space left on the device"), (10**12, "the file read back is incomplete")])
def test_a_transform_file_cut_short_without_an_error_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, free: int, error: str
) -> None:
    monkeypatch.setattr(_files, "_free_bytes", lambda folder: free)
    original = sitk.WriteTransform

    def cut_short(transform: sitk.Transform, path: str) -> None:
        original(transform, path)  # ITK's text writer: a full device leaves a short file and no error
        with open(path, "r+b") as file:
            file.truncate(os.path.getsize(path) // 2)

    monkeypatch.setattr(sitk, "WriteTransform", cut_short)
    with pytest.raises(UnwritableOutputError, match=f"cannot write .*t.tfm.*{error}"):
        RIGID.save(tmp_path / "t.tfm")
    assert list(tmp_path.iterdir()) == []


def test_a_hdf5_file_that_cannot_fit_is_not_started(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_files, "_free_bytes", lambda folder: 1000)
    written: list[str] = []
    monkeypatch.setattr(sitk, "WriteTransform", lambda transform, path: written.append(path))
    with pytest.raises(DiskFullError, match=r"'.*t\.h5': it needs about [0-9,]+ bytes and the device .* has 1,000 bytes"):
        RIGID.save(tmp_path / "t.h5")
    assert written == [] and list(tmp_path.iterdir()) == []
