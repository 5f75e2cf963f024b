"""What a rule's `when` and `unless` mean for one statement in one session.

Owns: the `Condition` value (the keys of one `when:` or `unless:` mapping, validated), its
compiled checks (globs turned into one regular expression per key at load time), and the two
semantics of set-valued facts:

- `when` (ANY): a set-valued key holds when ANY fact of the statement matches it
  (`statement: [delete]` holds for a statement that deletes anywhere);
- `unless` (ALL): it holds only when the statement HAS such facts and EVERY one of them matches
  (`unless: {tables: [scratch.*]}` exempts a statement that touches tables, all in scratch).

Identity facts (identity, identity_kind, roles, listener, database) are single-valued and hold
when they match in both. Must not: decide actions, build decisions or do I/O (that is
`policy.engine`); parse YAML (that is `policy.rules`).
"""

from __future__ import annotations

import enum
import fnmatch
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Final, NamedTuple

from dbguard.model import FILTERABLE_KINDS, Feature, IdentityKind, SessionInfo, StatementInfo, StatementKind

__all__ = [
    "CONDITION_KEYS",
    "IDENTITY_KEYS",
    "SET_KEYS",
    "Check",
    "Condition",
    "Mode",
    "Where",
    "compile_globs",
    "compile_matcher",
    "considered_kinds",
    "effective_table_glob",
]


class Mode(enum.StrEnum):
    WHEN = "when"  # ANY semantics for set-valued facts
    UNLESS = "unless"  # ALL semantics for set-valued facts, which must be non-empty


class Where(enum.StrEnum):
    MISSING = "missing"
    PRESENT = "present"


# Every key of `when` / `unless`, in the order explanations list them.
CONDITION_KEYS: Final = (
    "identity",
    "identity_kind",
    "roles",
    "listener",
    "database",
    "statement",
    "tables",
    "reads",
    "writes",
    "where",
    "functions",
    "features",
)
# Facts about the session (single-valued): the same meaning in `when` and `unless`.
IDENTITY_KEYS: Final = frozenset({"identity", "identity_kind", "roles", "listener", "database"})
# Facts about the statement that are sets: ANY in `when`, ALL (and non-empty) in `unless`.
SET_KEYS: Final = frozenset({"statement", "tables", "reads", "writes", "functions", "features"})


class Check(NamedTuple):
    """One key of a condition, compiled: `test(statement, session)` says whether it holds."""

    key: str
    test: Callable[[StatementInfo, SessionInfo], bool]


def compile_globs(patterns: Iterable[str], *, ignore_case: bool) -> re.Pattern[str]:
    """One regular expression matching a whole name against any of the shell-style globs."""
    body = "|".join(f"(?:{fnmatch.translate(p)})" for p in patterns)
    return re.compile(body, re.IGNORECASE if ignore_case else 0)


def effective_table_glob(pattern: str) -> str:
    """A table glob without a schema matches that table in every schema: `users` = `*.users`."""
    return pattern if "." in pattern else f"*.{pattern}"


def considered_kinds(statement: frozenset[StatementKind]) -> frozenset[StatementKind]:
    """The kinds `where:` looks at: the rule's `statement` kinds that can filter, else all that can."""
    return statement & FILTERABLE_KINDS if statement else FILTERABLE_KINDS


@dataclass(frozen=True)
class Condition:
    """The keys of one `when` or `unless` mapping. An empty tuple / set means the key is absent
    (the loader refuses empty lists). `checks` is derived: one compiled test per given key."""

    mode: Mode
    identity: tuple[str, ...] = ()
    identity_kind: frozenset[IdentityKind] = frozenset()
    roles: tuple[str, ...] = ()
    listener: tuple[str, ...] = ()
    database: tuple[str, ...] = ()
    statement: frozenset[StatementKind] = frozenset()
    tables: tuple[str, ...] = ()
    reads: tuple[str, ...] = ()
    writes: tuple[str, ...] = ()
    where: Where | None = None
    functions: tuple[str, ...] = ()
    features: frozenset[Feature] = frozenset()
    checks: tuple[Check, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "checks", tuple(_compile(self)))

    @property
    def keys(self) -> tuple[str, ...]:
        """The keys given, in CONDITION_KEYS order."""
        return tuple(check.key for check in self.checks)

    @property
    def empty(self) -> bool:
        return not self.checks

    def holds(self, info: StatementInfo, session: SessionInfo) -> bool:
        """Every key holds (an empty condition holds for everything)."""
        for check in self.checks:  # noqa: SIM110 - a plain loop: no generator on the hot path
            if not check.test(info, session):
                return False
        return True

    def failing_key(self, info: StatementInfo, session: SessionInfo) -> str | None:
        """The first key that does not hold, or None when the condition holds."""
        for check in self.checks:
            if not check.test(info, session):
                return check.key
        return None

    def values(self, key: str) -> tuple[str, ...]:
        """The values given for `key`, as text (for explanations, hints and lint)."""
        value = getattr(self, key)
        if value is None:
            return ()
        if isinstance(value, Where):
            return (value.value,)
        if isinstance(value, frozenset):
            return tuple(sorted(str(v) for v in value))
        return tuple(str(v) for v in value)


def compile_matcher(when: Condition, unless: Condition | None) -> Callable[[StatementInfo, SessionInfo], bool]:
    """One function: every check of `when` holds, and not every check of `unless` does."""
    tests = tuple(check.test for check in when.checks)
    exempt = tuple(check.test for check in unless.checks) if unless is not None else ()
    if not exempt:
        if len(tests) == 1:
            return tests[0]

        def when_only(info: StatementInfo, session: SessionInfo) -> bool:
            for test in tests:  # noqa: SIM110 - a plain loop: no generator on the hot path
                if not test(info, session):
                    return False
            return True

        return when_only

    def with_unless(info: StatementInfo, session: SessionInfo) -> bool:
        for test in tests:
            if not test(info, session):
                return False
        for test in exempt:  # noqa: SIM110
            if not test(info, session):
                return True
        return False

    return with_unless


# ---------------------------------------------------------------------------------------------
# Compilation


def _compile(cond: Condition) -> Iterable[Check]:
    any_mode = cond.mode is Mode.WHEN
    for key in CONDITION_KEYS:
        value = getattr(cond, key)
        if not value:
            continue
        if key in ("identity", "listener", "database"):
            yield Check(key, _session_name_test(key, compile_globs(value, ignore_case=False)))
        elif key == "identity_kind":
            yield Check(key, _identity_kind_test(value))
        elif key == "roles":
            yield Check(key, _roles_test(compile_globs(value, ignore_case=False)))
        elif key == "statement":
            yield Check(key, _statement_test(value, any_mode))
        elif key in ("tables", "reads", "writes"):
            yield Check(key, _table_test(key, value, any_mode))
        elif key == "where":
            yield Check(key, _where_test(value, considered_kinds(cond.statement)))
        elif key == "functions":
            yield Check(key, _function_test(value, any_mode))
        elif key == "features":
            yield Check(key, _features_test(value, any_mode))


def _session_name_test(key: str, rx: re.Pattern[str]) -> Callable[[StatementInfo, SessionInfo], bool]:
    if key == "identity":
        return lambda i, s: rx.match(s.identity.name) is not None
    if key == "listener":
        return lambda i, s: rx.match(s.listener) is not None
    return lambda i, s: rx.match(s.database) is not None


def _identity_kind_test(kinds: frozenset[IdentityKind]) -> Callable[[StatementInfo, SessionInfo], bool]:
    return lambda i, s: s.identity.kind in kinds


def _roles_test(rx: re.Pattern[str]) -> Callable[[StatementInfo, SessionInfo], bool]:
    return lambda i, s: any(rx.match(r) for r in s.identity.roles)


def _statement_test(kinds: frozenset[StatementKind], any_mode: bool) -> Callable[[StatementInfo, SessionInfo], bool]:
    if any_mode:
        return lambda i, s: not kinds.isdisjoint(i.kinds)
    return lambda i, s: bool(i.kinds) and i.kinds <= kinds


def _features_test(features: frozenset[Feature], any_mode: bool) -> Callable[[StatementInfo, SessionInfo], bool]:
    if any_mode:
        return lambda i, s: not features.isdisjoint(i.features)
    return lambda i, s: bool(i.features) and i.features <= features


def _where_test(where: Where, considered: frozenset[StatementKind]) -> Callable[[StatementInfo, SessionInfo], bool]:
    if where is Where.MISSING:
        return lambda i, s: not considered.isdisjoint(i.unfiltered)
    return lambda i, s: not considered.isdisjoint(i.kinds) and considered.isdisjoint(i.unfiltered)


def _function_test(patterns: tuple[str, ...], any_mode: bool) -> Callable[[StatementInfo, SessionInfo], bool]:
    # Case-insensitive; a glob matches the recorded name or its last dotted part, so
    # `pg_read_file` matches `pg_catalog.pg_read_file`.
    rx = compile_globs(patterns, ignore_case=True)

    def matches(name: str) -> bool:
        return rx.match(name) is not None or ("." in name and rx.match(name.rpartition(".")[2]) is not None)

    if any_mode:
        return lambda i, s: any(matches(f) for f in i.functions)
    return lambda i, s: bool(i.functions) and all(matches(f) for f in i.functions)


def _table_test(key: str, patterns: tuple[str, ...], any_mode: bool) -> Callable[[StatementInfo, SessionInfo], bool]:
    effective = [effective_table_glob(p) for p in patterns]

    def names(info: StatementInfo) -> frozenset[str]:
        if key == "reads":
            return info.reads
        if key == "writes":
            return info.writes
        return info.reads | info.writes

    if not any_mode:
        # ALL: exact, case-sensitive comparison with the names as the analyser recorded them
        # (PostgreSQL folds unquoted names to lower case). A whole-schema name `s.*` (DROP
        # SCHEMA s) is covered only by a glob that covers every table of s, such as `s.*`.
        rx_exact = compile_globs(effective, ignore_case=False)
        return lambda i, s: bool(found := names(i)) and all(rx_exact.match(n) for n in found)

    # ANY: case-insensitive (a rule catches `Users` and `users`). A recorded name with a `*`
    # part (`s.*`: every table of schema s), or without a schema, matches a glob that could
    # match one of the tables it may stand for.
    rx_any = compile_globs(effective, ignore_case=True)
    parts = [
        (compile_globs([schema], ignore_case=True), compile_globs([table], ignore_case=True))
        for schema, _, table in (e.partition(".") for e in effective)
    ]

    def matches(name: str) -> bool:
        if rx_any.match(name):
            return True
        if "*" not in name and "." in name:
            return False
        # `s.*` is every table of s; a name without a schema could be in any schema.
        schema, _, table = name.partition(".") if "." in name else ("*", "", name)
        return any(
            (schema == "*" or sx.match(schema) is not None) and (table == "*" or tx.match(table) is not None)
            for sx, tx in parts
        )

    if key == "tables":
        return lambda i, s: any(matches(n) for n in i.reads) or any(matches(n) for n in i.writes)
    return lambda i, s: any(matches(n) for n in names(i))
