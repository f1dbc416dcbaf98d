"""GeoTIFF, plain TIFF and JPEG 2000 through rasterio.

Reading gives a :class:`~coregister.SpatialImage` whose geometry addresses
pixel **centres** (the GDAL geotransform addresses corners; the crossing is
:func:`coregister.conventions.geotransform_to_geometry`, and nowhere else).
A north-up raster has the direction ``diag(1, -1)``; a rotated geotransform
gives a non-diagonal direction. Several bands become a trailing channel axis.

What GDAL needs to write the same kind of file back (dtype, nodata,
compression, tiling, interleave, predictor, photometric, band descriptions,
dataset and band tags, colour interpretation, colour maps, scales, offsets,
units, RPCs, GCPs) travels in ``image.meta`` and is written back by
:func:`write_raster`.

Georeferencing rules
--------------------
* A raster with a geotransform gets the geometry of that geotransform, with
  ``crs`` as declared (``None`` when the file declares none).
* GDAL reports "no geotransform" as the identity ``(0, 1, 0, 0, 0, 1)``; a
  file may even store that identity explicitly. Either way the raster keeps
  its pixel grid (origin 0, spacing 1, identity direction) and ``crs=None``:
  an identity geotransform is never read as degrees. RPCs, GCPs and a CRS
  declared without a geotransform are carried in ``meta`` (``"rpcs"``,
  ``"gcps"``, ``"gcps_crs_wkt"``, ``"georef_crs_wkt"``) and written back.
* A TIFF with no georeferencing at all reads as a plain image
  (``meta["format"] == "tiff"``) and rasterio's ``NotGeoreferencedWarning``
  does not escape.

Pixel values are returned as stored: band scales and offsets are kept in
``meta["scales"]``/``meta["offsets"]`` (as GDAL and rasterio do), not applied.

Examples
--------
>>> import tempfile, pathlib
>>> import numpy as np
>>> from coregister import SpatialImage
>>> img = SpatialImage(np.arange(12, dtype=np.uint16).reshape(3, 4), origin=(500015.0, 4999985.0),
...                    spacing=(30.0, 30.0), direction=np.diag([1.0, -1.0]), crs="EPSG:32633", nodata=0)
>>> path = write_raster(img, pathlib.Path(tempfile.mkdtemp()) / "small.tif")
>>> back = read_raster(path)
>>> back.same_geometry(img), back.crs.to_epsg(), back.nodata, back.meta["format"]
(True, 32633, 0.0, 'geotiff')
>>> np.array_equal(back.array, img.array), int(back.mask.sum())
(True, 11)
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import warnings
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
import rasterio.shutil
from affine import Affine
from pyproj import CRS
from rasterio.control import GroundControlPoint
from rasterio.crs import CRS as RioCRS
from rasterio.enums import ColorInterp, MaskFlags
from rasterio.errors import NotGeoreferencedWarning, RasterioIOError
from rasterio.rpc import RPC
from rasterio.windows import Window

from coregister._files import OVERWRITE_FIX, atomic_path, refuse_existing
from coregister._stderr import captured_stderr
from coregister.conventions import geometry_to_geotransform, geotransform_to_geometry
from coregister.errors import ConfigError, GeometryError, GeometryWarning, UnreadableInputError, UnsupportedFormatError
from coregister.image import SpatialImage
from coregister.io._guard import check_path, guarded, within_memory

__all__ = ["open_dataset", "raster_profile", "raster_writer", "read_raster", "write_raster"]

logger = logging.getLogger(__name__)

#: driver for each writable suffix (``cog=True`` turns GTiff into GDAL's COG driver)
_DRIVERS = {".tif": "GTiff", ".tiff": "GTiff", ".gtiff": "GTiff", ".jp2": "JP2OpenJPEG", ".j2k": "JP2OpenJPEG"}
#: drivers that only have CreateCopy: written through a staging GTiff, then copied
_COPY_ONLY = {"COG", "JP2OpenJPEG"}
#: profile keys that describe the dataset (the rest are creation options)
_DATASET_KEYS = {"driver", "width", "height", "count", "dtype", "crs", "transform", "nodata", "gcps", "rpcs"}
#: creation options we carry from a source GTiff (rasterio profile names)
_GTIFF_OPTIONS = ("compress", "predictor", "tiled", "blockxsize", "blockysize", "interleave", "photometric")
#: JPEG 2000 written losslessly unless the caller overrides these
_JP2_DEFAULTS = {"quality": 100, "reversible": "YES", "write_metadata": "YES"}
#: dtypes the JPEG 2000 codec stores
_JP2_DTYPES = {"uint8", "int8", "uint16", "int16", "uint32", "int32"}

_IDENTITY = Affine.identity()


# --------------------------------------------------------------------------- helpers
@contextlib.contextmanager
def _gdal_env() -> Iterator[None]:
    """GDAL settings for our reads and writes; rasterio's ``NotGeoreferencedWarning`` is expected, not escaped.

    A plain TIFF legitimately has no geotransform: rasterio warns when such a
    file is opened, when its transform is read and when one is written. We
    decide georeferencing ourselves (see the module docstring), so that one
    warning class is silenced here and only here.
    """
    with warnings.catch_warnings(), rasterio.Env(GDAL_TIFF_INTERNAL_MASK=True):
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        yield


@contextlib.contextmanager
def open_dataset(path: str | os.PathLike[str], *, what: str = "raster") -> Iterator[Any]:
    """``rasterio.open(path)`` as coregister opens every raster: the one opener for readers and workflows.

    Inside the block our GDAL settings hold and rasterio's
    ``NotGeoreferencedWarning`` is silenced (rasterio issues it on opening
    and again on reading ``transform``; whether a raster is georeferenced is
    decided by the caller, which says so in its own words). A file GDAL
    cannot open raises :class:`~coregister.errors.UnreadableInputError`
    naming ``what`` and the path.

    Examples
    --------
    >>> import tempfile, pathlib, warnings
    >>> import numpy as np
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "plain.tif"
    >>> with open_dataset(path.parent / "missing.tif", what="reference raster") as ds:
    ...     pass
    Traceback (most recent call last):
    ...
    coregister.errors.UnreadableInputError: GDAL cannot read the reference raster '...missing.tif' (...)...
    >>> with warnings.catch_warnings():
    ...     warnings.simplefilter("ignore")
    ...     with rasterio.open(path, "w", driver="GTiff", width=2, height=2, count=1, dtype="uint8") as out:
    ...         out.write(np.zeros((1, 2, 2), np.uint8))
    >>> with warnings.catch_warnings():
    ...     warnings.simplefilter("error")  # a NotGeoreferencedWarning would raise here
    ...     with open_dataset(path) as ds:
    ...         ds.crs is None, ds.transform.is_identity
    (True, True)
    """
    with _gdal_env():
        try:
            dataset = rasterio.open(path)
        except RasterioIOError as exc:
            raise UnreadableInputError(
                f"GDAL cannot read the {what} {str(path)!r} ({exc}); the file may be truncated or not a TIFF/JPEG 2000"
            ) from exc
        with dataset:
            yield dataset


def _pyproj(crs: Any) -> CRS | None:
    return None if crs is None else CRS.from_wkt(crs.to_wkt())


def _is_pixel_grid(image: SpatialImage) -> bool:
    """Origin 0, spacing 1, identity direction: the geometry of an image that has no georeferencing."""
    return (
        image.ndim == 2
        and np.allclose(image.origin, 0.0, rtol=0, atol=1e-12)
        and np.allclose(image.spacing, 1.0, rtol=0, atol=1e-12)
        and np.allclose(image.direction, np.eye(2), rtol=0, atol=1e-12)
    )


def _normalise_window(window: Window | Sequence[Sequence[int]] | None, width: int, height: int) -> Window | None:
    if window is None:
        return None
    if isinstance(window, Window):
        block = window
    else:
        try:
            (row_start, row_stop), (col_start, col_stop) = window
        except (TypeError, ValueError):
            raise ConfigError(
                f"window={window!r} is not a rasterio Window nor ((row_start, row_stop), (col_start, col_stop))"
            ) from None
        block = Window.from_slices((row_start, row_stop), (col_start, col_stop))
    rounded = block.round_offsets().round_lengths()
    if (
        rounded.col_off < 0
        or rounded.row_off < 0
        or rounded.col_off + rounded.width > width
        or rounded.row_off + rounded.height > height
    ):
        raise ConfigError(
            f"window {rounded!r} reaches outside the raster of {width} x {height} pixels (columns x rows); "
            "intersect it with the raster first (rasterio.windows.intersection)"
        )
    if rounded.width <= 0 or rounded.height <= 0:
        raise ConfigError(f"window {rounded!r} is empty; give it at least one row and one column")
    return rounded


def _band_numbers(bands: Sequence[int] | None, count: int, path: Path) -> tuple[int, ...]:
    if bands is None:
        return tuple(range(1, count + 1))
    if isinstance(bands, int | np.integer):
        bands = (int(bands),)
    numbers = tuple(int(b) for b in bands)
    if not numbers:
        raise ConfigError(f"bands=() selects nothing from {str(path)!r}; give band numbers from 1 to {count}")
    bad = [b for b in numbers if not 1 <= b <= count]
    if bad:
        raise ConfigError(
            f"bands {bad} do not exist in {str(path)!r}, which has {count} band(s); "
            f"band numbers count from 1 as in GDAL (1..{count})"
        )
    return numbers


def _valid_mask(ds: Any, bands: tuple[int, ...], window: Window | None) -> tuple[np.ndarray | None, str | None]:
    """The dataset's valid-pixel mask for ``bands`` (GDAL's mask machinery) and where it came from.

    A pixel is valid when it is valid in any selected non-alpha band, as in
    GDAL's dataset mask. ``None`` when every pixel is valid by construction.
    """
    alpha = {i + 1 for i, ci in enumerate(ds.colorinterp) if ci == ColorInterp.alpha}
    data_bands = [b for b in bands if b not in alpha] or list(bands)
    flags = [ds.mask_flag_enums[b - 1] for b in data_bands]
    if all(f == [MaskFlags.all_valid] for f in flags):
        return None, None
    if any(MaskFlags.per_dataset in f for f in flags):
        source = "alpha" if any(MaskFlags.alpha in f for f in flags) else "internal"
        masks = ds.read_masks(data_bands[0], window=window)[np.newaxis]
    else:
        source = "nodata"
        masks = ds.read_masks(data_bands, window=window)
    return np.any(masks > 0, axis=0), source


def _photometric(colorinterp: Sequence[str], source_space: str | None) -> str | None:
    if source_space and source_space.upper() == "YCBCR":
        return "YCBCR"
    if len(colorinterp) >= 3 and tuple(colorinterp[:3]) == ("red", "green", "blue"):
        return "RGB"
    if colorinterp and colorinterp[0] == "palette":
        return None  # set by writing the colour map
    return "MINISBLACK" if colorinterp else None


def _read_meta(ds: Any, path: Path, bands: tuple[int, ...], georef: bool, mask_source: str | None) -> dict[str, Any]:
    structure = ds.tags(ns="IMAGE_STRUCTURE")
    profile = ds.profile
    colorinterp = tuple(ds.colorinterp[b - 1].name for b in bands)
    compress = profile.get("compress")
    predictor = structure.get("PREDICTOR")
    kept: dict[str, Any] = {
        "dtype": profile["dtype"],
        "nodata": profile.get("nodata"),
        "compress": str(compress).lower() if compress else None,
        "predictor": int(predictor) if predictor else None,
        "tiled": bool(profile.get("tiled", False)),
        "blockxsize": profile.get("blockxsize"),
        "blockysize": profile.get("blockysize"),
        "interleave": str(profile["interleave"]).lower() if profile.get("interleave") else None,
        "photometric": _photometric(colorinterp, structure.get("SOURCE_COLOR_SPACE")),
        "layout": structure.get("LAYOUT"),
    }
    colormaps = {}
    for position, b in enumerate(bands, start=1):
        if ds.colorinterp[b - 1] == ColorInterp.palette:
            with contextlib.suppress(ValueError):
                colormaps[position] = {int(k): tuple(int(c) for c in v) for k, v in ds.colormap(b).items()}
    gcps, gcps_crs = ds.gcps
    rpcs = ds.rpcs
    driver = ds.driver
    if driver == "JP2OpenJPEG":
        fmt = "jp2"
    elif driver in ("GTiff", "COG"):
        fmt = "geotiff" if (georef or ds.crs is not None or gcps or rpcs) else "tiff"
    else:
        fmt = driver.lower()
    return {
        "source_path": str(path),
        "format": fmt,
        "driver": driver,
        "bands": bands,
        "source_shape": (ds.height, ds.width),
        "transform": tuple(ds.transform)[:6] if georef else None,
        "crs_wkt": ds.crs.to_wkt() if (georef and ds.crs is not None) else None,
        "georef_crs_wkt": ds.crs.to_wkt() if (not georef and ds.crs is not None) else None,
        "profile": kept,
        "tags": dict(ds.tags()),
        "band_tags": tuple(dict(ds.tags(b)) for b in bands),
        "band_descriptions": tuple(ds.descriptions[b - 1] for b in bands),
        "colorinterp": colorinterp,
        "colormaps": colormaps,
        "scales": tuple(float(ds.scales[b - 1]) for b in bands),
        "offsets": tuple(float(ds.offsets[b - 1]) for b in bands),
        "units": tuple(ds.units[b - 1] or None for b in bands),
        "rpcs": rpcs.to_dict() if rpcs else None,
        "gcps": tuple(g.asdict() for g in gcps),
        "gcps_crs_wkt": gcps_crs.to_wkt() if (gcps and gcps_crs is not None) else None,
        "mask_source": mask_source,
        "overviews": tuple(ds.overviews(bands[0])),
    }


# --------------------------------------------------------------------------- reading
def _check_claims(ds: Any, numbers: tuple[int, ...], window: Window | None, masked: bool, path: Path) -> None:
    """Refuse, before reading, a raster whose size is absurd or whose pixels would not fit in the allowed memory.

    Compressed and sparse GeoTIFFs legitimately claim far more pixels than
    their bytes (a sparse file's missing blocks read as nodata): what bounds
    them is the allowed memory, checked here for the block that would be read.
    """
    if ds.width <= 0 or ds.height <= 0 or ds.count <= 0:
        raise UnreadableInputError(
            f"{str(path)!r} has a broken header: {ds.width} x {ds.height} pixels, {ds.count} band(s); re-export it"
        )
    width, height = (int(window.width), int(window.height)) if window is not None else (ds.width, ds.height)
    itemsize = max(np.dtype(ds.dtypes[b - 1]).itemsize for b in numbers)
    claimed = width * height * (len(numbers) * itemsize * 2 + (2 if masked else 0))
    described = f"{ds.width} x {ds.height} pixels, {len(numbers)} band(s) of {ds.dtypes[numbers[0] - 1]}"
    within_memory(claimed, path, described)


@guarded("GeoTIFF/TIFF/JPEG 2000")
def read_raster(
    path: str | os.PathLike[str],
    *,
    bands: Sequence[int] | None = None,
    masked: bool = True,
    window: Window | Sequence[Sequence[int]] | None = None,
) -> SpatialImage:
    """Read a GeoTIFF, plain TIFF or JPEG 2000 file through rasterio.

    Parameters
    ----------
    path : path
        ``.tif``/``.tiff`` (GeoTIFF, COG or plain TIFF), ``.jp2``.
    bands : sequence of int, optional
        Band numbers to read, counted from 1 as in GDAL and rasterio; default
        all. One band gives a 2D array, several a trailing channel axis in the
        order given.
    masked : bool
        Build ``image.mask`` (True = valid) from GDAL's mask machinery: an
        internal mask band, the nodata value, or an alpha band. The mask is
        ``None`` when every pixel is valid by construction. ``nodata`` is set
        either way.
    window : rasterio.windows.Window or ((row_start, row_stop), (col_start, col_stop)), optional
        Read only this block of pixels; the geometry is that of the block
        (its first pixel centre becomes the origin).

    Returns
    -------
    SpatialImage
        Geometry at pixel centres in map units of ``crs``; ``meta`` holds the
        profile and metadata that :func:`write_raster` writes back,
        ``meta["source_path"]`` and ``meta["format"]`` (``"geotiff"``,
        ``"tiff"`` or ``"jp2"``).

    Raises
    ------
    UnreadableInputError
        The file is missing or GDAL cannot open it, or its size is 0.
    MemoryLimitError
        The pixels to read would need more than the allowed memory
        (``COREGISTER_MAX_MEMORY``, ``--max-memory``): read a window.
    ConfigError
        A band number or the window is out of range.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> import numpy as np
    >>> import rasterio
    >>> from affine import Affine
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "rgb.tif"
    >>> with rasterio.open(path, "w", driver="GTiff", width=4, height=3, count=3, dtype="uint8",
    ...                    crs="EPSG:32618", transform=Affine(300.0, 0.0, 101985.0, 0.0, -300.0, 2826915.0)) as dst:
    ...     dst.write(np.arange(36, dtype=np.uint8).reshape(3, 3, 4))
    >>> img = read_raster(path)
    >>> img.shape, img.n_channels, img.origin, img.orientation
    ((3, 4), 3, (102135.0, 2826765.0), 'LA')
    >>> read_raster(path, bands=[2], window=((1, 3), (2, 4))).array.tolist()
    [[18, 19], [22, 23]]
    """
    path = check_path(path)
    with open_dataset(path) as ds:
        numbers = _band_numbers(bands, ds.count, path)
        if ds.driver == "GTiff" and ds.subdatasets:
            warnings.warn(
                f"{str(path)!r} is a TIFF of {len(ds.subdatasets)} pages; only the first page was read. "
                "Read a stack as a volume with coregister.io.itk.read_itk (SimpleITK) or convert it to .nii.gz/.mha",
                GeometryWarning,
                stacklevel=2,
            )
        win = _normalise_window(window, ds.width, ds.height)
        _check_claims(ds, numbers, win, masked, path)
        transform = ds.transform
        georef = transform != _IDENTITY
        try:
            data = ds.read(list(numbers), window=win)
        except RasterioIOError as exc:
            cause = f" ({exc.__cause__})" if exc.__cause__ is not None else ""
            said = str(exc).replace(" See previous exception for details.", "")
            raise UnreadableInputError(
                f"GDAL failed to decode pixels of {str(path)!r}: {said}{cause}; the file is truncated or corrupt"
            ) from exc
        mask, mask_source = _valid_mask(ds, numbers, win) if masked else (None, None)
        meta = _read_meta(ds, path, numbers, georef, mask_source)
        if win is not None:
            meta["window"] = (
                (int(win.row_off), int(win.row_off + win.height)),
                (int(win.col_off), int(win.col_off + win.width)),
            )
        crs = _pyproj(ds.crs) if georef else None
        if georef:
            # rasterio's window_transform uses the deprecated `*` of affine 3: compose with `@` here
            block_transform = (
                transform @ Affine.translation(win.col_off, win.row_off) if win is not None else transform
            )
            with np.errstate(over="ignore", invalid="ignore"):  # an absurd geotransform is refused just below
                try:
                    origin, spacing, direction = geotransform_to_geometry(block_transform)
                except GeometryError as exc:
                    raise GeometryError(
                        f"{str(path)!r} has an unusable geotransform {tuple(block_transform)[:6]} ({exc}); "
                        "fix its georeferencing (gdal_edit.py -a_ullr, or georeference it again)"
                    ) from exc
            meta["transform"] = tuple(block_transform)[:6]  # what the writer reuses for a bit-exact round trip
        else:
            if ds.crs is not None and not (ds.rpcs or ds.gcps[0]):
                logger.info("%s declares a CRS but no geotransform; reading its pixel grid, CRS kept in meta", path)
            offset = (float(win.col_off), float(win.row_off)) if win is not None else (0.0, 0.0)
            origin, spacing, direction = np.array(offset), np.ones(2), np.eye(2)
        nodata = ds.nodata
    array = data[0] if data.shape[0] == 1 else np.moveaxis(data, 0, -1)
    logger.debug("read %s: %s bands %s, georeferenced=%s", path, ds.driver, numbers, georef)
    return SpatialImage(
        array,
        origin=tuple(origin),
        spacing=tuple(spacing),
        direction=direction,
        crs=crs,
        nodata=nodata,
        mask=mask,
        meta=meta,
    )


# --------------------------------------------------------------------------- profile
def _geotransform(image: SpatialImage) -> Affine | None:
    """The geotransform to write; the one read is reused when the geometry still matches it (bit-exact round trip)."""
    if image.crs is None and _is_pixel_grid(image):
        return None
    derived = geometry_to_geotransform(image.origin, image.spacing, image.direction)
    stored = image.meta.get("transform")
    if stored is not None:
        stored = Affine(*stored)
        pixel = max(abs(derived.a), abs(derived.b), abs(derived.d), abs(derived.e))
        linear = np.abs(np.subtract(stored[:2] + stored[3:5], derived[:2] + derived[3:5]))
        offset = np.abs(np.subtract((stored.c, stored.f), (derived.c, derived.f)))
        if np.all(linear <= 1e-9 * pixel) and np.all(offset <= 1e-6 * pixel):
            return stored
    return derived


def _rio_crs(image: SpatialImage) -> RioCRS | None:
    """The CRS to write; the WKT read from the file is reused when it is the same CRS (no WKT1/WKT2 drift)."""
    if image.crs is None:
        return None
    wkt = image.meta.get("crs_wkt")
    if wkt:
        with contextlib.suppress(Exception):
            if CRS.from_wkt(wkt) == image.crs:
                return RioCRS.from_wkt(wkt)
    return RioCRS.from_wkt(image.crs.to_wkt())


def _write_dtype(dtype: np.dtype) -> np.dtype:
    if dtype == np.bool_:
        return np.dtype(np.uint8)
    if dtype == np.float16:
        return np.dtype(np.float32)
    return np.dtype(dtype)


def _check_nodata(nodata: float | None, dtype: np.dtype) -> None:
    if nodata is None or math.isnan(nodata) and dtype.kind in "fc":
        return
    if dtype.kind in "iu":
        info = np.iinfo(dtype)
        if not (float(nodata).is_integer() and info.min <= nodata <= info.max):
            raise ConfigError(
                f"nodata {nodata:g} cannot be stored in {dtype} pixels ({info.min}..{info.max}); "
                "pick a nodata value inside that range or cast the array to a wider dtype"
            )
    elif math.isnan(nodata):
        raise ConfigError(f"nodata NaN needs floating-point pixels, not {dtype}; pick an integer nodata value")


def _same_band_count(values: Any, count: int, what: str) -> tuple[Any, ...] | None:
    if values is None:
        return None
    values = tuple(values)
    if len(values) != count:
        if values:
            logger.info("meta %s describes %d bands but the image has %d; not written", what, len(values), count)
        return None
    return values


def raster_profile(image: SpatialImage, *, driver: str = "GTiff", **overrides: Any) -> dict[str, Any]:
    """The rasterio profile that writes ``image`` (``rasterio.open(path, "w", **profile)``).

    Dataset keys (driver, size, band count, dtype, CRS, geotransform, nodata,
    RPCs, GCPs) come from the image; GTiff creation options (compression,
    predictor, tiling and block size, interleave, photometric) come from
    ``image.meta["profile"]`` when the image was read from a raster, with
    sensible defaults otherwise (DEFLATE with a predictor; 256 x 256 tiles
    for georeferenced rasters over 512 pixels on a side, strips for the rest,
    which every TIFF reader, ITK's included, reads). ``overrides``
    (rasterio/GDAL names, case-insensitive) win over both.

    For windowed writing of a large raster, pass a template with a
    zero-stride array: it has the grid, dtype and metadata and costs no
    memory, e.g. ``image.replace(array=np.broadcast_to(np.zeros((), dtype),
    shape))``; or use :func:`raster_writer`.

    Parameters
    ----------
    image : SpatialImage
        A 2D image (one band, or a trailing band axis).
    driver : str
        ``"GTiff"`` or ``"JP2OpenJPEG"``.
    **overrides
        Any rasterio profile key or GDAL creation option.

    Returns
    -------
    dict

    Examples
    --------
    >>> import numpy as np
    >>> from coregister import SpatialImage
    >>> template = SpatialImage(np.broadcast_to(np.zeros((), np.float32), (10980, 10980)), origin=(300005.0, 5899995.0),
    ...                         spacing=(10.0, 10.0), direction=np.diag([1.0, -1.0]), crs="EPSG:32633", nodata=-9999)
    >>> p = raster_profile(template)
    >>> p["width"], p["height"], p["dtype"], p["nodata"], p["predictor"], p["transform"].c
    (10980, 10980, 'float32', -9999.0, 3, 300000.0)
    """
    if image.ndim != 2:
        raise UnsupportedFormatError(
            f"a {image.ndim}D image (shape {image.shape}) cannot be written as a raster; "
            "write volumes as .nii.gz or .mha"
        )
    dtype = _write_dtype(image.dtype)
    count = image.n_channels
    height, width = image.shape
    meta = image.meta
    source = dict(meta.get("profile") or {})
    from_raster = bool(source)
    _check_nodata(image.nodata, dtype)

    profile: dict[str, Any] = {"driver": driver, "width": width, "height": height, "count": count, "dtype": dtype.name}
    transform = _geotransform(image)
    if transform is not None:
        profile["transform"] = transform
    crs = _rio_crs(image)
    if image.nodata is not None:
        profile["nodata"] = image.nodata

    # RPCs/GCPs address the source's pixel grid: write them only while the image still is that grid.
    same_grid = _is_pixel_grid(image) and tuple(meta.get("source_shape") or ()) == (height, width)
    if meta.get("rpcs") or meta.get("gcps"):
        if same_grid and image.crs is None:
            if meta.get("rpcs"):
                profile["rpcs"] = RPC(**meta["rpcs"])
            if meta.get("gcps"):
                profile["gcps"] = [GroundControlPoint(**g) for g in meta["gcps"]]
                crs = RioCRS.from_wkt(meta["gcps_crs_wkt"]) if meta.get("gcps_crs_wkt") else None
        else:
            logger.warning(
                "RPCs/GCPs of %s dropped: the image no longer has the pixel grid they address", meta.get("source_path")
            )
    if crs is None and image.crs is None and same_grid and meta.get("georef_crs_wkt") and "gcps" not in profile:
        crs = RioCRS.from_wkt(meta["georef_crs_wkt"])
    if crs is not None:
        profile["crs"] = crs

    if driver == "GTiff":
        if from_raster:
            options = {k: source.get(k) for k in _GTIFF_OPTIONS if source.get(k) is not None}
            options["tiled"] = bool(source.get("tiled"))
        else:
            # Tiles serve GIS readers of large rasters; strips are read by every TIFF reader (ITK's TIFF
            # reader, hence elastix/ANTs/Slicer, mangles tiled files), so plain and small images get strips.
            tiled = image.crs is not None and max(height, width) > 512
            options = {"compress": "deflate", "tiled": tiled, "interleave": "pixel" if count > 1 else "band"}
            if tiled:
                options.update(blockxsize=256, blockysize=256)
            # GDAL would call a 4-band uint8 image RGBA and read its 4th band as a mask: say what the bands are.
            layout = meta.get("layout")  # set by the PNG/JPEG reader
            if layout == "rgb" and count == 3:
                options["photometric"] = "RGB"
            elif layout == "rgba" and count == 4:
                options.update(photometric="RGB", alpha="YES")
            elif count == 4:
                options["photometric"] = "MINISBLACK"
        if options.get("tiled"):
            for key in ("blockxsize", "blockysize"):
                size = int(options.get(key) or 256)
                options[key] = size if size % 16 == 0 else 256
        else:
            options.pop("blockxsize", None)
            rows_per_strip = options.get("blockysize")
            if rows_per_strip:
                options["blockysize"] = max(1, min(int(rows_per_strip), height))
        if options.get("compress") in (None, "none"):
            options.pop("predictor", None)
        elif options.get("compress") in ("deflate", "lzw", "zstd", "lerc_deflate", "lerc_zstd") and (
            options.get("predictor") or not from_raster
        ):
            options["predictor"] = 3 if dtype.kind == "f" else (2 if dtype.kind in "iu" else None)
            if options["predictor"] is None:
                options.pop("predictor")
        photometric = options.get("photometric")
        if photometric == "RGB" and count not in (3, 4):
            options.pop("photometric")
        elif photometric == "YCBCR" and not (count == 3 and dtype == np.uint8 and options.get("compress") == "jpeg"):
            options.pop("photometric")
        colorinterp = _same_band_count(meta.get("colorinterp"), count, "colorinterp") or ()
        if count > 1 and colorinterp[-1:] == ("alpha",):
            options["alpha"] = "YES"  # ExtraSamples: GDAL only marks alpha at creation
        if count == 1:
            options.pop("interleave", None)
        options.setdefault("bigtiff", "IF_SAFER")
        profile.update(options)
    elif driver == "JP2OpenJPEG":
        if dtype.name not in _JP2_DTYPES:
            raise UnsupportedFormatError(
                f"JPEG 2000 cannot store {dtype} pixels (it stores {', '.join(sorted(_JP2_DTYPES))}); "
                "write a .tif instead, or cast the array"
            )
        profile.update(_JP2_DEFAULTS)
    else:
        raise ConfigError(f"driver {driver!r} is not one coregister writes; use 'GTiff' or 'JP2OpenJPEG'")
    for key, value in overrides.items():
        profile[key.lower()] = value
    return profile


def _write_metadata(dst: Any, image: SpatialImage, *, same_pixels: bool) -> None:
    """Tags, band descriptions, colour interpretation, colour maps, scales/offsets/units from ``image.meta``.

    GDAL's ``STATISTICS_*`` band tags describe pixel values; they are kept
    only when the pixels may still be the ones read (``same_pixels``: same
    shape and dtype as the source, written whole), never left stale.
    """
    meta = image.meta
    count = dst.count
    tags = {str(k): str(v) for k, v in (meta.get("tags") or {}).items()}
    if tags:
        dst.update_tags(**tags)
    for b, band_tags in enumerate(_same_band_count(meta.get("band_tags"), count, "band_tags") or (), start=1):
        band_tags = {str(k): str(v) for k, v in band_tags.items()}
        if not same_pixels:
            band_tags = {k: v for k, v in band_tags.items() if not k.startswith("STATISTICS_")}
        if band_tags:
            dst.update_tags(b, **band_tags)
    for b, text in enumerate(
        _same_band_count(meta.get("band_descriptions"), count, "band_descriptions") or (), start=1
    ):
        if text:
            dst.set_band_description(b, text)
    colormaps = meta.get("colormaps") or {}
    for b, cmap in colormaps.items():
        if int(b) <= count and dst.dtypes[int(b) - 1] in ("uint8", "uint16"):
            dst.write_colormap(int(b), {int(k): tuple(v) for k, v in cmap.items()})
    colorinterp = _same_band_count(meta.get("colorinterp"), count, "colorinterp")
    if colorinterp and "palette" not in colorinterp:
        interp = [ColorInterp[name] for name in colorinterp]
        if tuple(dst.colorinterp) != tuple(interp):
            dst.colorinterp = interp
    scales = _same_band_count(meta.get("scales"), count, "scales")
    offsets = _same_band_count(meta.get("offsets"), count, "offsets")
    if scales and any(s != 1.0 for s in scales):
        dst.scales = scales
    if offsets and any(o != 0.0 for o in offsets):
        dst.offsets = offsets
    units = _same_band_count(meta.get("units"), count, "units")
    if units and any(units):
        dst.units = tuple(u or "" for u in units)


def _driver_for(path: Path, cog: bool) -> str:
    name = path.name.lower()
    driver = next((d for suffix, d in _DRIVERS.items() if name.endswith(suffix)), None)
    if driver is None:
        raise UnsupportedFormatError(
            f"cannot write {str(path)!r} as a raster: use a .tif/.tiff (GeoTIFF) or .jp2 (JPEG 2000) suffix"
        )
    if cog:
        if driver != "GTiff":
            raise ConfigError(f"cog=True writes a Cloud-Optimised GeoTIFF; {str(path)!r} needs a .tif suffix")
        return "COG"
    return driver


def _cog_options(profile: dict[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    """COG driver creation options from the staging profile (block size, compression, predictor) and overrides."""
    block = int(profile.get("blockxsize") or 512) if profile.get("tiled") else 512
    if block != profile.get("blockysize") or block % 16:
        block = 512
    options: dict[str, Any] = {
        "blocksize": block,
        "bigtiff": "IF_SAFER",
        "compress": profile.get("compress") or "deflate",
    }
    predictor = profile.get("predictor")
    if predictor and options["compress"] in ("deflate", "lzw", "zstd"):
        options["predictor"] = {2: "STANDARD", 3: "FLOATING_POINT"}.get(int(predictor), "YES")
    options.update({k.lower(): v for k, v in overrides.items()})
    return options


def _adopt_sidecar(tmp: Path, target: Path) -> None:
    """Give a ``.aux.xml`` that GDAL wrote for what the format cannot hold the final file's name."""
    aux = tmp.with_name(tmp.name + ".aux.xml")
    if aux.exists():
        os.replace(aux, target.with_name(target.name + ".aux.xml"))


@contextlib.contextmanager
def raster_writer(
    path: str | os.PathLike[str], template: SpatialImage, *, cog: bool = False, overwrite: bool = False,
    **profile_overrides: Any,
) -> Iterator[Any]:
    """Open a rasterio dataset for writing pixels (all at once or window by window), atomically.

    The dataset is created from :func:`raster_profile` of ``template`` with
    its metadata (tags, descriptions, colour interpretation, colour maps,
    scales, offsets, units; not GDAL's ``STATISTICS_*`` band tags, which
    would describe other pixels) already written. Write pixels with
    ``dst.write(array, window=...)``. When the block ends, the file appears
    at ``path`` in one rename; a failure leaves nothing. With ``cog=True``
    (or a ``.jp2`` path) the pixels go to a staging GTiff beside the target,
    copied at the end by GDAL's COG (with overviews) or JPEG 2000 driver,
    so memory stays bounded by the windows written.

    Parameters
    ----------
    path : path
        ``.tif``/``.tiff`` or ``.jp2``.
    template : SpatialImage
        Grid, dtype, band count, CRS, nodata and metadata of the output; its
        array is not written (a zero-stride ``np.broadcast_to`` array will do).
    cog : bool
        Write a Cloud-Optimised GeoTIFF with internal overviews.
    overwrite : bool
        Replace an existing file at ``path`` (otherwise
        :class:`~coregister.errors.OutputExistsError`, before any work).
    **profile_overrides
        rasterio profile keys / GDAL creation options; with ``cog=True``,
        creation options of the COG driver (``blocksize``,
        ``overview_resampling``, ``compress`` ...).

    Yields
    ------
    rasterio.io.DatasetWriter

    Examples
    --------
    >>> import tempfile, pathlib
    >>> import numpy as np
    >>> from rasterio.windows import Window
    >>> from coregister import SpatialImage
    >>> template = SpatialImage(np.broadcast_to(np.zeros((), np.uint16), (64, 48)), origin=(5.0, -5.0),
    ...                         spacing=(10.0, 10.0), direction=np.diag([1.0, -1.0]), crs="EPSG:32633")
    >>> out = pathlib.Path(tempfile.mkdtemp()) / "tiles.tif"
    >>> with raster_writer(out, template) as dst:
    ...     for row in range(0, 64, 32):
    ...         dst.write(np.full((1, 32, 48), row, np.uint16), window=Window(0, row, 48, 32))
    >>> np.unique(read_raster(out).array).tolist()
    [0, 32]
    """
    with _open_writer(
        Path(path), template, cog=cog, same_pixels=False, overrides=profile_overrides, overwrite=overwrite
    ) as dst:
        yield dst


@contextlib.contextmanager
def _closed_quietly(dataset: Any, path: Path) -> Iterator[Any]:
    """``dataset``, closed at the end with what libtiff writes to stderr then (a full disk: "_tiffWriteProc: ...") logged.

    GDAL writes most pixels when the dataset closes; a failed write there is
    told by the size check and the error of :func:`~coregister._files.atomic_path`.
    """
    try:
        yield dataset
    finally:
        with captured_stderr(f"writing {path}"):
            dataset.close()


@contextlib.contextmanager
def _open_writer(
    path: Path, template: SpatialImage, *, cog: bool, same_pixels: bool, overrides: Mapping[str, Any], overwrite: bool
) -> Iterator[Any]:
    refuse_existing(path, overwrite=overwrite, fix=OVERWRITE_FIX)
    profile_overrides = dict(overrides)
    driver = _driver_for(path, cog)
    staged = driver in _COPY_ONLY
    dataset_overrides = {k: v for k, v in profile_overrides.items() if k.lower() in _DATASET_KEYS}
    if staged:
        profile = raster_profile(template, driver="GTiff", **dataset_overrides)
        if driver == "JP2OpenJPEG":
            raster_profile(template, driver=driver)  # refuses dtypes JPEG 2000 cannot store
        copy_options = (
            _cog_options(profile, {k: v for k, v in profile_overrides.items() if k.lower() not in _DATASET_KEYS})
            if driver == "COG"
            else {
                **_JP2_DEFAULTS,
                **{k.lower(): v for k, v in profile_overrides.items() if k.lower() not in _DATASET_KEYS},
            }
        )
        # The staging file is plain, tiled and uncompressed: fast to write and to copy.
        for key in ("compress", "predictor", "photometric", "interleave"):
            profile.pop(key, None)
        block = int(copy_options.get("blocksize", 512)) if driver == "COG" else 512
        profile.update(tiled=True, blockxsize=block, blockysize=block)
        if profile["count"] > 1:
            profile["interleave"] = "pixel"
    else:
        profile = raster_profile(template, driver=driver, **profile_overrides)
    with _gdal_env(), atomic_path(path, overwrite=overwrite, fix=OVERWRITE_FIX) as tmp:
        if not staged:
            with _closed_quietly(rasterio.open(tmp, "w", **profile), path) as dst:
                _write_metadata(dst, template, same_pixels=same_pixels)
                yield dst
        else:
            stage = tmp.with_name(tmp.name + ".stage.tif")
            try:
                with _closed_quietly(rasterio.open(stage, "w", **profile), path) as dst:
                    _write_metadata(dst, template, same_pixels=same_pixels)
                    yield dst
                with captured_stderr(f"writing {path}"):
                    rasterio.shutil.copy(stage, tmp, driver=driver, **copy_options)
            finally:
                for leftover in (stage, stage.with_name(stage.name + ".aux.xml"), stage.with_name(stage.name + ".msk")):
                    with contextlib.suppress(FileNotFoundError):
                        leftover.unlink()
        _adopt_sidecar(tmp, path)
    logger.debug("wrote %s (%s)", path, driver)


# --------------------------------------------------------------------------- writing
def _implied_valid(array: np.ndarray, nodata: float | None, colorinterp: Sequence[str] | None) -> np.ndarray:
    """The valid mask GDAL derives from a file holding ``array`` with ``nodata`` (and an alpha band)."""
    bands = array[..., np.newaxis] if array.ndim == 2 else array
    alpha = (
        [i for i, name in enumerate(colorinterp or ()) if name == "alpha"]
        if colorinterp and len(colorinterp) == bands.shape[-1]
        else []
    )
    data = [i for i in range(bands.shape[-1]) if i not in alpha] or list(range(bands.shape[-1]))
    if nodata is not None:
        values = bands[..., data]
        is_nodata = np.isnan(values) if math.isnan(nodata) else values == nodata
        return ~np.all(is_nodata, axis=-1)
    if alpha:
        return bands[..., alpha[0]] > 0
    return np.ones(bands.shape[:2], dtype=bool)


def write_raster(
    image: SpatialImage, path: str | os.PathLike[str], *, cog: bool = False, overwrite: bool = False,
    **profile_overrides: Any,
) -> Path:
    """Write a 2D image as GeoTIFF (or COG, or JPEG 2000), keeping its geometry, CRS, nodata, mask and metadata.

    The geotransform is the image geometry moved from pixel centres to
    corners (:func:`coregister.conventions.geometry_to_geotransform`); an
    image without CRS whose geometry is the plain pixel grid (origin 0,
    spacing 1, identity direction) is written without georeferencing, with
    its RPCs/GCPs when it carries them. The profile read from a raster
    (``image.meta``) is written back; a mask that the nodata value (or alpha
    band) does not already express is written as an internal mask band.

    Parameters
    ----------
    image : SpatialImage
        A 2D image; bands along a trailing channel axis.
    path : path
        ``.tif``/``.tiff`` or ``.jp2`` (lossless JPEG 2000). Written atomically.
    cog : bool
        Write a Cloud-Optimised GeoTIFF (GDAL's COG driver: tiled, with
        overviews; the COG driver's creation options may be given as
        ``profile_overrides``, e.g. ``overview_resampling="average"``).
    overwrite : bool
        Replace an existing file at ``path`` (otherwise
        :class:`~coregister.errors.OutputExistsError`, before any work).
    **profile_overrides
        rasterio profile keys and GDAL creation options (``compress="zstd"``,
        ``blockxsize=512`` ...) that win over the profile in ``image.meta``.

    Returns
    -------
    Path
        ``path``.

    Raises
    ------
    UnsupportedFormatError
        A 3D image (write it as ``.nii.gz`` or ``.mha``), or pixels the
        format cannot store.
    ConfigError
        A nodata value the dtype cannot hold, or ``cog=True`` with a non-TIFF path.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> import numpy as np
    >>> import rasterio
    >>> from coregister import SpatialImage
    >>> img = SpatialImage(np.ones((600, 600), np.float32), origin=(0.5, -0.5), spacing=(1.0, 1.0),
    ...                    direction=np.diag([1.0, -1.0]), crs="EPSG:3857")
    >>> path = write_raster(img, pathlib.Path(tempfile.mkdtemp()) / "cog.tif", cog=True, blocksize=256)
    >>> with rasterio.open(path) as ds:
    ...     ds.tags(ns="IMAGE_STRUCTURE")["LAYOUT"], ds.overviews(1)
    ('COG', [2, 4])
    """
    path = Path(path)
    if image.ndim != 2:
        raise UnsupportedFormatError(
            f"cannot write a {image.ndim}D image (shape {image.shape}) to {str(path)!r}: a raster holds one plane "
            "(with bands); write volumes as .nii.gz or .mha"
        )
    dtype = _write_dtype(image.dtype)
    array = image.array.astype(dtype, copy=False)
    bands = np.moveaxis(array, -1, 0) if image.has_channels else array[np.newaxis]
    mask = None
    if image.mask is not None:
        colorinterp = image.meta.get("colorinterp")
        if not np.array_equal(image.mask, _implied_valid(array, image.nodata, colorinterp)):
            mask = np.where(image.mask, np.uint8(255), np.uint8(0))
    if mask is not None and _driver_for(path, cog) == "JP2OpenJPEG":
        logger.warning("%s: JPEG 2000 cannot store a mask band; the mask is dropped (write a .tif to keep it)", path)
        mask = None
    source_profile = image.meta.get("profile") or {}
    same_pixels = (
        tuple(image.meta.get("source_shape") or ()) == image.shape and source_profile.get("dtype") == dtype.name
    )
    with _open_writer(
        path, image, cog=cog, same_pixels=same_pixels, overrides=profile_overrides, overwrite=overwrite
    ) as dst, captured_stderr(f"writing {path}"):  # libtiff's own line on a full disk: the error says it
        dst.write(bands)
        if mask is not None:
            dst.write_mask(mask)
    return path
