"""`ncf data inspect | prepare | synth`, called in-process (one console-script smoke test)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from ncf.cli import main
from ncf.datasets import read_paper_split
from ncf.storage import load_prepared


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def synth_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("netflix")
    assert main(["data", "synth", "--ratings", "20k", "--out", str(out), "--seed", "2"]) == 0
    return out


def test_inspect_json_ml100k(shared_data: Path, capsys) -> None:
    code, out, err = _run(capsys, "data", "inspect", str(shared_data / "ml-100k" / "u.data"),
                          "--json")
    assert code == 0 and err == ""
    stats = json.loads(out)
    assert (stats["users"], stats["items"], stats["ratings"]) == (943, 1682, 100_000)
    assert stats["format"] == "ml-100k"
    assert stats["density"] == pytest.approx(100_000 / (943 * 1682))
    assert stats["rating_histogram"] == {"1": 6110, "2": 11370, "3": 27145, "4": 34174,
                                         "5": 21201}
    assert stats["per_user"]["min"] == 20 and stats["per_user"]["max"] == 737
    assert stats["time_span"] == {"first": "1997-09-20", "last": "1998-04-22"}


def test_inspect_reads_the_papers_test_files_alone(shared_data: Path, capsys) -> None:
    # the authors' ml-1m files come without their train file
    code, out, err = _run(capsys, "data", "inspect",
                          str(shared_data / "ncf" / "ml-1m.test.rating"), "--json")
    assert code == 0 and err == ""
    stats = json.loads(out)
    assert (stats["users"], stats["ratings"], stats["format"]) == (6_040, 6_040, "ncf-paper")


def test_synth_then_inspect_text(synth_dir: Path, capsys) -> None:
    code, out, _ = _run(capsys, "data", "inspect", str(synth_dir))
    assert code == 0
    assert "format      netflix" in out and "ratings     20,000" in out
    assert "per user    min 5" in out and "time span   " in out


def test_prepare_then_load(synth_dir: Path, tmp_path: Path, capsys) -> None:
    out_dir = tmp_path / "prep"
    code, out, err = _run(capsys, "data", "prepare", str(synth_dir), "--out", str(out_dir),
                          "--ratings", "10k", "--negatives", "20", "--min-item-ratings", "2")
    assert code == 0, err
    assert "prepared netflix data" in out and str(out_dir) in out
    prep = load_prepared(out_dir)
    s = prep.split
    n_users = s.train.n_users
    assert len(s.test) == len(s.validation) == n_users  # every user has >= 5 ratings
    assert s.test_negatives.shape == (n_users, 20)
    assert s.validation_negatives.shape == (n_users, 20)
    total = len(s.train) + len(s.validation) + len(s.test)
    assert 10_000 <= total < 10_000 + 1_000
    assert s.train.item_counts().min() >= 0 and prep.catalog is not None
    opts = prep.meta["options"]
    assert opts["ratings"] == 10_000 and opts["format"] == "netflix"
    assert opts["min_item_ratings"] == 2
    assert [Path(src["path"]).name for src in prep.meta["sources"]] == [
        f"combined_data_{i}.txt" for i in range(1, 5)]
    # the latest rating of each user is the test item
    ts = np.concatenate([s.train.timestamps, s.validation.timestamps])
    us = np.concatenate([s.train.user_ids, s.validation.user_ids])
    latest = np.full(n_users, np.iinfo(np.int64).min)
    np.maximum.at(latest, us, ts)
    assert np.all(s.test.timestamps >= latest[s.test.user_ids])


def test_prepare_paper_keeps_its_split(shared_data: Path, tmp_path: Path, capsys) -> None:
    src = shared_data / "ncf" / "ml-100k"
    code, _, err = _run(capsys, "data", "prepare", str(src), "--out", str(tmp_path / "p"))
    assert code == 0, err
    paper = read_paper_split(src)
    got = load_prepared(tmp_path / "p").split
    np.testing.assert_array_equal(got.test.user_ids, paper.test.user_ids)
    np.testing.assert_array_equal(got.test.item_ids, paper.test.item_ids)
    np.testing.assert_array_equal(got.test_negatives, paper.test_negatives)
    assert len(got.validation) == 943
    assert len(got.train) + len(got.validation) == len(paper.train)


def test_bad_input_exit_2_one_line(tmp_path: Path, capsys) -> None:
    data = tmp_path / "data"
    data.mkdir()
    (data / "combined_data_1.txt").write_text("1:\n6,3,2005-01-02\n7,9,2005-01-02\n")
    out_dir = tmp_path / "prep"
    code, out, err = _run(capsys, "data", "prepare", str(data), "--out", str(out_dir))
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and err.startswith("ncf: error: ")
    assert "combined_data_1.txt, line 3" in err
    assert not out_dir.exists()
    assert sorted(os.listdir(tmp_path)) == ["data"]


def test_missing_input_and_bad_output(tmp_path: Path, capsys, synth_dir: Path) -> None:
    code, _, err = _run(capsys, "data", "inspect", str(tmp_path / "nope"))
    assert code == 2 and "nope" in err and err.count("\n") == 1
    blocker = tmp_path / "file"
    blocker.write_text("x")
    code, _, err = _run(capsys, "data", "prepare", str(synth_dir), "--out", str(blocker))
    assert code == 2 and "exists and is not a folder" in err
    code, _, err = _run(capsys, "data", "prepare", str(synth_dir), "--out", str(tmp_path / "o"),
                        "--ratings", "ten")
    assert code == 2 and "not a count" in err and not (tmp_path / "o").exists()


def test_option_errors_are_one_line(capsys) -> None:  # type: ignore[no-untyped-def]
    seed = "expected a seed, an integer in 0..4294967295"
    for args, message in [(["data", "synth", "--seed", "-1"], seed),
                          (["train", "--seed", "x"], seed),
                          (["experiment", "factors", "--seeds", "0,-1"], seed),
                          (["train", "--threads", "0"], "expected an integer >= 1"),
                          (["data", "prepare", "x", "--out", "y", "--threshold", "nan"],
                           "expected a finite number"),
                          (["data", "prepare"], "required")]:
        with pytest.raises(SystemExit) as stop:
            main(args)
        err = capsys.readouterr().err
        assert stop.value.code == 2 and err.count("\n") == 1 and message in err, (args, err)
        assert err.startswith(f"ncf {args[0]}") and err.rstrip().endswith("--help)")


def test_sigterm_cleans_up_like_ctrl_c(tmp_path: Path, monkeypatch, capsys) -> None:  # type: ignore[no-untyped-def]
    import signal

    import ncf.synth as synth_mod

    real_spill = synth_mod._spill

    def spill_then_terminated(*a, **kw):  # type: ignore[no-untyped-def]
        result = real_spill(*a, **kw)  # temporary files exist now
        os.kill(os.getpid(), signal.SIGTERM)
        return result

    monkeypatch.setattr(synth_mod, "_spill", spill_then_terminated)
    before = signal.getsignal(signal.SIGTERM)
    code, _, err = _run(capsys, "data", "synth", "--ratings", "20k", "--out", str(tmp_path / "s"))
    assert code == 130 and err == "ncf: interrupted\n"
    assert os.listdir(tmp_path) == []  # neither the folder nor its temporary files are left
    assert signal.getsignal(signal.SIGTERM) == before


def test_console_script_smoke(shared_data: Path) -> None:
    exe = Path(sys.executable).parent / "ncf"
    if not exe.exists() and shutil.which("ncf") is None:
        pytest.skip("the ncf console script is not installed")
    cmd = str(exe) if exe.exists() else "ncf"
    done = subprocess.run([cmd, "data", "inspect", str(shared_data / "ml-100k" / "u.data"),
                           "--json"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["ratings"] == 100_000
