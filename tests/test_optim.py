"""The row-wise optimizers: equal to torch.optim on dense gradients, lazy on rows."""

from __future__ import annotations

import pytest
import torch

from ncf.errors import NcfError
from ncf.optim import SGD, Adam, RowGrad


def _pair(seed: int = 0) -> tuple[torch.nn.Parameter, torch.nn.Parameter]:
    torch.manual_seed(seed)
    w = torch.randn(6, 3, dtype=torch.float64)
    return torch.nn.Parameter(w.clone()), torch.nn.Parameter(w.clone())


@pytest.mark.parametrize(
    ("ours", "ref", "kw"),
    [
        (Adam, torch.optim.Adam, {"lr": 0.01}),
        (Adam, torch.optim.Adam, {"lr": 0.01, "weight_decay": 0.1}),
        (SGD, torch.optim.SGD, {"lr": 0.05}),
        (SGD, torch.optim.SGD, {"lr": 0.05, "momentum": 0.9, "weight_decay": 1e-2}),
        (SGD, torch.optim.SGD, {"lr": 0.05, "momentum": 0.9, "nesterov": True}),
    ],
)
def test_dense_updates_equal_torch_optim(ours: type, ref: type, kw: dict) -> None:
    a, b = _pair()
    opt_a, opt_b = ours([("w", a)], **kw), ref([b], **kw)
    gen = torch.Generator().manual_seed(1)
    for _ in range(5):
        g = torch.randn(6, 3, dtype=torch.float64, generator=gen)
        opt_a.step_with({"w": g})
        b.grad = g.clone()
        opt_b.step()
    torch.testing.assert_close(a.data, b.data)


@pytest.mark.parametrize("cls", [Adam, SGD])
def test_row_updates_touch_only_the_rows_used(cls: type) -> None:
    a, _ = _pair()
    before = a.data.clone()
    opt = cls([("w", a)], lr=0.1, **({"momentum": 0.9} if cls is SGD else {}))
    # rows 1 and 4, row 4 twice: its gradients are summed
    opt.step_with({"w": RowGrad(torch.tensor([4, 1, 4]), torch.ones(3, 3, dtype=torch.float64))})
    changed = (a.data != before).any(dim=1)
    assert changed.tolist() == [False, True, False, False, True, False]


def test_row_adam_first_step_matches_dense_adam_on_those_rows() -> None:
    a, b = _pair()
    g_rows = torch.randn(2, 3, dtype=torch.float64)
    Adam([("w", a)], lr=0.01).step_with({"w": RowGrad(torch.tensor([0, 5]), g_rows)})
    dense = torch.zeros(6, 3, dtype=torch.float64)
    dense[[0, 5]] = g_rows
    Adam([("w", b)], lr=0.01).step_with({"w": dense})
    torch.testing.assert_close(a.data[[0, 5]], b.data[[0, 5]])


def test_row_sgd_duplicate_rows_are_summed() -> None:
    a, b = _pair()
    SGD([("w", a)], lr=0.1).step_with(
        {"w": RowGrad(torch.tensor([2, 2]), torch.ones(2, 3, dtype=torch.float64))})
    torch.testing.assert_close(a.data[2], b.data[2] - 0.2)


def test_bad_hyper_parameters_and_plain_step_raise() -> None:
    a, _ = _pair()
    with pytest.raises(NcfError):
        Adam([("w", a)], lr=0)
    with pytest.raises(NcfError):
        SGD([("w", a)], lr=0.1, momentum=-1)
    with pytest.raises(NcfError):
        SGD([("w", a)], lr=0.1).step()


def test_plateau_scheduler_drives_our_optimizers() -> None:
    a, _ = _pair()
    opt = SGD([("w", a)], lr=0.01, momentum=0.9)
    sched = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, mode="max", factor=0.3, patience=1)
    for metric in (0.5, 0.4, 0.4, 0.4):
        sched.step(metric)
    assert opt.param_groups[0]["lr"] == pytest.approx(0.003)


@pytest.mark.parametrize("weight_decay", [0.0, 0.1])
def test_adam_without_torchs_fused_cpu_kernel_equals_torch_optim(monkeypatch,  # type: ignore[no-untyped-def]
                                                                 weight_decay: float) -> None:
    """torch builds before 2.4 have ``torch._fused_adam_`` for GPUs only: on a CPU it raises.
    Adam then does the same arithmetic in plain tensor operations (dense and row-wise)."""
    import ncf.optim

    def cuda_only(*a, **k):  # type: ignore[no-untyped-def]
        raise RuntimeError("\"_fused_adam_\" not implemented for 'CPU'")

    monkeypatch.setattr(torch, "_fused_adam_", cuda_only)
    monkeypatch.setattr(ncf.optim, "FUSED_ADAM", None)  # probed again
    a, b = _pair()
    rows, ref_rows = _pair(3)
    opt_a = Adam([("w", a), ("r", rows)], lr=0.01, weight_decay=weight_decay)
    opt_b = torch.optim.Adam([b, ref_rows], lr=0.01, weight_decay=weight_decay)
    gen = torch.Generator().manual_seed(1)
    for _ in range(5):  # every row touched at every step: lazy Adam is plain Adam
        g = torch.randn(6, 3, dtype=torch.float64, generator=gen)
        g_rows = torch.randn(6, 3, dtype=torch.float64, generator=gen)
        opt_a.step_with({"w": g, "r": RowGrad(torch.arange(6), g_rows)})
        b.grad, ref_rows.grad = g.clone(), g_rows.clone()
        opt_b.step()
    assert ncf.optim.FUSED_ADAM is False
    torch.testing.assert_close(a.data, b.data)
    torch.testing.assert_close(rows.data, ref_rows.data)
