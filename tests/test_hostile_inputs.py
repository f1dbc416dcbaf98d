"""The catalogue of broken and hostile inputs: each case one clear error, of the expected class, on one line.

Every case builds its bad input in ``tmp_path`` (from a real file of
``../shared/data`` where a real base helps: truncated, bytes flipped,
headers edited with nibabel, pydicom or rasterio), then checks it twice:

* through the API: only the expected :class:`~coregister.errors.CoregisterError`
  subclass comes out (``pytest.raises(..., match=...)``);
* through the command line (``main([...])`` in this process): the expected
  exit code and exactly one line on stderr, ``coregister: error: ...``
  naming the problem (usage errors: ``coregister COMMAND: ...``).

Cases where the right behaviour is not an error (a sheared grid resampled
with a note, 4D read with a trailing time axis, images that do not meet
noted) are tested at the end. ``CASES`` is the catalogue; the closing note
of issue 15 lists it with its messages.
"""

from __future__ import annotations

import dataclasses
import gzip
import json
import os
import re
import shutil
import struct
import subprocess
import sys
import warnings
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pydicom
import pytest
import SimpleITK as sitk

import coregister as cr
from coregister.batch import read_pairs
from coregister.cli import EXIT_ERROR, EXIT_USAGE, main
from coregister.errors import (
    AmbiguousSeriesError,
    ConfigError,
    CoregisterError,
    GeometryError,
    MemoryLimitError,
    NonUniformSpacingError,
    RegistrationFailed,
    UnreadableInputError,
    UnsupportedFormatError,
)
from coregister.transforms import read_transform

ANATOMICAL = "medical/nibabel_anat_func/anatomical.nii"  # 33 x 41 x 25 int16, big-endian, 1.4 kB header + 68 kB
FOUR_D = "medical/nibabel_anat_func/example4d.nii.gz"
RAT_LUNG = "medical/itk_ratlung_2d/RatLungSlice1.mha"  # header + RatLungSlice1.raw, 128 x 128 uint8
RGB = "geospatial/rasterio_landsat7/RGB.byte.tif"
JP2 = "geospatial/arosics_s2_T33UUU/ref_S2A_20160608T153121_T33UUU_sub.jp2"
PNG = "medical/itk_brainweb_2d/BrainProtonDensitySliceBorder20.png"
PNG_MOVED = "medical/itk_brainweb_2d/BrainProtonDensitySliceShifted13x17y.png"
JPG = "medical/antspy/r16slice.jpg"
MR_SMALL = "medical/dicom_small/MR_small.dcm"
MULTIFRAME = "medical/dicom_small/emri_small.dcm"


@dataclasses.dataclass(frozen=True)
class Case:
    """One bad input: how to make it, what the API raises, what the command line says."""

    name: str
    build: Callable[[Path, Callable[[str], Path]], tuple[Callable[[], Any] | None, list[str]]]
    error: type[CoregisterError] | None  # None: the case is the command line's only (click usage errors)
    exit_code: int
    words: str  # a regular expression the error (and the stderr line) must match


# ------------------------------------------------------------------ builders
def _copy(data: Callable[[str], Path], relative: str, target: Path) -> Path:
    target.write_bytes(data(relative).read_bytes())
    return target


def _info(path: Path, *extra: str) -> list[str]:
    return ["info", str(path), *extra]


def _reader(path: Path, **options: Any) -> tuple[Callable[[], Any], list[str]]:
    return (lambda: cr.read(path, **options)), _info(path)


def _bytes(name: str, make: Callable[[Path, Callable[[str], Path]], bytes]) -> Callable[..., Any]:
    def build(tmp: Path, data: Callable[[str], Path]) -> tuple[Callable[[], Any], list[str]]:
        path = tmp / name
        path.write_bytes(make(tmp, data))
        return _reader(path)

    return build


def _anatomical(data: Callable[[str], Path]) -> bytes:
    return data(ANATOMICAL).read_bytes()


def _nifti_dims(dims: list[int]) -> Callable[[Path, Callable[[str], Path]], bytes]:
    def make(tmp: Path, data: Callable[[str], Path]) -> bytes:
        raw = bytearray(_anatomical(data))
        struct.pack_into(">8h", raw, 40, *dims)  # anatomical.nii is big-endian
        return bytes(raw)

    return make


def _nifti_pixdim(pixdim: list[float]) -> Callable[..., Any]:
    """anatomical.nii read through its qform (sform code 0) with the given pixdim."""

    def build(tmp: Path, data: Callable[[str], Path]) -> tuple[Callable[[], Any], list[str]]:
        source = nib.load(data(ANATOMICAL))
        image = nib.Nifti1Image(np.asarray(source.dataobj), None, source.header.copy())
        image.header.set_sform(None, code=0)
        image.header["qform_code"] = 1
        image.header["pixdim"] = pixdim
        path = tmp / "edited.nii"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            image.to_filename(path)
        return _reader(path)

    return build


def _infinite_sform(tmp: Path, data: Callable[[str], Path]) -> tuple[Callable[[], Any], list[str]]:
    """anatomical.nii with an infinite first sform row (nibabel refuses to write one: the bytes are edited)."""
    raw = bytearray(_anatomical(data))
    struct.pack_into(">4f", raw, 280, np.inf, 0.0, 0.0, 0.0)  # srow_x, big-endian like the rest of the header
    path = tmp / "inf.nii"
    path.write_bytes(bytes(raw))
    return _reader(path)


def _claims_1e12_gz(tmp: Path, data: Callable[[str], Path]) -> bytes:
    header = nib.Nifti1Header()
    header.set_data_shape((10000, 10000, 10000))
    header.set_data_dtype(np.int16)
    return gzip.compress(header.binaryblock + bytes(4) + bytes(1000))


def _nifti_volume(tmp: Path, data: Callable[[str], Path]) -> tuple[Callable[[], Any], list[str]]:
    path = data(FOUR_D)
    return (lambda: cr.read(path, volume=9)), _info(path, "--volume", "9")


def _mha(header_edit: Callable[[str], str], pixels: bytes) -> Callable[..., Any]:
    def build(tmp: Path, data: Callable[[str], Path]) -> tuple[Callable[[], Any], list[str]]:
        text = data(RAT_LUNG).read_text().split("ElementDataFile")[0]
        path = tmp / "edited.mha"
        path.write_bytes(header_edit(text).encode() + b"ElementDataFile = LOCAL\n" + pixels)
        return _reader(path)

    return build


def _geotiff(transform: Any) -> Callable[..., Any]:
    def build(tmp: Path, data: Callable[[str], Path]) -> tuple[Callable[[], Any], list[str]]:
        import rasterio

        path = tmp / "absurd.tif"
        with rasterio.open(path, "w", driver="GTiff", width=32, height=32, count=1, dtype="uint8", crs="EPSG:32633",
                           transform=transform) as dst:
            dst.write(np.ones((1, 32, 32), np.uint8))
        return _reader(path)

    return build


def _sparse_geotiff(tmp: Path, data: Callable[[str], Path]) -> tuple[Callable[[], Any], list[str]]:
    """A 200 kB GeoTIFF whose header claims 40000 x 40000 pixels (missing tiles read as 0): 1.6 GB of uint8."""
    path = sparse_geotiff(tmp / "sparse.tif")

    def api() -> Any:
        os.environ["COREGISTER_MAX_MEMORY"] = "500M"
        try:
            return cr.read(path)
        finally:
            del os.environ["COREGISTER_MAX_MEMORY"]

    return api, ["--max-memory", "500M", *_info(path)]


def sparse_geotiff(path: Path) -> Path:
    import rasterio
    from affine import Affine
    from rasterio.windows import Window

    with rasterio.open(path, "w", driver="GTiff", width=40000, height=40000, count=1, dtype="uint8", crs="EPSG:32633",
                       transform=Affine(10, 0, 300000, 0, -10, 5000000), tiled=True, sparse_ok=True,
                       compress="deflate") as dst:
        dst.write(np.ones((1, 256, 256), np.uint8), window=Window(0, 0, 256, 256))
    return path


def _geo_pair(target: str) -> Callable[..., Any]:
    """``geo coreg`` of a small georeferenced raster against a broken partner."""

    def build(tmp: Path, data: Callable[[str], Path]) -> tuple[Callable[[], Any], list[str]]:
        from pyproj import CRS
        from skimage import data as skdata

        moon = skdata.moon()[:128, :128]

        def raster(values: np.ndarray, origin: tuple[float, float] = (400005.0, 5799995.0), crs: Any = 32633,
                   nodata: float | None = None) -> cr.SpatialImage:
            return cr.SpatialImage(values, origin=origin, spacing=(10.0, 10.0), direction=np.diag([1.0, -1.0]),
                                   crs=None if crs is None else CRS.from_epsg(crs), nodata=nodata)

        reference = cr.write(raster(moon), tmp / "reference.tif")
        partner = {
            "no-crs": raster(moon, crs=None),
            "disjoint": raster(moon, origin=(900005.0, 5799995.0)),
            "all-nodata": raster(np.zeros_like(moon), nodata=0),
        }[target]
        path = cr.write(partner, tmp / f"{target}.tif")
        output = tmp / "corrected.tif"
        return (lambda: cr.geo.coregister(reference, path, mode="shift")), [
            "geo", "coreg", str(reference), str(path), "-o", str(output)]

    return build


def _png_header(width: int, height: int) -> Callable[[Path, Callable[[str], Path]], bytes]:
    def make(tmp: Path, data: Callable[[str], Path]) -> bytes:
        raw = bytearray(data(PNG).read_bytes())
        struct.pack_into(">II", raw, 16, width, height)
        return bytes(raw)

    return make


def _half(relative: str) -> Callable[[Path, Callable[[str], Path]], bytes]:
    def make(tmp: Path, data: Callable[[str], Path]) -> bytes:
        raw = data(relative).read_bytes()
        return raw[: len(raw) // 2]

    return make


def _jp2_corrupt(tmp: Path, data: Callable[[str], Path]) -> bytes:
    """The code stream's size marker (SIZ) scrambled. (Noise in the middle of the stream is decoded as noise:
    OpenJPEG is made to survive it, and so is the reader.)"""
    raw = bytearray(data(JP2).read_bytes())
    start = raw.find(b"\xff\x4f\xff\x51") + 4
    raw[start : start + 36] = np.random.default_rng(15).integers(0, 256, 36, dtype=np.uint8).tobytes()
    return bytes(raw)


# --------------------------------------------------------------- DICOM series
def dicom_series(folder: Path) -> list[Path]:
    """A small uniform CT-like series (6 slices of 16 x 16, 2 mm apart) written by coregister."""
    image = cr.SpatialImage((np.arange(6 * 16 * 16) % 251).reshape(6, 16, 16).astype(np.int16), origin=(0, 0, 0),
                            spacing=(1, 1, 2))
    cr.write(image, folder, format="dicom")
    return sorted(folder.iterdir())


def _dicom(edit: Callable[[list[Path], Path, Callable[[str], Path]], None]) -> Callable[..., Any]:
    def build(tmp: Path, data: Callable[[str], Path]) -> tuple[Callable[[], Any], list[str]]:
        folder = tmp / "series"
        files = dicom_series(folder)
        edit(files, folder, data)
        return _reader(folder)

    return build


def _truncate(files: list[Path], keep: int | None = None) -> None:
    raw = files[2].read_bytes()
    files[2].write_bytes(raw[: keep if keep is not None else len(raw) - 100])


def _corrupt(files: list[Path]) -> None:
    raw = bytearray(files[2].read_bytes())
    raw[300:700] = np.random.default_rng(1).integers(0, 256, 400, dtype=np.uint8).tobytes()
    files[2].write_bytes(bytes(raw))


def _set_tag(files: list[Path], keyword: str, value: Any, vr: str | None = None, every: bool = False) -> None:
    for file in files if every else files[2:3]:
        ds = pydicom.dcmread(file)
        tag = pydicom.datadict.tag_for_keyword(keyword)
        with warnings.catch_warnings():  # pydicom warns of the value this case means to write
            warnings.simplefilter("ignore")
            ds[tag] = pydicom.DataElement(tag, vr or pydicom.datadict.dictionary_VR(tag), value)
            ds.save_as(file)


def _two_multiframe(tmp: Path, data: Callable[[str], Path]) -> tuple[Callable[[], Any], list[str]]:
    folder = tmp / "frames"
    folder.mkdir()
    for name in ("a.dcm", "b.dcm"):
        _copy(data, MULTIFRAME, folder / name)
    return _reader(folder)


# ------------------------------------------------------------ registrations
def _register(kind: str) -> Callable[..., Any]:
    def build(tmp: Path, data: Callable[[str], Path]) -> tuple[Callable[[], Any], list[str]]:
        fixed = cr.read(data(PNG))
        if kind == "2d-3d":
            moving_path = data(ANATOMICAL)
        else:
            values = {"constant": np.full(fixed.shape, 7.0, np.float32),
                      "all-nan": np.full(fixed.shape, np.nan, np.float32)}[kind]
            moving_path = cr.write(fixed.replace(array=values), tmp / f"{kind}.mha")
        moving = cr.read(moving_path)
        return (lambda: cr.register(fixed, moving, preset="translation")), [
            "register", str(data(PNG)), str(moving_path), "-o", str(tmp / "out"), "--preset", "translation"]

    return build


def _series_as_moving(tmp: Path, data: Callable[[str], Path]) -> tuple[Callable[[], Any], list[str]]:
    """A 4D series where a 3D image is expected: its first volume (a 3D file) against the whole series."""
    first = cr.write(cr.read(data(FOUR_D), volume=0), tmp / "volume0.nii.gz")
    return (lambda: cr.register(cr.read(first), cr.read(data(FOUR_D)), preset="translation")), [
        "register", str(first), str(data(FOUR_D)), "-o", str(tmp / "out"), "--preset", "translation"]


# --------------------------------------------------------------- transforms
def _transform_file(name: str, text: str, moving: str = PNG) -> Callable[..., Any]:
    def build(tmp: Path, data: Callable[[str], Path]) -> tuple[Callable[[], Any], list[str]]:
        path = tmp / name
        path.write_text(text)
        return (lambda: read_transform(path)), [
            "apply", str(path), str(data(moving)), "--reference", str(data(moving)), "-o", str(tmp / "out.png")]

    return build


def _itk(kind: str, parameters: str, fixed: str) -> str:
    return (f"#Insight Transform File V1.0\n#Transform 0\nTransform: {kind}\nParameters: {parameters}\n"
            f"FixedParameters: {fixed}\n")


def _json(value: Any) -> str:
    return json.dumps(value)


def _dimension_mismatch(tmp: Path, data: Callable[[str], Path]) -> tuple[Callable[[], Any], list[str]]:
    path = cr.Translation([1.0, 2.0, 3.0]).save(tmp / "three_d.tfm")
    fixed = cr.read(data(PNG))
    return (lambda: cr.apply(read_transform(path), fixed, reference=fixed)), [
        "apply", str(path), str(data(PNG)), "--reference", str(data(PNG)), "-o", str(tmp / "out.png")]


# ------------------------------------------------------- displacement fields
def _field_file(name: str, make: Callable[[], bytes], max_memory: str | None = None) -> Callable[..., Any]:
    """A displacement-field image given to ``cr.read_transform`` and to ``coregister apply`` (3D images)."""

    def build(tmp: Path, data: Callable[[str], Path]) -> tuple[Callable[[], Any], list[str]]:
        path = tmp / name
        path.write_bytes(make())

        def api() -> Any:
            if max_memory is not None:
                os.environ["COREGISTER_MAX_MEMORY"] = max_memory
            try:
                return cr.read_transform(path)
            finally:
                os.environ.pop("COREGISTER_MAX_MEMORY", None)

        return api, [*(["--max-memory", max_memory] if max_memory else []), "apply", str(path), str(data(ANATOMICAL)),
                     "--reference", str(data(ANATOMICAL)), "-o", str(tmp / "out.nii.gz")]

    return build


def _field_header_12gb() -> bytes:
    """An ANTs-style warp header (x, y, z, 1, 3 float32, intent vector) claiming 1000^3 vectors, 1 kB of data, gzipped."""
    header = nib.Nifti1Header()
    header.set_data_shape((1000, 1000, 1000, 1, 3))
    header.set_data_dtype(np.float32)
    header.set_intent("vector")
    return gzip.compress(header.binaryblock + bytes(4) + bytes(1000))


def _field_mha_zlib(size: int) -> bytes:
    """A compressed MetaImage field of size^3 float64 vectors (zeros: a few kB of zlib hold them all)."""
    header = ("ObjectType = Image\nNDims = 3\nBinaryData = True\nBinaryDataByteOrderMSB = False\n"
              "CompressedData = True\nElementSpacing = 1 1 1\nOffset = 0 0 0\nTransformMatrix = 1 0 0 0 1 0 0 0 1\n"
              f"DimSize = {size} {size} {size}\nElementNumberOfChannels = 3\nElementType = MET_DOUBLE\n"
              "ElementDataFile = LOCAL\n")
    return header.encode() + zlib.compress(bytes(size**3 * 3 * 8))


# --------------------------------------------------------- pairs and config
def _pairs(text: str) -> Callable[..., Any]:
    def build(tmp: Path, data: Callable[[str], Path]) -> tuple[Callable[[], Any], list[str]]:
        folder = tmp / "study"
        folder.mkdir()
        path = folder / "pairs.csv"
        path.write_text(text)
        return (lambda: read_pairs(path)), ["batch", str(path), "-o", str(tmp / "out"), "--workers", "1", "--threaded"]

    return build


def _config(text: str) -> Callable[..., Any]:
    def build(tmp: Path, data: Callable[[str], Path]) -> tuple[None, list[str]]:
        folder = tmp / "settings"
        folder.mkdir()
        path = folder / "run.toml"
        path.write_text(text)
        return None, ["--config", str(path), "register", str(data(PNG)), str(data(PNG_MOVED)), "-o", str(tmp / "out")]

    return build


def _gcps(tmp: Path, data: Callable[[str], Path]) -> tuple[Callable[[], Any], list[str]]:
    path = tmp / "gcps.csv"
    path.write_text("pixel,line,x,y\n0,0,101985,2826915\n10,ten,339315,2826915\n")
    return (lambda: cr.geo.georeference(data(PNG), gcps=path, crs="EPSG:32618")), [
        "geo", "georef", str(data(PNG)), "--gcps", str(path), "--crs", "EPSG:32618", "-o", str(tmp / "out.tif")]


# ---------------------------------------------------------------- file kinds
def _fifo(tmp: Path, data: Callable[[str], Path]) -> tuple[Callable[[], Any], list[str]]:
    path = tmp / "scan.nii"
    os.mkfifo(path)
    return _reader(path)


def _loop(tmp: Path, data: Callable[[str], Path]) -> tuple[Callable[[], Any], list[str]]:
    os.symlink(tmp / "b.nii", tmp / "a.nii")
    os.symlink(tmp / "a.nii", tmp / "b.nii")
    return _reader(tmp / "a.nii")


def _dangling(tmp: Path, data: Callable[[str], Path]) -> tuple[Callable[[], Any], list[str]]:
    os.symlink(tmp / "gone.nii", tmp / "scan.nii")
    return _reader(tmp / "scan.nii")


CASES = [
    # NIfTI
    Case("nifti-empty", _bytes("empty.nii", lambda t, d: b""), UnreadableInputError, EXIT_ERROR, r"is empty \(0 bytes\)"),
    Case("nifti-truncated", _bytes("cut.nii", _half(ANATOMICAL)), UnreadableInputError, EXIT_ERROR,
         r"not a readable NIfTI file: it is truncated or its header is wrong .*claims 67.7 kB.*holds 34 kB"),
    Case("nifti-wrong-magic", _bytes("magic.nii", lambda t, d: _anatomical(d)[:344] + b"xyz\0" + _anatomical(d)[348:]),
         UnreadableInputError, EXIT_ERROR, r"not a readable NIfTI file"),
    Case("nifti-gz-truncated", _bytes("cut.nii.gz", lambda t, d: gzip.compress(_anatomical(d))[:2000]),
         UnreadableInputError, EXIT_ERROR, r"is truncated or corrupt: its data could not be read"),
    Case("nifti-zero-dimension", _bytes("zero.nii", _nifti_dims([3, 33, 0, 25, 1, 1, 1, 1])), UnreadableInputError,
         EXIT_ERROR, r"dimensions \(33, 0, 25\) include 0 or a negative size"),
    Case("nifti-negative-dimension", _bytes("negative.nii", _nifti_dims([3, 33, -41, 25, 1, 1, 1, 1])),
         UnreadableInputError, EXIT_ERROR, r"include 0 or a negative size"),
    Case("nifti-huge-dimensions", _bytes("huge.nii", _nifti_dims([3, 1024, 1024, 1024, 1, 1, 1, 1])),
         UnreadableInputError, EXIT_ERROR, r"claims 2.15 GB of pixels; the file holds 68 kB"),
    Case("nifti-1e12-voxels-gz", _bytes("bomb.nii.gz", _claims_1e12_gz), UnreadableInputError, EXIT_ERROR,
         r"claims 2 TB of pixels"),
    Case("nifti-nan-spacing", _nifti_pixdim([1, np.nan, 1, 1, 1, 1, 1, 1]), GeometryError, EXIT_ERROR,
         r"its qform holds values that are not finite"),
    Case("nifti-zero-spacing", _nifti_pixdim([1, 0, 1, 1, 1, 1, 1, 1]), GeometryError, EXIT_ERROR,
         r"voxel size of 0 or NaN"),
    Case("nifti-infinite-sform", _infinite_sform, GeometryError, EXIT_ERROR, r"its sform holds values that are not finite"),
    Case("nifti-4d-volume-out-of-range", _nifti_volume, ConfigError, EXIT_ERROR, r"volume=9 is out of range"),
    # MetaImage
    Case("mha-empty", _bytes("empty.mha", lambda t, d: b""), UnreadableInputError, EXIT_ERROR, r"is empty"),
    Case("mha-truncated", _mha(lambda h: h, bytes(1000)), UnreadableInputError, EXIT_ERROR,
         r"claims 16.4 kB of pixels; the file holds 1(\.\d+)? kB after the header"),
    Case("mha-wrong-magic", _bytes("garbage.mha", lambda t, d: b"garbage\x00\x01" * 30), UnreadableInputError,
         EXIT_ERROR, r"could not be read by SimpleITK"),
    Case("mha-huge-dimensions", _mha(lambda h: re.sub(r"DimSize = .*", "DimSize = 100000 100000", h), bytes(100)),
         UnreadableInputError, EXIT_ERROR, r"claims 10 GB of pixels"),
    Case("mha-zero-dimension", _mha(lambda h: re.sub(r"DimSize = .*", "DimSize = 0 10", h), bytes(100)),
         UnreadableInputError, EXIT_ERROR, r"size \(0, 10\) includes 0"),
    Case("mha-nan-spacing", _mha(lambda h: re.sub(r"ElementSpacing = .*", "ElementSpacing = nan 1", h), bytes(16384)),
         UnreadableInputError, EXIT_ERROR, r"Refusing to change spacing"),
    # GeoTIFF, TIFF, JPEG 2000
    Case("tif-empty", _bytes("empty.tif", lambda t, d: b""), UnreadableInputError, EXIT_ERROR, r"is empty"),
    Case("tif-truncated", _bytes("cut.tif", lambda t, d: d(RGB).read_bytes()[:20000]), UnreadableInputError,
         EXIT_ERROR, r"GDAL cannot read the raster"),
    Case("tif-wrong-magic", _bytes("magic.tif", lambda t, d: b"XX" + d(RGB).read_bytes()[2:]), UnreadableInputError,
         EXIT_ERROR, r"not recognized as being in a supported file format"),
    Case("geotiff-nan-geotransform", _geotiff((float("nan"), 0.0, 100.0, 0.0, -10.0, 100.0)), GeometryError,
         EXIT_ERROR, r"absurd.tif' has an unusable geotransform \(nan, .*degenerate affine"),
    Case("geotiff-huge-geotransform", _geotiff((1e300, 0.0, 1e300, 0.0, -1e300, 100.0)), GeometryError, EXIT_ERROR,
         r"has an unusable geotransform \(1e\+300, .*column lengths \[inf, inf\]"),
    Case("geotiff-sparse-40000x40000", _sparse_geotiff, MemoryLimitError, EXIT_ERROR,
         r"40000 x 40000 pixels.*would need 6.4 GB, more than the 500 MB allowed"),
    Case("jp2-truncated", _bytes("cut.jp2", _half(JP2)), UnreadableInputError, EXIT_ERROR, r"truncated or corrupt"),
    Case("jp2-corrupt", _bytes("corrupt.jp2", _jp2_corrupt), UnreadableInputError, EXIT_ERROR,
         r"GDAL cannot read the raster .*opj_read_header\(\) failed"),
    Case("geotiff-no-crs", _geo_pair("no-crs"), GeometryError, EXIT_ERROR, r"has no CRS"),
    Case("geotiff-disjoint-footprints", _geo_pair("disjoint"), RegistrationFailed, EXIT_ERROR, r"does not overlap"),
    Case("geotiff-all-nodata", _geo_pair("all-nodata"), RegistrationFailed, EXIT_ERROR, r"does not overlap"),
    # PNG and JPEG
    Case("png-empty", _bytes("empty.png", lambda t, d: b""), UnreadableInputError, EXIT_ERROR, r"is empty"),
    Case("png-truncated", _bytes("cut.png", _half(PNG)), UnreadableInputError, EXIT_ERROR, r"cannot decode"),
    Case("png-wrong-magic", _bytes("magic.png", lambda t, d: b"NOTPNG" + d(PNG).read_bytes()[6:]),
         UnreadableInputError, EXIT_ERROR, r"cannot decode"),
    Case("png-huge-header", _bytes("huge.png", _png_header(100000, 100000)), UnreadableInputError, EXIT_ERROR,
         r"100000 x 100000 pixels"),
    Case("png-zero-size", _bytes("zero.png", _png_header(0, 100)), UnreadableInputError, EXIT_ERROR,
         r"broken header: 0 x 100 pixels"),
    Case("jpg-truncated", _bytes("cut.jpg", _half(JPG)), UnreadableInputError, EXIT_ERROR, r"cannot decode"),
    # DICOM
    Case("dicom-mixed-series", _dicom(lambda f, folder, d: _copy(d, MR_SMALL, folder / "mr.dcm") and None),
         AmbiguousSeriesError, EXIT_ERROR, r"holds 2 DICOM series"),
    Case("dicom-missing-slice", _dicom(lambda f, folder, d: f[2].unlink()), NonUniformSpacingError, EXIT_ERROR,
         r"IM000002.dcm and IM000004.dcm .* are 4 mm apart where the median gap is 2 mm"),
    Case("dicom-duplicated-slice", _dicom(lambda f, folder, d: shutil.copy(f[1], folder / "copy.dcm") and None),
         GeometryError, EXIT_ERROR, r"lie at the same position"),
    Case("dicom-truncated-slice", _dicom(lambda f, folder, d: _truncate(f)), UnreadableInputError, EXIT_ERROR,
         r"IM000003.dcm' belongs to series .* but GDCM cannot read it"),
    Case("dicom-cut-header", _dicom(lambda f, folder, d: _truncate(f, 600)), UnreadableInputError, EXIT_ERROR,
         r"IM000003.dcm' in the DICOM folder is cut short or corrupt"),
    Case("dicom-corrupt-slice", _dicom(lambda f, folder, d: _corrupt(f)), UnreadableInputError, EXIT_ERROR,
         r"IM000003.dcm' in the DICOM folder"),
    Case("dicom-malformed-position", _dicom(lambda f, folder, d: _set_tag(f, "ImagePositionPatient", "abc\\1\\2", "LO")),
         GeometryError, EXIT_ERROR, r"IM000003.dcm has ImagePositionPatient .*not three finite numbers"),
    Case("dicom-degenerate-orientation",
         _dicom(lambda f, folder, d: _set_tag(f, "ImageOrientationPatient", [1, 0, 0, 1, 0, 0])),
         GeometryError, EXIT_ERROR, r"IM000003.dcm has ImageOrientationPatient"),
    Case("dicom-nan-rescale", _dicom(lambda f, folder, d: _set_tag(f, "RescaleSlope", "NaN", every=True)),
         UnreadableInputError, EXIT_ERROR, r"RescaleSlope nan"),
    Case("dicom-huge-rows", _dicom(lambda f, folder, d: [_set_tag(f, k, 60000, every=True) for k in ("Rows", "Columns")]
                                   and None),
         UnreadableInputError, EXIT_ERROR, r"60000 x 60000 x 1 frames, claims 7.2 GB"),
    Case("dicom-multiframe-split", _two_multiframe, UnsupportedFormatError, EXIT_ERROR,
         r"split over 2 multi-frame files"),
    Case("dicom-empty-folder", lambda t, d: ((t / "none").mkdir(), _reader(t / "none"))[1], UnreadableInputError,
         EXIT_ERROR, r"no DICOM series in folder"),
    # registrations of pairs that cannot be registered
    Case("register-2d-against-3d", _register("2d-3d"), GeometryError, EXIT_ERROR, r"2D .* 3D|same dimension"),
    Case("register-4d-against-3d", _series_as_moving, GeometryError, EXIT_ERROR,
         r"moving image .*example4d.nii.gz'\) is a 4D series of 2 volumes of 128 x 96 x 24, not one 3D image; "
         r"realign its volumes with coregister\.motion\(\.\.\.\) \(the `coregister motion` command\)"),
    Case("register-constant-image", _register("constant"), RegistrationFailed, EXIT_ERROR,
         r"moving image is constant \(every valid voxel is 7\)"),
    Case("register-all-nan-image", _register("all-nan"), GeometryError, EXIT_ERROR, r"moving mask is empty"),
    # transform files
    Case("tfm-too-few-parameters", _transform_file("short.tfm", _itk("Euler2DTransform_double_2_2", "0.1 1", "0 0")),
         UnreadableInputError, EXIT_ERROR, r"has 2 parameters; the type has 3"),
    Case("tfm-too-many-parameters",
         _transform_file("long.tfm", _itk("AffineTransform_double_2_2", "1 0 0 1 0 0 5 5 5", "0 0")),
         UnreadableInputError, EXIT_ERROR, r"has 9 parameters; the type has 6"),
    Case("tfm-wrong-dimension", _transform_file("dims.tfm", _itk("AffineTransform_double_2_3", "1 0 0 1 0 0", "0 0")),
         UnsupportedFormatError, EXIT_ERROR, r"maps 2D to 3D"),
    Case("tfm-nan-parameters", _transform_file("nan.tfm", _itk("TranslationTransform_double_2_2", "nan 1", "")),
         GeometryError, EXIT_ERROR, r"not all finite"),
    Case("tfm-unknown-type", _transform_file("odd.tfm", _itk("WarpTransform_double_2_2", "1 2", "")),
         UnreadableInputError, EXIT_ERROR, r"unknown type 'WarpTransform_double_2_2'"),
    Case("json-wrong-shape",
         _transform_file("shape.json", _json({"type": "Rigid", "ndim": 2, "matrix": [[1, 0, 0], [0, 1, 0]],
                                              "translation": [0, 0], "center": [0, 0]})),
         GeometryError, EXIT_ERROR, r"'matrix' of a 2D Rigid transform has shape \(2, 3\); expected \(2, 2\)"),
    Case("json-unknown-type", _transform_file("odd.json", _json({"type": "Warp", "ndim": 2})), UnsupportedFormatError,
         EXIT_ERROR, r"unknown transform type 'Warp'"),
    Case("json-nan", _transform_file("nan.json", '{"type": "Translation", "ndim": 2, "translation": [NaN, 1]}'),
         GeometryError, EXIT_ERROR, r"'translation' of a Translation transform is not finite"),
    Case("json-not-a-transform", _transform_file("list.json", "[1, 2, 3]"), UnsupportedFormatError, EXIT_ERROR,
         r"a transform is a JSON object"),
    Case("transform-dimension-mismatch", _dimension_mismatch, GeometryError, EXIT_ERROR, r"3D"),
    Case("field-huge-header", _field_file("huge1Warp.nii.gz", _field_header_12gb), UnreadableInputError, EXIT_ERROR,
         r"huge1Warp.nii.gz' is not a readable displacement field file: .*claims 12 GB of pixels; the file's 64 B of "
         r"compressed data expand to 66 kB at most"),
    Case("field-over-the-memory-limit", _field_file("zeros.mha", lambda: _field_mha_zlib(100), max_memory="20M"),
         MemoryLimitError, EXIT_ERROR,
         r"reading '.*zeros.mha' \(header: size \(100, 100, 100\), vector of 64-bit float, 3 components\) would need "
         r"48 MB, more than the 20 MB allowed \(COREGISTER_MAX_MEMORY=20M\)"),
    # pairs and configuration files
    Case("pairs-missing-column", _pairs("fixed,image\na.png,b.png\n"), ConfigError, EXIT_ERROR,
         r"lacks column\(s\) \['moving'\]"),
    Case("pairs-unknown-column", _pairs("fixed,moving,colour\na.png,b.png,red\n"), ConfigError, EXIT_ERROR,
         r"unknown column\(s\) \['colour'\]"),
    Case("pairs-path-outside", _pairs("fixed,moving\n../../etc/a.png,b.png\n"), ConfigError, EXIT_ERROR,
         r"row 1: the 'fixed' path '../../etc/a.png' leads out of the pairs file's folder"),
    Case("pairs-name-outside", _pairs("fixed,moving,name\na.png,b.png,../escape\n"), ConfigError, EXIT_ERROR,
         r"name '../escape' is not a plain folder name"),
    Case("config-unknown-key", _config('[register]\npresett = "affine"\n'), None, EXIT_USAGE, r"has no option 'presett'"),
    Case("config-path-outside", _config('[register]\nfixed-mask = "../../mask.png"\n'), None, EXIT_USAGE,
         r"leads out of the configuration file's folder"),
    Case("gcps-not-numbers", _gcps, ConfigError, EXIT_ERROR, r"row 2: .* are not four numbers"),
    # what is not a file
    Case("fifo", _fifo, UnreadableInputError, EXIT_ERROR, r"is a FIFO \(named pipe\), not a regular file"),
    Case("symlink-loop", _loop, UnreadableInputError, EXIT_ERROR, r"is a loop of symbolic links"),
    Case("dangling-symlink", _dangling, UnreadableInputError, EXIT_ERROR, r"symbolic link to .* which does not exist"),
]


def test_the_catalogue_is_complete() -> None:
    names = [c.name for c in CASES]
    assert len(names) == len(set(names)) and len(names) >= 40


@pytest.mark.parametrize("case", [c for c in CASES if c.error is not None], ids=lambda c: c.name)
def test_the_api_raises_the_expected_error(case: Case, tmp_path: Path, data: Callable[[str], Path]) -> None:
    api, _ = case.build(tmp_path, data)
    assert api is not None and case.error is not None
    with pytest.raises(case.error, match=case.words) as caught:
        api()
    assert isinstance(caught.value, CoregisterError)


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_the_command_line_says_it_in_one_line(
    case: Case, tmp_path: Path, data: Callable[[str], Path], capsys: pytest.CaptureFixture[str]
) -> None:
    _, argv = case.build(tmp_path, data)
    capsys.readouterr()
    assert main(argv) == case.exit_code
    captured = capsys.readouterr()
    lines = [line for line in captured.err.splitlines() if line.strip()]
    assert len(lines) == 1, lines
    prefix = "coregister: error: " if case.exit_code == EXIT_ERROR else "coregister"
    assert lines[0].startswith(prefix) and re.search(case.words, lines[0]), lines[0]
    assert "Traceback" not in captured.err and captured.out == ""


@pytest.mark.parametrize("way", ["register-nibabel", "register-simpleitk", "prepare", "sitk-engine", "ecc-engine"])
def test_a_4d_series_is_refused_on_every_way_in(way: str, data: Callable[[str], Path]) -> None:
    """Not only ``register`` on a read file: the user's objects, the pipeline's ``prepare`` and the engines refuse it."""
    from coregister.engines import get_engine
    from coregister.pipeline import configure
    from coregister.pipeline.attempt import prepare

    path = data(FOUR_D)
    first = cr.read(path, volume=0)
    series = cr.read(path)
    calls: dict[str, Callable[[], Any]] = {
        "register-nibabel": lambda: cr.register(first, nib.load(path), preset="translation"),
        "register-simpleitk": lambda: cr.register(first, sitk.ReadImage(str(path)), preset="translation"),
        "prepare": lambda: prepare(first, series),
        "sitk-engine": lambda: get_engine("sitk").run(first, series, configure("translation", ndim=3)),
        "ecc-engine": lambda: get_engine("ecc").run(first, series, configure("translation", ndim=3)),
    }
    with pytest.raises(GeometryError, match=r"the moving image .*is a 4D series of 2 volumes of 128 x 96 x 24.*"
                                            r"coregister\.motion\(\.\.\.\) \(the `coregister motion` command\)"):
        calls[way]()


def test_a_4d_simpleitk_image_is_a_series_like_the_file() -> None:
    volumes = np.arange(2 * 3 * 4 * 5, dtype=np.float32).reshape(5, 4, 3, 2)  # (t, z, y, x)
    image = sitk.JoinSeries([sitk.GetImageFromArray(volume) for volume in volumes])  # a 4D scalar image
    image.SetSpacing((2.0, 3.0, 4.0, 2000.0))
    image.SetOrigin((1.0, 2.0, 3.0, 0.0))
    series = cr.SpatialImage.from_sitk(image)
    assert series.meta["trailing_axis"] == "time" and series.n_channels == 5
    assert series.spacing == (2.0, 3.0, 4.0) and series.origin == (1.0, 2.0, 3.0)
    np.testing.assert_array_equal(series.array, np.moveaxis(volumes, 0, -1))


# ------------------------------------------------------------------ not errors
def test_a_sheared_grid_is_registered_on_the_nearest_orthonormal_grid_with_a_note(data: Callable[[str], Path]) -> None:
    fixed = cr.read(data(ANATOMICAL))
    shear = np.array([[1.0, 0.15, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
    sheared = fixed.replace(direction=np.asarray(fixed.direction) @ shear)
    result = cr.register(fixed, sheared, preset="translation")
    assert any("sheared" in w and "nearest orthonormal grid" in w for w in result.warnings), result.warnings


def test_images_that_do_not_meet_are_noted(data: Callable[[str], Path]) -> None:
    fixed = cr.read(data(ANATOMICAL))
    far = fixed.replace(origin=tuple(np.asarray(fixed.origin) + 1000.0))
    result = cr.register(fixed, far, preset="translation")
    assert any("do not overlap in physical space" in w for w in result.warnings), result.warnings


def test_a_4d_series_reads_as_a_volume_with_a_trailing_time_axis(data: Callable[[str], Path]) -> None:
    image = cr.read(data(FOUR_D))
    assert image.ndim == 3 and image.array.shape == (*image.shape, 2)
    assert image.meta["trailing_axis"] == "time" and image.meta["nifti"]["time_step"] == 2000.0
    assert cr.read(data(FOUR_D), volume=1).array.ndim == 3


def test_negative_voxel_sizes_are_read_as_their_size_with_one_warning(
    tmp_path: Path, data: Callable[[str], Path]
) -> None:
    api, _ = _nifti_pixdim([1, -2, 1, 1, 1, 1, 1, 1])(tmp_path, data)
    with pytest.warns(cr.errors.GeometryWarning, match="nibabel fixed its header: pixdim") as caught:
        image = api()
    assert image.spacing == (2.0, 1.0, 1.0) and len(caught) == 1


def test_a_library_warning_is_one_line_on_the_command_line(tmp_path: Path, data: Callable[[str], Path]) -> None:
    """The console script, as a user runs it: the warning once (the file is read twice), as ``coregister: warning:
    ...``, no source line. (``coregister info`` lists a file's warnings in its table instead.)"""
    _nifti_pixdim([1, -2, 1, 1, 1, 1, 1, 1])(tmp_path, data)
    edited, identity = tmp_path / "edited.nii", cr.Translation([0.0, 0.0, 0.0]).save(tmp_path / "identity.tfm")
    argv = ["apply", str(identity), str(edited), "--reference", str(edited), "-o", str(tmp_path / "out.nii.gz")]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(Path(cr.__file__).resolve().parents[1]),
                                                       os.environ.get("PYTHONPATH", "")]))
    env.pop("PYTHONWARNINGS", None)
    run = subprocess.run([sys.executable, "-m", "coregister", *argv], capture_output=True, text=True, timeout=120,
                         env=env)
    assert run.returncode == 0, run.stderr
    lines = [line for line in run.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and re.fullmatch(r"coregister: warning: '.*edited.nii': nibabel fixed its header: "
                                            r"pixdim\[1,2,3\] should be positive.*", lines[0]), lines
    assert ".py" not in run.stderr and "warn(" not in run.stderr
