"""What commands print: rich tables on a terminal, plain text in pipes, JSON with ``--json``.

Results go to stdout, everything else (logs, progress) to stderr, so
``coregister ... --json | jq`` always receives clean JSON.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from typing import Any

import click

from coregister.cli._options import root_setting

__all__ = [
    "VERDICT_WORDS",
    "echo_json",
    "echo_warning",
    "json_option",
    "print_table",
    "quality_failure_line",
    "quiet",
    "stdout_console",
]

#: how a summary words each quality verdict (keyed by the verdict's value)
VERDICT_WORDS = {"passed": "passed", "failed": "FAILED the quality check", "uncertain": "UNCERTAIN by the quality check"}


def json_option(function: Any) -> Any:
    """``--json``: print the command's result as JSON on stdout instead of a table."""
    return click.option("--json", "as_json", is_flag=True, help="Print the result as JSON on stdout.")(function)


def echo_json(value: Any) -> None:
    """Print ``value`` as indented JSON on stdout (numpy scalars and paths converted)."""
    click.echo(json.dumps(value, indent=2, default=_default))


def _default(value: Any) -> Any:
    import os

    import numpy as np

    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def quality_failure_line(quality: Any, warnings: Sequence[str], *, what: str = "the registration") -> str:
    """The exit-code-3 message: the verdict and the reasons the quality check gave first, then the other notes.

    ``quality`` is a :class:`~coregister.pipeline.QualityReport`; ``warnings``
    all of the result's (the failures among them are not repeated).

    Examples
    --------
    >>> from coregister.pipeline import QualityReport
    >>> report = QualityReport("failed", failures=("mi got worse: 0.25 before, 0.15 after",))
    >>> quality_failure_line(report, ["mi got worse: 0.25 before, 0.15 after", "fill value 0 detected"],
    ...                      what="the coregistration")
    'the coregistration failed its quality check: mi got worse: 0.25 before, 0.15 after (also noted: fill value 0 detected)'
    """
    failures = list(quality.failures)
    notes = [w for w in warnings if w not in failures]
    verdict = "failed its quality check" if quality.verdict.value == "failed" else "is uncertain by its quality check"
    if not failures:
        return f"{what} {verdict}: " + ("; ".join(notes) or "see result.json")
    text = f"{what} {verdict}: " + "; ".join(failures)
    return text + (f" (also noted: {'; '.join(notes)})" if notes else "")


def quiet() -> bool:
    """Whether the user asked for errors only (``-q``, before or after the command): no summary, no ``wrote ...``.

    A result asked for with ``--json`` is printed all the same.
    """
    return bool(root_setting("quiet"))


def echo_warning(text: str) -> None:
    """``warning: text`` on stderr, unless the user asked for quiet (``-q``: errors only)."""
    if quiet():
        return
    click.echo(f"warning: {text}", err=True)


def stdout_console() -> Any:
    """A rich console on stdout (plain text, no colour codes, when stdout is not a terminal).

    In a pipe or a log file, where rich would assume 80 columns, tables get
    120 (or ``$COLUMNS``) so that their rows stay on one line.
    """
    import os

    from rich.console import Console

    width = None
    if not sys.stdout.isatty() and not os.environ.get("COLUMNS"):
        width = 120
    return Console(file=sys.stdout, soft_wrap=False, highlight=False, width=width)


def print_table(title: str | None, columns: Sequence[str], rows: Sequence[Sequence[Any]], *, justify: Sequence[str] | None = None) -> None:
    """Print a table with rich (``justify``: one of ``left``/``right`` per column)."""
    from rich.table import Table

    table = Table(title=title, title_justify="left", show_lines=False)
    last = len(columns) - 1
    for index, column in enumerate(columns):
        table.add_column(
            column,
            justify=(justify[index] if justify else "left"),  # type: ignore[arg-type]
            no_wrap=index < last,
            overflow="fold",
        )
    for row in rows:
        table.add_row(*("" if cell is None else str(cell) for cell in row))
    stdout_console().print(table)


def command_line(ctx: click.Context) -> str:
    """The command as it ran, rebuilt from what click parsed: arguments, then every option somebody set.

    Rebuilt rather than read from ``sys.argv``, so that it is right however
    the command was started (the console script, ``python -m``, ``main([...])``)
    and shows values that came from a configuration file too (as options: the
    line reproduces the run without the file).
    """
    import shlex

    words = ctx.command_path.split()
    options: list[str] = []
    for param in ctx.command.params:
        value = ctx.params.get(param.name or "")
        if isinstance(param, click.Argument):
            words += [str(v) for v in (value if isinstance(value, tuple | list) else [value]) if v is not None]
            continue
        if not isinstance(param, click.Option) or value is None or not param.opts:
            continue
        # left out only when nobody set it: values from the command line, the environment or --config are shown
        if ctx.get_parameter_source(param.name or "") is click.core.ParameterSource.DEFAULT:
            continue
        name = max(param.opts, key=len)
        if param.is_flag:
            options.append(name if value else (param.secondary_opts or [name])[0])
        else:
            options += [name, str(value)]
    return shlex.join(words + options)
