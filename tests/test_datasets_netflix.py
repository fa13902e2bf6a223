"""Netflix Prize readers: generated files read back exactly; bad lines named precisely."""

from __future__ import annotations

import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ncf.datasets import detect_format, iter_netflix_chunks, load, read_netflix, read_netflix_probe
from ncf.datasets._common import days_from_civil, valid_dates
from ncf.datasets.netflix import read_netflix_columns
from ncf.errors import DataError

EPOCH = np.datetime64("1970-01-01")


def make_ratings(seed: int, n_movies: int = 6, per_movie: int = 40) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    movies = np.sort(rng.choice(np.arange(1, 17771), n_movies, replace=False))
    n = n_movies * per_movie
    return {
        "movie": np.repeat(movies, per_movie),
        "customer": rng.integers(1, 2_649_430, n),
        "rating": rng.integers(1, 6, n),
        "day": rng.integers(10_500, 13_149, n),  # 1998-10 .. 2005-12
    }


def netflix_text(r: dict[str, np.ndarray], end: str = "\n") -> str:
    lines = []
    for k in range(len(r["movie"])):
        if k == 0 or r["movie"][k] != r["movie"][k - 1]:
            lines.append(f"{r['movie'][k]}:")
        date = EPOCH + np.timedelta64(int(r["day"][k]), "D")
        lines.append(f"{r['customer'][k]},{r['rating'][k]},{date}")
    return end.join(lines) + end


def assert_reads_back(x, r: dict[str, np.ndarray]) -> None:
    np.testing.assert_array_equal(x.user_raw[x.user_ids], r["customer"])
    np.testing.assert_array_equal(x.item_raw[x.item_ids], r["movie"])
    np.testing.assert_array_equal(x.ratings, r["rating"].astype(np.float32))
    np.testing.assert_array_equal(x.timestamps, r["day"] * 86_400)
    assert np.all(np.diff(x.user_raw) > 0) and np.all(np.diff(x.item_raw) > 0)
    assert x.user_ids.dtype == np.int32 and x.ratings.dtype == np.float32


def concat(*rs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {k: np.concatenate([r[k] for r in rs]) for k in rs[0]}


@pytest.mark.parametrize("end", ["\n", "\r\n"])
@pytest.mark.parametrize("chunk_bytes", [64, 300, 1 << 20])
def test_combined_data_reads_back_exactly(tmp_path: Path, end: str, chunk_bytes: int) -> None:
    r = make_ratings(0)
    path = tmp_path / "combined_data_1.txt"
    path.write_bytes(netflix_text(r, end).encode())
    x = read_netflix(path, chunk_bytes=chunk_bytes)
    assert_reads_back(x, r)
    assert x.meta["format"] == "netflix" and x.meta["sources"] == [str(path)]


def test_hand_written_file_and_chunks(tmp_path: Path) -> None:
    path = tmp_path / "combined_data_1.txt"
    path.write_bytes(b"1:\n1488844,3,2005-09-06\n822109,5,2005-05-13\n17770:\n7,1,1999-12-31")
    chunks = list(iter_netflix_chunks(path))
    assert [c.movie.tolist() for c in chunks] == [[1, 1, 17770]]
    c = chunks[0]
    assert c.customer.tolist() == [1488844, 822109, 7] and c.rating.dtype == np.int8
    assert c.rating.tolist() == [3, 5, 1]
    assert c.day.tolist() == [13032, 12916, 10956]  # 2005-09-06, 2005-05-13, 1999-12-31
    path.write_bytes(b"5:\n1,2,1969-12-31\n2,2,1900-03-01\n")
    assert read_netflix(path).timestamps.tolist() == [-86_400, -2_203_891_200]


def test_several_files_numeric_order(tmp_path: Path) -> None:
    parts = [make_ratings(s) for s in (1, 2, 3)]
    for i, r in enumerate(parts):  # combined_data_10 must come after _2
        (tmp_path / f"combined_data_{[1, 2, 10][i]}.txt").write_text(netflix_text(r))
    x = read_netflix(tmp_path, chunk_bytes=256)
    assert_reads_back(x, concat(*parts))
    assert [Path(s).name for s in x.meta["sources"]] == [
        "combined_data_1.txt",
        "combined_data_2.txt",
        "combined_data_10.txt",
    ]
    assert detect_format(tmp_path) == "netflix"


def write_mv_files(folder: Path, r: dict[str, np.ndarray]) -> list[Path]:
    folder.mkdir()
    paths = []
    for m in np.unique(r["movie"]):
        sel = {k: v[r["movie"] == m] for k, v in r.items()}
        paths.append(folder / f"mv_{m:07d}.txt")
        paths[-1].write_text(netflix_text(sel))
    return paths


def test_mv_folder_and_tar_give_the_same_result(tmp_path: Path) -> None:
    r = make_ratings(4)
    paths = write_mv_files(tmp_path / "training_set", r)
    assert_reads_back(read_netflix(tmp_path / "training_set"), r)
    tar_path = tmp_path / "training_set.tar"
    with tarfile.open(tar_path, "w") as tar:
        for p in reversed(paths):  # archive order does not matter
            tar.add(p, arcname=f"training_set/{p.name}")
    assert_reads_back(read_netflix(tar_path, chunk_bytes=500), r)
    assert detect_format(tar_path) == "netflix-mv"
    # a truncated compressed archive and a file that is no archive: one line each
    gz = tmp_path / "training_set.tar.gz"
    with tarfile.open(gz, "w:gz") as tar:
        for p in paths:
            tar.add(p, arcname=f"training_set/{p.name}")
    gz.write_bytes(gz.read_bytes()[: gz.stat().st_size // 2])
    junk = tmp_path / "junk.tar"
    junk.write_bytes(b"this is no archive\n" * 40)
    for bad in (gz, junk):
        with pytest.raises(DataError, match="not a readable tar archive") as e:
            read_netflix(bad)
        assert "\n" not in str(e.value) and str(e.value).startswith(str(bad))
    assert detect_format(paths[0]) == "netflix-mv"
    (tmp_path / "movie_titles.csv").write_bytes(b"1,2001,A, B\n")
    ds = load(tmp_path / "training_set")
    assert ds.format == "netflix-mv" and ds.catalog is not None
    assert_reads_back(ds.interactions, r)


def test_mv_file_without_movie_line_is_named(tmp_path: Path) -> None:
    r = make_ratings(5, n_movies=3)
    paths = write_mv_files(tmp_path / "training_set", r)
    text = paths[1].read_text()
    paths[1].write_text(text[text.index("\n") + 1 :])  # drop the "MovieID:" line
    with pytest.raises(DataError, match="before any 'MovieID:'") as e:
        read_netflix(tmp_path / "training_set")
    assert e.value.path == str(paths[1]) and e.value.line == 1


GOOD = "1:\n10,3,2005-01-02\n11,4,2005-01-03\n2:\n12,5,2004-02-29\n"


@pytest.mark.parametrize(
    ("text", "line", "reason"),
    [
        ("", None, "empty file"),
        ("10,3,2005-01-02\n1:\n", 1, "before any 'MovieID:'"),
        (GOOD + "x1,3,2005-01-02\n", 6, "expected 'MovieID:'"),
        (GOOD + "3x:\n", 6, "movie id '3x'"),
        (GOOD + "13,7,2005-01-02\n", 6, "rating 7 outside 1..5"),
        (GOOD + "13,0,2005-01-02\n", 6, "rating 0 outside 1..5"),
        (GOOD + "13,4,2005-02-29\n", 6, "invalid date"),
        (GOOD + "13,4,2005-13-01\n", 6, "invalid date"),
        (GOOD + "13,4,1899-12-31\n", 6, "invalid date '1899-12-31' \\(or outside 1900..2099\\)"),
        (GOOD + "13,4,2005-0", 6, "expected 'MovieID:'"),
        (GOOD + "123,4,2005-0\n14,4,2005-01-01\n", 6, "expected 'MovieID:'"),
        (GOOD.replace("11,4", "11;4"), 3, "expected 'MovieID:'"),
        ("MovieID,UserID,Rating,Date\n1,2,3,2005-01-01\n", 1, "expected 'MovieID:'"),
        (GOOD + "123456789,4,2005-01-01\n", 6, "expected 'MovieID:'"),  # 9-digit id
    ],
)
@pytest.mark.parametrize("chunk_bytes", [64, 1 << 20])
def test_bad_input_names_file_and_line(
    tmp_path: Path, text: str, line: int | None, reason: str, chunk_bytes: int
) -> None:
    path = tmp_path / "combined_data_1.txt"
    path.write_bytes(text.replace("\n", "\r\n").encode())
    with pytest.raises(DataError, match=reason) as e:
        read_netflix(path, chunk_bytes=chunk_bytes)
    assert e.value.path == str(path) and e.value.line == line
    where = str(path) if line is None else f"{path}, line {line}"
    assert str(e.value).startswith(where + ": ")


def test_error_in_second_file_names_it(tmp_path: Path) -> None:
    (tmp_path / "combined_data_1.txt").write_text(GOOD)
    (tmp_path / "combined_data_2.txt").write_text(GOOD + GOOD.replace("12,5", "12,9"))
    with pytest.raises(DataError, match=r"combined_data_2\.txt, line 10: rating 9") as e:
        read_netflix(tmp_path, chunk_bytes=64)
    assert e.value.line == 10


def test_missing_path_and_empty_folder(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no such file"):
        read_netflix(tmp_path / "nope.txt")
    with pytest.raises(DataError, match="no combined_data"):
        read_netflix(tmp_path)


def test_probe(tmp_path: Path) -> None:
    path = tmp_path / "probe.txt"
    path.write_text("1:\n30878\n2647871\n10:\n1952305\n")
    movie, customer = read_netflix_probe(path)
    assert movie.tolist() == [1, 1, 10] and customer.tolist() == [30878, 2647871, 1952305]
    assert movie.dtype == np.int64 and customer.dtype == np.int64
    path.write_text("1:\n30878\n12a\n")
    with pytest.raises(DataError, match="line 3"):
        read_netflix_probe(path)
    path.write_text("30878\n1:\n")
    with pytest.raises(DataError, match="line 1: customer line before"):
        read_netflix_probe(path)


def test_detect_by_content(tmp_path: Path) -> None:
    path = tmp_path / "ratings_part.txt"
    path.write_text(GOOD)
    assert detect_format(path) == "netflix"
    assert load(path).interactions.n_items == 2


@settings(max_examples=25, deadline=None)
@given(
    customers=st.lists(st.integers(0, 99_999_999), min_size=1, max_size=30),
    seed=st.integers(0, 2**32 - 1),
    chunk_bytes=st.sampled_from([64, 100, 4096]),
)
def test_any_valid_file_reads_back(customers: list[int], seed: int, chunk_bytes: int) -> None:
    rng = np.random.default_rng(seed)
    n = len(customers)
    r = {
        "movie": np.sort(rng.integers(0, 100_000, n)),
        "customer": np.array(customers),
        "rating": rng.integers(1, 6, n),
        "day": rng.integers(-25_567, 47_482, n),  # 1900-01-01 .. 2099-12-31
    }
    ends = rng.choice(["\n", "\r\n"], size=2 * n + 1)  # at most one movie line per rating
    text = "".join(line + ends[k] for k, line in enumerate(netflix_text(r).splitlines()))
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "combined_data_1.txt"
        path.write_bytes(text.rstrip("\r\n").encode() if seed % 2 else text.encode())
        assert_reads_back(read_netflix(path, chunk_bytes=chunk_bytes), r)


def test_import_is_light() -> None:
    code = "import sys, ncf.datasets; print('pyarrow' in sys.modules, 'torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]


def test_civil_dates_match_numpy() -> None:
    days = np.arange(-25_567, 47_482)  # every day of 1900..2099
    dt = EPOCH + days.astype("timedelta64[D]")
    year = dt.astype("datetime64[Y]").astype(np.int64) + 1970
    month = dt.astype("datetime64[M]").astype(np.int64) % 12 + 1
    day = (dt - dt.astype("datetime64[M]")).astype(np.int64) + 1
    np.testing.assert_array_equal(days_from_civil(year, month, day), days)
    assert valid_dates(year, month, day).all()
    y, m, d = (
        np.array([2000, 1900, 2001, 2004, 2005]),
        np.array([2, 2, 2, 4, 0]),
        np.array([29, 29, 29, 31, 1]),
    )
    assert valid_dates(y, m, d).tolist() == [True, False, False, False, False]


def test_rows_per_file_stay_right_after_an_unfinished_read(tmp_path: Path) -> None:
    """Each block carries how many of its rows came from which file: nothing is kept between
    reads (rows used to be kept by ``id(chunk)``; ids are reused, and a later read in the
    same process attributed rows to the wrong file)."""
    mv = write_mv_files(tmp_path / "training_set", make_ratings(1, n_movies=30, per_movie=5))
    files = []
    for k in range(2):
        f = tmp_path / "c" / f"combined_data_{k + 1}.txt"
        f.parent.mkdir(exist_ok=True)
        f.write_text(netflix_text(make_ratings(2 + k, n_movies=40, per_movie=30)))
        files.append(f)
    expected = [sum(1 for line in f.read_text().splitlines() if ":" not in line) for f in files]
    for _ in range(30):
        for chunk in iter_netflix_chunks(mv, chunk_bytes=256):  # blocks of several mv files
            del chunk
        c = read_netflix_columns(files, chunk_bytes=512, threads=1)
        assert c.source_rows.tolist() == expected
        assert int(np.sum(c.source_rows)) == len(c)
