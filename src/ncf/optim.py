"""Optimizers that update only the embedding rows a batch touches.

At Netflix scale (480k users) a dense optimizer step would read and write every embedding row
for each batch of 256 samples. Gradients therefore come in two shapes: a dense tensor (tower
weights, biases) or a :class:`RowGrad` (the rows of an embedding table that a batch used, with
their summed gradients). Rows a batch did not touch are left alone, moments included: the
"lazy" semantics of TensorFlow's LazyAdam and of PyTorch's ``SparseAdam`` (one step count
per table for the bias correction). For dense gradients
the updates equal ``torch.optim.Adam`` / ``torch.optim.SGD`` exactly (coupled L2 weight decay).

Both classes subclass ``torch.optim.Optimizer`` so that learning-rate schedulers such as
``ReduceLROnPlateau`` drive them; call ``step_with(grads)`` with a ``{name: grad}`` mapping.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

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

    def coalesce(
        self, unique: tuple[torch.Tensor, torch.Tensor] | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Unique rows and their summed gradients (``unique``: ``torch.unique`` of the index,
        with inverse, when already known)."""
        rows, inverse = unique or torch.unique(self.index, return_inverse=True)
        summed = torch.zeros(
            len(rows), self.values.shape[1], dtype=self.values.dtype, device=self.values.device
        )
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
    """Shared machinery: names, row updates, and the flat buffer of the dense parameters.

    The state is keyed by the parameters, as ``torch.optim`` keys it, so that
    :meth:`state_dict` / :meth:`load_state_dict` work (checkpoints of a resumable run). When
    the dense parameters are views of one flat buffer (:meth:`_flatten`), their state is kept
    in flat buffers too, and each parameter's state entries are views of those.
    """

    def __init__(self, named_params: Iterable[tuple[str, torch.nn.Parameter]], defaults: dict):
        named = list(named_params)
        if not named:
            raise NcfError("optimizer got no parameters")
        self.names = [n for n, _ in named]
        self._by_name = dict(named)
        self._flat: tuple[list[str], torch.Tensor | None] | None = None
        self._flat_state: dict[str, torch.Tensor] = {}
        super().__init__([p for _, p in named], defaults)

    def _new_state(self, p: torch.Tensor) -> dict[str, torch.Tensor]:  # pragma: no cover
        """The state of a parameter before its first update."""
        raise NotImplementedError

    def _state_of(self, p: torch.Tensor) -> dict:
        st = self.state[p]
        if not st:
            st.update(self._new_state(p))
        return st

    def _flatten(self, names: list[str]) -> torch.Tensor | None:
        """Make the densely updated parameters views of one buffer: one update op for all.

        On a CPU, a step over a dozen small tensors costs more in per-tensor dispatch than in
        arithmetic; one flat buffer turns ~70 small kernels into ~8. On a GPU the fused
        multi-tensor kernels take the list in one launch already, and a flat buffer would cost a
        copy of every gradient (whole embedding tables, when dense) at each step.
        """
        params = [self._by_name[n] for n in names]
        if len({(p.dtype, p.device) for p in params}) != 1 or params[0].device.type != "cpu":
            return None
        flat = torch.empty(
            sum(p.numel() for p in params), dtype=params[0].dtype, device=params[0].device
        )
        offset = 0
        for p in params:
            view = flat[offset : offset + p.numel()]
            view.copy_(p.data.reshape(-1))
            p.data = view.view_as(p)
            offset += p.numel()
        self._flat_state = self._new_state(flat)
        self._share_flat_state(flat, names)
        return flat

    def _share_flat_state(self, flat: torch.Tensor, names: list[str]) -> None:
        """Give each flattened parameter its state as views of the flat state buffers.

        State the parameters already hold (restored by :meth:`load_state_dict`) is copied
        into the flat buffers first; per-tensor scalars (Adam's step) are shared.
        """
        params = [self._by_name[n] for n in names]
        for key, buf in self._flat_state.items():
            offset = 0
            for i, p in enumerate(params):
                old = self.state[p].get(key)
                if buf.numel() == flat.numel():  # one entry per weight: a view
                    view = buf[offset : offset + p.numel()].view_as(p)
                    if old is not None:
                        view.copy_(old)
                    self.state[p][key] = view
                    offset += p.numel()
                else:  # a scalar shared by the buffer (a step count)
                    if old is not None and i == 0:
                        buf.copy_(old)
                    self.state[p][key] = buf

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore the state of :meth:`state_dict` (copied: the optimizer that gave it goes
        on with its own; the flat buffers take it in, if any)."""
        super().load_state_dict(state_dict)
        for st in self.state.values():
            for key, value in st.items():
                if isinstance(value, torch.Tensor):
                    st[key] = value.clone()
        if self._flat is not None and self._flat[1] is not None:
            self._share_flat_state(self._flat[1], self._flat[0])

    def step(self, closure=None):  # type: ignore[override]
        raise NcfError(f"{type(self).__name__}: call step_with(grads) with a {{name: grad}} dict")

    @torch.no_grad()
    def step_with(self, grads: dict[str, Grad]) -> None:
        """Apply one update from gradients keyed by parameter name."""
        group = self.param_groups[0]
        dense_names: list[str] = []
        uniques: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}  # tables sharing an index
        for name, g in grads.items():
            if isinstance(g, RowGrad):
                key = id(g.index)
                if key not in uniques:
                    uniques[key] = torch.unique(g.index, return_inverse=True)
                rows, values = g.coalesce(uniques[key])
                self._update_rows(self._by_name[name], rows, values, group)
            else:
                dense_names.append(name)
        if not dense_names:
            return
        if self._flat is None:
            flat = self._flatten(dense_names)
            self._flat = (dense_names, flat)
        names, flat = self._flat
        if flat is not None and names == dense_names:
            g = torch.cat([grads[n].reshape(-1) for n in names])  # type: ignore[union-attr]
            self._update_dense([flat], [g], group, [self._flat_state])
        else:
            ps = [self._by_name[n] for n in dense_names]
            self._update_dense(ps, [grads[n] for n in dense_names], group,
                               [self._state_of(p) for p in ps])

    def _update_rows(self, p, rows, g, group) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def _update_dense(self, ps, gs, group, states) -> None:  # pragma: no cover - abstract
        raise NotImplementedError


def _fused_adam_works() -> bool:
    """Whether torch has a fused Adam kernel for CPU tensors (torch 2.4 and later)."""
    try:
        ones = [torch.ones(2)]
        torch._fused_adam_(ones, [torch.ones(2)], [torch.zeros(2)], [torch.zeros(2)], [],
                           [torch.ones(())], lr=0.1, beta1=0.9, beta2=0.999, weight_decay=0.0,
                           eps=1e-8, amsgrad=False, maximize=False)
    except (AttributeError, RuntimeError, NotImplementedError, TypeError):
        return False
    return True


#: ``None`` until the first Adam step asks; then whether the fused CPU kernel is used.
FUSED_ADAM: bool | None = None


def _fused_adam_for(device: torch.device) -> bool:
    """Whether to use the fused kernel for tensors on ``device`` (probed once for the CPU)."""
    global FUSED_ADAM
    if device.type != "cpu":
        return hasattr(torch, "_fused_adam_")
    if FUSED_ADAM is None:
        FUSED_ADAM = _fused_adam_works()
    return FUSED_ADAM


def _adam(ps: list, gs: list, ms: list, vs: list, steps: list, group: dict) -> None:
    """One Adam update of each tensor (steps are incremented by the caller).

    torch's fused kernel (one pass over each tensor) where this torch build has it for the
    tensors' device; otherwise the same arithmetic as ``torch.optim.Adam``'s single-tensor
    path, in public tensor operations (torch builds before 2.4 have no fused CPU kernel).
    """
    b1, b2 = group["betas"]
    lr, wd, eps = group["lr"], group["weight_decay"], group["eps"]
    fused = _fused_adam_for(ps[0].device)
    if fused:
        torch._fused_adam_(ps, gs, ms, vs, [], steps, lr=lr, beta1=b1, beta2=b2,
                           weight_decay=wd, eps=eps, amsgrad=False, maximize=False)
        return
    for p, g, m, v, step_t in zip(ps, gs, ms, vs, steps):
        if wd:
            g = g.add(p, alpha=wd)
        m.lerp_(g, 1 - b1)
        v.mul_(b2).addcmul_(g, g, value=1 - b2)
        step = float(step_t)
        denom = (v.sqrt() / math.sqrt(1 - b2**step)).add_(eps)
        p.addcdiv_(m, denom, value=-lr / (1 - b1**step))


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

    def _new_state(self, p: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"step_t": torch.zeros((), dtype=p.dtype, device=p.device),
                "exp_avg": torch.zeros_like(p), "exp_avg_sq": torch.zeros_like(p)}

    def _update_dense(self, ps, gs, group, states) -> None:
        for st in states:
            st["step_t"] += 1
        _adam(ps, list(gs), [st["exp_avg"] for st in states],
              [st["exp_avg_sq"] for st in states], [st["step_t"] for st in states], group)

    def _update_rows(self, p, rows, g, group) -> None:
        st = self._state_of(p)
        st["step_t"] += 1  # one step count per table, as torch's SparseAdam
        w = p.index_select(0, rows)
        m = st["exp_avg"].index_select(0, rows)
        v = st["exp_avg_sq"].index_select(0, rows)
        _adam([w], [g], [m], [v], [st["step_t"]], group)
        p.index_copy_(0, rows, w)
        st["exp_avg"].index_copy_(0, rows, m)
        st["exp_avg_sq"].index_copy_(0, rows, v)


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
            raise NcfError("SGD needs lr > 0, momentum >= 0, weight_decay >= 0")
        super().__init__(
            named_params,
            dict(lr=lr, momentum=momentum, weight_decay=weight_decay, nesterov=nesterov),
        )

    def _new_state(self, p: torch.Tensor) -> dict[str, torch.Tensor]:
        # a zero buffer gives the first step exactly ``g`` (0 * momentum + g), as torch's
        # clone of the first gradient does
        if not self.defaults["momentum"]:
            return {}
        return {"momentum_buffer": torch.zeros_like(p)}

    def _update_dense(self, ps, gs, group, states) -> None:
        lr, mom, wd = group["lr"], group["momentum"], group["weight_decay"]
        if wd:
            gs = torch._foreach_add(gs, ps, alpha=wd)
        if mom:
            bufs = []
            for g, st in zip(gs, states):
                if "momentum_buffer" not in st:
                    st["momentum_buffer"] = torch.zeros_like(g)
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
