"""Energies and atomic energies equal DeePMD-kit 3.2's (1e-10 relative), NumPy backend."""

from __future__ import annotations

import numpy as np
import pytest
import yaml
from reference_data import (
    CASES,
    FIXTURE_MODELS,
    FIXTURES,
    REFERENCE_MODELS,
    fixture_frames,
    fixture_reference,
    max_rel,
)

from polypot import DeepPot

TOL = 1e-10


@pytest.fixture(scope="module", params=FIXTURE_MODELS)
def fixture_model(request):
    return request.param, DeepPot(FIXTURES / request.param / "model.dp", backend="numpy")


@pytest.mark.parametrize("case", CASES)
def test_energy_matches_deepmd(fixture_model, case):
    name, dp = fixture_model
    coord, cell, atype = fixture_frames(name, case)
    ref = fixture_reference(name, case)
    energy, atom_energy = dp.eval_energy(coord, cell, atype)
    assert energy.shape == (coord.shape[0], 1)
    assert atom_energy.shape == (*coord.shape[:2], 1)
    assert max_rel(energy[:, 0], ref["energy"]) < TOL
    assert max_rel(atom_energy[..., 0], ref["atom_energy"]) < TOL


def test_se_e2_a_yaml_equals_dp():
    dp_yaml = DeepPot(FIXTURES / "se_e2_a" / "model.yaml", backend="numpy")
    dp_h5 = DeepPot(FIXTURES / "se_e2_a" / "model.dp", backend="numpy")
    coord, cell, atype = fixture_frames("se_e2_a", "periodic")
    np.testing.assert_array_equal(dp_yaml.eval_energy(coord, cell, atype)[1],
                                  dp_h5.eval_energy(coord, cell, atype)[1])


def _testcase_blocks():
    data = yaml.safe_load(open(REFERENCE_MODELS / "deeppot-testcase.yaml"))
    return data["results"]


@pytest.mark.parametrize("block", range(3), ids=["pbc", "nopbc", "pbc_isolated"])
def test_deeppot_sea_testcase(block):
    res = _testcase_blocks()[block]
    dp = DeepPot(REFERENCE_MODELS / "deeppot_sea.yaml", backend="numpy")
    coord = np.asarray(res["coord"]).reshape(1, -1, 3)
    cell = None if res["box"] is None else np.asarray(res["box"]).reshape(1, 3, 3)
    e, ae = dp.eval_energy(coord, cell, np.asarray(res["atype"]))
    ref = np.asarray(res["atomic_energy"])
    assert max_rel(ae[0, :, 0], ref) < TOL
    assert max_rel(e[0], [ref.sum()]) < TOL
