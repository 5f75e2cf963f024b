"""The plan cache of PgResultMasking (`CatalogCache.plans`): a result like an earlier one is
neither decoded nor planned again, and whatever a plan depends on (the catalog, the session's
masks, the Bind's formats, the client encoding, a computed column's statement) gets its own
plan or drops the cached ones. The hypothesis test checks that sequences of results come out
byte for byte as a filter that builds every plan anew sends them."""

from __future__ import annotations

import asyncio
import struct
import time
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dbguard.masking.columns import PgColumn, pg_codec
from dbguard.masking.session_masks import SessionMasks
from dbguard.masking.strategies import build_masker
from dbguard.model import Identity, IdentityKind, SessionInfo
from dbguard.policy.rules import MaskStrategy, parse_policy_text
from dbguard.runtime.pg_catalog import PgCatalogs
from dbguard.session import pg_masking
from dbguard.session.pg_actions import UpstreamSettings
from dbguard.session.pg_masking import CatalogCache, CatalogRequest, PgResultMasking, Relation, View
from dbguard.sql.pg_lineage import result_lineage
from dbguard.wire.pg import messages as m
from dbguard.wire.pg.framing import frame
from tests.unit.test_pg_masking import RULES, USERS_OID, VIEW_OID, data_row, field, query, row_description, rows_of

SESSION = SessionInfo("s", "pg", "postgres", Identity("copilot", IdentityKind.AGENT), "127.0.0.1:1", "app")
OTHER_RULES = """
masks:
  - id: note
    columns: [users.note]
    strategy: partial
  - id: email
    columns: [users.email, users.id]
    strategy: hash
"""
USERS = Relation("public", "users", "r", {1: "id", 2: "email", 3: "ssn", 4: "note"})
# The same table after `ALTER TABLE users RENAME COLUMN note TO ssn` (and ssn to old_ssn).
USERS_RENAMED = Relation("public", "users", "r", {1: "id", 2: "email", 3: "old_ssn", 4: "ssn"})
CONTACTS = View("public", "contacts", ("id", "mail"), result_lineage("SELECT id, email AS mail FROM users"))
COMPLETE = m.CommandComplete("SELECT 1").encode()
READY = m.ready_for_query(b"I")
SYNC = frame(b"S", b"")


def compile_masks(rules: str) -> SessionMasks:
    found = SessionMasks.for_session(parse_policy_text(rules), SESSION, b"k" * 32)
    assert found is not None
    return found


MASKS = compile_masks(RULES)


def full_catalog(users: Relation = USERS) -> CatalogCache:
    cache = CatalogCache(views={("public", "contacts"): CONTACTS})
    cache.relations[USERS_OID] = users
    cache.relations[VIEW_OID] = Relation("public", "contacts", "v", {1: "id", 2: "mail"})
    return cache


def session(cache: CatalogCache, masks: Callable[[], SessionMasks | None] = lambda: MASKS,
            encoding: Callable[[], str] = lambda: "UTF8") -> PgResultMasking:
    return PgResultMasking(masks, cache, encoding, journaled=True)


@pytest.fixture
def decoded(monkeypatch: pytest.MonkeyPatch) -> list[bytes]:
    """The RowDescriptions masking decodes (it decodes one only to build its plan)."""
    seen: list[bytes] = []
    decode = pg_masking._row_description

    def spy(payload: bytes) -> tuple[m.FieldDescription, ...]:
        seen.append(payload)
        return decode(payload)

    monkeypatch.setattr(pg_masking, "_row_description", spy)
    return seen


def run(masking: PgResultMasking, sql: str, response: bytes) -> bytes:
    masking.to_upstream(query(sql))
    return masking.from_upstream(response)


IDS = row_description(field("id", USERS_OID, 1, 23))
EMAILS = row_description(field("id", USERS_OID, 1, 23), field("email", USERS_OID, 2))
NOTES = row_description(field("note", USERS_OID, 4, 23))  # an int4 column, unmasked until renamed


def test_a_repeated_result_is_decoded_and_planned_once(decoded: list[bytes]) -> None:
    cache = full_catalog()
    masking = session(cache)
    plain = IDS + data_row(b"1") + COMPLETE + READY
    masked = EMAILS + data_row(b"1", b"ann@example.com") + data_row(b"2", b"bob@example.org") + COMPLETE + READY
    for _ in range(3):
        assert run(masking, "SELECT id FROM users", plain) == plain
        assert rows_of(run(masking, "SELECT id, email FROM users", masked)) == [
            (b"1", b"****@example.com"), (b"2", b"****@example.org")]
        assert masking.masked_counts() == ()
        assert masking.masked_counts() == (("email", 2),)  # counted per result set, not summed
    assert decoded == [IDS[5:], EMAILS[5:]]
    # Another session of the same database and masks finds them planned already.
    other = session(cache)
    assert run(other, "SELECT id FROM users", plain) == plain
    assert rows_of(run(other, "SELECT id, email FROM users", masked))[0] == (b"1", b"****@example.com")
    assert len(decoded) == 2


def test_the_extended_protocol_takes_its_plans_from_the_cache(decoded: list[bytes]) -> None:
    """pgbench -M prepared: Bind, Describe of the portal, Execute per transaction; asyncpg:
    Describe of the statement once, then Bind and Execute."""
    masking = session(full_catalog())
    masking.to_upstream(frame(b"P", b"s1\x00SELECT id, email FROM users WHERE id = $1\x00\x00\x00")
                        + frame(b"D", b"Ss1\x00") + SYNC)
    described = frame(b"1", b"") + frame(b"t", b"\x00\x01\x00\x00\x00\x17") + EMAILS + READY
    assert masking.from_upstream(described) == described
    bind = frame(b"B", b"\x00s1\x00\x00\x00\x00\x01\x00\x00\x00\x011\x00\x00")
    execute = frame(b"E", b"\x00\x00\x00\x00\x00")
    rows = data_row(b"1", b"ann@example.com") + COMPLETE + READY
    for describe_portal in (True, True, False, False, True):
        masking.to_upstream(bind + (frame(b"D", b"P\x00") if describe_portal else b"") + execute + SYNC)
        response = frame(b"2", b"") + (EMAILS if describe_portal else b"") + rows
        assert rows_of(masking.from_upstream(response)) == [(b"1", b"****@example.com")]
        assert masking.masked_counts() == (("email", 1),)
    # Once for the portal's description, once for the statement's with the Bind's formats.
    assert decoded == [EMAILS[5:], EMAILS[5:]]


def test_each_bind_format_gets_its_own_plan() -> None:
    masking = session(full_catalog())
    masking.to_upstream(frame(b"P", b"s1\x00SELECT id, ssn FROM users\x00\x00\x00") + frame(b"D", b"Ss1\x00") + SYNC)
    masking.from_upstream(frame(b"1", b"") + frame(b"t", b"\x00\x00")
                          + row_description(field("id", USERS_OID, 1, 23), field("ssn", USERS_OID, 3, 23)) + READY)
    for fmt, masked in ((0, b"0"), (1, b"\x00\x00\x00\x00"), (0, b"0"), (1, b"\x00\x00\x00\x00")):
        bind = frame(b"B", b"\x00s1\x00\x00\x00\x00\x00" + struct.pack("!hh", 1, fmt))
        masking.to_upstream(bind + frame(b"E", b"\x00\x00\x00\x00\x00") + SYNC)
        value = b"7" if fmt == 0 else struct.pack("!i", 7)
        response = frame(b"2", b"") + data_row(value, value) + COMPLETE + READY
        assert rows_of(masking.from_upstream(response)) == [(value, masked)]


def test_ddl_through_the_proxy_drops_the_cached_plans() -> None:
    cache = full_catalog()
    masking = session(cache)
    response = NOTES + data_row(b"7") + COMPLETE + READY
    assert run(masking, "SELECT note FROM users", response) == response
    assert cache.plans
    generation = cache.generation
    run(masking, "ALTER TABLE users RENAME COLUMN note TO ssn", m.CommandComplete("ALTER TABLE").encode() + READY)
    assert cache.plans == {}
    assert cache.generation > generation
    # The same RowDescription is not served from before: the catalog is asked again.
    assert run(masking, "SELECT ssn FROM users", response) == b""
    assert masking.waiting == CatalogRequest(frozenset({USERS_OID}), False)
    cache.relations[USERS_OID] = USERS_RENAMED
    cache.changed()
    assert rows_of(masking.resume()) == [(b"0",)]


def test_a_column_the_catalog_learns_is_masked_from_then_on(monkeypatch: pytest.MonkeyPatch) -> None:
    """The runtime's lookup fills the cache (`PgCatalogs.resolve`, here without a server): the
    plans built from what the catalog said before are dropped."""
    catalogs = PgCatalogs(UpstreamSettings("db.invalid", 5432, "svc", "pw", "app"))
    cache = catalogs.cache("app")
    cache.relations.update(full_catalog().relations)
    cache.views = {("public", "contacts"): CONTACTS}
    masking = session(cache)
    response = NOTES + data_row(b"7") + COMPLETE + READY
    assert run(masking, "SELECT note FROM users", response) == response
    generation = cache.generation

    def lookup(database: str, request: CatalogRequest) -> tuple[dict[int, Relation], None, dict[object, object]]:
        return {USERS_OID: USERS_RENAMED}, None, {}

    monkeypatch.setattr(catalogs, "_lookup", lookup)
    asyncio.run(catalogs.resolve("app", CatalogRequest(frozenset({USERS_OID}), False)))
    assert cache.generation > generation
    assert rows_of(run(masking, "SELECT ssn FROM users", response)) == [(b"0",)]


def test_a_stale_catalog_drops_the_cached_plans(decoded: list[bytes]) -> None:
    cache = full_catalog()
    masking = session(cache)
    response = IDS + data_row(b"1") + COMPLETE + READY
    run(masking, "SELECT id FROM users", response)
    cache.loaded_at = time.monotonic() - pg_masking.CATALOG_TTL - 1
    assert run(masking, "SELECT id FROM users", response) == b""  # expired: the OID is asked again
    assert masking.waiting is not None
    cache.relations[USERS_OID] = USERS
    cache.changed()
    assert masking.resume() == response
    assert len(decoded) == 3  # planned, then asked the catalog, then planned again
    assert run(masking, "SELECT id FROM users", response) == response
    assert len(decoded) == 3


def test_a_masks_change_gets_its_own_plan() -> None:
    current: list[SessionMasks | None] = [MASKS]
    masking = session(full_catalog(), masks=lambda: current[0])
    response = row_description(field("email", USERS_OID, 2), field("note", USERS_OID, 4)) \
        + data_row(b"ann@example.com", b"call 555") + COMPLETE + READY
    note = build_masker(MaskStrategy.PARTIAL, PgColumn(25, -1, "utf-8"), key=b"k" * 32)(b"call 555")
    email = build_masker(MaskStrategy.HASH, PgColumn(25, -1, "utf-8"), key=b"k" * 32)(b"ann@example.com")
    for masks, expected in ((MASKS, (b"****@example.com", b"call 555")),
                            (compile_masks(OTHER_RULES), (email, note)),  # a reloaded policy
                            (None, (b"ann@example.com", b"call 555")),  # the role is exempt now
                            (MASKS, (b"****@example.com", b"call 555"))):
        current[0] = masks
        assert rows_of(run(masking, "SELECT email, note FROM users", response)) == [expected]


def test_the_client_encoding_gets_its_own_plan() -> None:
    encoding = ["UTF8"]
    masks = compile_masks(OTHER_RULES)
    masking = session(full_catalog(), masks=lambda: masks, encoding=lambda: encoding[0])
    value = "élève".encode()  # 5 characters in UTF8, 7 in LATIN1
    response = row_description(field("note", USERS_OID, 4)) + data_row(value) + COMPLETE + READY
    for name in ("UTF8", "LATIN1", "UTF8"):
        encoding[0] = name
        masker = build_masker(MaskStrategy.PARTIAL, PgColumn(25, -1, pg_codec(name)))
        assert rows_of(run(masking, "SELECT note FROM users", response)) == [(masker(value),)]


def test_computed_columns_are_planned_per_statement() -> None:
    """The same RowDescription (`upper`, no table) masked or not as its statement's lineage
    says, also for the statements of one simple Query."""
    masking = session(full_catalog())
    upper = row_description(field("upper"))

    def result(value: bytes) -> bytes:
        return upper + data_row(value) + COMPLETE

    for _ in range(2):
        out = run(masking, "SELECT upper(email) FROM users", result(b"ANN@X.COM") + READY)
        assert rows_of(out) == [(b"****@X.COM",)]
        assert rows_of(run(masking, "SELECT upper(note) FROM users", result(b"HELLO") + READY)) == [(b"HELLO",)]
        out = run(masking, "SELECT upper(note) FROM users; SELECT upper(email) FROM users",
                  result(b"HELLO") + result(b"ANN@X.COM") + READY)
        assert rows_of(out) == [(b"HELLO",), (b"****@X.COM",)]


def test_a_suspended_portal_keeps_its_own_counts() -> None:
    """A plan from the cache is a copy per result set: a Query with the same RowDescription
    between two Executes of a suspended portal does not mix its counts with the portal's."""
    masking = session(full_catalog())
    row = data_row(b"1", b"ann@example.com")
    run(masking, "SELECT id, email FROM users", EMAILS + row + COMPLETE + m.ready_for_query(b"T"))
    assert masking.masked_counts() == (("email", 1),)
    masking.to_upstream(frame(b"P", b"s1\x00SELECT id, email FROM users\x00\x00\x00")
                        + frame(b"B", b"c1\x00s1\x00\x00\x00\x00\x00\x00\x00") + frame(b"D", b"Pc1\x00")
                        + frame(b"E", b"c1\x00\x00\x00\x00\x01") + SYNC)
    out = masking.from_upstream(frame(b"1", b"") + frame(b"2", b"") + EMAILS + row + frame(b"s", b"")
                                + m.ready_for_query(b"T"))
    assert rows_of(out) == [(b"1", b"****@example.com")]
    out = run(masking, "SELECT id, email FROM users", EMAILS + row + row + COMPLETE + m.ready_for_query(b"T"))
    assert rows_of(out) == [(b"1", b"****@example.com")] * 2
    masking.to_upstream(frame(b"E", b"c1\x00\x00\x00\x00\x00") + SYNC)
    out = masking.from_upstream(row + row + row + COMPLETE + m.ready_for_query(b"T"))
    assert rows_of(out) == [(b"1", b"****@example.com")] * 3
    assert masking.masked_counts() == (("email", 2),)  # the Query
    assert masking.masked_counts() == (("email", 4),)  # the portal: 1 row, then 3


def test_the_plan_cache_is_bounded() -> None:
    cache = full_catalog()
    masking = session(cache)
    for i in range(pg_masking._MAX_PLANS + 50):
        description = row_description(field(f"c{i}", USERS_OID, 1, 23))
        run(masking, f"SELECT id AS c{i} FROM users", description + data_row(b"1") + COMPLETE + READY)
        assert len(cache.plans) <= pg_masking._MAX_PLANS
    assert cache.plans


# ------------------------------------------------------------------ cached = built anew
# A sequence of results (simple and extended protocol, in text and binary format) through one
# session whose masks, client encoding and catalog change between them, against a new session
# for each, with a new catalog and no plan cache: the bytes and the counts must be the same.

_STATEMENTS = (  # (sql, the columns of its result: (name, attnum or 0 for computed, type OID))
    ("SELECT id, email FROM users", (("id", 1, 23), ("email", 2, 25))),
    ("SELECT id, note FROM users", (("id", 1, 23), ("note", 4, 25))),
    ("SELECT note, ssn FROM users", (("note", 4, 25), ("ssn", 3, 23))),
    ("SELECT upper(email), upper(note) FROM users", (("upper", 0, 25), ("upper", 0, 25))),
    ("SELECT upper(note), upper(email) FROM users", (("upper", 0, 25), ("upper", 0, 25))),
    ("SELECT length(note), upper(email) FROM users", (("length", 0, 23), ("upper", 0, 25))),
    ("SELECT mail FROM contacts", (("mail", -2, 25),)),
)
_MULTI = "SELECT upper(note), upper(email) FROM users; SELECT upper(email), upper(note) FROM users"
_MASKS = (MASKS, compile_masks(OTHER_RULES), None)
_TEXTS = st.sampled_from([b"ann@example.com", b"paid 4111 1111 1111 1111", b"hello", "élève".encode(), b"",
                          b"bob@x.org", b"\xff\xfe"])


def _fields(columns: tuple[tuple[str, int, int], ...], formats: tuple[int, ...]) -> tuple[m.FieldDescription, ...]:
    found = []
    for i, (name, attnum, type_oid) in enumerate(columns):
        table = VIEW_OID if attnum == -2 else USERS_OID if attnum else 0
        found.append(m.FieldDescription(name, table, 2 if attnum == -2 else attnum, type_oid, -1, -1,
                                        formats[i] if formats else 0))
    return tuple(found)


@st.composite
def _rows(draw: st.DrawFn, columns: tuple[tuple[str, int, int], ...], formats: tuple[int, ...]) -> bytes:
    rows = []
    for _ in range(draw(st.integers(0, 4))):
        values: list[bytes | None] = []
        for i, (_name, _attnum, type_oid) in enumerate(columns):
            if draw(st.integers(0, 5)) == 0:
                values.append(None)
            elif type_oid == 23:
                number = draw(st.integers(-5, 5))
                values.append(struct.pack("!i", number) if formats and formats[i] else str(number).encode())
            else:
                values.append(draw(_TEXTS))
        rows.append(data_row(*values))
    return b"".join(rows)


_Shape = tuple[str, int, bool]  # kind, statement, Describe of the portal (else of the statement)
_shapes = st.tuples(st.sampled_from(["query", "extended", "multi"]), st.integers(0, len(_STATEMENTS) - 1),
                    st.booleans())


@st.composite
def _exchange(draw: st.DrawFn, shape: _Shape) -> tuple[bytes, bytes]:
    """What the client sends and the server answers for a result of this shape."""
    kind, statement, describe_portal = shape
    sql, columns = _STATEMENTS[statement]
    formats = tuple(draw(st.sampled_from([0, 1])) for _ in columns)
    if kind == "query":
        return query(sql), row_description(*_fields(columns, ())) + draw(_rows(columns, ())) + COMPLETE + READY
    if kind == "multi":
        columns = _STATEMENTS[3][1]
        one = row_description(*_fields(columns, ()))
        return query(_MULTI), (one + draw(_rows(columns, ())) + COMPLETE + one + draw(_rows(columns, ())) + COMPLETE
                               + READY)
    parse = frame(b"P", f"\x00{sql}\x00\x00\x00".encode())
    bind = frame(b"B", b"\x00\x00\x00\x00\x00\x00" + struct.pack(f"!h{len(formats)}h", len(formats), *formats))
    execute = frame(b"E", b"\x00\x00\x00\x00\x00")
    rows = draw(_rows(columns, formats)) + COMPLETE + READY
    if describe_portal:  # its formats in the description
        return (parse + bind + frame(b"D", b"P\x00") + execute + SYNC,
                frame(b"1", b"") + frame(b"2", b"") + row_description(*_fields(columns, formats)) + rows)
    # Describe of the statement: text in the description, the Bind's formats apply
    return (parse + frame(b"D", b"S\x00") + bind + execute + SYNC,
            frame(b"1", b"") + frame(b"t", b"\x00\x00") + row_description(*_fields(columns, ())) + frame(b"2", b"")
            + rows)


@st.composite
def _steps(draw: st.DrawFn) -> list[tuple[str, object, bytes, bytes]]:
    """(kind, argument, what the client sends, what the server answers) per step: results of
    a few shapes, each seen again and again, with changes between them."""
    shapes = draw(st.lists(_shapes, min_size=1, max_size=3))
    steps: list[tuple[str, object, bytes, bytes]] = [
        ("masks", draw(st.integers(0, len(_MASKS) - 1)), b"", b""),
        ("encoding", draw(st.sampled_from(["UTF8", "LATIN1", "SJIS"])), b"", b""),
    ]
    for _ in range(draw(st.integers(2, 20))):
        kind = draw(st.sampled_from(["result"] * 4 + ["masks", "encoding", "ddl", "stale"]))
        if kind == "result":
            steps.append((kind, None, *draw(_exchange(draw(st.sampled_from(shapes))))))
        elif kind == "masks":
            steps.append((kind, draw(st.integers(0, len(_MASKS) - 1)), b"", b""))
        elif kind == "encoding":
            steps.append((kind, draw(st.sampled_from(["UTF8", "LATIN1", "SJIS"])), b"", b""))
        else:
            steps.append((kind, None, b"", b""))
    return steps


class _NoPlans(dict[tuple[object, ...], Any]):
    """A plan cache that keeps nothing: every plan is built anew."""

    def __setitem__(self, key: tuple[object, ...], value: object) -> None:
        pass


def _drive(masking: PgResultMasking, cache: CatalogCache, truth: Relation, sent: bytes, answer: bytes) -> bytes:
    """The session and the runtime around the filter: the catalog answered from `truth`."""
    masking.to_upstream(sent)
    out = masking.from_upstream(answer)
    while masking.waiting is not None:
        request = masking.waiting
        for oid in request.oids:
            cache.relations[oid] = full_catalog(truth).relations.get(oid)
        if request.views and cache.views is None:
            cache.views = {("public", "contacts"): CONTACTS}
        cache.changed()
        out += masking.resume()
    return out


@settings(max_examples=300, deadline=None)
@given(_steps())
def test_cached_plans_mask_as_plans_built_anew(steps: list[tuple[str, object, bytes, bytes]]) -> None:
    masks: list[SessionMasks | None] = [MASKS]
    encoding = ["UTF8"]
    truth = [USERS]
    cache = full_catalog()
    cached = session(cache, masks=lambda: masks[0], encoding=lambda: encoding[0])
    for kind, argument, sent, answer in steps:
        if kind == "masks":
            assert isinstance(argument, int)
            masks[0] = _MASKS[argument]
            continue
        if kind == "encoding":
            assert isinstance(argument, str)
            encoding[0] = argument
            continue
        if kind == "ddl":  # the table changes, through the proxy
            truth[0] = USERS_RENAMED if truth[0] is USERS else USERS
            sent, answer = query("ALTER TABLE users"), m.CommandComplete("ALTER TABLE").encode() + READY
        if kind == "stale":
            cache.loaded_at -= pg_masking.CATALOG_TTL + 1
            continue
        fresh_cache = full_catalog(truth[0])
        fresh_cache.plans = _NoPlans()
        fresh = session(fresh_cache, masks=lambda: masks[0], encoding=lambda: encoding[0])
        expected = _drive(fresh, fresh_cache, truth[0], sent, answer)
        assert _drive(cached, cache, truth[0], sent, answer) == expected
        assert cached._masked == fresh._masked  # the counts of masked values, per result set
        cached._masked.clear()
