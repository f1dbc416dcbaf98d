"""BIDS cohorts: find the images with pybids, register each to a template on the batch runner, write BIDS derivatives.

``coregister batch --bids DATASET --suffix T1w --template T.nii.gz -o DERIVATIVES``
(or :func:`run_bids`) finds every ``*_T1w.nii[.gz]`` of a BIDS dataset with
pybids, registers each onto the template as one task of
:func:`coregister.batch.run_batch` (a local Dask cluster, or a scheduler),
and writes a BIDS-derivatives dataset that pybids, nilearn and
fMRIPrep-style tools index::

    DERIVATIVES/
      dataset_description.json                    DatasetType "derivative", GeneratedBy coregister
      sub-01/anat/
        sub-01_space-MNI152_T1w.nii.gz              the image on the template grid
        sub-01_space-MNI152_T1w.json                Sources, SpatialReference, the registration's verdict and metrics
        sub-01_from-T1w_to-MNI152_mode-image_xfm.h5 ITK transform (fMRIPrep's naming)
        sub-01_from-MNI152_to-T1w_mode-image_xfm.h5 its inverse (linear transforms)
      sub-01/figures/sub-01_space-MNI152_desc-coregister_T1w.html   the report (--report)
      summary.csv, summary.json                   the batch summary (listed in .bidsignore)

The transform files follow fMRIPrep and ANTs: ``from-T1w_to-MNI152``
resamples a T1w image into the template's space
(``antsApplyTransforms -i T1w -r template -t ..._xfm.h5``): as an ITK
transform it maps template points to T1w points, which is what
:func:`coregister.register` returns with the template as the fixed image.
The source's entities (``sub``, ``ses``, ``acq``, ``ce``, ``rec``, ``run``...)
are kept in every name, in BIDS order.

pybids is optional: ``pip install 'coregister[bids]'``.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from coregister._files import atomic_path
from coregister._version import __version__
from coregister.batch import BatchSummary, PairJob, run_batch
from coregister.errors import ConfigError, MissingDependencyError, UnreadableInputError

__all__ = ["BIDS_VERSION", "BidsJob", "dataset_description", "find_jobs", "run_bids", "space_label"]

logger = logging.getLogger(__name__)

#: the BIDS version the derivatives' ``dataset_description.json`` declares
BIDS_VERSION = "1.9.0"
#: entities of a source file kept in the derivatives' names, in BIDS's order (pybids name -> BIDS key)
ENTITY_ORDER = (("subject", "sub"), ("session", "ses"), ("task", "task"), ("acquisition", "acq"),
                ("ceagent", "ce"), ("tracer", "trc"), ("reconstruction", "rec"), ("direction", "dir"),
                ("run", "run"), ("echo", "echo"), ("part", "part"))
_LABEL = re.compile(r"[^A-Za-z0-9]")


def _bids() -> Any:
    try:
        import bids
    except ImportError as exc:
        raise MissingDependencyError(
            f"BIDS datasets are read with pybids, which is not installed ({exc}); install it with: "
            "pip install 'coregister[bids]'"
        ) from exc
    return bids


def space_label(template: str | os.PathLike[str]) -> str:
    """The ``space-`` label of a template file: its ``tpl-`` entity (TemplateFlow's names), else its stem's letters and digits.

    Examples
    --------
    >>> space_label("tpl-MNI152NLin2009cAsym_res-01_T1w.nii.gz"), space_label("mni_icbm152.nii.gz")
    ('MNI152NLin2009cAsym', 'mniicbm152')
    """
    name = Path(template).name
    found = re.search(r"(?:^|_)tpl-([A-Za-z0-9]+)", name)
    if found:
        return found.group(1)
    label = _LABEL.sub("", name.split(".")[0])
    if not label:
        raise ConfigError(f"no space label can be made from the template name {name!r}; give one (--space NAME)")
    return label


@dataclasses.dataclass(frozen=True)
class BidsJob(PairJob):
    """One source image of a BIDS dataset registered to a template, written under BIDS-derivatives names."""

    #: the source's entities in BIDS order, as (key, label): (("sub", "01"), ("ses", "1"), ("run", "1"))
    entities: tuple[tuple[str, str], ...] = ()
    datatype: str = "anat"
    suffix: str = "T1w"
    space: str = "template"
    #: the source file's path relative to the dataset (for ``Sources``: ``bids:raw:<path>``)
    source: str = ""

    @property
    def stem(self) -> str:
        """``sub-01_ses-1_run-1``: the source's entities."""
        return "_".join(f"{key}-{label}" for key, label in self.entities)

    def folder(self, out_dir: Path) -> Path:
        """``OUTDIR/sub-01[/ses-1]/anat``."""
        keys = dict(self.entities)
        folder = out_dir / f"sub-{keys['sub']}"
        if "ses" in keys:
            folder = folder / f"ses-{keys['ses']}"
        return folder / self.datatype

    def names(self) -> dict[str, str]:
        """The derivatives' file names (without folders)."""
        stem, suffix, space = self.stem, self.suffix, self.space
        return {
            "image": f"{stem}_space-{space}_{suffix}.nii.gz",
            "sidecar": f"{stem}_space-{space}_{suffix}.json",
            "forward": f"{stem}_from-{suffix}_to-{space}_mode-image_xfm.h5",
            "inverse": f"{stem}_from-{space}_to-{suffix}_mode-image_xfm.h5",
            "report": f"{stem}_space-{space}_desc-coregister_{suffix}.html",
        }

    def check_outputs(self, out_dir: Path) -> None:
        """Nothing to refuse: the names are new (BIDS derivatives), and :func:`run_bids` keeps them out of the dataset."""

    def write_outputs(self, out_dir: Path, result: Any, fixed: Any, moving: Any, *, report: bool,
                      threads: int | None, overwrite: bool = False, provenance: dict[str, Any] | None = None) -> list[Path]:
        """The image on the template grid, its sidecar, the transform and its inverse, and the report.

        An existing derivative is replaced only with ``overwrite``; ``provenance`` is left out (the sidecar
        says where the image came from).
        """
        from coregister.io import write
        from coregister.resample import apply
        from coregister.transforms import LinearTransform, linear_members

        folder = self.folder(out_dir)
        folder.mkdir(parents=True, exist_ok=True)
        names = self.names()
        registered = apply(result.transform, moving, reference=fixed, threads=threads)
        written = [write(registered, folder / names["image"], overwrite=overwrite),
                   result.transform.save(folder / names["forward"])]
        transform = result.transform
        if transform.is_linear:
            members = linear_members(transform)
            flat = members[0] if len(members) == 1 else None
            if isinstance(flat, LinearTransform):
                written.append(flat.inverse().save(folder / names["inverse"]))
        sidecar = {
            "Sources": [f"bids:raw:{self.source}"],
            "SpatialReference": str(self.fixed),
            "SkullStripped": False,
            "Transforms": {"from-native": names["forward"],
                           **({"to-native": names["inverse"]} if len(written) == 3 else {})},
            "Registration": {
                "Software": f"coregister {__version__}",
                "Preset": self.preset,
                "Engine": result.engine,
                "Verdict": result.verdict.value,
                "Metrics": {k: dict(v) for k, v in result.metrics.items()},
                "Warnings": list(result.warnings),
                "Seed": result.seed,
            },
        }
        path = folder / names["sidecar"]
        with atomic_path(path, overwrite=overwrite) as tmp:
            tmp.write_text(json.dumps(_finite(sidecar), indent=2) + "\n", encoding="utf-8")
        written.append(path)
        if report:
            from coregister.qc.report import write_report

            figures = out_dir / f"sub-{dict(self.entities)['sub']}" / "figures"
            figures.mkdir(parents=True, exist_ok=True)
            written.append(write_report(result, fixed, moving, registered, figures / names["report"],
                                        title=f"coregister: {self.stem} {self.suffix} → {self.space}"))
        return written


def _finite(value: Any) -> Any:
    """NaN and infinities as None (JSON has no NaN)."""
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def find_jobs(
    dataset: str | os.PathLike[str],
    template: str | os.PathLike[str],
    *,
    suffix: str = "T1w",
    space: str | None = None,
    participant_label: Sequence[str] = (),
    preset: str = "affine",
    metric: str | None = None,
) -> list[BidsJob]:
    """One :class:`BidsJob` per ``*_<suffix>.nii[.gz]`` that pybids finds in ``dataset`` (in name order).

    Raises
    ------
    ConfigError
        Not a BIDS dataset (no ``dataset_description.json``), or no image of that suffix (for those participants).
    """
    bids = _bids()
    root = Path(dataset)
    if not (root / "dataset_description.json").is_file():
        raise ConfigError(f"{str(root)!r} is not a BIDS dataset: it has no dataset_description.json; give the dataset's root")
    template = Path(template)
    if not template.is_file():
        raise UnreadableInputError(f"template {str(template)!r} does not exist; check the path")
    layout = bids.BIDSLayout(str(root), validate=False)
    query: dict[str, Any] = {"suffix": suffix, "extension": [".nii", ".nii.gz"], "return_type": "object"}
    labels = [label.removeprefix("sub-") for label in participant_label]
    if labels:
        query["subject"] = labels
    files = sorted(layout.get(**query), key=lambda f: f.path)
    if not files:
        who = f" for participant(s) {', '.join(labels)}" if labels else ""
        raise ConfigError(f"pybids found no *_{suffix}.nii[.gz] in {str(root)!r}{who}; check --suffix and the dataset")
    space = space or space_label(template)
    if _LABEL.search(space):
        raise ConfigError(f"space label {space!r}: a BIDS label has letters and digits only")
    jobs = []
    for file in files:
        found = file.get_entities()
        entities = tuple((key, str(found[name])) for name, key in ENTITY_ORDER if name in found)
        stem = "_".join(f"{k}-{v}" for k, v in entities)
        jobs.append(BidsJob(
            name=stem, fixed=template, moving=Path(file.path), preset=preset, metric=metric, entities=entities,
            datatype=str(found.get("datatype", "anat")), suffix=suffix, space=space,
            source=Path(file.path).resolve().relative_to(root.resolve()).as_posix(),
        ))
    return jobs


def dataset_description(dataset: str | os.PathLike[str], *, suffix: str, space: str, preset: str) -> dict[str, Any]:
    """The derivatives' ``dataset_description.json``: ``DatasetType`` derivative, ``GeneratedBy`` coregister."""
    source = Path(dataset).resolve()
    return {
        "Name": f"coregister: {suffix} images registered to {space}",
        "BIDSVersion": BIDS_VERSION,
        "DatasetType": "derivative",
        "GeneratedBy": [{
            "Name": "coregister",
            "Version": __version__,
            "Description": f"{suffix} images registered to the {space} template ({preset}) and resampled onto its grid",
        }],
        "SourceDatasets": [{"URL": source.as_uri()}],
        "DatasetLinks": {"raw": source.as_uri()},
    }


def run_bids(
    dataset: str | os.PathLike[str],
    template: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    *,
    suffix: str = "T1w",
    space: str | None = None,
    participant_label: Sequence[str] = (),
    preset: str = "affine",
    metric: str | None = None,
    **batch: Any,
) -> BatchSummary:
    """Register every ``*_<suffix>`` image of a BIDS dataset to ``template`` and write BIDS derivatives into ``out_dir``.

    Parameters
    ----------
    dataset : path
        The BIDS dataset's root (holds ``dataset_description.json``).
    template : path
        The template image (the fixed image of every registration).
    out_dir : path
        The derivatives dataset (created; must not be the dataset itself).
    suffix : str
        Which images (``T1w``, ``T2w``, ``FLAIR``...).
    space : str, optional
        The ``space-``/``to-`` label (default: :func:`space_label` of the template).
    participant_label : sequence of str
        Only these participants (``01`` or ``sub-01``).
    preset, metric : str
        As for :func:`coregister.register` (default ``affine``, the preset's metric).
    **batch
        Passed to :func:`coregister.batch.run_batch` (``scheduler``, ``workers``,
        ``threads_per_registration``, ``processes``, ``report``, ``seed``, ``progress``).

    Returns
    -------
    BatchSummary
        One outcome per image; ``summary.csv`` and ``summary.json`` are written into ``out_dir`` too.
    """
    out = Path(out_dir)
    root = Path(dataset)
    inside = out.resolve() == root.resolve() or root.resolve() in out.resolve().parents
    if inside and out.resolve().relative_to(root.resolve()).parts[:1] != ("derivatives",):
        raise ConfigError(f"the derivatives folder {str(out)!r} lies in the dataset {str(root)!r}; write them to "
                          f"{str(root / 'derivatives' / 'coregister')!r} or outside the dataset")
    jobs = find_jobs(root, template, suffix=suffix, space=space, participant_label=participant_label, preset=preset,
                     metric=metric)
    out.mkdir(parents=True, exist_ok=True)
    description = dataset_description(root, suffix=suffix, space=jobs[0].space, preset=preset)
    with atomic_path(out / "dataset_description.json") as tmp:
        tmp.write_text(json.dumps(description, indent=2) + "\n", encoding="utf-8")
    with atomic_path(out / ".bidsignore") as tmp:
        tmp.write_text("summary.csv\nsummary.json\n", encoding="utf-8")
    logger.info("%d %s image(s) of %s to register to %s", len(jobs), suffix, root, jobs[0].space)
    return run_batch(jobs, out, **batch)
