"""Matrix factorisations solved in closed form: PureSVD and implicit ALS.

Implicit ALS is implemented here rather than taken from the ``implicit`` library: that
would add a compiled dependency for one baseline, its models follow their own
conventions (``item_users``, their own save format) instead of our contract, and we
only need a CPU solver. Batched numpy (one stack of ``f x f`` solves per chunk of
users) is exact and fast enough for the Netflix Prize on a few cores.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
from scipy.sparse.linalg import svds

from ncf.baselines._common import BUDGET, FactorRecommender, require
from ncf.interactions import Interactions
from ncf.recommender import register


def _positive_int(value: int, what: str) -> int:
    require(int(value) == value and value >= 1, f"{what} must be a positive integer, got {value!r}")
    return int(value)


@register
class PureSVD(FactorRecommender):
    """PureSVD (Cremonesi et al., RecSys 2010): truncated SVD of the binary matrix.

    ``user_items ~ U S V^T`` with ``factors`` singular triplets (ARPACK through
    :func:`scipy.sparse.linalg.svds`); ``score(u, i) = (U S)[u] . V[i]``.

    Args:
        factors: singular triplets kept (>= 1 and < min(n_users, n_items)).
        seed: seeds ARPACK's start vector, making fits reproducible.
    """

    name = "puresvd"

    def __init__(self, factors: int = 50, seed: int = 0) -> None:
        super().__init__()
        self.factors = _positive_int(factors, "PureSVD factors")
        self.seed = int(seed)

    def _fit(self, train: Interactions) -> None:
        x = self._user_items().astype(np.float64)
        require(
            self.factors < min(x.shape),
            f"PureSVD factors ({self.factors}) must be < min(n_users, n_items) = {min(x.shape)}",
        )
        v0 = np.random.default_rng(self.seed).uniform(0.5, 1.5, size=min(x.shape))
        u, s, vt = svds(x, k=self.factors, v0=v0)
        self.user_factors = (u * s).astype(np.float32)
        self.item_factors = np.ascontiguousarray(vt.T, dtype=np.float32)


def als_solve(
    rows_cols: sp.csr_matrix, fixed: np.ndarray, alpha: float, reg: float
) -> np.ndarray:
    """Exact iALS half-step: the factors of every row given the column factors ``fixed``.

    Row ``u`` solves ``(Y^T Y + alpha Y_u^T Y_u + reg I) x_u = (1 + alpha) Y_u^T 1``,
    where ``Y_u`` are the rows of ``fixed`` for the columns ``u`` interacted with
    (confidence ``1 + alpha`` on those, 1 elsewhere; preference 1 on those, 0 elsewhere).
    Rows are sorted by length and solved in chunks: each chunk's ``Y_u`` are gathered
    into one zero-padded ``(B, L, f)`` array and reduced with one batched matmul.

    Args:
        rows_cols: binary CSR matrix ``(n_rows, n_cols)``.
        fixed: float32 factors of the columns, ``(n_cols, f)``.
        alpha: confidence weight of an interaction (> 0).
        reg: L2 weight (> 0).

    Returns:
        float32 factors of the rows, ``(n_rows, f)``.
    """
    n_rows, n_cols = rows_cols.shape
    f = fixed.shape[1]
    base = fixed.T.astype(np.float64) @ fixed + reg * np.eye(f)
    padded = np.vstack([fixed, np.zeros((1, f), dtype=fixed.dtype)])  # row n_cols: zeros
    indices = np.append(rows_cols.indices, n_cols)  # slot nnz points at the zero row
    counts = np.diff(rows_cols.indptr)
    order = np.argsort(counts, kind="stable")
    out = np.zeros((n_rows, f), dtype=np.float32)
    max_rows = max(1, (1 << 18) // (f * f))  # keeps the stack of f x f systems in cache
    start = 0
    while start < n_rows:
        ends = np.arange(start + 1, min(n_rows, start + max_rows) + 1)
        cost = (ends - start) * np.maximum(counts[order[ends - 1]], 1) * f
        end = int(ends[max(int(np.searchsorted(cost, BUDGET, side="right")) - 1, 0)])
        rows = order[start:end]
        length = int(counts[rows[-1]])
        slot = rows_cols.indptr[rows][:, None] + np.arange(length)[None, :]
        slot = np.where(np.arange(length)[None, :] < counts[rows][:, None], slot, len(indices) - 1)
        y_u = padded[indices[slot]]  # (B, L, f)
        gram = base + alpha * np.matmul(y_u.transpose(0, 2, 1), y_u)
        rhs = (1.0 + alpha) * y_u.sum(axis=1, dtype=np.float64)
        out[rows] = np.linalg.solve(gram, rhs[:, :, None])[:, :, 0]
        start = end
    return out


@register
class IALS(FactorRecommender):
    """Implicit alternating least squares (Hu, Koren & Volinsky, ICDM 2008).

    Minimises ``sum_{u,i} c_ui (p_ui - x_u . y_i)^2 + reg (|X|^2 + |Y|^2)`` with
    ``p_ui = 1`` on interactions (0 elsewhere) and confidence ``c_ui = 1 + alpha`` on
    interactions (1 elsewhere), alternating exact solves for users and items
    (:func:`als_solve`).

    Args:
        factors: latent dimension ``f`` (>= 1).
        alpha: confidence of an observed interaction over an unobserved one (> 0).
        reg: L2 weight (> 0).
        iterations: user + item sweeps (>= 1).
        seed: seeds the item factors' initialisation, N(0, 0.01).
    """

    name = "ials"

    def __init__(
        self, factors: int = 64, alpha: float = 10.0, reg: float = 10.0, iterations: int = 15,
        seed: int = 0,
    ) -> None:
        super().__init__()
        self.factors = _positive_int(factors, "IALS factors")
        self.iterations = _positive_int(iterations, "IALS iterations")
        require(alpha > 0, f"IALS alpha must be > 0, got {alpha!r}")
        require(reg > 0, f"IALS reg must be > 0, got {reg!r}")
        self.alpha, self.reg, self.seed = float(alpha), float(reg), int(seed)

    def _fit(self, train: Interactions) -> None:
        user_items = self._user_items()
        item_users = user_items.T.tocsr()
        rng = np.random.default_rng(self.seed)
        items = rng.normal(0.0, 0.01, size=(self.n_items, self.factors)).astype(np.float32)
        users = np.zeros((self.n_users, self.factors), dtype=np.float32)
        for _ in range(self.iterations):
            users = als_solve(user_items, items, self.alpha, self.reg)
            items = als_solve(item_users, users, self.alpha, self.reg)
        self.user_factors, self.item_factors = users, items
