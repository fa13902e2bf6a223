"""ncf: Neural Collaborative Filtering (He et al., WWW 2017) for implicit feedback.

Data flows one way: raw files -> interactions -> split -> sampler -> model -> trainer ->
evaluation -> recommendations. Everything below is importable from ``ncf`` itself, loaded on
first use (``import ncf`` imports neither numpy nor torch).

Data
    load                  read any supported ratings file or folder (format detected)
    fetch                 download a public data set (MovieLens) into the cache, verified
    write_synth_netflix   write a seeded synthetic Netflix Prize set in Kaggle's format
    prepare_split         raw ratings to an evaluated leave-one-out split with candidates
    load_split            a prepared folder, or raw ratings through prepare_split
    save_prepared         write a split as a prepared folder (Parquet + JSON), atomically
    load_prepared         read a prepared folder back, its fingerprint verified
    Interactions          the validated container of parallel arrays every reader returns
    Split                 train / validation / test interactions and their candidates
    leave_one_out         hold out each user's latest interaction (and the one before)
    with_negatives        add sampled evaluation candidates to a split

Models and training
    GMF                   generalized matrix factorization
    MLP                   multi-layer perceptron over user and item embeddings
    NeuMF                 GMF and MLP fused (NeuMF.from_pretrained: the paper's pre-training)
    TrainConfig           hyper-parameters of one training stage
    train                 train one model, choosing its epoch on validation (resumable)
    validation_target     the validation items of a split, for train's model selection
    PipelineConfig        everything that defines a run of the pipeline
    run_pipeline          GMF -> MLP -> NeuMF from both, each scored on test (resumable)

Evaluation
    evaluate              HR / NDCG@k of any scoring function: sampled protocol or full ranking
    test_metrics          a model's test metrics under both protocols
    model_scorer          the scoring function of a trained network

Recommending and saving
    Recommender           the contract of every model: fit, score, recommend, save, load
    NCFRecommender        a trained GMF / MLP / NeuMF with its id maps, as a Recommender
    load_model            a trained model of a run directory (ncf train's output)
    BASELINES             the baselines by name: itempop, itemknn, puresvd, ease, bpr, ials, mf
    ItemPop               popularity
    ItemKNN               item-item k-nearest neighbours (shrunk cosine)
    PureSVD               truncated SVD of the binary user-item matrix
    EASE                  closed-form item-item autoencoder (EASE^R)
    BPR                   matrix factorisation with the BPR pairwise loss
    IALS                  implicit alternating least squares
    LogisticMF            matrix factorisation with log loss and sampled negatives

Errors
    NcfError              a problem with options or data, said in one line
    DataError             bad input, naming the file and, where known, the line

Example::

    import ncf

    split, catalog, _ = ncf.prepare_split("ml-100k/")
    results = ncf.run_pipeline(split, ncf.PipelineConfig(factors=8).with_epochs(5))
    print(results["neumf"].metrics["sampled"])
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from ncf.errors import DataError, NcfError

__version__ = "0.1.0"

#: Where each public name lives (imported on first use).
_API = {
    "load": "ncf.datasets", "fetch": "ncf.download", "write_synth_netflix": "ncf.synth",
    "prepare_split": "ncf.ingest", "load_split": "ncf.ingest", "save_prepared": "ncf.storage",
    "load_prepared": "ncf.storage", "Interactions": "ncf.interactions", "Split": "ncf.split",
    "leave_one_out": "ncf.split", "with_negatives": "ncf.split",
    "GMF": "ncf.models", "MLP": "ncf.models", "NeuMF": "ncf.models",
    "TrainConfig": "ncf.training", "train": "ncf.training",
    "validation_target": "ncf.pipeline", "PipelineConfig": "ncf.pipeline",
    "run_pipeline": "ncf.pipeline",
    "evaluate": "ncf.evaluation", "test_metrics": "ncf.pipeline", "model_scorer": "ncf.training",
    "Recommender": "ncf.recommender", "NCFRecommender": "ncf.recommend",
    "load_model": "ncf.report",
    "BASELINES": "ncf.baselines", "ItemPop": "ncf.baselines", "ItemKNN": "ncf.baselines",
    "PureSVD": "ncf.baselines", "EASE": "ncf.baselines", "BPR": "ncf.baselines",
    "IALS": "ncf.baselines", "LogisticMF": "ncf.baselines",
}

__all__ = [
    "BASELINES", "BPR", "EASE", "GMF", "IALS", "MLP", "DataError", "Interactions", "ItemKNN",
    "ItemPop", "LogisticMF", "NCFRecommender", "NcfError", "NeuMF", "PipelineConfig", "PureSVD",
    "Recommender", "Split", "TrainConfig", "evaluate", "fetch", "leave_one_out", "load",
    "load_model", "load_prepared", "load_split", "model_scorer", "prepare_split", "run_pipeline",
    "save_prepared", "test_metrics", "train", "validation_target", "with_negatives",
    "write_synth_netflix",
]

if TYPE_CHECKING:  # what the names are, for type checkers; at run time they load on first use
    from ncf.baselines import BASELINES, BPR, EASE, IALS, ItemKNN, ItemPop, LogisticMF, PureSVD
    from ncf.datasets import load
    from ncf.download import fetch
    from ncf.evaluation import evaluate
    from ncf.ingest import load_split, prepare_split
    from ncf.interactions import Interactions
    from ncf.models import GMF, MLP, NeuMF
    from ncf.pipeline import PipelineConfig, run_pipeline, test_metrics, validation_target
    from ncf.recommend import NCFRecommender
    from ncf.recommender import Recommender
    from ncf.report import load_model
    from ncf.split import Split, leave_one_out, with_negatives
    from ncf.storage import load_prepared, save_prepared
    from ncf.synth import write_synth_netflix
    from ncf.training import TrainConfig, model_scorer, train


def __getattr__(name: str) -> Any:
    # numpy and torch are imported on first use, not by `import ncf`: the command line starts
    # (and can report a failure to import them, e.g. under a memory limit, in one line)
    # without them
    module = _API.get(name)
    if module is None:
        raise AttributeError(f"module 'ncf' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # found directly next time
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
