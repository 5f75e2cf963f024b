"""PgResultMasking byte by byte: which result each response belongs to, which columns a plan
masks, rows rebuilt with every length right, errors redacted, binary COPY refused, the catalog wait."""

from __future__ import annotations

import struct

import pytest

from dbguard.masking.session_masks import SessionMasks
from dbguard.model import Identity, IdentityKind, SessionInfo
from dbguard.policy.rules import parse_policy_text
from dbguard.session.pg_masking import CatalogCache, PgResultMasking, Relation, View
from dbguard.sql.pg_lineage import result_lineage
from dbguard.wire.pg import messages as m
from dbguard.wire.pg.framing import frame

USERS_OID = 16400
VIEW_OID = 16500
RULES = """
masks:
  - id: email
    columns: [users.email]
    strategy: email
  - id: ssn
    columns: ["*.ssn"]
    strategy: full
  - id: cards
    detect: [credit_card]
    strategy: full
"""
SESSION = SessionInfo("s", "pg", "postgres", Identity("copilot", IdentityKind.AGENT), "127.0.0.1:1", "app")


def masks() -> SessionMasks:
    found = SessionMasks.for_session(parse_policy_text(RULES), SESSION, b"k" * 32)
    assert found is not None
    return found


def catalog() -> CatalogCache:
    cache = CatalogCache()
    cache.relations[USERS_OID] = Relation("public", "users", "r", {1: "id", 2: "email", 3: "ssn", 4: "note"})
    cache.relations[VIEW_OID] = Relation("public", "contacts", "v", {1: "id", 2: "mail"})
    cache.views = {("public", "contacts"): View("public", "contacts", ("id", "mail"),
                                                result_lineage("SELECT id, email AS mail FROM users"))}
    return cache


def filt(cache: CatalogCache | None = None) -> PgResultMasking:
    return PgResultMasking(masks, cache if cache is not None else catalog(), lambda: "UTF8", journaled=True)


def field(name: str, table: int = 0, column: int = 0, type_oid: int = 25, fmt: int = 0) -> m.FieldDescription:
    return m.FieldDescription(name, table, column, type_oid, -1, -1, fmt)


def row_description(*fields: m.FieldDescription) -> bytes:
    return m.RowDescription(tuple(fields)).encode()


def data_row(*values: bytes | None) -> bytes:
    return m.DataRow(tuple(values)).encode()


def rows_of(data: bytes) -> list[tuple[bytes | None, ...]]:
    found = []
    pos = 0
    while pos < len(data):
        kind, length = struct.unpack_from("!cI", data, pos)
        if kind == b"D":
            message = m.decode_backend(kind, data[pos + 5 : pos + 1 + length])
            assert isinstance(message, m.DataRow)
            found.append(message.values)
        pos += 1 + length
    return found


def query(sql: str) -> bytes:
    return m.Query(sql.encode()).encode()


COMPLETE = m.CommandComplete("SELECT 1").encode()
READY = m.ready_for_query(b"I")


def test_simple_query_masks_by_provenance_and_leaves_other_columns() -> None:
    masking = filt()
    masking.to_upstream(query("SELECT id, email, ssn, note FROM users"))
    response = (row_description(field("id", USERS_OID, 1, 23), field("email", USERS_OID, 2),
                                field("ssn", USERS_OID, 3), field("note", USERS_OID, 4))
                + data_row(b"1", b"ann@example.com", b"123-45-6789", b"hello")
                + data_row(b"2", None, b"987-65-4321", None) + COMPLETE + READY)
    out = masking.from_upstream(response)
    assert rows_of(out) == [(b"1", b"****@example.com", b"****", b"hello"), (b"2", None, b"****", None)]
    assert out.endswith(COMPLETE + READY)
    assert masking.masked_counts() == (("email", 1), ("ssn", 2))


def test_nothing_to_mask_relays_the_same_bytes() -> None:
    masking = filt()
    masking.to_upstream(query("SELECT id, note FROM users"))
    response = (row_description(field("id", USERS_OID, 1, 23), field("note", USERS_OID, 4, 23))
                + data_row(b"1", b"x") + COMPLETE + READY)
    assert masking.from_upstream(response) == response


def test_messages_cut_anywhere_come_out_the_same() -> None:
    response = (row_description(field("email", USERS_OID, 2))
                + b"".join(data_row(f"u{i}@example.com".encode()) for i in range(50)) + COMPLETE + READY)
    whole = filt()
    whole.to_upstream(query("SELECT email FROM users"))
    expected = whole.from_upstream(response)
    for step in (1, 3, 7, 64):
        masking = filt()
        masking.to_upstream(query("SELECT email FROM users"))
        out = b"".join(masking.from_upstream(response[i : i + step]) for i in range(0, len(response), step))
        assert out == expected


def test_computed_columns_follow_lineage_and_views() -> None:
    masking = filt()
    masking.to_upstream(query("SELECT upper(email), length(note), mail FROM users, contacts"))
    response = (row_description(field("upper"), field("length", type_oid=23), field("mail", VIEW_OID, 2))
                + data_row(b"ANN@EXAMPLE.COM", b"5", b"ann@example.com") + COMPLETE + READY)
    assert rows_of(masking.from_upstream(response)) == [(b"****@EXAMPLE.COM", b"5", b"****@example.com")]


def test_untraceable_computed_column_gets_the_strictest_mask() -> None:
    masking = filt()
    masking.to_upstream(query("SELECT my_function(1)"))
    response = row_description(field("my_function")) + data_row(b"secret") + COMPLETE + READY
    assert rows_of(masking.from_upstream(response)) == [(b"****",)]


def test_content_detection_on_unmasked_text() -> None:
    masking = filt()
    masking.to_upstream(query("SELECT note FROM users"))
    response = (row_description(field("note", USERS_OID, 4))
                + data_row(b"paid with 4111 1111 1111 1111") + data_row(b"nothing here") + COMPLETE + READY)
    assert rows_of(masking.from_upstream(response)) == [(b"paid with *******************",), (b"nothing here",)]


def test_extended_protocol_statement_described_once_executed_in_binary() -> None:
    masking = filt()
    parse = frame(b"P", b"s1\x00SELECT id, email FROM users WHERE id = $1\x00\x00\x00")
    describe = frame(b"D", b"Ss1\x00")
    masking.to_upstream(parse + describe + frame(b"S", b""))
    described = (frame(b"1", b"") + frame(b"t", b"\x00\x01\x00\x00\x00\x17")
                 + row_description(field("id", USERS_OID, 1, 23), field("email", USERS_OID, 2)) + READY)
    assert masking.from_upstream(described) == described
    for _ in range(2):
        bind = frame(b"B", b"\x00s1\x00" + b"\x00\x00" + b"\x00\x01\x00\x00\x00\x011" + b"\x00\x01\x00\x01")
        execute = frame(b"E", b"\x00\x00\x00\x00\x00")
        masking.to_upstream(bind + execute + frame(b"S", b""))
        response = (frame(b"2", b"") + data_row(struct.pack("!i", 1), b"ann@example.com") + COMPLETE + READY)
        assert rows_of(masking.from_upstream(response)) == [(struct.pack("!i", 1), b"****@example.com")]


def test_an_error_skips_the_rest_of_the_batch() -> None:
    masking = filt()
    parse = frame(b"P", b"\x00SELECT email FROM users\x00\x00\x00")
    bind = frame(b"B", b"\x00\x00\x00\x00\x00\x00\x00\x00")
    masking.to_upstream(parse + bind + frame(b"D", b"P\x00") + frame(b"E", b"\x00\x00\x00\x00\x00")
                        + frame(b"S", b""))
    error = m.error("42P01", "relation does not exist")
    assert masking.from_upstream(error + READY) == error + READY
    masking.to_upstream(query("SELECT email FROM users"))
    response = row_description(field("email", USERS_OID, 2)) + data_row(b"ann@example.com") + COMPLETE + READY
    assert rows_of(masking.from_upstream(response)) == [(b"****@example.com",)]


def test_data_and_integrity_errors_do_not_quote_values() -> None:
    masking = filt()
    masking.to_upstream(query("SELECT email::int FROM users"))
    cast = m.error("22P02", 'invalid input syntax for type integer: "ann@example.com"')
    unique = m.error("23505", 'duplicate key value violates unique constraint "users_email_key"',
                     detail="Key (email)=(ann@example.com) already exists.")
    other = m.error("42P01", 'relation "users" does not exist')
    out = masking.from_upstream(cast + unique + other + READY)
    assert b"ann@example.com" not in out
    assert b'integer: \\"****\\"' not in out  # (sanity: the quotes are plain, not escaped)
    assert b'"****"' in out
    assert b"Key (email)=(****) already exists." in out
    assert b'relation "users" does not exist' in out  # identifiers in other errors are left alone


def test_binary_copy_out_of_masked_columns_is_refused_and_the_session_goes_on() -> None:
    # (text and CSV copies are rewritten: tests/unit/test_pg_copy_masking.py)
    masking = filt()
    masking.to_upstream(query("COPY users TO STDOUT (FORMAT binary)"))
    copy = (frame(b"H", b"\x01\x00\x01\x00\x01") + frame(b"d", b"PGCOPY\nann@example.com") + frame(b"c", b"")
            + m.CommandComplete("COPY 1").encode())
    out = masking.from_upstream(copy + READY)
    assert b"ann@example.com" not in out
    assert b"binary COPY TO STDOUT of masked columns is refused" in out
    assert out.endswith(READY)


def test_unknown_table_waits_for_the_catalog_then_resumes() -> None:
    cache = CatalogCache(views={})
    masking = filt(cache)
    masking.to_upstream(query("SELECT email FROM users"))
    response = row_description(field("email", USERS_OID, 2)) + data_row(b"ann@example.com") + COMPLETE + READY
    assert masking.from_upstream(response) == b""
    assert masking.waiting is not None
    assert masking.waiting.oids == frozenset({USERS_OID})
    assert masking.from_upstream(b"") == b""  # still waiting: kept
    cache.relations[USERS_OID] = catalog().relations[USERS_OID]
    assert rows_of(masking.resume()) == [(b"****@example.com",)]


def test_an_oid_the_catalog_cannot_name_is_masked_as_untraceable() -> None:
    cache = CatalogCache(views={})
    cache.relations[USERS_OID] = None
    masking = filt(cache)
    masking.to_upstream(query("SELECT note FROM users"))
    response = row_description(field("note", USERS_OID, 4)) + data_row(b"hello") + COMPLETE + READY
    assert rows_of(masking.from_upstream(response)) == [(b"****",)]


def test_ddl_through_the_proxy_expires_the_catalog() -> None:
    cache = catalog()
    masking = filt(cache)
    masking.to_upstream(query("ALTER TABLE users RENAME COLUMN note TO ssn"))
    masking.from_upstream(m.CommandComplete("ALTER TABLE").encode() + READY)
    assert cache.relations == {}
    assert cache.views is None


@pytest.mark.parametrize("count", [0, 1, 3])
def test_several_statements_in_one_query_each_get_their_lineage(count: int) -> None:
    masking = filt()
    sql = "SELECT 1; " * count + "SELECT upper(email) FROM users; SELECT upper(note) FROM users"
    masking.to_upstream(query(sql))
    one = row_description(field("?column?", type_oid=23)) + data_row(b"1") + COMPLETE
    response = (one * count + row_description(field("upper")) + data_row(b"ANN@X.COM") + COMPLETE
                + row_description(field("upper")) + data_row(b"HELLO") + COMPLETE + READY)
    assert rows_of(masking.from_upstream(response)) == [(b"1",)] * count + [(b"****@X.COM",), (b"HELLO",)]
