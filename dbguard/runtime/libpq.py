"""libpq connection parameters for dbguard's own side connections to a PostgreSQL upstream.

Owns: turning a listener's `UpstreamSettings` (credentials, TLS mode, TCP or Unix socket)
into psycopg/libpq keyword parameters, for the blast-radius preview and the masking catalog.
Must not: connect, or log anything (the parameters hold the password).
"""

from __future__ import annotations

import os
from typing import Any

from dbguard.session.pg_actions import UpstreamSettings, UpstreamTlsMode

__all__ = ["connection_params"]


def connection_params(upstream: UpstreamSettings, database: str, *, application: str,
                      connect_timeout: int, options: str | None = None) -> dict[str, Any]:
    """Keyword parameters for `psycopg.connect` (None values left out)."""
    params: dict[str, Any] = {
        "user": upstream.user or None,
        "password": upstream.password or None,
        "dbname": database or upstream.database or None,
        # libpq counts whole seconds, at least 2.
        "connect_timeout": str(max(2, connect_timeout)),
        "sslmode": upstream.tls_mode.value,
        "application_name": application,
        "client_encoding": "UTF8",
        "options": options,
    }
    if upstream.tls_mode in (UpstreamTlsMode.VERIFY_CA, UpstreamTlsMode.VERIFY_FULL):
        if upstream.root_cert:
            params["sslrootcert"] = upstream.root_cert
        elif upstream.tls_mode is UpstreamTlsMode.VERIFY_FULL:
            params["sslrootcert"] = "system"
    if upstream.unix_socket:  # the socket file: libpq wants its directory and port
        directory, name = os.path.split(upstream.unix_socket)
        port = name.rsplit(".", 1)[-1]
        params["host"], params["port"] = directory, port if port.isdigit() else str(upstream.port)
    else:
        params["host"], params["port"] = upstream.host, str(upstream.port)
    return {k: v for k, v in params.items() if v is not None}
