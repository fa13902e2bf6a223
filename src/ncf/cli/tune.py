"""`ncf tune MODEL`: hyper-parameter search on the validation split, then the best model."""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

from ncf.cli import finite_float, positive_int, seed_arg
from ncf.errors import NcfError, printable


def register(sub: Any) -> None:
    """Add `ncf tune` to the top-level parser."""
    from ncf.experiments.names import TUNABLE

    p = sub.add_parser(
        "tune", help="search a model's hyper-parameters on the validation split (Optuna)",
        description="Trials train on the training split and are scored on the validation "
        "items only (TPE sampler, median pruner on validation HR@10 per epoch). The study is "
        "kept in a database, so a search resumes after an interruption and several processes "
        "can search one study. At the end the best configuration is trained again and scored "
        "on the test split, into OUT/run-trial-N, with OUT/report.md and OUT/search.png.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("model", choices=list(TUNABLE),
                   help="gmf, mlp, neumf (its fine-tuning stage, from GMF and MLP pre-trained "
                   "with the defaults), or a baseline")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--data", help="ratings file or folder, or a prepared folder")
    src.add_argument("--dataset", help="download a public data set (ml-100k, ml-1m, ...)")
    p.add_argument("--format", help="force the input format instead of detecting it")
    p.add_argument("--ratings", help="subsample to N ratings (e.g. 1M), whole users at random")
    p.add_argument("--synth-ratings", default="1M", help="size of the default synthetic set")
    p.add_argument("--trials", type=positive_int, default=30,
                   help="finished trials the study should hold (those of earlier or parallel "
                   "runs count)")
    p.add_argument("--minutes", type=finite_float, default=None,
                   help="stop starting trials after this many minutes (this process)")
    p.add_argument("--out", help="the study's folder (default: tunes/MODEL-DATA)")
    p.add_argument("--storage", help="SQLAlchemy URL of the study's database (default: "
                   "sqlite:///OUT/study.db)")
    p.add_argument("--study", help="study name in the database (default: MODEL)")
    p.add_argument("--search-only", action="store_true",
                   help="a worker: add trials to the study, train no final model, write no "
                   "report")
    p.add_argument("--no-prune", action="store_true", help="run every trial to its end")
    p.add_argument("--seed", type=seed_arg, default=0,
                   help="seed of the split, the models and a new study's sampler")
    p.add_argument("--factors", type=positive_int, default=None,
                   help="predictive factors of the runs the trials start from (default: the "
                   "scaling rule's, as in ncf train)")
    p.add_argument("--epochs", type=positive_int, default=None,
                   help="maximum epochs of the tuned stage, in every trial and in the final "
                   "run (default: the scaling rule's; NeuMF's pre-training keeps the rule's)")
    p.add_argument("--early-stopping", type=positive_int, default=None,
                   help="stop a trial after N epochs without better validation HR@10")
    p.add_argument("--batch-size", type=positive_int, default=None)
    p.add_argument("--device", default="auto",
                   help="auto (cuda when torch sees a GPU, else cpu), cpu, cuda or cuda:N")
    p.add_argument("--threads", type=positive_int, default=None, help="torch threads")
    p.add_argument("--full-ranking-users", type=int, default=10_000,
                   help="users sampled for the final model's full-ranking metrics (0: all)")
    p.add_argument("--tensorboard", help="write every epoch of every trial and of the final "
                   "run to this TensorBoard log folder")
    p.add_argument("--quiet", action="store_true", help="no progress lines")
    p.set_defaults(run=cmd_tune)


def _train_defaults(args: argparse.Namespace) -> argparse.Namespace:
    """``ncf train``'s options at their defaults, with what ``ncf tune`` sets replaced."""
    from ncf.cli import build_parser

    ns = build_parser().parse_args(["train"])
    for key in ("factors", "early_stopping", "batch_size", "seed", "device",
                "full_ranking_users"):
        setattr(ns, key, getattr(args, key))
    return ns


def cmd_tune(args: argparse.Namespace) -> int:
    from ncf.cli.train import (
        _pipeline_config,
        check_model_options,
        device_name,
        resolve_device,
        set_threads,
        tensorboard_logger,
        training_plan,
    )
    from ncf.experiments.run import data_name
    from ncf.experiments.tune import (
        NCF_STAGES,
        SearchData,
        TuneOptions,
        best_params,
        finished,
        open_storage,
        open_study,
        pretrain_parts,
        require_optuna,
        run_search,
        storage_url,
        train_best,
        write_report,
    )
    from ncf.outputs import hold_output
    from ncf.pipeline import resolve_sparse
    from ncf.sources import resolve_training_data
    from ncf.split import split_fingerprint

    require_optuna()
    if args.minutes is not None and args.minutes <= 0:
        raise NcfError(f"--minutes must be > 0, got {args.minutes:g}")
    if args.full_ranking_users < 0:
        raise NcfError("--full-ranking-users must be >= 0")
    targs = _train_defaults(args)
    check_model_options(targs)
    device = resolve_device(args.device)
    log = tensorboard_logger(args.tensorboard)
    name = data_name(args.data, args.dataset)
    out = Path(args.out or f"tunes/{args.model}-{name}")
    if out.exists() and not out.is_dir():
        raise NcfError(f"{out}: not a folder; choose another --out")
    if args.storage:  # a bad URL or an unreachable database is said before anything is made
        open_storage(args.storage)
    out.mkdir(parents=True, exist_ok=True)
    url = storage_url(args.storage, out)
    open_storage(url)
    say = (lambda *a: None) if args.quiet else (lambda *a: print(*a, flush=True))
    t0 = time.perf_counter()
    data = resolve_training_data(data=args.data, dataset=args.dataset, fmt=args.format,
                                 ratings=args.ratings, synth_ratings=args.synth_ratings,
                                 seed=args.seed, say=say)
    split = data.split
    plan = training_plan(len(split.train), targs.negatives, device, targs.batch_size,
                         factors=targs.factors, epochs=targs.epochs,
                         early_stopping=targs.early_stopping)
    base, _ = _pipeline_config(targs, plan.batch_size, device, plan)
    from dataclasses import replace

    base = replace(base, sparse=resolve_sparse(None, split.train.n_users, device))
    threads = set_threads(args.threads, plan.batch_size)
    options = TuneOptions(model=args.model, base=base, trials=args.trials, minutes=args.minutes,
                          seed=args.seed, device=device, prune=not args.no_prune,
                          epochs=args.epochs)
    study_name = args.study or args.model
    study, created = open_study(study_name, url, options, split_fingerprint(split))
    say(f"data: {data.description}")
    say(f"      {split.train.n_users:,} users, {split.train.n_items:,} items, "
        f"{len(split.train):,} train interactions ({time.perf_counter() - t0:.1f}s)")
    what = plan.describe() if args.model in NCF_STAGES else f"baseline {args.model}"
    say(f"device {device_name(device)}; {what}; {threads} torch thread(s)")
    say(f"study {study_name!r} in {printable(url)}: {'new' if created else 'resumed'}, "
        f"{len(finished(study))} finished trial(s), budget {args.trials} trials"
        + ("" if args.minutes is None else f" or {args.minutes:g} minutes")
        + ("" if args.epochs is None else f"; {args.model} trains at most {args.epochs} "
           "epochs a trial"))
    search = SearchData.from_split(split)
    pretrained = None
    if args.model == "neumf":
        pretrained = pretrain_parts(base, search, out, device, say)
    run_search(study, options, search, created, pretrained, say, on_epoch=log)
    if args.search_only:
        say(f"{len(finished(study))} finished trial(s) in the study; search only: no final run")
        return 0
    best, params = best_params(study, args.model)
    run_dir = out / f"run-trial-{best.number}"
    hold_output(run_dir, wait=True, what="final run")  # a second worker waits, then reuses it
    metrics = _final_metrics(run_dir)
    if metrics is None:
        say(f"training the best configuration (trial {best.number}) into {printable(run_dir)}")
        metrics = train_best(args.model, base, params, data, run_dir, device, say,
                             on_epoch=log, extra={"study": study_name, "storage": url,
                                                  "trial": best.number,
                                                  "batch_plan": plan.as_dict()},
                             epochs=args.epochs, pretrained=pretrained)
    report = write_report(out, study, url, args.model, name, metrics, run_dir,
                          time.perf_counter() - t0)
    m = metrics.get(args.model) or next(iter(metrics.values()))
    v = m.get("validation") or {}
    say(f"best trial {best.number}: validation HR@10 {best.value:.4f}; final run validation "
        f"HR@10 {v.get('hr', float('nan')):.4f}, test HR@10 {m['sampled']['hr']:.4f} NDCG@10 "
        f"{m['sampled']['ndcg']:.4f}")
    say(f"report: {printable(report)}")
    if log is not None:
        log.close()
    return 0


def _final_metrics(run_dir: Path) -> dict[str, Any] | None:
    """The metrics of a final run trained before (by another worker, or before a resume);
    ``None`` when there is none. An unfinished one is cleared to be trained again."""
    from ncf.runs import discard_run_dir, read_json

    if (run_dir / "metrics.json").is_file():
        found = read_json(run_dir / "metrics.json")
        if isinstance(found, dict) and found:
            return found
    if run_dir.exists():
        discard_run_dir(run_dir, created=True)
    return None
