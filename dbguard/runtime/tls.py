"""TLS contexts of the proxy, shared by both protocols' listeners.

Owns: building the `ssl.SSLContext` for the client side of a listener (the proxy is the TLS
server: the listener's `tls: {cert, key}`) and for the upstream side (the proxy is the TLS
client, per the DSN's sslmode).
Must not touch: sockets, transports, sessions. How a connection is upgraded is each listener's
business (`loop.start_tls` for PostgreSQL, `runtime.tls_memory` for MySQL).
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass

from dbguard.session.pg_actions import UpstreamTlsMode


@dataclass(frozen=True, slots=True)
class ClientTls:
    """A listener's TLS material towards clients: the context and its certificate (DER, for
    PostgreSQL's tls-server-end-point channel binding)."""

    context: ssl.SSLContext
    cert_der: bytes


def server_tls_context(cert_file: str, key_file: str) -> ClientTls:
    """TLS material for the client side of a listener (the proxy is the TLS server)."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(cert_file, key_file)
    with open(cert_file, encoding="ascii") as fh:
        pem = fh.read()
    first = pem[: pem.index("-----END CERTIFICATE-----") + len("-----END CERTIFICATE-----")]
    return ClientTls(context, ssl.PEM_cert_to_DER_cert(first))


def upstream_tls_context(mode: UpstreamTlsMode, root_cert: str | None) -> ssl.SSLContext:
    """The proxy as a TLS client of the upstream server, per sslmode."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if mode in (UpstreamTlsMode.VERIFY_CA, UpstreamTlsMode.VERIFY_FULL):
        if root_cert:
            context.load_verify_locations(root_cert)
        else:
            context.load_default_certs()
        context.verify_mode = ssl.CERT_REQUIRED
        context.check_hostname = mode is UpstreamTlsMode.VERIFY_FULL
    else:
        # sslmode prefer/require: encrypted, not authenticated (libpq's meaning).
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context
