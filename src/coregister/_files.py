"""Files written safely: to a temporary name beside the target, renamed into place; inputs never overwritten.

At the bottom of the package: any module may use it, and it uses nothing but :mod:`coregister.errors`.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import re
import shutil
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

from coregister.errors import (
    CoregisterError,
    DiskFullError,
    OutputExistsError,
    UnreadableInputError,
    UnwritableOutputError,
)

__all__ = [
    "OVERWRITE_FIX",
    "PART_MARKER",
    "atomic_path",
    "check_writable",
    "ensure_room",
    "out_of_room",
    "part_folder",
    "publish",
    "refuse_existing",
    "refuse_overwriting_input",
    "sweep_parts",
]

logger = logging.getLogger(__name__)

#: how the refusal to replace an existing output says what to do
OVERWRITE_FIX = "pass overwrite=True (command line: --overwrite) to replace it"

# The process umask, read once at import (os.umask can only be read by setting it).
_UMASK = os.umask(0o022)
os.umask(_UMASK)


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


#: the file inside every temporary folder coregister makes: only folders holding it are ever swept away
PART_MARKER = ".coregister-part"
_PART_NAME = re.compile(r"\..+\.[A-Za-z0-9_]{8}\.part")


def _lock(fd: int) -> bool:
    """Take an exclusive lock on ``fd`` without waiting; False when another process (or open file) holds it."""
    if fcntl is None:  # pragma: no cover - Windows: no advisory locks; nothing is ever swept
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return False
    return True


def sweep_parts(folder: str | os.PathLike[str]) -> list[Path]:
    """Remove the temporary folders that interrupted coregister runs left in ``folder``; return them.

    A temporary folder (:func:`part_folder`) is locked (``flock``) for as long
    as the process that made it lives; the kernel releases the lock when the
    process dies, even by SIGKILL. So a folder named ``.<name>.XXXXXXXX.part``
    that holds :data:`PART_MARKER` and whose lock can be taken is a leftover,
    and goes; one still locked belongs to a live run and stays, and nothing
    without the marker is touched.

    Examples
    --------
    >>> import tempfile
    >>> folder = Path(tempfile.mkdtemp())
    >>> left = folder / ".out.tif.abcd1234.part"
    >>> left.mkdir()
    >>> _ = (left / PART_MARKER).write_text("")
    >>> [p.name for p in sweep_parts(folder)], left.exists()
    (['.out.tif.abcd1234.part'], False)
    """
    folder = Path(folder)
    removed: list[Path] = []
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return removed
    for entry in entries:
        if not _PART_NAME.fullmatch(entry.name) or not entry.is_dir(follow_symlinks=False):
            continue
        path = Path(entry.path)
        if not (path / PART_MARKER).is_file():
            continue
        try:
            fd = os.open(path, os.O_RDONLY)
        except OSError:
            continue
        try:
            if not _lock(fd):
                continue
            shutil.rmtree(path, ignore_errors=True)
        finally:
            os.close(fd)
        if not path.exists():
            logger.info("removed %s, left by an interrupted run", path)
            removed.append(path)
    return removed


@contextlib.contextmanager
def part_folder(
    folder: str | os.PathLike[str], name: str, *, stands_for: str | os.PathLike[str] | None = None
) -> Iterator[Path]:
    """A locked temporary folder ``.<name>.XXXXXXXX.part`` in ``folder``, removed with its contents when the block ends.

    Leftovers of interrupted runs in ``folder`` are swept first
    (:func:`sweep_parts`). The folder holds :data:`PART_MARKER` (leave it out
    when moving the contents) and stays locked while the block runs.

    A write in the block that runs out of room (a full device, a used-up
    quota, the file-size limit) leaves it as a
    :class:`~coregister.errors.DiskFullError` (:func:`out_of_room`) that
    names the output as the user knows it: the temporary folder read as
    ``stands_for`` (default ``folder / name``: the folder being staged; a
    file staged under its own name passes ``stands_for=folder``).

    Examples
    --------
    >>> import tempfile
    >>> folder = Path(tempfile.mkdtemp())
    >>> with part_folder(folder, "out") as stage:
    ...     stage.name.startswith(".out."), stage.name.endswith(".part"), sweep_parts(folder)
    (True, True, [])
    >>> list(folder.iterdir())
    []
    """
    folder = Path(folder) if str(folder) else Path(".")
    fix = "choose another output path"
    if not folder.is_dir():
        raise UnwritableOutputError(f"output folder {str(folder)!r} does not exist; create it first")
    sweep_parts(folder)
    try:
        stage = Path(tempfile.mkdtemp(prefix=f".{name}.", suffix=".part", dir=folder))
    except OSError as exc:
        raise UnwritableOutputError(f"cannot write to {str(folder / name)!r} ({_reason(exc, folder)}); {fix}") from exc
    fd = os.open(stage, os.O_RDONLY)
    try:
        _lock(fd)
        try:
            (stage / PART_MARKER).write_bytes(b"")
            os.chmod(stage, 0o777 & ~_UMASK)  # mkdtemp makes 0700; what moves out keeps its own permissions
            yield stage
        except Exception as exc:
            full = out_of_room(exc, stage, Path(stands_for) if stands_for is not None else folder / name)
            if full is None:
                raise
            raise full from exc
    finally:
        shutil.rmtree(stage, ignore_errors=True)
        os.close(fd)


#: what a write meets when the room runs out: a full device, a used-up quota, the file-size limit
_NO_ROOM = frozenset(code for code in (errno.ENOSPC, errno.EFBIG, getattr(errno, "EDQUOT", None)) if code is not None)
#: free space under which a failed write is put down to a full device when the library lost the system's error code
#: (ITK says "could not write", GDAL "write failed", numpy "N requested and M written")
_NEARLY_FULL = 1 << 20


def _file_size_limit() -> int | None:
    """The process's file-size limit (``ulimit -f``, ``RLIMIT_FSIZE``) in bytes, or None without one."""
    try:
        import resource
    except ImportError:  # pragma: no cover - Windows
        return None
    soft, _ = resource.getrlimit(resource.RLIMIT_FSIZE)
    return None if soft == resource.RLIM_INFINITY else int(soft)


def _free_bytes(folder: Path) -> int | None:
    """Bytes an unprivileged user may still write on the device that holds ``folder``, or None when unknown."""
    try:
        info = os.statvfs(folder)
    except (AttributeError, OSError):  # pragma: no cover - no statvfs (Windows)
        return None
    return int(info.f_bavail) * int(info.f_frsize)


def _staged_files(stage: Path) -> list[tuple[int, int, Path]]:
    """``(modified ns, size, path)`` of every file under ``stage`` but the marker, the newest last."""
    found = []
    for path in stage.rglob("*"):
        try:
            info = path.lstat()
        except OSError:
            continue
        if stat.S_ISREG(info.st_mode) and path != stage / PART_MARKER:
            found.append((info.st_mtime_ns, info.st_size, path))
    return sorted(found)


def ensure_room(path: Path, size: int) -> None:
    """Refuse to start writing ``size`` bytes to ``path`` when the file-size limit or the free space cannot hold them.

    For writers that cannot fail cleanly part way (HDF5, inside ITK, leaves
    a half-closed file that crashes the process at exit): the check comes
    first, with the estimate. Raises :class:`~coregister.errors.DiskFullError`.

    Examples
    --------
    >>> import tempfile
    >>> ensure_room(Path(tempfile.mkdtemp()) / "t.h5", 10_000)
    """
    limit = _file_size_limit()
    if limit is not None and size > limit:
        raise DiskFullError(
            f"cannot write {str(path)!r}: it needs about {size:,} bytes, more than this process's file-size limit of "
            f"{limit:,} bytes (ulimit -f); raise the limit (ulimit -f unlimited) or write a smaller file", errno.EFBIG
        )
    free = _free_bytes(path.parent)
    if free is not None and size > free:
        raise DiskFullError(
            f"cannot write {str(path)!r}: it needs about {size:,} bytes and the device that holds {str(path.parent)!r} "
            f"has {free:,} bytes free; free some space there or choose another output folder", errno.ENOSPC
        )


def out_of_room(exc: BaseException, stage: Path, stands_for: Path) -> DiskFullError | None:
    """The :class:`~coregister.errors.DiskFullError` that ``exc``, raised writing into ``stage``, stands for, or None.

    A write fails for want of room with ``ENOSPC`` (the device is full),
    ``EDQUOT`` (a quota) or ``EFBIG`` (the file reached the file-size limit,
    ``ulimit -f``); libraries that lose the system's code (ITK, GDAL, numpy's
    ``tofile``) are judged by what is left: a file that reached the size
    limit, or a device with (almost) no free space. The message names the
    file that was being written (the newest under ``stage``), with ``stage``
    read as ``stands_for``, how many bytes of it had been written, and the
    limit or the free space. A :class:`~coregister.errors.DiskFullError`
    from a write nested in ``stage`` comes back with its paths read the same
    way; any other error gives None.

    Examples
    --------
    >>> import errno, tempfile
    >>> stage = Path(tempfile.mkdtemp()) / ".out.abcd1234.part"
    >>> stage.mkdir()
    >>> _ = (stage / "result.json").write_bytes(b'{"a"')
    >>> print(out_of_room(OSError(errno.ENOSPC, "No space left on device"), stage, Path("out")))
    cannot write 'out/result.json': no space left on the device that holds 'out' (... bytes free) after writing 4 bytes of it; free some space there or choose another output folder
    >>> out_of_room(ValueError("not a disk problem"), stage, Path("out")) is None
    True
    """
    if isinstance(exc, DiskFullError):  # from a write nested in this stage: name what the user will see
        inside = "" if str(stands_for) == "." else str(stands_for) + os.sep  # 'out.tif', not './out.tif'
        text = str(exc).replace(str(stage) + os.sep, inside).replace(str(stage), str(stands_for))
        if text == str(exc):
            return None
        return DiskFullError(text, exc.errno)
    if isinstance(exc, CoregisterError) or not isinstance(exc, Exception):
        return None
    code = exc.errno if isinstance(exc, OSError) and exc.errno in _NO_ROOM else None
    files = _staged_files(stage)
    limit = _file_size_limit()
    if code is None:  # the library lost the code: judge by what is left
        free = _free_bytes(stage)
        if limit is not None and any(size >= limit for _, size, _ in files):
            code = errno.EFBIG
        elif free is not None and free < _NEARLY_FULL:
            code = errno.ENOSPC
        else:
            return None
    if code == errno.EFBIG and limit is not None and any(size >= limit for _, size, _ in files):
        size, path = max((size, path) for _, size, path in files)
    elif files:
        _, size, path = files[-1]
    else:
        size, path = 0, stage
    where = stands_for / path.relative_to(stage) if path != stage else stands_for
    done = f"after writing {size:,} bytes of it" if size else "before any of it was written"
    folder = where.parent if path != stage else where
    if code == errno.EFBIG:
        reached = (f"it reached this process's file-size limit of {limit:,} bytes (ulimit -f)" if limit is not None
                   else "it reached the largest file the file system there can hold")
        text = (f"cannot write {str(where)!r}: {reached} {done}; "
                + ("raise the limit (ulimit -f unlimited) or write a smaller file" if limit is not None
                   else "write to another file system or a smaller file"))
    elif code == getattr(errno, "EDQUOT", None):
        text = (f"cannot write {str(where)!r}: the disk quota on {str(folder)!r} is used up {done}; "
                "free some of your quota or choose another output folder")
    else:
        free = _free_bytes(stage)
        shown = f" ({free:,} bytes free)" if free is not None else ""
        text = (f"cannot write {str(where)!r}: no space left on the device that holds {str(folder)!r}{shown} {done}; "
                "free some space there or choose another output folder")
    return DiskFullError(text, code)


def refuse_existing(path: str | os.PathLike[str], *, overwrite: bool, fix: str = OVERWRITE_FIX) -> None:
    """Raise :class:`~coregister.errors.OutputExistsError` when ``path`` exists (or is a link) and ``overwrite`` is off.

    Examples
    --------
    >>> import tempfile
    >>> target = Path(tempfile.mkdtemp()) / "out.tif"
    >>> refuse_existing(target, overwrite=False)
    >>> _ = target.write_bytes(b"mine")
    >>> refuse_existing(target, overwrite=False, fix="pass --overwrite to replace it")
    Traceback (most recent call last):
    ...
    coregister.errors.OutputExistsError: '...out.tif' exists; pass --overwrite to replace it
    """
    target = Path(path)
    if not overwrite and (target.exists() or target.is_symlink()):
        raise OutputExistsError(f"{str(target)!r} exists; {fix}")


def publish(source: Path, target: Path, *, overwrite: bool, fix: str = OVERWRITE_FIX) -> None:
    """Move ``source`` to ``target`` in one rename; without ``overwrite`` an existing ``target`` is never replaced.

    Without ``overwrite`` the file is hard-linked into place (``link`` fails
    when the name exists, with no window between a check and the rename),
    falling back to check-then-rename where the file system has no links.
    """
    if overwrite:
        os.replace(source, target)
        return
    try:
        os.link(source, target)
    except FileExistsError:
        raise OutputExistsError(f"{str(target)!r} exists; {fix}") from None
    except OSError:  # no hard links here (FAT, some network shares), or a folder
        refuse_existing(target, overwrite=False, fix=fix)
        os.replace(source, target)
        return
    os.unlink(source)


@contextlib.contextmanager
def atomic_path(
    path: str | os.PathLike[str], *, overwrite: bool = True, fix: str = OVERWRITE_FIX
) -> Iterator[Path]:
    """Yield a temporary path in the target's folder; rename it to ``path`` when the block succeeds.

    The temporary file has the target's own name, inside a locked temporary
    folder beside it (:func:`part_folder`), so that libraries choosing a
    format by extension choose the right one and sidecar files they add
    stay in that folder. On any exception, an interrupt included, the
    temporary folder is removed and the target is untouched: a failed run
    leaves no half-written file; a folder left by a killed process is swept
    by the next write in the same place. With ``overwrite=False`` an
    existing ``path`` is refused (:class:`~coregister.errors.OutputExistsError`,
    its message ending with ``fix``) before anything is written, and is
    never replaced. When the file system refuses (no permission, read-only,
    ``/proc``), the :class:`~coregister.errors.UnwritableOutputError` names
    ``path``, not the hidden temporary file; a write that runs out of room
    (a full device, a quota, ``ulimit -f``) is a
    :class:`~coregister.errors.DiskFullError` (:func:`out_of_room`), also
    when the writer ignored the failure and the file stopped at the size
    limit.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> target = pathlib.Path(tempfile.mkdtemp()) / "out.txt"
    >>> with atomic_path(target) as tmp:
    ...     _ = tmp.write_text("done")
    >>> target.read_text(), sorted(p.name for p in target.parent.iterdir())
    ('done', ['out.txt'])
    >>> with atomic_path(target, overwrite=False) as tmp:
    ...     _ = tmp.write_text("again")
    Traceback (most recent call last):
    ...
    coregister.errors.OutputExistsError: '...out.txt' exists; pass overwrite=True (command line: --overwrite) to replace it
    """
    target = Path(path)
    folder = target.parent if str(target.parent) else Path(".")
    if not folder.is_dir():
        raise UnreadableInputError(f"output folder {str(folder)!r} does not exist; create it first")
    refuse_existing(target, overwrite=overwrite, fix=fix)
    fix_unwritable = "choose another output path"
    with part_folder(folder, target.name, stands_for=folder) as stage:
        tmp = stage / target.name
        try:
            yield tmp
            limit = _file_size_limit()
            if limit is not None and any(size >= limit for _, size, _ in _staged_files(stage)):
                # a writer that ignores failed writes (GDAL's TIFF, ITK's text transforms) stopped at the limit
                raise OSError(errno.EFBIG, os.strerror(errno.EFBIG), str(tmp))
            publish(tmp, target, overwrite=overwrite, fix=fix)
        except OSError as exc:  # out of room: part_folder says so (DiskFullError); other refusals name the target
            if not isinstance(exc, CoregisterError) and _names(exc, tmp, target) and out_of_room(exc, stage, folder) is None:
                raise UnwritableOutputError(
                    f"cannot write to {str(target)!r} ({_reason(exc, folder)}); {fix_unwritable}"
                ) from exc
            raise


def _names(exc: OSError, *paths: Path) -> bool:
    """Whether the error is about one of ``paths`` (the temporary file, the target)."""
    named = {str(p) for p in paths}
    return any(f is not None and os.fspath(f) in named for f in (exc.filename, exc.filename2))
