# tests/unit/test_journal_chain.py — the verifier on in-memory chains, no store: every tamper
# case is found and named by sequence number and kind, one problem per tampering (no cascade),
# with and without renumbering, keyed and not.
from __future__ import annotations

from dataclasses import replace

import pytest

from dbguard.journal import ChainHasher, StoredEvent
from dbguard.journal.chain import GENESIS, GENESIS_HASH, Anchor, verify_events
from dbguard.journal.events import StatementEvent, canonical_bytes
from tests.unit.journal_helpers import KEY, T0, session_events


def chain(hasher: ChainHasher, count: int = 12) -> list[StoredEvent]:
    events = (session_events(statements=count))[:count]
    out: list[StoredEvent] = []
    prev = GENESIS_HASH
    for seq, event in enumerate(events, 1):
        payload = canonical_bytes(event)
        digest = hasher.link(prev, seq, payload)
        out.append(StoredEvent(seq, event.time_us, event.kind.value, event.session_id, payload, prev, digest))
        prev = digest
    return out


def head(events: list[StoredEvent]) -> Anchor:
    return Anchor(events[-1].seq, events[-1].hash)


def renumber(events: list[StoredEvent]) -> list[StoredEvent]:
    return [replace(e, seq=i) for i, e in enumerate(events, 1)]


def forged_at(events: list[StoredEvent], seq: int, hasher: ChainHasher) -> StoredEvent:
    payload = canonical_bytes(StatementEvent("s-0001", T0 + 1, 99, "DELETE FROM audit_log", "allow"))
    prev = events[seq - 2].hash
    return StoredEvent(seq, T0 + 1, "statement", "s-0001", payload, prev, hasher.link(prev, seq, payload))


HASHERS = [pytest.param(ChainHasher(), id="sha256"), pytest.param(ChainHasher(KEY), id="hmac")]


def problems(events: list[StoredEvent], hasher: ChainHasher, end: Anchor | None = None) -> list[tuple[int, str]]:
    return [(p.seq, p.problem) for p in verify_events(events, hasher, GENESIS, head=end).problems]


@pytest.mark.parametrize("hasher", HASHERS)
def test_clean(hasher: ChainHasher) -> None:
    events = chain(hasher)
    report = verify_events(events, hasher, head=head(events))
    assert report.ok
    assert report.checked == 12
    assert report.last_seq == 12


@pytest.mark.parametrize("hasher", HASHERS)
def test_edit(hasher: ChainHasher) -> None:
    events = chain(hasher)
    events[3] = replace(events[3], payload=events[3].payload.replace(b"SELECT", b"DELETE"))
    assert problems(events, hasher, head(events)) == [(4, "edited")]


def test_edit_rehashed_without_key_names_the_event() -> None:
    events = chain(ChainHasher())
    payload = events[3].payload.replace(b"SELECT", b"DELETE")
    assert payload != events[3].payload
    events[3] = replace(events[3], payload=payload, hash=ChainHasher().link(events[3].prev_hash, 4, payload))
    assert problems(events, ChainHasher(), None) == [(4, "edited")]


@pytest.mark.parametrize("hasher", HASHERS)
def test_delete(hasher: ChainHasher) -> None:
    events = chain(hasher)
    end = head(events)
    del events[6]
    assert problems(events, hasher, end) == [(7, "deleted")]


@pytest.mark.parametrize("hasher", HASHERS)
def test_delete_renumbered(hasher: ChainHasher) -> None:
    events = chain(hasher)
    del events[6]
    events = renumber(events)
    assert problems(events, hasher) == [(7, "deleted")]


@pytest.mark.parametrize("hasher", HASHERS)
def test_delete_tail(hasher: ChainHasher) -> None:
    events = chain(hasher)
    end = head(events)
    assert problems(events[:-2], hasher, end) == [(11, "deleted")]


@pytest.mark.parametrize("forger", [ChainHasher(), ChainHasher(b"guessed-key-guessed")], ids=["sha256", "guess"])
@pytest.mark.parametrize("hasher", HASHERS)
def test_insert_renumbered(hasher: ChainHasher, forger: ChainHasher) -> None:
    events = chain(hasher)
    forged = forged_at(events, 5, forger)
    events = events[:4] + [forged] + [replace(e, seq=e.seq + 1) for e in events[4:]]
    assert problems(events, hasher)[0] == (5, "inserted")
    assert len(problems(events, hasher)) == 1


@pytest.mark.parametrize("hasher", HASHERS)
def test_insert_appended_after_head(hasher: ChainHasher) -> None:
    events = chain(hasher)
    end = head(events)
    extra = forged_at([*events, events[-1]], 13, hasher)
    assert problems([*events, extra], hasher, end) == [(13, "inserted")]


@pytest.mark.parametrize("hasher", HASHERS)
def test_reorder_rows(hasher: ChainHasher) -> None:
    events = chain(hasher)
    events[5], events[6] = replace(events[6], seq=6), replace(events[5], seq=7)
    found = problems(events, hasher, head(events))
    assert found[0] == (6, "reordered")
    assert {p for _, p in found} == {"reordered"}


@pytest.mark.parametrize("hasher", HASHERS)
def test_reorder_lines(hasher: ChainHasher) -> None:
    events = chain(hasher)
    events[5], events[6] = events[6], events[5]
    assert problems(events, hasher, head(events)) == [(6, "reordered")]


def test_anchor_mismatch_is_named() -> None:
    events = chain(ChainHasher())[4:]
    report = verify_events(events, ChainHasher(), Anchor(4, "ab" * 32))
    assert [(p.seq, p.problem) for p in report.problems] == [(4, "edited")]
    assert verify_events(events, ChainHasher(), Anchor(4, events[0].prev_hash)).ok


def test_key_mismatch_explained() -> None:
    assert ChainHasher().check_matches("hmac-sha256", "x") is not None
    assert "another key" in (ChainHasher(KEY).check_matches("hmac-sha256", "0000") or "")
    assert ChainHasher(KEY).check_matches("hmac-sha256", ChainHasher(KEY).key_id) is None
    with pytest.raises(ValueError, match="empty"):
        ChainHasher(b"")


@pytest.mark.parametrize("key", [None, KEY], ids=["sha256", "hmac"])
@pytest.mark.parametrize("start", [GENESIS_HASH, "ab" * 32, "not a hash"])
def test_links_of_a_batch_are_each_events_link(key: bytes | None, start: str) -> None:
    """The appender chains a batch at once; every hash must be what `link` gives one by one."""
    hasher = ChainHasher(key)
    payloads = [canonical_bytes(event) for event in session_events()]
    expected, previous = [], start
    for seq, payload in enumerate(payloads, 41):
        previous = hasher.link(previous, seq, payload)
        expected.append(previous)
    assert hasher.links(start, 41, payloads) == expected
    assert hasher.links(start, 41, []) == []
