"""The package's public face is ``coregister.__all__``: every name in it resolves, ``dir()`` shows exactly it,
and ``import coregister`` stays light (the heavier rooms load on first use)."""

from __future__ import annotations

import json
import subprocess
import sys
import types

import pytest

import coregister

#: what ``import coregister`` loads of the package itself: the values every signature uses
EAGER_MODULES = {
    "coregister", "coregister._version", "coregister.conventions", "coregister.errors", "coregister.image",
    "coregister.transforms",
}  # fmt: skip
#: dependencies that only the rooms loaded on first use need
HEAVY_DEPENDENCIES = {"cv2", "rasterio", "pydicom", "nibabel", "skimage", "scipy", "matplotlib", "dask", "click", "rich", "pooch"}
#: the submodules users reach as attributes (``cr.geo.coregister(...)``)
PUBLIC_ROOMS = ("batch", "geo", "medical", "pipeline", "preprocess", "presets")


@pytest.mark.parametrize("name", coregister.__all__)
def test_every_public_name_resolves(name: str) -> None:
    assert getattr(coregister, name) is not None


@pytest.mark.parametrize("room", PUBLIC_ROOMS)
def test_public_rooms_are_attributes(room: str) -> None:
    assert room in coregister.__all__
    value = getattr(coregister, room)
    assert isinstance(value, types.ModuleType) and value.__name__ == f"coregister.{room}"


def test_dir_is_the_public_face() -> None:
    assert dir(coregister) == sorted(coregister.__all__)
    assert len(set(coregister.__all__)) == len(coregister.__all__)


def test_unknown_names_raise_attribute_error() -> None:
    with pytest.raises(AttributeError, match="no attribute 'no_such_name'"):
        coregister.no_such_name  # noqa: B018 - the attribute access is the test


def test_import_loads_only_the_light_rooms() -> None:
    code = "import json, sys; import coregister; print(json.dumps(sorted(sys.modules)))"
    loaded = set(json.loads(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout))
    ours = {m for m in loaded if m == "coregister" or m.startswith("coregister.")}
    assert ours <= EAGER_MODULES, f"import coregister now also loads {sorted(ours - EAGER_MODULES)}"
    heavy = {m.split(".")[0] for m in loaded} & HEAVY_DEPENDENCIES
    assert not heavy, f"import coregister now imports {sorted(heavy)}; load them where they are used"
