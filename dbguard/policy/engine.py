"""The policy decision: analysed statements + session -> Decision. Pure, deterministic, no I/O.

Owns: which rules match each statement (via `Rule.matches`, see `policy.conditions` for what
`when` / `unless` mean), the implicit rules `defaults.on_parse_error` and `defaults.action`,
strictest-wins across rules and across the statements of one message, observe-only
(`enforce: false`) rollout, and the text a client sees: the reason, the DETAIL `key=value`
pairs and the HINT. Also `explain()`, the per-rule trace behind `dbguard check --explain`.
Must not: analyse SQL, cache (that is `policy.gate`), log or render wire messages.

The decision, precisely (docs/rules.md says the same for users):

1. For each statement, every rule whose `when` holds and whose `unless` does not is a match.
   An unparseable statement also matches the implicit rule `defaults.on_parse_error` (action
   `defaults.on_parse_error`). A statement that no *enforced* rule matches gets the implicit
   rule `defaults.action`. Implicit rules are enforced unless `defaults.enforce` is false.
2. Matches of enforced rules decide: the strictest action wins (block > hold > allow), over all
   the statements of the message. `Decision.rule_ids` lists every enforced match (with
   `defaults.action` only when its action is not allow), strictest first, then by id; the first
   one is the deciding rule.
3. Matches of observe-only rules (`enforce: false`) never change the enforced action; they are
   listed in `Decision.observed` (same order). When the enforced action is allow and an
   observe-only match is stricter, the Decision carries that stricter action with
   `enforced=False`: the caller logs "would have blocked/held" and lets the statement run. Its
   reason, details and hint name the deciding observe-only rule (`observed[0]`).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Final, NamedTuple

from dbguard.model import ALLOW, Action, Decision, Feature, SessionInfo, StatementInfo
from dbguard.policy.conditions import IDENTITY_KEYS, Condition, Mode, Where, considered_kinds
from dbguard.policy.rules import (
    DEFAULTS_ACTION_ID,
    PARSE_ERROR_DESCRIPTION,
    PARSE_ERROR_ID,
    STRICTNESS,
    Policy,
    Rule,
)

__all__ = [
    "PARSE_ERROR_HINT",
    "WHERE_HINT",
    "RuleTrace",
    "StatementTrace",
    "describe_when",
    "evaluate",
    "explain",
    "format_details",
    "scrub_detail",
]

PARSE_ERROR_HINT: Final = (
    "dbguard could not analyse this statement; simplify it (one statement per message, no exotic syntax)."
)
WHERE_HINT: Final = "Add a WHERE clause that limits the rows affected."
# At most this many table names go into DETAIL's `tables=`; then `,+N` says how many more.
MAX_DETAIL_TABLES: Final = 16
# A DETAIL value (the analyser's reason for a parse error) is cut to this many characters.
MAX_DETAIL_VALUE: Final = 160

_UNSAFE_IN_VALUE = re.compile(r"[\s,=\"'\\\x00-\x1f\x7f]+")
_QUOTED = re.compile(r"'(?:[^']|'')*'?|\"(?:[^\"]|\"\")*\"?|\$[A-Za-z_0-9]*\$.*", re.DOTALL)

_FEATURE_WORDS: Final[Mapping[Feature, str]] = {
    Feature.MULTI_STATEMENT: "several statements in one message",
    Feature.DYNAMIC_SQL: "SQL built at run time",
    Feature.FILE_ACCESS: "server-side file access",
    Feature.PROGRAM_EXECUTION: "running programs on the server",
    Feature.UNTRUSTED_CODE: "code blocks or new functions",
    Feature.PRIVILEGE_CHANGE: "privilege changes",
    Feature.SESSION_CHANGE: "session settings that change how statements run",
    Feature.SYSTEM_ADMIN: "server administration",
    Feature.USER_CODE_CALL: "calls of user-defined functions",
    Feature.UNPARSEABLE: "statements dbguard cannot analyse",
}


class _Hit(NamedTuple):
    rule_id: str
    action: Action
    enforce: bool
    rule: Rule | None  # None: an implicit rule
    position: int  # which statement of the message (0-based)

    @property
    def order(self) -> tuple[int, str, int]:
        return (-STRICTNESS[self.action], self.rule_id, self.position)


# ---------------------------------------------------------------------------------------------
# evaluate


def evaluate(policy: Policy, statements: tuple[StatementInfo, ...], session: SessionInfo) -> Decision:
    """Decide one message (its statements, in order) for one session; see the module docstring."""
    if not statements:
        return ALLOW
    defaults = policy.defaults
    rules = policy.rules
    hits: list[_Hit] = []
    for index, info in enumerate(statements):
        enforced_match = False
        for rule in rules:
            if rule.matcher(info, session):
                hits.append(_Hit(rule.id, rule.action, rule.enforce, rule, index))
                enforced_match = enforced_match or rule.enforce
        if Feature.UNPARSEABLE in info.features:
            hits.append(_Hit(PARSE_ERROR_ID, defaults.on_parse_error, defaults.enforce, None, index))
            enforced_match = enforced_match or defaults.enforce
        if not enforced_match:
            hits.append(_Hit(DEFAULTS_ACTION_ID, defaults.action, defaults.enforce, None, index))
    barrier = any(info.changes_parsing for info in statements)

    # Common case first: everything allowed.
    strictest = Action.ALLOW
    for h in hits:
        if h.action is not Action.ALLOW:
            strictest = h.action
            break
    if strictest is Action.ALLOW:
        named = sorted((h for h in hits if h.rule_id != DEFAULTS_ACTION_ID), key=lambda h: h.order)
        if not named:
            return Decision(Action.ALLOW, barrier=True) if barrier else ALLOW
        return Decision(
            Action.ALLOW,
            rule_ids=_ids(h for h in named if h.enforce),
            observed=_ids(h for h in named if not h.enforce),
            barrier=barrier,
        )

    hits.sort(key=lambda h: h.order)
    enforced = [h for h in hits if h.enforce]
    observed = [h for h in hits if not h.enforce]
    rule_ids = _ids(enforced)
    observed_ids = _ids(observed)
    if enforced and enforced[0].action is not Action.ALLOW:
        decisive = enforced[0]
    elif observed and observed[0].action is not Action.ALLOW:
        decisive = observed[0]
    else:  # pragma: no cover - some hit is stricter than allow, so one of the two holds
        raise AssertionError("no deciding match")
    return _decision(policy, decisive, statements, session, rule_ids, observed_ids, barrier)


def _ids(hits: Iterable[_Hit]) -> tuple[str, ...]:
    """Unique rule ids in order; `defaults.action` only when it is not allow."""
    out: dict[str, None] = {}
    for h in hits:
        if h.rule_id == DEFAULTS_ACTION_ID and h.action is Action.ALLOW:
            continue
        out[h.rule_id] = None
    return tuple(out)


def _decision(
    policy: Policy,
    decisive: _Hit,
    statements: tuple[StatementInfo, ...],
    session: SessionInfo,
    rule_ids: tuple[str, ...],
    observed_ids: tuple[str, ...],
    barrier: bool,
) -> Decision:
    info = statements[decisive.position]
    rule = decisive.rule
    action = decisive.action
    if rule is not None:
        description = rule.description or describe_when(rule.when, action)
    elif decisive.rule_id == PARSE_ERROR_ID:
        description = PARSE_ERROR_DESCRIPTION
    else:
        description = f"no rule matched this statement and defaults.action is {action}"
    verb = "blocked" if action is Action.BLOCK else "held"
    reason = f"dbguard: {verb} by rule {decisive.rule_id}: {description}"

    details: dict[str, str] = {"rule": decisive.rule_id, "action": action.value}
    details["statement"] = ",".join(sorted(info.kinds)) or "other"
    tables = sorted(info.reads | info.writes)
    if tables:
        shown = [_value(t) for t in tables[:MAX_DETAIL_TABLES]]
        if len(tables) > MAX_DETAIL_TABLES:
            shown.append(f"+{len(tables) - MAX_DETAIL_TABLES}")
        details["tables"] = ",".join(shown)
    every = tuple(dict.fromkeys(rule_ids + observed_ids))
    if len(every) > 1:
        details["rules"] = ",".join(every)
    if action is Action.HOLD and rule is not None and rule.approvers:
        details["approvers"] = ",".join(_value(r) for r in rule.approvers)
    if info.unparseable and info.detail:
        details["reason"] = scrub_detail(info.detail)
    if len(statements) > 1:
        details["part"] = f"{decisive.position + 1}/{len(statements)}"
    if not decisive.enforce:
        details["enforced"] = "false"
    return Decision(
        action=action,
        rule_ids=rule_ids,
        reason=reason,
        hint=_hint(decisive, info, session),
        enforced=decisive.enforce,
        details=details,
        observed=observed_ids,
        barrier=barrier,
    )


# ---------------------------------------------------------------------------------------------
# Texts: description, hint, DETAIL values


def describe_when(when: Condition, action: Action) -> str:
    """A description generated from a rule's `when`, e.g. "statement kind drop is not allowed"."""
    parts: list[str] = []
    plural = False
    if when.statement:
        kinds = when.values("statement")
        plural = len(kinds) > 1
        parts.append(f"statement kind{'s' if plural else ''} {_words(kinds)}")
    else:
        parts.append("a statement")
    if when.where is Where.MISSING:
        parts.append("without a WHERE clause")
    elif when.where is Where.PRESENT:
        parts.append("with a WHERE clause")
    for key, words in (("tables", "on"), ("reads", "reading"), ("writes", "writing")):
        if getattr(when, key):
            parts.append(f"{words} {_words(when.values(key))}")
    if when.functions:
        parts.append(f"calling {_words(when.values('functions'))}")
    if when.features:
        parts.append(f"using {_words(when.values('features'))}")
    if when.identity_kind:
        parts.append(f"by {_words([k + 's' for k in when.values('identity_kind')])}")
    if when.identity:
        parts.append(f"by identity {_words(when.values('identity'))}")
    if when.roles:
        parts.append(f"by role {_words(when.values('roles'))}")
    if when.listener:
        parts.append(f"on listener {_words(when.values('listener'))}")
    if when.database:
        parts.append(f"in database {_words(when.values('database'))}")
    verb = "are" if plural else "is"
    outcome = {Action.BLOCK: "not allowed", Action.HOLD: "held for approval", Action.ALLOW: "allowed"}[action]
    return f"{' '.join(parts)} {verb} {outcome}"


def _words(values: Sequence[str]) -> str:
    values = list(values)
    if len(values) <= 1:
        return "".join(values)
    return ", ".join(values[:-1]) + " or " + values[-1]


def _hint(hit: _Hit, info: StatementInfo, session: SessionInfo) -> str:
    rule = hit.rule
    if rule is not None and rule.hint:
        return rule.hint
    if hit.rule_id == PARSE_ERROR_ID:
        return PARSE_ERROR_HINT
    who = f"{session.identity.kind}s"
    if hit.action is Action.HOLD:
        approvers = rule.approvers if rule is not None else ()
        by = f"someone with role {_words(approvers)}" if approvers else "an approver"
        text = f"This statement needs approval by {by} before it runs."
    elif rule is None:
        text = "No rule allows this statement; ask a DBA to run it, or to add a rule that allows it."
    elif rule.when.where is Where.MISSING:
        text = WHERE_HINT
    elif rule.when.statement and not rule.when.statement.isdisjoint(info.kinds):
        kinds = sorted(rule.when.statement & info.kinds)
        text = f"This statement kind ({_words(kinds)}) is not allowed for {who}; ask a DBA to run it."
    elif rule.when.features and not rule.when.features.isdisjoint(info.features):
        used = [_FEATURE_WORDS[f] for f in sorted(rule.when.features & info.features)]
        text = f"Statements using {_words(used)} are not allowed for {who}; ask a DBA to run it."
    elif rule.when.functions:
        text = f"Calling {_words(rule.when.values('functions'))} is not allowed for {who}; ask a DBA to run it."
    else:
        text = f"This statement is not allowed for {who}; ask a DBA to run it."
    if rule is not None and rule.unless is not None:
        exemption = _exemption(rule.unless)
        if exemption:
            text += f" It is allowed {exemption}."
    return text


def _exemption(unless: Condition) -> str:
    """What the `unless` of a rule lets through, in words, when it is about the statement."""
    if any(key in IDENTITY_KEYS for key in unless.keys):
        return ""  # an exemption for other identities: nothing this client can change
    parts = []
    if unless.tables:
        parts.append(f"when every table it touches matches {_words(unless.values('tables'))}")
    if unless.writes:
        parts.append(f"when every table it writes matches {_words(unless.values('writes'))}")
    if unless.reads:
        parts.append(f"when every table it reads matches {_words(unless.values('reads'))}")
    if unless.statement:
        parts.append(f"when it only performs {_words(unless.values('statement'))}")
    if unless.where is Where.PRESENT:
        parts.append("with a WHERE clause")
    return " and ".join(parts)


def _value(text: str) -> str:
    """A DETAIL value: no spaces, commas, quotes, '=' or control characters (they become `_`)."""
    return _UNSAFE_IN_VALUE.sub("_", text)


def scrub_detail(detail: str) -> str:
    """The analyser's reason as a DETAIL value, without data: quoted fragments become `?`."""
    text = _value(_QUOTED.sub("?", detail)).strip("_")
    return text[:MAX_DETAIL_VALUE] or "unparseable"


def format_details(details: Mapping[str, str]) -> str:
    """DETAIL's text: `key=value` pairs separated by one space, in order."""
    return " ".join(f"{k}={v}" for k, v in details.items())


# ---------------------------------------------------------------------------------------------
# explain


@dataclass(frozen=True)
class RuleTrace:
    """Whether one rule matched one statement, and why (for people)."""

    rule_id: str
    action: Action
    enforce: bool
    matched: bool
    why: str
    # "when.<key>" that did not hold, "unless" when exempted, None when matched.
    failed: str | None = None


@dataclass(frozen=True)
class StatementTrace:
    index: int
    info: StatementInfo
    rules: tuple[RuleTrace, ...]
    implicit: tuple[RuleTrace, ...]  # defaults.on_parse_error / defaults.action when they apply


def explain(policy: Policy, statements: tuple[StatementInfo, ...], session: SessionInfo) -> tuple[StatementTrace, ...]:
    """Per statement, per rule: matched or not, and the key that decided it."""
    traces = []
    for index, info in enumerate(statements):
        rule_traces = tuple(_trace(rule, info, session) for rule in policy.rules)
        implicit: list[RuleTrace] = []
        defaults = policy.defaults
        if info.unparseable:
            implicit.append(
                RuleTrace(
                    PARSE_ERROR_ID, defaults.on_parse_error, defaults.enforce, True,
                    f"the statement could not be analysed ({info.detail or 'no detail'})",
                )
            )
        if not any(t.matched and t.enforce for t in rule_traces + tuple(implicit)):
            implicit.append(
                RuleTrace(DEFAULTS_ACTION_ID, defaults.action, defaults.enforce, True, "no enforced rule matched")
            )
        traces.append(StatementTrace(index, info, rule_traces, tuple(implicit)))
    return tuple(traces)


def _trace(rule: Rule, info: StatementInfo, session: SessionInfo) -> RuleTrace:
    failed = rule.when.failing_key(info, session)
    if failed is not None:
        why = f"when.{failed} does not hold: {_fact(rule.when, failed, info, session)}"
        return RuleTrace(rule.id, rule.action, rule.enforce, False, why, f"when.{failed}")
    held = ", ".join(rule.when.keys) or "when: {} (every statement)"
    if rule.unless is None:
        return RuleTrace(rule.id, rule.action, rule.enforce, True, f"when holds ({held})")
    unless_failed = rule.unless.failing_key(info, session)
    if unless_failed is None:
        exempt = ", ".join(rule.unless.keys)
        return RuleTrace(
            rule.id, rule.action, rule.enforce, False, f"when holds ({held}) but unless exempts it ({exempt})", "unless"
        )
    why = (
        f"when holds ({held}); unless.{unless_failed} does not hold: "
        f"{_fact(rule.unless, unless_failed, info, session)}"
    )
    return RuleTrace(rule.id, rule.action, rule.enforce, True, why)


def _fact(cond: Condition, key: str, info: StatementInfo, session: SessionInfo) -> str:
    """What the statement or session has for `key`, against what the condition wants."""
    wanted = ", ".join(cond.values(key))
    scope = "any of" if cond.mode is Mode.WHEN or key in IDENTITY_KEYS else "at least one, each matching one of"
    have: str
    if key == "identity":
        have = f"identity is {session.identity.name}"
    elif key == "identity_kind":
        have = f"identity kind is {session.identity.kind}"
    elif key == "roles":
        have = f"roles are {', '.join(session.identity.roles) or '(none)'}"
    elif key == "listener":
        have = f"listener is {session.listener or '(none)'}"
    elif key == "database":
        have = f"database is {session.database or '(none)'}"
    elif key == "statement":
        have = f"kinds are {', '.join(sorted(info.kinds)) or '(none)'}"
    elif key in ("tables", "reads", "writes"):
        names = info.reads | info.writes if key == "tables" else getattr(info, key)
        have = f"{key} are {', '.join(sorted(names)) or '(none)'}"
    elif key == "functions":
        have = f"functions are {', '.join(sorted(info.functions)) or '(none)'}"
    elif key == "features":
        have = f"features are {', '.join(sorted(info.features)) or '(none)'}"
    else:  # where
        considered = ", ".join(sorted(considered_kinds(cond.statement)))
        unfiltered = ", ".join(sorted(info.unfiltered)) or "(none)"
        return f"unfiltered operations: {unfiltered}; where: {wanted} looks at {considered}"
    return f"{have}; wants {scope} {wanted}"
