"""ANTs transforms: affine ``*GenericAffine.mat`` and displacement fields ``*Warp.nii.gz`` / ``*InverseWarp.nii.gz``.

Direction: ANTs uses ITK's convention, as coregister does. ``antsRegistration
-o prefix_`` writes ``prefix_0GenericAffine.mat`` (an ITK affine, MATLAB
format) and ``prefix_1Warp.nii.gz`` (an ITK displacement field: a NIfTI of
shape ``(x, y, z, 1, 3)``, intent ``vector``, vectors in **LPS** mm on the
fixed image's grid). A fixed-space point ``x`` maps to the moving space as
``A(W(x))``: the warp first, then the affine, which is our
``Composite((A, W))``. ``antsApplyTransforms -r FIXED -i MOVING -t
prefix_1Warp.nii.gz -t prefix_0GenericAffine.mat`` lists them in that order
of application to the fixed points, the reverse of the composite's order
(checked against ANTsPy's ``apply_transforms``). The other direction, moving
points to fixed space (``-r MOVING -i FIXED``), is ``-t
[prefix_0GenericAffine.mat,1] -t prefix_1InverseWarp.nii.gz``: the inverse
affine (``[file,1]``) first, then the inverse field.

An ``*InverseWarp.nii.gz`` read alone is a field on the moving image's grid
that maps moving-space points to fixed space: as a coregister transform it is
the registration of the fixed image onto the moving one.

Reading takes the files in ``antsApplyTransforms -t`` order (``"[file,1]"``
marks an inverted affine); writing names them as ``antsRegistration`` does
(``0GenericAffine.mat``, ``1Warp.nii.gz``, numbered in composite order) and
returns them in ``-t`` order. Non-linear members that are not fields
(B-splines) are sampled onto the reference (fixed) grid, since ANTs users
expect warp fields; ``InverseWarp`` fields are computed on request with ITK's
iterative inversion (``InvertDisplacementFieldImageFilter``).
"""

from __future__ import annotations

import itertools
import logging
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import cast

import numpy as np

from coregister._files import OVERWRITE_FIX, refuse_existing
from coregister.errors import UnreadableInputError, UnsupportedFormatError
from coregister.image import SpatialImage
from coregister.io.transforms._field import (
    FieldParts,
    displacement_field,
    field_parts,
    read_field_image,
    sample_displacements,
    write_field_image,
)
from coregister.transforms import Affine, Composite, LinearTransform, Transform, read_transform

__all__ = ["AntsFiles", "parse_ants_argument", "read_ants", "write_ants"]

logger = logging.getLogger(__name__)

_INVERTED = re.compile(r"^\[\s*(.+?)\s*,\s*([01])\s*\]$")
_FIELD_SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd")


def parse_ants_argument(argument: str | os.PathLike[str]) -> tuple[Path, bool]:
    """``(path, inverted)`` of one ``antsApplyTransforms -t`` argument (``file`` or ``[file,1]``).

    Examples
    --------
    >>> parse_ants_argument("[out0GenericAffine.mat,1]")
    (PosixPath('out0GenericAffine.mat'), True)
    >>> parse_ants_argument("out1Warp.nii.gz")
    (PosixPath('out1Warp.nii.gz'), False)
    """
    text = os.fspath(argument)
    match = _INVERTED.match(text)
    if match:
        return Path(match.group(1)), match.group(2) == "1"
    return Path(text), False


def _is_field_file(path: Path) -> bool:
    return path.name.lower().endswith(_FIELD_SUFFIXES)


def _read_one(path: Path, inverted: bool) -> Transform:
    if not path.is_file():
        raise UnreadableInputError(f"ANTs transform file {str(path)!r} does not exist; check the path")
    if _is_field_file(path):
        if inverted:
            raise UnsupportedFormatError(
                f"[{path},1]: antsApplyTransforms cannot invert a displacement field either; pass the "
                "InverseWarp field written beside it"
            )
        return read_field_image(path)
    value = read_transform(path)
    return value.inverse() if inverted else value


def read_ants(arguments: str | os.PathLike[str] | Sequence[str | os.PathLike[str]]) -> Transform:
    """Read ANTs transform files given in ``antsApplyTransforms -t`` order as one transform (fixed -> moving).

    Parameters
    ----------
    arguments : path or sequence of paths
        As ``-t`` takes them: the first is applied first to the reference
        (fixed) points; ``"[file.mat,1]"`` inverts an affine. A ``.mat``,
        ``.txt``, ``.tfm`` or ``.h5`` is read through ITK (SimpleITK); a
        ``.nii.gz`` (``.nrrd``, ``.mha``) is a displacement field.

    Returns
    -------
    Transform
        One transform, or a :class:`~coregister.Composite` in our order
        (the reverse of ``-t``).
    """
    items = [arguments] if isinstance(arguments, str | os.PathLike) else list(arguments)
    if not items:
        raise UnreadableInputError("no ANTs transform files given")
    parts = [_read_one(*parse_ants_argument(item)) for item in items]
    return parts[0] if len(parts) == 1 else Composite(tuple(parts[::-1]))


@dataclass(frozen=True)
class AntsFiles:
    """What :func:`write_ants` wrote.

    ``forward`` are the ``antsApplyTransforms -t`` arguments that resample
    the moving image onto the fixed grid (``-r FIXED -i MOVING``);
    ``inverse`` those that resample the fixed image onto the moving grid
    (``-r MOVING -i FIXED``), or ``()`` when an inverse field was not
    written; ``files`` every file written.
    """

    files: tuple[Path, ...]
    forward: tuple[str, ...]
    inverse: tuple[str, ...]


def _prefix_and_single(path: Path) -> tuple[str, str | None]:
    """``(prefix, exact file name or None)``: a ``.mat``/``Warp.nii.gz`` path names one file, anything else a prefix."""
    name = path.name
    if name.lower().endswith((".mat", ".txt", ".tfm", ".h5")) or name.endswith("Warp.nii.gz"):
        return str(path.parent) + os.sep, name
    return str(path), None


def _sampled_runs(members: list[Transform]) -> list[Transform]:
    """``members`` with each run of consecutive B-splines (and other unsampled warps) as one composite.

    ANTs takes a warp for zero displacement off its field's grid; sampled
    one by one on the fixed grid, the second of two composed splines
    (an injective B-spline stage's) would be looked up where the first
    carried a point off that grid, and the chain would jump at the border.
    Sampled together, the run is one field of their composition.
    """
    out: list[Transform] = []
    for unsampled, group in itertools.groupby(
        members, lambda m: not isinstance(m, LinearTransform) and field_parts(m) is None
    ):
        run = tuple(group)
        out.extend([run[0] if len(run) == 1 else Composite(run)] if unsampled else run)
    return out


def write_ants(
    transform: Transform,
    path: str | os.PathLike[str],
    *,
    reference: SpatialImage | None = None,
    inverse_warp: bool = False,
    overwrite: bool = False,
) -> AntsFiles:
    """Write ``transform`` (fixed -> moving) as ANTs files named as ``antsRegistration`` names them.

    Parameters
    ----------
    transform : Transform
        Consecutive linear members are merged into one ``GenericAffine.mat``;
        fields are written as they are; B-splines are sampled onto
        ``reference``'s grid.
    path : path-like
        A prefix (``out/subj_`` gives ``out/subj_0GenericAffine.mat``,
        ``out/subj_1Warp.nii.gz``...), or the exact file for a transform that
        is one affine (``.mat``) or one field (``...Warp.nii.gz``).
    reference : SpatialImage, optional
        The fixed image; needed to sample a B-spline.
    inverse_warp : bool
        Also write ``<n>InverseWarp.nii.gz`` beside each field (numerical
        inverse on the field's grid; for a field that is not invertible
        there the result is approximate, as ANTs' own).
    overwrite : bool
        Replace files that exist; otherwise any of them is refused
        (:class:`~coregister.errors.OutputExistsError`) before a file is written.
    """
    path = Path(path)
    flat = transform.flattened() if isinstance(transform, Composite) else transform
    members = _sampled_runs(list(flat.transforms) if isinstance(flat, Composite) else [flat])
    prefix, single = _prefix_and_single(path)
    if single is not None and len(members) > 1:
        raise UnsupportedFormatError(
            f"{str(path)!r} names one file but the transform has {len(members)} parts (linear and non-linear); "
            "give a prefix such as 'out/ants_' instead"
        )
    # every file named (and every field sampled) first: an existing one is refused before anything is written
    planned: list[tuple[Transform, Path, FieldParts | None, Path | None]] = []
    for index, member in enumerate(members):
        if isinstance(member, LinearTransform):
            planned.append((member, Path(prefix + (single or f"{index}GenericAffine.mat")), None, None))
            continue
        parts = field_parts(member)
        if parts is None:
            if reference is None:
                raise UnsupportedFormatError(
                    f"a {type(member).__name__} becomes an ANTs warp field sampled on the fixed image's grid: give "
                    "reference= (--reference)"
                )
            parts = FieldParts(sample_displacements(member, reference), np.array(reference.origin),
                               np.array(reference.spacing), np.array(reference.direction))  # fmt: skip
        target = Path(prefix + (single or f"{index}Warp.nii.gz"))
        inverse_target = target.with_name(target.name.replace("Warp.nii.gz", "InverseWarp.nii.gz")) if inverse_warp else None
        planned.append((member, target, parts, inverse_target))
    for _, target, _, inverse_target in planned:
        for name in (target, inverse_target):
            if name is not None:
                refuse_existing(name, overwrite=overwrite, fix=OVERWRITE_FIX)
    files: list[Path] = []
    forward: list[str] = []
    inverse: list[str] = []
    for member, target, parts, inverse_target in planned:
        if parts is None:
            assert isinstance(member, LinearTransform)
            # an AffineTransform, as antsRegistration writes it (other readers, NiTransforms among them, expect one)
            Affine(member.matrix, member.translation, member.center).save(target)
            files.append(target)
            forward.append(str(target))
            inverse.append(f"[{target},1]")
            continue
        write_field_image(parts, target)
        files.append(target)
        forward.append(str(target))
        if inverse_target is not None:
            write_field_image(invert_field(parts), inverse_target)
            files.append(inverse_target)
            inverse.append(str(inverse_target))
    invertible = inverse_warp or all(isinstance(m, LinearTransform) for m in members)
    # forward: -t order applies the first argument first to the fixed points, the reverse of the composite's order;
    # inverse: moving points go through the inverted members in composite order
    return AntsFiles(files=tuple(files), forward=tuple(forward[::-1]), inverse=tuple(inverse) if invertible else ())


def invert_field(parts: FieldParts) -> FieldParts:
    """The inverse of a displacement field on its own grid (:meth:`coregister.transforms.DisplacementField.inverse`)."""
    inverse = displacement_field(parts.displacements, origin=parts.origin, spacing=parts.spacing,
                                 direction=parts.direction).inverse()
    mean, largest = inverse.inverse_residual_mm or (float("nan"), float("nan"))
    logger.info("inverted the displacement field: max error %.3g mm, mean %.3g mm", largest, mean)
    return cast(FieldParts, field_parts(inverse))

