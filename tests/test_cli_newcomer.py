"""Command-line fixes a newcomer needed: help that says what an option changes, one-line usage errors, ``-q``/``-v``
after the subcommand, ``--iterations``, the quality-check failure line, and choosing a DICOM series.

Everything runs through :func:`coregister.cli.main` on real data (BrainWeb slices from the ITK examples, nibabel's
anatomical volume written as DICOM series).
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import coregister as cr
from coregister import presets
from coregister.cli import EXIT_ERROR, EXIT_OK, EXIT_QUALITY, EXIT_USAGE, main


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



# ------------------------------------------------------------------ --iterations: the fix the iteration-cap warning names
BRAINWEB = "medical/itk_brainweb_2d"
FIXED = f"{BRAINWEB}/BrainProtonDensitySliceBorder20.png"
MOVING = f"{BRAINWEB}/BrainProtonDensitySliceShifted13x17y.png"
VOLUME = "medical/nibabel_anat_func/anatomical.nii"


def _register_json(capsys: pytest.CaptureFixture[str], *args: str, code: int = EXIT_OK) -> dict:
    returned = main(list(args))
    captured = capsys.readouterr()
    assert returned == code, captured.err
    return json.loads(captured.out)


@pytest.mark.parametrize("how", ["option", "config"])
def test_iterations_caps_every_stage_and_the_warning_names_the_option(
    data, tmp_path: Path, capsys: pytest.CaptureFixture[str], how: str
) -> None:
    args = ["register", str(data(FIXED)), str(data(MOVING)), "-o", str(tmp_path / "out"), "--preset", "affine", "--json"]
    if how == "option":
        args += ["--iterations", "2"]
    else:
        config = tmp_path / "run.toml"
        config.write_text("[register]\niterations = 2\n")
        args = ["--config", str(config), *args]
    result = _register_json(capsys, *args)
    assert [s["iterations"] for s in result["config"]["stages"]] == [2, 2]
    assert [s["iterations_per_level"] for s in result["config"]["stages"]] == [None, None]
    assert len(result["history"]) >= 2 and max(level["iterations"] for level in result["history"]) <= 2
    assert result["quality"]["measures"]["hit_iteration_cap"] is True
    cap = [w for w in result["warnings"] if "iteration cap" in w]
    assert len(cap) == 1 and "--iterations N" in cap[0]


def test_iterations_raised_lets_the_optimiser_converge(data, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # from the image centres: a start from keypoints lands within 0.1 mm of the shift before any iteration
    base = ["register", str(data(FIXED)), str(data(MOVING)), "--preset", "translation", "--metric", "ncc", "--json",
            "--initialisation", "geometry"]
    # three iterations per level stop short: the check sees it (polishing finds a better alignment nearby)
    capped = _register_json(capsys, *base, "-o", str(tmp_path / "capped"), "--iterations", "3", code=EXIT_QUALITY)
    raised = _register_json(capsys, *base, "-o", str(tmp_path / "raised"), "--iterations", "500")
    assert capped["quality"]["measures"]["hit_iteration_cap"] and not raised["quality"]["measures"]["hit_iteration_cap"]
    assert capped["quality"]["verdict"] == "failed" and raised["quality"]["verdict"] == "passed"
    assert any("polishing it" in f for f in capped["quality"]["failures"])
    assert max(level["iterations"] for level in raised["history"]) > 3
    # the known shift (13, 17) mm: found with room to converge, not within 3 iterations per level
    shift = np.array(raised["transform"]["translation"])
    assert np.linalg.norm(shift - [13.0, 17.0]) < 0.1
    assert np.linalg.norm(np.array(capped["transform"]["translation"]) - [13.0, 17.0]) > 0.1


def test_iterations_must_be_positive(data, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["register", str(data(FIXED)), str(data(MOVING)), "-o", str(tmp_path / "o"), "--iterations", "0"])
    assert code == EXIT_USAGE and "--iterations" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


# ------------------------------------------------------------------ exit 3: the reasons first
@pytest.mark.parametrize("as_json", [False, True])
def test_quality_failure_line_leads_with_the_reasons_it_failed(
    data, tmp_path: Path, capsys: pytest.CaptureFixture[str], as_json: bool
) -> None:
    fixed_path = data(FIXED)
    fixed = cr.read(fixed_path)
    # colour noise: registered on its luminance, a note and no failure
    noise = cr.SpatialImage(np.random.default_rng(5).integers(0, 256, (*fixed.shape[:2], 3), dtype=np.uint8),
                            origin=(0, 0), spacing=(1, 1))
    noise_path = cr.write(noise, tmp_path / "noise.png")
    out = tmp_path / "out"
    code = main(["register", str(fixed_path), str(noise_path), "-o", str(out), *(["--json"] if as_json else [])])
    assert code == EXIT_QUALITY
    last = capsys.readouterr().err.strip().splitlines()[-1]
    saved = json.loads((out / "result.json").read_text())
    failures = saved["quality"]["failures"]
    note = "moving image: registered on the luminance of a 3-channel image"
    assert note in saved["warnings"] and note not in failures
    assert any(f.startswith("no shared structure") for f in failures)
    reasons = last.split("the registration failed its quality check: ", 1)[1]
    assert reasons.startswith("; ".join(failures)), last
    assert reasons.index(failures[-1]) < reasons.index(note)


# ------------------------------------------------------------------ usage errors: one line, exit 2
@pytest.mark.parametrize(
    ("config", "args", "expected"),
    [
        pytest.param(None, ["register", "f.png", "m.png", "-o", "o", "--preset", "afine"],
                     "coregister register: invalid value for '--preset': 'afine' is not one of 'translation', ",
                     id="bad-value"),
        pytest.param(None, ["register", "f.png", "m.png", "-o", "o", "--bogus"],
                     "coregister register: no such option '--bogus'", id="unknown-option"),
        pytest.param(None, ["register", "f.png"], "coregister register: missing argument 'MOVING'", id="missing-argument"),
        pytest.param(None, ["apply", "t.tfm", "m.png", "-o", "o.png"],
                     "coregister apply: missing option '--reference'", id="missing-option"),
        pytest.param(None, ["regster"], "coregister: no such command 'regster'", id="unknown-command"),
        pytest.param('[register]\npreset = "afine"\n', ["register", "f.png", "m.png", "-o", "o"],
                     'coregister register: run.toml [register] preset = "afine": invalid value for \'--preset\'',
                     id="config-value"),
        pytest.param('[register]\nas-json = true\niterations = 0\n', ["register", "f.png", "m.png", "-o", "o"],
                     "coregister register: run.toml [register] iterations = 0: invalid value for '--iterations'",
                     id="config-alias-and-number"),
        pytest.param('[geo.coreg]\nmode = "loc"\n', ["geo", "coreg", "f.tif", "m.tif", "-o", "o"],
                     'coregister geo coreg: run.toml [geo.coreg] mode = "loc": invalid value for \'--mode\'',
                     id="config-nested-table"),
    ],
)
def test_usage_errors_are_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, config: str | None,
    args: list[str], expected: str,
) -> None:
    monkeypatch.chdir(tmp_path)
    if config is not None:
        (tmp_path / "run.toml").write_text(config)
        args = ["--config", "run.toml", *args]
    assert main(args) == EXIT_USAGE
    captured = capsys.readouterr()
    lines = [line for line in captured.err.splitlines() if line.strip()]
    assert captured.out == "" and len(lines) == 1, lines
    command = expected.split(":")[0]
    assert lines[0].startswith(expected), lines[0]
    assert lines[0].endswith(f" (see {command} --help)")
    assert "Usage:" not in captured.err and "Try '" not in captured.err


def test_a_value_typed_on_the_command_line_is_not_blamed_on_the_config(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "run.toml").write_text('[register]\npreset = "affine"\n')
    assert main(["--config", "run.toml", "register", "f.png", "m.png", "-o", "o", "--preset", "afine"]) == EXIT_USAGE
    line = capsys.readouterr().err.strip()
    assert line.startswith("coregister register: invalid value for '--preset': 'afine'") and "run.toml" not in line


# ------------------------------------------------------------------ -q / -v after the subcommand
@pytest.mark.parametrize("where", ["before", "after"])
def test_quiet_prints_nothing_but_errors(data, tmp_path: Path, capsys: pytest.CaptureFixture[str], where: str) -> None:
    command = ["register", str(data(FIXED)), str(data(MOVING)), "-o", str(tmp_path / "out"), "--preset", "translation"]
    assert main(["-q", *command] if where == "before" else [*command, "-q"]) == EXIT_OK
    captured = capsys.readouterr()
    assert (captured.out, captured.err) == ("", "")
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["registered.png", "result.json", "transform.tfm"]
    transform = cr.read_transform(tmp_path / "out" / "transform.tfm")
    assert np.linalg.norm(transform.translation - [13.0, 17.0]) < 0.2
    # apply: no "wrote ..." either
    apply = ["apply", str(tmp_path / "out" / "transform.tfm"), str(data(MOVING)), "--reference", str(data(FIXED)),
             "-o", str(tmp_path / "moved.png")]
    assert main(["-q", *apply] if where == "before" else [*apply, "--quiet"]) == EXIT_OK
    captured = capsys.readouterr()
    assert (captured.out, captured.err) == ("", "") and (tmp_path / "moved.png").is_file()


def test_quiet_still_prints_the_json_asked_for(data, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["register", str(data(FIXED)), str(data(MOVING)), "-o", str(tmp_path / "out"), "--preset",
                 "translation", "--json", "-q"])
    captured = capsys.readouterr()
    assert code == EXIT_OK and captured.err == ""
    assert json.loads(captured.out)["passed"] is True


def test_quiet_after_the_command_keeps_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["info", str(tmp_path / "nowhere.nii.gz"), "-q"]) == EXIT_ERROR
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("coregister: error:") and "nowhere.nii.gz" in lines[0]


def _console(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """The installed console script in a fresh process (its own logging set-up, real stderr)."""
    script = Path(sys.executable).parent / "coregister"
    return subprocess.run([str(script), *args], capture_output=True, text=True, timeout=120, cwd=cwd)


@pytest.mark.parametrize("where", ["before", "after"])
def test_verbose_after_the_command_means_what_it_means_before(data, tmp_path: Path, where: str) -> None:
    command = ["info", str(data(VOLUME))]
    run = _console(*(["-vv", *command] if where == "before" else [*command, "-v", "-v"]), cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    assert "DEBUG coregister" in run.stderr or "INFO coregister" in run.stderr, run.stderr
    # a traceback with -v, wherever it stands
    missing = ["info", str(tmp_path / "nowhere.nii.gz")]
    failed = _console(*(["-v", *missing] if where == "before" else [*missing, "-v"]), cwd=tmp_path)
    assert failed.returncode == 1 and "Traceback (most recent call last)" in failed.stderr


def test_quiet_after_the_command_silences_the_log_as_before(data, tmp_path: Path) -> None:
    # -v alone: the reader's INFO records and the luminance warning; -q after the command: not a character
    command = ["register", str(data(FIXED)), str(data(MOVING)), "--preset", "translation"]
    loud = _console("-v", *command, "-o", "loud", cwd=tmp_path)
    assert loud.returncode == 0 and "INFO coregister.cli.register: fixed image" in loud.stderr, loud.stderr
    run = _console("-v", *command, "-o", "quiet", "-q", cwd=tmp_path)
    assert run.returncode == 0 and (run.stdout, run.stderr) == ("", "")
    assert (tmp_path / "quiet" / "transform.tfm").is_file()


# ------------------------------------------------------------------ choosing a DICOM series
#: series 2 of the two-series folder is nibabel's anatomical volume moved by this much (whole 2 mm voxels): the
#: fixed -> moving translation a registration must find when it reads that series
SERIES_SHIFT_MM = np.array([6.0, -4.0, 2.0])


def write_two_series(data, folder: Path) -> tuple[Path, Path, list]:
    """``(fixed, two_series, listing)``: the anatomy as one DICOM series, and a folder holding it and a moved copy.

    ``listing`` is :func:`~coregister.io.dicom.list_series` of the two-series folder: [0] the anatomy, [1] the copy
    whose origin moved by :data:`SERIES_SHIFT_MM` (same voxels, so the content moved by exactly that much).
    """
    from coregister.io.dicom import list_series

    anatomy = cr.read(data(VOLUME))
    fixed = cr.write(anatomy, folder / "anatomy", format="dicom", series_description="anatomy", series_number=1)
    moved = anatomy.replace(origin=tuple(np.asarray(anatomy.origin) + SERIES_SHIFT_MM))
    other = cr.write(moved, folder / "moved", format="dicom", series_description="moved", series_number=2)
    both = folder / "two_series"
    both.mkdir()
    for source in (fixed, other):
        for file in source.iterdir():
            (both / f"{source.name}_{file.name}").write_bytes(file.read_bytes())
    listing = list_series(both)
    assert [s.description for s in listing] == ["anatomy", "moved"]
    return fixed, both, listing


@pytest.fixture
def two_series(data, tmp_path: Path) -> tuple[Path, Path, list]:
    return write_two_series(data, tmp_path)


@pytest.mark.parametrize("choice", ["index", "uid"])
def test_register_reads_the_moving_series_asked_for(
    two_series, tmp_path: Path, capsys: pytest.CaptureFixture[str], choice: str
) -> None:
    fixed, both, listing = two_series
    wanted = listing[1]
    series = "1" if choice == "index" else wanted.uid
    result = _register_json(capsys, "register", str(fixed), str(both), "--moving-series", series, "-o",
                            str(tmp_path / "out"), "--preset", "translation", "--metric", "ncc", "--json")
    assert result["inputs"]["moving"] == {"path": str(both), "series_uid": wanted.uid}
    assert result["inputs"]["fixed"]["series_uid"] == listing[0].uid
    np.testing.assert_allclose(result["transform"]["translation"], SERIES_SHIFT_MM, atol=0.05)


def test_register_fixed_series_from_a_config_file(two_series, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    fixed, both, listing = two_series
    config = tmp_path / "run.toml"
    config.write_text('[register]\nfixed-series = "1"\npreset = "translation"\nmetric = "ncc"\n')
    result = _register_json(capsys, "--config", str(config), "register", str(both), str(fixed), "-o",
                            str(tmp_path / "out"), "--json")
    assert result["inputs"]["fixed"]["series_uid"] == listing[1].uid
    np.testing.assert_allclose(result["transform"]["translation"], -SERIES_SHIFT_MM, atol=0.05)


@pytest.mark.parametrize(
    ("command", "option"),
    [
        ("register-moving", "--moving-series"),
        ("register-fixed", "--fixed-series"),
        ("apply-moving", "--series"),
        ("apply-reference", "--reference-series"),
    ],
)
def test_a_folder_of_several_series_is_refused_naming_the_option_of_the_command(
    two_series, tmp_path: Path, capsys: pytest.CaptureFixture[str], command: str, option: str
) -> None:
    fixed, both, _ = two_series
    transform = cr.Translation(np.zeros(3)).save(tmp_path / "t.tfm")
    args = {
        "register-moving": ["register", str(fixed), str(both), "-o", str(tmp_path / "out")],
        "register-fixed": ["register", str(both), str(fixed), "-o", str(tmp_path / "out")],
        "apply-moving": ["apply", str(transform), str(both), "--reference", str(fixed), "-o", str(tmp_path / "o.nii.gz")],
        "apply-reference": ["apply", str(transform), str(fixed), "--reference", str(both), "-o", str(tmp_path / "o.nii.gz")],
    }[command]
    assert main(args) == EXIT_ERROR
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("coregister: error:") and "holds 2 DICOM series" in lines[0]
    assert f"(command line: {option};" in lines[0]
    assert not (tmp_path / "out").exists() and not (tmp_path / "o.nii.gz").exists()


def test_apply_reads_the_series_asked_for(two_series, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    fixed, both, listing = two_series
    transform = cr.Translation(SERIES_SHIFT_MM).save(tmp_path / "shift.tfm")
    out = tmp_path / "moved_back.nii.gz"
    code = main(["apply", str(transform), str(both), "--series", listing[1].uid, "--reference", str(both),
                 "--reference-series", "0", "-o", str(out), "--interpolation", "nearest", "--json"])
    captured = capsys.readouterr()
    assert code == EXIT_OK, captured.err
    inputs = json.loads(captured.out)["inputs"]
    assert (inputs["moving"]["series_uid"], inputs["reference"]["series_uid"]) == (listing[1].uid, listing[0].uid)
    # the moved copy through its known shift lands on the anatomy voxel for voxel
    np.testing.assert_array_equal(cr.read(out).array, cr.read(fixed).array)


@pytest.mark.parametrize("option", ["--fixed-series", "--moving-series"])
def test_series_options_apply_to_dicom_only(data, tmp_path: Path, capsys: pytest.CaptureFixture[str], option: str) -> None:
    code = main(["register", str(data(FIXED)), str(data(MOVING)), "-o", str(tmp_path / "out"), option, "0"])
    assert code == EXIT_USAGE
    assert f"{option} applies to DICOM input" in capsys.readouterr().err


def test_geo_quiet_prints_nothing(data, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    s2 = "geospatial/arosics_s2_T33UUU/"
    reference, target = data(s2 + "ref_S2A_20160608T153121_T33UUU_sub.tif"), data(s2 + "tgt_S2A_20160529T153631_T33UUU_sub.tif")
    capsys.readouterr()
    output = tmp_path / "corrected.tif"
    assert main(["geo", "coreg", str(reference), str(target), "-o", str(output), "--report", "-q"]) == EXIT_OK
    printed = capsys.readouterr()
    assert (printed.out, printed.err) == ("", "")
    assert output.is_file() and (tmp_path / "corrected.report.html").is_file()


def test_register_report_shows_the_command_that_ran(data, tmp_path: Path) -> None:
    out = tmp_path / "out"
    assert main(["register", str(data(FIXED)), str(data(MOVING)), "-o", str(out), "--preset", "translation",
                 "--report"]) == EXIT_OK
    page = (out / "report.html").read_text()
    assert "coregister register " in page and "--preset translation" in page and "--report" in page


def test_report_command_line_carries_what_the_config_file_set(data, tmp_path: Path) -> None:
    config = tmp_path / "run.toml"
    config.write_text('[register]\npreset = "translation"\niterations = 150\n')
    out = tmp_path / "out"
    assert main(["--config", str(config), "register", str(data(FIXED)), str(data(MOVING)), "-o", str(out),
                 "--report"]) == EXIT_OK
    page = (out / "report.html").read_text()
    assert "--preset translation" in page and "--iterations 150" in page


# ------------------------------------------------------------------ one note per colour pair; both spellings
def test_a_colour_pair_gives_one_luminance_note(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    colour = cr.SpatialImage(rng.integers(0, 256, (64, 80, 3), dtype=np.uint8), origin=(0, 0), spacing=(1, 1))
    result = cr.register(colour, colour, preset="translation")
    notes = [w for w in result.warnings if "luminance" in w]
    assert notes == ["fixed and moving images: registered on the luminance of 3-channel images"]


@pytest.mark.parametrize("spelling", ["--initialisation", "--initialization"])
def test_initialisation_takes_both_spellings(data, tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                             spelling: str) -> None:
    code = main(["register", str(data(FIXED)), str(data(MOVING)), "-o", str(tmp_path / "o"), "--preset", "translation",
                 spelling, "moments", "--json"])
    assert code == EXIT_OK
    assert json.loads(capsys.readouterr().out)["config"]["initialisation"] == "moments"
