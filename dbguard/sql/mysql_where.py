"""MySQL/MariaDB analysis: whether a WHERE filters rows (the unfiltered verdict).

Owns deciding, on a sqlglot tree, whether a SELECT / UPDATE / DELETE condition is missing, always
true, or counts as true because it mentions no column (see "Unfiltered" in `dbguard.sql.mysql`).

Must not parse SQL, walk whole statements, or record anything but `unfiltered` and
literal_sensitive on the facts.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Final

from sqlglot import exp

from dbguard.model import StatementKind
from dbguard.sql.mysql_facts import Facts

# ------------------------------------------------------------------------------- WHERE truth

_UNKNOWN: Final = object()
_NUMBER_PREFIX: Final = re.compile(r"\s*[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")


def check_where(node: exp.Expression, kind: StatementKind, facts: Facts) -> None:
    """Record `kind` as unfiltered when the node's WHERE is missing or always true."""
    where = node.args.get("where")
    if not isinstance(where, exp.Where):
        facts.unfiltered.add(kind)
        return
    if _truth(where.this, facts) is True:
        facts.unfiltered.add(kind)


def _operands(node: exp.Expression, connective: type[exp.Expression]) -> list[exp.Expression]:
    """The operands of a chain of one connective (iteratively: chains can be long)."""
    operands: list[exp.Expression] = []
    stack = [node]
    while stack:
        current = stack.pop()
        while isinstance(current, exp.Paren):
            current = current.this
        if isinstance(current, connective):
            stack.append(current.expression)
            stack.append(current.this)
        else:
            operands.append(current)
    return operands


def _truth(node: exp.Expression, facts: Facts) -> bool | None:
    """True / False when a condition has that value for every row, None when it depends."""
    while isinstance(node, exp.Paren):
        node = node.this
    if isinstance(node, exp.And):
        results = [_truth(operand, facts) for operand in _operands(node, exp.And)]
        if False in results:
            return False
        return True if all(result is True for result in results) else None
    if isinstance(node, exp.Or):
        results = [_truth(operand, facts) for operand in _operands(node, exp.Or)]
        if True in results:
            return True
        return False if all(result is False for result in results) else None
    if isinstance(node, exp.Not) and _mentions_rows(node):
        inner = _truth(node.this, facts)
        return None if inner is None else not inner
    if not _mentions_rows(node):
        # The same value for every row: all rows or none, so it counts as true unless provably false.
        facts.literal_sensitive = True
        value = _constant(node)
        return True if value is _UNKNOWN else bool(_truthy(value))  # NULL selects no row
    if isinstance(node, (exp.EQ, exp.NullSafeEQ, exp.GTE, exp.LTE)) and _same_sides(node):
        return True
    return None


def _mentions_rows(node: exp.Expression) -> bool:
    """Whether a condition can differ from row to row: it mentions a column of the filtered
    statement. A column of a subquery's own tables (qualified with one of their names) does not
    count; an unqualified one might be the outer row's (correlation), so it does."""
    for column in node.find_all(exp.Column):
        qualifier = column.table
        if not qualifier:
            return True
        scope = column.parent
        while scope is not None and scope is not node:
            if isinstance(scope, exp.Select) and qualifier in _source_names(scope):
                break
            scope = scope.parent
        else:
            return True
        if scope is node:
            return True
    return False


def _source_names(select: exp.Select) -> set[str]:
    """The names a column of this SELECT can be qualified with: its tables' names and aliases."""
    names: set[str] = set()
    sources: list[exp.Expr] = []
    from_ = select.args.get("from_")
    if isinstance(from_, exp.From):
        sources.append(from_.this)
    sources.extend(join.this for join in select.args.get("joins") or ())
    for source in sources:
        if isinstance(source, exp.Table):
            names.add(source.name)
        if isinstance(source, (exp.Table, exp.Subquery)) and source.alias:
            names.add(source.alias)
    return names


def _same_sides(node: exp.Expression) -> bool:
    left, right = node.this, node.expression
    if not isinstance(left, exp.Expression) or left.find(exp.Func, exp.Subquery, exp.Select) is not None:
        return False
    return bool(left == right)


def _number(value: object) -> float | None:
    if isinstance(value, float):
        return value
    if isinstance(value, str):
        match = _NUMBER_PREFIX.match(value)
        return float(match.group()) if match else 0.0
    return None  # NULL or unknown


def _truthy(value: object) -> bool | None:
    """MySQL truth of a constant: None for NULL or unknown."""
    number = _number(value)
    return None if number is None else number != 0


_COMPARISONS: Final[dict[type[exp.Expression], Callable[[int], bool]]] = {
    exp.EQ: lambda order: order == 0,
    exp.NullSafeEQ: lambda order: order == 0,
    exp.NEQ: lambda order: order != 0,
    exp.GT: lambda order: order > 0,
    exp.GTE: lambda order: order >= 0,
    exp.LT: lambda order: order < 0,
    exp.LTE: lambda order: order <= 0,
}


def _constant(node: exp.Expression) -> object:
    """The value of a constant expression (float, str, or None for NULL), or _UNKNOWN."""
    while isinstance(node, exp.Paren):
        node = node.this
    if isinstance(node, exp.Literal):
        if node.is_string:
            return str(node.this)
        try:
            return float(node.this)
        except ValueError:
            return _UNKNOWN
    if isinstance(node, exp.Boolean):
        return 1.0 if node.this else 0.0
    if isinstance(node, exp.Null):
        return None
    if isinstance(node, exp.Neg):
        number = _number(_constant(node.this))
        return _UNKNOWN if number is None else -number
    if isinstance(node, exp.Not):
        truth = _truthy(_constant(node.this))
        return None if truth is None else float(not truth)
    comparison = _COMPARISONS.get(type(node))
    if comparison is not None:
        left, right = _constant(node.this), _constant(node.expression)
        if left is _UNKNOWN or right is _UNKNOWN:
            return _UNKNOWN
        if left is None or right is None:
            return float(left is None and right is None) if isinstance(node, exp.NullSafeEQ) else None
        order = _compare(left, right)
        return _UNKNOWN if order is None else float(comparison(order))
    if isinstance(node, exp.Is) and isinstance(node.expression, exp.Null):
        value = _constant(node.this)
        return _UNKNOWN if value is _UNKNOWN else float(value is None)
    if isinstance(node, (exp.Add, exp.Sub, exp.Mul)):
        left_number, right_number = _number(_constant(node.this)), _number(_constant(node.expression))
        if left_number is None or right_number is None:
            return _UNKNOWN
        if isinstance(node, exp.Add):
            return left_number + right_number
        return left_number - right_number if isinstance(node, exp.Sub) else left_number * right_number
    return _UNKNOWN


def _compare(left: object, right: object) -> int | None:
    if isinstance(left, str) and isinstance(right, str):
        left_text, right_text = left.rstrip(" ").casefold(), right.rstrip(" ").casefold()
        return (left_text > right_text) - (left_text < right_text)
    left_number, right_number = _number(left), _number(right)
    if left_number is None or right_number is None:
        return None
    return (left_number > right_number) - (left_number < right_number)
