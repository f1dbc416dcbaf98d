"""Typed registration configuration: enums shared by the API and the command line, and frozen stage configs.

The command line builds its ``--metric``, ``--preset``, ``--interpolation``
choices from these enums, so the two cannot drift. Presets are functions in
:mod:`coregister.presets` that return a :class:`RegistrationConfig`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from enum import Enum
from typing import Any

from coregister.errors import ConfigError

__all__ = [
    "BinaryInputs",
    "Detector",
    "EngineName",
    "Initialisation",
    "Interpolation",
    "Metric",
    "Optimizer",
    "ProgressCallback",
    "RegistrationConfig",
    "Stage",
    "TransformModel",
]


class _StrEnum(str, Enum):
    def __str__(self) -> str:
        return self.value

    @classmethod
    def parse(cls, value: Any) -> Any:
        """Accept a member or its value (case-insensitive, ``_`` or ``-``); a clear error otherwise."""
        if isinstance(value, cls):
            return value
        text = str(value).strip().lower().replace("_", "-")
        for member in cls:
            if member.value == text:
                return member
        choices = ", ".join(m.value for m in cls)
        raise ConfigError(f"{value!r} is not a valid {cls.__name__.lower()}; choose one of: {choices}")


class Metric(_StrEnum):
    """Similarity measure optimised by an intensity engine."""

    MATTES = "mattes"  #: Mattes mutual information (multimodal; default)
    MI = "mi"  #: joint-histogram mutual information
    NCC = "ncc"  #: normalised correlation (monomodal)
    MSE = "mse"  #: mean squares (same modality and scaling)
    ECC = "ecc"  #: enhanced correlation coefficient (Evangelidis & Psarakis 2008)


class Optimizer(_StrEnum):
    """Optimiser driving an intensity engine."""

    GRADIENT_DESCENT = "gradient-descent"
    REGULAR_STEP = "regular-step"
    LBFGSB = "lbfgsb"
    GAUSS_NEWTON = "gauss-newton"  #: ECC engine


class TransformModel(_StrEnum):
    """The transform family a stage estimates."""

    TRANSLATION = "translation"
    RIGID = "rigid"
    SIMILARITY = "similarity"
    AFFINE = "affine"
    BSPLINE = "bspline"
    SYN = "syn"  #: a dense displacement field, diffeomorphic (the ``syn`` preset's deformable stage)
    HOMOGRAPHY = "homography"


class Interpolation(_StrEnum):
    """How :func:`coregister.apply` samples the moving image."""

    LINEAR = "linear"
    BSPLINE = "bspline"
    NEAREST = "nearest"
    LABEL_GAUSSIAN = "label-gaussian"


class BinaryInputs(_StrEnum):
    """What an intensity engine registers when both images are binary masks (two values each)."""

    AS_IS = "as-is"  #: the masks' own values
    DISTANCE = "distance"  #: each mask's signed distance to its boundary (mm, clipped), smooth on both sides
    SMOOTH = "smooth"  #: each mask smoothed by a Gaussian


class Initialisation(_StrEnum):
    """How the first stage's starting transform is found."""

    NONE = "none"  #: identity (or the given initial transform)
    GEOMETRY = "geometry"  #: align the image centres
    MOMENTS = "moments"  #: align the centres of mass
    PHASE = "phase"  #: translation from phase correlation
    FEATURES = "features"  #: 2D: feature matching (ORB/SIFT + RANSAC)


class Detector(_StrEnum):
    """Keypoint detector of the feature engine (a stage's ``extra`` ``"detector"``)."""

    ORB = "orb"  #: oriented FAST + rotated BRIEF (default; binary descriptors, fast)
    SIFT = "sift"  #: scale-invariant feature transform (slower, more robust to scale and contrast)
    AKAZE = "akaze"  #: where the installed OpenCV has it
    BRISK = "brisk"  #: where the installed OpenCV has it


class EngineName(_StrEnum):
    """The engine that produced (or should produce) a transform."""

    AUTO = "auto"  #: the fallback chain (preset "auto"): the pipeline tries engines in turn
    SITK = "sitk"
    ECC = "ecc"
    OPENCV_ECC = "opencv-ecc"
    FEATURES = "features"
    PHASE = "phase"


ProgressCallback = Callable[[str, int, int, float], None]
"""``progress(stage, level, iteration, metric)``: called from the engines' iteration events."""


@dataclasses.dataclass(frozen=True)
class Stage:
    """One stage of a registration: a transform model optimised over a resolution pyramid.

    ``None`` for ``shrink_factors``/``smoothing_sigmas_mm`` means "chosen from
    the image size and spacing".
    """

    model: TransformModel = TransformModel.RIGID
    metric: Metric = Metric.MATTES
    optimizer: Optimizer = Optimizer.REGULAR_STEP
    shrink_factors: tuple[int, ...] | None = None
    smoothing_sigmas_mm: tuple[float, ...] | None = None
    iterations: int = 200
    learning_rate: float | None = None
    min_step: float = 1e-4
    convergence_window: int = 10
    convergence_min_value: float = 1e-6
    sampling_fraction: float = 0.1
    histogram_bins: int = 32
    bspline_mesh_mm: float = 40.0
    extra: tuple[tuple[str, Any], ...] = ()
    #: random sample points per level (None: ``sampling_fraction`` of the level's voxels)
    max_samples: int | None = None
    #: SimpleITK engine: random sample points per level on the levels before the stage's finest (None: ``max_samples``)
    coarse_max_samples: int | None = None
    #: iteration cap of each level, coarse to fine (None: ``iterations`` at every level)
    iterations_per_level: tuple[int, ...] | None = None
    #: where a level subsamples, draw points only from this fraction of fixed voxels with the strongest gradient
    edge_sampling_fraction: float | None = None
    #: automatic levels (``shrink_factors`` None) limited to factors within [finest_factor, coarsest_factor]
    finest_factor: int = 1
    coarsest_factor: int | None = None
    #: with ``smoothing_sigmas_mm`` None, Gaussian sigma of each level in units of that level's voxel
    smoothing_voxels: float = 0.5
    #: B-spline: times the control-point mesh is halved over the stage's levels, the finest level ending on
    #: ``bspline_mesh_mm`` (0: that one mesh on every level)
    bspline_refinements: int = 0
    #: deformable stages: smallest Jacobian determinant the answer may reach on the fixed grid; a B-spline (or
    #: field) whose determinant falls below it is scaled back towards the identity until it does not (None: no guard)
    min_jacobian: float | None = None
    #: B-spline stages (L-BFGS-B): bound every coefficient by Choi & Lee's injectivity condition (the mesh spacing
    #: over 2.48 in 3D, 2.05 in 2D), and where a level's spline ends at the bound (or the mesh is refined), optimise
    #: a fresh one on the next level, composed on it (Rueckert et al. 2006): the map cannot fold, and the levels
    #: together can move further than one bounded spline; ``min_jacobian`` is then checked on the composition
    injective: bool = False
    #: displacement-field stages: Gaussian sigma (voxels of the level) applied to each update (fluid-like)
    update_sigma_voxels: float = 0.0
    #: displacement-field stages: Gaussian sigma (voxels of the level) applied to the whole field (elastic-like)
    field_sigma_voxels: float = 1.5
    #: displacement-field stages, automatic levels: the finest level's voxel is at least this size (world units;
    #: None: the image's own)
    finest_spacing_mm: float | None = None
    #: displacement-field stages: iterations of one more level on the image's own voxels where
    #: ``finest_spacing_mm`` stopped the levels above them and the image has at most 2^24 voxels (0: none)
    full_resolution_iterations: int = 0

    def replace(self, **changes: Any) -> Stage:
        """A copy with some fields replaced."""
        return dataclasses.replace(self, **changes)

    @property
    def runs_demons(self) -> bool:
        """A displacement-field stage on mean squares: ITK's demons, which compare intensities.

        Examples
        --------
        >>> Stage(model="syn", metric="mse").runs_demons, Stage(model="syn", metric="mattes").runs_demons
        (True, False)
        """
        return TransformModel.parse(self.model) is TransformModel.SYN and Metric.parse(self.metric) is Metric.MSE


@dataclasses.dataclass(frozen=True)
class RegistrationConfig:
    """Everything that decides a registration's outcome, besides the images.

    Same config, same images, same seed: same transform.
    """

    stages: tuple[Stage, ...] = (Stage(),)
    initialisation: Initialisation = Initialisation.GEOMETRY
    rotation_search: bool = False
    engine: EngineName = EngineName.SITK
    #: how a pair of binary masks is registered (the deformable presets: as signed distance maps)
    binary_inputs: BinaryInputs = BinaryInputs.AS_IS
    seed: int = 0
    threads: int | None = None
    name: str = "custom"

    def replace(self, **changes: Any) -> RegistrationConfig:
        """A copy with some fields replaced."""
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (enums as their values)."""

        def convert(value: Any) -> Any:
            if isinstance(value, Enum):
                return value.value
            if isinstance(value, tuple | list):
                return [convert(v) for v in value]
            if dataclasses.is_dataclass(value) and not isinstance(value, type):
                return {f.name: convert(getattr(value, f.name)) for f in dataclasses.fields(value)}
            return value

        return convert(self)
