"""Readers: every data set becomes one validated :class:`ncf.Interactions`.

- :func:`load` / :func:`detect_format`: one entry point for every format below.
- :mod:`~ncf.datasets.netflix`: Netflix Prize (``combined_data_*.txt``, ``mv_*.txt``,
  ``training_set.tar``, ``probe.txt``), streamed in bounded memory.
- :mod:`~ncf.datasets.movielens`: MovieLens 100K / 1M / 10M / 20M / 25M.
- :mod:`~ncf.datasets.paper`: the NCF paper's ``.train.rating`` / ``.test.rating`` /
  ``.test.negative`` files, as a :class:`ncf.split.Split`.
- :mod:`~ncf.datasets.tabular`: any delimited or Parquet table.
- :mod:`~ncf.datasets.titles`: item titles and years.

Only numpy is imported here; pyarrow is imported when a reader needs it.
"""

from ncf.datasets.loader import FORMATS, Dataset, detect_format, load
from ncf.datasets.movielens import read_movielens
from ncf.datasets.netflix import NetflixChunk, iter_netflix_chunks, read_netflix, read_netflix_probe
from ncf.datasets.paper import read_paper_split
from ncf.datasets.tabular import read_table
from ncf.datasets.titles import Catalog, read_titles

__all__ = [
    "FORMATS",
    "Catalog",
    "Dataset",
    "NetflixChunk",
    "detect_format",
    "iter_netflix_chunks",
    "load",
    "read_movielens",
    "read_netflix",
    "read_netflix_probe",
    "read_paper_split",
    "read_table",
    "read_titles",
]
