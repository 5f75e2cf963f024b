"""The journal appender: the child process of `dbguard serve` that appends the events of the
proxy's write-ahead segments to its local sqlite store.

Owns: reading the segment files the proxy names, only as far as the proxy says it has written
whole records; chaining and appending their events in large transactions, each with the
segment's mark in the same transaction (`segments.append_segment`: nothing twice, nothing
skipped, even if another process recovers the same segment); retrying a store that is locked
or failing, and saying so; deleting a segment once it is closed and all of it is in the store;
checkpointing sqlite's WAL (sqlite's automatic checkpoints, here off the proxy's loop).

Why a process (docs/journal.md, "Group commit and the appender"): a governed connection's
throughput is bounded by the proxy's single event loop, and chaining and inserting an event
(SHA-256, sqlite's B-trees, the rows) costs about as much there as everything else the journal
does per statement. A thread would fight the loop for the GIL; a process does not.

Run as `python -m dbguard.journal.appender STORE_PATH [--log-level L]` by
`runtime.loop_journal.LoopJournal`, which speaks to it in JSON lines (the appender's own log
records go the same way, as {"log": LEVEL, "event": ..., "fields": {...}}, and the proxy logs
them with its own configuration):

    proxy -> appender                                  appender -> proxy
    {"op": "key", "key": HEX | null}   (first line)    {"appended": NAME, "end": N, "events": K}
    {"op": "append", "segment": NAME, "end": N}        {"failing": REASON}
    {"op": "retire", "segment": NAME}                  {"settled": ID, "error": REASON | null}
    {"op": "settle", "id": ID}                         {"closed": true, "kept": [NAME...]}
    {"op": "close"}

"append": NAME holds whole records up to offset N (cumulative: the latest N counts). "retire":
NAME gets no more records; delete it once it is all in. "settle": answer once everything told
so far is in the store (or why not). "close": the same, then delete every segment that is all
in and exit. On end of input without "close" (the proxy died) it stops at once: the next start
of the proxy, or any `dbguard journal` command, recovers the rest (`segments.recover_segments`).
It ignores SIGINT and SIGTERM (a terminal's Ctrl-C or a service manager's stop reaches the
whole process group): the proxy stops it after draining.

Must not: write to a segment, decide anything about sessions or statements.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import selectors
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from dbguard.journal.chain import ChainHasher
from dbguard.journal.segments import append_segment, mark_name, segment_directory
from dbguard.journal.store import StoreError
from dbguard.journal.store_sqlite import SqliteJournalStore

__all__ = ["MAX_BATCH", "READ_BYTES", "RETRY_SECONDS", "Appender", "main", "run"]

log = logging.getLogger("dbguard.journal")

# Events per transaction, at most (a transaction of hundreds costs ~8 µs an event, of a few ~30).
MAX_BATCH: Final = 2000
# A store that failed (locked by another process, broken) is tried again this often.
RETRY_SECONDS: Final = 0.05
# Records read from a segment per pass, at most (a backlog is appended in slices, so memory
# stays bounded and instructions keep being read).
READ_BYTES: Final = 4 * 1024 * 1024


@dataclass(slots=True)
class _Segment:
    path: Path
    told: int = 0  # whole records up to here, says the proxy
    done: int = -1  # appended up to here (-1: not read from the store's mark yet)
    retired: bool = False


class Appender:
    """The appender's state and work; `run` is its loop over the proxy's instructions."""

    def __init__(self, store_path: Path, hasher: ChainHasher) -> None:
        self._store = SqliteJournalStore(store_path, fsync=False)
        self._store.check_hasher(hasher)
        self._store.set_busy_timeout(0)  # a locked store is retried here, without blocking instructions
        self._hasher = hasher
        self._directory = segment_directory(store_path)
        self._segments: dict[str, _Segment] = {}
        self._settles: list[object] = []
        self._failing: str | None = None
        self._closing = False

    # -- instructions ----------------------------------------------------------------------

    def instruct(self, message: dict[str, object]) -> None:
        op = message.get("op")
        name = message.get("segment")
        if op in ("append", "retire"):
            if not isinstance(name, str) or "/" in name or name.startswith("."):
                raise ValueError(f"bad segment name {name!r}")
            segment = self._segments.get(name)
            if segment is None:
                segment = self._segments[name] = _Segment(self._directory / name)
            if op == "append":
                end = message.get("end")
                if not isinstance(end, int) or end < segment.told:
                    raise ValueError(f"bad end {end!r} for {name}")
                segment.told = end
            else:
                segment.retired = True
        elif op == "settle":
            self._settles.append(message.get("id"))
        elif op == "close":
            self._closing = True
        else:
            raise ValueError(f"unknown instruction {op!r}")

    @property
    def busy(self) -> bool:
        """Something told is not in the store yet, or a settle or close waits to be answered."""
        return bool(self._settles) or self._closing or self.behind

    @property
    def behind(self) -> bool:
        return any(s.done < s.told or s.retired for s in self._segments.values())

    # -- work ------------------------------------------------------------------------------

    def work(self) -> tuple[list[dict[str, object]], bool]:
        """Append some of what was told (at most READ_BYTES of records per segment), in segment
        order; the messages for the proxy, and whether anything was appended."""
        out: list[dict[str, object]] = []
        failure: str | None = None
        progress = False
        for name in sorted(self._segments):
            segment = self._segments[name]
            try:
                if segment.done < 0:
                    segment.done = self._store.mark(mark_name(name))
                if segment.done < segment.told:
                    events, reached = append_segment(self._store, self._hasher, segment.path, segment.done,
                                                     min(segment.told, segment.done + READ_BYTES), MAX_BATCH)
                    if reached > segment.done:
                        segment.done = reached
                        progress = True
                        out.append({"appended": name, "end": reached, "events": events})
                if segment.done < segment.told:
                    break  # later segments wait: the chain keeps the order of the segments
                if segment.retired:
                    self._remove(segment)
                    del self._segments[name]
            except (StoreError, OSError) as exc:
                failure = str(exc) or type(exc).__name__
                break
        if failure is not None:
            if failure != self._failing:
                log.warning("journal.append_failed", extra={"error": failure})
                out.append({"failing": failure})
            self._failing = failure
        elif self._failing is not None:
            log.warning("journal.append_recovered")
            self._failing = None
        if not self.behind_told:
            out.extend({"settled": ident, "error": None} for ident in self._settles)
            self._settles.clear()
        return out, progress

    @property
    def behind_told(self) -> bool:
        return any(s.done < s.told for s in self._segments.values())

    def fail_settles(self) -> list[dict[str, object]]:
        out: list[dict[str, object]] = [{"settled": ident, "error": self._failing} for ident in self._settles]
        self._settles.clear()
        return out

    def close(self) -> list[str]:
        """After the last `work`: delete every segment that is all in the store; the names of
        those kept (their events wait for the next start's recovery)."""
        kept: list[str] = []
        for name, segment in sorted(self._segments.items()):
            try:
                if 0 <= segment.told <= segment.done:
                    self._remove(segment)
                    continue
            except (StoreError, OSError) as exc:
                log.warning("journal.segment_not_removed", extra={"segment": name, "error": str(exc)})
            kept.append(name)
        try:
            self._store.checkpoint("TRUNCATE")
        except StoreError as exc:
            log.warning("journal.checkpoint_failed", extra={"error": str(exc)})
        self._store.close()
        return kept

    def _remove(self, segment: _Segment) -> None:
        """The file first, then its mark: a crash between the two leaves a mark of no file
        (harmless), never a file whose mark was forgotten (appended twice)."""
        with contextlib.suppress(FileNotFoundError):
            segment.path.unlink()
        self._store.forget_mark(mark_name(segment.path.name))

    @property
    def closing(self) -> bool:
        return self._closing


# Attributes every LogRecord has; anything else came from `extra=` and is a field.
_STANDARD_ATTRIBUTES: Final = frozenset(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {
    "message", "asctime", "taskName"}


class _ToProxy(logging.Handler):
    """Log records go to the proxy as {"log": ...} messages: it logs them as its own, in the
    format and to the place its configuration says."""

    def emit(self, record: logging.LogRecord) -> None:
        fields = {k: v if isinstance(v, str | int | float | bool | None) else str(v)
                  for k, v in vars(record).items() if k not in _STANDARD_ATTRIBUTES}
        with contextlib.suppress(OSError):  # the proxy is gone
            _send([{"log": record.levelname.lower(), "event": record.getMessage(), "fields": fields}])


def _messages(buffer: bytearray) -> list[dict[str, object]]:
    """The whole lines of `buffer` (removed from it), as JSON objects."""
    out: list[dict[str, object]] = []
    while (end := buffer.find(b"\n")) >= 0:
        line = bytes(buffer[:end])
        del buffer[: end + 1]
        message = json.loads(line)
        if not isinstance(message, dict):
            raise ValueError("an instruction is a JSON object")
        out.append(message)
    return out


def _send(messages: list[dict[str, object]]) -> None:
    if messages:
        data = b"".join(json.dumps(m, separators=(",", ":")).encode() + b"\n" for m in messages)
        view = memoryview(data)
        while view:
            view = view[os.write(1, view):]


def run(store_path: Path, give_up_seconds: float) -> int:
    """Read the proxy's instructions, append, answer; 0 after "close", 1 when input ended
    without it (the proxy died)."""
    buffer = bytearray()
    selector = selectors.DefaultSelector()
    selector.register(0, selectors.EVENT_READ)
    appender: Appender | None = None
    close_deadline: float | None = None
    progress = False
    while True:
        timeout = None
        if appender is not None and appender.busy:
            timeout = 0.0 if progress else RETRY_SECONDS
        if selector.select(timeout):
            chunk = os.read(0, 65536)
            if not chunk:
                return 1  # the proxy is gone: the rest is recovered at its next start
            buffer += chunk
            for message in _messages(buffer):
                if appender is None:
                    if message.get("op") != "key":
                        raise ValueError("the first instruction gives the chain key")
                    key = message.get("key")
                    appender = Appender(store_path, ChainHasher(bytes.fromhex(key) if isinstance(key, str) else None))
                else:
                    appender.instruct(message)
        if appender is None:
            continue
        messages, progress = appender.work()
        _send(messages)
        if appender.closing:
            if close_deadline is None:
                close_deadline = time.monotonic() + give_up_seconds
            if not appender.behind_told or time.monotonic() >= close_deadline:
                _send(appender.fail_settles())
                _send([{"closed": True, "kept": appender.close()}])
                return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dbguard.journal.appender")
    parser.add_argument("store", type=Path)
    parser.add_argument("--log-level", default="warning", choices=("debug", "info", "warning", "error"))
    parser.add_argument("--give-up-seconds", type=float, default=10.0)
    args = parser.parse_args(argv)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    handler = _ToProxy()
    log.addHandler(handler)
    log.setLevel(args.log_level.upper())
    log.propagate = False
    try:
        return run(args.store, args.give_up_seconds)
    except (StoreError, OSError, ValueError) as exc:
        log.error("journal.appender_failed", extra={"error": str(exc)})
        sys.stdout.flush()
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
