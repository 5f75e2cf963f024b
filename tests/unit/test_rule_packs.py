# tests/unit/test_rule_packs.py — the sample policy packs in rules/: rules/ loads as one coherent
# policy, every pack in rules/packs/ loads alone, every `tests:` case of each passes with the real
# PostgreSQL analyser, every rule is exercised by some case, and lint has nothing to say.
from __future__ import annotations

from pathlib import Path

import pytest

from dbguard.policy.lint import lint_path
from dbguard.policy.rule_tests import run_tests, unexercised_rules
from dbguard.policy.rules import load_policy

REPO = Path(__file__).resolve().parents[2]
RULES = REPO / "rules"
PACKS = sorted((RULES / "packs").glob("*.yaml"))


def _pack_id(path: Path) -> str:
    return str(path.relative_to(REPO))


@pytest.mark.parametrize("path", [RULES, *PACKS], ids=_pack_id)
def test_every_case_of_the_pack_passes(path: Path) -> None:
    policy = load_policy(path)
    assert policy.tests, f"{path} has no tests"
    results = run_tests(policy)
    failures = [f"{r.location}: {r.case.sql!r}: {'; '.join(r.problems)}" for r in results if not r.passed]
    assert not failures, "\n".join(failures)


@pytest.mark.parametrize("path", [RULES, *PACKS], ids=_pack_id)
def test_every_rule_of_the_pack_is_exercised(path: Path) -> None:
    policy = load_policy(path)
    assert unexercised_rules(policy, run_tests(policy)) == ()


@pytest.mark.parametrize("path", [RULES, *PACKS], ids=_pack_id)
def test_lint_is_clean(path: Path) -> None:
    report = lint_path(path)
    assert [str(f) for f in report.findings] == []


def test_every_rule_of_rules_has_an_allowed_and_a_refused_case() -> None:
    policy = load_policy(RULES)
    results = run_tests(policy)
    for rule in policy.rules:
        refused = [r for r in results if rule.id in r.matched and r.got is not None and r.got.value != "allow"]
        assert refused, f"no refused case for {rule.id}"
    assert any(r.got is not None and r.got.value == "allow" for r in results)


def test_rules_folder_is_one_policy_and_packs_are_not_read_with_it() -> None:
    policy = load_policy(RULES)
    assert [p.name for p in policy.files] == sorted(p.name for p in RULES.glob("*.yaml"))
    assert not any(r.id.startswith("read-only.") for r in policy.rules)
    assert policy.defaults.on_parse_error.value == "block"
    assert policy.masks, "the demo's PII masks"
