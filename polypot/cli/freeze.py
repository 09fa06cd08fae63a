"""``polypot freeze [-c CKPT] -o OUT``: a checkpoint to any backend's model file."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any


def freeze_checkpoint(checkpoint: str | Path, output: str | Path) -> None:
    """Write ``output`` (its suffix picks the format) from a training checkpoint."""
    from ..backend.registry import backend_for_file, freeze
    from ..io.model_file import save_model
    from ..train.checkpoint import model_from_checkpoint

    model, params, meta = model_from_checkpoint(checkpoint)
    script = meta["config"]["model"]
    if backend_for_file(output) == "numpy":
        save_model(output, model, params, model_def_script=script,
                   min_nbor_dist=meta.get("min_nbor_dist"))
    else:
        freeze(output, model, params, model_def_script=script)


def run(args: argparse.Namespace) -> int:
    from ..train.checkpoint import latest_checkpoint

    ckpt = Path(args.checkpoint) if args.checkpoint else latest_checkpoint(".")
    if ckpt.is_dir():
        ckpt = latest_checkpoint(ckpt)
    freeze_checkpoint(ckpt, args.output)
    print(f"{ckpt} -> {args.output}")
    return 0


def add_parser(sub: Any) -> None:
    p = sub.add_parser("freeze", help="write a model file (any backend) from a checkpoint")
    p.add_argument("-c", "--checkpoint", default=None,
                   help="checkpoint file or folder (default: the latest in the current folder)")
    p.add_argument("-o", "--output", default="frozen_model.pth",
                   help="model file; the suffix chooses the backend (.pth .hlo .savedmodel "
                        ".json .dp .yaml)")
    p.set_defaults(func=run)
