"""Tiny blocking helpers for tests that speak the PostgreSQL protocol over a raw socket."""

from __future__ import annotations

import socket
import struct


def recv_exact(sock: socket.socket, size: int) -> bytes:
    """Exactly `size` bytes, or ConnectionError if the peer closes first."""
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            raise ConnectionError("peer closed the connection")
        data += chunk
    return data


def read_message(sock: socket.socket) -> tuple[bytes, bytes]:
    """One typed message: (type byte, payload)."""
    header = recv_exact(sock, 5)
    (length,) = struct.unpack("!I", header[1:])
    return header[:1], recv_exact(sock, length - 4)
