"""Cells of an experiment: one (model, setting, seed), its configuration, hash and result.

A cell's result is one JSON file named by a hash of its full configuration (data fingerprint
included), written atomically; a cell whose file exists is never recomputed. NCF cells are
trained by :func:`ncf.pipeline.run_pipeline`: a NeuMF-with-pre-training cell also yields the
GMF and MLP cells of the same setting, so those are never trained twice.
"""

from __future__ import annotations

import hashlib
import inspect
import itertools
import json
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from ncf.baselines import BASELINES
from ncf.errors import DataError, NcfError
from ncf.evaluation import ScoreFn, evaluate
from ncf.experiments.names import LABELS
from ncf.pipeline import (
    FINETUNE_PRESETS,
    PipelineConfig,
    StageResult,
    init_model,
    resolve_sparse,
    run_pipeline,
    stage_config,
    validation_target,
)
from ncf.runs import write_json
from ncf.split import Split
from ncf.training import TrainConfig, model_scorer, train

#: Bump when the meaning of a stored result changes (old cells are then recomputed).
CELL_VERSION = 1

#: Baselines trained on sampled negatives.
SAMPLED_BASELINES = ("bpr", "mf")

#: Baselines whose main hyper-parameter is a number of factors.
FACTOR_BASELINES = ("puresvd", "ials", "bpr", "mf")

#: Validation grids of the baselines (every point fitted, the best validation HR@10 kept).
#: ``factors`` of PureSVD is tuned only where the setting does not fix the factor size. Its
#: grid starts at one singular triplet: the best rank falls with density (ml-100k: 16; a
#: random 15% of it: 2; sparse Netflix samples: 1, where the first singular vector ranks
#: items much as popularity does), and a grid from 16 up left PureSVD far below ItemPop on
#: sparse data (NOTES.md).
BASELINE_GRIDS: dict[str, dict[str, list[Any]]] = {
    "itempop": {},
    "itemknn": {"neighbours": [50, 100, 200]},
    "puresvd": {"factors": [1, 2, 4, 8, 16, 32, 64, 128]},
    "ease": {"reg": [100.0, 250.0, 500.0, 1000.0]},
    "bpr": {"reg": [0.001, 0.0025, 0.01]},
    "ials": {"reg": [1.0, 10.0, 100.0], "alpha": [1.0, 10.0]},
    "mf": {"reg": [0.001, 0.005]},
}

Say = Callable[[str], None]


def config_hash(config: dict[str, Any]) -> str:
    """A stable 16-hex-digit hash of a JSON-able configuration."""
    text = json.dumps(config, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class BaselineSpec:
    """A baseline, its fixed parameters and its validation grid."""

    name: str
    fixed: dict[str, Any]
    grid: dict[str, list[Any]]
    seed: int | None


@dataclass(frozen=True, eq=False)
class Cell:
    """One (model, setting, seed) of an experiment.

    Args:
        model: an NCF model (``NCF_MODELS``) or a baseline name.
        setting: the grid point the cell belongs to, e.g. ``{"factors": 8}``.
        seed: the model seed.
        spec: how to compute it: a :class:`PipelineConfig` or a :class:`BaselineSpec`.
        config: the full configuration (JSON-able), hashed into the file name.
    """

    model: str
    setting: dict[str, int]
    seed: int
    spec: PipelineConfig | BaselineSpec
    config: dict[str, Any] = field(repr=False)

    @property
    def key(self) -> str:
        return config_hash(self.config)

    @property
    def filename(self) -> str:
        return f"{self.model}-{self.key}.json"


@dataclass(frozen=True)
class Budget:
    """Training choices shared by every NCF cell of an experiment."""

    epochs: int = 10
    batch_size: int = 256
    lr: float = 0.001
    full_ranking_users: int | None = 10_000
    device: str = "cpu"
    dropout: float = 0.0


def pipeline_config(setting: dict[str, int], seed: int, budget: Budget,
                    pretrain: bool, n_users: int) -> PipelineConfig:
    """The pipeline configuration of an NCF setting (factors, layers, negatives), with the
    row-wise update choice made explicit for ``n_users`` users on the budget's device."""
    negatives = int(setting.get("negatives", 4))
    # The stage seeds are set as run_pipeline sets them, so the stored configuration is exact.
    stage = TrainConfig(epochs=budget.epochs, batch_size=budget.batch_size, lr=budget.lr,
                        n_negatives=negatives, device=budget.device, seed=seed)
    neumf = replace(FINETUNE_PRESETS["tuned" if pretrain else "adam"], epochs=budget.epochs,
                    batch_size=budget.batch_size, n_negatives=negatives, device=budget.device,
                    seed=seed)
    return PipelineConfig(
        factors=int(setting.get("factors", 8)), n_layers=int(setting.get("layers", 3)),
        pretrain=pretrain, gmf=stage, mlp=stage, neumf=neumf, seed=seed,
        full_ranking_users=budget.full_ranking_users, dropout=budget.dropout,
        sparse=resolve_sparse(None, n_users, budget.device),
    )


def ncf_cell_config(model: str, pc: PipelineConfig, fingerprint: str) -> dict[str, Any]:
    """The configuration an NCF model's result depends on, and nothing else."""
    cfg: dict[str, Any] = {"kind": "ncf", "model": model, "version": CELL_VERSION,
                           "data": fingerprint, "seed": pc.seed, "factors": pc.factors,
                           "sparse": pc.sparse, "full_ranking_users": pc.full_ranking_users,
                           "k": 10, "selection": "best epoch by validation HR@10"}
    if model in ("mlp", "neumf", "neumf-scratch"):
        cfg["n_layers"] = pc.n_layers
        if pc.dropout:  # absent at 0, so results stored before dropout existed stay valid
            cfg["dropout"] = pc.dropout
    if model in ("gmf", "neumf"):
        cfg["gmf"] = asdict(pc.gmf)
    if model in ("mlp", "neumf"):
        cfg["mlp"] = asdict(pc.mlp)
    if model in ("neumf", "neumf-scratch"):
        cfg.update(pretrain=model == "neumf", alpha=pc.alpha,
                   share_embeddings=pc.share_embeddings, neumf=asdict(pc.neumf))
    return cfg


def _takes_seed(name: str) -> bool:
    return "seed" in inspect.signature(BASELINES[name].__init__).parameters


def baseline_spec(name: str, setting: dict[str, int], seed: int, fix_factors: bool,
                  quick: bool) -> BaselineSpec:
    """A baseline's spec: the factor size from the setting where it applies, else tuned."""
    grid = dict(BASELINE_GRIDS[name])
    fixed: dict[str, Any] = {}
    if name in FACTOR_BASELINES and fix_factors and "factors" in setting:
        fixed["factors"] = int(setting["factors"])
        grid.pop("factors", None)
    elif name in FACTOR_BASELINES and "factors" not in grid:
        # not tuned: the class default, recorded so that reports show the size that ran
        fixed["factors"] = inspect.signature(BASELINES[name].__init__).parameters["factors"].default
    if quick:
        points = list(_grid_points(grid))[:2]
        grid = {k: sorted({p[k] for p in points}) for k in grid}
    return BaselineSpec(name, fixed, grid, seed if _takes_seed(name) else None)


def baseline_cell_config(spec: BaselineSpec, fingerprint: str,
                         full_users: int | None) -> dict[str, Any]:
    """The configuration a baseline's result depends on (no seed for deterministic ones)."""
    cfg = {"kind": "baseline", "model": spec.name, "version": CELL_VERSION,
           "data": fingerprint, "fixed": spec.fixed, "grid": spec.grid, "seed": spec.seed,
           "full_ranking_users": full_users, "k": 10,
           "selection": "grid point with the best validation HR@10 (sampled)"}
    if spec.name in SAMPLED_BASELINES:  # their draws changed when they took NCF's sampler
        cfg["negatives"] = "ncf.sampling.sample_negatives"
    return cfg


def _grid_points(grid: dict[str, list[Any]]) -> Iterable[dict[str, Any]]:
    keys = sorted(grid)
    for values in itertools.product(*(grid[k] for k in keys)):
        yield dict(zip(keys, values, strict=True))


def all_metrics(score: ScoreFn, split: Split, full_users: int | None) -> dict[str, Any]:
    """Validation and test metrics under the sampled protocol and under full ranking.

    The users sampled for full ranking (when capped) are the same for every model.
    """
    out: dict[str, Any] = {}
    for on in ("validation", "test"):
        out[on] = {p: evaluate(score, split, on=on, protocol=p, k=10,  # type: ignore[arg-type]
                               max_users=full_users if p == "full" else None, seed=0).as_dict()
                   for p in ("sampled", "full")}
    return out


class CellStore:
    """A folder of cell results, one ``MODEL-HASH.json`` per configuration."""

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)

    def path(self, cell: Cell) -> Path:
        return self.folder / cell.filename

    def load(self, cell: Cell) -> dict[str, Any] | None:
        """The stored result of ``cell``, or ``None`` when missing or not of this config.

        Raises:
            DataError: naming the file, when it is not a cell result (edited, or replaced by
                something else): deleting it makes the next run compute the cell again.
        """
        path = self.path(cell)
        try:
            stored = json.loads(path.read_bytes().decode("utf-8"))
        except FileNotFoundError:
            return None
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise _broken(path, type(exc).__name__) from None
        if not isinstance(stored, dict):
            raise _broken(path, f"a JSON {type(stored).__name__}, not an object")
        if stored.get("config") != json.loads(json.dumps(cell.config)):
            return None
        problem = _result_problem(stored)
        if problem:
            raise _broken(path, problem)
        return stored

    def save(self, cell: Cell, result: dict[str, Any], seconds: float) -> dict[str, Any]:
        stored = {"key": cell.key, "model": cell.model, "config": cell.config,
                  "result": result, "seconds": seconds,
                  "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
        write_json(self.path(cell), stored)
        return stored


def _broken(path: Path, why: str) -> DataError:
    return DataError(f"not a cell result of ncf ({why}): delete it, and the next run computes "
                     "the cell again", path=path)


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _result_problem(stored: dict[str, Any]) -> str:
    """What is wrong with a stored cell (``""``: nothing); the reports read all of it."""
    if not _number(stored.get("seconds")):
        return "no 'seconds'"
    result = stored.get("result")
    if not isinstance(result, dict):
        return "no 'result'"
    for part in ("validation", "test"):
        for protocol in ("sampled", "full"):
            metrics = result.get(part, {}).get(protocol) if isinstance(
                result.get(part), dict) else None
            if not isinstance(metrics, dict) or not all(
                    _number(metrics.get(m)) for m in ("hr", "ndcg")):
                return f"no {part} {protocol} metrics"
    history = result.get("history", [])
    if not isinstance(history, list) or not all(
            isinstance(h, dict) and all(k in h and (h[k] is None or _number(h[k]))
                                        for k in ("loss", "hr", "ndcg")) for h in history):
        return "a broken 'history'"
    chosen = result.get("chosen", {})
    if not isinstance(chosen, dict) or not isinstance(chosen.get("factors", 0), int):
        return "a broken 'chosen'"
    return ""


def _ncf_result(model: Any, history: Any, split: Split, full_users: int | None) -> dict[str, Any]:
    device = str(next(model.parameters()).device)
    res = all_metrics(model_scorer(model, device=device), split, full_users)
    res["best_epoch"] = history.best_epoch
    res["history"] = history.as_dicts()
    return res


def _train_single(name: str, pc: PipelineConfig, split: Split) -> tuple[Any, Any]:
    """GMF or MLP alone, initialised and trained exactly as :func:`run_pipeline` does."""
    device = pc.gmf.device
    model = init_model(name, pc, split.train.n_users, split.train.n_items, device)
    history = train(model, split.train, validation_target(split), stage_config(name, pc))
    return model, history


def _tune_baseline(spec: BaselineSpec, split: Split, full_users: int | None) -> dict[str, Any]:
    """Fit every grid point, keep the best by validation HR@10 (then NDCG), score it."""
    cls = BASELINES[spec.name]
    tuning: list[dict[str, Any]] = []
    best: tuple[tuple[float, float], Any, dict[str, Any]] | None = None
    n_min = min(split.train.n_users, split.train.n_items)
    for params in _grid_points(spec.grid):
        kw = {**spec.fixed, **params}
        if spec.name == "puresvd" and kw.get("factors", 0) >= n_min:
            continue  # more singular triplets than the matrix has
        if spec.seed is not None:
            kw["seed"] = spec.seed
        model = cls(**kw).fit(split.train)
        m = evaluate(model.score, split, on="validation", protocol="sampled", k=10)
        tuning.append({"params": params, "validation_hr": m.hr, "validation_ndcg": m.ndcg})
        if best is None or (m.hr, m.ndcg) > best[0]:
            best = ((m.hr, m.ndcg), model, params)
    if best is None:
        raise NcfError(f"{spec.name}: no grid point fits this data ({spec.grid})")
    res = all_metrics(best[1].score, split, full_users)
    res.update(chosen={**spec.fixed, **best[2]}, tuning=tuning)
    return res


@dataclass
class RunStats:
    """What one call of :func:`compute_cells` did."""

    computed: list[str] = field(default_factory=list)
    reused: int = 0


def _describe(cell: Cell) -> str:
    setting = " ".join(f"{k}={v}" for k, v in cell.setting.items())
    return f"{LABELS.get(cell.model, cell.model)} {setting} seed={cell.seed}".strip()


def _line(cell: Cell, stored: dict[str, Any], done: int, total: int) -> str:
    r = stored["result"]
    val, test = r["validation"]["sampled"], r["test"]["sampled"]
    return (f"[{done}/{total}] {_describe(cell)}: val HR@10 {val['hr']:.4f}  "
            f"test HR@10 {test['hr']:.4f}  ({stored['seconds']:.1f}s)")


def compute_cells(cells: list[Cell], split: Split, store: CellStore, fingerprint: str,
                  say: Say = lambda s: None) -> RunStats:
    """Compute every cell whose result is not stored yet, writing each as it finishes."""
    stats = RunStats()
    missing: dict[str, Cell] = {}
    for key, c in {c.key: c for c in reversed(cells)}.items():  # first cell of each key wins
        if store.load(c) is None:
            missing[key] = c
        else:
            stats.reused += 1
    missing = {k: missing[k] for k in dict.fromkeys(c.key for c in cells) if k in missing}
    # NeuMF with pre-training trains GMF and MLP too: their cells come with it.
    extras: dict[str, dict[str, Cell]] = {}
    claimed: set[str] = set()
    for c in list(missing.values()):
        if c.model != "neumf":
            continue
        assert isinstance(c.spec, PipelineConfig)
        extras[c.key] = {}
        for part in ("gmf", "mlp"):
            pc = c.spec
            sub = Cell(part, c.setting, c.seed, pc, ncf_cell_config(part, pc, fingerprint))
            if sub.key in claimed:
                continue  # another pipeline run of this experiment already yields it
            if sub.key in missing:
                extras[c.key][part] = missing.pop(sub.key)
            elif store.load(sub) is None:
                extras[c.key][part] = sub
            claimed.add(sub.key)
    total = len(missing) + sum(len(e) for e in extras.values())
    done = 0

    def finish(cell: Cell, result: dict[str, Any], seconds: float) -> None:
        nonlocal done
        stored = store.save(cell, result, seconds)
        done += 1
        stats.computed.append(cell.key)
        say(_line(cell, stored, done, total))

    for c in missing.values():
        full_users = c.config.get("full_ranking_users")
        if isinstance(c.spec, BaselineSpec):
            t0 = time.perf_counter()
            finish(c, _tune_baseline(c.spec, split, full_users), time.perf_counter() - t0)
        elif c.model in ("gmf", "mlp"):
            t0 = time.perf_counter()
            model, history = _train_single(c.model, c.spec, split)
            finish(c, _ncf_result(model, history, split, full_users), time.perf_counter() - t0)
        else:
            _run_pipeline_cells(c, extras.get(c.key, {}), split, finish)
    return stats


def _run_pipeline_cells(cell: Cell, parts: dict[str, Cell], split: Split,
                        finish: Callable[[Cell, dict[str, Any], float], None]) -> None:
    """One pipeline run for a NeuMF cell, finishing the GMF / MLP cells it also trained as
    soon as each is final, so an interrupted NeuMF stage does not lose them."""
    assert isinstance(cell.spec, PipelineConfig)
    full_users = cell.config.get("full_ranking_users")

    def done(res: StageResult) -> None:
        target = cell if res.name == "neumf" else parts.get(res.name)
        if target is None:
            return
        t = time.perf_counter()
        result = _ncf_result(res.model, res.history, split, full_users)
        finish(target, result, res.seconds + time.perf_counter() - t)  # training + scoring

    run_pipeline(split, cell.spec, device=cell.spec.neumf.device, on_result=done)
