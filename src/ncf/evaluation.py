"""One evaluation path for every model: HR@k, NDCG@k and MRR of a scoring function.

A scoring function ``score_fn(user_ids (B,) int64, item_ids (B, C) int64) -> (B, C)``
(numpy array or torch tensor) is all evaluation knows of a model. Two protocols:

- ``"sampled"`` (the NCF paper): rank each held-out item among itself and its sampled
  candidates (usually 99);
- ``"full"``: rank it among every item except the user's other known items.

Rank conventions (shared by both): the rank of the positive is the number of
candidates scoring ``>=`` it, so ties count against the positive (a constant model
scores 0, not 1). NaN scores count as ``-inf``, the worst: a NaN positive ranks last.

A scoring function that lives on a GPU (``score_fn.on_device``, as
:class:`ncf.training.ModelScorer` of a GPU model) is called through its ``tensor`` method
instead: candidates, scores and ranks then stay on the device, and only the ranks come back.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import scipy.sparse as sp

from ncf.errors import NcfError
from ncf.split import Split

ScoreFn = Callable[[np.ndarray, np.ndarray], Any]


@dataclass(frozen=True)
class Metrics:
    """Ranking metrics averaged over evaluated users.

    Args:
        hr: hit ratio at ``k`` (equal to Recall@k with one held-out item per user).
        ndcg: NDCG at ``k``.
        mrr: mean reciprocal rank (not truncated at ``k``).
        n_users: number of evaluated (user, held-out item) rows.
        k: the cut-off.
        protocol: ``"sampled"`` or ``"full"``.
        ranks: int64 0-based rank of each row's positive, shape ``(n_users,)``, for
            per-user comparisons and significance tests.
    """

    hr: float
    ndcg: float
    mrr: float
    n_users: int
    k: int
    protocol: str
    ranks: np.ndarray = field(repr=False, compare=False)

    @classmethod
    def from_ranks(cls, ranks: np.ndarray, k: int, protocol: str) -> Metrics:
        """Average the per-row metrics of 0-based ``ranks`` (shape ``(n,)``)."""
        ranks = np.asarray(ranks, dtype=np.int64)
        if not len(ranks):
            raise NcfError("nothing to evaluate: no users")
        hit = ranks < k
        return cls(
            hr=float(hit.mean()),
            ndcg=float(np.where(hit, 1.0 / np.log2(ranks + 2.0), 0.0).mean()),
            mrr=float((1.0 / (ranks + 1.0)).mean()),
            n_users=len(ranks),
            k=k,
            protocol=protocol,
            ranks=ranks,
        )

    def as_dict(self) -> dict[str, Any]:
        """The scalar fields (``ranks`` left out), e.g. for JSON."""
        return {"hr": self.hr, "ndcg": self.ndcg, "mrr": self.mrr, "n_users": self.n_users,
                "k": self.k, "protocol": self.protocol}


def _check_k(k: int) -> None:
    if k < 1:
        raise NcfError(f"k must be >= 1, got {k}")


def positive_ranks(pos_scores: np.ndarray, neg_scores: np.ndarray) -> np.ndarray:
    """0-based rank of each positive: how many of its candidates score ``>=`` it.

    Args:
        pos_scores: score of each positive, shape ``(B,)``.
        neg_scores: scores of its candidates, shape ``(B, C)``.

    Returns:
        int64 ranks in ``0..C``, shape ``(B,)``; NaN counts as ``-inf`` and ties count
        against the positive, so a NaN or ``-inf`` positive ranks ``C``.
    """
    pos = np.asarray(pos_scores)
    neg = np.asarray(neg_scores)
    if pos.ndim != 1 or neg.ndim != 2 or len(pos) != len(neg):
        raise NcfError(f"scores of shapes {pos.shape} and {neg.shape}, expected (B,) and (B, C)")
    worst = np.isnan(pos) | (pos == -np.inf)
    ranks = np.count_nonzero(neg >= pos[:, None], axis=1).astype(np.int64)
    ranks[worst] = neg.shape[1]
    return ranks


def rank_metrics(
    pos_scores: np.ndarray, neg_scores: np.ndarray, k: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per-row metrics of positives ranked among their candidates.

    Args:
        pos_scores: shape ``(B,)``; neg_scores: shape ``(B, C)``; k: the cut-off.

    Returns:
        ``(ranks, hit, ndcg, rr)``, each shape ``(B,)``: 0-based rank (see
        :func:`positive_ranks`), ``rank < k`` as float, ``1 / log2(rank + 2)`` if
        ``rank < k`` else 0, and ``1 / (rank + 1)``.
    """
    _check_k(k)
    ranks = positive_ranks(pos_scores, neg_scores)
    hit = ranks < k
    ndcg = np.where(hit, 1.0 / np.log2(ranks + 2.0), 0.0)
    return ranks, hit.astype(np.float64), ndcg, 1.0 / (ranks + 1.0)


def positive_ranks_torch(pos: Any, neg: Any) -> Any:
    """:func:`positive_ranks` of torch tensors, computed where they are."""
    import torch

    worst = torch.isnan(pos) | (pos == -torch.inf)
    ranks = (neg >= pos[:, None]).sum(1)
    return ranks.masked_fill_(worst, neg.shape[1])


def _on_device(score_fn: ScoreFn) -> bool:
    return bool(getattr(score_fn, "on_device", False))


def _device_tensor(score_fn: ScoreFn, a: Any) -> Any:
    """``a`` (array or tensor) as an int64 tensor on the scoring function's device."""
    import torch

    t = a if isinstance(a, torch.Tensor) else torch.from_numpy(np.asarray(a))
    return t.to(device=score_fn.device, dtype=torch.int64)  # type: ignore[attr-defined]


def _sampled_ranks_on_device(
    score_fn: ScoreFn, users: Any, positives: Any, negatives: Any, batch_size: int
) -> np.ndarray:
    """The sampled protocol's ranks with scores and ranks on the scoring function's device."""
    import torch

    users, positives = _device_tensor(score_fn, users), _device_tensor(score_fn, positives)
    negatives = _device_tensor(score_fn, negatives)
    ranks = torch.empty(len(users), dtype=torch.int64, device=users.device)
    for start in range(0, len(users), batch_size):
        end = min(start + batch_size, len(users))
        items = torch.cat([positives[start:end, None], negatives[start:end]], dim=1)
        s = score_fn.tensor(users[start:end], items)  # type: ignore[attr-defined]
        # a candidate equal to the positive is the positive itself (paper's code)
        s[:, 1:].masked_fill_(items[:, 1:] == items[:, :1], -torch.inf)
        ranks[start:end] = positive_ranks_torch(s[:, 0], s[:, 1:])
    return ranks.cpu().numpy()


def _scores(score_fn: ScoreFn, users: np.ndarray, items: np.ndarray) -> np.ndarray:
    out = score_fn(users, items)
    if hasattr(out, "detach"):  # a torch tensor, without importing torch here
        out = out.detach().float().cpu().numpy()
    out = np.asarray(out)
    if out.shape != items.shape:
        raise NcfError(f"score_fn returned shape {out.shape}, expected {items.shape}")
    if out.dtype.kind != "f":
        out = out.astype(np.float64)
    return out


def _rows(users: np.ndarray, positives: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    users = np.asarray(users, dtype=np.int64).reshape(-1)
    positives = np.asarray(positives, dtype=np.int64).reshape(-1)
    if len(users) != len(positives):
        raise NcfError(f"{len(users)} users but {len(positives)} positives")
    if not len(users):
        raise NcfError("nothing to evaluate: no users")
    return users, positives


def evaluate_sampled(
    score_fn: ScoreFn,
    users: np.ndarray,
    positives: np.ndarray,
    negatives: np.ndarray,
    k: int = 10,
    batch_size: int = 8192,
) -> Metrics:
    """The paper's protocol: rank each positive among itself and its candidates.

    Args:
        score_fn: ``(users (B,), items (B, C)) -> scores (B, C)``.
        users: int users, shape ``(n,)``.
        positives: the held-out item of each row, shape ``(n,)``.
        negatives: its candidates, shape ``(n, C)`` (e.g. 99 per row). With a scoring
            function on a device, the three may be tensors already there.
        k: the cut-off of HR and NDCG.
        batch_size: rows scored per call of ``score_fn``.

    Returns:
        :class:`Metrics` with ``protocol="sampled"``.
    """
    _check_k(k)
    if _on_device(score_fn):
        if len(negatives) != len(users) or len(negatives.shape) != 2 or not len(users):
            raise NcfError(f"negatives of shape {tuple(negatives.shape)}, expected "
                           f"({len(users)}, C)")
        ranks = _sampled_ranks_on_device(score_fn, users, positives, negatives, batch_size)
        return Metrics.from_ranks(ranks, k, "sampled")
    users, positives = _rows(users, positives)
    negatives = np.asarray(negatives)
    if negatives.ndim != 2 or len(negatives) != len(users):
        raise NcfError(f"negatives of shape {negatives.shape}, expected ({len(users)}, C)")
    ranks = np.empty(len(users), dtype=np.int64)
    for start in range(0, len(users), batch_size):
        end = min(start + batch_size, len(users))
        items = np.empty((end - start, 1 + negatives.shape[1]), dtype=np.int64)
        items[:, 0] = positives[start:end]
        items[:, 1:] = negatives[start:end]
        s = _scores(score_fn, users[start:end], items)
        same = items[:, 1:] == items[:, :1]
        if same.any():  # a candidate equal to the positive is the positive itself (paper's code)
            s = s.copy()
            s[:, 1:][same] = -np.inf
        ranks[start:end] = positive_ranks(s[:, 0], s[:, 1:])
    return Metrics.from_ranks(ranks, k, "sampled")


def evaluate_full(
    score_fn: ScoreFn,
    users: np.ndarray,
    positives: np.ndarray,
    exclude: sp.csr_matrix | None,
    n_items: int,
    k: int = 10,
    batch_size: int | None = None,
) -> Metrics:
    """Full ranking: rank each positive among every item but the user's excluded ones.

    Args:
        score_fn: ``(users (B,), items (B, n_items)) -> scores (B, n_items)``.
        users: int users, shape ``(n,)``.
        positives: the held-out item of each row, shape ``(n,)``; never excluded, even
            when ``exclude`` lists it.
        exclude: ``user_items`` csr matrix ``(n_users, n_items)`` of items left out of
            the ranking (the user's other known items), or ``None``.
        n_items: number of items.
        k: the cut-off of HR (= Recall@k with one positive) and NDCG.
        batch_size: rows scored per call; default about 16M scores per batch.

    Returns:
        :class:`Metrics` with ``protocol="full"``.
    """
    _check_k(k)
    users, positives = _rows(users, positives)
    if positives.min() < 0 or positives.max() >= n_items:
        raise NcfError(f"positive item outside 0..{n_items - 1}")
    if exclude is not None:
        if exclude.shape[1] != n_items:
            raise NcfError(f"exclude matrix has {exclude.shape[1]} items, expected {n_items}")
        exclude = sp.csr_matrix(exclude)
        exclude.sum_duplicates()  # one entry per (user, item): candidate counts stay exact
    batch_size = batch_size or max(1, 2**24 // n_items)
    on_device = _on_device(score_fn)
    ranks = np.empty(len(users), dtype=np.int64)
    for start in range(0, len(users), batch_size):
        u, p = users[start : start + batch_size], positives[start : start + batch_size]
        rows = np.arange(len(u))
        n_candidates = np.full(len(u), n_items - 1, dtype=np.int64)
        r = cols = np.zeros(0, dtype=np.int64)
        if exclude is not None:
            sub = exclude[u]
            r, cols = np.repeat(rows, np.diff(sub.indptr)), sub.indices
            other = cols != p[r]
            n_candidates -= np.bincount(r[other], minlength=len(u))
        rank_fn = _full_ranks_on_device if on_device else _full_ranks
        ranks[start : start + len(u)] = rank_fn(score_fn, u, p, n_items, r, cols, n_candidates)
    return Metrics.from_ranks(ranks, k, "full")


def _full_ranks(score_fn: ScoreFn, u: np.ndarray, p: np.ndarray, n_items: int, r: np.ndarray,
                cols: np.ndarray, n_candidates: np.ndarray) -> np.ndarray:
    """Ranks of positives ``p`` of users ``u`` among every item, entries ``(r, cols)`` left out."""
    all_items = np.arange(n_items, dtype=np.int64)
    s = np.array(_scores(score_fn, u, np.broadcast_to(all_items, (len(u), n_items))))
    rows = np.arange(len(u))
    pos = s[rows, p]
    s[r, cols] = -np.inf
    s[rows, p] = np.nan  # the positive is not its own candidate
    rk = np.count_nonzero(s >= pos[:, None], axis=1).astype(np.int64)
    worst = np.isnan(pos) | (pos == -np.inf)
    rk[worst] = n_candidates[worst]
    return rk


def _full_ranks_on_device(score_fn: ScoreFn, u: np.ndarray, p: np.ndarray, n_items: int,
                          r: np.ndarray, cols: np.ndarray, n_candidates: np.ndarray) -> np.ndarray:
    """:func:`_full_ranks` with scores and ranks on the scoring function's device."""
    import torch

    dev = score_fn.device  # type: ignore[attr-defined]
    ut, pt = _device_tensor(score_fn, u), _device_tensor(score_fn, p)
    items = torch.arange(n_items, device=dev).expand(len(u), n_items)
    s = score_fn.tensor(ut, items)  # type: ignore[attr-defined]
    rows = torch.arange(len(u), device=dev)
    pos = s[rows, pt]
    s[_device_tensor(score_fn, r), _device_tensor(score_fn, cols)] = -torch.inf
    s[rows, pt] = torch.nan  # the positive is not its own candidate
    rk = (s >= pos[:, None]).sum(1)
    worst = torch.isnan(pos) | (pos == -torch.inf)
    rk = torch.where(worst, _device_tensor(score_fn, n_candidates), rk)
    return rk.cpu().numpy()


def _exclude_matrix(split: Split) -> sp.csr_matrix:
    """``user_items`` of every interaction in the split (train, validation, test)."""
    parts = [split.train, split.test] + ([split.validation] if split.validation is not None else [])
    u = np.concatenate([x.user_ids for x in parts])
    i = np.concatenate([x.item_ids for x in parts])
    m = sp.csr_matrix(
        (np.ones(len(u), dtype=np.float32), (u, i)),
        shape=(split.train.n_users, split.train.n_items),
    )
    m.sum_duplicates()
    return m


def evaluate(
    score_fn: ScoreFn,
    split: Split,
    on: Literal["test", "validation"] = "test",
    protocol: Literal["sampled", "full"] = "sampled",
    k: int = 10,
    max_users: int | None = None,
    seed: int = 0,
    batch_size: int | None = None,
) -> Metrics:
    """Evaluate on a split's test or validation rows.

    Full ranking leaves out every other item the user interacted with: for ``"test"``
    the train and validation items, for ``"validation"`` the train items and the test
    item too (so a model is neither rewarded nor penalised for ranking the test item
    high while being tuned); the positive itself always stays in. The sampled protocol
    uses the split's ``test_negatives`` / ``validation_negatives``
    (:func:`ncf.split.with_negatives` fills them).

    Args:
        score_fn: ``(users (B,), items (B, C)) -> scores (B, C)``.
        split: the split.
        on: ``"test"`` or ``"validation"``.
        protocol: ``"sampled"`` or ``"full"``.
        k: the cut-off.
        max_users: evaluate a seeded random sample of at most this many rows (full
            ranking of 480k users x 17,770 items is costly); ``None``: all.
        seed: seed of that sample.
        batch_size: rows per ``score_fn`` call (default: per protocol).

    Returns:
        :class:`Metrics`.
    """
    if on not in ("test", "validation"):
        raise NcfError(f"on must be 'test' or 'validation', got {on!r}")
    if protocol not in ("sampled", "full"):
        raise NcfError(f"protocol must be 'sampled' or 'full', got {protocol!r}")
    held = split.test if on == "test" else split.validation
    negatives = split.test_negatives if on == "test" else split.validation_negatives
    if held is None:
        raise NcfError("the split has no validation set (see ncf.split.holdout_validation)")
    rows = np.arange(len(held))
    if max_users is not None and max_users < len(held):
        rows = np.sort(np.random.default_rng(seed).choice(len(held), max_users, replace=False))
    users, positives = held.user_ids[rows], held.item_ids[rows]
    if protocol == "sampled":
        if negatives is None:
            raise NcfError(f"the split has no {on} negatives: call ncf.split.with_negatives first")
        return evaluate_sampled(
            score_fn, users, positives, negatives[rows], k=k, batch_size=batch_size or 8192
        )
    return evaluate_full(
        score_fn, users, positives, _exclude_matrix(split), split.train.n_items, k=k,
        batch_size=batch_size,
    )


def evaluate_full_sets(
    score_fn: ScoreFn,
    users: np.ndarray,
    positives: sp.csr_matrix,
    exclude: sp.csr_matrix | None,
    n_items: int,
    k: int = 10,
    batch_size: int | None = None,
) -> Metrics:
    """Full ranking with several held-out items per user (e.g. whole held-out users).

    Every item but the user's excluded ones is ranked; ties are ordered against the
    held-out items, NaN scores count as ``-inf``. Per user: Recall@k = hits in the top ``k``
    divided by ``min(k, |held-out|)`` (1 when the top ``k`` is all held-out items), NDCG@k
    with the ideal DCG of ``min(k, |held-out|)`` hits, and the reciprocal rank of the first
    held-out item; all averaged over users.

    Args:
        score_fn: ``(users (B,), items (B, n_items)) -> scores (B, n_items)``.
        users: int users, shape ``(n,)``.
        positives: csr ``(n, n_items)``: row ``b`` holds the held-out items of ``users[b]``
            (at least one).
        exclude: csr ``(n, n_items)`` of items left out of the ranking (e.g. the items the
            user gave), or ``None``; a held-out item is never excluded.
        n_items: number of items.
        k: the cut-off.
        batch_size: rows scored per call; default about 16M scores per batch.

    Returns:
        :class:`Metrics` with ``hr`` = Recall@k, ``protocol="full-sets"`` and ``ranks`` the
        0-based rank of each user's first held-out item.
    """
    _check_k(k)
    users = np.asarray(users, dtype=np.int64).reshape(-1)
    positives = sp.csr_matrix(positives)
    if positives.shape != (len(users), n_items):
        raise NcfError(f"positives of shape {positives.shape}, expected ({len(users)}, {n_items})")
    if exclude is not None and sp.csr_matrix(exclude).shape != positives.shape:
        raise NcfError(f"exclude of shape {exclude.shape}, expected {positives.shape}")
    counts = np.diff(positives.indptr)
    if not len(users) or counts.min() < 1:
        raise NcfError("every evaluated user needs at least one held-out item")
    batch_size = batch_size or max(1, 2**24 // n_items)
    all_items = np.arange(n_items, dtype=np.int64)
    discount = 1.0 / np.log2(np.arange(k) + 2.0)
    ideal = np.cumsum(discount)
    recall = np.empty(len(users))
    ndcg = np.empty(len(users))
    first = np.empty(len(users), dtype=np.int64)
    for start in range(0, len(users), batch_size):
        sl = slice(start, min(start + batch_size, len(users)))
        u = users[sl]
        s = np.array(_scores(score_fn, u, np.broadcast_to(all_items, (len(u), n_items))),
                     dtype=np.float64)
        s[np.isnan(s)] = -np.inf
        is_pos = positives[sl].toarray() > 0
        dropped = np.zeros_like(is_pos)
        if exclude is not None:
            ex = sp.csr_matrix(exclude)[sl]
            dropped[np.repeat(np.arange(len(u)), np.diff(ex.indptr)), ex.indices] = True
            dropped &= ~is_pos
            s[dropped] = -np.inf
        # descending score; among equal scores the held-out items last, excluded ones after all
        order = np.lexsort((is_pos, -s, dropped), axis=-1)
        hits = np.take_along_axis(is_pos, order, axis=1)
        n_pos = counts[sl]
        top = hits[:, :k]
        recall[sl] = top.sum(1) / np.minimum(k, n_pos)
        ndcg[sl] = (top * discount).sum(1) / ideal[np.minimum(k, n_pos) - 1]
        first[sl] = np.argmax(hits, axis=1)
    return Metrics(hr=float(recall.mean()), ndcg=float(ndcg.mean()),
                   mrr=float((1.0 / (first + 1.0)).mean()), n_users=len(users), k=k,
                   protocol="full-sets", ranks=first)
