"""asyncio driver for MySQL/MariaDB listeners: sockets, client and upstream TLS, backpressure, timeouts.

Owns: accepting client connections, opening upstream connections, executing the actions a
`session.mysql.MysqlSession` returns (a statement held for approval waits in the connection's
`runtime.holding.HoldRunner`), and the bookkeeping of live connections for draining.
Must not contain protocol logic: every decision about bytes is the session's.

TLS towards clients (listener `tls:`): the session announces CLIENT_SSL and, on an SSLRequest,
asks for `MysqlStartClientTls` with the bytes that came after it. The client does not wait for
an answer before its ClientHello, so TLS is terminated inside the connection over memory
buffers (`runtime.tls_memory.MemoryTls`): every byte read from the client then goes through
it, every byte for the client is encrypted by it. A failed handshake closes that connection
only (logged as `session.tls_failed`). Upstream TLS follows the DSN's sslmode (`loop.start_tls`).

Backpressure as in `runtime.pg_listener`: when one side's write buffer passes its high-water
mark, reading from the other side pauses until it drains.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import ssl
from collections.abc import Coroutine, Sequence
from typing import Any, cast

from dbguard.runtime.approval_link import ApprovalLink
from dbguard.runtime.holding import HoldRunner
from dbguard.runtime.journal_link import JOURNAL_REFUSAL, EventSink, WriteAheadGate
from dbguard.runtime.pg_listener import (
    IDLE_CHECKS,
    STARTUP_TIMEOUT,
    TLS_HANDSHAKE_TIMEOUT,
    UPSTREAM_CONNECT_TIMEOUT,
    WRITE_HIGH_WATER,
    WRITE_LOW_WATER,
)
from dbguard.runtime.tls import ClientTls, upstream_tls_context
from dbguard.runtime.tls_memory import MemoryTls, TlsFailure
from dbguard.session.holds import HoldResolved, HoldStatement
from dbguard.session.journal import SessionJournal
from dbguard.session.mysql import MysqlSession, Phase
from dbguard.session.mysql_actions import MysqlListenerSettings, MysqlSessionAction, MysqlStartClientTls
from dbguard.session.pg_actions import (
    Close,
    ConnectUpstream,
    SendClient,
    SendUpstream,
    Sleep,
    StartUpstreamTls,
    UpstreamTlsMode,
)
from dbguard.session.throttle import LoginThrottle
from dbguard.wire.mysql import messages as m
from dbguard.wire.mysql.packets import ProtocolViolation, encode_packets

log = logging.getLogger("dbguard.runtime")

ER_CON_COUNT_ERROR = 1040  # "Too many connections" (08004)
VERSION_PROBE_TIMEOUT = 2.0  # seconds for reading the upstream's greeting at listener start


class _UpstreamProtocol(asyncio.Protocol):
    def __init__(self, conn: MysqlConnection) -> None:
        self.conn = conn

    def data_received(self, data: bytes) -> None:
        conn = self.conn
        conn.reads += 1
        if conn.upstream_held is not None:
            # The server speaks first: its greeting can arrive before `create_connection`
            # returns; the session hears of it once it knows the connection is up.
            conn.upstream_held.append(data)
            return
        session = conn.session
        if session.upstream_fast(data):  # whole packets of an ordinary result: as they came
            if session.journal is not None and session.journal.has_events:
                conn.write_ahead.submit()  # outcomes, in the segment before the client sees them
            conn.write_client(data)
            return
        conn.execute(conn.session.upstream_data(data))
        if not conn.version_learned and conn.session.upstream_version is not None:
            conn.version_learned = True
            conn.listener.learn_server_version(conn.session.upstream_version)

    def connection_lost(self, exc: Exception | None) -> None:
        self.conn.on_upstream_lost()

    def pause_writing(self) -> None:
        self.conn.pause_client_reading()

    def resume_writing(self) -> None:
        self.conn.resume_client_reading()


class MysqlConnection(asyncio.Protocol):
    """One accepted client connection and its upstream: the asyncio side of a MysqlSession."""

    def __init__(self, listener: MysqlListener) -> None:
        self.listener = listener
        self.loop = asyncio.get_running_loop()
        self.session: MysqlSession
        self.client: asyncio.Transport | None = None
        self.upstream: asyncio.Transport | None = None
        self._upstream_protocol = _UpstreamProtocol(self)
        self._closed = False
        self._upstream_paused = False
        self._startup_timer: asyncio.TimerHandle | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._upstream_tls_in_progress = False
        self.upstream_held: list[bytes] | None = []
        self.version_learned = False
        self._idle_timer: asyncio.TimerHandle | None = None
        self._tls: MemoryTls | None = None  # client TLS, once the client asked for it
        self._tls_timer: asyncio.TimerHandle | None = None
        self.reads = 0
        self._reads_seen = 0
        self._idle_ticks = 0
        self._client_paused = False  # by upstream backpressure
        # Write-ahead (docs/journal.md): upstream bytes wait in the gate while the journal
        # events they depend on are made durable.
        self.write_ahead = WriteAheadGate(self, listener.journal_link)
        # Statements held for approval wait here, off the loop's hot path (runtime.holding).
        self.holds = HoldRunner(self, listener.approvals)

    # ---------------------------------------------------------------- client transport events

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.client = cast(asyncio.Transport, transport)  # uvloop's transports do not subclass it
        self.client.set_write_buffer_limits(WRITE_HIGH_WATER, WRITE_LOW_WATER)
        peer = transport.get_extra_info("peername")
        host = str(peer[0]) if isinstance(peer, tuple) else str(peer or "local")
        address = f"{host}:{peer[1]}" if isinstance(peer, tuple) else host
        self.session = MysqlSession(self.listener.settings, client_address=address, client_host=host,
                                    throttle=self.listener.throttle, kills=self.listener)
        self.listener.connections.add(self)
        if len(self.listener.connections) > self.listener.max_connections:
            # As a server does: an ERR instead of the greeting.
            error = m.err(ER_CON_COUNT_ERROR, "08004", "dbguard: too many connections").encode()
            self.execute([SendClient(encode_packets(error, 0)[0]), Close("too many clients")])
            return
        self._startup_timer = self.loop.call_later(STARTUP_TIMEOUT, self._startup_timed_out)
        self._arm_idle_clock()
        self.execute(self.session.start())

    def data_received(self, data: bytes) -> None:
        self.reads += 1
        if self._closed:
            return
        if self._tls is not None:
            self._tls_received(data)
        else:
            self._client_plaintext(data)

    def _client_plaintext(self, data: bytes) -> None:
        """The client's bytes (decrypted): the session's hot path first, else its general path."""
        session = self.session
        if session.client_fast(data):  # one allowed command, forwarded as it came
            if session.journal is not None and session.journal.has_events:
                self.write_ahead.submit()
            if self.write_ahead.waits:
                self.write_ahead.hold(data)
                return
            upstream = self.upstream
            if upstream is not None and not upstream.is_closing():
                upstream.write(data)
        else:
            self.execute(session.client_data(data))

    def eof_received(self) -> bool | None:
        """The client sent FIN: it will send nothing more, and no client of this protocol
        half-closes to wait for an answer. The session ends now: the upstream connection is
        closed (the server stops the statement) and what is still queued for the client is
        dropped instead of waiting, with the upstream held, for a reader that may never come."""
        if not self._closed:
            self.execute(self.session.client_closed())
        if self.client is not None:
            self.client.abort()
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        if not self._closed:
            self.execute(self.session.client_closed())
        self._finish()

    def pause_writing(self) -> None:
        self._upstream_paused = True
        if self.upstream is not None:
            self.upstream.pause_reading()

    def resume_writing(self) -> None:
        self._upstream_paused = False
        if self.upstream is not None:
            self.upstream.resume_reading()

    # ---------------------------------------------------------------- client TLS

    def _start_client_tls(self, initial: bytes) -> None:
        tls = self.listener.client_tls
        if tls is None:
            # The session only accepts an SSLRequest when the greeting offered TLS.
            self._close("client TLS is not available on this listener")
            return
        self._tls = MemoryTls(tls.context)
        self._tls_timer = self.loop.call_later(TLS_HANDSHAKE_TIMEOUT, self._tls_timed_out)
        if initial:
            self._tls_received(initial)

    def _tls_received(self, data: bytes) -> None:
        """Ciphertext from the client: through the TLS layer, plaintext on to the session."""
        tls = self._tls
        assert tls is not None
        try:
            received = tls.receive(data)
        except TlsFailure as exc:
            self._tls_failed(exc)
            return
        if received.outgoing:
            self._write_client_raw(received.outgoing)
        if received.handshake_completed:
            if self._tls_timer is not None:
                self._tls_timer.cancel()
                self._tls_timer = None
            log.debug("session.tls_started", extra={"client": self.session.client_address,
                                                    "version": tls.version, "cipher": tls.cipher})
            self.execute(self.session.client_tls_started())
        if received.plaintext and not self._closed:
            self._client_plaintext(received.plaintext)
        if tls.peer_closed and not self._closed:
            self.execute(self.session.client_closed())

    def _tls_failed(self, exc: TlsFailure) -> None:
        log.info("session.tls_failed", extra={"client": self.session.client_address, "error": str(exc)})
        if exc.alert:
            self._write_client_raw(exc.alert)
        self._close("client TLS failed")

    def _tls_timed_out(self) -> None:
        self._tls_timer = None
        if self._tls is not None and not self._tls.handshake_complete and not self._closed:
            log.info("session.tls_failed", extra={"client": self.session.client_address,
                                                  "error": "TLS handshake timed out"})
            self._close("client TLS handshake timed out")

    def write_client(self, data: bytes) -> None:
        """Bytes for the client (encrypted when the client asked for TLS); none once closed."""
        if self._closed:
            return
        tls = self._tls
        if tls is not None:
            try:
                data = tls.send(data)
            except TlsFailure as exc:
                self._tls_failed(exc)
                return
        self._write_client_raw(data)

    def _write_client_raw(self, data: bytes) -> None:
        if data and self.client is not None and not self.client.is_closing():
            self.client.write(data)

    # ---------------------------------------------------------------- upstream events

    def on_upstream_lost(self) -> None:
        if self._upstream_tls_in_progress:
            return  # the failed handshake reports itself, with its cause
        if not self._closed:
            self.execute(self.session.upstream_closed())

    def pause_client_reading(self) -> None:
        self._client_paused = True
        if self.client is not None:
            self.client.pause_reading()

    def resume_client_reading(self) -> None:
        self._client_paused = False
        if self.client is not None:
            self.client.resume_reading()

    # ---------------------------------------------------------------- the journal (write-ahead)

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def refuses_unjournaled(self) -> bool:
        return self.listener.settings.refuse_unjournaled

    def release_upstream(self, data: bytes) -> None:
        if self.upstream is not None and not self.upstream.is_closing():
            self.upstream.write(data)

    def pause_client_for_journal(self) -> None:
        if self.client is not None:
            self.client.pause_reading()

    def resume_client_after_journal(self) -> None:
        if not self._client_paused and self.client is not None:
            self.client.resume_reading()

    def refuse_unjournaled(self) -> None:
        self.execute(self.session.journal_refused(JOURNAL_REFUSAL))

    # ---------------------------------------------------------------- approvals (runtime.holding)

    def hold_requested(self, approval_id: str) -> None:
        self.execute(self.session.hold_requested(approval_id))  # MySQL has no notice: nothing to send

    def hold_resolved(self, resolution: HoldResolved) -> None:
        self.execute(self.session.hold_resolved(resolution))

    # ---------------------------------------------------------------- timers

    def _arm_idle_clock(self) -> None:
        """Check for idleness (listener `idle_timeout`, 0 = off), as `PgConnection` does."""
        timeout = self.listener.idle_timeout
        if timeout > 0 and self._idle_timer is None and not self._closed:
            self._idle_ticks = 0
            self._reads_seen = self.reads
            self._idle_timer = self.loop.call_later(timeout / IDLE_CHECKS, self._idle_check)

    def _idle_check(self) -> None:
        self._idle_timer = None
        timeout = self.listener.idle_timeout
        if self._closed or timeout <= 0:
            return
        if self.reads != self._reads_seen or self.session.busy or self.session.phase is not Phase.READY:
            self._reads_seen = self.reads
            self._idle_ticks = 0
        else:
            self._idle_ticks += 1
        if self._idle_ticks < IDLE_CHECKS:
            self._idle_timer = self.loop.call_later(timeout / IDLE_CHECKS, self._idle_check)
            return
        log.info("session.idle_timeout", extra={"session": self.session.session_id})
        self._close("idle timeout")  # as MariaDB's wait_timeout: the connection just closes

    def _startup_timed_out(self) -> None:
        self._startup_timer = None
        if self.session.phase is not Phase.READY and not self._closed:
            log.info("session.startup_timeout", extra={"client": self.session.client_address})
            self._close("startup timeout")

    # ---------------------------------------------------------------- executing actions

    def execute(self, actions: Sequence[MysqlSessionAction]) -> None:
        journal = self.session.journal
        if journal is not None and journal.has_events:
            self.write_ahead.submit()
        for index, action in enumerate(actions):
            if self._closed:
                return
            if isinstance(action, SendClient):
                self.write_client(action.data)
            elif isinstance(action, SendUpstream):
                if self.write_ahead.waits:
                    self.write_ahead.hold(action.data)
                elif self.upstream is not None and not self.upstream.is_closing():
                    self.upstream.write(action.data)
            elif isinstance(action, Close):
                self._close(action.reason)
                return
            elif isinstance(action, Sleep):
                rest = list(actions[index + 1 :])
                self.loop.call_later(action.seconds, self._resume, rest)
                return
            elif isinstance(action, MysqlStartClientTls):
                self._start_client_tls(action.initial)
            elif isinstance(action, ConnectUpstream):
                self._spawn(self._connect_upstream(action), list(actions[index + 1 :]))
                return
            elif isinstance(action, StartUpstreamTls):
                if self.upstream is not None:
                    self.upstream.pause_reading()
                self._spawn(self._start_upstream_tls(action), list(actions[index + 1 :]))
                return
            elif isinstance(action, HoldStatement):
                assert self.session.info is not None
                self.holds.start(self.session.info, action.held, self.listener.settings.upstream)
        if self._startup_timer is not None and self.session.phase is Phase.READY:
            self._startup_timer.cancel()
            self._startup_timer = None

    def _resume(self, actions: list[MysqlSessionAction]) -> None:
        if not self._closed:
            self.execute(actions)

    def _spawn(self, coro: Coroutine[Any, Any, None], then: list[MysqlSessionAction]) -> None:
        async def run() -> None:
            await coro
            if then and not self._closed:
                self.execute(then)

        task = self.loop.create_task(run())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _connect_upstream(self, target: ConnectUpstream) -> None:
        try:
            if target.unix_socket:
                connect = self.loop.create_unix_connection(lambda: self._upstream_protocol, target.unix_socket)
            else:
                connect = self.loop.create_connection(lambda: self._upstream_protocol, target.host, target.port)
            transport, _ = await asyncio.wait_for(connect, UPSTREAM_CONNECT_TIMEOUT)
        except (OSError, TimeoutError) as exc:
            if not self._closed:
                self.execute(self.session.upstream_failed(_describe(exc)))
            return
        if self._closed:
            transport.close()
            return
        self.upstream = transport
        self.upstream.set_write_buffer_limits(WRITE_HIGH_WATER, WRITE_LOW_WATER)
        if self._upstream_paused:
            self.upstream.pause_reading()
        self.execute(self.session.upstream_connected())
        held, self.upstream_held = self.upstream_held or [], None
        if held and not self._closed:
            self.execute(self.session.upstream_data(b"".join(held)))

    async def _start_upstream_tls(self, action: StartUpstreamTls) -> None:
        assert self.upstream is not None
        self._upstream_tls_in_progress = True
        try:
            context = upstream_tls_context(action.mode, action.root_cert)
            hostname = action.server_hostname if action.mode is UpstreamTlsMode.VERIFY_FULL else None
            transport = await asyncio.wait_for(
                self.loop.start_tls(self.upstream, self._upstream_protocol, context, server_hostname=hostname),
                TLS_HANDSHAKE_TIMEOUT,
            )
        except (OSError, ssl.SSLError, TimeoutError, ConnectionError) as exc:
            self._upstream_tls_in_progress = False
            if not self._closed:
                self.execute(self.session.upstream_failed(f"TLS handshake failed: {_describe(exc)}"))
            return
        self._upstream_tls_in_progress = False
        if transport is None:
            self.execute(self.session.upstream_failed("TLS handshake failed"))
            return
        self.upstream = transport
        if self._closed:
            transport.close()
            return
        self.execute(self.session.upstream_tls_started())

    # ---------------------------------------------------------------- closing

    def _close(self, reason: str) -> None:
        if self._closed:
            return
        self._closed = True
        if self.session.close_reason is None:
            self.session.close_reason = reason
        # Transport.close() flushes what is buffered before closing.
        if self.client is not None:
            if self._tls is not None:
                self._write_client_raw(self._tls.close())
            self.client.close()
        if self.upstream is not None:
            self.upstream.close()
        self._finish()

    def _finish(self) -> None:
        self._closed = True
        if self._idle_timer is not None:
            self._idle_timer.cancel()
            self._idle_timer = None
        if self._startup_timer is not None:
            self._startup_timer.cancel()
            self._startup_timer = None
        if self._tls_timer is not None:
            self._tls_timer.cancel()
            self._tls_timer = None
        if self in self.listener.connections:
            self.listener.connections.discard(self)
            if self.session.info is not None:
                reason = self.session.close_reason or "closed"
                log.info("session.end", extra={"session": self.session.session_id, "reason": reason})
                self.holds.stop()
                self.session.hold_abandoned(reason)
                if self.session.journal is not None:
                    self.session.journal.ended(reason)
                    self.write_ahead.submit()
        if self.upstream is not None and not self.upstream.is_closing():
            self.upstream.close()
        self.listener.connection_finished()

    # ---------------------------------------------------------------- draining

    @property
    def busy(self) -> bool:
        return self.session.busy

    def shut_down(self) -> None:
        """Close the session on shutdown (between statements, unless the drain timed out)."""
        self._close("shutdown")


def _describe(exc: BaseException) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


class MysqlListener:
    """One `protocol: mysql` listener: its server socket and its live connections."""

    def __init__(
        self,
        settings: MysqlListenerSettings,
        host: str,
        port: int,
        *,
        throttle: LoginThrottle,
        client_tls: ClientTls | None = None,
        max_connections: int = 10_000,
        idle_timeout: float = 0.0,
        journal_link: EventSink | None = None,
        approvals: ApprovalLink | None = None,
    ) -> None:
        self.settings = settings
        self.journal_link = journal_link
        self.approvals = approvals  # the approval queue: statements held for approval wait in it
        self.client_tls = client_tls  # TLS towards clients (the listener's `tls:`), fixed at start
        self.host = host
        self.port = port
        self.throttle = throttle
        self.max_connections = max_connections
        self.idle_timeout = idle_timeout
        self.connections: set[MysqlConnection] = set()
        self._server: asyncio.Server | None = None
        self._idle = asyncio.Event()
        self._idle.set()

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(lambda: MysqlConnection(self), self.host, self.port,
                                                reuse_address=True, backlog=1024)
        sockets = self._server.sockets
        if sockets:
            self.port = sockets[0].getsockname()[1]
        log.info("listener.start", extra={"listener": self.settings.name, "listen": f"{self.host}:{self.port}",
                                          "protocol": "mysql"})
        await self._read_server_version()

    async def _read_server_version(self) -> None:
        """Read the upstream's greeting once (no login: the connection is closed after it), so
        that even the first clients' greetings carry the server's version string: drivers pick
        their dialect from it (SQLAlchemy tells MariaDB from MySQL by it, once per engine).
        When the server cannot be reached now, the first login teaches it instead."""
        target = self.settings.upstream.target
        try:
            if target.unix_socket:
                opened = asyncio.open_unix_connection(target.unix_socket)
            else:
                opened = asyncio.open_connection(target.host, target.port)
            reader, writer = await asyncio.wait_for(opened, VERSION_PROBE_TIMEOUT)
        except (OSError, TimeoutError) as exc:
            log.info("listener.upstream_version_unknown", extra={"listener": self.settings.name,
                                                                 "error": _describe(exc)})
            return
        try:
            header = await asyncio.wait_for(reader.readexactly(4), VERSION_PROBE_TIMEOUT)
            length = int.from_bytes(header[:3], "little")
            if length > 4096:
                raise ValueError(f"a {length}-byte greeting")
            payload = await asyncio.wait_for(reader.readexactly(length), VERSION_PROBE_TIMEOUT)
            version = m.HandshakeV10.decode(payload).server_version
        except (OSError, TimeoutError, asyncio.IncompleteReadError, ValueError, ProtocolViolation) as exc:
            log.info("listener.upstream_version_unknown", extra={"listener": self.settings.name,
                                                                 "error": _describe(exc)})
            return
        finally:
            writer.close()
        self.learn_server_version(version)

    def update_settings(self, settings: MysqlListenerSettings) -> None:
        """Reload: new connections use the new settings; live sessions keep theirs."""
        if settings.server_version is None:
            settings = dataclasses.replace(settings, server_version=self.settings.server_version)
        self.settings = settings

    def learn_server_version(self, version: bytes) -> None:
        """The upstream's version string, seen in a login: later greetings announce it (the
        first ones announce DEFAULT_SERVER_VERSION), so clients adapt to the real server."""
        if self.settings.server_version != version:
            self.settings = dataclasses.replace(self.settings, server_version=version)

    # ---------------------------------------------------------------- KILL (session.mysql_kill)

    def upstream_thread(self, connection_id: int) -> tuple[str, int] | None:
        for conn in self.connections:
            session = conn.session
            if session.connection_id == connection_id:
                if session.identity is None or session.upstream_thread is None:
                    return None
                return session.identity.name, session.upstream_thread
        return None

    def thread_owner(self, thread_id: int) -> str | None:
        for conn in self.connections:
            session = conn.session
            if session.upstream_thread == thread_id and session.identity is not None:
                return session.identity.name
        return None

    def journal_of(self, thread_id: int) -> SessionJournal | None:
        for conn in self.connections:
            if conn.session.upstream_thread == thread_id:
                return conn.session.journal
        return None

    def connection_finished(self) -> None:
        if not self.connections:
            self._idle.set()

    async def stop_accepting(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    async def drain(self, timeout: float) -> None:
        """Stop accepting; close idle sessions now and busy ones when their statement ends."""
        await self.stop_accepting()
        deadline = asyncio.get_running_loop().time() + timeout
        while self.connections:
            for conn in list(self.connections):
                if not conn.busy:
                    conn.shut_down()
            if not self.connections:
                break
            if asyncio.get_running_loop().time() >= deadline:
                for conn in list(self.connections):
                    conn.shut_down()
                break
            await asyncio.sleep(0.05)
