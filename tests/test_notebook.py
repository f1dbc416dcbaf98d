"""Notebooks: SpatialImage, Result (and ``result.show``) and GeoResult show themselves through ``_repr_html_``.

Each view is small (under 100 kB), and every picture embedded in it decodes
(Pillow) and is not blank. A real notebook is executed too (nbconvert's
ExecutePreprocessor, a local kernel, no network), and the HTML outputs it
holds are checked the same way.
"""

from __future__ import annotations

import base64
import io
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from scipy import ndimage

import coregister as cr
from coregister import Result, SpatialImage, geo

MAX_BYTES = 100_000


def _pictures(html: str) -> list[np.ndarray]:
    found = re.findall(r'src="data:image/png;base64,([^"]+)"', html)
    return [np.asarray(Image.open(io.BytesIO(base64.b64decode(data))).convert("RGB")) for data in found]


def _check(html: str, count: int) -> list[np.ndarray]:
    assert len(html.encode()) < MAX_BYTES, len(html)
    pictures = _pictures(html)
    assert len(pictures) == count
    for picture in pictures:
        assert min(picture.shape[:2]) >= 16 and picture.std() > 5, "a blank or tiny picture"
    return pictures


def _blobs(shift: tuple[float, float] = (0.0, 0.0)) -> SpatialImage:
    y, x = np.mgrid[0:96, 0:128]
    values = np.exp(-((x - 70.0) ** 2 + (y - 40.0) ** 2) / 200) + np.exp(-((x - 40.0) ** 2 + (y - 60.0) ** 2) / 60)
    return SpatialImage(ndimage.shift(values, shift, order=3).astype(np.float32), origin=(0, 0), spacing=(1, 1))


def test_spatial_image_views(data) -> None:
    _check(_blobs()._repr_html_(), 1)
    volume = cr.read(data("medical/itk_kmeans_t1_3d/KmeansTest_T1UCharRaw.nii.gz"))
    html = volume._repr_html_()
    axial, coronal, sagittal = _check(html, 3)
    assert "LPS" in html or volume.orientation in html
    colour = cr.read(data("geospatial/rasterio_landsat7/RGB.byte.tif"))
    (picture,) = _check(colour._repr_html_(), 1)
    assert np.abs(picture[..., 0].astype(int) - picture[..., 2].astype(int)).mean() > 1, "colour is drawn as colour"


def test_result_view_without_and_with_images() -> None:
    fixed, moving = _blobs(), _blobs((3.0, -2.0))
    result = cr.register(fixed, moving, preset="rigid")
    html = result._repr_html_()
    assert "passed" in html and "ssim" in html and "rotation (degrees)" in html and "<img" not in html
    before, after = _check(result.show(fixed, moving)._repr_html_(), 2)
    # the colour overlay: misaligned, colour fringes; aligned, grey (red and green agree)
    fringe = lambda rgb: np.abs(rgb[..., 0].astype(int) - rgb[..., 1].astype(int)).mean()  # noqa: E731
    assert fringe(after) < fringe(before) / 2


def test_result_view_of_a_volume_draws_three_planes_before_and_after(data) -> None:
    fixed = cr.read(data("medical/nibabel_anat_func/anatomical.nii"))
    moving = cr.read(data("medical/nibabel_anat_func/reoriented_anat_moved.nii"))
    result = Result(cr.read_transform(_demo_transform()), {"before": {}, "after": {}},
                    config={"stages": [{"metric": "mattes"}]})
    _check(result.show(fixed, moving)._repr_html_(), 6)  # edges (mutual information), axial/coronal/sagittal x2


def _demo_transform() -> Path:
    import tempfile

    from coregister.cli.demo import spm_truth

    return spm_truth().save(Path(tempfile.mkdtemp()) / "truth.tfm")


def _rasters(folder: Path) -> tuple[Path, Path]:
    rng = np.random.default_rng(0)
    scene = ndimage.gaussian_filter(rng.normal(size=(300, 300)), 2) * 100 + 1000
    reference = SpatialImage(scene.astype(np.float32), origin=(500005.0, 4999995.0), spacing=(10.0, 10.0),
                             direction=np.diag([1.0, -1.0]), crs="EPSG:32633")
    moved = ndimage.shift(scene, (0.4, -0.7), order=3, mode="nearest").astype(np.float32)
    return cr.write(reference, folder / "reference.tif"), cr.write(reference.replace(array=moved), folder / "target.tif")


def test_geo_result_view(tmp_path: Path) -> None:
    reference, target = _rasters(tmp_path)
    result = geo.coregister(reference, target, window_px=128, max_windows=4)
    html = result._repr_html_()
    assert "passed" in html and "correction (columns, rows)" in html
    _check(html, 2)  # from the files: the full-resolution square before and after
    in_memory = geo.coregister(cr.read(reference).replace(meta={}), cr.read(target).replace(meta={}), window_px=128,
                               max_windows=4)
    assert "<img" not in in_memory._repr_html_()
    _check(in_memory.show(cr.read(reference), cr.read(target))._repr_html_(), 2)


def test_a_notebook_runs_and_shows_the_views(tmp_path: Path) -> None:
    nbformat = pytest.importorskip("nbformat", reason="nbformat is not installed (the test extra has it)")
    execute = pytest.importorskip("nbconvert.preprocessors", reason="nbconvert is not installed (the test extra has it)")
    pytest.importorskip("ipykernel", reason="ipykernel is not installed (the test extra has it)")
    cells = [
        "import numpy as np\nfrom scipy import ndimage\nimport coregister as cr\n"
        "y, x = np.mgrid[0:96, 0:128]\n"
        "blobs = np.exp(-((x - 70.0) ** 2 + (y - 40.0) ** 2) / 200) + np.exp(-((x - 40.0) ** 2 + (y - 60.0) ** 2) / 60)\n"
        "fixed = cr.SpatialImage(blobs.astype(np.float32), origin=(0, 0), spacing=(1, 1))\n"
        "moving = fixed.replace(array=ndimage.shift(blobs, (3.0, -2.0), order=3).astype(np.float32))",
        "fixed",
        "res = cr.register(fixed, moving)\nres",
        "res.show(fixed, moving)",
    ]
    notebook = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in cells])
    execute.ExecutePreprocessor(timeout=300, kernel_name="python3").preprocess(notebook, {"metadata": {"path": str(tmp_path)}})
    html = [output["data"]["text/html"] for cell in notebook.cells for output in cell.get("outputs", [])
            if "text/html" in output.get("data", {})]
    assert len(html) == 3
    _check(html[0], 1)
    assert "passed" in html[1] and "<img" not in html[1]
    _check(html[2], 2)
    nbformat.write(notebook, tmp_path / "views.ipynb")
    assert (tmp_path / "views.ipynb").stat().st_size < 3 * MAX_BYTES
