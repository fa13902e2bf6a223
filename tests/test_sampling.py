"""Negative sampling: never a positive, right layout, distinct candidates, determinism."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ncf.errors import NcfError
from ncf.sampling import KeySet, dense_rank, sample_candidates, sample_negatives, sorted_unique


@st.composite
def positives(draw: st.DrawFn) -> tuple[np.ndarray, int, int]:
    """Sorted unique keys of a random small user x item set, each user missing >= 1 item."""
    n_users = draw(st.integers(1, 12))
    n_items = draw(st.integers(2, 40))
    seed = draw(st.integers(0, 2**32 - 1))
    density = draw(st.floats(0.0, 0.97))
    rng = np.random.default_rng(seed)
    mask = rng.random((n_users, n_items)) < density
    mask[np.arange(n_users), rng.integers(0, n_items, n_users)] = False
    return np.flatnonzero(mask.reshape(-1)).astype(np.int64), n_users, n_items


@settings(max_examples=60, deadline=None)
@given(positives(), st.integers(0, 6), st.integers(0, 2**32 - 1), st.booleans())
def test_negatives_never_positive_and_laid_out_by_entry(data, n_neg, seed, bitset):
    keys, n_users, n_items = data
    users = np.random.default_rng(seed).integers(0, n_users + 2, 30)  # some users unseen
    ks = KeySet(keys, n_items, max_bitset_bytes=2**20 if bitset else 0)
    neg = sample_negatives(users, ks, n_items, n_neg, np.random.default_rng(seed))
    assert neg.dtype == np.int64 and neg.shape == (len(users) * n_neg,)
    assert ((neg >= 0) & (neg < n_items)).all()
    owner = np.repeat(users, n_neg)  # the documented layout
    assert not np.isin(owner * n_items + neg, keys).any()
    # same generator state, same draws; array keys and KeySet agree
    again = sample_negatives(users, keys, n_items, n_neg, np.random.default_rng(seed))
    np.testing.assert_array_equal(neg, again)


def test_negatives_layout_is_entry_major():
    # user 0 may only get item 0, user 1 only item 1: the layout is visible in the output
    keys = np.array([1, 2, 3, 4, 6, 7], dtype=np.int64)  # n_items=4: user0 {1,2,3}, user1 {0,2,3}
    neg = sample_negatives(np.array([0, 1, 0]), keys, 4, 3, np.random.default_rng(0))
    assert neg.tolist() == [0, 0, 0, 1, 1, 1, 0, 0, 0]


def test_negatives_uniform_over_allowed_items():
    keys = np.array([0, 1], dtype=np.int64)  # user 0 saw items 0, 1 of 5
    neg = sample_negatives(np.zeros(30_000, dtype=np.int64), keys, 5, 1, np.random.default_rng(1))
    freq = np.bincount(neg, minlength=5) / len(neg)
    assert freq[:2].sum() == 0
    np.testing.assert_allclose(freq[2:], 1 / 3, atol=0.015)


def test_nearly_full_user_uses_exact_draws():
    n_items = 2000
    keys = np.delete(np.arange(n_items, dtype=np.int64), [7, 1500])  # user 0 lacks 2 items
    users = np.zeros(500, dtype=np.int64)
    neg = sample_negatives(users, keys, n_items, 2, np.random.default_rng(0))
    assert set(neg.tolist()) == {7, 1500}


def test_user_without_negative_raises():
    keys = np.arange(3, 6, dtype=np.int64)  # n_items=3: user 1 saw all three
    with pytest.raises(NcfError, match="user 1 interacted with all 3 items"):
        sample_negatives(np.array([0, 1]), keys, 3, 1, np.random.default_rng(0))


def test_bad_keys_raise():
    with pytest.raises(NcfError, match="sorted"):
        KeySet(np.array([5, 3], dtype=np.int64), 10)
    with pytest.raises(NcfError, match="n_items"):
        KeySet(np.array([1], dtype=np.int64), 0)
    with pytest.raises(NcfError, match="non-negative"):
        sample_negatives(np.array([-1]), np.array([1], dtype=np.int64), 4, 1,
                         np.random.default_rng(0))


def test_keyset_lookups_agree_with_isin():
    rng = np.random.default_rng(0)
    keys = np.unique(rng.integers(0, 5000, 800))
    q = rng.integers(0, 7000, (50, 9))
    for limit in (2**20, 0):
        np.testing.assert_array_equal(KeySet(keys, 100, limit).contains(q), np.isin(q, keys))
    ks = KeySet(keys, 100)
    offsets, items = ks.items_of(np.array([3, 0]))
    np.testing.assert_array_equal(items[: offsets[1]], keys[(keys >= 300) & (keys < 400)] - 300)
    np.testing.assert_array_equal(ks.counts(np.array([3, 0, 99])),
                                  [np.diff(offsets)[0], np.diff(offsets)[1], 0])


@settings(max_examples=60, deadline=None)
@given(positives(), st.integers(0, 2**32 - 1))
def test_candidates_distinct_and_never_excluded(data, seed):
    keys, n_users, n_items = data
    users = np.arange(n_users, dtype=np.int64)
    allowed = n_items - np.bincount(keys // n_items, minlength=n_users)
    n = int(allowed.min())  # the largest n every user can fill (forces the exact path too)
    cand = sample_candidates(users, keys, n_items, n=n, seed=seed)
    assert cand.dtype == np.int32 and cand.shape == (n_users, n)
    assert not np.isin(users[:, None] * n_items + cand, keys).any()
    assert all(len(set(row)) == n for row in cand.tolist())
    np.testing.assert_array_equal(cand, sample_candidates(users, keys, n_items, n=n, seed=seed))


def test_candidates_uniform_and_seeded():
    keys = np.arange(10, dtype=np.int64)  # every user saw items 0..9 of 110 -> 100 allowed
    keys = (np.arange(4000)[:, None] * 110 + keys).reshape(-1)
    users = np.arange(4000)
    cand = sample_candidates(users, keys, 110, n=20, seed=5)
    assert cand.min() >= 10
    freq = np.bincount(cand.reshape(-1), minlength=110)[10:] / cand.size
    np.testing.assert_allclose(freq, 1 / 100, atol=0.002)
    assert not np.array_equal(cand, sample_candidates(users, keys, 110, n=20, seed=6))


def test_candidates_too_few_items_raise():
    with pytest.raises(NcfError, match="user 0 has only 2 of the 5 items unseen, too few for 3"):
        sample_candidates(np.array([0]), np.array([0, 1, 2], dtype=np.int64), 5, n=3)
    with pytest.raises(NcfError, match="too few for 99999999999999999999"):  # nothing allocated
        sample_candidates(np.array([0]), np.array([0, 1, 2], dtype=np.int64), 5, n=10**20 - 1)
    with pytest.raises(NcfError, match="user u7 has only 2 of the 5 items unseen"):  # raw id
        sample_candidates(np.array([0]), np.array([0, 1, 2], dtype=np.int64), 5, n=3,
                          user_raw=np.array(["u7"]))


def test_sorted_unique_and_dense_rank_match_numpy():
    v = np.array([7, -2, 7, 3, 3, 3, 10**12])
    np.testing.assert_array_equal(sorted_unique(v), np.unique(v))
    np.testing.assert_array_equal(dense_rank(v), np.unique(v, return_inverse=True)[1])
    assert sorted_unique(np.zeros(0, np.int64)).size == 0 and dense_rank(np.zeros(0)).size == 0
