"""The `ncf` command line: configuration is parsed here and nowhere below it."""

from __future__ import annotations

import argparse
import errno
import io
import math
import os
import re
import signal
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NoReturn, TextIO

from ncf.errors import NcfError, printable
from ncf.outputs import release_all

#: Seeds are drawn from 0..MAX_SEED (what every generator we seed accepts).
MAX_SEED = 2**32 - 1


def int_in(low: int, high: int | None = None, what: str = "an integer") -> Callable[[str], int]:
    """An argparse type: an integer in ``low..high`` (no upper bound when ``high`` is None)."""
    bound = f">= {low}" if high is None else f"in {low}..{high}"

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = low - 1
        if value < low or (high is not None and value > high):
            raise argparse.ArgumentTypeError(f"expected {what} {bound}, got {text!r}")
        return value

    return parse


def finite_float(text: str) -> float:
    """An argparse type: a finite number."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
    return value


positive_int = int_in(1)
non_negative_int = int_in(0)
seed_arg = int_in(0, MAX_SEED, "a seed, an integer")


class _Parser(argparse.ArgumentParser):
    """An argument parser whose errors are one line (with a pointer to ``--help``)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    """The full `ncf` argument parser (sub-commands register themselves)."""
    from ncf.cli import data as data_cmd
    from ncf.cli import experiment as experiment_cmd
    from ncf.cli import serve as serve_cmd
    from ncf.cli import train as train_cmd
    from ncf.cli import tune as tune_cmd

    parser = _Parser(
        prog="ncf", description="Neural Collaborative Filtering: data, training, evaluation."
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    data_cmd.register(sub)
    train_cmd.register(sub)
    experiment_cmd.register(sub)
    serve_cmd.register(sub)
    tune_cmd.register(sub)
    return parser


def _terminated(signum: int, frame: object) -> None:
    raise KeyboardInterrupt  # SIGTERM and SIGHUP clean up as Ctrl-C does


class _Guarded(io.TextIOBase):
    """Standard output or error that never fails the command: once writing to it fails (a
    closed pipe as in ``ncf train | head -3``, a full disk), the rest is dropped and the
    command goes on (its results are in files, not on the terminal)."""

    def __init__(self, stream: TextIO | None, name: str) -> None:
        # ``None``: the descriptor was closed when Python started (``ncf ... >&-``)
        self.stream, self.name, self.lost = stream or io.StringIO(), name, stream is None

    def _lose(self, exc: OSError) -> None:
        self.lost = True
        try:  # later flushes (also at exit) must not fail either
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, self.stream.fileno())
            os.close(devnull)
        except (OSError, ValueError, io.UnsupportedOperation):
            pass
        if self.name == "stdout" and not _STDERR.lost:
            _STDERR.write(f"ncf: standard output failed ({exc.strerror or exc}); going on "
                          "without it\n")

    def write(self, text: str) -> int:
        if not self.lost:
            try:
                self.stream.write(_TERMINAL.sub(_escaped, text))
            except OSError as exc:
                self._lose(exc)
        return len(text)

    def flush(self) -> None:
        if not self.lost:
            try:
                self.stream.flush()
            except OSError as exc:
                self._lose(exc)

    def isatty(self) -> bool:
        return not self.lost and self.stream.isatty()

    def fileno(self) -> int:
        return self.stream.fileno()  # io.UnsupportedOperation for a closed descriptor

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return getattr(self.stream, "encoding", "utf-8")


_STDERR = _Guarded(sys.stderr, "stderr")
#: Control characters ncf never prints on purpose (it prints tabs, line ends and ``\r``
#: only): escaped on the way out, so that no name or title read from a file can drive the
#: terminal, whichever message carries it.
_TERMINAL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")


def _escaped(match: re.Match[str]) -> str:
    return repr(match.group())[1:-1]


def _standard_files() -> None:
    """Give a closed standard file descriptor (``ncf ... >&-``) /dev/null: otherwise the
    next file ncf opens gets its number, and output meant for the terminal lands in it."""
    for fd in (0, 1, 2):
        try:
            os.fstat(fd)
        except OSError:
            try:
                os.open(os.devnull, os.O_RDWR)  # the lowest free number: ``fd``
            except OSError:
                return


def _error(text: str) -> None:
    print(f"ncf: error: {printable(text)}", file=sys.stderr, flush=True)


def _handle_signals() -> list[tuple[int, Any]]:
    previous = []
    for name in ("SIGTERM", "SIGHUP"):
        number = getattr(signal, name, None)
        if number is None:
            continue
        try:
            previous.append((number, signal.signal(number, _terminated)))
        except (ValueError, OSError):  # not the main thread: leave signals alone
            pass
    return previous


def _run(argv: Sequence[str] | None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    args.argv = list(argv) if argv is not None else sys.argv[1:]  # what a launcher re-runs
    return int(args.run(args) or 0)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `ncf` console script.

    Bad input exits 2 with one line on stderr; Ctrl-C, SIGTERM and SIGHUP exit 130 after
    removing temporary files; anything unforeseen exits 1 with one line (``NCF_DEBUG=1``
    shows the traceback instead).
    """
    global _STDERR, _OUT_OF_MEMORY
    _OUT_OF_MEMORY = False
    _standard_files()
    saved = sys.stdout, sys.stderr
    _STDERR = _Guarded(sys.stderr, "stderr")
    sys.stdout, sys.stderr = _Guarded(sys.stdout, "stdout"), _STDERR
    previous = _handle_signals()
    try:
        return _run(argv)
    except NcfError as exc:
        _error(str(exc))
        return 2
    except OSError as exc:  # missing files, full disks, permissions
        if exc.errno == errno.ENOMEM:
            return _no_memory(str(exc))
        name = f"{exc.filename}: " if getattr(exc, "filename", None) else ""
        _error(f"{name}{exc.strerror or exc}")
        return 2
    except (MemoryError, RuntimeError, ImportError) as exc:
        # numpy's MemoryError, torch's allocator RuntimeError, threads or libraries refused
        # under a memory limit; any other is a bug (the last resort below)
        text = str(exc)
        if not isinstance(exc, MemoryError) and not any(m in text for m in _NO_MEMORY):
            return _unforeseen(exc)
        return _no_memory(text or type(exc).__name__)
    except KeyboardInterrupt:
        print("ncf: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # the last resort: one line, never a traceback
        return _unforeseen(exc)
    finally:
        release_all()
        for number, handler in previous:
            signal.signal(number, handler)
        sys.stdout, sys.stderr = saved


#: How running out of memory reads in a RuntimeError (torch's allocator, Python's threads)
#: or an ImportError (a library that cannot be mapped into memory).
_NO_MEMORY = ("can't allocate memory", "can't start new thread", "out of memory",
              "failed to map segment", "cannot allocate memory")
_OUT_OF_MEMORY = False


def _no_memory(text: str) -> int:
    global _OUT_OF_MEMORY
    _OUT_OF_MEMORY = True
    lines = text.strip().splitlines() or ["MemoryError"]
    first = next((ln.strip() for ln in lines if any(m in ln for m in _NO_MEMORY)), lines[0])
    _error(f"not enough memory ({first}): use smaller data or options "
           "(--batch-size, --negatives, --factors)")
    return 2


def console() -> None:
    """The `ncf` console script: :func:`main`, then exit with its status.

    After running out of memory the process ends at once (its files are closed and
    flushed already): tearing down an interpreter whose libraries failed to start their
    threads has been seen to crash after the error line.
    """
    code = main()
    if _OUT_OF_MEMORY:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (OSError, ValueError, AttributeError):
                pass
        os._exit(code)
    sys.exit(code)


def _unforeseen(exc: BaseException) -> int:
    if os.environ.get("NCF_DEBUG", "") not in ("", "0"):
        raise exc
    where = ""
    tb = exc.__traceback__
    while tb is not None:
        where = f" at {Path(tb.tb_frame.f_code.co_filename).name}:{tb.tb_lineno}"
        tb = tb.tb_next
    first = (str(exc).strip().splitlines() or [""])[0]
    _error(f"unexpected {type(exc).__name__}{where}: {first} (a bug in ncf; run again with "
           "NCF_DEBUG=1 to see the traceback, and report it)")
    return 1


if __name__ == "__main__":  # pragma: no cover
    console()
