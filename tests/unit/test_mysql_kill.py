"""Unit tests for dbguard.session.mysql_kill: reading KILL and resolving whose thread it ends."""

from __future__ import annotations

import pytest

from dbguard.session.journal import SessionJournal
from dbguard.session.mysql_kill import DBGUARD_ID_FLOOR, KillRequest, new_connection_id, parse_kill, resolve


class Directory:
    """Two dbguard sessions: copilot's (dbguard id A, server thread 11) and alice's (B, 12)."""

    A = DBGUARD_ID_FLOOR + 5
    B = DBGUARD_ID_FLOOR + 6

    def upstream_thread(self, connection_id: int) -> tuple[str, int] | None:
        return {self.A: ("copilot", 11), self.B: ("alice", 12)}.get(connection_id)

    def thread_owner(self, thread_id: int) -> str | None:
        return {11: "copilot", 12: "alice"}.get(thread_id)

    def journal_of(self, thread_id: int) -> SessionJournal | None:
        return None


@pytest.mark.parametrize(("sql", "expected"), [
    (b"KILL 7", KillRequest(b"CONNECTION", 7)),
    (b"kill query 7", KillRequest(b"QUERY", 7)),
    (b"  KILL\tCONNECTION  1073741829 ;  ", KillRequest(b"CONNECTION", DBGUARD_ID_FLOOR + 5)),
    (b"KILL QUERY 7; DROP TABLE t", None),  # not alone: left to the policy as written
    (b"KILL /* x */ 7", None),
    (b"KILL QUERY ID 7", None),
    (b"KILL HARD 7", None),
    (b"KILL USER 'bob'", None),
    (b"KILL 7 + 1", None),
    (b"KILL 12345678901", None),
])
def test_parse_kill_reads_only_the_plain_form(sql: bytes, expected: KillRequest | None) -> None:
    assert parse_kill(sql) == expected


def test_a_dbguard_id_maps_to_the_sessions_thread_for_the_same_identity_only() -> None:
    directory = Directory()
    assert resolve(KillRequest(b"QUERY", Directory.A), "copilot", directory) == 11
    assert resolve(KillRequest(b"QUERY", Directory.B), "copilot", directory) is None
    assert resolve(KillRequest(b"QUERY", DBGUARD_ID_FLOOR + 99), "copilot", directory) is None


def test_a_server_thread_of_a_dbguard_session_is_killable_by_its_identity_only() -> None:
    directory = Directory()
    assert resolve(KillRequest(b"CONNECTION", 11), "copilot", directory) == 11
    assert resolve(KillRequest(b"CONNECTION", 12), "copilot", directory) is None
    assert resolve(KillRequest(b"CONNECTION", 999), "copilot", directory) == 999  # not dbguard's


def test_the_rewritten_statement() -> None:
    assert KillRequest(b"QUERY", DBGUARD_ID_FLOOR + 5).statement(11) == b"KILL QUERY 11"


def test_greeting_ids_are_above_every_server_thread_id() -> None:
    ids = {new_connection_id() for _ in range(1000)}
    assert all(DBGUARD_ID_FLOOR <= i < 1 << 31 for i in ids)
    assert len(ids) > 990
