"""From raw files to a prepared split.

In memory (:func:`prepare_split`; :func:`load_split`, which also accepts a prepared folder)
and streamed block by block for the full Netflix Prize (:func:`prepare_netflix`); the
prepared folder is written through :mod:`ncf.storage`.
"""

from __future__ import annotations

import inspect
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from ncf import storage
from ncf.datasets import Catalog, load, read_netflix_probe, read_titles
from ncf.datasets._common import SECONDS_PER_DAY
from ncf.datasets.loader import _find_titles
from ncf.datasets.netflix import NetflixColumns, read_netflix_columns, repeated_pair_error
from ncf.errors import DataError, NcfError, about
from ncf.interactions import Interactions
from ncf.prepare import (
    compact,
    deduplicate,
    kcore,
    parse_count,
    subsample,
    subsample_rows,
    to_implicit,
)
from ncf.sampling import KeySet
from ncf.split import (
    Split,
    held_out_candidates,
    holdout_validation,
    leave_one_out,
    leave_one_out_rows,
    mask_split_rows,
    with_negatives,
)


# ---------------------------------------------------------------------------- preparing
def _size(x: Interactions) -> dict[str, int]:
    return {"ratings": len(x), "users": int((x.user_counts() > 0).sum()),
            "items": int((x.item_counts() > 0).sum())}


def prepare_split(
    path: str | Path,
    fmt: str | None = None,
    ratings: int | str | None = None,
    subsample_strategy: str = "users",
    seed: int = 0,
    threshold: float | None = None,
    min_user_ratings: int = 0,
    min_item_ratings: int = 0,
    tie_break: str | None = None,
    validation: bool = True,
    negatives: int = 99,
) -> tuple[Split, Catalog | None, dict[str, Any]]:
    """Read a raw data set and make the evaluated leave-one-out split.

    Steps: read; keep ratings ``>= threshold`` (all when ``None``); one row per (user,
    item) pair (the latest); subsample to about ``ratings`` (whole users by default);
    the (``min_user_ratings``, ``min_item_ratings``) core; leave-one-out by time
    (validation item too, unless ``validation`` is false); ``negatives`` candidates per
    held-out row. A data set with its own split (the NCF paper's files) keeps it
    verbatim: only the validation hold-out and missing candidates are added.

    Args:
        path: a ratings file or folder (see :func:`ncf.datasets.detect_format`).
        fmt: the format, detected when ``None``.
        ratings: target number of ratings (``1000000`` or ``"1M"``), ``None`` for all.
        subsample_strategy: ``"users"``, ``"head"`` or ``"random"``.
        seed: seed of the subsample, the tie rule and the candidates.
        threshold: minimum rating of a positive.
        min_user_ratings: fewest ratings of a kept user (0: no filter).
        min_item_ratings: fewest ratings of a kept item (0: no filter).
        tie_break: ``"random"``, ``"item_desc"``, ``"item_asc"`` or ``"order"``; ``None``:
            ``"random"`` (neutral), except for data that come split (the NCF paper's files),
            whose held-out validation item follows the rule of their test item
            (``"item_desc"``, larger item id wins), so that model selection sees the
            distribution the test set has.
        validation: hold out a validation item per user.
        negatives: candidates per held-out row (0: none).

    Returns:
        ``(split, catalog or None, options)``: ``options`` records the arguments, the
        format, the sources and the sizes after each step.
    """
    if isinstance(ratings, str):
        ratings = parse_count(ratings)
    if negatives < 0:
        raise NcfError(f"negatives must be >= 0, got {negatives}")
    start = time.perf_counter()
    data = load(path, fmt)
    with about(path):  # a rule these data cannot meet names their file
        if tie_break is None:
            tie_break = "item_desc" if data.split is not None else "random"
        options: dict[str, Any] = {
            "format": data.format, "ratings": ratings, "subsample": subsample_strategy,
            "seed": seed, "threshold": threshold, "min_user_ratings": min_user_ratings,
            "min_item_ratings": min_item_ratings, "tie_break": tie_break,
            "validation": validation, "negatives": negatives,
            "sizes": {"read": _size(data.interactions)},
        }
        if data.split is not None:
            changed = [name for name, value, default in (
                ("ratings", ratings, None), ("threshold", threshold, None),
                ("min_user_ratings", min_user_ratings, 0),
                ("min_item_ratings", min_item_ratings, 0),
            ) if value != default]
            if changed:
                raise NcfError(f"{data.format} data come split already: {', '.join(changed)} "
                               "cannot be applied")
            split = data.split
            if validation:
                split = holdout_validation(split, tie_break=tie_break, seed=seed,  # type: ignore
                                           n_negatives=negatives)
        else:
            x = to_implicit(data.interactions, threshold)
            if data.format in ("netflix", "netflix-mv"):  # as prepare_netflix: no pair repeats
                _refuse_repeated_pairs(x, path, list(data.sources))
            else:
                x = deduplicate(x)
            options["sizes"]["positives"] = _size(x)
            if ratings is not None:
                x = subsample(x, ratings, subsample_strategy, seed)  # type: ignore[arg-type]
                options["sizes"]["subsample"] = _size(x)
            x = kcore(x, min_user_ratings, min_item_ratings) if (
                min_user_ratings or min_item_ratings) else compact(x)
            if len(x) == 0:
                raise NcfError("no interaction left after filtering")
            options["sizes"]["core"] = _size(x)
            split = leave_one_out(x, validation=validation, tie_break=tie_break,  # type: ignore
                                  seed=seed)
        if negatives:
            split = with_negatives(split, n=negatives, seed=seed)
    options["sources"] = list(data.sources)
    options["seconds"] = round(time.perf_counter() - start, 3)
    return split, data.catalog, options


def _refuse_repeated_pairs(x: Interactions, path: str | Path, sources: list[str]) -> None:
    keys = x.user_ids.astype(np.int64) * x.n_items + x.item_ids
    s = np.sort(keys)
    same = np.flatnonzero(s[1:] == s[:-1])
    if same.size:
        u, i = divmod(int(s[same[0]]), x.n_items)
        raise repeated_pair_error(sources, x.user_raw[u], x.item_raw[i], path)


def load_split(path: str | Path, **options: Any) -> tuple[Split, Catalog | None, dict[str, Any]]:
    """A prepared folder as saved, or a raw data set through :func:`prepare_split`.

    Args:
        path: a prepared folder (holding ``meta.json``) or anything ``prepare_split`` reads.
        **options: :func:`prepare_split` options; with a prepared folder only their
            defaults are accepted (it was made with the options in its ``meta.json``).

    Returns:
        ``(split, catalog or None, options)``.
    """
    if storage.is_prepared(path):
        defaults = inspect.signature(prepare_split).parameters
        changed = sorted(k for k, v in options.items() if k not in defaults
                         or v != defaults[k].default)
        if changed:
            raise NcfError(f"{path} is a prepared folder: {', '.join(changed)} cannot be "
                           "applied (prepare the raw data again instead)")
        prepared = storage.load_prepared(path)
        return prepared.split, prepared.catalog, dict(prepared.meta.get("options", {}))
    return prepare_split(path, **options)


# ---------------------------------------------------------------------------- streaming
_ROWS = storage.ROWS_PER_SLICE  # rows per slice of the streamed path


def _row_slices(n: int) -> list[slice]:
    return [slice(a, min(a + _ROWS, n)) for a in range(0, n, _ROWS)]


def _duplicate_error(c: NetflixColumns, key: int, n_items: int) -> DataError:
    """Name the file and line of the first repeated (customer, movie) pair."""
    u, i = divmod(key, n_items)
    rows = np.flatnonzero((c.users == u) & (c.items == i))
    return repeated_pair_error(list(c.sources), c.user_raw[u], c.item_raw[i],
                                Path(c.source_of(int(rows[0]))).parent)


def _keep_rows(c: NetflixColumns, keep: np.ndarray) -> NetflixColumns:
    """The rows ``keep`` (mask or sorted index) with users and items renumbered densely."""
    users, items = c.users[keep], c.items[keep]
    used_u = np.zeros(len(c.user_raw), dtype=bool)
    used_u[users] = True
    used_i = np.zeros(len(c.item_raw), dtype=bool)
    used_i[items] = True
    new_u = (np.cumsum(used_u) - 1).astype(np.int32)
    new_i = (np.cumsum(used_i) - 1).astype(np.int32)
    idx = np.flatnonzero(keep) if keep.dtype == bool else keep
    ends = np.cumsum(c.source_rows)
    rows = np.diff(np.searchsorted(idx, np.r_[0, ends]))
    return NetflixColumns(new_u[users], new_i[items], c.rating[keep], c.day[keep],
                          c.user_raw[used_u], c.item_raw[used_i], c.sources, rows)


def _sorted_keys(c: NetflixColumns) -> np.ndarray:
    """Sorted int64 keys ``user * n_items + item`` of every row; ``DataError`` on a repeat."""
    n_items = len(c.item_raw)
    keys = np.empty(len(c), dtype=np.int64)
    for s in _row_slices(len(c)):
        np.multiply(c.users[s], n_items, out=keys[s], dtype=np.int64)
        keys[s] += c.items[s]
    keys.sort()
    for s in _row_slices(len(c) - 1):
        same = np.flatnonzero(keys[s.start + 1 : s.stop + 1] == keys[s])
        if same.size:
            raise _duplicate_error(c, int(keys[s.start + same[0]]), n_items)
    return keys


def _probe_mask(c: NetflixColumns, keys: np.ndarray, probe: str | Path) -> np.ndarray:
    """bool per row: the ratings listed in ``probe.txt``; each must be one of the ratings."""
    movie, customer = read_netflix_probe(probe)
    if not len(movie):
        raise DataError("lists no ratings: the probe file gives the test split", path=probe)
    n_items = len(c.item_raw)
    u = np.minimum(np.searchsorted(c.user_raw, customer), len(c.user_raw) - 1)
    i = np.minimum(np.searchsorted(c.item_raw, movie), n_items - 1)
    pkeys = u * n_items + i
    pos = np.minimum(np.searchsorted(keys, pkeys), len(keys) - 1)
    bad = np.flatnonzero((c.user_raw[u] != customer) | (c.item_raw[i] != movie)
                         | (keys[pos] != pkeys))
    if bad.size:
        k = int(bad[0])
        raise DataError(f"customer {customer[k]} has no rating of movie {movie[k]} in the "
                        "ratings read", path=probe)
    ks = KeySet(np.unique(pkeys), n_items)
    mask = np.empty(len(c), dtype=bool)
    for s in _row_slices(len(c)):
        mask[s] = ks.contains(c.users[s].astype(np.int64) * n_items + c.items[s])
    return mask


def _columns_part(name: str, c: NetflixColumns, rows: np.ndarray) -> storage.Part:
    """The rows ``rows`` of ``c`` (a bool mask or sorted indices) as a part of a prepared
    folder, slice by slice (days become timestamps at midnight UTC)."""
    def slices() -> Iterator[dict[str, np.ndarray]]:
        mask = rows.dtype == bool
        for s in _row_slices(len(c)) if mask else _row_slices(len(rows)) or [slice(0, 0)]:
            pick = rows[s]

            def take(a: np.ndarray, s: slice = s, pick: np.ndarray = pick) -> np.ndarray:
                return a[s][pick] if mask else a[pick]

            yield {"user": take(c.users), "item": take(c.items), "rating": take(c.rating),
                   "timestamp": np.multiply(take(c.day), SECONDS_PER_DAY, dtype=np.int64)}
    return storage.Part(name, slices)


def prepare_netflix(
    path: str | Path,
    out_dir: str | Path,
    ratings: int | str | None = None,
    subsample_strategy: str = "users",
    seed: int = 0,
    threshold: float | None = None,
    tie_break: str | None = "random",
    validation: bool = True,
    negatives: int = 99,
    probe: str | Path | None = None,
    threads: int | None = None,
) -> tuple[Path, dict[str, Any]]:
    """Netflix Prize files to a prepared folder in bounded memory (the whole Prize: 100M).

    The same result as :func:`prepare_split` + :func:`ncf.storage.save_prepared` (same split, same
    candidates, same fingerprint), but the ratings stay in compact columns (13 bytes a
    rating) and every part is written and hashed slice by slice. A (customer, movie)
    pair read twice is an error naming the files (the Prize data hold each pair once).

    Args:
        path: ``combined_data_*.txt`` / ``mv_*.txt`` / ``training_set.tar``, or their folder.
        out_dir: the prepared folder to write (or replace).
        ratings: subsample to about this many ratings (see :func:`ncf.prepare.subsample`).
        subsample_strategy: ``"users"``, ``"head"`` or ``"random"``.
        seed: seed of the subsample, the tie rule and the candidates.
        threshold: minimum rating of a positive (``None``: every rating).
        tie_break: tie rule of the held-out items (see :func:`ncf.split.leave_one_out`).
        validation: hold out a validation item per user.
        negatives: candidates per held-out row (0: none).
        probe: a ``probe.txt``: its ratings are the test split (as in the Prize), and the
            validation item is each user's latest remaining rating.
        threads: parser threads.

    Returns:
        ``(folder, options)``; ``options["seconds"]`` has the time of each step.
    """
    tie_break = tie_break or "random"
    out = storage.check_output_dir(out_dir)
    if isinstance(ratings, str):
        ratings = parse_count(ratings)
    if negatives < 0:
        raise NcfError(f"negatives must be >= 0, got {negatives}")
    seconds: dict[str, float] = {}
    clock = time.perf_counter()

    def lap(step: str) -> None:
        nonlocal clock
        now = time.perf_counter()
        seconds[step] = round(now - clock, 3)
        clock = now

    c = read_netflix_columns(path, threads=threads)
    with about(path):  # a rule these data cannot meet names their file
        sizes = {"read": _col_size(c)}
        if threshold is not None:
            c = _keep_rows(c, c.rating >= threshold)
            sizes["positives"] = _col_size(c)
        lap("read")
        if ratings is not None:
            rows = subsample_rows(c.users, len(c.user_raw), ratings,
                                  subsample_strategy, seed)  # type: ignore[arg-type]
            if rows is not None:
                c = _keep_rows(c, rows)
            sizes["subsample"] = _col_size(c)
        if not len(c):
            raise NcfError("no interaction left after filtering")
        keys = _sorted_keys(c)  # also the check that no pair repeats
        lap("check")
        n_users, n_items = len(c.user_raw), len(c.item_raw)
        if probe is None:
            test_rows, val_rows, split_meta = leave_one_out_rows(
                c.users, c.day, c.items, n_users, validation, tie_break, seed=seed)
        else:
            test_rows, val_rows = mask_split_rows(c.users, c.day, c.items, n_users,
                                                  _probe_mask(c, keys, probe), validation,
                                                  tie_break, seed)
            split_meta = {"method": "split_by_mask", "tie_break": tie_break, "seed": seed,
                          "probe": str(Path(probe).absolute())}
        lap("split")
        cands: dict[str, np.ndarray] = {}
        if negatives:
            cands = held_out_candidates(KeySet(keys, n_items), negatives, seed,
                                        c.users[test_rows],
                                        None if val_rows is None else c.users[val_rows],
                                        c.user_raw)
        del keys
        lap("candidates")

    titles = _find_titles(Path(path), "netflix")
    catalog = read_titles(titles) if titles is not None else None
    train = np.ones(len(c), dtype=bool)
    train[test_rows] = False
    if val_rows is not None:
        train[val_rows] = False
    parts = [_columns_part("train", c, train)]
    if val_rows is not None:
        parts.append(_columns_part("validation", c, val_rows))
    parts.append(_columns_part("test", c, test_rows))
    options: dict[str, Any] = {
        "format": "netflix", "ratings": ratings, "subsample": subsample_strategy,
        "seed": seed, "threshold": threshold, "min_user_ratings": 0, "min_item_ratings": 0,
        "tie_break": tie_break, "validation": validation, "negatives": negatives,
        "probe": None if probe is None else str(probe), "sizes": sizes,
        "sources": list(c.sources),
    }
    storage.write_prepared(out, parts, cands, c.user_raw, c.item_raw, catalog, options,
                           split_meta, {"format": "netflix"}, list(c.sources))
    lap("write")
    options["seconds"] = seconds
    return out, options


def _col_size(c: NetflixColumns) -> dict[str, int]:
    return {"ratings": len(c), "users": int(len(c.user_raw)), "items": int(len(c.item_raw))}
