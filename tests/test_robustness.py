"""Nothing lost, nothing crashes: races, interruptions, leftovers, tampered files, messages.

Races are made deterministic with :data:`ncf.outputs.HOOK`: a command is stopped at the
point where it replaces or removes a folder, and the competing action happens there.
Kills, memory limits and closed pipes run in real subprocesses (bounded in time).
"""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest

import ncf.outputs as outputs
from ncf.cli import main

FAST = ["--epochs", "1", "--factors", "8", "--batch-size", "512", "--quiet"]
TIMEOUT = 120  # seconds, for every subprocess


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def _one_line(err: str) -> None:
    assert err.count("\n") == 1 and err.startswith("ncf: error: "), err
    assert "Traceback" not in err


@pytest.fixture(scope="module")
def synth(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small synthetic Netflix set (638 customers, 251 movies)."""
    out = tmp_path_factory.mktemp("data") / "S"
    assert main(["data", "synth", "--ratings", "20k", "--out", str(out)]) == 0
    return out


@pytest.fixture
def hook(monkeypatch: pytest.MonkeyPatch) -> Callable[[str, Callable[[Path], None]], None]:
    """Run an action when a command reaches a checkpoint (once)."""

    def set_hook(point: str, action: Callable[[Path], None]) -> None:
        done: list[str] = []

        def reached(name: str, path: Path) -> None:
            if name == point and not done:
                done.append(name)
                action(path)

        monkeypatch.setattr(outputs, "HOOK", reached)

    return set_hook


def _ncf(*argv: object, hook: str = "", **kw: object) -> subprocess.CompletedProcess[str]:
    """``ncf ARGV`` in a fresh Python process; ``hook``: code run at each checkpoint, with
    ``point`` and ``path`` bound."""
    code = "import os, signal, sys\nimport ncf.outputs as o\n"
    if hook:
        code += "def h(point, path):\n    " + hook + "\no.HOOK = h\n"
    code += "from ncf.cli import console\nconsole()\n"
    return subprocess.run([sys.executable, "-c", code, *map(str, argv)], capture_output=True,
                          text=True, timeout=TIMEOUT, **kw)  # type: ignore[call-overload]


def _hidden(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


# ------------------------------------------------------------------ races on one output
def test_a_users_files_written_during_prepare_are_never_replaced(
        synth: Path, tmp_path: Path, hook, capsys) -> None:  # type: ignore[no-untyped-def]
    out = tmp_path / "X"

    def user_writes(path: Path) -> None:
        path.mkdir()
        (path / "notes.txt").write_text("mine")

    hook("replace", user_writes)
    code, _, err = _run(capsys, "data", "prepare", synth, "--out", out, "--negatives", "20")
    assert code == 2
    _one_line(err)
    assert "not replacing it" in err and "notes.txt" in err
    assert os.listdir(out) == ["notes.txt"] and (out / "notes.txt").read_text() == "mine"
    assert _hidden(tmp_path) == []  # its temporary folder and lock are gone


def test_a_run_directory_made_during_prepare_is_never_replaced(
        synth: Path, tmp_path: Path, hook, capsys) -> None:  # type: ignore[no-untyped-def]
    from ncf.runs import new_run_dir, write_json

    out = tmp_path / "X"
    # something that is not a prepared folder appears (a run of another ncf, not locked)
    hook("replace", lambda path: write_json(new_run_dir(path) / "config.json", {"a": 1}))
    code, _, err = _run(capsys, "data", "prepare", synth, "--out", out)
    assert code == 2 and "not replacing it" in err
    assert sorted(os.listdir(out)) == ["config.json", "history", "models", "plots"]
    assert _hidden(tmp_path) == []


def test_a_second_ncf_process_on_the_same_output_is_refused(
        synth: Path, tmp_path: Path, hook, capsys) -> None:  # type: ignore[no-untyped-def]
    out = tmp_path / "X"
    trains: list[subprocess.CompletedProcess[str]] = []
    # `ncf train --out X` starts while `ncf data prepare --out X` is about to swap X in
    hook("replace", lambda path: trains.append(
        _ncf("train", "--data", synth, "--out", out, *FAST)))
    code, printed, err = _run(capsys, "data", "prepare", synth, "--out", out)
    assert code == 0 and err == "" and "wrote" in printed
    train = trains[0]
    assert train.returncode == 2, train.stderr
    _one_line(train.stderr)
    assert f"{out}: another ncf process (pid {os.getpid()}) is writing it" in train.stderr
    assert (out / "meta.json").is_file() and not (out / "config.json").exists()
    assert _hidden(tmp_path) == []


def test_a_killed_holder_never_blocks_the_output(synth: Path, tmp_path: Path,
                                                 capsys) -> None:  # type: ignore[no-untyped-def]
    out = tmp_path / "X"
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, ncf.outputs as o\no.hold_output(sys.argv[1])\n"
         "print('held', flush=True)\nsys.stdin.read()", str(out)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "held\n"
        code, _, err = _run(capsys, "data", "prepare", synth, "--out", out)
        assert code == 2 and f"another ncf process (pid {holder.pid})" in err
        _one_line(err)
        assert not out.exists()
    finally:
        holder.kill()
        holder.wait(TIMEOUT)
    assert _hidden(tmp_path) == [".X.ncf-lock"]  # left by the killed holder, unlocked
    code, _, err = _run(capsys, "data", "prepare", synth, "--out", out)
    assert code == 0 and err == "" and _hidden(tmp_path) == []


def test_the_lock_is_taken_again_when_its_file_was_replaced(tmp_path: Path) -> None:
    out = tmp_path / "X"
    with outputs.output_lock(out):
        assert outputs.lock_path(out).read_text() == f"{os.getpid()}\n"
    assert not outputs.lock_path(out).exists()
    with outputs.output_lock(out), outputs.output_lock(out):  # re-entrant in a process
        pass
    assert not outputs.lock_path(out).exists() and not outputs._HELD


# ------------------------------------------------------------------ interrupted runs
@pytest.mark.parametrize("made_by_user", [True, False])
def test_sigterm_during_training_removes_only_what_the_run_made(
        synth: Path, tmp_path: Path, monkeypatch, capsys, made_by_user: bool) -> None:  # type: ignore[no-untyped-def]
    import ncf.pipeline as pipeline_mod

    run = tmp_path / "R"
    if made_by_user:
        run.mkdir()

    def terminated_in_gmf(*a, **kw):  # type: ignore[no-untyped-def]
        assert (run / "config.json").is_file()  # the run had written its files
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(5)  # the signal arrives first

    monkeypatch.setattr(pipeline_mod, "train", terminated_in_gmf)
    code, _, err = _run(capsys, "train", "--data", synth, "--out", run, *FAST)
    assert code == 130 and err == "ncf: interrupted\n"
    assert (os.listdir(run) == []) if made_by_user else not run.exists()


def test_a_file_put_in_the_run_directory_survives_a_failed_run(
        synth: Path, tmp_path: Path, monkeypatch, capsys) -> None:  # type: ignore[no-untyped-def]
    import ncf.pipeline as pipeline_mod

    run = tmp_path / "R"

    def user_writes_then_ctrl_c(*a, **kw):  # type: ignore[no-untyped-def]
        (run / "models" / "notes.txt").write_text("mine")
        raise KeyboardInterrupt

    monkeypatch.setattr(pipeline_mod, "train", user_writes_then_ctrl_c)
    assert _run(capsys, "train", "--data", synth, "--out", run, *FAST)[0] == 130
    assert [str(p.relative_to(run)) for p in run.rglob("*")] == ["models", "models/notes.txt"]


def test_sighup_is_handled_like_sigterm(synth: Path, tmp_path: Path, hook,
                                        capsys) -> None:  # type: ignore[no-untyped-def]
    before = signal.getsignal(signal.SIGHUP)

    def hang_up(path: Path) -> None:
        os.kill(os.getpid(), signal.SIGHUP)
        time.sleep(5)

    hook("replace", hang_up)
    code, _, err = _run(capsys, "data", "prepare", synth, "--out", tmp_path / "X")
    assert code == 130 and err == "ncf: interrupted\n"
    assert os.listdir(tmp_path) == []
    assert signal.getsignal(signal.SIGHUP) == before


KILL = "os.kill(os.getpid(), signal.SIGKILL) if point == 'replace' else None"


def test_sigkill_leftovers_of_prepare_are_reclaimed_by_the_next_run(
        synth: Path, tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    killed = _ncf("data", "prepare", synth, "--out", tmp_path / "X", hook=KILL)
    assert killed.returncode == -signal.SIGKILL
    left = _hidden(tmp_path)
    assert [n.split("-")[0] for n in left] == [".X.ncf", ".X.tmp"]  # the lock, the new folder
    tmp = tmp_path / left[1]
    assert (tmp / "meta.json").is_file()
    # a leftover of the same name holding a file of the user's is named, never removed
    foreign = tmp_path / ".X.tmp-mine"
    foreign.mkdir()
    (foreign / "thesis.tex").write_text("precious")
    code, _, err = _run(capsys, "data", "prepare", synth, "--out", tmp_path / "X")
    assert code == 0
    assert f"{foreign}: a temporary folder left by an interrupted run" in err
    assert f"removed 1 temporary folder(s) left by an interrupted run in {tmp_path}" in err
    assert _hidden(tmp_path) == [".X.tmp-mine"] and (foreign / "thesis.tex").is_file()


def test_sigkill_leftovers_of_synth_are_reclaimed_by_the_next_run(
        tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    out = tmp_path / "S"
    killed = _ncf("data", "synth", "--ratings", "20k", "--out", out, hook=KILL)
    assert killed.returncode == -signal.SIGKILL
    assert [n.split("-")[0] for n in _hidden(out)] == [".synth"]
    code, printed, err = _run(capsys, "data", "synth", "--ratings", "20k", "--out", out)
    assert code == 0 and "removed 1 temporary folder(s)" in err
    assert _hidden(out) == [] and (out / "synth.json").is_file()
    assert _hidden(tmp_path) == []


class _ClosedPipe(io.StringIO):
    """Standard output whose reader went away after ``lines`` lines (``ncf ... | head``)."""

    def __init__(self, lines: int) -> None:
        super().__init__()
        self.left = lines

    def write(self, text: str) -> int:
        self.left -= text.count("\n")
        if self.left < 0:
            raise BrokenPipeError(32, "Broken pipe")
        return super().write(text)


def test_a_closed_stdout_never_costs_a_run(synth: Path, tmp_path: Path, monkeypatch,
                                           capsys) -> None:  # type: ignore[no-untyped-def]
    run = tmp_path / "R"
    monkeypatch.setattr(sys, "stdout", _ClosedPipe(lines=3))
    code = main(["train", "--data", str(synth), "--out", str(run), "--epochs", "1",
                 "--factors", "8", "--batch-size", "512"])
    err = capsys.readouterr().err
    assert code == 0, err
    assert err == "ncf: standard output failed (Broken pipe); going on without it\n"
    assert json.loads((run / "metrics.json").read_text()).keys() == {"gmf", "mlp", "neumf"}
    assert sorted(p.name for p in (run / "models").iterdir()) == [
        "gmf.npz", "mlp.npz", "neumf.npz"]


def test_a_real_closed_pipe_and_closed_descriptors(tmp_path: Path) -> None:
    read, write = os.pipe()
    os.close(read)  # the reader is gone before ncf prints
    try:
        done = subprocess.run(
            [sys.executable, "-c", "from ncf.cli import console; console()", "data", "synth",
             "--ratings", "20k", "--out", str(tmp_path / "S")],
            stdout=write, stderr=subprocess.PIPE, text=True, timeout=TIMEOUT)
    finally:
        os.close(write)
    assert done.returncode == 0, done.stderr
    assert done.stderr == "ncf: standard output failed (Broken pipe); going on without it\n"
    assert (tmp_path / "S" / "synth.json").is_file()
    # stdout and stderr closed: the run completes, and no file takes their place
    done = subprocess.run(
        [sys.executable, "-c", "from ncf.cli import console; console()", "data", "synth",
         "--ratings", "20k", "--out", str(tmp_path / "T")],
        stdout=subprocess.DEVNULL, timeout=TIMEOUT, close_fds=True,
        preexec_fn=lambda: (os.close(1), os.close(2)))
    assert done.returncode == 0
    assert sorted(os.listdir(tmp_path / "T")) == sorted(os.listdir(tmp_path / "S"))


def test_low_memory_is_one_line_and_leaves_nothing(tmp_path: Path) -> None:
    """A memory limit a little above what the interpreter holds after its imports."""
    code = (
        "import resource, sys\n"
        "import numpy, pyarrow, pyarrow.parquet, pyarrow.csv, ncf.cli.data, ncf.synth\n"
        "size = int(next(ln for ln in open('/proc/self/status') if ln.startswith('VmSize'))"
        ".split()[1]) * 1024\n"
        "resource.setrlimit(resource.RLIMIT_AS, (size + (64 << 20), size + (64 << 20)))\n"
        "from ncf.cli import console\nconsole()\n")
    if not Path("/proc/self/status").is_file():
        pytest.skip("no /proc")
    for argv in (["data", "synth", "--ratings", "3M", "--out", tmp_path / "S"],
                 ["data", "prepare", tmp_path / "S", "--out", tmp_path / "P"]):
        if argv[1] == "prepare":
            assert main(["data", "synth", "--ratings", "1M", "--out", str(tmp_path / "S")]) == 0
        done = subprocess.run([sys.executable, "-c", code, *map(str, argv)],
                              capture_output=True, text=True, timeout=TIMEOUT)
        assert done.returncode == 2, (argv, done.returncode, done.stderr)
        assert done.stderr.count("\n") == 1, done.stderr
        assert done.stderr.startswith("ncf: error: not enough memory (")
        assert not (tmp_path / "P").exists() and _hidden(tmp_path) == []
    assert sorted(os.listdir(tmp_path)) == ["S"]


# ------------------------------------------------------------------ outputs and inputs
def test_a_symlinked_output_is_written_in_place(synth: Path, tmp_path: Path,
                                                capsys) -> None:  # type: ignore[no-untyped-def]
    real, link = tmp_path / "real", tmp_path / "link"
    assert _run(capsys, "data", "prepare", synth, "--out", real, "--negatives", "10")[0] == 0
    link.symlink_to(real)
    code, printed, err = _run(capsys, "data", "prepare", synth, "--out", link)
    assert code == 0 and err == "" and f"wrote      {real} " in printed
    assert link.is_symlink() and json.loads((real / "meta.json").read_text())[
        "counts"]["negatives"] == 99
    assert sorted(os.listdir(tmp_path)) == ["link", "real"]
    (tmp_path / "dangling").symlink_to(tmp_path / "nowhere")
    for argv in (["data", "prepare", synth, "--out", tmp_path / "dangling"],
                 ["data", "synth", "--ratings", "1k", "--out", tmp_path / "dangling"]):
        code, _, err = _run(capsys, *argv)
        assert code == 2 and "a symbolic link to" in err and "which does not exist" in err
        _one_line(err)
    assert not (tmp_path / "nowhere").exists()


def test_a_fifo_in_a_data_folder_is_refused_not_waited_on(synth: Path, tmp_path: Path,
                                                          capsys) -> None:  # type: ignore[no-untyped-def]
    data = tmp_path / "d"
    data.mkdir()
    (data / "combined_data_1.txt").write_bytes((synth / "combined_data_1.txt").read_bytes())
    os.mkfifo(data / "combined_data_2.txt")

    def too_long(*a: object) -> None:
        raise TimeoutError("waited on the FIFO")

    previous = signal.signal(signal.SIGALRM, too_long)
    signal.alarm(30)
    try:
        code, _, err = _run(capsys, "data", "inspect", data)
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
    assert code == 2 and f"{data / 'combined_data_2.txt'}: not a regular file" in err
    _one_line(err)


def test_data_size_errors_name_the_file(synth: Path, tmp_path: Path,
                                        capsys) -> None:  # type: ignore[no-untyped-def]
    for fmt in ([], ["--min-user-ratings", "1"]):  # streamed, and in memory
        code, _, err = _run(capsys, "data", "prepare", synth, "--out", tmp_path / "X",
                            "--negatives", "2000", *fmt)
        assert code == 2 and err.startswith(f"ncf: error: {synth}: user ")
        assert "too few for 2000 evaluation candidates" in err
        _one_line(err)
    assert not (tmp_path / "X").exists() and _hidden(tmp_path) == []


def test_a_folder_without_candidates_says_so(synth: Path, tmp_path: Path,
                                             capsys) -> None:  # type: ignore[no-untyped-def]
    prep = tmp_path / "P"
    assert _run(capsys, "data", "prepare", synth, "--out", prep, "--negatives", "0")[0] == 0
    code, _, err = _run(capsys, "train", "--data", prep, "--out", tmp_path / "R", *FAST)
    assert code == 2 and "no candidates for its validation items" in err
    assert "--negatives 0" in err and "no validation items" not in err
    assert not (tmp_path / "R").exists()


def test_a_full_disk_during_training_names_the_file(synth: Path, tmp_path: Path, monkeypatch,
                                                    capsys) -> None:  # type: ignore[no-untyped-def]
    savez = np.savez

    def file_too_large(file, *a, **kw):  # type: ignore[no-untyped-def]
        if isinstance(file, io.BytesIO) or ".gmf.npz." not in file.name:  # catalog, seen items
            return savez(file, *a, **kw)
        raise OSError(27, "File too large")  # GMF's first checkpoint, written to its file

    monkeypatch.setattr(np, "savez", file_too_large)
    run = tmp_path / "R"
    code, _, err = _run(capsys, "train", "--data", synth, "--out", run, *FAST)
    assert code == 2
    assert err == f"ncf: error: {run / 'checkpoints' / 'gmf.npz'}: File too large\n"
    assert not run.exists()  # nothing was saved: the run is undone


def test_control_characters_in_paths_are_escaped(tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    weird = tmp_path / "a\nb\x1b[31m"
    code, _, err = _run(capsys, "data", "inspect", weird)
    assert code == 2
    _one_line(err)
    assert "a\\nb\\x1b[31m: no such file or directory" in err and "\x1b" not in err


def test_an_unforeseen_error_is_one_line_with_a_hint(monkeypatch, capsys) -> None:  # type: ignore[no-untyped-def]
    import ncf.cli.data as data_cmd

    def bug(args):  # type: ignore[no-untyped-def]
        return {}["missing key"]

    monkeypatch.setattr(data_cmd, "cmd_inspect", bug)
    monkeypatch.delenv("NCF_DEBUG", raising=False)
    code, _, err = _run(capsys, "data", "inspect", "x")
    assert code == 1
    _one_line(err)
    assert err.startswith("ncf: error: unexpected KeyError at test_robustness.py:")
    assert "'missing key'" in err and "NCF_DEBUG=1" in err
    monkeypatch.setenv("NCF_DEBUG", "1")
    with pytest.raises(KeyError):
        main(["data", "inspect", "x"])


@pytest.fixture
def no_hook() -> Iterator[None]:
    yield
    assert outputs.HOOK is None and not outputs._HELD  # every lock released


def test_locks_are_released_by_every_command(synth: Path, tmp_path: Path, no_hook,
                                             capsys) -> None:  # type: ignore[no-untyped-def]
    for argv in (["data", "prepare", synth, "--out", tmp_path / "a" / "b" / "P"],
                 ["data", "prepare", tmp_path / "nope", "--out", tmp_path / "c" / "P"],
                 ["train", "--data", tmp_path / "nope", "--out", tmp_path / "d" / "R"]):
        _run(capsys, *argv)
    # the prepared folder's parents stay; those made for failed commands are removed again
    assert sorted(os.listdir(tmp_path)) == ["a"] and _hidden(tmp_path / "a" / "b") == []


def test_shared_caches_wait_for_the_other_process(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    out = tmp_path / "ml-100k"
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, ncf.outputs as o\no.hold_output(sys.argv[1])\n"
         "print('held', flush=True)\nsys.stdin.readline()", str(out)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    notes: list[str] = []

    def waiting(text: str) -> None:  # the holder lets go only once we wait for it
        notes.append(text)
        assert holder.stdin is not None
        holder.stdin.write("done\n")
        holder.stdin.flush()

    monkeypatch.setattr(outputs, "notice", waiting)
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "held\n"
        with outputs.output_lock(out, wait=True, what="data set"):
            assert holder.wait(TIMEOUT) == 0
    finally:
        holder.kill()
        holder.wait(TIMEOUT)
    assert notes == [f"waiting for another ncf process (pid {holder.pid}) writing the data set "
                     f"{out}"]
    assert _hidden(tmp_path) == []


def test_experiment_leftovers_and_a_broken_run_configuration(
        synth: Path, tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    from ncf.experiments.run import ExperimentOptions, run_experiment
    from ncf.sources import resolve_training_data

    data = resolve_training_data(str(synth))
    out = tmp_path / "report"
    options = ExperimentOptions(seeds=(0,), factors=(8,), models=("itempop",))
    run_experiment("factors", data, options, out, plots=False)
    for folder in (out, out / "cells"):  # atomic writes killed half-way
        (folder / ".results.csv.abc123.tmp").write_text("half")
    run_experiment("factors", data, options, out, plots=False)
    assert not list(out.rglob("*.tmp")) and (out / "report.md").is_file()
    run = tmp_path / "run"  # a run directory whose configuration was edited
    (run / "models").mkdir(parents=True)
    (run / "models" / "gmf.npz").write_bytes(b"")
    (run / "config.json").write_text(json.dumps({"data": {"path": str(synth), "seed": "0"}}))
    code, _, err = _run(capsys, "evaluate", run)
    assert code == 2 and f"{run / 'config.json'}: data.seed is '0'" in err
    _one_line(err)


def test_no_terminal_control_reaches_the_terminal(monkeypatch, capsys) -> None:  # type: ignore[no-untyped-def]
    import ncf.cli.data as data_cmd

    def prints_a_title(args):  # type: ignore[no-untyped-def]
        print("title\x1b]0;pwned\x07 \x9b2J\tok")  # as if read from a file, not escaped
        print("progress\r", end="", file=sys.stderr)
        return 0

    monkeypatch.setattr(data_cmd, "cmd_inspect", prints_a_title)
    code, out, err = _run(capsys, "data", "inspect", "x")
    assert code == 0 and out == "title\\x1b]0;pwned\\x07 \\x9b2J\tok\n" and err == "progress\r"
