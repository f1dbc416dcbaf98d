"""The matrix models the ECC, OpenCV-ECC and feature engines share: generators, projection, transform values.

A model (translation, rigid, similarity, affine, 2D homography) is handled
as a homogeneous ``(d + 1, d + 1)`` fixed -> moving world matrix while an
engine works, and becomes a :mod:`coregister.transforms` value at the end:

* :func:`model_generators` and :func:`expm`: the model's Lie algebra, so
  that ``expm(sum_k p_k G_k)`` is a map of the model for any parameters;
* :func:`project`: the closest map of a model to any homogeneous matrix;
* :func:`initial_matrix`: an engine's starting transform as a matrix;
* :func:`transform_from_matrix`: the matrix as a transform value.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from coregister.config import TransformModel
from coregister.errors import ConfigError, GeometryError
from coregister.transforms import (
    Affine,
    Composite,
    Homography,
    LinearTransform,
    Rigid,
    Similarity,
    Transform,
    Translation,
)

__all__ = [
    "expm",
    "initial_matrix",
    "model_generators",
    "project",
    "transform_from_matrix",
]

_MODELS = (
    TransformModel.TRANSLATION,
    TransformModel.RIGID,
    TransformModel.SIMILARITY,
    TransformModel.AFFINE,
    TransformModel.HOMOGRAPHY,
)


def model_generators(model: TransformModel | str, ndim: int) -> np.ndarray:
    """Lie-algebra generators of a transform model, shape ``(n, d + 1, d + 1)``.

    ``exp(sum_k p_k G_k)`` is a homogeneous point map of the model for any
    parameters ``p``: translations, rotations (skew-symmetric blocks), an
    isotropic scale (the identity block), all matrix entries (affine) and,
    in 2D, the projective row (homography).

    Examples
    --------
    >>> [model_generators(m, 2).shape[0] for m in ("translation", "rigid", "similarity", "affine", "homography")]
    [2, 3, 4, 6, 8]
    >>> [model_generators(m, 3).shape[0] for m in ("translation", "rigid", "similarity", "affine")]
    [3, 6, 7, 12]
    """
    parsed: TransformModel = TransformModel.parse(model)
    if parsed not in _MODELS:
        raise ConfigError(f"the ECC engine estimates {', '.join(m.value for m in _MODELS)}; not {parsed.value!r}")
    model = parsed
    if model is TransformModel.HOMOGRAPHY and ndim != 2:
        raise ConfigError("a homography is a 2D model; use 'affine' for volumes")
    d = ndim
    gens: list[np.ndarray] = []

    def unit(i: int, j: int) -> np.ndarray:
        g = np.zeros((d + 1, d + 1))
        g[i, j] = 1.0
        return g

    translations = [unit(i, d) for i in range(d)]
    if model is TransformModel.TRANSLATION:
        gens = translations
    elif model in (TransformModel.RIGID, TransformModel.SIMILARITY):
        pairs = [(1, 0)] if d == 2 else [(2, 1), (0, 2), (1, 0)]  # about z in 2D; about x, y, z in 3D
        for i, j in pairs:
            g = np.zeros((d + 1, d + 1))
            g[i, j], g[j, i] = 1.0, -1.0
            gens.append(g)
        if model is TransformModel.SIMILARITY:
            g = np.zeros((d + 1, d + 1))
            g[:d, :d] = np.eye(d)
            gens.append(g)
        gens += translations
    else:
        gens = [unit(i, j) for i in range(d) for j in range(d)] + translations
        if model is TransformModel.HOMOGRAPHY:
            gens += [unit(d, j) for j in range(d)]
    return np.stack(gens)


def expm(a: np.ndarray) -> np.ndarray:
    """Matrix exponential of a small matrix (scaling and squaring of a Taylor series).

    Takes a combination of :func:`model_generators` to the map of the model
    it stands for.

    Examples
    --------
    >>> import numpy as np
    >>> turn = expm(np.pi / 2 * model_generators("rigid", 2)[0])  # a quarter turn about the origin
    >>> (np.round(turn, 12) + 0.0).tolist()
    [[0.0, -1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]]
    """
    norm = float(np.abs(a).sum(axis=1).max())
    squarings = max(0, int(np.ceil(np.log2(norm / 0.25)))) if norm > 0.25 else 0
    scaled = a / (2.0**squarings)
    out = np.eye(a.shape[0])
    term = np.eye(a.shape[0])
    for k in range(1, 12):
        term = term @ scaled / k
        out = out + term
    for _ in range(squarings):
        out = out @ out
    return out


def initial_matrix(initial: Transform | None, ndim: int) -> np.ndarray | None:
    """The homogeneous fixed -> moving matrix of an engine's starting transform, or None when there is none.

    A composite is flattened first; only linear transforms and homographies
    have a matrix.

    Examples
    --------
    >>> from coregister.transforms import Translation
    >>> initial_matrix(Translation([2.0, -1.0]), 2).tolist()
    [[1.0, 0.0, 2.0], [0.0, 1.0, -1.0], [0.0, 0.0, 1.0]]
    """
    if initial is None:
        return None
    if initial.ndim != ndim:
        raise GeometryError(f"the initial transform is {initial.ndim}D but the images are {ndim}D")
    t = initial.flattened() if isinstance(initial, Composite) else initial
    if isinstance(t, LinearTransform):
        return np.array(t.homogeneous, dtype=float)
    if isinstance(t, Homography):
        return np.array(t.matrix, dtype=float)
    raise ConfigError(
        f"the ECC engine starts from a linear transform or a homography, not {type(initial).__name__}; "
        "give the linear part as `initial`"
    )


def _polar_rotation(a: np.ndarray) -> np.ndarray:
    u, _, vt = np.linalg.svd(a)
    r = u @ vt
    if np.linalg.det(r) < 0:
        u[:, -1] = -u[:, -1]
        r = u @ vt
    return r


def project(matrix: np.ndarray, model: TransformModel, center: np.ndarray) -> np.ndarray:
    """The closest map of ``model`` to the homogeneous ``matrix`` (same image of ``center``)."""
    d = matrix.shape[0] - 1
    if model is TransformModel.HOMOGRAPHY:
        return matrix / matrix[d, d]
    h = matrix / matrix[d, d]
    if np.any(np.abs(h[d, :d]) > 1e-12):  # drop a projective part: keep the image of the centre
        a = h[:d, :d] - np.outer((h[:d, :d] @ center + h[:d, d]) / (h[d, :d] @ center + 1.0), h[d, :d])
        a = a / (h[d, :d] @ center + 1.0)
        mapped = (h[:d, :d] @ center + h[:d, d]) / (h[d, :d] @ center + 1.0)
    else:
        a = h[:d, :d]
        mapped = a @ center + h[:d, d]
    if model is TransformModel.TRANSLATION:
        a = np.eye(d)
    elif model is TransformModel.RIGID:
        a = _polar_rotation(a)
    elif model is TransformModel.SIMILARITY:
        a = _polar_rotation(a) * abs(np.linalg.det(a)) ** (1.0 / d)
    out = np.eye(d + 1)
    out[:d, :d] = a
    out[:d, d] = mapped - a @ center
    return out


def transform_from_matrix(
    matrix: np.ndarray, model: TransformModel | str, *, center: Sequence[float] | np.ndarray
) -> Transform:
    """The transform value of ``model`` for a homogeneous fixed -> moving world matrix.

    Linear models are returned about ``center`` (world units), which is
    where their rotation and scale are reported by
    :func:`coregister.transforms.decompose`.

    Examples
    --------
    >>> import numpy as np
    >>> m = np.array([[0.0, -2.0, 5.0], [2.0, 0.0, 1.0], [0.0, 0.0, 1.0]])
    >>> t = transform_from_matrix(m, "similarity", center=[0.0, 0.0])
    >>> type(t).__name__, round(t.scale, 9), np.round(t.translation, 9).tolist()
    ('Similarity', 2.0, [5.0, 1.0])
    """
    kind: TransformModel = TransformModel.parse(model)
    m = np.asarray(matrix, dtype=float)
    d = m.shape[0] - 1
    c = np.asarray(center, dtype=float)
    if kind is TransformModel.HOMOGRAPHY:
        return Homography(m)
    m = project(m, kind, c)
    a = m[:d, :d]
    translation = a @ c + m[:d, d] - c
    if kind is TransformModel.TRANSLATION:
        return Translation(m[:d, d])
    if kind is TransformModel.RIGID:
        return Rigid(_polar_rotation(a), translation, c)
    if kind is TransformModel.SIMILARITY:
        scale = abs(np.linalg.det(a)) ** (1.0 / d)
        return Similarity(scale, _polar_rotation(a / scale), translation, c)
    return Affine(a, translation, c)

