"""Preparation: implicit feedback, duplicates, k-core, subsamples, counts."""

from __future__ import annotations

import numpy as np
import pytest

from ncf.errors import NcfError
from ncf.interactions import Interactions
from ncf.prepare import compact, deduplicate, kcore, parse_count, subsample, to_implicit


def _random(n: int = 3000, seed: int = 0) -> Interactions:
    rng = np.random.default_rng(seed)
    users = rng.integers(0, 200, n) * 3 + 1  # raw ids with gaps
    items = (rng.pareto(1.0, n) * 10).astype(int) % 400
    return Interactions.from_raw(users, items, rng.integers(1, 6, n), rng.integers(0, 10**6, n))


def test_to_implicit():
    x = Interactions.from_raw(np.array([1, 1, 2]), np.array([1, 2, 1]), np.array([5, 2, 4]))
    assert to_implicit(x) is x
    pos = to_implicit(x, threshold=4)
    assert pos.ratings.tolist() == [5, 4] and pos.item_ids.tolist() == [0, 0]
    with pytest.raises(NcfError, match="needs ratings"):
        to_implicit(Interactions.from_raw(np.array([1]), np.array([1])), threshold=4)


def test_deduplicate_keeps_the_latest_or_first():
    # pair (1, 7) three times: ratings 3 (t=5), 4 (t=9), 5 (t=9, later row); pair (2, 7) once
    x = Interactions.from_raw(np.array([1, 2, 1, 1]), np.array([7, 7, 7, 7]),
                              np.array([3, 1, 4, 5]), np.array([5, 0, 9, 9]))
    latest = deduplicate(x)
    assert latest.ratings.tolist() == [1, 5]  # original order kept
    first = deduplicate(x, rule="first")
    assert first.ratings.tolist() == [3, 1]
    y = Interactions.from_raw(np.array([1, 1]), np.array([7, 7]), np.array([2, 3]))
    assert deduplicate(y).ratings.tolist() == [3]  # no timestamps: later row
    assert deduplicate(latest) is latest
    with pytest.raises(NcfError, match="rule"):
        deduplicate(x, rule="max")  # type: ignore[arg-type]


def test_compact_keeps_raw_ids_sorted():
    x = _random()
    part = x.subset(x.user_ids % 2 == 0)
    c = compact(part)
    assert c.n_users == len(np.unique(part.user_ids)) and (np.diff(c.user_raw) > 0).all()
    assert (np.diff(c.item_raw) > 0).all()
    np.testing.assert_array_equal(c.user_raw[c.user_ids], part.user_raw[part.user_ids])
    np.testing.assert_array_equal(c.item_raw[c.item_ids], part.item_raw[part.item_ids])


@pytest.mark.parametrize("mu, mi", [(5, 5), (10, 3), (1, 20)])
def test_kcore_condition_holds(mu, mi):
    x = deduplicate(_random())
    core = kcore(x, min_user=mu, min_item=mi)
    assert len(core) > 0
    assert core.user_counts().min() >= mu and core.item_counts().min() >= mi
    # maximal: it is exactly the fixed point (rerunning removes nothing)
    assert len(kcore(core, mu, mi)) == len(core)
    # rows of the core are rows of the input
    raw = set(zip(x.user_raw[x.user_ids].tolist(), x.item_raw[x.item_ids].tolist(), strict=True))
    assert set(zip(core.user_raw[core.user_ids].tolist(),
                   core.item_raw[core.item_ids].tolist(), strict=True)) <= raw


def test_kcore_iterates():
    # user 3 and item 3 have one row each and drop together; the rest is a 2-core
    x = Interactions.from_raw(np.array([1, 1, 2, 2, 3]), np.array([1, 2, 1, 2, 3]))
    core = kcore(x, min_user=2, min_item=2)
    assert core.user_raw.tolist() == [1, 2] and core.item_raw.tolist() == [1, 2]
    # a chain: each round leaves a user or item below 2, until nothing is left
    chain = Interactions.from_raw(np.array([1, 1, 2, 2, 3]), np.array([1, 2, 1, 3, 3]))
    assert len(kcore(chain, min_user=2, min_item=2)) == 0


def test_subsample_strategies():
    x = _random()
    n = 1000
    users = subsample(x, n, seed=3)
    counts = x.user_counts()
    assert n <= len(users) < n + counts.max()
    # whole users: every kept user keeps all its rows
    kept = np.isin(x.user_raw, users.user_raw)
    assert len(users) == counts[kept].sum()
    assert np.array_equal(subsample(x, n, seed=3).user_raw, users.user_raw)
    assert not np.array_equal(subsample(x, n, seed=4).user_raw, users.user_raw)

    head = subsample(x, n, strategy="head")
    assert len(head) == n
    np.testing.assert_array_equal(head.user_raw[head.user_ids], x.user_raw[x.user_ids[:n]])

    rand = subsample(x, n, strategy="random", seed=1)
    assert len(rand) == n
    np.testing.assert_array_equal(rand.ratings, subsample(x, n, strategy="random", seed=1).ratings)
    assert (rand.user_counts() > 0).all() and (rand.item_counts() > 0).all()  # compacted

    assert len(subsample(x, 10**9)) == len(x)
    with pytest.raises(NcfError, match="strategy"):
        subsample(x, n, strategy="tail")  # type: ignore[arg-type]
    with pytest.raises(NcfError, match="positive"):
        subsample(x, 0)


@pytest.mark.parametrize("text, value", [
    ("1M", 1_000_000), ("10k", 10_000), ("1.5M", 1_500_000), ("100M", 100_000_000),
    ("250000", 250_000), ("2.5K", 2500), ("1G", 10**9), ("1_000", 1000), (42, 42),
])
def test_parse_count(text, value):
    assert parse_count(text) == value


@pytest.mark.parametrize("text", ["", "abc", "1.5", "-3", "1.0005k", "10x", "M", -1])
def test_parse_count_rejects(text):
    with pytest.raises(NcfError):
        parse_count(text)
