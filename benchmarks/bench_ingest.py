"""Ingest benchmark: Netflix-format ratings to a leave-one-out split, against the notebook way.

Generates a synthetic Netflix Prize set (Kaggle's four ``combined_data_*.txt`` files) with
``ncf.synth``, then times, each in a fresh child process so that peak RSS (``VmHWM``) is
clean:

(a) ours: ``ncf.datasets.read_netflix`` + ``ncf.split.leave_one_out`` (no torch imported);
(b) the popular Kaggle notebooks: ``pandas.read_csv(header=None, names=["Cust_Id",
    "Rating"], usecols=[0, 1])`` of each file (``MovieID:`` lines come in with a NaN
    rating), then a Python loop spreading each movie id down to its ratings with
    ``np.full`` per movie, and the ``MovieID:`` rows dropped. (The notebooks grow the
    array with ``np.append`` in the loop, which is quadratic; here the pieces are joined
    once, which only favours the baseline. It parses no dates.)
(c) an idle child: Python + numpy (+ pandas for the baseline), the floor of both RSS.

Also times the sampled evaluation of 6,040 users x 100 candidates from a score matrix.

Usage: python benchmarks/bench_ingest.py [--ratings 10M] [--keep DIR] [--threads N]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TARGET_RATE = 3e6  # ratings per second, end to end
TARGET_RSS = 3.0  # peak RSS above the idle child / final arrays


def _peak_rss() -> int:
    """Peak resident set size of this process in bytes (VmHWM, else ru_maxrss)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _child_idle(data: Path, with_pandas: bool) -> dict:
    import numpy  # noqa: F401

    if with_pandas:
        import pandas  # noqa: F401
    return {"peak_rss": _peak_rss()}


def _child_ours(data: Path) -> dict:
    from ncf.datasets import read_netflix
    from ncf.split import leave_one_out

    def nbytes(*parts) -> int:
        return sum(a.nbytes for x in parts if x is not None
                   for a in (x.user_ids, x.item_ids, x.ratings, x.timestamps) if a is not None)

    start, cpu = time.perf_counter(), time.process_time()
    x = read_netflix(data)
    read_s = time.perf_counter() - start
    read_rss = _peak_rss()
    split = leave_one_out(x, validation=True)
    wall = time.perf_counter() - start
    assert "torch" not in sys.modules
    return {"ratings": len(x), "wall_s": wall, "cpu_s": time.process_time() - cpu,
            "read_s": read_s, "read_rss": read_rss,
            "peak_rss": _peak_rss(), "final_bytes": nbytes(x),
            "split_bytes": nbytes(split.train, split.validation, split.test)}


def _child_baseline(data: Path) -> dict:
    import numpy as np
    import pandas as pd

    start, cpu = time.perf_counter(), time.process_time()
    frames = [pd.read_csv(p, header=None, names=["Cust_Id", "Rating"], usecols=[0, 1])
              for p in sorted(data.glob("combined_data_*.txt"))]
    df = pd.concat(frames, ignore_index=True)
    del frames
    heads = np.flatnonzero(df["Rating"].isna().to_numpy())
    ends = np.r_[heads[1:], len(df)]
    pieces = []
    for h, e in zip(heads, ends, strict=True):  # the notebooks' loop, one step per movie
        movie_id = int(str(df["Cust_Id"].iat[h]).rstrip(":"))
        pieces.append(np.full(e - h - 1, movie_id))
    movie = np.concatenate(pieces)
    df = df[df["Rating"].notna()].copy()
    df["Movie_Id"] = movie
    df["Cust_Id"] = df["Cust_Id"].astype(int)
    wall = time.perf_counter() - start
    return {"ratings": len(df), "wall_s": wall, "cpu_s": time.process_time() - cpu,
            "peak_rss": _peak_rss(),
            "final_bytes": int(df.memory_usage(deep=True).sum())}


def _spawn(kind: str, data: Path, threads: int) -> dict:
    env = {**os.environ, **{k: str(threads) for k in (
        "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")}}
    done = subprocess.run([sys.executable, __file__, "--child", kind, "--keep", str(data)],
                          capture_output=True, text=True, env=env)
    if done.returncode:
        raise SystemExit(f"child {kind} failed:\n{done.stderr}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _time_evaluation() -> float:
    import numpy as np

    from ncf.evaluation import evaluate_sampled

    rng = np.random.default_rng(0)
    n_users, n_items = 6_040, 3_706
    scores = rng.random((n_users, n_items), dtype=np.float32)
    users = np.arange(n_users)
    positives = rng.integers(0, n_items, n_users)
    negatives = rng.integers(0, n_items, (n_users, 99))

    def score_fn(u: np.ndarray, items: np.ndarray) -> np.ndarray:
        return scores[u[:, None], items]

    evaluate_sampled(score_fn, users, positives, negatives, k=10)  # warm-up
    start = time.perf_counter()
    evaluate_sampled(score_fn, users, positives, negatives, k=10)
    return time.perf_counter() - start


def _mb(n: float) -> str:
    return f"{n / 2**20:,.0f} MiB"


def _report(ours: dict, base: dict | None, idle: dict, idle_pd: dict | None) -> None:
    rows = [("ours (read_netflix + leave_one_out)", ours, idle)]
    if base is not None and idle_pd is not None:
        rows.append(("notebook (pandas + per-movie loop)", base, idle_pd))
    for name, r, floor in rows:
        rate = r["ratings"] / r["wall_s"]
        above = (r["peak_rss"] - floor["peak_rss"]) / r["final_bytes"]
        print(f"{name}\n  {r['ratings']:,} ratings in {r['wall_s']:.2f} s = {rate / 1e6:.2f}M/s"
              f" (CPU {r['cpu_s']:.2f} s = {r['ratings'] / r['cpu_s'] / 1e6:.2f}M/s)"
              f"\n  peak RSS {_mb(r['peak_rss'])} (idle child {_mb(floor['peak_rss'])}), "
              f"final arrays {_mb(r['final_bytes'])}, "
              f"(peak - idle) / final = {above:.2f}")
    if "read_s" in ours:
        held = ours["final_bytes"] + ours["split_bytes"]
        print(f"  ours, reading alone: {ours['read_s']:.2f} s, peak RSS "
              f"{_mb(ours['read_rss'])}; at the end the ratings ({_mb(ours['final_bytes'])}) "
              f"and the split ({_mb(ours['split_bytes'])}) are both held: "
              f"(peak - idle) / both = {(ours['peak_rss'] - idle['peak_rss']) / held:.2f}")
    if base is not None:
        print(f"ratios (notebook / ours): time {base['wall_s'] / ours['wall_s']:.1f}x, "
              f"CPU {base['cpu_s'] / ours['cpu_s']:.1f}x, "
              f"peak RSS {base['peak_rss'] / ours['peak_rss']:.1f}x")
    rate = ours["ratings"] / ours["wall_s"]
    rss = (ours["read_rss"] - idle["peak_rss"]) / ours["final_bytes"]
    print(f"target >= {TARGET_RATE / 1e6:.0f}M ratings/s end to end: "
          f"{'PASS' if rate >= TARGET_RATE else 'FAIL'} ({rate / 1e6:.2f}M/s)")
    print(f"target peak RSS of reading (above idle) <= {TARGET_RSS:.0f}x its arrays: "
          f"{'PASS' if rss <= TARGET_RSS else 'FAIL'} ({rss:.2f}x; "
          f"{ours['read_rss'] / ours['final_bytes']:.2f}x counting the interpreter)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ratings", default="10M", help="synthetic ratings (e.g. 1M, 10M)")
    ap.add_argument("--keep", help="folder for the synthetic files, reused if present")
    ap.add_argument("--threads", type=int, default=1, help="BLAS / torch threads")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--skip-baseline", action="store_true", help="time ours only")
    ap.add_argument("--child", choices=["ours", "baseline", "idle", "idle-pandas"],
                    help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        data = Path(args.keep)
        result = {"ours": lambda: _child_ours(data), "baseline": lambda: _child_baseline(data),
                  "idle": lambda: _child_idle(data, False),
                  "idle-pandas": lambda: _child_idle(data, True)}[args.child]()
        print(json.dumps(result))
        return

    from ncf.prepare import parse_count
    from ncf.synth import write_synth_netflix

    n = parse_count(args.ratings)
    tmp = None
    if args.keep:
        data = Path(args.keep)
    else:
        tmp = tempfile.TemporaryDirectory(prefix="bench-ingest-")
        data = Path(tmp.name)
    if not (data / "combined_data_4.txt").exists():
        start = time.perf_counter()
        info = write_synth_netflix(data, n, seed=args.seed)
        size = sum(p.stat().st_size for p in info.files)
        print(f"synth: {info.n_ratings:,} ratings, {info.n_users:,} users, {info.n_items:,} "
              f"items, {size / 2**20:,.0f} MiB in {time.perf_counter() - start:.1f} s")
    try:
        ours = _spawn("ours", data, args.threads)
        idle = _spawn("idle", data, args.threads)
        base = idle_pd = None
        if not args.skip_baseline:
            base = _spawn("baseline", data, args.threads)
            idle_pd = _spawn("idle-pandas", data, args.threads)
        _report(ours, base, idle, idle_pd)
        try:
            import torch

            torch.set_num_threads(args.threads)
        except ImportError:
            pass
        print(f"evaluate_sampled, 6,040 users x 100 candidates: "
              f"{_time_evaluation() * 1e3:.1f} ms")
    finally:
        if tmp is not None:
            tmp.cleanup()


if __name__ == "__main__":
    main()
