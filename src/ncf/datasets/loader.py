"""One entry point: tell a data set's format from its path, read it, find its titles."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ncf.datasets._common import BOM, existing
from ncf.datasets.movielens import read_movielens
from ncf.datasets.netflix import netflix_sources, read_netflix
from ncf.datasets.paper import SUFFIXES, read_paper_split
from ncf.datasets.tabular import read_table, table_columns
from ncf.datasets.titles import Catalog, read_titles
from ncf.errors import DataError
from ncf.interactions import Interactions
from ncf.split import Split

FORMATS = ("netflix", "netflix-mv", "ml-100k", "ml-dat", "ml-csv", "ncf-paper", "table")
_TITLES = {
    "netflix": ("movie_titles.csv", "movie_titles.txt"),
    "netflix-mv": ("movie_titles.csv", "movie_titles.txt"),
    "ml-100k": ("u.item",),
    "ml-dat": ("movies.dat",),
    "ml-csv": ("movies.csv",),
}
_BY_NAME = [
    (re.compile(r"combined_data_\d+\.txt"), "netflix"),
    (re.compile(r"mv_\d+\.txt|training_set\.tar|.*\.tar"), "netflix-mv"),
    (re.compile(r"u\.data|u\d\.(base|test)|u[ab]\.(base|test)"), "ml-100k"),
    (re.compile(r"ratings\.dat"), "ml-dat"),
    (re.compile(r"ratings\.csv"), "ml-csv"),
    (re.compile(r".+\.(train\.rating|test\.rating|test\.negative)"), "ncf-paper"),
    (re.compile(r".+\.(parquet|pq)"), "table"),
]
_BY_CONTENT = [
    (re.compile(r"\d+:\r?\n\d+,[1-5],\d{4}-\d\d-\d\d\r?\n"), "netflix"),
    (re.compile(r"\d+::\d+::[\d.]+::\d+\r?\n"), "ml-dat"),
    (re.compile(r"userId,movieId,rating,timestamp\r?\n", re.IGNORECASE), "ml-csv"),
    (re.compile(r"\(\d+,\d+\)(\t\d+)+\r?\n"), "ncf-paper"),
]
_USER_NAMES = ("user", "userid", "user_id", "customer", "customerid", "customer_id")
_ITEM_NAMES = ("item", "itemid", "item_id", "movie", "movieid", "movie_id")
_RATING_NAMES = ("rating", "ratings", "score")
_TIME_NAMES = ("timestamp", "time", "date", "datetime", "ts")


@dataclass(frozen=True, eq=False)
class Dataset:
    """What :func:`load` returns.

    Args:
        interactions: every rating read (for ``ncf-paper``: train + test).
        split: the data set's own split (``ncf-paper`` only), else ``None``.
        catalog: titles found beside the ratings, else ``None``.
        format: one of :data:`FORMATS`.
        sources: the files read.
    """

    interactions: Interactions
    split: Split | None
    catalog: Catalog | None
    format: str
    sources: list[str] = field(default_factory=list)


def _folder_formats(p: Path) -> list[str]:
    found = []
    if any(p.glob("combined_data_*.txt")):
        found.append("netflix")
    if (
        any(p.glob("mv_*.txt"))
        or (p / "training_set").is_dir()
        or (p / "training_set.tar").exists()
    ):
        found.append("netflix-mv")
    for name, fmt in (("u.data", "ml-100k"), ("ratings.dat", "ml-dat"), ("ratings.csv", "ml-csv")):
        if (p / name).is_file():
            found.append(_csv_flavour(p / name) if fmt == "ml-csv" else fmt)
    if any(p.glob("*.test.rating")):
        found.append("ncf-paper")
    return found


def _csv_flavour(p: Path) -> str:
    """``ml-csv`` for a ``ratings.csv`` with MovieLens's header (``userId,movieId,...``),
    ``table`` for one whose header names its user and item columns otherwise (e.g.
    ``user,item,rating``); anything else stays ``ml-csv``, whose reader says what it expected."""
    try:
        with open(p, "rb") as f:
            first = f.readline(4096).removeprefix(BOM).decode("latin-1").strip().lower()
    except OSError:
        return "ml-csv"  # the reader names the problem
    names = first.split(",")
    if names[:2] == ["userid", "movieid"]:
        return "ml-csv"
    if _guess(names, _USER_NAMES) and _guess(names, _ITEM_NAMES):
        return "table"
    return "ml-csv"


def _table_file(p: Path) -> Path:
    """The file a ``table`` path names: the path itself, or a folder's ``ratings.csv``."""
    return p / "ratings.csv" if p.is_dir() else p


def _is_paper_prefix(p: Path) -> bool:
    return not p.exists() and any(Path(f"{p}{s}").exists() for s in SUFFIXES)


def detect_format(path: str | Path) -> str:
    """The format of a data file or folder: one of :data:`FORMATS`.

    Decided by file names first, then by the first bytes of a file.
    ``DataError`` naming the path if it is missing or the format cannot be told.
    """
    if _is_paper_prefix(Path(path)):
        return "ncf-paper"
    p = existing(path)
    if p.is_dir():
        found = _folder_formats(p)
        if len(found) != 1:
            what = "ambiguous: " + ", ".join(found) if found else "no ratings file found"
            raise DataError(f"cannot tell the data format ({what})", path=p)
        return found[0]
    for pattern, fmt in _BY_NAME:
        if pattern.fullmatch(p.name):
            return _csv_flavour(p) if fmt == "ml-csv" else fmt
    with open(p, "rb") as f:
        head = f.read(4096)
    if not head:
        raise DataError("empty file", path=p)
    text = head.decode("latin-1")
    for pattern, fmt in _BY_CONTENT:
        if pattern.match(text):
            return fmt
    lines = [ln for ln in text.splitlines()[:5] if ln.strip()]
    if b"\0" not in head and len(lines) >= 2:
        for delim in (",", "\t", ";", "|"):
            counts = {ln.count(delim) for ln in lines[:-1]}  # the last may be cut
            if len(counts) == 1 and counts.pop() >= 1:
                return "table"
    raise DataError(
        f"cannot tell the data format (give it with --format: {', '.join(FORMATS)})", path=p
    )


def _find_titles(p: Path, fmt: str) -> Path | None:
    folder = p if p.is_dir() else p.parent
    for where in (folder, folder.parent):
        for name in _TITLES.get(fmt, ()):
            if (where / name).is_file():
                return where / name
    return None


def _guess(names: list[str], candidates: tuple[str, ...]) -> str | None:
    for n in names:
        if n.strip().lower() in candidates:
            return n
    return None


def _load_table(p: Path, options: dict[str, Any]) -> Interactions:
    if "user_col" not in options or "item_col" not in options:
        if not options.get("header", True):
            raise DataError(
                "a table without a header line: add one naming the columns "
                "(e.g. user,item,rating,timestamp)",
                path=p,
            )
        names = table_columns(p, options.get("delimiter"))
        guesses = {
            "user_col": _guess(names, _USER_NAMES),
            "item_col": _guess(names, _ITEM_NAMES),
            "rating_col": _guess(names, _RATING_NAMES),
            "timestamp_col": _guess(names, _TIME_NAMES),
        }
        for key, known in (("user_col", _USER_NAMES), ("item_col", _ITEM_NAMES)):
            if key not in options and guesses[key] is None:
                raise DataError(
                    f"cannot tell the {key[:-4]} column from the header ({','.join(names)}): "
                    f"name it one of {', '.join(known)}",
                    path=p,
                    line=None if p.suffix.lower() in (".parquet", ".pq") else 1,
                )
        options = {**{k: v for k, v in guesses.items() if v is not None}, **options}
    return read_table(p, **options)


def resolve_format(path: str | Path, fmt: str | None = None) -> str:
    """The format to read ``path`` with: ``fmt`` if given and not contradicted by what the
    path holds (any delimited file may be read as a ``table``), else the detected one."""
    if fmt is None:
        return detect_format(path)
    if fmt not in FORMATS:
        raise DataError(f"unknown format {fmt!r} (known: {', '.join(FORMATS)})", path=path)
    if fmt != "table":
        try:
            found = detect_format(path)
        except DataError:
            found = fmt  # nothing to tell: the reader of the forced format decides
        if found != fmt:
            raise DataError(f"holds {found} data, not {fmt} (--format {found}, or leave "
                            "--format out)", path=path)
    return fmt


def load(
    path: str | Path, fmt: str | None = None, *, require_train: bool = True, **options: Any
) -> Dataset:
    """Read any supported data set.

    Args:
        path: a ratings file or a folder (see :func:`detect_format`).
        fmt: one of :data:`FORMATS`; detected when ``None``.
        require_train: ``ncf-paper`` only (ignored for the others, which have no train
            file): if ``False``, the test files without their ``NAME.train.rating`` give
            an empty train (fine to inspect them, not to train on).
        **options: passed to the format's reader (e.g. ``user_col=`` / ``item_col=`` for
            ``table``; guessed from a header when omitted).

    Returns:
        Dataset; ``interactions.meta`` holds the format and the source files.
    """
    p = Path(path)
    if not _is_paper_prefix(p):
        existing(p)
    fmt = resolve_format(p, fmt)
    split = None
    if fmt in ("netflix", "netflix-mv"):
        x = read_netflix(p, **options)
        sources = [str(s) for s in netflix_sources(p)]
    elif fmt in ("ml-100k", "ml-dat", "ml-csv"):
        x = read_movielens(p, **options)
        sources = list(x.meta["sources"])
    elif fmt == "ncf-paper":
        split = read_paper_split(p, require_train=require_train, **options)
        x = split.train.concat(split.test)
        sources = list(split.meta["sources"])
    else:
        p = _table_file(p)
        x = _load_table(p, options)
        sources = [str(p)]
    titles = _find_titles(p, fmt)
    catalog = read_titles(titles) if titles is not None else None
    x = x.with_arrays(meta={**x.meta, "format": fmt, "sources": sources})  # type: ignore[arg-type]
    return Dataset(x, split, catalog, fmt, sources)


__all__ = ["FORMATS", "Dataset", "detect_format", "load", "resolve_format"]
