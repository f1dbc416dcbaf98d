"""Transforms in and out of the other tools (``coregister.io.transforms``, ``cr.read_transform``/``cr.write_transform``).

One suite over every format: each transform kind the format holds goes ours
-> the tool's file -> ours and must map points as before to 1e-6 mm; where
NiTransforms reads the same format, its reading must agree with ours. The
directions are checked against the tools themselves: files elastix wrote
(with transformix's mapping of points), a FLIRT matrix built by hand from
the known motion of nibabel's SPM12 test images, and Slicer's displayed
matrix.
"""

from __future__ import annotations

import importlib.util
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

import coregister as cr
from coregister.cli import main
from coregister.conventions import point_map_ras_lps
from coregister.errors import ConfigError, UnreadableInputError, UnsupportedFormatError
from coregister.io.transforms import detect_transform_format, read_transform, write_transform
from coregister.io.transforms._field import displacement_field, field_parts
from coregister.io.transforms.ants import read_ants, write_ants
from coregister.io.transforms.fsl import flirt_matrix, from_flirt_matrix, scaled_voxel_matrix
from coregister.io.transforms.slicer import from_slicer_matrix, to_slicer_matrix

ANAT = "medical/nibabel_anat_func/anatomical.nii"
MOVED = {  # SPM12 resamplings of the anatomical moved by a known rigid motion (MANIFEST.md, nibabel's tests)
    "resampled_anat_moved": "medical/nibabel_anat_func/resampled_anat_moved.nii",  # LAS grid: det < 0
    "reoriented_anat_moved": "medical/nibabel_anat_func/reoriented_anat_moved.nii",  # RAS grid: det > 0
}
POINT_ATOL_MM = 1e-6
NITRANSFORMS_ATOL_MM = 1e-5  # NiTransforms keeps fields and chains in float64 after its own RAS flips
TRANSFORMIX_ATOL_MM = 1.5e-6  # transformix prints its output points to 6 decimals
ANTS_FLOAT32_ATOL_MM = 1e-5  # antsApplyTransforms resampled the ramps to float32 (values up to 60 mm: 4e-6 mm steps)
DATA = Path(__file__).parent / "data"
RAS = np.diag([-1.0, -1.0, 1.0])  # LPS <-> RAS for points


@pytest.fixture(scope="module")
def grid() -> cr.SpatialImage:
    from conftest import require_data

    return cr.read(require_data(ANAT))


def _transforms(grid: cr.SpatialImage) -> dict[str, cr.Transform]:
    rng = np.random.default_rng(14)
    centre = grid.world_centre
    rigid = cr.Rigid.from_angles(np.deg2rad([4.0, -7.0, 11.0]), translation=[2.5, -1.5, 3.0], center=centre)
    affine = cr.Affine(np.eye(3) + rng.normal(0, 0.04, (3, 3)), [1.0, -2.0, 0.5], centre)
    spline = cr.BSpline(rng.normal(0, 1.5, (3, 6, 7, 6)), grid_origin=centre - 40.0, grid_spacing=[16.0, 16.0, 16.0])
    z, y, x = np.meshgrid(*[np.arange(n, dtype=float) for n in grid.shape], indexing="ij")
    smooth = np.stack([1.5 * np.sin(x / 5.0) * np.cos(z / 4.0), 1.2 * np.cos(y / 6.0), 0.8 * np.sin((x + y) / 7.0)], axis=-1)
    field = displacement_field(smooth, origin=grid.origin, spacing=grid.spacing, direction=grid.direction)
    return {
        "translation": cr.Translation([1.25, -3.5, 2.0]),
        "rigid": rigid,
        "similarity": cr.Similarity.from_angles(1.08, np.deg2rad([-3.0, 5.0, 2.0]), translation=[1.0, 0.0, -2.0], center=centre),
        "affine": affine,
        "bspline": spline,
        "field": field,
        "affine_bspline": cr.Composite((affine, spline)),
        "rigid_field": cr.Composite((rigid, field)),
    }


#: format -> (file name, the transform kinds it holds, whether non-linear parts are sampled on the reference grid)
CASES = {
    "itk": ("t.h5", None, False),
    "itk-tfm": ("t.tfm", ("translation", "rigid", "similarity", "affine", "bspline", "affine_bspline"), False),
    "json": ("t.json", ("translation", "rigid", "similarity", "affine", "bspline", "affine_bspline"), False),
    "fsl": ("flirt.mat", ("translation", "rigid", "similarity", "affine"), False),
    "elastix": ("TransformParameters.txt", None, False),
    "ants": ("out/ants_", None, True),
    "slicer": ("slicer.h5", None, False),
    "slicer-grid": ("grid.nrrd", ("bspline", "field", "rigid_field"), True),
}
KINDS = ("translation", "rigid", "similarity", "affine", "bspline", "field", "affine_bspline", "rigid_field")


def _round_trip_cases() -> list[tuple[str, str]]:
    return [(fmt, kind) for fmt, (_, kinds, _) in CASES.items() for kind in KINDS if kinds is None or kind in kinds]


def _points(grid: cr.SpatialImage, on_grid: bool) -> np.ndarray:
    """Voxel centres of the grid (every 37th), plus, where the format keeps the transform exactly, points between them."""
    points = grid.world_grid().reshape(-1, 3)[::37]
    if on_grid:
        return points
    rng = np.random.default_rng(3)
    return np.vstack([points, points[:200] + rng.uniform(-0.9, 0.9, (200, 3))])


@pytest.mark.parametrize(("fmt", "kind"), _round_trip_cases())
def test_round_trip_ours_theirs_ours(grid: cr.SpatialImage, tmp_path: Path, fmt: str, kind: str) -> None:
    name, _, sampled = CASES[fmt]
    transform = _transforms(grid)[kind]
    tool = fmt.split("-")[0]
    (tmp_path / name).parent.mkdir(exist_ok=True)
    written = write_transform(transform, tmp_path / name, format=tool, reference=grid, moving=grid)
    assert all(p.is_file() for p in written)
    back = read_transform(written if tool == "ants" else written[-1], format=tool, reference=grid, moving=grid)
    points = _points(grid, on_grid=sampled and kind not in ("translation", "rigid", "similarity", "affine"))
    error = np.abs(back.transform_points(points) - transform.transform_points(points)).max()
    assert error < POINT_ATOL_MM, f"{fmt} {kind}: {error:.3g} mm"
    if tool in ("itk", "json", "elastix", "slicer") and not sampled:  # these keep the kind of every member
        assert [type(m).__name__ for m in getattr(back, "transforms", (back,))] == [
            type(m).__name__ for m in getattr(transform, "transforms", (transform,))]  # fmt: skip


def test_the_format_is_told_from_the_file(grid: cr.SpatialImage, tmp_path: Path) -> None:
    rigid = _transforms(grid)["rigid"]
    flirt = write_transform(rigid, tmp_path / "a.mat", format="fsl", reference=grid, moving=grid)[0]
    itk_mat = write_transform(rigid, tmp_path / "b.mat")[0]
    itk_txt = write_transform(rigid, tmp_path / "c.txt")[0]
    elastix = write_transform(rigid, tmp_path / "TransformParameters.0.txt", reference=grid)[0]
    renamed = elastix.rename(tmp_path / "rigid.txt")
    assert [detect_transform_format(p) for p in (flirt, itk_mat, itk_txt, renamed)] == ["fsl", "itk", "itk", "elastix"]
    assert detect_transform_format("sub01_1InverseWarp.nii.gz") == "ants"
    assert detect_transform_format("grid.nrrd") == "slicer"
    assert detect_transform_format(["a1Warp.nii.gz", "[a0GenericAffine.mat,1]"]) == "ants"
    # the facade reads every one of them without being told
    for path in (itk_mat, itk_txt, renamed):
        assert np.allclose(cr.read_transform(path).transform_points([[1.0, 2.0, 3.0]]), rigid.transform_points([[1.0, 2.0, 3.0]]))


# ---------------------------------------------------------------- NiTransforms
needs_nitransforms = pytest.mark.skipif(importlib.util.find_spec("nitransforms") is None,
                                        reason="NiTransforms (test extra) is not installed")  # fmt: skip


def _nt_map(xfm: object, points: np.ndarray) -> np.ndarray:
    """NiTransforms maps RAS points reference -> moving; ours are LPS."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "Reference space not set": irrelevant to mapping points
        return np.asarray(xfm.map(points @ RAS)) @ RAS  # type: ignore[attr-defined]


@needs_nitransforms
@pytest.mark.parametrize("kind", ["translation", "rigid", "similarity", "affine"])
@pytest.mark.parametrize("fmt", ["ants", "fsl"])
def test_nitransforms_reads_our_linear_files_as_we_do(grid: cr.SpatialImage, data: Callable[[str], Path],
                                                      tmp_path: Path, fmt: str, kind: str) -> None:  # fmt: skip
    import nitransforms.linear as ntl

    transform = _transforms(grid)[kind]
    name = "x0GenericAffine.mat" if fmt == "ants" else "flirt.mat"
    (path,) = write_transform(transform, tmp_path / name, format=fmt, reference=grid, moving=grid)
    options = {"fmt": "itk"} if fmt == "ants" else {"fmt": "fsl", "reference": str(data(ANAT)), "moving": str(data(ANAT))}
    theirs = ntl.load(path, **options).matrix
    assert np.abs(point_map_ras_lps(theirs) - transform.homogeneous).max() < 1e-9


@needs_nitransforms
@pytest.mark.parametrize(("fmt", "name"), [("itk", "x.tfm"), ("fsl", "x.mat"), ("lta", "x.lta")])
def test_we_read_what_nitransforms_writes(grid: cr.SpatialImage, data: Callable[[str], Path], tmp_path: Path,
                                          fmt: str, name: str) -> None:  # fmt: skip
    """The other direction: NiTransforms writes the tool's file from a RAS matrix, we read it back to the same map."""
    import nibabel as nib
    import nitransforms.linear as ntl

    affine = _transforms(grid)["affine"]
    moving_path = data(MOVED["reoriented_anat_moved"])
    ras = point_map_ras_lps(affine.homogeneous)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ntl.Affine(ras, reference=nib.load(data(ANAT))).to_filename(tmp_path / name, fmt=fmt if fmt != "lta" else "fs",
                                                                    moving=nib.load(moving_path))  # fmt: skip
    ours = cr.read_transform(tmp_path / name, format=fmt, reference=grid, moving=cr.read(moving_path))
    points = _points(grid, on_grid=False)
    # NiTransforms writes ITK text as AffineTransform_float_3_3 (7 significant digits), FSL with 8 decimals
    tolerance = {"itk": 1e-4, "fsl": 1e-6, "lta": NITRANSFORMS_ROUND_TRIP_MM["lta"]}[fmt]
    assert np.abs(ours.transform_points(points) - affine.transform_points(points)).max() < tolerance


@needs_nitransforms
@pytest.mark.parametrize("kind", ["field", "rigid_field"])
def test_nitransforms_reads_our_warps_and_composites_as_we_do(grid: cr.SpatialImage, tmp_path: Path, kind: str) -> None:
    import nitransforms.manip as ntm
    import nitransforms.nonlinear as ntn

    transform = _transforms(grid)[kind]
    points = _points(grid, on_grid=True)[:300]
    if kind == "field":  # an ANTs warp: NiTransforms' ITK displacement-field reader
        (path,) = write_transform(transform, tmp_path / "x1Warp.nii.gz")
        theirs = _nt_map(ntn.load(path, fmt="itk"), points)
    else:  # an ITK composite .h5 as antsRegistration writes it (an AffineTransform and a field)
        rigid, field = transform.transforms  # type: ignore[attr-defined]
        as_ants = cr.Composite((cr.Affine(rigid.matrix, rigid.translation, rigid.center), field))
        (path,) = write_transform(as_ants, tmp_path / "x.h5")
        theirs = _nt_map(ntm.TransformChain.from_filename(path, fmt="h5"), points)
    assert np.abs(theirs - transform.transform_points(points)).max() < NITRANSFORMS_ATOL_MM


#: FreeSurfer LTA and AFNI go through NiTransforms; each keeps the digits its format prints (LTA's volume geometry:
#: 10 decimals of the voxel sizes; AFNI: 6 significant digits), hence a tolerance of its own
NITRANSFORMS_ROUND_TRIP_MM = {"lta": 1e-5, "afni": 1e-4}


@needs_nitransforms
@pytest.mark.parametrize("kind", ["translation", "rigid", "affine"])
@pytest.mark.parametrize(("fmt", "name"), [("lta", "x.lta"), ("afni", "x.aff12.1D")])
def test_freesurfer_and_afni_matrices_round_trip_through_nitransforms(
    grid: cr.SpatialImage, data: Callable[[str], Path], tmp_path: Path, fmt: str, name: str, kind: str
) -> None:
    moving = cr.read(data(MOVED["reoriented_anat_moved"]))  # another grid, another orientation
    transform = _transforms(grid)[kind]
    (path,) = cr.write_transform(transform, tmp_path / name, reference=grid, moving=moving)
    assert detect_transform_format(path) == fmt
    back = cr.read_transform(path, reference=grid, moving=moving)
    points = _points(grid, on_grid=False)
    assert np.abs(back.transform_points(points) - transform.transform_points(points)).max() < NITRANSFORMS_ROUND_TRIP_MM[fmt]


# ---------------------------------------------------------------- FSL against SPM12
def _flirt_by_hand(reference: Path, moving: Path) -> np.ndarray:
    """The FLIRT matrix of the known motion, from FSL's definition alone (nibabel for the headers, no coregister).

    ``moved_affine = from_matvec(euler2mat(0.1, 0.2, 0.3), [3, 4, 5]) @ anatomical.affine`` (RAS): the moved
    image's world point ``M q`` is the anatomical's world point ``q``. FLIRT maps the input's (anatomical's)
    scaled voxels to the reference's: ``S_ref inv(A_ref) M A_in inv(S_in)``, where ``S`` scales voxels by their
    size and, for an image whose affine has a positive determinant, first flips the x index.
    """
    import nibabel as nib
    from nibabel.affines import from_matvec, voxel_sizes
    from nibabel.eulerangles import euler2mat

    def scaled(img: nib.Nifti1Image) -> np.ndarray:
        out = np.diag([*voxel_sizes(img.affine), 1.0])
        if np.linalg.det(img.affine) > 0:
            flip = np.eye(4)
            flip[0, 0], flip[0, 3] = -1.0, img.shape[0] - 1
            out = out @ flip
        return out

    ref, source = nib.load(reference), nib.load(moving)
    motion = from_matvec(euler2mat(0.1, 0.2, 0.3), [3, 4, 5])
    return scaled(ref) @ np.linalg.inv(ref.affine) @ motion @ source.affine @ np.linalg.inv(scaled(source))


def _ncc(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.corrcoef(a, b)[0, 1])


@needs_nitransforms
@pytest.mark.parametrize("case", sorted(MOVED))
def test_a_flirt_matrix_resamples_as_spm12_did(data: Callable[[str], Path], tmp_path: Path, case: str) -> None:
    """flirt -in anatomical -ref <moved> -applyxfm -init M, done by coregister apply, gives SPM12's image."""
    reference_path, moving_path = data(MOVED[case]), data(ANAT)
    matrix = _flirt_by_hand(reference_path, moving_path)
    path = tmp_path / "known.mat"
    path.write_text("\n".join("  ".join(f"{v:.10f}" for v in row) for row in matrix) + "\n")
    reference, moving = cr.read(reference_path), cr.read(moving_path)
    assert (np.linalg.det(reference.affine[:3, :3]) > 0) == (case == "reoriented_anat_moved")
    transform = cr.read_transform(path, format="fsl", reference=reference, moving=moving)

    resampled = cr.apply(transform, moving, reference=reference)
    spm = np.asarray(reference.array, dtype=float)
    inside = np.isfinite(spm) & (spm != 0)  # SPM12 wrote NaN outside the anatomical
    assert _ncc(np.asarray(resampled.array, dtype=float)[inside], spm[inside]) > 0.99

    # the command line reads the matrix itself, given the two images
    out = tmp_path / "flirt_applied.nii.gz"
    assert main(["apply", str(path), str(moving_path), "--reference", str(reference_path), "-o", str(out)]) == 0
    assert np.array_equal(cr.read(out).array, resampled.array)

    # NiTransforms reads the same file the same way, and our writer gives the matrix back
    import nitransforms.linear as ntl

    theirs = ntl.load(path, fmt="fsl", reference=str(reference_path), moving=str(moving_path)).matrix
    assert np.abs(point_map_ras_lps(theirs) - transform.homogeneous).max() < 1e-6
    written = cr.write_transform(transform, tmp_path / "back.mat", format="fsl", reference=reference, moving=moving)[0]
    assert np.abs(np.loadtxt(written) - matrix).max() < 1e-9


def test_the_flip_of_a_positive_determinant_changes_what_a_flirt_matrix_means(grid: cr.SpatialImage) -> None:
    """The same FLIRT matrix read against a LAS and a RAS copy of one grid gives transforms that differ by the x flip."""
    las = grid  # nibabel's anatomical is LAS: negative determinant, no flip
    ras = grid.replace(direction=np.array(grid.direction) @ np.diag([-1.0, 1.0, 1.0]),
                       origin=tuple(grid.index_to_world([[grid.size[0] - 1, 0, 0]])[0]))  # same voxels' world positions reversed along x  # fmt: skip
    assert np.linalg.det(las.affine[:3, :3]) < 0 < np.linalg.det(ras.affine[:3, :3])
    shift = np.eye(4)
    shift[0, 3] = 4.0  # input scaled-voxel x + 4 mm is the reference's x
    on_las = from_flirt_matrix(shift, reference=las, moving=las)
    on_ras = from_flirt_matrix(shift, reference=ras, moving=ras)
    # FSL flips the RAS copy's x index, so that its scaled voxels run as the LAS copy's do: the matrix means the same
    # world motion for both storage orders; read without the flip, it would mean the opposite one
    assert np.allclose(on_las.offset, on_ras.offset) and on_las.offset[0] == pytest.approx(-4.0)
    scale = np.diag([*grid.spacing, 1.0])
    unflipped = ras.affine @ np.linalg.inv(scale) @ np.linalg.inv(shift) @ scale @ np.linalg.inv(ras.affine)
    assert unflipped[0, 3] == pytest.approx(4.0)
    assert scaled_voxel_matrix(ras)[0, 3] == pytest.approx((grid.size[0] - 1) * grid.spacing[0])
    assert np.allclose(flirt_matrix(on_ras, reference=ras, moving=ras), shift)


# ---------------------------------------------------------------- elastix as elastix wrote it
@pytest.mark.parametrize("case", ["TransformParameters.2.txt", "similarity/TransformParameters.0.txt"])
def test_files_elastix_wrote_map_points_as_transformix_does(case: str) -> None:
    table = np.loadtxt(DATA / "elastix" / Path(case).parent / "transformix_points.csv", delimiter=",", skiprows=1)
    transform = cr.read_transform(DATA / "elastix" / case)  # the chain's absolute paths are stale: found beside it
    expected_kinds = ["BSpline", "Affine", "Rigid"] if "2" in case else ["Similarity"]
    assert [type(m).__name__ for m in getattr(transform, "transforms", (transform,))] == expected_kinds
    assert np.abs(transform.transform_points(table[:, :3]) - table[:, 3:]).max() < TRANSFORMIX_ATOL_MM


def test_elastix_files_refuse_what_coregister_cannot_compose(tmp_path: Path, grid: cr.SpatialImage) -> None:
    first, second = write_transform(_transforms(grid)["affine_bspline"], tmp_path / "TransformParameters.txt", reference=grid)
    text = second.read_text()
    second.write_text(text.replace('(HowToCombineTransforms "Compose")', '(HowToCombineTransforms "Add")'))
    with pytest.raises(UnsupportedFormatError, match="Add"):
        cr.read_transform(second)
    second.write_text(text)
    first.unlink()
    with pytest.raises(UnreadableInputError, match="copy the whole chain"):
        cr.read_transform(second)


# ---------------------------------------------------------------- ANTs order
def test_ants_files_come_in_the_order_ants_apply_transforms_takes(grid: cr.SpatialImage, tmp_path: Path) -> None:
    """antsApplyTransforms -t 1Warp -t 0GenericAffine maps a fixed point x to A(W(x)) (checked against ANTsPy)."""
    rigid_field = _transforms(grid)["rigid_field"]
    files = write_ants(rigid_field, tmp_path / "sub_", inverse_warp=True)
    assert [Path(p).name for p in files.forward] == ["sub_1Warp.nii.gz", "sub_0GenericAffine.mat"]
    assert [Path(p.strip("[]").split(",")[0]).name for p in files.inverse] == ["sub_0GenericAffine.mat", "sub_1InverseWarp.nii.gz"]
    assert files.inverse[0].endswith(",1]")
    x = grid.world_grid().reshape(-1, 3)[::53]
    forward = read_ants(list(files.forward))
    assert np.abs(forward.transform_points(x) - rigid_field.transform_points(x)).max() < POINT_ATOL_MM
    # the inverse files take moving points back to fixed space (the field inverted numerically, to ~0.01 mm)
    backward = read_ants(list(files.inverse))
    inner = x[np.all(np.abs(x - grid.world_centre) < 20.0, axis=1)]
    assert np.abs(backward.transform_points(rigid_field.transform_points(inner)) - inner).max() < 0.05
    with pytest.raises(UnsupportedFormatError, match="InverseWarp"):
        read_ants([f"[{files.forward[0]},1]"])


# ---------------------------------------------------------------- Slicer
def test_slicer_matrix_is_to_parent_in_ras(grid: cr.SpatialImage) -> None:
    """Slicer shows the moving volume's node "to parent" (moving -> world) in RAS; the file holds "from parent" in LPS."""
    rigid = _transforms(grid)["rigid"]
    to_parent = to_slicer_matrix(rigid)
    moving_point_lps = rigid.transform_points([10.0, -20.0, 30.0])
    fixed_point_ras = (to_parent @ np.r_[RAS @ moving_point_lps, 1.0])[:3]
    assert np.allclose(RAS @ fixed_point_ras, [10.0, -20.0, 30.0])
    assert np.allclose(from_slicer_matrix(to_parent).homogeneous, rigid.homogeneous)


# ---------------------------------------------------------------- errors and the command line
def test_formats_that_need_images_say_which(tmp_path: Path, grid: cr.SpatialImage) -> None:
    rigid = _transforms(grid)["rigid"]
    with pytest.raises(ConfigError, match="reference="):
        write_transform(rigid, tmp_path / "a.mat", format="fsl")
    path = write_transform(rigid, tmp_path / "a.mat", format="fsl", reference=grid, moving=grid)[0]
    with pytest.raises(ConfigError, match="moving="):
        read_transform(path, reference=grid)
    with pytest.raises(UnsupportedFormatError, match="one linear map"):
        write_transform(_transforms(grid)["bspline"], tmp_path / "b.mat", format="fsl", reference=grid, moving=grid)
    with pytest.raises(ConfigError, match="format="):
        read_transform(path, format="minc")


def test_transform_convert_chains_formats_and_keeps_the_meaning(grid: cr.SpatialImage, data: Callable[[str], Path],
                                                                 tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    anat = str(data(ANAT))
    affine_bspline = _transforms(grid)["affine_bspline"]
    start = affine_bspline.save(tmp_path / "start.h5")
    steps = [
        ["transform", "convert", str(start), str(tmp_path / "TransformParameters.txt"), "--reference", anat],
        ["transform", "convert", str(tmp_path / "TransformParameters.1.txt"), str(tmp_path / "ants" / "x_"), "--to", "ants",
         "--reference", anat],
        ["transform", "convert", str(tmp_path / "ants" / "x_1Warp.nii.gz"), str(tmp_path / "ants" / "x_0GenericAffine.mat"),
         str(tmp_path / "end.h5")],
    ]  # fmt: skip
    (tmp_path / "ants").mkdir()
    for args in steps:
        assert main(args) == 0, capsys.readouterr().err
    out = capsys.readouterr().out
    assert "transformix -tp" in out and "antsApplyTransforms -d 3" in out
    end = cr.read_transform(tmp_path / "end.h5")
    x = grid.world_grid().reshape(-1, 3)[::41]  # the warp was sampled on the reference grid: compare there
    assert np.abs(end.transform_points(x) - affine_bspline.transform_points(x)).max() < POINT_ATOL_MM
    assert field_parts(end.transforms[1]) is not None  # type: ignore[attr-defined]
    # a FLIRT matrix needs both images: refused in one line, exit 1, naming the option
    code = main(["transform", "convert", str(start), str(tmp_path / "f.mat"), "--to", "fsl"])
    err = capsys.readouterr().err
    assert code == 1 and "--reference" in err and len(err.strip().splitlines()) == 1


def test_files_ants_wrote_map_points_as_ants_apply_transforms_does() -> None:
    """antsRegistration's own output, read in -t order, maps fixed points where antsApplyTransforms samples."""
    table = np.loadtxt(DATA / "ants" / "antsApplyTransforms_points.csv", delimiter=",", skiprows=1)
    folder = DATA / "ants"
    transform = cr.read_transform([folder / "ants_1Warp.nii.gz", folder / "ants_0GenericAffine.mat"])
    assert [type(m).__name__ for m in transform.transforms] == ["Affine", "DisplacementField"]  # type: ignore[attr-defined]
    assert np.abs(transform.transform_points(table[:, :3]) - table[:, 3:]).max() < ANTS_FLOAT32_ATOL_MM
    # read in the other order, the same files map the points elsewhere (by millimetres): the order is checked
    swapped = cr.read_transform([folder / "ants_0GenericAffine.mat", folder / "ants_1Warp.nii.gz"])
    assert np.abs(swapped.transform_points(table[:, :3]) - table[:, 3:]).max() > 0.5
