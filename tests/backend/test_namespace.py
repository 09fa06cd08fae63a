"""Conformance: the subset of the Array API that ``polypot.model`` uses, on every installed
backend's namespace, against NumPy."""

from __future__ import annotations

import numpy as np
import pytest

from polypot.backend.registry import available, get_backend

RNG = np.random.default_rng(0)
A = RNG.normal(size=(2, 3, 4))
B = RNG.normal(size=(2, 4, 5))
IDX = np.array([2, 0, 1, 1], dtype=np.int64)

# (name, function of (xp, arrays...) -> array, NumPy inputs)
CASES = [
    ("reshape", lambda xp, a: xp.reshape(a, (6, 4)), [A]),
    ("reshape_infer", lambda xp, a: xp.reshape(a, (-1,)), [A]),
    ("where", lambda xp, a: xp.where(a > 0, a, xp.zeros_like(a)), [A]),
    ("take", lambda xp, a, i: xp.take(xp.reshape(a, (6, 4)), i, axis=0), [A, IDX]),
    ("astype", lambda xp, a: xp.astype(a > 0, a.dtype), [A]),
    ("permute_dims", lambda xp, a: xp.permute_dims(a, (0, 2, 1)), [A]),
    ("matmul", lambda xp, a, b: xp.matmul(a, b), [A, B]),
    ("sum", lambda xp, a: xp.sum(a, axis=1), [A]),
    ("sum_keepdims", lambda xp, a: xp.sum(a, axis=-1, keepdims=True), [A]),
    ("concat", lambda xp, a: xp.concat([a, a * 2.0], axis=-1), [A]),
    ("full_like", lambda xp, a: xp.full_like(a, -3.0), [A]),
    ("zeros", lambda xp, a: xp.zeros((2, 3), dtype=a.dtype) + 1.0, [A]),
    ("ones", lambda xp, a: xp.ones((2, 3), dtype=a.dtype), [A]),
    ("ones_like", lambda xp, a: xp.ones_like(a), [A]),
    ("sqrt", lambda xp, a: xp.sqrt(a * a), [A]),
    ("exp", lambda xp, a: xp.exp(a), [A]),
    ("tanh", lambda xp, a: xp.tanh(a), [A]),
    ("logaddexp", lambda xp, a: xp.logaddexp(a, xp.zeros_like(a)), [A]),
    ("broadcast_to", lambda xp, a: xp.broadcast_to(a[:, None, :, :], (2, 5, 3, 4)), [A]),
    ("mean", lambda xp, a: xp.mean(a, axis=-1, keepdims=True), [A]),
    ("clip", lambda xp, a: xp.clip(a, -0.5, 0.5), [A]),
    ("asarray", lambda xp, a: a + xp.asarray([1.0, 2.0, 3.0, 4.0], dtype=a.dtype), [A]),
    ("arange", lambda xp, i: i + xp.arange(4, dtype=i.dtype) * 10, [IDX]),
    ("stack", lambda xp, a: xp.stack([a, -a], axis=-1), [A]),
    ("maximum", lambda xp, a: xp.maximum(a, xp.full_like(a, 0.1)), [A]),
    ("max", lambda xp, a: xp.max(a, axis=-1, keepdims=True), [A]),
    ("eye", lambda xp, a: xp.eye(3, dtype=a.dtype), [A]),
    ("bool_ops", lambda xp, a: xp.astype((a > 0) & (a < 1), a.dtype), [A]),
    ("int_compare", lambda xp, i: xp.astype(i == 1, xp.float64), [IDX]),
    ("ones_bool", lambda xp, a: xp.astype(xp.ones((2, 2), dtype=xp.bool), a.dtype), [A]),
    ("slicing", lambda xp, a: a[:, :2, None, 1:3] ** 2 - a[..., 0:1][:, :2, None, :], [A]),
]


@pytest.mark.parametrize("backend", available())
@pytest.mark.parametrize("name,fn,inputs", CASES, ids=[c[0] for c in CASES])
def test_namespace_function_matches_numpy(backend, name, fn, inputs):
    b = get_backend(backend)
    ref = fn(get_backend("numpy").namespace(), *inputs)
    got = b.to_numpy(fn(b.namespace(), *[b.asarray(x) for x in inputs]))
    assert got.shape == ref.shape, name
    np.testing.assert_allclose(got, ref, rtol=1e-12, atol=1e-12)
