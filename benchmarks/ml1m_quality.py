"""MovieLens-1M (ratings without timestamps): GMF, MLP, NeuMF at the defaults and EASE^R, on
the same random leave-one-out splits, one per seed; prints the table of the README.

    PYTHONPATH=src python benchmarks/ml1m_quality.py --device cuda            # GPU defaults
    PYTHONPATH=src python benchmarks/ml1m_quality.py --device cpu             # CPU defaults
    PYTHONPATH=src python benchmarks/ml1m_quality.py --device cpu --emulate-gpu

``--emulate-gpu`` trains on the CPU with what the scaling rule decides for a GPU (factors,
batch, scaled learning rates, warm-up): the same arithmetic, hours instead of minutes.
Every run is ``ncf train --data ML1M --seed S`` (and ``ncf tune ease --seed S`` for EASE^R,
its regularisation searched on validation); finished runs are kept in ``--out`` and not
run again, so an interrupted benchmark resumes. Extra ``ncf train`` options go after ``--``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def emulate_gpu_plan() -> None:
    """Make the scaling rule plan for a GPU while training on the CPU."""
    import ncf.cli.train as cli_train

    real = cli_train.training_plan

    def plan(n: int, negatives: int, device: str, batch_size: int | None = None,
             **kw: int | None) -> cli_train.BatchPlan:
        return real(n, negatives, "cuda", batch_size, **kw)

    cli_train.training_plan = plan  # type: ignore[assignment]


def run(args: list[str]) -> float:
    from ncf.cli import main

    print("$ ncf " + " ".join(args), flush=True)
    t0 = time.perf_counter()
    code = main(args)
    if code:
        raise SystemExit(f"ncf {args[0]} failed ({code})")
    return time.perf_counter() - t0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", default=str(ROOT / ".." / "shared" / "data" / "ml-1m-notime"))
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--emulate-gpu", action="store_true")
    ap.add_argument("--threads", default="1")
    ap.add_argument("--ease-trials", default="20")
    ap.add_argument("--out", default="reports/ml1m-quality")
    ap.add_argument("extra", nargs="*", help="more ncf train options (after --)")
    args = ap.parse_args()
    if not Path(args.data).exists():
        print(f"skipped: {args.data} not found (--data)")
        return 0
    if args.emulate_gpu:
        emulate_gpu_plan()
    out = Path(args.out)
    seeds = [int(s) for s in args.seeds.split(",")]
    rows: dict[int, dict[str, dict]] = {}
    for seed in seeds:
        run_dir = out / f"train-s{seed}"
        if not (run_dir / "metrics.json").is_file():
            wall = run(["train", "--data", args.data, "--seed", str(seed), "--device",
                        args.device, "--threads", args.threads, "--out", str(run_dir),
                        *args.extra])
            (run_dir.parent / f"train-s{seed}.seconds").write_text(f"{wall:.0f}\n")
        rows[seed] = json.loads((run_dir / "metrics.json").read_text())
        ease = out / f"ease-s{seed}"
        if not (ease / "best.json").is_file():
            run(["tune", "ease", "--data", args.data, "--seed", str(seed), "--device", "cpu",
                 "--trials", args.ease_trials, "--out", str(ease), "--quiet"])
        best = json.loads((ease / "best.json").read_text())
        rows[seed]["ease"] = best["final"]
        rows[seed]["ease"]["reg"] = best["params"]["reg"]
    config = json.loads((out / f"train-s{seeds[0]}" / "config.json").read_text())
    plan = config.get("batch_plan", {})
    print(f"\nplan: {plan}")
    models = ["gmf", "mlp", "neumf", "ease"]
    print("| seed | " + " | ".join(f"{m} HR@10 / NDCG@10 (val HR@10)" for m in models) + " |")
    print("| --- |" + " --- |" * len(models))
    for seed in seeds:
        cells = []
        for m in models:
            r = rows[seed][m]
            val = (r.get("validation") or {}).get("hr")
            cells.append(f"{r['sampled']['hr']:.4f} / {r['sampled']['ndcg']:.4f} "
                         f"({val:.4f})" if val is not None else "")
        print(f"| {seed} | " + " | ".join(cells) + " |")
    means = []
    for m in models:
        hr = [rows[s][m]["sampled"]["hr"] for s in seeds]
        nd = [rows[s][m]["sampled"]["ndcg"] for s in seeds]
        spread = f" ± {statistics.stdev(hr):.4f}" if len(hr) > 1 else ""
        means.append(f"{statistics.mean(hr):.4f}{spread} / {statistics.mean(nd):.4f}")
    print("| mean | " + " | ".join(means) + " |")
    wins = [s for s in seeds if all(rows[s]["neumf"]["sampled"]["hr"] > rows[s][m]["sampled"]["hr"]
                                    for m in ("gmf", "mlp"))]
    print(f"NeuMF above GMF and MLP (test HR@10) on seeds {wins} of {seeds}")
    print("EASE^R reg per seed (chosen on validation): "
          + ", ".join(f"{s}: {rows[s]['ease']['reg']:.0f}" for s in seeds))
    return 0


if __name__ == "__main__":
    sys.exit(main())
