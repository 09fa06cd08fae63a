"""How closely DeePMD-kit's own backends and polypot's reproduce a fixture's reference outputs.

The fixtures' reference outputs were made by DeePMD-kit 3.2's PyTorch backend. On a frame where
the model math is ill-conditioned (``se_atten_l2`` periodic frame 1: a neighbour 9.3e-5 Å
inside rcut, non-smooth attention dividing by max(|r3|, 1e-12) with |r3| ~ 9e-14), any other
evaluation order moves the forces far more than rounding; this script shows by how much for
DeePMD-kit's own PyTorch (.pth, re-run here) and JAX (.hlo, XLA-compiled) backends, next to
polypot's frozen files. Relative error = max |got - ref| / max |ref| per frame and output.

    .venv/bin/python bench/fixture_agreement.py se_atten_l2 [--deepmd-python /tmp/dpvenv/bin/python]

DeePMD-kit runs in its own venv (see bench/README.md; its JAX backend also needs
``pip install jax flax flatbuffers``); this script re-runs itself there in ``--child`` mode.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

FIXTURES = Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "deepmd-3.2"
KEYS = ("energy", "force", "virial", "atom_energy", "atom_virial")


def report(name: str, label: str, outputs: tuple, case: str = "periodic") -> None:
    """Print one line per frame: relative error of every output against the reference."""
    ref = np.load(FIXTURES / name / "reference.npz")
    nf = ref[f"{case}_energy"].shape[0]
    for frame in range(nf):
        errs = []
        for key, got in zip(KEYS, outputs, strict=True):
            want = ref[f"{case}_{key}"][frame].reshape(-1)
            got = np.asarray(got).reshape(nf, -1)[frame]
            errs.append(f"{key} {np.max(np.abs(got - want)) / np.max(np.abs(want)):.1e}")
        print(f"{label:<28} frame {frame}: " + ", ".join(errs), flush=True)


def frames(name: str, case: str = "periodic") -> tuple:
    fr = np.load(FIXTURES / name / "frames.npz")
    return fr[f"{case}_coord"], fr[f"{case}_cell"], fr[f"{case}_atype"]


def child(name: str, workdir: Path) -> None:
    """In DeePMD-kit's venv: its PyTorch and JAX frozen files of the fixture's model.dp."""
    from deepmd.infer import DeepPot

    coord, cell, atype = frames(name)
    nf = coord.shape[0]
    for suffix in (".pth", ".hlo"):
        out = workdir / f"deepmd{suffix}"
        subprocess.run([str(Path(sys.executable).parent / "dp"), "convert-backend",
                        str(FIXTURES / name / "model.dp"), str(out)], check=True,
                       capture_output=True)
        res = DeepPot(str(out)).eval(coord.reshape(nf, -1), cell.reshape(nf, -1), atype,
                                     atomic=True)
        report(name, f"DeePMD-kit {suffix}", res)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("name", help="fixture folder, e.g. se_atten_l2")
    ap.add_argument("--deepmd-python", default="/tmp/dpvenv/bin/python")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--workdir", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args.name, Path(args.workdir))
        return
    from polypot import DeepPot
    from polypot.cli.convert import convert

    coord, cell, atype = frames(args.name)
    with tempfile.TemporaryDirectory() as tmp:
        for suffix in (".pth", ".hlo", ".savedmodel"):
            out = Path(tmp) / f"polypot{suffix}"
            convert(FIXTURES / args.name / "model.dp", out)
            # the atoms where the fixture put them, as DeePMD-kit did (with vesin installed;
            # DPA-2's atomic virials depend on it, see DeepPot)
            report(args.name, f"polypot {suffix}",
                   DeepPot(out, wrap=False).eval(coord, cell, atype, atomic=True))
        if Path(args.deepmd_python).exists():
            env = {**os.environ, "OMP_NUM_THREADS": "2", "DP_INTRA_OP_PARALLELISM_THREADS": "2"}
            subprocess.run([args.deepmd_python, __file__, args.name, "--child", "--workdir", tmp],
                           check=True, env=env)
        else:
            print(f"({args.deepmd_python} not found: DeePMD-kit's side skipped)")


if __name__ == "__main__":
    main()
