# tests/unit/test_sql_postgres.py — targeted tests of the PostgreSQL analyser (dbguard.sql.postgres,
# pg_lexer, pg_functions): the contract (never raises, fail closed, one result per statement),
# offsets and texts, fingerprints, the standard_conforming_strings lexer, name resolution, the
# function catalogue, and that every statement node pglast can produce is handled on purpose.
# Behaviour per statement is in the case files (tests/cases/postgres/*.yaml, test_sql_cases.py).
from __future__ import annotations

import inspect

import pglast.ast
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dbguard.model import Feature, ParseSettings, StatementInfo, StatementKind
from dbguard.sql import MAX_ANALYSED_CHARS, analyse, pg_functions, pg_lexer
from dbguard.sql.postgres import _NODES, _STATEMENTS, analyse_postgres, postgres_fingerprint

ON = ParseSettings("postgres")
OFF = ParseSettings("postgres", standard_conforming_strings=False)


def one(sql: str, settings: ParseSettings = ON) -> StatementInfo:
    infos = analyse_postgres(sql, settings)
    assert len(infos) == 1, infos
    return infos[0]


# ---------------------------------------------------------------- contract


def test_empty_and_comment_only_messages_have_no_statement() -> None:
    for sql in ("", "   ", ";", ";;\n;", "-- nothing", "/* nothing */", "/* a /* b */ c */ ;"):
        assert analyse_postgres(sql, ON) == ()


def test_one_result_per_statement_in_order_with_multi_statement() -> None:
    infos = analyse_postgres("SELECT 1; DELETE FROM t; COMMIT", ON)
    assert [info.command for info in infos] == ["SELECT", "DELETE", "COMMIT"]
    assert all(Feature.MULTI_STATEMENT in info.features for info in infos)
    assert Feature.MULTI_STATEMENT not in one("SELECT 1;").features


def test_unparseable_is_other_with_detail_and_no_fingerprint() -> None:
    info = one("SELEC 1")
    assert info.unparseable
    assert info.kinds == frozenset({StatementKind.OTHER})
    assert info.fingerprint == ""
    assert "syntax error" in info.detail
    assert info.text == "SELEC 1"


def test_unknown_statement_node_fails_closed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delitem(_STATEMENTS, "SelectStmt")
    info = one("SELECT 1")
    assert info.unparseable
    assert info.detail == "unknown statement SelectStmt"


def test_unknown_nested_statement_node_fails_closed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delitem(_NODES, "DeleteStmt")
    info = one("WITH d AS (DELETE FROM t RETURNING 1) SELECT * FROM d")
    assert info.unparseable
    assert "DeleteStmt" in info.detail


def test_an_internal_error_fails_closed(monkeypatch: pytest.MonkeyPatch) -> None:
    def explode(*_: object) -> None:
        raise KeyError("surprise")

    monkeypatch.setitem(_STATEMENTS, "SelectStmt", explode)
    infos = analyse_postgres("SELECT 1", ON)
    assert len(infos) == 1
    assert infos[0].unparseable
    assert infos[0].detail == "analyser error: KeyError"


def test_nul_character_is_unparseable() -> None:
    info = one("SELECT 1\x00; DROP TABLE users")
    assert info.unparseable
    assert "NUL" in info.detail


@pytest.mark.parametrize("depth", [10_000, 100_000])
def test_deep_parentheses_are_unparseable_without_crashing(depth: int) -> None:
    info = one("SELECT " + "(" * depth + "1" + ")" * depth)
    assert info.unparseable


@pytest.mark.parametrize("depth", [1_000, 5_000])
def test_deep_subqueries_are_unparseable_without_crashing(depth: int) -> None:
    sql = "SELECT * FROM " + "(SELECT * FROM " * depth + "t" + ") s" * depth
    info = one(sql)
    assert info.unparseable


def test_moderately_deep_subqueries_are_analysed() -> None:
    sql = "SELECT * FROM " + "(SELECT * FROM " * 50 + "secret" + ") s" * 50
    info = one(sql)
    assert not info.unparseable
    assert info.reads == {"public.secret"}


def test_deep_in_the_where_clause_is_unparseable_or_right() -> None:
    sql = "DELETE FROM t WHERE " + " OR ".join(f"id = {n}" for n in range(5_000)) + " OR 1 = 1"
    info = one(sql)
    assert info.unfiltered == {StatementKind.DELETE}


def test_over_long_text_is_unparseable_through_analyse() -> None:
    sql = "SELECT '" + "x" * (2 * 1024 * 1024) + "'"
    assert len(sql) > MAX_ANALYSED_CHARS
    infos = analyse(sql, ON)
    assert len(infos) == 1
    assert infos[0].unparseable
    assert len(infos[0].text) <= 200


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=st.sampled_from(list("SELECT DROP;'\"$\\/*-()eEuU&xb\n 1a")), max_size=60))
def test_never_raises_on_sql_like_noise(sql: str) -> None:
    for parse_settings in (ON, OFF):
        for info in analyse_postgres(sql, parse_settings):
            assert isinstance(info, StatementInfo)
            assert info.kinds


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=80))
def test_never_raises_on_any_text(sql: str) -> None:
    for parse_settings in (ON, OFF):
        assert isinstance(analyse_postgres(sql, parse_settings), tuple)


# ---------------------------------------------------------------- texts, offsets, fingerprints


def test_statement_texts_are_slices_without_separators() -> None:
    infos = analyse_postgres("  SELECT 1 ;\n\tDELETE FROM t WHERE id = 2;  ", ON)
    assert [info.text for info in infos] == ["SELECT 1", "DELETE FROM t WHERE id = 2"]


def test_statement_texts_use_character_offsets_for_non_ascii_text() -> None:
    infos = analyse_postgres("SELECT 'ä€😀' AS \"çà\"; UPDATE t SET a = 'ß' WHERE id = 1", ON)
    assert [info.text for info in infos] == ["SELECT 'ä€😀' AS \"çà\"", "UPDATE t SET a = 'ß' WHERE id = 1"]


def test_fingerprint_ignores_literals_but_not_shape() -> None:
    first = one("SELECT abalance FROM pgbench_accounts WHERE aid = 1")
    second = one("select abalance from pgbench_accounts where aid = 9999")
    other = one("SELECT abalance FROM pgbench_accounts WHERE bid = 1")
    assert first.fingerprint
    assert first.fingerprint == second.fingerprint
    assert other.fingerprint != first.fingerprint
    assert not first.literal_sensitive


def test_literal_sensitive_when_the_verdict_depends_on_literals() -> None:
    always, never = one("DELETE FROM t WHERE 1 = 1"), one("DELETE FROM t WHERE 1 = 2")
    assert always.fingerprint == never.fingerprint
    assert always.unfiltered != never.unfiltered
    assert always.literal_sensitive
    assert never.literal_sensitive
    assert one("SELECT set_config('a.b', 'x', false)").literal_sensitive
    assert one("SET work_mem = '1MB'").literal_sensitive
    assert not one("UPDATE t SET a = 1 WHERE id = 1").literal_sensitive
    assert not one("BEGIN").literal_sensitive


def test_scs_off_fingerprint_is_taken_from_what_the_server_reads() -> None:
    sql = "SELECT 'x\\'' , pg_terminate_backend(1) --'"
    harmless = "SELECT 'abc'"
    assert one(sql, ON).fingerprint == one(harmless, ON).fingerprint
    assert one(sql, OFF).fingerprint != one(harmless, OFF).fingerprint
    assert postgres_fingerprint(sql, OFF) == one(sql, OFF).fingerprint
    assert postgres_fingerprint(sql, ON) == one(sql, ON).fingerprint
    assert postgres_fingerprint("SELEC 1", ON) == ""
    assert postgres_fingerprint("SELECT 1\x00", ON) == ""


def test_scs_off_texts_are_the_original_slices() -> None:
    sql = "SELECT 'a\\'b', 'c\\\\'; SELECT 'd\\'' ; DELETE FROM t WHERE x = 'e\\''"
    infos = analyse_postgres(sql, OFF)
    assert [info.text for info in infos] == [
        "SELECT 'a\\'b', 'c\\\\'",
        "SELECT 'd\\''",
        "DELETE FROM t WHERE x = 'e\\''",
    ]


# ---------------------------------------------------------------- the scs=off lexer


@pytest.mark.parametrize(
    ("sql", "expected"),
    [
        ("SELECT 'plain'", "SELECT 'plain'"),
        ("SELECT 'a\\'b'", "SELECT  E'a\\'b'"),
        ("SELECT E'a\\'b'", "SELECT E'a\\'b'"),
        ("SELECT e'a\\'b', 'c\\\\'", "SELECT e'a\\'b',  E'c\\\\'"),
        ("SELECT x'1F', b'01', '\\\\'", "SELECT x'1F', b'01',  E'\\\\'"),
        ("SELECT interval'1\\''", "SELECT interval E'1\\''"),
        ("SELECT 'a'\n'\\''", "SELECT  E'a'\n'\\''"),
        ("SELECT 'a' 'b\\\\'", "SELECT 'a'  E'b\\\\'"),
        ("SELECT $$'\\'$$, '\\\\'", "SELECT $$'\\'$$,  E'\\\\'"),
        ("SELECT $t$ $$ '\\' $$ $t$", "SELECT $t$ $$ '\\' $$ $t$"),
        ("SELECT a$b$c, '\\\\' FROM t", "SELECT a$b$c,  E'\\\\' FROM t"),
        ("SELECT $1, '\\\\'", "SELECT $1,  E'\\\\'"),
        ("SELECT \"it's\\\", '\\\\'", "SELECT \"it's\\\",  E'\\\\'"),
        ('SELECT U&"a""b", \'\\\\\'', 'SELECT U&"a""b",  E\'\\\\\''),
        ("SELECT 1 -- it's \\\n, '\\\\'", "SELECT 1 -- it's \\\n,  E'\\\\'"),
        ("SELECT 1 /* it's /* nested's */ \\ */, '\\\\'", "SELECT 1 /* it's /* nested's */ \\ */,  E'\\\\'"),
        ("SELECT 'x''\\''", "SELECT  E'x''\\''"),
        ("SELECT 1.5e3, '\\\\'", "SELECT 1.5e3,  E'\\\\'"),
    ],
)
def test_rewrite_for_scs_off(sql: str, expected: str) -> None:
    rewrite = pg_lexer.rewrite_for_scs_off(sql)
    assert rewrite.text == expected
    # every rewritten offset maps back onto the same character of the original
    for offset, char in enumerate(rewrite.text):
        if any(start <= offset < start + len(pg_lexer.PREFIX) for start in rewrite.inserted_at):
            continue
        assert sql[rewrite.original_offset(offset)] == char


def test_rewrite_maps_the_start_of_an_insertion_to_its_quote() -> None:
    rewrite = pg_lexer.rewrite_for_scs_off("SELECT '\\\\'")
    assert rewrite.inserted_at == (7,)
    assert rewrite.original_offset(7) == 7
    assert rewrite.original_offset(len(rewrite.text)) == len("SELECT '\\\\'")


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT 'open",
        "SELECT 'open\\'",
        "SELECT E'open\\'",
        'SELECT "open',
        "SELECT 1 /* open",
        "SELECT 1 /* a /* b */",
        "SELECT $x$ open",
        "SELECT b'open",
        "SELECT N'\\''",
        "SELECT U&'x'",
        "SELECT 1e'x'",
        "SELECT 'x\\",
    ],
)
def test_lexer_refuses_what_it_cannot_be_sure_of(sql: str) -> None:
    sql += " -- \\"  # a backslash somewhere: without one the text is not lexed at all
    with pytest.raises(pg_lexer.LexError):
        pg_lexer.rewrite_for_scs_off(sql)
    assert one(sql, OFF).unparseable


def test_text_without_backslash_is_not_rewritten() -> None:
    sql = "SELECT 'a', $$b$$, E'c' /* ' */"
    assert pg_lexer.rewrite_for_scs_off(sql) == pg_lexer.Rewrite(sql, ())


def test_lexer_is_linear_on_many_backslashes() -> None:
    sql = "SELECT '" + "\\'" * 200_000 + "'"
    rewrite = pg_lexer.rewrite_for_scs_off(sql)
    assert rewrite.inserted_at == (7,)


def test_the_classic_backslash_evasion() -> None:
    sql = "SELECT 'x\\'' , pg_terminate_backend(1) --'"
    assert one(sql, ON).features == frozenset()
    off = one(sql, OFF)
    assert off.functions == {"pg_terminate_backend"}
    assert Feature.SYSTEM_ADMIN in off.features
    assert off.text == sql


# ---------------------------------------------------------------- names


def test_unqualified_names_resolve_against_every_search_path_schema() -> None:
    settings_ = ParseSettings("postgres", search_path=("scratch", "public"))
    info = one("DELETE FROM users WHERE id = 1", settings_)
    assert info.writes == {"scratch.users", "public.users"}
    info = one("SELECT * FROM scratch.users JOIN users ON true WHERE users.id = 1", settings_)
    assert info.reads == {"scratch.users", "public.users"}


def test_quoted_names_keep_case_and_unquoted_fold() -> None:
    assert one('SELECT * FROM "Sales"."Q1" WHERE a = 1').reads == {"Sales.Q1"}
    assert one("SELECT * FROM Sales.Q1 WHERE a = 1").reads == {"sales.q1"}


def test_cte_names_are_not_tables_but_shadowed_names_outside_are() -> None:
    info = one("WITH t AS (SELECT 1) SELECT * FROM t, (SELECT * FROM u) x")
    assert info.reads == {"public.u"}


# ---------------------------------------------------------------- functions catalogue


COMMON_FUNCTIONS = """now count sum lower upper date_trunc to_char json_build_object jsonb_agg array_agg
    string_agg pg_backend_pid current_setting version generate_series unnest random length substring
    replace concat abs round date_part age pg_typeof pg_get_viewdef pg_table_size format_type pg_get_expr
    has_table_privilege has_schema_privilege obj_description col_description pg_get_constraintdef
    pg_get_indexdef array_to_string regexp_replace split_part btrim left right lpad rpad to_timestamp
    pg_table_is_visible pg_get_userbyid pg_encoding_to_char current_schemas array_position
    pg_get_function_result pg_get_function_arguments pg_size_pretty pg_relation_size nextval
    pg_advisory_lock"""


@pytest.mark.parametrize("name", COMMON_FUNCTIONS.split())
def test_common_functions_are_builtin(name: str) -> None:
    assert name in pg_functions.BUILTIN_FUNCTIONS
    info = one(f"SELECT {name}(x) FROM t WHERE id = 1")
    assert Feature.USER_CODE_CALL not in info.features
    assert not info.changes_parsing


def test_side_effect_catalogue_is_consistent() -> None:
    risky = {Feature.FILE_ACCESS, Feature.SYSTEM_ADMIN, Feature.DYNAMIC_SQL, Feature.SESSION_CHANGE}
    for name, effect in pg_functions.SIDE_EFFECTS.items():
        assert name == name.lower()
        assert effect.features, name
        assert effect.features <= risky, name
    assert pg_functions.SIDE_EFFECTS["pg_read_file"].features == {Feature.FILE_ACCESS}
    assert pg_functions.SIDE_EFFECTS["pg_terminate_backend"].features == {Feature.SYSTEM_ADMIN}
    assert pg_functions.SIDE_EFFECTS["dblink"].features == {Feature.DYNAMIC_SQL}
    assert not pg_functions.SIDE_EFFECTS["dblink"].builtin
    assert "pg_advisory_lock" not in pg_functions.SIDE_EFFECTS


def test_functions_are_lower_case_and_qualified_as_written() -> None:
    info = one('SELECT PG_CATALOG.NOW(), "pg_catalog"."lower"(\'A\'), Public.F(1), EXTRACT(year FROM now())')
    assert info.functions == {"pg_catalog.now", "pg_catalog.lower", "public.f", "extract", "now"}
    assert info.features == {Feature.USER_CODE_CALL}


# ---------------------------------------------------------------- every statement node is handled


def test_every_pglast_statement_node_is_handled_or_refused_on_purpose() -> None:
    statement_nodes = {
        name
        for name, cls in vars(pglast.ast).items()
        if inspect.isclass(cls) and issubclass(cls, pglast.ast.Node) and name.endswith("Stmt")
    }
    # Never produced at top level by the raw parser (planner nodes, PL/pgSQL, nested-only).
    refused = {"RawStmt", "SetOperationStmt", "PLAssignStmt", "ReturnStmt", "ReplicaIdentityStmt"}
    assert set(_STATEMENTS) <= statement_nodes
    assert statement_nodes - set(_STATEMENTS) == refused


def test_nested_only_statements_are_unparseable_at_top_level() -> None:
    # RETURN is only valid inside a function body: its node exists but is never a statement.
    assert one("CREATE FUNCTION f() RETURNS int RETURN 1").kinds == {StatementKind.CREATE}
