"""asyncio driver for MySQL/MariaDB listeners: sockets, upstream TLS, backpressure, timeouts.

Owns: accepting client connections, opening upstream connections, executing the actions a
`session.mysql.MysqlSession` returns, and the bookkeeping of live connections for draining.
Must not contain protocol logic: every decision about bytes is the session's.

TLS towards clients is not offered by this version (the session never announces SSL: the
server refuses a `tls:` section on a mysql listener). Upstream TLS follows the DSN's sslmode.

Backpressure as in `runtime.pg_listener`: when one side's write buffer passes its high-water
mark, reading from the other side pauses until it drains.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Coroutine, Sequence
from typing import Any, cast

from dbguard.runtime.pg_listener import (
    IDLE_CHECKS,
    STARTUP_TIMEOUT,
    TLS_HANDSHAKE_TIMEOUT,
    UPSTREAM_CONNECT_TIMEOUT,
    WRITE_HIGH_WATER,
    WRITE_LOW_WATER,
    upstream_tls_context,
)
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
from dbguard.wire.mysql.packets import encode_packets

log = logging.getLogger("dbguard.runtime")

ER_CON_COUNT_ERROR = 1040  # "Too many connections" (08004)


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
        conn.execute(conn.session.upstream_data(data))

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
        self._idle_timer: asyncio.TimerHandle | None = None
        self.reads = 0
        self._reads_seen = 0
        self._idle_ticks = 0

    # ---------------------------------------------------------------- client transport events

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.client = cast(asyncio.Transport, transport)  # uvloop's transports do not subclass it
        self.client.set_write_buffer_limits(WRITE_HIGH_WATER, WRITE_LOW_WATER)
        peer = transport.get_extra_info("peername")
        host = str(peer[0]) if isinstance(peer, tuple) else str(peer or "local")
        address = f"{host}:{peer[1]}" if isinstance(peer, tuple) else host
        self.session = MysqlSession(self.listener.settings, client_address=address, client_host=host,
                                    throttle=self.listener.throttle)
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
        if not self._closed:
            self.execute(self.session.client_data(data))

    def eof_received(self) -> bool | None:
        return None  # close the transport

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

    # ---------------------------------------------------------------- upstream events

    def on_upstream_lost(self) -> None:
        if self._upstream_tls_in_progress:
            return  # the failed handshake reports itself, with its cause
        if not self._closed:
            self.execute(self.session.upstream_closed())

    def pause_client_reading(self) -> None:
        if self.client is not None:
            self.client.pause_reading()

    def resume_client_reading(self) -> None:
        if self.client is not None:
            self.client.resume_reading()

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
        for index, action in enumerate(actions):
            if isinstance(action, SendClient):
                if self.client is not None and not self.client.is_closing():
                    self.client.write(action.data)
            elif isinstance(action, SendUpstream):
                if self.upstream is not None and not self.upstream.is_closing():
                    self.upstream.write(action.data)
            elif isinstance(action, Close):
                self._close(action.reason)
                return
            elif isinstance(action, Sleep):
                rest = list(actions[index + 1 :])
                self.loop.call_later(action.seconds, self._resume, rest)
                return
            elif isinstance(action, MysqlStartClientTls):
                # Never offered (tls_available is False): a client that asks anyway is dropped.
                self._close("client TLS is not available on this listener")
                return
            elif isinstance(action, ConnectUpstream):
                self._spawn(self._connect_upstream(action), list(actions[index + 1 :]))
                return
            elif isinstance(action, StartUpstreamTls):
                if self.upstream is not None:
                    self.upstream.pause_reading()
                self._spawn(self._start_upstream_tls(action), list(actions[index + 1 :]))
                return
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
        if self in self.listener.connections:
            self.listener.connections.discard(self)
            if self.session.info is not None:
                log.info("session.end", extra={"session": self.session.session_id,
                                               "reason": self.session.close_reason or "closed"})
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
        max_connections: int = 10_000,
        idle_timeout: float = 0.0,
    ) -> None:
        self.settings = settings
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

    def update_settings(self, settings: MysqlListenerSettings) -> None:
        """Reload: new connections use the new settings; live sessions keep theirs."""
        self.settings = settings

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
