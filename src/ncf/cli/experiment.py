"""`ncf experiment NAME`: one of the paper's studies, resumable, written as a report folder."""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from typing import Any, TypeVar

from ncf.cli import finite_float, non_negative_int, positive_int, seed_arg

T = TypeVar("T")

DEFAULT_EPOCHS = 10
QUICK_EPOCHS = 2


def _items(text: str, what: str, parse: Callable[[str], T]) -> tuple[T, ...]:
    """The parsed items of a comma-separated list; an empty (``8,,16``), unreadable or
    repeated (``0,0``) item is refused."""
    problem = f"expected comma-separated {what}, each once and none empty, got {text!r}"
    try:
        items = tuple(parse(x.strip()) for x in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(problem) from None
    if len(set(items)) < len(items):
        raise argparse.ArgumentTypeError(problem)
    return items


def _word(text: str) -> str:
    if not text:
        raise ValueError("empty")
    return text.lower()


def _ints(text: str) -> tuple[int, ...]:
    return _items(text, "integers", int)


def _seeds(text: str) -> tuple[int, ...]:
    return tuple(seed_arg(str(x)) for x in _ints(text))


def _names(text: str) -> tuple[str, ...]:
    return _items(text, "model names", _word)


def register(sub: Any) -> None:
    """Add `ncf experiment` to the top-level parser."""
    from ncf.experiments import ALL_MODELS, PRESET_TITLES

    presets = "; ".join(f"{name}: {title}" for name, title in PRESET_TITLES.items())
    p = sub.add_parser(
        "experiment", help="run one of the paper's studies and write a report folder",
        description=f"Presets: {presets}. Every cell (model, setting, seed) is stored once; "
        "running again computes only missing cells.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("name", choices=[*PRESET_TITLES, "coldstart"], help="the study (coldstart: "
                   "whole users held out, folded in from their first N items)")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--data", help="ratings file or folder (format detected), e.g. the "
                     "paper's ml-100k.train.rating; default: a synthetic Netflix-format set")
    src.add_argument("--dataset", help="download a public data set (ml-100k, ml-1m, ...)")
    p.add_argument("--format", help="force the input format instead of detecting it")
    p.add_argument("--ratings", help="subsample to N ratings (e.g. 1M), whole users at random")
    p.add_argument("--synth-ratings", default="1M", help="size of the default synthetic set")
    p.add_argument("--data-seed", type=seed_arg, default=0,
                   help="seed of subsampling, tie-breaking and evaluation candidates")
    p.add_argument("--out", help="report folder (default: reports/NAME-DATA)")
    p.add_argument("--cells", help="folder of cell results (default: OUT/cells); share it "
                   "between experiments to reuse common cells")
    p.add_argument("--seeds", type=_seeds, default=(0, 1, 2), help="model seeds, e.g. 0,1,2")
    p.add_argument("--epochs", type=positive_int, default=None,
                   help=f"maximum epochs per NCF stage (default {DEFAULT_EPOCHS}, "
                   f"{QUICK_EPOCHS} with --quick; the full pipeline uses 20)")
    p.add_argument("--factors", type=_ints, default=None,
                   help="predictive factors to run, e.g. 8,16 (default: the preset's)")
    p.add_argument("--models", type=_names, default=None,
                   help=f"models to run, comma-separated, from: {', '.join(ALL_MODELS)}")
    p.add_argument("--quick", action="store_true", help="smoke run: one seed, one factor "
                   "size, two points per sweep and grid, fast baselines only")
    p.add_argument("--batch-size", type=positive_int, default=None,
                   help="samples per step (default 256; coldstart: as `ncf train` chooses)")
    p.add_argument("--given", type=_ints, default=(1, 3, 5, 10, 20),
                   help="coldstart: numbers of items folded in, e.g. 1,3,5,10,20")
    p.add_argument("--users", type=positive_int, default=None,
                   help="coldstart: held-out users (default: 20%% of those with enough "
                   "interactions, at most 1000)")
    p.add_argument("--dropout", type=finite_float, default=0.0,
                   help="dropout of the MLP's concatenated embeddings while training (MLP and "
                   "NeuMF); 0 is the paper's model (ncf train's default is 0.2)")
    p.add_argument("--full-ranking-users", type=non_negative_int, default=10_000,
                   help="users sampled for full-ranking metrics (0: all)")
    p.add_argument("--device", default="auto",
                   help="auto (cuda when torch sees a GPU, else cpu), cpu, cuda or cuda:N")
    p.add_argument("--threads", type=positive_int, default=None, help="torch threads (default: 1 "
                   "for small batches)")
    p.add_argument("--quiet", action="store_true", help="no progress lines")
    p.set_defaults(run=cmd_experiment)


def cmd_experiment(args: argparse.Namespace) -> int:
    from ncf.cli.train import resolve_device, set_threads
    from ncf.experiments.presets import preset_factors, preset_models
    from ncf.experiments.run import (
        PRESETS,
        ExperimentOptions,
        check_cells_folder,
        check_report_folder,
        data_name,
        run_experiment,
    )
    from ncf.outputs import hold_output
    from ncf.sources import resolve_training_data

    say = (lambda *a: None) if args.quiet else (lambda *a: print(*a, flush=True))
    if args.name == "coldstart":
        return _coldstart(args, say)
    args.batch_size = args.batch_size or 256
    epochs = args.epochs if args.epochs is not None else (
        QUICK_EPOCHS if args.quick else DEFAULT_EPOCHS)
    seeds = args.seeds[:1] if args.quick else args.seeds
    args.device = resolve_device(args.device)
    options = ExperimentOptions(
        seeds=tuple(seeds), epochs=epochs, factors=args.factors, models=args.models,
        quick=args.quick, batch_size=args.batch_size,
        full_ranking_users=args.full_ranking_users or None, device=args.device,
        dropout=args.dropout,
    )
    # options and folders are checked before any data is read or anything is written
    from ncf.models import check_dropout

    check_dropout(args.dropout)
    preset_models(PRESETS[args.name], options)
    preset_factors(PRESETS[args.name], options)
    name = data_name(args.data, args.dataset)
    out = args.out or f"reports/{args.name}-{name}"
    check_report_folder(out, args.name)
    check_cells_folder(args.cells)
    hold_output(out, what="experiment report")  # one ncf process per report folder
    threads = set_threads(args.threads, args.batch_size)
    t0 = time.perf_counter()
    data = resolve_training_data(
        data=args.data, dataset=args.dataset, fmt=args.format, ratings=args.ratings,
        synth_ratings=args.synth_ratings, seed=args.data_seed, say=say,
    )
    say(f"data: {data.description} ({time.perf_counter() - t0:.1f}s); "
        f"{threads} torch thread(s); report folder {out}")
    outcome = run_experiment(args.name, data, options, out, cells_dir=args.cells,
                             data_title=name, say=say)
    say(f"total wall time {time.perf_counter() - t0:.1f}s "
        f"({len(outcome.stats.computed)} cell(s) computed)")
    return 0


def _coldstart(args: argparse.Namespace, say: Callable[..., None]) -> int:
    """`ncf experiment coldstart`: see :mod:`ncf.experiments.coldstart`."""
    from dataclasses import replace

    from ncf.cli.train import auto_batch_size, resolve_device, set_threads
    from ncf.experiments.coldstart import NAME, ColdStartOptions, run_coldstart
    from ncf.experiments.run import check_report_folder, data_name
    from ncf.pipeline import FINETUNE_PRESETS, PipelineConfig
    from ncf.sources import resolve_training_data
    from ncf.training import TrainConfig

    epochs = args.epochs or (QUICK_EPOCHS if args.quick else 20)
    factors = args.factors or (16,)
    args.device = resolve_device(args.device)
    models = args.models or ("gmf",)
    ColdStartOptions(given=args.given, users=args.users, models=models)  # checked before data
    name = data_name(args.data, args.dataset)
    out = args.out or f"reports/{NAME}-{name}"
    check_report_folder(out, NAME)
    t0 = time.perf_counter()
    data = resolve_training_data(
        data=args.data, dataset=args.dataset, fmt=args.format, ratings=args.ratings,
        synth_ratings=args.synth_ratings, seed=args.data_seed, say=say,
    )
    batch = args.batch_size or auto_batch_size(len(data.split.train), 4)
    threads = set_threads(args.threads, batch)
    stage = TrainConfig(epochs=epochs, batch_size=batch, early_stopping=8, device=args.device)
    neumf = replace(FINETUNE_PRESETS["tuned"], epochs=epochs, batch_size=batch, early_stopping=8,
                    device=args.device)
    pipeline = PipelineConfig(factors=factors[0], gmf=stage, mlp=stage, neumf=neumf,
                              seed=args.seeds[0], full_ranking_users=1000)
    options = ColdStartOptions(given=args.given, users=args.users, models=models,
                               pipeline=pipeline, seed=args.data_seed)
    say(f"data: {data.description} ({time.perf_counter() - t0:.1f}s); batch {batch}, "
        f"{threads} torch thread(s); report folder {out}")
    run_coldstart(data, options, out, say=say, data_title=name)
    say(f"report: {out}/report.md (total wall time {time.perf_counter() - t0:.1f}s)")
    return 0
