"""Netflix Prize ratings: ``combined_data_*.txt``, ``mv_*.txt``, ``training_set.tar``, probe.

Every layout has the same lines: a ``MovieID:`` line, then ``CustomerID,Rating,YYYY-MM-DD``
lines for that movie. The files are read in blocks of whole lines (``chunk_bytes``) and each
block is parsed with numpy alone, so memory stays bounded by the block size. The parts:

- :mod:`~ncf.datasets.netflix.files`: which files, in which order, cut into blocks;
- :mod:`~ncf.datasets.netflix.parse`: the byte-level parser of a block;
- :mod:`~ncf.datasets.netflix.diagnose`: what is wrong with a line that fails (error path);
- :mod:`~ncf.datasets.netflix.read`: blocks parsed on threads and joined into columns.
"""

from __future__ import annotations

from ncf.datasets.netflix.diagnose import rating_lines, repeated_pair_error
from ncf.datasets.netflix.files import netflix_sources
from ncf.datasets.netflix.parse import NetflixChunk
from ncf.datasets.netflix.read import (
    DEFAULT_CHUNK_BYTES,
    NetflixColumns,
    default_threads,
    iter_netflix_chunks,
    read_netflix,
    read_netflix_columns,
    read_netflix_probe,
)

__all__ = ["DEFAULT_CHUNK_BYTES", "NetflixChunk", "NetflixColumns", "default_threads",
           "iter_netflix_chunks", "netflix_sources", "rating_lines", "read_netflix",
           "read_netflix_columns", "read_netflix_probe", "repeated_pair_error"]
