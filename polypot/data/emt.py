"""Labelled training data from a classical reference potential: ASE's EMT on an fcc alloy.

:func:`generate` runs short Langevin molecular dynamics of random substitutional alloys (by
default 25 % Au in Cu, 32 atoms) at a few temperatures with ASE's effective-medium theory (EMT)
calculator and writes the sampled frames as DeePMD-kit npy systems with energy, force and virial
labels. Nothing is downloaded: EMT's parameters are built into ASE.

Units are DeePMD-kit's: Å, eV, eV/Å; the virial is W = sum_i F_i (x) r_i in eV, which is
``-stress * volume`` with ASE's stress sign (a compressed cell has negative stress in ASE and a
positive virial trace).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from ase import Atoms
from ase.build import bulk
from ase.calculators.emt import EMT
from ase.md import velocitydistribution
from ase.md.langevin import Langevin
from ase.units import fs

#: fcc lattice constants (Å) of the pure metals, mixed linearly (Vegard's law) for an alloy
LATTICE = {"Cu": 3.61, "Au": 4.08, "Ni": 3.52, "Ag": 4.09, "Pd": 3.89, "Pt": 3.92, "Al": 4.05}


@dataclass
class Frames:
    """Labelled frames of one fixed-composition system.

    atype: (natoms,) indices into ``type_map``; coord: (nframes, natoms, 3) Å;
    box: (nframes, 3, 3) Å, rows are lattice vectors; energy: (nframes,) eV;
    force: (nframes, natoms, 3) eV/Å; virial: (nframes, 3, 3) eV (W = sum F (x) r).
    """

    type_map: list[str]
    atype: np.ndarray
    coord: list[np.ndarray] = field(default_factory=list)
    box: list[np.ndarray] = field(default_factory=list)
    energy: list[float] = field(default_factory=list)
    force: list[np.ndarray] = field(default_factory=list)
    virial: list[np.ndarray] = field(default_factory=list)

    @property
    def nframes(self) -> int:
        return len(self.energy)


def alloy(elements: Sequence[str] = ("Cu", "Au"), fraction: float = 0.25, repeat: int = 2,
          strain: float = 0.0, seed: int = 0) -> Atoms:
    """A cubic fcc supercell (4 * repeat**3 atoms) of ``elements[0]`` with ``fraction`` of its
    sites, chosen at random, replaced by ``elements[1]``; lattice constant from Vegard's law
    times ``1 + strain``."""
    host, guest = elements
    a = ((1 - fraction) * LATTICE[host] + fraction * LATTICE[guest]) * (1.0 + strain)
    atoms = bulk(host, "fcc", a=a, cubic=True) * (repeat, repeat, repeat)
    rng = np.random.default_rng(seed)
    nguest = int(round(fraction * len(atoms)))
    symbols = np.array(atoms.get_chemical_symbols(), dtype=object)
    symbols[rng.choice(len(atoms), nguest, replace=False)] = guest
    atoms.set_chemical_symbols(list(symbols))
    return atoms


def thermalize(atoms: Atoms, temperature: float, rng: np.random.Generator) -> None:
    """Maxwell-Boltzmann velocities at ``temperature`` K, with zero total momentum."""
    # newer ASE (3.29) deprecates MaxwellBoltzmannDistribution for thermalize_momenta
    draw = getattr(velocitydistribution, "thermalize_momenta", None) \
        or velocitydistribution.MaxwellBoltzmannDistribution
    draw(atoms, temperature_K=temperature, rng=rng)
    velocitydistribution.Stationary(atoms)


def label(atoms: Atoms) -> tuple[float, np.ndarray, np.ndarray]:
    """Energy (eV), forces (natoms, 3) eV/Å and virial (3, 3) eV of ``atoms`` with its
    calculator; virial = -volume * stress (ASE's stress sign, full 3x3)."""
    energy = float(atoms.get_potential_energy())
    forces = np.array(atoms.get_forces())
    virial = -atoms.get_volume() * atoms.get_stress(voigt=False)
    return energy, forces, np.array(virial)


def sample_md(atoms: Atoms, temperature: float, nframes: int, stride: int = 10,
              equilibrate: int = 200, timestep_fs: float = 2.0, seed: int = 0,
              type_map: Sequence[str] = ("Cu", "Au")) -> Frames:
    """``nframes`` frames, one every ``stride`` steps after ``equilibrate`` steps, of Langevin
    MD at ``temperature`` K (friction 0.02 / fs) with EMT; ``atoms`` is moved in place."""
    atoms.calc = EMT()
    rng = np.random.default_rng(seed)
    thermalize(atoms, temperature, rng)
    dyn = Langevin(atoms, timestep_fs * fs, temperature_K=temperature, friction=0.02 / fs,
                   fixcm=False, rng=rng)
    dyn.run(equilibrate)
    index = {name: i for i, name in enumerate(type_map)}
    frames = Frames(list(type_map),
                    np.array([index[s] for s in atoms.get_chemical_symbols()], dtype=np.int64))
    for _ in range(nframes):
        dyn.run(stride)
        energy, forces, virial = label(atoms)
        frames.coord.append(atoms.get_positions())
        frames.box.append(atoms.cell.array.copy())
        frames.energy.append(energy)
        frames.force.append(forces)
        frames.virial.append(virial)
    return frames


def write_system(path: str | os.PathLike, frames: Frames) -> Path:
    """Write ``frames`` as a DeePMD-kit npy system (``type.raw``, ``type_map.raw``,
    ``set.000/{coord,box,energy,force,virial}.npy``); returns the folder."""
    path = Path(path)
    sets = path / "set.000"
    sets.mkdir(parents=True, exist_ok=True)
    np.savetxt(path / "type.raw", frames.atype, fmt="%d")
    (path / "type_map.raw").write_text("\n".join(frames.type_map) + "\n")
    nf = frames.nframes
    np.save(sets / "coord.npy", np.reshape(frames.coord, (nf, -1)))
    np.save(sets / "box.npy", np.reshape(frames.box, (nf, 9)))
    np.save(sets / "energy.npy", np.asarray(frames.energy))
    np.save(sets / "force.npy", np.reshape(frames.force, (nf, -1)))
    np.save(sets / "virial.npy", np.reshape(frames.virial, (nf, 9)))
    return path


@dataclass
class DataSet:
    """Paths of the generated systems: ``train``, ``valid`` and ``test`` lists of folders."""

    train: list[Path]
    valid: list[Path]
    test: list[Path]

    def nframes(self, part: str) -> int:
        """Frames in ``part`` ("train", "valid" or "test")."""
        return sum(len(np.load(p / "set.000" / "energy.npy")) for p in getattr(self, part))


def generate(root: str | os.PathLike, temperatures: Sequence[float] = (300.0, 600.0, 900.0),
             frames: int = 100, valid_frames: int = 10, test_frames: int = 20,
             trajectories: Sequence[int] = (4, 1, 2), elements: Sequence[str] = ("Cu", "Au"),
             fraction: float = 0.25, repeat: int = 2, stride: int = 10, equilibrate: int = 150,
             max_strain: float = 0.015, seed: int = 0) -> DataSet:
    """EMT data under ``root``/{train,valid,test}/T{temperature}_{k}.

    For every temperature, ``frames`` training, ``valid_frames`` validation and
    ``test_frames`` test frames, each part spread over up to ``trajectories`` (train, valid,
    test) independent trajectories: one system each, with its own random arrangement and a
    lattice strain drawn from [-max_strain, max_strain], so that the model sees several
    densities. Test frames are therefore never neighbours in time of training frames.
    A trajectory is ``equilibrate`` Langevin steps of 2 fs, then a frame every ``stride``
    steps.
    """
    root = Path(root)
    rng = np.random.default_rng(seed)
    out = DataSet([], [], [])
    for temperature in temperatures:
        parts = zip(("train", "valid", "test"), (frames, valid_frames, test_frames),
                    trajectories, strict=True)
        for part, count, ntraj in parts:
            runs = min(ntraj, count)
            if runs <= 0:
                continue
            for k, n in enumerate(len(c) for c in np.array_split(np.arange(count), runs)):
                run_seed = int(rng.integers(2**31))
                atoms = alloy(elements, fraction, repeat,
                              strain=float(rng.uniform(-max_strain, max_strain)), seed=run_seed)
                data = sample_md(atoms, temperature, n, stride=stride, equilibrate=equilibrate,
                                 seed=run_seed, type_map=elements)
                getattr(out, part).append(
                    write_system(root / part / f"T{temperature:g}_{k}", data))
    return out
