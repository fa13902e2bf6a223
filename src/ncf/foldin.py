"""Fold-in: a user the model never trained on, fitted to the items the user gives.

The item side of a trained GMF / MLP / NeuMF stays frozen; only the user's embedding(s),
concatenated into one vector ``z``, are fitted, by maximum a posteriori::

    L(z) = sum_{i given} a_i softplus(-s(z, i)) + w sum_{j sampled} softplus(s(z, j))
           + (prior / 2) (z - mu)^T P (z - mu)

``s(z, i)`` is the model's logit; the ``j`` are negatives drawn uniformly among the items
not given, weighted so that they count as ``negatives`` per given item (the training ratio);
``mu`` and ``P`` are the mean and precision of the trained users' embeddings, a Gaussian
prior: from one item the answer stays near the average user and moves away as items come.
GMF's logit is linear in ``z``, so Newton's method solves it exactly in a few ``d x d``
solves; MLP and NeuMF take Gauss-Newton steps (the same, with the logit's Jacobian).
Everything is batched over users: the server folds in one, the cold-start study hundreds.

Example:
    >>> space = UserSpace(model)                                         # doctest: +SKIP
    >>> z = fold_in(space, [np.array([3, 17, 42])])                      # doctest: +SKIP
    >>> scores = space.logits_all(z)        # (1, n_items)               # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from ncf.errors import NcfError
from ncf.models import GMF, MLP, NCFModule, NeuMF

#: Rows of the user tables used to estimate the prior (a seeded sample above this).
PRIOR_USERS = 200_000


@dataclass(frozen=True)
class FoldInConfig:
    """How a new user is fitted.

    Args:
        negatives: sampled negatives per given item, as in training (their total weight).
        min_negatives: negatives drawn at least (more draws, less noise, same weight).
        prior: strength of the Gaussian prior of the trained users (0: none).
        steps: Newton (GMF) or Gauss-Newton (MLP, NeuMF) steps.
        seed: seed of the negatives (the same items give the same answer).
    """

    negatives: int = 4
    min_negatives: int = 500
    prior: float = 1.0
    steps: int = 8
    seed: int = 0

    def __post_init__(self) -> None:
        if self.negatives < 1 or self.min_negatives < 1 or self.steps < 1:
            raise NcfError("fold-in needs negatives, min_negatives and steps >= 1")
        if not (np.isfinite(self.prior) and self.prior >= 0):
            raise NcfError(f"the prior strength must be >= 0, got {self.prior}")


class UserSpace:
    """The user side of a trained model: logits of any user vector, item side frozen.

    Args:
        model: a trained GMF, MLP or NeuMF (any ``n_layers``, shared embeddings or not).
        prior_users: the users whose embeddings define the prior (default: all; pass the
            trained ones when some rows never saw data).
        seed: seed of the user sample when there are more than :data:`PRIOR_USERS`.

    Attributes:
        dim: size of the concatenated user vector ``z``.
        mean, precision: the prior, ``(dim,)`` and ``(dim, dim)``.
    """

    @torch.no_grad()
    def __init__(self, model: NCFModule, prior_users: np.ndarray | None = None,
                 seed: int = 0) -> None:
        self.kind = model.kind
        self.n_items = model.n_items
        self.bias = float(model.out.bias[0])
        w = model.out.weight[0].detach().float()
        tables: list[torch.Tensor] = []
        self.gmf_items: torch.Tensor | None = None  # (n_items, f): item vector * output weight
        self.gmf_slice = slice(0, 0)
        self.mlp_slice = slice(0, 0)
        self.mlp_user: torch.Tensor | None = None  # W_u^T (half, d1), or the output weights
        self.mlp_items: torch.Tensor | None = None  # (n_items, d1) item half incl. bias
        self.layers: list[tuple[torch.Tensor, torch.Tensor]] = []
        self.mlp_out: torch.Tensor | None = None
        self.linear_mlp = False  # an MLP without hidden layers: its logit is linear in z
        if isinstance(model, GMF):
            tables.append(model.user.weight)
            self.gmf_items = model.item.weight.detach().float() * w
            self.gmf_slice = slice(0, model.factors)
        elif isinstance(model, MLP):
            tables.append(model.user.weight)
            self._set_mlp(model, w, 0)
        elif isinstance(model, NeuMF):
            f = model.factors
            if model.share_embeddings:
                tables.append(model.mlp.user.weight)
                self.gmf_items = model.mlp.item.weight[:, :f].detach().float() * w[:f]
                self.gmf_slice = slice(0, f)
                self._set_mlp(model.mlp, w[f:], 0)
            else:
                tables += [model.gmf.user.weight, model.mlp.user.weight]
                self.gmf_items = model.gmf.item.weight.detach().float() * w[:f]
                self.gmf_slice = slice(0, f)
                self._set_mlp(model.mlp, w[f:], f)
        else:
            raise NcfError(f"fold-in knows GMF, MLP and NeuMF, not {type(model).__name__}")
        self.tables = [t.detach().float() for t in tables]
        self.dim = sum(t.shape[1] for t in self.tables)
        self.mean, self.precision = self._prior(prior_users, seed)

    def _set_mlp(self, mlp: MLP, w_out: torch.Tensor, offset: int) -> None:
        half = mlp.user.embedding_dim
        self.mlp_slice = slice(offset, offset + half)
        linears = [m for m in mlp.tower if isinstance(m, torch.nn.Linear)]
        q = mlp.item.weight.detach().float()
        if not linears:  # the concatenated embeddings feed the output directly
            self.linear_mlp = True
            self.mlp_user = w_out[:half].reshape(half, 1).clone()
            self.mlp_items = (q @ w_out[half:]).reshape(-1, 1)
            return
        first = linears[0]
        self.mlp_user = first.weight[:, :half].detach().float().t().contiguous()
        self.mlp_items = torch.addmm(first.bias.detach().float(), q,
                                     first.weight[:, half:].detach().float().t())
        self.layers = [(lin.weight.detach().float().t().contiguous(), lin.bias.detach().float())
                       for lin in linears[1:]]
        self.mlp_out = w_out.detach().float().clone()

    def _prior(self, users: np.ndarray | None, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
        n_users = self.tables[0].shape[0]
        rows = np.arange(n_users) if users is None else np.asarray(users, dtype=np.int64)
        if len(rows) > PRIOR_USERS:
            rows = np.sort(np.random.default_rng(seed).choice(rows, PRIOR_USERS, replace=False))
        if len(rows) < 2:
            raise NcfError("the prior of fold-in needs at least two trained users")
        z = self.user_vectors(rows).double()
        mean = z.mean(0)
        cov = torch.cov(z.t()).reshape(self.dim, self.dim)
        cov += torch.eye(self.dim, dtype=cov.dtype) * (1e-4 * float(cov.diagonal().mean()) + 1e-8)
        return mean.float(), torch.linalg.inv(cov).float()

    # vectors ---------------------------------------------------------------------------
    def user_vectors(self, users: np.ndarray) -> torch.Tensor:
        """The trained users' concatenated embeddings, ``(B, dim)``."""
        idx = torch.from_numpy(np.asarray(users, dtype=np.int64))
        return torch.cat([t[idx] for t in self.tables], dim=1)

    # logits ----------------------------------------------------------------------------
    def gather(self, items: torch.Tensor | None) -> dict[str, torch.Tensor]:
        """The item-side tables of ``items (B, C)`` (None: every item, shared by all users),
        gathered once and reused while only the user vectors change."""
        parts: dict[str, torch.Tensor] = {}
        if self.gmf_items is not None:
            parts["gmf"] = self.gmf_items if items is None else self.gmf_items[items]
        if self.mlp_items is not None:
            parts["mlp"] = self.mlp_items if items is None else self.mlp_items[items]
        return parts

    def logits(self, z: torch.Tensor, items: torch.Tensor | None = None,
               parts: dict[str, torch.Tensor] | None = None) -> torch.Tensor:
        """Logits ``(B, C)`` of user vectors ``z (B, dim)`` for ``items (B, C)`` (None: every
        item, ``(B, n_items)``); differentiable in ``z``. ``parts``: :meth:`gather`'s tables
        of those items, when already made."""
        parts = self.gather(items) if parts is None else parts
        shared = items is None and parts is not None and \
            next(iter(parts.values())).dim() == 2  # every item, the same for all users
        out = torch.tensor(self.bias, dtype=z.dtype)
        if "gmf" in parts:
            zg = z[:, self.gmf_slice]
            x = parts["gmf"]
            out = out + (zg @ x.t() if shared else torch.bmm(x, zg.unsqueeze(-1)).squeeze(-1))
        if self.mlp_user is not None:
            table = parts["mlp"]
            user = z[:, self.mlp_slice] @ self.mlp_user  # (B, d1)
            if self.linear_mlp:
                out = out + user + (table[:, 0] if shared else table[..., 0])
            else:
                assert self.mlp_out is not None
                h = (user.unsqueeze(1) + table).relu_()  # (B, C, d1)
                rows = h.shape[:2]
                h = h.reshape(-1, h.shape[-1])  # one matrix product per layer for all pairs
                for weight, bias in self.layers:
                    h = torch.addmm(bias, h, weight).relu_()
                out = out + (h @ self.mlp_out).reshape(rows)
        return out

    @torch.no_grad()
    def logits_all(self, z: torch.Tensor, chunk: int = 1 << 22) -> torch.Tensor:
        """Logits of every item for each user vector, ``(B, n_items)``, in bounded chunks."""
        rows = max(1, chunk // max(self.n_items * self._width(), 1))
        parts = self.gather(None)
        return torch.cat([self.logits(z[s : s + rows], parts=parts)
                          for s in range(0, len(z), rows)]) \
            if len(z) else torch.empty(0, self.n_items)

    def _width(self) -> int:
        return 1 if self.mlp_items is None else int(self.mlp_items.shape[1])

    # fitting ---------------------------------------------------------------------------
    def _jacobian(self, z: torch.Tensor, parts: dict[str, torch.Tensor]
                  ) -> tuple[torch.Tensor, torch.Tensor]:
        """Logits ``(B, C)`` and their Jacobian ``(B, C, dim)`` with respect to ``z``, for
        the candidates whose tables :meth:`gather` made."""
        b, c = next(iter(parts.values())).shape[:2]
        logits = torch.full((b, c), self.bias)
        jac = torch.zeros(b, c, self.dim)
        if "gmf" in parts:
            x = parts["gmf"]  # (B, C, f)
            logits += torch.bmm(x, z[:, self.gmf_slice].unsqueeze(-1)).squeeze(-1)
            jac[..., self.gmf_slice] = x
        if self.mlp_user is not None:
            table = parts["mlp"]
            user = z[:, self.mlp_slice] @ self.mlp_user
            if self.linear_mlp:
                logits += user + table[..., 0]
                jac[..., self.mlp_slice] += self.mlp_user[:, 0]
            else:
                assert self.mlp_out is not None
                acts = [(user.unsqueeze(1) + table).relu_().reshape(b * c, -1)]
                for weight, bias in self.layers:
                    acts.append(torch.addmm(bias, acts[-1], weight).relu_())
                logits += (acts[-1] @ self.mlp_out).reshape(b, c)
                # back from the output: d logit / d h_k, one row per candidate
                # (ReLU's own backward: zero where the activation is; masked_fill is ~10x slower)
                relu_back = torch.ops.aten.threshold_backward
                grad = relu_back(self.mlp_out.expand_as(acts[-1]), acts[-1], 0.0)
                for (weight, _), act in zip(reversed(self.layers), reversed(acts[:-1])):
                    grad = relu_back(grad @ weight.t(), act, 0.0)
                jac[..., self.mlp_slice] += (grad @ self.mlp_user.t()).reshape(b, c, -1)
        return logits, jac


def _given_arrays(given: Sequence[np.ndarray], n_items: int) -> list[np.ndarray]:
    out = []
    for g in given:
        arr = np.asarray(g)
        if arr.ndim != 1 or (arr.size and arr.dtype.kind not in "iu"):
            raise NcfError("fold-in takes one integer array of item indices per user")
        arr = np.unique(arr.astype(np.int64))
        if not arr.size:
            raise NcfError("fold-in needs at least one item per user")
        if arr[0] < 0 or arr[-1] >= n_items:
            raise NcfError(f"item index outside 0..{n_items - 1}")
        if arr.size >= n_items:
            raise NcfError("a user given every item has no negatives to fit against")
        out.append(arr)
    return out


def _negatives(given: list[np.ndarray], n_items: int, per_user: np.ndarray,
               seed: int) -> list[np.ndarray]:
    """Uniform draws (with replacement) among the items each user was not given: the
    ``r``-th free item is ``r + #{k : g_k - k <= r}`` for the sorted given ``g``. Each
    user's draws are seeded by the seed and the user's own items, so a user's answer does
    not depend on who else is folded in with it."""
    out = []
    for g, n in zip(given, per_user):
        rng = np.random.default_rng([seed, len(g), *g.tolist()])
        r = rng.integers(0, n_items - len(g), size=int(n))
        shifted = g - np.arange(len(g))
        out.append(r + np.searchsorted(shifted, r, side="right"))
    return out


def fold_in(
    space: UserSpace,
    given: Sequence[np.ndarray],
    weights: Sequence[np.ndarray] | None = None,
    config: FoldInConfig | None = None,
) -> torch.Tensor:
    """User vectors ``(B, space.dim)`` fitted to each user's given items (see module doc).

    Args:
        space: the frozen model (:class:`UserSpace`).
        given: one int array of dense item indices per user (repeats are merged).
        weights: optional positive weight of each given item (e.g. rating / 5), parallel to
            ``given`` before merging; default 1.
        config: negatives, prior, steps, seed.

    Returns:
        float32 ``(B, dim)``; score them with :meth:`UserSpace.logits_all`.
    """
    config = config or FoldInConfig()
    items_of = _given_arrays(given, space.n_items)
    b = len(items_of)
    if b == 0:
        return torch.empty(0, space.dim)
    pos_w = []
    for i, g in enumerate(given):
        if weights is None:
            pos_w.append(np.ones(len(items_of[i]), dtype=np.float32))
            continue
        wi = np.asarray(weights[i], dtype=np.float64).reshape(-1)
        gi = np.asarray(g, dtype=np.int64).reshape(-1)
        if len(wi) != len(gi) or not np.all(np.isfinite(wi)) or np.any(wi <= 0):
            raise NcfError("fold-in weights must be positive numbers, one per given item")
        merged = np.zeros(space.n_items, dtype=np.float64)
        np.maximum.at(merged, gi, wi)  # a repeated item keeps its largest weight
        pos_w.append(merged[items_of[i]].astype(np.float32))
    n_pos = np.array([len(g) for g in items_of])
    n_neg = np.maximum(config.min_negatives, config.negatives * n_pos)
    negs = _negatives(items_of, space.n_items, n_neg, config.seed)
    width = int((n_pos + n_neg).max())
    items = np.zeros((b, width), dtype=np.int64)
    target = np.zeros((b, width), dtype=np.float32)
    weight = np.zeros((b, width), dtype=np.float32)
    for row in range(b):  # one row per user: a few hundred at most, never per item
        p, n = n_pos[row], n_neg[row]
        items[row, :p], items[row, p : p + n] = items_of[row], negs[row]
        target[row, :p] = 1.0
        weight[row, :p] = pos_w[row]
        weight[row, p : p + n] = config.negatives * pos_w[row].sum() / n
    return _newton(space, torch.from_numpy(items), torch.from_numpy(target),
                   torch.from_numpy(weight), config)


@torch.no_grad()
def _newton(space: UserSpace, items: torch.Tensor, target: torch.Tensor, weight: torch.Tensor,
            config: FoldInConfig) -> torch.Tensor:
    """(Gauss-)Newton steps on the MAP objective, all users at once, damped per user as in
    Levenberg-Marquardt: a step that would raise a user's objective is refused and that
    user's damping raised tenfold (a shorter step, nearer the gradient's direction); an
    accepted one lowers it. GMF's objective is convex, so its steps are Newton's own. Stops
    early once every user's step is negligible."""
    b = items.shape[0]
    mu, prec = space.mean, space.precision * config.prior
    z = mu.expand(b, -1).clone()

    parts = space.gather(items)

    sign = 1.0 - 2.0 * target  # softplus(-s) for a given item, softplus(s) for a negative

    def objective(z: torch.Tensor) -> torch.Tensor:
        s = space.logits(z, items, parts)
        data = (weight * torch.nn.functional.softplus(sign * s)).sum(1)
        d = z - mu
        return data + 0.5 * ((d @ prec) * d).sum(1)

    current = objective(z)
    eye = torch.eye(space.dim)
    damping = torch.full((b,), 1e-6)
    for _ in range(config.steps):
        s, jac = space._jacobian(z, parts)
        p = torch.sigmoid(s)
        grad = torch.einsum("bc,bcd->bd", weight * (p - target), jac) + (z - mu) @ prec
        curv = weight * p * (1 - p)
        hess = torch.einsum("bcd,bce->bde", jac * curv.unsqueeze(-1), jac) + prec
        scale = hess.diagonal(dim1=1, dim2=2).mean(1).clamp_min(1e-12)
        damped = hess + (damping * scale).view(b, 1, 1) * eye
        step = torch.linalg.solve(damped, grad.unsqueeze(-1)).squeeze(-1)
        trial = z - step
        value = objective(trial)
        ok = value <= current
        z = torch.where(ok.unsqueeze(1), trial, z)
        current = torch.where(ok, value, current)
        damping = torch.where(ok, (damping / 10).clamp_min(1e-6), damping * 10)
        if bool((ok & (step.abs().amax(1) <= 1e-5 * (1 + z.abs().amax(1)))).all()):
            break  # every user took a negligible step: converged
    return z
