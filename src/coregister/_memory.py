"""How much memory coregister may allocate, and the checks made before allocating.

Readers compare what a header claims with what the file can hold (the file's
size for raw data, a compression bound for compressed data) and with the
allowed total, before a single pixel is read; the pipeline estimates a
registration's peak before it starts. The allowed total is, in order:
``COREGISTER_MAX_MEMORY`` (``--max-memory`` on the command line sets it;
``500M``, ``4G``, ``1.5GiB`` or a number of bytes), else the smaller of the
machine's physical memory and the process's address-space limit
(``ulimit -v``) less what the process already maps.

At the bottom of the package beside :mod:`coregister._files`: it uses
nothing but :mod:`coregister.errors`.
"""

from __future__ import annotations

import os
import re

from coregister.errors import ConfigError, MemoryLimitError

__all__ = ["ENV", "check_allocation", "format_bytes", "max_memory", "parse_size"]

#: the environment variable that sets the allowed total (``--max-memory`` sets it for the command line's process)
ENV = "COREGISTER_MAX_MEMORY"

_UNITS = {"": 1, "b": 1, "k": 10**3, "kb": 10**3, "kib": 2**10, "m": 10**6, "mb": 10**6, "mib": 2**20,
          "g": 10**9, "gb": 10**9, "gib": 2**30, "t": 10**12, "tb": 10**12, "tib": 2**40}  # fmt: skip


def parse_size(text: str | int | float) -> int:
    """Bytes from ``"500M"``, ``"4G"``, ``"1.5GiB"``, ``"2000000"`` (K/M/G/T are powers of 1000, KiB/MiB/GiB of 1024).

    Examples
    --------
    >>> parse_size("500M"), parse_size("1.5GiB"), parse_size(4096)
    (500000000, 1610612736, 4096)
    >>> parse_size("lots")
    Traceback (most recent call last):
    ...
    coregister.errors.ConfigError: memory size 'lots' is not a size; give bytes or a number with K, M, G or T (500M, 4G, 1.5GiB)
    """
    if isinstance(text, int | float) and not isinstance(text, bool):
        value, unit = float(text), ""
    else:
        match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+(?:[eE][0-9]+)?)\s*([A-Za-z]*)\s*", str(text))
        if match is None or match.group(2).lower() not in _UNITS:
            raise ConfigError(
                f"memory size {text!r} is not a size; give bytes or a number with K, M, G or T (500M, 4G, 1.5GiB)"
            )
        value, unit = float(match.group(1)), match.group(2).lower()
    size = int(value * _UNITS[unit])
    if size <= 0:
        raise ConfigError(f"memory size {text!r} must be positive")
    return size


def format_bytes(size: float) -> str:
    """``1.5 GB``, ``200 MB``, ``12 kB`` (powers of 1000, three significant figures).

    Examples
    --------
    >>> format_bytes(2_147_483_648), format_bytes(1400), format_bytes(10**13)
    ('2.15 GB', '1.4 kB', '10 TB')
    """
    for unit, factor in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if abs(size) >= factor:
            return f"{size / factor:.3g} {unit}"
    return f"{int(size)} B"


def _physical_memory() -> int | None:
    try:
        return int(os.sysconf("SC_PAGE_SIZE")) * int(os.sysconf("SC_PHYS_PAGES"))
    except (AttributeError, ValueError, OSError):  # not POSIX
        return None


def _address_space_left() -> int | None:
    """What ``ulimit -v`` (RLIMIT_AS) still leaves this process, or None without such a limit."""
    try:
        import resource
    except ImportError:  # pragma: no cover - Windows
        return None
    soft, _ = resource.getrlimit(resource.RLIMIT_AS)
    if soft == resource.RLIM_INFINITY:
        return None
    mapped = 0
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmSize:"):
                    mapped = int(line.split()[1]) * 1024
                    break
    except OSError:  # no /proc: the limit alone
        pass
    return max(0, int(soft) - mapped)


def max_memory() -> int:
    """The bytes a read or a registration may allocate (see the module docstring for where it comes from).

    Examples
    --------
    >>> import os
    >>> os.environ[ENV] = "2G"
    >>> max_memory()
    2000000000
    >>> del os.environ[ENV]
    """
    text = os.environ.get(ENV, "").strip()
    if text:
        return parse_size(text)
    bounds = [b for b in (_physical_memory(), _address_space_left()) if b is not None]
    return min(bounds) if bounds else 2**63 - 1


def check_allocation(claimed: float, *, what: str, fix: str = "") -> None:
    """Raise :class:`~coregister.errors.MemoryLimitError` when ``claimed`` bytes exceed :func:`max_memory`.

    The message gives both figures and where the limit comes from.

    Examples
    --------
    >>> import os
    >>> os.environ[ENV] = "1M"
    >>> check_allocation(500_000, what="the pixels of 'a.nii'")
    >>> check_allocation(2**31, what="the pixels of 'a.nii' (header: 1024 x 1024 x 512 int32)", fix="check the header")
    Traceback (most recent call last):
    ...
    coregister.errors.MemoryLimitError: the pixels of 'a.nii' (header: 1024 x 1024 x 512 int32) would need 2.15 GB, more than the 1 MB allowed (COREGISTER_MAX_MEMORY=1M); check the header
    >>> del os.environ[ENV]
    """
    allowed = max_memory()
    if claimed <= allowed:
        return
    text = os.environ.get(ENV, "").strip()
    source = f"{ENV}={text}" if text else f"this machine's memory or ulimit -v; raise it with {ENV} or --max-memory"
    raise MemoryLimitError(
        f"{what} would need {format_bytes(claimed)}, more than the {format_bytes(allowed)} allowed ({source})"
        + (f"; {fix}" if fix else "")
    )
