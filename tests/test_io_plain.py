"""PNG / JPEG / BMP (``coregister.io.plain``) on the real photos and slices.

Reference decoder: Pillow, an implementation independent of the OpenCV
codecs we use. Ground truth for channel order: Pillow reads our RGB files
back in RGB order. BT.601 luminance is checked against its float formula.
"""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

import coregister as cr
from coregister.errors import GeometryWarning, UnreadableInputError, UnsupportedFormatError
from coregister.io.plain import read_plain, write_plain

BRAINWEB = "medical/itk_brainweb_2d"
MOTORCYCLE = "photos/skimage_motorcycle_stereo/motorcycle_left.png"

#: grey JPEGs, palette PNGs with a grey palette, an RGB PNG whose channels are equal, grey PNGs, an RGB photo
FILES = [
    *(f"medical/antspy/{name}slice.jpg" for name in ("r16", "r27", "r30", "r62", "r64", "r85")),
    f"{BRAINWEB}/BrainProtonDensitySlice.png",
    f"{BRAINWEB}/BrainProtonDensitySliceBorder20.png",
    f"{BRAINWEB}/BrainProtonDensitySliceR10X13Y17.png",
    f"{BRAINWEB}/BrainProtonDensitySliceR10X13Y17S12.png",
    f"{BRAINWEB}/BrainProtonDensitySliceRotated10.png",
    f"{BRAINWEB}/BrainProtonDensitySliceShifted13x17y.png",
    f"{BRAINWEB}/BrainProtonDensitySliceBSplined10.png",
    f"{BRAINWEB}/BrainT1Slice.png",
    f"{BRAINWEB}/BrainT1SliceBorder20.png",
    MOTORCYCLE,
    "photos/skimage_motorcycle_stereo/motorcycle_right.png",
]
#: files whose red, green and blue are identical (palette of greys, or RGB written from a grey slice)
GREY_AS_COLOUR = [f for f in FILES if f.startswith(BRAINWEB) and "BSplined" not in f]


def _pillow(path, mode=None) -> np.ndarray:
    with Image.open(path) as im:
        if mode is None:
            mode = "RGB" if im.mode in ("P", "RGB") else im.mode
        return np.asarray(im.convert(mode))


def _real_rgb(data) -> np.ndarray:
    return read_plain(data(MOTORCYCLE)).array[100:260, 200:420]


@pytest.mark.parametrize("relative", FILES)
def test_pixels_equal_pillow_and_geometry_is_the_pixel_grid(data, relative):
    path = data(relative)
    img = read_plain(path)
    np.testing.assert_array_equal(img.array, _pillow(path))
    assert img.origin == (0.0, 0.0) and img.spacing == (1.0, 1.0)
    np.testing.assert_array_equal(img.direction, np.eye(2))
    assert img.crs is None and img.mask is None
    assert img.meta["format"] == ("jpeg" if relative.endswith(".jpg") else "png")
    assert img.meta["source_path"] == str(path)


@pytest.mark.parametrize("relative", GREY_AS_COLOUR)
def test_grey_palette_and_rgb_files_give_one_exact_channel(data, relative):
    path = data(relative)
    colour = read_plain(path)
    assert colour.n_channels == 3
    grey = read_plain(path, grayscale=True)
    assert grey.array.ndim == 2 and grey.meta["grayscale"] == "identical_channels"
    np.testing.assert_array_equal(grey.array, colour.array[..., 0])
    np.testing.assert_array_equal(grey.array, _pillow(path, "L"))


def test_colour_photo_to_grey_is_bt601_luminance(data):
    path = data(MOTORCYCLE)
    rgb = read_plain(path).array.astype(float)
    grey = read_plain(path, grayscale=True)
    assert grey.meta["grayscale"] == "luminance" and grey.dtype == np.uint8
    expected = rgb @ np.array([0.299, 0.587, 0.114])
    assert np.abs(grey.array - expected).max() <= 0.51  # rounded to the nearest integer (OpenCV's fixed point)
    # the channels really differ: an "identical channels" shortcut would be wrong here
    assert not np.array_equal(rgb[..., 0], rgb[..., 1])


def test_dispatch_reads_plain_images_with_options(data):
    img = cr.read(data(f"{BRAINWEB}/BrainT1Slice.png"), grayscale=True)
    assert img.shape == (217, 181) and img.array.ndim == 2


# ----------------------------------------------------------------------------- lossless round trips
def _layouts(rgb8: np.ndarray, dtype: type) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(7)
    if dtype == np.uint16:  # real texture spread over 16 bits, low byte seeded so every bit matters
        base = rgb8.astype(np.uint16) * 257 ^ rng.integers(0, 256, rgb8.shape, dtype=np.uint16)
    else:
        base = rgb8
    alpha = np.full(base.shape[:2], np.iinfo(dtype).max, dtype)
    alpha[:20, :30] = 0
    alpha[40:60] = np.iinfo(dtype).max // 3
    return {"gray": base[..., 1], "rgb": base, "rgba": np.dstack([base, alpha])}


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
@pytest.mark.parametrize("layout", ["gray", "rgb", "rgba"])
def test_png_round_trip_is_bit_exact(data, tmp_path, dtype, layout):
    array = _layouts(_real_rgb(data), dtype)[layout]
    img = cr.SpatialImage(array, origin=(0, 0), spacing=(1, 1))
    out = write_plain(img, tmp_path / f"{layout}_{np.dtype(dtype).name}.png")
    back = read_plain(out)
    assert back.dtype == dtype and back.meta["layout"] == layout
    np.testing.assert_array_equal(back.array, array)
    if layout == "rgba":
        np.testing.assert_array_equal(back.mask, array[..., 3] > 0)
    # an independent decoder sees the same pixels in the same (RGB) order
    with Image.open(out) as im:
        if dtype == np.uint8 or layout == "gray":
            np.testing.assert_array_equal(np.asarray(im), array)
        else:  # Pillow reduces 16-bit colour to 8 bits: the high byte must match
            assert im.mode in ("RGB", "RGBA")
            np.testing.assert_array_equal(np.asarray(im), (array >> 8).astype(np.uint8))


def test_bmp_round_trip_is_bit_exact(data, tmp_path):
    array = _real_rgb(data)
    out = write_plain(cr.SpatialImage(array, origin=(0, 0), spacing=(1, 1)), tmp_path / "photo.bmp")
    back = read_plain(out)
    assert back.meta["format"] == "bmp"
    np.testing.assert_array_equal(back.array, array)


@pytest.mark.parametrize("relative", [f"{BRAINWEB}/BrainT1Slice.png", MOTORCYCLE])
def test_jpeg_round_trip_within_tolerance(data, tmp_path, relative):
    img = read_plain(data(relative), grayscale=relative.startswith(BRAINWEB))

    def psnr_db(quality: int) -> float:
        back = read_plain(write_plain(img, tmp_path / f"q{quality}.jpg", jpeg_quality=quality))
        assert back.shape == img.shape and back.n_channels == img.n_channels
        error = back.array.astype(float) - img.array
        return float(10 * np.log10(255.0**2 / np.mean(error**2)))

    high, low = psnr_db(95), psnr_db(75)
    assert high > 36.0  # measured 42.7 dB (grey slice), 37.0 dB (colour photo, chroma subsampled)
    assert low < high - 3.0  # the quality option is honoured


def test_grey_alpha_png_reads_as_grey_with_mask(data, tmp_path):
    grey = read_plain(data(f"{BRAINWEB}/BrainT1Slice.png"), grayscale=True).array
    alpha = np.where(grey > 0, 255, 0).astype(np.uint8)
    path = tmp_path / "grey_alpha.png"
    Image.fromarray(np.dstack([grey, alpha]), "LA").save(path)
    img = read_plain(path, grayscale=True)
    np.testing.assert_array_equal(img.array, grey)
    np.testing.assert_array_equal(img.mask, grey > 0)
    assert img.meta["grayscale"] == "identical_channels"


def test_mask_png_round_trips_as_bool(data, tmp_path):
    path = data(f"{BRAINWEB}/BrainProtonDensitySliceBorder20Mask.png")
    mask = read_plain(path).array
    assert set(np.unique(mask)) == {0, 255}
    out = write_plain(cr.SpatialImage(mask > 0, origin=(0, 0), spacing=(1, 1)), tmp_path / "mask.png")
    np.testing.assert_array_equal(read_plain(out).array, mask)


# ----------------------------------------------------------------------------- refusals and warnings
def test_geometry_that_png_cannot_hold_warns(data, tmp_path):
    img = read_plain(data(f"{BRAINWEB}/BrainT1Slice.png"), grayscale=True).replace(spacing=(0.5, 0.5))
    with pytest.warns(GeometryWarning, match=r"\.tif"):
        out = write_plain(img, tmp_path / "lost.png")
    assert read_plain(out).spacing == (1.0, 1.0)


@pytest.mark.parametrize(
    ("array", "name", "match"),
    [
        (np.zeros((3, 4, 5), np.uint8), "volume.png", r"\.nii\.gz"),
        (np.zeros((4, 5), np.float32), "float.png", r"\.tif"),
        (np.zeros((4, 5), np.uint16), "deep.jpg", "uint8"),
        (np.zeros((4, 5, 2), np.uint8), "two.png", "channels"),
        (np.zeros((4, 5, 4), np.uint8), "rgba.jpg", "channels"),
    ],
)
def test_what_the_format_cannot_store_is_refused(tmp_path, array, name, match):
    spatial = 3 if name == "volume.png" else 2
    img = cr.SpatialImage(array, origin=(0,) * spatial, spacing=(1,) * spatial)
    with pytest.raises(UnsupportedFormatError, match=match):
        write_plain(img, tmp_path / name)
    assert not (tmp_path / name).exists()


def test_broken_files_are_reported(data, tmp_path):
    truncated = tmp_path / "truncated.png"
    truncated.write_bytes(data(f"{BRAINWEB}/BrainT1Slice.png").read_bytes()[:40])
    empty = tmp_path / "empty.jpg"
    empty.write_bytes(b"")
    with pytest.raises(UnreadableInputError, match="truncated.png"):
        read_plain(truncated)
    with pytest.raises(UnreadableInputError, match="empty"):
        read_plain(empty)
    with pytest.raises(UnreadableInputError, match="does not exist"):
        read_plain(tmp_path / "missing.png")


@pytest.mark.parametrize(("relative", "fmt"), [(f"{BRAINWEB}/BrainT1Slice.png", "png"), (FILES[0], "jpeg")])
def test_files_without_suffix_are_read_by_content(data, tmp_path, relative, fmt):
    source = data(relative)
    bare = tmp_path / "no_suffix"
    bare.write_bytes(source.read_bytes())
    img = cr.read(bare)
    assert img.meta["format"] == fmt
    np.testing.assert_array_equal(img.array, read_plain(source).array)
