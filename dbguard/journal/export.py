# dbguard/journal/export.py — owns journal exports for auditors and their verification:
# a range of the chain (cut by time, filtered by identity or decision) written as JSON lines
# or CSV, each line carrying seq, prev_hash and hash, after a header naming the range, the
# anchor (prev_hash of the first event), the head (hash of the last), the export time and the
# hash algorithm; and `verify_export`, which checks such a file on its own (with the key if
# the chain is keyed). Events outside a filter stay in the file as content-less links, so the
# slice is still one unbroken chain. It reads stores only through JournalStore's API.
from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, Final, Literal, TextIO

from dbguard.journal.chain import Anchor, ChainAlgorithm, ChainHasher, ChainProblem, StoredEvent, verify_events
from dbguard.journal.events import (
    SCHEMA_VERSION,
    EncodingError,
    StatementEvent,
    canonical_json,
    decode_event,
    iso_from_us,
    now_us,
)
from dbguard.journal.store import JournalStore

__all__ = [
    "EXPORT_FORMAT_VERSION",
    "ExportSummary",
    "ExportVerifyReport",
    "KeyRequired",
    "export_range",
    "verify_export",
]

EXPORT_FORMAT_VERSION: Final = 1
_MAGIC: Final = "dbguard_journal_export"
CSV_COLUMNS: Final = ("seq", "prev_hash", "hash", "time", "kind", "session_id", "action", "text", "event")

ExportFormat = Literal["jsonl", "csv"]


class KeyRequired(Exception):
    """Verifying (or exporting) this chain needs its HMAC key."""


@dataclass(frozen=True, slots=True)
class ExportSummary:
    header: dict[str, Any]
    events: int
    omitted: int


def _readable(ev: StoredEvent) -> dict[str, str]:
    """The columns of a CSV row people read; verification checks they match the event."""
    if ev.omitted:
        return {"time": "", "kind": "", "session_id": "", "action": "", "text": ""}
    event = decode_event(ev.payload)
    action = text = ""
    if isinstance(event, StatementEvent):
        action, text = event.action, event.text
    return {"time": iso_from_us(event.time_us), "kind": event.kind.value, "session_id": event.session_id,
            "action": action, "text": text}


def export_range(
    store: JournalStore,
    out: TextIO,
    *,
    fmt: ExportFormat = "jsonl",
    hasher: ChainHasher,
    since_us: int | None = None,
    until_us: int | None = None,
    identity: str | None = None,
    decision: str | None = None,
    store_label: str = "",
) -> ExportSummary:
    """Write the events from `since` (inclusive) to `until` (exclusive) to `out`."""
    params = store.chain_params()
    algorithm, key_id = params if params is not None else (hasher.algorithm.value, hasher.key_id)
    if algorithm == ChainAlgorithm.HMAC_SHA256 and not hasher.keyed:
        raise KeyRequired("the chain is keyed (hmac-sha256): exporting it needs the key, which signs the header")
    if params is not None:
        why = hasher.check_matches(algorithm, key_id)
        if why is not None:
            raise KeyRequired(why)
    span = store.seq_range(since_us, until_us)
    total = included = 0
    anchor = head = store.head()
    rows: Iterable[tuple[StoredEvent, bool]] = ()
    if span is not None:
        # Counts and ends first (the header comes first), then the events streamed page by page.
        total, included = store.export_counts(span[0], span[1], identity=identity, decision=decision)
        first, last = store.event_at(span[0]), store.event_at(span[1])
        if first is None or last is None:
            raise ValueError("the journal changed during the export (pruned?): run it again")
        anchor, head = Anchor(first.seq - 1, first.prev_hash), Anchor(last.seq, last.hash)
        rows = store.export_rows(span[0], span[1], identity=identity, decision=decision)
    exported = now_us()
    header: dict[str, Any] = {
        _MAGIC: EXPORT_FORMAT_VERSION,
        "format": fmt,
        "schema_version": SCHEMA_VERSION,
        "algorithm": algorithm,
        "key_id": key_id,
        "store": store_label,
        "exported_at_us": exported,
        "exported_at": iso_from_us(exported),
        "range": {
            "since_us": since_us,
            "until_us": until_us,
            "since": None if since_us is None else iso_from_us(since_us),
            "until": None if until_us is None else iso_from_us(until_us),
            "identity": identity,
            "decision": decision,
            "first_seq": span[0] if span else None,
            "last_seq": span[1] if span else None,
        },
        "anchor": {"seq": anchor.seq, "hash": anchor.hash},
        "head": {"seq": head.seq, "hash": head.hash},
        "events": included,
        "omitted": total - included,
    }
    if hasher.keyed:
        header["header_mac"] = hasher.mac(canonical_json(header))
    if fmt == "jsonl":
        out.write(json.dumps(header, sort_keys=True, ensure_ascii=False) + "\n")
        for ev, keep in rows:
            line: dict[str, Any] = {"seq": ev.seq, "prev_hash": ev.prev_hash, "hash": ev.hash}
            if keep:
                line["event"] = json.loads(ev.payload)
            else:
                line["omitted"] = True
            out.write(json.dumps(line, sort_keys=True, ensure_ascii=False) + "\n")
    else:
        out.write("#" + json.dumps(header, sort_keys=True, ensure_ascii=False) + "\n")
        writer = csv.DictWriter(out, fieldnames=CSV_COLUMNS, lineterminator="\n")
        writer.writeheader()
        for ev, keep in rows:
            shown = StoredEvent(ev.seq, ev.time_us, ev.kind, ev.session_id, ev.payload, ev.prev_hash, ev.hash,
                                omitted=not keep)
            writer.writerow({"seq": ev.seq, "prev_hash": ev.prev_hash, "hash": ev.hash, **_readable(shown),
                             "event": ev.payload.decode("utf-8") if keep else ""})
    return ExportSummary(header, included, total - included)


# ---------------------------------------------------------------------------------------------
# Verification of an exported file


@dataclass(slots=True)
class ExportVerifyReport:
    header: dict[str, Any] = field(default_factory=dict)
    checked: int = 0
    omitted: int = 0
    problems: list[ChainProblem] = field(default_factory=list)
    # Problems that are not about one event (header, file structure), by line.
    file_problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems and not self.file_problems

    def first_problem(self) -> str:
        if self.file_problems:
            return self.file_problems[0]
        return str(self.problems[0]) if self.problems else ""


class _FileError(Exception):
    pass


def _event_from_json(seq: Any, prev_hash: Any, digest: Any, event: Any, omitted: bool, where: str) -> StoredEvent:
    if isinstance(seq, bool) or not isinstance(seq, int) or not isinstance(prev_hash, str) or not isinstance(
        digest, str
    ):
        raise _FileError(f"{where}: seq, prev_hash and hash are missing or of the wrong type")
    if omitted:
        return StoredEvent(seq, 0, "", "", b"", prev_hash, digest, omitted=True)
    if not isinstance(event, dict):
        raise _FileError(f"{where} (event {seq}): no event object")
    payload = canonical_json(event)
    time_us = event.get("time_us")
    return StoredEvent(seq, time_us if isinstance(time_us, int) else -1, str(event.get("kind", "")),
                       str(event.get("session_id", "")), payload, prev_hash, digest)


def _jsonl_events(lines: Iterator[tuple[int, str]]) -> Iterator[StoredEvent]:
    for number, raw in lines:
        line = raw.rstrip("\r\n")
        if not line.strip():
            continue
        where = f"line {number}"
        try:
            obj = json.loads(line)
        except ValueError:
            raise _FileError(f"{where}: not JSON") from None
        if not isinstance(obj, dict):
            raise _FileError(f"{where}: not a JSON object")
        yield _event_from_json(obj.get("seq"), obj.get("prev_hash"), obj.get("hash"), obj.get("event"),
                               obj.get("omitted") is True, where)


def _csv_events(lines: Iterator[tuple[int, str]], report: ExportVerifyReport) -> Iterator[StoredEvent]:
    reader = csv.reader(line for _, line in lines)
    try:
        columns = next(reader)
    except StopIteration:
        return
    if tuple(columns) != CSV_COLUMNS:
        raise _FileError(f"line 2: expected the CSV columns {','.join(CSV_COLUMNS)}")
    for row in reader:
        where = f"line {reader.line_num + 1}"
        if len(row) != len(CSV_COLUMNS):
            raise _FileError(f"{where}: expected {len(CSV_COLUMNS)} columns, got {len(row)}")
        values = dict(zip(CSV_COLUMNS, row, strict=True))
        try:
            seq = int(values["seq"])
        except ValueError:
            raise _FileError(f"{where}: seq is not a number") from None
        omitted = values["event"] == ""
        event: Any = None
        if not omitted:
            try:
                event = json.loads(values["event"])
            except ValueError:
                raise _FileError(f"{where} (event {seq}): the event column is not JSON") from None
        ev = _event_from_json(seq, values["prev_hash"], values["hash"], event, omitted, where)
        try:
            readable = _readable(ev)
        except EncodingError:
            readable = {}
        if any(values[k] != v for k, v in readable.items()):
            report.problems.append(ChainProblem(seq, "edited",
                                                f"{where}: its readable columns disagree with its event (edited)"))
        yield ev


def verify_export(text: str | Iterable[str], key: bytes | None = None) -> ExportVerifyReport:
    """Check an exported file: header, every line's hash and link, the anchor and the head.

    Raises KeyRequired when the file's chain is keyed and no key (or another key) is given.
    """
    stream: Iterable[str] = io.StringIO(text) if isinstance(text, str) else text
    # Lines keep their line ends: a quoted CSV field may span lines (SQL text with newlines).
    numbered = enumerate(stream, 1)
    report = ExportVerifyReport()
    first = next(numbered, None)
    if first is None:
        report.file_problems.append("line 1: empty file: not a dbguard journal export")
        return report
    head_line = first[1].rstrip("\r\n")
    is_csv = head_line.startswith("#")
    try:
        header = json.loads(head_line[1:] if is_csv else head_line)
    except ValueError:
        header = None
    if not isinstance(header, dict) or header.get(_MAGIC) != EXPORT_FORMAT_VERSION:
        report.file_problems.append("line 1: not a dbguard journal export header")
        return report
    report.header = header
    algorithm = str(header.get("algorithm", ""))
    key_id = str(header.get("key_id", ""))
    hasher = ChainHasher(key)
    why = hasher.check_matches(algorithm, key_id)
    if why is not None:
        raise KeyRequired(why)
    if hasher.keyed:
        claimed = header.get("header_mac")
        unsigned = {k: v for k, v in header.items() if k != "header_mac"}
        if claimed != hasher.mac(canonical_json(unsigned)):
            report.file_problems.append("line 1: the header was altered (its MAC does not match)")
    try:
        anchor = _anchor(header.get("anchor"), "anchor")
        head = _anchor(header.get("head"), "head")
    except _FileError as e:
        report.file_problems.append(str(e))
        return report
    events: list[StoredEvent] = []
    try:
        source = _csv_events(numbered, report) if is_csv else _jsonl_events(numbered)
        events.extend(source)
    except _FileError as e:
        report.file_problems.append(str(e))
    chain = verify_events(events, hasher, anchor, head=head)
    report.checked = sum(1 for e in events if not e.omitted)
    report.omitted = sum(1 for e in events if e.omitted)
    report.problems.extend(chain.problems)
    report.problems.sort(key=lambda p: p.seq)
    if report.checked != header.get("events") or report.omitted != header.get("omitted"):
        report.file_problems.append(
            f"the header counts {header.get('events')} events and {header.get('omitted')} omitted, "
            f"the file holds {report.checked} and {report.omitted}"
        )
    return report


def _anchor(value: Any, name: str) -> Anchor:
    if not isinstance(value, dict) or not isinstance(value.get("seq"), int) or not isinstance(value.get("hash"), str):
        raise _FileError(f"line 1: the header's {name} is missing or malformed")
    return Anchor(int(value["seq"]), str(value["hash"]))
