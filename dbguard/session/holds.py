"""Holding a statement for approval, as both protocols' sessions see it (sans-IO).

Owns: what a session hands its driver when a `hold` rule parks a statement (`HoldStatement`,
carrying a `HeldStatement`), what the driver answers once the queue has spoken
(`HoldResolved`: run it, or refuse it with the PRODUCT.md message), and the refusal
decisions a session sends the client (denied, timed out, held in retry mode, queue
unavailable), with the approval id in their DETAIL.

The session stops deciding anything after a held statement until it is resolved (what the
client sent behind it waits, bounded), so the protocol state stays what it would be had the
statement simply been slow. The driver (runtime/approval_link.py) does the I/O: the request
in the store, the wait, the grant.

Must not touch: the store, sockets, timers.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from dbguard.model import Action, Decision
from dbguard.session.journal import SessionJournal

__all__ = [
    "MAX_HELD_BEHIND_HOLD",
    "HeldStatement",
    "HoldResolved",
    "HoldStatement",
    "journal_abandoned",
    "refusal_for",
]

# Client data a session keeps unread behind a held statement (pipelined commands).
MAX_HELD_BEHIND_HOLD = 8 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class HeldStatement:
    """One statement (or one message of several) that a hold rule parks.

    `statement_seq` is the number the session's journal will give it (None: no journal);
    its statement event is written when it is resolved, with the approval id, before it
    runs."""

    sql: str
    parameters: tuple[str | None, ...] | None
    decision: Decision
    statement_seq: int | None = None
    intent: str = ""  # declared by the client (startup option or sqlcommenter comment)

    @property
    def rule_ids(self) -> tuple[str, ...]:
        return self.decision.rule_ids

    @property
    def approvers(self) -> tuple[str, ...]:
        listed = self.decision.details.get("approvers", "")
        return tuple(role for role in listed.split(",") if role)

    @property
    def tables(self) -> tuple[str, ...]:
        found: dict[str, None] = {}
        for info in self.decision.analysis:
            for table in (*sorted(info.writes), *sorted(info.reads)):
                found.setdefault(table)
        return tuple(found)


@dataclass(frozen=True, slots=True)
class HoldStatement:
    """Driver action: ask the approval queue about `held`, then call the session's
    `hold_resolved()` with the answer (and, in wait mode, `hold_requested()` once the
    request exists, so the client can be told)."""

    held: HeldStatement


@dataclass(frozen=True, slots=True)
class HoldResolved:
    """The queue's answer for a held statement: run it once (`run`), or refuse it with
    `refusal` (a Decision the session renders as it renders a block)."""

    approval_id: str
    run: bool
    refusal: Decision | None = None
    sqlstate: str = "42501"  # PostgreSQL's error code for the refusal (57014: the client cancelled)


def refusal_for(held: HeldStatement, approval_id: str, status: str, message: str, hint: str = "") -> Decision:
    """The refusal the client gets for a held statement: the PRODUCT.md `message`, and a
    DETAIL that adds `approval=<id>` and `status=<status>` to the hold's own key=value pairs
    (`rule=…`, `action=hold`)."""
    details = dict(held.decision.details)
    if approval_id:
        details["approval"] = approval_id
    details["status"] = status
    return dataclasses.replace(held.decision, action=Action.HOLD, reason=message, details=details,
                               hint=hint, enforced=True)


def journal_abandoned(journal: SessionJournal | None, held: HeldStatement, reason: str) -> None:
    """The session ends while `held` waits: journal it as a statement that never ran."""
    if journal is None:
        return
    decision = dataclasses.replace(held.decision, reason=f"dbguard: the session ended while held ({reason})")
    journal.statement(held.sql, decision, parameters=held.parameters, forwarded=False)
