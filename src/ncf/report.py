"""What a run shows a person: the metrics table, saved runs, and recommendations with titles."""

from __future__ import annotations

import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import numpy as np

from ncf.errors import DataError, NcfError, printable
from ncf.interactions import Interactions
from ncf.recommend import NCFRecommender
from ncf.recommender import save_seen
from ncf.runs import (
    load_catalog,
    read_json,
    remove_checkpoints,
    save_catalog,
    write_history,
    write_json,
)

NAMES = {"gmf": "GMF", "mlp": "MLP", "neumf": "NeuMF"}


def all_interactions(split: Any) -> Interactions:
    """Train, validation and test of a split together (the items a user has seen)."""
    parts = [p for p in (split.validation, split.test) if p is not None]
    return split.train.concat(*parts).with_arrays(ratings=None, timestamps=None)


def start_run(run_dir: Path, config: Any, data: Any, seen: Interactions,
              extra: Mapping[str, Any] | None = None) -> None:
    """Write a run's configuration, catalog and seen items (once for all its models) before
    it trains."""
    save_seen(run_dir / "seen.npz", seen.tocsr())
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
    from ncf.plots import plot_curves  # matplotlib only where a picture is drawn

    name = result.name
    NCFRecommender.from_trained(result.model, seen).save(run_dir / "models" / f"{name}.npz",
                                                         include_seen=False)
    records = result.history.as_dicts()
    write_history(run_dir / "history" / f"{name}.csv", records)
    plot_curves(records, run_dir / "plots" / f"{name}.png", NAMES[name],
                result.history.best_epoch)


def finish_run(run_dir: Path, results: Mapping[str, Any]) -> None:
    """Write what needs every stage: the comparison picture and ``metrics.json``."""
    from ncf.plots import plot_comparison

    plot_comparison({NAMES[name]: res.history.as_dicts() for name, res in results.items()},
                    run_dir / "plots" / "comparison.png")
    write_json(run_dir / "metrics.json", {name: res.metrics for name, res in results.items()})
    remove_checkpoints(run_dir)  # the run is complete: nothing left to resume


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


def run_models(run_dir: Path) -> list[str]:
    """The models a run directory holds, in pipeline order."""
    return [n for n in NAMES if (Path(run_dir) / "models" / f"{n}.npz").is_file()]


def load_model(run_dir: Path, model: str = "neumf") -> NCFRecommender:
    """A trained model of a run directory."""
    if model not in NAMES:
        raise NcfError(f"unknown model {model!r} (choose {', '.join(NAMES)})")
    path = Path(run_dir) / "models" / f"{model}.npz"
    if not path.exists():
        have = run_models(Path(run_dir))
        raise NcfError(f"{path}: no such model in this run (have: {', '.join(have) or 'none'})")
    seen = Path(run_dir) / "seen.npz"  # older runs keep the seen items in each model file
    rec = NCFRecommender.load(path, seen=seen if seen.exists() else None)  # DataError if broken
    if not isinstance(rec, NCFRecommender):
        raise DataError("not an NCF model", path=path)
    return rec


def recommend_rows(run_dir: Path, user: Any, k: int = 10, model: str = "neumf",
                   filter_seen: bool = True) -> list[dict[str, Any]]:
    """Top-``k`` items of a raw user id: rank, raw item id, title (when known), score."""
    rec = load_model(Path(run_dir), model)
    dense = rec.user_of(user)
    ids, scores = rec.recommend(np.array([dense]), k=k, filter_seen=filter_seen)
    catalog = load_catalog(Path(run_dir) / "catalog.npz")
    if catalog is not None and rec.item_raw is not None and (
            (catalog["item_raw"].dtype.kind == "U") != (rec.item_raw.dtype.kind == "U")):
        raise DataError("its item ids are not those of the model (the file was edited?)",
                        path=Path(run_dir) / "catalog.npz")
    rows = []
    kept = np.isfinite(scores[0])  # excluded items only fill rows past the unseen ones
    for rank, (i, s) in enumerate(zip(ids[0][kept], scores[0][kept]), start=1):
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
    user = printable(user)
    out = [f"top-{k} for user {user} ({rec_name}; items already rated excluded)"
           if filter_seen else f"top-{k} for user {user} ({rec_name})"]
    if len(rows) < k:
        out[0] += f": only {len(rows)} items left to recommend"
    for r in rows:
        title = r.get("title")
        label = f"{title} ({r['year']})" if title and r.get("year") else (title or "")
        item = printable(r["item"])
        out.append(f"{r['rank']:3d}. item {item:<8} {r['score']:.3f}  {printable(label)}".rstrip())
    return out


def evaluate_run(run_dir: Path, data: str | None = None, fmt: str | None = None,
                 full_users: int | None | Literal["run"] = "run") -> dict[str, Any]:
    """Re-score every model of a run: on its own split, or on another data path.

    Full ranking runs on ``full_users`` users drawn with the run's seed (``"run"``: as many
    as the run used, so that its own split gives back the numbers of its ``metrics.json``;
    ``None``: every user).
    """
    from ncf.pipeline import test_metrics
    from ncf.sources import resolve_training_data

    cfg = read_json(Path(run_dir) / "config.json")
    prov = cfg.get("data") if isinstance(cfg, dict) else None
    if not isinstance(prov, dict):
        raise NcfError(f"{Path(run_dir) / 'config.json'}: not the configuration of a run "
                       "(no 'data' section)")
    for key, kinds in (("path", (str,)), ("format", (str,)), ("ratings", (str, int)),
                       ("seed", (int,))):
        value = prov.get(key)
        if value is not None and (not isinstance(value, kinds) or isinstance(value, bool)):
            raise DataError(f"data.{key} is {value!r} (the file was edited?)",
                            path=Path(run_dir) / "config.json")
    pipeline = cfg.get("pipeline")
    pipeline = pipeline if isinstance(pipeline, dict) else {}
    run_seed, run_users = pipeline.get("seed", 0), pipeline.get("full_ranking_users", 10_000)
    for key, value in (("seed", run_seed), ("full_ranking_users", run_users)):
        if value is not None and (not isinstance(value, int) or isinstance(value, bool)
                                  or value < 0) or (key == "seed" and value is None):
            raise DataError(f"pipeline.{key} is {value!r} (the file was edited?)",
                            path=Path(run_dir) / "config.json")
    users: int | None = run_users if full_users == "run" else full_users  # type: ignore[assignment]
    names = run_models(Path(run_dir))
    if not names:
        raise NcfError(f"{run_dir}: no trained model in this run (models/ is empty)")
    source = data or prov.get("path")
    if source is None:
        raise NcfError(f"{run_dir}: the run records no data path; pass --data")
    own = data is None or str(Path(data).resolve()) == str(prov.get("path"))
    # the run's own data are read as they were; other data are detected afresh
    d = resolve_training_data(data=source, fmt=fmt or (prov.get("format") if own else None),
                              ratings=prov.get("ratings") if own else None,
                              seed=prov.get("seed") or 0)
    train = d.split.train
    out: dict[str, Any] = {}
    for name in names:
        rec = load_model(Path(run_dir), name)
        if (rec.n_users, rec.n_items) != (train.n_users, train.n_items):
            raise NcfError(f"{source}: {train.n_users} users x {train.n_items} "
                           f"items, but the model has {rec.n_users} x {rec.n_items}")
        for what, mine, theirs in (("user", rec.user_raw, train.user_raw),
                                   ("item", rec.item_raw, train.item_raw)):
            if mine is not None and not np.array_equal(np.asarray(mine), np.asarray(theirs)):
                raise NcfError(f"{source}: its {what} ids differ from those the model was "
                               "trained on (other data of the same size?)")
        out[name] = test_metrics(rec.model, d.split, full_users=users, seed=run_seed)
    return out



class TensorBoardLog:
    """A per-epoch callback ``(stage, record)`` that writes TensorBoard scalars: the training
    loss, validation HR@10 / NDCG@10 and the learning rate, tagged ``STAGE/...`` by epoch.

    Args:
        folder: the log folder (``tensorboard --logdir FOLDER`` shows it).

    Raises:
        NcfError: the ``tensorboard`` package is missing (one line naming the extra).
    """

    def __init__(self, folder: str | Path) -> None:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise NcfError("--tensorboard needs the tensorboard package: pip install -c "
                           "constraints.txt '.[tune]'") from None
        self.writer = SummaryWriter(log_dir=str(folder))

    def __call__(self, stage: str, record: Any) -> None:
        w, step = self.writer, record.epoch
        w.add_scalar(f"{stage}/loss", record.loss, step)
        if record.hr is not None:
            w.add_scalar(f"{stage}/validation_hr10", record.hr, step)
            w.add_scalar(f"{stage}/validation_ndcg10", record.ndcg, step)
        w.add_scalar(f"{stage}/lr", record.lr, step)
        w.flush()

    def close(self) -> None:
        self.writer.close()
