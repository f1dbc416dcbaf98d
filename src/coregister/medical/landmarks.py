"""Landmarks: named points in world coordinates, read and written as CSV, 3D Slicer and elastix point files.

A :class:`Landmarks` value holds its points in ITK world coordinates: LPS
millimetres for medical images, whatever the file said. The crossing
happens here, at the file, and nowhere else (:func:`~coregister.conventions.flip_ras_lps_points`).

Formats, picked by the file's suffix:

``.csv``
    A header line, then one row per point: ``label,x,y,z,coordinate_system,description``
    (``label,x,y,...`` for 2D). ``coordinate_system`` is ``LPS`` or ``RAS``
    on every row. Read also: any CSV with ``x``, ``y`` (and ``z``) columns,
    e.g. ANTs' ``x,y,z,t,label,comment`` points file; without a
    ``coordinate_system`` column its points are LPS (ITK and ANTs physical
    space) unless ``coordinate_system=`` says otherwise.
``.fcsv``
    3D Slicer's markups fiducial CSV: ``# CoordinateSystem = LPS`` (or
    ``RAS``; older files ``0`` = RAS, ``1`` = LPS; a file without the line is
    RAS, as Slicer before 4.11 wrote it), ``# columns = id,x,y,z,ow,ox,oy,oz,vis,sel,lock,label,desc,associatedNodeID``.
``.json`` (``.mrk.json``)
    3D Slicer's markups JSON: ``markups[].coordinateSystem`` (``LPS``, the
    schema's default, or ``RAS``), ``coordinateUnits`` (``mm`` or ``um``) and
    ``controlPoints[].position``, ``label``, ``description``.
``.txt``, ``.pts``
    elastix/transformix point files: a first line ``point`` (world, ITK
    physical = LPS) or ``index`` (continuous voxel indices ``(x, y, z)`` of
    an image, which :func:`read_landmarks` and :func:`write_landmarks` then
    need), a line with the number of points, then one point per line. A
    file without the keyword holds indices, as transformix reads it.
    Transformix rounds ``index`` points to whole voxels (a warning says so
    when written ones are not): write ``point`` files for exact positions.
    Transformix's own ``outputpoints.txt`` is read too (its ``OutputPoint``
    column).

Numbers are written with Python's shortest round-trip form, so writing and
reading back gives the same points to the last bit (RAS files negate two
coordinates, exactly; ``index`` files go through the image's geometry, to
about 1e-12 mm).

Landmarks picked on the **fixed** image map to the moving image forward
through a registration's transform; landmarks picked on the moving image map
to the fixed image with ``inverse=True`` (DESIGN convention 3):
:func:`coregister.transform_points` takes a :class:`Landmarks` and returns one,
labels kept.
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from coregister._files import atomic_path
from coregister.conventions import flip_ras_lps_points
from coregister.errors import ConfigError, GeometryError, GeometryWarning, UnreadableInputError, UnsupportedFormatError
from coregister.image import SpatialImage

__all__ = ["COORDINATE_SYSTEMS", "Landmarks", "read_landmarks", "write_landmarks"]

#: what ``coordinate_system=`` takes: world LPS or RAS millimetres, or voxel indices (elastix ``index`` files)
COORDINATE_SYSTEMS = ("LPS", "RAS", "index")
#: the schema 3D Slicer names in the markups JSON files it writes
SLICER_SCHEMA = "https://raw.githubusercontent.com/slicer/slicer/master/Modules/Loadable/Markups/Resources/Schema/markups-schema-v1.0.3.json#"
FCSV_COLUMNS = ("id", "x", "y", "z", "ow", "ox", "oy", "oz", "vis", "sel", "lock", "label", "desc", "associatedNodeID")
_UNITS_TO_MM = {"mm": 1.0, "um": 1e-3}


def _frozen(points: Any) -> np.ndarray:
    array = np.array(points, dtype=np.float64, ndmin=2)
    if array.size == 0:
        array = array.reshape(0, array.shape[-1] if array.ndim == 2 and array.shape[-1] in (2, 3) else 3)
    if array.ndim != 2 or array.shape[1] not in (2, 3):
        raise GeometryError(f"landmarks are (n, 2) or (n, 3) world points, got shape {array.shape}; give one row per point")
    if not np.all(np.isfinite(array)):
        raise GeometryError("landmark coordinates must be finite numbers; remove or fix the rows holding NaN or inf")
    array.setflags(write=False)
    return array


@dataclass(frozen=True, eq=False)
class Landmarks:
    """Named points in world coordinates (ITK: LPS mm for medical images), in the order of their file.

    Parameters
    ----------
    points : array_like, shape (n, d)
        World coordinates, ITK order ``(x, y[, z])``, LPS for medical images.
    labels : sequence of str, optional
        One name per point (default ``"1"``, ``"2"``, ...).
    descriptions : sequence of str, optional
        One free text per point (default empty).

    Examples
    --------
    >>> marks = Landmarks([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]], labels=["AC", "PC"])
    >>> len(marks), marks.labels, marks.ndim
    (2, ('AC', 'PC'), 3)
    >>> marks.ras()[0].tolist()
    [-1.0, -2.0, 3.0]
    """

    points: np.ndarray
    labels: Sequence[str] = ()
    descriptions: Sequence[str] = ()

    def __post_init__(self) -> None:
        points = _frozen(self.points)
        count = len(points)
        labels = tuple(str(v) for v in self.labels) or tuple(str(i + 1) for i in range(count))
        descriptions = tuple(str(v) for v in self.descriptions) or ("",) * count
        if len(labels) != count or len(descriptions) != count:
            raise GeometryError(
                f"{count} landmarks with {len(labels)} labels and {len(descriptions)} descriptions; give one of each per point"
            )
        object.__setattr__(self, "points", points)
        object.__setattr__(self, "labels", labels)
        object.__setattr__(self, "descriptions", descriptions)

    def __len__(self) -> int:
        return len(self.points)

    def __array__(self, dtype: Any = None, copy: bool | None = None) -> np.ndarray:
        return np.array(self.points, dtype=dtype, copy=True)

    def __repr__(self) -> str:
        shown = ", ".join(self.labels[:4]) + (", ..." if len(self) > 4 else "")
        return f"Landmarks({len(self)} points in {self.ndim}D: {shown})"

    @property
    def ndim(self) -> int:
        """Number of coordinates per point (2 or 3)."""
        return int(self.points.shape[1])

    def with_points(self, points: Any) -> Landmarks:
        """The same landmarks (labels, descriptions) at new positions, e.g. mapped through a transform."""
        moved = _frozen(points)
        if moved.shape != self.points.shape:
            raise GeometryError(f"{moved.shape} points cannot replace landmarks of shape {self.points.shape}")
        return Landmarks(moved, self.labels, self.descriptions)

    def ras(self) -> np.ndarray:
        """The points in RAS (3D Slicer's, NIfTI's world): the first two LPS coordinates negated."""
        return flip_ras_lps_points(self.points)

    def ordered_like(self, other: Landmarks) -> Landmarks:
        """These landmarks in the order of ``other``'s labels when both hold the same unique labels; else unchanged.

        Corresponding landmarks pair by position in their files; files that
        name every landmark uniquely pair by name, whatever their order.

        Examples
        --------
        >>> a = Landmarks([[0.0, 0.0], [1.0, 1.0]], labels=["x", "y"])
        >>> b = Landmarks([[5.0, 5.0], [6.0, 6.0]], labels=["y", "x"])
        >>> b.ordered_like(a).labels, b.ordered_like(a).points[0].tolist()
        (('x', 'y'), [6.0, 6.0])
        """
        if (
            self.labels == other.labels
            or len(set(self.labels)) != len(self)
            or len(set(other.labels)) != len(other)
            or set(self.labels) != set(other.labels)
        ):
            return self
        where = {label: i for i, label in enumerate(self.labels)}
        order = [where[label] for label in other.labels]
        return Landmarks(self.points[order], [self.labels[i] for i in order], [self.descriptions[i] for i in order])


# --------------------------------------------------------------------------- coordinate systems


def _system(value: str | None, *, what: str) -> str | None:
    if value is None:
        return None
    for name in COORDINATE_SYSTEMS:
        if str(value).strip().lower() == name.lower():
            return name
    raise ConfigError(f"{what} {value!r} is not a coordinate system; use one of {', '.join(COORDINATE_SYSTEMS)}")


def _to_lps(points: np.ndarray, system: str, *, image: SpatialImage | None, path: Path) -> np.ndarray:
    if system == "LPS":
        return points
    if system == "RAS":
        return flip_ras_lps_points(points)
    return _image_for(image, path, points.shape[1]).index_to_world(points)


def _from_lps(points: np.ndarray, system: str, *, image: SpatialImage | None, path: Path) -> np.ndarray:
    if system == "LPS":
        return points
    if system == "RAS":
        return flip_ras_lps_points(points)
    return _image_for(image, path, points.shape[1]).world_to_index(points)


def _image_for(image: SpatialImage | None, path: Path, ndim: int) -> SpatialImage:
    if image is None:
        raise ConfigError(f"{str(path)!r} holds voxel indices: give the image they index (image=...) to place them in the world")
    if image.ndim != ndim:
        raise GeometryError(f"{str(path)!r} holds {ndim}D indices but the image is {image.ndim}D; give the image they index")
    return image


def _agree(stated: str, asked: str | None, path: Path) -> str:
    if asked is not None and asked != stated:
        raise ConfigError(
            f"{str(path)!r} states its points are {stated} but coordinate_system={asked!r} was given; "
            "leave coordinate_system out for files that state theirs"
        )
    return stated


# --------------------------------------------------------------------------- reading


def _format(path: Path) -> str:
    name = path.name.lower()
    for suffix, fmt in ((".fcsv", "fcsv"), (".json", "markups"), (".csv", "csv"), (".txt", "elastix"), (".pts", "elastix")):
        if name.endswith(suffix):
            return fmt
    raise UnsupportedFormatError(
        f"cannot tell the landmark format of {str(path)!r}: use .csv, .fcsv (3D Slicer), .mrk.json (3D Slicer) "
        "or .txt/.pts (elastix point file)"
    )


def read_landmarks(
    path: str | os.PathLike[str], *, image: SpatialImage | None = None, coordinate_system: str | None = None
) -> Landmarks:
    """Read landmarks from a CSV, 3D Slicer (``.fcsv``, ``.mrk.json``) or elastix point file (see the module's notes).

    Parameters
    ----------
    path : path
        The file; its suffix picks the format.
    image : SpatialImage, optional
        The image whose voxel indices an elastix ``index`` file holds.
    coordinate_system : {"LPS", "RAS"}, optional
        For a CSV without a ``coordinate_system`` column (default LPS). Files
        that state their system are read in it (a different value here is an
        error).

    Returns
    -------
    Landmarks
        Points in LPS world coordinates, in the file's order.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "marks.fcsv"
    >>> _ = path.write_text("# Markups fiducial file version = 4.11\\n# CoordinateSystem = RAS\\n"
    ...                     "# columns = id,x,y,z,ow,ox,oy,oz,vis,sel,lock,label,desc,associatedNodeID\\n"
    ...                     "1,10.5,-20,30,0,0,0,1,1,1,0,AC,anterior commissure,\\n")
    >>> marks = read_landmarks(path)
    >>> marks.labels, marks.points.tolist()  # LPS: R and A negated
    (('AC',), [[-10.5, 20.0, 30.0]])
    """
    path = Path(path)
    fmt = _format(path)
    asked = _system(coordinate_system, what="coordinate_system")
    if not path.is_file():
        raise UnreadableInputError(f"landmark file {str(path)!r} does not exist; check the path")
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise UnreadableInputError(f"cannot read the landmark file {str(path)!r}: {exc}") from exc
    readers = {"csv": _read_csv, "fcsv": _read_fcsv, "markups": _read_markups, "elastix": _read_elastix}
    try:
        return readers[fmt](text, path, image, asked)
    except (ValueError, KeyError, IndexError, TypeError) as exc:
        if isinstance(exc, ConfigError | GeometryError):
            raise
        raise UnreadableInputError(f"{str(path)!r} is not a valid {fmt} landmark file: {exc}") from exc


def _column(row: dict[str, str], *names: str) -> str:
    for name in names:
        if row.get(name) not in (None, ""):
            return str(row[name])
    return ""


def _read_csv(text: str, path: Path, image: SpatialImage | None, asked: str | None) -> Landmarks:
    reader = csv.DictReader(io.StringIO(text))
    names = [name.strip().lower() for name in reader.fieldnames or []]
    if "x" not in names or "y" not in names:
        raise UnreadableInputError(
            f"{str(path)!r} has no x and y columns; landmark CSV columns are label,x,y,z,coordinate_system,description"
        )
    axes = [a for a in "xyz" if a in names]
    points: list[np.ndarray] = []
    labels: list[str] = []
    descriptions: list[str] = []
    for number, raw in enumerate(reader, start=2):
        row = {str(k).strip().lower(): (v or "").strip() for k, v in raw.items() if k is not None}
        stated = _system(row.get("coordinate_system") or None, what=f"line {number}'s coordinate_system")
        system = _agree(stated, asked, path) if stated else (asked or "LPS")
        point = np.array([[float(row[a]) for a in axes]])
        points.append(_to_lps(point, system, image=image, path=path)[0])
        labels.append(_column(row, "label", "name", "id") or str(number - 1))
        descriptions.append(_column(row, "description", "desc", "comment"))
    return Landmarks(np.array(points).reshape(-1, len(axes)), labels, descriptions)


def _fcsv_system(text: str, path: Path, asked: str | None) -> str:
    match = re.search(r"^#\s*CoordinateSystem\s*=\s*(\S+)", text, re.M | re.I)
    if match is None:
        return asked or "RAS"  # Slicer before 4.11 wrote RAS and no such line
    value = {"0": "RAS", "1": "LPS"}.get(match.group(1), match.group(1))
    stated = _system(value, what=f"{str(path)!r}'s CoordinateSystem")
    if stated == "index":
        raise UnreadableInputError(f"{str(path)!r}: CoordinateSystem {value!r} is not RAS (0) or LPS (1)")
    return _agree(stated or "RAS", asked, path)


def _read_fcsv(text: str, path: Path, image: SpatialImage | None, asked: str | None) -> Landmarks:
    system = _fcsv_system(text, path, asked)
    match = re.search(r"^#\s*columns\s*=\s*(.+)$", text, re.M | re.I)
    columns = [c.strip() for c in match.group(1).split(",")] if match else list(FCSV_COLUMNS)
    body = [line for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    points: list[list[float]] = []
    labels: list[str] = []
    descriptions: list[str] = []
    for values in csv.reader(body):
        row = dict(zip(columns, values, strict=False))
        points.append([float(row["x"]), float(row["y"]), float(row["z"])])
        labels.append(row.get("label", "") or str(len(labels) + 1))
        descriptions.append(row.get("desc", ""))
    lps = _to_lps(np.array(points, dtype=float).reshape(-1, 3), system, image=image, path=path)
    return Landmarks(lps, labels, descriptions)


def _read_markups(text: str, path: Path, image: SpatialImage | None, asked: str | None) -> Landmarks:
    document = json.loads(text)
    markups = document["markups"]
    points: list[np.ndarray] = []
    labels: list[str] = []
    descriptions: list[str] = []
    for markup in markups:
        system = _agree(_system(markup.get("coordinateSystem", "LPS"), what="coordinateSystem") or "LPS", asked, path)
        units = markup.get("coordinateUnits", "mm")
        units = units[0] if isinstance(units, list) else units
        if units not in _UNITS_TO_MM:
            raise UnreadableInputError(f"{str(path)!r}: coordinateUnits {units!r} is not mm or um")
        for point in markup.get("controlPoints", []):
            label = str(point.get("label", "")) or str(len(labels) + 1)
            if point.get("positionStatus", "defined") == "undefined" or "position" not in point:
                raise GeometryError(f"{str(path)!r}: control point {label!r} has no position; place it in 3D Slicer or remove it")
            position = np.asarray(point["position"], dtype=float)[None, :] * _UNITS_TO_MM[units]
            points.append(_to_lps(position, system, image=image, path=path)[0])
            labels.append(label)
            descriptions.append(str(point.get("description", "")))
    return Landmarks(np.array(points).reshape(-1, 3), labels, descriptions)


_TRANSFORMIX_OUTPUT = re.compile(r"OutputPoint\s*=\s*\[([^\]]*)\]")


def _read_elastix(text: str, path: Path, image: SpatialImage | None, asked: str | None) -> Landmarks:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if lines and _TRANSFORMIX_OUTPUT.search(lines[0]):  # transformix's outputpoints.txt: the mapped world points
        points = np.array([[float(v) for v in _TRANSFORMIX_OUTPUT.search(line).group(1).split()]  # type: ignore[union-attr]
                           for line in lines])
        return Landmarks(points)
    keyword = lines[0].lower() if lines else ""
    if keyword in ("point", "index"):
        lines = lines[1:]
    system = _agree("LPS" if keyword == "point" else "index", asked, path)  # no keyword: indices, as transformix reads
    count = int(lines[0])
    rows = [[float(v) for v in line.split()] for line in lines[1:]]
    if len(rows) != count:
        raise UnreadableInputError(f"{str(path)!r} announces {count} points but holds {len(rows)}; fix its second line")
    points = np.array(rows, dtype=float).reshape(count, -1) if count else np.zeros((0, 3))
    return Landmarks(_to_lps(points, system, image=image, path=path))


# --------------------------------------------------------------------------- writing


def write_landmarks(
    landmarks: Landmarks | Any,
    path: str | os.PathLike[str],
    *,
    coordinate_system: str = "LPS",
    image: SpatialImage | None = None,
) -> Path:
    """Write landmarks as CSV, 3D Slicer ``.fcsv`` / ``.mrk.json`` or an elastix point file (by suffix).

    Parameters
    ----------
    landmarks : Landmarks or array_like (n, d)
        Points in LPS world coordinates.
    path : path
        The file (written atomically); its suffix picks the format.
    coordinate_system : {"LPS", "RAS", "index"}
        How the file states the points: ``LPS`` (the default: what 3D Slicer
        writes since 4.11, and ITK/ANTs physical space) or ``RAS`` for CSV
        and Slicer files, stated in the file; ``LPS`` (a ``point`` file) or
        ``index`` (voxel indices of ``image``) for elastix point files.
    image : SpatialImage, optional
        The image an ``index`` file indexes.

    Returns
    -------
    Path
        ``path``.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> folder = pathlib.Path(tempfile.mkdtemp())
    >>> marks = Landmarks([[-10.5, 20.0, 30.0]], labels=["AC"])
    >>> print(write_landmarks(marks, folder / "m.csv", coordinate_system="RAS").read_text().strip())
    label,x,y,z,coordinate_system,description
    AC,10.5,-20.0,30.0,RAS,
    >>> read_landmarks(folder / "m.csv").points.tolist()
    [[-10.5, 20.0, 30.0]]
    """
    marks = landmarks if isinstance(landmarks, Landmarks) else Landmarks(landmarks)
    path = Path(path)
    fmt = _format(path)
    system = _system(coordinate_system, what="coordinate_system") or "LPS"
    if fmt == "elastix":
        if system == "RAS":
            raise ConfigError("elastix point files hold ITK physical (LPS) points or voxel indices; use coordinate_system='LPS' or 'index'")
    elif system == "index":
        raise ConfigError(f"coordinate_system='index' is for elastix point files (.txt, .pts), not {path.name!r}; use LPS or RAS")
    if fmt in ("fcsv", "markups") and marks.ndim != 3:
        raise GeometryError(f"3D Slicer markups hold 3D points; these landmarks are {marks.ndim}D (write them as .csv)")
    values = _from_lps(marks.points, system, image=image, path=path)
    if system == "index" and not np.allclose(values, np.rint(values), rtol=0.0, atol=1e-6):
        warnings.warn(
            f"{path.name}: transformix rounds 'index' points to whole voxels, and these fall between voxel centres; "
            "write a 'point' file (coordinate_system='LPS') to keep their positions", GeometryWarning, stacklevel=2,
        )
    writers = {"csv": _csv_text, "fcsv": _fcsv_text, "markups": _markups_text, "elastix": _elastix_text}
    text = writers[fmt](marks, values, system)
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return path


def _number(value: float) -> str:
    return repr(float(value))


def _csv_text(marks: Landmarks, values: np.ndarray, system: str) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["label", *"xyz"[: marks.ndim], "coordinate_system", "description"])
    for label, point, description in zip(marks.labels, values, marks.descriptions, strict=True):
        writer.writerow([label, *(_number(v) for v in point), system, description])
    return out.getvalue()


def _fcsv_text(marks: Landmarks, values: np.ndarray, system: str) -> str:
    out = io.StringIO()
    out.write(f"# Markups fiducial file version = 4.11\n# CoordinateSystem = {system}\n# columns = {','.join(FCSV_COLUMNS)}\n")
    writer = csv.writer(out, lineterminator="\n")  # Slicer quotes fields holding commas or quotes the same way
    for index, (label, point, description) in enumerate(zip(marks.labels, values, marks.descriptions, strict=True)):
        writer.writerow([str(index + 1), *(_number(v) for v in point), 0, 0, 0, 1, 1, 1, 0, label, description, ""])
    return out.getvalue()


def _markups_text(marks: Landmarks, values: np.ndarray, system: str) -> str:
    points = [
        {"id": str(i + 1), "label": label, "description": description, "associatedNodeID": "",
         "position": [float(v) for v in point],
         "selected": True, "locked": False, "visibility": True, "positionStatus": "defined"}
        for i, (label, point, description) in enumerate(zip(marks.labels, values, marks.descriptions, strict=True))
    ]
    markup = {"type": "Fiducial", "coordinateSystem": system, "coordinateUnits": "mm", "locked": False,
              "fixedNumberOfControlPoints": False, "labelFormat": "%N-%d", "controlPoints": points}
    return json.dumps({"@schema": SLICER_SCHEMA, "markups": [markup]}, indent=4) + "\n"


def _elastix_text(marks: Landmarks, values: np.ndarray, system: str) -> str:
    lines = ["index" if system == "index" else "point", str(len(marks))]
    lines += [" ".join(_number(v) for v in point) for point in values]
    return "\n".join(lines) + "\n"

