"""Netflix Prize files: which files to read, in which order, cut into blocks of whole lines.

Every layout (``combined_data_*.txt``, ``mv_*.txt``, ``training_set.tar``) is found here and
cut into pieces that end at a line end; :mod:`ncf.datasets.netflix.parse` parses them.
"""

from __future__ import annotations

import lzma
import re
import tarfile
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from ncf.datasets._common import existing, regular_file
from ncf.errors import DataError

PAD = b"\n" * 32  # before every block, so words ending at a line end never start before it


@dataclass(frozen=True)
class Piece:
    """Whole lines of one file (``data`` ends with a newline) and where they start in it."""

    path: str
    data: bytes | np.ndarray
    first_line: int
    file_start: bool
    padded: np.ndarray | None = None  # pad + data, when the reader already laid it out so
    source: int = 0  # index of the file (or archive) it comes from


def netflix_sources(paths: str | Path | Iterable[str | Path]) -> list[Path]:
    """The files to read, in order: ``combined_data_*`` / ``mv_*`` sorted numerically.

    Args:
        paths: a file, a folder (``combined_data_*.txt``, ``mv_*.txt``, ``training_set/``
            or ``training_set.tar`` inside), a ``.tar``, or a list of files.

    Returns:
        Files (or tar archives) in reading order.
    """
    if isinstance(paths, str | Path):
        p = existing(paths)
        if p.is_file():
            return [p]
        for pattern in ("combined_data_*.txt", "mv_*.txt"):
            found = sorted(p.glob(pattern), key=numeric_key)
            for f in found:  # a pipe or a device there would be waited on forever
                regular_file(f)
            if found:
                if pattern.startswith("combined"):
                    _check_complete(p, found)
                return found
        for sub in ("training_set", "training_set.tar"):
            if (p / sub).exists():
                return netflix_sources(p / sub)
        raise DataError("no combined_data_*.txt, mv_*.txt or training_set.tar inside", path=p)
    return [q for path in paths for q in netflix_sources(path)]


def _check_complete(folder: Path, found: list[Path]) -> None:
    """Kaggle's set is ``combined_data_1..4.txt``: a gap below the last one found there means
    a file of the set is missing (other numberings are taken as they are)."""
    numbers = {numeric_key(f)[0] for f in found}
    if max(numbers) > 4:
        return
    missing = sorted(set(range(1, max(numbers) + 1)) - numbers)
    if missing:
        names = ", ".join(f"combined_data_{k}.txt" for k in missing)
        raise DataError(f"{names} missing from the set (found {', '.join(f.name for f in found)})",
                        path=folder)


def numeric_key(path: Path | str) -> tuple[int, str]:
    digits = re.findall(r"\d+", Path(path).name)
    return (int(digits[-1]) if digits else -1, str(path))


def _file_pieces(path: Path, chunk_bytes: int) -> Iterator[Piece]:
    """Cut one file into pieces of at most ``chunk_bytes`` ending at a newline.

    Small files are read whole. Big ones are read block by block, each into its own
    buffer that already holds the pad, so a piece is parsed without a copy and several
    pieces can be parsed at once.
    """
    if path.stat().st_size <= chunk_bytes:
        yield bytes_piece(str(path), path.read_bytes())
        return
    pad = len(PAD)
    with open(path, "rb") as f:
        tail, line, first = b"", 1, True
        while True:
            store = bytearray(pad + chunk_bytes + 1)  # + 1: room for a missing final newline
            store[:pad] = PAD
            filled = pad + len(tail)
            store[pad:filled] = tail
            end = filled + f.readinto(memoryview(store)[filled : pad + chunk_bytes])
            if end == filled:  # end of file
                if end > pad:  # last line without a newline
                    store[end] = 10
                    yield _streamed(path, store, end + 1, line, first)
                return
            cut = store.rfind(b"\n", filled, end) + 1
            if cut == 0:
                if end - pad >= chunk_bytes:
                    raise DataError(
                        f"no line end within {chunk_bytes} bytes: not a Netflix ratings file",
                        path=path,
                        line=line,
                    )
                tail = bytes(store[pad:end])
                continue
            tail = bytes(store[cut:end])
            piece = _streamed(path, store, cut, line, first)
            line += store.count(b"\n", pad, cut)
            first = False
            yield piece


def _streamed(path: Path, store: bytearray, end: int, line: int, first: bool) -> Piece:
    padded = np.frombuffer(store, dtype=np.uint8, count=end)
    return Piece(str(path), padded[len(PAD) :], line, first, padded)


def bytes_piece(name: str, data: bytes) -> Piece:
    if not data:
        raise DataError("empty file", path=name)
    return Piece(name, data if data.endswith(b"\n") else data + b"\n", 1, True)


def _tar_pieces(path: Path) -> Iterator[Piece]:
    """Every ``mv_*.txt`` member of a tar archive (not extracted), numerically sorted."""
    try:
        with tarfile.open(path) as tar:
            members = [m for m in tar.getmembers() if m.isfile() and m.name.endswith(".txt")]
            members.sort(key=lambda m: numeric_key(m.name))
            if not members:
                raise DataError("no .txt members in the archive", path=path)
            for m in members:
                f = tar.extractfile(m)
                if f is None:
                    raise DataError(f"cannot read member {m.name}", path=path)
                yield bytes_piece(f"{path}/{m.name}", f.read())
    except (tarfile.TarError, EOFError, zlib.error, lzma.LZMAError) as e:
        # a truncated or corrupt archive; tarfile's own message may run over several lines
        reason = " ".join(str(e).split()) or type(e).__name__
        raise DataError(f"not a readable tar archive ({reason})", path=path) from None


def pieces(sources: list[Path], chunk_bytes: int) -> Iterator[Piece]:
    for i, src in enumerate(sources):
        if src.suffix == ".tar" or src.name.endswith((".tar.gz", ".tgz")):
            found = _tar_pieces(src)
        else:
            found = _file_pieces(src, chunk_bytes)
        for piece in found:
            yield replace(piece, source=i)


def blocks(pieces: Iterator[Piece], chunk_bytes: int) -> Iterator[list[Piece]]:
    """Group small pieces (one ``mv_`` file each) into blocks of about ``chunk_bytes``."""
    group: list[Piece] = []
    size = 0
    for p in pieces:
        if p.padded is not None:  # a part of a big file: a block of its own
            if group:
                yield group
                group, size = [], 0
            yield [p]
            continue
        if group and size + len(p.data) > chunk_bytes:
            yield group
            group, size = [], 0
        group.append(p)
        size += len(p.data)
    if group:
        yield group
