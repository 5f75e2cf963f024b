"""asyncio driver for PostgreSQL listeners: sockets, TLS, backpressure, cancel forwarding.

Owns: accepting client connections, opening upstream connections, executing the actions a
`session.pg.PgSession` returns, and the bookkeeping of live connections for draining.
Must not contain protocol logic: every decision about bytes is the session's.

Backpressure: when the client cannot keep up (its transport calls `pause_writing`), reading
from the upstream pauses, and the reverse; so a slow reader of a huge result never makes the
proxy buffer it (each transport's write buffer is bounded by its high-water mark).
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Coroutine, Sequence
from typing import Any, cast

from dbguard.runtime.approval_link import ApprovalLink
from dbguard.runtime.holding import HoldRunner
from dbguard.runtime.journal_link import JOURNAL_REFUSAL, EventSink, WriteAheadGate
from dbguard.runtime.pg_catalog import PgCatalogs
from dbguard.runtime.tls import ClientTls, upstream_tls_context
from dbguard.session.holds import HoldResolved, HoldStatement
from dbguard.session.pg import PgSession, Phase
from dbguard.session.pg_actions import (
    CancelTargets,
    Close,
    ConnectUpstream,
    ForwardCancel,
    PgListenerSettings,
    SendClient,
    SendUpstream,
    SessionAction,
    SessionStarted,
    Sleep,
    StartClientTls,
    StartUpstreamTls,
    UpstreamTlsMode,
)
from dbguard.session.throttle import LoginThrottle
from dbguard.wire.pg import messages as m

log = logging.getLogger("dbguard.runtime")

UPSTREAM_CONNECT_TIMEOUT = 10.0
TLS_HANDSHAKE_TIMEOUT = 10.0
CANCEL_TIMEOUT = 5.0
# Per-direction write buffer bounds: above HIGH the other side's reading pauses.
WRITE_HIGH_WATER = 256 * 1024
WRITE_LOW_WATER = 64 * 1024
# A client that never finishes its startup/auth is dropped after this long.
STARTUP_TIMEOUT = 30.0
# The idle clock looks this many times per idle_timeout.
IDLE_CHECKS = 4


class _UpstreamProtocol(asyncio.Protocol):
    def __init__(self, conn: PgConnection) -> None:
        self.conn = conn

    def data_received(self, data: bytes) -> None:
        conn = self.conn
        conn.reads += 1
        session = conn.session
        masking = session.masking
        if masking is not None:
            data = masking.from_upstream(data)
            if masking.waiting is not None:
                conn.resolve_catalog()
            if data:
                self.deliver(data, rows_only=masking.rows_only)
            return
        self.deliver(data)

    def deliver(self, data: bytes, *, rows_only: bool = False) -> None:
        """Upstream bytes (after masking) to the session and on to the client; `rows_only`:
        masking found whole DataRows only in them."""
        conn = self.conn
        session = conn.session
        if session.upstream_fast(data, rows_only=rows_only):
            if session.journal is not None and session.journal.has_events:
                conn.write_ahead.submit()  # outcomes, in the segment before the client sees them
            client = conn.client
            if client is not None and not client.is_closing():
                client.write(data)
            return
        conn.execute(conn.session.upstream_data(data))

    def connection_lost(self, exc: Exception | None) -> None:
        self.conn.on_upstream_lost()

    def pause_writing(self) -> None:
        self.conn.pause_client_reading()

    def resume_writing(self) -> None:
        self.conn.resume_client_reading()


class PgConnection(asyncio.Protocol):
    """One accepted client connection and its upstream: the asyncio side of a PgSession."""

    def __init__(self, listener: PgListener) -> None:
        self.listener = listener
        self.loop = asyncio.get_running_loop()
        self.session: PgSession
        self.client: asyncio.Transport | None = None
        self.upstream: asyncio.Transport | None = None
        self._upstream_protocol = _UpstreamProtocol(self)
        self._closed = False
        self._client_paused = False
        self._upstream_paused = False
        self._catalog_wait = False  # upstream reading stopped until masking's catalog is filled
        self._startup_timer: asyncio.TimerHandle | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        # While start_tls runs, the TLS layer may hand us decrypted bytes before the coroutine
        # resumes; they are held here until the session has been told TLS is up. (Plaintext
        # sent after SSLRequest is refused by the session before the handshake starts.)
        self._tls_handshake_data: list[bytes] | None = None
        self._upstream_tls_in_progress = False
        self._idle_timer: asyncio.TimerHandle | None = None
        self.reads = 0  # reads in either direction; the idle clock watches it move
        self._reads_seen = 0
        self._idle_ticks = 0
        # Write-ahead: upstream bytes wait in the gate while journal events they depend on are
        # made durable.
        self.write_ahead = WriteAheadGate(self, listener.journal_link)
        # Statements held for approval wait here, off the loop's hot path.
        self.holds = HoldRunner(self, listener.approvals)

    # ---------------------------------------------------------------- client transport events

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.client = cast(asyncio.Transport, transport)  # uvloop's transports do not subclass it
        self.client.set_write_buffer_limits(WRITE_HIGH_WATER, WRITE_LOW_WATER)
        peer = transport.get_extra_info("peername")
        host = str(peer[0]) if isinstance(peer, tuple) else str(peer or "local")
        address = f"{host}:{peer[1]}" if isinstance(peer, tuple) else host
        self.session = PgSession(
            self.listener.settings,
            client_address=address,
            client_host=host,
            cancel_targets=self.listener.cancel_targets,
            throttle=self.listener.throttle,
            catalog=self.listener.catalogs.cache,
        )
        self.listener.connections.add(self)
        self._startup_timer = self.loop.call_later(STARTUP_TIMEOUT, self._startup_timed_out)
        if len(self.listener.connections) > self.listener.max_connections:
            self._close_with_fatal("53300", "sorry, too many clients already", "too many clients")

    def data_received(self, data: bytes) -> None:
        self.reads += 1
        if self._tls_handshake_data is not None:
            self._tls_handshake_data.append(data)
            return
        session = self.session
        fast = session.client_fast(data)
        if fast is None:
            self.execute(session.client_data(data))
        else:
            if session.journal is not None and session.journal.has_events:
                self.write_ahead.submit()
            if self.write_ahead.waits:
                self.write_ahead.hold(fast)
                return
            upstream = self.upstream
            if upstream is not None and not upstream.is_closing():
                upstream.write(fast)

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
        if self.upstream is not None and not self._catalog_wait:
            self.upstream.resume_reading()

    # ---------------------------------------------------------------- masking's catalog

    def resolve_catalog(self) -> None:
        """Masking waits for the catalog: stop reading upstream until it is filled."""
        if self._catalog_wait:
            return
        self._catalog_wait = True
        if self.upstream is not None:
            self.upstream.pause_reading()
        self._spawn(self._resolve_catalog(), [])

    async def _resolve_catalog(self) -> None:
        masking = self.session.masking
        assert masking is not None
        try:
            while masking.waiting is not None and not self._closed:
                await self.listener.catalogs.resolve(self.session.info.database if self.session.info else "",
                                                     masking.waiting)
                data = masking.resume()
                if data and not self._closed:
                    self._upstream_protocol.deliver(data, rows_only=masking.rows_only)
        finally:
            self._catalog_wait = False
            if self.upstream is not None and not self._upstream_paused and not self._closed:
                self.upstream.resume_reading()

    # ---------------------------------------------------------------- upstream events

    def _arm_idle_clock(self) -> None:
        """Start checking for idleness (listener `idle_timeout`, 0 = off). The hot path only
        counts reads; every quarter of the timeout the clock looks whether the count moved, so
        an idle session is closed between 1 and 1.25 timeouts after its last activity."""
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
        if self.reads != self._reads_seen or self.session.busy:
            # Activity, or a statement running (not idleness): start counting again.
            self._reads_seen = self.reads
            self._idle_ticks = 0
        else:
            self._idle_ticks += 1
        if self._idle_ticks < IDLE_CHECKS:
            self._idle_timer = self.loop.call_later(timeout / IDLE_CHECKS, self._idle_check)
            return
        log.info("session.idle_timeout", extra={"session": self.session.session_id})
        self._close_with_fatal("57P05", "terminating connection due to idle-session timeout", "idle timeout")

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

    # ---------------------------------------------------------------- executing actions

    def execute(self, actions: Sequence[SessionAction]) -> None:
        journal = self.session.journal
        if journal is not None and journal.has_events:
            self.write_ahead.submit()
        for index, action in enumerate(actions):
            if isinstance(action, SendClient):
                if self.client is not None and not self.client.is_closing():
                    self.client.write(action.data)
            elif isinstance(action, SendUpstream):
                if self.write_ahead.waits:
                    self.write_ahead.hold(action.data)
                elif self.upstream is not None and not self.upstream.is_closing():
                    self.upstream.write(action.data)
            elif isinstance(action, SessionStarted):
                self._on_session_started(action)
            elif isinstance(action, Close):
                self._close(action.reason)
                return
            elif isinstance(action, Sleep):
                rest = list(actions[index + 1 :])
                self.loop.call_later(action.seconds, self.execute, rest)
                return
            elif isinstance(action, StartClientTls):
                # Stop reading now: the ClientHello must reach the TLS layer, not the session.
                # start_tls resumes reading once its protocol is in place.
                if self.client is not None:
                    self.client.pause_reading()
                self._tls_handshake_data = []
                self._spawn(self._start_client_tls(), list(actions[index + 1 :]))
                return
            elif isinstance(action, ConnectUpstream):
                self._spawn(self._connect_upstream(action), list(actions[index + 1 :]))
                return
            elif isinstance(action, StartUpstreamTls):
                if self.upstream is not None:
                    self.upstream.pause_reading()
                self._spawn(self._start_upstream_tls(action), list(actions[index + 1 :]))
                return
            elif isinstance(action, ForwardCancel):
                self.listener.forward_cancel(action)
            elif isinstance(action, HoldStatement):
                assert self.session.info is not None
                self.holds.start(self.session.info, action.held, self.listener.settings.upstream)

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

    def hold_requested(self, approval_id: str) -> None:
        self.execute(self.session.hold_requested(approval_id))

    def hold_resolved(self, resolution: HoldResolved) -> None:
        self.execute(self.session.hold_resolved(resolution))

    def refuse_unjournaled(self) -> None:
        self._close_with_fatal("58030", JOURNAL_REFUSAL, "journal unavailable")

    def _spawn(self, coro: Coroutine[Any, Any, None], then: list[SessionAction]) -> None:
        async def run() -> None:
            await coro
            if then and not self._closed:
                self.execute(then)

        task = self.loop.create_task(run())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _start_client_tls(self) -> None:
        tls = self.listener.client_tls
        assert tls is not None
        assert self.client is not None
        try:
            transport = await asyncio.wait_for(
                self.loop.start_tls(self.client, self, tls.context, server_side=True),
                TLS_HANDSHAKE_TIMEOUT,
            )
        except (OSError, ssl.SSLError, TimeoutError, ConnectionError) as exc:
            log.info("session.tls_failed", extra={"client": self.session.client_address, "error": str(exc)})
            self._close("client TLS handshake failed")
            return
        if transport is None:
            self._close("client TLS handshake failed")
            return
        self.client = transport
        held, self._tls_handshake_data = self._tls_handshake_data or [], None
        self.execute(self.session.client_tls_started(tls.cert_der))
        if held and not self._closed:
            self.execute(self.session.client_data(b"".join(held)))

    async def _connect_upstream(self, target: ConnectUpstream) -> None:
        try:
            if target.unix_socket:
                connect = self.loop.create_unix_connection(lambda: self._upstream_protocol, target.unix_socket)
            else:
                connect = self.loop.create_connection(lambda: self._upstream_protocol, target.host, target.port)
            transport, _ = await asyncio.wait_for(connect, UPSTREAM_CONNECT_TIMEOUT)
        except (OSError, TimeoutError) as exc:
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
            self.execute(self.session.upstream_failed(f"TLS handshake failed: {_describe(exc)}"))
            return
        self._upstream_tls_in_progress = False
        if transport is None:
            self.execute(self.session.upstream_failed("TLS handshake failed"))
            return
        self.upstream = transport
        ssl_object = transport.get_extra_info("ssl_object")
        cert = ssl_object.getpeercert(binary_form=True) if ssl_object is not None else None
        self.execute(self.session.upstream_tls_started(cert))

    def _on_session_started(self, action: SessionStarted) -> None:
        self._arm_idle_clock()
        if self._startup_timer is not None:
            self._startup_timer.cancel()
            self._startup_timer = None
        if action.upstream_key is not None:
            self.listener.cancel_targets.register(
                action.proxy_key, self.listener.settings.upstream.target, action.upstream_key,
                self.session.journal, on_cancel=self.holds.interrupt,
            )

    def _startup_timed_out(self) -> None:
        self._startup_timer = None
        if self.session.phase is not Phase.READY and not self._closed:
            log.info("session.startup_timeout", extra={"client": self.session.client_address})
            self._close_with_fatal("08006", "dbguard: timed out waiting for the startup to complete",
                                   "startup timeout")

    def _close(self, reason: str) -> None:
        if self._closed:
            return
        self._closed = True
        if self.client is not None:
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
        key = self.session.proxy_key
        if key is not None:
            self.listener.cancel_targets.unregister(key)
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
        """Close the session as the server would on a smart shutdown (57P01)."""
        self._close_with_fatal("57P01", "terminating connection due to administrator command", "shutdown")

    def _close_with_fatal(self, sqlstate: str, message: str, reason: str) -> None:
        """Tell the client why, as the server would (FATAL), then close both sides."""
        self.execute([SendClient(m.fatal(sqlstate, message)), Close(reason)])


def _describe(exc: BaseException) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


class PgListener:
    """One `protocol: postgres` listener: its server socket and its live connections."""

    def __init__(
        self,
        settings: PgListenerSettings,
        host: str,
        port: int,
        *,
        client_tls: ClientTls | None,
        cancel_targets: CancelTargets,
        throttle: LoginThrottle,
        max_connections: int = 10_000,
        idle_timeout: float = 0.0,
        journal_link: EventSink | None = None,
        approvals: ApprovalLink | None = None,
    ) -> None:
        self.settings = settings
        self.journal_link = journal_link
        self.approvals = approvals
        self.host = host
        self.port = port
        self.client_tls = client_tls
        self.cancel_targets = cancel_targets
        self.throttle = throttle
        self.max_connections = max_connections
        self.idle_timeout = idle_timeout
        self.connections: set[PgConnection] = set()
        self.catalogs = PgCatalogs(settings.upstream)
        self._server: asyncio.Server | None = None
        self._idle = asyncio.Event()
        self._idle.set()

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(lambda: PgConnection(self), self.host, self.port,
                                                reuse_address=True, backlog=1024)
        sockets = self._server.sockets
        if sockets:
            self.port = sockets[0].getsockname()[1]
        log.info("listener.start", extra={"listener": self.settings.name, "listen": f"{self.host}:{self.port}"})

    def update_settings(self, settings: PgListenerSettings) -> None:
        """Reload: new connections use the new settings; live sessions keep theirs."""
        if settings.upstream != self.settings.upstream:
            self.catalogs = PgCatalogs(settings.upstream)
        self.settings = settings

    def forward_cancel(self, action: ForwardCancel) -> None:
        async def send() -> None:
            target = action.target
            try:
                if target.unix_socket:
                    opener = asyncio.open_unix_connection(target.unix_socket)
                else:
                    opener = asyncio.open_connection(target.host, target.port)
                reader, writer = await asyncio.wait_for(opener, CANCEL_TIMEOUT)
                writer.write(m.CancelRequest(action.process_id, action.secret_key).encode())
                await writer.drain()
                await asyncio.wait_for(reader.read(), CANCEL_TIMEOUT)
                writer.close()
            except (OSError, TimeoutError) as exc:
                log.warning("session.cancel_failed", extra={"error": _describe(exc)})

        task = asyncio.get_running_loop().create_task(send())
        _background.add(task)
        task.add_done_callback(_background.discard)

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


_background: set[asyncio.Task[None]] = set()
