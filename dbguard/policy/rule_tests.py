"""Runs the `tests:` cases of rule files: each case's SQL through the analyser and the engine.

Owns: who a case runs as (inline `identity_kind`/`roles`, else the configuration's identity,
else an anonymous agent), the session a case runs in, comparing the decision with `expect`,
the expected `rules` (`id` must match, `!id` must not), the by-name check of `masked`, and which
rules no case exercised. Results are structured (`CaseResult`) for the CLI's table and JSON.
Must not: print, read files, or know about the command line.

What `masked` checks today (masking itself is not built yet): for each listed name, that a
mask rule whose `unless` does not exempt the case's identity has a `columns` glob matching that
column of a table the statement reads (`email` is looked up in every table read; `users.email`
in the tables named `users`; `public.users.email` as written). A name no `columns` glob covers
passes only when a content-detector mask (`detect:`) applies to the identity, with a note that
it was not verified. Not checked: that other columns are NOT masked, that the column actually
reaches the client, and what the masked value looks like.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Final

from dbguard.model import (
    MYSQL_DEFAULTS,
    POSTGRES_DEFAULTS,
    Action,
    Identity,
    IdentityKind,
    ParseSettings,
    SessionInfo,
    StatementInfo,
)
from dbguard.policy.engine import evaluate
from dbguard.policy.rules import DEFAULTS_ACTION_ID, PARSE_ERROR_ID, Dialect, Mask, Policy, RuleTest

__all__ = [
    "ANONYMOUS",
    "CaseResult",
    "case_session",
    "parse_settings",
    "run_case",
    "run_tests",
    "unexercised_rules",
]

# Who a statement is decided for when nobody is named: an agent without roles.
ANONYMOUS: Final = Identity("anonymous", IdentityKind.AGENT, ())

Analyser = Callable[[str, ParseSettings], tuple[StatementInfo, ...]]


@dataclass(frozen=True)
class CaseResult:
    case: RuleTest
    location: str  # file:line
    expected: Action
    got: Action | None  # None: the case could not run (see problems)
    enforced: bool = True  # False: `got` comes from observe-only rules
    rule_ids: tuple[str, ...] = ()
    observed: tuple[str, ...] = ()
    identity: Identity | None = None
    problems: tuple[str, ...] = ()  # why it failed; empty = passed
    notes: tuple[str, ...] = ()  # what was not verified
    statements: tuple[StatementInfo, ...] = ()

    @property
    def passed(self) -> bool:
        return not self.problems

    @property
    def matched(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(self.rule_ids + self.observed))


def parse_settings(dialect: Dialect, database: str | None) -> ParseSettings:
    if dialect is Dialect.MYSQL:
        return ParseSettings("mysql", search_path=(database,)) if database else MYSQL_DEFAULTS
    return POSTGRES_DEFAULTS


def case_session(identity: Identity, dialect: Dialect, listener: str, database: str) -> SessionInfo:
    return SessionInfo(
        session_id="offline",
        listener=listener,
        protocol=dialect.value,
        identity=identity,
        client_address="offline",
        database=database,
    )


def resolve_identity(case: RuleTest, identities: Mapping[str, Identity] | None) -> Identity | str:
    """The case's identity, or a problem. Inline `identity_kind` / `roles` win over the config."""
    known = identities.get(case.identity) if identities is not None and case.identity else None
    if case.identity and known is None and case.identity_kind is None:
        where = "the configuration" if identities is not None else "any configuration (none was given)"
        return (
            f"identity {case.identity!r} is not in {where}: give identity_kind (and roles) on the test, "
            "or run with -c CONFIG"
        )
    kind = case.identity_kind or (known.kind if known else ANONYMOUS.kind)
    roles = case.roles if case.roles is not None else (known.roles if known else ())
    return Identity(case.identity or ANONYMOUS.name, kind, roles)


def run_tests(
    policy: Policy,
    *,
    identities: Mapping[str, Identity] | None = None,
    listener: str = "",
    analyse: Analyser | None = None,
) -> tuple[CaseResult, ...]:
    """Run every `tests:` case of the policy, in file order."""
    return tuple(
        run_case(policy, case, identities=identities, listener=listener, analyse=analyse) for case in policy.tests
    )


def run_case(
    policy: Policy,
    case: RuleTest,
    *,
    identities: Mapping[str, Identity] | None = None,
    listener: str = "",
    analyse: Analyser | None = None,
) -> CaseResult:
    location = str(case.location) if case.location else "?"
    identity = resolve_identity(case, identities)
    if isinstance(identity, str):
        return CaseResult(case, location, case.expect, None, problems=(identity,))
    if analyse is None:
        from dbguard.sql import analyse as default_analyse

        analyse = default_analyse
    try:
        statements = analyse(case.sql, parse_settings(case.dialect, case.database))
    except ImportError:
        problem = f"the {case.dialect} analyser is not available in this build"
        return CaseResult(case, location, case.expect, None, identity=identity, problems=(problem,))
    session = case_session(identity, case.dialect, case.listener or listener, case.database or "")
    decision = evaluate(policy, statements, session)
    matched = set(decision.rule_ids) | set(decision.observed)
    problems: list[str] = []
    notes: list[str] = []
    if decision.action is not case.expect:
        deciding = (decision.rule_ids or decision.observed or ("no rule",))[0]
        problems.append(f"expected {case.expect}, got {decision.action} ({deciding})")
    for expected in case.rules or ():
        if expected.startswith("!"):
            if expected[1:] in matched:
                problems.append(f"rule {expected[1:]} matched, and the test says it must not")
        elif expected not in matched and not _implicit_allow(expected, decision.action):
            problems.append(f"rule {expected} did not match")
    if not decision.enforced:
        notes.append(f"{decision.action} comes from observe-only rules: the statement would run")
    if case.masked is not None:
        _check_masked(policy, case.masked, session, statements, problems, notes)
    return CaseResult(
        case,
        location,
        case.expect,
        decision.action,
        enforced=decision.enforced,
        rule_ids=decision.rule_ids,
        observed=decision.observed,
        identity=identity,
        problems=tuple(problems),
        notes=tuple(notes),
        statements=statements,
    )


def _implicit_allow(rule_id: str, action: Action) -> bool:
    # `defaults.action` is not listed in a decision when it allows; a test may still name it.
    return rule_id == DEFAULTS_ACTION_ID and action is Action.ALLOW


def unexercised_rules(policy: Policy, results: tuple[CaseResult, ...]) -> tuple[str, ...]:
    """Rule ids no case matched (implicit rules excluded)."""
    seen: set[str] = set()
    for result in results:
        seen.update(result.matched)
    return tuple(r.id for r in policy.rules if r.id not in seen and r.id not in (PARSE_ERROR_ID, DEFAULTS_ACTION_ID))


# ---------------------------------------------------------------------------------------------
# masked


def _applies(mask: Mask, session: SessionInfo, statement: StatementInfo) -> bool:
    return mask.unless is None or not mask.unless.holds(statement, session)


def _column_matches(glob: str, column: str) -> bool:
    pattern = glob if glob.count(".") == 2 else f"*.{glob}"
    return fnmatch.fnmatchcase(column.lower(), pattern.lower())


def _candidates(name: str, reads: frozenset[str]) -> list[str]:
    parts = name.split(".")
    if len(parts) == 3:
        return [name]
    if len(parts) == 2:
        return [f"{t}.{parts[1]}" for t in sorted(reads) if t.rpartition(".")[2].lower() == parts[0].lower()]
    return [f"{t}.{name}" for t in sorted(reads)]


def _check_masked(
    policy: Policy,
    masked: tuple[str, ...],
    session: SessionInfo,
    statements: tuple[StatementInfo, ...],
    problems: list[str],
    notes: list[str],
) -> None:
    if not masked:
        notes.append("masked: [] is not checked (that nothing is masked needs the masking code)")
        return
    probe = statements[0] if statements else None
    reads = frozenset().union(*(s.reads for s in statements))
    for name in masked:
        candidates = _candidates(name, reads)
        if not candidates:
            problems.append(f"masked {name}: the statement reads no table it could come from")
            continue
        covering = [m for m in policy.masks if any(_column_matches(g, c) for g in m.columns for c in candidates)]
        applying = [m for m in covering if probe is None or _applies(m, session, probe)]
        if applying:
            continue
        detectors = [m for m in policy.masks if m.detect and (probe is None or _applies(m, session, probe))]
        if covering:
            exempt = ", ".join(m.id for m in covering)
            problems.append(f"masked {name}: mask {exempt} covers it but exempts identity {session.identity.name}")
        elif detectors:
            notes.append(
                f"masked {name}: no columns glob covers it; content detectors of "
                f"{', '.join(m.id for m in detectors)} may mask it (not verified)"
            )
        else:
            problems.append(f"masked {name}: no mask rule covers {', '.join(candidates)}")
