"""SimpleITK's process-wide default thread count, read, and set for the duration of a registration.

ITK's metrics take their thread count from this default, not from the
registration method they run in; the engine sets it while it runs and
restores it after. The pyramid's smoothing reads it when a registration
leaves its thread count open.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from typing import Any

import SimpleITK as sitk

__all__ = ["all_threads", "default_threads"]


def all_threads() -> int:
    """SimpleITK's process-wide default thread count (all cores unless the user or ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS set it)."""
    return int(sitk.ProcessObject.GetGlobalDefaultNumberOfThreads())


_THREADS_LOCK = threading.Lock()
#: the counts asked for by the uses now open, oldest first, each under a token of its own; and the default found
#: when the first one opened
_THREADS_STATE: dict[str, Any] = {"open": [], "original": 0}


@contextlib.contextmanager
def default_threads(threads: int | None) -> Iterator[None]:
    """SimpleITK's process-wide default thread count set to ``threads`` for the duration (None: left alone).

    When a use ends, the default becomes the count of the newest use still
    open, or the original default when none is. So a use nested in another
    (the demons of a displacement-field stage inside a registration that
    keeps its metrics on one thread) gives the outer one its count back, and
    a registration that ends while another runs in the next thread leaves
    that one's count, not the count it found when it started. Concurrent
    registrations asking for different counts share the newest count set.

    Examples
    --------
    >>> before = all_threads()
    >>> with default_threads(1):
    ...     with default_threads(2):
    ...         inner = all_threads()
    ...     outer = all_threads()
    >>> inner, outer, all_threads() == before
    (2, 1, True)
    >>> a, b = default_threads(1), default_threads(3)  # two registrations in two threads: a ends first
    >>> _ = a.__enter__(); _ = b.__enter__(); _ = a.__exit__(None, None, None); all_threads()
    3
    >>> _ = b.__exit__(None, None, None); all_threads() == before
    True
    """
    if threads is None:
        yield
        return
    token = object()
    with _THREADS_LOCK:
        if not _THREADS_STATE["open"]:
            _THREADS_STATE["original"] = sitk.ProcessObject.GetGlobalDefaultNumberOfThreads()
        _THREADS_STATE["open"].append((token, int(threads)))
        sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(int(threads))
    try:
        yield
    finally:
        with _THREADS_LOCK:
            still = [(t, n) for t, n in _THREADS_STATE["open"] if t is not token]
            _THREADS_STATE["open"] = still
            sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(still[-1][1] if still else _THREADS_STATE["original"])
