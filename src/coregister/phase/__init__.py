"""Phase correlation: sub-pixel translation (also under masks) and rotation + scale (Fourier-Mellin).

Two estimates on arrays or :class:`~coregister.SpatialImage`, usable on their
own or as an initialiser for every engine:

* :func:`phase_correlate` (:mod:`coregister.phase.correlate`): the
  translation between two images (2D or 3D) from scikit-image's
  :func:`~skimage.registration.phase_cross_correlation`, refined to a small
  fraction of a pixel. Plain upsampled phase correlation is pulled towards
  whole pixels (about 0.1 px wrong at fractions 0.3-0.4 and 0.6-0.7); the
  default refinement (``refine="gradient"``, :mod:`coregister.phase.refine`)
  is a Gauss-Newton fit of shift, gain and offset on the images themselves
  (cubic B-spline interpolation of the target), which works under masks too
  (scikit-image's masked variant is integer-pixel only).
* :func:`fourier_mellin` (:mod:`coregister.phase.mellin`): rotation and
  scale from the log-polar resampled Fourier magnitudes
  (:func:`skimage.transform.warp_polar`), then the translation by
  :func:`phase_correlate`.

The engine protocol's ``"phase"`` engine
(:class:`coregister.engines.phase.PhaseEngine`) is built on these; the
geospatial workflow's tie-point windows call them directly. This room ranks
below the engines and imports none of them.

Shift convention: a :class:`PhaseShift` holds the **correction** in pixels,
in array axis order (``(rows, cols)`` in 2D): moving the target's content by
``shift`` (``scipy.ndimage.shift(target, shift)``) lays it on the reference,
as scikit-image reports it. Equivalently, reference pixel ``x`` shows the
same thing as target pixel ``x - shift``.
"""

from __future__ import annotations

from coregister.phase.correlate import PhaseShift, phase_correlate
from coregister.phase.mellin import PhaseSimilarity, fourier_mellin

__all__ = ["PhaseShift", "PhaseSimilarity", "fourier_mellin", "phase_correlate"]
