"""``polypot test -m MODEL -s SYSTEM ...``: errors of a model on labelled data (``dp test``)."""

from __future__ import annotations

import argparse
from typing import Any

from ..data.system import find_systems, load_system
from ..infer.test import evaluate_model, format_errors

_RULE = "# -----------------------------------------------"


def _system_paths(args: argparse.Namespace) -> list[str]:
    specs: list[str] = list(args.system or [])
    if args.datafile:
        with open(args.datafile, encoding="utf-8") as fh:
            specs.extend(line.strip() for line in fh if line.strip()
                         and not line.lstrip().startswith("#"))
    if not specs:
        raise ValueError("no systems to test: give -s SYSTEM [SYSTEM ...] or -f DATAFILE")
    paths: list[str] = []
    for spec in specs:  # each entry may be a folder of systems or an HDF5 file
        paths.extend(find_systems(spec))
    return paths


def run(args: argparse.Namespace) -> int:
    from ..infer.deep_pot import DeepPot

    paths = _system_paths(args)
    dp = DeepPot(args.model, backend=args.backend)
    type_map = dp.get_type_map()
    systems = [load_system(p, type_map) for p in paths]  # all read before any is tested
    results = evaluate_model(dp, systems, numb_test=args.numb_test, atomic=args.atomic,
                             detail_file=args.detail_file)
    if "force_mae" not in results[-1] and any(s.force is not None for s in systems):
        print(f"# note: the {dp.backend_name} backend gives energies only; "
              "force and virial errors need an autodiff backend (--backend torch, jax, ...)")
    for res in results[:-1]:
        print(_RULE)
        print(f"# testing system : {res['system']}")
        print(f"# number of test data : {res['nframes']:d}")
        for line in format_errors(res):
            print(line)
        print(_RULE)
    if len(results) > 2:
        avg = results[-1]
        print("# weighted average of errors :")
        print(f"# number of systems : {avg['nsystems']:d}")
        for line in format_errors(avg):
            print(line)
        print(_RULE)
    if args.detail_file:
        print(f"# detail files written to {args.detail_file}.*")
    return 0


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "test",
        help="errors of a model on labelled systems (energy, force, virial), like dp test",
        description="Evaluate MODEL on the first NUMB_TEST frames of each system and print the "
        "energy, force and virial MAE / RMSE, then their weighted average over systems.",
    )
    p.add_argument("-m", "--model", required=True,
                   help="model file (.dp .yaml .pth .hlo .savedmodel .json)")
    p.add_argument("-s", "--system", nargs="+", metavar="SYSTEM",
                   help="system folders (or folders holding systems, or HDF5 files)")
    p.add_argument("-f", "--datafile", default=None,
                   help="text file listing one system per line (added to -s)")
    p.add_argument("-n", "--numb-test", type=int, default=100, dest="numb_test",
                   help="frames tested per system, the first ones (0: all; default 100)")
    p.add_argument("-d", "--detail-file", default=None, dest="detail_file",
                   help="prefix of the detail files (.e.out .e_peratom.out .f.out .v.out "
                   ".v_peratom.out) and of the parity plot .parity.png")
    p.add_argument("--atomic", action="store_true",
                   help="also evaluate atomic energies (written to DETAIL_FILE.ae.out)")
    p.add_argument("--backend", default=None,
                   help="backend for .dp/.yaml files (default: first installed of torch, jax, "
                   "tensorflow, paddle; numpy gives energies only)")
    p.set_defaults(func=run)
