"""GMF, MLP and NeuMF: shapes, pre-training fusion, hand-written gradients."""

from __future__ import annotations

import pytest
import torch

from ncf.errors import NcfError
from ncf.models import GMF, MLP, NeuMF, build_model, tower_sizes
from ncf.optim import RowGrad, grads_from_autograd

MODELS = [
    (GMF, {}),
    (MLP, {}),
    (MLP, {"n_layers": 0}),
    (MLP, {"n_layers": 1, "factors": 16}),
    (NeuMF, {}),
    (NeuMF, {"share_embeddings": True}),
    (NeuMF, {"sparse": True}),
    (GMF, {"sparse": True}),
    (MLP, {"dropout": 0.3}),
    (NeuMF, {"dropout": 0.3}),
    (NeuMF, {"dropout": 0.3, "share_embeddings": True, "sparse": True}),
]


def test_tower_sizes_match_the_paper() -> None:
    assert tower_sizes(8, 3) == [64, 32, 16, 8]
    assert tower_sizes(16, 0) == [16]
    with pytest.raises(NcfError):
        tower_sizes(7, 3)


def test_mlp_structure_is_the_papers_default() -> None:
    m = MLP(5, 6, factors=8, n_layers=3)
    assert m.user.embedding_dim == 32 and m.item.embedding_dim == 32
    widths = [layer.out_features for layer in m.tower if isinstance(layer, torch.nn.Linear)]
    assert widths == [32, 16, 8]


def test_embeddings_initialised_from_small_normal() -> None:
    torch.manual_seed(0)
    w = GMF(2000, 10, factors=16).user.weight
    assert abs(w.std().item() - 0.01) < 0.001 and abs(w.mean().item()) < 0.001


@pytest.mark.parametrize("alpha", [0.5, 0.2, 1.0])
def test_from_pretrained_logit_is_the_alpha_mixture(alpha: float) -> None:
    torch.manual_seed(1)
    gmf, mlp = GMF(30, 40, factors=8), MLP(30, 40, factors=8, n_layers=3)
    for p in list(gmf.parameters()) + list(mlp.parameters()):  # non-trivial weights and biases
        torch.nn.init.normal_(p, std=0.3)
    neumf = NeuMF.from_pretrained(gmf, mlp, alpha=alpha)
    u, i = torch.randint(0, 30, (64,)), torch.randint(0, 40, (64,))
    with torch.no_grad():
        expected = alpha * gmf(u, i) + (1 - alpha) * mlp(u, i)
        torch.testing.assert_close(neumf(u, i), expected, rtol=1e-5, atol=1e-6)
        # both weights *and* bias are scaled
        assert neumf.out.bias.item() == pytest.approx(
            alpha * gmf.out.bias.item() + (1 - alpha) * mlp.out.bias.item(), rel=1e-6)


def test_from_pretrained_rejects_mismatches() -> None:
    with pytest.raises(NcfError):
        NeuMF.from_pretrained(GMF(3, 4, 8), MLP(3, 5, 8))
    with pytest.raises(NcfError):
        NeuMF.from_pretrained(GMF(3, 4, 8), MLP(3, 4, 16))
    with pytest.raises(NcfError):
        NeuMF.from_pretrained(GMF(3, 4, 8), MLP(3, 4, 8), alpha=1.5)


@pytest.mark.parametrize(("cls", "kw"), MODELS)
def test_hand_written_gradients_equal_autograd(cls: type, kw: dict) -> None:
    torch.manual_seed(2)
    model = cls(13, 17, **kw).double()
    for p in model.parameters():
        torch.nn.init.normal_(p, std=0.5)
    users, items = torch.randint(0, 13, (50,)), torch.randint(0, 17, (50,))
    labels = torch.randint(0, 2, (50,)).double()
    torch.manual_seed(5)  # the same dropout mask for both paths
    loss, grads = model.loss_grads(users, items, labels)
    model.zero_grad()
    torch.manual_seed(5)
    ref_loss = torch.nn.functional.binary_cross_entropy_with_logits(model(users, items), labels)
    ref_loss.backward()
    ref = grads_from_autograd(model.named_parameters())
    params = dict(model.named_parameters())
    assert set(grads) == set(ref)
    assert loss.item() == pytest.approx(ref_loss.item(), rel=1e-12)

    def dense(name: str, g: object) -> torch.Tensor:
        return g.to_dense(params[name]) if isinstance(g, RowGrad) else g  # type: ignore[union-attr]

    for name in ref:
        assert isinstance(grads[name], RowGrad) == isinstance(ref[name], RowGrad), name
        torch.testing.assert_close(dense(name, grads[name]).reshape(params[name].shape),
                                   dense(name, ref[name]).reshape(params[name].shape))


@pytest.mark.parametrize(("cls", "kw"), MODELS)
def test_scalar_and_batch_predictions_agree(cls: type, kw: dict) -> None:
    torch.manual_seed(3)
    model = cls(9, 11, **kw).eval()
    u, i = torch.randint(0, 9, (20,)), torch.randint(0, 11, (20,))
    with torch.no_grad():
        batch = model(u, i)
        single = torch.stack([model(u[j : j + 1], i[j : j + 1])[0] for j in range(20)])
    torch.testing.assert_close(batch, single)


@pytest.mark.parametrize(("cls", "kw"), [*MODELS, (MLP, {"factors": 4, "n_layers": 0}),
                                         (NeuMF, {"factors": 4, "n_layers": 0})])
def test_candidate_scores_equal_forward(cls: type, kw: dict) -> None:
    # the factorised first layer (user half once per user, item half once per item) gives
    # forward's logits for every (user, candidate) pair, dropout or not (eval mode)
    torch.manual_seed(4)
    model = cls(9, 11, **kw).eval()
    users, items = torch.randint(0, 9, (6,)), torch.randint(0, 11, (6, 5))
    with torch.no_grad():
        expected = model(users.repeat_interleave(5), items.reshape(-1)).view(6, 5)
    torch.testing.assert_close(model.score_candidates(users, items), expected)


def test_build_model_round_trips_hyper_parameters() -> None:
    m = NeuMF(5, 7, factors=4, n_layers=2, share_embeddings=True)
    clone = build_model(m.kind, **m.hyper())
    assert clone.hyper() == m.hyper()
    assert [p.shape for p in clone.parameters()] == [p.shape for p in m.parameters()]
    with pytest.raises(NcfError):
        build_model("svd")


def test_dropout_acts_only_while_training() -> None:
    torch.manual_seed(0)
    model = NeuMF(20, 30, factors=8, n_layers=2, dropout=0.5)
    for p in model.parameters():
        torch.nn.init.normal_(p, std=0.5)
    u, i = torch.randint(0, 20, (64,)), torch.randint(0, 30, (64,))
    with torch.no_grad():
        a, b = model(u, i), model(u, i)
        assert not torch.equal(a, b)  # two masks in training mode
        model.eval()
        c, d = model(u, i), model(u, i)
        torch.testing.assert_close(c, d)
        plain = NeuMF(20, 30, factors=8, n_layers=2)
        plain.load_state_dict(model.state_dict())
        torch.testing.assert_close(c, plain.eval()(u, i))  # no rescaling at evaluation
    fused = NeuMF.from_pretrained(GMF(3, 4, 8), MLP(3, 4, 8, dropout=0.25))
    assert fused.dropout == 0.25 and fused.hyper()["dropout"] == 0.25
    for bad in (-0.1, 1.0):
        with pytest.raises(NcfError, match="dropout"):
            MLP(3, 4, 8, dropout=bad)
