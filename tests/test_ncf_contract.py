"""GMF, MLP and NeuMF honour the same Recommender contract as the baselines."""

from __future__ import annotations

import torch
from contract import N_ITEMS, N_USERS, RecommenderContract

from ncf.models import GMF, MLP, NeuMF
from ncf.recommend import NCFRecommender
from ncf.recommender import Recommender
from ncf.training import TrainConfig

# 40 items: with 4 negatives per positive most unseen in-block items get sampled as negatives,
# so the fixture trains with one.
CONFIG = TrainConfig(epochs=10, batch_size=64, lr=0.01, n_negatives=1)


class TestGMF(RecommenderContract):
    def make_model(self) -> Recommender:
        torch.manual_seed(0)
        return NCFRecommender(GMF(N_USERS, N_ITEMS, factors=8), CONFIG)


class TestMLP(RecommenderContract):
    def make_model(self) -> Recommender:
        torch.manual_seed(0)
        return NCFRecommender(MLP(N_USERS, N_ITEMS, factors=8, n_layers=2), CONFIG)


class TestNeuMF(RecommenderContract):
    def make_model(self) -> Recommender:
        torch.manual_seed(0)
        return NCFRecommender(NeuMF(N_USERS, N_ITEMS, factors=8, n_layers=2), CONFIG)
