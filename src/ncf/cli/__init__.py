"""The `ncf` command line: configuration is parsed here and nowhere below it."""

from __future__ import annotations

import argparse
import math
import signal
import sys
from collections.abc import Callable, Sequence
from typing import NoReturn

from ncf.errors import NcfError

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

    parser = _Parser(
        prog="ncf", description="Neural Collaborative Filtering: data, training, evaluation."
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    data_cmd.register(sub)
    train_cmd.register(sub)
    experiment_cmd.register(sub)
    serve_cmd.register(sub)
    return parser


def _terminated(signum: int, frame: object) -> None:
    raise KeyboardInterrupt  # SIGTERM cleans up as Ctrl-C does: temporary files are removed


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `ncf` console script; bad input exits 2 with one line on stderr."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        previous = signal.signal(signal.SIGTERM, _terminated)
    except ValueError:  # not the main thread: leave signals alone
        previous = None
    try:
        return int(args.run(args) or 0)
    except NcfError as exc:
        print(f"ncf: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # missing files, full disks, permissions
        name = f"{exc.filename}: " if getattr(exc, "filename", None) else ""
        print(f"ncf: error: {name}{exc.strerror or exc}", file=sys.stderr)
        return 2
    except (MemoryError, RuntimeError) as exc:
        # numpy's MemoryError, torch's allocator RuntimeError; any other RuntimeError is a bug
        if not isinstance(exc, MemoryError) and "can't allocate memory" not in str(exc):
            raise
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        print(f"ncf: error: not enough memory ({first}): use smaller data or options "
              "(--batch-size, --negatives, --factors)", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("ncf: interrupted", file=sys.stderr)
        return 130
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
