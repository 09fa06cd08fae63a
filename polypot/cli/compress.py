"""``polypot compress -i MODEL -o OUT [-s STEP -e EXTRAPOLATE -f FREQ -t INPUT]``.

Tabulates the descriptor's embedding net (``dp compress``; see :mod:`polypot.model.compress`)
for ``se_e2_a``, ``se_atten`` / ``se_atten_v2`` with ``attn_layer`` 0 and the repinit block
of ``dpa2``. Any model file in,
any model file out (the suffixes choose the formats). The table's upper bound needs the smallest
interatomic distance of the training data: taken from the model file (``min_nbor_dist``, written
by ``polypot freeze``), else from the training data of ``-t input.json``, else from
``--min-nbor-dist``.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import Any


def min_nbor_dist_from_script(script: str | Path, rcut: float, type_map: list[str]) -> float:
    """Smallest interatomic distance (Å) in the training systems named by ``script``
    (``training.training_data.systems``, as DeePMD-kit's input.json)."""
    from .neighbor_stat import neighbor_stat

    with open(script) as fh:
        cfg = json.load(fh)
    training = cfg.get("training", {})
    systems = training.get("training_data", {}).get("systems", training.get("systems"))
    if not systems:
        raise ValueError(f"{script}: no training.training_data.systems to take statistics from")
    dist, _ = neighbor_stat(systems, rcut, type_map)
    return dist


def compress_file(src: str | Path, dst: str | Path, step: float = 0.01,
                  extrapolate: float = 5.0, frequency: int = -1,
                  training_script: str | Path | None = None,
                  min_nbor_dist: float | None = None) -> float:
    """Write the compressed model ``dst`` from ``src``; returns the min_nbor_dist used (Å)."""
    from ..backend.registry import backend_for_file, freeze
    from ..io.model_file import model_from_dict, save_model
    from ..model.compress import compress_model
    from .convert import read_neutral

    if Path(src).resolve() == Path(dst).resolve():
        raise ValueError(f"input and output are the same file: {src}")
    data = read_neutral(src)
    model, params = model_from_dict(data, str(src))
    if min_nbor_dist is None:
        min_nbor_dist = (data.get("@variables") or {}).get("min_nbor_dist")
    if min_nbor_dist is None and training_script is not None:
        min_nbor_dist = min_nbor_dist_from_script(training_script, model.rcut, model.type_map)
    if min_nbor_dist is None:
        raise ValueError(
            f"{src} does not record min_nbor_dist (the smallest interatomic distance of the "
            "training data); give the training input with -t input.json or --min-nbor-dist"
        )
    if not math.isfinite(float(min_nbor_dist)):
        raise ValueError("the training data has no two atoms within rcut (min_nbor_dist = inf)")
    cmodel, cparams = compress_model(model, params, float(min_nbor_dist), step, extrapolate,
                                     frequency)
    script = data.get("model_def_script")
    if backend_for_file(dst) == "numpy":
        save_model(dst, cmodel, cparams, model_def_script=script,
                   min_nbor_dist=float(min_nbor_dist))
    else:
        freeze(dst, cmodel, cparams, model_def_script=script)
    return float(min_nbor_dist)


def run(args: argparse.Namespace) -> int:
    dist = compress_file(args.input, args.output, args.step, args.extrapolate, args.frequency,
                         args.training_script, args.min_nbor_dist)
    print(f"{args.input} -> {args.output} (compressed: step {args.step}, extrapolate "
          f"{args.extrapolate}, min_nbor_dist {dist:.6f} Å)")
    return 0


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "compress",
        help="tabulate the embedding net of se_e2_a / se_atten (attn_layer 0) models and of "
        "dpa2's repinit block",
    )
    p.add_argument("-i", "--input", default="frozen_model.pth",
                   help="model file to compress (any format)")
    p.add_argument("-o", "--output", default="frozen_model_compressed.pth",
                   help="compressed model file; its suffix chooses the format")
    p.add_argument("-s", "--step", type=float, default=0.01,
                   help="stride of the fine table in the normalised s (0.01); the coarse "
                        "table uses 10x")
    p.add_argument("-e", "--extrapolate", type=float, default=5,
                   help="the coarse table reaches this multiple of the data's upper bound (5)")
    p.add_argument("-f", "--frequency", type=int, default=-1,
                   help="overflow check frequency (accepted for DeePMD-kit compatibility; "
                        "no effect)")
    p.add_argument("-t", "--training-script", default=None,
                   help="training input.json whose data give min_nbor_dist when the model "
                        "file has none")
    p.add_argument("--min-nbor-dist", type=float, default=None,
                   help="smallest interatomic distance of the training data, Å (overrides "
                        "the model file and -t)")
    p.set_defaults(func=run)
