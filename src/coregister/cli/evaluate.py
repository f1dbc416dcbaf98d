"""``coregister evaluate``: score a registration with labels and landmarks, as Learn2Reg does.

SOURCE is a registration's folder (``coregister register -o``: its
``transform.tfm`` or ``transform.json``, and its ``registered.*`` image for
the fixed grid) or a transform file. The transform maps fixed-space points to
moving space (ITK's convention): the moving labels are resampled onto the
fixed grid through it and compared with the fixed labels (Dice, Jaccard,
HD95 per label); the fixed landmarks are mapped forward and compared with
the moving landmarks (TRE); its Jacobian determinant on the fixed grid gives
the folding fraction and the standard deviation of the log-Jacobian.
"""

from __future__ import annotations

import csv
import io
import logging
import math
from pathlib import Path
from typing import Any

import click

from coregister._files import atomic_path, check_writable
from coregister.cli._output import echo_json, json_option, print_table, quiet
from coregister.errors import ConfigError, UnreadableInputError
from coregister.image import SpatialImage
from coregister.medical.evaluate import Evaluation

__all__ = ["evaluate"]

logger = logging.getLogger(__name__)

#: the help example's data: ITK's k-means tissue labels of a T1 head (2x2x3 mm), moved by a known 4 mm shift
_FETCH = "coregister data fetch itk_kmeans_t1_3d --dest data --file KmeansTest_T1KmeansPrelimSegmentation.nii.gz"
_LABELS = "data/itk_kmeans_t1_3d/KmeansTest_T1KmeansPrelimSegmentation.nii.gz"
_SHIFT = (r"printf '#Insight Transform File V1.0\n#Transform 0\nTransform: TranslationTransform_double_3_3\n"
          r"Parameters: 4 0 0\nFixedParameters:\n' > shift.tfm")
#: the files written into -o OUTDIR
OUTPUT_NAMES = ("evaluation.json", "evaluation.csv")
_TRANSFORM_NAMES = ("transform.tfm", "transform.h5", "transform.json")


def _source(path: Path) -> tuple[Path, SpatialImage | None]:
    """The transform file SOURCE names, and the fixed grid when SOURCE is a registration's folder."""
    if not path.is_dir():
        return path, None
    found = [path / name for name in _TRANSFORM_NAMES if (path / name).is_file()]
    if not found:
        raise UnreadableInputError(
            f"{str(path)!r} holds no {' or '.join(_TRANSFORM_NAMES)}; give a registration's folder "
            "(coregister register -o) or a transform file"
        )
    registered = sorted(p for p in path.glob("registered.*") if p.is_file()) or [p for p in [path / "registered_dicom"] if p.is_dir()]
    grid = _read(registered[0], "the registered image (fixed grid)") if registered else None
    return found[0], grid


def _read(path: Path, what: str) -> SpatialImage:
    from coregister.io import read

    image = read(path)
    logger.info("%s: %s", what, image)
    return image


def _landmarks(path: Path | None, image: SpatialImage | None) -> Any:
    if path is None:
        return None
    from coregister.medical.landmarks import read_landmarks

    return read_landmarks(path, image=image)


def _csv_text(evaluation: Evaluation) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["measure", "item", "value", "unit"])
    writer.writerows(("" if cell is None else cell for cell in row) for row in evaluation.rows())
    return out.getvalue()


def _write(outdir: Path, document: dict[str, Any], evaluation: Evaluation) -> list[Path]:
    import json

    outdir.mkdir(parents=True, exist_ok=True)
    written = []
    for name, text in (("evaluation.json", json.dumps(document, indent=2) + "\n"), ("evaluation.csv", _csv_text(evaluation))):
        with atomic_path(outdir / name) as tmp:
            tmp.write_text(text, encoding="utf-8")
        written.append(outdir / name)
    return written


def _fmt(value: float | None, digits: str = ".4f") -> str:
    return "" if value is None else format(value, digits)


def _print(evaluation: Evaluation) -> None:
    if evaluation.labels:
        print_table("labels", ["label", "dice", "jaccard", "hd95 (mm)", "fixed voxels", "warped voxels"],
                    [(s.label, _fmt(s.dice), _fmt(s.jaccard), _fmt(s.hd95_mm if math.isfinite(s.hd95_mm) else None, ".2f"),
                      s.fixed_voxels, s.warped_voxels) for s in evaluation.labels],
                    justify=["right"] * 6)
    if evaluation.points:
        print_table("landmarks", ["landmark", "error (mm)"], [(p.label, _fmt(p.error_mm, ".3f")) for p in evaluation.points],
                    justify=["left", "right"])
    rows = [(name, _fmt(value, ".6g")) for name, value in evaluation.summary().items() if value is not None]
    print_table("summary", ["measure", "value"], rows, justify=["left", "right"])


@click.command(
    "evaluate",
    epilog=(
        "\b\nExample (a known 4 mm shift of ITK's k-means tissue labels, scored with the true transform):\n"
        f"  {_FETCH}\n"
        f"  {_SHIFT}\n"
        f"  coregister apply shift.tfm {_LABELS} \\\n    --reference {_LABELS} --interpolation nearest -o shifted.nii.gz\n"
        f"  coregister evaluate shift.tfm --fixed-labels shifted.nii.gz \\\n    --moving-labels {_LABELS} -o eval-out"
    ),
)
@click.argument("source", type=click.Path(path_type=Path))
@click.option("--fixed-labels", type=click.Path(path_type=Path), help="Label map of the fixed image, on its grid.")
@click.option("--moving-labels", type=click.Path(path_type=Path), help="Label map of the moving image, on its grid.")
@click.option("--fixed-landmarks", type=click.Path(path_type=Path),
              help="Landmarks of the fixed image: .csv, .fcsv or .mrk.json (3D Slicer), .txt/.pts (elastix).")
@click.option("--moving-landmarks", type=click.Path(path_type=Path),
              help="The corresponding landmarks of the moving image (same count; paired by order, or by label).")
@click.option("--fixed", "fixed_path", type=click.Path(path_type=Path),
              help="The fixed image: the grid of the Jacobian and of elastix 'index' landmarks (default: SOURCE's "
              "registered image, else the fixed labels).")
@click.option("--moving", "moving_path", type=click.Path(path_type=Path),
              help="The moving image, for moving landmarks in an elastix 'index' file.")
@click.option("--interpolation", type=click.Choice(["nearest", "label-gaussian"], case_sensitive=False), default="nearest",
              show_default=True, help="How the moving labels are resampled onto the fixed grid.")
@click.option("-o", "--outdir", type=click.Path(path_type=Path), help="Write OUTDIR/evaluation.json and OUTDIR/evaluation.csv.")
@json_option
def evaluate(
    source: Path,
    fixed_labels: Path | None,
    moving_labels: Path | None,
    fixed_landmarks: Path | None,
    moving_landmarks: Path | None,
    fixed_path: Path | None,
    moving_path: Path | None,
    interpolation: str,
    outdir: Path | None,
    as_json: bool,
) -> None:
    """Score the registration SOURCE (a registration's folder or a transform file) with labels and/or landmarks.

    Prints Dice, Jaccard and the 95th-percentile Hausdorff distance of each
    label, the target registration error of each landmark pair (mean,
    median, max), the folding fraction and the standard deviation of the
    log-Jacobian on the fixed grid: the measures Learn2Reg reports. The
    transform maps fixed-space points to moving space, as `coregister
    register` writes it.
    """
    from coregister.medical.evaluate import evaluate as run_evaluation
    from coregister.transforms import read_transform

    if (fixed_labels is None) != (moving_labels is None):
        raise ConfigError("give both --fixed-labels and --moving-labels, or neither")
    if (fixed_landmarks is None) != (moving_landmarks is None):
        raise ConfigError("give both --fixed-landmarks and --moving-landmarks, or neither")
    if fixed_labels is None and fixed_landmarks is None:
        raise ConfigError("nothing to score: give --fixed-labels/--moving-labels and/or --fixed-landmarks/--moving-landmarks")
    if outdir is not None:
        check_writable(outdir, folder=True, parents=True, fix="choose another -o folder")
    transform_path, grid = _source(source)
    transform = read_transform(transform_path)
    if fixed_path is not None:
        grid = _read(fixed_path, "fixed image")
    fixed_label_map = _read(fixed_labels, "fixed labels") if fixed_labels else None
    moving_label_map = _read(moving_labels, "moving labels") if moving_labels else None
    moving_image = _read(moving_path, "moving image") if moving_path else None
    evaluation = run_evaluation(
        transform,
        fixed_labels=fixed_label_map,
        moving_labels=moving_label_map,
        fixed_landmarks=_landmarks(fixed_landmarks, grid if grid is not None else fixed_label_map),
        moving_landmarks=_landmarks(moving_landmarks, moving_image if moving_image is not None else moving_label_map),
        grid=grid,
        interpolation=interpolation,
    )
    inputs = {"source": source, "transform": transform_path, "fixed": fixed_path, "moving": moving_path,
              "fixed_labels": fixed_labels, "moving_labels": moving_labels,
              "fixed_landmarks": fixed_landmarks, "moving_landmarks": moving_landmarks}
    document = {"inputs": {k: None if v is None else str(v) for k, v in inputs.items()}, "interpolation": interpolation,
                **evaluation.to_dict()}
    written = _write(outdir, document, evaluation) if outdir is not None else []
    if as_json:
        echo_json({**document, "outputs": [str(p) for p in written]})
    elif not quiet():
        _print(evaluation)
        if written:
            click.echo("wrote " + ", ".join(str(p) for p in written))
