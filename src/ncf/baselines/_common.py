"""Shared machinery of the baselines: input checks, persistence, scoring.

Two scoring shapes cover every baseline except popularity:

* :class:`FactorRecommender`: ``score = U[u] . V[i] (+ biases)``;
* :class:`ItemItemRecommender`: ``score = user_items[u] @ W[:, i]`` with an item x item
  weight matrix ``W`` (dense or sparse), the user row taken from the training matrix
  that :class:`~ncf.recommender.Recommender` already keeps (and saves).

Scoring works in chunks of users whose temporary arrays hold about ``BUDGET`` numbers,
choosing per call between gathering the requested items (few candidates, e.g. the
paper's 1 + 99) and computing whole rows (many candidates, e.g. ``recommend``).
"""

from __future__ import annotations

import inspect
from collections.abc import Iterator
from typing import Any

import numpy as np
import scipy.sparse as sp

from ncf.errors import NcfError
from ncf.recommender import Recommender

#: numbers held by one chunk's temporary arrays (16 MiB of float32)
BUDGET = 1 << 22


def require(condition: bool, message: str) -> None:
    """Raise :class:`NcfError` with ``message`` unless ``condition`` holds."""
    if not condition:
        raise NcfError(message)


def chunks(costs: np.ndarray, budget: int = BUDGET) -> Iterator[slice]:
    """Consecutive slices of ``costs`` whose sums stay within ``budget`` (at least one row)."""
    cum = np.cumsum(costs, dtype=np.int64)
    start, n = 0, len(costs)
    while start < n:
        base = cum[start - 1] if start else 0
        end = max(int(np.searchsorted(cum, base + budget, side="right")), start + 1)
        yield slice(start, end)
        start = end


class Baseline(Recommender):
    """A :class:`Recommender` whose hyper-parameters are its constructor's arguments.

    Subclasses store every constructor argument under the same attribute name, and
    implement ``_arrays`` / ``_set_arrays`` for their fitted arrays; persistence follows.
    """

    def _arrays(self) -> dict[str, np.ndarray]:
        raise NotImplementedError

    def _set_arrays(self, arrays: dict[str, np.ndarray]) -> None:
        raise NotImplementedError

    def hyper_parameters(self) -> dict[str, Any]:
        """The constructor arguments this model was built with."""
        names = list(inspect.signature(type(self).__init__).parameters)[1:]
        return {n: getattr(self, n) for n in names}

    def _state(self) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        if self._seen is None:
            raise NcfError(f"{self.name}: cannot save a model that is not fitted")
        return self._arrays(), self.hyper_parameters()

    def _load_state(self, arrays: dict[str, np.ndarray], params: dict[str, Any]) -> None:
        for key, value in params.items():
            setattr(self, key, value)
        self._set_arrays(arrays)

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.hyper_parameters().items())
        return f"{type(self).__name__}({args})"

    def _user_items(self) -> sp.csr_matrix:
        """The binary training ``user_items`` matrix; ``NcfError`` before ``fit``."""
        if self._seen is None:
            raise NcfError(f"{self.name}: model is not fitted")
        return self._seen


class FactorRecommender(Baseline):
    """``score(u, i) = user_factors[u] . item_factors[i] + user_bias[u] + item_bias[i] + g``.

    Subclasses set ``user_factors`` ``(n_users, d)`` and ``item_factors`` ``(n_items, d)``
    (float32) in ``_fit``; the biases are optional (``None``) and ``global_bias`` is 0.
    """

    user_factors: np.ndarray
    item_factors: np.ndarray
    user_bias: np.ndarray | None = None
    item_bias: np.ndarray | None = None
    global_bias: float = 0.0

    def score(self, user_ids: np.ndarray, item_ids: np.ndarray) -> np.ndarray:
        """Scores of ``item_ids[b, c]`` for ``user_ids[b]``, shape ``(B, C)``, float32."""
        users, items = self._check(user_ids, item_ids)
        n_b, n_c = items.shape
        out = np.empty((n_b, n_c), dtype=np.float32)
        u_f, i_f = self.user_factors, self.item_factors
        whole_rows = 4 * n_c >= self.n_items
        per_user = self.n_items if whole_rows else n_c * i_f.shape[1]
        for sl in chunks(np.full(n_b, max(per_user, 1))):
            if whole_rows:
                full = u_f[users[sl]] @ i_f.T
                out[sl] = np.take_along_axis(full, items[sl], axis=1)
            else:
                out[sl] = np.matmul(i_f[items[sl]], u_f[users[sl]][:, :, None])[..., 0]
        if self.item_bias is not None:
            out += self.item_bias[items]
        if self.user_bias is not None:
            out += self.user_bias[users][:, None]
        out += np.float32(self.global_bias)
        return out

    def _arrays(self) -> dict[str, np.ndarray]:
        arrays = {"user_factors": self.user_factors, "item_factors": self.item_factors,
                  "global_bias": np.float32(self.global_bias)}
        if self.user_bias is not None:
            arrays["user_bias"] = self.user_bias
        if self.item_bias is not None:
            arrays["item_bias"] = self.item_bias
        return arrays

    def _set_arrays(self, arrays: dict[str, np.ndarray]) -> None:
        self.user_factors = arrays["user_factors"]
        self.item_factors = arrays["item_factors"]
        self.user_bias = arrays.get("user_bias")
        self.item_bias = arrays.get("item_bias")
        self.global_bias = float(arrays["global_bias"])


class ItemItemRecommender(Baseline):
    """``score(u, i) = user_items[u] @ weights[:, i]`` (``weights`` dense or sparse CSR).

    Three ways to score, chosen per call: few candidates with dense weights sum
    ``W[j, i]`` over the user's items ``j``; few candidates with sparse weights look the
    user's (densified) row up at each candidate's neighbours; many candidates compute
    whole rows ``user_items[u] @ W`` and pick the requested columns.
    """

    weights: np.ndarray | sp.csr_matrix
    _table: tuple[np.ndarray, np.ndarray] | None = None

    def score(self, user_ids: np.ndarray, item_ids: np.ndarray) -> np.ndarray:
        """Scores of ``item_ids[b, c]`` for ``user_ids[b]``, shape ``(B, C)``, float32."""
        users, items = self._check(user_ids, item_ids)
        seen = self._user_items()
        n_b, n_c = items.shape
        out = np.empty((n_b, n_c), dtype=np.float32)
        w = self.weights
        if 8 * n_c >= self.n_items:
            mode = "rows"
        else:
            mode = "dense" if isinstance(w, np.ndarray) else "sparse"
        if mode == "dense":  # cost nnz(user) * C
            costs = np.maximum(np.diff(seen.indptr)[users], 1) * max(n_c, 1)
        elif mode == "sparse":  # cost n_items (the dense row) + C * neighbours
            idx, val = self._neighbour_table()
            costs = np.full(n_b, self.n_items + n_c * idx.shape[1])
        else:
            costs = np.full(n_b, max(self.n_items, 1))
        for sl in chunks(costs):
            rows = seen[users[sl]]
            if mode == "dense":
                owner = np.repeat(np.arange(rows.shape[0]), np.diff(rows.indptr))
                vals = w[rows.indices[:, None], items[sl][owner]]  # (nnz, C)
                pick = sp.csr_matrix(
                    (np.ones(len(owner), dtype=np.float32), (owner, np.arange(len(owner)))),
                    shape=(rows.shape[0], len(owner)),
                )
                out[sl] = pick @ vals
            elif mode == "sparse":
                dense = rows.toarray()
                cand = items[sl]
                hit = dense[np.arange(len(cand))[:, None, None], idx[cand]]  # (b, C, k)
                out[sl] = (hit * val[cand]).sum(axis=2)
            else:
                full = rows @ w
                full = full.toarray() if sp.issparse(full) else np.asarray(full)
                out[sl] = np.take_along_axis(full, items[sl], axis=1)
        return out

    def _neighbour_table(self) -> tuple[np.ndarray, np.ndarray]:
        """Sparse weights as zero-padded ``(n_items, k)`` tables: for each target item
        ``i``, the items ``j`` with ``W[j, i] != 0`` and those weights (built once)."""
        if self._table is None:
            by_target = sp.csr_matrix(self.weights).T.tocsr()
            lengths = np.diff(by_target.indptr)
            width = max(int(lengths.max(initial=0)), 1)
            owner = np.repeat(np.arange(self.n_items), lengths)
            slot = np.arange(by_target.nnz) - by_target.indptr[owner]
            idx = np.zeros((self.n_items, width), dtype=np.int32)
            val = np.zeros((self.n_items, width), dtype=np.float32)
            idx[owner, slot], val[owner, slot] = by_target.indices, by_target.data
            self._table = idx, val
        return self._table

    def _arrays(self) -> dict[str, np.ndarray]:
        w = self.weights
        if isinstance(w, np.ndarray):
            return {"weights": w}
        return {"w_data": w.data, "w_indices": w.indices, "w_indptr": w.indptr}

    def _set_arrays(self, arrays: dict[str, np.ndarray]) -> None:
        self._table = None
        if "weights" in arrays:
            self.weights = arrays["weights"]
        else:
            self.weights = sp.csr_matrix(
                (arrays["w_data"], arrays["w_indices"], arrays["w_indptr"]),
                shape=(self.n_items, self.n_items),
            )


def item_gram_blocks(user_items: sp.csr_matrix) -> Iterator[tuple[slice, np.ndarray]]:
    """Column blocks ``(cols, (X^T X)[:, cols])`` (dense float32) of the item co-counts.

    Memory stays at about ``BUDGET`` numbers per block whatever the number of items.
    """
    n_items = user_items.shape[1]
    item_users = user_items.T.tocsr()
    by_column = user_items.tocsc()
    for cols in chunks(np.full(n_items, n_items)):
        block = item_users @ by_column[:, cols]
        yield cols, block.toarray().astype(np.float32, copy=False)
