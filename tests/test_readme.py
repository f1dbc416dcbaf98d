"""The README's Python snippets run as scripts, as a user would save and run them.

The cohort snippet starts a process-based Dask cluster, whose workers import
the script again: it must guard its work with ``if __name__ == "__main__":``
(without it, every worker fails with "Nanny failed to start"). It runs here on
nibabel's small bundled T1 pair, copied under the names the snippet uses.
"""

from __future__ import annotations

import gzip
import importlib.resources
import re
import subprocess
import sys
from pathlib import Path

import numpy as np

import coregister as cr

REPO = Path(__file__).resolve().parents[1]


def _python_block_after(heading: str) -> str:
    text = (REPO / "README.md").read_text()
    section = text.split(heading, 1)
    assert len(section) == 2, f"README.md lost its {heading!r} section"
    block = re.search(r"```python\n(.*?)\n```", section[1], re.S)
    assert block, f"README.md's {heading!r} section lost its Python snippet"
    return block.group(1)


def test_cohort_snippet_runs_as_a_script(tmp_path: Path) -> None:
    snippet = _python_block_after("### MRI cohort to a template")
    assert 'if __name__ == "__main__":' in snippet
    nibabel_data = Path(str(importlib.resources.files("nibabel") / "tests" / "data"))
    for source, name in (("anatomical.nii", "mni.nii.gz"), ("reoriented_anat_moved.nii", "ch2.nii.gz")):
        (tmp_path / name).write_bytes(gzip.compress((nibabel_data / source).read_bytes()))
    template = cr.read(tmp_path / "mni.nii.gz")
    labels = (np.asarray(template.array) > np.percentile(template.array, 60)).astype(np.uint8)
    cr.write(template.replace(array=labels), tmp_path / "mnia.nii.gz")
    (tmp_path / "snippet.py").write_text(snippet + "\n")

    run = subprocess.run([sys.executable, "snippet.py"], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    assert sorted(p.name for p in (tmp_path / "cohort-out" / "ch2").iterdir()) == [
        "registered.nii.gz", "result.json", "transform.tfm",
    ]
    moved = cr.read(tmp_path / "atlas_in_ch2.nii.gz")
    subject = cr.read(tmp_path / "ch2.nii.gz")
    assert moved.same_geometry(subject, atol=1e-6)
    assert set(np.unique(moved.array).tolist()) == {0, 1}  # nearest neighbour: still labels
