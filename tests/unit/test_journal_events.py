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
