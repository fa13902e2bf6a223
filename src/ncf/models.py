"""The three NCF networks: GMF, MLP and NeuMF (He et al., WWW 2017, section 3).

Each is a plain ``nn.Module`` mapping ``(users (B,), items (B,))`` int64 tensors to logits
``(B,)``; the sigmoid lives in the loss (``binary_cross_entropy_with_logits``). Embeddings are
initialised from N(0, 0.01) as in the paper; tower layers with Glorot-uniform weights.

Gradients: :meth:`NCFModule.loss_grads` is autograd, the reference every model trains with.
GMF, MLP and NeuMF override it with gradients written by hand (about three times faster on
small batches, tested equal to autograd), keyed by the names the modules give their
parameters.

How to add a model:

1. Subclass :class:`NCFModule`; give it a ``kind`` (its name in saved files) and keep every
   constructor argument as an attribute of the same name (``hyper()`` reads them back, and a
   saved model is rebuilt from them); set ``n_users`` and ``n_items``.
2. Build its layers in ``__init__`` (embeddings with :func:`_embedding`, an output layer
   ``self.out`` with :func:`_output`), and return the last hidden features from
   ``features(users, items)``: ``forward`` applies ``self.out`` to them.
3. Register it in :data:`MODELS`, so that :func:`build_model` and saved files know it.
4. Train it: :func:`ncf.training.train` takes it as it is, through autograd (the base
   ``loss_grads``), with the optimizers of :mod:`ncf.optim` and every evaluation.
5. Only if a profile says a step is too slow: override ``loss_grads`` with hand-written
   gradients keyed by parameter name (``RowGrad`` for sparse embeddings), and add the model to
   the test that checks them against autograd (``tests/test_models.py``); override
   ``score_candidates`` likewise for faster evaluation.

Example:
    >>> gmf, mlp = GMF(10, 20, factors=8), MLP(10, 20, factors=8, n_layers=3)
    >>> neumf = NeuMF.from_pretrained(gmf, mlp, alpha=0.5)
    >>> neumf(torch.tensor([0, 1]), torch.tensor([3, 4])).shape
    torch.Size([2])
"""

from __future__ import annotations

import inspect
from typing import Any

import numpy as np
import torch
from torch import nn

from ncf.errors import NcfError
from ncf.optim import Grad, RowGrad, grads_from_autograd


def _embedding(n: int, dim: int, sparse: bool) -> nn.Embedding:
    emb = nn.Embedding(n, dim, sparse=sparse)
    nn.init.normal_(emb.weight, std=0.01)
    return emb


#: Widest MLP input accepted (each user and item gets half of it as embedding size).
MAX_TOWER_INPUT = 1 << 16


def tower_sizes(factors: int, n_layers: int) -> list[int]:
    """The paper's halving tower: input ``factors * 2**n_layers`` down to ``factors``.

    ``tower_sizes(8, 3) == [64, 32, 16, 8]``: embeddings of 32 each, concatenated to 64, then
    hidden layers of 32, 16 and 8 (the paper's default for predictive factors 8). With
    ``n_layers == 0`` the concatenated embeddings (size ``factors``) feed the output directly.
    """
    if factors < 2 or factors % 2 or n_layers < 0:
        raise NcfError(f"factors must be an even number >= 2 and n_layers >= 0, got "
                       f"{factors} and {n_layers}")
    if factors * 2**n_layers > MAX_TOWER_INPUT:
        raise NcfError(f"factors {factors} with {n_layers} layers make a tower input of "
                       f"{factors * 2**n_layers:,}, above {MAX_TOWER_INPUT:,}: use fewer")
    return [factors * 2**i for i in range(n_layers, -1, -1)]


def _tower(sizes: list[int]) -> nn.Sequential:
    layers: list[nn.Module] = []
    for d_in, d_out in zip(sizes[:-1], sizes[1:]):
        linear = nn.Linear(d_in, d_out)
        nn.init.xavier_uniform_(linear.weight)
        nn.init.zeros_(linear.bias)
        layers += [linear, nn.ReLU()]
    return nn.Sequential(*layers)


def _input_dropout(
    x: torch.Tensor, p: float, training: bool, inplace: bool = False
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Inverted dropout of the tower input while training: ``(x * mask, mask)``
    (``inplace``: ``x`` is a scratch tensor and is multiplied in place).

    Both gradient paths draw the mask here, from a seed taken from torch's generator, so
    seeded runs repeat and autograd and the hand-written gradients see the same mask. On a
    CPU the mask comes from numpy's 16-bit integers (the rate rounded to 1/65536): ``torch.rand``
    took half of an MLP step at batch 2048 (and ``masked_fill`` as long again). The boolean
    mask is converted through its bytes: torch's bool-to-float cast is ~10x slower than uint8's.
    """
    if not training or p == 0.0:
        return x, None
    if x.device.type == "cpu":
        seed = int(torch.randint(0, 2**62, (1,)))
        bits = np.random.default_rng(seed).integers(0, 1 << 16, size=x.shape, dtype=np.uint16)
        threshold = round(p * (1 << 16))
        mask = torch.from_numpy((bits >= threshold).view(np.uint8)).to(x.dtype)
        mask.mul_((1 << 16) / ((1 << 16) - threshold))
    else:
        mask = (torch.rand_like(x) >= p).to(x.dtype).div_(1.0 - p)
    return (x.mul_(mask) if inplace else x * mask), mask


def _dot_candidates(user_part: torch.Tensor, item_table: torch.Tensor,
                    items: torch.Tensor) -> torch.Tensor:
    """``out[b, c] = user_part[b] . item_table[items[b, c]]``, shape ``(B, C)``."""
    return torch.bmm(item_table[items], user_part.unsqueeze(-1)).squeeze(-1)


@torch.no_grad()
def _mlp_tables(mlp: MLP) -> dict[str, torch.Tensor]:
    """The item half of the first layer for every item: ``W_i q``, ``(n_items, d_1)``."""
    linears = _linears(mlp.tower)
    if not linears:
        return {}
    half = mlp.user.embedding_dim
    return {"mlp_items": mlp.item.weight @ linears[0].weight[:, half:].t()}


def _tower_candidates(mlp: MLP, users: torch.Tensor, items: torch.Tensor,
                      tables: dict[str, torch.Tensor] | None) -> torch.Tensor:
    """Last tower activations of every (user, candidate) pair, ``(B * C, d_last)``.

    The first layer is linear in the concatenated embeddings, ``W [p; q] = W_u p + W_i q``:
    the user half is computed once per user, the item half (``tables``, from
    :func:`_mlp_tables`, made now when not given) once per item, and only their sums go
    through the ReLU (the first layer holds most of the tower's multiplications).
    """
    item_part = (tables if tables is not None else _mlp_tables(mlp))["mlp_items"]
    linears = _linears(mlp.tower)
    first, half = linears[0], mlp.user.embedding_dim
    user_part = torch.addmm(first.bias, mlp.user.weight[users], first.weight[:, :half].t())
    x = (user_part.unsqueeze(1) + item_part[items]).relu_().reshape(-1, first.out_features)
    for lin in linears[1:]:
        x = torch.addmm(lin.bias, x, lin.weight.t()).relu_()
    return x


def check_dropout(p: float) -> None:
    """Raise ``NcfError`` unless ``p`` is a dropout rate in [0, 1)."""
    if not 0.0 <= p < 1.0:
        raise NcfError(f"dropout must lie in [0, 1), got {p}")


def check_alpha(alpha: float) -> None:
    """Raise ``NcfError`` unless ``alpha`` (the GMF weight of the fused output) lies in [0, 1]."""
    if not 0.0 <= alpha <= 1.0:
        raise NcfError(f"alpha must lie in [0, 1], got {alpha}")


def _output(d_in: int) -> nn.Linear:
    out = nn.Linear(d_in, 1)
    nn.init.uniform_(out.weight, -((3.0 / d_in) ** 0.5), (3.0 / d_in) ** 0.5)  # LeCun uniform
    nn.init.zeros_(out.bias)
    return out


def _linears(tower: nn.Sequential) -> list[nn.Linear]:
    return [m for m in tower if isinstance(m, nn.Linear)]


def _tower_forward(linears: list[nn.Linear], x: torch.Tensor) -> list[torch.Tensor]:
    """Activations ``[x, relu(x W1^T + b1), ...]`` of a ReLU tower, kept for the backward pass."""
    acts = [x]
    for lin in linears:
        acts.append(torch.addmm(lin.bias, acts[-1], lin.weight.t()).relu_())
    return acts


def _named_linears(tower: nn.Sequential, prefix: str) -> list[tuple[str, nn.Linear]]:
    """The tower's linear layers with the full names their parameters have in the model
    (``prefix.NAME``, NAME as the Sequential names the layer): gradients are keyed by those
    names, never by a position computed here."""
    return [(f"{prefix}.{name}", m) for name, m in tower.named_children()
            if isinstance(m, nn.Linear)]


def _tower_backward(
    named: list[tuple[str, nn.Linear]], acts: list[torch.Tensor], d_out: torch.Tensor
) -> tuple[torch.Tensor, dict[str, Grad]]:
    """Gradient of the tower input and of every layer's weight and bias (by name)."""
    grads: dict[str, Grad] = {}
    d = d_out
    for idx in range(len(named) - 1, -1, -1):
        name, linear = named[idx]
        d = torch.ops.aten.threshold_backward(d, acts[idx + 1], 0)
        grads[f"{name}.weight"] = d.t().mm(acts[idx])
        grads[f"{name}.bias"] = d.sum(0)
        d = d.mm(linear.weight)
    return d, grads


def _logit_grad(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean binary cross-entropy on logits and its gradient with respect to the logits."""
    loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, labels)
    return loss, (torch.sigmoid(logits) - labels).div_(len(labels))


class NCFModule(nn.Module):
    """Common interface: ``forward`` gives logits, ``hyper`` the constructor arguments."""

    kind: str = ""
    user_embeddings: tuple[str, ...] = ()
    n_users: int
    n_items: int
    out: nn.Linear

    def hyper(self) -> dict[str, Any]:
        """The constructor arguments (each model keeps every one under the same name)."""
        names = list(inspect.signature(type(self).__init__).parameters)[1:]
        return {n: getattr(self, n) for n in names}

    def features(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError  # pragma: no cover

    def forward(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """Logits, shape ``(B,)``."""
        return self.out(self.features(users, items)).squeeze(-1)

    def candidate_tables(self) -> dict[str, torch.Tensor]:
        """Per-item tables :meth:`score_candidates` reuses across calls while the weights
        stay as they are (the item half of the MLP's first layer)."""
        return {}

    @torch.no_grad()
    def score_candidates(self, users: torch.Tensor, items: torch.Tensor,
                         tables: dict[str, torch.Tensor] | None = None) -> torch.Tensor:
        """Logits of each user's candidate items, ``(B,)`` x ``(B, C)`` -> ``(B, C)``, as
        :meth:`forward` in eval mode gives them (the evaluation and recommendation path).

        The models below compute each user's part once instead of once per candidate, and
        the item half of the MLP's first layer once per item (``tables``, made by
        :meth:`candidate_tables` from the current weights when not given).
        """
        b, c = items.shape
        return self(users.repeat_interleave(c), items.reshape(-1)).view(b, c)

    def loss_grads(
        self, users: torch.Tensor, items: torch.Tensor, labels: torch.Tensor
    ) -> tuple[torch.Tensor, dict[str, Grad]]:
        """Mean log loss of a batch and its gradients, keyed by parameter name.

        This base version is the reference: autograd through :meth:`forward`. GMF, MLP and
        NeuMF override it with gradients written by hand (the same numbers, tested, at about
        a third of the cost for small batches: no graph is built). Embedding gradients come
        as :class:`RowGrad` (only the rows used) when the embedding is ``sparse``, else dense.
        """
        for p in self.parameters():
            p.grad = None
        with torch.enable_grad():
            logits = self(users, items)
            loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, labels)
            loss.backward()
        return loss.detach(), grads_from_autograd(self.named_parameters())

    def _emb_grad(self, table: nn.Embedding, index: torch.Tensor, values: torch.Tensor) -> Grad:
        rg = RowGrad(index, values)
        return rg if table.sparse else rg.to_dense(table.weight)

    def _out_grads(self, feats: torch.Tensor, dlogit: torch.Tensor) -> tuple[torch.Tensor, dict]:
        grads: dict[str, Grad] = {
            "out.weight": dlogit.unsqueeze(0).mm(feats),
            "out.bias": dlogit.sum(0, keepdim=True),
        }
        return torch.outer(dlogit, self.out.weight[0]), grads


class GMF(NCFModule):
    """Generalized Matrix Factorization: ``h^T (p_u * q_i)``.

    Args:
        n_users, n_items: sizes of the id spaces.
        factors: embedding size (the "predictive factors").
        sparse: sparse embedding gradients (pays off with many users, e.g. Netflix).
    """

    kind = "gmf"

    def __init__(self, n_users: int, n_items: int, factors: int = 8, sparse: bool = False):
        super().__init__()
        self.n_users, self.n_items, self.factors, self.sparse = n_users, n_items, factors, sparse
        self.user = _embedding(n_users, factors, sparse)
        self.item = _embedding(n_items, factors, sparse)
        self.out = _output(factors)


    def features(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        return self.user(users) * self.item(items)

    @torch.no_grad()
    def score_candidates(self, users: torch.Tensor, items: torch.Tensor,
                         tables: dict[str, torch.Tensor] | None = None) -> torch.Tensor:
        w = self.out.weight[0]
        return _dot_candidates(self.user.weight[users] * w, self.item.weight, items) + self.out.bias

    @torch.no_grad()
    def loss_grads(self, users, items, labels):  # type: ignore[no-untyped-def]
        pu, qi = self.user.weight.index_select(0, users), self.item.weight.index_select(0, items)
        feats = pu * qi
        loss, dlogit = _logit_grad(torch.addmv(self.out.bias, feats, self.out.weight[0]), labels)
        dfeats, grads = self._out_grads(feats, dlogit)
        grads["user.weight"] = self._emb_grad(self.user, users, dfeats * qi)
        grads["item.weight"] = self._emb_grad(self.item, items, dfeats * pu)
        return loss, grads


class MLP(NCFModule):
    """Multi-Layer Perceptron over concatenated user and item embeddings.

    Args:
        n_users, n_items: sizes of the id spaces.
        factors: size of the last hidden layer (the "predictive factors").
        n_layers: hidden layers; the tower halves at each (``tower_sizes``).
        sparse: sparse embedding gradients.
        dropout: dropout rate of the concatenated embeddings while training (0: none, the
            paper's model).
    """

    kind = "mlp"

    def __init__(
        self, n_users: int, n_items: int, factors: int = 8, n_layers: int = 3,
        sparse: bool = False, dropout: float = 0.0,
    ):
        super().__init__()
        check_dropout(dropout)
        self.n_users, self.n_items, self.factors = n_users, n_items, factors
        self.n_layers, self.sparse, self.dropout = n_layers, sparse, dropout
        sizes = tower_sizes(factors, n_layers)
        self.user = _embedding(n_users, sizes[0] // 2, sparse)
        self.item = _embedding(n_items, sizes[0] // 2, sparse)
        self.tower = _tower(sizes)
        self.out = _output(sizes[-1])


    def features(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        x = torch.cat([self.user(users), self.item(items)], dim=-1)
        return self.tower(_input_dropout(x, self.dropout, self.training)[0])

    def candidate_tables(self) -> dict[str, torch.Tensor]:
        return _mlp_tables(self)

    @torch.no_grad()
    def score_candidates(self, users: torch.Tensor, items: torch.Tensor,
                         tables: dict[str, torch.Tensor] | None = None) -> torch.Tensor:
        if not _linears(self.tower):
            return super().score_candidates(users, items)
        last = _tower_candidates(self, users, items, tables)
        return torch.addmv(self.out.bias, last, self.out.weight[0]).view(items.shape)

    @torch.no_grad()
    def loss_grads(self, users, items, labels):  # type: ignore[no-untyped-def]
        pu, qi = self.user.weight.index_select(0, users), self.item.weight.index_select(0, items)
        named = _named_linears(self.tower, "tower")
        x, mask = _input_dropout(torch.cat([pu, qi], dim=1), self.dropout, self.training, True)
        acts = _tower_forward([m for _, m in named], x)
        loss, dlogit = _logit_grad(torch.addmv(self.out.bias, acts[-1], self.out.weight[0]), labels)
        dfeats, grads = self._out_grads(acts[-1], dlogit)
        dx, tower_grads = _tower_backward(named, acts, dfeats)
        if mask is not None:
            dx.mul_(mask)
        grads.update(tower_grads)
        half = pu.shape[1]
        grads["user.weight"] = self._emb_grad(self.user, users, dx[:, :half])
        grads["item.weight"] = self._emb_grad(self.item, items, dx[:, half:])
        return loss, grads


class NeuMF(NCFModule):
    """Neural Matrix Factorization: GMF and MLP side by side, last layers concatenated.

    Args:
        n_users, n_items: sizes of the id spaces.
        factors: GMF embedding size and MLP last hidden layer size.
        n_layers: MLP hidden layers.
        share_embeddings: one embedding per user/item for both parts (the paper keeps them
            separate, the default); then the GMF part uses the first ``factors`` columns.
        sparse: sparse embedding gradients.
        dropout: dropout rate of the MLP part's input while training (see :class:`MLP`).
    """

    kind = "neumf"

    def __init__(
        self,
        n_users: int,
        n_items: int,
        factors: int = 8,
        n_layers: int = 3,
        share_embeddings: bool = False,
        sparse: bool = False,
        dropout: float = 0.0,
    ):
        super().__init__()
        self.n_users, self.n_items, self.factors, self.n_layers = (
            n_users,
            n_items,
            factors,
            n_layers,
        )
        self.share_embeddings, self.sparse, self.dropout = share_embeddings, sparse, dropout
        self.gmf = GMF(n_users, n_items, factors, sparse)
        self.mlp = MLP(n_users, n_items, factors, n_layers, sparse, dropout)
        if share_embeddings:
            if self.mlp.user.embedding_dim < factors:
                raise NcfError("share_embeddings needs MLP embeddings at least `factors` wide")
            del self.gmf.user, self.gmf.item
        del self.gmf.out, self.mlp.out
        self.out = _output(factors + tower_sizes(factors, n_layers)[-1])


    def features(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        pu, qi = self.mlp.user(users), self.mlp.item(items)
        if self.share_embeddings:
            gmf = pu[:, : self.factors] * qi[:, : self.factors]
        else:
            gmf = self.gmf.features(users, items)
        x = _input_dropout(torch.cat([pu, qi], dim=-1), self.dropout, self.training)[0]
        return torch.cat([gmf, self.mlp.tower(x)], dim=-1)

    def candidate_tables(self) -> dict[str, torch.Tensor]:
        return _mlp_tables(self.mlp)

    @torch.no_grad()
    def score_candidates(self, users: torch.Tensor, items: torch.Tensor,
                         tables: dict[str, torch.Tensor] | None = None) -> torch.Tensor:
        if not _linears(self.mlp.tower):
            return super().score_candidates(users, items)
        f, w = self.factors, self.out.weight[0]
        if self.share_embeddings:
            gu, gq = self.mlp.user.weight[users, :f], self.mlp.item.weight[:, :f]
        else:
            gu, gq = self.gmf.user.weight[users], self.gmf.item.weight
        last = _tower_candidates(self.mlp, users, items, tables)
        mlp = torch.addmv(self.out.bias, last, w[f:])
        return _dot_candidates(gu * w[:f], gq, items) + mlp.view(items.shape)

    @torch.no_grad()
    def loss_grads(self, users, items, labels):  # type: ignore[no-untyped-def]
        f = self.factors
        pu = self.mlp.user.weight.index_select(0, users)
        qi = self.mlp.item.weight.index_select(0, items)
        if self.share_embeddings:
            gu, gi = pu[:, :f], qi[:, :f]
        else:
            gu = self.gmf.user.weight.index_select(0, users)
            gi = self.gmf.item.weight.index_select(0, items)
        named = _named_linears(self.mlp.tower, "mlp.tower")
        x, mask = _input_dropout(torch.cat([pu, qi], dim=1), self.dropout, self.training, True)
        acts = _tower_forward([m for _, m in named], x)
        feats = torch.cat([gu * gi, acts[-1]], dim=1)
        loss, dlogit = _logit_grad(torch.addmv(self.out.bias, feats, self.out.weight[0]), labels)
        dfeats, grads = self._out_grads(feats, dlogit)
        dx, tower_grads = _tower_backward(named, acts, dfeats[:, f:])
        if mask is not None:
            dx.mul_(mask)
        grads.update(tower_grads)
        half = pu.shape[1]
        du, di = dx[:, :half], dx[:, half:]
        dg = dfeats[:, :f]
        if self.share_embeddings:
            du = du.clone()
            di = di.clone()
            du[:, :f] += dg * gi
            di[:, :f] += dg * gu
        else:
            grads["gmf.user.weight"] = self._emb_grad(self.gmf.user, users, dg * gi)
            grads["gmf.item.weight"] = self._emb_grad(self.gmf.item, items, dg * gu)
        grads["mlp.user.weight"] = self._emb_grad(self.mlp.user, users, du)
        grads["mlp.item.weight"] = self._emb_grad(self.mlp.item, items, di)
        return loss, grads

    @classmethod
    def from_pretrained(cls, gmf: GMF, mlp: MLP, alpha: float = 0.5) -> NeuMF:
        """NeuMF initialised from trained GMF and MLP (the paper's pre-training, eq. 12).

        Embeddings and tower are copied; the output layer is fused by scaling GMF's weights
        *and bias* by ``alpha`` and MLP's by ``1 - alpha``, so that for every input the logit
        equals ``alpha * gmf_logit + (1 - alpha) * mlp_logit`` exactly.
        """
        if (gmf.n_users, gmf.n_items) != (mlp.n_users, mlp.n_items):
            raise NcfError("GMF and MLP were trained on different id spaces")
        if gmf.factors != mlp.factors:
            raise NcfError(f"GMF factors {gmf.factors} != MLP factors {mlp.factors}")
        check_alpha(alpha)
        model = cls(gmf.n_users, gmf.n_items, gmf.factors, mlp.n_layers, sparse=gmf.sparse,
                    dropout=mlp.dropout)
        with torch.no_grad():
            model.gmf.user.weight.copy_(gmf.user.weight)
            model.gmf.item.weight.copy_(gmf.item.weight)
            model.mlp.user.weight.copy_(mlp.user.weight)
            model.mlp.item.weight.copy_(mlp.item.weight)
            model.mlp.tower.load_state_dict(mlp.tower.state_dict())
            model.out.weight.copy_(
                torch.cat([alpha * gmf.out.weight, (1 - alpha) * mlp.out.weight], dim=1)
            )
            model.out.bias.copy_(alpha * gmf.out.bias + (1 - alpha) * mlp.out.bias)
        return model


MODELS: dict[str, type[NCFModule]] = {"gmf": GMF, "mlp": MLP, "neumf": NeuMF}


def build_model(kind: str, **hyper: Any) -> NCFModule:
    """Rebuild a model from its ``kind`` and ``hyper()`` dictionary."""
    if kind not in MODELS:
        raise NcfError(f"unknown model {kind!r} (choose from {', '.join(MODELS)})")
    return MODELS[kind](**hyper)
