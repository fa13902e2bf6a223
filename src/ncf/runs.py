"""The run directory: everything one training run leaves behind, written atomically.

Layout::

    RUN/config.json            resolved configuration (and data provenance)
    RUN/history/<model>.csv    per-epoch loss, validation HR/NDCG, learning rate, seconds
    RUN/metrics.json           test metrics of every model (sampled and full ranking)
    RUN/models/<model>.npz     weights + JSON metadata + id maps, no pickle
    RUN/catalog.npz            item titles, when the data had them
    RUN/plots/<model>.png, RUN/plots/comparison.png

Each file is written to a temporary name and renamed into place, so a killed run leaves
complete files or none, never half-written weights.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, is_dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from ncf.errors import DataError, NcfError


def existing_ancestor(path: str | Path) -> Path:
    """``path`` itself if it exists, else its nearest existing ancestor (where it would be
    created)."""
    found = Path(path).absolute()
    while not found.exists():
        found = found.parent
    return found


def plan_run_dir(out: str | Path | None, base: str | Path = "runs") -> Path:
    """The run directory to use (a fresh timestamped one by default), checked but not created.

    A symbolic link is followed to the folder it names (see :func:`ncf.outputs.resolve_output`).
    """
    from ncf.outputs import resolve_output

    if out is None:
        stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
        out = Path(base) / f"run-{stamp}"
    path = resolve_output(out) if Path(out).is_symlink() else Path(out)
    if path.exists() and (not path.is_dir() or any(path.iterdir())):
        raise NcfError(f"{path}: the run directory exists and is not empty; choose another --out")
    parent = existing_ancestor(path.absolute().parent)
    if not os.access(parent, os.W_OK):
        raise NcfError(f"{path}: cannot create the run directory ({parent} is not writable)")
    return path


def new_run_dir(out: str | Path | None, base: str | Path = "runs") -> Path:
    """Create (or reuse, when empty) the run directory; a fresh timestamped one by default."""
    path = plan_run_dir(out, base)
    try:
        for sub in ("history", "models", "plots"):
            (path / sub).mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise NcfError(f"{path}: cannot create the run directory ({exc.strerror})") from None
    return path


_MODELS = ("gmf", "mlp", "neumf")

#: What a run directory holds: ``folder -> file names`` (``""`` is the directory itself).
RUN_FILES = {
    "": ("config.json", "metrics.json", "catalog.npz", "seen.npz"),
    "history": tuple(f"{m}.csv" for m in _MODELS),
    "models": tuple(f"{m}.npz" for m in _MODELS),
    "plots": (*(f"{m}.png" for m in _MODELS), "comparison.png"),
    "checkpoints": (*(f"{m}.npz" for m in _MODELS), *(f"{m}-refit.npz" for m in _MODELS)),
}


def _temporary(name: str) -> bool:
    """A temporary file of :func:`atomic_write` or of a model being saved."""
    return name.endswith((".tmp", ".tmp.png"))


def discard_run_dir(path: str | Path, created: bool) -> None:
    """Undo a run that failed before anything worth keeping was written.

    Removes the files of a run (:data:`RUN_FILES`, temporary files) and its sub-folders when
    they are empty then, and the directory itself only when this process ``created`` it and
    it is empty then: a folder the user made, or anything the user put in it, stays.
    """
    from ncf.outputs import checkpoint

    root = Path(path)
    checkpoint("remove", root)
    for sub, names in RUN_FILES.items():
        folder = root / sub
        try:
            entries = list(folder.iterdir())
        except OSError:
            continue
        for entry in entries:
            if entry.is_file() and (entry.name in names or _temporary(entry.name)):
                entry.unlink(missing_ok=True)
        if sub:
            try:
                folder.rmdir()
            except OSError:
                pass  # not empty: something else is in it
    if created:
        try:
            root.rmdir()
        except OSError:
            pass


def remove_checkpoints(run_dir: str | Path) -> None:
    """Delete a run's ``checkpoints/`` folder: its own files, then the folder when empty."""
    folder = Path(run_dir) / "checkpoints"
    if not folder.is_dir():
        return
    for entry in folder.iterdir():
        if entry.is_file() and (entry.name in RUN_FILES["checkpoints"]
                                or _temporary(entry.name)):
            entry.unlink(missing_ok=True)
    try:
        folder.rmdir()
    except OSError:
        pass  # something else is in it


@contextlib.contextmanager
def atomic_file(path: str | Path) -> Iterator[BinaryIO]:
    """A binary file that becomes ``path`` only once the block ends without error: written
    to a temporary sibling, flushed to disk, then renamed over ``path`` (``os.replace``).

    Raises:
        OSError: naming ``path`` (a full disk: "No space left on device", "File too large").
    """
    path = Path(path)
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as exc:
        raise OSError(exc.errno, exc.strerror, str(path)) from None
    try:
        umask = os.umask(0)
        os.umask(umask)
        os.fchmod(fd, 0o666 & ~umask)  # mkstemp's 0600 would make reports private
        os.close(fd)
        with open(tmp, "wb") as fh:  # by its name: the file object knows where it writes
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        Path(tmp).unlink(missing_ok=True)
        raise OSError(exc.errno, exc.strerror, str(path)) from None
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write(path: str | Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` via a temporary sibling and ``os.replace`` (see
    :func:`atomic_file`)."""
    with atomic_file(path) as fh:
        fh.write(data)
    return Path(path)


def atomic_savez(path: str | Path, arrays: Mapping[str, np.ndarray]) -> Path:
    """``np.savez`` of ``arrays`` into ``path``, atomically (see :func:`atomic_file`)."""
    with atomic_file(path) as fh:
        np.savez(fh, **arrays)  # type: ignore[arg-type]  # numpy's stubs: names to arrays
    return Path(path)


def _jsonable(obj: Any) -> Any:
    if is_dataclass(obj) and not isinstance(obj, type):
        return _jsonable(asdict(obj))
    if isinstance(obj, Mapping):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, Path):
        return str(obj)
    return obj


def write_json(path: str | Path, obj: Any) -> Path:
    """Atomic, indented JSON (dataclasses and numpy scalars converted)."""
    return atomic_write(path, (json.dumps(_jsonable(obj), indent=2) + "\n").encode())


def read_json(path: str | Path) -> Any:
    """Read a JSON file, with a one-line error naming it when missing or broken."""
    path = Path(path)
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise NcfError(f"{path}: missing (is this a run directory of `ncf train`?)") from None
    except json.JSONDecodeError as exc:
        raise DataError(f"invalid JSON ({exc.msg})", path=path, line=exc.lineno) from None
    except UnicodeDecodeError:
        raise DataError("not UTF-8 text (the file was edited?)", path=path) from None
    except OSError as exc:
        raise DataError(f"unreadable ({exc.strerror or exc})", path=path) from None


def write_history(path: str | Path, records: Sequence[Mapping[str, Any]]) -> Path:
    """Per-epoch records as CSV."""
    buf = io.StringIO()
    if records:
        writer = csv.DictWriter(buf, fieldnames=list(records[0]))
        writer.writeheader()
        writer.writerows(records)
    return atomic_write(path, buf.getvalue().encode())


def save_catalog(path: str | Path, item_raw: np.ndarray, titles: np.ndarray,
                 years: np.ndarray) -> Path:
    """Titles of the items (unicode arrays, loadable without pickle)."""
    buf = io.BytesIO()
    np.savez(buf, item_raw=np.asarray(item_raw), titles=np.asarray(titles, dtype=str),
             years=np.asarray(years))
    return atomic_write(path, buf.getvalue())


def read_npz(path: Path, what: str, hint: str = "") -> dict[str, np.ndarray]:
    """Every array of an ``.npz`` file, without pickle.

    Raises:
        DataError: ``unreadable WHAT (ExceptionName)HINT`` naming the file, whatever numpy's
            parser raised on a damaged file (OSError, ValueError, EOFError, SyntaxError,
            tokenize.TokenError, zip errors...).
    """
    try:
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    except MemoryError:
        raise
    except Exception as exc:
        raise DataError(f"unreadable {what} ({type(exc).__name__}){hint}", path=path) from None


def load_catalog(path: str | Path) -> dict[str, np.ndarray] | None:
    """The catalog of a run, or ``None`` when the data had no titles.

    Raises:
        DataError: naming the file, when it is unreadable or its arrays do not fit together
            (one title and year per item id, ids sorted).
    """
    path = Path(path)
    if not path.exists():
        return None
    catalog = read_npz(path, "catalog")
    if not {"item_raw", "titles", "years"} <= catalog.keys():
        raise DataError("not a catalog of ncf (item_raw, titles, years)", path=path)
    ids, titles, years = catalog["item_raw"], catalog["titles"], catalog["years"]
    if not (ids.ndim == titles.ndim == years.ndim == 1 and len(ids) == len(titles) == len(years)):
        raise DataError(f"not a catalog of ncf: {len(ids)} ids, {len(titles)} titles and "
                        f"{len(years)} years (the file was edited?)", path=path)
    if titles.dtype.kind != "U" or years.dtype.kind not in "iu" or ids.dtype.kind not in "iuU":
        raise DataError("not a catalog of ncf: wrong array types (the file was edited?)",
                        path=path)
    if len(ids) > 1 and not bool(np.all(ids[1:] > ids[:-1])):
        raise DataError("not a catalog of ncf: item ids not sorted (the file was edited?)",
                        path=path)
    return catalog
