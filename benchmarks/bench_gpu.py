"""GPU benchmark: NCF training speed from one step to the whole pipeline, and quality, on CUDA.

    PYTHONPATH=src python benchmarks/bench_gpu.py [--data-dir ../shared/data] [--budget 420]

Prints, on one GPU, in this order (each section says what it measured and how long it took):

1. training-step samples/s of NeuMF-8 at Netflix shape (480,189 users x 17,770 items) by batch
   size: ours with dense embedding updates (the GPU default), ours with row-wise (lazy) updates,
   autograd + ``torch.optim.Adam(fused=True)``, and the same with bf16 autocast of the model;
2. end-to-end epochs at Netflix scale: ~100M random Netflix-shaped ratings (built on the GPU),
   NeuMF-8 with the automatic GPU batch and everything ``ncf.training.train`` does in an epoch
   (device-built negatives, shuffling, steps), in samples/s (target: >= 100M/s, an epoch of
   the whole Prize's 495M samples in <= 5 s);
3. end-to-end epochs on a 20M-rating synthetic Netflix set (in memory) at batch 65,536 and at
   the automatic batch;
4. the main job, ``ncf train --device cuda`` on the default 1M synthetic set: wall time, each
   stage's training seconds (target: <= 30 s of training in all) and test HR@10 / NDCG@10
   against the CPU defaults (target: within 0.01);
5. ml-100k (the paper's benchmark files) on cuda, seed 0: test HR@10 / NDCG@10 beside the CPU
   figures.

Sections that would not fit in ``--budget`` seconds are skipped with a line saying so; a
section that fails prints its error and the others still run. Without a GPU the script stops
at once with one line; ``--smoke`` runs every section at a tiny size on the CPU instead (the
same code paths, epochs built by the device sampler), to check the script itself. The real
data sets are read from ``--data-dir``; on a machine where they are elsewhere, point it there
(section 5 is skipped, saying where it looked, when they are missing).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

#: the CPU defaults' test metrics on the 1M main-job set and on ml-100k, seed 0, as measured
#: with numpy 2.4.6 and torch 2.13.0 (NOTES.md: MLP and NeuMF move by ~0.01 between
#: environments with the same code; GMF does not)
CPU_MAIN_JOB = {"gmf": 0.5694, "mlp": 0.5790, "neumf": 0.5928}
CPU_ML100K = {"gmf": 0.6002, "mlp": 0.5652, "neumf": 0.6076}
NETFLIX = (480_189, 17_770, 100_480_507)  # users, movies, ratings of the Prize
DEVICE = "cuda"
SMOKE = False


def say(*args: object) -> None:
    print(*args, flush=True)


def sync() -> None:
    if DEVICE == "cuda":
        torch.cuda.synchronize()


def timed_steps(step: Callable[[int], None], seconds: float) -> float:
    """Steps per second of ``step(i)``, measured with the GPU synchronised at both ends."""
    for i in range(3):  # warm-up: allocator, cuBLAS handles, kernels
        step(i)
    sync()
    t0, n = time.perf_counter(), 10
    for i in range(n):
        step(i)
    sync()
    per_step = (time.perf_counter() - t0) / n
    n = max(10, int(seconds / max(per_step, 1e-6)))
    t0 = time.perf_counter()
    for i in range(n):
        step(i)
    sync()
    return n / (time.perf_counter() - t0)


def make_step(variant: str, model: torch.nn.Module, u: torch.Tensor, i: torch.Tensor,
              y: torch.Tensor) -> Callable[[int], None]:
    """One training step on batch ``k % 8`` of ``(u, i, y)`` the way ``variant`` trains."""
    from ncf.optim import Adam

    if variant.startswith("ours"):
        ours = Adam(model.named_parameters(), lr=1e-3)

        def step(k: int) -> None:
            _, grads = model.loss_grads(u[k % 8], i[k % 8], y[k % 8])  # type: ignore[operator]
            ours.step_with(grads)

        return step
    opt = torch.optim.Adam(model.parameters(), lr=1e-3, fused=DEVICE == "cuda")
    bf16 = variant.endswith("bf16")

    def autograd_step(k: int) -> None:
        opt.zero_grad(set_to_none=True)
        with torch.autocast(DEVICE, dtype=torch.bfloat16, enabled=bf16):
            logits = model(u[k % 8], i[k % 8])
        torch.nn.functional.binary_cross_entropy_with_logits(logits.float(), y[k % 8]).backward()
        opt.step()

    return autograd_step


def step_rates(batches: list[int], seconds: float) -> None:
    from ncf.models import NeuMF

    n_users, n_items, _ = (2000, 300, 0) if SMOKE else NETFLIX
    say("\n== 1. training step, NeuMF-8 (tower 64-32-16-8), "
        f"{n_users:,} users x {n_items:,} items ==")
    for batch in batches:
        gen = torch.Generator(device=DEVICE).manual_seed(0)
        u = torch.randint(0, n_users, (8, batch), generator=gen, device=DEVICE)
        i = torch.randint(0, n_items, (8, batch), generator=gen, device=DEVICE)
        y = (torch.rand((8, batch), generator=gen, device=DEVICE) < 0.2).float()
        rates = {}
        for variant in ("ours dense", "ours rows", "autograd fused Adam", "autograd bf16"):
            torch.manual_seed(0)
            model = NeuMF(n_users, n_items, 8, 3, sparse=variant == "ours rows").to(DEVICE)
            rates[variant] = timed_steps(make_step(variant, model, u, i, y), seconds) * batch
        say(f"batch {batch:7,d}: " + "; ".join(f"{k} {v / 1e6:6.1f}M/s" for k, v in rates.items()))


def random_netflix(n_users: int, n_items: int, n_ratings: int, seed: int = 0) -> object:
    """~``n_ratings`` distinct (user, item) pairs with Netflix-like skew, built on the GPU."""
    from ncf.interactions import Interactions

    gen = torch.Generator(device=DEVICE).manual_seed(seed)
    m = int(n_ratings * 1.08)  # duplicates are dropped below
    # skewed activity and popularity: a power of a uniform draw concentrates on low ids
    users = (n_users * torch.rand(m, generator=gen, device=DEVICE) ** 2).long()
    items = (n_items * torch.rand(m, generator=gen, device=DEVICE) ** 3).long()
    keys = torch.unique(users * n_items + items)[:n_ratings]
    u = (keys // n_items).to(torch.int32).cpu().numpy()
    i = (keys % n_items).to(torch.int32).cpu().numpy()
    return Interactions(u, i, None, None, n_users, n_items, np.arange(n_users), np.arange(n_items))


def epochs_of(data: object, batch: int, lr_scale: float, label: str, epochs: int = 2) -> None:
    """Train NeuMF-8 on ``data`` for ``epochs`` epochs (no validation) and print each."""
    from ncf.models import NeuMF
    from ncf.training import TrainConfig, train

    torch.manual_seed(0)
    model = NeuMF(data.n_users, data.n_items, 8, 3)  # type: ignore[attr-defined]
    samples = len(data) * 5  # type: ignore[arg-type]
    warmup = max(1, math.ceil(samples / batch) // 5) if lr_scale > 1 else 0
    cfg = TrainConfig(epochs=epochs, batch_size=batch, lr=0.001 * lr_scale, device=DEVICE,
                      warmup_steps=warmup, sampler="device")
    t0 = time.perf_counter()
    history = train(model, data, None, cfg)  # type: ignore[arg-type]
    sync()
    total = time.perf_counter() - t0
    for r in history.records:
        say(f"{label}: batch {batch:,}, epoch {r.epoch}: {samples:,} samples in {r.seconds:.2f} s "
            f"= {samples / r.seconds / 1e6:.1f}M samples/s (loss {r.loss:.4f})")
    memory = torch.cuda.max_memory_allocated() / 2**30 if DEVICE == "cuda" else 0.0
    say(f"{label}: {total:.1f} s for {epochs} epochs, setup included; "
        f"peak GPU memory {memory:.1f} GiB")


def netflix_epochs() -> None:
    from ncf.cli.train import training_plan

    n_users, n_items, n_ratings = (5000, 500, 100_000) if SMOKE else NETFLIX
    say(f"\n== 2. end-to-end epochs at Netflix scale: {n_ratings:,} random Netflix-shaped "
        "ratings ==")
    t0 = time.perf_counter()
    data = random_netflix(n_users, n_items, n_ratings)
    say(f"built {len(data):,} ratings in {time.perf_counter() - t0:.1f} s")  # type: ignore
    plan = training_plan(len(data), 4, "cuda")  # type: ignore[arg-type]  # the GPU plan, also in a smoke run
    epochs_of(data, plan.batch_size, plan.lr_scale, "netflix-scale")


def synth_epochs() -> None:
    from ncf.cli.train import training_plan
    from ncf.interactions import Interactions
    from ncf.synth import synth_netflix

    say("\n== 3. end-to-end epochs on 20M synthetic Netflix-format ratings (in memory) ==")
    t0 = time.perf_counter()
    s = synth_netflix(50_000 if SMOKE else 20_000_000, seed=0)
    data = Interactions.from_raw(s.customer, s.movie)
    say(f"generated {len(data):,} ratings, {data.n_users:,} users, {data.n_items:,} items in "
        f"{time.perf_counter() - t0:.1f} s")
    plan = training_plan(len(data), 4, "cuda")
    epochs_of(data, 4096 if SMOKE else 65_536, 1.0, "synth-20M")
    if plan.batch_size != 65_536:
        epochs_of(data, plan.batch_size, plan.lr_scale, "synth-20M")


def ncf_train(args: list[str], tmp: Path) -> tuple[dict, float, str]:
    """Run ``python -m ncf train ARGS --out TMP/run``: its metrics, wall time and header."""
    out = tmp / f"run-{time.monotonic_ns()}"
    env = {**os.environ, "NCF_CACHE": str(tmp / "cache")}
    t0 = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "ncf", "train", *args, "--out", str(out)],
                          capture_output=True, text=True, env=env)
    wall = time.perf_counter() - t0
    if done.returncode:
        raise RuntimeError(f"ncf train failed ({done.returncode}): {done.stderr.strip()}")
    header = "\n".join(ln for ln in done.stdout.splitlines()[:4])  # data, sizes, device, plan
    return json.loads((out / "metrics.json").read_text()), wall, header


def report(metrics: dict, reference: dict[str, float], wall: float, header: str) -> None:
    say(header)
    train_s = sum(m["train_seconds"] for m in metrics.values())
    say(f"wall {wall:.1f} s (data, training, evaluation, writing); training {train_s:.1f} s: "
        + ", ".join(f"{k} {m['train_seconds']:.1f} s" for k, m in metrics.items()))
    for name, m in metrics.items():
        s = m["sampled"]
        ref = reference.get(name)
        diff = "" if ref is None else f" (CPU {ref:.4f}, {s['hr'] - ref:+.4f})"
        say(f"  {name:5s} test HR@10 {s['hr']:.4f}{diff}  NDCG@10 {s['ndcg']:.4f}  "
            f"full HR@10 {m['full']['hr']:.4f}  best epoch {m['best_epoch']}")


def main_job(tmp: Path) -> None:
    say("\n== 4. the main job: ncf train --device cuda (1M synthetic ratings, defaults) ==")
    size = ["--synth-ratings", "20k", "--epochs", "2"] if SMOKE else []
    # factors 16 as on the CPU (the rule's GPU size is 64): the batch plan is what is compared
    metrics, wall, header = ncf_train(["--device", DEVICE, "--factors", "16", *size], tmp)
    report(metrics, CPU_MAIN_JOB, wall, header)


def ml100k(tmp: Path, data_dir: Path) -> None:
    say("\n== 5. ml-100k benchmark files on cuda, seed 0 ==")
    path = data_dir / "ncf" / "ml-100k.train.rating"
    if not path.exists():
        say(f"skipped: {path} not found (--data-dir)")
        return
    size = ["--epochs", "1"] if SMOKE else []
    metrics, wall, header = ncf_train(["--data", str(path), "--device", DEVICE, "--factors",
                                       "16", *size], tmp)
    report(metrics, CPU_ML100K, wall, header)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data-dir", default=str(Path(__file__).resolve().parents[1] / ".." /
                                              "shared" / "data"))
    ap.add_argument("--budget", type=float, default=420.0, help="seconds for all sections")
    ap.add_argument("--step-seconds", type=float, default=1.5)
    ap.add_argument("--batches", default="16384,65536,262144")
    ap.add_argument("--smoke", action="store_true", help="tiny sizes on the CPU: checks the "
                    "script, measures nothing")
    args = ap.parse_args()
    global DEVICE, SMOKE
    if args.smoke:
        DEVICE, SMOKE = "cpu", True
        args.batches, args.step_seconds = "256,1024", 0.2
    elif not torch.cuda.is_available():
        print(f"bench_gpu: no CUDA device is visible to torch {torch.__version__}: run it on a "
              "machine with a GPU", file=sys.stderr)
        return 2
    t_start = time.perf_counter()
    if SMOKE:
        say(f"torch {torch.__version__}, smoke run on the CPU: these figures mean nothing")
    else:
        say(f"torch {torch.__version__}, {torch.cuda.get_device_name()}, "
            f"{torch.cuda.get_device_properties(0).total_memory / 2**30:.0f} GiB")
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        sections: list[tuple[str, float, Callable[[], None]]] = [
            ("steps", 60, lambda: step_rates([int(b) for b in args.batches.split(",")],
                                              args.step_seconds)),
            ("netflix", 90, netflix_epochs),
            ("synth-20M", 90, synth_epochs),
            ("main job", 90, lambda: main_job(tmp)),
            ("ml-100k", 60, lambda: ml100k(tmp, Path(args.data_dir))),
        ]
        for name, need, run in sections:
            left = args.budget - (time.perf_counter() - t_start)
            if left < need:
                say(f"\n== {name}: skipped, {left:.0f} s of the budget left (needs ~{need:.0f})")
                continue
            t0 = time.perf_counter()
            try:
                run()
            except Exception:  # report and go on: one broken section must not hide the rest
                say(f"{name} FAILED:\n{traceback.format_exc()}")
            if DEVICE == "cuda":
                torch.cuda.empty_cache()
            say(f"({name}: {time.perf_counter() - t0:.1f} s)")
    say(f"\ntotal {time.perf_counter() - t_start:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
