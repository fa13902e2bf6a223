"""NeuMF training speed: samples/s by batch size, seconds per epoch, evaluation time.

Prints, for NeuMF with predictive factors 8 (the paper's tower 64-32-16-8):
- samples/s of a training step at batch 256 (the paper's) and at a large batch, with our
  hand-written gradients and, for comparison in the same run, with autograd + torch.optim.Adam;
- seconds per epoch (4 negatives per positive) on the ml-100k benchmark split and on a
  synthetic Netflix-format set of 1M ratings;
- the time to evaluate 943 users x 100 candidates under the paper's protocol.

    python benchmarks/bench_train.py [--threads 1] [--data-dir ../shared/data] [--skip-synth]

Targets on a 2-core machine: >= 250k samples/s at batch 256, >= 1M samples/s at batch >= 4096,
943 x 100 evaluation under 50 ms.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from ncf.evaluation import evaluate_sampled
from ncf.models import NeuMF
from ncf.optim import Adam
from ncf.sampling import KeySet
from ncf.training import TrainConfig, build_epoch, model_scorer, train


def step_rate(
    n_users: int, n_items: int, batch: int, autograd: bool, seconds: float = 3.0
) -> float:
    """Samples/s of training steps on random (user, item, label) batches."""
    torch.manual_seed(0)
    model = NeuMF(n_users, n_items, factors=8, n_layers=3)
    gen = torch.Generator().manual_seed(0)
    n = batch * 64
    u = torch.randint(0, n_users, (n,), generator=gen)
    i = torch.randint(0, n_items, (n,), generator=gen)
    y = (torch.rand(n, generator=gen) < 0.2).float()
    if autograd:
        opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    else:
        ours = Adam(model.named_parameters(), lr=1e-3)
    done, t0, b = 0, time.perf_counter(), 0
    while time.perf_counter() - t0 < seconds:
        s = (b % 64) * batch
        ub, ib, yb = u[s : s + batch], i[s : s + batch], y[s : s + batch]
        if autograd:
            opt.zero_grad(set_to_none=True)
            torch.nn.functional.binary_cross_entropy_with_logits(model(ub, ib), yb).backward()
            opt.step()
        else:
            _, grads = model.loss_grads(ub, ib, yb)
            ours.step_with(grads)
        done += batch
        b += 1
    return done / (time.perf_counter() - t0)


def epoch_seconds(train_x, batch: int) -> tuple[float, float]:  # type: ignore[no-untyped-def]
    """Seconds of one training epoch (sampling included) and of building the epoch alone."""
    torch.manual_seed(0)
    model = NeuMF(
        train_x.n_users, train_x.n_items, factors=8, n_layers=3, sparse=train_x.n_users > 100_000
    )
    t0 = time.perf_counter()
    keys = KeySet(train_x.keys(), train_x.n_items)
    build_epoch(
        train_x.user_ids.astype(np.int64),
        train_x.item_ids.astype(np.int64),
        keys,
        train_x.n_items,
        4,
        np.random.default_rng(0),
        torch.Generator().manual_seed(0),
    )
    t_build = time.perf_counter() - t0
    t0 = time.perf_counter()
    train(model, train_x, None, TrainConfig(epochs=1, batch_size=batch))
    return time.perf_counter() - t0, t_build


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument(
        "--data-dir", default=str(Path(__file__).resolve().parents[1] / ".." / "shared" / "data")
    )
    ap.add_argument("--skip-synth", action="store_true")
    ap.add_argument("--large-batch", type=int, default=8192)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {args.threads} thread(s)")

    print("\n== training step, NeuMF factors 8, 943 users x 1682 items ==")
    for batch in (256, args.large_batch):
        ours = step_rate(943, 1682, batch, autograd=False)
        ref = step_rate(943, 1682, batch, autograd=True)
        print(
            f"batch {batch:5d}: {ours:12,.0f} samples/s (autograd + torch Adam: {ref:10,.0f}; "
            f"x{ours / ref:.1f})"
        )

    from ncf.datasets import read_paper_split
    from ncf.split import holdout_validation

    paper = Path(args.data_dir) / "ncf" / "ml-100k.train.rating"
    split = None
    if paper.exists():
        split = holdout_validation(read_paper_split(paper))
        print(f"\n== ml-100k benchmark split: {len(split.train):,} train positives ==")
        for batch in (256, args.large_batch):
            sec, build = epoch_seconds(split.train, batch)
            print(
                f"batch {batch:5d}: {sec:6.2f} s/epoch ({5 * len(split.train) / sec:,.0f} "
                f"samples/s; epoch build {build:.2f} s)"
            )
        model = NeuMF(split.train.n_users, split.train.n_items, 8, 3).eval()
        t = split.test
        score = model_scorer(model)
        evaluate_sampled(score, t.user_ids, t.item_ids, split.test_negatives)  # warm-up
        runs = []
        for _ in range(5):
            t0 = time.perf_counter()
            evaluate_sampled(score, t.user_ids, t.item_ids, split.test_negatives)
            runs.append(time.perf_counter() - t0)
        print(
            f"evaluate {len(t)} users x 100 candidates: {1000 * min(runs):.1f} ms "
            f"(median {1000 * float(np.median(runs)):.1f} ms)"
        )
    else:
        print(f"\n(ml-100k paper files not found at {paper}: skipped)")

    if not args.skip_synth:
        from ncf.ingest import prepare_split
        from ncf.sources import synthetic_source

        with tempfile.TemporaryDirectory() as tmp:
            import os

            os.environ["NCF_CACHE"] = tmp
            src = synthetic_source(1_000_000, 0, print)
            split1m, _, _ = prepare_split(src, seed=0)
            print(
                f"\n== synthetic Netflix-format 1M: {len(split1m.train):,} train positives, "
                f"{split1m.train.n_users:,} users =="
            )
            for batch in (256, args.large_batch):
                sec, build = epoch_seconds(split1m.train, batch)
                print(
                    f"batch {batch:5d}: {sec:6.2f} s/epoch "
                    f"({5 * len(split1m.train) / sec:,.0f} samples/s; build {build:.2f} s)"
                )


if __name__ == "__main__":
    main()
