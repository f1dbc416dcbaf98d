"""ECC engine: the enhanced correlation coefficient maximised by Gauss-Newton iterations, in 2D and 3D.

The enhanced correlation coefficient (Evangelidis & Psarakis, *Parametric
image alignment using enhanced correlation coefficient maximization*, IEEE
TPAMI 30(10), 2008) is the correlation of the zero-mean, unit-norm fixed and
warped moving intensities, so it ignores gain and offset. It is maximised by
the paper's closed-form Gauss-Newton step (the update OpenCV's
``findTransformECC`` uses), here in **physical space** and in 2D or 3D:

* sample points are fixed-image pixel centres in world coordinates
  (origin, spacing and direction honoured), the answer is a
  :mod:`coregister.transforms` value mapping fixed-space points to moving space;
* the warp is updated compositionally, ``P <- P . exp(sum_k dp_k G_k)``, with Lie
  generators ``G_k`` of the model (translation, rigid, similarity, affine,
  2D homography) in normalised fixed coordinates, so rotations stay rotations;
* a resolution pyramid (Gaussian smoothing in world units, then subsampling)
  brings the answer from coarse to fine;
* fixed and moving masks, nodata and the moving image's edge are honoured:
  a sample counts only where the fixed mask holds and it lands inside the
  moving image's valid region (pyramid levels use normalised convolution,
  so masked-out pixels, such as a warped black border, never leak in).

:class:`EccEngine` is the :class:`~coregister.engines.base.Engine` behind
``metric="ecc"``; :func:`ecc_register` is the same thing as a plain function.

Modules, from the engine down:

* :mod:`~coregister.engines.ecc.engine`: :func:`ecc_register` and
  :class:`EccEngine`: stages, initialisation, the warp-fill refit;
* :mod:`~coregister.engines.ecc.solver`: the Gauss-Newton iterations of one
  level, and the rotation search;
* :mod:`~coregister.engines.ecc.pyramid`: :func:`default_pyramid` and the
  levels (masked smoothing, fixed samples, moving gradients).

The transform models themselves (generators, projection, transform values)
are shared with the OpenCV-ECC and feature engines, in
:mod:`coregister.engines._models`.
"""

from __future__ import annotations

from coregister.engines.ecc.engine import EccEngine, ecc_register
from coregister.engines.ecc.pyramid import default_pyramid

__all__ = ["EccEngine", "default_pyramid", "ecc_register"]
