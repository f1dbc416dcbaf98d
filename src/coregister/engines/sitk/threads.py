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

import SimpleITK as sitk

__all__ = ["all_threads", "default_threads"]


def all_threads() -> int:
    """SimpleITK's process-wide default thread count (all cores unless the user or ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS set it)."""
    return int(sitk.ProcessObject.GetGlobalDefaultNumberOfThreads())


_THREADS_LOCK = threading.Lock()
_THREADS_STATE = {"active": 0, "previous": 0}


@contextlib.contextmanager
def default_threads(threads: int | None) -> Iterator[None]:
    """SimpleITK's process-wide default thread count set to ``threads`` for the duration (None: left alone).

    A use nested in another (the demons of a displacement-field stage inside
    a registration that keeps its metrics on one thread) puts back the count
    it found when it ends; the original default returns when the last use
    ends. Concurrent registrations asking for different counts share the
    last count set.

    Examples
    --------
    >>> before = all_threads()
    >>> with default_threads(1):
    ...     with default_threads(2):
    ...         inner = all_threads()
    ...     outer = all_threads()
    >>> inner, outer, all_threads() == before
    (2, 1, True)
    """
    if threads is None:
        yield
        return
    with _THREADS_LOCK:
        found = sitk.ProcessObject.GetGlobalDefaultNumberOfThreads()
        if _THREADS_STATE["active"] == 0:
            _THREADS_STATE["previous"] = found
        _THREADS_STATE["active"] += 1
        sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(int(threads))
    try:
        yield
    finally:
        with _THREADS_LOCK:
            _THREADS_STATE["active"] -= 1
            restored = _THREADS_STATE["previous"] if _THREADS_STATE["active"] == 0 else found
            sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(restored)
