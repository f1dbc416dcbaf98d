"""Bad input: each case raises the right error class from ``coregister.read``, and on the command line
``coregister info BAD`` exits 1 with exactly one line on stderr (no traceback).

The bad files are made in ``tmp_path`` from the real data (truncated copies,
folders holding two real series, ...).
"""

from __future__ import annotations

import json
import shutil
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import rasterio
from affine import Affine

import coregister as cr
from coregister.cli import main
from coregister.errors import (
    AmbiguousSeriesError,
    CoregisterError,
    NonUniformSpacingError,
    OutputExistsError,
    UnreadableInputError,
    UnsupportedFormatError,
    UnwritableOutputError,
)

Maker = Callable[[Callable[[str], Path], Path], Path]


def _missing(data: Callable[[str], Path], tmp: Path) -> Path:
    return tmp / "no_such_scan.nii.gz"


def _unknown_extension(data: Callable[[str], Path], tmp: Path) -> Path:
    path = tmp / "scan.xyz"
    path.write_bytes(bytes(range(256)) * 4)
    return path


def _empty(data: Callable[[str], Path], tmp: Path) -> Path:
    path = tmp / "empty.nii.gz"
    path.touch()
    return path


def _truncated(relative: str, fraction: float) -> Maker:
    def make(data: Callable[[str], Path], tmp: Path) -> Path:
        source = data(relative).read_bytes()
        path = tmp / f"truncated_{Path(relative).name}"
        path.write_bytes(source[: int(len(source) * fraction)])
        return path

    return make


def _no_dicom_folder(data: Callable[[str], Path], tmp: Path) -> Path:
    folder = tmp / "not_dicom"
    folder.mkdir()
    shutil.copy(data("medical/MANIFEST.md"), folder)
    shutil.copy(data("medical/antspy/r16slice.jpg"), folder)
    return folder


def _two_series_folder(data: Callable[[str], Path], tmp: Path) -> Path:
    folder = tmp / "two_series"
    folder.mkdir()
    for name in ("CT_small.dcm", "MR_small.dcm"):
        shutil.copy(data(f"medical/dicom_small/{name}"), folder)
    return folder


def _uneven_series(data: Callable[[str], Path], tmp: Path) -> Path:
    return data("medical/dicom_small/CT2_series")


def _not_an_image(data: Callable[[str], Path], tmp: Path) -> Path:
    path = tmp / "notes.nii"
    path.write_text("not a NIfTI header at all\n" * 40)
    return path


BAD_INPUTS = [
    pytest.param(_missing, UnreadableInputError, id="missing-path"),
    pytest.param(_unknown_extension, UnsupportedFormatError, id="unknown-extension"),
    pytest.param(_empty, UnreadableInputError, id="empty-file"),
    pytest.param(
        _truncated("medical/itk_kmeans_t1_3d/KmeansTest_T1UCharRaw.nii.gz", 0.6),
        UnreadableInputError,
        id="truncated-nii.gz",
    ),
    pytest.param(_truncated("medical/nibabel_anat_func/anatomical.nii", 0.5), UnreadableInputError, id="truncated-nii"),
    pytest.param(
        _truncated("medical/simpleitk_notebook_data/vm_head_mri.mha", 0.5), UnreadableInputError, id="truncated-mha"
    ),
    pytest.param(_truncated("medical/dicom_small/CT_small.dcm", 0.5), UnreadableInputError, id="truncated-dcm"),
    pytest.param(_not_an_image, UnreadableInputError, id="text-named-nii"),
    pytest.param(_no_dicom_folder, UnreadableInputError, id="folder-without-dicom"),
    pytest.param(_two_series_folder, AmbiguousSeriesError, id="folder-with-two-series"),
    pytest.param(_uneven_series, NonUniformSpacingError, id="uneven-dicom-series"),
]


@pytest.mark.parametrize(("make", "error"), BAD_INPUTS)
def test_bad_input_raises_the_right_error(
    make: Maker, error: type[Exception], data: Callable[[str], Path], tmp_path: Path
) -> None:
    path = make(data, tmp_path)
    with pytest.raises(error) as caught:
        cr.read(path)
    assert isinstance(caught.value, CoregisterError)
    assert path.name in str(caught.value)  # the message names the input


@pytest.mark.parametrize(("make", "error"), BAD_INPUTS)
def test_bad_input_on_the_command_line_is_one_line_and_exit_1(
    make: Maker, error: type[Exception], data: Callable[[str], Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = make(data, tmp_path)
    assert main(["info", str(path)]) == 1
    captured = capsys.readouterr()
    lines = captured.err.splitlines()
    assert len(lines) == 1, captured.err
    assert lines[0].startswith("coregister: error: ") and path.name in lines[0]
    assert "Traceback" not in captured.err and captured.out == ""


def test_verbose_shows_the_traceback(data: Callable[[str], Path], tmp_path: Path) -> None:
    with pytest.raises(UnreadableInputError):
        main(["-v", "info", str(tmp_path / "absent.mha")])


def test_truncated_gzip_names_the_fix(data: Callable[[str], Path], tmp_path: Path) -> None:
    path = _truncated("medical/itk_kmeans_t1_3d/KmeansTest_T1UCharRaw.nii.gz", 0.6)(data, tmp_path)
    with pytest.raises(UnreadableInputError, match="truncated or corrupt.*re-copy"):
        cr.read(path)


def test_folder_without_dicom_points_to_subfolders(data: Callable[[str], Path]) -> None:
    with pytest.raises(UnreadableInputError, match="CT_every8th, MR_T2_every2nd"):
        cr.read(data("medical/mri_dir_phantom"))


def _geotiff_without_crs(data: Callable[[str], Path], tmp: Path) -> tuple[Path, Affine, np.ndarray]:
    """A real Landsat band with its geotransform but no CRS."""
    with rasterio.open(data("geospatial/rasterio_landsat7/RGB.byte.tif")) as src:
        band = src.read(1)
        transform = src.transform
    path = tmp / "no_crs.tif"
    profile = {"driver": "GTiff", "width": band.shape[1], "height": band.shape[0], "count": 1, "dtype": "uint8"}
    with rasterio.open(path, "w", transform=transform, **profile) as dst:
        dst.write(band, 1)
    return path, transform, band


def test_geotiff_without_crs_reads_with_crs_none(data: Callable[[str], Path], tmp_path: Path) -> None:
    path, transform, band = _geotiff_without_crs(data, tmp_path)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no NotGeoreferencedWarning or anything else escapes
        image = cr.read(path)
    assert image.crs is None
    np.testing.assert_array_equal(image.array, band)
    for row, col in [(0, 0), (100, 250), (band.shape[0] - 1, band.shape[1] - 1)]:
        expected = transform @ (col + 0.5, row + 0.5)  # pixel centre
        np.testing.assert_allclose(image.index_to_world([[col, row]])[0], expected, atol=1e-6)


def test_geotiff_without_crs_on_the_command_line(
    data: Callable[[str], Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path, transform, band = _geotiff_without_crs(data, tmp_path)
    assert main(["info", "--json", str(path)]) == 0
    facts = json.loads(capsys.readouterr().out)
    assert "crs" not in facts and facts["size"] == [band.shape[1], band.shape[0]]
    np.testing.assert_allclose(facts["origin"], transform @ (0.5, 0.5), atol=1e-6)


def test_writing_onto_the_input_is_refused(data: Callable[[str], Path], tmp_path: Path) -> None:
    source = tmp_path / "anatomical.nii"
    shutil.copy(data("medical/nibabel_anat_func/anatomical.nii"), source)
    before = source.read_bytes()
    image = cr.read(source)
    with pytest.raises(OutputExistsError, match="overwrite"):
        cr.write(image, source)
    assert source.read_bytes() == before


def test_writing_into_a_missing_folder(data: Callable[[str], Path], tmp_path: Path) -> None:
    image = cr.read(data("medical/itk_ratlung_2d/RatLungSlice1.mha"))
    with pytest.raises(UnreadableInputError, match="does not exist"):
        cr.write(image, tmp_path / "no" / "such" / "folder" / "out.nii.gz")


@pytest.mark.parametrize("how", ["same_path", "relative_path", "symlink", "hardlink"])
def test_refuse_overwriting_input_sees_the_same_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, how: str) -> None:
    from coregister._files import refuse_overwriting_input

    source = tmp_path / "in.png"
    source.write_bytes(b"input")
    output = {"same_path": source, "relative_path": Path("in.png"), "symlink": tmp_path / "link.png",
              "hardlink": tmp_path / "hard.png"}[how]
    monkeypatch.chdir(tmp_path)
    if how == "symlink":
        output.symlink_to(source)
    elif how == "hardlink":
        output.hardlink_to(source)
    # The refusal is an OSError (FileExistsError): it must reach the caller, not be mistaken for a probe failure.
    with pytest.raises(OutputExistsError, match="refusing to overwrite the input") as caught:
        refuse_overwriting_input(output, source, fix="choose another path")
    assert isinstance(caught.value, FileExistsError) and "choose another path" in str(caught.value)


@pytest.mark.parametrize("case", ["other_file", "output_missing", "source_missing", "no_source", "unreadable_folder"])
def test_refuse_overwriting_input_lets_other_outputs_through(tmp_path: Path, case: str) -> None:
    from coregister._files import refuse_overwriting_input

    source = tmp_path / "in.png"
    source.write_bytes(b"input")
    (tmp_path / "other.png").write_bytes(b"other")
    output, given = {
        "other_file": (tmp_path / "other.png", source),
        "output_missing": (tmp_path / "new.png", source),
        "source_missing": (tmp_path / "other.png", tmp_path / "gone.png"),
        "no_source": (tmp_path / "other.png", None),
        "unreadable_folder": (Path("/proc/1/root/x.png"), source),  # stat() fails with PermissionError
    }[case]
    assert refuse_overwriting_input(output, given, fix="choose another path") is None


# ------------------------------------------------------------ unwritable outputs
UNWRITABLE = Path("/proc/coregister-out")  # exists on every Linux; refuses new files even to root
BRAINWEB = "medical/itk_brainweb_2d"


def test_writing_where_the_file_system_refuses_names_the_target(data: Callable[[str], Path]) -> None:
    image = cr.read(data("medical/itk_ratlung_2d/RatLungSlice1.mha"))
    with pytest.raises(UnwritableOutputError, match=r"cannot write to '/proc/out.nii.gz' \(.*\); choose another") as caught:
        cr.write(image, "/proc/out.nii.gz")
    assert ".part" not in str(caught.value) and isinstance(caught.value, OSError)


@pytest.mark.parametrize(
    "case, message",
    [
        ("file_in_missing_folder", r"its folder '.*no-such' does not exist\); create it or choose"),
        ("file_is_a_folder", "it is a folder; give a file path"),
        ("folder_is_a_file", "it exists and is not a folder"),
        ("folder_without_parent", r"its folder '.*no-such' does not exist\)"),
        ("proc_file", r"\(the file system there accepts no new files\)"),
        ("proc_folder", r"\(the file system there accepts no new files\)"),
    ],
)
def test_check_writable_refuses_early_and_says_why(tmp_path: Path, case: str, message: str) -> None:
    from coregister._files import check_writable

    (tmp_path / "a_file").write_text("x")
    call = {
        "file_in_missing_folder": lambda: check_writable(tmp_path / "no-such" / "out.tif"),
        "file_is_a_folder": lambda: check_writable(tmp_path),
        "folder_is_a_file": lambda: check_writable(tmp_path / "a_file", folder=True),
        "folder_without_parent": lambda: check_writable(tmp_path / "no-such" / "out", folder=True),
        "proc_file": lambda: check_writable(UNWRITABLE.parent / "x.tif"),
        "proc_folder": lambda: check_writable(UNWRITABLE, folder=True, parents=True),
    }[case]
    with pytest.raises(UnwritableOutputError, match=message):
        call()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a_file"]  # no probe left behind


def test_check_writable_accepts_new_folders_under_a_writable_one(tmp_path: Path) -> None:
    from coregister._files import check_writable

    deep = tmp_path / "a" / "b" / "c"
    assert check_writable(deep, folder=True, parents=True) == deep
    assert check_writable(tmp_path / "new", folder=True) == tmp_path / "new"
    assert list(tmp_path.iterdir()) == []  # the check creates nothing


@pytest.mark.parametrize("command", ["register", "apply", "geo-coreg", "geo-change", "geo-georef", "batch", "demo",
                                     "data-fetch"])
def test_commands_refuse_an_unwritable_output_before_any_work(
    data: Callable[[str], Path], tmp_path: Path, capsys: pytest.CaptureFixture[str], command: str
) -> None:
    """Every command that writes checks its output location first: one line naming the path the user gave and the
    fix, never a hidden temporary file; the inputs here do not even exist, so no work could have started."""
    missing = str(tmp_path / "missing.tif")
    pairs = tmp_path / "pairs.csv"
    pairs.write_text(f"fixed,moving\n{missing},{missing}\n")
    args = {
        "register": ["register", missing, missing, "-o", str(UNWRITABLE)],
        "apply": ["apply", missing, missing, "--reference", missing, "-o", str(UNWRITABLE.parent / "out.png")],
        "geo-coreg": ["geo", "coreg", missing, missing, "-o", str(UNWRITABLE.parent / "out.tif")],
        "geo-change": ["geo", "change", missing, missing, "-o", str(UNWRITABLE.parent / "out.tif")],
        "geo-georef": ["geo", "georef", missing, "--gcps", missing, "--crs", "EPSG:32633", "-o",
                       str(UNWRITABLE.parent / "out.tif")],
        "batch": ["batch", str(pairs), "-o", str(UNWRITABLE)],
        "demo": ["demo", "-o", str(UNWRITABLE)],
        "data-fetch": ["data", "fetch", "nibabel_anat_func", "--dest", str(UNWRITABLE)],
    }[command]
    capsys.readouterr()
    assert main(args) == 1
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(lines) == 1, lines
    assert lines[0].startswith(f"coregister: error: cannot write to '{UNWRITABLE.parent}/") and "choose another" in lines[0]
    assert "accepts no new files" in lines[0]
    assert ".part" not in lines[0] and "probe" not in lines[0]
