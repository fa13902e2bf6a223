"""Cold start: full-ranking metrics of several held-out items per user, the held-out users'
split, and the study end to end on planted data (fold-in learns, trained-in is matched)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp
from planted import planted_split

from ncf.errors import NcfError
from ncf.evaluation import evaluate_full_sets
from ncf.experiments.coldstart import (
    ColdStartOptions,
    base_split,
    choose_users,
    run_coldstart,
    with_given,
)
from ncf.interactions import Interactions
from ncf.pipeline import PipelineConfig
from ncf.sources import TrainingData
from ncf.split import leave_one_out, with_negatives
from ncf.training import TrainConfig


def _rows(*sets: list[int], n: int = 6) -> sp.csr_matrix:
    m = np.zeros((len(sets), n), dtype=np.float32)
    for r, s in enumerate(sets):
        m[r, s] = 1
    return sp.csr_matrix(m)


def test_full_ranking_of_item_sets_by_hand() -> None:
    scores = np.array([[0.9, 0.8, 0.7, 0.6, 0.5, 0.4]])
    fn = lambda u, i: scores[np.zeros(len(u), int)][:, :i.shape[1]]  # noqa: E731
    # item 0 excluded: the ranking is 1, 2, 3, 4, 5; held out {1, 4}; top 2 = {1, 2}
    m = evaluate_full_sets(fn, np.array([0]), _rows([1, 4]), _rows([0]), 6, k=2)
    assert m.hr == pytest.approx(0.5)  # 1 hit of min(2, 2)
    assert m.ndcg == pytest.approx(1.0 / (1.0 + 1.0 / math.log2(3)))
    assert m.mrr == 1.0 and m.ranks.tolist() == [0] and m.protocol == "full-sets"
    # a held-out item listed in exclude stays ranked; recall divides by min(k, |held out|)
    m = evaluate_full_sets(fn, np.array([0]), _rows([0]), _rows([0, 1]), 6, k=3)
    assert (m.hr, m.ndcg, m.mrr) == (1.0, 1.0, 1.0)
    # ties count against the held-out items, NaN is the worst score
    flat = lambda u, i: np.zeros(i.shape)  # noqa: E731
    m = evaluate_full_sets(flat, np.array([0]), _rows([2]), None, 6, k=5)
    assert m.hr == 0.0 and m.ranks.tolist() == [5]
    nan = lambda u, i: np.where(i == 3, np.nan, 1.0 * i)  # noqa: E731
    m = evaluate_full_sets(nan, np.array([0]), _rows([3]), None, 6, k=5)
    assert m.hr == 0.0 and m.ranks.tolist() == [5]
    with pytest.raises(NcfError, match="at least one held-out item"):
        evaluate_full_sets(fn, np.array([0, 1]), _rows([1], []), None, 6)


def _timed_split() -> tuple[TrainingData, Interactions]:
    rng = np.random.default_rng(0)
    users = np.repeat(np.arange(40), 30).astype(np.int32)
    items = np.concatenate([rng.choice(60, 30, replace=False) for _ in range(40)]).astype(np.int32)
    times = rng.permutation(len(users)).astype(np.int64)
    x = Interactions(users, items, None, times, 40, 60, np.arange(40), np.arange(60))
    split = with_negatives(leave_one_out(x, seed=0), n=20, seed=0)
    return TrainingData(split, None, "timed"), x


def test_held_out_users_are_ordered_by_time_and_removed_from_the_base() -> None:
    data, x = _timed_split()
    held = choose_users(data.split, ColdStartOptions(given=(1, 5), users=8, seed=3))
    assert len(held.users) == 8 and np.all(np.diff(held.users) > 0)
    for u, items in zip(held.users, held.items):
        mine = x.user_ids == u
        want = x.item_ids[mine][np.argsort(x.timestamps[mine])]
        assert items.tolist() == want.tolist()
    base = base_split(data.split, held.users)
    for part in (base.train, base.validation, base.test):
        assert part is not None and not np.isin(part.user_ids, held.users).any()
    assert base.test_negatives is not None and len(base.test_negatives) == len(base.test)
    plus = with_given(base, held, 5)
    added = plus.train.subset(np.isin(plus.train.user_ids, held.users))
    assert len(added) == 8 * 5 and len(plus.train) == len(base.train) + 40
    for u, items in zip(held.users, held.items):
        assert sorted(added.item_ids[added.user_ids == u].tolist()) == sorted(items[:5].tolist())
    with pytest.raises(NcfError, match="at most half"):
        choose_users(data.split, ColdStartOptions(given=(1,), users=30))


def test_the_study_end_to_end_on_planted_blocks(tmp_path: Path) -> None:
    """Users like their own block of items: folded in from a few items, a new user's
    remaining items come far above ItemPop, as well as when trained in."""
    split = planted_split(n_users=240, n_items=200, per_user=28)
    stage = TrainConfig(epochs=8, batch_size=256, lr=0.01)
    options = ColdStartOptions(given=(1, 5), users=40, models=("gmf",),
                               pipeline=PipelineConfig(factors=8, gmf=stage, full_ranking_users=50))
    results = run_coldstart(TrainingData(split, None, "planted"), options, tmp_path / "cs",
                            data_title="planted")
    five = results["rows"][1]
    pop, fold = five["itempop"]["full"], five["foldin_gmf"]["full"]
    trained = five["trained_gmf"]["full"]
    assert fold["hr"] > pop["hr"] + 0.3, (fold, pop)  # chance level for ItemPop: ~0.25
    assert fold["hr"] >= 0.8 * trained["hr"] and fold["ndcg"] >= 0.8 * trained["ndcg"]
    assert five["foldin_gmf"]["sampled"]["hr"] > five["itempop"]["sampled"]["hr"]
    report = (tmp_path / "cs" / "report.md").read_text()
    assert "| 5 |" in report and "ItemPop" in report
    stored = json.loads((tmp_path / "cs" / "results.json").read_text())
    assert [r["given"] for r in stored["rows"]] == [1, 5]


def test_the_command_checks_its_options_before_reading_data(capsys) -> None:  # type: ignore[no-untyped-def]
    from ncf.cli import main

    assert main(["experiment", "coldstart", "--data", "missing.csv", "--given", "0,5"]) == 2
    assert "must be >= 1" in capsys.readouterr().err
    assert main(["experiment", "coldstart", "--data", "missing.csv", "--models", "ease"]) == 2
    assert "gmf, mlp or neumf" in capsys.readouterr().err
