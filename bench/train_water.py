"""Train DeePMD-kit's water se_e2_a example for a fixed wall time on each backend.

Model (DeePMD-kit examples/water/se_e2_a): sel [46, 92], rcut 6, neuron [25, 50, 100], axis 16,
type_one_side false, fitting [240, 240, 240], batch 1; data ../shared/data/water data_0..2,
validation and test on data_3. Each backend runs in its own process with ``--threads`` threads:
a 20-step probe measures s/step, the step count is set so that the whole run (probe included)
fits ``--minutes``, the learning rate decays from --start-lr to --stop-lr over those steps, and
the final model is tested on every data_3 frame (like ``dp test``). Prints a markdown table.

    .venv/bin/python bench/train_water.py                      # every installed backend, 10 min
    .venv/bin/python bench/train_water.py --start-lr 1e-3       # DeePMD-kit yardstick lr
    .venv/bin/python bench/train_water.py --backends jax --minutes 2
    .venv/bin/python bench/train_water.py --backends torch --steps 2000   # fixed length
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
WATER = ROOT.parent / "shared" / "data" / "water"


def config(numb_steps: int, start_lr: float, stop_lr: float, data: Path) -> dict:
    return {
        "model": {
            "type_map": ["O", "H"],
            "descriptor": {"type": "se_e2_a", "sel": [46, 92], "rcut": 6.0, "rcut_smth": 0.5,
                           "neuron": [25, 50, 100], "axis_neuron": 16, "resnet_dt": False,
                           "type_one_side": False},
            "fitting_net": {"neuron": [240, 240, 240], "resnet_dt": True},
        },
        "learning_rate": {"type": "exp", "start_lr": start_lr, "stop_lr": stop_lr,
                          "decay_steps": max(1, numb_steps // 100)},
        "loss": {"type": "ener", "start_pref_e": 0.02, "limit_pref_e": 1.0,
                 "start_pref_f": 1000.0, "limit_pref_f": 1.0},
        "training": {
            "training_data": {"systems": [str(data / f"data_{i}") for i in range(3)],
                              "batch_size": 1},
            "validation_data": {"systems": [str(data / "data_3")], "batch_size": 1,
                                "numb_btch": 1},
            "numb_steps": numb_steps, "seed": 1, "disp_freq": 100,
            "save_freq": max(numb_steps, 1),
        },
    }


def one(backend: str, args: argparse.Namespace) -> dict:
    """Train and test on one backend in this process; returns the result row."""
    from polypot.backend.registry import get_backend
    from polypot.cli.freeze import freeze_checkpoint
    from polypot.infer.deep_pot import DeepPot
    from polypot.infer.test import evaluate_model
    from polypot.train.trainer import Trainer

    get_backend(backend)  # import the framework before the clock starts
    budget = args.minutes * 60.0
    work = Path(tempfile.mkdtemp(prefix=f"train_water_{backend}_"))
    log = open(work / "log.txt", "w")  # noqa: SIM115
    t0 = time.perf_counter()
    if args.steps:
        nsteps = args.steps
    else:
        probe = Trainer(config(20, args.start_lr, args.stop_lr, args.data), backend,
                        workdir=work / "probe", log=log)
        times = []
        for step in range(20):
            ts = time.perf_counter()
            probe.step(step)
            times.append(time.perf_counter() - ts)
        per_step = sorted(times[5:])[len(times[5:]) // 2]
        left = budget - (time.perf_counter() - t0)
        nsteps = max(20, int(0.97 * left / per_step) - 10)
    trainer = Trainer(config(nsteps, args.start_lr, args.stop_lr, args.data), backend,
                      workdir=work / "run", log=log)
    ts = time.perf_counter()
    trainer.run()
    train_s = time.perf_counter() - ts
    wall = time.perf_counter() - t0
    freeze_checkpoint(trainer.last_checkpoint, work / "model.dp")
    res = evaluate_model(DeepPot(work / "model.dp", backend=backend), [str(args.data / "data_3")],
                         numb_test=None)[0]
    return {"backend": backend, "steps": nsteps, "s_per_step": train_s / nsteps,
            "wall_min": wall / 60.0, "rmse_e_per_atom": res["energy_rmse_per_atom"],
            "rmse_f": res["force_rmse"], "frames": res["nframes"], "workdir": str(work)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--backends", nargs="+", default=None)
    ap.add_argument("--minutes", type=float, default=10.0)
    ap.add_argument("--steps", type=int, default=0,
                    help="train this many steps instead of filling --minutes")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--start-lr", type=float, default=3e-3)
    ap.add_argument("--stop-lr", type=float, default=1e-5)
    ap.add_argument("--data", type=Path, default=WATER)
    ap.add_argument("--keep", action="store_true",
                    help="print each run's result with its work folder (KEPT {json})")
    ap.add_argument("--one", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one:
        print("RESULT " + json.dumps(one(args.one, args)), flush=True)
        return 0
    if not args.data.exists():
        print(f"no water data at {args.data}", file=sys.stderr)
        return 1
    from polypot.backend.registry import available

    backends = args.backends or [b for b in available() if b != "numpy"]
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads),
               TF_NUM_INTRAOP_THREADS=str(args.threads), TF_NUM_INTEROP_THREADS="1")
    rows = []
    for b in backends:
        cmd = [sys.executable, __file__, "--one", b, "--minutes", str(args.minutes),
               "--steps", str(args.steps),
               "--start-lr", str(args.start_lr), "--stop-lr", str(args.stop_lr),
               "--data", str(args.data)]
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
        found = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
        if proc.returncode != 0 or not found:
            print(f"{b}: failed\n{proc.stderr[-2000:]}", file=sys.stderr)
            continue
        rows.append(json.loads(found[-1][7:]))
        r = rows[-1]
        if args.keep:
            print("KEPT " + json.dumps(r), flush=True)
        print(f"{b}: {r['steps']} steps, {r['s_per_step']:.3f} s/step, "
              f"rmse_e {r['rmse_e_per_atom'] * 1e3:.2f} meV/atom, rmse_f {r['rmse_f']:.3f} eV/A",
              file=sys.stderr, flush=True)
    print(f"\n{args.minutes:g} min per backend, {args.threads} threads, batch 1, "
          f"lr {args.start_lr:g} -> {args.stop_lr:g}; test: all data_3 frames\n")
    print("| backend | steps | s/step | wall (min) | energy RMSE (meV/atom) | force RMSE (eV/Å) |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['backend']} | {r['steps']} | {r['s_per_step']:.3f} | {r['wall_min']:.1f} | "
              f"{r['rmse_e_per_atom'] * 1e3:.2f} | {r['rmse_f']:.3f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
