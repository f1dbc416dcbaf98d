"""Displacement fields as transform values: ITK's point map, the numerical inverse, and the files other tools read.

A field maps fixed-space points ``x`` to ``x + u(x)`` (ITK's direction). Twins
are SimpleITK's own ``DisplacementFieldTransform`` built from the same
vectors, and SimpleITK (and nibabel, for the NIfTI header ANTs relies on)
reading the files we write.
"""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk

import coregister as cr
from coregister.errors import GeometryError, UnreadableInputError, UnsupportedFormatError
from coregister.io.transforms import read_transform
from coregister.measures import jacobian_determinant
from coregister.transforms import Affine, Composite, DisplacementField, from_dict, sampled_field

DIRECTION_LPS_FLIP = np.diag([-1.0, -1.0, 1.0])  # a NIfTI RAS volume read into LPS has this direction


def _smooth_field(shape: tuple[int, ...], *, amplitude: float, seed: int, spacing: float = 2.0,
                  direction: np.ndarray | None = None) -> DisplacementField:
    """A seeded smooth field: a few Gaussian bumps per component, up to ``amplitude`` world units."""
    rng = np.random.default_rng(seed)
    grids = np.meshgrid(*[np.linspace(-1.0, 1.0, n) for n in shape], indexing="ij")
    vectors = np.zeros((*shape, len(shape)))
    for c in range(len(shape)):
        for _ in range(3):
            centre = rng.uniform(-0.6, 0.6, len(shape))
            bump = np.exp(-sum((g - m) ** 2 for g, m in zip(grids, centre, strict=True)) / 0.15)
            vectors[..., c] += rng.uniform(-1, 1) * bump
    vectors *= amplitude / np.abs(vectors).max()
    origin = tuple(float(v) for v in rng.uniform(-50, 50, len(shape)))
    image = cr.SpatialImage(vectors, origin=origin, spacing=(spacing,) * len(shape), direction=direction)
    return DisplacementField(image)


def _sitk_twin(field: DisplacementField) -> sitk.DisplacementFieldTransform:
    image = sitk.GetImageFromArray(np.ascontiguousarray(field.vectors), isVector=True)
    image.SetOrigin(field.field.origin)
    image.SetSpacing(field.field.spacing)
    image.SetDirection(tuple(np.asarray(field.field.direction).ravel()))
    return sitk.DisplacementFieldTransform(image)


def _points_around(field: DisplacementField, n: int, seed: int, margin: float = 3.0) -> np.ndarray:
    """Random world points over the grid and ``margin`` voxels beyond it (ITK extrapolates there)."""
    rng = np.random.default_rng(seed)
    index = rng.uniform(-margin, np.asarray(field.field.size) - 1 + margin, (n, field.ndim))
    return field.field.index_to_world(index)


@pytest.mark.parametrize("ndim", [2, 3])
def test_points_map_as_simpleitk_maps_them(ndim: int) -> None:
    shape = (9, 11, 13)[:ndim] if ndim == 3 else (17, 19)
    field = _smooth_field(shape, amplitude=3.0, seed=ndim, direction=DIRECTION_LPS_FLIP[:ndim, :ndim] if ndim == 3 else None)
    twin = _sitk_twin(field)
    points = _points_around(field, 400, seed=1)
    expected = np.array([twin.TransformPoint(tuple(p)) for p in points])
    assert np.allclose(field.transform_points(points), expected, atol=1e-9, rtol=0)
    via_to_sitk = field.to_sitk()
    assert np.allclose([via_to_sitk.TransformPoint(tuple(p)) for p in points], expected, atol=1e-12, rtol=0)


def test_inverse_states_its_residual_and_undoes_the_map() -> None:
    # a 4 mm field on a 1 mm grid (a registration's field is smooth on its grid: between grid points the inverse
    # is interpolated linearly, which is where most of its error off the grid comes from)
    field = _smooth_field((48, 52, 44), amplitude=4.0, seed=3, spacing=1.0, direction=DIRECTION_LPS_FLIP)
    inverse = field.inverse()
    assert isinstance(inverse, DisplacementField) and inverse.inverse_residual_mm is not None
    mean, largest = inverse.inverse_residual_mm
    assert 0 <= mean <= largest <= 0.01  # on its grid points
    # inside the grid, away from its border (where f(x) may leave the grid the inverse is defined on)
    points = field.field.world_grid()[3:-3, 3:-3, 3:-3].reshape(-1, 3)[::9]
    there_and_back = inverse.transform_points(field.transform_points(points))
    assert np.abs(there_and_back - points).max() < 0.1
    assert field.inverse() is inverse and inverse.inverse() is field  # computed once; the inverse's inverse is the field
    # the composite's inverse inverts the field member numerically and the affine exactly
    chain = Composite((Affine(np.diag([1.1, 0.9, 1.0]), [2.0, -1.0, 0.5]), field))
    back = chain.inverse().transform_points(chain.transform_points(points))
    assert np.abs(back - points).max() < 0.1


def test_nifti_is_an_ants_warp_that_simpleitk_reads_with_the_same_meaning(tmp_path: Path) -> None:
    field = _smooth_field((10, 12, 14), amplitude=5.0, seed=4, direction=DIRECTION_LPS_FLIP)
    path = field.save(tmp_path / "warp.nii.gz")
    header = nib.load(path).header
    assert int(header["intent_code"]) == 1007  # NIFTI_INTENT_VECTOR
    assert tuple(header["dim"][:6]) == (5, 14, 12, 10, 1, 3)  # x, y, z, t = 1, three components, as ANTs writes
    # SimpleITK reads the same vectors (ITK/LPS components, not flipped to RAS) on the same grid
    image = sitk.ReadImage(str(path))
    assert image.GetNumberOfComponentsPerPixel() == 3
    assert np.array_equal(sitk.GetArrayFromImage(image), field.vectors)
    assert np.allclose(image.GetOrigin(), field.field.origin, atol=1e-6)
    assert np.allclose(np.reshape(image.GetDirection(), (3, 3)), field.field.direction, atol=1e-6)
    read_back = sitk.DisplacementFieldTransform(sitk.Cast(image, sitk.sitkVectorFloat64))
    points = _points_around(field, 200, seed=5, margin=0.0)
    assert np.allclose([read_back.TransformPoint(tuple(p)) for p in points], field.transform_points(points), atol=1e-6)
    again = read_transform(path)
    assert isinstance(again, DisplacementField)
    assert np.array_equal(again.vectors, field.vectors) and again.field.same_geometry(field.field)
    assert cr.write(field, tmp_path / "by_write.nii.gz").is_file()  # cr.write hands a transform to its save


def test_composite_h5_round_trip_through_simpleitk(tmp_path: Path) -> None:
    field = _smooth_field((12, 10, 11), amplitude=3.0, seed=6)
    chain = Composite((Affine(np.diag([1.05, 0.95, 1.0]), [3.0, -2.0, 1.0], center=[5.0, 5.0, 5.0]), field))
    path = chain.save(tmp_path / "transform.h5")
    itk = sitk.ReadTransform(str(path))
    points = _points_around(field, 200, seed=7, margin=0.0)
    assert np.allclose([itk.TransformPoint(tuple(p)) for p in points], chain.transform_points(points), atol=1e-9)
    again = read_transform(path)
    assert isinstance(again, Composite) and isinstance(again.transforms[-1], DisplacementField)
    assert np.array_equal(again.transforms[-1].vectors, field.vectors)
    assert np.allclose(again.transform_points(points), chain.transform_points(points), atol=1e-9)
    # the whole chain as one field on the member's grid (ANTs' collapsed warp), exact at the grid points
    collapsed = read_transform(chain.save(tmp_path / "collapsed.nii.gz"))
    grid = field.field.world_grid().reshape(-1, 3)
    assert np.allclose(collapsed.transform_points(grid), chain.transform_points(grid), atol=1e-9)


@pytest.mark.parametrize("name", ["t.tfm", "t.json", "t.mat"])
def test_formats_that_cannot_hold_a_field_are_refused(tmp_path: Path, name: str) -> None:
    field = _smooth_field((5, 6, 7), amplitude=1.0, seed=8)
    with pytest.raises(UnsupportedFormatError, match=r"\.h5"):
        field.save(tmp_path / name)
    with pytest.raises(UnsupportedFormatError, match=r"\.h5"):
        Composite((Affine(np.eye(3)), field)).save(tmp_path / name)
    summary = field.to_dict()
    assert summary["type"] == "DisplacementField" and summary["grid_size"] == [7, 6, 5]
    with pytest.raises(UnsupportedFormatError, match="read the field"):
        from_dict(summary)


def test_a_field_needs_one_component_per_axis(tmp_path: Path) -> None:
    with pytest.raises(GeometryError, match="components"):
        DisplacementField(cr.SpatialImage(np.zeros((4, 5, 6, 2)), origin=(0, 0, 0), spacing=(1, 1, 1)))
    scalar = tmp_path / "scalar.nii.gz"
    sitk.WriteImage(sitk.Image([4, 4, 4], sitk.sitkFloat32), str(scalar))
    with pytest.raises(UnreadableInputError, match="not a 3D displacement field"):
        read_transform(scalar)


def test_sampled_field_and_jacobian_of_a_field() -> None:
    grid = cr.SpatialImage(np.zeros((14, 16, 18)), origin=(-10.0, 4.0, 2.0), spacing=(1.5, 1.5, 2.0),
                           direction=DIRECTION_LPS_FLIP)
    matrix = np.array([[1.1, 0.05, 0.0], [0.0, 0.9, 0.02], [0.01, 0.0, 1.2]])
    affine = Affine(matrix, [1.0, 2.0, 3.0])
    field = sampled_field(affine, grid)
    points = grid.world_grid().reshape(-1, 3)
    assert np.allclose(field.transform_points(points), affine.transform_points(points), atol=1e-9)
    det = jacobian_determinant(field, grid).array
    assert np.allclose(det, np.linalg.det(matrix), atol=1e-9)  # exact for a linear map, through the LPS flip
    # a smooth field: SimpleITK's own Jacobian filter agrees on an identity-direction grid
    smooth = _smooth_field((20, 22, 24), amplitude=3.0, seed=9)
    ours = jacobian_determinant(smooth, smooth.field).array
    theirs = sitk.GetArrayFromImage(sitk.DisplacementFieldJacobianDeterminant(smooth.to_sitk_image()))
    assert np.allclose(ours[1:-1, 1:-1, 1:-1], theirs[1:-1, 1:-1, 1:-1], atol=1e-9)


def test_the_transform_values_send_a_field_image_to_the_image_readers(tmp_path: Path) -> None:
    from coregister import transforms

    path = _smooth_field((5, 6, 7), amplitude=1.0, seed=9).save(tmp_path / "x1Warp.nii.gz")
    with pytest.raises(UnsupportedFormatError, match=r"displacement-field image: read it with coregister\.read_transform"):
        transforms.read_transform(path)
    assert isinstance(read_transform(path), DisplacementField)
