"""The validation corpus: registration cases with a known truth, in classes wide enough that no constant fits one case.

Each :class:`Case` holds a fixed and a moving image, the true fixed -> moving
map, the points where the error is measured, the class tolerance and the
options ``coregister.register`` gets. Classes (see :func:`classes`):

* ``3d-mono/<volume>``, ``3d-multi/<volume>``, ``3d-partial/<volume>``,
  ``3d-aniso/<volume>``: four real volumes of ``../shared/data`` (MNI152 and
  Colin27 at 1 mm, a 2 x 2 x 3 mm T1, the Visible Human MR at 1 x 1 x 5 mm),
  each warped by a seeded rigid or affine map (up to 10 degrees and 10 mm,
  affine scales 0.9-1.1, shears 0.05) and then: noise only (``mono``); a
  non-monotonic T2-like remap, a bias field and noise of a strength drawn
  per seed (``multi``); the same, the moving image cropped to 55-75 % of its
  slices (``partial``); the same, resampled to slices three times thicker
  (``aniso``). Odd seeds are rigid cases (preset ``rigid``), even seeds affine
  (preset ``affine``).
* ``3d-deform/<volume>``: the same four volumes at 2 mm voxels or coarser,
  under a known smooth warp (a cubic B-spline on a 40 mm mesh, up to 3, 6
  or 9 mm), 1 % noise, preset ``syn``; tolerance a third of a voxel.
* ``ct-mr/phantom``: the MRI-DIR porcine phantom's CT onto its T2 MR, the CT
  moved by a seeded rigid map from a reference alignment (the best-scoring
  answer found, see :func:`_phantom`); the truth is that reference composed
  with the known map (the error is relative to it).
* ``2d-<kind>/<photo>``: 14 scikit-image photographs (textured, periodic,
  low-texture, binary, high dynamic range) under seeded translations,
  similarities, affines and perspective views (a camera turned 10-45 degrees
  out of the image plane); odd seeds give the moving image's valid region as
  mask, even seeds no mask.
* ``broken/...``: runs built to end wrong (``syn``'s demons on a T2-like
  remap, a far starting transform, unrelated
  images, a mask on background, a periodic texture, an optimiser stopped
  early, a metric that cannot handle the contrast): the quality check should
  not pass their wrong answers.

Errors are mean displacements (mm for volumes, px for photos) between the
recovered and the true map over the fixed image's structure (head voxels,
or the photo pixels that the truth keeps inside the moving frame).
"""

from __future__ import annotations

import dataclasses
import functools
import math
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

import coregister as cr
from coregister.image import SpatialImage
from coregister.qc import synthetic
from coregister.transforms import Affine, Homography, Rigid, Transform, rotation_matrix, sampled_field

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("COREGISTER_TEST_DATA", ROOT.parent / "shared" / "data"))

#: the 3D volumes of the corpus: name -> path under DATA
VOLUMES = {
    "mni": "medical/antspy/mni.nii.gz",
    "colin27": "medical/antspy/ch2.nii.gz",
    "kmeans-t1": "medical/itk_kmeans_t1_3d/KmeansTest_T1UCharRaw.nii.gz",
    "vhp-mr": "medical/simpleitk_notebook_data/vm_head_mri.mha",
}
#: scikit-image photographs of the 2D classes, and how each is special
PHOTOS = {
    "camera": "textured", "astronaut": "textured", "coins": "repeated objects", "moon": "smooth",
    "text": "low texture, thin strokes", "brick": "periodic", "grass": "random texture", "gravel": "random texture",
    "page": "low texture", "horse": "binary, no texture", "coffee": "textured", "rocket": "textured",
    "checkerboard": "periodic, binary", "moon-hdr": "high dynamic range (4 decades)",
}
KINDS_2D = ("translation", "similarity", "affine", "perspective")
#: the preset each 2D kind is registered with
PRESET_2D = {"translation": "translation", "similarity": "similarity", "affine": "affine", "perspective": "homography"}


@dataclasses.dataclass(frozen=True)
class Case:
    """One registration with its truth."""

    cls: str
    seed: int
    fixed: SpatialImage
    moving: SpatialImage
    truth: Transform | None
    points: np.ndarray
    tolerance: float
    unit: str
    options: dict[str, Any]
    #: for broken runs: what was broken (the answer is expected to be wrong or refused)
    broken: str | None = None

    @property
    def name(self) -> str:
        return f"{self.cls}#{self.seed}"

    def error(self, transform: Transform) -> float:
        """Mean displacement between ``transform`` and the truth over the case's points (inf without a truth)."""
        if self.truth is None:
            return math.inf
        diff = transform.transform_points(self.points) - self.truth.transform_points(self.points)
        return float(np.mean(np.linalg.norm(diff, axis=1)))


# ------------------------------------------------------------------------------------------- 3D
@functools.cache
def volume(name: str) -> SpatialImage:
    image = cr.read(DATA / VOLUMES[name])
    return image.replace(array=np.asarray(image.array, dtype=np.float32), nodata=None, mask=None)


@functools.cache
def _head(name: str) -> np.ndarray:
    image = volume(name)
    step = max(1, int(round((math.prod(image.shape) / 40_000) ** (1 / 3))))
    return synthetic.head_points(image, step=step)


def _voxel(image: SpatialImage) -> float:
    return float(np.prod(image.spacing) ** (1.0 / image.ndim))


def _crop_slices(image: SpatialImage, rng: np.random.Generator) -> SpatialImage:
    n = image.shape[0]
    keep = max(3, int(round(n * rng.uniform(0.55, 0.75))))
    start = int(rng.integers(0, n - keep + 1))
    origin = image.index_to_world([[0, 0, start]])[0]
    return image.replace(array=np.asarray(image.array)[start:start + keep], origin=tuple(origin))


def _thick_slices(image: SpatialImage, factor: int = 3) -> SpatialImage:
    """Slices ``factor`` times thicker: a Gaussian profile across the slice, then one slice in ``factor`` kept."""
    sigma = factor / 2.355  # FWHM of the slice profile = the new thickness, in old slices
    values = ndimage.gaussian_filter1d(np.asarray(image.array, dtype=np.float32), sigma, axis=0)
    thick = values[::factor]
    first = image.index_to_world([[0, 0, 0]])[0]
    spacing = (image.spacing[0], image.spacing[1], image.spacing[2] * factor)
    return image.replace(array=thick, origin=tuple(first), spacing=spacing)


def case_3d(kind: str, name: str, seed: int) -> Case:
    """A 3D case of class ``3d-<kind>/<name>``."""
    fixed = volume(name)
    rng = np.random.default_rng(10_000 + seed)
    model = "rigid" if seed % 2 else "affine"
    make = synthetic.random_rigid if model == "rigid" else synthetic.random_affine
    truth = make(fixed, seed)
    moving = synthetic.warp(fixed, truth)
    if kind == "mono":
        moving = synthetic.degrade(moving, seed, noise=0.01, bias=0.0, remap=None)
    else:
        bias = float(rng.choice([0.02, 0.05, 0.1]))
        noise = float(rng.choice([0.01, 0.02, 0.04]))
        moving = synthetic.degrade(moving, seed, noise=noise, bias=bias, remap="t2")
    if kind == "partial":
        moving = _crop_slices(moving, rng)
    elif kind == "aniso":
        moving = _thick_slices(moving)
    factor = 1.0 if kind in ("mono", "multi") else 2.0
    return Case(f"3d-{kind}/{name}", seed, fixed, moving, truth, _head(name), 0.1 * factor * _voxel(fixed), "mm",
                {"preset": model})


#: the deformable class's grids: voxels of at least this size (bin-averaged; a 1 mm head registers with ``syn`` in
#: 15 s, at 2 mm in 3 s)
DEFORM_VOXEL_MM = 2.0
#: the deformable class's tolerance, in voxels of the fixed grid: a third of a voxel, mean over the head
DEFORM_TOLERANCE_VOXELS = 1.0 / 3.0


@functools.cache
def _coarse(name: str) -> SpatialImage:
    image = volume(name)
    factors = [max(1, int(round(DEFORM_VOXEL_MM / s))) for s in image.spacing]
    return SpatialImage.from_sitk(sitk.BinShrink(sitk_volume(image), factors)) if max(factors) > 1 else image


@functools.cache
def case_deform(name: str, seed: int) -> Case:
    """A 3D case of class ``3d-deform/<name>``: the volume (2 mm voxels at least) under a known smooth warp, ``syn``.

    The warp is a cubic B-spline on a 40 mm mesh with random coefficients,
    up to 3, 6 or 9 mm (drawn per seed), and the truth is the warp itself:
    the moving image is the fixed one resampled through the warp's inverse
    (a field on the fixed grid, inverted by ITK), with 1 % noise.
    """
    fixed = _coarse(name)
    rng = np.random.default_rng(20_000 + seed)
    truth = synthetic.random_bspline(fixed, 100 + seed, mesh_mm=40.0, max_displacement_mm=float(rng.choice([3.0, 6.0, 9.0])))
    moving = synthetic.warp(fixed, truth, inverse=sampled_field(truth, fixed).inverse())
    moving = synthetic.degrade(moving, seed, noise=0.01, bias=0.0, remap=None)
    step = max(1, int(round((math.prod(fixed.shape) / 40_000) ** (1 / 3))))
    return Case(f"3d-deform/{name}", seed, fixed, moving, truth, synthetic.head_points(fixed, step=step),
                DEFORM_TOLERANCE_VOXELS * _voxel(fixed), "mm", {"preset": "syn"})


@functools.cache
def case_deform_multi(name: str, seed: int) -> Case:
    """Class ``3d-deform-multi/<name>``: :func:`case_deform`'s pair with a T2-like remap and a bias field, ``syn`` on Mattes.

    The demons (``syn``'s default) cannot map this contrast (the broken
    class ``broken/demons-on-multimodal`` runs them on the same pairs);
    mutual information is what a user chooses across contrasts, as with
    ANTs' SyN.
    """
    base = case_deform(name, seed)
    moving = synthetic.degrade(base.moving, seed, noise=0.01, bias=0.05, remap="t2")
    return dataclasses.replace(base, cls=f"3d-deform-multi/{name}", moving=moving,
                               options={**base.options, "metric": "mattes"})


@functools.cache
def _phantom() -> tuple[SpatialImage, SpatialImage, Transform]:
    """The phantom's MR (fixed), CT (moving) and a reference CT -> MR alignment.

    The pair has no known truth. The reference is the alignment with the
    highest mutual information over the whole MR grid that any method found
    (``bench_ctmr.py``: the default rigid preset from the identity, -0.4895,
    against ANTsPy's -0.4885, elastix's -0.4745 and the precise preset's
    -0.4774, whose edge points settle 7-11 mm from the others); the cases
    measure whether a moved CT is brought back to it.
    """
    mr = cr.read(DATA / "medical/mri_dir_phantom/MR_T2_every2nd")
    ct = cr.read(DATA / "medical/mri_dir_phantom/CT_every8th")
    mr = mr.replace(array=np.asarray(mr.array, np.float32))
    ct = ct.replace(array=np.asarray(ct.array, np.float32))
    reference = cr.register(mr, ct, preset="rigid", metric="mattes").transform
    return mr, ct, reference


def case_ct_mr(seed: int) -> Case:
    """The phantom CT moved by a known rigid map from the reference alignment, onto the MR."""
    mr, ct, reference = _phantom()
    motion = synthetic.random_rigid(ct, seed, max_angle_deg=5.0, max_shift_mm=8.0)
    moved_ct = synthetic.warp(ct, motion)  # moved_ct(motion(p)) = ct(p)
    truth = cr.Composite((motion, reference))  # MR point -> CT point -> moved CT point (last member first)
    points = synthetic.head_points(mr, step=6)
    return Case("ct-mr/phantom", seed, mr, moved_ct, truth, points, 1.0, "mm", {"preset": "rigid", "metric": "mattes"})


# ------------------------------------------------------------------------------------------- 2D
@functools.cache
def photo(name: str) -> np.ndarray:
    """A scikit-image photograph as float32 grey values, long side at most 512 px (``moon-hdr``: 4 decades)."""
    from skimage import color, data, transform

    values = getattr(data, name.removesuffix("-hdr"))()
    if values.ndim == 3:
        values = color.rgb2gray(values[..., :3])
    values = values.astype(np.float64)
    if values.max() > 1.5:
        values = values / 255.0
    scale = 512.0 / max(values.shape)
    if scale < 1:
        values = transform.rescale(values, scale, anti_aliasing=True)
    if name.endswith("-hdr"):
        return np.exp(9.2 * values).astype(np.float32)  # 1 .. 1e4
    return (values * 255.0).astype(np.float32)


def _centre(shape: tuple[int, int]) -> np.ndarray:
    return np.array([(shape[1] - 1) / 2.0, (shape[0] - 1) / 2.0])


def warp_matrix(kind: str, shape: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """A seeded 3x3 fixed -> moving pixel map of ``kind``.

    Translations up to 10 px (sub-pixel); similarities: rotation up to 30
    degrees, scale 0.8-1.25, shift up to 15 px; affines: rotation up to 20
    degrees and up to 12 % shear and anisotropy; perspective: the view of a
    camera (focal length the image's long side) turned 10-45 degrees about an
    axis in the image plane, plus an in-plane turn up to 10 degrees.
    """
    c = _centre(shape)
    h = np.eye(3)
    if kind == "translation":
        h[:2, 2] = rng.uniform(-10, 10, 2)
        return h
    if kind in ("similarity", "affine"):
        angle = np.deg2rad(rng.uniform(-30, 30) if kind == "similarity" else rng.uniform(-20, 20))
        linear = rotation_matrix(float(angle))
        if kind == "similarity":
            linear = linear * float(np.exp(rng.uniform(np.log(0.8), np.log(1.25))))
        else:
            linear = linear @ (np.eye(2) + rng.uniform(-0.12, 0.12, (2, 2)))
        h[:2, :2] = linear
        h[:2, 2] = c + rng.uniform(-15, 15, 2) - linear @ c
        return h
    if kind == "perspective":
        f = float(max(shape))
        k = np.array([[f, 0, c[0]], [0, f, c[1]], [0, 0, 1.0]])
        tilt = np.deg2rad(rng.uniform(10, 45))
        axis_angle = rng.uniform(0, np.pi)
        axis = np.array([np.cos(axis_angle), np.sin(axis_angle), 0.0])
        r = _axis_rotation(axis, tilt) @ _axis_rotation(np.array([0.0, 0.0, 1.0]), np.deg2rad(rng.uniform(-10, 10)))
        h = k @ r @ np.linalg.inv(k)
        # keep the view centred on the image centre: shift so that the centre maps to itself
        mapped = h @ np.r_[c, 1.0]
        shift = np.eye(3)
        shift[:2, 2] = c - mapped[:2] / mapped[2]
        h = shift @ h
        return h / h[2, 2]
    raise ValueError(kind)


def _axis_rotation(axis: np.ndarray, angle: float) -> np.ndarray:
    x, y, z = axis / np.linalg.norm(axis)
    k = np.array([[0, -z, y], [z, 0, -x], [-y, x, 0]])
    return np.eye(3) + np.sin(angle) * k + (1 - np.cos(angle)) * (k @ k)


def warp_photo(values: np.ndarray, matrix: np.ndarray, rng: np.random.Generator,
               noise_fraction: float = 0.01) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(fixed, moving, valid)``: ``moving(M x) = fixed(x)`` (cubic), black and invalid outside, noise on both."""
    h, w = values.shape
    yy, xx = np.mgrid[0:h, 0:w].astype(float)
    source = np.linalg.inv(matrix) @ np.stack([xx.ravel(), yy.ravel(), np.ones(xx.size)])
    source = source[:2] / source[2]
    moved = ndimage.map_coordinates(values.astype(np.float64), [source[1], source[0]], order=3, mode="constant", cval=0.0)
    valid = ((source[0] >= 0) & (source[0] <= w - 1) & (source[1] >= 0) & (source[1] <= h - 1)).reshape(h, w)
    sigma = noise_fraction * float(np.percentile(values, 99))
    fixed = values + rng.normal(0.0, sigma, values.shape)
    moving = moved.reshape(h, w) + rng.normal(0.0, sigma, values.shape)
    moving[~valid] = 0.0
    return fixed.astype(np.float32), moving.astype(np.float32), valid


def _overlap_points(shape: tuple[int, int], matrix: np.ndarray, step: int = 4) -> np.ndarray:
    h, w = shape
    yy, xx = np.mgrid[0:h:step, 0:w:step].astype(float)
    points = np.stack([xx.ravel(), yy.ravel()], axis=1)
    mapped = Homography(matrix).transform_points(points)
    inside = (mapped[:, 0] >= 0) & (mapped[:, 0] <= w - 1) & (mapped[:, 1] >= 0) & (mapped[:, 1] <= h - 1)
    return points[inside]


def case_2d(kind: str, name: str, seed: int) -> Case:
    """A 2D case of class ``2d-<kind>/<name>``; odd seeds pass the moving image's valid region as mask."""
    rng = np.random.default_rng(20_000 + seed)
    values = photo(name)
    matrix = warp_matrix(kind, values.shape, rng)
    fixed_values, moving_values, valid = warp_photo(values, matrix, rng)
    fixed = SpatialImage(fixed_values, origin=(0, 0), spacing=(1, 1))
    moving = fixed.replace(array=moving_values)
    options: dict[str, Any] = {"preset": PRESET_2D[kind]}
    if seed % 2:
        options["moving_mask"] = valid
    truth = Homography(matrix) if kind == "perspective" else Affine.from_homogeneous(matrix)
    tolerance = 0.5 if kind == "perspective" else 0.1
    return Case(f"2d-{kind}/{name}", seed, fixed, moving, truth, _overlap_points(values.shape, matrix), tolerance, "px",
                options)


# ------------------------------------------------------------------------------------------- broken
def broken_cases(seed: int) -> Iterator[Case]:
    """Runs built to go wrong; the check should not pass a wrong answer from any of them."""
    rng = np.random.default_rng(30_000 + seed)
    # the syn preset's demons (intensity differences) on a contrast they cannot map: a T2-like remap and a bias field
    base = case_deform_multi(["mni", "kmeans-t1", "vhp-mr", "colin27"][(seed - 1) % 4], seed)
    yield dataclasses.replace(base, cls="broken/demons-on-multimodal", options={"preset": "syn"},
                              broken="the demons (mean squares) on a non-monotonic contrast")
    # a far starting transform (3D): 35-60 degrees and 40 mm off the truth
    base = case_3d("multi", "kmeans-t1", 2 * seed + 1)
    far = Rigid.from_angles(np.deg2rad(rng.uniform(35, 60, 3) * rng.choice([-1, 1], 3)), translation=rng.uniform(-40, 40, 3),
                            center=base.fixed.world_centre)
    yield dataclasses.replace(base, cls="broken/far-start-3d", options={**base.options, "initial_transform": far @ base.truth},
                              broken="a starting transform 35-60 degrees and up to 40 mm off")
    # the wrong metric: a T2-like remap registered on correlation
    base = case_3d("multi", "kmeans-t1", 2 * seed + 3)
    yield dataclasses.replace(base, cls="broken/ncc-on-multimodal", options={**base.options, "metric": "ncc"},
                              broken="correlation on a non-monotonic contrast")
    # an optimiser stopped after two iterations per level
    base = case_3d("mono", "kmeans-t1", 2 * seed + 1)
    yield dataclasses.replace(base, cls="broken/stopped-early-3d", options={**base.options, "iterations": 2},
                              broken="two iterations per level")
    # unrelated photographs: no answer is right
    names = list(PHOTOS)
    a, b = rng.choice(len(names), 2, replace=False)
    fixed = SpatialImage(photo(names[a]), origin=(0, 0), spacing=(1, 1))
    other = photo(names[b])
    moving_values = np.zeros_like(fixed.array)
    hh, ww = min(other.shape[0], fixed.shape[0]), min(other.shape[1], fixed.shape[1])
    moving_values[:hh, :ww] = other[:hh, :ww]
    yield Case("broken/unrelated-photos", seed, fixed, fixed.replace(array=moving_values), None, np.zeros((0, 2)), 0.1, "px",
               {"preset": ["similarity", "affine", "auto"][seed % 3]}, broken=f"{names[a]} against {names[b]}")
    # a periodic texture turned and scaled beyond one period
    base = case_2d("similarity", "brick", seed)
    yield dataclasses.replace(base, cls="broken/periodic", broken="brick: a texture that repeats every few pixels")
    # a fixed mask over background only
    base = case_2d("translation", "coins", seed)
    mask = np.zeros(base.fixed.shape, bool)
    mask[:40, :40] = True
    corner = base.fixed.replace(array=np.where(mask, 0.0, base.fixed.array).astype(np.float32))
    yield dataclasses.replace(base, cls="broken/mask-on-background", fixed=corner,
                              options={**base.options, "fixed_mask": mask}, broken="a fixed mask over flat background")
    # a 2D far start: the truth turned by 90-150 degrees
    base = case_2d("similarity", "camera", seed)
    turn = Affine.from_homogeneous(_rotation_about(base.fixed.shape, rng.uniform(90, 150)))
    yield dataclasses.replace(base, cls="broken/far-start-2d",
                              options={**base.options, "initial_transform": turn @ base.truth},
                              broken="a starting transform 90-150 degrees off")


def _rotation_about(shape: tuple[int, int], angle_deg: float) -> np.ndarray:
    c = _centre(shape)
    h = np.eye(3)
    h[:2, :2] = rotation_matrix(float(np.deg2rad(angle_deg)))
    h[:2, 2] = c - h[:2, :2] @ c
    return h


# ------------------------------------------------------------------------------------------- classes
def classes(seeds: int = 10, *, photos_seeds: int = 4, quick: bool = False) -> dict[str, Callable[[], list[Case]]]:
    """Class name -> a function that builds the class's cases (built lazily: the 3D ones take seconds)."""
    out: dict[str, Callable[[], list[Case]]] = {}
    volumes = ["kmeans-t1"] if quick else list(VOLUMES)
    kinds_3d = ["mono", "multi"] if quick else ["mono", "multi", "partial", "aniso"]
    for kind in kinds_3d:
        for name in volumes:
            out[f"3d-{kind}/{name}"] = functools.partial(
                lambda k, n: [case_3d(k, n, s) for s in range(1, seeds + 1)], kind, name)
    for name in volumes:
        out[f"3d-deform/{name}"] = functools.partial(lambda n: [case_deform(n, s) for s in range(1, seeds + 1)], name)
    if not quick:
        for name in volumes:
            out[f"3d-deform-multi/{name}"] = functools.partial(
                lambda n: [case_deform_multi(n, s) for s in range(1, seeds + 1)], name)
    if not quick:
        out["ct-mr/phantom"] = lambda: [case_ct_mr(s) for s in range(1, seeds + 1)]
    photos = ["camera", "brick", "moon-hdr"] if quick else list(PHOTOS)
    for kind in KINDS_2D:
        for name in photos:
            out[f"2d-{kind}/{name}"] = functools.partial(
                lambda k, n: [case_2d(k, n, s) for s in range(1, photos_seeds + 1)], kind, name)
    out["broken"] = lambda: [c for s in range(1, (2 if quick else seeds) + 1) for c in broken_cases(s)]
    return out


def run(case: Case, **extra: Any) -> dict[str, Any]:
    """Register one case; the outcome as plain data (error, verdict, time; ``refused`` when the call raised)."""
    import time

    from coregister.errors import CoregisterError

    options = {**case.options, **extra}
    iterations = options.pop("iterations", None)
    if iterations is not None:
        from coregister.pipeline import configure

        options["config"] = configure(options.pop("preset"), ndim=case.fixed.ndim, metric=options.pop("metric", None),
                                      iterations=iterations)
    started = time.perf_counter()
    try:
        result = cr.register(case.fixed, case.moving, **options)
    except CoregisterError as exc:
        return {"case": case.name, "cls": case.cls, "refused": f"{type(exc).__name__}: {exc}",
                "time_s": time.perf_counter() - started, "broken": case.broken}
    elapsed = time.perf_counter() - started
    return {"case": case.name, "cls": case.cls, "error": case.error(result.transform), "tolerance": case.tolerance,
            "unit": case.unit, "verdict": result.verdict.value, "failures": list(result.quality.failures),
            "engine": result.engine, "time_s": elapsed, "broken": case.broken,
            "measures": {k: v for k, v in result.quality.measures.items()
                         if k in ("information_fraction", "shared_blocks", "polish_moved_voxels", "polish_gain", "restart_voxels",
                                  "restart_gains", "repeat_shifts", "repeat_gains", "measure", "before", "after")}}


def sitk_volume(image: SpatialImage) -> sitk.Image:
    """The image as SimpleITK float32 (for the peers' runners)."""
    return sitk.Cast(image.to_sitk(), sitk.sitkFloat32)
