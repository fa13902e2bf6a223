"""The trainer: learns planted structure, is deterministic, fails loudly, selects on validation."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from planted import planted

from ncf.errors import NcfError
from ncf.evaluation import evaluate_sampled
from ncf.models import GMF, MLP, NCFModule, NeuMF
from ncf.optim import RowGrad
from ncf.sampling import KeySet
from ncf.training import TrainConfig, build_epoch, model_scorer, train

FAST = TrainConfig(epochs=12, batch_size=128, lr=0.01)


def _test_hr(model: torch.nn.Module, target) -> float:  # type: ignore[no-untyped-def]
    return evaluate_sampled(model_scorer(model), target.users, target.items, target.negatives,
                            k=10).hr


@pytest.mark.parametrize("make", [
    lambda n, m: GMF(n, m, factors=8),
    lambda n, m: MLP(n, m, factors=8, n_layers=2),
    lambda n, m: NeuMF(n, m, factors=8, n_layers=2),
    lambda n, m: NeuMF(n, m, factors=8, n_layers=2, sparse=True),
], ids=["gmf", "mlp", "neumf", "neumf-sparse"])
def test_every_model_learns_planted_structure(make) -> None:  # type: ignore[no-untyped-def]
    train_x, val, test = planted()
    torch.manual_seed(0)
    model = make(train_x.n_users, train_x.n_items)
    before = _test_hr(model, test)
    history = train(model, train_x, val, FAST)
    after = _test_hr(model, test)
    assert after > 0.6, (before, after)  # chance is 0.10
    assert history.records[-1].loss < history.records[0].loss


class _Biased(NCFModule):
    """A model written in a few lines, with no gradients of its own: a dot product plus an
    item bias (``forward`` through ``features`` and the output layer, as the base asks)."""

    kind = "biased"

    def __init__(self, n_users: int, n_items: int, factors: int = 8) -> None:
        super().__init__()
        self.n_users, self.n_items, self.factors = n_users, n_items, factors
        self.user = torch.nn.Embedding(n_users, factors, sparse=True)
        self.item = torch.nn.Embedding(n_items, factors)
        self.item_bias = torch.nn.Embedding(n_items, 1)
        for emb in (self.user, self.item):
            torch.nn.init.normal_(emb.weight, std=0.1)
        torch.nn.init.zeros_(self.item_bias.weight)
        self.out = torch.nn.Linear(2, 1)

    def features(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        dot = (self.user(users) * self.item(items)).sum(-1, keepdim=True)
        return torch.cat([dot, self.item_bias(items)], dim=-1)


def test_a_model_without_its_own_gradients_trains_through_autograd() -> None:
    train_x, val, test = planted()
    torch.manual_seed(0)
    model = _Biased(train_x.n_users, train_x.n_items)
    history = train(model, train_x, val, FAST)  # autograd=False: the base loss_grads
    assert _test_hr(model, test) > 0.6  # chance is 0.10
    assert history.records[-1].loss < history.records[0].loss
    # its gradients are keyed by parameter name; the sparse table's come as rows
    _, grads = model.loss_grads(torch.tensor([0, 1]), torch.tensor([2, 3]),
                                torch.tensor([1.0, 0.0]))
    assert set(grads) == {n for n, _ in model.named_parameters()}
    assert isinstance(grads["user.weight"], RowGrad) and grads["item.weight"].shape == (
        train_x.n_items, 8)


def test_autograd_and_hand_written_paths_train_alike() -> None:
    train_x, val, _ = planted(n_users=80)
    results = []
    for autograd in (False, True):
        torch.manual_seed(0)
        model = NeuMF(train_x.n_users, train_x.n_items, factors=8, n_layers=2).double()
        cfg = TrainConfig(epochs=2, batch_size=64, autograd=autograd)
        h = train(model, train_x, None, cfg)
        results.append([r.loss for r in h.records])
    np.testing.assert_allclose(results[0], results[1], rtol=1e-9)


def test_same_seed_same_metrics_and_other_seed_differs() -> None:
    train_x, val, _ = planted(n_users=100)

    def run(seed: int) -> list[float]:
        torch.manual_seed(seed)
        model = GMF(train_x.n_users, train_x.n_items, factors=8)
        h = train(model, train_x, val, TrainConfig(epochs=3, batch_size=64, seed=seed))
        return [r.loss for r in h.records] + [r.hr for r in h.records]  # type: ignore[misc]

    assert run(0) == run(0)
    assert run(0) != run(1)


def test_best_epoch_is_chosen_on_validation_and_restored() -> None:
    train_x, val, _ = planted(n_users=100)
    torch.manual_seed(0)
    model = GMF(train_x.n_users, train_x.n_items, factors=8)
    h = train(model, train_x, val, TrainConfig(epochs=6, batch_size=64, lr=0.05))
    hrs = [r.hr for r in h.records]
    assert h.best_epoch == int(np.argmax(hrs)) + 1
    assert _test_hr(model, val) == pytest.approx(max(hrs))


def test_nan_loss_stops_training_with_a_clear_error() -> None:
    train_x, val, _ = planted(n_users=50)
    model = GMF(train_x.n_users, train_x.n_items, factors=8)
    with torch.no_grad():
        model.user.weight[:] = float("nan")
    with pytest.raises(NcfError, match="diverged.*epoch 1"):
        train(model, train_x, val, TrainConfig(epochs=2))


def test_early_stopping_and_plateau() -> None:
    train_x, val, _ = planted(n_users=60)
    model = GMF(train_x.n_users, train_x.n_items, factors=8)
    # lr tiny: nothing improves after the first epochs, so patience 1 stops early
    cfg = TrainConfig(epochs=30, lr=1e-7, early_stopping=2, optimizer="sgd", momentum=0.9,
                      plateau_factor=0.3, plateau_patience=0)
    h = train(model, train_x, val, cfg)
    assert h.stopped_early and len(h.records) < 30
    assert h.records[-1].lr < 1e-7


def test_epoch_holds_every_positive_once_and_fresh_negatives() -> None:
    train_x, _, _ = planted(n_users=40)
    keys = KeySet(train_x.keys(), train_x.n_items)
    rng, gen = np.random.default_rng(0), torch.Generator().manual_seed(0)
    u = train_x.user_ids.astype(np.int64)
    i = train_x.item_ids.astype(np.int64)
    e1 = build_epoch(u, i, keys, train_x.n_items, 4, rng, gen)
    e2 = build_epoch(u, i, keys, train_x.n_items, 4, rng, gen)
    for users, items, labels in (e1, e2):
        assert len(users) == 5 * len(train_x)
        pos = labels == 1
        got = sorted(zip(users[pos].tolist(), items[pos].tolist()))
        assert got == sorted(zip(u.tolist(), i.tolist()))
        neg_keys = users[~pos].numpy() * train_x.n_items + items[~pos].numpy()
        assert not keys.contains(neg_keys).any()
    assert not torch.equal(e1[1], e2[1])


def test_training_rejects_empty_data() -> None:
    train_x, val, _ = planted(n_users=20)
    empty = train_x.subset(np.zeros(len(train_x), bool))
    with pytest.raises(NcfError, match="empty"):
        train(GMF(20, train_x.n_items), empty, val, TrainConfig(epochs=1))


@pytest.mark.parametrize(("field", "value", "message"), [
    ("lr", 0.0, "learning rate must be a positive number"),
    ("lr", float("nan"), "learning rate must be a positive number"),
    ("momentum", 1.0, "momentum must lie in"),
    ("weight_decay", -1e-4, "weight_decay must be >= 0"),
    ("early_stopping", 0, "early_stopping must be >= 1"),
    ("n_negatives", 1001, "at most 1000 negatives"),
])
def test_config_values_are_checked(field: str, value: float, message: str) -> None:
    with pytest.raises(NcfError, match=message):
        TrainConfig(**{field: value})  # type: ignore[arg-type]


def test_epoch_in_blocks_still_holds_every_positive_once() -> None:
    from ncf.training import iter_epoch

    train_x, _, _ = planted(n_users=40)
    keys = KeySet(train_x.keys(), train_x.n_items)
    u = train_x.user_ids.astype(np.int64)
    i = train_x.item_ids.astype(np.int64)
    blocks = list(iter_epoch(u, i, keys, train_x.n_items, 3, np.random.default_rng(0),
                             torch.Generator().manual_seed(0), block=100))
    assert len(blocks) == -(-len(u) // 100)
    users = torch.cat([b[0] for b in blocks])
    items = torch.cat([b[1] for b in blocks])
    labels = torch.cat([b[2] for b in blocks])
    pos = labels == 1
    got = sorted(zip(users[pos].tolist(), items[pos].tolist()))
    assert got == sorted(zip(u.tolist(), i.tolist()))
    assert int((~pos).sum()) == 3 * len(u)
    assert not keys.contains(users[~pos].numpy() * train_x.n_items + items[~pos].numpy()).any()


def test_keep_initial_never_ends_worse_than_the_start_on_validation() -> None:
    train_x, val, _ = planted(n_users=100)
    torch.manual_seed(0)
    model = GMF(train_x.n_users, train_x.n_items, factors=8)
    train(model, train_x, val, TrainConfig(epochs=8, batch_size=64, lr=0.05))
    start = _test_hr(model, val)
    # a weight decay that wipes the embeddings out: the starting weights must be kept
    h = train(model, train_x, val, TrainConfig(epochs=2, optimizer="sgd", lr=0.1,
                                               weight_decay=5.0, keep_initial=True))
    assert max(r.hr for r in h.records) < start  # type: ignore[type-var]
    assert h.best_epoch == 0
    assert h.initial is not None and h.initial.hr == pytest.approx(start)
    assert _test_hr(model, val) == pytest.approx(start)


def test_training_leaves_subnormal_floats_alone_afterwards() -> None:
    train_x, val, _ = planted(n_users=20)
    train(GMF(train_x.n_users, train_x.n_items, factors=4), train_x, val, TrainConfig(epochs=1))
    tiny = np.array([5e-324])  # the smallest subnormal double
    assert (tiny * 1.0)[0] != 0.0  # flush-to-zero was switched off again
