"""MetaImage (``.mha``, ``.mhd``) and NRRD (``.nrrd``, ``.nhdr``) through SimpleITK.

These formats already speak ITK's language (LPS millimetres, origin at the
first pixel centre, direction cosines), so the reader wraps
``SimpleITK.ReadImage`` and the writer ``SimpleITK.WriteImage``; what this
module adds is error classes, the header's key/value pairs kept in ``meta``,
4D files as 3D images with a trailing axis, and atomic writes (a detached
header and its data file appear together or not at all).
"""

from __future__ import annotations

import logging
import math
import os
from pathlib import Path
from typing import Any

import numpy as np
import SimpleITK as sitk

from coregister._files import OVERWRITE_FIX, PART_MARKER, atomic_path, part_folder, publish, refuse_existing
from coregister._stderr import captured_stderr
from coregister.errors import GeometryError, UnreadableInputError, UnsupportedFormatError, UnwritableOutputError
from coregister.image import SpatialImage
from coregister.io._guard import check_path, claim_within_file, deflate_bound, guarded, within_memory
from coregister.io._text import one_line

__all__ = ["check_header_claims", "read_itk", "write_itk"]

logger = logging.getLogger(__name__)

_SUFFIXES = (".mha", ".mhd", ".nrrd", ".nhdr")
_DETACHED = (".mhd", ".nhdr")
#: keys SimpleITK adds on reading, or that describe the layout rather than the image; never written back
_LAYOUT_KEYS = {"ITK_InputFilterName", "ITK_original_direction", "ITK_original_spacing"}
_NRRD_LAYOUT_PREFIXES = ("NRRD_space", "NRRD_kinds", "NRRD_centerings", "NRRD_thicknesses", "NRRD_measurement frame")


def _header_says_compressed(path: Path) -> bool:
    """Whether the header declares compressed data (MetaImage ``CompressedData``, NRRD ``encoding: gz``)."""
    with open(path, "rb") as fh:
        head = fh.read(4096)
    text = head.split(b"\x00", 1)[0].decode("latin-1", "replace").lower()
    for line in text.splitlines():
        key, _, value = line.partition("=" if "=" in line else ":")
        key, value = key.strip(), value.strip()
        if key == "compresseddata":
            return value == "true"
        if key == "encoding":
            return value in ("gz", "gzip", "bz2", "bzip2")
        if key == "elementdatafile":  # the MetaImage header ends here
            break
    return False


def _from_4d(image: sitk.Image, path: Path) -> SpatialImage:
    direction = np.array(image.GetDirection()).reshape(4, 4)
    if not np.allclose(direction[3], [0, 0, 0, 1]) or not np.allclose(direction[:3, 3], 0):
        raise GeometryError(
            f"{str(path)!r} is 4D with a direction that mixes the 4th axis into space; "
            "coregister keeps a 4th axis only as a trailing time/channel axis"
        )
    if image.GetNumberOfComponentsPerPixel() > 1:
        raise UnsupportedFormatError(f"{str(path)!r} is a 4D vector image; split it into 3D images first")
    return SpatialImage.from_sitk(image)


def _data_file(path: Path) -> Path | None:
    """The file a detached header (``ElementDataFile``, ``data file``) names, when it is one file beside it."""
    with open(path, "rb") as fh:
        head = fh.read(8192)
    for line in head.split(b"\x00", 1)[0].decode("latin-1", "replace").splitlines():
        key, _, value = line.partition("=" if "=" in line else ":")
        key, value = key.strip().lower(), value.strip()
        if key in ("elementdatafile", "data file", "datafile") and value and value.upper() != "LOCAL":
            if value.upper().startswith("LIST") or "%" in value or " " in value:
                return None  # a list or pattern of slice files: not one file to compare with
            return path.parent / value
    return None


def _header_length(path: Path) -> int:
    """Bytes of an attached header (MetaImage: to the end of the ``ElementDataFile`` line; NRRD: to the blank line)."""
    with open(path, "rb") as fh:
        head = fh.read(65536)
    key = head.find(b"ElementDataFile")
    if key >= 0:
        end = head.find(b"\n", key)
        return end + 1 if end >= 0 else len(head)
    blank = head.find(b"\n\n")
    return blank + 2 if blank >= 0 else 0


#: the smallest NIfTI-1 header: a single-file .nii holds its voxels after at least this many bytes
_NIFTI_HEADER = 352


def check_header_claims(reader: sitk.ImageFileReader, path: Path, *, what: str = "MetaImage/NRRD") -> int:
    """Refuse a header whose size is absurd or whose pixels the file cannot hold, before reading them; the bytes claimed.

    ``reader`` has read the header (``ReadImageInformation``). The pixels
    must fit in what follows the header (a detached header's data file;
    a gzip file, a compressed MetaImage or NRRD: its deflate bound; a
    single-file NIfTI: what follows the smallest header) and, twice over,
    in the memory allowed. Raises
    :class:`~coregister.errors.UnreadableInputError` or
    :class:`~coregister.errors.MemoryLimitError`.
    """
    size = tuple(int(n) for n in reader.GetSize())
    if not size or any(n <= 0 for n in size):
        raise UnreadableInputError(f"{str(path)!r} has a broken header: its size {size} includes 0; re-export the file")
    components = max(1, int(reader.GetNumberOfComponents()))
    pixel = sitk.GetPixelIDValueAsString(reader.GetPixelID())
    total = math.prod(size) * components * _ITEMSIZE.get(pixel, 8)
    described = f"size {size}, {pixel}" + (f", {components} components" if components > 1 else "")
    with open(path, "rb") as fh:
        gzipped = fh.read(2) == b"\x1f\x8b"
    detached = None if gzipped else _data_file(path)
    data = detached or path
    if gzipped:  # a .nii.gz (NIfTI through SimpleITK)
        stored = path.stat().st_size
        claim_within_file(total, deflate_bound(stored), path, described, what=what, compressed=stored)
    elif path.name.lower().endswith(".nii"):
        claim_within_file(total, path.stat().st_size - _NIFTI_HEADER, path, described, what=what)
    elif data.is_file():
        stored = data.stat().st_size - (0 if detached else _header_length(path))
        if _header_says_compressed(path):
            claim_within_file(total, deflate_bound(stored), path, described, what=what, compressed=stored)
        else:
            claim_within_file(total, stored, path, described, what=what)
    within_memory(2 * total, path, described)
    return total


#: bytes per component of SimpleITK's pixel types, by the name GetPixelIDTypeAsString gives
_ITEMSIZE = {
    **{f"{kind}{bits}-bit {name}": bits // 8 for bits in (8, 16, 32, 64) for kind in ("", "vector of ")
       for name in ("signed integer", "unsigned integer")},
    "32-bit float": 4, "64-bit float": 8, "vector of 32-bit float": 4, "vector of 64-bit float": 8,
    "complex of 32-bit float": 4, "complex of 64-bit float": 8,  # per component (2)
    "label of 8-bit unsigned integer": 1,
}  # fmt: skip


@guarded("MetaImage/NRRD")
def read_itk(path: str | os.PathLike[str]) -> SpatialImage:
    """Read a MetaImage (``.mha``, ``.mhd``) or NRRD (``.nrrd``, ``.nhdr``) file.

    Parameters
    ----------
    path : path-like
        The header file (a ``.mhd``/``.nhdr`` names its data file).

    Returns
    -------
    SpatialImage
        Geometry exactly as ``SimpleITK.ReadImage`` reports it; vector
        pixels become a trailing channel axis; a 4D file becomes a 3D image
        with a trailing axis (``meta["trailing_axis"] == "time"``).
        ``meta`` holds ``source_path``, ``format`` (``"itk"``), ``compressed``
        and ``itk_metadata`` (the header's extra key/value pairs, written
        back by :func:`write_itk`).

    Raises
    ------
    UnreadableInputError
        Missing header or data file, truncated or corrupt data, a header
        claiming more pixels than its data file holds (checked before reading).
    MemoryLimitError
        The pixels would need more than the allowed memory.
    UnsupportedFormatError
        1D or 5D+ images.

    Examples
    --------
    >>> import numpy as np, tempfile, pathlib
    >>> from coregister import SpatialImage
    >>> img = SpatialImage(np.arange(6, dtype=np.uint8).reshape(2, 3), origin=(5, 6), spacing=(0.5, 2))
    >>> back = read_itk(write_itk(img, pathlib.Path(tempfile.mkdtemp()) / "a.mhd"))
    >>> back.same_geometry(img), np.array_equal(back.array, img.array)
    (True, True)
    """
    path = check_path(path)
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        with captured_stderr(f"reading {path}"):  # MetaIO's own notes ("data not read completely"): logged
            reader.ReadImageInformation()
        check_header_claims(reader, path)
        with captured_stderr(f"reading {path}"):
            image = reader.Execute()
    except RuntimeError as exc:
        detail = one_line(exc)
        raise UnreadableInputError(
            f"{str(path)!r} could not be read by SimpleITK ({detail}); check that the header and its data file "
            "are complete and side by side"
        ) from exc
    metadata = {key: image.GetMetaData(key) for key in image.GetMetaDataKeys()}
    dimension = image.GetDimension()
    meta: dict[str, Any] = {
        "source_path": str(path),
        "format": "itk",
        "compressed": _header_says_compressed(path),
        "itk_metadata": metadata,
        "trailing_axis": "vector" if image.GetNumberOfComponentsPerPixel() > 1 else "none",
    }
    if dimension in (2, 3):
        result = SpatialImage.from_sitk(image, meta=meta)
    elif dimension == 4:
        result = _from_4d(image, path).replace(meta={**meta, "trailing_axis": "time"})
    else:
        raise UnsupportedFormatError(f"{str(path)!r} is {dimension}D; coregister reads 2D, 3D and 4D images")
    logger.debug("read %s: %r", path, result)
    return result


def _metadata_to_write(image: SpatialImage, suffix: str) -> dict[str, str]:
    if image.meta.get("format") != "itk":
        return {}
    out = {}
    for key, value in dict(image.meta.get("itk_metadata", {})).items():
        if key in _LAYOUT_KEYS or key.startswith(_NRRD_LAYOUT_PREFIXES):
            continue
        if key == "Modality" and value == "MET_MOD_UNKNOWN":  # MetaImageIO's placeholder, not information
            continue
        if key.startswith("NRRD_") and suffix not in (".nrrd", ".nhdr"):
            continue
        out[key] = str(value)
    return out


def _to_sitk(image: SpatialImage, suffix: str) -> sitk.Image:
    if image.dtype == np.float16:
        image = image.replace(array=image.array.astype(np.float32))
    if image.dtype.kind not in "biufc":
        raise UnsupportedFormatError(f"cannot write dtype {image.dtype} with SimpleITK; cast to a numeric dtype")
    if image.dtype.kind == "c" and image.has_channels:
        raise UnsupportedFormatError(
            f"SimpleITK has no complex vector pixels ({image.dtype}, {image.n_channels} channels); "
            "write one channel at a time (image.channel(i)) or .nii"
        )
    if image.dtype.kind == "c" and suffix in (".mha", ".mhd"):
        raise UnsupportedFormatError(
            f"MetaImage has no complex pixel type ({image.dtype} would come back as two float channels); "
            "write .nrrd or .nii instead"
        )
    if image.meta.get("trailing_axis") == "time" and image.ndim == 3 and image.has_channels:
        array = np.moveaxis(np.asarray(image.array), -1, 0)  # (z, y, x, t) -> (t, z, y, x)
        out = sitk.GetImageFromArray(np.ascontiguousarray(array), isVector=False)
        direction = np.eye(4)
        direction[:3, :3] = image.direction
        out.SetOrigin((*image.origin, 0.0))
        out.SetSpacing((*image.spacing, 1.0))
        out.SetDirection(tuple(direction.ravel()))
        return out
    return image.to_sitk()


def _suffix(path: Path) -> str:
    return next((s for s in _SUFFIXES if path.name.lower().endswith(s)), "")


def write_itk(
    image: SpatialImage, path: str | os.PathLike[str], *, compress: bool | None = None, overwrite: bool = False
) -> Path:
    """Write ``image`` as MetaImage (``.mha``, ``.mhd``) or NRRD (``.nrrd``, ``.nhdr``), atomically.

    A detached header (``.mhd``, ``.nhdr``) is written with its data file
    into a temporary folder beside the target, then both are moved into
    place (data file first): a failed write leaves neither.

    Parameters
    ----------
    image : SpatialImage
        A channel axis becomes a vector pixel; a 3D image read from a 4D
        file (``meta["trailing_axis"] == "time"``) is written 4D again.
    path : path-like
    compress : bool, optional
        Compress the pixel data (lossless). Default: as the source file was
        (``meta["compressed"]``), uncompressed for other images.
    overwrite : bool
        Replace an existing file at ``path`` (and its data file; otherwise
        :class:`~coregister.errors.OutputExistsError`, before any work).

    Returns
    -------
    Path
        ``path`` (the header, for detached formats).

    Examples
    --------
    >>> import numpy as np, tempfile, pathlib, SimpleITK as sitk
    >>> from coregister import SpatialImage
    >>> img = SpatialImage(np.zeros((2, 3, 4), np.int16), origin=(1, 2, 3), spacing=(1, 1, 2))
    >>> out = write_itk(img, pathlib.Path(tempfile.mkdtemp()) / "v.nrrd", compress=True)
    >>> sitk.ReadImage(str(out)).GetSpacing()
    (1.0, 1.0, 2.0)
    """
    path = Path(path)
    suffix = _suffix(path)
    if not suffix:
        raise UnsupportedFormatError(f"write_itk needs a path ending in {', '.join(_SUFFIXES)}, got {str(path)!r}")
    refuse_existing(path, overwrite=overwrite, fix=OVERWRITE_FIX)
    if compress is None:
        compress = bool(image.meta.get("compressed", False)) if image.meta.get("format") == "itk" else False
    out = _to_sitk(image, suffix)
    for key, value in _metadata_to_write(image, suffix).items():
        out.SetMetaData(key, value)
    writer = sitk.ImageFileWriter()
    writer.SetUseCompression(compress)
    writer.KeepOriginalImageUIDOn()
    try:
        if suffix in _DETACHED:
            _write_detached(writer, out, path, overwrite=overwrite)
        else:
            with atomic_path(path, overwrite=overwrite, fix=OVERWRITE_FIX) as tmp, captured_stderr(f"writing {path}"):
                writer.SetFileName(str(tmp))
                writer.Execute(out)
    except RuntimeError as exc:
        raise UnwritableOutputError(f"SimpleITK could not write {str(path)!r}: {one_line(exc)}") from exc
    logger.debug("wrote %s (%s, compressed=%s)", path, out.GetPixelIDTypeAsString(), compress)
    return path


def _write_detached(writer: sitk.ImageFileWriter, image: sitk.Image, path: Path, *, overwrite: bool) -> None:
    folder = path.parent if str(path.parent) else Path(".")
    if not folder.is_dir():
        raise UnreadableInputError(f"output folder {str(folder)!r} does not exist; create it first")
    with part_folder(folder, path.name, stands_for=folder) as staging:
        header = staging / path.name
        writer.SetFileName(str(header))
        with captured_stderr(f"writing {path}"):  # ITK's own lines on a full disk: the error below says it once
            writer.Execute(image)
        data_files = sorted(item for item in staging.iterdir() if item not in (header, staging / PART_MARKER))
        for item in data_files:
            refuse_existing(folder / item.name, overwrite=overwrite, fix=OVERWRITE_FIX)
        refuse_existing(path, overwrite=overwrite, fix=OVERWRITE_FIX)
        for item in data_files:
            os.replace(item, folder / item.name)
        publish(header, path, overwrite=overwrite, fix=OVERWRITE_FIX)
