"""Stopping a SimpleITK ``Execute`` from its iteration observer, whatever the optimiser.

``StopRegistration`` asks the optimiser to end after the current iteration;
the LBFGSB, LBFGS2 and Amoeba optimisers cannot be asked (SimpleITK returns
False) and run on to convergence: seconds to minutes on a fine B-spline
level after a Ctrl-C. What ends them is an exception out of the observer:
SimpleITK prints it through :data:`sys.excepthook` and raises a
``RuntimeError`` from ``Execute``. :func:`stop_now` asks, and aborts where
asking does nothing; inside :func:`abortable` the abort prints nothing.

Examples
--------
>>> import SimpleITK as sitk
>>> image = sitk.GaussianSource(sitk.sitkFloat32, [32, 32], [6.0, 6.0], [16.0, 16.0])
>>> moving = sitk.Resample(image, sitk.TranslationTransform(2, (1.0, 0.0)))
>>> method = sitk.ImageRegistrationMethod()
>>> method.SetMetricAsMeanSquares()
>>> method.SetOptimizerAsLBFGSB(numberOfIterations=100)
>>> method.SetInitialTransform(sitk.BSplineTransformInitializer(image, [4, 4]))
>>> events = []
>>> def on_iteration():
...     events.append(method.GetOptimizerIteration())
...     stop_now(method.StopRegistration)  # LBFGSB cannot be asked: this ends Execute
>>> _ = method.AddCommand(sitk.sitkIterationEvent, on_iteration)
>>> with abortable():
...     try:
...         _ = method.Execute(image, moving)
...     except RuntimeError as exc:
...         print("error executing the Python Callable" in str(exc))
True
>>> len(events)
1
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable, Iterator
from types import TracebackType

__all__ = ["abortable", "stop_now"]


class _Abort(Exception):
    """Raised out of an iteration observer to end an optimiser that cannot be asked to stop."""


def _silent(kind: type[BaseException], value: BaseException, traceback: TracebackType | None) -> None:
    """SimpleITK prints what escapes a command through ``sys.excepthook``: the abort is not an error to show."""


def stop_now(stop: Callable[[], object]) -> None:
    """From an iteration observer: ``stop()`` (``StopRegistration``), and where it cannot stop (False), end ``Execute``.

    Call it outside any ``try`` that would catch its exception; ``Execute``
    then raises ``RuntimeError`` (SimpleITK's "error executing the Python
    Callable"), which the caller reads with what its observer noted.
    """
    if stop() is False:
        sys.excepthook = _silent  # abortable() puts the hook back
        raise _Abort("the optimiser cannot be asked to stop: its Execute is ended instead")


@contextlib.contextmanager
def abortable() -> Iterator[None]:
    """A block running ``Execute`` whose observers may :func:`stop_now`; ``sys.excepthook`` is as it was afterwards."""
    hook = sys.excepthook
    try:
        yield
    finally:
        sys.excepthook = hook
