"""Masking MySQL/MariaDB results (`dbguard.session.mysql_masking`) and its wiring into the
session (`dbguard.session.mysql`).

Covers, byte for byte: text-protocol rows (lengths recomputed across the length-encoded integer
boundaries 250/251, 65535/65536; NULLs kept; rows with nothing masked returned as the same
object), binary-protocol rows (NULL bitmap, typed values, a `null` mask setting the bit, an
integer masked to a valid 4-byte value), content detection (text, not binary charsets; JSON kept
valid), which mask a column gets (provenance, positional lineage, derived tables the server
names like tables, views expanded from the catalog, unknown tables masked strictly), several
result sets of one message, ERR redaction, the catalog and its reader. Through a session: rows
masked, the hot path declining masked results but still relaying plain rows of a result with
nothing to mask, an exempt identity untouched, a 16 MiB row re-framed with the sequence ids
of the rest shifted, the catalog read after login and after DDL, the journal's counts and an
ERR redacted for the client and the journal alike.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dbguard.journal import OutcomeEvent
from dbguard.masking.session_masks import MaskDirectory, SessionMasks
from dbguard.model import (
    ANY_SOURCE,
    UNTRACEABLE,
    Action,
    Decision,
    Identity,
    IdentityKind,
    SessionInfo,
    StatementInfo,
    StatementKind,
    StatementSource,
)
from dbguard.policy.conditions import Condition, Mode
from dbguard.policy.rules import Detector, Mask, MaskStrategy, Policy
from dbguard.session.mysql_masking import (
    _LINEAGES,
    CATALOG_QUERY,
    Catalog,
    CatalogFailed,
    CatalogReader,
    ResponseMasking,
    ResultPlan,
    build_plan,
    column_sources,
    lineage_of_message,
    loaded_lineage,
    redact_error,
    redact_error_message,
)
from dbguard.session.pg_actions import SendUpstream
from dbguard.sql.mysql_lineage import result_lineage, statements_lineage
from dbguard.wire.mysql import messages as m
from dbguard.wire.mysql.packets import MAX_PACKET_PAYLOAD, PacketReader, encode_packets
from tests.unit.journal_helpers import taken
from tests.unit.test_mysql_session import (
    OK_FE,
    BlockDrops,
    Driver,
    client_login,
    make_settings,
    pkt,
    to_client,
    to_upstream,
    upstream_login,
)

T = m.ColumnType
KEY = b"unit-test-hash-key-0123456789"
POLICY = Policy(masks=(
    Mask("pii-email", columns=("customers.email",), strategy=MaskStrategy.EMAIL,
         unless=Condition(Mode.UNLESS, roles=("dba",))),
    Mask("pii-ssn", columns=("*.ssn",), strategy=MaskStrategy.PARTIAL),
    Mask("secret", columns=("app.vault.secret",), strategy=MaskStrategy.NULL),
    Mask("ids", columns=("app.accounts.number",), strategy=MaskStrategy.FULL),
    Mask("cards", detect=(Detector.CREDIT_CARD,), strategy=MaskStrategy.FULL),
))
VIEW_V = "select `app`.`customers`.`email` AS `email`,`app`.`customers`.`id` AS `id` from `app`.`customers`"
VIEW_W = "select concat('<',`app`.`v`.`email`,'>') AS `mail` from `app`.`v`"


def session_info(roles: tuple[str, ...] = ("readers",)) -> SessionInfo:
    return SessionInfo("s1", "unit-mysql", "mysql", Identity("copilot", IdentityKind.AGENT, roles), "client", "app")


def masks(policy: Policy = POLICY) -> SessionMasks:
    found = MaskDirectory(policy, KEY).for_session(session_info())
    assert found is not None
    return found


def catalog() -> Catalog:
    c = Catalog()
    c.replace([("app", "customers", None), ("app", "vault", None), ("app", "accounts", None), ("app", "v", VIEW_V),
               ("app", "w", VIEW_W), ("app", "hidden", "")])
    return c


def coldef(name: bytes, ctype: int = T.VAR_STRING, *, table: bytes = b"customers", org: bytes | None = None,
           schema: bytes = b"app", charset: int = 45, length: int = 400, flags: int = 0) -> m.ColumnDefinition41:
    return m.ColumnDefinition41(b"def", schema, table, table, name, name if org is None else org, charset, length,
                                ctype, m.ColumnFlag(flags), 0)


def computed(name: bytes, ctype: int = T.VAR_STRING, charset: int = 45) -> m.ColumnDefinition41:
    return m.ColumnDefinition41(b"def", b"", b"", b"", name, b"", charset, 400, ctype, m.ColumnFlag(0), 0)


ID = coldef(b"id", T.LONG, charset=63, length=11)
EMAIL = coldef(b"email")
NAME = coldef(b"name")
SSN = coldef(b"ssn")


def plan_for(definitions: Sequence[m.ColumnDefinition41], sql: str, *, binary: bool = False,
             session_masks: SessionMasks | None = None, cat: Catalog | None = None) -> ResultPlan:
    return build_plan(definitions, result_lineage(sql, current_database="app"), session_masks or masks(),
                      cat or catalog(), binary=binary)


# ---------------------------------------------------------------------------- lineage by integer shape

# Pairs that differ only in literals: the second, asked after the first, must get its own
# lineage (a string alias, what ELT picks, a constant next to a column), never a stale one.
LITERAL_PAIRS = [
    ("SELECT c FROM customers WHERE id=1", "SELECT c FROM customers WHERE id=2"),
    ("SELECT a FROM (SELECT ssn AS 'a', name AS 'b' FROM customers) d",
     "SELECT a FROM (SELECT ssn AS 'b', name AS 'a' FROM customers) d"),
    ("SELECT a FROM (SELECT 1 AS 'a', ssn AS 'b' FROM customers) d",
     "SELECT a FROM (SELECT ssn AS 'a', 1 AS 'b' FROM customers) d"),
    ("SELECT ELT(1, ssn, name) FROM customers", "SELECT ELT(2, ssn, name) FROM customers"),
    ("SELECT 1, ssn FROM customers ORDER BY 1", "SELECT 2, ssn FROM customers ORDER BY 2"),
    ("SELECT * FROM customers LIMIT 1", "SELECT * FROM customers LIMIT 2"),
    ("SELECT 'ssn' AS x FROM customers", "SELECT 'name' AS x FROM customers"),
    ("SELECT id FROM customers; SELECT ssn FROM customers WHERE id=1",
     "SELECT id FROM customers; SELECT ssn FROM customers WHERE id=2"),
]


@pytest.mark.parametrize(("first", "second"), LITERAL_PAIRS)
def test_lineage_cached_by_integer_shape_is_the_cold_lineage(first: str, second: str) -> None:
    _LINEAGES.clear()
    for text in (first, second, first):
        cold = statements_lineage.__wrapped__(text, current_database="app")
        assert lineage_of_message(text, "app", (False, False)) == cold, text


def test_texts_differing_only_in_integers_are_parsed_once() -> None:
    _LINEAGES.clear()
    for n in range(50):
        lineage_of_message(f"SELECT c FROM sbtest1 WHERE id={n}", "app", (False, False))
    assert len(_LINEAGES) == 1
    lineage_of_message("SELECT c FROM sbtest1 WHERE id=1", "other", (False, False))
    lineage_of_message("SELECT c FROM sbtest1 WHERE id=1", "app", (True, False))
    assert len(_LINEAGES) == 3, "the database and the sql_mode are part of the key"


@pytest.mark.parametrize("text", [
    "SELECT ssn FROM customers WHERE id=1",
    "SELECT id FROM customers; SELECT ssn FROM customers WHERE id=2",
    "CALL p(); SELECT id FROM customers",
    "SELECT /* no shape */ email FROM customers",
])
def test_loaded_lineage_is_the_union_of_the_cold_lineages(text: str) -> None:
    """What a response reads per execution (a prepared statement's: the same text each time)
    is worked out once, and is what the statements' own lineages give."""
    cold = statements_lineage.__wrapped__(text, current_database="app")
    union, lineages = loaded_lineage(text, "app", (False, False))
    assert union.sources == frozenset().union(*(lineage.sources for lineage in cold))
    if len(cold) == 1:
        assert union == cold[0]
    assert lineages == (None if any(lineage is UNTRACEABLE for lineage in cold) else cold)
    assert loaded_lineage(text, "app", (False, False)) is loaded_lineage(text, "app", (False, False))
    assert loaded_lineage(text, "other", (False, False))[0] is not union, "the database is part of the key"


# ---------------------------------------------------------------------------- rows checked together

DETECTING = Policy(masks=(Mask("content", detect=tuple(Detector), strategy=MaskStrategy.FULL),))
UCS2_NOTE = coldef(b"note", charset=35)  # ucs2: not ASCII-transparent, checked row by row
_VALUES = st.one_of(
    st.none(),
    st.sampled_from([b"plain", b"order 4111 of 2024", b"4111 1111 1111 1111", b"123-45-6789", b"a@b.example",
                     b"+44 20 7946 0958", b"DE89370400440532013000", b"AKIAIOSFODNN7EXAMPLE", b"12345678901-" * 5,
                     "\u0663\u0662\u0661-45-6789".encode(), "caf\u00e9 123-45-6789".encode()]),
    st.binary(max_size=30),
)


@settings(max_examples=300, deadline=None)
@given(rows=st.lists(st.tuples(_VALUES, _VALUES, _VALUES), min_size=1, max_size=8), binary=st.booleans())
def test_rows_checked_together_are_clear_exactly_when_each_is(
        rows: list[tuple[bytes | None, bytes | None, bytes | None]], binary: bool) -> None:
    # The hot path asks whether a batch of rows goes as it came; the answer must be the one
    # row-by-row masking gives, whatever the values (PII in any row, non-ASCII text, a codec
    # that is not ASCII-transparent, NULLs).
    session_masks = masks(DETECTING)
    definitions = [ID, NAME, UCS2_NOTE] if rows[0][2] is None else [ID, NAME, EMAIL]
    plan = plan_for(definitions, "SELECT id, name, note FROM customers", binary=binary,
                    session_masks=session_masks).fresh()
    types = [d.type for d in definitions]
    if definitions[2] is UCS2_NOTE:  # what the server sends in ucs2
        rows = [(i, a, None if b is None else b.decode("latin-1").encode("utf-16-be")) for i, a, b in rows]
    payloads = [m.encode_binary_row([b"\x01\x00\x00\x00", a, b], types) if binary else
                m.encode_text_row([b"1", a, b]) for _id, a, b in rows]
    expected = all(plan.row(payload) is payload for payload in payloads)
    assert plan.fresh().rows_unchanged(payloads) == expected


def test_a_batch_with_one_value_to_mask_is_not_clear() -> None:
    plan = plan_for([ID, NAME], "SELECT id, name FROM customers", session_masks=masks(DETECTING))
    rows = [m.encode_text_row([b"%d" % i, b"12345678901-" * 10]) for i in range(200)]
    assert plan.fresh().rows_unchanged(rows)
    rows[137] = m.encode_text_row([b"137", b"ssn 123-45-6789"])
    assert not plan.fresh().rows_unchanged(rows)
    # Not ASCII: `\d` reads other digits too; such values are checked one by one.
    sample = Policy(masks=(Mask("pii-content", detect=(Detector.EMAIL, Detector.CREDIT_CARD, Detector.US_SSN),
                                strategy=MaskStrategy.FULL),))
    plan = plan_for([ID, NAME], "SELECT id, name FROM customers", session_masks=masks(sample))
    arabic_indic = "\u0663\u0662\u0661\u0664\u0665\u0666\u0667\u0668\u0669"
    fullwidth = "\uff11\uff12\uff13-\uff14\uff15-\uff16\uff17\uff18\uff19"
    for value in (f"ssn {arabic_indic}", f"ssn {fullwidth}"):
        assert not plan.fresh().rows_unchanged([m.encode_text_row([b"1", value.encode()])]), value


# ---------------------------------------------------------------------------- text rows


def test_text_row_rewritten_byte_for_byte() -> None:
    plan = plan_for([ID, EMAIL, NAME, SSN], "SELECT id, email, name, ssn FROM customers")
    assert plan.rewrites
    row = m.encode_text_row([b"7", b"alice@example.com", b"Alice", b"123-45-6789"])
    assert plan.row(row) == (b"\x017" + b"\x10****@example.com" + b"\x05Alice" + b"\x0b*******6789")
    assert plan.take_counts() == (("email", 1), ("ssn", 1))
    assert plan.take_counts() == ()


def test_nulls_stay_null_and_an_unchanged_row_is_the_same_object() -> None:
    plan = plan_for([ID, EMAIL, NAME, SSN], "SELECT id, email, name, ssn FROM customers")
    row = m.encode_text_row([b"1", None, b"Bob", None])
    assert plan.row(row) is row
    assert plan.take_counts() == ()


@pytest.mark.parametrize(("size", "header"), [
    (250, b"\xfa"), (251, b"\xfc\xfb\x00"), (65535, b"\xfc\xff\xff"), (65536, b"\xfd\x00\x00\x01"),
])
def test_length_encoded_boundaries(size: int, header: bytes) -> None:
    big_ssn = coldef(b"ssn", T.BLOB, length=0xFFFFFFFF)
    plan = plan_for([big_ssn, ID], "SELECT ssn, id FROM customers")
    value = b"9" * size
    out = plan.row(m.encode_text_row([value, b"5"]))
    assert out == header + b"*" * (size - 4) + b"9999" + b"\x015"
    assert m.decode_text_row(out, 2) == [b"*" * (size - 4) + b"9999", b"5"]


@pytest.mark.parametrize("size", [251, 65536])
def test_a_value_that_shrinks_below_a_boundary_gets_a_shorter_length(size: int) -> None:
    plan = plan_for([EMAIL, ID], "SELECT email, id FROM customers")
    address = b"a" * (size - len(b"@example.com")) + b"@example.com"
    row = m.encode_text_row([address, b"5"])
    assert row[:1] in (b"\xfc", b"\xfd")
    assert plan.row(row) == b"\x10****@example.com\x015"


def test_a_row_before_its_definitions_or_malformed_fails_closed() -> None:
    response = ResponseMasking(masks(), catalog(), sql="SELECT email FROM customers", database="app", binary=False)
    with pytest.raises(Exception, match="before its column definitions"):
        response.row(b"\x01x")
    plan = plan_for([EMAIL], "SELECT email FROM customers")
    with pytest.raises(Exception, match="text row"):
        plan.row(b"\x05abc")


# ---------------------------------------------------------------------------- binary rows


def test_binary_row_rewritten_byte_for_byte() -> None:
    when = coldef(b"created", T.DATETIME, charset=63, length=19)
    plan = plan_for([ID, EMAIL, NAME, when], "SELECT id, email, name, created FROM customers", binary=True)
    types = [T.LONG, T.VAR_STRING, T.VAR_STRING, T.DATETIME]
    row = m.encode_binary_row([b"\x07\x00\x00\x00", b"alice@example.com", None, b"\xe8\x07\x01\x02\x03\x04\x05"],
                              types)
    out = plan.row(row)
    assert out == (b"\x00" + b"\x10" + b"\x07\x00\x00\x00" + b"\x10****@example.com"
                   + b"\x07\xe8\x07\x01\x02\x03\x04\x05")
    assert m.decode_binary_row(out, types)[2] is None


def test_binary_null_mask_sets_the_bitmap_and_integers_stay_valid() -> None:
    secret = coldef(b"secret", table=b"vault")
    number = coldef(b"number", T.LONG, table=b"accounts", charset=63)
    cat = catalog()
    plan = plan_for([secret, ID], "SELECT secret, id FROM vault", binary=True, cat=cat)
    types = [T.VAR_STRING, T.LONG]
    out = plan.row(m.encode_binary_row([b"s3cr3t", b"\x01\x00\x00\x00"], types))
    assert out == b"\x00\x04" + b"\x01\x00\x00\x00"  # bit 0 + offset 2 = 0x04: NULL
    plan = plan_for([number], "SELECT number FROM accounts", binary=True, cat=cat)
    assert m.decode_binary_row(plan.row(m.encode_binary_row([b"\x39\x30\x00\x00"], [T.LONG])), [T.LONG]) == [
        b"\x00\x00\x00\x00"]


# ---------------------------------------------------------------------------- content detection


def test_content_detection_on_text_only() -> None:
    note = coldef(b"note", table=b"orders")
    raw = coldef(b"raw", table=b"orders", charset=63)
    doc = coldef(b"doc", T.JSON, table=b"orders", charset=63)
    cat = catalog()
    cat.replace([("app", "orders", None)])
    plan = plan_for([note, raw, doc], "SELECT note, raw, doc FROM orders", cat=cat)
    card = "4111 1111 1111 1111"
    row = m.encode_text_row([f"paid with {card}".encode(), card.encode(), json.dumps({"card": card}).encode()])
    note_out, raw_out, doc_out = m.decode_text_row(plan.row(row), 3)
    assert note_out == b"paid with " + b"*" * len(card)
    assert raw_out == card.encode()  # a binary string is not text
    assert json.loads(doc_out or b"") == {"card": "*" * len(card)}
    assert plan.take_counts() == (("doc", 1), ("note", 1))


def test_content_only_policy_needs_no_lineage() -> None:
    policy = Policy(masks=(Mask("cards", detect=(Detector.CREDIT_CARD,), strategy=MaskStrategy.NULL),))
    plan = plan_for([computed(b"x")], "CALL p()", session_masks=masks(policy), cat=Catalog())
    assert plan.row(m.encode_text_row([b"card 4111111111111111"])) == b"\xfb"
    assert plan.row(m.encode_text_row([b"nothing here"])) == m.encode_text_row([b"nothing here"])


def test_nothing_to_mask_means_no_rewriting() -> None:
    plan = plan_for([ID, coldef(b"total", T.NEWDECIMAL, table=b"customers", charset=63)],
                    "SELECT id, total FROM customers")
    assert not plan.rewrites


# ---------------------------------------------------------------------------- which mask


def sources_of(definitions: Sequence[m.ColumnDefinition41], sql: str, cat: Catalog | None = None) -> list[set[str]]:
    found = column_sources(definitions, result_lineage(sql, current_database="app"), cat or catalog())
    return [{f"{s.schema}.{s.table}.{s.column}" if s != ANY_SOURCE else "ANY" for s in refs} for refs in found]


def test_provenance_and_lineage() -> None:
    assert sources_of([EMAIL, ID], "SELECT email AS e, id FROM customers") == [
        {"app.customers.email"}, {"app.customers.id"}]
    # MariaDB names a derived table or a CTE like a table: lineage sees through it
    derived = coldef(b"e", table=b"d")
    assert sources_of([derived], "SELECT e FROM (SELECT email AS e FROM customers) d") == [{"app.customers.email"}]
    assert sources_of([computed(b"UPPER(email)")], "SELECT UPPER(email) FROM customers") == [{"app.customers.email"}]
    # a star: positions unknown, the definitions name the table
    assert sources_of([ID, EMAIL], "SELECT * FROM customers") == [{"app.customers.id"}, {"app.customers.email"}]
    # a count that does not match: every source of the statement for computed columns
    assert sources_of([ID, computed(b"x")], "SELECT *, UPPER(email) FROM customers") == [
        {"app.customers.id"}, {"app.customers.*", "app.customers.email"}]


def test_views_are_expanded_from_the_catalog() -> None:
    from_view = coldef(b"email", table=b"v")
    assert sources_of([from_view], "SELECT email FROM v") == [{"app.customers.email"}]
    assert sources_of([from_view], "SELECT * FROM v") == [{"app.customers.email"}]
    view_over_view = coldef(b"mail", table=b"w", schema=b"")
    assert sources_of([view_over_view], "SELECT mail FROM w") == [{"app.customers.email"}]
    assert sources_of([computed(b"x")], "SELECT UPPER(mail) FROM w") == [{"app.customers.email"}]
    assert sources_of([coldef(b"x", table=b"hidden")], "SELECT x FROM hidden") == [{"ANY"}]


def stale(cat: Catalog) -> bool:
    return cat.stale


def test_unknown_tables_get_anything_and_ask_for_a_new_read() -> None:
    cat = catalog()
    assert not stale(cat)
    assert sources_of([coldef(b"x", table=b"tmp")], "SELECT x FROM tmp", cat) == [{"ANY"}]
    assert stale(cat)
    cat.replace([("app", "customers", None)])
    assert sources_of([coldef(b"x", table=b"tmp")], "SELECT x FROM tmp", cat) == [{"ANY"}]
    assert not stale(cat), "a name still unknown after a read does not ask again"
    cat.invalidate()
    assert stale(cat)
    sys_col = coldef(b"TABLE_NAME", table=b"TABLES", schema=b"information_schema")
    assert sources_of([sys_col], "SHOW TABLES", cat) == [{"information_schema.TABLES.TABLE_NAME"}]
    never = Catalog()
    never.failed()
    assert sources_of([EMAIL], "SELECT email FROM customers", never) == [{"ANY"}]
    assert stale(never), "a failed read is tried again"


def test_untraceable_statement_masks_computed_columns_strictly() -> None:
    plan = plan_for([computed(b"x"), ID], "CALL p()")
    row = m.encode_text_row([b"anything", b"1"])
    assert m.decode_text_row(plan.row(row), 2) == [None, b"1"]  # the strictest mask here is `null`
    lenient = Policy(masks=(Mask("e", columns=("customers.email",), strategy=MaskStrategy.EMAIL),
                            Mask("s", columns=("*.ssn",), strategy=MaskStrategy.PARTIAL)))
    plan = plan_for([computed(b"x"), ID], "SELECT myfunc(id), id FROM customers", session_masks=masks(lenient))
    assert m.decode_text_row(plan.row(row), 2) == [b"****", b"1"]


# ---------------------------------------------------------------------------- several results


def test_result_sets_follow_the_statements() -> None:
    response = ResponseMasking(masks(), catalog(), sql="SELECT id FROM customers; UPDATE t SET a = 1; "
                               "SELECT UPPER(email) FROM customers", database="app", binary=False)
    response.column_count(1)
    response.definition(computed(b"x").encode(), m.Capability(0))
    row = m.encode_text_row([b"bob@example.org"])
    assert response.row(row) is row
    assert response.result_end() == ()
    response.ok()  # the UPDATE
    response.column_count(1)
    response.definition(computed(b"y").encode(), m.Capability(0))
    assert response.row(row) == b"\x10****@example.org"
    assert response.result_end() == (("y", 1),)


def test_results_of_a_message_with_a_call_use_every_source() -> None:
    response = ResponseMasking(masks(), catalog(), sql="CALL p(); SELECT id FROM customers", database="app",
                               binary=False)
    response.column_count(1)
    response.definition(computed(b"x").encode(), m.Capability(0))
    assert response.row(m.encode_text_row([b"42"])) == b"\xfb"


# ---------------------------------------------------------------------------- errors


def test_duplicate_entry_is_redacted_but_the_key_kept() -> None:
    message = "Duplicate entry 'alice@example.com' for key 'email'"
    assert redact_error_message(message, masks(), quoted_values=True) == (
        "Duplicate entry '****' for key 'email'", 1)
    tricky = "Duplicate entry 'o'hara' for key 'x@example.com' for key 'email'"
    redacted, _ = redact_error_message(tricky, masks(), quoted_values=True)
    assert redacted == "Duplicate entry '****' for key 'email'"


@pytest.mark.parametrize(("message", "expected"), [
    ("Incorrect integer value: 'abc@x.org' for column `app`.`customers`.`id` at row 1",
     "Incorrect integer value: '****' for column `app`.`customers`.`id` at row 1"),
    ("Truncated incorrect DOUBLE value: '123-45-6789'", "Truncated incorrect DOUBLE value: '****'"),
    ("Data too long for column 'email' at row 1", "Data too long for column 'email' at row 1"),
    ("Cannot delete or update a parent row: a foreign key constraint fails", None),
    ("Unknown column 'emial' in 'field list'", "Unknown column 'emial' in '****'"),
])
def test_quoted_values_in_other_messages(message: str, expected: str | None) -> None:
    redacted, count = redact_error_message(message, masks(), quoted_values=True)
    assert redacted == (message if expected is None else expected)
    assert (count == 0) == (expected is None or expected == message)


def test_detectors_run_on_every_error_and_an_unchanged_err_is_the_same_object() -> None:
    payload = m.err(1644, "45000", "refund to 4111 1111 1111 1111 failed for 'bob'").encode()
    out = m.ErrPacket.decode(redact_error(payload, masks(), quoted_values=False))
    assert out.message == b"refund to " + b"*" * 19 + b" failed for 'bob'"
    assert (out.errno, out.sqlstate) == (1644, b"45000")
    plain = m.err(1146, "42S02", "Table 'app.nope' doesn't exist").encode()
    assert redact_error(plain, masks(), quoted_values=False) is plain


def test_errors_are_sensitive_only_when_a_column_mask_may_apply() -> None:
    def sensitive(sql: str, tables: tuple[str, ...] = ()) -> bool:
        return ResponseMasking(masks(), catalog(), sql=sql, database="app", binary=False, tables=tables).sensitive()

    assert sensitive("SELECT email FROM customers")
    assert sensitive("INSERT INTO customers (id, email) VALUES (1, 'a@b.c')", ("app.customers",))
    assert not sensitive("SELECT id FROM customers")
    assert not sensitive("INSERT INTO accounts_log VALUES (1)", ())


# ---------------------------------------------------------------------------- the catalog reader


def catalog_answer(rows: Sequence[Sequence[bytes | None]], *, deprecate_eof: bool = True, first_seq: int = 1) -> bytes:
    definition = computed(b"c").encode()
    payloads = [m.encode_column_count(4), definition, definition, definition, definition]
    if not deprecate_eof:
        payloads.append(m.EofPacket().encode())
    payloads += [m.encode_text_row(list(row)) for row in rows]
    payloads.append(OK_FE if deprecate_eof else m.EofPacket().encode())
    return b"".join(pkt(p, first_seq + i) for i, p in enumerate(payloads))


ROWS = [(b"app", b"customers", b"BASE TABLE", None), (b"app", b"v", b"VIEW", VIEW_V.encode())]


@pytest.mark.parametrize("deprecate_eof", [True, False])
def test_catalog_reader(deprecate_eof: bool) -> None:
    reader = CatalogReader(deprecate_eof=deprecate_eof)
    found = None
    reader_packets = PacketReader(expected_sequence=None)
    reader_packets.feed(catalog_answer(ROWS, deprecate_eof=deprecate_eof))
    for packet in reader_packets.packets():
        assert found is None
        found = reader.feed(packet.payload)
    assert found == [("app", "customers", None), ("app", "v", VIEW_V)]
    with pytest.raises(CatalogFailed, match="denied"):
        CatalogReader(deprecate_eof=True).feed(m.err(1142, "42000", "SELECT command denied").encode())


# ---------------------------------------------------------------------------- through a session


class AnalysedGate(BlockDrops):
    """BlockDrops, with the kinds of CREATE statements in the decision's analysis."""

    def decide(self, sql: bytes, source: StatementSource, name: str) -> Decision:
        decision = super().decide(sql, source, name)
        text = sql.decode()
        if text.upper().startswith("CREATE"):
            info = StatementInfo(text, "CREATE VIEW", frozenset({StatementKind.CREATE}))
            return Decision(Action.ALLOW, analysis=(info,))
        if text.upper().startswith("INSERT"):
            info = StatementInfo(text, "INSERT", frozenset({StatementKind.INSERT}), writes=frozenset({"app.customers"}))
            return Decision(Action.ALLOW, analysis=(info,))
        return decision


CATALOG_FRAME = pkt(CATALOG_QUERY, 0)


def masked_session(policy: Policy = POLICY, **kw: object) -> Driver:
    d = Driver(make_settings(AnalysedGate(), masks=MaskDirectory(policy, KEY), **kw))
    d.server_state = (b"STRICT_TRANS_TABLES", b"utf8mb4", b"app")
    client_login(d)
    actions = upstream_login(d)
    assert to_upstream(actions) == CATALOG_FRAME, "the catalog is read before the first command"
    assert not d.session.upstream_fast(catalog_answer(ROWS))
    assert d.upstream(catalog_answer(ROWS)) == []
    assert not d.session.busy
    return d


def journaled_session() -> Driver:
    """A masked session with a journal, its login events taken."""
    d = masked_session(journal=True)
    assert d.session.journal is not None
    d.session.journal.take()
    return d


def the_outcome(d: Driver) -> OutcomeEvent:
    """The one outcome the session journaled since the last look."""
    assert d.session.journal is not None
    events, _ = taken(d.session.journal)
    [outcome] = [e for e in events if isinstance(e, OutcomeEvent)]
    return outcome


def resultset(definitions: Sequence[m.ColumnDefinition41], rows: Sequence[Sequence[bytes | None]],
              first_seq: int = 1) -> list[bytes]:
    payloads = [m.encode_column_count(len(definitions))] + [d.encode() for d in definitions]
    payloads += [m.encode_text_row(list(row)) for row in rows]
    payloads.append(OK_FE)
    return [pkt(p, first_seq + i) for i, p in enumerate(payloads)]


def send(d: Driver, sql: bytes) -> None:
    q = pkt(b"\x03" + sql, 0)
    assert d.session.client_fast(q) or to_upstream(d.client(q)) == q


def drive(d: Driver, data: bytes) -> bytes:
    """As the asyncio driver does: the hot path first (it relays `data` itself)."""
    if d.session.upstream_fast(data):
        return data
    return to_client(d.upstream(data))


def client_packets(data: bytes) -> list[bytes]:
    reader = PacketReader(expected_sequence=1)  # sequence ids must follow on from the command's
    reader.feed(data)
    found = [packet.payload for packet in reader.packets()]
    assert reader.at_boundary
    return found


def test_a_masked_session_rewrites_rows_and_journals_counts() -> None:
    d = journaled_session()
    send(d, b"SELECT id, email FROM customers")
    response = resultset([ID, EMAIL], [(b"1", b"alice@example.com"), (b"2", b"bob@example.org")])
    assert not d.session.upstream_fast(b"".join(response)), "a masked result never takes the hot path"
    out = client_packets(to_client(d.upstream(b"".join(response))))
    assert out[3:5] == [b"\x011\x10****@example.com", b"\x012\x10****@example.org"]
    assert not d.session.busy
    outcome = the_outcome(d)
    assert (outcome.rows, outcome.masked) == (2, (("email", 2),))


def test_a_response_masking_leaves_alone_takes_the_hot_path_whole() -> None:
    d = journaled_session()
    send(d, b"SELECT id, total, name FROM customers")
    total = coldef(b"total", T.NEWDECIMAL, charset=63)  # not text: the content detectors do not apply
    # `name` is text: the card detector reads it, and finds nothing in these values.
    packets = resultset([ID, total, NAME], [(b"1", b"1.50", b"order 4111 of 2024"), (b"2", b"2.00", None),
                                            (b"3", b"3.25", b"9" * 16)])
    head, rows, end = b"".join(packets[:4]), b"".join(packets[4:7]), packets[7]
    assert d.session.upstream_fast(head), "the definitions: the plan is built on the hot path"
    assert d.session.upstream_fast(rows), "rows masking would not change go as they came"
    assert d.session.upstream_fast(end), "and so does the result's end"
    assert not d.session.busy
    outcome = the_outcome(d)
    assert (outcome.rows, outcome.masked) == (3, ())
    send(d, b"SELECT 1")  # the session goes on, in step with both sides


def test_a_value_to_mask_after_clean_reads_is_masked_and_counted() -> None:
    d = journaled_session()
    send(d, b"SELECT id, name FROM customers")
    packets = resultset([ID, NAME], [(b"1", b"plain"), (b"2", b"card 4111 1111 1111 1111 here"), (b"3", b"x")])
    head, clean, mixed, end = b"".join(packets[:3]), packets[3], b"".join(packets[4:6]), packets[6]
    assert d.session.upstream_fast(head)
    assert d.session.upstream_fast(clean)
    assert not d.session.upstream_fast(mixed), "a row masking changes: the general path"
    out = to_client(d.upstream(mixed))
    assert b"4111" not in out
    assert b"card ******************* here" in out
    assert not d.session.upstream_fast(end), "the result's counts go to the journal by the general path"
    assert to_client(d.upstream(end)) == end
    outcome = the_outcome(d)
    assert (outcome.rows, outcome.masked) == (3, (("name", 1),))


def test_a_clean_first_result_moves_the_hot_path_to_the_next_statement() -> None:
    # The second result's column is computed: only the second statement's lineage says it is
    # an e-mail. A hot path that did not count the first result would plan it as the first's.
    d = masked_session()
    send(d, b"SELECT id FROM customers; SELECT upper(email) AS e FROM customers")
    more = m.OkPacket(status_flags=m.ServerStatus.AUTOCOMMIT | m.ServerStatus.MORE_RESULTS_EXISTS,
                      header=0xFE).encode(m.Capability(0))
    first = [m.encode_column_count(1), ID.encode(), m.encode_text_row([b"1"]), more]
    second = [m.encode_column_count(1), computed(b"e").encode(), m.encode_text_row([b"ALICE@EXAMPLE.COM"]), OK_FE]
    framed = [pkt(payload, 1 + i) for i, payload in enumerate(first + second)]
    assert d.session.upstream_fast(b"".join(framed[:4])), "the first result goes as it came"
    out = drive(d, b"".join(framed[4:]))
    assert b"ALICE" not in out
    assert not d.session.busy


def test_an_exempt_identity_is_untouched() -> None:
    policy = Policy(masks=(Mask("all", columns=("*.*",), strategy=MaskStrategy.FULL,
                                unless=Condition(Mode.UNLESS, roles=("readers",))),))
    d = Driver(make_settings(masks=MaskDirectory(policy, KEY)))
    client_login(d)
    assert to_upstream(upstream_login(d)) == b"", "no catalog read when no mask applies"
    send(d, b"SELECT id, email FROM customers")
    response = b"".join(resultset([ID, EMAIL], [(b"1", b"alice@example.com")]))
    assert d.session.upstream_fast(response)


def test_a_row_reframed_in_fewer_packets_shifts_the_sequence_ids() -> None:
    d = masked_session()
    send(d, b"SELECT email, id FROM customers")
    big = b"x" * (MAX_PACKET_PAYLOAD + 10)
    payloads = [m.encode_column_count(2), EMAIL.encode(), ID.encode(), m.encode_text_row([big, b"1"]),
                m.encode_text_row([b"a@b.example", b"2"]), OK_FE]
    data = b""
    seq = 1
    for payload in payloads:
        framed, seq = encode_packets(payload, seq)
        data += framed
    out = client_packets(drive(d, data))
    assert out[3] == b"\x04****\x011"
    assert out[4] == b"\x0e****@b.example\x012"
    assert m.is_eof(out[5]) or out[5][:1] == b"\xfe"
    assert not d.session.busy
    send(d, b"SELECT 1")  # the session goes on, in step with both sides


def test_an_err_is_redacted_for_the_client_and_the_journal() -> None:
    d = journaled_session()
    send(d, b"INSERT INTO customers (id, email) VALUES (9, 'alice@example.com')")
    error = pkt(m.err(1062, "23000", "Duplicate entry 'alice@example.com' for key 'email'").encode(), 1)
    [payload] = client_packets(drive(d, error))
    assert m.ErrPacket.decode(payload).message == b"Duplicate entry '****' for key 'email'"
    outcome = the_outcome(d)
    assert "alice" not in outcome.error_message


def test_ddl_makes_the_session_read_the_catalog_again() -> None:
    d = masked_session()
    send(d, b"CREATE VIEW w2 AS SELECT email FROM customers")
    assert not d.session.upstream_fast(pkt(m.OkPacket().encode(m.Capability(0)), 1)), \
        "the catalog is read as the response ends: the general path's"
    actions = d.upstream(pkt(m.OkPacket().encode(m.Capability(0)), 1))
    assert to_client(actions) == pkt(m.OkPacket().encode(m.Capability(0)), 1)
    assert to_upstream(actions) == CATALOG_FRAME
    rows = [*ROWS, (b"app", b"w2", b"VIEW", b"select `app`.`customers`.`email` AS `email` from `app`.`customers`")]
    assert d.upstream(catalog_answer(rows)) == []
    send(d, b"SELECT email FROM w2")
    out = client_packets(drive(d, b"".join(resultset([coldef(b"email", table=b"w2")], [(b"c@d.example",)]))))
    assert out[2] == b"\x0e****@d.example"


def test_a_result_naming_an_unknown_table_makes_the_session_read_the_catalog() -> None:
    d = masked_session()
    send(d, b"SELECT email FROM fresh_table WHERE id = 0")
    response = b"".join(resultset([coldef(b"email", table=b"fresh_table")], []))  # no row to mask
    assert not d.session.upstream_fast(response), "a stale catalog: the general path reads it as the response ends"
    actions = d.upstream(response)
    assert to_client(actions) == response
    assert to_upstream(actions) == CATALOG_FRAME


def test_a_failed_catalog_read_is_retried_then_masks_strictly() -> None:
    d = Driver(make_settings(AnalysedGate(), masks=MaskDirectory(POLICY, KEY)))
    client_login(d)
    assert to_upstream(upstream_login(d)) == CATALOG_FRAME
    denied = pkt(m.err(1142, "42000", "SELECT command denied").encode(), 1)
    assert d.upstream(denied) == [SendUpstream(CATALOG_FRAME)]
    assert d.upstream(denied) == [SendUpstream(CATALOG_FRAME)]
    assert d.upstream(denied) == [], "three failures in a row: no more reads until DDL"
    send(d, b"SELECT id FROM customers")
    out = client_packets(drive(d, b"".join(resultset([ID], [(b"7",)]))))
    assert out[2] == b"\xfb", "every table is unknown: the strictest mask of the session (null)"


def test_prepared_statements_and_cursors_use_binary_rows() -> None:
    d = masked_session()
    prep = pkt(b"\x16SELECT id, email FROM customers", 0)
    assert to_upstream(d.client(prep)) == prep
    d.upstream(pkt(m.StmtPrepareOk(7, 2, 0).encode(), 1) + pkt(ID.encode(), 2) + pkt(EMAIL.encode(), 3))
    types = [T.LONG, T.VAR_STRING]
    row = m.encode_binary_row([(1).to_bytes(4, "little"), b"alice@example.com"], types)
    masked = m.encode_binary_row([(1).to_bytes(4, "little"), b"****@example.com"], types)
    execute = pkt(m.ComStmtExecute(7, 0, 1).encode(), 0)
    assert d.session.client_fast(execute)
    response = [m.encode_column_count(2), ID.encode(), EMAIL.encode(), row, OK_FE]
    out = client_packets(drive(d, b"".join(pkt(p, i + 1) for i, p in enumerate(response))))
    assert out[3] == masked
    # with a cursor: the definitions now, the rows by COM_STMT_FETCH
    execute = pkt(m.ComStmtExecute(7, 1, 1).encode(), 0)
    assert d.session.client_fast(execute)
    cursor_ok = m.OkPacket(status_flags=m.ServerStatus.AUTOCOMMIT | m.ServerStatus.CURSOR_EXISTS,
                           header=0xFE).encode(m.Capability(0))
    response = [m.encode_column_count(2), ID.encode(), EMAIL.encode(), cursor_ok]
    drive(d, b"".join(pkt(p, i + 1) for i, p in enumerate(response)))
    assert not d.session.busy
    assert to_upstream(d.client(pkt(m.ComStmtFetch(7, 10).encode(), 0)))
    last = m.OkPacket(status_flags=m.ServerStatus.AUTOCOMMIT | m.ServerStatus.LAST_ROW_SENT,
                      header=0xFE).encode(m.Capability(0))
    out = client_packets(drive(d, pkt(row, 1) + pkt(last, 2)))
    assert out == [masked, last]
    assert not d.session.busy
