"""`ncf tune`: hyper-parameter search on the validation items only, with Optuna.

A study searches one model: GMF or MLP (a pre-training stage), NeuMF's fine-tuning stage
(from a GMF and an MLP pre-trained once with the run's defaults and kept in the study's
folder), or a baseline. Each trial trains on the training split and is scored on the
validation items with their candidates, the only held-out data a trial ever receives
(:class:`SearchData`): the test split never reaches the search. A TPE sampler proposes the
parameters, and a median pruner stops trials whose best validation HR@10 so far falls
behind (reported once per epoch from the trainer's ``on_epoch`` callback, which raises
``optuna.TrialPruned``). The first trial of a new study is the defaults, so the search can
only improve on them (on validation).

The study lives in a database (SQLite in the study's folder by default, any SQLAlchemy URL
otherwise): an interrupted search resumes where it stopped (finished trials count towards
the budget and are never run again), and several processes may search one study at once.
"""

from __future__ import annotations

import math
import os
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from ncf.baselines import BASELINES
from ncf.errors import NcfError
from ncf.evaluation import evaluate_sampled
from ncf.experiments.names import TUNABLE
from ncf.interactions import Interactions
from ncf.pipeline import PipelineConfig, init_model, stage_config, validation_target
from ncf.training import EpochRecord, EvalTarget, History, TrainConfig, train

#: NCF's stages a study can search (the others in ``TUNABLE`` are baselines).
NCF_STAGES = ("gmf", "mlp", "neumf")

#: What ``optuna`` is needed for, in the error raised when it is missing.
NEEDS_OPTUNA = "ncf tune needs optuna: pip install -c constraints.txt '.[tune]'"

Say = Callable[[str], None]


def require_optuna() -> Any:
    """The ``optuna`` module, or one clear error naming the extra that installs it."""
    try:
        import optuna
    except ImportError:
        raise NcfError(NEEDS_OPTUNA) from None
    optuna.logging.set_verbosity(optuna.logging.ERROR)  # ncf says what happened, in one line
    return optuna


@dataclass(frozen=True, eq=False)
class SearchData:
    """All a trial sees: the training positives and the validation items with candidates.

    The test items are not in it, so no trial can read them (a test checks that changing
    them changes nothing in a search).
    """

    train: Interactions
    validation: EvalTarget

    @classmethod
    def from_split(cls, split: Any) -> SearchData:
        return cls(split.train, validation_target(split))


# ---------------------------------------------------------------------------------------
# Search spaces


def suggest(trial: Any, model: str) -> dict[str, Any]:
    """The parameters of one trial of ``model`` (Optuna's define-by-run search space)."""
    if model == "gmf":
        return {"factors": trial.suggest_categorical("factors", [8, 16, 32, 64, 128]),
                "lr": trial.suggest_float("lr", 1e-4, 1e-2, log=True),
                "negatives": trial.suggest_int("negatives", 2, 8)}
    if model == "mlp":
        return {"factors": trial.suggest_categorical("factors", [8, 16, 32, 64]),
                "layers": trial.suggest_int("layers", 1, 4),
                "dropout": trial.suggest_float("dropout", 0.0, 0.5),
                "lr": trial.suggest_float("lr", 1e-4, 1e-2, log=True),
                "negatives": trial.suggest_int("negatives", 2, 8)}
    if model == "neumf":
        optimizer = trial.suggest_categorical("optimizer", ["sgd", "adam"])
        if optimizer == "sgd":
            params = {"lr": trial.suggest_float("sgd_lr", 1e-3, 0.1, log=True),
                      "momentum": trial.suggest_float("momentum", 0.0, 0.95)}
        else:
            params = {"lr": trial.suggest_float("adam_lr", 1e-5, 1e-3, log=True),
                      "momentum": 0.0}
        return {"optimizer": optimizer, **params,
                "weight_decay": trial.suggest_float("weight_decay", 1e-8, 1e-3, log=True),
                "alpha": trial.suggest_float("alpha", 0.1, 0.9)}
    if model == "ease":
        return {"reg": trial.suggest_float("reg", 1.0, 1e4, log=True)}
    if model == "itemknn":
        return {"neighbours": trial.suggest_int("neighbours", 5, 1000, log=True),
                "shrink": trial.suggest_float("shrink", 0.0, 100.0)}
    if model == "puresvd":
        return {"factors": trial.suggest_int("factors", 8, 512, log=True)}
    if model == "ials":
        return {"factors": trial.suggest_categorical("factors", [16, 32, 64, 128, 256]),
                "reg": trial.suggest_float("reg", 0.01, 1000.0, log=True),
                "alpha": trial.suggest_float("alpha", 0.1, 100.0, log=True)}
    if model == "bpr":
        return {"factors": trial.suggest_categorical("factors", [16, 32, 64, 128, 256]),
                "lr": trial.suggest_float("lr", 1e-3, 0.3, log=True),
                "reg": trial.suggest_float("reg", 1e-5, 0.1, log=True)}
    if model == "mf":
        return {"factors": trial.suggest_categorical("factors", [16, 32, 64, 128, 256]),
                "negatives": trial.suggest_int("negatives", 1, 16),
                "lr": trial.suggest_float("lr", 1e-3, 0.1, log=True),
                "reg": trial.suggest_float("reg", 1e-5, 0.1, log=True)}
    raise NcfError(f"cannot tune {model!r} (choose from {', '.join(TUNABLE)})")


def default_trial(model: str, base: PipelineConfig) -> dict[str, Any]:
    """The defaults as a trial's raw parameters (the first trial of every new study)."""
    if model in ("gmf", "mlp"):
        stage: TrainConfig = getattr(base, model)
        params: dict[str, Any] = {"factors": base.factors, "lr": stage.lr,
                                  "negatives": stage.n_negatives}
        if model == "mlp":
            params.update(layers=base.n_layers, dropout=base.dropout)
        return params
    if model == "neumf":
        ft = base.neumf
        lr_name = "sgd_lr" if ft.optimizer == "sgd" else "adam_lr"
        params = {"optimizer": ft.optimizer, lr_name: ft.lr,
                  "weight_decay": max(ft.weight_decay, 1e-8), "alpha": base.alpha}
        if ft.optimizer == "sgd":
            params["momentum"] = ft.momentum
        return params
    import inspect

    sig = inspect.signature(BASELINES[model].__init__).parameters
    names = {"ease": ["reg"], "itemknn": ["neighbours", "shrink"], "puresvd": ["factors"],
             "ials": ["factors", "reg", "alpha"], "bpr": ["factors", "lr", "reg"],
             "mf": ["factors", "negatives", "lr", "reg"]}[model]
    return {n: sig[n].default for n in names}


def apply_params(model: str, base: PipelineConfig, params: dict[str, Any]) -> PipelineConfig:
    """``base`` with one stage's parameters replaced by a trial's (NCF stages only)."""
    if model in ("gmf", "mlp"):
        stage = replace(getattr(base, model), lr=float(params["lr"]),
                        n_negatives=int(params["negatives"]))
        out = replace(base, **{model: stage})
        if model == "gmf":  # GMF's size is the run's factors: the MLP keeps its own
            return replace(out, factors=int(params["factors"]))
        return replace(out, factors=int(params["factors"]), n_layers=int(params["layers"]),
                       dropout=float(params["dropout"]))
    if model == "neumf":
        ft = replace(base.neumf, optimizer=str(params["optimizer"]), lr=float(params["lr"]),
                     momentum=float(params["momentum"]),
                     weight_decay=float(params["weight_decay"]))
        return replace(base, neumf=ft, alpha=float(params["alpha"]))
    raise NcfError(f"{model} is not a stage of the NCF pipeline")


def tuned_config(model: str, base: PipelineConfig, params: dict[str, Any],
                 epochs: int | None = None) -> PipelineConfig:
    """:func:`apply_params`, with the tuned stage's maximum epochs set to ``epochs`` (when
    given): a trial and the final run train the stage alike."""
    config = apply_params(model, base, params)
    if epochs is None:
        return config
    return replace(config, **{model: replace(getattr(config, model), epochs=epochs)})


def trial_params(model: str, raw: dict[str, Any]) -> dict[str, Any]:
    """A trial's stored parameters as the model takes them (``sgd_lr`` / ``adam_lr`` are
    ``lr``; SGD's momentum is 0 for Adam)."""
    if model != "neumf":
        return dict(raw)
    out = {k: v for k, v in raw.items() if k not in ("sgd_lr", "adam_lr")}
    out["lr"] = raw.get("sgd_lr", raw.get("adam_lr"))
    out.setdefault("momentum", 0.0)
    return out


# ---------------------------------------------------------------------------------------
# Trials


@dataclass
class TrialOutcome:
    """A finished trial: best validation metrics, the epoch they came from, seconds."""

    hr: float
    ndcg: float
    epoch: int | None
    seconds: float
    extra: dict[str, Any] = field(default_factory=dict)


def baseline(model: str, params: dict[str, Any], seed: int) -> Any:
    """A baseline with a trial's parameters (and the run's seed, where it takes one)."""
    import inspect

    cls = BASELINES[model]
    kwargs = dict(params)
    if "seed" in inspect.signature(cls.__init__).parameters:
        kwargs["seed"] = seed
    return cls(**kwargs)


def _baseline_outcome(model: str, params: dict[str, Any], data: SearchData,
                      seed: int) -> TrialOutcome:
    t0 = time.perf_counter()
    fitted = baseline(model, params, seed).fit(data.train)
    v = data.validation
    m = evaluate_sampled(fitted.score, v.users, v.items, v.negatives)
    return TrialOutcome(float(m.hr), float(m.ndcg), None, time.perf_counter() - t0)


def _stage_outcome(model: str, config: PipelineConfig, data: SearchData,
                   pretrained: Pretrained | None,
                   on_epoch: Callable[[EpochRecord], None] | None,
                   device: str) -> TrialOutcome:
    n_users, n_items = data.train.n_users, data.train.n_items
    cfg = stage_config(model, config, device)
    t0 = time.perf_counter()
    if model == "neumf":
        assert pretrained is not None
        net: Any = fused_start(pretrained, config)
    else:
        net = init_model(model, config, n_users, n_items)
    history = train(net, data.train, data.validation, cfg, on_epoch=on_epoch)
    best = history.best
    if best is None or best.hr is None:
        raise NcfError(f"{model}: no validation epoch to score")
    return TrialOutcome(float(best.hr), float(best.ndcg or 0.0), history.best_epoch,
                        time.perf_counter() - t0, {"epochs_run": len(history.records)})


@dataclass
class Pretrained:
    """GMF and MLP trained as the pipeline trains them, with their histories."""

    models: dict[str, Any]
    histories: dict[str, History]
    seconds: dict[str, float]


def pretrain_key(config: PipelineConfig, train_data: Interactions) -> str:
    """What pre-trained GMF and MLP depend on, hashed (the name of their cache file)."""
    import hashlib

    from ncf.experiments.cells import config_hash

    pairs = hashlib.sha256(np.asarray(train_data.user_ids, dtype=np.int64).tobytes())
    pairs.update(np.asarray(train_data.item_ids, dtype=np.int64).tobytes())
    return config_hash({"factors": config.factors, "layers": config.n_layers,
                        "dropout": config.dropout, "seed": config.seed, "sparse": config.sparse,
                        "gmf": config.gmf, "mlp": config.mlp, "users": train_data.n_users,
                        "items": train_data.n_items, "train": pairs.hexdigest()})


def save_pretrained(path: Path, parts: Pretrained) -> None:
    """Write pre-trained parts (weights, histories, seconds) without pickle, atomically."""
    import io
    import json

    from ncf.runs import atomic_write

    arrays: dict[str, np.ndarray] = {}
    for name, net in parts.models.items():
        for k, v in net.state_dict().items():
            arrays[f"{name}/{k}"] = v.detach().cpu().numpy()
        h = parts.histories[name]
        arrays[f"history/{name}"] = np.array(json.dumps({
            "records": h.as_dicts(), "best_epoch": h.best_epoch,
            "stopped_early": h.stopped_early, "seconds": parts.seconds[name]}))
    buf = io.BytesIO()
    np.savez(buf, **arrays)  # type: ignore[arg-type]
    atomic_write(path, buf.getvalue())


def load_pretrained(path: Path, config: PipelineConfig, n_users: int, n_items: int) -> Pretrained:
    """Pre-trained parts written by :func:`save_pretrained`.

    Raises:
        DataError: naming the file when it is not such a file (delete it to train again).
    """
    import json

    import torch

    from ncf.errors import DataError

    models = {name: init_model(name, config, n_users, n_items) for name in ("gmf", "mlp")}
    histories, seconds = {}, {}
    try:
        with np.load(path, allow_pickle=False) as z:
            for name, net in models.items():
                net.load_state_dict({k.split("/", 1)[1]: torch.from_numpy(z[k])
                                     for k in z.files if k.startswith(name + "/")})
                h = json.loads(str(z[f"history/{name}"]))
                histories[name] = History([EpochRecord(**r) for r in h["records"]],
                                          h["best_epoch"], h["stopped_early"])
                seconds[name] = float(h["seconds"])
    except (OSError, ValueError, KeyError, TypeError, RuntimeError) as exc:
        raise DataError(f"not pre-trained models of ncf tune ({type(exc).__name__}): delete "
                        "it to train them again", path=path) from None
    return Pretrained(models, histories, seconds)


def fused_start(parts: Pretrained, config: PipelineConfig) -> Any:
    """NeuMF fused from pre-trained parts, with torch's generator seeded: its dropout masks
    are then the same in every trial and in the final run, whatever ran before in the
    process (they would otherwise follow the generator's state, and a trial's value would
    depend on the trials before it)."""
    import torch

    from ncf.models import GMF, MLP, NeuMF

    gmf, mlp = parts.models["gmf"], parts.models["mlp"]
    assert isinstance(gmf, GMF) and isinstance(mlp, MLP)
    torch.manual_seed(config.seed + 2)  # the pipeline's offset of the NeuMF stage
    return NeuMF.from_pretrained(gmf, mlp, alpha=config.alpha)


def pretrain_parts(config: PipelineConfig, data: SearchData, folder: Path | None,
                   device: str, say: Say) -> Pretrained:
    """GMF and MLP trained as the pipeline trains them, for NeuMF's fine-tuning trials.

    Kept in ``folder`` (``pretrained-<hash>.npz``, keyed by :func:`pretrain_key`) so that a
    resumed search, a second worker and the final run load them instead of training them
    again; a worker that finds another one training them waits for it.
    """
    from ncf.outputs import output_lock

    n_users, n_items = data.train.n_users, data.train.n_items
    path = None if folder is None else folder / f"pretrained-{pretrain_key(config, data.train)}.npz"

    def fit() -> Pretrained:
        models = {name: init_model(name, config, n_users, n_items) for name in ("gmf", "mlp")}
        histories, seconds = {}, {}
        for name, net in models.items():
            t0 = time.perf_counter()
            h = train(net, data.train, data.validation, stage_config(name, config, device))
            seconds[name] = time.perf_counter() - t0
            histories[name] = h
            best = h.best
            say(f"pre-trained {name.upper()}: validation HR@10 "
                f"{best.hr if best and best.hr is not None else float('nan'):.4f} at epoch "
                f"{h.best_epoch} ({seconds[name]:.0f}s)")
        return Pretrained(models, histories, seconds)

    if path is None:
        return fit()
    with output_lock(path, wait=True, what="pre-trained models"):  # a second worker waits
        if path.exists():
            say(f"pre-trained GMF and MLP loaded from {path.name}")
            return load_pretrained(path, config, n_users, n_items)
        parts = fit()
        save_pretrained(path, parts)
        return parts


# ---------------------------------------------------------------------------------------
# The study


@dataclass(frozen=True)
class TuneOptions:
    """What a search runs.

    Args:
        model: one of :data:`TUNABLE`.
        base: the pipeline configuration the trials start from (the run's defaults).
        trials: finished (complete or pruned) trials the study should hold; ``None``: no
            limit (then ``minutes`` must be given).
        minutes: wall-clock budget of this process's search (``None``: no limit).
        seed: seeds the sampler of a new study (a worker joining one draws its own).
        device: where the NCF trials train.
        prune: stop trials falling behind the median of earlier ones at the same epoch.
        epochs: maximum epochs of the tuned stage in a trial and in the final run
            (``None``: the base configuration's); pre-training keeps the base's.
    """

    model: str
    base: PipelineConfig
    trials: int | None = 30
    minutes: float | None = None
    seed: int = 0
    device: str = "cpu"
    prune: bool = True
    epochs: int | None = None


def storage_url(storage: str | None, folder: Path) -> str:
    """The study's database: ``storage`` as given, else SQLite in the study's folder."""
    return storage or f"sqlite:///{(folder / 'study.db').absolute()}"


def open_storage(url: str) -> Any:
    """Optuna's storage at ``url``; one clear error for a bad URL, a missing driver or an
    unreachable database."""
    optuna = require_optuna()
    kwargs: dict[str, Any] = {}
    if url.startswith("sqlite"):  # several workers on one file: wait for its lock
        kwargs = {"connect_args": {"timeout": 120}}
    try:
        return optuna.storages.RDBStorage(url, engine_kwargs=kwargs)
    except Exception as exc:  # a bad URL, a missing driver, an unreachable server
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise NcfError(f"--storage {url}: {first}") from None


def open_study(name: str, url: str, options: TuneOptions, fingerprint: str) -> tuple[Any, bool]:
    """The study ``name`` in ``url``, created when missing (with the defaults as its first
    trial). Returns the study and whether this process created it.

    Raises:
        NcfError: the study exists but searches another model or other data.
    """
    optuna = require_optuna()
    storage = open_storage(url)
    identity = {"model": options.model, "data": fingerprint}
    created = True
    try:
        study = optuna.create_study(study_name=name, storage=storage, direction="maximize",
                                    load_if_exists=False)
    except optuna.exceptions.DuplicatedStudyError:
        created = False
        study = optuna.load_study(study_name=name, storage=storage)
    if created:
        for key, value in identity.items():
            study.set_user_attr(key, value)
        study.enqueue_trial(default_trial(options.model, options.base),
                            user_attrs={"defaults": True})
    else:
        for key, value in identity.items():
            found = study.user_attrs.get(key)
            if found is not None and found != value:
                what = "model" if key == "model" else "data (another split)"
                raise NcfError(f"study {name!r} in {url} searched another {what}: "
                               f"{found!r}; choose another --study or --out")
    return study, created


def finished(study: Any) -> list[Any]:
    """The study's complete and pruned trials."""
    optuna = require_optuna()
    states = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
    return [t for t in study.get_trials(deepcopy=False) if t.state in states]


def run_search(study: Any, options: TuneOptions, data: SearchData, created: bool,
               pretrained: Pretrained | None, say: Say,
               on_epoch: Callable[[str, EpochRecord], None] | None = None,
               pruner: Any = None) -> int:
    """Add trials to ``study`` until it holds ``options.trials`` finished ones or
    ``options.minutes`` have passed. Returns the trials this process finished.

    ``pruner`` replaces the median pruner (tests); each trial records the process that ran
    it (``worker``: host and process id)."""
    optuna = require_optuna()
    model = options.model
    budget = options.trials
    done = len(finished(study))
    if budget is not None and done >= budget:
        say(f"the study holds {done} finished trials already (budget {budget})")
        return 0
    # A new study's creator seeds its sampler with --seed (reproducible); a worker that
    # joins or resumes a study draws its own, so two workers never propose alike.
    seed = options.seed if created else int.from_bytes(os.urandom(4), "little")
    sampler = optuna.samplers.TPESampler(seed=seed, n_startup_trials=8, multivariate=True,
                                         constant_liar=True)
    study.sampler = sampler
    if pruner is None:
        pruner = (optuna.pruners.MedianPruner(n_startup_trials=4, n_warmup_steps=2)
                  if options.prune else optuna.pruners.NopPruner())
    study.pruner = pruner
    worker = f"{socket.gethostname()}:{os.getpid()}"
    ran = 0

    def objective(trial: Any) -> float:
        nonlocal ran
        trial.set_user_attr("worker", worker)
        params = suggest(trial, model)
        best = -math.inf

        def report(record: EpochRecord) -> None:
            nonlocal best
            if on_epoch is not None:
                on_epoch(f"#{trial.number}", record)
            if record.hr is None:
                return
            best = max(best, record.hr)
            trial.report(best, record.epoch)
            if trial.should_prune():
                raise optuna.TrialPruned(f"validation HR@10 {best:.4f} after epoch "
                                         f"{record.epoch}")

        try:
            if model in NCF_STAGES:
                config = tuned_config(model, options.base, params, options.epochs)
                out = _stage_outcome(model, config, data, pretrained, report, options.device)
            else:
                out = _baseline_outcome(model, params, data, options.base.seed)
        except optuna.TrialPruned:
            ran += 1
            say(f"trial {trial.number}: pruned at validation HR@10 {best:.4f} "
                f"{_describe(params)}")
            raise
        trial.set_user_attr("validation_ndcg", out.ndcg)
        trial.set_user_attr("best_epoch", out.epoch)
        trial.set_user_attr("seconds", out.seconds)
        ran += 1
        say(f"trial {trial.number}: validation HR@10 {out.hr:.4f} NDCG@10 {out.ndcg:.4f}"
            f"{'' if out.epoch is None else f' (epoch {out.epoch})'} {_describe(params)} "
            f"{out.seconds:.0f}s")
        return out.hr

    callbacks = []
    if budget is not None:
        states = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
        callbacks.append(optuna.study.MaxTrialsCallback(budget, states=states))
    timeout = None if options.minutes is None else options.minutes * 60
    study.optimize(objective, n_trials=None if budget is None else budget - done,
                   timeout=timeout, callbacks=callbacks, catch=())
    return ran


def _describe(params: dict[str, Any]) -> str:
    parts = []
    for k, v in params.items():
        parts.append(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}")
    return "(" + ", ".join(parts) + ")"


def best_params(study: Any, model: str) -> tuple[Any, dict[str, Any]]:
    """The best complete trial and its parameters as the model takes them."""
    optuna = require_optuna()
    complete = [t for t in study.get_trials(deepcopy=False)
                if t.state == optuna.trial.TrialState.COMPLETE]
    if not complete:
        raise NcfError(f"study {study.study_name!r} has no complete trial yet: run the "
                       "search longer (--trials / --minutes)")
    best = max(complete, key=lambda t: (t.value, t.user_attrs.get("validation_ndcg", 0.0),
                                        -t.number))
    return best, trial_params(model, best.params)


def trial_rows(study: Any) -> list[dict[str, Any]]:
    """One row per trial, for ``trials.csv`` and the plot."""
    rows = []
    for t in study.get_trials(deepcopy=False):
        steps = t.intermediate_values
        rows.append({
            "number": t.number, "state": t.state.name,
            "validation_hr": t.value if t.value is not None else (
                max(steps.values()) if steps else None),
            "validation_ndcg": t.user_attrs.get("validation_ndcg"),
            "epochs": max(steps) if steps else None,
            "best_epoch": t.user_attrs.get("best_epoch"),
            "seconds": t.user_attrs.get("seconds"),
            "defaults": bool(t.user_attrs.get("defaults", False)),
            **{f"param_{k}": v for k, v in t.params.items()},
        })
    return rows


# ---------------------------------------------------------------------------------------
# The best configuration, trained again and scored on the test split


def train_best(model: str, config: PipelineConfig, params: dict[str, Any], data: Any,
               run_dir: Path, device: str, say: Say,
               on_epoch: Callable[[str, EpochRecord], None] | None = None,
               extra: dict[str, Any] | None = None, epochs: int | None = None,
               pretrained: Pretrained | None = None) -> dict[str, Any]:
    """Train the best configuration into ``run_dir`` and return its metrics by model.

    NCF: an ordinary run directory (``config.json``, models, histories, curves,
    ``metrics.json``); a GMF or MLP study trains that stage alone, a NeuMF study the whole
    pipeline with the tuned fine-tuning (GMF and MLP as ``pretrained``, when given: the
    pipeline would train them to the same weights). A baseline: its model, ``config.json``
    and ``metrics.json`` (validation and test, sampled and full ranking).
    """
    from ncf.pipeline import StageResult, run_pipeline, stage_metrics
    from ncf.report import all_interactions, finish_run, save_stage, start_run
    from ncf.runs import new_run_dir, write_json

    split = data.split
    run_dir = new_run_dir(run_dir)
    info = {"tuned": {"model": model, "params": params}, "device": device, **(extra or {})}
    if model not in NCF_STAGES:
        from ncf.experiments.cells import all_metrics

        t0 = time.perf_counter()
        unfitted = baseline(model, params, config.seed)
        kwargs = unfitted.hyper_parameters()
        fitted = unfitted.fit(split.train)
        seconds = time.perf_counter() - t0
        metrics = all_metrics(fitted.score, split, config.full_ranking_users)
        (run_dir / "models").mkdir(exist_ok=True)
        fitted.save(run_dir / "models" / f"{model}.npz")
        write_json(run_dir / "config.json", {"baseline": model, "params": kwargs,
                                             "data": data.provenance, **info})
        out = {model: {"sampled": metrics["test"]["sampled"], "full": metrics["test"]["full"],
                       "validation": metrics["validation"]["sampled"],
                       "validation_full": metrics["validation"]["full"],
                       "train_seconds": seconds}}
        write_json(run_dir / "metrics.json", out)
        return out
    config = tuned_config(model, config, params, epochs)
    seen = all_interactions(split)
    start_run(run_dir, config, data, seen, extra=info)
    results: dict[str, StageResult] = {}

    def result(name: str, net: Any, history: History, seconds: float) -> None:
        metrics = stage_metrics(net, history, split, config, seconds)
        results[name] = StageResult(name, net, history, metrics, seconds)
        save_stage(run_dir, results[name], seen)

    def fit(name: str, net: Any) -> None:
        t0 = time.perf_counter()
        history = train(net, split.train, validation_target(split),
                        stage_config(name, config, device),
                        on_epoch=None if on_epoch is None else (lambda r: on_epoch(name, r)))
        result(name, net, history, time.perf_counter() - t0)

    if model == "neumf" and pretrained is None:
        def keep(res: StageResult) -> None:
            save_stage(run_dir, res, seen)

        results = run_pipeline(split, config, on_epoch=on_epoch, device=device, on_result=keep)
    elif model == "neumf":
        assert pretrained is not None
        for name in ("gmf", "mlp"):
            result(name, pretrained.models[name], pretrained.histories[name],
                   pretrained.seconds[name])
        fit("neumf", fused_start(pretrained, config))
    else:
        fit(model, init_model(model, config, split.train.n_users, split.train.n_items))
    finish_run(run_dir, results)
    return {name: res.metrics for name, res in results.items()}


def write_report(out: Path, study: Any, url: str, model: str, data_title: str,
                 metrics: dict[str, Any], run_dir: Path, seconds: float) -> Path:
    """``report.md``, ``trials.csv``, ``best.json`` and ``search.png`` of a finished study."""
    import csv
    import io

    from ncf.plots import plot_search
    from ncf.runs import atomic_write, write_json

    rows = trial_rows(study)
    best, params = best_params(study, model)
    defaults = next((r for r in rows if r["defaults"] and r["state"] == "COMPLETE"), None)
    counts: dict[str, int] = {}
    for r in rows:
        counts[r["state"]] = counts.get(r["state"], 0) + 1
    keys = sorted({k for r in rows for k in r}, key=lambda k: (k.startswith("param_"), k))
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=keys, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write(out / "trials.csv", buf.getvalue().encode())
    plot_search(rows, out / "search.png", f"{model} on {data_title}")
    final = metrics.get(model) or {}
    write_json(out / "best.json", {
        "model": model, "study": study.study_name, "storage": url, "best_trial": best.number,
        "params": params, "search_validation": {"hr": best.value,
                                                "ndcg": best.user_attrs.get("validation_ndcg")},
        "final": final, "run_dir": str(run_dir), "trials": counts})

    def f(x: Any) -> str:
        return "-" if x is None else f"{x:.4f}"

    state = ", ".join(f"{n} {s.lower()}" for s, n in sorted(counts.items()))
    lines = [
        f"# ncf tune: {model} on {data_title}", "",
        f"Study `{study.study_name}` in `{url}`: {state}. TPE sampler"
        + (", median pruner on the best validation HR@10 so far at each epoch"
           if model in NCF_STAGES else "")
        + ". Trials saw the training split and the validation items only; the test split was "
        "scored once, on the final run below.", "",
        f"## Best configuration (trial {best.number})", "",
        "| parameter | value |", "| --- | --- |",
        *[f"| {k} | {v:.4g} |" if isinstance(v, float) else f"| {k} | {v} |"
          for k, v in params.items()], "",
        "## Validation beside test", "",
        "| | validation HR@10 | validation NDCG@10 | test HR@10 | test NDCG@10 |",
        "| --- | --- | --- | --- | --- |",
    ]
    if defaults is not None:
        lines.append(f"| defaults (trial {defaults['number']}) | {f(defaults['validation_hr'])} "
                     f"| {f(defaults['validation_ndcg'])} | - | - |")
    lines.append(f"| best trial ({best.number}) | {f(best.value)} | "
                 f"{f(best.user_attrs.get('validation_ndcg'))} | - | - |")
    for name, m in metrics.items():
        v = m.get("validation") or {}
        lines.append(f"| final run: {name} | {f(v.get('hr'))} | {f(v.get('ndcg'))} | "
                     f"{f(m['sampled']['hr'])} | {f(m['sampled']['ndcg'])} |")
    lines += ["", f"Final run: `{run_dir.name}/` (full ranking in its `metrics.json`). "
              f"Search plot: `search.png`; every trial: `trials.csv`. {seconds:.0f}s in this "
              "process.", ""]
    return atomic_write(out / "report.md", "\n".join(lines).encode())
