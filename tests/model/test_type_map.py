"""``change_type_map`` on neutral model dicts: reordered, reduced and extended type maps give the
same energies on frames relabelled to the new types, and a wrong mapping would not."""

from __future__ import annotations

import copy

import numpy as np
import pytest
from reference_data import FIXTURES, fixture_frames, max_rel

from polypot.backend.registry import get_backend
from polypot.infer.runner import ModelRunner
from polypot.io.neutral import load_neutral
from polypot.model import build_model
from polypot.model.model import EnergyModel
from polypot.model.type_map import TypeMapError, change_type_map
from polypot.neighbor import build_neighbor_data

FIXTURE_NAMES = ["se_e2_a", "se_atten_l0", "se_atten_l2", "se_atten_v2_l0", "dpa2"]
ATTENTION = [n for n in FIXTURE_NAMES if n != "se_e2_a"]
DPA1 = [n for n in ATTENTION if n != "dpa2"]
#: the fixtures' sel is small for the dense periodic frame: both sides truncate alike
pytestmark = pytest.mark.filterwarnings("ignore:neighbour list overflow")
SMALL_FIT = {"neuron": [8, 8]}
SE_A = {"type": "se_e2_a", "rcut": 3.5, "rcut_smth": 0.5, "neuron": [4, 8], "axis_neuron": 4}
SE_ATTEN = {"type": "se_atten", "sel": 48, "rcut": 3.5, "rcut_smth": 0.5, "neuron": [4, 8],
            "axis_neuron": 4, "attn": 8, "attn_layer": 1, "tebd_dim": 4}


def energies(model_dict: dict, coord: np.ndarray, cell: np.ndarray | None, atype: np.ndarray
             ) -> tuple[np.ndarray, np.ndarray]:
    """(energy (nf,), atom energies (nf, natoms)) of a ``Model`` dict on the NumPy backend."""
    model, params = EnergyModel.deserialize(model_dict)
    nd = build_neighbor_data(coord, cell, atype, model.rcut, model.sel)
    out = ModelRunner(model, params, get_backend("numpy")).run(nd, forces=False)
    return out["energy"][:, 0], out["atom_energy"][..., 0]


def relabel(atype: np.ndarray, old_map: list[str], new_map: list[str]) -> np.ndarray:
    """Atom types (natoms,) of ``old_map`` as indices into ``new_map``."""
    return np.array([new_map.index(old_map[t]) for t in atype])


def fixture(name: str) -> dict:
    return load_neutral(FIXTURES / name / "model.dp")["model"]


@pytest.fixture(scope="module")
def water() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One periodic water frame (192 atoms, types [O, H]): coord, cell, atype."""
    coord, cell, atype = fixture_frames("se_e2_a", "periodic")
    return coord[:1], cell[:1], atype


def built(type_map: list[str], descriptor: dict, seed: int = 1, **model: object) -> dict:
    """A small random model dict with non-trivial statistics and biases of every type."""
    rng = np.random.default_rng(seed)
    cfg = {"type_map": type_map, "descriptor": descriptor, "fitting_net": SMALL_FIT, **model}
    m, p = build_model(cfg, seed=seed)
    d = p["descriptor"]
    d["davg"] = rng.normal(0.0, 0.1, d["davg"].shape)
    d["dstd"] = rng.uniform(0.5, 1.5, d["dstd"].shape)
    p["out_bias"] = rng.normal(-50.0, 20.0, p["out_bias"].shape)
    p["fitting"]["bias_atom_e"] = rng.normal(0.0, 1.0, p["fitting"]["bias_atom_e"].shape)
    return m.serialize(p)


def assert_same(model_a: dict, model_b: dict, frame: tuple, map_a: list[str], map_b: list[str],
                rtol: float = 1e-12) -> None:
    """Energies and atomic energies of ``model_a`` on ``frame`` (types of ``map_a``) equal
    those of ``model_b`` on the same frame relabelled to ``map_b``."""
    coord, cell, atype = frame
    e_a, ae_a = energies(model_a, coord, cell, atype)
    e_b, ae_b = energies(model_b, coord, cell, relabel(atype, map_a, map_b))
    assert max_rel(e_b, e_a) < rtol, (e_a, e_b)
    assert max_rel(ae_b, ae_a) < rtol


def _differs(model: dict, broken: dict, frame: tuple, old_map: list[str], new_map: list[str]
             ) -> bool:
    """Whether ``broken`` (types ``new_map``) gives another energy than ``model``."""
    coord, cell, atype = frame
    e_a, _ = energies(model, coord, cell, atype)
    e_b, _ = energies(broken, coord, cell, relabel(atype, old_map, new_map))
    return max_rel(e_b, e_a) > 1e-9  # 1000 x the tolerance of the equalities above


# ---- (1) reversed type map ---------------------------------------------------------------------
@pytest.mark.parametrize("name", FIXTURE_NAMES)
def test_reversed_type_map_keeps_energies(name, water):
    model = fixture(name)
    mapped = change_type_map(model, ["H", "O"])
    assert mapped["type_map"] == ["H", "O"]
    assert_same(model, mapped, water, ["O", "H"], ["H", "O"])


# ---- (2) subsets -------------------------------------------------------------------------------
@pytest.mark.parametrize("keep", ["H", "O"])
@pytest.mark.parametrize("name", ATTENTION)
def test_subset_type_map_keeps_energies(name, keep, water):
    coord, cell, atype = water
    only = atype == ["O", "H"].index(keep)
    model = fixture(name)
    mapped = change_type_map(model, [keep])
    assert mapped["descriptor"]["ntypes"] == 1
    assert mapped["@variables"]["out_bias"].shape == (1, 1, 1)
    assert_same(model, mapped, (coord[:, only], cell, atype[only]), ["O", "H"], [keep])


def test_se_e2_a_cannot_drop_types():
    """Dropping a type changes se_e2_a's neighbour sections and 1/sum(sel): refused."""
    with pytest.raises(TypeMapError, match=r"se_e2_a can only reorder .*drop \['O'\]"):
        change_type_map(fixture("se_e2_a"), ["H"])


# ---- (3) bigger built models reduced or permuted -----------------------------------------------
@pytest.mark.parametrize("v2", [False, True], ids=["se_atten", "se_atten_v2"])
def test_three_types_reduced_to_two_reordered(v2, water):
    desc = dict(SE_ATTEN, type="se_atten_v2" if v2 else "se_atten", exclude_types=[[0, 1]])
    model = built(["O", "H", "C"], desc, pair_exclude_types=[[1, 1]], atom_exclude_types=[2])
    mapped = change_type_map(model, ["H", "O"])
    assert mapped["descriptor"]["exclude_types"] == [[1, 0]]
    assert mapped["pair_exclude_types"] == [[0, 0]]
    assert mapped["atom_exclude_types"] == []
    np.testing.assert_array_equal(mapped["@variables"]["out_bias"][0, :, 0],
                                  model["@variables"]["out_bias"][0, [1, 0], 0])
    assert_same(model, mapped, water, ["O", "H", "C"], ["H", "O"])


@pytest.mark.parametrize("tebd_dim", [8, 4], ids=["skip-2x-dropped", "skip-1x-to-2x"])
def test_type_embedding_resnet_skip_is_folded(tebd_dim, water):
    """With 4 types a width-8 (or 4) first layer has a ResNet skip that 2 types do not (or have
    another one): the one-hot skip is folded into the weights so the table rows are kept."""
    model = built(["O", "H", "C", "N"], dict(SE_ATTEN, tebd_dim=tebd_dim))
    mapped = change_type_map(model, ["H", "O"])
    assert mapped["descriptor"]["type_embedding"]["embedding"]["in_dim"] == 2
    assert_same(model, mapped, water, ["O", "H", "C", "N"], ["H", "O"])
    naive = copy.deepcopy(mapped)  # rows picked without folding the skip: other table rows
    layer = naive["descriptor"]["type_embedding"]["embedding"]["layers"][0]
    old = model["descriptor"]["type_embedding"]["embedding"]["layers"][0]["@variables"]["w"]
    layer["@variables"]["w"] = old[[1, 0]]
    assert _differs(model, naive, water, ["O", "H", "C", "N"], ["H", "O"])


@pytest.mark.parametrize("one_side", [False, True], ids=["pair-nets", "type_one_side"])
def test_se_e2_a_three_types_permuted(one_side, water):
    model = built(["O", "H", "C"], dict(SE_A, sel=[16, 32, 4], type_one_side=one_side),
                  pair_exclude_types=[[0, 2]])
    mapped = change_type_map(model, ["C", "O", "H"])
    assert mapped["descriptor"]["sel"] == [4, 16, 32]
    assert mapped["pair_exclude_types"] == [[1, 0]]
    assert_same(model, mapped, water, ["O", "H", "C"], ["C", "O", "H"])
    with pytest.raises(TypeMapError, match=r"drop \['C'\]"):
        change_type_map(model, ["H", "O"])


# ---- the test can fail: wrong mappings change the energy ---------------------------------------
def test_wrong_mappings_change_the_energy(water):
    se_a = fixture("se_e2_a")
    good = change_type_map(se_a, ["H", "O"])
    no_sel = copy.deepcopy(good)
    no_sel["descriptor"]["sel"] = se_a["descriptor"]["sel"]  # sections not reordered
    assert _differs(se_a, no_sel, water, ["O", "H"], ["H", "O"])
    no_davg = copy.deepcopy(good)  # centre types of davg not reordered
    no_davg["descriptor"]["@variables"]["davg"] = se_a["descriptor"]["@variables"]["davg"]
    assert _differs(se_a, no_davg, water, ["O", "H"], ["H", "O"])
    # DeePMD-kit's statistics are the same in every slot; random ones show the slot sections
    built_a = built(["O", "H"], dict(SE_A, sel=[16, 32]))
    good = change_type_map(built_a, ["H", "O"])
    no_slots = copy.deepcopy(good)  # centre types of davg reordered, slot sections not
    no_slots["descriptor"]["@variables"]["davg"] = built_a["descriptor"]["@variables"]["davg"][
        ::-1]
    assert _differs(built_a, no_slots, water, ["O", "H"], ["H", "O"])
    atten = fixture("se_atten_v2_l0")
    good = change_type_map(atten, ["H", "O"])
    no_tebd = copy.deepcopy(good)
    no_tebd["descriptor"]["type_embedding"] = atten["descriptor"]["type_embedding"]
    assert _differs(atten, no_tebd, water, ["O", "H"], ["H", "O"])
    no_bias = copy.deepcopy(good)
    no_bias["@variables"]["out_bias"] = atten["@variables"]["out_bias"]
    assert _differs(atten, no_bias, water, ["O", "H"], ["H", "O"])


# ---- (5) new types -----------------------------------------------------------------------------
@pytest.mark.parametrize("name", DPA1)
def test_new_types_extend_type_embedding_models(name, water):
    model = fixture(name)
    nnei = model["descriptor"]["@variables"]["davg"].shape[1]
    stat = {"davg": np.full((4, nnei, 4), 0.25), "dstd": np.full((4, nnei, 4), 0.75)}
    new_map = ["C", "O", "N", "H"]  # 4 types x tebd_dim 8: the new first layer has a skip
    mapped = change_type_map(model, new_map, new_type_stat=stat, seed=3)
    var = mapped["descriptor"]["@variables"]
    for new in (0, 2):  # C and N: statistics from new_type_stat, biases zero
        np.testing.assert_array_equal(var["davg"][new], stat["davg"][new])
        np.testing.assert_array_equal(var["dstd"][new], stat["dstd"][new])
        assert mapped["@variables"]["out_bias"][0, new, 0] == 0.0
        assert mapped["@variables"]["out_std"][0, new, 0] == 1.0
    np.testing.assert_array_equal(var["dstd"][[1, 3]], model["descriptor"]["@variables"]["dstd"])
    assert_same(model, mapped, water, ["O", "H"], new_map)
    again = change_type_map(model, new_map, new_type_stat=stat, seed=3)
    w = ("descriptor", "type_embedding", "embedding", "layers")
    first = [m[w[0]][w[1]][w[2]][w[3]][0]["@variables"]["w"] for m in (mapped, again)]
    np.testing.assert_array_equal(*first)  # the random rows follow the seed
    assert first[0].shape == (4, 8)


def test_new_types_extend_dpa2_blocks(water):
    model = fixture("dpa2")
    blocks = {"repinit": "repinit_variable", "repformer": "repformers_variable"}
    stat = {}
    for i, (name, key) in enumerate(blocks.items()):
        nnei = model["descriptor"][key]["@variables"]["davg"].shape[1]
        stat[name] = {"davg": np.full((3, nnei, 4), 0.1 * i), "dstd": np.full((3, nnei, 4), 0.5)}
    new_map = ["H", "C", "O"]
    mapped = change_type_map(model, new_map, new_type_stat=stat, seed=3)
    for name, key in blocks.items():
        var = mapped["descriptor"][key]["@variables"]
        np.testing.assert_array_equal(var["davg"][1], stat[name]["davg"][1])
        np.testing.assert_array_equal(var["dstd"][[2, 0]],
                                      model["descriptor"][key]["@variables"]["dstd"])
    assert mapped["descriptor"]["repformers_variable"]["repformer_layers"][0]["ntypes"] == 3
    assert_same(model, mapped, water, ["O", "H"], new_map)


def test_new_types_without_statistics_default_to_zero_and_one():
    model = change_type_map(fixture("se_atten_l0"), ["O", "H", "C"])
    var = model["descriptor"]["@variables"]
    assert np.all(var["davg"][2] == 0.0) and np.all(var["dstd"][2] == 1.0)
    assert model["fitting"]["@variables"]["bias_atom_e"][2, 0] == 0.0


def test_new_types_refused_for_se_e2_a():
    with pytest.raises(TypeMapError, match=r"types \['C'\] are not in the model's type map.*"
                                           r"se_e2_a model supports only its own types, in any "
                                           r"order$"):
        change_type_map(fixture("se_e2_a"), ["O", "H", "C"])


# ---- the dictionary itself ---------------------------------------------------------------------
def test_whole_file_dict_and_purity():
    data = load_neutral(FIXTURES / "se_e2_a" / "model.dp")
    before = copy.deepcopy(data)
    out = change_type_map(data, ["H", "O"])
    assert out["model"]["type_map"] == ["H", "O"]
    assert out["model_def_script"]["type_map"] == ["H", "O"]
    sel = before["model"]["descriptor"]["sel"]
    assert out["model"]["descriptor"]["sel"] == sel[::-1]
    if isinstance(before["model_def_script"]["descriptor"].get("sel"), list):
        assert out["model_def_script"]["descriptor"]["sel"] == sel[::-1]
    # the input is left as it was
    var, var0 = data["model"]["descriptor"]["@variables"], before["model"]["descriptor"][
        "@variables"]
    np.testing.assert_array_equal(var["davg"], var0["davg"])
    assert data["model"]["type_map"] == ["O", "H"] and data["model_def_script"]["type_map"] == [
        "O", "H"]


def test_duplicate_names_are_refused():
    with pytest.raises(TypeMapError, match="twice"):
        change_type_map(fixture("se_atten_l0"), ["O", "O"])
