"""The prepared form: exact round trips, atomic writes, clear errors."""

from __future__ import annotations

import errno
import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq
import pytest

from ncf import storage
from ncf.datasets import Catalog
from ncf.errors import DataError, NcfError
from ncf.interactions import Interactions
from ncf.split import Split
from ncf.storage import check_output_dir, is_prepared, load_prepared, save_prepared


def _split(seed: int = 0, with_extras: bool = True) -> Split:
    """Six users, their last interaction as test, the one before as validation."""
    rng = np.random.default_rng(seed)
    users = np.repeat(np.array([11, 3, 7, 40, 25, 9]), 6)
    items = np.tile(np.array([100, 205, 310, 415, 520, 999]), 6)
    ts = rng.integers(0, 10**9, users.size)
    x = Interactions.from_raw(users, items, rng.integers(1, 6, users.size) if with_extras
                              else None, ts if with_extras else None)
    order = np.lexsort((ts, x.user_ids))
    pos = np.arange(users.size) % 6
    test, val = order[pos == 5], order[pos == 4]
    train = order[pos < 4]
    negs = rng.integers(0, x.n_items, (6, 3)).astype(np.int32)
    return Split(
        train=x.subset(train), test=x.subset(test),
        validation=x.subset(val) if with_extras else None,
        test_negatives=negs if with_extras else None,
        validation_negatives=negs[::-1].copy() if with_extras else None,
        meta={"rule": "latest", "seed": np.int64(seed)},
    )


def _catalog() -> Catalog:
    return Catalog(item_raw=np.array([100, 205, 310]), titles=np.array(["Amélie", "A, B", "C"]),
                   years=np.array([2001, -1, 1999], dtype=np.int32))


def _assert_same(a: Interactions | None, b: Interactions | None) -> None:
    assert (a is None) == (b is None)
    if a is None or b is None:
        return
    for name in ("user_ids", "item_ids", "ratings", "timestamps", "user_raw", "item_raw"):
        left, right = getattr(a, name), getattr(b, name)
        assert (left is None) == (right is None), name
        if left is not None:
            np.testing.assert_array_equal(left, right, err_msg=name)
    assert (a.n_users, a.n_items) == (b.n_users, b.n_items)


def _siblings(path: Path) -> list[str]:
    return sorted(p.name for p in path.parent.iterdir())


def test_round_trip_is_exact(tmp_path: Path) -> None:
    split = _split()
    src = tmp_path / "ratings.csv"
    src.write_text("1,2,3\n")
    out = save_prepared(tmp_path / "prep", split, catalog=_catalog(), options={"k": 5},
                        sources=[src])
    assert out == (tmp_path / "prep").absolute() and is_prepared(out)
    got = load_prepared(out)
    for part in ("train", "validation", "test"):
        _assert_same(getattr(split, part), getattr(got.split, part))
    np.testing.assert_array_equal(got.split.test_negatives, split.test_negatives)
    np.testing.assert_array_equal(got.split.validation_negatives, split.validation_negatives)
    assert got.split.meta == {"rule": "latest", "seed": 0}
    assert got.meta["options"] == {"k": 5}
    assert got.meta["counts"] == {"users": 6, "items": 6, "train": 24, "validation": 6,
                                  "test": 6, "negatives": 3}
    assert got.meta["sources"] == [{"path": str(src.absolute()), "size": 6,
                                    "mtime": src.stat().st_mtime}]
    assert got.meta["fingerprint"].startswith("sha256:")
    np.testing.assert_array_equal(got.catalog.item_raw, [100, 205, 310])
    assert got.catalog.titles.tolist() == ["Amélie", "A, B", "C"]
    assert got.catalog.years.tolist() == [2001, -1, 1999]
    # no JSON id maps and no pickle: raw ids are plain .npy files
    assert np.load(out / "users.npy", allow_pickle=False).tolist() == [3, 7, 9, 11, 25, 40]
    assert "user_raw" not in (out / "meta.json").read_text()


def test_round_trip_minimal_and_string_ids(tmp_path: Path) -> None:
    x = Interactions.from_raw(np.array(["b", "a", "b"], dtype=object), np.array([5, 5, 6]))
    split = Split(train=x.subset(np.array([0, 1])), test=x.subset(np.array([2])))
    got = load_prepared(save_prepared(tmp_path / "p", split))
    _assert_same(split.train, got.split.train)
    _assert_same(split.test, got.split.test)
    assert got.split.validation is None and got.split.test_negatives is None
    assert got.catalog is None and got.meta["counts"]["negatives"] is None


def test_fingerprint_depends_on_data() -> None:
    def fp(split: Split) -> str:
        return storage.fingerprint(storage._arrays(split))

    assert fp(_split(0)) == fp(_split(0))
    assert fp(_split(0)) != fp(_split(1))


_REAL_WRITE = pq.ParquetWriter.write_table


def _failing_writer(monkeypatch: pytest.MonkeyPatch, exc: BaseException, after: int = 1) -> None:
    real = _REAL_WRITE
    calls = {"n": 0}

    def write(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] > after:
            raise exc
        return real(*args, **kwargs)

    monkeypatch.setattr(storage.pq.ParquetWriter, "write_table", write)  # every part's slices


def test_failed_write_leaves_nothing(tmp_path: Path, monkeypatch) -> None:
    _failing_writer(monkeypatch, OSError(errno.ENOSPC, "No space left on device"))
    with pytest.raises(NcfError, match="No space left on device"):
        save_prepared(tmp_path / "prep", _split())
    assert os.listdir(tmp_path) == []


def test_failed_write_keeps_previous_folder(tmp_path: Path, monkeypatch) -> None:
    old = _split(0)
    out = save_prepared(tmp_path / "prep", old)
    _failing_writer(monkeypatch, OSError(errno.ENOSPC, "No space left on device"))
    with pytest.raises(NcfError):
        save_prepared(out, _split(1))
    _failing_writer(monkeypatch, KeyboardInterrupt(), after=2)
    with pytest.raises(KeyboardInterrupt):
        save_prepared(out, _split(1))
    assert _siblings(out) == ["prep"]
    _assert_same(load_prepared(out).split.train, old.train)


def test_replaces_previous_prepared_folder(tmp_path: Path) -> None:
    out = save_prepared(tmp_path / "prep", _split(0))
    new = _split(1, with_extras=False)
    save_prepared(out, new)
    got = load_prepared(out)
    _assert_same(got.split.train, new.train)
    assert got.split.validation is None and not (out / "validation.parquet").exists()
    assert _siblings(out) == ["prep"]


def test_invalid_output_folders(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(NcfError, match="exists and is not a folder"):
        save_prepared(blocker, _split())
    with pytest.raises(NcfError, match="not a folder"):
        check_output_dir(blocker / "sub" / "out")
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "notes.txt").write_text("mine")
    with pytest.raises(NcfError, match="not a prepared folder"):
        save_prepared(busy, _split())
    assert os.listdir(busy) == ["notes.txt"]
    assert sorted(os.listdir(tmp_path)) == ["busy", "file"]
    empty = tmp_path / "empty"
    empty.mkdir()
    assert check_output_dir(empty) == empty  # an empty folder is fine
    assert check_output_dir(tmp_path / "new" / "deeper") == tmp_path / "new" / "deeper"
    assert not (tmp_path / "new").exists()


def test_only_a_folder_of_our_own_files_is_replaced(tmp_path: Path) -> None:
    # a meta.json of something else, beside a file of the user's: never replaced
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "meta.json").write_text('{"foo": 1}')
    (foreign / "thesis.tex").write_text("precious")
    with pytest.raises(NcfError, match="not a prepared folder"):
        save_prepared(foreign, _split())
    assert (foreign / "thesis.tex").read_text() == "precious"
    # our own prepared folder is replaced, but not once a file of the user's sits in it
    ours = tmp_path / "ours"
    save_prepared(ours, _split())
    save_prepared(ours, _split())
    (ours / "notes.txt").write_text("mine")
    with pytest.raises(NcfError, match="not a prepared folder"):
        save_prepared(ours, _split())
    assert (ours / "notes.txt").read_text() == "mine" and load_prepared(ours).split.train


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root ignores permissions")
def test_read_only_parent(tmp_path: Path) -> None:
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        with pytest.raises(NcfError, match="cannot write"):
            save_prepared(ro / "prep", _split())
        assert os.listdir(ro) == []
    finally:
        ro.chmod(0o755)


def test_unwritable_mount() -> None:
    if not Path("/proc/self").is_dir():
        pytest.skip("no /proc")
    with pytest.raises(NcfError, match="cannot write"):
        check_output_dir("/proc/ncf-prepared")


def test_inconsistent_split_is_refused(tmp_path: Path) -> None:
    s = _split()
    other = Interactions.from_raw(np.array([1, 2]), np.array([1, 2]))
    with pytest.raises(NcfError, match="share"):
        save_prepared(tmp_path / "p", Split(train=s.train, test=other))
    with pytest.raises(NcfError, match="shape"):
        save_prepared(tmp_path / "p", Split(train=s.train, test=s.test,
                                            test_negatives=np.zeros((2, 3), np.int32)))
    assert os.listdir(tmp_path) == []


@pytest.fixture()
def prepared(tmp_path: Path) -> Path:
    return save_prepared(tmp_path / "prep", _split(), catalog=_catalog())


def test_load_errors_name_the_file(prepared: Path, tmp_path: Path) -> None:
    with pytest.raises(DataError, match="not a folder"):
        load_prepared(tmp_path / "missing")
    with pytest.raises(DataError, match="no meta.json"):
        load_prepared(tmp_path)
    (prepared / "test_negatives.npy").unlink()
    with pytest.raises(DataError, match=r"test_negatives\.npy: missing file"):
        load_prepared(prepared)


def test_load_rejects_other_versions_and_bad_meta(prepared: Path) -> None:
    meta_path = prepared / "meta.json"
    meta = json.loads(meta_path.read_text())
    meta_path.write_text(json.dumps({**meta, "version": 99}))
    with pytest.raises(DataError, match="meta.json: format version 99"):
        load_prepared(prepared)
    meta_path.write_text("{not json")
    with pytest.raises(DataError, match="meta.json: unreadable"):
        load_prepared(prepared)
    for key, value, message in [("counts", [], "'counts' is not a dict"),
                                ("files", None, "'files' is not a list"),
                                ("files", ["../x"], "'files' must list file names"),
                                ("data", [1], "'data' is not a dict"),
                                ("sources", [{"size": 1}], "'sources' must list objects")]:
        meta_path.write_text(json.dumps({**meta, key: value}))
        with pytest.raises(DataError, match=f"meta.json: {message}"):
            load_prepared(prepared)


def test_load_detects_changed_or_corrupt_files(prepared: Path) -> None:
    table = pq.read_table(prepared / "train.parquet")
    items = table.column("item").to_numpy()[::-1].copy()
    pq.write_table(table.set_column(1, "item", [items]), prepared / "train.parquet")
    with pytest.raises(DataError, match="fingerprint mismatch"):
        load_prepared(prepared)
    assert load_prepared(prepared, verify=False).split.train.item_ids.tolist() == items.tolist()
    (prepared / "test.parquet").write_bytes(b"garbage")
    with pytest.raises(DataError, match=r"test\.parquet: unreadable Parquet"):
        load_prepared(prepared)


def _tamper(folder: Path, name: str, array: np.ndarray) -> None:
    """Replace one ``.npy`` of a prepared folder and recompute the fingerprint, as a careful
    editor would: only the range checks can tell then."""
    from dataclasses import replace

    np.save(folder / name, array, allow_pickle=False)
    meta = json.loads((folder / "meta.json").read_text())
    good = _split()
    field = name.removesuffix(".npy")
    arrays = storage._arrays(replace(good, **{field: array}) if field.endswith("negatives")
                             else good)
    if field in ("users", "items"):
        arrays = [(n, array if n == field else a) for n, a in arrays]
    meta["fingerprint"] = storage.fingerprint(arrays)
    (folder / "meta.json").write_text(json.dumps(meta))


@pytest.mark.parametrize(("name", "change", "message"), [
    ("test_negatives.npy", lambda a: np.where(a == a[0, 0], 6, a), r"candidate item index 6 "
     r"outside 0\.\.5"),
    ("validation_negatives.npy", lambda a: np.where(a == a[0, 0], -1, a),
     r"candidate item index -1 outside"),
    ("test_negatives.npy", lambda a: a.astype(np.float32), "expected a table of item indices"),
    ("users.npy", lambda a: a[::-1].copy(), "ids are not sorted and distinct"),
    ("items.npy", lambda a: a.reshape(2, 3), "expected one row of integer or text ids"),
])
def test_tampered_ids_are_refused_even_with_a_matching_fingerprint(
        prepared: Path, name: str, change: Any, message: str) -> None:
    _tamper(prepared, name, change(np.load(prepared / name)))
    with pytest.raises(DataError, match=f"{name}: {message}"):
        load_prepared(prepared)
    with pytest.raises(DataError, match=f"{name}: {message}"):
        load_prepared(prepared, verify=False)


def test_tampered_columns_are_refused(prepared: Path) -> None:
    import pyarrow as pa

    table = pq.read_table(prepared / "train.parquet")
    big = pa.array(np.full(table.num_rows, 2**40, dtype=np.int64))
    pq.write_table(table.set_column(0, "user", big), prepared / "train.parquet")
    with pytest.raises(DataError, match="train.parquet: column user holds values beyond int32"):
        load_prepared(prepared, verify=False)
    text = pa.array(["1"] * table.num_rows)
    pq.write_table(table.set_column(1, "item", text), prepared / "train.parquet")
    with pytest.raises(DataError, match="train.parquet: column item holds string, not numbers"):
        load_prepared(prepared, verify=False)
    catalog = pq.read_table(prepared / "catalog.parquet")
    pq.write_table(catalog.set_column(0, "item", pa.array([310, 205, 100])),
                   prepared / "catalog.parquet")
    with pytest.raises(DataError, match="catalog.parquet: not a catalog table: item ids not "
                                        "sorted"):
        storage._catalog(prepared / "catalog.parquet")


def test_the_train_command_names_a_tampered_file(prepared: Path, tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    from ncf.cli import main

    _tamper(prepared, "test_negatives.npy", np.full((6, 3), -1, dtype=np.int32))
    assert main(["train", "--data", str(prepared), "--out", str(tmp_path / "run"),
                 "--epochs", "1", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err == (f"ncf: error: {prepared / 'test_negatives.npy'}: candidate item index -1 "
                   "outside 0..5 (the file was edited?)\n")
    assert not (tmp_path / "run").exists()
