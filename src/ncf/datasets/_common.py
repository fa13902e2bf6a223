"""Helpers shared by the readers: paths, civil dates, locating the bad line of a file."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np

from ncf.errors import DataError

SECONDS_PER_DAY = 86_400
_DAYS_IN_MONTH = np.array([0, 31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31], dtype=np.int32)


def existing(path: str | Path) -> Path:
    """``path`` as a ``Path``; ``DataError`` naming it if it does not exist."""
    p = Path(path)
    if not p.exists():
        raise DataError("no such file or directory", path=p)
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
    """``(1-based line number, text without line end)`` of every line: error paths only."""
    with open(path, "rb") as f:
        for number, raw in enumerate(f, start=1):
            yield number, raw.rstrip(b"\r\n").decode(encoding, errors="replace")


def locate_row(path: str | Path, row: int, skip: int = 0) -> int:
    """1-based line number of data row ``row`` (0-based) after ``skip`` header lines.

    Blank lines are not rows (pyarrow skips them). Error paths only: a Python scan.
    """
    seen = -1
    number = 0
    for number, text in iter_lines(path):
        if number <= skip or not text.strip():
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
) -> DataError:
    """Scan ``path`` for the first line whose fields ``check`` rejects; the error to raise.

    Used only after a vectorised parse failed, to name the file and line.
    """
    for number, text in iter_lines(path):
        if number <= skip or not text.strip():
            continue
        problem = check(split(text))
        if problem is not None:
            return DataError(problem, path=path, line=number)
    return DataError("could not be parsed", path=path)


def int_field(name: str) -> Callable[[str], str | None]:
    """A field checker: ``None`` if the text is an integer, else the reason."""

    def check(text: str) -> str | None:
        try:
            int(text)
        except ValueError:
            return f"{name} {text!r} is not an integer"
        return None

    return check


def float_field(name: str) -> Callable[[str], str | None]:
    """A field checker: ``None`` if the text is a finite number, else the reason."""

    def check(text: str) -> str | None:
        try:
            value = float(text)
        except ValueError:
            return f"{name} {text!r} is not a number"
        return None if np.isfinite(value) else f"{name} {text!r} is not finite"

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
