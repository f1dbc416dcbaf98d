"""Spatial transforms as immutable values.

Every transform here maps points of the **fixed** space to the **moving**
space, as ITK does: that is the direction resampling needs (for each output
pixel of the fixed grid, where to read in the moving image). To carry a
landmark from the moving image into the fixed image, use the inverse.

A :class:`Composite` applies its **last** transform first, as ITK's
``CompositeTransform`` does; ``a @ b`` means "apply ``b``, then ``a``".

Linear transforms share one parametrisation, ``y = A (x - c) + c + t``
(matrix ``A``, centre ``c``, translation ``t``), which is ITK's
``MatrixOffsetTransformBase``. Conversion to and from SimpleITK is exact.
"""

from __future__ import annotations

import errno
import functools
import itertools
import json
import math
import operator
import os
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, cast

import numpy as np
import SimpleITK as sitk

from coregister.errors import CoregisterError, GeometryError, UnreadableInputError, UnsupportedFormatError
from coregister.image import SpatialImage

__all__ = [
    "Affine",
    "BSpline",
    "Composite",
    "DisplacementField",
    "Homography",
    "LinearTransform",
    "Rigid",
    "Similarity",
    "Transform",
    "Translation",
    "check_itk_text",
    "compose",
    "decompose",
    "field_members",
    "from_dict",
    "from_sitk",
    "linear_members",
    "linear_product",
    "read_transform",
    "sampled_field",
]

_ITK_SUFFIXES = (".tfm", ".txt", ".h5", ".hdf5", ".mat", ".xfm")


def _vector(values: Any, ndim: int | None, name: str) -> np.ndarray:
    out = np.array(values, dtype=float).reshape(-1)
    if ndim is not None and out.size != ndim:
        raise GeometryError(f"{name} {out.tolist()} has {out.size} values; expected {ndim}")
    if not np.all(np.isfinite(out)):
        raise GeometryError(f"{name} {out.tolist()} is not finite")
    out.flags.writeable = False
    return out


def _matrix(values: Any, ndim: int | None, name: str = "matrix") -> np.ndarray:
    out = np.array(values, dtype=float)
    if ndim is None:
        ndim = int(round(math.sqrt(out.size)))
    out = out.reshape(ndim, ndim)
    if not np.all(np.isfinite(out)):
        raise GeometryError(f"{name} {out.tolist()} is not finite")
    out.flags.writeable = False
    return out


def _points(points: Any, ndim: int) -> tuple[np.ndarray, bool]:
    arr = np.asarray(points, dtype=float)
    single = arr.ndim == 1
    arr = np.atleast_2d(arr)
    if arr.shape[-1] != ndim:
        raise GeometryError(f"points of shape {np.shape(points)} do not fit a {ndim}D transform; give (n, {ndim}) coordinates")
    return arr, single


def rotation_matrix(angles_rad: float | Sequence[float]) -> np.ndarray:
    """Rotation matrix from an angle (2D) or Euler angles ``(x, y, z)`` (3D, ``R = Rz Ry Rx``).

    Examples
    --------
    >>> import numpy as np
    >>> np.round(rotation_matrix(np.pi / 2), 12).tolist()
    [[0.0, -1.0], [1.0, 0.0]]
    """
    angles = np.atleast_1d(np.asarray(angles_rad, dtype=float))
    if angles.size == 1:
        c, s = math.cos(angles[0]), math.sin(angles[0])
        return np.array([[c, -s], [s, c]])
    if angles.size != 3:
        raise GeometryError(f"angles {angles.tolist()}: give one angle (2D) or three (3D, about x, y, z)")
    ax, ay, az = angles
    rx = np.array([[1, 0, 0], [0, math.cos(ax), -math.sin(ax)], [0, math.sin(ax), math.cos(ax)]])
    ry = np.array([[math.cos(ay), 0, math.sin(ay)], [0, 1, 0], [-math.sin(ay), 0, math.cos(ay)]])
    rz = np.array([[math.cos(az), -math.sin(az), 0], [math.sin(az), math.cos(az), 0], [0, 0, 1]])
    return rz @ ry @ rx


def _rotation_angles(rotation: np.ndarray) -> np.ndarray:
    """Inverse of :func:`rotation_matrix` (radians)."""
    if rotation.shape == (2, 2):
        return np.array([math.atan2(rotation[1, 0], rotation[0, 0])])
    sy = -rotation[2, 0]
    ay = math.asin(max(-1.0, min(1.0, sy)))
    if abs(sy) < 1 - 1e-12:
        ax = math.atan2(rotation[2, 1], rotation[2, 2])
        az = math.atan2(rotation[1, 0], rotation[0, 0])
    else:  # gimbal lock: put everything into z
        ax = 0.0
        az = math.atan2(-rotation[0, 1], rotation[1, 1])
    return np.array([ax, ay, az])


def decompose(matrix: np.ndarray) -> dict[str, Any]:
    """Decompose a linear map as ``A = R K`` with ``R`` a rotation and ``K`` upper triangular.

    The diagonal of ``K`` gives the scales along the (rotated) axes, its
    off-diagonal terms divided by the scales the shears. A reflection shows
    as ``reflection: True`` with the first scale made negative.

    Returns
    -------
    dict
        ``angles_deg`` (one angle in 2D; about x, y, z for ``R = Rz Ry Rx`` in
        3D), ``scales``, ``shears`` (xy[, xz, yz]), ``reflection``.

    Examples
    --------
    >>> import numpy as np
    >>> d = decompose(rotation_matrix(np.deg2rad(30)) @ np.diag([2.0, 0.5]))
    >>> np.round(d["angles_deg"], 6).tolist(), np.round(d["scales"], 6).tolist(), d["shears"]
    ([30.0], [2.0, 0.5], [0.0])
    """
    a = np.asarray(matrix, dtype=float)
    q, r = np.linalg.qr(a)
    signs = np.sign(np.diag(r))
    signs[signs == 0] = 1.0
    q = q * signs[np.newaxis, :]
    r = r * signs[:, np.newaxis]
    reflection = bool(np.linalg.det(q) < 0)
    if reflection:
        q[:, 0] = -q[:, 0]
        r[0, :] = -r[0, :]
    scales = np.diag(r).copy()
    shear_terms = [r[i, j] / r[i, i] for i in range(a.shape[0]) for j in range(i + 1, a.shape[0])]
    return {
        "angles_deg": [float(v) for v in np.rad2deg(_rotation_angles(q))],
        "scales": [float(v) for v in scales],
        "shears": [float(round(v, 15)) + 0.0 for v in shear_terms],
        "reflection": reflection,
    }


def _decomposition(linear: LinearTransform) -> dict[str, Any]:
    """:func:`decompose` of the matrix, with the two translations a linear map has, each named for what it is."""
    return {
        **decompose(linear.matrix),
        "offset": linear.offset.tolist(),
        "translation_about_center": linear.translation.tolist(),
        "center": linear.center.tolist(),
        "translations": "moving = matrix @ fixed + offset (offset: the world matrix's last column) "
        "= matrix @ (fixed - center) + center + translation_about_center (ITK's parameters; "
        "the top-level 'translation' is translation_about_center)",
    }


def _rotation(values: Any) -> np.ndarray:
    rotation = _matrix(values, None, "rotation")
    if not np.allclose(rotation @ rotation.T, np.eye(rotation.shape[0]), atol=1e-6) or np.linalg.det(rotation) < 0:
        raise GeometryError(f"rotation {rotation.tolist()} is not a proper rotation; use Affine for general matrices")
    return rotation


def _set_translation_center(obj: Any, ndim: int) -> None:
    for name in ("translation", "center"):
        value = getattr(obj, name)
        object.__setattr__(obj, name, _vector(np.zeros(ndim) if value is None else value, ndim, name))


class Transform(ABC):
    """A map from fixed-space points to moving-space points (ITK's direction)."""

    kind: ClassVar[str] = "transform"

    @property
    @abstractmethod
    def ndim(self) -> int:
        """Number of spatial dimensions."""

    @property
    def is_linear(self) -> bool:
        """True for transforms that are a matrix and an offset."""
        return False

    @abstractmethod
    def to_sitk(self) -> sitk.Transform:
        """Convert to a SimpleITK transform that maps points identically."""

    def transform_points(self, points: Any) -> np.ndarray:
        """Map fixed-space points ``(n, d)`` (world units) to moving space."""
        arr, single = _points(points, self.ndim)
        tx = self.to_sitk()
        out = np.array([tx.TransformPoint(tuple(p)) for p in arr])
        return out[0] if single else out

    def inverse(self) -> Transform:
        """The transform mapping moving-space points back to fixed space."""
        raise CoregisterError(
            f"{type(self).__name__} has no closed-form inverse; map moving-space points with "
            "coregister.transform_points(..., inverse=True), which inverts numerically"
        )

    @abstractmethod
    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready description; :func:`from_dict` reads it back."""

    def to_json(self, **kwargs: Any) -> str:
        """JSON text of :meth:`to_dict`."""
        return json.dumps(self.to_dict(), **kwargs)

    def __matmul__(self, other: Transform) -> Transform:
        """``a @ b``: apply ``b`` first, then ``a`` (as a point map)."""
        if not isinstance(other, Transform):
            return NotImplemented
        if self.ndim != other.ndim:
            raise GeometryError(f"cannot compose a {self.ndim}D transform with a {other.ndim}D one")
        if isinstance(other, Homography) and isinstance(self, LinearTransform):
            return Homography(_homogeneous2d(self) @ other.matrix)
        if isinstance(self, LinearTransform) and isinstance(other, LinearTransform):
            h = self.homogeneous @ other.homogeneous
            return Affine(h[:-1, :-1], h[:-1, -1])
        return Composite(_opened((self, other)))

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the transform: ITK ``.tfm``/``.txt``/``.h5``/``.mat`` or ``.json``.

        The file is written atomically (a temporary file renamed into place).
        ITK files load in ``SimpleITK.ReadTransform``, ANTs and 3D Slicer.
        """
        from coregister._files import atomic_path

        path = Path(path)
        suffix = path.suffix.lower()
        fields = field_members(self)
        if fields and (_field_suffix(path) is not None or suffix in (".json", ".tfm", ".txt", ".mat", ".xfm")):
            if _field_suffix(path) is None:
                raise UnsupportedFormatError(
                    f"cannot write a transform holding a displacement field to {str(path)!r}: use .h5 (ITK composite, "
                    "read by ANTs and 3D Slicer) or .nii.gz (the whole map as one displacement field)"
                )
            # the whole map as one field on the grid of its (first) field member: what ANTs' collapsed warp holds
            return sampled_field(self, fields[0].field).save(path)
        if suffix == ".json":
            with atomic_path(path) as tmp:
                tmp.write_text(self.to_json(indent=2))
        elif suffix in _ITK_SUFFIXES:
            to_write: Transform = self
            if suffix == ".mat" and isinstance(self, Composite):
                # A MATLAB-format (ANTs) file holds one transform: merge a linear chain, refuse anything else.
                to_write = self.flattened()
                if isinstance(to_write, Composite):
                    raise UnsupportedFormatError(
                        f"cannot write a composite with non-linear members to {str(path)!r}: a .mat file holds "
                        "one transform; use .h5 or .tfm"
                    )
            _write_itk_transform(to_write.to_sitk(), path, suffix)
        else:
            raise UnsupportedFormatError(
                f"cannot write a transform to {str(path)!r}: use .tfm, .txt, .h5, .mat (ITK) or .json"
                + ("; a displacement field also .nii.gz" if isinstance(self, DisplacementField) else "")
            )
        return path


#: ITK transform files whose writers (C++ streams) do not report a failed write: read back after writing
_UNCHECKED_SUFFIXES = (".tfm", ".txt", ".mat")
#: what an ITK HDF5 transform file holds besides its numbers (about 8 kB; the estimate allows for more)
_HDF5_OVERHEAD = 1 << 16


def _itk_numbers(tx: sitk.Transform) -> list[tuple[str, tuple[float, ...], tuple[float, ...]]]:
    """``(name, parameters, fixed parameters)`` of each transform of ``tx``, composites opened."""
    if tx.GetName() == "CompositeTransform":
        chain = sitk.CompositeTransform(tx)
        return [part for k in range(chain.GetNumberOfTransforms()) for part in _itk_numbers(chain.GetNthTransform(k))]
    return [(tx.GetName(), tx.GetParameters(), tx.GetFixedParameters())]


def _itk_count(tx: sitk.Transform) -> int:
    """How many numbers ``tx`` holds (parameters and fixed parameters, composites opened)."""
    if tx.GetName() == "CompositeTransform":
        chain = sitk.CompositeTransform(tx)
        return sum(_itk_count(chain.GetNthTransform(k)) for k in range(chain.GetNumberOfTransforms()))
    return int(tx.GetNumberOfParameters()) + int(tx.GetNumberOfFixedParameters())


def _write_itk_transform(tx: sitk.Transform, path: Path, suffix: str) -> None:
    """``sitk.WriteTransform`` to ``path`` atomically, its stderr logged, a write that failed part way refused.

    HDF5 cannot fail cleanly part way (the half-closed file crashes the
    process at exit): the room is checked first. The text and MATLAB
    writers ignore failed writes: the file is read back and compared.
    """
    from coregister._files import atomic_path, ensure_room
    from coregister._stderr import captured_stderr

    with atomic_path(path) as tmp:
        if suffix in (".h5", ".hdf5"):
            ensure_room(tmp, 8 * _itk_count(tx) + _HDF5_OVERHEAD)
        with captured_stderr(f"writing {path}"):
            sitk.WriteTransform(tx, str(tmp))
        if suffix in _UNCHECKED_SUFFIXES:
            try:
                with captured_stderr(f"reading back {path}"):
                    same = _itk_numbers(sitk.ReadTransform(str(tmp))) == _itk_numbers(tx)
            except RuntimeError:
                same = False
            if not same:  # the device filled up, or the file system failed: the file is not what was written
                raise OSError(errno.EIO, "the file read back is incomplete", str(tmp))


class LinearTransform(Transform):
    """Common base of linear transforms: ``y = A (x - c) + c + t``.

    Subclasses provide ``matrix`` (``A``, d x d), ``translation`` (``t``) and
    ``center`` (``c``).
    """

    matrix: np.ndarray
    translation: np.ndarray
    center: np.ndarray

    @property
    def is_linear(self) -> bool:
        return True

    @property
    def ndim(self) -> int:
        return int(self.matrix.shape[0])

    @property
    def offset(self) -> np.ndarray:
        """``o`` in ``y = A x + o``."""
        return self.translation + self.center - self.matrix @ self.center

    @property
    def homogeneous(self) -> np.ndarray:
        """The (d+1) x (d+1) world matrix of the point map."""
        h = np.eye(self.ndim + 1)
        h[:-1, :-1] = self.matrix
        h[:-1, -1] = self.offset
        return h

    def transform_points(self, points: Any) -> np.ndarray:
        arr, single = _points(points, self.ndim)
        out = arr @ self.matrix.T + self.offset
        return out[0] if single else out

    def inverse(self) -> LinearTransform:
        inv = np.linalg.inv(self.matrix)
        return Affine(inv, -inv @ self.offset)

    def to_dict(self) -> dict[str, Any]:
        return {
            "type": type(self).__name__,
            "ndim": self.ndim,
            "fixed_to_moving": True,
            "matrix": self.matrix.tolist(),
            "translation": self.translation.tolist(),
            "center": self.center.tolist(),
            "world_matrix": self.homogeneous.tolist(),
            "decomposition": _decomposition(self),
        }

    def _sitk_common(self, tx: Any) -> sitk.Transform:
        tx.SetCenter(tuple(self.center.tolist()))
        tx.SetTranslation(tuple(self.translation.tolist()))
        return tx


@dataclass(frozen=True, eq=False)
class Translation(LinearTransform):
    """A shift: fixed-space point ``x`` maps to ``x + offset`` in moving space.

    Examples
    --------
    >>> Translation([1.0, 2.0]).transform_points([[0.0, 0.0]]).tolist()
    [[1.0, 2.0]]
    >>> Translation([1.0, 2.0]).inverse().translation.tolist()
    [-1.0, -2.0]
    """

    translation: Any

    def __post_init__(self) -> None:
        object.__setattr__(self, "translation", _vector(self.translation, None, "translation"))

    @property
    def matrix(self) -> np.ndarray:  # type: ignore[override]
        return np.eye(self.translation.size)

    @property
    def center(self) -> np.ndarray:  # type: ignore[override]
        return np.zeros(self.translation.size)

    def inverse(self) -> Translation:
        return Translation(-self.translation)

    def to_sitk(self) -> sitk.Transform:
        return sitk.TranslationTransform(self.ndim, tuple(self.translation.tolist()))


@dataclass(frozen=True, eq=False)
class Rigid(LinearTransform):
    """A rotation about ``center`` then a translation, mapping fixed-space points to moving space.

    ``y = R (x - center) + center + translation``. Build one from angles
    with :meth:`from_angles` (one angle in 2D; Euler angles about x, y, z
    with ``R = Rz Ry Rx`` in 3D).

    Examples
    --------
    >>> import numpy as np
    >>> t = Rigid.from_angles(np.deg2rad(90), translation=[1.0, 0.0])
    >>> np.round(t.transform_points([[1.0, 0.0]]), 12).tolist()
    [[1.0, 1.0]]
    >>> np.round(t.angles_deg, 9).tolist()
    [90.0]
    """

    rotation: Any
    translation: Any = None
    center: Any = None

    def __post_init__(self) -> None:
        rotation = _rotation(self.rotation)
        object.__setattr__(self, "rotation", rotation)
        _set_translation_center(self, rotation.shape[0])

    @classmethod
    def from_angles(
        cls, angles_rad: float | Sequence[float], *, translation: Any = None, center: Any = None
    ) -> Rigid:
        """Build from an angle (2D) or Euler angles about x, y, z (3D), in radians."""
        return cls(rotation_matrix(angles_rad), translation, center)

    @property
    def matrix(self) -> np.ndarray:  # type: ignore[override]
        return self.rotation

    @property
    def angles_deg(self) -> np.ndarray:
        """Rotation angle(s) in degrees (2D: one; 3D: about x, y, z)."""
        return np.rad2deg(_rotation_angles(self.rotation))

    def inverse(self) -> Rigid:
        rt = self.rotation.T
        return Rigid(rt, -rt @ self.offset)

    def to_sitk(self) -> sitk.Transform:
        tx = sitk.Euler2DTransform() if self.ndim == 2 else sitk.Euler3DTransform()
        tx.SetCenter(tuple(self.center.tolist()))
        tx.SetMatrix(tuple(self.rotation.ravel().tolist()), 1e-6)
        tx.SetTranslation(tuple(self.translation.tolist()))
        return tx


@dataclass(frozen=True, eq=False)
class Similarity(LinearTransform):
    """An isotropic scaling and rotation about ``center``, then a translation (fixed -> moving).

    ``y = s R (x - center) + center + translation``.

    Examples
    --------
    >>> import numpy as np
    >>> t = Similarity(2.0, np.eye(2), translation=[1.0, 1.0])
    >>> t.transform_points([[1.0, 0.0]]).tolist()
    [[3.0, 1.0]]
    >>> t.inverse().transform_points([[3.0, 1.0]]).tolist()
    [[1.0, 0.0]]
    """

    scale: float
    rotation: Any
    translation: Any = None
    center: Any = None

    def __post_init__(self) -> None:
        if not (np.isfinite(self.scale) and self.scale > 0):
            raise GeometryError(f"scale {self.scale} must be positive; a reflection needs Affine")
        rotation = _rotation(self.rotation)
        object.__setattr__(self, "scale", float(self.scale))
        object.__setattr__(self, "rotation", rotation)
        _set_translation_center(self, rotation.shape[0])

    @classmethod
    def from_angles(
        cls, scale: float, angles_rad: float | Sequence[float], *, translation: Any = None, center: Any = None
    ) -> Similarity:
        """Build from a scale and an angle (2D) or Euler angles about x, y, z (3D), in radians."""
        return cls(scale, rotation_matrix(angles_rad), translation, center)

    @property
    def matrix(self) -> np.ndarray:  # type: ignore[override]
        return self.scale * self.rotation

    def inverse(self) -> Similarity:
        rt = self.rotation.T
        return Similarity(1.0 / self.scale, rt, -(rt @ self.offset) / self.scale)

    def to_sitk(self) -> sitk.Transform:
        tx = sitk.Similarity2DTransform() if self.ndim == 2 else sitk.Similarity3DTransform()
        tx.SetCenter(tuple(self.center.tolist()))
        tx.SetMatrix(tuple(self.rotation.ravel().tolist()), 1e-6)  # sets scale 1
        tx.SetScale(self.scale)
        tx.SetTranslation(tuple(self.translation.tolist()))
        return tx


@dataclass(frozen=True, eq=False)
class Affine(LinearTransform):
    """A general linear map and translation (fixed -> moving): ``y = A (x - center) + center + translation``.

    Examples
    --------
    >>> import numpy as np
    >>> t = Affine([[2.0, 0.0], [0.0, 1.0]], [1.0, 0.0])
    >>> t.transform_points([[1.0, 1.0]]).tolist()
    [[3.0, 1.0]]
    >>> np.allclose(t.inverse().transform_points([[3.0, 1.0]]), [[1.0, 1.0]])
    True
    """

    matrix: Any
    translation: Any = None
    center: Any = None

    def __post_init__(self) -> None:
        m = _matrix(self.matrix, None)
        if abs(np.linalg.det(m)) < 1e-12:
            raise GeometryError(f"matrix {m.tolist()} is singular; a registration transform must be invertible")
        object.__setattr__(self, "matrix", m)
        _set_translation_center(self, m.shape[0])

    @classmethod
    def from_homogeneous(cls, matrix: Any) -> Affine:
        """Build from a (d+1) x (d+1) homogeneous point map."""
        h = np.asarray(matrix, dtype=float)
        return cls(h[:-1, :-1], h[:-1, -1])

    def to_sitk(self) -> sitk.Transform:
        tx = sitk.AffineTransform(self.ndim)
        tx.SetMatrix(tuple(self.matrix.ravel().tolist()))
        return self._sitk_common(tx)


class _Warp(Transform):
    """A transform ``x -> x + u(x)`` given by its displacement ``u``, inverted point by point."""

    @abstractmethod
    def displacement(self, points: Any) -> np.ndarray:
        """Displacement ``u(x)`` at fixed-space points."""

    @abstractmethod
    def _domain_index(self, points: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Continuous grid indices of ``points`` and the lowest and highest index where ``u`` is defined."""

    @abstractmethod
    def _domain_to_world(self, index: np.ndarray) -> np.ndarray:
        """World points of continuous grid indices (the inverse of :meth:`_domain_index`'s first answer)."""

    @staticmethod
    def _within(index: np.ndarray, low: np.ndarray, high: np.ndarray) -> np.ndarray:
        """Which rows of ``index`` lie within ``[low, high]`` on every axis."""
        return np.all((index >= low) & (index <= high), axis=1)

    def _inside(self, points: np.ndarray) -> np.ndarray:
        return self._within(*self._domain_index(points))

    def inverse_points(self, points: Any, *, tolerance: float = 1e-6, max_iterations: int = 100) -> np.ndarray:
        """Map moving-space points back to fixed space by fixed-point iteration ``x = y - u(x)``.

        The warp is the identity outside its domain (ITK's convention), so a
        point that it carries out of the domain has two preimages: the one it
        came from, inside, and itself. The iteration started at ``y`` finds
        the second; where it does, it is started again from the domain's
        nearest point, and a preimage found inside the domain is the answer.
        """
        y, single = _points(points, self.ndim)
        x = self._solve(y, y.copy(), tolerance=tolerance, max_iterations=max_iterations)
        outside = np.flatnonzero(~self._inside(x)) if x.size else np.zeros(0, dtype=int)
        if outside.size:
            index, low, high = self._domain_index(y[outside])
            start = self._domain_to_world(np.clip(index, low + 1e-6, high - 1e-6))
            found = self._solve(y[outside], start, tolerance=tolerance, max_iterations=max_iterations)
            residual = np.max(np.abs(found + self.displacement(found) - y[outside]), axis=1)
            keep = self._inside(found) & (residual <= 100.0 * tolerance)
            x[outside[keep]] = found[keep]
        return x[0] if single else x

    def _solve(self, y: np.ndarray, x: np.ndarray, *, tolerance: float, max_iterations: int) -> np.ndarray:
        """``x`` with ``x + u(x) = y``, by fixed-point iteration from the estimate ``x`` (each point until it settles)."""
        x = x.copy()
        active = np.arange(len(x))
        for _ in range(max_iterations):
            if not active.size:
                break
            x_new = y[active] - self.displacement(x[active])
            moving = np.max(np.abs(x_new - x[active]), axis=1) >= tolerance
            x[active] = x_new
            active = active[moving]
        return x


@dataclass(frozen=True, eq=False)
class BSpline(_Warp):
    """A cubic B-spline free-form deformation: fixed-space ``x`` maps to ``x + u(x)`` in moving space.

    The displacement ``u`` is set by control-point coefficients on a grid
    (one array per world axis), exactly as ITK's ``BSplineTransform`` holds
    them. Outside the grid's support the displacement is zero.

    Parameters
    ----------
    coefficients : ndarray, shape (d, *grid) with grid in array order ``(z, y, x)``
        Displacement coefficient of each control point along each world axis.
    grid_origin, grid_spacing : sequence of float
        Geometry of the control-point grid, ITK order ``(x, y[, z])``.
    grid_direction : ndarray (d, d)
        Direction of the control-point grid.
    order : int
        Spline order (3).
    """

    coefficients: Any
    grid_origin: Any
    grid_spacing: Any
    grid_direction: Any = None
    order: int = 3

    def __post_init__(self) -> None:
        coeff = np.array(self.coefficients, dtype=float)
        ndim = coeff.shape[0]
        if coeff.ndim != ndim + 1 or ndim not in (2, 3):
            raise GeometryError(f"B-spline coefficients of shape {coeff.shape}: expected (d, *grid) with d in (2, 3)")
        coeff.flags.writeable = False
        object.__setattr__(self, "coefficients", coeff)
        object.__setattr__(self, "grid_origin", _vector(self.grid_origin, ndim, "grid_origin"))
        object.__setattr__(self, "grid_spacing", _vector(self.grid_spacing, ndim, "grid_spacing"))
        direction = np.eye(ndim) if self.grid_direction is None else self.grid_direction
        object.__setattr__(self, "grid_direction", _matrix(direction, ndim, "grid_direction"))

    kind: ClassVar[str] = "bspline"

    @property
    def ndim(self) -> int:
        return int(self.coefficients.shape[0])

    def to_sitk(self) -> sitk.Transform:
        images = []
        for comp in self.coefficients:
            img = sitk.GetImageFromArray(np.ascontiguousarray(comp))
            img.SetOrigin(tuple(self.grid_origin.tolist()))
            img.SetSpacing(tuple(self.grid_spacing.tolist()))
            img.SetDirection(tuple(self.grid_direction.ravel().tolist()))
            images.append(img)
        return sitk.BSplineTransform(images, self.order)

    @classmethod
    def _from_sitk(cls, tx: sitk.BSplineTransform) -> BSpline:
        images = tx.GetCoefficientImages()
        first = images[0]
        return cls(
            np.stack([sitk.GetArrayFromImage(img) for img in images]),
            first.GetOrigin(),
            first.GetSpacing(),
            np.array(first.GetDirection()).reshape(first.GetDimension(), -1),
            int(tx.GetOrder()),
        )

    def transform_points(self, points: Any) -> np.ndarray:
        """Map fixed-space points to moving space, as ITK's ``BSplineTransform`` does, all points at once.

        A cubic spline is evaluated by SciPy (``map_coordinates`` on the
        coefficients, no prefilter: the sum of the coefficients weighted by
        the cubic B-spline, ITK's sum); where ITK would need a control point
        beyond the grid the map is the identity, as in ITK. Other orders go
        through ITK point by point.

        Examples
        --------
        >>> coefficients = np.zeros((2, 6, 6))
        >>> coefficients[0, 2:4, 2:4] = 6.0  # the middle four control points pushed 6 mm along x
        >>> spline = BSpline(coefficients, grid_origin=(-10.0, -10.0), grid_spacing=(10.0, 10.0))
        >>> spline.transform_points([[15.0, 15.0], [-5.0, 15.0]]).round(6).tolist()  # the centre; outside
        [[20.510417, 15.0], [-5.0, 15.0]]
        """
        if self.order != 3:
            return super().transform_points(points)
        from scipy import ndimage

        arr, single = _points(points, self.ndim)
        index, low, high = self._domain_index(arr)
        inside = self._within(index, low, high)
        coords = index[inside][:, ::-1].T  # array order (z, y[, x])
        out = arr.copy()
        for c in range(self.ndim):
            out[inside, c] += ndimage.map_coordinates(self.coefficients[c], coords, order=3, prefilter=False,
                                                      mode="nearest")
        return out[0] if single else out

    def displacement(self, points: Any) -> np.ndarray:
        """Displacement ``u(x)`` at fixed-space points."""
        arr, _ = _points(points, self.ndim)
        return self.transform_points(arr) - arr

    def _domain_index(self, points: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        # ITK's spline is defined where every control point it needs exists: (order - 1) / 2 grid cells in from
        # the outer ones (order 3: from the second control point to the last but one, both included)
        index = (points - self.grid_origin) @ np.linalg.inv(self.grid_direction @ np.diag(self.grid_spacing)).T
        margin = (self.order - 1) / 2.0
        return index, np.full(self.ndim, margin), np.asarray(self.coefficients.shape[1:][::-1], float) - 1.0 - margin

    def _domain_to_world(self, index: np.ndarray) -> np.ndarray:
        return index @ (self.grid_direction @ np.diag(self.grid_spacing)).T + self.grid_origin

    def to_dict(self) -> dict[str, Any]:
        return {
            "type": "BSpline",
            "ndim": self.ndim,
            "fixed_to_moving": True,
            "order": self.order,
            "grid_shape": list(self.coefficients.shape[1:]),
            "grid_origin": self.grid_origin.tolist(),
            "grid_spacing": self.grid_spacing.tolist(),
            "grid_direction": self.grid_direction.tolist(),
            "max_coefficient": float(np.abs(self.coefficients).max()) if self.coefficients.size else 0.0,
            "coefficients": self.coefficients.tolist(),
        }


#: image suffixes a displacement field is saved to and read from (a vector image, as ANTs writes its warps)
_FIELD_SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd")
#: InvertDisplacementField: iterations, and the mean and largest residual (world units) at which it stops
_INVERSE_ITERATIONS = 100
_INVERSE_MEAN_TOLERANCE = 1e-4
_INVERSE_MAX_TOLERANCE = 0.01


def _field_suffix(path: Path) -> str | None:
    name = path.name.lower()
    return next((s for s in _FIELD_SUFFIXES if name.endswith(s)), None)


@dataclass(frozen=True, eq=False)
class DisplacementField(_Warp):
    """A dense displacement field: fixed-space ``x`` maps to ``x + u(x)`` in moving space.

    ``u`` is sampled on a grid (``field``, a :class:`~coregister.image.SpatialImage`
    whose trailing axis holds the ``d`` world components of each
    displacement, ITK/LPS order ``(x, y[, z])`` for medical images) and
    interpolated linearly between grid points, exactly as ITK's
    ``DisplacementFieldTransform`` does; beyond half a voxel outside the
    grid the displacement is zero (ITK's convention, kept here).

    A field saves to a vector image (``.nii.gz``: NIfTI intent vector, the
    components in ITK/LPS world units whatever the header's RAS affine says,
    as ANTs writes its ``*Warp.nii.gz``; also ``.nrrd``/``.mha``) or an ITK
    ``.h5`` transform file (read back by :func:`coregister.read_transform`).
    :meth:`inverse` inverts it numerically
    (SimpleITK's ``InvertDisplacementField``) and the inverse states its
    residual.

    Parameters
    ----------
    field : SpatialImage
        Spatial grid with a trailing axis of ``d`` components (float64 kept).
    inverse_residual_mm : (float, float), optional
        For a field computed as the inverse of another (:meth:`inverse`): the
        mean and the largest ``|g(f(y)) - y|`` over its grid points whose
        image ``f(y)`` lies inside ``g``'s grid, where ``f`` is this field and
        ``g`` the one it inverts (world units).

    Examples
    --------
    >>> import numpy as np
    >>> from coregister.image import SpatialImage
    >>> y, x = np.mgrid[0:16, 0:20]
    >>> vectors = np.zeros((16, 20, 2))
    >>> vectors[..., 0] = 1.5 * np.exp(-((x - 10.0) ** 2 + (y - 8.0) ** 2) / 20.0)  # a bump along x
    >>> bump = DisplacementField(SpatialImage(vectors, origin=(0.0, 0.0), spacing=(2.0, 2.0)))
    >>> bump.transform_points([[20.0, 16.0]]).tolist()  # the bump's centre (index 10, 8) moves 1.5 along x
    [[21.5, 16.0]]
    >>> back = bump.inverse()  # exact to 0.01 at its grid points, interpolated linearly between them
    >>> np.round(back.transform_points([[21.5, 16.0]]), 1).tolist(), back.inverse_residual_mm[1] <= 0.01
    ([[20.0, 16.0]], True)
    """

    field: SpatialImage
    inverse_residual_mm: tuple[float, float] | None = None

    kind: ClassVar[str] = "field"

    def __post_init__(self) -> None:
        field = self.field
        if not isinstance(field, SpatialImage):
            raise GeometryError(f"a DisplacementField holds a SpatialImage with a vector axis, not {type(field).__name__}")
        if not field.has_channels or field.n_channels != field.ndim:
            raise GeometryError(
                f"a {field.ndim}D displacement field needs {field.ndim} components per grid point; this image has "
                f"{field.n_channels if field.has_channels else 'no'} (array shape {field.array.shape})"
            )
        vectors = np.asarray(field.array, dtype=np.float64)
        if not np.all(np.isfinite(vectors)):
            raise GeometryError("the displacement field holds non-finite vectors; fill or mask them before building a transform")
        object.__setattr__(self, "field", field.replace(array=vectors, mask=None, nodata=None, meta={}))
        if self.inverse_residual_mm is not None:
            mean, largest = (float(v) for v in self.inverse_residual_mm)
            object.__setattr__(self, "inverse_residual_mm", (mean, largest))

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_sitk_image(cls, image: sitk.Image, *, inverse_residual_mm: tuple[float, float] | None = None) -> DisplacementField:
        """Wrap a SimpleITK vector image (a displacement field: one component per axis, world units)."""
        if image.GetNumberOfComponentsPerPixel() != image.GetDimension():
            raise GeometryError(
                f"a displacement field has {image.GetDimension()} components per pixel in {image.GetDimension()}D; this "
                f"image has {image.GetNumberOfComponentsPerPixel()}"
            )
        return cls(SpatialImage.from_sitk(image), inverse_residual_mm)

    @property
    def ndim(self) -> int:
        return self.field.ndim

    @property
    def vectors(self) -> np.ndarray:
        """The displacements, shape ``grid shape (z, y[, x]) + (d,)``, components ``(x, y[, z])``."""
        return self.field.array

    def to_sitk_image(self) -> sitk.Image:
        """The field as a SimpleITK vector image of float64 (a new copy)."""
        return self.field.to_sitk()

    def to_sitk(self) -> sitk.Transform:
        return sitk.DisplacementFieldTransform(self.to_sitk_image())

    # ------------------------------------------------------------------ evaluation
    def displacement(self, points: Any) -> np.ndarray:
        """``u(x)`` at fixed-space points, as ITK evaluates it: linear inside the grid, zero beyond its outer voxels."""
        from scipy import ndimage

        arr, single = _points(points, self.ndim)
        size = np.asarray(self.field.size, dtype=float)
        index, low, high = self._domain_index(arr)
        # ITK: inside the buffer (up to half a voxel beyond the outer centres) linear, its neighbours clamped into
        # the grid (the same as clamping the point's index); beyond that, no displacement
        inside = self._within(index, low, high)
        clipped = np.clip(index[inside], 0.0, size - 1.0)[:, ::-1].T  # array order (z, y[, x])
        out = np.zeros_like(arr)
        for c in range(self.ndim):
            out[inside, c] = ndimage.map_coordinates(self.vectors[..., c], clipped, order=1, mode="nearest")
        return out[0] if single else out

    def transform_points(self, points: Any) -> np.ndarray:
        arr, single = _points(points, self.ndim)
        out = arr + self.displacement(arr)
        return out[0] if single else out

    def _domain_index(self, points: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        size = np.asarray(self.field.size, dtype=float)
        index = self.field.world_to_index(points) if points.size else np.zeros((0, self.ndim))
        # from half a voxel before the first centre to just short of half a voxel beyond the last (ITK's buffer)
        return index, np.full(self.ndim, -0.5), np.nextafter(size - 0.5, -np.inf)

    def _domain_to_world(self, index: np.ndarray) -> np.ndarray:
        return self.field.index_to_world(index)

    def inverse(self) -> DisplacementField:
        """The inverse field on the same grid (SimpleITK's ``InvertDisplacementField``), with its residual stated.

        The inverse ``g`` maps moving-space points back: ``g(f(x)) = x`` up to
        ``g.inverse_residual_mm`` (mean, largest over the grid points), and
        ``g.inverse()`` is this field again. Computed once per field.
        """
        return self._inverted

    @functools.cached_property
    def _inverted(self) -> DisplacementField:
        flt = sitk.InvertDisplacementFieldImageFilter()
        flt.SetMaximumNumberOfIterations(_INVERSE_ITERATIONS)
        flt.SetMeanErrorToleranceThreshold(_INVERSE_MEAN_TOLERANCE)
        flt.SetMaxErrorToleranceThreshold(_INVERSE_MAX_TOLERANCE)
        flt.SetEnforceBoundaryCondition(False)
        image = flt.Execute(self.to_sitk_image())
        provisional = DisplacementField.from_sitk_image(image)
        grid = self.field.world_grid().reshape(-1, self.ndim)
        back = provisional.transform_points(grid)
        # g(y) = y + v(y) maps back; f(g(y)) should be y again: the residual of the pair, over the inverse's grid
        residual = np.linalg.norm(self.transform_points(back) - grid, axis=1)
        # ITK's iteration works on the grid and leaves the points whose inverse falls outside it (the border)
        # unsolved: those few are finished point by point from ITK's estimate
        rough = residual > _INVERSE_MAX_TOLERANCE
        if rough.any():
            back[rough] = self._solve(grid[rough], back[rough], tolerance=1e-6, max_iterations=200)
            residual[rough] = np.linalg.norm(self.transform_points(back[rough]) - grid[rough], axis=1)
        vectors = (back - grid).reshape(provisional.vectors.shape)
        # stated where the inverse lands inside this field's grid: beyond it the forward map has no displacement
        # (ITK's convention), so no inverse can be exact there
        index = self.field.world_to_index(back)
        landed = np.all((index >= -0.5) & (index < np.asarray(self.field.size) - 0.5), axis=1)
        stated = residual[landed] if landed.any() else residual
        inverse = DisplacementField(provisional.field.replace(array=vectors),
                                    (float(stated.mean()), float(stated.max())))
        inverse.__dict__["_inverted"] = self  # the inverse of the inverse is this field, not a second approximation
        return inverse

    # ------------------------------------------------------------------ description and files
    def to_dict(self) -> dict[str, Any]:
        """A summary (grid, largest displacement, inverse residual); the vectors themselves go to ``.nii.gz``/``.h5``."""
        norms = np.linalg.norm(self.vectors, axis=-1)
        return {
            "type": "DisplacementField",
            "ndim": self.ndim,
            "fixed_to_moving": True,
            "components": "world (ITK/LPS for medical images), order x, y[, z]",
            "grid_size": list(self.field.size),
            "grid_origin": list(self.field.origin),
            "grid_spacing": list(self.field.spacing),
            "grid_direction": np.asarray(self.field.direction).tolist(),
            "max_displacement": float(norms.max()) if norms.size else 0.0,
            "mean_displacement": float(norms.mean()) if norms.size else 0.0,
            "inverse_residual_mm": None if self.inverse_residual_mm is None else list(self.inverse_residual_mm),
            "vectors": "not stored in JSON: save the field as .nii.gz or .h5",
        }

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the field: a vector image (``.nii.gz``, ``.nii``, ``.nrrd``, ``.mha``) or an ITK ``.h5`` file.

        A NIfTI field is 5D with intent vector and its components in ITK/LPS
        world units, as ANTs writes ``*Warp.nii.gz``: ``antsApplyTransforms``,
        ANTsPy and SimpleITK read it with the same meaning. Written atomically.
        """
        from coregister._files import atomic_path
        from coregister._stderr import captured_stderr

        path = Path(path)
        suffix = _field_suffix(path)
        if suffix is None:
            if path.suffix.lower() in (".h5", ".hdf5"):
                return super().save(path)
            raise UnsupportedFormatError(
                f"cannot write a displacement field to {str(path)!r}: use .nii.gz (as ANTs' warps), .nrrd, .mha or "
                ".h5 (ITK transform); a text .tfm or a .json file would hold millions of numbers"
            )
        image = self.to_sitk_image()
        with atomic_path(path) as tmp, captured_stderr(f"writing {path}"):  # ITK's own lines on a full disk: logged
            sitk.WriteImage(image, str(tmp))
        return path


@dataclass(frozen=True, eq=False)
class Homography(Transform):
    """A 2D projective map (fixed -> moving): ``[u, v, w] = H [x, y, 1]``, point ``(u / w, v / w)``.

    ITK has no projective transform, so a homography cannot be saved as
    ``.tfm``; it saves and loads as JSON. Resampling uses OpenCV.

    Examples
    --------
    >>> import numpy as np
    >>> h = Homography(np.array([[1.0, 0, 2], [0, 1, 3], [0, 0, 1]]))
    >>> h.transform_points([[1.0, 1.0]]).tolist()
    [[3.0, 4.0]]
    """

    matrix: Any

    def __post_init__(self) -> None:
        m = _matrix(self.matrix, 3, "homography")
        if abs(m[2, 2]) < 1e-15:
            raise GeometryError(f"homography {m.tolist()} has H[2,2] = 0; normalise it so H[2,2] = 1")
        m = np.array(m / m[2, 2])
        m.flags.writeable = False
        object.__setattr__(self, "matrix", m)

    @property
    def ndim(self) -> int:
        return 2

    def transform_points(self, points: Any) -> np.ndarray:
        arr, single = _points(points, 2)
        h = np.c_[arr, np.ones(len(arr))] @ self.matrix.T
        out = h[:, :2] / h[:, 2:3]
        return out[0] if single else out

    def inverse(self) -> Homography:
        return Homography(np.linalg.inv(self.matrix))

    def to_sitk(self) -> sitk.Transform:
        raise UnsupportedFormatError(
            "ITK has no projective transform: a Homography cannot become a SimpleITK transform; "
            "save it as .json and resample it with coregister.apply"
        )

    def save(self, path: str | os.PathLike[str]) -> Path:
        if Path(path).suffix.lower() != ".json":
            raise UnsupportedFormatError(f"cannot write a Homography to {str(path)!r}: ITK has no projective transform; use .json")
        return super().save(path)

    def __matmul__(self, other: Transform) -> Transform:
        if isinstance(other, Homography | LinearTransform) and isinstance(self, Homography | LinearTransform):
            return Homography(_homogeneous2d(self) @ _homogeneous2d(other))
        return super().__matmul__(other)

    def __rmatmul__(self, other: Transform) -> Transform:
        if isinstance(other, LinearTransform):
            return Homography(_homogeneous2d(other) @ self.matrix)
        return NotImplemented

    def to_dict(self) -> dict[str, Any]:
        return {"type": "Homography", "ndim": 2, "fixed_to_moving": True, "matrix": self.matrix.tolist()}


def _homogeneous2d(t: Transform) -> np.ndarray:
    if isinstance(t, Homography):
        return t.matrix
    if isinstance(t, LinearTransform) and t.ndim == 2:
        return t.homogeneous
    raise GeometryError(f"{type(t).__name__} cannot be combined with a homography")


@dataclass(frozen=True, eq=False)
class Composite(Transform):
    """A chain of transforms applied **last first**, as ITK's ``CompositeTransform``.

    ``Composite((a, b))`` maps a fixed-space point ``x`` to ``a(b(x))`` in
    moving space: in a staged registration ``(initial, rigid, affine,
    bspline)`` the B-spline acts first on fixed-space points.

    Examples
    --------
    >>> c = Composite((Translation([1.0, 0.0]), Affine([[2.0, 0.0], [0.0, 2.0]])))
    >>> c.transform_points([[1.0, 1.0]]).tolist()
    [[3.0, 2.0]]
    """

    transforms: tuple[Transform, ...] = field(default_factory=tuple)

    def __post_init__(self) -> None:
        items = tuple(self.transforms)
        if not items:
            raise GeometryError("a Composite needs at least one transform")
        dims = {t.ndim for t in items}
        if len(dims) != 1:
            raise GeometryError(f"a Composite mixes dimensions {sorted(dims)}")
        object.__setattr__(self, "transforms", items)

    @property
    def ndim(self) -> int:
        return self.transforms[0].ndim

    @property
    def is_linear(self) -> bool:
        return all(t.is_linear for t in self.transforms)

    def transform_points(self, points: Any) -> np.ndarray:
        arr, single = _points(points, self.ndim)
        for t in reversed(self.transforms):
            arr = np.atleast_2d(t.transform_points(arr))
        return arr[0] if single else arr

    def inverse(self) -> Transform:
        parts = [t.inverse() for t in self.transforms]  # raises for non-invertible members
        return Composite(tuple(parts[::-1])) if len(parts) > 1 else parts[0]

    def inverse_points(self, points: Any) -> np.ndarray:
        """Map moving-space points to fixed space, inverting B-spline members numerically."""
        arr, single = _points(points, self.ndim)
        for t in self.transforms:
            if isinstance(t, BSpline | Composite | DisplacementField):
                arr = np.atleast_2d(t.inverse_points(arr))
            else:
                arr = np.atleast_2d(t.inverse().transform_points(arr))
        return arr[0] if single else arr

    def flattened(self) -> Transform:
        """Merge consecutive linear members into one :class:`Affine` (exact); a lone linear member is kept as it is."""
        return _merge_linear_runs(self.transforms, lambda run: functools.reduce(operator.matmul, run))

    def to_sitk(self) -> sitk.Transform:
        return sitk.CompositeTransform([t.to_sitk() for t in self.transforms])

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "type": "Composite",
            "ndim": self.ndim,
            "fixed_to_moving": True,
            "order": "last applied first (ITK)",
            "transforms": [t.to_dict() for t in self.transforms],
        }
        flat = self.flattened()
        if isinstance(flat, LinearTransform):
            out["world_matrix"] = flat.homogeneous.tolist()
            out["decomposition"] = _decomposition(flat)
        return out


def _opened(transforms: Sequence[Transform]) -> tuple[Transform, ...]:
    """The members of a chain with each :class:`Composite` among them replaced by its own members (one level)."""
    members: list[Transform] = []
    for t in transforms:
        members.extend(t.transforms if isinstance(t, Composite) else [t])
    return tuple(members)


def _merge_linear_runs(
    members: Sequence[Transform], merge: Callable[[Sequence[LinearTransform]], LinearTransform]
) -> Transform:
    """A chain with each run of consecutive linear members replaced by ``merge(run)``; one transform if one is left."""
    merged: list[Transform] = []
    for linear, group in itertools.groupby(members, lambda t: isinstance(t, LinearTransform)):
        run = list(group)
        merged.extend([merge(cast("list[LinearTransform]", run))] if linear else run)
    return merged[0] if len(merged) == 1 else Composite(tuple(merged))


def _nearest_rotation(matrix: np.ndarray) -> np.ndarray:
    """The rotation nearest to ``matrix`` (its polar factor ``U V^T``), for a matrix that is a rotation up to rounding.

    Examples
    --------
    >>> r = rotation_matrix(0.3)
    >>> bool(np.allclose(_nearest_rotation(r * [[1.0, 1.0 + 1e-9], [1.0, 1.0]]), r, atol=1e-9))
    True
    >>> r2 = _nearest_rotation(r @ r)
    >>> bool(np.allclose(r2 @ r2.T, np.eye(2), atol=1e-15))
    True
    """
    u, _, vt = np.linalg.svd(matrix)
    return u @ vt


def linear_product(transforms: Sequence[LinearTransform], *, center: Any = None) -> LinearTransform:
    """The product of linear maps applied last first (``transforms[0]`` last), as the narrowest type that holds it.

    Translations alone give a :class:`Translation`; translations and rigid
    maps a :class:`Rigid`; with similarities too a :class:`Similarity`;
    anything else an :class:`Affine`. The result is expressed about
    ``center`` (world units, default the origin), where its rotation and
    scale are reported; the rotation of a rigid or similarity product is the
    nearest rotation to the product's matrix, so that rounding in the
    product does not leave it slightly off a rotation. Where an exact
    :class:`Affine` is wanted, use ``a @ b`` or :meth:`Composite.flattened`.

    Parameters
    ----------
    transforms : sequence of LinearTransform
        Maps fixed -> moving of a chain, the first applied last (as in a
        :class:`Composite`).
    center : sequence of float, optional
        Centre of the result's rotation and scale.

    Returns
    -------
    LinearTransform
        Maps fixed-space points to moving space.

    Examples
    --------
    >>> import numpy as np
    >>> turn = Rigid.from_angles(np.deg2rad(30.0), center=[10.0, 0.0])
    >>> both = linear_product([turn, Translation([1.0, 2.0])], center=[0.0, 5.0])
    >>> type(both).__name__, np.round(both.angles_deg, 9).tolist(), both.center.tolist()
    ('Rigid', [30.0], [0.0, 5.0])
    >>> bool(np.allclose(both.transform_points([3.0, 4.0]), turn.transform_points([4.0, 6.0])))
    True
    >>> type(linear_product([Translation([1.0, 0.0]), Translation([0.0, 2.0])])).__name__
    'Translation'
    >>> type(linear_product([turn, Affine([[2.0, 0.0], [0.0, 1.0]])])).__name__
    'Affine'
    """
    h = np.eye(transforms[0].ndim + 1)
    for t in transforms:
        h = h @ t.homogeneous
    matrix, offset = h[:-1, :-1], h[:-1, -1]
    c = np.zeros(transforms[0].ndim) if center is None else np.asarray(center, dtype=float)
    translation = offset + matrix @ c - c
    kinds = {type(t) for t in transforms}
    if kinds <= {Translation}:
        return Translation(offset)
    if kinds <= {Translation, Rigid}:
        return Rigid(_nearest_rotation(matrix), translation, c)
    if kinds <= {Translation, Rigid, Similarity}:
        scale = float(abs(np.linalg.det(matrix)) ** (1.0 / matrix.shape[0]))
        return Similarity(scale, _nearest_rotation(matrix / scale), translation, c)
    return Affine(matrix, translation, c)


def compose(transforms: Sequence[Transform], *, center: Any = None) -> Transform:
    """One transform for a chain applied last first, each run of linear maps merged by :func:`linear_product`.

    This is how a staged registration hands back its answer: the stages'
    (and an initial transform's) linear maps become one map of the
    narrowest type that holds them, about ``center``; a B-spline stays a
    member of a :class:`Composite`. Composites among ``transforms`` are
    opened first. A single transform that is not a composite comes back as
    it is.

    Parameters
    ----------
    transforms : sequence of Transform
        Maps fixed -> moving, the first applied last (as in a :class:`Composite`).
    center : sequence of float, optional
        Centre of the merged linear maps (world units; default the origin).

    Returns
    -------
    Transform
        Maps fixed-space points to moving space: a linear transform when
        every member is linear, else a :class:`Composite`.

    Examples
    --------
    >>> import numpy as np
    >>> spline = BSpline(np.zeros((2, 4, 4)), grid_origin=[-10.0, -10.0], grid_spacing=[10.0, 10.0])
    >>> turn = Rigid.from_angles(np.deg2rad(10.0))
    >>> chain = compose([Translation([1.0, 0.0]), Composite((turn, spline))], center=[5.0, 5.0])
    >>> [type(t).__name__ for t in chain.transforms], chain.transforms[0].center.tolist()
    (['Rigid', 'BSpline'], [5.0, 5.0])
    >>> compose([turn]) is turn
    True
    """
    if len(transforms) == 1 and not isinstance(transforms[0], Composite):
        return transforms[0]
    return _merge_linear_runs(_opened(transforms), functools.partial(linear_product, center=center))


def linear_members(transform: Transform) -> tuple[LinearTransform, ...]:
    """The linear maps in ``transform``, consecutive ones merged exactly (:meth:`Composite.flattened`).

    ``(transform,)`` for a linear transform; for a :class:`Composite`, one
    map per run of consecutive linear members, a single :class:`Affine`
    when every member is linear (``transform.is_linear``); ``()`` for a
    B-spline or a homography. A single map (a linear transform, or an
    all-linear composite) maps fixed-space points to moving space; members
    separated by a B-spline each map their own stage's input to its output.

    Examples
    --------
    >>> rigid = Rigid.from_angles(0.1, translation=[1.0, 0.0])
    >>> linear_members(rigid) == (rigid,)
    True
    >>> (whole,) = linear_members(Composite((Translation([1.0, 0.0]), Affine([[2.0, 0.0], [0.0, 2.0]]))))
    >>> whole.homogeneous.tolist()
    [[2.0, 0.0, 1.0], [0.0, 2.0, 0.0], [0.0, 0.0, 1.0]]
    """
    if isinstance(transform, LinearTransform):
        return (transform,)
    if isinstance(transform, Composite):
        flat = transform.flattened()
        members = flat.transforms if isinstance(flat, Composite) else (flat,)
        return tuple(t for t in members if isinstance(t, LinearTransform))
    return ()


# ---------------------------------------------------------------- conversion
def from_sitk(tx: sitk.Transform) -> Transform:
    """Convert any SimpleITK transform to a coregister transform value (exact).

    Examples
    --------
    >>> import SimpleITK as sitk
    >>> from_sitk(sitk.TranslationTransform(2, (1.0, 2.0)))
    Translation(translation=array([1., 2.]))
    """
    tx = tx.Downcast() if type(tx) is sitk.Transform else tx
    name = tx.GetName()
    ndim = tx.GetDimension()
    if isinstance(tx, sitk.CompositeTransform):
        members = [tx.GetNthTransform(i) for i in range(tx.GetNumberOfTransforms())]
        members = [m.Downcast() if type(m) is sitk.Transform else m for m in members]
        if len(members) == 1 and isinstance(members[0], sitk.CompositeTransform):
            # SimpleITK wraps an ITK type it has no class for (ANTs' MatrixOffsetTransformBase) in a one-member
            # composite whose member is that same wrapper: read it from its parameters.
            return _generic_matrix_offset(members[0])
        parts = [from_sitk(m) for m in members]
        return parts[0] if len(parts) == 1 else Composite(tuple(parts))
    if isinstance(tx, sitk.TranslationTransform):
        return Translation(tx.GetOffset())
    if isinstance(tx, sitk.BSplineTransform):
        return BSpline._from_sitk(tx)
    if isinstance(tx, sitk.DisplacementFieldTransform):
        return DisplacementField.from_sitk_image(tx.GetDisplacementField())
    if name == "IdentityTransform":
        return Translation(np.zeros(ndim))
    if hasattr(tx, "GetMatrix") and hasattr(tx, "GetTranslation") and hasattr(tx, "GetCenter"):
        matrix = np.array(tx.GetMatrix()).reshape(ndim, ndim)
        translation = np.array(tx.GetTranslation())
        center = np.array(tx.GetCenter())
        if isinstance(tx, sitk.Euler2DTransform | sitk.Euler3DTransform | sitk.VersorRigid3DTransform):
            return Rigid(matrix, translation, center)
        if isinstance(tx, sitk.Similarity2DTransform | sitk.Similarity3DTransform):
            scale = float(tx.GetScale())
            return Similarity(scale, matrix / scale, translation, center)
        return Affine(matrix, translation, center)
    # A generic MatrixOffsetTransformBase (ANTs .mat) downcasts to AffineTransform; anything else is unknown.
    raise UnsupportedFormatError(f"SimpleITK transform {name!r} has no coregister equivalent")


def _generic_matrix_offset(tx: sitk.Transform) -> Affine:
    """An ITK ``MatrixOffsetTransformBase`` (parameters: matrix row by row, translation; fixed: centre)."""
    ndim = tx.GetDimension()
    params = np.array(tx.GetParameters(), dtype=float)
    fixed = np.array(tx.GetFixedParameters(), dtype=float)
    if params.size != ndim * ndim + ndim or fixed.size != ndim:
        raise UnsupportedFormatError(
            f"SimpleITK transform with {params.size} parameters and {fixed.size} fixed parameters has no "
            "coregister equivalent (a matrix-offset transform has d*d+d and d)"
        )
    out = Affine(params[: ndim * ndim].reshape(ndim, ndim), params[ndim * ndim :], fixed)
    probe = np.vstack([np.zeros(ndim), np.eye(ndim) * 100.0])
    expected = np.array([tx.TransformPoint(tuple(p)) for p in probe])
    if not np.allclose(out.transform_points(probe), expected, atol=1e-9, rtol=0):
        raise UnsupportedFormatError(f"SimpleITK transform {tx.GetName()!r} is not a matrix-offset transform")
    return out


#: ITK transform types read from text files: their parameter and fixed-parameter counts as functions of the dimension
_ITK_COUNTS: dict[str, tuple[Callable[[int], tuple[int, ...]], Callable[[int], tuple[int, ...]], tuple[int, ...]]] = {
    "IdentityTransform": (lambda d: (0,), lambda d: (0,), (2, 3)),
    "TranslationTransform": (lambda d: (d,), lambda d: (0,), (2, 3)),
    "ScaleTransform": (lambda d: (d,), lambda d: (d,), (2, 3)),
    "Euler2DTransform": (lambda d: (3,), lambda d: (2,), (2,)),
    "Rigid2DTransform": (lambda d: (3,), lambda d: (2,), (2,)),
    "Similarity2DTransform": (lambda d: (4,), lambda d: (2,), (2,)),
    "Euler3DTransform": (lambda d: (6,), lambda d: (3, 4), (3,)),  # ITK 5 adds the ZYX flag to the centre
    "VersorRigid3DTransform": (lambda d: (6,), lambda d: (3,), (3,)),
    "VersorTransform": (lambda d: (3,), lambda d: (3,), (3,)),
    "Similarity3DTransform": (lambda d: (7,), lambda d: (3,), (3,)),
    "ScaleVersor3DTransform": (lambda d: (9,), lambda d: (3,), (3,)),
    "ScaleSkewVersor3DTransform": (lambda d: (15,), lambda d: (3,), (3,)),
    "AffineTransform": (lambda d: (d * d + d,), lambda d: (d,), (2, 3)),
    "MatrixOffsetTransformBase": (lambda d: (d * d + d,), lambda d: (d,), (2, 3)),
    "CompositeTransform": (lambda d: (0,), lambda d: (0,), (2, 3)),
    "BSplineTransform": (lambda d: (), lambda d: (d * (3 + d),), (2, 3)),  # parameters: d x the grid's size
}


def _numbers(text: str, what: str, where: str) -> list[float]:
    try:
        values = [float(v) for v in text.split()]
    except ValueError:
        raise UnreadableInputError(f"{where}: the {what} {text.strip()[:60]!r} are not numbers") from None
    if not all(math.isfinite(v) for v in values):
        raise GeometryError(f"{where}: the {what} {values[:12]} are not all finite (NaN or infinity); the file is broken")
    return values


def check_itk_text(text: str, where: str) -> int:
    """Validate an ITK text transform file against its types before SimpleITK reads it; return its transform count.

    SimpleITK reads what a text file says without checking it against the
    type: an ``Euler2DTransform`` with 2 of its 3 parameters reads memory
    past them, an affine with 9 parameters instead of 6 is cut short. Here
    each transform's type must be one this package knows, its dimension 2
    or 3 (and the same on both sides of ``_double_D_D``), and its parameters
    and fixed parameters as many as the type has, all finite.

    Raises
    ------
    UnreadableInputError
        An unknown transform type, wrong parameter counts, a missing line,
        values that are not numbers.
    UnsupportedFormatError
        A dimension other than 2 or 3, or different on both sides.
    GeometryError
        NaN or infinite values.

    Examples
    --------
    >>> check_itk_text("Transform: Euler2DTransform_double_2_2\\nParameters: 0.1 1 2\\nFixedParameters: 0 0\\n", "t.tfm")
    1
    >>> check_itk_text("Transform: Euler2DTransform_double_2_2\\nParameters: 0.1 1\\nFixedParameters: 0 0\\n", "t.tfm")
    Traceback (most recent call last):
    ...
    coregister.errors.UnreadableInputError: t.tfm: transform 0 (Euler2DTransform_double_2_2) has 2 parameters; the type has 3: the file is truncated or edited
    """
    import re

    entries: list[dict[str, str]] = []
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip()
        if key == "Transform":
            entries.append({"Transform": value.strip()})
        elif key in ("Parameters", "FixedParameters"):
            if not entries or key in entries[-1]:
                raise UnreadableInputError(f"{where}: a {key} line without its Transform line; the file is malformed")
            entries[-1][key] = value
    if not entries:
        raise UnreadableInputError(f"{where}: no 'Transform:' line; not an ITK transform file")
    if len(entries) > 1 and not entries[0]["Transform"].startswith("CompositeTransform_"):
        raise UnreadableInputError(
            f"{where}: {len(entries)} transforms follow one another without a CompositeTransform first "
            f"({entries[0]['Transform']} comes first); ITK would read the first and drop the rest: the file is broken"
        )
    for index, entry in enumerate(entries):
        name = entry["Transform"]
        match = re.fullmatch(r"([A-Za-z0-9]+?)_(double|float)_(\d+)_(\d+)", name)
        if match is None or match.group(1) not in _ITK_COUNTS:
            known = ", ".join(sorted(_ITK_COUNTS))
            raise UnreadableInputError(f"{where}: transform {index} has the unknown type {name!r}; coregister reads {known}")
        kind, d_in, d_out = match.group(1), int(match.group(3)), int(match.group(4))
        parameters_count, fixed_count, dimensions = _ITK_COUNTS[kind]
        if d_in != d_out or d_in not in dimensions:
            raise UnsupportedFormatError(
                f"{where}: transform {index} ({name}) maps {d_in}D to {d_out}D; coregister reads "
                f"{' and '.join(f'{d}D' for d in dimensions)} {kind} transforms"
            )
        if kind == "CompositeTransform":
            continue
        for key in ("Parameters", "FixedParameters"):
            if key not in entry and not (kind == "IdentityTransform"):
                raise UnreadableInputError(f"{where}: transform {index} ({name}) has no {key} line; the file is truncated")
        parameters = _numbers(entry.get("Parameters", ""), "parameters", f"{where}: transform {index} ({name})")
        fixed = _numbers(entry.get("FixedParameters", ""), "fixed parameters", f"{where}: transform {index} ({name})")
        if kind == "BSplineTransform" and len(fixed) == d_in * (3 + d_in):
            size = fixed[:d_in]
            if not all(v >= 1 and float(v).is_integer() for v in size):
                raise UnreadableInputError(f"{where}: transform {index} ({name}) has the grid size {size}; the file is broken")
            expected: tuple[int, ...] = (d_in * math.prod(int(v) for v in size),)
        else:
            expected = parameters_count(d_in)
        for values, counts, what in ((fixed, fixed_count(d_in), "fixed parameters"), (parameters, expected, "parameters")):
            if len(values) not in counts:
                wanted = " or ".join(str(c) for c in counts)
                raise UnreadableInputError(
                    f"{where}: transform {index} ({name}) has {len(values)} {what}; the type has {wanted}: the file is "
                    "truncated or edited"
                )
    return len(entries)
def field_members(transform: Transform) -> list[DisplacementField]:
    """The displacement fields in ``transform``: itself, or the members of a composite that are fields."""
    if isinstance(transform, DisplacementField):
        return [transform]
    if isinstance(transform, Composite):
        return [t for t in transform.transforms if isinstance(t, DisplacementField)]
    return []


def sampled_field(transform: Transform, grid: Any) -> DisplacementField:
    """``transform`` as one displacement field sampled at the pixel centres of ``grid`` (SimpleITK, exact there).

    Parameters
    ----------
    transform : Transform
        Fixed -> moving point map (a composite is sampled whole).
    grid : SpatialImage
        Where to sample (only its geometry is used).

    Returns
    -------
    DisplacementField
        ``x -> transform(x)`` at every grid point, interpolated linearly between them.

    Examples
    --------
    >>> import numpy as np
    >>> from coregister.image import SpatialImage
    >>> grid = SpatialImage(np.zeros((4, 5)), origin=(0.0, 0.0), spacing=(1.0, 1.0))
    >>> field = sampled_field(Affine([[1.0, 0.0], [0.0, 2.0]], [1.0, 0.0]), grid)
    >>> field.vectors[2, 3].tolist(), field.transform_points([3.0, 2.0]).tolist()
    ([1.0, 2.0], [4.0, 4.0])
    """
    image = sitk.TransformToDisplacementField(
        transform.to_sitk(), sitk.sitkVectorFloat64, [int(v) for v in grid.size], [float(v) for v in grid.origin],
        [float(v) for v in grid.spacing], [float(v) for v in np.asarray(grid.direction).ravel()],
    )
    return DisplacementField.from_sitk_image(image)


def read_transform(path: str | os.PathLike[str]) -> Transform:
    """Read a transform written by coregister, SimpleITK, ANTs or 3D Slicer.

    Parameters
    ----------
    path : path
        ITK ``.tfm``/``.txt``/``.h5``/``.mat`` file or coregister ``.json``.
        A displacement field image (``.nii.gz``, ``.nrrd``, ``.mha``: what
        :meth:`DisplacementField.save` writes) is an image: it is read by
        :func:`coregister.read_transform` (``coregister.io.transforms``),
        with the image readers' header checks.

    Returns
    -------
    Transform
        Maps fixed-space points to moving space.
    """
    path = Path(path)
    if not path.is_file():
        raise UnreadableInputError(f"transform file {str(path)!r} does not exist or is not a file; check the path")
    suffix = path.suffix.lower()
    if _field_suffix(path) is not None:  # an image: read where images are read, its header checked first
        raise UnsupportedFormatError(
            f"{str(path)!r} is a displacement-field image: read it with coregister.read_transform "
            "(coregister.io.transforms), which checks its header against the file before reading it"
        )
    if suffix == ".json":
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            return from_dict(data)
        except CoregisterError:
            raise
        except (ValueError, KeyError, TypeError, IndexError, AttributeError, RecursionError) as exc:
            raise UnreadableInputError(
                f"{str(path)!r} is not a coregister transform JSON file ({type(exc).__name__}: {exc}); "
                "write one with Transform.save('t.json')"
            ) from exc
    if suffix not in _ITK_SUFFIXES:
        raise UnsupportedFormatError(
            f"cannot read a transform from {str(path)!r}: use .tfm, .txt, .h5, .mat, .json or, with "
            "coregister.read_transform, a displacement field (.nii.gz, .nrrd, .mha)"
        )
    with open(path, "rb") as handle:
        head = handle.read(8)
    if suffix in (".tfm", ".txt") or head.startswith(b"#Insight"):
        try:
            text = path.read_text(encoding="latin-1")
        except OSError as exc:
            raise UnreadableInputError(f"cannot read the transform {str(path)!r} ({exc.strerror or exc})") from exc
        check_itk_text(text, str(path))
    try:
        from coregister._stderr import captured_stderr

        with captured_stderr(f"reading {path}"):
            tx = sitk.ReadTransform(str(path))
    except RuntimeError as exc:
        raise UnreadableInputError(f"SimpleITK cannot read the transform {str(path)!r}: {str(exc).strip().splitlines()[-1]}") from exc
    values = np.array(tx.GetParameters(), dtype=float)
    fixed = np.array(tx.GetFixedParameters(), dtype=float)
    if not (np.all(np.isfinite(values)) and np.all(np.isfinite(fixed))):
        raise GeometryError(f"{str(path)!r}: the transform's parameters are not all finite (NaN or infinity); the file is broken")
    return from_sitk(tx)


def from_dict(data: dict[str, Any]) -> Transform:
    """Rebuild a transform from :meth:`Transform.to_dict` output.

    The mapping is data, checked against the type it names before use: the
    shapes of matrices and vectors must fit ``ndim`` (2 or 3), every number
    must be finite, and nothing is evaluated.

    Raises
    ------
    UnsupportedFormatError
        An unknown ``type``.
    GeometryError
        Values of the wrong shape or not finite.
    """
    if not isinstance(data, dict):
        raise UnsupportedFormatError(f"a transform is a JSON object with a 'type'; got {type(data).__name__}")
    kind = data.get("type")
    if kind == "DisplacementField":
        raise UnsupportedFormatError(
            "a displacement field's JSON holds its summary only; read the field from its .nii.gz or .h5 file "
            "(coregister.read_transform)"
        )
    if kind not in ("Translation", "Rigid", "Similarity", "Affine", "BSpline", "Homography", "Composite"):
        raise UnsupportedFormatError(f"unknown transform type {kind!r} in JSON")
    if kind != "Composite":
        _check_shapes(data, kind)
    if kind == "Translation":
        return Translation(data["translation"])
    if kind == "Rigid":
        return Rigid(data["matrix"], data["translation"], data["center"])
    if kind == "Similarity":
        scale = float(np.cbrt(np.linalg.det(data["matrix"]))) if data["ndim"] == 3 else float(np.sqrt(np.linalg.det(data["matrix"])))
        return Similarity(scale, np.asarray(data["matrix"]) / scale, data["translation"], data["center"])
    if kind == "Affine":
        return Affine(data["matrix"], data["translation"], data["center"])
    if kind == "BSpline":
        return BSpline(data["coefficients"], data["grid_origin"], data["grid_spacing"], data["grid_direction"], data["order"])
    if kind == "Homography":
        return Homography(data["matrix"])
    if kind == "Composite":
        return Composite(tuple(from_dict(d) for d in data["transforms"]))
    raise UnsupportedFormatError(f"unknown transform type {kind!r} in JSON")


def _check_shapes(data: dict[str, Any], kind: str) -> None:
    """The fields of a transform's JSON form against its ``ndim``: shapes that fit, finite numbers."""
    ndim = data.get("ndim")
    if kind == "Homography":
        ndim = 2 if ndim is None else ndim
    if not isinstance(ndim, int) or isinstance(ndim, bool) or ndim not in (2, 3):
        raise GeometryError(f"a {kind} transform has ndim {ndim!r}; coregister transforms are 2D or 3D")
    linear: dict[str, tuple[int, ...]] = {"matrix": (ndim, ndim), "translation": (ndim,), "center": (ndim,)}
    table: dict[str, dict[str, tuple[int, ...]]] = {
        "Translation": {"translation": (ndim,)},
        "Rigid": linear,
        "Similarity": linear,
        "Affine": linear,
        "BSpline": {"grid_origin": (ndim,), "grid_spacing": (ndim,), "grid_direction": (ndim, ndim)},
        "Homography": {"matrix": (3, 3)},
    }
    for key, shape in table[kind].items():
        try:
            value = np.asarray(data[key], dtype=float)
        except KeyError:
            raise GeometryError(f"a {kind} transform lacks its {key!r}") from None
        except (TypeError, ValueError):
            raise GeometryError(f"the {key!r} of a {kind} transform is not an array of numbers") from None
        if value.shape != shape:
            raise GeometryError(f"the {key!r} of a {ndim}D {kind} transform has shape {value.shape}; expected {shape}")
        if not np.all(np.isfinite(value)):
            raise GeometryError(f"the {key!r} of a {kind} transform is not finite: {value.tolist()}")
