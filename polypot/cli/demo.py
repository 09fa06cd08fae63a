"""``polypot demo``: the README's main job on a built-in default.

Builds a small water model from a built-in config, writes it as a neutral ``.dp`` file, and
evaluates a generated water box with every installed backend, printing energies and timings.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from ..backend.registry import available, get_backend
from ..data.water_box import water_box
from ..io.model_file import save_model
from ..model import build_model

DEFAULT_MODEL = {
    "type_map": ["O", "H"],
    "descriptor": {"type": "se_e2_a", "sel": [46, 92], "rcut": 6.0, "rcut_smth": 0.5,
                   "neuron": [16, 32, 64], "axis_neuron": 8, "type_one_side": True},
    "fitting_net": {"neuron": [64, 64, 64], "resnet_dt": True},
}


def _time(fn: Any, repeats: int) -> tuple[Any, float]:
    out = fn()  # warm-up (compilation, caches)
    start = time.perf_counter()
    for _ in range(repeats):
        out = fn()
    return out, (time.perf_counter() - start) / repeats * 1e3


def run(args: argparse.Namespace) -> int:
    from ..infer.deep_pot import DeepPot

    model, params = build_model(DEFAULT_MODEL, seed=args.seed)
    workdir = Path(args.output or tempfile.mkdtemp(prefix="polypot-demo-"))
    path = workdir / "water_se_e2_a.dp"
    save_model(path, model, params, model_def_script=DEFAULT_MODEL)
    coord, cell, atype = water_box(args.molecules, seed=args.seed)
    print(f"model   : se_e2_a, sel {DEFAULT_MODEL['descriptor']['sel']}, rcut 6 Å, "
          f"written to {path}")
    print(f"system  : {len(atype)} atoms of generated water, cubic cell {cell[0, 0]:.2f} Å")
    print(f"backends: {', '.join(available())}\n")
    header = f"{'backend':<12}{'energy (eV)':>18}{'max |F| (eV/Å)':>18}{'ms/eval':>10}"
    print(header)
    print("-" * len(header))
    reference = None
    for name in available():
        dp = DeepPot(path, backend=name)
        if get_backend(name).has_autodiff:
            (e, f, _), ms = _time(lambda dp=dp: dp.eval(coord[None], cell[None], atype),
                                  args.repeats)
            fmax = f"{np.abs(f).max():18.6f}"
        else:
            (e, _), ms = _time(lambda dp=dp: dp.eval_energy(coord[None], cell[None], atype),
                               args.repeats)
            fmax = f"{'(no autodiff)':>18}"
        reference = e[0, 0] if reference is None else reference
        print(f"{name:<12}{e[0, 0]:18.8f}{fmax}{ms:10.1f}")
        if abs(e[0, 0] - reference) > 1e-8 * abs(reference):
            print(f"  !! {name} disagrees with the first backend by {e[0, 0] - reference:.3g} eV")
            return 1
    print("\nall backends agree on the energy (relative 1e-8)")
    return 0


def add_parser(sub: Any) -> None:
    p = sub.add_parser("demo", help="build a small water model and evaluate it on every backend")
    p.add_argument("--molecules", type=int, default=64, help="water molecules in the box")
    p.add_argument("--repeats", type=int, default=5, help="timed evaluations per backend")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("-o", "--output", help="folder for the model file (default: a temp folder)")
    p.set_defaults(func=run)
