"""Transforms in and out of the other tools: ITK, FSL FLIRT, elastix, ANTs, 3D Slicer and DICOM registration objects.

Every transform coregister returns maps points of the **fixed** (reference)
space to the **moving** space, in LPS millimetres (ITK's convention). Each
tool states its own direction and coordinates; the module of each format
converts, and says how in its notes:

========  =========================================  ==============================================
format    files                                      the tool's direction
========  =========================================  ==============================================
itk       ``.tfm`` ``.txt`` ``.h5`` ``.mat``          fixed -> moving, LPS (ours)
json      coregister ``.json``                       fixed -> moving, LPS (ours)
fsl       FLIRT ``.mat`` (4x4 text)                  moving (``-in``) -> reference (``-ref``), FSL
                                                     scaled-voxel mm: needs both images
elastix   ``TransformParameters.N.txt``              fixed -> moving, LPS; chains through
                                                     ``InitialTransformParameterFileName``
ants      ``*GenericAffine.mat``, ``*Warp.nii.gz``   fixed -> moving, LPS; files in
          ``*InverseWarp.nii.gz``                    ``antsApplyTransforms -t`` order
slicer    ``.tfm`` ``.h5``, grid ``.nrrd``            "from parent" (resampling), LPS: ours; the
                                                     matrix Slicer displays is "to parent", RAS
dicom     Spatial Registration (``.dcm``)             moving -> fixed (rigid/affine SRO), fixed ->
          Deformable Spatial Registration            moving (deformable); see
                                                     :mod:`coregister.io.dicom_registration`
lta       FreeSurfer ``.lta``                        converted by NiTransforms (extra ``interop``);
afni      AFNI ``.aff12.1D``                         need both images
========  =========================================  ==============================================

:func:`read_transform` and :func:`write_transform` pick the format from the
file (suffix, then content) unless ``format=`` names it; formats that need
images take ``reference=`` (the fixed image, FLIRT's ``-ref``) and
``moving=`` (FLIRT's ``-in``), as :class:`~coregister.SpatialImage` values
or paths.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from coregister._files import OVERWRITE_FIX, refuse_existing
from coregister.errors import ConfigError, UnreadableInputError, UnsupportedFormatError
from coregister.image import SpatialImage
from coregister.transforms import Transform
from coregister.transforms import read_transform as _read_itk_or_json

__all__ = [
    "TRANSFORM_FORMATS",
    "detect_transform_format",
    "read_transform",
    "write_transform",
    "writing_format",
]

logger = logging.getLogger(__name__)

#: the formats :func:`read_transform` and :func:`write_transform` take (``format=``, ``--from``/``--to``)
TRANSFORM_FORMATS = ("itk", "json", "fsl", "elastix", "ants", "slicer", "dicom", "lta", "afni")

ImageLike = SpatialImage | str | os.PathLike[str]
_ITK_SUFFIXES = (".tfm", ".h5", ".hdf5", ".xfm")
_FIELD_SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd")
_DICOM_MAGIC_OFFSET = 128


def _text_head(path: Path, size: int = 4096) -> str | None:
    """The file's first bytes as text, or None for a binary file."""
    try:
        head = path.read_bytes()[:size]
    except OSError as exc:
        raise UnreadableInputError(f"cannot read {str(path)!r}: {exc.strerror or exc}") from exc
    if b"\x00" in head:
        return None
    try:
        return head.decode("utf-8")
    except UnicodeDecodeError:
        return None


def detect_transform_format(path: str | os.PathLike[str] | Sequence[str | os.PathLike[str]]) -> str:
    """The format of a transform file, from its name and, where names are ambiguous, its content.

    A list of paths (or ``"[file,1]"``) is ANTs (``antsApplyTransforms -t``
    order). ``.mat`` is an FSL matrix when it holds 4 lines of 4 numbers
    (text), else an ITK/ANTs MATLAB file; ``.txt`` is ITK (``#Insight
    Transform File``), elastix (``(Transform ...)``) or FSL by content;
    ``*Warp.nii.gz`` is an ANTs field; other images (``.nrrd``, ``.mha``,
    ``.nii.gz``) are displacement fields as Slicer saves grid transforms.

    Examples
    --------
    >>> detect_transform_format("sub-01_from-T1w_to-MNI_xfm.h5"), detect_transform_format("out1Warp.nii.gz")
    ('itk', 'ants')
    >>> detect_transform_format(["out1Warp.nii.gz", "out0GenericAffine.mat"])
    'ants'
    """
    if not isinstance(path, str | os.PathLike):
        return "ants"
    text = os.fspath(path)
    if text.startswith("[") and text.endswith("]"):
        return "ants"
    p = Path(text)
    name = p.name.lower()
    if name.endswith(".json"):
        return "json"
    if name.endswith(("warp.nii.gz", "warp.nii", "genericaffine.mat")):
        return "ants"
    if name.endswith(_FIELD_SUFFIXES):
        return "slicer"
    if name.endswith(_ITK_SUFFIXES):
        return "itk"
    if name.endswith(".dcm"):
        return "dicom"
    if name.endswith(".lta"):
        return "lta"
    if name.endswith(".1d"):
        return "afni"
    if not p.is_file():
        raise UnreadableInputError(f"transform file {text!r} does not exist; check the path")
    head = _text_head(p)
    if head is None:
        raw = p.read_bytes()[: _DICOM_MAGIC_OFFSET + 4]
        if raw[_DICOM_MAGIC_OFFSET:] == b"DICM":
            return "dicom"
        if name.endswith(".mat"):
            return "itk"  # MATLAB v4 binary: ITK/ANTs
        raise UnsupportedFormatError(f"cannot tell the format of the binary file {text!r}; pass format=")
    from coregister.io.transforms.fsl import looks_like_flirt

    stripped = head.lstrip()
    if stripped.startswith("#Insight Transform File"):
        return "itk"
    if stripped.startswith(("(", "//")):
        return "elastix"
    if looks_like_flirt(head):
        return "fsl"
    raise UnsupportedFormatError(
        f"cannot tell the format of {text!r} from its name or content; pass format= (one of {', '.join(TRANSFORM_FORMATS)})"
    )


def _check_format(format: str | None, path: Any) -> str:
    fmt = detect_transform_format(path) if format is None else format.lower()
    if fmt not in TRANSFORM_FORMATS:
        raise ConfigError(f"format={format!r} is not a transform format coregister knows; use one of {', '.join(TRANSFORM_FORMATS)}")
    return fmt


def _image(value: ImageLike | None, role: str, fmt: str, option: str) -> SpatialImage:
    if value is None:
        raise ConfigError(f"the {fmt} format needs the {role} image: pass {option}= (--{option} on the command line)")
    if isinstance(value, SpatialImage):
        return value
    from coregister.io import read

    return read(value)


def read_itk(path: str | os.PathLike[str]) -> Transform:
    """An ITK transform file (``.tfm``, ``.txt``, ``.h5``, ``.mat``) or coregister JSON; fields in ``.h5`` included.

    :func:`coregister.transforms.read_transform`: the files checked against
    their types before SimpleITK reads them, displacement fields read as
    :class:`~coregister.transforms.DisplacementField`; a displacement-field
    image (``.nii.gz``, ``.nrrd``, ``.mha``) by :func:`~coregister.io.transforms._field.read_field_image`.
    """
    if Path(path).name.lower().endswith(_FIELD_SUFFIXES):
        from coregister.io.transforms._field import read_field_image

        return read_field_image(path)
    return _read_itk_or_json(path)


def read_transform(
    path: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
    *,
    format: str | None = None,
    reference: ImageLike | None = None,
    moving: ImageLike | None = None,
) -> Transform:
    """Read a transform written by coregister, ITK/SimpleITK, FSL FLIRT, elastix, ANTs, 3D Slicer or a DICOM SRO.

    Parameters
    ----------
    path : path, or a sequence of paths (ANTs)
        The file; for ANTs, the files in ``antsApplyTransforms -t`` order.
    format : str, optional
        One of :data:`TRANSFORM_FORMATS`; default: told from the file (see
        :func:`detect_transform_format`).
    reference : SpatialImage or path, optional
        The fixed image (FLIRT's ``-ref``): needed by ``fsl``.
    moving : SpatialImage or path, optional
        The moving image (FLIRT's ``-in``): needed by ``fsl``.

    Returns
    -------
    Transform
        Maps fixed-space points to moving space (LPS mm), whatever the
        tool's own direction (the format's module says how it was turned).

    Examples
    --------
    >>> import tempfile, pathlib
    >>> import numpy as np
    >>> from coregister import Translation
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "TransformParameters.0.txt"
    >>> grid = SpatialImage(np.zeros((4, 4, 4)), origin=(0, 0, 0), spacing=(1, 1, 1))
    >>> _ = write_transform(Translation([1.0, 2.0, 3.0]), path, reference=grid)   # elastix, by the name
    >>> read_transform(path).transform_points([0.0, 0.0, 0.0]).tolist()
    [1.0, 2.0, 3.0]
    """
    fmt = _check_format(format, path)
    if fmt == "ants":
        from coregister.io.transforms.ants import read_ants

        return read_ants(path)
    single = _single(path, fmt)
    if fmt in ("itk", "json"):
        return read_itk(single)
    if fmt == "fsl":
        from coregister.io.transforms.fsl import read_fsl

        return read_fsl(single, reference=_image(reference, "reference (fixed, FLIRT -ref)", fmt, "reference"),
                        moving=_image(moving, "moving (FLIRT -in)", fmt, "moving"))  # fmt: skip
    if fmt == "elastix":
        from coregister.io.transforms.elastix import read_elastix

        return read_elastix(single)
    if fmt == "slicer":
        from coregister.io.transforms.slicer import read_slicer

        if single.name.lower().endswith((".h5", ".hdf5")):
            return read_itk(single)
        return read_slicer(single)
    if fmt in ("lta", "afni"):
        from coregister.io.transforms.lta_afni import read_nitransforms

        return read_nitransforms(single, fmt, reference=_image(reference, "reference (fixed)", fmt, "reference"),
                                 moving=_image(moving, "moving", fmt, "moving"))  # fmt: skip
    from coregister.io.dicom_registration import read_registration

    return read_registration(single).transform


def _single(path: Any, fmt: str) -> Path:
    if not isinstance(path, str | os.PathLike):
        raise ConfigError(f"the {fmt} format reads one file; a list of files is for ANTs (format='ants')")
    single = Path(path)
    if not single.is_file():
        raise UnreadableInputError(f"transform file {str(single)!r} does not exist; check the path")
    return single


def write_transform(
    transform: Transform,
    path: str | os.PathLike[str],
    *,
    format: str | None = None,
    reference: ImageLike | None = None,
    moving: ImageLike | None = None,
    overwrite: bool = False,
) -> list[Path]:
    """Write ``transform`` (fixed -> moving) for another tool; the files written come back.

    Parameters
    ----------
    transform : Transform
        Maps fixed-space points to moving space.
    path : path-like
        The file (or, for ANTs chains, a prefix such as ``out/sub01_``).
    format : str, optional
        One of :data:`TRANSFORM_FORMATS`; default: told from the name
        (``.mat`` is written as ITK/ANTs unless ``format="fsl"``).
    reference, moving : SpatialImage or path, optional
        The fixed and moving images: ``fsl`` needs both, ``elastix`` the
        reference (the grid transformix resamples onto), ``ants`` and
        ``slicer`` the reference to sample a B-spline as a field, ``dicom``
        both, read from DICOM (the registration object references them).
    overwrite : bool
        Replace files that exist. Otherwise an existing one (any file of an
        ANTs or elastix chain) is refused before anything is written
        (:class:`~coregister.errors.OutputExistsError`), as :func:`coregister.write` does.

    Returns
    -------
    list of Path
        The files written. ANTs: in ``antsApplyTransforms -t`` order;
        elastix: the chain, the file for transformix last.
    """
    target = Path(path)
    fmt = format.lower() if format is not None else writing_format(target)
    if fmt not in TRANSFORM_FORMATS:
        raise ConfigError(f"format={format!r} is not a transform format coregister knows; use one of {', '.join(TRANSFORM_FORMATS)}")
    if fmt not in ("elastix", "ants"):  # one file, named by path; the chains check each of theirs
        refuse_existing(target, overwrite=overwrite, fix=OVERWRITE_FIX)
    if fmt in ("itk", "json"):
        return [transform.save(target)]
    if fmt == "fsl":
        from coregister.io.transforms.fsl import write_fsl

        return [write_fsl(transform, target, reference=_image(reference, "reference (fixed, FLIRT -ref)", fmt, "reference"),
                          moving=_image(moving, "moving (FLIRT -in)", fmt, "moving"))]  # fmt: skip
    if fmt == "elastix":
        from coregister.io.transforms.elastix import write_elastix

        return write_elastix(transform, target, reference=_image(reference, "reference (fixed)", fmt, "reference"),
                             overwrite=overwrite)
    if fmt == "ants":
        from coregister.io.transforms.ants import write_ants

        grid = None if reference is None else _image(reference, "reference", fmt, "reference")
        written = write_ants(transform, target, reference=grid, overwrite=overwrite)
        return [Path(p) for p in written.forward]
    if fmt == "slicer":
        from coregister.io.transforms.slicer import write_slicer

        grid = None if reference is None else _image(reference, "reference", fmt, "reference")
        return [write_slicer(transform, target, reference=grid)]
    if fmt in ("lta", "afni"):
        from coregister.io.transforms.lta_afni import write_nitransforms

        return [write_nitransforms(transform, target, fmt, reference=_image(reference, "reference (fixed)", fmt, "reference"),
                                   moving=_image(moving, "moving", fmt, "moving"))]  # fmt: skip
    from coregister.io.dicom_registration import write_registration

    return [write_registration(transform, target, fixed=_image(reference, "fixed (reference)", fmt, "reference"),
                               moving=_image(moving, "moving", fmt, "moving"))]  # fmt: skip


def writing_format(path: str | os.PathLike[str]) -> str:
    """The format :func:`write_transform` writes to ``path`` when ``format=`` is not given.

    Examples
    --------
    >>> writing_format("flirt.mat"), writing_format("TransformParameters.0.txt"), writing_format("reg.dcm")
    ('itk', 'elastix', 'dicom')
    """
    name = Path(path).name.lower()
    if name.endswith(".json"):
        return "json"
    if name.endswith(".dcm"):
        return "dicom"
    if name.endswith(("warp.nii.gz", "warp.nii")):
        return "ants"
    if name.endswith(_FIELD_SUFFIXES):
        return "slicer"
    if name.endswith((*_ITK_SUFFIXES, ".mat")):
        return "itk"
    if name.endswith(".txt"):
        return "elastix" if name.startswith("transformparameters") else "itk"
    if name.endswith(".lta"):
        return "lta"
    if name.endswith(".1d"):
        return "afni"
    raise UnsupportedFormatError(
        f"cannot tell which format to write from {os.fspath(path)!r}; pass format= (one of {', '.join(TRANSFORM_FORMATS)})"
    )
