# tests/unit/test_policy_rules.py — rule files: loading a file or a folder, the model they give,
# and one test per format error, each asserting the exact `file:line: key` of the message (and the
# did-you-mean where there is one). Pure: files only under pytest's tmp_path.
from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from dbguard.config import ConfigError, load_config
from dbguard.model import Action, Feature, IdentityKind, StatementKind
from dbguard.policy.conditions import Mode, Where
from dbguard.policy.rules import (
    BUILTIN_POLICY,
    Detector,
    Dialect,
    MaskStrategy,
    Policy,
    load_policy,
    parse_policy_text,
)

PRODUCT_EXAMPLE = """\
defaults: {action: allow, on_parse_error: block}   # optional; these are the defaults
rules:
  - id: no-drop
    description: nobody drops or truncates through the proxy
    when: {statement: [drop, truncate]}
    action: block
  - id: agents-hold-writes
    when: {identity_kind: agent, statement: [delete, update, alter]}
    unless: {tables: ["scratch.*"]}
    action: hold
    approvers: [dba]               # roles that may approve; never the identity that asked
  - id: no-unbounded-writes
    when: {statement: [delete, update], where: missing}
    action: block
masks:
  - id: pii-columns
    columns: [users.email, customers.phone, "*.ssn"]
    strategy: partial              # full | partial | hash | null | email
    unless: {roles: [dba]}
  - id: pii-content
    detect: [email, credit_card, us_ssn]
    strategy: full
tests:
  - {sql: "DROP TABLE users", expect: block}
  - {sql: "DELETE FROM orders WHERE id = 1", identity: copilot, expect: hold}
  - {sql: "SELECT email FROM users", identity: copilot, expect: allow, masked: [email]}
"""


def parse(text: str) -> Policy:
    return parse_policy_text(textwrap.dedent(text), Path("rules.yaml"))


def error_of(text: str) -> str:
    with pytest.raises(ConfigError) as caught:
        parse(text)
    return str(caught.value)


# ---------------------------------------------------------------------------------------------
# The model


def test_the_product_example_loads_into_the_model() -> None:
    policy = parse(PRODUCT_EXAMPLE)
    assert policy.defaults.action is Action.ALLOW
    assert policy.defaults.on_parse_error is Action.BLOCK
    assert policy.rule_ids == ("no-drop", "agents-hold-writes", "no-unbounded-writes")
    hold = policy.rules[1]
    assert hold.action is Action.HOLD
    assert hold.approvers == ("dba",)
    assert hold.when.mode is Mode.WHEN
    assert hold.when.identity_kind == frozenset({IdentityKind.AGENT})
    assert hold.when.statement == frozenset({StatementKind.DELETE, StatementKind.UPDATE, StatementKind.ALTER})
    assert hold.unless is not None
    assert hold.unless.mode is Mode.UNLESS
    assert hold.unless.tables == ("scratch.*",)
    assert str(hold.location) == "rules.yaml:7"
    assert hold.line_of("unless.tables[0]") == 9
    assert policy.rules[2].when.where is Where.MISSING
    mask = policy.masks[0]
    assert mask.columns == ("users.email", "customers.phone", "*.ssn")
    assert mask.strategy is MaskStrategy.PARTIAL
    assert policy.masks[1].detect == (Detector.EMAIL, Detector.CREDIT_CARD, Detector.US_SSN)
    assert [t.expect for t in policy.tests] == [Action.BLOCK, Action.HOLD, Action.ALLOW]
    assert policy.tests[2].masked == ("email",)
    assert policy.tests[1].identity == "copilot"
    assert policy.tests[0].dialect is Dialect.POSTGRES
    assert str(policy.tests[1].location) == "rules.yaml:25"


def test_scalars_stand_for_one_element_lists_and_names_fold_case() -> None:
    policy = parse("""\
        rules:
          - id: r1
            when: {statement: DELETE, features: File_Access, identity_kind: Agent}
            action: BLOCK
        """)
    rule = policy.rules[0]
    assert rule.when.statement == frozenset({StatementKind.DELETE})
    assert rule.when.features == frozenset({Feature.FILE_ACCESS})
    assert rule.action is Action.BLOCK


def test_defaults_enforce_applies_to_rules_without_their_own() -> None:
    policy = parse("""\
        defaults: {enforce: false}
        rules:
          - {id: a, when: {statement: drop}, action: block}
          - {id: b, when: {statement: drop}, action: block, enforce: true}
        """)
    assert [r.enforce for r in policy.rules] == [False, True]


def test_empty_file_and_empty_when_are_allowed() -> None:
    assert parse("# nothing yet\n").rules == ()
    policy = parse("rules:\n  - {id: everything, when: {}, unless: {statement: select}, action: block}\n")
    assert policy.rules[0].when.empty


def test_a_folder_is_read_in_name_order_and_not_recursively(tmp_path: Path) -> None:
    (tmp_path / "20-b.yaml").write_text("rules:\n  - {id: b, when: {statement: drop}, action: block}\n")
    (tmp_path / "10-a.yaml").write_text("defaults: {action: hold}\nrules:\n  - {id: a, when: {}, action: allow}\n")
    (tmp_path / "notes.txt").write_text("not rules")
    (tmp_path / "packs").mkdir()
    (tmp_path / "packs" / "x.yaml").write_text("rules: [{id: packed, when: {}, action: block}]\n")
    policy = load_policy(tmp_path)
    assert policy.rule_ids == ("a", "b")
    assert policy.defaults.action is Action.HOLD
    assert [p.name for p in policy.files] == ["10-a.yaml", "20-b.yaml"]
    assert policy.source == tmp_path


def test_builtin_policy_allows_and_blocks_unparseable() -> None:
    assert BUILTIN_POLICY.rules == ()
    assert BUILTIN_POLICY.defaults.action is Action.ALLOW
    assert BUILTIN_POLICY.defaults.on_parse_error is Action.BLOCK
    assert Policy.builtin() is BUILTIN_POLICY


def test_rule_files_do_not_expand_environment_variables() -> None:
    policy = parse("""\
        tests:
          - {sql: "SELECT '${HOME}', $1, $$x$$", expect: allow}
        """)
    assert policy.tests[0].sql == "SELECT '${HOME}', $1, $$x$$"


def test_config_still_loads_after_sharing_its_reader(tmp_path: Path) -> None:
    (tmp_path / "rules").mkdir()
    cfg = tmp_path / "dbguard.yaml"
    cfg.write_text(
        "listeners:\n  - {name: a, protocol: postgres, listen: 127.0.0.1:0, upstream: 'postgresql://u@h/db'}\n"
        "identities:\n  - {name: c, kind: agent, secret: '${NOT_SET_ANYWHERE_X}'}\nrules: rules/\n"
    )
    with pytest.raises(ConfigError, match="environment variable NOT_SET_ANYWHERE_X is not set"):
        load_config(cfg, env={})
    config = load_config(cfg, env={}, unset_env="placeholder")
    assert config.identities[0].secret.reveal() == "placeholder"


# ---------------------------------------------------------------------------------------------
# Format errors: each names file:line: key


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param("rules: {}\n", "rules.yaml:1: rules: expected a list, got a mapping", id="rules-not-list"),
        pytest.param("- a\n", "rules.yaml:1: expected a mapping, got a list", id="top-not-mapping"),
        pytest.param("rule:\n  - {}\n", "rules.yaml:1: rule: unknown key (did you mean 'rules'?)", id="top-unknown"),
        pytest.param(
            "rules:\n  - {when: {}, action: block}\n", "rules.yaml:2: rules[0].id: required key is missing",
            id="id-missing",
        ),
        pytest.param(
            "rules:\n  - {id: No_Drop, when: {}, action: block}\n",
            "rules.yaml:2: rules[0].id: expected an id of lower-case letters",
            id="id-format",
        ),
        pytest.param(
            "rules:\n  - {id: defaults.action, when: {}, action: block}\n",
            "rules.yaml:2: rules[0].id: ids starting with 'defaults.' are reserved",
            id="id-reserved",
        ),
        pytest.param(
            "rules:\n  - {id: x, action: block}\n", "rules.yaml:2: rules[0].when: required key is missing",
            id="when-missing",
        ),
        pytest.param(
            "rules:\n  - {id: x, when: {}}\n", "rules.yaml:2: rules[0].action: required key is missing",
            id="action-missing",
        ),
        pytest.param(
            "rules:\n  - id: x\n    when: {}\n    action: blok\n",
            "rules.yaml:4: rules[0].action: expected one of allow, hold, block, got 'blok' (did you mean 'block'?)",
            id="action-unknown",
        ),
        pytest.param(
            "rules:\n  - id: x\n    when: {}\n    action: block\n    enforced: false\n",
            "rules.yaml:5: rules[0].enforced: unknown key (did you mean 'enforce'?)",
            id="rule-key-unknown",
        ),
        pytest.param(
            "rules:\n  - id: x\n    when:\n      statment: drop\n    action: block\n",
            "rules.yaml:4: rules[0].when.statment: unknown key (did you mean 'statement'?)",
            id="when-key-unknown",
        ),
        pytest.param(
            "rules:\n  - id: x\n    when:\n      statement:\n        - drop\n        - dorp\n    action: block\n",
            "rules.yaml:6: rules[0].when.statement[1]: expected one of select, insert",
            id="kind-unknown",
        ),
        pytest.param(
            "rules:\n  - id: x\n    when: {features: [file_acess]}\n    action: block\n",
            "(did you mean 'file_access'?)",
            id="feature-unknown",
        ),
        pytest.param(
            "rules:\n  - id: x\n    when: {where: absent}\n    action: block\n",
            "rules.yaml:3: rules[0].when.where: expected one of missing, present, got 'absent'",
            id="where-unknown",
        ),
        pytest.param(
            "rules:\n  - id: x\n    when: {identity_kind: robot}\n    action: block\n",
            "rules.yaml:3: rules[0].when.identity_kind: expected one of agent, human, service, got 'robot'",
            id="identity-kind-unknown",
        ),
        pytest.param(
            "rules:\n  - id: x\n    when: {statement: [insert], where: missing}\n    action: block\n",
            "rules.yaml:3: rules[0].when.where: where applies to select, update and delete only",
            id="where-never-holds",
        ),
        pytest.param(
            "rules:\n  - id: x\n    when: {tables: []}\n    action: block\n",
            "rules.yaml:3: rules[0].when.tables: must list at least one value",
            id="empty-list",
        ),
        pytest.param(
            "rules:\n  - id: x\n    when: {tables: ~}\n    action: block\n",
            "rules.yaml:3: rules[0].when.tables: has no value",
            id="null-value",
        ),
        pytest.param(
            "rules:\n  - id: x\n    when: {tables: [app.public.users]}\n    action: block\n",
            "rules.yaml:3: rules[0].when.tables[0]: expected a glob over schema.table (at most one '.')",
            id="table-glob-three-parts",
        ),
        pytest.param(
            "rules:\n  - id: x\n    when: {functions: ['pg read file']}\n    action: block\n",
            "rules.yaml:3: rules[0].when.functions[0]: expected globs over [schema.]function",
            id="function-glob-space",
        ),
        pytest.param(
            "rules:\n  - id: x\n    when: {statement: {drop: true}}\n    action: block\n",
            "rules.yaml:3: rules[0].when.statement: expected a string, got a mapping",
            id="kind-not-scalar",
        ),
        pytest.param(
            "rules:\n  - id: x\n    when: {}\n    unless: {}\n    action: block\n",
            "rules.yaml:4: rules[0].unless: an empty unless exempts every statement",
            id="unless-empty",
        ),
        pytest.param(
            "rules:\n  - id: x\n    when: {}\n    action: block\n    approvers: [dba]\n",
            "rules.yaml:5: rules[0].approvers: approvers apply to action hold only (this rule's is block)",
            id="approvers-without-hold",
        ),
        pytest.param(
            "rules:\n  - id: x\n    when: {}\n    action: block\n    enforce: maybe\n",
            "rules.yaml:5: rules[0].enforce: expected true or false, got 'maybe'",
            id="enforce-not-bool",
        ),
        pytest.param(
            "rules:\n  - {id: x, when: {}, action: block}\n  - {id: x, when: {}, action: hold}\n",
            "rules.yaml:3: rules[1].id: duplicate id 'x' (first defined at rules.yaml:2)",
            id="duplicate-id",
        ),
        pytest.param(
            "defaults: {action: deny}\n",
            "rules.yaml:1: defaults.action: expected one of allow, hold, block, got 'deny'",
            id="defaults-action",
        ),
        pytest.param(
            "defaults: {on_parse_error: allw}\n",
            "rules.yaml:1: defaults.on_parse_error: expected one of allow, hold, block, got 'allw' "
            "(did you mean 'allow'?)",
            id="defaults-parse-error",
        ),
        pytest.param(
            "defaults: {action: allow, enforce: yes please}\n",
            "rules.yaml:1: defaults.enforce: expected true or false",
            id="defaults-enforce",
        ),
        pytest.param(
            "defaults: {strict: true}\n",
            "rules.yaml:1: defaults.strict: unknown key (expected one of: action, on_parse_error, enforce)",
            id="defaults-key",
        ),
        pytest.param(
            "masks:\n  - {id: m, strategy: full}\n",
            "rules.yaml:2: masks[0]: a mask needs columns, detect, or both",
            id="mask-nothing",
        ),
        pytest.param(
            "masks:\n  - {id: m, columns: [email]}\n",
            "rules.yaml:2: masks[0].columns[0]: expected a glob over [schema.]table.column, got 'email' "
            "(for a column of any table, write '*.email')",
            id="mask-column-one-part",
        ),
        pytest.param(
            "masks:\n  - id: m\n    detect: [email, pasport]\n",
            "rules.yaml:3: masks[0].detect[1]: expected one of email, credit_card, us_ssn, phone, iban, secret, "
            "got 'pasport'",
            id="mask-detector",
        ),
        pytest.param(
            "masks:\n  - id: m\n    columns: [a.b]\n    strategy: redact\n",
            "rules.yaml:4: masks[0].strategy: expected one of full, partial, hash, null, email, got 'redact'",
            id="mask-strategy",
        ),
        pytest.param(
            "masks:\n  - id: m\n    columns: [a.b]\n    unless: {tables: [x.y]}\n",
            "rules.yaml:4: masks[0].unless.tables: unknown key (expected one of: identity, identity_kind, roles)",
            id="mask-unless-key",
        ),
        pytest.param(
            "rules:\n  - {id: m, when: {}, action: block}\nmasks:\n  - {id: m, columns: [a.b]}\n",
            "rules.yaml:4: masks[0].id: duplicate id 'm' (first defined at rules.yaml:2)",
            id="mask-rule-same-id",
        ),
        pytest.param(
            "tests:\n  - {expect: block}\n", "rules.yaml:2: tests[0].sql: required key is missing",
            id="test-sql-missing",
        ),
        pytest.param(
            "tests:\n  - {sql: DROP TABLE t, expect: blocked}\n",
            "rules.yaml:2: tests[0].expect: expected one of allow, hold, block, got 'blocked' (did you mean 'block'?)",
            id="test-expect",
        ),
        pytest.param(
            "tests:\n  - {sql: SELECT 1, expect: allow, dialect: mariadb}\n",
            "rules.yaml:2: tests[0].dialect: expected one of postgres, mysql, got 'mariadb'",
            id="test-dialect",
        ),
        pytest.param(
            "tests:\n  - {sql: SELECT 1, expect: allow, identity: 'co*'}\n",
            "rules.yaml:2: tests[0].identity: a test names one identity, not a glob",
            id="test-identity-glob",
        ),
        pytest.param(
            "tests:\n  - {sql: SELECT 1, expect: allow, masked: ['e mail']}\n",
            "rules.yaml:2: tests[0].masked[0]: expected column names ([[schema.]table.]column), got 'e mail'",
            id="test-masked-syntax",
        ),
        pytest.param(
            "rules:\n  - {id: no-drop, when: {}, action: block}\ntests:\n  - sql: SELECT 1\n    expect: allow\n"
            "    rules: [no-drop, no-dorp]\n",
            "rules.yaml:6: tests[0].rules[1]: unknown rule id 'no-dorp' (did you mean 'no-drop'?)",
            id="test-unknown-rule",
        ),
        pytest.param(
            "tests:\n  - {sql: SELECT 1, expect: allow, sql_text: x}\n",
            "rules.yaml:2: tests[0].sql_text: unknown key",
            id="test-key",
        ),
        pytest.param(
            "rules:\n  - id: x\n    when: {statement: drop}\n    when: {statement: truncate}\n    action: block\n",
            "rules.yaml:4: rules[0].when: duplicate key (first defined on line 3)",
            id="duplicate-key",
        ),
        pytest.param("rules: [\n", "rules.yaml:2: invalid YAML", id="yaml-syntax"),
    ],
)
def test_format_errors_name_file_line_and_key(text: str, expected: str) -> None:
    assert expected in error_of(text)


def test_defaults_in_two_files_is_an_error_naming_both(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text("defaults: {action: allow}\n")
    (tmp_path / "b.yaml").write_text("# second\ndefaults: {action: block}\n")
    with pytest.raises(ConfigError) as caught:
        load_policy(tmp_path)
    assert str(caught.value) == (
        f"{tmp_path / 'b.yaml'}:2: defaults: defaults may be given in one file only "
        f"(already given at {tmp_path / 'a.yaml'}:1)"
    )


def test_duplicate_ids_across_files_name_both_places(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text("rules:\n  - {id: no-drop, when: {statement: drop}, action: block}\n")
    (tmp_path / "b.yaml").write_text("rules:\n  - {id: other, when: {}, action: hold}\n"
                                     "  - {id: no-drop, when: {}, action: hold}\n")
    with pytest.raises(ConfigError) as caught:
        load_policy(tmp_path)
    assert str(caught.value) == (
        f"{tmp_path / 'b.yaml'}:3: rules[1].id: duplicate id 'no-drop' (first defined at {tmp_path / 'a.yaml'}:2)"
    )


def test_tests_may_name_rules_of_other_files(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text("rules:\n  - {id: no-drop, when: {statement: drop}, action: block}\n")
    (tmp_path / "b.yaml").write_text("tests:\n  - {sql: DROP TABLE t, expect: block, rules: [no-drop, '!x']}\n"
                                     "rules:\n  - {id: x, when: {statement: select}, action: block}\n")
    assert load_policy(tmp_path).tests[0].rules == ("no-drop", "!x")


def test_missing_path_and_empty_folder_are_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="rule file or folder not found"):
        load_policy(tmp_path / "nope")
    with pytest.raises(ConfigError, match=r"no \*.yaml rule files in this folder"):
        load_policy(tmp_path)


def test_a_bad_file_in_a_folder_is_named(tmp_path: Path) -> None:
    (tmp_path / "00-ok.yaml").write_text("rules: []\n")
    (tmp_path / "10-bad.yaml").write_text("rules:\n  - id: x\n    when: {statement: [dropp]}\n    action: block\n")
    with pytest.raises(ConfigError) as caught:
        load_policy(tmp_path)
    assert str(caught.value).startswith(f"{tmp_path / '10-bad.yaml'}:3: rules[0].when.statement[0]: ")
    assert "(did you mean 'drop'?)" in str(caught.value)


def test_not_utf8_names_the_line(tmp_path: Path) -> None:
    (tmp_path / "r.yaml").write_bytes(b"rules: []\n# caf\xe9\n")
    with pytest.raises(ConfigError) as caught:
        load_policy(tmp_path / "r.yaml")
    assert str(caught.value) == f"{tmp_path / 'r.yaml'}:2: not valid UTF-8"


def test_mask_strategy_null_is_the_null_strategy_not_a_missing_value() -> None:
    policy = parse("masks:\n  - {id: a, columns: [t.c], strategy: null}\n  - {id: b, columns: [t.c]}\n")
    assert [m.strategy for m in policy.masks] == [MaskStrategy.NULL, MaskStrategy.FULL]
    assert error_of("masks:\n  - id: a\n    columns: [t.c]\n    strategy:\n") == (
        "rules.yaml:4: masks[0].strategy: has no value (remove the key, or give one)"
    )


def test_yaml_anchors_and_merge_keys_work_in_rule_files() -> None:
    policy = parse("""\
        rules:
          - id: a
            when: &writes {statement: [delete, update]}
            action: hold
            approvers: [dba]
          - id: b
            when: {<<: *writes, where: missing}
            action: block
        """)
    assert policy.rules[1].when.statement == frozenset({StatementKind.DELETE, StatementKind.UPDATE})
    assert policy.rules[1].when.where is Where.MISSING
