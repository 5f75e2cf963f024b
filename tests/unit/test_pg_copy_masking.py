"""COPY TO STDOUT rows rewritten: the options read from the statement, text and CSV fields split,
de-escaped and re-escaped exactly (property tests), NULLs, headers, malformed rows failing
closed; and PgResultMasking driving it: the catalog asked for the copied table by name, rows
rewritten, counts journaled, binary refused, the session going on."""

from __future__ import annotations

import struct
from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dbguard.masking.detectors import compile_detectors
from dbguard.masking.session_masks import SessionMasks
from dbguard.masking.strategies import Masker
from dbguard.model import Identity, IdentityKind, SessionInfo
from dbguard.policy.rules import MaskStrategy, parse_policy_text
from dbguard.session.pg_copy_masking import (
    CopyColumn,
    CopyOptions,
    CopyRowRewriter,
    copy_codec,
    copy_statement,
    unescape_text,
)
from dbguard.session.pg_masking import CatalogCache, PgResultMasking, Relation, View
from dbguard.sql.pg_lineage import result_lineage
from dbguard.wire.pg import messages as m
from dbguard.wire.pg.framing import frame

# ---------------------------------------------------------------------------- options


def test_defaults_of_each_format() -> None:
    text = copy_statement("COPY users TO STDOUT")
    assert text is not None
    assert text.options == CopyOptions("text", "\t", "\\N", '"', '"', False, None, frozenset())
    assert text.relation == (None, "users")
    assert text.columns == ()
    csv = copy_statement("COPY public.users (id, email) TO STDOUT WITH (FORMAT csv)")
    assert csv is not None
    assert (csv.options.delimiter, csv.options.null, csv.options.quote, csv.options.escape) == (",", "", '"', '"')
    assert csv.relation == ("public", "users")
    assert csv.columns == ("id", "email")


def test_every_option_is_read() -> None:
    found = copy_statement("COPY (SELECT email AS mail, upper(ssn), id::text FROM users) TO STDOUT WITH "
                           "(FORMAT csv, HEADER, DELIMITER ';', NULL 'NIL', QUOTE '''', ESCAPE E'\\\\', "
                           "FORCE_QUOTE (mail), ENCODING 'latin1')")
    assert found is not None
    assert found.options == CopyOptions("csv", ";", "NIL", "'", "\\", True, "latin1", frozenset({"mail"}))
    assert found.relation is None
    assert found.names == ("mail", "upper", "id")


@pytest.mark.parametrize(("sql", "expected"), [
    ("COPY t TO STDOUT CSV HEADER", ("csv", True)),
    ("COPY t TO STDOUT WITH CSV DELIMITER AS '|' NULL AS 'x' FORCE QUOTE *", ("csv", False)),
    ("COPY BINARY t TO STDOUT", ("binary", False)),
    ("COPY t TO STDOUT (FORMAT text, HEADER true)", ("text", True)),
    ("COPY t TO STDOUT (FORMAT csv, HEADER off)", ("csv", False)),
    ("COPY t TO STDOUT (FORMAT csv, HEADER 0)", ("csv", False)),
    ("COPY t TO STDOUT (FORMAT csv, HEADER 1)", ("csv", True)),
])
def test_old_syntax_and_header_values(sql: str, expected: tuple[str, bool]) -> None:
    found = copy_statement(sql)
    assert found is not None
    assert (found.options.format, found.options.header) == expected


def test_force_quote_star_and_old_syntax_options() -> None:
    found = copy_statement("COPY t TO STDOUT WITH CSV DELIMITER AS '|' NULL AS 'x' FORCE QUOTE *")
    assert found is not None
    assert found.options.force_quote is None
    assert (found.options.delimiter, found.options.null) == ("|", "x")


@pytest.mark.parametrize("sql", [
    "COPY t FROM STDIN",
    "COPY t TO '/tmp/x'",
    "COPY t TO PROGRAM 'cat'",
    "SELECT 1",
    "COPY t TO STDOUT (FORMAT xml)",
    "COPY t TO STDOUT (DELIMITER 'ab')",
    "COPY t TO STDOUT (FORMAT csv, HEADER match)",
    "COPY t TO STDOUT garbage (",
])
def test_what_is_not_a_readable_copy_to_stdout(sql: str) -> None:
    assert copy_statement(sql) is None


def test_the_statement_is_picked_by_index() -> None:
    sql = "SELECT 1; COPY a TO STDOUT; COPY b TO STDOUT (FORMAT csv)"
    assert copy_statement(sql, 0) is None
    second, last = copy_statement(sql, 1), copy_statement(sql)
    assert second is not None
    assert last is not None
    assert (second.relation, last.relation) == ((None, "a"), (None, "b"))
    assert copy_statement(sql, 7) is None


def test_output_names_are_unknown_behind_a_star() -> None:
    found = copy_statement("COPY (SELECT *, 1 FROM t) TO STDOUT")
    assert found is not None
    assert found.names is None


@pytest.mark.parametrize(("encoding", "codec"), [
    (None, "utf-8"), ("latin1", "iso8859-1"), ("LATIN1", "iso8859-1"), ("utf-8", "utf-8"),
    ("UTF8", "utf-8"), ("win1252", "cp1252"), ("ISO-8859-5", "iso8859-5"), ("euc_jp", "euc-jp"),
])
def test_copy_codec_follows_the_encoding_option(encoding: str | None, codec: str) -> None:
    assert copy_codec(CopyOptions(encoding=encoding), "utf-8") == codec


# ---------------------------------------------------------------------------- rows

TEXT = CopyOptions()
CSV = CopyOptions("csv", ",", "", '"', '"')


def identity(value: bytes) -> bytes:
    return value


def rewriter(options: CopyOptions, width: int, *maskers: tuple[int, Masker], codec: str = "utf-8"
             ) -> CopyRowRewriter:
    columns = [CopyColumn(index, f"c{index}", masker) for index, masker in maskers]
    return CopyRowRewriter(options, width, columns, codec, b"k" * 32)


def test_text_row_masks_only_its_column_and_keeps_nulls() -> None:
    rows = rewriter(TEXT, 3, (1, lambda v: b"****"))
    assert rows.rewrite(b"1\tann@example.com\tx\\ty\n") == b"1\t****\tx\\ty\n"
    assert rows.rewrite(b"2\t\\N\tz\n") is None  # NULL stays NULL: the original bytes go out
    assert rows.counts() == {"c1": 1}


def test_text_values_are_de_escaped_for_the_masker_and_re_escaped() -> None:
    seen: list[bytes] = []

    def masker(value: bytes) -> bytes:
        seen.append(value)
        return value + b"\t\\\n"

    rows = rewriter(TEXT, 2, (0, masker))
    assert rows.rewrite(b"a\\tb\\\\c\\nd\\re\\bf\\fg\\vh\t1\n") == (
        b"a\\tb\\\\c\\nd\\re\\bf\\fg\\vh\\t\\\\\\n\t1\n")
    assert seen == [b"a\tb\\c\nd\re\bf\fg\vh"]


def test_text_escapes_octal_hex_and_others_are_read_as_copy_from_does() -> None:
    assert unescape_text("\\101\\x42\\7\\x9\\q\\.") == "AB\x07\x09q."
    assert unescape_text("\\303\\251").encode("utf-8", "surrogateescape") == "é".encode()


def test_a_masker_giving_null_writes_the_null_string() -> None:
    assert rewriter(TEXT, 2, (1, lambda v: None)).rewrite(b"1\tx\n") == b"1\t\\N\n"
    assert rewriter(CSV, 2, (1, lambda v: None)).rewrite(b"1,x\n") == b"1,\n"
    custom = CopyOptions("csv", "|", "NIL", "'", "'")
    assert rewriter(custom, 2, (1, lambda v: None)).rewrite(b"1|x\n") == b"1|NIL\n"


def test_custom_delimiter_and_null_in_text() -> None:
    options = CopyOptions("text", "|", "NIL")
    rows = rewriter(options, 3, (1, lambda v: v + b"|x"))
    assert rows.rewrite(b"a\\|b|c|NIL\n") == b"a\\|b|c\\|x|NIL\n"
    assert rows.rewrite(b"a|NIL|NIL\n") is None


def test_csv_quotes_what_needs_quoting() -> None:
    rows = rewriter(CSV, 2, (1, lambda v: v))
    for value in (b'"a,b"', b'"say ""hi"""', b'"two\nlines"', b'"cr\rhere"', b'""', b"plain"):
        assert rows.rewrite(b"1," + value + b"\n") == b"1," + value + b"\n"
    quoting = rewriter(CSV, 2, (1, lambda v: b""))  # the empty string is the NULL string: quoted
    assert quoting.rewrite(b"1,x\n") == b'1,""\n'


def test_csv_value_equal_to_a_custom_null_is_quoted() -> None:
    options = CopyOptions("csv", ",", "NIL", '"', '"')
    rows = rewriter(options, 2, (1, lambda v: b"NIL"))
    assert rows.rewrite(b"1,x\n") == b'1,"NIL"\n'
    assert rows.rewrite(b"1,NIL\n") is None  # unquoted NIL is NULL: kept
    assert rows.rewrite(b'1,"NIL"\n') == b'1,"NIL"\n'  # quoted NIL is a value


def test_csv_with_an_escape_unlike_the_quote() -> None:
    options = CopyOptions("csv", ",", "", '"', "\\")
    seen: list[bytes] = []

    def masker(value: bytes) -> bytes:
        seen.append(value)
        return b'x"y\\z'

    rows = rewriter(options, 2, (0, masker))
    assert rows.rewrite(b'"a\\"b\\\\c\\d",2\n') == b'"x\\"y\\\\z",2\n'
    assert seen == [b'a"b\\c\\d']


def test_csv_force_quote_and_lone_end_marker() -> None:
    forced = CopyRowRewriter(replace(CSV, force_quote=frozenset({"c1"})), 2,
                             [CopyColumn(1, "c1", identity)], "utf-8", b"")
    assert forced.rewrite(b"1,abc\n") == b'1,"abc"\n'
    every = CopyRowRewriter(replace(CSV, force_quote=None), 1, [CopyColumn(0, "c0", identity)], "utf-8", b"")
    assert every.rewrite(b"abc\n") == b'"abc"\n'
    single = rewriter(CSV, 1, (0, lambda v: b"\\."))
    assert single.rewrite(b"x\n") == b'"\\."\n'


def test_header_line_goes_out_unchanged() -> None:
    rows = rewriter(replace(CSV, header=True), 2, (1, lambda v: b"****"))
    assert rows.rewrite(b"id,ann@example.com\n") is None
    assert rows.rewrite(b"1,ann@example.com\n") == b"1,****\n"
    text = rewriter(CopyOptions(header=True), 2, (1, lambda v: b"****"))
    assert text.rewrite(b"id\temail\n") is None
    assert text.rewrite(b"1\tann@example.com\n") == b"1\t****\n"


@pytest.mark.parametrize(("options", "line", "nulls"), [
    (TEXT, b"1\tann@example.com\textra\n", b"\\N\t\\N\n"),  # too many fields
    (TEXT, b"ann@example.com\n", b"\\N\t\\N\n"),  # too few
    (TEXT, b"1\tann@example.com", b"\\N\t\\N\n"),  # no newline
    (TEXT, b"1\tann@example.com\\\n", b"\\N\t\\N\n"),  # a backslash at the end
    (TEXT, b"1\tann@exa\nmple.com\n", b"\\N\t\\N\n"),  # a raw newline
    (CSV, b'1,"ann@example.com\n', b",\n"),  # an unterminated quote
    (CSV, b'1,"ann"x"\n', b",\n"),
    (CSV, b"1,ann\r@example.com\n", b",\n"),  # a bare carriage return
])
def test_a_row_that_cannot_be_read_becomes_all_nulls(options: CopyOptions, line: bytes, nulls: bytes) -> None:
    rows = rewriter(options, 2, (1, lambda v: b"****"))
    assert rows.rewrite(line) == nulls
    assert rows.counts() == {"c1": 1}


def test_content_detectors_only_change_what_they_find() -> None:
    cards = compile_detectors(["credit_card"])
    rows = CopyRowRewriter(TEXT, 2, [CopyColumn(1, "note", None, ((cards, MaskStrategy.FULL),))], "utf-8", b"k" * 32)
    assert rows.rewrite(b"1\torder 12345\n") is None
    assert rows.rewrite(b"2\tcard 4111 1111 1111 1111\\tok\n") == b"2\tcard *******************\\tok\n"
    assert rows.counts() == {"note": 1}
    nulling = CopyRowRewriter(CSV, 2, [CopyColumn(1, "note", None, ((cards, MaskStrategy.NULL),))], "utf-8", b"")
    assert nulling.rewrite(b'1,"card 4111 1111 1111 1111, ok"\n') == b"1,\n"


def test_rows_in_another_encoding() -> None:
    rows = rewriter(TEXT, 2, (1, lambda v: v.decode("latin-1").upper().encode("latin-1")), codec="iso8859-1")
    assert rows.rewrite("1\tjosé\n".encode("latin-1")) == "1\tJOSÉ\n".encode("latin-1")


def test_binary_rows_are_not_rewritten() -> None:
    with pytest.raises(ValueError, match="binary"):
        CopyRowRewriter(CopyOptions("binary"), 1, [], "utf-8", b"")


# ---------------------------------------------------------------------------- properties

# Values COPY can carry: any text without NUL, rich in the characters the formats treat apart.
VALUES = st.text(alphabet=st.one_of(st.sampled_from('\t\n\r\b\f\v\\,;|"\'.N \x01x'),
                                    st.characters(codec="utf-8", exclude_characters="\x00")),
                 max_size=12)
ROWS = st.lists(st.one_of(st.none(), VALUES), min_size=1, max_size=5)
TEXT_OPTIONS = st.builds(lambda d, n: CopyOptions("text", d, n), st.sampled_from(["\t", ",", "|", ";", "\x01"]),
                         st.sampled_from(["\\N", "NULL", ""]))
CSV_OPTIONS = st.builds(lambda d, n, q, e: CopyOptions("csv", d, n, q, q if e is None else e),
                        st.sampled_from([",", "\t", "|", ";"]), st.sampled_from(["", "NULL", "\\N"]),
                        st.sampled_from(['"', "'"]), st.sampled_from([None, "\\", "!"]))


def line_of(rows: CopyRowRewriter, values: list[str | None]) -> bytes:
    """A row as PostgreSQL's COPY TO writes it (the rewriter's escaping is checked against a
    real server's output in tests/integration/test_masking_pg_copy.py)."""
    options = rows.options
    fields = [options.null if v is None else rows.quote_csv(v) if options.format == "csv" else rows.escape_text(v)
              for v in values]
    return (options.delimiter.join(fields) + "\n").encode("utf-8", "surrogateescape")


def fields_of(rows: CopyRowRewriter, line: bytes) -> list[str | None]:
    """What a COPY FROM reads back from a line."""
    text = line.decode("utf-8", "surrogateescape")[:-1]
    null = rows.options.null
    if rows.options.format == "csv":
        return [None if raw == null else rows.unquote_csv(raw) for raw in rows.split_csv(text)]
    return [None if raw == null else unescape_text(raw) for raw in rows.split_text(text)]


def reads_as_null(rows: CopyRowRewriter, value: str | None) -> bool:
    """NULL, or a text-format value written like a custom NULL string (PostgreSQL's own
    ambiguity: COPY TO does not escape it; CSV quotes such a value)."""
    return value is None or (rows.options.format == "text" and rows.escape_text(value) == rows.options.null)


def all_columns(options: CopyOptions, width: int, masker: Masker) -> CopyRowRewriter:
    return rewriter(options, width, *[(i, masker) for i in range(width)])


@settings(max_examples=300)
@given(st.one_of(TEXT_OPTIONS, CSV_OPTIONS), ROWS)
def test_identity_masker_gives_back_the_same_line(options: CopyOptions, values: list[str | None]) -> None:
    rows = all_columns(options, len(values), identity)
    line = line_of(rows, values)
    out = rows.rewrite(line)
    if all(reads_as_null(rows, v) for v in values):
        assert out is None  # nothing to mask: relayed as the original bytes
    else:
        assert out == line
    assert fields_of(rows, line) == [None if reads_as_null(rows, v) else v for v in values]


@settings(max_examples=300)
@given(st.one_of(TEXT_OPTIONS, CSV_OPTIONS), ROWS, VALUES)
def test_de_escaping_a_rewritten_field_gives_the_maskers_output(options: CopyOptions, values: list[str | None],
                                                                 replacement: str) -> None:
    rows = all_columns(options, len(values), lambda _v: replacement.encode("utf-8"))
    line = line_of(rows, values)
    out = rows.rewrite(line)
    masked = None if reads_as_null(rows, replacement) else replacement
    assert fields_of(rows, out if out is not None else line) == [
        None if reads_as_null(rows, v) else masked for v in values]


@settings(max_examples=200)
@given(st.one_of(TEXT_OPTIONS, CSV_OPTIONS), ROWS)
def test_a_masker_giving_null_gives_null_fields(options: CopyOptions, values: list[str | None]) -> None:
    rows = all_columns(options, len(values), lambda _v: None)
    line = line_of(rows, values)
    out = rows.rewrite(line)
    assert fields_of(rows, out if out is not None else line) == [None] * len(values)


# ---------------------------------------------------------------------------- the filter

USERS_OID = 16400
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
USERS = Relation("public", "users", "r", {1: "id", 2: "email", 3: "ssn", 4: "note", 5: "born"},
                 {1: (23, -1), 2: (25, -1), 3: (1043, 15), 4: (25, -1), 5: (1082, -1)})
READY = m.ready_for_query(b"I")


def masks() -> SessionMasks:
    found = SessionMasks.for_session(parse_policy_text(RULES), SESSION, b"k" * 32)
    assert found is not None
    return found


def catalog() -> CatalogCache:
    cache = CatalogCache()
    cache.views = {("public", "contacts"): View("public", "contacts", ("id", "mail"),
                                                result_lineage("SELECT id, email AS mail FROM users"))}
    return cache


def filt(cache: CatalogCache) -> PgResultMasking:
    return PgResultMasking(masks, cache, lambda: "UTF8", journaled=True)


def copy_response(width: int, *rows: bytes, binary: bool = False, tag: str = "COPY 1") -> bytes:
    head = frame(b"H", struct.pack("!bh", 1 if binary else 0, width) + struct.pack("!h", 1 if binary else 0) * width)
    return (head + b"".join(frame(b"d", row) for row in rows) + frame(b"c", b"")
            + m.CommandComplete(tag).encode())


def copied_rows(data: bytes) -> list[bytes]:
    found, pos = [], 0
    while pos < len(data):
        kind, length = struct.unpack_from("!cI", data, pos)
        if kind == b"d":
            found.append(data[pos + 5 : pos + 1 + length])
        pos += 1 + length
    return found


def test_copy_table_waits_for_the_catalog_by_name_then_masks_by_type() -> None:
    cache = catalog()
    masking = filt(cache)
    masking.to_upstream(m.Query(b"COPY users TO STDOUT").encode())
    response = copy_response(5, b"1\tann@example.com\t123-45-6789\tcard 4111 1111 1111 1111\t1990-01-02\n",
                             b"2\t\\N\t\\N\thello\t\\N\n") + READY
    assert masking.from_upstream(response) == b""
    assert masking.waiting is not None
    assert masking.waiting.names == frozenset({(None, "users")})
    cache.named[(None, "users")] = (USERS,)
    out = masking.resume()
    assert copied_rows(out) == [b"1\t****@example.com\t****\tcard *******************\t1990-01-02\n",
                                b"2\t\\N\t\\N\thello\t\\N\n"]
    assert out.endswith(m.CommandComplete("COPY 1").encode() + READY)
    assert masking.masked_counts() == (("email", 1), ("note", 1), ("ssn", 1))


def test_copy_of_a_column_list_and_of_unmasked_columns() -> None:
    cache = catalog()
    cache.named[("public", "users")] = (USERS,)
    masking = filt(cache)
    masking.to_upstream(m.Query(b"COPY public.users (born, email) TO STDOUT (FORMAT csv)").encode())
    out = masking.from_upstream(copy_response(2, b"1990-01-02,ann@example.com\n") + READY)
    assert copied_rows(out) == [b"1990-01-02,****@example.com\n"]
    masking.to_upstream(m.Query(b"COPY public.users (id, born) TO STDOUT").encode())
    plain = copy_response(2, b"1\t1990-01-02\n") + READY
    assert masking.from_upstream(plain) == plain  # nothing to mask: the same bytes


def test_copy_query_is_masked_by_lineage_as_text_with_its_header() -> None:
    masking = filt(catalog())
    masking.to_upstream(m.Query(b"SELECT 1; COPY (SELECT upper(mail), id FROM contacts) TO STDOUT CSV HEADER").encode())
    select = (m.RowDescription((m.FieldDescription("?column?", 0, 0, 23, 4, -1, 0),)).encode()
              + m.DataRow((b"1",)).encode() + m.CommandComplete("SELECT 1").encode())
    out = masking.from_upstream(select + copy_response(2, b"upper,id\n", b"ANN@EXAMPLE.COM,1\n") + READY)
    assert copied_rows(out) == [b"upper,id\n", b"****@EXAMPLE.COM,1\n"]
    assert masking.masked_counts() == ()
    assert masking.masked_counts() == (("upper", 1),)


def test_a_table_the_catalog_does_not_know_is_masked_by_name_as_text() -> None:
    cache = catalog()
    cache.named[(None, "users")] = ()
    masking = filt(cache)
    masking.to_upstream(m.Query(b"COPY users TO STDOUT").encode())
    out = masking.from_upstream(copy_response(2, b"1\tann@example.com\n") + READY)
    assert copied_rows(out) == [b"****\t****\n"]  # the whole row: the strictest mask of users.*


def test_binary_copy_of_masked_columns_is_refused_and_the_session_goes_on() -> None:
    cache = catalog()
    masking = filt(cache)
    masking.to_upstream(m.Query(b"COPY (SELECT email FROM users) TO STDOUT (FORMAT binary)").encode())
    out = masking.from_upstream(copy_response(1, b"PGCOPY\nann@example.com", binary=True) + READY)
    assert b"ann@example.com" not in out
    assert b"binary COPY TO STDOUT of masked columns is refused" in out
    assert b"42501" in out
    assert out.endswith(READY)
    masking.to_upstream(m.Query(b"COPY (SELECT id FROM users) TO STDOUT (FORMAT binary)").encode())
    plain = copy_response(1, b"PGCOPY\n1", binary=True) + READY
    assert masking.from_upstream(plain) == plain


def test_extended_protocol_copy_and_an_error_mid_copy() -> None:
    cache = catalog()
    cache.named[(None, "users")] = (USERS,)
    masking = filt(cache)
    masking.to_upstream(m.Parse("", b"COPY users (email) TO STDOUT").encode() + m.Bind("", "").encode()
                        + m.Execute("").encode() + frame(b"S", b""))
    head = m.CopyResponse(b"H", 0, (0,)).encode()
    error = m.error("57014", "canceling statement due to user request")
    out = masking.from_upstream(frame(b"1", b"") + frame(b"2", b"") + head
                                + frame(b"d", b"ann@example.com\n") + error + READY)
    assert copied_rows(out) == [b"****@example.com\n"]
    assert out.endswith(error + READY)
    # the error ended that copy's rewriting: the next copy, of an unmasked column, is relayed
    masking.to_upstream(m.Query(b"COPY users (id) TO STDOUT").encode())
    plain = copy_response(1, b"ann@example.com\n") + READY
    assert masking.from_upstream(plain) == plain


def test_a_table_no_mask_can_cover_needs_no_lookup() -> None:
    policy = parse_policy_text("masks:\n  - id: email\n    columns: [users.email]\n    strategy: email\n")
    only_columns = SessionMasks.for_session(policy, SESSION, b"k" * 32)
    masking = PgResultMasking(lambda: only_columns, catalog(), lambda: "UTF8", journaled=True)
    masking.to_upstream(m.Query(b"COPY products TO STDOUT").encode())
    plain = copy_response(2, b"1\tann@example.com\n") + READY
    assert masking.from_upstream(plain) == plain
    assert masking.waiting is None
    masking = PgResultMasking(lambda: only_columns, catalog(), lambda: "UTF8", journaled=True)
    masking.to_upstream(m.Query(b"COPY users TO STDOUT").encode())
    assert masking.from_upstream(copy_response(2, b"1\tann@example.com\n") + READY) == b""
    assert masking.waiting is not None
    assert masking.waiting.names == frozenset({(None, "users")})


def test_a_name_in_several_schemas_gets_every_mask_and_a_type_only_when_they_agree() -> None:
    cache = catalog()
    audit = Relation("audit", "users", "r", {1: "id", 2: "ssn", 3: "born"}, {1: (23, -1), 2: (20, -1), 3: (1082, -1)},
                     frozenset({3}))  # `born` is generated there: a plain COPY leaves it out
    cache.named[(None, "users")] = (USERS, audit)
    cache.named[(None, "accounts")] = tuple(Relation(schema, "accounts", "r", {1: "ssn"}, {1: (20, -1)})
                                            for schema in ("public", "audit"))
    masking = filt(cache)
    masking.to_upstream(m.Query(b"COPY users (id, email) TO STDOUT").encode())
    out = masking.from_upstream(copy_response(2, b"1\tann@example.com\n") + READY)
    assert copied_rows(out) == [b"1\t****@example.com\n"]  # only public.users has both columns
    masking.to_upstream(m.Query(b"COPY users (ssn) TO STDOUT").encode())
    out = masking.from_upstream(copy_response(1, b"123456789\n") + READY)
    assert copied_rows(out) == [b"****\n"]  # varchar here, int8 there: masked as text
    masking.to_upstream(m.Query(b"COPY accounts TO STDOUT").encode())
    out = masking.from_upstream(copy_response(1, b"123456789\n") + READY)
    assert copied_rows(out) == [b"0\n"]  # int8 in both: the int8 mask
    masking.to_upstream(m.Query(b"COPY users TO STDOUT").encode())
    out = masking.from_upstream(copy_response(3, b"1\t123456789\t1990-01-02\n") + READY)
    # three columns: only audit.users, with its generated column (a server that copies it)
    assert copied_rows(out) == [b"1\t0\t1990-01-02\n"]


def test_copy_messages_cut_anywhere_come_out_the_same() -> None:
    cache = catalog()
    cache.named[(None, "users")] = (USERS,)
    sql = m.Query(b"COPY users (id, email, note) TO STDOUT (FORMAT csv)").encode()
    response = copy_response(3, *(f'{i},u{i}@example.com,"a,\nb"\n'.encode() for i in range(40))) + READY
    whole = filt(cache)
    whole.to_upstream(sql)
    expected = whole.from_upstream(response)
    assert copied_rows(expected)[0] == b'0,****@example.com,"a,\nb"\n'
    for step in (1, 5, 64):
        masking = filt(cache)
        masking.to_upstream(sql)
        pieces = [masking.from_upstream(response[i : i + step]) for i in range(0, len(response), step)]
        assert b"".join(pieces) == expected
