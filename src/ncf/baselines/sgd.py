"""Matrix factorisations trained by SGD on sampled negatives: BPR-MF and logistic MF.

Both build each epoch as whole arrays (positives shuffled, negatives drawn fresh by
:func:`ncf.sampling.sample_negatives`, the sampler NCF training uses), then take plain SGD
steps on mini-batches. The gradients are
written out by hand and applied with ``index_add_``: these models are two dot products,
and skipping autograd's sparse-gradient machinery makes a step about twice as fast.
Gradients are summed over the batch, so ``lr`` means what it means in the papers'
per-example SGD. Torch uses the threads it is given (``torch.set_num_threads``).
"""

from __future__ import annotations

import numpy as np
import torch

from ncf.baselines._common import FactorRecommender, require
from ncf.errors import NcfError
from ncf.interactions import Interactions
from ncf.recommender import register
from ncf.sampling import KeySet, sample_negatives


class _SgdFactorModel(FactorRecommender):
    """Shared SGD loop: subclasses define the epoch's samples and one update step."""

    factors: int
    lr: float
    reg: float
    epochs: int
    batch_size: int
    init_std: float
    seed: int

    def _validate(self) -> None:
        kind = type(self).__name__
        for what in ("factors", "epochs", "batch_size"):
            value = getattr(self, what)
            require(bool(isinstance(value, (int, np.integer)) and value >= 1),
                    f"{kind} {what} must be a positive integer, got {value!r}")
            setattr(self, what, int(value))  # plain ints: hyper-parameters are saved as JSON
        require(self.lr > 0, f"{kind} lr must be > 0, got {self.lr!r}")
        require(self.reg >= 0, f"{kind} reg must be >= 0, got {self.reg!r}")
        require(self.init_std > 0, f"{kind} init_std must be > 0, got {self.init_std!r}")
        self.lr, self.reg, self.init_std = float(self.lr), float(self.reg), float(self.init_std)
        self.seed = int(self.seed)

    def _fit(self, train: Interactions) -> None:
        rng = np.random.default_rng(self.seed)
        keys = train.keys()
        pos_users, pos_items = keys // self.n_items, keys % self.n_items
        positives = KeySet(keys, self.n_items)  # the sampler of NCF training draws around them
        shape_u, shape_i = (self.n_users, self.factors), (self.n_items, self.factors)
        self._p = torch.from_numpy(rng.normal(0.0, self.init_std, shape_u).astype(np.float32))
        self._q = torch.from_numpy(rng.normal(0.0, self.init_std, shape_i).astype(np.float32))
        self._bu = torch.zeros(self.n_users)
        self._bi = torch.zeros(self.n_items)
        self._g = torch.zeros(())
        for epoch in range(self.epochs):
            columns = self._epoch_samples(pos_users, pos_items, positives, rng)
            for start in range(0, len(columns[0]), self.batch_size):
                self._step(*(torch.from_numpy(c[start : start + self.batch_size]) for c in columns))
            if not (torch.isfinite(self._p).all() and torch.isfinite(self._q).all()):
                raise NcfError(f"{self.name}: training diverged in epoch {epoch + 1}; "
                               f"lower lr ({self.lr})")
        self.user_factors, self.item_factors = self._p.numpy(), self._q.numpy()
        self._export_biases()
        del self._p, self._q, self._bu, self._bi, self._g

    def _epoch_samples(
        self, users: np.ndarray, items: np.ndarray, positives: KeySet,
        rng: np.random.Generator,
    ) -> list[np.ndarray]:
        raise NotImplementedError

    def _step(self, *batch: torch.Tensor) -> None:
        raise NotImplementedError

    def _export_biases(self) -> None:
        raise NotImplementedError


@register
class BPR(_SgdFactorModel):
    """BPR-MF (Rendle et al., UAI 2009): pairwise ranking of a positive over a negative.

    Per epoch every positive ``(u, i)`` is paired with one fresh negative ``j`` and
    ``-log sigmoid(x_ui - x_uj) + reg (|p_u|^2 + |q_i|^2 + |q_j|^2 + b_i^2 + b_j^2)`` is
    minimised, with ``x_ui = p_u . q_i + b_i``.

    Args:
        factors: embedding size (>= 1).
        lr: SGD learning rate (> 0).
        reg: L2 weight (>= 0).
        epochs: passes over the positives (>= 1).
        batch_size: triples per SGD step (>= 1).
        init_std: standard deviation of the normal initialisation (> 0).
        seed: seeds initialisation, shuffling and negatives.
    """

    name = "bpr"

    def __init__(
        self, factors: int = 64, lr: float = 0.05, reg: float = 0.0025, epochs: int = 30,
        batch_size: int = 1024, init_std: float = 0.1, seed: int = 0,
    ) -> None:
        super().__init__()
        self.factors, self.lr, self.reg, self.epochs = factors, lr, reg, epochs
        self.batch_size, self.init_std, self.seed = batch_size, init_std, seed
        self._validate()

    def _epoch_samples(
        self, users: np.ndarray, items: np.ndarray, positives: KeySet,
        rng: np.random.Generator,
    ) -> list[np.ndarray]:
        order = rng.permutation(len(users))
        users, items = users[order], items[order]
        return [users, items, sample_negatives(users, positives, self.n_items, 1, rng)]

    def _step(self, *batch: torch.Tensor) -> None:
        u, i, j = batch
        p = self._p.index_select(0, u)
        q_i, q_j = self._q.index_select(0, i), self._q.index_select(0, j)
        b_i, b_j = self._bi.index_select(0, i), self._bi.index_select(0, j)
        q_ij = q_i - q_j
        x = torch.einsum("bd,bd->b", p, q_ij).add_(b_i).sub_(b_j)
        e = torch.sigmoid_(x.neg_())[:, None]  # -d/dx log sigmoid(x), as a column
        r2, lr = 2.0 * self.reg, self.lr
        self._p.index_add_(0, u, torch.mul(p, r2).addcmul_(e, q_ij, value=-1.0), alpha=-lr)
        self._q.index_add_(0, i, torch.mul(q_i, r2).addcmul_(e, p, value=-1.0), alpha=-lr)
        self._q.index_add_(0, j, torch.mul(q_j, r2).addcmul_(e, p), alpha=-lr)
        self._bi.index_add_(0, i, torch.mul(b_i, r2).sub_(e[:, 0]), alpha=-lr)
        self._bi.index_add_(0, j, torch.mul(b_j, r2).add_(e[:, 0]), alpha=-lr)

    def _export_biases(self) -> None:
        self.item_bias = self._bi.numpy()


@register
class LogisticMF(_SgdFactorModel):
    """Dot-product MF with log loss, as in Rendle et al., RecSys 2020 (NCF vs. MF revisited).

    ``x_ui = g + b_u + b_i + p_u . q_i``; every epoch takes all positives (label 1)
    and ``negatives`` fresh negatives per positive (label 0), shuffled, and minimises
    binary cross-entropy plus ``reg (|p_u|^2 + |q_i|^2)`` per example. The paper ran
    lr 0.002 for hundreds of epochs (8 negatives, init std 0.1); the default lr here is
    higher so that a few dozen epochs suffice.

    Args:
        factors: embedding size (1..192 in the paper's sweep; any >= 1 accepted).
        negatives: sampled negatives per positive and epoch (>= 1).
        lr: SGD learning rate (> 0).
        reg: L2 weight on the embeddings (>= 0).
        epochs: passes (>= 1).
        batch_size: examples per SGD step (>= 1).
        init_std: standard deviation of the embeddings' normal initialisation (> 0).
        seed: seeds initialisation, shuffling and negatives.
    """

    name = "mf"

    def __init__(
        self, factors: int = 64, negatives: int = 8, lr: float = 0.01, reg: float = 0.005,
        epochs: int = 32, batch_size: int = 4096, init_std: float = 0.1, seed: int = 0,
    ) -> None:
        super().__init__()
        self.factors, self.negatives, self.lr, self.reg = factors, negatives, lr, reg
        self.epochs, self.batch_size, self.init_std, self.seed = epochs, batch_size, init_std, seed
        require(isinstance(negatives, (int, np.integer)) and negatives >= 1,
                f"LogisticMF negatives must be a positive integer, got {negatives!r}")
        self.negatives = int(negatives)
        self._validate()

    def _epoch_samples(
        self, users: np.ndarray, items: np.ndarray, positives: KeySet,
        rng: np.random.Generator,
    ) -> list[np.ndarray]:
        neg_users = np.repeat(users, self.negatives)
        all_users = np.concatenate([users, neg_users])
        negatives = sample_negatives(neg_users, positives, self.n_items, 1, rng)
        all_items = np.concatenate([items, negatives])
        labels = np.zeros(len(all_users), dtype=np.float32)
        labels[: len(users)] = 1.0
        order = rng.permutation(len(all_users))
        return [all_users[order], all_items[order], labels[order]]

    def _step(self, *batch: torch.Tensor) -> None:
        u, i, y = batch
        p, q = self._p.index_select(0, u), self._q.index_select(0, i)
        x = torch.einsum("bd,bd->b", p, q)
        x.add_(self._bu.index_select(0, u)).add_(self._bi.index_select(0, i)).add_(self._g)
        e = torch.sigmoid_(x).sub_(y)  # d/dx of the log loss
        r2, lr = 2.0 * self.reg, self.lr
        self._p.index_add_(0, u, torch.mul(p, r2).addcmul_(e[:, None], q), alpha=-lr)
        self._q.index_add_(0, i, torch.mul(q, r2).addcmul_(e[:, None], p), alpha=-lr)
        self._bu.index_add_(0, u, e, alpha=-lr)
        self._bi.index_add_(0, i, e, alpha=-lr)
        self._g.sub_(lr * e.sum())

    def _export_biases(self) -> None:
        self.user_bias, self.item_bias = self._bu.numpy(), self._bi.numpy()
        self.global_bias = float(self._g)
