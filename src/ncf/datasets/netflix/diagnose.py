"""What is wrong with a Netflix Prize file, said in one line naming the file and the line.

The parser (:mod:`ncf.datasets.netflix.parse`) only knows that a line failed a check, and
calls :func:`raise_at` (on its error path only) to say why. :func:`rating_lines` finds where
a rating repeats (a byte search through each file).
"""

from __future__ import annotations

import mmap
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any, NoReturn

import numpy as np

from ncf.datasets._common import valid_dates
from ncf.datasets.netflix.files import Piece
from ncf.datasets.netflix.parse import FIRST_YEAR, YEARS
from ncf.errors import DataError

_RATING_LINE = re.compile(r"(\d{1,8}),(\d),(\d{4})-(\d{2})-(\d{2})")


def raise_at(
    buf: np.ndarray,
    pieces: list[Piece],
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
    raise DataError(diagnose(text, has_movie), path=pieces[p].path, line=line)


def diagnose(text: str, has_movie: bool) -> str:
    shown = text if len(text) <= 60 else text[:60] + "..."
    if text.endswith(":"):
        return f"movie id {text[:-1]!r} is not an integer of 1..8 digits"
    m = _RATING_LINE.fullmatch(text)
    if m is None:
        return f"expected 'MovieID:' or 'CustomerID,Rating,YYYY-MM-DD', got {shown!r}"
    if not 1 <= int(m.group(2)) <= 5:
        return f"rating {m.group(2)} outside 1..5"
    y, mo, d = (np.array([int(g)]) for g in m.groups()[2:])
    if not (valid_dates(y, mo, d)[0] and FIRST_YEAR <= y[0] < FIRST_YEAR + YEARS):
        return f"invalid date {text.split(',')[2]!r} (or outside 1900..2099)"
    if not has_movie:
        return "rating line before any 'MovieID:' line"
    return f"cannot parse {shown!r}"  # pragma: no cover - the checks above are exhaustive



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



def repeated_pair_error(sources: Iterable[str | Path], customer: Any, movie: Any,
                        folder: str | Path) -> DataError:
    """Name the file and line of a repeated (customer, movie) pair, and where it came first."""
    at = rating_lines(sources, int(movie), int(customer))
    message = f"customer {customer} rated movie {movie} twice: the Prize data hold each pair once"
    if len(at) < 2:  # inside an archive: no line to name
        return DataError(message, path=folder)
    (first, first_line), (path, line) = at[0], at[1]
    also = f"line {first_line}" if first == path else f"{first.name}, line {first_line}"
    return DataError(f"{message} (also {also})", path=path, line=line)
