"""`dbguard serve`: builds listeners from the configuration and runs them until told to stop.

Owns: turning a `config.Config` into per-listener session settings, starting and stopping
listeners, loading the policy (rules) into the listeners' gate, and the process signals:
SIGTERM/SIGINT drain (stop accepting, let running statements finish, then close), SIGHUP
reloads identities and policy without dropping connections, and a change of the rules files
reloads the policy (polled). A broken new file keeps the old configuration or policy in force
and logs why. Listener addresses and upstreams need a restart; a reload says so.

Imports: what only `protocol: mysql` listeners need (their listener, sessions, wire format and
sqlglot analyser, the RSA key pair's cryptography) is imported by `start` when the configuration
has one, and the loop's journal only when the journal is on; so a PostgreSQL-only proxy keeps
none of it resident (docs/performance.md, "Memory"). A missing module still fails at start.
"""

from __future__ import annotations

import asyncio
import dataclasses
import importlib
import logging
import secrets
import signal
import ssl
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dbguard.config import (
    ApprovalMode,
    Config,
    ConfigError,
    IdentityConfig,
    JournalConfig,
    JournalSync,
    ListenerConfig,
    ListenerProtocol,
    OnStoreFailure,
    SegmentWrites,
    load_config,
)
from dbguard.journal import ChainHasher, JournalUnavailable, JournalWriter, StoreError, start_writer
from dbguard.masking.session_masks import MaskDirectory
from dbguard.model import Action, Gate, Identity, IdentityKind
from dbguard.policy.gate import MysqlPolicyGate, PolicyGate
from dbguard.policy.rules import Policy, load_policy
from dbguard.runtime import blast_radius
from dbguard.runtime.approval_link import ApprovalLink
from dbguard.runtime.journal_link import EventSink, JournalLink
from dbguard.runtime.pg_listener import PgListener
from dbguard.runtime.tls import ClientTls, server_tls_context
from dbguard.session.pg_actions import (
    CancelTargets,
    IdentityEntry,
    PgListenerSettings,
    UpstreamSettings,
    UpstreamTlsMode,
)
from dbguard.session.throttle import LoginThrottle
from dbguard.wire.pg.auth import make_scram_verifier

if TYPE_CHECKING:
    from dbguard.runtime.mysql_listener import MysqlListener
    from dbguard.session.mysql_actions import MysqlIdentityEntry, MysqlListenerSettings
    from dbguard.wire.mysql.auth import RsaKeyPair

log = logging.getLogger("dbguard.runtime")

DRAIN_TIMEOUT = 30.0
RULES_POLL_INTERVAL = 2.0  # seconds between checks of the rules files for changes

# Configuration sections this version accepts (they are validated) but does not act on yet.
NOT_YET_ACTIVE = {
    "admin": "the admin HTTP endpoint is not served yet",
}


def check_supported(config: Config) -> None:
    """Say loudly what this version accepts in the configuration but does not act on yet,
    and what the configuration turns off.

    None of these sections weakens enforcement when ignored.
    """
    for key, what in NOT_YET_ACTIVE.items():
        if key in config.locations:
            log.warning("config.not_yet_active", extra={"key": key, "line": config.locations[key],
                                                        "effect": what})
    if not config.journal.enabled:
        log.warning("journal.disabled", extra={"line": config.locations.get("journal.enabled"),
                                               "effect": "sessions are not journaled: statements leave no record"})
    elif config.journal.on_store_failure is OnStoreFailure.ALLOW:
        log.warning("journal.allow_unjournaled", extra={
            "effect": "when the journal store fails, statements run without being recorded"})


def refuses_unjournaled(journal: JournalConfig) -> bool:
    return journal.on_store_failure is OnStoreFailure.REFUSE


def open_journal(config: Config) -> JournalWriter:
    """The process's journal writer on the configured store; a store that cannot be opened
    is a startup error naming it."""
    journal = config.journal
    store = config.store
    try:
        return start_writer(store.url, journal.hmac_key.reveal().encode() if journal.hmac_key else None,
                            queue_size=journal.queue_size, max_batch=journal.max_batch,
                            redacted_url=store.redacted(), fsync=journal.sync is JournalSync.FULL)
    except JournalUnavailable as exc:
        raise config.error("store", f"cannot open the journal store {store.redacted()}: {exc}") from None


def load_rules(config: Config) -> Policy:
    """The configured policy; without `rules:`, the built-in defaults (allow what parses,
    block what does not)."""
    if config.rules_path is None:
        return Policy()
    return load_policy(config.rules_path)


def report_policy(policy: Policy, holds_enabled: bool = True) -> None:
    holds = [rule.id for rule in policy.rules if rule.action is Action.HOLD]
    if holds and not holds_enabled:
        log.warning("policy.holds_refused", extra={
            "rules": ",".join(holds),
            "effect": "no approval queue is open (the journal is off and the rules had no hold rule at start; "
                      "restart to open it): statements these rules hold are blocked"})
    log.info("policy.loaded", extra={"rules": len(policy.rules), "sources": ",".join(map(str, policy.files))})


def rules_signature(path: Path | None) -> tuple[tuple[str, int, int], ...]:
    """What changes when a rules file is edited, added or removed (cheap to poll)."""
    if path is None:
        return ()
    files = sorted(path.glob("*.yaml")) if path.is_dir() else [path]
    signature = []
    for file in files:
        try:
            stat = file.stat()
        except OSError:
            continue
        signature.append((str(file), stat.st_mtime_ns, stat.st_size))
    return tuple(signature)


def build_identities(identities: tuple[IdentityConfig, ...]) -> dict[str, IdentityEntry]:
    entries: dict[str, IdentityEntry] = {}
    for ident in identities:
        identity = Identity(ident.name, IdentityKind(ident.kind.value), tuple(ident.roles))
        entries[ident.name] = IdentityEntry(identity, make_scram_verifier(ident.secret.reveal()))
    return entries


def upstream_settings(listener: ListenerConfig, unix_socket: str | None) -> UpstreamSettings:
    """The listener's upstream DSN as the session's login needs it (both protocols)."""
    up = listener.upstream
    mode = {"allow": "prefer"}.get(up.sslmode.value, up.sslmode.value)
    return UpstreamSettings(
        host=up.host,
        port=up.port,
        user=up.user or "",
        password=up.password.reveal() if up.password else "",
        database=up.database or "",
        tls_mode=UpstreamTlsMode(mode),
        root_cert=up.sslrootcert,
        unix_socket=unix_socket,
    )


def build_pg_settings(listener: ListenerConfig, identities: dict[str, IdentityEntry], gate: Gate,
                      journal: JournalConfig | None = None, masks: MaskDirectory | None = None) -> PgListenerSettings:
    up = listener.upstream
    unix_socket = up.params.get("host") if up.params.get("host", "").startswith("/") else None
    if unix_socket is not None and not unix_socket.endswith(f".s.PGSQL.{up.port}"):
        unix_socket = f"{unix_socket.rstrip('/')}/.s.PGSQL.{up.port}"
    upstream = upstream_settings(listener, unix_socket)
    return PgListenerSettings(
        name=listener.name,
        identities=identities,
        upstream=upstream,
        gate=gate,
        tls_available=listener.tls is not None,
        tls_required=bool(listener.tls and listener.tls.require),
        allow_cleartext=listener.allow_cleartext,
        journal=journal is not None and journal.enabled,
        redact_parameters=journal is not None and journal.redact_parameters,
        refuse_unjournaled=journal is None or refuses_unjournaled(journal),
        masks=masks,
    )


def build_mysql_identities(identities: tuple[IdentityConfig, ...]) -> dict[str, MysqlIdentityEntry]:
    from dbguard.session.mysql_actions import MysqlIdentityEntry

    entries: dict[str, MysqlIdentityEntry] = {}
    for ident in identities:
        identity = Identity(ident.name, IdentityKind(ident.kind.value), tuple(ident.roles))
        entries[ident.name] = MysqlIdentityEntry.from_secret(identity, ident.secret.reveal())
    return entries


def build_mysql_settings(listener: ListenerConfig, identities: dict[str, MysqlIdentityEntry], gate: Gate,
                         rsa_key: RsaKeyPair, journal: JournalConfig | None = None,
                         masks: MaskDirectory | None = None) -> MysqlListenerSettings:
    from dbguard.session.mysql_actions import MysqlListenerSettings

    up = listener.upstream
    socket_param = up.params.get("unix_socket") or up.params.get("socket")
    upstream = upstream_settings(listener, socket_param or (up.host if up.is_unix_socket else None))
    # With `tls:` the greeting offers CLIENT_SSL and caching_sha2_password full authentication
    # takes the password in clear over TLS; without TLS it uses the RSA key exchange.
    return MysqlListenerSettings(
        name=listener.name,
        identities=identities,
        upstream=upstream,
        gate=gate,
        rsa_key=rsa_key,
        tls_available=listener.tls is not None,
        tls_required=bool(listener.tls and listener.tls.require),
        journal=journal is not None and journal.enabled,
        redact_parameters=journal is not None and journal.redact_parameters,
        refuse_unjournaled=journal is None or refuses_unjournaled(journal),
        masks=masks,
    )


class Server:
    """All listeners of one configuration, in one process."""

    def __init__(self, config: Config, *, policy: Policy | None = None, gate: Gate | None = None) -> None:
        """`gate` replaces the policy altogether (protocol tests); otherwise `policy`, or the
        configured rules loaded now, are enforced."""
        self.config = config
        self.policy_gate: PolicyGate | None = None
        if gate is None:
            policy = policy if policy is not None else load_rules(config)
            report_policy(policy)
            gate = self.policy_gate = PolicyGate(policy, "postgres")
        self.gate: Gate = gate
        self._rules_signature = rules_signature(config.rules_path)
        self.cancel_targets = CancelTargets()
        self.throttle = LoginThrottle()
        self.pg_listeners: list[PgListener] = []
        self.mysql_listeners: list[MysqlListener] = []
        # MySQL sessions decide with the MySQL analyser, by the same policy (reloads included).
        # A `gate` given for the protocol tests is PostgreSQL-only: MySQL listeners still
        # enforce the configured rules (never an allow-all gate).
        mysql_policy = self.policy_gate
        if mysql_policy is None:
            has_mysql = any(lst.protocol is ListenerProtocol.MYSQL for lst in config.listeners)
            mysql_policy = PolicyGate(policy if policy is not None else
                                      load_rules(config) if has_mysql else Policy(), "mysql")
        self.mysql_gate: Gate = MysqlPolicyGate(mysql_policy)
        # Masks follow the enforced policy (the PostgreSQL gate's, or the MySQL one's when a
        # protocol test replaced the PostgreSQL gate).
        hash_key = config.masking.hash_key
        self.masks = MaskDirectory(mysql_policy.policy,
                                   hash_key.reveal().encode() if hash_key is not None else secrets.token_bytes(32))
        self._rsa_key: RsaKeyPair | None = None
        self._stop = asyncio.Event()
        self.journal_writer: JournalWriter | None = None
        self.journal_link: EventSink | None = None
        self.approvals: ApprovalLink | None = None

    async def start(self) -> None:
        if self.config.journal.enabled:
            self.journal_link = await self._open_journal()
        if self.config.journal.enabled or self._policy_holds():
            # The queue lives in the store; with the journal off and no hold rule there is
            # no store to create.
            self.approvals = await self._open_approvals()
            if self.policy_gate is not None:
                self.policy_gate.holds_enabled = True
        journal = self.config.journal
        identities = build_identities(self.config.identities)
        gate = self.gate
        contexts = [self._client_tls(index) for index in range(len(self.config.listeners))]  # before any starts
        for listener, tls in zip(self.config.listeners, contexts, strict=True):
            if listener.protocol is ListenerProtocol.POSTGRES:
                pg = PgListener(
                    build_pg_settings(listener, identities, gate, journal, self.masks),
                    listener.listen.host,
                    listener.listen.port,
                    client_tls=tls,
                    cancel_targets=self.cancel_targets,
                    throttle=self.throttle,
                    max_connections=listener.max_connections,
                    idle_timeout=listener.idle_timeout,
                    journal_link=self.journal_link,
                    approvals=self.approvals,
                )
                await pg.start()
                self.pg_listeners.append(pg)
            else:
                # Imported at start, not at the first MySQL statement: a missing sqlglot fails
                # here, and the analyser's ~0.25 s of imports never lands on the event loop.
                importlib.import_module("dbguard.sql.mysql")
                from dbguard.runtime.mysql_listener import MysqlListener

                my = MysqlListener(
                    build_mysql_settings(listener, build_mysql_identities(self.config.identities),
                                         self.mysql_gate, self.rsa_key, journal, self.masks),
                    listener.listen.host,
                    listener.listen.port,
                    throttle=self.throttle,
                    client_tls=tls,
                    max_connections=listener.max_connections,
                    idle_timeout=listener.idle_timeout,
                    journal_link=self.journal_link,
                    approvals=self.approvals,
                )
                await my.start()
                self.mysql_listeners.append(my)

    def _client_tls(self, index: int) -> ClientTls | None:
        """The TLS context of listener `index` towards clients; unusable files are a config error."""
        tls = self.config.listeners[index].tls
        if tls is None:
            return None
        try:
            return server_tls_context(str(tls.cert), str(tls.key))
        except (OSError, ValueError, ssl.SSLError) as exc:
            raise self.config.error(f"listeners[{index}].tls",
                                    f"cannot use the certificate {tls.cert} with the key {tls.key} (a PEM "
                                    f"certificate chain and its PEM private key are expected): {exc}") from exc

    @property
    def rsa_key(self) -> RsaKeyPair:
        """The RSA key pair for caching_sha2_password full authentication (one per process)."""
        if self._rsa_key is None:
            from dbguard.wire.mysql.auth import RsaKeyPair

            self._rsa_key = RsaKeyPair.generate()
        return self._rsa_key

    def reload(self) -> None:
        try:
            new = load_config(self.config.path)
            check_supported(new)
            policy = load_rules(new) if self.policy_gate is not None else None
        except ConfigError as exc:
            log.error("config.reload_failed", extra={"error": str(exc)})
            return
        if self.policy_gate is not None and policy is not None:
            self._put_in_force(policy)
            self._rules_signature = rules_signature(new.rules_path)
            report_policy(policy, self.approvals is not None)
        identities = build_identities(new.identities)
        gate = self.gate
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
            pg_settings = build_pg_settings(cfg, identities, gate, self._journal_in_force(new), self.masks)
            if pg_settings.tls_available != (pg.client_tls is not None):
                # The TLS context is made at start (see the mysql listeners below).
                log.warning("config.reload_needs_restart", extra={"listener": cfg.name,
                                                                  "reason": "tls added or removed"})
                pg_settings = dataclasses.replace(pg_settings, tls_available=pg.settings.tls_available,
                                                  tls_required=pg.settings.tls_required)
            pg.update_settings(pg_settings)
            pg.idle_timeout = cfg.idle_timeout
            pg.max_connections = cfg.max_connections
        mysql_identities = build_mysql_identities(new.identities) if self.mysql_listeners else {}
        for my in self.mysql_listeners:
            cfg = by_name.get(my.settings.name)
            if cfg is None or cfg.protocol is not ListenerProtocol.MYSQL:
                log.warning("config.reload_needs_restart", extra={"listener": my.settings.name,
                                                                  "reason": "listener removed"})
                continue
            if (cfg.listen.host, cfg.listen.port) != (my.host, my.port) and cfg.listen.port != 0:
                log.warning("config.reload_needs_restart", extra={"listener": cfg.name,
                                                                  "reason": "listen address changed"})
            settings = build_mysql_settings(cfg, mysql_identities, self.mysql_gate, self.rsa_key,
                                            self._journal_in_force(new), self.masks)
            if settings.tls_available != (my.client_tls is not None):
                # The TLS context is made at start: adding or removing `tls:` needs a restart;
                # until then the listener keeps offering what it can (and requiring what it did).
                log.warning("config.reload_needs_restart", extra={"listener": cfg.name,
                                                                  "reason": "tls added or removed"})
                settings = dataclasses.replace(settings, tls_available=my.settings.tls_available,
                                               tls_required=my.settings.tls_required)
            my.update_settings(settings)
            my.idle_timeout = cfg.idle_timeout
            my.max_connections = cfg.max_connections
        self.config = new
        log.info("config.reloaded", extra={"identities": len(identities)})

    def _journal_in_force(self, new: Config) -> JournalConfig:
        """The journal settings a reload may change (redaction, failure handling); turning
        the journal on or off, its store and its key need a restart."""
        old = self.config.journal
        def key(journal: JournalConfig) -> str | None:
            return journal.hmac_key.reveal() if journal.hmac_key is not None else None

        changed = (new.journal.enabled != old.enabled or key(new.journal) != key(old)
                   or new.store_url != self.config.store_url)
        if changed:
            log.warning("config.reload_needs_restart", extra={"key": "store/journal",
                                                              "reason": "journal store, key or enabled changed"})
        return dataclasses.replace(new.journal, enabled=old.enabled, hmac_key=old.hmac_key)

    def reload_rules_if_changed(self) -> None:
        """Reload the policy when its files changed; a broken file keeps the old policy."""
        signature = rules_signature(self.config.rules_path)
        if signature == self._rules_signature or self.policy_gate is None:
            return
        self._rules_signature = signature
        try:
            policy = load_rules(self.config)
        except ConfigError as exc:
            log.error("rules.reload_failed", extra={"error": str(exc), "effect": "the previous policy stays in force"})
            return
        self._put_in_force(policy)
        report_policy(policy, self.approvals is not None)
        log.info("rules.reloaded", extra={"rules": len(policy.rules)})

    def _put_in_force(self, policy: Policy) -> None:
        """New and open sessions decide by `policy` from their next statement; statements they
        prepared earlier are decided again."""
        assert self.policy_gate is not None
        self.policy_gate.replace_policy(policy)
        self.masks.replace_policy(policy)
        for pg in self.pg_listeners:
            for connection in pg.connections:
                connection.session.revalidate()
        for my in self.mysql_listeners:
            for mysql_connection in my.connections:
                mysql_connection.session.revalidate()

    async def _watch_rules(self) -> None:
        while True:
            await asyncio.sleep(RULES_POLL_INTERVAL)
            self.reload_rules_if_changed()

    def request_stop(self) -> None:
        self._stop.set()

    async def run_until_stopped(self) -> None:
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, self.request_stop)
        loop.add_signal_handler(signal.SIGINT, self.request_stop)
        loop.add_signal_handler(signal.SIGHUP, self.reload)
        watcher = asyncio.create_task(self._watch_rules())
        await self._stop.wait()
        watcher.cancel()
        log.info("server.draining", extra={"connections": sum(len(p.connections) for p in self.pg_listeners)
                                           + sum(len(p.connections) for p in self.mysql_listeners)})
        await asyncio.gather(*(p.drain(DRAIN_TIMEOUT) for p in self.pg_listeners),
                             *(p.drain(DRAIN_TIMEOUT) for p in self.mysql_listeners))
        if self.approvals is not None:
            await self.approvals.close()
        await self.close_journal()
        log.info("server.stopped")

    async def _open_journal(self) -> EventSink:
        """Commits on the event loop for a local sqlite store with `sync: normal` (a commit
        there costs no fsync and no round trip); through the writer thread otherwise."""
        config = self.config
        store = config.store
        journal = config.journal
        loop = asyncio.get_running_loop()
        if store.kind == "sqlite" and store.path is not None and journal.sync is JournalSync.NORMAL:
            from dbguard.runtime.loop_journal import LoopJournal

            key = journal.hmac_key.reveal().encode() if journal.hmac_key else None
            try:
                return await asyncio.to_thread(LoopJournal, store.path, ChainHasher(key), loop, key,
                                               mapped=journal.segment_writes is SegmentWrites.AUTO)
            except StoreError as exc:
                raise config.error("store", f"cannot open the journal store {store.redacted()}: {exc}") from None
        self.journal_writer = await asyncio.to_thread(open_journal, config)
        return JournalLink(self.journal_writer, loop)

    def _policy_holds(self) -> bool:
        gate = self.policy_gate
        return gate is not None and any(rule.action is Action.HOLD for rule in gate.policy.rules)

    async def _open_approvals(self) -> ApprovalLink:
        """The approval queue in the store (statements a `hold` rule matches wait in it); a
        store that cannot hold it is a startup error naming the store."""
        config = self.config
        store = config.store
        approvals = config.approvals
        key = config.journal.hmac_key
        link = ApprovalLink(
            store.url, key=key.reveal().encode() if key else None, timeout=approvals.timeout,
            retry_mode=approvals.mode is ApprovalMode.RETRY,
            webhooks=[hook.reveal() for hook in approvals.webhooks],
            redacted_url=store.redacted(), measure=blast_radius.measure,
            settle_journal=self.journal_link.settle if self.journal_link is not None else None,
        )
        try:
            await link.start()
        except (StoreError, OSError) as exc:
            raise config.error("store", f"cannot open the approval queue in {store.redacted()}: {exc}") from None
        return link

    async def close_journal(self) -> None:
        """Commit what the sessions journaled, then stop the writer."""
        if self.journal_link is not None:
            self.journal_link.close()  # on the loop: the loop's own journal commits what is pending
        if self.journal_writer is not None:
            await asyncio.to_thread(self.journal_writer.close)

    def addresses(self) -> list[tuple[str, str, int]]:
        return ([(p.settings.name, p.host, p.port) for p in self.pg_listeners]
                + [(p.settings.name, p.host, p.port) for p in self.mysql_listeners])


def run_event_loop(main: Callable[[], Coroutine[Any, Any, None]]) -> None:
    """Run a coroutine function on uvloop when available (it is ~1.5x faster here)."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a pinned dependency on Linux
        asyncio.run(main())
        return
    uvloop.run(main())


async def serve(config: Config, policy: Policy | None = None, *,
                ready: Callable[[Server], None] | None = None) -> None:
    """Run every listener of an already loaded and checked configuration until stopped."""
    server = Server(config, policy=policy)
    await server.start()
    if ready is not None:
        ready(server)
    await server.run_until_stopped()
