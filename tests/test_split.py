"""Leave-one-out and friends: invariants, tie rules, and the NCF benchmark files."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ncf.errors import NcfError
from ncf.interactions import Interactions
from ncf.split import Split, holdout_validation, leave_one_out, split_by_mask, with_negatives


def _rows(*parts: Interactions) -> np.ndarray:
    """The multiset of (user, item, timestamp) rows of ``parts``, as a sorted (3, n) array."""
    u = np.concatenate([p.user_ids for p in parts]).astype(np.int64)
    i = np.concatenate([p.item_ids for p in parts]).astype(np.int64)
    t = np.concatenate([p.timestamps if p.timestamps is not None else np.zeros(len(p), np.int64)
                        for p in parts])
    order = np.lexsort((t, i, u))
    return np.stack([u[order], i[order], t[order]])


def _check_invariants(x: Interactions, s: Split, min_interactions: int) -> None:
    parts = [s.train, s.test] + ([s.validation] if s.validation is not None else [])
    np.testing.assert_array_equal(_rows(*parts), _rows(x))
    counts = x.user_counts()
    evaluated = np.flatnonzero(counts >= min_interactions)
    np.testing.assert_array_equal(s.test.user_ids, evaluated)  # one per user, sorted
    if s.validation is not None:
        np.testing.assert_array_equal(s.validation.user_ids, evaluated)
    if x.timestamps is not None:
        latest_kept = np.full(x.n_users, np.iinfo(np.int64).min)
        for p in parts[:1] + parts[2:]:
            np.maximum.at(latest_kept, p.user_ids, p.timestamps)
        assert (s.test.timestamps >= latest_kept[s.test.user_ids]).all()
        if s.validation is not None:
            last_train = np.full(x.n_users, np.iinfo(np.int64).min)
            np.maximum.at(last_train, s.train.user_ids, s.train.timestamps)
            assert (s.validation.timestamps >= last_train[s.validation.user_ids]).all()
    # users below the threshold are wholly in train
    small = counts < min_interactions
    assert (np.bincount(s.train.user_ids, minlength=x.n_users)[small] == counts[small]).all()


@st.composite
def interactions(draw: st.DrawFn) -> Interactions:
    n = draw(st.integers(1, 80))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    users = rng.integers(0, draw(st.integers(1, 10)), n)
    items = rng.integers(0, 30, n)
    ts = rng.integers(0, draw(st.integers(1, 5)), n) * 1000  # many ties
    return Interactions.from_raw(users, items, timestamps=ts if draw(st.booleans()) else None)


@settings(max_examples=80, deadline=None)
@given(interactions(), st.booleans(), st.sampled_from(["random", "item_desc", "item_asc", "order"]))
def test_leave_one_out_invariants(x, validation, tie_break):
    need = 3 if validation else 2
    if not (x.user_counts() >= need).any():
        with pytest.raises(NcfError, match="nothing to evaluate"):
            leave_one_out(x, validation=validation, tie_break=tie_break)
        return
    s = leave_one_out(x, validation=validation, tie_break=tie_break, seed=1)
    _check_invariants(x, s, need)


def test_tie_rules_on_a_hand_made_user():
    # user 0: items 5, 9, 2 all at t=10 (latest), item 7 at t=1; rows in file order
    x = Interactions.from_raw(np.zeros(4, int), np.array([5, 9, 7, 2]),
                              timestamps=np.array([10, 10, 1, 10]))
    raw = lambda s: x.item_raw[s.test.item_ids].tolist()  # noqa: E731
    assert raw(leave_one_out(x, validation=False, tie_break="item_desc")) == [9]
    assert raw(leave_one_out(x, validation=False, tie_break="item_asc")) == [2]
    assert raw(leave_one_out(x, validation=False, tie_break="order")) == [2]
    s = leave_one_out(x, tie_break="item_desc")
    assert x.item_raw[s.validation.item_ids].tolist() == [5]
    picks = {raw(leave_one_out(x, validation=False, seed=seed))[0] for seed in range(30)}
    assert picks == {5, 9, 2}  # "random" reaches every tied item, never the older 7
    assert raw(leave_one_out(x, validation=False, seed=3)) == raw(
        leave_one_out(x, validation=False, seed=3))


def test_wide_time_span_keeps_the_order():
    # 2**60 s apart: the packed (time, item) key no longer fits, time ranks take over
    ts = np.array([0, 2**60, 2**60, 5])
    x = Interactions.from_raw(np.zeros(4, int), np.array([3, 1, 2, 4]), timestamps=ts)
    s = leave_one_out(x, tie_break="item_desc")
    assert x.item_raw[s.test.item_ids].tolist() == [2]
    assert x.item_raw[s.validation.item_ids].tolist() == [1]


def test_min_interactions_and_bad_arguments():
    x = Interactions.from_raw(np.array([0, 0, 0, 1, 1]), np.arange(5), timestamps=np.arange(5))
    s = leave_one_out(x, validation=False, min_interactions=3)
    assert s.test.user_ids.tolist() == [0] and len(s.train) == 4
    with pytest.raises(NcfError, match="min_interactions must be >= 3"):
        leave_one_out(x, min_interactions=2)
    with pytest.raises(NcfError, match="tie_break"):
        leave_one_out(x, tie_break="newest")  # type: ignore[arg-type]


def _table(path) -> np.ndarray:
    """A whitespace-separated table of ints with 4 columns (faster than np.loadtxt)."""
    return np.array(path.read_text().split(), dtype=np.int64).reshape(-1, 4)


@pytest.fixture(scope="module")
def ml100k(shared_data) -> Interactions:
    d = _table(shared_data / "ml-100k" / "u.data")
    return Interactions.from_raw(d[:, 0], d[:, 1], d[:, 2], d[:, 3])


def test_reproduces_the_ncf_benchmark_files(shared_data, ml100k):
    x = ml100k
    s = leave_one_out(x, validation=False, tie_break="item_desc")
    t = s.test
    lines = [
        f"{u - 1}\t{i - 1}\t{r}\t{ts}"
        for u, i, r, ts in zip(x.user_raw[t.user_ids].tolist(), x.item_raw[t.item_ids].tolist(),
                               t.ratings.astype(int).tolist(), t.timestamps.tolist(), strict=True)
    ]
    expected = (shared_data / "ncf" / "ml-100k.test.rating").read_text().splitlines()
    assert lines == expected
    train = _table(shared_data / "ncf" / "ml-100k.train.rating")
    assert len(s.train) == len(train) == 99_057
    ours = set(zip((x.user_raw[s.train.user_ids] - 1).tolist(),
                   (x.item_raw[s.train.item_ids] - 1).tolist(), strict=True))
    assert ours == set(zip(train[:, 0].tolist(), train[:, 1].tolist(), strict=True))
    _check_invariants(x, leave_one_out(x), 3)


def test_split_by_mask_and_holdout_validation():
    # user 0: 4 rows, rows 1 and 3 are test; user 1: 2 rows, row 5 test; user 2: 1 row
    x = Interactions.from_raw(np.array([0, 0, 0, 0, 1, 1, 2]), np.array([0, 1, 2, 3, 0, 4, 1]),
                              timestamps=np.array([5, 9, 7, 1, 3, 2, 1]))
    mask = np.array([False, True, False, True, False, True, False])
    s = split_by_mask(x, mask)
    assert s.test.user_ids.tolist() == [0, 0, 1] and s.test.item_ids.tolist() == [1, 3, 4]
    assert s.validation.item_ids.tolist() == [2]  # user 0's latest train row (t=7)
    assert sorted(s.train.item_ids.tolist()) == [0, 0, 1]
    with pytest.raises(NcfError, match="bool array"):
        split_by_mask(x, np.ones(3, bool))

    plain = split_by_mask(x, mask, validation=False)
    h = holdout_validation(plain, n_negatives=1, seed=0)
    assert h.validation.user_ids.tolist() == [0] and h.validation.item_ids.tolist() == [2]
    assert len(h.train) + len(h.validation) == len(plain.train)
    # user 0 interacted with items 0..3 of 5: its only possible candidate is item 4
    assert h.validation_negatives.tolist() == [[4]]
    with pytest.raises(NcfError, match="already has a validation"):
        holdout_validation(h)


def test_with_negatives_avoid_every_user_item(ml100k):
    x = ml100k
    s = with_negatives(leave_one_out(x), n=99, seed=0)
    seen = x.keys()
    for held, neg in ((s.test, s.test_negatives), (s.validation, s.validation_negatives)):
        assert neg.shape == (len(held), 99) and neg.dtype == np.int32
        keys = held.user_ids[:, None].astype(np.int64) * x.n_items + neg
        assert not np.isin(keys, seen).any()
        assert (np.diff(np.sort(neg, axis=1), axis=1) > 0).all()
    again = with_negatives(leave_one_out(x), n=99, seed=0)
    np.testing.assert_array_equal(s.test_negatives, again.test_negatives)
    assert with_negatives(s) is s  # nothing missing: unchanged
