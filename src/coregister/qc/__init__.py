"""Quality control: similarity metrics, the quality check and the HTML report.

:func:`coregister.qc.quality.check` judges a registration's answer (metric
got worse, extreme scale or shear, folding B-spline, iteration cap);
:mod:`coregister.qc.metrics` measures similarity and accuracy;
:mod:`coregister.qc.report` draws the HTML report.
"""

from __future__ import annotations

from coregister.qc.quality import QualityReport, check

__all__ = ["QualityReport", "check"]
