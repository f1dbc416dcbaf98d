"""What the geo workflows return: one frozen, JSON-serialisable result per run."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Any

import numpy as np

from coregister._json import JsonMethods, plain
from coregister.pipeline import QualityReport, Verdict
from coregister.transforms import Transform

__all__ = ["GeoResult", "WindowMatch"]

_PASSED = QualityReport(Verdict.PASSED)


@dataclasses.dataclass(frozen=True)
class WindowMatch:
    """One window matched by phase correlation (a tie point in ``local`` mode).

    Shifts are the **correction applied to the target**: moving the
    target's content by ``shift_px`` (columns, rows counted downwards, in
    reference pixels), i.e. by ``shift_map`` (x east, y north, in map units of
    the reference CRS), lays it on the reference.

    Attributes
    ----------
    row, col : int
        Reference pixel at the window's centre.
    x, y : float
        Map coordinates of that centre (reference CRS).
    size_px : int
        Side of the square window, in reference pixels.
    shift_px : (float, float)
        Correction (columns, rows); NaN when the match failed.
    shift_map : (float, float)
        Correction (x east, y north) in map units.
    reliability, peak_ratio, ncc, ncc_before, std_px, valid_fraction : float
        From :class:`~coregister.phase.PhaseShift`; ``ncc_before`` is
        the similarity of the window before the shift.
    used : bool
        Whether the match went into the answer.
    reason : str
        Why it was rejected (empty when used).
    """

    row: int
    col: int
    x: float
    y: float
    size_px: int
    shift_px: tuple[float, float]
    shift_map: tuple[float, float]
    reliability: float = 0.0
    peak_ratio: float = math.nan
    ncc: float = math.nan
    ncc_before: float = math.nan
    std_px: float = math.nan
    valid_fraction: float = 0.0
    used: bool = False
    reason: str = ""

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (NaN becomes ``None``)."""
        return plain(dataclasses.asdict(self), nan_to_none=True)


@dataclasses.dataclass(frozen=True)
class GeoResult(JsonMethods):
    """The outcome of :func:`coregister.geo.coregister` (and :func:`~coregister.geo.change`, :func:`~coregister.geo.georeference`).

    Attributes
    ----------
    mode : str
        ``"shift"``, ``"affine"``, ``"local"`` (or ``"georeference"``).
    shift_px, shift_map : (float, float) or None
        Global correction applied to the target: (columns, rows) in reference
        pixels and (x east, y north) in reference map units. In ``local``
        mode, the mean of the kept tie points; ``None`` where not meaningful.
    target_offset : (float, float) or None
        ``shift`` mode: the translation added to the target's geotransform,
        in the target's own CRS units (x east, y north).
    transform : Transform or None
        ``affine`` mode: maps reference map points to target map points
        (both in the reference CRS; fixed -> moving, ITK's direction).
    windows : tuple of WindowMatch
        Windows tried in ``shift`` mode (the used ones flagged), or the tie points in ``local`` mode.
    field : mapping
        ``local`` mode: how the displacement field was fitted (kind, order, RMSE of the kept points in px).
    reference, target : mapping
        Name, nodata value and where it came from (declared, given,
        detected from constant corners), band used, CRS.
    output, tie_points_path : Path or None
        Files written.
    warnings : tuple of str
        Anything the user should know (fill values detected, windows rejected, fallbacks).
    time_s : float
        Wall time of the run (reading, matching, writing).
    config : mapping
        The options that ran.
    extras : mapping
        Anything else (the residual statistics, the affine registration's
        metrics; ``verification``: the metrics before and after the
        correction on the grid the verdict was given on).
    quality : QualityReport
        The quality verdict on the correction and the measures behind it:
        the affine registration's own (``affine``, ``georeference`` with a
        base), or :func:`coregister.pipeline.verify`'s over the overlap
        (``shift``, ``local``). GCP georeferencing has nothing to compare:
        passed, with no measures.
    corrected : object or None
        The corrected target in memory, when ``like=`` asked for it (the
        kind of object the target was given as with ``like="input"``: a
        DataArray stays lazy in ``shift`` mode). Not part of :meth:`to_dict`.
    """

    mode: str
    shift_px: tuple[float, float] | None = None
    shift_map: tuple[float, float] | None = None
    target_offset: tuple[float, float] | None = None
    transform: Transform | None = None
    windows: tuple[WindowMatch, ...] = ()
    field: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    reference: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    target: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    output: Path | None = None
    tie_points_path: Path | None = None
    warnings: tuple[str, ...] = ()
    time_s: float = 0.0
    config: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    extras: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    quality: QualityReport = _PASSED
    corrected: Any = dataclasses.field(default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        for name in ("field", "reference", "target", "config", "extras"):
            object.__setattr__(self, name, MappingProxyType(dict(getattr(self, name))))
        object.__setattr__(self, "windows", tuple(self.windows))
        object.__setattr__(self, "warnings", tuple(self.warnings))

    @property
    def passed(self) -> bool:
        """Whether the quality check passed the correction (False: exit code 3 on the command line)."""
        return self.quality.passed

    @property
    def verdict(self) -> Verdict:
        """The quality check's verdict: passed, failed or uncertain."""
        return self.quality.verdict

    @property
    def used_windows(self) -> tuple[WindowMatch, ...]:
        """The windows (tie points) that went into the answer."""
        return tuple(w for w in self.windows if w.used)

    @property
    def tie_points(self) -> dict[str, np.ndarray]:
        """Columns ``x, y, dx, dy, dcol, drow, reliability, kept, reason`` of the windows (the report draws them)."""
        w = self.windows
        return {
            "x": np.array([m.x for m in w], float),
            "y": np.array([m.y for m in w], float),
            "dx": np.array([m.shift_map[0] for m in w], float),
            "dy": np.array([m.shift_map[1] for m in w], float),
            "dcol": np.array([m.shift_px[0] for m in w], float),
            "drow": np.array([m.shift_px[1] for m in w], float),
            "reliability": np.array([m.reliability for m in w], float),
            "kept": np.array([m.used for m in w], bool),
            "reason": np.array([m.reason for m in w], object),
        }

    def show(self, reference: Any, target: Any) -> Any:
        """A notebook view with the rasters: a full-resolution square of the reference, the target before and after.

        ``reference`` and ``target`` as given to :func:`coregister.geo.coregister`
        (paths, SpatialImages or DataArrays); returns a
        :class:`~coregister.geo.display.GeoView`, shown by Jupyter.
        """
        from coregister.geo.display import GeoView

        return GeoView(self, reference, target)

    def _repr_html_(self) -> str:
        """The notebook view: verdict, correction, windows, quality; the before/after overlay when the inputs were files."""
        from coregister.geo.display import GeoView, files_of, geo_result_html

        files = files_of(self)
        if files is None or self.mode == "georeference":
            return geo_result_html(self)
        return GeoView(self, *files)._repr_html_()

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return plain(
            {
                "mode": self.mode,
                "passed": self.passed,
                "verdict": self.verdict.value,
                "shift_px": self.shift_px,
                "shift_map": self.shift_map,
                "target_offset": self.target_offset,
                "transform": self.transform.to_dict() if self.transform is not None else None,
                "windows": [w.to_dict() for w in self.windows],
                "field": dict(self.field),
                "reference": dict(self.reference),
                "target": dict(self.target),
                "output": str(self.output) if self.output else None,
                "tie_points_path": str(self.tie_points_path) if self.tie_points_path else None,
                "warnings": list(self.warnings),
                "time_s": self.time_s,
                "config": dict(self.config),
                "extras": dict(self.extras),
                "quality": self.quality.to_dict(),
            },
            nan_to_none=True,
        )

