"""The HTML report of a motion correction: the six motion parameters, the framewise displacement and what moved.

One self-contained ``.html`` file (see :mod:`coregister.qc.html`), as the
registration report. What it shows:

* a summary: volumes, grid, repetition time, reference, the framewise
  displacement's mean and maximum, how many volumes exceed the threshold,
  how many failed their quality check;
* the translations (mm) and rotations (degrees; the TSV holds radians) per
  volume, with fMRIPrep's column names, and the framewise displacement with
  the threshold drawn and the volumes above it marked;
* the mean and the temporal standard deviation of the series before and
  after correction on three orthogonal planes (motion shows as bright rims
  in the standard deviation before correction);
* the volumes above the threshold, and the volumes whose registration
  failed its quality check with the reasons.

Examples
--------
>>> import numpy as np, tempfile, pathlib
>>> from coregister import SpatialImage
>>> from coregister.medical import motion
>>> from coregister.qc.synthetic import motion_series, random_motion
>>> z, y, x = np.mgrid[0:48, 0:48, 0:48]
>>> head = np.exp(-((x - 24.0) ** 2 / 200 + (y - 23.0) ** 2 / 150 + (z - 25.0) ** 2 / 180)) * (1 + 0.5 * (x > 24))
>>> grid = SpatialImage(np.zeros((12, 14, 14), np.float32), origin=(1.5, 1.5, 2.0), spacing=(3.3, 3.3, 4.0))
>>> series = motion_series(SpatialImage(head.astype(np.float32), origin=(0, 0, 0), spacing=(1, 1, 1)), grid,
...                        random_motion(5, 1, centre=grid.world_centre, max_shift_mm=1.0, max_angle_deg=1.0))
>>> result = motion(series)
>>> path = write_motion_report(result, pathlib.Path(tempfile.mkdtemp()) / "motion.html", series=series)
>>> text = path.read_text()
>>> text.count("<img "), "framewise displacement" in text
(3, True)
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from coregister._pictures import stretch
from coregister.image import SpatialImage
from coregister.medical.motion_correction import PARAMETER_COLUMNS, MotionResult
from coregister.qc.figures import _figure, _grid_figure, _planes, _png
from coregister.qc.html import _esc, _figure_html, _num, _page, _write

__all__ = ["write_motion_report"]


def write_motion_report(
    result: MotionResult,
    path: str | os.PathLike[str],
    *,
    series: SpatialImage | None = None,
    title: str | None = None,
    command: str | None = None,
) -> Path:
    """Write the self-contained HTML report of a motion correction.

    Parameters
    ----------
    result : MotionResult
        What :func:`coregister.motion` returned.
    path : path
        The ``.html`` file to write (atomically).
    series : SpatialImage, optional
        The series before correction: its mean and temporal standard
        deviation are drawn beside the corrected ones (left out without it).
    title : str, optional
        Page title (default: the series' file name).
    command : str, optional
        The command line that ran, shown in the summary.

    Returns
    -------
    Path
        ``path``.
    """
    source = os.path.basename(str(result.realigned.meta.get("source_path", "")))
    title = title or (f"coregister motion: {source}" if source else "coregister motion correction report")
    tr = _repetition_time(result.realigned)
    sections = [_header(result, title, command, tr)]
    sections.append('<section id="parameters"><h2>Motion parameters</h2>'
                    + _figure_html(_parameter_figure(result, tr), "Translations (mm) and rotations (degrees) of each "
                                   "volume relative to the reference, as fMRIPrep reports them (the TSV holds radians).",
                                   "motion parameters")
                    + "</section>")
    sections.append('<section id="fd"><h2>Framewise displacement</h2>'
                    + _figure_html(_fd_figure(result, tr), f"Framewise displacement (Power et al. 2012; rotations on a "
                                   f"{result.radius_mm:g} mm sphere); the dashed line is the {result.fd_threshold_mm:g} mm "
                                   "threshold, volumes above it in red.", "framewise displacement")
                    + _outlier_table(result, tr) + "</section>")
    sections.append(_series_section(result, series))
    if result.failed:
        sections.append('<section id="failed"><h2>Volumes that failed their quality check</h2><ul class="warn">'
                        + "".join(f"<li>volume {k}: {_esc('; '.join(result.results[k].quality.failures) or 'see result')}</li>"
                                  for k in result.failed)
                        + "</ul></section>")
    return _write(path, _page(title, sections))


def _repetition_time(image: SpatialImage) -> tuple[float, str] | None:
    """The time between volumes and its unit from the NIfTI header, when the file said."""
    fields = image.meta.get("nifti") or {}
    step = fields.get("time_step")
    if not step:
        return None
    unit = (fields.get("xyzt_units") or ("mm", "sec"))[1]
    return float(step), {"sec": "s", "msec": "ms", "usec": "µs"}.get(str(unit), str(unit))


def _header(result: MotionResult, title: str, command: str | None, tr: tuple[float, str] | None) -> str:
    failed = len(result.failed)
    status = ('<span class="badge pass">every volume passed its quality check</span>' if not failed else
              f'<span class="badge fail">{failed} of {result.n_volumes} volumes FAILED their quality check</span>')
    fd = result.framewise_displacement[1:]
    grid = result.reference
    reference = "the mean of the series (two passes)" if result.reference_volume is None else f"volume {result.reference_volume}"
    rows = [
        ("volumes", str(result.n_volumes)),
        ("grid (x, y, z)", " x ".join(map(str, grid.size)) + " voxels of " + " x ".join(f"{s:g}" for s in grid.spacing) + " mm"),
        ("repetition time", f"{tr[0]:g} {tr[1]}" if tr else "not given"),
        ("reference", reference),
        ("framewise displacement, mean / max", f"{_num(float(np.mean(fd)) if fd.size else 0.0)} / "
                                               f"{_num(float(np.max(fd)) if fd.size else 0.0)} mm"),
        (f"volumes above {result.fd_threshold_mm:g} mm", f"{len(result.outliers)} ({100.0 * len(result.outliers) / result.n_volumes:.0f} %)"),
        ("time", f"{result.time_s:.2f} s ({result.time_s / result.n_volumes:.3f} s a volume)"),
    ]
    return (
        f"<header><h1>{_esc(title)}</h1><p>{status}</p>"
        + (f'<p id="command">Command: <code>{_esc(command)}</code></p>' if command else "")
        + '<table id="summary">' + "".join(f'<tr><th class="l">{_esc(k)}</th><td class="l">{_esc(v)}</td></tr>' for k, v in rows)
        + "</table></header>"
    )


def _axis(result: MotionResult, tr: tuple[float, str] | None) -> tuple[np.ndarray, str]:
    return np.arange(result.n_volumes), "volume" + (f" (one every {tr[0]:g} {tr[1]})" if tr else "")


def _parameter_figure(result: MotionResult, tr: tuple[float, str] | None) -> str:
    x, label = _axis(result, tr)
    fig = _figure(9.0, 5.0)
    top, bottom = fig.subplots(2, 1, sharex=True)
    for c in range(3):
        top.plot(x, result.parameters[:, c], lw=1.3, label=PARAMETER_COLUMNS[c])
        bottom.plot(x, np.rad2deg(result.parameters[:, 3 + c]), lw=1.3, label=PARAMETER_COLUMNS[3 + c])
    top.set_ylabel("translation (mm)")
    bottom.set_ylabel("rotation (degrees)")
    bottom.set_xlabel(label)
    for ax in (top, bottom):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, ncol=3, loc="best")
    return _png(fig)


def _fd_figure(result: MotionResult, tr: tuple[float, str] | None) -> str:
    x, label = _axis(result, tr)
    fd = result.framewise_displacement
    fig = _figure(9.0, 2.8)
    ax = fig.subplots()
    ax.plot(x, fd, lw=1.3, color="C0")
    ax.axhline(result.fd_threshold_mm, color="C3", lw=1.0, ls="--")
    above = list(result.outliers)
    if above:
        ax.plot(x[above], fd[above], "o", color="C3", ms=4)
    ax.set_ylabel("framewise displacement (mm)")
    ax.set_xlabel(label)
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    return _png(fig)


def _outlier_table(result: MotionResult, tr: tuple[float, str] | None) -> str:
    if not result.outliers:
        return f"<p>No volume moved more than {result.fd_threshold_mm:g} mm from the one before.</p>"
    head = "<tr><th>volume</th>" + (f"<th>time ({_esc(tr[1])})</th>" if tr else "") + "<th>FD (mm)</th></tr>"
    rows = "".join(
        f"<tr><td>{k}</td>" + (f"<td>{k * tr[0]:g}</td>" if tr else "") + f"<td>{_num(result.framewise_displacement[k])}</td></tr>"
        for k in result.outliers
    )
    return f'<table id="outliers">{head}{rows}</table>'


def _series_section(result: MotionResult, series: SpatialImage | None) -> str:
    after = np.asarray(result.realigned.array, dtype=np.float32)
    arrays: list[tuple[str, Any]] = []
    if series is not None and series.has_channels and series.shape == result.realigned.shape:
        before = np.asarray(series.array, dtype=np.float32)
        arrays.append(("before", before))
    arrays.append(("after", after))
    means = [values.mean(axis=-1) for _, values in arrays]
    deviations = [values.std(axis=-1) for _, values in arrays]
    grid = result.reference
    scale_mean = stretch(np.concatenate([m.ravel() for m in means]))
    scale_sd = stretch(np.concatenate([d.ravel() for d in deviations]))
    size = means[0].size
    panels_mean = [scale_mean[k * size:(k + 1) * size].reshape(grid.shape) for k in range(len(means))]
    panels_sd = [scale_sd[k * size:(k + 1) * size].reshape(grid.shape) for k in range(len(deviations))]
    planes, views = _planes(grid, panels_mean + panels_sd)
    names = [name for name, _ in arrays]
    rows = [f"mean {n}" for n in names] + [f"temporal SD {n}" for n in names]
    png = _grid_figure(views, row_titles=rows, col_titles=[p.name for p in planes], aspects=[p.aspect for p in planes],
                       height_in=2.4)
    caption = ("Mean and temporal standard deviation of the series " + ("before and after correction" if len(names) == 2
               else "after correction") + " on three planes through the centre (one intensity scale per kind). "
               "Motion leaves bright rims at the edges of the head in the standard deviation; after correction they fade.")
    return '<section id="series"><h2>The series</h2>' + _figure_html(png, caption, "mean and temporal SD") + "</section>"
