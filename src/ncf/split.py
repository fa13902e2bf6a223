"""Train / validation / test splits (leave-one-out) and their evaluation candidates.

Every split is vectorised: the held-out row of each user is found with one
``np.maximum.at`` pass over the times and one pass for the rows at each user's latest
time; the tie rule then sorts only those few candidates. No per-row key, no per-user loop.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field, replace
from typing import Any, Literal

import numpy as np

from ncf.errors import NcfError
from ncf.interactions import Interactions
from ncf.sampling import KeySet, sample_candidates, sorted_unique


@dataclass(frozen=True, eq=False)
class Split:
    """A leave-one-out split.

    Args:
        train: the training interactions.
        test: one held-out interaction per evaluated user, sorted by user (several per
            user for an external test set, see :func:`split_by_mask`).
        validation: one held-out interaction per user for model selection, or ``None``.
        test_negatives: int32 ``(len(test), n)`` sampled candidates (paper protocol),
            row ``i`` for ``test`` row ``i``; never an item the user interacted with.
        validation_negatives: the same for ``validation``.
        meta: how the split was made (rule, seed, options).
    """

    train: Interactions
    test: Interactions
    validation: Interactions | None = None
    test_negatives: np.ndarray | None = None
    validation_negatives: np.ndarray | None = None
    meta: dict[str, Any] = field(default_factory=dict)


TieBreak = Literal["random", "item_desc", "item_asc", "order"]
_TIE_BREAKS = ("random", "item_desc", "item_asc", "order")


_STEP = 1 << 22  # rows per slice: temporaries stay small at any size


def _check_tie_break(tie_break: str) -> None:
    if tie_break not in _TIE_BREAKS:
        raise NcfError(f"tie_break must be one of {', '.join(_TIE_BREAKS)}; got {tie_break!r}")


def latest_rows(
    users: np.ndarray,
    times: np.ndarray | None,
    items: np.ndarray,
    n_users: int,
    skip: np.ndarray | None = None,
    tie_break: str = "random",
    seed: int = 0,
) -> np.ndarray:
    """Row of each user's latest interaction, ascending by user (users without one: none).

    One ``np.maximum.at`` pass finds each user's latest time, a second pass the rows at
    that time; only those candidates (a few per user) meet the tie rule (see
    :func:`leave_one_out`; ``"order"``: the later row). Works in slices, so the memory
    beyond the inputs is a few bytes per user; no per-row key is built.

    Args:
        users: int dense user of each row, shape ``(n,)``.
        times: any integer time of each row (seconds, days), or ``None``: all rows tie.
        items: int dense item of each row (for the ``item_*`` rules).
        n_users: number of users.
        skip: bool, shape ``(n,)``: rows that may not be picked, or ``None``.
        tie_break: ``"random"``, ``"item_desc"``, ``"item_asc"`` or ``"order"``.
        seed: seed of the random rule.

    Returns:
        int64 row indices, one per user that has an eligible row, ascending by user.
    """
    _check_tie_break(tie_break)
    n = len(users)
    parts = [slice(a, min(a + _STEP, n)) for a in range(0, n, _STEP)]
    if times is None:
        times = np.zeros(n, dtype=np.int8)
    low = np.iinfo(times.dtype).min
    best = np.full(n_users, low, dtype=times.dtype)
    has = np.zeros(n_users, dtype=bool)
    for s in parts:
        t = times[s] if skip is None else np.where(skip[s], low, times[s])
        np.maximum.at(best, users[s], t)
        has[users[s] if skip is None else users[s][~skip[s]]] = True
    found = []
    for s in parts:
        u = users[s]
        hit = (times[s] == best[u]) & has[u]
        if skip is not None:
            hit &= ~skip[s]
        found.append(np.flatnonzero(hit) + s.start)
    cand = np.concatenate(found) if found else np.zeros(0, dtype=np.int64)
    cu = users[cand]
    if tie_break == "random":
        key = np.random.default_rng(seed).integers(0, 2**62, size=len(cand))
    elif tie_break == "order":
        key = np.zeros(len(cand), dtype=np.int64)
    else:
        key = items[cand].astype(np.int64)
        if tie_break == "item_asc":
            np.negative(key, out=key)
    order = np.lexsort((cand, key, cu))  # last of each user: largest key, then later row
    cu = cu[order]
    last = np.r_[cu[1:] != cu[:-1], True] if len(cu) else np.zeros(0, dtype=bool)
    return cand[order[last]].astype(np.int64)


def _user_rows(x: Interactions, skip: np.ndarray | None, tie_break: str, seed: int) -> np.ndarray:
    return latest_rows(x.user_ids, x.timestamps, x.item_ids, x.n_users, skip, tie_break, seed)


def _held_out(x: Interactions, *row_sets: np.ndarray) -> Interactions:
    keep = np.ones(len(x), dtype=bool)
    for rows in row_sets:
        keep[rows] = False
    return x.subset(keep)


def leave_one_out_rows(
    users: np.ndarray,
    times: np.ndarray | None,
    items: np.ndarray,
    n_users: int,
    validation: bool = True,
    tie_break: str = "random",
    min_interactions: int | None = None,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray | None, dict[str, Any]]:
    """The rows :func:`leave_one_out` holds out: ``(test_rows, validation_rows or None,
    meta)``, each ascending by user.

    The one rule of the in-memory path and of the streamed one (:mod:`ncf.ingest`), which
    calls it on compact columns (``times`` in any unit: days there, seconds here).
    """
    need = 3 if validation else 2
    min_interactions = need if min_interactions is None else min_interactions
    if min_interactions < need:
        raise NcfError(f"min_interactions must be >= {need} to keep a train item per user")
    _check_tie_break(tie_break)
    small = np.bincount(users, minlength=n_users) < min_interactions
    skip = small[users] if small.any() else None
    test_rows = latest_rows(users, times, items, n_users, skip, tie_break, seed)
    if not len(test_rows):
        raise NcfError(f"no user has {min_interactions} interactions: nothing to evaluate")
    val_rows = None
    if validation:
        skip = np.zeros(len(users), dtype=bool) if skip is None else skip
        skip[test_rows] = True
        val_rows = latest_rows(users, times, items, n_users, skip, tie_break, seed + 1)
    meta = {"method": "leave_one_out", "tie_break": tie_break, "seed": seed,
            "min_interactions": min_interactions, "timestamps": times is not None}
    return test_rows, val_rows, meta


def leave_one_out(
    x: Interactions,
    validation: bool = True,
    tie_break: TieBreak = "random",
    min_interactions: int | None = None,
    seed: int = 0,
) -> Split:
    """Time-based leave-one-out: each user's latest interaction is the test item.

    With ``validation``, the next latest is the validation item. Ties on the
    timestamp are broken by ``tie_break``:

    - ``"random"`` (default): seeded, neutral with respect to item popularity;
    - ``"item_desc"``: the larger item id wins, the rule of the NCF benchmark files
      (on ml-100k it favours less popular films, so lowers every model's score);
    - ``"item_asc"``: the smaller item id wins;
    - ``"order"``: the later row of the file wins.

    Without timestamps the held-out items are drawn at random (seeded). Users with
    fewer than ``min_interactions`` (default 3 with validation, 2 without) keep all
    their interactions in train and are not evaluated. Deduplicate (user, item) pairs
    first (:func:`ncf.prepare.deduplicate`): a repeated pair could land in both parts.

    Args:
        x: the interactions.
        validation: also hold out a validation item per user.
        tie_break: the rule above.
        min_interactions: fewest interactions of an evaluated user.
        seed: seed of the random tie rule.

    Returns:
        A :class:`Split` (train keeps file order; test and validation sorted by user).
    """
    test_rows, val_rows, meta = leave_one_out_rows(
        x.user_ids, x.timestamps, x.item_ids, x.n_users, validation, tie_break,
        min_interactions, seed)
    held = (test_rows,) if val_rows is None else (test_rows, val_rows)
    return Split(
        train=_held_out(x, *held),
        test=x.subset(test_rows),
        validation=None if val_rows is None else x.subset(val_rows),
        meta=meta,
    )


def mask_split_rows(
    users: np.ndarray,
    times: np.ndarray | None,
    items: np.ndarray,
    n_users: int,
    test_mask: np.ndarray,
    validation: bool = True,
    tie_break: str = "random",
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray | None]:
    """The rows :func:`split_by_mask` holds out: ``(test_rows, validation_rows or None)``
    (test rows sorted by user, file order within a user); the one rule of both paths."""
    test_rows = np.flatnonzero(test_mask)
    if not len(test_rows):
        raise NcfError("test_mask selects no interaction")
    test_rows = test_rows[np.argsort(users[test_rows], kind="stable")]
    if not validation:
        return test_rows, None
    _check_tie_break(tie_break)
    train_counts = np.bincount(users, minlength=n_users) - np.bincount(users[test_rows],
                                                                       minlength=n_users)
    skip = test_mask | (train_counts < 2)[users]
    return test_rows, latest_rows(users, times, items, n_users, skip, tie_break, seed)


def split_by_mask(
    x: Interactions,
    test_mask: np.ndarray,
    validation: bool = True,
    tie_break: TieBreak = "random",
    seed: int = 0,
) -> Split:
    """Split with an externally given test set (e.g. the Netflix probe ratings).

    A user may have several test rows: each is evaluated as its own (user, item) pair,
    the user's other items left out of the ranking. With ``validation``, each user's
    latest train interaction (ties by ``tie_break``, see :func:`leave_one_out`) is the
    validation item, for every user with at least two train interactions.

    Args:
        x: the interactions.
        test_mask: bool, shape ``(len(x),)``: the test rows.
        validation: hold out a validation item per user from train.
        tie_break: tie rule of the validation pick.
        seed: seed of the random tie rule.

    Returns:
        A :class:`Split` (test sorted by user, file order within a user).
    """
    mask = np.asarray(test_mask)
    if mask.dtype != bool or mask.shape != (len(x),):
        raise NcfError(f"test_mask must be a bool array of shape ({len(x)},)")
    test_rows, val_rows = mask_split_rows(x.user_ids, x.timestamps, x.item_ids, x.n_users,
                                          mask, validation, tie_break, seed)
    meta = {"method": "split_by_mask", "tie_break": tie_break, "seed": seed}
    held = (test_rows,) if val_rows is None else (test_rows, val_rows)
    return Split(
        train=_held_out(x, *held),
        test=x.subset(test_rows),
        validation=None if val_rows is None else x.subset(val_rows),
        meta=meta,
    )


def _all_keys(split: Split) -> np.ndarray:
    """Sorted unique keys ``user * n_items + item`` of train, validation and test."""
    parts = [split.train, split.test] + ([split.validation] if split.validation is not None else [])
    n_items = split.train.n_items
    return sorted_unique(np.concatenate(
        [p.user_ids.astype(np.int64) * n_items + p.item_ids for p in parts]
    ))


def holdout_validation(
    split: Split, tie_break: TieBreak = "random", seed: int = 0, n_negatives: int = 99
) -> Split:
    """Add a validation set to a split without one (e.g. the NCF paper's files).

    Each user's latest train interaction (ties by ``tie_break``, see
    :func:`leave_one_out`) becomes the validation item; users with a single train
    interaction keep it. Its ``n_negatives`` candidates (seeded by ``seed``; 0: none)
    avoid every train, validation and test item of the user; test negatives are kept.

    Args:
        split: a split whose ``validation`` is ``None``.
        tie_break: the tie rule.
        seed: seed of the tie rule and of the validation candidates.
        n_negatives: candidates per validation row.

    Returns:
        A new :class:`Split`.
    """
    if split.validation is not None:
        raise NcfError("the split already has a validation set")
    train = split.train
    _check_tie_break(tie_break)
    small = train.user_counts() < 2
    val_rows = _user_rows(train, small[train.user_ids] if small.any() else None, tie_break, seed)
    val = train.subset(val_rows)
    negatives = None
    if n_negatives:
        negatives = sample_candidates(val.user_ids, _all_keys(split), train.n_items,
                                      n=n_negatives, seed=seed, user_raw=train.user_raw)
    return replace(
        split,
        train=_held_out(train, val_rows),
        validation=val,
        validation_negatives=negatives,
        meta={**split.meta, "validation": {"tie_break": tie_break, "seed": seed}},
    )


def held_out_candidates(
    keys: KeySet,
    n: int,
    seed: int,
    test_users: np.ndarray | None = None,
    validation_users: np.ndarray | None = None,
    user_raw: np.ndarray | None = None,
) -> dict[str, np.ndarray]:
    """Evaluation candidates of the held-out rows: ``{"test": ..., "validation": ...}`` for
    the users given, ``n`` per row from :func:`ncf.sampling.sample_candidates`, never one of
    ``keys`` (every interaction of the user); test rows use ``seed``, validation rows
    ``seed + 1``. The one rule of :func:`with_negatives` and of the streamed path."""
    out: dict[str, np.ndarray] = {}
    for name, users, s in (("test", test_users, seed), ("validation", validation_users, seed + 1)):
        if users is not None:
            out[name] = sample_candidates(users, keys, keys.n_items, n=n, seed=s,
                                          user_raw=user_raw)
    return out


def with_negatives(split: Split, n: int = 99, seed: int = 0) -> Split:
    """Fill the missing ``test_negatives`` / ``validation_negatives`` of a split.

    ``n`` distinct candidates per row, uniform over the items the user never
    interacted with (train, validation or test), by :func:`held_out_candidates`;
    test rows use ``seed``, validation rows ``seed + 1``.

    Args:
        split: the split; negatives already present are kept.
        n: candidates per row.
        seed: the seed.

    Returns:
        A new :class:`Split`.
    """
    need_test = split.test_negatives is None
    val = split.validation
    need_val = val is not None and split.validation_negatives is None
    if not (need_test or need_val):
        return split
    found = held_out_candidates(
        KeySet(_all_keys(split), split.train.n_items), n, seed,
        test_users=split.test.user_ids if need_test else None,
        validation_users=val.user_ids if need_val and val is not None else None,
        user_raw=split.train.user_raw)
    return replace(split, test_negatives=found.get("test", split.test_negatives),
                   validation_negatives=found.get("validation", split.validation_negatives))


def split_fingerprint(split: Split) -> str:
    """A hash of everything in a split that results depend on (ids, held-out rows, candidates)."""
    h = hashlib.sha256()
    parts: list[Any] = [split.train.user_ids, split.train.item_ids, split.test.user_ids,
                        split.test.item_ids, split.test_negatives]
    if split.validation is not None:
        parts += [split.validation.user_ids, split.validation.item_ids,
                  split.validation_negatives]
    h.update(f"{split.train.n_users},{split.train.n_items}".encode())
    for p in parts:
        h.update(b"|")
        if p is None:
            continue
        flat = np.asarray(p).reshape(-1)
        h.update(str(np.asarray(p).shape).encode())
        for start in range(0, len(flat), 1 << 22):  # int64 chunks: no full copy at scale
            h.update(flat[start : start + (1 << 22)].astype(np.int64).tobytes())
    return h.hexdigest()[:16]
