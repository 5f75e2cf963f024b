"""Column lineage of a PostgreSQL statement's result: the table columns each output may carry.

Owns answering, for the masking layer, "which table columns may the values of result column i
come from?" for the columns the wire protocol cannot attribute to a table column (computed
expressions: `upper(email)`, `row_to_json(c)`, a CTE or sub-query output...). It reads SQL with
pglast as `sql.postgres` does (`parse_sql_json` + a walk over the plain dicts, `pg_lexer` first
when standard_conforming_strings is off) and tells built-in functions and operators from user
code with `sql.pg_functions`. It knows no catalog: an unqualified column may belong to any table
in scope, so it is attributed to all of them.

Fail closed: when unsure it reports more sources, never fewer. A value it cannot trace (a user
function or operator, dynamic SQL, a file read) carries ANY_SOURCE; a statement it does not
understand, a parse error, a tree too deep or too costly to walk is UNTRACEABLE.

Must not: decide anything (masks are `masking.session_masks`', applied by `session.pg_masking`),
know the catalog (a view named here is just a table; the session expands it with the lineage of
the view's definition), do I/O, or raise. Its only state is a bounded cache of answers.

Only what reaches the output counts: WHERE, JOIN ON, GROUP BY, ORDER BY, window definitions,
aggregate FILTER / ORDER BY (except WITHIN GROUP, whose ordered values are the inputs) and
EXISTS / IN / ANY / ALL sub-queries do not. What a DML statement writes counts for its
RETURNING: the target's columns there also carry the sources of the inserted or SET values.
Known limits: casts propagate their argument, even to a user type whose cast function is user
code; a column of a function in FROM, XMLTABLE or JSON_TABLE is not told from its siblings (it
carries the sources of all the arguments); triggers and rules are not seen.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, Final, NamedTuple

from pglast.parser import parse_sql_json

from dbguard.model import ANY_SOURCE, UNTRACEABLE, Feature, ResultLineage, SourceColumn
from dbguard.sql import MAX_ANALYSED_CHARS, pg_functions, pg_lexer

Node = dict[str, Any]
Sources = frozenset[SourceColumn]

_NONE: Final[Sources] = frozenset()
_ANY: Final[Sources] = frozenset({ANY_SOURCE})
_NO_ROWS: Final = ResultLineage((), _NONE)
_ONE_TEXT_COLUMN: Final = ResultLineage((_NONE,), _NONE)  # EXPLAIN plan text, SHOW x
_CACHE_ENTRIES: Final = 2048
_RECURSIVE_ROUNDS: Final = 64  # a WITH RECURSIVE that has not settled by then is untraceable
# Work allowed per statement (tree nodes visited + relations scanned for a name), ~2.5 us a
# unit: bounds what a text built to be slow (nested WITH RECURSIVE, thousands of names x
# thousands of relations) costs on the event loop; an ordinary statement spends a few hundred.
_WORK_UNITS: Final = 100_000
_cache: dict[tuple[str, bool], tuple[ResultLineage, ...]] = {}

_DML: Final = frozenset({"InsertStmt", "UpdateStmt", "DeleteStmt", "MergeStmt"})
# Statements whose execution returns no data rows (Create*/Alter*/Drop* too, by prefix).
_NO_ROW_STATEMENTS: Final = frozenset(
    {
        "CreateTableAsStmt", "CheckPointStmt", "ClosePortalStmt", "ClusterStmt", "CommentStmt",
        "CompositeTypeStmt", "ConstraintsSetStmt", "DeallocateStmt", "DefineStmt", "DiscardStmt",
        "DoStmt", "GrantRoleStmt", "GrantStmt", "ImportForeignSchemaStmt", "IndexStmt", "ListenStmt",
        "LoadStmt", "LockStmt", "NotifyStmt", "PrepareStmt", "ReassignOwnedStmt", "RefreshMatViewStmt",
        "ReindexStmt", "RenameStmt", "RuleStmt", "SecLabelStmt", "TransactionStmt", "TruncateStmt",
        "UnlistenStmt", "VacuumStmt", "VariableSetStmt", "ViewStmt",
    }
)
# Sub-queries whose rows become the value (EXISTS, IN, ANY, ALL only give a boolean).
_VALUE_SUBLINKS: Final = frozenset({"EXPR_SUBLINK", "ARRAY_SUBLINK", "MULTIEXPR_SUBLINK"})
# Built-ins whose result is not computed from their arguments: SQL run from a string, server
# files, a cursor's rows, large objects, other sessions' query texts.
_OPAQUE_FEATURES: Final = frozenset({Feature.DYNAMIC_SQL, Feature.FILE_ACCESS})
_OPAQUE_FUNCTIONS: Final = frozenset(
    {"cursor_to_xml", "cursor_to_xmlschema", "lo_get", "loread", "pg_stat_get_activity", "pg_stat_get_backend_activity"}
)
# Output names PostgreSQL gives these expressions whatever their arguments (FigureColname).
_FIXED_NAMES: Final = {"CoalesceExpr": "coalesce", "A_ArrayExpr": "array", "RowExpr": "row"}

# How surely a relation has a column of a given name.
_NO: Final = 0
_MAYBE: Final = 1  # a table (catalog unknown), or a relation whose outputs are not known
_SURE: Final = 2


class _Untraceable(Exception):
    """The statement holds something this module does not understand."""


class _Column(NamedTuple):
    name: str | None  # None: a name not worked out, which may match any reference
    sources: Sources


@dataclass(frozen=True, slots=True)
class _Result:
    """The outputs of a query: by position, or only their union when positions are unknown."""

    columns: tuple[_Column, ...] | None
    everything: Sources

    @staticmethod
    def of(columns: Iterable[_Column]) -> _Result:
        known = tuple(columns)
        return _Result(known, _union(column.sources for column in known))


_EMPTY: Final = _Result((), _NONE)


@dataclass(frozen=True, slots=True)
class _Rel:
    """One relation of a FROM scope: a table (or view), or a derived relation with outputs."""

    alias: str | None  # the name qualified references use (None: an unaliased sub-query)
    schema: str | None = None
    table: str | None = None  # None: derived (sub-query, CTE, VALUES, function, aliased JOIN)
    result: _Result = _EMPTY  # a derived relation's outputs
    renamed: frozenset[str] = frozenset()  # a table's `AS t(a, b)` names: positions unknown
    extra: Sources = _NONE  # a DML target: sources of the values the statement writes
    qualified_only: bool = False  # an aliased JOIN: `j.col` and `j` only

    def whole_row(self) -> Sources:
        if self.table is None:
            return self.result.everything
        return frozenset({SourceColumn(self.schema, self.table, "*")}) | self.extra

    def column(self, name: str) -> tuple[int, Sources]:
        if self.table is not None:
            if name in self.renamed:
                return _SURE, self.whole_row()
            return _MAYBE, frozenset({SourceColumn(self.schema, self.table, name)}) | self.extra
        if self.result.columns is None:
            return _MAYBE, self.result.everything
        found = [column for column in self.result.columns if column.name in (name, None)]
        if not found:
            return _NO, _NONE
        sure = any(column.name == name for column in found)
        return (_SURE if sure else _MAYBE), _union(column.sources for column in found)

    def named(self, qualifier: list[str]) -> bool:
        """Whether `qualifier` (alias, or [catalog.]schema.table) names this relation."""
        if self.alias is None:
            return False
        if len(qualifier) == 1:
            return self.alias == qualifier[0]
        return self.table == self.alias == qualifier[-1] and self.schema in (None, qualifier[-2])


class _Budget:
    """The work a statement may still cost (`_WORK_UNITS`)."""

    __slots__ = ("left",)

    def __init__(self) -> None:
        self.left = _WORK_UNITS

    def spend(self, units: int) -> None:
        self.left -= units
        if self.left < 0:
            raise _Untraceable("statement too costly to trace")


Scope = tuple[Sequence[_Rel], ...]  # FROM levels, innermost first


class _Env(NamedTuple):
    """What an expression or query can see. A level may be a list that the FROM walk is still
    filling: whatever reads it runs before the next items are added (LATERAL sees earlier ones)."""

    scope: Scope
    ctes: Mapping[str, _Result]
    budget: _Budget

    def inner(self, level: Sequence[_Rel]) -> _Env:
        return _Env((level, *self.scope), self.ctes, self.budget)


def result_lineage(sql: str, *, standard_conforming_strings: bool = True) -> ResultLineage:
    """Lineage of the LAST statement's result in `sql` (the one whose rows a simple Query
    returns last); no rows at all for an empty text. Never raises."""
    statements = statements_lineage(sql, standard_conforming_strings=standard_conforming_strings)
    return statements[-1] if statements else _NO_ROWS


def statements_lineage(sql: str, *, standard_conforming_strings: bool = True) -> tuple[ResultLineage, ...]:
    """One ResultLineage per statement in `sql`, in order (a multi-statement simple Query returns
    one result per statement). A text that cannot be read at all gives (UNTRACEABLE,): the server
    will not run any of it either. Never raises; answers are cached by (sql, scs)."""
    key = (sql, standard_conforming_strings)
    cached = _cache.get(key)
    if cached is not None:
        return cached
    if len(sql) > MAX_ANALYSED_CHARS or "\x00" in sql:
        return (UNTRACEABLE,)
    answer = _statements(sql, standard_conforming_strings)
    if len(_cache) >= _CACHE_ENTRIES:
        _cache.clear()
    _cache[key] = answer
    return answer


def _statements(sql: str, standard_conforming_strings: bool) -> tuple[ResultLineage, ...]:
    try:
        text = sql if standard_conforming_strings else pg_lexer.rewrite_for_scs_off(sql).text
        tree = json.loads(parse_sql_json(text))
    except Exception:  # parse or lexing error, RecursionError on a deep tree: fail closed
        return (UNTRACEABLE,)
    return tuple(_statement(raw["stmt"]) for raw in tree.get("stmts", ()) if "stmt" in raw)


def _statement(node: Node) -> ResultLineage:
    try:
        return _statement_lineage(node)
    except Exception:  # _Untraceable, RecursionError, a tree shaped unlike expected
        return UNTRACEABLE


def _statement_lineage(node: Node) -> ResultLineage:
    [(key, body)] = node.items()
    top = _Env((), {}, _Budget())
    if key == "SelectStmt":
        return _NO_ROWS if "intoClause" in body else _lineage(_select(body, top))
    if key in _DML:
        return _lineage(_modify(key, body, top))
    if key == "DeclareCursorStmt":
        return _lineage(_query(body["query"], top))
    if key == "ExplainStmt":
        return _ONE_TEXT_COLUMN
    if key == "VariableShowStmt":  # SHOW ALL: name, setting, description
        return ResultLineage((_NONE,) * 3, _NONE) if body.get("name") == "all" else _ONE_TEXT_COLUMN
    if key == "CopyStmt":
        return _copy(body, top)
    if key in _NO_ROW_STATEMENTS or key.startswith(("Create", "Alter", "Drop")):
        return _NO_ROWS
    return UNTRACEABLE  # EXECUTE, FETCH / MOVE (the caller tracks those), CALL...


def _copy(body: Node, env: _Env) -> ResultLineage:
    """COPY FROM returns no rows; COPY (query) TO copies the query's output; COPY table
    [(columns)] TO copies the listed columns, or the whole row in the table's order."""
    if body.get("is_from"):
        return _NO_ROWS
    if "query" in body:
        return _lineage(_query(body["query"], env))
    relation = body["relation"]
    schema, table = relation.get("schemaname"), str(relation["relname"])
    columns = _names(body.get("attlist"))
    if not columns:
        whole = frozenset({SourceColumn(schema, table, "*")})
        return ResultLineage(None, whole)
    sources = tuple(frozenset({SourceColumn(schema, table, column)}) for column in columns)
    return ResultLineage(sources, _union(sources))


def _lineage(result: _Result) -> ResultLineage:
    if result.columns is None:
        return ResultLineage(None, result.everything)
    return ResultLineage(tuple(column.sources for column in result.columns), result.everything)


def _union(items: Iterable[Sources]) -> Sources:
    return frozenset().union(*items)


# ---------------------------------------------------------------------- queries


def _query(node: Node, env: _Env) -> _Result:
    [(key, body)] = node.items()
    if key == "SelectStmt":
        return _select(body, env)
    if key in _DML:
        return _modify(key, body, env)
    raise _Untraceable(key)


def _select(body: Node, env: _Env) -> _Result:
    env.budget.spend(1)
    if "withClause" in body:
        env = _with(body["withClause"], env)
    if body.get("op", "SETOP_NONE") != "SETOP_NONE":  # UNION / INTERSECT / EXCEPT: by position
        left, right = _select(body["larg"], env), _select(body["rarg"], env)
        if left.columns is None or right.columns is None or len(left.columns) != len(right.columns):
            return _Result(None, left.everything | right.everything)
        pairs = zip(left.columns, right.columns, strict=True)
        return _Result.of(_Column(a.name, a.sources | b.sources) for a, b in pairs)
    if "valuesLists" in body:
        rows = [[_expr(item, env) for item in row["List"]["items"]] for row in body["valuesLists"]]
        if any(len(row) != len(rows[0]) for row in rows):
            raise _Untraceable("VALUES rows of different lengths")
        return _Result.of(
            _Column(f"column{index + 1}", _union(row[index] for row in rows)) for index in range(len(rows[0]))
        )
    level: list[_Rel] = []
    _from_items(body.get("fromClause") or (), env, level)
    return _target_list(body.get("targetList") or (), env.inner(level))


def _target_list(targets: Iterable[Node], env: _Env) -> _Result:
    """A SELECT or RETURNING list; a `*` or `t.*` in it makes the positions unknown."""
    columns: list[_Column] = []
    starred: set[SourceColumn] = set()
    star = False
    for item in targets:
        target = item["ResTarget"]
        value: Node = target["val"]
        if _is_star(value):
            star = True
            _collect(value, env, starred)
        else:
            columns.append(_Column(target.get("name") or _colname(value), _expr(value, env)))
    result = _Result.of(columns)
    return _Result(None, result.everything | starred) if star else result


def _is_star(value: Node) -> bool:
    """`*`, `t.*` or `(composite).*`: expands to a number of columns the catalog knows."""
    if "ColumnRef" in value:
        return "A_Star" in value["ColumnRef"]["fields"][-1]
    if "A_Indirection" in value:
        return "A_Star" in value["A_Indirection"]["indirection"][-1]
    return False


def _colname(value: Node) -> str | None:
    """The output name PostgreSQL gives an unnamed target (FigureColname), when it is sure."""
    [(key, body)] = value.items()
    if key == "ColumnRef":
        return _name(body["fields"][-1])
    if key == "FuncCall":
        return _name(body["funcname"][-1])
    if key == "A_Indirection":  # the last field name selected, else the subscripted value's name
        fields = [_name(item) for item in body["indirection"] if "String" in item]
        return fields[-1] if fields else _colname(body["arg"])
    if key == "TypeCast":  # the argument's name if it has a strong one, else the type's
        return _colname(body["arg"]) if "ColumnRef" in body["arg"] or "FuncCall" in body["arg"] else None
    return _FIXED_NAMES.get(key)


def _name(node: Node) -> str | None:
    return str(node["String"]["sval"]) if "String" in node else None


def _names(nodes: Iterable[Node] | None) -> list[str]:
    return [str(node["String"]["sval"]) for node in nodes or ()]


def _rename(result: _Result, colnames: Iterable[Node] | None) -> _Result:
    """`AS s(a, b)` / `WITH c(a, b)`: the first outputs take these names, by position."""
    names = _names(colnames)
    if not names or result.columns is None:
        return result
    columns = tuple(
        _Column(names[index], column.sources) if index < len(names) else column
        for index, column in enumerate(result.columns)
    )
    return _Result(columns, result.everything)


def _with(clause: Node, env: _Env) -> _Env:
    """A CTE sees the CTEs before it (all of them when RECURSIVE, computed to a fixed point)."""
    ctes = dict(env.ctes)
    inner = _Env(env.scope, ctes, env.budget)
    items = [cte["CommonTableExpr"] for cte in clause.get("ctes") or ()]
    if not clause.get("recursive"):
        for cte in items:
            ctes[cte["ctename"]] = _rename(_query(cte["ctequery"], inner), cte.get("aliascolnames"))
        return inner
    for cte in items:
        ctes[cte["ctename"]] = _Result(None, _NONE)
    for _ in range(_RECURSIVE_ROUNDS):
        settled = True
        for cte in items:
            result = _rename(_query(cte["ctequery"], inner), cte.get("aliascolnames"))
            if result != ctes[cte["ctename"]]:
                ctes[cte["ctename"]] = result
                settled = False
        if settled:
            return inner
    raise _Untraceable("WITH RECURSIVE does not settle")


def _modify(key: str, body: Node, env: _Env) -> _Result:
    """INSERT / UPDATE / DELETE / MERGE: the lineage of RETURNING (no rows without it)."""
    returning = body.get("returningClause")
    if not returning:
        return _EMPTY
    if "withClause" in body:
        env = _with(body["withClause"], env)
    target = _range_var(body["relation"], {})  # a DML target is a table, never a CTE
    level = [target]
    written: set[SourceColumn] = set()
    if key == "InsertStmt":
        if body.get("selectStmt"):
            written |= _query(body["selectStmt"], env).everything
        conflict = body.get("onConflictClause") or {}
        excluded = replace(target, alias="excluded", extra=frozenset(written))
        _set_list(conflict.get("targetList"), env.inner([target, excluded]), written)
    elif key == "UpdateStmt":
        _from_items(body.get("fromClause") or (), env, level)
        _set_list(body.get("targetList"), env.inner(level), written)
    elif key == "DeleteStmt":
        _from_items(body.get("usingClause") or (), env, level)
    else:
        _from_item(body["sourceRelation"], env, level)
        for item in body.get("mergeWhenClauses") or ():
            clause = item["MergeWhenClause"]
            _set_list(clause.get("targetList"), env.inner(level), written)
            _collect(clause.get("values"), env.inner(level), written)
    target = replace(target, extra=frozenset(written))
    aliases = {"RETURNING_OPTION_OLD": "old", "RETURNING_OPTION_NEW": "new"}
    for option in returning.get("options") or ():
        aliases[option["ReturningOption"]["option"]] = option["ReturningOption"]["value"]
    versions = [replace(target, alias=alias, qualified_only=True) for alias in aliases.values()]
    return _target_list(returning.get("exprs") or (), env.inner([target, *versions, *level[1:]]))


def _set_list(targets: Iterable[Node] | None, env: _Env, out: set[SourceColumn]) -> None:
    for item in targets or ():
        _collect(item["ResTarget"].get("val"), env, out)


# ---------------------------------------------------------------------- FROM


def _from_items(items: Iterable[Node], env: _Env, level: list[_Rel]) -> None:
    for item in items:
        _from_item(item, env, level)


def _from_item(item: Node, env: _Env, level: list[_Rel]) -> None:
    """Add the relations one FROM item brings into `level`; a LATERAL item (any function in
    FROM) sees the relations already there."""
    [(key, body)] = item.items()
    alias: Node = body.get("alias") or {}
    if key == "RangeVar":
        level.append(_range_var(body, env.ctes))
    elif key == "RangeTableSample":
        _from_item(body["relation"], env, level)
    elif key == "RangeSubselect":
        result = _query(body["subquery"], env.inner(level) if body.get("lateral") else env)
        level.append(_Rel(alias.get("aliasname"), result=_rename(result, alias.get("colnames"))))
    elif key == "JoinExpr":
        start = len(level)
        _from_item(body["larg"], env, level)
        _from_item(body["rarg"], env, level)
        joined = level[start:]
        if alias:
            whole = _union(rel.whole_row() for rel in joined)
            level.append(_Rel(alias["aliasname"], result=_Result(None, whole), qualified_only=True))
        using_alias = body.get("join_using_alias")
        if using_alias:  # JOIN ... USING (id) AS j: j.id is both sides' id
            names = _names(body["usingClause"])
            columns = [_Column(name, _unqualified(name, (joined,), env.budget)[1]) for name in names]
            level.append(_Rel(using_alias["aliasname"], result=_Result.of(columns), qualified_only=True))
    elif key in ("RangeFunction", "RangeTableFunc", "JsonTable"):
        sources = _expr({field: value for field, value in body.items() if field != "alias"}, env.inner(level))
        level.append(_Rel(alias.get("aliasname") or _function_alias(body), result=_Result(None, sources)))
    else:
        raise _Untraceable(key)


def _range_var(body: Node, ctes: Mapping[str, _Result]) -> _Rel:
    schema, name = body.get("schemaname"), str(body["relname"])
    alias: Node = body.get("alias") or {}
    if schema is None and name in ctes:
        return _Rel(alias.get("aliasname", name), result=_rename(ctes[name], alias.get("colnames")))
    return _Rel(alias.get("aliasname", name), schema, name, renamed=frozenset(_names(alias.get("colnames"))))


def _function_alias(body: Node) -> str | None:
    """An unaliased `FROM f(x)` is named after its function."""
    functions: list[Node] = body.get("functions") or []
    if len(functions) != 1:
        return None
    call = functions[0]["List"]["items"][0]
    return _name(call["FuncCall"]["funcname"][-1]) if "FuncCall" in call else None


# ---------------------------------------------------------------------- expressions


def _expr(value: Any, env: _Env) -> Sources:
    """Every source a value expression may carry."""
    out: set[SourceColumn] = set()
    _collect(value, env, out)
    return frozenset(out)


def _collect(value: Any, env: _Env, out: set[SourceColumn]) -> None:
    """Add to `out` the columns an expression references, whole rows, the outputs of its scalar
    and ARRAY sub-queries, and ANY_SOURCE for user code."""
    if type(value) is list:
        for item in value:
            _collect(item, env, out)
        return
    if type(value) is not dict:
        return
    env.budget.spend(1)
    for key, body in value.items():
        if key == "ColumnRef":
            out |= _column_ref(body["fields"], env)
        elif key == "FuncCall":
            _collect(body.get("args"), env, out)
            if body.get("agg_within_group"):  # mode() WITHIN GROUP (ORDER BY x) returns an x
                _collect(body.get("agg_order"), env, out)
            if not _builtin_function(_names(body["funcname"])):
                out.add(ANY_SOURCE)
        elif key == "A_Expr":
            _collect(body.get("lexpr"), env, out)
            _collect(body.get("rexpr"), env, out)
            if not _builtin_operator(body.get("name")):
                out.add(ANY_SOURCE)
        elif key == "SubLink":
            if body["subLinkType"] in _VALUE_SUBLINKS:
                out |= _query(body["subselect"], env).everything
        elif key == "SelectStmt":  # JSON_ARRAY(SELECT ...)
            out |= _select(body, env).everything
        elif key.endswith("Stmt"):
            raise _Untraceable(key)
        elif type(body) is dict or type(body) is list:
            _collect(body, env, out)


def _column_ref(fields: list[Node], env: _Env) -> Sources:
    names = [_name(field) for field in fields]
    parts = [name for name in names if name is not None]
    if names[-1] is None:  # `*` (whole rows of the innermost level) or `t.*`
        if len(names) == 1:
            level = env.scope[0] if env.scope else ()
            return _union(rel.whole_row() for rel in level if not rel.qualified_only)
        rels = _qualified(parts, env)
        return _union(rel.whole_row() for rel in rels) if rels else _ANY
    # PostgreSQL's order: [schema.]table.column first, then table.column.field, then column.field.
    for split in range(len(parts) - 1, 0, -1):
        rels = _qualified(parts[:split], env)
        if rels:
            return _union(rel.column(parts[split])[1] for rel in rels)
    status, sources = _unqualified(parts[0], env.scope, env.budget)
    return sources if status != _NO else _ANY


def _qualified(qualifier: list[str], env: _Env) -> list[_Rel]:
    """The relations `qualifier` names in the innermost level that has any."""
    for level in env.scope:
        env.budget.spend(len(level))
        rels = [rel for rel in level if rel.named(qualifier)]
        if rels:
            return rels
    return []


def _unqualified(name: str, scope: Scope, budget: _Budget) -> tuple[int, Sources]:
    """A bare name: a column of every relation that may have it, level after level outwards
    until one surely has it, plus the whole row of a relation so named."""
    status = _NO
    found: set[SourceColumn] = set()
    for level in scope:
        budget.spend(len(level))
        level_status = _NO
        for rel in level:
            if rel.alias == name:
                status = max(status, _MAYBE)
                found |= rel.whole_row()
            if not rel.qualified_only:
                has, sources = rel.column(name)
                level_status = max(level_status, has)
                found |= sources
        status = max(status, level_status)
        if level_status == _SURE:
            break
    return status, frozenset(found)


def _builtin_function(names: list[str]) -> bool:
    """A call computed from its arguments only (`sql.postgres` rule: a quoted "Lower" or a
    schema other than pg_catalog / information_schema is user code)."""
    if [name.lower() for name in names] != names:
        return False
    bare = names[-1]
    builtin = bare in pg_functions.BUILTIN_FUNCTIONS if len(names) == 1 else names[-2] in pg_functions.SYSTEM_SCHEMAS
    effect = pg_functions.SIDE_EFFECTS.get(bare)
    if effect is not None and (not effect.builtin or effect.features & _OPAQUE_FEATURES):
        return False
    return builtin and bare not in _OPAQUE_FUNCTIONS


def _builtin_operator(name: list[Node] | None) -> bool:
    """An operator of pg_catalog; BETWEEN, LIKE & co. carry a keyword, not a symbol."""
    parts = _names(node for node in name or () if "String" in node)
    symbol = parts[-1] if parts else ""
    if not symbol or symbol[0].isalpha():
        return True
    schema_ok = len(parts) == 1 or parts[-2].lower() in pg_functions.SYSTEM_SCHEMAS
    return schema_ok and symbol in pg_functions.BUILTIN_OPERATORS
