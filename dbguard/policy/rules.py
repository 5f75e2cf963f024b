"""The rule files: their model and their loader.

Owns: `load_policy(path)` (a file, or a folder of `*.yaml` read in name order, not recursive),
validation of every key with file, line and key path in each error (and a did-you-mean for
unknown keys, kinds, features, actions...), and the frozen `Policy` the engine evaluates:
`defaults`, `rules`, `masks` (validated here, applied by the masking code) and `tests` (run by
`policy.rule_tests`). Rule files are read literally: unlike dbguard.yaml, `${VAR}` is not
expanded (SQL in tests may contain `$`). Must not: evaluate rules (`policy.engine`) or know
what a condition means for a statement (`policy.conditions`).
"""

from __future__ import annotations

import dataclasses
import enum
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from yaml.nodes import Node

from dbguard.config import FrozenMap
from dbguard.model import Action, Feature, IdentityKind, SessionInfo, StatementInfo, StatementKind
from dbguard.policy.conditions import CONDITION_KEYS, Condition, Mode, Where, compile_matcher, considered_kinds
from dbguard.yamlfile import (
    ConfigError,
    YamlEntry,
    YamlReader,
    compose_yaml,
    echo,
    is_null,
    line_of,
    read_yaml_text,
    suggest,
)

__all__ = [
    "BUILTIN_POLICY",
    "DEFAULTS_ACTION_ID",
    "MASK_UNLESS_KEYS",
    "PARSE_ERROR_DESCRIPTION",
    "PARSE_ERROR_ID",
    "STRICTNESS",
    "Defaults",
    "Detector",
    "Dialect",
    "Location",
    "Mask",
    "MaskStrategy",
    "Policy",
    "Rule",
    "RuleTest",
    "load_policy",
    "parse_policy_text",
    "rule_files",
]

# Implicit rules: the ids a Decision names when a default decided.
DEFAULTS_ACTION_ID: Final = "defaults.action"
PARSE_ERROR_ID: Final = "defaults.on_parse_error"
PARSE_ERROR_DESCRIPTION: Final = "the statement could not be analysed"

# block > hold > allow.
STRICTNESS: Final[Mapping[Action, int]] = {Action.ALLOW: 0, Action.HOLD: 1, Action.BLOCK: 2}

# A rule file is a few kilobytes; refuse anything absurd before YAML parses it.
MAX_RULE_FILE_BYTES: Final = 4 * 1024 * 1024

_ID_RE: Final = re.compile(r"[a-z0-9][a-z0-9_.-]{0,99}\Z")
_IDENTITY_GLOB_RE: Final = re.compile(r"[A-Za-z0-9_.@+*?\[\]!-]{1,63}\Z")
_LISTENER_GLOB_RE: Final = re.compile(r"[A-Za-z0-9_.*?\[\]!-]+\Z")
_ROLE_RE: Final = re.compile(r"[^\s\x00-\x1f]+\Z")
_OBJECT_GLOB_RE: Final = re.compile(r"[^\s\x00-\x1f]+\Z")
_IDENT: Final = r"[A-Za-z_][A-Za-z0-9_$]*"
_MASKED_COLUMN_RE: Final = re.compile(rf"{_IDENT}(?:\.{_IDENT}){{0,2}}\Z")

_TOP_KEYS: Final = ("defaults", "rules", "masks", "tests")
_DEFAULTS_KEYS: Final = ("action", "on_parse_error", "enforce")
_RULE_KEYS: Final = ("id", "description", "when", "unless", "action", "approvers", "enforce", "hint")
_MASK_KEYS: Final = ("id", "description", "columns", "detect", "strategy", "unless")
MASK_UNLESS_KEYS: Final = ("identity", "identity_kind", "roles")
_TEST_KEYS: Final = (
    "sql",
    "expect",
    "description",
    "identity",
    "identity_kind",
    "roles",
    "dialect",
    "listener",
    "database",
    "masked",
    "rules",
)


class MaskStrategy(enum.StrEnum):
    FULL = "full"
    PARTIAL = "partial"
    HASH = "hash"
    NULL = "null"
    EMAIL = "email"


class Detector(enum.StrEnum):
    EMAIL = "email"
    CREDIT_CARD = "credit_card"
    US_SSN = "us_ssn"
    PHONE = "phone"
    IBAN = "iban"
    SECRET = "secret"  # noqa: S105 - a detector name, not a password


class Dialect(enum.StrEnum):
    POSTGRES = "postgres"
    MYSQL = "mysql"


@dataclass(frozen=True)
class Location:
    """Where something was written: file, 1-based line, key path (`rules[2]`)."""

    path: Path
    line: int | None
    key: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}" if self.line is not None else str(self.path)


def _no_lines() -> Mapping[str, int]:
    return FrozenMap({})


@dataclass(frozen=True)
class Defaults:
    action: Action = Action.ALLOW
    on_parse_error: Action = Action.BLOCK
    enforce: bool = True
    location: Location | None = None


@dataclass(frozen=True)
class Rule:
    id: str
    when: Condition
    action: Action
    unless: Condition | None = None
    description: str = ""
    approvers: tuple[str, ...] = ()
    enforce: bool = True
    hint: str = ""
    location: Location | None = None
    # Key path (as in error messages) -> line, for lint and explanations.
    lines: Mapping[str, int] = field(default_factory=_no_lines, repr=False, compare=False)
    # Derived: `matches` as one closure over the compiled checks (no method hops per key).
    matcher: Callable[[StatementInfo, SessionInfo], bool] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "matcher", compile_matcher(self.when, self.unless))

    def matches(self, info: StatementInfo, session: SessionInfo) -> bool:
        """The rule applies: every key of `when` holds and `unless` (if any) does not."""
        return self.matcher(info, session)

    def line_of(self, subkey: str) -> int | None:
        """The line of `subkey` (`when.statement[1]`), else of the closest parent, else the rule."""
        if self.location is None:
            return None
        key = f"{self.location.key}.{subkey}" if subkey else self.location.key
        while key:
            if key in self.lines:
                return self.lines[key]
            key = _parent_key(key)
        return self.location.line


@dataclass(frozen=True)
class Mask:
    id: str
    columns: tuple[str, ...] = ()  # globs over [schema.]table.column
    detect: tuple[Detector, ...] = ()
    strategy: MaskStrategy = MaskStrategy.FULL
    unless: Condition | None = None  # identity, identity_kind, roles only
    description: str = ""
    location: Location | None = None
    lines: Mapping[str, int] = field(default_factory=_no_lines, repr=False, compare=False)


@dataclass(frozen=True)
class RuleTest:
    """One `tests:` case. `None` means the key was not given."""

    sql: str
    expect: Action
    description: str = ""
    identity: str | None = None
    identity_kind: IdentityKind | None = None
    roles: tuple[str, ...] | None = None
    dialect: Dialect = Dialect.POSTGRES
    listener: str | None = None
    database: str | None = None
    masked: tuple[str, ...] | None = None
    # Rule ids expected to match; "!id" means the rule must not match.
    rules: tuple[str, ...] | None = None
    location: Location | None = None


@dataclass(frozen=True)
class Policy:
    defaults: Defaults = field(default_factory=Defaults)
    rules: tuple[Rule, ...] = ()
    masks: tuple[Mask, ...] = ()
    tests: tuple[RuleTest, ...] = ()
    files: tuple[Path, ...] = ()  # the files read, in order
    source: Path | None = None  # what was loaded (a file or a folder); None: built-in defaults
    _by_id: Mapping[str, Rule] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_by_id", FrozenMap({r.id: r for r in self.rules}))

    @classmethod
    def builtin(cls) -> Policy:
        """The policy without rule files: allow, block what cannot be analysed (BUILTIN_POLICY)."""
        return BUILTIN_POLICY

    @property
    def sources(self) -> tuple[Path, ...]:
        """The rule files read, in order (empty for the built-in defaults)."""
        return self.files

    def rule(self, rule_id: str) -> Rule | None:
        return self._by_id.get(rule_id)

    @property
    def rule_ids(self) -> tuple[str, ...]:
        return tuple(r.id for r in self.rules)


# The policy when no rule file is configured: allow, and block what cannot be analysed.
BUILTIN_POLICY: Final = Policy()


# ---------------------------------------------------------------------------------------------
# Loading


def rule_files(path: Path) -> list[Path]:
    """The files `load_policy(path)` reads: the file itself, or the folder's `*.yaml` by name."""
    if path.is_dir():
        return sorted(
            (p for p in path.iterdir() if p.suffix == ".yaml" and p.is_file() and not p.name.startswith(".")),
            key=lambda p: p.name,
        )
    return [path]


def load_policy(path: Path | str) -> Policy:
    """Read and validate rule files. Raises ConfigError naming file, line and key."""
    root = Path(path)
    if not root.exists():
        raise ConfigError(root, None, None, "rule file or folder not found")
    files = rule_files(root)
    if not files:
        raise ConfigError(root, None, None, "no *.yaml rule files in this folder")
    parts = []
    for file in files:
        text = read_yaml_text(file, MAX_RULE_FILE_BYTES, what="rule file", not_found="rule file not found")
        parts.append(_FileReader(file).read(compose_yaml(text, file)))
    return _combine(parts, root)


def parse_policy_text(text: str, path: Path | str = Path("rules.yaml")) -> Policy:
    """Validate one rule file's text as if read from `path` (for tests and tools)."""
    p = Path(path)
    return _combine([_FileReader(p).read(compose_yaml(text, p))], p)


@dataclass
class _FilePart:
    path: Path
    defaults: Defaults | None
    rules: list[tuple[Rule, bool]]  # (rule, whether `enforce` was given)
    masks: list[Mask]
    tests: list[tuple[RuleTest, Location, dict[str, int]]]


def _combine(parts: Sequence[_FilePart], source: Path) -> Policy:
    defaults: Defaults | None = None
    for part in parts:
        if part.defaults is None:
            continue
        if defaults is not None and defaults.location is not None:
            loc = part.defaults.location
            raise ConfigError(
                part.path,
                loc.line if loc else None,
                "defaults",
                f"defaults may be given in one file only (already given at {defaults.location})",
            )
        defaults = part.defaults
    defaults = defaults or Defaults()

    seen: dict[str, Location] = {}
    rules: list[Rule] = []
    masks: list[Mask] = []
    for part in parts:
        named: list[tuple[str, Location | None]] = [(r.id, r.location) for r, _ in part.rules]
        named += [(m.id, m.location) for m in part.masks]
        for ident, loc in named:
            assert loc is not None
            if ident in seen:
                raise ConfigError(
                    loc.path, loc.line, f"{loc.key}.id", f"duplicate id {echo(ident)} (first defined at {seen[ident]})"
                )
            seen[ident] = loc
        for rule, enforce_given in part.rules:
            rules.append(rule if enforce_given else dataclasses.replace(rule, enforce=defaults.enforce))
        masks.extend(part.masks)

    known = [r.id for r in rules] + [DEFAULTS_ACTION_ID, PARSE_ERROR_ID]
    tests: list[RuleTest] = []
    for part in parts:
        for test, loc, lines in part.tests:
            for i, expected in enumerate(test.rules or ()):
                ident = expected.removeprefix("!")
                if ident not in known:
                    key = f"{loc.key}.rules[{i}]"
                    raise ConfigError(
                        loc.path, lines.get(key, loc.line), key, f"unknown rule id {echo(ident)}{suggest(ident, known)}"
                    )
            tests.append(test)
    return Policy(
        defaults=defaults,
        rules=tuple(rules),
        masks=tuple(masks),
        tests=tuple(tests),
        files=tuple(p.path for p in parts),
        source=source,
    )


def _parent_key(key: str) -> str:
    """`rules[2].when.statement[1]` -> `rules[2].when.statement` -> `rules[2].when` -> `rules[2]`."""
    if key.endswith("]"):
        return key[: key.rindex("[")]
    return key.rpartition(".")[0] if "." in key else ""


class _FileReader(YamlReader):
    """One rule file, walked by its schema (no ${ENV} expansion)."""

    def __init__(self, path: Path) -> None:
        super().__init__(path, env=None)

    def location(self, node: Node, key: str) -> Location:
        return Location(self.path, line_of(node), key)

    def lines_under(self, key: str) -> Mapping[str, int]:
        return FrozenMap({k: v for k, v in self.locations.items() if k == key or k.startswith((key + ".", key + "["))})

    def read(self, root: Node | None) -> _FilePart:
        part = _FilePart(self.path, None, [], [], [])
        if root is None or is_null(root):
            return part  # an empty file (or only comments) adds nothing
        top = self.mapping(root, "", _TOP_KEYS)
        node = self.present(top, "defaults")
        if node is not None:
            part.defaults = self.defaults(node)
        node = self.present(top, "rules")
        if node is not None:
            items = self.sequence(node, "rules")
            part.rules = [self.rule(n, f"rules[{i}]") for i, n in enumerate(items)]
        node = self.present(top, "masks")
        if node is not None:
            items = self.sequence(node, "masks")
            part.masks = [self.mask(n, f"masks[{i}]") for i, n in enumerate(items)]
        node = self.present(top, "tests")
        if node is not None:
            items = self.sequence(node, "tests")
            part.tests = [self.test(n, f"tests[{i}]") for i, n in enumerate(items)]
        return part

    # -- sections -----------------------------------------------------------------------------

    def defaults(self, node: Node) -> Defaults:
        m = self.mapping(node, "defaults", _DEFAULTS_KEYS)
        action = self.present(m, "action")
        parse = self.present(m, "on_parse_error")
        enforce = self.present(m, "enforce")
        return Defaults(
            action=self.choice(action, "defaults.action", Action, fold_case=True) if action else Action.ALLOW,
            on_parse_error=(
                self.choice(parse, "defaults.on_parse_error", Action, fold_case=True) if parse else Action.BLOCK
            ),
            enforce=self.boolean(enforce, "defaults.enforce") if enforce is not None else True,
            location=self.location(node, "defaults"),
        )

    def ident(self, m: Mapping[str, YamlEntry], node: Node, key: str) -> str:
        id_node = self.required(m, node, key, "id")
        text = self.string(id_node, f"{key}.id")
        if not _ID_RE.match(text):
            raise self.err(
                id_node,
                f"{key}.id",
                f"expected an id of lower-case letters, digits, _ . - (starting with a letter or digit), "
                f"got {echo(text)}",
            )
        if text.startswith("defaults."):
            raise self.err(id_node, f"{key}.id", f"ids starting with 'defaults.' are reserved, got {echo(text)}")
        return text

    def rule(self, node: Node, key: str) -> tuple[Rule, bool]:
        m = self.mapping(node, key, _RULE_KEYS)
        rule_id = self.ident(m, node, key)
        action_node = self.required(m, node, key, "action")
        action = self.choice(action_node, f"{key}.action", Action, fold_case=True)
        when = self.condition(self.required(m, node, key, "when"), f"{key}.when", Mode.WHEN, CONDITION_KEYS)
        unless_node = self.present(m, "unless")
        unless = self.condition(unless_node, f"{key}.unless", Mode.UNLESS, CONDITION_KEYS) if unless_node else None
        if unless is not None and unless.empty:
            raise self.err(unless_node, f"{key}.unless", "an empty unless exempts every statement; remove it")
        approvers: tuple[str, ...] = ()
        approvers_node = self.present(m, "approvers")
        if approvers_node is not None:
            if action is not Action.HOLD:
                raise self.err(
                    approvers_node, f"{key}.approvers", f"approvers apply to action hold only (this rule's is {action})"
                )
            approvers = self.names(approvers_node, f"{key}.approvers", _ROLE_RE, "role names")
        enforce_node = self.present(m, "enforce")
        enforce = self.boolean(enforce_node, f"{key}.enforce") if enforce_node is not None else True
        rule = Rule(
            id=rule_id,
            when=when,
            action=action,
            unless=unless,
            description=self.text(m, "description", key),
            approvers=approvers,
            enforce=enforce,
            hint=self.text(m, "hint", key),
            location=self.location(node, key),
            lines=self.lines_under(key),
        )
        return rule, enforce_node is not None

    def mask(self, node: Node, key: str) -> Mask:
        m = self.mapping(node, key, _MASK_KEYS)
        mask_id = self.ident(m, node, key)
        columns: tuple[str, ...] = ()
        columns_node = self.present(m, "columns")
        if columns_node is not None:
            columns = self.names(
                columns_node, f"{key}.columns", _OBJECT_GLOB_RE, "column globs", check=_column_glob_problem
            )
        detect: tuple[Detector, ...] = ()
        detect_node = self.present(m, "detect")
        if detect_node is not None:
            listed = self.listed(detect_node, key, "detect")
            detect = tuple(dict.fromkeys(self.choice(n, k, Detector, fold_case=True) for n, k in listed))
        if not columns and not detect:
            raise self.err(node, key, "a mask needs columns, detect, or both")
        strategy = MaskStrategy.FULL
        strategy_entry = m.get("strategy")
        if strategy_entry is not None and is_null(strategy_entry.value):
            # `strategy: null` is YAML's null, and means the null strategy; `strategy:` means nothing.
            if str(strategy_entry.value.value).lower() != "null":
                raise self.err(strategy_entry.value, f"{key}.strategy", "has no value (remove the key, or give one)")
            strategy = MaskStrategy.NULL
        elif strategy_entry is not None:
            strategy = self.choice(strategy_entry.value, f"{key}.strategy", MaskStrategy, fold_case=True)
        unless_node = self.present(m, "unless")
        unless = self.condition(unless_node, f"{key}.unless", Mode.UNLESS, MASK_UNLESS_KEYS) if unless_node else None
        if unless is not None and unless.empty:
            raise self.err(unless_node, f"{key}.unless", "an empty unless exempts everyone; remove it")
        return Mask(
            id=mask_id,
            columns=columns,
            detect=detect,
            strategy=strategy,
            unless=unless,
            description=self.text(m, "description", key),
            location=self.location(node, key),
            lines=self.lines_under(key),
        )

    def test(self, node: Node, key: str) -> tuple[RuleTest, Location, dict[str, int]]:
        m = self.mapping(node, key, _TEST_KEYS)
        sql = self.string(self.required(m, node, key, "sql"), f"{key}.sql")
        expect = self.choice(self.required(m, node, key, "expect"), f"{key}.expect", Action, fold_case=True)
        identity = self.optional_name(m, "identity", key, _IDENTITY_GLOB_RE, "up to 63 letters, digits, _ . @ + -")
        if identity is not None and any(c in identity for c in "*?[]!"):
            raise self.err(m["identity"].value, f"{key}.identity", "a test names one identity, not a glob")
        kind_node = self.present(m, "identity_kind")
        kind = self.choice(kind_node, f"{key}.identity_kind", IdentityKind, fold_case=True) if kind_node else None
        roles: tuple[str, ...] | None = None
        roles_node = self.present(m, "roles")
        if roles_node is not None:
            roles = self.names(roles_node, f"{key}.roles", _ROLE_RE, "role names", allow_empty=True)
        dialect_node = self.present(m, "dialect")
        dialect = (
            self.choice(dialect_node, f"{key}.dialect", Dialect, fold_case=True) if dialect_node else Dialect.POSTGRES
        )
        masked: tuple[str, ...] | None = None
        masked_node = self.present(m, "masked")
        if masked_node is not None:
            masked = self.names(
                masked_node, f"{key}.masked", _MASKED_COLUMN_RE, "column names ([[schema.]table.]column)",
                allow_empty=True,
            )
        expected_rules: tuple[str, ...] | None = None
        rules_node = self.present(m, "rules")
        if rules_node is not None:
            items = []
            for item, here in self.listed(rules_node, key, "rules"):
                text = self.string(item, here)
                if not _ID_RE.match(text.removeprefix("!")):
                    raise self.err(
                        item, here, f"expected a rule id, or !id for a rule that must not match, got {echo(text)}"
                    )
                items.append(text)
            expected_rules = tuple(items)
        listener = self.optional_name(m, "listener", key, _LISTENER_GLOB_RE, "letters, digits, _ . -")
        database_node = self.present(m, "database")
        database = self.string(database_node, f"{key}.database") if database_node is not None else None
        location = self.location(node, key)
        test = RuleTest(
            sql=sql,
            expect=expect,
            description=self.text(m, "description", key),
            identity=identity,
            identity_kind=kind,
            roles=roles,
            dialect=dialect,
            listener=listener,
            database=database,
            masked=masked,
            rules=expected_rules,
            location=location,
        )
        return test, location, dict(self.lines_under(key))

    # -- conditions ---------------------------------------------------------------------------

    def condition(self, node: Node, key: str, mode: Mode, allowed: Sequence[str]) -> Condition:
        m = self.mapping(node, key, allowed)
        values: dict[str, object] = {}
        for name, entry in m.items():
            here = f"{key}.{name}"
            if is_null(entry.value):
                raise self.err(entry.value, here, "has no value (remove the key, or give a value)")
            values[name] = self.condition_value(entry.value, here, name)
        statement = values.get("statement")
        where = values.get("where")
        if where is not None and statement is not None:
            assert isinstance(statement, frozenset)
            if not considered_kinds(statement):
                kinds = ", ".join(sorted(statement))
                raise self.err(
                    m["where"].value,
                    f"{key}.where",
                    f"where applies to select, update and delete only, and {key}.statement lists {kinds}: "
                    "it could never hold",
                )
        return Condition(mode, **values)  # type: ignore[arg-type]

    def condition_value(self, node: Node, key: str, name: str) -> object:
        if name == "where":
            return self.choice(node, key, Where, fold_case=True)
        if name == "identity_kind":
            return frozenset(self.choice(n, k, IdentityKind, fold_case=True) for n, k in self.nonempty(node, key))
        if name == "statement":
            return frozenset(self.choice(n, k, StatementKind, fold_case=True) for n, k in self.nonempty(node, key))
        if name == "features":
            return frozenset(self.choice(n, k, Feature, fold_case=True) for n, k in self.nonempty(node, key))
        if name == "identity":
            return self.names(node, key, _IDENTITY_GLOB_RE, "identity names or globs")
        if name == "listener":
            return self.names(node, key, _LISTENER_GLOB_RE, "listener names or globs")
        if name == "roles":
            return self.names(node, key, _ROLE_RE, "role names or globs")
        if name == "database":
            return self.names(node, key, _OBJECT_GLOB_RE, "database names or globs")
        if name in ("tables", "reads", "writes", "functions"):
            what = "schema.table" if name != "functions" else "[schema.]function"

            def problem(glob: str) -> str | None:
                if glob.count(".") > 1 or glob.startswith(".") or glob.endswith("."):
                    return f"expected a glob over {what} (at most one '.'), got {echo(glob)}"
                return None

            return self.names(node, key, _OBJECT_GLOB_RE, f"globs over {what}", check=problem)
        raise AssertionError(name)  # pragma: no cover - the mapping() check rejects unknown keys

    # -- value helpers ------------------------------------------------------------------------

    def listed(self, node: Node, parent: str, name: str) -> list[tuple[Node, str]]:
        return self.nonempty(node, f"{parent}.{name}")

    def nonempty(self, node: Node, key: str) -> list[tuple[Node, str]]:
        items = self.scalar_or_sequence(node, key)
        if not items:
            raise self.err(node, key, "must list at least one value (remove the key instead)")
        return items

    def names(
        self,
        node: Node,
        key: str,
        pattern: re.Pattern[str],
        what: str,
        *,
        allow_empty: bool = False,
        check: Callable[[str], str | None] | None = None,
    ) -> tuple[str, ...]:
        """One or more strings matching `pattern` (and `check`, which returns a problem or None)."""
        items = self.scalar_or_sequence(node, key) if allow_empty else self.nonempty(node, key)
        out: list[str] = []
        for item, here in items:
            text = self.string(item, here)
            if not pattern.match(text):
                raise self.err(item, here, f"expected {what}, got {echo(text)}")
            problem = check(text) if check is not None else None
            if problem is not None:
                raise self.err(item, here, problem)
            out.append(text)
        return tuple(dict.fromkeys(out))

    def optional_name(
        self, m: Mapping[str, YamlEntry], name: str, key: str, pattern: re.Pattern[str], allowed: str
    ) -> str | None:
        node = self.present(m, name)
        return self.name(node, f"{key}.{name}", pattern, allowed) if node is not None else None

    def text(self, m: Mapping[str, YamlEntry], name: str, key: str) -> str:
        node = self.present(m, name)
        return self.string(node, f"{key}.{name}").strip() if node is not None else ""


def _column_glob_problem(column: str) -> str | None:
    parts = column.split(".")
    if len(parts) in (2, 3) and all(parts):
        return None
    hint = f" (for a column of any table, write '*.{column}')" if len(parts) == 1 else ""
    return f"expected a glob over [schema.]table.column, got {echo(column)}{hint}"
