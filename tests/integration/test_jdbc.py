"""pgjdbc (the PostgreSQL JDBC driver) through the proxy prints what it prints directly.

tests/integration/jdbc/ProxyCheck.java is compiled at test time and run twice, through the
proxy and directly: a PreparedStatement executed more than prepareThreshold (5) times, so the
driver switches to named server-side statements; a batch insert; a transaction with a
savepoint and rollbacks; ResultSet metadata; many column types; a server error. Needs `javac`
and the driver jar (Debian package libpostgresql-jdbc-java, which CI installs).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from dbguard.devdb.postgres import ThrowawayPostgres
from tests.integration.harness import ProxyProcess

SOURCE = Path(__file__).resolve().parent / "jdbc" / "ProxyCheck.java"
DRIVER_JAR = Path(os.environ.get("DBGUARD_PGJDBC_JAR", "/usr/share/java/postgresql.jar"))
JAVA_TIMEOUT = 120


@pytest.fixture(scope="module")
def compiled(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The directory holding ProxyCheck.class. scripts/test installs Java and the driver, so
    their absence is a broken test environment: a failure, never a skip."""
    missing = [name for name in ("javac", "java") if shutil.which(name) is None]
    if missing:
        pytest.fail(f"{' and '.join(missing)} not installed (run scripts/ensure-server-binaries)")
    if not DRIVER_JAR.is_file():
        pytest.fail(f"the PostgreSQL JDBC driver {DRIVER_JAR} is missing "
                    "(run scripts/ensure-server-binaries, or set $DBGUARD_PGJDBC_JAR)")
    out = tmp_path_factory.mktemp("jdbc")
    result = subprocess.run(["javac", "-cp", str(DRIVER_JAR), "-d", str(out), str(SOURCE)],
                            capture_output=True, text=True, timeout=JAVA_TIMEOUT, check=False)
    assert result.returncode == 0, result.stderr
    return out


def run_check(classes: Path, port: int, user: str, password: str) -> tuple[int, str]:
    url = f"jdbc:postgresql://127.0.0.1:{port}/app"
    result = subprocess.run(
        ["java", "-Duser.timezone=UTC", "-Duser.language=en", "-Dfile.encoding=UTF-8",
         "-cp", f"{classes}{os.pathsep}{DRIVER_JAR}", "ProxyCheck", url, user, password],
        capture_output=True, text=True, timeout=JAVA_TIMEOUT, check=False,
        env={**os.environ, "LC_ALL": "C.UTF-8"},
    )
    return result.returncode, result.stdout + result.stderr


def test_jdbc_through_the_proxy_matches_direct(compiled: Path, proxy: ProxyProcess,
                                               pg_server: ThrowawayPostgres) -> None:
    through_proxy = run_check(compiled, proxy.port, "copilot", proxy.secrets["copilot"])
    direct = run_check(compiled, pg_server.port, pg_server.app_user, pg_server.app_password)
    assert direct[0] == 0, direct[1]
    assert through_proxy == direct
    output = through_proxy[1]
    assert "named server-side statements: 1\n" in output
    assert "12: 36 | " in output
    assert "batch statements: 250, rows: 250\n" in output
    assert "duplicate: 23505\n" in output
    assert "committed: 2,4\n" in output
    assert "total | total | numeric | 2 | 12 | 2 | 0 | orders | false | java.math.BigDecimal" in output
    assert "22012: ERROR: division by zero" in output
    assert "after error: 42\n" in output
    assert output.endswith("done\n")
