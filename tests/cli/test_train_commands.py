"""``polypot train / freeze / test`` end to end on a tiny model: files written, relative system
paths, frozen formats agreeing, --init-model, and one-line errors for bad inputs."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np
import pytest
from reference_data import WATER
from train_inputs import tiny

from polypot.backend.registry import is_installed
from polypot.cli.main import main
from polypot.data.system import load_system, load_systems
from polypot.infer.deep_pot import DeepPot
from polypot.io.model_file import load_model
from polypot.train.checkpoint import load_checkpoint
from polypot.train.lr import ExpDecay
from polypot.train.params import flatten
from polypot.train.trainer import Trainer

pytestmark = [
    pytest.mark.skipif(not WATER.exists(), reason=f"no water data at {WATER}"),
    pytest.mark.skipif(not is_installed("torch"), reason="these runs train on torch"),
]

NSTEPS = 4


def write_input(folder: Path, name: str = "input.json", **training) -> Path:
    """An input file in ``folder`` with systems given relative to it (data/ holds symlinks)."""
    data = folder / "data"
    data.mkdir(parents=True, exist_ok=True)
    for system in ("data_0", "data_3"):
        if not (data / system).exists():
            os.symlink(WATER / system, data / system)
    cfg = tiny(**{"numb_steps": NSTEPS, "save_freq": 2, **training})
    cfg["training"]["training_data"]["systems"] = ["data/data_0"]
    cfg["training"]["validation_data"]["systems"] = ["data/data_3"]
    path = folder / name
    path.write_text(json.dumps(cfg, indent=1))
    return path


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    """Train 4 steps from another folder than the input's (so relative system paths only work
    if they are taken relative to the input file), then freeze to .dp and .pth."""
    root = tmp_path_factory.mktemp("train")
    write_input(root / "inp")
    work = root / "work"
    work.mkdir()
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(work)
        assert main(["train", "../inp/input.json", "-b", "torch"]) == 0
        assert main(["freeze", "-o", "m.dp"]) == 0
        assert main(["freeze", "-o", "m.pth"]) == 0
    return work


def test_training_files(run_dir):
    names = {p.name for p in run_dir.iterdir()}
    assert {"lcurve.out", "out.json", "checkpoint", "model.ckpt-2.npz",
            "model.ckpt-4.npz"} <= names
    assert "model.ckpt-4.npz" in (run_dir / "checkpoint").read_text()
    params, opt, meta = load_checkpoint(run_dir / "model.ckpt-4.npz")
    assert meta["step"] == NSTEPS and opt is not None
    out = json.loads((run_dir / "out.json").read_text())
    assert out["training"]["numb_steps"] == NSTEPS
    # the relative systems were resolved against the input file's folder
    systems = out["training"]["training_data"]["systems"]
    systems = [systems] if isinstance(systems, str) else systems
    assert len(systems) == 1
    assert (run_dir / systems[0]).resolve() == (run_dir.parent / "inp/data/data_0").resolve()


def test_lcurve(run_dir):
    lines = (run_dir / "lcurve.out").read_text().splitlines()
    header = lines[0].split()
    assert header == ["#", "step", "rmse_val", "rmse_trn", "rmse_e_val", "rmse_e_trn",
                      "rmse_f_val", "rmse_f_trn", "lr"]
    rows = [[float(x) for x in line.split()] for line in lines[1:]]
    assert [int(r[0]) for r in rows] == [1, NSTEPS]  # first step, then disp_freq / last step
    assert all(len(r) == len(header) - 1 for r in rows)
    assert all(math.isfinite(v) and v > 0 for r in rows for v in r)
    schedule = ExpDecay(1e-2, 1e-4, 4, NSTEPS)
    for r in rows:  # lr of the step that was taken, printed with 2 significant digits
        assert r[-1] == pytest.approx(schedule(int(r[0]) - 1), rel=0.05)
    assert rows[0][-1] == 1e-2


def validation_reference(model_file: Path) -> tuple[float, float, int]:
    """rmse_e (per atom) and rmse_f of a model on the validation batch (data_3 frame 0),
    and the number of atoms."""
    s = load_system(WATER / "data_3", ["O", "H"])
    e, f, _ = DeepPot(model_file).eval(s.coord[:1], s.box[:1], s.atype)
    rmse_e = abs(e[0, 0] - s.energy[0]) / s.natoms
    rmse_f = float(np.sqrt(np.mean((f[0] - s.force[0]) ** 2)))
    return rmse_e, rmse_f, s.natoms


def test_lcurve_validation_columns(run_dir):
    last = [float(x) for x in (run_dir / "lcurve.out").read_text().splitlines()[-1].split()]
    rmse_e, rmse_f, _ = validation_reference(run_dir / "m.dp")
    assert last[3] == pytest.approx(rmse_e, rel=0.01)  # written as %.2e
    assert last[5] == pytest.approx(rmse_f, rel=0.01)


def test_frozen_formats_agree_and_match_checkpoint(run_dir):
    s = load_system(WATER / "data_3", ["O", "H"])
    e_dp, f_dp, v_dp = DeepPot(run_dir / "m.dp").eval(s.coord[:2], s.box[:2], s.atype)
    e_pt, f_pt, v_pt = DeepPot(run_dir / "m.pth").eval(s.coord[:2], s.box[:2], s.atype)
    np.testing.assert_allclose(e_pt, e_dp, rtol=0, atol=1e-10)
    np.testing.assert_allclose(f_pt, f_dp, rtol=0, atol=1e-10)
    np.testing.assert_allclose(v_pt, v_dp, rtol=0, atol=1e-10)
    # freeze took the latest checkpoint: the .dp holds its parameters exactly
    ckpt = load_checkpoint(run_dir / "model.ckpt-4.npz")[0]
    frozen = flatten(load_model(run_dir / "m.dp")[1])
    assert set(frozen) == set(ckpt)
    for k, v in ckpt.items():
        np.testing.assert_array_equal(frozen[k], v, err_msg=k)


def test_test_command(run_dir, capsys):
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(run_dir)
        assert main(["test", "-m", "m.dp", "-s", str(WATER / "data_3"), "-n", "2"]) == 0
    out = capsys.readouterr().out
    assert "number of test data : 2" in out


def test_init_model_starts_from_the_file(run_dir, tmp_path):
    cfg = json.loads((run_dir.parent / "inp" / "input.json").read_text())
    trainer = Trainer(cfg, "torch", input_dir=run_dir.parent / "inp", workdir=tmp_path,
                      init_model=run_dir / "m.dp")
    start = trainer.numpy_params()
    frozen = flatten(load_model(run_dir / "m.dp")[1])
    assert set(start) == set(frozen)
    for k, v in frozen.items():  # statistics included: not recomputed from the data
        np.testing.assert_array_equal(start[k], v, err_msg=k)
    assert trainer.start_step == 0


@pytest.fixture(scope="module")
def init_dir(run_dir) -> Path:
    """One step from --init-model m.dp (input beside the first one, output elsewhere)."""
    inp = run_dir.parent / "inp"
    write_input(inp, "input_1.json", numb_steps=1)
    out = run_dir.parent / "init"
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(inp)
        assert main(["train", "input_1.json", "-b", "torch", "--init-model",
                     str(run_dir / "m.dp"), "-o", str(out)]) == 0
        assert main(["freeze", "-c", str(out), "-o", str(out / "m1.dp")]) == 0
    return out


def test_init_model_through_the_cli(run_dir, init_dir):
    params, _, meta = load_checkpoint(init_dir / "model.ckpt-1.npz")
    assert meta["step"] == 1
    frozen = flatten(load_model(run_dir / "m.dp")[1])
    for k in ("descriptor/davg", "descriptor/dstd", "out_bias"):  # fixed leaves carried over
        np.testing.assert_array_equal(params[k], frozen[k], err_msg=k)
    moved = [k for k in frozen if not np.array_equal(params[k], frozen[k])]
    assert moved and all(k not in ("descriptor/davg", "descriptor/dstd", "out_bias")
                         for k in moved)
    # Adam's first step moves a weight by lr * |g| / (|g| + eps): lr = 1e-2 unless g ~ 0
    step = np.concatenate([np.abs(params[k] - frozen[k]).ravel() for k in moved])
    assert np.max(step) == pytest.approx(1e-2, rel=1e-6)
    assert np.median(step) == pytest.approx(1e-2, rel=1e-3)


def test_lcurve_validation_columns_after_one_step(init_dir):
    line = (init_dir / "lcurve.out").read_text().splitlines()[1].split()
    assert int(line[0]) == 1
    rmse_e, rmse_f, _ = validation_reference(init_dir / "m1.dp")
    assert float(line[3]) == pytest.approx(rmse_e, rel=0.01)
    assert float(line[5]) == pytest.approx(rmse_f, rel=0.01)


def test_lcurve_validation_loss_uses_the_printed_lr(init_dir):
    line = [float(x) for x in (init_dir / "lcurve.out").read_text().splitlines()[1].split()]
    rmse_e, rmse_f, natoms = validation_reference(init_dir / "m1.dp")
    assert line[-1] == 1e-2  # the lr of step 1 (index 0)

    def rmse(lr: float) -> float:  # sqrt(pref_e / natoms * mse_e + pref_f * mse_f)
        c = lr / 1e-2
        pref_e, pref_f = 1.0 + (0.2 - 1.0) * c, 1.0 + (100.0 - 1.0) * c
        return math.sqrt(pref_e / natoms * (rmse_e * natoms) ** 2 + pref_f * rmse_f**2)

    schedule = ExpDecay(1e-2, 1e-4, 4, 1)
    assert abs(rmse(schedule(0)) / rmse(schedule(1)) - 1) > 0.1  # the test can tell them apart
    assert line[1] == pytest.approx(rmse(schedule(0)), rel=0.01)


# ---- bad inputs: exit code 2 and one line on stderr ----------------------------------------
def one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert err.startswith("polypot train: error: "), err
    assert "\n" not in err, err
    return err


def test_unknown_key(tmp_path, capsys, monkeypatch):
    path = write_input(tmp_path)
    cfg = json.loads(path.read_text())
    cfg["training"]["numb_step"] = cfg["training"].pop("numb_steps")
    path.write_text(json.dumps(cfg))
    monkeypatch.chdir(tmp_path)
    assert main(["train", "input.json", "-b", "torch"]) == 2
    err = one_line_error(capsys)
    assert "'numb_step'" in err and "'numb_steps'" in err  # the key and the suggestion
    assert not (tmp_path / "lcurve.out").exists()


def test_missing_system_folder(tmp_path, capsys, monkeypatch):
    path = write_input(tmp_path)
    cfg = json.loads(path.read_text())
    cfg["training"]["training_data"]["systems"] = ["data/data_0", "data/no_such_system"]
    path.write_text(json.dumps(cfg))
    monkeypatch.chdir(tmp_path)
    assert main(["train", "input.json", "-b", "torch"]) == 2
    assert "no_such_system" in one_line_error(capsys)


def test_system_with_an_element_not_in_the_type_map(tmp_path, capsys, monkeypatch):
    path = write_input(tmp_path)
    bad = tmp_path / "data" / "carbon"
    (bad / "set.000").mkdir(parents=True)
    (bad / "type_map.raw").write_text("O\nH\nC\n")
    (bad / "type.raw").write_text("0 1 1 2\n")
    rng = np.random.default_rng(0)
    np.save(bad / "set.000" / "coord.npy", rng.uniform(0, 8, size=(2, 12)))
    np.save(bad / "set.000" / "box.npy", np.tile(np.eye(3).ravel() * 8.0, (2, 1)))
    np.save(bad / "set.000" / "energy.npy", np.zeros(2))
    cfg = json.loads(path.read_text())
    cfg["training"]["training_data"]["systems"] = ["data/data_0", "data/carbon"]
    path.write_text(json.dumps(cfg))
    monkeypatch.chdir(tmp_path)
    assert main(["train", "input.json", "-b", "torch"]) == 2
    err = one_line_error(capsys)
    assert "carbon" in err and "'C'" in err


def test_finetune_refits_the_energy_bias(run_dir, tmp_path):
    from polypot.io.model_file import save_model
    from polypot.train.params import unflatten

    cfg = json.loads((run_dir.parent / "inp" / "input.json").read_text())
    trainer = Trainer(cfg, "torch", input_dir=run_dir.parent / "inp", workdir=tmp_path,
                      finetune=run_dir / "m.dp", log=open(os.devnull, "w"))  # noqa: SIM115
    start = trainer.numpy_params()
    model, frozen_params, _ = load_model(run_dir / "m.dp")
    frozen = flatten(frozen_params)
    changed = [k for k in frozen if not np.array_equal(start[k], frozen[k])]
    assert changed == ["out_bias"]
    # the new bias leaves no per-type energy residual on the frames it was fitted to
    save_model(tmp_path / "ft.dp", model, unflatten(start, frozen_params))
    dp = DeepPot(tmp_path / "ft.dp", backend="torch")
    nstat = int(trainer.config["model"]["data_stat_nbatch"])
    counts, resid = [], []
    for system in load_systems(trainer.config["training"]["training_data"]["systems"],
                               ["O", "H"]):
        n = min(nstat, system.nframes)  # batch size 1: the first n frames
        e = dp.eval(system.coord[:n], system.box[:n], system.atype)[0][:, 0]
        resid.append(system.energy[:n] - e)
        counts.append(np.tile(np.bincount(system.atype, minlength=2), (n, 1)))
    counts, resid = np.concatenate(counts), np.concatenate(resid)
    assert np.abs(counts.T @ resid).max() < 1e-6 * np.abs(counts.T @ np.abs(resid)).max() + 1e-9


def test_init_model_refuses_a_compressed_model(run_dir, tmp_path):
    assert main(["compress", "-i", str(run_dir / "m.dp"), "-o", str(tmp_path / "c.dp"),
                 "--min-nbor-dist", "0.9"]) == 0
    cfg = json.loads((run_dir.parent / "inp" / "input.json").read_text())
    with pytest.raises(ValueError, match="c.dp is a compressed model"):
        Trainer(cfg, "torch", input_dir=run_dir.parent / "inp", workdir=tmp_path,
                init_model=tmp_path / "c.dp")
