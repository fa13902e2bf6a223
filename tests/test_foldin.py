"""Fold-in: the frozen item side scores user vectors exactly as the model does, the fit is
the optimum of its objective, and a folded-in user gets the items of its community."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ncf.errors import NcfError
from ncf.foldin import FoldInConfig, UserSpace, _newton, fold_in
from ncf.models import GMF, MLP, NCFModule, NeuMF


def _random(model: NCFModule, seed: int = 0) -> NCFModule:
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.5)
    return model.eval()


MODELS = {
    "gmf": lambda: GMF(40, 90, factors=6),
    "mlp": lambda: MLP(40, 90, factors=4, n_layers=2),
    "mlp-0": lambda: MLP(40, 90, factors=4, n_layers=0),
    "neumf": lambda: NeuMF(40, 90, factors=4, n_layers=2),
    "neumf-shared": lambda: NeuMF(40, 90, factors=4, n_layers=2, share_embeddings=True),
}


@pytest.mark.parametrize("name", list(MODELS))
def test_user_vectors_score_as_the_model(name: str) -> None:
    model = _random(MODELS[name]())
    space = UserSpace(model)
    users = np.array([0, 5, 39])
    items = torch.randint(0, 90, (3, 7), generator=torch.Generator().manual_seed(1))
    want = model.score_candidates(torch.from_numpy(users), items)
    z = space.user_vectors(users)
    torch.testing.assert_close(space.logits(z, items), want, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(space.logits_all(z).gather(1, items), want, rtol=1e-5, atol=1e-5)
    # the hand-written Jacobian is autograd's
    logits, jac = space._jacobian(z, space.gather(items))
    torch.testing.assert_close(logits, want, rtol=1e-5, atol=1e-5)
    zz = z.clone().requires_grad_(True)
    out = space.logits(zz, items)
    auto = torch.stack([torch.autograd.grad(out[:, c].sum(), zz, retain_graph=True)[0]
                        for c in range(items.shape[1])], dim=1)
    torch.testing.assert_close(jac, auto, rtol=1e-5, atol=1e-5)


def _objective(space: UserSpace, z: torch.Tensor, items: torch.Tensor, target: torch.Tensor,
               weight: torch.Tensor, prior: float) -> torch.Tensor:
    s = space.logits(z, items)
    d = z - space.mean
    return (weight * torch.nn.functional.softplus(torch.where(target > 0, -s, s))).sum(1) + \
        0.5 * ((d @ (space.precision * prior)) * d).sum(1)


@pytest.mark.parametrize("name", ["gmf", "neumf"])
def test_the_fit_is_the_optimum_of_the_objective(name: str) -> None:
    model = _random(MODELS[name](), seed=3)
    space = UserSpace(model)
    gen = torch.Generator().manual_seed(2)
    items = torch.randint(0, 90, (4, 30), generator=gen)
    target = (torch.rand(4, 30, generator=gen) < 0.3).float()
    weight = torch.rand(4, 30, generator=gen) + 0.1
    config = FoldInConfig(steps=40, prior=0.5)
    z = _newton(space, items, target, weight, config)
    best = _objective(space, z, items, target, weight, 0.5)
    start = _objective(space, space.mean.expand(4, -1), items, target, weight, 0.5)
    assert bool((best < start - 1e-3).all())
    if name == "gmf":  # smooth and convex: the gradient vanishes
        zz = z.clone().requires_grad_(True)
        (grad,) = torch.autograd.grad(_objective(space, zz, items, target, weight, 0.5).sum(), zz)
        assert float(grad.abs().max()) < 1e-4
    # ReLU kinks make NeuMF's objective non-smooth: no nearby point does better
    for _ in range(50):
        nearby = z + torch.randn(z.shape, generator=gen) * 1e-2
        value = _objective(space, nearby, items, target, weight, 0.5)
        assert bool((value >= best * (1 - 1e-4)).all())


def _communities() -> GMF:
    """Items 0-29 point along factor 0, items 30-59 along factor 1; users of both kinds."""
    model = GMF(20, 60, factors=2)
    with torch.no_grad():
        model.item.weight.zero_()
        model.item.weight[:30, 0] = torch.linspace(1.0, 2.0, 30)
        model.item.weight[30:, 1] = torch.linspace(1.0, 2.0, 30)
        model.user.weight.zero_()
        model.user.weight[:10, 0] = 2.0
        model.user.weight[10:, 1] = 2.0
        noise = torch.randn(20, 2, generator=torch.Generator().manual_seed(0))
        model.user.weight[:, :] += noise * 0.1
        model.out.weight.fill_(1.0)
        model.out.bias.fill_(-2.0)
    return model.eval()


def test_a_new_user_gets_the_items_of_its_community() -> None:
    space = UserSpace(_communities())
    for given, block in ((np.array([3, 7, 11]), range(0, 30)), (np.array([40, 55]), range(30, 60))):
        z = fold_in(space, [given])
        scores = space.logits_all(z)[0].numpy()
        top = [i for i in np.argsort(-scores) if i not in given][:10]
        assert set(top) <= set(block), top


def test_the_prior_pulls_towards_the_average_user() -> None:
    space = UserSpace(_communities())
    given = [np.array([3, 7, 11])]
    weak = fold_in(space, given, config=FoldInConfig(prior=0.01))
    strong = fold_in(space, given, config=FoldInConfig(prior=1e6))
    assert float((strong[0] - space.mean).norm()) < 1e-3
    assert float((weak[0] - space.mean).norm()) > 0.5


def test_same_items_same_answer_alone_or_in_a_batch() -> None:
    space = UserSpace(_random(MODELS["neumf"](), seed=4))
    a, b = np.array([5, 1, 9, 5]), np.array([70, 2])
    together = fold_in(space, [a, b])
    torch.testing.assert_close(fold_in(space, [np.array([9, 1, 5])])[0], together[0])
    torch.testing.assert_close(fold_in(space, [b])[0], together[1])
    # ratings weigh the items: a heavier item pulls the answer its way
    heavy = fold_in(space, [np.array([5, 70])], weights=[np.array([1.0, 5.0])])
    light = fold_in(space, [np.array([5, 70])], weights=[np.array([5.0, 1.0])])
    s_heavy, s_light = space.logits_all(heavy)[0], space.logits_all(light)[0]
    assert float(s_heavy[70] - s_heavy[5]) > float(s_light[70] - s_light[5])


def test_bad_input_is_refused() -> None:
    space = UserSpace(_random(MODELS["gmf"]()))
    for given, match in (([np.array([], dtype=np.int64)], "at least one item"),
                         ([np.array([90])], "outside"), ([np.array([1.5])], "integer"),
                         ([np.arange(90)], "every item")):
        with pytest.raises(NcfError, match=match):
            fold_in(space, given)
    with pytest.raises(NcfError, match="positive"):
        fold_in(space, [np.array([1, 2])], weights=[np.array([1.0, -1.0])])
    with pytest.raises(NcfError):
        FoldInConfig(prior=-1.0)
    assert fold_in(space, []).shape == (0, space.dim)
