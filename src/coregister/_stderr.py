"""What C and C++ code writes to file descriptor 2 (libpng, ITK's MetaIO, GDCM), taken around a call and logged.

Libraries write their notes straight to file descriptor 2, past any
Python-level setting ("libpng warning: sCAL: invalid unit", "MetaImage:
M_ReadElementsData: data not read completely"); the command line prints
each error as one line of its own. :func:`captured_stderr` takes their
output around one call and logs it at DEBUG instead.

At the bottom of the package: it uses nothing of coregister.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import tempfile
import threading
from collections.abc import Iterator

__all__ = ["captured_stderr"]

logger = logging.getLogger(__name__)

_STDERR_FD = 2
_LOCK = threading.Lock()  # fd 2 is process-wide: one redirection at a time


@contextlib.contextmanager
def captured_stderr(what: str) -> Iterator[None]:
    """Send what C code writes to file descriptor 2 during the block to the log (DEBUG), not the terminal.

    Python's own ``sys.stderr`` is flushed first, so nothing written before
    the block is lost; the descriptor is restored however the block ends.
    Output that other threads write to fd 2 during the block is logged too
    (the redirection is process-wide): keep the block to a single C call.
    Where fd 2 cannot be duplicated (closed, or an unusual host), the
    block runs without redirection.

    Examples
    --------
    >>> import ctypes, ctypes.util
    >>> libc = ctypes.CDLL(ctypes.util.find_library("c"))
    >>> with captured_stderr("a C call"):
    ...     _ = libc.write(2, b"chatter from C\\n", 15)  # goes to the DEBUG log, not the terminal
    """
    with _LOCK:
        try:
            sys.stderr.flush()
        except (AttributeError, OSError, ValueError):
            pass
        try:
            saved = os.dup(_STDERR_FD)
        except OSError:
            yield
            return
        with tempfile.TemporaryFile() as sink:
            try:
                os.dup2(sink.fileno(), _STDERR_FD)
                yield
            finally:
                os.dup2(saved, _STDERR_FD)
                os.close(saved)
                sink.seek(0)
                text = sink.read().decode("utf-8", "replace").strip()
                if text:
                    logger.debug("%s wrote to stderr: %s", what, " | ".join(text.splitlines()))
