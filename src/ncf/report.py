"""What a run shows a person: the metrics table, saved runs, and recommendations with titles."""

from __future__ import annotations

import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from ncf.errors import NcfError
from ncf.interactions import Interactions
from ncf.plots import plot_comparison, plot_curves
from ncf.recommend import NCFRecommender
from ncf.runs import (
    load_catalog,
    read_json,
    save_catalog,
    write_history,
    write_json,
)

NAMES = {"gmf": "GMF", "mlp": "MLP", "neumf": "NeuMF"}


def all_interactions(split: Any) -> Interactions:
    """Train, validation and test of a split together (the items a user has seen)."""
    parts = [p for p in (split.validation, split.test) if p is not None]
    return split.train.concat(*parts).with_arrays(ratings=None, timestamps=None)


def start_run(run_dir: Path, config: Any, data: Any,
              extra: Mapping[str, Any] | None = None) -> None:
    """Write a run's configuration and catalog before it trains."""
    if data.catalog is not None:
        c = data.catalog
        save_catalog(run_dir / "catalog.npz", c.item_raw, c.titles, c.years)
    write_json(run_dir / "config.json", {
        "pipeline": config, "data": data.provenance, **dict(extra or {}),
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    })


def save_stage(run_dir: Path, result: Any, seen: Interactions) -> None:
    """Write one finished stage: its weights, its history and its curves.

    Called as each stage ends, so a run stopped in a later stage keeps the finished ones
    (``ncf evaluate`` and ``ncf recommend --model`` work on them).
    """
    name = result.name
    NCFRecommender.from_trained(result.model, seen).save(run_dir / "models" / f"{name}.npz")
    records = result.history.as_dicts()
    write_history(run_dir / "history" / f"{name}.csv", records)
    plot_curves(records, run_dir / "plots" / f"{name}.png", NAMES[name],
                result.history.best_epoch)


def finish_run(run_dir: Path, results: Mapping[str, Any]) -> None:
    """Write what needs every stage: the comparison picture and ``metrics.json``."""
    plot_comparison({NAMES[name]: res.history.as_dicts() for name, res in results.items()},
                    run_dir / "plots" / "comparison.png")
    write_json(run_dir / "metrics.json", {name: res.metrics for name, res in results.items()})


def format_table(metrics: Mapping[str, Mapping[str, Any]]) -> str:
    """The closing table: each model's test HR@10 / NDCG@10, sampled and full ranking."""
    head = (f"{'model':8s} {'HR@10':>8s} {'NDCG@10':>8s}   {'full HR@10':>10s} "
            f"{'full NDCG@10':>12s} {'full MRR':>9s}   {'best epoch':>10s}")
    lines = ["test metrics (sampled: 1 test item + 99 negatives; full: all unseen items)",
             head, "-" * len(head)]
    for name, m in metrics.items():
        s, f = m["sampled"], m["full"]
        best = m.get("best_epoch")
        kept = "-" if best is None else ("start" if best == 0 else str(best))
        lines.append(f"{NAMES.get(name, name):8s} {s['hr']:8.4f} {s['ndcg']:8.4f}   "
                     f"{f['hr']:10.4f} {f['ndcg']:12.4f} {f['mrr']:9.4f}   "
                     f"{kept:>10}")
    notes = [(name, m["full"]) for name, m in metrics.items()
             if m["full"].get("users_sampled_from")]
    if notes:
        name, f = notes[0]
        lines.append(f"full ranking on a seeded sample of {f['n_users']:,} of "
                     f"{f['users_sampled_from']:,} users ({f['seconds']:.1f}s per model; all users "
                     f"would take about {f['estimated_seconds_all_users']:.0f}s; "
                     "--full-ranking-users 0 for all)")
    refit = {name: m["refit"]["sampled_before"]["hr"] for name, m in metrics.items()
             if m.get("refit")}
    if refit:
        before = ", ".join(f"{NAMES.get(n, n)} {hr:.4f}" for n, hr in refit.items())
        lines.append("models refit on train + validation for their best epochs; sampled HR@10 "
                     f"before the refit: {before}")
    return "\n".join(lines)


def print_table(results: Mapping[str, Any]) -> None:
    print(format_table({name: res.metrics for name, res in results.items()}))


def load_model(run_dir: Path, model: str = "neumf") -> NCFRecommender:
    """A trained model of a run directory."""
    path = Path(run_dir) / "models" / f"{model}.npz"
    if not path.exists():
        have = sorted(p.stem for p in (Path(run_dir) / "models").glob("*.npz"))
        raise NcfError(f"{path}: no such model in this run (have: {', '.join(have) or 'none'})")
    rec = NCFRecommender.load(path)
    if not isinstance(rec, NCFRecommender):
        raise NcfError(f"{path}: not an NCF model")
    return rec


def recommend_rows(run_dir: Path, user: Any, k: int = 10, model: str = "neumf",
                   filter_seen: bool = True) -> list[dict[str, Any]]:
    """Top-``k`` items of a raw user id: rank, raw item id, title (when known), score."""
    rec = load_model(Path(run_dir), model)
    dense = rec.user_of(user)
    ids, scores = rec.recommend(np.array([dense]), k=k, filter_seen=filter_seen)
    catalog = load_catalog(Path(run_dir) / "catalog.npz")
    rows = []
    for rank, (i, s) in enumerate(zip(ids[0], scores[0]), start=1):
        raw = rec.item_raw[i] if rec.item_raw is not None else i
        row: dict[str, Any] = {"rank": rank, "item": raw.item() if hasattr(raw, "item") else raw,
                               "score": float(1.0 / (1.0 + np.exp(-s)))}
        if catalog is not None:
            pos = np.searchsorted(catalog["item_raw"], raw)
            if pos < len(catalog["item_raw"]) and catalog["item_raw"][pos] == raw:
                row["title"] = str(catalog["titles"][pos])
                year = int(catalog["years"][pos])
                row["year"] = year if year > 0 else None
        rows.append(row)
    return rows


def recommend_lines(run_dir: Path, user: Any, k: int = 10, model: str = "neumf",
                    filter_seen: bool = True) -> list[str]:
    """:func:`recommend_rows` as lines for a terminal."""
    rows = recommend_rows(run_dir, user, k, model, filter_seen)
    rec_name = NAMES.get(model, model)
    out = [f"top-{k} for user {user} ({rec_name}; items already rated excluded)"
           if filter_seen else f"top-{k} for user {user} ({rec_name})"]
    for r in rows:
        title = r.get("title")
        label = f"{title} ({r['year']})" if title and r.get("year") else (title or "")
        out.append(f"{r['rank']:3d}. item {r['item']:<8} {r['score']:.3f}  {label}".rstrip())
    return out


def evaluate_run(run_dir: Path, data: str | None = None, fmt: str | None = None,
                 full_users: int | None = 10_000) -> dict[str, Any]:
    """Re-score every model of a run: on its own split, or on another data path."""
    from ncf.pipeline import test_metrics
    from ncf.sources import resolve_training_data

    cfg = read_json(Path(run_dir) / "config.json")
    source = data or cfg.get("data", {}).get("path")
    if source is None:
        raise NcfError(f"{run_dir}: the run records no data path; pass --data")
    prov = cfg.get("data", {})
    d = resolve_training_data(data=source, fmt=fmt or prov.get("format"),
                              ratings=prov.get("ratings"), seed=prov.get("seed", 0))
    out: dict[str, Any] = {}
    for path in sorted((Path(run_dir) / "models").glob("*.npz")):
        rec = load_model(Path(run_dir), path.stem)
        if (rec.n_users, rec.n_items) != (d.split.train.n_users, d.split.train.n_items):
            raise NcfError(f"{source}: {d.split.train.n_users} users x {d.split.train.n_items} "
                           f"items, but the model has {rec.n_users} x {rec.n_items}")
        out[path.stem] = test_metrics(rec.model, d.split, full_users=full_users)
    return out

