"""Runs `dbguard serve` as a real subprocess in front of a throwaway server, for tests.

Owns: writing a config for a test, picking a free port, starting the proxy process, waiting
until it accepts connections, DSNs for its identities, signals (SIGHUP reload, SIGTERM drain)
and its captured log. Tests and benchmarks use this rather than an in-process server so that
they exercise exactly what users run.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import quote, urlencode

import pytest

from dbguard.devdb.postgres import ThrowawayPostgres

REPO_ROOT = Path(__file__).resolve().parents[2]

DEFAULT_IDENTITIES: tuple[tuple[str, str, str, tuple[str, ...]], ...] = (
    # name, kind, secret, roles
    ("copilot", "agent", "copilot-secret", ("readers",)),
    ("alice", "human", "alice-secret", ("dba",)),
    ("migrator", "service", "migrator-secret", ("migrations",)),
)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for_port(host: str, port: int, timeout: float, proc: subprocess.Popen[bytes] | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with status {proc.returncode} before listening")
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listening on {host}:{port} after {timeout}s")


@dataclass
class ProxyProcess:
    """A running `dbguard serve`."""

    config_path: Path
    port: int
    proc: subprocess.Popen[bytes]
    log_path: Path
    secrets: dict[str, str] = field(default_factory=dict)
    host: str = "127.0.0.1"

    def dsn(self, identity: str = "copilot", *, secret: str | None = None, database: str = "app",
            **params: str) -> str:
        password = self.secrets.get(identity, "") if secret is None else secret
        url = f"postgresql://{quote(identity, safe='')}:{quote(password, safe='')}@{self.host}:{self.port}/{database}"
        if params:
            url += "?" + urlencode(params)
        return url

    def libpq_env(self, identity: str = "copilot", database: str = "app") -> dict[str, str]:
        """Environment for psql / pgbench to connect through the proxy."""
        env = dict(os.environ)
        env.update(PGHOST=self.host, PGPORT=str(self.port), PGUSER=identity,
                   PGPASSWORD=self.secrets.get(identity, ""), PGDATABASE=database)
        return env

    def log(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def send_signal(self, sig: int) -> None:
        self.proc.send_signal(sig)

    def reload(self) -> None:
        self.proc.send_signal(signal.SIGHUP)

    @property
    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self, timeout: float = 30.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        return int(self.proc.returncode)


def write_config(
    directory: Path,
    upstream_dsn: str,
    *,
    port: int,
    identities: Sequence[tuple[str, str, str, Sequence[str]]] = DEFAULT_IDENTITIES,
    listener_extra: Mapping[str, object] | None = None,
    extra_yaml: str = "",
    protocol: str = "postgres",
) -> Path:
    lines = [
        "listeners:",
        f"  - name: app-{'pg' if protocol == 'postgres' else protocol}",
        f"    protocol: {protocol}",
        f"    listen: 127.0.0.1:{port}",
        f"    upstream: {upstream_dsn}",
    ]
    for key, value in (listener_extra or {}).items():
        lines.append(f"    {key}: {value}")
    lines.append("identities:")
    for name, kind, secret, roles in identities:
        lines += [f"  - name: {name}", f"    kind: {kind}", f"    secret: {secret}",
                  f"    roles: [{', '.join(roles)}]"]
    path = directory / "dbguard.yaml"
    path.write_text("\n".join(lines) + "\n" + extra_yaml, encoding="utf-8")
    return path


def start_proxy(
    directory: Path,
    upstream_dsn: str,
    *,
    identities: Sequence[tuple[str, str, str, Sequence[str]]] = DEFAULT_IDENTITIES,
    listener_extra: Mapping[str, object] | None = None,
    extra_yaml: str = "",
    env: Mapping[str, str] | None = None,
    timeout: float = 20.0,
    log_level: str = "debug",
    protocol: str = "postgres",
) -> ProxyProcess:
    port = free_port()
    config = write_config(directory, upstream_dsn, port=port, identities=identities,
                          listener_extra=listener_extra, extra_yaml=extra_yaml, protocol=protocol)
    log_path = directory / "dbguard.log"
    with log_path.open("wb") as log_file:
        proc = subprocess.Popen(
            [sys.executable, "-m", "dbguard", "serve", "-c", str(config), "--log-level", log_level],
            cwd=REPO_ROOT, stdout=log_file, stderr=subprocess.STDOUT,
            env={**os.environ, **(env or {})},
        )
    proxy = ProxyProcess(config, port, proc, log_path, {name: secret for name, _, secret, _ in identities})
    try:
        wait_for_port("127.0.0.1", port, timeout, proc)
    except (RuntimeError, TimeoutError) as exc:
        proxy.stop()
        raise RuntimeError(f"dbguard serve did not start: {exc}\n{proxy.log()}") from exc
    return proxy


@pytest.fixture(scope="session")
def proxy(pg_server: ThrowawayPostgres) -> Iterator[ProxyProcess]:
    """One proxy for the whole session, in front of the shared `pg_server`, upstream as the
    non-superuser app owner (what a real deployment's service account looks like)."""
    with tempfile.TemporaryDirectory(prefix="dbguard-proxy-") as tmp:
        running = start_proxy(Path(tmp), pg_server.dsn(sslmode="disable"))
        try:
            yield running
        finally:
            running.stop()


class ProxyFactory(Protocol):
    """Starts a proxy in front of `upstream_dsn`; keyword arguments as for `start_proxy`."""

    def __call__(self, upstream_dsn: str, **kwargs: Any) -> ProxyProcess: ...


@pytest.fixture
def proxy_factory(tmp_path: Path) -> Iterator[ProxyFactory]:
    """Start extra proxies with their own config (stopped at the end of the test)."""
    started: list[ProxyProcess] = []

    def factory(upstream_dsn: str, **kwargs: Any) -> ProxyProcess:
        directory = tmp_path / f"proxy{len(started)}"
        directory.mkdir()
        running = start_proxy(directory, upstream_dsn, **kwargs)
        started.append(running)
        return running

    yield factory
    for running in started:
        running.stop()
