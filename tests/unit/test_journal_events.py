# tests/unit/test_journal_events.py — the canonical encoding is a contract: golden bytes and
# golden hashes pin it (a change here breaks verification of every stored journal), round
# trips, refusals (floats, lone surrogates), the builders from the shared model, and times.
from __future__ import annotations

import dataclasses
import enum
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dbguard.journal import (
    ChainHasher,
    EncodingError,
    OutcomeEvent,
    StatementEvent,
    canonical_bytes,
    decode_event,
    session_start_from,
    statement_from,
)
from dbguard.journal import events as events_module
from dbguard.journal.chain import GENESIS_HASH
from dbguard.journal.events import SCHEMA_VERSION, JournalEvent, iso_from_us, parse_time
from dbguard.model import Action, Decision, Feature, Identity, IdentityKind, SessionInfo, StatementInfo, StatementKind
from tests.unit.journal_helpers import KEY, every_kind

GOLDEN_EVENT = StatementEvent(
    "s-é", 1795000000001000, 7, 'SELECT "naïve" FROM t WHERE a = $1 -- ✓\n\ttab', "block", ("no-drop",),
    "blocked by rule no-drop", parameters=("x", None), parameter_count=2, kinds=("select",), reads=("public.t",),
    features=("multi_statement",), approval_id="ap-9", intent="cleanup",
)
GOLDEN_BYTES = (
    b'{"action":"block","approval_id":"ap-9","enforced":true,"features":["multi_statement"],"intent":"cleanup",'
    b'"kind":"statement","kinds":["select"],"parameter_count":2,"parameters":["x",null],'
    b'"parameters_redacted":false,"reads":["public.t"],"reason":"blocked by rule no-drop","rule_ids":["no-drop"],'
    b'"seq":7,"session_id":"s-\xc3\xa9","text":"SELECT \\"na\xc3\xafve\\" FROM t WHERE a = $1 -- \xe2\x9c\x93'
    b'\\n\\ttab","text_truncated":false,"time_us":1795000000001000,"v":1,"writes":[]}'
)


def test_golden_bytes() -> None:
    assert canonical_bytes(GOLDEN_EVENT) == GOLDEN_BYTES


def test_golden_hashes() -> None:
    assert ChainHasher().link(GENESIS_HASH, 1, GOLDEN_BYTES) == (
        "a60d94c738fade49cad9b1a8a7155876e2a420ca6d0ca4dddb8f2652f0371f2d"
    )
    keyed = ChainHasher(KEY)
    assert keyed.link(GENESIS_HASH, 1, GOLDEN_BYTES) == (
        "aec9dc15f4cc0a9f8bad1be4f1a20aa24c6ff81a83083f3011ccbd73e1191ea0"
    )
    assert keyed.key_id == "3941659523c3cd0e"


def test_golden_outcome_bytes() -> None:
    event = OutcomeEvent("s1", 5, 2, 1234, rows=None, error_code="42501", masked=(("users.email", 3),))
    assert canonical_bytes(event) == (
        b'{"duration_us":1234,"error_code":"42501","error_message":"","kind":"outcome",'
        b'"masked":[["users.email",3]],"rows":null,"session_id":"s1","statement_seq":2,"time_us":5,"v":1}'
    )


@pytest.mark.parametrize("event", every_kind(), ids=lambda e: e.kind.value)
def test_round_trip(event: JournalEvent) -> None:
    payload = canonical_bytes(event)
    assert decode_event(payload) == event
    assert canonical_bytes(decode_event(payload)) == payload
    assert b"\n" not in payload
    assert b'", "' not in payload
    assert b'": ' not in payload


def test_schema_version_is_written_and_checked() -> None:
    assert f'"v":{SCHEMA_VERSION}'.encode() in GOLDEN_BYTES
    with pytest.raises(EncodingError, match="schema version"):
        decode_event(GOLDEN_BYTES.replace(b'"v":1', b'"v":99'))
    with pytest.raises(EncodingError, match="unknown event kind"):
        decode_event(b'{"kind":"mystery","v":1}')


def test_floats_and_lone_surrogates_are_refused() -> None:
    with pytest.raises(EncodingError, match="floats"):
        canonical_bytes(OutcomeEvent("s", 1, 1, 2.5))  # type: ignore[arg-type]
    with pytest.raises(EncodingError, match="surrogate"):
        canonical_bytes(StatementEvent("s", 1, 1, "SELECT '\ud800'", "allow"))


def _session() -> SessionInfo:
    return SessionInfo("sess-1", "app-pg", "postgres", Identity("copilot", IdentityKind.AGENT, ("readers",)),
                       "10.0.0.5:41000", "app", "psql", tls=True)


def test_session_start_from_model() -> None:
    event = session_start_from(_session(), client_attributes={"b": "2", "a": "1"}, intent="report", time_us=9)
    assert event.identity == "copilot"
    assert event.identity_kind == "agent"
    assert event.roles == ("readers",)
    assert event.client_attributes == (("a", "1"), ("b", "2"))
    assert event.tls
    assert event.listener == "app-pg"
    assert event.application_name == "psql"


def test_statement_from_decision_and_analysis() -> None:
    infos = [
        StatementInfo("DELETE FROM t", "DELETE", frozenset({StatementKind.DELETE}), writes=frozenset({"public.t"}),
                      features=frozenset({Feature.MULTI_STATEMENT})),
        StatementInfo("SELECT 1 FROM u", "SELECT", frozenset({StatementKind.SELECT}), reads=frozenset({"public.u"})),
    ]
    decision = Decision(Action.HOLD, ("agents-hold-writes",), "held", enforced=True)
    event = statement_from("sess-1", 3, "DELETE FROM t; SELECT 1 FROM u", decision, infos,
                           parameters=["secret", None], redact_parameters=True, approval_id="ap-1", time_us=1)
    assert event.kinds == ("delete", "select")
    assert event.reads == ("public.u",)
    assert event.writes == ("public.t",)
    assert event.features == ("multi_statement",)
    assert event.parameters is None
    assert event.parameters_redacted
    assert event.parameter_count == 2
    assert b"secret" not in canonical_bytes(event)
    shown = statement_from("sess-1", 4, "SELECT $1", decision, parameters=["x"], time_us=1)
    assert shown.parameters == ("x",)
    assert not shown.parameters_redacted


def test_times() -> None:
    assert parse_time("1970-01-01T00:00:01Z") == 1_000_000
    assert parse_time("1970-01-01T01:00:00+01:00") == 0
    assert parse_time("1970-01-02") == 86_400_000_000
    assert parse_time("2026-11-21T14:38:29.123456") == parse_time("2026-11-21T14:38:29.123456Z")
    assert iso_from_us(parse_time("2026-11-21T14:38:29.123456Z")) == "2026-11-21T14:38:29.123456Z"
    with pytest.raises(ValueError, match="ISO 8601"):
        parse_time("yesterday")


def test_text_that_was_not_utf8_on_the_wire_is_journaled_with_replacement_characters() -> None:
    """Protocol decoders keep undecodable bytes as lone surrogates; a client sending a latin-1
    application name or statement must not make its own events unencodable."""
    from dbguard.journal.events import canonical_bytes, session_start_from, statement_from
    from dbguard.model import ALLOW, Identity, IdentityKind, SessionInfo

    odd = b"caf\xe9".decode("utf-8", "surrogateescape")
    info = SessionInfo(session_id="s-odd", listener="l", protocol="postgres",
                       identity=Identity("copilot", IdentityKind.AGENT, ()), client_address="127.0.0.1:1",
                       database=odd, application_name=odd)
    start = session_start_from(info, client_attributes={odd: odd}, intent=odd)
    statement = statement_from("s-odd", 1, f"SELECT '{odd}'", ALLOW, parameters=[odd])
    for event in (start, statement):
        assert "caf\ufffd" in canonical_bytes(event).decode("utf-8")


# The fast encoder writes the same bytes as the generic one (json.dumps, sorted keys), for
# every event type and any values: texts with quotes, escapes, controls and non-ASCII,
# big and negative integers, NULLs, nested tuples.
_texts = st.text(alphabet=st.characters(codec="utf-8"), max_size=40)
_values: st.SearchStrategy[object] = st.one_of(st.none(), st.booleans(), st.integers(), _texts)


@settings(max_examples=300, deadline=None)
@given(st.sampled_from([type(e) for e in every_kind()]), st.data())
def test_the_fast_encoder_writes_the_generic_encoders_bytes(cls: type[JournalEvent], data: st.DataObject) -> None:
    base = next(e for e in every_kind() if type(e) is cls)
    changes: dict[str, Any] = {}
    for f in dataclasses.fields(base):
        value = getattr(base, f.name)
        if isinstance(value, bool):
            changes[f.name] = data.draw(st.booleans())
        elif value is None:  # an optional field: absent, or any plain value
            changes[f.name] = data.draw(st.one_of(_values, st.lists(_values, max_size=3).map(tuple)))
        elif isinstance(value, str) and not isinstance(value, enum.Enum):
            changes[f.name] = data.draw(_texts)
        elif isinstance(value, int) and not isinstance(value, bool):
            changes[f.name] = data.draw(st.integers())
        elif isinstance(value, tuple):
            changes[f.name] = data.draw(st.lists(st.one_of(_values, st.tuples(_texts, st.integers())), max_size=4)
                                        .map(tuple))
    event = dataclasses.replace(base, **changes)
    assert canonical_bytes(event) == events_module._dumps(events_module.event_to_dict(event))


# The statement and outcome events of ordinary statements are encoded from the session's
# values without an event object (`statement_payload`, `outcome_payload`): the bytes must be
# those of the event the builders make, or None (then the session builds the event).
# Non-ASCII and lone surrogates (as the wire decoders keep undecodable bytes) included: the
# payload is then None, never other bytes.
_anything = st.text(alphabet=st.characters(exclude_categories=()), max_size=30)
_kinds = st.sets(st.sampled_from(list(StatementKind)), max_size=3)
_tables = st.sets(st.text(max_size=12), max_size=3)


@st.composite
def _decisions(draw: st.DrawFn) -> Decision:
    analysis = tuple(StatementInfo(text="x", command="SELECT", kinds=frozenset(draw(_kinds)),
                                   reads=frozenset(draw(_tables)), writes=frozenset(draw(_tables)),
                                   features=frozenset(draw(st.sets(st.sampled_from(list(Feature)), max_size=2))))
                     for _ in range(draw(st.integers(0, 2))))
    return Decision(draw(st.sampled_from(list(Action))), rule_ids=tuple(draw(st.lists(_anything, max_size=3))),
                    reason=draw(_anything), enforced=draw(st.booleans()), analysis=analysis)


@settings(max_examples=400, deadline=None)
@given(session_id=st.one_of(st.just("3f2a9c0e-1111-2222-3333-444455556666"), _texts),
       seq=st.integers(0, 2**63), time_us=st.integers(0, 2**63), decision=_decisions(),
       text=st.one_of(_anything, st.text(alphabet=st.characters(max_codepoint=127), max_size=60)),
       parameters=st.one_of(st.none(), st.lists(st.one_of(st.none(), _anything), max_size=3)),
       intent=st.one_of(st.none(), _anything))
def test_the_statement_payload_is_the_statement_events_bytes(
        session_id: str, seq: int, time_us: int, decision: Decision, text: str,
        parameters: list[str | None] | None, intent: str | None) -> None:
    payload = events_module.statement_payload(events_module.json_string(session_id), seq, time_us, text, decision,
                                              parameters, intent)
    expected = statement_from(session_id, seq, text, decision, decision.analysis, parameters=parameters,
                              intent=intent, time_us=time_us)
    try:
        expected_bytes = canonical_bytes(expected)
    except EncodingError:  # a rule's or table's name with a lone surrogate: the event says so
        assert payload is None
        return
    if payload is None:  # only where cleaning or cutting is needed
        assert not (text.isascii() and (intent is None or intent.isascii())
                    and all(p is None or p.isascii() for p in parameters or ()))
        return
    assert payload == expected_bytes == events_module._dumps(events_module.event_to_dict(expected))


def test_a_long_text_or_parameter_is_left_to_the_event_which_cuts_it() -> None:
    decision = Decision(Action.ALLOW)
    session = events_module.json_string("s-1")
    long_text = "x" * (events_module.MAX_TEXT_CHARS + 1)
    assert events_module.statement_payload(session, 1, 1, long_text, decision, None, None) is None
    long_value = "y" * (events_module.MAX_PARAMETER_CHARS + 1)
    assert events_module.statement_payload(session, 1, 1, "SELECT $1", decision, [long_value], None) is None
    assert statement_from("s-1", 1, long_text, decision).text_truncated


@settings(max_examples=300, deadline=None)
@given(session_id=st.text(alphabet=st.characters(max_codepoint=127), max_size=40),
       time_us=st.integers(0, 2**63), seq=st.integers(0, 2**63), duration=st.integers(0, 2**40),
       rows=st.one_of(st.none(), st.integers(0, 2**63)))
def test_the_outcome_payload_is_the_outcome_events_bytes(session_id: str, time_us: int, seq: int, duration: int,
                                                        rows: int | None) -> None:
    payload = events_module.outcome_payload(events_module.json_string(session_id), time_us, seq, duration, rows)
    assert payload == canonical_bytes(OutcomeEvent(session_id, time_us, seq, duration, rows))
    assert payload == events_module._dumps(events_module.event_to_dict(OutcomeEvent(session_id, time_us, seq,
                                                                                    duration, rows)))


@pytest.mark.parametrize(("text", "shown"), [
    ("caf\udcc3\udca9", "café"),  # bytes kept by surrogateescape that were UTF-8 after all
    ("bad \udcff byte", "bad \ufffd byte"),  # a byte that is not UTF-8
    ("lone \ud800 surrogate", "lone \ufffd surrogate"),  # no decoder of ours makes it: still encodable
    ("both \udcff and \udfff", "both \ufffd and \ufffd"),
])
def test_texts_that_are_not_valid_unicode_are_journaled_with_replacement_characters(text: str, shown: str) -> None:
    event = statement_from("s-1", 1, text, Decision(Action.ALLOW), intent=text, parameters=(text,))
    assert (event.text, event.intent, event.parameters) == (shown, shown, (shown,))
    assert decode_event(canonical_bytes(event)) == event
