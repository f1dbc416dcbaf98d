"""The HTML quality-control report of a registration: one self-contained file that shows at a glance whether it worked.

Everything is inside the one ``.html`` file (see :mod:`coregister.qc.html`).
What it shows:

* before/after checkerboards, colour overlays (fixed magenta, moving green:
  aligned structures turn grey/white; each image windowed on its own robust
  percentiles), edge overlays for multimodal pairs (registered with mutual
  information) and difference images; for volumes on
  three orthogonal planes through the centre of the fixed image, oriented
  radiologically (patient left on the right of axial and coronal views,
  anterior at the top of axial views, superior at the top of the others);
* the optimiser's metric per iteration, one curve per stage and level;
* metrics before and after, with the direction of improvement;
* the transform's world matrix and its decomposition (angles, scales,
  shears), unusual values flagged;
* for deformable transforms (B-spline, displacement field), the Jacobian
  determinant map, a warped grid, and the fraction of
  the fixed grid where it is not positive (folding).

The report of a geospatial run, with its tie-point vectors, is
:func:`coregister.qc.geo_report.write_geo_report`; the pictures are drawn by
:mod:`coregister.qc.figures`.

Examples
--------
>>> import numpy as np, tempfile, pathlib
>>> from coregister import SpatialImage, Result, Rigid, apply
>>> yy, xx = np.mgrid[0:64, 0:64]
>>> blob = np.exp(-((xx - 30) ** 2 + (yy - 34) ** 2) / 90.0) + 0.5 * (xx > 40)
>>> fixed = SpatialImage(blob.astype(np.float32), origin=(0, 0), spacing=(1, 1))
>>> truth = Rigid.from_angles(np.deg2rad(5.0), translation=(2.0, -1.0), center=(32, 32))
>>> moving = apply(truth.inverse(), fixed)
>>> result = Result(transform=truth, metrics={"before": {"ncc": 0.8}, "after": {"ncc": 0.99}}, engine="sitk")
>>> path = write_report(result, fixed, moving, apply(truth, moving, reference=fixed),
...                     pathlib.Path(tempfile.mkdtemp()) / "report.html")
>>> text = path.read_text()
>>> text.count("<img "), "5.000" in text
(3, True)
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from coregister.image import SpatialImage
from coregister.measures import jacobian_determinant
from coregister.pipeline.quality import MAX_SHEAR, SCALE_RANGE
from coregister.pipeline.result import Result
from coregister.qc.figures import _convergence_figure, _grid_figure, _planes, _resampled
from coregister.qc.html import (
    _comparison_sections,
    _esc,
    _figure_html,
    _matrix_html,
    _metrics_html,
    _num,
    _page,
    _units,
    _write,
)
from coregister.transforms import (
    BSpline,
    Composite,
    DisplacementField,
    Homography,
    LinearTransform,
    Transform,
    Translation,
    linear_members,
)

__all__ = ["transform_flags", "write_report"]


#: Rotations beyond this are flagged (scales and shears are flagged at the quality check's limits,
#: :data:`coregister.pipeline.quality.SCALE_RANGE` and :data:`~coregister.pipeline.quality.MAX_SHEAR`).
MAX_ANGLE_DEG = 45.0
#: The Jacobian map is computed on the fixed grid, subsampled to at most this many points.
JACOBIAN_MAX_POINTS = 600_000


# ---------------------------------------------------------------- transforms
def _linear_part(transform: Transform) -> LinearTransform | None:
    """The linear members of ``transform`` as one map (runs a B-spline separates merged too), None without any."""
    members = linear_members(transform)
    if len(members) > 1:
        members = linear_members(Composite(members))
    return members[0] if members else None


def _deformable_part(transform: Transform) -> Transform | None:
    """The B-splines and displacement fields of ``transform`` (in their order), without its linear members."""
    if isinstance(transform, BSpline | DisplacementField):
        return transform
    if isinstance(transform, Composite):
        members = tuple(t for t in transform.transforms if isinstance(t, BSpline | DisplacementField))
        return (members[0] if len(members) == 1 else Composite(members)) if members else None
    return None


def _deformable(transform: Transform) -> bool:
    return _deformable_part(transform) is not None


def transform_flags(transform: Transform) -> list[str]:
    """Plain-language flags on unusual values of a transform's linear part (empty when all looks ordinary).

    Flags scales outside the quality check's ``SCALE_RANGE`` ([0.5, 2]),
    shears above its ``MAX_SHEAR`` (0.3), rotations above 45 degrees and
    reflections.

    Examples
    --------
    >>> from coregister import Affine
    >>> transform_flags(Affine(np.diag([2.5, 1.0])))
    ['scale 2.5 along axis 0 is outside [0.5, 2]']
    >>> transform_flags(Affine(np.eye(2)))
    []
    """
    linear = _linear_part(transform)
    if linear is None:
        return []
    parts = linear.to_dict()["decomposition"]
    flags = []
    for axis, scale in enumerate(parts["scales"]):
        if not SCALE_RANGE[0] <= abs(scale) <= SCALE_RANGE[1]:
            flags.append(f"scale {abs(scale):.3g} along axis {axis} is outside [{SCALE_RANGE[0]:g}, {SCALE_RANGE[1]:g}]")
    for index, shear in enumerate(parts["shears"]):
        if abs(shear) > MAX_SHEAR:
            flags.append(f"shear {shear:.3g} (term {index}) exceeds {MAX_SHEAR:g}")
    for axis, angle in enumerate(parts["angles_deg"]):
        if abs(angle) > MAX_ANGLE_DEG:
            flags.append(f"rotation {angle:.1f} degrees (angle {axis}) exceeds {MAX_ANGLE_DEG:g} degrees")
    if parts["reflection"]:
        flags.append("the matrix includes a reflection (negative determinant)")
    return flags


def _transform_html(transform: Transform, units: str) -> str:
    parts = [f"<p>Type <code>{_esc(type(transform).__name__)}</code>; it maps fixed-space points to moving space "
             f"(ITK's convention). World units: {_esc(units)}.</p>"]
    if isinstance(transform, Homography):
        parts.append("<p>Projective matrix (pixel coordinates):</p>" + _matrix_html(transform.matrix))
        h = np.asarray(transform.matrix, float)
        perspective = h[2, :2] / h[2, 2]
        parts.append(f"<p>Perspective terms: {_num(perspective[0], 6)}, {_num(perspective[1], 6)}</p>")
        return "".join(parts)
    if isinstance(transform, Composite):
        members = ", ".join(type(t).__name__ for t in transform.transforms)
        parts.append(f"<p>Composite of {_esc(members)} (the last is applied first).</p>")
    linear = _linear_part(transform)
    if linear is not None:
        decomposition = linear.to_dict()["decomposition"]
        title = "World matrix" + (" of the linear members" if isinstance(transform, Composite) else "")
        parts.append(f"<p>{title} (homogeneous, fixed → moving):</p>" + _matrix_html(linear.homogeneous))
        offset = linear.offset
        flags = transform_flags(linear)
        cells = [
            ("rotation (degrees)", decomposition["angles_deg"], lambda v: abs(v) > MAX_ANGLE_DEG),
            ("scales", decomposition["scales"], lambda v: not SCALE_RANGE[0] <= abs(v) <= SCALE_RANGE[1]),
            ("shears", decomposition["shears"], lambda v: abs(v) > MAX_SHEAR),
            (f"offset of the world matrix ({units})", offset.tolist(), lambda v: False),
            (f"translation about centre c ({units})", linear.translation.tolist(), lambda v: False),
            (f"centre c ({units})", linear.center.tolist(), lambda v: False),
        ]
        rows = []
        for name, values, unusual in cells:
            tds = "".join(
                f'<td class="{"flag" if unusual(v) else ""}">{_num(v, 4)}</td>' for v in values
            )
            rows.append(f'<tr><td class="l">{_esc(name)}</td>{tds}</tr>')
        reflection = "yes" if decomposition["reflection"] else "no"
        rows.append(f'<tr><td class="l">reflection</td><td class="{"flag" if decomposition["reflection"] else ""}">{reflection}</td></tr>')
        parts.append('<table id="decomposition">' + "".join(rows) + "</table>")
        parts.append("<p>Two ways to write the same map: moving = A · fixed + offset (the world matrix) "
                     "= A · (fixed − c) + c + translation (ITK's parameters about the centre c; result.json's "
                     "<code>translation</code> and <code>center</code>).</p>")
        if flags:
            parts.append('<p class="flag">Unusual: ' + "; ".join(_esc(f) for f in flags) + ".</p>")
        else:
            parts.append('<p class="better">No unusual value in the decomposition.</p>')
    for member in transform.transforms if isinstance(transform, Composite) else (transform,):
        if isinstance(member, BSpline):
            info = member.to_dict()
            parts.append(
                f"<p>B-spline: order {info['order']}, control grid {info['grid_shape']}, "
                f"spacing {[round(v, 3) for v in info['grid_spacing']]} {units}, "
                f"largest coefficient {_num(info['max_coefficient'])} {units}.</p>"
            )
        elif isinstance(member, DisplacementField):
            info = member.to_dict()
            parts.append(
                f"<p>Displacement field: grid {info['grid_size']}, spacing "
                f"{[round(v, 3) for v in info['grid_spacing']]} {units}, displacement mean "
                f"{_num(info['mean_displacement'])} and largest {_num(info['max_displacement'])} {units} "
                "(written as <code>warp.nii.gz</code>, its inverse as <code>inverse_warp.nii.gz</code>).</p>"
            )
    return "".join(parts)


#: How the report names each metric of :class:`coregister.config.Metric`.
METRIC_NAMES = {"mattes": "Mattes MI", "mi": "joint-histogram MI", "ncc": "normalised correlation",
                "mse": "mean squares", "ecc": "ECC"}


def _final_metric_name(result: Result) -> str:
    """The metric of the last stage that ran (what ``Result.final_metric`` measures), or ``""`` when not recorded."""
    stages = result.config.get("stages") if isinstance(result.config, Mapping) else None
    if not stages:
        return ""
    last = stages[-1]
    name = str(last.get("metric", "") if isinstance(last, Mapping) else getattr(last, "metric", "") or "")
    return METRIC_NAMES.get(name, name)


def _image_summary(image: SpatialImage, name: str) -> str:
    if image.crs is not None:
        where = f"CRS {image.crs.to_string()}"
    elif _units(image) == "pixels":
        where = "pixel grid"
    else:
        where = f"orientation {image.orientation}"
    source = image.meta.get("source_path", "")
    return (
        f'<tr><td class="l">{_esc(name)}</td><td class="l">{_esc(" x ".join(map(str, image.size)))}</td>'
        f'<td class="l">{_esc(", ".join(f"{s:g}" for s in image.spacing))}</td><td class="l">{_esc(where)}</td>'
        f'<td class="l">{_esc(image.dtype)}{" x " + str(image.n_channels) if image.has_channels else ""}</td>'
        f'<td class="l">{_esc(source)}</td></tr>'
    )


def _grid_lines(grid: SpatialImage, axes: tuple[int, ...], every: int) -> np.ndarray:
    """1 on the grid lines of the index axes ``axes`` (ITK order), every ``every`` voxels; 0 elsewhere."""
    lines = np.zeros(grid.shape, dtype=np.float32)
    for axis in axes:
        index = [slice(None)] * grid.ndim
        index[grid.ndim - 1 - axis] = slice(0, None, every)
        lines[tuple(index)] = 1.0
    return lines


def _warped_grid_figure(deformable: Transform, grid: SpatialImage) -> str:
    """Grid lines of the deformation's input space pulled back onto the fixed grid: how the map bends space.

    The lines are drawn in each shown plane only (3D: the index axes nearest
    to the plane's two world axes) and resampled through the deformable
    members alone (a linear part would only shift and turn the whole grid).
    """
    from coregister.resample import resample_values

    every = max(3, int(round(min(grid.size) / 24)))
    if grid.ndim == 2:
        families = [(0, 1)]
    else:
        world_axis = np.argmax(np.abs(np.asarray(grid.direction)), axis=0)  # world axis nearest to each index axis
        index_of = {int(w): i for i, w in enumerate(world_axis)}
        if len(index_of) != 3:
            index_of = {0: 0, 1: 1, 2: 2}
        families = [(index_of[0], index_of[1]), (index_of[0], index_of[2]), (index_of[1], index_of[2])]
    views = []
    for plane, axes in enumerate(families):
        lines = grid.replace(array=_grid_lines(grid, axes, every), mask=None, nodata=None)
        values, valid = resample_values(deformable, lines, reference=grid, interpolation="linear")
        _, drawn = _planes(grid, [np.where(valid, values, 0.0)])
        views.append(drawn[0][plane])
    planes, _ = _planes(grid, [np.zeros(grid.shape, np.float32)])
    return _grid_figure(
        [views], row_titles=[""], col_titles=[p.name or "warped grid" for p in planes],
        aspects=[p.aspect for p in planes], cmap="gray_r", vmin=0.0, vmax=1.0,
    )


def _jacobian_section(transform: Transform, fixed: SpatialImage, measures: Mapping[str, Any]) -> str:
    jacobian = jacobian_determinant(transform, fixed, max_points=JACOBIAN_MAX_POINTS)
    det, grid = jacobian.array, jacobian
    # the quality check's figures come from every voxel of the fixed grid: shown when the check computed them
    full = "folding_fraction" in measures and "min_jacobian" in measures
    folding = float(measures["folding_fraction"]) if full else float(np.mean(det <= 0))
    low = float(measures["min_jacobian"]) if full else float(det.min())
    high = float(measures["max_jacobian"]) if full and "max_jacobian" in measures else float(det.max())
    where = f"full fixed grid, {'x'.join(map(str, fixed.size))} voxels" if full else f"on {'x'.join(map(str, grid.size))} points"
    planes, views = _planes(grid, [det])
    fig = _grid_figure(
        [views[0]], row_titles=[""], col_titles=[p.name or "Jacobian determinant" for p in planes],
        aspects=[p.aspect for p in planes], cmap="RdBu_r", vmin=0.0, vmax=2.0, colorbar="Jacobian determinant",
    )
    verdict = (
        f'<p class="flag">Folding: the map is not invertible on {100 * folding:.3f} % of the grid '
        f"(Jacobian determinant ≤ 0).</p>"
        if folding > 0
        else '<p class="better">No folding: the Jacobian determinant is positive everywhere.</p>'
    )
    deformable = _deformable_part(transform)
    warped = (
        _figure_html(_warped_grid_figure(deformable, grid),
                     f"A regular grid of the deformation's input space (a line every {max(3, int(round(min(grid.size) / 24)))} "
                     "points) pulled back onto the fixed grid through the deformable part alone.", "warped grid")
        if deformable is not None else ""
    )
    return (
        '<section id="jacobian"><h2>Deformation</h2>'
        f'<table><tr><th class="l">Jacobian determinant</th><th>min</th><th>median</th><th>max</th>'
        f'<th>folding fraction</th></tr><tr><td class="l">{_esc(where)}</td>'
        f"<td>{_num(low)}</td><td>{_num(np.median(det))}</td><td>{_num(high)}</td>"
        f'<td id="folding-fraction">{folding:.6f}</td></tr></table>'
        + verdict
        + _figure_html(fig, "Local volume change of the fixed → moving map: 1 = unchanged, < 1 shrinks, > 1 expands.",
                       "Jacobian determinant map")
        + warped
        + "</section>"
    )


def write_report(
    result: Result,
    fixed: SpatialImage,
    moving: SpatialImage,
    registered: SpatialImage | None,
    path: str | os.PathLike[str],
    *,
    title: str | None = None,
    command: str | None = None,
    edges: bool | None = None,
) -> Path:
    """Write the self-contained HTML quality-control report of a registration.

    Parameters
    ----------
    result : Result
        What :func:`coregister.register` returned. Its transform maps
        fixed-space points to moving space.
    fixed, moving : SpatialImage
        The images that were registered.
    registered : SpatialImage or None
        The moving image resampled onto the fixed grid by ``result.transform``
        (``coregister.apply(result.transform, moving, reference=fixed)``);
        computed here when ``None``.
    path : path
        The ``.html`` file to write (atomically).
    title : str, optional
        Page title (default: the engine and the input names).
    command : str, optional
        The command line that ran (the command-line interface passes it),
        shown in the summary.
    edges : bool, optional
        Add the edge overlay (the fixed image with both images' edges), the
        view that shows the alignment of images of different modalities.
        Default: when the registration's metric was mutual information
        (Mattes or joint-histogram), the metric of multimodal pairs.

    Returns
    -------
    Path
        ``path``.
    """
    if fixed.ndim != moving.ndim:
        from coregister.errors import GeometryError

        raise GeometryError(f"fixed is {fixed.ndim}D and moving {moving.ndim}D; a report needs images of one dimension")
    transform = result.transform
    before = _resampled(Translation(np.zeros(fixed.ndim)), moving, fixed)
    after = _resampled(transform, moving, fixed) if registered is None else registered
    if not after.same_geometry(fixed):
        after = _resampled(Translation(np.zeros(fixed.ndim)), after, fixed)
    names = [os.path.basename(str(img.meta.get("source_path", ""))) for img in (fixed, moving)]
    title = title or (f"coregister: {names[1]} → {names[0]}" if all(names) else "coregister registration report")
    status = (
        '<span class="badge pass">quality check passed</span>'
        if result.passed
        else '<span class="badge fail">quality check FAILED (exit code 3)</span>'
    )
    config_name = result.config.get("name", "") if isinstance(result.config, Mapping) else ""
    metric = _final_metric_name(result)
    final = result.final_metric
    final_text = (f"{metric} {_num(final)}" if metric else _num(final)) if math.isfinite(final) else "-"
    header = (
        f"<header><h1>{_esc(title)}</h1><p>{status}</p>"
        + (f'<p id="command">Command: <code>{_esc(command)}</code></p>' if command else "")
        + '<table id="summary"><tr><th class="l">engine</th><th class="l">preset</th><th class="l">final metric</th>'
        '<th>time (s)</th><th>seed</th><th>threads</th></tr>'
        f'<tr><td class="l">{_esc(result.engine or "-")}</td><td class="l">{_esc(config_name or "-")}</td>'
        f'<td class="l" id="final-metric">{final_text}</td>'
        f"<td>{result.time_s:.3f}</td><td>{result.seed}</td><td>{result.threads}</td></tr></table>"
        '<table id="inputs"><tr><th class="l">image</th><th class="l">size (x, y[, z])</th><th class="l">spacing</th>'
        '<th class="l">space</th><th class="l">type</th><th class="l">file</th></tr>'
        + _image_summary(fixed, "fixed")
        + _image_summary(moving, "moving")
        + "</table></header>"
    )
    warnings = (
        '<section id="warnings"><h2>Warnings</h2><ul class="warn">'
        + "".join(f"<li>{_esc(w)}</li>" for w in result.warnings)
        + "</ul></section>"
        if result.warnings
        else ""
    )
    sections = [header, warnings, '<section id="metrics"><h2>Metrics</h2>' + _metrics_html(result.metrics) + "</section>"]
    if edges is None:
        edges = metric in (METRIC_NAMES["mattes"], METRIC_NAMES["mi"])
    sections += _comparison_sections(fixed, before, after, edges=edges)
    convergence = _convergence_figure(result)
    sections.append(
        '<section id="convergence"><h2>Convergence</h2>'
        + (
            _figure_html(convergence, "Optimiser metric per iteration, one curve per stage and pyramid level.", "convergence curves")
            if convergence
            else "<p>This engine recorded no per-iteration history.</p>"
        )
        + "</section>"
    )
    sections.append('<section id="transform"><h2>Transform</h2>' + _transform_html(transform, _units(fixed)) + "</section>")
    if _deformable(transform):
        sections.append(_jacobian_section(transform, fixed, result.quality.measures))
    extras: dict[str, Any] = {"final_metric": final} if math.isfinite(final) else {}
    extras.update((k, v) for k, v in result.extras.items() if isinstance(v, int | float | str | bool))
    if extras:
        labels = {"final_metric": f"final_metric ({metric}; ITK minimises it)" if metric else "final_metric"}
        sections.append(
            '<section id="extras"><h2>Engine figures</h2><table>'
            + "".join(f'<tr><td class="l">{_esc(labels.get(k, k))}</td><td>{_num(v)}</td></tr>' for k, v in extras.items())
            + "</table></section>"
        )
    return _write(path, _page(title, sections))
