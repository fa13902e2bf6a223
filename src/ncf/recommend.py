"""NCF networks behind the shared :class:`~ncf.recommender.Recommender` contract.

:class:`NCFRecommender` wraps a trained GMF, MLP or NeuMF with the id maps of its data, so that
the CLI, the experiments and the baselines all score, recommend, save and load alike.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import scipy.sparse as sp
import torch

from ncf.errors import NcfError
from ncf.interactions import Interactions, lookup_raw
from ncf.models import NCFModule, build_model
from ncf.recommender import Recommender, check_raw_ids, register
from ncf.training import EvalTarget, History, TrainConfig, model_scorer, train


@register
class NCFRecommender(Recommender):
    """A GMF / MLP / NeuMF with its training configuration, as a :class:`Recommender`.

    Args:
        model: the network (trained or to be trained by :meth:`fit`).
        config: training hyper-parameters used by :meth:`fit`.
        validation: held-out items for model selection during :meth:`fit`.
    """

    name = "ncf"

    def __init__(
        self,
        model: NCFModule,
        config: TrainConfig | None = None,
        validation: EvalTarget | None = None,
    ) -> None:
        super().__init__()
        self.model = model
        self.config = config or TrainConfig()
        self.validation = validation
        self.history: History | None = None
        self.user_raw: np.ndarray | None = None
        self.item_raw: np.ndarray | None = None

    def _fit(self, train_data: Interactions) -> None:
        self.history = train(self.model, train_data, self.validation, self.config)
        self.user_raw, self.item_raw = train_data.user_raw, train_data.item_raw

    @classmethod
    def from_trained(
        cls, model: NCFModule, seen: Interactions, config: TrainConfig | None = None
    ) -> NCFRecommender:
        """Wrap an already trained model; ``seen`` gives the id maps and the items to filter."""
        rec = cls(model, config)
        rec.n_users, rec.n_items = model.n_users, model.n_items
        rec._seen = seen.tocsr()
        rec.user_raw, rec.item_raw = seen.user_raw, seen.item_raw
        return rec

    def score(self, user_ids: np.ndarray, item_ids: np.ndarray) -> np.ndarray:
        users, items = self._check(user_ids, item_ids)
        return model_scorer(self.model)(users, items)

    def _state(self) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        arrays = {f"w.{k}": v.detach().cpu().numpy() for k, v in self.model.state_dict().items()}
        if self.user_raw is not None and self.item_raw is not None:
            arrays["user_raw"], arrays["item_raw"] = self.user_raw, self.item_raw
        return arrays, {"kind": self.model.kind, "hyper": self.model.hyper()}

    def _load_state(self, arrays: dict[str, np.ndarray], params: dict[str, Any]) -> None:
        kind, hyper = params.get("kind"), params.get("hyper")
        if not isinstance(kind, str) or not isinstance(hyper, dict):
            raise NcfError("no model kind or hyper-parameters")
        state = {k[2:]: v for k, v in arrays.items() if k.startswith("w.")}
        _check_weights(kind, hyper, state, self.n_users, self.n_items)
        self.model = build_model(kind, **hyper)
        self.model.load_state_dict({k: torch.from_numpy(v) for k, v in state.items()})
        self.model.eval()
        self.config = TrainConfig()
        self.validation, self.history = None, None
        self.user_raw = check_raw_ids(arrays.get("user_raw"), self.n_users, "user")
        self.item_raw = check_raw_ids(arrays.get("item_raw"), self.n_items, "item")

    # raw ids ---------------------------------------------------------------------
    def user_of(self, raw: Any) -> int:
        """Dense index of a raw user id; ``NcfError`` naming it when unknown."""
        return _lookup(self.user_raw, raw, "user")

    def item_of(self, raw: Any) -> int:
        """Dense index of a raw item id; ``NcfError`` naming it when unknown."""
        return _lookup(self.item_raw, raw, "item")

    def seen_items(self, user: int) -> np.ndarray:
        """Dense items the user interacted with (those ``recommend`` filters)."""
        if self._seen is None:
            return np.empty(0, dtype=np.int64)
        m: sp.csr_matrix = self._seen
        return m.indices[m.indptr[user] : m.indptr[user + 1]].astype(np.int64)


def _check_weights(kind: str, hyper: dict[str, Any], state: dict[str, np.ndarray], n_users: int,
                   n_items: int) -> None:
    """The saved weights must be exactly those of the model ``hyper`` describes (checked on
    torch's meta device first: a tampered size allocates nothing)."""
    try:
        with torch.device("meta"):
            shapes = build_model(kind, **hyper)
    except (TypeError, ValueError, RuntimeError, OverflowError) as exc:
        raise NcfError(f"hyper-parameters {hyper} do not describe a {kind} model "
                       f"({type(exc).__name__})") from None
    if (shapes.n_users, shapes.n_items) != (n_users, n_items):
        raise NcfError(f"a {shapes.n_users} x {shapes.n_items} model in a file of "
                       f"{n_users} users x {n_items} items")
    expected = {k: tuple(v.shape) for k, v in shapes.state_dict().items()}
    for name in sorted(expected.keys() | state.keys()):
        found = state.get(name)
        if found is None or name not in expected:
            raise NcfError(f"weight {name} {'missing' if found is None else 'unexpected'}")
        if found.shape != expected[name] or found.dtype.kind != "f":
            raise NcfError(f"weight {name} has shape {found.shape} ({found.dtype}), the model "
                           f"needs {expected[name]}")


def _lookup(raw_ids: np.ndarray | None, raw: Any, what: str) -> int:
    if raw_ids is None:
        raise NcfError(f"this model carries no {what} id map")
    return lookup_raw(raw_ids, raw, what)
