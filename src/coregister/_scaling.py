"""Stored values <-> values as users mean them (NIfTI ``scl_slope``/``scl_inter``, DICOM rescale).

Readers apply ``value = stored * slope + intercept`` and keep the result in
the smallest dtype that holds it exactly; writers invert it, but only where
the inversion is exact (otherwise they write the values unscaled, losing
nothing).
"""

from __future__ import annotations

import numpy as np

__all__ = ["apply_rescale", "is_identity_scaling", "smallest_exact_dtype", "unapply_rescale"]

_SIGNED = (np.int8, np.int16, np.int32, np.int64)
_UNSIGNED = (np.uint8, np.uint16, np.uint32, np.uint64)


def is_identity_scaling(slope: float | None, intercept: float | None) -> bool:
    """Whether ``(slope, intercept)`` leaves values unchanged (``None``/NaN/0 slope count as 1, as NIfTI says).

    Examples
    --------
    >>> is_identity_scaling(None, None), is_identity_scaling(1.0, 0.0), is_identity_scaling(1.0, -1024.0)
    (True, True, False)
    """
    slope = _clean_slope(slope)
    intercept = _clean_intercept(intercept)
    return slope == 1.0 and intercept == 0.0


def _clean_slope(slope: float | None) -> float:
    if slope is None or not np.isfinite(slope) or slope == 0:
        return 1.0
    return float(slope)


def _clean_intercept(intercept: float | None) -> float:
    if intercept is None or not np.isfinite(intercept):
        return 0.0
    return float(intercept)


def smallest_exact_dtype(values: np.ndarray, *, prefer: np.dtype | None = None) -> np.dtype:
    """The smallest dtype that holds every value of ``values`` exactly.

    Integer-valued data get an integer type: ``prefer`` when it holds the
    range, else the narrowest type of the same signedness that does (signed
    as soon as a value is negative). Other data get ``float32`` when the values survive the round
    trip through it, else ``float64``.

    Examples
    --------
    >>> import numpy as np
    >>> smallest_exact_dtype(np.array([-2048.0, 1000.0]), prefer=np.dtype("int16"))
    dtype('int16')
    >>> smallest_exact_dtype(np.array([0.0, 70000.0]), prefer=np.dtype("uint16"))
    dtype('uint32')
    >>> smallest_exact_dtype(np.array([0.0, 70000.0]), prefer=np.dtype("int16"))
    dtype('int32')
    >>> smallest_exact_dtype(np.array([0.5, 1.25])), smallest_exact_dtype(np.array([0.1]))
    (dtype('float32'), dtype('float64'))
    """
    values = np.asarray(values)
    if values.size == 0:
        return np.dtype(prefer) if prefer is not None else values.dtype
    if np.issubdtype(values.dtype, np.integer) or (
        np.all(np.isfinite(values)) and np.array_equal(values, np.round(values))
    ):
        low, high = values.min(), values.max()
        candidates: list[np.dtype] = (
            [np.dtype(prefer)] if prefer is not None and np.issubdtype(prefer, np.integer) else []
        )
        signed = low < 0 or (prefer is not None and np.issubdtype(prefer, np.signedinteger))
        candidates += [np.dtype(t) for t in (_SIGNED if signed else _UNSIGNED + _SIGNED)]
        for dtype in candidates:
            info = np.iinfo(dtype)
            if info.min <= low and high <= info.max:
                return dtype
        return np.dtype(np.float64)
    as32 = values.astype(np.float32)
    if np.array_equal(as32.astype(values.dtype), values, equal_nan=True):
        return np.dtype(np.float32)
    return np.dtype(np.float64)


def apply_rescale(stored: np.ndarray, slope: float | None, intercept: float | None) -> np.ndarray:
    """Values as users mean them: ``stored * slope + intercept`` in the smallest exact dtype.

    Without scaling the stored array comes back unchanged (an ``int16``
    file stays ``int16``). The product is computed in ``float64`` (exact for
    stored integers up to 32 bits and a ``float32`` slope).

    Examples
    --------
    >>> import numpy as np
    >>> apply_rescale(np.array([0, 100], np.int16), 1.0, -1024.0)
    array([-1024,  -924], dtype=int16)
    >>> apply_rescale(np.array([0, 3], np.uint8), 0.5, 0.0)
    array([0. , 1.5], dtype=float32)
    """
    stored = np.asarray(stored)
    if is_identity_scaling(slope, intercept):
        return stored
    values = stored.astype(np.float64) * _clean_slope(slope) + _clean_intercept(intercept)
    return values.astype(smallest_exact_dtype(values, prefer=stored.dtype))


def unapply_rescale(
    values: np.ndarray, slope: float | None, intercept: float | None, stored_dtype: np.dtype
) -> np.ndarray | None:
    """Stored values that give back ``values`` exactly under ``(slope, intercept)``, or ``None``.

    ``None`` means the inversion would lose information (values off the
    stored grid, out of the stored type's range, NaN in an integer type):
    the caller then writes ``values`` unscaled.

    Examples
    --------
    >>> import numpy as np
    >>> unapply_rescale(np.array([-1024, -924]), 1.0, -1024.0, np.dtype("int16"))
    array([  0, 100], dtype=int16)
    >>> unapply_rescale(np.array([0.3]), 1.0, -1024.0, np.dtype("int16")) is None
    True
    """
    values = np.asarray(values)
    stored_dtype = np.dtype(stored_dtype)
    slope_, intercept_ = _clean_slope(slope), _clean_intercept(intercept)
    wide = values.astype(np.float64)
    if not np.array_equal(wide, values):  # int64 beyond 2**53
        return None
    stored = (wide - intercept_) / slope_
    if np.issubdtype(stored_dtype, np.integer):
        if not np.all(np.isfinite(stored)):
            return None
        stored = np.round(stored)
        info = np.iinfo(stored_dtype)
        if stored.size and (stored.min() < info.min or stored.max() > info.max):
            return None
    raw = stored.astype(stored_dtype)
    back = raw.astype(np.float64) * slope_ + intercept_
    if not np.array_equal(back, wide, equal_nan=True):
        return None
    return raw
