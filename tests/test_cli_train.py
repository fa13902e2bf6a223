"""`ncf train`, `ncf recommend`, `ncf evaluate` end to end on small synthetic data."""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from ncf.cli import main
from ncf.runs import atomic_write

SMALL = ["--epochs", "2", "--factors", "8", "--batch-size", "512", "--quiet"]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A trained run on a synthetic Netflix-format set written through the default path."""
    tmp = tmp_path_factory.mktemp("train")
    mp = pytest.MonkeyPatch()
    mp.setenv("NCF_CACHE", str(tmp / "cache"))
    try:
        assert main(["train", "--synth-ratings", "20k", "--out", str(tmp / "run"), *SMALL]) == 0
    finally:
        mp.undo()
    return tmp / "run"


def test_run_directory_holds_everything(run_dir: Path) -> None:
    for name in ("config.json", "metrics.json", "catalog.npz"):
        assert (run_dir / name).is_file(), name
    for model in ("gmf", "mlp", "neumf"):
        assert (run_dir / "models" / f"{model}.npz").stat().st_size > 0
        assert (run_dir / "plots" / f"{model}.png").read_bytes()[:4] == b"\x89PNG"
        rows = (run_dir / "history" / f"{model}.csv").read_text().splitlines()
        assert rows[0].split(",")[:4] == ["epoch", "loss", "hr", "ndcg"] and len(rows) == 3
    assert (run_dir / "plots" / "comparison.png").is_file()
    assert not list(run_dir.rglob("*.tmp"))
    # the seen items are stored once for the run, not in every model file
    assert (run_dir / "seen.npz").is_file()
    for model in ("gmf", "mlp", "neumf"):
        with np.load(run_dir / "models" / f"{model}.npz") as z:
            assert not {"seen_indptr", "seen_indices"} & set(z.files)
    config = json.loads((run_dir / "config.json").read_text())
    assert config["pipeline"]["neumf"]["optimizer"] == "sgd"
    assert config["pipeline"]["neumf"]["momentum"] == 0.9
    assert config["data"]["synthetic"] is True


def test_models_learn_far_above_chance(run_dir: Path) -> None:
    metrics = json.loads((run_dir / "metrics.json").read_text())
    for model in ("gmf", "mlp", "neumf"):
        assert metrics[model]["sampled"]["hr"] > 0.3, (model, metrics[model])  # chance: 0.10
        assert 0 <= metrics[model]["full"]["hr"] <= metrics[model]["sampled"]["hr"]
        # NeuMF may keep its pre-trained start (epoch 0) when no epoch beats it on validation
        assert metrics[model]["best_epoch"] in ((0, 1, 2) if model == "neumf" else (1, 2))


def test_evaluate_reproduces_the_saved_metrics(run_dir: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    assert main(["evaluate", str(run_dir), "--json"]) == 0
    again = json.loads(capsys.readouterr().out)
    saved = json.loads((run_dir / "metrics.json").read_text())
    for model in ("gmf", "mlp", "neumf"):
        assert again[model]["sampled"]["hr"] == pytest.approx(saved[model]["sampled"]["hr"])
        assert again[model]["full"]["ndcg"] == pytest.approx(saved[model]["full"]["ndcg"])


def test_recommend_excludes_seen_and_shows_titles(run_dir: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    from ncf.report import load_model

    rec = load_model(run_dir)
    user_raw = rec.user_raw[3]
    seen_raw = set(rec.item_raw[rec.seen_items(3)].tolist())
    assert main(["recommend", str(run_dir), "--user", str(user_raw), "-k", "5", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["rank"] for r in rows] == [1, 2, 3, 4, 5]
    assert not {r["item"] for r in rows} & seen_raw
    assert all(r["title"] for r in rows)
    assert [r["score"] for r in rows] == sorted((r["score"] for r in rows), reverse=True)
    assert (
        main(
            [
                "recommend",
                str(run_dir),
                "--user",
                str(user_raw),
                "--include-seen",
                "-k",
                "200",
                "--json",
            ]
        )
        == 0
    )
    assert {r["item"] for r in json.loads(capsys.readouterr().out)} & seen_raw


@pytest.mark.parametrize("args", [["--user", "not-a-user"], ["--user", "1", "--model", "svd"]])
def test_recommend_errors_are_one_line(run_dir: Path, capsys, args: list[str]) -> None:  # type: ignore[no-untyped-def]
    assert main(["recommend", str(run_dir), *args]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("ncf: error:") and "\n" not in err


def test_train_refuses_a_non_empty_run_directory(run_dir: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    assert main(["train", "--out", str(run_dir), *SMALL]) == 2
    assert "not empty" in capsys.readouterr().err


def test_train_on_a_missing_path_is_one_clear_line(tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    assert (
        main(["train", "--data", str(tmp_path / "nope"), "--out", str(tmp_path / "r"), *SMALL]) == 2
    )
    err = capsys.readouterr().err.strip()
    assert "nope" in err and "\n" not in err


def test_atomic_write_leaves_old_file_or_nothing(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    target = tmp_path / "weights.npz"
    atomic_write(target, b"old")

    def boom(*a, **k):  # type: ignore[no-untyped-def]
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("os.replace", boom)
    with pytest.raises(OSError):
        atomic_write(target, b"new and bigger")
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["weights.npz"]


def test_saved_model_is_complete_or_absent(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """A run killed while saving weights leaves no half-written model file."""
    import torch

    from ncf.interactions import Interactions
    from ncf.models import GMF
    from ncf.recommend import NCFRecommender

    x = Interactions.from_raw(np.array([1, 1, 2]), np.array([5, 6, 5]))
    rec = NCFRecommender.from_trained(GMF(2, 2, factors=4), x)

    def killed(*a, **k):  # type: ignore[no-untyped-def]
        raise KeyboardInterrupt

    monkeypatch.setattr(np, "savez", killed)
    with pytest.raises(KeyboardInterrupt):
        rec.save(tmp_path / "gmf.npz")
    assert list(tmp_path.iterdir()) == []
    monkeypatch.undo()
    rec.save(tmp_path / "gmf.npz")
    back = NCFRecommender.load(tmp_path / "gmf.npz")
    u, i = np.array([0, 1]), np.array([[0, 1], [1, 0]])
    np.testing.assert_allclose(back.score(u, i), rec.score(u, i))
    assert torch.equal(back.model.user.weight, rec.model.user.weight)


def test_auto_batch_size_keeps_the_papers_256_on_small_data() -> None:
    from ncf.cli.train import auto_batch_size

    assert auto_batch_size(98_114, 4) == 256  # ml-100k: the paper's batch
    assert auto_batch_size(990_000, 4) == 2048  # 1M ratings: ~2,400 steps an epoch
    assert auto_batch_size(100_000_000, 4) == 16384  # capped


def test_cuda_without_a_gpu_is_one_clear_line(tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    assert main(["train", "--device", "cuda", "--out", str(tmp_path / "r"), *SMALL]) == 2
    assert "no CUDA device" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


REFIT = ["--synth-ratings", "20k", "--refit", "--dropout", "0.1", "--seed", "1",
         "--full-ranking-users", "100", *(a for a in SMALL if a != "--quiet")]


@pytest.fixture(scope="module")
def refit_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """A run with ``--refit`` (and a seed other than 0), and what it printed."""
    tmp = tmp_path_factory.mktemp("refit")
    mp = pytest.MonkeyPatch()
    mp.setenv("NCF_CACHE", str(tmp / "cache"))
    out = io.StringIO()
    try:
        with contextlib.redirect_stdout(out):
            assert main(["train", "--out", str(tmp / "run"), *REFIT]) == 0
    finally:
        mp.undo()
    return tmp / "run", out.getvalue()


def test_refit_is_reported_and_saved(refit_run: tuple[Path, str], capsys) -> None:  # type: ignore[no-untyped-def]
    run, out = refit_run
    assert "gmf refit epoch" in out and "mlp refit epoch" in out
    metrics = json.loads((run / "metrics.json").read_text())
    config = json.loads((run / "config.json").read_text())
    assert config["pipeline"]["refit"] is True and config["pipeline"]["dropout"] == 0.1
    for model in ("gmf", "mlp", "neumf"):
        assert metrics[model]["refit"]["epochs"] == metrics[model]["best_epoch"]
        assert metrics[model]["sampled"]["hr"] > 0.3  # chance: 0.10
    # the saved weights are the refit ones: re-scoring them gives the reported numbers, full
    # ranking on the same 100 users (drawn with the run's seed, 1)
    for given in ([], ["--full-ranking-users", "100"]):
        assert main(["evaluate", str(run), "--json", *given]) == 0
        again = json.loads(capsys.readouterr().out)
        for model in ("gmf", "mlp", "neumf"):
            assert again[model]["sampled"]["hr"] == pytest.approx(metrics[model]["sampled"]["hr"])
            assert again[model]["full"]["n_users"] == 100
            for metric in ("hr", "ndcg", "mrr"):
                assert again[model]["full"][metric] == metrics[model]["full"][metric], metric


def test_a_refit_run_stopped_in_neumf_keeps_gmf_and_mlp_and_resumes(  # type: ignore[no-untyped-def]
        refit_run: tuple[Path, str], tmp_path: Path, monkeypatch, capsys) -> None:
    """Before its refit phase a run used to save nothing: stopped during NeuMF's first
    training it lost GMF and MLP and its directory. The models chosen on validation are saved
    as they are chosen (the refit ones replace them), and the run resumes."""
    import ncf.pipeline as pipeline_mod

    real_train = _interrupt_at_neumf(monkeypatch, tmp_path)
    run = tmp_path / "run"
    assert main(["train", "--out", str(run), *REFIT]) == 130
    capsys.readouterr()
    assert sorted(p.name for p in (run / "models").iterdir()) == ["gmf.npz", "mlp.npz"]
    assert main(["evaluate", str(run), "--json"]) == 0  # usable, before their refit
    assert sorted(json.loads(capsys.readouterr().out)) == ["gmf", "mlp"]
    monkeypatch.setattr(pipeline_mod, "train", real_train)
    assert main(["train", "--resume", str(run), "--quiet"]) == 0
    assert _without_times(json.loads((run / "metrics.json").read_text())) == _without_times(
        json.loads((refit_run[0] / "metrics.json").read_text()))


@pytest.mark.parametrize(("flag", "value", "message"), [
    ("--epochs", "0", "--epochs must be >= 1, got 0"),
    ("--negatives", "0", "epochs, batch_size and n_negatives must be positive"),
    ("--lr", "-1", "learning rate must be a positive number"),
    ("--finetune-lr", "nan", "learning rate must be a positive number"),
    ("--dropout", "1.5", "dropout must lie in [0, 1)"),
    ("--alpha", "2", "alpha must lie in [0, 1]"),
    ("--layers", "-1", "layers >= 0"),
    ("--factors", "7", "even number >= 2"),
])
def test_bad_model_options_fail_before_anything_is_written(tmp_path: Path, capsys, flag: str,  # type: ignore[no-untyped-def]
                                                           value: str, message: str) -> None:
    data = tmp_path / "u.data"
    rows = (f"{u}\t{i}\t4\t{u * 10 + i}\n" for u in range(1, 7) for i in range(1, 6))
    data.write_text("".join(rows))
    out = tmp_path / "run"
    assert main(["train", "--data", str(data), "--out", str(out), *SMALL, flag, value]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1
    assert not out.exists()
    # checked before any data is read: a missing path, or a synthetic set to write, waits
    assert main(["train", "--data", str(tmp_path / "nope"), *SMALL, flag, value]) == 2
    assert message in capsys.readouterr().err


def test_a_run_stopped_in_neumf_keeps_its_finished_stages(run_dir: Path, tmp_path: Path,  # type: ignore[no-untyped-def]
                                                          monkeypatch, capsys) -> None:
    _interrupt_at_neumf(monkeypatch, tmp_path)
    run = tmp_path / "run"
    assert main(["train", "--synth-ratings", "20k", "--out", str(run), *SMALL]) == 130
    assert capsys.readouterr().err.splitlines() == [
        f"ncf: the run can go on from its last epoch: ncf train --resume {run}",
        "ncf: interrupted"]
    assert sorted(p.name for p in (run / "models").iterdir()) == ["gmf.npz", "mlp.npz"]
    assert (run / "history" / "mlp.csv").is_file() and (run / "plots" / "gmf.png").is_file()
    assert not (run / "metrics.json").exists() and not list(run.rglob("*.tmp"))
    # the finished stages are usable: re-scored, and recommending with titles
    assert main(["evaluate", str(run), "--json"]) == 0
    scored = json.loads(capsys.readouterr().out)
    assert sorted(scored) == ["gmf", "mlp"] and scored["mlp"]["sampled"]["hr"] > 0.3
    assert json.loads((run / "config.json").read_text())["data"]["synthetic"] is True
    from ncf.report import load_model

    rec = load_model(run, "gmf")
    assert main(["recommend", str(run), "--user", str(rec.user_raw[0]), "--model", "gmf",
                 "-k", "3", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert len(rows) == 3 and all(r["title"] for r in rows)
    # resumed, it ends as the same run uninterrupted (the module's run) to the last digit
    monkeypatch.undo()
    monkeypatch.setenv("NCF_CACHE", str(tmp_path / "cache"))
    assert main(["train", "--resume", str(run), "--quiet"]) == 0
    assert _without_times(json.loads((run / "metrics.json").read_text())) == _without_times(
        json.loads((run_dir / "metrics.json").read_text()))
    assert not (run / "checkpoints").exists()
    assert len(json.loads((run / "config.json").read_text())["resumed"]) == 1
    assert main(["train", "--resume", str(run)]) == 2
    assert "the run is complete" in capsys.readouterr().err


def _without_times(tree: Any) -> Any:
    """``tree`` without its wall-clock entries (seconds differ from run to run)."""
    if isinstance(tree, dict):
        return {k: _without_times(v) for k, v in tree.items() if "seconds" not in k}
    return tree


def test_resume_refuses_other_options_and_runs_it_cannot_resume(run_dir: Path, tmp_path: Path,  # type: ignore[no-untyped-def]
                                                               capsys) -> None:
    assert main(["train", "--resume", str(run_dir), "--epochs", "3"]) == 2
    assert "--epochs cannot be changed" in capsys.readouterr().err
    assert main(["train", "--resume", str(tmp_path / "nope")]) == 2
    assert "no such run directory" in capsys.readouterr().err
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / "config.json").write_text('{"data": {}}')
    assert main(["train", "--resume", str(tmp_path / "old")]) == 2
    assert "cannot be resumed" in capsys.readouterr().err


def test_recommend_past_the_unseen_items_lists_only_those(run_dir: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    from ncf.report import load_model

    rec = load_model(run_dir)
    user = rec.user_raw[3]
    unseen = rec.n_items - len(rec.seen_items(3))
    assert main(["recommend", str(run_dir), "--user", str(user), "-k", "100000", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert len(rows) == unseen and not {r["item"] for r in rows} & set(
        rec.item_raw[rec.seen_items(3)].tolist())
    assert main(["recommend", str(run_dir), "--user", str(user), "-k", "100000"]) == 0
    assert f"only {unseen} items left to recommend" in capsys.readouterr().out.splitlines()[0]


def test_broken_run_files_are_one_line(run_dir: Path, tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    import shutil

    from ncf.report import load_model

    broken = tmp_path / "broken"
    shutil.copytree(run_dir, broken)
    user = ["--user", str(load_model(run_dir).user_raw[0])]
    (broken / "models" / "neumf.npz").write_bytes(b"garbage" * 10)
    (broken / "catalog.npz").write_bytes(b"")
    (broken / "config.json").write_text("[1, 2]")
    for args, message in [
        (["recommend", str(broken), *user], "neumf.npz: unreadable model file"),
        (["recommend", str(broken), *user, "--model", "gmf"], "catalog.npz: unreadable catalog"),
        (["evaluate", str(broken)], "config.json: not the configuration of a run"),
        (["recommend", str(run_dir), "--user", "9" * 30], "unknown user"),
        (["recommend", str(run_dir), *user, "--model", "../catalog"], "unknown model"),
    ]:
        assert main(args) == 2, args
        err = capsys.readouterr().err
        assert err.startswith("ncf: error: ") and err.count("\n") == 1 and message in err, err
    shutil.rmtree(broken / "models")
    (broken / "models").mkdir()
    shutil.copy(run_dir / "config.json", broken / "config.json")
    assert main(["evaluate", str(broken)]) == 2
    assert "no trained model in this run" in capsys.readouterr().err


def test_evaluate_refuses_other_data_of_the_same_shape(run_dir: Path, tmp_path: Path,  # type: ignore[no-untyped-def]
                                                       capsys) -> None:
    source = Path(json.loads((run_dir / "config.json").read_text())["data"]["path"])
    other = tmp_path / "other"  # the same ratings, every customer id shifted by one
    other.mkdir()
    for f in source.iterdir():
        if f.name.startswith("combined_data"):
            lines = [ln if ln.endswith(":") or not ln else
                     f"{int(ln.split(',', 1)[0]) + 1},{ln.split(',', 1)[1]}"
                     for ln in f.read_text().split("\n")]
            (other / f.name).write_text("\n".join(lines))
    assert main(["evaluate", str(run_dir), "--data", str(other), "--json"]) == 2
    assert "user ids differ from those the model was trained on" in capsys.readouterr().err


@pytest.mark.parametrize(("args", "message"), [
    (["--lr", "0"], "learning rate must be a positive number"),
    (["--finetune-lr", "-1"], "learning rate must be a positive number"),
    (["--user", "nosuch"], "unknown user 'nosuch'"),
    (["--layers", "40"], "above 65,536"),
])
def test_bad_training_options_fail_before_the_run_directory(  # type: ignore[no-untyped-def]
        run_dir: Path, tmp_path: Path, monkeypatch, capsys, args: list[str], message: str) -> None:
    source = json.loads((run_dir / "config.json").read_text())["data"]["path"]
    out = tmp_path / "run"
    assert main(["train", "--data", source, "--out", str(out), *SMALL, *args]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err, err
    assert not out.exists()


def test_running_out_of_memory_is_one_line_and_leaves_no_run(tmp_path: Path, monkeypatch,  # type: ignore[no-untyped-def]
                                                             capsys) -> None:
    import ncf.pipeline as pipeline_mod

    def no_memory(*a, **kw):  # type: ignore[no-untyped-def]
        raise MemoryError("Unable to allocate 14.0 GiB for an array")

    monkeypatch.setattr(pipeline_mod, "train", no_memory)
    monkeypatch.setenv("NCF_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "run"
    assert main(["train", "--synth-ratings", "20k", "--out", str(out), *SMALL]) == 2
    err = capsys.readouterr().err
    assert err.startswith("ncf: error: not enough memory (Unable to allocate 14.0 GiB")
    assert err.count("\n") == 1 and not out.exists()


def _rewrite_npz(path: Path, **changes: np.ndarray) -> None:
    """Replace arrays of a saved ``.npz`` (as someone editing the file would)."""
    with np.load(path) as z:
        arrays = {k: z[k] for k in z.files}
    arrays.update(changes)
    with open(path, "wb") as fh:
        np.savez(fh, **arrays)


def test_tampered_model_and_catalog_files_are_one_line(run_dir: Path, tmp_path: Path,  # type: ignore[no-untyped-def]
                                                       capsys) -> None:
    import shutil

    from ncf.report import load_model

    rec = load_model(run_dir, "gmf")
    user = ["--user", str(rec.user_raw[0])]
    gmf = Path("models") / "gmf.npz"
    with np.load(run_dir / gmf) as z:
        weights, item_raw = z["a_w.user.weight"], z["a_item_raw"]
        meta = json.loads(bytes(z["meta"]).decode())
    with np.load(run_dir / "seen.npz") as z:  # stored once for the run's models
        seen = z["seen_indices"]
    huge = {**meta, "n_users": 10**12, "params": {**meta["params"], "hyper": {
        **meta["params"]["hyper"], "n_users": 10**12}}}
    cases = [
        (gmf, {"a_w.user.weight": weights[:-1]}, "weight user.weight has shape"),
        (gmf, {"a_item_raw": item_raw[:-1]}, "its item id map holds"),
        (gmf, {"a_item_raw": item_raw[::-1].copy()}, "its item ids are not sorted"),
        (Path("seen.npz"), {"seen_indices": np.r_[rec.n_items + 5, seen[1:]]},
         "an item index outside"),
        (Path("seen.npz"), {"seen_indices": np.r_[-1, seen[1:]]}, "an item index outside"),
        (gmf, {"meta": np.frombuffer(json.dumps(huge).encode(), np.uint8)},
         "1000000000000"),
        (gmf, {"meta": np.frombuffer(b"[1]", np.uint8)}, "metadata is not an object"),
        (Path("catalog.npz"), {"titles": np.array(["a", "b"])}, "ids, 2 titles"),
    ]
    for name, changes, message in cases:
        broken = tmp_path / "broken"
        shutil.rmtree(broken, ignore_errors=True)
        shutil.copytree(run_dir, broken)
        _rewrite_npz(broken / name, **changes)
        commands = [["recommend", str(broken), *user, "--model", "gmf"]]
        if name != Path("catalog.npz"):  # evaluate reads no titles
            commands.append(["evaluate", str(broken)])
        for argv in commands:
            assert main(argv) == 2, (argv, message)
            err = capsys.readouterr().err
            assert err.startswith(f"ncf: error: {broken / name}: ") and message in err, err
            assert err.count("\n") == 1


def test_titles_with_terminal_escapes_are_printed_escaped(run_dir: Path, tmp_path: Path,  # type: ignore[no-untyped-def]
                                                          capsys) -> None:
    import shutil

    from ncf.report import load_model

    run = tmp_path / "run"
    shutil.copytree(run_dir, run)
    with np.load(run / "catalog.npz") as z:
        titles = z["titles"].astype(object)
    titles[:] = "\x1b[2J\x1b]0;pwned\x07Title\nSecond line"
    _rewrite_npz(run / "catalog.npz", titles=titles.astype(str))
    user = str(load_model(run).user_raw[0])
    assert main(["recommend", str(run), "--user", user, "-k", "3"]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert len(lines) == 4 and "\x1b" not in out and "\x07" not in out
    assert "  \\x1b[2J\\x1b]0;pwned\\x07Title\\nSecond line" in lines[1]
    assert main(["recommend", str(run), "--user", user, "-k", "3", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)  # JSON keeps the title as it is, escaped by JSON
    assert rows[0]["title"] == "\x1b[2J\x1b]0;pwned\x07Title\nSecond line"


def test_header_config_and_tensorboard_record_the_plan(tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    pytest.importorskip("tensorboard")
    from planted import planted
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    train, val, test = planted(n_users=60, n_items=120, per_user=10)
    u = np.concatenate([train.user_ids, val.users, test.users])
    i = np.concatenate([train.item_ids, val.items, test.items])
    data = tmp_path / "ratings.csv"
    data.write_text("user,item\n" + "".join(f"{a},{b}\n" for a, b in zip(u, i)))
    logs = tmp_path / "tb"
    assert main(["train", "--data", str(data), "--out", str(tmp_path / "run"), "--epochs", "2",
                 "--device", "cpu", "--tensorboard", str(logs)]) == 0
    out = capsys.readouterr().out
    # the rule chose the factors and the patience; the epochs were given
    assert ("factors 16, at most 2 epochs a stage, early stopping after 8 (by the scaling "
            "rule: factors, early stopping); batch 256") in out
    plan = json.loads((tmp_path / "run" / "config.json").read_text())["batch_plan"]
    assert (plan["factors"], plan["epochs"], plan["early_stopping"]) == (16, 2, 8)
    assert plan["chosen_by_rule"] == ["factors", "early_stopping"]
    events = EventAccumulator(str(logs))
    events.Reload()
    tags = set(events.Tags()["scalars"])
    assert {"gmf/loss", "mlp/validation_hr10", "neumf/lr"} <= tags
    history = (tmp_path / "run" / "history" / "gmf.csv").read_text().splitlines()[1:]
    logged = [(e.step, e.value) for e in events.Scalars("gmf/validation_hr10")]
    assert [s for s, _ in logged] == [1, 2]
    assert [v for _, v in logged] == pytest.approx([float(r.split(",")[2]) for r in history])


def _interrupt_at_neumf(monkeypatch, tmp_path: Path) -> Any:  # type: ignore[no-untyped-def]
    """Make the pipeline's NeuMF stage raise KeyboardInterrupt (GMF and MLP train as usual);
    the synthetic set is cached under ``tmp_path``. Returns the real ``train``."""
    import ncf.pipeline as pipeline_mod
    from ncf.models import NeuMF

    real_train = pipeline_mod.train

    def train_until_neumf(model, *a, **kw):  # type: ignore[no-untyped-def]
        if isinstance(model, NeuMF):
            raise KeyboardInterrupt
        return real_train(model, *a, **kw)

    monkeypatch.setattr(pipeline_mod, "train", train_until_neumf)
    monkeypatch.setenv("NCF_CACHE", str(tmp_path / "cache"))
    return real_train
