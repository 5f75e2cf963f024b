"""The leak tests' instruments: a TCP tap that keeps every byte the proxy sends to a client,
and the forms a leaked value could take in those bytes.

Owns: `Tap` (a relay between a client and the proxy, on a free local port) and
`leaked_forms(value)` (plain, upper, lower, reversed, base64, hex). Used by the masking
leak tests of both protocols.
"""

from __future__ import annotations

import base64
import contextlib
import socket
import threading


class Tap:
    """A TCP relay between a client and the proxy that keeps every byte sent to the client."""

    def __init__(self, target_port: int) -> None:
        self.received = bytearray()
        self._target = target_port
        self._server = socket.create_server(("127.0.0.1", 0))
        self.port = self._server.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._server.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self._target))
            threading.Thread(target=self._pipe, args=(client, upstream, False), daemon=True).start()
            threading.Thread(target=self._pipe, args=(upstream, client, True), daemon=True).start()

    def _pipe(self, source: socket.socket, sink: socket.socket, record: bool) -> None:
        try:
            while data := source.recv(65536):
                if record:
                    self.received += data
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for end in (source, sink):
                with contextlib.suppress(OSError):
                    end.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        self._server.close()


def leaked_forms(value: str) -> set[bytes]:
    """The byte forms of `value` a leak test looks for."""
    raw = value.encode()
    return {raw, raw.upper(), raw.lower(), raw[::-1], base64.b64encode(raw), raw.hex().encode(),
            raw.hex().upper().encode()}
