"""Small array helpers shared by the data modules."""

from __future__ import annotations

import numpy as np


def sorted_unique(values: np.ndarray) -> np.ndarray:
    """``np.unique(values)`` by one sort (numpy 2.x's hash-based unique is far slower on ints)."""
    s = np.sort(np.asarray(values).reshape(-1))
    return s[np.r_[True, s[1:] != s[:-1]]] if s.size else s


def dense_rank(values: np.ndarray) -> np.ndarray:
    """int64 rank of each value among the distinct values (``np.unique``'s inverse)."""
    values = np.asarray(values).reshape(-1)
    order = np.argsort(values, kind="stable")
    s = values[order]
    rank = np.empty(len(values), dtype=np.int64)
    rank[order] = np.cumsum(np.r_[False, s[1:] != s[:-1]]) if s.size else s
    return rank
