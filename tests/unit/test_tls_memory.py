"""Unit tests for dbguard.runtime.tls_memory: the memory-BIO TLS server, driven with bytes.

A client `ssl.SSLObject` (verifying the throwaway CA and the host name) talks to `MemoryTls`
with no socket in between. Covers: the handshake with the ClientHello fed in pieces and glued
to bytes that came before it, application data both ways (a 3 MiB write comes out whole and in
order), both TLS versions, the peer's close_notify and ours, and garbage instead of a
ClientHello (TlsFailure carrying an alert, nothing more accepted afterwards).
"""

from __future__ import annotations

import ssl
from pathlib import Path

import pytest

from dbguard.devdb.certs import CertPair, make_self_signed_cert
from dbguard.runtime.tls import server_tls_context
from dbguard.runtime.tls_memory import MemoryTls, TlsFailure


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> CertPair:
    return make_self_signed_cert(Path(tmp_path_factory.mktemp("tls-memory")))


class _Client:
    """A TLS client over memory buffers, standing in for the MySQL client."""

    def __init__(self, certs: CertPair, *, maximum: ssl.TLSVersion = ssl.TLSVersion.MAXIMUM_SUPPORTED) -> None:
        context = ssl.create_default_context(cafile=str(certs.ca_path))
        context.maximum_version = maximum
        self.incoming = ssl.MemoryBIO()
        self.outgoing = ssl.MemoryBIO()
        self.tls = context.wrap_bio(self.incoming, self.outgoing, server_hostname="localhost")

    def handshake_step(self) -> bool:
        try:
            self.tls.do_handshake()
        except ssl.SSLWantReadError:
            return False
        return True

    def take(self) -> bytes:
        return self.outgoing.read()

    def read_all(self) -> bytes:
        chunks = []
        while True:
            try:
                chunk = self.tls.read(1 << 20)
            except ssl.SSLWantReadError:
                break
            if not chunk:
                break
            chunks.append(chunk)
        return b"".join(chunks)


def _server(certs: CertPair) -> MemoryTls:
    return MemoryTls(server_tls_context(str(certs.cert_path), str(certs.key_path)).context)


def _handshake(client: _Client, server: MemoryTls, *, split: bool = False) -> bytes:
    """Run the handshake; returns plaintext the server got along the way."""
    plaintext = b""
    done_client = client.handshake_step()
    for _ in range(10):
        data = client.take()
        pieces = [data[i:i + 7] for i in range(0, len(data), 7)] if split else [data]
        for piece in pieces:
            received = server.receive(piece)
            plaintext += received.plaintext
            client.incoming.write(received.outgoing)
        if not done_client:
            done_client = client.handshake_step()
        if done_client and server.handshake_complete:
            # The client's last flight (TLS 1.3 Finished) may still be on its way.
            rest = client.take()
            if rest:
                received = server.receive(rest)
                plaintext += received.plaintext
                client.incoming.write(received.outgoing)
            return plaintext
    raise AssertionError("handshake did not complete")


@pytest.mark.parametrize("maximum", [ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3])
def test_handshake_and_data_both_ways(certs: CertPair, maximum: ssl.TLSVersion) -> None:
    client = _Client(certs, maximum=maximum)
    server = _server(certs)
    assert _handshake(client, server, split=True) == b""
    assert server.handshake_complete
    assert server.version == ("TLSv1.2" if maximum is ssl.TLSVersion.TLSv1_2 else "TLSv1.3")

    client.tls.write(b"hello server")
    assert server.receive(client.take()).plaintext == b"hello server"

    big = bytes(range(256)) * (3 * 4096)  # 3 MiB: many records
    client.incoming.write(server.send(big))
    assert client.read_all() == big
    assert server.send(b"") == b""


def test_client_hello_glued_to_earlier_bytes_and_app_data(certs: CertPair) -> None:
    """What the driver sees from a MySQL client: the ClientHello fed in the same call as
    nothing else, then handshake and the first application data in one read."""
    client = _Client(certs, maximum=ssl.TLSVersion.TLSv1_3)
    server = _server(certs)
    assert not client.handshake_step()
    received = server.receive(client.take())
    assert not received.handshake_completed
    assert received.outgoing
    client.incoming.write(received.outgoing)
    assert client.handshake_step()
    client.tls.write(b"login packet")
    # The client's Finished and its first data arrive together.
    received = server.receive(client.take())
    assert received.handshake_completed
    assert received.plaintext == b"login packet"


def test_close_notify_both_ways(certs: CertPair) -> None:
    client = _Client(certs)
    server = _server(certs)
    _handshake(client, server)
    with pytest.raises(ssl.SSLWantReadError):
        client.tls.unwrap()
    received = server.receive(client.take())
    assert server.peer_closed
    assert received.plaintext == b""
    assert server.receive(b"anything").plaintext == b""  # ignored after close_notify

    client = _Client(certs)
    server = _server(certs)
    _handshake(client, server)
    notify = server.close()
    assert notify
    client.incoming.write(notify)
    assert client.tls.read(10) == b""  # the client saw close_notify
    assert server.close() == b""
    assert server.send(b"late") == b""


@pytest.mark.parametrize("garbage", [
    b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",  # OpenSSL answers no alert to HTTP
    b"\x16\x03\x01\x00\x08\x01\x00\x00\x04\xff\xff\xff\xff",  # a broken ClientHello
])
def test_garbage_instead_of_a_client_hello(certs: CertPair, garbage: bytes) -> None:
    server = _server(certs)
    with pytest.raises(TlsFailure) as info:
        server.receive(garbage)
    assert "handshake failed" in str(info.value)
    if not garbage.startswith(b"GET"):
        assert info.value.alert[:1] == b"\x15"  # a TLS alert record
    assert server.failed
    assert server.receive(b"more").plaintext == b""
    assert server.close() == b""


def test_untrusted_server_certificate_fails_on_both_sides(certs: CertPair, tmp_path: Path) -> None:
    other = make_self_signed_cert(tmp_path / "other")
    client = _Client(other)  # trusts another CA
    server = _server(certs)
    assert not client.handshake_step()
    client.incoming.write(server.receive(client.take()).outgoing)
    with pytest.raises(ssl.SSLCertVerificationError):
        client.handshake_step()
    with pytest.raises(TlsFailure):
        server.receive(client.take())


def test_send_before_the_handshake_is_refused(certs: CertPair) -> None:
    with pytest.raises(TlsFailure):
        _server(certs).send(b"too early")
