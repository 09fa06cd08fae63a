"""Paddle backend: eager evaluation and frozen ``.json`` programs equal DeePMD-kit 3.2's results
(1e-10 relative); a frozen file runs without ``polypot.model`` for any nf/nall/nloc; float32.

Paddle is imported at the top of this module (during collection, before any test imports
TensorFlow): importing Paddle after TensorFlow crashes the process.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

if "tensorflow" in sys.modules and "paddle" not in sys.modules:
    pytest.skip("paddle cannot be imported after tensorflow in one process",
                allow_module_level=True)
paddle = pytest.importorskip("paddle")

from reference_data import (  # noqa: E402
    FIXTURE_MODELS,
    FIXTURES,
    ROOT,
    fixture_frames,
    fixture_reference,
    max_rel,
)

from polypot.backend import paddle as pdb  # noqa: E402
from polypot.backend import paddle_namespace as pnp  # noqa: E402
from polypot.backend.registry import freeze, get_backend, load_frozen  # noqa: E402
from polypot.errors import ModelFormatError  # noqa: E402
from polypot.infer.runner import ModelRunner  # noqa: E402
from polypot.io.model_file import load_model, model_from_dict  # noqa: E402
from polypot.model import build_model  # noqa: E402
from polypot.model.array_api import namespace  # noqa: E402
from polypot.neighbor import NeighborData, build_neighbor_data  # noqa: E402

TOL = 1e-10
KEYS = ("energy", "force", "virial", "atom_energy", "atom_virial")
SCRIPT = {"model": {"type_map": ["O", "H"]}, "note": "frozen by test_paddle"}
#: frozen in the module fixture: type-sectioned, attention (2 layers) and strip type embedding
FROZEN_MODELS = ("se_e2_a", "se_atten_l2", "se_atten_v2_l0")
#: (model, case, frames, atomic programs run): (nf, nall, nloc) = (2, 1783, 192), (1, 1697,
#: 192) and (1, 36, 36); se_atten_l2 periodic frame 1 is ill-conditioned (a pair 9e-5 Å inside
#: rcut), so only frame 0 of it is compared
FROZEN_RUNS = {
    "se_e2_a": [("periodic", slice(0, 2), (False, True)), ("cluster", slice(0, 1), (True,))],
    "se_atten_l2": [("periodic", slice(0, 1), (False,)), ("cluster", slice(0, 1), (True,))],
    "se_atten_v2_l0": [("periodic", slice(0, 1), (True,)), ("cluster", slice(0, 1), (False,))],
}
FLOAT32_MODEL = {
    "type_map": ["O", "H"],
    "descriptor": {"type": "se_e2_a", "sel": [20, 40], "rcut": 4.0, "neuron": [4, 8],
                   "axis_neuron": 2, "precision": "float32"},
    "fitting_net": {"neuron": [8, 8], "precision": "float32"},
}


def _neighbors(model, name: str, case: str, frames: slice = slice(0, 1)) -> NeighborData:
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


# ---- namespace and backend primitives ----------------------------------------------------------
def test_namespace_is_registered_for_paddle_arrays():
    b = get_backend("paddle")
    assert b.name == "paddle" and b.has_autodiff
    assert namespace(b.asarray(np.ones(3))) is pnp is b.namespace()
    assert b.asarray(np.ones(3)).dtype == pnp.float64
    assert b.asarray(np.arange(3)).dtype == pnp.int64


def test_max_gradient_goes_to_the_maximum():
    b = get_backend("paddle")
    x = np.array([[1.0, 3.0, 2.0], [0.5, -1.0, 0.25]])
    y, pull = b.value_and_pullback(lambda t: pnp.max(t, axis=-1, keepdims=True), b.asarray(x))
    np.testing.assert_array_equal(b.to_numpy(y), [[3.0], [0.5]])
    np.testing.assert_array_equal(b.to_numpy(pull(pnp.ones_like(y))), [[0, 1, 0], [1, 0, 0]])
    assert tuple(pnp.max(b.asarray(x), axis=1).shape) == (2,)


def test_scatter_sum_and_pullback():
    b = get_backend("paddle")
    rng = np.random.default_rng(1)
    data = rng.normal(size=(2, 5, 3))
    index = np.array([[0, 1, 1, 3, 0], [2, 2, 2, 0, 1]])
    want = np.zeros((2, 4, 3))
    for f in range(2):
        np.add.at(want[f], index[f], data[f])
    got = b.to_numpy(b.scatter_sum(b.asarray(data), b.asarray(index), 4))
    np.testing.assert_allclose(got, want, rtol=1e-14, atol=1e-14)
    x = b.asarray(data)
    y, pull = b.value_and_pullback(lambda t: pnp.sum(t**3, axis=-1, keepdims=True), x)
    for _ in range(2):  # the graph is kept: pullbacks may be repeated (atomic virial)
        g = b.to_numpy(pull(pnp.full_like(y, 2.0)))
        np.testing.assert_allclose(g, 6.0 * data**2, rtol=1e-14)


# ---- eager: one frame per fixture model --------------------------------------------------------
@pytest.mark.parametrize("name", FIXTURE_MODELS)
def test_eager_matches_deepmd(models, name):
    model, params = models[name]
    case = "cluster" if name == "se_atten_l2" else "periodic"  # l2 is slow eagerly
    nd = _neighbors(model, name, case)
    out = ModelRunner(model, params, get_backend("paddle")).run(nd, forces=True, atomic=True)
    _shapes_ok(out, 1, nd.nloc, atomic=True)
    _assert_matches(out, fixture_reference(name, case), slice(0, 1))


# ---- frozen .json in a process without the model code ------------------------------------------
RUNNER = textwrap.dedent("""
    import json
    import sys
    import time
    from pathlib import Path

    import numpy as np

    from polypot.backend.registry import load_frozen

    work = Path(sys.argv[1])
    runs = json.loads((work / "runs.json").read_text())
    timing = {}
    for name, cases in runs.items():
        t0 = time.perf_counter()
        frozen = load_frozen(work / name / "model.json")
        timing[name + " load"] = time.perf_counter() - t0
        for case, atomics in cases:
            d = np.load(work / f"{name}-{case}-in.npz")
            for atomic in atomics:
                t0 = time.perf_counter()
                out = frozen.run(d["coord"], d["atype"], d["nlist"], d["mapping"], atomic=atomic)
                timing[f"{name} {case} atomic={atomic}"] = time.perf_counter() - t0
                np.savez(work / f"{name}-{case}-{int(atomic)}-out.npz", **out)
    assert "polypot.model" not in sys.modules, "loading a frozen .json imported polypot.model"
    (work / "timing.json").write_text(json.dumps(timing))
    print("ok")
""")


@pytest.fixture(scope="module")
def frozen_dir(models, tmp_path_factory) -> Path:
    """FROZEN_MODELS frozen to <name>/model.json (plus a float32 model), inputs saved, and all
    run in one subprocess."""
    work = tmp_path_factory.mktemp("paddle")
    runs: dict[str, list] = {}
    for name in FROZEN_MODELS:
        model, params = models[name]
        freeze(work / name / "model.json", model, params, model_def_script=SCRIPT)
        runs[name] = []
        for case, frames, atomics in FROZEN_RUNS[name]:
            nd = _neighbors(model, name, case, frames)
            np.savez(work / f"{name}-{case}-in.npz", coord=nd.coord, atype=nd.atype,
                     nlist=nd.nlist, mapping=nd.mapping)
            runs[name].append((case, list(atomics)))
    model, params = build_model(FLOAT32_MODEL, seed=1)
    freeze(work / "float32" / "model.json", model, params)
    nd = _neighbors(model, "se_e2_a", "periodic")
    np.savez(work / "float32-periodic-in.npz", coord=nd.coord.astype(np.float32),
             atype=nd.atype, nlist=nd.nlist, mapping=nd.mapping)
    runs["float32"] = [("periodic", [False])]
    (work / "runs.json").write_text(json.dumps(runs))
    result = subprocess.run([sys.executable, "-c", RUNNER, str(work)], cwd=ROOT,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0 and "ok" in result.stdout, result.stderr[-3000:]
    return work


@pytest.mark.parametrize("name", FROZEN_MODELS)
def test_frozen_without_model_code_matches_deepmd(frozen_dir, name):
    for case, frames, atomics in FROZEN_RUNS[name]:
        ref = fixture_reference(name, case)
        nloc = np.load(frozen_dir / f"{name}-{case}-in.npz")["nlist"].shape[1]
        nf = len(range(*frames.indices(10**6)))
        for atomic in atomics:
            out = dict(np.load(frozen_dir / f"{name}-{case}-{int(atomic)}-out.npz"))
            _shapes_ok(out, nf, nloc, atomic)
            _assert_matches(out, ref, frames, KEYS if atomic else KEYS[:4])


def test_frozen_files_metadata_and_neutral_dict(frozen_dir, models):
    for name in (*FROZEN_MODELS, "float32"):  # these files and no temporary ones
        folder = frozen_dir / name
        want = pdb.sidecar_paths(folder / "model.json").values()
        assert sorted(p.name for p in folder.iterdir()) == sorted(p.name for p in want)
    path = frozen_dir / "se_e2_a" / "model.json"
    files = pdb.sidecar_paths(path)
    frozen = load_frozen(path)
    meta = frozen.metadata
    assert meta["backend"] == "paddle" and meta["type_map"] == ["O", "H"]
    assert meta["model_def_script"] == SCRIPT and meta["precision"] == "float64"
    info = json.loads(files["metadata"].read_text())
    assert info["outputs"]["atomic"] == list(KEYS)
    model, params = models["se_e2_a"]
    back, back_params = model_from_dict(frozen.neutral_dict())
    assert back == model
    np.testing.assert_array_equal(back_params["descriptor"]["davg"],
                                  params["descriptor"]["davg"])


def test_frozen_float32_matches_numpy(frozen_dir):
    model, params = build_model(FLOAT32_MODEL, seed=1)
    nd = _neighbors(model, "se_e2_a", "periodic")
    ref = ModelRunner(model, params, get_backend("numpy")).run(nd, forces=False)["energy"]
    eager = ModelRunner(model, params, get_backend("paddle")).run(nd, forces=True)
    frozen = dict(np.load(frozen_dir / "float32-periodic-0-out.npz"))
    assert frozen["energy"].dtype == np.float32 and frozen["force"].dtype == np.float32
    assert eager["energy"].dtype == np.float32  # (forces follow the float64 input coordinates)
    for out in (eager, frozen):
        assert max_rel(out["energy"], ref) < 1e-5
    assert max_rel(frozen["force"], eager["force"]) < 1e-5


def test_frozen_bad_inputs_and_files(frozen_dir, tmp_path):
    frozen = load_frozen(frozen_dir / "se_e2_a" / "model.json")
    d = np.load(frozen_dir / "se_e2_a-cluster-in.npz")
    with pytest.raises(ValueError, match="neighbour slots"):
        frozen.run(d["coord"], d["atype"], d["nlist"][:, :, :-1], d["mapping"])
    with pytest.raises(ValueError, match="expected coord_ext"):
        frozen.run(d["coord"][0], d["atype"], d["nlist"], d["mapping"])
    with pytest.raises(FileNotFoundError):
        load_frozen(tmp_path / "absent.json")
    lonely = tmp_path / "lonely.json"
    lonely.write_text("{}")
    with pytest.raises(ModelFormatError, match="missing"):
        load_frozen(lonely)


@pytest.mark.skipif(importlib.util.find_spec("tensorflow") is None, reason="needs tensorflow")
def test_import_after_tensorflow_is_an_error_not_a_crash():
    code = ("import tensorflow\n"
            "try:\n    import polypot.backend.paddle\nexcept ImportError as e:\n"
            "    print('ImportError', e)\n")
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0 and "ImportError" in result.stdout, result.stderr[-2000:]
