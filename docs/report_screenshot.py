"""Make ``docs/report.png``: headless Chromium's screenshot of the top of a demo report, as the README shows it.

    .venv/bin/python docs/report_screenshot.py                      # runs the demo's photo case, writes docs/report.png
    .venv/bin/python docs/report_screenshot.py --report R.html -o shot.png

Needs Debian's ``chromium`` and ``chromium-driver`` (selenium drives them);
``tests/test_report_browser.py`` runs this script on the demo's reports.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync", "--hide-scrollbars")


def shoot(report: Path, output: Path, *, width: int = 1000, height: int = 1400) -> Path:
    """Screenshot ``width`` x ``height`` CSS pixels of the top of ``report`` into ``output`` (PNG)."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    binary = shutil.which("chromium") or shutil.which("chromium-browser")
    driver_path = shutil.which("chromedriver")
    if binary is None or driver_path is None:
        raise SystemExit("needs Debian's chromium and chromium-driver: apt-get install -y chromium chromium-driver")
    options = webdriver.ChromeOptions()
    for flag in FLAGS:
        options.add_argument(flag)
    profile = tempfile.mkdtemp(prefix="coregister-chromium-")
    options.add_argument(f"--user-data-dir={profile}")
    options.add_argument(f"--window-size={width},{height}")
    options.binary_location = binary
    driver = webdriver.Chrome(options=options, service=Service(driver_path))
    try:
        driver.set_window_size(width, height)
        driver.get(report.resolve().as_uri())
        output.parent.mkdir(parents=True, exist_ok=True)
        if not driver.save_screenshot(str(output)):
            raise SystemExit(f"Chromium could not save {output}")
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)
    from PIL import Image

    with Image.open(output) as shot:  # a 256-colour palette: a third of the bytes in the repository, the same page
        small = shot.convert("RGB").quantize(colors=256, method=Image.Quantize.MEDIANCUT)
    small.save(output, optimize=True)
    return output


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--report", type=Path, default=None, help="the report to shoot (default: the demo's photo case)")
    parser.add_argument("-o", "--output", type=Path, default=ROOT / "docs" / "report.png")
    args = parser.parse_args(argv)
    output = args.output.resolve()
    report = args.report
    if report is None:
        sys.path.insert(0, str(ROOT / "src"))
        from coregister.cli.demo import run_demo

        import os

        os.chdir(tempfile.mkdtemp(prefix="coregister-demo-"))  # the report names its inputs as the README's demo does
        (outcome,) = run_demo("coregister-demo", cases=["photo-homography"])
        report = outcome.folder.resolve() / "report.html"
    print(shoot(report, output))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
