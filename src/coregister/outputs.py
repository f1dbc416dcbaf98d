"""The files a registration leaves behind, named and written the same way by ``coregister register``, batch and demo.

A registration's folder holds ``registered.<ext>`` (the moving image on the
fixed grid, in the fixed image's format), ``transform.tfm`` (or
``transform.json`` for what ITK cannot store, ``transform.h5`` for a
displacement field), ``result.json`` and, on request, ``report.html``. A
deformable answer adds what other tools read (:func:`write_deformation`):
``jacobian.nii.gz`` and, for a displacement field, ``warp.nii.gz``,
``inverse_warp.nii.gz`` and ``affine.mat``, named and ordered as ANTs'
``1Warp.nii.gz``, ``1InverseWarp.nii.gz`` and ``0GenericAffine.mat``.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from coregister._files import refuse_overwriting_input
from coregister.errors import UnsupportedFormatError
from coregister.image import SpatialImage
from coregister.io.detect import FORMATS, detect_format
from coregister.pipeline.result import Result
from coregister.transforms import Composite, DisplacementField, LinearTransform, Transform

__all__ = [
    "DICOM_FOLDER_NAME",
    "OUTPUT_NAMES",
    "for_writing",
    "refuse_overwriting_inputs",
    "registered_name",
    "holds_a_registration",
    "remove_stale_outputs",
    "transform_name",
    "writable_dtype",
    "write_deformation",
    "write_registration",
]

logger = logging.getLogger(__name__)

_DEFAULT_SUFFIX = {"nifti": ".nii.gz", "itk": ".mha", "raster": ".tif", "plain": ".png", "dicom": ".nii.gz"}
_PLAIN_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp")
_PLAIN_DTYPES = (np.dtype(np.uint8), np.dtype(np.uint16))

#: The folder of the registered image written as a derived DICOM series (``--output-format dicom``).
DICOM_FOLDER_NAME = "registered_dicom"

#: The deformation files of a deformable registration (:func:`write_deformation`).
DEFORMATION_NAMES = ("warp.nii.gz", "inverse_warp.nii.gz", "affine.mat", "jacobian.nii.gz")
#: The files of a registration's folder besides ``registered.<ext>``.
OUTPUT_NAMES = ("transform.tfm", "transform.h5", "transform.json", "result.json", "report.html", *DEFORMATION_NAMES)


def registered_name(fixed_path: str | os.PathLike[str], *, output_format: str | None = None) -> str:
    """``registered.<ext>``: the fixed image's extension, ``.nii.gz`` for DICOM (a folder or ``.dcm`` files).

    With ``output_format="dicom"``: ``registered_dicom``, the folder of a derived DICOM series.

    Examples
    --------
    >>> registered_name("t1.nii.gz"), registered_name("scene.TIF"), registered_name("slice.png")
    ('registered.nii.gz', 'registered.tif', 'registered.png')
    >>> registered_name("ct_folder", output_format="dicom")
    'registered_dicom'
    """
    if output_format == "dicom":
        return DICOM_FOLDER_NAME
    path = Path(fixed_path)
    name = path.name.lower()
    for fmt, suffixes in FORMATS.items():
        for suffix in suffixes:
            if name.endswith(suffix):
                return "registered" + (_DEFAULT_SUFFIX["dicom"] if fmt == "dicom" else suffix)
    return "registered" + _DEFAULT_SUFFIX[detect_format(path)]


def transform_name(transform: Transform) -> str:
    """``transform.tfm``; ``transform.h5`` for a displacement field (ITK's composite, as ANTs writes it);
    ``transform.json`` for a transform ITK cannot store (a homography, or a chain holding one).

    Examples
    --------
    >>> import numpy as np
    >>> from coregister.image import SpatialImage
    >>> from coregister.transforms import Composite, DisplacementField, Homography, Translation
    >>> transform_name(Translation([1.0, 2.0])), transform_name(Homography(np.eye(3)))
    ('transform.tfm', 'transform.json')
    >>> field = DisplacementField(SpatialImage(np.zeros((4, 4, 2)), origin=(0, 0), spacing=(1, 1)))
    >>> transform_name(Composite((Translation([1.0, 2.0]), field)))
    'transform.h5'
    """
    if _fields(transform):
        return "transform.h5"
    try:
        transform.to_sitk()
    except UnsupportedFormatError:
        return "transform.json"
    return "transform.tfm"


def refuse_overwriting_inputs(
    folder: str | os.PathLike[str], image_name: str, inputs: Iterable[str | os.PathLike[str] | None], *, fix: str
) -> None:
    """Raise :class:`~coregister.errors.OutputExistsError` when a registration's file in ``folder`` would replace an input.

    Checks ``image_name`` and every name in :data:`OUTPUT_NAMES` against
    each of ``inputs`` (``None`` entries are skipped). Call it before the
    work starts, so that the refusal comes before minutes of registration.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> folder = pathlib.Path(tempfile.mkdtemp())
    >>> fixed = folder / "registered.png"
    >>> _ = fixed.write_bytes(b"png")
    >>> refuse_overwriting_inputs(folder / "out", "registered.png", [fixed], fix="choose another -o")  # another folder
    >>> refuse_overwriting_inputs(folder, "registered.png", [fixed, None], fix="choose another -o")
    Traceback (most recent call last):
    ...
    coregister.errors.OutputExistsError: refusing to overwrite the input '...registered.png'; choose another -o
    """
    folder = Path(folder)
    for name in (image_name, *OUTPUT_NAMES):
        for source in inputs:
            refuse_overwriting_input(folder / name, source, fix=fix)


def writable_dtype(image: SpatialImage, fixed: SpatialImage, name: str) -> Any:
    """PNG/JPEG/BMP hold 8/16-bit integers only: other moving dtypes are written in the fixed image's dtype (else None)."""
    if name.endswith(_PLAIN_SUFFIXES) and image.dtype not in _PLAIN_DTYPES:
        logger.info("%s cannot hold %s pixels; writing them as %s like the fixed image", name, image.dtype, fixed.dtype)
        return fixed.dtype
    return None


def for_writing(image: SpatialImage, name: str) -> SpatialImage:
    """PNG/JPEG/BMP keep no mask beside the pixels: pixels without data already hold the fill value."""
    if image.mask is not None and name.lower().endswith(_PLAIN_SUFFIXES):
        logger.info("%s: pixels without data hold the fill value; the mask is not written", name)
        return image.replace(mask=None)
    return image


def write_registration(
    folder: Path,
    result: Result,
    fixed: SpatialImage,
    moving: SpatialImage,
    *,
    image_name: str,
    report: bool = False,
    threads: int | None = None,
    output_format: str | None = None,
    command: str | None = None,
) -> list[Path]:
    """Resample ``moving`` onto ``fixed`` through ``result.transform`` and write the registration's files into ``folder``.

    Returns the paths written: the registered image (``image_name``), the
    transform (:func:`transform_name`), ``result.json`` and, with ``report``,
    ``report.html``. With ``output_format="dicom"`` the registered image is a
    derived DICOM series in the folder ``image_name`` (the fixed image's
    patient, study and frame of reference, the moving image's modality).
    ``command`` (the command line that ran, when there was one) is shown in
    the report.
    Refuses (:class:`~coregister.errors.OutputExistsError`)
    a folder where one of them would replace the file ``fixed`` or
    ``moving`` was read from.
    """
    from coregister.io import write
    from coregister.resample import apply

    refuse_overwriting_inputs(
        folder, image_name, [fixed.meta.get("source_path"), moving.meta.get("source_path")],
        fix="write the registration into another folder",
    )

    earlier_run = holds_a_registration(folder)
    registered = apply(
        result.transform, moving, reference=fixed, output_dtype=writable_dtype(moving, fixed, image_name), threads=threads
    )
    if output_format == "dicom":
        image_path = write(registered, folder / image_name, format="dicom", values_from=moving)
    else:
        image_path = write(for_writing(registered, image_name), folder / image_name)
    written = [
        image_path,
        result.transform.save(folder / transform_name(result.transform)),
        *write_deformation(folder, result.transform, fixed),
        result.save_json(folder / "result.json"),
    ]
    if report:
        from coregister.qc.report import write_report

        written.append(write_report(result, fixed, moving, registered, folder / "report.html", command=command))
    remove_stale_outputs(folder, {Path(p).name for p in written}, earlier_run=earlier_run)
    return written


def _fields(transform: Transform) -> list[DisplacementField]:
    if isinstance(transform, DisplacementField):
        return [transform]
    if isinstance(transform, Composite):
        return [t for t in transform.transforms if isinstance(t, DisplacementField)]
    return []


def write_deformation(folder: Path, transform: Transform, fixed: SpatialImage) -> list[Path]:
    """The files other tools read for a deformable ``transform`` (fixed -> moving points); none for a linear one.

    * ``jacobian.nii.gz``: the Jacobian determinant of the whole map at every
      voxel of the fixed grid (float32; above 1 where the fixed space maps to
      a larger moving volume, at or below 0 where it folds), for a B-spline
      or a displacement field;
    * for a displacement field (``syn``), as ANTs writes a SyN result:
      ``warp.nii.gz``, the field (vector NIfTI, intent vector, ITK/LPS
      components, as ``1Warp.nii.gz``); ``inverse_warp.nii.gz``, its
      numerical inverse (``1InverseWarp.nii.gz``); ``affine.mat``, the linear
      part applied after the field (``0GenericAffine.mat``). ANTs applies
      them as ``antsApplyTransforms -r FIXED -i MOVING -t warp.nii.gz -t
      affine.mat`` (moving onto fixed) and ``-r MOVING -i FIXED -t
      [affine.mat,1] -t inverse_warp.nii.gz`` (fixed onto moving);
      ``transform.h5`` holds the same chain in one file.

    Returns the paths written.
    """
    from coregister.io import write
    from coregister.measures import jacobian_determinant
    from coregister.pipeline.quality import deformable_members

    if not deformable_members(transform):
        return []
    written = []
    fields = _fields(transform)
    if len(fields) == 1:
        field = fields[0]
        written.append(field.save(folder / "warp.nii.gz"))
        written.append(field.inverse().save(folder / "inverse_warp.nii.gz"))
        members = transform.transforms if isinstance(transform, Composite) else (transform,)
        linear = [t for t in members if isinstance(t, LinearTransform)]
        if linear and members[-1] is field and all(isinstance(t, LinearTransform) for t in members[:-1]):
            import functools
            import operator

            written.append(functools.reduce(operator.matmul, linear).save(folder / "affine.mat"))
    jacobian = jacobian_determinant(transform, fixed)
    written.append(write(jacobian.replace(array=jacobian.array.astype(np.float32)), folder / "jacobian.nii.gz"))
    return written


def holds_a_registration(folder: str | os.PathLike[str]) -> bool:
    """Whether ``folder`` holds the ``result.json`` of a coregister registration (a run wrote into it before).

    Examples
    --------
    >>> import tempfile
    >>> folder = Path(tempfile.mkdtemp())
    >>> holds_a_registration(folder)
    False
    >>> _ = (folder / "result.json").write_text('{"transform": {}, "engine": "sitk", "metrics": {}}')
    >>> holds_a_registration(folder)
    True
    """
    import json

    try:
        saved = json.loads((Path(folder) / "result.json").read_text())
    except (OSError, ValueError):
        return False
    return isinstance(saved, dict) and {"transform", "engine", "metrics"} <= saved.keys()


def remove_stale_outputs(folder: str | os.PathLike[str], written: Iterable[str], *, earlier_run: bool) -> list[Path]:
    """Remove the outputs of an earlier registration in ``folder`` that this one did not write again.

    A folder describes one registration: a ``report.html`` from a run with a
    report must not sit beside the ``result.json`` of a later run without one,
    nor a ``transform.tfm`` beside a new ``transform.json``, nor a
    ``registered.nii.gz`` beside a new ``registered_dicom/``. Nothing is
    removed unless ``earlier_run`` says the folder held a registration before
    this one wrote into it (:func:`holds_a_registration`, asked before
    writing): a ``report.html`` of the user's own in a new output folder
    stays. Only coregister's output names are touched (:data:`OUTPUT_NAMES`,
    ``registered.*``, and ``registered_dicom/`` when it holds nothing but a
    series coregister wrote); the user's other files stay.

    Examples
    --------
    >>> import tempfile
    >>> folder = Path(tempfile.mkdtemp())
    >>> for name in ("report.html", "registered.png", "result.json", "notes.txt"):
    ...     _ = (folder / name).write_text("x")
    >>> [p.name for p in remove_stale_outputs(folder, {"result.json", "registered.png"}, earlier_run=False)]
    []
    >>> [p.name for p in remove_stale_outputs(folder, {"result.json", "registered.tif"}, earlier_run=True)]
    ['report.html', 'registered.png']
    >>> sorted(p.name for p in folder.iterdir())
    ['notes.txt', 'result.json']
    """
    if not earlier_run:
        return []
    import shutil

    from coregister.io.dicom_write import SERIES_FILE_PATTERN

    folder = Path(folder)
    kept = set(written)
    candidates = [folder / name for name in OUTPUT_NAMES] + sorted(folder.glob("registered.*"))
    removed = []
    for path in candidates:
        if path.name not in kept and path.is_file():
            path.unlink()
            logger.info("removed %s, left by an earlier run in %s", path, folder)
            removed.append(path)
    series = folder / DICOM_FOLDER_NAME
    if DICOM_FOLDER_NAME not in kept and series.is_dir() and not series.is_symlink():
        files = list(series.iterdir())
        if all(f.is_file() and SERIES_FILE_PATTERN.fullmatch(f.name) for f in files):
            shutil.rmtree(series)
            logger.info("removed %s, left by an earlier run in %s", series, folder)
            removed.append(series)
    return removed
