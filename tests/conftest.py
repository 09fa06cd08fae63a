"""pytest configuration: fail early when the shared reference data is missing."""

from __future__ import annotations

import importlib
import importlib.util

import pytest
from reference_data import FIXTURES


def pytest_configure(config: pytest.Config) -> None:
    if not FIXTURES.exists():
        raise pytest.UsageError(f"DeePMD-kit fixtures not found at {FIXTURES}")
    # Paddle crashes when imported after TensorFlow in one process; with both installed, load
    # Paddle first whatever order the tests run in
    if importlib.util.find_spec("paddle") and importlib.util.find_spec("tensorflow"):
        importlib.import_module("paddle")
