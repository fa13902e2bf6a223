"""Baselines: the shared contract, each model's maths on tiny inputs, and MovieLens-100K."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp
from contract import N_ITEMS, N_USERS, Communities, RecommenderContract

from ncf.baselines import (
    BASELINES,
    BPR,
    EASE,
    IALS,
    ItemKNN,
    ItemPop,
    LogisticMF,
    PureSVD,
)
from ncf.baselines.factorization import als_solve
from ncf.errors import NcfError
from ncf.interactions import Interactions
from ncf.recommender import Recommender


def _interactions(user_items: np.ndarray) -> Interactions:
    u, i = np.nonzero(user_items)
    n_users, n_items = user_items.shape
    return Interactions(u.astype(np.int32), i.astype(np.int32), None, None, n_users, n_items,
                        np.arange(n_users), np.arange(n_items))


def _random_binary(n_users: int, n_items: int, density: float, seed: int) -> np.ndarray:
    x = (np.random.default_rng(seed).random((n_users, n_items)) < density).astype(np.float64)
    x[np.arange(n_users), np.arange(n_users) % n_items] = 1.0  # nobody empty
    return x


# the contract, model by model ------------------------------------------------------
class TestItemPop(RecommenderContract):
    def make_model(self) -> Recommender:
        return ItemPop()

    def test_known_answer(self, model: Recommender, data: Communities) -> None:
        """Not personalised: every user gets the training popularity of each item."""
        items = np.tile(np.arange(N_ITEMS), (N_USERS, 1))
        scores = model.score(np.arange(N_USERS), items)
        np.testing.assert_array_equal(scores, np.tile(data.train.item_counts(), (N_USERS, 1)))


class TestItemKNN(RecommenderContract):
    def make_model(self) -> Recommender:
        return ItemKNN(neighbours=10, shrink=1.0)


class TestPureSVD(RecommenderContract):
    def make_model(self) -> Recommender:
        return PureSVD(factors=4)


class TestEASE(RecommenderContract):
    def make_model(self) -> Recommender:
        return EASE(reg=20.0)


class TestBPR(RecommenderContract):
    def make_model(self) -> Recommender:
        return BPR(factors=4, epochs=30, reg=0.01, batch_size=64)


class TestIALS(RecommenderContract):
    def make_model(self) -> Recommender:
        return IALS(factors=4, alpha=5.0, reg=5.0, iterations=5)


class TestLogisticMF(RecommenderContract):
    def make_model(self) -> Recommender:
        return LogisticMF(factors=4, epochs=60, lr=0.05, reg=0.02, batch_size=256)


# registry and hyper-parameters -----------------------------------------------------
def test_registry_names() -> None:
    assert set(BASELINES) == {"itempop", "itemknn", "puresvd", "ease", "bpr", "ials", "mf"}
    for name, cls in BASELINES.items():
        assert cls.name == name
        assert isinstance(cls(), Recommender)


@pytest.mark.parametrize(
    ("cls", "kwargs"),
    [
        (ItemKNN, {"neighbours": 0}), (ItemKNN, {"shrink": -1.0}), (ItemKNN, {"neighbours": 2.5}),
        (PureSVD, {"factors": 0}), (EASE, {"reg": 0.0}), (IALS, {"alpha": -1.0}),
        (IALS, {"reg": 0.0}), (IALS, {"iterations": 0}), (BPR, {"lr": 0.0}),
        (BPR, {"epochs": 0}), (BPR, {"factors": 1.5}), (LogisticMF, {"negatives": 0}),
        (LogisticMF, {"reg": -0.1}), (LogisticMF, {"batch_size": 0}),
        (LogisticMF, {"init_std": 0.0}),
    ],
)
def test_bad_hyper_parameters_raise(cls: type[Recommender], kwargs: dict[str, float]) -> None:
    with pytest.raises(NcfError, match=next(iter(kwargs))):
        cls(**kwargs)


# each model's maths ---------------------------------------------------------------
def test_itemknn_weights_by_hand() -> None:
    x = _random_binary(30, 8, 0.4, seed=1)
    model = ItemKNN(neighbours=3, shrink=2.0)
    model.fit(_interactions(x))
    co = x.T @ x
    norms = np.sqrt(np.diag(co))
    sim = co / (norms[:, None] * norms[None, :] + 2.0)
    np.fill_diagonal(sim, 0.0)
    expected = np.zeros_like(sim)
    for j in range(8):  # keep each target item's 3 most similar items
        top = np.argsort(-sim[:, j], kind="stable")[:3]
        expected[top, j] = sim[top, j]
    assert isinstance(model.weights, sp.csr_matrix)
    w = model.weights.toarray()
    assert ((w != 0).sum(axis=0) <= 3).all()
    np.testing.assert_allclose(w, expected, rtol=1e-5)
    users = np.arange(30)
    np.testing.assert_allclose(model.score(users, np.tile(np.arange(8), (30, 1))), x @ expected,
                               rtol=1e-5, atol=1e-6)


def test_ease_matches_closed_form() -> None:
    x = _random_binary(40, 12, 0.3, seed=2)
    model = EASE(reg=3.0)
    model.fit(_interactions(x))
    p = np.linalg.inv(x.T @ x + 3.0 * np.eye(12))
    b = np.eye(12) - p / np.diag(p)[None, :]
    np.fill_diagonal(b, 0.0)
    np.testing.assert_allclose(model.weights, b, rtol=1e-4, atol=1e-6)
    assert (np.diag(model.weights) == 0).all()


def test_ease_refuses_too_many_items() -> None:
    n = EASE.MAX_ITEMS + 1
    train = Interactions(np.array([0, 1], np.int32), np.array([0, n - 1], np.int32), None, None,
                         2, n, np.arange(2), np.arange(n))
    with pytest.raises(NcfError, match="limited to 40,000 items"):
        EASE().fit(train)


def test_puresvd_matches_dense_truncated_svd() -> None:
    x = _random_binary(25, 15, 0.3, seed=3)
    model = PureSVD(factors=5).fit(_interactions(x))
    u, s, vt = np.linalg.svd(x)
    expected = (u[:, :5] * s[:5]) @ vt[:5]
    got = model.score(np.arange(25), np.tile(np.arange(15), (25, 1)))
    np.testing.assert_allclose(got, expected, atol=1e-4)
    with pytest.raises(NcfError, match="factors"):
        PureSVD(factors=15).fit(_interactions(x))


def test_als_solve_satisfies_normal_equations() -> None:
    x = _random_binary(20, 9, 0.3, seed=4)
    x[7] = 0.0  # a row with no interactions gets zero factors
    y = np.random.default_rng(5).normal(size=(9, 4)).astype(np.float32)
    alpha, reg = 3.0, 0.5
    got = als_solve(sp.csr_matrix(x, dtype=np.float32), y, alpha, reg)
    for u in range(20):  # dense reference: (Y^T C_u Y + reg I) x_u = Y^T C_u p_u
        c_u = 1.0 + alpha * x[u]
        lhs = (y.T * c_u) @ y + reg * np.eye(4)
        np.testing.assert_allclose(got[u], np.linalg.solve(lhs, (y.T * c_u) @ x[u]),
                                   rtol=1e-4, atol=1e-5)
    assert (got[7] == 0).all()


def test_ials_loss_decreases_with_iterations() -> None:
    x = _random_binary(30, 12, 0.3, seed=6)
    alpha, reg = 4.0, 0.3

    def loss(m: IALS) -> float:
        pred = m.user_factors @ m.item_factors.T
        return float(((1 + alpha * x) * (x - pred) ** 2).sum()
                     + reg * ((m.user_factors**2).sum() + (m.item_factors**2).sum()))

    losses = []
    for iterations in (1, 2, 5):
        model = IALS(factors=3, alpha=alpha, reg=reg, iterations=iterations)
        model.fit(_interactions(x))
        losses.append(loss(model))
    assert losses[0] > losses[1] > losses[2]


def test_baselines_draw_negatives_with_the_training_sampler() -> None:
    """BPR and logistic MF draw with :func:`ncf.sampling.sample_negatives`, NCF's sampler:
    exact (never a positive) and uniform over each user's other items."""
    from ncf.sampling import KeySet, sample_negatives

    x = np.zeros((3, 10))
    x[0, [1, 3, 4, 9]] = 1
    x[1, :9] = 1  # only item 9 is negative
    keys = KeySet(_interactions(x).keys(), 10)
    rng = np.random.default_rng(0)
    users = np.repeat([0, 1, 2], 6000)
    items = sample_negatives(users, keys, 10, 1, rng)
    assert not x[users, items].any()
    assert (items[users == 1] == 9).all()
    counts = np.bincount(items[users == 0], minlength=10)[[0, 2, 5, 6, 7, 8]]
    assert np.abs(counts / 6000 - 1 / 6).max() < 0.02
    assert len(np.unique(items[users == 2])) == 10
    x[2] = 1
    with pytest.raises(NcfError, match="interacted with all 10 items"):
        BPR(factors=2, epochs=1).fit(_interactions(x))


def test_diverging_sgd_raises() -> None:
    x = _random_binary(20, 10, 0.3, seed=7)
    with pytest.raises(NcfError, match="diverged"):
        LogisticMF(factors=4, lr=1e30, epochs=3).fit(_interactions(x))


# MovieLens-100K, the paper's protocol ---------------------------------------------
def _load_ml100k(root: Path) -> tuple[Interactions, np.ndarray, np.ndarray]:
    folder = root / "ncf"
    train = np.loadtxt(folder / "ml-100k.train.rating", dtype=np.int64, usecols=(0, 1))
    test = np.loadtxt(folder / "ml-100k.test.rating", dtype=np.int64, usecols=(0, 1))
    lines = (folder / "ml-100k.test.negative").read_text().splitlines()
    negatives = np.array([line.split("\t")[1:] for line in lines], dtype=np.int64)
    n_users, n_items = 943, 1682
    inter = Interactions(train[:, 0].astype(np.int32), train[:, 1].astype(np.int32), None, None,
                         n_users, n_items, np.arange(n_users), np.arange(n_items))
    candidates = np.concatenate([test[:, 1:2], negatives], axis=1)  # test item first
    return inter, test[:, 0], candidates


def _hit_ratio_at_10(model: Recommender, users: np.ndarray, candidates: np.ndarray) -> float:
    scores = model.score(users, candidates)
    rank = (scores[:, 1:] >= scores[:, :1]).sum(axis=1)  # ties count against the test item
    return float((rank < 10).mean())


@pytest.mark.slow
@pytest.mark.parametrize(
    ("name", "kwargs", "low", "high"),
    [
        ("itempop", {}, 0.306, 0.310),  # reference 0.308
        ("itemknn", {}, 0.50, 0.75),
        ("puresvd", {}, 0.50, 0.75),
        ("ease", {}, 0.60, 0.75),  # reference 0.614
        ("ials", {"iterations": 5}, 0.50, 0.75),
        ("bpr", {"epochs": 10, "lr": 0.1}, 0.50, 0.75),  # shorter runs than the defaults
        ("mf", {"epochs": 6, "lr": 0.05, "negatives": 4}, 0.50, 0.75),
    ],
)
def test_ml100k_hit_ratio(shared_data: Path, name: str, kwargs: dict[str, float],
                          low: float, high: float) -> None:
    train, users, candidates = _load_ml100k(shared_data)
    model = BASELINES[name](**kwargs).fit(train)
    assert low <= _hit_ratio_at_10(model, users, candidates) <= high


def test_a_saved_baseline_loads_in_a_process_that_never_imported_the_baselines(
        tmp_path: Path) -> None:
    """The classes register themselves when their module is imported: loading a file by the
    name it records imports that module, whatever the caller imported first."""
    import os
    import subprocess
    import sys

    x = _interactions(_random_binary(6, 9, 0.4, seed=0))
    ItemPop().fit(x).save(tmp_path / "pop.npz")
    code = ("from ncf.recommender import Recommender\n"
            f"m = Recommender.load({str(tmp_path / 'pop.npz')!r})\n"
            "print(type(m).__name__, m.recommend([0], k=2)[0].shape)\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
                          timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["ItemPop", "(1,", "2)"]
