"""The contract every model honours, NCF or baseline: fit, score, recommend, save, load."""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp

from ncf.errors import DataError, NcfError
from ncf.interactions import Interactions


class Recommender(ABC):
    """Base class: subclasses implement ``_fit``, ``score`` and their state for persistence.

    ``score(user_ids, item_ids)`` is the one scoring function that evaluation uses:
    ``user_ids`` has shape ``(B,)``, ``item_ids`` shape ``(B, C)``, and the result is a
    float array ``(B, C)``; higher means more relevant.
    """

    #: registry name used by save/load
    name: str = "recommender"

    def __init__(self) -> None:
        self.n_users = 0
        self.n_items = 0
        self._seen: sp.csr_matrix | None = None

    # training -------------------------------------------------------------------
    def fit(self, train: Interactions) -> Recommender:
        """Fit on ``train`` and remember its ``user_items`` matrix to filter seen items."""
        if len(train) == 0:
            raise NcfError("cannot fit on an empty training set")
        self.n_users, self.n_items = train.n_users, train.n_items
        self._seen = train.tocsr()
        self._fit(train)
        return self

    @abstractmethod
    def _fit(self, train: Interactions) -> None: ...

    @abstractmethod
    def score(self, user_ids: np.ndarray, item_ids: np.ndarray) -> np.ndarray:
        """Scores of ``item_ids[b, c]`` for ``user_ids[b]``, shape ``(B, C)``."""

    def _check(self, user_ids: Any, item_ids: Any) -> tuple[np.ndarray, np.ndarray]:
        """Validated ``(users (B,), items (B, C))`` int64 arrays for :meth:`score`."""
        if self._seen is None:
            raise NcfError(f"{self.name}: model is not fitted")
        users, items = np.asarray(user_ids), np.asarray(item_ids)
        if users.dtype.kind not in "iu" or items.dtype.kind not in "iu":
            raise NcfError("user_ids and item_ids must be integer arrays")
        if users.ndim != 1 or items.ndim != 2 or items.shape[0] != users.shape[0]:
            raise NcfError(
                f"score expects user_ids (B,) and item_ids (B, C); got {users.shape} and "
                f"{items.shape}"
            )
        if users.size and (users.min() < 0 or users.max() >= self.n_users):
            raise NcfError(f"unknown user index (valid: 0..{self.n_users - 1})")
        if items.size and (items.min() < 0 or items.max() >= self.n_items):
            raise NcfError(f"unknown item index (valid: 0..{self.n_items - 1})")
        return users.astype(np.int64, copy=False), items.astype(np.int64, copy=False)

    # recommending ---------------------------------------------------------------
    def recommend(
        self,
        user_ids: np.ndarray | int,
        k: int = 10,
        filter_seen: bool = True,
        filter_items: np.ndarray | None = None,
        batch_size: int = 256,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` items for each user, batch-first: ``(ids (B, k), scores (B, k))``.

        Seen items (those in the training matrix) are excluded when ``filter_seen``;
        ``filter_items`` are excluded for every user. A user with fewer than ``k`` items
        left gets them first, then excluded items with score ``-inf`` (rows keep one width).
        """
        users = np.atleast_1d(np.asarray(user_ids, dtype=np.int64))
        if users.size and (users.min() < 0 or users.max() >= self.n_users):
            raise NcfError(f"unknown user index (valid: 0..{self.n_users - 1})")
        if k < 1:
            raise NcfError(f"k must be >= 1, got {k}")
        k = min(k, self.n_items)
        all_items = np.arange(self.n_items, dtype=np.int64)
        out_ids = np.empty((len(users), k), dtype=np.int64)
        out_scores = np.empty((len(users), k), dtype=np.float32)
        for start in range(0, len(users), batch_size):
            batch = users[start : start + batch_size]
            items = np.broadcast_to(all_items, (len(batch), self.n_items))
            scores = np.array(self.score(batch, items), dtype=np.float32)
            if filter_seen and self._seen is not None:
                rows = self._seen[batch]
                scores[np.repeat(np.arange(len(batch)), np.diff(rows.indptr)), rows.indices] = (
                    -np.inf
                )
            if filter_items is not None:
                scores[:, np.asarray(filter_items)] = -np.inf
            top = np.argpartition(-scores, k - 1, axis=1)[:, :k]
            top_scores = np.take_along_axis(scores, top, axis=1)
            order = np.argsort(-top_scores, axis=1, kind="stable")
            out_ids[start : start + len(batch)] = np.take_along_axis(top, order, axis=1)
            out_scores[start : start + len(batch)] = np.take_along_axis(top_scores, order, axis=1)
        return out_ids, out_scores

    # persistence (no pickle) ----------------------------------------------------
    def _state(self) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        """Arrays and JSON-able hyper-parameters that define the fitted model."""
        raise NotImplementedError

    def _load_state(self, arrays: dict[str, np.ndarray], params: dict[str, Any]) -> None:
        raise NotImplementedError

    def save(self, path: str | Path, include_seen: bool = True) -> None:
        """Write ``path`` (a ``.npz`` of arrays, JSON metadata inside) atomically.

        Args:
            path: the file to write.
            include_seen: store the training ``user_items`` matrix (the items
                :meth:`recommend` filters) in the file. A run directory stores it once for all
                its models (``seen.npz``, :func:`save_seen`) and saves them without it; such a
                file is loaded with ``load(path, seen=...)``.
        """
        from ncf.runs import atomic_savez

        arrays, params = self._state()
        meta = {"name": self.name, "params": params, "n_users": self.n_users,
                "n_items": self.n_items, "seen": "inside" if include_seen else "separate"}
        payload: dict[str, Any] = {f"a_{k}": v for k, v in arrays.items()}
        if include_seen:
            seen = self._seen if self._seen is not None else sp.csr_matrix((0, 0))
            payload.update(seen_indptr=seen.indptr, seen_indices=seen.indices)
        payload["meta"] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
        atomic_savez(path, payload)

    @classmethod
    def load(cls, path: str | Path, seen: str | Path | None = None) -> Recommender:
        """Read a model written by :meth:`save` (``allow_pickle=False``: no code runs on load).

        Args:
            path: the model file.
            seen: the ``seen.npz`` of its run (:func:`save_seen`), for a model saved without
                its seen items (``include_seen=False``); ignored when the file holds them.

        Raises:
            DataError: naming ``path``, when it is unreadable or its contents do not fit
                together (shapes, id maps, seen items outside the model's items).
        """
        empty = np.zeros(0, dtype=np.int64)
        try:
            with np.load(path, allow_pickle=False) as z:
                meta = json.loads(bytes(z["meta"]).decode())
                arrays = {k[2:]: z[k] for k in z.files if k.startswith("a_")}
                inside = "seen_indptr" in z.files
                indptr = z["seen_indptr"] if inside else empty
                indices = z["seen_indices"] if inside else empty
        except MemoryError:
            raise
        except Exception as exc:  # numpy's parser of a damaged file raises
            # OSError, ValueError, EOFError, SyntaxError, tokenize.TokenError, zip errors...
            raise DataError(f"unreadable model file ({type(exc).__name__}); train again, or "
                            "restore it", path=path) from None
        if not inside:
            if seen is None:
                raise NcfError(f"{path}: its seen items are stored apart (the run's seen.npz);"
                               " load it with ncf.load_model(RUN), or pass seen=...")
            indptr, indices = load_seen(seen)
        try:
            n_users, n_items, name, params = _check_meta(meta)
            target = _registered(name, cls)
            model = target.__new__(target)
            Recommender.__init__(model)
            model.n_users, model.n_items = n_users, n_items
            if inside:
                model._seen = _seen_matrix(indptr, indices, n_users, n_items)
            model._load_state(arrays, params)
        except NcfError as exc:
            raise DataError(f"not a model ncf can use: {exc} (the file was edited?)",
                            path=path) from None
        if not inside:
            try:
                model._seen = _seen_matrix(indptr, indices, n_users, n_items)
            except NcfError as exc:
                raise DataError(f"not the seen items of this model: {exc} (the file was "
                                "edited?)", path=seen) from None
        return model


def save_seen(path: str | Path, seen: sp.csr_matrix) -> Path:
    """Write a ``user_items`` matrix once for the models of a run (``seen.npz``), atomically."""
    from ncf.runs import atomic_savez

    seen = sp.csr_matrix(seen)
    return atomic_savez(path, {"seen_indptr": seen.indptr, "seen_indices": seen.indices})


def load_seen(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """``(indptr, indices)`` of a ``seen.npz`` (checked against a model when it is loaded)."""
    try:
        with np.load(path, allow_pickle=False) as z:
            return z["seen_indptr"], z["seen_indices"]
    except MemoryError:
        raise
    except FileNotFoundError:
        raise DataError("missing: the run's seen items (train again)", path=path) from None
    except Exception as exc:  # a damaged file: numpy's parser raises many kinds
        raise DataError(f"unreadable seen items ({type(exc).__name__})", path=path) from None


def _check_meta(meta: Any) -> tuple[int, int, str, dict[str, Any]]:
    """``(n_users, n_items, name, params)`` of a saved model's metadata, checked."""
    if not isinstance(meta, dict):
        raise NcfError("its metadata is not an object")
    n_users, n_items = meta.get("n_users"), meta.get("n_items")
    for what, n in (("n_users", n_users), ("n_items", n_items)):
        if not isinstance(n, int) or isinstance(n, bool) or n < 0:
            raise NcfError(f"{what} is {n!r}")
    name, params = meta.get("name"), meta.get("params")
    if not isinstance(name, str) or not isinstance(params, dict):
        raise NcfError("no model name or parameters")
    return n_users, n_items, name, params  # type: ignore[return-value]


def _seen_matrix(indptr: np.ndarray, indices: np.ndarray, n_users: int,
                 n_items: int) -> sp.csr_matrix:
    """The ``user_items`` matrix of a saved model, its index arrays checked first."""
    if indptr.dtype.kind not in "iu" or indices.dtype.kind not in "iu":
        raise NcfError("seen items are not integer arrays")
    if indptr.shape != (n_users + 1,) or indices.ndim != 1:
        raise NcfError(f"seen items: {indptr.shape} row pointers for {n_users} users")
    if n_users and (indptr[0] != 0 or indptr[-1] != len(indices)
                    or bool(np.any(np.diff(indptr) < 0))):
        raise NcfError("seen items: row pointers out of order")
    if len(indices) and (int(indices.min()) < 0 or int(indices.max()) >= n_items):
        raise NcfError(f"seen items: an item index outside 0..{n_items - 1}")
    return sp.csr_matrix(
        (np.ones(len(indices), dtype=np.float32), indices, indptr), shape=(n_users, n_items))


def check_raw_ids(raw: Any, n: int, what: str) -> np.ndarray | None:
    """A saved raw-id map: ``None``, or one id per dense index, sorted and distinct."""
    if raw is None:
        return None
    raw = np.asarray(raw)
    if raw.ndim != 1 or len(raw) != n or raw.dtype.kind not in "iuU":
        raise NcfError(f"its {what} id map holds {raw.shape} ids of type {raw.dtype}, "
                       f"expected {n}")
    if n > 1 and not bool(np.all(raw[1:] > raw[:-1])):
        raise NcfError(f"its {what} ids are not sorted and distinct")
    return raw


_REGISTRY: dict[str, type[Recommender]] = {}

#: The modules whose classes register themselves: imported when a saved name is unknown, so
#: that loading never depends on what the caller happened to import first.
_PROVIDERS = ("ncf.recommend", "ncf.baselines")


def register(cls: type[Recommender]) -> type[Recommender]:
    """Class decorator: make ``Recommender.load`` able to rebuild this model by its name."""
    _REGISTRY[cls.name] = cls
    return cls


def _registered(name: str, default: type[Recommender]) -> type[Recommender]:
    """The class saved under ``name`` (its module imported if need be)."""
    if name not in _REGISTRY:
        import importlib

        for module in _PROVIDERS:
            importlib.import_module(module)
    if name in _REGISTRY:
        return _REGISTRY[name]
    if default is Recommender:
        raise NcfError(f"no model class is registered under the name {name!r}")
    return default
