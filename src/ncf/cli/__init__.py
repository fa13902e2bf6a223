"""The `ncf` command line: configuration is parsed here and nowhere below it."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from ncf.errors import NcfError


def build_parser() -> argparse.ArgumentParser:
    """The full `ncf` argument parser (sub-commands register themselves)."""
    from ncf.cli import data as data_cmd
    from ncf.cli import experiment as experiment_cmd
    from ncf.cli import train as train_cmd

    parser = argparse.ArgumentParser(
        prog="ncf", description="Neural Collaborative Filtering: data, training, evaluation."
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    data_cmd.register(sub)
    train_cmd.register(sub)
    experiment_cmd.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `ncf` console script; bad input exits 2 with one line on stderr."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.run(args) or 0)
    except NcfError as exc:
        print(f"ncf: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # missing files, full disks, permissions
        name = f" {exc.filename}" if getattr(exc, "filename", None) else ""
        print(f"ncf: error:{name}: {exc.strerror or exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("ncf: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
