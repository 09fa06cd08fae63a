"""Energy conservation of NVE molecular dynamics with a model trained on the water data.

A 192-atom frame of ``../shared/data/water/data_3`` (not used in training) starts from a
Maxwell-Boltzmann distribution at ``--temperature``; ASE's velocity Verlet runs ``--steps`` steps
of ``--dt`` fs through ``polypot.calculator.DP``. Reports the drift of the total energy in
meV/atom: the largest |E(t) - E(0)|, the end-to-start change, and the slope of a linear fit
(meV/atom/ps), plus ms/step. The model is ``--model FILE`` or, without it, trained first with
``bench/train_water.py --steps --train-steps`` on torch.

    .venv/bin/python bench/nve_water.py --model trained.dp            # 2000 steps, 0.5 fs
    .venv/bin/python bench/nve_water.py --train-steps 1500
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "water" / "data_3"


def trained_model(steps: int) -> Path:
    """Train the water example with bench/train_water.py on torch; the path of its model.dp."""
    cmd = [sys.executable, str(ROOT / "bench" / "train_water.py"), "--backends", "torch",
           "--steps", str(steps)]
    proc = subprocess.run(cmd + ["--keep"], capture_output=True, text=True)
    print(proc.stdout, file=sys.stderr)
    rows = [json.loads(ln[5:]) for ln in proc.stdout.splitlines() if ln.startswith("KEPT ")]
    if proc.returncode != 0 or not rows:
        raise RuntimeError(f"training failed:\n{proc.stderr[-2000:]}")
    return Path(rows[-1]["workdir"]) / "model.dp"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--model", type=Path, default=None)
    ap.add_argument("--train-steps", type=int, default=1500)
    ap.add_argument("--steps", type=int, default=2000)
    ap.add_argument("--dt", type=float, default=0.5, help="time step (fs)")
    ap.add_argument("--temperature", type=float, default=300.0, help="initial temperature (K)")
    ap.add_argument("--frame", type=int, default=0)
    ap.add_argument("--as", dest="suffix", default=None,
                    help="convert the model to this format first (e.g. .hlo, .pth)")
    args = ap.parse_args()

    from ase import Atoms, units
    from ase.md.velocitydistribution import MaxwellBoltzmannDistribution, Stationary
    from ase.md.verlet import VelocityVerlet

    from polypot.calculator import DP

    model = args.model or trained_model(args.train_steps)
    if args.suffix:
        from polypot.cli.convert import convert

        converted = model.with_suffix(args.suffix)
        convert(model, converted)
        model = converted
    coord = np.load(DATA / "set.000" / "coord.npy")[args.frame].reshape(-1, 3)
    cell = np.load(DATA / "set.000" / "box.npy")[args.frame].reshape(3, 3)
    atype = np.loadtxt(DATA / "type.raw", dtype=np.int64)
    type_map = (DATA / "type_map.raw").read_text().split()
    atoms = Atoms(symbols=[type_map[t] for t in atype], positions=coord, cell=cell, pbc=True)
    atoms.calc = DP(model)
    MaxwellBoltzmannDistribution(atoms, temperature_K=args.temperature,
                                 rng=np.random.default_rng(0))
    Stationary(atoms)
    dyn = VelocityVerlet(atoms, timestep=args.dt * units.fs)
    energies = []

    def record() -> None:
        energies.append(atoms.get_potential_energy() + atoms.get_kinetic_energy())

    dyn.attach(record, interval=1)
    t0 = time.perf_counter()
    dyn.run(args.steps)
    ms = (time.perf_counter() - t0) / args.steps * 1e3
    e = (np.asarray(energies) - energies[0]) / len(atoms) * 1e3  # meV/atom
    t_ps = np.arange(len(e)) * args.dt * 1e-3
    slope = np.polyfit(t_ps, e, 1)[0]
    print(f"model {model} on {atoms.calc.dp.backend_name}; {len(atoms)} atoms of {DATA} frame "
          f"{args.frame}; {args.steps} steps of {args.dt} fs from {args.temperature:g} K")
    print(f"final temperature {atoms.get_temperature():.1f} K; {ms:.1f} ms/step")
    print(f"total energy: max |E(t) - E(0)| {np.abs(e).max():.4f} meV/atom, "
          f"E(end) - E(0) {e[-1]:+.4f} meV/atom, linear drift {slope:+.4f} meV/atom/ps")
    return 0


if __name__ == "__main__":
    sys.exit(main())
