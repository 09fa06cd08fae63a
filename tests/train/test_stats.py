"""Data statistics before step 0: davg/dstd against a brute-force environment matrix, the energy
bias against exact least squares, and DeePMD-kit's ``sel = "auto"`` rule."""

from __future__ import annotations

import numpy as np
import pytest
from reference_data import WATER
from train_inputs import tiny

from polypot.data.loader import DataLoader
from polypot.data.system import System, load_system
from polypot.model.build import build_model
from polypot.train.params import flatten
from polypot.train.stats import energy_bias, env_mat_stats, type_counts
from polypot.train.trainer import auto_sel, compute_statistics, resolve_sel


# ---- brute-force reference -----------------------------------------------------------------
def switch(r: float, rmin: float, rmax: float) -> float:
    """Quintic switch written out per pair (not vectorised, to stay independent)."""
    u = min(max((r - rmin) / (rmax - rmin), 0.0), 1.0)
    return u**3 * (-6.0 * u**2 + 15.0 * u - 10.0) + 1.0


def brute_rows(coord: np.ndarray, box: np.ndarray | None, i: int, rcut: float,
               rcut_smth: float, nnei: int) -> tuple[np.ndarray, int]:
    """Environment rows of atom ``i`` (nnei, 4): one per atom within rcut (minimum image for an
    orthorhombic box with sides > 2 rcut), zero rows after; and the neighbour count."""
    rows = []
    for j in range(coord.shape[0]):
        if j == i:
            continue
        d = coord[j] - coord[i]
        if box is not None:
            sides = np.diag(box)
            d = d - sides * np.round(d / sides)
        r = float(np.sqrt(d @ d))
        if r < rcut:
            s = switch(r, rcut_smth, rcut)
            rows.append([s / r, s * d[0] / r**2, s * d[1] / r**2, s * d[2] / r**2])
    out = np.zeros((nnei, 4))
    if rows:
        out[: len(rows)] = rows
    return out, len(rows)


def brute_stats(frames: list[tuple[np.ndarray, np.ndarray | None]], atype: np.ndarray,
                ntypes: int, rcut: float, rcut_smth: float, nnei: int, protection: float
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(davg, dstd) as (ntypes, 4) and the largest per-type neighbour count per centre type."""
    per_type: list[list[np.ndarray]] = [[] for _ in range(ntypes)]
    max_count = np.zeros(ntypes, dtype=int)
    for coord, box in frames:
        for i in range(coord.shape[0]):
            rows, n = brute_rows(coord, box, i, rcut, rcut_smth, nnei)
            per_type[atype[i]].append(rows)
            max_count[atype[i]] = max(max_count[atype[i]], n)
    davg = np.zeros((ntypes, 4))
    dstd = np.full((ntypes, 4), 0.1)
    for t in range(ntypes):
        if not per_type[t]:
            continue
        allrows = np.concatenate(per_type[t])  # (n_atoms * nnei, 4), zero rows included
        davg[t, 0] = np.mean(allrows[:, 0])
        dstd[t, 0] = max(np.std(allrows[:, 0]), protection)
        dstd[t, 1:] = max(np.std(allrows[:, 1:].ravel()), protection)
    return davg, dstd, max_count


# ---- a small open cluster ------------------------------------------------------------------
RCUT, RCUT_SMTH = 3.0, 1.0
SEL = [6, 8, 2]
TYPES = ["O", "H", "C"]


def cluster() -> System:
    """Two frames of 8 atoms (O, H and an isolated C far away), open boundaries; pair distances
    spread over [rcut_smth, rcut] so that the switch matters."""
    rng = np.random.default_rng(3)
    atype = np.array([0, 1, 1, 0, 1, 1, 0, 2])
    frames = []
    for _ in range(2):
        xyz = rng.uniform(0.0, 3.2, size=(8, 3))
        xyz[7] = [30.0, 30.0, 30.0]  # C: no neighbours, nobody sees it
        frames.append(xyz)
    return System(path="cluster", atype=atype, coord=np.stack(frames), box=None)


def model_for(sel: list[int], types: list[str], **desc) -> object:
    cfg = {"type_map": types,
           "descriptor": {"type": "se_e2_a", "sel": sel, "rcut": RCUT, "rcut_smth": RCUT_SMTH,
                          "neuron": [4], "axis_neuron": 2, **desc},
           "fitting_net": {"neuron": [4]}}
    return build_model(cfg, seed=0)[0]


def batches_of(system: System, rcut: float, sel: list[int]) -> list:
    return list(DataLoader([system], 1, rcut, sel, nall_multiple=1).iter_batches())


@pytest.mark.parametrize("protection", [1e-2, 0.2])
def test_env_mat_stats_match_brute_force(protection):
    system = cluster()
    desc = model_for(SEL, TYPES).atomic.descriptor
    nnei = sum(SEL)
    davg, dstd = env_mat_stats(desc, batches_of(system, RCUT, SEL), protection=protection)
    assert davg.shape == dstd.shape == (3, nnei, 4)
    ref_avg, ref_std, counts = brute_stats([(c, None) for c in system.coord], system.atype, 3,
                                           RCUT, RCUT_SMTH, nnei, protection)
    assert counts[0] >= 2 and counts[1] >= 2  # real neighbours, well below sel in total
    for t in range(3):
        np.testing.assert_allclose(davg[t], np.broadcast_to(ref_avg[t], (nnei, 4)),
                                   rtol=0, atol=1e-12, err_msg=f"davg type {t}")
        np.testing.assert_allclose(dstd[t], np.broadcast_to(ref_std[t], (nnei, 4)),
                                   rtol=0, atol=1e-12, err_msg=f"dstd type {t}")
    assert np.all(davg[:, :, 1:] == 0.0)
    # C sees nothing: every slot is a zero row, so mean 0 and std raised to the protection
    assert np.all(davg[2] == 0.0) and np.all(dstd[2] == protection)
    if protection == 0.2:  # the larger protection raises some (not all) of O/H's stds
        raw = brute_stats([(c, None) for c in system.coord], system.atype, 3, RCUT, RCUT_SMTH,
                          nnei, 0.0)[1][:2]
        assert np.any(raw < 0.2) and np.any(raw > 0.2)


def test_env_mat_stats_absent_type_and_set_davg_zero():
    system = cluster()
    system.atype = np.where(system.atype == 2, 0, system.atype)  # no C atom at all now
    desc = model_for(SEL, TYPES).atomic.descriptor
    nnei = sum(SEL)
    davg, dstd = env_mat_stats(desc, batches_of(system, RCUT, SEL))
    ref_avg, ref_std, _ = brute_stats([(c, None) for c in system.coord], system.atype, 3,
                                      RCUT, RCUT_SMTH, nnei, 1e-2)
    np.testing.assert_allclose(davg[:2], np.broadcast_to(ref_avg[:2, None], (2, nnei, 4)),
                               rtol=0, atol=1e-12)
    np.testing.assert_allclose(dstd[:2], np.broadcast_to(ref_std[:2, None], (2, nnei, 4)),
                               rtol=0, atol=1e-12)
    assert np.all(davg[2] == 0.0) and np.all(dstd[2] == 0.1)  # no atom of type C: defaults

    desc0 = model_for(SEL, TYPES, set_davg_zero=True).atomic.descriptor
    assert desc0.set_davg_zero
    davg0, dstd0 = env_mat_stats(desc0, batches_of(system, RCUT, SEL))
    assert np.all(davg0 == 0.0) and np.any(davg[:2, :, 0] != 0.0)
    np.testing.assert_array_equal(dstd0, dstd)


def test_type_counts():
    np.testing.assert_array_equal(type_counts(np.array([1, 0, 1, 1]), 3), [1, 3, 0])


def test_energy_bias_exact_and_least_squares():
    rng = np.random.default_rng(0)
    counts = rng.integers(1, 20, size=(9, 2))
    true = np.array([-93.5, -187.2])
    np.testing.assert_allclose(energy_bias(counts, counts @ true), true, rtol=1e-12, atol=0)
    # with noise: the least-squares solution, i.e. it satisfies the normal equations
    energies = counts @ true + rng.normal(0.0, 0.3, size=9)
    b = energy_bias(counts, energies)
    ref = np.linalg.solve(counts.T @ counts.astype(float), counts.T @ energies)
    np.testing.assert_allclose(b, ref, rtol=1e-10, atol=0)


# ---- statistics of a fresh model on water --------------------------------------------------
@pytest.mark.skipif(not WATER.exists(), reason=f"no water data at {WATER}")
def test_compute_statistics_on_water():
    cfg = tiny()  # batch_size 1, data_stat_nbatch 2: frames 0 and 1 of the system
    desc_cfg = cfg["model"]["descriptor"]
    model, params = build_model(cfg["model"], seed=1)
    flat = flatten(params)
    system = load_system(WATER / "data_0", cfg["model"]["type_map"])
    out = compute_statistics(model, flat, [system], cfg)
    assert out is not flat and np.all(flat["descriptor/davg"] == 0.0)  # input left alone

    nnei = sum(desc_cfg["sel"])
    frames = [(system.coord[f], system.box[f]) for f in (0, 1)]
    assert np.allclose(system.box[:2], np.diag(np.diag(system.box[0])))  # orthorhombic
    assert np.all(np.diag(system.box[0]) > 2 * desc_cfg["rcut"])
    ref_avg, ref_std, _ = brute_stats(frames, system.atype, 2, desc_cfg["rcut"],
                                      desc_cfg["rcut_smth"], nnei, 1e-2)
    # no neighbour list overflow with sel [12, 24] (else the references would differ)
    for coord, box in frames:
        for i in range(system.natoms):
            d = coord - coord[i]
            d -= np.diag(box) * np.round(d / np.diag(box))
            r = np.sqrt((d * d).sum(1))
            near = (r < desc_cfg["rcut"]) & (np.arange(system.natoms) != i)
            assert np.all(np.bincount(system.atype[near], minlength=2) <= [12, 24])
    np.testing.assert_allclose(out["descriptor/davg"],
                               np.broadcast_to(ref_avg[:, None], (2, nnei, 4)), rtol=0,
                               atol=1e-12)
    np.testing.assert_allclose(out["descriptor/dstd"],
                               np.broadcast_to(ref_std[:, None], (2, nnei, 4)), rtol=0,
                               atol=1e-12)

    # energy bias: least squares on the two frames' energies against their type counts
    bias = out["out_bias"]
    assert bias.shape == (1, 2, 1)
    b = bias[0, :, 0]
    counts = np.array([[64.0, 128.0], [64.0, 128.0]])
    assert np.bincount(system.atype).tolist() == [64, 128]
    energies = system.energy[:2]
    residual = counts.T @ (counts @ b - energies)  # normal equations
    assert np.max(np.abs(residual)) < 1e-9 * np.max(np.abs(counts.T @ energies))
    # one composition only: the minimum-norm solution (numpy / DeePMD-kit lstsq), along (64, 128)
    np.testing.assert_allclose(b[1] / b[0], 2.0, rtol=1e-12)
    np.testing.assert_allclose(counts[0] @ b, energies.mean(), rtol=1e-13)
    # everything else is untouched
    for k, v in flat.items():
        if k not in ("descriptor/davg", "descriptor/dstd", "out_bias"):
            np.testing.assert_array_equal(out[k], v, err_msg=k)


# ---- sel = "auto[:factor]" -----------------------------------------------------------------
def deepmd_wrap_up_4(x: float) -> int:
    """DeePMD-kit's ``BaseUpdateSel.wrap_up_4``: truncate, then round up to a multiple of 4."""
    return 4 * ((int(x) + 3) // 4)


def test_auto_sel_examples():
    assert auto_sel([10, 21], 1.1) == [12, 24]  # 11.000..01 -> 12, 23.1 -> 24
    assert auto_sel([40, 80], 1.1) == [44, 88]
    assert auto_sel([12, 24], 1.0) == [12, 24]  # multiples of 4 stay
    assert auto_sel([13, 1], 1.0) == [16, 4]
    assert auto_sel([0, 7], 2.0) == [0, 16]
    # mixed types: one int (DeePMD-kit passes the largest total neighbour count)
    assert auto_sel([24], 1.1) == [28]


@pytest.mark.parametrize("n", [4, 11, 22, 44])
def test_auto_sel_matches_deepmd_wrap_up_4(n):
    assert auto_sel([n], 1.1) == [deepmd_wrap_up_4(n * 1.1)]


@pytest.mark.skipif(not WATER.exists(), reason=f"no water data at {WATER}")
def test_resolve_sel_mixed_uses_max_total_neighbours():
    cfg = tiny(attention=True)
    cfg["model"]["descriptor"]["sel"] = "auto"
    system = load_system(WATER / "data_0", cfg["model"]["type_map"])
    coord, box = system.coord[:5], system.box[:5]
    system = System(path=system.path, atype=system.atype, coord=coord, box=box)
    rcut = cfg["model"]["descriptor"]["rcut"]
    total = 0
    for c, b in zip(coord, box, strict=True):
        sides = np.diag(b)
        d = c[None] - c[:, None]
        d -= sides * np.round(d / sides)
        r2 = (d * d).sum(-1)
        np.fill_diagonal(r2, np.inf)
        total = max(total, int((r2 < rcut**2).sum(1).max()))
    new, _ = resolve_sel(cfg, [system])
    assert new["model"]["descriptor"]["sel"] == deepmd_wrap_up_4(total * 1.1)


def test_dpa2_block_statistics_match_brute_force():
    """DPA-2's repformer block (smaller rcut and nsel) takes its statistics from the model's
    repinit neighbour list cut to its own rcut: equal to a brute force at that rcut."""
    system = cluster()
    cfg = {"type_map": TYPES,
           "descriptor": {"type": "dpa2",
                          "repinit": {"rcut": RCUT, "rcut_smth": RCUT_SMTH, "nsel": 10,
                                      "neuron": [4], "axis_neuron": 2, "tebd_dim": 2},
                          "repformer": {"rcut": 2.0, "rcut_smth": 0.5, "nsel": 6,
                                        "nlayers": 1, "g1_dim": 4, "g2_dim": 2,
                                        "set_davg_zero": False}},
           "fitting_net": {"neuron": [4]}}
    model, params = build_model(cfg, seed=0)
    batches = batches_of(system, RCUT, 10)
    block = dict(model.atomic.descriptor.stat_blocks())["repformer"]
    davg, dstd = env_mat_stats(block, batches, rcut=2.0)
    assert davg.shape == (3, 6, 4)
    ref_avg, ref_std, counts = brute_stats([(c, None) for c in system.coord], system.atype, 3,
                                           2.0, 0.5, 6, 1e-2)
    assert counts.max() >= 2
    for t in range(2):
        np.testing.assert_allclose(davg[t], np.broadcast_to(ref_avg[t], (6, 4)), atol=1e-12)
        np.testing.assert_allclose(dstd[t], np.broadcast_to(ref_std[t], (6, 4)), atol=1e-12)
    # the whole model: each block gets its own numbers
    flat = compute_statistics(model, flatten(params), [system],
                              {"model": {"data_stat_nbatch": 2, "fitting_net": {}},
                               "training": {"training_data": {"batch_size": 1}}})
    np.testing.assert_array_equal(flat["descriptor/repformer/dstd"], dstd)
    assert not np.allclose(flat["descriptor/repinit/dstd"][0, :6], dstd[0])
