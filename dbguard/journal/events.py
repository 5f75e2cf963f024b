# dbguard/journal/events.py — owns the journal's event vocabulary and its canonical encoding.
# Every event kind the journal records is a frozen dataclass here; `canonical_bytes` turns one
# into the exact bytes the hash chain covers (UTF-8 JSON, sorted keys, no whitespace, integers
# only: times are microseconds since the epoch, UTC), and `decode_event` reads them back.
# The encoding is a contract: a stored event must hash the same in every later version, so a
# field may be added (with a new schema version) but never renamed, re-typed or re-ordered
# in meaning. It must not know about stores, chains, sessions or sockets.
from __future__ import annotations

import enum
import json
import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, fields
from datetime import UTC, datetime, timedelta
from typing import Any, Final, Generic, TypeAlias, TypeVar, cast

from dbguard.model import Action, Decision, SessionInfo, StatementInfo

__all__ = [
    "ACTION_TEXT",
    "EVENT_TYPES",
    "SCHEMA_VERSION",
    "ApprovalEvent",
    "ApprovalEventKind",
    "CancelEvent",
    "EncodingError",
    "EventKind",
    "JournalEvent",
    "OutcomeEvent",
    "PruneEvent",
    "SessionEndEvent",
    "SessionStartEvent",
    "StatementEvent",
    "canonical_bytes",
    "decode_event",
    "event_to_dict",
    "iso_from_us",
    "json_string",
    "now_us",
    "outcome_payload",
    "parse_time",
    "session_start_from",
    "statement_from",
    "statement_payload",
]

# Version of the event encoding. Written into every event as "v"; a reader accepts every
# version up to its own. Version 1 is the first.
SCHEMA_VERSION: Final = 1

# Bounds, so one absurd statement cannot make a journal row of unbounded size. Texts beyond
# them are cut and the event says so (`text_truncated`); the statement itself is unaffected.
MAX_TEXT_CHARS: Final = 1_000_000
MAX_PARAMETER_CHARS: Final = 10_000


class EncodingError(ValueError):
    """An event that cannot be encoded canonically (a float, a lone surrogate, a bad type)."""


class EventKind(enum.StrEnum):
    SESSION_START = "session_start"
    STATEMENT = "statement"
    OUTCOME = "outcome"
    CANCEL = "cancel"
    SESSION_END = "session_end"
    APPROVAL = "approval"
    PRUNE = "prune"  # the journal's own retention: events before a point were deleted


class ApprovalEventKind(enum.StrEnum):
    REQUESTED = "requested"
    APPROVED = "approved"
    DENIED = "denied"
    EXPIRED = "expired"


def now_us() -> int:
    """The current time in integer microseconds since the epoch (UTC)."""
    return time.time_ns() // 1000


_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)


def iso_from_us(time_us: int) -> str:
    """ISO 8601 in UTC with microseconds: 2026-11-21T14:38:29.123456Z."""
    return (_EPOCH + timedelta(microseconds=time_us)).isoformat(timespec="microseconds").replace("+00:00", "Z")


def parse_time(text: str) -> int:
    """ISO 8601 (date, or date and time; `Z` or an offset; no offset means UTC) -> microseconds."""
    s = text.strip()
    try:
        moment = datetime.fromisoformat(s)
    except ValueError:
        raise ValueError(f"expected an ISO 8601 time such as 2026-11-21 or 2026-11-21T14:30:00Z, got {s!r}") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    delta = moment - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


@dataclass(frozen=True, slots=True)
class SessionStartEvent:
    """A client session was authenticated and connected upstream."""

    session_id: str
    time_us: int
    identity: str
    identity_kind: str  # agent | human | service
    roles: tuple[str, ...]
    client_address: str
    tls: bool
    listener: str
    protocol: str  # postgres | mysql
    database: str
    application_name: str = ""
    # Whatever the client told about itself: PostgreSQL startup options, MySQL connect
    # attributes (_client_name, _client_version...). Sorted pairs, so the encoding is stable.
    client_attributes: tuple[tuple[str, str], ...] = ()
    intent: str = ""  # the `dbguard.intent` startup option, if given

    kind = EventKind.SESSION_START


@dataclass(frozen=True, slots=True)
class StatementEvent:
    """A statement (or one multi-statement message) and what was decided about it.

    Written before the statement is forwarded. `parameters` is None when there are none (or
    they were redacted: then `parameters_redacted` is True and only their count is kept)."""

    session_id: str
    time_us: int
    seq: int  # 1, 2, 3... within the session
    text: str
    action: str  # allow | hold | block
    rule_ids: tuple[str, ...] = ()
    reason: str = ""
    enforced: bool = True  # False: observe-only; the statement ran whatever `action` says
    parameters: tuple[str | None, ...] | None = None  # bound values as text; None = SQL NULL
    parameters_redacted: bool = False
    parameter_count: int = 0
    kinds: tuple[str, ...] = ()
    reads: tuple[str, ...] = ()
    writes: tuple[str, ...] = ()
    features: tuple[str, ...] = ()
    approval_id: str | None = None
    intent: str | None = None
    text_truncated: bool = False

    kind = EventKind.STATEMENT


@dataclass(frozen=True, slots=True)
class OutcomeEvent:
    """How a forwarded statement ended. Masked columns are named with a count of masked
    values; the values themselves are never journaled."""

    session_id: str
    time_us: int
    statement_seq: int
    duration_us: int
    rows: int | None = None  # rows returned or affected, when the server said
    error_code: str = ""  # SQLSTATE (PostgreSQL) or errno (MySQL); "" = success
    error_message: str = ""
    masked: tuple[tuple[str, int], ...] = ()  # (column, values masked)

    kind = EventKind.OUTCOME


@dataclass(frozen=True, slots=True)
class CancelEvent:
    """A client asked to cancel the running statement of a session."""

    session_id: str
    time_us: int
    statement_seq: int | None = None
    client_address: str = ""

    kind = EventKind.CANCEL


@dataclass(frozen=True, slots=True)
class SessionEndEvent:
    session_id: str
    time_us: int
    reason: str = ""  # client closed | idle timeout | server closed | drain | error: ...

    kind = EventKind.SESSION_END


@dataclass(frozen=True, slots=True)
class ApprovalEvent:
    """A step in the life of an approval request (requested by a session, decided by a person)."""

    approval_id: str
    time_us: int
    event: ApprovalEventKind
    session_id: str = ""
    statement_seq: int | None = None
    by: str = ""  # the deciding identity; the requesting identity for `requested`
    reason: str = ""

    kind = EventKind.APPROVAL


@dataclass(frozen=True, slots=True)
class PruneEvent:
    """`dbguard journal prune` deleted every event up to `through_seq` (its hash kept as the anchor)."""

    time_us: int
    through_seq: int
    anchor_hash: str
    deleted: int
    before_us: int
    session_id: str = ""

    kind = EventKind.PRUNE


JournalEvent: TypeAlias = (
    SessionStartEvent | StatementEvent | OutcomeEvent | CancelEvent | SessionEndEvent | ApprovalEvent | PruneEvent
)

EVENT_TYPES: Final[Mapping[EventKind, type[Any]]] = {
    EventKind.SESSION_START: SessionStartEvent,
    EventKind.STATEMENT: StatementEvent,
    EventKind.OUTCOME: OutcomeEvent,
    EventKind.CANCEL: CancelEvent,
    EventKind.SESSION_END: SessionEndEvent,
    EventKind.APPROVAL: ApprovalEvent,
    EventKind.PRUNE: PruneEvent,
}

_RESERVED: Final = ("v", "kind")
K = TypeVar("K")
V = TypeVar("V")


# ---------------------------------------------------------------------------------------------
# Canonical encoding


def _plain(value: object, where: str) -> object:
    """The JSON-ready form of a field value; refuses anything without one exact encoding."""
    kind = type(value)
    if kind is str or kind is int or kind is bool or value is None:
        return value  # the common case first: most fields are plain
    if isinstance(value, enum.Enum):
        return _plain(value.value, where)
    if isinstance(value, str | bool | int):
        return value
    if isinstance(value, tuple | list):
        return [_plain(v, f"{where}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, float):
        raise EncodingError(f"{where}: floats have no canonical encoding; use integers")
    raise EncodingError(f"{where}: cannot encode {type(value).__name__}")


_FIELD_NAMES: dict[type[Any], tuple[str, ...]] = {}


def event_to_dict(event: JournalEvent) -> dict[str, object]:
    """The event as a JSON object: every field, plus "v" (schema version) and "kind"."""
    names = _FIELD_NAMES.get(type(event))
    if names is None:
        names = _FIELD_NAMES[type(event)] = tuple(f.name for f in fields(event))
    out: dict[str, object] = {"v": SCHEMA_VERSION, "kind": event.kind.value}
    for name in names:
        out[name] = _plain(getattr(event, name), name)
    return out


def _dumps(obj: object) -> bytes:
    text = json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:
        raise EncodingError("text is not valid Unicode (lone surrogate)") from None


def canonical_bytes(event: JournalEvent) -> bytes:
    """The exact bytes the hash chain covers: UTF-8 JSON, keys sorted, no whitespace."""
    kind = type(event)
    if kind is StatementEvent:
        fast = _statement_canonical(cast(StatementEvent, event))
    elif kind is OutcomeEvent:
        fast = _outcome_canonical(cast(OutcomeEvent, event))
    else:
        fast = _fast_canonical(event)
    return fast if fast is not None else _dumps(event_to_dict(event))


# The fast path of `canonical_bytes`, for the events every statement writes: the keys of each
# event type in sorted order with their JSON prefixes, computed once, and values of the plain
# types (str, int, bool, None and tuples of them) written directly. Anything else (an enum, a
# float, a list) goes the generic way, which also raises the errors. The bytes are the same
# as the generic path's (tests/unit/test_journal_events.py checks it on random events).
_json_string: Final[Callable[[str], str]] = json.encoder.encode_basestring  # json.dumps' escaping
json_string: Final = _json_string  # a str as a JSON string, as the canonical encoding writes it
# Per event type: (`,"key":` prefix, field name) in key order; a constant ("v", "kind") has
# its value in the prefix and None for a name.
_KEY_PLANS: dict[type[Any], tuple[tuple[str, str | None], ...]] = {}


def _key_plan(event: JournalEvent) -> tuple[tuple[str, str | None], ...]:
    names = [f.name for f in fields(event)]
    constants = {"v": str(SCHEMA_VERSION), "kind": _json_string(event.kind.value)}
    plan: list[tuple[str, str | None]] = []
    for i, key in enumerate(sorted([*names, *constants])):
        prefix = ("," if i else "") + _json_string(key) + ":"
        plan.append((prefix + constants[key], None) if key in constants else (prefix, key))
    _KEY_PLANS[type(event)] = result = tuple(plan)
    return result


def _json_value(value: object) -> str | None:
    """The canonical JSON of a plain value, or None when it is not plain."""
    kind = type(value)
    if kind is str:
        return _json_string(cast(str, value))
    if kind is int:
        return str(value)
    if value is None:
        return "null"
    if kind is bool:
        return "true" if value else "false"
    if kind is tuple:
        items: list[str] = []
        for item in cast(tuple[object, ...], value):
            encoded = _json_value(item)
            if encoded is None:
                return None
            items.append(encoded)
        return "[" + ",".join(items) + "]"
    return None


def _utf8(text: str) -> bytes:
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:
        raise EncodingError("text is not valid Unicode (lone surrogate)") from None


def _fast_canonical(event: JournalEvent) -> bytes | None:
    plan = _KEY_PLANS.get(type(event)) or _key_plan(event)
    parts: list[str] = []
    for prefix, name in plan:
        if name is None:
            parts.append(prefix)
            continue
        value = getattr(event, name)
        kind = type(value)
        if kind is str:
            parts.append(prefix + _json_string(value))
        elif kind is int:
            parts.append(prefix + str(value))
        else:
            encoded = _json_value(value)
            if encoded is None:
                return None
            parts.append(prefix + encoded)
    return _utf8("{" + "".join(parts) + "}")


# The two events of every statement have their own encoders: one concatenation in key order,
# each value checked for its exact plain type (anything else returns None: the generic path
# encodes it, or raises). Tuples repeat from statement to statement (a cached decision's rule
# ids and analysis summary are the same objects each time), so their JSON is kept by identity.
class _ByIdentity(Generic[K, V]):
    """What was computed from an immutable object, remembered by the object's identity: each
    entry keeps its object alive, so the id stays its own. Cleared when it holds 4096."""

    __slots__ = ("_items",)

    def __init__(self) -> None:
        self._items: dict[int, tuple[K, V]] = {}

    def get(self, key: K) -> tuple[K, V] | None:
        """(key, value) when `key` itself is remembered, else None."""
        found = self._items.get(id(key))
        return found if found is not None and found[0] is key else None

    def put(self, key: K, value: V) -> V:
        if len(self._items) >= 4096:
            self._items.clear()
        self._items[id(key)] = (key, value)
        return value


_TUPLE_JSON: Final[_ByIdentity[tuple[object, ...], str | None]] = _ByIdentity()


def _tuple_json(value: object) -> str | None:
    """The JSON of a tuple of plain values (None if it is not one), remembered by identity."""
    if type(value) is not tuple:
        return None
    found = _TUPLE_JSON.get(value)
    return found[1] if found is not None else _TUPLE_JSON.put(value, _json_value(value))


def _json_bool(value: object) -> str | None:
    return "true" if value is True else "false" if value is False else None


def _json_optional_string(value: object) -> str | None:
    return "null" if value is None else _json_string(value) if type(value) is str else None


def _statement_canonical(e: StatementEvent) -> bytes | None:
    text, session_id, action, reason = e.text, e.session_id, e.action, e.reason
    seq, time_us, count = e.seq, e.time_us, e.parameter_count
    if (type(text) is not str or type(session_id) is not str or type(action) is not str
            or type(reason) is not str or type(seq) is not int or type(time_us) is not int
            or type(count) is not int):
        return None
    approval_id = _json_optional_string(e.approval_id)
    intent = _json_optional_string(e.intent)
    enforced = _json_bool(e.enforced)
    redacted = _json_bool(e.parameters_redacted)
    truncated = _json_bool(e.text_truncated)
    parameters = "null" if e.parameters is None else _json_value(e.parameters)
    features, kinds, reads = _tuple_json(e.features), _tuple_json(e.kinds), _tuple_json(e.reads)
    rule_ids, writes = _tuple_json(e.rule_ids), _tuple_json(e.writes)
    if (approval_id is None or intent is None or enforced is None or redacted is None or truncated is None
            or parameters is None or features is None or kinds is None or reads is None or rule_ids is None
            or writes is None):
        return None
    out = (f'{{"action":{_json_string(action)},"approval_id":{approval_id},"enforced":{enforced},'
           f'"features":{features},"intent":{intent},"kind":"statement","kinds":{kinds},'
           f'"parameter_count":{count},"parameters":{parameters},"parameters_redacted":{redacted},'
           f'"reads":{reads},"reason":{_json_string(reason)},"rule_ids":{rule_ids},"seq":{seq},'
           f'"session_id":{_json_string(session_id)},"text":{_json_string(text)},"text_truncated":{truncated},'
           f'"time_us":{time_us},"v":{SCHEMA_VERSION},"writes":{writes}}}')
    return _utf8(out)


def _outcome_canonical(e: OutcomeEvent) -> bytes | None:
    session_id, error_code, error_message = e.session_id, e.error_code, e.error_message
    seq, time_us, duration, rows = e.statement_seq, e.time_us, e.duration_us, e.rows
    if (type(session_id) is not str or type(error_code) is not str or type(error_message) is not str
            or type(seq) is not int or type(time_us) is not int or type(duration) is not int
            or (rows is not None and type(rows) is not int)):
        return None
    masked = "[]" if e.masked == () else _json_value(e.masked)
    if masked is None:
        return None
    out = (f'{{"duration_us":{duration},"error_code":{_json_string(error_code)},'
           f'"error_message":{_json_string(error_message)},"kind":"outcome","masked":{masked},'
           f'"rows":{"null" if rows is None else rows},"session_id":{_json_string(session_id)},'
           f'"statement_seq":{seq},"time_us":{time_us},"v":{SCHEMA_VERSION}}}')
    return _utf8(out)


def canonical_json(obj: object) -> bytes:
    """Canonical bytes of any JSON value (used to re-check exported events)."""
    return _dumps(obj)


def _tuple(value: object, where: str) -> tuple[Any, ...]:
    if not isinstance(value, list):
        raise EncodingError(f"{where}: expected a list")
    return tuple(tuple(v) if isinstance(v, list) else v for v in value)


def decode_event(payload: bytes | str | Mapping[str, object]) -> JournalEvent:
    """Read an event back from its canonical bytes (or the decoded JSON object)."""
    if isinstance(payload, bytes | str):
        try:
            obj = json.loads(payload)
        except ValueError as e:
            raise EncodingError(f"not a JSON event: {e}") from None
    else:
        obj = payload
    if not isinstance(obj, Mapping):
        raise EncodingError("an event is a JSON object")
    version = obj.get("v")
    if not isinstance(version, int) or isinstance(version, bool) or not 1 <= version <= SCHEMA_VERSION:
        raise EncodingError(f"unsupported event schema version {version!r} (this dbguard reads 1..{SCHEMA_VERSION})")
    try:
        kind = EventKind(str(obj.get("kind")))
    except ValueError:
        raise EncodingError(f"unknown event kind {obj.get('kind')!r}") from None
    cls = EVENT_TYPES[kind]
    values: dict[str, object] = {}
    for f in fields(cls):
        if f.name not in obj:
            continue
        value = obj[f.name]
        if isinstance(value, list):
            value = _tuple(value, f.name)
        values[f.name] = value
    if kind is EventKind.APPROVAL:
        values["event"] = ApprovalEventKind(str(values.get("event")))
    try:
        event: JournalEvent = cls(**values)
    except TypeError as e:
        raise EncodingError(f"{kind.value} event: {e}") from None
    return event


# ---------------------------------------------------------------------------------------------
# Builders from the shared model (what the sessions will call)


def _cut(text: str, limit: int) -> tuple[str, bool]:
    return (text, False) if len(text) <= limit else (text[:limit], True)


def _clean(text: str) -> str:
    """Text from the wire as valid Unicode: bytes that were not UTF-8 (kept as lone surrogates
    by the protocol decoders) become U+FFFD, so a client's odd name cannot make its own events
    unencodable."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        try:
            return text.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
        except UnicodeEncodeError:  # a surrogate that is no escaped byte (U+D800...): each one replaced
            return _SURROGATE.sub("\ufffd", text)
    return text


_SURROGATE: Final = re.compile("[\ud800-\udfff]")


def session_start_from(
    info: SessionInfo,
    *,
    client_attributes: Mapping[str, str] | None = None,
    intent: str = "",
    time_us: int | None = None,
) -> SessionStartEvent:
    """The session_start event of an authenticated session."""
    attrs = tuple(sorted((_clean(str(k)), _clean(str(v))) for k, v in (client_attributes or {}).items()))
    return SessionStartEvent(
        session_id=info.session_id,
        time_us=now_us() if time_us is None else time_us,
        identity=info.identity.name,
        identity_kind=info.identity.kind.value,
        roles=tuple(info.identity.roles),
        client_address=info.client_address,
        tls=info.tls,
        listener=info.listener,
        protocol=info.protocol,
        database=_clean(info.database),
        application_name=_clean(info.application_name),
        client_attributes=attrs,
        intent=_clean(intent),
    )


_Summary: TypeAlias = tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...], tuple[str, ...]]
# Analysis summaries by the identity of the analysis (a cached decision carries the same
# StatementInfo tuple every time), each kept with its analysis so the id stays its own.
_SUMMARIES: Final[_ByIdentity[Sequence[StatementInfo], _Summary]] = _ByIdentity()


def _summary(analysis: Sequence[StatementInfo]) -> _Summary:
    """The sorted kinds, reads, writes and features of every statement of `analysis`."""
    found = _SUMMARIES.get(analysis)
    if found is not None:
        return found[1]
    kinds: set[str] = set()
    reads: set[str] = set()
    writes: set[str] = set()
    features: set[str] = set()
    for info in analysis:
        kinds.update(k.value for k in info.kinds)
        reads.update(info.reads)
        writes.update(info.writes)
        features.update(f.value for f in info.features)
    summary = (tuple(sorted(kinds)), tuple(sorted(reads)), tuple(sorted(writes)), tuple(sorted(features)))
    if isinstance(analysis, tuple):  # immutable: safe to remember
        _SUMMARIES.put(analysis, summary)
    return summary


# Each action as plain text (an enum's `.value` is a slow descriptor; the encoder wants a str).
ACTION_TEXT: Final[Mapping[Action, str]] = {action: action.value for action in Action}


def statement_from(
    session_id: str,
    seq: int,
    text: str,
    decision: Decision,
    analysis: Sequence[StatementInfo] = (),
    *,
    parameters: Sequence[str | None] | None = None,
    redact_parameters: bool = False,
    approval_id: str | None = None,
    intent: str | None = None,
    time_us: int | None = None,
) -> StatementEvent:
    """The statement event for one decided SQL text. `analysis` is what the analyser saw
    (one StatementInfo per statement of the message); its kinds, tables and features are
    summarised, sorted. With `redact_parameters`, only the number of parameters is kept."""
    kinds, reads, writes, features = _summary(analysis)
    shown = text if text.isascii() else _clean(text)
    truncated = len(shown) > MAX_TEXT_CHARS
    if truncated:
        shown = shown[:MAX_TEXT_CHARS]
    params: tuple[str | None, ...] | None = None
    count = len(parameters) if parameters is not None else 0
    if parameters is not None and not redact_parameters:
        params = tuple(p if p is None or (p.isascii() and len(p) <= MAX_PARAMETER_CHARS)
                       else _cut(_clean(p), MAX_PARAMETER_CHARS)[0] for p in parameters)
    return StatementEvent(
        session_id=session_id,
        time_us=time.time_ns() // 1000 if time_us is None else time_us,
        seq=seq,
        text=shown,
        action=ACTION_TEXT[decision.action],
        rule_ids=tuple(decision.rule_ids),
        reason=decision.reason,
        enforced=decision.enforced,
        parameters=params,
        parameters_redacted=redact_parameters and count > 0,
        parameter_count=count,
        kinds=kinds,
        reads=reads,
        writes=writes,
        features=features,
        approval_id=approval_id,
        intent=None if intent is None else _clean(intent),
        text_truncated=truncated,
    )


# ---------------------------------------------------------------------------------------------
# The two events of every statement, encoded straight from the session's values (no event
# object): what the event loop does per statement (docs/performance.md, "The journal's cost").
# Same bytes as `canonical_bytes` of the event `statement_from` / `OutcomeEvent` would build
# (tests/unit/test_journal_events.py checks it on random values); None where a value is not
# the plain kind these handle, and the caller builds the event instead.

# Per decision (by identity; the gate's decision cache hands out the same object each time),
# the JSON around a statement's own values, in key order: up to "intent", up to
# "parameter_count", from "parameters_redacted" up to "seq", and from "v" to the end.
_DECISION_JSON: Final[_ByIdentity[Decision, tuple[str, str, str, str] | None]] = _ByIdentity()


def _decision_json(decision: Decision) -> tuple[str, str, str, str] | None:
    found = _DECISION_JSON.get(decision)
    if found is not None:
        return found[1]
    kinds, reads, writes, features = (_json_value(part) for part in _summary(decision.analysis))
    rule_ids = _json_value(tuple(decision.rule_ids))
    action = ACTION_TEXT.get(decision.action)
    parts: tuple[str, str, str, str] | None = None
    if (kinds is not None and reads is not None and writes is not None and features is not None
            and rule_ids is not None and action is not None and type(decision.reason) is str
            and type(decision.enforced) is bool):
        parts = (f'{{"action":{_json_string(action)},"approval_id":null,"enforced":'
                 f'{"true" if decision.enforced else "false"},"features":{features},"intent":',
                 f',"kind":"statement","kinds":{kinds},"parameter_count":',
                 f',"parameters_redacted":false,"reads":{reads},"reason":{_json_string(decision.reason)},'
                 f'"rule_ids":{rule_ids},"seq":',
                 f',"v":{SCHEMA_VERSION},"writes":{writes}}}')
        try:
            "".join(parts).encode()
        except UnicodeEncodeError:  # a lone surrogate: the event path refuses it, and says so
            parts = None
    return _DECISION_JSON.put(decision, parts)


def statement_payload(session_json: str, seq: int, time_us: int, text: str, decision: Decision,
                      parameters: Sequence[str | None] | None, intent: str | None) -> bytes | None:
    """The canonical bytes of `statement_from(session_id, seq, text, decision,
    decision.analysis, parameters=parameters, intent=intent, time_us=time_us)` with
    `session_json` the JSON string of session_id; None unless every text is ASCII, within
    its bound (nothing to clean or cut) and the decision's values are plain."""
    parts = _decision_json(decision)
    if parts is None or not text.isascii() or len(text) > MAX_TEXT_CHARS:
        return None
    if intent is None:
        intent_json = "null"
    elif intent.isascii():
        intent_json = _json_string(intent)
    else:
        return None
    if parameters is None:
        count, values = 0, "null"
    else:
        for value in parameters:
            if value is not None and (not value.isascii() or len(value) > MAX_PARAMETER_CHARS):
                return None
        count = len(parameters)
        values = "[" + ",".join(["null" if value is None else _json_string(value) for value in parameters]) + "]"
    head, before_count, before_seq, end = parts
    return (f'{head}{intent_json}{before_count}{count},"parameters":{values}{before_seq}{seq},"session_id":'
            f'{session_json},"text":{_json_string(text)},"text_truncated":false,"time_us":{time_us}{end}').encode()


def outcome_payload(session_json: str, time_us: int, seq: int, duration_us: int, rows: int | None) -> bytes:
    """The canonical bytes of a statement's outcome without error or masked values:
    `OutcomeEvent(session_id, time_us, seq, duration_us, rows)`, `session_json` the JSON
    string of session_id (ASCII)."""
    return (f'{{"duration_us":{duration_us},"error_code":"","error_message":"","kind":"outcome","masked":[],'
            f'"rows":{"null" if rows is None else rows},"session_id":{session_json},"statement_seq":{seq},'
            f'"time_us":{time_us},"v":{SCHEMA_VERSION}}}').encode()
