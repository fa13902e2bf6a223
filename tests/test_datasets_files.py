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
from ncf.datasets.paper import read_paper_negatives
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


def test_ratings_csv_with_a_table_header_is_a_table(tmp_path: Path) -> None:
    # MovieLens-1M without timestamps is shared as ratings.csv with the header user,item,rating
    folder = tmp_path / "ml-1m-notime"
    folder.mkdir()
    (folder / "ratings.csv").write_text("user,item,rating\n1,10,5\n1,20,3\n2,10,4\n")
    assert detect_format(folder) == "table" and detect_format(folder / "ratings.csv") == "table"
    for path in (folder, folder / "ratings.csv"):
        d = load(path)
        assert d.format == "table" and d.sources == [str(folder / "ratings.csv")]
        assert d.interactions.user_raw.tolist() == [1, 2]
        assert d.interactions.item_raw.tolist() == [10, 20]
        assert sorted(d.interactions.ratings.tolist()) == [3.0, 4.0, 5.0]
    # MovieLens's own header still reads as MovieLens, and a header naming no user column
    # is left to the MovieLens reader, which says what it expected
    (folder / "ratings.csv").write_text("userId,movieId,rating,timestamp\n1,2,3,4\n")
    assert detect_format(folder) == "ml-csv"
    (folder / "ratings.csv").write_text("a,b\n1,2\n")
    with pytest.raises(DataError, match="expected the header userId,movieId"):
        load(folder)


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
    folder = shared_data / "ncf"
    with pytest.raises(DataError, match="missing: NCF paper data need it beside") as e:
        read_paper_split(folder / "ml-1m.test.rating")
    assert e.value.path == str(folder / "ml-1m.train.rating") and "=" not in str(e.value)
    users, items, negatives = read_paper_negatives(folder / "ml-1m.test.negative")
    assert users.tolist() == list(range(6_040)) and negatives.shape == (6_040, 99)
    assert negatives.min() == 0 and max(negatives.max(), items.max()) == 3_705
    # the authors' own file lists the test item among the negatives of 156 users (line 13,
    # user 12, item 844 first): accepted, as their evaluation counts that item once
    assert int((negatives == items[:, None]).any(axis=1).sum()) == 156
    assert 844 in negatives[12] and items[12] == 844
    split = read_paper_split(folder / "ml-1m.test.rating", require_train=False)
    assert len(split.test) == 6_040 and split.test_negatives is not None


def test_paper_test_files_only(tmp_path: Path) -> None:
    (tmp_path / "t.test.rating").write_text("0\t3\t5\t1\n1\t0\t4\t2\n")
    (tmp_path / "t.test.negative").write_text("(0,3)\t1\t2\n(1,0)\t2\t4\n")
    split = read_paper_split(tmp_path / "t.test.rating", require_train=False)
    assert len(split.train) == 0 and split.test.n_items == 5
    with pytest.raises(DataError, match="t.train.rating: missing: NCF paper data need it") as e:
        load(tmp_path / "t.test.rating")
    assert "require_train" not in str(e.value)  # a Python argument the CLI user cannot pass
    ds = load(tmp_path / "t.test.rating", require_train=False)
    assert len(ds.interactions) == 2 and ds.split is not None
    assert load(tmp_path / "t.test.rating", "ncf-paper", require_train=False).format == "ncf-paper"


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


TRAIN = "0\t0\t5\t1\n0\t1\t4\t2\n1\t0\t5\t1\n1\t2\t3\t2\n2\t1\t4\t1\n"
TEST = "0\t3\t5\t9\n1\t4\t4\t9\n2\t5\t3\t9\n"
NEGATIVE = "(0,3)\t4\t5\t6\n(1,4)\t1\t5\t6\n(2,5)\t0\t2\t6\n"


def write_three(folder: Path, files: dict[str, str]) -> Path:
    """``x.train.rating`` / ``.test.rating`` / ``.test.negative``, the valid toy unless given."""
    texts = {"train.rating": TRAIN, "test.rating": TEST, "test.negative": NEGATIVE, **files}
    for suffix, text in texts.items():
        (folder / f"x.{suffix}").write_text(text)
    return folder / "x"


def test_paper_dense_id_rule(tmp_path: Path) -> None:
    split = read_paper_split(write_three(tmp_path, {}))
    assert (len(split.train), len(split.test), split.train.n_items) == (5, 3, 7)
    # 7 distinct item ids (0..5 and the gap's end): largest id + 1 may be 2 * 7 + 1000
    files = {"test.negative": NEGATIVE.replace("\t6\n", "\t1013\n")}
    assert read_paper_split(write_three(tmp_path, files)).train.n_items == 1_014
    files = {"test.negative": NEGATIVE.replace("\t6\n", "\t1014\n")}  # one more: refused
    with pytest.raises(DataError, match="item id 1014 but only 7 distinct item ids") as e:
        read_paper_split(write_three(tmp_path, files))
    assert e.value.line == 1 and e.value.path == str(tmp_path / "x.test.negative")


@pytest.mark.parametrize(
    ("suffix", "text", "line", "reason"),
    [
        # 1a: ids outside 0..2**31-2, in each file (an int32 would wrap them)
        (
            "train.rating",
            TRAIN.replace("2\t1\t4", "2\t3000000000\t4"),
            5,
            "item id 3000000000 out of range",
        ),
        ("test.rating", TEST.replace("1\t4\t4", "-1\t4\t4"), 2, "user id -1 out of range"),
        (
            "test.negative",
            NEGATIVE.replace("\t6\n(1", "\t3000000000\n(1"),
            1,
            "negative item 3000000000 out of range",
        ),
        ("test.negative", NEGATIVE.replace("(2,5)", "(2,2147483647)"), 3, "item id 2147483647 out"),
        # 1b: ids far beyond the number of distinct ids (would allocate gigabytes)
        (
            "test.negative",
            NEGATIVE.replace("\t5\t6\n(2", "\t5\t2000000000\n(2"),
            2,
            "item id 2000000000 but only 8 distinct item ids: this format numbers ids 0..n-1",
        ),
        ("train.rating", TRAIN.replace("2\t1\t4", "5000\t1\t4"), 5, "user id 5000 but only 4"),
        # 1c: the split itself
        (
            "test.negative",
            NEGATIVE.replace("(2,5)\t0", "(2,5)\t1"),
            3,
            "negative item 1 of user 2 is one of the user's items in x.train.rating",
        ),
        (
            "test.negative",
            NEGATIVE.replace("(0,3)\t4\t5", "(0,3)\t6\t5"),
            1,
            "negative item 6 of user 0 is repeated on the line",
        ),
        (
            "test.negative",
            NEGATIVE.replace("(0,3)\t4\t5", "(0,3)\t4,5"),
            1,
            "negative item '4,5' is not an integer",
        ),
        (
            "test.rating",
            TEST.replace("2\t5\t3", "3\t5\t3"),
            3,
            "test user 3 has no row in x.train.rating",
        ),
        (
            "test.rating",
            TEST.replace("2\t5\t3", "1\t5\t3"),
            3,
            "a second test row for user 1 \\(also line 2\\)",
        ),
        (
            "test.rating",
            TEST.replace("1\t4\t4", "1\t2\t4"),
            2,
            "test item 2 of user 1 is also in x.train.rating",
        ),
        (
            "train.rating",
            TRAIN + "\n0\t1\t3\t5\n",
            7,
            "user 0 item 1 appears twice \\(also line 2\\)",
        ),
        # 1e: ids Python's int() takes but the fast parser does not
        (
            "train.rating",
            TRAIN.replace("2\t1\t4", "2\t18446744073709551616\t4"),
            5,
            "item id 18446744073709551616 out of range",
        ),
        ("test.rating", TEST.replace("1\t4\t4", "1\t4_0\t4"), 2, "item id '4_0' is not written"),
        ("test.negative", NEGATIVE.replace("(2,5)\t0", "(2,5)\t+0"), 3, "negative item '\\+0'"),
    ],
)
def test_paper_bad_files(tmp_path: Path, suffix: str, text: str, line: int, reason: str) -> None:
    files = {suffix: text}
    if suffix == "test.rating":  # negatives lines that match the test rows
        heads = ["({},{})".format(*row.split("\t")[:2]) for row in text.splitlines()]
        tails = [row[row.index("\t") :] for row in NEGATIVE.splitlines()]
        files["test.negative"] = "".join(h + t + "\n" for h, t in zip(heads, tails))
    prefix = write_three(tmp_path, files)
    with pytest.raises(DataError, match=reason) as e:
        read_paper_split(prefix)
    assert e.value.path == f"{prefix}.{suffix}" and e.value.line == line
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("suffix", ["train.rating", "test.rating"])
def test_paper_empty_file(tmp_path: Path, suffix: str) -> None:
    prefix = write_three(tmp_path, {suffix: ""})
    with pytest.raises(DataError, match="empty file") as e:
        read_paper_split(prefix)
    assert str(e.value) == f"{prefix}.{suffix}: empty file"


@pytest.mark.parametrize(
    ("name", "text", "message"),
    [
        ("u.data", "", "empty file"),
        ("u.data", "1\t2\t3\t4\n   \n1\t3\t3\t4\n", "line 2: expected 4 fields, got 1"),
        ("ratings.dat", "", "empty file"),
        ("ratings.csv", "userId,movieId,rating,timestamp", "no data rows"),
        ("u.data", "1\t2\t3\t4\n1\t+2\t3\t4\n", "line 2: item '\\+2' is not written as plain"),
        ("u.data", "1\t2\t3\t4\n1\t1_2\t3\t4\n", "line 2: item '1_2' is not written"),
        ("u.data", "1\t2\t3\t4\n99999999999999999999\t2\t3\t4\n", "line 2: user 9+ out of range"),
        ("ratings.dat", "1::2::3::4\n1::2::3::99999999999999999999\n", "line 2: timestamp 9+ out"),
        ("ratings.dat", "1::2::3::4\n1::2::1_0::5\n", "line 2: rating '1_0' is not a number"),
    ],
)
def test_movielens_empty_and_unparsed(tmp_path: Path, name: str, text: str, message: str) -> None:
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(DataError, match=message) as e:
        read_movielens(path)
    assert str(e.value).startswith(str(path)) and "could not be parsed" not in str(e.value)


def test_movielens_csv_with_bom(tmp_path: Path) -> None:
    path = tmp_path / "ratings.csv"
    path.write_bytes(b"\xef\xbb\xbfuserId,movieId,rating,timestamp\n1,307,3.5,1256677221\n")
    assert read_movielens(path).ratings.tolist() == [3.5]
    # and a bad line of a file with a BOM is found by the scan (line 1 is not misread)
    path = tmp_path / "u.data"
    path.write_bytes(b"\xef\xbb\xbf1\t2\t3\t4\n1\t+2\t3\t4\n")
    with pytest.raises(DataError, match=r"u.data, line 2: item '\+2'"):
        read_movielens(path)


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


@pytest.mark.parametrize(
    ("text", "line", "reason"),
    [
        ("user,user,item\n1,2,3\n", 1, "the header names column 'user' 2 times"),
        ('user,item,rating\n1,2,3\n"1,2,3\n1,2,3\n', 3, "unclosed quote"),
        ('user,item,rating\n1,2,3\n1,"2,3\n', 3, "unclosed quote"),
        ("user,item,rating\nu1,,4\nu2,i2,5\n", 2, "missing item"),
        ("user,item,rating\nu1,i1,4\n  ,i2,5\n", 3, "missing user"),
        ("user,item\n2.5,1\n1,2\n", 2, "user id 2.5 is not an integer$"),
        ("user,item\n1e30,1\n1,2\n", 2, "user id 1e\\+30 is not an integer in the 64-bit"),
    ],
)
def test_table_bad_lines(tmp_path: Path, text: str, line: int, reason: str) -> None:
    path = tmp_path / "t.csv"
    path.write_text(text)
    with pytest.raises(DataError, match=reason) as e:
        read_table(path, "user", "item")
    assert e.value.line == line and e.value.path == str(path) and "\n" not in str(e.value)


def test_table_no_rows_and_cli_words(tmp_path: Path) -> None:
    path = tmp_path / "t.csv"
    path.write_text("user,item")  # a header, no newline, no row
    with pytest.raises(DataError, match="no data rows"):
        read_table(path, "user", "item")
    path.write_text("who,what\nu1,i1\n")
    with pytest.raises(DataError, match="cannot tell the user column") as e:
        load(path)
    assert "=" not in str(e.value) and "name it one of user, userid" in str(e.value)
    (tmp_path / "x.bin").write_bytes(b"\x00\x01\x02")
    with pytest.raises(DataError, match="give it with --format: netflix") as e:
        load(tmp_path / "x.bin")
    assert "fmt" not in str(e.value)


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


@pytest.mark.parametrize(
    ("name", "data", "reason"),
    [
        ("movie_titles.csv", b"1,2001,A\n99999999999999999999,2001,B\n", "item id 9+ out of range"),
        ("movie_titles.csv", b"1,2001,A\n2,99999999999999999999,B\n", "year 9+ out of range"),
        ("movie_titles.csv", b"1,2001,A\n\xb2,2001,B\n", "item id '\xb2' is not"),
        ("movie_titles.csv", b"1,2001,A\n2,\xb2,B\n", "year '\xb2' is neither"),
        ("u.item", b"1|Toy Story (1995)|x\n\xb2|X|\n", "item id '\xb2' is not"),
        ("u.item", b"1|Toy Story (1995)|x\n99999999999999999999|X|\n", "item id 9+ out of"),
    ],
)
def test_titles_bad_numbers(tmp_path: Path, name: str, data: bytes, reason: str) -> None:
    path = tmp_path / name
    path.write_bytes(data)
    with pytest.raises(DataError, match=reason) as e:
        read_titles(path)
    assert e.value.line == 2


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


def test_pipes_devices_and_forced_formats(tmp_path: Path, shared_data: Path) -> None:
    import os

    fifo = tmp_path / "ratings.csv"
    os.mkfifo(fifo)  # would be opened twice (detection, then reading): refused at once
    with pytest.raises(DataError, match="not a regular file or folder"):
        load(fifo)
    with pytest.raises(DataError, match="holds ml-100k data, not ml-dat"):
        load(shared_data / "ml-100k", "ml-dat")
    table = load(shared_data / "ml-100k" / "u.data", "table", user_col=0, item_col=1,
                 header=False)
    assert len(table.interactions) == 100_000  # any delimited file may be read as a table


def test_time_zones_all_or_none(tmp_path: Path) -> None:
    zoned = tmp_path / "zoned.csv"
    zoned.write_text("user,item,date\n1,1,2005-01-02T10:00:00+05:00\n2,2,2005-01-02T05:00:00Z\n")
    x = load(zoned).interactions
    assert x.timestamps is not None and len(set(x.timestamps.tolist())) == 1  # both 05:00 UTC
    mixed = tmp_path / "mixed.csv"
    mixed.write_text("user,item,date\n1,1,2005-01-02T10:00:00\n2,2,2005-01-02T10:00:00+05:00\n")
    with pytest.raises(DataError, match=r"line 3: timestamp .* has a time zone and others have "
                                        r"none") as e:
        load(mixed)
    assert "\n" not in str(e.value)


def _parquet_cases(folder: Path) -> dict[str, tuple[Path, str]]:
    """Broken Parquet files, each with the reason its error must give."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    def table(name: str, user: object, item: object = (1, 2)) -> Path:
        pq.write_table(pa.table({"user": user, "item": pa.array(item)}), folder / name)
        return folder / name

    good = table("good.parquet", pa.array([1, 2]))
    data = good.read_bytes()
    (folder / "junk.parquet").write_bytes(b"PAR1 junk, not Parquet PAR1")
    (folder / "cut.parquet").write_bytes(data[: len(data) // 2])
    return {
        "junk": (folder / "junk.parquet", "not a readable Parquet file"),
        "truncated": (folder / "cut.parquet", "not a readable Parquet file"),
        "list": (table("list.parquet", pa.array([[1], [2]])),
                 "the user column holds list<element: int64>: ids must be integers or text"),
        "struct": (table("struct.parquet", pa.array([{"a": 1}, {"a": 2}])),
                   "the user column holds struct<a: int64>: ids must be integers or text"),
        "binary": (table("bin.parquet", pa.array([b"\xff\xfe", b"ok"], pa.binary())),
                   "the user column holds bytes that are not UTF-8 text"),
        "item map": (table("map.parquet", pa.array([1, 2]), pa.array(
            [[("a", 1)], [("b", 2)]], pa.map_(pa.string(), pa.int64()))),
            "the item column holds map<string, int64"),
    }


@pytest.mark.parametrize("case", ["junk", "truncated", "list", "struct", "binary", "item map"])
def test_broken_parquet_is_one_line_naming_the_file(tmp_path: Path, case: str,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    from ncf.cli import main

    path, reason = _parquet_cases(tmp_path)[case]
    with pytest.raises(DataError, match=reason) as e:
        load(path)
    assert e.value.path == str(path) and "\n" not in str(e.value)
    for argv in (["data", "inspect", str(path)],
                 ["data", "prepare", str(path), "--out", str(tmp_path / "out")]):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"ncf: error: {path}: ") and reason in err and err.count("\n") == 1
    assert not (tmp_path / "out").exists()
    assert load(tmp_path / "good.parquet").interactions.user_raw.tolist() == [1, 2]
