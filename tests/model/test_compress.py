"""Model compression (``polypot compress``): the tabulated embedding reproduces the network,
its forces are the derivatives of its own energy, and compressed files convert to every
backend."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from reference_data import FIXTURES, fixture_frames

from polypot import DeepPot
from polypot.backend.registry import available, default_autodiff_backend
from polypot.cli.compress import compress_file
from polypot.cli.convert import convert
from polypot.cli.main import main
from polypot.io.model_file import load_model, save_model
from polypot.io.neutral import load_neutral
from polypot.model import build_model
from polypot.model.compress import (
    CompressionError,
    Tabulation,
    compress_descriptor,
    compress_model,
    hermite_coefficients,
)

E_TOL = 1e-7  # eV/atom
F_TOL = 1e-6  # eV/Å
COMPRESSIBLE = ["se_e2_a", "se_atten_l0", "se_atten_v2_l0", "dpa2"]
AUTODIFF = default_autodiff_backend()
needs_autodiff = pytest.mark.skipif(AUTODIFF is None, reason="no autodiff backend installed")
SUFFIX = {"torch": ".pth", "jax": ".hlo", "tensorflow": ".savedmodel", "paddle": ".json"}
SLOW_FREEZE = {"torch", "tensorflow"}  # freezing takes > 20 s on 2 cores


@pytest.fixture(scope="module")
def compressed(tmp_path_factory) -> dict[str, Path]:
    """Fixture name -> its compressed .dp (default step 0.01, extrapolate 5; the fixtures
    record DeePMD-kit's min_nbor_dist of their training data)."""
    root = tmp_path_factory.mktemp("compress")
    out = {}
    for name in COMPRESSIBLE:
        out[name] = root / f"{name}.dp"
        compress_file(FIXTURES / name / "model.dp", out[name])
    return out


def errors(ref: DeepPot, got: DeepPot, coord, cell, atype) -> tuple[float, float]:
    """(max |dE| per atom in eV, max |dF| in eV/Å)."""
    e0, f0, _ = ref.eval(coord, cell, atype)
    e1, f1, _ = got.eval(coord, cell, atype)
    return float(np.max(np.abs(e1 - e0)) / coord.shape[1]), float(np.max(np.abs(f1 - f0)))


# ---- the table itself --------------------------------------------------------------------------
def test_hermite_quintic_is_exact_for_quintics():
    """A quintic is reproduced exactly, with matching first and second derivatives."""
    poly = np.polynomial.Polynomial([0.3, -1.0, 0.5, 2.0, -0.7, 0.11])
    spec = Tabulation(lower=-1.0, upper=1.0, stride0=1.0, stride1=1.0, n0=2, n1=1, ntab=1,
                      width=1)
    # a uniform grid for the evaluator: two fine intervals of 1, one coarse of 1
    knots = spec.knots()
    coef = hermite_coefficients(knots, poly(knots)[:, None], poly.deriv(1)(knots)[:, None],
                                poly.deriv(2)(knots)[:, None])
    s = np.linspace(-1.0, 2.0, 301)
    got = spec(coef.reshape(1, 3, 6), s)[:, 0]
    np.testing.assert_allclose(got, poly(s), rtol=0, atol=1e-12)
    # constant beyond the table
    np.testing.assert_allclose(spec(coef.reshape(1, 3, 6), np.array([-3.0, 5.0]))[:, 0],
                               poly(np.array([-1.0, 2.0])), atol=1e-12)


# ---- fixtures: compressed == uncompressed ------------------------------------------------------
@needs_autodiff
@pytest.mark.parametrize("name", COMPRESSIBLE)
def test_compressed_equals_uncompressed(compressed, name):
    ref = DeepPot(FIXTURES / name / "model.dp", backend=AUTODIFF)
    got = DeepPot(compressed[name], backend=AUTODIFF)
    for case in ("periodic", "cluster"):
        coord, cell, atype = fixture_frames(name, case)
        de, df = errors(ref, got, coord[:1], None if cell is None else cell[:1], atype)
        print(f"{name} {case}: max |dE|/atom {de:.2e} eV, max |dF| {df:.2e} eV/Å")
        assert de < E_TOL and df < F_TOL


@needs_autodiff
def test_too_coarse_step_is_caught(tmp_path):
    """The comparison above can fail: a step of 2.0 in s misses the tolerances."""
    name = "se_e2_a"
    out = tmp_path / "coarse.dp"
    compress_file(FIXTURES / name / "model.dp", out, step=2.0)
    de, df = errors(DeepPot(FIXTURES / name / "model.dp", backend=AUTODIFF),
                    DeepPot(out, backend=AUTODIFF), *fixture_frames(name, "cluster"))
    assert de > E_TOL and df > F_TOL


def test_compressed_file_format(compressed, tmp_path):
    """The tables sit under the descriptor's ``compress`` key and survive .dp -> .yaml."""
    data = load_neutral(compressed["se_atten_v2_l0"])
    comp = data["model"]["descriptor"]["compress"]
    assert comp["@class"] == "Tabulation" and comp["table_stride_1"] == 0.01
    assert comp["table_stride_2"] == pytest.approx(0.1) and comp["table_extrapolate"] == 5
    assert set(comp["@variables"]) == {"table", "type_table"}
    assert "compress" not in load_neutral(FIXTURES / "se_e2_a" / "model.dp")["model"]["descriptor"]
    _, _, meta = load_model(compressed["se_e2_a"])
    assert meta["@variables"]["min_nbor_dist"] > 0.5
    model, params = compress_model(*small_model(SMALL["dpa1_strip_one_side"]), 0.9)
    save_model(tmp_path / "c.dp", model, params)
    save_model(tmp_path / "c.yaml", *load_model(tmp_path / "c.dp")[:2])
    coord, cell, atype = fixture_frames("se_e2_a", "cluster")
    np.testing.assert_array_equal(
        DeepPot(tmp_path / "c.yaml", backend="numpy").eval_energy(coord, cell, atype)[1],
        DeepPot(tmp_path / "c.dp", backend="numpy").eval_energy(coord, cell, atype)[1])


# ---- small random models: every table-index path -----------------------------------------------
SMALL = {
    "se_e2_a_two_side": {"type": "se_e2_a", "sel": [10, 20], "neuron": [4, 8],
                         "axis_neuron": 2, "type_one_side": False},
    "se_e2_a_resnet": {"type": "se_e2_a", "sel": [10, 20], "neuron": [4, 8, 16],
                       "axis_neuron": 2, "type_one_side": True, "resnet_dt": True},
    "dpa1_concat_one_side": {"type": "se_atten", "sel": 30, "neuron": [4, 8], "axis_neuron": 2,
                             "attn_layer": 0, "tebd_dim": 4, "type_one_side": True},
    "dpa1_strip_one_side": {"type": "se_atten", "sel": 30, "neuron": [4, 8], "axis_neuron": 2,
                            "attn_layer": 0, "tebd_dim": 4, "tebd_input_mode": "strip",
                            "type_one_side": True, "smooth_type_embedding": True},
}


def small_model(desc: dict, precision: str = "float64"):
    cfg = {"type_map": ["O", "H"], "descriptor": dict(desc, rcut=4.0, rcut_smth=0.5,
                                                      precision=precision),
           "fitting_net": {"neuron": [8, 8], "precision": precision}}
    model, params = build_model(cfg, seed=3)
    dd = params["descriptor"]  # non-trivial statistics, as after training
    rng = np.random.default_rng(0)
    dd["davg"] = (dd["davg"] + rng.uniform(0.0, 0.2, dd["davg"].shape[:1] + (1, 4))
                  ).astype(dd["davg"].dtype)
    dd["dstd"] = (dd["dstd"] * rng.uniform(0.2, 0.5, dd["dstd"].shape[:1] + (1, 4))
                  ).astype(dd["dstd"].dtype)
    return model, params


@pytest.mark.parametrize("kind", list(SMALL))
def test_small_models_energy(tmp_path, kind):
    coord, cell, atype = fixture_frames("se_e2_a", "cluster")
    model, params = small_model(SMALL[kind])
    cmodel, cparams = compress_model(model, params, 0.9)
    save_model(tmp_path / "a.dp", model, params)
    save_model(tmp_path / "b.dp", cmodel, cparams)
    e0, ae0 = DeepPot(tmp_path / "a.dp", backend="numpy").eval_energy(coord, cell, atype)
    e1, ae1 = DeepPot(tmp_path / "b.dp", backend="numpy").eval_energy(coord, cell, atype)
    assert np.max(np.abs(ae1 - ae0)) < 1e-9


def test_float32_model(tmp_path):
    coord, cell, atype = fixture_frames("se_e2_a", "cluster")
    model, params = small_model(SMALL["dpa1_concat_one_side"], "float32")
    cmodel, cparams = compress_model(model, params, 0.9)
    assert cparams["descriptor"]["compress"]["table"].dtype == np.float32
    save_model(tmp_path / "a.dp", model, params)
    save_model(tmp_path / "b.dp", cmodel, cparams)
    e0, _ = DeepPot(tmp_path / "a.dp", backend="numpy").eval_energy(coord, cell, atype)
    e1, _ = DeepPot(tmp_path / "b.dp", backend="numpy").eval_energy(coord, cell, atype)
    np.testing.assert_allclose(e1, e0, rtol=1e-5)


# ---- forces are the derivatives of the compressed energy -----------------------------------------
@needs_autodiff
def test_forces_equal_finite_differences(tmp_path):
    """With a coarse table (step 0.5: the polynomial pieces differ visibly from the net) the
    forces are still exactly -dE/dx of the tabulated energy (the table is C2)."""
    name = "se_atten_v2_l0"
    out = tmp_path / "c.dp"
    compress_file(FIXTURES / name / "model.dp", out, step=0.5)
    coord, _, atype = fixture_frames(name, "cluster")
    coord, atype = coord[:, :12], atype[:12]
    _, force, _ = DeepPot(out, backend=AUTODIFF).eval(coord, None, atype)
    energy = DeepPot(out, backend="numpy")
    h = 1e-4
    rng = np.random.default_rng(1)
    for _ in range(6):
        i, k = int(rng.integers(12)), int(rng.integers(3))
        plus, minus = coord.copy(), coord.copy()
        plus[0, i, k] += h
        minus[0, i, k] -= h
        fd = -(energy.eval_energy(plus, None, atype)[0] - energy.eval_energy(minus, None, atype)[0]
               ) / (2 * h)
        assert abs(float(fd[0, 0]) - force[0, i, k]) < 1e-6, (i, k)


# ---- every backend's frozen file --------------------------------------------------------------
@pytest.mark.parametrize("backend", [
    pytest.param(b, marks=pytest.mark.slow if b in SLOW_FREEZE else ())
    for b in SUFFIX if b in available()])
def test_frozen_files_match(tmp_path, backend):
    """A compressed se_e2_a (two-side tables) frozen to ``backend`` gives the .dp's numbers,
    and converts back to the same neutral file."""
    model, params = small_model(SMALL["se_e2_a_two_side"])
    src = tmp_path / "c.dp"
    save_model(src, *compress_model(model, params, 0.9))
    coord, _, atype = fixture_frames("se_e2_a", "cluster")
    coord, atype = coord[:, :10], atype[:10]
    frozen = tmp_path / f"c{SUFFIX[backend]}"
    convert(src, frozen)
    got = DeepPot(frozen).eval(coord, None, atype, atomic=True)
    ref_backend = AUTODIFF if AUTODIFF is not None else "numpy"
    ref = DeepPot(src, backend=ref_backend).eval(coord, None, atype, atomic=True)
    for g, r in zip(got, ref, strict=True):
        assert np.max(np.abs(g - r)) <= 1e-10 * max(1.0, np.max(np.abs(r)))
    convert(frozen, tmp_path / "back.dp")
    back = load_neutral(tmp_path / "back.dp")["model"]["descriptor"]["compress"]
    np.testing.assert_array_equal(back["@variables"]["table"],
                                  load_neutral(src)["model"]["descriptor"]["compress"]
                                  ["@variables"]["table"])


# ---- the command line and its errors ------------------------------------------------------------
def test_cli_compress(tmp_path, capsys):
    out = tmp_path / "c.dp"
    rc = main(["compress", "-i", str(FIXTURES / "se_atten_v2_l0" / "model.dp"), "-o", str(out),
               "-s", "0.02", "-e", "4", "--min-nbor-dist", "0.9"])
    assert rc == 0, capsys.readouterr().err
    comp = load_neutral(out)["model"]["descriptor"]["compress"]
    assert comp["table_stride_1"] == 0.02 and comp["table_extrapolate"] == 4


def test_cli_min_nbor_dist_from_training_script(tmp_path, capsys):
    script = tmp_path / "input.json"
    water = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "water" / "data_0"
    script.write_text(json.dumps({"training": {"training_data": {"systems": [str(water)]}}}))
    src, out = tmp_path / "small.dp", tmp_path / "c.dp"
    save_model(src, *small_model(SMALL["se_e2_a_two_side"]))  # records no min_nbor_dist
    rc = main(["compress", "-i", str(src), "-o", str(out), "-t", str(script)])
    assert rc == 0, capsys.readouterr().err
    assert 0.5 < load_neutral(out)["@variables"]["min_nbor_dist"] < 1.2


@pytest.mark.parametrize("name,message", [
    ("se_atten_l2", "attn_layer = 2"),
    ("small", "min_nbor_dist"),  # the file records none and none was given
])
def test_cli_errors(tmp_path, capsys, name, message):
    src = FIXTURES / name / "model.dp"
    if name == "small":
        src = tmp_path / "small.dp"
        save_model(src, *small_model(SMALL["se_e2_a_two_side"]))
    args = ["compress", "-i", str(src), "-o", str(tmp_path / "c.dp")]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "polypot compress: error" in err and message in err
    assert not (tmp_path / "c.dp").exists()


def test_unsupported_and_twice(compressed):
    with pytest.raises(CompressionError, match="not supported"):
        compress_descriptor(object(), {}, 1.0)
    model, params, _ = load_model(compressed["se_e2_a"])
    with pytest.raises(CompressionError, match="already compressed"):
        compress_model(model, params, 1.0)


@pytest.mark.parametrize("name", COMPRESSIBLE)
def test_compressed_runs_under_array_api_strict(compressed, name):
    """The table evaluation uses only the Array API standard."""
    xps = pytest.importorskip("array_api_strict")
    from polypot.backend.base import map_params
    from polypot.neighbor import build_neighbor_data

    model, params, _ = load_model(compressed[name])
    coord, cell, atype = fixture_frames(name, "cluster")
    nd = build_neighbor_data(coord, cell, atype, model.rcut, model.sel)
    ref = model.call_lower(params, nd.coord, nd.atype, nd.nlist, nd.mapping)
    out = model.call_lower(map_params(params, xps.asarray), xps.asarray(nd.coord),
                           xps.asarray(nd.atype), xps.asarray(nd.nlist), xps.asarray(nd.mapping))
    np.testing.assert_allclose(np.asarray(out["atom_energy"]), ref["atom_energy"], rtol=1e-13)


@needs_autodiff
def test_dpa2_strip_repinit_compressed(tmp_path):
    """DPA-2 with a strip-mode repinit (the case DeePMD-kit compresses): the compressed file
    equals the network within the tolerances, and its JAX frozen file equals the .dp."""
    src = Path(__file__).resolve().parents[1] / "fixtures" / "dpa2_variants" / "strip_tebd"
    ref = np.load(src.with_suffix(".npz"))
    coord, atype = ref["cluster_coord"], ref["cluster_atype"]
    model, params, _ = load_model(src.with_suffix(".dp"))
    cmodel, cparams = compress_model(model, params, 0.9)
    assert cmodel.atomic.descriptor.repinit_compress is not None
    assert "type_table" in cparams["descriptor"]["repinit"]["compress"]
    save_model(tmp_path / "c.dp", cmodel, cparams)
    de, df = errors(DeepPot(src.with_suffix(".dp"), backend=AUTODIFF),
                    DeepPot(tmp_path / "c.dp", backend=AUTODIFF), coord, None, atype)
    assert de < E_TOL and df < F_TOL
    if "jax" in available():
        convert(tmp_path / "c.dp", tmp_path / "c.hlo")
        got = DeepPot(tmp_path / "c.hlo").eval(coord, None, atype)
        want = DeepPot(tmp_path / "c.dp", backend="jax").eval(coord, None, atype)
        for g, w in zip(got, want, strict=True):
            assert np.max(np.abs(g - w)) <= 1e-10 * max(1.0, np.max(np.abs(w)))
    with pytest.raises(CompressionError, match="already compressed"):
        compress_model(cmodel, cparams, 0.9)
