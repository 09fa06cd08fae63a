"""The reference model runs under array_api_strict: proof it uses only the standard."""

from __future__ import annotations

import array_api_strict as xps
import numpy as np
import pytest
from reference_data import FIXTURE_MODELS, FIXTURES, fixture_frames

from polypot.backend.base import map_params
from polypot.io.model_file import load_model
from polypot.neighbor import build_neighbor_data


@pytest.mark.parametrize("name", FIXTURE_MODELS)
def test_model_runs_under_array_api_strict(name):
    model, params, _ = load_model(FIXTURES / name / "model.dp")
    coord, cell, atype = fixture_frames(name, "periodic")
    nd = build_neighbor_data(coord[:1], cell[:1], atype, model.rcut, model.sel)
    ref = model.call_lower(params, nd.coord, nd.atype, nd.nlist, nd.mapping)
    strict_params = map_params(params, xps.asarray)
    out = model.call_lower(strict_params, xps.asarray(nd.coord), xps.asarray(nd.atype),
                           xps.asarray(nd.nlist), xps.asarray(nd.mapping))
    assert type(out["energy"]).__module__.startswith("array_api_strict")
    np.testing.assert_allclose(np.asarray(out["atom_energy"]), ref["atom_energy"], rtol=1e-13)
