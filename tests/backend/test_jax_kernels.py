"""The JAX kernels of polypot.backend.jax_kernels against the model's reference code."""

from __future__ import annotations

import numpy as np
import pytest

jax = pytest.importorskip("jax")

from reference_data import FIXTURES, fixture_frames, randomise_env_stats  # noqa: E402

from polypot import DeepPot  # noqa: E402
from polypot.backend.jax import JaxBackend  # noqa: E402  (registers the kernels)
from polypot.backend.jax_kernels import (  # noqa: E402
    CHUNK_PAIRS,
    tabulated_contract,
    tabulated_contract_typed,
)
from polypot.cli.compress import compress_file  # noqa: E402
from polypot.model.compress import Tabulation  # noqa: E402

jnp = JaxBackend().namespace()
SPEC = Tabulation(lower=-1.0, upper=2.0, stride0=0.05, stride1=0.5, n0=60, n1=8, ntab=3,
                  width=7)
NNEI = 5


def _inputs(nrow: int, seed: int = 0):
    """table, s, rr, index, type table, type index, weight: s below the table, in its fine and
    coarse parts and beyond its top (where G is held constant)."""
    rng = np.random.default_rng(seed)
    shape = (2, nrow, NNEI)
    return (jnp.asarray(rng.normal(size=(SPEC.ntab, SPEC.nint, 6 * SPEC.width))),
            jnp.asarray(rng.uniform(SPEC.lower - 0.5, SPEC.top + 1.0, size=shape)),
            jnp.asarray(rng.normal(size=(*shape, 4))),
            jnp.asarray(rng.integers(0, SPEC.ntab, size=shape)),
            jnp.asarray(rng.normal(size=(4, SPEC.width))),
            jnp.asarray(rng.integers(0, 4, size=shape)),
            jnp.asarray(rng.uniform(0.0, 1.0, size=shape)))


# kernel name -> (kernel, reference); each is f(s, rr, w, data) -> (2, nrow, width, 4)
CASES = {
    "plain": (lambda s, rr, w, d: tabulated_contract(SPEC, d[0], s, rr, d[3]),
              lambda s, rr, w, d: SPEC.contract_reference(d[0], s, rr, d[3])),
    "typed": (lambda s, rr, w, d: tabulated_contract_typed(SPEC, d[0], s, rr, d[4], d[5], w),
              lambda s, rr, w, d: SPEC.contract_typed_reference(d[0], s, rr, d[4], d[5], w)),
    "typed-unweighted": (
        lambda s, rr, w, d: tabulated_contract_typed(SPEC, d[0], s, rr, d[4], d[5]),
        lambda s, rr, w, d: SPEC.contract_typed_reference(d[0], s, rr, d[4], d[5])),
}


def _loss(f, d):
    def loss(s, rr, w):  # a nonlinear scalar of the contraction, like a fitting net
        return jnp.sum(jnp.tanh(f(s, rr, w, d)) ** 2)
    return loss


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("nrow", [1, 3, CHUNK_PAIRS // NNEI + 7])  # one chunk, padding, several
def test_value_and_gradient_equal_reference(case, nrow):
    d = _inputs(nrow)
    s, rr, w = d[1], d[2], d[6]
    kernel, reference = CASES[case]
    got, want = kernel(s, rr, w, d), reference(s, rr, w, d)
    assert got.shape == (2, nrow, SPEC.width, 4)
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)
    gk = jax.grad(_loss(kernel, d), argnums=(0, 1, 2))(s, rr, w)
    gr = jax.grad(_loss(reference, d), argnums=(0, 1, 2))(s, rr, w)
    compared = 3 if case == "typed" else 2  # the others take no weight
    for a, b in zip(gk[:compared], gr[:compared], strict=True):
        assert float(jnp.max(jnp.abs(b))) > 1e-3  # a gradient that is there to compare
        np.testing.assert_allclose(a, b, rtol=1e-11, atol=1e-11)


@pytest.mark.parametrize("case", CASES)
def test_second_derivative_equals_reference(case):
    """Forward over reverse (what JaxBackend.hessian does) through the hand-written VJPs."""
    d = _inputs(4)
    s, rr, w = d[1], d[2], d[6]
    rng = np.random.default_rng(1)
    tangents = tuple(jnp.asarray(rng.normal(size=x.shape)) for x in (s, rr, w))

    def hvp(f):
        grad = jax.grad(_loss(f, d), argnums=(0, 1, 2))
        return jax.jvp(grad, (s, rr, w), tangents)[1]

    kernel, reference = CASES[case]
    for a, b in zip(hvp(kernel), hvp(reference), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-10)


def test_wrong_derivative_would_be_caught():
    """Negative control: without the dG/ds term the s-gradient differs from the kernel's."""
    d = _inputs(3)
    s, rr, w = d[1], d[2], d[6]
    kernel, reference = CASES["plain"]
    gk = jax.grad(_loss(kernel, d), argnums=0)(s, rr, w)
    frozen = jax.grad(_loss(lambda s_, *a: reference(jax.lax.stop_gradient(s_), *a), d),
                      argnums=0)(s, rr, w)
    assert float(jnp.max(jnp.abs(gk - frozen))) > 1e-3


@pytest.mark.parametrize("case", CASES)
def test_symbolic_row_count_exports(case):
    """Chunking with a symbolic atom count (the shape of a frozen .hlo program)."""
    d = _inputs(3)
    kernel, reference = CASES[case]

    def data(s_, r, w_, idx, tidx):  # d with its per-pair arrays replaced
        return (d[0], s_, r, idx, d[4], tidx, w_)

    nloc, = jax.export.symbolic_shape("nloc")
    f = jax.jit(lambda *a: kernel(*a[:3], data(*a)))
    pair = lambda dt: jax.ShapeDtypeStruct((2, nloc, NNEI), dt)  # noqa: E731
    exp = jax.export.export(f)(pair(d[1].dtype), jax.ShapeDtypeStruct((2, nloc, NNEI, 4),
                                                                      d[2].dtype),
                               pair(d[6].dtype), pair(d[3].dtype), pair(d[5].dtype))
    for n in (1, 3):
        args = tuple(x[:, :n] for x in (d[1], d[2], d[6], d[3], d[5]))
        want = reference(*args[:3], data(*args))
        np.testing.assert_allclose(exp.call(*args), want, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("name", ["se_e2_a", "se_atten_l0", "se_atten_v2_l0"])
def test_compressed_fixture_models_equal_reference_code(name, tmp_path, monkeypatch):
    """DeePMD-kit's fixtures compressed (concat and strip tables) on the JAX backend: the
    kernels give the reference code's energy, forces, virial and atomic virial."""
    path = tmp_path / "c.dp"
    compress_file(FIXTURES / name / "model.dp", path)
    coord, cell, atype = fixture_frames(name, "periodic")
    got = DeepPot(path, backend="jax").eval(coord[:1], cell[:1], atype, atomic=True)
    monkeypatch.setenv("POLYPOT_NO_KERNELS", "1")
    want = DeepPot(path, backend="jax").eval(coord[:1], cell[:1], atype, atomic=True)
    for g, w in zip(got, want, strict=True):
        np.testing.assert_allclose(g, w, rtol=0, atol=1e-10 * max(1.0, float(np.max(np.abs(w)))))


def _small_chunks(monkeypatch, rows: int, nnei: int) -> None:
    """Both chunk kernels on, with ``rows`` atoms per chunk (``nnei``: the neighbour list's
    width; 48: the repformer's of the dpa2 fixture)."""
    import polypot.backend.jax_kernels as kernels
    import polypot.kernels

    monkeypatch.setattr(kernels, "CENTRE_CHUNK_PAIRS", rows * nnei)
    monkeypatch.setattr(kernels, "ATTN_CHUNK_PAIRS", rows * nnei)
    monkeypatch.setattr(kernels, "ROW_CHUNK_PAIRS", rows * 48)
    monkeypatch.setattr(kernels, "WHOLE_SYSTEM_PAIRS", 0)  # chunk even these small systems
    for name in ("centre_chunks", "row_chunks"):
        monkeypatch.setitem(polypot.kernels._KERNELS, (name, "jax.numpy"),
                            getattr(kernels, name))


def _with_random_davg(name: str, path, seed: int = 0) -> None:
    """The fixture ``name`` written to ``path`` with random davg / dstd in every block (the
    fixtures' DPA-1 / DPA-2 blocks have davg = 0, where an empty slot's row is zero)."""
    from polypot.io.model_file import load_model, save_model

    model, params, script = load_model(FIXTURES / name / "model.dp")
    randomise_env_stats(params["descriptor"], np.random.default_rng(seed))
    save_model(path, model, params, script)


@pytest.mark.parametrize("name", ["se_e2_a", "se_atten_l0", "se_atten_l2", "dpa2"])
def test_chunk_kernels_equal_reference_code(name, tmp_path, monkeypatch):
    """Two frames with padding atoms, more centres than one chunk holds (the last chunk padded):
    energy, forces, virials and atomic virials as from the whole-system program (DPA-2: its
    repinit stage in centre chunks, each repformer layer in row chunks).

    With random davg (an empty slot's row is then not zero) and an H as atom 0: empty slots take
    the type of the frame's atom 0 (DeePMD-kit's rule), which type-embedding descriptors see.
    A chunk's own atom 0 is its first centre; before the chunks passed the frame's type on, the
    O chunks of se_atten_l0 gave energies off by 0.1 eV."""
    import polypot.backend.jax_kernels as kernels

    path = tmp_path / "davg.dp"
    _with_random_davg(name, path)
    coord, cell, atype = fixture_frames(name, "periodic")
    order = np.arange(len(atype))
    first_h = int(np.flatnonzero(atype == 1)[0])
    order[[0, first_h]] = order[[first_h, 0]]
    coord, atype = coord[:, order], atype[order]
    runner = DeepPot(path, backend="jax")
    # frame 0 and a shifted copy (frame 1 of se_atten_l2 is ill-conditioned: a neighbour 1e-4 Å
    # inside rcut, where any re-association of its attention moves forces by 1e-5; issue 3)
    two = np.stack([coord[0], coord[0] + np.array([0.3, -0.2, 0.1])])
    nd = runner.neighbor_data(two, np.stack([cell[0], cell[0]]), atype)
    pad = [(0, 0), (0, 3)]  # three padding atoms (type -1) at the end of the extended system
    nd = type(nd)(np.pad(nd.coord, pad + [(0, 0)]), np.pad(nd.atype, pad, constant_values=-1),
                  np.pad(nd.mapping, pad), nd.nlist, nd.overflow, nd.nloc)
    _small_chunks(monkeypatch, 7, nd.nlist.shape[-1])  # the last chunk padded
    assert nd.nloc % kernels._per_chunk(nd.nlist.shape[-1], kernels.CENTRE_CHUNK_PAIRS) != 0
    assert nd.nloc % kernels._per_chunk(48, kernels.ROW_CHUNK_PAIRS) != 0
    got = runner._runner.run(nd, forces=True, atomic=True)
    monkeypatch.setenv("POLYPOT_NO_KERNELS", "1")
    want = DeepPot(path, backend="jax")._runner.run(nd, forces=True, atomic=True)
    for key, w in want.items():
        np.testing.assert_allclose(got[key], w, rtol=0,
                                   atol=1e-10 * max(1.0, float(np.max(np.abs(w)))), err_msg=key)


def test_dpa2_chunk_kernels_hessian_equals_reference_code(monkeypatch):
    """Second derivatives (forward over reverse) pass through the rematerialised chunks: the
    DPA-2 Hessian of the fixture's cluster (36 atoms, 5 per chunk) equals the whole-system one."""
    coord, cell, atype = fixture_frames("dpa2", "cluster")
    runner = DeepPot(FIXTURES / "dpa2" / "model.dp", backend="jax")
    nd = runner.neighbor_data(coord[:1], None, atype)
    _small_chunks(monkeypatch, 5, nd.nlist.shape[-1])
    got = runner._runner.hessian(nd)
    monkeypatch.setenv("POLYPOT_NO_KERNELS", "1")
    want = DeepPot(FIXTURES / "dpa2" / "model.dp", backend="jax")._runner.hessian(nd)
    assert np.max(np.abs(want)) > 1e-3
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-10 * float(np.max(np.abs(want))))


@pytest.mark.parametrize("one_side", [False, True])
def test_type_grouped_chunks_equal_reference_code(one_side, monkeypatch):
    """se_e2_a with three types, per-type fitting nets (and, type_one_side false, per-centre
    embedding nets): chunks of one type each run those nets as one dense product
    (``uniform_type_params``); energies, forces, virials, atomic virials and the Hessian equal
    the whole-system reference program. Types have 7, 11 and 0 atoms per frame, so the chunks
    end mid-type and one type is absent."""
    from polypot.infer.runner import ModelRunner
    from polypot.model.build import build_model
    from polypot.neighbor import build_neighbor_data

    cfg = {"type_map": ["O", "H", "C"],
           "descriptor": {"type": "se_e2_a", "sel": [6, 9, 3], "rcut": 3.0, "rcut_smth": 0.5,
                          "neuron": [4, 8], "axis_neuron": 2, "type_one_side": one_side},
           "fitting_net": {"neuron": [6, 6]}}
    model, params = build_model(cfg, seed=5)
    rng = np.random.default_rng(1)
    params["fitting"]["bias_atom_e"] = rng.normal(size=params["fitting"]["bias_atom_e"].shape)
    atype = rng.permutation(np.array([0] * 7 + [1] * 11))
    coord = rng.uniform(0, 5.0, (2, 18, 3))
    nd = build_neighbor_data(coord, np.tile(np.eye(3) * 5.0, (2, 1, 1)), atype, 3.0,
                             [6, 9, 3])
    _small_chunks(monkeypatch, 4, nd.nlist.shape[-1])
    runner = ModelRunner(model, params, JaxBackend())
    got = runner.run(nd, forces=True, atomic=True)
    got_h = runner.hessian(type(nd)(nd.coord[:1], nd.atype[:1], nd.mapping[:1], nd.nlist[:1],
                                    nd.overflow[:1], nd.nloc))
    monkeypatch.setenv("POLYPOT_NO_KERNELS", "1")
    ref = ModelRunner(model, params, JaxBackend())
    want = ref.run(nd, forces=True, atomic=True)
    want_h = ref.hessian(type(nd)(nd.coord[:1], nd.atype[:1], nd.mapping[:1], nd.nlist[:1],
                                  nd.overflow[:1], nd.nloc))
    for key, w in want.items():
        np.testing.assert_allclose(got[key], w, rtol=0,
                                   atol=1e-12 * max(1.0, float(np.max(np.abs(w)))), err_msg=key)
    assert np.max(np.abs(want["force"])) > 1e-3
    np.testing.assert_allclose(got_h, want_h, rtol=0, atol=1e-12 * float(np.max(np.abs(want_h))))


def test_inference_program_runs_each_chunk_once(monkeypatch):
    """The force program (``lower_function``) takes each chunk's energies and gradient in one
    pass, with no rematerialisation; outside ``first_order_coordinates`` (Hessians, training)
    the chunks are rematerialised, because their second derivatives are needed."""
    import jax

    from polypot.backend.jax import lower_function

    coord, cell, atype = fixture_frames("se_e2_a", "periodic")
    runner = DeepPot(FIXTURES / "se_e2_a" / "model.dp", backend="jax")
    nd = runner.neighbor_data(coord[:1], cell[:1], atype)
    _small_chunks(monkeypatch, 7, nd.nlist.shape[-1])
    model, params = runner._runner.model, runner._runner.params
    args = tuple(jax.numpy.asarray(a) for a in (nd.coord, nd.atype, nd.nlist, nd.mapping))

    def energy(x):
        return model.atomic_energy(params, x, *args[1:]).sum()

    def remat(jaxpr) -> bool:
        return "remat" in str(jaxpr) or "checkpoint" in str(jaxpr)

    assert remat(jax.make_jaxpr(jax.grad(energy))(args[0]))
    assert not remat(jax.make_jaxpr(lower_function(model))(params, *args))


# ---- chunks on CPUs, whole systems elsewhere ----------------------------------------------------
def _exported(model, params, platforms, monkeypatch, narrow: bool = False):
    from polypot.backend import jax_frozen

    monkeypatch.setattr(jax_frozen, "PLATFORMS", platforms)
    return jax.export.deserialize(bytearray(jax_frozen.export_program(model, params, False,
                                                                      narrow)))


@pytest.mark.parametrize("name", ["se_e2_a", "se_atten_l0", "se_atten_l0-compressed", "dpa2"])
def test_frozen_programs_chunk_on_cpu_only(name, monkeypatch, tmp_path):
    """A frozen program lowered for a CPU loops over chunks (``lax.map``, a ``while`` loop);
    lowered for CUDA it evaluates the whole system at once (no loop: centre chunks, table
    chunks, DPA-2's repformer rows). With the chunked platform set to another one, the CPU runs
    that whole-system program (36-atom cluster), which gives the chunked program's energies,
    forces and virials."""
    import polypot.backend.jax_kernels as kernels
    from polypot.backend.jax_frozen import _pad_atoms
    from polypot.io.model_file import load_model
    from polypot.neighbor import build_neighbor_data

    base = name.removesuffix("-compressed")
    path = FIXTURES / base / "model.dp"
    if name.endswith("-compressed"):
        path = tmp_path / "c.dp"
        compress_file(FIXTURES / base / "model.dp", path)
    model, params = load_model(path)[:2]
    narrow = base == "se_e2_a"
    cpu = _exported(model, params, ("cpu",), monkeypatch, narrow)
    cuda = _exported(model, params, ("cuda",), monkeypatch, narrow)
    assert "stablehlo.while" in cpu.mlir_module()
    assert "stablehlo.while" not in cuda.mlir_module()

    monkeypatch.setattr(kernels, "_CHUNK_PLATFORM", "cuda")
    whole_on_cpu = _exported(model, params, ("cpu",), monkeypatch, narrow)
    assert "stablehlo.while" not in whole_on_cpu.mlir_module()
    coord, _, atype = fixture_frames(base, "cluster")
    nd = build_neighbor_data(coord[:1], None, atype, model.rcut, model.sel)
    c, t, m = _pad_atoms(nd.coord, nd.atype, nd.mapping)
    nl = [nd.nlist]
    if narrow:
        starts = np.cumsum([0, *model.sel])
        nl = [nd.nlist[..., a:b] for a, b in zip(starts[:-1], starts[1:], strict=True)]
    got = whole_on_cpu.call(c, t, *nl, m)
    want = cpu.call(c, t, *nl, m)
    for key in ("energy", "force", "virial", "atom_energy"):
        w = np.asarray(want[key])
        np.testing.assert_allclose(np.asarray(got[key]), w, rtol=0,
                                   atol=1e-10 * max(1.0, float(np.max(np.abs(w)))), err_msg=key)
