"""Negative sampling: training negatives (with replacement) and evaluation candidates.

A (user, item) pair is one int64 key ``user * n_items + item``
(:meth:`ncf.interactions.Interactions.keys`). Membership of millions of keys is tested
in bulk by :class:`KeySet`: a bitset of ``n_users * n_items`` bits when it fits
(Netflix: 480k x 17,770 -> 1.07 GB; a lookup is one gather, about 40x faster than
``np.searchsorted`` on random queries), otherwise a sort-then-search over the keys.
"""

from __future__ import annotations

import numpy as np

from ncf.arrays import dense_rank, sorted_unique
from ncf.errors import NcfError

#: largest bitset :class:`KeySet` builds (bytes); beyond it lookups sort and search.
MAX_BITSET_BYTES = 2**31

_CHUNK = 2**20  # entries per chunk: temporaries stay small (fewer page faults, faster)
_BUILD_KEYS = 2**22  # keys per slice when a bitset is built


class KeySet:
    """A set of sorted unique int64 keys ``user * n_items + item`` with bulk lookups.

    Args:
        keys: sorted unique int64 keys, shape ``(n,)`` (kept by reference).
        n_items: number of items in the key space.
        max_bitset_bytes: use a dense bitset when it needs at most this many bytes.

    Build one per training run and pass it to :func:`sample_negatives` every epoch:
    building costs one pass over the keys.
    """

    def __init__(
        self, keys: np.ndarray, n_items: int, max_bitset_bytes: int = MAX_BITSET_BYTES
    ) -> None:
        if n_items <= 0:
            raise NcfError(f"n_items must be positive, got {n_items}")
        keys = np.asarray(keys)
        if keys.ndim != 1 or (keys.size and keys.dtype.kind not in "iu"):
            raise NcfError("keys must be a one-dimensional integer array")
        keys = keys.astype(np.int64, copy=False)
        if keys.size and (keys[0] < 0 or bool(np.any(keys[1:] <= keys[:-1]))):
            raise NcfError("keys must be sorted, unique and non-negative (Interactions.keys())")
        self.keys = keys
        self.n_items = int(n_items)
        self.n_bits = int(keys[-1] // n_items + 1) * self.n_items if keys.size else 0
        self.bits: np.ndarray | None = None
        if (self.n_bits + 7) // 8 <= max_bitset_bytes:
            self.bits = np.zeros((self.n_bits + 7) // 8, dtype=np.uint8)
            # slice by slice: the temporaries stay small at any size (100M keys: 2.4 GB at once)
            for start in range(0, keys.size, _BUILD_KEYS):
                k = keys[start : start + _BUILD_KEYS]
                byte = k >> 3
                starts = np.flatnonzero(np.r_[True, byte[1:] != byte[:-1]])
                # keys are unique, so the bits of one byte are distinct: their sum is their OR
                flags = np.left_shift(1, (k & 7).astype(np.uint8), dtype=np.uint8)
                # a byte cut by a slice boundary gets the bits of both slices
                self.bits[byte[starts]] |= np.add.reduceat(flags, starts, dtype=np.uint8)

    def __len__(self) -> int:
        return len(self.keys)

    def contains(self, query: np.ndarray) -> np.ndarray:
        """Membership of each non-negative int64 key of ``query``: bool, same shape."""
        q = np.asarray(query, dtype=np.int64)
        if not len(self.keys):
            return np.zeros(q.shape, dtype=bool)
        if self.bits is not None:
            if not q.size or q.max() < self.n_bits:
                return ((self.bits[q >> 3] >> (q & 7).astype(np.uint8)) & 1).view(bool)
            inside = q < self.n_bits
            safe = np.where(inside, q, 0)
            hit = (self.bits[safe >> 3] >> (safe & 7).astype(np.uint8)) & 1
            return hit.view(bool) & inside
        flat = q.reshape(-1)
        order = np.argsort(flat)  # sorted queries make searchsorted cache-friendly
        qs = flat[order]
        pos = np.minimum(np.searchsorted(self.keys, qs), len(self.keys) - 1)
        hit = np.empty(flat.size, dtype=bool)
        hit[order] = self.keys[pos] == qs
        return hit.reshape(q.shape)

    def counts(self, users: np.ndarray) -> np.ndarray:
        """Number of keys of each user, shape ``(len(users),)`` int64."""
        u = np.asarray(users, dtype=np.int64)
        lo = np.searchsorted(self.keys, u * self.n_items)
        return np.searchsorted(self.keys, (u + 1) * self.n_items) - lo

    def items_of(self, users: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Items of each user, concatenated: ``(offsets (len(users) + 1,), items (total,))``.

        The items of ``users[i]`` are ``items[offsets[i]:offsets[i + 1]]``, ascending.
        """
        u = np.asarray(users, dtype=np.int64)
        lo = np.searchsorted(self.keys, u * self.n_items)
        cnt = np.searchsorted(self.keys, (u + 1) * self.n_items) - lo
        offsets = np.zeros(len(u) + 1, dtype=np.int64)
        np.cumsum(cnt, out=offsets[1:])
        idx = np.repeat(lo - offsets[:-1], cnt) + np.arange(offsets[-1])
        return offsets, self.keys[idx] - np.repeat(u, cnt) * self.n_items


def _keyset(keys: np.ndarray | KeySet, n_items: int) -> KeySet:
    if isinstance(keys, KeySet):
        if keys.n_items != n_items:
            raise NcfError(f"KeySet built for {keys.n_items} items, called with {n_items}")
        return keys
    return KeySet(keys, n_items)


def _users(user_ids: np.ndarray) -> np.ndarray:
    u = np.asarray(user_ids)
    if u.ndim != 1 or (u.size and u.dtype.kind not in "iu"):
        raise NcfError("user_ids must be a one-dimensional integer array")
    u = u.astype(np.int64, copy=False)
    if u.size and u.min() < 0:
        raise NcfError("user_ids must be non-negative")
    return u


def _exact_free(ks: KeySet, users: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One uniform item outside ``ks`` for each entry of ``users`` (exact, no rejection).

    The r-th free item of a user with sorted positives ``p`` is ``r + #{i: p_i - i <= r}``
    (``p_i - i`` counts the free items below ``p_i``); one searchsorted answers all users.
    """
    uniq, inv = sorted_unique(users), dense_rank(users)
    offsets, items = ks.items_of(uniq)
    cnt = np.diff(offsets)
    free = ks.n_items - cnt
    if (free <= 0).any():
        bad = int(uniq[np.argmax(free <= 0)])
        raise NcfError(f"user {bad} interacted with all {ks.n_items} items: no negative to sample")
    r = rng.integers(0, free[inv])
    seg = np.repeat(np.arange(len(uniq), dtype=np.int64), cnt)
    stride = ks.n_items + 1
    below = seg * stride + items - (np.arange(len(items)) - offsets[seg])
    return r + np.searchsorted(below, inv * stride + r, side="right") - offsets[inv]


def sample_negatives(
    user_ids: np.ndarray,
    positive_keys: np.ndarray | KeySet,
    n_items: int,
    n_negatives: int,
    rng: np.random.Generator,
    max_rounds: int = 16,
) -> np.ndarray:
    """Training negatives: ``n_negatives`` uniform items per entry, never a positive of its user.

    Draws everything at once, redraws only the hits (a few rounds), and draws the rare
    entries still left (users who interacted with nearly every item) exactly.

    Args:
        user_ids: int user of each entry, shape ``(B,)`` (repeats allowed: one per positive).
        positive_keys: sorted unique int64 keys ``user * n_items + item`` of the positives,
            or a :class:`KeySet` of them (faster when called every epoch).
        n_items: number of items; negatives are drawn from ``0..n_items-1``.
        n_negatives: negatives per entry.
        rng: the random generator (its state advances).
        max_rounds: rejection rounds before switching to exact draws.

    Returns:
        int64 items, shape ``(B * n_negatives,)``, laid out like
        ``np.repeat(user_ids, n_negatives)``: the negatives of entry 0 first, then entry 1's.

    Raises:
        NcfError: a user of ``user_ids`` has interacted with every item.
    """
    users = _users(user_ids)
    if n_negatives < 0:
        raise NcfError(f"n_negatives must be >= 0, got {n_negatives}")
    ks = _keyset(positive_keys, n_items)
    out = np.empty(len(users) * n_negatives, dtype=np.int64)
    draw_type = np.int32 if n_items < 2**31 else np.int64  # 32-bit draws are faster
    step = max(1, _CHUNK // max(n_negatives, 1))
    for start in range(0, len(users), step):
        rep = np.repeat(users[start : start + step], n_negatives)
        items = rng.integers(0, n_items, size=rep.size, dtype=draw_type).astype(np.int64)
        todo = np.flatnonzero(ks.contains(rep * n_items + items))
        for _ in range(max_rounds):
            if not todo.size:
                break
            items[todo] = rng.integers(0, n_items, size=todo.size, dtype=np.int64)
            todo = todo[ks.contains(rep[todo] * n_items + items[todo])]
        if todo.size:
            items[todo] = _exact_free(ks, rep[todo], rng)
        out[start * n_negatives : start * n_negatives + rep.size] = items
    return out


def _first_distinct(draws: np.ndarray) -> np.ndarray:
    """True where ``draws[r, c]`` (non-negative, < 2**40) first occurs in row ``r``.

    Sorts ``value << shift | column`` row-wise (a plain sort, much faster than a
    stable argsort): equal values then come in column order.
    """
    rows, width = draws.shape
    shift = max(1, (width - 1).bit_length())
    packed = np.sort((draws << shift) | np.arange(width), axis=1)
    value = packed >> shift
    first_sorted = np.ones(draws.shape, dtype=bool)
    first_sorted[:, 1:] = value[:, 1:] != value[:, :-1]
    first = np.empty(draws.shape, dtype=bool)
    first[np.arange(rows)[:, None], packed & ((1 << shift) - 1)] = first_sorted
    return first


def _exact_candidates(
    ks: KeySet, users: np.ndarray, n: int, rng: np.random.Generator
) -> np.ndarray:
    """``n`` distinct items per user outside ``ks``: the ``n`` smallest of uniform random keys."""
    out = np.empty((len(users), n), dtype=np.int32)
    step = max(1, 2**22 // ks.n_items)
    for start in range(0, len(users), step):
        u = users[start : start + step]
        keys = rng.random((len(u), ks.n_items))
        offsets, items = ks.items_of(u)
        keys[np.repeat(np.arange(len(u)), np.diff(offsets)), items] = 2.0  # never chosen
        out[start : start + len(u)] = np.argpartition(keys, n - 1, axis=1)[:, :n]
    return out


def _draw_width(n: int, allowed: np.ndarray, n_items: int) -> int:
    """Draws per row so that about 98% of rows find ``n`` distinct allowed items.

    Sized for the 2% quantile of the allowed fraction, plus margin for duplicates; the
    rows that still fall short take the exact path.
    """
    q = max(float(np.quantile(allowed, 0.02)) / n_items, 1e-3)
    w = (n + 3 * np.sqrt(n) + 8) / q
    return int(min(w + w * w / (2 * n_items), 4 * n_items, 64 * n + 64))


def sample_candidates(
    user_ids: np.ndarray,
    exclude_keys: np.ndarray | KeySet,
    n_items: int,
    n: int = 99,
    seed: int | np.random.Generator = 0,
    user_raw: np.ndarray | None = None,
) -> np.ndarray:
    """Evaluation candidates: ``n`` distinct items per user, uniform, never excluded.

    Each row is a uniform random ``n``-subset of the user's allowed items: the first ``n``
    distinct allowed items of a stream of uniform draws, or, for rows where a surplus
    draw falls short (few allowed items), the ``n`` allowed items with the smallest
    random keys. Deterministic for an integer seed.

    Args:
        user_ids: int users, shape ``(B,)``.
        exclude_keys: sorted unique int64 keys ``user * n_items + item`` never to return
            (the user's train, validation and test items), or a :class:`KeySet`.
        n_items: number of items.
        n: candidates per user.
        seed: seed (or generator) of the draws.
        user_raw: raw ids of the users, to name one in an error.

    Returns:
        int32 items, shape ``(B, n)``; row ``i`` belongs to ``user_ids[i]``.

    Raises:
        NcfError: a user has fewer than ``n`` allowed items.
    """
    users = _users(user_ids)
    if n < 0:
        raise NcfError(f"n must be >= 0, got {n}")
    ks = _keyset(exclude_keys, n_items)
    rng = np.random.default_rng(seed)
    allowed = n_items - ks.counts(users)
    if len(users) and (allowed < n).any():
        i = int(np.argmax(allowed < n))
        name = users[i] if user_raw is None else user_raw[users[i]]
        raise NcfError(
            f"user {name} has only {allowed[i]} of the {n_items} items unseen, too few for "
            f"{n} evaluation candidates: keep more items, or prepare the data with fewer "
            "candidates (ncf data prepare --negatives)")
    out = np.empty((len(users), n), dtype=np.int32)
    if not len(users) or n == 0:
        return out
    width = _draw_width(n, allowed, n_items)
    step = max(1, _CHUNK // width)
    for start in range(0, len(users), step):
        u = users[start : start + step]
        draws = rng.integers(0, n_items, size=(len(u), width), dtype=np.int64)
        ok = ~ks.contains(u[:, None] * n_items + draws) & _first_distinct(draws)
        rank = np.cumsum(ok, axis=1, dtype=np.int32)
        done = rank[:, -1] >= n
        rows = out[start : start + len(u)]
        take = ok[done] & (rank[done] <= n)
        rows[done] = draws[done][take].reshape(-1, n)
        if not done.all():
            rows[~done] = _exact_candidates(ks, u[~done], n, rng)
    return out
