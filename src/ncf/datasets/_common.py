"""Helpers shared by the readers: paths, civil dates, locating the bad line of a file."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np

from ncf.errors import DataError

SECONDS_PER_DAY = 86_400
_DAYS_IN_MONTH = np.array([0, 31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31], dtype=np.int32)
BOM = b"\xef\xbb\xbf"  # a UTF-8 byte order mark, which pyarrow skips at the start of a file
# what pyarrow's CSV reader accepts (spaces and tabs around a value are trimmed):
_INT = re.compile(r"-?[0-9]+")
_FLOAT = re.compile(
    r"[+-]?(?:(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?|inf|infinity|nan)", re.IGNORECASE
)
_INVALID_VALUE = re.compile(r"invalid value '(.*)'")


def existing(path: str | Path) -> Path:
    """``path`` as a ``Path``; ``DataError`` naming it if it does not exist, or if it is
    neither a folder nor a regular file (a pipe or a device is read several times)."""
    p = Path(path)
    if not p.exists():
        raise DataError("no such file or directory", path=p)
    if not (p.is_dir() or p.is_file()):
        raise DataError("not a regular file or folder (a pipe or device cannot be read "
                        "twice): save it to a file first", path=p)
    return p


def regular_file(path: str | Path) -> Path:
    """``path``, a regular file found inside a data folder; ``DataError`` naming it otherwise
    (a pipe would be waited on forever, a folder cannot be read as a file)."""
    p = Path(path)
    if not p.is_file():
        raise DataError("not a regular file (a pipe, device or folder in place of a data "
                        "file)", path=p)
    return p


def days_from_civil(year: np.ndarray, month: np.ndarray, day: np.ndarray) -> np.ndarray:
    """Days since 1970-01-01 of proleptic Gregorian dates (vectorised), shape of the inputs.

    Args:
        year, month, day: integer arrays of the same shape (valid dates, year >= 0).

    Returns:
        int32 days since the Unix epoch.
    """
    y = np.asarray(year, dtype=np.int32) - (np.asarray(month) <= 2)
    era = y // 400
    yoe = y - era * 400
    mp = (np.asarray(month, dtype=np.int32) + 9) % 12  # March = 0
    doy = (153 * mp + 2) // 5 + np.asarray(day, dtype=np.int32) - 1
    doe = yoe * 365 + yoe // 4 - yoe // 100 + doy
    return (era * 146_097 + doe - 719_468).astype(np.int32)


def valid_dates(year: np.ndarray, month: np.ndarray, day: np.ndarray) -> np.ndarray:
    """Boolean mask of which (year, month, day) triples are real calendar dates."""
    year = np.asarray(year, dtype=np.int32)
    month = np.asarray(month, dtype=np.int32)
    ok_month = (month >= 1) & (month <= 12)
    leap = (year % 4 == 0) & ((year % 100 != 0) | (year % 400 == 0))
    dim = _DAYS_IN_MONTH[np.where(ok_month, month, 0)] + ((month == 2) & leap)
    return ok_month & (day >= 1) & (day <= dim)


def iter_lines(path: str | Path, encoding: str = "latin-1") -> Iterator[tuple[int, str]]:
    """``(1-based line number, text without line end)`` of every line: error paths only.

    A UTF-8 byte order mark at the start of the file is dropped, as pyarrow does.
    """
    with open(path, "rb") as f:
        for number, raw in enumerate(f, start=1):
            if number == 1 and raw.startswith(BOM):
                raw = raw[len(BOM) :]
            yield number, raw.rstrip(b"\r\n").decode(encoding, errors="replace")


def locate_row(path: str | Path, row: int, skip: int = 0) -> int:
    """1-based line number of data row ``row`` (0-based) after ``skip`` header lines.

    Empty lines are not rows (pyarrow skips them; a line of spaces is one). Error paths
    only: a Python scan.
    """
    seen = -1
    number = 0
    for number, text in iter_lines(path):
        if number <= skip or not text:
            continue
        seen += 1
        if seen == row:
            return number
    return number


def first_bad_line(
    path: str | Path,
    check: Callable[[list[str]], str | None],
    split: Callable[[str], list[str]],
    skip: int = 0,
    error: str | None = None,
) -> DataError:
    """Scan ``path`` for the first line whose fields ``check`` rejects; the error to raise.

    Used only after a vectorised parse failed, to name the file and line. When every line
    passes ``check``: ``empty file`` / ``no data rows`` if there is no data line, else the
    line holding the value the parser's message ``error`` names (pyarrow's
    ``invalid value '...'``), else that message's first line, without a line number.
    """
    rows = 0
    for number, text in iter_lines(path):
        if number <= skip or not text:
            continue
        rows += 1
        problem = check(split(text))
        if problem is not None:
            return DataError(problem, path=path, line=number)
    if rows == 0:
        empty = Path(path).stat().st_size == 0
        return DataError("empty file" if empty else "no data rows", path=path)
    message = (error or "").strip().partition("\n")[0]
    found = _INVALID_VALUE.search(message)
    if found:
        value = found.group(1).strip(" \t")
        for number, text in iter_lines(path):
            if number > skip and value in (f.strip(" \t") for f in split(text)):
                return DataError(f"value {value!r} could not be read", path=path, line=number)
    return DataError(f"could not be parsed ({message})" if message else "could not be parsed", path)


def int_field(name: str) -> Callable[[str], str | None]:
    """A field checker: ``None`` if the text is a 64-bit integer as pyarrow reads it, else why.

    Digits with an optional ``-``, spaces or tabs around (Python's ``int`` also takes
    ``+2``, ``1_2``, non-ASCII digits and any size: the fast path does not).
    """

    def check(text: str) -> str | None:
        value = text.strip(" \t")
        if not _INT.fullmatch(value):
            try:
                int(value)
            except ValueError:
                return f"{name} {text!r} is not an integer"
            return f"{name} {text!r} is not written as plain digits (0-9, optional '-')"
        if not -(2**63) <= int(value) < 2**63:
            return f"{name} {value} out of range (beyond 64 bits)"
        return None

    return check


def float_field(name: str) -> Callable[[str], str | None]:
    """A field checker: ``None`` if the text is a finite number as pyarrow reads it, else why."""

    def check(text: str) -> str | None:
        value = text.strip(" \t")
        if not _FLOAT.fullmatch(value):
            return f"{name} {text!r} is not a number"
        return None if np.isfinite(float(value)) else f"{name} {text!r} is not finite"

    return check


def fields_checker(
    checkers: list[Callable[[str], str | None]], min_fields: int | None = None
) -> Callable[[list[str]], str | None]:
    """Check a split line: field count, then each field with its checker."""
    need = len(checkers) if min_fields is None else min_fields

    def check(fields: list[str]) -> str | None:
        if len(fields) < need or (min_fields is None and len(fields) != need):
            return f"expected {need} fields, got {len(fields)}"
        for checker, text in zip(checkers, fields, strict=False):
            problem = checker(text)
            if problem is not None:
                return problem
        return None

    return check
