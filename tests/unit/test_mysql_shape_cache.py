"""The MySQL gate's shape cache (`policy.gate.mysql_shape_key`, `MysqlSessionGate`): a cached
allowed shape can never pass a statement the policy refuses.

Covers: which texts get a shape (only where every literal's extent is certain: no comments of any
kind, no backslash while escapes are on, no double quotes in either sql_mode, no backticks, no
prefixed strings); that texts with one shape are lexed alike by the analyser's lexer (which mirrors
the server's), over thousands of generated texts in every sql_mode; adversarial texts against a
warmed cache decided exactly as by a cold gate (stacked statements, escaped quotes, comments,
`--1` against `-- 1`, floats, hex and bit literals, names that look like numbers, sql_mode
toggles); the digit key never merging names that differ by a digit; the context (database,
sql_mode, charset) in the key.
"""

from __future__ import annotations

import itertools
import random

import pytest

from dbguard.model import (
    Action,
    Decision,
    Identity,
    IdentityKind,
    ParseSettings,
    SessionInfo,
    StatementInfo,
    StatementSource,
)
from dbguard.policy.gate import MysqlPolicyGate, MysqlSessionGate, PolicyGate, mysql_shape_key
from dbguard.policy.rules import Policy, parse_policy_text
from dbguard.sql.mysql_lexer import TokenKind, lex

Q = StatementSource.SIMPLE_QUERY
P = StatementSource.PARSE

RULES = """
rules:
  - id: no-drop
    description: nobody drops or truncates
    when: {statement: [drop, truncate]}
    action: block
  - id: no-unbounded-writes
    description: writes need a WHERE
    when: {statement: [delete, update], where: missing}
    action: block
  - id: no-secret
    description: the secret tables are off limits
    when: {tables: ["app.secret", "app.t2", "app.2t", "app.sbtest2"]}
    action: block
  - id: no-other-db
    description: only the app database
    when: {tables: ["other.*"]}
    action: block
  - id: no-files
    description: no server files
    when: {features: [file_access]}
    action: block
"""


def mysql_session(name: str = "app") -> SessionInfo:
    return SessionInfo("s1", "app-my", "mysql", Identity(name, IdentityKind.SERVICE, ("app",)), "h:1", "app")


def policy() -> Policy:
    return parse_policy_text(RULES)


def open_gate(shared: PolicyGate | None = None) -> MysqlSessionGate:
    gate = MysqlPolicyGate(shared or PolicyGate(policy(), "mysql"))
    session_gate = gate.open(mysql_session(), {"database": "app"})
    session_gate.server_parameter("database", "app")
    return session_gate


def fresh(sql: bytes, **modes: bool) -> Decision:
    """The decision of a gate that has cached nothing."""
    session_gate = open_gate()
    apply_modes(session_gate, **modes)
    return session_gate.decide(sql, Q, "")


def apply_modes(session_gate: MysqlSessionGate, ansi_quotes: bool = False, no_backslash_escapes: bool = False) -> None:
    modes = [name for name, on in (("ANSI_QUOTES", ansi_quotes), ("NO_BACKSLASH_ESCAPES", no_backslash_escapes)) if on]
    if modes:
        session_gate.server_parameter("sql_mode", ",".join(modes))


# ----------------------------------------------------------------------------- the key itself


@pytest.mark.parametrize(("sql", "shape"), [
    (b"SELECT c FROM sbtest1 WHERE id=5043", b"SELECT c FROM sbtest1 WHERE id=0"),
    (b"SELECT c FROM t WHERE id BETWEEN 10 AND 109", b"SELECT c FROM t WHERE id BETWEEN 0 AND 0"),
    (b"UPDATE t SET c='a-b;DROP' WHERE id=-7", b"UPDATE t SET c='' WHERE id=-0"),
    (b"SELECT 'it''s' FROM t", b"SELECT '''' FROM t"),
    # Decimals, floats, hex and bit numbers and names with digits stay as written.
    (b"SELECT 1.5, .5, 1e5, 1e+5, 0x1F, 0b01, 1e, 1t FROM t1",
     b"SELECT 1.5, .5, 1e5, 1e+5, 0x1F, 0b01, 1e, 1t FROM t1"),
    (b"SELECT - -1 FROM t", b"SELECT - -0 FROM t"),
    (b"SELECT 1;DROP TABLE t", b"SELECT 0;DROP TABLE t"),
])
def test_shape_of_eligible_texts(sql: bytes, shape: bytes) -> None:
    assert mysql_shape_key(sql, no_backslash_escapes=False) == shape


@pytest.mark.parametrize("sql", [
    b"SELECT c FROM t WHERE id='1\\'; DROP TABLE t; -- '",  # an escaped quote
    b"SELECT c FROM t WHERE id=1 -- 1",  # comments of every kind
    b"SELECT c FROM t WHERE id=1 --1",  # not a comment, but refused all the same
    b"SELECT c FROM t WHERE id=1 # x",
    b"SELECT c FROM t WHERE id=1 /* x */",
    b"SELECT c FROM t WHERE id=1 /*! AND 0 */",
    b"SELECT c FROM t WHERE id=1 /*M!100000 ; DROP TABLE t */",
    b"SELECT c FROM t WHERE id=1 */",
    b'SELECT c FROM t WHERE id="1"',  # a string, or an identifier under ANSI_QUOTES
    b"SELECT c FROM `t'` WHERE id='1'",  # a backtick identifier holding a quote
    b"SELECT c FROM t WHERE id=x'41'",  # hex, bit, national and charset-introduced strings
    b"SELECT c FROM t WHERE id=b'01'",
    b"SELECT c FROM t WHERE id=N'1'",
    b"SELECT c FROM t WHERE id=_latin1'1'",
    b"SELECT c FROM t WHERE id=@a",  # user variables
    b"SELECT c FROM t WHERE id='1",  # unterminated
    b"SELECT c FROM t WHERE id='1' OR c='",
    b"SELECT c FROM t WHERE id=1\x00",  # NUL, control characters, non-ASCII
    b"SELECT c FROM t WHERE id=1\x0b",
    "SELECT c FROM t WHERE c='é'".encode(),
])
def test_texts_without_a_certain_shape(sql: bytes) -> None:
    assert mysql_shape_key(sql, no_backslash_escapes=False) is None


def test_backslashes_only_inside_strings_when_escapes_are_off() -> None:
    assert mysql_shape_key(b"SELECT c FROM t WHERE c='a\\'", no_backslash_escapes=True) == b"SELECT c FROM t WHERE c=''"
    assert mysql_shape_key(b"SELECT c FROM t WHERE c='a\\'", no_backslash_escapes=False) is None
    assert mysql_shape_key(b"SELECT c FROM t WHERE c=1\\", no_backslash_escapes=True) is None


# ----------------------------------------------------------------------------- against the lexer

FRAGMENTS = (
    "SELECT", "c", "FROM", "t", "t1", "1t", "1e", "e", "E", "x", "b", "N", "_latin1", "$", "a$1",
    "1", "12", "0", "1.5", ".5", "5.", "1e1", "1e+1", "1e-", "0x1F", "0b01", "0X1",
    "'a'", "''", "'a''b'", "'1;DROP TABLE t'", "'", "\\", "\\'", "'\\''", '"', '"a"', "`", "`a'b`",
    "--", "-- ", "--1", "-", "+", "#", "/*", "*/", "/*!", "/*M!", "*", "/", "@", "@@", ";",
    "DROP TABLE t", "=", "(", ")", ",", ".", " ", " ", " ", "\n", "\t",
)


def _structure(sql: str, ansi_quotes: bool, no_backslash_escapes: bool) -> tuple[object, ...]:
    """What the analyser's lexer (the server's rules) reads, literal values aside."""
    lexed = lex(sql, ansi_quotes=ansi_quotes, no_backslash_escapes=no_backslash_escapes)
    statements = []
    for statement in lexed.statements:
        tokens: list[tuple[object, ...]] = []
        for token in statement.tokens:
            if token.kind is TokenKind.STRING:
                tokens.append(("string",))
            elif token.kind is TokenKind.NUMBER and token.text.isdigit():
                tokens.append(("integer",))
            else:
                tokens.append((token.kind.value, token.text, token.condition))
        statements.append(tuple(tokens))
    return tuple(statements), bool(lexed.error)


@pytest.mark.parametrize(("ansi_quotes", "no_backslash_escapes"), list(itertools.product([False, True], repeat=2)))
def test_texts_with_one_shape_lex_alike(ansi_quotes: bool, no_backslash_escapes: bool) -> None:
    """Thousands of texts made of the fragments lexers disagree on: whenever two get the same
    key, the server's lexer reads the same tokens from both, values of strings and integers aside."""
    rng = random.Random(f"{ansi_quotes}-{no_backslash_escapes}")
    groups: dict[bytes, tuple[str, tuple[object, ...]]] = {}
    keyed = 0
    for _ in range(12_000):
        sql = "".join(rng.choice(FRAGMENTS) for _ in range(rng.randint(1, 10)))
        key = mysql_shape_key(sql.encode(), no_backslash_escapes)
        if key is None:
            continue
        keyed += 1
        structure = _structure(sql, ansi_quotes, no_backslash_escapes)
        first = groups.setdefault(key, (sql, structure))
        assert first[1] == structure, f"{first[0]!r} and {sql!r} share the key {key!r}"
    # The generator does reach the shape path.
    assert keyed > 2_000
    assert len(groups) > 1_000


# ----------------------------------------------------------------------------- a warmed cache

CACHED = (
    b"SELECT c FROM t WHERE id=1",
    b"SELECT c FROM t WHERE id='1'",
    b"SELECT c FROM t1 WHERE id=1",
    b"SELECT c FROM 1t WHERE id=1",
    b"SELECT c FROM sbtest1 WHERE id=1",
    b"UPDATE t SET c='x' WHERE id=1",
    b"DELETE FROM t WHERE id=1",
    b"SELECT c FROM t WHERE id=1e1",
    b"SELECT c FROM t WHERE id=0x1F",
)

ATTACKS = (
    b"SELECT c FROM t WHERE id=1;DROP TABLE t",
    b"SELECT c FROM t WHERE id=2;DROP TABLE t",
    b"SELECT c FROM t WHERE id='1\\'; DROP TABLE t; -- '",
    b"SELECT c FROM t WHERE id='1\\';DROP TABLE t;#'",
    b"SELECT c FROM t WHERE id='1' -- ';DROP TABLE t",
    b"SELECT c FROM t WHERE id=1 --1\nDROP TABLE t",
    b"SELECT c FROM t WHERE id=1 -- 1\n;DROP TABLE t",
    b"SELECT c FROM t WHERE id=1 #\n;DROP TABLE t",
    b"SELECT c FROM t WHERE id=1 /*!;DROP TABLE t*/",
    b"SELECT c FROM t WHERE id=1 /*M!;DROP TABLE t*/",
    b"SELECT c FROM t WHERE id=1 /* ; */;DROP TABLE t",
    b'SELECT c FROM t WHERE id="1\\";DROP TABLE t;#"',
    b"SELECT c FROM `t';DROP TABLE t;#` WHERE id=1",
    b"SELECT c FROM t2 WHERE id=1",  # names that differ by a digit from cached ones
    b"SELECT c FROM 2t WHERE id=1",
    b"SELECT c FROM sbtest2 WHERE id=1",
    b"SELECT c FROM secret WHERE id=1",
    b"SELECT c FROM other.t WHERE id=1",
    b"SELECT c FROM t WHERE id=1e1;DROP TABLE t",
    b"SELECT c FROM t WHERE id=2e",
    b"SELECT c FROM t WHERE id=.5",
    b"SELECT c FROM t WHERE id=0x2F;DROP TABLE t",
    b"SELECT c FROM t WHERE id=x'41';DROP TABLE t",
    b"SELECT c FROM t WHERE id=b'1';DROP TABLE t",
    b"SELECT c FROM t WHERE id=_binary'1';DROP TABLE t",
    b"UPDATE t SET c='x' WHERE 1=1",
    b"UPDATE t SET c='x' WHERE 1",
    b"UPDATE t SET c='x' WHERE 2",
    b"UPDATE t SET c='x' WHERE id=1 OR 1",
    b"DELETE FROM t WHERE 1",
    b"DELETE FROM t WHERE id=1 OR 1=1",
    b"SELECT c FROM t WHERE id=1 INTO OUTFILE '/tmp/x'",
    b"TRUNCATE t",
    b"SELECT c FROM t WHERE id=1 UNION SELECT c FROM secret WHERE id=1",
)


def warmed_gate(**modes: bool) -> MysqlSessionGate:
    session_gate = open_gate()
    apply_modes(session_gate, **modes)
    for sql in CACHED:
        for value in (b"1", b"2", b"3"):  # exact, shape and digit-key entries alike
            session_gate.decide(sql.replace(b"=1", b"=" + value), Q, "")
    return session_gate


# Attacks that really are harmless in some sql_mode: the DROP is inside a string, a comment or a
# quoted identifier there (and `2e` is a column, `.5` a number). Every other one is refused.
HARMLESS_ALWAYS = {
    b"SELECT c FROM t WHERE id='1' -- ';DROP TABLE t",
    b"SELECT c FROM `t';DROP TABLE t;#` WHERE id=1",
    b"SELECT c FROM t WHERE id=2e",
    b"SELECT c FROM t WHERE id=.5",
}
HARMLESS_WITH_ESCAPES = {
    b"SELECT c FROM t WHERE id='1\\'; DROP TABLE t; -- '",
    b"SELECT c FROM t WHERE id='1\\';DROP TABLE t;#'",
}
HARMLESS_AS_DOUBLE_QUOTED_STRING = {b'SELECT c FROM t WHERE id="1\\";DROP TABLE t;#"'}


@pytest.mark.parametrize(("modes", "harmless"), [
    ({}, HARMLESS_ALWAYS | HARMLESS_WITH_ESCAPES | HARMLESS_AS_DOUBLE_QUOTED_STRING),
    ({"ansi_quotes": True}, HARMLESS_ALWAYS | HARMLESS_WITH_ESCAPES),
    ({"no_backslash_escapes": True}, HARMLESS_ALWAYS),
    ({"ansi_quotes": True, "no_backslash_escapes": True}, HARMLESS_ALWAYS),
])
def test_a_warmed_cache_decides_every_attack_as_a_cold_gate(modes: dict[str, bool], harmless: set[bytes]) -> None:
    session_gate = warmed_gate(**modes)
    for sql in ATTACKS:
        cold = fresh(sql, **modes)
        warm = session_gate.decide(sql, Q, "")
        assert (warm.action, warm.rule_ids) == (cold.action, cold.rule_ids), sql
        assert (warm.action is Action.ALLOW) == (sql in harmless), sql
        if sql not in harmless:
            assert warm.action is Action.BLOCK, sql


class CountingGate(PolicyGate):
    """A listener gate that counts the analyses it runs (cache misses)."""

    def __init__(self) -> None:
        super().__init__(policy(), "mysql")
        self.analysed: list[bytes] = []

    def analysis(self, sql: bytes, settings: ParseSettings, encoding: str) -> tuple[StatementInfo, ...]:
        self.analysed.append(sql)
        return super().analysis(sql, settings, encoding)


def test_allowed_variants_are_served_from_the_shape_and_digit_key_caches() -> None:
    counting = CountingGate()
    session_gate = open_gate(counting)
    assert session_gate.decide(b"SELECT c FROM t WHERE id=1 AND c='a'", Q, "").action is Action.ALLOW
    assert session_gate.decide(b"SELECT c FROM t WHERE id=99 AND c='zz'", Q, "").action is Action.ALLOW
    assert session_gate.decide(b"SELECT c FROM t WHERE id=7 AND c='a'", Q, "").action is Action.ALLOW
    assert session_gate.decide(b"SELECT c FROM sbtest1 WHERE id=1", Q, "").action is Action.ALLOW
    assert session_gate.decide(b"SELECT c FROM sbtest1 WHERE id=5", Q, "").action is Action.ALLOW
    assert counting.analysed == [b"SELECT c FROM t WHERE id=1 AND c='a'", b"SELECT c FROM sbtest1 WHERE id=1"]
    # Names that differ by a digit are different statements (the digit key keeps them apart).
    assert session_gate.decide(b"SELECT c FROM sbtest2 WHERE id=5", Q, "").action is Action.BLOCK
    assert counting.analysed[-1] == b"SELECT c FROM sbtest2 WHERE id=5"


def test_literal_sensitive_and_stateful_analyses_are_never_cached_by_shape() -> None:
    session_gate = open_gate()
    assert session_gate.decide(b"UPDATE t SET c='x' WHERE 0", Q, "").action is Action.ALLOW
    assert session_gate.decide(b"UPDATE t SET c='x' WHERE 1", Q, "").action is Action.BLOCK
    assert session_gate.decide(b"SELECT c FROM t WHERE id=1 OR 0", Q, "").action is Action.ALLOW
    assert session_gate.decide(b"DELETE FROM t WHERE id=1 OR 5", Q, "").action is Action.BLOCK
    # USE changes the current database: never cached; once the session reports the database the
    # server says it is in, what follows is read against it, with caches of its own.
    counting = CountingGate()
    session_gate = open_gate(counting)
    assert session_gate.decide(b"SELECT c FROM secret2 WHERE id=1", Q, "").action is Action.ALLOW
    assert session_gate.decide(b"USE other", Q, "").action is Action.ALLOW
    assert session_gate.decide(b"USE other", Q, "").action is Action.ALLOW
    assert counting.analysed.count(b"USE other") == 2
    session_gate.server_parameter("database", "other")
    assert session_gate.decide(b"SELECT c FROM secret2 WHERE id=2", Q, "").action is Action.BLOCK
    assert session_gate.decide(b"SELECT c FROM t WHERE id=2", Q, "").action is Action.BLOCK


def test_the_shape_cache_is_per_sql_mode_and_per_database() -> None:
    shared = PolicyGate(policy(), "mysql")
    plain = open_gate(shared)
    assert plain.decide(b"SELECT c FROM t WHERE c='a' AND id=1", Q, "").action is Action.ALLOW
    no_escapes = open_gate(shared)
    no_escapes.server_parameter("sql_mode", "NO_BACKSLASH_ESCAPES")
    # Under NO_BACKSLASH_ESCAPES this backslash stays in the string; with escapes it would not.
    text = b"SELECT c FROM t WHERE c='a\\' AND id=1"
    assert no_escapes.decide(text, Q, "").action is Action.ALLOW
    assert plain.decide(text, Q, "") == fresh(text)
    elsewhere = open_gate(shared)
    elsewhere.server_parameter("database", "other")
    assert elsewhere.decide(b"SELECT c FROM t WHERE c='b' AND id=2", Q, "").action is Action.BLOCK


def test_prepared_statement_texts_use_the_exact_cache_only() -> None:
    counting = CountingGate()
    session_gate = open_gate(counting)
    for sql in (b"SELECT c FROM t WHERE id=1", b"SELECT c FROM t WHERE id=1", b"SELECT c FROM t WHERE id=2"):
        assert session_gate.decide(sql, P, "").action is Action.ALLOW
    assert counting.analysed == [b"SELECT c FROM t WHERE id=1", b"SELECT c FROM t WHERE id=2"]
