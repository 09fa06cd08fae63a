"""pytest configuration: fail early when the shared reference data is missing."""

from __future__ import annotations

import importlib
import importlib.util
import os

import pytest
from reference_data import FIXTURES

#: thread settings of each pytest-xdist worker, set before any framework is imported
ONE_THREAD = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "TF_NUM_INTRAOP_THREADS": "1",
              "TF_NUM_INTEROP_THREADS": "1"}
XLA_ONE_THREAD = "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"


def one_thread_per_worker() -> None:
    """In a pytest-xdist worker (the default run, ``-n 2``), every framework uses one thread:
    two workers of two threads each on two cores oversubscribe them (measured, the whole suite:
    26.4 min in one process, 21.5 min in two workers with the frameworks' own thread counts,
    18.9 min with one thread per worker)."""
    if not os.environ.get("PYTEST_XDIST_WORKER"):
        return
    for key, value in ONE_THREAD.items():
        os.environ.setdefault(key, value)
    flags = os.environ.get("XLA_FLAGS", "")
    if "intra_op_parallelism_threads" not in flags:
        os.environ["XLA_FLAGS"] = f"{flags} {XLA_ONE_THREAD}".strip()


def pytest_configure(config: pytest.Config) -> None:
    one_thread_per_worker()
    if not FIXTURES.exists():
        raise pytest.UsageError(f"DeePMD-kit fixtures not found at {FIXTURES}")
    # Paddle crashes when imported after TensorFlow in one process; with both installed, load
    # Paddle first whatever order the tests run in
    if importlib.util.find_spec("paddle") and importlib.util.find_spec("tensorflow"):
        importlib.import_module("paddle")
