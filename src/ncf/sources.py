"""Where training data comes from: a path, a public data set, or the synthetic default.

:func:`resolve_training_data` turns any of them into a :class:`TrainingData` — a split with
validation items and candidates, the item titles, and the provenance recorded in the run.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ncf.errors import NcfError
from ncf.outputs import output_lock, remove_folder
from ncf.split import Split


@dataclass(frozen=True, eq=False)
class TrainingData:
    """A ready-to-train split, its titles, and where it came from."""

    split: Split
    catalog: Any
    description: str
    provenance: dict[str, Any] = field(default_factory=dict)


def synthetic_source(n_ratings: int, seed: int, say: Callable[..., None]) -> Path:
    """The cached synthetic Netflix-format set of that size and seed, written once."""
    from ncf.download import cache_root
    from ncf.synth import is_synth_folder, write_synth_netflix

    target = cache_root() / f"synth-netflix-{n_ratings}-seed{seed}"
    if (target / "movie_titles.csv").exists():
        return target
    with output_lock(target, wait=True, what="synthetic set"):  # another run may write it
        if (target / "movie_titles.csv").exists():
            return target
        say(f"writing a synthetic Netflix-format set of {n_ratings:,} ratings to {target}")
        tmp = target.with_name(target.name + ".partial")
        if tmp.exists():  # left by a killed run (the lock is ours): removed if it is one
            remove_folder(tmp, is_synth_folder)
        write_synth_netflix(tmp, n_ratings, seed=seed)
        os.replace(tmp, target)
    return target


def resolve_training_data(
    data: str | None = None,
    dataset: str | None = None,
    fmt: str | None = None,
    ratings: str | int | None = None,
    synth_ratings: str | int = "1M",
    seed: int = 0,
    say: Callable[..., None] = lambda *a: None,
) -> TrainingData:
    """A split ready for training from a path, a named public data set, or synthetic data.

    Args:
        data: ratings file or folder (format detected), or a folder of ``ncf data prepare``.
        dataset: a public data set name, downloaded and verified (``ncf.download``).
        fmt: the input format, when detection should be overridden.
        ratings: subsample to this many ratings (e.g. ``"1M"``).
        synth_ratings: size of the synthetic default (when neither ``data`` nor ``dataset``).
        seed: seeds subsampling, tie-breaking and candidate sampling.
    """
    from ncf.ingest import load_split
    from ncf.prepare import parse_count
    from ncf.storage import is_prepared

    synthetic = data is None and dataset is None
    if dataset is not None:
        from ncf.download import fetch

        data = str(fetch(dataset))
    elif synthetic:
        data = str(synthetic_source(parse_count(synth_ratings), seed, say))
    assert data is not None
    path = Path(data)
    if not path.exists():
        raise NcfError(f"{path}: no such file or folder")
    options: dict[str, Any] = {}
    if not is_prepared(path):
        options = {"fmt": fmt, "ratings": ratings, "seed": seed}
    split, catalog, meta = load_split(path, **options)
    if split.validation is None:
        raise NcfError(f"{path}: the split has no validation items, which training needs to "
                       "choose its epochs: prepare the data again without --no-validation")
    if split.validation_negatives is None:
        raise NcfError(f"{path}: the split has no candidates for its validation items, which "
                       "training needs to choose its epochs: prepare the data again with "
                       "--negatives 99 (it was prepared with --negatives 0)")
    kind = "prepared split" if is_prepared(path) else f"{meta.get('format', 'detected')} data"
    provenance = {"path": str(path.resolve()), "format": meta.get("format", fmt),
                  "ratings": ratings, "seed": seed, "synthetic": synthetic,
                  "dataset": dataset, "prepare": meta}
    return TrainingData(split, catalog, f"{kind} {path}", provenance)
