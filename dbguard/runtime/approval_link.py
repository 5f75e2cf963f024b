"""The approval queue as sessions use it: one `ApprovalLink` per process.

Owns: turning a session's `HoldStatement` into a request in the store (with its blast-radius
preview), telling the session once the request exists (wait mode: PostgreSQL's notice),
waiting for the decision without blocking the event loop, using a grant exactly once, and the
answers for denial, expiry, retry mode and an unavailable queue (session/holds.py). Requests
of a session that ends while waiting expire; with a local (sqlite) store, the pending
wait-mode requests an earlier run of the proxy left behind expire at start.

Threads: every change goes through one `ApprovalStore` on one worker thread (the store object
is not thread-safe); one more thread with its own store connection watches the queue
(PostgreSQL LISTEN/NOTIFY, sqlite polling) and expires requests past their deadline, waking
the sessions whose request changed. Nothing here blocks the loop.

Must not: know a wire protocol, decide policy, authenticate approvers (the CLI does).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import threading
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar

from dbguard.approvals.model import (
    ApprovalError,
    ApprovalRequest,
    ApprovalStatus,
    BlastRadius,
)
from dbguard.approvals.store import ApprovalStore
from dbguard.journal import StoreError
from dbguard.model import SessionInfo, StatementInfo
from dbguard.session.holds import HeldStatement, HoldResolved, refusal_for
from dbguard.session.pg_actions import UpstreamSettings

__all__ = ["CANCELLED", "ApprovalLink", "Measure", "denied_message", "retry_message", "timed_out_message"]

log = logging.getLogger("dbguard.approvals")

T = TypeVar("T")

# How often the watcher looks for expired requests (and, with sqlite, for decisions).
WATCH_INTERVAL = 0.25
EXPIRY_SWEEP_INTERVAL = 1.0
# The blast-radius preview gets this long per step (connect, statement) before the request is
# created without it; the request never waits on a slow measurement for more than ~3 steps.
MEASURE_TIMEOUT = 2.0

# blast_radius.measure: (upstream, protocol, database, sql, parameters, analysis) -> preview
Measure = Callable[
    [UpstreamSettings, str, str, str, tuple[str | None, ...] | None, tuple[StatementInfo, ...]], BlastRadius]


# The cancel message a HoldRunner gives a waiting hold's task when the client cancels it.
CANCELLED = "cancelled by the client"


def denied_message(by: str, reason: str) -> str:
    return f"dbguard: denied by {by}: {reason}"


def timed_out_message(approval_id: str) -> str:
    return f"dbguard: approval {approval_id} timed out"


def retry_message(approval_id: str) -> str:
    return f"dbguard: held for approval {approval_id}; run it again once approved"


class ApprovalLink:
    """The process's link to the approval queue (see the module docstring)."""

    def __init__(
        self,
        url: str,
        *,
        key: bytes | None,
        timeout: float,
        retry_mode: bool,
        webhooks: Sequence[str] = (),
        redacted_url: str = "",
        measure: Measure | None = None,
        settle_journal: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self.url = url
        self.key = key
        self.timeout = timeout
        self.retry_mode = retry_mode
        self.webhooks = tuple(webhooks)
        self.redacted_url = redacted_url or url
        self.measure = measure
        # Waits until the sessions' journal events are in the store, so that a request's
        # `requested` event follows its held statement's event in the chain.
        self._settle_journal = settle_journal
        self._store: ApprovalStore | None = None
        self._executor = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="dbguard-approvals")
        self._loop: asyncio.AbstractEventLoop | None = None
        # approval id -> the future its waiting session awaits (loop side only)
        self._waiting: dict[str, asyncio.Future[ApprovalRequest]] = {}
        self._watched: set[str] = set()  # a copy of the waiting ids for the watcher thread
        self._watched_lock = threading.Lock()
        self._stop = threading.Event()
        self._watcher: threading.Thread | None = None

    # -- lifecycle --------------------------------------------------------------------------

    async def start(self) -> None:
        """Open the queue (creating its tables), expire what an earlier run left pending, and
        start watching. Raises StoreError when the store cannot be opened."""
        self._loop = asyncio.get_running_loop()
        self._store = await self._run(self._open_store)
        if not self.retry_mode and self._store.store.dialect == "sqlite":
            expired = await self._run(self._expire_left_behind)
            if expired:
                log.warning("approvals.expired_at_start", extra={"requests": expired,
                                                                 "reason": "the proxy restarted"})
        self._watcher = threading.Thread(target=self._watch, name="dbguard-approvals-watch", daemon=True)
        self._watcher.start()

    def _open_store(self) -> ApprovalStore:
        return ApprovalStore.open(self.url, key=self.key, timeout=self.timeout, webhooks=self.webhooks,
                                  redacted_url=self.redacted_url)

    def _expire_left_behind(self) -> int:
        """A wait-mode request is only ever used by the session that waits for it: any still
        pending when the proxy starts belongs to a session of an earlier run, which is gone."""
        store = self._require_store()
        count = 0
        for request in store.list_requests(ApprovalStatus.PENDING, limit=1000):
            count += len(store.expire_session(request.session_id, "the proxy restarted"))
        return count

    async def close(self) -> None:
        self._stop.set()
        if self._watcher is not None:
            await asyncio.to_thread(self._watcher.join, 5.0)
        if self._store is not None:
            store, self._store = self._store, None
            await self._run(store.close)
        self._executor.shutdown(wait=False)

    # -- holding a statement ----------------------------------------------------------------

    async def hold(
        self,
        info: SessionInfo,
        held: HeldStatement,
        upstream: UpstreamSettings,
        requested: Callable[[ApprovalRequest], None],
    ) -> HoldResolved:
        """Ask the queue about one held statement and return what the session does with it.
        `requested` is called (on the loop) once a wait-mode request exists. Never raises
        for the queue's failures: they refuse the statement (fail closed). Cancelled when the
        session ends: its pending request then expires."""
        identity = info.identity.name
        try:
            if self.retry_mode:
                return await self._retry(info, held, upstream)
            request = await self._create(info, held, upstream)
        except (StoreError, ApprovalError, OSError) as exc:
            return self._unavailable(held, exc)
        requested(request)
        log.info("approval.waiting", extra={"approval": request.id, "session": info.session_id,
                                            "identity": identity, "rules": ",".join(held.rule_ids)})
        try:
            decided = await self._wait(request)
            return await self._outcome(held, decided)
        except asyncio.CancelledError as exc:
            cancelled = bool(exc.args) and exc.args[0] == CANCELLED
            self._expire_quietly(info.session_id, "the client cancelled it" if cancelled
                                 else "its session ended while waiting")
            raise
        except (StoreError, ApprovalError, OSError) as exc:
            return self._unavailable(held, exc, request.id)

    async def _retry(self, info: SessionInfo, held: HeldStatement, upstream: UpstreamSettings) -> HoldResolved:
        """Retry mode: a re-sent statement runs on its grant; otherwise the client is told at
        once that it is held (one pending request per statement, however often it is sent)."""
        store = self._require_store()
        identity = info.identity.name
        grant = await self._run(store.find, identity, held.sql, held.parameters, ApprovalStatus.APPROVED)
        if grant is not None:
            try:
                used = await self._run(store.consume, grant.id)
            except ApprovalError as exc:
                log.info("approval.grant_refused", extra={"approval": grant.id, "error": str(exc)})
            else:
                log.info("approval.grant_used", extra={"approval": used.id, "session": info.session_id})
                return HoldResolved(used.id, run=True)
        denied = await self._run(store.find, identity, held.sql, held.parameters, ApprovalStatus.DENIED)
        if denied is not None:
            return HoldResolved(denied.id, run=False, refusal=refusal_for(
                held, denied.id, "denied", denied_message(denied.decided_by, denied.reason),
                "A DBA denied this statement; change it, or ask them."))
        pending = await self._run(store.find, identity, held.sql, held.parameters, ApprovalStatus.PENDING)
        request = pending if pending is not None else await self._create(info, held, upstream)
        return HoldResolved(request.id, run=False, refusal=refusal_for(
            held, request.id, "pending", retry_message(request.id),
            f"Send the same statement (same text and parameters) again once a DBA has approved it "
            f"(dbguard approvals show {request.id})."))

    async def _create(self, info: SessionInfo, held: HeldStatement, upstream: UpstreamSettings) -> ApprovalRequest:
        blast = await self._blast_radius(info, held, upstream)
        identity = info.identity
        request = ApprovalRequest(
            identity=identity.name,
            identity_kind=identity.kind.value,
            roles=tuple(identity.roles),
            sql=held.sql,
            parameters=held.parameters,
            session_id=info.session_id,
            statement_seq=held.statement_seq,
            client_address=info.client_address,
            listener=info.listener,
            database=info.database,
            protocol=info.protocol,
            rule_ids=held.rule_ids,
            approvers=held.approvers,
            tables=held.tables,
            intent=held.intent,
            blast_radius=blast,
        )
        if self._settle_journal is not None:
            await self._settle_journal()
        return await self._run(self._require_store().create, request)

    async def _blast_radius(self, info: SessionInfo, held: HeldStatement, upstream: UpstreamSettings) -> BlastRadius:
        if self.measure is None:
            return BlastRadius(note="not measured: the blast-radius preview is off")
        measure = self.measure
        try:
            return await asyncio.wait_for(
                asyncio.to_thread(measure, upstream, info.protocol, info.database, held.sql, held.parameters,
                                  held.decision.analysis),
                4 * MEASURE_TIMEOUT)
        except TimeoutError:
            return BlastRadius(note="not measured: the measurement took too long")
        except Exception as exc:
            log.warning("approval.measure_failed", extra={"error": type(exc).__name__})
            return BlastRadius(note=f"not measured: {type(exc).__name__}")

    async def _wait(self, request: ApprovalRequest) -> ApprovalRequest:
        """Until the request is decided or expired (the watcher sweeps deadlines)."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[ApprovalRequest] = loop.create_future()
        self._waiting[request.id] = future
        with self._watched_lock:
            self._watched.add(request.id)
        try:
            # The watcher expires it at its deadline; the margin covers a watcher that is late.
            left = max(0.0, request.expires_us / 1_000_000 - time.time()) + 10 * EXPIRY_SWEEP_INTERVAL
            try:
                return await asyncio.wait_for(asyncio.shield(future), left)
            except TimeoutError:
                store = self._require_store()
                await self._run(store.expire_due)
                return await self._run(store.get, request.id)
        finally:
            self._waiting.pop(request.id, None)
            with self._watched_lock:
                self._watched.discard(request.id)

    async def _outcome(self, held: HeldStatement, decided: ApprovalRequest) -> HoldResolved:
        if decided.status is ApprovalStatus.APPROVED:
            try:
                used = await self._run(self._require_store().consume, decided.id)
            except ApprovalError as exc:
                return HoldResolved(decided.id, run=False, refusal=refusal_for(
                    held, decided.id, "unusable", f"dbguard: {exc}"))
            log.info("approval.granted", extra={"approval": used.id, "by": used.decided_by})
            return HoldResolved(used.id, run=True)
        if decided.status is ApprovalStatus.DENIED:
            return HoldResolved(decided.id, run=False, refusal=refusal_for(
                held, decided.id, "denied", denied_message(decided.decided_by, decided.reason),
                "A DBA denied this statement; change it, or ask them."))
        if decided.status is ApprovalStatus.PENDING:  # only if the store's clock disagrees with ours
            decided = await self._run(self._require_store().get, decided.id)
        return HoldResolved(decided.id, run=False, refusal=refusal_for(
            held, decided.id, "expired", timed_out_message(decided.id),
            "Nobody decided in time (approvals.timeout); send it again to ask again."))

    def _unavailable(self, held: HeldStatement, exc: BaseException, approval_id: str = "") -> HoldResolved:
        log.error("approval.queue_unavailable", extra={"error": str(exc), "approval": approval_id})
        rule = held.rule_ids[0] if held.rule_ids else "?"
        return HoldResolved(approval_id, run=False, refusal=refusal_for(
            held, approval_id, "unavailable",
            f"dbguard: held by rule {rule}, but the approval queue is unavailable: the statement was not run",
            "Try again later; a DBA can check the proxy's log and its store."))

    def _expire_quietly(self, session_id: str, reason: str) -> None:
        """The session ended while waiting: its request can never run; say so in the queue."""
        store = self._store
        if store is None:
            return

        def expire() -> None:
            try:
                store.expire_session(session_id, reason)
            except (StoreError, ApprovalError, OSError) as exc:
                log.warning("approval.expire_failed", extra={"session": session_id, "error": str(exc)})

        self._executor.submit(expire)

    # -- plumbing ---------------------------------------------------------------------------

    def _require_store(self) -> ApprovalStore:
        if self._store is None:
            raise StoreError("the approval queue is closed")
        return self._store

    async def _run(self, fn: Callable[..., T], *args: object) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, fn, *args)

    def _watch(self) -> None:
        """The watcher thread: wakes waiting sessions whose request changed, and expires
        requests past their deadline (once per EXPIRY_SWEEP_INTERVAL while any session waits)."""
        store: ApprovalStore | None = None
        last_sweep = 0.0
        while not self._stop.is_set():
            try:
                if store is None:
                    store = ApprovalStore.open(self.url, key=self.key, timeout=self.timeout,
                                               redacted_url=self.redacted_url, migrate=False)
                store.wait_for_update(WATCH_INTERVAL)
                with self._watched_lock:
                    watched = list(self._watched)
                if not watched:
                    continue
                now = time.monotonic()
                if now - last_sweep >= EXPIRY_SWEEP_INTERVAL:
                    last_sweep = now
                    store.expire_due()
                for approval_id in watched:
                    request = store.get(approval_id)
                    if request.status is not ApprovalStatus.PENDING:
                        self._wake(request)
            except (StoreError, ApprovalError, OSError) as exc:
                log.warning("approval.watch_failed", extra={"error": str(exc)})
                if store is not None:
                    store.close()
                    store = None
                self._stop.wait(1.0)
        if store is not None:
            store.close()

    def _wake(self, request: ApprovalRequest) -> None:
        loop = self._loop
        if loop is None:
            return

        def resolve() -> None:
            future = self._waiting.get(request.id)
            if future is not None and not future.done():
                future.set_result(request)

        with contextlib.suppress(RuntimeError):  # a closed loop: nobody waits any more
            loop.call_soon_threadsafe(resolve)
