# tests/integration/conftest.py — real throwaway PostgreSQL servers for integration tests.
# Owns: `pg_server` (one per session, seeded with fixtures/shop.sql: treat it as read-only or
# clean up after yourself), `fresh_pg_server` (a new seeded server per test, for tests that stop,
# kill or reconfigure it) and `pg_server_factory` (servers with custom options, closed after the
# test); re-exports the proxy fixtures of harness.py. Never uses the machine's stock database services.
# MariaDB: `mariadb_server` (one per session, database `app` owned by `app_owner`, no seed data)
# and `fresh_mariadb_server` (a new server per test, for tests that stop, kill or restart it).
from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Protocol

import pytest

from dbguard.devdb import ThrowawayMariaDB, ThrowawayPostgres
from tests.conftest import FIXTURES_DIR

# The proxy fixtures live in harness.py; importing them here makes them visible to every test.
from tests.integration.harness import proxy, proxy_factory  # noqa: F401

SHOP_SQL = FIXTURES_DIR / "shop.sql"


class PgServerFactory(Protocol):
    """Makes a started ThrowawayPostgres; `seed=True` loads fixtures/shop.sql into `app`."""

    def __call__(self, *, seed: bool = True, **options: Any) -> ThrowawayPostgres: ...


def start_seeded_server(*, seed: bool = True, **options: Any) -> ThrowawayPostgres:
    """A started server (options go to ThrowawayPostgres), shop.sql loaded as the app owner."""
    server = ThrowawayPostgres(**options)
    try:
        server.start()
        if seed:
            server.run_sql_file(SHOP_SQL, as_superuser=False)
    except BaseException:
        server.close()
        raise
    return server


@pytest.fixture(scope="session")
def pg_server() -> Iterator[ThrowawayPostgres]:
    """A session-wide server: database `app` owned by non-superuser `app_owner`, shop data."""
    server = start_seeded_server()
    try:
        yield server
    finally:
        server.close()


@pytest.fixture
def fresh_pg_server() -> Iterator[ThrowawayPostgres]:
    """A server of its own for one test (stop / restart / kill / hba changes are fine)."""
    server = start_seeded_server()
    try:
        yield server
    finally:
        server.close()


@pytest.fixture
def pg_server_factory() -> Iterator[PgServerFactory]:
    """Start servers with custom options (TLS, settings, roles…); all closed after the test."""
    made: list[ThrowawayPostgres] = []

    def make(*, seed: bool = True, **options: Any) -> ThrowawayPostgres:
        server = start_seeded_server(seed=seed, **options)
        made.append(server)
        return server

    try:
        yield make
    finally:
        for server in made:
            server.close()


def start_mariadb_server(*, seed_sql: str | None = None, **options: Any) -> ThrowawayMariaDB:
    """A started MariaDB server (options go to ThrowawayMariaDB); `seed_sql` runs in `app` as
    the app user (several statements allowed)."""
    server = ThrowawayMariaDB(**options)
    try:
        server.start()
        if seed_sql is not None:
            server.run_sql(seed_sql, server.app_database, as_root=False)
    except BaseException:
        server.close()
        raise
    return server


@pytest.fixture(scope="session")
def mariadb_server() -> Iterator[ThrowawayMariaDB]:
    """A session-wide MariaDB: empty database `app` owned by `app_owner` (clean up after yourself)."""
    server = start_mariadb_server()
    try:
        yield server
    finally:
        server.close()


@pytest.fixture
def fresh_mariadb_server() -> Iterator[ThrowawayMariaDB]:
    """A MariaDB of its own for one test (stop / start / restart / kill are fine)."""
    server = start_mariadb_server()
    try:
        yield server
    finally:
        server.close()
