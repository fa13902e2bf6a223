"""The Netflix Prize prepared in bounded memory: as in memory, probe split, bad input."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import numpy as np
import pytest

from ncf import storage
from ncf.cli import main
from ncf.datasets import read_netflix
from ncf.errors import DataError, NcfError
from ncf.ingest import prepare_netflix, prepare_split
from ncf.storage import load_prepared, save_prepared
from ncf.synth import write_synth_netflix


@pytest.fixture(scope="module")
def synth(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("netflix")
    write_synth_netflix(out, 30_000, seed=3)
    return out


def _pairs(x) -> np.ndarray:
    """Rows as sorted (customer, movie, rating, day) records."""
    rec = np.stack([x.user_raw[x.user_ids], x.item_raw[x.item_ids], x.ratings.astype(np.int64),
                    x.timestamps // 86_400], axis=1)
    return rec[np.lexsort(rec.T[::-1])]


def _joined(split):
    parts = [p for p in (split.train, split.validation, split.test) if p is not None]
    return np.concatenate([_pairs(p) for p in parts])


@pytest.mark.parametrize("options", [{}, {"ratings": "10k", "tie_break": "item_desc"},
                                     {"threshold": 4, "validation": False, "negatives": 7}])
def test_streamed_equals_in_memory(synth: Path, tmp_path: Path, options: dict) -> None:
    out, info = prepare_netflix(synth, tmp_path / "a", **options, threads=2)
    got = load_prepared(out)
    split, catalog, opts = prepare_split(synth, **options)
    ref = load_prepared(save_prepared(tmp_path / "b", split, catalog, opts))
    assert got.meta["fingerprint"] == ref.meta["fingerprint"]
    assert got.meta["counts"] == ref.meta["counts"]
    assert got.catalog is not None and len(got.catalog.item_raw) == len(catalog.item_raw)
    assert set(info["seconds"]) == {"read", "check", "split", "candidates", "write"}
    if not options:  # every rating of the text is in the prepared form, once
        x = read_netflix(synth)
        joined = _joined(got.split)
        joined = joined[np.lexsort(joined.T[::-1])]
        np.testing.assert_array_equal(joined, _pairs(x))


def test_probe_holds_out_exactly_the_probe(synth: Path, tmp_path: Path, capsys) -> None:
    x = read_netflix(synth)
    rng = np.random.default_rng(0)
    rows = np.sort(rng.choice(len(x), 500, replace=False))
    movie, customer = x.item_raw[x.item_ids[rows]], x.user_raw[x.user_ids[rows]]
    order = np.argsort(movie, kind="stable")
    lines, last = [], None
    for m, c in zip(movie[order], customer[order], strict=True):
        if m != last:
            lines.append(f"{m}:")
            last = m
        lines.append(str(c))
    probe = tmp_path / "probe.txt"
    probe.write_text("\n".join(lines) + "\n")
    out = tmp_path / "p"
    assert main(["data", "prepare", str(synth), "--out", str(out), "--probe", str(probe)]) == 0
    assert "test 500" in capsys.readouterr().out
    s = load_prepared(out).split
    held = {(int(c), int(m)) for c, m in zip(customer, movie, strict=True)}
    test = {(int(s.test.user_raw[u]), int(s.test.item_raw[i]))
            for u, i in zip(s.test.user_ids, s.test.item_ids, strict=True)}
    assert test == held and len(s.test) == 500
    assert np.all(np.diff(s.test.user_ids) >= 0)
    # validation: each user's latest rating outside the probe
    latest = np.full(s.train.n_users, -1, dtype=np.int64)
    np.maximum.at(latest, s.train.user_ids, s.train.timestamps)
    assert np.all(s.validation.timestamps >= latest[s.validation.user_ids])
    total = len(s.train) + len(s.validation) + len(s.test)
    assert total == len(x) and s.meta["method"] == "split_by_mask"


def test_probe_pair_not_rated(synth: Path, tmp_path: Path) -> None:
    probe = tmp_path / "probe.txt"
    probe.write_text("1:\n99999999\n")
    with pytest.raises(DataError, match=r"probe\.txt: customer 99999999 has no rating"):
        prepare_netflix(synth, tmp_path / "p", probe=probe)
    assert sorted(os.listdir(tmp_path)) == ["probe.txt"]
    probe.write_text("1:\n")  # a movie line and no customer: no test split at all
    with pytest.raises(DataError, match=r"probe\.txt: lists no ratings"):
        prepare_netflix(synth, tmp_path / "p", probe=probe)
    assert sorted(os.listdir(tmp_path)) == ["probe.txt"]


def _write(folder: Path, files: dict[int, str]) -> Path:
    folder.mkdir()
    for k, text in files.items():
        (folder / f"combined_data_{k}.txt").write_text(text)
    return folder


def test_file_cut_mid_line(tmp_path: Path) -> None:
    data = _write(tmp_path / "d", {1: "1:\n6,3,2005-01-02\n7,4,2005-0"})
    with pytest.raises(DataError, match=r"combined_data_1\.txt, line 3: "):
        prepare_netflix(data, tmp_path / "p")
    assert sorted(os.listdir(tmp_path)) == ["d"]


def test_missing_file_of_the_set(tmp_path: Path) -> None:
    row = "1:\n6,3,2005-01-02\n"
    data = _write(tmp_path / "d", {1: row, 2: row.replace("1:", "2:"), 4: row.replace("1:", "4:")})
    with pytest.raises(DataError, match=r"combined_data_3\.txt missing from the set"):
        prepare_netflix(data, tmp_path / "p")
    assert not (tmp_path / "p").exists()


def test_same_pair_in_two_files(tmp_path: Path) -> None:
    data = _write(tmp_path / "d", {1: "1:\n6,3,2005-01-02\n7,3,2005-01-02\n",
                                   2: "2:\n6,3,2005-01-02\n1:\n7,5,2005-03-04\n"})
    where = (r"combined_data_2\.txt, line 4: customer 7 rated movie 1 twice: the Prize data "
             r"hold each pair once \(also combined_data_1\.txt, line 3\)")
    with pytest.raises(DataError, match=where):
        prepare_netflix(data, tmp_path / "p")
    assert sorted(os.listdir(tmp_path)) == ["d"]
    # the in-memory path (taken with a k-core) refuses it too, instead of keeping one
    with pytest.raises(DataError, match=where):
        prepare_split(data, min_user_ratings=1)
    # within one file, movie 11's header does not pass for movie 1's
    one = _write(tmp_path / "one", {1: "11:\n7,3,2005-01-02\n1:\n6,3,2005-01-02\n"
                                       "7,4,2005-01-02\n6,5,2005-01-03\n"})
    with pytest.raises(DataError, match=r"combined_data_1\.txt, line 6: customer 6 rated movie "
                                        r"1 twice.*\(also line 4\)"):
        prepare_netflix(one, tmp_path / "p")


def test_disk_full_leaves_no_folder(synth: Path, tmp_path: Path, monkeypatch) -> None:
    out, _ = prepare_netflix(synth, tmp_path / "p", negatives=5)
    before = load_prepared(out).meta["fingerprint"]

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(storage, "write_catalog", full)  # fails after the parts are written
    with pytest.raises(NcfError, match="No space left on device") as err:
        prepare_netflix(synth, out, negatives=7)
    assert "\n" not in str(err.value)
    assert sorted(os.listdir(tmp_path)) == ["p"]
    assert load_prepared(out).meta["fingerprint"] == before  # the previous folder is intact
