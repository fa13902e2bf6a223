"""The NCF pipeline: GMF (Adam) -> MLP (Adam) -> NeuMF initialised from both, fine-tuned.

Every stage trains with :func:`ncf.training.train`, keeps its best epoch by validation HR@10,
and is scored on the test split by the one evaluation path of :mod:`ncf.evaluation`, under the
paper's sampled protocol and under full ranking.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ncf.distributed import Distributed
from ncf.errors import NcfError
from ncf.evaluation import evaluate
from ncf.interactions import Interactions
from ncf.models import GMF, MLP, NCFModule, NeuMF, check_alpha, check_dropout, tower_sizes
from ncf.split import Split
from ncf.training import EpochRecord, EvalTarget, History, TrainConfig, model_scorer, train

#: Fine-tuning presets of the NeuMF stage.
FINETUNE_PRESETS: dict[str, TrainConfig] = {
    # The original study's tuned SGD: momentum, L2, and the learning rate cut on plateaus.
    "tuned": TrainConfig(optimizer="sgd", lr=0.01, momentum=0.9, weight_decay=1e-4,
                         plateau_factor=0.3, plateau_patience=5),
    # The paper's vanilla SGD (section 3.4.1): no momentum, no decay, constant rate.
    "paper": TrainConfig(optimizer="sgd", lr=0.001),
    # NeuMF trained like its parts, with Adam (the usual choice without pre-training).
    "adam": TrainConfig(optimizer="adam", lr=0.001),
}

#: Users above which embeddings get sparse (row-wise) gradients.
SPARSE_USERS = 100_000


@dataclass(frozen=True)
class PipelineConfig:
    """Everything that defines a run of the pipeline.

    Args:
        factors: predictive factors (GMF embedding size, last MLP layer).
        n_layers: MLP hidden layers (tower halving from ``factors * 2**n_layers``).
        pretrain: initialise NeuMF from the trained GMF and MLP; else train it from scratch.
        alpha: the trade-off of the fused output layer.
        share_embeddings: NeuMF shares one embedding between its GMF and MLP parts.
        dropout: dropout rate of the MLP's input (MLP and NeuMF) while training; 0 is the
            paper's model, 0.2 made the MLP stronger on ml-100k (NOTES.md).
        gmf, mlp: training of the pre-training stages (Adam, lr 0.001 by default).
        neumf: training of the NeuMF stage (``FINETUNE_PRESETS["tuned"]`` by default).
        sparse: sparse embedding gradients, i.e. lazy row-wise optimizer updates (``None``:
            when more than 100k users; :func:`resolve_sparse` makes it explicit per device).
        full_ranking_users: users sampled for full-ranking metrics (``None``: all).
        seed: seeds initialisation, negatives and shuffling of every stage.
        refit: once every stage's epochs are chosen on the validation items, train the
            stages again from the same initial weights on train + validation for those
            epochs (their learning rates replayed), so the final models also learn each
            user's latest training interaction. Doubles the training time.
    """

    factors: int = 16
    n_layers: int = 3
    pretrain: bool = True
    alpha: float = 0.5
    share_embeddings: bool = False
    dropout: float = 0.2
    gmf: TrainConfig = field(default_factory=TrainConfig)
    mlp: TrainConfig = field(default_factory=TrainConfig)
    neumf: TrainConfig = field(default_factory=lambda: FINETUNE_PRESETS["tuned"])
    sparse: bool | None = None
    full_ranking_users: int | None = 10_000
    seed: int = 0
    refit: bool = False

    def __post_init__(self) -> None:
        # the models' own checks, run here before a run directory or a model exists
        tower_sizes(self.factors, self.n_layers)
        check_dropout(self.dropout)
        check_alpha(self.alpha)
        if self.share_embeddings and self.pretrain:
            raise NcfError("share_embeddings needs a NeuMF trained from scratch (pretrain=False):"
                           " the pre-trained GMF and MLP have separate embeddings, and "
                           "NeuMF.from_pretrained keeps them separate")

    def stages(self) -> list[str]:
        """Names of the models this configuration trains, in order."""
        return ["gmf", "mlp", "neumf"] if self.pretrain else ["neumf"]

    def with_epochs(self, epochs: int, early_stopping: int | None = None) -> PipelineConfig:
        """This configuration with every stage trained for at most ``epochs`` epochs (and
        stopped after ``early_stopping`` epochs without a better validation HR@10)."""
        return replace(self, **{name: replace(getattr(self, name), epochs=epochs,
                                              early_stopping=early_stopping)
                                for name in ("gmf", "mlp", "neumf")})


@dataclass
class StageResult:
    """A trained model, its history and its test metrics."""

    name: str
    model: NCFModule
    history: History
    metrics: dict[str, Any]
    seconds: float
    final: bool = True  # False: a model chosen on validation that ``refit`` will replace


def validation_target(split: Split) -> EvalTarget:
    """The validation items of a split with their candidates (for model selection)."""
    v, negs = split.validation, split.validation_negatives
    if v is None or negs is None:
        raise NcfError("the split has no validation items with candidates: model selection "
                       "needs them (hold one out with ncf.split.holdout_validation)")
    return EvalTarget(v.user_ids.astype(np.int64), v.item_ids.astype(np.int64), negs)


def test_metrics(
    model: NCFModule, split: Split, k: int = 10, full_users: int | None = 10_000, seed: int = 0
) -> dict[str, Any]:
    """Test HR/NDCG@k under the paper's sampled protocol and under full ranking."""
    score = model_scorer(model)
    t0 = time.perf_counter()
    sampled = evaluate(score, split, on="test", protocol="sampled", k=k)
    t1 = time.perf_counter()
    full = evaluate(score, split, on="test", protocol="full", k=k, max_users=full_users, seed=seed)
    t2 = time.perf_counter()
    out_full = full.as_dict()
    out_full["seconds"] = t2 - t1
    if full.n_users < len(split.test):  # a seeded sample of users: say what all would cost
        out_full["users_sampled_from"] = len(split.test)
        out_full["estimated_seconds_all_users"] = (t2 - t1) * len(split.test) / full.n_users
    return {"sampled": {**sampled.as_dict(), "seconds": t1 - t0}, "full": out_full}


#: Offsets of each stage's initialisation seed from ``PipelineConfig.seed``.
_INIT_SEED = {"gmf": 0, "mlp": 1, "neumf": 2}


def resolve_sparse(sparse: bool | None, n_users: int, device: str) -> bool:
    """Whether embeddings get row-wise (lazy) updates: on a CPU above 100k users, where a
    dense step would touch every row of the tables for a few hundred samples; never by
    default on a GPU, where dense updates of whole tables are faster than gathering rows.

    The choice changes what the optimizers compute, not only their speed: with row-wise
    updates Adam is "lazy" (the moments of a row move only when a batch uses it, with one step
    count per table, as torch's ``SparseAdam``) and L2 weight decay reaches only the rows a
    batch touched. Runs record the resolved value (``config.json``, experiment cells).
    """
    if sparse is not None:
        return sparse
    return n_users > SPARSE_USERS and torch.device(device).type == "cpu"


def init_model(name: str, config: PipelineConfig, n_users: int, n_items: int,
               device: str = "cpu") -> NCFModule:
    """A stage's model at its seeded initial weights, exactly as :func:`run_pipeline` makes it
    (``"neumf"``: the from-scratch NeuMF; with pre-training it comes from GMF and MLP), with
    sparse embeddings as :func:`resolve_sparse` decides for ``device``."""
    sparse = resolve_sparse(config.sparse, n_users, device)
    torch.manual_seed(config.seed + _INIT_SEED[name])
    if name == "gmf":
        return GMF(n_users, n_items, config.factors, sparse=sparse)
    if name == "mlp":
        return MLP(n_users, n_items, config.factors, config.n_layers, sparse=sparse,
                   dropout=config.dropout)
    return NeuMF(n_users, n_items, config.factors, config.n_layers,
                 share_embeddings=config.share_embeddings, sparse=sparse, dropout=config.dropout)


def stage_config(name: str, config: PipelineConfig, device: str | None = None) -> TrainConfig:
    """A stage's training configuration as :func:`run_pipeline` uses it (seeded; a pre-trained
    NeuMF keeps its starting weights as a candidate epoch)."""
    cfg: TrainConfig = getattr(config, name)
    cfg = replace(cfg, seed=config.seed, device=device or cfg.device)
    if name == "neumf" and config.pretrain:
        cfg = replace(cfg, keep_initial=True)
    return cfg


def stage_metrics(model: NCFModule, history: History, split: Split, config: PipelineConfig,
                  seconds: float) -> dict[str, Any]:
    """A finished stage's ``metrics.json`` entry: test metrics (sampled and full ranking),
    the validation metrics of its chosen epoch, that epoch and the training seconds."""
    metrics = test_metrics(model, split, full_users=config.full_ranking_users, seed=config.seed)
    best = history.best
    metrics["validation"] = {"hr": best.hr, "ndcg": best.ndcg} if best else None
    metrics["best_epoch"] = history.best_epoch
    metrics["train_seconds"] = seconds
    return metrics


def run_pipeline(
    split: Split,
    config: PipelineConfig,
    on_epoch: Callable[[str, EpochRecord], None] | None = None,
    progress: Callable[[str, int, int], None] | None = None,
    device: str | None = None,
    on_result: Callable[[StageResult], None] | None = None,
    dist: Distributed | None = None,
    checkpoints: str | Path | None = None,
) -> dict[str, StageResult]:
    """Train every stage of ``config`` on ``split`` and score each on the test split.

    Epochs are chosen on the validation items; with ``config.refit`` the chosen models are
    then retrained on train + validation (stage names ``"gmf refit"``... in the callbacks).
    ``on_result`` gets each stage's result as soon as it is final (GMF's before NeuMF trains),
    so a caller can keep it even if a later stage is interrupted; with ``config.refit`` it
    also gets each model chosen on validation (``final=False``, no metrics) before the refit.

    With ``checkpoints`` (a folder), every stage writes its checkpoint there after each epoch
    (``gmf.npz``, ``mlp.npz``, ``neumf.npz``, ``gmf-refit.npz``...), and a call on a folder
    that holds some resumes: finished stages are restored, the interrupted one goes on from
    its last epoch, and the results are those of an uninterrupted run (on the CPU to the last
    digit; same data, configuration and number of processes).

    With ``dist`` (a data-parallel run), every rank trains and rank 0 alone evaluates: the
    other ranks' results carry no metrics and ``on_result`` is called on rank 0 only.

    Returns:
        ``{"gmf": ..., "mlp": ..., "neumf": ...}`` (only ``"neumf"`` without pre-training).
    """
    main = dist is None or dist.is_main
    target = validation_target(split)
    n_users, n_items = split.train.n_users, split.train.n_items
    config = replace(config, sparse=resolve_sparse(config.sparse, n_users, device or "cpu"))
    folder = None if checkpoints is None else Path(checkpoints)
    if folder is not None and main:
        folder.mkdir(parents=True, exist_ok=True)
    histories: dict[str, History] = {}
    seconds: dict[str, float] = {}
    initial: dict[str, dict[str, torch.Tensor]] = {}

    def fit(name: str, label: str, model: NCFModule, cfg: TrainConfig, data: Interactions,
            validation: EvalTarget | None) -> History:
        """Train stage ``name``; callbacks see ``label``; the time adds to the stage's."""
        history = train(
            model, data, validation, cfg,
            on_epoch=None if on_epoch is None else (lambda r: on_epoch(label, r)),
            progress=None if progress is None else (lambda d, t: progress(label, d, t)),
            dist=dist,
            checkpoint=None if folder is None else folder / f"{label.replace(' ', '-')}.npz",
        )
        seconds[name] = seconds.get(name, 0.0) + history.seconds
        return history

    def select(name: str, model: NCFModule) -> None:
        if config.refit:  # the starting weights, trained again once every epoch is chosen
            initial[name] = copy.deepcopy(model.state_dict())
        histories[name] = fit(name, name, model, stage_config(name, config, device),
                              split.train, target)
        if config.refit and main and on_result is not None:  # kept until its refit replaces it
            on_result(StageResult(name, model, histories[name], {}, seconds[name], final=False))

    def refit(name: str, model: NCFModule, data: Interactions) -> None:
        """Train ``model`` (at its initial weights) for the epochs chosen on validation."""
        h = histories[name]
        if h.best_epoch:
            schedule = tuple(r.lr for r in h.records[: h.best_epoch])
            cfg = replace(stage_config(name, config, device), epochs=h.best_epoch,
                          lr_schedule=schedule, keep_initial=False, early_stopping=None)
            fit(name, f"{name} refit", model, cfg, data, None)

    models: dict[str, NCFModule] = {}
    selected: dict[str, dict[str, float]] = {}
    results: dict[str, StageResult] = {}

    def finish(name: str) -> None:
        """Score stage ``name``'s final model on the test split and hand its result on."""
        model, history = models[name], histories[name]
        if not main:  # rank 0 evaluates and reports
            results[name] = StageResult(name, model, history, {}, seconds[name])
            return
        metrics = stage_metrics(model, history, split, config, seconds[name])
        if config.refit:
            metrics["refit"] = {"epochs": history.best_epoch, "sampled_before": selected[name]}
        results[name] = StageResult(name, model, history, metrics, seconds[name])
        if on_result is not None:
            on_result(results[name])

    def fused() -> NeuMF:
        gmf, mlp = models["gmf"], models["mlp"]
        assert isinstance(gmf, GMF) and isinstance(mlp, MLP)
        return NeuMF.from_pretrained(gmf, mlp, alpha=config.alpha)

    neumf: NCFModule
    if config.pretrain:
        for name in ("gmf", "mlp"):
            models[name] = init_model(name, config, n_users, n_items, device or "cpu")
            select(name, models[name])
            if not config.refit:
                finish(name)
        neumf = fused()
    else:
        neumf = init_model("neumf", config, n_users, n_items, device or "cpu")
    models["neumf"] = neumf.to(device or "cpu")
    select("neumf", models["neumf"])

    if config.refit:
        assert split.validation is not None  # validation_target checked it
        full = split.train.concat(split.validation)
        for name, model in models.items():
            if main:
                selected[name] = evaluate(model_scorer(model), split, on="test",
                                          protocol="sampled").as_dict()
            if name == "neumf" and config.pretrain:
                model.load_state_dict(fused().state_dict())
            else:
                model.load_state_dict(initial[name])
            refit(name, model, full)
            finish(name)
    else:
        finish("neumf")
    return results
