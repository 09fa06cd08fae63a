"""Physical invariances of the reference model: translation, rotation, permutation, E = sum E_i,
smoothness at the cutoff. NumPy backend (energies)."""

from __future__ import annotations

import numpy as np
import pytest
from reference_data import FIXTURE_MODELS, FIXTURES, fixture_frames

from polypot import DeepPot

RNG = np.random.default_rng(42)


def random_rotation(rng: np.random.Generator) -> np.ndarray:
    q, r = np.linalg.qr(rng.normal(size=(3, 3)))
    q = q * np.sign(np.diag(r))
    return q if np.linalg.det(q) > 0 else -q


@pytest.fixture(scope="module", params=FIXTURE_MODELS)
def model(request):
    return request.param, DeepPot(FIXTURES / request.param / "model.dp", backend="numpy")


def _frames(name: str):
    coord, cell, atype = fixture_frames(name, "periodic")
    return coord[:1], cell[:1], atype


def test_translation(model):
    name, dp = model
    coord, cell, atype = _frames(name)
    e0, ae0 = dp.eval_energy(coord, cell, atype)
    e1, ae1 = dp.eval_energy(coord + np.array([1.3, -7.1, 22.4]), cell, atype)
    np.testing.assert_allclose(ae1, ae0, rtol=1e-12, atol=1e-10)


def test_rotation(model):
    name, dp = model
    coord, cell, atype = _frames(name)
    rot = random_rotation(RNG)
    e0, ae0 = dp.eval_energy(coord, cell, atype)
    e1, ae1 = dp.eval_energy(coord @ rot.T, cell @ rot.T, atype)
    np.testing.assert_allclose(ae1, ae0, rtol=1e-11, atol=1e-10)
    # open boundaries too
    c, _, t = fixture_frames(name, "cluster")
    e2, _ = dp.eval_energy(c, None, t)
    e3, _ = dp.eval_energy(c @ rot.T, None, t)
    np.testing.assert_allclose(e3, e2, rtol=1e-12)


def test_rotation_check_can_fail(model):
    """Negative control: a reflection of only some atoms changes the energy."""
    name, dp = model
    coord, cell, atype = _frames(name)
    moved = coord.copy()
    moved[0, :10] = moved[0, :10] @ random_rotation(RNG).T
    e0, _ = dp.eval_energy(coord, cell, atype)
    e1, _ = dp.eval_energy(moved, cell, atype)
    assert abs(e1[0, 0] - e0[0, 0]) > 1e-6


def test_permutation_and_sum(model):
    name, dp = model
    coord, cell, atype = _frames(name)
    perm = RNG.permutation(len(atype))
    e0, ae0 = dp.eval_energy(coord, cell, atype)
    e1, ae1 = dp.eval_energy(coord[:, perm], cell, atype[perm])
    np.testing.assert_allclose(ae1[0], ae0[0, perm], rtol=1e-12, atol=1e-10)
    np.testing.assert_allclose(e1, e0, rtol=1e-13)
    np.testing.assert_allclose(e0[:, 0], ae0.sum(axis=(1, 2)), rtol=1e-14)


@pytest.mark.parametrize("name", ["se_e2_a", "se_atten_l0", "se_atten_v2_l0", "dpa2"])
def test_smooth_at_cutoff(name):
    """A water-like trimer whose third atom moves across rcut: E is constant beyond, and E and
    dE/dr are continuous at rcut (the switch is C2, so E(rc - d) - E(rc) shrinks like d^3)."""
    dp = DeepPot(FIXTURES / name / "model.dp", backend="numpy")
    rc = dp.get_rcut()
    atype = np.array([0, 1, 1])

    def energy(r: float) -> float:
        coord = np.array([[[0.0, 0.0, 0.0], [-0.6, 0.75, 0.0], [r, 0.0, 0.0]]]) @ random_rotation(
            np.random.default_rng(3)).T
        return float(dp.eval_energy(coord, None, atype)[0][0, 0])

    far = energy(rc + 1e-6)
    assert energy(rc + 0.5) == pytest.approx(far, abs=1e-12)
    gaps = [abs(energy(rc - d) - far) for d in (3e-2, 3e-3)]
    assert gaps[0] > 1e-10  # the neighbour is seen inside rcut
    # slope (E(rc) - E(rc - d)) / d -> 0: first derivative continuous
    assert gaps[1] / 3e-3 < 1e-5
    # at least quadratic decay of the gap: C1 (cubic expected)
    assert gaps[0] / gaps[1] > 100


def test_smoothness_check_can_fail():
    """Negative control: DPA-1 attention without ``smooth_type_embedding`` lets a neighbour at
    rcut enter the softmax with a finite weight, so the energy jumps there."""
    dp = DeepPot(FIXTURES / "se_atten_l2" / "model.dp", backend="numpy")
    rc = dp.get_rcut()
    atype = np.array([0, 1, 1])

    def energy(r: float) -> float:
        coord = np.array([[[0.0, 0.0, 0.0], [-0.6, 0.75, 0.0], [r, 0.0, 0.0]]])
        return float(dp.eval_energy(coord, None, atype)[0][0, 0])

    far = energy(rc + 1e-6)
    assert abs(energy(rc - 3e-3) - far) / 3e-3 > 1e-5
