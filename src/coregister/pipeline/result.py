"""The typed values a registration returns: :class:`Result`, its :class:`QualityReport`, attempts and start.

Callers read these fields; nothing is dug out of dictionaries. ``extras``
holds only engine-specific figures that go into ``result.json`` to be read
by people (inlier counts, ECC coefficient, thread counts).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from enum import Enum
from types import MappingProxyType
from typing import Any

from coregister._json import JsonMethods, plain
from coregister.engines.base import LevelHistory
from coregister.transforms import Transform

__all__ = ["Attempt", "LevelHistory", "QualityReport", "Result", "Start", "Verdict"]


def _thawed(value: Any) -> Any:
    if isinstance(value, MappingProxyType | dict):
        return {k: _thawed(v) for k, v in value.items()}
    return value


def _through_constructor(value: Any) -> tuple[Any, ...]:
    """``__reduce__`` of a frozen dataclass whose ``__post_init__`` turns its mappings into read-only views."""
    return (type(value), tuple(_thawed(getattr(value, f.name)) for f in dataclasses.fields(value)))


class Verdict(str, Enum):
    """What the quality check concluded about an answer.

    ``UNCERTAIN`` is not a softer ``PASSED``: the evidence could not tell a
    right answer from a wrong one (the command line exits with code 3 for it,
    as for ``FAILED``).
    """

    PASSED = "passed"
    FAILED = "failed"
    UNCERTAIN = "uncertain"

    def __str__(self) -> str:
        return self.value


@dataclasses.dataclass(frozen=True)
class QualityReport:
    """The quality verdict on one answer, with the evidence behind it.

    Attributes
    ----------
    verdict : Verdict
    failures : tuple of str
        Why the verdict is not ``PASSED``: one sentence per finding, naming
        the figure and its threshold. Empty when it passed.
    notes : tuple of str
        Findings that did not decide the verdict (an iteration cap reached).
    measures : mapping
        What was measured: the judged metric before and after, overlap,
        information beyond chance, scales, shears, minimum Jacobian...

    Examples
    --------
    >>> report = QualityReport(Verdict.FAILED, failures=("scale 3 is outside [0.5, 2]",))
    >>> report.passed, report.warnings
    (False, ('scale 3 is outside [0.5, 2]',))
    >>> QualityReport(Verdict.PASSED).to_dict()["verdict"]
    'passed'
    """

    verdict: Verdict
    failures: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()
    measures: Mapping[str, Any] = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "verdict", Verdict(self.verdict))
        object.__setattr__(self, "failures", tuple(self.failures))
        object.__setattr__(self, "notes", tuple(self.notes))
        object.__setattr__(self, "measures", MappingProxyType(dict(self.measures)))

    def __reduce__(self) -> tuple[Any, ...]:
        """Pickle through the constructor (worker processes return reports; mapping views do not pickle)."""
        return _through_constructor(self)

    @property
    def passed(self) -> bool:
        """True only for :attr:`Verdict.PASSED`."""
        return self.verdict is Verdict.PASSED

    @property
    def warnings(self) -> tuple[str, ...]:
        """The failures, then the notes."""
        return (*self.failures, *self.notes)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {"verdict": self.verdict.value, "failures": list(self.failures), "notes": list(self.notes),
                "measures": plain(self.measures)}


@dataclasses.dataclass(frozen=True)
class Attempt:
    """One engine's try in a registration and how it was judged (``quality`` None: it raised, see ``error``)."""

    engine: str
    quality: QualityReport | None
    ncc: float
    time_s: float
    error: str | None = None

    @property
    def passed(self) -> bool:
        """Whether the attempt produced an answer that passed its quality check."""
        return self.quality is not None and self.quality.passed

    @property
    def reasons(self) -> tuple[str, ...]:
        """Why it was not kept: the check's findings, or the error."""
        if self.quality is None:
            return (self.error or "failed",)
        return self.quality.warnings

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "engine": self.engine,
            "passed": self.passed,
            "verdict": None if self.quality is None else self.quality.verdict.value,
            "ncc": self.ncc if math.isfinite(self.ncc) else None,
            "reasons": list(self.reasons),
            "time_s": self.time_s,
        }


@dataclasses.dataclass(frozen=True)
class Start:
    """Where the registration started when another engine found the starting transform (phase or features)."""

    method: str
    engine: str
    transform: Transform
    findings: Mapping[str, Any] = dataclasses.field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {"method": self.method, "engine": self.engine, "transform": self.transform.to_dict(),
                **plain(self.findings)}


_PASSED = QualityReport(Verdict.PASSED)


@dataclasses.dataclass(frozen=True)
class Result(JsonMethods):
    """What :func:`coregister.register` returns, whatever the engine.

    Attributes
    ----------
    transform : Transform
        Maps fixed-space points to moving space (resample the moving image
        onto the fixed grid with :func:`coregister.apply`).
    metrics : mapping
        ``{"before": {...}, "after": {...}}`` with ``ncc``, ``mi``, ``mse``,
        ``ssim`` and ``overlap`` over the fixed mask.
    history : tuple of LevelHistory
        Per stage and level, the metric at every iteration.
    time_s : float
        Wall time of the registration itself (reading and writing excluded).
    engine : str
        The engine that produced the answer (``sitk``, ``ecc``, ``opencv-ecc``,
        ``features``, ``phase``).
    warnings : tuple of str
        Everything worth reading: the quality check's failures first, then
        fallbacks and notes. Empty when all is well.
    quality : QualityReport
        The verdict on the answer and the measures behind it.
    seed, threads : int
        What decided the outcome besides the images and config.
    config : mapping
        The configuration that ran, as plain data.
    final_metric : float
        The optimised metric at the end (NaN where the engine has none).
    start : Start or None
        The starting transform another engine found, when one did.
    attempts : tuple of Attempt
        Every engine tried (one for a plain preset, several for ``auto``).
    extras : mapping
        Engine-specific figures (inlier count, reprojection error...) for people to read.

    Examples
    --------
    >>> from coregister import Translation
    >>> res = Result(Translation([1.0, 2.0]), {"before": {"ncc": 0.5}, "after": {"ncc": 0.9}})
    >>> res.passed, res.quality.verdict.value
    (True, 'passed')
    """

    transform: Transform
    metrics: Mapping[str, Mapping[str, float]]
    history: tuple[LevelHistory, ...] = ()
    time_s: float = 0.0
    engine: str = ""
    warnings: tuple[str, ...] = ()
    quality: QualityReport = _PASSED
    seed: int = 0
    threads: int = 1
    config: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    final_metric: float = float("nan")
    start: Start | None = None
    attempts: tuple[Attempt, ...] = ()
    extras: Mapping[str, Any] = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "metrics", MappingProxyType({k: dict(v) for k, v in self.metrics.items()}))
        object.__setattr__(self, "history", tuple(self.history))
        object.__setattr__(self, "warnings", tuple(self.warnings))
        object.__setattr__(self, "attempts", tuple(self.attempts))
        object.__setattr__(self, "config", MappingProxyType(dict(self.config)))
        object.__setattr__(self, "extras", MappingProxyType(dict(self.extras)))

    def __reduce__(self) -> tuple[Any, ...]:
        """Pickle through the constructor (worker processes return results; mapping views do not pickle).

        Examples
        --------
        >>> import pickle
        >>> from coregister import Translation
        >>> res = Result(Translation([1.0, 2.0]), {"after": {"ncc": 0.9}}, extras={"ecc": 0.9})
        >>> back = pickle.loads(pickle.dumps(res))
        >>> back.metrics["after"]["ncc"], back.extras["ecc"], back.transform.translation.tolist()
        (0.9, 0.9, [1.0, 2.0])
        """
        return _through_constructor(self)

    @property
    def passed(self) -> bool:
        """Whether the quality check passed the answer (False: exit code 3 on the command line)."""
        return self.quality.passed

    @property
    def verdict(self) -> Verdict:
        """The quality check's verdict: passed, failed or uncertain."""
        return self.quality.verdict

    def _repr_html_(self) -> str:
        """The notebook view: verdict, metrics before and after, the transform's angles, scales and translation."""
        from coregister.pipeline.display import result_html

        return result_html(self)

    def show(self, fixed: Any, moving: Any, *, edges: bool | None = None) -> Any:
        """A notebook view of this registration with its images: the pair before and after, overlaid.

        Parameters
        ----------
        fixed, moving : SpatialImage, SimpleITK.Image, nibabel image or xarray.DataArray
            The images that were registered.
        edges : bool, optional
            Draw edges (for images of different modalities) instead of the
            colour overlay; default: when the metric was mutual information.

        Returns
        -------
        RegistrationView
            Shown by Jupyter through its ``_repr_html_`` (a few small PNGs).
        """
        from coregister.pipeline.display import RegistrationView

        return RegistrationView(self, fixed, moving, edges=edges)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form: transform (with its world matrix and decomposition), metrics, verdict, history, provenance."""
        return {
            "engine": self.engine,
            "passed": self.passed,
            "verdict": self.verdict.value,
            "warnings": list(self.warnings),
            "time_s": self.time_s,
            "seed": self.seed,
            "threads": self.threads,
            "metrics": {k: dict(v) for k, v in self.metrics.items()},
            "final_metric": self.final_metric if math.isfinite(self.final_metric) else None,
            "transform": self.transform.to_dict(),
            "quality": self.quality.to_dict(),
            "start": None if self.start is None else self.start.to_dict(),
            "attempts": [a.to_dict() for a in self.attempts],
            "history": [
                {**dataclasses.asdict(h), "metric_values": list(h.metric_values), "iterations": h.iterations}
                for h in self.history
            ],
            "config": plain(self.config),
            "extras": plain(self.extras),
        }
