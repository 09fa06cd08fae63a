"""DPA-1 on narrowed neighbour lists (``EnergyModel.narrowed``): the first columns of the mixed
list, all real neighbours among them, give the full list's energies, with and without attention
layers.

An empty slot is not zero in DeePMD-kit's math: its row is -davg/dstd of the centre type and
slot, and its embedding sees the type of the frame's atom 0 (DeePMD-kit gathers empty slots
from atom 0). Random per-slot davg/dstd and an H as atom 0 make the left-out slots' constant
large and type-dependent here; the tests check it is."""

from __future__ import annotations

import numpy as np
import pytest
from reference_data import randomise_env_stats

from polypot.model.build import build_model
from polypot.neighbor import build_neighbor_data

SEL = 16
MODES = {
    "concat": {"type": "se_atten"},
    "concat_one_side": {"type": "se_atten", "type_one_side": True},
    "strip": {"type": "se_atten", "tebd_input_mode": "strip"},
    "v2": {"type": "se_atten_v2"},
}


def _case(mode: str, seed: int = 5, attention: dict | None = None):
    cfg = {"type_map": ["O", "H", "C"],
           "descriptor": {"sel": SEL, "rcut": 3.0, "rcut_smth": 0.5, "neuron": [3, 6],
                          "axis_neuron": 2, "tebd_dim": 4, "attn_layer": 0,
                          "set_davg_zero": False, **MODES[mode], **(attention or {})},
           "fitting_net": {"neuron": [4]}}
    model, params = build_model(cfg, seed=seed)
    rng = np.random.default_rng(seed)
    randomise_env_stats(params["descriptor"], rng)
    coord = rng.uniform(0, 5.0, (2, 9, 3))
    atype = np.array([1, 0, 2, 1, 0, 1, 2, 0, 1])  # atom 0 an H: not the type 0 default
    nd = build_neighbor_data(coord, np.tile(np.eye(3) * 5.0, (2, 1, 1)), atype, 3.0, SEL)
    return model, params, nd


def _needed(nlist: np.ndarray) -> int:
    used = np.flatnonzero((nlist >= 0).any(axis=(0, 1)))
    return int(used[-1]) + 1


@pytest.mark.parametrize("mode", sorted(MODES))
def test_narrowed_list_gives_the_full_list_energies(mode):
    model, params, nd = _case(mode)
    assert model.narrowable
    full = model.call_lower(params, nd.coord, nd.atype, nd.nlist, nd.mapping)
    needed = _needed(nd.nlist)
    assert needed < SEL  # the list is really cut
    for width in (needed, needed + 1):
        narrow = model.narrowed((width,))
        got = narrow.call_lower(params, nd.coord, nd.atype, nd.nlist[..., :width], nd.mapping)
        np.testing.assert_allclose(got["atom_energy"], full["atom_energy"], rtol=0, atol=1e-12)
    # the slots left out matter, and depend on atom 0's type: their constants differ
    descriptor = model.narrowed((needed,)).atomic.descriptor
    table = descriptor.type_embedding(params["descriptor"]["type_embedding"], np)
    nloc = nd.nlist.shape[1]
    missing = descriptor._missing_slots(params["descriptor"], table, nd.atype, nloc)
    assert np.abs(missing).max() > 1e-3
    other = descriptor._missing_slots(params["descriptor"], table, np.zeros_like(nd.atype), nloc)
    if mode != "v2":  # smooth type embedding: an empty slot's type part is switched off
        assert np.abs(missing - other).max() > 1e-6


@pytest.mark.parametrize("mode", ["concat", "strip"])
def test_compressed_narrowed_list_gives_the_full_list_energies(mode):
    """Compressed: the left-out slots' G comes from the tables, as the other slots' does."""
    from polypot.model.compress import compress_model

    model, params, nd = _case(mode)
    cmodel, cparams = compress_model(model, params, 0.9)
    full = cmodel.call_lower(cparams, nd.coord, nd.atype, nd.nlist, nd.mapping)
    width = _needed(nd.nlist)
    got = cmodel.narrowed((width,)).call_lower(cparams, nd.coord, nd.atype,
                                               nd.nlist[..., :width], nd.mapping)
    np.testing.assert_allclose(got["atom_energy"], full["atom_energy"], rtol=0, atol=1e-12)


#: attention layers: masked keys (smooth false) weigh exactly 0; smooth ones weigh e^-20 each
#: in the softmax's denominator, so the slots left out must be counted there
ATTENTION = {
    "masked": {"attn_layer": 2, "attn": 5},
    "smooth": {"attn_layer": 2, "attn": 5, "smooth_type_embedding": True},
    "smooth_dotr": {"attn_layer": 1, "attn": 5, "smooth_type_embedding": True,
                    "attn_dotr": False, "tebd_input_mode": "strip"},
}


@pytest.mark.parametrize("attention", sorted(ATTENTION))
def test_narrowed_list_with_attention_layers_gives_the_full_list_energies(attention):
    model, params, nd = _case("concat", attention=ATTENTION[attention])
    assert model.narrowable
    full = model.call_lower(params, nd.coord, nd.atype, nd.nlist, nd.mapping)
    needed = _needed(nd.nlist)
    assert needed < SEL
    for width in (needed, needed + 2):
        got = model.narrowed((width,)).call_lower(params, nd.coord, nd.atype,
                                                  nd.nlist[..., :width], nd.mapping)
        np.testing.assert_allclose(got["atom_energy"], full["atom_energy"], rtol=0, atol=1e-12)


def test_smooth_attention_counts_the_slots_left_out():
    """Dropping the left-out keys from the smooth softmax (no denominator term) changes the
    energies: the test above can fail."""
    from polypot.model.descriptor import attention as attention_module

    model, params, nd = _case("concat", attention={**ATTENTION["smooth"], "attn_dotr": False})
    full = model.call_lower(params, nd.coord, nd.atype, nd.nlist, nd.mapping)
    width = _needed(nd.nlist)
    narrow = model.narrowed((width,))
    original = attention_module.softmax_with_constants
    try:
        attention_module.softmax_with_constants = (
            lambda xp, x, count, value: original(xp, x, 0, value))
        got = narrow.call_lower(params, nd.coord, nd.atype, nd.nlist[..., :width], nd.mapping)
    finally:
        attention_module.softmax_with_constants = original
    assert np.abs(got["atom_energy"] - full["atom_energy"]).max() > 1e-9
