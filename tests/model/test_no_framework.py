"""``polypot.model`` (and the NumPy path of DeepPot) imports no deep-learning framework, and a
lint rule keeps framework imports inside ``polypot/backend/``."""

from __future__ import annotations

import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from reference_data import FIXTURES, ROOT

FRAMEWORKS = ("torch", "jax", "jaxlib", "tensorflow", "paddle")


def test_model_imports_no_framework():
    code = textwrap.dedent(f"""
        import sys
        import polypot, polypot.model, polypot.io, polypot.neighbor, polypot.infer
        from polypot import DeepPot
        dp = DeepPot({str(FIXTURES / "se_e2_a" / "model.dp")!r}, backend="numpy")
        import numpy as np
        dp.eval_energy(np.random.default_rng(0).uniform(0, 9, (1, 6, 3)), np.eye(3)[None] * 9,
                       np.array([0, 1, 1, 0, 1, 1]))
        loaded = [m for m in {FRAMEWORKS!r} if m in sys.modules]
        assert not loaded, loaded
    """)
    subprocess.run([sys.executable, "-c", code], check=True)


def _ruff() -> str:
    exe = shutil.which("ruff") or str(Path(sys.executable).parent / "ruff")
    if not Path(exe).exists():
        pytest.fail("ruff is not installed (it is part of the test extra)")
    return exe


def test_lint_rule_keeps_frameworks_in_backend():
    result = subprocess.run([_ruff(), "check", "--select", "TID251", "polypot"], cwd=ROOT,
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout


def test_lint_rule_can_fail(tmp_path):
    bad = ROOT / "polypot" / "model" / "_lint_probe_tmp.py"
    bad.write_text("import torch  # noqa: F401\n")
    try:
        result = subprocess.run([_ruff(), "check", "--select", "TID251", str(bad)], cwd=ROOT,
                                capture_output=True, text=True)
    finally:
        bad.unlink()
    assert result.returncode != 0 and "TID251" in result.stdout
