"""OpenCV, imported in one place, its log output limited to errors.

Every coregister module that needs OpenCV does ``from coregister._opencv import cv2``.
Importing it here sets OpenCV's own log level to errors only (its
``[ WARN:0@...]`` lines, such as "PNG input buffer is incomplete" before a
decoding failure that coregister reports itself). Libraries OpenCV links
(libpng: "libpng warning: sCAL: invalid unit") write to file descriptor 2
directly, past any Python-level setting:
:func:`coregister._stderr.captured_stderr` takes their output around a call.
"""

from __future__ import annotations

import cv2

__all__ = ["cv2"]

cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)
