# tests — the dbguard test suite: unit/ is pure and fast, integration/ drives real servers.
# A package so that mypy and pytest see tests.conftest and tests.integration.conftest apart.
