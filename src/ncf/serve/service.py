"""What the server answers, without HTTP: a trained run loaded once, queried by raw ids.

:class:`Service` loads every model of a run directory pickle-free (``models/*.npz``: the NCF
models and any saved baseline), the titles of ``catalog.npz`` and the items each user has
seen, and answers: top-K for a known user, top-K for a new user folded in from the items
they give (:mod:`ncf.foldin`), similar items (cosine over item embeddings), title search.
Every method takes and returns raw ids and plain Python values; unknown ids raise
:class:`NotFound` naming the id, other bad input :class:`BadInput`.
"""

from __future__ import annotations

import json
import re
import threading
import time
import unicodedata
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp
import torch

from ncf.baselines import BASELINES
from ncf.baselines._common import ItemItemRecommender
from ncf.errors import NcfError
from ncf.foldin import FoldInConfig, UserSpace, fold_in
from ncf.interactions import lookup_raw
from ncf.recommend import NCFRecommender
from ncf.recommender import Recommender
from ncf.report import NAMES, load_model
from ncf.runs import load_catalog, read_json

#: Largest K a request may ask for, and most items a new user may give.
MAX_K = 100
MAX_GIVEN = 500

_VECTORS = {
    "gmf": "GMF item embeddings, each factor weighted by GMF's output layer",
    "mlp": "MLP item embeddings",
    "neumf": "NeuMF item embeddings: the GMF part (weighted by the output layer) and the MLP "
             "part, each normalised, concatenated (the mean of the two cosines)",
}


class NotFound(NcfError):
    """An id the run does not know (HTTP 404)."""

    def __init__(self, what: str, value: Any) -> None:
        super().__init__(f"unknown {what} {value!r}")
        self.what, self.value = what, value


class BadInput(NcfError):
    """A request the service cannot answer as asked (HTTP 422)."""


def normalise_text(text: str) -> str:
    """Case- and accent-insensitive form of a title or query: NFKD, marks dropped, casefolded,
    runs of white space made one space."""
    decomposed = unicodedata.normalize("NFKD", text)
    plain = "".join(c for c in decomposed if not unicodedata.combining(c))
    return " ".join(plain.casefold().split())


def _unit_rows(x: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.normalize(x.detach().float(), dim=1).contiguous()


def top_k(scores: np.ndarray, k: int, exclude: np.ndarray | None = None) -> np.ndarray:
    """Indices of the ``k`` best finite scores, best first (excluded items never listed)."""
    s = np.array(scores, dtype=np.float32)
    s[np.isnan(s)] = -np.inf
    if exclude is not None and len(exclude):
        s[exclude] = -np.inf
    k = min(k, len(s))
    top = np.argpartition(-s, k - 1)[:k] if k < len(s) else np.arange(len(s))
    top = top[np.argsort(-s[top], kind="stable")]
    return top[np.isfinite(s[top])]


class Service:
    """A run directory, loaded for serving.

    Args:
        run_dir: a directory written by ``ncf train`` (any models it holds; baselines saved
            as ``models/NAME.npz`` with :meth:`Recommender.save` are served too).
        default_model: the model used when a request names none (default: NeuMF when the
            run has it, else the last NCF stage that finished).
        fold: how new users are folded in.
        compute_slots: fold-ins that run at once (others wait for a slot): one per core
            is fastest; each holds a few MB of temporaries per 10k items, so this also
            bounds the memory under load. A known user's top-K (one pass over the items),
            lookups, search and similar items take no slot: the server computes them on its
            event loop, one at a time.
    """

    def __init__(self, run_dir: str | Path, default_model: str | None = None,
                 fold: FoldInConfig | None = None, compute_slots: int = 2) -> None:
        t0 = time.perf_counter()
        self._slots = threading.BoundedSemaphore(max(1, compute_slots))
        self.run_dir = Path(run_dir)
        if not self.run_dir.is_dir():
            raise NcfError(f"{self.run_dir}: no such run directory")
        self.fold = fold or FoldInConfig()
        self.models: dict[str, Recommender] = {}
        for path in sorted((self.run_dir / "models").glob("*.npz")):
            self.models[path.stem] = self._load(path)
        ncf = [n for n in NAMES if isinstance(self.models.get(n), NCFRecommender)]
        if not ncf:
            raise NcfError(f"{self.run_dir}: no trained NCF model in models/ (train one with "
                           "`ncf train`)")
        ref = self.models[ncf[-1]]
        assert isinstance(ref, NCFRecommender)
        if ref.user_raw is None or ref.item_raw is None or ref._seen is None:
            raise NcfError(f"{self.run_dir}: the models carry no id maps; train again")
        self.user_raw, self.item_raw = np.asarray(ref.user_raw), np.asarray(ref.item_raw)
        self.n_users, self.n_items = len(self.user_raw), len(self.item_raw)
        for name, m in self.models.items():
            if (m.n_users, m.n_items) != (self.n_users, self.n_items):
                raise NcfError(f"{self.run_dir / 'models' / name}.npz: {m.n_users} users x "
                               f"{m.n_items} items, but the run has {self.n_users} x "
                               f"{self.n_items}")
        self.seen: sp.csr_matrix = ref._seen
        for m in self.models.values():  # one copy of the seen items (each file holds its own)
            s = m._seen
            if s is not None and s.nnz == self.seen.nnz and np.array_equal(
                    s.indptr, self.seen.indptr) and np.array_equal(s.indices, self.seen.indices):
                m._seen = self.seen
        self.popularity = np.bincount(self.seen.indices, minlength=self.n_items).astype(np.float32)
        if "itempop" not in self.models:
            self.models["itempop"] = _itempop(self.seen, self.popularity)
        self.default_model = default_model or ("neumf" if "neumf" in ncf else ncf[-1])
        self.check_model(self.default_model)
        self.spaces = {n: UserSpace(self.models[n].model) for n in ncf}  # type: ignore[attr-defined]
        self.vectors = {n: _item_vectors(self.models[n].model) for n in ncf}  # type: ignore[attr-defined]
        self._catalog(load_catalog(self.run_dir / "catalog.npz"))
        self.config = _read_optional(self.run_dir / "config.json")
        self.metrics = _read_optional(self.run_dir / "metrics.json")
        self.load_seconds = time.perf_counter() - t0

    # loading -------------------------------------------------------------------------
    def _load(self, path: Path) -> Recommender:
        if path.stem in NAMES:
            return load_model(self.run_dir, path.stem)
        seen = self.run_dir / "seen.npz"  # a run's models may keep their seen items apart
        try:
            model = Recommender.load(path, seen=seen if seen.exists() else None)
        except (OSError, EOFError, ValueError, KeyError, TypeError, zipfile.BadZipFile,
                json.JSONDecodeError, UnicodeDecodeError, NotImplementedError) as exc:
            raise NcfError(f"{path}: unreadable model file ({type(exc).__name__})") from None
        if model.name not in BASELINES:
            raise NcfError(f"{path}: holds a {model.name!r} model, not a baseline of ncf")
        return model

    def _catalog(self, catalog: dict[str, np.ndarray] | None) -> None:
        self.titles: list[str | None] = [None] * self.n_items
        self.years: list[int | None] = [None] * self.n_items
        self.has_catalog = catalog is not None
        if catalog is not None:
            raw = np.asarray(catalog["item_raw"])
            order = np.argsort(raw, kind="stable")
            raw = raw[order]
            pos = np.clip(np.searchsorted(raw, self.item_raw), 0, max(len(raw) - 1, 0))
            found = (raw[pos] == self.item_raw) if len(raw) else np.zeros(self.n_items, bool)
            titles = np.asarray(catalog["titles"])[order][pos]
            years = np.asarray(catalog["years"])[order][pos]
            for i in np.flatnonzero(found):
                self.titles[i] = str(titles[i])
                self.years[i] = int(years[i]) if int(years[i]) > 0 else None
        # one string of every normalised title, "\n"-separated: a query is one C-level scan
        norm = [normalise_text(t or "") for t in self.titles]
        self._search_text = "\n" + "\n".join(norm) + "\n"
        self._search_starts = np.cumsum([1] + [len(t) + 1 for t in norm[:-1]]) \
            if norm else np.zeros(0, dtype=np.int64)
        codes = np.frombuffer(self._search_text.encode("utf-32-le"), dtype=np.uint32)
        ascii_alnum = np.zeros(128, dtype=bool)
        for c in "abcdefghijklmnopqrstuvwxyz0123456789":
            ascii_alnum[ord(c)] = True
        alnum = np.where(codes < 128, ascii_alnum[np.minimum(codes, 127)], True)
        self._word_start = np.r_[False, ~alnum[:-1]]  # the character before is no letter

    # ids -------------------------------------------------------------------------------
    def user_index(self, raw: Any) -> int:
        try:
            return lookup_raw(self.user_raw, raw, "user")
        except NcfError:
            raise NotFound("user", raw) from None

    def item_index(self, raw: Any) -> int:
        try:
            return lookup_raw(self.item_raw, raw, "item")
        except NcfError:
            raise NotFound("item", raw) from None

    def check_model(self, name: str) -> str:
        if name not in self.models:
            raise BadInput(f"unknown model {name!r} (this run has: {', '.join(self.models)})")
        return name

    def item_row(self, i: int, score: float | None = None) -> dict[str, Any]:
        raw = self.item_raw[i]
        row: dict[str, Any] = {"item": raw.item() if hasattr(raw, "item") else raw}
        if self.has_catalog:
            row["title"], row["year"] = self.titles[i], self.years[i]
        if score is not None:
            row["score"] = round(float(score), 6)
        return row

    # answers ---------------------------------------------------------------------------
    def info(self) -> dict[str, Any]:
        """The run: data set, counts, models, test metrics, limits."""
        data = self.config.get("data", {}) if isinstance(self.config, dict) else {}
        models = []
        for name, m in self.models.items():
            entry: dict[str, Any] = {"name": name, "label": NAMES.get(name, name),
                                     "kind": "ncf" if isinstance(m, NCFRecommender)
                                     else "baseline", "fold_in": self.can_fold_in(name)}
            if isinstance(m, NCFRecommender):
                entry["hyper"] = m.model.hyper()
            if isinstance(self.metrics, dict) and isinstance(self.metrics.get(name), dict):
                met = self.metrics[name]
                entry["test"] = {p: {k: met[p].get(k) for k in ("hr", "ndcg", "mrr")}
                                 for p in ("sampled", "full") if isinstance(met.get(p), dict)}
            models.append(entry)
        return {
            "run": self.run_dir.name,
            "data": {"path": data.get("path"), "format": data.get("format"),
                     "synthetic": data.get("synthetic")},
            "users": self.n_users, "items": self.n_items, "interactions": int(self.seen.nnz),
            "catalog": self.has_catalog, "models": models, "default_model": self.default_model,
            "limits": {"k": MAX_K, "given_items": MAX_GIVEN},
            "load_seconds": round(self.load_seconds, 3),
        }

    def can_fold_in(self, name: str) -> bool:
        m = self.models[name]
        return name in self.spaces or name == "itempop" or isinstance(m, ItemItemRecommender)

    def _scores(self, name: str, user: int) -> np.ndarray:
        if name in self.spaces:
            space = self.spaces[name]
            return space.logits_all(space.user_vectors(np.array([user])))[0].numpy()
        model = self.models[name]
        return model.score(np.array([user]), np.arange(self.n_items)[None, :])[0]

    def recommend_user(self, raw_user: Any, k: int = 10, model: str | None = None,
                       include_seen: bool = False) -> dict[str, Any]:
        """Top-``k`` for a known user, items already seen excluded."""
        name = self.check_model(model or self.default_model)
        user = self.user_index(raw_user)
        seen = self.seen.indices[self.seen.indptr[user] : self.seen.indptr[user + 1]]
        scores = self._scores(name, user)
        top = top_k(scores, k, None if include_seen else seen)
        return {"user": self.user_raw[user].item(), "model": name, "k": k,
                "seen": int(len(seen)),
                "items": [{"rank": r + 1, **self.item_row(i, scores[i])}
                          for r, i in enumerate(top)]}

    def history(self, raw_user: Any, limit: int = 50) -> dict[str, Any]:
        """The items a known user has seen (most popular first)."""
        user = self.user_index(raw_user)
        seen = self.seen.indices[self.seen.indptr[user] : self.seen.indptr[user + 1]]
        order = seen[np.argsort(-self.popularity[seen], kind="stable")][:limit]
        return {"user": self.user_raw[user].item(), "count": int(len(seen)),
                "items": [self.item_row(int(i)) for i in order]}

    def given_indices(self, raw_items: Sequence[Any]) -> np.ndarray:
        """Dense indices of the given raw items (unknown ones: :class:`NotFound`)."""
        if not raw_items:
            raise BadInput("give at least one item")
        if len(raw_items) > MAX_GIVEN:
            raise BadInput(f"at most {MAX_GIVEN} items, got {len(raw_items)}")
        return np.array([self.item_index(x) for x in raw_items], dtype=np.int64)

    def recommend_new(self, raw_items: Sequence[Any], k: int = 10, model: str | None = None,
                      ratings: Sequence[float] | None = None) -> dict[str, Any]:
        """Top-``k`` for a new user who gave ``raw_items`` (optionally rated: each rating
        weighs its item), by fold-in; the given items are never listed."""
        name = self.check_model(model or self.default_model)
        if not self.can_fold_in(name):
            raise BadInput(f"model {name!r} cannot fold in new users (fold-in models: "
                           f"{', '.join(n for n in self.models if self.can_fold_in(n))})")
        given = self.given_indices(raw_items)
        weights = None
        if ratings is not None:
            r = np.asarray(ratings, dtype=np.float64)
            if len(r) != len(given):
                raise BadInput(f"{len(r)} ratings for {len(given)} items")
            if not np.all(np.isfinite(r)) or np.any(r <= 0) or np.any(r > 10):
                raise BadInput("ratings must be numbers in (0, 10]")
            weights = r / r.max()
        t0 = time.perf_counter()
        if name in self.spaces:
            space = self.spaces[name]
            with self._slots:
                z = fold_in(space, [given], None if weights is None else [weights], self.fold)
                scores = space.logits_all(z)[0].numpy()
        elif name == "itempop":
            scores = self.popularity
        else:
            row = np.zeros(self.n_items, dtype=np.float32)
            row[given] = 1.0 if weights is None else weights
            item_item = self.models[name]
            assert isinstance(item_item, ItemItemRecommender)
            w = item_item.weights
            scores = np.asarray(sp.csr_matrix(row) @ w).ravel() if sp.issparse(w) else row @ w
        ms = 1000 * (time.perf_counter() - t0)
        unique = np.unique(given)
        top = top_k(scores, k, unique)
        because = self._because(top, unique, name)
        return {"model": name, "k": k, "fold_in_ms": round(ms, 3),
                "given": [self.item_row(int(i)) for i in unique],
                "items": [{"rank": r + 1, **self.item_row(i, scores[i]),
                           "because": self.item_row(int(b))} for r, (i, b)
                          in enumerate(zip(top, because))]}

    def _because(self, top: np.ndarray, given: np.ndarray, name: str) -> np.ndarray:
        """For each recommended item, the given item most similar to it."""
        vec = self.vectors[name if name in self.vectors else next(iter(self.vectors))]
        if not len(top):
            return np.zeros(0, np.int64)
        sims = vec[torch.from_numpy(top)] @ vec[torch.from_numpy(given)].T  # (k, n_given)
        return given[sims.argmax(dim=1).numpy()]

    def similar(self, raw_item: Any, k: int = 10, model: str | None = None) -> dict[str, Any]:
        """The ``k`` items whose embeddings are closest (cosine) to the item's."""
        name = model or (self.default_model if self.default_model in self.vectors
                         else next(iter(self.vectors)))
        self.check_model(name)
        if name not in self.vectors:
            raise BadInput(f"model {name!r} has no item embeddings (use one of: "
                           f"{', '.join(self.vectors)})")
        item = self.item_index(raw_item)
        sims = (self.vectors[name] @ self.vectors[name][item]).numpy()  # torch: 1 thread
        top = top_k(sims, k, np.array([item]))
        return {"item": self.item_row(item), "model": name, "vectors": _VECTORS[name],
                "k": k, "items": [{"rank": r + 1, **self.item_row(i), "similarity":
                                   round(float(sims[i]), 6)} for r, i in enumerate(top)]}

    def search(self, query: str, limit: int = 20) -> dict[str, Any]:
        """Titles containing ``query`` (case and accents ignored): titles that start with
        it first, then those with a word that does, then the rest; most popular first."""
        q = normalise_text(query)
        if not q:
            raise BadInput("the query is empty")
        if not self.has_catalog:
            return {"query": query, "catalog": False, "items": []}
        starts = self._search_starts
        hits = np.array([m.start() for m in re.finditer(re.escape(q), self._search_text)],
                        dtype=np.int64)
        if not len(hits):
            return {"query": query, "catalog": True, "items": []}
        title = np.searchsorted(starts, hits, side="right") - 1
        offset = hits - starts[title]
        rank = np.where(offset == 0, 0, np.where(self._word_start[hits], 1, 2))
        best = np.full(self.n_items, 3)
        np.minimum.at(best, title, rank)
        found = np.flatnonzero(best < 3)
        order = found[np.lexsort((-self.popularity[found], best[found]))][:limit]
        return {"query": query, "catalog": True,
                "items": [self.item_row(int(i)) for i in order]}


def _read_optional(path: Path) -> Any:
    try:
        return read_json(path) if path.exists() else None
    except NcfError:
        return None


def _itempop(seen: sp.csr_matrix, popularity: np.ndarray) -> Recommender:
    model = BASELINES["itempop"]()
    model.n_users, model.n_items = seen.shape
    model._seen = seen
    model.popularity = popularity  # type: ignore[attr-defined]
    return model


@torch.no_grad()
def _item_vectors(model: Any) -> torch.Tensor:
    """Unit item vectors of an NCF model, for cosine similarity (see ``_VECTORS``)."""
    w = model.out.weight[0].detach().float()
    if model.kind == "gmf":
        return _unit_rows(model.item.weight * w)
    if model.kind == "mlp":
        return _unit_rows(model.item.weight.detach().float())
    f = model.factors
    gq = model.mlp.item.weight[:, :f] if model.share_embeddings else model.gmf.item.weight
    parts = [_unit_rows(gq * w[:f]), _unit_rows(model.mlp.item.weight.detach().float())]
    return torch.cat(parts, dim=1) / 2.0**0.5
