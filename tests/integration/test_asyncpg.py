"""asyncpg through the proxy, compared with the same work done directly on the server.

Covers prepared statements and executemany, binary codecs of many types (parameters and
results), COPY in both directions (copy_records_to_table, copy_from_query / copy_from_table),
cursors inside a transaction, a client-side timeout that must really cancel the server-side
query, and a pool of 10 connections running 300 concurrent queries.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import io
import ipaddress
import time
import uuid
from collections.abc import Awaitable, Callable
from decimal import Decimal
from typing import Any

import asyncpg
import pytest
from asyncpg.types import BitString, Point, Range

from dbguard.devdb.postgres import ThrowawayPostgres
from tests.integration.harness import ProxyProcess

UTC = dt.UTC
Scenario = Callable[[asyncpg.Connection], Awaitable[Any]]

# (value, SQL type): sent as a parameter and expected back unchanged, in binary both ways.
TYPED_VALUES: tuple[tuple[object, str], ...] = (
    (uuid.UUID("a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"), "uuid"),
    (Decimal("-98765432109876543210.0123456789"), "numeric"),
    (Decimal("0.00000000000000000001"), "numeric"),
    (Decimal("123.40"), "numeric(10,2)"),
    (dt.timedelta(days=-3, hours=5, microseconds=7), "interval"),
    ('{"a": [1, 2, {"b": null}], "z": "ü🐘"}', "jsonb"),
    ("[1, 2, 3]", "json"),
    ([1, None, 3], "int4[]"),
    ([["a", "b'c"], ["d\"e", None]], "text[]"),
    ([Decimal("1.5"), Decimal("-2")], "numeric[]"),
    (ipaddress.IPv4Address("192.0.2.1"), "inet"),
    (ipaddress.IPv6Interface("2001:db8::1/64"), "inet"),
    (ipaddress.IPv4Network("10.0.0.0/8"), "cidr"),
    (b"\x00\x01\xfe\xff'\\", "bytea"),
    (dt.datetime(2024, 2, 29, 23, 59, 59, 999999), "timestamp"),
    (dt.datetime(1969, 7, 20, 20, 17, 40, tzinfo=UTC), "timestamptz"),
    (dt.date(2000, 1, 1), "date"),
    (dt.time(23, 59, 59, 1), "time"),
    (True, "bool"),
    (-32768, "int2"),
    (2**31 - 1, "int4"),
    (-(2**63), "int8"),
    (1.0e300, "float8"),
    ("unicode ✓ żółw 漢字 'q' \"dq\" \\", "text"),
    ("", "varchar(5)"),
    (Point(1.5, -2.5), "point"),
    (Range(1, 10), "int4range"),
    (BitString.from_int(22, length=5), "varbit"),
    (None, "int4"),
)


@pytest.fixture
def both(proxy: ProxyProcess, pg_server: ThrowawayPostgres) -> dict[str, str]:
    return {"proxy": proxy.dsn("copilot"), "direct": pg_server.dsn()}


def must(row: asyncpg.Record | None) -> asyncpg.Record:
    assert row is not None
    return row


def run_both(both: dict[str, str], scenario: Scenario) -> tuple[Any, Any]:
    """Run a scenario on a connection through the proxy and on one made directly."""

    async def main() -> tuple[Any, Any]:
        results = {}
        for where, dsn in both.items():
            conn = await asyncpg.connect(dsn)
            try:
                results[where] = await scenario(conn)
            finally:
                await conn.close()
        return results["proxy"], results["direct"]

    return asyncio.run(main())


def test_prepared_statements(both: dict[str, str]) -> None:
    async def scenario(conn: asyncpg.Connection) -> Any:
        stmt = await conn.prepare(
            "SELECT $1::int + $2::int AS total, upper($3::text) AS label /* asyncpg-prep */")
        rows = [tuple(must(await stmt.fetchrow(i, i * 10, f"l{i}"))) for i in range(25)]
        params = [t.name for t in stmt.get_parameters()]
        attributes = [(a.name, a.type.name) for a in stmt.get_attributes()]
        server_side = await conn.fetchval(
            "SELECT count(*) FROM pg_prepared_statements WHERE statement LIKE '%asyncpg-prep%'")
        # The statement cache: the same text many times with fetchval.
        cached = [await conn.fetchval("SELECT $1::int * $1::int", i) for i in range(20)]
        await conn.execute("CREATE TEMP TABLE prep (id int PRIMARY KEY, name text)")
        await conn.executemany("INSERT INTO prep VALUES ($1, $2)",
                               [(i, f"name {i}") for i in range(300)])
        summary = tuple(must(await conn.fetchrow("SELECT count(*), sum(id), max(name) FROM prep")))
        return rows, params, attributes, server_side, cached, summary

    through_proxy, direct = run_both(both, scenario)
    rows, params, attributes, server_side, cached, summary = through_proxy
    assert rows == [(i * 11, f"L{i}") for i in range(25)]
    assert params == ["int4", "int4", "text"]
    assert attributes == [("total", "int4"), ("label", "text")]
    assert server_side >= 1  # really prepared on the server
    assert cached == [i * i for i in range(20)]
    assert summary == (300, sum(range(300)), "name 99")
    assert through_proxy == direct


def test_binary_codecs_of_many_types(both: dict[str, str]) -> None:
    query = "SELECT " + ", ".join(f"${n}::{t}" for n, (_, t) in enumerate(TYPED_VALUES, 1))

    async def scenario(conn: asyncpg.Connection) -> Any:
        row = await conn.fetchrow(query, *(value for value, _ in TYPED_VALUES))
        return list(must(row))

    through_proxy, direct = run_both(both, scenario)
    expected = [value for value, _ in TYPED_VALUES]
    expected[5] = '{"a": [1, 2, {"b": null}], "z": "ü🐘"}'  # jsonb normalises its text
    assert through_proxy == expected
    assert through_proxy == direct


def test_composite_and_record_types(both: dict[str, str]) -> None:
    async def scenario(conn: asyncpg.Connection) -> Any:
        await conn.execute("CREATE TYPE pg_temp.pair AS (n int, label text, at timestamptz)")
        at = dt.datetime(2021, 5, 6, 7, 8, 9, tzinfo=UTC)
        pair = await conn.fetchval("SELECT $1::pg_temp.pair", (7, "seven", at))
        pairs = await conn.fetchval(
            "SELECT ARRAY[ROW(1, 'one', now())::pg_temp.pair, NULL, ROW(2, NULL, NULL)]"
            "::pg_temp.pair[]")
        record = await conn.fetchval("SELECT ROW(1, 'x'::text, 1.5::float8, NULL::int)")
        rows = await conn.fetch(
            "SELECT c AS customer, (SELECT count(*) FROM orders o WHERE o.customer_id = c.id) "
            "FROM customers c ORDER BY c.id LIMIT 3")
        return (tuple(pair), [None if p is None else (p["n"], p["label"]) for p in pairs],
                tuple(record), [(r["customer"]["email"], r["count"]) for r in rows])

    through_proxy, direct = run_both(both, scenario)
    assert through_proxy[0] == (7, "seven", dt.datetime(2021, 5, 6, 7, 8, 9, tzinfo=UTC))
    assert through_proxy[1] == [(1, "one"), None, (2, None)]
    assert through_proxy[2] == (1, "x", 1.5, None)
    assert len(through_proxy[3]) == 3
    assert through_proxy == direct


def test_shop_rows_match(both: dict[str, str]) -> None:
    async def scenario(conn: asyncpg.Connection) -> Any:
        return [tuple(r) for r in await conn.fetch(
            "SELECT o.*, c.full_name, c.birth_date, p.amount, p.paid_at FROM orders o "
            "JOIN customers c ON c.id = o.customer_id LEFT JOIN payments p ON p.order_id = o.id "
            "ORDER BY o.id, p.id")]

    through_proxy, direct = run_both(both, scenario)
    assert len(through_proxy) >= 200
    assert through_proxy == direct


def test_copy_in_and_out(both: dict[str, str]) -> None:
    records = [
        (i, f"row {i}\t'q' \"dq\" \\ ünï\n" if i % 5 else None, Decimal(i) / 8,
         dt.datetime(2022, 1, 1, tzinfo=UTC) + dt.timedelta(seconds=i), [i, -i],
         uuid.UUID(int=i))
        for i in range(1, 5001)
    ]

    async def scenario(conn: asyncpg.Connection) -> Any:
        await conn.execute("CREATE TEMP TABLE recs (id int PRIMARY KEY, body text, v numeric, "
                           "at timestamptz, pair int[], u uuid)")
        status = await conn.copy_records_to_table(
            "recs", records=records, columns=["id", "body", "v", "at", "pair", "u"])
        csv_out = io.BytesIO()
        await conn.copy_from_query("SELECT * FROM recs WHERE id % $1 = 0 ORDER BY id", 3,
                                   output=csv_out, format="csv", header=True)
        text_out = io.BytesIO()
        await conn.copy_from_table("recs", output=text_out)
        back = [tuple(r) for r in await conn.fetch("SELECT * FROM recs ORDER BY id")]
        return status, csv_out.getvalue(), text_out.getvalue(), back

    through_proxy, direct = run_both(both, scenario)
    status, csv_out, text_out, back = through_proxy
    assert status == "COPY 5000"
    assert back == records
    assert csv_out.count(b"\n") >= 1 + 5000 // 3
    assert csv_out.startswith(b"id,body,v,at,pair,u\n")
    assert text_out.count(b"\n") == 5000
    assert through_proxy == direct


def test_cursors_inside_a_transaction(both: dict[str, str]) -> None:
    async def scenario(conn: asyncpg.Connection) -> Any:
        async with conn.transaction():
            iterated = [r["g"] async for r in conn.cursor(
                "SELECT g FROM generate_series(1, 1000) g", prefetch=64)]
            cur = await conn.cursor("SELECT id, email FROM customers WHERE id > $1 ORDER BY id",
                                    5)
            first = [tuple(r) for r in await cur.fetch(10)]
            skipped = await cur.forward(20)
            after = tuple(must(await cur.fetchrow()))
            cursors = await conn.fetchval("SELECT count(*) FROM pg_cursors")
        return iterated, first, skipped, after, cursors

    through_proxy, direct = run_both(both, scenario)
    iterated, first, skipped, after, cursors = through_proxy
    assert iterated == list(range(1, 1001))
    assert [r[0] for r in first] == list(range(6, 16))
    assert skipped == 20
    assert after[0] == 36
    assert cursors >= 1
    assert through_proxy == direct


def test_timeout_cancels_the_server_query(proxy: ProxyProcess,
                                         pg_server: ThrowawayPostgres) -> None:
    marker = f"asyncpg_timeout_{uuid.uuid4().hex[:8]}"

    async def main() -> None:
        conn = await asyncpg.connect(proxy.dsn("copilot"))
        superuser = await asyncpg.connect(pg_server.superuser_dsn())
        try:
            started = time.monotonic()
            with pytest.raises(TimeoutError):
                await conn.fetch(f"SELECT pg_sleep(5) /* {marker} */", timeout=0.5)
            assert time.monotonic() - started < 1.5
            still_running = -1
            deadline = time.monotonic() + 2.0
            while time.monotonic() < deadline:
                still_running = await superuser.fetchval(
                    "SELECT count(*) FROM pg_stat_activity WHERE state = 'active' "
                    "AND query LIKE $1 AND pid <> pg_backend_pid()", f"%{marker}%")
                if still_running == 0:
                    break
                await asyncio.sleep(0.1)
            assert still_running == 0, "pg_sleep(5) still runs on the server after the timeout"
            assert await conn.fetchval("SELECT 'usable'") == "usable"
        finally:
            await conn.close()
            await superuser.close()

    asyncio.run(main())


def test_listeners_and_server_pid(proxy: ProxyProcess) -> None:
    channel = f"apg_{uuid.uuid4().hex[:8]}"

    async def main() -> None:
        listener = await asyncpg.connect(proxy.dsn("copilot"))
        notifier = await asyncpg.connect(proxy.dsn("alice"))
        try:
            received: asyncio.Queue[tuple[int, str, str]] = asyncio.Queue()
            await listener.add_listener(
                channel, lambda _c, pid, chan, payload: received.put_nowait((pid, chan, payload)))
            await notifier.execute(f"NOTIFY {channel}, 'from alice ü'")
            pid, chan, payload = await asyncio.wait_for(received.get(), 5)
            assert (chan, payload) == (channel, "from alice ü")
            assert pid == notifier.get_server_pid()
            assert pid == await notifier.fetchval("SELECT pg_backend_pid()")
        finally:
            await listener.close()
            await notifier.close()

    asyncio.run(main())


def test_pool_of_ten_runs_300_concurrent_queries(proxy: ProxyProcess) -> None:
    async def main() -> None:
        async with asyncpg.create_pool(proxy.dsn("copilot"), min_size=10, max_size=10) as pool:

            async def one(i: int) -> tuple[int, int, str, int]:
                async with pool.acquire() as conn:
                    row = must(await conn.fetchrow(
                        "SELECT $1::int AS i, $1::int * 3 AS tripled, "
                        "(SELECT email FROM customers WHERE id = $1 % 50 + 1) AS email, "
                        "pg_backend_pid() AS pid FROM pg_sleep(0.005)", i))
                    return row["i"], row["tripled"], row["email"], row["pid"]

            results = await asyncio.gather(*(one(i) for i in range(300)))
            emails = {r["id"]: r["email"] for r in await pool.fetch(
                "SELECT id, email FROM customers")}
        assert [(r[0], r[1], r[2]) for r in results] == [
            (i, i * 3, emails[i % 50 + 1]) for i in range(300)]
        assert 1 < len({r[3] for r in results}) <= 10

    asyncio.run(main())
