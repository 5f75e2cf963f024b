# tests/integration/test_journal_replay_execute.py — `dbguard journal replay SESSION --execute DSN`
# against real throwaway servers (PostgreSQL and MariaDB, password logins): a session is
# journaled into a sqlite store through the group-commit writer, a "staging copy" database is
# made with one column dropped, and the command re-runs the session there. What a user checks:
# outcomes that match say "same", the statement broken by the staging change says "differs"
# with both codes, blocked / held / redacted statements are skipped and never run, parameters
# are bound ($1 for PostgreSQL, ? for MySQL), exit 0 with no difference and 1 with one, exit 2
# for a DSN of the wrong protocol or an unreachable database, and the password never printed.
from __future__ import annotations

import json
import secrets
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import psycopg
import pymysql
import pytest
from rich.console import Console

from dbguard import cli_journal
from dbguard.cli import main
from dbguard.devdb import ThrowawayMariaDB, ThrowawayPostgres
from dbguard.journal import (
    JournalEvent,
    OutcomeEvent,
    SessionEndEvent,
    SessionStartEvent,
    StatementEvent,
    start_writer,
)
from tests.integration.harness import free_port

pytestmark = pytest.mark.integration

T0 = 1_795_000_000_000_000
SID = "s-replay-0001"

# (text, action, enforced, parameters, redacted parameter count, recorded rows, recorded error code)
Step = tuple[str, str, bool, tuple[str | None, ...] | None, int, int | None, str]


def journal(path: Path, protocol: str, steps: Sequence[Step], session_id: str = SID) -> str:
    """A sqlite store holding one recorded session; returns its --store URL."""
    url = f"sqlite:///{path}"
    events: list[JournalEvent] = [SessionStartEvent(
        session_id, T0, "copilot", "agent", ("readers",), "127.0.0.1:50000", False,
        "app-pg" if protocol == "postgres" else "app-mysql", protocol, "app")]
    t = T0
    for seq, (text, action, enforced, params, redacted, rows, code) in enumerate(steps, 1):
        t += 10_000
        events.append(StatementEvent(
            session_id, t, seq, text, action, enforced=enforced, parameters=params,
            parameters_redacted=redacted > 0, parameter_count=redacted or len(params or ())))
        t += 1_000
        refused = enforced and action != "allow"
        events.append(OutcomeEvent(session_id, t, seq, 900, rows=rows,
                                   error_code="42501" if refused and protocol == "postgres"
                                   else "1227" if refused else code))
    events.append(SessionEndEvent(session_id, t + 5_000, "client closed"))
    writer = start_writer(url)
    try:
        for event in events:
            writer.submit(event).result(timeout=30)
    finally:
        writer.close()
    return url


@pytest.fixture(autouse=True)
def wide_console(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tables as a wide terminal shows them (the default for a pipe is 80 columns)."""
    monkeypatch.setattr(cli_journal, "_out", Console(highlight=False, soft_wrap=True, width=250))


def replay(capsys: pytest.CaptureFixture[str], store: str, dsn: str, *extra: str) -> tuple[int, Any, str]:
    code = main(["journal", "replay", SID, "--store", store, "--execute", dsn, "--json", *extra])
    out, err = capsys.readouterr()
    return code, json.loads(out) if out.strip() else None, err


def by_seq(report: dict[str, Any]) -> dict[int, dict[str, Any]]:
    return {r["statement_seq"]: r for r in report["results"]}


# ---------------------------------------------------------------------------------------------
# PostgreSQL

PG_STEPS: list[Step] = [
    ("SELECT id, name FROM items ORDER BY id", "allow", True, None, 0, 3, ""),
    ("INSERT INTO items (id, name, price) VALUES ($1, $2, $3)", "allow", True, ("4", "dora", None), 0, 1, ""),
    ("UPDATE items SET name = upper(name) WHERE id <= $1", "allow", True, ("2",), 0, 2, ""),
    ("DELETE FROM items", "block", True, None, 0, None, ""),
    ("UPDATE items SET name = $1 WHERE id = $2", "allow", True, None, 2, 1, ""),
    ("SELECT count(*) FROM items; SELECT name FROM items WHERE id > 1", "hold", False, None, 0, 4, ""),
    ("SELECT * FROM nowhere", "allow", True, None, 0, None, "42P01"),
    ("SELECT sum(price) FROM items", "allow", True, None, 0, 1, ""),
]


@pytest.fixture
def pg_staging(pg_server: ThrowawayPostgres) -> Iterator[str]:
    """A database of its own (the staging copy), owned by the app owner, with `items`; its DSN."""
    name = f"staging_{secrets.token_hex(4)}"
    pg_server.run_sql(f'CREATE DATABASE "{name}" OWNER "{pg_server.app_user}"', database="postgres")
    pg_server.run_sql("CREATE TABLE items (id int PRIMARY KEY, name text, price numeric);"
                      "INSERT INTO items VALUES (1, 'ann', 1.5), (2, 'bob', 2), (3, 'cy', NULL);",
                      database=name, as_superuser=False)
    try:
        yield pg_server.dsn(database=name)
    finally:
        pg_server.run_sql(f'DROP DATABASE "{name}" WITH (FORCE)', database="postgres")


def test_pg_same_outcomes_exit_0(capsys: pytest.CaptureFixture[str], tmp_path: Path, pg_staging: str) -> None:
    store = journal(tmp_path / "j.db", "postgres", PG_STEPS)
    code, report, err = replay(capsys, store, pg_staging)
    assert code == 0, (report, err)
    results = by_seq(report)
    assert {seq: r["status"] for seq, r in results.items()} == {
        1: "same", 2: "same", 3: "same", 4: "skipped", 5: "skipped", 6: "same", 7: "same", 8: "same"}
    assert results[4]["detail"] == "blocked when recorded"
    assert "redacted" in results[5]["detail"]
    assert results[6]["replayed"]["rows"] == 4  # observe-only: it ran; 1 + 3 rows
    assert results[7]["replayed"]["error_code"] == "42P01"
    assert report["summary"] == {"same": 6, "differs": 0, "skipped": 2, "not recorded": 0, "not run": 0}
    password = psycopg.conninfo.conninfo_to_dict(pg_staging)["password"]
    assert isinstance(password, str)
    assert password not in json.dumps(report)
    assert password not in err
    assert "running 6 of the 8 statements" in err
    # What ran, ran for real; what was skipped did not run.
    with psycopg.connect(pg_staging) as conn:
        rows = conn.execute("SELECT id, name FROM items ORDER BY id").fetchall()
    assert rows == [(1, "ANN"), (2, "BOB"), (3, "cy"), (4, "dora")]


def test_pg_altered_staging_differs_exit_1(capsys: pytest.CaptureFixture[str], tmp_path: Path,
                                           pg_staging: str, pg_server: ThrowawayPostgres) -> None:
    name = psycopg.conninfo.conninfo_to_dict(pg_staging)["dbname"]
    assert isinstance(name, str)
    pg_server.run_sql("ALTER TABLE items DROP COLUMN price", database=name, as_superuser=False)
    store = journal(tmp_path / "j.db", "postgres", PG_STEPS)
    code, report, _ = replay(capsys, store, pg_staging)
    assert code == 1
    results = by_seq(report)
    assert results[2]["status"] == "differs"  # the INSERT names price
    assert results[2]["recorded"]["rows"] == 1
    assert results[2]["replayed"]["error_code"] == "42703"
    assert results[2]["detail"] == "1 row → error 42703"
    assert results[8]["status"] == "differs"
    assert results[8]["detail"] == "1 row → error 42703"
    assert results[3]["status"] == "same"
    assert results[6]["detail"] == "4 rows → 3 rows"  # the knock-on effect: id 4 was never inserted
    assert report["summary"]["differs"] == 3
    # The table shows both codes too.
    code = main(["journal", "replay", SID, "--store", store, "--execute", pg_staging])
    out, _ = capsys.readouterr()
    assert code == 1
    assert "differs: 1 row → error 42703" in out
    assert "skipped: blocked when recorded" in out
    assert "3 same, 3 differ, 2 skipped, 0 not recorded" in out


def test_pg_usage_errors_exit_2(capsys: pytest.CaptureFixture[str], tmp_path: Path,
                                mariadb_server: ThrowawayMariaDB) -> None:
    store = journal(tmp_path / "j.db", "postgres", PG_STEPS)
    code, _, err = replay(capsys, store, mariadb_server.dsn())
    assert code == 2
    assert "recorded through a postgres listener" in err
    assert mariadb_server.app_password not in err
    dsn = f"postgresql://app_owner:s3cret-pw@127.0.0.1:{free_port()}/app?connect_timeout=3"
    code, _, err = replay(capsys, store, dsn)
    assert code == 2
    assert "cannot connect to postgresql://app_owner:***@127.0.0.1:" in err
    assert "s3cret-pw" not in err
    code, _, err = replay(capsys, store, "redis://localhost/0")
    assert code == 2
    assert "expected a DSN postgresql://" in err


# ---------------------------------------------------------------------------------------------
# MariaDB

MY_STEPS: list[Step] = [
    ("SELECT id, name FROM items ORDER BY id", "allow", True, None, 0, 3, ""),
    ("INSERT INTO items (id, name, price) VALUES (?, ?, ?)", "allow", True, ("4", "it's ?", None), 0, 1, ""),
    ("UPDATE items SET name = upper(name) WHERE id <= ?", "allow", True, ("2",), 0, 2, ""),
    ("DELETE FROM items", "block", True, None, 0, None, ""),
    ("SELECT * FROM items WHERE name = ?", "allow", True, None, 1, 1, ""),
    ("SELECT name FROM items WHERE id > 1 LIMIT ?", "hold", False, ("2",), 0, 2, ""),
    ("SELECT * FROM nowhere", "allow", True, None, 0, None, "1146"),
    ("SELECT sum(price) FROM items", "allow", True, None, 0, 1, ""),
]


@pytest.fixture
def mariadb_staging(mariadb_server: ThrowawayMariaDB) -> Iterator[str]:
    name = f"staging_{secrets.token_hex(4)}"
    mariadb_server.run_sql(f"CREATE DATABASE `{name}`; GRANT ALL ON `{name}`.* TO '{mariadb_server.app_user}'@'%'")
    mariadb_server.run_sql("CREATE TABLE items (id int PRIMARY KEY, name varchar(40), price decimal(8,2));"
                           "INSERT INTO items VALUES (1, 'ann', 1.5), (2, 'bob', 2), (3, 'cy', NULL);",
                           name, as_root=False)
    try:
        yield mariadb_server.dsn(database=name)
    finally:
        mariadb_server.run_sql(f"DROP DATABASE `{name}`")


def _mysql_rows(server: ThrowawayMariaDB, database: str) -> list[tuple[Any, ...]]:
    return server.run_sql("SELECT id, name FROM items ORDER BY id", database, as_root=False)


def test_mysql_same_outcomes_exit_0(capsys: pytest.CaptureFixture[str], tmp_path: Path,
                                    mariadb_staging: str, mariadb_server: ThrowawayMariaDB) -> None:
    store = journal(tmp_path / "j.db", "mysql", MY_STEPS)
    code, report, err = replay(capsys, store, mariadb_staging)
    assert code == 0, (report, err)
    results = by_seq(report)
    assert {seq: r["status"] for seq, r in results.items()} == {
        1: "same", 2: "same", 3: "same", 4: "skipped", 5: "skipped", 6: "same", 7: "same", 8: "same"}
    assert results[7]["replayed"]["error_code"] == "1146"
    assert mariadb_server.app_password not in err + json.dumps(report)
    database = mariadb_staging.rsplit("/", 1)[1]
    assert _mysql_rows(mariadb_server, database) == [(1, "ANN"), (2, "BOB"), (3, "cy"), (4, "it's ?")]
    # The replay's bookkeeping (the prepared statement, its user variables) leaves nothing behind
    # that the next statement could see: the connection is closed, and nothing was left prepared.


def test_mysql_altered_staging_differs_exit_1(capsys: pytest.CaptureFixture[str], tmp_path: Path,
                                              mariadb_staging: str, mariadb_server: ThrowawayMariaDB) -> None:
    database = mariadb_staging.rsplit("/", 1)[1]
    mariadb_server.run_sql("ALTER TABLE items DROP COLUMN price", database, as_root=False)
    store = journal(tmp_path / "j.db", "mysql", MY_STEPS)
    code, report, _ = replay(capsys, store, mariadb_staging)
    assert code == 1
    results = by_seq(report)
    assert results[2]["status"] == "differs"
    assert results[2]["detail"] == "1 row → error 1054"  # ER_BAD_FIELD_ERROR
    assert results[8]["detail"] == "1 row → error 1054"
    assert results[4]["status"] == "skipped"
    assert report["summary"]["differs"] == 2
    assert _mysql_rows(mariadb_server, database) == [(1, "ANN"), (2, "BOB"), (3, "cy")]


def test_mysql_usage_errors_exit_2(capsys: pytest.CaptureFixture[str], tmp_path: Path,
                                   mariadb_server: ThrowawayMariaDB, pg_server: ThrowawayPostgres) -> None:
    store = journal(tmp_path / "j.db", "mysql", MY_STEPS)
    code, _, err = replay(capsys, store, pg_server.dsn())
    assert code == 2
    assert "recorded through a mysql listener" in err
    assert pg_server.app_password not in err
    wrong = mariadb_server.dsn(password="not-the-password")
    code, _, err = replay(capsys, store, wrong)
    assert code == 2
    assert "cannot connect to mysql://app_owner:***@" in err
    assert "error 1045" in err  # access denied
    assert "not-the-password" not in err
    with pytest.raises(pymysql.MySQLError):  # (the wrong password really is wrong)
        pymysql.connect(**mariadb_server.connect_kwargs(password="not-the-password"))
