"""The multi-level B-spline stage's tools: an injectivity bound, a mesh refined level by level, and a fold guard.

SimpleITK exposes no bending-energy or Jacobian penalty for its
registration method (no access to the metric's derivative from Python), so
the spline is kept from folding by a hard constraint instead: with
``Stage.injective`` (the ``bspline`` preset), L-BFGS-B keeps every
coefficient within :func:`injective_bound`, Choi & Lee's sufficient
condition for a positive Jacobian everywhere, and where a level's spline
reaches the bound, the next level starts a fresh bounded spline composed on
it (:func:`extended` keeps the first one defined wherever the second may
carry a point): Rueckert et al.'s diffeomorphic B-splines (MICCAI 2006).
Composed maps that each cannot fold cannot fold together.

It is also kept regular the way elastix's and ITK's multi-level B-spline
registrations do it: the stage can start on a mesh
``2^r`` times coarser than ``Stage.bspline_mesh_mm`` (``r`` =
``Stage.bspline_refinements``), where only large, smooth displacements can
be expressed, and the mesh is refined by two between the last ``r`` levels
(:func:`refined`: the finer mesh reproduces the coarser spline exactly,
then its control points take up what is left). The engine runs these levels
in its own loop (each one an ``ImageRegistrationMethod`` with L-BFGS-B on
the level's bin-averaged pair): SimpleITK's built-in refinement
(``SetInitialTransformAsBSpline`` with ``scaleFactors``) needs ITK's own
pyramid, and ITK's L-BFGS-B there refuses a mesh that grows between levels.

The **fold guard** (:func:`scale_to_min_jacobian`) then checks the last
spline's Jacobian determinant on the fixed grid (reduced to at most two million
points: a cubic spline is smooth between its control points) and, where it
falls below ``Stage.min_jacobian``, scales the spline back towards the
identity (the largest factor, found by bisection, that keeps it above): a
bounded spline's determinant is positive but may come close to zero, and a
stage without the bound relies on the guard alone; a warning says by how
much the spline was held back.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence

import numpy as np
import SimpleITK as sitk

from coregister.errors import RegistrationFailed
from coregister.image import SpatialImage
from coregister.transforms import BSpline, Composite, Transform

__all__ = ["coarse_mesh", "extended", "injective_bound", "refined", "refinement_factors", "scale_to_min_jacobian"]

logger = logging.getLogger(__name__)

#: the fold guard looks at the Jacobian on the fixed grid reduced to at most this many points
_GUARD_MAX_POINTS = 2_000_000
#: Choi & Lee (2000): a uniform cubic B-spline whose control points each move by less than the mesh spacing
#: divided by K (K = 2.046 in 2D, 2.479 in 3D; per axis, on the mesh's own axes) has a positive Jacobian everywhere.
#: Rounded up: the bound stays strictly inside the condition.
_CHOI_LEE_K = {2: 2.05, 3: 2.48}


def injective_bound(tx: sitk.BSplineTransform, *, along_mesh: bool = False) -> float:
    """The largest coefficient (world units) that keeps a cubic B-spline injective, by Choi & Lee's condition.

    The condition bounds each control point's displacement along each of the
    mesh's axes by its spacing over ``K`` (``K`` = 2.046 in 2D, 2.479 in 3D):
    then the Jacobian determinant is positive everywhere, whatever else the
    coefficients are, so a spline optimised within ``[-b, b]`` cannot fold
    (Rueckert et al. 2006, "Diffeomorphic registration using B-splines").
    L-BFGS-B takes one bound for all coefficients, so ``b`` is the smallest
    axis's: spacing / ``K``. The coefficients are world components: on a
    mesh whose axes are not the world's (an oblique direction ``D``), a
    mesh-axis component is at most the largest column sum of ``|D|`` times
    the largest world component, so the world bound is ``b`` divided by it
    (1 for an axis-aligned mesh). ``along_mesh=True`` gives ``b`` itself:
    how far the spline can move a point along each mesh axis.

    Examples
    --------
    >>> image = sitk.Image([100, 80, 60], sitk.sitkFloat32)
    >>> tx = sitk.BSplineTransformInitializer(image, [4, 4, 3], 3)  # cells of about 25 x 20 x 20 mm
    >>> round(min(tx.GetCoefficientImages()[0].GetSpacing()), 4), round(injective_bound(tx), 4)  # 20.0625 / 2.48
    (20.0625, 8.0897)
    >>> image.SetDirection((0.8, -0.6, 0.0, 0.6, 0.8, 0.0, 0.0, 0.0, 1.0))  # 37 degrees about z
    >>> tx = sitk.BSplineTransformInitializer(image, [4, 4, 3], 3)
    >>> round(injective_bound(tx), 4), round(injective_bound(tx, along_mesh=True), 4)  # 8.0897 / 1.4
    (5.7784, 8.0897)
    """
    if tx.GetOrder() != 3:
        raise RegistrationFailed(f"the injectivity bound is for cubic B-splines; this one is of order {tx.GetOrder()}")
    ndim = tx.GetDimension()
    spacing = min(float(min(image.GetSpacing())) for image in tx.GetCoefficientImages())
    bound = spacing / _CHOI_LEE_K[ndim]
    if along_mesh:
        return float(bound)
    direction = np.abs(np.array(tx.GetTransformDomainDirection()).reshape(ndim, ndim))
    return float(bound / direction.sum(axis=0).max())


def refinement_factors(n_levels: int, refinements: int) -> list[int]:
    """Per-level mesh scale factors: the mesh doubles between each of the last ``refinements`` levels.

    Examples
    --------
    >>> refinement_factors(2, 1), refinement_factors(3, 2), refinement_factors(3, 1), refinement_factors(2, 5)
    ([1, 2], [1, 2, 4], [1, 1, 2], [1, 2])
    """
    first = n_levels - 1 - min(refinements, n_levels - 1)
    return [2 ** max(0, k - first) for k in range(n_levels)]


def coarse_mesh(image: sitk.Image, mesh_mm: float, doublings: int) -> list[int]:
    """Mesh cells per axis of the stage's first level: the final ``mesh_mm`` mesh halved ``doublings`` times."""
    extent = [n * s for n, s in zip(image.GetSize(), image.GetSpacing(), strict=True)]
    return [max(1, int(round(e / (mesh_mm * 2**doublings)))) for e in extent]


def extended(tx: sitk.BSplineTransform, cells: int) -> sitk.BSplineTransform:
    """The same cubic B-spline over a domain ``cells`` mesh cells larger on every side (the new points repeat the edge).

    ITK's ``BSplineTransform`` is the identity outside its domain, so a
    spline composed after another (an injective stage's next round) may
    carry points to where the one before stops and the composed map jumps.
    The displacement at a point depends on the four nearest control points
    per axis; the added ones lie beyond the old outer points, so inside the
    old domain nothing changes, and beyond it the spline continues with the
    edge's values, within the same bound (it stays injective).

    Examples
    --------
    >>> import numpy as np
    >>> image = sitk.Image([50, 40], sitk.sitkFloat32)
    >>> tx = sitk.BSplineTransformInitializer(image, [3, 2], 3)
    >>> tx.SetParameters(tuple(np.random.default_rng(0).uniform(-4, 4, tx.GetNumberOfParameters())))
    >>> wide = extended(tx, 2)
    >>> list(wide.GetTransformDomainMeshSize())
    [7, 6]
    >>> points = np.random.default_rng(1).uniform([0, 0], [49, 39], (200, 2))
    >>> bool(max(np.abs(np.subtract(tx.TransformPoint(p), wide.TransformPoint(p))).max() for p in points) < 1e-9)
    True
    >>> wide.TransformPoint((-20.0, 10.0)) != (-20.0, 10.0)  # defined beyond the old domain
    True
    """
    if cells <= 0:
        return tx
    ndim = tx.GetDimension()
    images = tx.GetCoefficientImages()
    planes = [np.pad(sitk.GetArrayFromImage(image).astype(np.float64), cells, mode="edge") for image in images]
    spacing = np.array(images[0].GetSpacing())
    direction = np.array(tx.GetTransformDomainDirection()).reshape(ndim, ndim)
    out = sitk.BSplineTransform(ndim, 3)
    out.SetTransformDomainOrigin(tuple((np.array(tx.GetTransformDomainOrigin()) - direction @ (cells * spacing)).tolist()))
    out.SetTransformDomainDirection(tx.GetTransformDomainDirection())
    out.SetTransformDomainPhysicalDimensions(
        tuple((np.array(tx.GetTransformDomainPhysicalDimensions()) + 2 * cells * spacing).tolist()))
    out.SetTransformDomainMeshSize([int(m) + 2 * cells for m in tx.GetTransformDomainMeshSize()])
    out.SetParameters(tuple(np.concatenate([p.ravel() for p in planes]).tolist()))
    return out


#: the two-scale relation of the uniform cubic B-spline: beta(t) = sum_j w_j beta(2 t - j), j = -2..2
_TWO_SCALE = np.array([1.0, 4.0, 6.0, 4.0, 1.0]) / 8.0


def refined(tx: sitk.BSplineTransform) -> sitk.BSplineTransform:
    """The same cubic B-spline on a mesh twice as fine along every axis (exact: knot insertion).

    ITK's cubic ``BSplineTransform`` over ``m`` mesh cells holds ``m + 3``
    control points per axis, the first one mesh cell before the domain.
    With the two-scale relation of the cubic B-spline, the coefficients on
    the mesh of half the spacing are the old ones spread to every other
    point and filtered by ``[1, 4, 6, 4, 1] / 8``; the ``2 m + 3`` that ITK
    keeps reproduce the old displacement exactly over the domain (what
    ITK's ``BSplineTransformParametersAdaptor`` does between levels when
    SimpleITK refines a mesh itself).

    Examples
    --------
    >>> import numpy as np
    >>> image = sitk.Image([50, 40], sitk.sitkFloat32)
    >>> image.SetSpacing((1.5, 2.0))
    >>> coarse = sitk.BSplineTransformInitializer(image, [3, 2], 3)
    >>> coarse.SetParameters(tuple(np.random.default_rng(0).normal(size=coarse.GetNumberOfParameters()) * 3))
    >>> fine = refined(coarse)
    >>> list(fine.GetTransformDomainMeshSize())
    [6, 4]
    >>> points = np.random.default_rng(1).uniform([0, 0], [73.5, 78.0], (200, 2))
    >>> bool(max(np.abs(np.subtract(coarse.TransformPoint(p), fine.TransformPoint(p))).max() for p in points) < 1e-9)
    True
    """
    from scipy import ndimage

    if tx.GetOrder() != 3:
        raise RegistrationFailed(f"mesh refinement is for cubic B-splines; this one is of order {tx.GetOrder()}")
    ndim = tx.GetDimension()
    mesh = [int(v) for v in tx.GetTransformDomainMeshSize()]
    out = sitk.BSplineTransform(ndim, 3)
    out.SetTransformDomainOrigin(tx.GetTransformDomainOrigin())
    out.SetTransformDomainDirection(tx.GetTransformDomainDirection())
    out.SetTransformDomainPhysicalDimensions(tx.GetTransformDomainPhysicalDimensions())
    out.SetTransformDomainMeshSize([2 * m for m in mesh])
    planes = []
    for image in tx.GetCoefficientImages():
        values = sitk.GetArrayFromImage(image).astype(np.float64)  # (z, y[, x]) order: m + 3 points per axis
        for axis in range(ndim):
            n = values.shape[axis]
            spread = np.zeros(values.shape[:axis] + (2 * n + 3,) + values.shape[axis + 1:])
            index = [slice(None)] * ndim
            index[axis] = slice(2, 2 * n + 2, 2)  # old point k at 2 + 2 k
            spread[tuple(index)] = values
            filtered = ndimage.convolve1d(spread, _TWO_SCALE, axis=axis, mode="constant")
            index[axis] = slice(3, 3 + 2 * n - 3)  # new points l = 1 .. 2 m + 3 (2 n - 3 of them)
            values = filtered[tuple(index)]
        planes.append(values)
    parameters = np.concatenate([p.ravel() for p in planes])
    if parameters.size != out.GetNumberOfParameters():
        raise RegistrationFailed(f"refined mesh has {parameters.size} coefficients, ITK expects {out.GetNumberOfParameters()}")
    out.SetParameters(tuple(parameters.tolist()))
    return out


def _grid(image: sitk.Image) -> SpatialImage:
    """The geometry of ``image`` as a SpatialImage (a read-only zero array: only the grid is used)."""
    shape = tuple(int(n) for n in image.GetSize())[::-1]
    return SpatialImage(np.broadcast_to(np.uint8(0), shape), origin=image.GetOrigin(), spacing=image.GetSpacing(),
                        direction=np.array(image.GetDirection()).reshape(image.GetDimension(), -1))


def _min_jacobian(spline: BSpline, grid: SpatialImage, after: Sequence[Transform] = ()) -> float:
    from coregister.measures import jacobian_determinant

    mapping = Composite((*after, spline)) if after else spline
    return float(jacobian_determinant(mapping, grid, max_points=_GUARD_MAX_POINTS).array.min())


def scale_to_min_jacobian(
    spline: BSpline, fixed: sitk.Image, floor: float, *, steps: int = 10, after: Sequence[Transform] = (),
) -> tuple[BSpline, float]:
    """The fold guard: ``spline`` scaled by the largest ``s <= 1`` (bisection) whose Jacobian stays at or above ``floor``.

    With ``after`` (transforms applied after the spline: splines composed
    before it), the determinant is that of the composition; only
    ``spline`` is scaled.

    Examples
    --------
    >>> import numpy as np
    >>> image = sitk.Image([40, 40], sitk.sitkFloat32)
    >>> coefficients = np.zeros((2, 7, 7))
    >>> coefficients[0, 3, 3] = 30.0  # one control point pushed three mesh cells: space folds
    >>> guarded, scale = scale_to_min_jacobian(BSpline(coefficients, (-10, -10), (10, 10)), image, 0.2)
    >>> 0 < scale < 1, _min_jacobian(guarded, _grid(image)) >= 0.2
    (True, True)
    """
    grid = _grid(fixed)
    if _min_jacobian(spline, grid, after) >= floor:
        return spline, 1.0
    low, high = 0.0, 1.0
    for _ in range(steps):
        middle = 0.5 * (low + high)
        if _min_jacobian(_scaled(spline, middle), grid, after) >= floor:
            low = middle
        else:
            high = middle
    logger.info("fold guard: B-spline scaled by %.4g to keep its Jacobian determinant above %g", low, floor)
    return _scaled(spline, low), low


def _scaled(spline: BSpline, scale: float) -> BSpline:
    return dataclasses.replace(spline, coefficients=spline.coefficients * scale)
