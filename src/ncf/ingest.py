"""From raw files to a prepared split.

In memory (:func:`prepare_split`; :func:`load_split`, which also accepts a prepared folder)
and streamed block by block for the full Netflix Prize (:func:`prepare_netflix`); the
prepared folder is written through :mod:`ncf.storage`.
"""

from __future__ import annotations

import datetime as _dt
import inspect
import json
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from ncf import storage
from ncf.datasets import Catalog, load, read_netflix_probe, read_titles
from ncf.datasets._common import SECONDS_PER_DAY
from ncf.datasets.loader import _find_titles
from ncf.datasets.netflix import NetflixColumns, read_netflix_columns, repeated_pair_error
from ncf.errors import DataError, NcfError, about
from ncf.interactions import Interactions
from ncf.outputs import temporary_folder
from ncf.prepare import compact, deduplicate, kcore, parse_count, subsample, to_implicit
from ncf.sampling import MAX_BITSET_BYTES, KeySet, sample_candidates
from ncf.split import Split, holdout_validation, latest_rows, leave_one_out, with_negatives


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
_ROWS = 1 << 22  # rows per slice and per Parquet row group of a streamed write


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


def _subsample_rows(users: np.ndarray, n_users: int, n: int, strategy: str,
                    seed: int) -> np.ndarray | None:
    """Rows kept by :func:`ncf.prepare.subsample` (same draws), or ``None``: all of them."""
    if n <= 0:
        raise NcfError(f"n_ratings must be positive, got {n}")
    if n >= len(users):
        return None
    rng = np.random.default_rng(seed)
    if strategy == "head":
        return np.arange(n)
    if strategy == "random":
        return np.sort(rng.choice(len(users), n, replace=False))
    if strategy != "users":
        raise NcfError(f"strategy must be 'users', 'head' or 'random', got {strategy!r}")
    counts = np.bincount(users, minlength=n_users)
    order = rng.permutation(np.flatnonzero(counts))
    k = int(np.searchsorted(np.cumsum(counts[order]), n)) + 1
    chosen = np.zeros(n_users, dtype=bool)
    chosen[order[:k]] = True
    return chosen[users]


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


def _keyset(keys: np.ndarray, n_items: int) -> KeySet:
    """A :class:`KeySet` of sorted unique ``keys`` whose bitset is filled slice by slice.

    ``KeySet(keys, n_items)`` builds its bitset with temporaries as large as ``keys``
    itself (2.4 GB at 100M keys); here they stay at one slice.
    """
    ks = KeySet(keys, n_items, max_bitset_bytes=0)
    n_bits = int(keys[-1] // n_items + 1) * n_items if len(keys) else 0
    if (n_bits + 7) // 8 > MAX_BITSET_BYTES:
        return KeySet(keys, n_items)  # too large for a bitset: lookups sort and search
    bits = np.zeros((n_bits + 7) // 8, dtype=np.uint8)
    for s in _row_slices(len(keys)):
        k = keys[s]
        byte = k >> 3
        starts = np.flatnonzero(np.r_[True, byte[1:] != byte[:-1]])
        flags = np.left_shift(1, (k & 7).astype(np.uint8), dtype=np.uint8)
        bits[byte[starts]] |= np.add.reduceat(flags, starts, dtype=np.uint8)  # distinct bits
    ks.bits, ks.n_bits = bits, n_bits
    return ks


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


def _write_part(folder: Path, name: str, c: NetflixColumns, rows: np.ndarray | None,
                hashes: list[str]) -> int:
    """Write ``c``'s rows (a sorted index, a bool mask, or ``None``: all) as ``name.parquet``."""
    cols = {"user": np.int32, "item": np.int32, "rating": np.float32, "timestamp": np.int64}
    h = {col: storage.ArrayHash(f"{name}.{col}", t) for col, t in cols.items()}
    writer = None
    n = 0
    try:
        mask = rows is None or rows.dtype == bool
        for s in _row_slices(len(c)) if mask else [slice(None)]:
            pick = s if rows is None else (rows[s] if mask else rows)

            def take(a: np.ndarray, s: slice = s, pick: Any = pick) -> np.ndarray:
                return a[s][pick] if mask else a[pick]

            part = {"user": take(c.users), "item": take(c.items),
                    "rating": take(c.rating).astype(np.float32),
                    "timestamp": np.multiply(take(c.day), SECONDS_PER_DAY, dtype=np.int64)}
            table = pa.table(part)
            if writer is None:
                writer = pq.ParquetWriter(folder / f"{name}.parquet", table.schema)
            writer.write_table(table)
            for col, arr in part.items():
                h[col].update(arr)
            n += len(part["user"])
    finally:
        if writer is not None:
            writer.close()
    hashes.extend(h[col].line() for col in cols)
    return n


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
            rows = _subsample_rows(c.users, len(c.user_raw), ratings, subsample_strategy, seed)
            if rows is not None:
                c = _keep_rows(c, rows)
            sizes["subsample"] = _col_size(c)
        if not len(c):
            raise NcfError("no interaction left after filtering")
        keys = _sorted_keys(c)  # also the check that no pair repeats
        lap("check")
        n_users, n_items = len(c.user_raw), len(c.item_raw)
        if probe is None:
            split_meta: dict[str, Any] = {"method": "leave_one_out", "tie_break": tie_break,
                                          "seed": seed, "min_interactions": 3 if validation else 2,
                                          "timestamps": True}
            small = np.bincount(c.users, minlength=n_users) < (3 if validation else 2)
            skip = small[c.users] if small.any() else None
            test_rows = latest_rows(c.users, c.day, c.items, n_users, skip, tie_break, seed)
            if not len(test_rows):
                raise NcfError("no user has enough ratings: nothing to evaluate")
            held = np.zeros(len(c), dtype=bool) if skip is None else skip
            held[test_rows] = True
            val_seed = seed + 1
        else:
            split_meta = {"method": "split_by_mask", "tie_break": tie_break, "seed": seed,
                          "probe": str(Path(probe).absolute())}
            held = _probe_mask(c, keys, probe)
            test_rows = np.flatnonzero(held)
            test_rows = test_rows[np.argsort(c.users[test_rows], kind="stable")]
            train_counts = np.bincount(c.users, minlength=n_users) - np.bincount(
                c.users[test_rows], minlength=n_users)
            held |= (train_counts < 2)[c.users]
            val_seed = seed
        val_rows = None
        if validation:
            val_rows = latest_rows(c.users, c.day, c.items, n_users, held, tie_break, val_seed)
        held[:] = False
        held[test_rows] = True
        if val_rows is not None:
            held[val_rows] = True
        lap("split")
        cands: dict[str, np.ndarray] = {}
        if negatives:
            ks = _keyset(keys, n_items)
            cands["test"] = sample_candidates(c.users[test_rows], ks, n_items, n=negatives,
                                              seed=seed, user_raw=c.user_raw)
            if val_rows is not None:
                cands["validation"] = sample_candidates(c.users[val_rows], ks, n_items, n=negatives,
                                                        seed=seed + 1, user_raw=c.user_raw)
            del ks
        del keys
        lap("candidates")

    titles = _find_titles(Path(path), "netflix")
    catalog = read_titles(titles) if titles is not None else None
    with storage.writing_prepared(out):  # the lock; leftovers of a killed run removed
        tmp = temporary_folder(out)
        try:
            hashes: list[str] = []
            files: list[str] = []
            counts: dict[str, Any] = {"users": n_users, "items": n_items}
            np.logical_not(held, out=held)
            counts["train"] = _write_part(tmp, "train", c, held, hashes)
            del held
            counts["validation"] = None
            files.append("train.parquet")
            if val_rows is not None:
                counts["validation"] = _write_part(tmp, "validation", c, val_rows, hashes)
                files.append("validation.parquet")
            counts["test"] = _write_part(tmp, "test", c, test_rows, hashes)
            files.append("test.parquet")
            counts["negatives"] = negatives or None
            for part in ("test", "validation"):
                if part in cands:
                    name = f"{part}_negatives"
                    np.save(tmp / f"{name}.npy", cands[part], allow_pickle=False)
                    h = storage.ArrayHash(name, np.int32)
                    h.update(cands[part])
                    hashes.append(h.line())
                    files.append(f"{name}.npy")
            for name, raw in (("users", c.user_raw), ("items", c.item_raw)):
                np.save(tmp / f"{name}.npy", raw, allow_pickle=False)
                h = storage.ArrayHash(name, raw.dtype)
                h.update(raw)
                hashes.append(h.line())
                files.append(f"{name}.npy")
            options: dict[str, Any] = {
                "format": "netflix", "ratings": ratings, "subsample": subsample_strategy,
                "seed": seed, "threshold": threshold, "min_user_ratings": 0, "min_item_ratings": 0,
                "tie_break": tie_break, "validation": validation, "negatives": negatives,
                "probe": None if probe is None else str(probe), "sizes": sizes,
                "sources": list(c.sources),
            }
            meta = {
                "format": storage.FORMAT, "version": storage.FORMAT_VERSION,
                "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
                "counts": counts, "columns": {"rating": True, "timestamp": True},
                "options": storage.jsonable(options), "split": storage.jsonable(split_meta),
                "data": {"format": "netflix"}, "sources": storage.source_info(list(c.sources)),
                "fingerprint": storage.combine_hashes(hashes),
            }
            if catalog is not None:
                storage.write_catalog(tmp, catalog)
                files.append("catalog.parquet")
            (tmp / storage.META).write_text(json.dumps({**meta, "files": files}, indent=2,
                                                       default=storage.json_default) + "\n")
            for name in [*files, storage.META]:
                storage.fsync(tmp / name)
            storage.fsync(tmp)
            lap("write")
            storage.swap_in(tmp, out)
        except OSError as exc:
            raise NcfError(f"{out}: could not write the prepared data: "
                           f"{exc.strerror or exc}") from None
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    options["seconds"] = seconds
    return out, options


def _col_size(c: NetflixColumns) -> dict[str, int]:
    return {"ratings": len(c), "users": int(len(c.user_raw)), "items": int(len(c.item_raw))}
