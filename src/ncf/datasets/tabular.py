"""Delimited text and Parquet files: any table with user / item / [rating] / [timestamp] columns.

Parsing is pyarrow's (imported lazily, so ``import ncf.datasets`` stays light); when it fails
or a value is bad, a slow scan of the file finds the line to name in the ``DataError``.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ncf.datasets._common import (
    BOM,
    SECONDS_PER_DAY,
    existing,
    fields_checker,
    first_bad_line,
    float_field,
    int_field,
    iter_lines,
    locate_row,
)
from ncf.errors import DataError
from ncf.interactions import Interactions

Column = str | int
_PARQUET = (".parquet", ".pq")
_DELIMITERS = (",", "\t", ";", "|")


def read_numeric_columns(
    path: str | Path,
    delimiter: str,
    header: bool,
    kinds: Sequence[str],
    names: Sequence[str],
) -> list[np.ndarray]:
    """Read a headerless-or-not delimited file whose fields are all numbers.

    Args:
        path: the file.
        delimiter: ``"\\t"``, ``","`` or ``"::"`` (read as ``":"`` with empty columns between).
        header: whether the first line is a header (skipped).
        kinds: ``"int"`` or ``"float"`` per expected field, in file order.
        names: field names for error messages.

    Returns:
        One array per field: int64 for ``"int"``, float64 for ``"float"``, shape ``(n,)``.
    """
    import pyarrow as pa
    import pyarrow.csv as pcsv

    path = existing(path)
    double = delimiter == "::"
    n = len(kinds) * 2 - 1 if double else len(kinds)
    keep = list(range(0, n, 2)) if double else list(range(n))
    col_names = [f"f{i}" for i in range(n)]
    types = {
        col_names[k]: pa.int64() if kind == "int" else pa.float64()
        for k, kind in zip(keep, kinds, strict=True)
    }
    checker = fields_checker(
        [
            int_field(nm) if kind == "int" else float_field(nm)
            for kind, nm in zip(kinds, names, strict=True)
        ]
    )
    if path.is_file() and path.stat().st_size == 0:
        raise DataError("empty file", path=path)
    try:
        table = pcsv.read_csv(
            path,
            read_options=pcsv.ReadOptions(column_names=col_names, skip_rows=int(header)),
            parse_options=pcsv.ParseOptions(delimiter=":" if double else delimiter),
            convert_options=pcsv.ConvertOptions(
                column_types=types, include_columns=[col_names[k] for k in keep]
            ),
        )
    except pa.ArrowInvalid as e:
        raise first_bad_line(
            path, checker, lambda t: t.split(delimiter), skip=int(header), error=str(e)
        ) from None
    if table.num_rows == 0:
        raise DataError("no data rows", path=path)
    out = []
    for k, nm in zip(keep, names, strict=True):
        col = table.column(col_names[k])
        if col.null_count:
            row = int(np.flatnonzero(col.is_null().to_numpy(zero_copy_only=False))[0])
            raise DataError(f"missing {nm}", path=path, line=locate_row(path, row, int(header)))
        out.append(col.to_numpy())
    for arr, nm in zip(out, names, strict=True):
        if arr.dtype.kind == "f" and not np.isfinite(arr).all():
            row = int(np.flatnonzero(~np.isfinite(arr))[0])
            raise DataError(
                f"{nm} is not finite", path=path, line=locate_row(path, row, int(header))
            )
    return out


def sniff_delimiter(path: str | Path) -> str:
    """The delimiter of a text table: by suffix (``.tsv``), else the most frequent of , TAB ; |."""
    path = Path(path)
    if path.suffix.lower() == ".tsv":
        return "\t"
    with open(path, "rb") as f:
        first = f.readline().removeprefix(BOM).decode("latin-1")
    counts = {d: first.count(d) for d in _DELIMITERS}
    best = max(counts, key=lambda d: counts[d])
    if counts[best] == 0:
        raise DataError(
            "cannot tell the delimiter (none of , TAB ; | in line 1)", path=path, line=1
        )
    return best


def _resolve(names: list[str], col: Column, path: Path) -> int:
    """The index of column ``col`` (a name, matched exactly, else ignoring case, or an index)."""
    if isinstance(col, int) and not isinstance(col, bool):
        if not -len(names) <= col < len(names):
            raise DataError(f"column index {col} outside 0..{len(names) - 1}", path=path)
        return col % len(names)
    for same in (lambda n: n == col, lambda n: n.lower() == str(col).lower()):
        found = [k for k, n in enumerate(names) if same(n)]
        if len(found) > 1:
            twice = ", ".join(repr(names[k]) for k in found)
            raise DataError(
                f"the header names column {col!r} {len(found)} times ({twice}): "
                "give each column its own name",
                path=path,
                line=None if path.suffix.lower() in _PARQUET else 1,
            )
        if found:
            return found[0]
    raise DataError(f"no column {col!r} (columns: {', '.join(names)})", path=path)


def _csv_problem(text: str, delimiter: str, ncols: int) -> str | None:
    """Why pyarrow rejects one line of a delimited file (quotes as in CSV), or ``None``."""
    try:
        fields = next(csv.reader([text], delimiter=delimiter, strict=True), [])
    except csv.Error as e:
        return "unclosed quote" if "end of data" in str(e) else f"bad quoting ({e})"
    return None if len(fields) == ncols else f"expected {ncols} fields, got {len(fields)}"


def _load_table(path: Path, delimiter: str | None, header: bool) -> Any:
    import pyarrow as pa
    import pyarrow.csv as pcsv

    if path.suffix.lower() in _PARQUET:
        import pyarrow.parquet as pq

        try:
            return pq.read_table(path)
        except (pa.ArrowException, OSError) as e:
            raise _parquet_error(path, e) from None
    delim = delimiter or sniff_delimiter(path)
    try:
        return pcsv.read_csv(
            path,
            read_options=pcsv.ReadOptions(autogenerate_column_names=not header),
            parse_options=pcsv.ParseOptions(delimiter=delim),
        )
    except pa.ArrowInvalid as e:
        number, first = next(((n, t) for n, t in iter_lines(path) if t.strip()), (1, ""))
        try:
            ncols = len(next(csv.reader([first], delimiter=delim), []))
        except csv.Error:  # a line end inside a field: only the count matters here
            ncols = first.count(delim) + 1
        if problem := _csv_problem(first, delim, ncols):
            raise DataError(problem, path=path, line=number) from None
        raise first_bad_line(
            path,
            lambda f: _csv_problem(f[0], delim, ncols),
            lambda t: [t],
            skip=number if header else 0,
            error=str(e),
        ) from None


def _parquet_error(path: Path, exc: Exception) -> DataError:
    """A Parquet file pyarrow cannot read (junk, truncated, or types it does not know)."""
    reason = " ".join(str(exc).split()) or type(exc).__name__
    return DataError(f"not a readable Parquet file ({reason})", path=path)


def _ids(col: Any, what: str, path: Path, header: bool) -> np.ndarray:
    import pyarrow as pa
    import pyarrow.compute as pc

    _no_nulls(col, what, path, header)
    kind = col.type
    if not (pa.types.is_integer(kind) or pa.types.is_floating(kind) or pa.types.is_string(kind)
            or pa.types.is_large_string(kind) or pa.types.is_binary(kind)
            or pa.types.is_large_binary(kind) or pa.types.is_dictionary(kind)):
        raise DataError(f"the {what} column holds {kind}: ids must be integers or text",
                        path=path)
    if pa.types.is_dictionary(kind):
        return _ids(col.cast(kind.value_type), what, path, header)
    if pa.types.is_integer(col.type):
        return col.to_numpy().astype(np.int64)
    if pa.types.is_floating(col.type):
        arr = col.to_numpy()
        with np.errstate(invalid="ignore"):
            bad = np.flatnonzero(~(np.abs(arr) < 2.0**63) | (arr != np.round(arr)))
        if bad.size:
            raise DataError(
                f"{what} id {float(arr[bad[0]]):g} is not an integer"
                + (" in the 64-bit range" if arr[bad[0]] == np.round(arr[bad[0]]) else ""),
                path=path,
                line=_line(path, int(bad[0]), header),
            )
        return arr.astype(np.int64)
    try:
        text = col.cast(pa.string())
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        raise DataError(f"the {what} column holds bytes that are not UTF-8 text", path=path,
                        line=_line(path, _first_failure(col, _utf8), header)) from None
    blank = pc.equal(pc.utf8_length(pc.utf8_trim_whitespace(text)), 0).to_numpy(
        zero_copy_only=False
    )
    if blank.any():
        row = int(np.flatnonzero(blank)[0])
        raise DataError(f"missing {what} (empty field)", path=path, line=_line(path, row, header))
    # pyarrow reads no newline inside a value, except from a quote left open at the end
    cut = pc.match_substring(text, "\n").to_numpy(zero_copy_only=False)
    if cut.any() and path.suffix.lower() not in _PARQUET:
        row = int(np.flatnonzero(cut)[0])
        raise DataError("unclosed quote", path=path, line=_line(path, row, header))
    return np.asarray(text.to_numpy(zero_copy_only=False).astype(str))


def _utf8(value: Any) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def _no_nulls(col: Any, what: str, path: Path, header: bool) -> None:
    if col.null_count:
        row = int(np.flatnonzero(col.is_null().to_numpy(zero_copy_only=False))[0])
        raise DataError(f"missing {what}", path=path, line=_line(path, row, header))


def _line(path: Path, row: int, header: bool) -> int | None:
    return None if path.suffix.lower() in _PARQUET else locate_row(path, row, int(header))


def _first_failure(col: Any, convert: Callable[[Any], Any]) -> int:
    """Index of the first value ``convert`` rejects (error path only: a Python loop)."""
    for i, value in enumerate(col.to_pylist()):
        try:
            convert(value)
        except (ValueError, TypeError):
            return i
    return 0


def _ratings(col: Any, path: Path, header: bool) -> np.ndarray:
    import pyarrow as pa

    _no_nulls(col, "rating", path, header)
    try:
        arr = col.cast(pa.float64()).to_numpy()
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        row = _first_failure(col, float)
        raise DataError(
            f"rating {col[row].as_py()!r} is not a number", path=path, line=_line(path, row, header)
        ) from None
    if not np.isfinite(arr).all():
        row = int(np.flatnonzero(~np.isfinite(arr))[0])
        raise DataError("rating is not finite", path=path, line=_line(path, row, header))
    return arr.astype(np.float32)


def _iso_datetime(value: Any) -> np.datetime64:
    if value is None:
        raise ValueError("missing")
    text = str(value)
    if _ZONED.search(text):
        raise ValueError("a time zone")  # numpy would only warn, and drop it
    return np.datetime64(text)


_ZONED = re.compile(r"T.*(Z|[+-]\d\d:?\d\d)$")


def _seconds(col: Any, path: Path, header: bool) -> np.ndarray:
    """Timestamps in seconds from integers (seconds), dates (midnight UTC) or ISO datetimes."""
    import pyarrow as pa
    import pyarrow.compute as pc

    _no_nulls(col, "timestamp", path, header)
    t = col.type
    if pa.types.is_integer(t):
        return col.to_numpy().astype(np.int64)
    if pa.types.is_date(t):
        return col.cast(pa.date32()).cast(pa.int32()).to_numpy().astype(np.int64) * SECONDS_PER_DAY
    if pa.types.is_timestamp(t):
        if t.tz is None:
            col = pc.assume_timezone(col, "UTC")
        return pc.cast(col, pa.timestamp("s", tz="UTC"), safe=False).cast(pa.int64()).to_numpy()
    try:
        return _seconds(col.cast(pa.timestamp("s", tz="UTC")), path, header)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        row = _first_failure(col, _iso_datetime)
        value = col[row].as_py()
        why = ("has a time zone and others have none: write all with one or none"
               if _ZONED.search(str(value)) else "is neither integer seconds nor an ISO date")
        raise DataError(f"timestamp {value!r} {why}", path=path,
                        line=_line(path, row, header)) from None


def read_table(
    path: str | Path,
    user_col: Column,
    item_col: Column,
    rating_col: Column | None = None,
    timestamp_col: Column | None = None,
    delimiter: str | None = None,
    header: bool = True,
) -> Interactions:
    """Read interactions from a delimited text file or a Parquet file.

    Args:
        path: ``.csv`` / ``.tsv`` / any delimited text, or ``.parquet``.
        user_col, item_col: column names or 0-based indices; raw ids may be integers or strings.
        rating_col: optional rating column (numbers).
        timestamp_col: optional column of integer seconds or ISO dates / datetimes (UTC).
        delimiter: text delimiter; sniffed from the first line when ``None``.
        header: whether the first line holds column names (text files only).

    Returns:
        Interactions with users / items numbered densely in raw-id order.
    """
    path = existing(path)
    table = _load_table(path, delimiter, header)
    if table.num_rows == 0:
        raise DataError("no data rows", path=path)
    try:
        names = list(table.column_names)
    except UnicodeDecodeError:
        raise DataError("the header is not UTF-8 text", path=path,
                        line=None if path.suffix.lower() in _PARQUET else 1) from None

    def column(col: Column) -> Any:
        return table.column(_resolve(names, col, path))  # by index: names may repeat

    users = _ids(column(user_col), "user", path, header)
    items = _ids(column(item_col), "item", path, header)
    ratings = None if rating_col is None else _ratings(column(rating_col), path, header)
    stamps = None if timestamp_col is None else _seconds(column(timestamp_col), path, header)
    return Interactions.from_raw(
        users, items, ratings, stamps, meta={"format": "table", "sources": [str(path)]}
    )


def table_columns(path: str | Path, delimiter: str | None = None) -> list[str]:
    """Column names of a table's header (text: first line; Parquet: schema)."""
    path = existing(path)
    if path.suffix.lower() in _PARQUET:
        import pyarrow as pa
        import pyarrow.parquet as pq

        try:
            return list(pq.read_schema(path).names)
        except (pa.ArrowException, OSError) as e:
            raise _parquet_error(path, e) from None
    delim = delimiter or sniff_delimiter(path)
    with open(path, "rb") as f:
        first = f.readline().removeprefix(BOM).decode("latin-1").strip()
    return [c.strip().strip('"') for c in first.split(delim)]
