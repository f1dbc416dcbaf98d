"""Resampling with ``coregister.apply`` and mapping points with ``coregister.transform_points``, on real data.

Convention under test (DESIGN 3): a transform maps fixed (reference) points to moving points; each output
pixel centre ``x`` takes the moving image's value at ``transform(x)``.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk
from nibabel.affines import from_matvec
from nibabel.eulerangles import euler2mat
from scipy import ndimage

import coregister as cr
from coregister.errors import GeometryError
from coregister.measures import ncc
from coregister.resample import apply, resample_values, transform_points
from coregister.transforms import Affine, BSpline, Composite, Homography, Rigid, Similarity, Translation

KMEANS = "medical/itk_kmeans_t1_3d"
ANAT = "medical/nibabel_anat_func"
LANDSAT = "geospatial/rasterio_landsat7/RGB.byte.tif"
MOTORCYCLE = "photos/skimage_motorcycle_stereo/motorcycle_left.png"


@pytest.fixture(scope="module")
def t1() -> cr.SpatialImage:
    from conftest import require_data

    return cr.read(require_data(f"{KMEANS}/KmeansTest_T1UCharRaw.nii.gz"))


@pytest.fixture(scope="module")
def labels() -> cr.SpatialImage:
    from conftest import require_data

    return cr.read(require_data(f"{KMEANS}/KmeansTest_T1KmeansPrelimSegmentation.nii.gz"))


def _rigid(image: cr.SpatialImage) -> Rigid:
    """A few degrees and millimetres about the image centre (no sample falls on a half-pixel)."""
    return Rigid.from_angles(np.deg2rad([4.0, -3.0, 6.0]), translation=[2.5, -1.5, 3.2], center=image.world_centre)


def _scipy_reference(image: cr.SpatialImage, transform: cr.Transform, order: int) -> tuple[np.ndarray, np.ndarray]:
    """Independent resampler: output voxel -> world -> transform -> moving index -> scipy map_coordinates.

    ITK's B-spline interpolator uses mirror boundaries, as scipy's ``mode="mirror"``. Returns values and the
    interior voxels (3 voxels away from the moving image's border) where the two must agree.
    """
    grid = image.world_grid().reshape(-1, image.ndim)
    index = image.world_to_index(transform.transform_points(grid))  # (x, y, z)
    values = ndimage.map_coordinates(image.array.astype(np.float64), index[:, ::-1].T, order=order, mode="mirror")
    inner = np.all((index > 3) & (index < np.array(image.size) - 4), axis=1)
    return values.reshape(image.shape), inner.reshape(image.shape)


@pytest.mark.parametrize(("interpolation", "order", "atol"), [("linear", 1, 1e-4), ("bspline", 3, 1e-3), ("nearest", 0, 0.0)])
def test_interpolators_match_an_independent_resampler(t1: cr.SpatialImage, interpolation: str, order: int, atol: float) -> None:
    """Real T1 (non-identity direction, anisotropic 2x2x3 mm) under a rigid motion, against scipy."""
    transform = _rigid(t1)
    values, valid = resample_values(transform, t1, interpolation=interpolation)
    expected, inner = _scipy_reference(t1, transform, order)
    assert inner.mean() > 0.7 and valid[inner].all()
    np.testing.assert_allclose(values[inner], expected[inner], atol=atol, rtol=1e-6)


@pytest.mark.parametrize("interpolation", ["linear", "bspline", "nearest"])
@pytest.mark.parametrize("axis", [0, 1, 2])
def test_one_voxel_shift_is_exact(t1: cr.SpatialImage, interpolation: str, axis: int) -> None:
    """Shifting by one voxel along index axis ``axis`` (world vector D S e_axis) moves the array by one."""
    step = np.zeros(3)
    step[axis] = 1.0
    world_step = t1.direction @ (np.array(t1.spacing) * step)
    out = apply(Translation(world_step), t1, interpolation=interpolation)
    array_axis = 2 - axis  # index (x, y, z) -> array (z, y, x)
    inside = [slice(None)] * 3
    inside[array_axis] = slice(0, -1)
    source = [slice(None)] * 3
    source[array_axis] = slice(1, None)
    np.testing.assert_array_equal(out.array[tuple(inside)], t1.array[tuple(source)])
    last = [slice(None)] * 3
    last[array_axis] = -1
    assert not out.mask[tuple(last)].any() and (out.array[tuple(last)] == 0).all()
    assert out.mask[tuple(inside)].all()


@pytest.mark.parametrize("interpolation", ["linear", "bspline", "nearest"])
def test_identity_on_own_grid_is_bit_exact(t1: cr.SpatialImage, interpolation: str) -> None:
    out = apply(Translation([0.0, 0.0, 0.0]), t1, interpolation=interpolation)
    assert out.dtype == t1.dtype and out.mask is None
    np.testing.assert_array_equal(out.array, t1.array)


def test_integer_output_is_rounded_and_clipped(t1: cr.SpatialImage) -> None:
    """B-spline overshoots at the head's edges: uint8 output is the float result rounded and clipped."""
    image = t1.replace(array=np.clip(t1.array, 0, 255).astype(np.uint8))
    transform = _rigid(image)
    values, valid = resample_values(transform, image, interpolation="bspline")
    assert values[valid].min() < -0.5 and values[valid].max() > 255.5  # the clipping is exercised
    out = apply(transform, image, interpolation="bspline")
    assert out.dtype == np.uint8
    np.testing.assert_array_equal(out.array[valid], np.clip(np.rint(values[valid]), 0, 255).astype(np.uint8))
    as_float = apply(transform, image, interpolation="bspline", output_dtype=np.float32)
    assert as_float.dtype == np.float32
    np.testing.assert_array_equal(as_float.array[valid], values[valid])


def test_label_maps_stay_label_valued(labels: cr.SpatialImage) -> None:
    transform = _rigid(labels)
    allowed = set(np.unique(labels.array).tolist())
    nearest = apply(transform, labels, interpolation="nearest", output_dtype=np.float32)
    gaussian = apply(transform, labels, interpolation="label-gaussian", output_dtype=np.float32)
    linear = apply(transform, labels, interpolation="linear", output_dtype=np.float32)
    for out in (nearest, gaussian):
        assert set(np.unique(out.array).tolist()) <= allowed
    assert not np.array_equal(linear.array, np.rint(linear.array))  # linear mixes labels: the check can fail
    # Label-Gaussian votes over a Gaussian neighbourhood: it smooths the speckled k-means boundaries a little.
    assert (nearest.array == gaussian.array).mean() > 0.9
    assert apply(transform, labels, interpolation="nearest").dtype == labels.dtype


def test_points_and_pixels_agree(t1: cr.SpatialImage) -> None:
    """The value at output voxel ``i`` is the moving value at ``transform(world(i))`` (nearest neighbour)."""
    transform = _rigid(t1)
    out = apply(transform, t1, interpolation="nearest")
    rng = np.random.default_rng(4)
    index = rng.integers(10, np.array(t1.size) - 10, size=(200, 3))
    moving_index = np.rint(t1.world_to_index(transform_points(transform, t1.index_to_world(index)))).astype(int)
    np.testing.assert_array_equal(
        out.array[index[:, 2], index[:, 1], index[:, 0]],
        t1.array[moving_index[:, 2], moving_index[:, 1], moving_index[:, 0]],
    )


def test_threads_do_not_change_the_result(t1: cr.SpatialImage) -> None:
    transform = _rigid(t1)
    one = apply(transform, t1, interpolation="bspline", output_dtype=np.float32, threads=1)
    two = apply(transform, t1, interpolation="bspline", output_dtype=np.float32, threads=2)
    np.testing.assert_array_equal(one.array, two.array)


def test_default_value_fills_outside(t1: cr.SpatialImage) -> None:
    out = apply(Translation([40.0, 0.0, 0.0]), t1, default_value=-7, output_dtype=np.float32)
    assert (~out.mask).sum() > 0
    assert (out.array[~out.mask] == -7).all()
    assert np.isfinite(out.array).all()


# ------------------------------------------------ nibabel / SPM12 ground truth
@pytest.mark.parametrize("spm_file", ["reoriented_anat_moved.nii", "resampled_anat_moved.nii"])
def test_reproduces_spm12_resampling_of_the_moved_anatomical(data, spm_file: str) -> None:
    """Applying the documented rigid transform to ``anatomical.nii`` reproduces SPM12's resamplings.

    Derivation. nibabel's ``tests/data/make_moved_anat.py`` writes the anatomical's voxels with the affine
    ``M' = E @ M`` where ``M`` is the anatomical's (RAS) affine and
    ``E = from_matvec(euler2mat(0.1, 0.2, 0.3), [3, 4, 5])``. So voxel ``v`` sits at RAS point ``E M v`` in the
    moved image and at ``M v`` in the original: the head moved by ``E``. SPM12 resampled the moved image onto a
    grid ``G`` (``resampled_``: the functional's grid; ``reoriented_``: a 4 mm RAS grid): the output voxel ``u``
    at RAS point ``q = G u`` shows ``moved[(E M)^-1 q] = anatomical[M^-1 (E^-1 q)]``, i.e. the anatomical at RAS
    point ``E^-1 q``. The fixed (SPM output) -> moving (anatomical) point map is therefore ``E^-1`` in RAS.
    Our world is LPS: ``x_lps = P x_ras`` with ``P = diag(-1, -1, 1)``, so the LPS map is
    ``T = P4 E^-1 P4`` (``P4 = diag(-1, -1, 1, 1)``; ``P4`` is its own inverse).
    The inverse map (``E`` instead of ``E^-1``) must fail the check, so the test can tell the two apart.
    """
    anatomical = cr.read(data(f"{ANAT}/anatomical.nii"))
    spm = cr.read(data(f"{ANAT}/{spm_file}"))
    moved = from_matvec(euler2mat(0.1, 0.2, 0.3), [3, 4, 5])
    flip = np.diag([-1.0, -1.0, 1.0, 1.0])
    transform = Affine.from_homogeneous(flip @ np.linalg.inv(moved) @ flip)

    out = apply(transform, anatomical, reference=spm, output_dtype=np.float32)
    assert out.same_geometry(spm, atol=1e-6)
    reference = np.asarray(spm.array, dtype=np.float64)
    head = np.isfinite(reference) & (np.nan_to_num(reference) > 0.1 * np.nanmax(reference))
    inside = head & out.mask if out.mask is not None else head
    assert inside.sum() > 0.8 * head.sum() > 100
    assert ncc(out.array, reference, inside) > 0.99
    # SPM12's trilinear values agree with ours to nibabel's own tolerance (relative to the image maximum).
    assert np.abs(out.array[inside] - reference[inside]).max() < 3e-3 * np.nanmax(reference)

    wrong = apply(Affine.from_homogeneous(flip @ moved @ flip), anatomical, reference=spm, output_dtype=np.float32)
    both = head & (wrong.mask if wrong.mask is not None else True)
    assert ncc(wrong.array, reference, both) < 0.5


def test_output_carries_reference_geometry_and_metadata(data, tmp_path: Path) -> None:
    """Moving int16 T1 onto the SPM float32 4 mm grid: written file has the reference's header, the moving dtype."""
    anatomical = cr.read(data(f"{ANAT}/anatomical.nii"))
    reference = cr.read(data(f"{ANAT}/reoriented_anat_moved.nii"))
    out = apply(Rigid.from_angles(np.deg2rad([1.0, 2.0, -3.0]), center=reference.world_centre), anatomical, reference=reference)
    assert out.same_geometry(reference, atol=1e-6)
    assert out.dtype == anatomical.dtype
    assert "source_path" not in out.meta
    assert out.meta["nifti"]["sform_code"] == reference.meta["nifti"]["sform_code"]
    written = cr.write(out, tmp_path / "anat_on_spm_grid.nii.gz")
    ours, theirs = nib.load(written), nib.load(data(f"{ANAT}/reoriented_anat_moved.nii"))
    np.testing.assert_allclose(ours.affine, theirs.affine, atol=1e-5)
    assert ours.shape == theirs.shape
    assert ours.header.get_data_dtype() == np.int16
    for field in ("sform_code", "qform_code", "descrip"):
        assert ours.header[field] == theirs.header[field], field
    back = cr.read(written)
    assert back.same_geometry(reference, atol=1e-6)
    np.testing.assert_array_equal(back.array, out.array)


# ------------------------------------------------------------ rasters, channels, nodata
@pytest.fixture(scope="module")
def landsat() -> cr.SpatialImage:
    from conftest import require_data

    return cr.read(require_data(LANDSAT))


def test_multichannel_raster_with_nodata(landsat: cr.SpatialImage, tmp_path: Path) -> None:
    """Landsat RGB (3 bands, nodata 0 outside the scene): channel by channel, nodata respected, CRS kept."""
    assert landsat.has_channels and landsat.nodata == 0
    transform = Translation([1000.0, -650.0])  # metres: 3.3 px east, 2.2 px down
    out = apply(transform, landsat)
    assert out.array.shape == landsat.array.shape and out.dtype == np.uint8
    assert out.crs == landsat.crs and out.nodata == 0 and out.same_geometry(landsat)
    for band in range(3):
        # One band alone: same validity (a pixel lacks data when every band is nodata), no per-band nodata.
        single = apply(transform, landsat.channel(band).replace(mask=landsat.valid_mask(), nodata=None))
        np.testing.assert_array_equal(out.array[..., band], single.array)
    # Where the moving pixels had no data, the output has none either, and holds nodata.
    values, valid = resample_values(transform, landsat)
    np.testing.assert_array_equal(out.mask, valid)
    assert (out.array[~out.mask] == 0).all()
    source_valid = landsat.valid_mask()
    index = landsat.world_to_index(transform.transform_points(landsat.world_grid().reshape(-1, 2)))
    nearest = np.rint(index).astype(int)
    inside = np.all((nearest >= 0) & (nearest < np.array(landsat.size)), axis=1).reshape(landsat.shape)
    hit = np.zeros(landsat.shape, bool)
    hit[inside] = source_valid[nearest[inside.ravel(), 1], nearest[inside.ravel(), 0]]
    assert not (out.mask & ~hit).any()  # never claims data where the nearest source pixel had none
    assert out.mask.sum() > 0.95 * hit.sum()
    assert out.meta["profile"]["nodata"] == 0 and out.meta["profile"]["dtype"] == "uint8"

    written = cr.write(out, tmp_path / "shifted.tif")
    back = cr.read(written)
    assert back.crs == landsat.crs and back.nodata == 0 and back.same_geometry(landsat, atol=1e-6)
    np.testing.assert_array_equal(back.array, out.array)


def test_geometry_errors(t1: cr.SpatialImage, landsat: cr.SpatialImage) -> None:
    with pytest.raises(GeometryError, match="2D transform"):
        apply(Translation([1.0, 2.0]), t1)
    other_crs = landsat.replace(crs="EPSG:3857")
    with pytest.raises(GeometryError, match="reproject"):
        apply(Translation([0.0, 0.0]), landsat, reference=other_crs)


# ------------------------------------------------------------ homography
@pytest.fixture(scope="module")
def photo() -> cr.SpatialImage:
    from conftest import require_data

    gray = cv2.imread(str(require_data(MOTORCYCLE)), cv2.IMREAD_GRAYSCALE)
    return cr.SpatialImage(gray, origin=(0.0, 0.0), spacing=(1.0, 1.0))


HOMOGRAPHY = np.array([[0.98, 0.06, 14.0], [-0.05, 1.03, -9.0], [4e-5, -3e-5, 1.0]])


def test_homography_pixel_space_matches_opencv(photo: cr.SpatialImage) -> None:
    out = apply(Homography(HOMOGRAPHY), photo)
    height, width = photo.shape
    expected = cv2.warpPerspective(photo.array, HOMOGRAPHY, (width, height), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP)
    inside = out.mask
    assert 0.8 < inside.mean() < 1.0
    assert np.abs(out.array[inside].astype(int) - expected[inside].astype(int)).max() <= 1


@pytest.mark.parametrize("interpolation", ["linear", "nearest"])
def test_homography_world_space_agrees_with_pixel_space(photo: cr.SpatialImage, interpolation: str) -> None:
    """The same warp seen through a world geometry (ITK, sampled displacement field) vs pixel space (OpenCV)."""
    placed = photo.replace(origin=(100.0, -50.0), spacing=(0.5, 0.5), direction=np.array([[0.0, -1.0], [1.0, 0.0]]))
    world_from_index = placed.affine
    world_h = world_from_index @ HOMOGRAPHY @ np.linalg.inv(world_from_index)
    pixel = apply(Homography(HOMOGRAPHY), photo, interpolation=interpolation, output_dtype=np.float32)
    world = apply(Homography(world_h), placed, interpolation=interpolation, output_dtype=np.float32)
    assert world.same_geometry(placed)
    both = pixel.mask & world.mask
    assert both.sum() > 0.98 * max(pixel.mask.sum(), world.mask.sum())
    diff = np.abs(pixel.array[both] - world.array[both])
    if interpolation == "linear":  # OpenCV quantises sample positions to 1/32 pixel
        assert diff.mean() < 0.5 and ncc(pixel.array, world.array, both) > 0.999
    else:  # only exact half-pixel ties may round differently
        assert (diff == 0).mean() > 0.999
    # B-spline goes through ITK in pixel space too, and agrees with linear to the interpolation difference.
    cubic = apply(Homography(HOMOGRAPHY), photo, interpolation="bspline", output_dtype=np.float32)
    assert ncc(cubic.array, pixel.array, cubic.mask & pixel.mask) > 0.99


# ------------------------------------------------------------ transform_points
def _bspline(image: cr.SpatialImage, seed: int, *, mesh: int = 4, sigma_mm: float = 3.0) -> BSpline:
    """A seeded cubic B-spline over ``image`` (``mesh`` cells per axis, coefficients ~ N(0, sigma_mm))."""
    twin = sitk.BSplineTransformInitializer(image.to_sitk(), [mesh] * image.ndim)
    n = len(twin.GetParameters())
    twin.SetParameters(tuple(np.random.default_rng(seed).normal(0.0, sigma_mm, n).tolist()))
    return cr.transforms.from_sitk(twin)


@pytest.mark.parametrize("kind", ["translation", "rigid", "similarity", "affine", "bspline", "composite"])
def test_transform_points_forward_and_inverse(t1: cr.SpatialImage, kind: str) -> None:
    centre = t1.world_centre
    transforms = {
        "translation": Translation([3.0, -2.0, 1.0]),
        "rigid": _rigid(t1),
        "similarity": Similarity.from_angles(1.07, np.deg2rad([2.0, 5.0, -4.0]), translation=[1, 2, 3], center=centre),
        "affine": Affine([[1.05, 0.03, 0.0], [-0.02, 0.96, 0.04], [0.01, 0.0, 1.02]], [2.0, 1.0, -1.0], centre),
        "bspline": _bspline(t1, seed=1),
        "composite": Composite((_rigid(t1), _bspline(t1, seed=2))),
    }
    transform = transforms[kind]
    rng = np.random.default_rng(8)
    fixed_points = t1.index_to_world(rng.uniform(8, np.array(t1.size) - 8, size=(60, 3)))
    moving_points = transform_points(transform, fixed_points)
    assert moving_points.shape == fixed_points.shape
    assert np.linalg.norm(moving_points - fixed_points, axis=1).mean() > 1.0
    np.testing.assert_allclose(transform_points(transform, moving_points, inverse=True), fixed_points, atol=1e-5)
    single = transform_points(transform, fixed_points[0])
    assert single.shape == (3,)
    np.testing.assert_allclose(single, moving_points[0], atol=1e-12)


@pytest.mark.parametrize("kind", ["homography", "homography_then_bspline", "bspline", "similarity"])
def test_points_and_pixels_agree_in_2d(photo: cr.SpatialImage, kind: str) -> None:
    """Nearest-neighbour output at pixel ``i`` is the photo at ``rint(transform(i))``, for every 2D transform kind
    (OpenCV path, sampled displacement field for a chain holding a homography, ITK for the rest)."""
    transforms = {
        "homography": Homography(HOMOGRAPHY),
        "homography_then_bspline": Composite((Homography(HOMOGRAPHY), _bspline(photo, seed=3, mesh=5, sigma_mm=4.0))),
        "bspline": _bspline(photo, seed=4, mesh=5, sigma_mm=4.0),
        "similarity": Similarity.from_angles(0.93, np.deg2rad(8.0), translation=[5.0, -3.0], center=[370.0, 250.0]),
    }
    transform = transforms[kind]
    out = apply(transform, photo, interpolation="nearest")
    rng = np.random.default_rng(12)
    pixels = rng.integers(40, np.array(photo.size) - 40, size=(300, 2))
    source = transform_points(transform, pixels.astype(float))
    nearest = np.rint(source).astype(int)
    inside = np.all((nearest >= 0) & (nearest < np.array(photo.size)), axis=1)
    ties = np.any(np.abs(np.abs(source - np.floor(source)) - 0.5) < 1e-3, axis=1)  # rounding may go either way
    keep = inside & ~ties
    assert keep.sum() > 250
    np.testing.assert_array_equal(
        out.array[pixels[keep, 1], pixels[keep, 0]], photo.array[nearest[keep, 1], nearest[keep, 0]]
    )
