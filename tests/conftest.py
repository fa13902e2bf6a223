"""Shared fixtures: where the real data sets live (never copied into the repo)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

DATA_DIR = Path(
    os.environ.get(
        "NCF_SHARED_DATA", Path(__file__).resolve().parents[1] / ".." / "shared" / "data"
    )
).resolve()


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The folder of real data sets; skips (saying where it looked) when it is missing."""
    if not DATA_DIR.is_dir():
        pytest.skip(f"real data sets not found at {DATA_DIR} (set NCF_SHARED_DATA)")
    return DATA_DIR


@pytest.fixture(autouse=True, scope="session")
def _one_thread() -> None:
    """Two-core CI: one torch thread per process keeps tests from fighting each other."""
    try:
        import torch

        torch.set_num_threads(1)
    except ImportError:  # pragma: no cover
        pass


try:  # CI runs the property tests on a fixed example sequence, so a run is reproducible
    from hypothesis import settings

    settings.register_profile("ci", derandomize=True, deadline=None)
    if os.environ.get("CI"):
        settings.load_profile("ci")
except ImportError:  # pragma: no cover
    pass
