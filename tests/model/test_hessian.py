"""Hessians (every autodiff backend): symmetric, equal to finite differences of the forces, and
equal across backends."""

from __future__ import annotations

import numpy as np
import pytest
from reference_data import FIXTURES

from polypot import DeepPot
from polypot.backend.registry import AUTODIFF_PREFERENCE, available
from polypot.data.water_box import water_box

AUTODIFF = [b for b in AUTODIFF_PREFERENCE if b in available()]


def _system(periodic: bool):
    coord, cell, atype = water_box(3, seed=4)  # 9 atoms
    if periodic:
        return coord[None], cell[None] + np.diag([0.0, 0.3, 0.6])[None], atype
    return coord[None], None, atype


def _cases() -> list:
    """(backend, periodic, name); DPA-2 on open boundaries with -m slow (10-35 s each):
    periodic DPA-2 covers the ghosts' message passing on every backend, and the open-boundary
    DPA-2 Hessian of JAX's chunked program is compared with its whole-system one by default in
    tests/backend/test_jax_kernels.py."""
    out = []
    for name in ("se_e2_a", "se_atten_v2_l0", "dpa2"):
        for periodic, label in ((True, "periodic"), (False, "cluster")):
            for backend in AUTODIFF:
                slow = name == "dpa2" and not periodic
                out.append(pytest.param(backend, periodic, name, id=f"{name}-{label}-{backend}",
                                        marks=pytest.mark.slow if slow else ()))
    return out


@pytest.mark.parametrize("backend, periodic, name", _cases())
def test_hessian_symmetric_and_finite_differences(backend, periodic, name):
    dp = DeepPot(FIXTURES / name / "model.dp", backend=backend)
    coord, cell, atype = _system(periodic)
    h = dp.eval_hessian(coord, cell, atype)
    n3 = 3 * len(atype)
    assert h.shape == (1, n3, n3)
    np.testing.assert_allclose(h, np.transpose(h, (0, 2, 1)), atol=1e-10)
    step = 1e-4
    for i in (0, 4, n3 - 1):
        plus, minus = coord.copy(), coord.copy()
        plus[0, i // 3, i % 3] += step
        minus[0, i // 3, i % 3] -= step
        fp = dp.eval(plus, cell, atype)[1].reshape(-1)
        fm = dp.eval(minus, cell, atype)[1].reshape(-1)
        np.testing.assert_allclose(h[0, i], -(fp - fm) / (2 * step), atol=1e-6, rtol=1e-5)


def test_hessian_agrees_across_backends():
    """DPA-1 with two attention layers (Paddle: see ``polypot.backend.paddle.double_backward``)."""
    coord, cell, atype = _system(True)
    hs = [DeepPot(FIXTURES / "se_atten_l2" / "model.dp", backend=b).eval_hessian(coord, cell,
                                                                               atype)
          for b in AUTODIFF]
    for h in hs:
        np.testing.assert_allclose(h, np.transpose(h, (0, 2, 1)), atol=1e-10)
    for h in hs[1:]:
        np.testing.assert_allclose(h, hs[0], rtol=1e-10, atol=1e-10)
