"""The JAX kernels of polypot.backend.jax_kernels against the model's reference code."""

from __future__ import annotations

import numpy as np
import pytest

jax = pytest.importorskip("jax")

from polypot.backend.jax import JaxBackend  # noqa: E402  (registers the kernels)
from polypot.backend.jax_kernels import CHUNK_PAIRS, tabulated_contract  # noqa: E402
from polypot.model.compress import Tabulation  # noqa: E402

jnp = JaxBackend().namespace()
SPEC = Tabulation(lower=-1.0, upper=2.0, stride0=0.05, stride1=0.5, n0=60, n1=8, ntab=3,
                  width=7)


def _inputs(nrow: int, nnei: int = 5, seed: int = 0):
    rng = np.random.default_rng(seed)
    table = rng.normal(size=(SPEC.ntab, SPEC.nint, 6 * SPEC.width))
    # below the table, in the fine and coarse parts, and beyond its top (G held constant)
    s = rng.uniform(SPEC.lower - 0.5, SPEC.top + 1.0, size=(2, nrow, nnei))
    rr = rng.normal(size=(2, nrow, nnei, 4))
    index = rng.integers(0, SPEC.ntab, size=(2, nrow, nnei))
    return jnp.asarray(table), jnp.asarray(s), jnp.asarray(rr), jnp.asarray(index)


def _loss(contract):
    def loss(s, rr, table, index):  # a nonlinear scalar of the contraction, like a fitting net
        return jnp.sum(jnp.tanh(contract(table, s, rr, index)) ** 2)
    return loss


KERNEL = _loss(lambda *a: tabulated_contract(SPEC, *a))
REFERENCE = _loss(SPEC.contract_reference)


@pytest.mark.parametrize("nrow", [1, 3, CHUNK_PAIRS // 5 + 7])  # one chunk, padding, several
def test_value_and_gradient_equal_reference(nrow):
    table, s, rr, index = _inputs(nrow)
    got = tabulated_contract(SPEC, table, s, rr, index)
    want = SPEC.contract_reference(table, s, rr, index)
    assert got.shape == (2, nrow, SPEC.width, 4)
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)
    gk = jax.grad(KERNEL, argnums=(0, 1))(s, rr, table, index)
    gr = jax.grad(REFERENCE, argnums=(0, 1))(s, rr, table, index)
    for a, b in zip(gk, gr, strict=True):
        assert float(jnp.max(jnp.abs(b))) > 1e-3  # a gradient that is there to compare
        np.testing.assert_allclose(a, b, rtol=1e-11, atol=1e-11)


def test_second_derivative_equals_reference():
    """Forward over reverse (what JaxBackend.hessian does) through the hand-written VJP."""
    table, s, rr, index = _inputs(4)
    ts, trr = jnp.ones_like(s) * 0.3, jnp.asarray(np.random.default_rng(1).normal(size=rr.shape))

    def hvp(loss):
        grad = jax.grad(loss, argnums=(0, 1))
        return jax.jvp(lambda a, b: grad(a, b, table, index), (s, rr), (ts, trr))[1]

    for a, b in zip(hvp(KERNEL), hvp(REFERENCE), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-10)


def test_wrong_derivative_would_be_caught():
    """Negative control: dropping the dG/ds term changes the gradient the test compares."""
    table, s, rr, index = _inputs(3)
    gk = jax.grad(KERNEL, argnums=0)(s, rr, table, index)
    frozen = jax.grad(_loss(lambda t, s_, r, i: SPEC.contract_reference(
        t, jax.lax.stop_gradient(s_), r, i)), argnums=0)(s, rr, table, index)
    assert float(jnp.max(jnp.abs(gk - frozen))) > 1e-3


def test_symbolic_row_count_exports():
    """Chunking with a symbolic atom count (the shape of a frozen .hlo program)."""
    table, s, rr, index = _inputs(3)
    nloc, = jax.export.symbolic_shape("nloc")
    f = jax.jit(lambda s_, r, i: tabulated_contract(SPEC, table, s_, r, i))
    exp = jax.export.export(f)(jax.ShapeDtypeStruct((2, nloc, 5), s.dtype),
                               jax.ShapeDtypeStruct((2, nloc, 5, 4), rr.dtype),
                               jax.ShapeDtypeStruct((2, nloc, 5), index.dtype))
    for n in (1, 3):
        np.testing.assert_allclose(exp.call(s[:, :n], rr[:, :n], index[:, :n]),
                                   SPEC.contract_reference(table, s[:, :n], rr[:, :n],
                                                           index[:, :n]), rtol=1e-12,
                                   atol=1e-12)
