"""Verlet-skin neighbour lists equal freshly built ones along a trajectory, and rebuild when
they must."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from polypot.data.water_box import water_box
from polypot.neighbor import NeighborData, build_neighbor_data
from polypot.neighbor.verlet import VerletNeighbors

RCUT = 4.0


def _slots(nd: NeighborData, relative: bool = False) -> np.ndarray:
    """(nloc, nnei, 4): per nlist slot the neighbour's coordinates and local atom (NaN for an
    empty slot); independent of how the ghost atoms are numbered. ``relative``: coordinates
    relative to the slot's centre, the same however the atoms are wrapped."""
    nl = nd.nlist[0]
    j = np.maximum(nl, 0)
    xyz = nd.coord[0][j]
    if relative:
        xyz = xyz - nd.coord[0][:nd.nloc, None]
    vals = np.concatenate([xyz, nd.mapping[0][j][..., None].astype(float)], axis=-1)
    return np.where(nl[..., None] >= 0, vals, np.nan)


def _assert_same(a: NeighborData, b: NeighborData) -> None:
    sa, sb = _slots(a), _slots(b)
    np.testing.assert_array_equal(np.isnan(sa), np.isnan(sb))
    np.testing.assert_allclose(np.nan_to_num(sb), np.nan_to_num(sa), rtol=0, atol=1e-12)
    np.testing.assert_array_equal(a.coord[0, :a.nloc], b.coord[0, :b.nloc])
    np.testing.assert_array_equal(a.overflow, b.overflow)
    # ghost atoms sit at their local atom's position plus a lattice vector
    assert b.atype[0].tolist() == b.atype[0][b.mapping[0]].tolist()


@pytest.mark.parametrize("sel", [[10, 20], 30], ids=["by_type", "mixed"])
@pytest.mark.parametrize("periodic", [True, False], ids=["periodic", "open"])
def test_trajectory_equals_fresh_lists(sel, periodic) -> None:
    coord, cell, atype = water_box(12, seed=1)
    cell = cell + np.array([[0.0, 0.0, 0.0], [0.6, 0.0, 0.0], [-0.3, 0.2, 0.0]])  # triclinic
    cells = cell[None] if periodic else None
    rng = np.random.default_rng(0)
    verlet = VerletNeighbors(RCUT, sel, skin=0.8)
    x = coord.copy()
    for _ in range(12):
        x = x + rng.normal(scale=0.05, size=x.shape)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the small sel overflows; both must drop alike
            fresh = build_neighbor_data(x[None], cells, atype, RCUT, sel)
            reused = verlet(x[None], cells, atype)
        _assert_same(fresh, reused)
    assert verlet.calls == 12
    assert 1 < verlet.builds < 12  # some steps reused the list, some moves forced a rebuild


def test_wrapped_trajectory_keeps_its_images_while_atoms_cross_the_cell() -> None:
    """``wrap``: a frame displaced by whole cell vectors, whose atoms then move across the
    cell's faces, keeps the images of the wrapped frame between rebuilds (atoms that cross in
    between are not moved back until the next rebuild), and its neighbours equal a fresh
    wrapped list's."""
    coord, cell, atype = water_box(12, seed=3)
    rng = np.random.default_rng(4)
    x = coord + rng.integers(-2, 3, size=coord.shape) @ cell
    verlet = VerletNeighbors(RCUT, [10, 20], skin=1.0, wrap=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        first = verlet(x[None], cell[None], atype)
        inside = VerletNeighbors(RCUT, [10, 20], skin=1.0)(coord[None], cell[None], atype)
        unwrapped = VerletNeighbors(RCUT, [10, 20], skin=1.0)(x[None], cell[None], atype)
    assert first.coord.shape[1] == inside.coord.shape[1] < unwrapped.coord.shape[1]
    for _ in range(8):
        x = x + rng.normal(scale=0.05, size=x.shape)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            fresh = build_neighbor_data(x[None], cell[None], atype, RCUT, [10, 20], wrap=True)
            reused = verlet(x[None], cell[None], atype)
        a, b = _slots(fresh, relative=True), _slots(reused, relative=True)
        np.testing.assert_array_equal(np.isnan(a), np.isnan(b))
        np.testing.assert_allclose(np.nan_to_num(b), np.nan_to_num(a), rtol=0, atol=1e-12)
    assert verlet.builds < 8


def test_rebuilds_exactly_when_an_atom_moves_half_the_skin() -> None:
    coord, cell, atype = water_box(8, seed=2)
    verlet = VerletNeighbors(RCUT, [20, 40], skin=1.0)
    verlet(coord[None], cell[None], atype)
    moved = coord.copy()
    moved[3, 0] += 0.49
    verlet(moved[None], cell[None], atype)
    assert verlet.builds == 1
    moved[3, 0] += 0.02  # now 0.51 Å from where the list was built
    verlet(moved[None], cell[None], atype)
    assert verlet.builds == 2
    verlet(moved[None], cell[None] * 1.01, atype)  # a new cell
    assert verlet.builds == 3
    verlet(moved[None], cell[None] * 1.01, atype[::-1].copy())  # new types
    assert verlet.builds == 4


def test_pair_entering_the_cutoff_inside_the_skin_is_found() -> None:
    """Two atoms approach from beyond rcut to inside it without a rebuild."""
    cell = np.eye(3) * 20.0
    coord = np.array([[1.0, 1.0, 1.0], [1.0 + RCUT + 0.3, 1.0, 1.0]])
    atype = np.array([0, 0])
    verlet = VerletNeighbors(RCUT, [4], skin=1.0)
    assert (verlet(coord[None], cell[None], atype).nlist == -1).all()
    coord[1, 0] -= 0.45  # now RCUT - 0.15 apart
    nd = verlet(coord[None], cell[None], atype)
    assert verlet.builds == 1
    assert nd.nlist[0, 0, 0] >= 0 and nd.mapping[0, nd.nlist[0, 0, 0]] == 1


def test_overflow_warns_like_a_fresh_list() -> None:
    coord, cell, atype = water_box(12, seed=1)
    verlet = VerletNeighbors(RCUT, [3, 6], skin=0.5)
    with pytest.warns(UserWarning, match="neighbour list overflow"):
        verlet(coord[None], cell[None], atype)
    with pytest.warns(UserWarning, match="neighbour list overflow"):
        verlet(coord[None], cell[None], atype)  # reused, still reported


def test_bad_input() -> None:
    with pytest.raises(ValueError, match="skin"):
        VerletNeighbors(RCUT, [4], skin=-1.0)
    coord, cell, atype = water_box(4, seed=0)
    verlet = VerletNeighbors(RCUT, [20, 40], skin=1.0)
    with pytest.raises(ValueError, match="one frame"):
        verlet(np.stack([coord, coord]), np.stack([cell, cell]), atype)
    verlet(coord[None], cell[None], atype)
    bad = coord.copy()
    bad[0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):  # a NaN position forces the checked rebuild
        verlet(bad[None], cell[None], atype)
