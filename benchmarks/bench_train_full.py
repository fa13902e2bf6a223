"""NeuMF on a Netflix-sized split: peak memory, samples/s, seconds per epoch, evaluation.

    python benchmarks/bench_train_full.py --data PREPARED_OR_RAW [--epochs 1] [--threads 1]
        [--batch-size 16384] [--steps N]

Trains NeuMF (predictive factors 8, the paper's tower 64-32-16-8, sparse embedding updates)
with Adam on the given data; ``--steps N`` stops after N steps and projects the epoch time
from the measured rate instead of completing it. Then evaluates under the paper's protocol
(every test user) and full ranking on a seeded sample of users, with the projected time for
all of them. Prints peak RSS (VmHWM). Target on a 2-core, 24 GiB machine with 100M ratings:
peak RSS at most 16 GiB, at least one full epoch completed and evaluated.
"""

from __future__ import annotations

import argparse
import time

import torch


class Enough(Exception):
    """Raised from the progress callback once ``--steps`` steps are done."""


def peak_rss_gib() -> float:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 2**20
    return float("nan")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", required=True, help="prepared folder or raw Netflix files")
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--batch-size", type=int, default=16384)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--steps", type=int, default=0, help="stop after N steps and project")
    ap.add_argument("--full-users", type=int, default=2000)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    from ncf.ingest import load_split
    from ncf.models import NeuMF
    from ncf.pipeline import test_metrics, validation_target
    from ncf.training import TrainConfig, train

    t0 = time.perf_counter()
    split, _, _ = load_split(args.data)
    n_pos = len(split.train)
    print(f"data: {n_pos:,} train positives, {split.train.n_users:,} users, "
          f"{split.train.n_items:,} items, loaded in {time.perf_counter() - t0:.1f}s; "
          f"peak RSS {peak_rss_gib():.2f} GiB")
    torch.manual_seed(0)
    model = NeuMF(split.train.n_users, split.train.n_items, factors=8, n_layers=3, sparse=True)
    samples_per_epoch = n_pos * 5
    steps = {"n": 0}

    def progress(done: int, total: int) -> None:
        steps["n"] = done
        if args.steps and done >= args.steps:
            raise Enough

    target = validation_target(split)
    cfg = TrainConfig(epochs=args.epochs, batch_size=args.batch_size, lr=0.001)
    t1 = time.perf_counter()
    try:
        history = train(model, split.train, target, cfg, progress=progress,
                        on_epoch=lambda r: print(
                            f"epoch {r.epoch}: loss {r.loss:.4f}  val HR@10 {r.hr:.4f} "
                            f"NDCG@10 {r.ndcg:.4f}  train {r.seconds:.0f}s "
                            f"({samples_per_epoch / r.seconds:,.0f} samples/s)  "
                            f"validation {r.eval_seconds:.0f}s", flush=True))
        done_epoch = True
    except Enough:
        history, done_epoch = None, False
    elapsed = time.perf_counter() - t1
    if not done_epoch:
        rate = steps["n"] * args.batch_size / elapsed
        print(f"{steps['n']} steps of {args.batch_size}: {rate:,.0f} samples/s; projected "
              f"{samples_per_epoch / rate:,.0f}s per epoch of {samples_per_epoch:,} samples")
    print(f"peak RSS after training: {peak_rss_gib():.2f} GiB")
    if history is not None:
        t2 = time.perf_counter()
        m = test_metrics(model, split, full_users=args.full_users)
        s, f = m["sampled"], m["full"]
        print(f"test, sampled protocol ({s['n_users']:,} users): HR@10 {s['hr']:.4f} "
              f"NDCG@10 {s['ndcg']:.4f} in {s['seconds']:.0f}s")
        print(f"test, full ranking ({f['n_users']:,} users sampled): HR@10 {f['hr']:.4f} "
              f"NDCG@10 {f['ndcg']:.4f} in {f['seconds']:.0f}s; all users would take about "
              f"{f.get('estimated_seconds_all_users', f['seconds']):,.0f}s")
        print(f"evaluation {time.perf_counter() - t2:.0f}s; peak RSS {peak_rss_gib():.2f} GiB")


if __name__ == "__main__":
    main()
