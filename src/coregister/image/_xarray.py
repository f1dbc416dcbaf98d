"""rioxarray DataArrays <-> :class:`~coregister.SpatialImage`: the crossing behind ``from_xarray`` and ``to_xarray``.

A raster opened with ``rioxarray.open_rasterio`` is a DataArray with dims
``(band, y, x)`` (or ``(y, x)``), a geotransform and CRS on its
``spatial_ref`` coordinate, and its nodata in ``_FillValue`` (or, opened
with ``masked=True``, NaN in the values and the file's value in
``encoding``). The geotransform addresses pixel **corners**; the image's
geometry, pixel **centres**: the crossing is
:func:`coregister.conventions.geotransform_to_geometry` and its inverse,
here as everywhere. The band axis becomes (and comes back from) the
trailing channel axis; band coordinates, attributes, encoding, names of
the dims and of the array travel in ``meta["xarray"]``.

xarray and rioxarray are optional: ``pip install 'coregister[xarray]'``.
"""

from __future__ import annotations

from collections.abc import Hashable
from typing import Any

import numpy as np

from coregister.conventions import geometry_to_geotransform, geotransform_to_geometry
from coregister.errors import GeometryError, MissingDependencyError, UnsupportedFormatError

__all__ = ["dataarray", "dataarray_parts", "is_dataarray", "rioxarray", "spatial_dims", "with_offset"]


def rioxarray() -> Any:
    """The ``rioxarray`` module (its ``.rio`` accessor registered), or an error that says how to install it."""
    try:
        import rioxarray as rio
    except ImportError as exc:
        raise MissingDependencyError(
            f"xarray DataArrays need xarray and rioxarray, which are not installed ({exc}); "
            "install them with: pip install 'coregister[xarray]'"
        ) from exc
    return rio


def is_dataarray(value: Any) -> bool:
    """Whether ``value`` is an ``xarray.DataArray`` (without importing xarray when it is not loaded)."""
    return type(value).__name__ == "DataArray" and type(value).__module__.split(".")[0] == "xarray"


def spatial_dims(array: Any) -> tuple[Hashable, Hashable, Hashable | None]:
    """``(y dim, x dim, band dim or None)`` of a 2D or 3D raster DataArray."""
    rioxarray()
    try:
        y_dim, x_dim = array.rio.y_dim, array.rio.x_dim
    except Exception as exc:  # rioxarray raises its own MissingSpatialDimensionError
        raise GeometryError(
            f"the DataArray {array.name!r} with dims {array.dims} has no spatial dims rioxarray knows "
            "(x/y, longitude/latitude); rename them or set them with array.rio.set_spatial_dims(x_dim, y_dim)"
        ) from exc
    others = [d for d in array.dims if d not in (y_dim, x_dim)]
    if len(others) > 1:
        raise GeometryError(
            f"the DataArray {array.name!r} has dims {array.dims}: coregister takes (y, x) or one more dim "
            f"(bands, times) besides them; select along {others[1:]} first (array.isel(...))"
        )
    if list(array.dims[-2:]) != [y_dim, x_dim]:
        raise GeometryError(f"the DataArray's dims {array.dims} do not end with ({y_dim}, {x_dim}); transpose it first")
    return y_dim, x_dim, (others[0] if others else None)


def _plain(value: Any) -> Any:
    return value.item() if isinstance(value, np.generic) else value


def dataarray_parts(array: Any, *, load: bool = True) -> dict[str, Any]:
    """The :class:`~coregister.SpatialImage` fields of a rioxarray DataArray (``SpatialImage(**parts)``).

    The values are the DataArray's, band axis moved last: a view of the
    same memory for a numpy-backed array; a dask-backed array is computed
    (``load=False`` gives a zero-size stand-in of the right dtype, for
    metadata only).
    """
    y_dim, x_dim, band_dim = spatial_dims(array)
    rio = array.rio
    transform = rio.transform(recalc=False)
    origin, spacing, direction = geotransform_to_geometry(transform)
    crs = rio.crs
    nodata = rio.nodata
    encoded = rio.encoded_nodata
    if nodata is None and encoded is not None and np.dtype(array.dtype).kind == "f":
        nodata = float("nan")  # opened with masked=True: NaN marks where the file held its nodata value
    if load:
        values = np.asarray(array.data)
    else:
        values = np.broadcast_to(np.zeros((), array.dtype), array.shape)
    if band_dim is not None:
        values = np.moveaxis(values, 0, -1)
    count = int(array.sizes[band_dim]) if band_dim is not None else 1
    attrs = {str(k): _plain(v) for k, v in array.attrs.items()}
    long_name = attrs.get("long_name")
    descriptions = tuple(long_name) if isinstance(long_name, tuple | list) and len(long_name) == count else (
        (long_name,) if isinstance(long_name, str) and count == 1 else None)
    meta: dict[str, Any] = {
        "format": "xarray",
        "transform": tuple(transform)[:6],
        "crs_wkt": crs.to_wkt() if crs is not None else None,
        "tags": {k: str(v) for k, v in attrs.items()
                 if k not in ("_FillValue", "scale_factor", "add_offset", "long_name", "units")
                 and isinstance(v, str | int | float)},
        "xarray": {
            "name": array.name,
            "dims": tuple(array.dims),
            "band_dim": band_dim,
            "band_coords": tuple(_plain(v) for v in array[band_dim].values) if band_dim is not None else None,
            "attrs": attrs,
            "encoding": {str(k): _plain(v) for k, v in array.encoding.items() if k != "preferred_chunks"},
            "encoded_nodata": None if encoded is None else _plain(encoded),
        },
    }
    if descriptions is not None:
        meta["band_descriptions"] = descriptions
    return {
        "array": values,
        "origin": tuple(float(v) for v in origin),
        "spacing": tuple(float(v) for v in spacing),
        "direction": direction,
        "crs": None if crs is None else crs.to_wkt(),
        "nodata": None if nodata is None else float(nodata),
        "meta": meta,
    }


def dataarray(image: Any) -> Any:
    """A rioxarray DataArray of a 2D :class:`~coregister.SpatialImage` (values shared, not copied).

    Dims ``(y, x)``, or ``(band, y, x)`` with a channel axis (names, band
    coordinates, attributes and encoding from ``meta["xarray"]`` when the
    image came from a DataArray); ``x``/``y`` coordinates at pixel centres;
    the geotransform, CRS and nodata written with ``rio.write_transform``,
    ``rio.write_crs`` and ``rio.write_nodata``.
    """
    rioxarray()
    import xarray as xr

    if image.ndim != 2:
        raise UnsupportedFormatError(
            f"a {image.ndim}D image cannot become a raster DataArray; volumes convert with to_sitk() or to_nibabel()"
        )
    saved = dict(image.meta.get("xarray") or {})
    dims = tuple(saved.get("dims") or ())
    band_dim = saved.get("band_dim") or "band"
    y_dim, x_dim = (dims[-2], dims[-1]) if len(dims) >= 2 else ("y", "x")
    transform = geometry_to_geotransform(image.origin, image.spacing, image.direction)
    height, width = image.shape
    values = np.asarray(image.array)
    coords: dict[Hashable, Any] = {}
    if transform.b == 0 and transform.d == 0:  # north-up: the coordinates are the pixel centres
        coords[x_dim] = transform.c + transform.a * (np.arange(width) + 0.5)
        coords[y_dim] = transform.f + transform.e * (np.arange(height) + 0.5)
    if image.has_channels:
        values = np.moveaxis(values, -1, 0)
        bands = saved.get("band_coords")
        coords[band_dim] = list(bands) if bands is not None and len(bands) == image.n_channels else (
            np.arange(1, image.n_channels + 1))
        out_dims: tuple[Hashable, ...] = (band_dim, y_dim, x_dim)
    else:
        out_dims = (y_dim, x_dim)
    attrs = dict(saved.get("attrs") or {})
    attrs.pop("_FillValue", None)
    out = xr.DataArray(values, dims=out_dims, coords=coords, name=saved.get("name"), attrs=attrs)
    out.encoding.update(saved.get("encoding") or {})
    out = out.rio.write_transform(transform)
    if image.crs is not None:
        from pyproj import CRS

        wkt = image.meta.get("crs_wkt")  # the source's own text when it is still this CRS (the round trip is exact)
        out = out.rio.write_crs(wkt if wkt and CRS.from_user_input(wkt) == image.crs else image.crs.to_wkt())
    encoded = saved.get("encoded_nodata")
    if image.nodata is not None and np.isnan(image.nodata) and encoded is not None:
        out = out.rio.write_nodata(encoded, encoded=True)
    elif image.nodata is not None:
        out = out.rio.write_nodata(image.nodata)
    return out


def with_offset(array: Any, offset: tuple[float, float]) -> Any:
    """The DataArray moved by ``offset`` (x, y in its CRS units): geotransform and coordinates only, values untouched.

    Nothing is computed: a dask-backed array stays lazy.
    """
    from affine import Affine

    y_dim, x_dim, _ = spatial_dims(array)
    transform = Affine.translation(*offset) @ array.rio.transform(recalc=False)
    moved = array.assign_coords({x_dim: array[x_dim] + offset[0], y_dim: array[y_dim] + offset[1]})
    return moved.rio.write_transform(transform)
