"""A fuzzer for every reader: random and mutated bytes never escape as anything but a
``DataError`` naming the file read.

Each target starts from a small valid file of its format (Netflix, MovieLens, the NCF
paper's, CSV and Parquet tables, titles, prepared folders, saved models and catalogs, cell
results) and feeds the reader random bytes or that file mutated: bytes flipped, inserted,
deleted, lines repeated or swapped, the file cut short. The reader must either return or
raise :class:`ncf.errors.DataError` whose ``path`` is the file (or, where files are read
together, one of them).

``NCF_FUZZ_EXAMPLES`` sets the examples per target (default 50; CI runs a fixed
sequence); ``benchmarks/fuzz_readers.py`` runs the long campaign.
"""

from __future__ import annotations

import io
import json
import os
import tarfile
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ncf.errors import DataError

EXAMPLES = int(os.environ.get("NCF_FUZZ_EXAMPLES", "50"))
COUNTS: Counter[str] = Counter()

NETFLIX = b"1:\n6,3,2005-09-06\n7,4,2005-01-02\n2:\n6,5,2004-03-01\n8,1,2005-12-31\n"
U_DATA = b"1\t10\t3\t881250949\n1\t11\t4\t881250950\n2\t10\t5\t881250951\n3\t12\t1\t88125\n"
ML_DAT = b"1::10::3::978300760\n1::11::4::978300761\n2::10::5::978300762\n"
ML_CSV = b"userId,movieId,rating,timestamp\n1,10,3.5,1112486027\n2,11,4.0,1112486028\n"
TABLE = b"user,item,rating,timestamp\nu1,i1,4,2020-01-01\nu1,i2,5,2020-01-02\nu2,i1,3,2020-01-03\n"
TRAIN = b"0\t0\t5\t978300760\n0\t1\t3\t978300761\n1\t0\t4\t978300762\n1\t2\t2\t978300763\n"
TEST = b"0\t2\t4\t978300770\n1\t1\t5\t978300771\n"
NEGATIVE = b"(0,2)\t3\t4\n(1,1)\t3\t4\n"
TITLES = {
    "movie_titles.csv": b"1,2003,Dinosaur Planet\n2,NULL,Isle of Man, TT 2004\n3,1997,Ch\xe2teau\n",
    "u.item": b"1|Toy Story (1995)|01-Jan-1995||http://x|0|0\n2|GoldenEye (1995)|1995||x|0\n",
    "movies.dat": b"1::Toy Story (1995)::Animation|Children's\n2::Jumanji (1995)::Adventure\n",
    "movies.csv": b'movieId,title,genres\n1,Toy Story (1995),Comedy\n2,"Heat, The (1995)",Action\n',
}
#: Bytes a mutation inserts: separators, line ends, signs, long digit runs, invalid UTF-8.
PIECES = [b"\n", b"\r\n", b",", b":", b"::", b"\t", b"|", b"-", b"+", b".", b" ", b'"', b"(",
          b")", b"\x00", b"\xff", b"\xef\xbb\xbf", b"0", b"9" * 12, b"-1", b"1e308", b"nan",
          b"NULL", b"2005-02-30", b"PAR1", b"{", b"}", b"[", b"]"]


@st.composite
def mutated(draw: st.DrawFn, seed: bytes) -> bytes:
    """``seed`` changed by a few random edits, or random bytes."""
    if draw(st.integers(0, 9)) == 0:
        return draw(st.binary(max_size=300))
    data = bytearray(seed)
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(["flip", "insert", "delete", "cut", "repeat", "swap"]))
        at = draw(st.integers(0, len(data)))
        if op == "flip" and at < len(data):
            data[at] = draw(st.integers(0, 255))
        elif op == "insert":
            piece = draw(st.one_of(st.sampled_from(PIECES), st.binary(min_size=1, max_size=8)))
            data[at:at] = piece
        elif op == "delete":
            del data[at : at + draw(st.integers(1, 16))]
        elif op == "cut":
            del data[at:]
        elif op in ("repeat", "swap"):
            lines = bytes(data).split(b"\n")
            i, j = (draw(st.integers(0, len(lines) - 1)) for _ in range(2))
            if op == "repeat":
                lines.insert(j, lines[i])
            else:
                lines[i], lines[j] = lines[j], lines[i]
            data = bytearray(b"\n".join(lines))
    return bytes(data)


@dataclass(frozen=True)
class Target:
    """A reader and the files it reads: ``files`` written (valid) first, then ``fuzz`` (one
    of them, drawn) replaced by mutated bytes before ``read(folder)`` runs."""

    name: str
    files: Callable[[Path], dict[str, bytes]]
    read: Callable[[Path], Any]
    fuzz: tuple[str, ...] = ()  # default: every file


def _paper(folder: Path) -> Any:
    from ncf.datasets import read_paper_split

    return read_paper_split(folder / "toy.test.rating")


_paper.reader = "read_paper_split"  # type: ignore[attr-defined]


def _tar(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(f"training_set/{name}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def _parquet(_: Path) -> dict[str, bytes]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    buf = io.BytesIO()
    pq.write_table(pa.table({"user": [1, 2, 2], "item": ["a", "b", "a"],
                             "rating": [4.0, 5.0, 3.0], "timestamp": [10, 20, 30]}), buf)
    return {"events.parquet": buf.getvalue()}


def _prepared(_: Path) -> dict[str, bytes]:
    from ncf.datasets import Catalog
    from ncf.interactions import Interactions
    from ncf.split import leave_one_out, with_negatives
    from ncf.storage import save_prepared

    users = np.repeat(np.arange(6), 5)
    items = (np.arange(30) * 7) % 9
    x = Interactions.from_raw(users + 100, items + 10, np.ones(30), np.arange(30))
    split = with_negatives(leave_one_out(x, validation=True, seed=0), n=3, seed=0)
    catalog = Catalog(np.arange(10, 19), np.array([f"t{i}" for i in range(9)]),
                      np.full(9, 1999, dtype=np.int32))
    folder = _scratch() / "prepared"
    save_prepared(folder, split, catalog=catalog)
    return {p.name: p.read_bytes() for p in folder.iterdir()}


def _model(_: Path) -> dict[str, bytes]:
    from ncf.interactions import Interactions
    from ncf.models import NeuMF
    from ncf.recommend import NCFRecommender
    from ncf.runs import save_catalog

    x = Interactions.from_raw(np.array([1, 1, 2, 3]), np.array([5, 6, 5, 7]))
    folder = _scratch() / "model"
    folder.mkdir(exist_ok=True)
    NCFRecommender.from_trained(NeuMF(3, 3, factors=4, n_layers=1), x).save(folder / "m.npz")
    save_catalog(folder / "catalog.npz", np.array([5, 6, 7]), np.array(["a", "b", "c"]),
                 np.array([1990, -1, 2001]))
    return {p.name: p.read_bytes() for p in folder.iterdir()}


def _load_model(folder: Path) -> Any:
    from ncf.recommend import NCFRecommender
    from ncf.runs import load_catalog

    rec = NCFRecommender.load(folder / "m.npz")
    rec.recommend(np.arange(rec.n_users), k=2)  # what a loaded model is used for
    return load_catalog(folder / "catalog.npz")


CELL_CONFIG = {"kind": "baseline", "model": "itempop", "version": 1, "data": "f" * 16}


def _cell(_: Path) -> dict[str, bytes]:
    metrics = {"hr": 0.5, "ndcg": 0.25}
    stored = {"key": "0" * 16, "model": "itempop", "config": CELL_CONFIG, "seconds": 1.5,
              "result": {p: {"sampled": metrics, "full": metrics}
                         for p in ("validation", "test")} | {"chosen": {"factors": 8}}}
    return {"cell.json": json.dumps(stored).encode()}


def _load_cell(folder: Path) -> Any:
    from ncf.experiments.cells import Cell, CellStore

    store = CellStore(folder)
    cell = Cell("itempop", {}, 0, None, CELL_CONFIG)  # type: ignore[arg-type]
    store.path = lambda c: folder / "cell.json"  # type: ignore[method-assign]
    return store.load(cell)


def _read(module: str, name: str, file: str, *args: Any) -> Callable[[Path], Any]:
    def read(folder: Path) -> Any:
        import importlib

        return getattr(importlib.import_module(module), name)(folder / file, *args)

    read.reader = name  # type: ignore[attr-defined]
    return read


TARGETS = [
    Target("netflix", lambda f: {"combined_data_1.txt": NETFLIX},
           _read("ncf.datasets", "read_netflix", "combined_data_1.txt")),
    Target("netflix-mv", lambda f: {"mv_0000001.txt": NETFLIX[:36]},
           _read("ncf.datasets", "read_netflix", "mv_0000001.txt")),
    Target("netflix-tar", lambda f: {"training_set.tar": _tar({"mv_0000001.txt": NETFLIX[:36],
                                                               "mv_0000002.txt": NETFLIX[36:]})},
           _read("ncf.datasets", "read_netflix", "training_set.tar")),
    Target("netflix-probe", lambda f: {"probe.txt": b"1:\n6\n7\n2:\n8\n"},
           _read("ncf.datasets", "read_netflix_probe", "probe.txt")),
    Target("ml-100k", lambda f: {"u.data": U_DATA}, _read("ncf.datasets", "read_movielens",
                                                          "u.data")),
    Target("ml-dat", lambda f: {"ratings.dat": ML_DAT},
           _read("ncf.datasets", "read_movielens", "ratings.dat")),
    Target("ml-csv", lambda f: {"ratings.csv": ML_CSV},
           _read("ncf.datasets", "read_movielens", "ratings.csv")),
    Target("ncf-paper", lambda f: {"toy.train.rating": TRAIN, "toy.test.rating": TEST,
                                   "toy.test.negative": NEGATIVE}, _paper),
    Target("table-csv", lambda f: {"events.csv": TABLE},
           _read("ncf.datasets", "read_table", "events.csv", "user", "item", "rating",
                 "timestamp")),
    Target("table-parquet", _parquet,
           _read("ncf.datasets", "read_table", "events.parquet", "user", "item", "rating",
                 "timestamp")),
    Target("detect-and-load", lambda f: {"ratings.txt": NETFLIX + ML_DAT},
           _read("ncf.datasets", "load", "ratings.txt")),
    *(Target(f"titles-{name}", lambda f, n=name, d=data: {n: d},  # type: ignore[misc]
             _read("ncf.datasets", "read_titles", name)) for name, data in TITLES.items()),
    Target("prepared-folder", _prepared, _read("ncf.storage", "load_prepared", "")),
    Target("prepared-unverified", _prepared,
           _read("ncf.storage", "load_prepared", "", False)),
    Target("model-and-catalog", _model, _load_model),
    Target("run-config", lambda f: {"config.json": b'{"data": {"path": "x", "seed": 0}}\n'},
           _read("ncf.runs", "read_json", "config.json")),
    Target("cell-result", _cell, _load_cell),
]

_SCRATCH: list[Path] = []


def _scratch() -> Path:
    return _SCRATCH[0]


@pytest.fixture(scope="module", autouse=True)
def scratch(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """One folder for the whole module (hypothesis runs many examples per test call); the
    counts of examples run are written where ``NCF_FUZZ_REPORT`` says, at the end."""
    _SCRATCH[:] = [tmp_path_factory.mktemp("fuzz")]
    yield _SCRATCH[0]
    report = os.environ.get("NCF_FUZZ_REPORT")
    if report:
        Path(report).write_text(json.dumps(dict(COUNTS), indent=2) + "\n")


_VALID: dict[str, dict[str, bytes]] = {}


@pytest.mark.parametrize("target", TARGETS, ids=[t.name for t in TARGETS])
@settings(max_examples=EXAMPLES, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(data=st.data())
def test_readers_raise_only_data_errors_naming_the_file(target: Target, data: st.DataObject
                                                        ) -> None:
    folder = _scratch() / target.name
    if target.name not in _VALID:
        _VALID[target.name] = target.files(folder)
    valid = _VALID[target.name]
    folder.mkdir(exist_ok=True)
    for old in folder.iterdir():
        old.unlink()
    for name, content in valid.items():
        (folder / name).write_bytes(content)
    name = data.draw(st.sampled_from(sorted(target.fuzz or valid)), label="file")
    (folder / name).write_bytes(data.draw(mutated(valid[name]), label="bytes"))
    COUNTS[target.name] += 1
    try:
        target.read(folder)
    except DataError as exc:
        assert exc.path is not None, f"{target.name}: {exc} names no file"
        named = Path(exc.path).resolve()
        assert named.is_relative_to(folder.resolve()), f"{target.name}: {exc} names {named}"
        assert "\n" not in str(exc), f"{target.name}: {exc!r} is not one line"


def test_every_reader_of_the_package_is_fuzzed() -> None:
    import ncf.datasets as datasets

    readers = {n for n in datasets.__all__ if n.startswith("read_")} | {"load"}
    fuzzed = {getattr(t.read, "reader", t.name) for t in TARGETS}
    assert readers <= fuzzed, readers - fuzzed
