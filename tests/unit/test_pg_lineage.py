"""Column lineage of PostgreSQL results (`dbguard.sql.pg_lineage`), pure: no database.

Covers: expressions (functions, operators, casts, CASE, COALESCE, aggregates, subscripts, row
constructors, scalar / ARRAY sub-queries; EXISTS, WHERE, ORDER BY and count(*) contribute
nothing); column resolution (aliases, schemas, unqualified names over every table in scope,
correlated sub-queries, whole-row references, composite fields); derived relations (sub-queries,
LATERAL, CTEs with and without RECURSIVE, data-modifying CTEs, VALUES, JOIN USING and aliased
joins, functions in FROM, column alias lists); `*`; set operations; DML RETURNING; user
functions and operators (ANY_SOURCE); statements without rows, SHOW, EXPLAIN, DECLARE, EXECUTE,
FETCH; parse errors, deep nesting, costly texts and the cache.
"""

from __future__ import annotations

import pytest

from dbguard.model import ANY_SOURCE, UNTRACEABLE, ResultLineage, SourceColumn
from dbguard.sql import MAX_ANALYSED_CHARS, pg_lineage
from dbguard.sql.pg_lineage import result_lineage, statements_lineage


def src(*names: str) -> frozenset[SourceColumn]:
    """Sources written as "table.column" or "schema.table.column"; "ANY" is ANY_SOURCE."""
    found: set[SourceColumn] = set()
    for name in names:
        if name == "ANY":
            found.add(ANY_SOURCE)
            continue
        parts = name.split(".")
        schema = parts[0] if len(parts) == 3 else None
        found.add(SourceColumn(schema, parts[-2], parts[-1]))
    return frozenset(found)


def columns(sql: str) -> tuple[frozenset[SourceColumn], ...] | None:
    return result_lineage(sql).columns


# (sql, expected columns): each output column's sources, as src() names.
EXPRESSIONS: list[tuple[str, list[list[str]]]] = [
    ("SELECT upper(email) FROM users", [["users.email"]]),
    ("SELECT u.id, substr(u.ssn, 1, 3) || 'x' AS s FROM public.users u", [["public.users.id"], ["public.users.ssn"]]),
    ("SELECT count(*) FROM users WHERE email = 'x'", [[]]),
    ("SELECT 1, 'a', now(), $1", [[], [], [], []]),
    ("SELECT email::text, CAST(ssn AS varchar(4)) FROM users", [["users.email"], ["users.ssn"]]),
    ("SELECT CASE WHEN age > 18 THEN email ELSE phone END FROM users", [["users.age", "users.email", "users.phone"]]),
    ("SELECT coalesce(nick, name, 'n/a') FROM users", [["users.nick", "users.name"]]),
    ("SELECT string_agg(email, ',' ORDER BY id), json_agg(ssn) FROM users", [["users.email"], ["users.ssn"]]),
    ("SELECT array_agg(email) FILTER (WHERE flag) FROM users", [["users.email"]]),
    ("SELECT mode() WITHIN GROUP (ORDER BY ssn) FROM users", [["users.ssn"]]),
    ("SELECT lag(email) OVER (PARTITION BY dept ORDER BY id) FROM users", [["users.email"]]),
    ("SELECT row_number() OVER (ORDER BY ssn) FROM users", [[]]),
    ("SELECT tags[1], (addr).city, ROW(a, b) FROM users", [["users.tags"], ["users.addr"], ["users.a", "users.b"]]),
    ("SELECT encode(sha256(ssn::bytea), 'hex'), md5(email) FROM users", [["users.ssn"], ["users.email"]]),
    ("SELECT concat(fn, ' ', ln), extract(year FROM born) FROM users", [["users.fn", "users.ln"], ["users.born"]]),
    ("SELECT email LIKE '%x' FROM users ORDER BY ssn", [["users.email"]]),
    ("SELECT EXISTS (SELECT ssn FROM users), 1 IN (SELECT id FROM users)", [[], []]),
    ("SELECT (SELECT email FROM users LIMIT 1)", [["users.email"]]),
    ("SELECT ARRAY(SELECT ssn FROM users)", [["users.ssn"]]),
    ("SELECT JSON_ARRAY(SELECT email FROM users)", [["users.email"]]),
    ("SELECT jsonb_build_object('e', email, 'n', name) FROM users", [["users.email", "users.name"]]),
]


@pytest.mark.parametrize(("sql", "expected"), EXPRESSIONS)
def test_expressions(sql: str, expected: list[list[str]]) -> None:
    assert columns(sql) == tuple(src(*names) for names in expected)


def test_sources_are_the_union_of_the_columns() -> None:
    assert result_lineage("SELECT upper(email), ssn FROM users") == ResultLineage(
        (src("users.email"), src("users.ssn")), src("users.email", "users.ssn")
    )


RESOLUTION: list[tuple[str, list[list[str]]]] = [
    # An unqualified name may be a column of any table in scope: all of them.
    ("SELECT name FROM customers c JOIN orders o ON o.cid = c.id", [["customers.name", "orders.name"]]),
    ("SELECT o.total, c.email FROM customers AS c, orders o", [["orders.total"], ["customers.email"]]),
    # A table is referenced by its name when it has no alias, also schema-qualified.
    ("SELECT users.email, public.users.ssn FROM public.users", [["public.users.email"], ["public.users.ssn"]]),
    # Correlated: the inner table may lack the column, then the outer one has it.
    (
        "SELECT (SELECT max(total) FROM orders o WHERE o.cid = c.id) FROM customers c",
        [["orders.total", "customers.total"]],
    ),
    ("SELECT (SELECT c.email FROM orders o LIMIT 1) FROM customers c", [["customers.email"]]),
    # A sub-query's known outputs settle a name: no need to look further out.
    ("SELECT (SELECT e FROM (SELECT 1 AS e) s) FROM customers", [[]]),
    # Whole-row references.
    ("SELECT row_to_json(c) FROM customers c", [["customers.*", "customers.c"]]),
    ("SELECT to_jsonb(c.*), c::text FROM customers c", [["customers.*"], ["customers.*", "customers.c"]]),
    ("SELECT row_to_json(s) FROM (SELECT email, ssn FROM users) s", [["users.email", "users.ssn"]]),
    ("SELECT count(u.*) FROM users u", [["users.*"]]),
    # Composite field access written like a qualified name.
    ("SELECT addr.city FROM users", [["users.addr"]]),
    # A table column alias list: positions are unknown without the catalog.
    ("SELECT a, x FROM users AS u(a, b)", [["users.*"], ["users.x"]]),
    # A name nothing in scope has: cannot be traced.
    ("SELECT nothere", [["ANY"]]),
    ("SELECT nope.x FROM (SELECT 1 AS a) s", [["ANY"]]),
]


@pytest.mark.parametrize(("sql", "expected"), RESOLUTION)
def test_resolution(sql: str, expected: list[list[str]]) -> None:
    assert columns(sql) == tuple(src(*names) for names in expected)


DERIVED: list[tuple[str, list[list[str]]]] = [
    ("SELECT s.x FROM (SELECT upper(email) AS x, ssn FROM users) s", [["users.email"]]),
    ("SELECT email FROM (SELECT email FROM users) s", [["users.email"]]),
    ("SELECT lower FROM (SELECT lower(email) FROM users) s", [["users.email"]]),
    ("SELECT s.b FROM (SELECT email, ssn FROM users) AS s(a, b)", [["users.ssn"]]),
    ("SELECT s.city, s.tags FROM (SELECT (addr).city[1], tags[2] FROM users) s", [["users.addr"], ["users.tags"]]),
    # A name not worked out (an expression without alias) may be the one referenced.
    ("SELECT s.z FROM (SELECT 1 AS a, email || '' FROM users) s", [["users.email"]]),
    # `*` in a derived relation: outputs unknown, any reference carries them all.
    ("SELECT s.email FROM (SELECT * FROM users) s", [["users.*"]]),
    ("SELECT x.v FROM users u, LATERAL (SELECT u.ssn AS v) x", [["users.ssn"]]),
    ("SELECT v FROM users u CROSS JOIN LATERAL (SELECT upper(u.email) AS v) x", [["users.v", "users.email"]]),
    ("WITH a AS (SELECT ssn FROM users), b AS (SELECT ssn AS s FROM a) SELECT s FROM b", [["users.ssn"]]),
    ("WITH a(x) AS (SELECT email FROM users) SELECT upper(x) FROM a", [["users.email"]]),
    # A CTE shadows a table of the same name; inside its body the name is the table.
    ("WITH users AS (SELECT ssn AS email FROM users) SELECT email FROM users", [["users.ssn"]]),
    (
        "WITH RECURSIVE r(n, e) AS (SELECT 1, email FROM users UNION ALL SELECT n + 1, upper(e) FROM r) "
        "SELECT n, e FROM r",
        [[], ["users.email"]],
    ),
    (
        "WITH RECURSIVE t(a, b) AS (SELECT ssn, 1 FROM users UNION ALL SELECT b::text, a::int FROM t) SELECT b FROM t",
        [["users.ssn"]],
    ),
    ("WITH d AS (DELETE FROM users WHERE id = 1 RETURNING ssn) SELECT ssn FROM d", [["users.ssn"]]),
    ("SELECT v.column2 FROM (VALUES (1, 'a'), (2, 'b')) v", [[]]),
    ("SELECT s.b FROM (VALUES (1, 'a')) AS s(a, b), users", [[]]),
    ("SELECT id FROM a JOIN b USING (id)", [["a.id", "b.id"]]),
    ("SELECT id FROM a NATURAL JOIN b", [["a.id", "b.id"]]),
    ("SELECT j.id FROM a JOIN b USING (id) AS j", [["a.id", "b.id"]]),
    ("SELECT j.x FROM (a JOIN b ON a.id = b.id) AS j", [["a.*", "b.*"]]),
    ("SELECT t FROM users u, unnest(u.tags) AS t", [["users.t", "users.tags"]]),
    ("SELECT g FROM generate_series(1, 10) g", [[]]),
    ("SELECT x.v FROM users u, unnest(u.tags) WITH ORDINALITY AS x(v, n)", [["users.tags"]]),
    ("SELECT f.a FROM users u, my_func(u.id) f", [["users.id", "ANY"]]),
    ("SELECT jt.a FROM docs, JSON_TABLE(docs.body, '$' COLUMNS (a text PATH '$.a')) jt", [["docs.body"]]),
    ("SELECT x FROM docs, XMLTABLE('/r' PASSING docs.xml COLUMNS x text PATH 'x') t", [["docs.x", "docs.xml"]]),
    ("SELECT email FROM users TABLESAMPLE SYSTEM (10)", [["users.email"]]),
]


@pytest.mark.parametrize(("sql", "expected"), DERIVED)
def test_derived_relations(sql: str, expected: list[list[str]]) -> None:
    assert columns(sql) == tuple(src(*names) for names in expected)


def test_star_over_a_table_makes_positions_unknown() -> None:
    assert result_lineage("SELECT * FROM users") == ResultLineage(None, src("users.*"))
    assert result_lineage("TABLE users") == ResultLineage(None, src("users.*"))
    assert result_lineage("SELECT u.*, upper(o.note) FROM users u, orders o") == ResultLineage(
        None, src("users.*", "orders.note")
    )
    assert result_lineage("SELECT s.* FROM (SELECT ssn FROM users) s") == ResultLineage(None, src("users.ssn"))
    assert result_lineage("SELECT (c).* FROM customers c") == ResultLineage(None, src("customers.*", "customers.c"))


def test_set_operations_are_unioned_by_position() -> None:
    sql = "SELECT email, 1 FROM users UNION SELECT note, ssn FROM orders INTERSECT SELECT 'a', 2"
    assert columns(sql) == (src("users.email", "orders.note"), src("orders.ssn"))
    assert result_lineage("SELECT email FROM users UNION ALL SELECT * FROM orders") == ResultLineage(
        None, src("users.email", "orders.*")
    )


def test_user_functions_and_operators_carry_any_source() -> None:
    assert columns("SELECT my_mask(email) FROM users") == (src("users.email", "ANY"),)
    assert columns("SELECT upper(app.f(1)) FROM users") == (src("ANY"),)
    assert columns('SELECT "Lower"(email) FROM users') == (src("users.email", "ANY"),)
    assert columns("SELECT pg_catalog.lower(email) FROM users") == (src("users.email"),)
    assert columns("SELECT a <+> b FROM t") == (src("t.a", "t.b", "ANY"),)
    assert columns("SELECT a OPERATOR(pg_catalog.+) b FROM t") == (src("t.a", "t.b"),)
    # Built-ins whose result does not come from their arguments.
    assert columns("SELECT query_to_xml('select ssn from users', true, true, '')") == (src("ANY"),)
    assert columns("SELECT pg_read_file('/etc/passwd')") == (src("ANY"),)
    assert columns("SELECT dblink('db', 'select 1')") == (src("ANY"),)
    # Only what reaches the output: a user function in WHERE does not count.
    assert columns("SELECT id FROM users WHERE my_check(ssn)") == (src("users.id"),)
    # Through a derived relation.
    assert columns("SELECT s.v FROM (SELECT f(1) AS v) s") == (src("ANY"),)


def test_returning() -> None:
    assert columns("DELETE FROM users WHERE id = 1 RETURNING email, upper(u2.ssn)") == (
        src("users.email"),
        src("users.u2"),  # u2 is no relation: a composite column of users
    )
    assert columns("DELETE FROM users u USING orders o WHERE o.uid = u.id RETURNING u.ssn, o.note") == (
        src("users.ssn"),
        src("orders.note"),
    )
    # What INSERT / UPDATE write shows in RETURNING: the written values' sources count.
    assert columns("INSERT INTO t (a) SELECT ssn FROM users RETURNING a") == (src("t.a", "users.ssn"),)
    assert columns("INSERT INTO t VALUES (1, 'x') RETURNING id") == (src("t.id"),)
    update = "UPDATE users SET email = lower(p.e) FROM p WHERE p.id = users.id RETURNING old.email, new.email"
    assert columns(update) == (
        src("users.email", "p.e"),
        src("users.email", "p.e"),
    )
    assert columns(
        "INSERT INTO t AS x (a) VALUES (1) ON CONFLICT (a) DO UPDATE SET b = excluded.b || s RETURNING x.b"
    ) == (src("t.b", "t.s"),)
    assert columns(
        "MERGE INTO t USING s ON t.id = s.id WHEN MATCHED THEN UPDATE SET a = s.secret "
        "WHEN NOT MATCHED THEN INSERT (id, a) VALUES (s.id, s.b) RETURNING merge_action(), t.a, s.c"
    ) == (frozenset(), src("t.a", "s.secret", "s.id", "s.b"), src("s.c"))
    assert result_lineage("UPDATE users SET a = 1 RETURNING *") == ResultLineage(None, src("users.*"))
    assert result_lineage("INSERT INTO t VALUES (1)") == ResultLineage((), frozenset())
    assert result_lineage("UPDATE t SET a = b") == ResultLineage((), frozenset())


def test_statements_without_data_rows() -> None:
    no_rows = ResultLineage((), frozenset())
    for sql in (
        "SET search_path = x",
        "BEGIN",
        "COMMIT",
        "CREATE TABLE t (a int)",
        "ALTER TABLE t ADD COLUMN b int",
        "DROP TABLE t",
        "CREATE TABLE t2 AS SELECT ssn FROM users",
        "SELECT ssn INTO t3 FROM users",
        "TRUNCATE t",
        "PREPARE p AS SELECT ssn FROM users",
        "DO $$ BEGIN NULL; END $$",
        "COPY t FROM STDIN",
        "VACUUM t",
    ):
        assert result_lineage(sql) == no_rows, sql
    assert result_lineage("") == no_rows
    assert statements_lineage("  ;  ") == ()


def test_show_explain_and_cursors() -> None:
    one_text = ResultLineage((frozenset(),), frozenset())
    assert result_lineage("SHOW search_path") == one_text
    assert result_lineage("SHOW ALL").columns == (frozenset(),) * 3
    assert result_lineage("EXPLAIN SELECT ssn FROM users") == one_text
    assert result_lineage("EXPLAIN (ANALYZE, FORMAT JSON) SELECT ssn FROM users") == one_text
    assert columns("DECLARE c CURSOR FOR SELECT upper(ssn) FROM users") == (src("users.ssn"),)
    for sql in ("EXECUTE p(1)", "FETCH 10 FROM c", "MOVE NEXT IN c", "CALL proc(1)"):
        assert result_lineage(sql) == UNTRACEABLE, sql


def test_copy_to_copies_a_query_or_a_table() -> None:
    assert result_lineage("COPY users TO STDOUT") == ResultLineage(None, src("users.*"))
    assert columns("COPY public.users (id, ssn) TO STDOUT") == (src("public.users.id"), src("public.users.ssn"))
    assert columns("COPY (SELECT upper(ssn) FROM users) TO STDOUT WITH (FORMAT csv)") == (src("users.ssn"),)
    assert result_lineage("COPY users FROM STDIN") == ResultLineage((), frozenset())


def test_several_statements() -> None:
    lineages = statements_lineage("SELECT 1; SELECT email FROM users; SET x = 1; SELECT * FROM t")
    assert lineages == (
        ResultLineage((frozenset(),), frozenset()),
        ResultLineage((src("users.email"),), src("users.email")),
        ResultLineage((), frozenset()),
        ResultLineage(None, src("t.*")),
    )
    assert result_lineage("SELECT ssn FROM users; SELECT upper(name) FROM t") == ResultLineage(
        (src("t.name"),), src("t.name")
    )
    # A statement it does not trace does not spoil the others.
    assert statements_lineage("SELECT a FROM t; FETCH 1 FROM c") == (
        ResultLineage((src("t.a"),), src("t.a")),
        UNTRACEABLE,
    )


def test_standard_conforming_strings_off() -> None:
    sql = "SELECT 'it\\'s', upper(email) FROM users"
    assert result_lineage(sql) == UNTRACEABLE  # with scs on the quote ends the string
    off = result_lineage(sql, standard_conforming_strings=False)
    assert off.columns == (frozenset(), src("users.email"))


@pytest.mark.parametrize(
    "sql",
    [
        "SELEC email FROM users",
        "SELECT (",
        "SELECT 'unterminated",
        "SELECT 1\x00",
        "SELECT " + "upper(" * 3000 + "email" + ")" * 3000 + " FROM users",
        "SELECT " + "(SELECT " * 500 + "email" + ")" * 500 + " FROM users",
        "SELECT email" + " || email" * 20000 + " FROM users",
        "SELECT 1 FROM t WHERE a = 1 " + "x" * (MAX_ANALYSED_CHARS + 1),
    ],
)
def test_unreadable_or_too_deep_is_untraceable(sql: str) -> None:
    assert result_lineage(sql) == UNTRACEABLE
    assert statements_lineage(sql) == (UNTRACEABLE,)


def test_nested_parentheses_do_not_crash() -> None:
    sql = "SELECT " + "(" * 5000 + "email" + ")" * 5000 + " FROM users"
    lineage = result_lineage(sql)
    assert lineage == UNTRACEABLE or lineage.columns == (src("users.email"),)


def test_costly_text_is_untraceable() -> None:
    # Nested WITH RECURSIVE re-analyse their bodies round after round: bounded by a budget.
    sql = "SELECT 1"
    for depth in range(30):
        body = f"SELECT 1 UNION ALL SELECT n FROM r{depth}, ({sql}) q"
        sql = f"WITH RECURSIVE r{depth}(n) AS ({body}) SELECT n FROM r{depth}"
    assert result_lineage(sql) == UNTRACEABLE
    # Many names resolved against many relations.
    tables = ", ".join(f"t{index}" for index in range(400))
    names = ", ".join(f"c{index}" for index in range(400))
    assert result_lineage(f"SELECT {names} FROM {tables}") == UNTRACEABLE


def test_answers_are_cached_and_the_cache_is_bounded() -> None:
    pg_lineage._cache.clear()
    first = statements_lineage("SELECT email FROM users")
    assert statements_lineage("SELECT email FROM users") is first
    assert ("SELECT email FROM users", True) in pg_lineage._cache
    assert ("SELECT email FROM users", False) not in pg_lineage._cache
    for index in range(pg_lineage._CACHE_ENTRIES + 10):
        statements_lineage(f"SELECT c{index} FROM t")
    assert len(pg_lineage._cache) <= pg_lineage._CACHE_ENTRIES
