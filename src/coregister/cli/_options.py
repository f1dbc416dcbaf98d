"""Options shared by the commands that register or resample, so every command spells them the same way.

Choices come from the enums in :mod:`coregister.config` and the preset
names from :mod:`coregister.presets`, so the API and the command line cannot
drift. ``--config FILE.toml`` (the root group) sets any of them by their long
name (``preset``, ``fixed-mask``...).
"""

from __future__ import annotations

from collections.abc import Callable
from enum import Enum
from pathlib import Path
from typing import Any

import click

from coregister import presets
from coregister.config import Detector, Initialisation, Interpolation, Metric

__all__ = [
    "dicom_series",
    "interpolation_option",
    "metric_choices",
    "name_series_option",
    "overwrite_option",
    "preset_names",
    "registration_options",
    "root_setting",
    "series_option",
    "threads_option",
]

def root_setting(name: str, ctx: click.Context | None = None) -> Any:
    """A global option of the root group (``verbose`` count, ``quiet`` flag); None outside a command."""
    ctx = ctx if ctx is not None else click.get_current_context(silent=True)
    if ctx is None:
        return None
    settings = ctx.find_root().obj
    return settings.get(name) if isinstance(settings, dict) else None


def preset_names() -> list[str]:
    """Preset names offered by :func:`coregister.register` (``coregister.presets``), for ``--preset``."""
    return presets.names()


def metric_choices() -> list[str]:
    """Metric names for ``--metric`` (:class:`coregister.config.Metric`)."""
    return [m.value for m in Metric]


def _enum_choice(values: type[Enum]) -> click.Choice:
    """The values of a :mod:`coregister.config` enum as a case-insensitive choice."""
    return click.Choice([m.value for m in values], case_sensitive=False)


def _input_path() -> click.Path:
    # Existence is checked by the reader, whose error is one line and exit code 1 (click's would be a usage error).
    return click.Path(path_type=Path)


def series_option(flag: str, what: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """``flag`` (``--moving-series``...): which DICOM series of a folder that holds several to read as ``what``."""
    return click.option(
        flag,
        default=None,
        metavar="SERIES",
        help=f"{what} is a DICOM folder with several series: read this one (index as `coregister dicom ls` lists "
        "them, SeriesInstanceUID, or a description that names one series).",
    )


def dicom_series(path: Path, series: str | None, flag: str) -> dict[str, Any]:
    """``read()`` options for a ``--...-series`` value: ``{"series": index or UID}``, ``{}`` when not given.

    Raises
    ------
    click.UsageError
        The option was given for an input that is not DICOM.
    """
    if series is None:
        return {}
    from coregister.io import detect_format

    fmt = detect_format(path)
    if fmt != "dicom":
        raise click.UsageError(f"{flag} applies to DICOM input; {str(path)!r} is {fmt}: leave {flag} out")
    text = series.strip()
    return {"series": int(text) if text.lstrip("-").isdigit() else text}


def name_series_option(message: str, option: str) -> str:
    """A reader's "choose one with series=... (command line: ...)" hint pointed at ``option``, the flag that exists.

    Examples
    --------
    >>> print(name_series_option("folder 'x' holds 2 DICOM series: ...; choose one with series=<index or "
    ...                          "UID> (command line: --series; list them with coregister dicom ls FOLDER)",
    ...                          "--moving-series"))
    folder 'x' holds 2 DICOM series: ...; choose one with series=<index or UID> (command line: --moving-series; list them with coregister dicom ls FOLDER)
    """
    import re

    named, count = re.subn(r"\(command line: [^;)]*", f"(command line: {option}", message, count=1)
    return named if count else f"{message} (command line: {option})"


def overwrite_option(function: Callable[..., Any]) -> Callable[..., Any]:
    """``--overwrite``: replace existing outputs (without it, an existing output is an error, as with rasterio's rio)."""
    return click.option(
        "--overwrite", is_flag=True,
        help="Replace existing outputs. Without it an output that exists (a file, or a folder holding a "
        "registration's outputs) is refused before any work.",
    )(function)


def threads_option(function: Callable[..., Any]) -> Callable[..., Any]:
    """``--threads N``: worker threads for SimpleITK (default: all cores)."""
    return click.option(
        "--threads",
        type=click.IntRange(min=1),
        default=None,
        help="Threads for SimpleITK everywhere (default: the optimiser on 1 thread, pyramids on all cores; bit-identical run after run). More threads are about 25 % faster on a 3D rigid or affine run, more on B-spline runs; results then vary in the last bits.",
    )(function)


def interpolation_option(function: Callable[..., Any]) -> Callable[..., Any]:
    """``--interpolation``: linear/bspline for intensities, nearest/label-gaussian for label maps."""
    return click.option(
        "--interpolation",
        type=_enum_choice(Interpolation),
        default=Interpolation.LINEAR.value,
        show_default=True,
        help="linear or bspline for intensities; nearest or label-gaussian for label maps.",
    )(function)


def registration_options(function: Callable[..., Any]) -> Callable[..., Any]:
    """The options of a registration: preset, metric, precision, iterations, initialisation, detector, masks, seed, threads."""
    options: list[Callable[[Callable[..., Any]], Callable[..., Any]]] = [
        click.option(
            "--preset",
            type=click.Choice(preset_names(), case_sensitive=False),
            default="rigid",
            show_default=True,
            help="Transform model and stages.",
        ),
        click.option(
            "--metric",
            type=click.Choice(metric_choices(), case_sensitive=False),
            default=None,
            help="Similarity metric (default: the preset's; mattes = Mattes mutual information; with --preset syn, "
                 "ncc or mattes replace the demons, which need one contrast in both images).",
        ),
        click.option(
            "--precise",
            is_flag=True,
            help="The preset's precise family: 4-13x the sample points per level, twice the iterations, a "
            "10-20x finer final step (and a finer B-spline mesh down to full resolution); about 8-10x the time on "
            "volumes, little more on 2D images.",
        ),
        click.option(
            "--iterations",
            type=click.IntRange(min=1),
            default=None,
            metavar="N",
            help="Iteration cap of every stage at every pyramid level (default: the preset's, 200 per level, 400 "
            "with --precise, 30 for the B-spline stage). Raise it when a warning says a level stopped at its "
            "iteration cap.",
        ),
        click.option(
            "--initialisation",
            "--initialization",
            "initialisation",
            type=_enum_choice(Initialisation),
            default=None,
            help="How the starting transform is found (default: the preset's): none, geometry (image centres), "
            "moments (centres of mass), phase (phase correlation), features (2D keypoints).",
        ),
        click.option(
            "--initial-transform",
            type=click.Path(dir_okay=False, path_type=Path),
            default=None,
            help="Start from this fixed -> moving transform (.tfm/.h5/.txt or coregister .json, e.g. an earlier "
            "run's transform.tfm); the answer includes it.",
        ),
        click.option(
            "--detector",
            type=_enum_choice(Detector),
            default=None,
            help="Keypoint detector of feature-based registration (--preset homography or auto, "
            "--initialisation features): orb (default) or sift (slower, more robust).",
        ),
        click.option(
            "--fixed-mask",
            type=_input_path(),
            default=None,
            help="Image on the fixed grid, non-zero where to register (nodata is masked out anyway).",
        ),
        click.option(
            "--moving-mask",
            type=_input_path(),
            default=None,
            help="Image on the moving grid, non-zero where to register.",
        ),
        click.option(
            "--seed", type=int, default=0, show_default=True, help="Seed of the metric's random sampling."
        ),
        threads_option,
    ]
    for option in reversed(options):
        function = option(function)
    return function
