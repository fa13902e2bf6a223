"""Training and validation curves as PNG pictures (matplotlib, no display needed)."""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def _series(records: Sequence[Mapping[str, Any]], key: str) -> tuple[list[int], list[float]]:
    pts = [(r["epoch"], r[key]) for r in records if r.get(key) is not None]
    return [p[0] for p in pts], [float(p[1]) for p in pts]


def plot_curves(
    records: Sequence[Mapping[str, Any]],
    path: str | Path,
    title: str,
    best_epoch: int | None = None,
) -> Path:
    """One model's curves: training loss, and validation HR@10 / NDCG@10, by epoch."""
    fig, (ax_loss, ax_metric) = plt.subplots(1, 2, figsize=(10, 4))
    ax_loss.plot(*_series(records, "loss"), marker="o", ms=3, color="tab:red")
    ax_loss.set(xlabel="epoch", ylabel="training log loss", title=f"{title}: training loss")
    for key, color in (("hr", "tab:blue"), ("ndcg", "tab:green")):
        x, y = _series(records, key)
        if x:
            ax_metric.plot(
                x, y, marker="o", ms=3, color=color, label=f"validation {key.upper()}@10"
            )
    if best_epoch is not None:
        ax_metric.axvline(
            best_epoch, color="grey", ls="--", lw=1, label=f"kept: epoch {best_epoch}"
        )
    ax_metric.set(xlabel="epoch", ylabel="metric", title=f"{title}: validation")
    ax_metric.legend(loc="lower right", fontsize=8)
    for ax in (ax_loss, ax_metric):
        ax.grid(alpha=0.3)
    fig.tight_layout()
    return _save(fig, path)


def plot_comparison(histories: Mapping[str, Sequence[Mapping[str, Any]]], path: str | Path) -> Path:
    """All models side by side: validation HR@10, NDCG@10 and training loss by epoch."""
    fig, axes = plt.subplots(1, 3, figsize=(14, 4))
    for name, records in histories.items():
        for ax, key in zip(axes, ("hr", "ndcg", "loss")):
            x, y = _series(records, key)
            if x:
                ax.plot(x, y, marker="o", ms=3, label=name)
    for ax, label in zip(axes, ("validation HR@10", "validation NDCG@10", "training log loss")):
        ax.set(xlabel="epoch", ylabel=label, title=label)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    return _save(fig, path)


def _save(fig: Any, path: str | Path) -> Path:
    from ncf.runs import atomic_write

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    return atomic_write(path, buf.getvalue())


def plot_search(rows: Sequence[Mapping[str, Any]], path: str | Path, title: str) -> Path:
    """A search by trial: each trial's best validation HR@10 (pruned ones marked), and the
    best complete trial so far."""
    fig, ax = plt.subplots(figsize=(8, 4))
    done = [(r["number"], r["validation_hr"]) for r in rows
            if r["state"] == "COMPLETE" and r["validation_hr"] is not None]
    pruned = [(r["number"], r["validation_hr"]) for r in rows
              if r["state"] == "PRUNED" and r["validation_hr"] is not None]
    if done:
        ax.scatter([d[0] for d in done], [d[1] for d in done], color="tab:blue", s=18,
                   label="complete")
        best, line = float("-inf"), []
        for n, v in sorted(done):
            best = max(best, float(v))
            line.append((n, best))
        ax.step(*zip(*line), where="post", color="tab:green", label="best so far")
    if pruned:
        ax.scatter([d[0] for d in pruned], [d[1] for d in pruned], color="tab:red",
                   marker="x", s=18, label="pruned (best before it stopped)")
    ax.set(xlabel="trial", ylabel="validation HR@10", title=f"search: {title}")
    ax.grid(alpha=0.3)
    if done or pruned:
        ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    return _save(fig, path)
