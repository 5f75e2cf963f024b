"""The runtime decision point (`policy.gate`): caches that never change an answer, session state.

Covers: a cached answer equals a fresh one; the shape cache is used only where a literal's
extent cannot be in doubt and the analysis does not depend on literal values (`WHERE 1=1` vs
`WHERE 1=2`); bytes are decoded strictly in the session's client encoding; SQL-level PREPARE /
EXECUTE / DEALLOCATE; the search_path union; a reload applies to open sessions; holds are
refused while approvals are not available; statements that may change parsing carry a barrier.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from dbguard.model import Action, Identity, IdentityKind, SessionInfo, StatementSource
from dbguard.policy.gate import MysqlPolicyGate, PgSessionGate, PolicyGate, pg_shape
from dbguard.policy.rules import Policy, load_policy

Q = StatementSource.SIMPLE_QUERY
P = StatementSource.PARSE

RULES = """
rules:
  - id: no-unbounded-writes
    description: writes need a WHERE
    when: {statement: [delete, update], where: missing}
    action: block
  - id: no-public-deletes
    description: deletes only in scratch
    when: {statement: [delete]}
    unless: {tables: ["scratch.*"]}
    action: block
  - id: hold-updates
    description: updates wait for a DBA
    when: {statement: [update]}
    action: hold
    approvers: [dba]
  - id: no-files
    description: no server files
    when: {features: [file_access]}
    action: block
"""


def session(name: str = "copilot", kind: IdentityKind = IdentityKind.AGENT) -> SessionInfo:
    return SessionInfo("s1", "app-pg", "postgres", Identity(name, kind, ()), "127.0.0.1:5000", "app")


@pytest.fixture
def policy(tmp_path: Path) -> Policy:
    path = tmp_path / "rules.yaml"
    path.write_text(RULES, encoding="utf-8")
    return load_policy(path)


def open_gate(policy: Policy, **startup: str) -> tuple[PolicyGate, PgSessionGate]:
    gate = PolicyGate(policy)
    return gate, gate.open(session(), startup)


def test_shape_replaces_literals_only_where_their_extent_is_certain() -> None:
    assert pg_shape(b"SELECT abalance FROM t1 WHERE aid = 123;") == b"SELECT abalance FROM t1 WHERE aid = ?;"
    # A doubled quote ends one match and starts the next: the extent of the literal is the same.
    shape = pg_shape(b"SELECT * FROM t WHERE name = 'o''brien' AND n = 5")
    assert shape == b"SELECT * FROM t WHERE name = ?? AND n = ?"
    for unsafe in (b"SELECT $1", b"SELECT E'\\'' , 1", b'SELECT "x1"', b"SELECT 1 -- x", b"SELECT /* 1 */ 1",
                   "SELECT 'é'".encode(), b"SELECT 1\x00"):
        assert pg_shape(unsafe) is None, unsafe


def test_constant_where_is_never_answered_from_the_shape_cache(policy: Policy) -> None:
    _, gate = open_gate(policy)
    assert gate.decide(b"DELETE FROM scratch.t WHERE 1=2", Q, "").action is Action.ALLOW
    # Same shape (DELETE FROM scratch.t WHERE ?=?), but always true: must be decided afresh.
    assert gate.decide(b"DELETE FROM scratch.t WHERE 1=1", Q, "").action is Action.BLOCK


def test_shape_cache_answers_literal_variants_like_a_fresh_decision(policy: Policy) -> None:
    _, gate = open_gate(policy)
    first = gate.decide(b"DELETE FROM scratch.t WHERE id = 1", Q, "")
    again = gate.decide(b"DELETE FROM scratch.t WHERE id = 2", Q, "")
    assert first is again  # served by shape
    assert gate.decide(b"DELETE FROM public.t WHERE id = 3", Q, "").action is Action.BLOCK  # other table


def test_cached_and_fresh_decisions_agree(policy: Policy) -> None:
    statements = [b"SELECT 1", b"DELETE FROM t", b"DELETE FROM scratch.t WHERE id = 4",
                  b"UPDATE t SET a = 1 WHERE id = 2", b"SELECT pg_read_file('x')", b"SELEC 1"]
    _, warm = open_gate(policy)
    for sql in statements:
        warm.decide(sql, Q, "")
    for sql in statements:
        _, cold = open_gate(policy)
        assert warm.decide(sql, Q, "") == cold.decide(sql, Q, ""), sql


def test_unparseable_is_blocked_without_rules() -> None:
    _, gate = open_gate(Policy())
    decision = gate.decide(b"SELEC 1", Q, "")
    assert decision.action is Action.BLOCK
    assert decision.rule_ids == ("defaults.on_parse_error",)
    assert gate.decide(b"SELECT 1", Q, "").action is Action.ALLOW


def test_bytes_invalid_in_the_client_encoding_fail_closed(policy: Policy) -> None:
    _, gate = open_gate(policy)
    assert gate.decide(b"SELECT '\xff'", Q, "").action is Action.BLOCK  # not UTF-8
    gate.server_parameter("client_encoding", "LATIN1")
    assert gate.decide(b"SELECT '\xff'", Q, "").action is Action.ALLOW


def test_sjis_second_byte_0x5c_is_not_a_backslash(policy: Policy) -> None:
    _, gate = open_gate(policy)
    gate.server_parameter("client_encoding", "SJIS")
    trick = b"SELECT E'\x95\x5c' , pg_read_file('/etc/passwd') --'"
    assert gate.decide(trick, Q, "").action is Action.BLOCK
    gate.server_parameter("client_encoding", "LATIN1")  # byte by byte: one harmless string
    assert gate.decide(b"SELECT E'\x95\x5c' , pg_read_file(1) --'", Q, "").action is Action.ALLOW


def test_standard_conforming_strings_is_followed(policy: Policy) -> None:
    _, gate = open_gate(policy)
    trick_off = b"SELECT 'x\\'' , pg_read_file(1) --'"
    assert gate.decide(trick_off, Q, "").action is Action.ALLOW  # on: one harmless string
    gate.server_parameter("standard_conforming_strings", "off")
    assert gate.decide(trick_off, Q, "").action is Action.BLOCK  # off: the call is real


def test_prepare_execute_deallocate(policy: Policy) -> None:
    _, gate = open_gate(policy)
    assert gate.decide(b"PREPARE wipe AS DELETE FROM public.t", Q, "").action is Action.BLOCK
    assert gate.decide(b"PREPARE tidy AS DELETE FROM scratch.t WHERE id = $1", Q, "").action is Action.ALLOW
    assert gate.decide(b"EXECUTE tidy(1)", Q, "").action is Action.ALLOW
    gate.decide(b"DEALLOCATE tidy", Q, "")
    unknown = gate.decide(b"EXECUTE tidy(1)", Q, "")
    assert unknown.action is Action.ALLOW  # no rule on dynamic_sql here; the server says it is gone
    assert gate.decide(b"PREPARE files AS SELECT pg_read_file('x')", Q, "").action is Action.BLOCK


def test_execute_after_user_code_is_dynamic_sql(tmp_path: Path) -> None:
    path = tmp_path / "r.yaml"
    path.write_text("rules:\n  - id: no-dynamic\n    when: {features: [dynamic_sql]}\n    action: block\n")
    _, gate = open_gate(load_policy(path))
    assert gate.decide(b"PREPARE q AS SELECT 1", Q, "").action is Action.ALLOW
    assert gate.decide(b"EXECUTE q", Q, "").action is Action.ALLOW
    assert gate.decide(b"SELECT my_function()", Q, "").barrier  # user code: may re-prepare q
    assert gate.decide(b"EXECUTE q", Q, "").action is Action.BLOCK


def test_search_path_union_keeps_exemptions_honest(policy: Policy) -> None:
    _, gate = open_gate(policy)
    assert gate.decide(b"DELETE FROM notes WHERE id = 1", Q, "").action is Action.BLOCK  # public.notes
    _, scratch_only = open_gate(policy, search_path="scratch")
    assert scratch_only.decide(b"DELETE FROM notes WHERE id = 1", Q, "").action is Action.ALLOW
    scratch_only.decide(b"SET search_path TO public", Q, "")
    # Both schemas are now candidates for `notes`: the scratch exemption no longer covers it.
    assert scratch_only.decide(b"DELETE FROM notes WHERE id = 1", Q, "").action is Action.BLOCK


def test_reload_applies_to_open_sessions(policy: Policy, tmp_path: Path) -> None:
    gate, session_gate = open_gate(policy)
    assert session_gate.decide(b"SELECT * FROM products", Q, "").action is Action.ALLOW
    stricter = tmp_path / "stricter.yaml"
    stricter.write_text("rules:\n  - id: no-products\n    when: {reads: [public.products]}\n    action: block\n")
    gate.replace_policy(load_policy(stricter))
    assert session_gate.decide(b"SELECT * FROM products", Q, "").action is Action.BLOCK


def test_hold_is_refused_while_approvals_are_unavailable(policy: Policy) -> None:
    _, gate = open_gate(policy)
    decision = gate.decide(b"UPDATE t SET a = 1 WHERE id = 2", P, "")
    assert decision.action is Action.BLOCK
    assert decision.details["action"] == "hold"
    assert decision.enforced
    assert decision.reason.startswith("dbguard: blocked by rule hold-updates: ")
    assert "approvals are not enabled" in decision.reason
    assert decision.details["approval"] == "unavailable"


def test_hold_is_a_hold_when_the_runtime_has_an_approval_queue(policy: Policy) -> None:
    policy_gate, gate = open_gate(policy)
    policy_gate.holds_enabled = True
    decision = gate.decide(b"UPDATE t SET a = 1 WHERE id = 2", P, "")
    assert decision.action is Action.HOLD
    assert decision.enforced
    assert decision.reason.startswith("dbguard: held by rule hold-updates")
    assert decision.details["action"] == "hold"


@pytest.mark.parametrize("sql", [
    b"SET standard_conforming_strings = off", b"SET client_encoding = 'SJIS'", b"RESET ALL",
    b"SELECT set_config('standard_conforming_strings', 'off', false)", b"DO $$ BEGIN END $$",
    b"CALL do_things()", b"SELECT my_function()",
])
def test_statements_that_may_change_parsing_carry_a_barrier(sql: bytes) -> None:
    _, gate = open_gate(Policy())
    assert gate.decide(sql, Q, "").barrier


@pytest.mark.parametrize("sql", [b"SELECT 1", b"BEGIN", b"SET work_mem = '64MB'", b"SELECT now()"])
def test_ordinary_statements_carry_no_barrier(sql: bytes) -> None:
    _, gate = open_gate(Policy())
    assert not gate.decide(sql, Q, "").barrier


def test_commit_is_a_barrier_only_after_a_setting_change() -> None:
    _, gate = open_gate(Policy())
    assert not gate.decide(b"COMMIT", Q, "").barrier
    assert not gate.decide(b"BEGIN; SELECT 1; COMMIT", Q, "").barrier
    assert gate.decide(b"SET LOCAL standard_conforming_strings = off", Q, "").barrier
    assert gate.decide(b"ROLLBACK TO SAVEPOINT a", Q, "").barrier  # reverts, transaction stays
    assert gate.decide(b"COMMIT", Q, "").barrier  # reverts the SET LOCAL: decide nothing before it
    assert not gate.decide(b"COMMIT", Q, "").barrier


def test_digit_key_never_merges_identifiers_that_differ_by_a_digit(tmp_path: Path) -> None:
    path = tmp_path / "r.yaml"
    path.write_text("rules:\n  - id: no-t2\n    when: {writes: [public.t2]}\n    action: block\n")
    _, gate = open_gate(load_policy(path))
    assert gate.decide(b"DELETE FROM t1 WHERE id = 5", Q, "").action is Action.ALLOW
    assert gate.decide(b"DELETE FROM t1 WHERE id = 6", Q, "").action is Action.ALLOW
    assert gate.decide(b"DELETE FROM t2 WHERE id = 5", Q, "").action is Action.BLOCK
    assert gate.decide(b"DELETE FROM t2 WHERE id = 7", Q, "").action is Action.BLOCK
    # Digits only in numbers: the digit key serves variants of the same length...
    assert gate.decide(b"DELETE FROM tx WHERE id = 50", Q, "") is gate.decide(b"DELETE FROM tx WHERE id = 61", Q, "")


def test_digit_key_never_serves_a_constant_where(policy: Policy) -> None:
    _, gate = open_gate(policy)
    assert gate.decide(b"DELETE FROM scratch.t WHERE 1 = 2", Q, "").action is Action.ALLOW
    assert gate.decide(b"DELETE FROM scratch.t WHERE 2 = 2", Q, "").action is Action.BLOCK  # same digit key


def test_mysql_sql_mode_statements_are_allowed_and_never_followed_by_the_gate_itself() -> None:
    """A SET of sql_mode, literal or computed, is allowed (clients send them on connect); what it
    did is learned from the server afterwards, never assumed from the text."""
    blocking = MysqlPolicyGate(PolicyGate(load_policy_text("rules:\n  - id: no-drop\n    when: {statement: [drop]}\n"
                                                          "    action: block\n")))
    mysql_session = SessionInfo("s2", "app-my", "mysql", Identity("copilot", IdentityKind.AGENT, ()), "h", "app")
    gate = blocking.open(mysql_session, {"database": "app"})
    for sql in (b"SET sql_mode = @x", b"SET sql_mode = CONCAT(@@sql_mode, ',ANSI_QUOTES')",
                b"set autocommit=1, sql_mode = concat(@@sql_mode,',STRICT_TRANS_TABLES')",
                b"SET sql_mode = 'STRICT_TRANS_TABLES,ANSI_QUOTES'"):
        decision = gate.decide(sql, Q, "")
        assert decision.action is Action.ALLOW, sql
        assert decision.barrier, sql  # the session reads the state back before the next command
    # Under ANSI_QUOTES, "a\" is an identifier that ends at the second quote: the DROP is real.
    trick = b'SELECT "a\\"; DROP TABLE t; -- "'
    assert gate.decide(trick, Q, "").action is Action.ALLOW  # the server has not said otherwise
    gate.server_parameter("sql_mode", "STRICT_TRANS_TABLES,ANSI_QUOTES")
    assert gate.decide(trick, Q, "").action is Action.BLOCK
    # In the same message, a computed sql_mode makes the rest unreadable: refused.
    assert gate.decide(b"SET sql_mode = @x; SELECT 'a\\'; DROP TABLE t; -- '", Q, "").action is Action.BLOCK


def load_policy_text(text: str) -> Policy:
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "rules.yaml"
        path.write_text(text, encoding="utf-8")
        return load_policy(path)


def test_mysql_client_character_set_comes_from_the_server() -> None:
    blocking = MysqlPolicyGate(PolicyGate(load_policy_text("rules:\n  - id: no-drop\n    when: {statement: [drop]}\n"
                                                          "    action: block\n")))
    mysql_session = SessionInfo("s3", "app-my", "mysql", Identity("copilot", IdentityKind.AGENT, ()), "h", "app")
    gate = blocking.open(mysql_session, {"database": "app"})
    # In GBK, 0x95 0x5C is one character: no backslash escapes the quote, so the DROP is real.
    gbk_trick = b"SELECT '\x95\x5c'; DROP TABLE t; -- '"
    assert gate.decide(gbk_trick, Q, "").action is Action.BLOCK  # not UTF-8: refused as undecodable
    assert gate.decide(b"SET NAMES gbk", Q, "").barrier
    gate.server_parameter("character_set_client", "gbk")
    assert gate.decide(gbk_trick, Q, "").action is Action.BLOCK  # the DROP is seen
    assert gate.decide(b"SELECT '\x95\x5c' , 1", Q, "").action is Action.ALLOW
    gate.server_parameter("character_set_client", "no-such-charset")  # read as strict ASCII
    assert gate.decide(b"SELECT '\x95\x5c' , 1", Q, "").action is Action.BLOCK


def test_mysql_server_reported_sql_mode_is_what_text_is_read_with() -> None:
    """The session reads sql_mode back from the server (session.mysql_state_sync); what it
    reports replaces what the gate followed, e.g. a global default of ANSI_QUOTES."""
    blocking = MysqlPolicyGate(PolicyGate(load_policy_text("rules:\n  - id: no-drop\n    when: {statement: [drop]}\n"
                                                          "    action: block\n")))
    mysql_session = SessionInfo("s4", "app-my", "mysql", Identity("copilot", IdentityKind.AGENT, ()), "h", "app")
    gate = blocking.open(mysql_session, {"database": "app"})
    trick = b'SELECT "a\\"; DROP TABLE t; -- "'
    assert gate.decide(trick, Q, "").action is Action.ALLOW  # default mode: one string
    gate.server_parameter("sql_mode", "ANSI_QUOTES,STRICT_TRANS_TABLES")
    assert gate.decide(trick, Q, "").action is Action.BLOCK
    # A SET the gate followed but the server did not apply (it failed, or was only prepared):
    # the server's answer puts the gate back.
    gate.decide(b"SET sql_mode = 'NO_BACKSLASH_ESCAPES'", Q, "")
    gate.server_parameter("sql_mode", "STRICT_TRANS_TABLES")
    escaped = b"SELECT 'x\\'; DROP TABLE t; -- '"  # backslash escapes on: the DROP is inside the string
    assert gate.decide(escaped, Q, "").action is Action.ALLOW
    gate.server_parameter("sql_mode", "NO_BACKSLASH_ESCAPES")
    assert gate.decide(escaped, Q, "").action is Action.BLOCK


def test_mysql_unreadable_server_sql_mode_refuses_all_but_setting_it_back() -> None:
    gate = MysqlPolicyGate(PolicyGate(Policy())).open(
        SessionInfo("s5", "app-my", "mysql", Identity("copilot", IdentityKind.AGENT, ()), "h", "app"), {})
    gate.server_parameter("sql_mode", "ORACLE,STRICT_TRANS_TABLES")
    refused = gate.decide(b"SELECT 1", Q, "")
    assert refused.action is Action.BLOCK
    assert refused.rule_ids == ("dbguard.sql_mode",)
    assert "cannot read" in (refused.reason or "")
    assert gate.decide(b"SET sql_mode = 'ORACLE'", Q, "").action is Action.BLOCK
    assert gate.decide(b"SET sql_mode = 'STRICT_TRANS_TABLES'; DROP TABLE t", Q, "").action is Action.BLOCK
    assert gate.decide(b"SET sql_mode = 'STRICT_TRANS_TABLES'", Q, "").action is Action.ALLOW
    gate.server_parameter("sql_mode", "STRICT_TRANS_TABLES")
    assert gate.decide(b"SELECT 1", Q, "").action is Action.ALLOW


def test_mysql_gate_decodes_strictly_and_uses_the_state_the_server_reports() -> None:
    policy = load_policy_text("defaults: {action: allow, on_parse_error: block}\nrules:\n  - id: no-app-writes\n"
                              "    when: {statement: [insert], tables: [\"app.*\"]}\n    action: block\n")
    gate = MysqlPolicyGate(PolicyGate(policy)).open(
        SessionInfo("s1", "app-mysql", "mysql", Identity("copilot", IdentityKind.AGENT), "127.0.0.1:1", "app"),
        {"database": "app", "user": "copilot"})
    assert gate.decide(b"INSERT INTO t VALUES (1)", Q, "").action is Action.BLOCK
    assert gate.decide(b"INSERT INTO t VALUES (1)", Q, "").action is Action.BLOCK  # cached alike
    assert gate.decide(b"SELECT 1", Q, "").action is Action.ALLOW
    assert gate.decide(b"SELECT '\xff\xfe'", Q, "").action is Action.BLOCK  # not UTF-8: never guessed
    assert gate.decide(b"USE other", Q, "").action is Action.ALLOW
    assert gate.decide(b"INSERT INTO t VALUES (1)", Q, "").action is Action.BLOCK  # the server has not said
    gate.server_parameter("database", "other")
    assert gate.decide(b"INSERT INTO t VALUES (1)", Q, "").action is Action.ALLOW
    assert gate.decide(b"INSERT INTO app.t VALUES (1)", Q, "").action is Action.BLOCK
    gate.server_parameter("character_set_client", "latin1")  # cp1252 to MySQL: these bytes decode
    assert gate.decide(b"SELECT '\xe9'", Q, "").action is Action.ALLOW
    gate.server_parameter("character_set_client", "klingon")  # unknown: strict ASCII
    assert gate.decide(b"SELECT '\xe9'", Q, "").action is Action.BLOCK
