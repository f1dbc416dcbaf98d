"""coregister: register medical volumes, geospatial rasters and photos, keeping their spatial metadata.

>>> import coregister as cr
>>> cr.SpatialImage  # doctest: +ELLIPSIS
<class 'coregister.image.SpatialImage'>

The public face (see ``DESIGN.md``)::

    fixed = cr.read("t1.nii.gz")
    moving = cr.read("flair.nii.gz")
    res = cr.register(fixed, moving, preset="rigid")
    out = cr.apply(res.transform, moving, reference=fixed)
    cr.write(out, "flair_in_t1.nii.gz")

Modules and subpackages reached as attributes, loaded on first use:
``cr.presets``, ``cr.preprocess``, ``cr.pipeline``, ``cr.geo`` (rasters),
``cr.medical`` (landmark and label accuracy, motion correction, halfway
registration of longitudinal pairs) and ``cr.batch`` (many pairs);
``cr.motion(series)`` realigns the volumes of a 4D series.
``dir(cr)`` lists exactly ``cr.__all__``.

Every transform maps fixed-space points to moving space (ITK's convention).
``cr.read_transform`` and ``cr.write_transform`` also read and write FSL,
elastix, ANTs, 3D Slicer and DICOM registration files, turning each tool's
own direction into this one (:mod:`coregister.io.transforms`).
"""

from __future__ import annotations

import importlib
import logging
from typing import Any

from coregister._version import __version__
from coregister.errors import (
    AmbiguousSeriesError,
    ConfigError,
    CoregisterError,
    CoregisterWarning,
    GeometryError,
    GeometryWarning,
    NonUniformSpacingError,
    OutputExistsError,
    RegistrationFailed,
    UnreadableInputError,
    UnsupportedFormatError,
)
from coregister.image import SpatialImage
from coregister.transforms import (
    Affine,
    BSpline,
    Composite,
    DisplacementField,
    Homography,
    Rigid,
    Similarity,
    Transform,
    Translation,
)

logging.getLogger(__name__).addHandler(logging.NullHandler())

# Names whose modules import heavier dependencies load on first use: a function or class of the module
# named, or the submodule itself when the name is the module's last part (``geo`` -> ``coregister.geo``).
_LAZY = {
    "read": "coregister.io",
    "write": "coregister.io",
    "register": "coregister.pipeline",
    "Result": "coregister.pipeline",
    "QualityReport": "coregister.pipeline",
    "Verdict": "coregister.pipeline",
    "apply": "coregister.resample",
    "transform_points": "coregister.resample",
    "read_transform": "coregister.io.transforms",
    "write_transform": "coregister.io.transforms",
    "jacobian_determinant": "coregister.measures",
    "batch": "coregister.batch",
    "geo": "coregister.geo",
    "medical": "coregister.medical",
    "motion": "coregister.medical.motion_correction",
    "pipeline": "coregister.pipeline",
    "preprocess": "coregister.preprocess",
    "presets": "coregister.presets",
}

__all__ = [
    "Affine",
    "AmbiguousSeriesError",
    "BSpline",
    "Composite",
    "ConfigError",
    "CoregisterError",
    "CoregisterWarning",
    "DisplacementField",
    "GeometryError",
    "GeometryWarning",
    "Homography",
    "NonUniformSpacingError",
    "OutputExistsError",
    "QualityReport",
    "RegistrationFailed",
    "Result",
    "Rigid",
    "Similarity",
    "SpatialImage",
    "Transform",
    "Translation",
    "UnreadableInputError",
    "UnsupportedFormatError",
    "Verdict",
    "__version__",
    "apply",
    "batch",
    "geo",
    "jacobian_determinant",
    "medical",
    "motion",
    "pipeline",
    "preprocess",
    "presets",
    "read",
    "read_transform",
    "register",
    "transform_points",
    "write",
    "write_transform",
]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'coregister' has no attribute {name!r}")
    mod = importlib.import_module(module)
    value = mod if module == f"{__name__}.{name}" else getattr(mod, name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    """The public face: exactly ``__all__`` (what tab completion and ``help`` show)."""
    return sorted(__all__)
