"""`dbguard serve`: builds listeners from the configuration and runs them until told to stop.

Owns: turning a `config.Config` into per-listener session settings, starting and stopping
listeners, and the process signals: SIGTERM/SIGINT drain (stop accepting, let running
statements finish, then close), SIGHUP reloads identities and policy without dropping
connections. Listener addresses and upstreams need a restart; a reload says so.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Callable, Coroutine
from typing import Any

from dbguard.config import Config, ConfigError, IdentityConfig, ListenerConfig, ListenerProtocol, load_config
from dbguard.model import AllowAllGate, Gate, Identity, IdentityKind
from dbguard.runtime.pg_listener import PgListener, server_tls_context
from dbguard.session.pg_actions import (
    CancelTargets,
    IdentityEntry,
    PgListenerSettings,
    UpstreamSettings,
    UpstreamTlsMode,
)
from dbguard.session.throttle import LoginThrottle
from dbguard.wire.pg.auth import make_scram_verifier

log = logging.getLogger("dbguard.runtime")

DRAIN_TIMEOUT = 30.0

# Configuration sections this version accepts (they are validated) but does not act on yet.
NOT_YET_ACTIVE = {
    "store": "the statement journal is not written yet",
    "approvals": "holds for approval are not available yet",
    "admin": "the admin HTTP endpoint is not served yet",
}


def check_supported(config: Config) -> None:
    """Fail closed where this version cannot do what the configuration asks.

    Rules that are configured but not enforced would let every statement through while the
    operator believes policy applies: refuse to start. Sections without a security effect of
    their own are reported loudly and the proxy runs.
    """
    if config.rules_path is not None:
        raise config.error("rules", "this version of dbguard does not enforce rules yet; refusing to start "
                                    "rather than let every statement through unchecked (remove `rules:` "
                                    "to run the proxy without policy)")
    for key, what in NOT_YET_ACTIVE.items():
        if key in config.locations:
            log.warning("config.not_yet_active", extra={"key": key, "line": config.locations[key],
                                                        "effect": what})


def build_identities(identities: tuple[IdentityConfig, ...]) -> dict[str, IdentityEntry]:
    entries: dict[str, IdentityEntry] = {}
    for ident in identities:
        identity = Identity(ident.name, IdentityKind(ident.kind.value), tuple(ident.roles))
        entries[ident.name] = IdentityEntry(identity, make_scram_verifier(ident.secret.reveal()))
    return entries


def build_pg_settings(listener: ListenerConfig, identities: dict[str, IdentityEntry], gate: Gate) -> PgListenerSettings:
    up = listener.upstream
    mode = {"allow": "prefer"}.get(up.sslmode.value, up.sslmode.value)
    unix_socket = up.params.get("host") if up.params.get("host", "").startswith("/") else None
    if unix_socket is not None and not unix_socket.endswith(f".s.PGSQL.{up.port}"):
        unix_socket = f"{unix_socket.rstrip('/')}/.s.PGSQL.{up.port}"
    upstream = UpstreamSettings(
        host=up.host,
        port=up.port,
        user=up.user or "",
        password=up.password.reveal() if up.password else "",
        database=up.database or "",
        tls_mode=UpstreamTlsMode(mode),
        root_cert=up.sslrootcert,
        unix_socket=unix_socket,
    )
    return PgListenerSettings(
        name=listener.name,
        identities=identities,
        upstream=upstream,
        gate=gate,
        tls_available=listener.tls is not None,
        tls_required=bool(listener.tls and listener.tls.require),
        allow_cleartext=listener.allow_cleartext,
    )


class Server:
    """All listeners of one configuration, in one process."""

    def __init__(self, config: Config, *, gate_factory: Callable[[Config], Gate] | None = None) -> None:
        self.config = config
        self._gate_factory = gate_factory or (lambda _config: AllowAllGate())
        self.cancel_targets = CancelTargets()
        self.throttle = LoginThrottle()
        self.pg_listeners: list[PgListener] = []
        self._stop = asyncio.Event()

    async def start(self) -> None:
        identities = build_identities(self.config.identities)
        gate = self._gate_factory(self.config)
        for listener in self.config.listeners:
            if listener.protocol is ListenerProtocol.POSTGRES:
                tls = server_tls_context(str(listener.tls.cert), str(listener.tls.key)) if listener.tls else None
                pg = PgListener(
                    build_pg_settings(listener, identities, gate),
                    listener.listen.host,
                    listener.listen.port,
                    client_tls=tls,
                    cancel_targets=self.cancel_targets,
                    throttle=self.throttle,
                    max_connections=listener.max_connections,
                    idle_timeout=listener.idle_timeout,
                )
                await pg.start()
                self.pg_listeners.append(pg)
            else:
                index = self.config.listeners.index(listener)
                raise self.config.error(f"listeners[{index}].protocol",
                                           "protocol mysql is not available in this version of dbguard")

    def reload(self) -> None:
        try:
            new = load_config(self.config.path)
            check_supported(new)
        except ConfigError as exc:
            log.error("config.reload_failed", extra={"error": str(exc)})
            return
        identities = build_identities(new.identities)
        gate = self._gate_factory(new)
        by_name = {lst.name: lst for lst in new.listeners}
        for pg in self.pg_listeners:
            cfg = by_name.get(pg.settings.name)
            if cfg is None:
                log.warning("config.reload_needs_restart", extra={"listener": pg.settings.name,
                                                                  "reason": "listener removed"})
                continue
            if (cfg.listen.host, cfg.listen.port) != (pg.host, pg.port) and cfg.listen.port != 0:
                log.warning("config.reload_needs_restart", extra={"listener": cfg.name,
                                                                  "reason": "listen address changed"})
            pg.update_settings(build_pg_settings(cfg, identities, gate))
            pg.idle_timeout = cfg.idle_timeout
            pg.max_connections = cfg.max_connections
        self.config = new
        log.info("config.reloaded", extra={"identities": len(identities)})

    def request_stop(self) -> None:
        self._stop.set()

    async def run_until_stopped(self) -> None:
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, self.request_stop)
        loop.add_signal_handler(signal.SIGINT, self.request_stop)
        loop.add_signal_handler(signal.SIGHUP, self.reload)
        await self._stop.wait()
        log.info("server.draining", extra={"connections": sum(len(p.connections) for p in self.pg_listeners)})
        await asyncio.gather(*(p.drain(DRAIN_TIMEOUT) for p in self.pg_listeners))
        log.info("server.stopped")

    def addresses(self) -> list[tuple[str, str, int]]:
        return [(p.settings.name, p.host, p.port) for p in self.pg_listeners]


def run_event_loop(main: Callable[[], Coroutine[Any, Any, None]]) -> None:
    """Run a coroutine function on uvloop when available (it is ~1.5x faster here)."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a pinned dependency on Linux
        asyncio.run(main())
        return
    uvloop.run(main())


async def serve(config: Config, *, ready: Callable[[Server], None] | None = None) -> None:
    """Run every listener of an already loaded and checked configuration until stopped."""
    server = Server(config)
    await server.start()
    if ready is not None:
        ready(server)
    await server.run_until_stopped()
