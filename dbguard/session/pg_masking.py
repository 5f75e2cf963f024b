"""Masking of PostgreSQL results on their way to the client (sans-IO; docs/masking.md).

Owns: `PgResultMasking`, a filter on one session's two byte streams. It watches the messages
the session sends upstream (Query, Parse, Bind, Describe, Execute, Close, Sync) to know which
result each response belongs to (a plain tuple per message; SQL kept as the bytes sent and
decoded, in the client encoding it was sent in, only for a lineage or a COPY; a Bind's result
formats read only when no Describe of its portal gives them), and rewrites what comes back:

- a RowDescription starts a result set: a plan is built once for it from each column's
  provenance (the table OID and column number the server reports, named through the catalog;
  a view's column through the view's own lineage) or, for a computed column, from the
  statement's lineage (`sql.pg_lineage`). Extended protocol: the plan of a portal comes from
  the Describe of its statement or portal, with the Bind's result formats. Plans are cached
  in the `CatalogCache`, by the RowDescription's bytes and what else they depend on
  (`_plan_for`), so a result like an earlier one costs a dict lookup; any change to the
  catalog drops them;
- DataRows of a result with something to mask are rebuilt (only the masked fields; every
  length recomputed); other rows go out as the original bytes;
- ErrorResponse / NoticeResponse: values a data or integrity error quotes are replaced, and
  content detectors run over message, detail, hint and context;
- COPY TO STDOUT whose columns may carry masked values: in text and CSV format each CopyData
  row is rewritten (`session.pg_copy_masking`; the copied columns' masks and types from the
  catalog, by the table's name, or from the query's lineage); in binary format the copy is
  refused (ErrorResponse 42501 in place of the copy).

When the catalog does not know a table OID (or a copied table's name) yet, the filter stops
(`waiting`) with the OIDs and names to look up; the driver resolves them on a side connection
(`runtime.pg_catalog`), fills the shared `CatalogCache`, and calls `resume()`. Until then
nothing more is read upstream.

Must not: do I/O, decide statements, or journal values (only column names and counts).
"""

from __future__ import annotations

import enum
import functools
import re
import struct
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from time import monotonic
from typing import Any, Final, NamedTuple

from dbguard.masking.columns import PgColumn, WireFormat, pg_codec
from dbguard.masking.detectors import DetectorSet
from dbguard.masking.session_masks import ColumnMask, SessionMasks
from dbguard.masking.strategies import Masker, build_masker, is_plain_email_masker, plain_addresses
from dbguard.model import ANY_SOURCE, UNTRACEABLE, ResultLineage, SourceColumn
from dbguard.policy.rules import MaskStrategy
from dbguard.session.pg_copy_masking import CopyColumn, CopyRowRewriter, CopyStatement, copy_codec, copy_statement
from dbguard.sql.pg_lineage import result_lineage, statements_lineage
from dbguard.wire.pg import messages as m
from dbguard.wire.pg.framing import ProtocolViolation

__all__ = ["CatalogCache", "PgResultMasking", "Relation", "View"]

_HEADER: Final = struct.Struct("!cI")
_I16: Final = struct.Struct("!h")
_I32: Final = struct.Struct("!i")
_FIELD: Final = struct.Struct("!IhIhih")
# A cached catalog is trusted this long; DDL seen through any session clears it sooner.
CATALOG_TTL: Final = 60.0
# Views on views are followed this deep; beyond, a value counts as untraceable.
MAX_VIEW_DEPTH: Final = 8
# Text-like types content detectors read (their binary format is their text too).
_DETECTED_TYPES: Final = frozenset((18, 19, 25, 114, 705, 1042, 1043))
_DDL_TAGS: Final = (b"CREATE", b"ALTER", b"DROP", b"COMMENT", b"GRANT", b"REVOKE")
_SQLSTATE_REFUSED: Final = "42501"
_NULL: Final = b"\xff\xff\xff\xff"  # a NULL field: length -1


@dataclass(frozen=True, slots=True)
class Relation:
    """A pg_class row as masking needs it: where it lives, what kind it is, its columns."""

    schema: str
    name: str
    kind: str  # relkind: r table, p partitioned, f foreign, v view, m materialized view...
    columns: Mapping[int, str]  # attnum -> name
    types: Mapping[int, tuple[int, int]] = field(default_factory=dict)  # attnum -> (type OID, typmod)
    generated: frozenset[int] = frozenset()  # attnums of generated columns

    @property
    def is_view(self) -> bool:
        return self.kind == "v"

    def copied(self, names: tuple[str, ...], width: int) -> list[int] | None:
        """The attnums a `COPY this [(names)] TO` sends, in order: the named ones, or every
        column but the generated ones (what PostgreSQL sends), or every column when only
        that makes `width`; None when nothing makes `width` (the catalog is out of date)."""
        if names:
            by_name = {name: attnum for attnum, name in self.columns.items()}
            found = [by_name.get(name) for name in names]
            return [a for a in found if a is not None] if None not in found and len(found) == width else None
        stored = [attnum for attnum in sorted(self.columns) if attnum not in self.generated]
        if len(stored) == width:
            return stored
        every = sorted(self.columns)
        return every if len(every) == width else None


@dataclass(frozen=True, slots=True)
class View:
    """A view's columns, in order, and the lineage of its definition."""

    schema: str
    name: str
    columns: tuple[str, ...]
    lineage: ResultLineage


@dataclass
class CatalogCache:
    """What one database's catalog says, shared by the sessions of a listener on it.

    Filled by the runtime (`runtime.pg_catalog`), read here. `views` is None until loaded
    (every view of the database at once: they are few, and lineage can name any of them).
    Whoever changes `relations`, `views` or `named` calls `changed` (`expire` does)."""

    relations: dict[int, Relation | None] = field(default_factory=dict)  # None: no such OID
    views: dict[tuple[str, str], View] | None = None
    # (schema or None, name) -> the relations of that name (in any schema when None): COPY
    # names its table, the wire gives no OID for it.
    named: dict[tuple[str | None, str], tuple[Relation, ...]] = field(default_factory=dict)
    loaded_at: float = field(default_factory=time.monotonic)
    # Counts changes to what the catalog says (`changed`): an expiry, or an answer filled in.
    generation: int = 0
    # Result plans built from what the catalog said (`PgResultMasking._plan_for`), by
    # RowDescription and everything else a plan depends on. Kept here, not per session: a
    # plan holds only while the catalog is unchanged, so `changed` drops them all at once,
    # and a new session (pgbench -C, a pool that reconnects) finds them built already.
    plans: dict[tuple[object, ...], _Plan | _Cached | None] = field(default_factory=dict, repr=False)

    def expire(self) -> None:
        self.relations.clear()
        self.views = None
        self.named.clear()
        self.loaded_at = time.monotonic()
        self.changed()

    def changed(self) -> None:
        """What the catalog says has changed (expired, or an answer filled in): the plans
        built from what it said before are dropped. Whoever fills the cache calls this."""
        self.generation += 1
        self.plans.clear()

    def stale(self) -> bool:
        return time.monotonic() - self.loaded_at > CATALOG_TTL


@dataclass(frozen=True, slots=True)
class CatalogRequest:
    """What the filter waits for: these OIDs named, the views loaded if `views`, and the
    relations of these (schema or None, name) found."""

    oids: frozenset[int]
    views: bool
    names: frozenset[tuple[str | None, str]] = frozenset()


# ---------------------------------------------------------------------------- result plans


@dataclass(slots=True)
class _Slot:
    index: int
    name: str
    masker: Masker | None  # None: content detection only
    detectors: tuple[tuple[DetectorSet, MaskStrategy, str], ...] = ()
    codec: str = "utf-8"
    count: int = 0


class _Cached(enum.Enum):
    """Markers in `CatalogCache.plans` (the third value, None, is a plan with nothing to do)."""

    MISSING = enum.auto()  # (never stored: what a lookup gives for no entry)
    # This RowDescription's plan depends on the statement (a computed column while column
    # masks are in force): its plans are under the key with the statement's text and index.
    BY_STATEMENT = enum.auto()


# Bounds of the plan cache (per CatalogCache, that is per listener and database): entries,
# and the size of a RowDescription or statement text a key may hold (beyond them the plan is
# built each time: ~10 KB a key at most, ~5 MB a cache). A real workload repeats a few dozen
# RowDescriptions; when full the cache starts again empty (one rebuild per entry, like the
# `changed` of an expiry) rather than paying for LRU bookkeeping on every hit.
_MAX_PLANS: Final = 512
_MAX_KEYED_PAYLOAD: Final = 8192
_MAX_KEYED_SQL: Final = 2048


# A DataRow's start: type, length (signed: one over 2**31 reads as too short).
_ROW_HEADER: Final = struct.Struct("!ci")


@functools.lru_cache(maxsize=256)
def _row_reader(prefix: int, width: int) -> Callable[[bytes, int], tuple[Any, ...]]:
    """Reads a DataRow's start in one struct call: its type, length (signed), the next
    `prefix` bytes (the field count, then the first field's length unless that field is the
    masked one), the `width` bytes after them, and the length that follows."""
    return struct.Struct(f"!ci{prefix}s{width}si").unpack_from


@functools.lru_cache(maxsize=512)
def _row_builder(prefix: int, width: int) -> Callable[[int, bytes, bytes, int, bytes], bytes]:
    """Packs a rebuilt DataRow's start (after its type): the new length, the `prefix` and
    `width` bytes as read, the masked field's new length, the mask."""
    return struct.Struct(f"!I{prefix}s{width}sI4s").pack


class _Plan:
    """How the rows of one result set are rewritten; None slots means relay untouched."""

    __slots__ = ("_emails", "key", "slots")

    def __init__(self, slots: list[_Slot], key: bytes, emails: bool | None = None) -> None:
        self.slots = slots
        self.key = key
        # One column masked by `email` on text: its plain addresses are cut in place.
        if emails is None:
            masker = slots[0].masker if len(slots) == 1 else None
            emails = masker is not None and is_plain_email_masker(masker)
        self._emails = emails

    def fresh(self) -> _Plan:
        """A copy of this plan for one result set: the counts of masked values and the
        e-mail fast path's fallback (`_rewrite_emails`) belong to a result set, the plan a
        cache keeps (`CatalogCache.plans`) is never used on rows itself."""
        return _Plan([_Slot(s.index, s.name, s.masker, s.detectors, s.codec) for s in self.slots], self.key,
                     self._emails)

    def rewrite_run(self, data: bytes, pos: int, end: int, copied: int, out: list[bytes]) -> tuple[int, int]:
        """Rewrite the complete DataRows that follow one another from `pos`: a row with a
        changed value is rebuilt (the bytes since `copied` go to `out` first, then the new
        row); others stay where they are, to be copied later in one slice. Returns the
        position after the last complete DataRow and the new `copied`. One tight loop per
        run of rows, walking each row only up to its last masked field."""
        slots = self.slots
        if len(slots) == 1 and slots[0].masker is not None:
            if self._emails:
                return self._rewrite_emails(data, pos, end, copied, out)
            return self._rewrite_one(data, pos, end, copied, out)
        unpack = _I32.unpack_from
        pack = _I32.pack
        key = self.key
        append = out.append
        while end - pos >= 5 and data[pos] == 0x44:
            length = unpack(data, pos + 1)[0]
            nxt = pos + 1 + length
            if length < 4 or nxt > end:
                break
            count = (data[pos + 5] << 8) | data[pos + 6]
            at = pos + 7
            index = 0
            changes: list[tuple[int, int, bytes | None]] | None = None  # (field start, its end, new value)
            for slot in slots:
                target = slot.index
                if target >= count:
                    break
                while index < target:
                    size = unpack(data, at)[0]
                    at += 4 + (size if size > 0 else 0)
                    index += 1
                size = unpack(data, at)[0]
                if size >= 0:
                    stop = at + 4 + size
                    if stop > nxt:
                        raise ProtocolViolation("DataRow: a field runs past the end of the row")
                    value = data[at + 4 : stop]
                    masker = slot.masker
                    new = masker(value) if masker is not None else _detect(slot, value, key)
                    if masker is not None or new is not value:
                        slot.count += 1
                        if changes is None:
                            changes = []
                        changes.append((at, stop, new))
                    at = stop
                else:
                    at += 4
                index += 1
            if at > nxt:
                raise ProtocolViolation("DataRow: field lengths run past the end of the row")
            if changes is not None:
                # Out as slices: what came before, the new header, then per change the bytes
                # up to the field and the new field; the row's tail goes with the next slice.
                for start, stop, new in changes:
                    # A NULL is its length field (-1) alone: no value bytes.
                    length += (0 if new is None else len(new)) - (stop - start - 4)
                append(data[copied:pos])
                append(b"D" + pack(length))
                kept = pos + 5
                for start, stop, new in changes:
                    append(data[kept:start])
                    append(_NULL if new is None else pack(len(new)) + new)
                    kept = stop
                copied = kept
            pos = nxt
        return pos, copied

    def _rewrite_one(self, data: bytes, pos: int, end: int, copied: int, out: list[bytes]) -> tuple[int, int]:
        """`rewrite_run` for the common plan: one column, masked by a strategy."""
        unpack = _I32.unpack_from
        pack = _I32.pack
        append = out.append
        slot = self.slots[0]
        target = slot.index
        masker = slot.masker
        assert masker is not None
        masked = 0
        while end - pos >= 5 and data[pos] == 0x44:
            length = unpack(data, pos + 1)[0]
            nxt = pos + 1 + length
            if length < 4 or nxt > end:
                break
            if (data[pos + 5] << 8) | data[pos + 6] > target:
                at = pos + 7
                for _ in range(target):
                    size = unpack(data, at)[0]
                    at += 4 + (size if size > 0 else 0)
                size = unpack(data, at)[0]
                if size >= 0:
                    stop = at + 4 + size
                    if stop > nxt:
                        raise ProtocolViolation("DataRow: a field runs past the end of the row")
                    new = masker(data[at + 4 : stop])
                    masked += 1
                    append(data[copied:pos])
                    if new is None:
                        append(b"D" + pack(length - size) + data[pos + 5 : at] + _NULL)
                    else:
                        append(b"D" + pack(length + len(new) - size) + data[pos + 5 : at] + pack(len(new)) + new)
                    copied = stop
            pos = nxt
        slot.count += masked
        return pos, copied

    def _rewrite_emails(self, data: bytes, pos: int, end: int, copied: int, out: list[bytes]) -> tuple[int, int]:
        """`_rewrite_one` for the `email` masker of a text column, done here instead of by a
        call per value: a plain address `local@domain` (`plain_addresses`) becomes
        `****@domain`, so a rebuilt row differs from the original only in its length, the
        field's length and the local part, which is cut out; `@domain` and the rest of the
        row go out with the next slice. The loop takes every value for plain and checks them
        all at once at the end; if one is not, the run is done again by `_rewrite_one`, which
        keeps this result set from then on. Anything unusual in a row (a short or malformed
        one) also ends the loop and is left to `_rewrite_one`."""
        unpack = _I32.unpack_from
        target = self.slots[0].index
        between = range(target - 1)  # the fields between the first and the masked one
        pieces: list[bytes] = []
        append = pieces.append
        values: list[bytes] = []
        keep = values.append
        first_pos, first_copied = pos, copied
        # A row is read in one struct call up to the masked field's length (or, further on,
        # the second field's) when its field count and first field's length (its `prefix`)
        # are the last row's: a key or a fixed-width type first, they seldom change.
        size_prefix = 6 if target else 2
        guess = b""
        width = 0
        read = _row_reader(size_prefix, width)
        rebuild = _row_builder(size_prefix, width)
        offset = 5 + size_prefix + 4  # where the value after `read`'s last length starts
        last = end - offset
        while pos <= last:
            kind, length, prefix, head, size = read(data, pos)
            nxt = pos + 1 + length
            if kind != b"D" or nxt > end:  # not a DataRow, or not all of it
                break
            if prefix != guess:  # not the last row's prefix: read this row again with its own
                count = int.from_bytes(prefix[:2], "big")
                if count <= target:  # no such field: the row stays as it is
                    if length < 4:  # too short for a DataRow: the session's to refuse
                        break
                    pos = nxt
                    continue
                guess = prefix
                width = max(int.from_bytes(prefix[2:], "big", signed=True), 0)
                read = _row_reader(size_prefix, width)
                rebuild = _row_builder(size_prefix, width)
                offset = 5 + size_prefix + width + 4
                last = end - offset
                continue
            start = pos + offset
            if between:  # the second field's length was read: walk on to the masked one
                at = start - 4
                for _ in between:
                    at += 4 + (size if size > 0 else 0)
                    if at + 4 > nxt:
                        break
                    size = unpack(data, at)[0]
                start = at + 4
                if start > nxt:  # a malformed row: `_rewrite_one` has the last word on it
                    break
                head = data[pos + 11 : at]
                rebuild = _row_builder(6, at - pos - 11)
            elif start > nxt:  # (likewise)
                break
            if size >= 0:
                stop = start + size
                if stop > nxt:
                    break
                value = data[start:stop]
                keep(value)
                local = value.find(b"@")  # -1 when none: the check at the end says no
                cut = local - 4  # "****" takes the local part's place
                append(data[copied : pos + 1])
                append(rebuild(length - cut, prefix, head, size - cut, b"****"))
                copied = start + local
            pos = nxt
        if values:
            if not plain_addresses(values):
                self._emails = False
                return self._rewrite_one(data, first_pos, end, first_copied, out)
            out += pieces
            self.slots[0].count += len(values)
        return self._rewrite_one(data, pos, end, copied, out)

    def counts(self) -> dict[str, int]:
        return {slot.name: slot.count for slot in self.slots if slot.count}


class _NullPlan(_Plan):
    """Every value of every row becomes NULL (see `PgResultMasking._unknown_plan`)."""

    __slots__ = ()

    def __init__(self, key: bytes) -> None:
        super().__init__([], key)

    def rewrite_run(self, data: bytes, pos: int, end: int, copied: int, out: list[bytes]) -> tuple[int, int]:
        unpack = _I32.unpack_from
        while end - pos >= 5 and data[pos] == 0x44:
            length = unpack(data, pos + 1)[0]
            nxt = pos + 1 + length
            if length < 4 or nxt > end:
                break
            count = (data[pos + 5] << 8) | data[pos + 6]
            body = data[pos + 5 : pos + 7] + _NULL * count
            out.append(data[copied:pos])
            out.append(b"D" + _I32.pack(len(body) + 4) + body)
            copied = pos = nxt
        return pos, copied


def _detect(slot: _Slot, value: bytes, key: bytes) -> bytes | None:
    """A text value with what the content detectors find redacted; `value` itself when they
    find nothing; None (SQL NULL) when a `null` detector mask found something."""
    try:
        text = value.decode(slot.codec)
    except UnicodeDecodeError:
        return value
    changed = False
    for detectors, strategy, _mask_id in slot.detectors:
        text, found = detectors.redact(text, strategy, key=key)
        if found and strategy is MaskStrategy.NULL:
            return None
        changed = changed or found > 0
    return text.encode(slot.codec, "replace") if changed else value


# ---------------------------------------------------------------------------- pending requests


@dataclass(slots=True)
class _Statement:
    sql: bytes  # the text as the client sent it, decoded only when needed (`_text`)
    encoding: str  # the client encoding it was sent in
    fields: bytes | None = None  # the RowDescription's payload, from a Describe of the statement


@dataclass(slots=True)
class _Portal:
    statement: _Statement | None
    # The Bind's result formats; None while not read: a portal described right after its
    # Bind (libpq, pgbench) seldom needs them, so its Bind's payload is kept (`bind`, the
    # formats at `formats_at`) until the Describe is answered, and read only if needed.
    formats: tuple[int, ...] | None
    fields: bytes | None = None  # the RowDescription's payload, from a Describe of the portal
    plan: _Plan | None = None
    planned: bool = False
    bind: bytes = b""
    formats_at: int = 0

    def result_formats(self) -> tuple[int, ...]:
        formats = self.formats
        if formats is None:
            formats = self.formats = _result_formats(self.bind, self.formats_at)
            self.bind = b""
        return formats


# One client request whose response has not been seen complete yet, as a plain tuple (one
# per message on the hot path, so nothing else is built; Sync and FunctionCall share one):
# (kind, name, text, extra).
#   kind: "Q" query, "P" parse, "B" bind, "DS"/"DP" describe of a statement / portal,
#         "X" execute, "C" close, "S" sync, "F" function call;
#   name: the statement or portal (Close: b"S" or b"P", then the name);
#   text: a Query's SQL bytes (without the NUL), a Bind's payload;
#   extra: the client encoding a Query was sent in, where a Bind's statement name ends.
# How many of a Query's statements have completed is `PgResultMasking._results` (only the
# head's is ever counted).
_Pending = tuple[str, bytes, bytes, Any]
_SYNC: Final[_Pending] = ("S", b"", b"", None)
_CALL: Final[_Pending] = ("F", b"", b"", None)
_NOTHING: Final[_Pending] = ("", b"", b"", None)  # the head when nothing is pending


@functools.lru_cache(maxsize=64)
def _codec_of(client_encoding: str) -> str:
    return pg_codec(client_encoding)


def _text(sql: bytes, client_encoding: str) -> str:
    """A statement's text, decoded as the server reads it (invalid bytes replaced)."""
    return sql.decode(_codec_of(client_encoding), "replace")


class PgResultMasking:
    """The masking filter of one session (see the module docstring)."""

    def __init__(self, masks: Callable[[], SessionMasks | None], catalog: CatalogCache,
                 client_encoding: Callable[[], str], *, journaled: bool = False) -> None:
        self._masks = masks
        self._journaled = journaled  # keep counts of masked values for the session's journal
        self._catalog = catalog
        self._encoding = client_encoding
        self._pending: deque[_Pending] = deque()
        self._results = 0  # the statements of the Query at the head of `_pending` whose results completed
        self._statements: dict[bytes, _Statement] = {}
        self._portals: dict[bytes, _Portal] = {}
        self._upstream_partial = b""  # a message sent upstream, cut between two writes
        self._buffer = b""  # upstream bytes not processed yet (a partial message, or waiting)
        self.waiting: CatalogRequest | None = None
        self._plan: _Plan | None = None  # the result set being relayed
        self._refusing_copy = False
        self._copy: CopyRowRewriter | None = None  # the text/CSV COPY TO whose rows are rewritten
        self._masked: deque[dict[str, int]] = deque()  # per completed result set, in order
        self._skip = 0  # bytes of a large client CopyData still to pass unobserved
        self._plan_ready = False  # the plan of the result being relayed is chosen
        # What `from_upstream` / `resume` returned last is whole DataRows only (none too short
        # to be valid): the session need not walk it again.
        self.rows_only = False

    # ------------------------------------------------------------------ client -> upstream

    def to_upstream(self, data: bytes) -> None:
        """Observe bytes the session sends upstream (whole or cut messages, in order)."""
        if self._skip:  # the rest of a large CopyData that is not kept
            taken = min(self._skip, len(data))
            self._skip -= taken
            data = data[taken:]
        if self._upstream_partial:
            data = self._upstream_partial + data
            self._upstream_partial = b""
        pos, end = 0, len(data)
        while end - pos >= 5:
            msg_type, length = _HEADER.unpack_from(data, pos)
            nxt = pos + 1 + length
            if nxt > end:
                if msg_type == b"d":
                    self._skip = nxt - end
                    pos = end
                break
            if msg_type not in (b"d", b"c", b"f", b"H"):  # COPY from the client, Flush: no answer
                self._client_message(msg_type, data, pos + 5, nxt)
            pos = nxt
        self._upstream_partial = data[pos:] if pos < end else b""

    def _client_message(self, msg_type: bytes, data: bytes, start: int, end: int) -> None:
        """Track one message whose payload is `data[start:end]` (read in place: only what is
        kept is copied; SQL is decoded when a plan or a COPY needs it, see `_text`)."""
        pending = self._pending
        if msg_type == b"Q":
            pending.append(("Q", b"", data[start : end - 1], self._encoding()))
        elif msg_type == b"B":
            portal_end = data.index(b"\x00", start, end)
            stmt_end = data.index(b"\x00", portal_end + 1, end)
            pending.append(("B", data[start:portal_end], data[start:end], stmt_end - start))
        elif msg_type == b"E":
            pending.append(("X", data[start : data.index(b"\x00", start, end)], b"", None))
        elif msg_type == b"S":
            pending.append(_SYNC)
        elif msg_type == b"D":
            pending.append(("DS" if data[start : start + 1] == b"S" else "DP", data[start + 1 : end - 1], b"", None))
        elif msg_type == b"P":
            name_end = data.index(b"\x00", start, end)
            sql_end = data.index(b"\x00", name_end + 1, end)
            name = data[start:name_end]
            self._statements[name] = _Statement(data[name_end + 1 : sql_end], self._encoding())
            pending.append(("P", name, b"", None))
        elif msg_type == b"C":
            pending.append(("C", data[start : start + 1] + data[start + 1 : end - 1], b"", None))
        elif msg_type == b"F":
            pending.append(_CALL)

    # ------------------------------------------------------------------ upstream -> client

    def from_upstream(self, data: bytes) -> bytes:
        """The bytes to hand on to the session for `data` from upstream (rewritten where
        needed). While `waiting`, everything is kept and b"" returned."""
        if self._buffer:
            data = self._buffer + data
            self._buffer = b""
        if self.waiting is not None:
            self._buffer = data
            return b""
        return self._process(data)

    def resume(self) -> bytes:
        """Go on after the catalog was filled; may stop again (check `waiting`)."""
        self.waiting = None
        data, self._buffer = self._buffer, b""
        return self._process(data) if data else b""

    def masked_counts(self) -> tuple[tuple[str, int], ...]:
        """For the oldest completed result set the session has not journaled yet: how many
        values of which columns were masked (for the journal; never the values)."""
        if not self._masked:
            return ()
        counts = self._masked.popleft()
        return tuple(sorted(counts.items())) if counts else ()

    def _process(self, data: bytes) -> bytes:
        out: list[bytes] = []
        pos, end, copied = 0, len(data), 0
        unpack = _HEADER.unpack_from
        row_header = _ROW_HEADER.unpack_from
        rows_only = True
        while end - pos >= 5:
            msg_type, length = unpack(data, pos)
            nxt = pos + 1 + length
            if nxt > end:
                break
            if msg_type == b"D" and length >= 4:  # (a shorter one is the session's to refuse)
                if not self._plan_ready:
                    self._choose_plan()
                    if self.waiting is not None:
                        break
                plan = self._plan
                if plan is None:  # nothing to mask: skip the run of rows, copied later in one slice
                    pos = nxt
                    last = end - 5
                    while pos <= last:
                        kind, length = row_header(data, pos)
                        nxt = pos + 1 + length
                        if kind != b"D" or length < 4 or nxt > end:
                            break
                        pos = nxt
                else:
                    pos, copied = plan.rewrite_run(data, pos, end, copied, out)
                continue
            rows_only = False
            if msg_type == b"D":
                pos = nxt
                continue
            replacement = self._server_message(msg_type, data, pos, nxt)
            if self.waiting is not None:
                break
            if replacement is not None:
                out.append(data[copied:pos])
                out.append(replacement)
                copied = nxt
            pos = nxt
        out.append(data[copied:pos])
        self._buffer = data[pos:]
        self.rows_only = rows_only
        return out[0] if len(out) == 1 else b"".join(out)

    def _server_message(self, msg_type: bytes, data: bytes, pos: int, nxt: int) -> bytes | None:
        """Track one non-DataRow message; the bytes to send instead, or None for unchanged."""
        pending = self._pending
        head = pending[0] if pending else _NOTHING
        kind = head[0]
        if self._refusing_copy:
            if msg_type in (b"d", b"c"):
                return b""
            if msg_type in (b"C", b"E", b"Z"):
                self._refusing_copy = False
                if msg_type == b"C":
                    self._end_result(kind, reported=False)
                    return b""
        copy = self._copy
        if copy is not None:
            if msg_type == b"d":
                new = copy.rewrite(data[pos + 5 : nxt])
                return None if new is None else b"d" + _I32.pack(len(new) + 4) + new
            if msg_type == b"c":
                return None
            self._copy = None  # CommandComplete, or an error ends the copy
            if msg_type == b"C":
                if self._journaled:
                    self._masked.append(copy.counts())
                self._end_result(kind, reported=False)
                return None
        if msg_type == b"T":
            # Kept as bytes: a plan is looked up by them, and decoded only to build one.
            fields = data[pos + 5 : nxt]
            if kind == "Q":
                plan = self._plan_for(fields, None, head[2], head[3], self._results)
                if self.waiting is not None:
                    return None
                self._plan = plan
                self._plan_ready = True
            elif kind == "DP":
                portal = self._portals.get(head[1])
                if portal is not None:
                    portal.fields = fields
                    portal.planned = False
                    portal.bind = b""  # (its formats are not needed: the portal is described)
                pending.popleft()
            elif kind == "DS":
                statement = self._statements.get(head[1])
                if statement is not None:
                    statement.fields = fields
                pending.popleft()
        elif msg_type == b"Z":
            if kind in ("S", "Q", "F"):
                pending.popleft()
                self._results = 0
            self._plan = None
            self._plan_ready = False
            self._portals.pop(b"", None)
        elif msg_type in (b"C", b"I", b"s"):
            if msg_type == b"C" and data.startswith(_DDL_TAGS, pos + 5, nxt):
                self._catalog.expire()
            self._end_result(kind, reported=msg_type != b"s")
        elif msg_type == b"2":
            if kind == "B":
                pending.popleft()
                _, name, bind, statement_end = head
                statement = self._statements.get(bind[len(name) + 1 : statement_end])
                described = pending[0] if pending else _NOTHING
                if described[0] == "DP" and described[1] == name:
                    self._portals[name] = _Portal(statement, None, bind=bind, formats_at=statement_end + 1)
                else:
                    self._portals[name] = _Portal(statement, _result_formats(bind, statement_end + 1))
        elif msg_type == b"1" or msg_type == b"3" or msg_type == b"n":
            if kind in ("P", "C", "DS", "DP"):
                pending.popleft()
                name = head[1]
                if kind == "C" and name[:1] == b"P":
                    self._portals.pop(name[1:], None)
                elif kind == "C":
                    self._statements.pop(name[1:], None)
                elif kind == "DP" and (portal := self._portals.get(name)) is not None and portal.bind:
                    portal.result_formats()  # NoData: the Bind's payload is not kept longer
        elif msg_type == b"H":
            return self._copy_out(head, data[pos:nxt])
        elif msg_type in (b"E", b"N"):
            replacement = self._redact_error(data[pos:nxt])
            if msg_type == b"E" and kind != "Q" and kind:
                # Extended protocol: the server skips to the Sync.
                while pending and pending[0][0] != "S":
                    pending.popleft()
                self._results = 0
            self._plan = None
            self._plan_ready = False
            return replacement
        return None

    def _end_result(self, kind: str, *, reported: bool) -> None:
        """A result set ended (`kind`: of the request at the head of the queue): with
        CommandComplete / EmptyQueryResponse (`reported`: the session journals its outcome,
        with the counts of masked values), or suspended (a portal's next Execute goes on
        counting)."""
        plan = self._plan
        if plan is not None and not self._journaled:
            for slot in plan.slots:
                slot.count = 0
        if reported and self._journaled:
            counts: dict[str, int] = {}
            if plan is not None:
                counts = plan.counts()
                for slot in plan.slots:
                    slot.count = 0
            self._masked.append(counts)
        self._plan = None
        self._plan_ready = False
        if kind == "Q":
            self._results += 1
        elif kind == "X":
            self._pending.popleft()

    # ------------------------------------------------------------------ building plans

    def _codec(self) -> str:
        return _codec_of(self._encoding())

    def _plan_for(self, payload: bytes, formats: tuple[int, ...] | None, sql: bytes, sql_encoding: str,
                  index: int) -> _Plan | None:
        """The plan of a result set whose RowDescription has `payload`, from the cache when a
        result looked the same before (the common case: nothing decoded, nothing built).
        `formats`: a Bind's result formats, for a RowDescription from a Describe of the
        statement; `sql` (as sent, in `sql_encoding`) and `index`: the statement (its index
        in a simple Query, -1 for the extended protocol's single statement), decoded and
        analysed only when a computed column needs its lineage.

        What a plan depends on is in its key or drops it: the RowDescription and `formats`,
        the session's masks (by identity: a reloaded policy or another role gives another
        object; content detectors and the hash key are in it), the client encoding, the
        statement (with the encoding it was sent in) when its lineage is read, and the
        catalog, whose `changed` (an expiry, DDL, an answer filled in) empties the cache."""
        masks = self._masks()
        if masks is None:
            return None
        catalog = self._catalog
        if monotonic() - catalog.loaded_at > CATALOG_TTL:  # (`catalog.stale()`, inlined)
            catalog.expire()
        plans = catalog.plans
        key: tuple[object, ...] = (payload, formats, masks, self._encoding())
        found = plans.get(key, _Cached.MISSING)
        if found is _Cached.BY_STATEMENT:
            found = plans.get((*key, sql, sql_encoding, index), _Cached.MISSING)
        if found is None:
            return None
        if isinstance(found, _Plan):
            return found.fresh()
        fields = _row_description(payload)
        by_statement = masks.has_column_masks and any(f.table_oid == 0 for f in fields)
        lineage = _statement_lineage(_text(sql, sql_encoding), index) if by_statement else UNTRACEABLE
        plan = self._build(masks, fields, lineage, formats)
        too_large = len(payload) > _MAX_KEYED_PAYLOAD or (by_statement and len(sql) > _MAX_KEYED_SQL)
        if self.waiting is not None or too_large:
            return plan  # (not kept: waiting for the catalog, or too large a key)
        if len(plans) >= _MAX_PLANS - 1:
            plans.clear()
        if by_statement:
            plans[key] = _Cached.BY_STATEMENT
            key = (*key, sql, sql_encoding, index)
        plans[key] = plan
        return plan.fresh() if plan is not None else None

    def _build(self, masks: SessionMasks, fields: tuple[m.FieldDescription, ...], lineage: ResultLineage,
               formats: tuple[int, ...] | None = None) -> _Plan | None:
        """The plan of a result set (None: nothing to do; or, when `waiting`, the catalog
        must answer first). `lineage` is the statement's, read only when a column masks
        apply to is computed (no table OID): a column the server names needs none, which
        keeps ordinary queries off the parser."""
        catalog = self._catalog
        missing = frozenset(f.table_oid for f in fields if f.table_oid and f.table_oid not in catalog.relations)
        need_views = catalog.views is None and self._needs_views(fields, lineage, masks)
        if missing or need_views:
            self.waiting = CatalogRequest(missing, need_views)
            return None
        codec = self._codec()
        slots: list[_Slot] = []
        positions = lineage.columns if lineage.columns is not None and len(lineage.columns) == len(fields) else None
        for index, description in enumerate(fields):
            fmt = description.format_code
            if formats is not None:
                fmt = formats[0] if len(formats) == 1 else formats[index] if index < len(formats) else 0
            mask = self._column_mask(masks, description, positions[index] if positions is not None else lineage.sources)
            if mask is not None:
                column = PgColumn(description.type_oid, description.type_modifier, codec)
                slots.append(_Slot(index, description.name,
                                   build_masker(mask.strategy, column, WireFormat(fmt if fmt in (0, 1) else 0),
                                                key=masks.hash_key)))
            elif masks.content and description.type_oid in _DETECTED_TYPES:
                slots.append(_Slot(index, description.name, None,
                                   tuple((c.detectors, c.strategy, c.mask_id) for c in masks.content), codec))
        return _Plan(slots, masks.hash_key) if slots else None

    def _needs_views(self, fields: tuple[m.FieldDescription, ...], lineage: ResultLineage,
                     masks: SessionMasks) -> bool:
        if not masks.has_column_masks:
            return False
        if any(f.table_oid == 0 for f in fields):
            return bool(lineage.sources - {ANY_SOURCE})
        return any((rel := self._catalog.relations.get(f.table_oid)) is not None and rel.is_view for f in fields)

    def _column_mask(self, masks: SessionMasks, description: m.FieldDescription,
                     sources: frozenset[SourceColumn]) -> ColumnMask | None:
        if not masks.has_column_masks:
            return None
        if description.table_oid:
            relation = self._catalog.relations.get(description.table_oid)
            if relation is None:
                return masks.source(ANY_SOURCE)  # an OID the catalog does not know: fail closed
            column = relation.columns.get(description.column_number)
            if column is None:
                return masks.source(ANY_SOURCE)
            if not relation.is_view:
                return masks.column(relation.schema, relation.name, column)
            return masks.sources(self._expand(SourceColumn(relation.schema, relation.name, column), 0))
        refs: set[SourceColumn] = set()
        for ref in sources:
            refs.update(self._expand(ref, 0))
        return masks.sources(refs)

    def _expand(self, ref: SourceColumn, depth: int) -> Iterable[SourceColumn]:
        """`ref`, and when it names a view, what that view column comes from."""
        views = self._catalog.views
        if ref.table == "*" or not views:
            return (ref,)
        found: list[SourceColumn] = [ref]
        for (schema, name), view in views.items():
            if name != ref.table or (ref.schema is not None and ref.schema != schema):
                continue
            if depth >= MAX_VIEW_DEPTH:
                return (ANY_SOURCE,)
            lineage = view.lineage
            if ref.column != "*" and ref.column not in view.columns:
                continue  # the view has no such column: the value comes from elsewhere
            if ref.column == "*" or lineage.columns is None or len(lineage.columns) != len(view.columns):
                inner = lineage.sources
            else:
                inner = lineage.columns[view.columns.index(ref.column)]
            for source in inner:
                found.extend(self._expand(source, depth + 1))
        return found

    def _choose_plan(self) -> None:
        """Before the first DataRow of a result: the plan of an Execute's portal (a Query's
        plan was chosen at its RowDescription)."""
        head = self._pending[0] if self._pending else _NOTHING
        kind = head[0]
        self._plan = None
        if kind == "X":
            portal = self._portals.get(head[1])
            if portal is None:
                self._plan = self._unknown_plan()
            else:
                if not portal.planned:
                    portal.plan = self._portal_plan(portal)
                    if self.waiting is not None:
                        return
                    portal.planned = True
                self._plan = portal.plan
        elif kind != "Q":
            self._plan = self._unknown_plan()
        self._plan_ready = True

    def _portal_plan(self, portal: _Portal) -> _Plan | None:
        fields, formats = portal.fields, None
        statement = portal.statement
        if fields is None and statement is not None:
            fields = statement.fields
            if fields is not None:
                formats = portal.result_formats()
        if fields is None:
            return self._unknown_plan()
        if statement is None:
            return self._plan_for(fields, formats, b"", "", -1)
        return self._plan_for(fields, formats, statement.sql, statement.encoding, -1)

    def _unknown_plan(self) -> _Plan | None:
        """Rows whose columns nobody described (the client executed without a Describe of a
        statement it prepared before masking could see it): nothing is known of their types,
        so with column masks in force every value becomes NULL."""
        masks = self._masks()
        if masks is None or not masks.has_column_masks:
            return None
        return _NullPlan(masks.hash_key)

    # ------------------------------------------------------------------ COPY and errors

    def _copy_out(self, head: _Pending, raw: bytes) -> bytes | None:
        """A CopyOutResponse. When a copied column may carry a masked value (or, text-typed, one
        the content detectors read), a text or CSV copy's rows are rewritten from here on; a
        binary copy, or one whose statement cannot be read, is refused (column masks only)."""
        masks = self._masks()
        if masks is None:
            return None
        if self._catalog.stale():
            self._catalog.expire()
        source = self._copy_source(head)
        statement = copy_statement(*source) if source is not None else None
        binary = raw[5:6] != b"\x00"
        if statement is None or binary or statement.options.format == "binary":
            return self._refuse_copy(masks, source, binary=binary)
        width = _I16.unpack_from(raw, 6)[0]
        columns = self._copy_columns(masks, statement, source, width)
        if columns is not None:  # None: waiting for the catalog
            self._copy = self._copy_rewriter(masks, statement, width, columns)
        return None

    def _copy_source(self, head: _Pending) -> tuple[str, int] | None:
        """The text of the statement a CopyOutResponse answers, and its index in that text."""
        kind = head[0]
        if kind == "Q":
            return _text(head[2], head[3]), self._results
        if kind == "X":
            portal = self._portals.get(head[1])
            if portal is not None and portal.statement is not None:
                return _text(portal.statement.sql, portal.statement.encoding), -1
        return None

    def _refuse_copy(self, masks: SessionMasks, source: tuple[str, int] | None, *, binary: bool) -> bytes | None:
        """The ErrorResponse sent in place of a copy whose rows cannot be rewritten, when any
        column it copies may carry a masked value (views followed: they may wait for the
        catalog); None to let it run."""
        if not masks.has_column_masks:
            return None
        if self._catalog.views is None:
            self.waiting = CatalogRequest(frozenset(), True)
            return None
        lineage = _copy_lineage(source) if source is not None else UNTRACEABLE
        refs: set[SourceColumn] = set()
        for ref in lineage.sources or {ANY_SOURCE}:
            refs.update(self._expand(ref, 0))
        if masks.sources(refs) is None:
            return None
        self._refusing_copy = True
        if binary:
            return m.error(_SQLSTATE_REFUSED, "dbguard: binary COPY TO STDOUT of masked columns is refused",
                           detail="The copied columns may carry values a mask rule covers; rows in binary "
                                  "format are not rewritten.",
                           hint="COPY in text or CSV format, or SELECT the rows: masked columns come back masked.")
        return m.error(_SQLSTATE_REFUSED, "dbguard: COPY TO STDOUT of masked columns is refused",
                       detail="The copied columns may carry values a mask rule covers, and the COPY "
                              "statement could not be read to rewrite its rows.",
                       hint="SELECT the rows instead: masked columns come back masked.")

    def _copy_columns(self, masks: SessionMasks, statement: CopyStatement, source: tuple[str, int] | None,
                      width: int) -> list[_CopiedColumn] | None:
        """Per copied column: its name, mask and type; None while the catalog is asked (the
        views, and for COPY table the relations of that name)."""
        catalog = self._catalog
        need_views = catalog.views is None and masks.has_column_masks
        relation = statement.relation
        if (relation is not None and not need_views and not masks.content
                and masks.sources(self._expand(SourceColumn(relation[0], relation[1], "*"), 0)) is None):
            return []  # no mask can cover a column of this table: nothing to look up
        names = frozenset({relation}) if relation is not None and relation not in catalog.named else frozenset()
        if need_views or names:
            self.waiting = CatalogRequest(frozenset(), need_views, names)
            return None
        if relation is None:
            return self._query_columns(masks, statement, source, width)
        return self._table_columns(masks, statement, relation, width)

    def _table_columns(self, masks: SessionMasks, statement: CopyStatement, relation: tuple[str | None, str],
                       width: int) -> list[_CopiedColumn]:
        """COPY table [(columns)]: each column's mask and type from the relations of that name
        whose columns fit the copy (all of them when an unqualified name is in several schemas:
        the strictest mask; a type they agree on, else text). A table the catalog does not know
        is masked by name (its columns as the statement lists them, or the whole row)."""
        fitting = [(rel, attnums) for rel in self._catalog.named.get(relation, ())
                   if (attnums := rel.copied(statement.columns, width)) is not None]
        listed = statement.columns if len(statement.columns) == width else ()
        found: list[_CopiedColumn] = []
        for i in range(width):
            refs: set[SourceColumn] = set()
            types: set[tuple[int, int]] = set()
            names: list[str] = []
            for rel, attnums in fitting:
                name = rel.columns[attnums[i]]
                names.append(name)
                types.add(rel.types.get(attnums[i], _TEXT_TYPE))
                refs.update(self._expand(SourceColumn(rel.schema, rel.name, name), 0))
            if not fitting:
                name = listed[i] if listed else "*"
                names.append(listed[i] if listed else "?column?")
                refs.update(self._expand(SourceColumn(relation[0], relation[1], name), 0))
            mask = masks.sources(refs) if masks.has_column_masks else None
            type_oid, typmod = types.pop() if len(types) == 1 else _TEXT_TYPE
            found.append(_CopiedColumn(names[0], mask, type_oid, typmod))
        return found

    def _query_columns(self, masks: SessionMasks, statement: CopyStatement, source: tuple[str, int] | None,
                       width: int) -> list[_CopiedColumn]:
        """COPY (query): each column's mask from the query's lineage (views followed), typed
        text: the server does not say the types of a copy."""
        lineage = _copy_lineage(source) if source is not None else UNTRACEABLE
        positions = lineage.columns if lineage.columns is not None and len(lineage.columns) == width else None
        names = statement.names if statement.names is not None and len(statement.names) == width else None
        found: list[_CopiedColumn] = []
        for i in range(width):
            mask = None
            if masks.has_column_masks:
                refs: set[SourceColumn] = set()
                for ref in positions[i] if positions is not None else lineage.sources or {ANY_SOURCE}:
                    refs.update(self._expand(ref, 0))
                mask = masks.sources(refs)
            found.append(_CopiedColumn(names[i] if names is not None else "?column?", mask, *_TEXT_TYPE))
        return found

    def _copy_rewriter(self, masks: SessionMasks, statement: CopyStatement, width: int,
                       columns: list[_CopiedColumn]) -> CopyRowRewriter | None:
        """The rewriter of a copy's rows, or None when no column has anything to mask."""
        codec = copy_codec(statement.options, self._codec())
        planned: list[CopyColumn] = []
        for index, column in enumerate(columns):
            if column.mask is not None:
                masker = build_masker(column.mask.strategy, PgColumn(column.type_oid, column.typmod, codec),
                                      WireFormat.TEXT, key=masks.hash_key)
                planned.append(CopyColumn(index, column.name, masker))
            elif masks.content and column.type_oid in _DETECTED_TYPES:
                planned.append(CopyColumn(index, column.name, None,
                                          tuple((c.detectors, c.strategy) for c in masks.content)))
        return CopyRowRewriter(statement.options, width, planned, codec, masks.hash_key) if planned else None

    def _redact_error(self, raw: bytes) -> bytes | None:
        masks = self._masks()
        if masks is None:
            return None
        try:
            message = m.decode_backend(raw[:1], raw[5:])
        except ProtocolViolation:
            return None
        assert isinstance(message, m.ErrorOrNotice)
        quoting = masks.has_column_masks and (message.sqlstate or "")[:2] in ("22", "23")
        changed = False
        fields: list[tuple[str, str]] = []
        for code, value in message.fields:
            new = value
            if code in ("M", "D", "W", "H", "p", "q"):
                if quoting and code in ("M", "D"):
                    new = _QUOTED.sub('"****"', new)
                    new = _VALUE_LIST.sub(r"\1(****)", new)
                for content in masks.content:
                    new, _count = content.detectors.redact(new, content.strategy, key=masks.hash_key)
            changed = changed or new != value
            fields.append((code, new))
        if not changed:
            return None
        return m.ErrorOrNotice(tuple(fields), notice=message.notice).encode()


# A data error quotes the offending value in double quotes; an integrity error's detail
# lists values in parentheses after "=" or "contains".
_QUOTED: Final = re.compile(r'"(?:[^"]|"")*"')
_VALUE_LIST: Final = re.compile(r"(=|contains )\((?:[^()]|\([^()]*\))*\)")


def _statement_lineage(sql: str, index: int) -> ResultLineage:
    """The lineage of the `index`-th statement of a simple Query's text; for -1, of the
    extended protocol's statement (untraceable when the statement is not known)."""
    if index < 0:
        return result_lineage(sql) if sql else UNTRACEABLE
    lineages = statements_lineage(sql)
    return lineages[index] if index < len(lineages) else UNTRACEABLE


class _CopiedColumn(NamedTuple):
    """One column of a COPY TO as masking sees it."""

    name: str
    mask: ColumnMask | None
    type_oid: int
    typmod: int


_TEXT_TYPE: Final = (25, -1)  # a copied column whose type is not known is read as text


def _copy_lineage(source: tuple[str, int]) -> ResultLineage:
    """The lineage of the statement at `index` of `sql` (the last one for -1)."""
    sql, index = source
    lineages = statements_lineage(sql)
    return lineages[index] if -len(lineages) <= index < len(lineages) else UNTRACEABLE


def _row_description(payload: bytes) -> tuple[m.FieldDescription, ...]:
    message = m.decode_backend(b"T", payload)
    assert isinstance(message, m.RowDescription)
    return message.fields


def _result_formats(payload: bytes, pos: int) -> tuple[int, ...]:
    """The result-column format codes at the end of a Bind body that starts at `pos` (after
    the statement name)."""
    count = _I16.unpack_from(payload, pos)[0]
    pos += 2 + 2 * count
    params = _I16.unpack_from(payload, pos)[0]
    pos += 2
    for _ in range(params):
        length = _I32.unpack_from(payload, pos)[0]
        pos += 4 + (length if length > 0 else 0)
    results = _I16.unpack_from(payload, pos)[0]
    return struct.unpack_from(f"!{results}h", payload, pos + 2) if results else ()
