"""Head-motion correction of a 4D series (fMRI, DCE, DWI): every volume realigned rigidly to one reference.

:func:`motion` registers each volume of a series to a reference volume (the
middle one by default, a chosen one, or the mean of the series, in two passes
as SPM's realign does) through the pipeline
(:func:`coregister.pipeline.register_series`: each volume judged by the
quality check), resamples every volume once onto the reference grid, and
returns a :class:`MotionResult`: the realigned series with the input's
header fields, the transform of each volume, the six motion parameters per
volume as fMRIPrep reports them, the framewise displacement and the volumes
that moved more than a threshold.

The registration (:func:`motion_config`) is the ECC engine's rigid model
(the enhanced correlation coefficient: a normalised correlation, invariant
to the gain and offset of a drifting signal) on two pyramid levels, each
volume starting from its neighbour's answer. Its accuracy and speed beside
ANTsPy's ``motion_correction`` are measured by ``benchmarks/bench_motion.py``.

Conventions
-----------
* ``transforms[k]`` maps reference-space points to points of volume ``k``
  (ITK's convention, LPS millimetres): volume ``k`` resampled through it
  lies on the reference.
* ``parameters`` (:func:`motion_parameters`): ``trans_x trans_y trans_z``
  in mm and ``rot_x rot_y rot_z`` in radians, computed as fMRIPrep (and
  PETPrep) compute them from their head-motion transforms
  (``FSLMotionParams`` in nipreps' ``interfaces/confounds.py``): those of
  the FSL (MCFLIRT) matrix that maps volume ``k`` onto the reference, in
  FSL's scaled-voxel coordinates (for an axis-aligned image x runs towards
  the subject's left, y anterior, z superior); rotations are the intrinsic
  x-y-z Euler angles of its transposed rotation, translations those of
  the matrix written as a rotation about the reference's centre of gravity
  (MCFLIRT's parametrisation).
* ``framewise_displacement`` (:func:`framewise_displacement`): Power et al.
  (2012), the sum of the absolute volume-to-volume changes of the six
  parameters, rotations turned into millimetres on a sphere of 50 mm
  radius; NaN (``n/a`` in the TSV) for the first volume, as in fMRIPrep.

Examples
--------
>>> import numpy as np
>>> from coregister import SpatialImage
>>> from coregister.qc.synthetic import motion_series, random_motion
>>> z, y, x = np.mgrid[0:60, 0:60, 0:60]
>>> head = np.exp(-((x - 30.0) ** 2 / 300 + (y - 28.0) ** 2 / 200 + (z - 31.0) ** 2 / 250)) * (1 + 0.5 * (x > 30))
>>> source = SpatialImage(head.astype(np.float32), origin=(0, 0, 0), spacing=(1, 1, 1))
>>> grid = SpatialImage(np.zeros((12, 16, 16), np.float32), origin=(1.5, 0.5, 4.5), spacing=(3.5, 3.5, 4.5))
>>> poses = random_motion(6, 0, centre=grid.world_centre, max_shift_mm=1.0, max_angle_deg=1.0)
>>> result = motion(motion_series(source, grid, poses, noise=0.002))
>>> result.reference_volume, result.realigned.array.shape, result.parameters.shape
(3, (12, 16, 16, 6), (6, 6))
>>> bool(np.isnan(result.framewise_displacement[0])), result.passed
(True, True)
>>> result.to_tsv().splitlines()[0]
'trans_x\\ttrans_y\\ttrans_z\\trot_x\\trot_y\\trot_z\\tframewise_displacement'
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import logging
import math
import multiprocessing
import os
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from coregister.config import Initialisation, Interpolation, Metric, RegistrationConfig, Stage, TransformModel
from coregister.errors import ConfigError, GeometryError
from coregister.image import SpatialImage
from coregister.pipeline import Result, register_series
from coregister.resample import apply
from coregister.transforms import Transform

__all__ = [
    "PARAMETER_COLUMNS",
    "MotionResult",
    "framewise_displacement",
    "motion",
    "motion_config",
    "motion_parameters",
]

logger = logging.getLogger(__name__)

#: the TSV's motion columns, as fMRIPrep names them: millimetres, then radians
PARAMETER_COLUMNS = ("trans_x", "trans_y", "trans_z", "rot_x", "rot_y", "rot_z")
#: the radius (mm) that turns rotations into displacements in the framewise displacement (Power et al. 2012)
HEAD_RADIUS_MM = 50.0
#: a series with fewer voxels than this in all (volume voxels times volumes) runs in this process by default:
#: starting worker processes (about a second each) would cost more than they save
_PARALLEL_MIN_VOXELS = 4_000_000
_REFERENCES = ("middle", "mean", "first", "last")


def motion_config(volume: SpatialImage | None = None, *, samples: int = 20_000, seed: int = 0) -> RegistrationConfig:
    """The rigid registration :func:`motion` runs for each volume: the ECC engine on two pyramid levels.

    The enhanced correlation coefficient is a normalised correlation: same
    modality, invariant to the gain and offset of a drifting signal. Two
    levels (shrink 2 then 1, one voxel of smoothing on each) suffice for the
    few millimetres a head moves between volumes; a volume with fewer than 8
    voxels along an axis (a few slices) runs on its own grid only. At most
    ``samples`` voxels (a seeded random subset) are compared per level.

    Examples
    --------
    >>> config = motion_config()
    >>> config.stages[0].model.value, config.stages[0].metric.value, config.stages[0].shrink_factors
    ('rigid', 'ecc', (2, 1))
    >>> import numpy as np
    >>> from coregister import SpatialImage
    >>> motion_config(SpatialImage(np.zeros((3, 21, 17)), origin=(0, 0, 0), spacing=(4, 4, 8))).stages[0].shrink_factors
    (1,)
    """
    small = volume is not None and min(volume.shape) < 8
    stage = Stage(
        model=TransformModel.RIGID,
        metric=Metric.ECC,
        shrink_factors=(1,) if small else (2, 1),
        iterations=50,
        extra=(("max_samples", int(samples)),),
    )
    return RegistrationConfig(stages=(stage,), initialisation=Initialisation.NONE, seed=seed, name="motion")


def motion_parameters(transforms: Sequence[Transform], reference: SpatialImage) -> np.ndarray:
    """The six motion parameters of each transform, as fMRIPrep reports them: ``(n, 6)``, mm then radians.

    Columns are :data:`PARAMETER_COLUMNS`. Each transform maps reference
    points to a volume's points (LPS mm, ITK's convention). It is written as
    the FSL matrix that maps the volume onto the reference in FSL's
    scaled-voxel coordinates of the reference grid (voxel indices times
    voxel sizes, the first axis reversed when the voxel-to-RAS matrix has a
    positive determinant); the rotations are the intrinsic x-y-z Euler
    angles of its transposed rotation part, as fMRIPrep's
    ``FSLMotionParams`` computes them, and the translations are the
    matrix's translation once written as a rotation about the reference's
    centre of gravity ``c`` (its intensity-weighted centre in scaled
    voxels): ``y = R (x - c) + c + t``, MCFLIRT's parametrisation.
    fMRIPrep's reconstruction of that translation (``t - Rᵀ c + c``)
    agrees with it to first order in the angles (they differ by about
    ``θ² |c| / 2``: 0.02 mm for 2 degrees at 30 mm).

    Parameters
    ----------
    transforms : sequence of Transform
        Linear transforms (rigid in practice), one per volume.
    reference : SpatialImage
        The 3D reference the volumes were registered to.

    Examples
    --------
    A head moved 2 mm towards the subject's right (LPS x decreases) in an
    axis-aligned LAS image: ``trans_x`` is +2, like MCFLIRT's.

    >>> import numpy as np
    >>> from coregister import SpatialImage, Translation
    >>> reference = SpatialImage(np.ones((10, 12, 14), np.float32), origin=(0, 0, 0), spacing=(2, 2, 3),
    ...                          direction=np.diag([1.0, -1.0, 1.0]))  # LAS, as most NIfTI files
    >>> params = motion_parameters([Translation([0.0, 0.0, 0.0]), Translation([-2.0, 0.0, 0.0])], reference) + 0.0
    >>> np.round(params, 6).tolist()
    [[0.0, 0.0, 0.0, 0.0, 0.0, 0.0], [2.0, 0.0, 0.0, 0.0, 0.0, 0.0]]
    """
    from scipy import ndimage
    from scipy.spatial.transform import Rotation

    from coregister.conventions import flip_ras_lps, point_map_ras_lps
    from coregister.io.transforms.fsl import scaled_voxel_matrix

    if reference.ndim != 3:
        raise GeometryError(f"motion parameters are defined for 3D volumes; the reference is {reference.ndim}D")
    zooms = np.asarray(reference.spacing, dtype=float)
    # FSL's scaled-voxel frame (first axis flipped for a neurological sform), as FLIRT matrices use it
    fsl_from_ras = scaled_voxel_matrix(reference) @ np.linalg.inv(flip_ras_lps(reference.affine))
    ras_from_fsl = np.linalg.inv(fsl_from_ras)
    values = np.asarray(reference.channel(0).array if reference.has_channels else reference.array, dtype=float)
    centre_of_gravity = zooms * np.asarray(ndimage.center_of_mass(values), dtype=float)[::-1]  # (i, j, k) * zooms
    rows = []
    for transform in transforms:
        if not transform.is_linear:
            raise GeometryError(f"motion parameters need linear transforms; got a {type(transform).__name__}")
        ras = point_map_ras_lps(transform.homogeneous)  # type: ignore[attr-defined]
        fsl = np.linalg.inv(fsl_from_ras @ ras @ ras_from_fsl)  # volume -> reference, FSL coordinates
        angles = Rotation.from_matrix(fsl[:3, :3].T).as_euler("XYZ")
        # the matrix as a rotation about the centre of gravity and a translation: y = R (x - c) + c + t
        shift = fsl[:3, 3] + fsl[:3, :3] @ centre_of_gravity - centre_of_gravity
        rows.append(np.concatenate([shift, angles]))
    return np.asarray(rows, dtype=float).reshape(-1, 6)


def framewise_displacement(parameters: np.ndarray, *, radius_mm: float = HEAD_RADIUS_MM) -> np.ndarray:
    """Power et al. (2012): ``|Δtrans_x| + |Δtrans_y| + |Δtrans_z| + r (|Δrot_x| + |Δrot_y| + |Δrot_z|)``, mm.

    ``parameters`` is ``(n, 6)`` (mm, radians); the first volume has no
    predecessor: NaN, as fMRIPrep writes it (``n/a``).

    Examples
    --------
    >>> import numpy as np
    >>> framewise_displacement(np.array([[0, 0, 0, 0, 0, 0], [0.1, -0.2, 0, 0.001, 0, 0]])).round(6).tolist()
    [nan, 0.35]
    """
    values = np.asarray(parameters, dtype=float).reshape(-1, 6)
    change = np.abs(np.diff(values, axis=0))
    change[:, 3:] *= float(radius_mm)
    return np.concatenate([[np.nan], change.sum(axis=1)])


@dataclasses.dataclass(frozen=True, eq=False)
class MotionResult:
    """What :func:`motion` returns.

    Attributes
    ----------
    realigned : SpatialImage
        The series resampled onto the reference grid (float32, trailing time
        axis), with the input's geometry and header fields in ``meta``
        (repetition time, units, slice timing, description, xform codes):
        ``coregister.write`` writes them back.
    reference : SpatialImage
        The 3D reference every volume was registered to.
    reference_volume : int or None
        Its index in the series; None when it is the mean of the series.
    transforms : tuple of Transform
        Per volume: reference-space points -> that volume's points.
    parameters : ndarray, shape (n, 6)
        :data:`PARAMETER_COLUMNS` per volume (:func:`motion_parameters`).
    framewise_displacement : ndarray, shape (n,)
        mm; NaN for the first volume.
    fd_threshold_mm : float
        Volumes whose framewise displacement exceeds it are :attr:`outliers`.
    results : tuple of Result
        Each volume's registration with its quality verdict (of the last pass).
    passes : int
        1, or 2 for a mean reference.
    time_s : float
        Wall time of the whole correction (registration and resampling).
    """

    realigned: SpatialImage
    reference: SpatialImage
    reference_volume: int | None
    transforms: tuple[Transform, ...]
    parameters: np.ndarray
    framewise_displacement: np.ndarray
    fd_threshold_mm: float
    results: tuple[Result, ...]
    passes: int = 1
    time_s: float = 0.0
    radius_mm: float = HEAD_RADIUS_MM

    def __post_init__(self) -> None:
        for name in ("parameters", "framewise_displacement"):
            values = np.array(getattr(self, name), dtype=float)
            values.flags.writeable = False
            object.__setattr__(self, name, values)
        object.__setattr__(self, "transforms", tuple(self.transforms))
        object.__setattr__(self, "results", tuple(self.results))

    @property
    def n_volumes(self) -> int:
        """Number of volumes of the series."""
        return len(self.transforms)

    @property
    def outliers(self) -> tuple[int, ...]:
        """Volumes whose framewise displacement exceeds :attr:`fd_threshold_mm` (0-based indices)."""
        fd = np.nan_to_num(self.framewise_displacement, nan=0.0)
        return tuple(int(k) for k in np.flatnonzero(fd > self.fd_threshold_mm))

    @property
    def failed(self) -> tuple[int, ...]:
        """Volumes whose registration did not pass its quality check."""
        return tuple(k for k, r in enumerate(self.results) if not r.passed)

    @property
    def passed(self) -> bool:
        """Whether every volume's registration passed its quality check."""
        return not self.failed

    def to_tsv(self) -> str:
        """The motion parameters and framewise displacement as a TSV table (fMRIPrep's columns, ``n/a`` for NaN)."""
        lines = ["\t".join((*PARAMETER_COLUMNS, "framewise_displacement"))]
        for row, fd in zip(self.parameters, self.framewise_displacement, strict=True):
            cells = [_cell(v) for v in row] + [_cell(fd)]
            lines.append("\t".join(cells))
        return "\n".join(lines) + "\n"

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary: reference, outliers, failed volumes with reasons, FD figures, per-volume verdicts."""
        fd = self.framewise_displacement[1:]
        return {
            "volumes": self.n_volumes,
            "reference": "mean" if self.reference_volume is None else int(self.reference_volume),
            "passes": self.passes,
            "passed": self.passed,
            "fd_threshold_mm": self.fd_threshold_mm,
            "head_radius_mm": self.radius_mm,
            "outliers": list(self.outliers),
            "framewise_displacement_mm": {
                "mean": float(np.mean(fd)) if fd.size else 0.0,
                "max": float(np.max(fd)) if fd.size else 0.0,
            },
            "failed": [{"volume": k, "reasons": list(self.results[k].quality.failures) or list(self.results[k].warnings)}
                       for k in self.failed],
            "verdicts": [r.verdict.value for r in self.results],
            "time_s": self.time_s,
            "parameters": {"columns": list(PARAMETER_COLUMNS), "units": ["mm"] * 3 + ["rad"] * 3},
        }


def _cell(value: float) -> str:
    return "n/a" if not math.isfinite(float(value)) else f"{float(value):.8g}"


def motion(
    series: SpatialImage,
    *,
    reference: str | int = "middle",
    fd_threshold_mm: float = 0.5,
    radius_mm: float = HEAD_RADIUS_MM,
    interpolation: Interpolation | str = Interpolation.LINEAR,
    config: RegistrationConfig | None = None,
    mask: Any = None,
    workers: int | None = 1,
    progress: Callable[[int, int], None] | None = None,
) -> MotionResult:
    """Realign every volume of a 4D series rigidly to a reference volume; see the module's conventions.

    Parameters
    ----------
    series : SpatialImage
        A 3D image with a trailing time axis (``coregister.read`` of a 4D
        NIfTI or MetaImage), at least two volumes.
    reference : {"middle", "mean", "first", "last"} or int
        The volume every volume is registered to: the middle one (default,
        as MCFLIRT), the first or last, a volume index (negative counts from
        the end), or ``"mean"``: two passes as SPM's realign does, the
        series realigned to its middle volume, then to the mean of that
        realigned series (each volume starting from its first-pass answer).
    fd_threshold_mm : float
        Volumes whose framewise displacement exceeds it are listed in
        :attr:`MotionResult.outliers` (0.5 mm, Power et al. 2012).
    radius_mm : float
        Head radius that turns rotations into displacements (50 mm).
    interpolation : str
        How the volumes are resampled: ``linear`` (default) or ``bspline``.
    config : RegistrationConfig, optional
        The per-volume registration (default :func:`motion_config`).
    mask : ndarray of bool or SpatialImage, optional
        On the volume grid, True where to compare (a brain mask).
    workers : int or None
        Processes to run the registration in: 1 (default) runs everything
        in this process; N > 1 runs the two chains (the volumes after the
        reference, then those before it, each starting from its neighbour's
        answer) and the second pass of a mean reference in N worker
        processes (spawned: guard the calling script with
        ``if __name__ == "__main__":``); None: the machine's cores, for a
        series large enough to gain from them. The answers do not depend on
        the number of workers.
    progress : callable, optional
        ``progress(done, total)`` as volumes are registered (in batches
        when workers run them).

    Returns
    -------
    MotionResult

    Raises
    ------
    GeometryError
        ``series`` is not a 3D series of at least two volumes.
    ConfigError
        An unknown reference or interpolation, a reference index out of range.
    """
    started = time.perf_counter()
    volumes = _volumes(series)
    n = len(volumes)
    reference_index = _reference_index(reference, n)
    resampling: Interpolation = Interpolation.parse(interpolation)
    if resampling not in (Interpolation.LINEAR, Interpolation.BSPLINE):
        raise ConfigError(f"interpolation={resampling.value!r}: a series of intensities is resampled 'linear' or 'bspline'")
    config = config or motion_config(volumes[0])
    workers = _workers(workers, series)
    two_passes = isinstance(reference, str) and reference.strip().lower() == "mean"
    tracker = _Progress(progress, n * (2 if two_passes else 1))

    target = volumes[reference_index]
    results = _chains(target, volumes, reference_index, config, mask, workers, tracker)
    passes = 1
    reference_volume: int | None = reference_index
    if two_passes:
        first = [r.transform for r in results]
        realigned = _resampled(volumes, first, target, resampling)
        target = target.replace(array=np.mean(realigned, axis=-1, dtype=np.float64).astype(np.float32))
        results = _blocks(target, volumes, first, config, mask, workers, tracker)
        passes, reference_volume = 2, None
    transforms = tuple(r.transform for r in results)
    stack = _resampled(volumes, transforms, target, resampling)
    realigned_series = series.replace(array=stack, mask=None, nodata=None)
    parameters = motion_parameters(transforms, target)
    result = MotionResult(
        realigned=realigned_series,
        reference=target,
        reference_volume=reference_volume,
        transforms=transforms,
        parameters=parameters,
        framewise_displacement=framewise_displacement(parameters, radius_mm=radius_mm),
        fd_threshold_mm=float(fd_threshold_mm),
        results=results,
        passes=passes,
        time_s=time.perf_counter() - started,
        radius_mm=float(radius_mm),
    )
    logger.info("realigned %d volumes to %s in %.2f s: %d above %.2f mm of framewise displacement, %d failed",
                n, "the mean" if reference_volume is None else f"volume {reference_volume}", result.time_s,
                len(result.outliers), fd_threshold_mm, len(result.failed))
    return result


# --------------------------------------------------------------------------- the steps


def _volumes(series: SpatialImage) -> list[SpatialImage]:
    """The volumes of ``series`` as contiguous float32 3D images on its grid."""
    if not isinstance(series, SpatialImage):
        raise ConfigError(f"series is a {type(series).__name__}; give a SpatialImage (coregister.read('bold.nii.gz'))")
    if series.ndim != 3 or not series.has_channels:
        raise GeometryError(
            f"motion correction needs a 4D series (a 3D image with a trailing time axis); this image is {series.ndim}D "
            f"{' x '.join(map(str, series.size))}{'' if series.has_channels else ' with no time axis'}"
        )
    if series.meta.get("trailing_axis") == "vector":
        raise GeometryError("the image's trailing axis holds vector components, not volumes; give a 4D time series")
    if series.n_channels < 2:
        raise GeometryError(f"the series has {series.n_channels} volume; motion correction needs at least two")
    values = np.asarray(series.array)
    grid = series.replace(array=np.zeros(series.shape, np.float32), meta={}, mask=None)
    return [grid.replace(array=np.ascontiguousarray(values[..., k], dtype=np.float32)) for k in range(series.n_channels)]


def _reference_index(reference: str | int, n: int) -> int:
    if isinstance(reference, str):
        name = reference.strip().lower()
        if name not in _REFERENCES:
            raise ConfigError(f"reference={reference!r}: choose one of {', '.join(_REFERENCES)} or a volume index")
        return {"middle": n // 2, "mean": n // 2, "first": 0, "last": n - 1}[name]
    if isinstance(reference, bool) or not isinstance(reference, int | np.integer):
        raise ConfigError(f"reference={reference!r}: give a volume index or one of {', '.join(_REFERENCES)}")
    if not -n <= int(reference) < n:
        raise ConfigError(f"reference={reference} is out of range for a series of {n} volumes (0..{n - 1})")
    return int(reference) % n


def _workers(workers: int | None, series: SpatialImage) -> int:
    if workers is None:
        voxels = math.prod(series.shape) * series.n_channels
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
        return max(1, cores) if voxels >= _PARALLEL_MIN_VOXELS else 1
    if int(workers) < 1:
        raise ConfigError(f"workers={workers}: give a positive number of processes, or None for the machine's cores")
    return int(workers)


class _Progress:
    def __init__(self, callback: Callable[[int, int], None] | None, total: int) -> None:
        self.callback, self.total, self.done = callback, total, 0

    def add(self, count: int) -> None:
        self.done += count
        if self.callback is not None:
            self.callback(self.done, self.total)


def _run(reference: SpatialImage, volumes: Sequence[SpatialImage], config: RegistrationConfig,
         initial: Sequence[Transform | None] | None, chain: bool, mask: Any, threads: int | None) -> tuple[Result, ...]:
    """One chain (or block) of volumes: in this process, or in a worker (a module-level function pickles)."""
    return register_series(reference, volumes, config=config, initial_transforms=initial, chain=chain,
                           fixed_mask=mask, threads=threads)


def _execute(jobs: list[tuple[list[int], Sequence[Transform | None] | None, bool]], reference: SpatialImage,
             volumes: Sequence[SpatialImage], config: RegistrationConfig, mask: Any, workers: int,
             tracker: _Progress) -> tuple[Result, ...]:
    """Run each job (volume indices in order, their starts, whether to chain) and put the answers in volume order."""
    answers: dict[int, Result] = {}
    jobs = [job for job in jobs if job[0]]
    if workers == 1 or len(jobs) == 1:
        for indices, initial, chain in jobs:
            answers.update(zip(indices, register_series(
                reference, [volumes[k] for k in indices], config=config, initial_transforms=initial, chain=chain,
                fixed_mask=mask, progress=lambda position, result: tracker.add(1)), strict=True))
        return tuple(answers[k] for k in range(len(volumes)))
    context = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(max_workers=min(workers, len(jobs)), mp_context=context) as pool:
        futures = {pool.submit(_run, reference, [volumes[k] for k in indices], config, initial, chain, mask, 1): indices
                   for indices, initial, chain in jobs}
        for future in concurrent.futures.as_completed(futures):
            indices = futures[future]
            answers.update(zip(indices, future.result(), strict=True))
            tracker.add(len(indices))
    return tuple(answers[k] for k in range(len(volumes)))


def _chains(reference: SpatialImage, volumes: Sequence[SpatialImage], index: int, config: RegistrationConfig,
            mask: Any, workers: int, tracker: _Progress) -> tuple[Result, ...]:
    """Every volume registered to ``reference`` in two chains outward from volume ``index``: after it, then before it."""
    forward = list(range(index, len(volumes)))
    backward = list(range(index - 1, -1, -1))
    return _execute([(forward, None, True), (backward, None, True)], reference, volumes, config, mask, workers, tracker)


def _blocks(reference: SpatialImage, volumes: Sequence[SpatialImage], starts: Sequence[Transform],
            config: RegistrationConfig, mask: Any, workers: int, tracker: _Progress) -> tuple[Result, ...]:
    """Every volume registered to ``reference`` from its own start, in ``workers`` contiguous blocks."""
    n = len(volumes)
    bounds = np.linspace(0, n, max(1, min(workers, n)) + 1).round().astype(int)
    jobs: list[tuple[list[int], Sequence[Transform | None] | None, bool]] = []
    for low, high in zip(bounds[:-1], bounds[1:], strict=True):
        indices = list(range(int(low), int(high)))
        jobs.append((indices, [starts[k] for k in indices], False))
    return _execute(jobs, reference, volumes, config, mask, workers, tracker)


def _resampled(volumes: Sequence[SpatialImage], transforms: Sequence[Transform], grid: SpatialImage,
               interpolation: Interpolation) -> np.ndarray:
    """Each volume resampled once onto ``grid`` through its transform, stacked on a trailing axis (float32)."""
    stack = np.empty((*grid.shape, len(volumes)), dtype=np.float32)
    for k, (volume, transform) in enumerate(zip(volumes, transforms, strict=True)):
        stack[..., k] = apply(transform, volume, reference=grid, interpolation=interpolation,
                              output_dtype=np.float32).array
    return stack
