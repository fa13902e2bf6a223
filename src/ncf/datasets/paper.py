"""The NCF paper's files: ``NAME.train.rating``, ``NAME.test.rating``, ``NAME.test.negative``.

Rating lines are ``user \\t item \\t rating \\t timestamp`` with 0-based ids, used verbatim
(dense id == raw id); negative lines are ``(user,item) \\t neg1 \\t ... \\t negK``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ncf.datasets._common import existing, first_bad_line, int_field, locate_row
from ncf.datasets.tabular import read_numeric_columns
from ncf.errors import DataError
from ncf.interactions import Interactions
from ncf.split import Split

SUFFIXES = (".train.rating", ".test.rating", ".test.negative")


def paper_files(path: str | Path) -> tuple[Path, Path, Path]:
    """``(train, test, negative)`` paths from any of the three files, their prefix or folder.

    A folder must hold exactly one ``NAME.test.rating``. The files may not exist.
    """
    p = Path(path)
    if p.is_dir():
        found = sorted(p.glob("*.test.rating"))
        if len(found) != 1:
            raise DataError(f"expected one NAME.test.rating inside, found {len(found)}", path=p)
        p = found[0]
    name = p.name
    for suffix in SUFFIXES:
        if name.endswith(suffix):
            name = name[: -len(suffix)]
            break
    else:
        name = name[:-1] if name.endswith(".") else name
    prefix = p.with_name(name)
    if not any(Path(f"{prefix}{s}").exists() for s in SUFFIXES):
        raise DataError("no NAME.train.rating / .test.rating / .test.negative here", path=path)
    train, test, negative = (Path(f"{prefix}{s}") for s in SUFFIXES)
    return train, test, negative


def _ratings(path: Path) -> tuple[np.ndarray, ...]:
    users, items, ratings, stamps = read_numeric_columns(
        path, "\t", False, ["int", "int", "float", "int"], ["user", "item", "rating", "timestamp"]
    )
    for arr, what in ((users, "user"), (items, "item")):
        bad = np.flatnonzero((arr < 0) | (arr >= 2**31 - 1))
        if bad.size:
            raise DataError(
                f"{what} id {arr[bad[0]]} outside 0..2**31-2",
                path=path,
                line=locate_row(path, int(bad[0])),
            )
    return users, items, ratings, stamps


def read_paper_negatives(path: str | Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Read ``NAME.test.negative``.

    Returns:
        ``(users, items, negatives)``: int64 ``(n,)``, int64 ``(n,)``, int32 ``(n, k)``.
    """
    import pyarrow as pa
    import pyarrow.csv as pcsv

    path = existing(path)
    data = path.read_bytes()
    if not data.strip():
        raise DataError("empty file", path=path)
    lines = [ln for ln in data.split(b"\n", 2)[:2] if ln.strip()]
    n_fields = len(lines[0].split(b"\t")) if lines else 0
    # "(u,i)\tn1\t..." -> "u\ti\tn1\t...": bytes.replace runs in C over the whole file
    flat = data.replace(b"(", b"").replace(b")", b"").replace(b",", b"\t")
    buf = np.frombuffer(data, dtype=np.uint8)
    starts = np.concatenate([[0], np.flatnonzero(buf[:-1] == 10) + 1])
    starts = starts[(buf[starts] != 10) & (buf[starts] != 13)]
    try:
        if not ((buf[starts] == 40).all() and data.count(b"(") == data.count(b")") == len(starts)):
            raise pa.ArrowInvalid("'(user,item)' not at the start of every line")
        table = pcsv.read_csv(
            pa.BufferReader(flat),
            read_options=pcsv.ReadOptions(autogenerate_column_names=True),
            parse_options=pcsv.ParseOptions(delimiter="\t"),
        )
        cols = [c.to_numpy() for c in table.columns]
        if any(c.dtype.kind not in "iu" for c in cols) or len(cols) < 3:
            raise pa.ArrowInvalid("non-integer field")
    except pa.ArrowInvalid:
        raise first_bad_line(
            path, lambda f: _check_negative_line(f, n_fields), lambda t: t.split("\t")
        ) from None
    users, items = cols[0].astype(np.int64), cols[1].astype(np.int64)
    negatives = np.column_stack(cols[2:])
    bad = np.flatnonzero((negatives < 0).any(axis=1) | (users < 0) | (items < 0))
    if bad.size:
        raise DataError("negative id", path=path, line=locate_row(path, int(bad[0])))
    return users, items, negatives.astype(np.int32)


def _check_negative_line(fields: list[str], n_fields: int) -> str | None:
    head = fields[0]
    if not (head.startswith("(") and head.endswith(")") and head.count(",") == 1):
        return f"expected '(user,item)' first, got {head[:40]!r}"
    for text in head[1:-1].split(","):
        if (problem := int_field("id")(text)) is not None:
            return problem
    if len(fields) < 2:
        return "no negative items"
    if len(fields) != n_fields:
        return f"expected {n_fields - 1} negative items (as on line 1), got {len(fields) - 1}"
    for text in fields[1:]:
        if (problem := int_field("negative item")(text)) is not None:
            return problem
    return None


def _interactions(
    parts: tuple[np.ndarray, ...], n_users: int, n_items: int, meta: dict
) -> Interactions:
    users, items, ratings, stamps = parts
    return Interactions(
        user_ids=users.astype(np.int32),
        item_ids=items.astype(np.int32),
        ratings=ratings.astype(np.float32),
        timestamps=stamps.astype(np.int64),
        n_users=n_users,
        n_items=n_items,
        user_raw=np.arange(n_users, dtype=np.int64),
        item_raw=np.arange(n_items, dtype=np.int64),
        meta=meta,
    )


def read_paper_split(path: str | Path, require_train: bool = True) -> Split:
    """Read the paper's train / test / negative files into a :class:`~ncf.split.Split`.

    Args:
        path: any of ``NAME.train.rating``, ``NAME.test.rating``, ``NAME.test.negative``,
            the common prefix ``NAME`` or a folder with one such set.
        require_train: if ``False``, a missing ``NAME.train.rating`` gives an empty train.

    Returns:
        Split with ``train``, ``test`` (sorted by user), ``test_negatives`` int32
        ``(n_test, k)`` (row ``i`` for test row ``i``) and ``validation=None``.
        ``n_users`` / ``n_items`` are the largest id + 1 over the three files.
    """
    train_path, test_path, negative_path = paper_files(path)
    if train_path.exists():
        train = _ratings(train_path)
    elif require_train:
        raise DataError(
            "missing (pass require_train=False to read only the test files)", path=train_path
        )
    else:
        empty = np.zeros(0, dtype=np.int64)
        train = (empty, empty, np.zeros(0), empty)
    test = _ratings(existing(test_path))
    neg_users, neg_items, negatives = read_paper_negatives(negative_path)
    if len(neg_users) != len(test[0]):
        raise DataError(
            f"{len(neg_users)} lines, but {test_path.name} has {len(test[0])}", path=negative_path
        )
    mismatch = np.flatnonzero((neg_users != test[0]) | (neg_items != test[1]))
    if mismatch.size:
        i = int(mismatch[0])
        raise DataError(
            f"({neg_users[i]},{neg_items[i]}) does not match line {locate_row(test_path, i)} "
            f"of {test_path.name} ({test[0][i]},{test[1][i]})",
            path=negative_path,
            line=locate_row(negative_path, i),
        )
    order = np.argsort(test[0], kind="stable")
    test = tuple(a[order] for a in test)
    negatives = negatives[order]
    n_users = int(max(train[0].max(initial=-1), test[0].max())) + 1
    n_items = int(max(train[1].max(initial=-1), test[1].max(), negatives.max())) + 1
    sources = [str(p) for p in (train_path, test_path, negative_path) if p.exists()]
    meta = {"format": "ncf-paper", "sources": sources}
    return Split(
        train=_interactions(train, n_users, n_items, meta),
        test=_interactions(test, n_users, n_items, meta),
        validation=None,
        test_negatives=np.ascontiguousarray(negatives),
        meta={"rule": "ncf-paper files", "sources": sources},
    )
