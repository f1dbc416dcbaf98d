"""``coregister data``: list and fetch the public data sets the examples and benchmarks use."""

from __future__ import annotations

from pathlib import Path

import click

from coregister.cli._options import root_setting
from coregister.cli._output import echo_json, json_option, print_table

__all__ = ["data"]


def _size(nbytes: int | None) -> str:
    if nbytes is None:
        return "unknown"
    for unit in ("B", "KB", "MB", "GB"):
        if nbytes < 1000 or unit == "GB":
            return f"{nbytes:.0f} {unit}" if unit == "B" else f"{nbytes:.1f} {unit}"
        nbytes /= 1000  # type: ignore[assignment]
    return str(nbytes)  # pragma: no cover


@click.group(context_settings={"help_option_names": ["-h", "--help"]}, epilog="\b\nExample:\n  coregister data ls")
def data() -> None:
    """Public data sets (medical volumes, satellite scenes, photos): provenance, licence, checksum-verified download."""


@data.command("ls", epilog="\b\nExample:\n  coregister data ls --json")
@json_option
def data_ls(as_json: bool) -> None:
    """List the data sets: name, files, size, licence, and whether they can be fetched."""
    from coregister import data as datasets

    sets = datasets.list_datasets()
    if as_json:
        echo_json([ds.to_dict() for ds in sets])
        return
    rows = [(ds.name, len(ds.files), _size(ds.size), "yes" if ds.fetchable else "manual", _short(ds.licence)) for ds in sets]
    print_table(
        "coregister data sets (`coregister data info NAME`: source, citation, files)",
        ("name", "files", "size", "fetch", "licence"),
        rows,
        justify=("left", "right", "right", "left", "left"),
    )


def _short(text: str, width: int = 30) -> str:
    text = text.split(" (")[0].split(";")[0]
    return text if len(text) <= width else text[: width - 1] + "…"


@data.command("info", epilog="\b\nExample:\n  coregister data info nibabel_anat_func")
@click.argument("name")
@json_option
def data_info(name: str, as_json: bool) -> None:
    """Show one data set's source, licence, citation, ground truth and files."""
    from coregister import data as datasets

    ds = datasets.get_dataset(name)
    if as_json:
        echo_json(ds.to_dict())
        return
    fields = [
        ("title", ds.title),
        ("description", ds.description),
        ("source", ds.source),
        ("doi", ds.doi),
        ("homepage", ds.homepage),
        ("licence", ds.licence),
        ("citation", ds.citation),
        ("ground truth", ds.ground_truth),
        ("access", ds.access),
        ("note", ds.note),
        ("size", _size(ds.size)),
    ]
    print_table(ds.name, ("field", "value"), [(k, v) for k, v in fields if v])
    print_table(
        None,
        ("file", "size", "sha256", "from"),
        [
            (f.path, _size(f.size), (f.sha256 or "unknown")[:16], f.package or (f.url or f.note or "-"))
            for f in ds.files
        ],
    )


@data.command(
    "fetch", epilog="\b\nExample (no network needed: nibabel ships these files):\n  coregister data fetch nibabel_anat_func --dest data"
)
@click.argument("name")
@click.option(
    "--dest",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Parent folder (the files go into DEST/NAME); default $COREGISTER_DATA or the user cache.",
)
@click.option("--file", "files", multiple=True, help="Only this file of the set (repeatable).")
@json_option
@click.pass_context
def data_fetch(ctx: click.Context, name: str, dest: Path | None, files: tuple[str, ...], as_json: bool) -> None:
    """Download a data set (or copy it from an installed package), verifying every sha256.

    A file whose checksum differs from the manifest is deleted and the
    command fails (exit 1): nothing unverified is left behind. Files already
    present with the right checksum are not downloaded again.
    """
    import logging

    import pooch

    from coregister import data as datasets
    from coregister._files import check_writable
    from coregister.cli._progress import file_progress

    check_writable(datasets.default_cache() if dest is None else dest, folder=True, parents=True,
                   fix="choose another --dest (or set COREGISTER_DATA)")

    if not root_setting("verbose", ctx):  # pooch logs every download at INFO through its own handler; ours does with -v
        pooch.get_logger().setLevel(logging.WARNING)
    with file_progress(ctx, f"fetching {name}") as progress:
        folder = datasets.fetch(name, dest=dest, files=files or None, progress=progress)
    present = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())
    if as_json:
        echo_json({"name": name, "path": str(folder), "files": present})
    else:
        click.echo(str(folder))
