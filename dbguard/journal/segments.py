# dbguard/journal/segments.py — owns the write-ahead segment files of a sqlite journal store:
# where they live (`<store file>-segments/`, owner-only), the record format (length, CRC-32,
# the event's canonical bytes, with the store's columns before them for the events of every
# statement), appending records (through a shared memory map of space allocated up front, or
# one write() per batch) under an
# exclusive flock held for the life of the file, reading records back up to the first torn
# one, the ingest mark (how far a segment is in the store: a journal_meta row written in the
# same transaction as the events, see JournalStore.append_batch), and recovering the segments
# a stopped or killed proxy left behind. A segment is the durable record of a statement until
# its events are in the store, exactly as sqlite's own WAL is for a commit (survives a crash
# of the process; with `journal.sync: normal`, not a power loss). It must not know sessions
# or the event loop (runtime/loop_journal.py drives it).
from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import mmap
import os
import struct
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Final, NamedTuple

from dbguard.journal.chain import ChainHasher
from dbguard.journal.events import EncodingError
from dbguard.journal.store import EncodedEvent, JournalStore, MarkMoved, StoreError, encoded_from_payload

__all__ = [
    "SEGMENT_SUFFIX",
    "Segment",
    "SegmentRecord",
    "UnreadableRecord",
    "append_segment",
    "event_of_record",
    "frame",
    "frame_event",
    "maps_safely",
    "mark_name",
    "read_segment",
    "recover_segments",
    "segment_directory",
]

log = logging.getLogger("dbguard.journal")

SEGMENT_SUFFIX: Final = ".seg"
# Record header: length of the payload, CRC-32 of the payload.
_HEADER: Final = struct.Struct("!II")
# Events appended to the store per transaction when recovering.
_RECOVERY_BATCH: Final = 5000
# A segment's records are copied into a shared memory map of the file where space can be
# allocated up front (posix_fallocate, MAP_CHUNK at a time) and storing into an allocated,
# mapped page cannot fail later: a memory copy instead of a write() per hand-over (the two
# write()s of a pgbench -S transaction cost the loop ~10 µs in situ, the copies ~4 µs less
# overall: docs/performance.md), as durable against a crash of the process (the page cache
# holds the pages either way). Copy-on-write file systems (btrfs) may need space when a
# mapped page is first stored to and then raise SIGBUS, and network file systems are not
# trusted either: those get write(). So does a segment whose next chunk cannot be allocated
# (a full disk): write() then fails with an error, not a signal.
MAP_CHUNK: Final = 4 * 1024 * 1024
MAPPED_FILESYSTEMS: Final = frozenset({"ext4", "xfs", "tmpfs"})


def segment_directory(store_path: Path) -> Path:
    """Where the segments of the sqlite store at `store_path` live."""
    return store_path.with_name(store_path.name + "-segments")


def frame(payload: bytes) -> bytes:
    """One record: what `read_segment` gives back as the payload."""
    return _HEADER.pack(len(payload), zlib.crc32(payload)) + payload


# A record's payload is an event's canonical bytes (a JSON object: it begins with "{"), or,
# for a statement or outcome event the session encoded itself (`EncodedEvent` without an
# event object), the store's columns first: _COLUMNS (mark, kind, the lengths of the session
# id and of the action), those two texts, _NUMBERS (time_us, stmt_seq), then the canonical
# bytes. The appender takes the columns from there instead of reading the JSON; `journal
# verify` checks that the stored columns agree with the event's content, as for every event.
_COLUMNS: Final = struct.Struct("!BBBB")
_NUMBERS: Final = struct.Struct("!qq")
_COLUMNS_MARK: Final = 1
_KIND_CODES: Final = {"statement": 1, "outcome": 2}
_CODE_KINDS: Final = {code: kind for kind, code in _KIND_CODES.items()}
# The part before the numbers, per (kind, session id, action): the same for every statement
# of a session.
_PREFIXES: dict[tuple[str, str, str], bytes | None] = {}
_PREFIXES_MAX: Final = 4096
_UNKNOWN: Final = b"unknown"  # (by identity: not in _PREFIXES yet)


def _prefix(kind: str, session_id: str, action: str) -> bytes | None:
    code = _KIND_CODES.get(kind)
    session = session_id.encode("utf-8", "surrogatepass")
    action_bytes = action.encode("utf-8", "surrogatepass")
    prefix = None
    if code is not None and len(session) <= 255 and len(action_bytes) <= 255:
        prefix = _COLUMNS.pack(_COLUMNS_MARK, code, len(session), len(action_bytes)) + session + action_bytes
    if len(_PREFIXES) >= _PREFIXES_MAX:
        _PREFIXES.clear()
    _PREFIXES[(kind, session_id, action)] = prefix
    return prefix


def frame_event(event: EncodedEvent) -> bytes:
    """One record of an encoded event, with its columns when it is a statement or outcome."""
    key = (event.kind, event.session_id, event.action)
    prefix = _PREFIXES.get(key, _UNKNOWN)
    if prefix is _UNKNOWN:
        prefix = _prefix(*key)
    if prefix is None or event.stmt_seq is None:
        return frame(event.payload)
    payload = prefix + _NUMBERS.pack(event.time_us, event.stmt_seq) + event.payload
    return _HEADER.pack(len(payload), zlib.crc32(payload)) + payload


def event_of_record(payload: bytes) -> EncodedEvent:
    """The event a record holds, ready to append (its canonical bytes and the store's
    columns). Raises EncodingError for a record that is neither form."""
    if payload[:1] != b"\x01":
        return encoded_from_payload(payload)
    if len(payload) < _COLUMNS.size:
        raise EncodingError("a record's columns are cut short")
    _mark, code, session_length, action_length = _COLUMNS.unpack_from(payload)
    kind = _CODE_KINDS.get(code)
    numbers = _COLUMNS.size + session_length + action_length
    start = numbers + _NUMBERS.size
    if kind is None or len(payload) <= start or payload[start : start + 1] != b"{":
        raise EncodingError("a record's columns do not describe an event")
    time_us, stmt_seq = _NUMBERS.unpack_from(payload, numbers)
    try:
        session_id = payload[_COLUMNS.size : _COLUMNS.size + session_length].decode("utf-8", "surrogatepass")
        action = payload[_COLUMNS.size + session_length : numbers].decode("utf-8", "surrogatepass")
    except UnicodeDecodeError as exc:
        raise EncodingError(f"a record's columns are not text: {exc}") from None
    return EncodedEvent(kind, session_id, time_us, payload[start:], stmt_seq, action, None)


class SegmentRecord(NamedTuple):  # a tuple: the appender reads thousands a second
    payload: bytes
    end: int  # the offset just after this record


def read_segment(path: Path, start: int = 0, end: int | None = None) -> Iterator[SegmentRecord]:
    """The records of a segment from `start` (to `end`, when given: where its writer says its
    whole records end), up to the first torn or damaged one (a write cut by a crash: its
    statement was never forwarded, since a statement waits for its write)."""
    with path.open("rb") as file:
        file.seek(start)
        data = file.read() if end is None else file.read(max(0, end - start))
    pos = 0
    while len(data) - pos >= _HEADER.size:
        length, crc = _HEADER.unpack_from(data, pos)
        stop = pos + _HEADER.size + length
        payload = data[pos + _HEADER.size : stop]
        if length == 0:  # space allocated for records never written (a mapped segment's tail)
            return
        if stop > len(data) or zlib.crc32(payload) != crc:
            if end is None or stop <= len(data):  # a record cut at `end` is only not told yet
                log.warning("journal.segment_torn", extra={"segment": path.name, "offset": start + pos})
            return
        yield SegmentRecord(payload, start + stop)
        pos = stop


def filesystem_type(path: Path) -> str:
    """The type of the file system `path` is on (the longest mount point above it in
    /proc/self/mountinfo), '' when it cannot be told."""
    try:
        target = str(path.resolve())
        with open("/proc/self/mountinfo", encoding="utf-8", errors="replace") as file:
            lines = file.read().splitlines()
    except OSError:
        return ""
    best, found = -1, ""
    for line in lines:
        fields = line.split(" ")
        if len(fields) < 10 or "-" not in fields[6:]:
            continue
        mount = fields[4].replace("\\040", " ").replace("\\011", "\t").replace("\\012", "\n") \
            .replace("\\134", "\\")
        inside = target == mount or target.startswith(mount.rstrip("/") + "/")
        if inside and len(mount) > best:
            best, found = len(mount), fields[fields.index("-", 6) + 1]
    return found


def maps_safely(directory: Path) -> bool:
    """Whether segments in `directory` are written through a memory map (MAPPED_FILESYSTEMS)."""
    return filesystem_type(directory) in MAPPED_FILESYSTEMS


class Segment:
    """One segment file being written by this process (exclusively flocked while open).

    Mapped (`maps_safely`), the file holds allocated, zeroed space past `size` while open;
    readers stop at the first empty record header, and closing cuts the file back to `size`."""

    def __init__(self, directory: Path, name: str, *, mapped: bool = True) -> None:
        """`mapped`: through a memory map if `maps_safely(directory)`; False: write() only."""
        directory.mkdir(mode=0o700, exist_ok=True)
        self.name = name
        self.path = directory / name
        self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(self._fd)
            raise
        self.size = 0
        self._mappable = mapped and maps_safely(directory)
        self._map: mmap.mmap | None = None
        self._map_start = 0  # the file offset of the map's first byte
        self._map_end = 0  # the file offset after its last: the space allocated so far

    @property
    def mapped(self) -> bool:
        return self._map is not None

    def append(self, records: bytes) -> int:
        """Add `records` (one or more `frame`s); the segment's size after them. On a failed
        write the file is cut back to where it was, so no partial record stays in it."""
        size = self.size
        end = size + len(records)
        mapped = self._map
        if mapped is not None and end <= self._map_end:
            at = size - self._map_start
            mapped[at : at + len(records)] = records
            self.size = end
            return end
        if self._mappable and self._extend_map(end):
            assert self._map is not None
            at = size - self._map_start
            self._map[at : at + len(records)] = records
            self.size = end
            return end
        try:  # at `size`, whatever the file's length (what a failed _stop_mapping may have left)
            written = os.pwrite(self._fd, records, size)
            while written < len(records):  # a short write (a full disk, a signal): the rest, or an error
                more = os.pwrite(self._fd, memoryview(records)[written:], size + written)
                if more <= 0:
                    raise OSError(errno.ENOSPC, "the segment write made no progress")
                written += more
        except OSError:
            with contextlib.suppress(OSError):
                os.ftruncate(self._fd, self.size)
            raise
        self.size = end
        return end

    def _extend_map(self, end: int) -> bool:
        """Allocate whole chunks up to at least `end` and map them (from the page holding
        `size`). False, with the allocated tail cut off and write() from now on, when that
        fails (no space: write() will say so)."""
        allocated = max(self._map_end, self.size)
        new_end = -(-max(end, allocated + MAP_CHUNK) // MAP_CHUNK) * MAP_CHUNK
        start = self.size - self.size % mmap.ALLOCATIONGRANULARITY
        try:
            os.posix_fallocate(self._fd, allocated, new_end - allocated)
            new_map = mmap.mmap(self._fd, new_end - start, flags=mmap.MAP_SHARED,
                                prot=mmap.PROT_READ | mmap.PROT_WRITE, offset=start)
        except (OSError, ValueError) as exc:
            log.warning("journal.segment_unmapped", extra={"segment": self.name, "error": str(exc)})
            self._stop_mapping()
            return False
        if self._map is not None:
            self._map.close()
        self._map, self._map_start, self._map_end = new_map, start, new_end
        return True

    def _stop_mapping(self) -> None:
        """Unmap, then cut the allocated space past `size` (never while mapped: a store into a
        mapped page past the end of the file is a SIGBUS)."""
        self._mappable = False
        if self._map is not None:
            self._map.close()
            self._map = None
        self._map_start = self._map_end = 0
        with contextlib.suppress(OSError):
            if os.fstat(self._fd).st_size != self.size:
                os.ftruncate(self._fd, self.size)

    def remove(self) -> None:
        """Delete the file (its events are in the store), then release it."""
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
        self.close()

    def close(self) -> None:
        if self._fd >= 0:
            self._stop_mapping()
            os.close(self._fd)
            self._fd = -1


def mark_name(segment: str) -> str:
    """The journal_meta row holding how far `segment` has been appended to the store."""
    return "segment:" + segment


def recover_segments(store: JournalStore, hasher: ChainHasher, directory: Path) -> int:
    """Append to `store` the events of every segment in `directory` that no live process
    holds (a proxy stopped before its events were in the store, or killed), then delete
    those segments. Returns how many events were recovered."""
    if not directory.is_dir():
        return 0
    recovered = 0
    for path in sorted(directory.glob("*" + SEGMENT_SUFFIX)):
        try:
            fd = os.open(path, os.O_RDONLY)
        except FileNotFoundError:
            continue
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                continue  # a running proxy writes it
            recovered += _recover_one(store, hasher, path)
            path.unlink()
            store.forget_mark(mark_name(path.name))
        finally:
            os.close(fd)
    if recovered:
        log.warning("journal.segments_recovered", extra={"events": recovered, "directory": str(directory)})
    return recovered


class UnreadableRecord(StoreError):
    """A record whose CRC holds but whose event cannot be decoded (an edited segment, or an
    encoder this version cannot read)."""


def _recover_one(store: JournalStore, hasher: ChainHasher, path: Path) -> int:
    try:
        return append_segment(store, hasher, path, store.mark(mark_name(path.name)))[0]
    except UnreadableRecord as exc:  # what precedes it is in; the rest cannot be read by anyone
        log.error("journal.segment_record_unreadable", extra={"segment": path.name, "error": str(exc)})
        return 0


def append_segment(store: JournalStore, hasher: ChainHasher, path: Path, start: int, end: int | None = None,
                   batch_size: int = _RECOVERY_BATCH) -> tuple[int, int]:
    """Append the records of `path` from `start` (to `end`) to `store`, `batch_size` events per
    transaction, each with the segment's mark. The mark must be at `start`: if another process
    moved it (it appended some of these), the records are read again from where it is, so no
    event is appended twice. Returns (events appended, the position reached). StoreError
    other than that propagates (nothing of the failed batch is appended)."""
    mark = mark_name(path.name)
    count = 0
    while True:
        batch: list[EncodedEvent] = []
        position = start
        try:
            for record in read_segment(path, start, end):
                try:
                    batch.append(event_of_record(record.payload))
                except EncodingError as exc:  # a record whose CRC holds cannot be unreadable unless edited
                    if batch:
                        store.append_batch(batch, hasher, mark=(mark, position), mark_from=start)
                    raise UnreadableRecord(f"{path.name}: the record at offset {position} cannot be read: "
                                           f"{exc}") from None
                position = record.end
                if len(batch) >= batch_size:
                    store.append_batch(batch, hasher, mark=(mark, position), mark_from=start)
                    count += len(batch)
                    batch, start = [], position
            if batch:
                store.append_batch(batch, hasher, mark=(mark, position), mark_from=start)
                count += len(batch)
            return count, position
        except MarkMoved as moved:
            start = moved.position
