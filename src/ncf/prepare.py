"""Preparing interactions before a split: implicit feedback, duplicates, k-core, subsamples.

Every function takes and returns an :class:`~ncf.interactions.Interactions`; all are
vectorised (a loop runs only over k-core rounds).
"""

from __future__ import annotations

import re
from typing import Literal

import numpy as np

from ncf.errors import NcfError
from ncf.interactions import Interactions
from ncf.sampling import dense_rank


def to_implicit(x: Interactions, threshold: float | None = None) -> Interactions:
    """Implicit feedback: every interaction is a positive, or those rated ``>= threshold``.

    Args:
        x: the interactions; ratings are kept in the result, for information.
        threshold: minimum rating of a positive; ``None`` keeps every interaction.

    Returns:
        The positives (same id spaces; :func:`compact` drops users/items left empty).
    """
    if threshold is None:
        return x
    if x.ratings is None:
        raise NcfError("a rating threshold needs ratings; these interactions have none")
    return x.subset(x.ratings >= threshold)


def _pair_keys(x: Interactions) -> np.ndarray:
    return x.user_ids.astype(np.int64) * x.n_items + x.item_ids


def deduplicate(x: Interactions, rule: Literal["latest", "first"] = "latest") -> Interactions:
    """Keep one row per (user, item) pair.

    Args:
        x: the interactions.
        rule: ``"latest"``: the row with the latest timestamp (its rating is kept; equal
            timestamps, or no timestamps: the later row of the file); ``"first"``: the
            first row of the file.

    Returns:
        The kept rows, in their original order (``x`` itself when there is no duplicate).
    """
    if rule not in ("latest", "first"):
        raise NcfError(f"rule must be 'latest' or 'first', got {rule!r}")
    keys = _pair_keys(x)
    s = np.sort(keys)  # a plain sort first: most data sets have no duplicate at all
    if not len(s) or (s[1:] != s[:-1]).all():
        return x
    if rule == "latest" and x.timestamps is not None:
        t = x.timestamps - x.timestamps.min()
        if int(keys.max()).bit_length() + int(t.max()).bit_length() > 62:
            t = dense_rank(t)
        shift = max(1, int(t.max()).bit_length())
        if int(keys.max()).bit_length() + shift <= 62:
            keys = (keys << shift) | t  # pair, then time; the stable sort keeps file order
            order = np.argsort(keys, kind="stable")
            group = keys[order] >> shift
        else:
            order = np.lexsort((t, keys))
            group = keys[order]
    else:
        order = np.argsort(keys, kind="stable")  # file order within a pair
        group = keys[order]
    new_group = group[1:] != group[:-1]
    keep = np.r_[True, new_group] if rule == "first" else np.r_[new_group, True]
    return x.subset(np.sort(order[keep]))


def compact(x: Interactions) -> Interactions:
    """Drop users and items without interactions and renumber the rest densely.

    ``user_raw`` / ``item_raw`` keep their ascending order (a dense id keeps its rank).
    """
    used_u = x.user_counts() > 0
    used_i = x.item_counts() > 0
    if used_u.all() and used_i.all():
        return x
    new_u = np.cumsum(used_u, dtype=np.int64) - 1
    new_i = np.cumsum(used_i, dtype=np.int64) - 1
    return Interactions(
        user_ids=new_u[x.user_ids].astype(np.int32),
        item_ids=new_i[x.item_ids].astype(np.int32),
        ratings=x.ratings,
        timestamps=x.timestamps,
        n_users=int(used_u.sum()),
        n_items=int(used_i.sum()),
        user_raw=x.user_raw[used_u],
        item_raw=x.item_raw[used_i],
        meta=x.meta,
    )


def kcore(x: Interactions, min_user: int = 5, min_item: int = 5) -> Interactions:
    """The k-core: drop users with fewer than ``min_user`` and items with fewer than
    ``min_item`` interactions, repeatedly until both hold, then :func:`compact`.

    Rows are counted (deduplicate first to count distinct pairs). The result may be
    empty when no such core exists.
    """
    if min_user < 0 or min_item < 0:
        raise NcfError("min_user and min_item must be >= 0")
    keep = np.ones(len(x), dtype=bool)
    while True:
        u, i = x.user_ids[keep], x.item_ids[keep]
        ok_u = np.bincount(u, minlength=x.n_users) >= min_user
        ok_i = np.bincount(i, minlength=x.n_items) >= min_item
        drop = ~(ok_u[u] & ok_i[i])
        if not drop.any():
            break
        keep[np.flatnonzero(keep)[drop]] = False
    return compact(x.subset(keep))


def subsample_rows(
    users: np.ndarray,
    n_users: int,
    n_ratings: int,
    strategy: Literal["users", "head", "random"] = "users",
    seed: int = 0,
) -> np.ndarray | None:
    """The rows :func:`subsample` keeps, for rows whose dense users are ``users``: a bool
    mask (``"users"``) or sorted row indices, or ``None`` when every row is kept.

    The one rule of both the in-memory path (:func:`subsample`) and the streamed one
    (:func:`ncf.ingest.prepare_netflix`), so they keep the same rows for a seed.
    """
    if n_ratings <= 0:
        raise NcfError(f"n_ratings must be positive, got {n_ratings}")
    if n_ratings >= len(users):
        return None
    rng = np.random.default_rng(seed)
    if strategy == "head":
        return np.arange(n_ratings)
    if strategy == "random":
        return np.sort(rng.choice(len(users), n_ratings, replace=False))
    if strategy != "users":
        raise NcfError(f"strategy must be 'users', 'head' or 'random', got {strategy!r}")
    counts = np.bincount(users, minlength=n_users)
    order = rng.permutation(np.flatnonzero(counts))
    k = int(np.searchsorted(np.cumsum(counts[order]), n_ratings)) + 1
    chosen = np.zeros(n_users, dtype=bool)
    chosen[order[:k]] = True
    return chosen[users]


def subsample(
    x: Interactions,
    n_ratings: int,
    strategy: Literal["users", "head", "random"] = "users",
    seed: int = 0,
) -> Interactions:
    """A smaller data set of about ``n_ratings`` interactions, compacted.

    Strategies:

    - ``"users"`` (default): whole users in a seeded random order until ``n_ratings``
      is reached; the last user drawn is kept whole and may push it over, so the
      size is at least ``n_ratings`` and below ``n_ratings`` plus that user's
      count. Complete per-user histories keep leave-one-out meaningful (the test
      item is still the user's real latest interaction);
    - ``"head"``: the first ``n_ratings`` rows in file order;
    - ``"random"``: ``n_ratings`` rows uniformly without replacement (file order kept).

    With ``n_ratings >= len(x)`` every interaction is kept. Deterministic for a seed
    (the rows are :func:`subsample_rows`').

    Args:
        x: the interactions.
        n_ratings: the target size (> 0).
        strategy: one of the above.
        seed: seed of ``"users"`` and ``"random"``.

    Returns:
        The compacted subsample.
    """
    rows = subsample_rows(x.user_ids, x.n_users, n_ratings, strategy, seed)
    return compact(x if rows is None else x.subset(rows))


_SUFFIX = {"": 1, "k": 10**3, "m": 10**6, "g": 10**9, "b": 10**9}


def parse_count(text: str | int) -> int:
    """A count written ``"100000"``, ``"10k"``, ``"1.5M"``, ``"100M"`` or ``"1G"`` -> int.

    Suffixes (any case): k = 10**3, M = 10**6, G or B = 10**9; ``_`` and ``,`` are
    ignored. Raises :class:`NcfError` for anything else, negatives, or fractions.
    """
    if isinstance(text, (int, np.integer)) and not isinstance(text, bool):
        value = int(text)
        if value < 0:
            raise NcfError(f"count must be >= 0, got {value}")
        return value
    match = re.fullmatch(r"\s*(\d+(?:\.\d*)?|\.\d+)\s*([kmgb]?)\s*", str(text).replace("_", "")
                         .replace(",", "").lower())
    if match is None:
        raise NcfError(f"not a count: {text!r} (expected e.g. 100000, 10k, 1.5M, 100M)")
    number, suffix = match.groups()
    whole, _, frac = number.partition(".")
    scale = _SUFFIX[suffix]
    frac = frac.rstrip("0")
    if int(frac or 0) * scale % 10 ** len(frac):
        raise NcfError(f"not a whole count: {text!r}")
    return int(whole or 0) * scale + int(frac or 0) * scale // 10 ** len(frac)
