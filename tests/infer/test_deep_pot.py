"""DeepPot moves atoms into the cell before its neighbour list (as DeePMD-kit does)."""

from __future__ import annotations

import numpy as np
import pytest
from reference_data import FIXTURES, fixture_frames, fixture_reference, max_rel

from polypot.backend.registry import default_autodiff_backend
from polypot.infer.deep_pot import DeepPot

KEYS = ("energy", "force", "virial", "atom_energy", "atom_virial")


def _frame_and_displaced(name: str, seed: int, most: int):
    """The first periodic fixture frame of ``name`` (coord, cell, atype), its reference and the
    frame with each atom displaced by up to ``most`` cell vectors along each axis."""
    coord, cell, atype = fixture_frames(name, "periodic")
    coord, cell = coord[:1], cell[:1]
    far = coord + np.random.default_rng(seed).integers(-most, most + 1,
                                                       size=coord.shape) @ cell[0]
    return coord, cell, atype, fixture_reference(name, "periodic"), far


def _assert_same_outputs(a: tuple, b: tuple) -> None:
    for name, x, y in zip(KEYS, a, b, strict=True):
        assert max_rel(y, x) < 1e-12, name


@pytest.mark.parametrize("skin", [None, 1.0], ids=["fresh", "verlet"])
def test_atoms_displaced_by_cell_vectors_give_the_same_results(skin) -> None:
    """The periodic fixture frame (atoms up to 0.6 cells outside) and the same frame with its
    atoms displaced by up to 3 cell vectors: the same extended atom count and the same
    energies, forces, virials and atomic virials, equal to DeePMD-kit's."""
    coord, cell, atype, ref, far = _frame_and_displaced("se_e2_a", seed=5, most=3)
    dp = DeepPot(FIXTURES / "se_e2_a" / "model.dp", backend=default_autodiff_backend(),
                 skin=skin)
    n_near = dp.neighbor_data(coord, cell, atype).coord.shape[1]
    dp.set_skin(skin)  # a fresh Verlet list for the displaced frame
    assert dp.neighbor_data(far, cell, atype).coord.shape[1] == n_near
    near_out = dp.eval(coord, cell, atype, atomic=True)
    dp.set_skin(skin)
    far_out = dp.eval(far, cell, atype, atomic=True)
    _assert_same_outputs(near_out, far_out)
    assert max_rel(far_out[4], ref["atom_virial"][:1]) < 1e-10
    assert max_rel(far_out[1], ref["force"][:1]) < 1e-10


def test_dpa2_atomic_virials_do_not_depend_on_the_images_given() -> None:
    """DPA-2 passes features from an atom's local copy to its images, so its atomic virials
    depend on which copy is local (energies, forces and virials do not). Wrapped (the default),
    the frame and the frame with atoms displaced by cell vectors give the same atomic virials:
    those of the unwrapped model on the wrapped coordinates. ``wrap=False`` reproduces the
    DeePMD-kit fixture (made with vesin installed, which leaves the atoms where they are)."""
    coord, cell, atype, ref, far = _frame_and_displaced("dpa2", seed=7, most=2)
    frac = coord[0] @ np.linalg.inv(cell[0])
    inside = ((frac % 1.0) @ cell[0])[None]
    model = FIXTURES / "dpa2" / "model.dp"
    backend = default_autodiff_backend()
    wrapped, as_given = DeepPot(model, backend=backend), DeepPot(model, backend=backend, wrap=False)
    near = wrapped.eval(coord, cell, atype, atomic=True)
    moved = wrapped.eval(far, cell, atype, atomic=True)
    _assert_same_outputs(near, moved)
    assert max_rel(near[4], as_given.eval(inside, cell, atype, atomic=True)[4]) < 1e-12
    given = as_given.eval(coord, cell, atype, atomic=True)
    assert max_rel(given[4], ref["atom_virial"][:1]) < 1e-10
    assert max_rel(near[1], ref["force"][:1]) < 1e-10
    assert max_rel(near[2], ref["virial"][:1]) < 1e-10
    # the images matter: the fixture's atoms (up to 0.6 cells outside) unwrapped differ
    assert max_rel(near[4], ref["atom_virial"][:1]) > 1e-3
