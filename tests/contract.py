"""The contract every :class:`~ncf.recommender.Recommender` honours, as a reusable mixin.

A model's test class inherits :class:`RecommenderContract` and implements ``make_model``
(an unfitted model whose fit on the fixture below takes about a second at most)::

    class TestEASE(RecommenderContract):
        def make_model(self) -> Recommender:
            return EASE(reg=1.0)

The fixture's right answer is known by construction: two disjoint communities of users,
each liking items of its own block (with popularity inside the block) plus one random
item of the other block; one in-block item per user is held out.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import pytest

from ncf.errors import NcfError
from ncf.interactions import Interactions
from ncf.recommender import Recommender

N_USERS, N_ITEMS, LIKES = 60, 40, 10


@dataclass(frozen=True)
class Communities:
    """The fixture: training interactions and one held-out in-block item per user."""

    train: Interactions
    held_out: np.ndarray  # (N_USERS,) item held out for each user
    block: np.ndarray  # (N_USERS,) 0 or 1: the user's community
    item_block: np.ndarray  # (N_ITEMS,) 0 or 1: the item's block


@lru_cache(maxsize=1)
def communities() -> Communities:
    """Build the two-community fixture (deterministic)."""
    rng = np.random.default_rng(42)
    half = N_ITEMS // 2
    block = (np.arange(N_USERS) >= N_USERS // 2).astype(np.int64)
    item_block = (np.arange(N_ITEMS) >= half).astype(np.int64)
    popularity = 1.0 / np.sqrt(np.arange(1, half + 1))
    users, items, held = [], [], np.empty(N_USERS, dtype=np.int64)
    for u in range(N_USERS):  # fixture construction only: 60 users
        liked = rng.choice(half, size=LIKES, replace=False, p=popularity / popularity.sum())
        liked = liked + half * block[u]
        noise = rng.integers(half) + half * (1 - block[u])
        held[u] = liked[0]
        kept = np.append(liked[1:], noise)
        users.append(np.full(len(kept), u))
        items.append(kept)
    u_arr, i_arr = np.concatenate(users), np.concatenate(items)
    train = Interactions(
        user_ids=u_arr.astype(np.int32), item_ids=i_arr.astype(np.int32), ratings=None,
        timestamps=None, n_users=N_USERS, n_items=N_ITEMS,
        user_raw=np.arange(N_USERS), item_raw=np.arange(N_ITEMS),
    )
    return Communities(train, held, block, item_block)


def _close(a: np.ndarray, b: np.ndarray) -> None:
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


class RecommenderContract:
    """Contract tests; subclasses implement :meth:`make_model`."""

    def make_model(self) -> Recommender:
        raise NotImplementedError

    @pytest.fixture(scope="class")
    @classmethod
    def data(cls) -> Communities:
        return communities()

    @pytest.fixture(scope="class")
    @classmethod
    def model(cls, data: Communities) -> Recommender:
        """Fitted once per test class."""
        return cls().make_model().fit(data.train)

    # the right answer -----------------------------------------------------------
    def test_known_answer(self, model: Recommender, data: Communities) -> None:
        """Held-out in-block items rank far above the unseen out-of-block items."""
        seen = data.train.tocsr().toarray() > 0
        out_block = data.item_block[None, :] != data.block[:, None]
        candidates = np.where(out_block & ~seen, 1, 0)
        hits, in_above_out = [], []
        scores = model.score(np.arange(N_USERS), np.tile(np.arange(N_ITEMS), (N_USERS, 1)))
        for u in range(N_USERS):
            out = scores[u, candidates[u] == 1]
            held = scores[u, data.held_out[u]]
            hits.append((out >= held).sum() < 5)  # ties count against the held-out item
            in_block = scores[u, ~out_block[u] & ~seen[u]]
            in_above_out.append(in_block.mean() > out.mean())
        assert np.mean(hits) >= 0.8, f"HR@5 {np.mean(hits):.2f} (chance is about 0.25)"
        assert np.mean(in_above_out) >= 0.9

    # recommend ------------------------------------------------------------------
    def test_recommend_excludes_seen_items(self, model: Recommender, data: Communities) -> None:
        users = np.arange(N_USERS)
        ids, scores = model.recommend(users, k=5)
        seen = data.train.tocsr().toarray() > 0
        assert ids.shape == scores.shape == (N_USERS, 5)
        assert not seen[users[:, None], ids].any()
        assert np.isfinite(scores).all()

    def test_recommend_without_filter_ranks_every_item(self, model: Recommender) -> None:
        users = np.arange(N_USERS)
        ids, scores = model.recommend(users, k=N_ITEMS, filter_seen=False)
        assert (np.sort(ids, axis=1) == np.arange(N_ITEMS)).all()  # seen items included
        full = model.score(users, np.tile(np.arange(N_ITEMS), (N_USERS, 1)))
        _close(scores, -np.sort(-full, axis=1))

    def test_recommend_honours_filter_items(self, model: Recommender) -> None:
        users = np.arange(N_USERS)
        top, _ = model.recommend(users, k=3, filter_seen=False)
        banned = np.unique(top[:, 0])
        ids, _ = model.recommend(users, k=3, filter_seen=False, filter_items=banned)
        assert not np.isin(ids, banned).any()

    def test_recommend_sorted_and_scored_by_score(self, model: Recommender) -> None:
        users = np.arange(N_USERS)
        ids, scores = model.recommend(users, k=7)
        assert (np.diff(scores, axis=1) <= 0).all()
        _close(scores, model.score(users, ids))

    # batch versus single ------------------------------------------------------
    @pytest.mark.parametrize("n_candidates", [3, N_ITEMS])
    def test_batch_and_single_scores_agree(self, model: Recommender, n_candidates: int) -> None:
        rng = np.random.default_rng(0)
        users = np.array([3, 41, 3, 17])
        items = np.stack([rng.permutation(N_ITEMS)[:n_candidates] for _ in users])
        batch = model.score(users, items)
        assert batch.shape == items.shape
        for b in range(len(users)):
            _close(batch[b], model.score(users[b : b + 1], items[b : b + 1])[0])

    def test_few_and_all_candidates_agree(self, model: Recommender) -> None:
        users = np.arange(N_USERS)
        full = model.score(users, np.tile(np.arange(N_ITEMS), (N_USERS, 1)))
        few = np.stack([np.roll(np.arange(N_ITEMS), u)[:4] for u in users])
        _close(model.score(users, few), np.take_along_axis(full, few, axis=1))

    def test_batch_and_single_recommend_agree(self, model: Recommender) -> None:
        users = np.array([0, 35, 59, 12])
        ids, scores = model.recommend(users, k=6, batch_size=3)
        for b, u in enumerate(users):
            one_ids, one_scores = model.recommend(int(u), k=6)
            _close(scores[b], one_scores[0])
            assert (ids[b] == one_ids[0]).all()

    def test_empty_batch(self, model: Recommender) -> None:
        out = model.score(np.zeros(0, dtype=np.int64), np.zeros((0, 5), dtype=np.int64))
        assert out.shape == (0, 5)

    # persistence ----------------------------------------------------------------
    def test_save_load_round_trip(self, model: Recommender, tmp_path: Path) -> None:
        path = tmp_path / "model.npz"
        model.save(path)
        with np.load(path, allow_pickle=False) as z:
            for key in z.files:
                z[key]  # every array reads back without pickle
        loaded = Recommender.load(path)
        assert type(loaded) is type(model)
        users = np.arange(N_USERS)
        items = np.tile(np.arange(N_ITEMS), (N_USERS, 1))
        np.testing.assert_array_equal(loaded.score(users, items), model.score(users, items))
        np.testing.assert_array_equal(loaded.recommend(users, k=5)[0],
                                      model.recommend(users, k=5)[0])

    def test_refit_with_same_seed_is_identical(self, model: Recommender,
                                               data: Communities) -> None:
        again = self.make_model().fit(data.train)
        items = np.tile(np.arange(N_ITEMS), (N_USERS, 1))
        np.testing.assert_array_equal(again.score(np.arange(N_USERS), items),
                                      model.score(np.arange(N_USERS), items))

    # errors ---------------------------------------------------------------------
    @pytest.mark.parametrize("user", [N_USERS, -1])
    def test_unknown_user_raises(self, model: Recommender, user: int) -> None:
        with pytest.raises(NcfError, match="unknown user"):
            model.score(np.array([0, user]), np.zeros((2, 3), dtype=np.int64))
        with pytest.raises(NcfError, match="unknown user"):
            model.recommend(np.array([user]))

    def test_unknown_item_or_bad_shape_raises(self, model: Recommender) -> None:
        with pytest.raises(NcfError, match="unknown item"):
            model.score(np.array([0]), np.array([[0, N_ITEMS]]))
        with pytest.raises(NcfError):
            model.score(np.array([0, 1]), np.array([[0, 1]]))

    def test_unfitted_model_raises(self) -> None:
        with pytest.raises(NcfError):
            self.make_model().score(np.array([0]), np.array([[0]]))
