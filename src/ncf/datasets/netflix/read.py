"""Reading Netflix Prize ratings: blocks parsed on a few threads, joined into columns.

:func:`read_netflix_columns` keeps every rating in compact columns (13 bytes a rating) with
dense ids; :func:`read_netflix` gives the :class:`~ncf.interactions.Interactions` every reader
returns; :func:`iter_netflix_chunks` streams raw ids block by block.
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ncf.arrays import dense_rank
from ncf.datasets._common import SECONDS_PER_DAY, existing
from ncf.datasets.netflix.files import PAD, Piece, blocks, bytes_piece, netflix_sources, pieces
from ncf.datasets.netflix.parse import (
    OPEN,
    Block,
    NetflixChunk,
    lines_of,
    parse_block,
    uints,
    words_of,
)
from ncf.errors import DataError
from ncf.interactions import Interactions

DEFAULT_CHUNK_BYTES = 4 << 20  # small blocks stay in cache: faster than big ones


def _parsed_blocks(groups: Iterator[list[Piece]], threads: int) -> Iterator[Block]:
    """Every block parsed, in order, on ``threads`` threads.

    numpy releases the GIL in its array operations, so blocks parse in parallel while
    this thread reads the next ones; a few blocks are in flight at most.
    """
    if threads <= 1:
        for group in groups:
            yield parse_block(group)
        return
    pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="ncf-parse")
    pending: deque[Future[Block]] = deque()
    try:
        for group in groups:
            pending.append(pool.submit(parse_block, group))
            if len(pending) > 2 * threads:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()
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
    for block in _joined_blocks(netflix_sources(paths), chunk_bytes, threads):
        yield block.chunk


def _joined_blocks(sources: list[Path], chunk_bytes: int, threads: int | None) -> Iterator[Block]:
    """Every non-empty block, its leading rows given the movie the block before left open.

    Each block carries how many of its rows came from which file (``Block.rows``): nothing is
    kept about a block once it is handed on.
    """
    if chunk_bytes < 64:
        raise ValueError("chunk_bytes must be at least 64")
    threads = default_threads() if threads is None else max(1, int(threads))
    carry = -1
    for block in _parsed_blocks(blocks(pieces(sources, chunk_bytes), chunk_bytes), threads):
        if block.file_start:
            carry = -1
        if block.lead:
            block.chunk.movie[: block.lead] = carry  # the block before ended inside this movie
        if block.last != OPEN:
            carry = block.last
        if len(block.chunk):
            yield block


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
    for block in _joined_blocks(files, chunk_bytes, threads):
        store.append(block.chunk)
        for src, k in block.rows:
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
    piece = bytes_piece(str(path), data)
    buf = np.frombuffer(PAD + bytes(piece.data), dtype=np.uint8)
    starts, ends, nl = lines_of(buf)
    nonblank = ends > starts
    is_movie = (buf[ends - 1] == 58) & nonblank
    values, ok = uints(words_of(buf), starts, ends - is_movie)
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
