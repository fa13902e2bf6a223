"""Errors raised on bad input: one clear line naming the file and, where known, the line."""

from __future__ import annotations

from pathlib import Path


class NcfError(ValueError):
    """Base class of every error `ncf` raises on purpose (the CLI prints it as one line)."""


class DataError(NcfError):
    """A data file is missing, unreadable or malformed.

    The message names the file and, where known, the 1-based line number::

        DataError("rating 7 outside 1..5", path="combined_data_1.txt", line=12)
        # -> "combined_data_1.txt, line 12: rating 7 outside 1..5"
    """

    def __init__(self, message: str, path: str | Path | None = None, line: int | None = None):
        self.path = None if path is None else str(path)
        self.line = line
        self.reason = message
        where = ""
        if self.path is not None:
            where = self.path if line is None else f"{self.path}, line {line}"
            where += ": "
        super().__init__(where + message)
