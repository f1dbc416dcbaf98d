"""PNG, JPEG and BMP photographs and slices as 2D images (origin 0, spacing 1).

Plain images have no world geometry: pixel centres sit at integer
coordinates, as in ITK and OpenCV (origin 0, spacing 1, identity direction).
Colour becomes a trailing channel axis in **RGB(A)** order.

Why OpenCV: of the three libraries we ship, it is the one that reads *and*
writes 8- and 16-bit PNG in grey, RGB and RGBA bit-exactly and also reads
grey+alpha and palette files. Pillow (and imageio through it) reduces
16-bit RGB PNG to 8 bits; SimpleITK cannot read grey+alpha PNG ("Unknown
PixelType"). OpenCV's BGR order is turned into RGB here, at the edge, and
nowhere else. Pixels come as stored: EXIF orientation is not applied.

Examples
--------
>>> import tempfile, pathlib
>>> import numpy as np
>>> from coregister import SpatialImage
>>> rgb = np.dstack([np.full((2, 3), v, np.uint16) for v in (1000, 2000, 60000)])
>>> path = write_plain(SpatialImage(rgb, origin=(0, 0), spacing=(1, 1)), pathlib.Path(tempfile.mkdtemp()) / "c.png")
>>> img = read_plain(path)
>>> img.array[0, 0].tolist(), img.dtype, img.origin, img.meta["format"]
([1000, 2000, 60000], dtype('uint16'), (0.0, 0.0), 'png')
"""

from __future__ import annotations

import logging
import os
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from coregister._files import OVERWRITE_FIX, atomic_path, refuse_existing
from coregister._opencv import cv2
from coregister._stderr import captured_stderr
from coregister.errors import GeometryWarning, UnreadableInputError, UnsupportedFormatError
from coregister.image import SpatialImage
from coregister.io._guard import check_path, claim_within_file, deflate_bound, guarded, within_memory

__all__ = ["read_plain", "write_plain"]

logger = logging.getLogger(__name__)

_FORMATS = {".png": "png", ".jpg": "jpeg", ".jpeg": "jpeg", ".bmp": "bmp"}
#: dtypes each format stores (OpenCV's encoders)
_DTYPES = {"png": ("uint8", "uint16"), "jpeg": ("uint8",), "bmp": ("uint8",)}
_LAYOUTS = {1: "gray", 3: "rgb", 4: "rgba"}


def _format_of(path: Path) -> str:
    fmt = _FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise UnsupportedFormatError(
            f"{str(path)!r} is not a PNG, JPEG or BMP file by its suffix; use .png, .jpg/.jpeg or .bmp"
        )
    return fmt


def _format_by_content(head: bytes) -> str:
    """Name a file without a known suffix by its magic number (what the decoder just accepted)."""
    if head.startswith(b"\x89PNG"):
        return "png"
    if head.startswith(b"\xff\xd8"):
        return "jpeg"
    return "bmp" if head.startswith(b"BM") else "image"


def _to_rgb(pixels: np.ndarray) -> np.ndarray:
    """OpenCV's BGR/BGRA channel order to RGB/RGBA."""
    if pixels.ndim == 2:
        return pixels
    if pixels.shape[-1] == 3:
        return cv2.cvtColor(pixels, cv2.COLOR_BGR2RGB)
    return cv2.cvtColor(pixels, cv2.COLOR_BGRA2RGBA)


def _from_rgb(pixels: np.ndarray) -> np.ndarray:
    if pixels.ndim == 2:
        return pixels
    if pixels.shape[-1] == 3:
        return cv2.cvtColor(pixels, cv2.COLOR_RGB2BGR)
    return cv2.cvtColor(pixels, cv2.COLOR_RGBA2BGRA)


def _claimed_size(head: bytes) -> tuple[int, int, int] | None:
    """``(width, height, bytes per pixel)`` from a PNG, BMP or JPEG header, or None when the header says nothing.

    Examples
    --------
    >>> import struct
    >>> _claimed_size(b"\\x89PNG\\r\\n\\x1a\\n" + struct.pack(">I4sIIBB", 13, b"IHDR", 40000, 30000, 16, 2))
    (40000, 30000, 6)
    """
    if head.startswith(b"\x89PNG\r\n\x1a\n") and len(head) >= 26 and head[12:16] == b"IHDR":
        width, height = int.from_bytes(head[16:20], "big"), int.from_bytes(head[20:24], "big")
        depth, colour = head[24], head[25]
        channels = {0: 1, 2: 3, 3: 3, 4: 2, 6: 4}.get(colour, 4)
        return width, height, channels * max(1, depth // 8)
    if head.startswith(b"BM") and len(head) >= 30:
        width, height = int.from_bytes(head[18:22], "little", signed=True), int.from_bytes(head[22:26], "little", signed=True)
        return abs(width), abs(height), 4
    if head.startswith(b"\xff\xd8"):
        at = 2
        while at + 9 < len(head) and head[at] == 0xFF:
            marker, length = head[at + 1], int.from_bytes(head[at + 2 : at + 4], "big")
            if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
                height, width = int.from_bytes(head[at + 5 : at + 7], "big"), int.from_bytes(head[at + 7 : at + 9], "big")
                return width, height, max(1, head[at + 9]) if at + 9 < len(head) else 3
            at += 2 + length
    return None


def _check_claims(encoded: np.ndarray, path: Path) -> None:
    """Refuse, before decoding, a header whose size is 0 or whose pixels would not fit in the allowed memory.

    PNG data is deflate: it cannot hold more than 1032 bytes of pixels per byte of file.
    """
    claimed = _claimed_size(encoded[:65536].tobytes())
    if claimed is None:
        return
    width, height, per_pixel = claimed
    described = f"{width} x {height} pixels"
    if width == 0 or height == 0:
        raise UnreadableInputError(f"{str(path)!r} has a broken header: {described}; re-export the file")
    if encoded[:4].tobytes() == b"\x89PNG":
        claim_within_file(width * height * per_pixel, deflate_bound(encoded.size), path, described, what="PNG",
                          compressed=int(encoded.size))
    within_memory(3 * width * height * per_pixel, path, described)


@guarded("PNG/JPEG/BMP")
def read_plain(path: str | os.PathLike[str], *, grayscale: bool = False) -> SpatialImage:
    """Read a PNG, JPEG or BMP file as a 2D image with origin 0 and spacing 1.

    Parameters
    ----------
    path : path
        ``.png``, ``.jpg``/``.jpeg`` or ``.bmp`` (other suffixes are read by
        content when OpenCV recognises it).
    grayscale : bool
        Return one channel. A colour or palette file whose red, green and blue
        are equal everywhere gives that channel exactly; otherwise luminance
        ``0.299 R + 0.587 G + 0.114 B`` (ITU-R BT.601, as OpenCV and Pillow
        compute it) rounded back to the file's dtype.

    Returns
    -------
    SpatialImage
        ``(y, x)`` for grey, ``(y, x, 3)`` RGB, ``(y, x, 4)`` RGBA; 8- or
        16-bit as stored. A file with transparency also gets ``mask``
        (``alpha > 0``) when some pixels are fully transparent. ``meta``
        holds ``source_path``, ``format`` (``"png"``, ``"jpeg"``, ``"bmp"``),
        ``layout`` (``"gray"``, ``"rgb"``, ``"rgba"``) and ``grayscale``
        (``None``, ``"identical_channels"`` or ``"luminance"``).

    Raises
    ------
    UnreadableInputError
        Missing, empty, truncated or corrupt file, or a header whose size the
        file cannot hold.
    MemoryLimitError
        The pixels would need more than the allowed memory (checked before decoding).

    Examples
    --------
    >>> import tempfile, pathlib
    >>> import cv2, numpy as np
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "grey_as_rgb.png"
    >>> _ = cv2.imwrite(str(path), np.dstack([np.arange(6, dtype=np.uint8).reshape(2, 3)] * 3))
    >>> img = read_plain(path, grayscale=True)
    >>> img.array.tolist(), img.meta["grayscale"]
    ([[0, 1, 2], [3, 4, 5]], 'identical_channels')
    """
    path = check_path(path)
    encoded = np.fromfile(path, dtype=np.uint8)
    if encoded.size == 0:
        raise UnreadableInputError(f"{str(path)!r} is empty (0 bytes); the file was not written completely")
    _check_claims(encoded, path)
    # IMREAD_UNCHANGED keeps 16 bits and alpha, and does not rotate by EXIF orientation.
    with captured_stderr(f"decoding {path}"):  # libpng warns on stderr about chunks it skips ("sCAL: invalid unit")
        pixels = cv2.imdecode(encoded, cv2.IMREAD_UNCHANGED)
    if pixels is None:
        raise UnreadableInputError(
            f"cannot decode {str(path)!r} as PNG/JPEG/BMP: the file is truncated, corrupt or of another format"
        )
    fmt = _FORMATS.get(path.suffix.lower()) or _format_by_content(encoded[:4].tobytes())
    if pixels.ndim == 3 and pixels.shape[-1] == 1:
        pixels = pixels[..., 0]
    pixels = _to_rgb(pixels)
    layout = _LAYOUTS[1 if pixels.ndim == 2 else pixels.shape[-1]]
    mask = None
    if layout == "rgba":
        alpha = pixels[..., 3]
        if np.any(alpha == 0):
            mask = alpha > 0
    converted = None
    if grayscale and pixels.ndim == 3:
        colour = pixels[..., :3]
        if np.array_equal(colour[..., 0], colour[..., 1]) and np.array_equal(colour[..., 0], colour[..., 2]):
            pixels, converted = np.ascontiguousarray(colour[..., 0]), "identical_channels"
        else:
            pixels, converted = cv2.cvtColor(np.ascontiguousarray(colour), cv2.COLOR_RGB2GRAY), "luminance"
    logger.debug("read %s: %s %s %s", path, fmt, layout, pixels.dtype)
    meta: dict[str, Any] = {
        "source_path": str(path),
        "format": fmt,
        "layout": layout,
        "grayscale": converted,
    }
    return SpatialImage(pixels, origin=(0.0, 0.0), spacing=(1.0, 1.0), mask=mask, meta=meta)


def write_plain(
    image: SpatialImage, path: str | os.PathLike[str], *, jpeg_quality: int = 95, overwrite: bool = False
) -> Path:
    """Write a 2D image as PNG (lossless, 8 or 16 bit), JPEG (8 bit, lossy) or BMP (8 bit).

    Parameters
    ----------
    image : SpatialImage
        2D, with 1 (grey), 3 (RGB) or 4 (RGBA) channels; ``uint8`` (or
        ``uint16`` for PNG). Boolean masks are written as 0/255.
    path : path
        ``.png``, ``.jpg``/``.jpeg`` or ``.bmp``; written atomically.
    jpeg_quality : int
        JPEG quality from 0 to 100.
    overwrite : bool
        Replace an existing file at ``path`` (otherwise
        :class:`~coregister.errors.OutputExistsError`, before any work).

    Returns
    -------
    Path
        ``path``.

    Raises
    ------
    UnsupportedFormatError
        A 3D image, a channel count or dtype the format cannot store (the
        message names a format that can).

    Warns
    -----
    GeometryWarning
        The image has a geometry (origin, spacing, direction or CRS) that
        these formats cannot hold; it is lost.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> import numpy as np
    >>> from coregister import SpatialImage
    >>> grey = SpatialImage(np.array([[0, 65535], [1, 2]], np.uint16), origin=(0, 0), spacing=(1, 1))
    >>> path = write_plain(grey, pathlib.Path(tempfile.mkdtemp()) / "g16.png")
    >>> read_plain(path).array.tolist()
    [[0, 65535], [1, 2]]
    """
    path = Path(path)
    fmt = _format_of(path)
    refuse_existing(path, overwrite=overwrite, fix=OVERWRITE_FIX)
    if image.ndim != 2:
        raise UnsupportedFormatError(
            f"cannot write a {image.ndim}D image (shape {image.shape}) to {str(path)!r}: PNG/JPEG/BMP hold one "
            "plane; write volumes as .nii.gz or .mha"
        )
    array = image.array
    if array.dtype == np.bool_:
        array = np.where(array, np.uint8(255), np.uint8(0))
    channels = image.n_channels
    if channels not in (1, 3, 4) or (fmt == "jpeg" and channels == 4):
        allowed = "1 or 3" if fmt == "jpeg" else "1, 3 or 4"
        raise UnsupportedFormatError(
            f"{fmt.upper()} stores {allowed} channels, not {channels}; write {str(path)!r} as .tif, or select channels "
            "with image.channel(i)"
        )
    if array.dtype.name not in _DTYPES[fmt]:
        allowed = " or ".join(_DTYPES[fmt])
        raise UnsupportedFormatError(
            f"{fmt.upper()} stores {allowed} pixels, not {array.dtype}; write {str(path)!r} as .tif (keeps any dtype) "
            f"or rescale and cast to {allowed} first"
        )
    plain_grid = (
        np.allclose(image.origin, 0.0, rtol=0, atol=1e-12)
        and np.allclose(image.spacing, 1.0, rtol=0, atol=1e-12)
        and np.allclose(image.direction, np.eye(2), rtol=0, atol=1e-12)
    )
    if not plain_grid or image.crs is not None:
        warnings.warn(
            f"{fmt.upper()} cannot hold the geometry of this image (origin {image.origin}, spacing {image.spacing}"
            f"{', CRS' if image.crs is not None else ''}); {str(path)!r} gets origin 0 and spacing 1. "
            "Write .tif (GeoTIFF) or .mha/.nii.gz to keep it",
            GeometryWarning,
            stacklevel=2,
        )
    if image.mask is not None and not (channels == 4 and np.array_equal(image.mask, array[..., 3] > 0)):
        logger.warning("%s: %s cannot store the mask apart from an alpha channel; the mask is dropped", path, fmt)
    params = [cv2.IMWRITE_JPEG_QUALITY, int(jpeg_quality)] if fmt == "jpeg" else []
    ok, encoded = cv2.imencode(f".{'jpg' if fmt == 'jpeg' else fmt}", _from_rgb(np.ascontiguousarray(array)), params)
    if not ok:
        raise UnsupportedFormatError(f"OpenCV could not encode the image as {fmt.upper()} for {str(path)!r}")
    with atomic_path(path, overwrite=overwrite, fix=OVERWRITE_FIX) as tmp:
        encoded.tofile(tmp)
    logger.debug("wrote %s (%s, %d channel(s), %s)", path, fmt, channels, array.dtype)
    return path
