"""Errors and warnings raised by coregister.

Every error derives from :class:`CoregisterError` and from the builtin it
refines, so ``except ValueError`` keeps working for callers who do not know
this package. Messages name the offending value and the fix.
"""

from __future__ import annotations

__all__ = [
    "AmbiguousSeriesError",
    "ChecksumMismatchError",
    "ConfigError",
    "CoregisterError",
    "CoregisterWarning",
    "DataNotFoundError",
    "DiskFullError",
    "GeometryError",
    "GeometryWarning",
    "Interrupted",
    "MemoryLimitError",
    "MissingDependencyError",
    "NonUniformSpacingError",
    "OutputExistsError",
    "RegistrationFailed",
    "UnreadableInputError",
    "UnsupportedFormatError",
    "UnwritableOutputError",
]


class CoregisterError(Exception):
    """Root of every error raised by coregister."""


class ConfigError(CoregisterError, ValueError):
    """An option or configuration value is invalid."""


class UnreadableInputError(CoregisterError, OSError):
    """An input path is missing, empty, truncated or corrupt."""


class UnsupportedFormatError(CoregisterError, ValueError):
    """A file's format is not one coregister reads or writes."""


class AmbiguousSeriesError(CoregisterError, ValueError):
    """A DICOM folder holds several series and none was chosen."""


class GeometryError(CoregisterError, ValueError):
    """Spatial geometry is inconsistent, degenerate or mismatched."""


class NonUniformSpacingError(GeometryError):
    """Slices of a DICOM series are not evenly spaced."""


class OutputExistsError(CoregisterError, FileExistsError):
    """Writing would overwrite an input or an existing output the user did not give up."""


class MemoryLimitError(CoregisterError, MemoryError):
    """A read or a registration would need more memory than allowed (``COREGISTER_MAX_MEMORY``, ``--max-memory``).

    Raised before the allocation, with both figures: what the data (or the
    header) claims and what is allowed.
    """


class Interrupted(BaseException):
    """The run was stopped by a signal (Ctrl-C, SIGTERM); ``signum`` says which.

    Like :class:`KeyboardInterrupt` it is not an :class:`Exception`, so
    ``except Exception`` blocks let it through and ``finally`` blocks clean up;
    it is not a ``KeyboardInterrupt`` either, so that click does not turn it
    into its own "Aborted!".
    """

    def __init__(self, signum: int = 2) -> None:
        super().__init__(signum)
        self.signum = int(signum)


class MissingDependencyError(CoregisterError, ImportError):
    """An optional dependency a feature needs is not installed (the message names the extra to install)."""


class UnwritableOutputError(CoregisterError, OSError):
    """An output path cannot be written (read-only or special file system, no permission, a folder in the way)."""


class DiskFullError(UnwritableOutputError):
    """A write ran out of room: the device is full (``ENOSPC``), a quota is used up (``EDQUOT``) or the file reached
    the process's file-size limit (``EFBIG``, ``ulimit -f``).

    The message names the output, how much of it had been written and the
    free space or the limit; ``errno`` is the system's code for the cause.
    Nothing is left behind: the half-written file is removed.

    Examples
    --------
    >>> import errno
    >>> error = DiskFullError("cannot write 'out.nii': no space left", errno.ENOSPC)
    >>> error.errno == errno.ENOSPC, str(error)
    (True, "cannot write 'out.nii': no space left")
    """

    def __init__(self, message: str, code: int | None = None) -> None:
        super().__init__(message)  # the message alone: OSError(code, message) would print "[Errno 28] ..." first
        self.errno = code

    def __reduce__(self) -> tuple[type[DiskFullError], tuple[str, int | None]]:
        return type(self), (str(self), self.errno)  # from a batch worker's process with its code


class RegistrationFailed(CoregisterError, RuntimeError):
    """A registration could not produce any transform."""


class DataNotFoundError(CoregisterError, FileNotFoundError):
    """A test or example data set is not where it was expected."""


class ChecksumMismatchError(CoregisterError, ValueError):
    """A downloaded or copied data file does not have the sha256 its manifest records (the file is deleted)."""


class CoregisterWarning(UserWarning):
    """Root of every warning issued by coregister."""


class GeometryWarning(CoregisterWarning):
    """Geometry was read with an assumption the user should know about."""

