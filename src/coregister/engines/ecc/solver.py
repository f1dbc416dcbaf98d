"""The ECC solver: the Gauss-Newton iterations of one pyramid level, and the search over rotated starts.

Each iteration warps the level's fixed samples into the moving image,
computes the enhanced correlation coefficient (Evangelidis & Psarakis 2008)
and takes the paper's closed-form step, composed onto the warp as
``P <- P . expm(sum_k dp_k G_k)`` with the model's generators ``G_k`` in
normalised fixed coordinates. A level stops when a step moves no point of
the region by more than a tolerance, when the ECC stalls, or on a failure
(too little overlap, a constant image, a singular Hessian).
"""

from __future__ import annotations

import dataclasses
import logging

import numpy as np
from scipy import ndimage

from coregister._opencv import cv2
from coregister.config import ProgressCallback, TransformModel
from coregister.engines._models import expm, project
from coregister.engines.ecc.pyramid import MIN_SAMPLES, Level
from coregister.transforms import rotation_matrix

__all__ = ["LevelOutcome", "rotation_search", "solve_level"]

logger = logging.getLogger(__name__)

# a level converges when its update moves no point of the region by more than this many level pixels;
# coarse levels only need to bring the next level into its capture range
_STEP_TOLERANCE_PX = 2e-3
_COARSE_STEP_TOLERANCE_PX = 2e-2
_SEARCH_SAMPLES = 8192  # fixed samples per start in the rotation search
_STALL_ITERATIONS = 10  # a level stops when the ECC has not beaten its best for this many iterations


@dataclasses.dataclass(frozen=True)
class LevelOutcome:
    """Where one level ended: the matrix, the ECC per iteration and why it stopped (``failed``: on an error)."""

    matrix: np.ndarray
    rho: tuple[float, ...]
    stop_reason: str
    hit_cap: bool
    failed: bool


def _steepest_descent(g: np.ndarray, xh: np.ndarray, gens_flat: np.ndarray, projective: bool) -> np.ndarray:
    """Steepest-descent images ``G[k, n] = g_k . dW_n/dp (x_k)`` at the identity, shape (K, n).

    ``g`` (K, d) is the warped image's gradient with respect to the
    normalised fixed coordinates, ``xh`` (K, d+1) the homogeneous normalised
    points. For a generator ``A``, ``dW/dp = (A xh)[:d] - x (A xh)[d]``, so
    ``G = [g (x) xh, -(g . x) xh] : A``: one matrix product for every model.
    """
    k, d = g.shape
    outer = np.empty((k, d + 1, d + 1))
    np.multiply(g[:, :, None], xh[:, None, :], out=outer[:, :d, :])
    if projective:
        np.multiply(-np.einsum("kd,kd->k", g, xh[:, :d])[:, None], xh, out=outer[:, d, :])
        return outer.reshape(k, -1) @ gens_flat.T
    return outer[:, :d, :].reshape(k, -1) @ gens_flat[:, : d * (d + 1)].T


def _sample_gradients(gradients: np.ndarray, coords: np.ndarray) -> np.ndarray:
    """Linear interpolation of the gradient images at ``coords`` (array order, shape (d, K)): (K, d) in (x, y[, z]).

    In 2D OpenCV's ``remap`` does it in one pass (its 1/32 px weight
    quantisation only perturbs the search direction, never the optimum,
    which depends on the intensities alone); in 3D ``map_coordinates``.
    """
    d = coords.shape[0]
    k = coords.shape[1]
    if d == 2:
        width = 1024
        rows = -(-k // width)
        xy = np.zeros((rows * width, 2), dtype=np.float32)
        xy[:k, 0] = coords[1]
        xy[:k, 1] = coords[0]
        out = cv2.remap(gradients, xy.reshape(rows, width, 2), None, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)  # type: ignore[call-overload]
        return np.asarray(out).reshape(-1, 2)[:k].astype(np.float64)
    return np.stack(
        [ndimage.map_coordinates(gradients[..., a], coords, order=1, mode="nearest", prefilter=False) for a in range(d)],
        axis=1,
    ).astype(np.float64)


def solve_level(
    level: Level,
    matrix: np.ndarray,
    gens: np.ndarray,
    *,
    iterations: int,
    finest: bool,
    stage_name: str,
    level_index: int,
    progress: ProgressCallback | None,
) -> LevelOutcome:
    """Gauss-Newton ECC iterations on one level from ``matrix`` (fixed -> moving world), at most ``iterations``."""
    d = level.points.shape[1]
    n_params = gens.shape[0]
    center = level.points.mean(axis=0)
    radius = float(np.sqrt(np.mean(np.sum((level.points - center) ** 2, axis=1)))) or 1.0
    norm = np.eye(d + 1)
    norm[:d, :d] /= radius
    norm[:d, d] = -center / radius
    denorm = np.linalg.inv(norm)
    xh_all = np.concatenate([(level.points - center) / radius, np.ones((len(level.points), 1))], axis=1)
    gens_flat = gens.reshape(n_params, -1)
    projective_gens = bool(np.any(gens[:, d, :] != 0))
    mif = level.moving_index_from_world
    points_h = np.concatenate([level.points, np.ones((len(level.points), 1))], axis=1)
    corners = np.array(np.meshgrid(*[[-1.0, 1.0]] * d, indexing="ij")).reshape(d, -1).T * 1.5
    corners_h = np.concatenate([corners, np.ones((len(corners), 1))], axis=1)
    tolerance = (_STEP_TOLERANCE_PX if finest else _COARSE_STEP_TOLERANCE_PX) * level.spacing

    rhos: list[float] = []
    best = (-np.inf, matrix)
    best_iteration = 0
    stop_reason, hit_cap, failed = "iteration cap", True, False
    for iteration in range(iterations):
        # moving continuous index (x, y[, z]) of every sample: index_from_world . P . x
        projective = bool(np.any(matrix[d, :d] != 0))
        mapped = points_h @ (mif @ matrix).T
        if projective:
            w = mapped[:, d]
            u = mapped[:, :d] / w[:, None]
        else:
            u = mapped[:, :d]
        coords = u[:, ::-1].T
        warped = ndimage.map_coordinates(level.moving, coords, order=1, mode="constant", cval=np.nan, prefilter=False)
        valid = np.isfinite(warped)
        n_valid = int(valid.sum())
        if n_valid < max(MIN_SAMPLES, 4 * n_params):
            stop_reason, hit_cap, failed = f"only {n_valid} samples overlap the moving image", False, True
            break
        all_valid = n_valid == valid.size
        if not all_valid:
            coords = coords[:, valid]
            warped = warped[valid]
        grad_index = _sample_gradients(level.gradients, coords)
        # gradient with respect to the normalised fixed coordinates: r * grad_u . d(u)/d(y) . d(y)/d(x)
        if projective:
            wv = w if all_valid else w[valid]
            uv = u if all_valid else u[valid]
            full = mif @ matrix
            dmap = (full[None, :d, :d] - uv[:, :, None] * full[None, d : d + 1, :d]) / wv[:, None, None]
            g = np.einsum("ki,kij->kj", grad_index, dmap) * radius
        else:
            g = grad_index @ ((mif @ matrix)[:d, :d] * radius)
        big_g = _steepest_descent(g, xh_all if all_valid else xh_all[valid], gens_flat, projective_gens)
        big_g -= big_g.mean(axis=0)
        t = level.values if all_valid else level.values[valid]
        t = t - t.mean()
        i = warped.astype(np.float64)
        i -= i.mean()
        t_norm2, i_norm2 = float(np.einsum("i,i", t, t)), float(np.einsum("i,i", i, i))
        if t_norm2 == 0.0 or i_norm2 == 0.0:
            stop_reason, hit_cap, failed = "an image is constant over the overlap", False, True
            break
        correlation = float(np.einsum("i,i", t, i))
        rho = correlation / np.sqrt(t_norm2 * i_norm2)
        rhos.append(rho)
        if progress is not None:
            progress(stage_name, level_index, iteration, rho)
        if rho > best[0]:
            best = (rho, matrix)
            best_iteration = iteration
        elif iteration - best_iteration >= _STALL_ITERATIONS:
            stop_reason, hit_cap = f"stalled (no gain in {_STALL_ITERATIONS} iterations; kept the best)", False
            matrix = best[1]
            break
        hessian = big_g.T @ big_g
        i_proj, t_proj = big_g.T @ i, big_g.T @ t
        try:
            i_proj_h = np.linalg.solve(hessian, i_proj)
        except np.linalg.LinAlgError:
            stop_reason, hit_cap, failed = "singular Hessian: the overlap has no texture for this model", False, True
            break
        lambda_n = i_norm2 - i_proj @ i_proj_h
        lambda_d = correlation - t_proj @ i_proj_h
        if lambda_d > 0:
            scale = lambda_n / lambda_d
        else:
            # far from the optimum (the correlation of the linearised warp is not positive): the paper's
            # second update, lambda = sqrt(lambda_n / (|t|^2 - t' P_G t)), still raises the ECC
            # (Evangelidis & Psarakis 2008, sec. 3.2); OpenCV raises an error here instead
            t_rest = t_norm2 - t_proj @ np.linalg.solve(hessian, t_proj)
            if not (lambda_n > 0 and t_rest > 0):
                stop_reason, hit_cap, failed = "no update raises the correlation (images uncorrelated or not overlapping)", False, True
                break
            scale = float(np.sqrt(lambda_n / t_rest))
        # error projection: G^T (lambda t - i)
        delta = np.linalg.solve(hessian, scale * t_proj - i_proj)
        step = expm(np.tensordot(delta, gens, axes=1))
        moved = corners_h @ step.T
        moved = moved[:, :d] / moved[:, d : d + 1] if projective_gens else moved[:, :d]
        displacement = float(np.max(np.linalg.norm(moved - corners, axis=1))) * radius
        matrix = matrix @ denorm @ step @ norm
        matrix = matrix / matrix[d, d]
        if displacement < tolerance:
            stop_reason, hit_cap = f"converged (last step {displacement / level.spacing:.1e} level px)", False
            break
    if failed and best[0] > -np.inf:
        matrix = best[1]
    return LevelOutcome(matrix=matrix, rho=tuple(rhos), stop_reason=stop_reason, hit_cap=hit_cap, failed=failed)


def _candidate_rotations(ndim: int) -> list[np.ndarray]:
    """Starting rotations of the coarse search: every 30 degrees in 2D; the 24 axis-aligned turns in 3D."""
    if ndim == 2:
        return [rotation_matrix(np.deg2rad(a)) for a in range(0, 360, 30)]
    turns: list[np.ndarray] = []
    for angles in np.ndindex(4, 4, 4):
        r = np.round(rotation_matrix([float(np.deg2rad(90.0 * a)) for a in angles]))
        if not any(np.array_equal(r, t) for t in turns):
            turns.append(r)
    return turns


def rotation_search(
    level: Level, matrix: np.ndarray, gens: np.ndarray, model: TransformModel, centre: np.ndarray, stage_name: str
) -> tuple[np.ndarray, str | None]:
    """Run the coarsest level from rotated starts (about the fixed centre); keep the start that ends with the best ECC."""
    d = matrix.shape[0] - 1
    stride = max(1, len(level.values) // _SEARCH_SAMPLES)
    level = dataclasses.replace(level, points=level.points[::stride], values=level.values[::stride])
    best: tuple[float, np.ndarray, float] = (-np.inf, matrix, 0.0)
    for rotation in _candidate_rotations(d):
        turn = np.eye(d + 1)
        turn[:d, :d] = rotation
        turn[:d, d] = centre - rotation @ centre
        start = project(matrix @ turn, model, centre)
        outcome = solve_level(
            level, start, gens, iterations=20, finest=False, stage_name=stage_name, level_index=0, progress=None
        )
        if outcome.rho and not outcome.failed and outcome.rho[-1] > best[0]:
            angle = float(np.degrees(np.arccos(np.clip((np.trace(rotation) - (d - 2)) / 2.0, -1.0, 1.0))))
            best = (outcome.rho[-1], outcome.matrix, angle)
    if not np.isfinite(best[0]):
        return matrix, "rotation search: no start converged at the coarsest level; kept the initial transform"
    logger.info("rotation search: best start turned by %.0f degrees (ECC %.4f at the coarsest level)", best[2], best[0])
    return best[1], None

