"""TensorFlow backend: a thin Array-API namespace, ``tf.GradientTape`` and SavedModel files.

The model runs on eager ``tf.Tensor`` s (:class:`TensorFlowBackend`; Hessians by nested tapes),
or compiled with ``tf.function`` (:meth:`TensorFlowBackend.compile_lower`, which ``ModelRunner``
uses). Frozen files (``.savedmodel``) are
SavedModel directories holding a ``tf.Module`` with two ``tf.function`` entry points of the lower
interface, ``call_lower`` and ``call_lower_atomic``, whose nf, nall and nloc are dynamic::

    model.savedmodel/
        saved_model.pb, variables/     the programs; the parameters as (non-trainable) variables
        assets/polypot.json            format, frozen_metadata(...), input dtypes, nnei
        assets/model.dp                the neutral model dictionary (for convert-backend)

No serving signatures are exported: they would double the size and the load time, and
nothing reads them. Loading imports TensorFlow, NumPy and ``polypot.io.neutral`` only, never
``polypot.model``.

Dynamic shapes: in a ``tf.function`` traced with unknown dims, ``tensor.shape`` holds ``None``
where the model computes ``nf * nloc`` or slices ``x[:, :nloc]``; the traced function therefore
runs the model on :class:`~polypot.backend.tensorflow_namespace.DynArray` wrappers whose shapes
hold ``tf.shape`` scalars where the static size is unknown.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from .base import check_lower_inputs, frozen_metadata, map_params
from .tensorflow_namespace import (
    DynArray,
    dynamic_shapes,
    is_array,
    tf,
    unwrap,
    wrap_if_dynamic,
    xp,
)

#: SavedModel entry points, by ``atomic``
ENTRY_POINTS = {False: "call_lower", True: "call_lower_atomic"}
FORMAT = "polypot-tf-savedmodel"
FORMAT_VERSION = 1
INPUTS = ("coord_ext", "atype_ext", "nlist", "mapping")

_registered = False


def register_namespace() -> None:
    """Tell ``polypot.model.array_api.namespace`` about TensorFlow arrays (once).

    Done when a :class:`TensorFlowBackend` is created rather than when this module is imported:
    importing ``polypot.model.array_api`` runs ``polypot.model/__init__``, and loading a frozen
    file (which imports this module) must not load the model code.
    """
    global _registered
    if not _registered:
        from ..model.array_api import register_namespace as register

        register(is_array, xp)
        _registered = True


def _wrap_as(x: Any, like: Any) -> Any:
    """``x`` wrapped in a DynArray when ``like`` is one."""
    return DynArray(x) if isinstance(like, DynArray) else x


class TensorFlowBackend:
    """TensorFlow (CPU or GPU, whatever TensorFlow places ops on) with ``tf.GradientTape``."""

    name = "tensorflow"
    has_autodiff = True

    def __init__(self) -> None:
        register_namespace()

    def namespace(self) -> Any:
        return xp

    def asarray(self, x: Any, dtype: Any = None) -> Any:
        """NumPy array (or tensor) -> ``tf.Tensor`` (cast to ``dtype`` when given)."""
        if is_array(x):
            return x if dtype is None else xp.astype(x, dtype)
        if dtype is not None:
            dtype = tf.as_dtype(dtype).as_numpy_dtype
        return tf.constant(np.asarray(x, dtype=dtype))

    def to_numpy(self, x: Any) -> np.ndarray:
        x = unwrap(x)
        return x.numpy() if isinstance(x, (tf.Tensor, tf.Variable)) else np.asarray(x)

    def convert_params(self, params: Any) -> Any:
        """Parameter tree of NumPy arrays -> the same tree of ``tf.constant`` s (TensorFlow
        leaves are kept, so converting twice is free)."""
        return map_params(params, lambda a: a if is_array(a) else tf.constant(np.asarray(a)))

    def scatter_sum(self, data: Any, index: Any, size: Any) -> Any:
        """out[f, index[f, a]] += data[f, a]: data (nf, n, k), index (nf, n) -> (nf, size, k).

        ``size`` may be an int or a scalar tensor (a dynamic nloc).
        """
        d = unwrap(data)
        size = unwrap(size)
        if is_array(size):
            size = tf.cast(size, tf.int64)
        nf, _, *rest = DynArray(d).shape  # static sizes where known, else tf.shape scalars
        segments = tf.cast(unwrap(index), tf.int64) + tf.range(nf, dtype=tf.int64)[:, None] * size
        out = tf.math.unsorted_segment_sum(d, segments, nf * size)  # (nf * size, *rest)
        return wrap_if_dynamic(xp.reshape(out, (nf, size, *rest)), data, index)

    def value_and_pullback(self, fn: Callable[[Any], Any], x: Any
                           ) -> tuple[Any, Callable[[Any], Any]]:
        """(fn(x), c -> d sum(c * fn(x)) / dx) with a persistent tape (the pullback may be called
        several times: once for forces, three more times for atomic virials)."""
        t = tf.convert_to_tensor(unwrap(x))
        with tf.GradientTape(persistent=True, watch_accessed_variables=False) as tape:
            tape.watch(t)
            y = fn(_wrap_as(t, x))
        y_t = unwrap(y)

        def pullback(cotangent: Any) -> Any:
            c = tf.cast(unwrap(cotangent), y_t.dtype)  # e.g. float64 positions, float32 energies
            g = tape.gradient(y_t, t, output_gradients=c,
                              unconnected_gradients=tf.UnconnectedGradients.ZERO)
            return _wrap_as(tf.convert_to_tensor(g), x)

        return y, pullback

    def value_and_grad(self, fn: Callable[[Any], tuple[Any, dict]], params: dict
                       ) -> tuple[Any, dict, dict]:
        """(loss, aux, grads) of ``fn: params -> (scalar loss, aux dict)``; the pullbacks taken
        inside ``fn`` (forces) are recorded by this outer tape, so they are differentiated too."""
        leaves = {k: tf.convert_to_tensor(unwrap(v)) for k, v in params.items()}
        with tf.GradientTape(watch_accessed_variables=False) as tape:
            for v in leaves.values():
                tape.watch(v)
            loss, aux = fn(leaves)
        grads = tape.gradient(unwrap(loss), list(leaves.values()),
                              unconnected_gradients=tf.UnconnectedGradients.ZERO)
        return loss, aux, dict(zip(leaves, grads, strict=True))

    def compile_step(self, step: Callable[..., Any]) -> Callable[..., Any]:
        """Training steps run eagerly (a ``tf.function`` version is future work)."""
        return step

    def hessian(self, fn: Callable[[Any], Any], x: Any) -> Any:
        """Per-frame Hessians (nf, 3n, 3n) of ``fn: x (nf, n, 3) -> energies (nf,)``.

        Frames are independent, so the gradient of the summed energy, (nf, 3n), has a
        per-frame Jacobian: ``GradientTape.batch_jacobian`` (vectorised over the 3n rows).
        """
        t = tf.convert_to_tensor(unwrap(x))
        nf, n, _ = DynArray(t).shape
        with tf.GradientTape(watch_accessed_variables=False) as outer:
            outer.watch(t)
            with tf.GradientTape(watch_accessed_variables=False) as inner:
                inner.watch(t)
                energy = tf.reduce_sum(unwrap(fn(_wrap_as(t, x))))
            grad = inner.gradient(energy, t, unconnected_gradients=tf.UnconnectedGradients.ZERO)
            grad = xp.reshape(grad, (nf, 3 * n))
        h = outer.batch_jacobian(grad, t, unconnected_gradients=tf.UnconnectedGradients.ZERO)
        return _wrap_as(xp.reshape(h, (nf, 3 * n, 3 * n)), x)

    # ---- compiled lower interface ----------------------------------------------------------------
    def compile_lower(self, model: Any, params: Any, atomic: bool = False,
                      dynamic: bool = True) -> Callable[[Any, Any, Any, Any], dict]:
        """The lower evaluation of ``model`` under ``tf.function``.

        Returns ``f(coord_ext, atype_ext, nlist, mapping) -> dict`` of ``tf.Tensor`` s: energy
        (nf, 1) eV, force (nf, nloc, 3) eV/Å, virial (nf, 9) eV, atom_energy (nf, nloc, 1) and,
        with ``atomic``, atom_virial (nf, nloc, 9). Inputs: coord_ext (nf, nall, 3) Å,
        atype_ext (nf, nall) (-1 = padding), nlist (nf, nloc, nnei) (-1 = empty), mapping
        (nf, nall); NumPy arrays or tensors. ``dynamic``: one trace for every nf, nall, nloc
        (as frozen files); otherwise one trace per input shape (static shapes). The
        ``tf.function`` is ``f.function``.
        """
        from ..model.precision import to_dtype

        graph = graph_function(model, self.convert_params(params), atomic, dynamic)
        coord_dtype = to_dtype(model.precision)

        def evaluate(coord_ext: Any, atype_ext: Any, nlist: Any, mapping: Any) -> dict:
            return graph(*_inputs(coord_ext, atype_ext, nlist, mapping, coord_dtype))

        evaluate.function = graph  # type: ignore[attr-defined]  # the tf.function (for tests)
        return evaluate


def _inputs(coord_ext: Any, atype_ext: Any, nlist: Any, mapping: Any, coord_dtype: Any
            ) -> list[Any]:
    """Lower-interface inputs as tensors of the dtypes the programs were traced for."""
    dtypes = (tf.as_dtype(coord_dtype), tf.int64, tf.int64, tf.int64)
    return [tf.cast(a, dt) if is_array(a) else tf.constant(np.asarray(a, dt.as_numpy_dtype))
            for a, dt in zip((coord_ext, atype_ext, nlist, mapping), dtypes, strict=True)]


def lower_function(model: Any, atomic: bool = False) -> Callable[..., dict]:
    """``fn(params, coord_ext, atype_ext, nlist, mapping) -> dict`` of the lower interface
    (shapes as in :meth:`TensorFlowBackend.compile_lower`); nloc is ``nlist.shape[1]``."""
    from ..model.derivatives import derive  # lazy: loading a frozen file needs no model code

    backend = TensorFlowBackend()

    def fn(params: Any, coord_ext: Any, atype_ext: Any, nlist: Any, mapping: Any) -> dict:
        def atomic_energy(x: Any) -> Any:
            return model.atomic_energy(params, x, atype_ext, nlist, mapping)

        return derive(backend, atomic_energy, coord_ext, mapping, nlist.shape[1], atomic=atomic)

    return fn


def input_signature(model: Any) -> list[tf.TensorSpec]:
    """TensorSpecs of the lower interface: nf, nall, nloc dynamic; nnei = sum(sel) fixed."""
    from ..model.precision import to_dtype

    nnei = int(np.sum(model.sel))
    return [
        tf.TensorSpec((None, None, 3), tf.as_dtype(to_dtype(model.precision)), name=INPUTS[0]),
        tf.TensorSpec((None, None), tf.int64, name=INPUTS[1]),
        tf.TensorSpec((None, None, nnei), tf.int64, name=INPUTS[2]),
        tf.TensorSpec((None, None), tf.int64, name=INPUTS[3]),
    ]


def graph_function(model: Any, params: Any, atomic: bool, dynamic: bool = True) -> Any:
    """``tf.function`` of the lower interface with ``params`` (tensors or variables) captured.

    ``dynamic``: traced once with None for nf, nall, nloc (the model sees DynArrays);
    otherwise traced per input shape on plain tensors.
    """
    fn = lower_function(model, atomic)

    def dynamic_program(coord_ext: Any, atype_ext: Any, nlist: Any, mapping: Any) -> dict:
        with dynamic_shapes():
            args = [DynArray(a) for a in (coord_ext, atype_ext, nlist, mapping)]
            out = fn(params, *args)
        return {k: unwrap(v) for k, v in out.items()}

    def static_program(coord_ext: Any, atype_ext: Any, nlist: Any, mapping: Any) -> dict:
        return fn(params, coord_ext, atype_ext, nlist, mapping)

    if dynamic:
        return tf.function(dynamic_program, input_signature=input_signature(model),
                           autograph=False)
    return tf.function(static_program, autograph=False)


# ---- frozen files (.savedmodel) ----------------------------------------------------------------
class _LowerModule(tf.Module):
    """What a ``.savedmodel`` holds: the parameters as variables and the two entry points."""

    def __init__(self, model: Any, params: Any) -> None:
        super().__init__(name="polypot_lower")
        leaves: list[tf.Variable] = []

        def variable(a: Any) -> tf.Variable:
            v = tf.Variable(np.asarray(a), trainable=False, name=f"p{len(leaves)}")
            leaves.append(v)
            return v

        tree = map_params(params, variable)
        self.parameters = leaves  # tracked, so that they are saved
        atomic = graph_function(model, tree, atomic=True)

        def default(coord_ext: Any, atype_ext: Any, nlist: Any, mapping: Any) -> dict:
            """The atomic program without atom_virial: TensorFlow inlines the call and prunes
            the three unused pullbacks, so this runs as fast as a program traced without them
            (measured), while freezing traces the model once instead of twice."""
            out = dict(atomic(coord_ext, atype_ext, nlist, mapping))
            del out["atom_virial"]
            return out

        self.call_lower_atomic = atomic
        self.call_lower = tf.function(default, input_signature=input_signature(model),
                                      autograph=False)


def _share(root: Path, like: Path) -> None:
    """Give ``root`` and its contents the permissions of the newly written file ``like`` (the
    umask's), as mkdtemp/mkstemp made some of them private (0o700 / 0o600)."""
    mode = like.stat().st_mode & 0o666
    for p in (root, *root.rglob("*")):
        p.chmod(mode | (mode & 0o444) >> 2 if p.is_dir() else mode)


def _replace(tmp: Path, path: Path) -> None:
    """Move the finished directory ``tmp`` to ``path``, replacing what was there."""
    if not (path.exists() or path.is_symlink()):
        os.replace(tmp, path)
        return
    old = Path(tempfile.mkdtemp(prefix=f".{path.name}.old.", dir=path.parent))
    old.rmdir()
    os.replace(path, old)
    try:
        os.replace(tmp, path)
    except BaseException:
        os.replace(old, path)
        raise
    if old.is_dir() and not old.is_symlink():
        shutil.rmtree(old, ignore_errors=True)
    else:
        old.unlink(missing_ok=True)


def freeze(model: Any, params: Any, path: str | os.PathLike,
           model_def_script: dict | None = None) -> None:
    """Write ``model`` with ``params`` as the SavedModel directory ``path`` (atomically:
    written next to it under a temporary name, then renamed)."""
    from ..io.model_file import model_to_dict
    from ..io.neutral import save_neutral
    from ..model.precision import to_dtype

    path = Path(path)
    info = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "metadata": frozen_metadata(model, "tensorflow", model_def_script),
        "tensorflow_version": tf.__version__,
        "coord_dtype": np.dtype(to_dtype(model.precision)).name,
        "nnei": int(np.sum(model.sel)),
        "entry_points": {("atomic" if a else "default"): n for a, n in ENTRY_POINTS.items()},
        "inputs": list(INPUTS),
    }
    text = json.dumps(info, indent=1)  # fails early on a non-JSON model_def_script
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    try:
        tf.saved_model.save(_LowerModule(model, params), str(tmp))
        assets = tmp / "assets"
        assets.mkdir(exist_ok=True)
        (assets / "polypot.json").write_text(text)
        save_neutral(assets / "model.dp", model_to_dict(model, params, model_def_script))
        _share(tmp, like=assets / "polypot.json")
        _replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


class TensorFlowFrozenModel:
    """A loaded ``.savedmodel``: the restored entry points, metadata, the neutral dictionary."""

    def __init__(self, path: Path) -> None:
        from ..errors import ModelFormatError

        self.path = path
        info_file = path / "assets" / "polypot.json"
        if not path.is_dir() or not (path / "saved_model.pb").is_file():
            raise ModelFormatError(f"{path}: not a SavedModel directory (no saved_model.pb)")
        try:
            info = json.loads(info_file.read_text())
        except FileNotFoundError:
            raise ModelFormatError(f"{path}: no assets/polypot.json; not a polypot SavedModel"
                                   ) from None
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise ModelFormatError(f"{info_file}: not valid JSON: {err}") from None
        if not isinstance(info, dict) or info.get("format") != FORMAT:
            raise ModelFormatError(f"{info_file}: not a polypot SavedModel description")
        if info.get("format_version", 0) > FORMAT_VERSION:
            raise ModelFormatError(f"{path}: format_version {info['format_version']} is newer "
                                   f"than this polypot reads ({FORMAT_VERSION}); upgrade polypot")
        self.metadata: dict = dict(info["metadata"])
        self.nnei = int(info["nnei"])
        self.coord_dtype = np.dtype(info["coord_dtype"])
        try:
            loaded = tf.saved_model.load(str(path))
        except Exception as err:  # any TensorFlow failure to restore means a bad file
            raise ModelFormatError(f"{path}: SavedModel cannot be loaded: {err}") from None
        self._loaded = loaded  # keeps the restored variables alive
        self._calls = {a: getattr(loaded, n, None) for a, n in ENTRY_POINTS.items()}
        missing = [ENTRY_POINTS[a] for a, f in self._calls.items() if f is None]
        if missing:
            raise ModelFormatError(f"{path}: SavedModel has no {', '.join(missing)}")

    def run(self, coord_ext: Any, atype_ext: Any, nlist: Any, mapping: Any,
            atomic: bool = False) -> dict:
        """NumPy in, NumPy out: energy (nf, 1), force (nf, nloc, 3), virial (nf, 9),
        atom_energy (nf, nloc, 1) [, atom_virial (nf, nloc, 9)]; shapes as in ``base``."""
        coord, atype, nl, mp = check_lower_inputs(coord_ext, atype_ext, nlist, mapping,
                                                  self.coord_dtype, self.nnei)
        out = self._calls[bool(atomic)](tf.constant(coord), tf.constant(atype), tf.constant(nl),
                                        tf.constant(mp))
        return {k: v.numpy() for k, v in out.items()}

    def neutral_dict(self) -> dict:
        """The neutral model dictionary (as ``polypot.io.neutral.load_neutral`` returns)."""
        from ..io.neutral import load_neutral

        return load_neutral(self.path / "assets" / "model.dp")


def load_frozen(path: str | os.PathLike) -> TensorFlowFrozenModel:
    """Load a ``.savedmodel`` directory written by :func:`freeze`; imports no model code."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"model file {path} does not exist")
    return TensorFlowFrozenModel(path)
