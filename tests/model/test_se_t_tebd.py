"""The three-body block's first layer is applied without forming its [c, T_j, T_k] input:
equal to the plain concatenation through the whole embedding net (and the fallback for a first
layer with a skip connection, which needs that input, is the plain evaluation itself)."""

from __future__ import annotations

import numpy as np
import pytest

from polypot.data.water_box import water_box
from polypot.model.descriptor.se_t_tebd import SeTTebdBlock
from polypot.neighbor import build_neighbor_data


@pytest.mark.parametrize("neuron", [(4, 8), (9, 18)], ids=["split-first-layer", "skip-fallback"])
def test_three_body_equals_explicit_concat(neuron):
    nnei, tebd = 20, 4
    block = SeTTebdBlock(3.0, 0.5, nnei, 2, neuron=neuron, tebd_dim=tebd, resnet_dt=True)
    rng = np.random.default_rng(0)
    p = block.init(rng)
    p["dstd"] = rng.uniform(0.5, 1.5, p["dstd"].shape)
    coord, cell, atype = water_box(8, seed=1)
    nd = build_neighbor_data(coord[None], cell[None], atype, 3.0, nnei)
    table = rng.normal(size=(3, tebd))
    out = block(p, nd.coord, nd.atype, nd.nlist, table)
    rr, _, _ = block.env_mat(nd.coord, nd.atype[:, :nd.nloc], nd.nlist, p["davg"], p["dstd"])
    cos = rr[..., 1:] @ np.swapaxes(rr[..., 1:], -1, -2)
    emb = table[nd.atype[0][np.where(nd.nlist >= 0, nd.nlist, 0)]]
    shape = (1, nd.nloc, nnei, nnei, tebd)
    x = np.concatenate([cos[..., None], np.broadcast_to(emb[:, :, :, None], shape),
                        np.broadcast_to(emb[:, :, None], shape)], axis=-1)
    ref = (cos[..., None] * block.embedding(p["embedding"], x)).sum(axis=(2, 3)) / nnei**2
    assert np.abs(ref).max() > 1e-3
    np.testing.assert_allclose(out, ref, rtol=0, atol=1e-14 * np.abs(ref).max())
