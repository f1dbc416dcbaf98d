"""Every reader fed generated and mutated files (Hypothesis): only CoregisterError comes out, nothing hangs or leaks.

Seeds are small real files (nibabel's T1, a MetaImage slice, a DICOM
slice, PNG/JPEG slices) and small files written here (GeoTIFF, TIFF, ITK
and JSON transforms, GCP and pairs files); each example flips, overwrites,
inserts or cuts bytes (more often in the header), or is generated whole
behind the format's magic number. For each example:

* the reader returns its value or raises a :class:`~coregister.errors.CoregisterError`
  subclass, nothing else (a warning is allowed: it is not an exception in a run);
* it returns within :data:`TIME_LIMIT_S` (a ``SIGALRM`` timer stops it);
* it leaves as many open file descriptors as it found.

The default run is bounded (``FUZZ_EXAMPLES`` examples per reader, a few
seconds each); the long run takes the count from the environment::

    COREGISTER_FUZZ_EXAMPLES=2000 pytest -m fuzz tests/test_fuzz_readers.py -p no:randomly

(``-m fuzz`` selects these tests only.) Reads are capped at 1 GB
(``COREGISTER_MAX_MEMORY``) so that a mutated header cannot take the machine.
"""

from __future__ import annotations

import contextlib
import gc
import json
import os
import shutil
import signal
import tempfile
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import coregister as cr
from coregister.batch import read_pairs
from coregister.errors import CoregisterError
from coregister.geo.georef import read_gcps
from coregister.transforms import read_transform

pytestmark = pytest.mark.fuzz

FUZZ_EXAMPLES = int(os.environ.get("COREGISTER_FUZZ_EXAMPLES", "10"))
#: a read that takes longer than this has hung (generous: the machine running the tests may be loaded)
TIME_LIMIT_S = 20.0
FUZZ = settings(
    max_examples=FUZZ_EXAMPLES, deadline=None, database=None, derandomize=FUZZ_EXAMPLES <= 50,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.function_scoped_fixture],
)


class Hung(Exception):
    """Raised by the timer when a read runs past :data:`TIME_LIMIT_S`."""


@contextlib.contextmanager
def _time_limit(seconds: float) -> Iterator[None]:
    def stop(signum: int, frame: Any) -> None:
        raise Hung(f"the read ran past {seconds} s")

    previous = signal.signal(signal.SIGALRM, stop)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def _open_fds(*, collect: bool = False) -> int:
    if collect:  # a file object waiting for the garbage collector is not a leak
        gc.collect()
    return len(os.listdir("/proc/self/fd"))


def check_reader(read: Callable[[], Any]) -> None:
    """``read()`` returns or raises a CoregisterError, in time, closing every file it opened."""
    before = _open_fds()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a run shows warnings; only exceptions escape
        try:
            with _time_limit(TIME_LIMIT_S):
                read()
        except CoregisterError:
            pass
    assert _open_fds() == before or _open_fds(collect=True) == before, "the reader left a file open"


# ------------------------------------------------------------------ seeds
@pytest.fixture(scope="module")
def seeds(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    from conftest import require_data

    folder = tmp_path_factory.mktemp("seeds")
    out: dict[str, bytes] = {
        ".nii": require_data("medical/nibabel_anat_func/anatomical.nii").read_bytes(),
        ".png": require_data("medical/itk_brainweb_2d/BrainT1Slice.png").read_bytes(),
        ".jpg": require_data("medical/antspy/r16slice.jpg").read_bytes(),
        ".dcm": require_data("medical/dicom_small/CT_small.dcm").read_bytes(),
    }
    lung = require_data("medical/itk_ratlung_2d/RatLungSlice1.mha")
    header = lung.read_text().split("ElementDataFile")[0]
    out[".mha"] = header.encode() + b"ElementDataFile = LOCAL\n" + (lung.parent / "RatLungSlice1.raw").read_bytes()
    small = cr.SpatialImage(np.arange(64, dtype=np.int16).reshape(4, 4, 4), origin=(1, 2, 3), spacing=(1, 1, 2))
    out[".nii.gz"] = cr.write(small, folder / "small.nii.gz").read_bytes()
    raster = cr.SpatialImage(np.arange(256, dtype=np.uint16).reshape(16, 16), origin=(500015.0, 4999985.0),
                             spacing=(30.0, 30.0), direction=np.diag([1.0, -1.0]), crs="EPSG:32633", nodata=0)
    out[".tif"] = cr.write(raster, folder / "small.tif").read_bytes()
    plain = cr.SpatialImage(np.arange(256, dtype=np.uint8).reshape(16, 16), origin=(0, 0), spacing=(1, 1))
    out["plain.tif"] = cr.write(plain, folder / "plain.tif").read_bytes()
    out[".tfm"] = cr.Rigid.from_angles(0.1, translation=[1.0, 2.0], center=[3.0, 4.0]).save(folder / "t.tfm").read_bytes()
    composite = cr.Composite((cr.Translation([1.0, 2.0]), cr.Affine([[1.1, 0.1], [0.0, 0.9]], [0.5, 0.5])))
    out["composite.tfm"] = composite.save(folder / "c.tfm").read_bytes()
    out[".json"] = cr.Affine([[1.1, 0.1], [0.0, 0.9]], [0.5, 0.5]).save(folder / "t.json").read_bytes()
    out["gcps.csv"] = b"pixel,line,x,y\n0,0,101985,2826915\n791,0,339315,2826915\n0,718,101985,2611485\n"
    out["pairs.csv"] = b"fixed,moving,name,preset,metric\na.png,b.png,one,rigid,ncc\nc.png,d/e.png,,affine,\n"
    return out


# ------------------------------------------------------------------ mutations
_INTERESTING = [b"\x00", b"\xff", b"\x7f", b"\x80", b"\x00\x00\x00\x00", b"\xff\xff\xff\xff", b"\xff\xff\xff\x7f",
                b"\x00\x00\x80\x7f", b"\x00\x00\xc0\x7f", b"NaN", b"-1", b"1e308", b"\n", b","]


@st.composite
def mutated(draw: st.DrawFn, seed: bytes) -> bytes:
    """``seed`` with bytes flipped, overwritten, inserted or cut (half the positions in its first 512 bytes)."""
    data = bytearray(seed)
    for _ in range(draw(st.integers(1, 4))):
        if not data:
            break
        head = draw(st.booleans())
        position = draw(st.integers(0, min(len(data), 512) - 1 if head else len(data) - 1))
        kind = draw(st.sampled_from(["flip", "overwrite", "insert", "cut", "truncate"]))
        if kind == "flip":
            data[position] = draw(st.integers(0, 255))
        elif kind == "overwrite":
            value = draw(st.sampled_from(_INTERESTING) | st.binary(min_size=1, max_size=8))
            data[position : position + len(value)] = value
        elif kind == "insert":
            data[position:position] = draw(st.binary(min_size=1, max_size=64))
        elif kind == "cut":
            del data[position : position + draw(st.integers(1, 256))]
        else:
            del data[position:]
    return bytes(data)


def generated(magic: bytes) -> st.SearchStrategy[bytes]:
    """Bytes generated whole behind a format's magic number."""
    return st.binary(max_size=4096).map(lambda rest: magic + rest)


def _file(content: bytes, name: str) -> Iterator[Path]:
    folder = Path(tempfile.mkdtemp(prefix="coregister-fuzz-"))
    path = folder / name
    path.write_bytes(content)
    try:
        yield path
    finally:
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(autouse=True)
def _memory_cap(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COREGISTER_MAX_MEMORY", "1G")


# ------------------------------------------------------------------ readers
IMAGE_SEEDS = {".nii": "scan.nii", ".nii.gz": "scan.nii.gz", ".mha": "scan.mha", ".tif": "scene.tif",
               "plain.tif": "page.tif", ".png": "slice.png", ".jpg": "photo.jpg", ".dcm": "slice.dcm"}
MAGIC = {".nii": b"\x00\x00\x01\x5c", ".nii.gz": b"\x1f\x8b\x08\x00", ".mha": b"ObjectType = Image\nNDims = ",
         ".tif": b"II*\x00", "plain.tif": b"MM\x00*", ".png": b"\x89PNG\r\n\x1a\n", ".jpg": b"\xff\xd8\xff\xe0",
         ".dcm": b"\x00" * 128 + b"DICM"}


@pytest.mark.parametrize("seed", sorted(IMAGE_SEEDS))
@FUZZ
@given(data=st.data())
def test_image_readers_raise_only_coregister_errors(seeds: dict[str, bytes], seed: str, data: st.DataObject) -> None:
    content = data.draw(mutated(seeds[seed]) | generated(MAGIC[seed]))
    for path in _file(content, IMAGE_SEEDS[seed]):
        check_reader(lambda: cr.read(path))  # noqa: B023 - called at once


@FUZZ
@given(data=st.data())
def test_a_dicom_folder_with_a_mutated_slice(seeds: dict[str, bytes], data: st.DataObject) -> None:
    folder = Path(tempfile.mkdtemp(prefix="coregister-fuzz-"))
    try:
        image = cr.SpatialImage((np.arange(4 * 8 * 8) % 97).reshape(4, 8, 8).astype(np.int16), origin=(0, 0, 0),
                                spacing=(1, 1, 2))
        files = sorted(cr.write(image, folder / "series", format="dicom").iterdir())
        victim = files[data.draw(st.integers(0, len(files) - 1))]
        victim.write_bytes(data.draw(mutated(victim.read_bytes())))
        check_reader(lambda: cr.read(folder / "series"))
    finally:
        shutil.rmtree(folder, ignore_errors=True)


TEXT_READERS: dict[str, tuple[str, Callable[[Path], Any]]] = {
    ".tfm": ("t.tfm", read_transform),
    "composite.tfm": ("c.tfm", read_transform),
    ".json": ("t.json", read_transform),
    "gcps.csv": ("gcps.csv", read_gcps),
    "pairs.csv": ("pairs.csv", read_pairs),
}


@pytest.mark.parametrize("seed", sorted(TEXT_READERS))
@FUZZ
@given(data=st.data())
def test_transform_gcp_and_pairs_readers_raise_only_coregister_errors(
    seeds: dict[str, bytes], seed: str, data: st.DataObject
) -> None:
    name, reader = TEXT_READERS[seed]
    text = st.text(alphabet=st.characters(codec="utf-8"), max_size=400).map(lambda t: t.encode("utf-8", "surrogatepass"))
    content = data.draw(mutated(seeds[seed]) | text | st.binary(max_size=400))
    for path in _file(content, name):
        check_reader(lambda: reader(path))  # noqa: B023 - called at once


@FUZZ
@given(value=st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(
        st.sampled_from(["type", "ndim", "matrix", "translation", "center", "transforms", "coefficients",
                         "grid_origin", "grid_spacing", "grid_direction", "order", "scale"]), children, max_size=6),
    max_leaves=20,
))
def test_json_transforms_built_from_any_json_value(value: Any) -> None:
    for path in _file(json.dumps(value).encode(), "t.json"):
        check_reader(lambda: read_transform(path))  # noqa: B023 - called at once


def test_the_time_limit_stops_a_hanging_read() -> None:
    import time

    with pytest.raises(Hung), _time_limit(0.2):
        time.sleep(5)
