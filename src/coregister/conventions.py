"""The coordinate crossings that bite, each converted in exactly one place.

* NIfTI world space is RAS, ITK/DICOM world space is LPS: :func:`flip_ras_lps`
  for a world-from-index matrix, :func:`flip_ras_lps_points` for points (e.g.
  3D Slicer landmarks), :func:`point_map_ras_lps` for a world-to-world point
  map (a transform).
* GDAL/rasterio geotransforms address pixel corners, ITK addresses pixel
  centres: :func:`geotransform_to_geometry` and :func:`geometry_to_geotransform`
  (origin, spacing, direction), :func:`centre_geotransform` and
  :func:`corner_geotransform` (the affine itself), :func:`pixel_centre_to_map`
  and :func:`map_to_pixel_centre` (points). Positions in GDAL's own corner
  frame (window bounds, image corners) go through :func:`pixel_corner_to_map`
  and :func:`map_to_pixel_corner`; the geotransform of a block or a decimated
  copy of a grid through :func:`subgrid_geotransform`.
* nibabel arrays are indexed ``(i, j, k[, t])``, ours ``(z, y, x[, c])``:
  :func:`ijk_to_zyx` and :func:`zyx_to_ijk`.
* Origin, spacing and direction versus the homogeneous world-from-index
  matrix: :func:`affine_from_geometry` and :func:`geometry_from_affine`.

Index vectors are always in ITK order ``(x, y[, z])`` (column first); array
axes are always in numpy order ``(z, y, x)``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from affine import Affine

from coregister.errors import GeometryError

__all__ = [
    "affine_from_geometry",
    "centre_geotransform",
    "corner_geotransform",
    "flip_ras_lps",
    "flip_ras_lps_points",
    "geometry_from_affine",
    "geometry_to_geotransform",
    "geotransform_to_geometry",
    "ijk_to_zyx",
    "map_to_pixel_centre",
    "map_to_pixel_corner",
    "orientation_code",
    "pixel_centre_to_map",
    "pixel_corner_to_map",
    "point_map_ras_lps",
    "subgrid_geotransform",
    "zyx_to_ijk",
]

_LPS_FLIP = np.diag([-1.0, -1.0, 1.0, 1.0])
#: a pixel's centre lies half a pixel from its top-left corner, along each index axis (GDAL corner -> ITK centre)
_HALF_PIXEL = 0.5


def flip_ras_lps(affine: np.ndarray) -> np.ndarray:
    """Convert a 4x4 world-from-index affine between RAS and LPS.

    The flip negates the first two world axes; it is its own inverse, so the
    same call converts RAS to LPS and LPS to RAS.

    Parameters
    ----------
    affine : ndarray, shape (4, 4)
        Homogeneous world-from-index matrix.

    Returns
    -------
    ndarray, shape (4, 4)
        The matrix in the other world convention.

    Examples
    --------
    >>> import numpy as np
    >>> ras = np.eye(4); ras[:3, 3] = [10, 20, 30]
    >>> flip_ras_lps(ras)[:3, 3].tolist()
    [-10.0, -20.0, 30.0]
    >>> np.array_equal(flip_ras_lps(flip_ras_lps(ras)), ras)
    True
    """
    affine = np.asarray(affine, dtype=float)
    if affine.shape != (4, 4):
        raise GeometryError(f"expected a 4x4 affine, got shape {affine.shape}; pass the NIfTI/ITK homogeneous matrix")
    return _LPS_FLIP @ affine


def flip_ras_lps_points(points: Sequence[Sequence[float]] | np.ndarray) -> np.ndarray:
    """Convert world points between RAS and LPS: the first two coordinates change sign.

    Its own inverse, like :func:`flip_ras_lps`; exact (a sign flip rounds
    nothing). Points are rows ``(x, y[, z])``.

    Examples
    --------
    >>> flip_ras_lps_points([[10.0, -20.0, 30.0]]).tolist()
    [[-10.0, 20.0, 30.0]]
    """
    points = np.array(points, dtype=float, ndmin=2)
    if points.shape[-1] < 2:
        raise GeometryError(f"expected points of 2 or 3 coordinates, got shape {points.shape}; give (n, d) rows")
    points[..., :2] *= -1.0
    return points
def point_map_ras_lps(matrix: np.ndarray) -> np.ndarray:
    """Convert a homogeneous 3D point map (world -> world, a linear transform) between RAS and LPS.

    Both the points it takes and the points it gives change convention, so the
    flip acts on both sides; it is its own inverse.

    Parameters
    ----------
    matrix : ndarray, shape (4, 4)
        ``y = matrix @ [x, 1]`` with ``x`` and ``y`` in one world convention.

    Returns
    -------
    ndarray, shape (4, 4)
        The same map in the other convention.

    Examples
    --------
    >>> import numpy as np
    >>> shift_left = np.eye(4); shift_left[0, 3] = 5.0   # LPS: +x is towards the patient's left
    >>> point_map_ras_lps(shift_left)[:3, 3].tolist()     # RAS: towards the left is -x
    [-5.0, 0.0, 0.0]
    >>> turn = np.eye(4); turn[:2, :2] = [[0.0, -1.0], [1.0, 0.0]]
    >>> np.array_equal(point_map_ras_lps(turn), turn)    # a turn about the z axis is the same turn in both
    True
    """
    matrix = np.asarray(matrix, dtype=float)
    if matrix.shape != (4, 4):
        raise GeometryError(f"expected a 4x4 point map, got shape {matrix.shape}; pass a homogeneous 3D transform")
    return _LPS_FLIP @ matrix @ _LPS_FLIP


def affine_from_geometry(
    origin: Sequence[float], spacing: Sequence[float], direction: np.ndarray
) -> np.ndarray:
    """Build the homogeneous world-from-index matrix ``world = o + D S i``.

    Parameters
    ----------
    origin : sequence of float
        World position of the centre of index 0.
    spacing : sequence of float
        Positive sample distance along each index axis.
    direction : ndarray, shape (d, d)
        Columns are the world directions of the index axes.

    Returns
    -------
    ndarray, shape (d + 1, d + 1)

    Examples
    --------
    >>> import numpy as np
    >>> affine_from_geometry([1.0, 2.0], [0.5, 2.0], np.eye(2)).tolist()
    [[0.5, 0.0, 1.0], [0.0, 2.0, 2.0], [0.0, 0.0, 1.0]]
    """
    first_centre = np.asarray(origin, dtype=float)  # the first pixel's centre
    steps = np.asarray(spacing, dtype=float)
    axes = np.asarray(direction, dtype=float)
    ndim = first_centre.size
    out = np.eye(ndim + 1)
    out[:ndim, :ndim] = axes * steps[np.newaxis, :]
    out[:ndim, ndim] = first_centre
    return out


def geometry_from_affine(affine: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Split a world-from-index matrix into origin, spacing and direction.

    Spacing is the length of each column; the direction keeps the columns'
    orientation (so a reflected grid keeps its sign in the direction).

    Examples
    --------
    >>> import numpy as np
    >>> o, s, d = geometry_from_affine(np.array([[0.0, -2.0, 5.0], [3.0, 0.0, 6.0], [0, 0, 1]]))
    >>> o.tolist(), s.tolist(), d.tolist()
    ([5.0, 6.0], [3.0, 2.0], [[0.0, -1.0], [1.0, 0.0]])
    """
    affine = np.asarray(affine, dtype=float)
    ndim = affine.shape[0] - 1
    linear = affine[:ndim, :ndim]
    spacing = np.linalg.norm(linear, axis=0)
    if np.any(spacing == 0) or not np.all(np.isfinite(spacing)):
        raise GeometryError(f"degenerate affine: column lengths {spacing.tolist()}; every index axis needs a non-zero step")
    direction = linear / spacing[np.newaxis, :]
    return affine[:ndim, ndim].copy(), spacing, direction


def geotransform_to_geometry(transform: Affine) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Convert a GDAL/rasterio geotransform (pixel corners) to ITK geometry (pixel centres).

    The origin is the geotransform applied to ``(0.5, 0.5)``: the centre of
    the top-left pixel. A north-up raster has a negative row step, which
    becomes a ``-1`` in the direction; a rotated geotransform gives a
    non-diagonal direction.

    Parameters
    ----------
    transform : affine.Affine
        Maps ``(col, row)`` of pixel corners to map ``(x, y)``.

    Returns
    -------
    origin, spacing, direction : ndarray
        In ITK index order ``(x=col, y=row)``.

    Examples
    --------
    >>> from affine import Affine
    >>> o, s, d = geotransform_to_geometry(Affine(30.0, 0.0, 1000.0, 0.0, -30.0, 5000.0))
    >>> o.tolist(), s.tolist(), d.tolist()
    ([1015.0, 4985.0], [30.0, 30.0], [[1.0, 0.0], [0.0, -1.0]])
    """
    centre = centre_geotransform(transform)
    matrix = np.array([[centre.a, centre.b, centre.c], [centre.d, centre.e, centre.f], [0.0, 0.0, 1.0]])
    return geometry_from_affine(matrix)


def geometry_to_geotransform(
    origin: Sequence[float], spacing: Sequence[float], direction: np.ndarray
) -> Affine:
    """Convert 2D ITK geometry (pixel centres) back to a GDAL geotransform (pixel corners).

    Inverse of :func:`geotransform_to_geometry`.

    Examples
    --------
    >>> import numpy as np
    >>> geometry_to_geotransform([1015.0, 4985.0], [30.0, 30.0], np.diag([1.0, -1.0]))
    Affine(30.0, 0.0, 1000.0,
           0.0, -30.0, 5000.0)
    """
    matrix = affine_from_geometry(origin, spacing, direction)
    if matrix.shape != (3, 3):
        raise GeometryError(f"a geotransform is 2D; got a {matrix.shape[0] - 1}D geometry")
    return corner_geotransform(Affine(*matrix[0], *matrix[1]))


def centre_geotransform(transform: Affine) -> Affine:
    """The affine taking pixel-**centre** ``(col, row)`` to map ``(x, y)``, from a GDAL geotransform (pixel corners).

    Its translation is the centre of the first pixel (the ITK origin); the
    linear part is the geotransform's.

    Examples
    --------
    >>> from affine import Affine
    >>> centre_geotransform(Affine(30.0, 0.0, 1000.0, 0.0, -30.0, 5000.0))
    Affine(30.0, 0.0, 1015.0,
           0.0, -30.0, 4985.0)
    """
    return transform @ Affine.translation(_HALF_PIXEL, _HALF_PIXEL)


def corner_geotransform(centre: Affine) -> Affine:
    """The GDAL geotransform (pixel corners) of an affine taking pixel-centre ``(col, row)`` to map ``(x, y)``.

    Inverse of :func:`centre_geotransform`.

    Examples
    --------
    >>> from affine import Affine
    >>> corner_geotransform(Affine(30.0, 0.0, 1015.0, 0.0, -30.0, 4985.0))
    Affine(30.0, 0.0, 1000.0,
           0.0, -30.0, 5000.0)
    """
    return centre @ Affine.translation(-_HALF_PIXEL, -_HALF_PIXEL)


def pixel_centre_to_map(transform: Affine, rows: Any, cols: Any) -> tuple[np.ndarray, np.ndarray]:
    """Map ``(x, y)`` of pixel-centre positions ``(row, col)`` of a raster with GDAL geotransform ``transform``.

    Pixel ``(row, col)``'s centre is at whole ``row, col`` (as in ITK);
    fractional positions are allowed, and ``-0.5`` is the first pixel's top
    or left edge.

    Parameters
    ----------
    transform : affine.Affine
        The raster's geotransform (pixel corners, as GDAL and rasterio store it).
    rows, cols : array_like
        Pixel-centre positions (broadcast together).

    Returns
    -------
    x, y : ndarray
        Map coordinates in the raster's CRS.

    Examples
    --------
    >>> from affine import Affine
    >>> t = Affine(30.0, 0.0, 1000.0, 0.0, -30.0, 5000.0)
    >>> [v.tolist() for v in pixel_centre_to_map(t, [0, 2], [0, 1])]
    [[1015.0, 1045.0], [4985.0, 4925.0]]
    """
    rows = np.asarray(rows, dtype=float)
    cols = np.asarray(cols, dtype=float)
    c, r = cols + _HALF_PIXEL, rows + _HALF_PIXEL
    return transform.a * c + transform.b * r + transform.c, transform.d * c + transform.e * r + transform.f


def map_to_pixel_centre(transform: Affine, x: Any, y: Any) -> tuple[np.ndarray, np.ndarray]:
    """Fractional pixel-centre ``(row, col)`` at map ``(x, y)`` of a raster with GDAL geotransform ``transform``.

    Inverse of :func:`pixel_centre_to_map`.

    Examples
    --------
    >>> from affine import Affine
    >>> t = Affine(30.0, 0.0, 1000.0, 0.0, -30.0, 5000.0)
    >>> [v.tolist() for v in map_to_pixel_centre(t, [1015.0, 1045.0], [4985.0, 4925.0])]
    [[0.0, 2.0], [0.0, 1.0]]
    """
    inv = ~transform
    x = np.asarray(x, dtype=float)
    y = np.asarray(y, dtype=float)
    c = inv.a * x + inv.b * y + inv.c - _HALF_PIXEL
    r = inv.d * x + inv.e * y + inv.f - _HALF_PIXEL
    return r, c


def pixel_corner_to_map(transform: Affine, rows: Any, cols: Any) -> tuple[np.ndarray, np.ndarray]:
    """Map ``(x, y)`` of positions ``(row, col)`` in GDAL's corner frame (the first pixel spans ``[0, 1)``).

    For pixel edges and image corners: ``(0, 0)`` is the raster's top-left
    corner, ``(height, width)`` its bottom-right one. Pixel centres go through
    :func:`pixel_centre_to_map`.

    Examples
    --------
    >>> from affine import Affine
    >>> t = Affine(30.0, 0.0, 1000.0, 0.0, -30.0, 5000.0)
    >>> [v.tolist() for v in pixel_corner_to_map(t, [0, 10], [0, 20])]
    [[1000.0, 1600.0], [5000.0, 4700.0]]
    """
    rows = np.asarray(rows, dtype=float)
    cols = np.asarray(cols, dtype=float)
    return cols * transform.a + rows * transform.b + transform.c, cols * transform.d + rows * transform.e + transform.f


def map_to_pixel_corner(transform: Affine, x: Any, y: Any) -> tuple[np.ndarray, np.ndarray]:
    """Fractional ``(row, col)`` in GDAL's corner frame at map ``(x, y)`` (inverse of :func:`pixel_corner_to_map`).

    ``floor`` of it is the pixel holding the point; rasterio windows are counted in this frame.

    Examples
    --------
    >>> from affine import Affine
    >>> t = Affine(30.0, 0.0, 1000.0, 0.0, -30.0, 5000.0)
    >>> [v.tolist() for v in map_to_pixel_corner(t, [1000.0, 1600.0], [5000.0, 4700.0])]
    [[0.0, 10.0], [0.0, 20.0]]
    """
    inv = ~transform
    x = np.asarray(x, dtype=float)
    y = np.asarray(y, dtype=float)
    return x * inv.d + y * inv.e + inv.f, x * inv.a + y * inv.b + inv.c


def subgrid_geotransform(transform: Affine, row: float = 0, col: float = 0, *, step: float | tuple[float, float] = 1) -> Affine:
    """GDAL geotransform of a grid whose top-left corner is pixel ``(row, col)``'s and whose pixels are ``step`` pixels.

    A window of the raster (``step=1``), a decimated copy (``step=4``: each
    pixel covers 4 x 4 of the original's), or both. ``step`` may differ
    between columns and rows: ``(col_step, row_step)``.

    Examples
    --------
    >>> from affine import Affine
    >>> t = Affine(30.0, 0.0, 1000.0, 0.0, -30.0, 5000.0)
    >>> subgrid_geotransform(t, 10, 20)
    Affine(30.0, 0.0, 1600.0,
           0.0, -30.0, 4700.0)
    >>> subgrid_geotransform(t, 10, 20, step=4)
    Affine(120.0, 0.0, 1600.0,
           0.0, -120.0, 4700.0)
    """
    col_step, row_step = step if isinstance(step, tuple) else (step, step)
    window = transform @ Affine.translation(col, row)
    return window if col_step == row_step == 1 else window @ Affine.scale(col_step, row_step)


def ijk_to_zyx(array: np.ndarray, spatial_ndim: int = 3) -> np.ndarray:
    """Reorder a nibabel-style ``(i, j, k, ...)`` array to ``(z, y, x, ...)``.

    Trailing non-spatial axes (time, channels) stay at the end. Returns a view.

    Examples
    --------
    >>> import numpy as np
    >>> ijk_to_zyx(np.zeros((2, 3, 4, 5))).shape
    (4, 3, 2, 5)
    """
    order = list(range(spatial_ndim))[::-1] + list(range(spatial_ndim, array.ndim))
    return np.transpose(array, order)


def zyx_to_ijk(array: np.ndarray, spatial_ndim: int = 3) -> np.ndarray:
    """Inverse of :func:`ijk_to_zyx` (the same axis reversal).

    Examples
    --------
    >>> import numpy as np
    >>> zyx_to_ijk(np.zeros((4, 3, 2, 5))).shape
    (2, 3, 4, 5)
    """
    return ijk_to_zyx(array, spatial_ndim)


_AXIS_LETTERS = {"LPS": (("L", "R"), ("P", "A"), ("S", "I"))}


def orientation_code(direction: np.ndarray) -> str:
    """Name the world axis each index axis points to, in the LPS world (ITK's convention).

    ITK's code gives, for each index axis (x, y, z), the world direction it
    increases towards; an identity direction is ``"LPS"``, a NIfTI-style RAS
    volume read into LPS is ``"RAS"``.

    Examples
    --------
    >>> import numpy as np
    >>> orientation_code(np.eye(3))
    'LPS'
    >>> orientation_code(np.diag([-1.0, -1.0, 1.0]))
    'RAS'
    >>> orientation_code(np.array([[0, 0, 1], [1, 0, 0], [0, 1, 0]]))
    'PSL'
    """
    direction = np.asarray(direction, dtype=float)
    ndim = direction.shape[0]
    letters = _AXIS_LETTERS["LPS"][:ndim]
    code = []
    for column in direction.T:
        world_axis = int(np.argmax(np.abs(column)))
        positive, negative = letters[world_axis]
        code.append(positive if column[world_axis] > 0 else negative)
    return "".join(code)
