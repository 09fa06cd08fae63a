"""PyTorch backend: eager autodiff and ``.pth`` frozen files (torch.export programs) equal
DeePMD-kit 3.2's results (1e-10 relative); a frozen file runs without ``polypot.model`` for
shapes other than the traced ones; float32 models freeze too."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import textwrap
import zipfile
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

torch = pytest.importorskip("torch")

from polypot.backend import torch_frozen  # noqa: E402
from polypot.backend.base import frozen_metadata  # noqa: E402
from polypot.backend.registry import freeze, get_backend, load_frozen  # noqa: E402
from polypot.errors import ModelFormatError  # noqa: E402
from polypot.infer.runner import ModelRunner  # noqa: E402
from polypot.io.model_file import load_model, model_from_dict, model_to_dict  # noqa: E402
from polypot.model import build_model  # noqa: E402
from polypot.neighbor import NeighborData, build_neighbor_data  # noqa: E402

TOL = 1e-10
KEYS = ("energy", "force", "virial", "atom_energy", "atom_virial")
SCRIPT = {"model": {"type_map": ["O", "H"]}, "note": "frozen by test_torch"}
FP32_CONFIG = {
    "type_map": ["O", "H"],
    "descriptor": {"type": "se_e2_a", "sel": [20, 40], "rcut": 4.0, "neuron": [4, 8],
                   "axis_neuron": 2, "precision": "float32"},
    "fitting_net": {"neuron": [8, 8], "precision": "float32"},
}
#: (input name, frozen file, atomic flags) run by the subprocess; periodic: (1, 1697, 192),
#: cluster: (nf, 36, 36), neither the traced (2, 11, 5) nor each other's shape
RUNS = (("periodic", "se_e2_a.pth", (False, True)), ("cluster", "se_e2_a.pth", (True,)),
        ("fp32", "fp32.pth", (False,)))


def _neighbors(model, name: str, case: str, frames: slice = slice(None)) -> NeighborData:
    coord, cell, atype = fixture_frames(name, case)
    return build_neighbor_data(coord[frames], None if cell is None else cell[frames], atype,
                               model.rcut, model.sel)


def _assert_matches(out: dict, ref: dict, nf: int, keys=KEYS) -> None:
    """``out`` equals the first ``nf`` reference frames to TOL."""
    for key in keys:
        got = np.asarray(out[key])
        want = ref[key][:nf]
        assert got.size == want.size, (key, got.shape, want.shape)
        err = max_rel(got.reshape(want.shape), want)
        assert err < TOL, f"{key}: relative error {err:.2e}"


def _shapes_ok(out: dict, nf: int, nloc: int, atomic: bool) -> None:
    want = {"energy": (nf, 1), "force": (nf, nloc, 3), "virial": (nf, 9),
            "atom_energy": (nf, nloc, 1)}
    if atomic:
        want["atom_virial"] = (nf, nloc, 9)
    assert {k: tuple(np.shape(v)) for k, v in out.items()} == want


@pytest.fixture(scope="module")
def models() -> dict:
    return {name: load_model(FIXTURES / name / "model.dp")[:2] for name in FIXTURE_MODELS}


@pytest.fixture(scope="module")
def fp32_model() -> tuple:
    return build_model(FP32_CONFIG, seed=1)


# ---- eager -------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", FIXTURE_MODELS)
def test_eager_matches_deepmd(models, name):
    model, params = models[name]
    nd = _neighbors(model, name, "periodic", slice(0, 1))
    out = ModelRunner(model, params, get_backend("torch")).run(nd, forces=True, atomic=True)
    _shapes_ok(out, 1, nd.nloc, atomic=True)
    _assert_matches(out, fixture_reference(name, "periodic"), 1)


# ---- .pth in a process without the model code --------------------------------------------------
RUNNER = textwrap.dedent("""
    import json
    import sys
    import time
    from pathlib import Path

    import numpy as np

    from polypot.backend.registry import load_frozen
    from polypot.io.neutral import save_neutral

    work = Path(sys.argv[1])
    runs = json.loads(sys.argv[2])
    frozen = {}
    for name in dict.fromkeys(file for _, file, _ in runs):
        start = time.perf_counter()
        frozen[name] = load_frozen(work / name)
        print(f"load {name}: {time.perf_counter() - start:.2f} s")
    for case, name, flags in runs:
        d = np.load(work / f"{case}-in.npz")
        for atomic in flags:
            out = frozen[name].run(d["coord"], d["atype"], d["nlist"], d["mapping"],
                                   atomic=atomic)
            np.savez(work / f"{case}-{int(atomic)}-out.npz", **out)
    first = frozen[runs[0][1]]
    (work / "metadata.json").write_text(json.dumps(first.metadata))
    save_neutral(work / "neutral.dp", first.neutral_dict())
    assert "polypot.model" not in sys.modules, "loading a frozen file imported polypot.model"
    print("ok")
""")


@pytest.fixture(scope="module")
def frozen_dir(models, fp32_model, tmp_path_factory) -> Path:
    """se_e2_a and the float32 model frozen to .pth, their inputs saved, all run in one
    subprocess that never imports ``polypot.model``."""
    work = tmp_path_factory.mktemp("pth")
    model, params = models["se_e2_a"]
    freeze(work / "se_e2_a.pth", model, params, model_def_script=SCRIPT)
    freeze(work / "fp32.pth", *fp32_model)
    _save_inputs(work, {"periodic": _neighbors(model, "se_e2_a", "periodic", slice(0, 1)),
                        "cluster": _neighbors(model, "se_e2_a", "cluster"),
                        "fp32": _neighbors(fp32_model[0], "se_e2_a", "periodic", slice(0, 1))})
    _run_without_model_code(work, RUNS)
    return work


def _save_inputs(work: Path, inputs: dict[str, NeighborData]) -> None:
    for case, nd in inputs.items():
        np.savez(work / f"{case}-in.npz", coord=nd.coord, atype=nd.atype, nlist=nd.nlist,
                 mapping=nd.mapping)


def _run_without_model_code(work: Path, runs: tuple) -> None:
    result = subprocess.run([sys.executable, "-c", RUNNER, str(work), json.dumps(runs)],
                            cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0 and "ok" in result.stdout, result.stderr[-3000:]


def _load_case(work: Path, case: str) -> tuple[dict, dict]:
    d = dict(np.load(work / f"{case}-in.npz"))
    outs = {atomic: dict(np.load(p)) for atomic in (False, True)
            if (p := work / f"{case}-{int(atomic)}-out.npz").exists()}
    return d, outs


@pytest.mark.parametrize("case", ["periodic", "cluster"])
def test_pth_without_model_code_matches_deepmd(frozen_dir, case):
    d, outs = _load_case(frozen_dir, case)
    nf, nloc = d["nlist"].shape[:2]
    assert outs and (case != "cluster" or d["coord"].shape[1] == nloc)  # no ghosts: padded
    for atomic, out in outs.items():
        _shapes_ok(out, nf, nloc, atomic)
        _assert_matches(out, fixture_reference("se_e2_a", case), nf,
                        KEYS if atomic else KEYS[:4])


def test_pth_float32_matches_numpy(frozen_dir, fp32_model):
    d, outs = _load_case(frozen_dir, "fp32")
    out = outs[False]
    assert out["energy"].dtype == np.float32 and out["force"].dtype == np.float32
    nd = NeighborData(d["coord"], d["atype"], d["mapping"], d["nlist"], None,
                      d["nlist"].shape[1])
    model, params = fp32_model
    ref = ModelRunner(model, params, get_backend("numpy")).run(nd, forces=False)
    assert max_rel(out["energy"], ref["energy"]) < 1e-5
    assert max_rel(out["atom_energy"], ref["atom_energy"]) < 1e-5
    ref = ModelRunner(model, params, get_backend("torch")).run(nd, forces=True)
    for key in ("force", "virial"):
        assert max_rel(out[key], ref[key]) < 1e-5, key


def test_pth_layout_metadata_and_neutral_dict(frozen_dir, models):
    model, params = models["se_e2_a"]
    with zipfile.ZipFile(frozen_dir / "se_e2_a.pth") as z:
        names = z.namelist()
        info = json.loads(next(z.read(n) for n in names if n.endswith("extra/polypot.json")))
    for entry in (torch_frozen.EXTRA_INFO, torch_frozen.EXTRA_ATOMIC, torch_frozen.EXTRA_NEUTRAL):
        assert any(n.endswith(f"extra/{entry}") for n in names), entry
    assert info["format"] == torch_frozen.FORMAT and info["nnei"] == 46 + 92
    assert info["coord_dtype"] == "float64"
    assert json.loads((frozen_dir / "metadata.json").read_text()) == frozen_metadata(
        model, "torch", SCRIPT)
    back, back_params, meta = load_model(frozen_dir / "neutral.dp")
    assert meta["model_def_script"] == SCRIPT
    want, got = model_to_dict(model, params)["model"], model_to_dict(back, back_params)["model"]
    assert json.dumps(want, default=lambda a: np.asarray(a).tolist()) == json.dumps(
        got, default=lambda a: np.asarray(a).tolist())
    assert isinstance(model_from_dict(model_to_dict(back, back_params))[0], type(model))


def test_pth_bad_inputs(frozen_dir):
    frozen = load_frozen(frozen_dir / "fp32.pth")
    assert isinstance(frozen, torch_frozen.TorchFrozenModel)
    d, _ = _load_case(frozen_dir, "fp32")
    with pytest.raises(ValueError, match="nnei"):
        frozen.run(d["coord"], d["atype"], d["nlist"][:, :, :-1], d["mapping"])
    with pytest.raises(ValueError, match="nloc <= nall"):
        frozen.run(d["coord"][:, :10], d["atype"][:, :10], d["nlist"], d["mapping"][:, :10])
    with pytest.raises(ValueError, match="expected coord_ext"):
        frozen.run(d["coord"][0], d["atype"], d["nlist"], d["mapping"])


class _Double(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return 2 * x


def test_pth_bad_files(tmp_path):
    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"not a zip archive")
    with pytest.raises(ModelFormatError, match="PT2"):
        load_frozen(bad)
    neutral = tmp_path / "neutral.pth"
    neutral.write_bytes((FIXTURES / "se_e2_a" / "model.dp").read_bytes())
    with pytest.raises(ModelFormatError):
        load_frozen(neutral)
    foreign = tmp_path / "foreign.pth"  # a torch.export program, but not polypot's
    buffer = io.BytesIO()
    torch.export.save(torch.export.export(_Double(), (torch.ones(2),)), buffer)
    foreign.write_bytes(buffer.getvalue())
    with pytest.raises(ModelFormatError, match="not a polypot"):
        load_frozen(foreign)
    with pytest.raises(FileNotFoundError):
        load_frozen(tmp_path / "missing.pth")


def test_freeze_is_atomic(fp32_model, tmp_path, monkeypatch):
    tiny = torch.export.export(_Double(), (torch.ones(2),))
    monkeypatch.setattr(torch_frozen, "export_programs", lambda *a: {False: tiny, True: tiny})
    path = tmp_path / "m.pth"
    path.write_bytes(b"previous")

    def fail(*args):
        raise OSError("disk full")

    monkeypatch.setattr(torch_frozen.os, "replace", fail)
    with pytest.raises(OSError, match="disk full"):
        freeze(path, *fp32_model)
    assert path.read_bytes() == b"previous"
    assert [p.name for p in tmp_path.iterdir()] == ["m.pth"]
    monkeypatch.undo()
    monkeypatch.setattr(torch_frozen, "export_programs", lambda *a: {False: tiny, True: tiny})
    freeze(path, *fp32_model)
    assert zipfile.is_zipfile(path) and [p.name for p in tmp_path.iterdir()] == ["m.pth"]
    umask = os.umask(0)
    os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask


# ---- every fixture model, .pt2 (slow: 15-50 s per model, .pt2 a minute or two) -------------
@pytest.mark.slow
@pytest.mark.parametrize("name", [n for n in FIXTURE_MODELS if n != "se_e2_a"])
def test_pth_every_fixture_model(models, name, tmp_path):
    model, params = models[name]
    freeze(tmp_path / "m.pth", model, params)
    frozen = load_frozen(tmp_path / "m.pth")
    for case, frames in (("periodic", slice(0, 1)), ("cluster", slice(None))):
        nd = _neighbors(model, name, case, frames)
        out = frozen.run(nd.coord, nd.atype, nd.nlist, nd.mapping, atomic=True)
        _shapes_ok(out, nd.coord.shape[0], nd.nloc, atomic=True)
        _assert_matches(out, fixture_reference(name, case), nd.coord.shape[0])


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:.*LeafSpec.*:FutureWarning")  # inside torch's AOTI compile
def test_pt2_aoti_package_matches_deepmd(models, tmp_path):
    """``.pt2``: both programs AOTInductor-compiled (a few minutes on two cores)."""
    model, params = models["se_e2_a"]
    freeze(tmp_path / "se_e2_a.pt2", model, params, model_def_script=SCRIPT)
    _save_inputs(tmp_path, {"periodic": _neighbors(model, "se_e2_a", "periodic", slice(0, 1)),
                            "cluster": _neighbors(model, "se_e2_a", "cluster")})
    runs = (("periodic", "se_e2_a.pt2", (False, True)), ("cluster", "se_e2_a.pt2", (True,)))
    _run_without_model_code(tmp_path, runs)
    for case in ("periodic", "cluster"):
        d, outs = _load_case(tmp_path, case)
        nf, nloc = d["nlist"].shape[:2]
        for atomic, out in outs.items():
            _shapes_ok(out, nf, nloc, atomic)
            _assert_matches(out, fixture_reference("se_e2_a", case), nf,
                            KEYS if atomic else KEYS[:4])
    assert json.loads((tmp_path / "metadata.json").read_text()) == frozen_metadata(
        model, "torch", SCRIPT)
    assert load_frozen(tmp_path / "se_e2_a.pt2").format == torch_frozen.AOTI_FORMAT
