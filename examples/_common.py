"""Shared bits of the example scripts: command-line options and finding the data sets.

Data sets are looked up, in order, in the folders given with ``--data-root``
(the project's ``shared/data`` layout, e.g. ``medical/antspy``, or the layout
``coregister data fetch`` creates), then in the user cache; when absent they
are downloaded (checksum verified) with ``coregister.data.fetch``, unless
``--offline`` is given.
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Sequence
from pathlib import Path

from coregister import data


def parser(description: str, *, default_out: str) -> argparse.ArgumentParser:
    """An ``argparse`` parser with the options every example shares."""
    p = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("-o", "--out", type=Path, default=Path(default_out), help=f"output folder (default {default_out})")
    p.add_argument(
        "--data-root", type=Path, action="append", default=[],
        help="folder holding the data sets (repeatable; e.g. ../shared/data); else the cache, else download",
    )
    p.add_argument("--offline", action="store_true", help="never download: fail when a data set is not found locally")
    p.add_argument("--small", action="store_true", help="a smaller, faster version of the job (what the tests run)")
    p.add_argument("-v", "--verbose", action="store_true", help="log what coregister does")
    return p


def setup(args: argparse.Namespace) -> None:
    """Logging for a script (the library only logs; the script decides where it goes)."""
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    args.out.mkdir(parents=True, exist_ok=True)


def dataset(name: str, args: argparse.Namespace) -> Path:
    """Folder of data set ``name`` (local copy first; see the module docstring)."""
    roots: Sequence[Path] = args.data_root
    return data.locate(name, roots=roots, download=not args.offline)
