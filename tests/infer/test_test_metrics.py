"""``polypot.infer.test``: dp-test metrics, detail files and parity plot."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from polypot.backend.registry import default_autodiff_backend
from polypot.data.system import DataError, load_systems
from polypot.infer.test import evaluate_model, weighted_average

SHARED = Path(__file__).resolve().parents[2].parent / "shared"
MODEL = SHARED / "fixtures" / "deepmd-3.2" / "se_e2_a" / "model.dp"
WATER0 = SHARED / "data" / "water" / "data_0"

pytestmark = [
    pytest.mark.skipif(not MODEL.exists() or not WATER0.exists(),
                       reason=f"shared fixtures not found under {SHARED}"),
    pytest.mark.skipif(default_autodiff_backend() is None,
                       reason="forces need an autodiff backend"),
]


@pytest.fixture(scope="module")
def dp():
    from polypot.infer.deep_pot import DeepPot

    return DeepPot(MODEL, backend=default_autodiff_backend())


def write_system(path: Path, coord, box, atype_raw, type_map, labels: dict) -> Path:
    """A deepmd/npy system: type.raw, type_map.raw, set.000/*.npy."""
    nf = coord.shape[0]
    (path / "set.000").mkdir(parents=True)
    (path / "type.raw").write_text(" ".join(str(t) for t in atype_raw) + "\n")
    (path / "type_map.raw").write_text("\n".join(type_map) + "\n")
    np.save(path / "set.000" / "coord.npy", coord.reshape(nf, -1))
    np.save(path / "set.000" / "box.npy", box.reshape(nf, 9))
    for name, value in labels.items():
        np.save(path / "set.000" / f"{name}.npy", np.asarray(value).reshape(nf, -1).squeeze(-1)
                if name == "energy" else np.asarray(value).reshape(nf, -1))
    return path


def small_frames(nf: int = 3, seed: int = 0):
    """Two water molecules in a 9 Å box, jiggled."""
    rng = np.random.default_rng(seed)
    base = np.array([[1.0, 1.0, 1.0], [1.96, 1.0, 1.0], [0.76, 1.93, 1.0],
                     [4.0, 4.2, 3.9], [4.96, 4.2, 3.9], [3.76, 5.13, 3.9]])
    coord = base[None] + 0.05 * rng.standard_normal((nf, 6, 3))
    box = np.broadcast_to(np.diag([9.0, 9.5, 10.0]), (nf, 3, 3)).copy()
    return coord, box


@pytest.fixture(scope="module")
def self_labelled(dp, tmp_path_factory):
    """A system (types written as H=0, O=1, the reverse of the model) labelled with the
    model's own predictions, virials included."""
    coord, box = small_frames()
    model_types = np.array([0, 1, 1, 0, 1, 1])  # O H H O H H in the model's ["O", "H"]
    e, f, v = dp.eval(coord, box, model_types)
    path = tmp_path_factory.mktemp("self") / "sys"
    return write_system(path, coord, box, 1 - model_types, ["H", "O"],
                        {"energy": e.ravel(), "force": f, "virial": v})


def test_metrics_equal_numpy(dp):
    n = 3
    system = load_systems(WATER0, dp.get_type_map())[0]
    e, f, v = dp.eval(system.coord[:n], system.box[:n], system.atype)
    de = e.ravel() - system.energy[:n]
    df = f - system.force[:n]
    natoms = system.natoms
    for chunk in (8, 2):  # chunked evaluation gives the same numbers
        res, avg = evaluate_model(dp, [system], numb_test=n, chunk=chunk)
        assert res["nframes"] == n and res["natoms"] == natoms == 192
        np.testing.assert_allclose(res["energy_mae"], np.mean(np.abs(de)), rtol=1e-10)
        np.testing.assert_allclose(res["energy_rmse"], np.sqrt(np.mean(de**2)), rtol=1e-10)
        np.testing.assert_allclose(res["energy_mae_per_atom"], np.mean(np.abs(de)) / natoms,
                                   rtol=1e-10)
        np.testing.assert_allclose(res["energy_rmse_per_atom"],
                                   np.sqrt(np.mean(de**2)) / natoms, rtol=1e-10)
        np.testing.assert_allclose(res["force_mae"], np.mean(np.abs(df)), rtol=1e-10)
        np.testing.assert_allclose(res["force_rmse"], np.sqrt(np.mean(df**2)), rtol=1e-10)
        assert "virial_mae" not in res  # the water data has no virial labels
        assert res["sizes"] == {"energy": n, "force": n * natoms * 3}
        assert avg["system"] == "weighted average" and avg["nsystems"] == 1
        assert avg["energy_rmse"] == pytest.approx(res["energy_rmse"])


def test_self_labelled_system_has_zero_error(dp, self_labelled):
    res, _ = evaluate_model(dp, self_labelled, numb_test=0)
    assert res["nframes"] == 3
    for name in ("energy_mae", "energy_rmse", "force_mae", "force_rmse",
                 "virial_mae", "virial_rmse", "virial_mae_per_atom", "virial_rmse_per_atom"):
        assert res[name] == pytest.approx(0.0, abs=1e-10), name


def test_numb_test_limits_frames(dp, self_labelled):
    res, avg = evaluate_model(dp, self_labelled, numb_test=2)
    assert res["nframes"] == 2 and avg["nframes"] == 2
    assert res["sizes"] == {"energy": 2, "force": 2 * 6 * 3, "virial": 2}
    res, _ = evaluate_model(dp, self_labelled, numb_test=50)  # more than there are
    assert res["nframes"] == 3


def test_detail_files_and_parity_plot(dp, self_labelled, tmp_path):
    water = load_systems(WATER0, dp.get_type_map())[0]
    small = load_systems(self_labelled, dp.get_type_map())[0]
    detail = tmp_path / "out" / "detail"
    results = evaluate_model(dp, [water, small], numb_test=2, detail_file=detail)
    assert len(results) == 3

    def blocks(suffix):
        text = Path(f"{detail}.{suffix}").read_text().splitlines()
        headers = [line for line in text if line.startswith("#")]
        return headers, np.loadtxt(f"{detail}.{suffix}")

    headers, e = blocks("e.out")
    assert headers == [f"# {water.path}: data_e pred_e", f"# {small.path}: data_e pred_e"]
    assert e.shape == (4, 2)
    pred, *_ = dp.eval(water.coord[:2], water.box[:2], water.atype)
    np.testing.assert_allclose(e[:2, 0], water.energy[:2], rtol=1e-15)
    np.testing.assert_allclose(e[:2, 1], pred.ravel(), rtol=1e-12)
    np.testing.assert_allclose(e[2:, 0], e[2:, 1], rtol=1e-12)  # self-labelled
    headers, ea = blocks("e_peratom.out")
    assert len(headers) == 2
    np.testing.assert_allclose(ea[:2], e[:2] / 192, rtol=1e-12)
    np.testing.assert_allclose(ea[2:], e[2:] / 6, rtol=1e-12)

    headers, f = blocks("f.out")
    assert headers[0] == f"# {water.path}: data_fx data_fy data_fz pred_fx pred_fy pred_fz"
    assert f.shape == (2 * 192 + 2 * 6, 6)
    np.testing.assert_allclose(f[:2 * 192, :3], water.force[:2].reshape(-1, 3), rtol=1e-15)

    # only the second system has virials
    headers, v = blocks("v.out")
    assert len(headers) == 1 and headers[0].startswith(f"# {small.path}: data_vxx data_vxy")
    assert headers[0].endswith("pred_vzy pred_vzz") and v.shape == (2, 18)
    np.testing.assert_allclose(v[:, :9], small.virial[:2], rtol=1e-12)
    np.testing.assert_allclose(v[:, 9:], v[:, :9], rtol=1e-8, atol=1e-10)
    _, va = blocks("v_peratom.out")
    np.testing.assert_allclose(va, v / 6, rtol=1e-12)

    png = Path(f"{detail}.parity.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000

    # a second run starts the files afresh
    evaluate_model(dp, [small], numb_test=1, detail_file=detail)
    assert np.loadtxt(f"{detail}.e.out").shape == (2,)


def test_weighted_average():
    a = {"nframes": 2, "energy_mae": 1.0, "energy_rmse": 1.0, "force_mae": 3.0,
         "force_rmse": 2.0, "sizes": {"energy": 2, "force": 30}}
    b = {"nframes": 6, "energy_mae": 3.0, "energy_rmse": 2.0, "virial_mae": 5.0,
         "sizes": {"energy": 6, "virial": 6}}
    avg = weighted_average([a, b])
    assert avg["nframes"] == 8 and avg["nsystems"] == 2
    assert avg["energy_mae"] == pytest.approx((2 * 1 + 6 * 3) / 8)
    assert avg["energy_rmse"] == pytest.approx(np.sqrt((2 * 1 + 6 * 4) / 8))
    assert avg["force_mae"] == 3.0 and avg["force_rmse"] == 2.0  # only a has forces
    assert avg["virial_mae"] == 5.0


def test_numpy_backend_gives_energy_errors_only(self_labelled):
    res, _ = evaluate_model(MODEL, self_labelled, numb_test=2, backend="numpy")
    assert res["energy_rmse"] == pytest.approx(0.0, abs=1e-10)
    assert "force_rmse" not in res and "virial_rmse" not in res


def test_bad_inputs(dp, tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        evaluate_model(dp, tmp_path / "missing", numb_test=1)
    with pytest.raises(ValueError, match="numb_test"):
        evaluate_model(dp, WATER0, numb_test=-1)
    coord, box = small_frames(1)
    carbon = write_system(tmp_path / "carbon", coord, box, [0, 1, 1, 0, 1, 1], ["C", "H"], {})
    with pytest.raises(DataError, match="'C'.*not in the model's type_map"):
        evaluate_model(dp, carbon, numb_test=1)


def test_atomic_energy_errors(dp, self_labelled, tmp_path):
    from dataclasses import replace

    system = load_systems(self_labelled, dp.get_type_map())[0]
    _, _, _, ae, _ = dp.eval(system.coord, system.box, system.atype, atomic=True)
    labelled = replace(system, atom_ener=ae.reshape(system.nframes, system.natoms))
    res, _ = evaluate_model(dp, [labelled], numb_test=2, atomic=True,
                            detail_file=tmp_path / "a")
    assert res["atom_ener_rmse"] == pytest.approx(0.0, abs=1e-10)
    assert res["sizes"]["atom_ener"] == 2 * 6
    table = np.loadtxt(tmp_path / "a.ae.out")
    assert table.shape == (12, 2)
    np.testing.assert_allclose(table[:, 0], table[:, 1], rtol=1e-12)
