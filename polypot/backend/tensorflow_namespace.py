"""A thin Array-API namespace over TensorFlow: exactly the functions ``polypot.model`` uses.

Eager ``tf.Tensor`` s work as they are (their ``.shape`` holds ints, TensorFlow supplies the
Python operators and NumPy-style slicing). Inside a ``tf.function`` traced with unknown
dimensions (nf, nall, nloc of a frozen file) ``tensor.shape`` holds ``None`` there, which the
model's shape arithmetic (``nf * nloc``, ``x[:, :nloc]``) cannot use. For that case the
tensors are wrapped in :class:`DynArray`, whose ``.shape`` gives the static size where it is
known and a scalar int64 tensor (``tf.shape(x)[i]``) where it is not; every function here accepts
such shapes. Inside :func:`dynamic_shapes` every result is a ``DynArray``, so the wrapper never
leaks out of the traced function by accident and never meets a bare symbolic tensor.

Imports TensorFlow and NumPy only (never ``polypot.model``).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # before TensorFlow's C++ logging starts

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

_state = threading.local()


def _dynamic() -> bool:
    return getattr(_state, "depth", 0) > 0


@contextmanager
def dynamic_shapes() -> Iterator[None]:
    """While active, namespace results are :class:`DynArray` (use while tracing with None dims)."""
    _state.depth = getattr(_state, "depth", 0) + 1
    try:
        yield
    finally:
        _state.depth -= 1


# ---- the wrapper -------------------------------------------------------------------------------
def unwrap(x: Any) -> Any:
    """The ``tf.Tensor`` inside a :class:`DynArray`; anything else unchanged."""
    return x.t if isinstance(x, DynArray) else x


def _unwrap_key(key: Any) -> Any:
    if isinstance(key, tuple):
        return tuple(_unwrap_key(k) for k in key)
    if isinstance(key, slice):
        return slice(unwrap(key.start), unwrap(key.stop), unwrap(key.step))
    return unwrap(key)


def _operand(other: Any, like: Any) -> Any:
    """The other operand of a binary operator; Python scalars take the dtype of ``like``."""
    other = unwrap(other)
    if isinstance(other, (bool, int, float, np.generic)):
        return tf.constant(other, dtype=like.dtype)
    return other


def _binary(op: Any, reflected: bool = False) -> Any:
    if reflected:
        return lambda self, other: DynArray(op(_operand(other, self.t), self.t))
    return lambda self, other: DynArray(op(self.t, _operand(other, self.t)))


class DynArray:
    """A ``tf.Tensor`` whose ``.shape`` holds scalar int64 tensors for its unknown dimensions.

    Supports the Python operators and the indexing the model uses; all results are wrapped.
    """

    __slots__ = ("t",)
    __array_ufunc__ = None  # NumPy defers its binary operators to ours

    def __init__(self, t: Any) -> None:
        self.t = tf.convert_to_tensor(unwrap(t))

    @property
    def shape(self) -> tuple:
        static = self.t.shape
        if static.rank is None:
            raise ValueError("DynArray: tensor of unknown rank")
        dims = list(static)
        if any(d is None for d in dims):
            dynamic = tf.shape(self.t, out_type=tf.int64)
            dims = [dynamic[i] if d is None else d for i, d in enumerate(dims)]
        return tuple(dims)

    @property
    def dtype(self) -> tf.DType:
        return self.t.dtype

    @property
    def ndim(self) -> int:
        return self.t.shape.rank

    def __getitem__(self, key: Any) -> DynArray:
        return DynArray(self.t[_unwrap_key(key)])

    def __neg__(self) -> DynArray:
        return DynArray(-self.t)

    def __pos__(self) -> DynArray:
        return self

    def __invert__(self) -> DynArray:
        return DynArray(~self.t)

    def __bool__(self) -> bool:
        raise TypeError("the truth value of a traced array is unknown")

    def __repr__(self) -> str:
        return f"DynArray({self.t!r})"

    __hash__ = None  # type: ignore[assignment]  # == is elementwise

    __add__ = _binary(tf.add)
    __radd__ = _binary(tf.add, True)
    __sub__ = _binary(tf.subtract)
    __rsub__ = _binary(tf.subtract, True)
    __mul__ = _binary(tf.multiply)
    __rmul__ = _binary(tf.multiply, True)
    __truediv__ = _binary(lambda a, b: a / b)
    __rtruediv__ = _binary(lambda a, b: a / b, True)
    __pow__ = _binary(lambda a, b: a**b)
    __rpow__ = _binary(lambda a, b: a**b, True)
    __matmul__ = _binary(lambda a, b: a @ b)
    __rmatmul__ = _binary(lambda a, b: a @ b, True)
    __and__ = _binary(lambda a, b: a & b)
    __rand__ = _binary(lambda a, b: a & b, True)
    __or__ = _binary(lambda a, b: a | b)
    __ror__ = _binary(lambda a, b: a | b, True)
    __lt__ = _binary(lambda a, b: a < b)
    __le__ = _binary(lambda a, b: a <= b)
    __gt__ = _binary(lambda a, b: a > b)
    __ge__ = _binary(lambda a, b: a >= b)
    __eq__ = _binary(lambda a, b: tf.equal(a, b))  # type: ignore[assignment]
    __ne__ = _binary(lambda a, b: tf.not_equal(a, b))  # type: ignore[assignment]


def is_array(x: Any) -> bool:
    """Whether ``x`` is an array this namespace serves (tf.Tensor, tf.Variable, DynArray)."""
    return isinstance(x, (tf.Tensor, tf.Variable, DynArray))


# ---- helpers -----------------------------------------------------------------------------------
def wrap_if_dynamic(result: Any, *inputs: Any) -> Any:
    """Wrap ``result`` when an input was wrapped or :func:`dynamic_shapes` is active."""
    if _dynamic() or any(isinstance(a, DynArray) for a in inputs):
        return DynArray(result)
    return result


def _dtype(dtype: Any) -> tf.DType | None:
    return None if dtype is None else tf.as_dtype(dtype)


def _shape(shape: Any) -> Any:
    """A shape of ints and/or scalar tensors (or a TensorShape) -> ints tuple or int64 tensor."""
    if isinstance(shape, tf.TensorShape):
        shape = shape.as_list()
    if isinstance(shape, (int, np.integer)):
        shape = (shape,)
    dims = [unwrap(d) for d in shape]
    if all(isinstance(d, (int, np.integer)) for d in dims):
        return tuple(int(d) for d in dims)
    if any(d is None for d in dims):
        raise ValueError(f"shape {shape} has an unknown (None) dimension; trace with DynArray")
    return tf.stack([tf.cast(d, tf.int64) for d in dims])


def _tensor(x: Any, like: Any = None) -> Any:
    """``x`` as a tensor; Python scalars take the dtype of ``like``."""
    x = unwrap(x)
    if isinstance(x, (tf.Tensor, tf.Variable)):
        return x
    if like is not None:
        return tf.convert_to_tensor(x, dtype=unwrap(like).dtype)
    return tf.convert_to_tensor(x)


# ---- the namespace -----------------------------------------------------------------------------
class TensorFlowNamespace:
    """Array-API functions (the subset ``polypot.model`` uses) on TensorFlow tensors."""

    float64 = tf.float64
    float32 = tf.float32
    int64 = tf.int64
    int32 = tf.int32
    bool = tf.bool

    # creation
    @staticmethod
    def asarray(obj: Any, dtype: Any = None, copy: bool | None = None) -> Any:
        """Array from a tensor, NumPy array, scalar or nested list."""
        if isinstance(obj, (tf.Tensor, tf.Variable, DynArray)):
            t = unwrap(obj)
            return wrap_if_dynamic(t if dtype is None else tf.cast(t, _dtype(dtype)), obj)
        if dtype is None:
            return wrap_if_dynamic(tf.constant(np.asarray(obj)))
        return wrap_if_dynamic(tf.constant(np.asarray(obj, dtype=_dtype(dtype).as_numpy_dtype)))

    @staticmethod
    def zeros(shape: Any, dtype: Any = None) -> Any:
        return wrap_if_dynamic(tf.zeros(_shape(shape), dtype=_dtype(dtype) or tf.float64))

    @staticmethod
    def ones(shape: Any, dtype: Any = None) -> Any:
        return wrap_if_dynamic(tf.ones(_shape(shape), dtype=_dtype(dtype) or tf.float64))

    @staticmethod
    def zeros_like(x: Any, dtype: Any = None) -> Any:
        return wrap_if_dynamic(tf.zeros_like(unwrap(x), dtype=_dtype(dtype)), x)

    @staticmethod
    def ones_like(x: Any, dtype: Any = None) -> Any:
        return wrap_if_dynamic(tf.ones_like(unwrap(x), dtype=_dtype(dtype)), x)

    @staticmethod
    def full_like(x: Any, fill_value: Any, dtype: Any = None) -> Any:
        t = unwrap(x)
        dt = _dtype(dtype) or t.dtype
        return wrap_if_dynamic(tf.fill(tf.shape(t), tf.constant(fill_value, dtype=dt)), x)

    @staticmethod
    def arange(start: Any, stop: Any = None, step: Any = 1, dtype: Any = None) -> Any:
        if stop is None:
            start, stop = 0, start
        bounds = [unwrap(v) for v in (start, stop, step)]
        if dtype is None:
            floats = any(isinstance(v, float) or (is_array(v) and v.dtype.is_floating)
                         for v in bounds)
            dtype = tf.float64 if floats else tf.int64
        dt = _dtype(dtype)
        first, last, delta = (tf.cast(v, dt) for v in bounds)
        return wrap_if_dynamic(tf.range(first, last, delta, dtype=dt), start, stop, step)

    @staticmethod
    def eye(n_rows: int, n_cols: int | None = None, k: int = 0, dtype: Any = None) -> Any:
        n_cols = n_rows if n_cols is None else n_cols
        rows = tf.range(n_rows, dtype=tf.int64)[:, None] + k
        cols = tf.range(n_cols, dtype=tf.int64)[None, :]
        return wrap_if_dynamic(tf.cast(tf.equal(rows, cols), _dtype(dtype) or tf.float64))

    # manipulation
    @staticmethod
    def astype(x: Any, dtype: Any, copy: bool = True) -> Any:
        return wrap_if_dynamic(tf.cast(unwrap(x), _dtype(dtype)), x)

    @staticmethod
    def reshape(x: Any, shape: Any, copy: bool | None = None) -> Any:
        return wrap_if_dynamic(tf.reshape(unwrap(x), _shape(shape)), x)

    @staticmethod
    def permute_dims(x: Any, axes: Sequence[int]) -> Any:
        return wrap_if_dynamic(tf.transpose(unwrap(x), perm=list(axes)), x)

    @staticmethod
    def broadcast_to(x: Any, shape: Any) -> Any:
        return wrap_if_dynamic(tf.broadcast_to(unwrap(x), _shape(shape)), x)

    @staticmethod
    def concat(arrays: Sequence[Any], axis: int | None = 0) -> Any:
        ts = [unwrap(a) for a in arrays]
        if axis is None:
            ts, axis = [tf.reshape(t, (-1,)) for t in ts], 0
        return wrap_if_dynamic(tf.concat(ts, axis=axis), *arrays)

    @staticmethod
    def stack(arrays: Sequence[Any], axis: int = 0) -> Any:
        return wrap_if_dynamic(tf.stack([unwrap(a) for a in arrays], axis=axis), *arrays)

    @staticmethod
    def take(x: Any, indices: Any, axis: int | None = None) -> Any:
        t = unwrap(x)
        if axis is None:
            if t.shape.rank != 1:
                raise ValueError("take: axis is required for arrays of rank > 1")
            axis = 0
        return wrap_if_dynamic(tf.gather(t, unwrap(indices), axis=axis), x, indices)

    @staticmethod
    def where(condition: Any, x1: Any, x2: Any) -> Any:
        like = x1 if is_array(x1) else x2
        return wrap_if_dynamic(tf.where(unwrap(condition), _tensor(x1, like), _tensor(x2, like)),
                    condition, x1, x2)

    # elementwise
    @staticmethod
    def sqrt(x: Any) -> Any:
        return wrap_if_dynamic(tf.sqrt(unwrap(x)), x)

    @staticmethod
    def exp(x: Any) -> Any:
        return wrap_if_dynamic(tf.exp(unwrap(x)), x)

    @staticmethod
    def tanh(x: Any) -> Any:
        return wrap_if_dynamic(tf.tanh(unwrap(x)), x)

    @staticmethod
    def maximum(x1: Any, x2: Any) -> Any:
        like = x1 if is_array(x1) else x2
        return wrap_if_dynamic(tf.maximum(_tensor(x1, like), _tensor(x2, like)), x1, x2)

    @staticmethod
    def logaddexp(x1: Any, x2: Any) -> Any:
        """log(exp(x1) + exp(x2)), stable: max + log1p(exp(-|x1 - x2|))."""
        like = x1 if is_array(x1) else x2
        a, b = _tensor(x1, like), _tensor(x2, like)
        big = tf.maximum(a, b)
        return wrap_if_dynamic(big + tf.math.log1p(tf.exp(-tf.abs(a - b))), x1, x2)

    @staticmethod
    def clip(x: Any, min: Any = None, max: Any = None) -> Any:  # noqa: A002 (Array-API names)
        t = unwrap(x)
        if min is not None:
            t = tf.maximum(t, _tensor(min, t))
        if max is not None:
            t = tf.minimum(t, _tensor(max, t))
        return wrap_if_dynamic(t, x)

    # linear algebra and reductions
    @staticmethod
    def matmul(x1: Any, x2: Any) -> Any:
        return wrap_if_dynamic(tf.linalg.matmul(unwrap(x1), unwrap(x2)), x1, x2)

    @staticmethod
    def sum(x: Any, axis: Any = None, dtype: Any = None, keepdims: bool = False) -> Any:
        t = unwrap(x)
        if dtype is not None:
            t = tf.cast(t, _dtype(dtype))
        return wrap_if_dynamic(tf.reduce_sum(t, axis=axis, keepdims=keepdims), x)

    @staticmethod
    def mean(x: Any, axis: Any = None, keepdims: bool = False) -> Any:
        return wrap_if_dynamic(tf.reduce_mean(unwrap(x), axis=axis, keepdims=keepdims), x)

    @staticmethod
    def max(x: Any, axis: Any = None, keepdims: bool = False) -> Any:
        return wrap_if_dynamic(tf.reduce_max(unwrap(x), axis=axis, keepdims=keepdims), x)


#: the namespace object handed to ``polypot.model``
xp = TensorFlowNamespace()
