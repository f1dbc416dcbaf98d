"""Data manifests and the checksum-verified fetcher, tested without the network.

A local HTTP server on loopback (``http.server`` in a thread) stands in for
the data hosts: a file with the right sha256 is fetched, a wrong sha256 is
refused and leaves nothing behind. The manifests themselves are checked
against the real files in ``../shared/data`` (sha256 and size of every file
whose data set has a copy there).
"""

from __future__ import annotations

import functools
import hashlib
import http.server
import json
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from coregister import data as datasets
from coregister.cli import main
from coregister.errors import ChecksumMismatchError, ConfigError, DataNotFoundError

REPO = Path(__file__).resolve().parents[1]
REPO_MANIFESTS = REPO / "data_manifests"
ALL_NAMES = sorted(p.stem for p in REPO_MANIFESTS.glob("*.toml"))


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - http.server's signature
        pass


@pytest.fixture
def http_server(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """(base URL, served folder): a loopback HTTP server in a thread."""
    root = tmp_path / "served"
    root.mkdir()
    handler = functools.partial(_QuietHandler, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", root
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def _manifest(folder: Path, name: str, files: list[dict[str, object]]) -> Path:
    lines = ["schema = 1", f'name = "{name}"', 'title = "test set"', 'licence = "CC0-1.0"']
    for entry in files:
        lines.append("[[files]]")
        lines += [f"{k} = {json.dumps(v)}" for k, v in entry.items()]
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


# ------------------------------------------------------------------ manifests
def test_package_ships_the_same_manifests_as_the_repository() -> None:
    assert REPO_MANIFESTS.is_symlink(), "data_manifests/ is a link to the package's manifests, not a second copy"
    assert REPO_MANIFESTS.resolve() == (REPO / "src" / "coregister" / "data" / "manifests").resolve()
    shipped = {p.name: p.read_bytes() for p in datasets.manifest_dir().glob("*.toml")}
    repo = {p.name: p.read_bytes() for p in REPO_MANIFESTS.glob("*.toml")}
    assert shipped == repo, "edit the manifests in src/coregister/data/manifests/ (data_manifests/ links there)"


@pytest.mark.parametrize("name", ALL_NAMES)
def test_manifest_is_complete(name: str) -> None:
    ds = datasets.load_manifest(REPO_MANIFESTS / f"{name}.toml")
    assert ds.name == name
    assert ds.title and ds.licence and ds.citation and ds.source, "title, licence, citation and source are required"
    if ds.files:
        assert all(f.fetchable or f.note for f in ds.files), "a file without a URL or package copy says why"
    else:
        assert ds.access and ds.doi, "a set without files says how to obtain it"
    for entry in ds.files:
        if entry.url is not None:
            assert entry.url.startswith(("https://", "http://"))
        if entry.sha256 is None:
            assert "sha256" in ds.note and "unknown" in ds.note, "an unknown checksum is said so in the note"


@pytest.mark.parametrize("name", [n for n in ALL_NAMES if datasets.get_dataset(n).shared_path])
def test_manifest_matches_the_real_files(name: str, data) -> None:
    ds = datasets.get_dataset(name)
    folder = data(ds.shared_path)
    for entry in ds.files:
        path = folder / entry.path
        assert path.stat().st_size == entry.size, entry.path
        assert datasets.sha256_of(path) == entry.sha256, entry.path
    listed = {f.path for f in ds.files}
    on_disk = {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file() and p.name != "SHA256SUMS"}
    assert on_disk == listed


@pytest.mark.parametrize(
    "text, message",
    [
        ('schema = 1\nname = "bad"\ntitle = "t"\ncolour = "red"\n', "unknown keys"),
        ('schema = 2\nname = "bad"\ntitle = "t"\n', "schema"),
        ('schema = 1\nname = "bad"\ntitle = "t"\n[[files]]\npath = "a"\nsha256 = "abc"\n', "64 lowercase hex"),
        ('schema = 1\nname = "bad"\ntitle = "t"\n[[files]]\npath = "../escape"\n', "stay inside"),
        ('schema = 1\nname = "other"\ntitle = "t"\n', "NAME.toml"),
        ("name = [", "not valid TOML"),
    ],
)
def test_malformed_manifest_is_refused(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message):
        datasets.load_manifest(path)


# ------------------------------------------------------------------- fetching
def test_fetch_over_http_verifies_the_checksum(http_server: tuple[str, Path], tmp_path: Path) -> None:
    base, served = http_server
    payload = bytes(range(256)) * 40
    (served / "scan.nii").write_bytes(payload)
    manifests = tmp_path / "manifests"
    _manifest(
        manifests,
        "loopback",
        [{"path": "sub/scan.nii", "url": f"{base}/scan.nii", "sha256": hashlib.sha256(payload).hexdigest(), "size": len(payload)}],
    )
    seen: list[tuple[str, int, int]] = []
    folder = datasets.fetch("loopback", dest=tmp_path / "cache", directory=manifests, progress=lambda *a: seen.append(a))
    assert folder == tmp_path / "cache" / "loopback"
    assert (folder / "sub" / "scan.nii").read_bytes() == payload
    assert seen == [("sub/scan.nii", 0, 1)]
    # a second fetch finds the verified file and does not download again
    (served / "scan.nii").unlink()
    assert datasets.fetch("loopback", dest=tmp_path / "cache", directory=manifests) == folder


def test_fetch_with_a_wrong_checksum_leaves_nothing_behind(http_server: tuple[str, Path], tmp_path: Path) -> None:
    base, served = http_server
    (served / "scan.nii").write_bytes(b"tampered content")
    manifests = tmp_path / "manifests"
    _manifest(manifests, "loopback", [{"path": "deep/er/scan.nii", "url": f"{base}/scan.nii", "sha256": "0" * 64}])
    cache = tmp_path / "cache"
    cache.mkdir()
    with pytest.raises(ChecksumMismatchError, match="sha256"):
        datasets.fetch("loopback", dest=cache, directory=manifests)
    assert list(cache.rglob("*")) == [], "the refused download and the folders made for it are gone"


def test_fetch_reports_an_unreachable_url(http_server: tuple[str, Path], tmp_path: Path) -> None:
    base, _ = http_server
    manifests = tmp_path / "manifests"
    _manifest(manifests, "loopback", [{"path": "missing.nii", "url": f"{base}/missing.nii", "sha256": "0" * 64}])
    with pytest.raises(DataNotFoundError, match="could not download"):
        datasets.fetch("loopback", dest=tmp_path / "cache", directory=manifests)
    assert not (tmp_path / "cache").exists()


def test_fetch_copies_package_data_offline(tmp_path: Path) -> None:
    folder = datasets.fetch("nibabel_anat_func", dest=tmp_path, files=["anatomical.nii"])
    copied = folder / "anatomical.nii"
    assert datasets.sha256_of(copied) == datasets.get_dataset("nibabel_anat_func").files[0].sha256
    assert [p.name for p in folder.iterdir()] == ["anatomical.nii"]


def test_fetch_refuses_a_set_without_download(tmp_path: Path) -> None:
    with pytest.raises(DataNotFoundError, match="NBIA Data Retriever"):
        datasets.fetch("mri_dir_full", dest=tmp_path)


def test_unknown_names_are_refused_with_the_choices(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="nibabel_anat_func"):
        datasets.get_dataset("mni152")
    with pytest.raises(ConfigError, match="has no file"):
        datasets.fetch("nibabel_anat_func", dest=tmp_path, files=["nope.nii"])


def test_locate_finds_the_shared_layout_and_refuses_without_download(data, tmp_path: Path) -> None:
    folder = datasets.locate("itk_brainweb_2d", roots=[tmp_path, data(".")], download=False)
    assert folder == data("medical/itk_brainweb_2d")
    with pytest.raises(DataNotFoundError, match="run `coregister data fetch mni_icbm152_2009`"):
        datasets.locate("mni_icbm152_2009", roots=[tmp_path], download=False)


# ---------------------------------------------------------------- command line
def test_cli_data_ls_json(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["data", "ls", "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert [d["name"] for d in listed] == ALL_NAMES
    brainweb = next(d for d in listed if d["name"] == "itk_brainweb_2d")
    assert brainweb["size"] == sum(f["size"] for f in brainweb["files"])


def test_cli_data_fetch(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["data", "fetch", "skimage_motorcycle_stereo", "--dest", str(tmp_path), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["files"] == ["motorcycle_disp.npz", "motorcycle_left.png", "motorcycle_right.png"]
    assert main(["data", "fetch", "no_such_set", "--dest", str(tmp_path)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no_such_set" in err[0]


def test_cli_fetch_failure_is_one_line_and_leaves_nothing(http_server: tuple[str, Path], tmp_path: Path,
                                                          capsys: pytest.CaptureFixture[str],
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """A download that fails (here: the server has no such file) -> exit 1, one stderr line, no folder."""
    base, _ = http_server
    manifests = tmp_path / "manifests"
    _manifest(manifests, "loopback", [{"path": "gone.nii", "url": f"{base}/gone.nii", "sha256": "0" * 64}])
    monkeypatch.setattr(datasets, "manifest_dir", lambda: manifests)
    assert main(["data", "fetch", "loopback", "--dest", str(tmp_path / "cache")]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "could not download" in err[0] and "gone.nii" in err[0]
    assert not (tmp_path / "cache").exists()
