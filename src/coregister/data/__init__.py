"""Public data sets used by the examples, tests and benchmarks: manifests and a checksum-verified fetcher.

Each data set is described by one TOML manifest, shipped inside the package
as ``coregister/data/manifests/NAME.toml`` (``data_manifests/`` at the top of
the source tree links to that folder): where it comes from (a URL at a
fixed commit, a DOI), its licence and citation, and for every file its URL,
sha256 and size. :func:`fetch` downloads the files with :mod:`pooch`,
verifies each checksum and refuses (leaving nothing behind) a file whose
checksum differs. Files that ship inside an installed dependency (nibabel's,
pydicom's and scikit-image's test data) are copied from it, still checksum
verified, so no network is needed for them.

Examples
--------
>>> from coregister import data
>>> ds = data.get_dataset("nibabel_anat_func")
>>> ds.licence
'MIT (nibabel)'
>>> [f.path for f in ds.files][:2]
['anatomical.nii', 'example4d.nii.gz']
>>> "itk_brainweb_2d" in data.names()
True
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import importlib.resources
import importlib.util
import logging
import os
import shutil
import sys
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from coregister.errors import ChecksumMismatchError, ConfigError, DataNotFoundError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

__all__ = [
    "ChecksumMismatchError",
    "DataFile",
    "Dataset",
    "default_cache",
    "fetch",
    "get_dataset",
    "list_datasets",
    "load_manifest",
    "locate",
    "manifest_dir",
    "names",
    "sha256_of",
]

logger = logging.getLogger(__name__)

SCHEMA_VERSION = 1


@dataclasses.dataclass(frozen=True)
class DataFile:
    """One file of a data set.

    Attributes
    ----------
    path : str
        Where the file goes, relative to the data set's folder (``/`` separated).
    url : str or None
        Download URL at a fixed commit or release; ``None`` when the file has none
        (derived files, or files only shipped inside a package).
    sha256 : str or None
        Expected checksum; ``None`` when unknown (the fetcher then logs the hash it computed).
    size : int or None
        Size in bytes, when known.
    package, package_path : str or None
        An installed distribution that ships the same file (``"nibabel"``,
        ``"tests/data/anatomical.nii"``): copied from there when present.
    unpack : str or None
        ``"zip"`` for an archive to extract after download.
    note : str
        Anything a user should know about this file.
    """

    path: str
    url: str | None = None
    sha256: str | None = None
    size: int | None = None
    package: str | None = None
    package_path: str | None = None
    unpack: str | None = None
    note: str = ""

    @property
    def fetchable(self) -> bool:
        """Whether :func:`fetch` can obtain this file (a URL or an installed package copy)."""
        return self.url is not None or self.package is not None


@dataclasses.dataclass(frozen=True)
class Dataset:
    """A public data set: provenance, licence, citation and its files (see the module docstring)."""

    name: str
    title: str
    files: tuple[DataFile, ...]
    description: str = ""
    source: str = ""
    licence: str = ""
    citation: str = ""
    ground_truth: str = ""
    shared_path: str | None = None
    homepage: str | None = None
    doi: str | None = None
    access: str | None = None
    note: str = ""

    @property
    def size(self) -> int | None:
        """Total size in bytes, or ``None`` when some file's size is unknown."""
        sizes = [f.size for f in self.files]
        return None if (not sizes or None in sizes) else sum(s for s in sizes if s is not None)

    @property
    def fetchable(self) -> bool:
        """Whether :func:`fetch` can obtain at least one file."""
        return any(f.fetchable for f in self.files)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        out = dataclasses.asdict(self)
        out["files"] = [dataclasses.asdict(f) for f in self.files]
        out["size"] = self.size
        return out


# ------------------------------------------------------------------ manifests
def manifest_dir() -> Path:
    """Folder of the manifests shipped inside the package."""
    return Path(str(importlib.resources.files("coregister.data").joinpath("manifests")))


_DATASET_KEYS = {f.name for f in dataclasses.fields(Dataset)} | {"schema"}
_FILE_KEYS = {f.name for f in dataclasses.fields(DataFile)}


def load_manifest(path: str | os.PathLike[str]) -> Dataset:
    """Read one TOML manifest into a :class:`Dataset`, refusing unknown keys and malformed checksums.

    Parameters
    ----------
    path : path
        A ``NAME.toml`` manifest.

    Returns
    -------
    Dataset
    """
    path = Path(path)
    try:
        with path.open("rb") as handle:
            raw = tomllib.load(handle)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"data manifest {str(path)!r} is not valid TOML: {exc}") from exc
    unknown = set(raw) - _DATASET_KEYS
    if unknown:
        raise ConfigError(f"data manifest {str(path)!r} has unknown keys {sorted(unknown)}; allowed: {sorted(_DATASET_KEYS)}")
    if raw.get("schema", SCHEMA_VERSION) != SCHEMA_VERSION:
        raise ConfigError(f"data manifest {str(path)!r} has schema {raw.get('schema')!r}; this coregister reads schema {SCHEMA_VERSION}")
    files = []
    for entry in raw.get("files", []):
        bad = set(entry) - _FILE_KEYS
        if bad:
            raise ConfigError(f"data manifest {str(path)!r}: file entry {entry.get('path')!r} has unknown keys {sorted(bad)}")
        sha = entry.get("sha256")
        if sha is not None and (len(sha) != 64 or any(c not in "0123456789abcdef" for c in sha)):
            raise ConfigError(f"data manifest {str(path)!r}: sha256 {sha!r} of {entry.get('path')!r} is not 64 lowercase hex digits")
        rel = entry["path"]
        if rel.startswith("/") or ".." in Path(rel).parts:
            raise ConfigError(f"data manifest {str(path)!r}: file path {rel!r} must be relative and stay inside the data set")
        files.append(DataFile(**entry))
    fields = {k: v for k, v in raw.items() if k not in ("schema", "files")}
    if fields.get("name") != path.stem:
        raise ConfigError(f"data manifest {str(path)!r} names itself {fields.get('name')!r}; the file must be called NAME.toml")
    return Dataset(files=tuple(files), **fields)


def list_datasets(directory: str | os.PathLike[str] | None = None) -> list[Dataset]:
    """Every data set whose manifest is in ``directory`` (default: the package's manifests), sorted by name."""
    folder = manifest_dir() if directory is None else Path(directory)
    return [load_manifest(p) for p in sorted(folder.glob("*.toml"))]


def names(directory: str | os.PathLike[str] | None = None) -> list[str]:
    """Names of the data sets :func:`list_datasets` finds."""
    folder = manifest_dir() if directory is None else Path(directory)
    return sorted(p.stem for p in folder.glob("*.toml"))


def get_dataset(name: str, *, directory: str | os.PathLike[str] | None = None) -> Dataset:
    """The data set called ``name``; :class:`~coregister.errors.ConfigError` listing the choices otherwise."""
    folder = manifest_dir() if directory is None else Path(directory)
    path = folder / f"{name}.toml"
    if not path.is_file():
        raise ConfigError(f"no data set called {name!r}; choose one of: {', '.join(names(folder))} (see `coregister data ls`)")
    return load_manifest(path)


# ------------------------------------------------------------------- fetching
def default_cache() -> Path:
    """Where :func:`fetch` puts data sets by default: ``$COREGISTER_DATA`` or pooch's per-user cache."""
    env = os.environ.get("COREGISTER_DATA")
    if env:
        return Path(env)
    import pooch

    return Path(pooch.os_cache("coregister"))


def sha256_of(path: str | os.PathLike[str]) -> str:
    """Hex sha256 of a file, read in 1 MiB blocks.

    >>> import tempfile, pathlib
    >>> p = pathlib.Path(tempfile.mkdtemp()) / "x.txt"
    >>> _ = p.write_bytes(b"hello\\n")
    >>> sha256_of(p)
    '5891b5b522d5df086d0ff0b110fbd9d21bb4fc7163af34d08286a2e846f6be03'
    """
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _package_copy(entry: DataFile) -> Path | None:
    if entry.package is None or entry.package_path is None or importlib.util.find_spec(entry.package) is None:
        return None
    candidate = importlib.resources.files(entry.package).joinpath(entry.package_path)
    return Path(str(candidate)) if candidate.is_file() else None


def _copy_verified(source: Path, target: Path, expected: str | None) -> None:
    from coregister._files import atomic_path

    with atomic_path(target) as tmp:
        shutil.copyfile(source, tmp)
        actual = sha256_of(tmp)
        if expected is not None and actual != expected:
            raise ChecksumMismatchError(
                f"{str(source)!r} has sha256 {actual}, but the manifest records {expected}; "
                "the installed package's copy differs from the manifest's release: fetch from the URL instead"
            )


def _download(entry: DataFile, target: Path) -> None:
    import pooch

    assert entry.url is not None
    known = None if entry.sha256 is None else f"sha256:{entry.sha256}"
    processor = pooch.Unzip(extract_dir=target.with_suffix("").name) if entry.unpack == "zip" else None
    try:
        pooch.retrieve(
            entry.url, known_hash=known, fname=target.name, path=target.parent, processor=processor, progressbar=False
        )
    except ValueError as exc:
        if "hash" not in str(exc).lower():
            raise
        raise ChecksumMismatchError(
            f"{entry.url} does not have its manifest's sha256 {entry.sha256}: the download was deleted. "
            "The server may have changed the file; check the source and update the manifest."
        ) from exc
    except OSError as exc:  # requests' errors are OSErrors: no network, 404, refused connection
        raise DataNotFoundError(f"could not download {entry.url}: {exc}; check the network or the URL") from exc
    if entry.sha256 is None:
        logger.warning("sha256 of %s is not in the manifest; computed %s (add it)", entry.path, sha256_of(target))


def fetch(
    name: str,
    *,
    dest: str | os.PathLike[str] | None = None,
    files: Sequence[str] | None = None,
    directory: str | os.PathLike[str] | None = None,
    progress: Callable[[str, int, int], None] | None = None,
) -> Path:
    """Download (or copy from an installed package) the files of data set ``name``, checksums verified.

    Files already present with the right checksum are kept. A file whose
    checksum differs from the manifest's is deleted and
    :class:`ChecksumMismatchError` raised; folders this call created are
    removed again, so a refused fetch leaves nothing behind.

    Parameters
    ----------
    name : str
        A data set name (``coregister data ls`` lists them).
    dest : path, optional
        Parent folder; the files go into ``dest / name``. Default :func:`default_cache`.
    files : sequence of str, optional
        Only these relative paths (default: every file).
    directory : path, optional
        Where to read manifests (default: the package's).
    progress : callable, optional
        ``progress(path, index, total)`` called before each file.

    Returns
    -------
    Path
        The data set's folder.
    """
    dataset = get_dataset(name, directory=directory)
    if not dataset.fetchable:
        how = dataset.access or "no file of it has a download URL"
        raise DataNotFoundError(f"data set {name!r} cannot be fetched automatically: {how}")
    wanted = list(dataset.files)
    if files is not None:
        known = {f.path for f in dataset.files}
        missing = [f for f in files if f not in known]
        if missing:
            raise ConfigError(f"data set {name!r} has no file(s) {missing}; it has: {', '.join(sorted(known))}")
        wanted = [f for f in dataset.files if f.path in set(files)]
    root = (default_cache() if dest is None else Path(dest)) / name
    created: list[Path] = []
    try:
        _fetch_into(root, wanted, created, progress)
    except BaseException:
        for folder in reversed(created):
            with contextlib.suppress(OSError):
                folder.rmdir()  # only empty folders: files fetched before the failure stay valid
        raise
    return root


def _makedirs(folder: Path, created: list[Path]) -> None:
    missing = []
    probe = folder
    while not probe.exists():
        missing.append(probe)
        probe = probe.parent
    for item in reversed(missing):
        item.mkdir()
        created.append(item)


def _fetch_into(root: Path, wanted: Iterable[DataFile], created: list[Path], progress: Callable[[str, int, int], None] | None) -> None:
    entries = list(wanted)
    for index, entry in enumerate(entries):
        if progress is not None:
            progress(entry.path, index, len(entries))
        target = root / entry.path
        if target.is_file() and entry.sha256 is not None and sha256_of(target) == entry.sha256:
            logger.info("%s: already present, checksum verified", target)
            continue
        local = _package_copy(entry)
        if local is None and entry.url is None:
            logger.info("%s: no URL and no installed package ships it; skipped (%s)", entry.path, entry.note or "derived file")
            continue
        _makedirs(target.parent, created)
        if local is not None:
            logger.info("%s: copying from the installed %s package", entry.path, entry.package)
            _copy_verified(local, target, entry.sha256)
        else:
            logger.info("%s: downloading %s", entry.path, entry.url)
            _download(entry, target)


def locate(
    name: str,
    *,
    roots: Sequence[str | os.PathLike[str]] = (),
    download: bool = True,
    directory: str | os.PathLike[str] | None = None,
) -> Path:
    """The folder of data set ``name``: a local copy if one exists, else a checksum-verified :func:`fetch`.

    Each root is searched for the set's ``shared_path`` (the layout of the
    project's ``shared/data`` folder, e.g. ``medical/antspy``) and for its
    name (the layout :func:`fetch` creates); then the default cache. Only
    when none holds it, and ``download`` is true, is it fetched.

    Parameters
    ----------
    name : str
        A data set name (``coregister data ls``).
    roots : sequence of paths
        Folders to search first, in order.
    download : bool
        Fetch the set when no local copy exists (default); otherwise raise
        :class:`~coregister.errors.DataNotFoundError`.
    directory : path, optional
        Where to read manifests (default: the package's).

    Examples
    --------
    >>> import tempfile
    >>> root = tempfile.mkdtemp()
    >>> fetched = fetch("nibabel_anat_func", dest=root)  # copied from the installed nibabel: no network
    >>> locate("nibabel_anat_func", roots=[root], download=False) == fetched
    True
    """
    dataset = get_dataset(name, directory=directory)
    candidates: list[Path] = []
    for root in roots:
        root = Path(root)
        if dataset.shared_path:
            candidates.append(root / dataset.shared_path)
        candidates.append(root / name)
    candidates.append(default_cache() / name)
    wanted = [f.path for f in dataset.files if f.fetchable]
    for folder in candidates:
        if folder.is_dir() and all((folder / rel).exists() for rel in wanted):
            return folder
    if not download:
        searched = ", ".join(str(c) for c in candidates)
        raise DataNotFoundError(f"data set {name!r} is not in {searched}; run `coregister data fetch {name}`")
    return fetch(name, directory=directory)
