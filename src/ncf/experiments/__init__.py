"""The paper's studies as one command: presets over a grid of cells, resumable, with a report.

A *cell* is one (model, setting, seed). Its result is stored as ``cells/MODEL-HASH.json``,
the hash taken over its full configuration (data fingerprint included), so running an
experiment again computes only the cells not stored yet, and an interrupted one resumes.

Presets: ``factors`` (Figure 4, Table 2), ``depth`` (Tables 3 and 4), ``negatives``
(Figure 7), ``curves`` (Figure 6) and ``protocols`` (sampled against full ranking). Every
choice, NCF epochs and baseline hyper-parameters alike, is made on the validation split.

Modules: :mod:`~ncf.experiments.cells` (configurations, hashes, the cell store, computing
cells), :mod:`~ncf.experiments.presets` (the studies), :mod:`~ncf.experiments.tables` and
:mod:`~ncf.experiments.markdown` (the report), :mod:`~ncf.experiments.run` (the entry point,
:func:`~ncf.experiments.run.run_experiment`). This package itself imports nothing heavy.

Example:
    >>> from ncf.experiments.run import ExperimentOptions, run_experiment   # doctest: +SKIP
    >>> data = resolve_training_data(data="ml-100k.train.rating")            # doctest: +SKIP
    >>> run_experiment("factors", data, ExperimentOptions(epochs=10), "reports/f")  # doctest: +SKIP
"""

from __future__ import annotations

from ncf.experiments.names import ALL_MODELS, LABELS, NCF_MODELS, PRESET_TITLES

__all__ = ["ALL_MODELS", "LABELS", "NCF_MODELS", "PRESET_TITLES"]
