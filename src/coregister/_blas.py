"""One BLAS thread for the thin products of the ECC solver and the phase correlation's refinement.

Those products multiply (samples x parameters) matrices and small DFTs: a
multi-threaded BLAS gains nothing on them and, on a busy machine, its
spinning threads cost more than the work (measured: 5-10x slower ECC).
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Iterator
from typing import ParamSpec, TypeVar

from threadpoolctl import ThreadpoolController

__all__ = ["one_blas_thread", "single_threaded_blas"]

_P = ParamSpec("_P")
_R = TypeVar("_R")


@functools.cache
def _controller() -> ThreadpoolController:
    return ThreadpoolController()


@contextlib.contextmanager
def single_threaded_blas() -> Iterator[None]:
    """Run the block with one BLAS thread.

    Examples
    --------
    >>> import numpy as np
    >>> with single_threaded_blas():
    ...     float(np.ones((3, 4)) @ np.ones(4) @ np.ones(3))
    12.0
    """
    with _controller().limit(limits=1, user_api="blas"):
        yield


def one_blas_thread(function: Callable[_P, _R]) -> Callable[_P, _R]:
    """Decorator: ``function`` runs with one BLAS thread (:func:`single_threaded_blas`)."""

    @functools.wraps(function)
    def wrapper(*args: _P.args, **kwargs: _P.kwargs) -> _R:
        with single_threaded_blas():
            return function(*args, **kwargs)

    return wrapper
