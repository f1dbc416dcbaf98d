"""The ``coregister`` command line.

Subcommands live in their own modules and load lazily (start-up stays fast);
this module owns the group, logging set-up and the exit codes:

* 0: done
* 1: error (bad input, I/O): one line on stderr, no traceback unless ``-v``
* 2: usage error (click's own)
* 3: the registration ran but failed its quality check
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
import sys
from typing import Any

import click

from coregister.cli._config import config_option
from coregister.errors import CoregisterError

__all__ = ["EXIT_ERROR", "EXIT_OK", "EXIT_QUALITY", "EXIT_USAGE", "QualityCheckFailed", "cli", "main"]

EXIT_OK, EXIT_ERROR, EXIT_USAGE, EXIT_QUALITY = 0, 1, 2, 3

# name -> "module:attribute"; a command whose module is absent is not offered.
_COMMANDS = {
    "info": "coregister.cli.info:info",
    "register": "coregister.cli.register:register",
    "apply": "coregister.cli.register:apply_command",
    "dicom": "coregister.cli.dicom:dicom",
    "geo": "coregister.cli.geo:geo",
    "batch": "coregister.cli.batch:batch",
    "demo": "coregister.cli.demo:demo",
    "data": "coregister.cli.data:data",
}


class QualityCheckFailed(click.ClickException):
    """Raised by a command whose registration failed its quality check (exit code 3)."""

    exit_code = EXIT_QUALITY


class _LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        names = [n for n, target in _COMMANDS.items() if importlib.util.find_spec(target.split(":")[0]) is not None]
        return sorted(names)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        target = _COMMANDS.get(cmd_name)
        if target is None:
            return None
        module_name, attr = target.split(":")
        if importlib.util.find_spec(module_name) is None:
            return None
        return getattr(importlib.import_module(module_name), attr)


@click.group(
    cls=_LazyGroup,
    context_settings={"help_option_names": ["-h", "--help"]},
    epilog="\b\nExample (no network needed; the data ships with nibabel and scikit-image):\n  coregister demo -o coregister-demo",
)
@click.option("-v", "--verbose", count=True, help="More log output (-vv for debug); tracebacks on errors.")
@click.option("-q", "--quiet", is_flag=True, help="Only errors; no progress bars.")
@config_option
@click.version_option(package_name="coregister")
@click.pass_context
def cli(ctx: click.Context, verbose: int, quiet: bool) -> None:
    """Register medical volumes, geospatial rasters and photos, keeping their spatial metadata."""
    level = logging.ERROR if quiet else (logging.WARNING, logging.INFO, logging.DEBUG)[min(verbose, 2)]
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    logging.getLogger("coregister").setLevel(level)
    ctx.ensure_object(dict)
    ctx.obj["verbose"] = verbose
    ctx.obj["quiet"] = quiet


def _one_line_error(exc: BaseException) -> None:
    """Print ``exc`` as exactly one line on stderr (library messages may span lines)."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    click.echo(f"coregister: error: {text}", err=True)


def usage_line(exc: click.UsageError) -> str:
    """A usage error as one line: ``coregister register: invalid value for '--preset': ... (see coregister register --help)``.

    Click's own display is three lines (usage, hint, error). A bad value
    that came from ``--config FILE.toml`` is named by file, table and key.
    """
    from coregister.cli._config import config_origin

    command = exc.ctx.command_path if exc.ctx is not None else "coregister"
    message = " ".join(exc.format_message().split()).removesuffix(".")
    if message[:1].isupper() and message[1:2].islower():  # "Invalid value", not "DICOM"
        message = message[0].lower() + message[1:]
    origin = config_origin(exc)
    if origin is not None:
        message = f"{origin}: {message}"
    return f"{command}: {message} (see {command} --help)"


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``coregister`` console script; returns the exit code."""
    args = sys.argv[1:] if argv is None else list(argv)
    verbose = any(a in ("-v", "--verbose") or (a.startswith("-v") and set(a[1:]) == {"v"}) for a in args)
    try:
        rv: Any = cli.main(args=args, prog_name="coregister", standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("coregister: aborted", err=True)
        return EXIT_ERROR
    except click.UsageError as exc:
        click.echo(usage_line(exc), err=True)
        return exc.exit_code
    except click.ClickException as exc:
        exc.show()
        return exc.exit_code
    except CoregisterError as exc:
        if verbose:
            raise
        _one_line_error(exc)
        return EXIT_ERROR
    except (OSError, MemoryError) as exc:
        if verbose:
            raise
        _one_line_error(exc)
        return EXIT_ERROR
    return rv if isinstance(rv, int) else EXIT_OK


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())


def _console() -> None:
    """Console-script wrapper: exits with :func:`main`'s code."""
    sys.exit(main())
