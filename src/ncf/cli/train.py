"""`ncf train`, `ncf evaluate` and `ncf recommend`."""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from ncf.cli import non_negative_int, positive_int, seed_arg
from ncf.errors import NcfError, printable

DEFAULT_SYNTH_RATINGS = 1_000_000

#: Seconds a rank whose peer failed waits to be stopped, so that the launcher reports the
#: rank that failed, not this one.
PEER_GRACE_SECONDS = 5.0


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
    p.add_argument("--factors", type=int, default=None,
                   help="predictive factors (default: the scaling rule's, 16 on a CPU, 64 on a "
                   "GPU up to 10M ratings)")
    p.add_argument("--layers", type=int, default=3, help="MLP hidden layers")
    p.add_argument("--dropout", type=float, default=0.2,
                   help="dropout of the MLP's concatenated embeddings while training "
                   "(MLP and NeuMF; 0: the paper's model)")
    p.add_argument("--epochs", type=int, default=None,
                   help="maximum epochs of every stage (default: 20, 10 above 10M ratings)")
    p.add_argument("--batch-size", type=positive_int, default=None,
                   help="samples per step (default: 256, the paper's, unless an epoch would "
                   "take more than 3,000 steps; then the smallest power of two that keeps it "
                   "within 3,000, at most 16,384)")
    p.add_argument("--lr", type=float, default=0.001, help="Adam learning rate of GMF and MLP")
    p.add_argument("--negatives", type=int, default=4, help="sampled negatives per positive")
    p.add_argument("--no-pretrain", action="store_true",
                   help="train NeuMF from scratch (with Adam unless --finetune says otherwise)")
    p.add_argument("--finetune", choices=["tuned", "paper", "adam"], default=None,
                   help="NeuMF stage: tuned SGD (momentum 0.9, wd 1e-4, plateau; default with "
                   "pre-training), the paper's plain SGD, or Adam (default without)")
    p.add_argument("--finetune-lr", type=float, help="learning rate of the NeuMF stage")
    p.add_argument("--alpha", type=float, default=0.5, help="GMF weight in the fused output")
    p.add_argument("--early-stopping", type=positive_int, default=None,
                   help="stop a stage after N epochs without better validation HR@10 "
                   "(default: 8, 4 above 10M ratings)")
    p.add_argument("--refit", action=argparse.BooleanOptionalAction, default=False,
                   help="after choosing epochs on validation, retrain every stage on train + "
                   "validation for those epochs (doubles training time)")
    p.add_argument("--full-ranking-users", type=non_negative_int, default=10_000,
                   help="users sampled for full-ranking metrics (0: all)")
    p.add_argument("--seed", type=seed_arg, default=0)
    p.add_argument("--device", default="auto",
                   help="auto (cuda when torch sees a GPU, else cpu), cpu, cuda or cuda:N")
    p.add_argument("--nproc", type=positive_int, default=1,
                   help="data-parallel processes on this machine, one per GPU (or sharing the "
                   "CPU cores): the same as torchrun --standalone --nproc_per_node N -m ncf train")
    p.add_argument("--threads", type=positive_int, default=None,
                   help="torch threads (default: 1 for small batches, else all cores but one, "
                   "shared among the processes of a run)")
    p.add_argument("--sparse", action=argparse.BooleanOptionalAction, default=None,
                   help="row-wise (lazy) embedding updates: lazy Adam, L2 only on the rows a "
                   "batch used (default: on a CPU above 100,000 users, else off)")
    p.add_argument("--user", help="raw user id whose top-10 is printed at the end")
    p.add_argument("--tensorboard", help="also log every epoch's loss, validation metrics and "
                   "learning rate to this TensorBoard folder (needs the tensorboard extra)")
    p.add_argument("--quiet", action="store_true", help="no progress, no per-epoch lines")
    p.add_argument("--resume", metavar="RUN",
                   help="continue an interrupted run from its last checkpoint, with the options "
                   "it was started with (only --quiet may be added); it ends as the run would "
                   "have ended without the interruption")
    p.set_defaults(run=cmd_train)

    e = sub.add_parser("evaluate", help="re-score the models of a run directory")
    e.add_argument("run_dir")
    e.add_argument("--data", help="data to score on (default: the run's own split)")
    e.add_argument("--format")
    e.add_argument("--full-ranking-users", type=non_negative_int, default=None,
                   help="users sampled for full-ranking metrics, with the run's seed (0: all; "
                   "default: as many as the run used)")
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


def resolve_device(device: str) -> str:
    """The device a run trains on: ``auto`` is ``cuda`` when torch sees a GPU, else ``cpu``;
    anything else is checked (:func:`check_device`) and kept."""
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    check_device(device)
    return device


def device_name(device: str) -> str:
    """``device`` with the GPU's name, for the run header."""
    import torch

    dev = torch.device(device)
    if dev.type != "cuda":
        return device
    return f"{device} ({torch.cuda.get_device_name(dev)})"


def check_device(device: str) -> None:
    """A clear error for a device this torch build or machine cannot use."""
    import torch

    if device == "auto":
        return
    try:
        dev = torch.device(device)
    except RuntimeError:
        dev = None
    if dev is None or dev.type not in ("cpu", "cuda"):
        raise NcfError(f"--device {device}: not a device ncf trains on (auto, cpu, cuda or "
                       "cuda:N)")
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise NcfError(f"--device {device}: no CUDA device is available to this torch build "
                       f"({torch.__version__})")


#: Steps an epoch may take at the automatic batch on a CPU.
CPU_STEPS = 3000


def auto_batch_size(n_positives: int, n_negatives: int, steps: int = CPU_STEPS) -> int:
    """256 (the paper's) unless an epoch would take more than ``steps`` steps; then the
    smallest power of two that keeps it within ``steps`` (at most 16,384)."""
    samples = n_positives * (1 + n_negatives)
    batch = 256
    while samples / batch > steps and batch < 16384:
        batch *= 2
    return batch


#: Steps an epoch should take at most on a GPU: beyond, kernel launches dominate a step.
GPU_STEPS = 500

#: Largest automatic batch on a GPU.
MAX_GPU_BATCH = 1 << 18


#: Predictive factors on a GPU up to :data:`GPU_FACTORS_UP_TO` training ratings: the paper's
#: best size on MovieLens-1M, nearly free on a GPU at that size.
GPU_FACTORS = 64
GPU_FACTORS_UP_TO = 10_000_000

#: Predictive factors everywhere else: the CPU main job's size (1M ratings in ten minutes on
#: two cores; factors 32 would cost its MLP four times as much per sample).
DEFAULT_FACTORS = 16

#: Epochs and early-stopping patience at the reference batch, up to :data:`LARGE_DATA`
#: training ratings, and above it (an epoch of the whole Prize takes ~25 minutes on a CPU).
EPOCHS, PATIENCE = 20, 8
LARGE_DATA = 10_000_000
LARGE_EPOCHS, LARGE_PATIENCE = 10, 4


@dataclass(frozen=True)
class BatchPlan:
    """What the scaling rule decided for a run: model size, training budget and batch.

    Args:
        batch_size: samples per (global) step.
        reference: the batch the learning rates are tuned for (:func:`auto_batch_size`).
        lr_scale: factor on every stage's learning rate, ``sqrt(batch_size / reference)``
            when the batch was raised automatically, else 1.
        warmup_steps: steps over which the scaled rates ramp up linearly.
        factors: predictive factors.
        epochs: maximum epochs of every stage.
        early_stopping: epochs without a better validation HR@10 before a stage stops.
        chosen: the settings the rule chose (the others were given explicitly).
    """

    batch_size: int
    reference: int
    lr_scale: float = 1.0
    warmup_steps: int = 0
    factors: int = DEFAULT_FACTORS
    epochs: int = EPOCHS
    early_stopping: int = PATIENCE
    chosen: tuple[str, ...] = ()

    @property
    def note(self) -> str:
        """What the header says about the scaling."""
        if self.lr_scale == 1.0:
            return ""
        return (f" (learning rates x{self.lr_scale:.2f}, the square root of {self.batch_size} / "
                f"{self.reference}, warm-up {self.warmup_steps} steps)")

    def describe(self) -> str:
        """The run header's line: factors, epochs, patience and batch, with what chose them."""
        auto = [k for k in ("factors", "epochs", "early_stopping") if k in self.chosen]
        how = f" (by the scaling rule: {', '.join(a.replace('_', ' ') for a in auto)})" if (
            auto) else ""
        epochs = f"{self.epochs} epoch{'s' if self.epochs != 1 else ''}"
        return (f"factors {self.factors}, at most {epochs} a stage, early stopping after "
                f"{self.early_stopping}{how}; batch {self.batch_size}{self.note}")

    def as_dict(self) -> dict[str, Any]:
        return {"batch_size": self.batch_size, "reference": self.reference,
                "lr_scale": self.lr_scale, "warmup_steps": self.warmup_steps,
                "factors": self.factors, "epochs": self.epochs,
                "early_stopping": self.early_stopping, "chosen_by_rule": list(self.chosen)}


def training_plan(n_positives: int, n_negatives: int, device: str,
                  batch_size: int | None = None, factors: int | None = None,
                  epochs: int | None = None, early_stopping: int | None = None) -> BatchPlan:
    """The scaling rule: model size, training budget, batch and learning-rate scaling of a run
    of ``n_positives`` training ratings on ``device``. Any setting given is kept as given.

    * **factors**: 64 on a GPU up to 10M training ratings (the paper's best on MovieLens-1M;
      a GPU trains it at that size in minutes), else 16 (on a CPU the main job's 1M ratings
      must train in ten minutes on two cores, and factors 32 costs its MLP 4x per sample).
    * **epochs / early stopping**: 20 / 8 up to 10M training ratings, 10 / 4 above (an epoch
      of the whole Prize is 500M samples).
    * **batch**: on a CPU :func:`auto_batch_size`'s and the rates are used as given. On a GPU
      the batch grows to the power of two that keeps an epoch within ~500 steps (at most
      262,144 samples): small steps would leave it waiting for kernel launches. The rates
      were tuned at the CPU's batch, so a larger automatic batch multiplies them by the
      square root of the ratio (Adam's usual rule) with a linear warm-up over the first
      epoch's first fifth. An explicit ``batch_size`` is used as it is, with the rates as
      given.
    """
    gpu = device.startswith("cuda")
    chosen = tuple(k for k, v in (("factors", factors), ("epochs", epochs),
                                  ("early_stopping", early_stopping)) if v is None)
    large = n_positives > LARGE_DATA
    if factors is None:
        factors = GPU_FACTORS if gpu and n_positives <= GPU_FACTORS_UP_TO else DEFAULT_FACTORS
    if epochs is None:
        epochs = LARGE_EPOCHS if large else EPOCHS
    if early_stopping is None:
        early_stopping = LARGE_PATIENCE if large else PATIENCE
    reference = auto_batch_size(n_positives, n_negatives)
    batch, scale, warmup = reference, 1.0, 0
    if batch_size is not None:
        batch = batch_size
    elif gpu:
        samples = n_positives * (1 + n_negatives)
        while samples / batch > GPU_STEPS and batch < MAX_GPU_BATCH:
            batch *= 2
        if batch != reference:
            steps = max(1, math.ceil(samples / batch))
            scale, warmup = math.sqrt(batch / reference), max(1, steps // 5)
    return BatchPlan(batch, reference, scale, warmup, factors=factors, epochs=epochs,
                     early_stopping=early_stopping, chosen=chosen)


def set_threads(threads: int | None, batch_size: int, processes: int = 1) -> int:
    """Pick the torch thread count on purpose.

    Small batches lose to thread hand-offs, so they get one thread. Large batches get all
    cores but one: a thread that shares its core with another busy process stalls every
    step of the others (measured here: 3 s epochs became 27 s with 2 threads on 2 busy cores).
    The ``processes`` of a data-parallel run on one machine share the cores.
    """
    import torch

    if threads is None:
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
        cores = (cores or 1) // processes
        threads = 1 if batch_size < 2048 else max(1, min(8, cores - 1))
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


def _pipeline_config(args: argparse.Namespace, batch_size: int | None, device: str,
                     plan: Any = None) -> Any:
    from ncf.pipeline import FINETUNE_PRESETS, PipelineConfig
    from ncf.training import TrainConfig

    scale, warmup = (1.0, 0) if plan is None else (plan.lr_scale, plan.warmup_steps)
    batch_size = batch_size or 256  # the options are checked before the batch is planned
    factors = _given(args.factors, plan, "factors", DEFAULT_FACTORS)
    epochs = _given(args.epochs, plan, "epochs", EPOCHS)
    patience = _given(args.early_stopping, plan, "early_stopping", PATIENCE)
    stage = TrainConfig(epochs=epochs, batch_size=batch_size, lr=args.lr * scale,
                        n_negatives=args.negatives, early_stopping=patience,
                        device=device, warmup_steps=warmup)
    preset = args.finetune or ("adam" if args.no_pretrain else "tuned")
    neumf = replace(FINETUNE_PRESETS[preset], epochs=epochs, batch_size=batch_size,
                    n_negatives=args.negatives, early_stopping=patience,
                    device=device, warmup_steps=warmup)
    neumf = replace(neumf, lr=(args.finetune_lr if args.finetune_lr is not None else neumf.lr)
                    * scale)
    return PipelineConfig(
        factors=factors, n_layers=args.layers, dropout=args.dropout,
        pretrain=not args.no_pretrain,
        alpha=args.alpha, gmf=stage, mlp=stage, neumf=neumf, seed=args.seed,
        full_ranking_users=args.full_ranking_users or None, refit=args.refit,
        sparse=args.sparse,
    ), preset


#: Options ``--resume`` takes from the command line; every other one comes from the run.
RESUME_OPTIONS = ("quiet",)


def resume_args(args: argparse.Namespace) -> argparse.Namespace:
    """The options of the run ``args.resume`` names, as it was started (plus ``--quiet``).

    Raises:
        NcfError: not a run directory of this version of ncf, a finished run, or other
            options given beside ``--resume``.
    """
    from ncf.cli import build_parser
    from ncf.runs import read_json

    run = Path(args.resume)
    defaults = vars(build_parser().parse_args(["train"]))
    extra = sorted(k for k, v in vars(args).items()
                   if k not in ("resume", "run", "argv", *RESUME_OPTIONS) and v != defaults.get(k))
    if extra:
        raise NcfError(f"--resume continues a run with the options it was started with; "
                       f"--{extra[0].replace('_', '-')} cannot be changed")
    if not run.is_dir():
        raise NcfError(f"{run}: no such run directory")
    config = read_json(run / "config.json")
    stored = config.get("args") if isinstance(config, dict) else None
    if not isinstance(stored, dict) or not isinstance(config.get("split_fingerprint"), str):
        raise NcfError(f"{run}: this run cannot be resumed (its config.json records no options;"
                       " it was started by an older ncf)")
    if (run / "metrics.json").exists():
        raise NcfError(f"{run}: the run is complete (metrics.json is written); nothing to "
                       "resume")
    out = argparse.Namespace(**{**defaults, **stored})
    for key in ("run", "argv", *RESUME_OPTIONS):
        setattr(out, key, getattr(args, key, defaults.get(key)))
    out.out, out.resume = str(run), str(run)
    out.resume_config = config
    return out


def _given(value: int | None, plan: Any, key: str, default: int) -> int:
    """An option as given, else the plan's choice (else the CPU default)."""
    if value is not None:
        return value
    return default if plan is None else int(getattr(plan, key))


def check_model_options(args: argparse.Namespace) -> None:
    """The model options checked before any data is read or anything is written."""
    from ncf.pipeline import PipelineConfig

    for option, value in (("--epochs", args.epochs), ("--factors", args.factors)):
        if value is not None and value < 1:
            raise NcfError(f"{option} must be >= 1, got {value}")
    PipelineConfig(factors=args.factors or DEFAULT_FACTORS, n_layers=args.layers,
                   dropout=args.dropout, alpha=args.alpha)
    if args.factors is None:  # the rule may choose the GPU's size: its tower must fit too
        PipelineConfig(factors=GPU_FACTORS, n_layers=args.layers)


def tensorboard_logger(folder: str | None) -> Any:
    """``--tensorboard DIR``: a per-epoch callback writing TensorBoard logs, or ``None``."""
    if folder is None:
        return None
    from ncf.report import TensorBoardLog

    return TensorBoardLog(folder)


def cmd_train(args: argparse.Namespace) -> int:
    from ncf.distributed import init_from_env, launch, shutdown, world_from_env

    if args.resume is not None:
        args = resume_args(args)
    # options are checked before any data is read or anything is written
    check_model_options(args)
    _pipeline_config(args, args.batch_size, "cpu")
    device = resolve_device(args.device)
    if args.resume is not None:  # where and on how many processes it ran
        device = str(args.resume_config.get("device", device))
        args.nproc = int(args.resume_config.get("processes", 1))
    if args.nproc > 1 and world_from_env() == 1:
        if device.startswith("cuda"):
            import torch

            if args.nproc > torch.cuda.device_count():
                raise NcfError(f"--nproc {args.nproc}: only {torch.cuda.device_count()} GPU(s) "
                               "on this machine")
        argv = list(getattr(args, "argv", None) or sys.argv[1:])
        if args.resume is not None:
            argv = ["train", "--resume", args.resume, *(["--quiet"] if args.quiet else [])]
        return launch(args.nproc, _without_nproc(argv))
    dist = init_from_env(device)
    try:
        return _train(args, device if dist is None else dist.device, dist)
    finally:
        shutdown()


def _without_nproc(argv: list[str]) -> list[str]:
    """The command line a rank runs: ``argv`` without ``--nproc N``."""
    out, skip = [], False
    for a in argv:
        if skip:
            skip = False
        elif a == "--nproc":
            skip = True
        elif not a.startswith("--nproc="):
            out.append(a)
    return out


def _train(args: argparse.Namespace, device: str, dist: Any) -> int:
    from ncf.distributed import PEER_FAILED, PeerFailed, launched
    from ncf.interactions import lookup_raw
    from ncf.outputs import hold_output
    from ncf.pipeline import StageResult, resolve_sparse, run_pipeline
    from ncf.report import (
        all_interactions,
        finish_run,
        print_table,
        recommend_lines,
        save_stage,
        start_run,
    )
    from ncf.runs import discard_run_dir, new_run_dir, plan_run_dir, write_json
    from ncf.sources import resolve_training_data
    from ncf.split import split_fingerprint

    main = dist is None or dist.is_main
    world = 1 if dist is None else dist.world
    resuming = args.resume is not None
    if resuming:
        run_dir: Path | None = Path(args.resume)
    else:  # checked now, created once data is ready
        run_dir = plan_run_dir(args.out) if main else None
    created = False  # only a directory this run made is removed
    if run_dir is not None and main:
        hold_output(run_dir, what="run directory")  # one ncf process per run directory
    quiet = args.quiet or not main
    say = (lambda *a: None) if quiet else (lambda *a: print(*a, flush=True))
    log = tensorboard_logger(args.tensorboard) if main else None
    t0 = time.perf_counter()
    saved: list[str] = []
    try:
        def load() -> Any:
            return resolve_training_data(
                data=args.data, dataset=args.dataset, fmt=args.format, ratings=args.ratings,
                synth_ratings=args.synth_ratings, seed=args.seed, say=say,
            )

        if dist is None:
            data = load()
        else:  # rank 0 first: a download or a synthetic set is written once, then read
            data = load() if main else None
            dist.barrier()
            data = data if main else load()
            _injected_failure(dist.rank)
        split = data.split
        fingerprint = split_fingerprint(split)
        if resuming and fingerprint != args.resume_config["split_fingerprint"]:
            raise NcfError(f"{run_dir}: the data differ from those the run was started on "
                           f"({data.description}); it cannot be resumed on them")
        plan = training_plan(len(split.train), args.negatives, device, args.batch_size,
                             factors=args.factors, epochs=args.epochs,
                             early_stopping=args.early_stopping)
        config, preset = _pipeline_config(args, plan.batch_size, device, plan)
        config = replace(config, sparse=resolve_sparse(args.sparse, split.train.n_users, device))
        if args.user is not None:
            lookup_raw(split.train.user_raw, args.user, "user")  # known before hours of training
        if resuming:  # the same threads: a sum over other threads can round differently
            args.threads = args.resume_config.get("threads") or args.threads
        threads = set_threads(args.threads, plan.batch_size // world, world)
        if main and not resuming:
            assert run_dir is not None
            created = not os.path.lexists(run_dir)
            run_dir = new_run_dir(run_dir)
        procs = "" if world == 1 else f" x {world} processes ({dist.backend})"
        say(f"data: {data.description}")
        say(f"      {split.train.n_users:,} users, {split.train.n_items:,} items, "
            f"{len(split.train):,} train / {len(split.test):,} test interactions "
            f"({time.perf_counter() - t0:.1f}s)")
        say(f"device {device_name(device)}{procs}; {threads} torch thread(s)")
        say(plan.describe())

        progress = _Progress(quiet, plan.epochs)
        def on_epoch(stage: str, record: Any) -> None:
            progress.line(stage, record)
            if log is not None:
                log(stage, record)

        def save(result: StageResult) -> None:
            assert run_dir is not None
            save_stage(run_dir, result, seen)
            saved.append(result.name)

        seen = all_interactions(split)
        if main and resuming:
            assert run_dir is not None
            record = dict(args.resume_config)
            record["resumed"] = [*record.get("resumed", []),
                                 time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())]
            write_json(run_dir / "config.json", record)
            say(f"resuming {printable(run_dir)} from its checkpoints")
        elif main:
            assert run_dir is not None
            start_run(run_dir, config, data, seen, extra={
                "finetune": preset, "threads": threads, "argv": sys.argv[1:], "device": device,
                "processes": world, "batch_plan": plan.as_dict(),
                "split_fingerprint": fingerprint, "args": _recorded_args(args)})
        if dist is not None:  # every rank reads the checkpoints rank 0 writes (and names)
            run_dir_of_rank0 = dist.gather_text(str(run_dir) if main else "")[0]
            checkpoints = Path(run_dir_of_rank0) / "checkpoints"
        else:
            assert run_dir is not None
            checkpoints = run_dir / "checkpoints"
        results = run_pipeline(split, config, on_epoch=on_epoch, progress=progress.bar,
                               device=device, on_result=save if main else None, dist=dist,
                               checkpoints=checkpoints)
    except PeerFailed:
        if main and not _keep(run_dir, saved, resuming):
            discard_run_dir(run_dir, created)  # type: ignore[arg-type]
        try:  # give the launcher time to see the rank that failed first and stop this one
            time.sleep(PEER_GRACE_SECONDS)
        except KeyboardInterrupt:
            return 130
        return PEER_FAILED  # the rank that failed says why
    except KeyboardInterrupt:
        if main and not _keep(run_dir, saved, resuming):
            discard_run_dir(run_dir, created)  # type: ignore[arg-type]
        elif main and run_dir is not None and _has_checkpoints(run_dir):
            print(f"ncf: the run can go on from its last epoch: ncf train --resume "
                  f"{printable(run_dir)}", file=sys.stderr)
        if launched():
            return 130  # stopped by the launcher: the failing rank (or the launcher) says why
        raise
    except BaseException:
        if main and not _keep(run_dir, saved, resuming):
            discard_run_dir(run_dir, created)  # type: ignore[arg-type]  # --out can be reused
        raise
    finally:
        if log is not None:
            log.close()
    if not main:
        return 0
    assert run_dir is not None
    finish_run(run_dir, results)
    print_table(results)
    user = args.user
    if user is None:
        user = data.split.test.user_raw[int(data.split.test.user_ids[0])]
    for line in recommend_lines(run_dir, user, k=10):
        print(line)
    say(f"run directory: {printable(run_dir)}  ({time.perf_counter() - t0:.0f}s in all)")
    return 0


def _has_checkpoints(run_dir: Path) -> bool:
    folder = run_dir / "checkpoints"
    return folder.is_dir() and any(p.suffix == ".npz" for p in folder.iterdir())


def _keep(run_dir: Path | None, saved: list[str], resuming: bool) -> bool:
    """Whether a failed run keeps its directory: it was resumed, a stage finished, or an
    epoch's checkpoint was written (``ncf train --resume`` goes on from it)."""
    return run_dir is None or resuming or bool(saved) or _has_checkpoints(run_dir)


def _recorded_args(args: argparse.Namespace) -> dict[str, Any]:
    """The options of a run as ``--resume`` replays them (paths made absolute)."""
    out = {k: v for k, v in vars(args).items()
           if k not in ("run", "argv", "resume", "resume_config", "quiet")}
    if out.get("data") is not None:
        out["data"] = str(Path(out["data"]).absolute())
    return out


def _injected_failure(rank: int) -> None:
    """Fault injection for tests of distributed failures: ``NCF_FAIL_RANK=R`` makes rank R
    fail once its data are loaded."""
    if os.environ.get("NCF_FAIL_RANK") == str(rank):
        raise NcfError(f"rank {rank}: failure injected by NCF_FAIL_RANK")


def cmd_evaluate(args: argparse.Namespace) -> int:
    from ncf.report import evaluate_run

    out = evaluate_run(Path(args.run_dir), data=args.data, fmt=args.format,
                       full_users="run" if args.full_ranking_users is None
                       else args.full_ranking_users or None)
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

