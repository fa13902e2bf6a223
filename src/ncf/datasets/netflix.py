"""Netflix Prize ratings: ``combined_data_*.txt``, ``mv_*.txt``, ``training_set.tar``, probe.

Every layout has the same lines: a ``MovieID:`` line, then ``CustomerID,Rating,YYYY-MM-DD``
lines for that movie. The files are read in blocks of whole lines (``chunk_bytes``) and each
block is parsed with numpy alone: newline positions, then fixed offsets back from every line
end (the tail ``,R,YYYY-MM-DD`` is 13 bytes), so memory stays bounded by the block size.
"""

from __future__ import annotations

import lzma
import mmap
import os
import re
import tarfile
import zlib
from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, NoReturn

import numpy as np

from ncf.arrays import dense_rank
from ncf.datasets._common import (
    SECONDS_PER_DAY,
    days_from_civil,
    existing,
    regular_file,
    valid_dates,
)
from ncf.errors import DataError
from ncf.interactions import Interactions

DEFAULT_CHUNK_BYTES = 4 << 20  # small blocks stay in cache: faster than big ones
_TAIL = 13  # ",R,YYYY-MM-DD"
_PAD = b"\n" * 32  # before every block, so words ending at a line end never start before it
_RATING_LINE = re.compile(r"(\d{1,8}),(\d),(\d{4})-(\d{2})-(\d{2})")


@dataclass(frozen=True, eq=False)
class NetflixChunk:
    """The ratings of one block of lines, raw ids as in the files.

    Args:
        movie: int32 movie ids, shape ``(n,)``.
        customer: int32 customer ids, shape ``(n,)``.
        rating: int8 ratings 1..5, shape ``(n,)``.
        day: int32 days since 1970-01-01, shape ``(n,)``.
    """

    movie: np.ndarray
    customer: np.ndarray
    rating: np.ndarray
    day: np.ndarray

    def __len__(self) -> int:
        return len(self.movie)


@dataclass(frozen=True)
class _Piece:
    """Whole lines of one file (``data`` ends with a newline) and where they start in it."""

    path: str
    data: bytes | np.ndarray
    first_line: int
    file_start: bool
    padded: np.ndarray | None = None  # pad + data, when the reader already laid it out so
    source: int = 0  # index of the file (or archive) it comes from


# sources ----------------------------------------------------------------------------
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
            found = sorted(p.glob(pattern), key=_numeric_key)
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
    numbers = {_numeric_key(f)[0] for f in found}
    if max(numbers) > 4:
        return
    missing = sorted(set(range(1, max(numbers) + 1)) - numbers)
    if missing:
        names = ", ".join(f"combined_data_{k}.txt" for k in missing)
        raise DataError(f"{names} missing from the set (found {', '.join(f.name for f in found)})",
                        path=folder)


def _numeric_key(path: Path | str) -> tuple[int, str]:
    digits = re.findall(r"\d+", Path(path).name)
    return (int(digits[-1]) if digits else -1, str(path))


def _file_pieces(path: Path, chunk_bytes: int) -> Iterator[_Piece]:
    """Cut one file into pieces of at most ``chunk_bytes`` ending at a newline.

    Small files are read whole. Big ones are read block by block, each into its own
    buffer that already holds the pad, so a piece is parsed without a copy and several
    pieces can be parsed at once.
    """
    if path.stat().st_size <= chunk_bytes:
        yield _bytes_piece(str(path), path.read_bytes())
        return
    pad = len(_PAD)
    with open(path, "rb") as f:
        tail, line, first = b"", 1, True
        while True:
            store = bytearray(pad + chunk_bytes + 1)  # + 1: room for a missing final newline
            store[:pad] = _PAD
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


def _streamed(path: Path, store: bytearray, end: int, line: int, first: bool) -> _Piece:
    padded = np.frombuffer(store, dtype=np.uint8, count=end)
    return _Piece(str(path), padded[len(_PAD) :], line, first, padded)


def _bytes_piece(name: str, data: bytes) -> _Piece:
    if not data:
        raise DataError("empty file", path=name)
    return _Piece(name, data if data.endswith(b"\n") else data + b"\n", 1, True)


def _tar_pieces(path: Path) -> Iterator[_Piece]:
    """Every ``mv_*.txt`` member of a tar archive (not extracted), numerically sorted."""
    try:
        with tarfile.open(path) as tar:
            members = [m for m in tar.getmembers() if m.isfile() and m.name.endswith(".txt")]
            members.sort(key=lambda m: _numeric_key(m.name))
            if not members:
                raise DataError("no .txt members in the archive", path=path)
            for m in members:
                f = tar.extractfile(m)
                if f is None:
                    raise DataError(f"cannot read member {m.name}", path=path)
                yield _bytes_piece(f"{path}/{m.name}", f.read())
    except (tarfile.TarError, EOFError, zlib.error, lzma.LZMAError) as e:
        # a truncated or corrupt archive; tarfile's own message may run over several lines
        reason = " ".join(str(e).split()) or type(e).__name__
        raise DataError(f"not a readable tar archive ({reason})", path=path) from None


def _pieces(sources: list[Path], chunk_bytes: int) -> Iterator[_Piece]:
    for i, src in enumerate(sources):
        if src.suffix == ".tar" or src.name.endswith((".tar.gz", ".tgz")):
            pieces = _tar_pieces(src)
        else:
            pieces = _file_pieces(src, chunk_bytes)
        for piece in pieces:
            yield replace(piece, source=i)


def _blocks(pieces: Iterator[_Piece], chunk_bytes: int) -> Iterator[list[_Piece]]:
    """Group small pieces (one ``mv_`` file each) into blocks of about ``chunk_bytes``."""
    group: list[_Piece] = []
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


# parsing ----------------------------------------------------------------------------
# Eight bytes are read at once as a little-endian uint64 (byte k = k-th character), and
# checked / converted with SWAR arithmetic: one pass over the lines per operation.
def _byte_mask(positions: Iterable[int], value: int = 0xFF) -> np.uint64:
    return np.uint64(sum(value << (8 * p) for p in positions))


_ONES = 0x0101010101010101
_ALL = np.uint64(0xFFFFFFFFFFFFFFFF)
_HI = np.uint64(0xF0 * _ONES)
_ZEROS = np.uint64(0x30 * _ONES)
_SIXES = np.uint64(0x06 * _ONES)
# bytes e-16..e-9 of a rating line: "ccc,R,YY" ; bytes e-8..e-1: "YY-MM-DD"
_PUNCT0, _PUNCT0_V = _byte_mask([3, 5]), _byte_mask([3, 5], 0x2C)
_DIGIT0 = _byte_mask([4, 6, 7])
_PUNCT1, _PUNCT1_V = _byte_mask([2, 5]), _byte_mask([2, 5], 0x2D)
_DIGIT1 = _byte_mask([0, 1, 3, 4, 6, 7])
_FIRST_YEAR, _YEARS = 1900, 200
_NO_DATE = np.iinfo(np.int32).min
_DAYS_TABLE: np.ndarray | None = None


def _lines(buf: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(starts, ends, newlines)`` of every line after the pad; ends exclude ``\\r``."""
    nl = np.flatnonzero(buf[len(_PAD) :] == 10) + len(_PAD)
    starts = np.empty_like(nl)
    starts[0] = len(_PAD)
    starts[1:] = nl[:-1] + 1
    ends = nl - (buf[nl - 1] == 13)
    return starts, ends, nl


def _words(buf: np.ndarray) -> np.ndarray:
    """Unaligned uint64 view: ``words[i]`` is bytes ``buf[i:i+8]`` (no copy)."""
    return np.ndarray((len(buf) - 7,), dtype="<u8", buffer=buf, strides=(1,))


def _are_digits(w: np.ndarray, mask: np.ndarray | np.uint64) -> np.ndarray:
    """Whether every byte of ``w`` selected by ``mask`` is an ASCII digit."""
    zeros = mask & _ZEROS
    hi = mask & _HI
    return ((w & hi) == zeros) & ((((w & mask) + (mask & _SIXES)) & hi) == zeros)


# by digit count 0..9: which bytes of the word hold the digits, and '0' in the others;
# counts 0 and 9 (clipped from anything longer) keep no byte and fill none: never digits
_KEEP = np.array(
    [0] + [0xFFFFFFFFFFFFFFFF << (8 * (8 - n)) & 0xFFFFFFFFFFFFFFFF for n in range(1, 9)] + [0],
    dtype=np.uint64,
)
_FILL = np.array([0] + [~int(k) & 0x3030303030303030 for k in _KEEP[1:9]] + [0], dtype=np.uint64)


def _uints(
    words: np.ndarray, starts: np.ndarray, ends: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """The integers written in ``buf[starts:ends]`` (1..8 digits): ``(int32 values, ok)``."""
    count = np.clip(ends - starts, 0, 9)
    v = words[ends - 8]
    v &= _KEEP[count]
    v |= _FILL[count]  # leading bytes become '0'
    ok = _are_digits(v, _ALL)
    v &= np.uint64(0x0F0F0F0F0F0F0F0F)
    v *= np.uint64(2561)
    v >>= np.uint64(8)
    v &= np.uint64(0x00FF00FF00FF00FF)
    v *= np.uint64(6553601)
    v >>= np.uint64(16)
    v &= np.uint64(0x0000FFFF0000FFFF)
    v *= np.uint64(42949672960001)
    v >>= np.uint64(32)
    return v.astype(np.int32), ok


def _days_table() -> np.ndarray:
    """Days since the epoch at ``(year - 1900) * 416 + month * 32 + day``; ``_NO_DATE`` if none."""
    global _DAYS_TABLE
    if _DAYS_TABLE is None:
        key = np.arange(_YEARS * 416 + 1)
        year, month, day = key // 416 + _FIRST_YEAR, key % 416 // 32, key % 32
        ok = valid_dates(year, month, day) & (key < _YEARS * 416)
        table = np.full(key.size, _NO_DATE, dtype=np.int32)
        table[ok] = days_from_civil(year[ok], month[ok], day[ok])
        _DAYS_TABLE = table
    return _DAYS_TABLE


def _parse_ratings(
    words: np.ndarray, starts: np.ndarray, ends: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Customer, rating, day of rating lines (fixed offsets from line ends) and an ok mask."""
    t0 = words[ends - 16]
    t1 = words[ends - 8]
    ok = ((t0 & _PUNCT0) == _PUNCT0_V) & ((t1 & _PUNCT1) == _PUNCT1_V)
    ok &= _are_digits(t0, _DIGIT0) & _are_digits(t1, _DIGIT1)
    x0 = (t0 & _DIGIT0) - (_DIGIT0 & _ZEROS)
    x1 = (t1 & _DIGIT1) - (_DIGIT1 & _ZEROS)
    p0 = x0 * np.uint64(10) + (x0 >> np.uint64(8))  # byte k: 10 * digit k + digit k+1
    p1 = x1 * np.uint64(10) + (x1 >> np.uint64(8))
    rating = ((x0 >> np.uint64(32)) & np.uint64(0xFF)).astype(np.int8)
    year = ((p0 >> np.uint64(48)) & np.uint64(0xFF)).astype(np.int32) * 100
    year += (p1 & np.uint64(0xFF)).astype(np.int32)
    month = ((p1 >> np.uint64(24)) & np.uint64(0xFF)).astype(np.int32)
    day = ((p1 >> np.uint64(48)) & np.uint64(0xFF)).astype(np.int32)
    ok &= (rating >= 1) & (rating <= 5) & (month <= 12) & (day <= 31)
    key = (year - _FIRST_YEAR) * 416 + month * 32 + day
    np.clip(key, 0, _YEARS * 416, out=key)
    days = _days_table()[key]
    ok &= days != _NO_DATE
    customer, ok_customer = _uints(words, starts, ends - _TAIL)
    return customer, rating, days, ok & ok_customer


_PIECE_ROWS: dict[int, list[tuple[int, int]]] = {}  # chunk id -> (source, rows) of its pieces
_OPEN = -2  # movie of the rows before a block's first movie line: the previous block's


def _parse_block(pieces: list[_Piece]) -> tuple[NetflixChunk, int, int]:
    """Parse one block, independently of the others (so blocks can be parsed in parallel).

    Returns ``(chunk, lead, last)``: the rows before the block's first ``MovieID:`` line
    (``lead`` of them, unless the block starts a file) carry movie ``_OPEN`` until the
    caller fills in the previous block's open movie; ``last`` is the movie open at the end
    of the block (``_OPEN`` if the block holds no movie line).
    """
    if len(pieces) == 1 and pieces[0].padded is not None:
        buf = pieces[0].padded
    else:
        buf = np.frombuffer(b"".join([_PAD, *(bytes(p.data) for p in pieces)]), dtype=np.uint8)
    words = _words(buf)
    starts, ends, nl = _lines(buf)
    nonblank = ends > starts
    is_movie = (buf[ends - 1] == 58) & nonblank  # ':'
    m_idx = np.flatnonzero(is_movie)
    r_idx = np.flatnonzero(nonblank & ~is_movie)  # blank lines are skipped
    movie_ids, ok_movie = _uints(words, starts[m_idx], ends[m_idx] - 1)
    customer, rating, day, ok = _parse_ratings(words, starts[r_idx], ends[r_idx])

    # movie id of every line: the last movie line at or above it, reset at each file start
    piece_starts = np.cumsum([len(_PAD)] + [len(p.data) for p in pieces])[:-1]
    resets = np.searchsorted(starts, piece_starts[[p.file_start for p in pieces]])
    movie_of = np.full(len(starts) + 1, -1, dtype=np.int32)
    movie_of[0] = -1 if pieces[0].file_start else _OPEN
    movie_of[m_idx + 1] = movie_ids
    mark = np.zeros(len(starts), dtype=np.int32 if len(starts) < 2**31 - 1 else np.int64)
    mark[resets] = resets + 1
    mark[m_idx] = m_idx + 1
    np.maximum.accumulate(mark, out=mark)
    movie = movie_of[mark[r_idx]]

    if not (ok.all() and ok_movie.all() and (movie != -1).all()):
        i = int(np.concatenate([r_idx[~ok | (movie == -1)], m_idx[~ok_movie]]).min())
        has_movie = bool(movie_of[mark[i]] != -1)
        _raise_at(buf, pieces, piece_starts, (starts, ends, nl), i, has_movie)
    lead = int(np.searchsorted(r_idx, m_idx[0])) if len(m_idx) else len(r_idx)
    if pieces[0].file_start:
        lead = 0
    last = int(movie_of[mark[-1]]) if len(mark) else _OPEN
    chunk = NetflixChunk(movie, customer, rating, day)
    if len(pieces) > 1:  # rows of each piece: which file each row comes from
        of_piece = np.searchsorted(piece_starts, starts[r_idx], side="right") - 1
        rows = np.bincount(of_piece, minlength=len(pieces))
        _PIECE_ROWS[id(chunk)] = [(p.source, int(k)) for p, k in zip(pieces, rows, strict=True)]
    return chunk, lead, last


def _raise_at(
    buf: np.ndarray,
    pieces: list[_Piece],
    piece_starts: np.ndarray,
    lines: tuple[np.ndarray, np.ndarray, np.ndarray],
    i: int,
    has_movie: bool,
) -> NoReturn:
    """Raise the ``DataError`` for line ``i`` of the block, naming its file and line."""
    starts, ends, nl = lines
    p = int(np.searchsorted(piece_starts, starts[i], side="right")) - 1
    line = pieces[p].first_line + int(
        np.searchsorted(nl, starts[i]) - np.searchsorted(nl, piece_starts[p])
    )
    text = buf[starts[i] : ends[i]].tobytes().decode("latin-1")
    raise DataError(_diagnose(text, has_movie), path=pieces[p].path, line=line)


def _diagnose(text: str, has_movie: bool) -> str:
    shown = text if len(text) <= 60 else text[:60] + "..."
    if text.endswith(":"):
        return f"movie id {text[:-1]!r} is not an integer of 1..8 digits"
    m = _RATING_LINE.fullmatch(text)
    if m is None:
        return f"expected 'MovieID:' or 'CustomerID,Rating,YYYY-MM-DD', got {shown!r}"
    if not 1 <= int(m.group(2)) <= 5:
        return f"rating {m.group(2)} outside 1..5"
    y, mo, d = (np.array([int(g)]) for g in m.groups()[2:])
    if not (valid_dates(y, mo, d)[0] and _FIRST_YEAR <= y[0] < _FIRST_YEAR + _YEARS):
        return f"invalid date {text.split(',')[2]!r} (or outside 1900..2099)"
    if not has_movie:
        return "rating line before any 'MovieID:' line"
    return f"cannot parse {shown!r}"  # pragma: no cover - the checks above are exhaustive


# public API -------------------------------------------------------------------------
def _parsed_blocks(
    blocks: Iterator[list[_Piece]], threads: int
) -> Iterator[tuple[NetflixChunk, int, int, bool]]:
    """``(chunk, lead, last, file_start)`` of every block, in order; parsed on ``threads``.

    numpy releases the GIL in its array operations, so blocks parse in parallel while
    this thread reads the next ones; a few blocks are in flight at most.
    """
    if threads <= 1:
        for block in blocks:
            yield (*_parse_block(block), block[0].file_start)
        return
    pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="ncf-parse")
    pending: deque[tuple[Future[tuple[NetflixChunk, int, int]], bool]] = deque()
    try:
        for block in blocks:
            pending.append((pool.submit(_parse_block, block), block[0].file_start))
            if len(pending) > 2 * threads:
                future, start = pending.popleft()
                yield (*future.result(), start)
        while pending:
            future, start = pending.popleft()
            yield (*future.result(), start)
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def default_threads() -> int:
    """Parser threads: 2 where the process may use two cores or more, else 1."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        cores = os.cpu_count() or 1
    return 2 if cores >= 2 else 1


def iter_netflix_chunks(
    paths: str | Path | Iterable[str | Path],
    chunk_bytes: int = DEFAULT_CHUNK_BYTES,
    threads: int | None = None,
) -> Iterator[NetflixChunk]:
    """Stream the ratings of Netflix Prize files in blocks of about ``chunk_bytes``.

    Args:
        paths: see :func:`netflix_sources` (files are read in that order).
        chunk_bytes: block size; memory use is a small multiple of it (times ``threads``).
        threads: blocks parsed at once (default :func:`default_threads`).

    Returns:
        An iterator of :class:`NetflixChunk` (raw ids, int8 ratings, int32 days).
    """
    for chunk, _ in _chunks_with_sources(netflix_sources(paths), chunk_bytes, threads):
        yield chunk


def _chunks_with_sources(
    sources: list[Path], chunk_bytes: int, threads: int | None
) -> Iterator[tuple[NetflixChunk, int]]:
    """Every non-empty chunk with the index of the file it came from (its first piece's)."""
    if chunk_bytes < 64:
        raise ValueError("chunk_bytes must be at least 64")
    threads = default_threads() if threads is None else max(1, int(threads))
    names: deque[int] = deque()

    def blocks() -> Iterator[list[_Piece]]:
        for block in _blocks(_pieces(sources, chunk_bytes), chunk_bytes):
            names.append(block[0].source)
            yield block

    carry = -1
    for chunk, lead, last, file_start in _parsed_blocks(blocks(), threads):
        name = names.popleft()
        if file_start:
            carry = -1
        if lead:
            chunk.movie[:lead] = carry  # the block before ended inside this movie
        if last != _OPEN:
            carry = last
        if len(chunk):
            yield chunk, name


def rating_lines(sources: Iterable[str | Path], movie: int,
                 customer: int) -> list[tuple[Path, int]]:
    """Where ``customer`` rated ``movie`` in Kaggle-format files: ``(file, 1-based line)`` of
    every such line, in file order. Error path only (a byte search through each file;
    members of archives are not searched)."""
    head, rating = f"{movie}:".encode(), f"\n{customer},".encode()
    found: list[tuple[Path, int]] = []
    for source in sources:
        path = Path(source)
        if not path.is_file() or path.stat().st_size == 0:
            continue
        with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mm:
            pos = mm.find(head)
            while pos >= 0:
                after = mm[pos + len(head) : pos + len(head) + 1]
                if (pos == 0 or mm[pos - 1] == 0x0A) and after in (b"\n", b"\r"):
                    nxt = mm.find(b":", pos + len(head))  # the next movie's header line
                    end = len(mm) if nxt < 0 else mm.rfind(b"\n", 0, nxt) + 1
                    hit = mm.find(rating, pos, end)
                    while hit >= 0:
                        found.append((path, mm[: hit + 1].count(b"\n") + 1))
                        hit = mm.find(rating, hit + 1, end)
                pos = mm.find(head, pos + 1)
    return found


@dataclass(frozen=True, eq=False)
class NetflixColumns:
    """Every rating of a Netflix Prize set, ids made dense, in compact arrays.

    Args:
        users: int32 dense user indices (customers by ascending raw id), shape ``(n,)``.
        items: int32 dense item indices (movies by ascending raw id), shape ``(n,)``.
        rating: int8 ratings 1..5, shape ``(n,)``.
        day: int32 days since 1970-01-01, shape ``(n,)``.
        user_raw: int64 customer id of every dense user.
        item_raw: int64 movie id of every dense item.
        sources: the files read, in order.
        source_rows: rows read from each of ``sources`` (an ``mv_`` archive counts as one).
    """

    users: np.ndarray
    items: np.ndarray
    rating: np.ndarray
    day: np.ndarray
    user_raw: np.ndarray
    item_raw: np.ndarray
    sources: list[str]
    source_rows: np.ndarray

    def __len__(self) -> int:
        return len(self.users)

    def source_of(self, row: int) -> str:
        """The file that row ``row`` was read from."""
        ends = np.cumsum(self.source_rows)
        return self.sources[int(np.searchsorted(ends, row, side="right"))]


class _Store:
    """Growable parallel columns, written block by block: no list of chunks, no concatenation.

    The capacity starts at an upper bound of the row count (bytes / shortest line), so it
    rarely grows; the pages past the rows written are never touched, so never resident.
    """

    def __init__(self, capacity: int) -> None:
        self.n = 0
        self.cols = {name: np.empty(max(capacity, 1), dtype=t) for name, t in _STORE_TYPES}

    def append(self, chunk: NetflixChunk) -> None:
        m = len(chunk)
        if self.n + m > len(self.cols["customer"]):
            size = max(self.n + m, 2 * len(self.cols["customer"]))
            for name, col in self.cols.items():
                grown = np.empty(size, dtype=col.dtype)
                grown[: self.n] = col[: self.n]
                self.cols[name] = grown
        for name, col in self.cols.items():
            col[self.n : self.n + m] = getattr(chunk, name)
        self.n += m

    def column(self, name: str) -> np.ndarray:
        return self.cols[name][: self.n]


_STORE_TYPES = (("customer", np.int32), ("movie", np.int32), ("rating", np.int8),
                ("day", np.int32))
_SHORTEST_LINE = 14  # "C,R,YYYY-MM-DD" without its newline


def _capacity(sources: list[Path]) -> int:
    total = 0
    for src in sources:
        size = src.stat().st_size
        total += size * (8 if src.name.endswith((".gz", ".tgz")) else 1) // _SHORTEST_LINE + 1
    return total


def _slices(n: int, step: int = 1 << 22) -> list[slice]:
    return [slice(a, min(a + step, n)) for a in range(0, n, step)]


def _run(threads: int, fn: Any, items: list[Any]) -> None:
    """``fn`` on every item, on ``threads`` threads (numpy work: the GIL is released)."""
    if threads <= 1 or len(items) <= 1:
        for item in items:
            fn(item)
        return
    with ThreadPoolExecutor(max_workers=threads, thread_name_prefix="ncf-map") as pool:
        for _ in pool.map(fn, items):
            pass


def _densify(raw: np.ndarray, threads: int) -> np.ndarray:
    """Replace raw ids by dense ``0..k-1`` in place (ascending raw id); return the raw ids.

    Non-negative ids of moderate size use a presence table and a lookup, in parallel
    slices; others fall back to a sort.
    """
    if not raw.size:
        return np.zeros(0, dtype=np.int64)
    top, low = int(raw.max()), int(raw.min())
    if low < 0 or top > 8 * raw.size + 1_000_000:
        rank = dense_rank(raw)
        uniques = np.empty(int(rank.max()) + 1, dtype=np.int64)
        uniques[rank] = raw
        raw[:] = rank
        return uniques
    present = np.zeros(top + 1, dtype=bool)
    parts = _slices(raw.size)

    def mark(s: slice) -> None:
        present[raw[s]] = True  # every thread writes True: no conflict

    _run(threads, mark, parts)
    uniques = np.flatnonzero(present)
    lookup = np.zeros(top + 1, dtype=raw.dtype)
    lookup[uniques] = np.arange(uniques.size, dtype=raw.dtype)

    def remap(s: slice) -> None:
        raw[s] = lookup[raw[s]]

    _run(threads, remap, parts)
    return uniques.astype(np.int64)


def read_netflix_columns(
    paths: str | Path | Iterable[str | Path],
    chunk_bytes: int = DEFAULT_CHUNK_BYTES,
    threads: int | None = None,
) -> NetflixColumns:
    """Read Netflix Prize ratings into compact columns (13 bytes per rating), ids made dense.

    Memory stays at the columns plus a few blocks: the blocks are parsed on ``threads``
    threads and copied straight into the columns, then ids are renumbered in place.

    Args:
        paths: a file, a folder, a tar archive or a list of them (see :func:`netflix_sources`).
        chunk_bytes: bytes parsed at a time.
        threads: parser threads (default :func:`default_threads`).

    Returns:
        :class:`NetflixColumns`, rows in file order.
    """
    files = netflix_sources(paths)
    threads = default_threads() if threads is None else max(1, int(threads))
    store = _Store(_capacity(files))
    sources = [str(p) for p in files]
    rows = np.zeros(len(files), dtype=np.int64)
    for chunk, source in _chunks_with_sources(files, chunk_bytes, threads):
        store.append(chunk)
        for src, k in _PIECE_ROWS.pop(id(chunk), [(source, len(chunk))]):
            rows[src] += k
    if not store.n:
        raise DataError("no ratings found", path=", ".join(sources))
    users, items = store.column("customer"), store.column("movie")
    user_raw = _densify(users, threads)
    item_raw = _densify(items, threads)
    return NetflixColumns(users, items, store.column("rating"), store.column("day"), user_raw,
                          item_raw, sources, rows)


def read_netflix(
    paths: str | Path | Iterable[str | Path],
    chunk_bytes: int = DEFAULT_CHUNK_BYTES,
    threads: int | None = None,
) -> Interactions:
    """Read Netflix Prize ratings (``combined_data_*.txt``, ``mv_*.txt``, ``training_set.tar``).

    Args:
        paths: a file, a folder, a tar archive or a list of them (see :func:`netflix_sources`).
        chunk_bytes: bytes parsed at a time.
        threads: parser threads (default :func:`default_threads`).

    Returns:
        Interactions: users are customers, items are movies, ratings 1..5, timestamps at
        midnight UTC of the rating date.
    """
    c = read_netflix_columns(paths, chunk_bytes, threads)
    threads = default_threads() if threads is None else max(1, int(threads))
    ratings = np.empty(len(c), dtype=np.float32)
    timestamps = np.empty(len(c), dtype=np.int64)

    def convert(s: slice) -> None:
        ratings[s] = c.rating[s]
        np.multiply(c.day[s], SECONDS_PER_DAY, out=timestamps[s], dtype=np.int64)

    _run(threads, convert, _slices(len(c)))
    return Interactions(
        user_ids=c.users, item_ids=c.items, ratings=ratings, timestamps=timestamps,
        n_users=len(c.user_raw), n_items=len(c.item_raw), user_raw=c.user_raw,
        item_raw=c.item_raw, meta={"format": "netflix", "sources": c.sources},
    )


def read_netflix_probe(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """Read ``probe.txt`` (a ``MovieID:`` line, then ``CustomerID`` lines).

    Returns:
        ``(movie_raw, customer_raw)``: int64 arrays, shape ``(n,)``, in file order.
    """
    data = existing(path).read_bytes()
    if not data:
        raise DataError("empty file", path=path)
    piece = _bytes_piece(str(path), data)
    buf = np.frombuffer(_PAD + piece.data, dtype=np.uint8)
    starts, ends, nl = _lines(buf)
    nonblank = ends > starts
    is_movie = (buf[ends - 1] == 58) & nonblank
    values, ok = _uints(_words(buf), starts, ends - is_movie)
    mark = np.where(is_movie, np.arange(1, len(starts) + 1), 0)
    np.maximum.accumulate(mark, out=mark)
    movie_of = np.concatenate([[-1], np.where(is_movie, values, -1)])
    movie = movie_of[mark]
    bad = np.flatnonzero(nonblank & (~ok | (movie < 0)))
    if bad.size:
        i = int(bad[0])
        text = buf[starts[i] : ends[i]].tobytes().decode("latin-1")
        reason = (
            "customer line before any 'MovieID:' line"
            if ok[i]
            else f"expected 'MovieID:' or 'CustomerID', got {text[:60]!r}"
        )
        raise DataError(reason, path=path, line=i + 1)
    rows = nonblank & ~is_movie
    return movie[rows].astype(np.int64), values[rows].astype(np.int64)
