"""The same registration in two separate processes gives the same parameters to the last bit, and says how it ran.

``coregister register`` runs twice, in two fresh processes at once, on a
3D pair; the transforms' parameters (``transform.tfm`` as ITK wrote them
and ``result.json`` as Python floats) are compared bit for bit, and
``result.json`` carries what decides the outcome besides the inputs: the
seed, the thread count and the versions of coregister and of the
libraries behind it.
"""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np

import coregister as cr

FIXED = "medical/nibabel_anat_func/anatomical.nii"
MOVING = "medical/nibabel_anat_func/reoriented_anat_moved.nii"
ENV = dict(os.environ, PYTHONPATH=os.pathsep.join([str(Path(cr.__file__).resolve().parents[1]),
                                                   os.environ.get("PYTHONPATH", "")]))


def _bits(values: list[float]) -> list[bytes]:
    return [struct.pack("<d", v) for v in values]


def test_two_processes_give_bit_identical_parameters_and_record_seed_threads_versions(data, tmp_path: Path) -> None:
    runs = [
        subprocess.Popen([sys.executable, "-m", "coregister", "register", str(data(FIXED)), str(data(MOVING)), "-o",
                          str(tmp_path / name), "--preset", "affine", "--seed", "7", "-q"], env=ENV,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for name in ("first", "second")
    ]
    for run in runs:
        _, err = run.communicate(timeout=300)
        assert run.returncode in (0, 3), err
    saved = [json.loads((tmp_path / name / "result.json").read_text()) for name in ("first", "second")]
    first, second = (cr.read_transform(tmp_path / name / "transform.tfm") for name in ("first", "second"))
    assert (tmp_path / "first" / "transform.tfm").read_bytes() == (tmp_path / "second" / "transform.tfm").read_bytes()
    assert _bits(list(np.ravel(first.to_sitk().GetParameters()))) == _bits(list(np.ravel(second.to_sitk().GetParameters())))
    assert saved[0]["transform"] == saved[1]["transform"]  # floats as Python wrote them: exact
    assert np.array_equal(cr.read(tmp_path / "first" / "registered.nii").array,
                          cr.read(tmp_path / "second" / "registered.nii").array)
    for record in saved:
        assert record["seed"] == 7 and record["threads"] == 1
        versions = record["versions"]
        assert {"coregister", "SimpleITK", "numpy", "nibabel", "python"} <= versions.keys()
        assert versions["coregister"] == cr.__version__
