"""Progress bars for the command line: one bar per stage and pyramid level, drawn with rich on stderr.

Bars appear only when stderr is a terminal and ``-q`` was not given; in a
pipe, a log file or a batch job the callbacks are ``None``, so the library
pays nothing for them. The library never draws anything itself: it calls the
optional ``progress(stage, level, iteration, metric)`` callback of
:func:`coregister.register` and the geo functions, and this module turns
those calls into bars.

Examples
--------
>>> import io
>>> from rich.console import Console
>>> console = Console(file=io.StringIO(), force_terminal=True, width=100)
>>> with RegistrationBars(console=console) as bars:
...     for level in range(2):
...         for iteration in range(3):
...             bars("rigid", level, iteration, -0.5 - 0.1 * iteration)
>>> bars.levels_seen
[('rigid', 0), ('rigid', 1)]
>>> "rigid" in console.file.getvalue()
True
"""

from __future__ import annotations

import contextlib
import math
import sys
from collections.abc import Callable, Iterator
from typing import Any

import click

from coregister.cli._options import root_setting

__all__ = ["RegistrationBars", "file_progress", "progress_enabled", "registration_progress"]


def progress_enabled(ctx: click.Context | None = None, *, stream: Any = None) -> bool:
    """Whether to draw bars: stderr is a terminal and the user did not ask for ``-q``."""
    if root_setting("quiet", ctx):
        return False
    stream = sys.stderr if stream is None else stream
    isatty = getattr(stream, "isatty", None)
    return bool(isatty and isatty())


def _stderr_console() -> Any:
    from rich.console import Console

    return Console(stderr=True)


class RegistrationBars:
    """A ``progress(stage, level, iteration, metric)`` callback that draws one rich bar per stage and level.

    Parameters
    ----------
    console : rich.console.Console, optional
        Where to draw (default: stderr).
    iterations : mapping of str to int, optional
        Iteration cap per stage name, used as the bar's length (a spinner-style
        bar otherwise). A level that converges early is marked complete when
        the next level starts or the block ends.
    """

    def __init__(self, *, console: Any = None, iterations: dict[str, int] | None = None) -> None:
        from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

        self._progress = Progress(
            TextColumn("{task.description:<24}"),
            BarColumn(),
            TextColumn("it {task.completed:>4.0f}"),
            TextColumn("{task.fields[metric]}"),
            TimeElapsedColumn(),
            console=console if console is not None else _stderr_console(),
            transient=False,
        )
        self._iterations = dict(iterations or {})
        self._current: tuple[str, int] | None = None
        self._task: Any = None
        self.levels_seen: list[tuple[str, int]] = []

    def __enter__(self) -> RegistrationBars:
        self._progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._finish_task()
        self._progress.stop()

    def _finish_task(self) -> None:
        if self._task is not None:
            task = next(t for t in self._progress.tasks if t.id == self._task)
            self._progress.update(self._task, total=max(task.completed, 1), completed=max(task.completed, 1))

    def __call__(self, stage: str, level: int, iteration: int, metric: float) -> None:
        key = (str(stage), int(level))
        if key != self._current:
            self._finish_task()
            self._current = key
            self.levels_seen.append(key)
            total = self._iterations.get(key[0])
            self._task = self._progress.add_task(f"{key[0]} level {key[1]}", total=total, metric="")
        text = f"metric {metric:+.5g}" if isinstance(metric, int | float) and math.isfinite(metric) else ""
        self._progress.update(self._task, completed=int(iteration) + 1, metric=text)


@contextlib.contextmanager
def registration_progress(
    ctx: click.Context | None = None, *, iterations: dict[str, int] | None = None
) -> Iterator[Callable[[str, int, int, float], None] | None]:
    """Yield a progress callback for ``register``/geo functions, or ``None`` when bars are off (pipe, ``-q``).

    Examples
    --------
    >>> with registration_progress() as progress:  # not a terminal under pytest
    ...     progress is None
    True
    """
    if not progress_enabled(ctx):
        yield None
        return
    with RegistrationBars(iterations=iterations) as bars:
        yield bars


@contextlib.contextmanager
def file_progress(ctx: click.Context | None, description: str) -> Iterator[Callable[[str, int, int], None] | None]:
    """Yield a ``progress(name, index, total)`` callback drawing one bar over files, or ``None`` when off."""
    if not progress_enabled(ctx):
        yield None
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    with Progress(
        TextColumn(description), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[name]}"),
        console=_stderr_console(),
    ) as bar:
        task = bar.add_task(description, total=None, name="")

        def update(name: str, index: int, total: int) -> None:
            bar.update(task, total=total, completed=index, name=name)

        yield update
        final = bar.tasks[0]
        bar.update(task, completed=final.total or final.completed, name="")
