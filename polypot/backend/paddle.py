"""Paddle backend: our own thin Array-API namespace (:mod:`.paddle_namespace`) and
``paddle.grad``; frozen files are ``paddle.jit.save`` programs (``.json`` + ``.pdiparams``).

Runs on the CPU (``paddle.set_device("cpu")``) unless another device is asked for. Importing
this module imports no ``polypot.model`` code, so that loading a frozen file does not either; the
namespace is registered with ``polypot.model.array_api`` when a :class:`PaddleBackend` is made
(and at import when ``polypot.model`` is already loaded).
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

if "tensorflow" in sys.modules and "paddle" not in sys.modules:
    # Paddle's protobuf crashes the process (SIGSEGV) when imported after TensorFlow
    raise ImportError("paddle cannot be imported after tensorflow in one process (it crashes); "
                      "import paddle (or polypot.backend.paddle) first, or use another process")

import paddle  # noqa: E402

from . import paddle_namespace as pnp  # noqa: E402
from .base import check_lower_inputs, map_params  # noqa: E402

_registered = False


def register_namespace() -> None:
    """Make ``polypot.model.array_api.namespace`` return :mod:`.paddle_namespace` for Paddle
    arrays (idempotent; imports ``polypot.model``)."""
    global _registered
    if not _registered:
        from ..model.array_api import register_namespace as _register

        _register(pnp.is_array, pnp)
        _registered = True


if "polypot.model.array_api" in sys.modules:
    register_namespace()


#: eager composite gradients that pass ``out_grad`` through as the input gradients
#: (``by_pass``): in Paddle 3.x a double backward through them is wrong; e.g. with
#: f = (x + x) * (x + x) the second derivative comes out 12 instead of 8, and LayerNorm's
#: ``(x - mean) / sqrt(mean((x - mean) ** 2) + eps)`` (two ``x - mean`` nodes) gets wrong
#: second derivatives (DPA-1 attention: wrong training gradients, asymmetric Hessians).
#: Their gradient kernels are used instead (their double-grad nodes are right).
_SKIPPED_COMPOSITE_GRADS = ("add_grad", "subtract_grad", "assign_grad")


@contextmanager
def double_backward() -> Iterator[None]:
    """Eager mode fit for gradients of gradients (``paddle.grad(create_graph=True)``).

    Paddle's eager primitive mode is on: some gradient kernels cannot be differentiated again
    (``pow``'s double-grad kernel fails with "The output DenseTensor DX can not be nullptr"
    when no gradient for the base is asked for), their primitive decompositions can. The
    composite gradients of :data:`_SKIPPED_COMPOSITE_GRADS` are skipped (their kernels used),
    since their double backward is wrong. Both settings are restored on exit.
    """
    core = paddle.framework.core
    was_prim = core._is_eager_prim_enabled()
    user_skipped = core.prim_config["backward_blacklist"]  # skipped by the user: keep them
    added = [op for op in _SKIPPED_COMPOSITE_GRADS if op not in user_skipped]
    for op in added:
        core._add_skip_comp_ops(op)
    core.set_prim_eager_enabled(True)
    try:
        yield
    finally:
        core.set_prim_eager_enabled(was_prim)
        for op in added:
            core._remove_skip_comp_ops(op)


class PaddleBackend:
    """Paddle on the CPU (or ``device``): :mod:`.paddle_namespace` and ``paddle.grad``."""

    name = "paddle"
    has_autodiff = True

    def __init__(self, device: str | None = None) -> None:
        self.device = device or "cpu"
        self._create_graph = False  # True inside value_and_grad: forces stay differentiable
        paddle.set_device(self.device)
        register_namespace()

    def namespace(self) -> Any:
        """The thin Array-API namespace :mod:`polypot.backend.paddle_namespace`."""
        return pnp

    def asarray(self, x: Any, dtype: Any = None) -> Any:
        """A Paddle tensor of ``x`` (NumPy dtypes kept: float64 stays float64, ints int64);
        ``dtype`` may be a NumPy or a Paddle dtype."""
        return pnp.asarray(x, dtype=dtype)

    def to_numpy(self, x: Any) -> np.ndarray:
        """The values of tensor ``x`` as a NumPy array (same dtype)."""
        return x.detach().numpy()

    def convert_params(self, params: Any) -> Any:
        """The parameter tree with every NumPy leaf as a Paddle tensor (dtypes kept)."""
        return map_params(params, lambda a: paddle.to_tensor(np.asarray(a)))

    def scatter_sum(self, data: Any, index: Any, size: Any) -> Any:
        """out[f, index[f, a]] += data[f, a]: data (nf, n, k), index (nf, n) -> (nf, size, k).

        ``size`` may be a 0-d int tensor (a dynamic dimension inside ``paddle.jit``).
        """
        nf, _, k = _dims(data)
        frames = paddle.arange(nf, dtype=index.dtype) * size  # (nf,)
        flat = paddle.reshape(index + frames[:, None], [-1, 1])
        out = paddle.zeros([nf * size, k], dtype=data.dtype)
        out = paddle.scatter_nd_add(out, flat, paddle.reshape(data, [-1, k]))
        return paddle.reshape(out, [nf, size, k])

    def value_and_pullback(self, fn: Callable[[Any], Any], x: Any
                           ) -> tuple[Any, Callable[[Any], Any]]:
        """(y = fn(x), pullback) with ``paddle.grad``; the graph is kept (``retain_graph``) so
        that the pullback may be called several times (4x for the atomic virial)."""
        retain = True if paddle.in_dynamic_mode() else None  # static programs keep all values
        x = x.detach()
        x.stop_gradient = False
        with paddle.set_grad_enabled(True):
            y = fn(x)

        def pullback(cotangent: Any) -> Any:
            (g,) = paddle.grad([y], [x], grad_outputs=[cotangent], retain_graph=retain,
                               create_graph=self._create_graph)
            return g

        return y, pullback

    def value_and_grad(self, fn: Callable[[Any], tuple[Any, dict]], params: dict
                       ) -> tuple[Any, dict, dict]:
        """(loss, aux, grads) of ``fn: params -> (scalar loss, aux dict)``; pullbacks taken
        inside ``fn`` (forces) keep their graph, so they are differentiated too."""
        leaves = {}
        for k, v in params.items():
            leaf = v.detach()
            leaf.stop_gradient = False
            leaves[k] = leaf
        self._create_graph = True
        try:
            with double_backward(), paddle.set_grad_enabled(True):
                loss, aux = fn(leaves)
                grads = paddle.grad([loss], list(leaves.values()), allow_unused=True)
        finally:
            self._create_graph = False
        grads = {k: paddle.zeros_like(v) if g is None else g
                 for (k, v), g in zip(leaves.items(), grads, strict=True)}
        return loss.detach(), {k: v.detach() for k, v in aux.items()}, grads

    def compile_step(self, step: Callable[..., Any]) -> Callable[..., Any]:
        """Training steps run eagerly (double backward through the force)."""
        return step

    def hessian(self, fn: Callable[[Any], Any], x: Any) -> Any:
        """Per-frame Hessians (nf, 3n, 3n) of ``fn: x (nf, n, 3) -> energies (nf,)``: one
        double-backward pass per coordinate (frames are independent, so d/dx sum_f g_f[c] is
        row c of every frame's Hessian)."""
        nf, n, _ = x.shape
        x = x.detach()
        x.stop_gradient = False
        with double_backward(), paddle.set_grad_enabled(True):
            (g,) = paddle.grad([paddle.sum(fn(x))], [x], create_graph=True)
            g = paddle.reshape(g, [nf, 3 * n])
            rows = [paddle.reshape(
                paddle.grad([paddle.sum(g[:, c])], [x], retain_graph=True)[0], [nf, 3 * n])
                for c in range(3 * n)]
        return paddle.stack(rows, axis=1).detach()


@paddle.jit.not_to_static  # reads the static shape (-1 = dynamic) itself
def _dims(x: Any) -> list[Any]:
    """Shape of ``x`` as ints, with 0-d int tensors for dynamic dimensions of static values."""
    dims = list(x.shape)
    if any(d is None or d < 0 for d in dims):
        full = paddle.shape(x)
        dims = [full[i] if d is None or d < 0 else d for i, d in enumerate(dims)]
    return dims


# ---- frozen files (.json) ----------------------------------------------------------------------
#: program outputs, in order (the atomic program appends atom_virial)
OUTPUTS = ("energy", "force", "virial", "atom_energy")
ATOMIC_OUTPUTS = (*OUTPUTS, "atom_virial")
#: name of the second (atomic) program: ``paddle.jit.save`` writes it as ``<stem>.atomic.json``
ATOMIC_METHOD = "atomic"
FORMAT_VERSION = 1
#: trace the frozen programs in Paddle's primitive-operator mode (see :func:`prim_mode`)
PRIM = False


def _model_format_error() -> type[Exception]:
    from ..errors import ModelFormatError

    return ModelFormatError


def sidecar_paths(path: str | os.PathLike) -> dict[str, Path]:
    """Every file of the frozen model ``path`` (``<stem>.json``), by role."""
    path = Path(path)
    stem = path.parent / path.stem
    return {
        "program": path,
        "params": Path(f"{stem}.pdiparams"),
        "atomic_program": Path(f"{stem}.{ATOMIC_METHOD}.json"),
        "atomic_params": Path(f"{stem}.{ATOMIC_METHOD}.pdiparams"),
        "metadata": Path(f"{stem}.polypot.meta"),
        "neutral": Path(f"{stem}.polypot.dp"),
    }


class _CapturingBackend:
    """A :class:`PaddleBackend` that keeps the value of its last ``value_and_pullback`` (the
    atomic energies ``derive`` differentiates), so that they are returned without recomputing."""

    def __init__(self, backend: PaddleBackend) -> None:
        self.backend = backend
        self.value: Any = None

    def scatter_sum(self, data: Any, index: Any, size: Any) -> Any:
        return self.backend.scatter_sum(data, index, size)

    def value_and_pullback(self, fn: Callable[[Any], Any], x: Any
                           ) -> tuple[Any, Callable[[Any], Any]]:
        y, pull = self.backend.value_and_pullback(fn, x)
        self.value = y
        return y, pull


class LowerLayer(paddle.nn.Layer):
    """The lower evaluation of a model as a ``paddle.nn.Layer`` (for ``paddle.jit``).

    ``forward(coord_ext, atype_ext, nlist, mapping)`` -> (energy (nf, 1) eV, force
    (nf, nloc, 3) eV/Å, virial (nf, 9) eV, atom_energy (nf, nloc, 1) eV); ``atomic(...)`` adds
    atom_virial (nf, nloc, 9) eV. Inputs: coord_ext (nf, nall, 3) Å in the model precision,
    atype_ext (nf, nall) int64 (-1 = padding), nlist (nf, nloc, nnei) int64 (-1 = empty),
    mapping (nf, nall) int64. The parameters are persistable buffers ``p0000``, ``p0001``, ...
    """

    def __init__(self, model: Any, params: Any) -> None:
        from ..model.derivatives import derive  # lazy: loading a frozen file needs no model

        super().__init__()
        self._model = model
        self._derive = derive
        self._backend = PaddleBackend()
        names: list[str] = []

        def register(leaf: Any) -> str:
            name = f"p{len(names):04d}"
            self.register_buffer(name, paddle.to_tensor(np.asarray(leaf)), persistable=True)
            names.append(name)
            return name

        self._param_names = map_params(params, register)

    def _params(self) -> Any:
        return map_params(self._param_names, lambda name: getattr(self, name))

    def _lower(self, coord_ext: Any, atype_ext: Any, nlist: Any, mapping: Any,
               atomic: bool) -> tuple[Any, ...]:
        params = self._params()
        model = self._model
        capture = _CapturingBackend(self._backend)

        def atomic_energy(x: Any) -> Any:
            return model.atomic_energy(params, x, atype_ext, nlist, mapping)

        out = self._derive(capture, atomic_energy, coord_ext, mapping, nlist.shape[1],
                           atomic=atomic)
        out["atom_energy"] = capture.value
        keys = ATOMIC_OUTPUTS if atomic else OUTPUTS
        return tuple(out[k].detach() for k in keys)

    def forward(self, coord_ext: Any, atype_ext: Any, nlist: Any, mapping: Any
                ) -> tuple[Any, ...]:
        return self._lower(coord_ext, atype_ext, nlist, mapping, False)

    def atomic(self, coord_ext: Any, atype_ext: Any, nlist: Any, mapping: Any
               ) -> tuple[Any, ...]:
        return self._lower(coord_ext, atype_ext, nlist, mapping, True)


def input_spec(model: Any) -> list[Any]:
    """``InputSpec`` of the lower interface: nf, nall, nloc dynamic; nnei = sum(sel) fixed."""
    from paddle.static import InputSpec

    from ..model.precision import to_dtype

    nnei = int(np.sum(model.sel))
    return [
        InputSpec([None, None, 3], to_dtype(model.precision).name, name="coord_ext"),
        InputSpec([None, None], "int64", name="atype_ext"),
        InputSpec([None, None, nnei], "int64", name="nlist"),
        InputSpec([None, None], "int64", name="mapping"),
    ]


@contextmanager
def prim_mode(enabled: bool = True) -> Iterator[None]:
    """Paddle's primitive-operator mode (forward and backward decomposition) while tracing."""
    from paddle.base import core

    fwd, bwd = core._is_fwd_prim_enabled(), core._is_bwd_prim_enabled()
    core._set_prim_all_enabled(enabled)
    try:
        yield
    finally:
        core._set_prim_forward_enabled(bool(fwd))
        core._set_prim_backward_enabled(bool(bwd))


#: Python-number operators of static values that Paddle lowers to a float32 ``scale`` op
_SCALAR_OPERATORS = ("__add__", "__radd__", "__sub__", "__rsub__", "__mul__", "__rmul__",
                     "__truediv__", "__rtruediv__")


@contextmanager
def exact_scalars() -> Iterator[None]:
    """While tracing: ``value <op> number`` keeps the number exact for float64 and int64 values.

    In static programs Paddle turns ``x + 0.1``, ``x * 0.1``, ``x / 3`` into a ``scale`` op whose
    factor and bias are float32 attributes (relative errors ~1e-8 in float64 models); here the
    number becomes a 0-d array of ``x``'s dtype and the elementwise op is used instead.
    """
    cls = paddle.pir.Value
    saved = {name: getattr(cls, name) for name in _SCALAR_OPERATORS}

    def exact(op: Callable[[Any, Any], Any]) -> Callable[[Any, Any], Any]:
        def method(self: Any, other: Any) -> Any:
            if isinstance(other, (int, float)) and not isinstance(other, bool) and (
                    self.dtype == paddle.float64
                    or (self.dtype == paddle.int64 and isinstance(other, int))):
                other = pnp.scalar(other, self.dtype)
            return op(self, other)

        return method

    for name, op in saved.items():
        setattr(cls, name, exact(op))
    try:
        yield
    finally:
        for name, op in saved.items():
            setattr(cls, name, op)


@contextmanager
def zip_strict() -> Iterator[None]:
    """While tracing: let ``zip(..., strict=True)`` through Paddle's dy2static conversion, whose
    replacement for ``zip`` takes no ``strict`` keyword (``polypot.model`` uses it)."""
    from paddle.jit.dy2static import convert_call_func

    original = convert_call_func.convert_zip

    def convert_zip(*args: Any, strict: bool = False) -> Any:
        original(*args)  # Paddle's checks (no tensor with a dynamic first dimension)
        return zip(*args, strict=strict)

    convert_call_func.convert_zip = convert_zip
    try:
        yield
    finally:
        convert_call_func.convert_zip = original


@contextmanager
def tracing(prim: bool = PRIM) -> Iterator[None]:
    """Everything :func:`freeze` needs while ``paddle.jit`` traces the model code:
    :func:`prim_mode`, :func:`exact_scalars` and :func:`zip_strict`."""
    with prim_mode(prim), exact_scalars(), zip_strict():
        yield


def freeze(model: Any, params: Any, path: str | os.PathLike,
           model_def_script: dict | None = None, prim: bool = PRIM) -> None:
    """Write ``model`` as the frozen Paddle model ``path`` (``<stem>.json``) and its sidecars.

    Files (all written to a temporary folder beside ``path``, then renamed into place, the
    program ``<stem>.json`` last): ``<stem>.json`` + ``<stem>.pdiparams`` (forward: energy,
    force, virial, atom_energy), ``<stem>.atomic.json`` + ``<stem>.atomic.pdiparams`` (the same
    plus atom_virial), ``<stem>.polypot.meta`` (JSON: ``frozen_metadata`` and the program
    signature) and ``<stem>.polypot.dp`` (the neutral model dictionary). The metadata file is
    not called ``*.json``: ``paddle.jit.load`` loads every ``<stem>.<name>.json`` beside the
    program as a method ``<name>``.
    """
    from ..io.model_file import model_to_dict
    from ..io.neutral import save_neutral
    from .base import frozen_metadata

    path = Path(path)
    if path.suffix.lower() != ".json":
        raise ValueError(f"{path}: a frozen Paddle model is named *.json")
    path.parent.mkdir(parents=True, exist_ok=True)
    layer = LowerLayer(model, params)
    layer.eval()
    spec = input_spec(model)
    with tracing(prim):
        layer.forward = paddle.jit.to_static(layer.forward, input_spec=spec, full_graph=True)
        layer.atomic = paddle.jit.to_static(layer.atomic, input_spec=spec, full_graph=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
        try:
            final = sidecar_paths(path)
            staged = sidecar_paths(tmp / path.name)
            paddle.jit.save(layer, str(tmp / path.stem))
            info = {
                "format": "paddle-jit",
                "format_version": FORMAT_VERSION,
                "metadata": frozen_metadata(model, "paddle", model_def_script),
                "paddle_version": paddle.__version__,
                "prim": bool(prim),
                "nnei": int(np.sum(model.sel)),
                "inputs": [s.name for s in spec],
                "outputs": {"forward": list(OUTPUTS), ATOMIC_METHOD: list(ATOMIC_OUTPUTS)},
            }
            staged["metadata"].write_text(json.dumps(info, indent=1))
            save_neutral(staged["neutral"], model_to_dict(model, params, model_def_script))
            for role in ("params", "atomic_program", "atomic_params", "metadata", "neutral",
                         "program"):
                os.replace(staged[role], final[role])
        finally:
            shutil.rmtree(tmp, ignore_errors=True)


class PaddleFrozenModel:
    """A loaded frozen Paddle model: the two ``paddle.jit.load`` programs and the metadata."""

    def __init__(self, path: str | os.PathLike) -> None:
        error = _model_format_error()
        self.path = Path(path)
        files = sidecar_paths(self.path)
        for role in ("program", "params", "atomic_program", "metadata", "neutral"):
            if not files[role].exists():
                raise error(f"{self.path}: {files[role].name} is missing (a frozen Paddle model "
                            f"is {', '.join(p.name for p in files.values())})")
        try:
            info = json.loads(files["metadata"].read_text())
        except (OSError, json.JSONDecodeError) as err:
            raise error(f"{files['metadata']}: not readable JSON: {err}") from None
        if not isinstance(info, dict) or "metadata" not in info:
            raise error(f"{files['metadata']}: not a polypot metadata file")
        if info.get("format_version", 0) > FORMAT_VERSION:
            raise error(f"{self.path}: format_version {info['format_version']} is newer than "
                        f"this polypot reads ({FORMAT_VERSION}); upgrade polypot")
        self.info = info
        self.metadata: dict = dict(info["metadata"])
        self.nnei = int(info["nnei"])
        self.coord_dtype = np.dtype(
            "float32" if self.metadata.get("precision") == "float32" else "float64")
        try:
            self._layer = paddle.jit.load(str(self.path.parent / self.path.stem))
        except Exception as err:  # any failure to read the program means a bad file
            raise error(f"{self.path}: paddle.jit.load failed: {err}") from None
        self._layer.eval()

    def run(self, coord_ext: Any, atype_ext: Any, nlist: Any, mapping: Any,
            atomic: bool = False) -> dict:
        """NumPy in, NumPy out: energy (nf, 1), force (nf, nloc, 3), virial (nf, 9),
        atom_energy (nf, nloc, 1) [, atom_virial (nf, nloc, 9)]; shapes as in ``base``."""
        coord, atype, nl, mp = check_lower_inputs(coord_ext, atype_ext, nlist, mapping,
                                                  self.coord_dtype, self.nnei)
        program = getattr(self._layer, ATOMIC_METHOD) if atomic else self._layer
        with paddle.no_grad():
            out = program(*(paddle.to_tensor(a) for a in (coord, atype, nl, mp)))
        keys = ATOMIC_OUTPUTS if atomic else OUTPUTS
        return {k: np.array(v.numpy()) for k, v in zip(keys, out, strict=True)}

    def neutral_dict(self) -> dict:
        """The neutral model dictionary (as ``polypot.io.neutral.load_neutral`` returns)."""
        from ..io.neutral import load_neutral

        return load_neutral(sidecar_paths(self.path)["neutral"])


def load_frozen(path: str | os.PathLike) -> PaddleFrozenModel:
    """Load a frozen Paddle model ``<stem>.json``; imports no ``polypot.model`` code."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"model file {path} does not exist")
    return PaddleFrozenModel(path)
