"""The NCF paper's files: ``NAME.train.rating``, ``NAME.test.rating``, ``NAME.test.negative``.

Rating lines are ``user \\t item \\t rating \\t timestamp`` with 0-based ids, used verbatim
(dense id == raw id); negative lines are ``(user,item) \\t neg1 \\t ... \\t negK``.

Ids are used as indices, so they must be integers in 0..2**31-2 and dense: the format numbers
them 0..n-1, and a set whose largest id + 1 exceeds 2 * (distinct ids) + 1000 (users and
items apart) is refused, which keeps memory linear in the size of the files whatever they
hold. The split is checked too (see :func:`read_paper_split`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ncf.datasets._common import BOM, existing, first_bad_line, int_field, locate_row
from ncf.datasets.tabular import read_numeric_columns
from ncf.errors import DataError
from ncf.interactions import Interactions
from ncf.split import Split

SUFFIXES = (".train.rating", ".test.rating", ".test.negative")
MAX_ID = 2**31 - 2  # ids are stored as int32 (and n = largest id + 1 must fit too)
DENSE_SLACK = 1_000  # refused when largest id + 1 > 2 * distinct ids + DENSE_SLACK


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
        path,
        "\t",
        False,
        ["int", "int", "float", "int"],
        ["user id", "item id", "rating", "timestamp"],
    )
    _check_range(path, ("user id", users), ("item id", items))
    return users, items, ratings, stamps


def _check_range(path: Path, *columns: tuple[str, np.ndarray]) -> None:
    """``DataError`` naming the first line whose id (any column) is outside 0..2**31-2."""
    rows = [
        (np.flatnonzero(((a < 0) | (a > MAX_ID)).reshape(len(a), -1).any(axis=1)), what, a)
        for what, a in columns
    ]
    first = min((int(r[0]) for r, _, _ in rows if r.size), default=None)
    if first is None:
        return
    for _, what, a in rows:
        values = a[first].reshape(-1)
        bad = values[(values < 0) | (values > MAX_ID)]
        if bad.size:
            raise DataError(
                f"{what} {bad[0]} out of range (ids are 0..2**31-2)",
                path=path,
                line=locate_row(path, first),
            )


def read_paper_negatives(path: str | Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Read ``NAME.test.negative``.

    Every line must be ``(user,item)`` then a TAB and the negatives, TAB-separated, the
    same number on every line; ids in 0..2**31-2.

    Returns:
        ``(users, items, negatives)``: int64 ``(n,)``, int64 ``(n,)``, int32 ``(n, k)``.
    """
    import pyarrow as pa
    import pyarrow.csv as pcsv

    path = existing(path)
    data = path.read_bytes().removeprefix(BOM)
    if not data.strip():
        raise DataError("empty file", path=path)
    lines = [ln for ln in data.split(b"\n", 2)[:2] if ln.strip()]
    n_fields = len(lines[0].split(b"\t")) if lines else 0
    buf = np.frombuffer(data, dtype=np.uint8)
    starts = np.concatenate([[0], np.flatnonzero(buf[:-1] == 10) + 1])
    starts = starts[(buf[starts] != 10) & (buf[starts] != 13)]
    try:
        # one "(", "," and ")" per line, in that order, ")" followed by a TAB: a comma
        # anywhere else would split a field in two below
        opens, commas, closes = (np.flatnonzero(buf == c) for c in b"(,)")
        if not (len(opens) == len(commas) == len(closes) == len(starts)):
            raise pa.ArrowInvalid("not one '(user,item)' per line")
        after = closes + 1
        ends = np.append(starts[1:], len(buf))
        if not (
            (opens == starts).all()
            and (commas > opens).all()
            and (closes > commas).all()
            and (after < ends).all()
            and (buf[np.minimum(after, len(buf) - 1)] == 9).all()
        ):
            raise pa.ArrowInvalid("'(user,item)' not at the start of every line")
        # "(u,i)\tn1\t..." -> "u\ti\tn1\t...": bytes.replace runs in C over the whole file
        flat = data.replace(b"(", b"").replace(b")", b"").replace(b",", b"\t")
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
    negatives = np.column_stack(cols[2:]).astype(np.int64)
    _check_range(path, ("user id", users), ("item id", items), ("negative item", negatives))
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


def _id_space(what: str, parts: list[tuple[np.ndarray, Path]]) -> int:
    """``largest id + 1`` over ``parts`` (arrays of ids, 1-D or one row per line, and their
    files), after checking that the ids are dense enough to be used as indices.

    The format numbers ids 0..n-1. Ids are used as indices (``n`` rows of embeddings, ``n``
    raw ids), so a single stray large id would allocate gigabytes: refused when
    ``largest id + 1 > 2 * distinct ids + DENSE_SLACK``, naming the line of the largest id.
    Memory stays linear in the size of the files.
    """
    parts = [(a, p) for a, p in parts if a.size]
    if not parts:
        return 0
    n = max(int(a.max()) for a, _ in parts) + 1
    total = sum(a.size for a, _ in parts)
    if n <= 2 * total + DENSE_SLACK:  # else fewer than the rule needs, even all distinct
        seen = np.zeros(n, dtype=bool)
        for a, _ in parts:
            seen[a.ravel()] = True
        if n <= 2 * int(seen.sum()) + DENSE_SLACK:
            return n
    distinct = len(np.unique(np.concatenate([a.ravel() for a, _ in parts])))
    for a, p in parts:
        if int(a.max()) == n - 1:
            row = int(np.argmax(a.ravel())) // (a.shape[1] if a.ndim == 2 else 1)
            raise DataError(
                f"{what} id {n - 1} but only {distinct:,} distinct {what} ids: this format "
                f"numbers ids 0..n-1 (refused: largest id + 1 > 2 * distinct + {DENSE_SLACK:,})",
                path=p,
                line=locate_row(p, row),
            )
    raise AssertionError("unreachable")  # pragma: no cover


def _sorted_once(keys: np.ndarray) -> tuple[np.ndarray, tuple[int, int] | None]:
    """``keys`` sorted, and ``(earlier row, later row)`` of the first row (in row order)
    whose key repeats an earlier one, ``None`` if all differ."""
    ordered = np.sort(keys)
    if not (ordered[1:] == ordered[:-1]).any():
        return ordered, None
    order = np.argsort(keys, kind="stable")  # error path: which rows
    same = np.flatnonzero(ordered[1:] == ordered[:-1])
    later = int(order[same + 1].min())
    return ordered, (int(order[np.searchsorted(ordered, keys[later])]), later)


def _member(ordered: np.ndarray, query: np.ndarray) -> np.ndarray:
    """Which of ``query`` are in the sorted array ``ordered`` (a binary search each)."""
    if not ordered.size:
        return np.zeros(query.shape, dtype=bool)
    return ordered[np.minimum(np.searchsorted(ordered, query), len(ordered) - 1)] == query


def _repeat_error(path: Path, rep: tuple[int, int], message: str,
                  rows: tuple[np.ndarray, ...]) -> DataError:
    """The error for row ``rep[1]`` repeating row ``rep[0]`` of ``path`` (user, item rows)."""
    earlier, later = rep
    text = message.format(u=rows[0][later], i=rows[1][later], l=locate_row(path, earlier))
    return DataError(text, path=path, line=locate_row(path, later))


def _check_split(
    paths: tuple[Path, Path, Path],
    train: tuple[np.ndarray, ...],
    test: tuple[np.ndarray, ...],
    negatives: np.ndarray,
    n_users: int,
    n_items: int,
    has_train: bool,
) -> None:
    """The paper's split, checked: train pairs unique; one test row per train user, not a
    train pair; negatives unique per line and never a train item of the user. Rows are in
    file order; the first violation is named by file and line.

    A negative equal to the test item is allowed: the authors' own ml-1m file has 156 such
    lines, and their evaluation (a dict of item scores) counts the item once, as
    :func:`ncf.evaluation.evaluate_sampled` does."""
    train_path, test_path, negative_path = paths
    train_keys, rep = _sorted_once(train[0] * n_items + train[1])
    if rep is not None:
        raise _repeat_error(train_path, rep, "user {u} item {i} appears twice (also line {l})",
                            train)
    _, rep = _sorted_once(test[0])
    if rep is not None:
        raise _repeat_error(test_path, rep, "a second test row for user {u} (also line {l}): "
                            "the format has one per user", test)
    in_train = np.zeros(n_users, dtype=bool)
    in_train[train[0]] = True
    for bad, message in (
        (
            ~in_train[test[0]] if has_train else np.zeros(0, dtype=bool),
            "test user {u} has no row in " + train_path.name,
        ),
        (
            _member(train_keys, test[0] * n_items + test[1]),
            "test item {i} of user {u} is also in " + train_path.name,
        ),
    ):
        if bad.any():
            row = int(np.argmax(bad))
            raise DataError(
                message.format(u=test[0][row], i=test[1][row]),
                path=test_path,
                line=locate_row(test_path, row),
            )
    negs = negatives.astype(np.int64)
    ordered = np.sort(negs, axis=1)
    repeated = np.zeros(negs.shape, dtype=bool)
    repeated[:, 1:] = ordered[:, 1:] == ordered[:, :-1]
    problems = [
        (  # sorted rows: the queries come in order when the users do (a faster search)
            ordered,
            _member(train_keys, test[0][:, None] * n_items + ordered),
            f"is one of the user's items in {train_path.name}",
        ),
        (ordered, repeated, "is repeated on the line"),
    ]
    lines = [mask.any(axis=1) for _, mask, _ in problems]
    rows = [int(np.argmax(bad)) if bad.any() else len(negs) for bad in lines]
    first = min(rows)
    for (values, mask, why), bad, row in zip(problems, lines, rows):
        if row == first < len(negs):
            more = int(bad.sum()) - 1
            raise DataError(
                f"negative item {values[row, int(np.argmax(mask[row]))]} of user "
                f"{test[0][row]} {why}" + (f" (and so on {more:,} more lines)" if more else ""),
                path=negative_path,
                line=locate_row(negative_path, row),
            )


def read_paper_split(path: str | Path, require_train: bool = True) -> Split:
    """Read the paper's train / test / negative files into a :class:`~ncf.split.Split`.

    Checked, each failure one ``DataError`` naming the file and line: ids are integers in
    0..2**31-2 and dense (see :func:`_id_space`: largest id + 1 at most 2 * distinct ids
    + 1000, per id space); train (user, item) pairs are unique; each test user has exactly
    one test row, whose item is not one of the user's train items, and (when the train file
    is there) at least one train row; each negatives line matches its test row and holds
    distinct items, none of them the test item nor a train item of the user.

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
    has_train = train_path.exists()
    if has_train:
        train = _ratings(train_path)
    elif require_train:
        raise DataError(
            f"missing: NCF paper data need it beside {test_path.name} "
            "(the test files alone hold no training data)",
            path=train_path,
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
    n_users = _id_space("user", [(train[0], train_path), (test[0], test_path)])
    n_items = _id_space(
        "item", [(train[1], train_path), (test[1], test_path), (negatives, negative_path)]
    )
    _check_split(
        (train_path, test_path, negative_path), train, test, negatives, n_users, n_items, has_train
    )
    order = np.argsort(test[0], kind="stable")
    test = tuple(a[order] for a in test)
    negatives = negatives[order]
    sources = [str(p) for p in (train_path, test_path, negative_path) if p.exists()]
    meta = {"format": "ncf-paper", "sources": sources}
    return Split(
        train=_interactions(train, n_users, n_items, meta),
        test=_interactions(test, n_users, n_items, meta),
        validation=None,
        test_negatives=np.ascontiguousarray(negatives),
        meta={"rule": "ncf-paper files", "sources": sources},
    )
