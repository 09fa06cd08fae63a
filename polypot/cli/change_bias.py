"""``polypot change-bias MODEL -s SYSTEMS``: re-fit the per-type energy bias of any model file."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any


def run(args: argparse.Namespace) -> int:
    from ..backend.registry import backend_for_file, freeze
    from ..data.system import load_systems
    from ..io.model_file import model_from_dict, save_model
    from ..train.change_bias import change_bias
    from .convert import read_neutral

    src = Path(args.model)
    out = Path(args.output) if args.output else src.with_name(f"{src.stem}_updated{src.suffix}")
    data = read_neutral(src)
    model, params = model_from_dict(data, str(src))
    systems = load_systems(args.system, model.type_map)
    new_params, bias = change_bias(model, params, systems, nbatch=args.numb_batch,
                                   batch_size=args.batch_size, mode=args.mode)
    script = data.get("model_def_script")
    if backend_for_file(out) == "numpy":
        mnd = data.get("@variables", {}).get("min_nbor_dist")
        save_model(out, model, new_params, model_def_script=script, min_nbor_dist=mnd)
    else:
        freeze(out, model, new_params, model_def_script=script)
    shown = ", ".join(f"{t}: {b:.6f}" for t, b in zip(model.type_map, bias, strict=True))
    print(f"energy bias ({args.mode}) -> {shown} eV; wrote {out}")
    return 0


def add_parser(sub: Any) -> None:
    p = sub.add_parser("change-bias", help="re-fit the per-type energy bias on new data")
    p.add_argument("model", help="any model file (.dp .yaml .pth .hlo .savedmodel .json)")
    p.add_argument("-s", "--system", nargs="+", required=True, help="data systems")
    p.add_argument("-n", "--numb-batch", type=int, default=10,
                   help="batches per system used for the fit (default 10)")
    p.add_argument("-b", "--batch-size", default="auto", help="int, auto or auto:N")
    p.add_argument("-m", "--mode", choices=("change", "set"), default="change",
                   help="change: add a fitted correction; set: fit the bias anew")
    p.add_argument("-o", "--output", default=None,
                   help="output model file (default MODEL_updated with the same suffix)")
    p.set_defaults(func=run)
