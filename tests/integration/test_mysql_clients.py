"""The MySQL listener with the Python clients users have: PyMySQL, aiomysql, SQLAlchemy 2 ORM.

Each test does its work through a real `dbguard serve` and, where it makes sense, the same work
directly against the MariaDB server, and compares: allowed work must behave exactly as direct
(results, row counts, server errors with their code and message), and a statement refused by
the policy gets ERR 1227 with the session (and an open transaction) surviving.

PyMySQL: parameters of every common type, executemany (its bulk INSERT rewrite), multi-statements
with nextset(), SSCursor streaming 100 000 rows (count and checksum), commit / rollback, a
refusal inside an open transaction (a later COMMIT commits the earlier work, as MySQL does for
any failed statement), IntegrityError 1062, ping(), select_db() (COM_INIT_DB), LOAD DATA LOCAL
INFILE, a server ERR after some rows and inside a multi-statement.
aiomysql: a pool shared by many tasks, pool close. SQLAlchemy: declarative models, DDL,
add / commit / query / update / delete, a relationship load, rollback on IntegrityError.
mysql-connector-python (binary protocol) is in test_mysql_clients_connector.py.
"""

from __future__ import annotations

import asyncio
import datetime
import decimal
import hashlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiomysql
import pymysql
import pymysql.connections
import pymysql.cursors
import pytest
import sqlalchemy as sa
from pymysql.constants import CLIENT
from sqlalchemy import orm

from dbguard.devdb.mariadb import ThrowawayMariaDB
from tests.integration.harness import ProxyProcess
from tests.integration.mysql_harness import WRITE_GUARD_RULES, connect, serve_in_front_of

pytestmark = pytest.mark.integration

TABLES = ("cl_items", "cl_tx", "cl_load_via", "cl_load_direct", "cl_async", "cl_addresses", "cl_users")
ROWS = 100_000


@pytest.fixture(scope="module")
def clients_proxy(mariadb_server: ThrowawayMariaDB) -> Iterator[ProxyProcess]:
    try:
        yield from serve_in_front_of(mariadb_server, WRITE_GUARD_RULES)
    finally:
        mariadb_server.run_sql(f"DROP TABLE IF EXISTS {', '.join(TABLES)}", "app")


def direct(server: ThrowawayMariaDB, **kwargs: Any) -> pymysql.connections.Connection[Any]:
    options = server.connect_kwargs()
    options.update(kwargs)
    return pymysql.connect(**options)


def via(proxy: ProxyProcess, **kwargs: Any) -> pymysql.connections.Connection[Any]:
    kwargs.setdefault("charset", "utf8mb4")
    kwargs.setdefault("autocommit", True)
    return connect(proxy, **kwargs)


def _refused(conn: pymysql.connections.Connection[Any], sql: str) -> str:
    """Run a statement the policy refuses; returns the error message (code 1227 checked)."""
    with conn.cursor() as cur, pytest.raises(pymysql.err.MySQLError) as info:
        cur.execute(sql)
    assert info.value.args[0] == 1227, info.value.args
    return str(info.value.args[1])


def _scalar(conn: pymysql.connections.Connection[Any], sql: str, args: Any = None) -> Any:
    with conn.cursor() as cur:
        cur.execute(sql, args)
        row = cur.fetchone()
        assert row is not None
        return row[0]


ITEM_COLUMNS = "id, name, price, qty, ratio, born, seen, note, data"


def _item(i: int) -> tuple[Any, ...]:
    return (i, f"item {i} 'quoted' \\ ünïcødé 🐬", decimal.Decimal(f"{i}.{i % 100:02d}"), -i * 1000,
            i / 7, datetime.date(2000 + i % 30, 1 + i % 12, 1 + i % 28),
            datetime.datetime(2024, 1 + i % 12, 1 + i % 28, i % 24, i % 60, i % 60, (i * 7919) % 1_000_000),
            None if i % 3 == 0 else f"note {i}", bytes(range(i % 256)) + b"\x00\xff")


def test_pymysql_parameters_and_executemany(clients_proxy: ProxyProcess, mariadb_server: ThrowawayMariaDB) -> None:
    conn = via(clients_proxy)
    with conn.cursor() as cur:
        cur.execute("CREATE TABLE cl_items (id INT PRIMARY KEY, name VARCHAR(200), price DECIMAL(12,2), "
                    "qty BIGINT, ratio DOUBLE, born DATE, seen DATETIME(6), note TEXT NULL, data BLOB) "
                    "CHARACTER SET utf8mb4")
        items = [_item(i) for i in range(1, 1001)]
        inserts = "SHOW SESSION STATUS LIKE 'Com_insert'"
        cur.execute(inserts)
        before = int(cur.fetchall()[0][1])
        # PyMySQL rewrites this into multi-row INSERTs (one COM_QUERY per ~1 MB).
        n = cur.executemany(f"INSERT INTO cl_items ({ITEM_COLUMNS}) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)",
                            items)
        assert n == 1000
        cur.execute(inserts)
        assert int(cur.fetchall()[0][1]) == before + 1  # one statement carried the 1000 rows
        cur.execute(f"SELECT {ITEM_COLUMNS} FROM cl_items WHERE id BETWEEN %s AND %s AND (note IS NULL OR note <> %s) "
                    "ORDER BY id", (10, 40, "note 11"))
        through = cur.fetchall()
        description = cur.description
    with direct(mariadb_server) as plain, plain.cursor() as cur:
        cur.execute(f"SELECT {ITEM_COLUMNS} FROM cl_items WHERE id BETWEEN %s AND %s AND (note IS NULL OR note <> %s) "
                    "ORDER BY id", (10, 40, "note 11"))
        assert cur.fetchall() == through
        assert cur.description == description
        cur.execute(f"SELECT {ITEM_COLUMNS} FROM cl_items ORDER BY id")
        stored = cur.fetchall()
    assert len(through) == 30
    assert [tuple(row) for row in stored] == [
        (*item[:4], pytest.approx(item[4]), *item[5:]) for item in items]
    # A statement the policy refuses, with parameters: 1227, the session goes on.
    assert _refused(conn, "DELETE FROM cl_items").startswith("dbguard: blocked by rule no-unbounded-writes")
    with conn.cursor() as cur:
        assert cur.execute("DELETE FROM cl_items WHERE id > %s", (900,)) == 100
    assert _scalar(conn, "SELECT COUNT(*) FROM cl_items") == 900
    conn.close()


def test_pymysql_multi_statements_and_nextset(clients_proxy: ProxyProcess, mariadb_server: ThrowawayMariaDB) -> None:
    sql = ("SELECT 1 AS a, 'x' AS b; DO 1; SELECT seq FROM seq_1_to_5; "
           "SET @v := 42; SELECT @v, NULL, 1.5; SELECT * FROM seq_1_to_3 WHERE seq > 10")

    def all_sets(conn: pymysql.connections.Connection[Any]) -> list[tuple[Any, ...]]:
        sets: list[tuple[Any, ...]] = []
        with conn.cursor() as cur:
            cur.execute(sql)
            while True:
                sets.append((cur.description, cur.rowcount, tuple(cur.fetchall())))
                if not cur.nextset():
                    break
            cur.execute("SELECT 'after'")
            sets.append((cur.description, cur.rowcount, tuple(cur.fetchall())))
        return sets

    conn = via(clients_proxy, client_flag=CLIENT.MULTI_STATEMENTS)
    through = all_sets(conn)
    with direct(mariadb_server, client_flag=CLIENT.MULTI_STATEMENTS) as plain:
        assert all_sets(plain) == through
    assert [s[2] for s in through] == [((1, "x"),), (), ((1,), (2,), (3,), (4,), (5,)), (),
                                       ((42, None, decimal.Decimal("1.5")),), (), (("after",),)]
    # A refused part refuses the whole text; the next multi-statement works.
    _refused(conn, "SELECT 1; DROP TABLE cl_items; SELECT 2")
    assert all_sets(conn) == through
    conn.close()


def _stream_digest(conn: pymysql.connections.Connection[Any]) -> tuple[int, str]:
    digest = hashlib.sha256()
    count = 0
    with conn.cursor(pymysql.cursors.SSCursor) as cur:
        cur.execute(f"SELECT seq, MD5(seq), REPEAT('x', seq % 97), IF(seq % 10 = 0, NULL, seq * 1.5) "
                    f"FROM seq_1_to_{ROWS}")
        for row in cur.fetchall_unbuffered():
            count += 1
            digest.update(repr(row).encode())
    return count, digest.hexdigest()


def test_pymysql_sscursor_streams_100k_rows(clients_proxy: ProxyProcess, mariadb_server: ThrowawayMariaDB) -> None:
    conn = via(clients_proxy)
    through = _stream_digest(conn)
    assert _scalar(conn, "SELECT 'still usable'") == "still usable"
    # A stream abandoned after a few rows: closing the cursor reads (and drops) the rest.
    with conn.cursor(pymysql.cursors.SSCursor) as cur:
        cur.execute(f"SELECT seq FROM seq_1_to_{ROWS}")
        assert [cur.fetchone() for _ in range(3)] == [(1,), (2,), (3,)]
    assert _scalar(conn, "SELECT COUNT(*) FROM seq_1_to_10") == 10
    conn.close()
    with direct(mariadb_server) as plain:
        assert _stream_digest(plain) == through
    assert through[0] == ROWS


def test_pymysql_transactions_errors_and_refusals(clients_proxy: ProxyProcess,
                                                  mariadb_server: ThrowawayMariaDB) -> None:
    conn = via(clients_proxy, autocommit=False)
    plain = direct(mariadb_server)
    with conn.cursor() as cur:
        cur.execute("CREATE TABLE cl_tx (id INT PRIMARY KEY, v VARCHAR(20)) ENGINE=InnoDB")
        cur.execute("INSERT INTO cl_tx VALUES (%s, %s)", (1, "rolled back"))
    conn.rollback()
    assert _scalar(plain, "SELECT COUNT(*) FROM cl_tx") == 0
    with conn.cursor() as cur:
        cur.execute("INSERT INTO cl_tx VALUES (%s, %s)", (1, "committed"))
    conn.commit()
    assert _scalar(plain, "SELECT v FROM cl_tx WHERE id = 1") == "committed"

    # Duplicate key: the server's own error, code and message as direct; the session goes on.
    with conn.cursor() as cur, pytest.raises(pymysql.err.IntegrityError) as through:
        cur.execute("INSERT INTO cl_tx VALUES (%s, %s)", (1, "again"))
    with plain.cursor() as cur, pytest.raises(pymysql.err.IntegrityError) as expected:
        cur.execute("INSERT INTO cl_tx VALUES (%s, %s)", (1, "again"))
    assert through.value.args == expected.value.args
    assert through.value.args[0] == 1062
    conn.rollback()

    # A refused statement inside an open transaction: the transaction stays open, and a later
    # COMMIT commits the work done before the refusal (as any failed statement in MySQL).
    with conn.cursor() as cur:
        cur.execute("INSERT INTO cl_tx VALUES (%s, %s)", (2, "before refusal"))
    assert _scalar(conn, "SELECT @@in_transaction") == 1
    _refused(conn, "DROP TABLE cl_tx")
    _refused(conn, "UPDATE cl_tx SET v = 'all'")
    assert _scalar(conn, "SELECT @@in_transaction") == 1
    assert _scalar(plain, "SELECT COUNT(*) FROM cl_tx WHERE id = 2") == 0  # not committed yet
    with conn.cursor() as cur:
        cur.execute("INSERT INTO cl_tx VALUES (%s, %s)", (3, "after refusal"))
    conn.commit()
    assert _scalar(plain, "SELECT GROUP_CONCAT(v ORDER BY id) FROM cl_tx") == "committed,before refusal,after refusal"

    # ping() and select_db() (COM_PING, COM_INIT_DB); the gate follows the database switch.
    conn.ping(reconnect=False)
    conn.select_db("information_schema")
    assert _scalar(conn, "SELECT DATABASE()") == "information_schema"
    assert _scalar(conn, "SELECT COUNT(*) FROM tables WHERE table_schema = 'app' AND table_name = 'cl_tx'") == 1
    _refused(conn, "DROP TABLE app.cl_tx")
    with pytest.raises(pymysql.err.OperationalError) as info:
        conn.select_db("no_such_db")
    assert info.value.args[0] in (1044, 1049)
    assert _scalar(conn, "SELECT DATABASE()") == "information_schema"
    conn.select_db("app")
    assert _scalar(conn, "SELECT COUNT(*) FROM cl_tx") == 3
    conn.ping(reconnect=False)
    conn.close()
    plain.close()


def test_pymysql_load_data_local_infile(clients_proxy: ProxyProcess, mariadb_server: ThrowawayMariaDB,
                                        tmp_path: Path) -> None:
    """The server asks for the file named by an allowed LOAD DATA LOCAL INFILE; PyMySQL sends
    it (several packets) through the proxy, and the result is what the same load does direct."""
    data = tmp_path / "rows.tsv"
    data.write_text("".join(f"{i}\tname {i} ünï\t{i * 1.25}\n" for i in range(1, 60_001)), encoding="utf-8")
    sql = (f"LOAD DATA LOCAL INFILE '{data}' INTO TABLE {{}} CHARACTER SET utf8mb4 "
           "FIELDS TERMINATED BY '\t' (id, name, price)")
    digest = "SELECT COUNT(*), SUM(id), MD5(GROUP_CONCAT(name, price ORDER BY id)) FROM {}"
    mariadb_server.run_sql("CREATE TABLE cl_load_via (id INT PRIMARY KEY, name VARCHAR(40), price DECIMAL(10,2)); "
                           "CREATE TABLE cl_load_direct LIKE cl_load_via", "app")
    conn = via(clients_proxy, local_infile=True)
    with conn.cursor() as cur:
        assert cur.execute(sql.format("cl_load_via")) == 60_000
        assert cur.execute("SELECT 'next'") == 1
    conn.close()
    with direct(mariadb_server, local_infile=True) as plain, plain.cursor() as cur:
        assert cur.execute(sql.format("cl_load_direct")) == 60_000
        cur.execute(digest.format("cl_load_via"))
        loaded = cur.fetchall()
        cur.execute(digest.format("cl_load_direct"))
        assert cur.fetchall() == loaded
    assert loaded[0][0] == 60_000


def test_pymysql_server_errors_mid_result(clients_proxy: ProxyProcess, mariadb_server: ThrowawayMariaDB) -> None:
    """An ERR after some rows (max_statement_time while streaming) and an ERR in the middle of
    a multi-statement end the response as they do direct; the session goes on."""

    def stream(cur: pymysql.cursors.SSCursor, seen: list[Any]) -> None:
        cur.execute("SET STATEMENT max_statement_time=0.2 FOR SELECT seq, SLEEP(0.01) FROM seq_1_to_1000")
        seen.extend(row[0] for row in cur.fetchall_unbuffered())

    def run(conn: pymysql.connections.Connection[Any]) -> list[Any]:
        seen: list[Any] = []
        with conn.cursor(pymysql.cursors.SSCursor) as cur:
            with pytest.raises(pymysql.err.OperationalError) as info:
                stream(cur, seen)
            seen.append(info.value.args)
        with conn.cursor() as cur:
            cur.execute("SELECT 1; SELECT * FROM cl_no_such_table; SELECT 2")
            seen.append(cur.fetchall())
            with pytest.raises(pymysql.err.ProgrammingError) as missing:
                cur.nextset()
            seen.append(missing.value.args)
            cur.execute("SELECT 'usable'")
            seen.append(cur.fetchall())
        return seen

    with via(clients_proxy, client_flag=CLIENT.MULTI_STATEMENTS) as conn:
        through = run(conn)
    with direct(mariadb_server, client_flag=CLIENT.MULTI_STATEMENTS) as plain:
        expected = run(plain)
    # Some rows came (how many depends on timing), then the interruption; the rest is equal.
    assert through[0] == 1
    assert through[-4][0] == 1969
    assert through[-4:] == expected[-4:]
    assert through[-3:] == [((1,),), (1146, "Table 'app.cl_no_such_table' doesn't exist"), (("usable",),)]


def test_aiomysql_pool_with_many_tasks(clients_proxy: ProxyProcess, mariadb_server: ThrowawayMariaDB) -> None:
    mariadb_server.run_sql("CREATE TABLE IF NOT EXISTS cl_async (id INT PRIMARY KEY, label VARCHAR(40)); "
                           "INSERT IGNORE INTO cl_async SELECT seq, CONCAT('label-', seq * seq) FROM seq_1_to_200",
                           "app")
    expected = dict(mariadb_server.run_sql("SELECT id, label FROM cl_async", "app"))

    async def scenario() -> tuple[list[tuple[int, str, int]], int]:
        pool = await aiomysql.create_pool(host=clients_proxy.host, port=clients_proxy.port, user="copilot",
                                          password="copilot-secret", db="app", minsize=2, maxsize=6,
                                          autocommit=True, charset="utf8mb4")
        assert pool.size == 2
        peak = 0

        async def task(i: int) -> tuple[int, str, int]:
            nonlocal peak
            async with pool.acquire() as conn, conn.cursor() as cur:
                peak = max(peak, pool.size)
                await cur.execute("SELECT id, label, CONNECTION_ID() FROM cl_async WHERE id = %s", (i % 200 + 1,))
                row = await cur.fetchone()
                await cur.execute("SELECT SLEEP(0.005)")
                await cur.fetchall()
                if i % 10 == 0:
                    with pytest.raises(pymysql.err.MySQLError) as info:
                        await cur.execute("TRUNCATE cl_async")
                    assert info.value.args[0] == 1227
                    await cur.execute("SELECT 1")
                    assert await cur.fetchone() == (1,)
                return (int(row[0]), str(row[1]), int(row[2]))

        results = await asyncio.gather(*(task(i) for i in range(120)))
        assert pool.maxsize == 6
        assert pool.size <= 6
        pool.close()
        await pool.wait_closed()
        assert pool.size == 0
        return list(results), peak

    results, peak = asyncio.run(asyncio.wait_for(scenario(), 30))
    assert [(i, label) for i, label, _ in results] == [(i % 200 + 1, expected[i % 200 + 1]) for i in range(120)]
    assert peak > 2  # the pool grew beyond minsize under load
    assert 2 < len({conn_id for _, _, conn_id in results}) <= 6


class Base(orm.DeclarativeBase):
    pass


class User(Base):
    __tablename__ = "cl_users"
    id: orm.Mapped[int] = orm.mapped_column(primary_key=True)
    email: orm.Mapped[str] = orm.mapped_column(sa.String(100), unique=True)
    name: orm.Mapped[str] = orm.mapped_column(sa.String(100))
    balance: orm.Mapped[decimal.Decimal] = orm.mapped_column(sa.Numeric(10, 2), default=decimal.Decimal(0))
    addresses: orm.Mapped[list[Address]] = orm.relationship(back_populates="user", cascade="all, delete-orphan",
                                                            order_by="Address.id")


class Address(Base):
    __tablename__ = "cl_addresses"
    id: orm.Mapped[int] = orm.mapped_column(primary_key=True)
    user_id: orm.Mapped[int] = orm.mapped_column(sa.ForeignKey("cl_users.id"))
    city: orm.Mapped[str] = orm.mapped_column(sa.String(100))
    user: orm.Mapped[User] = orm.relationship(back_populates="addresses")


def test_sqlalchemy_orm(clients_proxy: ProxyProcess, mariadb_server: ThrowawayMariaDB) -> None:
    url = f"mysql+pymysql://copilot:copilot-secret@{clients_proxy.host}:{clients_proxy.port}/app?charset=utf8mb4"
    engine = sa.create_engine(url, pool_size=2, pool_pre_ping=True)  # COM_PING
    Base.metadata.create_all(engine)  # DDL through the proxy (CREATE TABLE is allowed)
    with orm.Session(engine) as session:
        session.add_all([
            User(email="ada@example.com", name="Ada", balance=decimal.Decimal("10.50"),
                 addresses=[Address(city="London"), Address(city="Paris")]),
            User(email="bob@example.com", name="Bob", addresses=[Address(city="Zürich")]),
            User(email="cy@example.com", name="Cy"),
        ])
        session.commit()

        users = session.scalars(sa.select(User).options(orm.selectinload(User.addresses)).order_by(User.id)).all()
        assert [(u.name, [a.city for a in u.addresses]) for u in users] == [
            ("Ada", ["London", "Paris"]), ("Bob", ["Zürich"]), ("Cy", [])]
        bob = session.scalars(sa.select(User).where(User.email == "bob@example.com")).one()
        bob.balance += decimal.Decimal("2.25")  # UPDATE ... WHERE id = %s
        session.execute(sa.update(User).where(User.name == "Cy").values(name="Cyrus"))
        session.commit()
        address = session.scalars(sa.select(Address).where(Address.city == "Paris")).one()
        assert address.user.name == "Ada"  # a lazy many-to-one load

        # A duplicate unique key: IntegrityError, rollback, the session is usable again.
        session.add(User(email="ada@example.com", name="Ada again"))
        with pytest.raises(sa.exc.IntegrityError) as info:
            session.commit()
        assert info.value.orig is not None
        assert info.value.orig.args[0] == 1062
        session.rollback()

        # Refused by policy: an unbounded delete. The session rolls back and goes on.
        with pytest.raises(sa.exc.OperationalError) as refused:
            session.execute(sa.delete(Address))
        assert refused.value.orig is not None
        assert refused.value.orig.args[0] == 1227
        session.rollback()

        ada = session.scalars(sa.select(User).where(User.name == "Ada")).one()
        session.delete(ada)  # deletes her addresses first (cascade), by primary key
        session.commit()
        names = session.scalars(sa.select(User.name).order_by(User.id)).all()
    engine.dispose()
    assert names == ["Bob", "Cyrus"]
    assert mariadb_server.run_sql(
        "SELECT u.name, u.balance, GROUP_CONCAT(a.city) FROM cl_users u LEFT JOIN cl_addresses a "
        "ON a.user_id = u.id GROUP BY u.id ORDER BY u.id", "app") == [
            ("Bob", decimal.Decimal("2.25"), "Zürich"), ("Cyrus", decimal.Decimal("0.00"), None)]
