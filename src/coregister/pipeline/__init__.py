"""The registration pipeline: initialise -> engine -> quality verdict -> fallback -> :class:`Result`, once.

Everything that registers goes through here: :func:`coregister.register`,
the command line, the batch runner and the geospatial workflows. Engines
(:mod:`coregister.engines`) only turn images into a transform; this package
measures that answer, judges it (:mod:`~coregister.pipeline.quality`), falls
back to another engine when asked (:mod:`~coregister.pipeline.fallback`),
and returns one typed :class:`Result`.

Modules, in the order a registration passes through them:

* :mod:`~coregister.pipeline.register`: :func:`register`, the entry point (and
  :func:`verify`, the same judgement of a transform found elsewhere);
* :mod:`~coregister.pipeline.series`: :func:`register_series`, the same steps
  for each image of a series onto one reference (each starting from the
  previous answer), one judged :class:`Result` per image;
* :mod:`~coregister.pipeline.routing`: :func:`configure` (preset + options ->
  configuration) and :func:`route` (configuration -> engine);
* :mod:`~coregister.pipeline.initialise`: a start found by another engine;
* :mod:`~coregister.pipeline.attempt`: the prepared pair, one engine run and
  its judgement;
* :mod:`~coregister.pipeline.fallback`: the chain behind ``preset="auto"``;
* :mod:`~coregister.pipeline.quality`: the quality check;
* :mod:`~coregister.pipeline.result`: :class:`Result`, :class:`QualityReport`,
  :class:`Verdict`, :class:`Attempt`, :class:`Start`.
"""

from __future__ import annotations

from coregister.pipeline.register import pyramid_threads, register, run_auto, verify
from coregister.pipeline.result import Attempt, QualityReport, Result, Start, Verdict
from coregister.pipeline.routing import configure, route
from coregister.pipeline.series import register_series

__all__ = ["Attempt", "QualityReport", "Result", "Start", "Verdict", "configure", "pyramid_threads", "register",
           "register_series", "route", "run_auto", "verify"]
