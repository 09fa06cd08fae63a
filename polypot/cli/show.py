"""``polypot show MODEL``: what a model file holds."""

from __future__ import annotations

import argparse
import json
from typing import Any

import numpy as np

from ..io.model_file import model_from_dict
from .convert import read_neutral


def describe(path: str) -> dict[str, Any]:
    """Summary of a model file: type map, descriptor, cutoff, sel, parameter count, precision."""
    data = read_neutral(path)
    model, params = model_from_dict(data, path)
    meta = {k: v for k, v in data.items() if k != "model"}
    desc = model.atomic.descriptor
    counted: list[int] = []

    def count(tree: Any, name: str = "") -> None:
        if isinstance(tree, dict):
            for k, v in tree.items():
                if k not in ("davg", "dstd", "out_std"):
                    count(v, k)
        elif isinstance(tree, list):
            for v in tree:
                count(v, name)
        elif tree is not None:
            counted.append(int(np.size(tree)))

    count(params)
    return {
        "file": path,
        "type_map": model.type_map,
        "descriptor": getattr(desc, "type_name", "se_e2_a"),
        "fitting": "ener",
        "rcut": model.rcut,
        "rcut_smth": desc.rcut_smth,
        "sel": model.sel,
        "parameters": sum(counted),
        "precision": model.precision,
        "written_by": f"{meta.get('software', '?')} {meta.get('version', '')}".strip(),
    }


def run(args: argparse.Namespace) -> int:
    info = describe(args.model)
    if args.json:
        print(json.dumps(info, indent=2))
    else:
        width = max(len(k) for k in info)
        for key, value in info.items():
            print(f"{key:<{width}}  {value}")
    return 0


def add_parser(sub: Any) -> None:
    p = sub.add_parser("show", help="print what a model file holds (type map, descriptor, ...)")
    p.add_argument("model", help="model file (.dp .yaml .pth .hlo .savedmodel .json)")
    p.add_argument("--json", action="store_true", help="print as JSON")
    p.set_defaults(func=run)
