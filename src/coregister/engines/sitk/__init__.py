"""SimpleITK intensity engine: multi-resolution registration on ``SimpleITK.ImageRegistrationMethod``.

Each :class:`~coregister.config.Stage` (one transform model) is optimised
over a resolution pyramid, coarse to fine; stages chain as ITK chains them.
Every transform maps fixed-space points to moving space (ITK's convention).

Modules, in the order a registration uses them:

* :mod:`~coregister.engines.sitk.engine`: :class:`SitkEngine`, which runs
  the stages level by level, initialises the first, and composes the answer;
* :mod:`~coregister.engines.sitk.levels`: the levels of a stage
  (:func:`plan_levels`), and each level's iterations and sample points;
* :mod:`~coregister.engines.sitk.pyramid`: each level's bin-averaged,
  smoothed images and masks, built on a second thread while ITK optimises;
* :mod:`~coregister.engines.sitk.method`: one level's
  ``ImageRegistrationMethod`` (transform, metric, optimiser, sampling) and
  the rounding of its answer;
* :mod:`~coregister.engines.sitk.threads`: SimpleITK's process-wide thread
  count while a registration runs.
* :mod:`~coregister.engines.sitk.observer`: stopping ``Execute`` from its
  iteration observer (a Ctrl-C, a failed progress callback), also where the
  optimiser (LBFGSB) cannot be asked to stop.
"""

from __future__ import annotations

from coregister.engines.sitk.engine import SitkEngine
from coregister.engines.sitk.levels import LevelPlan, plan_levels

__all__ = ["LevelPlan", "SitkEngine", "plan_levels"]
