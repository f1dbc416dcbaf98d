"""The ``coregister`` command line.

Subcommands live in their own modules and load lazily (start-up stays fast);
this module owns the group, logging set-up and the exit codes:

* 0: done
* 1: error (bad input, I/O): one line on stderr, no traceback unless ``-v``
* 2: usage error (click's own)
* 3: the registration ran but failed its quality check
* 130 (143): interrupted by Ctrl-C (SIGTERM): one line, ``coregister: interrupted``;
  every output is written whole or not at all, so nothing partial is left
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import logging
import os
import signal
import sys
import warnings
from collections.abc import Iterator
from typing import Any

import click

from coregister import _interrupt as interrupt
from coregister.cli._config import config_option
from coregister.errors import CoregisterError, Interrupted

__all__ = ["EXIT_ERROR", "EXIT_INTERRUPTED", "EXIT_OK", "EXIT_QUALITY", "EXIT_USAGE", "QualityCheckFailed", "cli", "main"]

EXIT_OK, EXIT_ERROR, EXIT_USAGE, EXIT_QUALITY = 0, 1, 2, 3
#: the shell's convention: 128 + the signal's number (SIGINT 2 -> 130, SIGTERM 15 -> 143)
EXIT_INTERRUPTED = 128 + signal.SIGINT

# name -> "module:attribute"; a command whose module is absent is not offered.
_COMMANDS = {
    "info": "coregister.cli.info:info",
    "register": "coregister.cli.register:register",
    "apply": "coregister.cli.register:apply_command",
    "evaluate": "coregister.cli.evaluate:evaluate",
    "dicom": "coregister.cli.dicom:dicom",
    "geo": "coregister.cli.geo:geo",
    "batch": "coregister.cli.batch:batch",
    "demo": "coregister.cli.demo:demo",
    "data": "coregister.cli.data:data",
    "motion": "coregister.cli.motion:motion_command",
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


def _max_memory(ctx: click.Context, param: click.Parameter, value: Any) -> None:
    """``--max-memory SIZE``: the allowed total for reads and registrations (``COREGISTER_MAX_MEMORY`` for this run)."""
    if value is None:
        return
    import os

    from coregister._memory import ENV, parse_size
    from coregister.errors import ConfigError

    try:
        parse_size(value)
    except ConfigError as exc:
        raise click.BadParameter(str(exc), ctx=ctx, param=param) from None
    os.environ[ENV] = str(value)


_MAX_MEMORY_HELP = ("Refuse reads and registrations that would need more memory than SIZE (500M, 4G, 1.5GiB; "
                    "default: COREGISTER_MAX_MEMORY, else the machine's memory or ulimit -v).")


def _max_memory_option() -> click.Option:
    return click.Option(["--max-memory"], metavar="SIZE", default=None, expose_value=False, is_eager=True,
                        callback=_max_memory, help=_MAX_MEMORY_HELP)


def _accept_verbosity(command: click.Command) -> click.Command:
    """Let ``command`` (and a group's subcommands) take ``-v``/``-q`` (and ``--max-memory``) after its name, as the root group does."""
    names = {p.name for p in command.params}
    if "max_memory" not in names:
        command.params.append(_max_memory_option())
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
@click.option("--max-memory", metavar="SIZE", default=None, expose_value=False, is_eager=True, callback=_max_memory,
              help=_MAX_MEMORY_HELP + " Also after the command.")
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


@contextlib.contextmanager
def _signals_interrupt() -> Iterator[None]:
    """SIGINT and SIGTERM raise :class:`~coregister.errors.Interrupted` (once: later ones wait for the clean-up).

    ``finally`` blocks and context managers then remove what was half
    written; the engines stop their optimisers at the next iteration.
    Outside the main thread (an embedding application) nothing is changed.
    """
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    watched = [signal.SIGINT, signal.SIGTERM]
    previous = {signum: signal.getsignal(signum) for signum in watched}

    def stop(signum: int, frame: Any) -> None:
        for other in watched:
            signal.signal(other, signal.SIG_IGN)  # a second Ctrl-C must not cut the clean-up short
        if not interrupt.request(signum):  # inside an ITK optimiser it is raised once the optimiser has stopped
            raise Interrupted(signum)

    for signum in watched:
        signal.signal(signum, stop)
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def _show_warning(message: Warning | str, category: type[Warning], filename: str, lineno: int, file: Any = None,
                  line: str | None = None) -> None:
    """A warning as one line on stderr (``coregister: warning: ...``), each text once per run, no source line."""
    text = " ".join(str(message).split())
    if text in _shown_warnings:
        return
    _shown_warnings.add(text)
    click.echo(f"coregister: warning: {text}", err=True)


_shown_warnings: set[str] = set()


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``coregister`` console script; returns the exit code."""
    args = sys.argv[1:] if argv is None else list(argv)
    verbose = any(a in ("-v", "--verbose") or (a.startswith("-v") and set(a[1:]) == {"v"}) for a in args)
    shown = warnings.showwarning
    warnings.showwarning = _show_warning
    _shown_warnings.clear()
    from coregister._memory import ENV

    allowed = os.environ.get(ENV)  # --max-memory sets it for this run only (main() may run in a longer process)
    try:
        with _signals_interrupt():
            return _run(args, verbose)
    except Interrupted as stop:
        words = "terminated" if stop.signum == signal.SIGTERM else "interrupted"
        click.echo(f"coregister: {words}", err=True)
        return 128 + stop.signum
    finally:
        warnings.showwarning = shown
        if allowed is None:
            os.environ.pop(ENV, None)
        else:
            os.environ[ENV] = allowed


def _run(args: list[str], verbose: bool) -> int:
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
