"""MySQL/MariaDB analysis: sqlglot parsing and the walk of its trees.

Owns the sqlglot dialect (recording the name each function was called by), parsing re-rendered
tokens (`parse`, `expressions`, `query`, with SELECT ... INTO stripped first), and `collect`,
which records what a tree does (tables read and written, kinds, functions, forbidden nodes).
Part of `dbguard.sql.mysql`.

Must not dispatch statements or read keyword statements' grammars (that is the handlers').
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any, Final

from sqlglot import exp
from sqlglot.dialects.mysql import MySQL
from sqlglot.parsers.mysql import MySQLParser
from sqlglot.tokenizer_core import TokenType

from dbguard.model import Feature, StatementKind
from dbguard.sql.mysql_facts import Cursor, Facts, Unparseable, is_punct
from dbguard.sql.mysql_lexer import Token, render, respaced
from dbguard.sql.mysql_where import check_where

_K = StatementKind
_F = Feature


# sqlglot logs a warning for each statement it falls back to a Command for; those statements are
# unparseable here, and the log line would only be noise on the hot path.
logging.getLogger("sqlglot").setLevel(logging.ERROR)

QUERY_ROOTS: Final = (exp.Select, exp.SetOperation, exp.Values, exp.Subquery)


def _with_subclasses(*classes: type[exp.Expression]) -> frozenset[type[exp.Expression]]:
    found: set[type[exp.Expression]] = set()
    pending = list(classes)
    while pending:
        cls = pending.pop()
        if cls not in found:
            found.add(cls)
            pending.extend(cls.__subclasses__())
    return frozenset(found)


# Statement-level nodes that must never appear inside what is analysed as one statement.
_FORBIDDEN_NODES: Final = _with_subclasses(
    exp.Command,
    exp.Into,
    exp.Set,
    exp.Use,
    exp.Drop,
    exp.Alter,
    exp.Describe,
    exp.Show,
    exp.Transaction,
    exp.Commit,
    exp.Rollback,
    exp.Kill,
    exp.Merge,
    exp.TruncateTable,
    exp.Create,
)
_FUNCTION_META: Final = "dbguard_function"


class _Parser(MySQLParser):
    """sqlglot's MySQL parser, recording on each function node the name it was called by.

    sqlglot maps many names onto one node class (IFNULL -> Coalesce, DATE_FORMAT -> TimeToStr);
    rules match the name the SQL used, so it is kept in the node's meta.
    """

    def _parse_function_call(
        self,
        functions: dict[str, Callable[..., Any]] | None = None,
        anonymous: bool = False,
        optional_parens: bool = True,
        any_token: bool = False,
    ) -> exp.Expr | None:
        token = self._curr
        called = token is not None and self._next is not None and self._next.token_type == TokenType.L_PAREN
        result = super()._parse_function_call(
            functions=functions, anonymous=anonymous, optional_parens=optional_parens, any_token=any_token
        )
        if called and result is not None and token.token_type not in self.SUBQUERY_PREDICATES:
            node = result.this if isinstance(result, exp.Window) and isinstance(result.this, exp.Expr) else result
            node.meta[_FUNCTION_META] = (token.text, token.token_type == TokenType.IDENTIFIER)
        return result


class _Dialect(MySQL):
    Parser = _Parser


_DIALECT: Final = _Dialect()


# ------------------------------------------------------------------------------ sqlglot parsing


def parse(text: str) -> exp.Expression:
    try:
        roots = [root for root in _DIALECT.parse(text) if root is not None]
    except RecursionError:
        raise Unparseable("statement nested too deeply") from None
    except Exception as error:  # sqlglot's ParseError, TokenError, or anything it trips on
        raise Unparseable(f"sqlglot: {str(error).splitlines()[0][:300]}") from None
    if len(roots) != 1 or not isinstance(roots[0], exp.Expression):
        raise Unparseable("sqlglot did not read exactly one statement")
    return roots[0]


def expressions(tokens: Sequence[Token], facts: Facts) -> None:
    """Analyse a comma-separated list of expressions (SET values, DO, CALL arguments...)."""
    if not tokens:
        return
    if not any(is_punct(token, "(") for token in tokens):
        return  # no call and no subquery: nothing to see, whatever the server makes of it
    root = parse("SELECT " + render(tokens))
    if not isinstance(root, exp.Select) or any(value for key, value in root.args.items() if key != "expressions"):
        raise Unparseable("not an expression list")
    collect(root, facts, wrapper=True)


def query(tokens: Sequence[Token], facts: Facts) -> None:
    """SELECT, TABLE, VALUES, WITH ..., (SELECT ...)."""
    first = tokens[0].keyword
    tokens = _strip_select_into(tokens, facts)
    root = parse(render(tokens))
    if first == "WITH" and isinstance(root, (exp.Update, exp.Delete)):
        facts.command = "UPDATE" if isinstance(root, exp.Update) else "DELETE"
    elif isinstance(root, QUERY_ROOTS):
        facts.command = first if first in ("TABLE", "VALUES") else "SELECT"
        if isinstance(root, exp.Values):
            facts.kind(_K.SELECT)
    else:
        raise Unparseable(f"unexpected {type(root).__name__} statement")
    collect(root, facts)


def _strip_select_into(tokens: Sequence[Token], facts: Facts) -> Sequence[Token]:
    """Remove `INTO OUTFILE 'f' ...`, `INTO DUMPFILE 'f'`, `INTO @a, @b` (sqlglot reads none of
    them as MySQL means them); file targets are file_access."""
    if not any(token.keyword == "INTO" for token in tokens):
        return tokens
    kept: list[Token] = []
    cursor = Cursor(tokens, 0)
    respace = False
    while not cursor.at_end():
        token = cursor.peek()
        assert token is not None
        if token.keyword != "INTO":
            kept.append(respaced(token) if respace else token)
            respace = False
            cursor.advance()
            continue
        cursor.advance()
        target = cursor.accept_any("OUTFILE", "DUMPFILE")
        if target:
            facts.feature(_F.FILE_ACCESS)
            facts.note(f"writes server file {cursor.string()!r}")
            if target == "OUTFILE":
                _skip_export_options(cursor)
        else:
            while True:
                cursor.punct("@")
                cursor.name()
                if not cursor.punct(","):
                    break
        respace = True
    return kept


def _skip_export_options(cursor: Cursor) -> None:
    """[CHARACTER SET x] [{FIELDS|COLUMNS} ...] [LINES ...] of INTO OUTFILE and LOAD DATA."""
    while True:
        if cursor.accept("CHARACTER", "SET") or cursor.accept("CHARSET"):
            cursor.name()
        elif cursor.accept_any("FIELDS", "COLUMNS"):
            if not _skip_by_options(
                cursor, (("TERMINATED", "BY"), ("OPTIONALLY", "ENCLOSED", "BY"), ("ENCLOSED", "BY"), ("ESCAPED", "BY"))
            ):
                raise Unparseable("FIELDS without options")
        elif cursor.accept("LINES"):
            if not _skip_by_options(cursor, (("STARTING", "BY"), ("TERMINATED", "BY"))):
                raise Unparseable("LINES without options")
        else:
            return


def _skip_by_options(cursor: Cursor, options: tuple[tuple[str, ...], ...]) -> bool:
    found = False
    while any(cursor.accept(*option) for option in options):
        cursor.text_value()
        found = True
    return found


# ------------------------------------------------------------------------------ the AST walk


def collect(root: exp.Expression, facts: Facts, *, wrapper: bool = False, definition: bool = False) -> None:
    """Record what a sqlglot tree does. wrapper: the root SELECT only carries expressions (DO,
    SET values...). definition: a stored body (view), not run now: only its reads and functions."""
    writes: set[int] = set()
    skipped: set[int] = set()
    # One breadth-first pass: a statement node is met before the tables under it, so its write
    # targets are known by the time they are.
    ctes = False  # a WITH was met: from then on an unqualified name may be a CTE
    for node in root.walk():
        node_type = type(node)
        if node_type not in _COLLECTED:
            if node_type in _FORBIDDEN_NODES:
                raise Unparseable(f"unexpected {node_type.__name__} inside a statement")
        elif isinstance(node, exp.Table):
            if id(node) in skipped or node.find_ancestor(exp.Reference) is not None:
                continue
            name = _table_name(node, facts, ctes)
            if name is not None:
                (facts.writes if id(node) in writes else facts.reads).add(name)
        elif isinstance(node, exp.Select):
            if node.args.get("with_"):
                ctes = True  # its own WITH is a child, met after it
            if not (definition or (wrapper and node is root)):
                facts.kind(_K.SELECT)
                if _reads_a_table(node, facts, ctes):
                    check_where(node, _K.SELECT, facts)
        elif isinstance(node, exp.Insert):
            _insert_targets(node, writes)
            facts.kind(_K.INSERT)
            conflict = node.args.get("conflict")
            if isinstance(conflict, exp.OnConflict) and conflict.args.get("duplicate"):
                facts.kind(_K.UPDATE)
        elif isinstance(node, exp.Update):
            _update_targets(node, writes)
            facts.kind(_K.UPDATE)
            check_where(node, _K.UPDATE, facts)
        elif isinstance(node, exp.Delete):
            _delete_targets(node, facts, writes, skipped)
            facts.kind(_K.DELETE)
            check_where(node, _K.DELETE, facts)
        elif isinstance(node, exp.Create):
            if node is not root:
                raise Unparseable("unexpected Create inside a statement")
            target = node.this.this if isinstance(node.this, exp.Schema) else node.this
            writes.add(id(target))
        elif isinstance(node, exp.With):
            ctes = True
        called = node.meta_get(_FUNCTION_META)
        if called is not None:
            name, quoted = called
            facts.function(name, quoted, _qualifier(node), definition=definition)


_COLLECTED: Final = frozenset({exp.Table, exp.Select, exp.Insert, exp.Update, exp.Delete, exp.Create, exp.With})


def _table_name(node: exp.Table, facts: Facts, ctes: bool = True) -> str | None:
    """ "db.table" for a table reference; None for a CTE, DUAL or a table function."""
    identifier = node.this
    if not isinstance(identifier, exp.Identifier):
        return None
    name = identifier.name
    if node.args.get("catalog"):
        raise Unparseable(f"three-part table name {node.text('catalog')}.{node.text('db')}.{name}")
    database = node.text("db")
    if not database:
        if name.lower() == "dual" and not identifier.quoted:
            return None
        if ctes and _is_cte_reference(node, name):
            return None
    return facts.table(database or None, name)


def _is_cte_reference(node: exp.Table, name: str) -> bool:
    """An unqualified name that a WITH in scope defines (a CTE cannot see itself or a later one
    unless the WITH is RECURSIVE: there the name is a table)."""
    ancestors: list[exp.Expr] = []
    parent = node.parent
    while parent is not None:
        ancestors.append(parent)
        parent = parent.parent
    inside = {id(ancestor) for ancestor in ancestors}
    for ancestor in ancestors:
        with_ = ancestor.args.get("with_")
        if not isinstance(with_, exp.With):
            continue
        ctes = with_.expressions
        containing = next((index for index, cte in enumerate(ctes) if id(cte) in inside), None)
        for index, cte in enumerate(ctes):
            if cte.alias != name:
                continue
            if with_.args.get("recursive") or containing is None or index < containing:
                return True
    return False


def _qualifier(node: exp.Expr) -> str:
    parent = node.parent
    if isinstance(parent, exp.Dot) and parent.expression is node:
        return _dotted(parent.this)
    return ""


def _dotted(node: exp.Expr) -> str:
    if isinstance(node, exp.Identifier):
        return node.name
    if isinstance(node, exp.Column):
        return ".".join(part.name for part in node.parts)
    if isinstance(node, exp.Dot):
        return f"{_dotted(node.this)}.{_dotted(node.expression)}"
    return node.name or "?"


def _table_sources(node: exp.Expression, *keys: str) -> list[exp.Table]:
    """The exp.Table nodes directly in a FROM-like clause (and its joins)."""
    found: list[exp.Table] = []
    for key in keys:
        value = node.args.get(key)
        for item in value if isinstance(value, list) else [value]:
            if isinstance(item, exp.From):
                item = item.this
            if isinstance(item, exp.Table):
                found.append(item)
                found.extend(join.this for join in item.args.get("joins") or () if isinstance(join.this, exp.Table))
    found.extend(join.this for join in node.args.get("joins") or () if isinstance(join.this, exp.Table))
    return found


def _reads_a_table(select: exp.Select, facts: Facts, ctes: bool) -> bool:
    return any(_table_name(table, facts, ctes) is not None for table in _table_sources(select, "from_"))


def _insert_targets(node: exp.Insert, writes: set[int]) -> None:
    target = node.this.this if isinstance(node.this, exp.Schema) else node.this
    if isinstance(target, exp.Table):
        writes.add(id(target))


def _by_alias(tables: Sequence[exp.Table]) -> dict[str, exp.Table]:
    index: dict[str, exp.Table] = {}
    for table in tables:
        index.setdefault(table.name, table)
    for table in tables:  # an alias hides the table's own name
        if table.alias:
            index[table.alias] = table
    return index


def _update_targets(node: exp.Update, writes: set[int]) -> None:
    tables = _table_sources(node, "this")
    qualifiers = set()
    for assignment in node.expressions:
        column = assignment.this if isinstance(assignment, exp.EQ) else None
        qualifiers.add(column.table if isinstance(column, exp.Column) else "")
    index = _by_alias(tables)
    if len(tables) > 1 and "" not in qualifiers and qualifiers <= set(index):
        writes.update(id(index[qualifier]) for qualifier in qualifiers)
    else:
        writes.update(id(table) for table in tables)


def _delete_targets(node: exp.Delete, facts: Facts, writes: set[int], skipped: set[int]) -> None:
    named = node.args.get("tables")
    using = node.args.get("using")
    if named:  # DELETE t1, t2 FROM t1 JOIN t2 ...
        references, sources = list(named), _table_sources(node, "this")
    elif using:  # DELETE FROM t1, t2 USING t1 JOIN t2 ...
        references, sources = _table_sources(node, "this"), _table_sources(node, "using")
    else:
        writes.update(id(table) for table in _table_sources(node, "this"))
        return
    index = _by_alias(sources)
    for reference in references:
        if not isinstance(reference, exp.Table):
            raise Unparseable("unexpected DELETE target")
        match = index.get(reference.name) if not reference.text("db") else None
        if match is not None and match is not reference:
            skipped.add(id(reference))
            writes.add(id(match))
        else:
            writes.add(id(reference))
