"""Train / validation / test splits (leave-one-out) and their evaluation candidates."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ncf.interactions import Interactions


@dataclass(frozen=True, eq=False)
class Split:
    """A leave-one-out split.

    Args:
        train: the training interactions.
        test: one held-out interaction per evaluated user, sorted by user.
        validation: one held-out interaction per user for model selection, or ``None``.
        test_negatives: int32 ``(len(test), n)`` sampled candidates (paper protocol),
            row ``i`` for ``test`` row ``i``; never an item the user interacted with.
        validation_negatives: the same for ``validation``.
        meta: how the split was made (rule, seed, options).
    """

    train: Interactions
    test: Interactions
    validation: Interactions | None = None
    test_negatives: np.ndarray | None = None
    validation_negatives: np.ndarray | None = None
    meta: dict[str, Any] = field(default_factory=dict)
