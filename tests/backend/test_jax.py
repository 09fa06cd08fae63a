"""JAX backend: the jitted lower evaluation and ``.hlo`` frozen files equal DeePMD-kit 3.2's
results (1e-10 relative); a frozen file runs without ``polypot.model`` for any nf/nall/nloc."""

from __future__ import annotations

import json
import re
import shutil
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

pytest.importorskip("jax")
pytest.importorskip("h5py")

from polypot.backend import jax as jax_backend  # noqa: E402
from polypot.backend import jax_frozen  # noqa: E402
from polypot.backend.base import frozen_metadata  # noqa: E402
from polypot.backend.jax import JaxBackend  # noqa: E402
from polypot.backend.registry import freeze, get_backend, load_frozen  # noqa: E402
from polypot.errors import ModelFormatError  # noqa: E402
from polypot.infer.runner import ModelRunner  # noqa: E402
from polypot.io.model_file import load_model, model_from_dict, model_to_dict  # noqa: E402
from polypot.model import build_model  # noqa: E402
from polypot.neighbor import NeighborData, build_neighbor_data  # noqa: E402

TOL = 1e-10
KEYS = ("energy", "force", "virial", "atom_energy", "atom_virial")
#: (nf, nall, nloc) = (2, 1783, 192) (frame 0 padded) and (1, 36, 36): one program, two shapes.
#: The atomic program runs on both, the default one on the cluster.
FROZEN_CASES = ("periodic", "cluster")
SCRIPT = {"model": {"type_map": ["O", "H"]}, "note": "frozen by test_jax"}
#: (model, case, frame) that are ill-conditioned, with the relative tolerance used there.
#: se_atten_l2 periodic frame 1 has the pair 0-144 at rcut - 9.3e-5 A: its switch value s ~ 5e-14
#: (the expanded quintic loses ~1% of it to cancellation, in DeePMD-kit too) and the attention
#: divides r3 = s x / r^2 / std (|r3| ~ 9e-14) by max(|r3|, 1e-12), which amplifies rounding
#: differences ~1e10. Eager torch/jax already differ from DeePMD-kit by 5e-8 in the forces there;
#: XLA's fused evaluation order by ~1e-5 (energies 4e-13, atomic energies 1.2e-10).
ILL_CONDITIONED = {("se_atten_l2", "periodic", 1): 1e-4}


def _neighbors(model, name: str, case: str, frames: slice = slice(None)) -> NeighborData:
    coord, cell, atype = fixture_frames(name, case)
    return build_neighbor_data(coord[frames], None if cell is None else cell[frames], atype,
                               model.rcut, model.sel)


def _assert_matches(out: dict, ref: dict, nf: int, keys=KEYS, where: tuple = ()) -> None:
    """``out`` equals the first ``nf`` reference frames to TOL (see ILL_CONDITIONED)."""
    for key in keys:
        got = np.asarray(out[key])
        want = ref[key][:nf]
        assert got.size == want.size, (key, got.shape, want.shape)
        got = got.reshape(want.shape)
        for f in range(nf):
            tol = ILL_CONDITIONED.get((*where, f), TOL)
            err = max_rel(got[f], want[f])
            assert err < tol, f"{key}, frame {f}: relative error {err:.2e}"


def _shapes_ok(out: dict, nd: NeighborData, atomic: bool) -> None:
    nf, nloc = nd.nlist.shape[:2]
    want = {"energy": (nf, 1), "force": (nf, nloc, 3), "virial": (nf, 9),
            "atom_energy": (nf, nloc, 1)}
    if atomic:
        want["atom_virial"] = (nf, nloc, 9)
    assert {k: tuple(np.shape(v)) for k, v in out.items()} == want


@pytest.fixture(scope="module")
def models() -> dict:
    return {name: load_model(FIXTURES / name / "model.dp")[:2] for name in FIXTURE_MODELS}


# ---- jit ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", FIXTURE_MODELS)
def test_jit_matches_deepmd(models, name):
    model, params = models[name]
    nd = _neighbors(model, name, "periodic", slice(0, 1))
    evaluate = JaxBackend().compile_lower(model, params, atomic=True)
    out = evaluate(nd.coord, nd.atype, nd.nlist, nd.mapping)
    _shapes_ok(out, nd, atomic=True)
    _assert_matches(out, fixture_reference(name, "periodic"), 1)


# ---- .hlo in a process without the model code --------------------------------------------------
RUNNER = textwrap.dedent("""
    import sys
    from pathlib import Path

    import numpy as np

    from polypot.backend.registry import load_frozen

    work = Path(sys.argv[1])
    for hlo in sorted(work.glob("*.hlo")):
        frozen = load_frozen(hlo)
        for case in {cases!r}:
            d = np.load(work / f"{{hlo.stem}}-{{case}}-in.npz")
            for atomic in (True, False) if case == "cluster" else (True,):
                out = frozen.run(d["coord"], d["atype"], d["nlist"], d["mapping"], atomic=atomic)
                np.savez(work / f"{{hlo.stem}}-{{case}}-{{int(atomic)}}-out.npz", **out)
    assert "polypot.model" not in sys.modules, "loading a .hlo imported polypot.model"
    print("ok")
""").format(cases=FROZEN_CASES)


@pytest.fixture(scope="module")
def frozen_dir(models, tmp_path_factory) -> Path:
    """Every fixture model frozen to .hlo, its inputs saved, and all run in one subprocess."""
    work = tmp_path_factory.mktemp("hlo")
    for name, (model, params) in models.items():
        freeze(work / f"{name}.hlo", model, params, model_def_script=SCRIPT)
        for case in FROZEN_CASES:
            nd = _neighbors(model, name, case)
            np.savez(work / f"{name}-{case}-in.npz", coord=nd.coord, atype=nd.atype,
                     nlist=nd.nlist, mapping=nd.mapping)
    result = subprocess.run([sys.executable, "-c", RUNNER, str(work)], cwd=ROOT,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0 and "ok" in result.stdout, result.stderr[-3000:]
    return work


@pytest.mark.parametrize("case", FROZEN_CASES)
@pytest.mark.parametrize("name", FIXTURE_MODELS)
def test_hlo_without_model_code_matches_deepmd(frozen_dir, name, case):
    ref = fixture_reference(name, case)
    d = np.load(frozen_dir / f"{name}-{case}-in.npz")
    nd = NeighborData(d["coord"], d["atype"], d["mapping"], d["nlist"], None, d["nlist"].shape[1])
    for atomic in (True, False) if case == "cluster" else (True,):
        out = dict(np.load(frozen_dir / f"{name}-{case}-{int(atomic)}-out.npz"))
        _shapes_ok(out, nd, atomic)
        _assert_matches(out, ref, nd.coord.shape[0], KEYS if atomic else KEYS[:4], (name, case))


def test_hlo_layout_and_neutral_dict(frozen_dir, models):
    import h5py

    name = "se_e2_a"
    model, params = models[name]
    path = frozen_dir / f"{name}.hlo"
    with h5py.File(path, "r") as f:
        doc = json.loads(f.attrs["json"])
        for key in jax_frozen.PROGRAMS.values():
            assert f[doc["@variables"][key]].dtype.kind == "V"  # opaque bytes, as DeePMD-kit
    assert doc["constants"]["type_map"] == ["O", "H"] and doc["constants"]["sel"] == [46, 92]
    frozen = load_frozen(path)
    assert frozen.metadata == frozen_metadata(model, "jax", SCRIPT)
    neutral = frozen.neutral_dict()
    assert set(neutral) >= {"backend", "model", "model_def_script", "@variables"}
    assert "constants" not in neutral and not neutral["@variables"]
    assert neutral["model_def_script"] == SCRIPT
    back, back_params = model_from_dict(neutral)
    want = model_to_dict(model, params)["model"]
    got = model_to_dict(back, back_params)["model"]
    flat_want, flat_got = [], []
    jax_frozen._map_variables(want, lambda x: flat_want.append(x))
    jax_frozen._map_variables(got, lambda x: flat_got.append(x))
    assert len(flat_want) == len(flat_got) > 0
    for a, b in zip(flat_want, flat_got, strict=True):
        np.testing.assert_array_equal(a, b)


def test_hlo_bad_inputs_and_files(frozen_dir, tmp_path):
    frozen = load_frozen(frozen_dir / "se_e2_a.hlo")
    d = np.load(frozen_dir / "se_e2_a-cluster-in.npz")
    with pytest.raises(ValueError, match="nnei"):
        frozen.run(d["coord"], d["atype"], d["nlist"][:, :, :-1], d["mapping"])
    with pytest.raises(ValueError, match="nloc <= nall"):
        frozen.run(d["coord"][:, :10], d["atype"][:, :10], d["nlist"], d["mapping"][:, :10])
    bad = tmp_path / "bad.hlo"
    bad.write_bytes(b"not hdf5")
    with pytest.raises(ModelFormatError, match="HDF5"):
        load_frozen(bad)
    dp_named_hlo = tmp_path / "neutral.hlo"
    shutil.copy(FIXTURES / "se_e2_a" / "model.dp", dp_named_hlo)
    with pytest.raises(ModelFormatError, match="polypot"):
        load_frozen(dp_named_hlo)  # a .dp has the same layout but no programs


def _run_full(frozen, d: dict) -> dict:
    """The ``stablehlo`` program (full ``sel`` list) on the saved inputs ``d``."""
    coord, atype, mp = jax_frozen._pad_atoms(d["coord"], d["atype"], d["mapping"])
    return {k: np.asarray(v) for k, v in frozen._call(False)(coord, atype, d["nlist"], mp).items()}


def test_hlo_narrow_program_matches_the_full_list(frozen_dir):
    """se_e2_a .hlo files carry a program for neighbour lists cut after their last used column
    (``stablehlo_narrow``); ``run`` uses it and gives the full program's results (the fixture's
    davg is not zero, so the empty slots left out contribute)."""
    frozen = load_frozen(frozen_dir / "se_e2_a.hlo")
    assert frozen.sections == [46, 92]
    # uncompressed: centres are grouped by type in chunks, atoms stay in the caller's order
    assert not frozen.sorted and frozen._doc["polypot"]["format_version"] == 1
    d = dict(np.load(frozen_dir / "se_e2_a-periodic-in.npz"))
    got = frozen.run(d["coord"], d["atype"], d["nlist"], d["mapping"])
    assert all(0 < w < s for w, s in zip(frozen._widths, frozen.sections, strict=True))
    assert all(w % jax_frozen.WIDTH_MULTIPLE == 0 for w in frozen._widths)
    full = _run_full(frozen, d)
    for key in KEYS[:4]:
        np.testing.assert_allclose(got[key], full[key], rtol=1e-12, atol=1e-12, err_msg=key)
    _assert_matches(got, fixture_reference("se_e2_a", "periodic"), 2, KEYS[:4])
    # widths follow the list upwards (a neighbour in the last O column) and never shrink
    before = list(frozen._widths)
    wide = dict(d, nlist=d["nlist"].copy())
    wide["nlist"][0, 0, 45] = wide["nlist"][0, 0, 0]
    got = frozen.run(wide["coord"], wide["atype"], wide["nlist"], wide["mapping"])
    assert frozen._widths == [46, before[1]]
    full = _run_full(frozen, wide)
    np.testing.assert_allclose(got["force"], full["force"], rtol=1e-12, atol=1e-12)
    frozen.run(d["coord"], d["atype"], d["nlist"], d["mapping"])
    assert frozen._widths == [46, before[1]]


def test_hlo_narrow_program_but_for_message_passing(frozen_dir):
    for name in FIXTURE_MODELS:
        frozen = load_frozen(frozen_dir / f"{name}.hlo")
        assert (frozen._narrow is not None) == (name != "dpa2"), name


@pytest.mark.parametrize("name", ["se_atten_l0", "se_atten_l2",
                                  pytest.param("se_atten_v2_l0", marks=pytest.mark.slow)])
def test_hlo_narrow_program_of_dpa1(frozen_dir, name):
    """DPA-1: one mixed section, cut after the last used column; the full program's results
    and DeePMD-kit's (v2's narrow program also runs by default in the compressed test below;
    attention layers with smooth softmax in tests/model/test_se_atten_narrow.py)."""
    frozen = load_frozen(frozen_dir / f"{name}.hlo")
    d = dict(np.load(frozen_dir / f"{name}-periodic-in.npz"))
    got = frozen.run(d["coord"], d["atype"], d["nlist"], d["mapping"])
    assert len(frozen.sections) == 1 and 0 < frozen._widths[0] < frozen.sections[0]
    full = _run_full(frozen, d)
    for key in KEYS[:4]:
        for f in range(2):  # the ill-conditioned frame differs by the shapes' rounding
            tol = ILL_CONDITIONED.get((name, "periodic", f))
            if tol is None:
                np.testing.assert_allclose(got[key][f], full[key][f], rtol=1e-12, atol=1e-12,
                                           err_msg=key)
            else:
                assert max_rel(got[key][f], full[key][f]) < tol, key
    _assert_matches(got, fixture_reference(name, "periodic"), 2, KEYS[:4], (name, "periodic"))


@pytest.mark.parametrize("name", ["se_e2_a", "se_atten_l0"])
def test_hlo_centres_split_between_two_concurrent_calls(frozen_dir, models, name, monkeypatch):
    """Narrow programs also return the unfolded forces (extended_force); ``run`` then splits
    one frame's centres between two calls that run at once. Each frame of the periodic fixture
    (192 atoms, ghosts) and an open cluster with an odd atom count (a padding centre) against
    the full program, the unsplit narrow program and DeePMD-kit."""
    monkeypatch.setattr(jax_frozen, "SPLIT_MIN_ATOMS", 2)
    frozen = load_frozen(frozen_dir / f"{name}.hlo")
    assert frozen.splits and not frozen.sorted
    unsplit = load_frozen(frozen_dir / f"{name}.hlo")
    unsplit.splits = False
    d = dict(np.load(frozen_dir / f"{name}-periodic-in.npz"))
    ref = fixture_reference(name, "periodic")
    for f in range(2):
        one = {k: v[f:f + 1] for k, v in d.items()}
        for _ in range(2):  # the first call compiles, the second runs the calls two at a time
            got = frozen.run(one["coord"], one["atype"], one["nlist"], one["mapping"])
        assert frozen._pool is not None and len(frozen._split_shapes) == 1
        assert set(got) == set(KEYS[:4])
        full = _run_full(frozen, one)
        plain = unsplit.run(one["coord"], one["atype"], one["nlist"], one["mapping"])
        for key in KEYS[:4]:
            assert got[key].shape == plain[key].shape and got[key].dtype == plain[key].dtype
            np.testing.assert_allclose(got[key], plain[key], rtol=1e-12, atol=1e-12,
                                       err_msg=key)
            tol = ILL_CONDITIONED.get((name, "periodic", f), 1e-12)
            assert max_rel(got[key], full[key]) < tol, key
        _assert_matches(got, {k: v[f:f + 1] for k, v in ref.items()}, 1, KEYS[:4])
    # an odd number of atoms, no ghosts: the second half gets a padding centre
    coord, _, atype = fixture_frames(name, "cluster")
    nd = build_neighbor_data(coord[:1, :35], None, atype[:35], models[name][0].rcut,
                             models[name][0].sel)
    assert nd.nlist.shape[1] == 35
    got = frozen.run(nd.coord, nd.atype, nd.nlist, nd.mapping)
    plain = unsplit.run(nd.coord, nd.atype, nd.nlist, nd.mapping)
    for key in KEYS[:4]:
        np.testing.assert_allclose(got[key], plain[key], rtol=1e-12, atol=1e-12, err_msg=key)
    assert len(frozen._split_shapes) == 2
    # two frames at once and atomic virials go through the unsplit program
    before = set(frozen._split_shapes)
    frozen.run(d["coord"], d["atype"], d["nlist"], d["mapping"])
    frozen.run(d["coord"][:1], d["atype"][:1], d["nlist"][:1], d["mapping"][:1], atomic=True)
    assert frozen._split_shapes == before


@pytest.mark.parametrize("name", ["se_e2_a", "se_atten_l0"])
def test_hlo_frame_split_into_more_calls_when_a_call_buffer_is_too_large(
        frozen_dir, models, name, monkeypatch):
    """A call whose temporary buffer exceeds CALL_TEMP_BYTES (here: every call) makes ``run``
    split the frame into more calls, down to about MIN_PIECE_CENTRES centres each, the rejected
    shape's executable dropped; the per-centre size it learnt sets the next frame size's first
    guess. Against the unsplit narrow program: the periodic fixture (192 atoms, 12 calls of 16
    centres) and an open cluster of 35 atoms (4 calls, the last one padded)."""
    monkeypatch.setattr(jax_frozen, "SPLIT_MIN_ATOMS", 2)
    monkeypatch.setattr(jax_frozen, "CALL_TEMP_BYTES", 1)
    monkeypatch.setattr(jax_frozen, "MIN_PIECE_CENTRES", 16)
    frozen = load_frozen(frozen_dir / f"{name}.hlo")
    unsplit = load_frozen(frozen_dir / f"{name}.hlo")
    unsplit.splits = False
    d = dict(np.load(frozen_dir / f"{name}-periodic-in.npz"))
    one = {k: v[:1] for k, v in d.items()}
    got = frozen.run(one["coord"], one["atype"], one["nlist"], one["mapping"])
    assert frozen._piece_counts == {192: 12} and frozen._centre_bytes > 0
    assert len(frozen._narrow._seen) == 1  # the two-call shape compiled, then dropped
    again = frozen.run(one["coord"], one["atype"], one["nlist"], one["mapping"])
    plain = unsplit.run(one["coord"], one["atype"], one["nlist"], one["mapping"])
    for key in KEYS[:4]:
        assert got[key].shape == plain[key].shape and got[key].dtype == plain[key].dtype
        np.testing.assert_allclose(got[key], plain[key], rtol=1e-12, atol=1e-12, err_msg=key)
        np.testing.assert_array_equal(again[key], got[key])
    coord, _, atype = fixture_frames(name, "cluster")
    nd = build_neighbor_data(coord[:1, :35], None, atype[:35], models[name][0].rcut,
                             models[name][0].sel)
    got = frozen.run(nd.coord, nd.atype, nd.nlist, nd.mapping)
    plain = unsplit.run(nd.coord, nd.atype, nd.nlist, nd.mapping)
    assert frozen._piece_counts[35] == 4
    for key in KEYS[:4]:
        np.testing.assert_allclose(got[key], plain[key], rtol=1e-12, atol=1e-12, err_msg=key)


def test_split_centres_gives_every_call_the_same_count_of_each_type():
    local = np.array([1, 0, 1, 1, 0, 1, 1])
    plain = jax_frozen._split_centres(local, None, 3)  # blocks of 3, padding of type 1
    assert [c.tolist() for c, _ in plain] == [[0, 1, 2], [3, 4, 5], [6, -1, -1]]
    assert [t.tolist() for _, t in plain] == [[1, 0, 1], [1, 0, 1], [1, 1, 1]]
    typed = jax_frozen._split_centres(local, np.array([2, 5]), 4)  # 1 O and 2 H per call
    assert [c.tolist() for c, _ in typed] == [[1, 0, 2], [4, 3, 5], [-1, 6, -1],
                                              [-1, -1, -1]]
    assert all(t.tolist() == [0, 1, 1] for _, t in typed)


@pytest.fixture(scope="module")
def compressed_se_e2_a_model(models):
    from polypot.model.compress import compress_model

    return compress_model(*models["se_e2_a"], 0.9)


@pytest.fixture(scope="module")
def compressed_se_e2_a(compressed_se_e2_a_model, tmp_path_factory):
    cmodel, cparams = compressed_se_e2_a_model
    path = tmp_path_factory.mktemp("sorted") / "c.hlo"
    freeze(path, cmodel, cparams)
    return cmodel, load_frozen(path)


def _constant_bytes(hlo_text: str) -> int:
    """Bytes of the array constants in an optimized HLO module's text."""
    sizes = {"f64": 8, "s64": 8, "f32": 4, "s32": 4}
    total = 0
    for dtype, dims in re.findall(r"= (f64|s64|f32|s32)\[([0-9,]*)\]\S*\s+constant\(",
                                  hlo_text):
        total += sizes[dtype] * int(np.prod([int(d) for d in dims.split(",") if d]))
    return total


def test_hlo_compressed_program_holds_no_folded_padding(compressed_se_e2_a_model,
                                                       compressed_se_e2_a):
    """The compiled narrow program of compressed se_e2_a holds the table once per centre type's
    loop and the other parameters at most twice (a product's transposed copy), nothing more.
    The left-out slots of a narrowed list (a constant G^T R per centre type) used to be padded
    to whole chunks, which XLA folded into constants of (chunk rows, sel, width): 6.1 MB more
    here (24.3 against 18.2 MB), and each constant byte costs about ten at compilation."""
    import jax

    cmodel, frozen = compressed_se_e2_a
    cparams = compressed_se_e2_a_model[1]
    table = sum(np.asarray(x).nbytes for path, x in jax.tree_util.tree_leaves_with_path(cparams)
                if "table" in jax.tree_util.keystr(path))
    rest = sum(np.asarray(x).nbytes for x in jax.tree_util.tree_leaves(cparams)) - table
    nd = _neighbors(cmodel, "se_e2_a", "periodic", slice(0, 1))
    c, t, mp = jax_frozen._pad_atoms(nd.coord, nd.atype, nd.mapping)
    counts = frozen._sorted_counts(t, nd.nlist)
    markers = [np.zeros(n, np.int8) for n in counts]
    held = _constant_bytes(frozen._narrow.lower(c, t, *frozen._narrow_sections(nd.nlist), mp,
                                                *markers).compile().as_text())
    assert held <= len(cmodel.type_map) * table + 2 * rest + 2**20, (held, table, rest)


def test_hlo_sorted_narrow_program_puts_atoms_back_in_order(compressed_se_e2_a):
    """Compressed se_e2_a: the narrow program takes the local atoms sorted by type (each
    type's fitting net on its own rows); ``run`` sorts a shuffled frame, and its per-atom
    results come back in the caller's order, equal to the full program's."""
    cmodel, frozen = compressed_se_e2_a
    assert frozen.sorted and frozen._doc["polypot"]["format_version"] == 2
    nd = _neighbors(cmodel, "se_e2_a", "shuffled")
    d = {"coord": nd.coord, "atype": nd.atype, "nlist": nd.nlist, "mapping": nd.mapping}
    assert np.any(np.diff(nd.atype[0, :nd.nlist.shape[1]]) < 0)  # really shuffled
    padded = jax_frozen._pad_atoms(d["coord"], d["atype"], d["mapping"])
    counts = frozen._sorted_counts(padded[1], d["nlist"])
    assert counts is not None and counts.tolist() == np.bincount(nd.atype[0, :nd.nloc]).tolist()
    got = frozen._run_sorted(padded[0], padded[1], d["nlist"], padded[2], counts)
    full = _run_full(frozen, d)
    for key in KEYS[:4]:
        np.testing.assert_allclose(got[key], full[key], rtol=1e-12, atol=1e-12, err_msg=key)
    out = frozen.run(d["coord"], d["atype"], d["nlist"], d["mapping"])
    np.testing.assert_array_equal(out["force"], got["force"])


def test_hlo_sorted_narrow_program_falls_back_without_a_type(compressed_se_e2_a):
    """A frame without H atoms (the program's counts must be positive) or frames with
    different local types run the full program."""
    cmodel, frozen = compressed_se_e2_a
    coord, cell, atype = fixture_frames("se_e2_a", "periodic")
    oxygen = atype == 0
    nd = build_neighbor_data(coord[:1][:, oxygen], cell[:1], atype[oxygen], cmodel.rcut,
                             cmodel.sel)
    d = {"coord": nd.coord, "atype": nd.atype, "nlist": nd.nlist, "mapping": nd.mapping}
    assert frozen._sorted_counts(d["atype"], d["nlist"]) is None
    got = frozen.run(d["coord"], d["atype"], d["nlist"], d["mapping"])
    full = _run_full(frozen, d)
    for key in KEYS[:4]:
        np.testing.assert_allclose(got[key], full[key], rtol=1e-12, atol=1e-12, err_msg=key)
    mixed = _neighbors(cmodel, "se_e2_a", "periodic")
    atype2 = mixed.atype.copy()
    other = int(np.flatnonzero(atype2[1] != atype2[1, 0])[0])  # swap two types in frame 1
    atype2[1, [0, other]] = atype2[1, [other, 0]]
    assert frozen._sorted_counts(atype2, mixed.nlist) is None


def test_hlo_sorted_program_split_between_two_concurrent_calls(compressed_se_e2_a, monkeypatch):
    """The sorted program of a compressed model, split: each call takes half of each type's
    atoms (sorted by type; the second half padded where a count is odd). A shuffled frame and
    an open cluster with an odd count of one type, against the unsplit sorted program."""
    monkeypatch.setattr(jax_frozen, "SPLIT_MIN_ATOMS", 2)
    cmodel, frozen = compressed_se_e2_a
    assert frozen.sorted and frozen.splits
    coord, _, atype = fixture_frames("se_e2_a", "cluster")
    cases = [_neighbors(cmodel, "se_e2_a", "shuffled", slice(0, 1)),
             build_neighbor_data(coord[:1, :35], None, atype[:35], cmodel.rcut, cmodel.sel)]
    assert np.any(np.bincount(cases[1].atype[0]) % 2 == 1)
    for nd in cases:
        padded = jax_frozen._pad_atoms(nd.coord, nd.atype, nd.mapping)
        counts = frozen._sorted_counts(padded[1], nd.nlist)
        plain = frozen._run_sorted(padded[0], padded[1], nd.nlist, padded[2], counts)
        for _ in range(2):  # the first call compiles, the second runs the calls two at a time
            got = frozen.run(nd.coord, nd.atype, nd.nlist, nd.mapping)
        assert set(got) == set(KEYS[:4])
        for key in KEYS[:4]:
            assert got[key].shape == plain[key].shape and got[key].dtype == plain[key].dtype
            np.testing.assert_allclose(got[key], plain[key], rtol=1e-12, atol=1e-12,
                                       err_msg=key)
    assert frozen._pool is not None and len(frozen._split_shapes) == 2
    # calls over the buffer limit: the frame in 6 calls of 6 centres (at most 2 O and 4 H)
    monkeypatch.setattr(jax_frozen, "CALL_TEMP_BYTES", 1)
    monkeypatch.setattr(jax_frozen, "MIN_PIECE_CENTRES", 6)
    nd = cases[1]
    padded = jax_frozen._pad_atoms(nd.coord, nd.atype, nd.mapping)
    plain = frozen._run_sorted(padded[0], padded[1], nd.nlist, padded[2],
                               frozen._sorted_counts(padded[1], nd.nlist))
    frozen._piece_counts.clear()
    got = frozen.run(nd.coord, nd.atype, nd.nlist, nd.mapping)
    assert frozen._piece_counts == {35: 6}
    for key in KEYS[:4]:
        np.testing.assert_allclose(got[key], plain[key], rtol=1e-12, atol=1e-12, err_msg=key)


@pytest.mark.parametrize("name", ["se_e2_a", "se_atten_v2_l0"])
def test_hlo_narrow_program_of_a_compressed_model(models, tmp_path, name):
    from polypot.model.compress import compress_model

    model, params = models[name]
    cmodel, cparams = compress_model(model, params, 0.9)
    freeze(tmp_path / "c.hlo", cmodel, cparams)
    frozen = load_frozen(tmp_path / "c.hlo")
    nd = _neighbors(cmodel, name, "periodic")
    d = {"coord": nd.coord, "atype": nd.atype, "nlist": nd.nlist, "mapping": nd.mapping}
    got = frozen.run(d["coord"], d["atype"], d["nlist"], d["mapping"])
    assert frozen._narrow is not None and frozen._widths[-1] < frozen.sections[-1]
    full = _run_full(frozen, d)
    for key in KEYS[:4]:
        np.testing.assert_allclose(got[key], full[key], rtol=1e-12, atol=1e-12, err_msg=key)


def test_cpu_compiler_options(frozen_dir, monkeypatch):
    """On the CPU the programs compile with ``CPU_COMPILER_OPTIONS`` (a different executable
    from XLA's defaults, the same results); options this jaxlib does not know fall back to the
    defaults instead of failing."""
    d = dict(np.load(frozen_dir / "se_atten_l0-periodic-in.npz"))
    coord, atype, mp = jax_frozen._pad_atoms(d["coord"], d["atype"], d["mapping"])
    args = (coord, atype, d["nlist"], mp)

    def compiled(options: dict | None, defaults: bool = False):
        if options is not None:
            monkeypatch.setattr(jax_backend, "CPU_COMPILER_OPTIONS", options)
        monkeypatch.setenv("POLYPOT_XLA_CPU_DEFAULTS", "1" if defaults else "")
        program = load_frozen(frozen_dir / "se_atten_l0.hlo")._call(False)
        out = {k: np.asarray(v) for k, v in program(*args).items()}
        return program.lower(*args).compile().as_text(), out

    text, out = compiled(None)
    text_default, out_default = compiled(None, defaults=True)
    assert text != text_default
    for key in KEYS[:4]:
        np.testing.assert_allclose(out[key], out_default[key], rtol=1e-12, atol=1e-12)
    text_unknown, _ = compiled({"xla_cpu_no_such_option": "1"})
    assert text_unknown == text_default


def test_cpu_programs_compile_once_per_shape_and_release_the_heap(monkeypatch):
    """``cpu_jit`` compiles each new set of input shapes once, releases the C heap after each
    compilation, and gives jax.jit's results."""
    import jax

    released = []
    monkeypatch.setattr(jax_backend, "_release_free_heap", lambda: released.append(1))

    def fn(x, n):
        return {"y": jax.numpy.sin(x) * n.sum(), "n": n}

    program = jax_backend.cpu_jit(fn)
    rng = np.random.default_rng(0)
    calls = [(rng.random((2, 5)), np.arange(3)), (rng.random((2, 5)), np.arange(3) + 1),
             (rng.random((4, 5)), np.arange(3)), (rng.random((2, 5)), np.arange(3.0))]
    for x, n in calls:
        got = program(x, n)
        want = jax.jit(fn)(x, n)
        np.testing.assert_array_equal(np.asarray(got["y"]), np.asarray(want["y"]))
        assert np.asarray(got["n"]).dtype == n.dtype
    assert len(released) == 3  # (2, 5) int, (4, 5) int, (2, 5) float: three compilations
    assert program(1.0, np.arange(3))["y"] == jax.jit(fn)(1.0, np.arange(3))["y"]  # scalar arg


def test_in_process_programs_compile_with_the_cpu_options(models, monkeypatch):
    """``compile_lower`` and ``compile_hessian`` (a ``.dp`` run on JAX) go through ``cpu_jit``
    like the frozen programs."""
    compiled = []
    real = jax_backend.cpu_jit
    monkeypatch.setattr(jax_backend, "cpu_jit", lambda fn: compiled.append(fn) or real(fn))
    model, params = models["se_e2_a"]
    JaxBackend().compile_lower(model, params)
    JaxBackend().compile_hessian(model, params)
    assert len(compiled) == 2


def test_freeze_is_atomic(models, tmp_path, monkeypatch):
    model, params = models["se_e2_a"]
    path = tmp_path / "m.hlo"
    path.write_bytes(b"previous")
    monkeypatch.setattr(jax_frozen, "export_program", lambda *a: b"program")
    with pytest.raises(TypeError):  # not JSON-serialisable: fails after datasets were written
        freeze(path, model, params, model_def_script={"bad": object()})
    assert path.read_bytes() == b"previous"
    assert [p.name for p in tmp_path.iterdir()] == ["m.hlo"]


# ---- float32 -----------------------------------------------------------------------------------
def test_float32_frozen_matches_numpy(tmp_path):
    model, params = build_model(
        {"type_map": ["O", "H"],
         "descriptor": {"type": "se_e2_a", "sel": [20, 40], "rcut": 4.0, "neuron": [4, 8],
                        "axis_neuron": 2, "precision": "float32"},
         "fitting_net": {"neuron": [8, 8], "precision": "float32"}},
        seed=1,
    )
    coord, cell, atype = fixture_frames("se_e2_a", "periodic")
    nd = build_neighbor_data(coord[:1], cell[:1], atype, model.rcut, model.sel)
    path = tmp_path / "f32.hlo"
    freeze(path, model, params)
    frozen = load_frozen(path)
    assert frozen.metadata["precision"] == "float32"
    out = frozen.run(nd.coord, nd.atype, nd.nlist, nd.mapping, atomic=True)
    assert all(v.dtype == np.float32 for v in out.values())
    ref = ModelRunner(model, params, get_backend("numpy")).run(nd, forces=False)  # float64 in
    assert max_rel(out["energy"], ref["energy"]) < 1e-5
    assert max_rel(out["atom_energy"], ref["atom_energy"]) < 1e-5
    assert np.all(np.isfinite(out["force"])) and np.abs(out["force"]).max() > 0
    assert np.abs(out["force"].sum(axis=1)).max() < 1e-4 * np.abs(out["force"]).max()
    assert max_rel(out["atom_virial"].sum(axis=1), out["virial"]) < 1e-5
