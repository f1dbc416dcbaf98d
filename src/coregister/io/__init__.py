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
from typing import Any, cast

from coregister._files import OVERWRITE_FIX, refuse_existing, refuse_overwriting_input
from coregister.errors import UnsupportedFormatError
from coregister.image import SpatialImage
from coregister.io.detect import FORMATS, detect_format
from coregister.transforms import Transform

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
    "dicom": "coregister.io.dicom_write:write_dicom",
}
#: formats written into a folder rather than a file: chosen with ``format=``, never by a suffix
_FOLDER_FORMATS = ("dicom",)


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
    one = cast("str | os.PathLike[str]", path)  # a list or tuple of files went above
    fmt = detect_format(one)
    return _load(_READERS[fmt])(Path(one), **options)


def write(image: SpatialImage | Transform, path: str | os.PathLike[str], *, format: str | None = None, **options: Any) -> Path:
    """Write ``image`` to ``path`` in the format its suffix names, atomically.

    Nothing is replaced without asking: an existing file at ``path`` (or a
    folder holding a series, for DICOM) and the file an image was read from
    are refused (:class:`~coregister.errors.OutputExistsError`, before any
    work) unless ``overwrite=True``. The file appears in one rename, so a
    failed or interrupted write leaves nothing.

    Parameters
    ----------
    image : SpatialImage or Transform
        A transform is written by its own ``save`` (a displacement field as a
        vector NIfTI, as ANTs writes its warps; a chain as ITK ``.h5``).
    path : path-like
        A file whose suffix picks the format (``.nii.gz``, ``.mha``, ``.tif``,
        ``.png``...), or, with ``format="dicom"``, a folder (new or empty)
        that receives a derived DICOM series, one file per slice.
    format : str, optional
        ``"dicom"``: write a folder (a suffix alone never chooses DICOM: a
        ``.dcm`` path is refused, since a series is a folder). Another
        format name (``"nifti"``, ``"itk"``, ``"raster"``, ``"plain"``) must
        match the suffix.
    **options
        ``overwrite=True`` replaces an existing output; the rest go to the
        format's writer (for DICOM ``series_description=``,
        ``series_number=``, ``modality=``).

    Returns
    -------
    Path
        The path written.

    Examples
    --------
    >>> import numpy as np, tempfile, pathlib
    >>> image = SpatialImage(np.zeros((2, 3, 4), np.int16), origin=(0, 0, 0), spacing=(1, 1, 2))
    >>> folder = write(image, pathlib.Path(tempfile.mkdtemp()) / "series", format="dicom")
    >>> sorted(p.name for p in folder.iterdir())
    ['IM000001.dcm', 'IM000002.dcm']
    """
    if isinstance(image, Transform):
        refuse_existing(path, overwrite=bool(options.pop("overwrite", False)), fix=OVERWRITE_FIX)
        return image.save(path)
    path = Path(path)
    suffix_format = next(
        (f for f, suffixes in FORMATS.items() if any(path.name.lower().endswith(s) for s in suffixes)), None
    )
    file_formats = [f for f in _WRITERS if f not in _FOLDER_FORMATS]
    writable = ", ".join(s for f in file_formats for s in FORMATS[f])
    if format is not None and format not in _WRITERS:
        raise UnsupportedFormatError(
            f"format={format!r} is not one coregister writes; choose one of {sorted(_WRITERS)}"
        )
    if format in _FOLDER_FORMATS:
        if suffix_format is not None:
            raise UnsupportedFormatError(
                f"format={format!r} writes a folder of files, but {str(path)!r} names a file; give a folder path "
                "without a file suffix (for example 'registered_dicom')"
            )
        fmt = format
    elif suffix_format in _FOLDER_FORMATS:
        raise UnsupportedFormatError(
            f"cannot write {str(path)!r}: a {suffix_format.upper()} series is a folder of files, one per slice; "
            f"pass a folder and format={suffix_format!r} (coregister.write(image, 'out_folder', format={suffix_format!r}))"
        )
    elif suffix_format is None or suffix_format not in _WRITERS:
        raise UnsupportedFormatError(
            f"cannot write {str(path)!r}: choose a suffix coregister writes ({writable}), or a folder with format='dicom'"
        )
    elif format is not None and format != suffix_format:
        raise UnsupportedFormatError(
            f"format={format!r} does not match the suffix of {str(path)!r} ({suffix_format}); give a matching suffix"
        )
    else:
        fmt = suffix_format
    overwrite = bool(options.pop("overwrite", False))
    if not overwrite:
        refuse_overwriting_input(path, image.meta.get("source_path"), fix="write to another path or pass overwrite=True")
        if fmt not in _FOLDER_FORMATS:
            refuse_existing(path, overwrite=False, fix=OVERWRITE_FIX)
    return _load(_WRITERS[fmt])(image, path, overwrite=overwrite, **options)
