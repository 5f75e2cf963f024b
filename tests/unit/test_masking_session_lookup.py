"""The per-session masks lookup (`MaskDirectory.session`) and what PgResultMasking keeps raw.

A session asks for its masks per result set; the lookup it keeps answers from what it found
last until the policy is replaced, which is the only thing that changes the answer (identity,
roles, listener and database are fixed for a session's life). Checked on the directory alone
and through a PgSession whose policy is reloaded while it is open. Then: a statement's text is
kept as bytes and decoded only for a lineage, in the client encoding it was sent in; a Bind's
result formats are read only when a plan needs them. MySQL plans work out once which columns a
row is looked at in."""

from __future__ import annotations

import dataclasses
import struct

import pytest

from dbguard.masking import session_masks
from dbguard.masking.session_masks import MaskDirectory, SessionMasks
from dbguard.model import Identity, IdentityKind, SessionInfo
from dbguard.policy.rules import Policy, parse_policy_text
from dbguard.session.pg import PgSession
from dbguard.session.pg_actions import SendClient, SendUpstream, SessionAction
from dbguard.session.pg_masking import CatalogCache, PgResultMasking
from dbguard.session.throttle import LoginThrottle
from dbguard.wire.mysql import messages as mysql_m
from dbguard.wire.pg import messages as m
from dbguard.wire.pg.framing import frame
from tests.unit.test_mysql_masking import EMAIL as MY_EMAIL
from tests.unit.test_mysql_masking import ID as MY_ID
from tests.unit.test_mysql_masking import NAME as MY_NAME
from tests.unit.test_mysql_masking import SSN as MY_SSN
from tests.unit.test_mysql_masking import plan_for as mysql_plan_for
from tests.unit.test_pg_masking import USERS_OID, catalog, data_row, field, query, row_description, rows_of
from tests.unit.test_pg_masking_plans import COMPLETE, MASKS, READY, SYNC
from tests.unit.test_pg_session import (
    CLIENT_ADDRESS,
    Driver,
    client_login,
    make_settings,
    upstream_login,
)

KEY = b"k" * 32
EMAIL_MASK = parse_policy_text("""
masks:
  - id: email
    columns: [users.email]
    strategy: email
    unless: {roles: [dba]}
""")
FULL_MASK = parse_policy_text("""
masks:
  - id: email
    columns: [users.email]
    strategy: full
""")
NO_MASKS = parse_policy_text("""
rules:
  - id: allow
    when: {}
    action: allow
""")
READERS_EXEMPT = parse_policy_text("""
masks:
  - id: email
    columns: [users.email]
    strategy: email
    unless: {roles: [readers]}
""")


def info(*roles: str, name: str = "copilot") -> SessionInfo:
    return SessionInfo("s", "pg", "postgres", Identity(name, IdentityKind.AGENT, roles), "127.0.0.1:1", "app")


def counted(directory: MaskDirectory, monkeypatch: pytest.MonkeyPatch) -> list[SessionInfo]:
    """The sessions the directory compiles masks for (each `SessionMasks.for_session` call)."""
    seen: list[SessionInfo] = []
    compile_masks = SessionMasks.for_session

    def spy(policy: Policy, session: SessionInfo, hash_key: bytes) -> SessionMasks | None:
        seen.append(session)
        return compile_masks(policy, session, hash_key)

    monkeypatch.setattr(session_masks.SessionMasks, "for_session", spy)
    return seen


def strategy(masks: SessionMasks | None) -> str | None:
    if masks is None:
        return None
    found = masks.column("public", "users", "email")
    return None if found is None else found.strategy.value


# ------------------------------------------------------------------ the directory


def test_a_session_lookup_asks_the_directory_again_only_after_a_reload(monkeypatch: pytest.MonkeyPatch) -> None:
    directory = MaskDirectory(EMAIL_MASK, KEY)
    lookup = directory.session(info())
    first = lookup()
    assert strategy(first) == "email"
    directory._by_identity.clear()  # (what `for_session` does past 1024 identities)
    seen = counted(directory, monkeypatch)
    assert all(lookup() is first for _ in range(3))
    assert seen == []
    for policy, expected in ((FULL_MASK, "full"), (NO_MASKS, None), (EMAIL_MASK, "email"), (EMAIL_MASK, "email")):
        directory.replace_policy(policy)
        masks = lookup()
        assert strategy(masks) == expected
        assert lookup() is masks
    assert len(seen) == 3  # NO_MASKS compiles nothing: the directory answers None at once
    # The same object `for_session` hands out: plans keyed by it are shared between sessions.
    assert lookup() is directory.for_session(info())


def test_each_session_keeps_its_own_answer() -> None:
    directory = MaskDirectory(EMAIL_MASK, KEY)
    agent, dba = directory.session(info("readers")), directory.session(info("dba", name="alice"))
    assert strategy(agent()) == "email"
    assert dba() is None  # exempt by role
    directory.replace_policy(FULL_MASK)  # no exemption any more
    assert strategy(agent()) == "full"
    assert strategy(dba()) == "full"
    directory.replace_policy(READERS_EXEMPT)
    assert agent() is None
    assert strategy(dba()) == "email"


# ------------------------------------------------------------------ through an open PgSession


def masked_session(directory: MaskDirectory, cache: CatalogCache) -> tuple[Driver, PgSession]:
    settings = dataclasses.replace(make_settings(), masks=directory)
    d = Driver(settings)
    d.session = PgSession(settings, client_address=CLIENT_ADDRESS, cancel_targets=d.cancel_targets,
                          throttle=LoginThrottle(clock=lambda: 1000.0), catalog=lambda database: cache)
    client_login(d)
    upstream_login(d)
    assert d.session.masking is not None
    return d, d.session


def round_trip(d: Driver, session: PgSession, sql: str, answer: bytes) -> bytes:
    """What the client gets for `sql` (the driver's part: upstream bytes through masking)."""
    sent = d.client(query(sql))
    assert b"".join(a.data for a in sent if isinstance(a, SendUpstream)) == query(sql)
    assert session.masking is not None
    actions: list[SessionAction] = d.upstream(session.masking.from_upstream(answer))
    return b"".join(a.data for a in actions if isinstance(a, SendClient))


def test_a_reloaded_policy_applies_to_an_open_session_from_its_next_result() -> None:
    directory = MaskDirectory(EMAIL_MASK, KEY)
    cache = catalog()
    d, session = masked_session(directory, cache)
    answer = (row_description(field("id", USERS_OID, 1, 23), field("email", USERS_OID, 2))
              + data_row(b"1", b"ann@example.com") + COMPLETE + READY)
    sql = "SELECT id, email FROM users"
    assert rows_of(round_trip(d, session, sql, answer)) == [(b"1", b"****@example.com")]
    directory.replace_policy(FULL_MASK)
    assert rows_of(round_trip(d, session, sql, answer)) == [(b"1", b"****")]
    directory.replace_policy(READERS_EXEMPT)  # the session's identity has the role readers
    assert rows_of(round_trip(d, session, sql, answer)) == [(b"1", b"ann@example.com")]
    directory.replace_policy(NO_MASKS)
    assert round_trip(d, session, sql, answer) == answer
    directory.replace_policy(EMAIL_MASK)
    assert rows_of(round_trip(d, session, sql, answer)) == [(b"1", b"****@example.com")]


# ------------------------------------------------------------------ raw bytes, read late

# In SJIS, \x95\x5c is one character; in UTF8 and LATIN1 an invalid byte, then a backslash
# that escapes the closing quote: the statement cannot be read, so its computed column is
# untraceable and gets the strictest column mask.
ESCAPED = b"SELECT upper(note) FROM users WHERE note = E'\x95\x5c'"


@pytest.mark.parametrize(("sent_in", "planned_in", "expected"), [
    ("SJIS", "SJIS", b"HELLO"), ("UTF8", "UTF8", b"****"), ("SJIS", "UTF8", b"HELLO"), ("UTF8", "SJIS", b"****"),
])
@pytest.mark.parametrize("extended", [False, True])
def test_a_statement_is_read_in_the_encoding_it_was_sent_in(sent_in: str, planned_in: str, expected: bytes,
                                                            extended: bool) -> None:
    """The text is decoded only when a computed column needs its lineage, maybe after the
    client encoding changed (a pipelined SET client_encoding): as the server read it then."""
    encoding = [sent_in]
    masking = PgResultMasking(lambda: MASKS, catalog(), lambda: encoding[0], journaled=True)
    upper = row_description(field("upper")) + data_row(b"HELLO") + COMPLETE + READY
    if extended:
        masking.to_upstream(frame(b"P", b"\x00" + ESCAPED + b"\x00\x00\x00") + frame(b"B", b"\x00" * 8)
                            + frame(b"D", b"P\x00") + frame(b"E", b"\x00" * 5) + SYNC)
        upper = frame(b"1", b"") + frame(b"2", b"") + upper
    else:
        masking.to_upstream(m.Query(ESCAPED).encode())
    encoding[0] = planned_in
    assert rows_of(masking.from_upstream(upper)) == [(expected,)]


def test_the_bind_formats_are_read_when_a_described_portal_turns_out_to_need_them() -> None:
    """A Bind with a Describe of its portal behind it keeps its payload until the Describe is
    answered; when that gives no RowDescription (NoData), the formats are read then, and
    rows of the portal are planned from the statement's description with them."""
    masking = PgResultMasking(lambda: MASKS, catalog(), lambda: "UTF8", journaled=True)
    masking.to_upstream(frame(b"P", b"s1\x00SELECT id, ssn FROM users\x00\x00\x00") + frame(b"D", b"Ss1\x00") + SYNC)
    described = row_description(field("id", USERS_OID, 1, 23), field("ssn", USERS_OID, 3, 23))
    masking.from_upstream(frame(b"1", b"") + frame(b"t", b"\x00\x00") + described + READY)
    binary = frame(b"B", b"c1\x00s1\x00\x00\x00\x00\x00" + struct.pack("!hh", 1, 1))
    masking.to_upstream(binary + frame(b"D", b"Pc1\x00") + frame(b"E", b"c1\x00\x00\x00\x00\x00") + SYNC)
    masking.from_upstream(frame(b"2", b""))
    portal = masking._portals[b"c1"]
    assert portal.formats is None  # not read yet
    assert portal.bind
    value = struct.pack("!i", 7)
    out = masking.from_upstream(frame(b"n", b"") + data_row(value, value) + COMPLETE + READY)
    assert masking._portals[b"c1"].formats == (1,)  # (`portal` again: mypy narrowed it to None)
    assert masking._portals[b"c1"].bind == b""
    assert rows_of(out) == [(value, b"\x00\x00\x00\x00")]  # binary, as the Bind asked


def test_a_described_portal_does_not_keep_its_bind() -> None:
    masking = PgResultMasking(lambda: MASKS, catalog(), lambda: "UTF8", journaled=True)
    masking.to_upstream(frame(b"P", b"s1\x00SELECT id FROM users\x00\x00\x00") + SYNC)
    masking.from_upstream(frame(b"1", b"") + READY)
    masking.to_upstream(frame(b"B", b"c1\x00s1\x00\x00\x00\x00\x00\x00\x00") + frame(b"D", b"Pc1\x00")
                        + frame(b"E", b"c1\x00\x00\x00\x00\x01") + SYNC)
    ids = row_description(field("id", USERS_OID, 1, 23))
    out = masking.from_upstream(frame(b"2", b"") + ids + data_row(b"1") + frame(b"s", b"") + m.ready_for_query(b"T"))
    assert rows_of(out) == [(b"1",)]
    assert masking._portals[b"c1"].bind == b""


# ------------------------------------------------------------------ MySQL: worked out per plan


def test_a_mysql_plan_works_out_its_columns_once_and_its_copies_share_them() -> None:
    """`rewrites` and the columns a row is looked at in come with the plan (not per row), and
    each result set's copy (`fresh`) has them too; the other columns' values are untouched."""
    plan = mysql_plan_for([MY_ID, MY_EMAIL, MY_NAME, MY_SSN], "SELECT id, email, name, ssn FROM customers")
    copy = plan.fresh()
    assert plan.rewrites
    assert copy.rewrites
    assert [i for i, _ in copy._active] == [1, 2, 3]  # name: content detectors
    row = mysql_m.encode_text_row([b"\xff7", b"alice@example.com", b"Alice", b"123-45-6789"])
    assert copy.row(row) == mysql_m.encode_text_row([b"\xff7", b"****@example.com", b"Alice", b"*******6789"])
    assert copy.take_counts() == (("email", 1), ("ssn", 1))
    assert plan.take_counts() == ()
    ids = mysql_plan_for([MY_ID], "SELECT id FROM customers").fresh()
    assert not ids.rewrites
    assert ids._active == ()
