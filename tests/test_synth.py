"""Synthetic Netflix data: Kaggle's exact format, determinism, and structure worth learning."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp
from scipy.sparse.linalg import svds

from ncf import synth
from ncf.errors import NcfError
from ncf.synth import default_sizes, format_block, synth_netflix, write_synth_netflix

N = 20_000


@pytest.fixture(scope="module")
def written(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, synth.SynthInfo]:
    out = tmp_path_factory.mktemp("synth")
    return out, write_synth_netflix(out, N, seed=3)


def _parse(paths: list[Path]) -> tuple[np.ndarray, ...]:
    """A plain-Python reader of the four files (independent of ``ncf.datasets``)."""
    movie, cust, rating, date = [], [], [], []
    current = None
    for path in paths:
        text = path.read_bytes()
        assert b"\r" not in text and text.endswith(b"\n")
        lines = text.decode("ascii").split("\n")[:-1]
        assert lines[0].endswith(":")
        for line in lines:
            if line.endswith(":"):
                current = int(line[:-1])
                continue
            c, r, d = line.split(",")
            movie.append(current)
            cust.append(int(c))
            rating.append(int(r))
            date.append(d)
    return (np.array(movie), np.array(cust), np.array(rating), np.array(date, "datetime64[D]"))


def test_files_hold_exactly_the_generated_ratings(written) -> None:
    out, info = written
    data = synth_netflix(N, seed=3)
    movie, cust, rating, date = _parse(list(info.files[:4]))
    np.testing.assert_array_equal(movie, data.movie)
    np.testing.assert_array_equal(cust, data.customer)
    np.testing.assert_array_equal(rating, data.rating)
    np.testing.assert_array_equal(date, data.date)
    assert info.n_ratings == N == movie.size
    assert sum(info.file_ratings) == N and min(info.file_ratings) > 0
    assert info.n_users == np.unique(cust).size
    assert info.n_items == np.unique(movie).size
    assert [p.name for p in info.files] == [
        "combined_data_1.txt", "combined_data_2.txt", "combined_data_3.txt",
        "combined_data_4.txt", "movie_titles.csv"]
    assert sorted(p.name for p in out.iterdir()) == sorted(
        [*(p.name for p in info.files), synth.MARKER])


def test_netflix_reader_agrees(written) -> None:
    datasets = pytest.importorskip("ncf.datasets")
    out, info = written
    x = datasets.read_netflix(out)
    assert (len(x), x.n_users, x.n_items) == (info.n_ratings, info.n_users, info.n_items)
    np.testing.assert_array_equal(np.bincount(x.ratings.astype(int), minlength=6),
                                  np.bincount(synth_netflix(N, seed=3).rating, minlength=6))


def test_kaggle_invariants(written) -> None:
    _, info = written
    movie, cust, rating, date = _parse(list(info.files[:4]))
    # movies ascending across the four files, one header per movie
    assert np.all(np.diff(movie) >= 0)
    headers = sum(p.read_bytes().count(b":") for p in info.files[:4])
    assert headers == np.unique(movie).size
    assert set(np.unique(rating)) == {1, 2, 3, 4, 5}
    assert date.min() >= np.datetime64("1999-11-11") and date.max() <= np.datetime64("2005-12-31")
    pairs = cust.astype(np.int64) * 100_000 + movie
    assert np.unique(pairs).size == pairs.size  # no duplicate (customer, movie)
    _, per_user = np.unique(cust, return_counts=True)
    assert per_user.min() >= 5
    assert cust.max() <= 2_649_429 and cust.max() > 20 * info.n_users  # sparse ids


def test_titles_file_traits(written) -> None:
    _, info = written
    raw = info.files[4].read_bytes()
    with pytest.raises(UnicodeDecodeError):
        raw.decode("utf-8")  # at least one Latin-1 (non-ASCII) title
    lines = raw.decode("iso-8859-1").split("\n")
    assert lines[-1] == "" and "\r" not in raw.decode("iso-8859-1")
    fields = [line.split(",", 2) for line in lines[:-1]]
    assert [int(f[0]) for f in fields] == list(range(1, info.n_titles + 1))
    years = [f[1] for f in fields]
    assert "NULL" in years
    assert all(y == "NULL" or 1900 <= int(y) <= 2005 for y in years)
    assert any("," in f[2] for f in fields)  # unquoted commas inside titles
    assert not any(f[2].startswith('"') for f in fields)


def test_deterministic_for_a_seed(tmp_path: Path, written) -> None:
    _, info = written
    again = write_synth_netflix(tmp_path / "a", N, seed=3)
    for p, q in zip(info.files, again.files, strict=True):
        assert p.read_bytes() == q.read_bytes()
    other = write_synth_netflix(tmp_path / "b", N, seed=4)
    assert other.files[0].read_bytes() != info.files[0].read_bytes()


def test_formatting_in_small_blocks_gives_the_same_bytes(tmp_path, monkeypatch, written) -> None:
    _, info = written
    monkeypatch.setattr(synth, "_WRITE_ROWS", 777)  # blocks cut in the middle of movies
    again = write_synth_netflix(tmp_path, N, seed=3)
    for p, q in zip(info.files, again.files, strict=True):
        assert p.read_bytes() == q.read_bytes()


def test_format_block_by_hand() -> None:
    text = format_block(np.array([1, 1, 12]), np.array([7, 1234567, 42]), np.array([3, 5, 1]),
                        np.array([0, 1, 52]))
    assert text == b"1:\n7,3,1999-11-11\n1234567,5,1999-11-12\n12:\n42,1,2000-01-02\n"
    assert format_block(np.array([17770]), np.array([2649429]), np.array([4]),
                        np.array([2242])) == b"17770:\n2649429,4,2005-12-31\n"


def test_structure_worth_learning() -> None:
    """Skewed activity and popularity, Netflix-like ratings, and taste beyond popularity."""
    data = synth_netflix(N, seed=1)
    users, u = np.unique(data.customer, return_inverse=True)
    items, i = np.unique(data.movie, return_inverse=True)
    per_user = np.bincount(u)
    assert per_user.max() > 3 * np.median(per_user)
    per_item = np.sort(np.bincount(i))[::-1]
    assert per_item[: items.size // 10].sum() > 0.25 * N  # top 10% of items
    shares = np.bincount(data.rating, minlength=6)[1:] / N
    np.testing.assert_allclose(shares, synth.RATING_SHARES, atol=0.03)

    # leave the latest rating out; a rank-16 SVD of the rest must beat popularity
    rng = np.random.default_rng(0)
    order = np.lexsort((rng.random(N), data.date.astype(np.int64), u))
    last = np.r_[u[order][1:] != u[order][:-1], True]
    test = order[last]
    train = np.ones(N, bool)
    train[test] = False
    x = np.zeros((users.size, items.size))
    x[u[train], i[train]] = 1
    keys = rng.random(x.shape)
    keys[u, i] = 2.0  # never sample an item the user rated
    cand = np.c_[i[test][np.argsort(u[test])], np.argsort(keys, axis=1)[:, :99]]

    def hit_rate(scores: np.ndarray) -> float:
        s = np.take_along_axis(scores, cand, axis=1)
        return float(((s[:, 1:] >= s[:, :1]).sum(axis=1) < 10).mean())

    # sparse SVD: dense LAPACK with many BLAS threads crawls on a busy two-core machine
    a, sv, b = svds(sp.csr_matrix(x), k=16, random_state=0)
    pop = hit_rate(np.broadcast_to(x.sum(axis=0), x.shape))
    svd = hit_rate((a * sv) @ b)
    assert 0.15 < pop < 0.6
    assert svd > pop + 0.05


def test_default_sizes() -> None:
    assert default_sizes(100_000_000) == (480_189, 17_770)
    n_users, n_items = default_sizes(1_000_000)
    assert 4_000 <= n_users <= 7_000 and 1_500 <= n_items <= 4_000
    n_users, n_items = default_sizes(1_000)
    assert n_users * 5 <= 1_000 and n_items >= 100


def test_small_and_custom_sizes() -> None:
    data = synth_netflix(1_000, seed=0)
    assert data.movie.size == 1_000
    data = synth_netflix(3_000, seed=0, n_users=100, n_items=200)
    assert data.movie.size == 3_000 and np.unique(data.customer).size == 100
    assert data.movie.max() <= 200 and len(data.titles) == 200


def test_impossible_sizes_raise() -> None:
    with pytest.raises(NcfError, match="cannot draw"):
        synth_netflix(100, n_users=50)  # fewer than 5 ratings per user
    with pytest.raises(NcfError, match="cannot draw"):
        synth_netflix(10_000, n_users=10, n_items=100)  # more than n_items / 3 per user
    with pytest.raises(NcfError, match="n_items"):
        synth_netflix(10_000, n_items=20_000)


def test_unwritable_output(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(NcfError, match="cannot write"):
        write_synth_netflix(blocker / "out", 1_000)


def test_only_an_earlier_synthetic_set_is_overwritten(tmp_path: Path) -> None:
    real = tmp_path / "netflix"  # a real download has the same file names
    real.mkdir()
    (real / "combined_data_1.txt").write_text("1:\n6,3,2005-09-06\n")
    with pytest.raises(NcfError, match="holds no earlier synthetic set"):
        write_synth_netflix(real, 1_000)
    assert [p.name for p in real.iterdir()] == ["combined_data_1.txt"]
    assert (real / "combined_data_1.txt").read_text() == "1:\n6,3,2005-09-06\n"
    ours = tmp_path / "synth"
    first = write_synth_netflix(ours, 1_000, seed=1).files[0].read_bytes()
    assert write_synth_netflix(ours, 1_000, seed=2).files[0].read_bytes() != first
    with pytest.raises(NcfError, match="exists and is not a folder"):
        write_synth_netflix(real / "combined_data_1.txt", 1_000)


def test_impossible_sizes_write_nothing(tmp_path: Path) -> None:
    with pytest.raises(NcfError, match="cannot draw"):
        write_synth_netflix(tmp_path / "out", 100, n_users=50)
    assert not (tmp_path / "out").exists()
