"""``coregister.geo.CoregOptions``: one frozen value for every coregistration option, enums for the choices, the same
value built from keywords by ``coregister`` and ``change``; bad values are ConfigErrors naming the value and the fix."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from coregister import SpatialImage
from coregister.errors import ConfigError
from coregister.geo import CoregOptions, Field, Interpolation, Mode
from coregister.geo.options import coreg_options


def test_defaults_and_parsed_strings() -> None:
    options = CoregOptions()
    assert (options.mode, options.field, options.interpolation) == (Mode.SHIFT, Field.SMOOTH, None)
    assert (options.window_px, options.max_windows, options.grid_spacing_px, options.outlier_px) == (256, 49, 100, 0.5)
    parsed = CoregOptions(mode="LOCAL", field="polynomial", interpolation="Nearest", polynomial_order=3)
    assert (parsed.mode, parsed.field, parsed.interpolation) == (Mode.LOCAL, Field.POLYNOMIAL, Interpolation.NEAREST)
    assert parsed == CoregOptions(mode=Mode.LOCAL, field=Field.POLYNOMIAL, interpolation=Interpolation.NEAREST,
                                  polynomial_order=3)
    assert [i.order for i in Interpolation] == [3, 1, 0]


def test_frozen() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        CoregOptions().mode = Mode.LOCAL  # type: ignore[misc]


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"mode": "elastic"}, "'elastic' is not a valid mode; choose one of: shift, affine, local"),
        ({"field": "spline"}, "'spline' is not a valid field; choose one of: smooth, polynomial"),
        ({"interpolation": "bicubic"}, "'bicubic' is not a valid interpolation; choose one of: cubic, linear, nearest"),
        ({"window_px": 16}, "window_px=16: too small for sub-pixel matching; use 64 or more"),
        ({"window_px": 100.5}, "window_px=100.5"),
        ({"max_windows": 0}, "max_windows=0: give a whole number of at least 1"),
        ({"grid_spacing_px": -5}, "grid_spacing_px=-5"),
        ({"reference_band": 0}, "reference_band=0"),
        ({"polynomial_order": 4}, "polynomial_order=4: choose a polynomial order of 1, 2 or 3"),
        ({"min_reliability": 1.5}, "min_reliability=1.5: give a reliability between 0 and 1"),
        ({"outlier_px": 0.0}, "outlier_px=0.0: give a positive distance"),
        ({"max_shift_px": float("inf")}, "max_shift_px=inf"),
    ],
)
def test_bad_values_name_the_value_and_the_choices(changes: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(".", r"\.")):
        CoregOptions(**changes)
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(".", r"\.")):
        coreg_options(**changes)


def test_keywords_replace_the_given_value_and_unknown_names_are_refused() -> None:
    base = CoregOptions(mode="local", window_px=128)
    assert coreg_options(base) is base
    assert coreg_options(base, grid_spacing_px=64) == CoregOptions(mode="local", window_px=128, grid_spacing_px=64)
    assert coreg_options(max_windows=9.0).max_windows == 9  # a whole float is a whole number
    with pytest.raises(ConfigError, match="'grid_px' is not a coregistration option; did you mean 'grid_spacing_px'"):
        coreg_options(grid_px=64)
    with pytest.raises(ConfigError, match="give a coregister.geo.CoregOptions"):
        coreg_options({"mode": "local"})  # type: ignore[arg-type]


def test_to_dict_is_plain_data() -> None:
    mask = SpatialImage(np.zeros((4, 4), np.uint8), origin=(0, 0), spacing=(1, 1), crs="EPSG:32633")
    data = CoregOptions(mode="affine", interpolation="linear", reference_mask=mask, target_mask="clouds.tif").to_dict()
    assert data["mode"] == "affine" and data["field"] == "smooth" and data["interpolation"] == "linear"
    assert data["reference_mask"] == "in-memory" and data["target_mask"] == "clouds.tif"
    assert set(data) == {f.name for f in dataclasses.fields(CoregOptions)}


def test_coregister_and_change_take_the_same_options(tmp_path) -> None:
    """Both functions read options through coreg_options: a value, keywords, or both (keywords win); the run's
    config is that value."""
    from scipy import ndimage

    from coregister.geo import change, coregister

    rng = np.random.default_rng(0)
    scene = ndimage.gaussian_filter(rng.normal(size=(200, 200)), 2) * 100 + 1000
    reference = SpatialImage(scene, origin=(500005.0, 4999995.0), spacing=(10.0, 10.0),
                             direction=np.diag([1.0, -1.0]), crs="EPSG:32633")
    target = reference.replace(array=ndimage.shift(scene, (0.3, -0.6), order=3, mode="nearest"))
    options = CoregOptions(window_px=64, max_windows=4)
    by_value = coregister(reference, target, options=options)
    by_keywords = coregister(reference, target, window_px=64, max_windows=4)
    assert by_value.shift_px == by_keywords.shift_px
    assert by_value.config == by_keywords.config == options.to_dict()
    mapped = change(reference, target, output=tmp_path / "c.tif", options=options, max_windows=2)
    assert mapped.config == {"kind": "difference", **options.replace(max_windows=2).to_dict()}
    assert len(mapped.windows) <= 2
    with pytest.raises(ConfigError, match="not a valid mode"):
        change(reference, target, output=tmp_path / "d.tif", mode="elastic")
