# tests/unit/test_policy_engine.py — the decision function, on StatementInfo built by hand (no
# analyser): when = ANY and unless = ALL semantics, where:, globs, parse errors, defaults,
# strictest-wins across rules and statements, observe-only, the reason/DETAIL/HINT texts, explain.
from __future__ import annotations

import random
import re
import textwrap

import pytest

from dbguard.model import (
    ALLOW,
    Action,
    Feature,
    Identity,
    IdentityKind,
    SessionInfo,
    StatementInfo,
    StatementKind,
)
from dbguard.policy.engine import PARSE_ERROR_HINT, WHERE_HINT, evaluate, explain, format_details
from dbguard.policy.rules import Policy, parse_policy_text

K = StatementKind
F = Feature

COPILOT = Identity("copilot", IdentityKind.AGENT, ("readers",))
ALICE = Identity("alice", IdentityKind.HUMAN, ("dba",))
MIGRATOR = Identity("migrator", IdentityKind.SERVICE, ("migrations",))


def session(identity: Identity = COPILOT, listener: str = "app-pg", database: str = "app") -> SessionInfo:
    return SessionInfo("s1", listener, "postgres", identity, "127.0.0.1:5000", database)


def stmt(
    *kinds: StatementKind,
    reads: tuple[str, ...] = (),
    writes: tuple[str, ...] = (),
    functions: tuple[str, ...] = (),
    features: tuple[Feature, ...] = (),
    unfiltered: tuple[StatementKind, ...] = (),
    detail: str = "",
    changes_parsing: bool = False,
) -> StatementInfo:
    return StatementInfo(
        text="...",
        command=kinds[0].value.upper() if kinds else "",
        kinds=frozenset(kinds),
        reads=frozenset(reads),
        writes=frozenset(writes),
        functions=frozenset(functions),
        features=frozenset(features),
        unfiltered=frozenset(unfiltered),
        detail=detail,
        changes_parsing=changes_parsing,
    )


def unparseable(detail: str = "syntax error at or near \"FORM\"") -> StatementInfo:
    return stmt(K.OTHER, features=(F.UNPARSEABLE,), detail=detail)


def policy(text: str) -> Policy:
    return parse_policy_text(textwrap.dedent(text))


def one_rule(when: str, unless: str = "", action: str = "block") -> Policy:
    extra = f"\n    unless: {unless}" if unless else ""
    return policy(f"rules:\n  - id: r\n    when: {when}{extra}\n    action: {action}\n")


def decide(p: Policy, *statements: StatementInfo, who: Identity = COPILOT, **kw: str) -> Action:
    return evaluate(p, statements, session(who, **kw)).action


# ---------------------------------------------------------------------------------------------
# when: ANY


@pytest.mark.parametrize(
    ("when", "statement", "expected"),
    [
        ("{statement: [delete]}", stmt(K.SELECT, K.DELETE, writes=("public.t",)), Action.BLOCK),
        ("{statement: [delete]}", stmt(K.SELECT, reads=("public.t",)), Action.ALLOW),
        ("{tables: [public.users]}", stmt(K.SELECT, reads=("public.users",)), Action.BLOCK),
        ("{tables: [public.users]}", stmt(K.INSERT, writes=("public.users",)), Action.BLOCK),
        ("{reads: [public.users]}", stmt(K.INSERT, writes=("public.users",)), Action.ALLOW),
        ("{writes: [public.users]}", stmt(K.INSERT, writes=("public.users",)), Action.BLOCK),
        ("{writes: [public.users]}", stmt(K.SELECT, reads=("public.users",)), Action.ALLOW),
        ("{tables: [users]}", stmt(K.SELECT, reads=("sales.users",)), Action.BLOCK),  # no schema: any schema
        ("{tables: [Public.Users]}", stmt(K.SELECT, reads=("public.users",)), Action.BLOCK),  # when ignores case
        ("{tables: ['public.*']}", stmt(K.SELECT, reads=("sales.t", "public.x")), Action.BLOCK),
        ("{tables: ['public.*']}", stmt(K.SELECT, reads=("sales.t",)), Action.ALLOW),
        # A whole-schema name (DROP SCHEMA public) stands for every table of it.
        ("{tables: [public.users]}", stmt(K.DROP, writes=("public.*",)), Action.BLOCK),
        ("{tables: [sales.users]}", stmt(K.DROP, writes=("public.*",)), Action.ALLOW),
        ("{writes: ['*.[*]']}", stmt(K.DROP, writes=("public.*",)), Action.BLOCK),
        ("{writes: ['*.[*]']}", stmt(K.DROP, writes=("public.t",)), Action.ALLOW),
        ("{functions: [pg_read_file]}", stmt(K.SELECT, functions=("pg_catalog.pg_read_file",)), Action.BLOCK),
        ("{functions: [PG_READ_FILE]}", stmt(K.SELECT, functions=("pg_read_file",)), Action.BLOCK),
        ("{functions: ['pg_*']}", stmt(K.SELECT, functions=("now", "pg_catalog.pg_sleep")), Action.BLOCK),
        ("{functions: ['pg_catalog.*']}", stmt(K.SELECT, functions=("pg_catalog.now",)), Action.BLOCK),
        ("{functions: ['pg_catalog.*']}", stmt(K.SELECT, functions=("now",)), Action.ALLOW),
        ("{functions: [read_file]}", stmt(K.SELECT, functions=("pg_read_file",)), Action.ALLOW),
        ("{features: [file_access, dynamic_sql]}", stmt(K.COPY, features=(F.FILE_ACCESS,)), Action.BLOCK),
        ("{features: [file_access]}", stmt(K.COPY), Action.ALLOW),
        ("{identity: copilot}", stmt(K.SELECT), Action.BLOCK),
        ("{identity: 'co*'}", stmt(K.SELECT), Action.BLOCK),
        ("{identity: alice}", stmt(K.SELECT), Action.ALLOW),
        ("{identity_kind: [human, agent]}", stmt(K.SELECT), Action.BLOCK),
        ("{identity_kind: service}", stmt(K.SELECT), Action.ALLOW),
        ("{roles: [dba, readers]}", stmt(K.SELECT), Action.BLOCK),
        ("{roles: ['read*']}", stmt(K.SELECT), Action.BLOCK),
        ("{roles: [dba]}", stmt(K.SELECT), Action.ALLOW),
        ("{listener: app-pg}", stmt(K.SELECT), Action.BLOCK),
        ("{listener: other}", stmt(K.SELECT), Action.ALLOW),
        ("{database: [app, 'prod*']}", stmt(K.SELECT), Action.BLOCK),
        ("{database: prod}", stmt(K.SELECT), Action.ALLOW),
        ("{}", stmt(K.SELECT), Action.BLOCK),
    ],
)
def test_when_holds_when_any_fact_matches(when: str, statement: StatementInfo, expected: Action) -> None:
    assert decide(one_rule(when), statement) is expected


def test_every_key_of_when_must_hold() -> None:
    p = one_rule("{identity_kind: agent, statement: [delete]}")
    assert decide(p, stmt(K.DELETE)) is Action.BLOCK
    assert decide(p, stmt(K.DELETE), who=ALICE) is Action.ALLOW
    assert decide(p, stmt(K.UPDATE)) is Action.ALLOW


# ---------------------------------------------------------------------------------------------
# where


@pytest.mark.parametrize(
    ("when", "statement", "expected"),
    [
        ("{statement: [delete, update], where: missing}", stmt(K.DELETE, unfiltered=(K.DELETE,)), Action.BLOCK),
        ("{statement: [delete, update], where: missing}", stmt(K.DELETE), Action.ALLOW),
        # Only the rule's kinds are considered: an unfiltered SELECT next to a filtered DELETE.
        ("{statement: [delete], where: missing}", stmt(K.DELETE, K.SELECT, unfiltered=(K.SELECT,)), Action.ALLOW),
        ("{statement: [delete], where: missing}", stmt(K.SELECT, K.DELETE, unfiltered=(K.DELETE,)), Action.BLOCK),
        # Without statement: every filterable kind is considered.
        ("{where: missing}", stmt(K.SELECT, unfiltered=(K.SELECT,)), Action.BLOCK),
        ("{where: missing}", stmt(K.INSERT), Action.ALLOW),
        ("{where: present}", stmt(K.UPDATE), Action.BLOCK),
        ("{where: present}", stmt(K.UPDATE, unfiltered=(K.UPDATE,)), Action.ALLOW),
        ("{where: present}", stmt(K.INSERT), Action.ALLOW),  # nothing that could filter
        ("{statement: [delete, insert], where: present}", stmt(K.INSERT), Action.ALLOW),
        ("{statement: [delete, insert], where: present}", stmt(K.DELETE, K.INSERT), Action.BLOCK),
    ],
)
def test_where(when: str, statement: StatementInfo, expected: Action) -> None:
    assert decide(one_rule(when), statement) is expected


# ---------------------------------------------------------------------------------------------
# unless: ALL, non-empty


@pytest.mark.parametrize(
    ("unless", "statement", "expected"),
    [
        # WITH d AS (DELETE FROM prod.users) DELETE FROM scratch.t: not every table is scratch.
        ("{tables: ['scratch.*']}", stmt(K.DELETE, writes=("prod.users", "scratch.t")), Action.BLOCK),
        ("{tables: ['scratch.*']}", stmt(K.DELETE, writes=("scratch.t",), reads=("scratch.u",)), Action.ALLOW),
        ("{tables: ['scratch.*']}", stmt(K.DELETE, writes=("scratch.t",), reads=("public.u",)), Action.BLOCK),
        ("{tables: ['scratch.*']}", stmt(K.DELETE), Action.BLOCK),  # no tables: no exemption
        ("{tables: ['Scratch.*']}", stmt(K.DELETE, writes=("scratch.t",)), Action.BLOCK),  # exact case
        ("{tables: ['scratch.*']}", stmt(K.DELETE, writes=("Scratch.t",)), Action.BLOCK),
        ("{tables: [t]}", stmt(K.DELETE, writes=("scratch.t",)), Action.ALLOW),  # no schema: any schema
        ("{writes: ['scratch.*']}", stmt(K.DELETE, writes=("scratch.t",), reads=("public.u",)), Action.ALLOW),
        ("{reads: ['scratch.*']}", stmt(K.DELETE, writes=("scratch.t",)), Action.BLOCK),  # reads nothing
        # A whole schema is covered only by a glob covering all of it.
        ("{writes: ['scratch.*']}", stmt(K.DELETE, writes=("scratch.*",)), Action.ALLOW),
        ("{writes: ['scratch.t']}", stmt(K.DELETE, writes=("scratch.*",)), Action.BLOCK),
        ("{statement: [delete, select]}", stmt(K.DELETE, K.SELECT), Action.ALLOW),
        ("{statement: [delete]}", stmt(K.DELETE, K.SELECT), Action.BLOCK),
        ("{features: [multi_statement]}", stmt(K.DELETE, features=(F.MULTI_STATEMENT,)), Action.ALLOW),
        ("{features: [multi_statement]}", stmt(K.DELETE, features=(F.MULTI_STATEMENT, F.FILE_ACCESS)), Action.BLOCK),
        ("{features: [multi_statement]}", stmt(K.DELETE), Action.BLOCK),  # empty set: no exemption
        ("{functions: [now, 'pg_*']}", stmt(K.DELETE, functions=("now", "pg_catalog.pg_sleep")), Action.ALLOW),
        ("{functions: [now]}", stmt(K.DELETE, functions=("now", "pg_sleep")), Action.BLOCK),
        ("{functions: [now]}", stmt(K.DELETE), Action.BLOCK),
        ("{where: present}", stmt(K.DELETE), Action.ALLOW),
        ("{where: present}", stmt(K.DELETE, unfiltered=(K.DELETE,)), Action.BLOCK),
        # Identity facts are single-valued: they hold when they match.
        ("{identity_kind: agent}", stmt(K.DELETE), Action.ALLOW),
        ("{roles: [readers]}", stmt(K.DELETE), Action.ALLOW),
        ("{identity: copilot, listener: app-pg, database: app}", stmt(K.DELETE), Action.ALLOW),
        ("{identity: copilot, database: prod}", stmt(K.DELETE), Action.BLOCK),
        # Every key must hold.
        ("{identity_kind: agent, tables: ['scratch.*']}", stmt(K.DELETE, writes=("public.t",)), Action.BLOCK),
    ],
)
def test_unless_exempts_only_when_every_fact_is_covered(
    unless: str, statement: StatementInfo, expected: Action
) -> None:
    assert decide(one_rule("{statement: [delete]}", unless), statement) is expected


# ---------------------------------------------------------------------------------------------
# Parse errors, defaults, strictest wins


def test_unparseable_is_decided_by_on_parse_error() -> None:
    d = evaluate(Policy(), (unparseable('syntax error at or near "4111 1111"'),), session())
    assert d.action is Action.BLOCK
    assert d.rule_ids == ("defaults.on_parse_error",)
    assert d.reason == "dbguard: blocked by rule defaults.on_parse_error: the statement could not be analysed"
    assert d.hint == PARSE_ERROR_HINT
    assert d.details == {
        "rule": "defaults.on_parse_error",
        "action": "block",
        "statement": "other",
        "reason": "syntax_error_at_or_near_?",  # no data from the statement
    }


def test_explicit_rules_also_match_unparseable_and_the_strictest_wins() -> None:
    p = policy("""\
        defaults: {on_parse_error: hold}
        rules:
          - {id: no-garbage, when: {features: [unparseable]}, action: block}
        """)
    d = evaluate(p, (unparseable(),), session())
    assert d.action is Action.BLOCK
    assert d.rule_ids == ("no-garbage", "defaults.on_parse_error")
    assert d.details["rules"] == "no-garbage,defaults.on_parse_error"


def test_on_parse_error_allow_allows_but_names_the_implicit_rule() -> None:
    d = evaluate(policy("defaults: {on_parse_error: allow}\n"), (unparseable(),), session())
    assert d.action is Action.ALLOW
    assert d.rule_ids == ("defaults.on_parse_error",)


def test_nothing_matched_means_defaults_action() -> None:
    assert evaluate(Policy(), (stmt(K.SELECT),), session()) is ALLOW
    d = evaluate(policy("defaults: {action: block}\n"), (stmt(K.SELECT),), session())
    assert d.action is Action.BLOCK
    assert d.rule_ids == ("defaults.action",)
    assert d.reason == "dbguard: blocked by rule defaults.action: no rule matched this statement and " \
                       "defaults.action is block"


def test_allow_rules_matter_only_against_a_stricter_default() -> None:
    p = policy("""\
        defaults: {action: block}
        rules:
          - {id: reads, when: {statement: select}, action: allow}
        """)
    d = evaluate(p, (stmt(K.SELECT),), session())
    assert d.action is Action.ALLOW
    assert d.rule_ids == ("reads",)
    assert decide(p, stmt(K.INSERT)) is Action.BLOCK


def test_an_allow_rule_never_overrides_a_block() -> None:
    p = policy("""\
        rules:
          - {id: a-allow, when: {identity: copilot}, action: allow}
          - {id: b-block, when: {statement: drop}, action: block}
        """)
    d = evaluate(p, (stmt(K.DROP),), session())
    assert d.action is Action.BLOCK
    assert d.rule_ids == ("b-block", "a-allow")


def test_strictest_wins_block_over_hold_over_allow_and_ids_are_ordered() -> None:
    p = policy("""\
        rules:
          - {id: z-hold, when: {statement: delete}, action: hold}
          - {id: a-allow, when: {statement: delete}, action: allow}
          - {id: m-block, when: {statement: delete}, action: block}
          - {id: b-block, when: {statement: delete}, action: block}
          - {id: a-hold, when: {statement: delete}, action: hold}
        """)
    d = evaluate(p, (stmt(K.DELETE),), session())
    assert d.action is Action.BLOCK
    assert d.rule_ids == ("b-block", "m-block", "a-hold", "z-hold", "a-allow")
    assert d.details["rule"] == "b-block"


def test_rule_order_does_not_change_the_decision() -> None:
    rules = [
        "  - {id: r1, when: {statement: delete}, action: hold}",
        "  - {id: r2, when: {statement: delete, where: missing}, action: block}",
        "  - {id: r3, when: {identity_kind: agent}, action: allow}",
        "  - {id: r4, when: {tables: ['public.*']}, action: hold}",
    ]
    statements = (stmt(K.DELETE, writes=("public.t",), unfiltered=(K.DELETE,)),)
    first = evaluate(policy("rules:\n" + "\n".join(rules) + "\n"), statements, session())
    for seed in range(5):
        random.Random(seed).shuffle(rules)
        assert evaluate(policy("rules:\n" + "\n".join(rules) + "\n"), statements, session()) == first


def test_a_message_is_decided_by_its_strictest_statement() -> None:
    p = policy("""\
        rules:
          - {id: no-drop, when: {statement: drop}, action: block}
          - {id: hold-deletes, when: {statement: delete}, action: hold}
        """)
    d = evaluate(p, (stmt(K.SELECT), stmt(K.DELETE), stmt(K.DROP, writes=("public.t",))), session())
    assert d.action is Action.BLOCK
    assert d.rule_ids == ("no-drop", "hold-deletes")
    assert d.details == {
        "rule": "no-drop",
        "action": "block",
        "statement": "drop",
        "tables": "public.t",
        "rules": "no-drop,hold-deletes",
        "part": "3/3",
    }
    held = evaluate(p, (stmt(K.DELETE), stmt(K.SELECT)), session())
    assert held.action is Action.HOLD
    assert held.details["part"] == "1/2"


def test_an_unparseable_statement_blocks_the_whole_message() -> None:
    d = evaluate(Policy(), (stmt(K.SELECT), unparseable()), session())
    assert d.action is Action.BLOCK
    assert d.details["part"] == "2/2"


def test_empty_message_is_allowed() -> None:
    assert evaluate(Policy(), (), session()) is ALLOW


def test_barrier_follows_changes_parsing() -> None:
    assert evaluate(Policy(), (stmt(K.SET, changes_parsing=True),), session()).barrier
    assert not evaluate(Policy(), (stmt(K.SET),), session()).barrier


# ---------------------------------------------------------------------------------------------
# Observe-only


def test_observe_only_block_reports_would_block_without_enforcing() -> None:
    p = policy("rules:\n  - {id: watch-grants, when: {statement: grant}, action: block, enforce: false}\n")
    d = evaluate(p, (stmt(K.GRANT),), session())
    assert d.action is Action.BLOCK
    assert not d.enforced
    assert d.rule_ids == ()
    assert d.observed == ("watch-grants",)
    assert d.reason.startswith("dbguard: blocked by rule watch-grants: ")
    assert d.details["enforced"] == "false"


def test_observe_only_never_changes_an_enforced_action() -> None:
    p = policy("""\
        rules:
          - {id: hold-deletes, when: {statement: delete}, action: hold}
          - {id: new-block, when: {statement: delete}, action: block, enforce: false}
        """)
    d = evaluate(p, (stmt(K.DELETE),), session())
    assert (d.action, d.enforced) == (Action.HOLD, True)
    assert d.rule_ids == ("hold-deletes",)
    assert d.observed == ("new-block",)
    assert d.details["rules"] == "hold-deletes,new-block"


def test_observe_only_allow_does_not_lift_an_enforced_default() -> None:
    p = policy("""\
        defaults: {action: block}
        rules:
          - {id: new-allow, when: {statement: select}, action: allow, enforce: false}
        """)
    d = evaluate(p, (stmt(K.SELECT),), session())
    assert (d.action, d.enforced) == (Action.BLOCK, True)
    assert d.rule_ids == ("defaults.action",)
    assert d.observed == ("new-allow",)


def test_defaults_enforce_false_makes_everything_observe_only() -> None:
    p = policy("""\
        defaults: {enforce: false}
        rules:
          - {id: no-drop, when: {statement: drop}, action: block}
          - {id: hard, when: {statement: truncate}, action: block, enforce: true}
        """)
    d = evaluate(p, (stmt(K.DROP),), session())
    assert (d.action, d.enforced, d.observed) == (Action.BLOCK, False, ("no-drop",))
    d = evaluate(p, (unparseable(),), session())
    assert (d.action, d.enforced, d.observed) == (Action.BLOCK, False, ("defaults.on_parse_error",))
    d = evaluate(p, (stmt(K.TRUNCATE),), session())
    assert (d.action, d.enforced) == (Action.BLOCK, True)


def test_allowed_with_only_allow_rules_lists_them() -> None:
    p = policy("""\
        defaults: {action: hold}
        rules:
          - {id: b, when: {statement: select}, action: allow}
          - {id: a, when: {identity_kind: agent}, action: allow, enforce: false}
        """)
    d = evaluate(p, (stmt(K.SELECT),), session())
    assert (d.action, d.rule_ids, d.observed) == (Action.ALLOW, ("b",), ("a",))


# ---------------------------------------------------------------------------------------------
# What the client sees


def test_block_reason_details_and_generated_hints() -> None:
    p = policy("""\
        rules:
          - {id: no-drop, when: {statement: [drop, truncate]}, action: block}
          - {id: bounded, when: {statement: [delete, update], where: missing}, action: block}
          - {id: no-files, when: {features: [file_access], identity_kind: agent}, action: block}
          - {id: custom, when: {functions: [pg_sleep]}, action: block, description: no sleeping, hint: Do not wait.}
        """)
    d = evaluate(p, (stmt(K.DROP, writes=("public.users",)),), session())
    assert d.reason == "dbguard: blocked by rule no-drop: statement kinds drop or truncate are not allowed"
    assert format_details(d.details) == "rule=no-drop action=block statement=drop tables=public.users"
    assert d.hint == "This statement kind (drop) is not allowed for agents; ask a DBA to run it."
    d = evaluate(p, (stmt(K.DELETE, writes=("public.t",), unfiltered=(K.DELETE,)),), session())
    assert d.hint == WHERE_HINT
    d = evaluate(p, (stmt(K.COPY, features=(F.FILE_ACCESS,)),), session())
    assert d.reason == "dbguard: blocked by rule no-files: a statement using file_access by agents is not allowed"
    assert d.hint == "Statements using server-side file access are not allowed for agents; ask a DBA to run it."
    d = evaluate(p, (stmt(K.SELECT, functions=("pg_sleep",)),), session())
    assert (d.reason, d.hint) == ("dbguard: blocked by rule custom: no sleeping", "Do not wait.")


def test_hold_reason_details_and_hint() -> None:
    p = policy("""\
        rules:
          - id: agents-hold-writes
            description: agents' writes wait for a DBA
            when: {identity_kind: agent, statement: [delete, update]}
            unless: {tables: ["scratch.*"]}
            action: hold
            approvers: [dba, secops]
        """)
    d = evaluate(p, (stmt(K.DELETE, writes=("public.orders",)),), session())
    assert d.action is Action.HOLD
    assert d.reason == "dbguard: held by rule agents-hold-writes: agents' writes wait for a DBA"
    assert d.details == {
        "rule": "agents-hold-writes",
        "action": "hold",
        "statement": "delete",
        "tables": "public.orders",
        "approvers": "dba,secops",
    }
    assert d.hint == (
        "This statement needs approval by someone with role dba or secops before it runs. "
        "It is allowed when every table it touches matches scratch.*."
    )


def test_detail_values_never_contain_spaces() -> None:
    p = one_rule("{statement: delete}")
    tables = (*(f"public.t{i}" for i in range(20)), 'public."odd name, x"')
    d = evaluate(p, (stmt(K.DELETE, writes=tables), stmt(K.DELETE, writes=("public.x",))), session())
    for key, value in d.details.items():
        assert re.fullmatch(r"[a-z_]+", key)
        assert not re.search(r"\s", value), (key, value)
    assert d.details["tables"].endswith(",+5")
    assert 'public._odd_name_x_' in d.details["tables"].split(",")
    d = evaluate(Policy(), (unparseable("bad 'secret value' near\tthere"),), session())
    assert d.details["reason"] == "bad_?_near_there"
    assert "secret" not in format_details(d.details)


# ---------------------------------------------------------------------------------------------
# explain


def test_explain_names_the_key_that_decided() -> None:
    p = policy("""\
        rules:
          - {id: no-drop, when: {statement: [drop, truncate]}, action: block}
          - id: hold
            when: {identity_kind: agent, statement: delete}
            unless: {tables: ["scratch.*"]}
            action: hold
          - id: hold2
            when: {identity_kind: agent, statement: delete}
            unless: {tables: ["scratch.*"]}
            action: hold
        """)
    [trace] = explain(p, (stmt(K.DELETE, writes=("scratch.t",)),), session())
    by_id = {t.rule_id: t for t in trace.rules}
    assert not by_id["no-drop"].matched
    assert by_id["no-drop"].failed == "when.statement"
    assert "kinds are delete" in by_id["no-drop"].why
    assert not by_id["hold"].matched
    assert by_id["hold"].failed == "unless"
    assert [t.rule_id for t in trace.implicit] == ["defaults.action"]
    [trace] = explain(p, (stmt(K.DELETE, writes=("scratch.t", "public.u")),), session())
    hold = next(t for t in trace.rules if t.rule_id == "hold")
    assert hold.matched
    assert "unless.tables does not hold" in hold.why
    assert trace.implicit == ()
