"""The files a registration leaves behind, named and written the same way by ``coregister register``, batch and demo.

A registration's folder holds ``registered.<ext>`` (the moving image on the
fixed grid, in the fixed image's format), ``transform.tfm`` (or
``transform.json`` for what ITK cannot store, ``transform.h5`` for a
displacement field), ``result.json`` and, on request, ``report.html`` and
``registration.dcm`` (a DICOM Spatial Registration object, for DICOM
inputs). A deformable answer adds what other tools read
(:func:`write_deformation`): ``jacobian.nii.gz`` and, for a displacement
field, ``warp.nii.gz``, ``inverse_warp.nii.gz`` and ``affine.mat``, named and
ordered as ANTs' ``1Warp.nii.gz``, ``1InverseWarp.nii.gz`` and
``0GenericAffine.mat``.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from coregister._files import atomic_path, part_folder, refuse_existing, refuse_overwriting_input
from coregister.errors import OutputExistsError, UnsupportedFormatError
from coregister.image import SpatialImage
from coregister.io.detect import FORMATS, detect_format
from coregister.pipeline.result import Result
from coregister.transforms import Composite, LinearTransform, Transform, field_members

__all__ = [
    "DICOM_FOLDER_NAME",
    "DICOM_REGISTRATION_NAME",
    "OUTPUT_NAMES",
    "existing_outputs",
    "for_writing",
    "output_names",
    "holds_a_registration",
    "package_versions",
    "publish_registration",
    "publish_staged",
    "recorded_outputs",
    "refuse_existing_outputs",
    "refuse_overwriting_inputs",
    "registered_name",
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

#: The DICOM (Deformable) Spatial Registration object of a registration of two DICOM series (``--dicom-registration``).
DICOM_REGISTRATION_NAME = "registration.dcm"
#: The deformation files of a deformable registration (:func:`write_deformation`).
DEFORMATION_NAMES = ("warp.nii.gz", "inverse_warp.nii.gz", "affine.mat", "jacobian.nii.gz")
#: The files of a registration's folder besides ``registered.<ext>``.
OUTPUT_NAMES = ("transform.tfm", "transform.h5", "transform.json", "result.json", "report.html", DICOM_REGISTRATION_NAME,
                *DEFORMATION_NAMES)


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
    if field_members(transform):
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


def package_versions() -> dict[str, str]:
    """The versions of coregister and of the libraries that decide its answers (for ``result.json``).

    Examples
    --------
    >>> sorted(package_versions())[:3]
    ['SimpleITK', 'coregister', 'nibabel']
    """
    from importlib import metadata

    out = {}
    for name in ("coregister", "SimpleITK", "numpy", "scipy", "scikit-image", "opencv-python-headless", "nibabel",
                 "pydicom", "rasterio"):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    if "coregister" not in out:
        from coregister._version import __version__

        out["coregister"] = __version__
    import platform

    out["python"] = platform.python_version()
    return dict(sorted(out.items(), key=lambda item: item[0].lower()))


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
    provenance: dict[str, Any] | None = None,
    dicom_registration: bool = False,
) -> list[Path]:
    """Resample ``moving`` onto ``fixed`` through ``result.transform`` and write the registration's files into ``folder``.

    Returns the paths written: the registered image (``image_name``), the
    transform (:func:`transform_name`), ``result.json`` and, with ``report``,
    ``report.html``. With ``output_format="dicom"`` the registered image is a
    derived DICOM series in the folder ``image_name`` (the fixed image's
    patient, study and frame of reference, the moving image's modality).
    ``command`` (the command line that ran, when there was one) is shown in
    the report. ``result.json`` also records the package versions
    (:func:`package_versions`), the names of the files written (``outputs``:
    what a later run with ``--overwrite`` may remove) and ``provenance``.
    With ``dicom_registration``, also :data:`DICOM_REGISTRATION_NAME`:
    the transform as a DICOM Spatial Registration object (or a Deformable
    one) referencing both series, which must have been read from DICOM
    (:func:`coregister.io.dicom_registration.write_registration`).
    The folder is expected to be new (:func:`publish_registration` writes
    into a temporary one); an existing file is refused
    (:class:`~coregister.errors.OutputExistsError`), and so is a folder
    where one of them would replace the file ``fixed`` or ``moving`` was
    read from.
    """
    from coregister.io import write
    from coregister.resample import apply

    refuse_overwriting_inputs(
        folder, image_name, [fixed.meta.get("source_path"), moving.meta.get("source_path")],
        fix="write the registration into another folder",
    )
    names = [image_name, transform_name(result.transform), "result.json"] + (["report.html"] if report else [])
    names += [DICOM_REGISTRATION_NAME] if dicom_registration else []
    registered = apply(
        result.transform, moving, reference=fixed, output_dtype=writable_dtype(moving, fixed, image_name), threads=threads
    )
    if output_format == "dicom":
        image_path = write(registered, folder / image_name, format="dicom", values_from=moving)
    else:
        image_path = write(for_writing(registered, image_name), folder / image_name)
    written = [image_path, result.transform.save(folder / names[1]), *write_deformation(folder, result.transform, fixed)]
    if dicom_registration:
        from coregister.io.dicom_registration import write_registration as write_dicom_registration

        written.append(write_dicom_registration(result.transform, folder / DICOM_REGISTRATION_NAME, fixed=fixed,
                                                moving=moving))  # fmt: skip
    names += [p.name for p in written[2:] if p.name not in names]  # the deformation files
    record = {**result.to_dict(), "versions": package_versions(), "outputs": names, **(provenance or {})}
    json_path = folder / "result.json"
    refuse_existing(json_path, overwrite=False)
    with atomic_path(json_path, overwrite=False) as tmp:
        tmp.write_text(json.dumps(record, indent=2))
    written.append(json_path)
    if report:
        from coregister.qc.report import write_report

        written.append(write_report(result, fixed, moving, registered, folder / "report.html", command=command))
    return written


def recorded_outputs(folder: str | os.PathLike[str]) -> list[str] | None:
    """The file names the registration in ``folder`` recorded as its own (``result.json``'s ``outputs``), or None.

    None when ``folder`` holds no ``result.json`` of a registration
    (:func:`holds_a_registration`); an empty list for one written before the
    record existed (nothing of it is known to be coregister's).

    Examples
    --------
    >>> import tempfile
    >>> folder = Path(tempfile.mkdtemp())
    >>> recorded_outputs(folder) is None
    True
    >>> _ = (folder / "result.json").write_text('{"transform": {}, "engine": "sitk", "metrics": {}, '
    ...                                         '"outputs": ["registered.png", "result.json"]}')
    >>> recorded_outputs(folder)
    ['registered.png', 'result.json']
    """
    try:
        saved = json.loads((Path(folder) / "result.json").read_text())
    except (OSError, ValueError):
        return None
    if not (isinstance(saved, dict) and {"transform", "engine", "metrics"} <= saved.keys()):
        return None
    names = saved.get("outputs")
    if not isinstance(names, list):
        return []
    return [n for n in names if isinstance(n, str) and n == Path(n).name and n not in ("", ".", "..")]


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
    fields = field_members(transform)
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
    return recorded_outputs(folder) is not None


def existing_outputs(folder: str | os.PathLike[str], names: Iterable[str]) -> list[str]:
    """What in ``folder`` a registration writing ``names`` would replace: those names, and an earlier run's ``result.json``.

    Examples
    --------
    >>> import tempfile
    >>> folder = Path(tempfile.mkdtemp())
    >>> _ = (folder / "report.html").write_text("the user's own page")
    >>> existing_outputs(folder, ["registered.png", "result.json"])
    []
    >>> existing_outputs(folder, ["registered.png", "result.json", "report.html"])
    ['report.html']
    """
    folder = Path(folder)
    if not folder.is_dir():
        return []
    found = {name for name in names if (folder / name).exists() or (folder / name).is_symlink()}
    if holds_a_registration(folder):
        found.add("result.json")
    return sorted(found)


def output_names(image_name: str, *, report: bool, dicom_registration: bool = False) -> list[str]:
    """The names a registration may write: ``image_name``, both transform names, ``result.json``, ``report.html``.

    With ``dicom_registration``, also :data:`DICOM_REGISTRATION_NAME`.

    Examples
    --------
    >>> output_names("registered.png", report=False)
    ['registered.png', 'transform.tfm', 'transform.json', 'result.json']
    >>> output_names("registered.nii.gz", report=True, dicom_registration=True)[-2:]
    ['report.html', 'registration.dcm']
    """
    return ([image_name, "transform.tfm", "transform.json", "result.json"] + (["report.html"] if report else [])
            + ([DICOM_REGISTRATION_NAME] if dicom_registration else []))


def refuse_existing_outputs(folder: str | os.PathLike[str], names: Iterable[str], *, overwrite: bool, fix: str) -> None:
    """Raise :class:`~coregister.errors.OutputExistsError` when writing ``names`` into ``folder`` would replace something.

    Something is an earlier registration (its ``result.json``) or any file
    of ``names``; nothing is refused with ``overwrite``.

    Examples
    --------
    >>> import tempfile
    >>> folder = Path(tempfile.mkdtemp())
    >>> refuse_existing_outputs(folder, ["result.json"], overwrite=False, fix="pass --overwrite")
    >>> _ = (folder / "result.json").write_text("{}")
    >>> refuse_existing_outputs(folder, ["result.json"], overwrite=False, fix="pass --overwrite to replace them")
    Traceback (most recent call last):
    ...
    coregister.errors.OutputExistsError: '...' already holds outputs this run would replace (result.json); pass --overwrite to replace them
    """
    if overwrite:
        return
    found = existing_outputs(folder, names)
    if found:
        shown = ", ".join(found[:5]) + (", ..." if len(found) > 5 else "")
        raise OutputExistsError(f"{str(folder)!r} already holds outputs this run would replace ({shown}); {fix}")


def publish_registration(
    outdir: str | os.PathLike[str],
    result: Result,
    fixed: SpatialImage,
    moving: SpatialImage,
    *,
    image_name: str,
    overwrite: bool = False,
    fix: str = "pass overwrite=True (command line: --overwrite) to replace them, or choose another folder",
    **options: Any,
) -> list[Path]:
    """:func:`write_registration` into a temporary folder beside ``outdir``, moved into ``outdir`` when all succeeded.

    The outputs appear together or not at all: a failure or an interrupt
    leaves ``outdir`` as it was (the temporary folder goes; one left by a
    killed process is swept by the next run beside it). An ``outdir`` that
    already holds a registration's outputs is refused
    (:class:`~coregister.errors.OutputExistsError`, before anything is
    written) unless ``overwrite``; then the new files replace the old, and
    those of the earlier run that this one did not write again (a
    ``report.html`` beside a run without one, a ``transform.tfm`` beside a
    new ``transform.json``) are removed, but only those the earlier run's
    ``result.json`` lists as its own (:func:`recorded_outputs`): files the
    package did not write are never deleted. ``options`` go to
    :func:`write_registration`. Returns the paths in ``outdir``.
    """
    outdir = Path(outdir)
    parent = outdir.parent if str(outdir.parent) else Path(".")
    if outdir.exists() and not outdir.is_dir():
        raise OutputExistsError(f"{str(outdir)!r} exists and is not a folder; choose another output folder")
    names = [image_name, transform_name(result.transform), "result.json"] + (["report.html"] if options.get("report") else [])
    names += [DICOM_REGISTRATION_NAME] if options.get("dicom_registration") else []
    refuse_existing_outputs(outdir, names, overwrite=overwrite, fix=fix)
    with part_folder(parent, outdir.name) as staging:
        written = write_registration(staging, result, fixed, moving, image_name=image_name, **options)
        # another run may have written meanwhile; a deformable answer also wrote its deformation files
        refuse_existing_outputs(outdir, [p.name for p in written], overwrite=overwrite, fix=fix)
        return publish_staged(staging, outdir, [p.name for p in written])


def publish_staged(staging: Path, outdir: Path, names: Iterable[str]) -> list[Path]:
    """Move ``names`` from a ``.part`` folder ``staging`` into ``outdir``, ``result.json`` last (it says the rest is there).

    The outputs of the earlier run in ``outdir`` that these do not replace
    go (:func:`remove_stale_outputs`); the caller has already refused to
    replace anything without overwrite (:func:`refuse_existing_outputs`).
    Returns the paths in ``outdir``.
    """
    names = list(names)
    earlier = recorded_outputs(outdir) or []
    outdir.mkdir(exist_ok=True)
    for name in sorted(names, key=lambda n: n == "result.json"):
        item = staging / name
        if item.is_dir():  # a DICOM series: replaces the one a previous run wrote
            from coregister.io.dicom_write import move_series_folder

            move_series_folder(item, outdir / name)
        else:
            os.replace(item, outdir / name)
    remove_stale_outputs(outdir, names, earlier=earlier)
    return [outdir / name for name in names]


def remove_stale_outputs(folder: str | os.PathLike[str], written: Iterable[str], *, earlier: Iterable[str]) -> list[Path]:
    """Remove the outputs of an earlier registration in ``folder`` that this one did not write again.

    A folder describes one registration: a ``report.html`` from a run with a
    report must not sit beside the ``result.json`` of a later run without one,
    nor a ``transform.tfm`` beside a new ``transform.json``, nor a
    ``registered.nii.gz`` beside a new ``registered_dicom/``. Only the names
    in ``earlier`` (what the earlier run's ``result.json`` listed as its own,
    :func:`recorded_outputs`) are candidates, and among them only
    coregister's output names (:data:`OUTPUT_NAMES`, ``registered.*``, and
    ``registered_dicom/`` when it holds nothing but a series coregister
    wrote): a ``report.html`` of the user's own stays, and so do the user's
    other files.

    Examples
    --------
    >>> import tempfile
    >>> folder = Path(tempfile.mkdtemp())
    >>> for name in ("report.html", "registered.png", "result.json", "notes.txt"):
    ...     _ = (folder / name).write_text("x")
    >>> [p.name for p in remove_stale_outputs(folder, {"result.json", "registered.tif"}, earlier=[])]
    []
    >>> earlier = ["registered.png", "result.json", "report.html", "notes.txt"]
    >>> [p.name for p in remove_stale_outputs(folder, {"result.json", "registered.tif"}, earlier=earlier)]
    ['report.html', 'registered.png']
    >>> sorted(p.name for p in folder.iterdir())
    ['notes.txt', 'result.json']
    """
    import shutil

    from coregister.io.dicom_write import SERIES_FILE_PATTERN

    folder = Path(folder)
    kept, listed = set(written), set(earlier)
    ours = [name for name in OUTPUT_NAMES if name in listed] + sorted(
        p.name for p in folder.glob("registered.*") if p.name in listed
    )
    removed = []
    for name in ours:
        path = folder / name
        if name not in kept and path.is_file() and not path.is_symlink():
            path.unlink()
            logger.info("removed %s, left by an earlier run in %s", path, folder)
            removed.append(path)
    series = folder / DICOM_FOLDER_NAME
    if DICOM_FOLDER_NAME in listed and DICOM_FOLDER_NAME not in kept and series.is_dir() and not series.is_symlink():
        files = list(series.iterdir())
        if all(f.is_file() and SERIES_FILE_PATTERN.fullmatch(f.name) for f in files):
            shutil.rmtree(series)
            logger.info("removed %s, left by an earlier run in %s", series, folder)
            removed.append(series)
    return removed
