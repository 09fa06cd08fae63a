"""ms per step of ASE molecular dynamics (velocity Verlet) through ``polypot.calculator.DP``.

One water-example model (``--model-size``, random parameters unless ``--model FILE`` is given) is
written as ``.dp`` and converted to every installed backend's frozen file; each backend runs in
its own process (``--threads`` threads) on periodic water boxes of 192 and 1536 atoms: a 300 K
Maxwell-Boltzmann start, ``--warmup`` steps, then ``--steps`` timed steps of 0.5 fs. One step is
everything ASE does per step: neighbour list (the calculator's Verlet list, ``--skin``; 0 builds
a fresh list every step), energy, forces, integration. Prints a markdown table; ``--csv`` also
writes the rows.

    .venv/bin/python bench/md.py
    .venv/bin/python bench/md.py --sizes 192 --backends torch jax --steps 50
    .venv/bin/python bench/md.py --model /path/to/trained.dp
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from models import MODELS, model_config  # noqa: E402
from systems import tiled, water_frame  # noqa: E402

FROZEN = {"torch": ".pth", "jax": ".hlo", "tensorflow": ".savedmodel",
          "paddle": ".json"}


def write_models(source: Path | None, size: str, precision: str, workdir: Path,
                 backends: list[str]) -> dict[str, Path]:
    """The model file of each backend (converted from one ``.dp``)."""
    from polypot.cli.convert import convert
    from polypot.io.model_file import save_model
    from polypot.model import build_model

    neutral = workdir / "model.dp"
    if source is None:
        config = model_config(size, precision)
        model, params = build_model(config, seed=1)
        save_model(neutral, model, params, model_def_script=config)
    else:
        convert(source, neutral)
    files = {}
    for b in backends:
        files[b] = workdir / f"model{FROZEN[b]}"
        convert(neutral, files[b])
    return files


def one(backend: str, model_file: Path, sizes: list[int], args: argparse.Namespace) -> list[dict]:
    """Time ASE MD with ``model_file`` in this process; one row per size."""
    from ase import Atoms, units
    from ase.md.velocitydistribution import MaxwellBoltzmannDistribution
    from ase.md.verlet import VelocityVerlet

    from polypot.calculator import DP

    calc = DP(model_file, skin=args.skin if args.skin > 0 else None)
    rows = []
    for natoms in sizes:
        coord, cell, atype = tiled(natoms)
        atoms = Atoms(symbols=["O" if t == 0 else "H" for t in atype], positions=coord,
                      cell=cell, pbc=True)
        atoms.calc = calc
        MaxwellBoltzmannDistribution(atoms, temperature_K=300, rng=np.random.default_rng(0))
        dyn = VelocityVerlet(atoms, timestep=0.5 * units.fs)
        dyn.run(args.warmup)
        steps = args.steps if natoms <= 1536 else max(3, args.steps // 4)
        t0 = time.perf_counter()
        dyn.run(steps)
        ms = (time.perf_counter() - t0) / steps * 1e3
        rows.append({"backend": backend, "natoms": natoms, "ms_per_step": ms, "steps": steps})
        print(f"{backend} {natoms} atoms: {ms:.1f} ms/step", file=sys.stderr, flush=True)
    return rows


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--backends", nargs="+", default=None)
    ap.add_argument("--sizes", nargs="+", type=int, default=[192, 1536])
    ap.add_argument("--model-size", choices=sorted(MODELS), default="se_e2_a")
    ap.add_argument("--precision", choices=["float64", "float32"], default="float64")
    ap.add_argument("--model", type=Path, default=None, help="a trained model file to use")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--skin", type=float, default=1.0,
                    help="Verlet skin (Å) of the calculator's neighbour list; 0: a fresh list "
                         "every step")
    ap.add_argument("--csv", type=Path, default=None)
    ap.add_argument("--one", nargs=2, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one:
        rows = one(args.one[0], Path(args.one[1]), args.sizes, args)
        print("RESULT " + json.dumps(rows), flush=True)
        return 0
    from polypot.backend.registry import available

    backends = args.backends or [b for b in available() if b in FROZEN]  # numpy: no forces
    work = Path(tempfile.mkdtemp(prefix="polypot-md-bench-"))
    files = write_models(args.model, args.model_size, args.precision, work, backends)
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads),
               TF_NUM_INTRAOP_THREADS=str(args.threads), TF_NUM_INTEROP_THREADS="1")
    rows: list[dict] = []
    for b in backends:
        cmd = [sys.executable, __file__, "--one", b, str(files[b]), "--steps", str(args.steps),
               "--warmup", str(args.warmup), "--skin", str(args.skin),
               "--sizes", *map(str, args.sizes)]
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
        found = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
        if proc.returncode != 0 or not found:
            print(f"{b}: failed\n{proc.stderr[-2000:]}", file=sys.stderr)
            continue
        rows += json.loads(found[-1][7:])
    model = args.model or f"{args.model_size} ({args.precision}, random parameters)"
    print(f"\nASE velocity Verlet, 0.5 fs, {args.threads} threads, skin {args.skin} Å; "
          f"model {model}; "
          f"water from {water_frame()[3]}\n")
    print("| backend | file | " + " | ".join(f"{n} atoms (ms/step)" for n in args.sizes) + " |")
    print("|---|---|" + "---|" * len(args.sizes))
    for b in backends:
        got = {r["natoms"]: r["ms_per_step"] for r in rows if r["backend"] == b}
        cells = [f"{got[n]:.1f}" if n in got else "failed" for n in args.sizes]
        print(f"| {b} | {files[b].suffix} | " + " | ".join(cells) + " |")
    if args.csv:
        with open(args.csv, "w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=["backend", "natoms", "ms_per_step", "steps"])
            writer.writeheader()
            writer.writerows(rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
