"""Running a preset: compute the missing cells, aggregate, write tables, plots and report."""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from ncf.errors import NcfError
from ncf.experiments.cells import (
    CellStore,
    RunStats,
    compute_cells,
)
from ncf.experiments.markdown import write_report
from ncf.experiments.presets import (
    PRESETS,
    ExperimentOptions,
    Preset,
    build_cells,
    preset_models,
)
from ncf.experiments.tables import (
    aggregate,
    curves_table,
    pivot_table,
    plot_curves,
    plot_protocols,
    plot_sweep,
    rank_order,
    results_table,
    setting_text,
    write_csv,
)
from ncf.outputs import output_lock
from ncf.runs import atomic_write, existing_ancestor, write_json
from ncf.split import split_fingerprint

__all__ = ["PRESETS", "ExperimentOptions", "ExperimentOutcome", "Preset", "check_cells_folder",
           "check_report_folder", "data_name", "run_experiment"]

#: File stems that say nothing about the data set: the folder's name is used instead.
_GENERIC = {"u", "ratings", "data", "train", "combined_data_1", "training_set", "interactions"}


def data_name(path: str | None, dataset: str | None = None) -> str:
    """A short name for report folders: ``ml-100k.train.rating`` -> ``ml-100k``."""
    if dataset:
        name = dataset
    elif path is None:
        name = "synthetic"
    else:
        p = Path(path)
        name = p.name.split(".")[0] or p.resolve().name
        if name.lower() in _GENERIC and p.suffix:
            name = p.resolve().parent.name
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name) or "data"


def _check_folder(path: Path, option: str) -> None:
    """A folder that exists or can be created: one clear line otherwise."""
    if path.exists() and not path.is_dir():
        raise NcfError(f"{option} {path}: exists and is not a folder")
    parent = existing_ancestor(path)
    if not parent.is_dir():
        raise NcfError(f"{option} {path}: {parent} is not a folder")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise NcfError(f"{option} {path}: {parent} is not writable")


def _report_study(out: Path) -> str | None:
    """The study whose report ``out`` holds (its config.json says so), else ``None``."""
    try:
        config = json.loads((out / "config.json").read_text())
    except (OSError, ValueError):
        return None
    study = config.get("experiment") if isinstance(config, dict) else None
    return study if isinstance(study, str) and "cells" in config else None


def check_report_folder(out: str | Path, name: str) -> None:
    """Refuse a report folder that would overwrite something else, before anything is read.

    Accepted: a missing or empty folder, or the report folder of the same study (resumed).
    Anything else (a file, a ``ncf train`` run, another study's report, other files) is
    refused, so that no file of it is replaced or left beside a report it does not belong to.
    """
    out = Path(out)
    _check_folder(out, "--out")
    if not out.is_dir():
        return
    # leftovers of an interrupted atomic write are no reason to refuse the folder
    if not any(not (p.name.startswith(".") and p.name.endswith(".tmp")) for p in out.iterdir()):
        return
    study = _report_study(out)
    if study == name:
        return
    if study is not None:
        raise NcfError(f"--out {out}: holds the report of the {study!r} experiment, not "
                       f"{name!r}; not overwriting it (choose another --out)")
    raise NcfError(f"--out {out}: folder is not empty and holds no report of the {name!r} "
                   "experiment; not overwriting it (choose another --out)")


#: The files of a cells folder: ``MODEL-HASH.json`` (and leftovers of atomic writes).
_CELL_FILE = re.compile(r"[a-z0-9_-]+-[0-9a-f]{16}\.json|\..+\.tmp")


def check_cells_folder(cells_dir: str | Path | None) -> None:
    """Refuse a cells folder that cannot be one (a file, or below a file) or that holds
    anything but cell results (they would be mixed with other files)."""
    if cells_dir is None:
        return
    folder = Path(cells_dir)
    _check_folder(folder, "--cells")
    if folder.is_dir():
        other = sorted(p.name for p in folder.iterdir() if not _CELL_FILE.fullmatch(p.name))
        if other:
            raise NcfError(f"--cells {folder}: holds {other[0]!r}, which is no cell result; "
                           "choose a folder of cell results or a new one")


@dataclass
class ExperimentOutcome:
    """Where the report went and what this run computed."""

    out: Path
    stats: RunStats
    seconds: float


def run_experiment(
    name: str,
    data: Any,
    options: ExperimentOptions,
    out: str | Path,
    cells_dir: str | Path | None = None,
    data_title: str | None = None,
    say: Callable[[str], None] = lambda s: None,
    plots: bool = True,
) -> ExperimentOutcome:
    """Run preset ``name`` on ``data`` (a :class:`~ncf.sources.TrainingData`), write the report.

    Args:
        name: a key of :data:`PRESETS`.
        data: the training data (its ``split`` must hold validation items and candidates).
        options: seeds, epochs, restrictions.
        out: the report folder (created; existing results in it are reused). It must be
            missing, empty or a report folder of the same study.
        cells_dir: where cell results live (default ``out/cells``); share it between presets
            to reuse cells they have in common.
        data_title: the data set's name in the report.
        say: prints progress lines.
        plots: draw the PNG plots (existing ones are left as they are otherwise).

    Raises:
        NcfError: unknown preset or model, bad factors, a split without validation, or an
            ``out`` or ``cells_dir`` that is not a folder or holds something else.
    """
    if name not in PRESETS:
        raise NcfError(f"unknown experiment {name!r} (choose from {', '.join(PRESETS)})")
    check_report_folder(out, name)
    check_cells_folder(cells_dir)
    with output_lock(out, what="experiment report"):  # one ncf process per report folder
        for folder in (Path(out), Path(cells_dir) if cells_dir else Path(out) / "cells"):
            _remove_temporary_files(folder)
        return _run(name, data, options, out, cells_dir, data_title, say, plots)


def _remove_temporary_files(folder: Path) -> None:
    """Files an atomic write killed half-way left (``.NAME.XXXX.tmp``); the lock is ours."""
    for tmp in folder.glob(".*.tmp") if folder.is_dir() else ():
        if tmp.is_file() and not tmp.is_symlink():
            tmp.unlink(missing_ok=True)


def _run(name: str, data: Any, options: ExperimentOptions, out: str | Path,
         cells_dir: str | Path | None, data_title: str | None, say: Callable[[str], None],
         plots: bool) -> ExperimentOutcome:
    preset = PRESETS[name]
    t0 = time.perf_counter()
    split = data.split
    if split.validation is None or split.validation_negatives is None:
        raise NcfError("the split has no validation items with candidates: choices could "
                       "only be made on test")
    fingerprint = split_fingerprint(split)
    cells = build_cells(preset, options, fingerprint, split.train.n_users)
    models = preset_models(preset, options)
    out = Path(out)
    cells_folder = Path(cells_dir) if cells_dir is not None else out / "cells"
    data_info = {"description": getattr(data, "description", ""), "fingerprint": fingerprint,
                 "users": split.train.n_users, "items": split.train.n_items,
                 "train": len(split.train), "validation": len(split.validation),
                 "test": len(split.test), "provenance": getattr(data, "provenance", {})}
    # config.json first: from then on the folder is recognised as this study's report
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "config.json", {
        "experiment": name, "title": preset.title, "options": asdict(options),
        "models": list(models), "data": data_info, "cells_dir": str(cells_folder),
        "cells": [{"model": c.model, "setting": c.setting, "seed": c.seed, "key": c.key,
                   "file": c.filename, "config": c.config} for c in cells],
    })
    store = CellStore(cells_folder)
    n_unique = len({c.key for c in cells})
    say(f"{name}: {len(cells)} cells ({n_unique} distinct configurations), "
        f"{len(models)} models, seeds {', '.join(map(str, options.seeds))}, "
        f"at most {options.epochs} epochs")
    stats = compute_cells(cells, split, store, fingerprint, say=say)
    stored: dict[str, Any] = {}
    for c in cells:
        s = store.load(c)
        if s is None:  # pragma: no cover - compute_cells wrote every missing cell
            raise NcfError(f"cell {c.filename} is missing after the run")
        stored[c.key] = s
    rows = aggregate(cells, stored)
    files = _write_tables(preset, rows, out, plots)
    wall = time.perf_counter() - t0
    computed = len({k for k in stats.computed if k in stored})
    timing = {"cells": n_unique, "computed": computed, "reused": n_unique - computed,
              "wall": wall,
              "cell_seconds": sum(float(stored[k]["seconds"]) for k in stored)}
    title = data_title or data_info["description"] or "the data"
    lines = [f"- Data: {data_info['description']}: {data_info['users']:,} users, "
             f"{data_info['items']:,} items; {data_info['train']:,} train / "
             f"{data_info['validation']:,} validation / {data_info['test']:,} test "
             f"interactions (fingerprint `{fingerprint}`)."]
    text = write_report(preset, options, title, lines, models, cells, rows, files, timing)
    atomic_write(out / "report.md", text.encode())
    say(f"report: {out / 'report.md'}  (total wall time {wall:.1f}s)")
    return ExperimentOutcome(out, stats, wall)


def _write_tables(preset: Preset, rows: list[Any], out: Path, plots: bool) -> dict[str, str]:
    """The CSV tables and PNG plots of a preset; returns ``{file name: what it holds}``."""
    files: dict[str, str] = {}
    write_csv(out / "results.csv", results_table(rows))
    files["results.csv"] = ("every model and setting: mean and standard deviation over seeds "
                            "of validation and test metrics (sampled and full ranking)")
    if preset.sweep is not None:
        for col, stem in (("test_hr", "hr"), ("test_ndcg", "ndcg")):
            path = f"{stem}_by_{preset.sweep}.csv"
            write_csv(out / path, pivot_table(rows, preset.sweep, col))
            files[path] = f"test {stem.upper()}@10 by {preset.sweep} (mean, std)"
        if plots:
            plot_sweep(rows, preset.sweep, out / f"{preset.sweep}.png")
        files[f"{preset.sweep}.png"] = f"test HR@10 and NDCG@10 against {preset.sweep}"
    if preset.name == "curves":
        table = curves_table(rows)
        write_csv(out / "curves.csv", table)
        if plots:
            plot_curves(table, out / "curves.png")
        files["curves.csv"] = "per-epoch training loss and validation HR@10 / NDCG@10"
        files["curves.png"] = "the same, mean over seeds"
    if preset.name == "protocols":
        table = []
        settings = list(dict.fromkeys(json.dumps(r.setting, sort_keys=True) for r in rows))
        for setting in settings:
            group = [r for r in rows if json.dumps(r.setting, sort_keys=True) == setting]
            png = "protocols.png" if len(settings) == 1 else "protocols-" + "-".join(
                f"{k}{v}" for k, v in json.loads(setting).items()) + ".png"
            if plots:
                plot_protocols(group, out / png)
            files[png] = ("test HR@10 under the sampled protocol and under full ranking "
                          + ("" if len(settings) == 1 else f"({setting_text(group[0].setting)})"))
            full = rank_order(group, "full")
            for i, r in enumerate(rank_order(group, "sampled")):
                table.append({"model": r.model, "label": r.label, **r.setting,
                              "rank_sampled": i + 1, "rank_full": full.index(r) + 1,
                              "test_hr": r.mean("test_hr"), "test_ndcg": r.mean("test_ndcg"),
                              "test_full_hr": r.mean("test_full_hr"),
                              "test_full_ndcg": r.mean("test_full_ndcg")})
        write_csv(out / "protocols.csv", table)
        files["protocols.csv"] = "rank of every model under each protocol"
    return files
