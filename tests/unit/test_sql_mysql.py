# tests/unit/test_sql_mysql.py — the MySQL/MariaDB analyser and its lexer.
# Owns: targeted tests of dbguard.sql.mysql_lexer (splitting, comments, versioned comments,
# strings under each sql_mode, stored-program bodies, rendering for sqlglot) and of
# dbguard.sql.mysql (never raising, fail-closed corners, fingerprints, settings carried through a
# message). Statement-by-statement expectations live in tests/cases/mysql/*.yaml, run by
# tests/unit/test_sql_cases.py.
from __future__ import annotations

import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dbguard.model import Feature, ParseSettings, StatementInfo, StatementKind
from dbguard.sql import analyse
from dbguard.sql.mysql import analyse_mysql, sql_mode_flags
from dbguard.sql.mysql_lexer import TokenKind, lex, render, render_shape

APP = ParseSettings("mysql", search_path=("app",))
ANSI = ParseSettings("mysql", search_path=("app",), ansi_quotes=True)
NO_BACKSLASH = ParseSettings("mysql", search_path=("app",), no_backslash_escapes=True)


def _texts(sql: str, **modes: bool) -> list[str]:
    lexed = lex(sql, **modes)
    assert not lexed.error, lexed.error
    return [sql[statement.start : statement.end] for statement in lexed.statements]


def _one(sql: str, settings: ParseSettings = APP) -> StatementInfo:
    infos = analyse_mysql(sql, settings)
    assert len(infos) == 1, infos
    return infos[0]


# ----------------------------------------------------------------------------------- lexer


@pytest.mark.parametrize(
    ("sql", "texts"),
    [
        ("SELECT 1; SELECT 2", ["SELECT 1", "SELECT 2"]),
        ("SELECT 1;", ["SELECT 1"]),
        ("SELECT 1;;  ;SELECT 2;", ["SELECT 1", "SELECT 2"]),
        ("SELECT 'a;b'; SELECT 2", ["SELECT 'a;b'", "SELECT 2"]),
        ('SELECT "a;b"', ['SELECT "a;b"']),
        ("SELECT `a;b` FROM t", ["SELECT `a;b` FROM t"]),
        ("SELECT 1 /* ; */; SELECT 2", ["SELECT 1 /* ; */", "SELECT 2"]),
        ("SELECT 1 # ; DROP TABLE t", ["SELECT 1 # ; DROP TABLE t"]),
        ("SELECT 1 -- ; DROP TABLE t", ["SELECT 1 -- ; DROP TABLE t"]),
        ("SELECT 1 --; DROP TABLE t", ["SELECT 1 --", "DROP TABLE t"]),
        ("SELECT 'it\\'s; x'", ["SELECT 'it\\'s; x'"]),
        ("SELECT 'it''s; x'", ["SELECT 'it''s; x'"]),
        ("SELECT 1 /*!50000 ; DROP TABLE t */", ["SELECT 1 /*!50000", "DROP TABLE t */"]),
        ("SELECT 1; -- trailing comment", ["SELECT 1"]),
        ("  /* only */ -- comments\n# here\n", []),
    ],
)
def test_split(sql: str, texts: list[str]) -> None:
    assert _texts(sql) == texts


def test_split_follows_no_backslash_escapes() -> None:
    sql = "SELECT 'it\\'; DROP TABLE t; -- '"
    assert _texts(sql) == [sql]
    assert _texts(sql, no_backslash_escapes=True) == ["SELECT 'it\\'", "DROP TABLE t"]


def test_split_follows_ansi_quotes() -> None:
    sql = 'SELECT "a\\"; DROP TABLE t; -- "'
    assert _texts(sql) == [sql]
    assert _texts(sql, ansi_quotes=True) == ['SELECT "a\\"', "DROP TABLE t"]


@pytest.mark.parametrize(
    ("sql", "kind", "value"),
    [
        ("'a\\nb'", TokenKind.STRING, "a\nb"),
        ("'a\\tb\\0\\Z'", TokenKind.STRING, "a\tb\x00\x1a"),
        ("'100\\%'", TokenKind.STRING, "100\\%"),
        ("'a\\_b'", TokenKind.STRING, "a\\_b"),
        ("'\\q'", TokenKind.STRING, "q"),
        ("'it''s'", TokenKind.STRING, "it's"),
        ('"say ""hi"""', TokenKind.STRING, 'say "hi"'),
        ("`a``b`", TokenKind.IDENT, "a`b"),
        ("`a\\`", TokenKind.IDENT, "a\\"),
        ("0x1F", TokenKind.NUMBER, "0x1F"),
        ("1e5", TokenKind.NUMBER, "1e5"),
        (".5", TokenKind.NUMBER, ".5"),
        ("1abc", TokenKind.WORD, "1abc"),
        ("0xZZ", TokenKind.WORD, "0xZZ"),
    ],
)
def test_token_values(sql: str, kind: TokenKind, value: str) -> None:
    (statement,) = lex(sql).statements
    (token,) = statement.tokens
    assert (token.kind, token.value) == (kind, value)


def test_no_backslash_escapes_keeps_backslashes() -> None:
    (statement,) = lex("'a\\nb'", no_backslash_escapes=True).statements
    assert statement.tokens[0].value == "a\\nb"


def test_ansi_quotes_makes_double_quotes_identifiers() -> None:
    (statement,) = lex('"my""table"', ansi_quotes=True).statements
    assert (statement.tokens[0].kind, statement.tokens[0].value) == (TokenKind.IDENT, 'my"table')


@pytest.mark.parametrize(
    ("sql", "words"),
    [
        ("/*!DROP TABLE t*/", ["DROP", "TABLE", "T"]),
        ("/*!50001 DROP TABLE t*/", ["DROP", "TABLE", "T"]),
        ("/*M!DROP TABLE t*/", ["DROP", "TABLE", "T"]),
        ("/*M!100100 DROP TABLE t*/", ["DROP", "TABLE", "T"]),
        ("/*M!1001001 DROP TABLE t*/", ["1", "DROP", "TABLE", "T"]),  # MariaDB reads 6 digits at most
        ("/*!100100 DROP TABLE t*/", ["DROP", "TABLE", "T"]),  # 6 digits then a space: MariaDB's
        ("/*!123 x */", ["123", "X"]),  # fewer than 5 digits: no version, content
        ("/*!50000 SELECT /* inner */ 1 */", ["SELECT", "1"]),
        ("/*+ SET_VAR(x=1) */ SELECT 1", ["SELECT", "1"]),
    ],
)
def test_versioned_comments_are_executed(sql: str, words: list[str]) -> None:
    (statement,) = lex(sql).statements
    assert [token.keyword or token.text for token in statement.tokens] == words


def test_sandbox_marker_of_mariadb_dump_is_a_comment() -> None:
    assert lex("/*M!999999\\- enable the sandbox mode */").statements == ()


@pytest.mark.parametrize(
    ("sql", "error"),
    [
        ("SELECT 'abc", "unterminated '"),
        ("SELECT 'abc\\'", "unterminated '"),
        ('SELECT "abc', 'unterminated "'),
        ("SELECT `abc", "unterminated `"),
        ("SELECT 1 /* never closed", "unterminated /* comment"),
        ("SELECT 1 /*! never closed", "unterminated versioned comment"),
        ("/*!50000 /*!50000 DROP TABLE t */ */", "versioned comment inside a versioned comment"),
        ("/*!1001001 DROP TABLE t*/", "ambiguous version number"),
        ("SELECT 1\x00", "NUL character"),
        ("SELECT \x01 1", "unexpected character U+0001"),
    ],
)
def test_lex_errors(sql: str, error: str) -> None:
    lexed = lex(sql)
    assert error in lexed.error
    assert lexed.statements == ()


def test_statements_before_a_lex_error_are_kept() -> None:
    lexed = lex("DELETE FROM t; SELECT 'unterminated")
    assert [statement.tokens[0].keyword for statement in lexed.statements] == ["DELETE"]
    assert lexed.error
    assert lexed.error_start == len("DELETE FROM t;")


@pytest.mark.parametrize(
    ("sql", "count"),
    [
        ("CREATE PROCEDURE p() BEGIN SELECT 1; DELETE FROM t; END", 1),
        ("CREATE PROCEDURE p() BEGIN SELECT 1; END; DROP TABLE t", 2),
        ("CREATE DEFINER=`root`@`%` PROCEDURE p(IN a INT) COMMENT 'x' READS SQL DATA BEGIN SELECT a; END", 1),
        ("CREATE PROCEDURE p() lbl: BEGIN LEAVE lbl; END lbl; SELECT 1", 2),
        (
            "CREATE PROCEDURE p() BEGIN DECLARE EXIT HANDLER FOR SQLEXCEPTION BEGIN ROLLBACK; RESIGNAL; END; "
            "START TRANSACTION; UPDATE t SET a = 1; COMMIT; END; SELECT 2",
            2,
        ),
        ("CREATE PROCEDURE p() BEGIN IF a THEN BEGIN SELECT 1; END; ELSE SELECT 2; END IF; END; SELECT 3", 2),
        ("CREATE PROCEDURE p() BEGIN CASE a WHEN 1 THEN SELECT 1; ELSE SELECT 2; END CASE; END; SELECT 3", 2),
        ("CREATE PROCEDURE p() BEGIN SELECT CASE WHEN 1 THEN begin ELSE 0 END; END; DROP TABLE t", 2),
        ("CREATE PROCEDURE p() BEGIN WHILE x DO SET x = x - 1; END WHILE; END; SELECT 1", 2),
        ("CREATE PROCEDURE p() BEGIN REPEAT SET x = 1; UNTIL x END REPEAT; END; SELECT 1", 2),
        ("CREATE FUNCTION f(a INT) RETURNS VARCHAR(10) CHARSET utf8mb4 DETERMINISTIC BEGIN RETURN 'x'; END", 1),
        ("CREATE FUNCTION f(a INT) RETURNS INT RETURN a + 1; SELECT f(1)", 2),
        ("CREATE TRIGGER tr BEFORE INSERT ON t FOR EACH ROW BEGIN SET NEW.a = 1; SET NEW.b = 2; END", 1),
        ("CREATE EVENT e ON SCHEDULE EVERY 1 DAY DO BEGIN DELETE FROM t; DELETE FROM u; END", 1),
        ("BEGIN NOT ATOMIC SELECT 1; SELECT 2; END; SELECT 3", 2),
        # A `begin` the server reads as an identifier opens no block: the DROP is its own statement.
        ("CREATE PROCEDURE p() SELECT 1 AS begin; DROP TABLE t", 2),
        ("CREATE PROCEDURE p() BEGIN SELECT 1 AS begin; END; DROP TABLE t", 2),
        ("CREATE PROCEDURE p() BEGIN DO begin; END; DROP TABLE t", 2),
        ("BEGIN; SELECT 1; COMMIT", 3),
    ],
)
def test_stored_program_bodies_are_one_statement(sql: str, count: int) -> None:
    lexed = lex(sql)
    assert not lexed.error
    assert len(lexed.statements) == count, [sql[s.start : s.end] for s in lexed.statements]


@pytest.mark.parametrize(
    ("sql", "rendered"),
    [
        ("SELECT 1--1", "SELECT 1- -1"),
        ("SELECT 'it\\'s', \"x\"", "SELECT 'it''s', 'x'"),
        ("SELECT 'a\\\\b'", "SELECT 'a\\\\b'"),
        ("SELECT /* c */ a # d\nFROM t", "SELECT a FROM t"),
        ("SELECT t.select, db.t.c FROM t", "SELECT `t`.`select`, `db`.`t`.`c` FROM t"),
        ("SELECT @@session.sql_mode, @a", "SELECT @@session.sql_mode, @a"),
        ("SELECT X'0A', N'x', _utf8mb4'y'", "SELECT X'0A', N'x', _utf8mb4'y'"),
        ("SELECT 1abc, a$b, é", "SELECT `1abc`, `a$b`, `é`"),
        ("SELECT 1/*!*/+1", "SELECT 1 +1"),
    ],
)
def test_render_for_sqlglot(sql: str, rendered: str) -> None:
    (statement,) = lex(sql).statements
    assert render(statement.tokens) == rendered


def test_render_for_sqlglot_with_ansi_quotes() -> None:
    (statement,) = lex('SELECT "a" FROM "t"', ansi_quotes=True).statements
    assert render(statement.tokens) == "SELECT `a` FROM `t`"


def test_shape_hides_literals() -> None:
    (statement,) = lex("SELECT a FROM t WHERE b = 'x' AND c > 10").statements
    assert render_shape(statement.tokens) == "SELECT a FROM t WHERE b = ? AND c > ?"


# -------------------------------------------------------------------------------- analyser


def test_dispatch_through_dbguard_sql() -> None:
    (info,) = analyse("DELETE FROM t WHERE id = 1", APP)
    assert info.kinds == {StatementKind.DELETE}
    assert info.writes == {"app.t"}


def test_empty_messages() -> None:
    assert analyse_mysql("", APP) == ()
    assert analyse_mysql(" ;; -- nothing\n/* at all */", APP) == ()


def test_deep_nesting_is_unparseable_quickly() -> None:
    sql = "SELECT " + "(" * 10_000 + "1" + ")" * 10_000
    started = time.monotonic()
    (info,) = analyse_mysql(sql, APP)
    assert info.unparseable
    assert time.monotonic() - started < 10


def test_long_condition_chains_do_not_recurse() -> None:
    sql = "DELETE FROM t WHERE " + " AND ".join(f"c{index} = {index}" for index in range(3000))
    info = _one(sql)
    assert not info.unparseable or "nested too deeply" in info.detail


def test_nul_is_unparseable() -> None:
    infos = analyse_mysql("SELECT 1; DROP TABLE t\x00", APP)
    assert [info.unparseable for info in infos] == [False, True]
    assert _one("SELECT '\x00'").unparseable


def test_multi_statement_marks_every_statement() -> None:
    infos = analyse_mysql("SELECT 1; DROP TABLE users", APP)
    assert all(Feature.MULTI_STATEMENT in info.features for info in infos)
    assert infos[1].kinds == {StatementKind.DROP}


def test_fingerprint_ignores_literals_and_comments() -> None:
    first = _one("SELECT * FROM t WHERE id = 1 AND name = 'a'")
    second = _one("SELECT * /* x */ FROM t WHERE id = 42 AND name = 'bob' -- y")
    other = _one("SELECT * FROM u WHERE id = 1 AND name = 'a'")
    assert first.fingerprint == second.fingerprint != other.fingerprint
    assert len(first.fingerprint) == 16


def test_fingerprint_sees_through_versioned_comments() -> None:
    assert _one("/*!50000 DROP TABLE t */").fingerprint == _one("DROP TABLE t").fingerprint


def test_literal_sensitivity() -> None:
    assert not _one("SELECT * FROM t WHERE id = 1").literal_sensitive
    assert not _one("UPDATE t SET a = 'x' WHERE id = 2").literal_sensitive
    assert _one("DELETE FROM t WHERE 1 = 1").literal_sensitive
    assert _one("DELETE FROM t WHERE 1 = 0").literal_sensitive
    assert _one("SELECT * FROM t WHERE id = 1 OR 'a' = 'b'").literal_sensitive
    assert _one("PREPARE s FROM 'DELETE FROM t'").literal_sensitive
    assert _one("SELECT * FROM t INTO OUTFILE '/tmp/x'").literal_sensitive
    assert _one("SET sql_mode = ''").literal_sensitive


def test_statement_texts_are_slices_of_the_message() -> None:
    sql = "  SELECT 1 ;\n/* c */ DELETE FROM t WHERE id = 2 -- end\n"
    assert [info.text for info in analyse_mysql(sql, APP)] == ["SELECT 1", "/* c */ DELETE FROM t WHERE id = 2 -- end"]


def test_unqualified_names_without_a_database() -> None:
    info = _one("DELETE FROM t WHERE id = 1", ParseSettings("mysql", search_path=()))
    assert info.writes == {"?.t"}


def test_use_changes_resolution_for_the_rest_of_the_message() -> None:
    use, delete = analyse_mysql("USE other; DELETE FROM t WHERE id = 1", APP)
    assert use.changes_parsing
    assert use.kinds == {StatementKind.USE}
    assert delete.writes == {"other.t"}


def test_sql_mode_change_applies_to_the_rest_of_the_message() -> None:
    sql = "SET sql_mode = 'NO_BACKSLASH_ESCAPES'; SELECT 'a\\'; DROP TABLE t; -- '"
    infos = analyse_mysql(sql, APP)
    assert [sorted(info.kinds) for info in infos] == [["set"], ["select"], ["drop"]]
    sql = "SET SESSION sql_mode = 'ANSI_QUOTES'; SELECT \"a\" FROM t"
    assert analyse_mysql(sql, APP)[1].kinds == {StatementKind.SELECT}


def test_unknown_sql_mode_makes_the_rest_unparseable() -> None:
    infos = analyse_mysql("SET sql_mode = @saved; SELECT 'a\\'; DROP TABLE t; -- '", APP)
    assert len(infos) == 2
    assert not infos[0].unparseable
    assert infos[0].changes_parsing
    assert infos[1].unparseable


def test_global_sql_mode_does_not_change_this_session() -> None:
    infos = analyse_mysql("SET GLOBAL sql_mode = 'ANSI_QUOTES'; SELECT \"a\" FROM t", APP)
    assert Feature.SYSTEM_ADMIN in infos[0].features
    assert not infos[1].unparseable


def test_charset_change_needs_an_ascii_rest() -> None:
    assert not analyse_mysql("SET NAMES utf8mb4; SELECT 1", APP)[1].unparseable
    assert analyse_mysql("SET NAMES gbk; SELECT 'é'", APP)[1].unparseable


def test_user_code_makes_a_mode_dependent_rest_unparseable() -> None:
    infos = analyse_mysql('CALL p(); SELECT "a\\"; DROP TABLE t; -- "', APP)
    assert infos[0].changes_parsing
    assert Feature.USER_CODE_CALL in infos[0].features
    assert len(infos) == 2
    assert infos[1].unparseable
    assert not analyse_mysql("CALL p(); SELECT 'a' FROM t", APP)[1].unparseable


@pytest.mark.parametrize(
    ("value", "flags"),
    [
        ("", (False, False)),
        ("STRICT_TRANS_TABLES,NO_ENGINE_SUBSTITUTION", (False, False)),
        ("ANSI_QUOTES", (True, False)),
        ("ansi", (True, False)),
        ("NO_BACKSLASH_ESCAPES,ANSI_QUOTES", (True, True)),
        ("ORACLE", None),
        ("NOT_A_MODE", None),
    ],
)
def test_sql_mode_flags(value: str, flags: tuple[bool, bool] | None) -> None:
    assert sql_mode_flags(value) == flags


def test_prepare_names_are_case_insensitive() -> None:
    assert _one("PREPARE MyStmt FROM 'SELECT 1'").prepares == "mystmt"
    assert _one("EXECUTE MYSTMT").executes == "mystmt"
    assert _one("DEALLOCATE PREPARE MyStmt").deallocates == "mystmt"


def test_prepare_from_text_with_several_statements_is_unparseable() -> None:
    assert _one("PREPARE s FROM 'SELECT 1; DROP TABLE t'").unparseable


def test_unparseable_inner_text_fails_the_prepare_closed() -> None:
    info = _one("PREPARE s FROM 'FROB t'")
    assert Feature.UNPARSEABLE in info.features


ALPHABET = "abdeistT ;'\"`\\#-*/!(),.=@\n0159M+_\x00é"


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=ALPHABET, max_size=60), st.booleans(), st.booleans())
def test_never_raises(sql: str, ansi_quotes: bool, no_backslash_escapes: bool) -> None:
    mode = ParseSettings("mysql", ansi_quotes=ansi_quotes, no_backslash_escapes=no_backslash_escapes)
    infos = analyse_mysql(sql, mode)
    assert isinstance(infos, tuple)
    for info in infos:
        assert isinstance(info, StatementInfo)
        assert info.kinds


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.sampled_from(
            [
                "SELECT",
                "DELETE",
                "FROM",
                "t",
                "WHERE",
                "1",
                "=",
                "'x'",
                ";",
                "/*!",
                "*/",
                "--",
                "#",
                "\n",
                "(",
                ")",
                "DROP",
                "TABLE",
                "CREATE",
                "PROCEDURE",
                "p()",
                "BEGIN",
                "END",
                "CASE",
                "begin",
                "SET",
                "@a",
                "sql_mode",
                "'ANSI_QUOTES'",
                '"',
                "\\",
                "`",
                "PREPARE",
                "s",
                "'DELETE FROM t'",
            ]
        ),
        max_size=25,
    )
)
def test_never_raises_on_sql_shaped_text(words: list[str]) -> None:
    for info in analyse_mysql(" ".join(words), APP):
        assert info.kinds


def test_lexer_does_not_import_sqlglot() -> None:
    from pathlib import Path

    import dbguard.sql.mysql_lexer as lexer_module

    source = Path(lexer_module.__file__).read_text(encoding="utf-8")
    assert "import sqlglot" not in source
    assert "from sqlglot" not in source


def test_fingerprint_does_not_depend_on_what_precedes_the_statement() -> None:
    glued = analyse_mysql("SELECT 1;SELECT a FROM t", APP)[1]
    spaced = analyse_mysql("SELECT 1;\n  SELECT a FROM t", APP)[1]
    assert glued.fingerprint == spaced.fingerprint == _one("SELECT a FROM t").fingerprint


def test_shape_of_a_message() -> None:
    from dbguard.sql.mysql import mysql_shape

    assert mysql_shape("SELECT * FROM t WHERE id = 1; /* c */ DELETE FROM u WHERE a = 'x'", APP) == (
        "SELECT * FROM t WHERE id = ?;DELETE FROM u WHERE a = ?"
    )
    assert mysql_shape("SELECT * FROM t WHERE id = 2", APP) == mysql_shape("SELECT * FROM t  WHERE id = 7 -- x", APP)
    assert mysql_shape("SELECT 'unterminated", APP) is None


# ----------------------------------------------------------------------------- long literals

LONG = 70_000  # over mysql_lexer.LONG_LITERAL_CHARS


def _kinds(sql: str, *, no_backslash_escapes: bool = False) -> list[set[str]]:
    settings = ParseSettings("mysql", no_backslash_escapes=no_backslash_escapes)
    return [{k.value for k in info.kinds} for info in analyse(sql, settings)]


def test_a_long_literal_is_lexed_exactly_but_not_parsed() -> None:
    from dbguard.sql.mysql_lexer import ELIDED_VALUE
    body = "a\\'; DROP TABLE t; -- " * (LONG // 20)  # escaped quotes all along
    sql = f"INSERT INTO app.t VALUES ('{body}')"
    lexed = lex(sql)
    [statement] = lexed.statements
    [string] = [token for token in statement.tokens if token.kind is TokenKind.STRING]
    assert string.text == f"'{body}'"
    assert string.value == ELIDED_VALUE
    assert lexed.elided_chars == len(body) + 2
    [info] = analyse(sql, ParseSettings("mysql"))
    assert info.kinds == {StatementKind.INSERT}
    assert info.writes == frozenset({"app.t"})
    # The same body read without backslash escapes ends at the first \': the DROP is real.
    assert {"drop"} in _kinds(sql, no_backslash_escapes=True)


def test_a_long_literal_ends_where_the_server_says_and_what_follows_is_analysed() -> None:
    assert _kinds(f"SELECT '{'x' * LONG}'; DROP TABLE t") == [{"select"}, {"drop"}]
    assert _kinds(f"SELECT X'{'ab' * LONG}', 0x{'cd' * LONG}, _binary'{'y' * LONG}'") == [{"select"}]


@pytest.mark.parametrize("sql", [
    f"PREPARE p FROM 'DROP TABLE t; {'x' * LONG}'",
    f"EXECUTE IMMEDIATE 'DROP TABLE t /* {'x' * LONG} */'",
    f"SET sql_mode = '{'ANSI_QUOTES,' * (LONG // 10)}'; SELECT \"a\\\"; DROP TABLE t; -- \"",
])
def test_a_long_literal_whose_value_matters_fails_closed(sql: str) -> None:
    infos = analyse(sql, ParseSettings("mysql"))
    assert any(Feature.UNPARSEABLE in info.features for info in infos)


def test_more_than_1_mi_characters_outside_literals_is_unparseable() -> None:
    ids = ", ".join(str(i) for i in range(200_000))
    [info] = analyse(f"SELECT 1 FROM t WHERE id IN ({ids})", ParseSettings("mysql"))
    assert Feature.UNPARSEABLE in info.features
    assert "outside its long literals" in info.detail
    # 20 MB of literal and a short statement around it: analysed.
    [info] = analyse(f"INSERT INTO t VALUES ('{'z' * (20 << 20)}')", ParseSettings("mysql"))
    assert info.kinds == {StatementKind.INSERT}
