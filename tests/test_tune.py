"""`ncf tune`: the search sees validation only, resumes, shares a study, ends in a run."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

optuna = pytest.importorskip("optuna")

from planted import planted, planted_split  # noqa: E402

from ncf.cli import main  # noqa: E402
from ncf.cli.train import training_plan  # noqa: E402
from ncf.experiments.tune import (  # noqa: E402
    SearchData,
    TuneOptions,
    finished,
    open_study,
    run_search,
    storage_url,
)
from ncf.pipeline import PipelineConfig  # noqa: E402
from ncf.split import Split  # noqa: E402
from ncf.training import TrainConfig  # noqa: E402

QUICK = TrainConfig(epochs=4, batch_size=64, lr=0.01, early_stopping=None)
BASE = PipelineConfig(factors=8, n_layers=1, gmf=QUICK, mlp=QUICK,
                      neumf=replace(PipelineConfig().neumf, epochs=2, batch_size=256))


def _planted_csv(path: Path) -> Path:
    train, val, test = planted(n_users=120, n_items=160, per_user=12)
    u = np.concatenate([train.user_ids, val.users, test.users])
    i = np.concatenate([train.item_ids, val.items, test.items])
    path.write_text("user,item\n" + "".join(f"{a},{b}\n" for a, b in zip(u, i)))
    return path


def _search(split: Split, db: Path, model: str = "gmf", trials: int = 3) -> list[tuple]:
    options = TuneOptions(model=model, base=BASE, trials=trials, seed=0)
    study, created = open_study(model, storage_url(None, db), options, "data")
    run_search(study, options, SearchData.from_split(split), created, None, lambda s: None)
    return [(t.params, t.value, t.state.name) for t in study.get_trials()]


def test_test_items_cannot_influence_the_search(tmp_path: Path) -> None:
    split = planted_split(120, 160)
    # the same split with every test item (and its candidates) replaced by other items
    rng = np.random.default_rng(1)
    moved = (split.test.item_ids + 1 + rng.integers(0, 5, len(split.test))) % split.train.n_items
    other = replace(split, test=split.test.with_arrays(item_ids=moved.astype(np.int32)),
                    test_negatives=(split.test_negatives + 3) % 160)
    assert not np.array_equal(other.test.item_ids, split.test.item_ids)
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    a, b = _search(split, tmp_path / "a"), _search(other, tmp_path / "b")
    assert a == b and len(a) == 3 and all(state == "COMPLETE" for *_, state in a)
    # and the values are validation HR@10 of real learning (chance is 0.10)
    assert max(v for _, v, _ in a) > 0.3
    # the first trial is the defaults
    assert a[0][0] == {"factors": 8, "lr": 0.01, "negatives": 4}


def test_trials_are_pruned_from_the_epoch_callback(tmp_path: Path) -> None:
    split = planted_split(120, 160)
    options = TuneOptions(model="gmf", base=BASE, trials=2, seed=0)
    study, created = open_study("gmf", storage_url(None, tmp_path), options, "data")
    # a pruner that stops every trial at its first report: training stops after epoch 1
    run_search(study, options, SearchData.from_split(split), created, None, lambda s: None,
               pruner=optuna.pruners.ThresholdPruner(lower=1.1))
    trials = study.get_trials()
    assert [t.state.name for t in trials] == ["PRUNED", "PRUNED"]
    assert all(list(t.intermediate_values) == [1] for t in trials)


def test_a_study_refuses_other_data_or_model(tmp_path: Path) -> None:
    options = TuneOptions(model="gmf", base=BASE, trials=1)
    url = storage_url(None, tmp_path)
    open_study("s", url, options, "data-1")
    with pytest.raises(Exception, match="searched another data"):
        open_study("s", url, options, "data-2")
    with pytest.raises(Exception, match="searched another model"):
        open_study("s", url, replace(options, model="mlp"), "data-1")


def test_tune_end_to_end_resumes_and_reports(tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    data = _planted_csv(tmp_path / "ratings.csv")
    out = tmp_path / "study"
    common = ["tune", "ease", "--data", str(data), "--out", str(out), "--device", "cpu",
              "--quiet"]
    args = [*common, "--trials", "3"]
    assert main(args) == 0
    first = [(t["number"], t["validation_hr"]) for t in _rows(out)]
    assert len(first) == 3
    report = (out / "report.md").read_text()
    assert "validation HR@10" in report and "test HR@10" in report
    assert (out / "search.png").read_bytes()[:4] == b"\x89PNG"
    best = json.loads((out / "best.json").read_text())
    run = Path(best["run_dir"])
    assert (run / "models" / "ease.npz").is_file()
    metrics = json.loads((run / "metrics.json").read_text())["ease"]
    assert metrics["validation"]["hr"] == pytest.approx(best["search_validation"]["hr"])
    assert metrics["sampled"]["hr"] > 0.3
    # a larger budget adds trials; the finished ones are kept, not run again
    assert main([*common, "--trials", "5"]) == 0
    again = [(t["number"], t["validation_hr"]) for t in _rows(out)]
    assert again[:3] == first and len(again) == 5
    # the budget reached: nothing runs
    assert main(args) == 0 and len(_rows(out)) == 5


def test_tune_neumf_pretrains_once(tmp_path: Path) -> None:
    data = _planted_csv(tmp_path / "ratings.csv")
    out = tmp_path / "study"
    common = ["tune", "neumf", "--data", str(data), "--out", str(out), "--device", "cpu",
              "--epochs", "2", "--factors", "8", "--quiet"]
    assert main([*common, "--trials", "2"]) == 0
    cached = list(out.glob("pretrained-*.npz"))
    assert len(cached) == 1
    stamp = cached[0].stat().st_mtime_ns
    run = Path(json.loads((out / "best.json").read_text())["run_dir"])
    assert sorted(p.name for p in (run / "models").iterdir()) == ["gmf.npz", "mlp.npz",
                                                                  "neumf.npz"]
    config = json.loads((run / "config.json").read_text())
    assert config["tuned"]["model"] == "neumf"
    # the final run repeats the best trial exactly (dropout masks included), after trials
    # that moved torch's generator
    best = json.loads((out / "best.json").read_text())
    assert best["final"]["validation"]["hr"] == best["search_validation"]["hr"]
    assert best["final"]["validation"]["ndcg"] == pytest.approx(
        best["search_validation"]["ndcg"], abs=1e-12)
    assert main([*common, "--trials", "3"]) == 0
    assert cached[0].stat().st_mtime_ns == stamp  # loaded, not trained again
    assert len(_rows(out)) == 3


def _rows(out: Path) -> list[dict]:
    import csv

    with open(out / "trials.csv") as f:
        return [{**r, "number": int(r["number"])} for r in csv.DictReader(f)]


def _ncf(*args: str) -> list[str]:
    return [sys.executable, "-c", "from ncf.cli import console; console()", *args]


def _count(db: Path, state: str) -> int:
    """Trials in `state`; 0 while Optuna is still creating the file's tables or writing (a
    reader never waits long for the writer's lock: the next poll reads again)."""
    try:
        with sqlite3.connect(db, timeout=0.5) as con:
            row = con.execute("select count(*) from trials where state = ?", (state,)).fetchone()
    except sqlite3.OperationalError as e:
        if "no such table" in str(e) or "locked" in str(e):
            return 0
        raise
    return int(row[0])


@pytest.mark.slow
def test_ctrl_c_then_resume_and_two_workers(tmp_path: Path) -> None:
    data = _planted_csv(tmp_path / "ratings.csv")
    out = tmp_path / "study"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    common = ["tune", "gmf", "--data", str(data), "--out", str(out), "--device", "cpu",
              "--epochs", "4", "--threads", "1", "--quiet"]
    # 1. interrupted: Ctrl-C once at least two trials finished (a budget it cannot use up
    # first: a trial here takes ~0.1 s on an idle machine)
    # (a process started in the background by a non-interactive shell ignores SIGINT, and
    # its children inherit that: the search is started as from a terminal)
    proc = subprocess.Popen(_ncf(*common, "--trials", "5000"), env=env,
                            stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    db = out / "study.db"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        if db.exists() and _count(db, "COMPLETE") >= 2:
            break
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    with sqlite3.connect(db) as con:
        done = con.execute("select t.number, v.value from trials t join trial_values v "
                           "on v.trial_id = t.trial_id where t.state = 'COMPLETE' "
                           "order by t.number").fetchall()
    assert len(done) >= 2
    # 2. two workers share the study up to a budget of len(done) + 30 finished trials (a few
    # seconds of trials: more than the workers' difference in start-up time)
    budget = len(done) + 30
    workers = [subprocess.Popen(_ncf(*common, "--trials", str(budget), "--search-only"),
                                env=env, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    for w in workers:
        _, err = w.communicate(timeout=240)
        assert w.returncode == 0, err
    options = TuneOptions(model="gmf", base=BASE)
    study = optuna.load_study(study_name="gmf", storage=storage_url(None, out))
    trials = finished(study)
    assert budget <= len(trials) <= budget + 1  # a worker may finish the trial it had started
    # the finished trials of the interrupted run are kept as they were, none run again
    again = {t.number: t.value for t in trials}
    assert all(again[n] == pytest.approx(v) for n, v in done)
    late = [t for t in trials if t.number > max(n for n, _ in done)]
    assert len({t.user_attrs["worker"] for t in late}) == 2  # both workers added trials
    del options
    # 3. the last command trains the best configuration and writes the report
    assert main([*common, "--trials", str(budget)]) == 0
    assert (out / "report.md").is_file()


def test_training_plan_scales_with_device_and_data() -> None:
    cpu = training_plan(990_000, 4, "cpu")
    assert (cpu.factors, cpu.epochs, cpu.early_stopping, cpu.batch_size) == (16, 20, 8, 2048)
    gpu = training_plan(990_000, 4, "cuda")
    assert (gpu.factors, gpu.epochs, gpu.early_stopping, gpu.batch_size) == (64, 20, 8, 16384)
    big = training_plan(20_000_000, 4, "cuda")
    assert (big.factors, big.epochs, big.early_stopping) == (16, 10, 4)
    given = training_plan(20_000_000, 4, "cuda", factors=32, epochs=3, early_stopping=2)
    assert (given.factors, given.epochs, given.early_stopping, given.chosen) == (32, 3, 2, ())
    assert "by the scaling rule" not in given.describe()
    assert set(cpu.chosen) == {"factors", "epochs", "early_stopping"}
    assert cpu.as_dict()["chosen_by_rule"] == ["factors", "epochs", "early_stopping"]


def test_neumf_trials_repeat_whatever_ran_before(tmp_path: Path) -> None:
    import torch

    from ncf.experiments.tune import _stage_outcome, pretrain_parts

    data = SearchData.from_split(planted_split(120, 160))
    config = replace(BASE, dropout=0.3)
    parts = pretrain_parts(config, data, tmp_path, "cpu", lambda s: None)
    runs = []
    for _ in range(2):
        losses: list[float] = []
        _stage_outcome("neumf", config, data, parts, lambda r, out=losses: out.append(r.loss),
                       "cpu")
        runs.append(losses)
        torch.rand(1000)  # moves torch's generator, as other trials would
    assert len(runs[0]) == 2 and runs[0] == runs[1]
    # the parts are loaded back from the cache to the same weights and histories
    again = pretrain_parts(config, data, tmp_path, "cpu", lambda s: None)
    for name in ("gmf", "mlp"):
        for k, v in parts.models[name].state_dict().items():
            assert torch.equal(v, again.models[name].state_dict()[k])
        assert again.histories[name].best_epoch == parts.histories[name].best_epoch


@pytest.mark.parametrize(("args", "message"), [
    (["--storage", "nosuchdb://x/y"], "--storage nosuchdb://x/y: "),
    (["--storage", "sqlite:////no/such/folder/x.db"], "unable to open database file"),
    (["--minutes", "0"], "--minutes must be > 0"),
])
def test_bad_tune_options_are_one_line_before_any_data(tmp_path: Path, capsys, args: list[str],  # type: ignore[no-untyped-def]
                                                        message: str) -> None:
    missing = tmp_path / "no-such-data.csv"  # never read: the options fail first
    assert main(["tune", "ease", "--data", str(missing), "--out", str(tmp_path / "o"),
                 *args]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("ncf: error: ") and message in err
    assert not (tmp_path / "o").exists()
