"""Interrupts that wait for a safe point: a signal noted while C++ code (an ITK optimiser) runs, raised after it.

A Python signal handler runs between two bytecodes of the main thread. While
SimpleITK optimises, the only Python that runs is the iteration observer,
and an exception raised at its first bytecode escapes into ITK, which prints
a traceback and reports a failed registration. So the command line's
handler asks :func:`request` first: inside :func:`deferred` (an engine's
``Execute``) the signal is only noted; the observer sees :func:`pending`,
stops the optimiser, and the engine raises
:class:`~coregister.errors.Interrupted` once ``Execute`` has returned
(:func:`raise_pending`).

At the bottom of the package: it uses nothing but :mod:`coregister.errors`.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator

from coregister.errors import Interrupted

__all__ = ["deferred", "pending", "raise_pending", "request"]

_state = {"pending": 0, "deferring": 0}
_lock = threading.Lock()


@contextlib.contextmanager
def deferred() -> Iterator[None]:
    """A block (C++ code with Python callbacks) during which a signal is noted, not raised.

    Examples
    --------
    >>> with deferred():
    ...     request(2)
    True
    >>> pending()
    2
    >>> raise_pending()
    Traceback (most recent call last):
    ...
    coregister.errors.Interrupted: 2
    >>> pending()
    0
    """
    with _lock:
        _state["deferring"] += 1
    try:
        yield
    finally:
        with _lock:
            _state["deferring"] -= 1


def request(signum: int) -> bool:
    """Inside a :func:`deferred` block: note ``signum`` and return True (the handler must not raise); else False."""
    if _state["deferring"] > 0:
        _state["pending"] = int(signum)
        return True
    return False


def pending() -> int:
    """The signal noted and not raised yet (0: none)."""
    return _state["pending"]


def raise_pending() -> None:
    """Raise :class:`~coregister.errors.Interrupted` for a noted signal (and forget it); nothing when none is."""
    signum, _state["pending"] = _state["pending"], 0
    if signum:
        raise Interrupted(signum)
