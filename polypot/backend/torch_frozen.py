"""PyTorch frozen files: ``.pth`` (``torch.export`` programs) and ``.pt2`` (AOTInductor).

Unlike DeePMD-kit, whose ``.pth`` is a TorchScript module, a polypot ``.pth`` holds a
``torch.export`` program (a PT2 archive written by ``torch.export.save``; read it with
``torch.export.load``). TorchScript cannot compile the model: ``polypot.model`` is written once
against the Array API and calls array-api-compat's torch namespace, i.e. Python wrapper
functions that ``torch.jit.script`` does not understand. ``torch.export`` cannot trace
``torch.autograd.grad`` either, so the whole force computation (``polypot.model.derivatives``
on :class:`~polypot.backend.torch.TorchBackend`) is first traced to ATen operations by
``make_fx`` with symbolic shapes, and that graph, forward and backward together, is exported.
The program therefore needs no autograd at run time. ``.pt2`` (as DeePMD-kit's exportable
PyTorch backend) compiles the same two programs to C++ with AOTInductor: minutes to freeze,
milliseconds to load, several times faster on CPU.

Programs take coord_ext (nf, nall, 3) (model precision), atype_ext (nf, nall) int64
(-1 = padding), nlist (nf, nloc, nnei) int64 (-1 = empty), mapping (nf, nall) int64, with
dynamic nf, nall, nloc (``nloc <= nall``) and nnei = sum(sel) fixed, and return the tuple
:data:`OUTPUTS` (plain program) or :data:`ATOMIC_OUTPUTS` (atomic program).

Layout (PT2 zip archives; ``extra/`` entries are text, hence base64 for binary ones)::

    .pth  model                  the plain program: energy, force, virial, atom_energy
          extra/atomic.pt2.b64   the atomic program (adds atom_virial), itself a PT2 archive:
                                 ``torch.export.save`` stores a single program per archive
    .pt2  data/aotinductor/model, data/aotinductor/atomic   the compiled programs
    both  extra/polypot.json     {"format", "format_version", "metadata": frozen_metadata(...),
                                  "nnei", "coord_dtype", "outputs", "atomic_outputs", ...}
          extra/model.dp.b64     the neutral ``.dp`` file (``convert-backend`` reads it back)

The atomic program is traced and exported once; the plain program is the same graph with the
three extra vector-Jacobian products of atom_virial pruned (they make the atomic program about
three times slower). In a ``.pth`` the atomic program is deserialized only when first asked
for. Systems without ghost atoms (nall == nloc) get one padding atom appended at run time (see
:func:`_pad_one_atom`). Loading imports torch, numpy and ``polypot.io.neutral`` (for
:meth:`TorchFrozenModel.neutral_dict` only), never ``polypot.model``. Both formats unpickle or
load native code: load only files you trust. A ``.pt2`` runs only where it was compiled
(CPU, this architecture).
"""

from __future__ import annotations

import base64
import binascii
import io
import json
import os
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .base import check_lower_inputs, frozen_metadata

FORMAT = "polypot-torch-export"
AOTI_FORMAT = "polypot-torch-aoti"
FORMAT_VERSION = 1
#: output names of the plain and of the atomic program, in order
OUTPUTS = ("energy", "force", "virial", "atom_energy")
ATOMIC_OUTPUTS = (*OUTPUTS, "atom_virial")
#: ``extra/`` entries of the archive
EXTRA_INFO = "polypot.json"
EXTRA_ATOMIC = "atomic.pt2.b64"
EXTRA_NEUTRAL = "model.dp.b64"
#: model names of the plain and of the atomic program in a ``.pt2`` AOTInductor package
AOTI_MODELS = {False: "model", True: "atomic"}
#: example sizes for tracing: all different and > 1, so that no dimension is specialised
_EXAMPLE_NF, _EXAMPLE_NLOC, _EXAMPLE_NALL = 2, 5, 11


def _model_format_error() -> type[Exception]:
    from ..errors import ModelFormatError

    return ModelFormatError


# ---- tracing and export ------------------------------------------------------------------------
class _CapturingBackend:
    """Proxy of a backend that keeps the value of its last ``value_and_pullback`` (the atomic
    energies ``derive`` differentiates), so that atom_energy comes without recomputation."""

    def __init__(self, backend: Any) -> None:
        self._backend = backend
        self.value: Any = None

    def __getattr__(self, name: str) -> Any:
        return getattr(self._backend, name)

    def value_and_pullback(self, fn: Any, x: Any) -> tuple[Any, Any]:
        y, pullback = self._backend.value_and_pullback(fn, x)
        self.value = y
        return y, pullback


def lower_function(model: Any, params: Any, atomic: bool) -> Any:
    """``f(coord_ext, atype_ext, nlist, mapping) -> tuple`` of torch tensors (:data:`OUTPUTS`
    or :data:`ATOMIC_OUTPUTS`, shapes as in ``polypot.backend.base``), eager, with autograd;
    the parameters are converted once and captured as constants."""
    from ..model.derivatives import derive  # lazy: loading a frozen file needs no model code
    from .torch import TorchBackend

    backend = TorchBackend()
    p = backend.convert_params(params)
    names = ATOMIC_OUTPUTS if atomic else OUTPUTS

    def fn(coord_ext: Any, atype_ext: Any, nlist: Any, mapping: Any) -> tuple:
        capture = _CapturingBackend(backend)

        def atomic_energy(x: Any) -> Any:
            return model.atomic_energy(p, x, atype_ext, nlist, mapping)

        out = derive(capture, atomic_energy, coord_ext, mapping, nlist.shape[1], atomic=atomic)
        out.setdefault("atom_energy", capture.value)
        return tuple(out[k] for k in names)

    return fn


def example_inputs(model: Any, nf: int = _EXAMPLE_NF, nloc: int = _EXAMPLE_NLOC,
                   nall: int = _EXAMPLE_NALL, seed: int = 0) -> tuple[torch.Tensor, ...]:
    """A small synthetic extended system (coord_ext, atype_ext, nlist, mapping) for tracing
    and for checking a program against the eager model: random positions in a 3 Å box, one
    padding atom, every slot of the neighbour list filled or -1 (its form is irrelevant)."""
    from ..model.precision import to_dtype

    rng = np.random.default_rng(seed)
    nnei = int(np.sum(model.sel))
    ntypes = len(model.type_map)
    coord = rng.uniform(0.0, 3.0, (nf, nall, 3)).astype(to_dtype(model.precision))
    atype = rng.integers(0, ntypes, (nf, nall)).astype(np.int64)
    atype[:, -1] = -1
    nlist = rng.integers(0, nall - 1, (nf, nloc, nnei)).astype(np.int64)
    nlist[rng.random((nf, nloc, nnei)) < 0.3] = -1
    nlist[nlist == np.arange(nloc)[None, :, None]] = -1  # no atom is its own neighbour
    mapping = np.tile(np.arange(nall, dtype=np.int64) % nloc, (nf, 1))
    return tuple(torch.as_tensor(a) for a in (coord, atype, nlist, mapping))


class _Program(torch.nn.Module):
    """Wraps a traced ``fx.GraphModule`` so that ``torch.export`` sees a plain module."""

    def __init__(self, graph_module: torch.nn.Module) -> None:
        super().__init__()
        self.graph_module = graph_module

    def forward(self, coord_ext: torch.Tensor, atype_ext: torch.Tensor, nlist: torch.Tensor,
                mapping: torch.Tensor) -> tuple:
        return tuple(self.graph_module(coord_ext, atype_ext, nlist, mapping))


def _plain_from_atomic(atomic: torch.export.ExportedProgram) -> torch.export.ExportedProgram:
    """The atomic program without atom_virial: the same graph returning only :data:`OUTPUTS`,
    with the three extra vector-Jacobian products removed as dead code. Built directly from
    the atomic program's parts (a second ``torch.export`` of the pruned graph gives the same
    graph but costs as much as the first)."""
    import copy

    import torch.utils._pytree as pytree

    n = len(OUTPUTS)
    graph_module = copy.deepcopy(atomic.graph_module)
    output = next(node for node in graph_module.graph.nodes if node.op == "output")
    output.args = (tuple(output.args[0][:n]),)
    graph_module.graph.eliminate_dead_code()
    graph_module.recompile()
    signature = torch.export.ExportGraphSignature(
        input_specs=list(atomic.graph_signature.input_specs),
        output_specs=list(atomic.graph_signature.output_specs[:n]))
    calls = []
    for entry in atomic.module_call_graph:
        sig = entry.signature
        if entry.fqn == "" and sig is not None:  # the root module: its outputs change
            sig = torch.export.ModuleCallSignature(
                inputs=sig.inputs, outputs=sig.outputs, in_spec=sig.in_spec,
                out_spec=pytree.tree_structure(tuple(range(n))),
                forward_arg_names=sig.forward_arg_names)
        calls.append(torch.export.ModuleCallEntry(fqn=entry.fqn, signature=sig))
    return torch.export.ExportedProgram(
        root=graph_module, graph=graph_module.graph, graph_signature=signature,
        state_dict=atomic.state_dict, range_constraints=copy.deepcopy(atomic.range_constraints),
        module_call_graph=calls, example_inputs=atomic.example_inputs,
        constants=atomic.constants, verifiers=atomic.verifiers)


def export_programs(model: Any, params: Any) -> dict[bool, torch.export.ExportedProgram]:
    """Plain (``False``) and atomic (``True``) programs of ``model``.

    The atomic lower function (:func:`lower_function`) is traced once by ``make_fx`` with
    symbolic shapes and exported by ``torch.export`` with dynamic nf, nall, nloc; the plain
    program is that program without atom_virial (:func:`_plain_from_atomic`). Both are checked
    against the eager model on a second synthetic system of other sizes (``RuntimeError`` if
    they differ, e.g. because a dimension was silently specialised).
    """
    from torch.fx.experimental.proxy_tensor import make_fx

    fn = lower_function(model, params, atomic=True)
    args = example_inputs(model)
    with torch.enable_grad():
        traced = make_fx(fn, tracing_mode="symbolic", _allow_non_fake_inputs=True)(*args)
    nf, nall, nloc = (torch.export.Dim(n) for n in ("nf", "nall", "nloc"))
    dynamic = ({0: nf, 1: nall}, {0: nf, 1: nall}, {0: nf, 1: nloc}, {0: nf, 1: nall})
    atomic = torch.export.export(_Program(traced), args, dynamic_shapes=dynamic)
    programs = {True: atomic, False: _plain_from_atomic(atomic)}
    check_args = example_inputs(model, nf=3, nloc=4, nall=9, seed=1)
    reference = [r.detach() for r in fn(*check_args)]
    for program in programs.values():
        _check_program(program, check_args, reference)
    return programs


def _check_program(program: torch.export.ExportedProgram, args: tuple, reference: list
                   ) -> None:
    """Compare the program's outputs with the eager ones (relative 1e-5 / 1e-10)."""
    got = program.module()(*args)
    tol = 1e-5 if args[0].dtype == torch.float32 else 1e-10
    for name, g, r in zip(ATOMIC_OUTPUTS, got, reference, strict=False):
        err = float((g - r).abs().max()) / max(float(r.abs().max()), 1e-30)
        if g.shape != r.shape or not err < tol:
            raise RuntimeError(f"exported program differs from the eager model in {name}: "
                               f"shape {tuple(g.shape)} vs {tuple(r.shape)}, rel. err {err:.3g}")


def _program_bytes(program: torch.export.ExportedProgram, extra_files: dict | None = None
                   ) -> bytes:
    """The PT2 archive ``torch.export.save`` writes for ``program`` (with ``extra/`` files)."""
    buf = io.BytesIO()
    torch.export.save(program, buf, extra_files=extra_files)
    return buf.getvalue()


def _neutral_bytes(model: Any, params: Any, model_def_script: dict | None) -> bytes:
    """The neutral ``.dp`` file of the model, as bytes."""
    from ..io.model_file import model_to_dict
    from ..io.neutral import save_neutral

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model.dp"
        save_neutral(path, model_to_dict(model, params, model_def_script))
        return path.read_bytes()


def _aoti_package(programs: dict[bool, torch.export.ExportedProgram], extra: dict) -> bytes:
    """AOTInductor-compile both programs (C++ for this machine's CPU) into one PT2 package with
    the models ``model`` (plain) and ``atomic``, plus ``extra`` files."""
    from torch._inductor import aot_compile
    from torch.export.pt2_archive._package import package_pt2  # what package_aoti wraps

    files = {}
    for atomic, program in programs.items():
        args, kwargs = program.example_inputs
        files[AOTI_MODELS[atomic]] = aot_compile(
            program.module(check_guards=False), args, kwargs,
            options={"aot_inductor.package": True})
    buf = io.BytesIO()
    package_pt2(buf, aoti_files=files, extra_files=extra)
    return buf.getvalue()


def _write_atomically(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file in the same folder."""
    from ..io.neutral import atomic_write

    atomic_write(path, lambda tmp: tmp.write_bytes(data))


def freeze(model: Any, params: Any, path: str | os.PathLike,
           model_def_script: dict | None = None) -> None:
    """Write ``model`` with ``params`` to ``path`` (atomically): a ``.pth`` torch.export
    archive, or, for the ``.pt2`` suffix, an AOTInductor package (minutes to compile)."""
    from ..model.precision import to_dtype

    path = Path(path)
    aoti = path.suffix.lower() == ".pt2"
    programs = export_programs(model, params)
    info = {
        "format": AOTI_FORMAT if aoti else FORMAT,
        "format_version": FORMAT_VERSION,
        "metadata": frozen_metadata(model, "torch", model_def_script),
        "nnei": int(np.sum(model.sel)),
        "coord_dtype": np.dtype(to_dtype(model.precision)).name,
        "outputs": list(OUTPUTS),
        "atomic_outputs": list(ATOMIC_OUTPUTS),
        "torch_version": torch.__version__,
    }
    extra = {
        EXTRA_INFO: json.dumps(info),
        EXTRA_NEUTRAL: base64.b64encode(_neutral_bytes(model, params, model_def_script)
                                        ).decode("ascii"),
    }
    if aoti:
        data = _aoti_package(programs, extra)
    else:
        extra[EXTRA_ATOMIC] = base64.b64encode(_program_bytes(programs[True])).decode("ascii")
        data = _program_bytes(programs[False], extra)
    _write_atomically(path, data)


# ---- load --------------------------------------------------------------------------------------
def _read_extra(data: bytes, source: str) -> dict[str, str]:
    """The ``extra/`` entries (text) of a PT2 archive, whatever its top folder is called."""
    error = _model_format_error()
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            return {name.split("/", 2)[2]: archive.read(name).decode()
                    for name in archive.namelist() if name.count("/") >= 2
                    and name.split("/", 2)[1] == "extra"}
    except (zipfile.BadZipFile, UnicodeDecodeError, OSError) as err:
        raise error(f"{source}: not a readable PT2 (zip) archive: {err}") from None


def _read_info(extra: dict[str, str], source: str) -> dict:
    """The checked ``extra/polypot.json`` of a frozen file."""
    error = _model_format_error()
    if EXTRA_INFO not in extra:
        raise error(f"{source}: not a polypot torch file (no extra/{EXTRA_INFO})")
    try:
        info = json.loads(extra[EXTRA_INFO])
    except json.JSONDecodeError as err:
        raise error(f"{source}: extra/{EXTRA_INFO} is not valid JSON: {err}") from None
    if not isinstance(info, dict) or info.get("format") not in (FORMAT, AOTI_FORMAT):
        raise error(f"{source}: not a polypot torch file (format "
                    f"{info.get('format') if isinstance(info, dict) else None!r})")
    if info.get("format_version", 0) > FORMAT_VERSION:
        raise error(f"{source}: format_version {info['format_version']} is newer than this "
                    f"polypot reads ({FORMAT_VERSION}); upgrade polypot")
    return info


def _load_program(data: bytes, source: str) -> torch.export.ExportedProgram:
    """``torch.export.load`` from bytes; any failure becomes ``ModelFormatError``."""
    error = _model_format_error()
    try:
        program = torch.export.load(io.BytesIO(data))
    except Exception as err:  # zip, JSON, pickle or schema errors all mean a bad file
        raise error(f"{source}: not a readable torch.export program: {err}") from None
    if not isinstance(program, torch.export.ExportedProgram):
        raise error(f"{source}: no torch.export program inside")
    return program


def _load_aoti(data: bytes, name: str, source: str) -> Any:
    """The compiled model ``name`` of an AOTInductor package; failures -> ModelFormatError."""
    from torch._inductor.package import load_package

    try:
        return load_package(io.BytesIO(data), model_name=name)
    except Exception as err:  # missing model, a library built for another machine, ...
        raise _model_format_error()(f"{source}: AOTInductor model {name!r} cannot be loaded: "
                                    f"{err}") from None


class TorchFrozenModel:
    """A loaded frozen file: ``.pth`` (torch.export programs; the atomic one is deserialized on
    first use) or ``.pt2`` (AOTInductor package), with its metadata and neutral ``.dp``."""

    def __init__(self, data: bytes, source: str = "model") -> None:
        error = _model_format_error()
        extra = _read_extra(data, source)
        info = _read_info(extra, source)
        self.format: str = info["format"]
        needed = (EXTRA_NEUTRAL,) if self.format == AOTI_FORMAT else (EXTRA_NEUTRAL,
                                                                      EXTRA_ATOMIC)
        for key in needed:
            if key not in extra:
                raise error(f"{source}: extra/{key} is missing")
        try:
            self.metadata: dict = dict(info["metadata"])
            self.nnei = int(info["nnei"])
            self.coord_dtype = np.dtype(info["coord_dtype"])
            self._outputs = {False: tuple(info["outputs"]), True: tuple(info["atomic_outputs"])}
        except (KeyError, TypeError, ValueError) as err:
            raise error(f"{source}: extra/{EXTRA_INFO} is incomplete ({err!r})") from None
        self._source = source
        self._extra = extra
        if self.format == AOTI_FORMAT:
            self._calls = {atomic: _load_aoti(data, name, source)
                           for atomic, name in AOTI_MODELS.items()}
        else:
            self._calls = {False: _load_program(data, source).module()}

    def _b64(self, key: str) -> bytes:
        try:
            return base64.b64decode(self._extra[key], validate=True)
        except (binascii.Error, ValueError) as err:
            raise _model_format_error()(f"{self._source}: extra/{key} is not base64: {err}"
                                        ) from None

    def _call(self, atomic: bool) -> Any:
        if atomic not in self._calls:  # the atomic torch.export program, on first use
            program = _load_program(self._b64(EXTRA_ATOMIC), f"{self._source}:{EXTRA_ATOMIC}")
            self._calls[atomic] = program.module()
        return self._calls[atomic]

    def run(self, coord_ext: Any, atype_ext: Any, nlist: Any, mapping: Any,
            atomic: bool = False) -> dict:
        """NumPy in, NumPy out: energy (nf, 1) eV, force (nf, nloc, 3) eV/Å, virial (nf, 9) eV,
        atom_energy (nf, nloc, 1) [, atom_virial (nf, nloc, 9)]; inputs as in ``base``."""
        coord, atype, nl, mp = check_lower_inputs(coord_ext, atype_ext, nlist, mapping,
                                                  self.coord_dtype, self.nnei)
        if nl.shape[1] == coord.shape[1]:
            coord, atype, mp = _pad_one_atom(coord, atype, mp)
        atomic = bool(atomic)
        call = self._call(atomic)
        with torch.inference_mode():
            out = call(*(torch.from_numpy(a) for a in (coord, atype, nl, mp)))
        return {k: v.numpy() for k, v in zip(self._outputs[atomic], out, strict=True)}

    def neutral_dict(self) -> dict:
        """The neutral model dictionary (as ``polypot.io.neutral.load_neutral`` returns)."""
        from ..io.neutral import load_neutral

        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "model.dp"
            path.write_bytes(self._b64(EXTRA_NEUTRAL))
            return load_neutral(path)


def _pad_one_atom(coord: np.ndarray, atype: np.ndarray, mapping: np.ndarray
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Append one padding atom (type -1, at the origin, mapped to atom 0) to every frame.

    The programs are traced with nall > nloc and guard on ``nall != nloc`` (a contiguity test
    on ``coord_ext[:, :nloc]``), so a system without ghost atoms gets one padding atom: no
    neighbour list refers to it, so it adds nothing to any output.
    """
    nf = coord.shape[0]
    return (np.concatenate([coord, np.zeros((nf, 1, 3), coord.dtype)], axis=1),
            np.concatenate([atype, np.full((nf, 1), -1, np.int64)], axis=1),
            np.concatenate([mapping, np.zeros((nf, 1), np.int64)], axis=1))


def load_frozen(path: str | os.PathLike) -> TorchFrozenModel:
    """Read a ``.pth`` or ``.pt2`` file written by :func:`freeze` (the format is read from the
    file, not from its suffix)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"model file {path} does not exist")
    return TorchFrozenModel(path.read_bytes(), str(path))
