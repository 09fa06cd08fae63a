"""Model deviation during ASE MD: the observer's rows equal the offline ``model_devi`` on the
positions recorded at the same steps."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from ase import Atoms, units
from ase.md.verlet import VelocityVerlet
from devi_models import CONFIG, make_models

from polypot.backend.registry import default_autodiff_backend
from polypot.calculator import DP
from polypot.data.water_box import water_box
from polypot.infer.model_devi import load_models, model_devi
from polypot.md.ase_devi import ModelDeviObserver, attach_model_devi

pytestmark = pytest.mark.skipif(default_autodiff_backend() is None,
                                reason="forces need an autodiff backend")



@pytest.fixture(scope="module")
def paths(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    return make_models(tmp_path_factory.mktemp("models"))


def water_atoms() -> Atoms:
    coord, cell, atype = water_box(16, seed=2)
    return Atoms(np.array(CONFIG["type_map"])[atype], positions=coord, cell=cell, pbc=True)


def run_md(atoms: Atoms, models: list, out: Path, interval: int, steps: int,
           use_dyn: bool) -> list[tuple[int, np.ndarray]]:
    """VelocityVerlet with the observer; returns (step, positions) at each observer call."""
    atoms.calc = DP(models[0])
    dyn = VelocityVerlet(atoms, 0.5 * units.fs)
    if use_dyn:
        obs = attach_model_devi(dyn, models, out, interval=interval)
    else:
        obs = ModelDeviObserver(atoms, models, out, frequency=interval)
        dyn.attach(obs, interval=interval)
    seen: list[tuple[int, np.ndarray]] = []
    dyn.attach(lambda: seen.append((dyn.nsteps, atoms.positions.copy())), interval=interval)
    dyn.run(steps)
    obs.close()
    return seen


@pytest.mark.parametrize("use_dyn", [True, False])
def test_observer_matches_offline(tmp_path: Path, paths: list[Path], use_dyn: bool) -> None:
    atoms = water_atoms()
    atoms.set_momenta(np.random.default_rng(0).normal(0, 0.3, (len(atoms), 3)))
    out = tmp_path / "model_devi.out"
    seen = run_md(atoms, paths, out, interval=2, steps=6, use_dyn=use_dyn)
    steps = [s for s, _ in seen]
    assert steps == [0, 2, 4, 6]
    assert not np.allclose(seen[0][1], seen[-1][1])  # the atoms did move
    lines = out.read_text().splitlines()
    assert lines[1].startswith("#       step         max_devi_v")
    rows = np.loadtxt(out)
    np.testing.assert_array_equal(rows[:, 0], steps)
    models = load_models(paths)
    cells = np.repeat(atoms.cell.array[None], len(seen), axis=0)
    offline = model_devi(models, np.stack([p for _, p in seen]), cells,
                         np.array([0, 1, 1] * 16), frequency=2)
    # the file holds 7 significant digits
    np.testing.assert_allclose(rows, offline, rtol=2e-6)
    assert (rows[:, 4] > 0).all()


def test_unknown_element(tmp_path: Path, paths: list[Path]) -> None:
    atoms = Atoms("COH", positions=[[0, 0, 0], [1.1, 0, 0], [0, 1, 0]], cell=[9, 9, 9], pbc=True)
    obs = ModelDeviObserver(atoms, paths, tmp_path / "x.out")
    with pytest.raises(ValueError, match=r"element\(s\) C not in the models' type map"):
        obs()
    obs.close()
