"""A registration's memory, estimated before it starts: refused, or run on a coarser grid, when it would not fit.

The estimate counts what a run adds to the inputs it is given: single-channel
float copies of both images (the engines' and the quality check's), their
SimpleITK copies and pyramids (each level smoothed and shrunk; the levels
of a 3D pyramid with factors 8, 4, 2, 1 add about 15 % to the finest), the
masks, and the output a caller then writes (the moving image resampled
onto the fixed grid, in float64 before it is cast back). The metric's
samples are a fraction of the finest level and are counted in its share.
The allowed total comes from :func:`coregister._memory.max_memory`.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from typing import Any

import numpy as np

from coregister._memory import format_bytes, max_memory
from coregister.errors import MemoryLimitError
from coregister.image import SpatialImage

__all__ = ["MemoryEstimate", "coarsened", "estimate_peak", "fit_to_memory"]

logger = logging.getLogger(__name__)

#: bytes a run adds per voxel of the fixed image: grey float32 copy, SimpleITK float32 copy, its pyramid (two
#: images per level, ~1.15 x the finest), a mask byte, the resampled output in float64 and its cast, a quality copy
FIXED_BYTES_PER_VOXEL = 4 + 4 + 2 * 4 * 1.15 + 1 + 8 + 4 + 4
#: bytes a run adds per voxel of the moving image: grey and SimpleITK copies, the pyramid, a mask byte
MOVING_BYTES_PER_VOXEL = 4 + 4 + 2 * 4 * 1.15 + 1
#: bytes a displacement-field stage (``syn``) adds per voxel of the finest level it runs on: ITK's demons hold the
#: field, its update, the warped image and their smoothing buffers in float64 vectors (Colin27 -> MNI152 at 1 mm:
#: 1.77 GB at the peak with a 1 mm level, 0.63 GB without: 160 bytes per voxel of the 7.2 million)
FIELD_BYTES_PER_VOXEL = 160
#: the largest block a grid is coarsened by to fit (per axis)
MAX_FACTOR = 8


@dataclasses.dataclass(frozen=True)
class MemoryEstimate:
    """A registration's estimated peak (bytes) beside what is allowed.

    Examples
    --------
    >>> MemoryEstimate(inputs=1e9, working=3e9, allowed=2e9).fits
    False
    >>> MemoryEstimate(inputs=1e9, working=3e9, allowed=2e9).describe()
    'about 4 GB (inputs 1 GB, registration 3 GB), more than the 2 GB allowed'
    """

    inputs: float
    working: float
    allowed: float

    @property
    def peak(self) -> float:
        return self.inputs + self.working

    @property
    def fits(self) -> bool:
        return self.peak <= self.allowed

    def describe(self) -> str:
        relation = "within" if self.fits else "more than"
        return (f"about {format_bytes(self.peak)} (inputs {format_bytes(self.inputs)}, registration "
                f"{format_bytes(self.working)}), {relation} the {format_bytes(self.allowed)} allowed")


def _voxels(image: SpatialImage) -> int:
    return math.prod(image.shape)


def estimate_peak(
    fixed: SpatialImage, moving: SpatialImage, *, factor: int = 1, field_voxels: float = 0.0
) -> MemoryEstimate:
    """The estimated peak of registering ``moving`` onto ``fixed`` (grids coarsened by ``factor`` per axis).

    The output (``moving`` resampled onto the full fixed grid) is counted at
    full size whatever the factor: a coarser registration still writes a
    full-size result. ``field_voxels`` is the finest level of a
    displacement-field stage at full resolution
    (:func:`~coregister.engines.sitk.engine.field_level_voxels`), counted at
    :data:`FIELD_BYTES_PER_VOXEL`.

    Examples
    --------
    >>> import numpy as np
    >>> image = SpatialImage(np.broadcast_to(np.zeros((), np.uint8), (256, 256, 256)), origin=(0, 0, 0), spacing=(1, 1, 1))
    >>> estimate = estimate_peak(image, image)
    >>> from coregister._memory import format_bytes
    >>> format_bytes(estimate.inputs), format_bytes(estimate.working)  # two 16.8 MB volumes of uint8
    ('33.6 MB', '879 MB')
    >>> format_bytes(estimate_peak(image, image, field_voxels=image.array.size).working)  # syn at full resolution
    '3.56 GB'
    """
    shrink = float(factor) ** fixed.ndim
    n_fixed, n_moving = _voxels(fixed), _voxels(moving)
    output = n_fixed * 12  # the resampled moving image in float64 and its cast
    working = (n_fixed * (FIXED_BYTES_PER_VOXEL - 12)) / shrink + (n_moving * MOVING_BYTES_PER_VOXEL) / shrink + output
    working += float(field_voxels) * FIELD_BYTES_PER_VOXEL / shrink
    inputs = float(np.asarray(fixed.array).nbytes + np.asarray(moving.array).nbytes)
    return MemoryEstimate(inputs=inputs, working=float(working), allowed=float(max_memory()))


def coarsened(image: SpatialImage, factor: int) -> SpatialImage:
    """``image`` on a grid ``factor`` times coarser per axis: each output voxel the mean of a block (``BinShrink``).

    The geometry stays in the same world: the origin moves to the first
    block's centre and the spacing grows by ``factor``, so a transform found
    on it applies to the full-resolution image. Channels are averaged to one
    first; a mask keeps the blocks whose voxels are mostly valid.

    Examples
    --------
    >>> import numpy as np
    >>> image = SpatialImage(np.arange(16, dtype=np.float32).reshape(4, 4), origin=(0, 0), spacing=(1, 1))
    >>> small = coarsened(image, 2)
    >>> small.array.tolist(), small.origin, small.spacing
    ([[2.5, 4.5], [10.5, 12.5]], (0.5, 0.5), (2.0, 2.0))
    """
    import SimpleITK as sitk

    values = np.asarray(image.array, dtype=np.float32)
    if image.has_channels:
        values = values.mean(axis=-1)
    flat = image.replace(array=values, mask=None, nodata=None)
    shrunk = SpatialImage.from_sitk(sitk.BinShrink(flat.to_sitk(), [factor] * image.ndim))
    mask = None
    if image.mask is not None or image.nodata is not None:
        valid = image.replace(array=image.valid_mask().astype(np.float32), mask=None, nodata=None)
        mask = sitk.GetArrayFromImage(sitk.BinShrink(valid.to_sitk(), [factor] * image.ndim)) > 0.5
    return shrunk.replace(mask=mask, crs=image.crs)


def fit_to_memory(
    fixed: SpatialImage, moving: SpatialImage, masks: tuple[Any, Any], *, allow_coarser: bool, field_voxels: float = 0.0
) -> tuple[SpatialImage, SpatialImage, tuple[Any, Any], str | None]:
    """The pair to register within the allowed memory: as given, coarsened (when allowed), or a refusal.

    Returns the images, their masks (coarsened alike) and a note saying what
    was done (None when the pair fits as it is).

    Raises
    ------
    MemoryLimitError
        The estimate exceeds the allowed memory and coarsening is not allowed
        (or no factor up to 8 fits); the message gives both figures.
    """
    estimate = estimate_peak(fixed, moving, field_voxels=field_voxels)
    if estimate.fits:
        return fixed, moving, masks, None
    unit = "pixels" if fixed.ndim == 2 else "voxels"
    if not allow_coarser:
        raise MemoryLimitError(
            f"registering {' x '.join(map(str, moving.size))} onto {' x '.join(map(str, fixed.size))} {unit} needs "
            f"{estimate.describe()}; raise the limit (COREGISTER_MAX_MEMORY, --max-memory), or let the registration "
            "work on a coarser grid (fit_memory=True, --fit-memory)"
        )
    for factor in range(2, MAX_FACTOR + 1):
        smaller = estimate_peak(fixed, moving, factor=factor, field_voxels=field_voxels)
        if smaller.fits:
            break
    else:
        raise MemoryLimitError(
            f"registering {' x '.join(map(str, moving.size))} onto {' x '.join(map(str, fixed.size))} {unit} needs "
            f"{estimate.describe()}, and still {smaller.describe()} on a grid {MAX_FACTOR} times coarser; "
            "raise the limit (COREGISTER_MAX_MEMORY, --max-memory)"
        )
    shrunk = []
    for image, mask in zip((fixed, moving), masks, strict=True):
        if mask is not None:
            values = mask.array if isinstance(mask, SpatialImage) else np.asarray(mask)
            image = image.replace(mask=np.asarray(values, dtype=bool) & image.valid_mask())
        shrunk.append(coarsened(image, factor))
    note = (f"the registration ran on grids {factor} times coarser per axis to fit in memory: {estimate.describe()} "
            f"at full resolution, {smaller.describe()} coarsened; the answer maps world points, so it applies to the "
            "full-resolution images")
    logger.info(note)
    return shrunk[0], shrunk[1], (None, None), note
