"""What the journal tests of both protocols read back: a proxy's store, one session's events,
its statements and outcomes, and `dbguard journal …` run against the proxy's configuration."""

from __future__ import annotations

import os
import subprocess
import sys
import time

from dbguard.journal import JournalEvent, OutcomeEvent, SessionEndEvent, SessionStartEvent, StatementEvent, open_store
from tests.integration.harness import REPO_ROOT, ProxyProcess


def store_url(proxy: ProxyProcess) -> str:
    """The default store of a proxy the harness started: sqlite next to its configuration."""
    return "sqlite:///" + str(proxy.config_path.parent / "dbguard.db")


def session_events(proxy: ProxyProcess, application_name: str, *, wait_end: bool = True) -> list[JournalEvent]:
    """The events of the one session whose client named itself `application_name` (MySQL:
    its `program_name` attribute), waiting for its end."""
    deadline = time.monotonic() + 10
    while True:
        with open_store(store_url(proxy), create=False) as store:
            events = [stored.event() for stored in store.iter_events()]
        starts = [e for e in events if isinstance(e, SessionStartEvent) and e.application_name == application_name]
        if len(starts) == 1:
            mine = [e for e in events if getattr(e, "session_id", None) == starts[0].session_id]
            if not wait_end or isinstance(mine[-1], SessionEndEvent):
                return mine
        assert len(starts) <= 1, f"several sessions named {application_name}"
        if time.monotonic() > deadline:
            raise AssertionError(f"no complete session {application_name!r} in the journal: {starts}")
        time.sleep(0.05)


def statements(events: list[JournalEvent]) -> list[StatementEvent]:
    return [e for e in events if isinstance(e, StatementEvent)]


def outcome(events: list[JournalEvent], seq: int) -> OutcomeEvent | None:
    found = [e for e in events if isinstance(e, OutcomeEvent) and e.statement_seq == seq]
    assert len(found) <= 1
    return found[0] if found else None


def journal_cli(proxy: ProxyProcess, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "dbguard", "journal", *args, "-c", str(proxy.config_path)],
                          cwd=REPO_ROOT, capture_output=True, text=True, timeout=60, check=False,
                          env={**os.environ, "COLUMNS": "250"})


def answered_but_unjournaled(proxy: ProxyProcess, received: list[str]) -> tuple[list[str], list[str]]:
    """After a kill -9: the markers a client received whose statement is not in the journal,
    and those whose statement is but whose outcome is not. A marker is a statement's quoted
    literal (`SELECT 'k9-1-3'`) or its bound parameter. Also checks the chain."""
    verified = journal_cli(proxy, "verify")  # takes in what the killed proxy's segment held
    assert verified.returncode == 0, verified.stdout + verified.stderr
    with open_store(store_url(proxy), create=False) as store:
        events = [stored.event() for stored in store.iter_events()]
    where: dict[str, tuple[str, int]] = {}  # marker -> (session, statement number)
    for event in events:
        if isinstance(event, StatementEvent):
            for value in (event.text, *(event.parameters or ())):
                if value is not None and "k9" in value:
                    where[value.split("'")[1] if "'" in value else value] = (event.session_id, event.seq)
    outcomes = {(e.session_id, e.statement_seq) for e in events if isinstance(e, OutcomeEvent)}
    return ([marker for marker in received if marker not in where],
            [marker for marker in received if marker in where and where[marker] not in outcomes])
