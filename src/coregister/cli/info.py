"""``coregister info PATH``: what an image is and where it lies in the world.

Generic over :class:`~coregister.SpatialImage`: whatever reader produced the
image, the same fields are shown (size, spacing, origin, direction and its
orientation code, dtype, value range, nodata); a geospatial image adds its
CRS and bounds, and the format-specific lines come from ``meta``.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import click
import numpy as np

from coregister.cli._output import echo_json, json_option, print_table
from coregister.image import SpatialImage

__all__ = ["describe", "info"]


def _floats(values: Any) -> list[float]:
    return [float(v) for v in np.asarray(values, dtype=float).ravel()]


def bounds(image: SpatialImage) -> dict[str, float]:
    """Extent of the pixel corners in world units: ``left, bottom, right, top`` (2D), plus ``low_z, high_z`` (3D).

    The corners are the pixel centres' grid pushed out by half a pixel, so
    for a north-up raster these are rasterio's ``dataset.bounds``.

    Examples
    --------
    >>> import numpy as np
    >>> img = SpatialImage(np.zeros((2, 3)), origin=(1015.0, 4985.0), spacing=(30.0, 30.0), direction=np.diag([1.0, -1.0]))
    >>> bounds(img)
    {'left': 1000.0, 'bottom': 4940.0, 'right': 1090.0, 'top': 5000.0}
    """
    size = np.array(image.size, dtype=float)
    corners = np.array(np.meshgrid(*[(-0.5, n - 0.5) for n in size], indexing="ij")).reshape(image.ndim, -1).T
    world = image.index_to_world(corners)
    low, high = world.min(axis=0), world.max(axis=0)
    out = {"left": float(low[0]), "bottom": float(low[1]), "right": float(high[0]), "top": float(high[1])}
    if image.ndim == 3:
        out.update(low_z=float(low[2]), high_z=float(high[2]))
    return out


def _value_range(image: SpatialImage) -> tuple[float, float] | None:
    valid = image.valid_mask()
    if not valid.any():
        return None
    values = image.array[valid].ravel()
    if image.nodata is not None:  # as GDAL's statistics: a band's nodata value is no value, even in a valid pixel
        values = values[~np.isnan(values)] if np.isnan(image.nodata) else values[values != image.nodata]
        if values.size == 0:
            return None
    if np.iscomplexobj(values):
        values = np.abs(values)
    if np.issubdtype(values.dtype, np.floating):
        values = values[np.isfinite(values)]
        if values.size == 0:
            return None
    return float(values.min()), float(values.max())


def describe(image: SpatialImage, *, path: str | None = None) -> dict[str, Any]:
    """The facts ``coregister info`` prints, as a JSON-ready dict.

    Examples
    --------
    >>> import numpy as np
    >>> img = SpatialImage(np.arange(6, dtype=np.int16).reshape(1, 2, 3), origin=(0, 0, 0), spacing=(1, 1, 2))
    >>> facts = describe(img)
    >>> facts["size"], facts["orientation"], facts["dtype"], facts["value_range"]
    ([3, 2, 1], 'LPS', 'int16', [0.0, 5.0])
    """
    meta = image.meta
    facts: dict[str, Any] = {
        "path": path if path is not None else meta.get("source_path"),
        "format": meta.get("format"),
        "dimensions": image.ndim,
        "size": list(image.size),
        "channels": image.n_channels,
        "spacing": _floats(image.spacing),
        "origin": _floats(image.origin),
        "direction": [_floats(row) for row in image.direction],
        "orientation": image.orientation,
        "dtype": str(image.dtype),
        "value_range": None,
        "nodata": image.nodata,
        "masked_pixels": int((~image.mask).sum()) if image.mask is not None else 0,
    }
    value_range = _value_range(image)
    facts["value_range"] = list(value_range) if value_range is not None else None
    if image.crs is not None:
        facts["crs"] = image.crs.to_string()
        epsg = image.crs.to_epsg()
        facts["crs_name"] = f"EPSG:{epsg} ({image.crs.name})" if epsg else image.crs.name
        facts["crs_units"] = next((a.unit_name for a in image.crs.axis_info), None)
        facts["bounds"] = bounds(image)
    if meta.get("rpcs") or meta.get("gcps"):
        facts["sensor_model"] = "RPCs" if meta.get("rpcs") else f"{len(meta['gcps'])} GCPs"
    if meta.get("stored_dtype") and meta.get("stored_dtype") != str(image.dtype):
        facts["stored_dtype"] = meta["stored_dtype"]
    slope, intercept = meta.get("rescale_slope"), meta.get("rescale_intercept")
    if slope not in (None, 1.0) or intercept not in (None, 0.0):
        facts["rescale"] = {"slope": slope, "intercept": intercept}
    if meta.get("trailing_axis") not in (None, "none") and image.has_channels:
        facts["trailing_axis"] = meta["trailing_axis"]
    if meta.get("format") == "nifti":
        facts["affine_source"] = meta.get("affine_source")
        nifti = meta.get("nifti", {})
        facts["xform_codes"] = {"sform": nifti.get("sform_code"), "qform": nifti.get("qform_code")}
    if meta.get("format") == "dicom":
        tags = meta.get("dicom", {})
        facts["series"] = {
            "uid": meta.get("series_uid"),
            "description": tags.get("SeriesDescription", ""),
            "number": tags.get("SeriesNumber"),
            "modality": tags.get("Modality", ""),
            "patient_position": tags.get("PatientPosition", ""),
            "files": len(meta.get("files", ())),
            "resampled": bool(meta.get("resampled")),
        }
    return facts


def _text(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.10g}"
    if isinstance(value, list | tuple):
        return " x ".join(_text(v) for v in value) if value and not isinstance(value[0], list) else _matrix(value)
    if isinstance(value, dict):
        return ", ".join(f"{k} {_text(v)}" for k, v in value.items() if v not in (None, ""))
    return "" if value is None else str(value)


def _matrix(rows: Any) -> str:
    return "  ".join("[" + " ".join(f"{v:.6g}" for v in row) + "]" for row in rows)


def _orientation_label(facts: dict[str, Any]) -> str:
    """ITK's code for medical and plain images; for a map, whether it is north-up (LPS letters mean nothing there)."""
    if "crs" not in facts:
        return facts["orientation"]
    direction = np.array(facts["direction"])
    return "north-up" if np.allclose(direction, np.diag([1.0, -1.0])) else "rotated or flipped grid"


def _series_rows(series: dict[str, Any]) -> list[tuple[str, str]]:
    number = f"#{series['number']} " if series.get("number") is not None else ""
    description = f"{series['description']!r} " if series.get("description") else ""
    rows = [
        ("series", f"{number}{description}{series.get('modality', '')}, {series['files']} file(s)".strip()),
        ("series uid", str(series.get("uid"))),
    ]
    if series.get("patient_position"):
        rows.append(("patient position", series["patient_position"]))
    if series.get("resampled"):
        rows.append(("resampled", "yes: uneven slice gaps resampled onto a uniform grid"))
    return rows


def _rows(facts: dict[str, Any]) -> list[tuple[str, str]]:
    rows = []
    for key, value in facts.items():
        if key in ("path", "direction", "orientation", "spacing", "origin", "value_range", "warnings"):
            continue
        if key == "size":
            rows.append(("size", _text(value) + (f" ({facts['channels']} channels)" if facts["channels"] > 1 else "")))
            rows.append(("spacing", _text(facts["spacing"])))
            rows.append(("origin", ", ".join(_text(v) for v in facts["origin"])))
            rows.append(("direction", f"{_matrix(facts['direction'])}  ({_orientation_label(facts)})"))
            continue
        if key == "series":
            rows.extend(_series_rows(value))
            continue
        if key == "channels" or (key == "masked_pixels" and not value):
            continue
        if key == "dtype":
            rows.append(("dtype", str(value)))
            low_high = facts["value_range"]
            rows.append(
                ("value range", "no valid pixel" if low_high is None else f"{low_high[0]:.6g} .. {low_high[1]:.6g}")
            )
            continue
        if key == "crs":
            continue  # shown as crs name (the full WKT is in --json)
        if key == "bounds":
            rows.append(("bounds", ", ".join(f"{k} {v:.10g}" for k, v in value.items())))
            continue
        if key == "nodata" and value is None:
            rows.append(("nodata", "none"))
            continue
        rows.append((key.replace("_", " "), _text(value)))
    rows.extend(("warning", w) for w in facts.get("warnings", []))
    return rows


@click.command(
    "info",
    epilog=(
        "\b\nExample (no network needed: the file is copied from the installed nibabel):\n"
        "  coregister data fetch nibabel_anat_func --dest data --file anatomical.nii\n"
        "  coregister info data/nibabel_anat_func/anatomical.nii"
    ),
)
@click.argument("path", type=click.Path(path_type=Path))
@click.option(
    "--series", default=None, help="DICOM folder with several series: index, SeriesInstanceUID or description."
)
@click.option("--volume", type=int, default=None, help="4D NIfTI: show only this volume.")
@click.option(
    "--resample-nonuniform",
    is_flag=True,
    help="DICOM series with uneven slice gaps: resample onto a uniform grid instead of refusing.",
)
@json_option
def info(path: Path, series: str | None, volume: int | None, resample_nonuniform: bool, as_json: bool) -> None:
    """Show an image's size, spacing, origin, direction (orientation code), CRS and bounds, dtype and value range.

    PATH is any image coregister reads: NIfTI, MHA/MHD/NRRD, GeoTIFF/JPEG 2000,
    PNG/JPEG/TIFF, a DICOM folder or file. Warnings met while reading are
    shown with the facts.
    """
    from coregister.io import detect_format, read

    fmt = detect_format(path)
    options: dict[str, Any] = {}
    for name, value, takes in (
        ("series", series, "dicom"),
        ("volume", volume, "nifti"),
        ("resample_nonuniform", resample_nonuniform or None, "dicom"),
    ):
        if value is None:
            continue
        if fmt != takes:
            flag = "--" + name.replace("_", "-")
            raise click.UsageError(f"{flag} applies to {takes.upper()} input; {str(path)!r} is {fmt}")
        options[name] = value
    if isinstance(options.get("series"), str) and options["series"].lstrip("-").isdigit():
        options["series"] = int(options["series"])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        image = read(path, **options)
    facts = describe(image, path=str(path))
    facts["warnings"] = [str(w.message) for w in caught if issubclass(w.category, UserWarning)]
    if as_json:
        echo_json(facts)
        return
    print_table(str(path), ("field", "value"), _rows(facts))
