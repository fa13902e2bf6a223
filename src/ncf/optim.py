"""Optimizers that update only the embedding rows a batch touches.

At Netflix scale (480k users) a dense optimizer step would read and write every embedding row
for each batch of 256 samples. Gradients therefore come in two shapes: a dense tensor (tower
weights, biases) or a :class:`RowGrad` (the rows of an embedding table that a batch used, with
their summed gradients). Rows a batch did not touch are left alone, moments included: the
"lazy" semantics of TensorFlow's LazyAdam and of PyTorch's ``SparseAdam``. For dense gradients
the updates equal ``torch.optim.Adam`` / ``torch.optim.SGD`` exactly (coupled L2 weight decay).

Both classes subclass ``torch.optim.Optimizer`` so that learning-rate schedulers such as
``ReduceLROnPlateau`` drive them; call ``step_with(grads)`` with a ``{name: grad}`` mapping.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

import torch

from ncf.errors import NcfError


@dataclass(frozen=True)
class RowGrad:
    """Gradient of an embedding table restricted to some rows.

    Args:
        index: int64 row indices, shape ``(n,)``; may repeat (they are summed).
        values: gradient rows, shape ``(n, dim)``.
    """

    index: torch.Tensor
    values: torch.Tensor

    def coalesce(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Unique rows and their summed gradients."""
        rows, inverse = torch.unique(self.index, return_inverse=True)
        summed = torch.zeros(len(rows), self.values.shape[1], dtype=self.values.dtype,
                             device=self.values.device)
        summed.index_add_(0, inverse, self.values)
        return rows, summed

    def to_dense(self, like: torch.Tensor) -> torch.Tensor:
        """The full gradient tensor of the table ``like``."""
        out = torch.zeros_like(like)
        out.index_add_(0, self.index, self.values)
        return out


Grad = torch.Tensor | RowGrad


def grads_from_autograd(named: Iterable[tuple[str, torch.nn.Parameter]]) -> dict[str, Grad]:
    """Collect ``.grad`` after ``loss.backward()``; sparse embedding grads become RowGrads."""
    out: dict[str, Grad] = {}
    for name, p in named:
        if p.grad is None:
            continue
        g = p.grad
        if g.is_sparse:
            g = g.coalesce()
            out[name] = RowGrad(g.indices()[0], g.values())
        else:
            out[name] = g
    return out


class _RowOptimizer(torch.optim.Optimizer):
    def __init__(self, named_params: Iterable[tuple[str, torch.nn.Parameter]], defaults: dict):
        named = list(named_params)
        if not named:
            raise NcfError("optimizer got no parameters")
        self.names = [n for n, _ in named]
        self._by_name = dict(named)
        super().__init__([p for _, p in named], defaults)

    def step(self, closure=None):  # type: ignore[override]
        raise NcfError(f"{type(self).__name__}: call step_with(grads) with a {{name: grad}} dict")

    @torch.no_grad()
    def step_with(self, grads: dict[str, Grad]) -> None:
        """Apply one update from gradients keyed by parameter name."""
        group = self.param_groups[0]
        dense_p, dense_g = [], []
        for name, g in grads.items():
            p = self._by_name[name]
            if isinstance(g, RowGrad):
                rows, values = g.coalesce()
                self._update_rows(p, rows, values, group)
            else:
                dense_p.append(p)
                dense_g.append(g)
        if dense_p:
            self._update_dense(dense_p, dense_g, group)

    def _update_rows(self, p, rows, g, group) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def _update_dense(self, ps, gs, group) -> None:  # pragma: no cover - abstract
        raise NotImplementedError


class Adam(_RowOptimizer):
    """Adam (Kingma & Ba) with lazy row-wise updates for :class:`RowGrad` gradients."""

    def __init__(
        self,
        named_params: Iterable[tuple[str, torch.nn.Parameter]],
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
    ):
        if lr <= 0 or weight_decay < 0:
            raise NcfError(f"Adam needs lr > 0 and weight_decay >= 0, got {lr}, {weight_decay}")
        super().__init__(named_params, dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay))

    def _state_of(self, p: torch.Tensor) -> dict:
        st = self.state[p]
        if not st:
            st["step"] = 0
            st["exp_avg"] = torch.zeros_like(p)
            st["exp_avg_sq"] = torch.zeros_like(p)
            if p.dim() == 2:
                st["row_step"] = torch.zeros(p.shape[0], dtype=p.dtype, device=p.device)
        return st

    def _update_dense(self, ps, gs, group) -> None:
        b1, b2 = group["betas"]
        lr, eps, wd = group["lr"], group["eps"], group["weight_decay"]
        states = [self._state_of(p) for p in ps]
        if wd:
            gs = torch._foreach_add(gs, ps, alpha=wd)
        m = [s["exp_avg"] for s in states]
        v = [s["exp_avg_sq"] for s in states]
        torch._foreach_lerp_(m, gs, 1 - b1)
        torch._foreach_mul_(v, b2)
        torch._foreach_addcmul_(v, gs, gs, value=1 - b2)
        for s in states:
            s["step"] += 1
        step = states[0]["step"]
        bc1, bc2 = 1 - b1**step, 1 - b2**step
        denom = torch._foreach_sqrt(v)
        torch._foreach_div_(denom, math.sqrt(bc2))
        torch._foreach_add_(denom, eps)
        torch._foreach_addcdiv_(ps, m, denom, value=-lr / bc1)

    def _update_rows(self, p, rows, g, group) -> None:
        b1, b2 = group["betas"]
        lr, eps, wd = group["lr"], group["eps"], group["weight_decay"]
        st = self._state_of(p)
        w = p.index_select(0, rows)
        if wd:
            g = g.add(w, alpha=wd)
        m = st["exp_avg"].index_select(0, rows).lerp_(g, 1 - b1)
        v = st["exp_avg_sq"].index_select(0, rows).mul_(b2).addcmul_(g, g, value=1 - b2)
        t = st["row_step"].index_select(0, rows).add_(1)  # per-row step: lazy bias correction
        st["row_step"].index_copy_(0, rows, t)
        st["exp_avg"].index_copy_(0, rows, m)
        st["exp_avg_sq"].index_copy_(0, rows, v)
        bc1 = (1 - b1**t).unsqueeze(1)
        bc2 = (1 - b2**t).unsqueeze(1)
        update = m.div_(bc1).div_(v.div_(bc2).sqrt_().add_(eps)).mul_(lr)
        p.index_copy_(0, rows, w.sub_(update))


class SGD(_RowOptimizer):
    """SGD with momentum and L2 weight decay; lazy row-wise updates for :class:`RowGrad`."""

    def __init__(
        self,
        named_params: Iterable[tuple[str, torch.nn.Parameter]],
        lr: float = 0.01,
        momentum: float = 0.0,
        weight_decay: float = 0.0,
        nesterov: bool = False,
    ):
        if lr <= 0 or momentum < 0 or weight_decay < 0:
            raise NcfError(f"SGD needs lr > 0, momentum >= 0, weight_decay >= 0")
        super().__init__(
            named_params, dict(lr=lr, momentum=momentum, weight_decay=weight_decay, nesterov=nesterov)
        )

    def _buf(self, p: torch.Tensor) -> torch.Tensor | None:
        st = self.state[p]
        return st.get("momentum_buffer")

    def _update_dense(self, ps, gs, group) -> None:
        lr, mom, wd = group["lr"], group["momentum"], group["weight_decay"]
        if wd:
            gs = torch._foreach_add(gs, ps, alpha=wd)
        if mom:
            bufs = []
            for p, g in zip(ps, gs):
                st = self.state[p]
                if "momentum_buffer" not in st:
                    st["momentum_buffer"] = g.clone()
                else:
                    st["momentum_buffer"].mul_(mom).add_(g)
                bufs.append(st["momentum_buffer"])
            gs = torch._foreach_add(gs, bufs, alpha=mom) if group["nesterov"] else bufs
        torch._foreach_add_(ps, gs, alpha=-lr)

    def _update_rows(self, p, rows, g, group) -> None:
        lr, mom, wd = group["lr"], group["momentum"], group["weight_decay"]
        w = p.index_select(0, rows)
        if wd:
            g = g.add(w, alpha=wd)
        if mom:
            st = self.state[p]
            if "momentum_buffer" not in st:
                st["momentum_buffer"] = torch.zeros_like(p)
            buf = st["momentum_buffer"].index_select(0, rows).mul_(mom).add_(g)
            st["momentum_buffer"].index_copy_(0, rows, buf)
            g = g.add(buf, alpha=mom) if group["nesterov"] else buf
        p.index_copy_(0, rows, w.sub_(g, alpha=lr))


OPTIMIZERS = {"adam": Adam, "sgd": SGD}
