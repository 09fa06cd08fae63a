"""Paddle's double backward (``polypot.backend.paddle.double_backward``): second derivatives equal
torch's (and closed forms) to 1e-10 in float64.

In Paddle's eager primitive mode the composite gradients of ``add`` and ``subtract`` pass the
output gradient through (``by_pass``) and a double backward through them is wrong when an
expression is computed twice, e.g. d2/dx2 (x + x) * (x + x) = 12 instead of 8, and LayerNorm
(two ``x - mean`` nodes) gets wrong second derivatives: DPA-1 training gradients and Hessians
were wrong. Without primitive mode, ``pow``'s double-grad kernel fails ("DX can not be
nullptr") when no gradient for the base is asked for. ``double_backward`` keeps primitive mode
and skips those composite gradients.
"""

from __future__ import annotations

import copy
import importlib.util
import sys

import numpy as np
import pytest

if "tensorflow" in sys.modules and "paddle" not in sys.modules:
    pytest.skip("paddle cannot be imported after tensorflow in one process",
                allow_module_level=True)
paddle = pytest.importorskip("paddle")

from polypot.backend import paddle as pdb  # noqa: E402
from polypot.backend import paddle_namespace as pnp  # noqa: E402
from polypot.model import array_api as aa  # noqa: E402
from polypot.model.network import LayerNorm  # noqa: E402

TOL = 1e-10
HAS_TORCH = importlib.util.find_spec("torch") is not None
needs_torch = pytest.mark.skipif(not HAS_TORCH, reason="torch not installed")

pdb.PaddleBackend()  # registers the namespace
RNG = np.random.default_rng(0)
X = RNG.standard_normal((2, 3, 5))
W = RNG.standard_normal((5, 5))
C = RNG.standard_normal((2, 3, 5))
D = RNG.standard_normal((2, 3, 5))


def _layer_norm(xp, x, w):
    return LayerNorm(5)({"w": w[0], "b": w[1]}, xp.tanh(xp.matmul(x, w)))


def _twice(xp, x, w):
    t = xp.matmul(x, w)
    m = xp.mean(t, axis=-1, keepdims=True)
    return (t - m) * (t - m) + (t + m) * (t + m)


#: y = f(xp, x, w), y shaped like x
CASES = {
    "add_sub_twice": _twice,
    "layer_norm": _layer_norm,
    "pow": lambda xp, x, w: xp.matmul(x, w) ** 2 * x,
    "softmax": lambda xp, x, w: aa.softmax(xp, xp.matmul(x, w)),
    "l2_normalize": lambda xp, x, w: aa.l2_normalize(xp, xp.matmul(x, w)),
    "safe_norm": lambda xp, x, w: aa.safe_norm(xp, xp.matmul(x, w)) * x,
    "where": lambda xp, x, w: xp.where(x > 0, xp.matmul(x, w), xp.zeros_like(x)) ** 2,
    "exp_tanh": lambda xp, x, w: xp.exp(xp.tanh(xp.matmul(x, w))),
    "matmul_transpose": lambda xp, x, w: xp.matmul(
        xp.matmul(xp.matmul(x, w), xp.permute_dims(x, (0, 2, 1))), x),
}


def _paddle_second(f, wrt_x: bool) -> list[np.ndarray]:
    """d/d(x, w) or d/dw of L = sum(g * D) + sum(g^2), g = d sum(f(x, w) * C) / dx."""
    x = paddle.to_tensor(X)
    x.stop_gradient = False
    w = paddle.to_tensor(W)
    w.stop_gradient = False
    with pdb.double_backward():
        y = f(pnp, x, w)
        (g,) = paddle.grad([paddle.sum(y * paddle.to_tensor(C))], [x], create_graph=True)
        loss = paddle.sum(g * paddle.to_tensor(D)) + paddle.sum(g ** 2)
        out = paddle.grad([loss], [x, w] if wrt_x else [w])
    return [t.numpy() for t in out]


def _torch_second(f, wrt_x: bool) -> list[np.ndarray]:
    import array_api_compat.torch as tnp
    import torch

    x = torch.tensor(X, requires_grad=True)
    w = torch.tensor(W, requires_grad=True)
    y = f(tnp, x, w)
    (g,) = torch.autograd.grad((y * torch.tensor(C)).sum(), x, create_graph=True)
    loss = (g * torch.tensor(D)).sum() + (g ** 2).sum()
    return [t.numpy() for t in torch.autograd.grad(loss, [x, w] if wrt_x else [w])]


@needs_torch
@pytest.mark.parametrize("wrt_x", [True, False], ids=["x_and_w", "w_only"])
@pytest.mark.parametrize("name", list(CASES))
def test_second_derivatives_equal_torch(name, wrt_x):
    got = _paddle_second(CASES[name], wrt_x)
    want = _torch_second(CASES[name], wrt_x)
    for a, b in zip(got, want, strict=True):
        np.testing.assert_allclose(a, b, rtol=TOL, atol=TOL * np.abs(b).max())


V = np.array([1.0, -2.0, 0.5, 3.0])


@pytest.mark.parametrize(("f", "hv"), [
    (lambda x: (x + x) * (x + x), 8.0 * V),
    (lambda x: (lambda a: (a - x) * (a - x))(x * 3), 8.0 * V),
    (lambda x: (lambda m: (x - m) * (x - m))(paddle.mean(x)), 2.0 * (V - V.mean())),
], ids=["(x+x)*(x+x)", "(a-x)*(a-x),a=3x", "(x-m)*(x-m),m=mean(x)"])
def test_repeated_add_subtract_closed_form(f, hv):
    """The smallest cases: Hessian-vector products H V of sum(f(x)) (H = 8 I; 2 (I - 1/n))."""
    x = paddle.to_tensor(np.arange(1.0, 5.0))
    x.stop_gradient = False
    with pdb.double_backward():
        (g,) = paddle.grad([paddle.sum(f(x))], [x], create_graph=True)
        (got,) = paddle.grad([paddle.sum(g * paddle.to_tensor(V))], [x])
    np.testing.assert_allclose(got.numpy(), hv, rtol=TOL, atol=TOL)


def test_pow_base_without_gradient():
    """Only d/dw of d/dx sum(x^2 w): pow's double-grad kernel would fail (no DX)."""
    x = paddle.to_tensor(np.arange(1.0, 4.0))
    x.stop_gradient = False
    w = paddle.to_tensor(np.array([2.0]))
    w.stop_gradient = False
    with pdb.double_backward():
        (g,) = paddle.grad([paddle.sum(x ** 2 * w)], [x], create_graph=True)
        (gw,) = paddle.grad([paddle.sum(g)], [w])
    np.testing.assert_allclose(gw.numpy(), [12.0], rtol=TOL)


def test_double_backward_restores_prim_mode():
    core = paddle.framework.core
    was = core._is_eager_prim_enabled()
    try:
        for before in (False, True):
            core.set_prim_eager_enabled(before)
            with pdb.double_backward():
                assert core._is_eager_prim_enabled()
            assert bool(core._is_eager_prim_enabled()) is before
    finally:
        core.set_prim_eager_enabled(bool(was))


# ---- the model: DPA-1 with attention --------------------------------------------------------
def _tiny_attention():
    from polypot.model import build_model
    from polypot.neighbor import build_neighbor_data

    cfg = {"type_map": ["O", "H"],
           "descriptor": {"type": "se_atten", "sel": 24, "rcut": 3.5, "rcut_smth": 0.5,
                          "neuron": [4, 8], "axis_neuron": 4, "attn": 8, "attn_layer": 2,
                          "tebd_dim": 4, "smooth_type_embedding": True},
           "fitting_net": {"neuron": [8, 8]}}
    model, params = build_model(copy.deepcopy(cfg), seed=1)
    rng = np.random.default_rng(3)
    coord = rng.uniform(0.0, 4.0, (1, 6, 3))
    nd = build_neighbor_data(coord, np.eye(3)[None] * 4.0, np.array([0, 0, 1, 1, 1, 1]),
                             model.rcut, model.sel)
    return model, params, nd


def _force_loss_grads(backend, model, params, nd):
    from polypot.model.derivatives import derive
    from polypot.train.params import flatten, split, unflatten

    trainable, fixed = split(flatten(params))
    rng = np.random.default_rng(5)  # away from the initial LayerNorm w = 1, b = 0
    trainable = {k: backend.asarray(v + 0.1 * rng.standard_normal(v.shape))
                 for k, v in trainable.items()}
    fixed = {k: backend.asarray(v) for k, v in fixed.items()}
    xp = backend.namespace()
    coord, atype, nlist, mapping = (backend.asarray(a)
                                    for a in (nd.coord, nd.atype, nd.nlist, nd.mapping))

    def loss_fn(tr):
        p = unflatten({**tr, **fixed}, params)
        out = derive(backend, lambda x: model.atomic_energy(p, x, atype, nlist), coord,
                     mapping, nd.nloc)
        return xp.sum(out["force"] ** 2) + xp.sum(out["energy"]), {}

    loss, _, grads = backend.value_and_grad(loss_fn, trainable)
    return float(backend.to_numpy(loss)), {k: backend.to_numpy(v) for k, v in grads.items()}


@needs_torch
def test_attention_force_loss_gradients_equal_torch():
    from polypot.backend.torch import TorchBackend

    model, params, nd = _tiny_attention()
    lp, gp = _force_loss_grads(pdb.PaddleBackend(), model, params, nd)
    lt, gt = _force_loss_grads(TorchBackend(), model, params, nd)
    assert lp == pytest.approx(lt, rel=TOL)
    for k, want in gt.items():
        np.testing.assert_allclose(gp[k], want, rtol=TOL, atol=TOL * np.abs(want).max(),
                                   err_msg=k)


def test_attention_hessian_symmetric_and_equal_finite_differences():
    from polypot.model.derivatives import derive, hessian

    model, params, nd = _tiny_attention()
    b = pdb.PaddleBackend()
    p = pdb.map_params(params, b.asarray)
    atype, nlist, mapping = (b.asarray(a) for a in (nd.atype, nd.nlist, nd.mapping))

    def atomic_energy(x):
        return model.atomic_energy(p, x, atype, nlist)

    h = b.to_numpy(hessian(b, atomic_energy, b.asarray(nd.coord), mapping, nd.nloc))[0]
    np.testing.assert_allclose(h, h.T, atol=1e-12 * np.abs(h).max())
    # central differences of the forces (images move with their owners)
    step = 1e-5
    n3 = 3 * nd.nloc
    for i in range(0, n3, 4):
        forces = []
        for sign in (1.0, -1.0):
            coord = nd.coord.copy()
            moved = nd.mapping[0] == i // 3
            coord[0, moved, i % 3] += sign * step
            out = derive(b, atomic_energy, b.asarray(coord), mapping, nd.nloc)
            forces.append(b.to_numpy(out["force"]).reshape(-1))
        np.testing.assert_allclose(h[i], -(forces[0] - forces[1]) / (2 * step),
                                   atol=1e-6 * np.abs(h).max())
