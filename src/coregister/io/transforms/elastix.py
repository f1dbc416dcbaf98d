"""elastix transform parameter files (``TransformParameters.N.txt``), read and written so that transformix applies ours.

Direction: elastix, like ITK and coregister, maps **fixed**-image points to
**moving**-image points, in the world (physical, LPS mm) coordinates ITK
reads from the image headers (``UseDirectionCosines "true"``), so no
convention changes on the way in or out. Each file holds one transform:

* ``TranslationTransform``: ``t``;
* ``EulerTransform``: 2D ``(angle, tx, ty)``, 3D ``(rx, ry, rz, tx, ty, tz)``
  in radians about ``CenterOfRotationPoint``, ``R = Rz Rx Ry`` unless
  ``ComputeZYX "true"`` (``R = Rz Ry Rx``), as ITK's ``Euler3DTransform``;
* ``SimilarityTransform``: 2D ``(scale, angle, tx, ty)``, 3D
  ``(versor x, y, z, tx, ty, tz, scale)``;
* ``AffineTransform``: the matrix row by row, then the translation;
* ``BSplineTransform``: control-point coefficients, all x components first
  (grid in x-fastest order), then y (then z), on the grid ``GridSize``,
  ``GridOrigin``, ``GridSpacing``, ``GridDirection`` (the coefficient grid,
  as ITK's ``BSplineTransform`` holds it);
* ``DeformationFieldTransform``: a displacement-field image beside the file
  (``DeformationFieldFileName``; vectors in LPS mm).

Chains: a file whose ``InitialTransformParameterFileName`` (elastix 5; older
versions spell it ``InitialTransformParametersFileName``) names another file
is applied **after** it: with ``HowToCombineTransforms "Compose"`` a
fixed-space point ``x`` maps to ``T_this(T_initial(x))``. A chain
``0 <- 1 <- 2`` (file 2 naming 1 naming 0) is therefore our
``Composite((T2, T1, T0))`` (last applied first), and we write a composite
``(a, b, c)`` as files ``0: c``, ``1: b``, ``2: a``, giving transformix the
last. Initial files and displacement-field files are named by absolute paths, as
elastix writes them (transformix resolves a relative name from its own
working folder, not from the file's); when a chain has moved to another
folder, the reader looks for a missing file beside the file that names it.
``HowToCombineTransforms "Add"`` is refused.

The header fields ``Size``, ``Spacing``, ``Origin``, ``Direction``,
``Index`` describe the fixed image: transformix resamples onto that grid, so
writing needs the reference (fixed) image.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import SimpleITK as sitk

from coregister.errors import UnreadableInputError, UnsupportedFormatError
from coregister.image import SpatialImage
from coregister.io.transforms._field import FieldParts, field_parts, read_field_image, write_field_image
from coregister.transforms import (
    Affine,
    BSpline,
    Composite,
    LinearTransform,
    Rigid,
    Similarity,
    Transform,
    Translation,
    from_sitk,
)

__all__ = ["ParameterMap", "parse_parameter_text", "read_elastix", "write_elastix"]

logger = logging.getLogger(__name__)

#: a parameter file's contents: name -> values (numbers as float, strings without their quotes)
ParameterMap = dict[str, list[Any]]

_TOKEN = re.compile(r'"([^"]*)"|([^\s()"]+)')
_NO_INITIAL = "NoInitialTransform"
_INITIAL_KEYS = ("InitialTransformParameterFileName", "InitialTransformParametersFileName")
_MAX_CHAIN = 64


def parse_parameter_text(text: str, where: str = "elastix parameter text") -> ParameterMap:
    """The ``(Name value ...)`` entries of an elastix parameter file; ``//`` starts a comment.

    Examples
    --------
    >>> parse_parameter_text('(Transform "EulerTransform") // rigid\\n(Size 4 5)')
    {'Transform': ['EulerTransform'], 'Size': [4.0, 5.0]}
    """
    entries: ParameterMap = {}
    for raw in _entries(text):
        tokens = [(q, bare) for q, bare in _TOKEN.findall(raw)]
        if not tokens or tokens[0][1] == "":
            raise UnreadableInputError(f"{where}: cannot read the entry ({raw.strip()[:60]})")
        name = tokens[0][1]
        values: list[Any] = []
        for quoted, bare in tokens[1:]:
            if bare == "":
                values.append(quoted)
                continue
            try:
                values.append(float(bare))
            except ValueError:
                values.append(bare)
        entries[name] = values
    return entries


def _entries(text: str) -> list[str]:
    """The texts between ``(`` and ``)`` outside quotes, comments removed."""
    out: list[str] = []
    current: list[str] = []
    depth, quoted, i = 0, False, 0
    while i < len(text):
        ch = text[i]
        if not quoted and text.startswith("//", i):
            end = text.find("\n", i)
            i = len(text) if end < 0 else end
            continue
        if ch == '"':
            quoted = not quoted
        if not quoted and ch == "(":
            depth += 1
            current = []
        elif not quoted and ch == ")" and depth:
            depth -= 1
            out.append("".join(current))
        elif depth:
            current.append(ch)
        i += 1
    return out


def _number_list(entries: ParameterMap, key: str, where: str, count: int | None = None) -> np.ndarray:
    if key not in entries:
        raise UnreadableInputError(f"{where} has no ({key} ...) entry; it is not a complete elastix transform file")
    try:
        values = np.array(entries[key], dtype=float)
    except (TypeError, ValueError) as exc:
        raise UnreadableInputError(f"{where}: ({key} ...) holds non-numbers") from exc
    if count is not None and values.size != count:
        raise UnreadableInputError(f"{where}: ({key} ...) has {values.size} values; expected {count}")
    return values


def _word(entries: ParameterMap, key: str, default: str) -> str:
    values = entries.get(key)
    return str(values[0]) if values else default


# ------------------------------------------------------------------ reading
def _one_transform(entries: ParameterMap, where: str, folder: Path) -> Transform:
    kind = _word(entries, "Transform", "")
    dim = int(_number_list(entries, "FixedImageDimension", where, 1)[0]) if "FixedImageDimension" in entries else 3
    params = _number_list(entries, "TransformParameters", where) if kind != "DeformationFieldTransform" else np.zeros(0)
    center = (
        _number_list(entries, "CenterOfRotationPoint", where, dim) if "CenterOfRotationPoint" in entries else np.zeros(dim)
    )
    if kind == "TranslationTransform":
        return Translation(_check_count(params, dim, kind, where))
    if kind == "EulerTransform":
        tx: sitk.Euler2DTransform | sitk.Euler3DTransform
        if dim == 2:
            tx = sitk.Euler2DTransform()
        else:
            tx = sitk.Euler3DTransform()
            tx.SetComputeZYX(_word(entries, "ComputeZYX", "false").lower() == "true")
        tx.SetCenter(tuple(center))
        tx.SetParameters(tuple(_check_count(params, 3 if dim == 2 else 6, kind, where)))
        return from_sitk(tx)
    if kind == "SimilarityTransform":
        sim = sitk.Similarity2DTransform() if dim == 2 else sitk.Similarity3DTransform()
        sim.SetCenter(tuple(center))
        sim.SetParameters(tuple(_check_count(params, 4 if dim == 2 else 7, kind, where)))
        return from_sitk(sim)
    if kind == "AffineTransform":
        values = _check_count(params, dim * dim + dim, kind, where)
        return Affine(values[: dim * dim].reshape(dim, dim), values[dim * dim :], center)
    if kind == "BSplineTransform":
        return _bspline(entries, params, dim, where)
    if kind == "DeformationFieldTransform":
        name = _word(entries, "DeformationFieldFileName", "")
        if not name:
            raise UnreadableInputError(f"{where}: a DeformationFieldTransform needs (DeformationFieldFileName ...)")
        path = _beside(Path(name), folder)
        return read_field_image(path)
    raise UnsupportedFormatError(
        f"{where}: elastix transform {kind!r} is not read by coregister (TranslationTransform, EulerTransform, "
        "SimilarityTransform, AffineTransform, BSplineTransform and DeformationFieldTransform are)"
    )


def _check_count(params: np.ndarray, count: int, kind: str, where: str) -> np.ndarray:
    if params.size != count:
        raise UnreadableInputError(f"{where}: a {kind} has {count} TransformParameters, this file {params.size}")
    return params


def _bspline(entries: ParameterMap, params: np.ndarray, dim: int, where: str) -> BSpline:
    if _word(entries, "UseCyclicTransform", "false").lower() == "true":
        raise UnsupportedFormatError(f"{where}: cyclic B-spline transforms are not read by coregister")
    size = _number_list(entries, "GridSize", where, dim).astype(int)
    if "GridIndex" in entries and np.any(_number_list(entries, "GridIndex", where, dim) != 0):
        raise UnsupportedFormatError(f"{where}: a B-spline grid with a non-zero GridIndex is not read by coregister")
    origin = _number_list(entries, "GridOrigin", where, dim)
    spacing = _number_list(entries, "GridSpacing", where, dim)
    direction = (
        _number_list(entries, "GridDirection", where, dim * dim).reshape(dim, dim)
        if "GridDirection" in entries
        else np.eye(dim)
    )
    order = int(_number_list(entries, "BSplineTransformSplineOrder", where, 1)[0]) if "BSplineTransformSplineOrder" in entries else 3
    if order != 3:
        raise UnsupportedFormatError(f"{where}: B-spline order {order}; coregister reads cubic (order 3) B-splines")
    coefficients = _check_count(params, dim * int(np.prod(size)), "BSplineTransform", where)
    return BSpline(coefficients.reshape(dim, *size[::-1]), origin, spacing, direction, order)


def _beside(path: Path, folder: Path) -> Path:
    """``path`` if it exists; else the same file name in ``folder`` (where the naming file lies)."""
    if not path.is_absolute():
        candidate = folder / path
        if candidate.is_file():
            return candidate
    if path.is_file():
        return path
    candidate = folder / path.name
    if candidate.is_file():
        logger.info("%s not found; using %s beside the file that names it", path, candidate)
        return candidate
    raise UnreadableInputError(
        f"elastix file {str(path)!r} not found, nor beside the file that names it in {str(folder)!r}; "
        "copy the whole chain of TransformParameters files together"
    )


def read_elastix(path: str | os.PathLike[str]) -> Transform:
    """Read an elastix ``TransformParameters`` file and the chain of initial transforms it names.

    Returns
    -------
    Transform
        Maps fixed-space points to moving space (LPS mm), as transformix
        does: one transform, or a :class:`~coregister.Composite` whose last
        member is the first file of the chain.
    """
    members: list[Transform] = []
    current: Path | None = Path(path)
    seen: set[Path] = set()
    while current is not None:
        where = repr(str(current))
        if not current.is_file():
            raise UnreadableInputError(f"elastix transform file {where} does not exist; check the path")
        if current.resolve() in seen or len(seen) >= _MAX_CHAIN:
            raise UnreadableInputError(f"{where}: the chain of initial transforms loops back on itself")
        seen.add(current.resolve())
        try:
            entries = parse_parameter_text(current.read_text(), where)
        except UnicodeDecodeError as exc:
            raise UnreadableInputError(f"{where} is not an elastix parameter text file") from exc
        if "Transform" not in entries:
            raise UnreadableInputError(f"{where} has no (Transform ...) entry; it is not an elastix transform file")
        members.append(_one_transform(entries, where, current.parent))
        initial = next((_word(entries, key, _NO_INITIAL) for key in _INITIAL_KEYS if key in entries), _NO_INITIAL)
        if initial == _NO_INITIAL:
            current = None
            continue
        combine = _word(entries, "HowToCombineTransforms", "Compose")
        if combine != "Compose":
            raise UnsupportedFormatError(
                f"{where}: HowToCombineTransforms {combine!r}; coregister reads chains combined by \"Compose\""
            )
        current = _beside(Path(initial), current.parent)
    return members[0] if len(members) == 1 else Composite(tuple(members))


# ------------------------------------------------------------------ writing
def _format(value: Any) -> str:
    if isinstance(value, str):
        return f'"{value}"'
    if isinstance(value, bool):
        return f'"{str(value).lower()}"'
    if isinstance(value, int | np.integer):
        return str(int(value))
    return repr(float(value)) if float(value) != int(float(value)) or abs(float(value)) >= 1e15 else str(int(float(value)))


def _text(entries: ParameterMap) -> str:
    return "".join(f"({name} {' '.join(_format(v) for v in values)})\n" for name, values in entries.items())


def _linear_entries(t: LinearTransform) -> ParameterMap:
    center = [float(v) for v in t.center]
    if isinstance(t, Translation):
        return {"Transform": ["TranslationTransform"], "TransformParameters": [float(v) for v in t.translation]}
    if isinstance(t, Rigid):
        tx = t.to_sitk()
        out: ParameterMap = {"Transform": ["EulerTransform"], "TransformParameters": list(tx.GetParameters()),
                             "CenterOfRotationPoint": center}  # fmt: skip
        if isinstance(tx, sitk.Euler3DTransform):
            out["ComputeZYX"] = ["true" if tx.GetComputeZYX() else "false"]
        return out
    if isinstance(t, Similarity):
        return {"Transform": ["SimilarityTransform"], "TransformParameters": list(t.to_sitk().GetParameters()),
                "CenterOfRotationPoint": center}  # fmt: skip
    return {
        "Transform": ["AffineTransform"],
        "TransformParameters": [*(float(v) for v in t.matrix.ravel()), *(float(v) for v in t.translation)],
        "CenterOfRotationPoint": center,
    }


def _member_entries(t: Transform, field_path: Path) -> tuple[ParameterMap, FieldParts | None]:
    if isinstance(t, LinearTransform):
        return _linear_entries(t), None
    if isinstance(t, BSpline):
        dim = t.ndim
        return {
            "Transform": ["BSplineTransform"],
            "TransformParameters": [float(v) for v in t.coefficients.ravel()],
            "GridSize": [int(n) for n in t.coefficients.shape[1:][::-1]],
            "GridIndex": [0] * dim,
            "GridSpacing": [float(v) for v in t.grid_spacing],
            "GridOrigin": [float(v) for v in t.grid_origin],
            "GridDirection": [float(v) for v in t.grid_direction.ravel()],
            "BSplineTransformSplineOrder": [int(t.order)],
            "UseCyclicTransform": ["false"],
        }, None
    parts = field_parts(t)
    if parts is not None:
        return {
            "Transform": ["DeformationFieldTransform"],
            "DeformationFieldFileName": [str(field_path.resolve())],  # transformix reads it relative to its cwd
            "DeformationFieldInterpolationOrder": [1],
        }, parts
    raise UnsupportedFormatError(
        f"elastix has no transform for a {type(t).__name__}; write it as JSON (coregister) instead"
    )


def _header(reference: SpatialImage, dim: int) -> ParameterMap:
    return {
        "FixedImageDimension": [dim],
        "MovingImageDimension": [dim],
        "FixedInternalImagePixelType": ["float"],
        "MovingInternalImagePixelType": ["float"],
        "Size": [int(n) for n in reference.size],
        "Index": [0] * dim,
        "Spacing": [float(v) for v in reference.spacing],
        "Origin": [float(v) for v in reference.origin],
        "Direction": [float(v) for v in np.asarray(reference.direction).ravel()],
        "UseDirectionCosines": ["true"],
    }


_RESAMPLING: ParameterMap = {
    "ResampleInterpolator": ["FinalBSplineInterpolator"],
    "FinalBSplineInterpolationOrder": [1],
    "Resampler": ["DefaultResampler"],
    "DefaultPixelValue": [0],
    "ResultImageFormat": ["nii.gz"],
    "ResultImagePixelType": ["float"],
    "CompressResultImage": ["false"],
}


def chain_paths(path: Path, count: int) -> list[Path]:
    """The files of a chain of ``count`` transforms written to ``path``: ``path`` itself for one.

    ``TransformParameters.txt`` (or ``TransformParameters.0.txt``) becomes
    ``TransformParameters.0.txt`` ... ``TransformParameters.{count-1}.txt``,
    as elastix names its stages; the last is the one transformix takes.

    Examples
    --------
    >>> [p.name for p in chain_paths(Path("out/TransformParameters.0.txt"), 2)]
    ['TransformParameters.0.txt', 'TransformParameters.1.txt']
    >>> [p.name for p in chain_paths(Path("rigid.txt"), 1)]
    ['rigid.txt']
    """
    if count == 1:
        return [path]
    stem = re.sub(r"\.\d+$", "", path.stem)
    return [path.with_name(f"{stem}.{k}{path.suffix or '.txt'}") for k in range(count)]


def write_elastix(
    transform: Transform, path: str | os.PathLike[str], *, reference: SpatialImage, overwrite: bool = False
) -> list[Path]:
    """Write ``transform`` (fixed -> moving) as elastix transform parameter files, atomically.

    Parameters
    ----------
    transform : Transform
        Maps fixed-space points to moving space. A composite becomes a chain
        of files (see the module notes); linear members keep their kind
        (Euler, similarity, affine, translation), B-splines stay B-splines,
        displacement fields are written beside as ``<file>.field.nii.gz``.
    path : path-like
        The file to give transformix (``-tp``); with a chain, the files are
        numbered as elastix numbers its stages (:func:`chain_paths`).
    reference : SpatialImage
        The fixed image: its grid goes into ``Size``/``Spacing``/``Origin``/
        ``Direction``, where transformix resamples.
    overwrite : bool
        Replace files that exist; otherwise any of them is refused
        (:class:`~coregister.errors.OutputExistsError`) before a file is written.

    Returns
    -------
    list of Path
        The parameter files, the first applied first; the last is the one
        transformix takes (field images are written beside them).
    """
    from coregister._files import OVERWRITE_FIX, atomic_path, refuse_existing

    members: Sequence[Transform] = transform.transforms if isinstance(transform, Composite) else (transform,)
    if reference.ndim != transform.ndim:
        raise UnsupportedFormatError(f"a {transform.ndim}D transform with a {reference.ndim}D reference image")
    ordered = list(members)[::-1]  # elastix file 0 is applied first: our last member
    paths = chain_paths(Path(path), len(ordered))
    header = _header(reference, transform.ndim)
    # every file named first: an existing one is refused before anything is written
    planned = [(target, target.with_name(target.stem + ".field.nii.gz"), member) for member, target in zip(ordered, paths, strict=True)]
    entries_and_parts = [_member_entries(member, field_path) for _, field_path, member in planned]
    for (target, field_path, _), (_, parts) in zip(planned, entries_and_parts, strict=True):
        for name in (target, field_path) if parts is not None else (target,):
            refuse_existing(name, overwrite=overwrite, fix=OVERWRITE_FIX)
    for k, ((target, field_path, _), (entries, parts)) in enumerate(zip(planned, entries_and_parts, strict=True)):
        body: ParameterMap = {
            **entries,
            "NumberOfParameters": [len(entries.get("TransformParameters", []))],
            # absolute, as elastix writes them: transformix resolves a relative name from its working folder
            "InitialTransformParameterFileName": [str(paths[k - 1].resolve()) if k else _NO_INITIAL],
            "HowToCombineTransforms": ["Compose"],
            **header,
            **_RESAMPLING,
        }
        if parts is not None:
            write_field_image(parts, field_path)
        with atomic_path(target, overwrite=overwrite) as tmp:
            tmp.write_text(_text(body))
    return paths

