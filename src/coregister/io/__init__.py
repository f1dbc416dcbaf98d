"""Readers and writers: every format in, one :class:`~coregister.SpatialImage` out, and back.

Each format lives in its own module with a ``read_<format>`` and (where
writable) ``write_<format>`` function; :func:`read` and :func:`write`
dispatch on the path. Writers are atomic: a failed write leaves no file.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from coregister.errors import UnsupportedFormatError
from coregister.image import SpatialImage
from coregister.io._atomic import refuse_overwriting_input
from coregister.io.detect import FORMATS, detect_format

__all__ = ["detect_format", "read", "write"]

_READERS = {
    "nifti": "coregister.io.nifti:read_nifti",
    "itk": "coregister.io.itk:read_itk",
    "raster": "coregister.io.raster:read_raster",
    "plain": "coregister.io.plain:read_plain",
    "dicom": "coregister.io.dicom:read_dicom",
}
_WRITERS = {
    "nifti": "coregister.io.nifti:write_nifti",
    "itk": "coregister.io.itk:write_itk",
    "raster": "coregister.io.raster:write_raster",
    "plain": "coregister.io.plain:write_plain",
}


def _load(target: str) -> Any:
    module, attr = target.split(":")
    return getattr(importlib.import_module(module), attr)


def read(path: str | os.PathLike[str] | Sequence[str | os.PathLike[str]], **options: Any) -> SpatialImage:
    """Read an image file, a DICOM folder or a list of DICOM files into a :class:`SpatialImage`.

    Parameters
    ----------
    path : path or list of paths
        NIfTI (``.nii``, ``.nii.gz``), MetaImage/NRRD (``.mha``, ``.mhd``,
        ``.nrrd``), GeoTIFF/TIFF/JPEG 2000 (``.tif``, ``.jp2``), PNG/JPEG, a
        DICOM folder or file list. Files without an extension are recognised
        by their content.
    **options
        Passed to the format's reader (for example ``series=`` for DICOM,
        ``volume=`` for 4D NIfTI, ``grayscale=True`` for photos).

    Returns
    -------
    SpatialImage
    """
    if isinstance(path, list | tuple):
        return _load(_READERS["dicom"])(list(path), **options)
    fmt = detect_format(path)
    return _load(_READERS[fmt])(Path(path), **options)


def write(image: SpatialImage, path: str | os.PathLike[str], **options: Any) -> Path:
    """Write ``image`` to ``path`` in the format its suffix names, atomically.

    Inputs are never overwritten by accident: writing onto the file an image
    was read from is refused unless ``overwrite=True``.

    Returns
    -------
    Path
        The path written.
    """
    path = Path(path)
    fmt = next((f for f, suffixes in FORMATS.items() if any(path.name.lower().endswith(s) for s in suffixes)), None)
    if fmt is None or fmt not in _WRITERS:
        writable = ", ".join(s for f in _WRITERS for s in FORMATS[f])
        raise UnsupportedFormatError(f"cannot write {str(path)!r}: choose a suffix coregister writes ({writable})")
    overwrite = options.pop("overwrite", False)
    if not overwrite:
        refuse_overwriting_input(path, image.meta.get("source_path"), fix="write to another path or pass overwrite=True")
    return _load(_WRITERS[fmt])(image, path, **options)
