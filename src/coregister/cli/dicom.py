"""``coregister dicom ...``: DICOM helpers (``ls``: list the series in a folder)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import click

from coregister.cli._output import echo_json, json_option

__all__ = ["dicom", "ls"]


_EXAMPLE = (
    "\b\nExample (no network needed: a 4-slice CT series copied from the installed pydicom):\n"
    "  coregister data fetch dicom_small --dest data --file CT2_series/17106 \\\n"
    "    --file CT2_series/17136 --file CT2_series/17166 --file CT2_series/17196\n"
    "  coregister dicom ls data/dicom_small/CT2_series"
)


@click.group("dicom", epilog=_EXAMPLE)
def dicom() -> None:
    """DICOM folders: list their series (then read one with ``--series`` or ``series=``)."""


@dicom.command("ls", epilog=_EXAMPLE)
@click.argument("folder", type=click.Path(path_type=Path))
@click.option("-r", "--recursive", is_flag=True, help="Also list the series in every subfolder.")
@json_option
def ls(folder: Path, recursive: bool, as_json: bool) -> None:
    """List the DICOM series in FOLDER: index, number, modality, description, files, size, patient position, UID.

    The index is what ``coregister info FOLDER --series INDEX`` and
    ``coregister.read(FOLDER, series=INDEX)`` take (a SeriesInstanceUID
    works too).
    """
    from coregister.errors import UnreadableInputError
    from coregister.io.dicom import list_series

    if not folder.exists():
        raise UnreadableInputError(f"{str(folder)!r} does not exist; check the path")
    series = list_series(folder, recursive=recursive)
    if as_json:
        echo_json([{"index": i, **dataclasses.asdict(s)} for i, s in enumerate(series)])
        return
    if not series:
        click.echo(f"no DICOM series in {folder}" + ("" if recursive else " (try --recursive)"))
        return
    columns = ["#", "number", "modality", "files", "size", "position", "orientation", "description", "uid"]
    if recursive:
        columns.insert(1, "folder")
    rows = []
    for index, s in enumerate(series):
        row = [
            str(index),
            str(s.number) if s.number is not None else "",
            s.modality,
            str(s.n_files),
            "x".join(str(n) for n in s.size),
            s.patient_position,
            s.orientation,
            s.description,
            s.uid,
        ]
        if recursive:
            row.insert(1, str(Path(s.folder).relative_to(folder)) if Path(s.folder) != folder else ".")
        rows.append(row)
    _echo_columns(columns, rows)


def _echo_columns(columns: list[str], rows: list[list[str]]) -> None:
    """Aligned plain-text columns, never wrapped or truncated (UIDs must stay copyable)."""
    widths = [max(len(r[i]) for r in [columns, *rows]) for i in range(len(columns))]
    for row in [columns, *rows]:
        click.echo("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())
