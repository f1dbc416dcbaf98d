"""Atomic output: write to a temporary file beside the target, then rename it into place."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

from coregister.errors import OutputExistsError, UnreadableInputError

__all__ = ["atomic_path", "refuse_overwriting_input"]

# The process umask, read once at import (os.umask can only be read by setting it).
_UMASK = os.umask(0o022)
os.umask(_UMASK)


def _full_suffix(path: Path) -> str:
    """``.nii.gz`` for ``a.nii.gz``; the last suffix otherwise (keeps writers' format detection working)."""
    suffixes = path.suffixes
    if len(suffixes) >= 2 and suffixes[-1].lower() in (".gz", ".bz2", ".zst"):
        return "".join(suffixes[-2:])
    return path.suffix


def refuse_overwriting_input(output: Path, source: str | os.PathLike[str] | None, *, fix: str) -> None:
    """Raise :class:`~coregister.errors.OutputExistsError` when ``output`` is the input file ``source``.

    The two are compared as files (device and inode), so symbolic and hard
    links to the input are refused too. Only the file-system probe is
    guarded: a path that cannot be examined is not the input, but the
    refusal itself always propagates (it is a ``FileExistsError``, hence an
    ``OSError``: never wrap a call in ``suppress(OSError)``).

    Examples
    --------
    >>> import tempfile, pathlib
    >>> source = pathlib.Path(tempfile.mkdtemp()) / "in.tif"
    >>> _ = source.write_bytes(b"")
    >>> refuse_overwriting_input(source.parent / "out.tif", source, fix="write to another path")  # another file: fine
    >>> refuse_overwriting_input(source, str(source), fix="write to another path")
    Traceback (most recent call last):
    ...
    coregister.errors.OutputExistsError: refusing to overwrite the input '...in.tif'; write to another path
    """
    if not source:
        return
    try:  # only the file-system probe may fail (a path we cannot stat is not a file we are about to replace)
        same = os.path.samefile(output, source)
    except OSError:
        same = False
    if same:
        raise OutputExistsError(f"refusing to overwrite the input {str(output)!r}; {fix}")


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path in the target's folder; rename it to ``path`` when the block succeeds.

    The temporary name keeps the target's suffix (``.nii.gz``, ``.tif``) so
    that libraries choosing a format by extension choose the right one. On
    any exception the temporary file is removed and the target is untouched:
    a failed run leaves no half-written file.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> target = pathlib.Path(tempfile.mkdtemp()) / "out.txt"
    >>> with atomic_path(target) as tmp:
    ...     _ = tmp.write_text("done")
    >>> target.read_text()
    'done'
    """
    target = Path(path)
    folder = target.parent if str(target.parent) else Path(".")
    if not folder.is_dir():
        raise UnreadableInputError(f"output folder {str(folder)!r} does not exist; create it first")
    fd, name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=f".part{_full_suffix(target)}", dir=folder)
    os.close(fd)
    tmp = Path(name)
    os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600; outputs get the usual permissions, as open() would give
    try:
        yield tmp
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise
