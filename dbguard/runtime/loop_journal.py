"""The journal of a local sqlite store with `journal.sync: normal`: write-ahead to a segment file
as the sessions hand their events over; a child process (`journal.appender`) appends the
segments to the store in large batches.

Owns: writing a session's events to this process's segment file (`journal/segments.py`: one
copy into its memory map, or one write()) the moment the session hands them over, before the
bytes that depend on them go on (a statement's event before the statement goes upstream, an
outcome before the client gets the result): from then on they survive a crash of the proxy,
as a commit to sqlite's WAL without fsync would, and nobody waits or is called back. Also
running the appender: telling it every INGEST_INTERVAL how far the segment holds whole
records, keeping count of what it has appended, restarting it if it dies, closing segments
past SEGMENT_BYTES (the appender deletes them once they are in). Segments a killed proxy left
are recovered at start (and by every `dbguard journal` command).

Why this shape (docs/performance.md, "The journal's cost"): a governed connection's throughput
is bounded by this process's event loop. On it, an event costs its encoding and one copy into
the segment; chaining and inserting it into sqlite (~8 µs an event even in transactions of
hundreds) happens in the appender, which a thread could not do without fighting the loop for
the GIL.

While the store cannot be appended to (locked by another process, broken, the appender dead),
events wait in the segment; after INGEST_GIVE_UP_SECONDS of that, or with MAX_BACKLOG events
waiting, new statements are refused (`journal.on_store_failure`) until it recovers.

Used only where that durability is what was asked for: sqlite, `sync: normal`. A PostgreSQL
store and `sync: full` go through the writer thread (`journal_link.JournalLink`). Must not: know
wire protocols or sessions' state, or touch the store while the appender runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import os
import select
import subprocess
import sys
import time
from collections import deque
from collections.abc import Sequence
from pathlib import Path
from typing import Final, cast

from dbguard.journal import ChainHasher, JournalEvent
from dbguard.journal.events import canonical_bytes
from dbguard.journal.segments import (
    SEGMENT_SUFFIX,
    Segment,
    frame,
    frame_event,
    recover_segments,
    segment_directory,
)
from dbguard.journal.store import EncodedEvent
from dbguard.journal.store_sqlite import SqliteJournalStore
from dbguard.runtime.journal_link import DurableCallback
from dbguard.session.journal import SessionEvent

log = logging.getLogger("dbguard.journal")

__all__ = ["LoopJournal", "record_bytes"]

# A segment is closed and a new one begun past this size; the appender deletes a closed
# segment once all its events are in the store.
SEGMENT_BYTES: Final = 64 * 1024 * 1024
# The appender is told this often how far the segment holds whole records.
INGEST_INTERVAL: Final = 0.05
# While the appender cannot append (the store is locked or broken, the appender died), events
# wait in the segment; after this long, new statements are refused.
INGEST_GIVE_UP_SECONDS: Final = 10.0
# Events waiting for the store, at most, before new statements are refused.
MAX_BACKLOG: Final = 500_000
# A dead appender is started again at most this often.
RESTART_SECONDS: Final = 1.0
# How long `settle` waits for the appender.
SETTLE_SECONDS: Final = 10.0


def record_bytes(event: SessionEvent) -> bytes:
    """The segment record of one event (EncodingError if it cannot be encoded)."""
    if type(event) is EncodedEvent:
        return frame_event(event)
    return frame(canonical_bytes(cast(JournalEvent, event)))  # the appender decodes the rest


class LoopJournal:
    """The event sink of every session of one process (see the module docstring)."""

    def __init__(self, path: Path, hasher: ChainHasher, loop: asyncio.AbstractEventLoop,
                 key: bytes | None = None, *, mapped: bool = True) -> None:
        """`mapped`: segments may be written through a memory map (`journal.segment_writes:
        auto`, where the file system allows it); False: always write()."""
        with SqliteJournalStore(path, fsync=False) as store:  # recovery below may wait for a lock
            store.check_hasher(hasher)
            recover_segments(store, hasher, segment_directory(path))
        self._path = path
        self._key = key
        self._mapped = mapped
        self._loop = loop
        self._directory = segment_directory(path)
        self._segment = self._new_segment()
        # Written, not yet appended: (segment name, its size after the write, events), in order;
        # segments closed for size stay open (locked) until the appender has all of them.
        self._unappended: deque[tuple[str, int, int]] = deque()
        self.waiting = 0  # events in `_unappended`
        self._retired: dict[str, Segment] = {}
        self._told: dict[str, int] = {}  # what the appender was told, per segment
        self._notify_handle: asyncio.TimerHandle | None = None
        self._failing_since: float | None = None
        self._failing_reason = ""
        self.failure: str | None = None  # why new statements are refused, for a while now
        self._settles: dict[int, asyncio.Future[str | None]] = {}
        self._settle_ids = itertools.count(1)
        self._child: subprocess.Popen[bytes] | None = None
        self._child_output = bytearray()
        self._child_stdin = self._child_stdout = -1
        self._started_at = 0.0
        self._closed = False
        self._start_appender()
        loop.call_soon_threadsafe(self._attach)

    def _new_segment(self) -> Segment:
        return Segment(self._directory, f"{time.time_ns():020d}-{os.getpid()}{SEGMENT_SUFFIX}",
                       mapped=self._mapped)

    # -- the sessions' side --------------------------------------------------------------------

    def record(self, events: Sequence[SessionEvent], on_durable: DurableCallback | None) -> bool:
        """Write `events` to the segment now, in one piece. True: they are in it, and
        `on_durable` is not called. False: they could not be written; `on_durable`, when
        given, is called soon with the reason."""
        refusal = None if self.failure is None and self.waiting < MAX_BACKLOG and not self._closed else self._refusal()
        if refusal is not None:
            return self._not_recorded(refusal, len(events), on_durable)
        try:
            if len(events) == 1:
                first = events[0]
                records = frame_event(first) if type(first) is EncodedEvent else record_bytes(first)
            else:
                records = b"".join([record_bytes(event) for event in events])
        except ValueError as exc:  # EncodingError: an event that cannot be encoded
            return self._not_recorded(str(exc), len(events), on_durable)
        segment = self._segment
        try:
            size = segment.append(records)
        except OSError as exc:
            reason = f"the journal could not write {segment.path}: {exc.strerror or exc}"
            log.error("journal.write_failed", extra={"events": len(events), "error": reason})
            return self._not_recorded(reason, len(events), on_durable)
        self._unappended.append((segment.name, size, len(events)))
        self.waiting += len(events)
        if size >= SEGMENT_BYTES:
            self._notify()
            self._retired[segment.name] = segment
            self._send({"op": "retire", "segment": segment.name})
            self._segment = self._new_segment()
        if self._notify_handle is None and not self._closed:
            self._notify_handle = self._loop.call_later(INGEST_INTERVAL, self._notify_turn)
        return True

    def _not_recorded(self, reason: str, count: int, on_durable: DurableCallback | None) -> bool:
        if on_durable is not None:
            self._loop.call_soon(self._call, on_durable, reason)
        else:
            log.error("journal.event_lost", extra={"error": reason, "events": count})
        return False

    @property
    def failing(self) -> bool:
        """The appender cannot append right now (for less than INGEST_GIVE_UP_SECONDS, or more)."""
        return self._failing_since is not None

    @property
    def appender_pid(self) -> int | None:
        child = self._child
        return child.pid if child is not None and child.returncode is None else None

    def _refusal(self) -> str | None:
        if self._closed:
            return "the journal is closed"
        if self.failure is not None:
            return f"the journal store could not record the event: {self.failure}"
        if self.waiting >= MAX_BACKLOG:
            return f"the journal store is {self.waiting} events behind"
        return None

    async def settle(self) -> None:
        """Return once every event recorded so far is in the store (as far as it can be): for
        writes that go to the store directly and must follow them in the chain (approvals)."""
        if not self._unappended or self._closed:
            return
        self._notify()
        ident = next(self._settle_ids)
        future: asyncio.Future[str | None] = self._loop.create_future()
        self._settles[ident] = future
        if not self._send({"op": "settle", "id": ident}):
            self._settles.pop(ident, None)
            return
        try:
            error = await asyncio.wait_for(future, SETTLE_SECONDS)
        except TimeoutError:
            error = "the journal appender did not answer"
        finally:
            self._settles.pop(ident, None)
        if error is not None:
            log.warning("journal.settle_incomplete", extra={"error": error, "waiting": self.waiting})

    def close(self) -> None:
        """Let the appender append what was written and delete the segments, then stop it."""
        if self._closed:
            return
        self._closed = True
        if self._notify_handle is not None:
            self._notify_handle.cancel()
        kept: list[str] | None = None
        child = self._child
        if child is not None and child.poll() is None:
            self._notify()
            with contextlib.suppress(OSError, ValueError):
                self._loop.remove_reader(self._child_fd())
            if self._send({"op": "close"}):
                kept = self._await_closed(child, INGEST_GIVE_UP_SECONDS + 5.0)
            self._stop_child(child)
        if kept is None:
            kept = sorted(self._told)
        if kept:  # kept for the next start (or a `dbguard journal` command) to recover
            log.error("journal.segment_kept", extra={"events": self.waiting, "segments": kept,
                                                     "directory": str(self._directory)})
        for segment in (*self._retired.values(), self._segment):
            segment.close()
        for future in self._settles.values():
            if not future.done():
                future.set_result("the journal is closed")

    @staticmethod
    def _call(callback: DurableCallback, reason: str | None) -> None:
        try:
            callback(reason)
        except Exception:  # one session's bug must not strand the others
            log.exception("journal.callback_failed")

    # -- the appender --------------------------------------------------------------------------

    def _notify_turn(self) -> None:
        """Every INGEST_INTERVAL while events wait: tell the appender, check its health."""
        self._notify_handle = None
        if self._closed:
            return
        self._notify()
        self._check_health()
        if self._unappended:
            self._notify_handle = self._loop.call_later(INGEST_INTERVAL, self._notify_turn)

    def _notify(self) -> None:
        segment = self._segment
        if (segment.size > self._told.get(segment.name, 0)
                and self._send({"op": "append", "segment": segment.name, "end": segment.size})):
            self._told[segment.name] = segment.size

    def _check_health(self) -> None:
        now = time.monotonic()
        child = self._child
        if child is None or child.poll() is not None:
            if self._failing_since is None:
                self._failing_since = now
                self._failing_reason = ("the journal appender exited" if child is None
                                        else f"the journal appender exited with status {child.returncode}")
            if now - self._started_at >= RESTART_SECONDS:
                self._restart_appender()
        since = self._failing_since
        if since is not None and now - since >= INGEST_GIVE_UP_SECONDS and self.failure is None:
            self.failure = self._failing_reason or "the journal appender makes no progress"
            log.error("journal.store_failed", extra={"error": self.failure, "waiting": self.waiting})

    def _start_appender(self) -> None:
        """Start the appender and give it the chain key (never on its command line)."""
        self._started_at = time.monotonic()
        self._told.clear()
        level = logging.getLevelName(max(logging.DEBUG, min(logging.ERROR, log.getEffectiveLevel()))).lower()
        command = [sys.executable, "-m", "dbguard.journal.appender", str(self._path), "--log-level", level,
                   "--give-up-seconds", str(INGEST_GIVE_UP_SECONDS)]
        try:
            self._child = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, close_fds=True)
        except OSError as exc:
            self._child = None
            log.error("journal.appender_not_started", extra={"error": str(exc)})
            return
        self._child_output.clear()
        assert self._child.stdin is not None
        assert self._child.stdout is not None
        self._child_stdin, self._child_stdout = self._child.stdin.fileno(), self._child.stdout.fileno()
        os.set_blocking(self._child_stdin, False)
        os.set_blocking(self._child_stdout, False)
        self._send({"op": "key", "key": self._key.hex() if self._key is not None else None})
        for name in self._retired:  # after a restart: everything still unappended, in order
            self._send({"op": "append", "segment": name, "end": self._retired[name].size})
            self._send({"op": "retire", "segment": name})
            self._told[name] = self._retired[name].size

    def _attach(self) -> None:
        if self._child is not None and not self._closed:
            self._loop.add_reader(self._child_fd(), self._on_child_output)

    def _restart_appender(self) -> None:
        old = self._child
        if old is not None:
            with contextlib.suppress(OSError, ValueError):
                self._loop.remove_reader(self._child_fd())
            self._stop_child(old)
        log.warning("journal.appender_restarted", extra={"waiting": self.waiting})
        self._start_appender()
        self._attach()
        self._notify()

    def _child_fd(self) -> int:
        return self._child_stdout

    def _send(self, message: dict[str, object]) -> bool:
        """One instruction to the appender; False if it could not take it (dead, or its input
        full: an "append" is repeated by the next one anyway)."""
        child = self._child
        if child is None or child.returncode is not None:
            return False
        data = json.dumps(message, separators=(",", ":")).encode() + b"\n"
        try:
            written = os.write(self._child_stdin, data)
        except (BlockingIOError, BrokenPipeError, OSError):
            return False
        return written == len(data)

    def _on_child_output(self) -> None:
        try:
            chunk = os.read(self._child_fd(), 65536)
        except BlockingIOError:
            return
        except OSError:
            chunk = b""
        if not chunk:  # the appender exited: restarted by the next health check
            with contextlib.suppress(OSError, ValueError):
                self._loop.remove_reader(self._child_fd())
            if self._notify_handle is None and not self._closed:
                self._notify_handle = self._loop.call_later(INGEST_INTERVAL, self._notify_turn)
            return
        buffer = self._child_output
        buffer += chunk
        while (end := buffer.find(b"\n")) >= 0:
            line = bytes(buffer[:end])
            del buffer[: end + 1]
            try:
                message = json.loads(line)
            except ValueError:
                log.error("journal.appender_garbled", extra={"line": line[:200].decode("utf-8", "replace")})
                continue
            if isinstance(message, dict):
                self._on_message(message)

    def _on_message(self, message: dict[str, object]) -> None:
        if "log" in message:
            level = logging.getLevelName(str(message["log"]).upper())
            fields = message.get("fields")
            log.log(level if isinstance(level, int) else logging.WARNING, str(message.get("event")),
                    extra={"appender": True, **(fields if isinstance(fields, dict) else {})})
        elif "appended" in message:
            name, end = message["appended"], message.get("end")
            unappended = self._unappended
            while unappended and unappended[0][0] == name and isinstance(end, int) and unappended[0][1] <= end:
                self.waiting -= unappended.popleft()[2]
            if self._failing_since is not None:
                log.warning("journal.store_recovered",
                            extra={"failed_seconds": round(time.monotonic() - self._failing_since, 1)})
            self._failing_since, self.failure = None, None
            retired = self._retired.get(str(name))
            if retired is not None and isinstance(end, int) and end >= retired.size:
                del self._retired[str(name)]  # the appender deletes the file
                self._told.pop(str(name), None)
                retired.close()
        elif "failing" in message:
            if self._failing_since is None:
                self._failing_since = time.monotonic()
            self._failing_reason = str(message["failing"])
        elif "settled" in message:
            future = self._settles.get(message["settled"]) if isinstance(message["settled"], int) else None
            if future is not None and not future.done():
                error = message.get("error")
                future.set_result(None if error is None else str(error))

    def _await_closed(self, child: subprocess.Popen[bytes], timeout: float) -> list[str] | None:
        """Read the appender's last messages until it says it closed; the segments it kept."""
        deadline = time.monotonic() + timeout
        fd = self._child_fd()
        while True:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([fd], [], [], left)[0]:
                return None
            try:
                chunk = os.read(fd, 65536)
            except BlockingIOError:
                continue
            if not chunk:
                return None
            self._child_output += chunk
            while (end := self._child_output.find(b"\n")) >= 0:
                line = bytes(self._child_output[:end])
                del self._child_output[: end + 1]
                with contextlib.suppress(ValueError):
                    message = json.loads(line)
                    if isinstance(message, dict) and message.get("closed"):
                        kept = message.get("kept")
                        return [str(k) for k in kept] if isinstance(kept, list) else []
                    if isinstance(message, dict):
                        self._on_message(message)

    def _stop_child(self, child: subprocess.Popen[bytes]) -> None:
        """Close its pipes (it exits at the end of its input) and wait for it."""
        if child is self._child:
            self._child_stdin = self._child_stdout = -1
        for stream in (child.stdin, child.stdout):
            with contextlib.suppress(OSError):
                if stream is not None:
                    stream.close()
        try:
            child.wait(5)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()
