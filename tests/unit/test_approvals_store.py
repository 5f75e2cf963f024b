# tests/unit/test_approvals_store.py — THE approval queue suite, shared by every store. Here it
# runs against sqlite (`backend` below); tests/integration/test_approvals_postgres_store.py
# imports these same tests and runs them against a throwaway PostgreSQL. Covers the request's
# fields round trip, listing, decisions (single and atomic under concurrent deciders; refused
# when not pending, expired, self-approval, missing approver role), grants consumed exactly
# once, expiry (sweep, at decision time, of a session), retry-mode lookups, migrations, wake-ups,
# and the journal: every change is an ApprovalEvent and the chain still verifies.
from __future__ import annotations

import re
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Protocol

import pytest

from dbguard.approvals import (
    CURRENT_APPROVALS_SCHEMA_VERSION,
    ApprovalNotFound,
    ApprovalRequest,
    ApprovalStatus,
    ApprovalStore,
    BlastRadius,
    DecisionRefused,
    Refusal,
    Verdict,
)
from dbguard.journal import ApprovalEvent, ChainHasher, JournalStore
from dbguard.journal.store_sqlite import SqliteJournalStore
from tests.unit.journal_helpers import KEY, fill, session_events

T = 1_800_000_000_000_000  # a fixed "now" in microseconds
S = 1_000_000  # one second in microseconds
TIMEOUT = 60.0


class QueueBackend(Protocol):
    name: str
    url: str

    def open(self) -> JournalStore: ...


class SqliteBackend:
    name = "sqlite"

    def __init__(self, path: Path) -> None:
        self.path = path
        self.url = "sqlite:///" + path.as_posix()

    def open(self) -> JournalStore:
        return SqliteJournalStore(self.path)


@pytest.fixture
def backend(tmp_path: Path) -> QueueBackend:
    return SqliteBackend(tmp_path / "dbguard.db")


HASHER = ChainHasher(KEY)


@pytest.fixture
def open_queue(backend: QueueBackend) -> Iterator[Callable[..., ApprovalStore]]:
    opened: list[ApprovalStore] = []

    def make(*, hasher: ChainHasher | None = HASHER, poll_interval: float = 0.25) -> ApprovalStore:
        queue = ApprovalStore(backend.open(), owns_store=True, hasher=hasher, timeout=TIMEOUT,
                              poll_interval=poll_interval)
        opened.append(queue)
        return queue

    try:
        yield make
    finally:
        for q in opened:
            q.close()


@pytest.fixture
def queue(open_queue: Callable[..., ApprovalStore]) -> ApprovalStore:
    return open_queue()


def held(**changes: Any) -> ApprovalRequest:
    base = ApprovalRequest(
        identity="copilot", identity_kind="agent", roles=("readers",), sql="DELETE FROM orders WHERE id = $1",
        session_id="s-0001", statement_seq=7, client_address="10.0.0.5:51234", listener="app-pg", database="app",
        protocol="postgres", parameters=("42",), rule_ids=("hold-deletes",), approvers=("dba",),
        tables=("public.orders",), intent="clean up test order", blast_radius=BlastRadius(12, None, "planner"),
    )
    from dataclasses import replace

    return replace(base, **changes)


def approval_events(queue: ApprovalStore) -> list[ApprovalEvent]:
    events = [e.event() for e in queue.store.iter_events()]
    return [e for e in events if isinstance(e, ApprovalEvent)]


# -- requests ------------------------------------------------------------------------------------


def test_create_fills_id_and_times_and_round_trips_every_field(queue: ApprovalStore) -> None:
    r = queue.create(held(parameters=("42", None)), now=T)
    assert re.fullmatch(r"ap_[a-z2-7]{10}", r.id)
    assert (r.created_us, r.expires_us, r.status) == (T, T + 60 * S, ApprovalStatus.PENDING)
    got = queue.get(r.id)
    assert got == r
    assert got.parameters == ("42", None)
    assert got.blast_radius == BlastRadius(12, None, "planner")
    assert queue.get(queue.create(held(parameters=None), now=T).id).parameters is None
    with pytest.raises(ApprovalNotFound):
        queue.get("ap_nosuchthing")


def test_ids_are_unique(queue: ApprovalStore) -> None:
    ids = {queue.create(held(), now=T).id for _ in range(50)}
    assert len(ids) == 50


def test_list_pending_oldest_first_and_other_statuses_newest_first(queue: ApprovalStore) -> None:
    a = queue.create(held(), now=T)
    b = queue.create(held(), now=T + S)
    c = queue.create(held(), now=T + 2 * S)
    queue.approve(c.id, "alice", ("dba",), now=T + 3 * S)
    due = queue.create(held(), now=T - 100 * S)  # already past its deadline, not swept
    assert [r.id for r in queue.list_requests(ApprovalStatus.PENDING, now=T + 4 * S)] == [a.id, b.id]
    assert [r.id for r in queue.list_requests(ApprovalStatus.APPROVED, now=T + 4 * S)] == [c.id]
    assert [r.id for r in queue.list_requests(ApprovalStatus.EXPIRED, now=T + 4 * S)] == [due.id]
    assert [r.id for r in queue.list_requests(now=T + 4 * S)] == [c.id, b.id, a.id, due.id]
    assert len(queue.list_requests(limit=2, now=T)) == 2
    assert queue.get(due.id).effective(T).status is ApprovalStatus.EXPIRED


def test_set_blast_radius(queue: ApprovalStore) -> None:
    r = queue.create(held(blast_radius=BlastRadius()), now=T)
    assert queue.set_blast_radius(r.id, BlastRadius(1000, 998, "counted in a rolled-back transaction")
                                  ).blast_radius.exact_rows == 998


# -- decisions -----------------------------------------------------------------------------------


def test_approve_records_who_when_why_and_starts_the_grant(queue: ApprovalStore) -> None:
    r = queue.create(held(), now=T)
    done = queue.approve(r.id, "alice", ("dba",), "checked with the owner", now=T + 5 * S)
    assert (done.status, done.decided_by, done.decided_us, done.reason) == (
        ApprovalStatus.APPROVED, "alice", T + 5 * S, "checked with the owner")
    assert done.expires_us == T + 5 * S + 60 * S  # the grant's end
    assert queue.get(r.id) == done


def test_deny_needs_a_reason(queue: ApprovalStore) -> None:
    r = queue.create(held(), now=T)
    with pytest.raises(ValueError, match="reason"):
        queue.deny(r.id, "alice", ("dba",), "  ", now=T)
    done = queue.deny(r.id, "alice", ("dba",), "not during business hours", now=T + S)
    assert (done.status, done.reason) == (ApprovalStatus.DENIED, "not during business hours")


@pytest.mark.parametrize("first", [Verdict.APPROVE, Verdict.DENY])
def test_a_decided_request_cannot_be_decided_again(queue: ApprovalStore, first: Verdict) -> None:
    r = queue.create(held(), now=T)
    queue.decide(r.id, first, "alice", ("dba",), "first", now=T + S)
    for verdict in Verdict:
        with pytest.raises(DecisionRefused) as e:
            queue.decide(r.id, verdict, "bob", ("dba",), "second", now=T + 2 * S)
        assert e.value.code is Refusal.NOT_PENDING
        assert "already" in str(e.value)
        assert "alice" in str(e.value)
    assert queue.get(r.id).decided_by == "alice"


def test_the_requesting_identity_can_never_decide(queue: ApprovalStore) -> None:
    r = queue.create(held(approvers=()), now=T)
    for verdict in Verdict:
        with pytest.raises(DecisionRefused) as e:
            queue.decide(r.id, verdict, "copilot", ("dba",), "mine", now=T + S)
        assert e.value.code is Refusal.SELF_APPROVAL
    assert queue.get(r.id).status is ApprovalStatus.PENDING


def test_approver_roles(queue: ApprovalStore) -> None:
    r = queue.create(held(approvers=("dba", "oncall")), now=T)
    with pytest.raises(DecisionRefused) as e:
        queue.approve(r.id, "bob", ("developers",), now=T + S)
    assert e.value.code is Refusal.NOT_AN_APPROVER
    assert "dba or oncall" in str(e.value)
    with pytest.raises(DecisionRefused):
        queue.deny(r.id, "bob", (), "no", now=T + S)
    assert queue.approve(r.id, "carol", ("developers", "oncall"), now=T + S).status is ApprovalStatus.APPROVED
    open_to_all = queue.create(held(approvers=()), now=T)
    assert queue.approve(open_to_all.id, "bob", (), now=T + S).decided_by == "bob"


def test_deciding_after_the_deadline_expires_it_and_says_so(queue: ApprovalStore) -> None:
    r = queue.create(held(), now=T)
    with pytest.raises(DecisionRefused) as e:
        queue.approve(r.id, "alice", ("dba",), now=T + 61 * S)
    assert e.value.code is Refusal.EXPIRED
    assert "expired" in str(e.value)
    assert "nothing was approved" in str(e.value)
    stored = queue.get(r.id)
    assert stored.status is ApprovalStatus.EXPIRED
    assert stored.decided_by == ""
    with pytest.raises(DecisionRefused) as again:
        queue.approve(r.id, "alice", ("dba",), now=T + 62 * S)
    assert again.value.code is Refusal.NOT_PENDING
    assert [ev.event.value for ev in approval_events(queue)] == ["requested", "expired"]


def test_unknown_id(queue: ApprovalStore) -> None:
    with pytest.raises(ApprovalNotFound):
        queue.approve("ap_zzzzzzzzzz", "alice", ("dba",))


def test_two_concurrent_deciders_exactly_one_wins(open_queue: Callable[..., ApprovalStore]) -> None:
    setup = open_queue()
    ids = [setup.create(held(approvers=())).id for _ in range(8)]
    queues = [open_queue(), open_queue()]
    results: dict[str, list[str]] = {i: [] for i in ids}
    lock = threading.Lock()

    def decider(q: ApprovalStore, name: str, verdict: Verdict, barrier: threading.Barrier) -> None:
        for approval_id in ids:
            barrier.wait(10)
            try:
                q.decide(approval_id, verdict, name, (), "racing")
                outcome = f"{name}:won"
            except DecisionRefused as e:
                outcome = f"{name}:{e.code.value}"
            with lock:
                results[approval_id].append(outcome)

    barrier = threading.Barrier(2)
    threads = [threading.Thread(target=decider, args=(queues[0], "alice", Verdict.APPROVE, barrier)),
               threading.Thread(target=decider, args=(queues[1], "bob", Verdict.DENY, barrier))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    for approval_id, outcomes in results.items():
        assert sorted(o.split(":")[1] for o in outcomes) == ["not-pending", "won"], outcomes
        winner = next(o.split(":")[0] for o in outcomes if o.endswith(":won"))
        stored = setup.get(approval_id)
        assert stored.decided_by == winner
        assert stored.status is (ApprovalStatus.APPROVED if winner == "alice" else ApprovalStatus.DENIED)
    decided = [e for e in approval_events(setup) if e.event.value in ("approved", "denied")]
    assert sorted(e.approval_id for e in decided) == sorted(ids)  # one decision event each
    assert setup.store.verify(HASHER).ok


# -- grants ----------------------------------------------------------------------------------------


def test_consume_exactly_once(queue: ApprovalStore) -> None:
    r = queue.create(held(), now=T)
    with pytest.raises(DecisionRefused) as pending:
        queue.consume(r.id, now=T + S)
    assert pending.value.code is Refusal.NOT_APPROVED
    queue.approve(r.id, "alice", ("dba",), now=T + S)
    used = queue.consume(r.id, now=T + 2 * S)
    assert (used.status, used.used_us) == (ApprovalStatus.USED, T + 2 * S)
    assert queue.get(r.id).status is ApprovalStatus.USED
    with pytest.raises(DecisionRefused) as twice:
        queue.consume(r.id, now=T + 3 * S)
    assert twice.value.code is Refusal.NOT_APPROVED
    assert "already used" in str(twice.value)
    denied = queue.create(held(), now=T)
    queue.deny(denied.id, "alice", ("dba",), "no", now=T + S)
    with pytest.raises(DecisionRefused):
        queue.consume(denied.id, now=T + 2 * S)


def test_a_grant_ends(queue: ApprovalStore) -> None:
    r = queue.create(held(), now=T)
    queue.approve(r.id, "alice", ("dba",), now=T + S)
    with pytest.raises(DecisionRefused) as e:
        queue.consume(r.id, now=T + 62 * S)
    assert e.value.code is Refusal.GRANT_EXPIRED


def test_concurrent_consumers_use_a_grant_once(open_queue: Callable[..., ApprovalStore]) -> None:
    setup = open_queue()
    r = setup.create(held())
    setup.approve(r.id, "alice", ("dba",))
    queues = [open_queue() for _ in range(4)]
    barrier = threading.Barrier(len(queues))
    wins: list[int] = []

    def use(q: ApprovalStore) -> None:
        barrier.wait(10)
        try:
            q.consume(r.id)
            wins.append(1)
        except DecisionRefused:
            pass

    threads = [threading.Thread(target=use, args=(q,)) for q in queues]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert wins == [1]


def test_retry_mode_lookups(queue: ApprovalStore) -> None:
    r = queue.create(held(), now=T)
    assert queue.find("copilot", r.sql, ("42",), ApprovalStatus.PENDING, now=T + S) == r
    assert queue.find("copilot", r.sql, ("43",), ApprovalStatus.PENDING, now=T + S) is None
    assert queue.find("other", r.sql, ("42",), ApprovalStatus.PENDING, now=T + S) is None
    assert queue.find("copilot", r.sql, ("42",), ApprovalStatus.APPROVED, now=T + S) is None
    queue.approve(r.id, "alice", ("dba",), now=T + S)
    grant = queue.find("copilot", r.sql, ("42",), ApprovalStatus.APPROVED, now=T + 2 * S)
    assert grant is not None
    assert grant.id == r.id
    queue.consume(r.id, now=T + 3 * S)
    assert queue.find("copilot", r.sql, ("42",), ApprovalStatus.APPROVED, now=T + 4 * S) is None


# -- expiry --------------------------------------------------------------------------------------


def test_expire_due(open_queue: Callable[..., ApprovalStore]) -> None:
    queue = open_queue()
    due = queue.create(held(), now=T)
    later = queue.create(held(), now=T + 30 * S)
    decided = queue.create(held(), now=T)
    queue.approve(decided.id, "alice", ("dba",), now=T + S)
    expired = queue.expire_due(now=T + 61 * S)
    assert [r.id for r in expired] == [due.id]
    assert expired[0].reason.startswith("timed out")
    assert open_queue().expire_due(now=T + 61 * S) == []  # another proxy's sweep: nothing left
    assert queue.get(due.id).status is ApprovalStatus.EXPIRED
    assert queue.get(later.id).status is ApprovalStatus.PENDING
    assert queue.get(decided.id).status is ApprovalStatus.APPROVED


def test_expire_session(queue: ApprovalStore) -> None:
    mine = queue.create(held(session_id="s-dead"), now=T)
    other = queue.create(held(session_id="s-alive"), now=T)
    assert [r.id for r in queue.expire_session("s-dead", "the client disconnected", now=T + S)] == [mine.id]
    assert queue.get(mine.id).reason == "the client disconnected"
    assert queue.get(other.id).status is ApprovalStatus.PENDING
    with pytest.raises(DecisionRefused) as e:
        queue.approve(mine.id, "alice", ("dba",), now=T + 2 * S)
    assert e.value.code is Refusal.NOT_PENDING


# -- the journal ---------------------------------------------------------------------------------


def test_every_change_is_journaled_and_the_chain_verifies(queue: ApprovalStore) -> None:
    fill(queue.store, HASHER, session_events("s-0001", "copilot"))
    a = queue.create(held(), now=T)
    b = queue.create(held(), now=T)
    c = queue.create(held(), now=T)
    queue.approve(a.id, "alice", ("dba",), "ok", now=T + S)
    queue.deny(b.id, "alice", ("dba",), "too many rows", now=T + S)
    queue.expire_due(now=T + 100 * S)
    with pytest.raises(DecisionRefused):
        queue.approve(a.id, "bob", ("dba",), now=T + 2 * S)  # refused: nothing journaled
    events = approval_events(queue)
    assert [(e.approval_id, e.event.value, e.by, e.reason) for e in events] == [
        (a.id, "requested", "copilot", ""),
        (b.id, "requested", "copilot", ""),
        (c.id, "requested", "copilot", ""),
        (a.id, "approved", "alice", "ok"),
        (b.id, "denied", "alice", "too many rows"),
        (c.id, "expired", "", events[-1].reason),
    ]
    assert all((e.session_id, e.statement_seq) == ("s-0001", 7) for e in events)
    report = queue.store.verify(HASHER)
    assert report.ok, report.problems
    assert report.checked == len(session_events()) + 6


def test_without_a_hasher_nothing_is_journaled(open_queue: Callable[..., ApprovalStore]) -> None:
    queue = open_queue(hasher=None)
    queue.approve(queue.create(held()).id, "alice", ("dba",))
    assert approval_events(queue) == []


def test_a_decision_with_the_wrong_key_is_not_made(open_queue: Callable[..., ApprovalStore]) -> None:
    from dbguard.journal import StoreError

    queue = open_queue()
    r = queue.create(held())
    wrong = open_queue(hasher=ChainHasher(b"another key that is long enough"))
    with pytest.raises(StoreError):
        wrong.approve(r.id, "alice", ("dba",))
    assert queue.get(r.id).status is ApprovalStatus.PENDING  # rolled back with the journal event


# -- schema and wake-ups ----------------------------------------------------------------------------


def test_migrations_are_recorded_once(open_queue: Callable[..., ApprovalStore], backend: QueueBackend) -> None:
    queue = open_queue()
    assert queue.schema_version() == CURRENT_APPROVALS_SCHEMA_VERSION
    assert queue.migrate() == []
    assert open_queue().migrate() == []
    rows = queue.store.query("SELECT version FROM approval_migrations ORDER BY version")
    assert [int(r[0]) for r in rows] == list(range(1, CURRENT_APPROVALS_SCHEMA_VERSION + 1))
    assert queue.store.schema_version() >= 2  # the journal's own schema, untouched


def test_a_reader_without_migrate_creates_nothing(backend: QueueBackend) -> None:
    with ApprovalStore(backend.open(), migrate=False, owns_store=True) as q:
        assert q.schema_version() == 0
        assert not q.store.table_exists("approval_requests")


def test_wait_for_update_wakes_on_another_process_change(open_queue: Callable[..., ApprovalStore]) -> None:
    watcher = open_queue()
    writer = open_queue()
    assert watcher.wait_for_update(0.3) is False
    timer = threading.Timer(0.3, lambda: writer.create(held()))
    timer.start()
    try:
        assert watcher.wait_for_update(10) is True
    finally:
        timer.join()
    assert watcher.wait_for_update(0.2) is False  # seen
    r = writer.list_requests(ApprovalStatus.PENDING)[0]
    writer.approve(r.id, "alice", ("dba",))
    assert watcher.wait_for_update(5) is True
