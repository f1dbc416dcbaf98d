"""Library exception text folded into one line (the command line prints errors as exactly one line)."""

from __future__ import annotations

__all__ = ["one_line"]


def one_line(exc: BaseException, *, limit: int = 300) -> str:
    """The gist of ``exc`` on one line.

    SimpleITK/ITK messages (``Exception thrown in ... file.cxx:123:`` then the
    reason) keep their last line; other messages have their whitespace folded.

    Examples
    --------
    >>> one_line(RuntimeError("Exception thrown in SimpleITK ImageFileReader_Execute: a.cxx:9:\\nITK ERROR: bad file"))
    'ITK ERROR: bad file'
    >>> one_line(ValueError("Expected 10 bytes\\n - could the file be damaged?"))
    'Expected 10 bytes - could the file be damaged?'
    """
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    if not lines:
        return type(exc).__name__
    text = (
        lines[-1]
        if lines[0].startswith("Exception thrown in") and len(lines) > 1
        else " ".join(" ".join(lines).split())
    )
    return text if len(text) <= limit else text[: limit - 3] + "..."
