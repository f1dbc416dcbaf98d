"""The HTML report in a real browser: headless Chromium (Debian's ``chromium`` + ``chromium-driver``) via selenium.

Each report must load with no console error, request nothing from the
network, decode every picture (``naturalWidth > 0``), and render a
screenshot that is not blank; every figure of the demo's reports is
screenshot on its own and must hold a picture (not one flat colour). Where
the browser or its driver is missing the test skips, naming the missing
piece, except under CI (``COREGISTER_CI=1``, set by ``.ci/run``, which
installs Chromium), where it fails.
"""

from __future__ import annotations

import io
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

import coregister as cr
from coregister import Composite, QualityReport, Result, Rigid, Verdict
from coregister.engines.base import LevelHistory
from coregister.qc.geo_report import write_geo_report
from coregister.qc.report import write_report

pytestmark = pytest.mark.browser

CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
)


def missing_browser_pieces(which: Any = shutil.which) -> str | None:
    """What is missing to drive headless Chromium, named piece by piece (None when nothing is).

    >>> missing_browser_pieces(lambda name: None if name == "chromedriver" else f"/usr/bin/{name}")
    'chromedriver not found (Chromium is installed; its driver is not: apt-get install -y chromium-driver)'
    """
    binary = which("chromium") or which("chromium-browser")
    driver = which("chromedriver")
    if binary is None and driver is None:  # say which piece is missing: a driver alone is a common gap
        return ("headless Chromium not found: neither the browser nor its driver "
                "(apt-get install -y chromium chromium-driver)")
    if binary is None:
        return "the chromium browser not found (chromedriver is installed; the browser is not: apt-get install -y chromium)"
    if driver is None:
        return "chromedriver not found (Chromium is installed; its driver is not: apt-get install -y chromium-driver)"
    return None


def _chromium() -> tuple[str, str]:
    message = missing_browser_pieces()
    if message is not None:
        if os.environ.get("COREGISTER_CI") == "1":
            pytest.fail(message)
        pytest.skip(message)
    binary = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    assert binary is not None and driver is not None
    return binary, driver


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    binary, driver_path = _chromium()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    profile = tempfile.mkdtemp(prefix="coregister-chromium-")
    options.add_argument(f"--user-data-dir={profile}")
    options.add_argument("--window-size=1200,900")
    options.binary_location = binary
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(options=options, service=Service(driver_path))
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def _history() -> tuple[LevelHistory, ...]:
    return tuple(
        LevelHistory("rigid", level, 2.0 ** (2 - level), 2.0 - level, tuple(np.linspace(-0.3, -0.9, 12)))
        for level in range(3)
    )


def _report_2d(data, folder: Path) -> Path:
    fixed = cr.read(data("medical/itk_brainweb_2d/BrainProtonDensitySliceBorder20.png"), grayscale=True)
    truth = Rigid.from_angles(np.deg2rad(8.0), translation=(5.0, 3.0), center=(110.0, 128.0))
    moving = cr.apply(truth.inverse(), fixed)
    result = Result(transform=truth, metrics={"before": {"ncc": 0.7}, "after": {"ncc": 0.99}}, history=_history())
    return write_report(result, fixed, moving, None, folder / "report2d.html")


def _report_3d_deformable(data, folder: Path) -> Path:
    import SimpleITK as sitk

    fixed = cr.read(data("medical/itk_kmeans_t1_3d/KmeansTest_T1UCharRaw.nii.gz"))
    tx = sitk.BSplineTransformInitializer(fixed.to_sitk(), [3, 3, 3], order=3)
    tx.SetParameters(tuple(np.random.default_rng(0).uniform(-4.0, 4.0, len(tx.GetParameters()))))
    truth = Composite((Rigid.from_angles(np.deg2rad([2.0, 0.0, 4.0]), center=(127.0, 127.0, 93.0)), cr.transforms.from_sitk(tx)))
    moving = cr.apply(truth, fixed)  # only the pictures matter here
    result = Result(transform=truth, metrics={"before": {"mi": 0.5}, "after": {"mi": 0.9}}, history=_history(),
                    quality=QualityReport(Verdict.FAILED, notes=("example: a level stopped at its iteration cap",)),
                    warnings=("example: a level stopped at its iteration cap",))
    return write_report(result, fixed, moving, None, folder / "report3d.html")


def _report_geo(data, folder: Path) -> Path:
    reference = cr.read(data("geospatial/rasterio_landsat7/RGB.byte.tif"))
    target = reference.replace(origin=(reference.origin[0] + 90.0, reference.origin[1]))
    xs, ys = np.meshgrid(np.linspace(150, 600, 4), np.linspace(150, 550, 4))
    world = reference.index_to_world(np.column_stack([xs.ravel(), ys.ravel()]))
    points = {"x": world[:, 0], "y": world[:, 1], "dx": np.full(16, -90.0), "dy": np.zeros(16),
              "kept": np.arange(16) % 5 != 0}
    return write_geo_report(reference, target, reference, folder / "geo.html", tie_points=points, shift_px=(-0.3, 0.0))


@pytest.fixture(scope="module")
def reports() -> dict[str, Path]:
    from conftest import require_data  # the `data` fixture's function (module scope cannot take the fixture)

    folder = Path(tempfile.mkdtemp(prefix="coregister-reports-"))
    return {
        "2d": _report_2d(require_data, folder),
        "3d": _report_3d_deformable(require_data, folder),
        "geo": _report_geo(require_data, folder),
    }


@pytest.mark.parametrize("kind, pictures", [("2d", 4), ("3d", 6), ("geo", 5)])  # 3d: w-def's deformation figure too
def test_report_renders_in_chromium(browser: Any, reports: dict[str, Path], kind: str, pictures: int) -> None:
    browser.get(reports[kind].resolve().as_uri())
    browser.get_log("browser")  # drop anything logged before this page
    browser.refresh()
    state = browser.execute_script(
        "return {ready: document.readyState,"
        " images: Array.from(document.images).map(i => [i.complete, i.naturalWidth, i.naturalHeight]),"
        " resources: performance.getEntriesByType('resource').map(e => e.name),"
        " height: document.body.scrollHeight};"
    )
    assert state["ready"] == "complete"
    assert len(state["images"]) == pictures
    assert all(complete and width > 0 and height > 0 for complete, width, height in state["images"]), state["images"]
    assert [r for r in state["resources"] if not r.startswith("data:")] == [], "the report must not fetch anything"
    errors = [entry for entry in browser.get_log("browser") if entry["level"] in ("SEVERE", "WARNING")]
    assert errors == []
    browser.set_window_size(1200, min(int(state["height"]) + 100, 8000))
    shot = np.asarray(Image.open(io.BytesIO(browser.get_screenshot_as_png())).convert("L"), dtype=float)
    assert shot.std() > 20, "screenshot is blank"
    assert (shot < 200).mean() > 0.05, "screenshot is nearly all white"


@pytest.mark.parametrize(
    ("which", "missing"),
    [({"chromium"}, "chromedriver not found"), ({"chromedriver"}, "the chromium browser not found"),
     (set(), "neither the browser nor its driver"), ({"chromium", "chromedriver"}, None)],
)
def test_the_skip_reason_names_the_missing_piece(which: set[str], missing: str | None) -> None:
    found = missing_browser_pieces(lambda name: f"/usr/bin/{name}" if name in which else None)
    assert (found is None) if missing is None else (found is not None and missing in found), found


# ------------------------------------------------------------------ the demo's reports, figure by figure
@pytest.fixture(scope="module")
def demo_reports() -> dict[str, Path]:
    from coregister.cli.demo import run_demo

    folder = Path(tempfile.mkdtemp(prefix="coregister-demo-"))
    return {o.case: o.folder / "report.html" for o in run_demo(folder)}


def _blank(png: bytes) -> tuple[float, float]:
    """(grey-level spread, fraction of near-white pixels) of a screenshot."""
    shot = np.asarray(Image.open(io.BytesIO(png)).convert("L"), dtype=float)
    return float(shot.std()), float((shot > 245).mean())


@pytest.mark.parametrize("case", ["t1-rigid", "t1-multimodal", "t1-multimodal-ncc", "photo-homography", "geo-shift"])
def test_demo_report_figures_render(browser: Any, demo_reports: dict[str, Path], case: str) -> None:
    """Every figure of every demo report is drawn: each <img> screenshot on its own holds a picture."""
    from selenium.webdriver.common.by import By

    browser.set_window_size(1200, 900)
    browser.get(demo_reports[case].resolve().as_uri())
    browser.get_log("browser")
    images = browser.find_elements(By.TAG_NAME, "img")
    assert len(images) >= 4, f"{case}: {len(images)} figures"
    for image in images:
        alt = image.get_attribute("alt")
        assert browser.execute_script("return arguments[0].complete && arguments[0].naturalWidth > 0", image), alt
        browser.execute_script("arguments[0].scrollIntoView()", image)
        spread, white = _blank(image.screenshot_as_png)
        assert spread > 10 and white < 0.97, f"{case}: the figure {alt!r} is empty ({spread:.1f}, {white:.2f} white)"
    assert [e for e in browser.get_log("browser") if e["level"] in ("SEVERE", "WARNING")] == []
    titles = [e.text for e in browser.find_elements(By.TAG_NAME, "h2")]
    assert "Colour overlay" in titles
    if case in ("t1-rigid", "t1-multimodal"):  # registered with mutual information: the edge overlay is offered
        assert "Edge overlay" in titles


def test_report_screenshot_for_the_docs(browser: Any, demo_reports: dict[str, Path], tmp_path: Path) -> None:
    """``docs/report_screenshot.py`` (what ``docs/report.png`` is made with) shoots a demo report at a fixed width."""
    import subprocess
    import sys

    script = Path(__file__).resolve().parents[1] / "docs" / "report_screenshot.py"
    path = tmp_path / "shot.png"
    run = subprocess.run([sys.executable, str(script), "--report", str(demo_reports["photo-homography"]), "-o", str(path)],
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    with Image.open(path) as image:
        assert image.size[0] >= 900 and np.asarray(image.convert("L")).std() > 20
    docs = Path(__file__).resolve().parents[1] / "docs" / "report.png"
    with Image.open(docs) as kept:  # the README shows it
        assert kept.size[0] >= 900 and np.asarray(kept.convert("L")).std() > 20
