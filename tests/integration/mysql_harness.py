"""A real `dbguard serve` with one `protocol: mysql` listener, for the MySQL integration tests.

Owns: the identities and default rules of those tests, writing their config, running the proxy
in front of a throwaway MariaDB (stopped, with its exit status and log checked, at the end), and
a PyMySQL connection through it. Shared by test_mysql_proxy.py and test_mysql_clients*.py.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pymysql
import pymysql.connections

from dbguard.devdb.mariadb import ThrowawayMariaDB
from tests.integration.harness import REPO_ROOT, ProxyProcess, free_port, wait_for_port

IDENTITIES = (("copilot", "agent", "copilot-secret"), ("alice", "human", "alice-secret"))
RULES = """
defaults: {action: allow, on_parse_error: block}
rules:
  - id: no-drop
    description: nobody drops through the proxy
    when: {statement: [drop]}
    action: block
"""


def write_mysql_config(directory: Path, upstream_dsn: str, port: int, rules: str = RULES,
                       extra_yaml: str = "") -> Path:
    lines = [
        "listeners:",
        "  - name: app-mysql",
        "    protocol: mysql",
        f"    listen: 127.0.0.1:{port}",
        f"    upstream: {upstream_dsn}",
        "identities:",
    ]
    for name, kind, secret in IDENTITIES:
        lines += [f"  - name: {name}", f"    kind: {kind}", f"    secret: {secret}"]
    lines.append("rules: rules.yaml")
    (directory / "rules.yaml").write_text(rules, encoding="utf-8")
    path = directory / "dbguard.yaml"
    path.write_text("\n".join(lines) + "\n" + extra_yaml, encoding="utf-8")
    return path


def serve_in_front_of(mariadb_server: ThrowawayMariaDB, rules: str = RULES, *, extra_yaml: str = "",
                      clean_exit: bool = True) -> Iterator[ProxyProcess]:
    """Yields a running proxy in front of the server's `app` database (as its app user); on
    exit stops it and (`clean_exit`) checks it exited cleanly without a traceback in its log.
    `extra_yaml` is appended to its configuration (store:, journal:...)."""
    with tempfile.TemporaryDirectory(prefix="dbguard-mysql-proxy-") as tmp:
        directory = Path(tmp)
        port = free_port()
        config = write_mysql_config(directory, mariadb_server.dsn(), port, rules, extra_yaml)
        log_path = directory / "dbguard.log"
        with log_path.open("wb") as log_file:
            proc = subprocess.Popen(
                [sys.executable, "-m", "dbguard", "serve", "-c", str(config), "--log-level", "debug"],
                cwd=REPO_ROOT, stdout=log_file, stderr=subprocess.STDOUT, env=dict(os.environ))
        proxy = ProxyProcess(config, port, proc, log_path, {name: secret for name, _, secret in IDENTITIES})
        try:
            wait_for_port("127.0.0.1", port, 20.0, proc)
        except (RuntimeError, TimeoutError) as exc:
            proxy.stop()
            raise RuntimeError(f"dbguard serve did not start: {exc}\n{proxy.log()}") from exc
        try:
            yield proxy
        finally:
            status = proxy.stop()
        if not clean_exit:
            return
        assert status == 0, proxy.log()[-3000:]
        assert "Traceback" not in proxy.log(), proxy.log()[-5000:]


def connect(proxy: ProxyProcess, user: str = "copilot", password: str | None = None,
            **kwargs: Any) -> pymysql.connections.Connection[Any]:
    """PyMySQL through the proxy to `app`."""
    secret = proxy.secrets.get(user, "") if password is None else password
    return pymysql.connect(host=proxy.host, port=proxy.port, user=user, password=secret, database="app",
                           connect_timeout=10, **kwargs)


# Rules of the real-client tests: destructive statements and writes without WHERE are refused.
WRITE_GUARD_RULES = """
defaults: {action: allow, on_parse_error: block}
rules:
  - id: no-drop
    description: nobody drops or truncates through the proxy
    when: {statement: [drop, truncate]}
    action: block
  - id: no-unbounded-writes
    description: writes need a WHERE clause
    when: {statement: [delete, update], where: missing}
    action: block
"""


class AnswersWithNative(pymysql.connections.Connection):
    """PyMySQL answers the greeting with the plugin the server names; this one answers with
    `answer_plugin` instead (as a client whose default plugin differs would)."""

    answer_plugin = "mysql_native_password"

    def _get_server_information(self) -> None:
        # A private PyMySQL method the stubs do not declare: the one place its plugin is chosen.
        super()._get_server_information()  # type: ignore[misc]
        self._auth_plugin_name = self.answer_plugin


class AnswersWithSha256(AnswersWithNative):
    answer_plugin = "sha256_password"

