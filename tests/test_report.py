"""The HTML quality-control report: content, embedded pictures, transform flags, Jacobian maths, orientation.

The browser checks (page loads, pictures decode, screenshot not blank) are
in ``test_report_browser.py``. Here the report is parsed as HTML and its
numbers are checked against transforms built with known parameters.
"""

from __future__ import annotations

import base64
import html.parser
import io
import re
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from PIL import Image

import coregister as cr
from coregister import (
    Affine,
    BSpline,
    Composite,
    Homography,
    QualityReport,
    Result,
    Rigid,
    SpatialImage,
    Translation,
    Verdict,
)
from coregister._pictures import _lps_volume, colour_overlay
from coregister.engines.base import LevelHistory
from coregister.errors import UnreadableInputError
from coregister.measures import jacobian_determinant
from coregister.qc.figures import checkerboard
from coregister.qc.geo_report import TiePoints, write_geo_report
from coregister.qc.report import transform_flags, write_report


class _Images(html.parser.HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.sources: list[str] = []
        self.ids: list[str] = []
        self.links: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        if tag == "img":
            self.sources.append(values.get("src") or "")
        if values.get("id"):
            self.ids.append(values["id"] or "")
        for key in ("href", "src"):
            if values.get(key):
                self.links.append(values[key] or "")


def _parse(path: Path) -> _Images:
    parser = _Images()
    parser.feed(path.read_text(encoding="utf-8"))
    return parser


def _decoded_pngs(parser: _Images) -> list[np.ndarray]:
    out = []
    for src in parser.sources:
        assert src.startswith("data:image/png;base64,")
        with Image.open(io.BytesIO(base64.b64decode(src.split(",", 1)[1]))) as im:
            assert im.format == "PNG"
            out.append(np.asarray(im.convert("RGB")))
    return out


def _brainweb(data) -> SpatialImage:
    return cr.read(data("medical/itk_brainweb_2d/BrainProtonDensitySliceBorder20.png"), grayscale=True)


def _history() -> tuple[LevelHistory, ...]:
    return tuple(
        LevelHistory("rigid", level, shrink, sigma, tuple(np.linspace(-0.2, -0.8 - 0.05 * level, 15)))
        for level, (shrink, sigma) in enumerate([(4, 2.0), (2, 1.0), (1, 0.0)])
    )


def _result(transform, **kw) -> Result:
    base = {
        "metrics": {"before": {"ncc": 0.61, "mi": 0.4, "mse": 900.0}, "after": {"ncc": 0.98, "mi": 1.1, "mse": 40.0}},
        "engine": "sitk",
    }
    base.update(kw)
    return Result(transform=transform, **base)


# --------------------------------------------------------------- 2D report
def test_report_2d_real_image(data, tmp_path: Path) -> None:
    fixed = _brainweb(data)
    truth = Rigid.from_angles(np.deg2rad(7.0), translation=(6.0, -4.0), center=(110.0, 128.0))
    moving = cr.apply(truth.inverse(), fixed)
    registered = cr.apply(truth, moving, reference=fixed)
    path = write_report(_result(truth, history=_history()), fixed, moving, registered, tmp_path / "report.html")
    text = path.read_text(encoding="utf-8")
    parser = _parse(path)
    for section in ("summary", "metrics", "checkerboard", "overlay", "difference", "convergence", "transform", "decomposition"):
        assert section in parser.ids
    pictures = _decoded_pngs(parser)
    assert len(pictures) == 4  # checkerboard, overlay, difference, convergence
    assert all(p.shape[0] > 100 and p.shape[1] > 100 and p.std() > 10 for p in pictures)
    # no reference leaves the file: every src/href is a data URI
    assert all(link.startswith("data:") for link in parser.links)
    # the decomposition shows the known angle and offset, and nothing unusual
    row = re.search(r"rotation \(degrees\)</td><td[^>]*>([-0-9.]+)</td>", text)
    assert row is not None and float(row.group(1)) == pytest.approx(7.0, abs=1e-4)
    assert "No unusual value" in text
    assert text.count('class="better">better') == 3


def test_report_flags_unusual_affine_and_worse_metrics(data, tmp_path: Path) -> None:
    fixed = _brainweb(data)
    stretched = Affine(np.array([[2.5, 0.3], [0.0, 0.9]]), center=(110.0, 128.0))
    result = _result(
        stretched,
        metrics={"before": {"ncc": 0.9}, "after": {"ncc": 0.5}},
        quality=QualityReport(Verdict.FAILED, failures=("ncc got worse: 0.9 -> 0.5",)),
        warnings=("ncc got worse: 0.9 -> 0.5",),
    )
    path = write_report(result, fixed, fixed, None, tmp_path / "report.html")
    text = path.read_text(encoding="utf-8")
    assert "quality check FAILED" in text and "ncc got worse" in text
    assert 'class="worse">worse' in text
    assert "scale 2.5 along axis 0 is outside [0.5, 2]" in text
    assert re.search(r'<td class="flag">2\.5000</td>', text)
    assert "convergence" in _parse(path).ids and "recorded no per-iteration history" in text


@pytest.mark.parametrize(
    "matrix, expected",
    [
        (np.eye(3), []),
        (np.diag([1.0, 1.0, 0.4]), ["scale 0.4 along axis 2 is outside [0.5, 2]"]),
        (np.array([[1.0, 0.25], [0.0, 1.0]]), []),  # within the quality check's MAX_SHEAR
        (np.array([[1.0, 0.35], [0.0, 1.0]]), ["shear 0.35 (term 0) exceeds 0.3"]),
        (np.diag([-1.0, 1.0]), ["the matrix includes a reflection (negative determinant)"]),
        (cr.transforms.rotation_matrix(np.deg2rad(60.0)), ["rotation 60.0 degrees (angle 0) exceeds 45 degrees"]),
    ],
)
def test_transform_flags(matrix: np.ndarray, expected: list[str]) -> None:
    assert transform_flags(Affine(matrix)) == expected


def test_report_homography(tmp_path: Path) -> None:
    from skimage.data import camera

    fixed = SpatialImage(camera()[::2, ::2], origin=(0, 0), spacing=(1, 1))
    h = Homography(np.array([[1.02, 0.03, 4.0], [-0.02, 0.98, -3.0], [1e-4, -5e-5, 1.0]]))
    path = write_report(_result(h, engine="features"), fixed, fixed, None, tmp_path / "h.html")
    text = path.read_text(encoding="utf-8")
    assert "Perspective terms" in text and "0.0001<" in text
    assert len(_decoded_pngs(_parse(path))) == 3


# ------------------------------------------------------------ deformation
def _bspline(grid: SpatialImage, amplitude_mm: float, seed: int = 3, mesh: int = 4) -> BSpline:
    image = grid.to_sitk()
    tx = sitk.BSplineTransformInitializer(image, [mesh] * grid.ndim, order=3)
    rng = np.random.default_rng(seed)
    tx.SetParameters(tuple(rng.uniform(-amplitude_mm, amplitude_mm, len(tx.GetParameters()))))
    return cr.transforms.from_sitk(tx)


def test_report_deformable_shows_folding(data, tmp_path: Path) -> None:
    fixed = _brainweb(data)
    folding = Composite((Rigid.from_angles(0.05, center=(110.0, 128.0)), _bspline(fixed, 40.0, mesh=8)))
    path = write_report(_result(folding), fixed, fixed, None, tmp_path / "fold.html")
    text = path.read_text(encoding="utf-8")
    fraction = float(re.search(r'id="folding-fraction">([0-9.]+)<', text).group(1))
    det = jacobian_determinant(folding, fixed, max_points=600_000).array
    assert fraction == pytest.approx(float(np.mean(det <= 0)), abs=1e-6) and fraction > 0.01
    assert "Folding: the map is not invertible" in text
    smooth = write_report(_result(_bspline(fixed, 0.5)), fixed, fixed, None, tmp_path / "smooth.html")
    assert "No folding" in smooth.read_text(encoding="utf-8")
    assert len(_decoded_pngs(_parse(smooth))) == 5  # + Jacobian map and warped grid


@pytest.mark.parametrize("ndim", [2, 3])
def test_jacobian_of_affine_is_its_determinant(ndim: int) -> None:
    rng = np.random.default_rng(ndim)
    matrix = np.eye(ndim) + rng.uniform(-0.2, 0.2, (ndim, ndim))
    direction = cr.transforms.rotation_matrix(np.deg2rad([20.0] if ndim == 2 else [10.0, -15.0, 30.0]))
    grid = SpatialImage(
        np.zeros((9, 11, 13)[-ndim:]), origin=(3.0, -2.0, 1.0)[:ndim], spacing=(0.7, 1.3, 2.1)[:ndim], direction=direction
    )
    det = jacobian_determinant(Affine(matrix, translation=rng.normal(size=ndim)), grid).array
    np.testing.assert_allclose(det, np.linalg.det(matrix), rtol=1e-9)


def test_jacobian_of_bspline_matches_simpleitk(data) -> None:
    grid = _brainweb(data)
    bspline = _bspline(grid, 3.0)
    sampled = jacobian_determinant(bspline, grid, max_points=10**7)
    det = sampled.array
    assert sampled.same_geometry(grid)
    field = sitk.TransformToDisplacementField(
        bspline.to_sitk(), sitk.sitkVectorFloat64, grid.size, grid.origin, grid.spacing, grid.direction.ravel().tolist()
    )
    reference = sitk.GetArrayFromImage(sitk.DisplacementFieldJacobianDeterminant(field))
    inner = (slice(1, -1), slice(1, -1))  # ITK and numpy treat the border differently
    np.testing.assert_allclose(det[inner], reference[inner], atol=1e-6)


# ------------------------------------------------------------- pictures
def test_checkerboard_and_overlay() -> None:
    a, b = np.zeros((6, 9)), np.ones((6, 9))
    board = checkerboard(a, b, tiles=3)
    assert board[0, 0] == 0 and board[0, 3] == 1 and board[3, 0] == 1 and board[3, 3] == 0
    rgb = colour_overlay(np.full((2, 2), 0.25), np.full((2, 2), 0.75))
    assert rgb.shape == (2, 2, 3) and rgb[0, 0].tolist() == [0.25, 0.75, 0.25]


def test_an_aligned_pair_looks_grey_whatever_each_image_s_range() -> None:
    """Each image is windowed on its own percentiles (its padding left out): an aligned pair of very different
    ranges (a CT-like copy: x 1000, -2048 padding) overlays grey, and a shifted one does not."""
    from coregister._pictures import colour_overlay, stretch

    y, x = np.mgrid[0:96, 0:96]
    tissue = np.exp(-((x - 48.0) ** 2 + (y - 44.0) ** 2) / 300) + 0.5 * np.exp(-((x - 30.0) ** 2 + (y - 60.0) ** 2) / 40)
    ct = 1000.0 * tissue - 1000.0
    ct[:, :12] = -2048.0  # padding
    valid = np.ones(ct.shape, bool)
    aligned = colour_overlay(stretch(tissue), stretch(ct), valid)
    shifted = colour_overlay(stretch(tissue), stretch(np.roll(ct, 15, axis=1)), valid)
    spread = lambda rgb: float(np.abs(rgb[..., 0] - rgb[..., 1])[:, 12:].mean())  # noqa: E731
    assert spread(aligned) < 0.01 and spread(shifted) > 0.05


@pytest.mark.parametrize("flips", [(), (0,), (0, 1), (0, 1, 2)])
def test_volume_views_do_not_depend_on_storage_order(flips: tuple[int, ...]) -> None:
    """The same world content stored with flipped/permuted axes gives the same LPS-ordered volume."""
    rng = np.random.default_rng(0)
    world = rng.random((5, 6, 7))  # (z, y, x) with identity direction: x=L, y=P, z=S
    array = world
    direction = np.eye(3)
    for axis in flips:  # flip index axis `axis` (x=0, y=1, z=2): array axis 2 - axis
        array = np.flip(array, axis=2 - axis)
        direction[:, axis] *= -1
    permuted = np.transpose(array, (1, 0, 2))  # store y as the slowest axis: index axes become (x, z, y)
    direction_p = direction[:, [0, 2, 1]]
    expected = np.transpose(world, (2, 1, 0))
    for values, d in ((array, direction), (permuted, direction_p)):
        lps, _ = _lps_volume(values, d, (1.0, 1.0, 1.0))
        np.testing.assert_array_equal(lps, expected)


def test_report_3d_volume(data, tmp_path: Path) -> None:
    fixed = cr.read(data("medical/itk_kmeans_t1_3d/KmeansTest_T1UCharRaw.nii.gz"))
    truth = Rigid.from_angles(np.deg2rad([3.0, -2.0, 5.0]), translation=(4.0, -2.0, 3.0), center=(127.0, 127.0, 93.0))
    moving = cr.apply(truth.inverse(), fixed)
    path = write_report(_result(truth, history=_history()), fixed, moving, None, tmp_path / "vol.html")
    pictures = _decoded_pngs(_parse(path))
    assert len(pictures) == 4
    assert "three orthogonal planes" in path.read_text(encoding="utf-8")
    # each comparison figure holds 2 rows x 3 planes; the overlay "after" row is nearly grey (aligned)
    overlay = pictures[1].astype(float)
    lower = overlay[overlay.shape[0] // 2 :]
    colourful = np.abs(lower[..., 1] - lower[..., 0]) > 60
    upper = overlay[: overlay.shape[0] // 2]
    assert colourful.mean() < 0.2 * (np.abs(upper[..., 1] - upper[..., 0]) > 60).mean()


# ----------------------------------------------------------------- geo
def test_geo_report_draws_tie_points(data, tmp_path: Path) -> None:
    reference = cr.read(data("geospatial/rasterio_landsat7/RGB.byte.tif"))
    target = reference.replace(origin=(reference.origin[0] + 60.0, reference.origin[1] - 90.0))
    x0, y0 = reference.index_to_world([[200, 200]])[0]
    points = {
        "x": [x0, x0 + 30000, x0, x0 + 30000],
        "y": [y0, y0, y0 - 30000, y0 - 30000],
        "dx": [-60.0, -61.0, -59.0, 400.0],
        "dy": [90.0, 91.0, 89.0, -300.0],
        "kept": [True, True, True, False],
    }
    path = write_geo_report(
        reference, target, reference, tmp_path / "geo.html", tie_points=points, shift_px=(-0.2, -0.3),
        details={"mode": "local"},
    )
    text = path.read_text(encoding="utf-8")
    assert "3 of 4 tie points kept" in text and "-0.200, -0.300 px" in text
    assert "tie-points" in _parse(path).ids and "detail" in _parse(path).ids
    assert len(_decoded_pngs(_parse(path))) == 5  # checkerboard, overlay, difference, full-resolution detail, tie points
    records = [dict(zip(points, row, strict=True)) for row in zip(*points.values(), strict=True)]
    assert TiePoints.from_records(records).kept.tolist() == points["kept"]


# --------------------------------------------------------------- writing
def test_report_is_written_atomically(tmp_path: Path) -> None:
    image = SpatialImage(np.random.default_rng(1).random((32, 32)), origin=(0, 0), spacing=(1, 1))
    result = _result(Translation([0.0, 0.0]))
    with pytest.raises(UnreadableInputError, match="does not exist"):
        write_report(result, image, image, None, tmp_path / "missing" / "r.html")
    assert not (tmp_path / "missing").exists()
    target = tmp_path / "r.html"
    target.write_text("old")
    write_report(result, image, image, None, target)
    assert target.read_text(encoding="utf-8").startswith("<!DOCTYPE html>")
    assert [p.name for p in tmp_path.iterdir()] == ["r.html"]


# ------------------------------------------------------- with register()
def test_report_of_a_real_registration(data, tmp_path: Path) -> None:
    """register() -> write_report: the curves come from the engine's per-level history, the numbers from the Result."""
    folder = data("medical/itk_brainweb_2d")
    fixed = cr.read(folder / "BrainProtonDensitySliceBorder20.png", grayscale=True)
    moving = cr.read(folder / "BrainProtonDensitySliceShifted13x17y.png", grayscale=True)
    result = cr.register(fixed, moving, preset="translation", metric="ncc")
    assert result.history and all(level.metric_values for level in result.history)
    path = write_report(result, fixed, moving, None, tmp_path / "report.html")
    text = path.read_text(encoding="utf-8")
    assert "BrainProtonDensitySliceShifted13x17y.png → BrainProtonDensitySliceBorder20.png" in text
    row = re.search(r"offset of the world matrix \(pixels\)</td><td[^>]*>([-0-9.]+)</td><td[^>]*>([-0-9.]+)</td>", text)
    assert row is not None  # PNG: pixels, not mm
    np.testing.assert_allclose([float(row.group(1)), float(row.group(2))], [13.0, 17.0], atol=0.2)
    legend_levels = len(result.history)
    assert legend_levels >= 2 and len(_decoded_pngs(_parse(path))) == 4


@pytest.mark.parametrize(("metric", "name"), [("ncc", "normalised correlation"), ("mattes", "Mattes MI")])
def test_report_says_what_produced_it(data, tmp_path: Path, metric: str, name: str) -> None:
    """The final metric with its name, the preset, the engine, the inputs' full paths and the command line."""
    folder = data("medical/itk_brainweb_2d")
    fixed = cr.read(folder / "BrainProtonDensitySliceBorder20.png", grayscale=True)
    moving = cr.read(folder / "BrainProtonDensitySliceShifted13x17y.png", grayscale=True)
    result = cr.register(fixed, moving, preset="translation", metric=metric)
    command = f"coregister register {folder}/BrainProtonDensitySliceBorder20.png ... --metric {metric}"
    path = write_report(result, fixed, moving, None, tmp_path / "report.html", command=command)
    text = path.read_text(encoding="utf-8")
    final = re.search(r'<td class="l" id="final-metric">([^<]*)</td>', text)
    assert final is not None and final.group(1) == f"{name} {result.final_metric:.4f}"
    assert f"final_metric ({name}; ITK minimises it)" in text
    summary = re.search(r'<table id="summary">.*?</table>', text).group(0)
    assert f'<td class="l">{result.engine}</td><td class="l">translation</td>' in summary
    assert f"<code>{command}</code>" in text
    inputs = re.search(r'<table id="inputs">.*?</table>', text).group(0)
    assert str(folder / "BrainProtonDensitySliceBorder20.png") in inputs
    assert str(folder / "BrainProtonDensitySliceShifted13x17y.png") in inputs


def test_report_names_the_two_translations(data, tmp_path: Path) -> None:
    """A rotation about a centre c: the world matrix's offset and ITK's translation about c differ; the report shows
    both under their own names, and result.json's decomposition names them too."""
    import json

    fixed = _brainweb(data)
    truth = Rigid.from_angles(np.deg2rad(7.0), translation=(6.0, -4.0), center=(110.0, 128.0))
    result = _result(truth)
    text = write_report(result, fixed, fixed, None, tmp_path / "r.html").read_text(encoding="utf-8")

    def row(label: str) -> list[float]:
        found = re.search('<td class="l">' + re.escape(label) + r"</td><td[^>]*>([-0-9.]+)</td><td[^>]*>([-0-9.]+)</td>", text)
        assert found is not None, label
        return [float(found.group(1)), float(found.group(2))]

    offset = truth.offset
    assert np.hypot(*(offset - np.array([6.0, -4.0]))) > 10  # the two quantities really differ here
    np.testing.assert_allclose(row("offset of the world matrix (pixels)"), offset, atol=1e-4)
    np.testing.assert_allclose(row("translation about centre c (pixels)"), [6.0, -4.0], atol=1e-4)
    np.testing.assert_allclose(row("centre c (pixels)"), [110.0, 128.0], atol=1e-4)
    saved = json.loads(result.to_json())["transform"]
    np.testing.assert_allclose(saved["decomposition"]["offset"], offset, atol=1e-12)
    np.testing.assert_allclose(saved["decomposition"]["translation_about_center"], saved["translation"], atol=1e-12)
    np.testing.assert_allclose(saved["decomposition"]["center"], saved["center"], atol=1e-12)
    np.testing.assert_allclose(np.array(saved["world_matrix"])[:2, 2], offset, atol=1e-12)


def test_geo_report_from_paths_in_another_crs(data, tmp_path: Path) -> None:
    """Paths are read as previews and the target is reprojected onto the reference by GDAL (EPSG:3857 -> 32618)."""
    from coregister.measures import ncc
    from coregister.qc.geo_report import _raster_preview, _warped_onto

    folder = data("geospatial/rasterio_landsat7")
    reference, target = folder / "rgb1.tif", folder / "rgb1_fake_nir_epsg3857.tif"
    preview = _raster_preview(reference, 2, 200)
    full = cr.read(reference)
    assert max(preview.shape) == 200 and preview.crs == full.crs
    corner = full.index_to_world([[-0.5, -0.5]])[0]
    np.testing.assert_allclose(preview.index_to_world([[-0.5, -0.5]])[0], corner, atol=1e-6)  # same extent
    warped = _warped_onto(preview, target, 1)
    valid = np.isfinite(warped.array) & np.isfinite(preview.array) & (preview.array > 0)
    assert valid.mean() > 0.5 and ncc(preview.array, warped.array, valid) > 0.85  # the fake NIR follows band 2
    path = write_geo_report(reference, target, None, tmp_path / "geo.html", reference_band=2)
    assert len(_decoded_pngs(_parse(path))) == 4  # + the full-resolution detail
    with pytest.raises(cr.GeometryError, match="give its path"):
        write_geo_report(cr.read(reference), cr.read(target), None, tmp_path / "bad.html")


def test_cli_geo_coreg_writes_its_report(data, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``coregister geo coreg ... --report``: the report lands beside the output, with the windows drawn."""
    from coregister.cli import main
    from coregister.qc.synthetic import write_shifted_raster

    reference = cr.read(data("geospatial/rasterio_landsat7/RGB.byte.tif"), bands=[2])
    ref_path = cr.write(reference, tmp_path / "ref.tif")
    tgt_path = write_shifted_raster(ref_path, tmp_path / "tgt.tif", (0.4, -0.3))
    assert main(["geo", "coreg", str(ref_path), str(tgt_path), "-o", str(tmp_path / "out.tif"), "--report"]) == 0
    assert "report: " in capsys.readouterr().out
    report = tmp_path / "out.report.html"
    text = report.read_text(encoding="utf-8")
    assert "tie-points" in _parse(report).ids and "Tie points" in text and "histogram-equalised" in text
    assert len(_decoded_pngs(_parse(report))) == 5


def _summary(path: Path) -> dict[str, str]:
    import html as html_module

    table = re.search(r'<table id="summary">(.*?)</table>', path.read_text(encoding="utf-8")).group(1)
    cells = re.findall(r'<tr><td class="l">(.*?)</td><td class="l">(.*?)</td></tr>', table)
    return {html_module.unescape(k): html_module.unescape(v) for k, v in cells}


def test_cli_geo_report_of_the_s2_pair_says_what_ran(data, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The 10 m Sentinel-2 pair (a 1200 px preview of 3200 rows): the report gives the reference's own pixel size (not
    the preview's 26.7 m), the inputs, output, mode, command, correction in pixels and metres, and the time."""
    import json

    from coregister.cli import main

    folder = data("geospatial/arosics_s2_T33UUU")
    ref, tgt = folder / "ref_S2A_20160608T153121_T33UUU_sub.tif", folder / "tgt_S2A_20160529T153631_T33UUU_sub.tif"
    out = tmp_path / "corrected.tif"
    assert main(["geo", "coreg", str(ref), str(tgt), "-o", str(out), "--max-windows", "9", "--report", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    rows = _summary(tmp_path / "corrected.report.html")
    assert rows["reference pixel size (x, y)"] == "10 x 10 metre"
    assert rows["reference"] == str(ref) and rows["target"] == str(tgt) and rows["output"] == str(out)
    assert rows["mode"] == "shift" and rows["windows used"] == f"{sum(w['used'] for w in result['windows'])} of 9"
    assert rows["command"] == f"coregister geo coreg {ref} {tgt} --output {out} --max-windows 9 --report --json"
    dcol, drow = result["shift_px"]
    dx, dy = result["shift_map"]
    assert rows["correction (columns, rows)"] == f"{dcol:+.3f}, {drow:+.3f} px"
    assert rows["correction (x east, y north)"] == f"{dx:+.3f}, {dy:+.3f} metre"
    assert dx == pytest.approx(10 * dcol) and abs(drow - 1.8) < 0.15
    assert re.fullmatch(r"\d+\.\d\d s", rows["time"])


def test_geo_report_detail_shows_the_shift_at_full_resolution(data, tmp_path: Path) -> None:
    """The detail is a full-resolution square around the most reliable window, where the S2 pair's ~1.9 px
    misregistration is there before and gone after (phase correlation of the drawn arrays)."""
    from coregister.geo import coregister
    from coregister.phase import phase_correlate
    from coregister.qc.geo_report import _detail_centre, _full_resolution_crop, _warped_onto

    folder = data("geospatial/arosics_s2_T33UUU")
    ref, tgt = folder / "ref_S2A_20160608T153121_T33UUU_sub.tif", folder / "tgt_S2A_20160529T153631_T33UUU_sub.tif"
    result = coregister(ref, tgt, output=tmp_path / "c.tif", max_windows=9)
    best = max(result.used_windows, key=lambda w: w.reliability)
    crop = _full_resolution_crop(ref, _detail_centre(result, cr.read(ref)), 256, 1, 0.0)
    assert crop.shape == (256, 256) and crop.spacing == pytest.approx((10.0, 10.0))
    np.testing.assert_allclose(crop.world_centre, [best.x - 5.0, best.y + 5.0], atol=1e-6)  # 256 px: centre between pixels
    shifts = {}
    for name, source in (("before", tgt), ("after", result.output)):
        moved = _warped_onto(crop, source, 1, nodata=0.0).array
        ok = np.isfinite(moved) & np.isfinite(crop.array)
        shifts[name] = np.hypot(*phase_correlate(np.nan_to_num(crop.array), np.nan_to_num(moved), mask=ok).shift)
    assert shifts["before"] > 1.5 and shifts["after"] < 0.3, shifts
