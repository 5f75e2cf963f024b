"""One connection's held statement, on the asyncio side (both protocols' drivers).

Owns: running the approval queue's `hold()` for the statement a session parked
(session/holds.py) as a task of its own, so that the connection and every other session go on;
handing the session the answers (`hold_requested`, `hold_resolved`) unless the connection has
closed meanwhile; cancelling the wait when the connection ends (the queue then expires the
request). Without an approval queue, a hold is refused at once: fail closed.

Must not: know a wire protocol or the store.
"""

from __future__ import annotations

import asyncio
from typing import Protocol

from dbguard.approvals.model import ApprovalRequest
from dbguard.model import Action, Decision, SessionInfo
from dbguard.runtime.approval_link import CANCELLED, ApprovalLink
from dbguard.session.holds import HeldStatement, HoldResolved, refusal_for
from dbguard.session.pg_actions import UpstreamSettings

__all__ = ["HoldRunner", "HoldingConnection"]


class HoldingConnection(Protocol):
    """What a driver's connection offers the runner (it forwards to its session)."""

    @property
    def closed(self) -> bool: ...

    def hold_requested(self, approval_id: str) -> None: ...

    def hold_resolved(self, resolution: HoldResolved) -> None: ...


class HoldRunner:
    """The held statement of one connection (at most one at a time: a session decides
    nothing after a held statement until it is resolved)."""

    def __init__(self, connection: HoldingConnection, link: ApprovalLink | None) -> None:
        self.connection = connection
        self.link = link
        self._task: asyncio.Task[None] | None = None

    @property
    def waiting(self) -> bool:
        return self._task is not None and not self._task.done()

    def start(self, info: SessionInfo, held: HeldStatement, upstream: UpstreamSettings) -> None:
        loop = asyncio.get_running_loop()
        if self.link is None:
            rule = held.rule_ids[0] if held.rule_ids else "?"
            refusal = refusal_for(
                held, "", "unavailable",
                f"dbguard: held by rule {rule}, and this proxy has no approval queue: the statement was not run",
                "Ask a DBA to run it, or rephrase it so no hold rule matches.")
            # Not re-entrantly: the session is still inside the call that asked for the hold.
            loop.call_soon(self._resolve, HoldResolved("", run=False, refusal=refusal))
            return
        self._task = loop.create_task(self._run(self.link, info, held, upstream))

    async def _run(self, link: ApprovalLink, info: SessionInfo, held: HeldStatement,
                   upstream: UpstreamSettings) -> None:
        def requested(request: ApprovalRequest) -> None:
            if not self.connection.closed:
                self.connection.hold_requested(request.id)

        resolution = await link.hold(info, held, upstream, requested)
        self._resolve(resolution)

    def _resolve(self, resolution: HoldResolved) -> None:
        if not self.connection.closed:
            self.connection.hold_resolved(resolution)

    def interrupt(self) -> bool:
        """The client cancelled the held statement (PostgreSQL CancelRequest): stop waiting,
        expire the request, and fail the statement as a cancelled one. False when nothing
        was held."""
        task, self._task = self._task, None
        if task is None or task.done():
            return False
        task.cancel(CANCELLED)
        refusal = Decision(Action.HOLD, reason="canceling statement due to user request",
                           details={"status": "cancelled"})
        asyncio.get_running_loop().call_soon(
            self._resolve, HoldResolved("", run=False, refusal=refusal, sqlstate="57014"))
        return True

    def stop(self) -> bool:
        """The connection ends: stop waiting (the queue expires the request). True when a
        statement was still held."""
        task, self._task = self._task, None
        if task is None or task.done():
            return False
        task.cancel()
        return True
