"""A thin Array-API namespace over Paddle: exactly the functions ``polypot.model`` uses.

array-api-compat has no Paddle support, so this module maps the Array-API names and keywords
(``axis``/``keepdims``/``dtype``) onto ``paddle`` calls. Each function works on eager tensors
(``paddle.Tensor``) and on static-graph values (``paddle.pir.Value``, while ``paddle.jit``
traces a program). Shapes may hold 0-d int tensors for dynamic dimensions (as ``x.shape`` gives
inside ``paddle.jit.to_static``); they are passed on to Paddle unchanged.

Registered with :func:`polypot.model.array_api.register_namespace` when
:mod:`polypot.backend.paddle` is imported, so ``namespace(x)`` finds it for Paddle arrays.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any

import numpy as np

if "tensorflow" in sys.modules and "paddle" not in sys.modules:
    # Paddle's protobuf crashes the process (SIGSEGV) when imported after TensorFlow
    raise ImportError("paddle cannot be imported after tensorflow in one process (it crashes); "
                      "import paddle (or polypot.backend.paddle) first, or use another process")

import paddle  # noqa: E402

__all__ = [
    "arange", "asarray", "astype", "bool", "broadcast_to", "clip", "concat", "exp", "eye",
    "float32", "float64", "full_like", "int32", "int64", "is_array", "logaddexp", "matmul",
    "max", "maximum", "mean", "ones", "ones_like", "permute_dims", "reshape", "scalar", "sqrt",
    "stack", "sum", "take", "tanh", "where", "zeros", "zeros_like",
]

_builtin_bool = bool  # ``bool`` below is the Array-API dtype

# ---- dtypes ------------------------------------------------------------------------------------
float64 = paddle.float64
float32 = paddle.float32
int64 = paddle.int64
int32 = paddle.int32
bool = paddle.bool  # noqa: A001  (Array-API name)

#: the Value class of static (PIR) programs, and the legacy static Variable
_STATIC_TYPES: tuple[type, ...] = (paddle.pir.Value, paddle.static.Variable)
_ARRAY_TYPES: tuple[type, ...] = (paddle.Tensor, *_STATIC_TYPES)


def is_array(x: Any) -> _builtin_bool:
    """Whether ``x`` is a Paddle array: an eager tensor or a value of a static program."""
    return isinstance(x, _ARRAY_TYPES)


def _dtype(dtype: Any) -> Any:
    """A Paddle dtype from a Paddle dtype, a NumPy dtype/type or its name (None stays None)."""
    if dtype is None or isinstance(dtype, paddle.dtype):
        return dtype
    return getattr(paddle, np.dtype(dtype).name)


def _numpy_dtype(dtype: Any) -> np.dtype:
    """The NumPy dtype of a Paddle dtype."""
    return np.dtype(str(dtype).removeprefix("paddle."))


def _shape(shape: Any) -> list[Any]:
    """A shape as a list of ints or 0-d int tensors (an int becomes a 1-tuple)."""
    if isinstance(shape, int):
        return [shape]
    if is_array(shape):  # a 1-D shape tensor
        return shape
    return [int(s) if isinstance(s, (int, np.integer)) else s for s in shape]


def _axis(axis: int | Sequence[int] | None) -> int | list[int] | None:
    return list(axis) if isinstance(axis, (tuple, list)) else axis


# ---- creation ----------------------------------------------------------------------------------
def asarray(obj: Any, dtype: Any = None, device: Any = None, copy: _builtin_bool | None = None
            ) -> Any:
    """Array from a Paddle array (cast if ``dtype``), NumPy array, scalar or nested list."""
    dt = _dtype(dtype)
    if is_array(obj):
        return obj if dt is None else astype(obj, dt, copy=False)
    return paddle.to_tensor(np.asarray(obj, dtype=None if dt is None else _numpy_dtype(dt)))


def zeros(shape: Any, dtype: Any = None, device: Any = None) -> Any:
    """Zeros of ``shape`` (default dtype: Paddle's default float)."""
    return paddle.zeros(_shape(shape), dtype=_dtype(dtype) or paddle.get_default_dtype())


def ones(shape: Any, dtype: Any = None, device: Any = None) -> Any:
    """Ones of ``shape`` (default dtype: Paddle's default float)."""
    return paddle.ones(_shape(shape), dtype=_dtype(dtype) or paddle.get_default_dtype())


def zeros_like(x: Any, dtype: Any = None, device: Any = None) -> Any:
    """Zeros shaped like ``x`` (dtype of ``x`` unless given)."""
    if paddle.in_dynamic_mode():
        return paddle.zeros_like(x, dtype=_dtype(dtype))
    return full_like(x, 0, dtype)


def ones_like(x: Any, dtype: Any = None, device: Any = None) -> Any:
    """Ones shaped like ``x`` (dtype of ``x`` unless given)."""
    if paddle.in_dynamic_mode():
        return paddle.ones_like(x, dtype=_dtype(dtype))
    return full_like(x, 1, dtype)


def full_like(x: Any, fill_value: Any, dtype: Any = None, device: Any = None) -> Any:
    """An array shaped like ``x`` filled with ``fill_value`` (exact in float64, also in static
    programs, where ``paddle.full_like`` stores the value as a float32 attribute)."""
    dt = _dtype(dtype) or x.dtype
    if paddle.in_dynamic_mode():
        return paddle.full_like(x, fill_value, dtype=dt)
    # (static: also avoids paddle.full_like's warning that values have no 'place')
    return paddle.broadcast_to(scalar(fill_value, dt), paddle.shape(x))


def scalar(value: Any, dtype: Any) -> Any:
    """A 0-d array holding the Python number ``value`` exactly in ``dtype``."""
    return paddle.full([], value, dtype=_dtype(dtype))


def arange(start: Any, stop: Any = None, step: Any = 1, dtype: Any = None,
           device: Any = None) -> Any:
    """``[start, stop)`` by ``step``; ``arange(n)`` is ``[0, n)``. Bounds may be 0-d tensors."""
    if stop is None:
        start, stop = 0, start
    return paddle.arange(start, stop, step, dtype=_dtype(dtype))


def eye(n_rows: int, n_cols: int | None = None, k: int = 0, dtype: Any = None,
        device: Any = None) -> Any:
    """Identity-like (n_rows, n_cols) matrix (``k`` = 0 only)."""
    if k != 0:
        raise NotImplementedError("eye with k != 0 is not needed by polypot.model")
    return paddle.eye(n_rows, n_cols, dtype=_dtype(dtype) or paddle.get_default_dtype())


# ---- shape and data movement -------------------------------------------------------------------
def reshape(x: Any, shape: Any, copy: _builtin_bool | None = None) -> Any:
    """``x`` with a new shape (entries may be -1 or 0-d int tensors)."""
    return paddle.reshape(x, _shape(shape))


def permute_dims(x: Any, axes: Sequence[int]) -> Any:
    """``x`` with its axes reordered to ``axes``."""
    return paddle.transpose(x, list(axes))


def broadcast_to(x: Any, shape: Any) -> Any:
    """``x`` broadcast to ``shape`` (entries may be 0-d int tensors)."""
    return paddle.broadcast_to(x, _shape(shape))


def concat(arrays: Sequence[Any], axis: int | None = 0) -> Any:
    """Join along ``axis`` (None: flatten first)."""
    if axis is None:
        return paddle.concat([paddle.reshape(a, [-1]) for a in arrays], axis=0)
    return paddle.concat(list(arrays), axis=axis)


def stack(arrays: Sequence[Any], axis: int = 0) -> Any:
    """Join same-shaped arrays along a new ``axis``."""
    return paddle.stack(list(arrays), axis=axis)


def take(x: Any, indices: Any, axis: int | None = None) -> Any:
    """Entries of ``x`` at the 1-D integer ``indices`` along ``axis`` (None: flattened)."""
    if axis is None:
        x, axis = paddle.reshape(x, [-1]), 0
    return paddle.gather(x, indices, axis=axis)


def astype(x: Any, dtype: Any, copy: _builtin_bool = True, device: Any = None) -> Any:
    """``x`` cast to ``dtype`` (Paddle or NumPy dtype); ``copy=False`` may return ``x``."""
    dt = _dtype(dtype)
    if not copy and x.dtype == dt:
        return x
    return paddle.cast(x, dt)


def where(condition: Any, x1: Any, x2: Any) -> Any:
    """Elementwise ``x1 if condition else x2`` with broadcasting; scalars take the other's dtype."""
    if not is_array(x1):
        x1 = full_like(x2, x1)
    if not is_array(x2):
        x2 = full_like(x1, x2)
    return paddle.where(condition, x1, x2)


# ---- arithmetic --------------------------------------------------------------------------------
def matmul(x1: Any, x2: Any) -> Any:
    """Matrix product over the last two axes, batched over the others."""
    return paddle.matmul(x1, x2)


def sqrt(x: Any) -> Any:
    """Elementwise square root."""
    return paddle.sqrt(x)


def exp(x: Any) -> Any:
    """Elementwise exponential."""
    return paddle.exp(x)


def tanh(x: Any) -> Any:
    """Elementwise hyperbolic tangent."""
    return paddle.tanh(x)


def logaddexp(x1: Any, x2: Any) -> Any:
    """log(exp(x1) + exp(x2)), computed stably."""
    return paddle.logaddexp(x1, x2)


def maximum(x1: Any, x2: Any) -> Any:
    """Elementwise larger of ``x1`` and ``x2`` (broadcast)."""
    return paddle.maximum(x1, x2)


def clip(x: Any, min: Any = None, max: Any = None) -> Any:  # noqa: A002  (Array-API names)
    """``x`` limited to [min, max] (either bound may be None).

    The bounds are passed as 0-d arrays of ``x``'s dtype: as Python floats Paddle rounds
    them to float32 in static programs.
    """
    if paddle.in_dynamic_mode() or x.dtype != float64:
        return paddle.clip(x, min, max)
    lo = None if min is None or is_array(min) else scalar(min, x.dtype)
    hi = None if max is None or is_array(max) else scalar(max, x.dtype)
    return paddle.clip(x, min if lo is None else lo, max if hi is None else hi)


# ---- reductions --------------------------------------------------------------------------------
def sum(x: Any, axis: int | Sequence[int] | None = None, dtype: Any = None,  # noqa: A001
        keepdims: _builtin_bool = False) -> Any:
    """Sum over ``axis`` (None: all), optionally accumulated in ``dtype``."""
    return paddle.sum(x, axis=_axis(axis), dtype=_dtype(dtype), keepdim=keepdims)


def mean(x: Any, axis: int | Sequence[int] | None = None, keepdims: _builtin_bool = False
         ) -> Any:
    """Mean over ``axis`` (None: all)."""
    return paddle.mean(x, axis=_axis(axis), keepdim=keepdims)


def max(x: Any, axis: int | Sequence[int] | None = None,  # noqa: A001
        keepdims: _builtin_bool = False) -> Any:
    """Largest entry along ``axis``.

    Along one axis it is gathered at ``argmax`` (the gradient goes to the first maximum):
    Paddle's own ``max`` gradient kernel is ~100x slower on the CPU (0.4 s for the
    (36, 1, 120, 120) attention logits of a DPA-1 model, vs 5 ms here).
    """
    if isinstance(axis, int):
        idx = paddle.argmax(x, axis=axis, keepdim=True)
        out = paddle.take_along_axis(x, idx, axis=axis)
        return out if keepdims else paddle.squeeze(out, axis=axis)
    return paddle.max(x, axis=_axis(axis), keepdim=keepdims)
