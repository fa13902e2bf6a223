"""`ncf data inspect | prepare | synth`: look at a data set, make its split, write test data."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np

from ncf.cli import finite_float, seed_arg
from ncf.errors import printable
from ncf.interactions import Interactions

QUANTILES = {"min": 0, "25%": 25, "50%": 50, "75%": 75, "90%": 90, "99%": 99, "max": 100}


def register(sub: Any) -> None:
    """Add ``data`` and its sub-commands to the top-level parser."""
    data = sub.add_parser("data", help="inspect, prepare or synthesise data sets")
    cmds = data.add_subparsers(dest="data_command", required=True, metavar="SUBCOMMAND")
    fmt = argparse.ArgumentDefaultsHelpFormatter

    p = cmds.add_parser("inspect", help="counts, density, histograms of a data set",
                        formatter_class=fmt)
    p.add_argument("path", help="ratings file or folder, or a prepared folder")
    p.add_argument("--format", help="force the input format instead of detecting it")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(run=cmd_inspect)

    p = cmds.add_parser("prepare", help="read, filter, split and sample candidates; save them",
                        formatter_class=fmt)
    p.add_argument("path", help="ratings file or folder")
    p.add_argument("--out", required=True, help="prepared folder to write (or replace)")
    p.add_argument("--format", help="force the input format instead of detecting it")
    p.add_argument("--ratings", help="subsample to about N ratings (e.g. 1M)")
    p.add_argument("--subsample", choices=["users", "head", "random"], default="users",
                   help="whole users at random, the first rows, or random rows")
    p.add_argument("--seed", type=seed_arg, default=0)
    p.add_argument("--threshold", type=finite_float,
                   help="minimum rating of a positive (default: all)")
    p.add_argument("--min-user-ratings", type=int, default=0, help="k-core: fewest per user")
    p.add_argument("--min-item-ratings", type=int, default=0, help="k-core: fewest per item")
    p.add_argument("--tie-break", choices=["random", "item_desc", "item_asc", "order"],
                   default=None, help="which of equally recent items is held out (default: "
                   "random; for the NCF paper's files, the validation item follows their test "
                   "item's rule, item_desc)")
    p.add_argument("--no-validation", action="store_true", help="no validation hold-out")
    p.add_argument("--negatives", type=int, default=99, help="candidates per held-out item")
    p.add_argument("--probe", help="Netflix probe.txt: its ratings are the test split")
    p.set_defaults(run=cmd_prepare)

    p = cmds.add_parser("synth", help="write a synthetic Netflix Prize set (Kaggle's format)",
                        formatter_class=fmt)
    p.add_argument("--ratings", required=True, help="number of ratings (e.g. 10M)")
    p.add_argument("--out", required=True, help="folder to write")
    p.add_argument("--seed", type=seed_arg, default=0)
    p.add_argument("--users", type=int, help="customers (default: scaled with the size)")
    p.add_argument("--items", type=int, help="movies (default: scaled with the size)")
    p.set_defaults(run=cmd_synth)


# ---------------------------------------------------------------------------- inspect
def _quantiles(counts: np.ndarray) -> dict[str, float]:
    counts = counts[counts > 0]
    if not counts.size:
        return {k: 0 for k in QUANTILES}
    values = np.percentile(counts, list(QUANTILES.values()))
    return {k: round(float(v), 1) for k, v in zip(QUANTILES, values, strict=True)}


def _histogram(ratings: np.ndarray) -> dict[str, int]:
    """Count of each rating value (half-star values counted without a sort)."""
    twice = np.rint(ratings.astype(np.float64) * 2)
    if ratings.size and np.array_equal(twice, ratings * 2) and 0 <= twice.min() and (
            twice.max() <= 200):
        counts = np.bincount(twice.astype(np.int64))
        values = np.flatnonzero(counts)
        return {f"{v / 2:g}": int(counts[v]) for v in values}
    values, counts = np.unique(ratings, return_counts=True)
    return {f"{v:g}": int(c) for v, c in zip(values, counts, strict=True)}


def describe(x: Interactions) -> dict[str, Any]:
    """Summary statistics of ``x`` (vectorised: fine at 100M interactions).

    Returns:
        ``users``, ``items`` (with at least one interaction), ``ratings``, ``density``,
        ``rating_histogram`` (or ``None``), ``time_span`` (first / last UTC dates or
        ``None``), ``per_user`` / ``per_item`` count quantiles.
    """
    per_user, per_item = x.user_counts(), x.item_counts()
    users, items = int((per_user > 0).sum()), int((per_item > 0).sum())
    span = None
    if x.timestamps is not None and len(x):
        first, last = (np.datetime64(int(t), "s").astype("datetime64[D]")
                       for t in (x.timestamps.min(), x.timestamps.max()))
        span = {"first": str(first), "last": str(last)}
    return {
        "users": users,
        "items": items,
        "ratings": len(x),
        "density": len(x) / (users * items) if users and items else 0.0,
        "rating_histogram": None if x.ratings is None else _histogram(x.ratings),
        "time_span": span,
        "per_user": _quantiles(per_user),
        "per_item": _quantiles(per_item),
    }


def _read_any(path: str, fmt: str | None) -> tuple[Interactions, str, dict[str, int] | None]:
    """All interactions of a raw data set or of a prepared folder (its parts joined)."""
    from ncf.storage import is_prepared, load_prepared

    if is_prepared(path) and fmt is None:
        prep = load_prepared(path, verify=False)
        s = prep.split
        parts = {n: getattr(s, n) for n in ("train", "validation", "test")}
        sizes = {n: len(p) for n, p in parts.items() if p is not None}
        data_fmt = prep.meta.get("options", {}).get("format", "?")
        present = [p for p in parts.values() if p is not None]
        joined = present[0].concat(*present[1:])
        return joined, f"prepared ({data_fmt})", sizes
    from ncf.datasets import load

    data = load(path, fmt, require_train=False)  # inspect reads the paper's test files alone
    return data.interactions, data.format, None


def _fmt_quantiles(q: dict[str, float]) -> str:
    return "  ".join(f"{k} {v:,g}" for k, v in q.items())


def cmd_inspect(args: argparse.Namespace) -> int:
    """``ncf data inspect``: print the statistics of a data set."""
    x, fmt, parts = _read_any(args.path, args.format)
    stats = {"path": str(args.path), "format": fmt, **describe(x)}
    if parts is not None:
        stats["parts"] = parts
    if args.json:
        print(json.dumps(stats))
        return 0
    lines = [
        f"path        {printable(stats['path'])}",
        f"format      {printable(fmt)}",
        f"users       {stats['users']:,}",
        f"items       {stats['items']:,}",
        f"ratings     {stats['ratings']:,}",
        f"density     {stats['density']:.4%}",
    ]
    if parts is not None:
        lines.append("parts       " + "  ".join(f"{k} {v:,}" for k, v in parts.items()))
    hist = stats["rating_histogram"]
    if hist:
        total = sum(hist.values())
        lines.append("histogram   " + "  ".join(
            f"{k}: {v:,} ({v / total:.1%})" for k, v in hist.items()))
    span = stats["time_span"]
    if span:
        lines.append(f"time span   {span['first']} .. {span['last']}")
    lines.append(f"per user    {_fmt_quantiles(stats['per_user'])}")
    lines.append(f"per item    {_fmt_quantiles(stats['per_item'])}")
    print("\n".join(lines))
    return 0


# ---------------------------------------------------------------------------- prepare
def _streamable(args: argparse.Namespace) -> bool:
    """Netflix Prize files without a k-core: prepared in bounded memory."""
    from ncf.datasets.loader import resolve_format

    fmt = resolve_format(args.path, args.format)
    return fmt in ("netflix", "netflix-mv") and not (args.min_user_ratings or
                                                     args.min_item_ratings)


def cmd_prepare(args: argparse.Namespace) -> int:
    """``ncf data prepare``: read, prepare, split, sample candidates, save."""
    from ncf.errors import NcfError
    from ncf.ingest import prepare_netflix, prepare_split
    from ncf.prepare import parse_count
    from ncf.storage import claim_output_dir, load_prepared, save_prepared

    start = time.perf_counter()
    out = claim_output_dir(args.out)  # checked and locked before any heavy work
    ratings = None if args.ratings is None else parse_count(args.ratings)
    common = dict(ratings=ratings, subsample_strategy=args.subsample, seed=args.seed,
                  threshold=args.threshold, tie_break=args.tie_break,
                  validation=not args.no_validation, negatives=args.negatives)
    if _streamable(args):
        path, options = prepare_netflix(args.path, out, probe=args.probe, **common)
        counts = load_prepared(path, verify=False).meta["counts"]
    else:
        if args.probe:
            raise NcfError("--probe applies to the Netflix Prize files only")
        split, catalog, options = prepare_split(
            args.path, fmt=args.format, min_user_ratings=args.min_user_ratings,
            min_item_ratings=args.min_item_ratings, **common)
        path = save_prepared(out, split, catalog=catalog, options=options,
                             sources=options["sources"])
        counts = {"train": len(split.train), "test": len(split.test),
                  "validation": None if split.validation is None else len(split.validation),
                  "negatives": None if split.test_negatives is None
                  else split.test_negatives.shape[1]}
    size = sum(f.stat().st_size for f in path.iterdir())
    print(f"prepared {options['format']} data from {printable(args.path)} "
          f"in {time.perf_counter() - start:.1f} s")
    for step, s in options["sizes"].items():
        print(f"  {step:<10} {s['ratings']:>12,} ratings {s['users']:>9,} users "
              f"{s['items']:>7,} items")
    held = [f"train {counts['train']:,}"]
    if counts["validation"] is not None:
        held.append(f"validation {counts['validation']:,}")
    held.append(f"test {counts['test']:,}")
    if counts["negatives"]:
        held.append(f"{counts['negatives']} candidates per held-out item")
    print("  split      " + ", ".join(held))
    if isinstance(options.get("seconds"), dict):
        print("  seconds    " + ", ".join(f"{k} {v:.1f}" for k, v in options["seconds"].items()))
    print(f"  wrote      {printable(path)} ({size / 1e6:,.1f} MB)")
    return 0


# ---------------------------------------------------------------------------- synth
def cmd_synth(args: argparse.Namespace) -> int:
    """``ncf data synth``: write a synthetic Netflix Prize set."""
    from ncf.prepare import parse_count
    from ncf.synth import write_synth_netflix

    start = time.perf_counter()
    info = write_synth_netflix(Path(args.out), parse_count(args.ratings), seed=args.seed,
                               n_users=args.users, n_items=args.items)
    print(f"wrote {info.n_ratings:,} ratings of {info.n_users:,} customers on "
          f"{info.n_items:,} movies to {printable(info.out_dir)} in "
          f"{time.perf_counter() - start:.1f} s")
    return 0
