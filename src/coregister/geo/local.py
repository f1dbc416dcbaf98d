"""Local correction: a grid of tie points, outliers removed, and a displacement field fitted through the kept ones.

The field is the **correction** (columns, rows in reference pixels) as a
function of the reference pixel position. Two kinds:

* ``"polynomial"`` of order 1-3 in the pixel coordinates, least squares
  weighted by reliability (order 1 is an affine correction);
* ``"smooth"``: a thin-plate spline with smoothing
  (:class:`scipy.interpolate.RBFInterpolator`; local, on the 32 nearest
  points, beyond a thousand points) through the kept points,
  evaluated once on a lattice every :data:`LATTICE_PX` pixels and
  interpolated bilinearly from there, so that the output is written block by
  block without a full-scene field (a 10980 x 10980 field alone would take
  about 2 GB).
"""

from __future__ import annotations

import csv
import dataclasses
import logging
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage

from coregister.errors import ConfigError, RegistrationFailed
from coregister.geo.options import Field
from coregister.geo.result import WindowMatch
from coregister.geo.windows import shown_beyond

logger = logging.getLogger(__name__)

__all__ = ["DisplacementField", "fit_field", "ransac_filter", "tie_point_grid", "write_tie_points"]

#: lattice step (reference pixels) of the smooth field
LATTICE_PX = 32
#: thin-plate smoothing per tie point (coordinates scaled to the scene's extent), for reliability 1
_SMOOTHING = 1e-5
#: above this many kept tie points, the thin-plate spline is fitted locally on the nearest ones
_GLOBAL_MAX = 1000
_NEIGHBOURS = 32


def tie_point_grid(height: int, width: int, *, spacing_px: int, window_px: int) -> list[tuple[int, int]]:
    """Centres ``(row, col)`` of a regular grid of windows that lie inside a ``height x width`` raster."""
    if spacing_px < 1:
        raise ConfigError(f"grid_spacing_px={spacing_px}: give a positive spacing in pixels (e.g. 100)")
    half = window_px // 2
    rows = range(half, height - half + 1, spacing_px)
    cols = range(half, width - half + 1, spacing_px)
    return [(r, c) for r in rows for c in cols]


class _AffineTrend:
    """Affine map of positions, fitted by linear least squares (a RANSAC model for scikit-image's ``ransac``).

    scikit-image's own ``AffineTransform`` estimates through the SVD of a
    ``2n x 9`` matrix with full ``U``: 250 MB for 2900 tie points, 4 GB for a
    10980 x 10980 scene at 100 px spacing. A ``(n, 3)`` least-squares solve needs nothing of the kind.
    """

    def __init__(self, matrix: np.ndarray) -> None:
        self.matrix = matrix  # (3, 2): [x, y, 1] @ matrix -> fitted destination

    @classmethod
    def from_estimate(cls, src: np.ndarray, dst: np.ndarray) -> _AffineTrend | None:
        design = np.c_[src, np.ones(len(src))]
        matrix, _, rank, _ = np.linalg.lstsq(design, dst, rcond=None)
        return cls(matrix) if rank == 3 else None

    def residuals(self, src: np.ndarray, dst: np.ndarray) -> np.ndarray:
        return np.hypot(*(np.c_[src, np.ones(len(src))] @ self.matrix - dst).T)

    def __call__(self, src: np.ndarray) -> np.ndarray:
        return np.c_[src, np.ones(len(src))] @ self.matrix


def ransac_filter(matches: list[WindowMatch], *, threshold_px: float, seed: int) -> list[WindowMatch]:
    """Reject kept tie points inconsistent with an affine trend of the shifts (RANSAC, scikit-image).

    The model maps each point's position to its corrected position; points
    whose residual exceeds ``threshold_px`` lose ``used`` with a reason.
    """
    from skimage.measure import ransac

    kept = [i for i, m in enumerate(matches) if m.used]
    if len(kept) < 6:
        return matches
    src = np.array([(matches[i].col, matches[i].row) for i in kept], float)
    dst = src + np.array([matches[i].shift_px for i in kept], float)
    model, inliers = ransac(
        (src, dst), _AffineTrend, min_samples=3, residual_threshold=threshold_px, max_trials=500, rng=seed
    )
    if model is None or inliers is None:
        logger.warning("RANSAC found no consistent affine trend among %d tie points; none removed", len(kept))
        return matches
    residuals = model.residuals(src, dst)
    out = list(matches)
    for index, inlier, residual in zip(kept, inliers, residuals, strict=True):
        if not inlier:
            out[index] = dataclasses.replace(
                matches[index], used=False,
                reason=f"RANSAC outlier ({shown_beyond(residual, threshold_px, below=False)} px from the affine trend)",
            )
    return out


@dataclasses.dataclass(frozen=True)
class DisplacementField:
    """Correction ``(d_col, d_row)`` in reference pixels as a function of reference pixel position.

    Evaluate with :meth:`at`; ``kind`` is ``"polynomial"`` or ``"smooth"``.
    """

    kind: str
    order: int
    coefficients: np.ndarray | None = None  # polynomial: (n_terms, 2)
    lattice: np.ndarray | None = None  # smooth: (2, n_rows, n_cols) of (d_col, d_row)
    lattice_step: float = LATTICE_PX
    scale: tuple[float, float] = (1.0, 1.0)  # polynomial coordinates are divided by these (rows, cols)
    rmse_px: float = math.nan
    n_points: int = 0

    def at(self, rows: np.ndarray, cols: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Correction (columns, rows) at reference pixel positions."""
        rows = np.asarray(rows, dtype=float)
        cols = np.asarray(cols, dtype=float)
        if self.kind == "polynomial":
            assert self.coefficients is not None
            terms = _monomials(rows / self.scale[0], cols / self.scale[1], self.order)
            dcol = np.tensordot(self.coefficients[:, 0], terms, axes=1)
            drow = np.tensordot(self.coefficients[:, 1], terms, axes=1)
            return dcol, drow
        assert self.lattice is not None
        coords = np.array([rows / self.lattice_step, cols / self.lattice_step])
        dcol = ndimage.map_coordinates(self.lattice[0], coords, order=1, mode="nearest")
        drow = ndimage.map_coordinates(self.lattice[1], coords, order=1, mode="nearest")
        return dcol, drow

    def describe(self) -> dict[str, Any]:
        """JSON-ready summary (kind, order, RMSE of the kept points, their number)."""
        out: dict[str, Any] = {"kind": self.kind, "rmse_px": self.rmse_px, "points": self.n_points}
        if self.kind == "polynomial":
            out["order"] = self.order
        else:
            out["lattice_px"] = self.lattice_step
        return out


def _monomials(rows: np.ndarray, cols: np.ndarray, order: int) -> np.ndarray:
    """``[1, c, r, c^2, c r, r^2, ...]`` up to total degree ``order``, stacked on a new first axis."""
    terms = []
    for degree in range(order + 1):
        for power_r in range(degree + 1):
            terms.append(cols ** (degree - power_r) * rows**power_r)
    return np.stack(terms)


def fit_field(
    matches: Sequence[WindowMatch],
    height: int,
    width: int,
    *,
    kind: Field | str = Field.SMOOTH,
    order: int = 1,
    smoothing: float | None = None,
) -> DisplacementField:
    """Fit the displacement field through the kept tie points (see the module docstring).

    Parameters
    ----------
    matches : sequence of WindowMatch
        Tie points; those with ``used`` go into the fit.
    height, width : int
        Size of the reference grid (the smooth field's lattice covers it).
    kind : Field or {"smooth", "polynomial"}
    order : int
        Polynomial order, 1 to 3 (``"polynomial"``).
    smoothing : float, optional
        Thin-plate smoothing (``"smooth"``) per tie point of reliability 1
        (coordinates scaled to the scene's extent; a point of reliability
        ``r`` gets ``smoothing / r**2``).
    """
    kind = Field.parse(kind)
    if kind is Field.POLYNOMIAL and order not in (1, 2, 3):
        raise ConfigError(f"polynomial order {order} is not supported; choose 1, 2 or 3")
    kept = [m for m in matches if m.used]
    needed = 3 if kind is Field.SMOOTH else (order + 1) * (order + 2) // 2
    if len(kept) < needed:
        raise RegistrationFailed(
            f"only {len(kept)} reliable tie points were kept; a {kind} field needs at least {needed}: "
            "use a smaller grid_spacing_px, a larger window_px, or mode='shift'"
        )
    rows = np.array([m.row for m in kept], float)
    cols = np.array([m.col for m in kept], float)
    values = np.array([m.shift_px for m in kept], float)  # (n, 2): d_col, d_row
    weights = np.array([max(m.reliability, 1e-3) for m in kept])
    if kind is Field.POLYNOMIAL:
        scale = (float(max(height, 1)), float(max(width, 1)))
        design = _monomials(rows / scale[0], cols / scale[1], order).T
        sw = np.sqrt(weights)[:, None]
        coefficients, *_ = np.linalg.lstsq(design * sw, values * sw, rcond=None)
        fitted = design @ coefficients
        rmse = float(np.sqrt(np.mean(np.sum((fitted - values) ** 2, axis=1))))
        return DisplacementField("polynomial", order, coefficients=coefficients, scale=scale, rmse_px=rmse,
                                 n_points=len(kept))
    from scipy.interpolate import RBFInterpolator

    extent = float(max(height, width))
    points = np.c_[rows, cols] / extent
    if smoothing is None:
        smoothing = _SMOOTHING
    # less reliable points are smoothed more (per-point smoothing ~ 1 / reliability^2)
    per_point = float(smoothing) * len(kept) / weights**2
    # a global thin-plate system is (n + 3)^2: beyond about a thousand points, fit each place from its
    # 32 nearest tie points instead (memory stays that of the lattice, not n^2: 11 600 points would need 1 GB)
    neighbors = None if len(kept) <= _GLOBAL_MAX else _NEIGHBOURS
    rbf = RBFInterpolator(points, values, kernel="thin_plate_spline", smoothing=per_point, degree=1,
                          neighbors=neighbors)
    n_rows = int(math.ceil((height - 1) / LATTICE_PX)) + 1
    n_cols = int(math.ceil((width - 1) / LATTICE_PX)) + 1
    lr, lc = np.mgrid[0:n_rows, 0:n_cols].astype(float) * LATTICE_PX
    lattice = rbf(np.c_[lr.ravel(), lc.ravel()] / extent).T.reshape(2, n_rows, n_cols)
    # no wild extrapolation beyond the tie points: keep the field inside their range
    for k in range(2):
        lattice[k] = np.clip(lattice[k], values[:, k].min(), values[:, k].max())
    fitted = rbf(points)
    rmse = float(np.sqrt(np.mean(np.sum((fitted - values) ** 2, axis=1))))
    return DisplacementField("smooth", 0, lattice=lattice, rmse_px=rmse, n_points=len(kept))


def write_tie_points(matches: Sequence[WindowMatch], path: str | os.PathLike[str], *, crs_wkt: str | None) -> Path:
    """Write the tie points as CSV (any suffix but ``.gpkg``) or GeoPackage (``.gpkg``, needs pyogrio).

    Columns: ``x, y`` (map, reference CRS), ``row, col``, ``dx, dy`` (map
    units, x east, y north), ``dcol, drow`` (reference pixels), ``reliability``,
    ``ncc``, ``kept``, ``reason`` (why rejected).
    """
    from coregister._files import atomic_path

    path = Path(path)
    columns = ["x", "y", "row", "col", "dx", "dy", "dcol", "drow", "reliability", "ncc", "kept", "reason"]
    records = [
        {
            "x": m.x, "y": m.y, "row": m.row, "col": m.col, "dx": m.shift_map[0], "dy": m.shift_map[1],
            "dcol": m.shift_px[0], "drow": m.shift_px[1], "reliability": m.reliability, "ncc": m.ncc,
            "kept": bool(m.used), "reason": m.reason,
        }
        for m in matches
    ]
    if path.suffix.lower() == ".gpkg":
        try:
            import pyogrio
        except ImportError:
            raise ConfigError(
                f"writing {str(path)!r} as GeoPackage needs pyogrio (pip install pyogrio); or give a .csv path"
            ) from None
        data = {c: np.array([r[c] for r in records]) for c in columns if c not in ("x", "y")}
        data["reason"] = data["reason"].astype(object)
        with atomic_path(path) as tmp:
            pyogrio.raw.write(
                tmp, geometry=_wkb_points(records), field_data=list(data.values()), fields=list(data.keys()),
                geometry_type="Point", crs=crs_wkt, driver="GPKG", layer="tie_points",
            )
        return path
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=columns)
        writer.writeheader()
        for record in records:
            writer.writerow({k: ("" if isinstance(v, float) and math.isnan(v) else v) for k, v in record.items()})
    return path


def _wkb_points(records: Sequence[dict[str, Any]]) -> np.ndarray:
    import struct

    return np.array([struct.pack("<BIdd", 1, 1, r["x"], r["y"]) for r in records], dtype=object)
