"""``coregister.geo.georeference``: give an image without a geotransform one, from a georeferenced base or from GCPs.

* ``base=``: the image is registered to the base raster in pixel space: SIFT
  keypoints, a robust affine fit and its ECC refinement
  (:class:`~coregister.engines.features.FeatureEngine`), or intensity
  registration (:func:`coregister.register`, Mattes MI) for similar imagery
  that is roughly aligned already. The image-to-base pixel map composed with
  the base's geotransform is the image's geotransform.
* ``gcps=``: a CSV of ground control points (``pixel, line, x, y``; pixel and
  line counted from the top-left **corner** as in GDAL, so the first pixel's
  centre is ``(0.5, 0.5)``), fitted by an affine or a polynomial of order 1-3
  with the residual RMSE reported. An affine becomes the geotransform; a
  higher order is written as GCPs (GDAL warps with them, e.g. ``gdalwarp -order 2``).
"""

from __future__ import annotations

import csv
import io
import logging
import math
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
from affine import Affine

from coregister.conventions import (
    centre_geotransform,
    corner_geotransform,
    geotransform_to_geometry,
    pixel_corner_to_map,
)
from coregister.errors import ConfigError, GeometryError, RegistrationFailed, UnreadableInputError
from coregister.geo.coreg import _check_output
from coregister.geo.result import GeoResult
from coregister.image import SpatialImage
from coregister.pipeline import QualityReport, Verdict

logger = logging.getLogger(__name__)

__all__ = ["METHODS", "fit_gcps", "georeference", "read_gcps"]

#: ``method=`` of :func:`georeference` with a base raster (the command line's ``--method``).
METHODS = ("features", "intensity")

Source = str | os.PathLike[str] | SpatialImage


def read_gcps(path: str | os.PathLike[str]) -> np.ndarray:
    """Read a GCP CSV with columns ``pixel, line, x, y`` (header required; extra columns ignored) -> (n, 4).

    Raises
    ------
    UnreadableInputError
        Missing, or not a text file.
    ConfigError
        A missing column, a row whose four values are not finite numbers, no row.
    """
    path = Path(path)
    if not path.is_file():
        raise UnreadableInputError(f"GCP file {str(path)!r} does not exist; check the path")
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (UnicodeDecodeError, OSError) as exc:
        raise UnreadableInputError(f"GCP file {str(path)!r} is not a text (CSV) file ({exc}); check the path") from exc
    reader = csv.DictReader(io.StringIO(text, newline=""))
    names = {n.strip().lower(): n for n in (reader.fieldnames or [])}
    missing = [c for c in ("pixel", "line", "x", "y") if c not in names]
    if missing:
        raise ConfigError(
            f"GCP file {str(path)!r} lacks the column(s) {missing}; give a header 'pixel,line,x,y' "
            "(pixel and line from the image's top-left corner, x and y in the CRS given with crs=)"
        )
    rows = []
    for number, row in enumerate(reader, start=1):
        try:
            values = [float(row[names[c]]) for c in ("pixel", "line", "x", "y")]
        except (TypeError, ValueError):
            cells = [row.get(names[c]) for c in ("pixel", "line", "x", "y")]
            raise ConfigError(f"GCP file {str(path)!r}, row {number}: {cells} are not four numbers") from None
        if not all(np.isfinite(values)):
            raise ConfigError(f"GCP file {str(path)!r}, row {number}: {values} are not all finite numbers")
        rows.append(values)
    if not rows:
        raise ConfigError(f"GCP file {str(path)!r} holds no points")
    return np.array(rows)


def _terms(pixel: np.ndarray, line: np.ndarray, order: int) -> np.ndarray:
    out = []
    for degree in range(order + 1):
        for power_line in range(degree + 1):
            out.append(pixel ** (degree - power_line) * line**power_line)
    return np.stack(out, axis=-1)


def fit_gcps(gcps: np.ndarray, *, order: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Least-squares polynomial ``(pixel, line) -> (x, y)`` of ``order`` through GCPs; coefficients and residuals.

    Returns
    -------
    coefficients : ndarray (n_terms, 2)
        Terms ``1, p, l, p^2, p l, l^2, ...`` (``p``, ``l`` scaled by the largest |value|).
    residuals : ndarray (n, 2)
        Fitted minus given map coordinates at each GCP.

    Examples
    --------
    >>> import numpy as np
    >>> g = np.array([[0, 0, 100.0, 500.0], [10, 0, 130.0, 500.0], [0, 10, 100.0, 470.0], [10, 10, 130.0, 470.0]])
    >>> coefficients, residuals = fit_gcps(g)
    >>> float(np.abs(residuals).max()) < 1e-9
    True
    """
    if order not in (1, 2, 3):
        raise ConfigError(f"order={order}: choose a polynomial order of 1, 2 or 3")
    needed = (order + 1) * (order + 2) // 2
    if len(gcps) < needed:
        raise ConfigError(f"{len(gcps)} GCPs cannot fit a polynomial of order {order}; it needs at least {needed}")
    scale = float(max(np.abs(gcps[:, :2]).max(), 1.0))
    design = _terms(gcps[:, 0] / scale, gcps[:, 1] / scale, order)
    coefficients, *_ = np.linalg.lstsq(design, gcps[:, 2:4], rcond=None)
    residuals = design @ coefficients - gcps[:, 2:4]
    return coefficients, residuals


def _affine_from_gcps(gcps: np.ndarray) -> Affine:
    """Corner-based geotransform from an exact affine least-squares fit ``(pixel, line) -> (x, y)``."""
    design = np.c_[gcps[:, 0], gcps[:, 1], np.ones(len(gcps))]
    (a, d), (b, e), (c, f) = np.linalg.lstsq(design, gcps[:, 2:4], rcond=None)[0]
    return Affine(a, b, c, d, e, f)


def _read_image(image: Source, band: int | None) -> SpatialImage:
    if isinstance(image, SpatialImage):
        return image
    from coregister.io import read

    return read(image)


def _grey(image: SpatialImage) -> np.ndarray:
    from coregister.preprocess import luminance_if_colour

    grey, _ = luminance_if_colour(image)
    return np.asarray(grey.array, dtype=np.float32)


def _pixel_image(array: np.ndarray, mask: np.ndarray | None = None) -> SpatialImage:
    return SpatialImage(array, origin=(0.0, 0.0), spacing=(1.0, 1.0), mask=mask)


def _write(image: SpatialImage, output: Path, *, transform: Affine | None, crs: Any, gcps: np.ndarray | None,
           cog: bool) -> None:
    from rasterio.control import GroundControlPoint
    from rasterio.crs import CRS as RioCRS

    from coregister.io.raster import write_raster

    meta = {k: v for k, v in dict(image.meta).items() if k not in ("transform", "crs_wkt", "source_path", "window")}
    if transform is not None:
        origin, spacing, direction = geotransform_to_geometry(transform)
        out = image.replace(origin=tuple(origin), spacing=tuple(spacing), direction=direction, crs=crs,
                            meta={**meta, "rpcs": None, "gcps": (), "gcps_crs_wkt": None})
    else:
        assert gcps is not None
        points = tuple(GroundControlPoint(row=float(g[1]), col=float(g[0]), x=float(g[2]), y=float(g[3]),
                                          id=str(i + 1)).asdict() for i, g in enumerate(gcps))
        out = image.replace(origin=(0.0, 0.0), spacing=(1.0, 1.0), direction=np.eye(2), crs=None,
                            meta={**meta, "gcps": points, "gcps_crs_wkt": RioCRS.from_user_input(crs).to_wkt(),
                                  "rpcs": None})
    write_raster(out, output, cog=cog, overwrite=True)


def georeference(
    image: Source,
    *,
    base: Source | None = None,
    gcps: str | os.PathLike[str] | np.ndarray | None = None,
    crs: Any = None,
    output: str | os.PathLike[str] | None = None,
    order: int = 1,
    method: str = "features",
    cog: bool = False,
) -> GeoResult:
    """Georeference an image from a georeferenced base raster or from ground control points.

    Parameters
    ----------
    image : path or SpatialImage
        The image (PNG, JPEG, TIFF...): its pixel grid is what gets georeferenced;
        any georeferencing it has is replaced.
    base : path or SpatialImage, optional
        A georeferenced raster covering the image's area.
    gcps : path or ndarray (n, 4), optional
        Ground control points ``pixel, line, x, y`` (corner-based pixel/line, as in GDAL).
    crs : CRS, optional
        CRS of the GCPs' ``x, y`` (required with ``gcps``; with ``base`` the base's CRS is used).
    output : path, optional
        GeoTIFF to write: the image with its geotransform and CRS, or with
        GCPs when a polynomial of order 2-3 was asked for.
    order : int
        ``gcps``: polynomial order (1 = affine, written as a geotransform).
    method : {"features", "intensity"}
        ``base``: SIFT + robust affine + ECC refinement, or intensity
        registration (Mattes MI; the image must already be roughly aligned
        in pixel space, e.g. a re-sampled copy).
    cog : bool
        Write a Cloud-Optimised GeoTIFF.

    Returns
    -------
    GeoResult
        ``mode="georeference"``; ``quality`` is the registration's verdict
        with a base (passed, with no measures, for GCPs); ``extras`` holds ``geotransform`` (corner-based,
        GDAL order), ``rmse_map`` and ``rmse_px`` of the fit (GCPs: residuals
        at the points; base: reprojection error of the feature inliers),
        ``corners`` (map coordinates of the image's corners).

    Examples
    --------
    >>> import numpy as np
    >>> from coregister import SpatialImage
    >>> image = SpatialImage(np.zeros((100, 200), np.uint8), origin=(0, 0), spacing=(1, 1))
    >>> gcps = np.array([[0, 0, 500000, 4100000], [200, 0, 506000, 4100000], [0, 100, 500000, 4097000],
    ...                  [200, 100, 506000, 4097000], [100, 50, 503000, 4098500]], float)
    >>> result = georeference(image, gcps=gcps, crs="EPSG:32633")
    >>> result.extras["geotransform"], round(result.extras["rmse_map"], 6)
    ([30.0, 0.0, 500000.0, 0.0, -30.0, 4100000.0], 0.0)
    """
    started = time.perf_counter()
    if (base is None) == (gcps is None):
        raise ConfigError("give exactly one of base= (a georeferenced raster) or gcps= (a GCP file or array)")
    out_path = _check_output(output, image)
    img = _read_image(image, None)
    if img.ndim != 2:
        raise GeometryError(f"georeferencing takes a 2D image; got {img!r}")
    source = str(image) if not isinstance(image, SpatialImage) else img.meta.get("source_path")
    height, width = img.shape
    warnings: list[str] = []
    extras: dict[str, Any] = {}
    transform: Affine | None
    points: np.ndarray | None = None
    quality = QualityReport(Verdict.PASSED)  # GCPs: nothing to compare
    if gcps is not None:
        if crs is None:
            raise ConfigError("gcps= needs crs= (the CRS of the GCPs' x, y), e.g. crs='EPSG:32633'")
        points = read_gcps(gcps) if not isinstance(gcps, np.ndarray) else np.asarray(gcps, float)
        _, residuals = fit_gcps(points, order=order)
        rmse = float(np.sqrt(np.mean(np.sum(residuals**2, axis=1))))
        transform = _affine_from_gcps(points) if order == 1 else None
        pixel = math.sqrt(abs(_affine_from_gcps(points).determinant)) if len(points) >= 3 else math.nan
        extras.update(rmse_map=rmse, rmse_px=rmse / pixel if pixel else math.nan, gcps=len(points), order=order)
        out_crs = crs
    else:
        assert base is not None
        transform, out_crs, quality, fit = _from_base(img, base, method=method)
        warnings += fit.pop("warnings", [])
        extras.update(fit)
    if transform is not None:
        extras["geotransform"] = [float(v) for v in tuple(transform)[:6]]
        xs, ys = pixel_corner_to_map(transform, [0, 0, height, height], [0, width, width, 0])
        extras["corners"] = [[float(x), float(y)] for x, y in zip(xs, ys, strict=True)]
    if out_path is not None:
        _write(img, out_path, transform=transform, crs=out_crs, gcps=points, cog=cog)
    return GeoResult(
        mode="georeference",
        output=out_path,
        target={"name": str(source or "in-memory image"), "size": [width, height]},
        reference={"name": str(base) if base is not None and not isinstance(base, SpatialImage) else "GCPs",
                   "crs": str(out_crs)},
        warnings=tuple(warnings),
        time_s=time.perf_counter() - started,
        config={"method": method if base is not None else "gcps", "order": order, "cog": cog},
        extras=extras,
        quality=quality,
    )


def _from_base(image: SpatialImage, base: Source, *, method: str) -> tuple[Affine, Any, QualityReport, dict[str, Any]]:
    """Image pixel -> base pixel affine (features or intensity), composed with the base's geotransform, and its verdict."""
    from coregister.config import EngineName, Initialisation, RegistrationConfig, Stage, TransformModel
    from coregister.conventions import geometry_to_geotransform
    from coregister.transforms import linear_members

    if method not in METHODS:
        raise ConfigError(f"method={method!r} is not one of {', '.join(METHODS)}")
    base_img = _read_image(base, None)
    if base_img.crs is None:
        raise GeometryError(f"the base {base_img!r} has no CRS; give a georeferenced raster as base")
    base_transform = geometry_to_geotransform(base_img.origin, base_img.spacing, base_img.direction)
    fixed = _pixel_image(_grey(image), image.valid_mask() if image.mask is not None or image.nodata is not None
                         else None)
    moving = _pixel_image(_grey(base_img), base_img.valid_mask())
    fit: dict[str, Any] = {"method": method, "warnings": []}
    from coregister.pipeline import register

    if method == "features":
        config = RegistrationConfig(stages=(Stage(model=TransformModel.AFFINE, extra=(("detector", "sift"),)),),
                                    engine=EngineName.FEATURES, initialisation=Initialisation.NONE, name="georeference")
        result = register(fixed, moving, config=config, fixed_mask=fixed.mask, moving_mask=moving.mask)
        fit.update(inliers=result.extras.get("inliers"), rmse_px=result.extras.get("reprojection_error_px"),
                   refined=result.extras.get("refined"))
    else:
        result = register(fixed, moving, preset="affine", metric="mattes", fixed_mask=fixed.mask,
                          moving_mask=moving.mask)
        fit.update(metrics={k: dict(v) for k, v in result.metrics.items()})
    pixel_map = result.transform
    fit["warnings"] += list(result.warnings)
    if not pixel_map.is_linear:
        raise RegistrationFailed(f"the image-to-base fit gave a {type(pixel_map).__name__}, not an affine")
    (flat,) = linear_members(pixel_map)
    h = flat.homogeneous  # image pixel centre (col, row) -> base pixel centre
    pixel_to_base = Affine(h[0, 0], h[0, 1], h[0, 2], h[1, 0], h[1, 1], h[1, 2])
    # image pixel centres -> base pixel centres -> map, then back to the corner-based geotransform
    transform = corner_geotransform(centre_geotransform(base_transform) @ pixel_to_base)
    pixel = math.sqrt(abs(base_transform.determinant))
    if fit.get("rmse_px") is not None:
        fit["rmse_map"] = float(fit["rmse_px"]) * pixel
    return transform, base_img.crs, result.quality, fit
