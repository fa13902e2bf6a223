"""Resumable runs: checkpoints of every stage, and a run killed with SIGKILL in the middle of
the MLP stage that, resumed, ends exactly as the same run uninterrupted."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from ncf.cli import main
from ncf.optim import SGD, Adam, RowGrad
from ncf.training import TrainConfig, train

# dropout on (the default 0.2): the masks come from torch's global generator, which the
# checkpoints must carry over
ARGS = ["--epochs", "3", "--factors", "8", "--batch-size", "256", "--quiet",
        "--full-ranking-users", "0"]
TIMEOUT = 300  # seconds for the killed subprocess

#: The run started by the subprocess: SIGKILL in the middle of the MLP's second epoch.
KILLED = """
import os, signal, sys
import ncf.models
steps = int(sys.argv[1])
real = ncf.models.MLP.loss_grads
calls = []
def loss_grads(self, *a):
    calls.append(1)
    if len(calls) == steps:
        os.kill(os.getpid(), signal.SIGKILL)
    return real(self, *a)
ncf.models.MLP.loss_grads = loss_grads
from ncf.cli import main
main(sys.argv[2:])
"""


@pytest.fixture(scope="module")
def synth(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("data") / "S"
    assert main(["data", "synth", "--ratings", "20k", "--out", str(out)]) == 0
    return out


def _without_times(tree: Any) -> Any:
    """``tree`` without its wall-clock entries (seconds differ from run to run)."""
    if isinstance(tree, dict):
        return {k: _without_times(v) for k, v in tree.items() if "seconds" not in k}
    return tree


def _weights(run: Path, model: str) -> dict[str, np.ndarray]:
    with np.load(run / "models" / f"{model}.npz") as z:
        return {k: z[k] for k in z.files if k.startswith("a_w.")}


def _history(run: Path, model: str) -> list[list[str]]:
    rows = [line.split(",") for line in (run / "history" / f"{model}.csv").read_text().split()]
    keep = [i for i, name in enumerate(rows[0]) if "seconds" not in name]
    return [[r[i] for i in keep] for r in rows]


def test_a_run_killed_in_the_mlp_stage_resumes_to_the_same_results(synth: Path,
                                                                   tmp_path: Path) -> None:
    reference, killed = tmp_path / "reference", tmp_path / "killed"
    assert main(["train", "--data", str(synth), "--out", str(reference), *ARGS]) == 0
    config = json.loads((reference / "config.json").read_text())
    n_train = config["data"]["prepare"]["sizes"]["core"]["ratings"] - 2 * 638
    steps = -(-n_train * 5 // 256)  # batches of one epoch
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    proc = subprocess.run(
        [sys.executable, "-c", KILLED, str(steps + steps // 2), "train", "--data", str(synth),
         "--out", str(killed), *ARGS], env=env, capture_output=True, text=True, timeout=TIMEOUT)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    # GMF finished, the MLP had one epoch behind it: its checkpoint is that epoch's
    assert sorted(p.name for p in (killed / "models").iterdir()) == ["gmf.npz"]
    assert sorted(p.name for p in (killed / "checkpoints").iterdir()) == ["gmf.npz", "mlp.npz"]
    assert not (killed / "metrics.json").exists()

    assert main(["train", "--resume", str(killed), "--quiet"]) == 0
    ours = json.loads((killed / "metrics.json").read_text())
    theirs = json.loads((reference / "metrics.json").read_text())
    assert _without_times(ours) == _without_times(theirs)  # every digit
    for model in ("gmf", "mlp", "neumf"):
        mine, ref = _weights(killed, model), _weights(reference, model)
        assert mine.keys() == ref.keys()
        assert all(np.array_equal(mine[k], ref[k]) for k in ref), model
        assert _history(killed, model) == _history(reference, model)
    assert not (killed / "checkpoints").exists()  # a finished run keeps no checkpoint


def _tiny() -> tuple[Any, Any, Any]:
    from planted import planted

    return planted(n_users=80, n_items=120, per_user=10)


class _Stop(Exception):
    pass


def _stop_in(epoch: int) -> Any:
    """An ``on_epoch`` that stops training when ``epoch`` has run, before its checkpoint is
    written (as a kill there would): the checkpoint on disk is the epoch before's."""
    def on_epoch(record: Any) -> None:
        if record.epoch == epoch:
            raise _Stop
    return on_epoch


@pytest.mark.parametrize(("optimizer", "sampler"),
                         [("adam", "host"), ("sgd", "host"), ("adam", "device")])
def test_a_stage_resumed_from_any_epoch_ends_as_it_would_have(tmp_path: Path, optimizer: str,
                                                              sampler: str) -> None:
    """Host epochs (numpy + torch generators) and device epochs (torch generators on the
    model's device; here the CPU), Adam and SGD with momentum, a plateau scheduler, early
    stopping, warm-up and dropout: stopped after any epoch, the stage ends as it would have."""
    from ncf.models import MLP

    x, val, _ = _tiny()
    cfg = TrainConfig(epochs=4, batch_size=64, optimizer=optimizer, lr=0.01, momentum=0.9,
                      weight_decay=1e-4, plateau_factor=0.5, plateau_patience=1,
                      early_stopping=3, warmup_steps=7, sampler=sampler)

    def fresh() -> MLP:
        torch.manual_seed(0)
        return MLP(x.n_users, x.n_items, factors=8, n_layers=2, dropout=0.2)

    ref = fresh()
    h_ref = train(ref, x, val, cfg)
    for stop in (2, 4):
        path = tmp_path / f"stop{stop}-{optimizer}-{sampler}.npz"
        with pytest.raises(_Stop):
            train(fresh(), x, val, cfg, checkpoint=path, on_epoch=_stop_in(stop))
        model = fresh()  # a new process starts from new weights: the checkpoint has them all
        torch.manual_seed(123)  # and from another state of the global generator
        h = train(model, x, val, cfg, checkpoint=path)
        assert [r.loss for r in h.records] == [r.loss for r in h_ref.records]
        assert [(r.hr, r.ndcg, r.lr) for r in h.records] == [
            (r.hr, r.ndcg, r.lr) for r in h_ref.records]
        assert h.best_epoch == h_ref.best_epoch
        assert all(torch.equal(model.state_dict()[k], v) for k, v in ref.state_dict().items())
        # a finished stage trains nothing again: its final weights and generators come back
        after = torch.get_rng_state()
        again = fresh()
        assert len(train(again, x, val, cfg, checkpoint=path).records) == len(h.records)
        assert all(torch.equal(again.state_dict()[k], v) for k, v in ref.state_dict().items())
        assert torch.equal(torch.get_rng_state(), after)


def test_checkpoints_refuse_another_configuration(tmp_path: Path) -> None:
    from ncf.errors import NcfError
    from ncf.models import GMF

    x, val, _ = _tiny()
    path = tmp_path / "gmf.npz"
    train(GMF(x.n_users, x.n_items, 8), x, val, TrainConfig(epochs=1), checkpoint=path)
    with pytest.raises(NcfError, match="another configuration"):
        train(GMF(x.n_users, x.n_items, 8), x, val, TrainConfig(epochs=2), checkpoint=path)


@pytest.mark.parametrize("cls", [Adam, SGD])
def test_optimizer_state_dict_round_trips_with_the_flat_buffer(cls: type) -> None:
    """The dense parameters share one flat buffer: the state is still keyed by parameter, and
    a fresh optimizer given it goes on exactly as the original."""
    def make() -> tuple[torch.nn.Parameter, torch.nn.Parameter, torch.nn.Parameter]:
        torch.manual_seed(0)
        return (torch.nn.Parameter(torch.randn(5, 3)), torch.nn.Parameter(torch.randn(3)),
                torch.nn.Parameter(torch.randn(8, 2)))

    kw = {"lr": 0.01, "weight_decay": 0.01, **({"momentum": 0.9} if cls is SGD else {})}
    gen = torch.Generator().manual_seed(1)
    grads = [{"a": torch.randn(5, 3, generator=gen), "b": torch.randn(3, generator=gen),
              "e": RowGrad(torch.tensor([1, 6, 1]), torch.randn(3, 2, generator=gen))}
             for _ in range(6)]
    a, b, e = make()
    opt = cls([("a", a), ("b", b), ("e", e)], **kw)
    for g in grads[:3]:
        opt.step_with(g)
    state = opt.state_dict()
    assert set(state["state"]) == {0, 1, 2}  # by parameter, not by the flat buffer
    a2, b2, e2 = (torch.nn.Parameter(t.detach().clone()) for t in (a, b, e))
    opt2 = cls([("a", a2), ("b", b2), ("e", e2)], **kw)
    opt2.load_state_dict(state)
    for g in grads[3:]:
        opt.step_with(g)
        opt2.step_with(g)
    for x, y in ((a, a2), (b, b2), (e, e2)):
        assert torch.equal(x, y)
