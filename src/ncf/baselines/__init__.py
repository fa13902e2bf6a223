"""Baseline recommenders behind the shared :class:`~ncf.recommender.Recommender` contract.

Every baseline is fitted on the binary ``user_items`` matrix, scores any ``(B, C)``
candidate array, saves without pickle and refits identically for a given seed.

==========  =====================  ===========================================
name        class                  idea
==========  =====================  ===========================================
itempop     :class:`ItemPop`       number of users per item
itemknn     :class:`ItemKNN`       shrunk cosine item-item k-NN
puresvd     :class:`PureSVD`       truncated SVD of the binary matrix
ease        :class:`EASE`          closed-form item-item autoencoder (EASE^R)
bpr         :class:`BPR`           MF with the BPR pairwise loss
ials        :class:`IALS`          implicit ALS with confidence weights
mf          :class:`LogisticMF`    MF with log loss and sampled negatives
==========  =====================  ===========================================

Example:
    >>> model = BASELINES["ease"](reg=500.0).fit(train)            # doctest: +SKIP
    >>> ids, scores = model.recommend([0, 1], k=10)                 # doctest: +SKIP
"""

from __future__ import annotations

from ncf.baselines.factorization import IALS, PureSVD
from ncf.baselines.item_based import EASE, ItemKNN, ItemPop
from ncf.baselines.sgd import BPR, LogisticMF
from ncf.recommender import Recommender

BASELINES: dict[str, type[Recommender]] = {
    cls.name: cls for cls in (ItemPop, ItemKNN, PureSVD, EASE, BPR, IALS, LogisticMF)
}

__all__ = ["BASELINES", "BPR", "EASE", "IALS", "ItemKNN", "ItemPop", "LogisticMF", "PureSVD"]
