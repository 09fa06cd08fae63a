"""TensorFlow backend: eager runs, ``tf.function`` programs with dynamic shapes and
``.savedmodel`` frozen files equal DeePMD-kit 3.2's results (1e-10 relative); a frozen file runs
without ``polypot.model`` for any nf/nall/nloc. Never imports paddle (TF then paddle segfaults)."""

from __future__ import annotations

import json
import pickle
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from reference_data import (
    FIXTURE_MODELS,
    FIXTURES,
    ROOT,
    fixture_frames,
    fixture_reference,
    max_rel,
)

pytest.importorskip("tensorflow")

from polypot.backend import tensorflow as tfb  # noqa: E402
from polypot.backend.base import frozen_metadata  # noqa: E402
from polypot.backend.registry import freeze, get_backend, load_frozen  # noqa: E402
from polypot.backend.tensorflow_namespace import DynArray, dynamic_shapes, unwrap, xp  # noqa: E402
from polypot.errors import ModelFormatError  # noqa: E402
from polypot.infer.runner import ModelRunner  # noqa: E402
from polypot.io.model_file import load_model, model_to_dict  # noqa: E402
from polypot.model import build_model  # noqa: E402
from polypot.neighbor import NeighborData, build_neighbor_data  # noqa: E402

tf = tfb.tf
TOL = 1e-10
KEYS = ("energy", "force", "virial", "atom_energy", "atom_virial")
SCRIPT = {"model": {"type_map": ["O", "H"]}, "note": "frozen by test_tensorflow"}
F32_CONFIG = {
    "type_map": ["O", "H"],
    "descriptor": {"type": "se_e2_a", "sel": [20, 40], "rcut": 4.0, "neuron": [4, 8],
                   "axis_neuron": 2, "precision": "float32"},
    "fitting_net": {"neuron": [8, 8], "precision": "float32"},
}
#: one fixture frame per model. se_atten_l2 uses the 36-atom cluster to stay fast (atomic
#: virials of 192 atoms take seconds on two cores); its periodic frame 1 is avoided everywhere:
#: a pair 1e-4 Å inside rcut and non-smooth attention make that frame's forces ill-conditioned
#: (1e-8 to 1e-5 relative between any two backends or between eager and compiled runs).
RUNNER_CASES = {"se_e2_a": "periodic", "se_atten_l0": "periodic", "se_atten_l2": "cluster",
                "se_atten_v2_l0": "periodic", "dpa2": "periodic"}


def _neighbors(model, name: str, case: str, frames: slice = slice(None)) -> NeighborData:
    coord, cell, atype = fixture_frames(name, case)
    return build_neighbor_data(coord[frames], None if cell is None else cell[frames], atype,
                               model.rcut, model.sel)


def _assert_matches(out: dict, ref: dict, frames: slice, keys=KEYS, tol: float = TOL) -> None:
    for key in keys:
        want = ref[key][frames]
        got = np.asarray(out[key])
        assert got.size == want.size, (key, got.shape, want.shape)
        err = max_rel(got.reshape(want.shape), want)
        assert err < tol, f"{key}: relative error {err:.2e}"


def _shapes_ok(out: dict, nf: int, nloc: int, atomic: bool) -> None:
    want = {"energy": (nf, 1), "force": (nf, nloc, 3), "virial": (nf, 9),
            "atom_energy": (nf, nloc, 1)}
    if atomic:
        want["atom_virial"] = (nf, nloc, 9)
    assert {k: tuple(np.shape(v)) for k, v in out.items()} == want


@pytest.fixture(scope="module")
def models() -> dict:
    return {name: load_model(FIXTURES / name / "model.dp")[:2] for name in FIXTURE_MODELS}


# ---- backend -----------------------------------------------------------------------------------
def test_registry_gives_the_tensorflow_backend():
    b = get_backend("tf")
    assert isinstance(b, tfb.TensorFlowBackend) and b.name == "tensorflow" and b.has_autodiff
    data = b.asarray(np.arange(12.0).reshape(2, 3, 2))
    index = b.asarray(np.array([[0, 0, 1], [1, 1, 1]]))
    got = b.to_numpy(b.scatter_sum(data, index, 2))
    np.testing.assert_array_equal(got, [[[2, 4], [4, 5]], [[0, 0], [24, 27]]])
    y, pull = b.value_and_pullback(lambda x: x**3, b.asarray(np.array([1.0, 2.0])))
    for _ in range(2):  # persistent tape: the pullback can be called again
        np.testing.assert_allclose(b.to_numpy(pull(b.asarray(np.array([1.0, 0.5])))), [3, 6])
    # per-frame Hessian of E_f = sum_a x_a^T A x_a + (x_0 . x_1)^2 / 2 frames (nf 2, n 2)
    rng = np.random.default_rng(1)
    a = rng.normal(size=(3, 3))
    x = rng.normal(size=(2, 2, 3))

    def energy(t):
        return (tf.einsum("fai,ij,faj->f", t, tf.constant(a), t)
                + 0.5 * tf.reduce_sum(t[:, 0] * t[:, 1], axis=-1) ** 2)

    h = b.to_numpy(b.hessian(energy, b.asarray(x)))
    for f in range(2):
        d = x[f, 0] @ x[f, 1]
        want = np.kron(np.eye(2), a + a.T)
        want[:3, :3] += np.outer(x[f, 1], x[f, 1])
        want[3:, 3:] += np.outer(x[f, 0], x[f, 0])
        want[:3, 3:] += np.outer(x[f, 1], x[f, 0]) + d * np.eye(3)
        want[3:, :3] += np.outer(x[f, 0], x[f, 1]) + d * np.eye(3)
        np.testing.assert_allclose(h[f], want, rtol=1e-12, atol=1e-12)


def test_dynamic_shapes_in_tf_function():
    """Under None dims, DynArray shapes carry tf.shape scalars: shape arithmetic and slicing
    by them trace once and run for every nf, nall, nloc."""
    spec = [tf.TensorSpec((None, None, 3), tf.float64), tf.TensorSpec((None, None, 2), tf.int64)]

    @tf.function(input_signature=spec, autograph=False)
    def program(x, nl):
        with dynamic_shapes():
            x, nl = DynArray(x), DynArray(nl)
            nf, nloc, nnei = nl.shape
            assert isinstance(nf, tf.Tensor) and nnei == 2
            rows = xp.reshape(x[:, :nloc, None, 1:3], (nf * nloc, 2))
            e = xp.sum(rows**2, axis=-1, keepdims=True) * 2.0 - 1.0
            e = xp.reshape(e, (nf, nloc, 1)) + xp.zeros((nf, nloc, 1), dtype=x.dtype)
            first = xp.take(xp.reshape(x, (-1, 3)), xp.arange(nf, dtype=nl.dtype) * x.shape[1],
                            axis=0)
            return unwrap(e), unwrap(first)

    rng = np.random.default_rng(0)
    for nf, nall, nloc in ((1, 5, 3), (2, 7, 7)):
        x = rng.normal(size=(nf, nall, 3))
        e, first = program(tf.constant(x), tf.zeros((nf, nloc, 2), tf.int64))
        want = 2.0 * np.sum(x[:, :nloc, 1:3] ** 2, axis=-1, keepdims=True) - 1.0
        np.testing.assert_allclose(e.numpy(), want, rtol=1e-14)
        np.testing.assert_array_equal(first.numpy(), x[:, 0])
    assert program.experimental_get_tracing_count() == 1


@pytest.mark.parametrize("name", FIXTURE_MODELS)
def test_runner_matches_deepmd(models, name):
    """ModelRunner on the TensorFlow backend (its compiled lower path, dynamic dims)."""
    model, params = models[name]
    case = RUNNER_CASES[name]
    runner = ModelRunner(model, params, get_backend("tensorflow"))
    nd = _neighbors(model, name, case, slice(0, 1))
    out = runner.run(nd, forces=True, atomic=True)
    _shapes_ok(out, 1, nd.nloc, atomic=True)
    _assert_matches(out, fixture_reference(name, case), slice(0, 1))
    if name == "se_atten_l2":  # the same cluster twice plus two padding atoms: nf 2, nall 38
        pad = [(0, 0), (0, 2)]
        two = NeighborData(*(np.concatenate([np.pad(a, pad + [(0, 0)] * (a.ndim - 2),
                                                    constant_values=v)] * 2)
                             for a, v in ((nd.coord, 0.0), (nd.atype, -1), (nd.mapping, 0))),
                           np.concatenate([nd.nlist] * 2), None, nd.nloc)
        out2 = runner.run(two, forces=True, atomic=True)
        for key in KEYS:
            np.testing.assert_allclose(out2[key], np.concatenate([out[key]] * 2), rtol=0,
                                       atol=1e-13)


def test_eager_derive_matches_deepmd(models):
    """The eager path: derive() with GradientTape pullbacks on tf.Tensors."""
    from polypot.model.derivatives import derive

    name = "se_atten_v2_l0"
    model, params = models[name]
    b = get_backend("tensorflow")
    p = b.convert_params(params)
    nd = _neighbors(model, name, "cluster")
    atype, nlist = b.asarray(nd.atype), b.asarray(nd.nlist)
    out = derive(b, lambda x: model.atomic_energy(p, x, atype, nlist), b.asarray(nd.coord),
                 b.asarray(nd.mapping), nd.nloc, atomic=True)
    assert all(isinstance(v, tf.Tensor) for v in out.values())
    _assert_matches({k: b.to_numpy(v) for k, v in out.items()},
                    fixture_reference(name, "cluster"), slice(0, 1))


# ---- .savedmodel in a process without the model code -------------------------------------------
RUNNER = textwrap.dedent("""
    import json
    import pickle
    import sys
    from pathlib import Path

    import numpy as np
    import pytest

    from polypot.backend.registry import load_frozen

    work = Path(sys.argv[1])
    frozen = load_frozen(work / "se_e2_a.savedmodel")
    f32 = load_frozen(work / "f32.savedmodel")
    runs = [(frozen, "se_e2_a-periodic", (False, True)), (frozen, "se_e2_a-cluster", (True,)),
            (f32, "f32-periodic", (True,))]
    for model, stem, modes in runs:
        d = np.load(work / f"{stem}-in.npz")
        for atomic in modes:
            out = model.run(d["coord"], d["atype"], d["nlist"], d["mapping"], atomic=atomic)
            np.savez(work / f"{stem}-{int(atomic)}-out.npz", **out)
    d = np.load(work / "se_e2_a-cluster-in.npz")
    with pytest.raises(ValueError, match="nnei"):
        frozen.run(d["coord"], d["atype"], d["nlist"][:, :, :-1], d["mapping"])
    with pytest.raises(ValueError, match="nloc <= nall"):
        frozen.run(d["coord"][:, :10], d["atype"][:, :10], d["nlist"], d["mapping"][:, :10])
    loaded = [m for m in sys.modules if m == "polypot.model" or m.startswith("polypot.model.")]
    assert not loaded, f"loading a .savedmodel imported {loaded}"
    (work / "metadata.json").write_text(json.dumps([frozen.metadata, f32.metadata]))
    (work / "neutral.pkl").write_bytes(pickle.dumps(frozen.neutral_dict()))
    print("ok")
""")


@pytest.fixture(scope="module")
def frozen_dir(models, tmp_path_factory) -> Path:
    """se_e2_a (float64) and a float32 model frozen; inputs saved; all run in one subprocess."""
    work = tmp_path_factory.mktemp("savedmodel")
    model, params = models["se_e2_a"]
    freeze(work / "se_e2_a.savedmodel", model, params, model_def_script=SCRIPT)
    f32_model, f32_params = build_model(F32_CONFIG, seed=1)
    freeze(work / "f32.savedmodel", f32_model, f32_params)
    inputs = {"se_e2_a-periodic": _neighbors(model, "se_e2_a", "periodic"),  # nf 2, nall 1783
              "se_e2_a-cluster": _neighbors(model, "se_e2_a", "cluster"),  # nf 1, nall 36
              "f32-periodic": _neighbors(f32_model, "se_e2_a", "periodic")}
    for stem, nd in inputs.items():
        np.savez(work / f"{stem}-in.npz", coord=nd.coord, atype=nd.atype, nlist=nd.nlist,
                 mapping=nd.mapping)
    result = subprocess.run([sys.executable, "-c", RUNNER, str(work)], cwd=ROOT,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0 and "ok" in result.stdout, result.stderr[-3000:]
    return work


@pytest.mark.parametrize("case", ["periodic", "cluster"])
def test_savedmodel_without_model_code_matches_deepmd(frozen_dir, case):
    ref = fixture_reference("se_e2_a", case)
    nlist = np.load(frozen_dir / f"se_e2_a-{case}-in.npz")["nlist"]
    nf, nloc = nlist.shape[:2]
    for atomic in (True, False) if case == "periodic" else (True,):
        out = dict(np.load(frozen_dir / f"se_e2_a-{case}-{int(atomic)}-out.npz"))
        _shapes_ok(out, nf, nloc, atomic)
        _assert_matches(out, ref, slice(0, nf), KEYS if atomic else KEYS[:4])


def test_float32_savedmodel_matches_numpy(frozen_dir):
    model, params = build_model(F32_CONFIG, seed=1)
    d = np.load(frozen_dir / "f32-periodic-in.npz")
    nd = NeighborData(d["coord"], d["atype"], d["mapping"], d["nlist"], None, d["nlist"].shape[1])
    out = dict(np.load(frozen_dir / "f32-periodic-1-out.npz"))
    assert all(v.dtype == np.float32 for v in out.values())
    ref = ModelRunner(model, params, get_backend("numpy")).run(nd, forces=False)
    assert max_rel(out["energy"], ref["energy"]) < 1e-5
    assert max_rel(out["atom_energy"], ref["atom_energy"]) < 1e-5


def test_savedmodel_metadata_and_neutral_dict(frozen_dir, models):
    model, params = models["se_e2_a"]
    meta, meta32 = json.loads((frozen_dir / "metadata.json").read_text())
    assert meta == frozen_metadata(model, "tensorflow", SCRIPT)
    assert meta32["precision"] == "float32" and meta32["backend"] == "tensorflow"
    path = frozen_dir / "se_e2_a.savedmodel"
    assert (path / "saved_model.pb").is_file() and (path / "assets" / "model.dp").is_file()
    neutral = pickle.loads((frozen_dir / "neutral.pkl").read_bytes())
    want = model_to_dict(model, params, SCRIPT)
    assert neutral["model_def_script"] == SCRIPT
    flat_want, flat_got = [], []
    tfb.map_params(want["model"], flat_want.append)
    tfb.map_params(neutral["model"], flat_got.append)
    assert len(flat_want) == len(flat_got) > 0
    for a, b in zip(flat_want, flat_got, strict=True):
        if isinstance(a, np.ndarray):
            np.testing.assert_array_equal(a, b)
        else:
            assert a == b


def test_bad_savedmodel_files(tmp_path):
    with pytest.raises(FileNotFoundError):
        load_frozen(tmp_path / "missing.savedmodel")
    not_dir = tmp_path / "file.savedmodel"
    not_dir.write_bytes(b"x")
    with pytest.raises(ModelFormatError, match="saved_model.pb"):
        load_frozen(not_dir)
    bad = tmp_path / "bad.savedmodel"
    (bad / "assets").mkdir(parents=True)
    (bad / "saved_model.pb").write_bytes(b"not a protobuf")
    with pytest.raises(ModelFormatError, match="polypot.json"):
        load_frozen(bad)
    (bad / "assets" / "polypot.json").write_text("{not json")
    with pytest.raises(ModelFormatError, match="JSON"):
        load_frozen(bad)
    info = {"format": tfb.FORMAT, "format_version": tfb.FORMAT_VERSION, "metadata": {},
            "nnei": 3, "coord_dtype": "float64"}
    (bad / "assets" / "polypot.json").write_text(json.dumps({**info, "format_version": 99}))
    with pytest.raises(ModelFormatError, match="newer"):
        load_frozen(bad)
    (bad / "assets" / "polypot.json").write_text(json.dumps(info))
    with pytest.raises(ModelFormatError, match="cannot be loaded"):
        load_frozen(bad)


def test_freeze_is_atomic(tmp_path, monkeypatch):
    model, params = build_model(F32_CONFIG, seed=1)
    path = tmp_path / "m.savedmodel"
    path.mkdir()
    (path / "previous").write_text("old")

    def failing_save(obj, export_dir, *args, **kwargs):
        (Path(export_dir) / "saved_model.pb").write_bytes(b"partial")
        raise RuntimeError("disk full")

    monkeypatch.setattr(tf.saved_model, "save", failing_save)
    with pytest.raises(RuntimeError, match="disk full"):
        freeze(path, model, params)
    with pytest.raises(TypeError):  # not JSON-serialisable: fails before anything is written
        freeze(path, model, params, model_def_script={"bad": object()})
    assert [p.name for p in tmp_path.iterdir()] == ["m.savedmodel"]
    assert [p.name for p in path.iterdir()] == ["previous"]

    monkeypatch.setattr(tf.saved_model, "save",
                        lambda obj, d, *a, **k: (Path(d) / "saved_model.pb").write_bytes(b"new"))
    freeze(path, model, params)
    assert [p.name for p in tmp_path.iterdir()] == ["m.savedmodel"]
    assert sorted(p.name for p in path.iterdir()) == ["assets", "saved_model.pb"]
    assert (path / "saved_model.pb").stat().st_mode & 0o777 == (
        (path / "assets" / "polypot.json").stat().st_mode & 0o777)
