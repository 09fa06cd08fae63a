"""``polypot lammps IN.lammps --model FILE --type-map O H``: run LAMMPS with a polypot model.

Serial or under ``mpirun -np K polypot lammps ...`` (needs the ``lammps`` and ``mpi4py`` Python
modules). See :mod:`polypot.md.lammps` for how the model is attached and how the forces on
ghost atoms are handled.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

DESCRIPTION = """\
Run a LAMMPS input with a polypot model supplying energy, forces and virial (like DeePMD-kit's
`pair_style deepmd`), on one rank or under `mpirun -np K polypot lammps ...`.

The input must use `units metal` (eV, Å, ps), an atom style with IDs and types (atomic,
charge, full ...), and define the box and atoms (read_data / create_box ...). Do not define
the model in the input: polypot executes the input command by command and, just before the
first run / minimize / rerun / include / jump, adds

    comm_modify cutoff <rcut + skin>      (only when ghost atoms are used: several ranks)
    fix polypot all external pf/callback 1 1
    fix_modify polypot energy yes virial yes

so `pe`, `etotal` and `press` include the model. LAMMPS atom type t is the t-th element of
--type-map (one element per type, each in the model's type map). Loops (label/jump SELF) and
\"\"\" multi-line strings are not supported; `&` continuation lines are.

Example input:

    units metal
    atom_style atomic
    read_data water.data
    velocity all create 300 1
    fix 1 all nve
    timestep 0.0005
    thermo 10
    run 1000
"""


def run(args: argparse.Namespace) -> int:
    from ..md.lammps import LammpsRunError, run_lammps

    cmdargs: list[str] = ["-log", args.log]
    if args.screen is not None:
        cmdargs += ["-screen", args.screen]
    for name, value in args.var or []:
        cmdargs += ["-var", name, value]
    try:
        bridge = run_lammps(args.input, args.model, args.type_map, args.backend,
                            devi_models=args.devi_models, devi_out=args.devi_out,
                            devi_freq=args.devi_freq, mode=args.mode, cmdargs=cmdargs)
    except LammpsRunError as err:
        print(f"polypot lammps: error: {err}", file=sys.stderr)
        return 2
    bridge.lmp.close()
    return 0


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "lammps", help="run a LAMMPS input (units metal) with a polypot model, serial or MPI",
        description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("input", help="LAMMPS input file")
    p.add_argument("-m", "--model", required=True,
                   help="model file (.dp/.yaml/.pth/.hlo/.savedmodel/.json)")
    p.add_argument("--type-map", nargs="+", required=True, metavar="ELEMENT",
                   help="element of each LAMMPS atom type, in type order (e.g. O H)")
    p.add_argument("--backend", help="backend for .dp/.yaml models (default: polypot's choice)")
    p.add_argument("--devi-models", nargs="+", default=[], metavar="MODEL",
                   help="extra models for model deviation (the --model drives the dynamics)")
    p.add_argument("--devi-out", default="model_devi.out",
                   help="model deviation file, DeePMD-kit's format (default model_devi.out)")
    p.add_argument("--devi-freq", type=int, default=10,
                   help="write the model deviation every N steps (default 10)")
    p.add_argument("--mode", choices=("auto", "periodic", "ghost"), default="auto",
                   help="auto (default): periodic on one rank with a periodic box (the model "
                        "builds its own neighbour list), ghost (LAMMPS ghost atoms) otherwise")
    p.add_argument("--log", default="log.lammps", help="LAMMPS log file (default log.lammps; "
                   "'none' for no log)")
    p.add_argument("--screen", help="LAMMPS screen output file ('none' to silence)")
    p.add_argument("--var", nargs=2, action="append", metavar=("NAME", "VALUE"),
                   help="define a LAMMPS index variable (LAMMPS's -var); repeatable")
    p.set_defaults(func=run)
