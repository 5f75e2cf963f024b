"""Lineage of MySQL/MariaDB results (`dbguard.sql.mysql_lineage`): which table columns each
output column of a statement may carry.

Covers: plain columns, aliases, qualified names, expressions and built-in functions (CONCAT,
UPPER, SUBSTRING, CAST, CONVERT, HEX, TO_BASE64, GROUP_CONCAT, JSON_OBJECT, JSON_ARRAYAGG,
window functions), scalar and correlated subqueries, derived tables (with column lists),
CTEs (recursive too), UNION position-wise, joins, `*` and `t.*`, what does not reach the
output (WHERE, ON, ORDER BY, EXISTS, IN subqueries, window ordering), user functions and user
variables (anything), statements without rows, metadata statements, CALL, multi-statement
messages with USE, versioned comments, SELECT ... INTO, RETURNING, sql_mode lexing flags,
unparseable text, and view definitions as information_schema gives them.
"""

from __future__ import annotations

import pytest

from dbguard.model import ANY_SOURCE, UNTRACEABLE, ResultLineage, SourceColumn
from dbguard.sql.mysql_lineage import NO_RESULT, result_lineage, statements_lineage, view_lineage


def col(table: str, column: str, schema: str | None = "app") -> SourceColumn:
    return SourceColumn(schema, table, column)


def cols(*specs: str, schema: str | None = "app") -> frozenset[SourceColumn]:
    found = set()
    for spec in specs:
        if spec == "ANY":
            found.add(ANY_SOURCE)
            continue
        table, column = spec.split(".")
        found.add(SourceColumn(schema, table, column))
    return frozenset(found)


def lineage(sql: str, database: str | None = "app") -> ResultLineage:
    return result_lineage(sql, current_database=database)


POSITIONAL = [
    ("SELECT email FROM customers", [["customers.email"]]),
    ("SELECT email AS e, id FROM customers", [["customers.email"], ["customers.id"]]),
    ("SELECT c.email FROM customers AS c", [["customers.email"]]),
    ("SELECT app.customers.email FROM app.customers", [["customers.email"]]),
    ("SELECT UPPER(email), LOWER(name) FROM customers", [["customers.email"], ["customers.name"]]),
    ("SELECT CONCAT(name, '<', email, '>') FROM customers", [["customers.name", "customers.email"]]),
    ("SELECT SUBSTRING(ssn, 1, 3), CAST(ssn AS CHAR), CONVERT(ssn USING utf8mb4) FROM customers",
     [["customers.ssn"], ["customers.ssn"], ["customers.ssn"]]),
    ("SELECT HEX(email), TO_BASE64(email), REVERSE(email) FROM customers",
     [["customers.email"], ["customers.email"], ["customers.email"]]),
    ("SELECT GROUP_CONCAT(email ORDER BY id SEPARATOR ';') FROM customers", [["customers.email"]]),
    ("SELECT JSON_OBJECT('e', email), JSON_ARRAYAGG(ssn) FROM customers", [["customers.email"], ["customers.ssn"]]),
    ("SELECT (SELECT MAX(o.total) FROM orders o WHERE o.customer_id = c.id) FROM customers c", [["orders.total"]]),
    ("SELECT (SELECT c.email) FROM customers c", [["customers.email"]]),
    ("SELECT x FROM (SELECT email AS x FROM customers) d", [["customers.email"]]),
    ("SELECT b FROM (SELECT id, email FROM customers) AS d (a, b)", [["customers.email"]]),
    ("WITH c AS (SELECT email FROM customers) SELECT email FROM c", [["customers.email"]]),
    ("WITH c (m) AS (SELECT email FROM customers) SELECT * FROM c", [["customers.email"]]),
    ("WITH a AS (SELECT ssn FROM customers), b AS (SELECT ssn AS s FROM a) SELECT s FROM b", [["customers.ssn"]]),
    ("WITH RECURSIVE r AS (SELECT 1 AS n, email FROM customers UNION ALL SELECT n + 1, email FROM r WHERE n < 3) "
     "SELECT n, email FROM r", [[], ["customers.email"]]),
    ("SELECT email FROM customers UNION SELECT name FROM users", [["customers.email", "users.name"]]),
    ("SELECT id, email FROM customers UNION ALL SELECT id, ssn FROM staff",
     [["customers.id", "staff.id"], ["customers.email", "staff.ssn"]]),
    ("SELECT a.email, b.name FROM customers a JOIN users b ON a.id = b.id", [["customers.email"], ["users.name"]]),
    ("SELECT name FROM customers a JOIN users b ON a.email = b.email", [["customers.name", "users.name"]]),
    ("SELECT id FROM customers WHERE email = 'x' ORDER BY ssn", [["customers.id"]]),
    ("SELECT id FROM customers WHERE EXISTS (SELECT ssn FROM staff) AND id IN (SELECT id FROM staff)",
     [["customers.id"]]),
    ("SELECT email IN (SELECT x FROM y) FROM customers", [["customers.email"]]),
    ("SELECT ROW_NUMBER() OVER (ORDER BY email), LAG(ssn) OVER (PARTITION BY email) FROM customers",
     [[], ["customers.ssn"]]),
    ("SELECT COUNT(*), 1, 'x', NOW() FROM customers", [[], [], [], []]),
    ("SELECT myfunc(id) FROM customers", [["ANY"]]),
    ("SELECT `upper`(email) FROM customers", [["ANY"]]),
    ("SELECT app.f(id) FROM customers", [["ANY"]]),
    ("SELECT @v, @@sql_mode", [["ANY"], []]),
    ("SELECT @v := email FROM customers", [["customers.email"]]),
    ("VALUES ROW(1, 'a')", [[], []]),
    ("(SELECT email FROM customers)", [["customers.email"]]),
    ("SELECT email FROM customers WHERE id = ?", [["customers.email"]]),
    ("SELECT e FROM (SELECT email AS e FROM customers LIMIT 5) d", [["customers.email"]]),
]


@pytest.mark.parametrize(("sql", "expected"), POSITIONAL)
def test_positional_lineage(sql: str, expected: list[list[str]]) -> None:
    found = lineage(sql)
    assert found.columns == tuple(cols(*specs) for specs in expected), sql
    assert found.sources == frozenset().union(*found.columns)


@pytest.mark.parametrize(("sql", "sources"), [
    ("SELECT * FROM customers", ["customers.*"]),
    ("SELECT c.*, 1 FROM customers c", ["customers.*"]),
    ("SELECT *, UPPER(email) FROM customers", ["customers.*", "customers.email"]),
    ("TABLE customers", ["customers.*"]),
    ("SELECT * FROM customers a JOIN users b ON a.id = b.id", ["customers.*", "users.*"]),
    ("SELECT id FROM customers UNION SELECT * FROM users", ["customers.id", "users.*"]),
    ("SELECT /*!50700 email, */ id FROM customers", ["customers.email", "customers.id"]),
    ("DELETE FROM customers WHERE id = 1 RETURNING email", ["customers.*"]),
])
def test_positions_unknown(sql: str, sources: list[str]) -> None:
    assert lineage(sql) == ResultLineage(None, cols(*sources))


def test_star_over_derived_tables_keeps_positions() -> None:
    assert lineage("SELECT * FROM (SELECT email, id FROM customers) d").columns == (
        cols("customers.email"), cols("customers.id"))


@pytest.mark.parametrize("sql", [
    "INSERT INTO customers VALUES (1, 'a')",
    "UPDATE customers SET email = 'x'",
    "DELETE FROM customers",
    "SET @x = (SELECT email FROM customers LIMIT 1)",
    "SELECT email INTO @x FROM customers LIMIT 1",
    "SELECT email INTO OUTFILE '/tmp/x' FROM customers",
    "CREATE TABLE t2 AS SELECT email FROM customers",
    "BEGIN",
    "USE app",
])
def test_statements_without_rows(sql: str) -> None:
    assert lineage(sql) == NO_RESULT


@pytest.mark.parametrize("sql", ["SHOW TABLES", "EXPLAIN SELECT email FROM customers", "DESCRIBE customers"])
def test_metadata_statements_carry_no_table_values(sql: str) -> None:
    assert lineage(sql) == ResultLineage(None, frozenset())


@pytest.mark.parametrize("sql", [
    "CALL p()",
    "EXECUTE s",
    "HANDLER customers READ FIRST",
    "SELECT FROM WHERE",
    "SELECT * FROM",
    "SELECT 'unterminated",
    "SELECT x.* FROM customers",
])
def test_what_cannot_be_traced_is_anything(sql: str) -> None:
    assert lineage(sql) == UNTRACEABLE


def test_unqualified_names_without_a_database() -> None:
    assert lineage("SELECT email FROM customers", None).columns == (cols("customers.email", schema=None),)


def test_several_statements_one_lineage_each_and_use_changes_the_database() -> None:
    found = statements_lineage("SELECT id FROM customers; USE other; SELECT email FROM customers",
                               current_database="app")
    assert found == (ResultLineage((cols("customers.id"),), cols("customers.id")), NO_RESULT,
                     ResultLineage((cols("customers.email", schema="other"),), cols("customers.email", schema="other")))
    assert result_lineage("SELECT 1; SELECT email FROM customers", current_database="app").columns == (
        cols("customers.email"),)


def test_a_setting_that_changes_lexing_ends_tracing() -> None:
    found = statements_lineage("SET sql_mode = 'ANSI_QUOTES'; SELECT email FROM customers", current_database="app")
    assert found == (NO_RESULT, UNTRACEABLE)


def test_sql_mode_flags_change_how_the_text_is_read() -> None:
    sql = 'SELECT "email" FROM customers'
    assert result_lineage(sql, current_database="app").columns == (frozenset(),)  # a string
    assert result_lineage(sql, current_database="app", ansi_quotes=True).columns == (cols("customers.email"),)
    tricky = "SELECT 'x\\', email FROM customers -- '"
    assert result_lineage(tricky, current_database="app").columns == (frozenset(),)  # one string, no column
    assert result_lineage(tricky, current_database="app", no_backslash_escapes=True).columns == (
        frozenset(), cols("customers.email"))


def test_empty_message() -> None:
    assert statements_lineage("  ; -- nothing", current_database="app") == ()
    assert result_lineage("", current_database="app") == NO_RESULT


def test_view_definitions() -> None:
    view = view_lineage("select `app`.`customers`.`email` AS `email`,ucase(`app`.`customers`.`name`) AS `shout` "
                        "from `app`.`customers`", schema="app")
    assert view.column("EMAIL") == cols("customers.email")
    assert view.column("shout") == cols("customers.name")
    assert view.column("unknown") == cols("customers.email", "customers.name")
    assert view_lineage("select * from", schema="app").column("x") == frozenset({ANY_SOURCE})
    assert view_lineage("select f(x) AS y from t", schema="app").column("y") == frozenset({ANY_SOURCE})
    unqualified = view_lineage("select email AS m from customers", schema="shop")
    assert unqualified.column("m") == frozenset({col("customers", "email", "shop")})
