"""The exponential learning rate, DeePMD-kit's ener loss and Adam, against hand-computed values
and torch.optim.Adam."""

from __future__ import annotations

import math

import array_api_compat.numpy as xp
import numpy as np
import pytest

from polypot.train.loss import EnergyLoss
from polypot.train.lr import ExpDecay
from polypot.train.optimizer import Adam


# ---- learning rate -------------------------------------------------------------------------
def test_exp_decay_hand_values():
    # numb_steps / decay_steps = 2 decays from 1 to 0.01: the rate is 0.1
    lr = ExpDecay(1.0, 0.01, 10, 20)
    assert lr.effective_decay_steps == 10
    assert lr.decay_rate == pytest.approx(0.1, rel=1e-14)
    expected = {0: 1.0, 1: 1.0, 9: 1.0, 10: 0.1, 15: 0.1, 19: 0.1, 20: 0.01}
    for step, value in expected.items():
        assert lr(step) == pytest.approx(value, rel=1e-13), step
    assert lr(0) == 1.0
    # past numb_steps it would fall below stop_lr: floored there exactly
    assert lr(30) == 0.01 and lr(10_000) == 0.01


def test_exp_decay_long_schedule():
    lr = ExpDecay(1e-3, 3.51e-8, 5000, 1_000_000)
    values = np.array([lr(s) for s in range(0, 20_001, 1000)])
    assert values[0] == 1e-3
    # piecewise constant over each decay window, strictly decreasing across windows
    assert lr(4999) == lr(0) and lr(5000) == lr(9999) < lr(4999)
    assert lr(5000) / lr(0) == pytest.approx((3.51e-8 / 1e-3) ** (5000 / 1e6), rel=1e-12)
    assert np.all(np.diff(values[::5]) < 0)
    assert lr(1_000_000) == pytest.approx(3.51e-8, rel=1e-9)
    assert lr(999_999) == pytest.approx(3.51e-8 / lr.decay_rate, rel=1e-9)
    assert lr(3_000_000) == 3.51e-8


@pytest.mark.parametrize(("decay_steps", "numb_steps", "effective"), [
    (50, 20, 1),          # decay_steps >= numb_steps: numb_steps // 100 + 1
    (20, 20, 1),
    (1000, 500, 6),
    (5000, 1000, 11),     # numb_steps // 10 == 100: not above 100 yet
    (5000, 2000, 100),    # numb_steps // 10 > 100: 100
    (10**6, 10**5, 100),
    (5, 20, 5),           # smaller than numb_steps: kept
])
def test_exp_decay_default_decay_steps(decay_steps, numb_steps, effective):
    lr = ExpDecay(1e-2, 1e-5, decay_steps, numb_steps)
    assert lr.effective_decay_steps == effective
    rate = (1e-5 / 1e-2) ** (effective / numb_steps)
    assert lr(effective - 1) == 1e-2
    assert lr(effective) == pytest.approx(1e-2 * rate, rel=1e-12)
    assert lr(numb_steps) == pytest.approx(
        max(1e-2 * rate ** (numb_steps // effective), 1e-5), rel=1e-12)


# ---- loss ----------------------------------------------------------------------------------
def random_case(nb=3, natoms=5, seed=0):
    rng = np.random.default_rng(seed)
    pred = {"energy": rng.normal(size=(nb, 1)), "force": rng.normal(size=(nb, natoms, 3)),
            "virial": rng.normal(size=(nb, 9)), "atom_energy": rng.normal(size=(nb, natoms, 1))}
    label = {"energy": rng.normal(size=nb), "force": rng.normal(size=(nb, natoms, 3)),
             "virial": rng.normal(size=(nb, 9)), "atom_ener": rng.normal(size=(nb, natoms))}
    return pred, label


def hand_loss(pred, label, pref, natoms, terms=("energy", "force", "virial", "atom_ener")):
    """DeePMD-kit's ener loss, written with explicit sums over frames/atoms/components."""
    nb = pred["energy"].shape[0]
    out = {}
    loss = 0.0
    if "energy" in terms:
        mse = sum((pred["energy"][f][0] - label["energy"][f]) ** 2 for f in range(nb)) / nb
        loss += pref["e"] / natoms * mse
        out["rmse_e"] = math.sqrt(mse) / natoms
    if "force" in terms:
        sq = [(pred["force"][f][a][c] - label["force"][f][a][c]) ** 2
              for f in range(nb) for a in range(natoms) for c in range(3)]
        mse = sum(sq) / len(sq)
        loss += pref["f"] * mse
        out["rmse_f"] = math.sqrt(mse)
    if "virial" in terms:
        sq = [(pred["virial"][f][c] - label["virial"][f][c]) ** 2
              for f in range(nb) for c in range(9)]
        mse = sum(sq) / len(sq)
        loss += pref["v"] / natoms * mse
        out["rmse_v"] = math.sqrt(mse) / natoms
    if "atom_ener" in terms:
        sq = [(pred["atom_energy"][f][a][0] - label["atom_ener"][f][a]) ** 2
              for f in range(nb) for a in range(natoms)]
        mse = sum(sq) / len(sq)
        loss += pref["ae"] * mse
        out["rmse_ae"] = math.sqrt(mse)
    out["rmse"] = math.sqrt(loss)
    return loss, out


LOSS = EnergyLoss(start_lr=1e-3, start_pref_e=0.02, limit_pref_e=1.0, start_pref_f=1000.0,
                  limit_pref_f=1.0, start_pref_v=0.5, limit_pref_v=2.0, start_pref_ae=3.0,
                  limit_pref_ae=0.25)


def test_prefactors_interpolate_in_lr():
    assert LOSS.prefactors(1e-3) == pytest.approx({"e": 0.02, "f": 1000.0, "v": 0.5, "ae": 3.0})
    assert LOSS.prefactors(0.0) == {"e": 1.0, "f": 1.0, "v": 2.0, "ae": 0.25}
    quarter = LOSS.prefactors(2.5e-4)
    assert quarter == pytest.approx({"e": 1.0 - 0.98 / 4, "f": 1.0 + 999.0 / 4,
                                     "v": 2.0 - 1.5 / 4, "ae": 0.25 + 2.75 / 4}, rel=1e-14)


def test_loss_all_terms_matches_hand_formula():
    natoms = 5
    pred, label = random_case(natoms=natoms)
    pref = LOSS.prefactors(3e-4)
    loss, metrics = LOSS(xp, pred, label, pref, natoms)
    ref, ref_metrics = hand_loss(pred, label, pref, natoms)
    assert float(loss) == pytest.approx(ref, rel=1e-13)
    assert set(metrics) == set(ref_metrics)
    for k, v in ref_metrics.items():
        assert float(metrics[k]) == pytest.approx(v, rel=1e-13), k


def test_loss_skips_missing_labels():
    natoms = 4
    pred, label = random_case(nb=2, natoms=natoms, seed=1)
    pref = LOSS.prefactors(1e-3)
    for keep in (("energy", "force"), ("force",), ("energy", "virial"), ("atom_ener",)):
        part = {k: label[k] for k in keep}
        loss, metrics = LOSS(xp, pred, part, pref, natoms)
        ref, ref_metrics = hand_loss(pred, label, pref, natoms, terms=keep)
        assert float(loss) == pytest.approx(ref, rel=1e-13), keep
        assert set(metrics) == set(ref_metrics), keep


def test_loss_terms_and_from_config():
    assert LOSS.terms() == ("energy", "force", "virial", "atom_ener")
    default = EnergyLoss(start_lr=1e-3)
    assert default.terms() == ("energy", "force")  # virial and atomic prefactors are zero
    cfg = {"start_pref_e": 0.2, "limit_pref_e": 1, "start_pref_f": 100, "limit_pref_f": 1,
           "start_pref_v": 0.0, "limit_pref_v": 0.5}
    loss = EnergyLoss.from_config(cfg, 1e-2)
    assert loss.start_lr == 1e-2 and loss.start_pref_f == 100.0 and loss.limit_pref_v == 0.5
    assert loss.terms() == ("energy", "force", "virial")
    assert loss.prefactors(1e-2)["v"] == 0.0 and loss.prefactors(0.0)["v"] == 0.5


def test_loss_casts_labels_to_prediction_dtype():
    natoms = 3
    pred, label = random_case(nb=2, natoms=natoms, seed=2)
    pred32 = {k: v.astype(np.float32) for k, v in pred.items()}
    loss, _ = LOSS(xp, pred32, label, LOSS.prefactors(1e-3), natoms)
    assert np.asarray(loss).dtype == np.float32
    ref, _ = hand_loss({k: v.astype(np.float64) for k, v in pred32.items()}, label,
                       LOSS.prefactors(1e-3), natoms)
    assert float(loss) == pytest.approx(ref, rel=1e-5)


# ---- Adam ----------------------------------------------------------------------------------
def test_corrections():
    c1, sqrt_c2 = Adam().corrections(3)
    assert c1 == pytest.approx(1 - 0.9**3, rel=1e-15)
    assert sqrt_c2 == pytest.approx(math.sqrt(1 - 0.999**3), rel=1e-15)


def test_adam_equals_torch_adam():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(5)
    shapes = {"a/w": (3, 4), "a/b": (4,), "c": (2, 2, 2)}
    params = {k: rng.normal(size=s) for k, s in shapes.items()}
    grads = [{k: rng.normal(size=s) * 10.0 ** rng.integers(-3, 2) for k, s in shapes.items()}
             for _ in range(5)]
    lrs = [1e-2, 5e-3, 2e-2, 1e-3, 7e-3]

    tparams = {k: torch.tensor(v, dtype=torch.float64, requires_grad=True)
               for k, v in params.items()}
    opt = torch.optim.Adam(list(tparams.values()), lr=lrs[0], foreach=False)
    adam = Adam()
    state = adam.init(xp, params)
    assert all(np.all(state[p][k] == 0) for p in "mv" for k in params)
    mine = params
    for step, (g, lr) in enumerate(zip(grads, lrs, strict=True), start=1):
        for group in opt.param_groups:
            group["lr"] = lr
        for k, t in tparams.items():
            t.grad = torch.tensor(g[k], dtype=torch.float64)
        opt.step()
        c1, sqrt_c2 = adam.corrections(step)
        mine, state = adam.update(xp, mine, g, state, lr, c1, sqrt_c2)
        for k, t in tparams.items():
            ref = t.detach().numpy()
            np.testing.assert_allclose(mine[k], ref, rtol=1e-14, atol=1e-15,
                                       err_msg=f"{k} step {step}")
            tstate = opt.state[t]
            np.testing.assert_allclose(state["m"][k], tstate["exp_avg"].numpy(), rtol=1e-13,
                                       atol=1e-15)
            np.testing.assert_allclose(state["v"][k], tstate["exp_avg_sq"].numpy(), rtol=1e-13,
                                       atol=1e-18)
    # the parameters moved (by about lr per step), inputs untouched
    assert all(np.max(np.abs(mine[k] - params[k])) > 1e-3 for k in params)
