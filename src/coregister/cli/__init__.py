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
    "transform": "coregister.cli.transform:transform",
}


class QualityCheckFailed(click.ClickException):
    """Raised by a command whose registration failed its quality check (exit code 3)."""

    exit_code = EXIT_QUALITY


_logging_is_ours = False  # set when this module configured the root logger (the console script, not an embedding app)


def _configure_logging(verbose: int, quiet: bool) -> None:
    """Log level from ``-v``/``-q``; called again when they come after the subcommand, with the same effect."""
    global _logging_is_ours
    level = logging.ERROR if quiet else (logging.WARNING, logging.INFO, logging.DEBUG)[min(verbose, 2)]
    root = logging.getLogger()
    if not root.handlers:
        logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
        _logging_is_ours = True
    elif _logging_is_ours:
        root.setLevel(level)
    logging.getLogger("coregister").setLevel(level)


def _verbosity_after_the_command(ctx: click.Context, param: click.Parameter, value: Any) -> None:
    """``-v``/``-q`` given after a subcommand: added to the root group's settings, logging set again."""
    if not value:
        return
    settings = ctx.find_root().ensure_object(dict)
    if param.name == "verbose":
        settings["verbose"] = settings.get("verbose", 0) + value
    else:
        settings["quiet"] = True
    _configure_logging(settings.get("verbose", 0), settings.get("quiet", False))


_VERBOSITY_HELP = {"verbose": "More log output (-vv for debug); tracebacks on errors.", "quiet": "Only errors: no progress "
                   "bars, no summary (--json output still printed)."}


def _accept_verbosity(command: click.Command) -> click.Command:
    """Let ``command`` (and a group's subcommands) take ``-v``/``-q`` after its name, as the root group does."""
    names = {p.name for p in command.params}
    if "verbose" not in names:
        command.params.append(click.Option(["-v", "--verbose"], count=True, expose_value=False,
                                           callback=_verbosity_after_the_command, help=_VERBOSITY_HELP["verbose"]))
    if "quiet" not in names:
        command.params.append(click.Option(["-q", "--quiet"], is_flag=True, expose_value=False,
                                           callback=_verbosity_after_the_command, help=_VERBOSITY_HELP["quiet"]))
    if isinstance(command, click.Group):
        for sub in command.commands.values():
            _accept_verbosity(sub)
    return command


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
        return _accept_verbosity(getattr(importlib.import_module(module_name), attr))


@click.group(
    cls=_LazyGroup,
    context_settings={"help_option_names": ["-h", "--help"]},
    epilog="\b\nExample (no network needed; the data ships with nibabel and scikit-image):\n  coregister demo -o coregister-demo",
)
@click.option("-v", "--verbose", count=True, help=_VERBOSITY_HELP["verbose"] + " Also after the command.")
@click.option("-q", "--quiet", is_flag=True, help=_VERBOSITY_HELP["quiet"] + " Also after the command.")
@config_option
@click.version_option(package_name="coregister")
@click.pass_context
def cli(ctx: click.Context, verbose: int, quiet: bool) -> None:
    """Register medical volumes, geospatial rasters and photos, keeping their spatial metadata."""
    _configure_logging(verbose, quiet)
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
