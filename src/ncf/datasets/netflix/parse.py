"""The byte-level parser of Netflix Prize rating lines: numpy alone, no per-line Python.

A block of whole lines is parsed at once: newline positions first, then fixed offsets back
from every line end (the tail ``,R,YYYY-MM-DD`` is 13 bytes). Eight bytes are read at once as
a little-endian uint64 (byte k = k-th character), and checked / converted with SWAR
arithmetic: one pass over the lines per operation. A line that fails a check is handed to
:mod:`ncf.datasets.netflix.diagnose`, which names the file, the line and the reason.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from ncf.datasets._common import days_from_civil, valid_dates
from ncf.datasets.netflix.files import PAD, Piece

TAIL = 13  # ",R,YYYY-MM-DD"
OPEN = -2  # movie of the rows before a block's first movie line: the previous block's


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



@dataclass(frozen=True, eq=False)
class Block:
    """A parsed block: its ratings, how they join the blocks around it, and their files.

    Args:
        chunk: the ratings (raw ids).
        lead: rows before the first ``MovieID:`` line (their movie is the previous block's).
        last: the movie still open at the end of the block (``OPEN``: none).
        file_start: the block starts a file.
        rows: ``(source, rows)`` of each piece: how many ratings came from which file.
    """

    chunk: NetflixChunk
    lead: int
    last: int
    file_start: bool
    rows: list[tuple[int, int]]


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
FIRST_YEAR, YEARS = 1900, 200
_NO_DATE = np.iinfo(np.int32).min
_DAYS_TABLE: np.ndarray | None = None


def lines_of(buf: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(starts, ends, newlines)`` of every line after the pad; ends exclude ``\\r``."""
    nl = np.flatnonzero(buf[len(PAD) :] == 10) + len(PAD)
    starts = np.empty_like(nl)
    starts[0] = len(PAD)
    starts[1:] = nl[:-1] + 1
    ends = nl - (buf[nl - 1] == 13)
    return starts, ends, nl


def words_of(buf: np.ndarray) -> np.ndarray:
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


def uints(
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
        key = np.arange(YEARS * 416 + 1)
        year, month, day = key // 416 + FIRST_YEAR, key % 416 // 32, key % 32
        ok = valid_dates(year, month, day) & (key < YEARS * 416)
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
    key = (year - FIRST_YEAR) * 416 + month * 32 + day
    np.clip(key, 0, YEARS * 416, out=key)
    days = _days_table()[key]
    ok &= days != _NO_DATE
    customer, ok_customer = uints(words, starts, ends - TAIL)
    return customer, rating, days, ok & ok_customer



def parse_block(pieces: list[Piece]) -> Block:
    """Parse one block, independently of the others (so blocks can be parsed in parallel).

    The rows before the block's first ``MovieID:`` line (``lead`` of them, unless the block
    starts a file) carry movie ``OPEN`` until the caller fills in the previous block's open
    movie; ``last`` is the movie open at the end of the block (``OPEN`` if the block holds no
    movie line).
    """
    if len(pieces) == 1 and pieces[0].padded is not None:
        buf = pieces[0].padded
    else:
        buf = np.frombuffer(b"".join([PAD, *(bytes(p.data) for p in pieces)]), dtype=np.uint8)
    words = words_of(buf)
    starts, ends, nl = lines_of(buf)
    nonblank = ends > starts
    is_movie = (buf[ends - 1] == 58) & nonblank  # ':'
    m_idx = np.flatnonzero(is_movie)
    r_idx = np.flatnonzero(nonblank & ~is_movie)  # blank lines are skipped
    movie_ids, ok_movie = uints(words, starts[m_idx], ends[m_idx] - 1)
    customer, rating, day, ok = _parse_ratings(words, starts[r_idx], ends[r_idx])

    # movie id of every line: the last movie line at or above it, reset at each file start
    piece_starts = np.cumsum([len(PAD)] + [len(p.data) for p in pieces])[:-1]
    resets = np.searchsorted(starts, piece_starts[[p.file_start for p in pieces]])
    movie_of = np.full(len(starts) + 1, -1, dtype=np.int32)
    movie_of[0] = -1 if pieces[0].file_start else OPEN
    movie_of[m_idx + 1] = movie_ids
    mark = np.zeros(len(starts), dtype=np.int32 if len(starts) < 2**31 - 1 else np.int64)
    mark[resets] = resets + 1
    mark[m_idx] = m_idx + 1
    np.maximum.accumulate(mark, out=mark)
    movie = movie_of[mark[r_idx]]

    if not (ok.all() and ok_movie.all() and (movie != -1).all()):
        i = int(np.concatenate([r_idx[~ok | (movie == -1)], m_idx[~ok_movie]]).min())
        has_movie = bool(movie_of[mark[i]] != -1)
        from ncf.datasets.netflix.diagnose import raise_at  # the error path only

        raise_at(buf, pieces, piece_starts, (starts, ends, nl), i, has_movie)
    lead = int(np.searchsorted(r_idx, m_idx[0])) if len(m_idx) else len(r_idx)
    if pieces[0].file_start:
        lead = 0
    last = int(movie_of[mark[-1]]) if len(mark) else OPEN
    chunk = NetflixChunk(movie, customer, rating, day)
    if len(pieces) > 1:  # rows of each piece: which file each row comes from
        of_piece = np.searchsorted(piece_starts, starts[r_idx], side="right") - 1
        counts = np.bincount(of_piece, minlength=len(pieces))
        rows = [(p.source, int(k)) for p, k in zip(pieces, counts, strict=True)]
    else:
        rows = [(pieces[0].source, len(chunk))]
    return Block(chunk, lead, last, pieces[0].file_start, rows)
