"""pytest configuration: fail early when the shared reference data is missing."""

from __future__ import annotations

import pytest
from reference_data import FIXTURES


def pytest_configure(config: pytest.Config) -> None:
    if not FIXTURES.exists():
        raise pytest.UsageError(f"DeePMD-kit fixtures not found at {FIXTURES}")
