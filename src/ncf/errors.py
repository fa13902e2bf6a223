"""Errors raised on bad input: one clear line naming the file and, where known, the line."""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator
from pathlib import Path

_LINE_ENDS = re.compile(r"\s*[\r\n]+\s*")


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
        self.reason = _LINE_ENDS.sub(" ", message.strip())  # a library's reason may run on
        where = ""
        if self.path is not None:
            where = self.path if line is None else f"{self.path}, line {line}"
            where += ": "
        super().__init__(where + self.reason)


_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def printable(text: object) -> str:
    """``text`` safe for one terminal line: control characters (newlines, escape sequences)
    written as ``\\n``, ``\\t`` or ``\\xNN``, so that a file name or a title cannot split a
    message or drive the terminal."""
    return _CONTROL.sub(lambda m: repr(m.group())[1:-1], str(text))


@contextlib.contextmanager
def about(path: str | Path) -> Iterator[None]:
    """Errors raised inside concern the data at ``path``: an :class:`NcfError` that names no
    file (a split or sampling rule the data cannot meet) becomes a :class:`DataError` naming
    ``path``; a :class:`DataError` keeps the file it names."""
    try:
        yield
    except DataError:
        raise
    except NcfError as exc:
        raise DataError(str(exc), path=path) from None
