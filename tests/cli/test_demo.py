"""``polypot demo`` end to end (tiny), and the EMT data it trains on (polypot.data.emt)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from ase import Atoms
from ase.calculators.emt import EMT

from polypot.backend.registry import available
from polypot.cli.main import main
from polypot.data.emt import alloy, generate, label
from polypot.data.system import load_system

#: backends the tiny run freezes to, cheapest first (at most two are used)
CHEAP = ("jax", "paddle", "tensorflow", "torch")


def test_alloy_composition_and_lattice():
    atoms = alloy(("Cu", "Au"), fraction=0.25, repeat=2, strain=0.01, seed=3)
    symbols = atoms.get_chemical_symbols()
    assert len(atoms) == 32 and symbols.count("Au") == 8
    assert np.allclose(atoms.cell.lengths(), 2 * (0.75 * 3.61 + 0.25 * 4.08) * 1.01)


def test_virial_is_minus_strain_derivative():
    """tr W = -dE/d(eps) for a uniform strain x -> (1 + eps) x: the DeePMD-kit sign."""
    atoms = alloy(seed=1)
    atoms.rattle(0.1, seed=2)
    atoms.calc = EMT()
    _, _, virial = label(atoms)

    def energy(eps: float) -> float:
        strained = atoms.copy()
        strained.set_cell(atoms.cell * (1 + eps), scale_atoms=True)
        strained.calc = EMT()
        return strained.get_potential_energy()

    h = 1e-5
    de = (energy(h) - energy(-h)) / (2 * h)
    assert np.trace(virial) == pytest.approx(-de, rel=1e-5, abs=1e-6)
    assert np.allclose(virial, virial.T)


def test_written_labels_match_emt(tmp_path):
    data = generate(tmp_path, temperatures=[500.0], frames=5, valid_frames=1, test_frames=2,
                    trajectories=(2, 1, 2), equilibrate=5, stride=3, seed=4)
    assert data.nframes("train") == 5 and data.nframes("test") == 2
    assert len(data.train) == 2 and len(data.valid) == 1 and len(data.test) == 2
    system = load_system(data.train[0], ["Cu", "Au"])
    k = 2
    atoms = Atoms([["Cu", "Au"][t] for t in system.atype], positions=system.coord[k],
                  cell=system.box[k], pbc=True)
    atoms.calc = EMT()
    assert system.energy[k] == pytest.approx(atoms.get_potential_energy(), abs=1e-10)
    assert np.allclose(system.force[k], atoms.get_forces(), atol=1e-10)
    virial = -atoms.get_volume() * atoms.get_stress(voigt=False)
    assert np.allclose(system.virial[k].reshape(3, 3), virial, atol=1e-10)
    # frames of one trajectory differ (the MD moved), and the three parts are separate runs
    assert not np.allclose(system.coord[0], system.coord[1])
    test = load_system(data.test[0], ["Cu", "Au"])
    assert not np.array_equal(test.atype, system.atype) or \
        not np.allclose(test.box[0], system.box[0])


def _tiny_backends() -> list[str]:
    installed = available()
    return [b for b in CHEAP if b in installed][:2]


def test_demo_tiny(tmp_path, capsys):
    backends = _tiny_backends()
    if not backends:
        pytest.skip("no autodiff backend installed")
    rc = main(["demo", "-o", str(tmp_path), "--frames", "12", "--temperatures", "600",
               "--train-steps", "1200", "--md-steps", "5", "--md-repeat", "2",
               "--backends", *backends])
    assert rc == 0
    out = capsys.readouterr().out
    for phase in ("[1/5]", "[2/5]", "[3/5]", "[4/5]", "[5/5]", "ms/step", "EMT (reference)"):
        assert phase in out
    result = json.loads((tmp_path / "results.json").read_text())
    rows = {r["backend"]: r for r in result["rows"]}
    assert set(rows) == {*backends, "EMT (reference)"}
    table = out[out.rindex("backend "):].splitlines()
    for name in backends:
        assert any(line.startswith(f"{name} ") for line in table)  # its line in the table
        assert Path(result["files"][name]).exists()
        row = rows[name]
        for key in ("ms_per_step", "drift", "e_rmse", "f_rmse"):
            assert math.isfinite(row[key]), (name, key, row[key])
    # every backend runs the same model: the same test errors
    e = [rows[b]["e_rmse"] for b in backends]
    assert np.allclose(e, e[0], rtol=1e-6)
    # training learned something: the forces beat the zero-force model's by far (1200 steps
    # give about a fifth; the energies are learnt later, as their loss weight grows)
    assert rows[backends[0]]["f_rmse"] < 0.5 * result["baseline"]["f_rmse"]


@pytest.mark.slow
def test_demo_default(tmp_path):
    """The README's run: every installed backend, 4 minutes of training, 300 NVE steps."""
    assert main(["demo", "-o", str(tmp_path)]) == 0
    result = json.loads((tmp_path / "results.json").read_text())
    models = [r for r in result["rows"] if r["backend"] != "EMT (reference)"]
    assert {r["backend"] for r in models} == set(available())
    assert result["total_s"] < 15 * 60
    for row in models:
        assert row["e_rmse"] < 0.3 * result["baseline"]["e_rmse"]
        if row["backend"] != "numpy":
            assert row["f_rmse"] < 0.3 * result["baseline"]["f_rmse"]
            assert abs(row["drift"]) < 1.0  # meV/atom/ps
