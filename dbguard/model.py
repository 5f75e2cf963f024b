"""Shared vocabulary of dbguard: who is connected, what they asked, what was decided.

Owns the frozen value types that cross layer boundaries (session -> policy -> journal).
It imports nothing from dbguard; every other package may import it.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol


class IdentityKind(enum.StrEnum):
    AGENT = "agent"
    HUMAN = "human"
    SERVICE = "service"


@dataclass(frozen=True, slots=True)
class Identity:
    """A dbguard identity as the session sees it once authenticated (never its secret)."""

    name: str
    kind: IdentityKind
    roles: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class SessionInfo:
    """Facts about one client session, fixed once the client is authenticated."""

    session_id: str
    listener: str
    protocol: str  # "postgres" | "mysql"
    identity: Identity
    client_address: str
    database: str
    application_name: str = ""
    tls: bool = False


class StatementSource(enum.StrEnum):
    """Where a SQL text entered the proxy."""

    SIMPLE_QUERY = "query"  # PostgreSQL Query message / MySQL COM_QUERY
    PARSE = "parse"  # PostgreSQL Parse message / MySQL COM_STMT_PREPARE


class StatementKind(enum.StrEnum):
    """What a statement does (PRODUCT.md "Statement kinds"). A statement has every kind it
    performs anywhere in it: `WITH d AS (DELETE ...) SELECT` is both `delete` and `select`."""

    SELECT = "select"
    INSERT = "insert"
    UPDATE = "update"
    DELETE = "delete"
    MERGE = "merge"
    CREATE = "create"
    ALTER = "alter"
    DROP = "drop"
    TRUNCATE = "truncate"
    GRANT = "grant"
    REVOKE = "revoke"
    COPY = "copy"
    CALL = "call"
    DO = "do"
    SET = "set"
    TRANSACTION = "transaction"
    PREPARE = "prepare"
    EXECUTE = "execute"
    EXPLAIN = "explain"
    SHOW = "show"
    USE = "use"
    LOAD = "load"
    OTHER = "other"


class Feature(enum.StrEnum):
    """Risky properties of a statement (PRODUCT.md "Features"); rules match them by name."""

    MULTI_STATEMENT = "multi_statement"
    DYNAMIC_SQL = "dynamic_sql"
    FILE_ACCESS = "file_access"
    PROGRAM_EXECUTION = "program_execution"
    UNTRUSTED_CODE = "untrusted_code"
    PRIVILEGE_CHANGE = "privilege_change"
    SESSION_CHANGE = "session_change"
    SYSTEM_ADMIN = "system_admin"
    USER_CODE_CALL = "user_code_call"
    UNPARSEABLE = "unparseable"


# Statement kinds that can carry a WHERE clause; `where: missing|present` looks at these.
FILTERABLE_KINDS = frozenset({StatementKind.SELECT, StatementKind.UPDATE, StatementKind.DELETE})


@dataclass(frozen=True, slots=True)
class ParseSettings:
    """The session settings that change what a SQL text means, as the server will read it.

    Part of every analysis cache key. PostgreSQL: `standard_conforming_strings` and the
    schemas an unqualified table name can resolve to (the session's search_path, without
    `$user`). MySQL: the current database and the `sql_mode` flags that change lexing.
    (The client encoding is applied before analysis: the analyser receives decoded text.)
    """

    dialect: str  # "postgres" | "mysql"
    standard_conforming_strings: bool = True
    search_path: tuple[str, ...] = ("public",)  # MySQL: (current database,) or () before USE
    ansi_quotes: bool = False  # MySQL sql_mode ANSI_QUOTES: "x" is an identifier
    no_backslash_escapes: bool = False  # MySQL sql_mode NO_BACKSLASH_ESCAPES


POSTGRES_DEFAULTS = ParseSettings("postgres")
MYSQL_DEFAULTS = ParseSettings("mysql", search_path=())


@dataclass(frozen=True, slots=True)
class SourceColumn:
    """A table column a result value may come from (lineage, masking).

    `schema` None: written unqualified (any schema). `column` "*": the whole row, every
    column of the table. `table` "*" (with column "*"): anything at all, for values the
    analysis cannot trace (user functions, constructs it does not understand).
    """

    schema: str | None
    table: str
    column: str


ANY_SOURCE = SourceColumn(None, "*", "*")


@dataclass(frozen=True, slots=True)
class ResultLineage:
    """Where each column of a statement's result may come from (`dbguard.sql.*_lineage`).

    `columns` has one set per output column, in order, or is None when the positions cannot
    be known without the catalog (a `*` over a table, a statement with several results).
    `sources` is the union of every output's sources: what a column whose position is
    unknown may carry. Only what reaches the output counts: a column read in WHERE, JOIN ON,
    GROUP BY or ORDER BY only does not (inference through filters is a documented limit).
    """

    columns: tuple[frozenset[SourceColumn], ...] | None
    sources: frozenset[SourceColumn]


UNTRACEABLE = ResultLineage(None, frozenset({ANY_SOURCE}))


@dataclass(frozen=True, slots=True)
class StatementInfo:
    """What one SQL statement really does, in the same vocabulary for both dialects.

    Produced by `dbguard.sql` (pglast for PostgreSQL, sqlglot for MySQL), read by the policy
    engine, the journal and `dbguard check --explain`. Holds no AST: only compact facts, so
    it can be cached for the life of the process.
    """

    text: str  # this statement's own text, as it appeared in the message
    command: str  # the top-level command for people, e.g. "DELETE", "CREATE TABLE", "EXPLAIN"
    kinds: frozenset[StatementKind]  # every operation performed anywhere in the statement
    reads: frozenset[str] = frozenset()  # "schema.table" (MySQL: "database.table")
    writes: frozenset[str] = frozenset()  # "schema.table"; DROP SCHEMA s: "s.*"
    functions: frozenset[str] = frozenset()  # lower-case, qualified as written: "pg_catalog.now"
    features: frozenset[Feature] = frozenset()
    # Kinds (of FILTERABLE_KINDS) with at least one operation whose WHERE is missing or always
    # true: `DELETE FROM t` -> {delete}; `SELECT * FROM t WHERE 1=1` -> {select}.
    unfiltered: frozenset[StatementKind] = frozenset()
    fingerprint: str = ""  # same for statements that differ only in literal values
    # SQL-level prepared statements: PREPARE name AS/FROM ... defines `prepares`; EXECUTE name
    # refers to `executes` (resolved per session); DEALLOCATE name / ALL ("*") sets `deallocates`.
    prepares: str = ""
    executes: str = ""
    deallocates: str = ""
    # True when running this statement may change how later statements are lexed or parsed
    # (standard_conforming_strings, client_encoding, sql_mode, character set, RESET ALL, or user
    # code that could SET them): the session decides nothing after it until it has completed.
    changes_parsing: bool = False
    # True when the analysis depends on literal values (a constant-only WHERE, set_config's
    # setting name...): such results are cached by exact text only, never by shape.
    literal_sensitive: bool = False
    detail: str = ""  # for people: why it is unparseable, what was noticed

    @property
    def unparseable(self) -> bool:
        return Feature.UNPARSEABLE in self.features


class Action(enum.StrEnum):
    ALLOW = "allow"
    HOLD = "hold"
    BLOCK = "block"


@dataclass(frozen=True, slots=True)
class Decision:
    """What the policy decided for one statement (or one multi-statement message)."""

    action: Action
    rule_ids: tuple[str, ...] = ()
    reason: str = ""
    hint: str = ""
    enforced: bool = True  # False: observe-only (defaults.enforce / rule enforce: false)
    details: dict[str, str] = field(default_factory=dict)  # rendered as key=value (DETAIL)
    # Rule ids that matched in observe-only mode (their action was not enforced).
    observed: tuple[str, ...] = ()
    # Later statements of the session must not be decided before this one has completed
    # (it may change how they are parsed); see StatementInfo.changes_parsing.
    barrier: bool = False
    # What the analyser found in the message, one entry per statement (kinds, tables,
    # features): the journal records its summary. Empty for decisions made without analysis.
    analysis: tuple[StatementInfo, ...] = field(default=(), compare=False, repr=False)


ALLOW = Decision(Action.ALLOW)


class SessionGate(Protocol):
    """The decision point of one session: every SQL text passes through `decide` exactly
    once, in the order the server will run them, before any of it is sent upstream.

    Implementations are fast (they run on the event loop for every statement) and do no I/O;
    anything slow (a hold waiting for a person) is expressed in the returned Decision and
    carried out by the session. They keep the session's analysis state: the settings that
    change how SQL is read (fed from the server's ParameterStatus reports) and SQL-level
    prepared statements.
    """

    def decide(self, sql: bytes, source: StatementSource, name: str) -> Decision:
        """`sql` is the text as the client sent it, in the session's client encoding;
        `name` is the extended protocol's statement name (Parse), "" otherwise."""
        ...

    def server_parameter(self, name: str, value: str) -> None:
        """A ParameterStatus the server reported (client_encoding, standard_conforming_strings...)."""
        ...


class Gate(Protocol):
    """A listener's policy: opens one SessionGate per authenticated session."""

    def open(self, session: SessionInfo, startup: Mapping[str, str]) -> SessionGate:
        """`startup` holds the client's startup settings as sent upstream (search_path...)."""
        ...


class _AllowAllSession:
    __slots__ = ()

    def decide(self, sql: bytes, source: StatementSource, name: str) -> Decision:
        return ALLOW

    def server_parameter(self, name: str, value: str) -> None:
        return None


class AllowAllGate:
    """The gate when no rules are configured (tests of the protocol layer): allow everything."""

    _session = _AllowAllSession()

    def open(self, session: SessionInfo, startup: Mapping[str, str]) -> SessionGate:
        return self._session
