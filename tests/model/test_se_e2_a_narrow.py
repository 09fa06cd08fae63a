"""se_e2_a on narrowed neighbour lists (``EnergyModel.narrowed``): the first columns of each
type section, all real neighbours among them, give the energies of the full ``sel`` list.

The slots left out are empty, and an empty slot is not zero in DeePMD-kit's math: its row is
-davg/dstd of the centre type and slot, so the model adds their contribution as a constant.
Random per-slot davg/dstd make that contribution large here, and the test checks it is."""

from __future__ import annotations

import numpy as np
import pytest
from reference_data import FIXTURES, randomise_env_stats

from polypot.io.model_file import model_from_dict
from polypot.io.neutral import load_neutral
from polypot.model.build import build_model
from polypot.neighbor import build_neighbor_data

SEL = (8, 12, 8)


def _case(type_one_side: bool, exclude: list, seed: int = 3):
    cfg = {"type_map": ["O", "H", "C"],
           "descriptor": {"type": "se_e2_a", "sel": list(SEL), "rcut": 3.0, "rcut_smth": 0.5,
                          "neuron": [3, 6], "axis_neuron": 2, "type_one_side": type_one_side,
                          "exclude_types": exclude},
           "fitting_net": {"neuron": [4]}}
    model, params = build_model(cfg, seed=seed)
    rng = np.random.default_rng(seed)
    randomise_env_stats(params["descriptor"], rng)
    coord = rng.uniform(0, 5.0, (2, 9, 3))
    atype = np.array([0, 1, 2, 1, 0, 1, 2, 0, 1])
    nd = build_neighbor_data(coord, np.tile(np.eye(3) * 5.0, (2, 1, 1)), atype, 3.0, list(SEL))
    return model, params, nd


def _cut(nlist: np.ndarray, widths: list[int]) -> np.ndarray:
    starts = np.cumsum((0, *SEL))
    for t, w in enumerate(widths):
        assert (nlist[..., starts[t] + w:starts[t + 1]] < 0).all(), "would drop a neighbour"
    return np.concatenate([nlist[..., starts[t]:starts[t] + w] for t, w in enumerate(widths)],
                          axis=-1)


def _needed(nlist: np.ndarray) -> list[int]:
    starts = np.cumsum((0, *SEL))
    out = []
    for t in range(len(SEL)):
        used = np.flatnonzero((nlist[..., starts[t]:starts[t + 1]] >= 0).any(axis=(0, 1)))
        out.append(int(used[-1]) + 1 if used.size else 0)
    return out


@pytest.mark.parametrize("type_one_side, exclude", [(True, []), (False, []),
                                                    (False, [[0, 1]])])
def test_narrowed_list_gives_the_full_list_energies(type_one_side, exclude):
    model, params, nd = _case(type_one_side, exclude)
    full = model.call_lower(params, nd.coord, nd.atype, nd.nlist, nd.mapping)
    needed = _needed(nd.nlist)
    assert sum(needed) < sum(SEL)  # the list is really cut
    for widths in (needed, [min(w + 1, s) for w, s in zip(needed, SEL, strict=True)]):
        narrow = model.narrowed(tuple(widths))
        got = narrow.call_lower(params, nd.coord, nd.atype, _cut(nd.nlist, widths), nd.mapping)
        np.testing.assert_allclose(got["atom_energy"], full["atom_energy"], rtol=0, atol=1e-12)
        # the slots left out matter: without their constant the energies differ
        missing = narrow.atomic.descriptor._missing_slots(params["descriptor"],
                                                          nd.atype[:, :nd.nlist.shape[1]])
        assert np.abs(missing).max() > 1e-3


def test_full_widths_are_the_full_model():
    model, params, nd = _case(False, [])
    full = model.call_lower(params, nd.coord, nd.atype, nd.nlist, nd.mapping)
    got = model.narrowed(SEL).call_lower(params, nd.coord, nd.atype, nd.nlist, nd.mapping)
    np.testing.assert_allclose(got["energy"], full["energy"], rtol=0, atol=1e-12)


def test_narrowed_refuses_other_models():
    model, params, _ = _case(True, [])
    with pytest.raises(ValueError, match="3 types"):
        model.narrowed((1, 2))
    att, _ = build_model({"type_map": ["O", "H"],
                          "descriptor": {"type": "se_atten", "sel": 8, "rcut": 3.0,
                                         "rcut_smth": 0.5, "neuron": [3, 6], "axis_neuron": 2,
                                         "attn_layer": 2, "attn": 4},
                          "fitting_net": {"neuron": [4]}}, seed=0)
    with pytest.raises(ValueError, match="one mixed section"):
        att.narrowed((4, 4))
    dpa2, _ = model_from_dict(load_neutral(FIXTURES / "dpa2" / "model.dp"))
    assert model.narrowable and att.narrowable and not dpa2.narrowable
    with pytest.raises(ValueError, match="no narrowed neighbour lists"):
        dpa2.narrowed((4,))


def test_compressed_narrowed_list_gives_the_full_list_energies():
    """Compressed: the left-out slots' G comes from the table, as the other slots' does."""
    from polypot.model.compress import compress_model

    model, params, nd = _case(False, [])
    cmodel, cparams = compress_model(model, params, 0.9)
    full = cmodel.call_lower(cparams, nd.coord, nd.atype, nd.nlist, nd.mapping)
    widths = _needed(nd.nlist)
    got = cmodel.narrowed(tuple(widths)).call_lower(cparams, nd.coord, nd.atype,
                                                    _cut(nd.nlist, widths), nd.mapping)
    np.testing.assert_allclose(got["atom_energy"], full["atom_energy"], rtol=0, atol=1e-12)
