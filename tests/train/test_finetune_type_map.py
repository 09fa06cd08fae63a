"""``--finetune`` from a model with another type map: the input's type map wins, the model's
parameters are moved to it, and before the first step only the re-fitted energy bias differs."""

from __future__ import annotations

import os

import numpy as np
import pytest
from reference_data import WATER
from train_inputs import tiny

from polypot.backend.registry import get_backend, is_installed
from polypot.data.system import load_system
from polypot.infer.runner import ModelRunner
from polypot.io.model_file import save_model
from polypot.model import build_model
from polypot.model.model import EnergyModel
from polypot.model.type_map import TypeMapError, change_type_map
from polypot.neighbor import build_neighbor_data
from polypot.train.params import flatten
from polypot.train.trainer import Trainer, compute_statistics

pytestmark = [
    pytest.mark.skipif(not WATER.exists(), reason=f"no water data at {WATER}"),
    pytest.mark.skipif(not is_installed("torch"), reason="these runs train on torch"),
]


def config(attention: bool, **training: object) -> dict:
    """The tiny input ([O, H]) on data_0 only, 2 steps, no validation."""
    cfg = tiny(attention, numb_steps=2, save_freq=2, disp_freq=1, **training)
    cfg["training"]["training_data"]["systems"] = [str(WATER / "data_0")]
    del cfg["training"]["validation_data"]
    return cfg


def pretrained(tmp_path, attention: bool, type_map: list[str], sel: list[int] | int,
               seed: int = 5) -> tuple[str, dict]:
    """A random model of ``type_map`` with non-trivial statistics, saved as ``.dp``:
    (path, its model dict)."""
    cfg = config(attention)["model"]
    cfg = dict(cfg, type_map=type_map, descriptor=dict(cfg["descriptor"], sel=sel))
    model, params = build_model(cfg, seed=seed)
    rng = np.random.default_rng(seed)
    d = params["descriptor"]
    d["davg"] = rng.normal(0.0, 0.1, d["davg"].shape)
    d["dstd"] = rng.uniform(0.5, 1.5, d["dstd"].shape)
    params["out_bias"] = rng.normal(-50.0, 20.0, params["out_bias"].shape)
    path = tmp_path / "pretrained.dp"
    save_model(path, model, params, model_def_script=cfg)
    return str(path), model.serialize(params)


def atomic_energies(model: EnergyModel, params: dict, frame: tuple) -> np.ndarray:
    """Atomic energies (nf, natoms) on the NumPy backend."""
    coord, cell, atype = frame
    nd = build_neighbor_data(coord, cell, atype, model.rcut, model.sel)
    return ModelRunner(model, params, get_backend("numpy")).run(nd, forces=False)[
        "atom_energy"][..., 0]


@pytest.fixture(scope="module")
def frame() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The first frame of data_0 with types [O, H]: coord, cell, atype."""
    s = load_system(WATER / "data_0", ["O", "H"])
    return s.coord[:1], s.box[:1], s.atype


def finetune(tmp_path, cfg: dict, path: str) -> Trainer:
    return Trainer(cfg, "torch", workdir=tmp_path / "ft", finetune=path,
                   log=open(os.devnull, "w"))  # noqa: SIM115


@pytest.mark.parametrize(("attention", "old_map", "sel"), [
    (False, ["H", "O"], [24, 12]),  # se_e2_a: reordered (the input has O: 12, H: 24)
    (True, ["O", "H", "C"], 36),  # se_atten: C dropped
], ids=["se_e2_a-HO", "se_atten-OHC"])
def test_finetune_maps_the_type_map(tmp_path, frame, attention, old_map, sel):
    path, old = pretrained(tmp_path, attention, old_map, sel)
    trainer = finetune(tmp_path, config(attention), path)
    assert trainer.model.type_map == ["O", "H"]
    start = trainer.numpy_params()
    mapped_model, mapped_params = EnergyModel.deserialize(change_type_map(old, ["O", "H"]))
    mapped = flatten(mapped_params)
    assert set(start) == set(mapped)
    assert [k for k in mapped if not np.array_equal(start[k], mapped[k])] == ["out_bias"]
    # per atom: fine-tuned = pretrained (on its own type labels) + the change of the bias
    old_model, old_params = EnergyModel.deserialize(old)
    coord, cell, atype = frame
    e_old = atomic_energies(old_model, old_params, (coord, cell, np.array(
        [old_map.index(["O", "H"][t]) for t in atype])))
    e_new = atomic_energies(trainer.model, trainer.model_params(), frame)
    shift = (start["out_bias"] - mapped["out_bias"])[0, atype, 0]
    np.testing.assert_allclose(e_new - e_old, shift[None], rtol=0, atol=1e-9)
    assert np.abs(shift).max() > 1e-3  # the bias was re-fitted indeed
    trainer.run()
    assert len(trainer.losses) == 2 and np.all(np.isfinite(trainer.losses))
    assert (tmp_path / "ft" / "model.ckpt-2.npz").is_file()


def test_finetune_adds_new_types_to_a_type_embedding_model(tmp_path):
    """[H, C] -> [O, H]: O is new (random type-embedding row, statistics from the data)."""
    path, old = pretrained(tmp_path, True, ["H", "C"], 36)
    cfg = config(True)
    trainer = finetune(tmp_path, cfg, path)
    start = trainer.numpy_params()
    fresh = compute_statistics(trainer.model, start, trainer.train_systems, trainer.config)
    for k in ("descriptor/davg", "descriptor/dstd"):  # O: the data's; H: the pretrained model's
        np.testing.assert_array_equal(start[k][0], fresh[k][0], err_msg=k)
        np.testing.assert_array_equal(start[k][1], old["descriptor"]["@variables"][k[11:]][0])
    assert np.all(start["descriptor/dstd"][0] != 1.0)  # really computed from the data
    loss, _, _ = trainer.step(0)
    assert np.isfinite(loss)


def test_finetune_se_e2_a_with_new_types_is_refused(tmp_path):
    path, _ = pretrained(tmp_path, False, ["O", "C"], [12, 4])
    with pytest.raises(TypeMapError, match=r"^--finetune .*pretrained.dp: types \['H'\] are "
                                           r"not in the model's type map \['O', 'C'\].*se_e2_a "
                                           r"model supports only its own types, in any order$"):
        finetune(tmp_path, config(False), path)


def test_finetune_needs_the_same_sel_in_the_new_order(tmp_path):
    path, _ = pretrained(tmp_path, False, ["H", "O"], [12, 24])  # H: 12, O: 24
    with pytest.raises(ValueError, match=r"sel \[24, 12\].*differ from the input's \[12, 24\]"):
        finetune(tmp_path, config(False), path)


def test_init_model_still_needs_the_same_type_map(tmp_path):
    path, _ = pretrained(tmp_path, False, ["H", "O"], [24, 12])
    with pytest.raises(ValueError, match="use --finetune"):
        Trainer(config(False), "torch", workdir=tmp_path / "init", init_model=path,
                log=open(os.devnull, "w"))  # noqa: SIM115

