# dbguard/approvals/store.py — owns the approval queue in the store (`store:`, the journal's
# database, sqlite or PostgreSQL): its tables (approval_requests, approval_revision) and their
# migrations (approval_migrations, apart from the journal's), and every change of a request's
# status, each in one transaction with its journal event (when a chain hasher is given):
# create, decide (approve / deny: atomic, only a pending request within its deadline, never by
# the requesting identity, only by a holder of the rule's approver roles), consume (an approved
# grant used exactly once), expiry; wake-ups for watchers (PostgreSQL LISTEN/NOTIFY on
# `dbguard_approvals`, sqlite a short poll of a revision counter); webhooks after each commit.
# It must not authenticate anyone (the caller proves who decides), know about sessions or
# sockets, or write the journal's tables except by appending events through the journal store.
from __future__ import annotations

import json
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from typing import Any, Final

from dbguard.approvals.model import (
    ApprovalNotFound,
    ApprovalRequest,
    ApprovalStatus,
    BlastRadius,
    DecisionRefused,
    Refusal,
    Verdict,
    fingerprint,
    new_approval_id,
)
from dbguard.approvals.webhooks import WebhookNotifier
from dbguard.journal import ApprovalEvent, ApprovalEventKind, ChainHasher, JournalStore, StoreError, now_us
from dbguard.journal.events import iso_from_us
from dbguard.journal.store import Listener

__all__ = [
    "CHANNEL",
    "CURRENT_APPROVALS_SCHEMA_VERSION",
    "DEFAULT_POLL_INTERVAL",
    "ApprovalStore",
]

CHANNEL: Final = "dbguard_approvals"  # PostgreSQL NOTIFY channel; the payload is the approval id
DEFAULT_POLL_INTERVAL: Final = 0.25  # seconds between sqlite polls in wait_for_update
DEFAULT_TIMEOUT: Final = 60.0  # config.DEFAULT_APPROVAL_TIMEOUT
_MAX_LIST: Final = 10_000

# ---------------------------------------------------------------------------------------------
# Schema. Never edit a released migration: add one.

_SCHEMA_V1: Final = (
    "CREATE TABLE approval_requests ("
    " id TEXT PRIMARY KEY, status TEXT NOT NULL, created_us BIGINT NOT NULL, expires_us BIGINT NOT NULL,"
    " updated_us BIGINT NOT NULL,"
    " identity TEXT NOT NULL, identity_kind TEXT NOT NULL, roles TEXT NOT NULL,"
    " session_id TEXT NOT NULL, statement_seq BIGINT, client_address TEXT NOT NULL, listener TEXT NOT NULL,"
    " database_name TEXT NOT NULL, protocol TEXT NOT NULL, sql_text TEXT NOT NULL, parameters TEXT,"
    " rule_ids TEXT NOT NULL, approvers TEXT NOT NULL, table_names TEXT NOT NULL, intent TEXT NOT NULL,"
    " estimated_rows BIGINT, exact_rows BIGINT, blast_note TEXT NOT NULL,"
    " fingerprint TEXT NOT NULL, decided_by TEXT NOT NULL, decided_us BIGINT, reason TEXT NOT NULL,"
    " used_us BIGINT)",
    "CREATE INDEX approval_requests_status ON approval_requests (status, expires_us)",
    "CREATE INDEX approval_requests_created ON approval_requests (created_us)",
    "CREATE INDEX approval_requests_session ON approval_requests (session_id)",
    "CREATE INDEX approval_requests_fingerprint ON approval_requests (fingerprint, status)",
    # Bumped by every change: sqlite watchers poll it; PostgreSQL ones check it around LISTEN.
    "CREATE TABLE approval_revision (id INTEGER PRIMARY KEY CHECK (id = 1), rev BIGINT NOT NULL)",
    "INSERT INTO approval_revision (id, rev) VALUES (1, 0)",
)


@dataclass(frozen=True, slots=True)
class _Migration:
    version: int
    description: str
    statements: tuple[str, ...]


_MIGRATIONS: Final = (_Migration(1, "approval requests and the revision counter", _SCHEMA_V1),)
CURRENT_APPROVALS_SCHEMA_VERSION: Final = _MIGRATIONS[-1].version

_COLUMNS: Final = (
    "id, status, created_us, expires_us, identity, identity_kind, roles, session_id, statement_seq,"
    " client_address, listener, database_name, protocol, sql_text, parameters, rule_ids, approvers, table_names,"
    " intent, estimated_rows, exact_rows, blast_note, decided_by, decided_us, reason, used_us"
)
_SELECT: Final = f"SELECT {_COLUMNS} FROM approval_requests"  # noqa: S608 (constants only)
_INSERT: Final = (
    f"INSERT INTO approval_requests ({_COLUMNS}, updated_us, fingerprint)"  # noqa: S608 (constants only)
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
_BUMP: Final = "UPDATE approval_revision SET rev = rev + 1 WHERE id = 1"


def _texts(value: Any) -> tuple[str, ...]:
    return tuple(str(v) for v in json.loads(value))


def _from_row(row: Sequence[Any]) -> ApprovalRequest:
    (rid, status, created, expires, identity, kind, roles, session_id, seq, client, listener, database, protocol,
     sql, params, rule_ids, approvers, tables, intent, estimated, exact, note, decided_by, decided, reason,
     used) = row
    parameters = None if params is None else tuple(None if p is None else str(p) for p in json.loads(params))
    return ApprovalRequest(
        id=str(rid), status=ApprovalStatus(str(status)), created_us=int(created), expires_us=int(expires),
        identity=str(identity), identity_kind=str(kind), roles=_texts(roles), session_id=str(session_id),
        statement_seq=None if seq is None else int(seq), client_address=str(client), listener=str(listener),
        database=str(database), protocol=str(protocol), sql=str(sql), parameters=parameters,
        rule_ids=_texts(rule_ids), approvers=_texts(approvers), tables=_texts(tables), intent=str(intent),
        blast_radius=BlastRadius(None if estimated is None else int(estimated), None if exact is None else int(exact),
                                 str(note)),
        decided_by=str(decided_by), decided_us=None if decided is None else int(decided), reason=str(reason),
        used_us=None if used is None else int(used),
    )


def _json(values: Iterable[str | None]) -> str:
    return json.dumps(list(values), ensure_ascii=False, separators=(",", ":"))


def _when(time_us: int | None) -> str:
    return "?" if time_us is None else iso_from_us(time_us)[:19].replace("T", " ") + "Z"


class ApprovalStore:
    """The approval queue on one store connection. Not thread-safe: one thread uses one object
    (like a JournalStore); every process or thread opens its own, and they coordinate through
    the database (sqlite BEGIN IMMEDIATE; PostgreSQL row locks).

    `hasher`: journal every change as an ApprovalEvent in the same transaction (None: the
    caller journals them itself). `timeout`: seconds a new request waits for a decision, and
    how long an approval may be used. `notifier`: webhooks, called after each commit."""

    def __init__(
        self,
        store: JournalStore,
        *,
        hasher: ChainHasher | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        notifier: WebhookNotifier | None = None,
        migrate: bool = True,
        owns_store: bool = False,
        poll_interval: float = DEFAULT_POLL_INTERVAL,
    ) -> None:
        if timeout <= 0:
            raise ValueError("timeout must be more than 0 seconds")
        self.store = store
        self.hasher = hasher
        self.timeout_us = int(timeout * 1_000_000)
        self.notifier = notifier
        self.poll_interval = poll_interval
        self._owns_store = owns_store
        self._for_update = " FOR UPDATE" if store.dialect == "postgresql" else ""
        self._skip_locked = " FOR UPDATE SKIP LOCKED" if store.dialect == "postgresql" else ""
        self._listener: Listener | None = None
        if migrate:
            self.migrate()
        self._seen_rev = self._revision() if self.schema_version() else 0

    @classmethod
    def open(
        cls,
        url: str,
        *,
        key: bytes | None = None,
        journal: bool = True,
        timeout: float = DEFAULT_TIMEOUT,
        webhooks: Sequence[str] = (),
        create: bool = True,
        migrate: bool = True,
        redacted_url: str = "",
    ) -> ApprovalStore:
        """Open the store at `url` (as journal.open_store: `create=False` requires an existing
        journal) with the queue on it; close() closes both. `journal`: append an ApprovalEvent
        (chained with `key`) for every change. `migrate=False`: never create the queue's tables
        (readers; schema_version() is then 0 on a store without them)."""
        from dbguard.journal import open_store

        store = open_store(url, create=create, redacted_url=redacted_url)
        try:
            return cls(store, hasher=ChainHasher(key) if journal else None, timeout=timeout,
                       notifier=WebhookNotifier(webhooks) if webhooks else None, migrate=migrate, owns_store=True)
        except BaseException:
            store.close()
            raise

    def close(self) -> None:
        if self._listener is not None:
            self._listener.close()
            self._listener = None
        if self._owns_store:
            self.store.close()

    def __enter__(self) -> ApprovalStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- schema -------------------------------------------------------------------------------

    def schema_version(self) -> int:
        if not self.store.table_exists("approval_migrations"):
            return 0
        return int(self.store.query("SELECT max(version) FROM approval_migrations")[0][0] or 0)

    def migrate(self) -> list[int]:
        """Create or upgrade the queue's tables; each migration once, under the store's
        migration lock, in its own transaction. Returns the versions applied."""
        applied: list[int] = []
        if self.schema_version() == CURRENT_APPROVALS_SCHEMA_VERSION:
            return applied
        with self.store.write_transaction():
            self.store.lock_migrations()
            self.store.execute(self.store.ddl(
                "CREATE TABLE IF NOT EXISTS approval_migrations (version INTEGER PRIMARY KEY,"
                " description TEXT NOT NULL, applied_us BIGINT NOT NULL)"
            ))
        for migration in _MIGRATIONS:
            with self.store.write_transaction():
                self.store.lock_migrations()
                current = self.schema_version()
                if current > CURRENT_APPROVALS_SCHEMA_VERSION:
                    raise StoreError(
                        f"{self.store.url_for_messages}: the approvals schema is version {current}, newer than "
                        f"this dbguard understands ({CURRENT_APPROVALS_SCHEMA_VERSION}): upgrade dbguard"
                    )
                if migration.version <= current:
                    continue
                for statement in migration.statements:
                    self.store.execute(self.store.ddl(statement))
                self.store.execute(
                    "INSERT INTO approval_migrations (version, description, applied_us) VALUES (?, ?, ?)",
                    (migration.version, migration.description, now_us()),
                )
            applied.append(migration.version)
        return applied

    # -- reading ------------------------------------------------------------------------------

    def get(self, approval_id: str) -> ApprovalRequest:
        rows = self.store.query(_SELECT + " WHERE id = ?", (approval_id,))
        if not rows:
            raise ApprovalNotFound(approval_id)
        return _from_row(rows[0])

    def list_requests(
        self,
        status: ApprovalStatus | Sequence[ApprovalStatus] | None = None,
        *,
        limit: int = 100,
        now: int | None = None,
    ) -> list[ApprovalRequest]:
        """Requests as stored. `status=PENDING`: those still within their deadline, oldest
        first (the most urgent on top); `EXPIRED` includes pending ones past their deadline not
        yet swept; any other filter (or none): newest first."""
        t = now_us() if now is None else now
        wanted = [status] if isinstance(status, ApprovalStatus) else list(status or ())
        limit = max(1, min(limit, _MAX_LIST))
        where: list[str] = []
        params: list[Any] = []
        for s in wanted:
            if s is ApprovalStatus.PENDING:
                where.append("(status = 'pending' AND expires_us > ?)")
                params.append(t)
            elif s is ApprovalStatus.EXPIRED:
                where.append("(status = 'expired' OR (status = 'pending' AND expires_us <= ?))")
                params.append(t)
            else:
                where.append("status = ?")
                params.append(s.value)
        sql = _SELECT + (" WHERE " + " OR ".join(where) if where else "")
        sql += " ORDER BY created_us, id" if wanted == [ApprovalStatus.PENDING] else " ORDER BY created_us DESC, id"
        return [_from_row(r) for r in self.store.query(sql + " LIMIT ?", (*params, limit))]

    def find(
        self, identity: str, sql: str, parameters: tuple[str | None, ...] | None, status: ApprovalStatus,
        *, now: int | None = None,
    ) -> ApprovalRequest | None:
        """The oldest request of this identity for this exact statement with `status` that is
        still within its deadline (a pending one to wait on again, or an approved, unused grant
        for retry mode), or None."""
        t = now_us() if now is None else now
        rows = self.store.query(
            _SELECT + " WHERE fingerprint = ? AND status = ? AND expires_us > ? ORDER BY created_us, id LIMIT 1",
            (fingerprint(identity, sql, parameters), status.value, t),
        )
        return _from_row(rows[0]) if rows else None

    # -- changes ------------------------------------------------------------------------------

    def create(self, request: ApprovalRequest, *, now: int | None = None) -> ApprovalRequest:
        """Store a new pending request (id, created and expiry filled in when empty), journal
        `requested` (by the requesting identity), notify. Returns the stored request."""
        t = now_us() if now is None else now
        r = replace(
            request,
            id=request.id or new_approval_id(),
            created_us=request.created_us or t,
            expires_us=request.expires_us or (request.created_us or t) + self.timeout_us,
            status=ApprovalStatus.PENDING, decided_by="", decided_us=None, reason="", used_us=None,
        )
        b = r.blast_radius
        with self.store.write_transaction():
            self.store.execute(_INSERT, (
                r.id, r.status.value, r.created_us, r.expires_us, r.identity, r.identity_kind, _json(r.roles),
                r.session_id, r.statement_seq, r.client_address, r.listener, r.database, r.protocol, r.sql,
                None if r.parameters is None else _json(r.parameters), _json(r.rule_ids), _json(r.approvers),
                _json(r.tables), r.intent, b.estimated_rows, b.exact_rows, b.note, "", None, "", None, t,
                r.fingerprint,
            ))
            self._changed(r, ApprovalEventKind.REQUESTED, t, by=r.identity)
        self._notify(ApprovalEventKind.REQUESTED, r)
        return r

    def set_blast_radius(self, approval_id: str, blast: BlastRadius) -> ApprovalRequest:
        """Record the preview measured after the request was created (no journal event)."""
        with self.store.write_transaction():
            self.store.execute(
                "UPDATE approval_requests SET estimated_rows = ?, exact_rows = ?, blast_note = ?, updated_us = ?"
                " WHERE id = ?",
                (blast.estimated_rows, blast.exact_rows, blast.note, now_us(), approval_id),
            )
            self.store.execute(_BUMP)
            self.store.notify(CHANNEL, approval_id)
        return self.get(approval_id)

    def approve(self, approval_id: str, by: str, roles: Sequence[str] = (), reason: str = "",
                *, now: int | None = None) -> ApprovalRequest:
        return self.decide(approval_id, Verdict.APPROVE, by, roles, reason, now=now)

    def deny(self, approval_id: str, by: str, roles: Sequence[str] = (), reason: str = "",
             *, now: int | None = None) -> ApprovalRequest:
        return self.decide(approval_id, Verdict.DENY, by, roles, reason, now=now)

    def decide(
        self,
        approval_id: str,
        verdict: Verdict,
        by: str,
        roles: Sequence[str] = (),
        reason: str = "",
        *,
        now: int | None = None,
    ) -> ApprovalRequest:
        """Approve or deny a pending request as identity `by` holding `roles` (the caller has
        proved who `by` is). Atomic: of two concurrent deciders exactly one succeeds. Raises
        DecisionRefused (nothing changed, except that a request found past its deadline is
        recorded as expired), ApprovalNotFound, or ValueError (no identity; a denial without
        a reason). An approval's `expires_us` becomes the end of the grant (decision + timeout)."""
        if not by:
            raise ValueError("a decision needs the deciding identity")
        reason = reason.strip()
        if verdict is Verdict.DENY and not reason:
            raise ValueError("a denial needs a reason")
        t = now_us() if now is None else now
        refused: DecisionRefused | None = None
        expired: ApprovalRequest | None = None
        with self.store.write_transaction():
            rows = self.store.query(_SELECT + " WHERE id = ?" + self._for_update, (approval_id,))
            if not rows:
                raise ApprovalNotFound(approval_id)
            r = _from_row(rows[0])
            if r.status is not ApprovalStatus.PENDING:
                raise DecisionRefused(Refusal.NOT_PENDING, _not_pending(r), r)
            if r.expires_us <= t:
                expired = self._expire_locked(r, t, f"timed out at {_when(r.expires_us)}")
                refused = DecisionRefused(
                    Refusal.EXPIRED,
                    f"approval {r.id} expired at {_when(r.expires_us)} before this decision: nothing was "
                    f"{'approved' if verdict is Verdict.APPROVE else 'denied'} (the statement will not run)",
                    expired,
                )
            elif by == r.identity:
                raise DecisionRefused(
                    Refusal.SELF_APPROVAL,
                    f"approval {r.id}: {by} issued this statement and cannot decide on it; ask another approver",
                    r,
                )
            elif r.approvers and not set(roles) & set(r.approvers):
                raise DecisionRefused(
                    Refusal.NOT_AN_APPROVER,
                    f"approval {r.id}: rule {', '.join(r.rule_ids) or '?'} needs an approver with role "
                    f"{' or '.join(r.approvers)}; {by} has {', '.join(roles) if roles else 'no roles'}",
                    r,
                )
            else:
                status = ApprovalStatus.APPROVED if verdict is Verdict.APPROVE else ApprovalStatus.DENIED
                expires = t + self.timeout_us if status is ApprovalStatus.APPROVED else r.expires_us
                self.store.execute(
                    "UPDATE approval_requests SET status = ?, decided_by = ?, decided_us = ?, reason = ?,"
                    " expires_us = ?, updated_us = ? WHERE id = ? AND status = 'pending'",
                    (status.value, by, t, reason, expires, t, r.id),
                )
                r = replace(r, status=status, decided_by=by, decided_us=t, reason=reason, expires_us=expires)
                kind = ApprovalEventKind.APPROVED if status is ApprovalStatus.APPROVED else ApprovalEventKind.DENIED
                self._changed(r, kind, t, by=by, reason=reason)
        if expired is not None:
            self._notify(ApprovalEventKind.EXPIRED, expired)
        if refused is not None:
            raise refused
        self._notify(ApprovalEventKind.APPROVED if r.status is ApprovalStatus.APPROVED else ApprovalEventKind.DENIED,
                     r)
        return r

    def consume(self, approval_id: str, *, now: int | None = None) -> ApprovalRequest:
        """Use an approved grant: approved → used, exactly once (atomic; also across restarts,
        since the store keeps it). Raises DecisionRefused (NOT_APPROVED, GRANT_EXPIRED) when the
        statement must not run. Not journaled: the statement's own events record that it ran."""
        t = now_us() if now is None else now
        with self.store.write_transaction():
            rows = self.store.query(_SELECT + " WHERE id = ?" + self._for_update, (approval_id,))
            if not rows:
                raise ApprovalNotFound(approval_id)
            r = _from_row(rows[0])
            if r.status is not ApprovalStatus.APPROVED:
                raise DecisionRefused(Refusal.NOT_APPROVED, _not_pending(r) if r.status is not ApprovalStatus.PENDING
                                      else f"approval {r.id} is still pending", r)
            if r.expires_us <= t:
                raise DecisionRefused(Refusal.GRANT_EXPIRED,
                                      f"approval {r.id} was approved, but its grant ended at {_when(r.expires_us)}", r)
            self.store.execute(
                "UPDATE approval_requests SET status = 'used', used_us = ?, updated_us = ?"
                " WHERE id = ? AND status = 'approved'",
                (t, t, r.id),
            )
            self.store.execute(_BUMP)
            self.store.notify(CHANNEL, r.id)
        return replace(r, status=ApprovalStatus.USED, used_us=t)

    def expire_due(self, *, now: int | None = None, limit: int = 1000) -> list[ApprovalRequest]:
        """Expire every pending request past its deadline (journaled, notified); returns them.
        Safe to run from several proxies at once: each request expires once."""
        t = now_us() if now is None else now
        with self.store.write_transaction():
            rows = self.store.query(
                _SELECT + " WHERE status = 'pending' AND expires_us <= ? ORDER BY id LIMIT ?" + self._skip_locked,
                (t, limit),
            )
            done = [self._expire_locked(_from_row(row), t, f"timed out at {_when(int(row[3]))}") for row in rows]
        for r in done:
            self._notify(ApprovalEventKind.EXPIRED, r)
        return done

    def expire_session(self, session_id: str, reason: str = "its session ended", *,
                       now: int | None = None) -> list[ApprovalRequest]:
        """Expire the pending requests of a session that is gone (client disconnected, proxy
        restarted): a statement whose session is gone can never run."""
        t = now_us() if now is None else now
        with self.store.write_transaction():
            rows = self.store.query(
                _SELECT + " WHERE session_id = ? AND status = 'pending' ORDER BY id" + self._for_update, (session_id,)
            )
            done = [self._expire_locked(_from_row(row), t, reason) for row in rows]
        for r in done:
            self._notify(ApprovalEventKind.EXPIRED, r)
        return done

    def _expire_locked(self, r: ApprovalRequest, t: int, reason: str) -> ApprovalRequest:
        self.store.execute(
            "UPDATE approval_requests SET status = 'expired', decided_us = ?, reason = ?, updated_us = ?"
            " WHERE id = ? AND status = 'pending'",
            (t, reason, t, r.id),
        )
        r = replace(r, status=ApprovalStatus.EXPIRED, decided_us=t, reason=reason)
        self._changed(r, ApprovalEventKind.EXPIRED, t, by="", reason=reason)
        return r

    def _changed(self, r: ApprovalRequest, kind: ApprovalEventKind, t: int, *, by: str, reason: str = "") -> None:
        """Inside the change's transaction: the revision, the wake-up, the journal event."""
        self.store.execute(_BUMP)
        self.store.notify(CHANNEL, r.id)
        if self.hasher is not None:
            self.store.append_in_transaction(
                [ApprovalEvent(approval_id=r.id, time_us=t, event=kind, session_id=r.session_id,
                               statement_seq=r.statement_seq, by=by, reason=reason)],
                self.hasher,
            )

    def _notify(self, kind: ApprovalEventKind, r: ApprovalRequest) -> None:
        if self.notifier is not None:
            self.notifier.send(kind, r)

    # -- waiting for changes ------------------------------------------------------------------

    def _revision(self) -> int:
        rows = self.store.query("SELECT rev FROM approval_revision WHERE id = 1")
        return int(rows[0][0]) if rows else 0

    def wait_for_update(self, timeout: float) -> bool:
        """Wait up to `timeout` seconds for any change to the queue made since the previous
        call (or since this object was opened), by any process sharing the store. True when
        something changed. PostgreSQL: LISTEN/NOTIFY; sqlite: polls every poll_interval."""
        deadline = time.monotonic() + max(timeout, 0.0)
        if self.store.dialect == "postgresql" and self._listener is None:
            self._listener = self.store.listen(CHANNEL)  # before reading the revision: no change is missed
        while True:
            rev = self._revision()
            if rev != self._seen_rev:
                self._seen_rev = rev
                return True
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            if self._listener is not None:
                if not self._listener.wait(left):
                    return False
            else:
                time.sleep(min(self.poll_interval, left))


def _not_pending(r: ApprovalRequest) -> str:
    if r.status is ApprovalStatus.APPROVED:
        return f"approval {r.id} was already approved by {r.decided_by} at {_when(r.decided_us)}: nothing done"
    if r.status is ApprovalStatus.USED:
        return (f"approval {r.id} was approved by {r.decided_by} and already used at {_when(r.used_us)}: "
                "nothing done")
    if r.status is ApprovalStatus.DENIED:
        return (f"approval {r.id} was already denied by {r.decided_by} at {_when(r.decided_us)}"
                f" ({r.reason}): nothing done")
    return f"approval {r.id} already expired at {_when(r.decided_us)} ({r.reason}): nothing done"
