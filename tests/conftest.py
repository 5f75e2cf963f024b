# tests/conftest.py — configuration shared by the whole test suite.
# Owns: repository paths for tests, and marking every test under tests/integration/ with
# `pytest.mark.integration` (so `pytest -m "not integration"` runs only the fast suite).
# Server fixtures live in tests/integration/conftest.py.
from __future__ import annotations

from pathlib import Path

import pytest

TESTS_DIR = Path(__file__).resolve().parent
REPO_ROOT = TESTS_DIR.parent
FIXTURES_DIR = REPO_ROOT / "fixtures"
INTEGRATION_DIR = TESTS_DIR / "integration"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if item.path.resolve().is_relative_to(INTEGRATION_DIR):
            item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="session")
def repo_root() -> Path:
    """The checkout's top directory."""
    return REPO_ROOT


@pytest.fixture(scope="session")
def fixtures_dir() -> Path:
    """The repository's fixtures/ directory (seed SQL, byte captures, case files)."""
    return FIXTURES_DIR
