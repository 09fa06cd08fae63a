"""se_e2_a with ``type_one_side = False``: every pair of types has its own embedding network.

The descriptor evaluates each atom's rows through its own centre type's networks only (gathered
weights); this checks it against a per-atom loop written from the definition
D_i = T_i T_i[:M2]^T, T_i = sum_j G_{t_i, t_j}(s_ij)^T R_ij / nnei.
"""

from __future__ import annotations

import numpy as np
import pytest

from polypot.model.build import build_model
from polypot.neighbor import build_neighbor_data


@pytest.mark.parametrize("resnet_dt", [False, True])
def test_descriptor_equals_per_atom_definition(resnet_dt):
    cfg = {"type_map": ["O", "H", "C"],
           "descriptor": {"type": "se_e2_a", "sel": [3, 5, 2], "rcut": 3.0, "rcut_smth": 0.5,
                          "neuron": [3, 6], "axis_neuron": 2, "type_one_side": False,
                          "resnet_dt": resnet_dt},
           "fitting_net": {"neuron": [4]}}
    model, params = build_model(cfg, seed=3)
    desc, p = model.atomic.descriptor, params["descriptor"]
    rng = np.random.default_rng(0)
    p["davg"] = rng.normal(0, 0.1, p["davg"].shape)
    p["dstd"] = rng.uniform(0.5, 1.5, p["dstd"].shape)
    coord = rng.uniform(0, 4.0, (2, 9, 3))
    atype = np.array([0, 1, 2, 1, 0, 1, 2, 0, 1])
    nd = build_neighbor_data(coord, np.tile(np.eye(3) * 4.0, (2, 1, 1)), atype, desc.rcut,
                             list(desc.sel))
    got = np.asarray(desc(p, nd.coord, nd.atype, nd.nlist))

    rr, _, _ = desc.env_mat(nd.coord, nd.atype[:, :9], nd.nlist, p["davg"], p["dstd"])
    starts = np.cumsum((0, *desc.sel))
    for f in range(2):
        for i in range(9):
            ti = atype[i]
            t = np.zeros((desc.neuron[-1], 4))
            for tj in range(3):
                net = desc.embeddings.net((ti, tj))
                q = desc.embeddings.params(p["embeddings"], (ti, tj))
                rows = rr[f, i, starts[tj]:starts[tj + 1]]
                t += np.asarray(net(q, rows[:, :1])).T @ rows
            t /= desc.nnei
            want = (t @ t[: desc.axis_neuron].T).reshape(-1)
            np.testing.assert_allclose(got[f, i], want, rtol=1e-12, atol=1e-14)
