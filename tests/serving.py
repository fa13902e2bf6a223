"""A small trained run shared by the serving tests (trained once per test session)."""

from __future__ import annotations

from pathlib import Path

import pytest

from ncf.cli import main

SMALL = ["--synth-ratings", "20k", "--epochs", "2", "--factors", "8", "--batch-size", "512",
         "--quiet"]


def small_run(factory: pytest.TempPathFactory) -> Path:
    """A run directory of `ncf train` on 20k synthetic ratings (with titles), made once."""
    root = factory.getbasetemp() / "serving"
    run = root / "run"
    if (run / "metrics.json").is_file():
        return run
    mp = pytest.MonkeyPatch()
    mp.setenv("NCF_CACHE", str(root / "cache"))
    try:
        assert main(["train", "--out", str(run), *SMALL]) == 0
    finally:
        mp.undo()
    return run
