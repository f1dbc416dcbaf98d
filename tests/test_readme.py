"""The README's use cases run as written, as a newcomer runs them: every command and Python block, in order, in a
fresh shell from a project root with ``../shared/data`` beside it, their outputs checked (geometry, the S2
correction, inliers); and the cohort snippet as a script on nibabel's bundled pair (no shared data needed).

A fresh shell has no help: the blocks run with a ``PATH`` that holds neither
this environment nor any ``coregister``, and without ``PYTHONPATH`` or any
``COREGISTER_*`` variable (the blocks find the data as ``../shared/data``,
which the scratch project has beside it), so a bare ``coregister`` or
``python`` only works because the README activates ``.venv`` first, with the
command it gives between its ``<!-- activate -->`` markers. ``.venv`` in the
scratch project is made as the README's set-up makes it (``pip install -e .``
puts the checkout's ``src/`` on the path): a virtual environment whose path
holds the code under test, then this test run's installed dependencies, and
whose ``coregister`` command runs that code. Python blocks run as the README
says: with ``python`` in that shell. Everything they write must land in
``out/`` (the one ignored folder), nothing else in the project root. Every
``bash`` and ``python`` block of the README is run by a test.

The cohort snippet starts a process-based Dask cluster, whose workers import
the script again: it must guard its work with ``if __name__ == "__main__":``
(without it, every worker fails with "Nanny failed to start"). It runs here on
nibabel's small bundled T1 pair, copied under the names the snippet uses.
"""

from __future__ import annotations

import gzip
import importlib.resources
import os
import re
import shutil
import subprocess
import sys
import venv
from pathlib import Path

import numpy as np
import pytest

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
    # the snippet reads ../shared/data/medical/antspy/ from the project root: the same layout in a scratch folder,
    # nibabel's small T1 pair under the names the snippet uses
    data = tmp_path / "shared" / "data" / "medical" / "antspy"
    data.mkdir(parents=True)
    project = tmp_path / "project"
    project.mkdir()
    nibabel_data = Path(str(importlib.resources.files("nibabel") / "tests" / "data"))
    for source, name in (("anatomical.nii", "mni.nii.gz"), ("reoriented_anat_moved.nii", "ch2.nii.gz")):
        (data / name).write_bytes(gzip.compress((nibabel_data / source).read_bytes()))
    template = cr.read(data / "mni.nii.gz")
    labels = (np.asarray(template.array) > np.percentile(template.array, 60)).astype(np.uint8)
    cr.write(template.replace(array=labels), data / "mnia.nii.gz")
    (project / "snippet.py").write_text(snippet + "\n")
    (project / "out").mkdir()

    run = subprocess.run([sys.executable, "snippet.py"], cwd=project, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    assert sorted(p.name for p in (project / "out" / "cohort-python" / "ch2").iterdir()) == [
        "registered.nii.gz", "result.json", "transform.tfm",
    ]
    moved = cr.read(project / "out" / "atlas_in_ch2.nii.gz")
    subject = cr.read(data / "ch2.nii.gz")
    assert moved.same_geometry(subject, atol=1e-6)
    assert set(np.unique(moved.array).tolist()) == {0, 1}  # nearest neighbour: still labels


# --------------------------------------------------------------------------- the use cases, as written

USE_CASES = ["MRI cohort to a template", "Deformable: atlas to subject and back", "A BIDS dataset to a template",
             "CT to MR", "Evaluate a registration", "Motion correction (fMRI, DCE, DWI)", "Longitudinal pair (halfway space)",
             "Satellite change detection", "Georeferencing", "Photo pair", "Transforms for FSL, elastix, ANTs and 3D Slicer",
             "Images you already hold"]


#: sections of their own outside the use cases whose blocks run the same way (``## Python``: the API at a glance)
SECTIONS = [*USE_CASES, "Python"]

#: the blocks other tests run (the demo command: tests/test_demo.py; the activation: every use case here) or that
#: would run the whole suite (the test command)
MARKED = ("demo-command", "test-command", "activate")


def _section(heading: str) -> str:
    """The text under ``### heading`` (or ``## heading``) up to the next heading of either level."""
    text = (REPO / "README.md").read_text()
    for level in ("###", "##"):
        parts = text.split(f"\n{level} {heading}\n", 1)
        if len(parts) == 2:
            return parts[1].split("\n### ", 1)[0].split("\n## ", 1)[0]
    raise AssertionError(f"README.md lost its {heading!r} section")


def _blocks(heading: str) -> list[tuple[str, str]]:
    """The section's ``bash`` and ``python`` blocks, in order."""
    return re.findall(r"```(bash|python)\n(.*?)\n```", _section(heading), re.S)


def test_every_block_of_the_readme_is_run() -> None:
    """A ``bash`` or ``python`` block outside the sections run here (and the marked blocks) would go untested."""
    text = (REPO / "README.md").read_text()
    for mark in MARKED:
        text = re.sub(rf"<!-- {mark} -->.*?<!-- /{mark} -->", "", text, flags=re.S)
    every = re.findall(r"```(?:bash|python)\n(.*?)\n```", text, re.S)
    run = [code for heading in SECTIONS for _, code in _blocks(heading)]
    assert [code for code in every if code not in run] == []


def _activation() -> str:
    """The command the README gives to activate the environment in a new shell."""
    text = (REPO / "README.md").read_text()
    block = re.search(r"<!-- activate -->\s*```bash\n(.*?)\n```\s*<!-- /activate -->", text, re.S)
    assert block, "README.md lost its <!-- activate --> block (the newcomer's first command in a new shell)"
    return block.group(1).strip()


def _fresh_shell_env() -> dict[str, str]:
    """This process's environment as a new shell has it: no virtual environment on PATH, no ``coregister`` anywhere,
    no ``PYTHONPATH`` and no ``COREGISTER_*`` setting (the README's blocks need none)."""
    venv_bin = Path(sys.executable).parent.resolve()
    path = [d for d in os.environ.get("PATH", "").split(os.pathsep)
            if d and Path(d).resolve() != venv_bin and not (Path(d) / "coregister").exists()]
    dropped = ("VIRTUAL_ENV", "PYTHONHOME", "PYTHONPATH", "CONDA_PREFIX")
    env = {k: v for k, v in os.environ.items() if k not in dropped and not k.startswith("COREGISTER_")}
    env["PATH"] = os.pathsep.join(path)
    assert shutil.which("coregister", path=env["PATH"]) is None
    return env


def _project_venv(target: Path) -> Path:
    """``.venv`` as the README's ``pip install -e .`` leaves it: the code under test first on its path (the ``src/``
    this test run imports ``coregister`` from), then this run's installed dependencies; a ``coregister`` command."""
    venv.EnvBuilder(symlinks=True, with_pip=False).create(target)
    version = f"python{sys.version_info.major}.{sys.version_info.minor}"
    code = Path(cr.__file__).resolve().parents[1]
    dependencies = Path(sys.prefix) / "lib" / version / "site-packages"
    (target / "lib" / version / "site-packages" / "00_coregister_under_test.pth").write_text(
        f"{code}\nimport site; site.addsitedir({str(dependencies)!r})\n")
    command = target / "bin" / "coregister"
    # as pip writes it: the guard keeps the workers Dask spawns (which import this script again) from rerunning it
    command.write_text(f"#!{target / 'bin' / 'python'}\nfrom coregister.cli import _console\n\n"
                       "if __name__ == '__main__':\n    _console()\n")
    command.chmod(0o755)
    return target


def _check_cohort(project: Path, data: Path) -> None:
    mni = cr.read(data / "medical/antspy/mni.nii.gz")
    assert cr.read(project / "out/ch2_in_mni.nii.gz").same_geometry(mni, atol=1e-5)
    labels = cr.read(project / "out/atlas_in_ch2.nii.gz")
    assert labels.same_geometry(cr.read(data / "medical/antspy/ch2.nii.gz"), atol=1e-5)
    assert np.array_equal(np.unique(labels.array), np.unique(cr.read(data / "medical/antspy/mnia.nii.gz").array))


def _check_deformable(project: Path, data: Path) -> None:
    import SimpleITK as sitk

    subject = cr.read(data / "medical/itk_brainweb_2d/BrainProtonDensitySliceBorder20.png")
    written = sorted(p.name for p in (project / "out/deformed").iterdir())
    assert written == ["affine.mat", "inverse_warp.nii.gz", "jacobian.nii.gz", "registered.png", "result.json",
                       "transform.h5", "warp.nii.gz"], written
    warp = sitk.ReadImage(str(project / "out/deformed/warp.nii.gz"))  # a vector field SimpleITK reads as one
    assert warp.GetNumberOfComponentsPerPixel() == 2 and list(warp.GetSize()) == list(subject.size)
    assert cr.read(project / "out/moved.png").same_geometry(subject.channel(0))
    folding, residual = project.joinpath("..", "out.txt").read_text().split(" ", 1)
    assert float(folding) == 0.0 and "(" in residual


def _check_bids(project: Path, data: Path) -> None:
    deriv = project / "out/bids-derivatives"
    assert '"DatasetType": "derivative"' in (deriv / "dataset_description.json").read_text()
    mni = cr.read(data / "medical/antspy/mni.nii.gz")
    for subject in ("01", "02"):
        assert cr.read(deriv / f"sub-{subject}/anat/sub-{subject}_space-MNI152_T1w.nii.gz").same_geometry(mni, atol=1e-5)
    printed = project.joinpath("..", "out.txt").read_text().split()
    assert printed == ["sub-01_from-T1w_to-MNI152_mode-image_xfm.h5", "sub-02_from-T1w_to-MNI152_mode-image_xfm.h5"]


def _check_ct(project: Path, data: Path) -> None:
    mr = cr.read(data / "medical/mri_dir_phantom/MR_T2_every2nd")
    for written in ("out/ct-to-mr/registered.nii.gz", "out/ct_on_mr.nii.gz", "out/ct_on_mr_dicom"):
        assert cr.read(project / written).same_geometry(mr, atol=1e-4), written
    # the derived series holds CT values: labelled CT, in the MR's study and frame of reference
    tags, mr_tags = cr.read(project / "out/ct_on_mr_dicom").meta["dicom"], mr.meta["dicom"]
    assert tags["Modality"] == "CT" and tags["SOPClassUID"] == "1.2.840.10008.5.1.4.1.1.2"
    assert (tags["StudyInstanceUID"], tags["FrameOfReferenceUID"]) == (mr_tags["StudyInstanceUID"], mr_tags["FrameOfReferenceUID"])
    assert (project / "out/ct-to-mr/report.html").stat().st_size > 10_000
    # --dicom-registration: a Spatial Registration object in the MR's frame, referencing both series, holding the
    # transform of transform.tfm (inverted, as DICOM stores it)
    from coregister.io.dicom_registration import SPATIAL_REGISTRATION, read_registration

    sro = read_registration(project / "out/ct-to-mr/registration.dcm")
    ct = cr.read(data / "medical/mri_dir_phantom/CT_every8th")
    assert sro.sop_class_uid == SPATIAL_REGISTRATION and sro.frame_of_reference_uid == mr_tags["FrameOfReferenceUID"]
    assert set(sro.referenced_series) == {mr_tags["SeriesInstanceUID"], ct.meta["dicom"]["SeriesInstanceUID"]}
    saved = cr.read_transform(project / "out/ct-to-mr/transform.tfm")
    assert np.allclose(sro.transform.transform_points(mr.world_grid().reshape(-1, 3)[::9973]),
                       saved.transform_points(mr.world_grid().reshape(-1, 3)[::9973]), rtol=0, atol=1e-9)


def _check_evaluation(project: Path, data: Path) -> None:
    import json

    written = json.loads((project / "out/eval-out/evaluation.json").read_text())
    summary = written["summary"]
    # the landmarks come from the known motion: a right registration and a right direction put them within a voxel
    assert summary["tre_max_mm"] < 1.0 and summary["folding_fraction"] == 0.0 and summary["sd_log_jacobian"] == 0.0
    assert [p["label"] for p in written["landmarks"]] == ["left", "right", "back", "front"]
    assert [s["label"] for s in written["labels"]] == [1, 2, 3] and summary["dice_mean"] > 0.6
    assert (project / "out/eval-out/evaluation.csv").read_text().startswith("measure,item,value,unit\n")
    dice, tre, folding = (float(v) for v in project.joinpath("..", "out.txt").read_text().split())
    assert abs(dice - summary["dice_mean"]) < 1e-12 and abs(tre - summary["tre_mean_mm"]) < 1e-12 and folding == 0.0


def _check_motion(project: Path, data: Path) -> None:
    import nibabel as nib

    source = data / "medical/nibabel_anat_func/functional.nii"
    written = nib.load(project / "out/motion-out/realigned.nii")
    assert written.shape == nib.load(source).shape
    assert written.header.get_zooms() == nib.load(source).header.get_zooms()  # voxel sizes and TR
    tsv = (project / "out/motion-out/motion.tsv").read_text().splitlines()
    assert tsv[0].startswith("trans_x\ttrans_y\ttrans_z\trot_x\trot_y\trot_z") and len(tsv) == 21
    assert (project / "out/motion-out/report.html").exists()
    example = nib.load(data / "medical/nibabel_anat_func/example4d.nii.gz")
    realigned = nib.load(project / "out/realigned.nii.gz")
    assert realigned.shape == example.shape and realigned.header.get_zooms() == example.header.get_zooms()
    assert len((project / "out/motion.tsv").read_text().splitlines()) == 1 + example.shape[3]


def _check_halfway(project: Path, data: Path) -> None:
    for folder, names in (("out/halfway-out", ("fixed_halfway.nii", "moving_halfway.nii")),
                          ("out", ("baseline_halfway.nii.gz", "followup_halfway.nii.gz"))):
        first, second = (cr.read(project / folder / name) for name in names)
        assert first.same_geometry(second, atol=1e-5), folder
    assert (project / "out/halfway-out/halfway_to_fixed.tfm").exists() and (project / "out/halfway-out/halfway_to_moving.tfm").exists()


def _check_geo(project: Path, data: Path) -> None:
    printed = project.joinpath("..", "out.txt").read_text()
    columns, rows = (float(v) for v in re.findall(r"\(([-\d.]+), ([-\d.]+)\)", printed)[0])
    assert abs(columns + 0.60) < 0.05 and abs(rows - 1.80) < 0.05  # AROSICS: (-0.60, +1.76)
    for written in ("out/target_corrected.tif", "out/tgt_corrected.tif", "out/change.tif", "out/change_ratio.tif"):
        assert cr.read(project / written).crs is not None, written
    assert 0.0 < float(printed.split()[-1]) < 1.0  # the fraction of pixels that changed


def _check_georef(project: Path, data: Path) -> None:
    for written in ("out/crop_georef.tif", "out/crop_gcps.tif", "out/georef_base.tif", "out/georef_gcps.tif"):
        assert cr.read(project / written).crs is not None, written
    # the Python block prints the corners found against the base and the fit's residual: a good fit, and the
    # corners where the GCP fit (exact, from the example's own truth) puts them, to half a 30 m pixel
    printed = project.joinpath("..", "out.txt").read_text()
    numbers = [float(v) for v in re.findall(r"-?\d+\.\d+(?:e-?\d+)?", printed)]
    corners, rmse = np.array(numbers[:8]).reshape(4, 2), numbers[8]
    assert rmse < 1.0
    gcp_fit = cr.read(project / "out/crop_gcps.tif")
    height, width = gcp_fit.shape[:2]
    expected = gcp_fit.index_to_world([[-0.5, -0.5], [width - 0.5, -0.5], [width - 0.5, height - 0.5], [-0.5, height - 0.5]])
    assert np.abs(corners - expected).max() < 15.0


def _check_photo(project: Path, data: Path) -> None:
    inliers = int(project.joinpath("..", "out.txt").read_text().split()[0])
    assert inliers > 100
    assert (project / "out/photo-pair/transform.json").exists()


def _check_transforms(project: Path, data: Path) -> None:
    names = {p.name for p in (project / "out/anat-reg").iterdir()}
    assert {"flirt.mat", "TransformParameters.txt", "ants_0GenericAffine.mat", "for_slicer.h5"} <= names
    assert float(project.joinpath("..", "out.txt").read_text().split()[0]) < 1e-6  # mm: every tool's file, one transform
    fixed = cr.read(data / "medical/nibabel_anat_func/anatomical.nii")
    assert cr.read(project / "out/moved_by_flirt_matrix.nii.gz").same_geometry(fixed, atol=1e-6)


def _check_objects(project: Path, data: Path) -> None:
    lines = project.joinpath("..", "out.txt").read_text().splitlines()
    assert lines[0] == "passed Nifti1Image (33, 41, 25)"
    columns, rows = (float(v) for v in re.findall(r"\(([-\d.]+), ([-\d.]+)\)", lines[1])[0])
    assert abs(columns + 0.60) < 0.05 and abs(rows - 1.80) < 0.05
    assert lines[1].endswith("Array")  # dask.array.Array: the corrected DataArray is still lazy


def _check_python(project: Path, data: Path) -> None:
    fixed = cr.read(data / "medical/nibabel_anat_func/anatomical.nii")
    assert cr.read(project / "out/moved_on_fixed.nii.gz").same_geometry(fixed, atol=1e-6)
    assert cr.read_transform(project / "out/moved_to_fixed.tfm").ndim == 3
    lines = project.joinpath("..", "out.txt").read_text().splitlines()
    tre, (verdict, dice, folding) = lines[0], lines[1].split()
    assert float(tre) < 1.0  # mm: the known motion recovered within a voxel (2 mm)
    assert verdict == "passed" and float(dice) > 0.6 and float(folding) == 0.0


CHECKS = {"MRI cohort to a template": _check_cohort, "Deformable: atlas to subject and back": _check_deformable,
          "A BIDS dataset to a template": _check_bids, "CT to MR": _check_ct, "Evaluate a registration": _check_evaluation,
          "Motion correction (fMRI, DCE, DWI)": _check_motion, "Longitudinal pair (halfway space)": _check_halfway,
          "Satellite change detection": _check_geo, "Georeferencing": _check_georef, "Photo pair": _check_photo,
          "Transforms for FSL, elastix, ANTs and 3D Slicer": _check_transforms, "Images you already hold": _check_objects,
          "Python": _check_python}


@pytest.fixture(scope="module")
def newcomer_env() -> dict[str, str]:
    if sys.prefix == sys.base_prefix:
        pytest.skip("the tests do not run in a virtual environment; the README's set-up makes .venv and activates it")
    return _fresh_shell_env()


@pytest.fixture(scope="module")
def project_venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _project_venv(tmp_path_factory.mktemp("venv") / ".venv")


@pytest.mark.parametrize("heading", SECTIONS)
def test_use_case_runs_as_written(
    heading: str, tmp_path: Path, newcomer_env: dict[str, str], project_venv: Path
) -> None:
    """Each use case's commands and Python block, in order, in a fresh shell that runs the README's activation first."""
    from conftest import require_data

    data = require_data("medical/antspy/mni.nii.gz").parents[2]
    (tmp_path / "shared").mkdir()
    (tmp_path / "shared" / "data").symlink_to(data)
    project = tmp_path / "project"
    project.mkdir()
    (project / "examples").symlink_to(REPO / "examples")
    (project / ".venv").symlink_to(project_venv, target_is_directory=True)
    activate = _activation()
    blocks = _blocks(heading)
    assert blocks, heading
    for kind, code in blocks:
        if kind == "bash":
            script, env = f"{activate}\n{code}", newcomer_env
        else:  # "run the Python blocks with `python`", in the same kind of shell
            script, env = f'{activate}\npython -c "$README_BLOCK"', {**newcomer_env, "README_BLOCK": code}
        run = subprocess.run(["bash", "-e", "-c", script], cwd=project, capture_output=True, text=True, timeout=600,
                             env=env)
        assert run.returncode == 0, f"{kind} block of {heading!r}:\n{code}\n{run.stderr[-3000:]}"
        if kind == "python":
            (tmp_path / "out.txt").write_text(run.stdout)
    CHECKS[heading](project, data)
    left = sorted(p.name for p in project.iterdir())
    assert set(left) <= {".venv", "examples", "out"}, f"the use case wrote outside out/: {left}"


def test_without_activation_a_bare_command_is_not_found(
    newcomer_env: dict[str, str], project_venv: Path, tmp_path: Path
) -> None:
    """The README's first use-case command in a fresh shell, without the activation it asks for: not found (what the
    README used to leave a newcomer with); with it, found, and ``python`` imports the code under test."""
    (tmp_path / ".venv").symlink_to(project_venv, target_is_directory=True)
    bare = subprocess.run(["bash", "-c", "coregister --version"], cwd=tmp_path, capture_output=True, text=True,
                          env=newcomer_env)
    assert bare.returncode == 127
    script = f"{_activation()}\ncoregister --version\npython -c 'import coregister; print(coregister.__file__)'"
    activated = subprocess.run(["bash", "-e", "-c", script], cwd=tmp_path, capture_output=True, text=True,
                               env=newcomer_env)
    assert activated.returncode == 0, activated.stderr
    assert activated.stdout.splitlines()[-1] == str(Path(cr.__file__).resolve())


def test_use_case_outputs_are_ignored_by_git() -> None:
    ignored = (REPO / ".gitignore").read_text().split()
    assert "/out/" in ignored and "/coregister-demo/" in ignored
