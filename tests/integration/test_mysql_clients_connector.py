"""mysql-connector-python 26 through the MySQL listener: the pure-Python implementation and the
C extension (libmysqlclient), each compared with the same work done directly on MariaDB.

Prepared cursors (COM_STMT_PREPARE / EXECUTE / RESET / SEND_LONG_DATA / CLOSE, binary rows of
ints, decimals, dates, datetimes with fractions, times, NULLs, blobs and utf8mb4 text),
callproc with several result sets (stored_results()), caching_sha2_password and
mysql_native_password logins, a refused prepared statement (1227, the session and its open
transaction go on), and a server-side cursor read with COM_STMT_FETCH (pure only: the C
extension's API has no fetch). The scenarios are in mysql_connector_scenarios.py; the C
extension runs them in a fresh interpreter (see there why).
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest

from dbguard.devdb.mariadb import ThrowawayMariaDB
from tests.integration import mysql_connector_scenarios as scenarios
from tests.integration.harness import REPO_ROOT, ProxyProcess
from tests.integration.mysql_harness import WRITE_GUARD_RULES, serve_in_front_of

pytestmark = pytest.mark.integration



@pytest.fixture(scope="module")
def connector_proxy(mariadb_server: ThrowawayMariaDB) -> Iterator[ProxyProcess]:
    try:
        yield from serve_in_front_of(mariadb_server, WRITE_GUARD_RULES)
    finally:
        mariadb_server.run_sql("DROP TABLE IF EXISTS cl_bin, cl_ptx; DROP PROCEDURE IF EXISTS cl_multi", "app")


def _params(proxy: ProxyProcess, server: ThrowawayMariaDB) -> dict[str, Any]:
    direct = server.connect_kwargs()
    return {
        "via": {"host": proxy.host, "port": proxy.port, "user": "copilot", "password": proxy.secrets["copilot"],
                "database": "app"},
        "direct": {key: direct[key] for key in ("host", "port", "user", "password", "database")},
    }


def _run(name: str, use_pure: bool, proxy: ProxyProcess, server: ThrowawayMariaDB) -> None:
    params = _params(proxy, server)
    if use_pure:
        scenarios.SCENARIOS[name](params["via"], params["direct"], True)
        return
    result = subprocess.run(
        [sys.executable, "-m", "tests.integration.mysql_connector_scenarios", name,
         json.dumps({**params, "use_pure": False})],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stdout + result.stderr + proxy.log()[-3000:]


IMPLEMENTATIONS = [pytest.param(True, id="pure"), pytest.param(False, id="cext")]


@pytest.mark.parametrize("use_pure", IMPLEMENTATIONS)
def test_prepared_cursor_binary_rows(use_pure: bool, connector_proxy: ProxyProcess,
                                     mariadb_server: ThrowawayMariaDB) -> None:
    _run("prepared_binary_rows", use_pure, connector_proxy, mariadb_server)


@pytest.mark.parametrize("use_pure", IMPLEMENTATIONS)
def test_callproc_stored_results(use_pure: bool, connector_proxy: ProxyProcess,
                                 mariadb_server: ThrowawayMariaDB) -> None:
    _run("callproc_results", use_pure, connector_proxy, mariadb_server)


@pytest.mark.parametrize("use_pure", IMPLEMENTATIONS)
def test_caching_sha2_and_native_logins(use_pure: bool, connector_proxy: ProxyProcess,
                                        mariadb_server: ThrowawayMariaDB) -> None:
    _run("caching_sha2_login", use_pure, connector_proxy, mariadb_server)


@pytest.mark.parametrize("use_pure", IMPLEMENTATIONS)
def test_refused_prepared_statement(use_pure: bool, connector_proxy: ProxyProcess,
                                    mariadb_server: ThrowawayMariaDB) -> None:
    _run("refused_prepared", use_pure, connector_proxy, mariadb_server)


@pytest.mark.parametrize("use_pure", IMPLEMENTATIONS)
def test_session_commands(use_pure: bool, connector_proxy: ProxyProcess, mariadb_server: ThrowawayMariaDB) -> None:
    _run("session_commands", use_pure, connector_proxy, mariadb_server)


def test_server_side_cursor_with_stmt_fetch(connector_proxy: ProxyProcess, mariadb_server: ThrowawayMariaDB) -> None:
    _run("cursor_fetch", True, connector_proxy, mariadb_server)
