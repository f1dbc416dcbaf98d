"""Transforms as values: point maps against their SimpleITK (or OpenCV) twins, inverses, composition order,
ITK/JSON files both ways (ours into SimpleITK, SimpleITK's and ANTs' into ours).

Every transform maps fixed-space points to moving space (ITK's convention); a composite applies its last
member first. Twins are built with SimpleITK's own API, not with our ``to_sitk``, so a wrong convention
(Euler order, centre, composite order) shows up as a point mismatch.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

import cv2
import numpy as np
import pytest
import SimpleITK as sitk
from scipy.spatial.transform import Rotation

import coregister as cr
from coregister.errors import UnreadableInputError, UnsupportedFormatError
from coregister.transforms import (
    Affine,
    BSpline,
    Composite,
    Homography,
    Rigid,
    Similarity,
    Transform,
    Translation,
    decompose,
    from_dict,
    from_sitk,
    read_transform,
)

RNG_SEED = 20240611


def _points(ndim: int, n: int = 50, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(-80.0, 80.0, size=(n, ndim))


def _sitk_map(tx: sitk.Transform, points: np.ndarray) -> np.ndarray:
    return np.array([tx.TransformPoint(tuple(float(v) for v in p)) for p in points])


def _bspline_twin(ndim: int, seed: int) -> sitk.BSplineTransform:
    """A SimpleITK B-spline over a 160 mm box centred on 0, random coefficients up to ~4 mm."""
    size = [40] * ndim
    domain = sitk.Image(size, sitk.sitkFloat32)
    domain.SetSpacing([4.0] * ndim)
    domain.SetOrigin([-78.0] * ndim)
    twin = sitk.BSplineTransformInitializer(domain, [5] * ndim)
    n = len(twin.GetParameters())
    twin.SetParameters(tuple(np.random.default_rng(seed).normal(0.0, 1.5, n).tolist()))
    return twin


def _twins(ndim: int) -> list[tuple[str, Transform, sitk.Transform]]:
    """(name, ours, SimpleITK twin built independently) for every transform value of dimension ``ndim``."""
    rng = np.random.default_rng(RNG_SEED + ndim)
    t = rng.uniform(-10, 10, ndim)
    c = rng.uniform(-20, 20, ndim)
    cases: list[tuple[str, Transform, sitk.Transform]] = [
        ("translation", Translation(t), sitk.TranslationTransform(ndim, tuple(t))),
    ]
    matrix = np.eye(ndim) + rng.normal(0, 0.08, (ndim, ndim))
    cases.append(("affine", Affine(matrix, t, c), sitk.AffineTransform(tuple(matrix.ravel()), tuple(t), tuple(c))))
    if ndim == 2:
        angle = 0.4
        cases.append(("rigid", Rigid.from_angles(angle, translation=t, center=c), sitk.Euler2DTransform(tuple(c), angle, tuple(t))))
        cases.append(
            ("similarity", Similarity.from_angles(1.3, angle, translation=t, center=c),
             sitk.Similarity2DTransform(1.3, angle, tuple(t), tuple(c)))
        )
    else:
        angles = (0.3, -0.5, 1.1)
        euler = sitk.Euler3DTransform()
        euler.SetComputeZYX(True)  # R = Rz Ry Rx, our convention
        euler.SetCenter(tuple(c))
        euler.SetRotation(*angles)
        euler.SetTranslation(tuple(t))
        cases.append(("rigid", Rigid.from_angles(angles, translation=t, center=c), euler))
        axis, angle = np.array([0.2, -0.6, 0.77]) / np.linalg.norm([0.2, -0.6, 0.77]), 0.9
        similar = sitk.Similarity3DTransform()
        similar.SetCenter(tuple(c))
        similar.SetRotation(tuple(axis), angle)
        similar.SetScale(0.85)
        similar.SetTranslation(tuple(t))
        rotation = Rotation.from_rotvec(axis * angle).as_matrix()
        cases.append(("similarity", Similarity(0.85, rotation, t, c), similar))
    twin_bspline = _bspline_twin(ndim, seed=ndim)
    images = twin_bspline.GetCoefficientImages()
    ours_bspline = BSpline(
        np.stack([sitk.GetArrayFromImage(im) for im in images]), images[0].GetOrigin(), images[0].GetSpacing()
    )
    cases.append(("bspline", ours_bspline, twin_bspline))
    # Composite: ITK applies the last-added transform first, and so do we.
    rigid_ours, rigid_twin = cases[2][1], cases[2][2]
    affine_ours, affine_twin = cases[1][1], cases[1][2]
    composite_twin = sitk.CompositeTransform([rigid_twin, affine_twin, twin_bspline])
    cases.append(("composite", Composite((rigid_ours, affine_ours, ours_bspline)), composite_twin))
    return cases


CASES = [(ndim, name) for ndim in (2, 3) for name, _, _ in _twins(ndim)]


def _case(ndim: int, name: str) -> tuple[Transform, sitk.Transform]:
    for case_name, ours, twin in _twins(ndim):
        if case_name == name:
            return ours, twin
    raise KeyError(name)


@pytest.mark.parametrize(("ndim", "name"), CASES)
def test_maps_points_like_simpleitk_twin(ndim: int, name: str) -> None:
    ours, twin = _case(ndim, name)
    points = _points(ndim)
    expected = _sitk_map(twin, points)
    np.testing.assert_allclose(ours.transform_points(points), expected, atol=1e-9, rtol=0)
    # ... and through its own SimpleITK conversion, and back from SimpleITK.
    np.testing.assert_allclose(_sitk_map(ours.to_sitk(), points), expected, atol=1e-9, rtol=0)
    back = from_sitk(twin)
    assert type(back) is type(ours)
    np.testing.assert_allclose(back.transform_points(points), expected, atol=1e-9, rtol=0)


@pytest.mark.parametrize(("ndim", "name"), CASES)
def test_single_point_keeps_its_shape(ndim: int, name: str) -> None:
    ours, _ = _case(ndim, name)
    point = _points(ndim, n=1)[0]
    assert ours.transform_points(point).shape == (ndim,)
    np.testing.assert_allclose(ours.transform_points(point), ours.transform_points(point[None])[0], atol=0)


@pytest.mark.parametrize(("ndim", "name"), [c for c in CASES if c[1] != "bspline"])
def test_inverse_undoes_the_map_and_matches_simpleitk(ndim: int, name: str) -> None:
    ours, twin = _case(ndim, name)
    points = _points(ndim, seed=3)
    if name == "composite":  # holds a B-spline: no closed-form inverse, points invert numerically
        with pytest.raises(cr.CoregisterError, match="inverse=True"):
            ours.inverse()
        back = cr.transform_points(ours, ours.transform_points(points), inverse=True)
        np.testing.assert_allclose(back, points, atol=1e-6)
        return
    inverse = ours.inverse()
    np.testing.assert_allclose(inverse.transform_points(ours.transform_points(points)), points, atol=1e-9)
    np.testing.assert_allclose(inverse.transform_points(points), _sitk_map(twin.GetInverse(), points), atol=1e-9)
    if name in ("translation", "rigid", "similarity"):
        assert type(inverse) is type(ours)  # the family is closed under inversion


@pytest.mark.parametrize("ndim", [2, 3])
def test_bspline_inverse_points_round_trip(ndim: int) -> None:
    ours, _ = _case(ndim, "bspline")
    points = _points(ndim, seed=5) * 0.8
    moved = ours.transform_points(points)
    assert np.abs(moved - points).max() > 1.0  # the deformation is not negligible
    np.testing.assert_allclose(ours.inverse_points(moved), points, atol=1e-5)
    np.testing.assert_allclose(cr.transform_points(ours, moved, inverse=True), points, atol=1e-5)


@pytest.mark.parametrize("ndim", [2, 3])
def test_bspline_maps_points_as_itk_does_on_an_oblique_grid_and_beyond_it(ndim: int) -> None:
    """The spline is evaluated all at once (SciPy); ITK's TransformPoint, point by point, is the reference."""
    rng = np.random.default_rng(ndim)
    shape = (7, 8, 9)[:ndim]
    angles = [0.3] if ndim == 2 else [0.2, -0.35, 0.5]
    spline = BSpline(rng.normal(0.0, 3.0, (ndim, *shape)), grid_origin=rng.normal(0.0, 5.0, ndim),
                     grid_spacing=rng.uniform(5.0, 15.0, ndim), grid_direction=cr.transforms.rotation_matrix(angles))
    low, high = 1.0, np.array(shape[::-1]) - 2.0  # ITK's valid region: the second to the last but one control point
    index = rng.uniform(-1.0, np.array(shape[::-1]) + 1.0, (4000, ndim))  # over the grid and a cell beyond
    index = index[np.all((np.abs(index - low) > 1e-6) & (np.abs(index - high) > 1e-6), axis=1)]  # rounding decides
    points = index @ (spline.grid_direction @ np.diag(spline.grid_spacing)).T + spline.grid_origin
    ours = spline.transform_points(points)
    itk = _sitk_map(spline.to_sitk(), points)
    np.testing.assert_allclose(ours, itk, atol=1e-9, rtol=0)
    outside = np.any((index < low) | (index > high), axis=1)
    assert 0.2 < outside.mean() < 0.95 and np.array_equal(ours[outside], points[outside])  # the identity there


def _outward(kind: str, push: np.ndarray, direction: np.ndarray) -> Transform:
    """A 2D warp over the grid's [0, 100] x [0, 80] mm (axes along ``direction``'s columns) moving everything by ``push``."""
    if kind == "bspline":
        coefficients = np.zeros((2, 11, 13))  # 10 mm mesh, one control point beyond the domain on each side
        coefficients[0], coefficients[1] = push
        return BSpline(coefficients, grid_origin=direction @ [-10.0, -10.0], grid_spacing=(10.0, 10.0),
                       grid_direction=direction)
    vectors = np.broadcast_to(push, (81, 101, 2)).copy()
    return cr.DisplacementField(cr.SpatialImage(vectors, origin=(0.0, 0.0), spacing=(1.0, 1.0), direction=direction))


@pytest.mark.parametrize("kind", ["bspline", "field"])
@pytest.mark.parametrize("angle", [0.0, 0.5])
@pytest.mark.parametrize("face", ["low x", "high y"])
def test_inverse_points_finds_the_preimage_inside_the_domain(kind: str, angle: float, face: str) -> None:
    """A point carried out of the warp's domain has two preimages (the warp is the identity outside): the inside one."""
    direction = cr.transforms.rotation_matrix(angle)
    if face == "low x":  # grid coordinates (mm along the grid's axes) near the face, and the push across it
        local, push = np.array([[0.5, 40.0], [2.0, 10.0], [1.0, 79.0], [50.0, 40.0]]), np.array([-3.0, 0.0])
    else:
        local, push = np.array([[40.0, 79.5], [10.0, 78.0], [99.0, 79.0], [50.0, 40.0]]), np.array([0.0, 3.0])
    warp = _outward(kind, direction @ push, direction)
    inside = local @ direction.T
    moved = warp.transform_points(inside)
    beyond = (moved @ direction)[:3]  # in grid coordinates: past the face, where the identity maps each to itself
    assert np.all(beyond[:, 0] < -0.9) if face == "low x" else np.all(beyond[:, 1] > 80.9)
    np.testing.assert_allclose(warp.inverse_points(moved), inside, atol=1e-5)
    # a point no inside point reaches keeps the identity's preimage, itself
    far = (np.array([[-20.0, 40.0]]) if face == "low x" else np.array([[40.0, 100.0]])) @ direction.T
    np.testing.assert_allclose(warp.inverse_points(far), far, atol=1e-9)


@pytest.mark.parametrize("ndim", [2, 3])
def test_composition_order(ndim: int) -> None:
    """``a @ b`` applies ``b`` first; ``Composite((a, b))`` too (last member first, as ITK)."""
    cases = {name: ours for name, ours, _ in _twins(ndim)}
    a, b, spline = cases["rigid"], cases["affine"], cases["bspline"]
    points = _points(ndim, seed=7)
    expected = a.transform_points(b.transform_points(points))
    np.testing.assert_allclose((a @ b).transform_points(points), expected, atol=1e-9)
    np.testing.assert_allclose(Composite((a, b)).transform_points(points), expected, atol=1e-9)
    assert not np.allclose((b @ a).transform_points(points), expected, atol=1e-3)  # order matters here
    chained = a @ (b @ spline)
    assert isinstance(chained, Composite)
    np.testing.assert_allclose(
        chained.transform_points(points), a.transform_points(b.transform_points(spline.transform_points(points))), atol=1e-9
    )
    flat = Composite((a, b, spline)).flattened()
    assert isinstance(flat, Composite) and len(flat.transforms) == 2
    np.testing.assert_allclose(flat.transform_points(points), chained.transform_points(points), atol=1e-9)
    inverse = Composite((a, b)).inverse()
    np.testing.assert_allclose(inverse.transform_points(expected), points, atol=1e-9)


def test_homography_matches_opencv_and_composes_with_linear() -> None:
    rng = np.random.default_rng(11)
    matrix = np.array([[1.05, 0.04, 12.0], [-0.03, 0.97, -7.0], [2e-4, -1e-4, 1.0]])
    h = Homography(matrix)
    points = rng.uniform(0, 300, (40, 2))
    expected = cv2.perspectiveTransform(points.reshape(-1, 1, 2), matrix).reshape(-1, 2)
    np.testing.assert_allclose(h.transform_points(points), expected, atol=1e-9)
    np.testing.assert_allclose(h.inverse().transform_points(expected), points, atol=1e-8)
    shift = Translation([3.0, -4.0])
    for combined, first, second in ((shift @ h, h, shift), (h @ shift, shift, h)):
        assert isinstance(combined, Homography)
        np.testing.assert_allclose(
            combined.transform_points(points), second.transform_points(first.transform_points(points)), atol=1e-9
        )


# ------------------------------------------------------------------ files
ITK_SUFFIXES = [".tfm", ".txt", ".h5", ".mat"]


@pytest.mark.parametrize("suffix", [*ITK_SUFFIXES, ".json"])
@pytest.mark.parametrize(("ndim", "name"), CASES)
def test_save_and_read_back(tmp_path: Path, suffix: str, ndim: int, name: str) -> None:
    ours, twin = _case(ndim, name)
    path = tmp_path / f"t{suffix}"
    points = _points(ndim, seed=9) * 0.9
    if suffix == ".mat" and name == "composite":  # one transform per MATLAB file; this chain is not linear
        with pytest.raises(UnsupportedFormatError, match=r"\.h5"):
            ours.save(path)
        assert list(tmp_path.iterdir()) == []
        return
    assert ours.save(path) == path
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # no temporary file left
    back = read_transform(path)
    assert type(back) is type(ours)
    np.testing.assert_allclose(back.transform_points(points), ours.transform_points(points), atol=1e-9)
    if suffix != ".json":  # the file is a real ITK file: SimpleITK maps points identically
        np.testing.assert_allclose(_sitk_map(sitk.ReadTransform(str(path)), points), _sitk_map(twin, points), atol=1e-9)


def test_linear_composite_saves_to_mat_merged(tmp_path: Path) -> None:
    cases = {name: ours for name, ours, _ in _twins(3)}
    chain = Composite((cases["rigid"], cases["affine"]))
    path = chain.save(tmp_path / "chain.mat")
    points = _points(3)
    np.testing.assert_allclose(_sitk_map(sitk.ReadTransform(str(path)), points), chain.transform_points(points), atol=1e-9)


def test_simpleitk_composite_h5_loads(tmp_path: Path) -> None:
    """A CompositeTransform .h5 written by SimpleITK itself (initial Euler + affine + B-spline)."""
    twin = _case(3, "composite")[1]
    path = tmp_path / "sitk_composite.h5"
    sitk.WriteTransform(twin, str(path))
    ours = read_transform(path)
    assert isinstance(ours, Composite)
    assert [type(t).__name__ for t in ours.transforms] == ["Rigid", "Affine", "BSpline"]
    points = _points(3, seed=2)
    np.testing.assert_allclose(ours.transform_points(points), _sitk_map(twin, points), atol=1e-9)


ANTS_MATRIX = [0.99, 0.05, -0.02, -0.04, 1.01, 0.03, 0.01, -0.02, 0.98]
ANTS_TRANSLATION = [1.5, -2.5, 3.25]
ANTS_CENTER = [10.0, -20.0, 30.0]


def _ants_expected(points: np.ndarray) -> np.ndarray:
    """ITK's matrix-offset map, written out: y = A (x - c) + c + t."""
    a = np.array(ANTS_MATRIX).reshape(3, 3)
    return (points - ANTS_CENTER) @ a.T + ANTS_CENTER + ANTS_TRANSLATION


@pytest.mark.parametrize("type_name", ["MatrixOffsetTransformBase_double_3_3", "AffineTransform_float_3_3"])
def test_ants_text_transform_loads(tmp_path: Path, type_name: str) -> None:
    """The ITK text form ANTs writes (``antsApplyTransforms`` reads and writes these)."""
    path = tmp_path / "ants_affine.txt"
    path.write_text(
        "#Insight Transform File V1.0\n#Transform 0\n"
        f"Transform: {type_name}\n"
        f"Parameters: {' '.join(map(str, ANTS_MATRIX + ANTS_TRANSLATION))}\n"
        f"FixedParameters: {' '.join(map(str, ANTS_CENTER))}\n"
    )
    ours = read_transform(path)
    assert isinstance(ours, Affine)
    points = _points(3)
    np.testing.assert_allclose(ours.transform_points(points), _ants_expected(points), atol=1e-5)


def _matlab_v4_variable(name: str, values: np.ndarray, *, single: bool) -> bytes:
    """One MATLAB v4 matrix (little endian), the container ITK's MatlabTransformIO and ANTs use for .mat."""
    data = np.asarray(values, dtype=np.float32 if single else np.float64).reshape(-1, 1)
    type_code = 10 if single else 0  # MOPT: little endian, double (0) or single (1) precision, full matrix
    header = struct.pack("<5i", type_code, data.shape[0], 1, 0, len(name) + 1)
    return header + name.encode() + b"\0" + data.tobytes(order="F")


@pytest.mark.parametrize("single", [True, False])
def test_ants_binary_mat_loads(tmp_path: Path, single: bool) -> None:
    """A binary ``0GenericAffine.mat`` as ANTs writes it: ``AffineTransform_float_3_3`` plus ``fixed``."""
    name = "AffineTransform_float_3_3" if single else "AffineTransform_double_3_3"
    path = tmp_path / "0GenericAffine.mat"
    path.write_bytes(
        _matlab_v4_variable(name, np.array(ANTS_MATRIX + ANTS_TRANSLATION), single=single)
        + _matlab_v4_variable("fixed", np.array(ANTS_CENTER), single=single)
    )
    ours = read_transform(path)
    assert isinstance(ours, Affine)
    points = _points(3)
    np.testing.assert_allclose(ours.transform_points(points), _ants_expected(points), atol=1e-4 if single else 1e-9)
    np.testing.assert_allclose(ours.transform_points(points), _sitk_map(sitk.ReadTransform(str(path)), points), atol=1e-9)


def test_json_carries_world_matrix_and_decomposition(tmp_path: Path) -> None:
    angles = np.deg2rad([5.0, -12.0, 30.0])
    scales = np.array([1.1, 0.95, 0.9])
    shear = np.array([[1.0, 0.04, -0.02], [0.0, 1.0, 0.03], [0.0, 0.0, 1.0]])
    rotation = Rigid.from_angles(angles).rotation
    matrix = rotation @ np.diag(scales) @ shear
    affine = Affine(matrix, [1.0, 2.0, 3.0], [10.0, 0.0, -5.0])
    data = json.loads(affine.save(tmp_path / "a.json").read_text())
    assert data["fixed_to_moving"] is True
    np.testing.assert_allclose(np.array(data["world_matrix"]), affine.homogeneous, atol=1e-12)
    np.testing.assert_allclose(data["decomposition"]["angles_deg"], np.rad2deg(angles), atol=1e-9)
    np.testing.assert_allclose(data["decomposition"]["scales"], scales, atol=1e-12)
    np.testing.assert_allclose(data["decomposition"]["shears"], [0.04, -0.02, 0.03], atol=1e-12)
    assert data["decomposition"]["reflection"] is False
    back = from_dict(data)
    np.testing.assert_allclose(back.homogeneous, affine.homogeneous, atol=1e-12)
    # A composite of linear members reports the merged world matrix too.
    chain = Composite((Translation([1.0, 0.0, 0.0]), affine))
    merged = chain.to_dict()
    np.testing.assert_allclose(np.array(merged["world_matrix"]), (Translation([1.0, 0.0, 0.0]) @ affine).homogeneous, atol=1e-12)


def test_decompose_flags_a_reflection() -> None:
    result = decompose(np.diag([-2.0, 1.0, 1.0]))
    assert result["reflection"] is True
    np.testing.assert_allclose(np.abs(result["scales"]), [2.0, 1.0, 1.0])


def test_homography_file_rules(tmp_path: Path) -> None:
    h = Homography(np.array([[1.0, 0.1, 3.0], [0.0, 1.0, -2.0], [1e-4, 0.0, 1.0]]))
    with pytest.raises(UnsupportedFormatError, match=r"\.json"):
        h.save(tmp_path / "h.tfm")
    assert list(tmp_path.iterdir()) == []
    back = read_transform(h.save(tmp_path / "h.json"))
    np.testing.assert_allclose(back.matrix, h.matrix, atol=0)


@pytest.mark.parametrize(
    ("filename", "content", "error"),
    [
        ("missing.tfm", None, UnreadableInputError),
        ("t.xyz", "whatever", UnsupportedFormatError),
        ("broken.tfm", "#Insight Transform File V1.0\nTransform: NoSuchTransform_double_3_3\n", UnreadableInputError),
        ("broken.json", "{not json", UnreadableInputError),
    ],
)
def test_read_errors(tmp_path: Path, filename: str, content: str | None, error: type) -> None:
    path = tmp_path / filename
    if content is not None:
        path.write_text(content)
    with pytest.raises(error, match=filename.replace(".", r"\.")):
        read_transform(path)
