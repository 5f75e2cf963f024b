# dbguard/journal/replay.py — owns replaying a recorded session for people: each event of the
# session as one line (offset from the session start, the statement with its decision and
# rules, its outcome with rows, duration and error, cancels, approvals, the end), paced by
# the recorded gaps scaled by a speed (0 = no waits) or stepped by the reader. It renders
# text and calls the given sleep / wait functions; it never runs statements (`--execute`
# against a staging database is replay_execute.py) and never prints by itself.
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Final

from dbguard.journal.chain import StoredEvent
from dbguard.journal.events import (
    ApprovalEvent,
    CancelEvent,
    JournalEvent,
    OutcomeEvent,
    PruneEvent,
    SessionEndEvent,
    SessionStartEvent,
    StatementEvent,
    event_to_dict,
    iso_from_us,
)

__all__ = ["ReplayLine", "replay", "replay_lines"]

# Longest statement text shown on one replay line; the rest is elided.
MAX_SHOWN_TEXT: Final = 500


@dataclass(frozen=True, slots=True)
class ReplayLine:
    seq: int  # global sequence number of the event
    time_us: int
    offset_us: int  # since the first event of the replay
    gap_us: int  # since the previous event
    kind: str
    text: str
    style: str  # a rich style name for the CLI: "green", "red", "yellow", "dim", ""
    event: JournalEvent

    def to_json(self) -> dict[str, Any]:
        return {"seq": self.seq, "time": iso_from_us(self.time_us), "offset_us": self.offset_us,
                "gap_us": self.gap_us, "kind": self.kind, "line": self.text, "event": event_to_dict(self.event)}


def _ms(us: int) -> str:
    return f"{us / 1000:.3f} ms" if us < 1_000_000 else f"{us / 1_000_000:.3f} s"


def _shorten(text: str) -> str:
    one_line = " ".join(text.split())
    return one_line if len(one_line) <= MAX_SHOWN_TEXT else one_line[: MAX_SHOWN_TEXT - 1] + "…"


def describe(event: JournalEvent) -> tuple[str, str]:
    """(one line for people, style) for an event."""
    if isinstance(event, SessionStartEvent):
        roles = f", roles {', '.join(event.roles)}" if event.roles else ""
        tls = ", TLS" if event.tls else ""
        app = f", application {event.application_name!r}" if event.application_name else ""
        intent = f", intent {event.intent!r}" if event.intent else ""
        return (f"session start: {event.identity} ({event.identity_kind}{roles}) from {event.client_address} "
                f"via {event.listener} ({event.protocol}{tls}), database {event.database}{app}{intent}", "bold")
    if isinstance(event, StatementEvent):
        verdict = event.action.upper()
        if not event.enforced and event.action != "allow":
            verdict = f"ALLOW (observed {event.action})"
        rules = f" {', '.join(event.rule_ids)}" if event.rule_ids else ""
        extra = ""
        if event.approval_id:
            extra += f" approval {event.approval_id}"
        if event.intent:
            extra += f" intent {event.intent!r}"
        if event.parameters is not None:
            extra += " params (" + ", ".join("NULL" if p is None else repr(p) for p in event.parameters) + ")"
        elif event.parameters_redacted:
            extra += f" params ({event.parameter_count} redacted)"
        style = {"allow": "green", "hold": "yellow", "block": "red"}.get(event.action, "")
        if not event.enforced:
            style = "green"
        return f"#{event.seq} [{verdict}{rules}] {_shorten(event.text)}{extra}", style
    if isinstance(event, OutcomeEvent):
        if event.error_code:
            what = f"error {event.error_code}"
            if event.error_message:
                what += f": {_shorten(event.error_message)}"
            style = "red"
        else:
            what = "ok" if event.rows is None else f"{event.rows} row{'s' if event.rows != 1 else ''}"
            style = "dim"
        masked = ""
        if event.masked:
            masked = ", masked " + ", ".join(f"{col} x{n}" for col, n in event.masked)
        return f"  #{event.statement_seq} → {what} in {_ms(event.duration_us)}{masked}", style
    if isinstance(event, CancelEvent):
        which = f" of #{event.statement_seq}" if event.statement_seq is not None else ""
        return f"cancel requested{which}", "yellow"
    if isinstance(event, SessionEndEvent):
        return f"session end{': ' + event.reason if event.reason else ''}", "bold"
    if isinstance(event, ApprovalEvent):
        by = f" by {event.by}" if event.by else ""
        why = f": {event.reason}" if event.reason else ""
        which = f" for #{event.statement_seq}" if event.statement_seq is not None else ""
        style = {"approved": "green", "denied": "red", "expired": "red"}.get(event.event.value, "yellow")
        return f"approval {event.approval_id}{which} {event.event.value}{by}{why}", style
    if isinstance(event, PruneEvent):
        return f"journal pruned: {event.deleted} events through {event.through_seq}", "dim"
    raise TypeError(f"unknown event {event!r}")  # pragma: no cover


def replay_lines(events: Sequence[StoredEvent]) -> list[ReplayLine]:
    """The replay of a session's events, in journal order."""
    lines: list[ReplayLine] = []
    start = prev = events[0].time_us if events else 0
    for stored in events:
        event = stored.event()
        text, style = describe(event)
        lines.append(ReplayLine(stored.seq, event.time_us, event.time_us - start, max(0, event.time_us - prev),
                                event.kind.value, text, style, event))
        prev = event.time_us
    return lines


def replay(
    lines: Sequence[ReplayLine],
    emit: Callable[[ReplayLine], None],
    *,
    speed: float = 1.0,
    step: bool = False,
    sleep: Callable[[float], None],
    wait_enter: Callable[[], None],
    max_wait: float | None = None,
) -> None:
    """Show `lines` one by one: after waiting the recorded gap / `speed` seconds (no wait at
    speed 0; at most `max_wait`), or, with `step`, for the reader before each statement."""
    if speed < 0:
        raise ValueError("speed must be 0 or more")
    for index, line in enumerate(lines):
        if index:
            if step:
                if line.kind == "statement":
                    wait_enter()
            elif speed > 0 and line.gap_us > 0:
                seconds = line.gap_us / 1_000_000 / speed
                sleep(seconds if max_wait is None else min(seconds, max_wait))
        emit(line)
