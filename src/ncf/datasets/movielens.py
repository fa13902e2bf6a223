"""MovieLens ratings: 100K ``u.data``, 1M / 10M ``ratings.dat``, 20M / 25M ``ratings.csv``."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from ncf.datasets._common import BOM, existing, locate_row
from ncf.datasets.tabular import read_numeric_columns
from ncf.errors import DataError
from ncf.interactions import Interactions

_ML100K = re.compile(r"u\.data|u\d\.(base|test)|u[ab]\.(base|test)")
_NAMES = ["user", "item", "rating", "timestamp"]
_KINDS = ["int", "int", "float", "int"]


def movielens_file(path: str | Path) -> Path:
    """The ratings file of a MovieLens folder (or ``path`` itself when it is a file)."""
    p = existing(path)
    if p.is_file():
        return p
    for name in ("u.data", "ratings.dat", "ratings.csv"):
        if (p / name).is_file():
            return p / name
    raise DataError("no u.data, ratings.dat or ratings.csv inside", path=p)


def movielens_flavour(path: str | Path) -> str:
    """The layout from the file name: ``"ml-100k"``, ``"ml-dat"`` or ``"ml-csv"``."""
    name = Path(path).name
    if _ML100K.fullmatch(name):
        return "ml-100k"
    if name.endswith(".dat"):
        return "ml-dat"
    if name.endswith(".csv"):
        return "ml-csv"
    raise DataError(
        "not a MovieLens ratings file name (u.data, ratings.dat, ratings.csv)", path=path
    )


def read_movielens(path: str | Path) -> Interactions:
    """Read MovieLens ratings: a folder or its ``u.data`` / ``ratings.dat`` / ``ratings.csv``.

    Args:
        path: the ratings file or the folder holding it.

    Returns:
        Interactions with ratings (0.5..5) and Unix-second timestamps.
    """
    p = movielens_file(path)
    flavour = movielens_flavour(p)
    header = flavour == "ml-csv"
    if header:
        with open(p, "rb") as f:
            first = f.readline().removeprefix(BOM).decode("latin-1").strip().lower().split(",")
        if first[:4] != ["userid", "movieid", "rating", "timestamp"]:
            raise DataError("expected the header userId,movieId,rating,timestamp", path=p, line=1)
    delimiter = {"ml-100k": "\t", "ml-dat": "::", "ml-csv": ","}[flavour]
    users, items, ratings, stamps = read_numeric_columns(p, delimiter, header, _KINDS, _NAMES)
    bad = np.flatnonzero((ratings < 0.5) | (ratings > 5))
    if bad.size:
        raise DataError(
            f"rating {ratings[bad[0]]:g} outside 0.5..5",
            path=p,
            line=locate_row(p, int(bad[0]), int(header)),
        )
    return Interactions.from_raw(
        users,
        items,
        ratings.astype(np.float32),
        stamps,
        meta={"format": flavour, "sources": [str(p)]},
    )
