"""MovieLens, NCF paper files, tables, titles, format detection and ``load``."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from ncf.datasets import (
    detect_format,
    load,
    read_movielens,
    read_paper_split,
    read_table,
    read_titles,
)
from ncf.errors import DataError


# MovieLens ----------------------------------------------------------------------------
def test_ml100k_u_data(shared_data: Path) -> None:
    x = read_movielens(shared_data / "ml-100k" / "u.data")
    assert (len(x), x.n_users, x.n_items) == (100_000, 943, 1_682)
    assert x.user_raw.tolist() == list(range(1, 944)) and x.item_raw[-1] == 1682
    assert set(np.unique(x.ratings).tolist()) == {1.0, 2.0, 3.0, 4.0, 5.0}
    assert x.timestamps.min() > 8e8 and x.timestamps.max() < 9e8  # 1997-1998
    assert x.meta["format"] == "ml-100k"


def test_ml_dat_and_csv(tmp_path: Path) -> None:
    (tmp_path / "ratings.dat").write_text("1::1193::5::978300760\n2::661::3.5::978302109\n")
    x = read_movielens(tmp_path / "ratings.dat")
    assert x.user_raw.tolist() == [1, 2] and x.item_raw.tolist() == [661, 1193]
    assert x.ratings.tolist() == [5.0, 3.5] and x.timestamps.tolist() == [978300760, 978302109]
    csv = tmp_path / "ratings.csv"
    csv.write_text("userId,movieId,rating,timestamp\n1,307,3.5,1256677221\n1,481,0.5,1256677456\n")
    assert read_movielens(csv).ratings.tolist() == [3.5, 0.5]
    assert detect_format(csv) == "ml-csv" and detect_format(tmp_path / "ratings.dat") == "ml-dat"


@pytest.mark.parametrize(
    ("name", "text", "line", "reason"),
    [
        ("u.data", "1\t2\t3\t4\n1\tx\t3\t4\n", 2, "item 'x' is not an integer"),
        ("u.data", "1\t2\t3\t4\n\n1\t2\t3\n", 3, "expected 4 fields, got 3"),
        ("u.data", "1\t2\t3\t4\n1\t3\t7\t4\n", 2, "rating 7 outside"),
        ("ratings.dat", "1::2::3::4\n1::2::3\n", 2, "expected 4 fields"),
        ("ratings.csv", "userId,movieId,rating,timestamp\n1,2,3,4\n1,2,abc,4\n", 3, "rating 'abc'"),
        ("ratings.csv", "user,item\n1,2\n", 1, "expected the header"),
    ],
)
def test_movielens_bad_lines(tmp_path: Path, name: str, text: str, line: int, reason: str) -> None:
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(DataError, match=reason) as e:
        read_movielens(path)
    assert str(e.value).startswith(f"{path}, line {line}: ")


# NCF paper files ------------------------------------------------------------------------
def test_paper_ml100k(shared_data: Path) -> None:
    split = read_paper_split(shared_data / "ncf" / "ml-100k.test.negative")
    train, test, neg = split.train, split.test, split.test_negatives
    assert (len(train), len(test), train.n_users, train.n_items) == (99_057, 943, 943, 1_682)
    assert neg is not None and neg.shape == (943, 99) and neg.dtype == np.int32
    assert split.validation is None
    assert test.user_ids.tolist() == list(range(943))  # one per user, sorted
    assert np.array_equal(train.user_raw, np.arange(943))  # ids verbatim
    assert (test.user_ids[0], test.item_ids[0]) == (0, 101)  # first test line: 0 101
    # no candidate negative is a positive (train or test) of its user
    positives = np.union1d(train.keys(), test.keys())
    cand = np.repeat(test.user_ids.astype(np.int64), 99) * train.n_items + neg.ravel()
    assert not np.isin(cand, positives).any()
    # the prefix and any sibling give the same split
    again = read_paper_split(shared_data / "ncf" / "ml-100k")
    assert np.array_equal(again.test_negatives, neg)


def test_paper_ml1m_without_train(shared_data: Path) -> None:
    with pytest.raises(DataError, match="require_train=False"):
        read_paper_split(shared_data / "ncf" / "ml-1m.test.rating")
    split = read_paper_split(shared_data / "ncf" / "ml-1m.test.rating", require_train=False)
    assert len(split.train) == 0 and len(split.test) == 6_040
    assert split.test.n_users == 6_040 and split.test.n_items == 3_706
    assert split.test_negatives.shape == (6_040, 99)
    assert split.test_negatives.min() == 0 and split.test_negatives.max() <= 3_705


def write_paper(folder: Path, negative: str) -> Path:
    (folder / "toy.train.rating").write_text("0\t1\t5\t10\n1\t2\t4\t11\n")
    (folder / "toy.test.rating").write_text("1\t0\t3\t12\n0\t3\t5\t13\n")
    (folder / "toy.test.negative").write_text(negative)
    return folder / "toy.train.rating"


def test_paper_toy_sorted_and_checked(tmp_path: Path) -> None:
    split = read_paper_split(write_paper(tmp_path, "(1,0)\t5\t6\n(0,3)\t7\t2\n"))
    assert split.test.user_ids.tolist() == [0, 1] and split.test.item_ids.tolist() == [3, 0]
    assert split.test_negatives.tolist() == [[7, 2], [5, 6]]  # rows follow the test rows
    assert split.train.n_items == 8  # largest id (negative 7) + 1
    ds = load(tmp_path / "toy.test.rating")
    assert ds.format == "ncf-paper" and len(ds.interactions) == 4 and ds.split is not None
    assert ds.interactions.meta["format"] == "ncf-paper"


@pytest.mark.parametrize(
    ("negative", "line", "reason"),
    [
        ("(1,0)\t5\t6\n(0,4)\t7\t2\n", 2, r"\(0,4\) does not match line 2"),
        ("(1,0)\t5\t6\n0,3\t7\t2\n", 2, "expected '\\(user,item\\)'"),
        ("(1,0)\t5\t6\n(0,3)\t7\tx\n", 2, "negative item 'x'"),
        ("(1,0)\t5\t6\n(0,3)\t7\n", 2, "expected"),
    ],
)
def test_paper_bad_negatives(tmp_path: Path, negative: str, line: int, reason: str) -> None:
    write_paper(tmp_path, negative)
    with pytest.raises(DataError, match=reason) as e:
        read_paper_split(tmp_path / "toy")
    assert e.value.line == line and e.value.path == str(tmp_path / "toy.test.negative")


# tables ---------------------------------------------------------------------------------
def test_netflix_10k_through_read_table(shared_data: Path) -> None:
    path = shared_data / "netflix" / "netflix-user-ratings-10k.csv"
    x = read_table(path, "UserID", "MovieID", rating_col="Rating", timestamp_col="Date")
    assert (len(x), x.n_users, x.n_items) == (10_000, 9_687, 3_451)
    # first data line: 8764,1287529,4,2005-10-04
    assert x.user_raw[x.user_ids[0]] == 1287529 and x.item_raw[x.item_ids[0]] == 8764
    assert x.ratings[0] == 4.0 and x.timestamps[0] == 1_128_384_000  # 2005-10-04 00:00 UTC
    same = read_table(path, 1, 0, 2, 3)
    assert np.array_equal(same.user_ids, x.user_ids)
    assert detect_format(path) == "table"
    assert np.array_equal(load(path).interactions.timestamps, x.timestamps)  # columns guessed


def test_table_string_ids_iso_datetimes_and_parquet(tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = tmp_path / "events.tsv"
    path.write_text("who\twhat\twhen\nbob\tz\t2020-01-01T00:00:10\nann\ty\t2020-01-02T00:00:00\n")
    x = read_table(path, "who", "what", timestamp_col="when")
    assert x.user_raw.tolist() == ["ann", "bob"] and x.user_ids.tolist() == [1, 0]
    assert x.timestamps.tolist() == [1_577_836_810, 1_577_923_200] and x.ratings is None
    pq.write_table(pa.table({"u": [5, 3], "i": [1, 1], "r": [2.5, 4.0]}), tmp_path / "x.parquet")
    y = read_table(tmp_path / "x.parquet", "u", "i", "r")
    assert y.user_raw.tolist() == [3, 5] and y.ratings.tolist() == [2.5, 4.0]
    assert detect_format(tmp_path / "x.parquet") == "table"


def test_table_errors(tmp_path: Path) -> None:
    path = tmp_path / "t.csv"
    path.write_text("u,i,t\n1,2,2005-01-01\n1,3,yesterday\n")
    with pytest.raises(DataError, match=r"line 3: timestamp 'yesterday'"):
        read_table(path, "u", "i", timestamp_col="t")
    with pytest.raises(DataError, match="no column 'user'"):
        read_table(path, "user", "i")
    path.write_text("u,i\n1,2\n1,2,3\n")
    with pytest.raises(DataError, match=r"t.csv, line 3: expected 2 fields, got 3"):
        read_table(path, "u", "i")
    path.write_text("u,i,r\n1,2,4\n1,,5\n")
    with pytest.raises(DataError, match=r"line 3: missing item"):
        read_table(path, "u", "i", "r")


# titles ---------------------------------------------------------------------------------
def test_netflix_titles(shared_data: Path) -> None:
    c = read_titles(shared_data / "netflix" / "movie_titles.csv")
    assert len(c) == 17_770 and c.item_raw.tolist() == list(range(1, 17_771))
    assert c.title_of(1) == "Dinosaur Planet" and c.years[0] == 2003
    assert c.title_of(6483) == "Smokey Joe's Caf\u00e9"  # the ISO-8859-1 byte 0xE9
    assert (c.years == -1).sum() == 7 and c.years[c.item_raw == 4388][0] == -1
    assert c.title_of(4388) == "Ancient Civilizations: Rome and Pompeii"
    assert sum("," in t for t in c.titles) == 336  # commas kept inside titles


def test_movielens_titles(shared_data: Path, tmp_path: Path) -> None:
    c = read_titles(shared_data / "ml-100k" / "u.item")
    assert len(c) == 1_682 and c.title_of(1) == "Toy Story (1995)" and c.years[0] == 1995
    (tmp_path / "movies.dat").write_bytes(b"1::Toy Story (1995)::Animation\n2::Caf\xe9 (2001)::X\n")
    assert read_titles(tmp_path / "movies.dat").title_of(2) == "Caf\u00e9 (2001)"
    (tmp_path / "movies.csv").write_text(
        'movieId,title,genres\n10,"American President, The (1995)",Comedy\n3,Heat,Action\n'
    )
    m = read_titles(tmp_path / "movies.csv")
    assert m.item_raw.tolist() == [3, 10] and m.years.tolist() == [-1, 1995]
    assert m.title_of(10) == "American President, The (1995)"


def test_titles_errors(tmp_path: Path) -> None:
    path = tmp_path / "movie_titles.csv"
    path.write_text("1,2001,A\n2,20x1,B\n")
    with pytest.raises(DataError, match=r"line 2: year '20x1'"):
        read_titles(path)
    path.write_text("1,2001,A\n1,2002,B\n")
    with pytest.raises(DataError, match=r"line 2: item id 1 appears twice"):
        read_titles(path)


# detection and load ----------------------------------------------------------------------
def test_detect_each_kind(shared_data: Path, tmp_path: Path) -> None:
    assert detect_format(shared_data / "ml-100k") == "ml-100k"
    assert detect_format(shared_data / "ml-100k" / "u.data") == "ml-100k"
    assert detect_format(shared_data / "ncf" / "ml-1m.test.negative") == "ncf-paper"
    assert detect_format(shared_data / "ncf" / "ml-100k") == "ncf-paper"  # a prefix
    (tmp_path / "a.txt").write_text("1::2::3::4\n")
    assert detect_format(tmp_path / "a.txt") == "ml-dat"
    (tmp_path / "b.txt").write_text("(0,1)\t2\t3\n")
    assert detect_format(tmp_path / "b.txt") == "ncf-paper"
    (tmp_path / "c.txt").write_text("userId,movieId,rating,timestamp\n1,2,3,4\n")
    assert detect_format(tmp_path / "c.txt") == "ml-csv"


def test_detect_and_load_errors(shared_data: Path, tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no such file or directory") as e:
        load(tmp_path / "missing.csv")
    assert e.value.path == str(tmp_path / "missing.csv")
    (tmp_path / "blob.bin").write_bytes(b"\x00\x01\x02garbage")
    with pytest.raises(DataError, match="cannot tell the data format"):
        detect_format(tmp_path / "blob.bin")
    (tmp_path / "empty.txt").write_bytes(b"")
    with pytest.raises(DataError, match="empty file"):
        detect_format(tmp_path / "empty.txt")
    with pytest.raises(DataError, match="no ratings file found"):
        detect_format(shared_data / "netflix")
    with pytest.raises(DataError, match="unknown format 'xml'"):
        load(shared_data / "ml-100k", fmt="xml")


def test_load_ml100k_with_catalog(shared_data: Path) -> None:
    ds = load(shared_data / "ml-100k")
    assert ds.format == "ml-100k" and ds.split is None and len(ds.interactions) == 100_000
    assert ds.catalog is not None and ds.catalog.title_of(ds.interactions.item_raw[0]) == (
        "Toy Story (1995)"
    )
    assert ds.sources == [str(shared_data / "ml-100k" / "u.data")]
    assert ds.interactions.meta == {"format": "ml-100k", "sources": ds.sources}
