"""``coregister geo``: coregister rasters (shift, affine, local), change maps, georeferencing."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from coregister.cli import QualityCheckFailed
from coregister.cli._options import overwrite_option
from coregister.cli._output import (
    VERDICT_WORDS,
    command_line,
    echo_json,
    echo_warning,
    json_option,
    print_table,
    quality_failure_line,
    quiet,
)
from coregister.geo.change_map import KINDS
from coregister.geo.georef import METHODS
from coregister.geo.options import CoregOptions, Field, Interpolation, Mode

__all__ = ["geo"]

#: the help examples' data, downloaded by their first line: two Sentinel-2 dates (6 MB), a Landsat clip (1.7 MB)
_S2_FETCH = "coregister data fetch arosics_s2_T33UUU --dest data"
_REF = "data/arosics_s2_T33UUU/ref_S2A_20160608T153121_T33UUU_sub.jp2"
_TGT = "data/arosics_s2_T33UUU/tgt_S2A_20160529T153631_T33UUU_sub.jp2"
_LANDSAT_FETCH = "coregister data fetch rasterio_landsat7 --dest data --file RGB.byte.tif"
_LANDSAT = "data/rasterio_landsat7/RGB.byte.tif"
_GCP_LINE = (
    "printf 'pixel,line,x,y\\n0,0,101985,2826915\\n791,0,339315,2826915\\n0,718,101985,2611485\\n"
    "791,718,339315,2611485\\n' > gcps.csv"
)


def _s2_example(command: str, note: str, output: str) -> str:
    """A help epilog: ``coregister geo COMMAND`` on two Sentinel-2 dates, after the line that downloads them."""
    return (f"\b\nExample (downloads 6 MB; {note}):\n"
            f"  {_S2_FETCH}\n"
            f"  coregister geo {command} {_REF} \\\n    {_TGT} \\\n    -o {output}")


def _path() -> click.Path:
    # existence is checked by the library, whose error is one line and exit code 1
    return click.Path(path_type=Path)


def _fmt(value: Any, digits: int = 3) -> str:
    return "" if value is None else f"{float(value):+.{digits}f}"


def _summary(result: Any) -> None:
    rows: list[tuple[str, str]] = []
    if result.shift_px is not None:
        label = {"local": "mean correction", "affine": "window shift (affine start)"}.get(result.mode, "correction")
        rows.append((f"{label} (columns, rows)", f"{_fmt(result.shift_px[0])}, {_fmt(result.shift_px[1])} px"))
        rows.append((f"{label} (x east, y north)", f"{_fmt(result.shift_map[0])}, {_fmt(result.shift_map[1])} map units"))
    if result.target_offset is not None:
        rows.append(("target geotransform moved by", f"{_fmt(result.target_offset[0])}, {_fmt(result.target_offset[1])}"))
    if result.transform is not None:
        matrix = result.transform.to_dict()["world_matrix"]
        rows.append(("affine (reference -> target map)", "; ".join(", ".join(f"{v:.6g}" for v in row) for row in matrix[:2])))
    if result.windows:
        noun = "tie points" if result.mode == "local" else "windows"
        rows.append((f"{noun} used", f"{len(result.used_windows)} of {len(result.windows)}"))
    for key in ("rmse_px", "rmse_map", "inliers"):
        if result.extras.get(key) is not None:
            rows.append((key.replace("_", " "), f"{float(result.extras[key]):.4g}"))
    rows.append(("quality check", _verdict_text(result.quality)))
    if result.output is not None:
        rows.append(("output", str(result.output)))
    if result.tie_points_path is not None:
        rows.append(("tie points", str(result.tie_points_path)))
    rows.append(("time", f"{result.time_s:.2f} s"))
    print_table(f"geo {result.mode}", ["quantity", "value"], rows, justify=["left", "left"])
    for warning in result.warnings:
        echo_warning(warning)


def _change_summary(result: Any) -> None:
    """What ``geo change`` wrote: the map, its statistics and the fraction changed; the correction in one row."""
    from coregister.cli._options import root_setting

    stats = dict(result.extras.get("change", {}))
    width, height = (result.reference.get("size") or [0, 0])[:2]
    valid = int(stats.get("valid_pixels", 0))
    what = {"difference": "target - reference", "ratio": "target / reference",
            "normalized-difference": "(target - reference) / (target + reference)"}
    rows = [("change map", str(result.output)),
            ("kind", f"{stats.get('kind')}: {what.get(str(stats.get('kind')), '')}"),
            ("valid pixels", f"{valid} of {width * height}" + (f" ({100 * valid / (width * height):.1f} %)" if width * height else ""))]
    if valid:
        rows += [("mean, standard deviation", f"{stats['mean']:.4g}, {stats['std']:.4g}"),
                 ("min, median, max", f"{stats['min']:.4g}, {stats['median']:.4g}, {stats['max']:.4g}"),
                 ("changed", f"{100 * stats['changed_fraction']:.2f} % ({stats['changed_pixels']} pixels more than "
                             f"{stats['threshold']:.4g} from the median: 3 robust sigmas)")]
    if result.shift_px is not None:
        rows.append((f"coregistration ({result.mode})", f"{_fmt(result.shift_px[0])}, {_fmt(result.shift_px[1])} px "
                                                        "(columns, rows)"))
    rows.append(("quality check", _verdict_text(result.quality)))
    rows.append(("time", f"{result.time_s:.2f} s"))
    print_table("geo change: change map", ["quantity", "value"], rows, justify=["left", "left"])
    if result.warnings and (root_setting("verbose") or 0) >= 1:
        for warning in result.warnings:
            echo_warning(warning)
    elif result.warnings:
        click.echo(f"{len(result.warnings)} note(s) from the coregistration (fill values, rejected windows): "
                   "-v or --json shows them", err=True)


def _verdict_text(quality: Any) -> str:
    """``passed (mi 0.2465 -> 0.2608)``: the verdict and the measure that must not get worse, where there is one."""
    text = VERDICT_WORDS[quality.verdict.value]
    measures = quality.measures
    if {"measure", "before", "after"} <= set(measures):
        text += f" ({measures['measure']} {measures['before']:.4g} -> {measures['after']:.4g})"
    return text


def _report(result: Any, as_json: bool, *, what: str) -> None:
    """The result as JSON or a table; exit code 3 (after the outputs are written) when the verdict is not passed."""
    if as_json:
        echo_json(result.to_dict())
    elif not quiet():
        (_change_summary if "change" in result.extras else _summary)(result)
    if not result.passed:
        raise QualityCheckFailed(quality_failure_line(result.quality, result.warnings, what=what))


def _choices(enum: Any) -> click.Choice:
    """A click choice of an enum's values (the one list the API parses too)."""
    return click.Choice([member.value for member in enum], case_sensitive=False)


_DEFAULTS = CoregOptions()


def _common_inputs(function: Any) -> Any:
    """The inputs and matching options of ``geo coreg`` and ``geo change`` (fields of :class:`CoregOptions`)."""
    options = [
        click.option("--mode", type=_choices(Mode), default=_DEFAULTS.mode.value, show_default=True,
                     help="shift: global sub-pixel shift (geotransform only, pixels untouched); affine: Mattes MI "
                          "registration (multi-sensor); local: tie-point grid and a smooth displacement field."),
        click.option("--nodata", type=float, default=None,
                     help="Nodata value of both rasters, overriding what they declare (default: declared, or a "
                          "fill value detected in constant corners)."),
        click.option("--target-nodata", type=float, default=None, help="Nodata value of the target only."),
        click.option("--mask", "reference_mask", type=_path(), default=None,
                     help="Bad-data mask of the reference (clouds): a raster, nonzero = do not use."),
        click.option("--target-mask", type=_path(), default=None, help="Bad-data mask of the target."),
        click.option("--band", "reference_band", type=click.IntRange(min=1), default=1, show_default=True,
                     help="Reference band to match (from 1)."),
        click.option("--target-band", type=click.IntRange(min=1), default=1, show_default=True,
                     help="Target band to match (from 1); every band is corrected."),
        click.option("--window", "window_px", type=click.IntRange(min=32), default=_DEFAULTS.window_px, show_default=True,
                     help="Side of the matching windows, in reference pixels."),
        click.option("--min-reliability", type=click.FloatRange(0, 1), default=_DEFAULTS.min_reliability, show_default=True,
                     help="Reject windows whose phase-correlation reliability is lower."),
        click.option("--max-windows", type=click.IntRange(min=1), default=_DEFAULTS.max_windows, show_default=True,
                     help="shift/affine: windows tried over the overlap."),
        click.option("--grid", "grid_spacing_px", type=click.IntRange(min=1), default=_DEFAULTS.grid_spacing_px,
                     show_default=True, help="local: tie-point spacing in reference pixels."),
        click.option("--field", type=_choices(Field), default=_DEFAULTS.field.value, show_default=True,
                     help="local: thin-plate spline through the kept tie points, or a polynomial (--order)."),
        click.option("--order", "polynomial_order", type=click.IntRange(1, 3), default=_DEFAULTS.polynomial_order,
                     show_default=True, help="local: order of the polynomial field."),
        click.option("--interpolation", type=_choices(Interpolation), default=None,
                     help="Resampling kernel (default cubic; nearest for palette/class rasters when coregistering)."),
        click.option("--cog", is_flag=True, help="Write a Cloud-Optimised GeoTIFF with overviews."),
    ]
    for option in reversed(options):
        function = option(function)
    return function


@click.group("geo", epilog=_s2_example("coreg", "two Sentinel-2 dates, corrected by a global shift", "tgt_corrected.tif"))
def geo() -> None:
    """Geospatial rasters: coregistration (shift, affine, local), change maps, georeferencing.

    Corrections are reported as the correction applied to the target, in
    reference pixels (columns, rows counted downwards) and in map units of
    the reference CRS (x east, y north).
    """


def _refuse_existing(paths: list[Path], overwrite: bool) -> None:
    """rio's convention: an output that exists is replaced only with --overwrite (checked before any work)."""
    from coregister._files import refuse_existing

    for path in paths:
        refuse_existing(path, overwrite=overwrite, fix="pass --overwrite to replace it, or choose another path")


@geo.command(
    "coreg", epilog=_s2_example("coreg", "shift by default, --mode local for a tie-point grid", "tgt_corrected.tif")
)
@click.argument("reference", type=_path())
@click.argument("target", type=_path())
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), required=True,
              help="The corrected target (GeoTIFF).")
@_common_inputs
@click.option("--resample", is_flag=True, help="shift: resample onto the reference grid instead of moving the geotransform.")
@click.option("--tie-points", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="local: write the tie points (CSV, or GeoPackage for .gpkg).")
@click.option("--report", is_flag=True,
              help="Also write OUTPUT's QC report beside it (OUTPUT without .tif + .report.html): before/after views, tie points.")
@overwrite_option
@json_option
@click.pass_context
def coreg(ctx: click.Context, reference: Path, target: Path, output: Path, as_json: bool, **options: Any) -> None:
    """Coregister TARGET to REFERENCE and write the corrected target.

    Different CRS and resolutions are matched on the reference grid; nodata,
    fill values and bad-data masks are left out of every window. The
    correction is judged by the quality check over the overlap: exit code 3
    when it does not pass (the outputs are written all the same).
    """
    from coregister._files import check_writable
    from coregister.cli._progress import registration_progress
    from coregister.geo import coregister

    report = options.pop("report")
    overwrite = options.pop("overwrite")
    outputs = [output, *([output.with_name(output.name.split(".")[0] + ".report.html")] if report else [])]
    if options.get("tie_points") is not None:
        check_writable(options["tie_points"], fix="choose another --tie-points path")
        outputs.append(options["tie_points"])
    _refuse_existing(outputs, overwrite)
    with registration_progress(ctx) as progress:
        result = coregister(reference, target, output=output, progress=progress, **options)
    if report:
        from coregister.qc.geo_report import write_geo_report

        report_path = output.with_name(output.name.split(".")[0] + ".report.html")
        write_geo_report(
            reference, target, result.output, report_path, reference_band=options["reference_band"],
            target_band=options["target_band"], result=result, command=command_line(ctx),
        )
        if not as_json and not quiet():
            click.echo(f"report: {report_path}")
    _report(result, as_json, what="the coregistration")


@geo.command("change", epilog=_s2_example("change", "shift-corrected difference of two Sentinel-2 dates", "change.tif"))
@click.argument("reference", type=_path())
@click.argument("target", type=_path())
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), required=True,
              help="The change map (float32 GeoTIFF on the reference grid, NaN where either input is invalid).")
@click.option("--kind", type=click.Choice(KINDS), default="difference",
              show_default=True, help="target - reference, target / reference, or their normalised difference.")
@_common_inputs
@overwrite_option
@json_option
@click.pass_context
def change_command(ctx: click.Context, reference: Path, target: Path, output: Path, as_json: bool, **options: Any) -> None:
    """Coregister TARGET to REFERENCE, then write a change map on the reference grid.

    Every option of ``geo coreg`` that applies; exit code 3 when the quality
    check does not pass the correction (the map is written all the same).
    """
    from coregister.cli._progress import registration_progress
    from coregister.geo import change

    _refuse_existing([output], options.pop("overwrite"))
    with registration_progress(ctx) as progress:
        result = change(reference, target, output=output, progress=progress, **options)
    _report(result, as_json, what="the coregistration")


@geo.command(
    "georef",
    epilog=(
        "\b\nExample (downloads 1.7 MB; four corner GCPs of the Landsat clip, EPSG:32618):\n"
        f"  {_LANDSAT_FETCH}\n"
        f"  {_GCP_LINE}\n"
        f"  coregister geo georef {_LANDSAT} --gcps gcps.csv --crs EPSG:32618 -o georef.tif"
    ),
)
@click.argument("image", type=_path())
@click.option("--base", type=_path(), default=None, help="A georeferenced raster covering the image.")
@click.option("--gcps", type=_path(), default=None,
              help="CSV of ground control points: pixel,line,x,y (pixel/line from the top-left corner, as GDAL).")
@click.option("--crs", default=None, help="CRS of the GCPs' x,y (e.g. EPSG:32633); required with --gcps.")
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), required=True,
              help="The georeferenced image (GeoTIFF).")
@click.option("--order", type=click.IntRange(1, 3), default=1, show_default=True,
              help="--gcps: polynomial order; 1 writes a geotransform, 2-3 write the GCPs.")
@click.option("--method", type=click.Choice(METHODS), default="features", show_default=True,
              help="--base: SIFT + robust affine + ECC refinement, or intensity registration (similar, roughly aligned imagery).")
@click.option("--cog", is_flag=True, help="Write a Cloud-Optimised GeoTIFF with overviews.")
@overwrite_option
@json_option
def georef(image: Path, base: Path | None, gcps: Path | None, crs: str | None, output: Path, order: int, method: str,
           cog: bool, as_json: bool, overwrite: bool = False) -> None:
    """Georeference IMAGE against a georeferenced --base, or from --gcps."""
    from coregister.geo import georeference

    _refuse_existing([output], overwrite)
    result = georeference(image, base=base, gcps=gcps, crs=crs, output=output, order=order, method=method, cog=cog)
    _report(result, as_json, what="the georeferencing")
