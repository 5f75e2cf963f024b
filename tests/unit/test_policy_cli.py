# tests/unit/test_policy_cli.py — `dbguard check`, `dbguard rules test` and `dbguard rules lint`:
# output, --json, --explain, identities from the configuration, the built-in defaults, and exit
# statuses (0 ok, 1 refused / failed / lint errors, 2 usage or configuration). Run in-process
# with a stub analyser (the real ones are tested by their own case files), plus one subprocess run
# of the console entry point.
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from dbguard import sql as sql_package
from dbguard.cli import main
from dbguard.model import Feature, ParseSettings, StatementInfo, StatementKind
from dbguard.sql import unparseable

K = StatementKind

RULES = """\
defaults: {action: allow, on_parse_error: block}
rules:
  - id: no-drop
    description: nobody drops or truncates through the proxy
    when: {statement: [drop, truncate]}
    action: block
  - id: agents-hold-deletes
    when: {identity_kind: agent, statement: [delete]}
    unless: {tables: ["scratch.*"]}
    action: hold
    approvers: [dba]
tests:
  - {sql: "DROP TABLE public.users", expect: block, rules: [no-drop]}
  - {sql: "DELETE FROM public.orders WHERE id = 1", identity: copilot, expect: hold}
  - {sql: "DELETE FROM scratch.notes WHERE id = 1", identity_kind: agent, expect: allow}
  - {sql: "SELECT 1", expect: allow, rules: ["!no-drop"]}
"""

CONFIG = """\
listeners:
  - name: app-pg
    protocol: postgres
    listen: 127.0.0.1:0
    upstream: postgresql://svc:${DB_PASSWORD}@localhost:5432/app
identities:
  - {name: copilot, kind: agent, secret: "${COPILOT_SECRET}", roles: [readers]}
  - {name: alice, kind: human, secret: "${ALICE_SECRET}", roles: [dba]}
rules: rules.yaml
"""


def _info(text: str, *kinds: StatementKind, writes: tuple[str, ...] = (), reads: tuple[str, ...] = ()) -> StatementInfo:
    return StatementInfo(text=text, command=kinds[0].value.upper(), kinds=frozenset(kinds),
                         writes=frozenset(writes), reads=frozenset(reads), fingerprint="fp")


STUB = {
    "DROP TABLE public.users": (_info("DROP TABLE public.users", K.DROP, writes=("public.users",)),),
    "DELETE FROM public.orders WHERE id = 1": (
        _info("DELETE FROM public.orders WHERE id = 1", K.DELETE, writes=("public.orders",)),
    ),
    "DELETE FROM scratch.notes WHERE id = 1": (
        _info("DELETE FROM scratch.notes WHERE id = 1", K.DELETE, writes=("scratch.notes",)),
    ),
    "SELECT 1": (_info("SELECT 1", K.SELECT),),
    "SELECT 1; DROP TABLE public.users": (
        _info("SELECT 1", K.SELECT),
        _info("DROP TABLE public.users", K.DROP, writes=("public.users",)),
    ),
}


def stub_analyse(text: str, settings: ParseSettings) -> tuple[StatementInfo, ...]:
    text = text.strip()
    if text in STUB:
        return STUB[text]
    return (unparseable(text, "stub analyser: unknown text"),)


@pytest.fixture(autouse=True)
def _stub_analyser(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(sql_package, "analyse", stub_analyse)
    monkeypatch.delenv("DBGUARD_CONFIG", raising=False)
    monkeypatch.chdir(tmp_path)  # no ./dbguard.yaml unless a test writes one


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    (tmp_path / "rules.yaml").write_text(RULES)
    (tmp_path / "dbguard.yaml").write_text(CONFIG)
    return tmp_path


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


# ---------------------------------------------------------------------------------------------
# check


def test_check_allowed_exits_0_and_shows_the_analysis(workdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "check", "SELECT 1")
    assert code == 0
    assert "ALLOW" in out
    assert "anonymous agent with no roles (no --identity)" in out
    assert "rules.yaml (rules: of dbguard.yaml)" in out


def test_check_blocked_exits_1_with_rule_message_detail_and_hint(
    workdir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run(capsys, "check", "DROP TABLE public.users")
    assert code == 1
    assert "BLOCK" in out
    assert "dbguard: blocked by rule no-drop: nobody drops or truncates through the proxy" in out
    assert "rule=no-drop action=block statement=drop tables=public.users" in out
    assert "This statement kind (drop) is not allowed for agents" in out


def test_check_uses_the_configured_identity(workdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "check", "--identity", "copilot", "--json", "DELETE FROM public.orders WHERE id = 1")
    assert code == 1
    payload = json.loads(out)
    assert payload["identity"] == {"name": "copilot", "kind": "agent", "roles": ["readers"]}
    [result] = payload["results"]
    assert result["action"] == "hold"
    assert result["rule_ids"] == ["agents-hold-deletes"]
    assert result["details"]["approvers"] == "dba"
    assert result["statements"][0]["writes"] == ["public.orders"]
    code, out, _ = run(capsys, "check", "--identity", "alice", "--json", "DELETE FROM public.orders WHERE id = 1")
    assert code == 0
    assert json.loads(out)["results"][0]["action"] == "allow"


def test_check_several_arguments_and_stdin(
    workdir: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import io

    monkeypatch.setattr(sys, "stdin", io.StringIO("SELECT 1; DROP TABLE public.users\n"))
    code, out, _ = run(capsys, "check", "--json", "SELECT 1", "-")
    assert code == 1
    results = json.loads(out)["results"]
    assert [r["action"] for r in results] == ["allow", "block"]
    assert results[1]["details"]["part"] == "2/2"
    assert len(results[1]["statements"]) == 2


def test_check_explain_lists_every_rule_and_why(workdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "check", "--json", "--explain", "DELETE FROM scratch.notes WHERE id = 1")
    assert code == 0
    [result] = json.loads(out)["results"]
    rules = {r["rule"]: r for r in result["explain"][0]["rules"]}
    assert rules["no-drop"]["matched"] is False
    assert rules["no-drop"]["failed"] == "when.statement"
    assert rules["agents-hold-deletes"]["failed"] == "unless"
    assert rules["defaults.action"]["matched"] is True
    code, out, _ = run(capsys, "check", "--explain", "DELETE FROM scratch.notes WHERE id = 1")
    assert "unless exempts it" in out


def test_check_without_config_or_rules_uses_builtin_defaults(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "check", "SELECT 1")
    assert code == 0
    assert "built-in defaults (no configuration and no --rules)" in out
    code, out, _ = run(capsys, "check", "--json", "this is not SQL")
    assert code == 1
    result = json.loads(out)["results"][0]
    assert result["rule_ids"] == ["defaults.on_parse_error"]


def test_check_rules_option_overrides_the_config(workdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    other = workdir / "other.yaml"
    other.write_text("rules:\n  - {id: no-select, when: {statement: select}, action: block}\n")
    code, out, _ = run(capsys, "check", "--rules", str(other), "--json", "SELECT 1")
    assert code == 1
    assert json.loads(out)["results"][0]["rule_ids"] == ["no-select"]


def test_check_kind_and_role_describe_an_identity_offline(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    (tmp_path / "r.yaml").write_text(RULES)
    code, out, _ = run(capsys, "check", "--rules", "r.yaml", "--identity", "ci", "--kind", "service", "--json",
                       "DELETE FROM public.orders WHERE id = 1")
    assert code == 0
    assert json.loads(out)["identity"] == {"name": "ci", "kind": "service", "roles": []}


def test_check_usage_and_config_errors_exit_2(workdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "check", "--identity", "nobody", "SELECT 1")
    assert code == 2
    assert "unknown identity 'nobody'" in err
    assert "known: alice, copilot" in err
    code, _, err = run(capsys, "check", "--rules", "missing.yaml", "SELECT 1")
    assert code == 2
    (workdir / "rules.yaml").write_text("rules:\n  - id: x\n    when: {statement: [dropp]}\n    action: block\n")
    code, _, err = run(capsys, "check", "SELECT 1")
    assert code == 2
    assert "rules.yaml:3: rules[0].when.statement[0]: expected one of" in err
    code, _, err = run(capsys, "check", "-c", "nope.yaml", "SELECT 1")
    assert code == 2
    assert "nope.yaml: config file not found" in err
    with pytest.raises(SystemExit) as caught:
        main(["check", "--dialect", "oracle", "SELECT 1"])
    assert caught.value.code == 2


def test_check_reads_a_config_whose_secrets_are_not_in_the_environment(
    workdir: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("DB_PASSWORD", "COPILOT_SECRET", "ALICE_SECRET"):
        monkeypatch.delenv(name, raising=False)
    code, _, _ = run(capsys, "check", "--identity", "copilot", "SELECT 1")
    assert code == 0


# ---------------------------------------------------------------------------------------------
# rules test


def test_rules_test_passes_and_prints_a_table(workdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "rules", "test")
    assert code == 0, out
    assert "4 passed, 0 failed" in out
    assert "rules.yaml:13" in out  # each case's file:line


def test_rules_test_json_and_failures_exit_1(workdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (workdir / "rules.yaml").write_text(RULES + '  - {sql: "SELECT 1", expect: block}\n'
                                                '  - {sql: "SELECT 1", expect: allow, identity: ghost}\n')
    code, out, _ = run(capsys, "rules", "test", "--json")
    assert code == 1
    payload = json.loads(out)
    assert (payload["passed"], payload["failed"]) == (4, 2)
    failed = [c for c in payload["cases"] if not c["passed"]]
    assert failed[0]["location"].endswith("rules.yaml:17")
    assert failed[0]["problems"] == ["expected block, got allow (no rule)"]
    assert "identity 'ghost' is not in the configuration" in failed[1]["problems"][0]


def test_rules_test_with_an_explicit_path_and_no_config(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    (tmp_path / "r.yaml").write_text(RULES.replace("identity: copilot, ", "identity: copilot, identity_kind: agent, "))
    code, out, _ = run(capsys, "rules", "test", "r.yaml")
    assert code == 0, out
    code, _, err = run(capsys, "rules", "test")
    assert code == 2
    assert "no rules to use" in err


def test_rules_test_reports_rules_no_case_exercises(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    (tmp_path / "r.yaml").write_text(
        "rules:\n  - {id: lonely, when: {statement: merge}, action: block}\n"
        "tests:\n  - {sql: SELECT 1, expect: allow}\n"
    )
    code, out, _ = run(capsys, "rules", "test", "r.yaml", "--json")
    assert code == 0
    assert json.loads(out)["unexercised_rules"] == ["lonely"]


def test_rules_test_broken_file_exits_2(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    (tmp_path / "r.yaml").write_text("rules:\n  - id: x\n    when: {}\n    action: blok\n")
    code, _, err = run(capsys, "rules", "test", "r.yaml")
    assert code == 2
    assert "r.yaml:4: rules[0].action: expected one of allow, hold, block, got 'blok' (did you mean 'block'?)" in err


# ---------------------------------------------------------------------------------------------
# rules lint


def test_lint_clean_file_exits_0(workdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "rules", "lint")
    assert code == 0, out
    assert "2 rules" in out


def test_lint_error_exits_1_with_file_line_key(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    (tmp_path / "r.yaml").write_text("rules:\n  - id: x\n    when: {statment: drop}\n    action: block\n")
    code, out, _ = run(capsys, "rules", "lint", "r.yaml")
    assert code == 1
    assert "error: r.yaml:3: rules[0].when.statment: unknown key (did you mean 'statement'?)" in out


LINTY = """\
defaults: {on_parse_error: allow}
rules:
  - id: everything
    when: {}
    action: block
  - id: hold-nobody
    when: {statement: delete}
    action: hold
  - id: useless-allow
    when: {statement: select}
    action: allow
  - id: self-exempt
    when: {identity_kind: agent, statement: delete}
    unless: {identity_kind: [agent, human]}
    action: block
  - id: unqualified
    when: {statement: delete}
    unless:
      tables: [notes, Scratch.T]
    action: block
  - id: ghost-names
    when: {identity: ghost, roles: [wizards], listener: nowhere}
    action: hold
    approvers: [nobody-has-this]
  - id: garbage-with-tables
    when: {features: [unparseable], tables: [public.t]}
    action: block
  - id: where-missing-exempt
    when: {statement: delete}
    unless: {where: missing}
    action: block
"""


def test_lint_warnings_name_each_likely_mistake(workdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (workdir / "linty.yaml").write_text(LINTY)
    code, out, _ = run(capsys, "rules", "lint", "linty.yaml", "--json")
    assert code == 0  # warnings only
    payload = json.loads(out)
    texts = [w["text"] for w in payload["warnings"]]
    expected = [
        "linty.yaml:1: defaults.on_parse_error: allow lets through every statement",
        "linty.yaml: no tests: cases",
        "linty.yaml:4: rules[0].when: when: {} matches every statement",
        "linty.yaml:8: rules[1].action: hold without approvers",
        "linty.yaml:11: rules[2].action: an allow rule has no effect while defaults.action is allow",
        "linty.yaml:14: rules[3].unless: unless holds for every statement the when matches",
        "linty.yaml:19: rules[4].unless.tables[0]: 'notes' has no schema",
        "linty.yaml:19: rules[4].unless.tables[1]: 'Scratch.T' has upper-case letters",
        "linty.yaml:22: rules[5].when.identity: no identity named 'ghost' in the configuration",
        "linty.yaml:22: rules[5].when.roles[0]: no role named 'wizards' in the configuration",
        "linty.yaml:22: rules[5].when.listener: no listener named 'nowhere' in the configuration",
        "linty.yaml:24: rules[5].approvers[0]: no identity in the configuration has role 'nobody-has-this'",
        "linty.yaml:26: rules[6].when.features: an unparseable statement has no tables",
        "linty.yaml:30: rules[7].unless.where: unless where: missing exempts statements WITHOUT a WHERE",
    ]
    for text in expected:
        assert any(t.startswith(text) for t in texts), (text, texts)
    assert len(texts) == len(expected), texts
    code, _, _ = run(capsys, "rules", "lint", "linty.yaml", "--strict")
    assert code == 1


def test_lint_missing_path_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "rules", "lint", "nope/")
    assert code == 2
    assert "rule file or folder not found" in err


def test_console_entry_point_runs_lint(tmp_path: Path) -> None:
    (tmp_path / "r.yaml").write_text(textwrap.dedent(RULES))
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    env.pop("DBGUARD_CONFIG", None)
    result = subprocess.run(
        [sys.executable, "-m", "dbguard", "rules", "lint", "r.yaml", "--json"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60, check=False,
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["ok"] is True


def test_help_lists_the_policy_commands(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    assert "check" in out
    assert "rules" in out


_ = Feature  # keep the vocabulary import obvious for readers extending the stub
