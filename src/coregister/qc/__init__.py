"""Quality control pictures: the HTML report of a registration and of a geospatial correction, and test data.

:func:`coregister.qc.report.write_report` draws a registration's report and
:func:`coregister.qc.geo_report.write_geo_report` a geospatial run's, both
from the pictures of :mod:`coregister.qc.figures` and the page pieces of
:mod:`coregister.qc.html`; :mod:`coregister.qc.synthetic` makes pairs with a
known truth. The quality
check itself belongs to the pipeline (:mod:`coregister.pipeline.quality`),
the similarity measures to :mod:`coregister.measures`.
"""

from __future__ import annotations

__all__: list[str] = []
