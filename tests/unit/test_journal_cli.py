# tests/unit/test_journal_cli.py — `dbguard journal …` end to end on a sqlite store: every
# subcommand with --json and as a table, exit statuses (0 ok, 1 verification failed naming the
# first bad event, 2 usage/config/store errors naming the problem), the key from the config
# or $DBGUARD_JOURNAL_KEY, replay pacing, prune.
from __future__ import annotations

import json
from pathlib import Path

import pytest
from rich.console import Console

from dbguard import cli_journal
from dbguard.cli import main
from dbguard.journal import ChainHasher
from dbguard.journal.events import iso_from_us
from dbguard.journal.store_sqlite import SqliteJournalStore
from tests.unit.journal_helpers import KEY, T0, fill, session_events


@pytest.fixture(autouse=True)
def wide_console(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tables as a wide terminal shows them (the default for a pipe is 80 columns)."""
    monkeypatch.setattr(cli_journal, "_out", Console(highlight=False, soft_wrap=True, width=250))


@pytest.fixture
def db(tmp_path: Path) -> Path:
    path = tmp_path / "journal.db"
    with SqliteJournalStore(path) as s:
        fill(s, ChainHasher(), session_events("s-0001", "copilot", T0))
        fill(s, ChainHasher(), session_events("s-0002", "alice", T0 + 60_000_000))
    return path


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(["journal", *args])
    out, err = capsys.readouterr()
    return code, out, err


def store_args(db: Path) -> list[str]:
    return ["--store", f"sqlite:///{db}"]


def test_sessions(capsys: pytest.CaptureFixture[str], db: Path) -> None:
    code, out, _ = run(capsys, "sessions", *store_args(db), "--json")
    assert code == 0
    sessions = json.loads(out)["sessions"]
    assert [s["session_id"] for s in sessions] == ["s-0002", "s-0001"]
    assert sessions[1]["blocked"] == 1
    assert sessions[1]["statements"] == 4
    code, out, _ = run(capsys, "sessions", *store_args(db), "--identity", "copilot")
    assert code == 0
    assert "s-0001" in out
    assert "s-0002" not in out
    code, _, err = run(capsys, "sessions", *store_args(db), "--since", "last tuesday")
    assert code == 2
    assert "--since" in err
    assert "ISO 8601" in err


def test_show_and_tail(capsys: pytest.CaptureFixture[str], db: Path) -> None:
    code, out, _ = run(capsys, "show", "s-0001", *store_args(db), "--json")
    assert code == 0
    events = json.loads(out)["events"]
    assert [e["event"]["kind"] for e in events][:3] == ["session_start", "statement", "outcome"]
    code, out, _ = run(capsys, "show", "s-0001", *store_args(db))
    assert code == 0
    assert "SELECT 3 FROM orders" in out
    assert "BLOCK" in out
    code, _, err = run(capsys, "show", "s-", *store_args(db))
    assert code == 2
    assert "ambiguous" in err
    code, out, _ = run(capsys, "tail", "-n", "2", *store_args(db), "--json")
    assert code == 0
    assert [json.loads(line)["seq"] for line in out.splitlines()] == [19, 20]


def test_replay(capsys: pytest.CaptureFixture[str], db: Path) -> None:
    code, out, _ = run(capsys, "replay", "s-0002", "--speed", "0", *store_args(db))
    assert code == 0
    lines = out.splitlines()
    assert lines[0].startswith("+    0.000s session start: alice")
    assert "#3 [BLOCK no-orders] SELECT 3 FROM orders" in out
    assert "→ error 42501" in out
    assert lines[-1].endswith("session end: client closed")
    code, out, _ = run(capsys, "replay", "s-0002", "--speed", "0", *store_args(db), "--json")
    assert [json.loads(line)["kind"] for line in out.splitlines()][-1] == "session_end"
    code, _, err = run(capsys, "replay", "s-0002", "--execute", "mysql://x@y/z", *store_args(db))
    assert code == 2  # --execute itself: tests/unit/test_journal_replay_execute.py
    assert "recorded through a postgres listener" in err


def test_export_and_verify_file(capsys: pytest.CaptureFixture[str], db: Path, tmp_path: Path) -> None:
    out_file = tmp_path / "export.jsonl"
    since = iso_from_us(T0 + 60_000_000)
    code, _, err = run(capsys, "export", *store_args(db), "--since", since, "-o", str(out_file))
    assert code == 0
    assert "exported 10 events" in err
    code, out, _ = run(capsys, "verify", str(out_file))
    assert code == 0
    assert "OK" in out
    lines = out_file.read_text().splitlines(keepends=True)
    out_file.write_text("".join(lines[:3] + lines[4:]))
    code, _, err = run(capsys, "verify", str(out_file))
    assert code == 1
    assert "event 13: deleted" in err
    assert "first bad event: 13" in err
    code, out, _ = run(capsys, "verify", str(out_file), "--json")
    assert code == 1
    assert json.loads(out)["problems"][0]["seq"] == 13

    csv_file = tmp_path / "blocked.csv"
    code, out, _ = run(capsys, "export", *store_args(db), "--decision", "block", "--format", "csv",
                       "-o", str(csv_file), "--json")
    assert code == 0
    assert json.loads(out)["events"] == 4
    assert run(capsys, "verify", str(csv_file))[0] == 0
    code, _, err = run(capsys, "verify", str(tmp_path / "missing.jsonl"))
    assert code == 2
    assert "file not found" in err


def test_verify_store(capsys: pytest.CaptureFixture[str], db: Path) -> None:
    code, out, _ = run(capsys, "verify", *store_args(db))
    assert code == 0
    assert "OK: 20 events verified" in out
    import sqlite3

    with sqlite3.connect(db) as conn:
        conn.execute("UPDATE journal_events SET payload = CAST(replace(payload, 'SELECT 2', 'SELECT 9') AS BLOB)"
                     " WHERE seq = 4")
    code, _, err = run(capsys, "verify", *store_args(db))
    assert code == 1
    assert "event 4: edited" in err
    code, out, _ = run(capsys, "verify", *store_args(db), "--json")
    assert code == 1
    assert [(p["seq"], p["problem"]) for p in json.loads(out)["problems"]] == [(4, "edited")]


def test_prune(capsys: pytest.CaptureFixture[str], db: Path) -> None:
    code, out, _ = run(capsys, "prune", "--before", iso_from_us(T0 + 60_000_000), *store_args(db), "--json")
    assert code == 0
    assert json.loads(out)["deleted"] == 10
    assert run(capsys, "verify", *store_args(db))[0] == 0
    code, out, _ = run(capsys, "prune", "--before", iso_from_us(T0), *store_args(db))
    assert code == 0
    assert "nothing to prune" in out


def test_store_errors_exit_2(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code, _, err = run(capsys, "sessions", "--store", f"sqlite:///{tmp_path}/none.db")
    assert code == 2
    assert "no journal there" in err
    code, _, err = run(capsys, "sessions", "--store", "mysql://x@y/z")
    assert code == 2
    assert "--store" in err
    assert not (tmp_path / "none.db").exists()


def test_keyed_store_through_config(capsys: pytest.CaptureFixture[str], tmp_path: Path,
                                    monkeypatch: pytest.MonkeyPatch) -> None:
    db = tmp_path / "j.db"
    with SqliteJournalStore(db) as s:
        fill(s, ChainHasher(KEY), session_events())
    config = tmp_path / "dbguard.yaml"
    config.write_text(
        "listeners:\n  - name: app-pg\n    protocol: postgres\n    listen: 127.0.0.1:0\n"
        "    upstream: postgresql://svc:pw@127.0.0.1:5432/app\n"
        "store: sqlite:///./j.db\n"
        "journal:\n  hmac_key: ${JOURNAL_KEY}\n"
    )
    monkeypatch.setenv("JOURNAL_KEY", KEY.decode())
    assert run(capsys, "verify", "-c", str(config))[0] == 0
    out_file = tmp_path / "e.jsonl"
    assert run(capsys, "export", "-c", str(config), "-o", str(out_file))[0] == 0
    code, _, err = run(capsys, "verify", str(out_file))
    assert code == 2
    assert "keyed" in err
    monkeypatch.setenv("DBGUARD_JOURNAL_KEY", KEY.decode())
    assert run(capsys, "verify", str(out_file))[0] == 0
    code, _, err = run(capsys, "verify", *store_args(db))
    assert code == 0
    monkeypatch.delenv("DBGUARD_JOURNAL_KEY")
    code, _, err = run(capsys, "verify", *store_args(db))
    assert code == 2
    assert "keyed" in err
    monkeypatch.delenv("JOURNAL_KEY")
    code, _, err = run(capsys, "verify", "-c", str(config))
    assert code == 2
    assert "journal.hmac_key" in err
