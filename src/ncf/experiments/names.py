"""Names of the presets and models, importable without torch (the command line lists them)."""

from __future__ import annotations

NCF_MODELS = ("gmf", "mlp", "neumf", "neumf-scratch")
#: The keys of :data:`ncf.baselines.BASELINES`, in its order.
BASELINE_MODELS = ("itempop", "itemknn", "puresvd", "ease", "bpr", "ials", "mf")
ALL_MODELS = NCF_MODELS + BASELINE_MODELS
#: What ``ncf tune`` searches: NCF's three stages, then the baselines with a real search space.
TUNABLE = ("gmf", "mlp", "neumf", "ease", "itemknn", "puresvd", "ials", "bpr", "mf")

LABELS: dict[str, str] = {
    "gmf": "GMF", "mlp": "MLP", "neumf": "NeuMF (pre-trained)",
    "neumf-scratch": "NeuMF (no pre-training)", "itempop": "ItemPop", "itemknn": "ItemKNN",
    "puresvd": "PureSVD", "ease": "EASE^R", "bpr": "BPR", "ials": "iALS",
    "mf": "MF (log loss)",
}

PRESET_TITLES: dict[str, str] = {
    "factors": "HR@10 and NDCG@10 against predictive factors (Figure 4, Table 2)",
    "depth": "MLP with 0 to 4 hidden layers at each factor size (Tables 3 and 4)",
    "negatives": "1 to 10 sampled negatives per positive (Figure 7)",
    "curves": "training loss, HR@10 and NDCG@10 by epoch (Figure 6)",
    "protocols": "sampled protocol against full ranking (Krichene and Rendle, 2020)",
}
