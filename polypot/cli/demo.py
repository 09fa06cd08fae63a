"""``polypot demo``: the README's main job, from nothing to a trained model on every backend.

1. data: short Langevin MD of a random Cu-Au fcc alloy (32 atoms, 25 % Au) at a few
   temperatures with ASE's EMT potential (:mod:`polypot.data.emt`), sampled and labelled with
   energy, forces and virial; separate trajectories give the training, validation and test sets;
2. training: a small ``se_e2_a`` model, for a wall-clock budget (a short probe measures the
   seconds per step and sets ``numb_steps`` so that the run fits);
3. freezing: the last checkpoint to every installed backend's file (``.dp``, ``.pth``, ``.hlo``,
   ``.json``, ``.savedmodel``);
4. testing: energy and force RMSE of every file against EMT on the held-out test frames;
5. MD: NVE (velocity Verlet) of a larger cell through the ASE calculator with every file and with
   EMT itself: milliseconds per step and the drift of the total energy.

Prints one table at the end; the work folder (data, checkpoints, model files, ``results.json``)
is kept (``-o``, default a new temporary folder).
"""

from __future__ import annotations

import argparse
import io
import json
import math
import os
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

#: model file suffix of each backend
SUFFIX = {"numpy": ".dp", "torch": ".pth", "jax": ".hlo", "paddle": ".json",
          "tensorflow": ".savedmodel"}
#: order of the per-backend phases: Paddle must be imported before TensorFlow in one process
ORDER = ("numpy", "torch", "jax", "paddle", "tensorflow")
ELEMENTS = ("Cu", "Au")
#: environment variables that quieten TensorFlow's and Paddle's C++ logging
QUIET = {"TF_CPP_MIN_LOG_LEVEL": "2", "GLOG_minloglevel": "2"}
#: neighbours kept per type (Cu, Au) within rcut = 5 Å: the largest counts of random Cu3Au cells
#: at 900 K with a margin (the 108-atom MD cell has larger Au clusters than the 32-atom data)
SEL = (48, 24)
#: training steps of the speed probe, and how many of its first steps are not timed
PROBE_STEPS, PROBE_WARMUP = 60, 20


@dataclass
class Row:
    """One line of the final table. ms_per_step: median NVE step (force call and integration),
    ms; nve_s: wall time of the whole NVE run (warm-up and compilation included), s; drift:
    slope of a straight-line fit of the total energy, µeV/atom/ps; e_rmse: test energy RMSE,
    meV/atom; f_rmse: test force RMSE, eV/Å (NaN where not measured)."""

    backend: str
    model: str
    ms_per_step: float = math.nan
    nve_s: float = math.nan
    drift: float = math.nan
    e_rmse: float = math.nan
    f_rmse: float = math.nan


def say(text: str) -> None:
    """Print a progress line now."""
    print(text, flush=True)


def model_config(train: Sequence[Path], valid: Sequence[Path], numb_steps: int,
                 seed: int) -> dict:
    """DeePMD-kit v3 input: se_e2_a (rcut 5 Å, sel ``SEL``), energy, force and virial
    loss, learning rate 2e-3 -> 1e-5 over ``numb_steps``."""
    return {
        "model": {
            "type_map": list(ELEMENTS),
            "descriptor": {"type": "se_e2_a", "sel": list(SEL), "rcut": 5.0, "rcut_smth": 2.0,
                           "neuron": [16, 32, 64], "axis_neuron": 8, "type_one_side": True},
            "fitting_net": {"neuron": [64, 64, 64], "resnet_dt": True},
            "data_stat_nbatch": 20,
        },
        "learning_rate": {"type": "exp", "start_lr": 2e-3, "stop_lr": 1e-5,
                          "decay_steps": max(1, numb_steps // 200)},
        "loss": {"type": "ener", "start_pref_e": 0.02, "limit_pref_e": 1.0,
                 "start_pref_f": 1000.0, "limit_pref_f": 1.0,
                 "start_pref_v": 0.02, "limit_pref_v": 1.0},
        "training": {
            "training_data": {"systems": [str(p) for p in train], "batch_size": 1},
            "validation_data": {"systems": [str(p) for p in valid], "batch_size": 1,
                                "numb_btch": len(valid)},
            "numb_steps": numb_steps, "seed": seed,
            "disp_freq": max(1, numb_steps // 10), "save_freq": numb_steps,
            "max_ckpt_keep": 1,
        },
    }


# ---- phases --------------------------------------------------------------------------------------
def make_data(workdir: Path, args: argparse.Namespace) -> Any:
    """Phase 1: EMT-labelled Cu-Au frames under ``workdir/data`` (a ``DataSet``)."""
    from ..data.emt import generate

    t0 = time.perf_counter()
    temps = "/".join(f"{t:g}" for t in args.temperatures)
    say(f"[1/5] data: Langevin MD of Cu-Au (32 atoms, 25 % Au) at {temps} K with ASE EMT ...")
    data = generate(workdir / "data", temperatures=args.temperatures, frames=args.frames,
                    valid_frames=max(1, args.frames // 10), test_frames=max(2, args.frames // 5),
                    seed=args.seed)
    say(f"      {data.nframes('train')} training, {data.nframes('valid')} validation and "
        f"{data.nframes('test')} test frames (energy, forces, virial) in "
        f"{time.perf_counter() - t0:.0f} s -> {workdir / 'data'}")
    return data


def probe_steps(data: Any, backend: str, seconds: float, seed: int, workdir: Path) -> int:
    """Training steps that fit in ``seconds`` (probe time included), from the median time of
    the probe's steps after its warm-up (compilation)."""
    from ..train.trainer import Trainer

    t0 = time.perf_counter()
    probe = Trainer(model_config(data.train, data.valid, PROBE_STEPS, seed), backend,
                    workdir=workdir / "probe", log=io.StringIO())
    times = []
    for step in range(PROBE_STEPS):
        start = time.perf_counter()
        probe.step(step)
        times.append(time.perf_counter() - start)
    per_step = float(np.median(times[PROBE_WARMUP:]))
    left = seconds - (time.perf_counter() - t0)
    # 10 % for validation, checkpoints and the new program's compilation
    steps = max(PROBE_STEPS, int(0.9 * left / per_step))
    say(f"      probe: {per_step * 1e3:.1f} ms/step -> {steps} steps fit in "
        f"{seconds / 60:g} min")
    return steps


def train(data: Any, workdir: Path, args: argparse.Namespace) -> Path:
    """Phase 2: train on ``args.train_backend``; returns the last checkpoint."""
    from ..backend.registry import get_backend
    from ..train.trainer import Trainer

    t0 = time.perf_counter()
    say(f"[2/5] training se_e2_a on {args.train_backend} for "
        + (f"{args.train_steps} steps" if args.train_steps else f"{args.train_minutes:g} min")
        + " ...")
    get_backend(args.train_backend)  # import the framework before the clock starts
    steps = args.train_steps or probe_steps(data, args.train_backend,
                                            60.0 * args.train_minutes, args.seed, workdir)
    trainer = Trainer(model_config(data.train, data.valid, steps, args.seed),
                      args.train_backend, workdir=workdir / "train", log=sys.stdout)
    trainer.run()
    assert trainer.last_checkpoint is not None
    say(f"      {steps} steps in {time.perf_counter() - t0:.0f} s -> {trainer.last_checkpoint}")
    return trainer.last_checkpoint


def freeze_all(checkpoint: Path, backends: Sequence[str], workdir: Path) -> dict[str, Path]:
    """Phase 3: one model file per backend under ``workdir/models``."""
    from .freeze import freeze_checkpoint

    say(f"[3/5] freezing {checkpoint.name} to {', '.join(backends)} ...")
    files = {}
    for name in backends:
        path = workdir / "models" / f"model{SUFFIX[name]}"
        path.parent.mkdir(parents=True, exist_ok=True)
        t0 = time.perf_counter()
        freeze_checkpoint(checkpoint, path)
        files[name] = path
        say(f"      {name:<11} {path} ({time.perf_counter() - t0:.1f} s)")
    return files


def baseline_errors(data: Any) -> tuple[float, float]:
    """Test energy RMSE (meV/atom) and force RMSE (eV/Å) of the trivial model: per-type
    energies fitted to the training energies by least squares, zero forces."""
    from ..data.system import load_systems

    def counts_energies(paths: Sequence[Path]) -> tuple[np.ndarray, np.ndarray, list]:
        systems = load_systems([str(p) for p in paths], list(ELEMENTS))
        counts = np.concatenate([np.tile(np.bincount(s.atype, minlength=len(ELEMENTS)),
                                         (s.nframes, 1)) for s in systems])
        return counts, np.concatenate([s.energy for s in systems]), systems

    counts, energies, _ = counts_energies(data.train)
    bias = np.linalg.lstsq(counts.astype(float), energies, rcond=None)[0]
    counts, energies, systems = counts_energies(data.test)
    natoms = counts.sum(axis=1)
    e_rmse = float(np.sqrt(np.mean(((counts @ bias - energies) / natoms) ** 2)))
    f_rmse = float(np.sqrt(np.mean(np.concatenate([s.force.ravel() for s in systems]) ** 2)))
    return 1e3 * e_rmse, f_rmse


def held_out_errors(dp: Any, data: Any) -> tuple[float, float]:
    """Test energy RMSE (meV/atom) and force RMSE (eV/Å; NaN for a ``.dp`` file on NumPy,
    which gives energies only) of a loaded ``DeepPot`` against the EMT labels."""
    from ..infer.test import evaluate_model

    avg = evaluate_model(dp, [str(p) for p in data.test])[-1]
    return 1e3 * avg["energy_rmse_per_atom"], avg.get("force_rmse", math.nan)


def md_atoms(args: argparse.Namespace) -> Any:
    """The NVE starting point: a (4 * md_repeat**3)-atom Cu-Au cell with Maxwell-Boltzmann
    velocities at ``md_temperature`` (the same for every backend)."""
    from ..data.emt import alloy, thermalize

    atoms = alloy(ELEMENTS, repeat=args.md_repeat, seed=args.seed + 1000)
    thermalize(atoms, args.md_temperature, np.random.default_rng(args.seed))
    return atoms


def nve(atoms: Any, calc: Any, steps: int, timestep_fs: float) -> tuple[float, float, float]:
    """Velocity-Verlet NVE of ``atoms`` with ``calc``: (median ms per step after the first
    tenth of the steps (at most 10: warm-up, compilation), wall time of the run in s, drift of
    the total energy in µeV/atom/ps from a straight-line fit over all steps)."""
    from ase.md.verlet import VelocityVerlet
    from ase.units import fs

    atoms.calc = calc
    dyn = VelocityVerlet(atoms, timestep_fs * fs)
    start = time.perf_counter()
    energies = [atoms.get_total_energy()]
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        dyn.run(1)
        times.append(time.perf_counter() - t0)
        energies.append(atoms.get_total_energy())
    warm = min(10, steps // 10)
    ms = 1e3 * float(np.median(times[warm:])) if steps > warm else math.nan
    t_ps = np.arange(len(energies)) * timestep_fs * 1e-3
    slope = np.polyfit(t_ps, np.asarray(energies), 1)[0] if steps >= 2 else math.nan
    return ms, time.perf_counter() - start, 1e6 * float(slope) / len(atoms)


def evaluate(files: dict[str, Path], data: Any, args: argparse.Namespace) -> list[Row]:
    """Phases 4 and 5: test errors and NVE of every model file, then NVE with EMT."""
    from ase.calculators.emt import EMT

    from ..calculator import DP
    from ..infer.deep_pot import DeepPot

    start = md_atoms(args)
    say(f"[4/5] test RMSE on {data.nframes('test')} held-out frames and NVE of "
        f"{len(start)} atoms ({args.md_steps} steps of {args.md_timestep:g} fs from "
        f"{args.md_temperature:g} K) with every model file ...")
    rows = []
    for name, path in files.items():
        row = Row(name, path.name)
        dp = DeepPot(path, backend="numpy" if name == "numpy" else None)
        row.e_rmse, row.f_rmse = held_out_errors(dp, data)
        forces = "" if math.isnan(row.f_rmse) else f", F {row.f_rmse:.3f} eV/Å; NVE ..."
        say(f"      {name:<11} test: E {row.e_rmse:.2f} meV/atom{forces}")
        if name != "numpy":  # a .dp file on NumPy gives energies only: no MD
            row.ms_per_step, row.nve_s, row.drift = nve(start.copy(), DP(dp),
                                                        args.md_steps, args.md_timestep)
            say(f"      {name:<11} NVE: {row.ms_per_step:.1f} ms/step, {row.nve_s:.0f} s in all, "
                f"drift {row.drift:.2f} µeV/atom/ps")
        rows.append(row)
    say("[5/5] NVE with the reference potential (ASE EMT) ...")
    ref = Row("EMT (reference)", "ase.calculators.emt")
    ref.ms_per_step, ref.nve_s, ref.drift = nve(start.copy(), EMT(), args.md_steps,
                                                args.md_timestep)
    rows.append(ref)
    return rows


# ---- report ----------------------------------------------------------------------------------
def _fmt(value: float, spec: str) -> str:
    """``value`` formatted with ``spec`` ("9.1f"), or a dash as wide when it is NaN."""
    return f"{'-':>{spec.split('.')[0]}}" if math.isnan(value) else format(value, spec)


def table(rows: Sequence[Row]) -> str:
    """The final table, one line per row."""
    header = (f"{'backend':<16}{'model file':<19}{'ms/step':>8}{'NVE s':>7}{'drift':>13}"
              f"{'E RMSE':>10}{'F RMSE':>8}")
    units = f"{'':<50}{'µeV/atom/ps':>13}{'meV/atom':>10}{'eV/Å':>8}"
    lines = [header, units, "-" * len(header)]
    for r in rows:
        lines.append(f"{r.backend:<16}{r.model:<19}{_fmt(r.ms_per_step, '8.1f')}"
                     f"{_fmt(r.nve_s, '7.1f')}{_fmt(r.drift, '13.2f')}"
                     f"{_fmt(r.e_rmse, '10.2f')}{_fmt(r.f_rmse, '8.3f')}")
    return "\n".join(lines)


def footnote(ntest: int, base_e: float, base_f: float, args: argparse.Namespace) -> str:
    """What the table's columns measure (printed under it)."""
    ps = args.md_steps * args.md_timestep / 1e3
    return "\n".join([
        f"E/F RMSE: against EMT on {ntest} test frames from separate trajectories (a per-type",
        f"  energy, zero-force model has {base_e:.1f} meV/atom and {base_f:.3f} eV/Å).",
        "ms/step: median over the NVE steps after warm-up (ASE velocity Verlet, 1 force call);",
        "  NVE s: the whole NVE run, warm-up and compilation included.",
        f"drift: slope of a straight-line fit of the total energy over {args.md_steps} steps "
        f"({ps:g} ps).",
    ])


def _jsonable(row: dict) -> dict:
    """``row`` with NaN (not measured) as None, so that results.json is strict JSON."""
    return {k: None if isinstance(v, float) and math.isnan(v) else v for k, v in row.items()}


def _phase(name: str, fn: Callable[[], Any], timings: dict[str, float]) -> Any:
    t0 = time.perf_counter()
    out = fn()
    timings[name] = time.perf_counter() - t0
    return out


def run(args: argparse.Namespace) -> int:
    from ..backend.registry import available, canonical_name, default_autodiff_backend

    installed = available()
    wanted = [canonical_name(b) for b in args.backends] if args.backends else installed
    backends = [b for b in ORDER if b in wanted]
    missing = sorted(set(wanted) - set(installed))
    if missing:
        raise ImportError(f"backend(s) {', '.join(missing)} not installed "
                          f"(installed: {', '.join(installed)})")
    if args.train_backend is None:
        args.train_backend = "jax" if "jax" in installed else default_autodiff_backend()
    if args.train_backend is None:
        raise ImportError("the demo trains a model and needs an autodiff backend: "
                          "pip install 'polypot[jax]' (or torch, tensorflow, paddle)")
    for name, value in QUIET.items():  # framework start-up chatter would bury the progress
        os.environ.setdefault(name, value)
    workdir = Path(args.output or tempfile.mkdtemp(prefix="polypot-demo-"))
    workdir.mkdir(parents=True, exist_ok=True)
    say(f"polypot demo: work folder {workdir}; backends {', '.join(backends)}")
    t0 = time.perf_counter()
    timings: dict[str, float] = {}
    data = _phase("data", lambda: make_data(workdir, args), timings)
    ckpt = _phase("train", lambda: train(data, workdir, args), timings)
    files = _phase("freeze", lambda: freeze_all(ckpt, backends, workdir), timings)
    rows = _phase("test+md", lambda: evaluate(files, data, args), timings)
    base_e, base_f = baseline_errors(data)
    total = time.perf_counter() - t0
    say("")
    say(table(rows))
    say("\n" + footnote(data.nframes("test"), base_e, base_f, args))
    say("phases: " + ", ".join(f"{k} {v:.0f} s" for k, v in timings.items())
        + f"; total {total / 60:.1f} min")
    result = {"rows": [_jsonable(asdict(r)) for r in rows],
              "baseline": {"e_rmse": base_e, "f_rmse": base_f},
              "timings_s": timings, "total_s": total,
              "files": {k: str(v) for k, v in files.items()}, "checkpoint": str(ckpt)}
    (workdir / "results.json").write_text(json.dumps(result, indent=1))
    say(f"model files, data and results.json are in {workdir}")
    return 0


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "demo", help="EMT data -> train -> freeze to every backend -> test and MD on each",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("-o", "--output", help="work folder (default: a new temporary folder)")
    p.add_argument("--frames", type=int, default=100,
                   help="training frames per temperature (validation: a tenth, test: a fifth)")
    p.add_argument("--temperatures", type=float, nargs="+", default=[300.0, 600.0, 900.0],
                   help="temperatures (K) of the EMT trajectories")
    p.add_argument("--train-minutes", type=float, default=4.0,
                   help="wall-clock budget of the training, probe included")
    p.add_argument("--train-steps", type=int, default=None,
                   help="a fixed number of training steps instead of --train-minutes")
    p.add_argument("--train-backend", default=None,
                   help="backend that trains (default: jax, the fastest on CPU, if installed)")
    p.add_argument("--backends", nargs="+", default=None,
                   help="backends to freeze, test and run (default: every installed one)")
    p.add_argument("--md-steps", type=int, default=300, help="NVE steps per backend")
    p.add_argument("--md-timestep", type=float, default=2.0, help="NVE time step (fs)")
    p.add_argument("--md-repeat", type=int, default=3,
                   help="the NVE cell is repeat^3 cubic fcc cells (4 atoms each)")
    p.add_argument("--md-temperature", type=float, default=600.0,
                   help="temperature (K) of the NVE starting velocities")
    p.add_argument("--seed", type=int, default=1)
    p.set_defaults(func=run)
