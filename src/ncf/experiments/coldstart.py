"""Cold start: whole users held out, folded in from their first N items, against ItemPop and
against the same users trained in normally.

A seeded sample of users with at least ``max(N) + 5`` interactions is held out whole. The
*base* models train on everyone else (the run's own split, those users' rows removed);
each held-out user's interactions are ordered by time (ties, or data without times: a
seeded random order), and for every N:

- **fold-in**: the user's first N items are folded into the base model
  (:func:`ncf.foldin.fold_in`, item side frozen);
- **trained in**: the same models trained again, with the same seeds and configuration, on
  the base training data plus every held-out user's first N items;
- **ItemPop**: the base training data's popularity.

All three are scored on the user's remaining items by the one evaluation path
(:mod:`ncf.evaluation`): full ranking over every item the user did not give (Recall@10 and
NDCG@10, :func:`~ncf.evaluation.evaluate_full_sets`), and the sampled protocol (each
remaining item among 99 items the user never touched, HR@10 and NDCG@10).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp
import torch

from ncf.errors import NcfError
from ncf.evaluation import ScoreFn, evaluate_full_sets, evaluate_sampled
from ncf.foldin import FoldInConfig, UserSpace, fold_in
from ncf.interactions import Interactions
from ncf.models import NCFModule
from ncf.pipeline import PipelineConfig, init_model, run_pipeline, stage_config, validation_target
from ncf.runs import atomic_write, write_json
from ncf.sampling import sample_candidates
from ncf.split import Split
from ncf.training import model_scorer, train

NAME = "coldstart"
TITLE = "new users folded in from their first N items, against ItemPop and trained-in users"
#: Interactions a held-out user keeps beyond the largest N, at least.
MIN_REMAINING = 5


@dataclass(frozen=True)
class ColdStartOptions:
    """What the cold-start study runs.

    Args:
        given: the numbers of items folded in (N).
        users: held-out users (``None``: 20% of the eligible ones, at most 1000).
        models: NCF models to fold into: ``gmf`` alone trains GMF only; ``mlp`` or ``neumf``
            run the whole pre-training pipeline (which yields all three).
        pipeline: training of the base and trained-in models.
        fold: the fold-in configuration.
        seed: seed of the held-out users, their order and the sampled candidates.
    """

    given: tuple[int, ...] = (1, 3, 5, 10, 20)
    users: int | None = None
    models: tuple[str, ...] = ("gmf",)
    pipeline: PipelineConfig = field(default_factory=PipelineConfig)
    fold: FoldInConfig = field(default_factory=FoldInConfig)
    seed: int = 0

    def __post_init__(self) -> None:
        if not self.given or min(self.given) < 1:
            raise NcfError(f"the numbers of given items must be >= 1, got {self.given}")
        bad = [m for m in self.models if m not in ("gmf", "mlp", "neumf")]
        if bad or not self.models:
            raise NcfError(f"cold start folds into gmf, mlp or neumf, not {', '.join(bad)}")
        if self.users is not None and self.users < 1:
            raise NcfError(f"held-out users must be >= 1, got {self.users}")


@dataclass(frozen=True, eq=False)
class HeldOut:
    """The held-out users and their interactions in order (by time, ties at random)."""

    users: np.ndarray  # (H,) dense user ids, ascending
    items: list[np.ndarray]  # per user, items in order
    all_keys: np.ndarray  # sorted keys user * n_items + item of every interaction

    def first(self, n: int) -> list[np.ndarray]:
        return [x[:n] for x in self.items]

    def rest(self, n: int) -> list[np.ndarray]:
        return [x[n:] for x in self.items]


def _all_rows(split: Split) -> Interactions:
    parts = [p for p in (split.validation, split.test) if p is not None]
    return split.train.concat(*parts)


def choose_users(split: Split, options: ColdStartOptions) -> HeldOut:
    """The held-out users (seeded) and each one's interactions in time order."""
    rows = _all_rows(split)
    counts = rows.user_counts()
    eligible = np.flatnonzero(counts >= max(options.given) + MIN_REMAINING)
    n = options.users if options.users is not None else min(1000, round(0.2 * len(eligible)))
    if len(eligible) < 2 or n < 1:
        raise NcfError(f"too few users with at least {max(options.given) + MIN_REMAINING} "
                       "interactions to hold any out")
    if n >= len(eligible) or n > 0.5 * rows.n_users:
        raise NcfError(f"{n} held-out users of {len(eligible)} eligible ({rows.n_users} in all): "
                       "hold out at most half of the users (--users)")
    rng = np.random.default_rng(options.seed)
    users = np.sort(rng.choice(eligible, n, replace=False))
    mine = np.isin(rows.user_ids, users)
    u, i = rows.user_ids[mine], rows.item_ids[mine]
    t = rows.timestamps[mine] if rows.timestamps is not None else np.zeros(len(u), np.int64)
    order = np.lexsort((rng.random(len(u)), t, u))  # by user, then time, ties at random
    u, i = u[order], i[order]
    bounds = np.searchsorted(u, users)
    items = np.split(i.astype(np.int64), bounds[1:])
    keys = np.sort(rows.user_ids.astype(np.int64) * rows.n_items + rows.item_ids)
    return HeldOut(users, items, keys)


def base_split(split: Split, users: np.ndarray) -> Split:
    """The split without the held-out users' rows (their candidates dropped with them)."""

    kt = ~np.isin(split.test.user_ids, users)
    v = split.validation
    kv = None if v is None else ~np.isin(v.user_ids, users)
    return replace(
        split, train=split.train.subset(~np.isin(split.train.user_ids, users)),
        test=split.test.subset(kt),
        validation=None if v is None or kv is None else v.subset(kv),
        test_negatives=None if split.test_negatives is None else split.test_negatives[kt],
        validation_negatives=None if split.validation_negatives is None or kv is None
        else split.validation_negatives[kv],
    )


def with_given(base: Split, held: HeldOut, n: int) -> Split:
    """``base`` with each held-out user's first ``n`` items added to its training rows."""
    first = held.first(n)
    users = np.repeat(held.users, [len(x) for x in first]).astype(np.int32)
    items = np.concatenate(first).astype(np.int32)
    t = base.train
    extra = t.with_arrays(user_ids=users, item_ids=items,
                          ratings=None if t.ratings is None else np.ones(len(users), np.float32),
                          timestamps=None if t.timestamps is None
                          else np.zeros(len(users), np.int64))
    return replace(base, train=t.concat(extra))


def train_models(split: Split, options: ColdStartOptions,
                 say: Callable[[str], None]) -> dict[str, NCFModule]:
    """The requested models trained on ``split`` (GMF alone, or the whole pipeline)."""
    pc = options.pipeline
    if options.models == ("gmf",):
        model = init_model("gmf", pc, split.train.n_users, split.train.n_items)
        train(model, split.train, validation_target(split), stage_config("gmf", pc))
        return {"gmf": model}
    results = run_pipeline(split, pc)
    return {name: results[name].model for name in options.models}


def _csr(rows: list[np.ndarray], n_items: int) -> sp.csr_matrix:
    lengths = np.array([len(r) for r in rows])
    data = np.ones(int(lengths.sum()), dtype=np.float32)
    indptr = np.r_[0, np.cumsum(lengths)]
    m = sp.csr_matrix((data, np.concatenate(rows) if rows else np.zeros(0, np.int64), indptr),
                      shape=(len(rows), n_items))
    m.sum_duplicates()
    return m


def score_rows(score: ScoreFn, held: HeldOut, n: int, n_items: int, seed: int) -> dict[str, Any]:
    """Full-ranking and sampled metrics of ``score(row, items)`` (rows: held-out users, in
    order) on each user's items after the first ``n``."""
    rows = np.arange(len(held.users))
    rest, given = held.rest(n), held.first(n)
    full = evaluate_full_sets(score, rows, _csr(rest, n_items), _csr(given, n_items), n_items)
    row_of = np.repeat(rows, [len(r) for r in rest])
    positives = np.concatenate(rest)
    # 99 candidates per remaining item, never an item the user interacted with
    cands = sample_candidates(held.users[row_of], held.all_keys, n_items, n=99, seed=seed + n)
    sampled = evaluate_sampled(score, row_of, positives, cands)
    return {"full": full.as_dict(), "sampled": sampled.as_dict()}


def _user_score(model: NCFModule, users: np.ndarray) -> ScoreFn:
    scorer = model_scorer(model)
    return lambda rows, items: scorer(users[np.asarray(rows)], items)


def _folded_score(space: UserSpace, z: torch.Tensor) -> ScoreFn:
    @torch.no_grad()
    def score(rows: np.ndarray, items: np.ndarray) -> np.ndarray:
        idx = torch.from_numpy(np.asarray(rows, dtype=np.int64))
        it = torch.from_numpy(np.array(items, dtype=np.int64))
        step = max(1, (1 << 22) // max(it.shape[1] * space._width(), 1))
        return torch.cat([space.logits(z[idx[s : s + step]], it[s : s + step])
                          for s in range(0, len(idx), step)]).numpy()
    return score


def run_coldstart(
    data: Any,
    options: ColdStartOptions,
    out: str | Path,
    say: Callable[[str], None] = lambda s: None,
    data_title: str | None = None,
) -> dict[str, Any]:
    """Run the study on ``data`` (a :class:`~ncf.sources.TrainingData`), write ``out``.

    Writes ``config.json`` first, then ``results.json`` and ``report.md`` after every N, so
    an interrupted run keeps the rows it finished.
    """
    t0 = time.perf_counter()
    out = Path(out)
    split = data.split
    n_items = split.train.n_items
    held = choose_users(split, options)
    base = base_split(split, held.users)
    out.mkdir(parents=True, exist_ok=True)
    info = {"description": getattr(data, "description", ""), "users": split.train.n_users,
            "items": n_items, "held_out_users": len(held.users),
            "held_out_interactions": int(sum(len(x) for x in held.items)),
            "timestamps": split.train.timestamps is not None}
    write_json(out / "config.json", {"experiment": NAME, "title": TITLE,
                                     "options": asdict(options), "data": info,
                                     "cells": []})
    say(f"{NAME}: {len(held.users)} held-out users ({info['held_out_interactions']:,} "
        f"interactions), base training on {len(base.train):,} interactions")
    t = time.perf_counter()
    base_models = train_models(base, options, say)
    base_seconds = time.perf_counter() - t
    say(f"base models trained ({base_seconds:.0f}s)")
    trained_users = np.flatnonzero(base.train.user_counts() > 0)
    pop = base.train.item_counts().astype(np.float32)
    results: dict[str, Any] = {"data": info, "base_seconds": base_seconds, "rows": []}
    for n in options.given:
        row: dict[str, Any] = {"given": n, "itempop": score_rows(
            lambda r, items: pop[items], held, n, n_items, options.seed)}
        for name, model in base_models.items():
            space = UserSpace(model, prior_users=trained_users)
            t = time.perf_counter()
            z = fold_in(space, held.first(n), config=options.fold)
            fold_ms = 1000 * (time.perf_counter() - t) / len(held.users)
            row[f"foldin_{name}"] = score_rows(_folded_score(space, z), held, n, n_items,
                                               options.seed)
            row[f"foldin_{name}"]["ms_per_user"] = fold_ms
        t = time.perf_counter()
        trained = train_models(with_given(base, held, n), options, say)
        row["train_seconds"] = time.perf_counter() - t
        for name, model in trained.items():
            row[f"trained_{name}"] = score_rows(_user_score(model, held.users), held, n,
                                                n_items, options.seed)
        results["rows"].append(row)
        write_json(out / "results.json", results)
        atomic_write(out / "report.md", report_text(results, options, data_title).encode())
        say(_progress_line(row, options.models))
    results["seconds"] = time.perf_counter() - t0
    write_json(out / "results.json", results)
    atomic_write(out / "report.md", report_text(results, options, data_title).encode())
    return results


def _progress_line(row: dict[str, Any], models: tuple[str, ...]) -> str:
    parts = [f"N={row['given']}: ItemPop R@10 {row['itempop']['full']['hr']:.4f}"]
    for m in models:
        f, tr = row[f"foldin_{m}"]["full"], row[f"trained_{m}"]["full"]
        parts.append(f"{m} fold-in {f['hr']:.4f} / trained-in {tr['hr']:.4f}")
    return "; ".join(parts) + f" ({row['train_seconds']:.0f}s training)"


def report_text(results: dict[str, Any], options: ColdStartOptions,
                data_title: str | None) -> str:
    """``report.md``: the table of every N, full ranking and sampled protocol."""
    info = results["data"]
    order = "by time (ties at random)" if info["timestamps"] else \
        "at random (the data hold no times)"
    lines = [f"# Cold start on {data_title or info['description']}", "",
             f"{info['held_out_users']:,} users held out whole ({info['held_out_interactions']:,} "
             f"interactions) of {info['users']:,}; {info['items']:,} items. Their "
             f"interactions are ordered {order}"
             f"; the first N are given, the rest are held out. Models: "
             f"{', '.join(options.models)}, factors {options.pipeline.factors}, seed "
             f"{options.pipeline.seed}. Fold-in: {options.fold.steps} Newton steps, "
             f"prior {options.fold.prior}, {options.fold.negatives} negatives per item "
             f"(at least {options.fold.min_negatives} drawn).", "",
             "Full ranking over every item the user did not give: Recall@10 (hits / min(10, "
             "held-out items)) / NDCG@10. The ratio is fold-in over trained-in.", ""]
    header = ["N", "ItemPop"]
    for m in options.models:
        header += [f"{m} fold-in", f"{m} trained-in", "ratio"]
    lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in results["rows"]:
        cells = [str(row["given"]), _pair(row["itempop"]["full"])]
        for m in options.models:
            f, tr = row[f"foldin_{m}"]["full"], row[f"trained_{m}"]["full"]
            cells += [_pair(f), _pair(tr), f"{_ratio(f['hr'], tr['hr'])} / "
                      f"{_ratio(f['ndcg'], tr['ndcg'])}"]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "Sampled protocol (each held-out item among 99 items the user never "
              "touched): HR@10 / NDCG@10.", ""]
    header = ["N", "ItemPop"] + [f"{m} {w}" for m in options.models
                                 for w in ("fold-in", "trained-in")]
    lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in results["rows"]:
        cells = [str(row["given"]), _pair(row["itempop"]["sampled"])]
        for m in options.models:
            cells += [_pair(row[f"foldin_{m}"]["sampled"]), _pair(row[f"trained_{m}"]["sampled"])]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "Fold-in time per user (batched, 1 thread): " + ", ".join(
        f"N={r['given']}: " + ", ".join(f"{m} {r[f'foldin_{m}']['ms_per_user']:.2f} ms"
                                         for m in options.models) for r in results["rows"]),
              f"Training: base {results['base_seconds']:.0f}s; trained-in " + ", ".join(
                  f"N={r['given']} {r['train_seconds']:.0f}s" for r in results["rows"]), ""]
    return "\n".join(lines)


def _pair(m: dict[str, Any]) -> str:
    return f"{m['hr']:.4f} / {m['ndcg']:.4f}"


def _ratio(a: float, b: float) -> str:
    return f"{a / b:.2f}" if b > 0 else "-"
