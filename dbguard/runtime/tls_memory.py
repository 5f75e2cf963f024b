"""TLS inside a connection, over memory buffers: the proxy's TLS server for MySQL clients.

Owns: one `ssl.SSLObject` over a pair of `ssl.MemoryBIO`s, and pumping bytes through it:
ciphertext read from the socket goes in (`receive`), plaintext for the session comes out,
and whatever TLS has to send back (handshake records, alerts, session tickets, close_notify)
is handed to the caller as bytes to write. The handshake, SSLWantReadError (more bytes
needed), the peer's close_notify and fatal errors (`TlsFailure`, carrying the alert to send)
are handled here.

Why not `loop.start_tls`: a MySQL client sends its SSLRequest and then, without waiting for
an answer, its ClientHello, so the start of the handshake may already have been read along
with the SSLRequest; start_tls cannot be given bytes that were read before it started.
Here they are simply the first bytes fed to `receive`.

Must not touch: sockets, transports, asyncio, the session, logging. The driver
(`runtime.mysql_listener`) decides what to do with the bytes and the failures.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass

# Plaintext is read out of the TLS object in pieces of at most this size.
READ_CHUNK = 256 * 1024


class TlsFailure(Exception):
    """The TLS connection cannot go on (a failed handshake, a corrupt record, a protocol error).
    `alert` holds what TLS wants the peer to know (usually a fatal alert): send it, then close."""

    def __init__(self, message: str, alert: bytes = b"") -> None:
        super().__init__(message)
        self.alert = alert


@dataclass(frozen=True, slots=True)
class TlsReceived:
    """What one `receive` produced."""

    plaintext: bytes  # decrypted application data, for the session
    outgoing: bytes  # TLS records to write to the peer now
    handshake_completed: bool  # the handshake finished during this call


class MemoryTls:
    """The server side of one TLS connection, driven with bytes (sans-IO)."""

    def __init__(self, context: ssl.SSLContext) -> None:
        self._incoming = ssl.MemoryBIO()
        self._outgoing = ssl.MemoryBIO()
        self._tls = context.wrap_bio(self._incoming, self._outgoing, server_side=True)
        self.handshake_complete = False
        self.peer_closed = False  # the peer sent close_notify
        self.failed = False
        self._closing = False  # our close_notify was produced
        # Plaintext accepted by `send` that TLS could not encrypt yet (it needed to read first).
        self._unsent = b""

    @property
    def version(self) -> str | None:
        """The negotiated protocol version (e.g. "TLSv1.3") once the handshake is done."""
        return self._tls.version()

    @property
    def cipher(self) -> str | None:
        cipher = self._tls.cipher()
        return cipher[0] if cipher else None

    def receive(self, data: bytes) -> TlsReceived:
        """Feed ciphertext from the peer; returns the plaintext it carried and the records to
        send back. Raises TlsFailure when the connection cannot go on."""
        if self.failed or self.peer_closed:
            return TlsReceived(b"", b"", False)
        if data:
            self._incoming.write(data)
        completed = False
        if not self.handshake_complete:
            try:
                self._tls.do_handshake()
            except ssl.SSLWantReadError:
                return TlsReceived(b"", self._drain(), False)
            except (ssl.SSLError, ValueError) as exc:
                raise self._failure("TLS handshake failed", exc) from exc
            self.handshake_complete = completed = True
        plaintext = self._read_all()
        if self._unsent and not self.peer_closed:
            pending, self._unsent = self._unsent, b""
            self._encrypt(pending)
        return TlsReceived(plaintext, self._drain(), completed)

    def send(self, data: bytes) -> bytes:
        """Encrypt plaintext for the peer; returns the records to write. Only after the handshake."""
        if not self.handshake_complete:
            raise TlsFailure("TLS data sent before the handshake completed")
        if self.failed or self._closing:
            return b""
        if self._unsent:
            self._unsent += data  # keep the order: the earlier bytes go first
        else:
            self._encrypt(data)
        return self._drain()

    def close(self) -> bytes:
        """Our close_notify, to send before closing the socket (b"" when TLS is not usable)."""
        if not self.handshake_complete or self.failed or self._closing:
            return b""
        self._closing = True
        try:
            self._tls.unwrap()
        except (ssl.SSLWantReadError, ssl.SSLWantWriteError):
            pass  # the peer's close_notify is not awaited: the socket closes next
        except (ssl.SSLError, ValueError, OSError):
            return b""
        return self._drain()

    # ------------------------------------------------------------------ internals

    def _encrypt(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            try:
                written = self._tls.write(view)
            except ssl.SSLWantReadError:
                # TLS needs the peer's bytes first (e.g. a key update in flight): keep the rest.
                self._unsent = bytes(view)
                return
            except (ssl.SSLError, ValueError) as exc:
                raise self._failure("TLS write failed", exc) from exc
            view = view[written:]

    def _read_all(self) -> bytes:
        chunks: list[bytes] = []
        while True:
            try:
                chunk = self._tls.read(READ_CHUNK)
            except ssl.SSLWantReadError:
                break
            except ssl.SSLZeroReturnError:
                self.peer_closed = True
                break
            except (ssl.SSLError, ValueError) as exc:
                raise self._failure("TLS record error", exc) from exc
            if not chunk:
                self.peer_closed = True
                break
            chunks.append(chunk)
        return b"".join(chunks)

    def _drain(self) -> bytes:
        return self._outgoing.read() if self._outgoing.pending else b""

    def _failure(self, what: str, exc: BaseException) -> TlsFailure:
        self.failed = True
        reason = str(exc) or type(exc).__name__  # e.g. "[SSL: HTTP_REQUEST] http request (_ssl.c:…)"
        return TlsFailure(f"{what}: {reason}", self._drain())
