"""Where each column of a MySQL/MariaDB result may come from: SQL text -> `ResultLineage`.

Owns: reading a statement's select list back to the table columns its values are made of,
through aliases, expressions and functions (CONCAT, UPPER, CAST, HEX, TO_BASE64,
GROUP_CONCAT, JSON_OBJECT, JSON_ARRAYAGG...), scalar subqueries, derived tables, CTEs
(recursive ones to a fixed point), UNION / INTERSECT / EXCEPT (position-wise) and joins; and the
same for a view's definition (`view_lineage`), so the session can see through views. Used by the
masking of result rows (`session.mysql_masking`), which must never under-mask, so every doubt
widens the answer: a call of a function that is not a built-in, a user variable (`@x` may hold
anything an earlier statement read), an unknown construct or a text sqlglot cannot read gives
`ANY_SOURCE` or `UNTRACEABLE`; an unqualified column is a source in every table in scope that
may have it; a versioned comment (`/*!...*/`) is read both with and without its content.

Only what reaches the output counts: columns read in WHERE, JOIN ... ON, GROUP BY, HAVING,
ORDER BY, window PARTITION BY / ORDER BY and EXISTS / IN subqueries are not sources (inference
through filters is a documented limit, docs/masking.md).

Must not: decide anything (masks are `masking.session_masks`'), know the catalog (a view named
here is just a table; the session expands it with `view_lineage`), do I/O, or raise: anything
unexpected is UNTRACEABLE. Part of `dbguard.sql`: parses with `mysql_tree`'s dialect.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Final

from sqlglot import exp

from dbguard.model import ANY_SOURCE, UNTRACEABLE, ResultLineage, SourceColumn
from dbguard.sql import MAX_ANALYSED_CHARS
from dbguard.sql.mysql_facts import BUILTIN_FUNCTIONS, Unparseable
from dbguard.sql.mysql_lexer import Statement, Token, lex, render, respaced
from dbguard.sql.mysql_tree import parse

__all__ = ["NO_RESULT", "ViewLineage", "result_lineage", "statements_lineage", "view_lineage"]

Sources = frozenset[SourceColumn]
_NOTHING: Final[Sources] = frozenset()
_ANYTHING: Final[Sources] = frozenset({ANY_SOURCE})

# A statement that returns no rows (an OK packet): nothing to mask.
NO_RESULT: Final = ResultLineage((), _NOTHING)
# Rows about the schema or the server (SHOW, EXPLAIN...), not read from tables.
_METADATA: Final = ResultLineage(None, _NOTHING)

_QUERY_STARTS: Final = frozenset({"SELECT", "WITH", "TABLE", "VALUES"})
_DML: Final = frozenset({"INSERT", "REPLACE", "UPDATE", "DELETE"})
_METADATA_STARTS: Final = frozenset({"SHOW", "DESCRIBE", "DESC", "EXPLAIN", "HELP", "ANALYZE", "CHECK",
                                     "CHECKSUM", "OPTIMIZE", "REPAIR"})
_NO_RESULT_STARTS: Final = frozenset({
    "CREATE", "ALTER", "DROP", "RENAME", "TRUNCATE", "GRANT", "REVOKE", "SET", "USE", "BEGIN", "START",
    "COMMIT", "ROLLBACK", "SAVEPOINT", "RELEASE", "LOCK", "UNLOCK", "PREPARE", "DEALLOCATE", "DO", "FLUSH",
    "KILL", "LOAD", "XA", "RESET", "PURGE", "INSTALL", "UNINSTALL", "SIGNAL", "RESIGNAL",
})
# Settings after which the rest of a message may lex differently: not traced further.
_LEXING_SETTINGS: Final = ("sql_mode", "names", "character")
_MAX_RECURSION_ROUNDS: Final = 8


class _Untraceable(Exception):
    """Something the walk does not understand: the whole statement is UNTRACEABLE."""


# ------------------------------------------------------------------------------- entry points


@functools.lru_cache(maxsize=2048)
def statements_lineage(sql: str, *, current_database: str | None, ansi_quotes: bool = False,
                       no_backslash_escapes: bool = False) -> tuple[ResultLineage, ...]:
    """One lineage per statement of the message, in order (empty for an empty message), the
    text lexed as the server does with those sql_mode flags. A text that cannot be lexed, or is
    too long, is one UNTRACEABLE statement."""
    if len(sql) > MAX_ANALYSED_CHARS:
        return (UNTRACEABLE,)
    try:
        return _message(sql, current_database, ansi_quotes, no_backslash_escapes)
    except RecursionError:
        return (UNTRACEABLE,)
    except Exception:  # never raise: an unexpected failure widens to anything
        return (UNTRACEABLE,)


def result_lineage(sql: str, *, current_database: str | None, ansi_quotes: bool = False,
                   no_backslash_escapes: bool = False) -> ResultLineage:
    """The lineage of the message's last statement (the one whose result a single-result
    client reads); NO_RESULT for an empty message."""
    found = statements_lineage(sql, current_database=current_database, ansi_quotes=ansi_quotes,
                               no_backslash_escapes=no_backslash_escapes)
    return found[-1] if found else NO_RESULT


@dataclass(frozen=True, slots=True)
class ViewLineage:
    """A view's columns by (lower-case) name, and the union for a name it does not list."""

    columns: dict[str, Sources]
    sources: Sources

    def column(self, name: str) -> Sources:
        return self.columns.get(name.lower(), self.sources)


@functools.lru_cache(maxsize=1024)
def view_lineage(definition: str, *, schema: str) -> ViewLineage:
    """What each column of a view may carry, from its definition (information_schema.VIEWS):
    UNTRACEABLE's sources for every column when it cannot be read."""
    untraceable = ViewLineage({}, _ANYTHING)
    try:
        lexed = lex(definition)
        if lexed.error or len(lexed.statements) != 1:
            return untraceable
        output = _query_output(lexed.statements[0].tokens, schema)
    except (RecursionError, _Untraceable, Unparseable):
        return untraceable
    except Exception:
        return untraceable
    if output is None or output.columns is None:
        return ViewLineage({}, output.sources if output is not None else _ANYTHING)
    columns: dict[str, Sources] = {}
    for name, sources in output.columns:
        columns[name.lower()] = columns.get(name.lower(), _NOTHING) | sources
    return ViewLineage(columns, output.sources)


# ----------------------------------------------------------------------------- the message


def _message(sql: str, database: str | None, ansi_quotes: bool,
             no_backslash_escapes: bool) -> tuple[ResultLineage, ...]:
    lexed = lex(sql, ansi_quotes=ansi_quotes, no_backslash_escapes=no_backslash_escapes)
    found: list[ResultLineage] = []
    traced = True
    for statement in lexed.statements:
        if not traced:
            found.append(UNTRACEABLE)
            continue
        found.append(_statement(statement, database))
        first = statement.tokens[0].keyword
        if first == "USE":
            database = _used_database(statement.tokens)
            traced = database is not None
        elif first == "SET" and any(t.keyword.lower() in _LEXING_SETTINGS for t in statement.tokens):
            traced = False
    if lexed.error:
        found.append(UNTRACEABLE)
    return tuple(found)


def _used_database(tokens: Sequence[Token]) -> str | None:
    if len(tokens) != 2:
        return None
    return tokens[1].value


def _statement(statement: Statement, database: str | None) -> ResultLineage:
    tokens = statement.tokens
    try:
        if any(token.condition for token in tokens):
            return _conditional(tokens, database)
        return _lineage_of(tokens, database)
    except (RecursionError, _Untraceable, Unparseable):
        return UNTRACEABLE


def _conditional(tokens: Sequence[Token], database: str | None) -> ResultLineage:
    """Versioned comments run on some servers only: both readings, merged, positions unknown."""
    plain: list[Token] = []
    respace = False
    for token in tokens:
        if token.condition:
            respace = True
            continue
        plain.append(respaced(token) if respace else token)
        respace = False
    with_all, without = _lineage_of(tokens, database), _lineage_of(plain, database) if plain else NO_RESULT
    if with_all.columns == () and without.columns == ():
        return NO_RESULT
    return ResultLineage(None, with_all.sources | without.sources)


def _lineage_of(tokens: Sequence[Token], database: str | None) -> ResultLineage:
    first = tokens[0].keyword or tokens[0].text
    if first in _QUERY_STARTS or first == "(":
        if any(token.keyword == "INTO" for token in tokens):
            return NO_RESULT  # SELECT ... INTO @var / OUTFILE / DUMPFILE: no rows
        output = _query_output(tokens, database)
        if output is None:
            return NO_RESULT  # WITH ... UPDATE / DELETE
        return output.lineage()
    if first in _DML:
        if not any(token.keyword == "RETURNING" for token in tokens):
            return NO_RESULT
        return _returning(tokens, database)
    if first in _METADATA_STARTS:
        return _METADATA
    if first in _NO_RESULT_STARTS:
        return NO_RESULT
    return UNTRACEABLE  # CALL, EXECUTE, HANDLER, anything else that may return rows


def _returning(tokens: Sequence[Token], database: str | None) -> ResultLineage:
    """MariaDB's INSERT / REPLACE / DELETE ... RETURNING: any column of the tables it names."""
    root = parse(render(tokens))
    sources = {_base(table, database, "*") for table in root.find_all(exp.Table) if table.name}
    if any(_is_user_function(node) for node in root.find_all(exp.Func)):
        sources.add(ANY_SOURCE)
    return ResultLineage(None, frozenset(sources))


# ----------------------------------------------------------------------------- relations


@dataclass(frozen=True, slots=True)
class _Output:
    """A query's result: named columns in order (None: positions unknown, a `*` over a table),
    and everything any of its columns may carry."""

    columns: tuple[tuple[str, Sources], ...] | None
    sources: Sources

    def lineage(self) -> ResultLineage:
        if self.columns is None:
            return ResultLineage(None, self.sources)
        return ResultLineage(tuple(sources for _, sources in self.columns), self.sources)


def _output(columns: Sequence[tuple[str, Sources]] | None, extra: Sources = _NOTHING) -> _Output:
    if columns is None:
        return _Output(None, extra)
    union: set[SourceColumn] = set(extra)
    for _, sources in columns:
        union |= sources
    return _Output(tuple(columns), frozenset(union))


@dataclass(frozen=True, slots=True)
class _Relation:
    """One FROM item under its name: a base table (any column name is its own source) or a
    derived one (a subquery, a CTE, JSON_TABLE: its output)."""

    name: str
    schema: str | None = None
    table: str | None = None  # a base table's name
    output: _Output | None = None  # a derived relation's output

    def column(self, name: str) -> Sources | None:
        if self.table is not None:
            return frozenset({SourceColumn(self.schema, self.table, name)})
        assert self.output is not None
        if self.output.columns is None:
            return self.output.sources
        matches = [sources for column, sources in self.output.columns if column.lower() == name.lower()]
        return frozenset().union(*matches) if matches else None

    def star(self) -> _Output:
        if self.table is not None:
            return _Output(None, frozenset({SourceColumn(self.schema, self.table, "*")}))
        assert self.output is not None
        return self.output


@dataclass(frozen=True, slots=True)
class _Scope:
    """The relations a SELECT reads, the CTEs visible to it, its enclosing scope (what a
    correlated subquery also sees) and the current database."""

    relations: tuple[_Relation, ...]
    ctes: dict[str, _Output]
    outer: _Scope | None
    database: str | None

    def find(self, name: str) -> _Relation | None:
        scope: _Scope | None = self
        while scope is not None:
            for relation in scope.relations:
                if relation.name.lower() == name.lower():
                    return relation
            scope = scope.outer
        return None

    def nested(self, ctes: dict[str, _Output] | None = None) -> _Scope:
        """The scope a query inside this one starts from: nothing read yet, this one around it."""
        return _Scope((), self.ctes if ctes is None else ctes, self if self.relations else self.outer,
                      self.database)


def _base(table: exp.Table, database: str | None, column: str) -> SourceColumn:
    return SourceColumn(table.db or database, table.name, column)


def _union_of(parts: Iterable[Sources]) -> Sources:
    return frozenset().union(*parts)


# ----------------------------------------------------------------------------- queries


def _query_output(tokens: Sequence[Token], database: str | None) -> _Output | None:
    root = parse(render(tokens))
    if isinstance(root, (exp.Update, exp.Delete)):
        return None
    return _query(root, _Scope((), {}, None, database))


def _query(node: exp.Expr, scope: _Scope) -> _Output:
    """The output of a query expression; `scope` is where it appears (its relations are
    visible to it, as the outer query's of a correlated subquery)."""
    inner = scope.nested(_with(node, scope))
    if isinstance(node, exp.Subquery):
        return _query(node.this, inner)
    if isinstance(node, exp.Select):
        return _select(node, inner)
    if isinstance(node, exp.SetOperation):
        return _set_operation(_query(node.left, inner), _query(node.right, inner))
    if isinstance(node, exp.Values):
        return _values(node, inner)
    raise _Untraceable(f"query node {type(node).__name__}")


def _with(node: exp.Expr, scope: _Scope) -> dict[str, _Output]:
    ctes = dict(scope.ctes)
    with_ = node.args.get("with_")
    if not isinstance(with_, exp.With):
        return ctes
    for cte in with_.expressions:
        if not isinstance(cte, exp.CTE):
            raise _Untraceable("unexpected WITH item")
        name = cte.alias_or_name.lower()
        names = _alias_columns(cte)
        if with_.args.get("recursive"):
            ctes[name] = _recursive(cte, name, names, ctes, scope)
        else:
            ctes[name] = _renamed(_query(cte.this, scope.nested(dict(ctes))), names)
    return ctes


def _recursive(cte: exp.CTE, name: str, names: list[str], ctes: dict[str, _Output], scope: _Scope) -> _Output:
    """A recursive CTE's output, to a fixed point (sources only grow)."""
    current = _Output(None, _NOTHING)
    for _ in range(_MAX_RECURSION_ROUNDS):
        found = _renamed(_query(cte.this, scope.nested({**ctes, name: current})), names)
        if found == current:
            return found
        current = found
    raise _Untraceable("recursive CTE does not settle")


def _renamed(output: _Output, names: Sequence[str]) -> _Output:
    if not names or output.columns is None:
        return output
    if len(names) != len(output.columns):
        raise _Untraceable("column list of another length than the query's")
    return _Output(tuple((new, sources) for new, (_, sources) in zip(names, output.columns, strict=True)),
                   output.sources)


def _set_operation(left: _Output, right: _Output) -> _Output:
    if left.columns is None or right.columns is None or len(left.columns) != len(right.columns):
        return _Output(None, left.sources | right.sources)
    columns = tuple((name, a | b) for (name, a), (_, b) in zip(left.columns, right.columns, strict=True))
    return _output(columns, left.sources | right.sources)


def _values(node: exp.Values, scope: _Scope) -> _Output:
    rows: list[list[Sources]] = []
    for row in node.expressions:
        items = row.expressions if isinstance(row, exp.Tuple) else [row]
        if len(items) == 1 and isinstance(items[0], exp.Anonymous) and items[0].name.upper() == "ROW":
            items = items[0].expressions
        rows.append([_sources(item, scope) for item in items])
    if not rows or any(len(row) != len(rows[0]) for row in rows):
        raise _Untraceable("VALUES rows of different lengths")
    columns = [(f"column_{i}", _union_of(row[i] for row in rows)) for i in range(len(rows[0]))]
    return _output(columns)


def _select(node: exp.Select, scope: _Scope) -> _Output:
    here = _Scope(tuple(_from_items(node, scope)), scope.ctes, scope.outer, scope.database)
    columns: list[tuple[str, Sources]] | None = []
    extra: set[SourceColumn] = set()
    for item in node.expressions:
        stars = _star_outputs(item, here)
        if stars is None:
            sources = _sources(item, here)
            extra |= sources
            if columns is not None:
                columns.append((item.alias_or_name, sources))
            continue
        for star in stars:
            extra |= star.sources
            if columns is not None and star.columns is not None:
                columns.extend(star.columns)
            else:
                columns = None
    return _output(columns, frozenset(extra))


def _star_outputs(item: exp.Expr, scope: _Scope) -> list[_Output] | None:
    """`*` or `t.*` in a select list: the outputs it expands to (None: not a star)."""
    if isinstance(item, exp.Star):
        if not scope.relations:
            raise _Untraceable("* without a FROM")
        return [relation.star() for relation in scope.relations]
    if isinstance(item, exp.Column) and isinstance(item.this, exp.Star):
        if item.db:
            return [_Output(None, frozenset({SourceColumn(item.db, item.table, "*")}))]
        relation = scope.find(item.table)
        if relation is None:
            raise _Untraceable(f"{item.table}.* names no table in scope")
        return [relation.star()]
    return None


def _from_items(node: exp.Select, scope: _Scope) -> list[_Relation]:
    items: list[exp.Expr] = []
    from_ = node.args.get("from_")
    if isinstance(from_, exp.From):
        items.append(from_.this)
    items.extend(join.this for join in node.args.get("joins") or ())
    items.extend(node.args.get("laterals") or ())
    relations: list[_Relation] = []
    for item in items:
        # A LATERAL derived table (and JSON_TABLE) sees the relations before it.
        relations.append(_relation(item, _Scope(tuple(relations), scope.ctes, scope.outer, scope.database)))
    return relations


def _relation(item: exp.Expr, scope: _Scope) -> _Relation:
    if isinstance(item, exp.Table) and isinstance(item.this, exp.Identifier):
        name = item.alias_or_name
        cte = scope.ctes.get(item.name.lower()) if not item.db else None
        if cte is not None:
            return _Relation(name, output=_renamed(cte, _alias_columns(item)))
        return _Relation(name, schema=item.db or scope.database, table=item.name)
    if isinstance(item, exp.Subquery):
        return _Relation(item.alias_or_name, output=_renamed(_query(item.this, scope), _alias_columns(item)))
    if isinstance(item, exp.Lateral) and isinstance(item.this, exp.Subquery):
        output = _query(item.this.this, scope)
        return _Relation(item.alias_or_name, output=_renamed(output, _alias_columns(item)))
    json_table = item.this if isinstance(item, exp.Table) else item
    if isinstance(json_table, exp.JSONTable):
        return _Relation(item.alias_or_name, output=_Output(None, _sources(json_table.this, scope)))
    raise _Untraceable(f"FROM item {type(item).__name__}")


def _alias_columns(item: exp.Expr) -> list[str]:
    alias = item.args.get("alias")
    if isinstance(alias, exp.TableAlias):
        return [column.name for column in alias.columns]
    return []


# ----------------------------------------------------------------------------- expressions


def _sources(node: exp.Expr, scope: _Scope) -> Sources:
    """Every table column whose value may reach the output through `node`."""
    found: set[SourceColumn] = set()
    pending: list[exp.Expr] = [node]
    while pending:
        current = pending.pop()
        if isinstance(current, exp.Column):
            found |= _column(current, scope)
            continue
        if isinstance(current, (exp.Subquery, exp.Select, exp.SetOperation)):
            found |= _query(current, scope).sources
            continue
        if isinstance(current, exp.Exists):
            continue  # a boolean about other rows
        if isinstance(current, exp.In):
            pending.append(current.this)
            pending.extend(current.expressions)
            continue  # the subquery of `x IN (SELECT ...)` is a filter
        if isinstance(current, exp.Window):
            pending.append(current.this)
            continue  # PARTITION BY / ORDER BY order rows, their values do not reach the output
        if isinstance(current, exp.Order):
            pending.append(current.this)
            continue  # GROUP_CONCAT(x ORDER BY y): y orders, x is the value
        if isinstance(current, exp.PropertyEQ):
            pending.append(current.expression)
            continue  # @v := x: the value is x's
        if isinstance(current, exp.Parameter):
            found.add(ANY_SOURCE)  # a user variable: whatever an earlier statement put in it
            continue
        if _calls_user_code(current):
            found.add(ANY_SOURCE)
            continue
        pending.extend(_children(current))
    return frozenset(found)


def _children(node: exp.Expr) -> list[exp.Expr]:
    children: list[exp.Expr] = []
    for value in node.args.values():
        if isinstance(value, exp.Expr):
            children.append(value)
        elif isinstance(value, list):
            children.extend(item for item in value if isinstance(item, exp.Expr))
    return children


def _calls_user_code(node: exp.Expr) -> bool:
    """A user function's call: `f(x)` not a built-in, `` `f`(x) ``, `db.f(x)`."""
    if isinstance(node, exp.Dot):
        return node.find(exp.Func) is not None
    return isinstance(node, exp.Func) and _is_user_function(node)


def _is_user_function(node: exp.Expr) -> bool:
    """A call the server may run as a stored function: not a built-in name, quoted or qualified."""
    called = node.meta.get("dbguard_function")
    if isinstance(called, tuple) and len(called) == 2 and called[1]:
        return True  # `f`(...): a quoted name is never a built-in
    if isinstance(node, exp.Anonymous):
        return isinstance(node.parent, exp.Dot) or node.name.lower() not in BUILTIN_FUNCTIONS
    return False


def _column(column: exp.Column, scope: _Scope) -> Sources:
    if isinstance(column.this, exp.Star):
        stars = _star_outputs(column, scope)
        return _union_of(star.sources for star in stars or ())
    name = column.name
    if column.db:
        return frozenset({SourceColumn(column.db, column.table, name)})
    if column.table:
        relation = scope.find(column.table)
        found = relation.column(name) if relation is not None else None
        return found if found is not None else _ANYTHING
    current: _Scope | None = scope
    while current is not None:
        candidates = [relation.column(name) for relation in current.relations]
        matched = [sources for sources in candidates if sources is not None]
        if matched:
            return _union_of(matched)
        current = current.outer
    return _ANYTHING  # a name nothing in scope has (a select-list alias seen by a subquery...)
