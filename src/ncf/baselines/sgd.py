"""Matrix factorisations trained by SGD on sampled negatives: BPR-MF and logistic MF.

Both build each epoch as whole arrays (positives shuffled, negatives drawn fresh with
:class:`NegativeSampler`), then take plain SGD steps on mini-batches of sparse
embeddings. The loss is summed over the batch, so ``lr`` means what it means in the
papers' per-example SGD. Torch uses the threads it is given (``torch.set_num_threads``).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from ncf.baselines._common import FactorRecommender, NegativeSampler, require
from ncf.errors import NcfError
from ncf.interactions import Interactions
from ncf.recommender import register


class _SgdFactorModel(FactorRecommender):
    """Shared SGD loop: subclasses define the epoch's samples and the batch loss."""

    factors: int
    lr: float
    reg: float
    epochs: int
    batch_size: int
    init_std: float
    seed: int

    def _validate(self) -> None:
        for what in ("factors", "epochs", "batch_size"):
            value = getattr(self, what)
            require(int(value) == value and value >= 1,
                    f"{type(self).__name__} {what} must be a positive integer, got {value!r}")
        require(self.lr > 0, f"{type(self).__name__} lr must be > 0, got {self.lr!r}")
        require(self.reg >= 0, f"{type(self).__name__} reg must be >= 0, got {self.reg!r}")
        require(self.init_std > 0,
                f"{type(self).__name__} init_std must be > 0, got {self.init_std!r}")

    def _embedding(self, n: int, dim: int, rng: np.random.Generator, std: float) -> nn.Embedding:
        emb = nn.Embedding(n, dim, sparse=True)
        with torch.no_grad():
            emb.weight.copy_(torch.from_numpy(rng.normal(0.0, std, (n, dim)).astype(np.float32)))
        return emb

    def _fit(self, train: Interactions) -> None:
        rng = np.random.default_rng(self.seed)
        keys = train.keys()
        pos_users, pos_items = keys // self.n_items, keys % self.n_items
        sampler = NegativeSampler(keys, self.n_users, self.n_items)
        self.user_emb = self._embedding(self.n_users, self.factors, rng, self.init_std)
        self.item_emb = self._embedding(self.n_items, self.factors, rng, self.init_std)
        self._build_biases()
        optimizer = torch.optim.SGD(list(self._parameters_to_train()), lr=self.lr)
        for epoch in range(self.epochs):
            columns = self._epoch_samples(pos_users, pos_items, sampler, rng)
            for start in range(0, len(columns[0]), self.batch_size):
                batch = [torch.from_numpy(c[start : start + self.batch_size]) for c in columns]
                optimizer.zero_grad()
                loss = self._batch_loss(*batch)
                if not torch.isfinite(loss):
                    raise NcfError(
                        f"{self.name}: loss became {loss.item()} in epoch {epoch + 1}; "
                        f"lower lr ({self.lr})"
                    )
                loss.backward()
                optimizer.step()
        self._export()
        del self.user_emb, self.item_emb

    def _parameters_to_train(self) -> list[nn.Parameter]:
        return [self.user_emb.weight, self.item_emb.weight]

    def _build_biases(self) -> None: ...

    def _epoch_samples(
        self, users: np.ndarray, items: np.ndarray, sampler: NegativeSampler,
        rng: np.random.Generator,
    ) -> list[np.ndarray]:
        raise NotImplementedError

    def _batch_loss(self, *batch: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def _export(self) -> None:
        self.user_factors = self.user_emb.weight.detach().numpy().copy()
        self.item_factors = self.item_emb.weight.detach().numpy().copy()


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

    def _build_biases(self) -> None:
        self.bias_emb = nn.Embedding(self.n_items, 1, sparse=True)
        nn.init.zeros_(self.bias_emb.weight)

    def _parameters_to_train(self) -> list[nn.Parameter]:
        return [*super()._parameters_to_train(), self.bias_emb.weight]

    def _epoch_samples(
        self, users: np.ndarray, items: np.ndarray, sampler: NegativeSampler,
        rng: np.random.Generator,
    ) -> list[np.ndarray]:
        order = rng.permutation(len(users))
        users, items = users[order], items[order]
        return [users, items, sampler.sample(users, rng)]

    def _batch_loss(self, *batch: torch.Tensor) -> torch.Tensor:
        u, i, j = batch
        p_u, q_i, q_j = self.user_emb(u), self.item_emb(i), self.item_emb(j)
        b_i, b_j = self.bias_emb(i)[:, 0], self.bias_emb(j)[:, 0]
        diff = (p_u * (q_i - q_j)).sum(1) + b_i - b_j
        penalty = (p_u**2).sum() + (q_i**2).sum() + (q_j**2).sum() + (b_i**2).sum() + (
            b_j**2
        ).sum()
        return -nn.functional.logsigmoid(diff).sum() + self.reg * penalty

    def _export(self) -> None:
        super()._export()
        self.item_bias = self.bias_emb.weight.detach().numpy()[:, 0].copy()
        del self.bias_emb


@register
class LogisticMF(_SgdFactorModel):
    """Dot-product MF with log loss, as in Rendle et al., RecSys 2020 (NCF vs. MF revisited).

    ``x_ui = g + b_u + b_i + p_u . q_i``; every epoch takes all positives (label 1)
    and ``negatives`` fresh negatives per positive (label 0), shuffled, and minimises
    binary cross-entropy plus ``reg (|p_u|^2 + |q_i|^2)`` per example. Defaults follow
    the paper's MovieLens setting (lr 0.002, reg 0.005, 8 negatives, init std 0.1).

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
        self, factors: int = 64, negatives: int = 8, lr: float = 0.002, reg: float = 0.005,
        epochs: int = 32, batch_size: int = 1024, init_std: float = 0.1, seed: int = 0,
    ) -> None:
        super().__init__()
        self.factors, self.negatives, self.lr, self.reg = factors, negatives, lr, reg
        self.epochs, self.batch_size, self.init_std, self.seed = epochs, batch_size, init_std, seed
        require(int(negatives) == negatives and negatives >= 1,
                f"LogisticMF negatives must be a positive integer, got {negatives!r}")
        self._validate()

    def _build_biases(self) -> None:
        self.user_b = nn.Embedding(self.n_users, 1, sparse=True)
        self.item_b = nn.Embedding(self.n_items, 1, sparse=True)
        nn.init.zeros_(self.user_b.weight)
        nn.init.zeros_(self.item_b.weight)
        self.global_b = nn.Parameter(torch.zeros(()))

    def _parameters_to_train(self) -> list[nn.Parameter]:
        return [*super()._parameters_to_train(), self.user_b.weight, self.item_b.weight,
                self.global_b]

    def _epoch_samples(
        self, users: np.ndarray, items: np.ndarray, sampler: NegativeSampler,
        rng: np.random.Generator,
    ) -> list[np.ndarray]:
        neg_users = np.repeat(users, self.negatives)
        all_users = np.concatenate([users, neg_users])
        all_items = np.concatenate([items, sampler.sample(neg_users, rng)])
        labels = np.concatenate(
            [np.ones(len(users), np.float32), np.zeros(len(neg_users), np.float32)]
        )
        order = rng.permutation(len(all_users))
        return [all_users[order], all_items[order], labels[order]]

    def _batch_loss(self, *batch: torch.Tensor) -> torch.Tensor:
        u, i, y = batch
        p_u, q_i = self.user_emb(u), self.item_emb(i)
        logit = (p_u * q_i).sum(1) + self.user_b(u)[:, 0] + self.item_b(i)[:, 0] + self.global_b
        loss = nn.functional.binary_cross_entropy_with_logits(logit, y, reduction="sum")
        return loss + self.reg * ((p_u**2).sum() + (q_i**2).sum())

    def _export(self) -> None:
        super()._export()
        self.user_bias = self.user_b.weight.detach().numpy()[:, 0].copy()
        self.item_bias = self.item_b.weight.detach().numpy()[:, 0].copy()
        self.global_bias = float(self.global_b.detach())
        del self.user_b, self.item_b, self.global_b
