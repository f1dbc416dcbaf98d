"""``coregister.geo.coregister``: align a target raster to a reference raster (shift, affine or local).

The target is always matched **on the reference grid**: whatever its CRS,
resolution and extent, the windows are read from the reference and the
target is warped onto the same pixels (rasterio/GDAL), so shifts come out in
reference pixels. Corrections are reported as the correction applied to the
target, in reference pixels (columns, rows counted downwards) and in map
units of the reference CRS (x east, y north).
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
import os
import re
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from coregister._files import check_writable, refuse_overwriting_input
from coregister.config import ProgressCallback
from coregister.errors import ConfigError, RegistrationFailed
from coregister.geo._raster import GeoRaster, Grid, open_raster
from coregister.geo.local import LATTICE_PX, fit_field, ransac_filter, tie_point_grid, write_tie_points
from coregister.geo.options import CoregOptions, Interpolation, Mode, Source, coreg_options
from coregister.geo.result import GeoResult, WindowMatch
from coregister.geo.verdict import judge_correction, overlap_grid
from coregister.geo.warp import output_nodata, resampled_copy, shifted_copy
from coregister.geo.windows import MatchOptions, consensus, find_overlap, match_strip, match_window, place_windows
from coregister.image import SpatialImage
from coregister.image.kinds import as_spatial_image, kind_of, resolve_like, to_kind
from coregister.pipeline import QualityReport
from coregister.transforms import LinearTransform, Translation, linear_members

logger = logging.getLogger(__name__)

__all__ = ["coregister"]


def _check_output(output: str | os.PathLike[str] | None, *inputs: Source) -> Path | None:
    if output is None:
        return None
    path = Path(output)
    for source in inputs:
        if isinstance(source, SpatialImage):
            source = source.meta.get("source_path") or ""
        elif not isinstance(source, str | os.PathLike):
            source = ""  # an in-memory raster (a DataArray) has no file to protect
        refuse_overwriting_input(path, source, fix="write the output to another path")
    if path.suffix.lower() not in (".tif", ".tiff"):
        raise ConfigError(f"the output {str(path)!r} must be a GeoTIFF (.tif)")
    return check_writable(path, fix="choose another output path")


@contextlib.contextmanager
def _open_pair(reference: Source, target: Source, options: CoregOptions) -> Iterator[tuple[GeoRaster, GeoRaster]]:
    """The reference and the target opened for matching; the target's nodata is ``nodata`` unless ``target_nodata``."""
    nodata, target_nodata = options.nodata, options.target_nodata
    with (
        open_raster(reference, role="reference", band=options.reference_band, nodata=nodata,
                    bad_data_mask=options.reference_mask) as ref,
        open_raster(target, role="target", band=options.target_band,
                    nodata=target_nodata if target_nodata is not None else nodata, bad_data_mask=options.target_mask) as tgt,
    ):
        yield ref, tgt


def _is_categorical(target: GeoRaster) -> bool:
    return any(str(c).lower() == "palette" for c in (target.meta.get("colorinterp") or ()))


def _transformer(src_crs: Any, dst_crs: Any) -> Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]] | None:
    """Point transformation between two CRSs (None when they are the same)."""
    if src_crs == dst_crs:
        return None
    from pyproj import Transformer

    tr = Transformer.from_crs(src_crs.to_wkt(), dst_crs.to_wkt(), always_xy=True)

    def apply(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        u, v = tr.transform(np.asarray(x, float), np.asarray(y, float))
        return np.asarray(u), np.asarray(v)

    return apply


def _mapping(
    grid: Grid, target: GeoRaster, correct: Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]
) -> Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """Reference pixel centres -> target pixel positions: ``correct`` in map units, then the CRS change.

    A CRS change is computed exactly on a lattice every 16 pixels and
    interpolated bilinearly in between (projections are smooth at that scale).
    """
    to_target = _transformer(grid.crs, target.dataset.crs)
    tgt_grid = target.grid

    def exact(rows: np.ndarray, cols: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        x, y = grid.xy(rows, cols)
        x, y = correct(x, y)
        if to_target is not None:
            x, y = to_target(x, y)
        return tgt_grid.rowcol(x, y)

    if to_target is None:
        return exact

    def lattice(rows: np.ndarray, cols: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        from scipy import ndimage

        r_axis, c_axis = rows[:, 0], cols[0, :]
        step = 16
        lr = np.unique(np.r_[r_axis[::step], r_axis[-1]])
        lc = np.unique(np.r_[c_axis[::step], c_axis[-1]])
        gr, gc = np.meshgrid(lr, lc, indexing="ij")
        tr, tc = exact(gr, gc)
        # fractional lattice coordinates of every pixel
        fr = np.interp(r_axis, lr, np.arange(lr.size))
        fc = np.interp(c_axis, lc, np.arange(lc.size))
        coords = np.array(np.meshgrid(fr, fc, indexing="ij"))
        return (ndimage.map_coordinates(tr, coords, order=1, mode="nearest"),
                ndimage.map_coordinates(tc, coords, order=1, mode="nearest"))

    return lattice


_NUMBER = re.compile(r"-?\d+(?:\.\d+)?")


@dataclasses.dataclass(frozen=True)
class _Rejection:
    """One kind of rejection, as the summary words it: ``{count} {noun} {phrase} ({range} {unit})``."""

    phrase: str
    noun: str | None = None  # its own noun ("outliers"); None: the windows' or tie points'
    unit: str = ""
    limit: float | None = None  # the range's end nearest it stays on its side
    below: bool = True  # the values lie below the limit (else above)
    scale: float = 1.0


def _rejection(match: WindowMatch) -> tuple[_Rejection, float | None]:
    """The kind of a rejected window and its value (reliability, valid fraction, distance...) where it has one."""
    reason = match.reason
    numbers = [float(v) for v in _NUMBER.findall(reason)]
    if reason.startswith("reliability ") and len(numbers) == 2:
        return _Rejection(f"below reliability {numbers[1]:g}", limit=numbers[1]), match.reliability
    if reason.startswith("only ") and len(numbers) == 2:
        limit = numbers[1] / 100.0
        return (_Rejection(f"with less than {numbers[1]:g} % valid data on both sides", unit="%", limit=limit, scale=100.0),
                numbers[0] / 100.0)
    if reason.startswith("shift ") and len(numbers) == 2:
        return _Rejection(f"shifted beyond max_shift_px={numbers[1]:g}", unit="px", limit=numbers[1], below=False), numbers[0]
    if reason.startswith("outlier:") and numbers:
        return _Rejection("from the median of the windows", noun="outliers", unit="px", below=False), numbers[0]
    if reason.startswith("RANSAC outlier") and numbers:
        return _Rejection("from the affine trend", noun="RANSAC outliers", unit="px", below=False), numbers[0]
    if reason.startswith("unreliable at the whole-pixel match already"):
        return _Rejection("unreliable already at the whole-pixel match" + reason.split("already", 1)[1]), None
    if reason.startswith("the shift lowers the similarity"):
        return _Rejection("where the shift lowers the similarity (ncc)"), None
    if reason.startswith("the sub-pixel fit"):
        return _Rejection("where " + reason), None
    return _Rejection(reason), None


def _summarise_rejections(matches: list[WindowMatch], noun: str = "windows") -> str:
    """The rejections grouped by kind, largest group first: a count, and the range of the values where they have one.

    ``"17 tie points below reliability 0.3 (0.05-0.29); 3 RANSAC outliers (0.52-1.30 px from the affine trend)"``.
    The end of a range next to its limit is never rounded onto it ("0.2996", not "0.30", below 0.3).
    """
    groups: dict[_Rejection, list[float | None]] = {}
    for m in matches:
        if not m.used:
            kind, value = _rejection(m)
            groups.setdefault(kind, []).append(value)
    parts = []
    for kind in sorted(groups, key=lambda k: (-len(groups[k]), k.phrase)):
        count = len(groups[kind])
        values = [v for v in groups[kind] if v is not None and math.isfinite(v)]
        words = kind.noun or noun
        if count == 1 and words.endswith("s"):
            words = words[:-1]
        if not values:
            parts.append(f"{count} {words} {kind.phrase}")
            continue
        shown = _value_range(values, kind)
        unit = f" {kind.unit}" if kind.unit else ""
        if kind.noun:  # "3 outliers (0.62-1.40 px from the median of the windows)"
            parts.append(f"{count} {words} ({shown}{unit} {kind.phrase})")
        else:  # "17 tie points below reliability 0.3 (0.05-0.29)"
            parts.append(f"{count} {words} {kind.phrase} ({shown}{unit})")
    return "; ".join(parts)


def _value_range(values: list[float], kind: _Rejection) -> str:
    """``lo-hi`` (one value when they agree), each kept on its side of the limit (never rounded onto it)."""
    from coregister.geo.windows import shown_beyond

    digits = 0 if kind.scale != 1.0 else 2

    def show(value: float) -> str:
        if kind.limit is not None:
            return shown_beyond(value, kind.limit, below=kind.below, digits=digits, scale=kind.scale)
        return f"{value * kind.scale:.{digits}f}"

    low, high = show(min(values)), show(max(values))
    return low if low == high else f"{low}-{high}"


def _raster_info(raster: GeoRaster) -> dict[str, Any]:
    return {
        "name": raster.name,
        "band": raster.band,
        "nodata": raster.nodata,
        "nodata_source": raster.nodata_source,
        "crs": raster.dataset.crs.to_string() if raster.dataset.crs else None,
        "size": [raster.dataset.width, raster.dataset.height],
        "pixel_size": list(raster.grid.pixel_size),
    }


def _match_all(
    reference: GeoRaster,
    target: GeoRaster,
    grid: Grid,
    centres: list[tuple[int, int]],
    options: MatchOptions,
    progress: ProgressCallback | None,
    stage: str,
    *,
    strips: bool = False,
) -> list[WindowMatch]:
    """Match every window; with ``strips`` (a tie-point grid), windows sharing a row are read as one strip."""
    matches: list[WindowMatch] = []
    if strips:
        rows: dict[int, list[tuple[int, int]]] = {}
        for centre in centres:
            rows.setdefault(centre[0], []).append(centre)
        for row_centres in rows.values():
            matches += match_strip(reference, target, grid, row_centres, options)
            if progress is not None:
                progress(stage, 0, len(matches) - 1, float(len(centres)))
        return matches
    for index, (row, col) in enumerate(centres):
        matches.append(match_window(reference, target, grid, row, col, options))
        if progress is not None:
            progress(stage, 0, index, float(len(centres)))
    return matches


def coregister(
    reference: Source,
    target: Source,
    *,
    output: str | os.PathLike[str] | None = None,
    tie_points: str | os.PathLike[str] | None = None,
    progress: ProgressCallback | None = None,
    options: CoregOptions | None = None,
    like: str | None = None,
    **keywords: Any,
) -> GeoResult:
    """Coregister a target raster to a reference raster, and write the corrected target.

    Parameters
    ----------
    reference, target : path, SpatialImage or xarray.DataArray
        Georeferenced rasters; any CRS, resolution and extent (the target is
        matched on the reference grid). Paths and rioxarray DataArrays
        (numpy- or dask-backed) are read window by window, so whole scenes
        stay in bounded memory.
    output : path, optional
        GeoTIFF to write. ``shift`` writes the target with a corrected
        geotransform and bit-identical pixels, unless ``resample=True``;
        ``affine``/``local`` (and ``resample=True``) write the target
        resampled onto the reference grid, every band by the same correction.
        The target's profile (dtype, compression, tiling, descriptions,
        tags) is kept. The output declares the target's nodata value as the
        run used it (declared, given, or the detected fill value), and
        resampled pixels outside the target hold it.
    tie_points : path, optional
        ``local``: write the tie points (windows) as CSV, or GeoPackage for ``.gpkg``.
    progress : callable, optional
        ``progress(stage, 0, done, total)`` with stage ``"windows"``,
        ``"tie points"`` or ``"writing"`` (``total`` passed as the metric).
    options : CoregOptions, optional
        The options below as one value; keywords given beside it replace its fields.
    like : {"input", "spatialimage", "sitk", "nibabel", "xarray"}, optional
        Also return the corrected target in memory, as ``GeoResult.corrected``:
        ``"input"`` gives the kind the target was passed as (a DataArray
        for a DataArray; ``shift`` mode moves its geotransform and
        coordinates only, so a dask-backed array stays lazy). Resampling
        modes write through ``output`` (or a temporary file) and read it back.
    **keywords
        Any option below (a field of :class:`~coregister.geo.options.CoregOptions`).

    Other Parameters
    ----------------
    mode : {"shift", "affine", "local"} or Mode
        ``shift`` (default): one global sub-pixel shift from phase correlation in up to
        ``max_windows`` windows spread over the overlap (unreliable windows,
        over clouds, nodata or featureless ground, are rejected; the rest
        agree by a robust mean). ``affine``: a global affine from intensity
        registration (:func:`coregister.register`, Mattes mutual information,
        so multi-sensor pairs work), started from the shift. ``local``: a grid
        of tie points (``grid_spacing_px`` apart, ``window_px`` wide), each
        matched by phase correlation and kept only when reliable and when it
        raises the local similarity, outliers removed by RANSAC; the target is
        warped by a displacement field through the kept points (``field``).
    reference_band, target_band : int
        Band matched (from 1); every band is corrected.
    nodata : float, optional
        Nodata value of the reference (and of the target unless
        ``target_nodata``), overriding what the files declare. Files that
        declare none get a fill value detected from constant corners (as AROSICS does).
    target_nodata : float, optional
        Nodata value of the target.
    reference_mask, target_mask : path or SpatialImage, optional
        Bad-data masks (clouds, shadows): nonzero pixels are not used. Any
        grid and CRS.
    window_px : int
        Side of the matching windows (reference pixels; default 256).
    max_windows : int
        ``shift``: how many windows to try (default 49).
    grid_spacing_px : int
        ``local``: distance between tie points (reference pixels; default 100).
    min_reliability : float
        Windows with a lower phase-correlation reliability (0-1) are rejected (default 0.3).
    max_shift_px : float
        Corrections longer than this are rejected (default 20).
    outlier_px : float
        ``shift``: windows further than this from the windows' median are
        outliers; ``local``: RANSAC residual threshold (default 0.5).
    field : {"smooth", "polynomial"} or Field
        ``local``: thin-plate spline through the kept tie points, or a
        polynomial of ``polynomial_order`` (1-3).
    polynomial_order : int
        Order of the ``"polynomial"`` field.
    resample : bool
        ``shift``: resample onto the reference grid instead of correcting only the geotransform.
    interpolation : {"cubic", "linear", "nearest"} or Interpolation, optional
        Resampling kernel; default cubic, and nearest for palette (class) rasters.
    cog : bool
        Write a Cloud-Optimised GeoTIFF with overviews.
    seed : int
        Seed of RANSAC (the result is deterministic).

    Returns
    -------
    GeoResult
        Shifts, windows or tie points, the output path, warnings, and the
        quality verdict on the correction (``quality``, ``passed``).

    Raises
    ------
    RegistrationFailed
        No window or too few tie points could be matched reliably.
    ConfigError
        An option is invalid (the message names it and the choices).

    Examples
    --------
    >>> import numpy as np
    >>> from scipy import ndimage
    >>> from coregister import SpatialImage
    >>> rng = np.random.default_rng(0)
    >>> scene = ndimage.gaussian_filter(rng.normal(size=(300, 300)), 2) * 100 + 1000
    >>> reference = SpatialImage(scene, origin=(500005.0, 4999995.0), spacing=(10.0, 10.0),
    ...                          direction=np.diag([1.0, -1.0]), crs="EPSG:32633")
    >>> moved = ndimage.shift(scene, (0.4, -0.7), order=3, mode="nearest")  # content 0.4 px south, 0.7 px west
    >>> result = coregister(reference, reference.replace(array=moved), window_px=128, max_windows=4)
    >>> np.round(result.shift_px, 2).tolist(), np.round(result.shift_map, 1).tolist()
    ([0.7, -0.4], [7.0, 4.0])
    """
    started = time.perf_counter()
    options = coreg_options(options, **keywords)
    kind = resolve_like(like, target)
    out_path = _check_output(output, reference, target)
    with _open_pair(reference, target, options) as (ref, tgt):
        fill, note = output_nodata(tgt)  # before the matching: a nodata the pixels cannot hold fails at once
        estimate = _estimate(ref, tgt, options, tie_points=tie_points, progress=progress)
        warnings = list(estimate.warnings)
        grid = ref.grid
        if options.interpolation is not None:
            order = options.interpolation.order
        else:
            order = Interpolation.NEAREST.order if _is_categorical(tgt) else Interpolation.CUBIC.order
        shift_only = options.mode is Mode.SHIFT and not options.resample
        corrected = None
        with contextlib.ExitStack() as scratch:
            written = out_path
            if written is None and kind is not None and not shift_only:
                written = Path(scratch.enter_context(tempfile.TemporaryDirectory(prefix="coregister-"))) / "corrected.tif"
            if written is not None:
                if shift_only:
                    shifted_copy(tgt, written, estimate.fields["target_offset"], cog=options.cog)
                else:
                    warnings += [note] if note else []
                    resampled_copy(tgt, grid, written, _mapping(grid, tgt, estimate.correct), order=order, nodata=fill,
                                   cog=options.cog, progress=progress)
            if kind is not None:
                corrected = _corrected(target, tgt, kind, estimate.fields.get("target_offset") if shift_only else None,
                                       written, temporary=out_path is None)
        for message in warnings:
            logger.info(message)
        return GeoResult(
            mode=options.mode.value,
            output=out_path,
            tie_points_path=Path(tie_points) if tie_points is not None and options.mode is Mode.LOCAL else None,
            reference=_raster_info(ref),
            target=_raster_info(tgt),
            warnings=tuple(warnings),
            time_s=time.perf_counter() - started,
            config=options.to_dict(),
            corrected=corrected,
            **estimate.fields,
        )


def _corrected(target: Source, tgt: GeoRaster, kind: str, offset: tuple[float, float] | None, written: Path | None, *,
               temporary: bool) -> Any:
    """The corrected target in memory, as ``kind``: moved by ``offset`` (shift mode), else read back from ``written``."""
    from coregister.image._xarray import is_dataarray, with_offset
    from coregister.io.raster import read_raster

    if offset is not None:
        if kind == "xarray" and is_dataarray(target):
            return with_offset(target, offset)  # the geotransform and coordinates only: a dask array stays lazy
        image = as_spatial_image(target, name="target") if kind_of(target) else read_raster(Path(target))
        return to_kind(image.replace(origin=(image.origin[0] + offset[0], image.origin[1] + offset[1])), kind)
    assert written is not None
    image = read_raster(written)
    if temporary:  # the scratch file goes away with the run
        image = image.replace(meta={k: v for k, v in image.meta.items() if k != "source_path"})
    if kind == "xarray" and "xarray" in tgt.meta:  # names, band coordinates and attributes of the DataArray given
        image = image.replace(meta={**image.meta, "xarray": tgt.meta["xarray"]})
    return to_kind(image, kind)


@dataclasses.dataclass
class _Estimate:
    """What a mode found: the result's fields, warnings, and the correction as a map-point function."""

    fields: dict[str, Any]
    warnings: list[str]
    # reference map point (x, y) -> where the target shows it, still in the reference CRS
    correct: Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]


def _estimate(
    ref: GeoRaster,
    tgt: GeoRaster,
    options: CoregOptions,
    *,
    tie_points: str | os.PathLike[str] | None,
    progress: ProgressCallback | None,
) -> _Estimate:
    """Run one mode on open rasters (no output written)."""
    warnings: list[str] = []
    for raster, role in ((ref, "reference"), (tgt, "target")):
        if raster.nodata_source.startswith("detected"):
            warnings.append(f"the {role} declares no nodata; fill value {raster.nodata:g} {raster.nodata_source}")
    grid = ref.grid
    overlap = find_overlap(ref, tgt, grid)
    fields: dict[str, Any] = {}
    matching = MatchOptions(window_px=options.window_px, min_reliability=float(options.min_reliability),
                            max_shift_px=float(options.max_shift_px))
    if options.mode in (Mode.SHIFT, Mode.AFFINE):
        centres = place_windows(overlap, grid, window_px=options.window_px, count=options.max_windows)
        if not centres:
            raise RegistrationFailed(
                f"no {options.window_px} x {options.window_px} px window fits inside the overlap of "
                f"{ref.name!r} and {tgt.name!r}; use a smaller window_px"
            )
        matches = _match_all(ref, tgt, grid, centres, matching, progress, "windows")
        estimate, matches = consensus(matches, outlier_px=options.outlier_px)
        if not np.all(np.isfinite(estimate)):
            raise RegistrationFailed(
                f"none of the {len(matches)} windows matched reliably ({_summarise_rejections(matches)}); "
                "try a larger window_px, a lower min_reliability, or a bad-data mask over clouds"
            )
        used = [m for m in matches if m.used]
        if len(used) < len(matches):
            warnings.append(f"{len(used)} of {len(matches)} windows used; rejected: {_summarise_rejections(matches)}")
        dx, dy = grid.linear @ estimate
        shift_map = (float(dx), float(dy))
        fields.update(shift_px=(float(estimate[0]), float(estimate[1])), shift_map=shift_map, windows=tuple(matches))
        if options.mode is Mode.SHIFT:
            fields["target_offset"] = _target_offset(grid, tgt, (used[0].x, used[0].y), shift_map)
            # reference point p shows target point p - shift
            quality, figures = judge_correction(ref, tgt, grid, overlap, Translation([-shift_map[0], -shift_map[1]]))
            fields.update(quality=quality, extras={"verification": figures})

            def correct(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
                return x - shift_map[0], y - shift_map[1]

            return _Estimate(fields, warnings, correct)
        transform, quality, extras = _affine(ref, tgt, grid, overlap, shift_map, seed=options.seed, progress=progress)
        fields.update(transform=transform, quality=quality, extras=extras)
        warnings += list(extras.pop("warnings", ()))

        def correct_affine(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            pts = transform.transform_points(np.c_[np.ravel(x), np.ravel(y)])
            return pts[:, 0].reshape(np.shape(x)), pts[:, 1].reshape(np.shape(y))

        return _Estimate(fields, warnings, correct_affine)
    centres = tie_point_grid(grid.height, grid.width, spacing_px=options.grid_spacing_px, window_px=options.window_px)
    centres = _inside_overlap(centres, overlap, grid, options.window_px)
    if not centres:
        raise RegistrationFailed(f"no tie point of a {options.grid_spacing_px} px grid lies inside the overlap")
    matches = _match_all(ref, tgt, grid, centres, matching, progress, "tie points", strips=True)
    matches = ransac_filter(matches, threshold_px=options.outlier_px, seed=options.seed)
    if tie_points is not None:
        write_tie_points(matches, tie_points, crs_wkt=grid.crs.to_wkt() if grid.crs else None)
    displacement = fit_field(matches, grid.height, grid.width, kind=options.field, order=options.polynomial_order)
    used = [m for m in matches if m.used]
    mean = np.mean([m.shift_px for m in used], axis=0)
    dx, dy = grid.linear @ mean
    if len(used) < len(matches):
        warnings.append(f"{len(used)} of {len(matches)} tie points kept; rejected: {_summarise_rejections(matches, 'tie points')}")
    fields.update(shift_px=(float(mean[0]), float(mean[1])), shift_map=(float(dx), float(dy)),
                  windows=tuple(matches), field=displacement.describe())

    def correct_local(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        rows, cols = grid.rowcol(x, y)
        dcol, drow = displacement.at(rows, cols)
        # the target's content at reference pixel p sits at p - correction
        return grid.xy(rows - drow, cols - dcol)

    quality, figures = judge_correction(ref, tgt, grid, overlap, correct_local, field_spacing_px=LATTICE_PX)
    fields.update(quality=quality, extras={"verification": figures})
    return _Estimate(fields, warnings, correct_local)


def _inside_overlap(centres: list[tuple[int, int]], overlap: Any, grid: Grid, window_px: int) -> list[tuple[int, int]]:
    """Tie points whose window centre area (the central half) lies in the coarse overlap."""
    coarse = overlap.grid
    kept = []
    quarter = window_px / 4.0
    for row, col in centres:
        ok = True
        for dr in (-quarter, 0.0, quarter):
            for dc in (-quarter, 0.0, quarter):
                x, y = grid.xy(row + dr, col + dc)
                r, c = coarse.rowcol(x, y)
                ri, ci = int(round(float(r))), int(round(float(c)))
                if not (0 <= ri < coarse.height and 0 <= ci < coarse.width and overlap.valid[ri, ci]):
                    ok = False
        if ok:
            kept.append((row, col))
    return kept


def _target_offset(grid: Grid, target: GeoRaster, anchor: tuple[float, float], shift_map: tuple[float, float]) -> tuple[float, float]:
    """The shift (reference CRS) expressed as a translation of the target's geotransform (target CRS), at ``anchor``."""
    to_target = _transformer(grid.crs, target.dataset.crs)
    if to_target is None:
        return shift_map
    x = np.array([anchor[0], anchor[0] + shift_map[0]])
    y = np.array([anchor[1], anchor[1] + shift_map[1]])
    u, v = to_target(x, y)
    return float(u[1] - u[0]), float(v[1] - v[0])


def _affine(
    ref: GeoRaster,
    tgt: GeoRaster,
    grid: Grid,
    overlap: Any,
    shift_map: tuple[float, float],
    *,
    seed: int,
    progress: ProgressCallback | None,
    max_side_px: int = 2048,
) -> tuple[LinearTransform, QualityReport, dict[str, Any]]:
    """Affine (reference map -> target map, reference CRS) by Mattes MI registration over the overlap, and its verdict."""
    from rasterio.enums import Resampling

    from coregister.conventions import geotransform_to_geometry
    from coregister.geo._raster import read_on_grid
    from coregister.pipeline import register

    sub, factor = overlap_grid(grid, overlap, max_side_px=max_side_px)
    resampling = Resampling.average if factor > 1 else Resampling.cubic
    fixed_values, fixed_ok = read_on_grid(ref, sub, resampling=resampling, dtype=np.float32)
    moving_values, moving_ok = read_on_grid(tgt, sub, resampling=resampling, dtype=np.float32)
    origin, spacing, direction = geotransform_to_geometry(sub.transform)
    fixed = SpatialImage(fixed_values, origin=tuple(origin), spacing=tuple(spacing), direction=direction)
    moving = SpatialImage(moving_values, origin=tuple(origin), spacing=tuple(spacing), direction=direction)
    initial = Translation([-shift_map[0], -shift_map[1]])  # reference point p shows target point p - shift
    result = register(
        fixed, moving, preset="affine", metric="mattes", fixed_mask=fixed_ok, moving_mask=moving_ok,
        initial_transform=initial, seed=seed, progress=progress,
    )
    transform = result.transform
    if not transform.is_linear:
        raise RegistrationFailed(f"the affine registration returned a {type(transform).__name__}, not a linear transform")
    (flat,) = linear_members(transform)
    extras = {
        "registration": {"metrics": {k: dict(v) for k, v in result.metrics.items()}, "engine": result.engine,
                         "time_s": result.time_s, "decimation": factor},
        "warnings": [f"affine registration: {w}" for w in result.warnings],
    }
    return flat, result.quality, extras
