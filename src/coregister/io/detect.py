"""Recognise a file's format by its name or, failing that, by its first bytes."""

from __future__ import annotations

import gzip
import os
from pathlib import Path

from coregister.errors import UnreadableInputError, UnsupportedFormatError
from coregister.io._guard import check_path

__all__ = ["FORMATS", "detect_format"]

#: format name -> file suffixes (lower case, longest first where they overlap)
FORMATS: dict[str, tuple[str, ...]] = {
    "nifti": (".nii.gz", ".nii"),
    "itk": (".mha", ".mhd", ".nrrd", ".nhdr"),
    "raster": (".tif", ".tiff", ".jp2", ".j2k", ".gtiff"),
    "plain": (".png", ".jpg", ".jpeg", ".bmp"),
    "dicom": (".dcm", ".dicom", ".ima"),
}


def _suffix_format(name: str) -> str | None:
    lower = name.lower()
    for fmt, suffixes in FORMATS.items():
        if any(lower.endswith(s) for s in suffixes):
            return fmt
    return None


_DICOM_VRS = {
    b"AE", b"AS", b"AT", b"CS", b"DA", b"DS", b"DT", b"FL", b"FD", b"IS", b"LO", b"LT", b"OB", b"OD", b"OF", b"OL",
    b"OW", b"PN", b"SH", b"SL", b"SQ", b"SS", b"ST", b"TM", b"UC", b"UI", b"UL", b"UN", b"UR", b"US", b"UT",
}  # fmt: skip


def _looks_like_bare_dicom(head: bytes) -> bool:
    """A DICOM file written without the 128-byte preamble and ``DICM`` (old ACR-NEMA style exports).

    It starts with a little-endian element of group 0x0002, 0x0008 or 0x0010, followed
    either by a valid explicit VR or by an implicit 4-byte length that fits in the file's head.
    """
    if len(head) < 12 or head[:2] not in (b"\x02\x00", b"\x08\x00", b"\x10\x00"):
        return False
    if int.from_bytes(head[2:4], "little") > 0x0100:
        return False
    if head[4:6] in _DICOM_VRS:
        return True
    length = int.from_bytes(head[4:8], "little")
    return 0 < length < 256 and head[:2] != b"\x10\x00"


def _sniff(path: Path) -> str | None:
    with open(path, "rb") as fh:
        head = fh.read(1024)
    if head[:2] == b"\x1f\x8b":  # gzip: look inside for a NIfTI header
        try:
            with gzip.open(path, "rb") as gz:
                head = gz.read(352)
        except (OSError, EOFError):
            return None
    if len(head) >= 132 and head[128:132] == b"DICM":
        return "dicom"
    if len(head) >= 348 and head[344:348] in (b"n+1\x00", b"ni1\x00", b"n+2\x00", b"ni2\x00"):
        return "nifti"
    if len(head) >= 544 and head[4:8] in (b"n+2\x00",):
        return "nifti"
    if head[:4] in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"):
        return "raster"
    if head[:12] == b"\x00\x00\x00\x0cjP  \r\n\x87\n" or head[:4] == b"\xff\x4f\xff\x51":
        return "raster"
    if head[:8] == b"\x89PNG\r\n\x1a\n" or head[:3] == b"\xff\xd8\xff" or head[:2] == b"BM":
        return "plain"
    if _looks_like_bare_dicom(head):
        return "dicom"
    if head[:4] == b"NRRD":
        return "itk"
    if b"ObjectType" in head[:200] or b"NDims" in head[:200]:
        return "itk"
    return None


def detect_format(path: str | os.PathLike[str]) -> str:
    """Name the reader for ``path``: ``nifti``, ``itk``, ``raster``, ``plain`` or ``dicom``.

    A folder is a DICOM series. A file is recognised by its suffix, and a
    file without a known suffix by its content (the DICOM preamble, the
    NIfTI, TIFF, JPEG 2000, PNG, JPEG and NRRD magic numbers).

    Raises
    ------
    UnreadableInputError
        The path does not exist (a dangling link, a loop of links), is not a
        regular file (a FIFO: reading it could wait forever) or is empty.
    UnsupportedFormatError
        Neither the name nor the content says what the file is.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> p = pathlib.Path(tempfile.mkdtemp()) / "noext"
    >>> _ = p.write_bytes(b"\\x89PNG\\r\\n\\x1a\\n" + bytes(32))
    >>> detect_format(p)
    'plain'
    """
    path = check_path(path, folder_ok=True)
    if path.is_dir():
        return "dicom"
    if path.stat().st_size == 0:
        raise UnreadableInputError(f"{str(path)!r} is empty (0 bytes); the file was not written completely")
    by_name = _suffix_format(path.name)
    if by_name is not None:
        return by_name
    by_content = _sniff(path)
    if by_content is not None:
        return by_content
    known = ", ".join(s for suffixes in FORMATS.values() for s in suffixes)
    raise UnsupportedFormatError(
        f"cannot tell the format of {str(path)!r}: unknown suffix and no known magic number; "
        f"coregister reads {known} and DICOM folders"
    )
