"""`ncf train`, `ncf evaluate` and `ncf recommend`."""

from __future__ import annotations

import argparse
import os
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from ncf.cli import non_negative_int, positive_int, seed_arg
from ncf.errors import NcfError, printable

DEFAULT_SYNTH_RATINGS = 1_000_000


def register(sub: Any) -> None:
    """Add the training sub-commands to the top-level parser."""
    p = sub.add_parser("train", help="train GMF, MLP and NeuMF (pre-trained) and report metrics",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    src = p.add_mutually_exclusive_group()
    src.add_argument("--data", help="ratings file or folder (format detected), or a prepared "
                     "folder from `ncf data prepare`; default: a synthetic Netflix-format set")
    src.add_argument("--dataset", help="download a public data set (ml-100k, ml-1m, ml-20m, ...)")
    p.add_argument("--format", help="force the input format instead of detecting it")
    p.add_argument("--out", help="run directory (default: runs/run-TIMESTAMP)")
    p.add_argument("--ratings", help="subsample to N ratings (e.g. 1M), whole users at random")
    p.add_argument("--synth-ratings", default="1M", help="size of the default synthetic set")
    p.add_argument("--factors", type=int, default=16, help="predictive factors")
    p.add_argument("--layers", type=int, default=3, help="MLP hidden layers")
    p.add_argument("--dropout", type=float, default=0.2,
                   help="dropout of the MLP's concatenated embeddings while training "
                   "(MLP and NeuMF; 0: the paper's model)")
    p.add_argument("--epochs", type=int, default=20, help="maximum epochs of every stage")
    p.add_argument("--batch-size", type=positive_int, default=None,
                   help="samples per step (default: 256, the paper's, while an epoch has at most "
                   "~2,000 steps; larger data get the power of two that keeps it near 2,000)")
    p.add_argument("--lr", type=float, default=0.001, help="Adam learning rate of GMF and MLP")
    p.add_argument("--negatives", type=int, default=4, help="sampled negatives per positive")
    p.add_argument("--no-pretrain", action="store_true",
                   help="train NeuMF from scratch (with Adam unless --finetune says otherwise)")
    p.add_argument("--finetune", choices=["tuned", "paper", "adam"], default=None,
                   help="NeuMF stage: tuned SGD (momentum 0.9, wd 1e-4, plateau; default with "
                   "pre-training), the paper's plain SGD, or Adam (default without)")
    p.add_argument("--finetune-lr", type=float, help="learning rate of the NeuMF stage")
    p.add_argument("--alpha", type=float, default=0.5, help="GMF weight in the fused output")
    p.add_argument("--early-stopping", type=positive_int, default=8,
                   help="stop a stage after N epochs without better validation HR@10")
    p.add_argument("--refit", action=argparse.BooleanOptionalAction, default=False,
                   help="after choosing epochs on validation, retrain every stage on train + "
                   "validation for those epochs (doubles training time)")
    p.add_argument("--full-ranking-users", type=non_negative_int, default=10_000,
                   help="users sampled for full-ranking metrics (0: all)")
    p.add_argument("--seed", type=seed_arg, default=0)
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--threads", type=positive_int, default=None,
                   help="torch threads (default: 1 for small batches, else all cores but one)")
    p.add_argument("--user", help="raw user id whose top-10 is printed at the end")
    p.add_argument("--quiet", action="store_true", help="no progress, no per-epoch lines")
    p.set_defaults(run=cmd_train)

    e = sub.add_parser("evaluate", help="re-score the models of a run directory")
    e.add_argument("run_dir")
    e.add_argument("--data", help="data to score on (default: the run's own split)")
    e.add_argument("--format")
    e.add_argument("--full-ranking-users", type=non_negative_int, default=10_000,
                   help="users sampled for full-ranking metrics (0: all)")
    e.add_argument("--json", action="store_true")
    e.set_defaults(run=cmd_evaluate)

    r = sub.add_parser("recommend", help="top-K items for a user from a trained run")
    r.add_argument("run_dir")
    r.add_argument("--user", required=True, help="raw user id, as in the data files")
    r.add_argument("-k", type=positive_int, default=10)
    r.add_argument("--model", default="neumf", help="gmf, mlp or neumf")
    r.add_argument("--include-seen", action="store_true", help="keep items the user rated")
    r.add_argument("--json", action="store_true")
    r.set_defaults(run=cmd_recommend)


def check_device(device: str) -> None:
    """A clear error for a device this torch build or machine cannot use."""
    import torch

    try:
        dev = torch.device(device)
    except RuntimeError:
        dev = None
    if dev is None or dev.type not in ("cpu", "cuda"):
        raise NcfError(f"--device {device}: not a device ncf trains on (cpu, cuda or cuda:N)")
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise NcfError(f"--device {device}: no CUDA device is available to this torch build "
                       f"({torch.__version__})")


def auto_batch_size(n_positives: int, n_negatives: int, steps: int = 2000) -> int:
    """256 (the paper's) unless an epoch would exceed ~``steps`` steps; then a power of two."""
    samples = n_positives * (1 + n_negatives)
    batch = 256
    while samples / batch > steps * 1.5 and batch < 16384:
        batch *= 2
    return batch


def set_threads(threads: int | None, batch_size: int) -> int:
    """Pick the torch thread count on purpose.

    Small batches lose to thread hand-offs, so they get one thread. Large batches get all
    cores but one: a thread that shares its core with another busy process stalls every
    step of the others (measured here: 3 s epochs became 27 s with 2 threads on 2 busy cores).
    """
    import torch

    if threads is None:
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
        threads = 1 if batch_size < 2048 else max(1, min(8, (cores or 1) - 1))
    torch.set_num_threads(threads)
    return threads


class _Progress:
    """A progress bar on stderr (only on a terminal) and one summary line per epoch."""

    def __init__(self, quiet: bool, epochs: int) -> None:
        self.quiet, self.epochs = quiet, epochs
        self.tty = sys.stderr.isatty() and not quiet
        self.epoch: dict[str, int] = {}

    def bar(self, stage: str, done: int, total: int) -> None:
        if not self.tty:
            return
        width = 30
        fill = int(width * done / total)
        e = self.epoch.get(stage, 0) + 1
        bar = "#" * fill + "." * (width - fill)
        pct = 100 * done // total
        sys.stderr.write(f"\r{stage:5s} epoch {e:3d}/{self.epochs} [{bar}] {pct:3d}%")
        sys.stderr.flush()

    def line(self, stage: str, r: Any) -> None:
        self.epoch[stage] = r.epoch
        if self.quiet:
            return
        if self.tty:
            sys.stderr.write("\r" + " " * 70 + "\r")
        val = "" if r.hr is None else f"  val HR@10 {r.hr:.4f}  NDCG@10 {r.ndcg:.4f}"
        print(f"{stage:5s} epoch {r.epoch:3d}  loss {r.loss:.4f}{val}  lr {r.lr:.2g}  "
              f"{r.seconds:.1f}s (+{r.eval_seconds:.2f}s eval)", flush=True)


def _pipeline_config(args: argparse.Namespace, batch_size: int) -> Any:
    from ncf.pipeline import FINETUNE_PRESETS, PipelineConfig
    from ncf.training import TrainConfig

    stage = TrainConfig(epochs=args.epochs, batch_size=batch_size, lr=args.lr,
                        n_negatives=args.negatives, early_stopping=args.early_stopping,
                        device=args.device)
    preset = args.finetune or ("adam" if args.no_pretrain else "tuned")
    neumf = replace(FINETUNE_PRESETS[preset], epochs=args.epochs, batch_size=batch_size,
                    n_negatives=args.negatives, early_stopping=args.early_stopping,
                    device=args.device)
    if args.finetune_lr is not None:
        neumf = replace(neumf, lr=args.finetune_lr)
    return PipelineConfig(
        factors=args.factors, n_layers=args.layers, dropout=args.dropout,
        pretrain=not args.no_pretrain,
        alpha=args.alpha, gmf=stage, mlp=stage, neumf=neumf, seed=args.seed,
        full_ranking_users=args.full_ranking_users or None, refit=args.refit,
    ), preset


def cmd_train(args: argparse.Namespace) -> int:
    from ncf.interactions import lookup_raw
    from ncf.outputs import hold_output
    from ncf.pipeline import PipelineConfig, StageResult, run_pipeline
    from ncf.report import (
        all_interactions,
        finish_run,
        print_table,
        recommend_lines,
        save_stage,
        start_run,
    )
    from ncf.runs import discard_run_dir, new_run_dir, plan_run_dir
    from ncf.sources import resolve_training_data

    # model options are checked before any data is read or anything is written
    PipelineConfig(factors=args.factors, n_layers=args.layers, dropout=args.dropout,
                   alpha=args.alpha)
    check_device(args.device)
    run_dir = plan_run_dir(args.out)  # checked now, created once the data are ready
    hold_output(run_dir, what="run directory")  # one ncf process per run directory
    say = (lambda *a: None) if args.quiet else (lambda *a: print(*a, flush=True))
    t0 = time.perf_counter()
    data = resolve_training_data(
        data=args.data, dataset=args.dataset, fmt=args.format, ratings=args.ratings,
        synth_ratings=args.synth_ratings, seed=args.seed, say=say,
    )
    split = data.split
    batch_size = args.batch_size or auto_batch_size(len(split.train), args.negatives)
    config, preset = _pipeline_config(args, batch_size)
    if args.user is not None:
        lookup_raw(split.train.user_raw, args.user, "user")  # known before hours of training
    threads = set_threads(args.threads, batch_size)
    created = not os.path.lexists(run_dir)  # only a directory this run made is removed
    run_dir = new_run_dir(run_dir)
    say(f"data: {data.description}")
    say(f"      {split.train.n_users:,} users, {split.train.n_items:,} items, "
        f"{len(split.train):,} train / {len(split.test):,} test interactions "
        f"({time.perf_counter() - t0:.1f}s); batch {batch_size}, {threads} torch thread(s)")

    progress = _Progress(args.quiet, args.epochs)
    saved: list[str] = []

    def save(result: StageResult) -> None:
        save_stage(run_dir, result, seen)
        saved.append(result.name)

    try:
        start_run(run_dir, config, data, extra={"finetune": preset, "threads": threads,
                                                "argv": sys.argv[1:]})
        seen = all_interactions(split)
        results = run_pipeline(split, config, on_epoch=progress.line, progress=progress.bar,
                               device=args.device, on_result=save)
    except BaseException:
        if not saved:  # nothing worth keeping: the same --out can be used again
            discard_run_dir(run_dir, created)
        raise
    finish_run(run_dir, results)
    print_table(results)
    user = args.user
    if user is None:
        user = data.split.test.user_raw[int(data.split.test.user_ids[0])]
    for line in recommend_lines(run_dir, user, k=10):
        print(line)
    say(f"run directory: {printable(run_dir)}  ({time.perf_counter() - t0:.0f}s in all)")
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from ncf.report import evaluate_run

    out = evaluate_run(Path(args.run_dir), data=args.data, fmt=args.format,
                       full_users=args.full_ranking_users or None)
    if args.json:
        import json

        print(json.dumps(out, indent=2))
    else:
        from ncf.report import format_table

        print(format_table(out))
    return 0


def cmd_recommend(args: argparse.Namespace) -> int:
    from ncf.report import recommend_lines, recommend_rows

    if args.json:
        import json

        print(json.dumps(recommend_rows(Path(args.run_dir), args.user, args.k, args.model,
                                        not args.include_seen), indent=2))
        return 0
    for line in recommend_lines(Path(args.run_dir), args.user, args.k, args.model,
                                not args.include_seen):
        print(line)
    return 0

