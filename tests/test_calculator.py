"""ASE calculator: forces and stress against finite differences, per-atom energies, bad input."""

from __future__ import annotations

import numpy as np
import pytest
from ase import Atoms
from reference_data import FIXTURES

from polypot.calculator import DP, UnknownElementError
from polypot.data.water_box import water_box

MODEL = FIXTURES / "se_e2_a" / "model.dp"


def _water(n_molecules: int = 16, seed: int = 3) -> Atoms:
    coord, cell, atype = water_box(n_molecules, seed=seed)
    # a triclinic cell, so that off-diagonal stress terms are exercised
    cell = cell + np.array([[0.0, 0.0, 0.0], [0.7, 0.0, 0.0], [-0.4, 0.3, 0.0]])
    return Atoms(symbols=["O" if t == 0 else "H" for t in atype], positions=coord, cell=cell,
                 pbc=True)


@pytest.fixture(scope="module")
def calc() -> DP:
    pytest.importorskip("torch")
    return DP(MODEL, backend="torch")


def test_forces_equal_finite_differences(calc: DP) -> None:
    atoms = _water()
    atoms.calc = calc
    forces = atoms.get_forces()
    h = 1e-4
    for atom, axis in [(0, 0), (5, 1), (17, 2), (40, 0)]:
        pos = atoms.positions.copy()
        energies = []
        for step in (h, -h):
            moved = pos.copy()
            moved[atom, axis] += step
            atoms.positions = moved
            energies.append(atoms.get_potential_energy())
        atoms.positions = pos
        fd = -(energies[0] - energies[1]) / (2 * h)
        assert abs(fd - forces[atom, axis]) < 1e-6, (atom, axis, fd, forces[atom, axis])


def test_stress_equals_strain_derivative(calc: DP) -> None:
    atoms = _water()
    atoms.calc = calc
    stress = atoms.get_stress(voigt=False)  # (3, 3) eV/A^3
    volume = atoms.get_volume()
    cell0, pos0 = atoms.cell.array.copy(), atoms.positions.copy()
    h = 1e-5
    for i, j in [(0, 0), (1, 1), (2, 2), (0, 1), (1, 2), (0, 2)]:
        energies = []
        for step in (h, -h):
            strain = np.eye(3)
            strain[i, j] += step / 2
            strain[j, i] += step / 2
            atoms.set_cell(cell0 @ strain, scale_atoms=False)
            atoms.positions = pos0 @ strain
            energies.append(atoms.get_potential_energy())
        atoms.set_cell(cell0, scale_atoms=False)
        atoms.positions = pos0
        fd = (energies[0] - energies[1]) / (2 * h) / volume
        assert abs(fd - stress[i, j]) < 1e-7, (i, j, fd, stress[i, j])
    assert np.abs(stress).max() > 1e-5  # the check above is not trivially satisfied


def test_energies_sum_and_match_deeppot(calc: DP) -> None:
    atoms = _water()
    atoms.calc = calc
    per_atom = atoms.get_potential_energies()
    total = atoms.get_potential_energy()
    assert per_atom.shape == (len(atoms),)
    assert abs(per_atom.sum() - total) < 1e-9 * abs(total)
    atype = np.array([0 if s == "O" else 1 for s in atoms.get_chemical_symbols()])
    e, f, _ = calc.dp.eval(atoms.positions[None], atoms.cell.array[None], atype)
    assert total == pytest.approx(float(e[0, 0]), rel=1e-12)
    np.testing.assert_allclose(atoms.get_forces(), f[0], rtol=0, atol=1e-12)
    assert atoms.get_potential_energy(force_consistent=True) == total  # free_energy


def test_type_dict_reorders_elements(calc: DP) -> None:
    """A user type_dict maps other symbols onto the model's types."""
    atoms = _water()
    atoms.calc = calc
    energy = atoms.get_potential_energy()
    renamed = atoms.copy()
    renamed.set_chemical_symbols(["N" if s == "O" else "He" for s in atoms.get_chemical_symbols()])
    renamed.calc = DP(calc.dp, type_dict={"N": 0, "He": 1})
    assert renamed.get_potential_energy() == pytest.approx(energy, rel=1e-12)


def test_open_boundaries_give_no_stress(calc: DP) -> None:
    atoms = _water(8)
    atoms.pbc = False
    atoms.calc = calc
    assert np.isfinite(atoms.get_forces()).all()
    with pytest.raises(Exception, match="stress needs a periodic cell"):
        atoms.get_stress()


def test_unknown_element_is_a_clear_error(calc: DP) -> None:
    atoms = _water(8)
    atoms[0].symbol = "Na"
    atoms.calc = calc
    with pytest.raises(UnknownElementError, match=r"Na not in the model's type map \['O', 'H'\]"):
        atoms.get_potential_energy()


def test_partial_periodicity_is_rejected(calc: DP) -> None:
    atoms = _water(8)
    atoms.pbc = [True, True, False]
    atoms.calc = calc
    with pytest.raises(ValueError, match="all three directions periodic or none"):
        atoms.get_potential_energy()


def test_missing_model_file(tmp_path) -> None:
    with pytest.raises(FileNotFoundError, match="nothing.pth"):
        DP(tmp_path / "nothing.pth")


def test_type_dict_outside_type_map() -> None:
    with pytest.raises(ValueError, match="outside the model's type_map"):
        DP(MODEL, type_dict={"O": 0, "H": 2}, backend="numpy")


def test_verlet_skin_gives_the_fresh_list_results() -> None:
    """MD with the calculator's reused neighbour list (default skin) equals fresh lists."""
    pytest.importorskip("torch")
    from ase import units
    from ase.md.verlet import VelocityVerlet

    fresh = DP(MODEL, backend="torch", skin=None)
    reused = DP(MODEL, backend="torch")
    atoms = _water()
    # hot (about 0.05 A/fs), so that some steps reuse the list and some rebuild it
    atoms.set_velocities(np.random.default_rng(0).normal(scale=0.05, size=(len(atoms), 3))
                         * units.Ang / units.fs)
    atoms.calc = reused
    dyn = VelocityVerlet(atoms, timestep=2.0 * units.fs)
    for _ in range(8):
        dyn.run(1)
        probe = atoms.copy()
        probe.calc = fresh
        assert abs(probe.get_potential_energy() - atoms.get_potential_energy()) < 1e-10
        np.testing.assert_allclose(atoms.get_forces(), probe.get_forces(), rtol=0, atol=1e-10)
        np.testing.assert_allclose(atoms.get_stress(), probe.get_stress(), rtol=0, atol=1e-12)
    verlet = reused.dp._verlet
    assert verlet is not None and 2 <= verlet.builds < verlet.calls
