"""Item titles and years: Netflix ``movie_titles.csv``, MovieLens ``u.item`` / ``movies.dat`` /
``movies.csv``. These files are small (tens of thousands of lines), so a Python loop is fine.
"""

from __future__ import annotations

import csv
import io
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ncf.datasets._common import existing
from ncf.errors import DataError, NcfError

TITLE_FILES = ("movie_titles.csv", "movie_titles.txt", "u.item", "movies.dat", "movies.csv")
_YEAR_IN_TITLE = re.compile(r"\(([0-9]{4})(?:[-\u2013][0-9]{0,4})?\)\s*$")
_DIGITS = re.compile(r"[0-9]+")  # ASCII only: str.isdigit() also takes "²" and other scripts


@dataclass(frozen=True, eq=False)
class Catalog:
    """Titles of items by raw id.

    Args:
        item_raw: int64 raw item ids, sorted ascending, shape ``(n,)``.
        titles: titles (numpy ``str`` array), shape ``(n,)``.
        years: int32 release years, -1 where unknown, shape ``(n,)``.
    """

    item_raw: np.ndarray
    titles: np.ndarray
    years: np.ndarray

    def __len__(self) -> int:
        return len(self.item_raw)

    def title_of(self, raw_id: Any) -> str:
        """The title of raw item id ``raw_id``; ``NcfError`` if unknown."""
        pos = int(np.searchsorted(self.item_raw, raw_id))
        if pos >= len(self.item_raw) or self.item_raw[pos] != raw_id:
            raise NcfError(f"unknown item {raw_id!r}")
        return str(self.titles[pos])


def _decode(data: bytes, encoding: str) -> str:
    if encoding == "auto":  # UTF-8 when it decodes, else ISO-8859-1 (older MovieLens files)
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError:
            return data.decode("latin-1")
    return data.decode(encoding)


def _year_of_title(title: str) -> int:
    m = _YEAR_IN_TITLE.search(title)
    return int(m.group(1)) if m else -1


def _rows(path: Path, text: str) -> list[tuple[int, str, str, int]]:
    """``(line, id text, title, year)`` per line, by file name."""
    name = path.name.lower()
    out: list[tuple[int, str, str, int]] = []
    if name.startswith("movie_titles"):  # Netflix: id,year,title (title may hold commas)
        for number, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            parts = line.split(",", 2)
            if len(parts) != 3:
                raise DataError("expected MovieID,YearOfRelease,Title", path=path, line=number)
            year = parts[1].strip()
            if year != "NULL" and not _DIGITS.fullmatch(year):
                raise DataError(
                    f"year {year!r} is neither a number nor NULL", path=path, line=number
                )
            if year != "NULL" and int(year) > 9999:
                raise DataError(f"year {year} out of range 0..9999", path=path, line=number)
            out.append((number, parts[0], parts[2], int(year) if year != "NULL" else -1))
    elif name.endswith(".csv"):  # MovieLens: movieId,title,genres with quoted titles
        reader = csv.reader(io.StringIO(text, newline=""))
        try:
            header = next(reader, [])
            if [h.strip().lower() for h in header[:2]] != ["movieid", "title"]:
                raise DataError("expected the header movieId,title,...", path=path, line=1)
            for fields in reader:
                if fields:
                    number = reader.line_num
                    if len(fields) < 2:
                        raise DataError("expected movieId,title,...", path=path, line=number)
                    out.append((number, fields[0], fields[1], _year_of_title(fields[1])))
        except csv.Error as exc:
            raise DataError(f"bad quoting ({exc})", path=path,
                            line=max(reader.line_num, 1)) from None
    else:  # u.item "id|title|date|..." or movies.dat "id::title::genres"
        sep = "|" if name.endswith(".item") else "::"
        for number, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            parts = line.split(sep)
            if len(parts) < 2:
                raise DataError(f"expected id{sep}title{sep}...", path=path, line=number)
            out.append((number, parts[0], parts[1], _year_of_title(parts[1])))
    return out


def read_titles(path: str | Path) -> Catalog:
    """Read item titles: ``movie_titles.csv``, ``u.item``, ``movies.dat`` or ``movies.csv``.

    Args:
        path: the titles file (its name tells the layout) or a folder holding one.

    Returns:
        Catalog sorted by raw id; years from the Netflix year column or the MovieLens
        "Title (1995)" suffix, -1 when unknown.
    """
    p = existing(path)
    if p.is_dir():
        found = [p / n for n in TITLE_FILES if (p / n).is_file()]
        if not found:
            raise DataError(f"no titles file ({', '.join(TITLE_FILES)}) inside", path=p)
        p = found[0]
    name = p.name.lower()
    if not (name.startswith("movie_titles") or name.endswith((".item", ".dat", ".csv"))):
        raise DataError(f"unknown titles file (expected one of {', '.join(TITLE_FILES)})", path=p)
    encoding = (
        "utf-8"
        if name.endswith(".csv") and not name.startswith("movie_titles")
        else ("latin-1" if name.startswith("movie_titles") or name.endswith(".item") else "auto")
    )
    try:
        rows = _rows(p, _decode(p.read_bytes(), encoding))
    except UnicodeDecodeError as e:
        raise DataError(f"not {encoding} text ({e.reason} at byte {e.start})", path=p) from None
    if not rows:
        raise DataError("no titles", path=p)
    ids = np.empty(len(rows), dtype=np.int64)
    for k, (number, text, _, _) in enumerate(rows):
        if not _DIGITS.fullmatch(text.strip()):
            raise DataError(f"item id {text!r} is not a non-negative integer", path=p, line=number)
        if int(text) >= 2**63:
            raise DataError(f"item id {text.strip()} out of range", path=p, line=number)
        ids[k] = int(text)
    order = np.argsort(ids, kind="stable")
    ids = ids[order]
    dup = np.flatnonzero(ids[1:] == ids[:-1])
    if dup.size:
        raise DataError(
            f"item id {ids[dup[0]]} appears twice", path=p, line=rows[order[dup[0] + 1]][0]
        )
    titles = np.array([r[2] for r in rows], dtype=str)[order]
    years = np.array([r[3] for r in rows], dtype=np.int32)[order]
    return Catalog(item_raw=ids, titles=titles, years=years)
