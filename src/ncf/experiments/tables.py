"""Aggregation of cell results over seeds, and the CSV tables and PNG plots of a report."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from ncf.experiments.cells import Cell  # noqa: E402
from ncf.experiments.names import LABELS, NCF_MODELS  # noqa: E402
from ncf.runs import atomic_write  # noqa: E402

#: column -> (held-out part, protocol, metric) of a cell result
METRICS: dict[str, tuple[str, str, str]] = {
    "val_hr": ("validation", "sampled", "hr"), "test_hr": ("test", "sampled", "hr"),
    "val_ndcg": ("validation", "sampled", "ndcg"), "test_ndcg": ("test", "sampled", "ndcg"),
    "val_full_hr": ("validation", "full", "hr"), "test_full_hr": ("test", "full", "hr"),
    "val_full_ndcg": ("validation", "full", "ndcg"),
    "test_full_ndcg": ("test", "full", "ndcg"),
}


@dataclass
class Row:
    """One (model, setting): its cell results over seeds (a deterministic model has one)."""

    model: str
    setting: dict[str, int]
    results: list[dict[str, Any]] = field(default_factory=list)
    seconds: list[float] = field(default_factory=list)

    @property
    def label(self) -> str:
        return LABELS.get(self.model, self.model)

    def values(self, col: str) -> np.ndarray:
        part, proto, metric = METRICS[col]
        return np.array([r[part][proto][metric] for r in self.results], dtype=float)

    def mean(self, col: str) -> float:
        return float(self.values(col).mean())

    def std(self, col: str) -> float | None:
        v = self.values(col)
        return float(v.std(ddof=1)) if len(v) > 1 else None

    def kept(self) -> str:
        """Kept epochs (NCF) or chosen hyper-parameters (baselines), over seeds."""
        if self.model in NCF_MODELS:
            return "epoch " + ", ".join(str(r.get("best_epoch")) for r in self.results)
        chosen = {json.dumps(r.get("chosen", {}), sort_keys=True) for r in self.results}
        return "; ".join(sorted(_params(json.loads(c)) for c in chosen)) or "-"


def _params(p: Mapping[str, Any]) -> str:
    return ", ".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}"
                     for k, v in sorted(p.items())) or "none"


def setting_text(setting: Mapping[str, int]) -> str:
    return ", ".join(f"{k}={v}" for k, v in setting.items())


def aggregate(cells: Sequence[Cell], stored: Mapping[str, Mapping[str, Any]]) -> list[Row]:
    """Rows in the order of the cells; cells sharing a configuration count once."""
    rows: dict[tuple[str, str], Row] = {}
    seen: set[tuple[str, str, str]] = set()
    for c in cells:
        rk = (c.model, json.dumps(c.setting, sort_keys=True))
        row = rows.setdefault(rk, Row(c.model, dict(c.setting)))
        if (rk[0], rk[1], c.key) in seen:
            continue
        seen.add((rk[0], rk[1], c.key))
        row.results.append(stored[c.key]["result"])
        row.seconds.append(float(stored[c.key]["seconds"]))
    return list(rows.values())


def pm(mean: float, std: float | None, digits: int = 4) -> str:
    """``mean ± std`` (only the mean without a spread)."""
    return f"{mean:.{digits}f}" if std is None else f"{mean:.{digits}f} ± {std:.{digits}f}"


# CSV --------------------------------------------------------------------------------------

def write_csv(path: Path, rows: Sequence[Mapping[str, Any]]) -> Path:
    """Rows of dictionaries as a CSV file (header from the union of keys), atomically."""
    fields: list[str] = []
    for r in rows:
        fields += [k for k in r if k not in fields]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=fields, lineterminator="\n")
    writer.writeheader()
    for r in rows:
        writer.writerow({k: "" if v is None else v for k, v in r.items()})
    return atomic_write(path, buf.getvalue().encode())


def results_table(rows: Sequence[Row]) -> list[dict[str, Any]]:
    """Every row with mean and spread of every metric, validation beside test."""
    out = []
    for r in rows:
        d: dict[str, Any] = {"model": r.model, "label": r.label, **r.setting,
                             "n": len(r.results)}
        for col in METRICS:
            d[f"{col}_mean"], d[f"{col}_std"] = r.mean(col), r.std(col)
        d["kept"] = r.kept()
        d["seconds_mean"] = float(np.mean(r.seconds))
        out.append(d)
    return out


def _others(setting: Mapping[str, int], sweep: str) -> dict[str, int]:
    return {k: v for k, v in setting.items() if k != sweep}


def sweep_lines(rows: Sequence[Row], sweep: str) -> dict[str, list[Row]]:
    """Rows grouped into one line per model (and other settings), ordered along ``sweep``."""
    several = len({json.dumps(_others(r.setting, sweep), sort_keys=True) for r in rows}) > 1
    lines: dict[str, list[Row]] = {}
    for r in rows:
        name = r.label + (f" ({setting_text(_others(r.setting, sweep))})" if several else "")
        lines.setdefault(name, []).append(r)
    for v in lines.values():
        v.sort(key=lambda r: r.setting[sweep])
    return lines


def pivot_table(rows: Sequence[Row], sweep: str, col: str) -> list[dict[str, Any]]:
    """One line per model, a mean and a spread column per value of ``sweep``."""
    out = []
    for name, line in sweep_lines(rows, sweep).items():
        d: dict[str, Any] = {"model": name}
        for r in line:
            d[f"{sweep}={r.setting[sweep]} mean"] = r.mean(col)
            d[f"{sweep}={r.setting[sweep]} std"] = r.std(col)
        out.append(d)
    return out


def curves_table(rows: Sequence[Row]) -> list[dict[str, Any]]:
    """Per-epoch training loss and validation HR/NDCG@10, mean and spread over seeds."""
    out = []
    for r in rows:
        histories = [h for h in (res.get("history") for res in r.results) if h]
        if not histories:
            continue
        for e in range(max(len(h) for h in histories)):
            d: dict[str, Any] = {"model": r.model, "label": r.label, **r.setting, "epoch": e + 1}
            recs = [h[e] for h in histories if len(h) > e]
            d["n"] = len(recs)
            for key, name in (("loss", "loss"), ("hr", "val_hr"), ("ndcg", "val_ndcg")):
                v = np.array([x[key] for x in recs if x[key] is not None], dtype=float)
                d[f"{name}_mean"] = float(v.mean()) if len(v) else None
                d[f"{name}_std"] = float(v.std(ddof=1)) if len(v) > 1 else None
            out.append(d)
    return out


# rank orders ------------------------------------------------------------------------------

def rank_order(rows: Iterable[Row], protocol: str) -> list[Row]:
    """Models best first by test HR@10 (then NDCG@10) under ``"sampled"`` or ``"full"``."""
    hr, ndcg = ("test_hr", "test_ndcg") if protocol == "sampled" else (
        "test_full_hr", "test_full_ndcg")
    return sorted(rows, key=lambda r: (-r.mean(hr), -r.mean(ndcg), r.label))


def order_changes(sampled: Sequence[Row], full: Sequence[Row]) -> tuple[list[tuple[str, str]],
                                                                          float | None]:
    """Pairs ranked one way under sampled and the other under full, and Kendall's tau."""
    pos = {r.label: i for i, r in enumerate(full)}
    swapped, n = [], 0
    for i, a in enumerate(sampled):
        for b in sampled[i + 1:]:
            n += 1
            if pos[a.label] > pos[b.label]:
                swapped.append((a.label, b.label))
    tau = None if n == 0 else 1.0 - 2.0 * len(swapped) / n
    return swapped, tau


# plots ------------------------------------------------------------------------------------

def _save(fig: Any, path: Path) -> Path:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    return atomic_write(path, buf.getvalue())


def plot_sweep(rows: Sequence[Row], sweep: str, path: Path) -> Path:
    """Test HR@10 and NDCG@10 against the swept setting, one line per model (spread as bars)."""
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    for name, line in sweep_lines(rows, sweep).items():
        x = [r.setting[sweep] for r in line]
        style = "-" if line[0].model in NCF_MODELS else "--"
        for ax, col in zip(axes, ("test_hr", "test_ndcg"), strict=True):
            y = [r.mean(col) for r in line]
            err = [r.std(col) or 0.0 for r in line]
            ax.errorbar(x, y, yerr=err, marker="o", ms=4, ls=style, capsize=3, label=name)
    for ax, title in zip(axes, ("HR@10", "NDCG@10"), strict=True):
        ax.set(xlabel=sweep, ylabel=f"test {title}", title=f"test {title} against {sweep}")
        if sweep == "factors":
            ax.set_xscale("log", base=2)
        xs = sorted({r.setting[sweep] for r in rows})
        ax.set_xticks(xs, [str(v) for v in xs])
        ax.grid(alpha=0.3)
    axes[1].legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
    fig.tight_layout()
    return _save(fig, path)


def plot_curves(table: Sequence[Mapping[str, Any]], path: Path) -> Path:
    """Training loss and validation HR@10 / NDCG@10 by epoch, mean over seeds, spread shaded."""
    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    lines: dict[str, list[Mapping[str, Any]]] = {}
    for d in table:
        lines.setdefault(f"{d['label']} (factors={d.get('factors')})", []).append(d)
    for name, recs in lines.items():
        for ax, key in zip(axes, ("loss", "val_hr", "val_ndcg"), strict=True):
            pts = [(d["epoch"], d[f"{key}_mean"], d[f"{key}_std"] or 0.0) for d in recs
                   if d[f"{key}_mean"] is not None]
            if not pts:
                continue
            x, y, s = (np.array(v, dtype=float) for v in zip(*pts, strict=True))
            (ln,) = ax.plot(x, y, marker="o", ms=3, label=name)
            ax.fill_between(x, y - s, y + s, color=ln.get_color(), alpha=0.15)
    titles = ("training log loss", "validation HR@10", "validation NDCG@10")
    for ax, title in zip(axes, titles, strict=True):
        ax.set(xlabel="epoch", ylabel=title, title=title)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    return _save(fig, path)


def plot_protocols(rows: Sequence[Row], path: Path) -> Path:
    """Test HR@10 of every model under the sampled protocol and under full ranking."""
    order = rank_order(rows, "sampled")
    fig, axes = plt.subplots(1, 2, figsize=(12, 0.45 * len(order) + 1.8))
    for ax, col, title in zip(axes, ("test_hr", "test_full_hr"),
                              ("sampled protocol (1 + 99 items)", "full ranking"), strict=True):
        y = np.arange(len(order))[::-1]
        ax.barh(y, [r.mean(col) for r in order], xerr=[r.std(col) or 0.0 for r in order],
                color=["tab:blue" if r.model in NCF_MODELS else "tab:grey" for r in order])
        ax.set_yticks(y, [r.label for r in order])
        ax.set(xlabel="test HR@10", title=title)
        ax.grid(alpha=0.3, axis="x")
    fig.tight_layout()
    return _save(fig, path)
