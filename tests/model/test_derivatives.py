"""Forces and virials from automatic differentiation equal finite differences of the energy,
on every installed autodiff backend."""

from __future__ import annotations

import numpy as np
import pytest
from reference_data import FIXTURES, fixture_frames

from polypot import DeepPot
from polypot.backend.registry import AUTODIFF_PREFERENCE, available
from polypot.data.water_box import water_box

AUTODIFF = [b for b in AUTODIFF_PREFERENCE if b in available()]
# se_atten_l2 has non-smooth attention (a neighbour crossing rcut makes the energy jump), so
# strain differences, which move every pair, are only taken for the smooth models
MODELS = ["se_e2_a", "se_atten_v2_l0", "se_atten_l2", "dpa2"]
SMOOTH = ["se_e2_a", "se_atten_v2_l0", "dpa2"]
H = 1e-4  # Å, central differences: error O(H^2)


def small_system(case: str, name: str):
    """36 atoms: the fixture's open-boundary cluster, or a generated periodic water box."""
    if case == "cluster":
        coord, _, atype = fixture_frames(name, "cluster")
        return coord[:1], None, atype
    coord, cell, atype = water_box(12, seed=3)
    return coord[None], cell[None], atype


_LOADED: dict = {}


def _load(name: str, backend: str) -> DeepPot:
    if (name, backend) not in _LOADED:
        _LOADED[name, backend] = DeepPot(FIXTURES / name / "model.dp", backend=backend)
    return _LOADED[name, backend]


@pytest.fixture(params=[(m, b) for m in MODELS for b in AUTODIFF], ids=lambda p: "-".join(p))
def dp(request):
    return request.param[0], _load(*request.param)


@pytest.fixture(params=[(m, b) for m in SMOOTH for b in AUTODIFF], ids=lambda p: "-".join(p))
def smooth_dp(request):
    return request.param[0], _load(*request.param)


def _energy(dp, coord, cell, atype) -> float:
    return float(dp.eval_energy(coord, cell, atype)[0][0, 0])


@pytest.mark.parametrize("case", ["periodic", "cluster"])
def test_force_is_minus_energy_gradient(dp, case):
    name, model = dp
    coord, cell, atype = small_system(case, name)
    _, force, _ = model.eval(coord, cell, atype)
    rng = np.random.default_rng(7)
    for atom, k in zip(rng.choice(coord.shape[1], 4, replace=False), rng.integers(0, 3, 4),
                       strict=True):
        plus, minus = coord.copy(), coord.copy()
        plus[0, atom, k] += H
        minus[0, atom, k] -= H
        fd = -(_energy(model, plus, cell, atype) - _energy(model, minus, cell, atype)) / (2 * H)
        assert force[0, atom, k] == pytest.approx(fd, abs=1e-6, rel=1e-5)


def test_virial_is_minus_strain_derivative(smooth_dp):
    """W_ij = -dE/d eps_ij for x -> (1 + eps) x and cell rows -> (1 + eps) h_k."""
    name, model = smooth_dp
    coord, cell, atype = small_system("periodic", name)
    _, _, virial = model.eval(coord, cell, atype)
    fd = np.zeros(9)
    for ij in range(9):
        es = []
        for sign in (1.0, -1.0):
            strain = np.eye(3)
            strain[ij // 3, ij % 3] += sign * H
            es.append(_energy(model, coord @ strain.T, cell @ strain.T, atype))
        fd[ij] = -(es[0] - es[1]) / (2 * H)
    np.testing.assert_allclose(virial[0], fd, atol=1e-5, rtol=1e-5)


def test_atomic_outputs_sum_to_totals(dp):
    name, model = dp
    coord, cell, atype = small_system("periodic", name)
    e, f, v, ae, av = model.eval(coord, cell, atype, atomic=True)
    np.testing.assert_allclose(ae.sum(axis=(1, 2)), e[:, 0], rtol=1e-12)
    np.testing.assert_allclose(av.sum(axis=1), v, rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(f.sum(axis=1), 0.0, atol=1e-9)  # translation invariance
