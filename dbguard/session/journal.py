"""What one session tells the journal, sans-IO: the events of a session, shared by both protocols.

Owns: numbering the session's statements (1, 2, 3...), building the session_start,
statement, outcome, cancel and session_end events, and pairing each forwarded statement with
its outcome. The session calls `statement()` as it decides a statement, `client_cycle_end()`
when a response cycle is closed on the client's side (a Query, a Sync, a MySQL command), then
`result()` / `error()` as the server reports each statement's end, and `server_cycle_end()`
when the server has finished that cycle (ReadyForQuery, a MySQL command's last packet).

The driver takes what accumulated with `take()` after every session call and hands it to the
journal before anything that depends on it goes on; when `take()` says so and the journal
cannot make the events durable at once (a writer thread), it holds every byte for the upstream
until they are: that is the write-ahead guarantee (docs/journal.md). Ordinary statements and
their outcomes are handed over already encoded (`EncodedEvent`), the rest as event objects.

Must not touch: sockets, threads, the writer, the store.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Mapping, Sequence
from typing import Final, TypeAlias

from dbguard.journal.events import (
    ACTION_TEXT,
    CancelEvent,
    JournalEvent,
    OutcomeEvent,
    SessionEndEvent,
    json_string,
    now_us,
    outcome_payload,
    session_start_from,
    statement_from,
    statement_payload,
)
from dbguard.journal.intent import intent_from_comment
from dbguard.journal.store import EncodedEvent
from dbguard.model import Decision, SessionInfo

__all__ = ["NOT_RUN", "NO_RESULT", "SessionEvent", "SessionJournal", "statement_text"]

# What a session hands the journal: the statement and outcome events of ordinary statements
# already encoded (`events.statement_payload`, `events.outcome_payload`: no event object on
# the hot path), every other event as an event object the sink encodes.
SessionEvent: TypeAlias = JournalEvent | EncodedEvent

# The outcome's error_code for a statement that was forwarded but never ran, because an
# earlier statement of the same batch failed (the server skipped it).
NOT_RUN: Final = "not-run"
# ...and for one whose session ended before its result came (the server may or may not have
# run it: the client never saw a result).
NO_RESULT: Final = "no-result"
_NOT_RUN_MESSAGE: Final = "not run: an earlier statement of the same batch failed"
# Error messages in outcome events are cut here: a server's message may quote data.
MAX_ERROR_CHARS: Final = 500


class _InFlight:
    """A forwarded statement waiting for its outcome."""

    __slots__ = ("absorbs", "done", "error_code", "error_message", "masked", "rows", "seq", "started_us")

    def __init__(self, seq: int, started_us: int, absorbs: bool) -> None:
        self.seq = seq
        self.started_us = started_us
        self.absorbs = absorbs  # one message holding several statements: every result is its own
        self.rows: int | None = None
        self.error_code = ""
        self.error_message = ""
        self.done = False
        self.masked: dict[str, int] = {}  # column -> values masked (never the values)


def statement_text(sql: bytes | str) -> str:
    if isinstance(sql, str):
        return sql
    try:
        return sql.decode("utf-8")
    except UnicodeDecodeError:
        # Not UTF-8 (a client encoding other than UTF-8, or junk): journal it faithfully but
        # as valid text; the replacement characters show where bytes did not decode.
        return sql.decode("utf-8", "replace")


def _session_json(session_id: str) -> str | None:
    """A session id as JSON, for the encoded events; None if not plain ASCII (events then)."""
    return json_string(session_id) if session_id.isascii() else None


class SessionJournal:
    """The journal side of one session. Not thread-safe: the session's own."""

    __slots__ = (
        "_cycles",
        "_events",
        "_open",
        "_session_json",
        "_write_ahead",
        "intent",
        "redact_parameters",
        "seq",
        "session_id",
    )

    def __init__(self, session_id: str, *, redact_parameters: bool = False) -> None:
        self.session_id = session_id
        self._session_json = _session_json(session_id)
        self.redact_parameters = redact_parameters
        self.intent = ""  # declared for the whole session (the dbguard.intent startup option)
        self.seq = 0
        self._events: list[SessionEvent] = []
        self._write_ahead = False
        self._open: list[_InFlight] = []  # statements of the cycle the client has not closed
        self._cycles: deque[list[_InFlight]] = deque()  # closed cycles, oldest first

    # -- for the driver ------------------------------------------------------------------------

    @property
    def has_events(self) -> bool:
        return bool(self._events)

    def take(self) -> tuple[list[SessionEvent], bool]:
        """The events produced since the last call, and whether they must be durable before
        anything more is sent upstream (True when one of them is a statement or a session
        start)."""
        events, ahead = self._events, self._write_ahead
        self._events = []
        self._write_ahead = False
        return events, ahead

    # -- for the session -------------------------------------------------------------------------

    def started(self, info: SessionInfo, attributes: Mapping[str, str] | None = None, intent: str = "") -> None:
        self.intent = intent
        self._events.append(session_start_from(info, client_attributes=attributes, intent=intent))
        self._write_ahead = True

    def statement(
        self,
        sql: bytes | str,
        decision: Decision,
        *,
        parameters: Sequence[str | None] | None = None,
        forwarded: bool = True,
        absorbs: bool = False,
        approval_id: str | None = None,
    ) -> int:
        """Record one statement (or one message of several) as decided; returns its number.

        `forwarded`: it goes to the server and gets an outcome (False for a refusal, which
        never runs). `absorbs`: several statements in one message, so every result and the
        first error until the cycle's end are this one's."""
        self.seq += 1
        seq = self.seq
        text = statement_text(sql)
        intent = self.statement_intent(text) or None
        time_us = time.time_ns() // 1000
        payload = None
        if (approval_id is None and self._session_json is not None
                and (parameters is None or not self.redact_parameters)):
            payload = statement_payload(self._session_json, seq, time_us, text, decision, parameters, intent)
        if payload is not None:
            self._events.append(EncodedEvent("statement", self.session_id, time_us, payload, seq,
                                             ACTION_TEXT[decision.action], None))
        else:
            self._events.append(statement_from(
                self.session_id, seq, text, decision, decision.analysis,
                parameters=parameters, redact_parameters=self.redact_parameters,
                intent=intent, approval_id=approval_id or None, time_us=time_us,
            ))
        self._write_ahead = True
        if forwarded:
            self._open.append(_InFlight(seq, time_us, absorbs))
        return seq

    def statement_intent(self, sql: bytes | str) -> str:
        """The intent a statement would be journaled with (its comment's, else the session's)."""
        text = statement_text(sql)
        # ("*/" in text: a C-level scan that rules out almost every statement before the copy)
        found = intent_from_comment(text) if "*/" in text and text.rstrip(" \t\r\n;").endswith("*/") else None
        return found or self.intent

    def client_cycle_end(self) -> None:
        """The client closed a response cycle (a Query; a Sync; a MySQL command): the next
        server cycle end completes the statements recorded since the previous one."""
        self._cycles.append(self._open)
        self._open = []

    def result(self, rows: int | None, *, masked: Sequence[tuple[str, int]] = ()) -> None:
        """A statement of the oldest cycle ended well (rows returned or affected, if known;
        `masked`: how many values of which result columns were masked)."""
        entry = self._current()
        if entry is None:
            return
        for column, count in masked:
            entry.masked[column] = entry.masked.get(column, 0) + count
        if entry.absorbs:
            if rows is not None:
                entry.rows = rows if entry.rows is None else entry.rows + rows
        else:
            entry.rows = rows
            entry.done = True

    def error(self, code: str, message: str) -> None:
        """The server reported an error for the current statement of the oldest cycle; the
        statements after it in the same cycle were not run."""
        entry = self._current()
        if entry is None:
            return
        entry.error_code = code
        entry.error_message = message[:MAX_ERROR_CHARS]
        entry.done = True
        cycle = self._cycles[0] if self._cycles else self._open
        for later in cycle:
            if not later.done:
                later.error_code = NOT_RUN
                later.error_message = _NOT_RUN_MESSAGE
                later.done = True

    def server_cycle_end(self) -> None:
        """The server finished the oldest cycle: its statements' outcomes are recorded."""
        if not self._cycles:
            cycle, self._open = self._open, []  # the client never closed it (a Flush)
        else:
            cycle = self._cycles.popleft()
        if not cycle:
            return
        now = now_us()
        events, session_json = self._events, self._session_json
        for entry in cycle:
            if not entry.error_code and not entry.masked and session_json is not None:
                events.append(EncodedEvent("outcome", self.session_id, now, outcome_payload(
                    session_json, now, entry.seq, max(0, now - entry.started_us), entry.rows), entry.seq, "", None))
                continue
            events.append(OutcomeEvent(
                self.session_id, now, entry.seq, max(0, now - entry.started_us),
                entry.rows, entry.error_code, entry.error_message,
                tuple(sorted(entry.masked.items())) if entry.masked else (),
            ))

    def cancelled(self, client_address: str) -> None:
        running = self._cycles[0][0].seq if self._cycles and self._cycles[0] else None
        self._events.append(CancelEvent(self.session_id, now_us(), running, client_address))

    def ended(self, reason: str) -> None:
        """The session is over; statements still waiting for an outcome never got one."""
        cycles = [*self._cycles, self._open]
        self._cycles.clear()
        self._open = []
        now = now_us()
        for cycle in cycles:
            for entry in cycle:
                if not entry.done:
                    self._events.append(OutcomeEvent(
                        self.session_id, now, entry.seq, max(0, now - entry.started_us),
                        error_code=NO_RESULT, error_message=f"no result: the session ended ({reason})",
                    ))
        self._events.append(SessionEndEvent(self.session_id, now, reason))

    def renew(self, session_id: str) -> None:
        """After `ended()`: the connection goes on as a new session (MySQL's COM_CHANGE_USER
        re-authenticates as another identity), numbered from 1 again; `started()` follows.
        Events not taken yet stay queued, in order."""
        self.session_id = session_id
        self._session_json = _session_json(session_id)
        self.seq = 0
        self.intent = ""

    def _current(self) -> _InFlight | None:
        cycle = self._cycles[0] if self._cycles else self._open
        for entry in cycle:
            if not entry.done:
                return entry
        return None
