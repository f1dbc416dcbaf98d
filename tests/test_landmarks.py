"""Landmark files: every format and coordinate system round-trips, other tools read what we write, transforms map them.

Round trips are exact: numbers are written in Python's shortest round-trip
form and RAS <-> LPS is a sign flip, so world files come back to the last
bit (``index`` files pass through the image's geometry: 1e-9 mm). What we
write is read back by independent readers: Python's ``json`` checked against
the fields of 3D Slicer's markups schema (v1.0.3), the ``.fcsv`` layout
Slicer documents (three header lines, 14 columns) parsed with ``csv``, and,
where the itk-elastix peer is installed (``../shared/peers/install.sh
elastix``), transformix itself reading our ``point`` and ``index`` files.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

import coregister as cr
from coregister.errors import ConfigError, GeometryError, GeometryWarning, UnreadableInputError, UnsupportedFormatError
from coregister.medical import Landmarks, read_landmarks, write_landmarks

LABELS = ["AC", "PC, midline", 'say "hi"', "ünïcode", "5"]
DESCRIPTIONS = ["anterior commissure", "", "quoted, with a comma", "", "x"]
PEERS = Path(os.environ.get("COREGISTER_PEERS", Path.home() / ".cache" / "coregister-peers"))
#: the fields of a markup and of a control point in 3D Slicer's markups schema v1.0.3 (Modules/Loadable/Markups/Resources/Schema)
SLICER_MARKUP_FIELDS = {"type", "name", "coordinateSystem", "coordinateUnits", "locked", "fixedNumberOfControlPoints",
                        "labelFormat", "lastUsedControlPointNumber", "controlPoints", "measurements", "display"}
SLICER_POINT_FIELDS = {"id", "label", "description", "associatedNodeID", "position", "orientation", "selected", "locked",
                       "visibility", "positionStatus"}


@pytest.fixture
def marks() -> Landmarks:
    rng = np.random.default_rng(13)
    return Landmarks(rng.uniform(-120, 120, size=(5, 3)) + rng.normal(size=(5, 3)) * 1e-7, LABELS, DESCRIPTIONS)


@pytest.fixture
def grid() -> cr.SpatialImage:
    """An oblique, anisotropic 3D grid (the index files' image)."""
    direction = Rotation.from_euler("xyz", [20, -10, 35], degrees=True).as_matrix()
    return cr.SpatialImage(np.zeros((40, 50, 60), np.uint8), origin=(-30.5, 12.25, 7.0), spacing=(0.9, 1.1, 2.5),
                           direction=direction)


@pytest.mark.parametrize("system", ["LPS", "RAS"])
@pytest.mark.parametrize("name", ["marks.csv", "marks.fcsv", "marks.mrk.json"])
def test_world_files_round_trip_exactly(marks: Landmarks, tmp_path: Path, name: str, system: str) -> None:
    back = read_landmarks(write_landmarks(marks, tmp_path / name, coordinate_system=system))
    np.testing.assert_array_equal(back.points, marks.points)
    assert back.labels == marks.labels and back.descriptions == marks.descriptions


def test_elastix_point_file_round_trips_exactly(marks: Landmarks, tmp_path: Path) -> None:
    back = read_landmarks(write_landmarks(marks, tmp_path / "marks.txt"))
    np.testing.assert_array_equal(back.points, marks.points)
    assert (tmp_path / "marks.txt").read_text().splitlines()[:2] == ["point", "5"]


def test_elastix_index_file_round_trips_through_the_image(grid: cr.SpatialImage, tmp_path: Path) -> None:
    indices = np.array([[3.0, 7.0, 11.0], [0.0, 0.0, 0.0], [59.0, 49.0, 39.0]])
    marks = Landmarks(grid.index_to_world(indices))
    path = write_landmarks(marks, tmp_path / "marks.pts", coordinate_system="index", image=grid)
    lines = path.read_text().splitlines()
    assert lines[:2] == ["index", "3"]
    np.testing.assert_allclose(np.loadtxt(lines[2:]), indices, atol=1e-9)
    np.testing.assert_allclose(read_landmarks(path, image=grid).points, marks.points, rtol=0, atol=1e-9)


def test_elastix_index_between_voxels_warns(marks: Landmarks, grid: cr.SpatialImage, tmp_path: Path) -> None:
    with pytest.warns(GeometryWarning, match="rounds 'index' points to whole voxels"):
        write_landmarks(marks, tmp_path / "marks.txt", coordinate_system="index", image=grid)
    np.testing.assert_allclose(read_landmarks(tmp_path / "marks.txt", image=grid).points, marks.points, rtol=0, atol=1e-9)


def test_two_dimensional_landmarks_round_trip(tmp_path: Path) -> None:
    marks = Landmarks([[1.5, -2.0], [3.25, 4.0]], ["a", "b"])
    for name in ("m.csv", "m.txt"):
        np.testing.assert_array_equal(read_landmarks(write_landmarks(marks, tmp_path / name)).points, marks.points)
    with pytest.raises(GeometryError, match="3D Slicer markups hold 3D points"):
        write_landmarks(marks, tmp_path / "m.fcsv")


# --------------------------------------------------------------------------- read back by independent readers


@pytest.mark.parametrize("system", ["LPS", "RAS"])
def test_markups_json_holds_slicer_schema_fields(marks: Landmarks, tmp_path: Path, system: str) -> None:
    document = json.loads(write_landmarks(marks, tmp_path / "m.mrk.json", coordinate_system=system).read_text())
    assert document["@schema"].startswith("https://raw.githubusercontent.com/slicer/slicer/master/Modules/Loadable/Markups/"
                                          "Resources/Schema/markups-schema-v1.0.")
    (markup,) = document["markups"]
    assert set(markup) <= SLICER_MARKUP_FIELDS
    assert markup["type"] == "Fiducial" and markup["coordinateSystem"] == system and markup["coordinateUnits"] == "mm"
    expected = marks.ras() if system == "RAS" else marks.points
    for point, position, label, description in zip(markup["controlPoints"], expected, LABELS, DESCRIPTIONS, strict=True):
        assert set(point) <= SLICER_POINT_FIELDS
        assert point["position"] == position.tolist() and len(point["position"]) == 3
        assert (point["label"], point["description"], point["positionStatus"]) == (label, description, "defined")


@pytest.mark.parametrize("system", ["LPS", "RAS"])
def test_fcsv_has_slicers_documented_layout(marks: Landmarks, tmp_path: Path, system: str) -> None:
    text = write_landmarks(marks, tmp_path / "m.fcsv", coordinate_system=system).read_text()
    lines = text.splitlines()
    assert lines[0].startswith("# Markups fiducial file version = ")
    assert lines[1] == f"# CoordinateSystem = {system}"
    assert lines[2] == "# columns = id,x,y,z,ow,ox,oy,oz,vis,sel,lock,label,desc,associatedNodeID"
    rows = list(csv.reader(lines[3:]))
    assert all(len(row) == 14 for row in rows)
    expected = marks.ras() if system == "RAS" else marks.points
    np.testing.assert_array_equal(np.array([[float(v) for v in row[1:4]] for row in rows]), expected)
    assert [row[11] for row in rows] == LABELS and [row[12] for row in rows] == DESCRIPTIONS
    assert all(row[4:11] == ["0", "0", "0", "1", "1", "1", "0"] for row in rows)  # orientation 0,0,0,1; visible, selected


def test_csv_columns_are_as_documented(marks: Landmarks, tmp_path: Path) -> None:
    with open(write_landmarks(marks, tmp_path / "m.csv", coordinate_system="RAS"), newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert list(rows[0]) == ["label", "x", "y", "z", "coordinate_system", "description"]
    np.testing.assert_array_equal(np.array([[float(r[a]) for a in "xyz"] for r in rows]), marks.ras())
    assert {r["coordinate_system"] for r in rows} == {"RAS"} and [r["label"] for r in rows] == LABELS


def _transformix(points_files: list[Path], grid: cr.SpatialImage, shift: tuple[float, ...]) -> list[Path]:
    """Run transformix (the itk-elastix peer, in its own process) on each points file with a translation by ``shift``."""
    python = PEERS / "elastix" / "bin" / "python"
    if not python.exists():
        pytest.skip(f"the itk-elastix peer is not installed in {python.parents[1]} (../shared/peers/install.sh elastix)")
    script = """
import json, sys
import itk, numpy as np
spec, jobs = json.loads(sys.argv[1]), json.loads(sys.argv[2])
parameters = itk.ParameterObject.New()
parameters.AddParameterMap({key: [str(v) for v in value] for key, value in spec.items()})
image = itk.image_from_array(np.zeros(spec["Size"][::-1], np.float32))
for points_file, outdir in jobs:
    itk.transformix_pointset(image, parameters, fixed_point_set_file_name=points_file, output_directory=outdir)
"""
    spec = {"Transform": ["TranslationTransform"], "NumberOfParameters": [3], "TransformParameters": list(shift),
            "InitialTransformParameterFileName": ["NoInitialTransform"], "HowToCombineTransforms": ["Compose"],
            "FixedImageDimension": [3], "MovingImageDimension": [3], "FixedInternalImagePixelType": ["float"],
            "MovingInternalImagePixelType": ["float"], "Size": list(grid.size), "Index": [0, 0, 0],
            "Spacing": list(grid.spacing), "Origin": list(grid.origin),
            "Direction": grid.direction.T.ravel().tolist(),  # elastix lists the direction matrix column by column
            "UseDirectionCosines": ["true"], "ResampleInterpolator": ["FinalNearestNeighborInterpolator"],
            "Resampler": ["DefaultResampler"], "DefaultPixelValue": [0], "ResultImageFormat": ["nii"],
            "ResultImagePixelType": ["float"]}
    jobs = [(str(path), str(path.with_suffix(""))) for path in points_files]
    for _, outdir in jobs:
        Path(outdir).mkdir()
    run = subprocess.run([str(python), "-c", script, json.dumps(spec), json.dumps(jobs)], capture_output=True, text=True,
                         timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    return [Path(outdir) / "outputpoints.txt" for _, outdir in jobs]


@pytest.mark.slow
def test_transformix_reads_our_point_files(grid: cr.SpatialImage, tmp_path: Path) -> None:
    """transformix places our ``point`` and ``index`` files where we do, and its output reads back (6 decimals)."""
    indices = np.array([[3.0, 7.0, 11.0], [12.0, 40.0, 30.0], [59.0, 0.0, 2.0]])
    marks = Landmarks(grid.index_to_world(indices))
    files = [write_landmarks(marks, tmp_path / f"{system}.txt", coordinate_system=system, image=grid) for system in ("LPS", "index")]
    shift = (1.5, -2.25, 3.0)
    for output in _transformix(files, grid, shift):
        inputs = np.array([[float(v) for v in line.split("InputPoint = [")[1].split("]")[0].split()]
                           for line in output.read_text().splitlines()])
        np.testing.assert_allclose(inputs, marks.points, rtol=0, atol=1e-6)
        np.testing.assert_allclose(read_landmarks(output).points, marks.points + shift, rtol=0, atol=1e-6)


# --------------------------------------------------------------------------- files other tools wrote


def _fcsv(system_line: str | None) -> str:
    header = "# Markups fiducial file version = 4.6\n" + (f"# CoordinateSystem = {system_line}\n" if system_line else "")
    return header + ("# columns = id,x,y,z,ow,ox,oy,oz,vis,sel,lock,label,desc,associatedNodeID\n"
                     "vtkMRMLMarkupsFiducialNode_0,1.29,-40.18,60.15,0,0,0,1,1,1,0,F-1,,\n")


@pytest.mark.parametrize(("system_line", "lps"), [("0", [-1.29, 40.18, 60.15]), ("1", [1.29, -40.18, 60.15]),
                                                 ("RAS", [-1.29, 40.18, 60.15]), ("LPS", [1.29, -40.18, 60.15]),
                                                 (None, [-1.29, 40.18, 60.15])])
def test_fcsv_coordinate_system_header_is_honoured(tmp_path: Path, system_line: str | None, lps: list[float]) -> None:
    """Slicer's numeric codes (0 = RAS, 1 = LPS), the names since 4.11, and no line at all (RAS, before 4.11)."""
    (tmp_path / "f.fcsv").write_text(_fcsv(system_line))
    marks = read_landmarks(tmp_path / "f.fcsv")
    assert marks.points.tolist() == [lps] and marks.labels == ("F-1",)


def test_markups_json_as_slicer_documents_it(tmp_path: Path) -> None:
    """The example of Slicer's markups documentation (no coordinateSystem: the schema's default, LPS), and RAS in um."""
    (tmp_path / "a.mrk.json").write_text(json.dumps({"@schema": "x", "markups": [{"type": "Fiducial", "controlPoints": [
        {"label": "F-1", "position": [-53.388409961685827, -73.33572796934868, 0.0]}]}]}))
    assert read_landmarks(tmp_path / "a.mrk.json").points.tolist() == [[-53.388409961685827, -73.33572796934868, 0.0]]
    (tmp_path / "b.mrk.json").write_text(json.dumps({"@schema": "x", "markups": [{"type": "Fiducial", "coordinateSystem": "RAS",
                                                     "coordinateUnits": "um", "controlPoints": [{"position": [1000.0, 2000.0, 500.0]}]}]}))
    assert read_landmarks(tmp_path / "b.mrk.json").points.tolist() == [[-1.0, -2.0, 0.5]]


def test_ants_points_csv_reads_as_lps(tmp_path: Path) -> None:
    """ANTs' ``antsApplyTransformsToPoints`` CSV: ``x,y,z,t,label,comment`` in ITK physical (LPS) space."""
    (tmp_path / "ants.csv").write_text("x,y,z,t,label,comment\n-10.5,20,3,0,1,0\n4,5,6,0,2,0\n")
    marks = read_landmarks(tmp_path / "ants.csv")
    assert marks.points.tolist() == [[-10.5, 20.0, 3.0], [4.0, 5.0, 6.0]] and marks.labels == ("1", "2")
    assert read_landmarks(tmp_path / "ants.csv", coordinate_system="RAS").points.tolist()[0] == [10.5, -20.0, 3.0]


# --------------------------------------------------------------------------- mapped through transforms


@pytest.mark.parametrize("name", ["fixed.fcsv", "fixed.mrk.json", "fixed.csv", "fixed.txt"])
def test_known_rigid_transform_maps_landmarks_to_1e6_mm(marks: Landmarks, tmp_path: Path, name: str) -> None:
    """Fixed-space landmarks written in RAS (Slicer's view) map forward, in LPS, to where the rigid motion puts them."""
    rotation = Rotation.from_euler("zyx", [12.0, -7.0, 4.0], degrees=True).as_matrix()
    transform = cr.Rigid(rotation, [3.5, -1.25, 8.0], center=[10.0, -20.0, 30.0])
    system = "LPS" if name.endswith(".txt") else "RAS"
    fixed = read_landmarks(write_landmarks(marks, tmp_path / name, coordinate_system=system))
    moved = cr.transform_points(transform, fixed)
    assert isinstance(moved, Landmarks) and moved.labels == (marks.labels if system == "RAS" else fixed.labels)
    expected = (marks.points - [10.0, -20.0, 30.0]) @ rotation.T + [10.0, -20.0, 30.0] + [3.5, -1.25, 8.0]
    np.testing.assert_allclose(moved.points, expected, rtol=0, atol=1e-6)
    back = cr.transform_points(transform, read_landmarks(write_landmarks(moved, tmp_path / ("moved_" + name),
                                                                         coordinate_system=system)), inverse=True)
    np.testing.assert_allclose(back.points, marks.points, rtol=0, atol=1e-6)  # moving-space landmarks: the inverse


# --------------------------------------------------------------------------- refusals


def test_refusals_name_the_fix(marks: Landmarks, grid: cr.SpatialImage, tmp_path: Path) -> None:
    write_landmarks(marks, tmp_path / "i.txt", coordinate_system="LPS")
    (tmp_path / "i.txt").write_text((tmp_path / "i.txt").read_text().replace("point", "index", 1))
    with pytest.raises(ConfigError, match="give the image they index"):
        read_landmarks(tmp_path / "i.txt")
    with pytest.raises(ConfigError, match="elastix point files hold ITK physical"):
        write_landmarks(marks, tmp_path / "r.txt", coordinate_system="RAS")
    with pytest.raises(ConfigError, match="for elastix point files"):
        write_landmarks(marks, tmp_path / "r.fcsv", coordinate_system="index", image=grid)
    with pytest.raises(UnsupportedFormatError, match="use .csv, .fcsv"):
        write_landmarks(marks, tmp_path / "m.xyz")
    (tmp_path / "short.txt").write_text("point\n3\n1 2 3\n4 5 6\n")
    with pytest.raises(UnreadableInputError, match="announces 3 points but holds 2"):
        read_landmarks(tmp_path / "short.txt")
    write_landmarks(marks, tmp_path / "m.fcsv", coordinate_system="RAS")
    with pytest.raises(ConfigError, match="states its points are RAS"):
        read_landmarks(tmp_path / "m.fcsv", coordinate_system="LPS")
    with pytest.raises(UnreadableInputError, match="does not exist"):
        read_landmarks(tmp_path / "missing.fcsv")
    with pytest.raises(GeometryError, match="one of each per point"):
        Landmarks([[0.0, 0.0, 0.0]], labels=["a", "b"])
