"""The text of ``report.md``: setup, how choices were made, results, and plain conclusions."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from ncf.experiments.cells import Cell
from ncf.experiments.names import LABELS, NCF_MODELS
from ncf.experiments.presets import ExperimentOptions, Preset
from ncf.experiments.tables import (
    Row,
    order_changes,
    pm,
    rank_order,
    setting_text,
    sweep_lines,
)

_COLUMNS = (("val_hr", "val HR@10"), ("test_hr", "test HR@10"), ("val_ndcg", "val NDCG@10"),
            ("test_ndcg", "test NDCG@10"), ("val_full_hr", "val HR@10 full"),
            ("test_full_hr", "test HR@10 full"), ("test_full_ndcg", "test NDCG@10 full"))


def _table(header: Sequence[str], lines: Sequence[Sequence[str]]) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(line) + " |" for line in lines]
    return out + [""]


def results_section(rows: Sequence[Row]) -> list[str]:
    """The main table: every model and setting, validation numbers beside test numbers."""
    keys = list(rows[0].setting) if rows else []
    header = ["model", *keys, *(t for _, t in _COLUMNS), "kept epoch / chosen"]
    lines = [[r.label, *(str(r.setting[k]) for k in keys),
              *(pm(r.mean(c), r.std(c)) for c, _ in _COLUMNS), r.kept()] for r in rows]
    return _table(header, lines)


def pivot_section(rows: Sequence[Row], sweep: str, col: str, title: str) -> list[str]:
    """Models down, the swept setting across (the paper's tables)."""
    lines = sweep_lines(rows, sweep)
    values = sorted({r.setting[sweep] for r in rows})
    out = [f"**{title}** by {sweep}", ""]
    body = []
    for name, line in lines.items():
        by = {r.setting[sweep]: r for r in line}
        body.append([name, *(pm(by[v].mean(col), by[v].std(col)) if v in by else ""
                             for v in values)])
    return out + _table(["model", *(f"{sweep}={v}" for v in values)], body)


def baseline_sentences(rows: Sequence[Row], col: str = "test_hr", metric: str = "HR@10",
                       context: str = "test, sampled protocol") -> list[str]:
    """One plain sentence per setting on the baselines that beat NeuMF (pre-trained)."""
    groups: dict[str, list[Row]] = {}
    for r in rows:
        groups.setdefault(setting_text(r.setting), []).append(r)
    out = []
    for where, group in groups.items():
        neumf = next((r for r in group if r.model == "neumf"), None)
        if neumf is None:
            continue
        base = neumf.mean(col)
        winners = sorted(((r.mean(col) - base, r) for r in group
                          if r.model not in NCF_MODELS and r.mean(col) > base),
                         key=lambda t: -t[0])
        at = f" at {where}" if where else ""
        if not winners:
            out.append(f"- No baseline beats NeuMF on {metric}{at} ({context}).")
            continue
        (d, best), rest = winners[0], winners[1:]
        text = f"- {best.label} beats NeuMF by {d:.3f} {metric} on this data{at} ({context})"
        if rest:
            text += "; so do " + ", ".join(f"{r.label} (+{x:.3f})" for x, r in rest)
        out.append(text + ".")
    return out


def _other_factor_sizes(group: Sequence[Row]) -> str:
    """Baselines whose factor size (tuned or their default) is not the setting's."""
    out = []
    for r in group:
        if r.model in NCF_MODELS:
            continue
        sizes = sorted({int(c["factors"]) for c in (x.get("chosen", {}) for x in r.results)
                        if "factors" in c})
        if sizes and sizes != [r.setting.get("factors")]:
            out.append(f"{r.label} {'/'.join(map(str, sizes))}")
    return ", ".join(out)


def protocols_section(rows: Sequence[Row]) -> list[str]:
    """Rank orders under both protocols, per setting, and whether they differ."""
    groups: dict[str, list[Row]] = {}
    for r in rows:
        groups.setdefault(setting_text(r.setting), []).append(r)
    out: list[str] = []
    for where, group in groups.items():
        sampled, full = rank_order(group, "sampled"), rank_order(group, "full")
        if len(groups) > 1:
            out += [f"### {where}", ""]
        body = []
        for i, r in enumerate(sampled):
            j = full.index(r)
            body.append([str(i + 1), r.label, pm(r.mean("test_hr"), r.std("test_hr")),
                         pm(r.mean("test_ndcg"), r.std("test_ndcg")), str(j + 1),
                         pm(r.mean("test_full_hr"), r.std("test_full_hr")),
                         pm(r.mean("test_full_ndcg"), r.std("test_full_ndcg"))])
        out += _table(["rank (sampled)", "model", "HR@10 sampled", "NDCG@10 sampled",
                       "rank (full)", "HR@10 full", "NDCG@10 full"], body)
        sizes = _other_factor_sizes(group)
        if sizes:
            out += [f"Factor sizes that differ from {where}: {sizes}.", ""]
        out.append("Rank order under the sampled protocol (test HR@10, then NDCG@10): "
                   + " > ".join(r.label for r in sampled) + ".")
        out.append("")
        out.append("Rank order under full ranking (test HR@10, then NDCG@10): "
                   + " > ".join(r.label for r in full) + ".")
        out.append("")
        swapped, tau = order_changes(sampled, full)
        if not swapped:
            out.append("The two protocols rank the models in the same order.")
        else:
            out.append(f"**The order changes** between the protocols: {len(swapped)} pair(s) "
                       f"swap places (Kendall's tau {tau:.2f}): "
                       + "; ".join(f"{a} is above {b} under the sampled protocol but below it "
                                   "under full ranking" for a, b in swapped[:8])
                       + ("; ..." if len(swapped) > 8 else "") + ".")
            if sampled[0] is not full[0]:
                out.append(f"The best model is {sampled[0].label} under the sampled protocol "
                           f"and {full[0].label} under full ranking.")
        out.append("")
    return out


def selection_section(options: ExperimentOptions, models: Sequence[str],
                      cells: Sequence[Cell]) -> list[str]:
    """How every hyper-parameter was chosen (on validation, never on test)."""
    out = ["## How choices were made", "",
           "Every choice is made on the validation split (each user's held-out validation "
           "item with its own 99 candidates), never on test; test numbers are computed once, "
           "for the chosen configuration, and shown beside the validation numbers.", ""]
    if any(m in NCF_MODELS for m in models):
        out.append(f"- NCF models (GMF and MLP with Adam; NeuMF fine-tuned with SGD from them, "
                   f"or with Adam from scratch): at most {options.epochs} epochs per stage; the "
                   "epoch with the best validation HR@10 is kept.")
    for m in models:
        if m in NCF_MODELS:
            continue
        mine = [c.config for c in cells if c.model == m]
        grids = {json.dumps(c["grid"], sort_keys=True) for c in mine}
        fixed = sorted({k for c in mine for k in c["fixed"]})
        text = f"- {LABELS[m]}: "
        if fixed:
            text += ", ".join(f"{k} = the setting's {k}" for k in fixed) + "; "
        tuned = [_grid_text(json.loads(g)) for g in sorted(grids)]
        tuned = [t for t in tuned if t]
        out.append(text + (f"grid {' / '.join(tuned)}, chosen by validation HR@10."
                           if tuned else "nothing to tune."))
    out += ["", "Other hyper-parameters of the baselines (e.g. the epochs of BPR and MF) keep "
            "their defaults; none was chosen by looking at test.",
            "± is the standard deviation over seeds; models without a seed (ItemPop, ItemKNN, "
            "EASE^R) are computed once and shown without a spread.", ""]
    return out


def _grid_text(grid: Mapping[str, Sequence[Any]]) -> str:
    return "; ".join(f"{k} in {{{', '.join(f'{x:g}' for x in v)}}}" for k, v in grid.items()
                     if v)


def write_report(
    preset: Preset, options: ExperimentOptions, data_title: str, data_lines: Sequence[str],
    models: Sequence[str], cells: Sequence[Cell], rows: Sequence[Row], files: Mapping[str, str],
    timing: Mapping[str, Any],
) -> str:
    """The whole ``report.md``."""
    seeds = ", ".join(str(s) for s in options.seeds)
    out = [f"# `{preset.name}` on {data_title}", "", preset.title + ".", ""]
    out += list(data_lines)
    out += [f"- Models: {', '.join(LABELS[m] for m in models)}.",
            f"- Seeds: {seeds}. NCF epochs: at most {options.epochs} per stage (the full "
            f"pipeline's default is 20), batch {options.batch_size}, Adam lr {options.lr:g}, "
            + (f"dropout {options.dropout:g} on the MLP's input (MLP and NeuMF; the paper's "
               "model has none)." if options.dropout else
               "no dropout (the paper's MLP).")
            + (" **Quick smoke run**: not for conclusions." if options.quick else ""),
            f"- Cells: {timing['cells']} ({timing['computed']} computed in this run, "
            f"{timing['reused']} reused); the exact configuration of every cell is in "
            "`config.json` and in its result file under `cells/`.",
            f"- Wall time: {timing['wall']:.1f}s for this run; {timing['cell_seconds']:.1f}s "
            "summed over all cells (including earlier runs).", ""]
    out += selection_section(options, models, cells)
    if any(r.model == "neumf" for r in rows) and any(r.model not in NCF_MODELS for r in rows):
        out += ["## NeuMF against the baselines", ""]
        out += baseline_sentences(rows)
        if preset.name == "protocols":
            out += baseline_sentences(rows, "test_full_hr", context="test, full ranking")
        out.append("")
    if preset.name == "protocols":
        out += ["## Sampled protocol against full ranking", "",
                "Under the sampled protocol each test item is ranked among 99 sampled items; "
                "under full ranking among every item the user has not interacted with "
                "(HR@10 is then Recall@10). Sampled metrics can reorder models (Krichene and "
                "Rendle, KDD 2020). Hyper-parameters are chosen on validation HR@10 under the "
                "sampled protocol for both columns.", ""]
        out += protocols_section(rows)
    if preset.sweep is not None:
        out += [f"## Test metrics by {preset.sweep}", ""]
        out += pivot_section(rows, preset.sweep, "test_hr", "Test HR@10")
        out += pivot_section(rows, preset.sweep, "test_ndcg", "Test NDCG@10")
        out += pivot_section(rows, preset.sweep, "val_hr", "Validation HR@10")
    if preset.name == "curves":
        out += ["## Curves", "",
                "Training log loss and validation HR@10 / NDCG@10 after every epoch (mean over "
                "seeds, spread shaded). Test metrics per epoch are not recorded: the test "
                "split is scored only for the kept epoch.", ""]
    out += ["## All results", ""]
    out += results_section(rows)
    if files:
        out += ["## Files", ""]
        out += [f"- `{name}`: {what}" for name, what in files.items()]
        out += [f"![{name}]({name})" for name in files if name.endswith(".png")]
        out.append("")
    return "\n".join(out)
