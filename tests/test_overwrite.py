"""Nothing replaced without asking: existing outputs need ``overwrite=True``/``--overwrite``; inputs are never written.

rasterio's ``rio`` convention: an output that exists is an error whose
message names ``--overwrite``; with it the output is replaced in one
rename. A registration folder is "existing output" when it holds the
``result.json`` of a registration or a file this run would write; a rerun
with ``--overwrite`` removes only what the earlier run's ``result.json``
lists as its own.
"""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import numpy as np
import pytest

import coregister as cr
from coregister.cli import EXIT_ERROR, EXIT_OK, main
from coregister.errors import OutputExistsError

FIXED = "medical/itk_brainweb_2d/BrainProtonDensitySliceBorder20.png"
MOVING = "medical/itk_brainweb_2d/BrainProtonDensitySliceShifted13x17y.png"


def _lines(err: str) -> list[str]:
    return [line for line in err.splitlines() if line.strip()]


@pytest.mark.parametrize("name", ["out.nii.gz", "out.mha", "out.tif", "out.png"])
def test_write_refuses_an_existing_file_unless_asked(tmp_path: Path, name: str) -> None:
    image = cr.SpatialImage(np.arange(12, dtype=np.uint8).reshape(3, 4), origin=(0, 0), spacing=(1, 1))
    target = tmp_path / name
    target.write_bytes(b"the user's own file")
    with pytest.raises(OutputExistsError, match=r"exists; pass overwrite=True \(command line: --overwrite\)"):
        cr.write(image, target)
    assert target.read_bytes() == b"the user's own file"
    cr.write(image, target, overwrite=True)
    assert np.array_equal(cr.read(target).array, image.array)
    assert sorted(p.name for p in tmp_path.iterdir()) == [name]  # nothing left beside it


def test_apply_refuses_an_existing_output_and_replaces_it_with_overwrite(
    data, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    transform = cr.Translation([13.0, 17.0]).save(tmp_path / "t.tfm")
    output = tmp_path / "moved.png"
    output.write_bytes(b"unrelated")
    args = ["apply", str(transform), str(data(MOVING)), "--reference", str(data(FIXED)), "-o", str(output)]
    capsys.readouterr()
    assert main(args) == EXIT_ERROR
    lines = _lines(capsys.readouterr().err)
    assert len(lines) == 1 and "exists; pass --overwrite to replace it" in lines[0], lines
    assert output.read_bytes() == b"unrelated"
    assert main([*args, "--overwrite"]) == EXIT_OK
    assert cr.read(output).shape == cr.read(data(FIXED)).shape


def test_a_registration_folder_is_replaced_only_with_overwrite_and_only_what_it_wrote(
    data, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    args = ["register", str(data(FIXED)), str(data(MOVING)), "-o", str(out), "--preset", "translation", "-q"]
    assert main(args) == EXIT_OK
    saved = json.loads((out / "result.json").read_text())
    assert saved["outputs"] == ["registered.png", "transform.tfm", "result.json"]
    (out / "report.html").write_text("the user's own page")  # not written by the run: never removed
    capsys.readouterr()
    assert main(args) == EXIT_ERROR
    lines = _lines(capsys.readouterr().err)
    assert len(lines) == 1 and "already holds outputs this run would replace (registered.png, result.json" in lines[0], lines
    assert "pass --overwrite" in lines[0]
    assert main([*args, "--overwrite", "--preset", "rigid"]) == EXIT_OK
    assert (out / "report.html").read_text() == "the user's own page"
    assert json.loads((out / "result.json").read_text())["transform"]["type"] == "Rigid"


def test_inputs_are_never_opened_for_writing(data, tmp_path: Path) -> None:
    inputs = []
    for name in (FIXED, MOVING):
        copy = tmp_path / Path(name).name
        copy.write_bytes(data(name).read_bytes())
        copy.chmod(stat.S_IRUSR | stat.S_IRGRP | stat.S_IROTH)  # read-only: opening one for writing would fail
        inputs.append(copy)
    before = {p: (p.read_bytes(), os.stat(p).st_mtime_ns, os.stat(p).st_ino) for p in inputs}
    assert main(["register", *map(str, inputs), "-o", str(tmp_path / "out"), "--preset", "translation", "-q"]) == EXIT_OK
    assert {p: (p.read_bytes(), os.stat(p).st_mtime_ns, os.stat(p).st_ino) for p in inputs} == before


def test_geo_commands_follow_the_rio_convention(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from pyproj import CRS

    grid = {"origin": (400005.0, 5799995.0), "spacing": (10.0, 10.0), "direction": np.diag([1.0, -1.0]),
            "crs": CRS.from_epsg(32633)}
    values = np.random.default_rng(3).integers(0, 255, (96, 96)).astype(np.uint8)
    reference = cr.write(cr.SpatialImage(values, **grid), tmp_path / "reference.tif")
    target = cr.write(cr.SpatialImage(np.roll(values, 2, axis=1), **grid), tmp_path / "target.tif")
    output = tmp_path / "change.tif"
    output.write_bytes(b"an earlier map")
    capsys.readouterr()
    assert main(["geo", "change", str(reference), str(target), "-o", str(output)]) == EXIT_ERROR
    lines = _lines(capsys.readouterr().err)
    assert len(lines) == 1 and "change.tif' exists; pass --overwrite" in lines[0], lines
    assert output.read_bytes() == b"an earlier map"


# ------------------------------------------------------------ transform convert, write_transform
RIGID_3D = cr.Rigid.from_angles(np.deg2rad([4.0, -7.0, 11.0]), translation=[2.5, -1.5, 3.0], center=[1.0, 2.0, 3.0])


@pytest.mark.parametrize("name", ["t.txt", "t.h5", "t.json"])
def test_transform_convert_refuses_an_existing_file_and_replaces_it_with_overwrite(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], name: str
) -> None:
    source = RIGID_3D.save(tmp_path / "in.tfm")
    output = tmp_path / name
    output.write_bytes(b"the user's own file")
    args = ["transform", "convert", str(source), str(output)]
    capsys.readouterr()
    assert main(args) == EXIT_ERROR
    lines = _lines(capsys.readouterr().err)
    assert lines == [f"coregister: error: {str(output)!r} exists; pass --overwrite to replace it, or choose another OUT"]
    assert output.read_bytes() == b"the user's own file"
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["in.tfm", name])
    assert main([*args, "--overwrite", "-q"]) == EXIT_OK
    back, given = cr.read_transform(output), cr.read_transform(source)  # converted exactly, bit for bit
    np.testing.assert_array_equal(back.matrix, given.matrix)
    np.testing.assert_array_equal(back.translation, given.translation)


def test_transform_convert_never_replaces_its_input(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    source = RIGID_3D.save(tmp_path / "in.tfm")
    before = source.read_bytes()
    assert main(["transform", "convert", str(source), str(source), "--overwrite"]) == EXIT_ERROR
    assert "refusing to overwrite the input" in capsys.readouterr().err
    assert source.read_bytes() == before


@pytest.mark.parametrize("fmt, path, existing, others", [
    # ANTs: an affine then a warp; the warp is the user's
    ("ants", "ants_", "ants_1Warp.nii.gz", ["ants_0GenericAffine.mat"]),
    # elastix: a chain of two parameter files; the first is the user's
    ("elastix", "TransformParameters.txt", "TransformParameters.0.txt", ["TransformParameters.1.txt"]),
])
def test_a_chain_with_one_existing_file_is_refused_before_any_file_is_written(
    tmp_path: Path, fmt: str, path: str, existing: str, others: list[str]
) -> None:
    grid = cr.SpatialImage(np.zeros((12, 14, 16), np.float32), origin=(-8.0, -7.0, -6.0), spacing=(1.0, 1.0, 1.0))
    spline = cr.BSpline(np.random.default_rng(2).normal(0, 0.5, (3, 6, 6, 6)), grid_origin=[-20.0, -20.0, -20.0],
                        grid_spacing=[8.0, 8.0, 8.0])
    chain = cr.Composite((RIGID_3D, spline))
    (tmp_path / existing).write_bytes(b"the user's own file")
    with pytest.raises(OutputExistsError, match=rf"{existing}' exists; pass overwrite=True \(command line: --overwrite\)"):
        cr.write_transform(chain, tmp_path / path, format=fmt, reference=grid)
    assert sorted(p.name for p in tmp_path.iterdir()) == [existing]  # nothing else written
    assert (tmp_path / existing).read_bytes() == b"the user's own file"
    written = cr.write_transform(chain, tmp_path / path, format=fmt, reference=grid, overwrite=True)
    assert sorted(p.name for p in written) == sorted([existing, *others])


def test_write_refuses_to_replace_a_transform_file_unless_asked(tmp_path: Path) -> None:
    target = tmp_path / "t.tfm"
    target.write_bytes(b"the user's own file")
    with pytest.raises(OutputExistsError, match=r"t\.tfm' exists; pass overwrite=True"):
        cr.write(RIGID_3D, target)
    assert target.read_bytes() == b"the user's own file"
    cr.write(RIGID_3D, target, overwrite=True)
    np.testing.assert_allclose(cr.read_transform(target).matrix, RIGID_3D.matrix, rtol=0, atol=1e-15)  # via Euler angles
