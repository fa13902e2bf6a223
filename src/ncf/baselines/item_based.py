"""Non-learned and item-item baselines: popularity, item k-NN and EASE^R."""

from __future__ import annotations

import numpy as np
import scipy.linalg
import scipy.sparse as sp

from ncf.baselines._common import (
    Baseline,
    ItemItemRecommender,
    item_gram_blocks,
    require,
)
from ncf.errors import NcfError
from ncf.interactions import Interactions
from ncf.recommender import register


@register
class ItemPop(Baseline):
    """Most-popular items: the score of an item is its number of distinct training users.

    The same ranking for every user; the floor any personalised model must beat.
    """

    name = "itempop"

    def __init__(self) -> None:
        super().__init__()
        self.popularity = np.zeros(0, dtype=np.float32)

    def _fit(self, train: Interactions) -> None:
        self.popularity = np.asarray(self._user_items().sum(axis=0)).ravel().astype(np.float32)

    def score(self, user_ids: np.ndarray, item_ids: np.ndarray) -> np.ndarray:
        """Popularity of ``item_ids[b, c]``, shape ``(B, C)``, float32."""
        _, items = self._check(user_ids, item_ids)
        return self.popularity[items]

    def _arrays(self) -> dict[str, np.ndarray]:
        return {"popularity": self.popularity}

    def _set_arrays(self, arrays: dict[str, np.ndarray]) -> None:
        self.popularity = arrays["popularity"]


@register
class ItemKNN(ItemItemRecommender):
    """Item-based k-nearest neighbours with shrunk cosine similarity.

    ``sim(i, j) = |U_i & U_j| / (sqrt|U_i| sqrt|U_j| + shrink)`` on the binary matrix;
    for every target item ``j`` only its ``neighbours`` most similar items are kept
    (a sparse ``(n_items, n_items)`` matrix ``W``) and ``score(u, j) = sum_{i in u} W[i, j]``.
    The co-counts are built in column blocks, so memory stays bounded at any scale.

    Args:
        neighbours: similar items kept per target item (>= 1).
        shrink: shrinkage added to the cosine denominator (>= 0); damps similarities
            supported by few common users.
    """

    name = "itemknn"

    def __init__(self, neighbours: int = 100, shrink: float = 10.0) -> None:
        super().__init__()
        require(int(neighbours) == neighbours and neighbours >= 1,
                f"ItemKNN neighbours must be a positive integer, got {neighbours!r}")
        require(shrink >= 0, f"ItemKNN shrink must be >= 0, got {shrink!r}")
        self.neighbours = int(neighbours)
        self.shrink = float(shrink)

    def _fit(self, train: Interactions) -> None:
        n = self.n_items
        norms = np.sqrt(np.asarray(self._user_items().sum(axis=0)).ravel()).astype(np.float32)
        k = min(self.neighbours, n)
        rows, cols, vals = [], [], []
        for block_cols, co in item_gram_blocks(self._user_items()):
            target = np.arange(n)[block_cols]
            sim = co / (norms[:, None] * norms[None, block_cols] + np.float32(self.shrink))
            sim[target, np.arange(len(target))] = 0.0
            top = np.argpartition(-sim, k - 1, axis=0)[:k] if k < n else np.indices(sim.shape)[0]
            top_vals = np.take_along_axis(sim, top, axis=0)
            keep = top_vals > 0
            rows.append(top[keep])
            cols.append(np.broadcast_to(target, top.shape)[keep])
            vals.append(top_vals[keep])
        w = sp.csr_matrix(
            (np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), shape=(n, n)
        )
        w.sort_indices()
        self.weights, self._table = w.astype(np.float32), None


@register
class EASE(ItemItemRecommender):
    """EASE^R (Steck, WWW 2019): a closed-form item-item linear autoencoder.

    ``P = (X^T X + reg I)^-1`` and ``W = I - P diag(1 / diag(P))``, i.e.
    ``W[i, j] = -P[i, j] / P[j, j]`` off the diagonal and 0 on it. The dense
    ``n_items x n_items`` matrices are float64 while fitting, so more than
    ``MAX_ITEMS`` items is refused up front rather than exhausting memory.

    Args:
        reg: L2 weight ``lambda`` (> 0); about 500 suits MovieLens-100K-sized data and
            larger data sets usually want more.
    """

    name = "ease"
    #: the most items fitted: 40,000^2 float64 numbers are already 12.8 GB per matrix
    MAX_ITEMS = 40_000

    def __init__(self, reg: float = 500.0) -> None:
        super().__init__()
        require(reg > 0, f"EASE reg must be > 0, got {reg!r}")
        self.reg = float(reg)

    def _fit(self, train: Interactions) -> None:
        n = self.n_items
        if n > self.MAX_ITEMS:
            gb = n * n * 8 / 1e9
            raise NcfError(
                f"EASE needs a dense {n:,} x {n:,} item matrix ({gb:.0f} GB in float64); "
                f"it is limited to {self.MAX_ITEMS:,} items: filter rare items first"
            )
        gram = np.empty((n, n), dtype=np.float64)
        for cols, block in item_gram_blocks(self._user_items()):
            gram[:, cols] = block
        gram[np.diag_indices(n)] += self.reg
        p = scipy.linalg.inv(gram, overwrite_a=True, check_finite=False)
        del gram
        p /= -np.diag(p)[None, :]
        p[np.diag_indices(n)] = 0.0
        self.weights = p.astype(np.float32)
