"""Downloading data sets: a local HTTP server on 127.0.0.1 stands in for GroupLens."""

from __future__ import annotations

import dataclasses
import hashlib
import http.server
import os
import socket
import threading
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from ncf import download
from ncf.download import DATASETS, MARKER, fetch, fetch_ratings
from ncf.errors import NcfError

U_DATA = b"1\t10\t5\t881250949\n2\t20\t3\t891717742\n3\t30\t4\t878887116\n"


class _Server:
    """A ``ThreadingHTTPServer`` serving one folder, counting the requests it answers."""

    def __init__(self, folder: Path) -> None:
        self.requests: list[str] = []
        server = self

        class Handler(http.server.SimpleHTTPRequestHandler):
            def __init__(self, *args: object, **kwargs: object) -> None:
                super().__init__(*args, directory=str(folder), **kwargs)  # type: ignore[arg-type]

            def do_GET(self) -> None:  # noqa: N802 (the stdlib's name)
                server.requests.append(self.path)
                if self.path.endswith("/cut/ml-100k.zip"):  # promises 1 MB, sends 9 bytes
                    self.send_response(200)
                    self.send_header("Content-Length", str(1 << 20))
                    self.end_headers()
                    self.wfile.write(b"PK\x03\x04 half")
                    self.wfile.flush()
                    self.close_connection = True
                    return
                super().do_GET()

            def log_message(self, format: str, *args: object) -> None:  # noqa: A002
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/files"
        self.thread = threading.Thread(
            target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=5)


def _make_zip(path: Path, members: dict[str, bytes]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return path


def _use_zip(monkeypatch: pytest.MonkeyPatch, zip_path: Path) -> None:
    """Point the ml-100k registry entry at ``zip_path``'s real md5."""
    md5 = hashlib.md5(zip_path.read_bytes()).hexdigest()
    spec = dataclasses.replace(DATASETS["ml-100k"], checksum=md5)
    monkeypatch.setitem(DATASETS, "ml-100k", spec)


def _free_port() -> int:
    """A port on 127.0.0.1 that nothing listens on (bound then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[_Server, Path]]:
    """A running server and the folder it serves under ``/files``."""
    root = tmp_path / "www"
    (root / "files").mkdir(parents=True)
    server = _Server(root)
    try:
        yield server, root / "files"
    finally:
        server.close()


@pytest.fixture
def cache(tmp_path: Path) -> Path:
    return tmp_path / "cache"


def _leftovers(cache: Path) -> list[str]:
    return sorted(p.name for p in cache.iterdir()) if cache.exists() else []


def test_fetch_downloads_verifies_extracts_then_uses_the_cache(
    served: tuple[_Server, Path], cache: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    server, files = served
    zip_path = _make_zip(files / "ml-100k.zip", {"ml-100k/u.data": U_DATA, "ml-100k/README": b"x"})
    _use_zip(monkeypatch, zip_path)

    folder = fetch("ml-100k", cache_dir=cache, base_url=server.url)
    assert folder == cache / "ml-100k"
    assert (folder / "u.data").read_bytes() == U_DATA
    assert (folder / "README").read_bytes() == b"x"
    assert (folder / MARKER).is_file()
    assert server.requests == ["/files/ml-100k.zip"]
    assert _leftovers(cache) == ["ml-100k"]  # no temporary zip or staging folder left
    err = capsys.readouterr().err
    assert "ml-100k.zip" in err and "(100%)" in err and err.endswith("\n")

    assert fetch("ml-100k", cache_dir=cache, base_url=server.url) == folder
    assert fetch_ratings("ml-100k", cache_dir=cache, base_url=server.url) == folder / "u.data"
    assert len(server.requests) == 1  # served from the cache, no network


def test_quiet_and_environment_variables(
    served: tuple[_Server, Path], cache: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    server, files = served
    _use_zip(monkeypatch, _make_zip(files / "ml-100k.zip", {"ml-100k/u.data": U_DATA}))
    monkeypatch.setenv("NCF_CACHE", str(cache))
    monkeypatch.setenv("NCF_DATASETS_URL", server.url + "/")

    assert fetch("ml-100k", quiet=True) == cache / "ml-100k"
    assert server.requests == ["/files/ml-100k.zip"]
    assert capsys.readouterr().err == ""


def test_wrong_checksum_raises_and_leaves_nothing(
    served: tuple[_Server, Path], cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    server, files = served
    zip_path = _make_zip(files / "ml-100k.zip", {"ml-100k/u.data": U_DATA})
    actual = hashlib.md5(zip_path.read_bytes()).hexdigest()
    expected = "0" * 32
    monkeypatch.setitem(
        DATASETS, "ml-100k", dataclasses.replace(DATASETS["ml-100k"], checksum=expected)
    )

    with pytest.raises(NcfError) as info:
        fetch("ml-100k", cache_dir=cache, base_url=server.url, quiet=True)
    message = str(info.value)
    assert f"{server.url}/ml-100k.zip" in message
    assert expected in message and actual in message
    assert "\n" not in message
    assert _leftovers(cache) == []  # no extracted folder, no partial download


def test_unreachable_server_says_what_to_download_and_where(cache: Path) -> None:
    base = f"http://127.0.0.1:{_free_port()}/movielens"
    start = time.monotonic()
    with pytest.raises(NcfError) as info:
        fetch("ml-1m", cache_dir=cache, base_url=base, timeout=5, quiet=True)
    message = str(info.value)
    assert time.monotonic() - start < 5
    assert "\n" not in message
    assert message.startswith(f"cannot download {base}/ml-1m.zip (")
    assert f"unzip it into {cache} " in message
    assert str(cache / "ml-1m" / "ratings.dat") in message
    assert _leftovers(cache) == []


def test_server_that_never_answers_times_out(cache: Path) -> None:
    with socket.socket() as listener:  # accepts connections (backlog) but never replies
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        base = f"http://127.0.0.1:{listener.getsockname()[1]}"
        start = time.monotonic()
        with pytest.raises(NcfError, match=r"^cannot download .*; download it by hand"):
            fetch("ml-100k", cache_dir=cache, base_url=base, timeout=0.3, quiet=True)
        assert time.monotonic() - start < 5
    assert _leftovers(cache) == []


def test_interrupted_download_raises_and_leaves_nothing(
    served: tuple[_Server, Path], cache: Path
) -> None:
    server, _ = served
    with pytest.raises(NcfError, match=r"^cannot download .*/cut/ml-100k\.zip \(") as info:
        fetch("ml-100k", cache_dir=cache, base_url=server.url + "/cut", quiet=True)
    assert "\n" not in str(info.value)
    assert _leftovers(cache) == []


def test_missing_file_on_the_server_is_an_http_error(
    served: tuple[_Server, Path], cache: Path
) -> None:
    server, _ = served
    with pytest.raises(NcfError, match=r"ml-20m\.zip \(HTTP 404 "):
        fetch("ml-20m", cache_dir=cache, base_url=server.url, quiet=True)
    assert _leftovers(cache) == []


@pytest.mark.parametrize("evil", ["../evil.txt", "ml-100k/../../evil.txt", "/tmp/evil.txt"])
def test_unsafe_member_is_rejected(
    served: tuple[_Server, Path], cache: Path, monkeypatch: pytest.MonkeyPatch, evil: str
) -> None:
    server, files = served
    zip_path = _make_zip(files / "ml-100k.zip", {"ml-100k/u.data": U_DATA, evil: b"pwned"})
    with zipfile.ZipFile(zip_path) as archive:
        assert evil in archive.namelist()  # the archive really holds the hostile name
    _use_zip(monkeypatch, zip_path)

    with pytest.raises(NcfError, match="unsafe member") as info:
        fetch("ml-100k", cache_dir=cache, base_url=server.url, quiet=True)
    assert repr(evil) in str(info.value)
    assert _leftovers(cache) == []
    assert not (cache.parent / "evil.txt").exists()
    assert not list(cache.parent.rglob("evil.txt"))


def test_archive_without_the_ratings_file_is_rejected(
    served: tuple[_Server, Path], cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    server, files = served
    _use_zip(monkeypatch, _make_zip(files / "ml-100k.zip", {"ml-100k/u.item": b"1|x\n"}))
    with pytest.raises(NcfError, match=r"has no ml-100k/u\.data"):
        fetch("ml-100k", cache_dir=cache, base_url=server.url, quiet=True)
    assert _leftovers(cache) == []


def test_not_a_zip_is_rejected(
    served: tuple[_Server, Path], cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    server, files = served
    bogus = files / "ml-100k.zip"
    bogus.write_bytes(b"<html>not a zip</html>")
    _use_zip(monkeypatch, bogus)
    with pytest.raises(NcfError, match="not a readable zip"):
        fetch("ml-100k", cache_dir=cache, base_url=server.url, quiet=True)
    assert _leftovers(cache) == []


def test_zip_put_in_the_cache_by_hand_is_used_without_network(
    cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    zip_path = _make_zip(cache / "ml-100k.zip", {"ml-100k/u.data": U_DATA})
    _use_zip(monkeypatch, zip_path)
    offline = f"http://127.0.0.1:{_free_port()}"
    folder = fetch("ml-100k", cache_dir=cache, base_url=offline, quiet=True)
    assert (folder / "u.data").read_bytes() == U_DATA
    assert (folder / MARKER).is_file()

    zip_path.write_bytes(b"corrupt")
    (folder / MARKER).unlink()
    (folder / "u.data").unlink()
    with pytest.raises(NcfError, match=r"checksum mismatch for .*ml-100k\.zip"):
        fetch("ml-100k", cache_dir=cache, base_url=offline, quiet=True)
    assert zip_path.exists()  # the user's own file is not deleted


def test_folder_unzipped_by_hand_is_checked_and_used_without_network(
    cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    offline = f"http://127.0.0.1:{_free_port()}"
    ratings = cache / "ml-100k" / "u.data"
    ratings.parent.mkdir(parents=True)
    ratings.write_bytes(U_DATA)
    good = hashlib.sha256(U_DATA).hexdigest()
    monkeypatch.setitem(
        DATASETS, "ml-100k", dataclasses.replace(DATASETS["ml-100k"], ratings_sha256=good)
    )
    assert fetch("ml-100k", cache_dir=cache, base_url=offline) == ratings.parent
    assert (ratings.parent / MARKER).is_file()

    (ratings.parent / MARKER).unlink()
    ratings.write_bytes(U_DATA[:-5])
    with pytest.raises(NcfError, match=r"checksum mismatch for .*u\.data: expected sha256"):
        fetch("ml-100k", cache_dir=cache, base_url=offline)


def test_leftovers_of_interrupted_runs_are_removed(
    served: tuple[_Server, Path], cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    server, files = served
    _use_zip(monkeypatch, _make_zip(files / "ml-100k.zip", {"ml-100k/u.data": U_DATA}))
    cache.mkdir()
    (cache / ".ml-100k.abc.zip.part").write_bytes(b"half")
    (cache / ".ml-100k.def.extract").mkdir()
    (cache / ".ml-100k.ghi.zip.part").write_bytes(b"half")  # however recent: the lock is ours
    (cache / ".ml-1m.jkl.zip.part").write_bytes(b"half")  # another data set's: not touched
    fetch("ml-100k", cache_dir=cache, base_url=server.url, quiet=True)
    assert _leftovers(cache) == [".ml-1m.jkl.zip.part", "ml-100k"]


def test_a_folder_with_files_of_the_users_is_never_replaced(
    served: tuple[_Server, Path], cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    server, files = served
    _use_zip(monkeypatch, _make_zip(files / "ml-100k.zip", {"ml-100k/u.data": U_DATA,
                                                            "ml-100k/u.item": b"1|A|"}))
    (cache / "ml-100k").mkdir(parents=True)
    (cache / "ml-100k" / "my_notes.txt").write_text("mine")
    with pytest.raises(NcfError, match=r"ml-100k: not replacing it .*my_notes\.txt"):
        fetch("ml-100k", cache_dir=cache, base_url=server.url, quiet=True)
    assert os.listdir(cache / "ml-100k") == ["my_notes.txt"]
    assert _leftovers(cache) == ["ml-100k"]
    # a folder of the archive's own files (u.data deleted by hand) is completed
    (cache / "ml-100k" / "my_notes.txt").unlink()
    (cache / "ml-100k" / "u.item").write_bytes(b"1|A|")
    fetch("ml-100k", cache_dir=cache, base_url=server.url, quiet=True)
    assert (cache / "ml-100k" / "u.data").read_bytes() == U_DATA


def test_unknown_name_lists_the_known_ones(cache: Path) -> None:
    with pytest.raises(NcfError, match=r"unknown data set 'ml-2m': choose one of ml-100k, ml-1m"):
        fetch("ml-2m", cache_dir=cache)


def test_registry_points_at_grouplens_with_well_formed_checksums() -> None:
    assert set(DATASETS) == {
        "ml-100k", "ml-1m", "ml-10m", "ml-20m", "ml-25m", "ml-latest-small"
    }
    lengths = {"md5": 32, "sha256": 64}
    for name, spec in DATASETS.items():
        assert spec.name == name
        assert spec.url == f"https://files.grouplens.org/datasets/movielens/{name}.zip"
        assert len(spec.checksum) == lengths[spec.algorithm]
        int(spec.checksum, 16)
        assert spec.ratings.rsplit("/", 1)[1] in {"u.data", "ratings.dat", "ratings.csv"}
    assert DATASETS["ml-10m"].folder == "ml-10M100K"
    assert DATASETS["ml-1m"].checksum == "c4d9eecfca2ab87c1945afe126590906"


def test_cache_and_url_defaults(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("NCF_CACHE", raising=False)
    monkeypatch.delenv("NCF_DATASETS_URL", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert download.cache_root() == tmp_path / ".cache" / "ncf"
    assert download.dataset_url(DATASETS["ml-1m"]) == DATASETS["ml-1m"].url
    assert download.dataset_url(DATASETS["ml-1m"], "http://127.0.0.1:1/m/") == (
        "http://127.0.0.1:1/m/ml-1m.zip"
    )


def test_known_ratings_hash_matches_the_real_u_data(shared_data: Path) -> None:
    real = shared_data / "ml-100k" / "u.data"
    if not real.is_file():
        pytest.skip(f"real ml-100k u.data not found at {real}")
    assert download.file_hash(real, "sha256") == DATASETS["ml-100k"].ratings_sha256
