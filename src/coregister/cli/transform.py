"""``coregister transform convert``: a transform from one tool's files to another's (ITK, FSL, elastix, ANTs, Slicer, DICOM).

Every format keeps the transform's meaning, the map from reference (fixed)
points to moving points; each tool stores it in its own direction and
coordinates, which :mod:`coregister.io.transforms` converts.
"""

from __future__ import annotations

import logging
from pathlib import Path

import click

from coregister.cli._options import overwrite_option
from coregister.cli._output import echo_json, json_option, quiet
from coregister.image import SpatialImage
from coregister.io.transforms import TRANSFORM_FORMATS

__all__ = ["convert", "transform"]

logger = logging.getLogger(__name__)

_DATA = "data/nibabel_anat_func"
_EXAMPLE = (
    "\b\nExample (no network needed: a head registered, then its transform for FLIRT and for ANTs):\n"
    "  coregister data fetch nibabel_anat_func --dest data\n"
    f"  coregister register {_DATA}/anatomical.nii \\\n    {_DATA}/reoriented_anat_moved.nii -o reg-out -q\n"
    f"  coregister transform convert reg-out/transform.tfm reg-out/flirt.mat --to fsl \\\n"
    f"    --reference {_DATA}/anatomical.nii --moving {_DATA}/reoriented_anat_moved.nii\n"
    "  coregister transform convert reg-out/flirt.mat reg-out/ants_ --from fsl --to ants \\\n"
    f"    --reference {_DATA}/anatomical.nii --moving {_DATA}/reoriented_anat_moved.nii"
)

_OVERWRITE = "pass --overwrite to replace it, or choose another OUT"

_HOW_TO_USE = {
    "fsl": "flirt -in {moving} -ref {reference} -applyxfm -init {out} -out moved_on_reference",
    "elastix": "transformix -tp {out} -in {moving} -out transformix_out",
    "ants": "antsApplyTransforms -d 3 -r {reference} -i {moving} {ts} -o moved_on_reference.nii.gz",
    "slicer": "Slicer: load {out} and put the moving volume under it (it then lies on the reference)",
    "itk": "coregister apply {out} {moving} --reference {reference} -o moved_on_reference.nii.gz",
    "json": "coregister apply {out} {moving} --reference {reference} -o moved_on_reference.nii.gz",
    "dicom": "a PACS or planning system reads {out} with both series",
    "lta": "mri_vol2vol --mov {moving} --targ {reference} --lta {out} --o moved_on_reference.nii.gz",
    "afni": "3dAllineate -source {moving} -master {reference} -1Dmatrix_apply {out} -prefix moved_on_reference",
}


@click.group("transform", epilog=_EXAMPLE)
def transform() -> None:
    """Transforms of other tools: convert between coregister/ITK, FSL FLIRT, elastix, ANTs, 3D Slicer and DICOM."""


@transform.command("convert", epilog=_EXAMPLE)
@click.argument("inputs", metavar="IN...", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.argument("output", metavar="OUT", type=click.Path(path_type=Path))
@click.option("--reference", type=click.Path(path_type=Path),
              help="The reference (fixed) image: FLIRT's -ref; the grid of elastix files and of sampled warps.")
@click.option("--moving", type=click.Path(path_type=Path), help="The moving image: FLIRT's -in.")
@click.option("--from", "from_format", type=click.Choice(TRANSFORM_FORMATS, case_sensitive=False),
              help="Format of IN (default: told from the file).")
@click.option("--to", "to_format", type=click.Choice(TRANSFORM_FORMATS, case_sensitive=False),
              help="Format of OUT (default: told from its name; a .mat is ITK/ANTs unless --to fsl).")
@click.option("--inverse-warp", is_flag=True,
              help="ANTs: also write <n>InverseWarp.nii.gz beside each warp (ITK's iterative inversion) and print the "
              "-t order that takes the fixed image onto the moving grid.")
@overwrite_option
@json_option
def convert(
    inputs: tuple[Path, ...],
    output: Path,
    reference: Path | None,
    moving: Path | None,
    from_format: str | None,
    to_format: str | None,
    inverse_warp: bool,
    as_json: bool,
    overwrite: bool = False,
) -> None:
    """Convert the transform IN into OUT, keeping its meaning (reference/fixed points -> moving points).

    IN is one file, or for ANTs several in antsApplyTransforms -t order.
    OUT is a file, or for ANTs chains a prefix (out/sub01_ gives
    out/sub01_0GenericAffine.mat, out/sub01_1Warp.nii.gz). Directions:
    FSL matrices map the moving image (-in) to the reference in scaled-voxel
    mm and need both images; elastix and ANTs map fixed to moving in LPS as
    coregister does (ANTs -t order applies the first file first to the
    reference points); Slicer files hold the "from parent" transform in LPS
    (its displayed matrix is "to parent", RAS); a DICOM Spatial Registration
    object stores moving -> fixed and needs both DICOM series. A file that
    exists (any of a chain's) is replaced only with --overwrite.
    """
    from coregister._files import refuse_existing, refuse_overwriting_input
    from coregister.io.transforms import detect_transform_format, read_transform, write_transform, writing_format

    for given in (*inputs, reference, moving):  # even with --overwrite: an input is never replaced
        refuse_overwriting_input(output, given, fix="choose another OUT")
    if not output.is_dir():  # a file named OUT: refused before any work (the files of a chain, before any is written)
        refuse_existing(output, overwrite=overwrite, fix=_OVERWRITE)
    source = [str(p) for p in inputs] if len(inputs) > 1 else inputs[0]
    reference_image = _read_image(reference)
    moving_image = _read_image(moving)
    value = read_transform(source, format=from_format, reference=reference_image, moving=moving_image)
    target = (to_format or writing_format(output)).lower()
    inverse: tuple[str, ...] = ()
    extra: list[Path] = []
    if inverse_warp:
        if target != "ants":
            raise click.UsageError(f"--inverse-warp writes ANTs InverseWarp files; OUT is {target}: add --to ants")
        from coregister.io.transforms.ants import write_ants

        files = write_ants(value, output, reference=reference_image, inverse_warp=True, overwrite=overwrite)
        written, inverse = [Path(p) for p in files.forward], files.inverse
        extra = [p for p in files.files if p not in written]
    else:
        written = write_transform(value, output, format=to_format, reference=reference_image, moving=moving_image,
                                  overwrite=overwrite)
    read_as = (from_format or detect_transform_format(source)).lower()
    hint = _HOW_TO_USE[target].format(
        out=written[-1], moving=moving or "MOVING", reference=reference or "REFERENCE",
        ts=" ".join(f"-t {p}" for p in written),
    )  # fmt: skip
    if as_json:
        echo_json({"inputs": [str(p) for p in inputs], "from": read_as, "to": target,
                   "outputs": [str(p) for p in [*written, *extra]], "transform": type(value).__name__,
                   "use": hint, "inverse": list(inverse)})  # fmt: skip
    elif not quiet():
        click.echo(f"read {', '.join(str(p) for p in inputs)} ({read_as}); wrote {', '.join(str(p) for p in [*written, *extra])} ({target})")
        click.echo(f"use: {hint}")
        if inverse:
            click.echo("inverse (the reference image onto the moving grid): antsApplyTransforms -d 3 -r MOVING -i "
                       f"REFERENCE {' '.join(f'-t {t}' for t in inverse)} -o reference_on_moving.nii.gz")


def _read_image(path: Path | None) -> SpatialImage | None:
    if path is None:
        return None
    from coregister.io import read

    return read(path)
