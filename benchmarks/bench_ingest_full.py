"""The whole Netflix Prize, prepared: ``ncf data prepare`` on 100M synthetic ratings.

Writes ``combined_data_1..4.txt`` with ``ncf data synth`` (about 2.5 min of CPU at 100M)
into a temporary folder (or ``--keep DIR``, reused when present), then runs the full
prepare (read, check, leave-one-out split, 99 candidates per held-out item, write) in a
child process and prints wall seconds per step, ratings per second and peak RSS (VmHWM).

Usage: python benchmarks/bench_ingest_full.py [--ratings 100M] [--keep DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TARGET_SECONDS = 45.0  # read + the prepared form, at 100M ratings
TARGET_RSS = 4 * 2**30


def _peak_rss() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _child(data: Path, out: Path) -> dict:
    from ncf.ingest import prepare_netflix

    start = time.perf_counter()
    _, options = prepare_netflix(data, out)
    return {"wall_s": time.perf_counter() - start, "steps": options["seconds"],
            "ratings": options["sizes"]["read"]["ratings"],
            "users": options["sizes"]["read"]["users"], "peak_rss": _peak_rss()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ratings", default="100M")
    ap.add_argument("--keep", help="folder for the synthetic files, reused if present")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(_child(Path(args.child[0]), Path(args.child[1]))))
        return
    from ncf.prepare import parse_count
    from ncf.synth import write_synth_netflix

    tmp = tempfile.mkdtemp(prefix="bench-ingest-full-")
    data = Path(args.keep) if args.keep else Path(tmp) / "data"
    try:
        if not (data / "combined_data_4.txt").exists():
            start = time.perf_counter()
            info = write_synth_netflix(data, parse_count(args.ratings), seed=args.seed)
            print(f"synth: {info.n_ratings:,} ratings, {info.n_users:,} users in "
                  f"{time.perf_counter() - start:.0f} s")
        size = sum(p.stat().st_size for p in data.glob("combined_data_*.txt"))
        done = subprocess.run([sys.executable, __file__, "--child", str(data),
                               str(Path(tmp) / "prepared")], capture_output=True, text=True,
                              env=dict(os.environ))
        if done.returncode:
            raise SystemExit(f"prepare failed:\n{done.stderr}")
        r = json.loads(done.stdout.strip().splitlines()[-1])
        steps = r["steps"]
        ingest = steps["read"] + steps["check"] + steps["write"]
        split = steps["split"] + steps["candidates"]
        print(f"{r['ratings']:,} ratings ({size / 2**30:.2f} GiB of text), {r['users']:,} users")
        print("steps (s): " + ", ".join(f"{k} {v:.1f}" for k, v in steps.items()))
        print(f"total {r['wall_s']:.1f} s = {r['ratings'] / r['wall_s'] / 1e6:.2f}M ratings/s; "
              f"ingest (read + check + write) {ingest:.1f} s = "
              f"{r['ratings'] / ingest / 1e6:.2f}M/s; split + candidates {split:.1f} s")
        print(f"peak RSS {r['peak_rss'] / 2**30:.2f} GiB")
        print(f"target ingest <= {TARGET_SECONDS:.0f} s: "
              f"{'PASS' if ingest <= TARGET_SECONDS else 'FAIL'}; whole prepare "
              f"{'PASS' if r['wall_s'] <= TARGET_SECONDS else 'FAIL'} ({r['wall_s']:.1f} s)")
        print(f"target peak RSS <= 4 GiB: {'PASS' if r['peak_rss'] <= TARGET_RSS else 'FAIL'}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
