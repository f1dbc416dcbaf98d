"""Files written safely: to a temporary name beside the target, renamed into place; inputs never overwritten.

At the bottom of the package: any module may use it, and it uses nothing but :mod:`coregister.errors`.
"""

from __future__ import annotations

import contextlib
import errno
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

from coregister.errors import CoregisterError, OutputExistsError, UnreadableInputError, UnwritableOutputError

__all__ = ["atomic_path", "check_writable", "refuse_overwriting_input"]

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


def _reason(exc: OSError, folder: Path) -> str:
    """Why the file system refused, in words (``/proc`` answers "no such file" for a folder that exists)."""
    if exc.errno == errno.ENOENT and folder.is_dir():
        return "the file system there accepts no new files"
    return exc.strerror or str(exc)


def _probe(folder: Path, target: Path, fix: str) -> None:
    """Create and delete a hidden file in ``folder``; the error names ``target``, never the probe."""
    try:
        fd, name = tempfile.mkstemp(prefix=".coregister-probe.", dir=folder)
        os.close(fd)
        os.unlink(name)
    except OSError as exc:
        raise UnwritableOutputError(f"cannot write to {str(target)!r} ({_reason(exc, folder)}); {fix}") from exc


def check_writable(
    path: str | os.PathLike[str], *, folder: bool = False, parents: bool = False, fix: str = "choose another output path"
) -> Path:
    """Fail fast, before any work, when ``path`` cannot be written; return it as a :class:`~pathlib.Path`.

    A file output needs an existing folder that accepts new files; a folder
    output (``folder=True``) must be a folder if it exists, else its parent
    (or, with ``parents=True``, its nearest existing ancestor) must accept
    new folders. The check writes and deletes a hidden probe file, the only
    test that holds for every user (root included) and file system
    (``/proc``, read-only mounts).

    Raises
    ------
    UnwritableOutputError
        Naming ``path``, the reason and ``fix``.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> folder = pathlib.Path(tempfile.mkdtemp())
    >>> check_writable(folder / "out.nii.gz") == folder / "out.nii.gz"
    True
    >>> check_writable(folder / "new" / "deeper", folder=True, parents=True) == folder / "new" / "deeper"
    True
    >>> check_writable("/proc/out.tif", fix="choose another -o")
    Traceback (most recent call last):
    ...
    coregister.errors.UnwritableOutputError: cannot write to '/proc/out.tif' (the file system there accepts no new files); choose another -o
    """
    target = Path(path)
    if folder:
        if target.exists() and not target.is_dir():
            raise UnwritableOutputError(f"cannot write into {str(target)!r}: it exists and is not a folder; {fix}")
        where = target
        while not where.is_dir():
            parent = where.parent if str(where.parent) else Path(".")
            if where != target and not parents or parent == where:
                raise UnwritableOutputError(
                    f"cannot write to {str(target)!r} (its folder {str(where)!r} does not exist); create it or {fix}"
                )
            where = parent
        _probe(where, target, fix)
        return target
    if target.is_dir():
        raise UnwritableOutputError(f"cannot write to {str(target)!r}: it is a folder; give a file path or {fix}")
    parent = target.parent if str(target.parent) else Path(".")
    if not parent.is_dir():
        raise UnwritableOutputError(
            f"cannot write to {str(target)!r} (its folder {str(parent)!r} does not exist); create it or {fix}"
        )
    _probe(parent, target, fix)
    return target


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path in the target's folder; rename it to ``path`` when the block succeeds.

    The temporary name keeps the target's suffix (``.nii.gz``, ``.tif``) so
    that libraries choosing a format by extension choose the right one. On
    any exception the temporary file is removed and the target is untouched:
    a failed run leaves no half-written file. When the file system refuses
    (no permission, read-only, ``/proc``), the
    :class:`~coregister.errors.UnwritableOutputError` names ``path``, not the
    hidden temporary file.

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
    fix = "choose another output path"
    try:
        fd, name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=f".part{_full_suffix(target)}", dir=folder)
    except OSError as exc:
        raise UnwritableOutputError(f"cannot write to {str(target)!r} ({_reason(exc, folder)}); {fix}") from exc
    os.close(fd)
    tmp = Path(name)
    try:
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600; outputs get the usual permissions, as open() would give
        yield tmp
        os.replace(tmp, target)
    except BaseException as exc:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        if isinstance(exc, OSError) and not isinstance(exc, CoregisterError) and _names(exc, tmp, target):
            raise UnwritableOutputError(f"cannot write to {str(target)!r} ({_reason(exc, folder)}); {fix}") from exc
        raise


def _names(exc: OSError, *paths: Path) -> bool:
    """Whether the error is about one of ``paths`` (the temporary file, the target)."""
    named = {str(p) for p in paths}
    return any(f is not None and os.fspath(f) in named for f in (exc.filename, exc.filename2))
