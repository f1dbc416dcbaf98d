"""Shared fixtures: where the real test data lives, and how its absence is handled.

``COREGISTER_TEST_DATA`` points at the shared data folder (default
``../shared/data`` beside the repository). Where it is absent, tests that
need it skip with a reason, unless ``COREGISTER_REQUIRE_DATA=1`` (set by
``.ci/run``, since CI always has the data): then they fail.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]


def shared_data_root() -> Path:
    """The real-data folder (``COREGISTER_TEST_DATA`` or ``../shared/data``)."""
    return Path(os.environ.get("COREGISTER_TEST_DATA", REPO_ROOT.parent / "shared" / "data")).resolve()


def require_data(relative: str) -> Path:
    """Path of a file or folder under the data root; skip (or fail under CI) when it is missing."""
    path = shared_data_root() / relative
    if not path.exists():
        message = f"real test data {relative!r} not found under {shared_data_root()} (set COREGISTER_TEST_DATA)"
        if os.environ.get("COREGISTER_REQUIRE_DATA") == "1":
            pytest.fail(message)
        pytest.skip(message)
    return path


def fresh_user_path(folder: Path) -> str:
    """A PATH as a fresh user has it: the ``coregister`` console script, no ``python``, a bare ``python3``.

    ``folder`` (created) holds a link to this environment's ``coregister``, a
    ``python`` that is "not found" (exit 127) and a ``python3`` without
    site-packages (the system interpreter outside a venv lacks our
    dependencies); the rest of this process's PATH follows, minus this
    environment's ``bin``. For running documented shell examples as written.
    """
    folder.mkdir()
    venv_bin = Path(sys.executable).parent
    (folder / "coregister").symlink_to(venv_bin / "coregister")
    (folder / "python").write_text("#!/bin/sh\necho 'python: command not found' >&2\nexit 127\n")
    (folder / "python3").write_text(f'#!/bin/sh\nexec "{sys.executable}" -I -S "$@"\n')
    for name in ("python", "python3"):
        (folder / name).chmod(0o755)
    rest = [d for d in os.environ.get("PATH", "").split(os.pathsep) if d and Path(d).resolve() != venv_bin.resolve()]
    return os.pathsep.join([str(folder), *rest])


@pytest.fixture
def data() -> type:
    """``data("medical/antspy/mni.nii.gz")`` -> Path, skipping (or failing under CI) when absent."""
    return require_data  # type: ignore[return-value]
