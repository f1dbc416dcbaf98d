"""``coregister demo``: the main jobs on data that ships with the installed dependencies, no network needed.

Cases (each with a known truth, so the table shows the real error):

``t1-rigid``
    nibabel's ``anatomical.nii`` (T1, 2 mm, 33 x 41 x 25 voxels: the largest
    real head volume that ships inside the installed dependencies) against
    ``reoriented_anat_moved.nii``: the same head moved by a known rigid
    transform and resampled by SPM12 onto a 4 mm grid in another
    orientation. The registration runs on these files as they are; the
    report draws the answer on the T1 resampled to 1 mm by a cubic B-spline
    (:func:`demo_t1`, written as ``fixed_1mm.nii.gz``): smoother to look at,
    no new detail (interpolation, not data). Truth, from nibabel's
    ``tests/data/make_moved_anat.py``: the moved image's affine is
    ``E @ anatomical.affine`` with ``E = from_matvec(euler2mat(0.1, 0.2, 0.3),
    [3, 4, 5])`` (RAS). A RAS point ``p`` of the anatomical image is at
    ``E p`` in the moved one, so the fixed -> moving map is ``E`` in RAS, and
    ``F E F`` in LPS (``F = diag(-1, -1, 1)``).
``t1-multimodal``
    The same pair with the moving image's contrast remapped
    non-monotonically (intensities above 35 % of the range inverted), so
    that correlation-based metrics fail and mutual information works.
``t1-multimodal-ncc``
    That pair with normalised correlation: it is expected to fail, which is
    why multimodal pairs need mutual information.
``photo-homography``
    scikit-image's astronaut photograph against a known homography warp of
    itself (corners moved by 2-6 % of the image size along each axis); error = mean
    corner displacement in pixels.
``geo-shift``
    A georeferenced raster (scikit-image's moon image, EPSG:32633, 10 m
    pixels) against a copy whose content is shifted by a known sub-pixel
    amount; global shift mode; error in pixels.

Every case writes its inputs, the registered output, the transform,
``result.json`` and an HTML report into ``DIR/<case>/``.
"""

from __future__ import annotations

import dataclasses
import importlib.resources
import logging
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import click
import numpy as np

from coregister.cli._options import overwrite_option
from coregister.cli._output import echo_json, json_option, print_table, quiet

__all__ = ["CASES", "CaseOutcome", "demo", "demo_t1", "run_demo"]

logger = logging.getLogger(__name__)

CASES = ("t1-rigid", "t1-multimodal", "t1-multimodal-ncc", "photo-homography", "geo-shift")


@dataclasses.dataclass(frozen=True)
class CaseOutcome:
    """One row of the demo table."""

    case: str
    what: str
    engine: str
    time_s: float
    error: float
    unit: str
    tolerance: float
    expect_failure: bool
    folder: Path
    files: tuple[str, ...]
    note: str = ""

    @property
    def as_expected(self) -> bool:
        """Within tolerance, or (for a case shown to fail) outside it."""
        within = bool(np.isfinite(self.error) and self.error <= self.tolerance)
        return within != self.expect_failure

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["folder"] = str(self.folder)
        out["files"] = list(self.files)
        out["as_expected"] = self.as_expected
        return out


# ----------------------------------------------------------------- truths
def nibabel_data() -> Path:
    """Folder of nibabel's bundled test images (``anatomical.nii``, ``reoriented_anat_moved.nii``)."""
    return Path(str(importlib.resources.files("nibabel") / "tests" / "data"))


def demo_t1(path: Path, *, overwrite: bool = False) -> Path:
    """nibabel's ``anatomical.nii`` resampled to 1 mm by a cubic B-spline over the same field of view, written to ``path``.

    The 2 mm, 33 x 41 x 25 voxel volume is the largest real head image the
    installed dependencies ship (nibabel's, dipy's and scikit-image's test
    data hold nothing larger offline); at 1 mm it draws without blocks.
    Interpolation adds no detail. Values stay in the source's range (the
    B-spline's overshoot is clipped), as float32; geometry (origin at the
    same corner, direction) is the source's.

    Examples
    --------
    >>> import tempfile, coregister as cr
    >>> image = cr.read(demo_t1(Path(tempfile.mkdtemp()) / "t1.nii.gz"))
    >>> image.size, image.spacing, image.orientation
    ((66, 82, 50), (1.0, 1.0, 1.0), 'LAS')
    """
    import coregister as cr
    from coregister.image import SpatialImage
    from coregister.transforms import Translation

    source = cr.read(nibabel_data() / "anatomical.nii")
    factor = 2
    spacing = tuple(s / factor for s in source.spacing)
    shape = tuple(n * factor for n in source.shape)
    corner = source.index_to_world([[-0.5] * source.ndim])[0]  # the outer corner of the first voxel
    origin = corner + np.asarray(source.direction) @ (0.5 * np.asarray(spacing))
    grid = SpatialImage(np.zeros(shape, np.uint8), origin=tuple(origin), spacing=spacing, direction=source.direction)
    fine = cr.apply(Translation(np.zeros(3)), source, reference=grid, interpolation="bspline", output_dtype=np.float32)
    values = np.clip(fine.array, float(source.array.min()), float(source.array.max())).astype(np.float32)
    return cr.write(fine.replace(array=values, mask=None), path, overwrite=overwrite)


def spm_truth() -> Any:
    """The fixed (``anatomical.nii``) -> moving (``reoriented_anat_moved.nii``) rigid transform, in LPS millimetres.

    Examples
    --------
    >>> import numpy as np
    >>> t = spm_truth()
    >>> np.round(t.transform_points([[0.0, 0.0, 0.0]]), 4).tolist()  # LPS image of the RAS shift (3, 4, 5)
    [[-3.0, -4.0, 5.0]]
    """
    from nibabel.affines import from_matvec
    from nibabel.eulerangles import euler2mat

    from coregister.conventions import point_map_ras_lps
    from coregister.transforms import Rigid

    moved_from_anatomical = from_matvec(euler2mat(0.1, 0.2, 0.3), [3, 4, 5])  # RAS, nibabel's make_moved_anat.py
    lps = point_map_ras_lps(moved_from_anatomical)
    return Rigid(lps[:3, :3], lps[:3, 3])


def remap_contrast(values: np.ndarray, *, knee: float = 0.35) -> np.ndarray:
    """Non-monotonic, one-to-one intensity remap: values above ``knee`` of the robust range are inverted.

    Background stays dark, the brightest tissue becomes dim and mid-grey
    tissue bright: mutual information is unchanged, correlation is not.

    Examples
    --------
    >>> remap_contrast(np.array([0.0, 0.2, 0.35, 0.5, 1.0]) * 100).round(3).tolist()
    [0.0, 0.2, 1.0, 0.85, 0.35]
    """
    v = np.asarray(values, dtype=np.float32)
    top = float(np.percentile(v, 99.9)) or 1.0
    v = np.clip(v / top, 0.0, 1.0)
    return np.where(v < knee, v, 1.0 + knee - v).astype(np.float32)


def photo_truth(shape: tuple[int, int]) -> np.ndarray:
    """The known homography (fixed -> moving, pixel coordinates ``(x, y)``) for the photo case.

    Corners move by 2-6 % of the image size along each axis, in fixed directions (deterministic).
    """
    from coregister._opencv import cv2

    h, w = shape
    corners = np.array([[0, 0], [w - 1, 0], [w - 1, h - 1], [0, h - 1]], dtype=np.float32)
    moves = np.array([[0.04, 0.03], [-0.05, 0.02], [-0.03, -0.06], [0.05, -0.04]], dtype=np.float32) * np.array([w, h], dtype=np.float32)
    return cv2.getPerspectiveTransform(corners, corners + moves).astype(float)


#: A quarter of the moving image's 4 mm voxel (SPM12 resampled the moved T1 onto a 4 mm grid).
T1_TOLERANCE_MM = 1.0
#: Mean error of the four image corners of the 512 x 512 photograph, a tenth of a pixel: what features + ECC
#: refinement reach on this warp without a mask (the warp's black border is left out automatically,
#: coregister.preprocess.warp_fill_masks).
PHOTO_TOLERANCE_PX = 0.1
GEO_SHIFT_PX = (0.37, 0.62)  #: target content displaced by (columns east, rows south), in pixels


# ------------------------------------------------------------------ errors
def _head_points(image: Any) -> np.ndarray:
    values = np.asarray(image.array, dtype=float)
    head = values > 0.1 * np.percentile(values, 99)
    grid = image.world_grid()
    return grid[head]


def _corners(shape: tuple[int, int]) -> np.ndarray:
    h, w = shape
    return np.array([[0.0, 0.0], [w - 1.0, 0.0], [w - 1.0, h - 1.0], [0.0, h - 1.0]])


# ------------------------------------------------------------------- cases
Progress = Callable[[str, int, int, float], None] | None


def _save_registration(folder: Path, result: Any, fixed: Any, moving: Any, registered_name: str, report: bool,
                       overwrite: bool) -> list[str]:
    from coregister.outputs import publish_registration

    written = publish_registration(folder, result, fixed, moving, image_name=registered_name, report=report,
                                   overwrite=overwrite)
    return [p.name for p in written]


def _t1_case(name: str, out: Path, *, metric: str | None, remap: bool, progress: Progress, report: bool,
             overwrite: bool = False) -> CaseOutcome:
    import coregister as cr
    from coregister.qc.synthetic import mean_displacement_error

    folder = out / name
    folder.mkdir(parents=True, exist_ok=True)
    fixed = cr.read(nibabel_data() / "anatomical.nii")
    moving = cr.read(nibabel_data() / "reoriented_anat_moved.nii")
    files = []
    if remap:
        remapped = cr.write(moving.replace(array=remap_contrast(moving.array)), folder / "moving_remapped.nii.gz",
                            overwrite=overwrite)
        files.append(remapped.name)
        moving = cr.read(remapped)
    result = cr.register(fixed, moving, preset="rigid", metric=metric, progress=progress)
    files += _save_registration(folder, result, fixed, moving, "registered.nii.gz", False, overwrite)
    if report:  # drawn on the T1 at 1 mm: the 2 mm original shows blocks
        from coregister.qc.report import write_report

        shown = cr.read(demo_t1(folder / "fixed_1mm.nii.gz", overwrite=overwrite))
        title = f"coregister demo {name}: {Path(str(moving.meta['source_path'])).name} → anatomical.nii"
        write_report(result, shown, moving, None, folder / "report.html",
                     title=title + " (drawn on the T1 upsampled to 1 mm by a cubic B-spline)")
        files += ["fixed_1mm.nii.gz", "report.html"]
    error = mean_displacement_error(result.transform, spm_truth(), _head_points(fixed))
    what = {
        "t1-rigid": "T1 vs SPM12-moved T1 (rigid)",
        "t1-multimodal": "T1 vs remapped contrast, Mattes MI",
        "t1-multimodal-ncc": "same pair with NCC (should fail)",
    }[name]
    return CaseOutcome(
        name, what, result.engine, result.time_s, error, "mm", T1_TOLERANCE_MM, name.endswith("-ncc"), folder, tuple(files),
        note="mean displacement over head voxels against nibabel's make_moved_anat.py transform",
    )


def _photo_case(out: Path, *, progress: Progress, report: bool, overwrite: bool = False) -> CaseOutcome:
    from skimage import data as skdata

    import coregister as cr
    from coregister._opencv import cv2
    from coregister.image import SpatialImage

    folder = out / "photo-homography"
    folder.mkdir(parents=True, exist_ok=True)
    gray = cv2.cvtColor(skdata.astronaut(), cv2.COLOR_RGB2GRAY)
    truth = photo_truth(gray.shape)
    warped = cv2.warpPerspective(gray, truth, (gray.shape[1], gray.shape[0]), flags=cv2.INTER_LINEAR)
    fixed_path = cr.write(SpatialImage(gray, origin=(0.0, 0.0), spacing=(1.0, 1.0)), folder / "fixed.png",
                          overwrite=overwrite)
    moving_path = cr.write(SpatialImage(warped, origin=(0.0, 0.0), spacing=(1.0, 1.0)), folder / "moving.png",
                           overwrite=overwrite)
    files = [fixed_path.name, moving_path.name]
    fixed, moving = cr.read(fixed_path), cr.read(moving_path)  # as a user would: the report names the files
    result = cr.register(fixed, moving, preset="homography", progress=progress)
    files += _save_registration(folder, result, fixed, moving, "registered.png", report, overwrite)
    corners = _corners(gray.shape)
    estimate = result.transform.transform_points(corners)
    expected = cv2.perspectiveTransform(corners[None].astype(np.float64), truth)[0]
    error = float(np.linalg.norm(estimate - expected, axis=1).mean())
    return CaseOutcome(
        "photo-homography", "astronaut vs known homography warp", result.engine, result.time_s, error, "px",
        PHOTO_TOLERANCE_PX,
        False, folder, tuple(files), note="mean corner error",
    )


def _geo_case(out: Path, *, progress: Progress, report: bool, overwrite: bool = False) -> CaseOutcome:
    from pyproj import CRS
    from scipy import ndimage
    from skimage import data as skdata

    import coregister as cr
    from coregister import geo
    from coregister.image import SpatialImage

    folder = out / "geo-shift"
    folder.mkdir(parents=True, exist_ok=True)
    reference_values = skdata.moon()
    dx, dy = GEO_SHIFT_PX
    shifted = ndimage.shift(reference_values.astype(np.float64), (dy, dx), order=3, mode="nearest")
    target_values = np.clip(np.round(shifted), 0, 255).astype(np.uint8)
    def georeferenced(values: np.ndarray) -> SpatialImage:  # 10 m pixels, north up, UTM 33N
        return SpatialImage(values, origin=(400005.0, 5799995.0), spacing=(10.0, 10.0), direction=np.diag([1.0, -1.0]),
                            crs=CRS.from_epsg(32633))

    reference, target = georeferenced(reference_values), georeferenced(target_values)
    ref_path = cr.write(reference, folder / "reference.tif", overwrite=overwrite)
    tgt_path = cr.write(target, folder / "target.tif", overwrite=overwrite)
    outcome = geo.coregister(ref_path, tgt_path, mode="shift", output=folder / "corrected.tif", progress=progress)
    files = [ref_path.name, tgt_path.name, "corrected.tif"]
    found_cols, found_rows = _geo_correction_px(outcome)
    error = float(np.hypot(found_cols - (-dx), found_rows - (-dy)))
    files.append(outcome.save_json(folder / "result.json").name)
    if report:
        from coregister.qc.geo_report import write_geo_report

        write_geo_report(
            ref_path, tgt_path, folder / "corrected.tif", folder / "report.html",
            tie_points=outcome.tie_points, shift_px=(found_cols, found_rows), warnings=outcome.warnings,
            details={"mode": "shift", "true correction (columns, rows)": f"{-dx:+.3f}, {-dy:+.3f} px",
                     "windows used": f"{len(outcome.used_windows)} of {len(outcome.windows)}"},
        )
        files.append("report.html")
    return CaseOutcome(
        "geo-shift", "raster vs sub-pixel shifted copy", "phase", outcome.time_s, error, "px", 0.05, False, folder,
        tuple(files), note="correction found vs applied shift",
    )


def _geo_correction_px(outcome: Any) -> tuple[float, float]:
    shift = outcome.shift_px
    return float(shift[0]), float(shift[1])


def run_demo(
    out_dir: str | Path,
    *,
    cases: Sequence[str] | None = None,
    report: bool = True,
    progress_factory: Callable[[str], Any] | None = None,
    overwrite: bool = False,
) -> list[CaseOutcome]:
    """Run the demo cases into ``out_dir`` and return one :class:`CaseOutcome` per case.

    Parameters
    ----------
    out_dir : path
        Created if needed; each case writes into ``out_dir / case``.
    cases : sequence of str, optional
        A subset of :data:`CASES` (default: all).
    report : bool
        Write the HTML reports.
    progress_factory : callable, optional
        ``progress_factory(case)`` returns a context manager yielding a
        ``progress(stage, level, iteration, metric)`` callback (or ``None``).
    overwrite : bool
        Run a case whose folder already holds files (an earlier demo), replacing them; without it such a case is
        refused (:class:`~coregister.errors.OutputExistsError`) before anything runs.
    """
    import contextlib

    from coregister.errors import ConfigError, OutputExistsError

    chosen = list(CASES if cases is None else cases)
    unknown = [c for c in chosen if c not in CASES]
    if unknown:
        raise ConfigError(f"unknown demo case(s) {unknown}; choose from {', '.join(CASES)}")
    out = Path(out_dir)
    used = [c for c in chosen if (out / c).is_dir() and any((out / c).iterdir())]
    if used and not overwrite:
        raise OutputExistsError(
            f"{str(out)!r} already holds the outputs of an earlier demo ({', '.join(used)}); pass --overwrite "
            "(overwrite=True) to replace them, or choose another -o folder"
        )
    out.mkdir(parents=True, exist_ok=True)
    outcomes = []
    for case in chosen:
        manager = progress_factory(case) if progress_factory is not None else contextlib.nullcontext(None)
        with manager as progress:
            logger.info("demo case %s", case)
            if case == "t1-rigid":
                outcomes.append(_t1_case(case, out, metric=None, remap=False, progress=progress, report=report,
                                         overwrite=overwrite))
            elif case == "t1-multimodal":
                outcomes.append(_t1_case(case, out, metric="mattes", remap=True, progress=progress, report=report,
                                         overwrite=overwrite))
            elif case == "t1-multimodal-ncc":
                outcomes.append(_t1_case(case, out, metric="ncc", remap=True, progress=progress, report=report,
                                         overwrite=overwrite))
            elif case == "photo-homography":
                outcomes.append(_photo_case(out, progress=progress, report=report, overwrite=overwrite))
            else:
                outcomes.append(_geo_case(out, progress=progress, report=report, overwrite=overwrite))
    return outcomes


# --------------------------------------------------------------- command
@click.command(
    context_settings={"help_option_names": ["-h", "--help"]}, epilog="\b\nExample:\n  coregister demo -o coregister-demo"
)
@click.option(
    "-o", "--output", "output", type=click.Path(file_okay=False, path_type=Path), default=Path("coregister-demo"),
    show_default=True, help="Folder for the outputs (one sub-folder per case).",
)
@click.option("--case", "cases", type=click.Choice(CASES), multiple=True, help="Run only this case (repeatable).")
@click.option("--no-report", is_flag=True, help="Skip the HTML reports.")
@overwrite_option
@json_option
@click.pass_context
def demo(ctx: click.Context, output: Path, cases: tuple[str, ...], no_report: bool, as_json: bool,
         overwrite: bool = False) -> None:
    """Run the main jobs on bundled data (no network): MRI rigid and multimodal, a photo homography, a raster shift.

    Prints a table (case, engine, time, error against the known truth) and
    writes each case's inputs, registered output, transform, result.json and
    report.html into OUTPUT/<case>/. Exit code 3 when a case misses its
    tolerance (or a case shown to fail succeeds).
    """
    from coregister._files import check_writable
    from coregister.cli import QualityCheckFailed
    from coregister.cli._progress import registration_progress

    check_writable(output, folder=True, parents=True, fix="choose another -o folder")
    start = time.perf_counter()
    outcomes = run_demo(
        output, cases=cases or None, report=not no_report, progress_factory=lambda case: registration_progress(ctx),
        overwrite=overwrite,
    )
    total = time.perf_counter() - start
    if as_json:
        echo_json({"output": str(output), "total_time_s": total, "cases": [o.to_dict() for o in outcomes]})
    elif not quiet():
        rows = [
            (
                o.case, o.engine, f"{o.time_s:.2f}", f"{o.error:.3f} {o.unit}", f"{o.tolerance:g} {o.unit}",
                ("fails (expected)" if o.expect_failure else "ok") if o.as_expected else "MISSED",
            )
            for o in outcomes
        ]
        print_table(
            f"coregister demo: {len(outcomes)} cases in {total:.1f} s, outputs in {output}/",
            ("case", "engine", "time (s)", "error", "limit", "verdict"),
            rows,
            justify=("left", "left", "right", "right", "right", "left"),
        )
        reports = [str(o.folder / "report.html") for o in outcomes if "report.html" in o.files]
        if reports:
            click.echo("reports: " + ", ".join(reports))
    bad = [o.case for o in outcomes if not o.as_expected]
    if bad:
        raise QualityCheckFailed(f"demo case(s) off their tolerance: {', '.join(bad)}")
