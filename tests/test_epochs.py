"""Epochs built on a torch device (the GPU path), exercised here on the CPU with the same code:
negatives never positives, every positive once, seeded, sharded for data-parallel runs."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from planted import planted

from ncf.epochs import DeviceEpochs, TorchKeySet, iter_epoch, sample_negatives_torch
from ncf.errors import NcfError
from ncf.models import GMF, NeuMF
from ncf.sampling import KeySet
from ncf.training import TrainConfig, train


def _keyset(pairs: list[tuple[int, int]], n_items: int) -> KeySet:
    keys = np.unique(np.array([u * n_items + i for u, i in pairs], dtype=np.int64))
    return KeySet(keys, n_items)


@st.composite
def interactions(draw: st.DrawFn) -> tuple[list[tuple[int, int]], int, int]:
    """Small random data, some users one item short of everything (exact draws needed)."""
    n_items = draw(st.integers(2, 40))
    n_users = draw(st.integers(1, 12))
    pairs = []
    for u in range(n_users):
        if draw(st.booleans()):  # a heavy user: all items but 1..2
            free = draw(st.sets(st.integers(0, n_items - 1), min_size=1, max_size=2))
            pairs += [(u, i) for i in range(n_items) if i not in free]
        else:
            items = draw(st.sets(st.integers(0, n_items - 1), max_size=n_items - 1))
            pairs += [(u, i) for i in items]
    return pairs, n_users, n_items


@given(interactions(), st.integers(1, 6), st.integers(0, 2**31 - 1), st.booleans())
def test_device_negatives_are_never_positives(data, k, seed, bitset) -> None:  # type: ignore[no-untyped-def]
    pairs, n_users, n_items = data
    ks = _keyset(pairs, n_items) if pairs else KeySet(np.zeros(0, np.int64), n_items)
    tk = TorchKeySet(torch.from_numpy(ks.keys), n_items, max_bitset_bytes=2**31 if bitset else 0)
    users = torch.arange(n_users).repeat(3)
    negs = sample_negatives_torch(users, tk, k, torch.Generator().manual_seed(seed), max_rounds=2)
    rep = users.repeat_interleave(k)
    assert negs.shape == rep.shape
    assert bool(((negs >= 0) & (negs < n_items)).all())
    assert not ks.contains((rep * n_items + negs).numpy()).any()


def test_device_negatives_are_uniform_over_a_heavy_users_free_items() -> None:
    n_items = 50
    ks = _keyset([(0, i) for i in range(n_items) if i not in (3, 17, 41)], n_items)
    tk = TorchKeySet(torch.from_numpy(ks.keys), n_items)
    negs = sample_negatives_torch(torch.zeros(3000, dtype=torch.int64), tk, 4,
                                  torch.Generator().manual_seed(0))
    values, counts = torch.unique(negs, return_counts=True)
    assert values.tolist() == [3, 17, 41]
    assert counts.min() > 3700  # 4000 expected each: uniform, not the rejection order's bias


@pytest.mark.parametrize("bitset", [True, False])
def test_device_membership_agrees_with_the_host_key_set(bitset: bool) -> None:
    rng = np.random.default_rng(0)
    keys = np.unique(rng.integers(0, 300 * 70, 2000))
    ks = KeySet(keys, 70)
    tk = TorchKeySet(torch.from_numpy(ks.keys), 70, max_bitset_bytes=2**31 if bitset else 0)
    assert (tk.bits is not None) == bitset
    q = rng.integers(0, 300 * 70 + 500, 20_000)  # some beyond the last user
    assert np.array_equal(tk.contains(torch.from_numpy(q)).numpy(), ks.contains(q))


def test_device_exact_draw_refuses_a_user_with_every_item() -> None:
    tk = TorchKeySet.of_pairs(torch.tensor([0, 0, 1]), torch.tensor([0, 1, 0]), 2)
    with pytest.raises(NcfError, match="user 0 interacted with all 2 items"):
        tk.exact_free(torch.tensor([1, 0]), torch.Generator().manual_seed(0))


def _check_epoch(blocks, u: np.ndarray, i: np.ndarray, ks: KeySet, k: int) -> None:  # type: ignore[no-untyped-def]
    users = torch.cat([b[0] for b in blocks])
    items = torch.cat([b[1] for b in blocks])
    labels = torch.cat([b[2] for b in blocks])
    pos = labels == 1
    assert sorted(zip(users[pos].tolist(), items[pos].tolist())) == sorted(zip(u.tolist(),
                                                                              i.tolist()))
    assert int((~pos).sum()) == k * len(u)
    assert sorted(users[~pos].tolist()) == sorted(np.repeat(u, k).tolist())
    assert not ks.contains(users[~pos].numpy() * ks.n_items + items[~pos].numpy()).any()


@pytest.mark.parametrize("block", [100, 10**6])
def test_device_epoch_holds_every_positive_once_with_fresh_negatives(block: int) -> None:
    train_x, _, _ = planted(n_users=40)
    ks = KeySet(train_x.keys(), train_x.n_items)
    u, i = train_x.user_ids.astype(np.int64), train_x.item_ids.astype(np.int64)
    epochs = DeviceEpochs(u, i, train_x.n_items, 3, "cpu", seed=0, block=block)
    first, second = list(epochs), list(epochs)
    assert len(first) == -(-len(u) // block)
    for blocks in (first, second):
        _check_epoch(blocks, u, i, ks, 3)
    assert not torch.equal(torch.cat([b[1] for b in first]), torch.cat([b[1] for b in second]))
    again = list(DeviceEpochs(u, i, train_x.n_items, 3, "cpu", seed=0, block=block))  # seeded
    assert all(torch.equal(a, b) for x, y in zip(first, again) for a, b in zip(x, y))


@pytest.mark.parametrize("world", [2, 3])
def test_epoch_shards_partition_the_positives(world: int) -> None:
    """Each rank trains on a disjoint n // world of the positives, on the host and the device."""
    train_x, _, _ = planted(n_users=41)
    ks = KeySet(train_x.keys(), train_x.n_items)
    u, i = train_x.user_ids.astype(np.int64), train_x.item_ids.astype(np.int64)
    for build in ("host", "device"):
        seen: list[tuple[int, int]] = []
        for rank in range(world):
            if build == "host":
                blocks = list(iter_epoch(u, i, ks, train_x.n_items, 2,
                                         np.random.default_rng([0, rank]),
                                         torch.Generator().manual_seed(rank), block=64,
                                         shard=(rank, world),
                                         shard_rng=np.random.default_rng(7)))
            else:
                blocks = list(DeviceEpochs(u, i, train_x.n_items, 2, "cpu", seed=7, block=64,
                                           shard=(rank, world)))
            labels = torch.cat([b[2] for b in blocks]) == 1
            users, items = torch.cat([b[0] for b in blocks]), torch.cat([b[1] for b in blocks])
            mine = list(zip(users[labels].tolist(), items[labels].tolist()))
            assert len(mine) == len(u) // world
            negs = users[~labels].numpy() * train_x.n_items + items[~labels].numpy()
            assert not ks.contains(negs).any()
            seen += mine
        assert len(set(seen)) == len(seen) == world * (len(u) // world), build


def test_training_on_device_built_epochs_learns_and_repeats() -> None:
    train_x, val, test = planted()
    cfg = TrainConfig(epochs=10, batch_size=128, lr=0.01, sampler="device")

    def run() -> tuple[float, list[float]]:
        torch.manual_seed(0)
        model = NeuMF(train_x.n_users, train_x.n_items, factors=8, n_layers=2)
        history = train(model, train_x, val, cfg)
        from ncf.evaluation import evaluate_sampled
        from ncf.training import model_scorer

        hr = evaluate_sampled(model_scorer(model), test.users, test.items, test.negatives).hr
        return hr, [r.loss for r in history.records]

    hr, losses = run()
    assert hr > 0.6  # chance: 0.10
    assert run() == (hr, losses)


def test_warm_up_ramps_the_rate_then_hands_it_back() -> None:
    """The first steps run at k / warmup_steps of the rate; the record keeps the rate itself."""
    train_x, _, _ = planted(n_users=20)
    results = []
    for warmup, lr in ((4, 0.05), (0, 0.05 / 4)):
        torch.manual_seed(0)
        model = GMF(train_x.n_users, train_x.n_items, factors=4)
        cfg = TrainConfig(epochs=1, batch_size=len(train_x) * 5, lr=lr, optimizer="sgd",
                          warmup_steps=warmup)
        h = train(model, train_x, None, cfg)  # one step: the first warm-up step
        results.append(model.user.weight.detach().clone())
        assert h.records[0].lr == lr
    torch.testing.assert_close(results[0], results[1])
