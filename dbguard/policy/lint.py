"""`dbguard rules lint`: likely mistakes in rule files that load without error.

Owns: the static checks (no analyser, no database) and their findings, each naming file, line
and key like a load error. A file that does not load is one `error` finding; everything else is
a `warning` (a rule that matches everything or nothing, an `unless` that exempts everything the
`when` matches, a hold nobody is named to approve, an exemption by a table name without a
schema...). With the configuration, names are also checked against its identities, roles and
listeners. Must not: change the policy, or fail for what is only suspicious.
"""

from __future__ import annotations

import enum
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from dbguard.model import Action, Feature, StatementKind
from dbguard.policy.conditions import IDENTITY_KEYS, Condition, Where
from dbguard.policy.rules import Policy, Rule, load_policy
from dbguard.yamlfile import ConfigError

__all__ = ["Finding", "KnownNames", "LintReport", "Severity", "lint_path", "lint_policy"]

_GLOB_CHARS = frozenset("*?[")


class Severity(enum.StrEnum):
    ERROR = "error"
    WARNING = "warning"


@dataclass(frozen=True)
class Finding:
    severity: Severity
    path: Path
    line: int | None
    key: str | None
    message: str

    def __str__(self) -> str:
        where = f"{self.path}:{self.line}" if self.line is not None else str(self.path)
        return f"{where}: {self.key}: {self.message}" if self.key else f"{where}: {self.message}"


@dataclass(frozen=True)
class KnownNames:
    """Names from the configuration that rules may refer to."""

    identities: frozenset[str] = frozenset()
    roles: frozenset[str] = frozenset()
    listeners: frozenset[str] = frozenset()


@dataclass(frozen=True)
class LintReport:
    policy: Policy | None
    findings: tuple[Finding, ...]

    @property
    def errors(self) -> tuple[Finding, ...]:
        return tuple(f for f in self.findings if f.severity is Severity.ERROR)

    @property
    def warnings(self) -> tuple[Finding, ...]:
        return tuple(f for f in self.findings if f.severity is Severity.WARNING)


def lint_path(path: Path, known: KnownNames | None = None) -> LintReport:
    """Load `path` and lint it; a load error is the report's only finding."""
    try:
        policy = load_policy(path)
    except ConfigError as exc:
        return LintReport(None, (Finding(Severity.ERROR, exc.path, exc.line, exc.key, exc.message),))
    return LintReport(policy, tuple(lint_policy(policy, known)))


def lint_policy(policy: Policy, known: KnownNames | None = None) -> Iterator[Finding]:
    defaults = policy.defaults
    where = defaults.location
    if where is not None:
        if defaults.on_parse_error is Action.ALLOW:
            yield _at(where.path, where.line, "defaults.on_parse_error",
                      "allow lets through every statement dbguard cannot analyse (the proxy fails open)")
        if not defaults.enforce:
            yield _at(where.path, where.line, "defaults.enforce",
                      "false makes every rule without enforce: true observe-only (nothing is refused)")
    if not policy.tests and policy.source is not None:
        yield _at(policy.source, None, None, "no tests: cases; `dbguard rules test` has nothing to run")
    for rule in policy.rules:
        yield from _lint_rule(rule, policy, known)
    if known is not None:
        yield from _lint_names(policy, known)


def _at(path: Path, line: int | None, key: str | None, message: str) -> Finding:
    return Finding(Severity.WARNING, path, line, key, message)


def _rule_finding(rule: Rule, sub: str, message: str) -> Finding:
    assert rule.location is not None
    key = f"{rule.location.key}.{sub}" if sub else rule.location.key
    return _at(rule.location.path, rule.line_of(sub), key, message)


def _item_key(rule: Rule, sub: str, index: int) -> str:
    """`when.tables[1]` when the value was a list, `when.tables` when it was one scalar."""
    assert rule.location is not None
    indexed = f"{sub}[{index}]"
    return indexed if f"{rule.location.key}.{indexed}" in rule.lines else sub


def _lint_rule(rule: Rule, policy: Policy, known: KnownNames | None) -> Iterator[Finding]:
    when, unless = rule.when, rule.unless
    if when.empty and unless is None:
        yield _rule_finding(rule, "when", f"when: {{}} matches every statement, and there is no unless: "
                                          f"this rule {rule.action}s everything")
    if rule.action is Action.HOLD and not rule.approvers:
        yield _rule_finding(rule, "action", "hold without approvers: no role is named to approve these statements")
    if rule.action is Action.ALLOW and policy.defaults.action is Action.ALLOW:
        yield _rule_finding(rule, "action", "an allow rule has no effect while defaults.action is allow "
                                            "(allow never overrides a block or hold; use unless to exempt)")
    if Feature.UNPARSEABLE in when.features:
        facts = [k for k in ("tables", "reads", "writes", "functions", "where") if getattr(when, k)]
        if when.statement and StatementKind.OTHER not in when.statement:
            facts.append("statement")
        if facts:
            yield _rule_finding(rule, "when.features", f"an unparseable statement has no {', '.join(facts)}: "
                                                       "this rule is unlikely ever to match")
    if unless is not None:
        if _unless_covers_when(when, unless):
            yield _rule_finding(rule, "unless", "unless holds for every statement the when matches: "
                                                "this rule can never apply")
        if unless.where is Where.MISSING:
            yield _rule_finding(rule, "unless.where", "unless where: missing exempts statements WITHOUT a WHERE "
                                                      "clause; did you mean present?")
        for key in ("tables", "reads", "writes"):
            for i, glob in enumerate(getattr(unless, key)):
                sub = _item_key(rule, f"unless.{key}", i)
                if "." not in glob and not (_GLOB_CHARS & set(glob)):
                    yield _rule_finding(rule, sub, f"{glob!r} has no schema: it exempts a table of that name in "
                                                   f"every schema; write schema.{glob} (or *.{glob} to mean it)")
                if glob != glob.lower():
                    yield _rule_finding(rule, sub, f"{glob!r} has upper-case letters: in unless, table globs "
                                                   "compare case exactly, and unquoted names are lower case")


def _unless_covers_when(when: Condition, unless: Condition) -> bool:
    """True when `unless` only names identity facts, each implied by the same key of `when`."""
    keys = unless.keys
    if not keys or any(k not in IDENTITY_KEYS for k in keys):
        return False
    for key in keys:
        if key == "identity_kind":
            if not when.identity_kind or not when.identity_kind <= unless.identity_kind:
                return False
            continue
        wanted: Sequence[str] = getattr(when, key)
        exempt: Sequence[str] = getattr(unless, key)
        if not wanted or not ("*" in exempt or set(wanted) <= set(exempt)):
            return False
    return True


def _lint_names(policy: Policy, known: KnownNames) -> Iterator[Finding]:
    for rule in policy.rules:
        for part, cond in (("when", rule.when), ("unless", rule.unless)):
            if cond is None:
                continue
            for key, names, what in (
                ("identity", known.identities, "identity"),
                ("roles", known.roles, "role"),
                ("listener", known.listeners, "listener"),
            ):
                for i, name in enumerate(getattr(cond, key)):
                    if _GLOB_CHARS & set(name) or name in names:
                        continue
                    sub = _item_key(rule, f"{part}.{key}", i)
                    yield _rule_finding(rule, sub, f"no {what} named {name!r} in the configuration")
        for i, role in enumerate(rule.approvers):
            if role not in known.roles:
                yield _rule_finding(rule, _item_key(rule, "approvers", i),
                                    f"no identity in the configuration has role {role!r}: nobody can approve")
    for test in policy.tests:
        if test.identity and test.identity not in known.identities and test.identity_kind is None and test.location:
            yield _at(test.location.path, test.location.line, f"{test.location.key}.identity",
                      f"no identity named {test.identity!r} in the configuration")
