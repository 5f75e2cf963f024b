# tests/unit/test_journal_replay_execute.py — the parts of `journal replay --execute` that need no
# server: which statements run and why the others are skipped, how outcomes compare, the run
# loop (order, pacing callback, a lost connection), the --execute DSN (protocol mismatch, bad
# DSNs, the password never shown) and the command's pacing and exit statuses, with a fake
# executor in place of a database. The real servers are in
# tests/integration/test_journal_replay_execute.py.
from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import pytest
from rich.console import Console

from dbguard import cli_journal
from dbguard.cli import main
from dbguard.journal import ChainHasher, JournalEvent, OutcomeEvent, SessionStartEvent, StatementEvent
from dbguard.journal.replay_execute import (
    ExecuteError,
    ExecuteTarget,
    Executor,
    Outcome,
    PlannedStatement,
    compare,
    execute_replay,
    plan,
    session_protocol,
)
from dbguard.journal.store_sqlite import SqliteJournalStore
from tests.unit.journal_helpers import T0, fill


def recorded(protocol: str = "postgres") -> list[JournalEvent]:
    sid = "s-x"
    return [
        SessionStartEvent(sid, T0, "copilot", "agent", (), "127.0.0.1:1", False, "l", protocol, "app"),
        StatementEvent(sid, T0 + 1_000_000, 1, "SELECT 1", "allow"),
        OutcomeEvent(sid, T0 + 1_000_100, 1, 100, rows=1),
        StatementEvent(sid, T0 + 2_000_000, 2, "DELETE FROM t", "block", ("no-delete",)),
        OutcomeEvent(sid, T0 + 2_000_100, 2, 100, error_code="42501"),
        StatementEvent(sid, T0 + 3_000_000, 3, "UPDATE t SET a = 1", "hold"),
        StatementEvent(sid, T0 + 4_000_000, 4, "UPDATE t SET a = 2", "block", enforced=False),
        OutcomeEvent(sid, T0 + 4_000_100, 4, 100, rows=5),
        StatementEvent(sid, T0 + 5_000_000, 5, "SELECT $1", "allow", parameters_redacted=True, parameter_count=1),
        StatementEvent(sid, T0 + 6_000_000, 6, "SELECT $1, $2", "allow", parameters=("a", None), parameter_count=2),
        OutcomeEvent(sid, T0 + 6_000_100, 6, 100, rows=1),
        StatementEvent(sid, T0 + 7_000_000, 7, "SELECT pg_sleep(60)", "allow"),
        OutcomeEvent(sid, T0 + 7_000_100, 7, 100, error_code="57014"),
        StatementEvent(sid, T0 + 8_000_000, 8, "SELECT 'abc", "allow", text_truncated=True),
        StatementEvent(sid, T0 + 9_000_000, 9, "SELECT 9", "allow"),  # no outcome journaled
    ]


@pytest.fixture
def store(tmp_path: Path) -> str:
    path = tmp_path / "j.db"
    with SqliteJournalStore(path) as s:
        fill(s, ChainHasher(), recorded())
    return f"sqlite:///{path}"


def test_plan_runs_what_the_decision_let_run(tmp_path: Path) -> None:
    with SqliteJournalStore(tmp_path / "p.db") as s:
        fill(s, ChainHasher(), recorded())
        events = s.session_events("s-x")
    assert session_protocol(events) == "postgres"
    assert session_protocol(events[1:]) is None
    planned = {p.statement.seq: p for p in plan(events, "postgres")}
    assert {seq: p.skip_reason for seq, p in planned.items()} == {
        1: "",
        2: "blocked when recorded",
        3: "held when recorded",
        4: "",  # observe-only: it ran whatever the rules said
        5: "parameters were redacted (1 not journaled)",
        6: "",
        7: "cancelled when recorded (error 57014)",
        8: "the journal holds only the start of its text",
        9: "",
    }
    assert planned[1].recorded == Outcome(1, "")
    assert planned[3].recorded is None
    assert planned[9].recorded is None
    # The cancel codes are the protocol's: 57014 means nothing to MySQL.
    assert {p.statement.seq for p in plan(events, "mysql") if not p.skip_reason} == {1, 4, 6, 7, 9}


@pytest.mark.parametrize(("was", "now", "status", "detail"), [
    (Outcome(3, ""), Outcome(3, ""), "same", ""),
    (Outcome(None, ""), Outcome(7, ""), "same", ""),  # no recorded count: only the codes compare
    (Outcome(3, ""), Outcome(2, ""), "differs", "3 rows → 2 rows"),
    (Outcome(1, ""), Outcome(None, "42703", "column"), "differs", "1 row → error 42703"),
    (Outcome(None, "42P01"), Outcome(None, "42P01", "other words"), "same", ""),
    (Outcome(None, "1146"), Outcome(0, ""), "differs", "error 1146 → 0 rows"),
    (Outcome(None, "23505"), Outcome(None, "23503"), "differs", "error 23505 → error 23503"),
    (None, Outcome(4, ""), "not recorded", "no recorded outcome; replayed: 4 rows"),
])
def test_compare(was: Outcome | None, now: Outcome, status: str, detail: str) -> None:
    assert compare(was, now) == (status, detail)


class FakeExecutor:
    """Answers from a script: text → outcome; can drop the connection after one text."""

    def __init__(self, answers: dict[str, Outcome], protocol: str = "postgres", lose_after: str = "") -> None:
        self.protocol = protocol
        self.answers = answers
        self.ran: list[tuple[str, tuple[str | None, ...]]] = []
        self.lose_after = lose_after
        self.closed = False
        self._alive = True

    def run(self, text: str, parameters: Sequence[str | None]) -> Outcome:
        self.ran.append((text, tuple(parameters)))
        if text == self.lose_after:
            self._alive = False
        return self.answers.get(text, Outcome(1, ""))

    def alive(self) -> bool:
        return self._alive

    def close(self) -> None:
        self.closed = True


def test_execute_replay_runs_in_order_and_paces(tmp_path: Path) -> None:
    with SqliteJournalStore(tmp_path / "p.db") as s:
        fill(s, ChainHasher(), recorded())
        planned = plan(s.session_events("s-x"), "postgres")
    fake = FakeExecutor({"UPDATE t SET a = 2": Outcome(4, "")})
    gaps: list[tuple[int, int]] = []

    def before(item: PlannedStatement, gap_us: int) -> None:
        gaps.append((item.statement.seq, gap_us))

    executor: Executor = fake
    results = list(execute_replay(planned, executor, before=before))
    assert [text for text, _ in fake.ran] == ["SELECT 1", "UPDATE t SET a = 2", "SELECT $1, $2", "SELECT 9"]
    assert fake.ran[2] == ("SELECT $1, $2", ("a", None))
    assert gaps == [(1, 0), (4, 3_000_000), (6, 2_000_000), (9, 3_000_000)]
    assert [(r.planned.statement.seq, r.status) for r in results] == [
        (1, "same"), (2, "skipped"), (3, "skipped"), (4, "differs"), (5, "skipped"), (6, "same"),
        (7, "skipped"), (8, "skipped"), (9, "not recorded")]
    assert results[3].detail == "5 rows → 4 rows"
    assert results[3].to_json()["recorded"] == {"rows": 5, "error_code": "", "error_message": ""}


def test_execute_replay_stops_when_the_connection_is_lost(tmp_path: Path) -> None:
    with SqliteJournalStore(tmp_path / "p.db") as s:
        fill(s, ChainHasher(), recorded("mysql"))
        planned = plan(s.session_events("s-x"), "mysql")
    fake = FakeExecutor({}, protocol="mysql", lose_after="UPDATE t SET a = 2")
    results = list(execute_replay(planned, fake))
    assert [text for text, _ in fake.ran] == ["SELECT 1", "UPDATE t SET a = 2"]
    assert results[3].status == "differs"
    assert results[3].replayed is not None
    assert results[3].replayed.error_code == "2013"
    assert {r.detail for r in results[4:] if not r.planned.skip_reason} == {
        "the connection to the target was lost at #4"}
    assert all(r.status == "skipped" for r in results[4:])


# ---------------------------------------------------------------------------------------------
# The command, with the fake executor


@pytest.fixture(autouse=True)
def wide_console(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cli_journal, "_out", Console(highlight=False, soft_wrap=True, width=250))


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(["journal", "replay", "s-x", *args])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> list[ExecuteTarget]:
    """Replace the connection with a FakeExecutor; records the targets asked for."""
    targets: list[ExecuteTarget] = []

    def connect(target: ExecuteTarget) -> Executor:
        targets.append(target)
        return FakeExecutor({"UPDATE t SET a = 2": Outcome(5, "")}, protocol=target.protocol)

    monkeypatch.setattr(cli_journal, "connect", connect)
    return targets


def test_command_reports_and_exit_statuses(capsys: pytest.CaptureFixture[str], store: str,
                                           fake: list[ExecuteTarget], monkeypatch: pytest.MonkeyPatch) -> None:
    slept: list[float] = []
    monkeypatch.setattr("dbguard.cli_journal.time.sleep", slept.append)
    dsn = "postgresql://app:pa55word@db.staging:5433/app?sslmode=require"
    code, out, err = run(capsys, "--store", store, "--execute", dsn, "--json")
    assert code == 0  # nothing differs; "not recorded" is not a difference
    report = json.loads(out)
    assert report["target"] == "postgresql://app:***@db.staging:5433/app?sslmode=require"
    assert report["summary"] == {"same": 3, "differs": 0, "skipped": 5, "not recorded": 1, "not run": 0}
    assert "pa55word" not in out + err
    assert "running 4 of the 9 statements" in err
    assert slept == []  # with --execute, no waits unless --speed is given
    target = fake[0]
    assert (target.protocol, target.host, target.port, target.user, target.password, target.sslmode) == (
        "postgres", "db.staging", 5433, "app", "pa55word", "require")
    assert "pa55word" not in repr(target)

    code, out, _ = run(capsys, "--store", store, "--execute", dsn, "--speed", "2", "--max-wait", "1.2")
    assert code == 0
    assert slept == [1.2, 1.0, 1.2]  # gaps of 3 s, 2 s and 3 s, halved, at most 1.2
    assert "skipped: blocked when recorded" in out
    assert "3 same, 0 differ, 5 skipped, 1 not recorded" in out


def test_command_exit_1_when_an_outcome_differs(capsys: pytest.CaptureFixture[str], store: str,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cli_journal, "connect",
                        lambda target: FakeExecutor({"SELECT 1": Outcome(None, "42P01", "gone")}))
    code, out, _ = run(capsys, "--store", store, "--execute", "postgresql://a:b@h/d")
    assert code == 1
    assert "differs: 1 row → error 42P01" in out
    assert "error 42P01 (gone)" in out
    assert "1 same, 2 differ, 5 skipped" in out  # and #4: 5 rows → 1 row


@pytest.mark.parametrize(("dsn", "message"), [
    ("mysql://u:topsecret@h/app", "the session was recorded through a postgres listener, but "
                                  "mysql://u:***@h:3306/app is a mysql DSN (give a postgresql://… DSN)"),
    ("redis://u:topsecret@h/0", "--execute: expected a DSN postgresql://"),
    ("postgresql://u:topsecret@h/app?sslmode=maybe", "--execute: sslmode: expected one of"),
    ("postgresql://u:topsecret@h:99999/app", "--execute: port: expected a port number"),
])
def test_command_dsn_errors_exit_2(capsys: pytest.CaptureFixture[str], store: str, fake: list[ExecuteTarget],
                                   dsn: str, message: str) -> None:
    code, out, err = run(capsys, "--store", store, "--execute", dsn)
    assert code == 2
    assert message in err
    assert "topsecret" not in out + err
    assert fake == []  # nothing was connected to


def test_command_connection_failure_exit_2(capsys: pytest.CaptureFixture[str], store: str,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(target: ExecuteTarget) -> Executor:
        raise ExecuteError(f"cannot connect to {target.label}: Connection refused")

    monkeypatch.setattr(cli_journal, "connect", refuse)
    code, _, err = run(capsys, "--store", store, "--execute", "postgresql://u:topsecret@h/app")
    assert code == 2
    assert "dbguard: --execute: cannot connect to postgresql://u:***@h:5432/app: Connection refused" in err
    assert "topsecret" not in err


def test_session_without_its_start_assumes_the_dsn_protocol(capsys: pytest.CaptureFixture[str], tmp_path: Path,
                                                            fake: list[ExecuteTarget]) -> None:
    path = tmp_path / "j.db"
    with SqliteJournalStore(path) as s:
        fill(s, ChainHasher(), recorded()[1:3])
    code, _, err = run(capsys, "--store", f"sqlite:///{path}", "--execute", "mysql://u@h/app")
    assert code == 0
    assert "is not in the journal (pruned?): assuming its statements are mysql SQL" in err
    assert fake[0].protocol == "mysql"


@pytest.mark.parametrize(("protocol", "text", "skipped"), [
    ("postgres", "COPY t (a, b) FROM STDIN WITH (FORMAT csv)", True),
    ("postgres", "copy t from\nstdin", True),
    ("postgres", "COPY t TO STDOUT", False),
    ("postgres", "SELECT $1", False),
    ("mysql", "LOAD DATA LOCAL INFILE 'x.csv' INTO TABLE t", True),
    ("mysql", "load data concurrent local infile 'x' into table t", True),
    ("mysql", "LOAD DATA INFILE '/srv/x.csv' INTO TABLE t", False),  # the server's own file: it runs
])
def test_client_data_is_not_journaled(tmp_path: Path, protocol: str, text: str, skipped: bool) -> None:
    events: list[JournalEvent] = [StatementEvent("s-x", T0, 1, text, "allow")]
    if "$1" in text:  # a binary-format parameter, journaled as hex: skipped; a text one runs
        events = [StatementEvent("s-x", T0, 1, text, "allow", parameters=("\\x0002",), parameter_count=1),
                  StatementEvent("s-x", T0, 2, text, "allow", parameters=("2",), parameter_count=1)]
    with SqliteJournalStore(tmp_path / "p.db") as s:
        fill(s, ChainHasher(), events)
        planned, *more = plan(s.session_events("s-x"), protocol)
    if more:
        assert "binary format" in planned.skip_reason
        assert more[0].skip_reason == ""
        return
    assert bool(planned.skip_reason) is skipped
    assert not skipped or "not journaled" in planned.skip_reason
