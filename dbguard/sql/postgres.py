"""PostgreSQL statement analysis: SQL text -> one `StatementInfo` per statement, with pglast.

Owns reading PostgreSQL SQL the way the server will and describing what each statement does in
dbguard's vocabulary (`dbguard.model`): kinds performed anywhere, tables read and written,
functions called, risky features, unfiltered UPDATE/DELETE/SELECT, fingerprint. It is the only
module that imports pglast for analysis; it does no I/O and keeps no state between calls.

How: `pglast.parser.parse_sql_json` + `json.loads`, then a walk over the plain dicts (building
pglast's Python node objects costs ~10x more). Statement nodes are handled by the table below;
a statement node it does not know is unparseable (fail closed). Inside statements every
dict/list child is walked generically, so a function call or a sub-statement hidden anywhere (a
column DEFAULT, an index expression, a view body, a CHECK, RETURNING, ON CONFLICT, VALUES,
LATERAL, a window clause, CASE...) is still seen. With `standard_conforming_strings = off` the
text is first rewritten by `pg_lexer` so that libpg_query (always "on") reads it as the server
does. Any exception at all (parse error, recursion, an unexpected tree) -> unparseable.

Statement kinds (PRODUCT.md "Statement kinds") per pglast node; "+ inner" adds the kinds of the
contained statement, [brackets] are features:

  SelectStmt (and VALUES)          select; SELECT INTO: select + create
  InsertStmt                       insert; ON CONFLICT DO UPDATE: + update
  UpdateStmt, DeleteStmt           update, delete
  MergeStmt                        merge + insert / update / delete per WHEN action
  CreateStmt, CreateForeignTable   create (PARTITION OF / INHERITS also write the parent)
  CreateTableAsStmt                create + inner (CREATE TABLE AS, CREATE MATERIALIZED VIEW);
                                   WITH NO DATA: the query is a stored definition
  ViewStmt                         create; the body counts for reads / functions, not as a select
  IndexStmt, CreateSeqStmt, CreateSchemaStmt, DefineStmt, Composite/Enum/RangeTypeStmt,
  CreateDomainStmt, CreateCastStmt, CreateConversionStmt, CreateOpClass/OpFamilyStmt,
  CreateTransformStmt, CreateStatsStmt, CreatedbStmt, ImportForeignSchemaStmt,
  CreatePublicationStmt            create
  RuleStmt                         create + the DML kinds its actions name
  CreateFunctionStmt               create [untrusted_code] + the DML kinds of a SQL-standard body
  CreateTrigStmt                   create [untrusted_code]
  CreateEventTrigStmt, CreatePLangStmt, CreateExtensionStmt
                                   create [system_admin, untrusted_code]
  CreateAmStmt, CreateSubscriptionStmt, CreateForeignServerStmt, CreateFdwStmt,
  CreateUserMappingStmt            create [system_admin]
  CreateTableSpaceStmt             create [system_admin, file_access]
  CreateRoleStmt                   create [privilege_change]
  CreatePolicyStmt, AlterPolicyStmt  create, alter [privilege_change]
  AlterTableStmt                   alter; + drop for DROP COLUMN, DROP CONSTRAINT, DETACH PARTITION,
                                   NO INHERIT, DROP IDENTITY; OWNER TO / row security [privilege_change]
  other Alter*Stmt, RenameStmt, AlterObjectSchemaStmt, AlterObjectDependsStmt, CommentStmt
                                   alter (ALTER SYSTEM, extension, server, subscription, FDW,
                                   tablespace, event trigger: [system_admin]; ALTER ROLE,
                                   SECURITY DEFINER: [privilege_change])
  AlterOwnerStmt, SecLabelStmt, ReassignOwnedStmt   alter [privilege_change]
  AlterDomainStmt                  alter; DROP CONSTRAINT: + drop
  DropStmt, DropdbStmt, DropSubscriptionStmt, DropUserMappingStmt, DropTableSpaceStmt
                                   drop (extensions, servers, languages...: [system_admin])
  DropRoleStmt, DropOwnedStmt      drop [privilege_change]
  TruncateStmt                     truncate
  GrantStmt, GrantRoleStmt         grant or revoke [privilege_change]
  AlterDefaultPrivilegesStmt       alter + grant or revoke [privilege_change]
  CopyStmt                         copy + insert (FROM) or select (TO) + inner;
                                   'file' [file_access], PROGRAM [program_execution]
  CallStmt                         call [user_code_call unless a built-in]
  DoStmt                           do [untrusted_code]
  VariableSetStmt                  set [session_change]; ROLE, SESSION AUTHORIZATION:
                                   [privilege_change]; SET TRANSACTION: transaction
  VariableShowStmt                 show
  TransactionStmt, ConstraintsSetStmt   transaction
  PrepareStmt                      prepare + inner (`prepares`)
  ExecuteStmt                      execute (`executes`, resolved by the session)
  DeallocateStmt                   prepare (`deallocates`: the name or "*")
  ExplainStmt                      explain + inner, with or without ANALYZE
  DeclareCursorStmt                select + inner
  FetchStmt (FETCH, MOVE), ClosePortalStmt   select
  ListenStmt, UnlistenStmt, NotifyStmt, VacuumStmt, ClusterStmt, ReindexStmt,
  RefreshMatViewStmt, LockStmt     other
  CheckPointStmt                   other [system_admin]
  DiscardStmt                      other [session_change]
  LoadStmt                         load [system_admin, file_access]
  AlterSystemStmt                  alter [system_admin]
  anything else                    unparseable (ReturnStmt, PLAssignStmt... at top level)
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Iterable
from typing import Any, Final

from pglast.parser import ParseError, fingerprint, parse_sql_json

from dbguard.model import Feature, ParseSettings, StatementInfo, StatementKind
from dbguard.sql import pg_functions, pg_lexer, unparseable

Node = dict[str, Any]

_K = StatementKind
_F = Feature

# Kinds whose analysis does not depend on literal values (fingerprint-cacheable) unless a
# constant-only WHERE or an argument-sensitive function says otherwise.
_LITERAL_SAFE_KINDS: Final = frozenset(
    {_K.SELECT, _K.INSERT, _K.UPDATE, _K.DELETE, _K.MERGE, _K.TRANSACTION, _K.EXPLAIN}
)
_UPPER: Final = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZ")
_TABLE_LIKE: Final = frozenset(
    {"OBJECT_TABLE", "OBJECT_VIEW", "OBJECT_MATVIEW", "OBJECT_SEQUENCE", "OBJECT_FOREIGN_TABLE", "OBJECT_INDEX"}
)
# Objects named as [schema.]table.name: the table is everything but the last part.
_ON_TABLE: Final = frozenset(
    {"OBJECT_TRIGGER", "OBJECT_POLICY", "OBJECT_RULE", "OBJECT_COLUMN", "OBJECT_TABCONSTRAINT"}
)
_ADMIN_OBJECTS: Final = frozenset(
    {
        "OBJECT_EXTENSION",
        "OBJECT_EVENT_TRIGGER",
        "OBJECT_FOREIGN_SERVER",
        "OBJECT_FDW",
        "OBJECT_LANGUAGE",
        "OBJECT_ACCESS_METHOD",
    }
)
_OBJECT_WORDS: Final = {
    "OBJECT_MATVIEW": "MATERIALIZED VIEW",
    "OBJECT_FOREIGN_SERVER": "SERVER",
    "OBJECT_FDW": "FOREIGN DATA WRAPPER",
    "OBJECT_TSCONFIGURATION": "TEXT SEARCH CONFIGURATION",
    "OBJECT_TSDICTIONARY": "TEXT SEARCH DICTIONARY",
    "OBJECT_TSPARSER": "TEXT SEARCH PARSER",
    "OBJECT_TSTEMPLATE": "TEXT SEARCH TEMPLATE",
    "OBJECT_STATISTIC_EXT": "STATISTICS",
    "OBJECT_TABCONSTRAINT": "TABLE",
    "OBJECT_COLUMN": "TABLE",
    "OBJECT_DOMCONSTRAINT": "DOMAIN",
    "OBJECT_ATTRIBUTE": "TYPE",
    "OBJECT_OPCLASS": "OPERATOR CLASS",
    "OBJECT_OPFAMILY": "OPERATOR FAMILY",
    "OBJECT_AMOP": "OPERATOR FAMILY",
    "OBJECT_AMPROC": "OPERATOR FAMILY",
    "OBJECT_LARGEOBJECT": "LARGE OBJECT",
    "OBJECT_DEFACL": "DEFAULT PRIVILEGES",
    "OBJECT_PUBLICATION_REL": "PUBLICATION",
    "OBJECT_PUBLICATION_NAMESPACE": "PUBLICATION",
    "OBJECT_PARAMETER_ACL": "PARAMETER",
}
# ALTER TABLE sub-commands that destroy an object or its data: the statement is a drop too.
_DESTRUCTIVE_ALTER_TABLE: Final = frozenset(
    {
        "AT_DropColumn",
        "AT_DropConstraint",
        "AT_DetachPartition",
        "AT_DetachPartitionFinalize",
        "AT_DropInherit",
        "AT_DropIdentity",
    }
)
# ALTER TABLE sub-commands that change who may see or change the table.
_PRIVILEGE_ALTER_TABLE: Final = frozenset(
    {"AT_ChangeOwner", "AT_DisableRowSecurity", "AT_NoForceRowSecurity", "AT_EnableRowSecurity", "AT_ForceRowSecurity"}
)
_TRANSACTION_COMMANDS: Final = {
    "TRANS_STMT_BEGIN": "BEGIN",
    "TRANS_STMT_START": "START TRANSACTION",
    "TRANS_STMT_COMMIT": "COMMIT",
    "TRANS_STMT_ROLLBACK": "ROLLBACK",
    "TRANS_STMT_SAVEPOINT": "SAVEPOINT",
    "TRANS_STMT_RELEASE": "RELEASE",
    "TRANS_STMT_ROLLBACK_TO": "ROLLBACK TO SAVEPOINT",
    "TRANS_STMT_PREPARE": "PREPARE TRANSACTION",
    "TRANS_STMT_COMMIT_PREPARED": "COMMIT PREPARED",
    "TRANS_STMT_ROLLBACK_PREPARED": "ROLLBACK PREPARED",
}
# Ending a transaction (or rolling back to a savepoint) reverts SET / SET LOCAL made inside it,
# standard_conforming_strings included: later statements may parse differently.
_SETTING_REVERTING_TRANSACTIONS: Final = frozenset(
    {"TRANS_STMT_COMMIT", "TRANS_STMT_ROLLBACK", "TRANS_STMT_ROLLBACK_TO", "TRANS_STMT_PREPARE"}
)
_MERGE_KINDS: Final = {"CMD_INSERT": _K.INSERT, "CMD_UPDATE": _K.UPDATE, "CMD_DELETE": _K.DELETE}
_SELECT_ONLY: Final = frozenset({_K.SELECT})
_SELECT_HANDLED: Final = frozenset({"withClause", "intoClause", "fromClause", "whereClause", "larg", "rarg"})
_FUNCNAME: Final = frozenset({"funcname"})
_JOIN_SIDES: Final = frozenset({"larg", "rarg"})
_RELATION: Final = frozenset({"relation"})
_OPERATOR_NAME: Final = frozenset({"name", "operName", "useOp"})
_ALWAYS_TRUE_OPERATORS: Final = frozenset({"=", ">=", "<="})
_ALWAYS_FALSE_OPERATORS: Final = frozenset({"<>", "!=", "<", ">"})
_COMPLEMENTARY_TESTS: Final = {
    "IS_NULL": "IS_NOT_NULL",
    "IS_NOT_NULL": "IS_NULL",
    "IS_TRUE": "IS_NOT_TRUE",
    "IS_NOT_TRUE": "IS_TRUE",
    "IS_FALSE": "IS_NOT_FALSE",
    "IS_NOT_FALSE": "IS_FALSE",
    "IS_UNKNOWN": "IS_NOT_UNKNOWN",
    "IS_NOT_UNKNOWN": "IS_UNKNOWN",
}
# PostgreSQL's boolin: case-insensitive, surrounding spaces ignored, unique prefixes allowed.
_TRUE_WORDS: Final = frozenset({"t", "tr", "tru", "true", "y", "ye", "yes", "on", "1"})
_FALSE_WORDS: Final = frozenset({"f", "fa", "fal", "fals", "false", "n", "no", "of", "off", "0"})

# Truth of a WHERE condition, or of one of its boolean parts.
_TRUE: Final = 1
_FALSE: Final = 0
_DEPENDS: Final = -1  # depends on the row


class _Unsupported(Exception):
    """The walker met something it does not understand: the statement is unparseable."""

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


def analyse_postgres(sql: str, settings: ParseSettings) -> tuple[StatementInfo, ...]:
    """Analyse one message's SQL text as a PostgreSQL server with `settings` would read it.

    Never raises: whatever cannot be fully understood comes back as unparseable.
    """
    try:
        return _analyse(sql, settings)
    except RecursionError:
        return (unparseable(sql, "statement nested too deeply"),)
    except Exception as error:  # fail closed on anything unexpected
        return (unparseable(sql, f"analyser error: {type(error).__name__}"),)


def postgres_fingerprint(sql: str, settings: ParseSettings) -> str:
    """The shape fingerprint of `sql` as the server will read it ("" when it cannot be read).

    A cache keyed by shape must use this rather than `pglast.parser.fingerprint(sql)`: with
    standard_conforming_strings off the same text can have a different shape.
    """
    if "\x00" in sql:
        return ""
    try:
        text = sql if settings.standard_conforming_strings else pg_lexer.rewrite_for_scs_off(sql).text
        return str(fingerprint(text))
    except Exception:
        return ""


def _analyse(sql: str, settings: ParseSettings) -> tuple[StatementInfo, ...]:
    if "\x00" in sql:
        return (unparseable(sql, "NUL character in statement text"),)
    rewrite: pg_lexer.Rewrite | None = None
    parsed_text = sql
    if not settings.standard_conforming_strings:
        try:
            rewrite = pg_lexer.rewrite_for_scs_off(sql)
        except pg_lexer.LexError as error:
            return (unparseable(sql, str(error)),)
        parsed_text = rewrite.text
    try:
        tree = json.loads(parse_sql_json(parsed_text))
    except ParseError as error:
        return (unparseable(sql, str(error)),)
    raw_statements = [raw for raw in tree["stmts"] if "stmt" in raw]
    if not raw_statements:
        return ()
    multi = len(raw_statements) > 1
    to_char = _CharOffsets(parsed_text)
    results: list[StatementInfo] = []
    for raw in raw_statements:
        start_byte = raw.get("stmt_location", 0)
        length = raw.get("stmt_len", 0)
        start = to_char(start_byte)
        end = to_char(start_byte + length) if length else len(parsed_text)
        parsed_slice = parsed_text[start:end].strip()
        if rewrite is None:
            original_slice = parsed_slice
        else:
            original_slice = sql[rewrite.original_offset(start) : rewrite.original_offset(end)].strip()
        info = _analyse_statement(raw["stmt"], parsed_slice, original_slice, settings)
        if multi:
            info = dataclasses.replace(info, features=info.features | {_F.MULTI_STATEMENT})
        results.append(info)
    return tuple(results)


class _CharOffsets:
    """pglast reports byte offsets into the UTF-8 text; this turns them into character offsets,
    for ascending offsets in linear time overall (it decodes only what lies between two calls)."""

    __slots__ = ("_byte", "_char", "_encoded")

    def __init__(self, text: str) -> None:
        self._encoded = None if text.isascii() else text.encode("utf-8")
        self._byte = 0
        self._char = 0

    def __call__(self, byte_offset: int) -> int:
        if self._encoded is None:
            return byte_offset
        if byte_offset < self._byte:  # not ascending: start again from the beginning
            self._byte = self._char = 0
        self._char += len(self._encoded[self._byte : byte_offset].decode("utf-8"))
        self._byte = byte_offset
        return self._char


def _analyse_statement(node: Node, parsed_text: str, text: str, settings: ParseSettings) -> StatementInfo:
    name = next(iter(node))
    handler = _STATEMENTS.get(name)
    if handler is None:
        return unparseable(text, f"unknown statement {name}")
    walker = _Walker(settings.search_path)
    try:
        handler(walker, node[name])
    except _Unsupported as error:
        return unparseable(text, error.detail)
    kinds = frozenset(walker.kinds)
    literal_sensitive = walker.literal_sensitive or not kinds <= _LITERAL_SAFE_KINDS
    return StatementInfo(
        text=text,
        command=walker.command,
        kinds=kinds,
        reads=frozenset(walker.reads),
        writes=frozenset(walker.writes),
        functions=frozenset(walker.functions),
        features=frozenset(walker.features),
        unfiltered=frozenset(walker.unfiltered),
        fingerprint=str(fingerprint(parsed_text)),
        prepares=walker.prepares,
        executes=walker.executes,
        deallocates=walker.deallocates,
        changes_parsing=walker.changes_parsing,
        literal_sensitive=literal_sensitive,
        detail="; ".join(dict.fromkeys(walker.notes)),
    )


class _Walker:
    """Facts gathered while walking one top-level statement's tree."""

    __slots__ = (
        "changes_parsing",
        "command",
        "ctes",
        "deallocates",
        "executes",
        "features",
        "functions",
        "kinds",
        "literal_sensitive",
        "notes",
        "prepares",
        "reads",
        "search_path",
        "unfiltered",
        "writes",
    )

    def __init__(self, search_path: tuple[str, ...]) -> None:
        self.kinds: set[StatementKind] = set()
        self.reads: set[str] = set()
        self.writes: set[str] = set()
        self.functions: set[str] = set()
        self.features: set[Feature] = set()
        self.unfiltered: set[StatementKind] = set()
        self.search_path = search_path
        self.ctes: frozenset[str] = frozenset()  # CTE names visible where the walk is
        self.changes_parsing = False
        self.literal_sensitive = False
        self.prepares = ""
        self.executes = ""
        self.deallocates = ""
        self.command = ""
        self.notes: list[str] = []

    # ------------------------------------------------------------------ generic walk

    def walk(self, value: Any) -> None:
        """Walk any JSON value: a node wrapper {"NodeName": {...}}, a bare struct, a list."""
        kind = type(value)
        if kind is dict:
            self.node(value)
        elif kind is list:
            for item in value:
                kind = type(item)
                if kind is dict:
                    self.node(item)
                elif kind is list:
                    self.walk(item)

    def node(self, value: Node) -> None:
        """Walk a dict: a node wrapper {"NodeName": {...}} or a bare struct."""
        if len(value) == 1:
            [(key, body)] = value.items()
            handler = _NODES.get(key)
            if handler is not None:
                handler(self, body)
                return
            if key[0] in _UPPER:
                if key.endswith("Stmt"):
                    raise _Unsupported(f"unknown statement {key}")
                if type(body) is dict:
                    self.walk_fields(body)
                return
        self.bare(value)

    def walk_fields(self, body: Node) -> None:
        for child in body.values():
            kind = type(child)
            if kind is dict:
                self.node(child)
            elif kind is list:
                self.walk(child)

    def walk_fields_except(self, body: Node, skip: frozenset[str]) -> None:
        for key, child in body.items():
            if key not in skip:
                kind = type(child)
                if kind is dict:
                    self.node(child)
                elif kind is list:
                    self.walk(child)

    def bare(self, body: Node) -> None:
        """A struct embedded without its node name (a `RangeVar *` field, a `FuncCall *`...)."""
        if "relname" in body:
            self.read_relation(body)
        elif "funcname" in body and "funcformat" in body:
            self.func_call(body)
        elif "limitOption" in body and "op" in body:
            self.select_stmt(body)
        else:
            self.walk_fields(body)

    def definition(self, node: Any) -> None:
        """Walk a body that is stored, not run, by this statement (a view query, rule actions,
        a function's SQL body): its tables, functions and features count, and so do the DML
        kinds it names, but not `select` and not unfiltered."""
        kinds, unfiltered = self.kinds, self.unfiltered
        self.kinds, self.unfiltered = set(), set()
        self.walk(node)
        self.kinds.discard(_K.SELECT)
        kinds |= self.kinds
        self.kinds, self.unfiltered = kinds, unfiltered

    def named(self, command: str) -> None:
        """The command of the top-level statement: the first handler to run names it."""
        if not self.command:
            self.command = command

    def note(self, text: str) -> None:
        self.notes.append(text)

    # ------------------------------------------------------------------ names and tables

    def resolve(self, schema: str | None, name: str) -> list[str]:
        """Every table an (optionally qualified) name can mean. Unqualified: one candidate per
        search_path schema (the server picks the first that has it, which we cannot know), and
        pg_catalog for pg_* names (the server searches pg_catalog first) or an empty path."""
        if schema is not None:
            return [f"{schema}.{name}"]
        candidates = [f"{path_schema}.{name}" for path_schema in self.search_path]
        if (not candidates or name.startswith("pg_")) and "pg_catalog" not in self.search_path:
            candidates.append(f"pg_catalog.{name}")
        return candidates

    def resolve_parts(self, parts: list[str]) -> list[str]:
        """A name given as [catalog.][schema.]name parts."""
        return self.resolve(parts[-2] if len(parts) > 1 else None, parts[-1])

    def read_relation(self, relation: Node) -> bool:
        """Record a table read; False when the name is a CTE in scope, not a table."""
        schema = relation.get("schemaname")
        name = relation["relname"]
        if schema is None and name in self.ctes:
            return False
        self.reads.update(self.resolve(schema, name))
        return True

    def write_relation(self, relation: Node) -> None:
        schema = relation.get("schemaname")
        if schema is None and relation.get("relpersistence") == "t":
            self.writes.add(f"pg_temp.{relation['relname']}")  # CREATE TEMP TABLE x
        else:
            self.writes.update(self.resolve(schema, relation["relname"]))

    def write_wrapped_relations(self, items: Iterable[Node]) -> None:
        for item in items:
            relation = item.get("RangeVar")
            if relation is not None:
                self.write_relation(relation)

    def from_items(self, items: Iterable[Node]) -> bool:
        """Walk FROM / USING items; True when one of them directly reads a table."""
        reads_table = False
        for item in items:
            key = next(iter(item))
            body = item[key]
            if key == "RangeVar":
                reads_table = self.read_relation(body) or reads_table
            elif key == "JoinExpr":
                reads_table = self.from_items((body["larg"], body["rarg"])) or reads_table
                self.walk_fields_except(body, _JOIN_SIDES)
            elif key == "RangeTableSample":
                reads_table = self.from_items((body["relation"],)) or reads_table
                self.walk_fields_except(body, _RELATION)
            else:
                self.walk(item)
        return reads_table

    def with_clause(self, clause: Node) -> None:
        """Walk a WITH list with PostgreSQL's scoping: a CTE sees the CTEs before it (all of
        them, itself included, when RECURSIVE); the statement body sees them all. A name that
        is not in scope is a table."""
        ctes = clause.get("ctes", ())
        names = [cte["CommonTableExpr"]["ctename"] for cte in ctes]
        recursive = bool(clause.get("recursive"))
        visible = self.ctes | frozenset(names) if recursive else self.ctes
        for cte, name in zip(ctes, names, strict=True):
            self.ctes = visible
            self.walk_fields(cte["CommonTableExpr"])
            if not recursive:
                visible = visible | {name}
        self.ctes = visible

    # ------------------------------------------------------------------ functions and operators

    def func_call(self, body: Node) -> None:
        names = [item["String"]["sval"] for item in body["funcname"]]
        self.add_function(names, body.get("funcformat") == "COERCE_SQL_SYNTAX", body.get("args") or [])
        self.walk_fields_except(body, _FUNCNAME)

    def add_function(self, names: list[str], sql_syntax: bool, args: list[Node]) -> None:
        lowered = [name.lower() for name in names]
        bare_name = lowered[-1]
        if sql_syntax and len(lowered) == 2 and lowered[0] == "pg_catalog":
            self.functions.add(bare_name)  # EXTRACT(...), TRIM(...): written without a schema
        else:
            self.functions.add(".".join(lowered))
        if len(lowered) == 1:
            builtin = bare_name in pg_functions.BUILTIN_FUNCTIONS
        else:
            builtin = lowered[-2] in pg_functions.SYSTEM_SCHEMAS
        builtin = builtin and lowered == names  # a quoted "Lower" is not pg_catalog.lower
        effect = pg_functions.SIDE_EFFECTS.get(bare_name)
        if effect is not None:
            self.features |= effect.features
            builtin = builtin and effect.builtin
            if effect.changes_parsing:
                self.changes_parsing = True
        if bare_name == "set_config":
            self.set_config(args)
        if bare_name in pg_functions.ARGUMENT_SENSITIVE:
            self.literal_sensitive = True
        if not builtin:
            self.user_code(f"calls {'.'.join(lowered)}()")

    def set_config(self, args: list[Node]) -> None:
        setting = _string_constant(args[0]) if args else None
        setting = setting.strip().lower() if setting is not None else None
        if setting is None or setting in pg_functions.SETTINGS_THAT_CHANGE_PARSING:
            self.changes_parsing = True
        if setting is None or setting in ("role", "session_authorization"):
            self.features.add(_F.PRIVILEGE_CHANGE)

    def user_code(self, note: str) -> None:
        """User code runs: its body is invisible, and it could change any setting."""
        self.features.add(_F.USER_CODE_CALL)
        self.changes_parsing = True
        self.note(note)

    def operator(self, name: list[Node] | None) -> None:
        """An operator named as [schema.]symbol: one that is not built-in runs user code."""
        if not name:
            return
        parts = [item["String"]["sval"] for item in name if "String" in item]
        symbol = parts[-1] if parts else ""
        if symbol and not symbol[0].isalpha():  # BETWEEN & co. carry a keyword, not an operator
            schema_ok = len(parts) == 1 or parts[-2].lower() in pg_functions.SYSTEM_SCHEMAS
            if not schema_ok or symbol not in pg_functions.BUILTIN_OPERATORS:
                self.user_code(f"uses operator {'.'.join(parts)}")

    def a_expr(self, body: Node) -> None:
        self.operator(body.get("name"))
        self.walk_fields_except(body, _OPERATOR_NAME)

    def sub_link(self, body: Node) -> None:
        self.operator(body.get("operName"))  # x === ANY (SELECT ...)
        self.walk_fields_except(body, _OPERATOR_NAME)

    def sort_by(self, body: Node) -> None:
        self.operator(body.get("useOp"))  # ORDER BY x USING ===
        self.walk_fields_except(body, _OPERATOR_NAME)

    # ------------------------------------------------------------------ WHERE conditions

    def check_where(self, where: Node | None, kind: StatementKind) -> None:
        """Record `kind` as unfiltered when its WHERE is missing or always true."""
        if where is None:
            self.unfiltered.add(kind)
            return
        if self.truth(where) == _TRUE:
            self.unfiltered.add(kind)
        self.walk(where)

    def truth(self, node: Node) -> int:
        """_TRUE / _FALSE when a boolean expression has that value for every row, else
        _DEPENDS. An expression that mentions no column has the same value for every row:
        unless it is provably false it counts as true (fail closed), and the verdict then
        rests on literal values (literal_sensitive)."""
        key = next(iter(node))
        body = node[key]
        if key == "BoolExpr":
            return self.bool_truth(body)
        if not _mentions_rows(node):
            self.literal_sensitive = True
            return _FALSE if _constant_truth(node) is False else _TRUE
        if key == "A_Expr":
            return _same_sides_truth(body)
        if key == "TypeCast":
            return self.truth(body["arg"])
        return _DEPENDS

    def bool_truth(self, body: Node) -> int:
        operator = body["boolop"]
        args: list[Node] = body.get("args") or []
        if operator == "NOT_EXPR":
            inner = self.truth(args[0])
            return _DEPENDS if inner == _DEPENDS else 1 - inner
        values = [self.truth(arg) for arg in args]
        if operator == "AND_EXPR":
            if all(value == _TRUE for value in values):
                return _TRUE
            return _FALSE if _FALSE in values else _DEPENDS
        if _TRUE in values or _complementary_tests(args):
            return _TRUE
        return _FALSE if all(value == _FALSE for value in values) else _DEPENDS

    # ------------------------------------------------------------------ DML

    def select_stmt(self, body: Node) -> None:
        self.named("SELECT INTO" if "intoClause" in body else "SELECT")
        outer = self.ctes
        if "withClause" in body:
            self.with_clause(body["withClause"])
        into = body.get("intoClause")
        if into is not None:
            self.kinds.add(_K.CREATE)
            self.write_relation(into["rel"])
            self.walk_fields_except(into, frozenset({"rel"}))
        if body.get("op", "SETOP_NONE") != "SETOP_NONE":
            self.select_stmt(body["larg"])
            self.select_stmt(body["rarg"])
        else:
            self.kinds.add(_K.SELECT)
            from_clause = body.get("fromClause")
            reads_table = self.from_items(from_clause) if from_clause else False
            where = body.get("whereClause")
            if reads_table:
                self.check_where(where, _K.SELECT)
            elif where is not None:
                self.walk(where)
        self.walk_fields_except(body, _SELECT_HANDLED)
        self.ctes = outer

    def insert_stmt(self, body: Node) -> None:
        self.named("INSERT")
        self.kinds.add(_K.INSERT)
        outer = self.ctes
        if "withClause" in body:
            self.with_clause(body["withClause"])
        self.write_relation(body["relation"])
        source = body.get("selectStmt")
        if source is not None:
            values = source.get("SelectStmt")
            if values is not None and "valuesLists" in values and not values.keys() & _SELECT_HANDLED:
                self.walk_fields(values)  # INSERT ... VALUES: expressions, not a select
            else:
                self.walk(source)
        conflict = body.get("onConflictClause")
        if conflict is not None:
            if conflict.get("action") == "ONCONFLICT_UPDATE":
                self.kinds.add(_K.UPDATE)
            self.walk_fields(conflict)
        self.walk_fields_except(body, frozenset({"relation", "selectStmt", "onConflictClause", "withClause"}))
        self.ctes = outer

    def update_stmt(self, body: Node) -> None:
        self.named("UPDATE")
        self.kinds.add(_K.UPDATE)
        outer = self.ctes
        if "withClause" in body:
            self.with_clause(body["withClause"])
        self.write_relation(body["relation"])
        if "fromClause" in body:
            self.from_items(body["fromClause"])
        self.check_where(body.get("whereClause"), _K.UPDATE)
        self.walk_fields_except(body, frozenset({"relation", "fromClause", "whereClause", "withClause"}))
        self.ctes = outer

    def delete_stmt(self, body: Node) -> None:
        self.named("DELETE")
        self.kinds.add(_K.DELETE)
        outer = self.ctes
        if "withClause" in body:
            self.with_clause(body["withClause"])
        self.write_relation(body["relation"])
        if "usingClause" in body:
            self.from_items(body["usingClause"])
        self.check_where(body.get("whereClause"), _K.DELETE)
        self.walk_fields_except(body, frozenset({"relation", "usingClause", "whereClause", "withClause"}))
        self.ctes = outer

    def merge_stmt(self, body: Node) -> None:
        self.named("MERGE")
        self.kinds.add(_K.MERGE)
        outer = self.ctes
        if "withClause" in body:
            self.with_clause(body["withClause"])
        self.write_relation(body["relation"])
        self.from_items((body["sourceRelation"],))
        join = body.get("joinCondition")
        join_always_true = join is None or self.truth(join) == _TRUE
        for item in body.get("mergeWhenClauses") or ():
            clause = item["MergeWhenClause"]
            kind = _MERGE_KINDS.get(clause.get("commandType", ""))
            if kind is None:
                self.walk_fields(clause)
                continue
            self.kinds.add(kind)
            if kind is not _K.INSERT and "condition" not in clause:
                # WHEN MATCHED on an always-true join touches every target row; WHEN NOT
                # MATCHED BY SOURCE touches every row without a partner: both unbounded.
                by_source = clause.get("matchKind") == "MERGE_WHEN_NOT_MATCHED_BY_SOURCE"
                if by_source or join_always_true:
                    self.unfiltered.add(kind)
            self.walk_fields(clause)
        self.walk_fields_except(body, frozenset({"relation", "sourceRelation", "mergeWhenClauses", "withClause"}))
        self.ctes = outer

    # ------------------------------------------------------------------ statements around DML

    def explain_stmt(self, body: Node) -> None:
        options = body.get("options") or ()
        analyze = any(option.get("DefElem", {}).get("defname") == "analyze" for option in options)
        self.named("EXPLAIN ANALYZE" if analyze else "EXPLAIN")
        self.kinds.add(_K.EXPLAIN)
        self.walk_fields(body)

    def prepare_stmt(self, body: Node) -> None:
        self.named("PREPARE")
        self.kinds.add(_K.PREPARE)
        self.prepares = self.prepares or body["name"]
        self.walk(body.get("query"))

    def execute_stmt(self, body: Node) -> None:
        self.named("EXECUTE")
        self.kinds.add(_K.EXECUTE)
        self.executes = self.executes or body["name"]
        self.walk(body.get("params"))

    def deallocate_stmt(self, body: Node) -> None:
        self.named("DEALLOCATE")
        self.kinds.add(_K.PREPARE)
        name = body.get("name")
        self.deallocates = "*" if body.get("isall") or not name else name

    def declare_cursor_stmt(self, body: Node) -> None:
        self.named("DECLARE CURSOR")
        self.kinds.add(_K.SELECT)
        self.walk(body.get("query"))

    def copy_stmt(self, body: Node) -> None:
        self.named("COPY")
        self.kinds.add(_K.COPY)
        relation = body.get("relation")
        is_from = bool(body.get("is_from"))
        if relation is not None:
            if is_from:
                self.kinds.add(_K.INSERT)
                self.write_relation(relation)
            else:  # COPY t TO: the whole table, like SELECT * FROM t
                self.kinds.add(_K.SELECT)
                self.reads.update(self.resolve(relation.get("schemaname"), relation["relname"]))
                self.unfiltered.add(_K.SELECT)
        if "filename" in body:
            self.features.add(_F.PROGRAM_EXECUTION if body.get("is_program") else _F.FILE_ACCESS)
        self.walk_fields_except(body, _RELATION)

    def call_stmt(self, body: Node) -> None:
        self.named("CALL")
        self.kinds.add(_K.CALL)
        self.changes_parsing = True
        self.func_call(body["funccall"])

    def create_table_as_stmt(self, body: Node) -> None:
        if body.get("objtype") == "OBJECT_MATVIEW":
            self.named("CREATE MATERIALIZED VIEW")
        else:
            self.named("SELECT INTO" if body.get("is_select_into") else "CREATE TABLE AS")
        self.kinds.add(_K.CREATE)
        into = body["into"]
        self.write_relation(into["rel"])
        self.walk_fields_except(into, frozenset({"rel"}))
        if into.get("skipData"):
            self.definition(body.get("query"))  # WITH NO DATA: the query is stored, not run
        else:
            self.walk(body.get("query"))

    # ------------------------------------------------------------------ sessions and transactions

    def variable_set_stmt(self, body: Node) -> None:
        kind = body.get("kind", "")
        name = body.get("name", "").lower()
        if kind == "VAR_SET_MULTI":
            if name.startswith("transaction"):
                self.named("SET TRANSACTION")
                self.kinds.add(_K.TRANSACTION)
            else:
                self.named("SET SESSION CHARACTERISTICS")
                self.kinds.add(_K.SET)
                self.features.add(_F.SESSION_CHANGE)
            self.walk_fields(body)
            return
        verb = "RESET" if kind in ("VAR_RESET", "VAR_RESET_ALL") else "SET"
        if name == "role":
            self.named(f"{verb} ROLE")
        elif name == "session_authorization":
            self.named(f"{verb} SESSION AUTHORIZATION")
        else:
            self.named(verb)
        self.kinds.add(_K.SET)
        self.features.add(_F.SESSION_CHANGE)
        if name in ("role", "session_authorization"):
            self.features.add(_F.PRIVILEGE_CHANGE)
        if kind == "VAR_RESET_ALL" or name in pg_functions.SETTINGS_THAT_CHANGE_PARSING:
            self.changes_parsing = True
        self.walk_fields(body)

    def transaction_stmt(self, body: Node) -> None:
        kind = body.get("kind", "")
        self.named(_TRANSACTION_COMMANDS.get(kind, "TRANSACTION"))
        self.kinds.add(_K.TRANSACTION)
        if kind in _SETTING_REVERTING_TRANSACTIONS:
            self.changes_parsing = True

    def discard_stmt(self, body: Node) -> None:
        self.named("DISCARD")
        self.kinds.add(_K.OTHER)
        self.features.add(_F.SESSION_CHANGE)
        if body.get("target") == "DISCARD_ALL":
            self.changes_parsing = True  # DISCARD ALL includes RESET ALL and DEALLOCATE ALL
            self.deallocates = "*"

    # ------------------------------------------------------------------ DDL

    def create_stmt(self, body: Node) -> None:
        self.named("CREATE TABLE")
        self.kinds.add(_K.CREATE)
        self.write_relation(body["relation"])
        # PARTITION OF / INHERITS: the parent's contents now include the new table.
        self.write_wrapped_relations(body.get("inhRelations") or ())
        self.walk_fields_except(body, frozenset({"relation", "inhRelations"}))

    def create_foreign_table_stmt(self, body: Node) -> None:
        self.named("CREATE FOREIGN TABLE")
        self.create_stmt(body["base"])
        self.walk_fields_except(body, frozenset({"base"}))

    def view_stmt(self, body: Node) -> None:
        self.named("CREATE VIEW")
        self.kinds.add(_K.CREATE)
        self.write_relation(body["view"])
        self.definition(body.get("query"))
        self.walk_fields_except(body, frozenset({"view", "query"}))

    def index_stmt(self, body: Node) -> None:
        self.named("CREATE INDEX")
        self.kinds.add(_K.CREATE)
        self.write_relation(body["relation"])
        self.walk_fields_except(body, _RELATION)

    def sequence_stmt(self, body: Node, command: str, kind: StatementKind) -> None:
        self.named(command)
        self.kinds.add(kind)
        self.write_relation(body["sequence"])
        self.walk_fields_except(body, frozenset({"sequence"}))

    def create_schema_stmt(self, body: Node) -> None:
        self.named("CREATE SCHEMA")
        self.kinds.add(_K.CREATE)
        schema = body.get("schemaname") or (body.get("authrole") or {}).get("rolename", "")
        self.writes.add(f"{schema}.*")
        elements = body.get("schemaElts")
        if elements:
            search_path = self.search_path
            self.search_path = (schema,)  # elements are created in the new schema
            self.walk(elements)
            self.search_path = search_path

    def create_function_stmt(self, body: Node) -> None:
        self.named("CREATE PROCEDURE" if body.get("is_procedure") else "CREATE FUNCTION")
        self.kinds.add(_K.CREATE)
        self.features.add(_F.UNTRUSTED_CODE)
        for option in body.get("options") or ():
            definition = option.get("DefElem", {})
            if definition.get("defname") == "security" and _boolean_argument(definition):
                self.note("SECURITY DEFINER")
            elif definition.get("defname") == "language":
                self.note(f"LANGUAGE {_string_constant(definition.get('arg') or {}) or '?'}")
        if "sql_body" in body:
            self.definition(body["sql_body"])
        self.walk_fields_except(body, frozenset({"sql_body", "funcname"}))

    def alter_function_stmt(self, body: Node) -> None:
        self.named("ALTER " + _object_words(body.get("objtype", "OBJECT_FUNCTION")))
        self.kinds.add(_K.ALTER)
        for action in body.get("actions") or ():
            definition = action.get("DefElem", {})
            if definition.get("defname") == "security" and _boolean_argument(definition):
                self.features.add(_F.PRIVILEGE_CHANGE)
                self.note("SECURITY DEFINER")
        self.walk_fields_except(body, frozenset({"func"}))

    def create_trigger_stmt(self, body: Node) -> None:
        self.named("CREATE CONSTRAINT TRIGGER" if body.get("isconstraint") else "CREATE TRIGGER")
        self.kinds.add(_K.CREATE)
        self.features.add(_F.UNTRUSTED_CODE)  # arranges for a function to run on others' writes
        self.write_relation(body["relation"])
        function = ".".join(item["String"]["sval"] for item in body.get("funcname") or ())
        self.note(f"trigger function {function.lower()}")
        self.walk_fields_except(body, frozenset({"relation", "funcname"}))

    def create_policy_stmt(self, body: Node, command: str, kind: StatementKind) -> None:
        self.named(command)
        self.kinds.add(kind)
        self.features.add(_F.PRIVILEGE_CHANGE)
        self.write_relation(body["table"])
        self.walk_fields_except(body, frozenset({"table"}))

    def rule_stmt(self, body: Node) -> None:
        self.named("CREATE RULE")
        self.kinds.add(_K.CREATE)
        self.write_relation(body["relation"])
        self.definition(body.get("actions"))
        self.walk_fields_except(body, frozenset({"relation", "actions"}))

    def composite_type_stmt(self, body: Node) -> None:
        self.named("CREATE TYPE")
        self.kinds.add(_K.CREATE)
        self.walk(body.get("coldeflist"))  # typevar names the type, not a table

    def alter_table_stmt(self, body: Node) -> None:
        self.named("ALTER " + _object_words(body.get("objtype", "OBJECT_TABLE")))
        self.kinds.add(_K.ALTER)
        self.write_relation(body["relation"])
        for item in body.get("cmds") or ():
            command = item.get("AlterTableCmd")
            if command is None:
                self.walk(item)
                continue
            subtype = command.get("subtype", "")
            if subtype in _DESTRUCTIVE_ALTER_TABLE:
                self.kinds.add(_K.DROP)
            if subtype in _PRIVILEGE_ALTER_TABLE:
                self.features.add(_F.PRIVILEGE_CHANGE)
            definition = command.get("def")
            if definition is not None and "PartitionCmd" in definition:
                partition = definition["PartitionCmd"]
                self.write_relation(partition["name"])
                self.walk_fields_except(partition, frozenset({"name"}))
            elif definition is not None and "RangeVar" in definition:  # [NO] INHERIT parent
                self.write_relation(definition["RangeVar"])
            elif definition is not None:
                self.walk(definition)
            self.walk_fields_except(command, frozenset({"def"}))

    def rename_stmt(self, body: Node) -> None:
        rename_type = body.get("renameType", "")
        relation_type = body.get("relationType", "")
        if rename_type in ("OBJECT_COLUMN", "OBJECT_TABCONSTRAINT", "OBJECT_TRIGGER", "OBJECT_POLICY", "OBJECT_RULE"):
            self.named("ALTER " + _object_words(relation_type if rename_type == "OBJECT_COLUMN" else "OBJECT_TABLE"))
        else:
            self.named("ALTER " + _object_words(rename_type))
        self.kinds.add(_K.ALTER)
        relation = body.get("relation")
        if relation is not None:
            self.write_relation(relation)
            if rename_type in _TABLE_LIKE:
                self.writes.update(self.resolve(relation.get("schemaname"), body.get("newname", "")))
        if rename_type == "OBJECT_SCHEMA":
            self.writes.add(f"{body.get('subname', '')}.*")
            self.writes.add(f"{body.get('newname', '')}.*")
        self.walk_fields_except(body, _RELATION)

    def alter_object_schema_stmt(self, body: Node) -> None:
        object_type = body.get("objectType", "")
        self.named("ALTER " + _object_words(object_type))
        self.kinds.add(_K.ALTER)
        relation = body.get("relation")
        if relation is not None:
            self.write_relation(relation)
            if object_type in _TABLE_LIKE:
                self.writes.add(f"{body.get('newschema', '')}.{relation['relname']}")
        self.walk_fields_except(body, _RELATION)

    def alter_owner_stmt(self, body: Node) -> None:
        object_type = body.get("objectType", "")
        self.named("ALTER " + _object_words(object_type))
        self.kinds.add(_K.ALTER)
        self.features.add(_F.PRIVILEGE_CHANGE)
        relation = body.get("relation")
        if relation is not None:
            self.write_relation(relation)
        self.write_object(object_type, body.get("object"))
        self.walk_fields_except(body, frozenset({"relation", "object"}))

    def write_object(self, object_type: str, name: Any) -> None:
        """Record the table (or schema) a DDL object name refers to, if it refers to one."""
        if name is None:
            return
        if object_type == "OBJECT_SCHEMA":
            schema = name.get("String", {}).get("sval")
            if schema is not None:
                self.writes.add(f"{schema}.*")
            return
        items = name.get("List", {}).get("items")
        if not items:
            return
        parts = [item["String"]["sval"] for item in items if "String" in item]
        if object_type in _TABLE_LIKE and parts:
            self.writes.update(self.resolve_parts(parts))
        elif object_type in _ON_TABLE and len(parts) > 1:
            self.writes.update(self.resolve_parts(parts[:-1]))

    def drop_stmt(self, body: Node) -> None:
        remove_type = body.get("removeType", "")
        self.named("DROP " + _object_words(remove_type))
        self.kinds.add(_K.DROP)
        if remove_type in _ADMIN_OBJECTS:
            self.features.add(_F.SYSTEM_ADMIN)
        if remove_type == "OBJECT_POLICY":
            self.features.add(_F.PRIVILEGE_CHANGE)
        for name in body.get("objects") or ():
            self.write_object(remove_type, name)
        if body.get("behavior") == "DROP_CASCADE":
            self.note("CASCADE also drops dependent objects")

    def truncate_stmt(self, body: Node) -> None:
        self.named("TRUNCATE")
        self.kinds.add(_K.TRUNCATE)
        self.write_wrapped_relations(body.get("relations") or ())
        if body.get("behavior") == "DROP_CASCADE":
            self.note("CASCADE also truncates tables that reference these")

    def comment_stmt(self, body: Node, command: str, features: frozenset[Feature]) -> None:
        self.named(command)
        self.kinds.add(_K.ALTER)
        self.features |= features
        self.write_object(body.get("objtype", ""), body.get("object"))

    def grant_stmt(self, body: Node) -> None:
        kind = _K.GRANT if body.get("is_grant") else _K.REVOKE
        self.named(kind.value.upper())
        self.kinds.add(kind)
        self.features.add(_F.PRIVILEGE_CHANGE)
        object_type = body.get("objtype", "")
        target = body.get("targtype", "")
        objects = body.get("objects") or ()
        if target == "ACL_TARGET_ALL_IN_SCHEMA" or object_type == "OBJECT_SCHEMA":
            for item in objects:
                schema = item.get("String", {}).get("sval")
                if schema is not None:
                    self.writes.add(f"{schema}.*")
        elif object_type in _TABLE_LIKE:
            self.write_wrapped_relations(objects)
        self.walk_fields_except(body, frozenset({"objects"}))

    def grant_role_stmt(self, body: Node) -> None:
        kind = _K.GRANT if body.get("is_grant") else _K.REVOKE
        self.named(kind.value.upper())
        self.kinds.add(kind)
        self.features.add(_F.PRIVILEGE_CHANGE)

    def alter_default_privileges_stmt(self, body: Node) -> None:
        self.named("ALTER DEFAULT PRIVILEGES")
        self.kinds.add(_K.ALTER)
        self.kinds.add(_K.GRANT if (body.get("action") or {}).get("is_grant") else _K.REVOKE)
        self.features.add(_F.PRIVILEGE_CHANGE)

    def create_publication_stmt(self, body: Node, command: str, kind: StatementKind) -> None:
        self.named(command)
        self.kinds.add(kind)
        if body.get("for_all_tables"):
            self.reads.add("*.*")
        for item in body.get("pubobjects") or ():
            spec = item.get("PublicationObjSpec", {})
            if spec.get("pubobjtype") == "PUBLICATIONOBJ_TABLES_IN_SCHEMA" and "name" in spec:
                self.reads.add(f"{spec['name']}.*")
        self.walk_fields(body)  # publication tables (and their row filters) are reads

    def simple_relation_stmt(self, body: Node, command: str, kind: StatementKind, *, write: bool) -> None:
        """Maintenance statements on one optional relation (CLUSTER, REFRESH, REINDEX)."""
        self.named(command)
        self.kinds.add(kind)
        relation = body.get("relation")
        if relation is not None:
            if write:
                self.write_relation(relation)
            else:
                self.reads.update(self.resolve(relation.get("schemaname"), relation["relname"]))
        self.walk_fields_except(body, _RELATION)

    def reindex_stmt(self, body: Node) -> None:
        self.simple_relation_stmt(body, "REINDEX", _K.OTHER, write=True)
        if body.get("kind") == "REINDEX_OBJECT_SCHEMA" and body.get("name"):
            self.writes.add(f"{body['name']}.*")

    def vacuum_stmt(self, body: Node) -> None:
        vacuum = bool(body.get("is_vacuumcmd"))
        self.named("VACUUM" if vacuum else "ANALYZE")
        self.kinds.add(_K.OTHER)
        for item in body.get("rels") or ():
            relation = item.get("VacuumRelation", {}).get("relation")
            if relation is None:
                continue
            if vacuum:
                self.write_relation(relation)
            else:
                self.reads.update(self.resolve(relation.get("schemaname"), relation["relname"]))

    def lock_stmt(self, body: Node) -> None:
        self.named("LOCK")
        self.kinds.add(_K.OTHER)
        relations = body.get("relations") or ()
        if body.get("mode", 8) <= 2:  # ACCESS SHARE, ROW SHARE: what a SELECT takes
            for item in relations:
                self.walk(item)
        else:
            self.write_wrapped_relations(relations)

    def import_foreign_schema_stmt(self, body: Node) -> None:
        self.named("IMPORT FOREIGN SCHEMA")
        self.kinds.add(_K.CREATE)
        self.writes.add(f"{body.get('local_schema', '')}.*")

    def create_stats_stmt(self, body: Node) -> None:
        self.named("CREATE STATISTICS")
        self.kinds.add(_K.CREATE)
        self.write_wrapped_relations(body.get("relations") or ())
        self.walk_fields_except(body, frozenset({"relations"}))

    def alter_domain_stmt(self, body: Node) -> None:
        self.named("ALTER DOMAIN")
        self.kinds.add(_K.ALTER)
        if body.get("subtype") == "X":  # DROP CONSTRAINT
            self.kinds.add(_K.DROP)
        self.walk_fields(body)

    def owned_stmt(self, body: Node, command: str, kind: StatementKind) -> None:
        """DROP OWNED / REASSIGN OWNED: every object of some roles, which we cannot list."""
        self.named(command)
        self.kinds.add(kind)
        self.features.add(_F.PRIVILEGE_CHANGE)
        self.writes.add("*.*")

    def simple(
        self, body: Node, command: str, kinds: frozenset[StatementKind], features: frozenset[Feature], parsing: bool
    ) -> None:
        self.named(command)
        self.kinds |= kinds
        self.features |= features
        if parsing:
            self.changes_parsing = True
        self.walk_fields(body)

    def do_stmt(self, body: Node) -> None:
        self.simple(body, "DO", frozenset({_K.DO}), frozenset({_F.UNTRUSTED_CODE}), True)
        for option in body.get("args") or ():
            definition = option.get("DefElem", {})
            if definition.get("defname") == "language":
                self.note(f"LANGUAGE {_string_constant(definition.get('arg') or {}) or '?'}")

    def fetch_stmt(self, body: Node) -> None:
        self.simple(body, "MOVE" if body.get("ismove") else "FETCH", _SELECT_ONLY, frozenset(), False)

    def create_role_stmt(self, body: Node) -> None:
        command = {"ROLESTMT_USER": "CREATE USER", "ROLESTMT_GROUP": "CREATE GROUP"}.get(
            body.get("stmt_type", ""), "CREATE ROLE"
        )
        self.simple(body, command, frozenset({_K.CREATE}), frozenset({_F.PRIVILEGE_CHANGE}), False)

    def define_stmt(self, body: Node) -> None:
        """CREATE AGGREGATE / OPERATOR / TYPE / COLLATION / TEXT SEARCH ..."""
        self.simple(body, "CREATE " + _object_words(body.get("kind", "")), frozenset({_K.CREATE}), frozenset(), False)

    def alter_object_depends_stmt(self, body: Node) -> None:
        command = "ALTER " + _object_words(body.get("objectType", ""))
        self.simple(body, command, frozenset({_K.ALTER}), frozenset(), False)

    def alter_table_move_all_stmt(self, body: Node) -> None:
        """ALTER TABLE ALL IN TABLESPACE: every table there, which we cannot list."""
        self.simple(body, "ALTER TABLE", frozenset({_K.ALTER}), frozenset(), False)
        self.writes.add("*.*")

    def range_var(self, body: Node) -> None:
        self.read_relation(body)

    def res_target(self, body: Node) -> None:
        """A select-list item or SET target: only its value and subscripts can hold anything."""
        value = body.get("val")
        if value is not None:
            self.node(value)
        if "indirection" in body:
            self.walk(body["indirection"])

    def return_stmt(self, body: Node) -> None:
        self.walk_fields(body)  # RETURN expr in a SQL-standard function body

    def no_op(self, body: Node) -> None:
        """Leaves (constants, column references, names): nothing inside can matter."""


def _simple(
    command: str,
    kinds: Iterable[StatementKind],
    features: Iterable[Feature] = (),
    *,
    changes_parsing: bool = False,
) -> Callable[[_Walker, Node], None]:
    """A handler for statements fully described by a command name, kinds and features; their
    fields are still walked for functions and sub-statements."""
    return _on(_Walker.simple, command, frozenset(kinds), frozenset(features), changes_parsing)


def _object_words(object_type: str) -> str:
    words = _OBJECT_WORDS.get(object_type)
    if words is None:
        words = object_type.removeprefix("OBJECT_").replace("_", " ")
    return words


def _boolean_argument(definition: Node) -> bool:
    argument = definition.get("arg") or {}
    if "Boolean" in argument:
        return bool(argument["Boolean"].get("boolval"))
    if "String" in argument:
        return str(argument["String"].get("sval", "")).lower() in ("definer", "true", "on")
    return True  # a bare option (SECURITY DEFINER) means true


def _string_constant(node: Node) -> str | None:
    """The value of a string literal (or of a plain String node), else None."""
    if len(node) != 1:
        return None
    [(key, body)] = node.items()
    if key == "TypeCast":
        return _string_constant(body["arg"])
    if key == "A_Const" and "sval" in body:
        return str(body["sval"].get("sval", ""))
    if key == "String":
        return str(body.get("sval", ""))
    return None


def _mentions_rows(value: Any) -> bool:
    """True when an expression refers to a column (or a cursor position) anywhere in it."""
    if type(value) is dict:
        for key, child in value.items():
            if key == "ColumnRef" or key == "CurrentOfExpr":
                return True
            if (type(child) is dict or type(child) is list) and _mentions_rows(child):
                return True
        return False
    if type(value) is list:
        return any(_mentions_rows(item) for item in value)
    return False


_UNKNOWN: Final = object()  # a constant whose value the analyser does not compute


def _constant_value(node: Node) -> object:
    """The Python value of a literal (None for NULL), or _UNKNOWN."""
    key = next(iter(node))
    body = node[key]
    if key == "TypeCast":
        return _constant_value(body["arg"])
    if key != "A_Const":
        return _UNKNOWN
    if body.get("isnull"):
        return None
    if "boolval" in body:
        return bool(body["boolval"].get("boolval", False))
    if "ival" in body:
        return int(body["ival"].get("ival", 0))
    if "fval" in body:
        return float(body["fval"]["fval"])
    if "sval" in body:
        return str(body["sval"].get("sval", ""))
    return _UNKNOWN


def _as_boolean(value: object) -> bool | None:
    """PostgreSQL's reading of a constant as a boolean; None when it is not one."""
    if value is None:
        return False  # NULL is not true
    if isinstance(value, bool):
        return value
    if isinstance(value, int | float):
        return value != 0
    if isinstance(value, str):
        word = value.strip().lower()
        if word in _TRUE_WORDS:
            return True
        if word in _FALSE_WORDS:
            return False
    return None


def _constant_truth(node: Node) -> bool | None:
    """The truth of a row-independent expression when it can be computed, else None."""
    key = next(iter(node))
    body = node[key]
    if key == "A_Expr" and body.get("kind") == "AEXPR_OP" and "lexpr" in body and "rexpr" in body:
        return _compare(
            body["name"][-1]["String"]["sval"], _constant_value(body["lexpr"]), _constant_value(body["rexpr"])
        )
    if key == "NullTest":
        value = _constant_value(body["arg"])
        if value is _UNKNOWN:
            return None
        return (value is None) is (body.get("nulltesttype") == "IS_NULL")
    value = _constant_value(node)
    return None if value is _UNKNOWN else _as_boolean(value)


def _compare(operator: str, left: object, right: object) -> bool | None:
    if left is _UNKNOWN or right is _UNKNOWN:
        return None
    if left is None or right is None:
        return False  # a comparison with NULL is NULL, never true
    if isinstance(left, str) != isinstance(right, str):  # '1' = 1: the literal takes the type
        try:
            left, right = float(str(left)), float(str(right))
        except ValueError:
            return None
    if isinstance(left, str) and isinstance(right, str):
        if operator == "=":
            return left == right
        if operator in ("<>", "!="):
            return left != right
        return None  # ordering depends on the collation
    if not isinstance(left, int | float) or not isinstance(right, int | float):
        return None
    comparisons: dict[str, Callable[[float, float], bool]] = {
        "=": lambda a, b: a == b,
        "<>": lambda a, b: a != b,
        "!=": lambda a, b: a != b,
        "<": lambda a, b: a < b,
        ">": lambda a, b: a > b,
        "<=": lambda a, b: a <= b,
        ">=": lambda a, b: a >= b,
    }
    comparison = comparisons.get(operator)
    return None if comparison is None else comparison(float(left), float(right))


def _same(left: Any, right: Any) -> bool:
    """Structural equality of two expressions, ignoring source locations."""
    if type(left) is not type(right):
        return False
    if type(left) is dict:
        left_keys = {key for key in left if key != "location"}
        if left_keys != {key for key in right if key != "location"}:
            return False
        return all(_same(left[key], right[key]) for key in left_keys)
    if type(left) is list:
        return len(left) == len(right) and all(_same(a, b) for a, b in zip(left, right, strict=True))
    return bool(left == right)


def _same_sides_truth(body: Node) -> int:
    """`id = id` is true for every row (NULLs aside), `id <> id` for none."""
    kind = body.get("kind")
    left, right = body.get("lexpr"), body.get("rexpr")
    if left is None or right is None:
        return _DEPENDS
    if kind == "AEXPR_OP" and len(body["name"]) == 1:
        operator = body["name"][0]["String"]["sval"]
        if operator in _ALWAYS_TRUE_OPERATORS and _same(left, right):
            return _TRUE
        if operator in _ALWAYS_FALSE_OPERATORS and _same(left, right):
            return _FALSE
    elif kind == "AEXPR_NOT_DISTINCT" and _same(left, right):
        return _TRUE
    elif kind == "AEXPR_DISTINCT" and _same(left, right):
        return _FALSE
    elif kind in ("AEXPR_LIKE", "AEXPR_ILIKE") and body["name"][0]["String"]["sval"] in ("~~", "~~*"):
        pattern = _constant_value(right)
        if isinstance(pattern, str) and pattern and set(pattern) == {"%"}:
            return _TRUE  # LIKE '%' matches every non-NULL value
    return _DEPENDS


def _complementary_tests(args: list[Node]) -> bool:
    """`x IS NULL OR x IS NOT NULL` (and IS TRUE / IS NOT TRUE...) covers every row."""
    tests: list[tuple[str, Any]] = []
    for arg in args:
        key = next(iter(arg))
        if key == "NullTest":
            tests.append((arg[key].get("nulltesttype", ""), arg[key].get("arg")))
        elif key == "BooleanTest":
            tests.append((arg[key].get("booltesttype", ""), arg[key].get("arg")))
    for test, operand in tests:
        complement = _COMPLEMENTARY_TESTS.get(test)
        if any(other == complement and _same(operand, other_operand) for other, other_operand in tests):
            return True
    return False


_Handler = Callable[[_Walker, Node], None]


def _on(method: Callable[..., None], *args: Any, **kwargs: Any) -> _Handler:  # bind extra arguments to a _Walker method
    def handler(walker: _Walker, body: Node) -> None:
        method(walker, body, *args, **kwargs)

    return handler


_W = _Walker

# Every statement node pglast 8 (PostgreSQL 18 grammar) can produce at top level.
_STATEMENTS: Final[dict[str, _Handler]] = {
    "SelectStmt": _W.select_stmt,
    "InsertStmt": _W.insert_stmt,
    "UpdateStmt": _W.update_stmt,
    "DeleteStmt": _W.delete_stmt,
    "MergeStmt": _W.merge_stmt,
    "ExplainStmt": _W.explain_stmt,
    "PrepareStmt": _W.prepare_stmt,
    "ExecuteStmt": _W.execute_stmt,
    "DeallocateStmt": _W.deallocate_stmt,
    "DeclareCursorStmt": _W.declare_cursor_stmt,
    "FetchStmt": _W.fetch_stmt,
    "ClosePortalStmt": _simple("CLOSE", [_K.SELECT]),
    "CopyStmt": _W.copy_stmt,
    "CallStmt": _W.call_stmt,
    "DoStmt": _W.do_stmt,
    "VariableSetStmt": _W.variable_set_stmt,
    "VariableShowStmt": _simple("SHOW", [_K.SHOW]),
    "TransactionStmt": _W.transaction_stmt,
    "ConstraintsSetStmt": _simple("SET CONSTRAINTS", [_K.TRANSACTION]),
    "DiscardStmt": _W.discard_stmt,
    "LoadStmt": _simple("LOAD", [_K.LOAD], [_F.SYSTEM_ADMIN, _F.FILE_ACCESS], changes_parsing=True),
    "ListenStmt": _simple("LISTEN", [_K.OTHER]),
    "UnlistenStmt": _simple("UNLISTEN", [_K.OTHER]),
    "NotifyStmt": _simple("NOTIFY", [_K.OTHER]),
    "CheckPointStmt": _simple("CHECKPOINT", [_K.OTHER], [_F.SYSTEM_ADMIN]),
    "VacuumStmt": _W.vacuum_stmt,
    "ClusterStmt": _on(_W.simple_relation_stmt, "CLUSTER", _K.OTHER, write=True),
    "ReindexStmt": _W.reindex_stmt,
    "RefreshMatViewStmt": _on(_W.simple_relation_stmt, "REFRESH MATERIALIZED VIEW", _K.OTHER, write=True),
    "LockStmt": _W.lock_stmt,
    # CREATE
    "CreateStmt": _W.create_stmt,
    "CreateForeignTableStmt": _W.create_foreign_table_stmt,
    "CreateTableAsStmt": _W.create_table_as_stmt,
    "ViewStmt": _W.view_stmt,
    "IndexStmt": _W.index_stmt,
    "CreateSeqStmt": _on(_W.sequence_stmt, "CREATE SEQUENCE", _K.CREATE),
    "CreateSchemaStmt": _W.create_schema_stmt,
    "CreateFunctionStmt": _W.create_function_stmt,
    "CreateTrigStmt": _W.create_trigger_stmt,
    "CreateEventTrigStmt": _simple("CREATE EVENT TRIGGER", [_K.CREATE], [_F.SYSTEM_ADMIN, _F.UNTRUSTED_CODE]),
    "CreatePLangStmt": _simple("CREATE LANGUAGE", [_K.CREATE], [_F.SYSTEM_ADMIN, _F.UNTRUSTED_CODE]),
    "CreateExtensionStmt": _simple(
        "CREATE EXTENSION", [_K.CREATE], [_F.SYSTEM_ADMIN, _F.UNTRUSTED_CODE], changes_parsing=True
    ),
    "CreateAmStmt": _simple("CREATE ACCESS METHOD", [_K.CREATE], [_F.SYSTEM_ADMIN]),
    "CreateRoleStmt": _W.create_role_stmt,
    "CreatePolicyStmt": _on(_W.create_policy_stmt, "CREATE POLICY", _K.CREATE),
    "RuleStmt": _W.rule_stmt,
    "DefineStmt": _W.define_stmt,
    "CompositeTypeStmt": _W.composite_type_stmt,
    "CreateEnumStmt": _simple("CREATE TYPE", [_K.CREATE]),
    "CreateRangeStmt": _simple("CREATE TYPE", [_K.CREATE]),
    "CreateDomainStmt": _simple("CREATE DOMAIN", [_K.CREATE]),
    "CreateCastStmt": _simple("CREATE CAST", [_K.CREATE]),
    "CreateConversionStmt": _simple("CREATE CONVERSION", [_K.CREATE]),
    "CreateOpClassStmt": _simple("CREATE OPERATOR CLASS", [_K.CREATE]),
    "CreateOpFamilyStmt": _simple("CREATE OPERATOR FAMILY", [_K.CREATE]),
    "CreateTransformStmt": _simple("CREATE TRANSFORM", [_K.CREATE]),
    "CreateStatsStmt": _W.create_stats_stmt,
    "CreatedbStmt": _simple("CREATE DATABASE", [_K.CREATE]),
    "CreateTableSpaceStmt": _simple("CREATE TABLESPACE", [_K.CREATE], [_F.SYSTEM_ADMIN, _F.FILE_ACCESS]),
    "CreateSubscriptionStmt": _simple("CREATE SUBSCRIPTION", [_K.CREATE], [_F.SYSTEM_ADMIN]),
    "CreatePublicationStmt": _on(_W.create_publication_stmt, "CREATE PUBLICATION", _K.CREATE),
    "CreateForeignServerStmt": _simple("CREATE SERVER", [_K.CREATE], [_F.SYSTEM_ADMIN]),
    "CreateFdwStmt": _simple("CREATE FOREIGN DATA WRAPPER", [_K.CREATE], [_F.SYSTEM_ADMIN]),
    "CreateUserMappingStmt": _simple("CREATE USER MAPPING", [_K.CREATE], [_F.SYSTEM_ADMIN]),
    "ImportForeignSchemaStmt": _W.import_foreign_schema_stmt,
    # ALTER
    "AlterTableStmt": _W.alter_table_stmt,
    "AlterTableMoveAllStmt": _W.alter_table_move_all_stmt,
    "RenameStmt": _W.rename_stmt,
    "AlterObjectSchemaStmt": _W.alter_object_schema_stmt,
    "AlterOwnerStmt": _W.alter_owner_stmt,
    "AlterObjectDependsStmt": _W.alter_object_depends_stmt,
    "AlterSeqStmt": _on(_W.sequence_stmt, "ALTER SEQUENCE", _K.ALTER),
    "AlterFunctionStmt": _W.alter_function_stmt,
    "AlterDomainStmt": _W.alter_domain_stmt,
    "AlterEnumStmt": _simple("ALTER TYPE", [_K.ALTER]),
    "AlterTypeStmt": _simple("ALTER TYPE", [_K.ALTER]),
    "AlterRoleStmt": _simple("ALTER ROLE", [_K.ALTER], [_F.PRIVILEGE_CHANGE]),
    "AlterRoleSetStmt": _simple("ALTER ROLE", [_K.ALTER], [_F.PRIVILEGE_CHANGE]),
    "AlterDatabaseStmt": _simple("ALTER DATABASE", [_K.ALTER]),
    "AlterDatabaseSetStmt": _simple("ALTER DATABASE", [_K.ALTER]),
    "AlterDatabaseRefreshCollStmt": _simple("ALTER DATABASE", [_K.ALTER]),
    "AlterSystemStmt": _simple("ALTER SYSTEM", [_K.ALTER], [_F.SYSTEM_ADMIN]),
    "AlterPolicyStmt": _on(_W.create_policy_stmt, "ALTER POLICY", _K.ALTER),
    "AlterEventTrigStmt": _simple("ALTER EVENT TRIGGER", [_K.ALTER], [_F.SYSTEM_ADMIN]),
    "AlterExtensionStmt": _simple(
        "ALTER EXTENSION", [_K.ALTER], [_F.SYSTEM_ADMIN, _F.UNTRUSTED_CODE], changes_parsing=True
    ),
    "AlterExtensionContentsStmt": _simple("ALTER EXTENSION", [_K.ALTER], [_F.SYSTEM_ADMIN]),
    "AlterFdwStmt": _simple("ALTER FOREIGN DATA WRAPPER", [_K.ALTER], [_F.SYSTEM_ADMIN]),
    "AlterForeignServerStmt": _simple("ALTER SERVER", [_K.ALTER], [_F.SYSTEM_ADMIN]),
    "AlterUserMappingStmt": _simple("ALTER USER MAPPING", [_K.ALTER], [_F.SYSTEM_ADMIN]),
    "AlterSubscriptionStmt": _simple("ALTER SUBSCRIPTION", [_K.ALTER], [_F.SYSTEM_ADMIN]),
    "AlterPublicationStmt": _on(_W.create_publication_stmt, "ALTER PUBLICATION", _K.ALTER),
    "AlterTableSpaceOptionsStmt": _simple("ALTER TABLESPACE", [_K.ALTER], [_F.SYSTEM_ADMIN]),
    "AlterOpFamilyStmt": _simple("ALTER OPERATOR FAMILY", [_K.ALTER]),
    "AlterOperatorStmt": _simple("ALTER OPERATOR", [_K.ALTER]),
    "AlterCollationStmt": _simple("ALTER COLLATION", [_K.ALTER]),
    "AlterTSConfigurationStmt": _simple("ALTER TEXT SEARCH CONFIGURATION", [_K.ALTER]),
    "AlterTSDictionaryStmt": _simple("ALTER TEXT SEARCH DICTIONARY", [_K.ALTER]),
    "AlterStatsStmt": _simple("ALTER STATISTICS", [_K.ALTER]),
    "AlterDefaultPrivilegesStmt": _W.alter_default_privileges_stmt,
    "CommentStmt": _on(_W.comment_stmt, "COMMENT", frozenset()),
    "SecLabelStmt": _on(_W.comment_stmt, "SECURITY LABEL", frozenset({_F.PRIVILEGE_CHANGE})),
    "ReassignOwnedStmt": _on(_W.owned_stmt, "REASSIGN OWNED", _K.ALTER),
    # DROP
    "DropStmt": _W.drop_stmt,
    "DropOwnedStmt": _on(_W.owned_stmt, "DROP OWNED", _K.DROP),
    "DropRoleStmt": _simple("DROP ROLE", [_K.DROP], [_F.PRIVILEGE_CHANGE]),
    "DropdbStmt": _simple("DROP DATABASE", [_K.DROP]),
    "DropSubscriptionStmt": _simple("DROP SUBSCRIPTION", [_K.DROP], [_F.SYSTEM_ADMIN]),
    "DropUserMappingStmt": _simple("DROP USER MAPPING", [_K.DROP], [_F.SYSTEM_ADMIN]),
    "DropTableSpaceStmt": _simple("DROP TABLESPACE", [_K.DROP], [_F.SYSTEM_ADMIN]),
    "TruncateStmt": _W.truncate_stmt,
    # GRANT / REVOKE
    "GrantStmt": _W.grant_stmt,
    "GrantRoleStmt": _W.grant_role_stmt,
}

# Every node the generic walk treats specially: statements (which may also appear nested:
# CTE bodies, EXPLAIN, PREPARE, COPY (query), rule actions, function bodies), statement-like
# nodes that only appear nested, and expression nodes.
_NODES: Final[dict[str, _Handler]] = {
    **_STATEMENTS,
    "ReturnStmt": _W.return_stmt,
    "ReplicaIdentityStmt": _W.no_op,
    "FuncCall": _W.func_call,
    "A_Expr": _W.a_expr,
    "SubLink": _W.sub_link,
    "SortBy": _W.sort_by,
    "ResTarget": _W.res_target,
    "RangeVar": _W.range_var,
    "A_Const": _W.no_op,
    "ColumnRef": _W.no_op,
    "ParamRef": _W.no_op,
    "A_Star": _W.no_op,
    "String": _W.no_op,
    "Integer": _W.no_op,
    "Float": _W.no_op,
    "Boolean": _W.no_op,
    "BitString": _W.no_op,
    "SQLValueFunction": _W.no_op,
    "CurrentOfExpr": _W.no_op,
    "SetToDefault": _W.no_op,
    "Alias": _W.no_op,
    "RoleSpec": _W.no_op,
}

__all__ = ["analyse_postgres", "postgres_fingerprint"]
