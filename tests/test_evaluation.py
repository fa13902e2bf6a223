"""Metrics against hand-computed values, both protocols, and the random-model baseline."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from ncf.errors import NcfError
from ncf.evaluation import (
    Metrics,
    evaluate,
    evaluate_full,
    evaluate_sampled,
    positive_ranks,
    rank_metrics,
)
from ncf.interactions import Interactions
from ncf.split import Split


def table_fn(table: np.ndarray):
    """A scoring function gathering from a precomputed ``(n_users, n_items)`` table."""
    return lambda users, items: table[users[:, None], items]


def test_rank_metrics_hand_computed():
    pos = np.array([0.9, 0.5, 0.1, 0.5])
    neg = np.array([
        [0.1, 0.2, 0.3],  # rank 0
        [0.6, 0.5, 0.1],  # 0.6 above, 0.5 tie counts against -> rank 2
        [0.2, 0.3, 0.4],  # rank 3 = C
        [0.7, 0.8, 0.1],  # rank 2
    ])
    ranks, hit, ndcg, rr = rank_metrics(pos, neg, k=2)
    assert ranks.tolist() == [0, 2, 3, 2]
    assert hit.tolist() == [1, 0, 0, 0]
    np.testing.assert_allclose(ndcg, [1, 0, 0, 0])
    np.testing.assert_allclose(rr, [1, 1 / 3, 1 / 4, 1 / 3])
    _, hit3, ndcg3, _ = rank_metrics(pos, neg, k=3)
    assert hit3.tolist() == [1, 1, 0, 1]
    np.testing.assert_allclose(ndcg3, [1, 0.5, 0, 0.5])  # 1/log2(2 + 2) = 0.5


def test_k_edge_cases_and_nan():
    pos = np.array([0.5, np.nan, 0.5, -np.inf])
    neg = np.array([[0.4, np.nan], [0.1, 0.2], [0.5, 0.5], [np.nan, -np.inf]])
    assert positive_ranks(pos, neg).tolist() == [0, 2, 2, 2]  # NaN neg worst, NaN pos last
    ranks, hit, _, _ = rank_metrics(pos, neg, k=1)
    assert hit.tolist() == [1, 0, 0, 0]
    assert rank_metrics(pos, neg, k=100)[1].tolist() == [1, 1, 1, 1]  # k > C: every rank hits
    with pytest.raises(NcfError, match="k must be"):
        rank_metrics(pos, neg, k=0)
    with pytest.raises(NcfError, match="shapes"):
        positive_ranks(pos, neg[:2])


def test_metrics_from_ranks_and_dict():
    m = Metrics.from_ranks(np.array([0, 1, 10, 3]), k=2, protocol="sampled")
    assert m.hr == pytest.approx(0.5)
    assert m.ndcg == pytest.approx((1 + 1 / np.log2(3)) / 4)
    assert m.mrr == pytest.approx((1 + 1 / 2 + 1 / 11 + 1 / 4) / 4)
    assert m.as_dict() == {"hr": m.hr, "ndcg": m.ndcg, "mrr": m.mrr, "n_users": 4, "k": 2,
                           "protocol": "sampled"}


def test_evaluate_sampled_on_table_and_torch_output():
    table = np.array([[0.0, 0.9, 0.5, 0.7], [0.3, 0.2, 0.1, 0.0]])
    users, positives = np.array([0, 1]), np.array([2, 0])
    negatives = np.array([[1, 3], [1, 2]])
    m = evaluate_sampled(table_fn(table), users, positives, negatives, k=1, batch_size=1)
    assert m.ranks.tolist() == [2, 0] and m.hr == 0.5 and m.protocol == "sampled"
    torch = pytest.importorskip("torch")
    m2 = evaluate_sampled(lambda u, i: torch.as_tensor(table[u[:, None], i]), users, positives,
                          negatives, k=1)
    assert m2.ranks.tolist() == [2, 0]


def test_a_candidate_equal_to_the_positive_is_not_counted():
    # as the paper's code, whose dict of item scores holds the test item once: user 0's
    # positive 2 (0.5) is beaten by item 1 only; its copy among the candidates is ignored
    table = np.array([[0.0, 0.9, 0.5, 0.2], [0.3, 0.2, 0.1, 0.0]])
    users, positives = np.array([0, 1]), np.array([2, 0])
    negatives = np.array([[1, 2, 3], [0, 1, 2]])
    m = evaluate_sampled(table_fn(table), users, positives, negatives, k=1)
    assert m.ranks.tolist() == [1, 0] and m.hr == 0.5


def test_constant_model_scores_zero():
    n = 50
    m = evaluate_sampled(lambda u, i: np.zeros(i.shape), np.arange(n), np.zeros(n, int),
                         np.tile(np.arange(1, 100), (n, 1)), k=10)
    assert m.hr == 0.0 and (m.ranks == 99).all()


def test_random_scores_hit_ratio_near_k_over_candidates():
    rng = np.random.default_rng(0)
    n_users = 20_000
    negatives = rng.integers(1, 1000, (n_users, 99))
    m = evaluate_sampled(lambda u, i: rng.random(i.shape), np.arange(n_users),
                         np.zeros(n_users, int), negatives, k=10)
    assert m.hr == pytest.approx(0.10, abs=0.01)
    assert m.mrr == pytest.approx(np.mean(1 / np.arange(1, 101)), abs=0.01)


def test_full_ranking_excludes_seen_but_never_the_positive():
    # user 0: scores item i = i; seen {4, 5, 2}; positive 3 -> only no item above 3 remains
    table = np.tile(np.arange(6, dtype=np.float32), (2, 1))
    exclude = sp.csr_matrix(np.array([[0, 0, 1, 1, 1, 1], [0, 0, 0, 0, 0, 0]], dtype=np.float32))
    m = evaluate_full(table_fn(table), np.array([0, 1]), np.array([3, 3]), exclude, 6, k=1)
    # user 0: 4, 5 excluded, 3 itself listed in exclude but kept -> rank 0
    # user 1: nothing excluded -> items 4, 5 above -> rank 2
    assert m.ranks.tolist() == [0, 2] and m.hr == 0.5 and m.protocol == "full"
    nan_fn = lambda u, i: np.where(i == 3, np.nan, 1.0)  # noqa: E731
    m = evaluate_full(nan_fn, np.array([0, 1]), np.array([3, 3]), exclude, 6, k=1, batch_size=1)
    assert m.ranks.tolist() == [2, 5]  # NaN positive: last among its candidates


def _tiny_split() -> Split:
    x = Interactions.from_raw(np.array([0, 0, 0, 0, 1, 1, 1]), np.array([0, 1, 2, 3, 2, 3, 4]))
    return Split(
        train=x.subset(np.array([0, 1, 4])),
        test=x.subset(np.array([3, 6])),
        validation=x.subset(np.array([2, 5])),
        test_negatives=np.array([[4], [0]], dtype=np.int32),
        validation_negatives=np.array([[4], [1]], dtype=np.int32),
    )


def test_evaluate_on_split_excludes_the_right_items():
    split = _tiny_split()
    # user 0: train {0,1}, val 2, test 3; user 1: train {2}, val 3, test 4; score = item id
    fn = table_fn(np.tile(np.arange(5.0), (2, 1)))
    full_test = evaluate(fn, split, on="test", protocol="full")
    assert full_test.ranks.tolist() == [1, 0]  # user 0: item 4 above 3; user 1: 4 is the top
    full_val = evaluate(fn, split, on="validation", protocol="full")
    assert full_val.ranks.tolist() == [1, 0]  # user 0: 4 above 2 (3 = test excluded)
    sampled = evaluate(fn, split, on="test", protocol="sampled", k=1)
    assert sampled.ranks.tolist() == [1, 0]
    assert evaluate(fn, split, on="validation", protocol="full", max_users=1).n_users == 1
    with pytest.raises(NcfError, match="no test negatives"):
        evaluate(fn, Split(train=split.train, test=split.test), protocol="sampled")
    with pytest.raises(NcfError, match="protocol"):
        evaluate(fn, split, protocol="bogus")  # type: ignore[arg-type]


def test_bad_score_shape_raises():
    with pytest.raises(NcfError, match="score_fn returned shape"):
        evaluate_sampled(lambda u, i: np.zeros(len(u)), np.arange(2), np.zeros(2, int),
                         np.ones((2, 3), int))


class DeviceTable:
    """A table scorer that says it lives on a device: evaluation then takes the tensor path
    (run here on the CPU, the same code as on a GPU)."""

    on_device = True

    def __init__(self, table: np.ndarray) -> None:
        import torch

        self.table, self.device = torch.from_numpy(table), torch.device("cpu")

    def tensor(self, users, items):  # type: ignore[no-untyped-def]
        return self.table[users[:, None], items].clone()

    def __call__(self, users, items):  # type: ignore[no-untyped-def]
        return self.table.numpy()[users[:, None], items]


def test_device_path_ranks_exactly_as_the_host_path() -> None:
    """Ties, NaN, -inf and a candidate equal to the positive, both protocols: same ranks."""
    rng = np.random.default_rng(0)
    n_users, n_items = 60, 40
    table = rng.integers(0, 5, (n_users, n_items)).astype(np.float32)  # many ties
    table[rng.random(table.shape) < 0.05] = np.nan
    table[rng.random(table.shape) < 0.05] = -np.inf
    users = np.arange(n_users)
    pos = rng.integers(0, n_items, n_users)
    negs = rng.integers(0, n_items, (n_users, 9))
    negs[0, 3] = pos[0]
    host = evaluate_sampled(table_fn(table), users, pos, negs, k=3, batch_size=7)
    dev = evaluate_sampled(DeviceTable(table), users, pos, negs, k=3, batch_size=7)
    assert np.array_equal(host.ranks, dev.ranks) and host.hr == dev.hr
    seen = sp.random(n_users, n_items, density=0.2, format="csr", random_state=0)
    host = evaluate_full(table_fn(table), users, pos, seen, n_items, k=5, batch_size=8)
    dev = evaluate_full(DeviceTable(table), users, pos, seen, n_items, k=5, batch_size=8)
    assert np.array_equal(host.ranks, dev.ranks) and host.ndcg == dev.ndcg
