"""The prepared form of a data set: a folder of Parquet / ``.npy`` files plus ``meta.json``.

Layout (no pickle anywhere; ``np.load(..., allow_pickle=False)`` refuses object arrays, so
a prepared folder can never run code when it is loaded)::

    train.parquet, test.parquet[, validation.parquet]   user, item[, rating][, timestamp]
    test_negatives.npy[, validation_negatives.npy]      int32 (rows, n) candidates
    users.npy, items.npy                                 raw id of every dense index
    catalog.parquet                                      item, title, year (optional)
    meta.json                                            version, counts, options, sources,
                                                         fingerprint (sha256 of the arrays)

:mod:`ncf.ingest` makes it from raw files; the public writers below (:class:`ArrayHash`,
:func:`write_catalog`, :func:`swap_in`, ...) are the pieces its streamed write shares.

Writing is atomic: everything goes to a hidden sibling folder, is fsync'ed, then renamed
into place, so a failure leaves either no folder or the previous prepared folder intact.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from ncf.datasets import Catalog
from ncf.errors import DataError, NcfError
from ncf.interactions import Interactions
from ncf.outputs import (
    files_only,
    hold_output,
    output_lock,
    reclaim,
    replace_folder,
    resolve_output,
    temporary_folder,
)
from ncf.runs import existing_ancestor
from ncf.split import Split

FORMAT = "ncf-prepared"  # the "format" of every meta.json
FORMAT_VERSION = 2  # 2: the fingerprint hashes each array on its own (streamed writes)
META = "meta.json"  # the file that makes a folder a prepared folder
_PARTS = ("train", "validation", "test")


@dataclass(frozen=True, eq=False)
class Prepared:
    """A loaded prepared folder.

    Args:
        split: the split, with its candidates (negatives) when they were saved.
        catalog: the items' titles and years, or ``None``.
        meta: the contents of ``meta.json``.
        path: the folder it was read from.
    """

    split: Split
    catalog: Catalog | None
    meta: dict[str, Any]
    path: Path


def is_prepared(path: str | Path) -> bool:
    """Whether ``path`` is a folder holding a ``meta.json`` (a prepared folder)."""
    return (Path(path) / META).is_file()


def _replaceable(folder: Path) -> bool:
    """Whether ``folder`` is a prepared folder this package wrote and nothing else: its
    ``meta.json`` is ours and every entry of the folder is a file that ``meta.json`` lists."""
    try:
        meta = json.loads((folder / META).read_text())
        entries = {p.name for p in folder.iterdir()}
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return False
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        return False
    files = meta.get("files")
    if not isinstance(files, list) or not all(isinstance(f, str) for f in files):
        return False
    return entries <= {*files, META}


def check_output_dir(out_dir: str | Path) -> Path:
    """Check, cheaply and before any heavy work, that ``out_dir`` can be (re)written.

    Accepted: a missing folder whose nearest existing parent is a writable folder, an
    empty folder, or a previous prepared folder holding only its own files (replaced on
    success); a folder with anything else in it is never replaced. A symbolic link is
    followed to the folder it names.

    Args:
        out_dir: the output folder.

    Returns:
        ``out_dir`` as an absolute ``Path``.

    Raises:
        NcfError: with a one-line reason otherwise.
    """
    out = resolve_output(out_dir)
    if out.exists() and not out.is_dir():
        raise NcfError(f"{out}: exists and is not a folder")
    if out.is_dir() and any(out.iterdir()) and not _replaceable(out):
        raise NcfError(f"{out}: folder is not empty and is not a prepared folder of ncf (only "
                       "files listed in its meta.json); not replacing it")
    parent = existing_ancestor(out.parent)
    if not parent.is_dir():
        raise NcfError(f"{out}: {parent} is not a folder")
    try:  # the only reliable writability test (permissions, read-only mounts, root)
        Path(tempfile.mkdtemp(prefix=".ncf-probe-", dir=parent)).rmdir()
    except OSError as exc:
        raise NcfError(f"{out}: cannot write in {parent}: {exc.strerror or exc}") from None
    return out


#: Every file a prepared folder (or its temporary folder while written) may hold.
_OWN_FILES = {*(f"{p}.parquet" for p in _PARTS), "test_negatives.npy",
              "validation_negatives.npy", "users.npy", "items.npy", "catalog.parquet", META}


@contextlib.contextmanager
def writing_prepared(out: Path) -> Iterator[Path]:
    """Hold ``out``'s lock (one ncf process per output) while it is written; once held,
    the temporary folders an earlier killed write left beside it are removed."""
    with output_lock(out, what="prepared folder") as path:
        leftovers = files_only(lambda name: name in _OWN_FILES)
        for kind in ("tmp", "old"):
            reclaim(path.parent, f".{path.name}.{kind}-", leftovers)
        yield path


def claim_output_dir(out_dir: str | Path) -> Path:
    """:func:`check_output_dir`, then hold the output's lock until the command ends
    (:func:`ncf.outputs.release_all`), removing what an earlier killed write left."""
    out = check_output_dir(out_dir)
    hold_output(out, what="prepared folder")
    with writing_prepared(out):
        pass
    return out


# ---------------------------------------------------------------------------- saving
def json_default(value: Any) -> Any:
    """``json.dumps`` fallback: numpy scalars and small arrays as values, else ``str``."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray) and value.size <= 1000:
        return value.tolist()
    return str(value)


def jsonable(value: Any) -> Any:
    """``value`` as plain JSON types (through :func:`json_default`)."""
    return json.loads(json.dumps(value, default=json_default))


def _ids_array(raw: np.ndarray) -> np.ndarray:
    raw = np.asarray(raw)
    return raw.astype(str) if raw.dtype == object else raw


def _arrays(split: Split) -> list[tuple[str, np.ndarray]]:
    """Every array of the split in a fixed order: what the fingerprint covers."""
    out: list[tuple[str, np.ndarray]] = []
    for part in _PARTS:
        x = getattr(split, part)
        if x is None:
            continue
        for col, arr in (("user", x.user_ids), ("item", x.item_ids), ("rating", x.ratings),
                         ("timestamp", x.timestamps)):
            if arr is not None:
                dtype = {"user": np.int32, "item": np.int32, "rating": np.float32}.get(
                    col, np.int64)
                out.append((f"{part}.{col}", np.asarray(arr).astype(dtype, copy=False)))
    for part in ("test", "validation"):
        neg = getattr(split, f"{part}_negatives")
        if neg is not None:
            out.append((f"{part}_negatives", np.asarray(neg).astype(np.int32, copy=False)))
    out.append(("users", _ids_array(split.train.user_raw)))
    out.append(("items", _ids_array(split.train.item_raw)))
    return out


class ArrayHash:
    """sha256 of one array's bytes, fed slice by slice; its fingerprint line at the end."""

    def __init__(self, name: str, dtype: Any) -> None:
        self.name, self.dtype, self.rows = name, np.dtype(dtype), 0
        self.width: tuple[int, ...] | None = None
        self.h = hashlib.sha256()

    def update(self, arr: np.ndarray) -> None:
        arr = np.ascontiguousarray(arr, dtype=self.dtype)
        self.rows += len(arr)
        self.width = arr.shape[1:]
        if arr.size:  # an empty array adds no bytes (and its view cannot be cast)
            self.h.update(arr.data.cast("B"))

    def line(self) -> str:
        shape = (self.rows, *(self.width or ()))
        return f"{self.name}|{self.dtype.str}|{shape}|{self.h.hexdigest()}\n"


def combine_hashes(lines: list[str]) -> str:
    """The fingerprint ``sha256:<hex>`` of the :meth:`ArrayHash.line` lines, in order."""
    return "sha256:" + hashlib.sha256("".join(lines).encode()).hexdigest()


def fingerprint(arrays: list[tuple[str, np.ndarray]]) -> str:
    """``sha256:<hex>`` over names, dtypes, shapes and the sha256 of each array (in order).

    Each array is hashed on its own, so a prepared folder written in slices gets the
    same fingerprint as one written at once.
    """
    lines = []
    for name, arr in arrays:
        arr = np.ascontiguousarray(arr)
        h = ArrayHash(name, arr.dtype)
        h.update(arr)
        if arr.ndim == 1 or arr.shape[0] == 0:
            h.width = arr.shape[1:]
        lines.append(h.line())
    return combine_hashes(lines)


def _check_split(split: Split) -> None:
    """Every part must share the train id spaces; candidates must match their part."""
    tr = split.train
    for part in ("validation", "test"):
        x = getattr(split, part)
        if x is None:
            continue
        same = (x.n_users, x.n_items) == (tr.n_users, tr.n_items) and (
            x.user_raw is tr.user_raw or np.array_equal(x.user_raw, tr.user_raw)
        ) and (x.item_raw is tr.item_raw or np.array_equal(x.item_raw, tr.item_raw))
        if not same:
            raise NcfError(f"split.{part} does not share the users and items of split.train")
        neg = getattr(split, f"{part}_negatives")
        if neg is not None and (np.ndim(neg) != 2 or len(neg) != len(x)):
            raise NcfError(f"split.{part}_negatives must have shape ({len(x)}, n)")
    for part in ("validation", "test"):
        if getattr(split, part) is None and getattr(split, f"{part}_negatives") is not None:
            raise NcfError(f"split.{part}_negatives given without split.{part}")


def source_info(sources: list[str | Path]) -> list[dict[str, Any]]:
    """Absolute path, size and mtime (when readable) of each source file, for ``meta.json``."""
    info = []
    for s in sources:
        entry: dict[str, Any] = {"path": str(Path(s).absolute())}
        try:
            st = Path(s).stat()
            entry.update(size=st.st_size, mtime=st.st_mtime)
        except OSError:
            pass
        info.append(entry)
    return info


def fsync(path: Path) -> None:
    """Flush a file or folder to disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_catalog(folder: Path, catalog: Catalog) -> None:
    """Write ``catalog`` as ``folder/catalog.parquet`` (``years <= 0`` stored as unknown)."""
    years = np.asarray(catalog.years)
    year_col = pa.array(years, mask=~np.isfinite(years) | (years <= 0)
                        if years.dtype.kind == "f" else years <= 0)
    table = pa.table({
        "item": pa.array(_ids_array(catalog.item_raw)),
        "title": pa.array([str(t) for t in catalog.titles], pa.string()),
        "year": year_col.cast(pa.int32()),
    })
    pq.write_table(table, folder / "catalog.parquet")


#: Rows per slice of a part written (and per Parquet row group).
ROWS_PER_SLICE = 1 << 22

#: The type of each column of a part, on disk and in the fingerprint.
COLUMN_TYPES = {"user": np.int32, "item": np.int32, "rating": np.float32,
                "timestamp": np.int64}


@dataclass(frozen=True)
class Part:
    """One part of a prepared folder (``train``, ``validation`` or ``test``), as slices.

    Args:
        name: the part.
        slices: called once, yields ``{column: array}`` slices of rows in order (``user``,
            ``item``, then ``rating`` and ``timestamp`` when the data have them); at least one.
    """

    name: str
    slices: Callable[[], Iterator[dict[str, np.ndarray]]]


def interactions_part(name: str, x: Interactions) -> Part:
    """A part of interactions held in memory, cut into slices of :data:`ROWS_PER_SLICE`."""
    def slices() -> Iterator[dict[str, np.ndarray]]:
        for a in range(0, max(len(x), 1), ROWS_PER_SLICE):
            s = slice(a, a + ROWS_PER_SLICE)
            cols = {"user": x.user_ids[s], "item": x.item_ids[s]}
            if x.ratings is not None:
                cols["rating"] = x.ratings[s]
            if x.timestamps is not None:
                cols["timestamp"] = x.timestamps[s]
            yield cols
    return Part(name, slices)


def _write_part(folder: Path, part: Part, hashes: list[str]) -> tuple[int, list[str]]:
    """Write ``part`` as ``NAME.parquet`` slice by slice, hashing each column as it goes;
    returns its rows and columns."""
    writer = None
    h: dict[str, ArrayHash] = {}
    n = 0
    try:
        for cols in part.slices():
            cols = {c: np.asarray(a).astype(COLUMN_TYPES[c], copy=False) for c, a in cols.items()}
            table = pa.table(cols)
            if writer is None:
                writer = pq.ParquetWriter(folder / f"{part.name}.parquet", table.schema)
                h = {c: ArrayHash(f"{part.name}.{c}", COLUMN_TYPES[c]) for c in cols}
            writer.write_table(table, row_group_size=ROWS_PER_SLICE)
            for c, arr in cols.items():
                h[c].update(arr)
            n += len(cols["user"])
    finally:
        if writer is not None:
            writer.close()
    hashes.extend(hash_.line() for hash_ in h.values())
    return n, list(h)


def write_prepared(
    out: Path,
    parts: list[Part],
    negatives: dict[str, np.ndarray],
    user_raw: np.ndarray,
    item_raw: np.ndarray,
    catalog: Catalog | None,
    options: dict[str, Any],
    split_meta: dict[str, Any],
    data_meta: dict[str, Any],
    sources: list[str | Path],
) -> Path:
    """Write a prepared folder: the one writer of the in-memory and the streamed paths.

    Every part is written and hashed slice by slice (its memory stays at one slice), then the
    candidates, the id maps, the catalog and ``meta.json``, all into a temporary folder that is
    fsync'ed and swapped in (:func:`swap_in`) under the output's lock.

    Args:
        out: the output folder, checked already (:func:`check_output_dir`).
        parts: ``train``, then ``validation`` (if any), then ``test``.
        negatives: ``{"test": (n, c), "validation": (n, c)}`` candidates (either may be absent).
        user_raw, item_raw: the raw id of every dense index.
        catalog: titles, or ``None``.
        options, split_meta, data_meta, sources: recorded in ``meta.json``.

    Returns:
        ``out``.
    """
    with writing_prepared(out):  # the lock; leftovers of a killed run removed
        tmp = temporary_folder(out)
        try:
            hashes: list[str] = []
            files: list[str] = []
            counts: dict[str, Any] = {"users": len(user_raw), "items": len(item_raw),
                                      "validation": None}
            columns: list[str] = []
            for part in parts:
                counts[part.name], cols = _write_part(tmp, part, hashes)
                columns = columns or cols
                files.append(f"{part.name}.parquet")
            neg = negatives.get("test")
            counts["negatives"] = None if neg is None else int(np.shape(neg)[1])
            for name in ("test", "validation"):
                if name in negatives:
                    arr = np.asarray(negatives[name]).astype(np.int32, copy=False)
                    files.append(_write_npy(tmp, f"{name}_negatives", arr, hashes))
            for name, raw in (("users", user_raw), ("items", item_raw)):
                files.append(_write_npy(tmp, name, _ids_array(raw), hashes))
            if catalog is not None:
                write_catalog(tmp, catalog)
                files.append("catalog.parquet")
            meta = {
                "format": FORMAT, "version": FORMAT_VERSION,
                "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
                "counts": counts,
                "columns": {"rating": "rating" in columns, "timestamp": "timestamp" in columns},
                "options": jsonable(options), "split": jsonable(split_meta),
                "data": jsonable(data_meta), "sources": source_info(list(sources)),
                "fingerprint": combine_hashes(hashes), "files": files,
            }
            (tmp / META).write_text(json.dumps(meta, indent=2, default=json_default) + "\n")
            for name in [*files, META]:
                fsync(tmp / name)
            fsync(tmp)
            swap_in(tmp, out)
        except OSError as exc:
            raise NcfError(f"{out}: could not write the prepared data: "
                           f"{exc.strerror or exc}") from None
        finally:
            shutil.rmtree(tmp, ignore_errors=True)  # gone already after a successful swap
    return out


def _write_npy(folder: Path, name: str, arr: np.ndarray, hashes: list[str]) -> str:
    np.save(folder / f"{name}.npy", arr, allow_pickle=False)
    h = ArrayHash(name, arr.dtype)
    h.update(arr)
    hashes.append(h.line())
    return f"{name}.npy"


def save_prepared(
    out_dir: str | Path,
    split: Split,
    catalog: Catalog | None = None,
    options: dict[str, Any] | None = None,
    sources: list[str | Path] | None = None,
) -> Path:
    """Save ``split`` (and ``catalog``) as a prepared folder, atomically (through
    :func:`write_prepared`, as the streamed path of :mod:`ncf.ingest` does).

    Args:
        out_dir: the folder to create, or a previous prepared folder to replace.
        split: the split to save; its parts must share ``train``'s id maps.
        catalog: a :class:`ncf.datasets.Catalog` (``years <= 0`` stored as unknown).
        options: how the data were prepared (recorded in ``meta.json``).
        sources: the raw files read (path, size and mtime recorded); defaults to
            ``split.train.meta["sources"]``.

    Returns:
        The absolute path of the prepared folder.

    Raises:
        NcfError: unwritable or invalid ``out_dir``, inconsistent split, a failed write
            (then nothing is left behind and any previous folder is intact).
    """
    out = check_output_dir(out_dir)
    _check_split(split)
    tr = split.train
    if sources is None:
        sources = list(tr.meta.get("sources", []))
    parts = [interactions_part(name, x) for name in _PARTS
             if (x := getattr(split, name)) is not None]
    negatives = {name: neg for name in ("test", "validation")
                 if (neg := getattr(split, f"{name}_negatives")) is not None}
    return write_prepared(out, parts, negatives, tr.user_raw, tr.item_raw, catalog,
                          dict(options or {}), dict(split.meta),
                          {k: v for k, v in tr.meta.items() if k != "sources"}, sources)


def swap_in(tmp: Path, out: Path) -> None:
    """Rename ``tmp`` to ``out``; a previous ``out`` is replaced only if it still is an empty
    folder or a prepared folder of its own files (checked right before), restored on failure.
    """
    replace_folder(tmp, out, _replaceable, "prepared folder")


# ---------------------------------------------------------------------------- loading
def _read_meta(folder: Path) -> dict[str, Any]:
    if not folder.is_dir():
        raise DataError("not a folder", path=folder)
    path = folder / META
    if not path.is_file():
        raise DataError("not a prepared folder (no meta.json)", path=folder)
    try:
        meta = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataError(f"unreadable: {exc}", path=path) from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise DataError(f"not an {FORMAT} meta file", path=path)
    version = meta.get("version")
    if version != FORMAT_VERSION:
        raise DataError(
            f"format version {version!r}, this version of ncf reads version {FORMAT_VERSION}",
            path=path,
        )
    for key, kind in (("counts", dict), ("files", list), ("fingerprint", str)):
        if key not in meta:
            raise DataError(f"missing key {key!r}", path=path)
        if not isinstance(meta[key], kind):
            raise DataError(f"{key!r} is not a {kind.__name__} (the file was edited?)", path=path)
    if not all(isinstance(name, str) and name and "/" not in name and name not in (".", "..")
               for name in meta["files"]):
        raise DataError("'files' must list file names of the folder", path=path)
    for key in ("data", "split", "options"):
        if not isinstance(meta.get(key, {}), dict):
            raise DataError(f"{key!r} is not a dict (the file was edited?)", path=path)
    sources = meta.get("sources", [])
    if not isinstance(sources, list) or not all(isinstance(s, dict) and "path" in s
                                                for s in sources):
        raise DataError("'sources' must list objects with a 'path' (the file was edited?)",
                        path=path)
    for name in meta["files"]:
        if not (folder / name).is_file():
            raise DataError("missing file of the prepared folder", path=folder / name)
    return meta


def _load_npy(path: Path) -> np.ndarray:
    try:
        return np.load(path, allow_pickle=False)
    except MemoryError:
        raise
    except Exception as exc:  # numpy's parser of a damaged file raises
        # OSError, ValueError, EOFError, SyntaxError, tokenize.TokenError, zip errors...
        raise DataError(f"unreadable .npy file: {exc}", path=path) from None


def _raw_ids(path: Path) -> np.ndarray:
    """``users.npy`` / ``items.npy``: the raw id of every dense index, sorted and distinct
    (lookups by raw id search them)."""
    raw = _load_npy(path)
    if raw.ndim != 1 or raw.dtype.kind not in "iuU":
        raise DataError(f"expected one row of integer or text ids, got shape {raw.shape} of "
                        f"{raw.dtype}", path=path)
    if len(raw) > 1 and not bool(np.all(raw[1:] > raw[:-1])):
        raise DataError("ids are not sorted and distinct (the file was edited?)", path=path)
    return raw


def _candidates(path: Path, n_items: int) -> np.ndarray:
    """``*_negatives.npy``: one row of item indices per held-out row, each in range."""
    neg = _load_npy(path)
    if neg.ndim != 2 or neg.dtype.kind not in "iu":
        raise DataError(f"expected a table of item indices, got shape {neg.shape} of "
                        f"{neg.dtype}", path=path)
    if neg.size and (int(neg.min()) < 0 or int(neg.max()) >= n_items):
        bad = int(neg.min()) if int(neg.min()) < 0 else int(neg.max())
        raise DataError(f"candidate item index {bad} outside 0..{n_items - 1} (the file was "
                        "edited?)", path=path)
    return neg.astype(np.int32, copy=False)


def _load_table(path: Path) -> pa.Table:
    try:
        return pq.read_table(path)
    except (OSError, pa.ArrowException) as exc:
        raise DataError(f"unreadable Parquet file: {exc}", path=path) from None


def _interactions(path: Path, user_raw: np.ndarray, item_raw: np.ndarray,
                  meta: dict[str, Any]) -> Interactions:
    table = _load_table(path)
    names = set(table.column_names)
    if not {"user", "item"} <= names:
        raise DataError("expected columns user and item", path=path)

    def col(name: str, dtype: Any) -> np.ndarray | None:
        if name not in names:
            return None
        column = table.column(name)
        if column.null_count:
            raise DataError(f"column {name} has missing values", path=path)
        kind = column.type
        if not (pa.types.is_integer(kind) or (name == "rating" and pa.types.is_floating(kind))):
            raise DataError(f"column {name} holds {kind}, not numbers", path=path)
        values = column.to_numpy()
        if values.size and np.dtype(dtype).kind == "i" and values.dtype.kind in "iu" and (
                int(values.min()) < np.iinfo(dtype).min or int(values.max()) > np.iinfo(dtype).max):
            raise DataError(f"column {name} holds values beyond {np.dtype(dtype)}", path=path)
        return values.astype(dtype, copy=False)

    try:
        return Interactions(
            user_ids=col("user", np.int32), item_ids=col("item", np.int32),  # type: ignore
            ratings=col("rating", np.float32), timestamps=col("timestamp", np.int64),
            n_users=len(user_raw), n_items=len(item_raw), user_raw=user_raw,
            item_raw=item_raw, meta=meta,
        )
    except NcfError as exc:
        raise DataError(str(exc), path=path) from None


def _catalog(path: Path) -> Catalog:
    table = _load_table(path)
    try:
        item, title, year = (table.column(name) for name in ("item", "title", "year"))
    except KeyError as exc:
        raise DataError(f"not a catalog table: no column {exc}", path=path) from None
    if not (pa.types.is_integer(item.type) and pa.types.is_integer(year.type)
            and pa.types.is_string(title.type)) or item.null_count or title.null_count:
        raise DataError(f"not a catalog table: columns item {item.type}, title {title.type}, "
                        f"year {year.type}", path=path)
    item_raw = item.to_numpy()
    if len(item_raw) > 1 and not bool(np.all(item_raw[1:] > item_raw[:-1])):
        raise DataError("not a catalog table: item ids not sorted (the file was edited?)",
                        path=path)
    return Catalog(item_raw=item_raw, titles=np.array(title.to_pylist(), dtype=str),
                   years=year.fill_null(-1).to_numpy().astype(np.int32))


def load_prepared(path: str | Path, verify: bool = True) -> Prepared:
    """Load a prepared folder written by :func:`save_prepared`.

    Args:
        path: the folder.
        verify: recompute the sha256 fingerprint and compare it with ``meta.json``.

    Returns:
        A :class:`Prepared` (split with its candidates, catalog or ``None``, meta).

    Raises:
        DataError: not a prepared folder, another format version, a missing or corrupt
            file, or contents that do not match ``meta.json``.
    """
    folder = Path(path)
    meta = _read_meta(folder)
    files = set(meta["files"])
    user_raw = _raw_ids(folder / "users.npy")
    item_raw = _raw_ids(folder / "items.npy")
    data_meta = {**meta.get("data", {}), "sources": [s["path"] for s in meta.get("sources", [])]}
    parts = {
        p: _interactions(folder / f"{p}.parquet", user_raw, item_raw, data_meta)
        if f"{p}.parquet" in files else None
        for p in _PARTS
    }
    if parts["train"] is None or parts["test"] is None:
        raise DataError("meta.json lists no train.parquet or test.parquet", path=folder / META)
    negatives = {
        p: _candidates(folder / f"{p}_negatives.npy", len(item_raw))
        if f"{p}_negatives.npy" in files else None
        for p in ("test", "validation")
    }
    try:
        split = Split(
            train=parts["train"], test=parts["test"], validation=parts["validation"],
            test_negatives=negatives["test"], validation_negatives=negatives["validation"],
            meta=dict(meta.get("split", {})),
        )
        _check_split(split)
    except NcfError as exc:
        raise DataError(str(exc), path=folder) from None
    counts = meta["counts"]
    found = {"users": len(user_raw), "items": len(item_raw),
             **{p: None if parts[p] is None else len(parts[p]) for p in _PARTS}}  # type: ignore
    for key, value in found.items():
        if counts.get(key) != value:
            raise DataError(f"{key}: meta.json says {counts.get(key)}, files hold {value}",
                            path=folder)
    if verify and fingerprint(_arrays(split)) != meta["fingerprint"]:
        raise DataError("fingerprint mismatch: the files were changed after they were written",
                        path=folder)
    catalog = _catalog(folder / "catalog.parquet") if "catalog.parquet" in files else None
    return Prepared(split=split, catalog=catalog, meta=meta, path=folder.absolute())
