"""What every reader does before and around reading: look at the path, bound the memory, name the failure.

Broken files make libraries fail in their own ways (nibabel's
``HeaderDataError``, GDAL's ``CPLE_*``, OpenCV's ``cv2.error``, numpy's
``ValueError`` on a reshape, a bare ``MemoryError``); :func:`guarded` turns
whatever escapes a reader into an :class:`~coregister.errors.UnreadableInputError`
(or a :class:`~coregister.errors.MemoryLimitError`) that names the file, so
that callers need to catch only :class:`~coregister.errors.CoregisterError`.
"""

from __future__ import annotations

import errno
import functools
import os
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar, cast

from coregister._memory import check_allocation, format_bytes
from coregister.errors import CoregisterError, MemoryLimitError, UnreadableInputError
from coregister.io._text import one_line

__all__ = ["check_path", "claim_within_file", "deflate_bound", "guarded", "within_memory"]

F = TypeVar("F", bound=Callable[..., Any])

#: the most a deflate (zlib, gzip, PNG) stream can expand: 1032 to 1 (RFC 1951: 258 bytes from a 2-bit code)
_DEFLATE_RATIO = 1032


def check_path(path: str | os.PathLike[str], *, folder_ok: bool = False) -> Path:
    """``path`` as a :class:`~pathlib.Path` when it is a regular file (or, with ``folder_ok``, a folder).

    Raises
    ------
    UnreadableInputError
        Missing, a dangling link, a loop of symbolic links, or not a regular
        file (a FIFO, a socket, a device: opening one could wait forever).

    Examples
    --------
    >>> import os, tempfile, pathlib
    >>> folder = pathlib.Path(tempfile.mkdtemp())
    >>> os.symlink(folder / "b", folder / "a"); os.symlink(folder / "a", folder / "b")
    >>> check_path(folder / "a")
    Traceback (most recent call last):
    ...
    coregister.errors.UnreadableInputError: '...a' is a loop of symbolic links; point it at a file
    >>> os.mkfifo(folder / "pipe")
    >>> check_path(folder / "pipe")
    Traceback (most recent call last):
    ...
    coregister.errors.UnreadableInputError: '...pipe' is a FIFO (named pipe), not a regular file; coregister reads files and folders
    """
    path = Path(path)
    try:
        info = os.stat(path)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise UnreadableInputError(f"{str(path)!r} is a loop of symbolic links; point it at a file") from None
        if path.is_symlink():
            raise UnreadableInputError(
                f"{str(path)!r} is a symbolic link to {os.readlink(path)!r}, which does not exist; check the link"
            ) from None
        if exc.errno in (errno.EACCES, errno.EPERM):
            raise UnreadableInputError(f"{str(path)!r} cannot be read (permission denied); check its permissions") from None
        raise UnreadableInputError(f"{str(path)!r} does not exist; check the path") from None
    if stat.S_ISDIR(info.st_mode):
        if folder_ok:
            return path
        raise UnreadableInputError(f"{str(path)!r} is a folder; give a file")
    if not stat.S_ISREG(info.st_mode):
        kind = (
            "a FIFO (named pipe)" if stat.S_ISFIFO(info.st_mode)
            else "a socket" if stat.S_ISSOCK(info.st_mode)
            else "a device" if stat.S_ISCHR(info.st_mode) or stat.S_ISBLK(info.st_mode)
            else "not a regular file"
        )  # fmt: skip
        what = kind if kind.startswith("not") else f"{kind}, not a regular file"
        raise UnreadableInputError(f"{str(path)!r} is {what}; coregister reads files and folders")
    return path


def claim_within_file(
    claimed: int, available: int, path: Path, header: str, *, what: str = "", compressed: int | None = None
) -> None:
    """Refuse a header whose raw pixels (``claimed`` bytes) need more than the file holds (``available``).

    Examples
    --------
    >>> from pathlib import Path
    >>> claim_within_file(1000, 2000, Path("a.nii"), "shape (10, 10, 10) uint8")
    >>> claim_within_file(2_000_000_000, 1400, Path("a.nii"), "shape (1024, 1024, 1024) int16", what="NIfTI")
    Traceback (most recent call last):
    ...
    coregister.errors.UnreadableInputError: 'a.nii' is not a readable NIfTI file: it is truncated or its header is wrong (the header, shape (1024, 1024, 1024) int16, claims 2 GB of pixels; the file holds 1.4 kB after the header); re-copy or re-export the file
    """
    if claimed > available:
        holds = (
            f"the file holds {format_bytes(available)} after the header" if compressed is None
            else f"the file's {format_bytes(compressed)} of compressed data expand to {format_bytes(available)} at most"
        )
        raise UnreadableInputError(
            f"{str(path)!r} is not a readable {what + ' ' if what else ''}file: it is truncated or its header is wrong "
            f"(the header, {header}, claims {format_bytes(claimed)} of pixels; {holds}); re-copy or re-export the file"
        )


def deflate_bound(compressed: int) -> int:
    """The most bytes ``compressed`` bytes of deflate data can expand to (1032 to 1).

    Examples
    --------
    >>> deflate_bound(1400)
    1444800
    """
    return _DEFLATE_RATIO * int(compressed)


def within_memory(claimed: float, path: Path, header: str) -> None:
    """Refuse (before allocating) a read whose arrays would need more than the allowed memory."""
    check_allocation(
        claimed, what=f"reading {str(path)!r} (header: {header})",
        fix="check the header, or read a part of the file (a volume, a window, a band)",
    )


def _shown(path: Any) -> str:
    if isinstance(path, list | tuple):
        return f"{len(path)} files from {str(Path(path[0]).parent)!r}" if path else "an empty list"
    return repr(str(path))


def guarded(what: str) -> Callable[[F], F]:
    """Decorate a reader so that only :class:`~coregister.errors.CoregisterError` (and warnings) leave it.

    A library's own exception on a broken file becomes
    :class:`~coregister.errors.UnreadableInputError` naming the file and
    ``what`` it was read as; a ``MemoryError`` becomes
    :class:`~coregister.errors.MemoryLimitError`. Interrupts (Ctrl-C) pass.

    Examples
    --------
    >>> @guarded("PNG")
    ... def read_png(path):
    ...     raise ValueError("buffer is too small")
    >>> read_png("x.png")
    Traceback (most recent call last):
    ...
    coregister.errors.UnreadableInputError: 'x.png' is not a readable PNG file (ValueError: buffer is too small); check that it is complete and of that format
    """

    def decorate(function: F) -> F:
        @functools.wraps(function)
        def reader(path: Any, *args: Any, **kwargs: Any) -> Any:
            try:
                return function(path, *args, **kwargs)
            except (CoregisterError, Warning):
                raise
            except MemoryError as exc:
                raise MemoryLimitError(
                    f"reading {_shown(path)} ran out of memory ({one_line(exc)}); free memory, or read a part of it"
                ) from exc
            except Exception as exc:
                raise UnreadableInputError(
                    f"{_shown(path)} is not a readable {what} file ({type(exc).__name__}: {one_line(exc)}); "
                    "check that it is complete and of that format"
                ) from exc

        return cast(F, reader)

    return decorate
