"""TLS towards MySQL clients: `protocol: mysql` listeners with `tls:`, in front of a throwaway MariaDB.

One `dbguard serve` subprocess runs three mysql listeners with throwaway certificates: `tls`
(offered, not required), `tls-only` (`require: true`) and `wrong-name` (a certificate for
another host name). Covered: PyMySQL verifying the proxy's certificate and host name, logging in
over TLS with caching_sha2_password (fast path) and mysql_native_password, a wrong secret, an
untrusted CA and a wrong host name refused by the client; a plain client on an optional
listener; `require: true` refusing plain clients with ERR 3159 (PyMySQL and the mariadb CLI);
the mariadb CLI with --ssl-ca and --ssl-verify-server-cert; mysql-connector-python (pure and C
extension) with ssl_ca and identity verification; an SSLRequest and its ClientHello sent in one write (the case
`loop.start_tls` cannot handle); garbage instead of a ClientHello (that connection closes, the
proxy serves the next one); a multi-MiB result read slowly over TLS (backpressure through
the TLS layer); an unusable certificate file as a configuration error (exit 2); `tls:` added
on a reload (needs a restart: logged, the listener goes on as it was).

caching_sha2_password full authentication: dbguard keeps a verifier for every identity, so its
fast path never misses and no configuration makes it; the test runs the same listener code
in-process with `force_full_auth` (what a MySQL server does on a cache miss), over TLS (the
password in clear inside TLS) and without (the RSA key exchange).
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mysql.connector
import pymysql
import pymysql.connections
import pymysql.cursors
import pytest
from pymysql.constants import CLIENT

from dbguard.config import load_config
from dbguard.devdb.certs import CertPair, make_self_signed_cert
from dbguard.devdb.mariadb import ThrowawayMariaDB
from dbguard.policy.gate import MysqlPolicyGate, PolicyGate
from dbguard.runtime.mysql_listener import MysqlListener
from dbguard.runtime.server import build_mysql_identities, build_mysql_settings, load_rules
from dbguard.runtime.tls import server_tls_context
from dbguard.session.throttle import LoginThrottle
from dbguard.wire.mysql import auth
from dbguard.wire.mysql import messages as m
from dbguard.wire.mysql.packets import encode_packets
from tests.integration.harness import REPO_ROOT, ProxyProcess, free_port, wait_for_port
from tests.integration.mysql_harness import AnswersWithNative

pytestmark = pytest.mark.integration

C = m.Capability
IDENTITIES = (("copilot", "agent", "copilot-secret"), ("alice", "human", "alice-secret"))
RULES = """
defaults: {action: allow, on_parse_error: block}
rules:
  - id: no-drop
    description: nobody drops through the proxy
    when: {statement: [drop]}
    action: block
"""
ER_INSECURE_TRANSPORT = 3159


@dataclass
class TlsProxy:
    process: ProxyProcess
    certs: CertPair  # for 127.0.0.1 and localhost
    other_ca: CertPair  # a CA that signed nothing the proxy uses
    tls_port: int  # tls offered
    required_port: int  # tls: {require: true}
    wrong_name_port: int  # certificate for db.example only
    config_path: Path

    @property
    def host(self) -> str:
        return self.process.host

    def log(self) -> str:
        return self.process.log()


def _write_config(directory: Path, upstream_dsn: str, ports: tuple[int, int, int], certs: CertPair,
                  wrong_name: CertPair) -> Path:
    lines = ["listeners:"]
    for name, port, pair, require in (("tls", ports[0], certs, "false"), ("tls-only", ports[1], certs, "true"),
                                      ("wrong-name", ports[2], wrong_name, "false")):
        lines += [
            f"  - name: {name}",
            "    protocol: mysql",
            f"    listen: 127.0.0.1:{port}",
            f"    upstream: {upstream_dsn}",
            f"    tls: {{cert: {pair.cert_path}, key: {pair.key_path}, require: {require}}}",
        ]
    lines.append("identities:")
    for name, kind, secret in IDENTITIES:
        lines += [f"  - name: {name}", f"    kind: {kind}", f"    secret: {secret}"]
    lines.append("rules: rules.yaml")
    (directory / "rules.yaml").write_text(RULES, encoding="utf-8")
    path = directory / "dbguard.yaml"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def tls_proxy(mariadb_server: ThrowawayMariaDB) -> Iterator[TlsProxy]:
    with tempfile.TemporaryDirectory(prefix="dbguard-mysql-tls-") as tmp:
        directory = Path(tmp)
        certs = make_self_signed_cert(directory / "certs")
        wrong_name = make_self_signed_cert(directory / "wrong-name", common_name="db.example", hosts=("db.example",))
        other_ca = make_self_signed_cert(directory / "other")
        ports = (free_port(), free_port(), free_port())
        config = _write_config(directory, mariadb_server.dsn(), ports, certs, wrong_name)
        log_path = directory / "dbguard.log"
        with log_path.open("wb") as log_file:
            proc = subprocess.Popen(
                [sys.executable, "-m", "dbguard", "serve", "-c", str(config), "--log-level", "debug"],
                cwd=REPO_ROOT, stdout=log_file, stderr=subprocess.STDOUT, env=dict(os.environ))
        process = ProxyProcess(config, ports[0], proc, log_path, {name: secret for name, _, secret in IDENTITIES})
        try:
            for port in ports:
                wait_for_port("127.0.0.1", port, 20.0, proc)
        except (RuntimeError, TimeoutError) as exc:
            process.stop()
            raise RuntimeError(f"dbguard serve did not start: {exc}\n{process.log()}") from exc
        try:
            yield TlsProxy(process, certs, other_ca, *ports, config_path=config)
        finally:
            status = process.stop()
        assert status == 0, process.log()[-3000:]
        assert "Traceback" not in process.log(), process.log()[-5000:]


def _connect(proxy: TlsProxy, *, port: int | None = None, user: str = "copilot", password: str | None = None,
             ca: Path | None = None, host: str | None = None,
             cls: type[pymysql.connections.Connection[Any]] = pymysql.connections.Connection,
             **kwargs: Any) -> pymysql.connections.Connection[Any]:
    secret = {name: s for name, _, s in IDENTITIES}.get(user, "") if password is None else password
    if ca is not None:
        kwargs["ssl"] = {"ca": str(ca)}  # verifies the certificate and the host name
    else:
        kwargs.setdefault("ssl_disabled", True)  # PyMySQL would otherwise use TLS whenever offered
    return cls(host=host or proxy.host, port=port or proxy.tls_port, user=user, password=secret, database="app",
               connect_timeout=10, **kwargs)


def _server_capabilities(conn: pymysql.connections.Connection[Any]) -> int:
    return int(getattr(conn, "server_capabilities", 0))  # not in PyMySQL's type stubs


def _tls_version(conn: pymysql.connections.Connection[Any]) -> str | None:
    sock = getattr(conn, "_sock", None)
    return sock.version() if isinstance(sock, ssl.SSLSocket) else None


def _select_one(conn: pymysql.connections.Connection[Any]) -> Any:
    with conn.cursor() as cur:
        cur.execute("SELECT 1")
        return cur.fetchone()


def test_pymysql_over_tls_with_both_plugins(tls_proxy: TlsProxy) -> None:
    ca = tls_proxy.certs.ca_path
    for host in ("127.0.0.1", "localhost"):
        conn = _connect(tls_proxy, ca=ca, host=host)  # caching_sha2_password, fast path
        assert _tls_version(conn) in ("TLSv1.2", "TLSv1.3")
        assert _server_capabilities(conn) & CLIENT.SSL
        assert _select_one(conn) == (1,)
        with conn.cursor() as cur, pytest.raises(pymysql.err.MySQLError) as info:
            cur.execute("DROP TABLE nothing")
        assert info.value.args[0] == 1227  # the policy applies as without TLS
        assert _select_one(conn) == (1,)
        conn.close()
    native = _connect(tls_proxy, ca=ca, user="alice", cls=AnswersWithNative)
    assert _tls_version(native) is not None
    assert _select_one(native) == (1,)
    native.close()
    for cls in (pymysql.connections.Connection, AnswersWithNative):
        with pytest.raises(pymysql.err.OperationalError) as info:
            _connect(tls_proxy, ca=ca, password="wrong-secret", cls=cls)
        assert info.value.args[0] == 1045


def test_clients_refuse_an_untrusted_or_misnamed_certificate(tls_proxy: TlsProxy) -> None:
    with pytest.raises(pymysql.err.OperationalError) as info:
        _connect(tls_proxy, ca=tls_proxy.other_ca.ca_path)
    assert "CERTIFICATE_VERIFY_FAILED" in str(info.value) or "certificate verify failed" in str(info.value)
    with pytest.raises(pymysql.err.OperationalError) as info:
        _connect(tls_proxy, port=tls_proxy.wrong_name_port, ca=tls_proxy.certs.ca_path)
    assert "certificate" in str(info.value).lower()
    # The failed handshakes were logged and closed those connections only.
    deadline = time.monotonic() + 5
    while "session.tls_failed" not in tls_proxy.log() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert "session.tls_failed" in tls_proxy.log()
    conn = _connect(tls_proxy, ca=tls_proxy.certs.ca_path)
    assert _select_one(conn) == (1,)
    conn.close()


def test_plain_clients_on_a_listener_that_only_offers_tls(tls_proxy: TlsProxy) -> None:
    conn = _connect(tls_proxy)
    assert _server_capabilities(conn) & CLIENT.SSL
    assert _tls_version(conn) is None
    assert _select_one(conn) == (1,)
    conn.close()


def test_require_true_refuses_plain_clients(tls_proxy: TlsProxy, mariadb_server: ThrowawayMariaDB) -> None:
    with pytest.raises(pymysql.err.OperationalError) as info:
        _connect(tls_proxy, port=tls_proxy.required_port)
    assert info.value.args[0] == ER_INSECURE_TRANSPORT
    assert "insecure transport" in str(info.value.args[1])
    conn = _connect(tls_proxy, port=tls_proxy.required_port, ca=tls_proxy.certs.ca_path)
    assert _tls_version(conn) is not None
    assert _select_one(conn) == (1,)
    conn.close()
    cli = mariadb_server.client_binary("mariadb")
    result = subprocess.run(
        [str(cli), "--no-defaults", "--protocol=TCP", "-h", tls_proxy.host, "-P", str(tls_proxy.required_port),
         "-u", "copilot", "-pcopilot-secret", "--skip-ssl", "-N", "-B", "app", "-e", "SELECT 1"],
        capture_output=True, text=True, timeout=30, check=False)
    assert result.returncode != 0
    assert str(ER_INSECURE_TRANSPORT) in result.stderr, result.stderr


def _mariadb_cli(proxy: TlsProxy, mariadb_server: ThrowawayMariaDB, port: int, ca: Path,
                 *extra: str) -> subprocess.CompletedProcess[str]:
    cli = mariadb_server.client_binary("mariadb")
    return subprocess.run(
        [str(cli), "--no-defaults", "--protocol=TCP", "-h", proxy.host, "-P", str(port), "-u", "copilot",
         "-pcopilot-secret", "--ssl", f"--ssl-ca={ca}", "--ssl-verify-server-cert", *extra, "app"],
        capture_output=True, text=True, timeout=30, check=False)


def test_mariadb_cli_over_tls(tls_proxy: TlsProxy, mariadb_server: ThrowawayMariaDB) -> None:
    for port in (tls_proxy.tls_port, tls_proxy.required_port):
        result = _mariadb_cli(tls_proxy, mariadb_server, port, tls_proxy.certs.ca_path, "-e", "status")
        assert result.returncode == 0, result.stderr + tls_proxy.log()[-3000:]
        ssl_lines = [line for line in result.stdout.splitlines() if line.startswith("SSL:")]
        assert ssl_lines, result.stdout
        assert "Cipher in use is" in ssl_lines[0], result.stdout
        result = _mariadb_cli(tls_proxy, mariadb_server, port, tls_proxy.certs.ca_path, "-N", "-B", "-e",
                              "SELECT 1")
        assert result.returncode == 0, result.stderr
        assert result.stdout.strip() == "1"
    result = _mariadb_cli(tls_proxy, mariadb_server, tls_proxy.tls_port, tls_proxy.other_ca.ca_path, "-e",
                          "SELECT 1")
    assert result.returncode != 0
    result = _mariadb_cli(tls_proxy, mariadb_server, tls_proxy.wrong_name_port, tls_proxy.certs.ca_path, "-e",
                          "SELECT 1")
    assert result.returncode != 0


def test_mysql_connector_over_tls(tls_proxy: TlsProxy) -> None:
    def connect(port: int, ca: Path) -> Any:
        return mysql.connector.connect(
            host=tls_proxy.host, port=port, user="copilot", password="copilot-secret", database="app",
            ssl_ca=str(ca), ssl_verify_cert=True, ssl_verify_identity=True, use_pure=True, connection_timeout=10)

    for port in (tls_proxy.tls_port, tls_proxy.required_port):
        cnx = connect(port, tls_proxy.certs.ca_path)
        assert cnx.is_secure
        cur = cnx.cursor()
        cur.execute("SELECT 1, 'over tls'")
        assert cur.fetchall() == [(1, "over tls")]
        cur.close()
        cnx.close()
    with pytest.raises(mysql.connector.Error):
        connect(tls_proxy.tls_port, tls_proxy.other_ca.ca_path)
    with pytest.raises(mysql.connector.Error):
        connect(tls_proxy.wrong_name_port, tls_proxy.certs.ca_path)


# The C extension bundles its own OpenSSL and libmysqlclient; it only loads in an interpreter
# that has not loaded the system's OpenSSL yet (see mysql_connector_scenarios.py), so it runs in
# a fresh one.
_CEXT_SCRIPT = """
import importlib, sys
importlib.import_module("_mysql_connector")
import mysql.connector
host, port, ca = sys.argv[1], int(sys.argv[2]), sys.argv[3]
try:
    cnx = mysql.connector.connect(host=host, port=port, user="copilot", password="copilot-secret",
                                  database="app", ssl_ca=ca, ssl_verify_cert=True, ssl_verify_identity=True,
                                  use_pure=False, connection_timeout=10)
except mysql.connector.Error as exc:
    print("error", exc.errno)
    sys.exit(0)
cur = cnx.cursor()
cur.execute("SELECT 1, 'over tls'")
print(type(cnx).__name__, cur.fetchall())
cur.execute("SHOW SESSION STATUS LIKE 'Ssl_cipher'")  # the upstream's, not ours: just a second query
cur.fetchall()
cnx.close()
"""


def test_mysql_connector_c_extension_over_tls(tls_proxy: TlsProxy) -> None:
    def run(port: int, ca: Path) -> str:
        result = subprocess.run([sys.executable, "-c", _CEXT_SCRIPT, tls_proxy.host, str(port), str(ca)],
                                cwd=REPO_ROOT, capture_output=True, text=True, timeout=60, check=False)
        assert result.returncode == 0, result.stderr
        return result.stdout.strip()

    assert run(tls_proxy.required_port, tls_proxy.certs.ca_path) == "CMySQLConnection [(1, 'over tls')]"
    assert run(tls_proxy.tls_port, tls_proxy.other_ca.ca_path).startswith("error 2026")  # CR_SSL_CONNECTION_ERROR
    assert run(tls_proxy.wrong_name_port, tls_proxy.certs.ca_path).startswith("error 2026")


# ---------------------------------------------------------------------- raw clients


def _recv_exact(read: Callable[[int], bytes], n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = read(n - len(data))
        if not chunk:
            raise ConnectionError("connection closed")
        data += chunk
    return data


def _read_packet(read: Callable[[int], bytes]) -> tuple[int, bytes]:
    header = _recv_exact(read, 4)
    return header[3], _recv_exact(read, int.from_bytes(header[:3], "little"))


_RAW_CAPS = C.LONG_PASSWORD | C.PROTOCOL_41 | C.SECURE_CONNECTION | C.PLUGIN_AUTH | C.CONNECT_WITH_DB | \
    C.TRANSACTIONS | C.SSL


class _RawTlsClient:
    """A hand-driven MySQL client over a socket and an SSLObject: sends its SSLRequest and its
    ClientHello in one write, as real clients may, then logs in and queries."""

    def __init__(self, host: str, port: int, ca: Path) -> None:
        self.sock = socket.create_connection((host, port), timeout=10)
        self.incoming = ssl.MemoryBIO()
        self.outgoing = ssl.MemoryBIO()
        context = ssl.create_default_context(cafile=str(ca))
        self.tls = context.wrap_bio(self.incoming, self.outgoing, server_hostname=host)

    def plain_read(self, n: int) -> bytes:
        return self.sock.recv(n)

    def start(self) -> m.HandshakeV10:
        _, payload = _read_packet(self.plain_read)
        greeting = m.HandshakeV10.decode(payload)
        assert greeting.capabilities & C.SSL
        request = encode_packets(m.SSLRequest(_RAW_CAPS, 1 << 24, 45).encode(), 1)[0]
        with pytest.raises(ssl.SSLWantReadError):
            self.tls.do_handshake()
        self.sock.sendall(request + self.outgoing.read())  # SSLRequest + ClientHello together
        while True:
            try:
                self.tls.do_handshake()
                break
            except ssl.SSLWantReadError:
                self._flush()
                data = self.sock.recv(65536)
                if not data:
                    raise ConnectionError("closed during the handshake") from None
                self.incoming.write(data)
        self._flush()
        return greeting

    def _flush(self) -> None:
        if self.outgoing.pending:
            self.sock.sendall(self.outgoing.read())

    def send(self, data: bytes) -> None:
        self.tls.write(data)
        self._flush()

    def read(self, n: int) -> bytes:
        while True:
            try:
                return self.tls.read(n)
            except ssl.SSLWantReadError:
                data = self.sock.recv(65536)
                if not data:
                    return b""
                self.incoming.write(data)

    def close(self) -> None:
        self.sock.close()


def test_ssl_request_and_client_hello_in_one_write(tls_proxy: TlsProxy) -> None:
    client = _RawTlsClient("127.0.0.1", tls_proxy.tls_port, tls_proxy.certs.ca_path)
    try:
        greeting = client.start()
        login = m.HandshakeResponse41(
            capabilities=_RAW_CAPS, max_packet_size=1 << 24, character_set=45, username=b"copilot",
            auth_response=auth.scramble_native_password(b"copilot-secret", greeting.nonce), database=b"app",
            auth_plugin_name=auth.MYSQL_NATIVE_PASSWORD)
        client.send(encode_packets(login.encode(), 2)[0])
        seq, payload = _read_packet(client.read)
        assert (seq, m.is_ok(payload)) == (3, True), payload
        client.send(encode_packets(b"\x03SELECT 'tls' AS x", 0)[0])
        packets = [_read_packet(client.read)[1] for _ in range(5)]  # count, column, EOF, row, EOF
        assert packets[0] == b"\x01"
        assert packets[3] == b"\x03tls"
        assert m.is_eof(packets[4])
    finally:
        client.close()


def test_garbage_instead_of_a_client_hello(tls_proxy: TlsProxy) -> None:
    for garbage in (b"GET / HTTP/1.1\r\nHost: proxy\r\n\r\n", b"\x16\x03\x01\x00\x08\x01\x00\x00\x04" + b"\xff" * 4):
        with socket.create_connection(("127.0.0.1", tls_proxy.tls_port), timeout=10) as sock:
            _read_packet(sock.recv)
            request = encode_packets(m.SSLRequest(_RAW_CAPS, 1 << 24, 45).encode(), 1)[0]
            sock.sendall(request + garbage)
            received = b""
            while True:  # at most an alert, then the proxy closes the connection
                chunk = sock.recv(65536)
                if not chunk:
                    break
                received += chunk
            assert received[:1] in (b"", b"\x15")
    assert "session.tls_failed" in tls_proxy.log()
    conn = _connect(tls_proxy, ca=tls_proxy.certs.ca_path)
    assert _select_one(conn) == (1,)
    conn.close()


def test_large_result_over_tls_read_slowly(tls_proxy: TlsProxy) -> None:
    """About 24 MiB through the TLS layer: 20 MB of rows the client leaves unread for a while
    (more than the kernel's socket buffers hold: the proxy's write buffer fills and reading from
    the server pauses until the client catches up), and one 4 MiB value."""
    conn = _connect(tls_proxy, ca=tls_proxy.certs.ca_path, cursorclass=pymysql.cursors.SSCursor)
    with conn.cursor() as cur:
        cur.execute("SELECT seq, REPEAT(CHAR(65 + seq % 26 USING ascii), 2000) FROM seq_1_to_10000")
        time.sleep(1.0)
        count = 0
        for seq, text in cur.fetchall_unbuffered():
            assert text == chr(65 + seq % 26) * 2000
            count += 1
            if count % 2000 == 0:
                time.sleep(0.2)
        assert count == 10000
        cur.execute("SELECT REPEAT('x', 4 * 1024 * 1024), 'after'")
        row = cur.fetchone()
        assert row is not None
        assert row[0] == "x" * (4 * 1024 * 1024)
        assert row[1] == "after"
        assert cur.fetchone() is None
    assert _tls_version(conn) is not None
    conn.close()


# ---------------------------------------------------------------------- full authentication


@contextmanager
def _listener_in_process(config_path: Path, certs: CertPair | None) -> Iterator[MysqlListener]:
    """The first listener of `config_path`, as `dbguard serve` builds it, with caching_sha2
    full authentication forced, on an event loop in a thread."""
    config = load_config(config_path)
    cfg = config.listeners[0]
    gate = MysqlPolicyGate(PolicyGate(load_rules(config), "mysql"))
    settings = build_mysql_settings(cfg, build_mysql_identities(config.identities), gate,
                                    auth.RsaKeyPair.generate())
    settings = dataclasses.replace(settings, name="in-process", force_full_auth=True,
                                   tls_available=certs is not None, tls_required=False)
    client_tls = server_tls_context(str(certs.cert_path), str(certs.key_path)) if certs is not None else None
    loop = asyncio.new_event_loop()
    started = threading.Event()
    holder: list[MysqlListener] = []

    def run() -> None:
        asyncio.set_event_loop(loop)
        listener = MysqlListener(settings, "127.0.0.1", 0, throttle=LoginThrottle(), client_tls=client_tls)
        loop.run_until_complete(listener.start())
        holder.append(listener)
        started.set()
        loop.run_forever()
        loop.run_until_complete(listener.drain(5.0))

    thread = threading.Thread(target=run, name="mysql-listener", daemon=True)
    thread.start()
    try:
        assert started.wait(10), "the in-process listener did not start"
        yield holder[0]
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()


@pytest.mark.parametrize("with_tls", [True, False], ids=["tls-cleartext", "plain-rsa"])
def test_caching_sha2_full_authentication(tls_proxy: TlsProxy, with_tls: bool) -> None:
    certs = tls_proxy.certs if with_tls else None
    with _listener_in_process(tls_proxy.config_path, certs) as listener:
        ca = tls_proxy.certs.ca_path if with_tls else None
        conn = _connect(tls_proxy, port=listener.port, ca=ca)
        assert (_tls_version(conn) is not None) is with_tls
        assert _select_one(conn) == (1,)
        conn.close()
        for user, password in (("copilot", "wrong-secret"), ("nobody", "copilot-secret")):
            with pytest.raises(pymysql.err.OperationalError) as info:
                _connect(tls_proxy, port=listener.port, ca=ca, user=user, password=password)
            assert info.value.args[0] == 1045


def test_unusable_certificate_is_a_configuration_error(tmp_path: Path) -> None:
    (tmp_path / "proxy.pem").write_text("not a certificate\n", encoding="utf-8")
    (tmp_path / "proxy.key").write_text("not a key\n", encoding="utf-8")
    config = tmp_path / "dbguard.yaml"
    config.write_text(
        "listeners:\n  - name: app-mysql\n    protocol: mysql\n"
        f"    listen: 127.0.0.1:{free_port()}\n    upstream: mysql://u:p@127.0.0.1:3306/app\n"
        "    tls: {cert: proxy.pem, key: proxy.key, require: true}\n"
        "identities:\n  - name: copilot\n    kind: agent\n    secret: s\n", encoding="utf-8")
    result = subprocess.run([sys.executable, "-m", "dbguard", "serve", "-c", str(config)],
                            cwd=REPO_ROOT, capture_output=True, text=True, timeout=30, check=False)
    assert result.returncode == 2, result.stderr
    assert "dbguard.yaml:6: listeners[0].tls" in result.stderr
    assert "cannot use the certificate" in result.stderr


def test_adding_tls_on_reload_needs_a_restart(mariadb_server: ThrowawayMariaDB, tls_proxy: TlsProxy,
                                              tmp_path: Path) -> None:
    """The TLS context is made at start: a SIGHUP that adds `tls: {require: true}` to a plain
    listener is logged as needing a restart, and the listener goes on as it was (no SSL offered,
    nothing required) instead of offering what it cannot do."""
    port = free_port()
    config = tmp_path / "dbguard.yaml"
    base = (f"listeners:\n  - name: plain\n    protocol: mysql\n    listen: 127.0.0.1:{port}\n"
            f"    upstream: {mariadb_server.dsn()}\n")
    identities = "identities:\n  - name: copilot\n    kind: agent\n    secret: copilot-secret\n"
    config.write_text(base + identities, encoding="utf-8")
    log_path = tmp_path / "dbguard.log"
    with log_path.open("wb") as log_file:
        proc = subprocess.Popen([sys.executable, "-m", "dbguard", "serve", "-c", str(config)],
                                cwd=REPO_ROOT, stdout=log_file, stderr=subprocess.STDOUT, env=dict(os.environ))
    process = ProxyProcess(config, port, proc, log_path, {"copilot": "copilot-secret"})
    try:
        wait_for_port("127.0.0.1", port, 20.0, proc)
        # A served login means the event loop runs, so the SIGHUP handler is in place.
        conn = _connect(tls_proxy, port=port)
        assert _select_one(conn) == (1,)
        conn.close()
        certs = tls_proxy.certs
        config.write_text(base + f"    tls: {{cert: {certs.cert_path}, key: {certs.key_path}, require: true}}\n"
                          + identities, encoding="utf-8")
        process.reload()
        deadline = time.monotonic() + 10
        while "config.reloaded" not in process.log() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert "config.reload_needs_restart" in process.log(), process.log()[-3000:]
        assert "tls added or removed" in process.log()
        conn = _connect(tls_proxy, port=port)
        assert not _server_capabilities(conn) & CLIENT.SSL
        assert _select_one(conn) == (1,)
        conn.close()
    finally:
        status = process.stop()
    assert status == 0, process.log()[-3000:]
    assert "Traceback" not in process.log(), process.log()[-5000:]
