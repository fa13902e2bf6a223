"""One trainer for every NCF model: log loss, fresh negatives each epoch, model selection
on the validation item only.

Epochs come from :mod:`ncf.epochs`: built on the host for a CPU model, on the device for a GPU
model (negatives, labels and shuffling never leave it), and cut into batches by slicing.
Within an epoch nothing waits for the host but the progress callback's counters; the loss is
checked once per epoch. Gradients come from the model's hand-written ``loss_grads`` (the same
numbers as autograd, about three times faster on small batches) or from autograd
(``autograd=True``), and the row-wise optimizers of :mod:`ncf.optim` touch only the embedding
rows a batch used.
"""

from __future__ import annotations

import copy
import functools
import json
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

import numpy as np
import torch

from ncf.checkpoints import (
    global_rng_state,
    load_checkpoint,
    same_config,
    save_checkpoint,
    set_global_rng_state,
)
from ncf.distributed import Distributed
from ncf.epochs import EPOCH_BLOCK, DeviceEpochs, HostEpochs, build_epoch, iter_epoch
from ncf.errors import NcfError
from ncf.evaluation import evaluate_sampled
from ncf.interactions import Interactions
from ncf.models import NCFModule
from ncf.optim import OPTIMIZERS, Grad
from ncf.sampling import KeySet

__all__ = ["EPOCH_BLOCK", "EpochRecord", "EvalTarget", "History", "ModelScorer", "TrainConfig",
           "autograd_loss_grads", "build_epoch", "iter_epoch", "model_scorer", "train"]

P = ParamSpec("P")
R = TypeVar("R")

#: Sampled negatives per positive accepted (the paper studies 1 to 10).
MAX_NEGATIVES = 1000


@dataclass(frozen=True)
class TrainConfig:
    """Hyper-parameters of one training stage.

    Args:
        epochs: maximum number of epochs.
        batch_size: samples (positives and negatives) per step; the paper uses 256.
        optimizer: ``"adam"`` or ``"sgd"``.
        lr: learning rate.
        momentum: SGD momentum.
        weight_decay: L2 penalty (coupled, as ``torch.optim``).
        n_negatives: sampled negatives per positive, drawn afresh each epoch.
        plateau_factor: ReduceLROnPlateau factor on validation HR@10 (``None``: no scheduler).
        plateau_patience: epochs without improvement before the learning rate is cut.
        early_stopping: stop after this many epochs without a better validation HR@10.
        k: cut-off of the validation metrics.
        seed: seeds negatives, shuffling and nothing else (initialisation is the caller's).
        autograd: use autograd instead of the hand-written gradients.
        device: torch device of the epoch tensors and the model.
        epoch_block: positives per block of an epoch (bounds the epoch's memory).
        keep_initial: the starting weights compete with every epoch on validation (epoch 0),
            so fine-tuning a pre-trained model can never end worse on validation than it began.
        lr_schedule: the learning rate of each epoch, replacing ``lr`` and the plateau
            scheduler (used to replay a selected run's schedule when refitting).
        warmup_steps: the learning rate rises linearly from ``lr / warmup_steps`` to ``lr``
            over the first steps (large batches with a scaled rate; 0: none).
        sampler: where epochs are built: ``"host"`` (numpy), ``"device"`` (torch, on the
            model's device) or ``"auto"`` (the device when it is not the CPU).
    """

    epochs: int = 20
    batch_size: int = 256
    optimizer: str = "adam"
    lr: float = 0.001
    momentum: float = 0.0
    weight_decay: float = 0.0
    n_negatives: int = 4
    plateau_factor: float | None = None
    plateau_patience: int = 5
    early_stopping: int | None = None
    k: int = 10
    seed: int = 0
    autograd: bool = False
    device: str = "cpu"
    epoch_block: int = EPOCH_BLOCK
    keep_initial: bool = False
    lr_schedule: tuple[float, ...] | None = None
    warmup_steps: int = 0
    sampler: str = "auto"

    def __post_init__(self) -> None:
        if self.sampler not in ("auto", "host", "device"):
            raise NcfError(f"sampler must be auto, host or device, got {self.sampler!r}")
        if self.warmup_steps < 0:
            raise NcfError(f"warmup_steps must be >= 0, got {self.warmup_steps}")
        if self.optimizer not in OPTIMIZERS:
            raise NcfError(f"unknown optimizer {self.optimizer!r} (choose adam or sgd)")
        if self.epochs < 1 or self.batch_size < 1 or self.n_negatives < 1:
            raise NcfError("epochs, batch_size and n_negatives must be positive")
        if self.n_negatives > MAX_NEGATIVES:
            raise NcfError(f"at most {MAX_NEGATIVES} negatives per positive, got "
                           f"{self.n_negatives}")
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise NcfError(f"the learning rate must be a positive number, got {self.lr}")
        if not (math.isfinite(self.momentum) and 0 <= self.momentum < 1):
            raise NcfError(f"momentum must lie in [0, 1), got {self.momentum}")
        if not (math.isfinite(self.weight_decay) and self.weight_decay >= 0):
            raise NcfError(f"weight_decay must be >= 0, got {self.weight_decay}")
        if self.early_stopping is not None and self.early_stopping < 1:
            raise NcfError(f"early_stopping must be >= 1 epoch (or None), got "
                           f"{self.early_stopping}")


@dataclass(frozen=True, eq=False)
class EvalTarget:
    """Held-out items ranked after every epoch (the paper's sampled protocol).

    Args:
        users: int64 ``(n,)``; items: int64 ``(n,)``, the held-out positives;
        negatives: int ``(n, c)`` candidates.
    """

    users: np.ndarray
    items: np.ndarray
    negatives: np.ndarray

    def on(self, device: str | torch.device) -> tuple[Any, Any, Any]:
        """``(users, items, negatives)`` where evaluation will run: the arrays themselves for
        the CPU, tensors copied once to any other device (validation then stays there)."""
        dev = torch.device(device)
        if dev.type == "cpu":
            return self.users, self.items, self.negatives
        return tuple(torch.from_numpy(np.asarray(a, dtype=np.int64)).to(dev)  # type: ignore
                     for a in (self.users, self.items, self.negatives))


@dataclass
class EpochRecord:
    """What one epoch did."""

    epoch: int
    loss: float
    hr: float | None
    ndcg: float | None
    lr: float
    seconds: float
    eval_seconds: float


@dataclass
class History:
    """Per-epoch records and the epoch whose weights were kept."""

    records: list[EpochRecord] = field(default_factory=list)
    best_epoch: int | None = None
    stopped_early: bool = False
    initial: EpochRecord | None = None  # the starting weights, when they were a candidate
    seconds: float = 0.0  # wall time of the stage (all parts of a resumed one)

    def as_dicts(self) -> list[dict[str, Any]]:
        return [asdict(r) for r in self.records]

    @property
    def best(self) -> EpochRecord | None:
        if self.best_epoch == 0:
            return self.initial
        return None if self.best_epoch is None else self.records[self.best_epoch - 1]


class ModelScorer:
    """The evaluation scoring function of a model: ``(users (B,), items (B, C)) -> (B, C)``.

    Called with numpy arrays it returns numpy scores (the interface every evaluation takes).
    :meth:`tensor` scores tensors on the model's device and returns a tensor there: the
    evaluation functions use it when ``on_device`` is set (by default on a GPU), so that
    scores and ranks never cross to the host.

    Args:
        model: the model (its weights are read at every call).
        batch_pairs: (user, item) pairs scored per chunk.
        device: where the model lives (default: the device of its parameters).
    """

    def __init__(self, model: NCFModule, batch_pairs: int | None = None,
                 device: str | torch.device | None = None) -> None:
        self.model = model
        self.device = torch.device(device or next(model.parameters()).device)
        self.on_device = self.device.type != "cpu"
        self.batch_pairs = batch_pairs or (1 << 22 if self.on_device else 1 << 15)

    @torch.no_grad()
    def tensor(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """Scores of int64 ``users (B,)`` x ``items (B, C)`` on the model's device, float32."""
        model = self.model
        b, c = items.shape
        rows = max(1, self.batch_pairs // max(c, 1))
        was_training = model.training
        model.eval()
        tables = model.candidate_tables()  # once per call: the weights do not change within
        out = torch.empty(b, c, device=self.device)
        for s in range(0, b, rows):
            out[s : s + rows] = model.score_candidates(
                users[s : s + rows].to(self.device), items[s : s + rows].to(self.device),
                tables).float()
        model.train(was_training)
        return out

    def __call__(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        u = torch.from_numpy(np.asarray(users, dtype=np.int64))
        i = torch.from_numpy(np.array(items, dtype=np.int64))
        return self.tensor(u, i).cpu().numpy()


def model_scorer(
    model: NCFModule, batch_pairs: int | None = None, device: str | torch.device | None = None
) -> ModelScorer:
    """The evaluation scoring function of a model (see :class:`ModelScorer`)."""
    return ModelScorer(model, batch_pairs, device)


def make_optimizer(model: NCFModule, config: TrainConfig) -> torch.optim.Optimizer:
    """The stage's optimizer over the model's named parameters."""
    named = list(model.named_parameters())
    if config.optimizer == "adam":
        return OPTIMIZERS["adam"](named, lr=config.lr, weight_decay=config.weight_decay)
    return OPTIMIZERS["sgd"](
        named, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay
    )


def _flushing_denormals(fn: Callable[P, R]) -> Callable[P, R]:
    """Run ``fn`` with subnormal floats flushed to zero.

    Weight decay drives small weights into subnormal floats, which CPUs handle up to 100x
    slower. Flushing is a process-wide CPU setting, so it is switched off again afterwards.
    """

    @functools.wraps(fn)
    def wrapped(*args: P.args, **kwargs: P.kwargs) -> R:
        torch.set_flush_denormal(True)
        try:
            return fn(*args, **kwargs)
        finally:
            torch.set_flush_denormal(False)

    return wrapped


def _warm_step(optimizer: torch.optim.Optimizer, grads: dict, factor: float) -> None:
    """One step at ``factor`` times the learning rate (the schedulers keep seeing the rate)."""
    rates = [group["lr"] for group in optimizer.param_groups]
    for group, lr in zip(optimizer.param_groups, rates):
        group["lr"] = lr * factor
    try:
        optimizer.step_with(grads)  # type: ignore[attr-defined]
    finally:
        for group, lr in zip(optimizer.param_groups, rates):
            group["lr"] = lr


def _epochs(train_data: Interactions, config: TrainConfig,
            dist: Distributed | None) -> HostEpochs | DeviceEpochs:
    """The epoch builder of a training run (samples of this rank's shard, seeded)."""
    device = torch.device(config.device)
    users = train_data.user_ids.astype(np.int64)
    items = train_data.item_ids.astype(np.int64)
    shard = None if dist is None else dist.shard
    on_device = config.sampler == "device" or (config.sampler == "auto" and device.type != "cpu")
    if on_device:  # the key set is built on the device too
        return DeviceEpochs(users, items, train_data.n_items, config.n_negatives, device,
                            config.seed, block=config.epoch_block, shard=shard)
    keys = KeySet(train_data.keys(), train_data.n_items)
    return HostEpochs(users, items, keys, train_data.n_items, config.n_negatives, device,
                      config.seed, block=config.epoch_block, shard=shard)


class _Checkpoint:
    """A stage's checkpoint file: rank 0 writes it, every rank reads it.

    The generators of every rank are gathered into it (each rank draws its own negatives),
    so a data-parallel stage resumes exactly with the same number of processes.
    """

    def __init__(self, path: str | Path, config: TrainConfig, dist: Distributed | None,
                 n_samples: int) -> None:
        self.path = Path(path)
        self.dist = dist
        self.config = {**asdict(config), "samples": n_samples,
                       "world": 1 if dist is None else dist.world}

    def load(self) -> dict[str, Any] | None:
        state = load_checkpoint(self.path)
        if state is None:
            return None
        if not same_config(state.get("config"), self.config):
            raise NcfError(f"{self.path}: this checkpoint was written by another configuration "
                           "or other data (delete it to train the stage again)")
        return state

    def rng(self, state: dict[str, Any]) -> Any:
        """This rank's generators in a loaded ``state``."""
        return state["rng"][0 if self.dist is None else self.dist.rank]

    def save(self, state: dict[str, Any], rng: Any) -> None:
        """Write ``state`` with every rank's generators (``rng`` is this rank's)."""
        if self.dist is None:
            ranks = [rng]
        else:
            gathered = self.dist.gather_text(json.dumps(rng))
            if not self.dist.is_main:
                return
            ranks = [json.loads(t) for t in gathered]
        save_checkpoint(self.path, {**state, "config": self.config, "rng": ranks})


@_flushing_denormals
def train(
    model: NCFModule,
    train_data: Interactions,
    validation: EvalTarget | None,
    config: TrainConfig,
    on_epoch: Callable[[EpochRecord], None] | None = None,
    progress: Callable[[int, int], None] | None = None,
    dist: Distributed | None = None,
    checkpoint: str | Path | None = None,
) -> History:
    """Train ``model`` in place and leave it with the weights of its best validation epoch.

    Args:
        model: any :class:`~ncf.models.NCFModule`: its ``loss_grads`` gives the gradients
            (hand-written for GMF, MLP and NeuMF; autograd for a model that does not override
            it, and for every model with ``config.autograd``).
        train_data: the training positives.
        validation: held-out items for model selection (never the test items), or ``None``
            (then the last epoch is kept).
        config: the stage's hyper-parameters (``batch_size`` is the global batch).
        on_epoch: called with each epoch's record (printing, logging).
        progress: called as ``progress(done_batches, total_batches)`` within an epoch.
        dist: this process's place in a data-parallel run (:mod:`ncf.distributed`): it trains
            on its shard with a local batch of ``batch_size / world``, the gradients are
            combined every step, and rank 0 alone validates (the others receive its metrics).
        checkpoint: a file where the stage's state is written at the end of every epoch
            (:mod:`ncf.checkpoints`); when it exists already, the stage resumes from it (and
            a finished stage only restores its final weights), ending exactly as it would have
            without the interruption. ``None``: no checkpoint.

    Raises:
        NcfError: the loss became NaN or infinite (with the epoch and batch), no data, or a
            checkpoint of another configuration.
    """
    started = time.perf_counter()
    if len(train_data) == 0:
        raise NcfError("the training split is empty")
    if train_data.n_users > model.n_users or train_data.n_items > model.n_items:
        raise NcfError("the model's id space is smaller than the training data's")
    device = torch.device(config.device)
    model.to(device)
    model.train()
    world = 1 if dist is None else dist.world
    if dist is not None:
        dist.broadcast_module(model)
    if config.batch_size % world:
        raise NcfError(f"batch size {config.batch_size} is not a multiple of the {world} "
                       "processes")
    bs = config.batch_size // world
    epochs = _epochs(train_data, config, dist)
    n_samples = epochs.samples
    loss_grads = (functools.partial(autograd_loss_grads, model) if config.autograd
                  else model.loss_grads)
    optimizer = make_optimizer(model, config)
    scheduler = None
    if config.plateau_factor is not None and validation is not None and not config.lr_schedule:
        scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
            optimizer, mode="max", factor=config.plateau_factor, patience=config.plateau_patience
        )
    history = History()
    best_key: tuple[float, float] | None = None
    best_state: dict[str, torch.Tensor] | None = None
    since_best = 0
    step = 0
    first = 1
    ckpt = None if checkpoint is None else _Checkpoint(checkpoint, config, dist, n_samples)
    saved = None if ckpt is None else ckpt.load()
    if saved is not None and ckpt is not None:
        history = _history(saved["history"])
        if saved["finished"]:  # the stage ended: its final weights, and the generators then
            model.load_state_dict(saved["model"])
            set_global_rng_state(ckpt.rng(saved)["global"], device)
            model.eval()
            return history
        model.load_state_dict(saved["model"])
        optimizer.load_state_dict(saved["optimizer"])
        if scheduler is not None:
            scheduler.load_state_dict(saved["scheduler"])
        best_key = None if saved["best_key"] is None else tuple(saved["best_key"])  # type: ignore
        best_state = saved["best_state"]
        if saved["best_is_current"]:
            best_state = copy.deepcopy(model.state_dict())
        since_best, step, first = saved["since_best"], saved["step"], saved["epoch"] + 1
        epochs.load_state(ckpt.rng(saved)["epochs"])
        set_global_rng_state(ckpt.rng(saved)["global"], device)
    target = None
    if validation is not None and (dist is None or dist.is_main):
        target = validation.on(device)

    def validate() -> tuple[float | None, float | None, float]:
        if validation is None:
            return None, None, 0.0
        hr = ndcg = seconds = math.nan
        if target is not None:  # this process evaluates (rank 0 of a distributed run)
            t = time.perf_counter()
            m = evaluate_sampled(model_scorer(model, device=device), *target, k=config.k)
            hr, ndcg, seconds = float(m.hr), float(m.ndcg), time.perf_counter() - t
        if dist is not None:
            hr, ndcg, seconds = dist.broadcast_floats([hr, ndcg, seconds] if dist.is_main
                                                      else None, 3)
        return hr, ndcg, seconds

    def save(finished: bool) -> None:
        """Write the checkpoint (every rank takes part: the generators are gathered)."""
        if ckpt is None:
            return
        rng = {"global": global_rng_state(device)}
        history.seconds = elapsed + time.perf_counter() - started
        if finished:
            ckpt.save({"finished": True, "history": _history_state(history),
                       "model": model.state_dict()}, rng)
            return
        current = history.best_epoch == len(history.records) and history.records
        ckpt.save({
            "finished": False, "epoch": len(history.records), "step": step,
            "history": _history_state(history), "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "scheduler": None if scheduler is None else scheduler.state_dict(),
            "best_key": None if best_key is None else list(best_key),
            "best_is_current": bool(current),
            "best_state": None if current else best_state,
            "since_best": since_best,
        }, {**rng, "epochs": epochs.state()})

    elapsed = history.seconds
    if config.keep_initial and validation is not None and saved is None:
        hr0, ndcg0, sec0 = validate()
        history.initial = EpochRecord(0, float("nan"), hr0, ndcg0, config.lr, 0.0, sec0)
        best_key, history.best_epoch = (hr0 or 0.0, ndcg0 or 0.0), 0
        best_state = copy.deepcopy(model.state_dict())
    last = first - 1 if history.stopped_early else config.epochs
    for epoch in range(first, last + 1):
        t0 = time.perf_counter()
        if config.lr_schedule and epoch <= len(config.lr_schedule):
            for group in optimizer.param_groups:
                group["lr"] = config.lr_schedule[epoch - 1]
        total = torch.zeros((), dtype=torch.float64, device=device)
        n_batches, done = math.ceil(n_samples / bs), 0
        for eu, ei, ey in epochs:
            for s in range(0, len(eu), bs):
                ub, ib, yb = eu[s : s + bs], ei[s : s + bs], ey[s : s + bs]
                loss, grads = loss_grads(ub, ib, yb)
                if dist is not None:
                    grads = dist.sync_grads(grads)
                if step < config.warmup_steps:
                    _warm_step(optimizer, grads, (step + 1) / config.warmup_steps)
                else:
                    optimizer.step_with(grads)  # type: ignore[attr-defined]
                total += loss * len(ub)
                done += 1
                step += 1
                if progress is not None and (done % 64 == 0 or done == n_batches):
                    progress(done, n_batches)
        if dist is not None:
            total = dist.all_sum(total)
        mean_loss = float(total) / (n_samples * world)  # the one host sync of an epoch
        if not math.isfinite(mean_loss):
            raise NcfError(
                f"training diverged: the loss is {mean_loss} in epoch {epoch} "
                f"(lr {optimizer.param_groups[0]['lr']:g}); lower the learning rate"
            )
        train_seconds = time.perf_counter() - t0
        hr, ndcg, eval_seconds = validate()
        record = EpochRecord(
            epoch, mean_loss, hr, ndcg, optimizer.param_groups[0]["lr"], train_seconds, eval_seconds
        )
        history.records.append(record)
        if on_epoch is not None:
            on_epoch(record)
        key = (hr if hr is not None else float(epoch), ndcg or 0.0)
        if best_key is None or key > best_key:
            best_key, since_best = key, 0
            history.best_epoch = epoch
            best_state = copy.deepcopy(model.state_dict())
        else:
            since_best += 1
        if scheduler is not None and hr is not None:  # a scheduler implies validation
            scheduler.step(hr)
        if config.early_stopping is not None and since_best >= config.early_stopping:
            history.stopped_early = True
        save(finished=False)
        if history.stopped_early:
            break
    if best_state is not None:
        model.load_state_dict(best_state)
    model.eval()
    history.seconds = elapsed + time.perf_counter() - started
    save(finished=True)
    return history


def autograd_loss_grads(
    model: NCFModule, users: torch.Tensor, items: torch.Tensor, labels: torch.Tensor
) -> tuple[torch.Tensor, dict[str, Grad]]:
    """Mean log loss of a batch and its gradients by autograd, keyed by parameter name: the
    reference every model trains with unless it writes its own ``loss_grads``."""
    return NCFModule.loss_grads(model, users, items, labels)


def _history_state(history: History) -> dict[str, Any]:
    return {"records": history.as_dicts(), "best_epoch": history.best_epoch,
            "stopped_early": history.stopped_early, "seconds": history.seconds,
            "initial": None if history.initial is None else asdict(history.initial)}


def _history(state: dict[str, Any]) -> History:
    return History(records=[EpochRecord(**r) for r in state["records"]],
                   best_epoch=state["best_epoch"], stopped_early=state["stopped_early"],
                   initial=None if state["initial"] is None else EpochRecord(**state["initial"]),
                   seconds=state["seconds"])
