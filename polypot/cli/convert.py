"""``polypot convert-backend IN OUT``: any model file to any other, through the neutral dict."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from ..backend.registry import backend_for_file, freeze, load_frozen


def read_neutral(path: str | Path) -> dict:
    """The neutral model dictionary of any model file."""
    if backend_for_file(path) == "numpy":
        from ..io.neutral import load_neutral

        return load_neutral(path)
    return load_frozen(path).neutral_dict()


def convert(src: str | Path, dst: str | Path) -> None:
    """Convert model file ``src`` to ``dst``; the suffixes choose the formats."""
    from ..io.model_file import model_from_dict
    from ..io.neutral import save_neutral

    if Path(src).resolve() == Path(dst).resolve():
        raise ValueError(f"input and output are the same file: {src}")
    data = read_neutral(src)
    if backend_for_file(dst) == "numpy":
        save_neutral(dst, data)
        return
    model, params = model_from_dict(data, str(src))
    freeze(dst, model, params, model_def_script=data.get("model_def_script"))


def run(args: argparse.Namespace) -> int:
    convert(args.input, args.output)
    print(f"{args.input} ({backend_for_file(args.input)}) -> {args.output} "
          f"({backend_for_file(args.output)})")
    return 0


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "convert-backend",
        help="convert a model between formats: .dp .yaml .pth .hlo .savedmodel .json",
    )
    p.add_argument("input", help="model file to read")
    p.add_argument("output", help="model file to write; its suffix chooses the backend")
    p.set_defaults(func=run)
