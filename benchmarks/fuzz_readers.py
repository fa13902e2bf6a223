"""The long fuzzing campaign: every reader of ``tests/test_fuzz_readers.py``, 100,000 examples
or more in all, random (not the fixed sequence CI runs).

Runs that test module in a child pytest with ``NCF_FUZZ_EXAMPLES`` set to the examples per
reader, then prints the examples each reader ran, the total, the wall time and the verdict
(a failure is printed by hypothesis, shrunk to its smallest input).

Usage: python benchmarks/fuzz_readers.py [--examples 100000] [--seed N]
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
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TEST = ROOT / "tests" / "test_fuzz_readers.py"


def _targets() -> int:
    """How many readers the test module fuzzes (its parametrised cases)."""
    listing = subprocess.run(
        [sys.executable, "-m", "pytest", "--collect-only", "-p", "no:cacheprovider",
         str(TEST), "-k", "raise_only"], capture_output=True, text=True, cwd=ROOT, check=True)
    return sum(1 for line in listing.stdout.splitlines() if "::" in line)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, default=100_000, help="examples in all")
    parser.add_argument("--seed", type=int, help="hypothesis seed (default: random)")
    args = parser.parse_args()
    targets = _targets()
    per_target = math.ceil(args.examples / targets)
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "counts.json"
        env = {k: v for k, v in os.environ.items() if k != "CI"}  # CI fixes the sequence
        env.update(NCF_FUZZ_EXAMPLES=str(per_target), NCF_FUZZ_REPORT=str(report))
        cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(TEST),
               "-k", "raise_only", "-W", "ignore::UserWarning"]
        if args.seed is not None:
            cmd.append(f"--hypothesis-seed={args.seed}")
        print(f"fuzzing {targets} readers, {per_target:,} examples each", flush=True)
        start = time.perf_counter()
        done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
        seconds = time.perf_counter() - start
        counts = json.loads(report.read_text()) if report.exists() else {}
    for name, n in sorted(counts.items()):
        print(f"  {name:<24} {n:>9,} examples")
    total = sum(counts.values())
    verdict = "nothing found" if done.returncode == 0 else "FAILURES (below)"
    print(f"total {total:,} examples in {seconds:,.0f} s ({seconds / 60:.1f} min, "
          f"{total / seconds:,.0f} examples/s): {verdict}")
    if done.returncode != 0:
        print(done.stdout[-20_000:], done.stderr[-5_000:], sep="\n")
    return done.returncode


if __name__ == "__main__":
    sys.exit(main())
