"""The ``"phase"`` engine: phase correlation behind the engine protocol.

:class:`PhaseEngine` samples the moving image on the fixed grid and runs
:func:`~coregister.phase.phase_correlate` (a translation) or, for a 2D
``rigid``/``similarity``/``affine`` stage,
:func:`~coregister.phase.fourier_mellin` (a similarity); the answer is a
:class:`~coregister.Translation` (or :class:`~coregister.Similarity`) in
world units mapping fixed-space points to moving space (ITK's direction).
The algorithms live in :mod:`coregister.phase`.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from coregister.config import ProgressCallback, RegistrationConfig, TransformModel
from coregister.engines.base import EngineOutput
from coregister.errors import GeometryError
from coregister.image import SpatialImage
from coregister.phase import fourier_mellin, phase_correlate
from coregister.transforms import Affine, Similarity, Transform, Translation

__all__ = ["PhaseEngine"]


def _resample_onto(fixed: SpatialImage, moving: SpatialImage, transform: Transform | None) -> tuple[np.ndarray, np.ndarray]:
    """The moving image (first channel) sampled on the fixed grid through ``transform`` (fixed -> moving), and its mask."""
    import SimpleITK as sitk

    moving1 = moving.channel(0) if moving.has_channels else moving
    values = moving1.replace(array=np.asarray(moving1.array, dtype=np.float64), mask=None, nodata=None)
    tx = transform.to_sitk() if transform is not None else sitk.Transform(fixed.ndim, sitk.sitkIdentity)
    reference = fixed.channel(0) if fixed.has_channels else fixed
    ref_sitk = reference.replace(array=np.zeros(reference.shape, np.float32), mask=None, nodata=None).to_sitk()
    out = sitk.Resample(values.to_sitk(), ref_sitk, tx, sitk.sitkBSpline, math.nan, sitk.sitkFloat64)
    array = sitk.GetArrayFromImage(out)
    valid_src = moving1.valid_mask()
    if not valid_src.all():
        mask_img = moving1.replace(array=valid_src.astype(np.uint8), mask=None, nodata=None).to_sitk()
        moved = sitk.GetArrayFromImage(sitk.Resample(mask_img, ref_sitk, tx, sitk.sitkNearestNeighbor, 0))
        valid = np.isfinite(array) & (moved > 0)
    else:
        valid = np.isfinite(array)
    return np.where(valid, array, 0.0), valid


class PhaseEngine:
    """Phase correlation behind the engine protocol: a translation (or similarity) in world units.

    The moving image is sampled on the fixed grid (through ``initial`` when
    given), the correction is found in fixed pixels and converted to a
    transform mapping fixed-space points to moving space (ITK's direction):
    ``moving_point = fixed_point + translation``. Stages asking for
    ``rigid``/``similarity``/``affine`` in 2D get Fourier-Mellin's similarity
    (rotation and scale); anything else gets a translation.

    Examples
    --------
    >>> import numpy as np
    >>> from scipy import ndimage
    >>> from coregister import SpatialImage
    >>> from coregister.config import RegistrationConfig, Stage, TransformModel
    >>> rng = np.random.default_rng(1)
    >>> base = ndimage.gaussian_filter(rng.normal(size=(80, 80)), 2)
    >>> fixed = SpatialImage(base, origin=(0.0, 0.0), spacing=(2.0, 2.0))
    >>> moving = fixed.replace(array=ndimage.shift(base, (0.0, 3.0), order=3))  # content 3 px = 6 mm to +x
    >>> config = RegistrationConfig(stages=(Stage(model=TransformModel.TRANSLATION),))
    >>> out = PhaseEngine().run(fixed, moving, config)
    >>> np.round(out.transform.translation, 3).tolist()                       # fixed point + 6 mm in moving
    [6.0, 0.0]
    """

    name = "phase"

    def run(
        self,
        fixed: SpatialImage,
        moving: SpatialImage,
        config: RegistrationConfig,
        *,
        initial: Transform | None = None,
        fixed_mask: np.ndarray | None = None,
        moving_mask: np.ndarray | None = None,
        progress: ProgressCallback | None = None,
    ) -> EngineOutput:
        """Estimate the transform mapping fixed-space points to moving space (see the class docstring)."""
        if fixed.ndim != moving.ndim:
            raise GeometryError(f"fixed is {fixed.ndim}D and moving {moving.ndim}D; register images of one dimension")
        warnings: list[str] = []
        if moving_mask is not None:
            moving = moving.replace(mask=np.asarray(moving_mask, bool) & moving.valid_mask())
        same_grid = initial is None and fixed.same_geometry(moving)
        if same_grid:
            moving1 = moving.channel(0) if moving.has_channels else moving
            target = np.asarray(moving1.array, dtype=np.float64)
            target_valid = moving1.valid_mask()
        else:
            target, target_valid = _resample_onto(fixed, moving, initial)
        fixed1 = fixed.channel(0) if fixed.has_channels else fixed
        reference = np.asarray(fixed1.array, dtype=np.float64)
        ref_valid = fixed1.valid_mask()
        if fixed_mask is not None:
            ref_valid &= np.asarray(fixed_mask, dtype=bool)
        model = config.stages[0].model if config.stages else TransformModel.TRANSLATION
        index_to_world = fixed.affine  # homogeneous, index in ITK order (x, y[, z])
        extras: dict[str, Any] = {}
        if fixed.ndim == 2 and model in (TransformModel.RIGID, TransformModel.SIMILARITY, TransformModel.AFFINE):
            if model is TransformModel.AFFINE:
                warnings.append("phase correlation estimates a similarity, not an affine; shear left at zero")
            found = fourier_mellin(
                reference, target, mask=ref_valid, target_mask=target_valid,
                allow_scale=model is not TransformModel.RIGID,
            )
            world = index_to_world @ found.matrix @ np.linalg.inv(index_to_world)
            transform: Transform = _linear_from_world(world)
            extras["phase"] = found.to_dict()
            reliability = found.reliability
        else:
            shift = phase_correlate(reference, target, mask=ref_valid, target_mask=target_valid)
            step = -np.asarray(shift.shift, dtype=float)[::-1]  # reference index x -> target index x - shift (ITK order)
            transform = Translation(index_to_world[:-1, :-1] @ step)
            extras["phase"] = shift.to_dict()
            reliability = shift.reliability
        if progress is not None:
            progress("phase", 0, 1, float(reliability))
        if initial is not None:
            transform = initial @ transform
        if reliability < 0.2:
            warnings.append(f"phase correlation is unreliable here (reliability {reliability:.2f} < 0.2)")
        return EngineOutput(transform=transform, engine=self.name, warnings=tuple(warnings), extras=extras)


def _linear_from_world(world: np.ndarray) -> Transform:
    """A Similarity when the homogeneous world matrix is a scaled rotation, an Affine otherwise."""
    matrix = world[:-1, :-1]
    scale = math.sqrt(abs(float(np.linalg.det(matrix))))
    rotation = matrix / scale
    if np.allclose(rotation @ rotation.T, np.eye(2), atol=1e-9) and np.linalg.det(rotation) > 0:
        return Similarity(scale, rotation, translation=world[:-1, -1])
    return Affine.from_homogeneous(world)
