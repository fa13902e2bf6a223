"""The data unit of `ncf`: one validated container of parallel interaction arrays.

Every reader returns an :class:`Interactions`; splitting, sampling, training and
evaluation consume it. Users and items are dense indices ``0..n-1``; the raw ids from
the source files are kept in ``user_raw`` / ``item_raw`` (``user_raw[dense] == raw``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import scipy.sparse as sp

from ncf.arrays import dense_rank, sorted_unique
from ncf.errors import NcfError


def _dense_ids(raw: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Map raw ids to dense ``0..n-1`` (sorted by raw id). Returns ``(dense, raw_of_dense)``.

    Small non-negative integer ids use a presence table (O(n), no sort); anything else
    falls back to ``np.unique``.
    """
    raw = np.asarray(raw)
    if raw.dtype.kind in "iu" and raw.size and raw.min() >= 0 and raw.max() < 2**31 and (
        raw.max() <= 8 * raw.size + 1_000_000
    ):
        present = np.zeros(int(raw.max()) + 1, dtype=bool)
        present[raw] = True
        uniques = np.flatnonzero(present)
        lookup = np.full(present.size, -1, dtype=np.int32)
        lookup[uniques] = np.arange(uniques.size, dtype=np.int32)
        return lookup[raw], uniques.astype(np.int64)
    dense = dense_rank(raw)
    uniques = np.empty(int(dense.max()) + 1 if dense.size else 0, dtype=raw.dtype)
    uniques[dense] = raw.reshape(-1)
    return dense.astype(np.int32), uniques


@dataclass(frozen=True, eq=False)
class Interactions:
    """Parallel arrays of (user, item[, rating][, timestamp]) interactions.

    Args:
        user_ids: int32 dense user indices, shape ``(n,)``.
        item_ids: int32 dense item indices, shape ``(n,)``.
        ratings: float32 ratings or ``None`` (implicit data), shape ``(n,)``.
        timestamps: int64 seconds since the Unix epoch or ``None``, shape ``(n,)``.
        n_users: number of users (>= every user index + 1).
        n_items: number of items (>= every item index + 1).
        user_raw: raw id of every dense user index, shape ``(n_users,)``.
        item_raw: raw id of every dense item index, shape ``(n_items,)``.
        meta: free-form provenance (format, source paths) carried along.

    Example:
        >>> x = Interactions.from_raw(np.array([10, 10, 7]), np.array([3, 5, 3]))
        >>> x.n_users, x.n_items, x.user_raw.tolist()
        (2, 2, [7, 10])
    """

    user_ids: np.ndarray
    item_ids: np.ndarray
    ratings: np.ndarray | None
    timestamps: np.ndarray | None
    n_users: int
    n_items: int
    user_raw: np.ndarray
    item_raw: np.ndarray
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        n = len(self.user_ids)
        for name in ("item_ids", "ratings", "timestamps"):
            arr = getattr(self, name)
            if arr is not None and len(arr) != n:
                raise NcfError(f"Interactions.{name} has {len(arr)} entries, user_ids has {n}")
        if self.user_ids.ndim != 1 or self.item_ids.ndim != 1:
            raise NcfError("Interactions arrays must be one-dimensional")
        if len(self.user_raw) != self.n_users or len(self.item_raw) != self.n_items:
            raise NcfError(
                f"Interactions id maps have {len(self.user_raw)} users / {len(self.item_raw)} "
                f"items, expected {self.n_users} / {self.n_items}"
            )
        if n:
            if int(self.user_ids.min()) < 0 or int(self.user_ids.max()) >= self.n_users:
                raise NcfError(f"user index outside 0..{self.n_users - 1}")
            if int(self.item_ids.min()) < 0 or int(self.item_ids.max()) >= self.n_items:
                raise NcfError(f"item index outside 0..{self.n_items - 1}")

    # construction ---------------------------------------------------------------
    @classmethod
    def from_raw(
        cls,
        raw_users: np.ndarray,
        raw_items: np.ndarray,
        ratings: np.ndarray | None = None,
        timestamps: np.ndarray | None = None,
        meta: dict[str, Any] | None = None,
    ) -> Interactions:
        """Build from raw ids, numbering users and items densely in raw-id order."""
        users, user_raw = _dense_ids(raw_users)
        items, item_raw = _dense_ids(raw_items)
        return cls(
            user_ids=users,
            item_ids=items,
            ratings=None if ratings is None else np.asarray(ratings, dtype=np.float32),
            timestamps=None if timestamps is None else np.asarray(timestamps, dtype=np.int64),
            n_users=len(user_raw),
            n_items=len(item_raw),
            user_raw=user_raw,
            item_raw=item_raw,
            meta=dict(meta or {}),
        )

    # views ----------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.user_ids)

    def __repr__(self) -> str:
        extras = [n for n in ("ratings", "timestamps") if getattr(self, n) is not None]
        return (
            f"<Interactions: {len(self):,} interactions, {self.n_users:,} users x "
            f"{self.n_items:,} items{', with ' + ' and '.join(extras) if extras else ''}>"
        )

    def subset(self, index: np.ndarray) -> Interactions:
        """Rows selected by a boolean mask or an index array; id spaces unchanged."""
        return Interactions(
            user_ids=self.user_ids[index],
            item_ids=self.item_ids[index],
            ratings=None if self.ratings is None else self.ratings[index],
            timestamps=None if self.timestamps is None else self.timestamps[index],
            n_users=self.n_users,
            n_items=self.n_items,
            user_raw=self.user_raw,
            item_raw=self.item_raw,
            meta=self.meta,
        )

    def with_arrays(self, **arrays: np.ndarray | None) -> Interactions:
        """A copy with some of ``ratings`` / ``timestamps`` (or other fields) replaced."""
        fields = {
            "user_ids": self.user_ids,
            "item_ids": self.item_ids,
            "ratings": self.ratings,
            "timestamps": self.timestamps,
            "n_users": self.n_users,
            "n_items": self.n_items,
            "user_raw": self.user_raw,
            "item_raw": self.item_raw,
            "meta": self.meta,
        }
        fields.update(arrays)
        return Interactions(**fields)  # type: ignore[arg-type]

    def concat(self, *others: Interactions) -> Interactions:
        """These rows followed by those of ``others`` (same id spaces); ratings and timestamps
        are kept when every part has them."""
        parts = (self, *others)
        for o in others:
            if o.n_users != self.n_users or o.n_items != self.n_items:
                raise NcfError("Interactions.concat needs parts with the same id spaces")

        def cat(name: str) -> np.ndarray | None:
            arrays = [getattr(p, name) for p in parts]
            return None if any(a is None for a in arrays) else np.concatenate(arrays)

        return self.with_arrays(user_ids=cat("user_ids"), item_ids=cat("item_ids"),
                                ratings=cat("ratings"), timestamps=cat("timestamps"))

    def keys(self) -> np.ndarray:
        """Sorted unique int64 keys ``user * n_items + item``: membership tests via searchsorted."""
        return sorted_unique(self.user_ids.astype(np.int64) * self.n_items + self.item_ids)

    def tocsr(self) -> sp.csr_matrix:
        """The binary ``user_items`` matrix, shape ``(n_users, n_items)``, duplicates merged."""
        data = np.ones(len(self), dtype=np.float32)
        m = sp.csr_matrix(
            (data, (self.user_ids, self.item_ids)), shape=(self.n_users, self.n_items)
        )
        m.sum_duplicates()
        m.data[:] = 1.0
        return m

    def user_counts(self) -> np.ndarray:
        """Interactions per user, shape ``(n_users,)``."""
        return np.bincount(self.user_ids, minlength=self.n_users)

    def item_counts(self) -> np.ndarray:
        """Interactions per item, shape ``(n_items,)``."""
        return np.bincount(self.item_ids, minlength=self.n_items)

    def user_index(self, raw: Any) -> int:
        """Dense index of a raw user id; ``NcfError`` if unknown."""
        return lookup_raw(self.user_raw, raw, "user")

    def item_index(self, raw: Any) -> int:
        """Dense index of a raw item id; ``NcfError`` if unknown."""
        return lookup_raw(self.item_raw, raw, "item")


def lookup_raw(raw_ids: np.ndarray, raw: Any, what: str) -> int:
    """Dense index of ``raw`` in the sorted ``raw_ids``; ``NcfError`` naming it when unknown."""
    try:
        value = np.asarray(raw, dtype=raw_ids.dtype)
    except (TypeError, ValueError, OverflowError):
        raise NcfError(f"unknown {what} {raw!r}") from None
    pos = int(np.searchsorted(raw_ids, value))
    if pos >= len(raw_ids) or raw_ids[pos] != value:
        raise NcfError(f"unknown {what} {raw!r}")
    return pos
