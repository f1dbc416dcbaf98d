"""``coregister register`` and ``coregister apply``: register two images, resample with a saved transform.

``register`` writes into OUTDIR ``registered.<fixed image's extension>``
(``.nii.gz`` for a DICOM fixed image), ``transform.tfm`` (``transform.json``
for a homography, which ITK cannot store), ``result.json`` and, with
``--report``, ``report.html``; with ``--output-format dicom`` the registered
image is ``registered_dicom/``, a derived DICOM series (the fixed image's
patient, study and frame of reference, a new series); with
``--dicom-registration`` (two DICOM series), ``registration.dcm``, a DICOM
Spatial Registration object (Deformable for a B-spline) that references
both series and holds the transform as a PACS or a planning system reads
it. The outputs appear together: they are written into a temporary folder
beside OUTDIR and moved in only when all of them
succeeded, so a failed or interrupted run leaves no partial content
(:func:`coregister.outputs.publish_registration`). An OUTDIR that holds
the outputs of an earlier run, and an existing ``apply`` output, are
replaced only with ``--overwrite`` (rasterio's ``rio`` convention). A run
whose quality check failed still writes everything, then exits with code 3.

With ``--halfway`` (a longitudinal pair) both images are registered both
ways and written resampled once onto a halfway grid
(``fixed_halfway.<ext>``, ``moving_halfway.<ext>``), with the half
transforms ``halfway_to_fixed.tfm`` and ``halfway_to_moving.tfm`` (halfway
points -> each image's points) and ``transform.tfm``, the symmetric fixed ->
moving map (:func:`coregister.medical.halfway`).

The transform maps fixed-space points to moving space (ITK's convention):
``coregister apply transform.tfm MOVING --reference FIXED`` resamples the
moving image onto the fixed grid with it.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import click
import numpy as np

from coregister._files import check_writable, refuse_existing, refuse_overwriting_input
from coregister.cli import QualityCheckFailed
from coregister.cli._options import (
    dicom_series,
    interpolation_option,
    name_series_option,
    overwrite_option,
    registration_options,
    series_option,
    threads_option,
)
from coregister.cli._output import (
    VERDICT_WORDS,
    command_line,
    echo_json,
    echo_warning,
    json_option,
    print_table,
    quality_failure_line,
    quiet,
)
from coregister.errors import GeometryError
from coregister.image import SpatialImage
from coregister.outputs import (
    for_writing,
    output_names,
    package_versions,
    publish_registration,
    publish_staged,
    refuse_existing_outputs,
    refuse_overwriting_inputs,
    registered_name,
    writable_dtype,
)
from coregister.pipeline.result import Result

__all__ = ["apply_command", "register", "registered_name"]

logger = logging.getLogger(__name__)

#: the help examples' data: nibabel's T1 head and the same head moved by a known rigid motion (SPM12, 4 mm grid),
#: copied from the installed nibabel by their first line
_FETCH = "coregister data fetch nibabel_anat_func --dest data"
_FIXED = "data/nibabel_anat_func/anatomical.nii"
_MOVING = "data/nibabel_anat_func/reoriented_anat_moved.nii"
#: --output-format choices: "dicom" writes a derived DICOM series (a folder) instead of one image file
OUTPUT_FORMATS = ("dicom",)
#: how a refusal to replace outputs says what to do
_OVERWRITE_FOLDER = "pass --overwrite to replace them, or choose another -o folder"
_OVERWRITE_FILE = "pass --overwrite to replace it, or choose another -o path"



def _output_format_option(what: str) -> Any:
    return click.option(
        "--output-format",
        type=click.Choice(OUTPUT_FORMATS, case_sensitive=False),
        default=None,
        help=f"dicom: the output as a derived DICOM series in {what} (one file per slice; the patient, study and "
        "frame of reference of the fixed/reference image, a new series UID). Default: one image file.",
    )


def _read(path: Path, what: str, *, series: str | None = None, flag: str | None = None) -> SpatialImage:
    """Read an input; ``flag`` is the option that picks its DICOM series (named in the reader's hint)."""
    from coregister.errors import AmbiguousSeriesError
    from coregister.io import read

    options = dicom_series(path, series, flag) if flag is not None else {}
    try:
        image = read(path, **options)
    except AmbiguousSeriesError as exc:
        if flag is None:
            raise
        raise AmbiguousSeriesError(name_series_option(str(exc), flag)) from exc
    logger.info("%s: %s", what, image)
    return image


def _input_facts(path: Path, image: SpatialImage) -> dict[str, Any]:
    """What --json says about an input: its path and, for DICOM, the series read."""
    facts: dict[str, Any] = {"path": str(path)}
    if image.meta.get("format") == "dicom":
        facts["series_uid"] = image.meta.get("series_uid")
    return facts


def _mask_on(grid: SpatialImage, path: Path, what: str) -> np.ndarray:
    """A boolean mask on ``grid`` from a mask image (non-zero = use), resampled by nearest neighbour if needed."""
    from coregister.resample import apply
    from coregister.transforms import Translation

    mask = _read(path, what)
    if mask.ndim != grid.ndim:
        raise GeometryError(f"{what} {str(path)!r} is {mask.ndim}D but its image is {grid.ndim}D; give a mask of the same dimension")
    if mask.has_channels:
        mask = mask.channel(0)
    if not mask.same_geometry(grid):
        logger.info("%s lies on another grid: resampled onto its image's grid (nearest neighbour)", what)
        mask = apply(Translation(np.zeros(grid.ndim)), mask, reference=grid, interpolation="nearest")
    values = np.asarray(mask.array) != 0
    if not values.any():
        raise GeometryError(f"{what} {str(path)!r} has no non-zero pixel on the image's grid; check the file")
    return values


def _summary(result: Result, written: list[Path]) -> None:
    before, after = result.metrics.get("before", {}), result.metrics.get("after", {})
    rows = []
    for key in ("ncc", "mi", "mse", "ssim"):
        if key in before or key in after:
            rows.append((key, _fmt(before.get(key)), _fmt(after.get(key))))
    click.echo(
        f"{result.engine or 'registration'}: {VERDICT_WORDS[result.verdict.value]} "
        f"in {result.time_s:.2f} s (seed {result.seed}, {result.threads} thread(s))"
    )
    print_table(
        None,
        ["metric", "before", "after"],
        rows,
        justify=["left", "right", "right"],
    )
    for warning in result.warnings:
        echo_warning(warning)
    click.echo("wrote " + ", ".join(str(p) for p in written))


def _fmt(value: Any) -> str:
    return "" if value is None else f"{float(value):.6g}"


@click.command(
    "register",
    epilog=(
        "\b\nExample (no network needed; a T1 head and the same head moved by a known rigid motion):\n"
        f"  {_FETCH}\n"
        f"  coregister register {_FIXED} {_MOVING} \\\n    -o reg-out --preset rigid"
    ),
)
@click.argument("fixed", type=click.Path(path_type=Path))
@click.argument("moving", type=click.Path(path_type=Path))
@click.option("-o", "--outdir", type=click.Path(path_type=Path), required=True, help="Output folder (created if needed).")
@series_option("--fixed-series", "FIXED")
@series_option("--moving-series", "MOVING")
@registration_options
@click.option("--report", is_flag=True, help="Also write OUTDIR/report.html (self-contained QC pictures).")
@click.option("--halfway", is_flag=True,
              help="Longitudinal pair: register both ways, average symmetrically and write both images resampled once "
              "onto a halfway grid (fixed_halfway.<ext>, moving_halfway.<ext>) with the half transforms "
              "halfway_to_fixed.tfm and halfway_to_moving.tfm; transform.tfm is the symmetric fixed -> moving map. "
              "Neither image is favoured: swapping them gives the same halfway space.")
@_output_format_option("the folder OUTDIR/registered_dicom/, instead of registered.<ext>")
@overwrite_option
@click.option("--fit-memory", is_flag=True,
              help="When the registration's estimated peak exceeds --max-memory (or the machine's memory), run it on "
              "grids coarsened by the smallest whole factor that fits, instead of refusing.")
@click.option("--dicom-registration", is_flag=True,
              help="Also write OUTDIR/registration.dcm: a DICOM Spatial Registration object (Deformable Spatial "
              "Registration for a B-spline) referencing both series; FIXED and MOVING must be DICOM series.")
@json_option
@click.pass_context
def register(
    ctx: click.Context,
    fixed: Path,
    moving: Path,
    outdir: Path,
    fixed_series: str | None,
    moving_series: str | None,
    preset: str,
    metric: str | None,
    precise: bool,
    iterations: int | None,
    initialisation: str | None,
    initial_transform: Path | None,
    detector: str | None,
    fixed_mask: Path | None,
    moving_mask: Path | None,
    seed: int,
    threads: int | None,
    report: bool,
    as_json: bool,
    output_format: str | None = None,
    overwrite: bool = False,
    fit_memory: bool = False,
    halfway: bool = False,
    dicom_registration: bool = False,
) -> None:
    """Register MOVING onto FIXED and write the registered image, the transform and result.json into OUTDIR.

    The transform maps fixed-space points to moving space (ITK's convention);
    `coregister apply` resamples any image of the moving space with it.
    Exit code 3: the registration ran but failed its quality check (the
    outputs are written all the same). An OUTDIR holding an earlier run's
    outputs is replaced only with --overwrite.
    """
    if halfway and (initial_transform is not None or output_format or dicom_registration):
        raise click.UsageError("--halfway registers both ways from the images themselves and writes image files: it "
                               "takes neither --initial-transform nor --output-format nor --dicom-registration")
    check_writable(outdir, folder=True, fix="choose another -o folder")
    output_format = output_format.lower() if output_format else None
    image_name = registered_name(fixed, output_format=output_format)
    sources = [fixed, moving, fixed_mask, moving_mask, initial_transform]
    refuse_overwriting_inputs(outdir, image_name, sources, fix="choose another -o folder")
    names = output_names(image_name, report=report, dicom_registration=dicom_registration)
    if halfway:
        names = _halfway_names(fixed, report=report)
        for name in names:
            refuse_overwriting_inputs(outdir, name, sources, fix="choose another -o folder")
    refuse_existing_outputs(outdir, names, overwrite=overwrite, fix=_OVERWRITE_FOLDER)
    fixed_image = _read(fixed, "fixed image", series=fixed_series, flag="--fixed-series")
    moving_image = _read(moving, "moving image", series=moving_series, flag="--moving-series")
    if fixed_image.ndim != moving_image.ndim:
        raise GeometryError(
            f"the fixed image {str(fixed)!r} is {fixed_image.ndim}D and the moving image {str(moving)!r} is "
            f"{moving_image.ndim}D; register images of the same dimension"
        )
    if dicom_registration:
        not_dicom = [str(p) for p, image in ((fixed, fixed_image), (moving, moving_image)) if image.meta.get("format") != "dicom"]
        if not_dicom:
            raise click.UsageError(
                f"--dicom-registration references both DICOM series; {', '.join(repr(p) for p in not_dicom)} "
                "is not DICOM: drop the option or give DICOM series", ctx=ctx
            )
    fixed_values = _mask_on(fixed_image, fixed_mask, "fixed mask") if fixed_mask else None
    moving_values = _mask_on(moving_image, moving_mask, "moving mask") if moving_mask else None
    if output_format == "dicom":
        from coregister.io.dicom_write import check_series_folder

        check_series_folder(outdir / image_name, overwrite=True)  # a series of a previous run is replaced, nothing else
    from coregister.cli._progress import registration_progress
    from coregister.pipeline import configure
    from coregister.pipeline import register as run_registration

    config = configure(preset, ndim=fixed_image.ndim, precise=precise, metric=metric, initialisation=initialisation,
                       iterations=iterations, detector=detector, initial_given=initial_transform is not None)
    start = None
    if initial_transform is not None:
        from coregister.io.transforms import read_transform

        start = read_transform(initial_transform, reference=fixed_image, moving=moving_image)

    if halfway:
        _register_halfway(ctx, fixed, moving, fixed_image, moving_image, outdir, config=config, fixed_mask=fixed_values,
                          moving_mask=moving_values, seed=seed, threads=threads, report=report, as_json=as_json,
                          overwrite=overwrite, fit_memory=fit_memory)
        return
    with registration_progress(ctx) as progress:
        result = run_registration(
            fixed_image,
            moving_image,
            config=config,
            initial_transform=start,
            fixed_mask=fixed_values,
            moving_mask=moving_values,
            seed=seed,
            threads=threads,
            progress=progress,
            fit_memory=fit_memory,
        )
    written = publish_registration(
        outdir, result, fixed_image, moving_image, image_name=image_name, overwrite=overwrite, fix=_OVERWRITE_FOLDER,
        report=report, threads=threads, output_format=output_format, command=command_line(ctx),
        dicom_registration=dicom_registration,
    )

    if as_json:
        inputs = {"fixed": _input_facts(fixed, fixed_image), "moving": _input_facts(moving, moving_image)}
        echo_json({**result.to_dict(), "inputs": inputs, "outputs": [str(p) for p in written]})
    elif not quiet():
        _summary(result, written)
    if not result.passed:
        raise QualityCheckFailed(quality_failure_line(result.quality, result.warnings))


def _halfway_names(fixed: Path, *, report: bool) -> list[str]:
    """The files ``register --halfway`` writes, in the fixed image's format; ``result.json`` last."""
    suffix = registered_name(fixed).removeprefix("registered")
    return [f"fixed_halfway{suffix}", f"moving_halfway{suffix}", "halfway_to_fixed.tfm", "halfway_to_moving.tfm",
            "transform.tfm"] + (["report.html"] if report else []) + ["result.json"]


def _register_halfway(
    ctx: click.Context, fixed: Path, moving: Path, fixed_image: SpatialImage, moving_image: SpatialImage, outdir: Path,
    *, config: Any, fixed_mask: Any, moving_mask: Any, seed: int, threads: int | None, report: bool, as_json: bool,
    overwrite: bool, fit_memory: bool,
) -> None:
    """``register --halfway``: both images on a halfway grid, the two half transforms, the symmetric map.

    Written like :func:`~coregister.outputs.publish_registration`: into a
    locked ``.part`` folder beside OUTDIR, moved in when all succeeded, an
    earlier run replaced only with ``--overwrite``.
    """
    import json

    from coregister._files import part_folder
    from coregister._json import plain
    from coregister.io import write
    from coregister.medical.longitudinal import halfway

    names = _halfway_names(fixed, report=report)
    result = halfway(fixed_image, moving_image, config=config, fixed_mask=fixed_mask, moving_mask=moving_mask, seed=seed,
                     threads=threads, fit_memory=fit_memory)
    parent = outdir.parent if str(outdir.parent) else Path(".")
    with part_folder(parent, outdir.name) as staging:
        write(for_writing(result.fixed, names[0]), staging / names[0])
        write(for_writing(result.moving, names[1]), staging / names[1])
        result.to_fixed.save(staging / "halfway_to_fixed.tfm")
        result.to_moving.save(staging / "halfway_to_moving.tfm")
        result.transform.save(staging / "transform.tfm")
        summary = {**result.to_dict(), "engine": result.forward.engine, "metrics": dict(result.forward.metrics),
                   "inputs": {"fixed": _input_facts(fixed, fixed_image), "moving": _input_facts(moving, moving_image)},
                   "command": command_line(ctx), "versions": package_versions(), "outputs": names}
        if report:
            import dataclasses

            from coregister.qc.report import write_report

            shown = dataclasses.replace(result.forward, transform=result.to_moving)
            write_report(shown, result.fixed, moving_image, result.moving, staging / "report.html",
                         title=f"coregister halfway: {moving.name} and {fixed.name}", command=command_line(ctx))
        (staging / "result.json").write_text(json.dumps(plain(summary), indent=2) + "\n")
        refuse_existing_outputs(outdir, names, overwrite=overwrite, fix=_OVERWRITE_FOLDER)  # another run meanwhile?
        written = publish_staged(staging, outdir, names)
    if as_json:
        echo_json({**summary, "outputs": [str(p) for p in written]})
    elif not quiet():
        click.echo(f"halfway: both registrations {'passed' if result.passed else 'did NOT both pass'} their quality check; "
                   f"they disagree by {result.inverse_consistency_mm:.3g} mm at most (the average splits it)")
        click.echo("wrote " + ", ".join(str(p) for p in written))
    if not result.passed:
        failing = result.forward if not result.forward.passed else result.backward
        raise QualityCheckFailed(quality_failure_line(failing.quality, failing.warnings))


@click.command(
    "apply",
    epilog=(
        "\b\nExample (no network needed; the second line makes reg-out/transform.tfm):\n"
        f"  {_FETCH}\n"
        f"  coregister register {_FIXED} {_MOVING} -o reg-out\n"
        f"  coregister apply reg-out/transform.tfm {_MOVING} \\\n    --reference {_FIXED} -o moved-on-fixed.nii"
    ),
)
@click.argument("transform", type=click.Path(dir_okay=False, path_type=Path))
@click.argument("moving", type=click.Path(path_type=Path))
@click.option(
    "--reference", type=click.Path(path_type=Path), required=True, help="Image whose grid, CRS and header the output takes (the fixed image)."
)
@click.option("-o", "--output", type=click.Path(path_type=Path), required=True,
              help="Output image; its suffix picks the format (a folder with --output-format dicom).")
@series_option("--series", "MOVING")
@series_option("--reference-series", "The reference")
@interpolation_option
@click.option("--default-value", type=float, default=0.0, show_default=True, help="Value where the moving image has no data (its nodata if it has one).")
@threads_option
@_output_format_option("the folder OUTPUT")
@overwrite_option
@json_option
def apply_command(
    transform: Path,
    moving: Path,
    reference: Path,
    output: Path,
    interpolation: str,
    default_value: float,
    threads: int | None,
    as_json: bool = False,
    output_format: str | None = None,
    series: str | None = None,
    reference_series: str | None = None,
    overwrite: bool = False,
) -> None:
    """Resample MOVING onto the grid of --reference with TRANSFORM (ITK, coregister .json, FSL, elastix, ANTs, Slicer).

    TRANSFORM maps reference (fixed) points to moving points, as `coregister
    register` writes it; a FLIRT matrix (moving -> reference, scaled voxels),
    an elastix TransformParameters file, an ANTs warp or a Slicer grid file
    is read in its tool's own direction and turned into that one (see
    `coregister transform convert`). Use --interpolation nearest (or label-gaussian) for
    label maps; integer images are rounded and clipped back to their dtype.
    """
    from coregister.io import write
    from coregister.io.transforms import read_transform
    from coregister.resample import apply

    dicom = (output_format or "").lower() == "dicom"
    for source in (transform, moving, reference):  # even with --overwrite: an input is never replaced
        refuse_overwriting_input(output, source, fix="choose another -o path")
    if dicom:
        from coregister.io.dicom_write import check_series_folder

        check_writable(output, folder=True, fix="choose another -o folder")
        if not overwrite and output.is_dir() and any(output.iterdir()):
            check_series_folder(output, overwrite=True)  # files that are not a series: named as such
            refuse_existing(output, overwrite=False, fix=_OVERWRITE_FILE)
        check_series_folder(output, overwrite=True)  # a series written before is replaced (with --overwrite)
    else:
        check_writable(output, fix="choose another -o path")
        refuse_existing(output, overwrite=overwrite, fix=_OVERWRITE_FILE)
    moving_image = _read(moving, "moving image", series=series, flag="--series")
    reference_image = _read(reference, "reference image", series=reference_series, flag="--reference-series")
    value = read_transform(transform, reference=reference_image, moving=moving_image)
    if not (value.ndim == moving_image.ndim == reference_image.ndim):
        raise GeometryError(
            f"transform {str(transform)!r} is {value.ndim}D, the moving image {moving_image.ndim}D and the reference "
            f"{reference_image.ndim}D; they must match"
        )
    out = apply(
        value,
        moving_image,
        reference=reference_image,
        interpolation=interpolation,
        default_value=default_value,
        output_dtype=writable_dtype(moving_image, reference_image, output.name.lower()),
        threads=threads,
    )
    if dicom:
        write(out, output, format="dicom", overwrite=True, values_from=moving_image)
    else:
        write(for_writing(out, output.name), output, overwrite=overwrite)
    if as_json:
        echo_json({"output": str(output), "transform": str(transform), "moving": str(moving), "reference": str(reference),
                   "inputs": {"moving": _input_facts(moving, moving_image),
                              "reference": _input_facts(reference, reference_image)},
                   "interpolation": interpolation, "size": list(out.size), "spacing": list(out.spacing), "dtype": str(out.dtype)})
    elif not quiet():
        click.echo(f"wrote {output}")
