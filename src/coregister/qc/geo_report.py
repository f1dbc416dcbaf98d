"""The HTML report of a geospatial coregistration: what ran, before/after views, a full-resolution detail, tie points.

Rasters given as paths are read as previews (long side at most
:data:`PREVIEW_MAX_PX` pixels) and the target is reprojected onto the
reference's preview by GDAL, so whole scenes in any CRS cost little memory;
a :data:`DETAIL_PX` square of the reference at its own resolution shows,
before and after, the pixel-sized shifts that previews hide. The page and
its pieces come from :mod:`coregister.qc.html`, the pictures from
:mod:`coregister.qc.figures`.

Examples
--------
>>> points = TiePoints.from_records({"x": [0.0, 30.0], "y": [0.0, 0.0], "dx": [1.0, float("nan")], "dy": [2.0, 0.0]})
>>> points.kept.tolist(), points.unmatched
([True], 1)
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from coregister._pictures import colour_overlay, equalise
from coregister.image import SpatialImage
from coregister.qc.figures import _grid_figure, _luminance, _resampled, _tie_point_figure, checkerboard
from coregister.qc.html import _comparison_sections, _esc, _figure_html, _metrics_html, _num, _page, _units, _write
from coregister.transforms import Translation

__all__ = ["DETAIL_PX", "PREVIEW_MAX_PX", "TiePoints", "write_geo_report"]

if TYPE_CHECKING:
    from coregister.geo.result import GeoResult


#: Rasters given as paths are drawn from a preview of at most this many pixels on the long side.
PREVIEW_MAX_PX = 1200


#: Side (reference pixels) of the full-resolution detail of the geo report.
DETAIL_PX = 256


@dataclasses.dataclass(frozen=True)
class TiePoints:
    """Tie points to draw over a reference raster: positions and shifts in map units, and whether each was kept.

    ``x``, ``y``: map coordinates of the windows' centres; ``dx``, ``dy``: the
    correction found there (map units, x east, y north); ``kept``: True for
    points used in the fit; ``reason``: why a point was rejected (optional).
    """

    x: np.ndarray
    y: np.ndarray
    dx: np.ndarray
    dy: np.ndarray
    kept: np.ndarray
    reliability: np.ndarray | None = None
    unmatched: int = 0  #: points without a vector (the match failed), not drawn

    @classmethod
    def from_records(cls, records: Any) -> TiePoints:
        """From a mapping of columns or a sequence of mappings with ``x, y, dx, dy`` (and ``kept``, ``reliability``)."""
        if isinstance(records, TiePoints):
            return records
        if isinstance(records, Mapping):
            columns = {k: np.asarray(v) for k, v in records.items()}
        else:
            rows = list(records)
            columns = {k: np.asarray([r[k] for r in rows]) for k in (rows[0].keys() if rows else ("x", "y", "dx", "dy"))}
        n = len(columns.get("x", []))
        kept = np.asarray(columns.get("kept", np.ones(n, bool))).astype(bool)
        rel = columns.get("reliability")
        x, y = np.asarray(columns["x"], float), np.asarray(columns["y"], float)
        dx, dy = np.asarray(columns["dx"], float), np.asarray(columns["dy"], float)
        finite = np.isfinite(x) & np.isfinite(y) & np.isfinite(dx) & np.isfinite(dy)  # failed matches have no vector
        return cls(
            x=x[finite], y=y[finite], dx=dx[finite], dy=dy[finite], kept=kept[finite],
            reliability=None if rel is None else np.asarray(rel, float)[finite], unmatched=int((~finite).sum()),
        )


def _raster_preview(path: str | os.PathLike[str], band: int, max_px: int, *, nodata: float | None = None) -> SpatialImage:
    """Band ``band`` of a raster, decimated so that its long side is at most ``max_px`` (memory bounded)."""
    import rasterio
    from affine import Affine as GeoAffine
    from rasterio.vrt import WarpedVRT

    from coregister.conventions import geotransform_to_geometry
    from coregister.io.raster import open_dataset

    with open_dataset(path) as ds:
        factor = max(1.0, max(ds.width, ds.height) / max_px)
        width, height = max(1, round(ds.width / factor)), max(1, round(ds.height / factor))
        if nodata is not None and ds.nodata is None:
            with WarpedVRT(ds, src_nodata=nodata, nodata=nodata) as vrt:  # declare the fill so averaging skips it
                values = vrt.read(band, out_shape=(height, width), masked=True, resampling=rasterio.enums.Resampling.average)
        else:
            values = ds.read(band, out_shape=(height, width), masked=True, resampling=rasterio.enums.Resampling.average)
        transform = ds.transform @ GeoAffine.scale(ds.width / width, ds.height / height)
        crs = ds.crs.to_wkt() if ds.crs else None
    origin, spacing, direction = geotransform_to_geometry(transform)
    array = np.ma.filled(values.astype(np.float32), np.nan)
    return SpatialImage(array, origin=tuple(origin), spacing=tuple(spacing), direction=direction, crs=crs,
                        meta={"source_path": str(path), "format": "geotiff"})


def _warped_onto(grid: SpatialImage, path: str | os.PathLike[str], band: int, *, nodata: float | None = None) -> SpatialImage:
    """Band ``band`` of the raster at ``path`` reprojected onto ``grid`` (any CRS; GDAL's warper, bilinear)."""
    import rasterio
    from rasterio.vrt import WarpedVRT

    from coregister.conventions import geometry_to_geotransform
    from coregister.io.raster import open_dataset

    height, width = grid.shape
    transform = geometry_to_geotransform(grid.origin, grid.spacing, grid.direction)
    with open_dataset(path) as ds, WarpedVRT(
        ds, crs=grid.crs.to_wkt() if grid.crs else ds.crs, transform=transform, width=width, height=height,
        resampling=rasterio.enums.Resampling.bilinear,
        **({"src_nodata": nodata, "nodata": nodata} if nodata is not None and ds.nodata is None else {}),
    ) as vrt:
        values = vrt.read(band, masked=True)
    array = np.ma.filled(values.astype(np.float32), np.nan)
    return SpatialImage(array, origin=grid.origin, spacing=grid.spacing, direction=grid.direction, crs=grid.crs,
                        meta={"source_path": str(path)})


def _pixel_size(source: SpatialImage | str | os.PathLike[str], band: int) -> tuple[float, float]:
    """The raster's own pixel size (x, y) in map units: the file's, not its preview's."""
    if isinstance(source, SpatialImage):
        return float(source.spacing[0]), float(source.spacing[1])
    from coregister.io.raster import open_dataset

    with open_dataset(source) as ds:
        return float(ds.res[0]), float(ds.res[1])


def _geo_summary_rows(result: GeoResult | None, sources: Mapping[str, Any], command: str | None) -> list[tuple[str, str]]:
    """Mode, command line and the files of the run (the result's names where the images came from memory)."""
    rows: list[tuple[str, str]] = []
    if result is not None:
        rows.append(("mode", result.mode))
    if command:
        rows.append(("command", command))
    names = {
        "reference": result.reference.get("name") if result is not None else None,
        "target": result.target.get("name") if result is not None else None,
        "corrected": str(result.output) if result is not None and result.output is not None else None,
    }
    for role, label in (("reference", "reference"), ("target", "target"), ("corrected", "output")):
        source = sources[role]
        if isinstance(source, SpatialImage):
            name = source.meta.get("source_path") or names[role]
        else:
            name = str(source) if source is not None else names[role]
        if name:
            rows.append((label, str(name)))
    return rows


def _detail_centre(result: GeoResult | None, reference: SpatialImage) -> tuple[float, float]:
    """Map point the detail is centred on: the most reliable used window, else the reference's centre."""
    used = [] if result is None else [w for w in result.windows if w.used]
    if used:
        best = max(used, key=lambda w: w.reliability)
        return best.x, best.y
    centre = reference.world_centre
    return float(centre[0]), float(centre[1])


def _full_resolution_crop(
    source: SpatialImage | str | os.PathLike[str], centre: tuple[float, float], side_px: int, band: int, nodata: float | None
) -> SpatialImage:
    """A ``side_px`` square of the reference at its own resolution around ``centre`` (map units); NaN where no data."""
    if isinstance(source, SpatialImage):
        col, row = source.world_to_index([centre])[0]
        height, width = source.shape[:2]
        r0 = int(np.clip(round(row) - side_px // 2, 0, max(0, height - side_px)))
        c0 = int(np.clip(round(col) - side_px // 2, 0, max(0, width - side_px)))
        values = _luminance(source)[r0 : r0 + side_px, c0 : c0 + side_px].astype(np.float32)
        valid = np.asarray(source.valid_mask()[r0 : r0 + side_px, c0 : c0 + side_px])
        if valid.ndim == 3:
            valid = np.asarray(valid.all(axis=-1))
        values = np.where(valid, values, np.nan).astype(np.float32)
        corner = tuple(source.index_to_world([[c0, r0]])[0])
        return SpatialImage(values, origin=corner, spacing=source.spacing, direction=source.direction, crs=source.crs)
    from affine import Affine as GeoAffine
    from rasterio.windows import Window

    from coregister.conventions import geotransform_to_geometry
    from coregister.io.raster import open_dataset

    with open_dataset(source) as ds:
        col, row = ~ds.transform @ centre
        r0 = int(np.clip(math.floor(row) - side_px // 2, 0, max(0, ds.height - side_px)))
        c0 = int(np.clip(math.floor(col) - side_px // 2, 0, max(0, ds.width - side_px)))
        window = Window(c0, r0, min(side_px, ds.width - c0), min(side_px, ds.height - r0))
        values = ds.read(band, window=window, masked=True).astype(np.float32)
        transform = ds.transform @ GeoAffine.translation(c0, r0)  # rasterio's window_transform warns (affine's `*`)
        crs = ds.crs.to_wkt() if ds.crs else None
    array = np.ma.filled(values, np.nan)
    if nodata is not None and math.isfinite(nodata):
        array[array == nodata] = np.nan
    origin, spacing, direction = geotransform_to_geometry(transform)
    return SpatialImage(array, origin=tuple(origin), spacing=tuple(spacing), direction=direction, crs=crs)


def _detail_section(
    sources: Mapping[str, Any],
    preview: SpatialImage,
    result: GeoResult | None,
    side_px: int,
    *,
    bands: tuple[int, int],
    nodata: tuple[float | None, float | None],
) -> str:
    """Before/after checkerboard and overlay of a full-resolution square of the reference."""
    crop = _full_resolution_crop(sources["reference"], _detail_centre(result, preview), side_px, bands[0], nodata[0])
    identity = Translation(np.zeros(2))

    def onto_crop(source: Any) -> SpatialImage:
        if isinstance(source, SpatialImage):
            return _resampled(identity, source, crop)
        image = _warped_onto(crop, source, bands[1], nodata=nodata[1])
        return image.replace(array=image.array.astype(np.float32))

    before = onto_crop(sources["target"])
    after = onto_crop(sources["corrected"]) if sources["corrected"] is not None else before
    f, b, a = (np.asarray(_luminance(img), np.float32) for img in (crop, before, after))
    overlap = np.isfinite(f) & np.isfinite(a)
    f_n = equalise(f, overlap if overlap.any() else None)
    b_n = equalise(b, (overlap & np.isfinite(b)) if (overlap & np.isfinite(b)).any() else None)
    a_n = equalise(a, overlap if overlap.any() else None)
    for values, image in ((b_n, b), (a_n, a)):
        values[~np.isfinite(image)] = 0.0

    def grey(values: np.ndarray) -> np.ndarray:
        return np.repeat(values[..., np.newaxis], 3, axis=-1)

    panels = [[grey(checkerboard(f_n, b_n, tiles=8)), grey(checkerboard(f_n, a_n, tiles=8))],
              [colour_overlay(f_n, b_n), colour_overlay(f_n, a_n)]]
    aspect = float(crop.spacing[1] / crop.spacing[0])
    figure = _grid_figure(panels, row_titles=["checkerboard", "overlay"], col_titles=["before", "after"],
                          aspects=[aspect, aspect], cmap=None, vmin=None, vmax=None, height_in=5.0)
    height, width = crop.shape[:2]
    x, y = crop.world_centre[:2]
    where = "the most reliable window" if result is not None and any(w.used for w in result.windows) else "the scene's centre"
    return (
        '<section id="detail"><h2>Full-resolution detail</h2>'
        + _figure_html(figure, f"{width} x {height} reference pixels at full resolution around ({x:.1f}, {y:.1f}), "
                       f"{where}: a shift of a pixel or two, invisible in the views above, breaks the "
                       "checkerboard's edges and fringes the overlay (reference magenta, target green) before the "
                       "correction.", "full-resolution detail before and after")
        + "</section>"
    )


def write_geo_report(
    reference: SpatialImage | str | os.PathLike[str],
    target: SpatialImage | str | os.PathLike[str],
    corrected: SpatialImage | str | os.PathLike[str] | None,
    path: str | os.PathLike[str],
    *,
    reference_band: int = 1,
    target_band: int = 1,
    reference_nodata: float | None = None,
    target_nodata: float | None = None,
    tie_points: Any = None,
    shift_px: Sequence[float] | None = None,
    metrics: Mapping[str, Mapping[str, float]] | None = None,
    warnings: Sequence[str] = (),
    details: Mapping[str, Any] | None = None,
    title: str | None = None,
    result: GeoResult | None = None,
    command: str | None = None,
    detail_px: int = DETAIL_PX,
) -> Path:
    """Write the HTML report of a geospatial coregistration: what ran, before/after views and the tie-point vectors.

    Parameters
    ----------
    reference, target : SpatialImage or path
        The reference raster and the target as given (georeferenced). Paths
        are read as previews (long side at most ``PREVIEW_MAX_PX`` pixels,
        the target reprojected onto the reference preview by GDAL), so whole
        scenes in any CRS cost little memory; images must share the
        reference's CRS.
    corrected : SpatialImage, path or None
        The corrected target (any grid); ``None`` shows only the "before" state.
    path : path
        The ``.html`` file (written atomically).
    reference_band, target_band : int
        Bands drawn from paths (counted from 1; the corrected target uses ``target_band``).
    reference_nodata, target_nodata : float, optional
        Values drawn as "no data" (for files that declare none but fill with,
        say, 0; default: the ``result``'s ``reference["nodata"]``/``target["nodata"]``).
    tie_points : TiePoints, mapping of columns or sequence of records, optional
        ``x, y`` (map units), ``dx, dy`` (correction, map units, x east, y
        north), optional ``kept`` and ``reliability``: drawn as arrows over
        the reference, kept in green and rejected in red (default: the
        ``result``'s windows).
    shift_px : (columns, rows), optional
        A global correction in reference pixels, shown in the summary
        (default: the ``result``'s).
    metrics : mapping, optional
        ``{"before": {...}, "after": {...}}``.
    warnings, details : optional
        Listed as they are (warnings default to the ``result``'s).
    title : str, optional
    result : GeoResult, optional
        What :func:`coregister.geo.coregister` returned: the summary then
        shows the mode, the input and output paths, the correction in
        pixels and in map units, the windows used and the time, and the
        full-resolution detail is centred on its most reliable window.
    command : str, optional
        The command line that ran (the command-line interface passes it).
    detail_px : int
        Side of the full-resolution detail (reference pixels) drawn before
        and after, where a shift of a pixel or two is visible (at preview
        scale it is not); 0 leaves it out.

    Returns
    -------
    Path
    """
    identity = Translation(np.zeros(2))
    if result is not None:
        reference_nodata = reference_nodata if reference_nodata is not None else result.reference.get("nodata")
        target_nodata = target_nodata if target_nodata is not None else result.target.get("nodata")
        tie_points = tie_points if tie_points is not None or not result.windows else result.tie_points
        shift_px = shift_px if shift_px is not None else result.shift_px
        warnings = warnings or result.warnings
    sources = {"reference": reference, "target": target, "corrected": corrected}
    pixel_size = _pixel_size(reference, reference_band)
    if not isinstance(reference, SpatialImage):
        reference = _raster_preview(reference, reference_band, PREVIEW_MAX_PX, nodata=reference_nodata)

    def on_reference(source: SpatialImage | str | os.PathLike[str]) -> SpatialImage:
        if not isinstance(source, SpatialImage):
            return _warped_onto(reference, source, target_band, nodata=target_nodata)
        if (source.crs is None) != (reference.crs is None) or (source.crs is not None and source.crs != reference.crs):
            from coregister.errors import GeometryError

            raise GeometryError("an image in another CRS than the reference's: give its path, it is reprojected for the report")
        return _resampled(identity, source, reference)

    before = on_reference(target)
    after = on_reference(corrected) if corrected is not None else before
    title = title or "coregister: geospatial coregistration report"
    units = _units(reference)
    pixel = float(min(pixel_size))
    rows = _geo_summary_rows(result, sources, command)
    rows += [("reference CRS", reference.crs.to_string() if reference.crs is not None else "none"),
             ("reference pixel size (x, y)", f"{pixel_size[0]:g} x {pixel_size[1]:g} {units}")]
    if shift_px is not None:
        rows.append(("correction (columns, rows)", f"{shift_px[0]:+.3f}, {shift_px[1]:+.3f} px"))
    if result is not None and result.shift_map is not None:
        label = "mean correction" if result.mode == "local" else "correction"
        rows.append((f"{label} (x east, y north)", f"{result.shift_map[0]:+.3f}, {result.shift_map[1]:+.3f} {units}"))
    if result is not None and result.windows:
        noun = "tie points" if result.mode == "local" else "windows"
        rows.append((f"{noun} used", f"{len(result.used_windows)} of {len(result.windows)}"))
    if result is not None:
        failures = "; ".join(result.quality.failures)
        rows.append(("quality check", result.verdict.value + (f": {failures}" if failures else "")))
        rows.append(("time", f"{result.time_s:.2f} s"))
    for key, value in (details or {}).items():
        rows.append((str(key), value if isinstance(value, str) else _num(value)))
    header = (
        f"<header><h1>{_esc(title)}</h1>"
        '<table id="summary">' + "".join(f'<tr><td class="l">{_esc(k)}</td><td class="l">{_esc(v)}</td></tr>' for k, v in rows)
        + "</table></header>"
    )
    sections = [header]
    if warnings:
        sections.append('<section id="warnings"><h2>Warnings</h2><ul class="warn">'
                        + "".join(f"<li>{_esc(w)}</li>" for w in warnings) + "</ul></section>")
    if metrics:
        sections.append('<section id="metrics"><h2>Metrics</h2>' + _metrics_html(metrics) + "</section>")
    sections += _comparison_sections(reference, before, after, equalise=True)
    if detail_px > 0:
        sections.append(_detail_section(sources, reference, result, detail_px, bands=(reference_band, target_band),
                                        nodata=(reference_nodata, target_nodata)))
    if tie_points is not None:
        points = TiePoints.from_records(tie_points)
        if len(points.x):
            figure = _tie_point_figure(reference, points, pixel_size=pixel)
            kept = int(points.kept.sum())
            unmatched = f" ({points.unmatched} more had no match)" if points.unmatched else ""
            sections.append(
                '<section id="tie-points"><h2>Tie points</h2>'
                f"<p>{kept} of {len(points.x) + points.unmatched} tie points kept{unmatched}.</p>"
                + _figure_html(figure, "Correction vectors at each tie point (exaggerated; the title gives the factor).",
                               "tie-point vectors")
                + "</section>"
            )
    return _write(path, _page(title, sections))
