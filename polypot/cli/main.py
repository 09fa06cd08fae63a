"""The ``polypot`` command line: one sub-command per module in this folder."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from .. import __version__
from ..errors import ModelFormatError
from . import (
    change_bias,
    compress,
    convert,
    demo,
    freeze,
    ipi,
    lammps,
    model_devi,
    neighbor_stat,
    show,
    test,
    train,
)

COMMANDS = (train, freeze, test, change_bias, neighbor_stat, convert, show, demo, model_devi, ipi,
            lammps, compress)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="polypot",
        description="Deep Potential models on every deep-learning backend "
        "(NumPy, PyTorch, JAX, TensorFlow, Paddle), compatible with DeePMD-kit v3 files.",
    )
    parser.add_argument("--version", action="version", version=f"polypot {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module in COMMANDS:
        module.add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 1
    try:
        return int(args.func(args) or 0)
    except (ModelFormatError, FileNotFoundError, ValueError, ImportError) as err:
        print(f"polypot {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
