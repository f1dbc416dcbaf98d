"""Longitudinal pairs: a baseline and a follow-up brought into a halfway space, neither time point favoured.

Registering a follow-up onto its baseline resamples the follow-up only: it
comes out smoother than the baseline, and any measure of change (atrophy,
lesion growth) is biased by that asymmetry (Reuter & Fischl 2011; FreeSurfer's
``mri_robust_template``, FSL's SIENA halfway registration). :func:`halfway`
removes the asymmetry:

1. the pair is registered both ways through the pipeline (fixed -> moving
   and moving -> fixed, each judged by the quality check), and the two
   answers are averaged symmetrically: ``T`` is the geodesic midpoint of
   the forward map and the inverse of the backward one,
   ``A (A⁻¹ B)^½`` with the principal matrix square root
   (:func:`scipy.linalg.sqrtm`), so that swapping the images gives exactly
   ``T⁻¹``;
2. the halfway map is ``H = T^½`` (for a rigid ``T``, half the rotation
   about the same axis with the matching translation), so ``H ∘ H = T``;
   halfway-space points map to the moving image by ``H`` and to the fixed
   image by ``H⁻¹``;
3. the halfway grid is built from both images alike: each grid carried
   into halfway space, the midpoint of their directions, the finer spacing
   and the larger size per axis, centred between their centres;
4. both images are resampled once onto it.

Transforms map points of one space to another: ``to_fixed`` maps halfway
points to fixed points (resample the fixed image with it), ``to_moving``
halfway points to moving points, ``transform`` fixed points to moving points
(ITK's convention, as :func:`coregister.register` returns it).

Examples
--------
>>> import numpy as np
>>> from coregister import Rigid, SpatialImage, apply
>>> z, y, x = np.mgrid[0:40, 0:48, 0:48]
>>> head = np.exp(-((x - 23.0) ** 2 / 120 + (y - 25.0) ** 2 / 90 + (z - 19.0) ** 2 / 70)) * (1 + 0.4 * (x > 26))
>>> baseline = SpatialImage(head.astype(np.float32), origin=(0, 0, 0), spacing=(2, 2, 2))
>>> truth = Rigid.from_angles(np.deg2rad([0, 0, 4.0]), translation=[3.0, -2.0, 1.0], center=baseline.world_centre)
>>> follow_up = apply(truth.inverse(), baseline)        # the same head, moved by the truth
>>> result = halfway(baseline, follow_up, metric="ecc")   # one modality: correlation
>>> composed = result.to_moving.homogeneous @ np.linalg.inv(result.to_fixed.homogeneous)
>>> bool(np.allclose(composed, result.transform.homogeneous, atol=1e-9))  # the halves make the whole
True
>>> round(float(np.rad2deg(np.arccos((np.trace(result.to_moving.matrix) - 1) / 2))), 1)  # half of 4 degrees
2.0
>>> result.fixed.same_geometry(result.moving), result.passed
(True, True)
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from coregister.config import Interpolation, Metric, RegistrationConfig
from coregister.errors import ConfigError, GeometryError
from coregister.image import SpatialImage
from coregister.pipeline import Result, register
from coregister.resample import apply
from coregister.transforms import Affine, Rigid, Transform, Translation, linear_members

__all__ = ["HalfwayResult", "halfway", "matrix_midpoint", "matrix_sqrt"]


@dataclasses.dataclass(frozen=True, eq=False)
class HalfwayResult:
    """What :func:`halfway` returns.

    Attributes
    ----------
    transform : Transform
        The symmetric fixed -> moving map (``to_moving ∘ to_fixed⁻¹``).
    to_fixed, to_moving : Transform
        Halfway-space points -> fixed points, and -> moving points.
    fixed, moving : SpatialImage
        Both images resampled once onto the halfway grid (each keeps its own
        dtype and header fields).
    forward, backward : Result
        The two registrations (fixed -> moving and moving -> fixed), each with
        its quality verdict.
    inverse_consistency_mm : float
        How far the two registrations disagree: the largest distance, over
        the fixed image's corners, between the forward map and the inverse
        of the backward one (half of it is what the average moved each).
    """

    transform: Transform
    to_fixed: Transform
    to_moving: Transform
    fixed: SpatialImage
    moving: SpatialImage
    forward: Result
    backward: Result
    inverse_consistency_mm: float

    @property
    def passed(self) -> bool:
        """Whether both registrations passed their quality check."""
        return self.forward.passed and self.backward.passed

    @property
    def grid(self) -> SpatialImage:
        """The halfway grid (the geometry both outputs share)."""
        return self.fixed

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form: the three transforms, the consistency, both registrations."""
        return {
            "passed": self.passed,
            "transform": self.transform.to_dict(),
            "halfway_to_fixed": self.to_fixed.to_dict(),
            "halfway_to_moving": self.to_moving.to_dict(),
            "inverse_consistency_mm": self.inverse_consistency_mm,
            "grid": {"size": list(self.fixed.size), "spacing": list(self.fixed.spacing), "origin": list(self.fixed.origin),
                     "direction": np.asarray(self.fixed.direction).tolist()},
            "forward": self.forward.to_dict(),
            "backward": self.backward.to_dict(),
        }


def matrix_sqrt(matrix: np.ndarray) -> np.ndarray:
    """The principal square root of a homogeneous linear map (its real part; the map must have no eigenvalue on (-inf, 0]).

    For a rigid map it is the rotation by half the angle about the same axis
    with the translation that makes ``S @ S == matrix``.

    Examples
    --------
    >>> import numpy as np
    >>> from coregister.transforms import rotation_matrix
    >>> h = np.eye(4); h[:3, :3] = rotation_matrix([0.0, 0.0, 0.4]); h[:3, 3] = [2.0, -1.0, 0.5]
    >>> s = matrix_sqrt(h)
    >>> bool(np.allclose(s @ s, h)), bool(np.allclose(s[:3, :3], rotation_matrix([0.0, 0.0, 0.2])))
    (True, True)
    """
    from scipy.linalg import sqrtm

    root = np.asarray(sqrtm(np.asarray(matrix, dtype=float)))
    if np.iscomplexobj(root):
        if np.max(np.abs(root.imag)) > 1e-8 * max(1.0, float(np.max(np.abs(root.real)))):
            raise GeometryError("the map has no real square root (a rotation of 180 degrees or a reflection); "
                                "a halfway space needs images less than half a turn apart")
        root = root.real
    return root


def matrix_midpoint(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """The geodesic midpoint ``a (a⁻¹ b)^½`` of two homogeneous maps: symmetric in ``a`` and ``b``, and inverting both inverts it.

    Examples
    --------
    >>> import numpy as np
    >>> a = np.diag([1.0, 1.0, 1.0, 1.0]); a[:3, 3] = [1.0, 0.0, 0.0]
    >>> b = np.diag([1.0, 1.0, 1.0, 1.0]); b[:3, 3] = [3.0, 2.0, 0.0]
    >>> matrix_midpoint(a, b)[:3, 3].tolist()
    [2.0, 1.0, 0.0]
    """
    a = np.asarray(a, dtype=float)
    return a @ matrix_sqrt(np.linalg.solve(a, np.asarray(b, dtype=float)))


def _rotation_midpoint(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Midpoint of two orthonormal direction matrices of one handedness (the geodesic between them)."""
    relative = matrix_sqrt(a.T @ b)
    u, _, vt = np.linalg.svd(a @ relative)
    return u @ vt


def _orthonormal(matrix: np.ndarray) -> np.ndarray:
    u, _, vt = np.linalg.svd(matrix)
    return u @ vt


def _homogeneous(transform: Transform, name: str) -> np.ndarray:
    members = linear_members(transform)
    if len(members) != 1:
        raise ConfigError(f"the {name} registration gave a {type(transform).__name__}; a halfway space is defined for "
                          "linear transforms: use preset translation, rigid, similarity or affine")
    return np.asarray(members[0].homogeneous, dtype=float)  # type: ignore[attr-defined]


def _as_transform(matrix: np.ndarray, model: str) -> Transform:
    d = matrix.shape[0] - 1
    if model == "translation":
        return Translation(matrix[:d, d])
    if model == "rigid":
        return Rigid(_orthonormal(matrix[:d, :d]), matrix[:d, d])
    return Affine(matrix[:d, :d], matrix[:d, d])


def _model(forward: Result, backward: Result) -> str:
    kinds = {type(r.transform).__name__ for r in (forward, backward)}
    if kinds == {"Translation"}:
        return "translation"
    if kinds <= {"Rigid", "Translation"}:
        return "rigid"
    return "affine"


def _grid(fixed: SpatialImage, moving: SpatialImage, half: np.ndarray) -> SpatialImage:
    """The halfway grid, built from both images alike (see the module's step 3)."""
    d = fixed.ndim
    inverse = np.linalg.inv(half)
    # each grid carried into halfway space: fixed points x lie at H(x), moving points y at H⁻¹(y)
    fixed_axes = _orthonormal(half[:d, :d] @ np.asarray(fixed.direction))
    moving_axes = _orthonormal(inverse[:d, :d] @ np.asarray(moving.direction))
    if np.linalg.det(fixed_axes) * np.linalg.det(moving_axes) > 0:
        direction = _rotation_midpoint(fixed_axes, moving_axes)
    else:  # one grid is mirrored against the other: take the right-handed one (the choice does not depend on the order)
        direction = fixed_axes if np.linalg.det(fixed_axes) > 0 else moving_axes
    spacing = np.minimum(fixed.spacing, moving.spacing)
    size = np.maximum(fixed.size, moving.size)
    centre = 0.5 * ((half @ np.append(fixed.world_centre, 1.0))[:d] + (inverse @ np.append(moving.world_centre, 1.0))[:d])
    origin = centre - direction @ ((size - 1) / 2.0 * spacing)
    return SpatialImage(np.zeros(tuple(int(n) for n in size[::-1]), np.float32), origin=tuple(origin),
                        spacing=tuple(spacing), direction=direction)


def _consistency(forward: np.ndarray, backward_inverse: np.ndarray, fixed: SpatialImage) -> float:
    corners = fixed.world_corners
    points = np.hstack([corners, np.ones((len(corners), 1))])
    gap = (points @ forward.T - points @ backward_inverse.T)[:, : fixed.ndim]
    return float(np.max(np.linalg.norm(gap, axis=1)))


def halfway(
    fixed: SpatialImage,
    moving: SpatialImage,
    *,
    preset: str = "rigid",
    metric: Metric | str | None = None,
    config: RegistrationConfig | None = None,
    precise: bool = False,
    fixed_mask: Any = None,
    moving_mask: Any = None,
    interpolation: Interpolation | str = Interpolation.LINEAR,
    seed: int = 0,
    threads: int | None = None,
    fit_memory: bool = False,
) -> HalfwayResult:
    """Register ``moving`` (a follow-up) and ``fixed`` (a baseline) into a halfway space; both resampled once.

    Parameters
    ----------
    fixed, moving : SpatialImage
        The two time points (2D or 3D, one dimension).
    preset, metric, config, precise, seed, threads, fit_memory :
        As for :func:`coregister.register`, for both registrations; the
        model must be linear (translation, rigid, similarity, affine).
    fixed_mask, moving_mask : ndarray of bool or SpatialImage, optional
        Each on its own image's grid; each follows its image into the
        backward registration.
    interpolation : str
        How both images are resampled (``linear`` or ``bspline``;
        ``nearest`` for label maps).

    Returns
    -------
    HalfwayResult

    Raises
    ------
    ConfigError
        A deformable preset (a halfway space is defined here for linear maps).
    """
    options: dict[str, Any] = {"preset": preset, "metric": metric, "config": config, "precise": precise, "seed": seed,
                               "threads": threads, "fit_memory": fit_memory}
    if config is None and preset in ("bspline", "syn", "homography", "auto"):
        raise ConfigError(f"preset={preset!r}: a halfway space is built here from a linear map; use translation, rigid, "
                          "similarity or affine")
    forward = register(fixed, moving, fixed_mask=fixed_mask, moving_mask=moving_mask, **options)
    backward = register(moving, fixed, fixed_mask=moving_mask, moving_mask=fixed_mask, **options)
    a = _homogeneous(forward.transform, "fixed -> moving")
    b = np.linalg.inv(_homogeneous(backward.transform, "moving -> fixed"))
    whole = matrix_midpoint(a, b)
    half = matrix_sqrt(whole)
    model = _model(forward, backward)
    to_moving = _as_transform(half, model)
    to_fixed = _as_transform(np.linalg.inv(half), model)
    transform = _as_transform(whole, model)
    grid = _grid(fixed, moving, half)
    return HalfwayResult(
        transform=transform,
        to_fixed=to_fixed,
        to_moving=to_moving,
        fixed=apply(to_fixed, fixed, reference=grid.replace(meta=fixed.meta), interpolation=interpolation),
        moving=apply(to_moving, moving, reference=grid.replace(meta=moving.meta), interpolation=interpolation),
        forward=forward,
        backward=backward,
        inverse_consistency_mm=_consistency(a, b, fixed),
    )
