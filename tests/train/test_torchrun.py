"""Data-parallel training with torchrun equals one process with the same global batch."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from reference_data import WATER
from train_inputs import tiny

from polypot.backend.registry import is_installed

pytestmark = [
    pytest.mark.skipif(not is_installed("torch"), reason="torch not installed"),
    pytest.mark.skipif(not WATER.exists(), reason=f"no water data at {WATER}"),
]


def _input(path: Path, batch_size: int) -> Path:
    cfg = tiny(numb_steps=6, save_freq=6)
    cfg["training"]["training_data"]["batch_size"] = batch_size
    del cfg["training"]["validation_data"]
    path.write_text(json.dumps(cfg))
    return path


def test_two_processes_match_one(tmp_path):
    bin_dir = Path(sys.executable).parent
    torchrun = shutil.which("torchrun", path=str(bin_dir)) or shutil.which("torchrun")
    polypot = shutil.which("polypot", path=str(bin_dir))
    if torchrun is None or polypot is None:
        pytest.skip("torchrun or the polypot command is not on PATH")
    env = dict(os.environ, OMP_NUM_THREADS="1")
    two = subprocess.run(
        [torchrun, "--standalone", "--nproc_per_node=2", "--no-python", polypot, "train",
         str(_input(tmp_path / "two.json", 1)), "-b", "torch", "-o", str(tmp_path / "two")],
        capture_output=True, text=True, env=env, timeout=120)
    assert two.returncode == 0, two.stderr[-3000:]
    one = subprocess.run(
        [polypot, "train", str(_input(tmp_path / "one.json", 2)), "-b", "torch", "-o",
         str(tmp_path / "one")], capture_output=True, text=True, env=env, timeout=120)
    assert one.returncode == 0, one.stderr[-3000:]
    assert two.stdout.count("finished") == 1  # only rank 0 reports
    a = np.load(tmp_path / "one" / "model.ckpt-6.npz")
    b = np.load(tmp_path / "two" / "model.ckpt-6.npz")
    keys = [k for k in a.files if k.startswith("param/")]
    assert keys and sorted(keys) == sorted(k for k in b.files if k.startswith("param/"))
    moved = max(np.abs(a[k] - tiny_init(k)).max() for k in keys if k.endswith("/w"))
    assert moved > 1e-4  # training changed the weights, so the comparison means something
    for k in keys:
        np.testing.assert_allclose(b[k], a[k], rtol=1e-10, atol=1e-12, err_msg=k)
    lines = lambda d: (tmp_path / d / "lcurve.out").read_text()  # noqa: E731
    assert lines("one") == lines("two")


def tiny_init(key: str) -> np.ndarray:
    from polypot.model.build import build_model
    from polypot.train.params import flatten

    _, params = build_model(tiny()["model"], seed=tiny()["training"]["seed"])
    return flatten(params)[key[len("param/"):]]
