"""Command-line fixes a newcomer needed: help that says what an option changes, one-line usage errors, ``-q``/``-v``
after the subcommand, ``--iterations``, the quality-check failure line, and choosing a DICOM series.

Everything runs through :func:`coregister.cli.main` on real data (BrainWeb slices from the ITK examples, nibabel's
anatomical volume written as DICOM series).
"""

from __future__ import annotations

import re

import pytest

from coregister import presets
from coregister.cli import EXIT_OK, main


def _help(capsys: pytest.CaptureFixture[str], *command: str) -> str:
    assert main([*command, "--help"]) == EXIT_OK
    return " ".join(capsys.readouterr().out.split())


# ------------------------------------------------------------------ --precise says what it changes
@pytest.mark.parametrize("ndim", [2, 3])
@pytest.mark.parametrize("name", ["translation", "rigid", "similarity", "affine"])
def test_precise_help_states_what_the_precise_family_changes(
    capsys: pytest.CaptureFixture[str], name: str, ndim: int
) -> None:
    text = _help(capsys, "register")
    help_precise = re.search(r"--precise (.*?) --initialisation", text)
    assert help_precise is not None, text
    words = help_precise.group(1)
    low, high = (float(v) for v in re.search(r"(\d+)-(\d+)x the sample points", words).groups())  # type: ignore[union-attr]
    step_low, step_high = (float(v) for v in re.search(r"(\d+)-(\d+)x finer final step", words).groups())  # type: ignore[union-attr]
    assert "twice the iterations" in words and "the time" in words
    default, precise = presets.get(name, ndim=ndim), presets.get(name, precise=True, ndim=ndim)
    last_default, last_precise = default.stages[-1], precise.stages[-1]
    assert last_precise.iterations == 2 * last_default.iterations
    assert low <= last_precise.max_samples / last_default.max_samples <= high
    assert step_low <= last_default.min_step / last_precise.min_step <= step_high

