# dbguard/journal/chain.py — owns the hash chain: how one stored event's hash is computed from
# the previous hash, its global sequence number and its canonical bytes (SHA-256, or
# HMAC-SHA256 with a configured key), the genesis hash, and verification of a run of stored
# events that names every edited, deleted, inserted or reordered event. It must not know
# where events are stored (stores and exports feed it StoredEvent records).
from __future__ import annotations

import enum
import hashlib
import hmac
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Final

from dbguard.journal.events import EncodingError, JournalEvent, decode_event

__all__ = [
    "GENESIS_HASH",
    "Anchor",
    "ChainAlgorithm",
    "ChainHasher",
    "ChainProblem",
    "StoredEvent",
    "VerifyReport",
    "verify_events",
]

# The prev_hash of the very first event of a journal: 64 zeros (no event before it).
GENESIS_HASH: Final = "0" * 64
_KEY_ID_LABEL: Final = b"dbguard journal key id v1"


class ChainAlgorithm(enum.StrEnum):
    SHA256 = "sha256"
    HMAC_SHA256 = "hmac-sha256"


@dataclass(frozen=True, slots=True)
class Anchor:
    """Where a verifiable run starts: the event before it (seq 0 and GENESIS_HASH at the start
    of a journal, the last pruned event after a prune, the event before an exported slice)."""

    seq: int
    hash: str


GENESIS: Final = Anchor(0, GENESIS_HASH)


@dataclass(frozen=True, slots=True)
class StoredEvent:
    """One event as stored: its place in the chain and its canonical bytes."""

    seq: int
    time_us: int
    kind: str
    session_id: str
    payload: bytes
    prev_hash: str
    hash: str
    # In an export filtered by identity or decision, an event outside the filter keeps its
    # place in the chain (seq, prev_hash, hash) without its content: its link is checked, its
    # own hash cannot be.
    omitted: bool = False

    def event(self) -> JournalEvent:
        return decode_event(self.payload)


class ChainHasher:
    """Computes links: hash = H(prev_hash ‖ seq ‖ canonical bytes), H = SHA-256 or HMAC-SHA256.

    The message is the 32 raw bytes of prev_hash, the sequence number as 8 bytes big-endian,
    then the canonical bytes. Binding the sequence number makes a moved event fail its own
    hash, not only its successor's link. With a key, nobody without it can compute a link, so
    write access to the store is not enough to rebuild the chain after an edit.
    """

    __slots__ = ("_key", "algorithm", "key_id")

    def __init__(self, key: bytes | None = None) -> None:
        if key is not None and len(key) == 0:
            raise ValueError("an HMAC key must not be empty")
        self._key = key
        self.algorithm: Final = ChainAlgorithm.SHA256 if key is None else ChainAlgorithm.HMAC_SHA256
        # A short public fingerprint of the key, so a wrong key is named as such.
        self.key_id: Final = "" if key is None else hmac.new(key, _KEY_ID_LABEL, hashlib.sha256).hexdigest()[:16]

    @property
    def keyed(self) -> bool:
        return self._key is not None

    def link(self, prev_hash: str, seq: int, payload: bytes) -> str:
        message = _prev_bytes(prev_hash) + seq.to_bytes(8, "big", signed=False) + payload
        if self._key is None:
            return hashlib.sha256(message).hexdigest()
        return hmac.new(self._key, message, hashlib.sha256).hexdigest()

    def links(self, prev_hash: str, first_seq: int, payloads: Sequence[bytes]) -> list[str]:
        """`link` for consecutive events: the hash of each, chained from `prev_hash`."""
        if self._key is not None:
            out: list[str] = []
            for seq, payload in enumerate(payloads, first_seq):
                prev_hash = self.link(prev_hash, seq, payload)
                out.append(prev_hash)
            return out
        hashes: list[str] = []
        previous = _prev_bytes(prev_hash)
        sha256 = hashlib.sha256
        for seq, payload in enumerate(payloads, first_seq):
            previous = sha256(previous + seq.to_bytes(8, "big", signed=False) + payload).digest()
            hashes.append(previous.hex())
        return hashes

    def mac(self, data: bytes) -> str:
        """An HMAC of other data under the chain key (export headers); '' without a key."""
        if self._key is None:
            return ""
        return hmac.new(self._key, b"dbguard journal header v1\n" + data, hashlib.sha256).hexdigest()

    def check_matches(self, algorithm: str, key_id: str) -> str | None:
        """Why this hasher cannot verify a chain made with (algorithm, key_id), or None."""
        if algorithm not in {a.value for a in ChainAlgorithm}:
            return f"unknown chain algorithm {algorithm!r}"
        if algorithm == ChainAlgorithm.HMAC_SHA256 and self._key is None:
            return "the chain is keyed (hmac-sha256): give its key (journal.hmac_key, or $DBGUARD_JOURNAL_KEY)"
        if algorithm == ChainAlgorithm.SHA256 and self._key is not None:
            return ("the chain is not keyed (sha256) but a key was given: either the key was configured after "
                    "the journal was started (remove it to read this journal), or the store was altered")
        if key_id and self.key_id and key_id != self.key_id:
            return f"the chain was made with another key (key id {key_id}, this key's id is {self.key_id})"
        return None


def _prev_bytes(prev_hash: str) -> bytes:
    try:
        raw = bytes.fromhex(prev_hash)
    except ValueError:
        raw = b""
    if len(raw) != 32:
        # A malformed stored prev_hash still gets a deterministic (and so non-matching) link.
        return hashlib.sha256(b"malformed " + prev_hash.encode("utf-8", "replace")).digest()
    return raw


@dataclass(frozen=True, slots=True)
class ChainProblem:
    """One thing wrong, at the event with sequence number `seq`."""

    seq: int
    problem: str  # edited | deleted | inserted | reordered | truncated | malformed
    message: str

    def __str__(self) -> str:
        return f"event {self.seq}: {self.message}"


@dataclass(slots=True)
class VerifyReport:
    """The result of checking a run of events against its anchor (and expected end)."""

    anchor: Anchor
    checked: int = 0
    first_seq: int | None = None
    last_seq: int | None = None
    last_hash: str = ""
    problems: list[ChainProblem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


# How far a moved event is looked for (by its recorded sequence number) when its hash does
# not match its place: enough for swaps and small insertions/deletions with renumbering.
_MOVE_WINDOW: Final = 16
# How many recent hashes are remembered to explain a broken link (bounded memory).
_SEEN_WINDOW: Final = 4096


def verify_events(
    events: Iterable[StoredEvent],
    hasher: ChainHasher,
    anchor: Anchor = GENESIS,
    *,
    head: Anchor | None = None,
    contiguous: bool = True,
    decode: bool = True,
) -> VerifyReport:
    """Check `events` (in the order given) link up from `anchor`, and end at `head` if given.

    Each problem is named by sequence number and classified (edited, deleted, inserted,
    reordered). After a problem the check goes on from the stored values, so one edited
    event yields one problem, not a cascade. `contiguous=False` checks each event's own hash
    only (slices whose gaps the caller accounts for).
    """
    return _Verifier(hasher, anchor, contiguous, decode).run(events, head)


class _OutOfOrder(Exception):
    """An event whose sequence number is not after the previous one's: reported, then skipped."""


class _Verifier:
    def __init__(self, hasher: ChainHasher, anchor: Anchor, contiguous: bool, decode: bool) -> None:
        self.hasher = hasher
        self.contiguous = contiguous
        self.decode = decode
        self.report = VerifyReport(anchor)
        self.prev_seq, self.prev_hash = anchor.seq, anchor.hash
        self.seen: OrderedDict[str, int] = OrderedDict({anchor.hash: anchor.seq})
        self.shift = 0  # renumbering already explained by a reported insertion or deletion
        self.flagged: dict[int, str] = {}  # seq -> its problem ("explained": renumbered, no problem of its own)
        self.pending_deleted: dict[int, int] = {}
        self.gaps: dict[int, int] = {}  # a single missing seq -> index of its "deleted" problem

    def add(self, seq: int, problem: str, message: str) -> int:
        self.report.problems.append(ChainProblem(seq, problem, message))
        self.flagged[seq] = problem
        return len(self.report.problems) - 1

    def recorded_seq(self, ev: StoredEvent) -> int | None:
        """The sequence number this event's hash was made for, if it is near its place."""
        for distance in range(1, _MOVE_WINDOW + 1):
            for candidate in (ev.seq - distance, ev.seq + distance):
                if candidate > 0 and self.hasher.link(ev.prev_hash, candidate, ev.payload) == ev.hash:
                    return candidate
        return None

    def run(self, events: Iterable[StoredEvent], head: Anchor | None) -> VerifyReport:
        report = self.report
        for ev in events:
            report.checked += 1
            if report.first_seq is None:
                report.first_seq = ev.seq
            try:
                self.one(ev)
            except _OutOfOrder:
                continue  # the chain goes on from the last event in order
            self.seen[ev.hash] = ev.seq
            if len(self.seen) > _SEEN_WINDOW:
                self.seen.popitem(last=False)
            self.prev_seq, self.prev_hash = ev.seq, ev.hash
            report.last_seq, report.last_hash = ev.seq, ev.hash
        if head is not None and self.contiguous:
            self.check_head(head)
        report.problems.sort(key=lambda p: p.seq)
        return report

    def one(self, ev: StoredEvent) -> None:
        own_ok = ev.omitted or self.hasher.link(ev.prev_hash, ev.seq, ev.payload) == ev.hash
        recorded = None if own_ok else self.recorded_seq(ev)
        link_ok = True
        if self.contiguous:
            if ev.seq <= self.prev_seq:
                index = self.gaps.pop(ev.seq, None)
                if index is not None:
                    # The event reported missing comes later: lines or rows were swapped.
                    self.report.problems[index] = ChainProblem(
                        ev.seq, "reordered", f"out of order: comes after event {self.prev_seq} (reordered)"
                    )
                else:
                    self.add(ev.seq, "reordered",
                             f"out of order: comes after event {self.prev_seq} (reordered or duplicated)")
                if not own_ok and recorded is None:
                    self.add(ev.seq, "edited", "content or sequence number changed: its hash does not match (edited)")
                raise _OutOfOrder
            if ev.seq > self.prev_seq + 1:
                gap = str(self.prev_seq + 1) if ev.seq == self.prev_seq + 2 else f"{self.prev_seq + 1}..{ev.seq - 1}"
                index = self.add(self.prev_seq + 1, "deleted",
                                 f"missing: event {gap} before event {ev.seq} is gone (deleted)")
                if ev.seq == self.prev_seq + 2:
                    self.gaps[self.prev_seq + 1] = index
            else:
                link_ok = ev.prev_hash == self.prev_hash
        if recorded is not None and recorded in self.pending_deleted:
            # The event reported missing shows up later: the two were swapped, not deleted.
            index = self.pending_deleted.pop(recorded)
            first = self.report.problems[index].seq
            self.report.problems[index] = ChainProblem(
                first, "reordered", f"out of place: event {recorded} was moved to position {ev.seq} (reordered)"
            )
            self.flagged[ev.seq] = "explained"
            self.shift = 0
            return
        if not link_ok and self.link_problem(ev, recorded):
            return
        if own_ok:
            if not ev.omitted:
                self.check_columns(ev)
        elif recorded is None:
            self.add(ev.seq, "edited", "content or sequence number changed: its hash does not match (edited)")
        elif ev.seq - recorded != self.shift:
            self.add(ev.seq, "reordered", f"out of place: its hash was made for position {recorded} (reordered)")
        else:
            self.flagged[ev.seq] = "explained"  # renumbered by an insertion or deletion already reported

    def link_problem(self, ev: StoredEvent, recorded: int | None) -> bool:
        """Explain a prev_hash that is not the previous event's hash; True when `ev` is done."""
        linked = self.seen.get(ev.prev_hash)
        before = self.flagged.get(self.prev_seq)
        if linked == self.prev_seq - 1 and before in (None, "edited") and recorded in (None, ev.seq - 1):
            self._replace_at(self.prev_seq, "inserted",
                             f"inserted: not part of the chain (event {ev.seq} links to event {linked}, "
                             "the one before it)")
            if recorded is not None:
                self.shift = ev.seq - recorded
                self.flagged[ev.seq] = "explained"
                return True
            return False
        if before is not None:
            return False  # already explained by the problem at the previous event
        if recorded is not None and recorded > ev.seq and linked is None:
            self.pending_deleted[recorded - 1] = self.add(
                ev.seq, "deleted",
                f"missing: the event here was recorded as event {recorded}; {recorded - ev.seq} event(s) before it "
                "were deleted and the rest renumbered",
            )
            self.shift = ev.seq - recorded
            return True
        if linked is not None:
            self.add(ev.seq, "reordered",
                     f"its prev_hash is the hash of event {linked}, not of event {self.prev_seq} (reordered)")
        else:
            self._replace_at(self.prev_seq, "edited",
                             f"replaced: event {ev.seq} was chained to a different event {self.prev_seq} "
                             "(edited and re-hashed)")
        return False

    def _replace_at(self, seq: int, problem: str, message: str) -> None:
        kept = [p for p in self.report.problems if p.seq != seq]
        if len(kept) != len(self.report.problems):
            self.report.problems = kept
            self.pending_deleted.clear()
            self.gaps.clear()
        self.add(seq, problem, message)

    def check_columns(self, ev: StoredEvent) -> None:
        if not self.decode:
            return
        try:
            decoded = decode_event(ev.payload)
        except EncodingError as e:
            self.add(ev.seq, "malformed", f"hash matches but the event cannot be read: {e}")
            return
        if decoded.kind.value != ev.kind or decoded.time_us != ev.time_us or decoded.session_id != ev.session_id:
            self.add(ev.seq, "edited", "its indexed columns (kind, time, session) disagree with its content (edited)")

    def check_head(self, head: Anchor) -> None:
        last_seq, last_hash = self.prev_seq, self.prev_hash
        if (last_seq, last_hash) == (head.seq, head.hash):
            return
        if head.seq > last_seq:
            self.add(last_seq + 1, "deleted",
                     f"missing: the chain head says the last event is {head.seq}, but the events end at "
                     f"{last_seq} (deleted)")
        elif head.seq < last_seq:
            self.add(head.seq + 1, "inserted",
                     f"inserted: the chain head says the last event is {head.seq}, but the events go on to {last_seq}")
        elif head.seq not in self.flagged:
            self.add(head.seq, "edited", "its hash differs from the one the chain head recorded (edited)")
