"""The pipeline: refitting on train + validation replays exactly the epochs chosen on validation."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch
from planted import planted_split

from ncf.errors import NcfError
from ncf.interactions import Interactions
from ncf.models import GMF, MLP, NeuMF
from ncf.pipeline import PipelineConfig, run_pipeline
from ncf.split import Split
from ncf.training import TrainConfig, train

N_USERS, N_ITEMS = 60, 120


@pytest.fixture(scope="module")
def split() -> Split:
    return planted_split(N_USERS, N_ITEMS)


def _config(epochs: int = 4, **kw: object) -> PipelineConfig:
    stage = TrainConfig(epochs=epochs, batch_size=64, lr=0.01)
    neumf = TrainConfig(optimizer="sgd", lr=0.05, momentum=0.9, epochs=3, batch_size=64,
                        plateau_factor=0.5, plateau_patience=0)
    return PipelineConfig(factors=8, n_layers=2, gmf=stage, mlp=stage, neumf=neumf,
                          full_ranking_users=None, **kw)  # type: ignore[arg-type]


def test_concat_keeps_rows_in_order_and_drops_missing_columns() -> None:
    a = Interactions(np.array([0, 1]), np.array([2, 0]), np.array([5.0, 3.0]),
                     np.array([10, 11]), 2, 3, np.arange(2), np.arange(3))
    b = a.subset(np.array([1])).with_arrays(timestamps=None)
    c = a.concat(b)
    assert c.user_ids.tolist() == [0, 1, 1] and c.item_ids.tolist() == [2, 0, 0]
    assert c.ratings is not None and c.ratings.tolist() == [5.0, 3.0, 3.0]
    assert c.timestamps is None
    other = Interactions(np.array([0]), np.array([0]), None, None, 1, 3, np.arange(1),
                         np.arange(3))
    with pytest.raises(NcfError, match="same id spaces"):
        a.concat(other)


def test_lr_schedule_is_replayed_epoch_by_epoch(split: Split) -> None:
    torch.manual_seed(0)
    model = GMF(N_USERS, N_ITEMS, 4)
    cfg = TrainConfig(epochs=3, batch_size=64, lr_schedule=(0.01, 0.003, 0.0009))
    history = train(model, split.train, None, cfg)
    assert [r.lr for r in history.records] == [0.01, 0.003, 0.0009]
    assert history.best_epoch == 3  # no validation: the last epoch is kept


def test_refit_retrains_each_stage_on_train_and_validation(split: Split) -> None:
    config = _config(refit=True, dropout=0.0)  # dropout masks would follow torch's RNG state
    results = run_pipeline(split, config)
    full = split.train.concat(split.validation)  # type: ignore[arg-type]
    assert len(full) == len(split.train) + N_USERS

    def replay(model: torch.nn.Module, cfg: TrainConfig, name: str) -> None:
        h = results[name].history
        assert results[name].metrics["refit"]["epochs"] == h.best_epoch
        if h.best_epoch:
            lrs = tuple(r.lr for r in h.records[: h.best_epoch])
            train(model, full, None, replace(cfg, epochs=h.best_epoch, lr_schedule=lrs))

    # The same initial weights (seeded as the pipeline seeds them), trained on train +
    # validation for the chosen epochs, give exactly the final weights.
    torch.manual_seed(config.seed)
    gmf = GMF(N_USERS, N_ITEMS, 8)
    replay(gmf, config.gmf, "gmf")
    torch.manual_seed(config.seed + 1)
    mlp = MLP(N_USERS, N_ITEMS, 8, 2)
    replay(mlp, config.mlp, "mlp")
    neumf = NeuMF.from_pretrained(gmf, mlp)
    replay(neumf, replace(config.neumf, keep_initial=True), "neumf")
    for name, model in (("gmf", gmf), ("mlp", mlp), ("neumf", neumf)):
        got = results[name].model.state_dict()
        for key, value in model.state_dict().items():
            torch.testing.assert_close(got[key], value, msg=f"{name} {key}")
    # The refit models differ from the selected ones, which are reported beside them.
    plain = run_pipeline(split, _config(refit=False, dropout=0.0))
    for name in ("gmf", "mlp"):
        before = results[name].metrics["refit"]["sampled_before"]
        assert before["hr"] == pytest.approx(plain[name].metrics["sampled"]["hr"])
        assert not torch.equal(plain[name].model.user.weight, results[name].model.user.weight)
    assert "refit" not in plain["gmf"].metrics


def test_refit_learns_the_planted_blocks(split: Split) -> None:
    results = run_pipeline(split, _config(epochs=15, refit=True))
    for res in results.values():
        assert res.metrics["sampled"]["hr"] > 0.35  # chance: 0.10


def test_shared_embeddings_are_trained_as_configured_or_refused(split: Split) -> None:
    """A pre-trained NeuMF comes from GMF and MLP with their own embeddings: asking it to share
    one is refused (it used to be dropped silently); from scratch, it shares."""
    with pytest.raises(NcfError, match="share_embeddings needs a NeuMF trained from scratch"):
        _config(share_embeddings=True)
    config = replace(_config(epochs=1, pretrain=False), share_embeddings=True)
    model = run_pipeline(split, config)["neumf"].model
    assert isinstance(model, NeuMF) and model.share_embeddings
    assert not hasattr(model.gmf, "user")  # one table per side, the MLP's


def test_sparse_is_resolved_for_the_device_and_recorded() -> None:
    """Row-wise updates change what the optimizers compute (lazy Adam, decay on touched rows):
    the choice is made per device, explicitly, and the configuration that ran says which."""
    from ncf.experiments.cells import ncf_cell_config, pipeline_config
    from ncf.experiments.presets import ExperimentOptions
    from ncf.pipeline import init_model, resolve_sparse

    many = 100_001
    assert init_model("gmf", PipelineConfig(), many, 5, device="cpu").sparse is True
    assert init_model("gmf", PipelineConfig(), many, 5, device="cuda").sparse is False
    assert init_model("gmf", PipelineConfig(), 50, 5, device="cpu").sparse is False
    assert init_model("mlp", PipelineConfig(sparse=False), many, 5).sparse is False
    assert resolve_sparse(True, 5, "cuda") is True
    budget = ExperimentOptions().budget()
    cell = ncf_cell_config("gmf", pipeline_config({"factors": 8}, 0, budget, True, many), "x")
    assert cell["sparse"] is True
    cell = ncf_cell_config("gmf", pipeline_config({"factors": 8}, 0, budget, True, 50), "x")
    assert cell["sparse"] is False
