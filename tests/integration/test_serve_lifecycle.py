"""`dbguard serve` as an operator runs it: bad config, reload on SIGHUP, drain on SIGTERM.

Covers: a configuration error exits 2 naming file, line and key; SIGHUP adds a new identity
without dropping live sessions, and a broken file on SIGHUP keeps the old configuration in
force; SIGTERM stops accepting, lets a running statement finish, closes idle sessions with
57P01, and the process exits 0; `idle_timeout` closes idle sessions (57P05) but never a
running statement.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import psycopg
import pytest

from dbguard.devdb.postgres import ThrowawayPostgres
from tests.integration.harness import REPO_ROOT, ProxyFactory


def test_config_error_exits_2_naming_file_line_and_key(tmp_path: Path) -> None:
    config = tmp_path / "dbguard.yaml"
    config.write_text(
        "listeners:\n"
        "  - name: app-pg\n"
        "    protocol: postgres\n"
        "    listen: 127.0.0.1\n"
        "    upstream: postgresql://u:p@127.0.0.1:5/app\n",
        encoding="utf-8",
    )
    result = subprocess.run([sys.executable, "-m", "dbguard", "serve", "-c", str(config)],
                            cwd=REPO_ROOT, capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 2
    assert f"{config}:4: listeners[0].listen" in result.stderr


def test_missing_config_exits_2(tmp_path: Path) -> None:
    result = subprocess.run([sys.executable, "-m", "dbguard", "serve", "-c", str(tmp_path / "nope.yaml")],
                            cwd=REPO_ROOT, capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 2
    assert "nope.yaml" in result.stderr


def _wait_for(predicate: Callable[[], bool], timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.1)
    return False


def test_sighup_reloads_identities_without_dropping_sessions(pg_server: ThrowawayPostgres,
                                                             proxy_factory: ProxyFactory) -> None:
    proxy = proxy_factory(pg_server.dsn(sslmode="disable"))
    live = psycopg.connect(proxy.dsn("copilot"), autocommit=True)
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(proxy.dsn("bob", secret="bob-secret"))
    text = proxy.config_path.read_text(encoding="utf-8")
    proxy.config_path.write_text(text.replace(
        "identities:\n", "identities:\n  - name: bob\n    kind: human\n    secret: bob-secret\n    roles: []\n"),
        encoding="utf-8")
    proxy.reload()
    assert _wait_for(lambda: "config.reloaded" in proxy.log())
    with psycopg.connect(proxy.dsn("bob", secret="bob-secret")) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)
    assert live.execute("SELECT 2").fetchone() == (2,)  # the old session was not dropped

    # A broken file keeps the configuration in force and says why.
    proxy.config_path.write_text("listeners: [", encoding="utf-8")
    proxy.reload()
    assert _wait_for(lambda: "config.reload_failed" in proxy.log())
    with psycopg.connect(proxy.dsn("bob", secret="bob-secret")) as conn:
        assert conn.execute("SELECT 3").fetchone() == (3,)
    assert live.execute("SELECT 4").fetchone() == (4,)
    live.close()
    assert proxy.alive


def test_sigterm_drains(pg_server: ThrowawayPostgres, proxy_factory: ProxyFactory) -> None:
    proxy = proxy_factory(pg_server.dsn(sslmode="disable"))
    idle = psycopg.connect(proxy.dsn("copilot"), autocommit=True)
    busy = psycopg.connect(proxy.dsn("copilot"), autocommit=True)
    result: list[object] = []

    def run_statement() -> None:
        try:
            result.append(busy.execute("SELECT pg_sleep(1.5), 'finished'").fetchone())
        except psycopg.Error as exc:
            result.append(exc)

    worker = threading.Thread(target=run_statement)
    worker.start()
    time.sleep(0.5)
    proxy.send_signal(signal.SIGTERM)
    time.sleep(0.3)
    # No new connections once draining started.
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(proxy.dsn("copilot"), connect_timeout=3)
    worker.join(10)
    assert result == [("", "finished")]  # the running statement completed
    with pytest.raises(psycopg.OperationalError) as info:
        idle.execute("SELECT 1")
    assert "terminating connection due to administrator command" in str(info.value)
    assert proxy.proc.wait(10) == 0
    idle.close()
    busy.close()


def test_idle_timeout_closes_idle_sessions_only(pg_server: ThrowawayPostgres, proxy_factory: ProxyFactory) -> None:
    proxy = proxy_factory(pg_server.dsn(sslmode="disable"), listener_extra={"idle_timeout": "1s"})
    conn = psycopg.connect(proxy.dsn("copilot"), autocommit=True)
    # A statement running longer than the idle timeout is not idleness.
    assert conn.execute("SELECT pg_sleep(1.6), 'done'").fetchone() == ("", "done")
    time.sleep(0.5)
    assert conn.execute("SELECT 1").fetchone() == (1,)  # activity restarted the clock
    time.sleep(1.8)
    with pytest.raises(psycopg.OperationalError) as info:
        conn.execute("SELECT 1")
    assert "idle-session timeout" in str(info.value)
    conn.close()


def test_an_empty_rules_folder_refuses_to_start(tmp_path: Path, pg_server: ThrowawayPostgres) -> None:
    """Fail closed: a `rules:` that names no rule file is a mistake, not an allow-all policy."""
    (tmp_path / "rules").mkdir()
    config = tmp_path / "dbguard.yaml"
    config.write_text(
        "listeners:\n"
        "  - name: app-pg\n"
        "    protocol: postgres\n"
        "    listen: 127.0.0.1:0\n"
        f"    upstream: {pg_server.dsn(sslmode='disable')}\n"
        "rules: rules/\n",
        encoding="utf-8",
    )
    result = subprocess.run([sys.executable, "-m", "dbguard", "serve", "-c", str(config)],
                            cwd=REPO_ROOT, capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 2
    assert f"{tmp_path / 'rules'}: no *.yaml rule files in this folder" in result.stderr


def test_reload_adding_rules_puts_them_in_force(pg_server: ThrowawayPostgres, proxy_factory: ProxyFactory) -> None:
    proxy = proxy_factory(pg_server.dsn(sslmode="disable"), extra_yaml="admin: {listen: 127.0.0.1:1, token: t}\n")
    assert "config.not_yet_active" in proxy.log()  # admin is accepted, and said to be inactive
    rules = proxy.config_path.parent / "rules"
    rules.mkdir()
    with proxy.config_path.open("a", encoding="utf-8") as fh:
        fh.write("rules: rules/\n")
    proxy.reload()  # an empty folder: refused, the running config stays
    assert _wait_for(lambda: "config.reload_failed" in proxy.log())
    with psycopg.connect(proxy.dsn("copilot"), autocommit=True) as conn:
        assert conn.execute("SELECT count(*) FROM products").fetchone() == (20,)
        (rules / "no-products.yaml").write_text(
            "rules:\n  - id: no-products\n    when: {reads: [public.products]}\n    action: block\n",
            encoding="utf-8")
        proxy.reload()
        assert _wait_for(lambda: "config.reloaded" in proxy.log())
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("SELECT count(*) FROM products")
    assert proxy.alive
