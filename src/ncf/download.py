"""Download the MovieLens data sets from GroupLens into a local cache, verified by checksum.

``fetch("ml-1m")`` returns the extracted folder (``~/.cache/ncf/ml-1m`` by default). It
downloads ``https://files.grouplens.org/datasets/movielens/ml-1m.zip`` only when the folder is
not already there: the archive is streamed to a temporary file in the cache folder, its checksum
checked against the value GroupLens publishes, extracted (safely) into a temporary folder which
is then renamed into place, so an interrupted or failed download never leaves anything that
looks like a usable data set.

Without internet, download the zip by hand and either unzip it into the cache folder or drop the
zip itself there: ``fetch`` uses either without touching the network.

Environment:
    ``NCF_CACHE``: the cache folder (default ``~/.cache/ncf``).
    ``NCF_DATASETS_URL``: another host serving the same ``NAME.zip`` files (a mirror).
"""

from __future__ import annotations

import hashlib
import http.client
import os
import re
import shutil
import sys
import tempfile
import time
import urllib.error
import urllib.request
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from ncf.errors import NcfError
from ncf.outputs import output_lock, replace_folder

OFFICIAL_URL = "https://files.grouplens.org/datasets/movielens"
MARKER = ".ncf-verified"
_CHUNK = 1 << 20
_HEX_LENGTH = {"md5": 32, "sha1": 40, "sha256": 64}


@dataclass(frozen=True)
class DatasetSpec:
    """One downloadable data set.

    Attributes:
        name: the name on the command line and of the zip (``ml-1m`` -> ``ml-1m.zip``).
        url: the official download address of the zip.
        algorithm: ``hashlib`` name of the checksum (``"md5"`` or ``"sha256"``).
        checksum: hex digest of the whole zip.
        ratings: the ratings file, relative to the folder the zip is unzipped into; its first
            component is the folder the archive creates (``ml-10m.zip`` creates ``ml-10M100K``).
        size: size of the zip in bytes, when known (used for the progress line only).
        ratings_sha256: sha256 of the ratings file, when known: checks a folder unzipped by hand.
    """

    name: str
    url: str
    algorithm: str
    checksum: str
    ratings: str
    size: int | None = None
    ratings_sha256: str | None = None

    @property
    def folder(self) -> str:
        """Name of the top-level folder the archive extracts to."""
        return self.ratings.split("/", 1)[0]

    @property
    def filename(self) -> str:
        """File name of the archive, ``NAME.zip``."""
        return f"{self.name}.zip"


def _official(name: str) -> str:
    return f"{OFFICIAL_URL}/{name}.zip"


# Checksums. The md5 values are those of GroupLens's own ``NAME.zip.md5`` files published next
# to each archive (files.grouplens.org/datasets/movielens/NAME.zip.md5); each one is also quoted,
# identically, by several independent projects that download these archives (e.g. the
# torchtext / PaddlePaddle / RecBole-style dataset loaders and MLPerf's NCF reference, whose
# verify script compares against "MD5 (ml-20m.zip) = ...").
# The sizes and the sha256 of the archives come from TensorFlow Datasets'
# url_checksums/movielens.txt (ml-100k, ml-1m, ml-20m, ml-25m, ml-latest-small); the sha256 of
# ml-10m and its size from other projects pinning that archive.
# ml-latest-small: no copy of GroupLens's published md5 could be confirmed, so the archive is
# checked with the sha256 that TensorFlow Datasets pins (the September 2018 release, 610 users,
# 100,836 ratings, quoted identically by many independent projects). GroupLens labels this data
# set "latest": should it ever be re-released, the checksum will no longer match and ``fetch``
# says so (expected vs actual) instead of silently training on different data.
#   sha256 ml-100k.zip  50d2a982c66986937beb9ffb3aa76efe955bf3d5c6b761f4e3a7cd717c6a3229
#   sha256 ml-1m.zip    a6898adb50b9ca05aa231689da44c217cb524e7ebd39d264c56e2832f2c54e20
#   sha256 ml-10m.zip   813c411ccb6122564edfe752e7f80c4dcc5aa25fa94c93622f6877a7ba252862
#   sha256 ml-20m.zip   96f243c338a8665f6bcc89c53edf6ee39162a846940de6b7c8c48aeada765ff3
#   sha256 ml-25m.zip   8b21cfb7eb1706b4ec0aac894368d90acf26ebdfb6aced3ebd4ad5bd1eb9c6aa
DATASETS: dict[str, DatasetSpec] = {
    spec.name: spec
    for spec in (
        DatasetSpec(
            "ml-100k", _official("ml-100k"), "md5", "0e33842e24a9c977be4e0107933c0723",
            "ml-100k/u.data", size=4_924_029,
            ratings_sha256="06416e597f82b7342361e41163890c81036900f418ad91315590814211dca490",
        ),
        DatasetSpec(
            "ml-1m", _official("ml-1m"), "md5", "c4d9eecfca2ab87c1945afe126590906",
            "ml-1m/ratings.dat", size=5_917_549,
        ),
        DatasetSpec(
            "ml-10m", _official("ml-10m"), "md5", "ce571fd55effeba0271552578f2648bd",
            "ml-10M100K/ratings.dat", size=65_566_137,
        ),
        DatasetSpec(
            "ml-20m", _official("ml-20m"), "md5", "cd245b17a1ae2cc31bb14903e1204af3",
            "ml-20m/ratings.csv", size=198_702_078,
        ),
        DatasetSpec(
            "ml-25m", _official("ml-25m"), "md5", "6b51fb2759a8657d3bfcbfc42b592ada",
            "ml-25m/ratings.csv", size=261_978_986,
        ),
        DatasetSpec(
            "ml-latest-small", _official("ml-latest-small"), "sha256",
            "696d65a3dfceac7c45750ad32df2c259311949efec81f0f144fdfb91ebc9e436",
            "ml-latest-small/ratings.csv", size=978_202,
        ),
    )
}


def get_spec(name: str) -> DatasetSpec:
    """The registry entry of ``name``; ``NcfError`` listing the known names otherwise."""
    try:
        return DATASETS[name]
    except KeyError:
        known = ", ".join(DATASETS)
        raise NcfError(f"unknown data set {name!r}: choose one of {known}") from None


def cache_root(cache_dir: str | Path | None = None) -> Path:
    """The cache folder: ``cache_dir``, else ``$NCF_CACHE``, else ``~/.cache/ncf``."""
    if cache_dir is None:
        cache_dir = os.environ.get("NCF_CACHE") or Path.home() / ".cache" / "ncf"
    return Path(cache_dir).expanduser().absolute()


def dataset_url(spec: DatasetSpec, base_url: str | None = None) -> str:
    """Where to download ``spec``: ``base_url``, else ``$NCF_DATASETS_URL``, else GroupLens."""
    base = base_url or os.environ.get("NCF_DATASETS_URL")
    if not base:
        return spec.url
    return f"{base.rstrip('/')}/{spec.filename}"


def file_hash(path: str | Path, algorithm: str) -> str:
    """Hex digest of a file, read in chunks."""
    digest = hashlib.new(algorithm)
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def fetch(
    name: str,
    cache_dir: str | Path | None = None,
    base_url: str | None = None,
    timeout: float = 30,
    quiet: bool = False,
) -> Path:
    """The extracted folder of data set ``name``, downloading and verifying it if needed.

    Args:
        name: a key of ``DATASETS`` (``ml-100k``, ``ml-1m``, ...).
        cache_dir: the cache folder (default ``$NCF_CACHE`` or ``~/.cache/ncf``).
        base_url: a host serving ``NAME.zip`` instead of GroupLens (default
            ``$NCF_DATASETS_URL``).
        timeout: seconds to wait on the network before giving up.
        quiet: no progress line on stderr.

    Returns:
        ``CACHE/FOLDER``, the folder the archive creates (``CACHE/ml-1m``).

    Raises:
        NcfError: unknown name, no network (saying what to download and where to put it),
            checksum mismatch, unsafe or incomplete archive.
    """
    spec = get_spec(name)
    root = cache_root(cache_dir)
    target = root / spec.folder
    if (target / MARKER).is_file() and (root / spec.ratings).is_file():
        return target
    if (root / spec.ratings).is_file():
        return _adopt_unzipped(spec, root)

    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise NcfError(f"cannot create the cache folder {root}: {e.strerror or e}") from None
    with output_lock(target, wait=True, what="data set"):  # one download at a time
        if (target / MARKER).is_file() and (root / spec.ratings).is_file():
            return target  # installed by the process we waited for
        _remove_leftovers(spec, root)
        return _fetch_locked(spec, root, base_url, timeout, quiet)


def _fetch_locked(spec: DatasetSpec, root: Path, base_url: str | None, timeout: float,
                  quiet: bool) -> Path:
    target = root / spec.folder
    local_zip = root / spec.filename
    if local_zip.is_file():
        _check_digest(
            spec, file_hash(local_zip, spec.algorithm), str(local_zip),
            f"delete it and download {spec.url} again",
        )
        _install(spec, local_zip, root)
        return target

    url = dataset_url(spec, base_url)
    try:
        fd, part_name = tempfile.mkstemp(prefix=f".{spec.name}.", suffix=".zip.part", dir=root)
    except OSError as e:
        raise NcfError(f"cannot write into the cache folder {root}: {e.strerror or e}") from None
    part = Path(part_name)
    try:
        with os.fdopen(fd, "wb") as out:
            actual = _download(spec, url, out, root, timeout, quiet)
        _check_digest(spec, actual, url, "the download is corrupt or not the official archive")
        _install(spec, part, root)
    finally:
        part.unlink(missing_ok=True)
    return target


def fetch_ratings(
    name: str,
    cache_dir: str | Path | None = None,
    base_url: str | None = None,
    timeout: float = 30,
    quiet: bool = False,
) -> Path:
    """The ratings file of data set ``name`` (arguments as ``fetch``), downloading it if needed."""
    folder = fetch(name, cache_dir=cache_dir, base_url=base_url, timeout=timeout, quiet=quiet)
    return folder.parent / get_spec(name).ratings


def _manual_hint(spec: DatasetSpec, root: Path) -> str:
    return (
        f"download it by hand and unzip it into {root} (so that {root / spec.ratings} exists), "
        f"or put {spec.filename} there"
    )


def _one_line(text: object) -> str:
    return " ".join(str(text).split())


def _download(
    spec: DatasetSpec, url: str, out: BinaryIO, root: Path, timeout: float, quiet: bool
) -> str:
    """Stream ``url`` into the open file ``out``; the hex digest of what was received."""
    digest = hashlib.new(spec.algorithm)
    hint = _manual_hint(spec, root)

    def failed(reason: object) -> NcfError:
        return NcfError(f"cannot download {url} ({_one_line(reason)}); {hint}")

    received = 0
    expected_length: int | None = None
    try:
        request = urllib.request.Request(url, headers={"User-Agent": "ncf"})
        with urllib.request.urlopen(request, timeout=timeout) as response:
            length = response.headers.get("Content-Length")
            expected_length = int(length) if length and length.isdigit() else None
            progress = _Progress(spec.filename, expected_length or spec.size, quiet)
            try:
                _copy(response, out, digest.update, progress, spec, root)
            finally:
                progress.end_line()
            received = progress.received
    except NcfError:
        raise
    except urllib.error.HTTPError as e:
        raise failed(f"HTTP {e.code} {e.reason}") from None
    except urllib.error.URLError as e:
        reason = e.reason
        if isinstance(reason, TimeoutError):
            reason = f"no answer within {timeout:g} s"
        elif isinstance(reason, OSError) and reason.strerror:
            reason = reason.strerror
        raise failed(reason) from None
    except TimeoutError:
        raise failed(f"no answer within {timeout:g} s") from None
    except (OSError, http.client.HTTPException, ValueError) as e:
        raise failed(str(e) or type(e).__name__) from None
    if expected_length is not None and received != expected_length:
        raise failed(f"connection closed after {received} of {expected_length} bytes")
    return digest.hexdigest()


def _copy(
    response: http.client.HTTPResponse, out: BinaryIO, update: Callable[[bytes], object],
    progress: _Progress, spec: DatasetSpec, root: Path,
) -> None:
    """Copy ``response`` to ``out`` in chunks, hashing and reporting progress on the way."""
    while chunk := response.read(_CHUNK):
        update(chunk)
        try:
            out.write(chunk)
        except OSError as e:
            raise NcfError(f"cannot write {spec.filename} into {root}: {e.strerror or e}") from None
        progress.update(len(chunk))


def _check_digest(spec: DatasetSpec, actual: str, source: str, advice: str) -> None:
    """``NcfError`` naming ``source``, the expected and the actual hash, when they differ.

    A downloaded (temporary) file is deleted by the caller; a zip the user put in the cache
    folder is left alone.
    """
    if actual.lower() != spec.checksum.lower():
        raise NcfError(
            f"checksum mismatch for {source}: expected {spec.algorithm} {spec.checksum}, "
            f"got {spec.algorithm} {actual}; {advice}"
        )


def _safe_members(archive: zipfile.ZipFile, source: Path) -> list[zipfile.ZipInfo]:
    """The archive's members; ``NcfError`` on an absolute path or a ``..`` component."""
    members = archive.infolist()
    for info in members:
        name = info.filename.replace("\\", "/")
        if name.startswith("/") or re.match(r"[A-Za-z]:", name) or ".." in name.split("/"):
            raise NcfError(
                f"{source}: refusing to extract the unsafe member {info.filename!r} "
                "(absolute path or '..')"
            )
    return members


def _install(spec: DatasetSpec, zip_path: Path, root: Path) -> None:
    """Extract a verified archive into a temporary folder, then rename its folder into place."""
    staging = Path(tempfile.mkdtemp(prefix=f".{spec.name}.", suffix=".extract", dir=root))
    target = root / spec.folder
    try:
        try:
            with zipfile.ZipFile(zip_path) as archive:
                archive.extractall(staging, members=_safe_members(archive, zip_path))
        except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError) as e:
            raise NcfError(f"{zip_path}: not a readable zip archive ({_one_line(e)})") from None
        if not (staging / spec.ratings).is_file():
            raise NcfError(f"{zip_path}: the archive has no {spec.ratings}")
        (staging / spec.folder / MARKER).write_text(
            f"{spec.name} {spec.algorithm}:{spec.checksum}\n", encoding="ascii"
        )
        if os.path.lexists(target):  # incomplete (no ratings file): replaced only if ours
            replace_folder(staging / spec.folder, target, _extracted_from(staging / spec.folder),
                           f"{spec.name} data set")
        else:
            os.replace(staging / spec.folder, target)
    except OSError as e:
        if (target / MARKER).is_file() and (root / spec.ratings).is_file():
            return
        raise NcfError(f"cannot extract {zip_path.name} into {root}: {e.strerror or e}") from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _adopt_unzipped(spec: DatasetSpec, root: Path) -> Path:
    """A folder unzipped by hand: check its ratings file when its hash is known, mark it."""
    target = root / spec.folder
    ratings = root / spec.ratings
    if spec.ratings_sha256 is not None:
        actual = file_hash(ratings, "sha256")
        if actual != spec.ratings_sha256:
            raise NcfError(
                f"checksum mismatch for {ratings}: expected sha256 {spec.ratings_sha256}, "
                f"got {actual}; delete {target} and download {spec.url} again"
            )
        try:
            (target / MARKER).write_text(
                f"{spec.name} ratings sha256:{actual}\n", encoding="ascii"
            )
        except OSError:
            pass  # a read-only cache is fine: the file is simply checked again next time
    return target


def _extracted_from(fresh: Path) -> Callable[[Path], bool]:
    """Ownership of a cached data set folder: everything in it is a file the archive holds
    (as just extracted into ``fresh``) or the marker; a file of the user's keeps it."""
    def names(folder: Path) -> set[str]:
        return {str(p.relative_to(folder)) for p in folder.rglob("*")}

    archive = names(fresh) | {MARKER}

    def owned(folder: Path) -> bool:
        try:
            return names(folder) <= archive
        except OSError:
            return False

    return owned


def _remove_leftovers(spec: DatasetSpec, root: Path) -> None:
    """Delete the temporary files and folders an interrupted download or extraction left.

    Called with the data set's lock held: no other ``ncf`` process is using them.
    """
    for leftover in root.glob(f".{spec.name}.*"):
        if not leftover.name.endswith((".zip.part", ".extract")) or leftover.is_symlink():
            continue
        try:
            if leftover.is_dir():
                shutil.rmtree(leftover, ignore_errors=True)
            else:
                leftover.unlink(missing_ok=True)
        except OSError:
            pass


class _Progress:
    """A one-line progress report on stderr, redrawn at most a few times a second."""

    def __init__(self, label: str, total: int | None, quiet: bool) -> None:
        self.label = label
        self.total = total
        self.quiet = quiet
        self.received = 0
        self.last = 0.0
        self.drawn = False

    def _draw(self) -> None:
        mb = self.received / 1e6
        if self.total:
            pct = min(100, 100 * self.received // self.total)
            line = f"downloading {self.label}: {mb:.1f} / {self.total / 1e6:.1f} MB ({pct}%)"
        else:
            line = f"downloading {self.label}: {mb:.1f} MB"
        sys.stderr.write("\r" + line)
        sys.stderr.flush()
        self.drawn = True

    def update(self, n: int) -> None:
        """Count ``n`` more bytes; redraw the line if the last redraw is old enough."""
        self.received += n
        now = time.monotonic()
        if not self.quiet and now - self.last >= 0.25:
            self.last = now
            self._draw()

    def end_line(self) -> None:
        """Draw the final count and end the line (also after a failure), once."""
        if not self.quiet:
            self._draw()
            sys.stderr.write("\n")
            sys.stderr.flush()
            self.quiet = True
