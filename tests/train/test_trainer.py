"""The training loop: the same steps on every backend, exact restarts, clear failures."""

from __future__ import annotations

import numpy as np
import pytest
from reference_data import WATER
from train_inputs import tiny

from polypot.backend.registry import is_installed
from polypot.train.checkpoint import latest_checkpoint, load_checkpoint, model_from_checkpoint
from polypot.train.trainer import Trainer, TrainingError

pytestmark = pytest.mark.skipif(not WATER.exists(), reason=f"no water data at {WATER}")

BACKENDS = [b for b in ("jax", "torch", "tensorflow", "paddle") if is_installed(b)]
#: one backend for the single-backend tests (eager torch: no compilation per batch shape)
MAIN = "torch" if "torch" in BACKENDS else BACKENDS[0]


def run(cfg: dict, backend: str, workdir, **kw) -> Trainer:
    trainer = Trainer(cfg, backend, workdir=workdir, **kw)
    trainer.run()
    return trainer


@pytest.fixture(scope="module")
def reference_losses(tmp_path_factory) -> dict:
    """20 steps on every installed backend: se_e2_a, DPA-1 (one attention layer), DPA-2."""
    out = {}
    for kind in KINDS:
        for b in BACKENDS:
            t = run(tiny(kind), b, tmp_path_factory.mktemp(f"{b}{kind}"))
            out[b, kind] = (np.array(t.losses), t.numpy_params())
    return out


KINDS = ("se_e2_a", "se_atten", "dpa2")


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("backend", BACKENDS[1:])
def test_losses_agree_across_backends(reference_losses, backend, kind):
    ref, ref_params = reference_losses[BACKENDS[0], kind]
    got, params = reference_losses[backend, kind]
    assert len(got) == len(ref) == 20
    assert ref[-1] < ref[0]  # it learns
    np.testing.assert_allclose(got, ref, rtol=1e-8, atol=0)
    for k, v in ref_params.items():
        np.testing.assert_allclose(params[k], v, rtol=1e-7, atol=1e-10, err_msg=k)


@pytest.mark.parametrize("backend", [MAIN])
def test_restart_reproduces_steps_exactly(tmp_path, backend):
    full = run(tiny(), backend, tmp_path / "full")
    ckpt10 = tmp_path / "full" / "model.ckpt-10.npz"
    assert ckpt10.is_file() and latest_checkpoint(tmp_path / "full").name == "model.ckpt-20.npz"
    again = run(tiny(), backend, tmp_path / "again", restart=ckpt10)
    assert again.start_step == 10
    np.testing.assert_array_equal(np.array(again.losses), np.array(full.losses[10:]))
    for k, v in full.numpy_params().items():
        np.testing.assert_array_equal(again.numpy_params()[k], v, err_msg=k)
    # the restarted run appended to its own lcurve; steps 10 and 20 appear once each
    lines = (tmp_path / "again" / "lcurve.out").read_text().splitlines()
    assert [int(x.split()[0]) for x in lines if not x.startswith("#")] == [15, 20]


def test_checkpoints_are_pruned_and_loadable(tmp_path):
    run(tiny(numb_steps=6, save_freq=1, max_ckpt_keep=2), MAIN, tmp_path)
    assert sorted(p.name for p in tmp_path.glob("model.ckpt-*.npz")) == [
        "model.ckpt-5.npz", "model.ckpt-6.npz"]
    model, params, meta = model_from_checkpoint(latest_checkpoint(tmp_path))
    assert meta["step"] == 6 and model.type_map == ["O", "H"]
    assert (tmp_path / "out.json").is_file()


def test_nan_loss_stops_and_keeps_last_checkpoint(tmp_path):
    trainer = Trainer(tiny(numb_steps=10, save_freq=2), MAIN, workdir=tmp_path)
    good = trainer.loader.next_batch

    def poisoned():
        batch = good()
        if trainer.loader_calls == 5:  # step 6: a label that went bad
            batch.energy = np.full_like(batch.energy, np.nan)
        trainer.loader_calls += 1
        return batch

    trainer.loader_calls = 0
    trainer.loader.next_batch = poisoned
    with pytest.raises(TrainingError, match=r"step 6 \(system .*data_\d") as err:
        trainer.run()
    assert "model.ckpt-4.npz" in str(err.value)
    assert latest_checkpoint(tmp_path).name == "model.ckpt-4.npz"
    params, _, meta = load_checkpoint(tmp_path / "model.ckpt-4.npz")
    assert meta["step"] == 4 and all(np.isfinite(v).all() for v in params.values())


def test_interrupt_leaves_a_loadable_checkpoint(tmp_path):
    trainer = Trainer(tiny(numb_steps=10, save_freq=100), MAIN, workdir=tmp_path)
    step = trainer.train_step
    calls = []

    def interrupted(*args):
        if len(calls) == 3:
            raise KeyboardInterrupt
        calls.append(1)
        return step(*args)

    trainer.train_step = interrupted
    with pytest.raises(KeyboardInterrupt):
        trainer.run()
    ckpt = latest_checkpoint(tmp_path)
    assert ckpt.name == "model.ckpt-3.npz"
    resumed = run({}, MAIN, tmp_path, restart=ckpt)
    assert resumed.start_step == 3 and len(resumed.losses) == 7


def test_same_seed_same_run_and_other_seed_differs(tmp_path):
    a = run(tiny(numb_steps=4), MAIN, tmp_path / "a").losses
    b = run(tiny(numb_steps=4), MAIN, tmp_path / "b").losses
    c = run(tiny(numb_steps=4, seed=8), MAIN, tmp_path / "c").losses
    assert a == b and a != c
