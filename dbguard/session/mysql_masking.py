"""Masking MySQL/MariaDB results (docs/masking.md): which column gets which mask, and the rows,
ERR packets and catalog reads that carry them (sans-IO, pure).

Owns: the per-result-set plan (`ResultPlan`, built once from the column definitions, the
statement's lineage and the session's `SessionMasks`), rewriting text-protocol rows
(COM_QUERY) and binary-protocol rows (COM_STMT_EXECUTE / COM_STMT_FETCH), redacting ERR
messages, counting masked values per column for the journal, one command's response
(`ResponseMasking`: which statement each result set belongs to), and the session's view of
the catalog (`Catalog`, read with dbguard's own `CATALOG_QUERY`; `CatalogReader` reads its
answer).

How a column's mask is found. The sources of the column's values are, first, the statement's
lineage at the column's position (`sql.mysql_lineage`, when the number of columns matches),
plus the column definition's `schema.org_table.org_name` when that table is known to the
catalog; without positional lineage, the definition's table column when known, else every
source of the statement. Every source is then looked up in the catalog: a base table (or a
system schema) stays as is; a view is replaced by the sources of that view column, read from
its definition (views over views too), because the server names the view, not its base table,
in both the column definition and the SQL; a table the catalog does not know (a temporary
table, one created since the catalog was read, an unknown schema) is "anything", which gets
the strictest column mask of the session, and makes the session read the catalog again after
the response. The mask is the strictest of the sources' masks (`SessionMasks.sources`). So a
view cannot hide a masked column: either its definition is read, or it is unknown and
everything is masked.

Content detectors (`detect:` masks) run on every text column (a string type in a non-binary
character set, or JSON) that no column mask covers; a `null` detector mask makes the value
NULL when anything is found.

Plans are kept per session (`Catalog.plans`), by the column definitions' bytes and what else
they depend on (the statement's lineage, by value, the session's masks, the protocol); the
catalog drops them whenever it changes, so a result like an earlier one is neither decoded nor
planned again. Lineages are kept for the process by the message's integer shape
(`lineage_of_message`), so a text query with new integers is not parsed again.

The session's hot path (`MysqlSession.upstream_fast`) walks a masked response through
`FastMasking`, a copy of the response's state written back only when it relays the whole read
as it came: it plans each result on the way and checks the read's rows together
(`ResultPlan.rows_unchanged`: when the plan only detects, in ASCII-transparent character sets,
one detector pre-check over all the values joined); anything masking would change goes to the
general path.

Rows: a plan with nothing to do relays rows as they came (`rewrites` False, worked out once per
plan: no per-row work). Otherwise each row is decoded, the values of the columns with a mask or
detectors (only those) replaced and, only when a value changed, encoded again. Lengths are
recomputed; a row that needs another number of 16 MiB packets than it came in shifts the
sequence ids of the rest of the response (`ResponseMasking.shift`, the session applies it).

ERR messages: when a column mask may apply to what the statement reads or writes, values the
server quotes (`Duplicate entry '...' for key 'k'`, `Incorrect ... value: '...'`) are replaced
by `****` (identifiers after `key`, `column`, `table`... are kept); content detectors always run
on ERR messages. SHOW WARNINGS output is a result set like any other (its `Message` column is
text: content detectors only).

Must not: do I/O, know the session's state machine, or decide policy (`masking.session_masks`).
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable, Sequence
from dataclasses import InitVar, dataclass, field
from typing import Final

from dbguard.masking.columns import ColumnKind, MysqlColumn, WireFormat, mysql_charset, shape_of
from dbguard.masking.detectors import DetectorSet, compile_detectors
from dbguard.masking.session_masks import ColumnMask, ContentMask, SessionMasks
from dbguard.masking.strategies import Masker, build_masker
from dbguard.model import ANY_SOURCE, UNTRACEABLE, ResultLineage, SourceColumn
from dbguard.policy.gate import MAX_CACHED_TEXT, mysql_integer_shape_key
from dbguard.policy.rules import MaskStrategy
from dbguard.sql.mysql_lineage import ViewLineage, statements_lineage, view_lineage
from dbguard.wire.mysql import messages as m
from dbguard.wire.mysql.packets import PayloadReader, ProtocolViolation

__all__ = [
    "CATALOG_QUERY",
    "Catalog",
    "CatalogFailed",
    "CatalogReader",
    "ResponseMasking",
    "ResultPlan",
    "build_plan",
    "redact_error_message",
]

# dbguard's own query for the catalog: every table and view outside the system schemas, with
# the view definitions the service account may read.
CATALOG_QUERY: Final = bytes((m.Command.QUERY,)) + (
    b"SELECT t.TABLE_SCHEMA, t.TABLE_NAME, t.TABLE_TYPE, v.VIEW_DEFINITION "
    b"FROM information_schema.TABLES t LEFT JOIN information_schema.VIEWS v "
    b"ON v.TABLE_SCHEMA = t.TABLE_SCHEMA AND v.TABLE_NAME = t.TABLE_NAME "
    b"WHERE t.TABLE_SCHEMA NOT IN ('information_schema', 'performance_schema', 'mysql', 'sys')"
)
_CATALOG_COLUMNS: Final = 4
MAX_CATALOG_ENTRIES: Final = 200_000
MAX_CATALOG_FAILURES: Final = 3
SYSTEM_SCHEMAS: Final = frozenset({"information_schema", "performance_schema", "mysql", "sys"})
_MAX_VIEW_DEPTH: Final = 8
_ANYTHING: Final = frozenset({ANY_SOURCE})
_BINARY_CHARSET: Final = 63
_REDACTED: Final = "****"
# Bounds of a session's plan cache: entries (when full it starts again empty), and the bytes
# of column definitions a key may hold (a wider result is planned each time).
_MAX_PLANS: Final = 128
_MAX_KEYED_DEFINITIONS: Final = 8192
_EXTENDED_TYPE_INFO: Final = int(m.Capability.MARIADB_EXTENDED_TYPE_INFO)


# ----------------------------------------------------------------------------- the catalog


class CatalogFailed(Exception):
    """The server answered CATALOG_QUERY with an ERR (its message is in the exception)."""


class Catalog:
    """What the session knows of the server's tables and views (names compared without case).

    `stale`: read it again at the next occasion (never read, DDL ran, an unknown table was
    met); `missed`: unknown names met since the last read (each asks for one read only)."""

    def __init__(self) -> None:
        self.loaded = False
        self.stale = True
        self._tables: dict[tuple[str, str], str | None] = {}  # None: base table; else a view's definition
        self._missed: set[tuple[str, str]] = set()
        self._tried: set[tuple[str, str]] = set()  # unknown at the last read: not asked again
        self._expanded: dict[SourceColumn, frozenset[SourceColumn]] = {}
        self._failures = 0
        # Counts changes to what the session knows (`replace`, `invalidate`); the result plans
        # built from it (`ResponseMasking._build`), dropped with each change. Per session as
        # this catalog is; a session meets few distinct results, so a small bound will do.
        self.generation = 0
        self.plans: dict[tuple[object, ...], ResultPlan] = {}

    def replace(self, entries: Iterable[tuple[str, str, str | None]]) -> None:
        """A new read: (schema, table, view definition or None for a base table)."""
        self._tables = {(schema.lower(), table.lower()): view for schema, table, view in entries}
        self._failures = 0
        self._tried |= self._missed
        self._missed.clear()
        self._expanded.clear()
        self.loaded = True
        self.stale = False
        self._changed()

    def invalidate(self) -> None:
        """DDL ran: read again, and give names unknown so far another chance."""
        self.stale = True
        self._failures = 0
        self._tried.clear()
        self._changed()

    def _changed(self) -> None:
        self.generation += 1
        self.plans.clear()

    def failed(self) -> None:
        """The read failed: every table is unknown (masked strictly); read again at once, up
        to MAX_CATALOG_FAILURES times in a row (a server's transient error), then only after
        the next DDL."""
        failures = self._failures + 1
        self.replace(())
        self._failures = failures
        self.stale = failures < MAX_CATALOG_FAILURES

    def expand(self, sources: Iterable[SourceColumn]) -> frozenset[SourceColumn]:
        """Sources named by base tables only: views replaced by what they read, unknown tables
        by ANY_SOURCE."""
        found: set[SourceColumn] = set()
        for source in sources:
            found |= self._expand(source, 0)
        return frozenset(found)

    def _expand(self, source: SourceColumn, depth: int) -> frozenset[SourceColumn]:
        if source.table == "*":
            return frozenset({source})
        cached = self._expanded.get(source)
        if cached is not None:
            return cached
        found = self._resolve(source, depth)
        if len(self._expanded) > 4096:
            self._expanded.clear()
        self._expanded[source] = found
        return found

    def _resolve(self, source: SourceColumn, depth: int) -> frozenset[SourceColumn]:
        if source.schema is None:
            return _ANYTHING
        schema = source.schema.lower()
        if schema in SYSTEM_SCHEMAS:
            return frozenset({source})
        key = (schema, source.table.lower())
        if key not in self._tables:
            if key not in self._tried:
                self._missed.add(key)
                self.stale = True
            return _ANYTHING
        definition = self._tables[key]
        if definition is None:
            return frozenset({source})
        if not definition or depth >= _MAX_VIEW_DEPTH:
            return _ANYTHING  # a definition the account may not read, or views too deep
        view: ViewLineage = view_lineage(definition, schema=source.schema)
        inner = view.sources if source.column == "*" else view.column(source.column)
        found: set[SourceColumn] = set()
        for each in inner:
            found |= self._expand(each, depth + 1)
        return frozenset(found)

    def known(self, schema: str, table: str) -> bool:
        return schema.lower() in SYSTEM_SCHEMAS or (schema.lower(), table.lower()) in self._tables


class CatalogReader:
    """Consumes the response to CATALOG_QUERY; `feed` returns the entries with its last packet."""

    def __init__(self, *, deprecate_eof: bool) -> None:
        self._columns_left = -1
        self._eof_left = 0 if deprecate_eof else 1
        self._entries: list[tuple[str, str, str | None]] = []
        self.truncated = False  # more than MAX_CATALOG_ENTRIES: not usable

    def feed(self, payload: bytes) -> list[tuple[str, str, str | None]] | None:
        if m.is_err(payload):
            raise CatalogFailed(m.ErrPacket.decode(payload).message.decode("utf-8", "replace"))
        if self._columns_left < 0:
            count = PayloadReader(payload, "catalog column count").lenenc_int()
            if count != _CATALOG_COLUMNS:
                raise ProtocolViolation(f"catalog query: {count} columns, expected {_CATALOG_COLUMNS}")
            self._columns_left = count
            return None
        if self._columns_left > 0:
            self._columns_left -= 1
            return None
        if self._eof_left > 0:
            if not m.is_eof(payload):
                raise ProtocolViolation("catalog query: no EOF after the column definitions")
            self._eof_left -= 1
            return None
        if payload[:1] == b"\xfe" and len(payload) < 0xFFFFFF:
            return self._entries
        schema, table, kind, definition = m.decode_text_row(payload, _CATALOG_COLUMNS)
        if schema is None or table is None:
            raise ProtocolViolation("catalog query: NULL table name")
        if len(self._entries) >= MAX_CATALOG_ENTRIES:
            self.truncated = True
            return None
        view = (kind or b"").upper() == b"VIEW"
        self._entries.append((schema.decode("utf-8", "replace"), table.decode("utf-8", "replace"),
                              (definition or b"").decode("utf-8", "replace") if view else None))
        return None


# ----------------------------------------------------------------------------- the plan


@dataclass(slots=True)
class _Column:
    """What happens to one column's values."""

    name: str
    masker: Masker | None = None  # a column mask
    content: tuple[ContentMask, ...] = ()  # detectors, for a text column no column mask covers
    codec: str = "utf-8"
    json: bool = False


# Lineages by the message's integer shape (`policy.gate.mysql_integer_shape_key`), so that a
# text query whose integers change every time (sysbench's point selects) is parsed once, not
# per execution. Lineage does not depend on integer values (a function's sources are all its
# arguments', whatever picks among them: `ELT(1, ssn, name)`); strings are in the key as written.
_LINEAGES: dict[tuple[bytes, str | None, tuple[bool, bool]], tuple[ResultLineage, ...]] = {}
_MAX_LINEAGES: Final = 2048


def lineage_of_message(sql: str, database: str | None, sql_mode: tuple[bool, bool]) -> tuple[ResultLineage, ...]:
    """`statements_lineage` of a message, cached by its integer shape when it has one."""
    ansi_quotes, no_backslash_escapes = sql_mode
    shape = mysql_integer_shape_key(sql.encode("utf-8", "surrogateescape"), no_backslash_escapes)
    if shape is None:
        return statements_lineage(sql, current_database=database, ansi_quotes=ansi_quotes,
                                  no_backslash_escapes=no_backslash_escapes)
    key = (shape, database, sql_mode)
    found = _LINEAGES.get(key)
    if found is None:
        found = statements_lineage(sql, current_database=database, ansi_quotes=ansi_quotes,
                                   no_backslash_escapes=no_backslash_escapes)
        if len(_LINEAGES) >= _MAX_LINEAGES:
            _LINEAGES.clear()
        _LINEAGES[key] = found
    return found


# What `ResponseMasking` reads per response, by the message's exact text (a prepared statement's
# every execution, a query repeated as written): its statements' lineages (None when result
# sets cannot be matched to statements) and their union. A text whose integers change every
# time misses here and is found by its shape in `_LINEAGES`.
_LOADED: dict[tuple[str, str | None, tuple[bool, bool]], tuple[ResultLineage, tuple[ResultLineage, ...] | None]] = {}


def loaded_lineage(sql: str, database: str | None,
                   sql_mode: tuple[bool, bool]) -> tuple[ResultLineage, tuple[ResultLineage, ...] | None]:
    """The union of the lineages of a message's statements, and the lineages themselves (None
    when one of them cannot be traced)."""
    key = (sql, database, sql_mode)
    found = _LOADED.get(key)
    if found is not None:
        return found
    lineages = lineage_of_message(sql, database, sql_mode)
    if len(lineages) == 1:
        union = lineages[0]
    else:
        sources: set[SourceColumn] = set()
        for lineage in lineages:
            sources |= lineage.sources
        union = ResultLineage(None, frozenset(sources)) if lineages else ResultLineage((), frozenset())
    found = (union, None if any(lineage is UNTRACEABLE for lineage in lineages) else lineages)
    if len(sql) <= MAX_CACHED_TEXT:
        if len(_LOADED) >= _MAX_LINEAGES:
            _LOADED.clear()
        _LOADED[key] = found
    return found


@functools.cache
def ascii_transparent(codec: str) -> bool:
    """Whether `codec` reads every ASCII byte as that ASCII character (not so UTF-16 or UTF-32),
    so that ASCII-only values can be checked as bytes."""
    ascii_bytes = bytes(range(128))
    try:
        return ascii_bytes.decode(codec) == ascii_bytes.decode("ascii")
    except (UnicodeDecodeError, LookupError):
        return False


@dataclass(frozen=True, slots=True)
class _Work:
    """What a plan does to rows, worked out once per plan (not per result set or row): the
    columns with a mask or detectors, with their positions; and `batch`, the detectors of all
    of them when they only detect (no column mask, no JSON) in ASCII-transparent codecs, so
    that a batch of rows is cleared by one pre-check on their values joined
    (`DetectorSet.could_match`)."""

    active: tuple[tuple[int, _Column], ...]
    batch: DetectorSet | None

    @classmethod
    def of(cls, columns: Sequence[_Column]) -> _Work:
        active = tuple((i, column) for i, column in enumerate(columns) if column.masker is not None or column.content)
        batch = None
        if active and all(column.masker is None and not column.json and ascii_transparent(column.codec)
                          for _, column in active):
            names = sorted({str(detector) for _, column in active for mask in column.content
                            for detector in mask.detectors.detectors})
            batch = compile_detectors(names)
        return cls(active, batch)


@dataclass(slots=True)
class ResultPlan:
    """The plan of one result set: built once, then `row()` per row. `rewrites` False: rows go
    as they came. `counts`: values masked per column so far (for the journal)."""

    binary: bool
    types: tuple[int, ...]
    columns: tuple[_Column, ...]
    key: bytes = b""
    counts: dict[str, int] = field(default_factory=dict)
    # `fresh` hands on what `_Work` worked out.
    work: InitVar[_Work | None] = None
    _work: _Work = field(init=False, repr=False, compare=False)
    _active: tuple[tuple[int, _Column], ...] = field(init=False, repr=False, compare=False)
    rewrites: bool = field(init=False, repr=False, compare=False)

    def __post_init__(self, work: _Work | None) -> None:
        if work is None:
            work = _Work.of(self.columns)
        self._work = work
        self._active = work.active
        self.rewrites = bool(work.active)

    def fresh(self) -> ResultPlan:
        """A copy for one result set (its own counts): a plan `Catalog.plans` keeps is never
        used on rows itself."""
        return ResultPlan(self.binary, self.types, self.columns, self.key, work=self._work)

    def row(self, payload: bytes) -> bytes:
        """The row as the client gets it (the same object when nothing changed). Only the
        columns with a mask or detectors are looked at: the others' values stay as they are."""
        rewritten = self._rewritten(payload)
        if rewritten is None:
            return payload
        values, names = rewritten
        counts = self.counts
        for name in names:
            counts[name] = counts.get(name, 0) + 1
        return m.encode_binary_row(values, self.types) if self.binary else m.encode_text_row(values)

    def rows_unchanged(self, payloads: Sequence[bytes]) -> bool:
        """Whether `row()` would give each of these rows as it came (nothing counted). When
        the plan only detects, their values are first checked together: ASCII values, joined,
        that no detector's pre-check takes are clear. ProtocolViolation for a malformed row."""
        if not self.rewrites:
            return True
        batch = self._work.batch
        if batch is not None:
            binary, types, count = self.binary, self.types, len(self.types)
            # One column (lookups, lists of names): its values read in place, no row lists.
            values = m.lone_string_values(payloads, types[0], binary) if count == 1 else None
            if values is None:
                values = []
                for payload in payloads:
                    row = m.decode_binary_row(payload, types) if binary else m.decode_text_row(payload, count)
                    values.extend(value for i, _ in self._active if (value := row[i]) is not None)
            joined = b"\n".join(values)
            if joined.isascii() and not batch.could_match(joined.decode("ascii")):
                return True
        return all(self._rewritten(payload) is None for payload in payloads)

    def _rewritten(self, payload: bytes) -> tuple[list[bytes | None], list[str]] | None:
        """The row's values with the masked ones replaced and the masked columns' names; None
        when nothing changes."""
        values = m.decode_binary_row(payload, self.types) if self.binary else \
            m.decode_text_row(payload, len(self.types))
        names: list[str] | None = None
        for i, column in self._active:
            value = values[i]
            if value is None:
                continue
            masked = self._value(column, value)
            if masked is not value:
                values[i] = masked
                if names is None:
                    names = []
                names.append(column.name)
        return None if names is None else (values, names)

    def _value(self, column: _Column, value: bytes) -> bytes | None:
        if column.masker is not None:
            return column.masker(value)
        text = value.decode(column.codec, "surrogateescape")
        found = 0
        null = False
        for mask in column.content:
            if column.json:
                text, count = mask.detectors.redact_json(text, mask.strategy, key=self.key)
            else:
                text, count = mask.detectors.redact(text, mask.strategy, key=self.key)
            found += count
            null = null or (count > 0 and mask.strategy is MaskStrategy.NULL)
        if not found:
            return value
        if null:
            return None
        return text.encode(column.codec, "surrogateescape")

    def take_counts(self) -> tuple[tuple[str, int], ...]:
        counts = tuple(sorted(self.counts.items()))
        self.counts.clear()
        return counts


def _mysql_column(definition: m.ColumnDefinition41) -> MysqlColumn:
    return MysqlColumn(definition.type, definition.character_set, definition.column_length,
                       definition.decimals, definition.unsigned)


def _is_text(definition: m.ColumnDefinition41) -> tuple[bool, str, bool]:
    """(text, codec, json) for content detection."""
    column = _mysql_column(definition)
    shape = shape_of(column)
    if shape.kind is ColumnKind.JSON:
        return True, "utf-8", True
    if shape.kind is not ColumnKind.TEXT or definition.character_set == _BINARY_CHARSET:
        return False, "", False
    codec, _ = mysql_charset(definition.character_set)
    return codec is not None, codec or "", False


def _provenance(definition: m.ColumnDefinition41) -> SourceColumn | None:
    if not (definition.schema and definition.org_table and definition.org_name):
        return None
    return SourceColumn(definition.schema.decode("utf-8", "replace"), definition.org_table.decode("utf-8", "replace"),
                        definition.org_name.decode("utf-8", "replace"))


def column_sources(definitions: Sequence[m.ColumnDefinition41], lineage: ResultLineage,
                   catalog: Catalog) -> list[frozenset[SourceColumn]]:
    """The base-table sources each column's values may come from (see the module's docstring)."""
    positional = lineage.columns is not None and len(lineage.columns) == len(definitions)
    found: list[frozenset[SourceColumn]] = []
    for i, definition in enumerate(definitions):
        refs: set[SourceColumn] = set()
        origin = _provenance(definition)
        known = origin is not None and origin.schema is not None and catalog.known(origin.schema, origin.table)
        if origin is not None and known:
            refs.add(origin)
        if positional:
            assert lineage.columns is not None
            refs |= lineage.columns[i]
        elif not known:
            refs |= lineage.sources
        found.append(catalog.expand(refs))
    return found


def build_plan(definitions: Sequence[m.ColumnDefinition41], lineage: ResultLineage, masks: SessionMasks,
               catalog: Catalog, *, binary: bool) -> ResultPlan:
    """The plan of one result set."""
    sources = column_sources(definitions, lineage, catalog) if masks.has_column_masks else \
        [frozenset[SourceColumn]() for _ in definitions]
    fmt = WireFormat.BINARY if binary else WireFormat.TEXT
    columns: list[_Column] = []
    for definition, refs in zip(definitions, sources, strict=True):
        name = definition.name.decode("utf-8", "replace")
        mask: ColumnMask | None = masks.sources(refs) if refs else None
        if mask is not None:
            columns.append(_Column(name, masker=build_masker(mask.strategy, _mysql_column(definition), fmt,
                                                             key=masks.hash_key)))
            continue
        text, codec, json = _is_text(definition)
        if text and masks.content:
            columns.append(_Column(name, content=masks.content, codec=codec, json=json))
        else:
            columns.append(_Column(name))
    return ResultPlan(binary, tuple(d.type for d in definitions), tuple(columns), masks.hash_key)


# ----------------------------------------------------------------------------- errors

# Values the server quotes in its messages: the greedy `.*` runs to the last closing quote
# before the phrase that follows the value, so a value holding quotes is covered whole.
_QUOTED_VALUES: Final = (
    re.compile(r"(Duplicate entry ')(.*)(' for key ')", re.DOTALL),
    re.compile(r"(value: ')(.*)('(?: for column| for function| at row|\s*$))", re.DOTALL | re.IGNORECASE),
    re.compile(r"(value ')(.*)('(?: for column| for function| at row|\s*$))", re.DOTALL | re.IGNORECASE),
)
_QUOTED: Final = re.compile(r"'([^']*)'")
# A quoted word after one of these names an object, not a value.
_IDENTIFIER_WORDS: Final = frozenset({
    "key", "column", "table", "constraint", "function", "database", "index", "field", "schema", "user",
    "variable", "procedure", "view", "trigger", "savepoint", "event", "sequence", "partition", "engine",
    "plugin", "role", "server", "option", "collation", "charset", "set", "type", "storage", "file", "host",
    "command", "alias", "routine", "handler", "cursor", "label", "tablespace", "mode",
})


def _redact_values(message: str) -> tuple[str, int]:
    count = 0
    for pattern in _QUOTED_VALUES:
        message, n = pattern.subn(lambda found: found.group(1) + _REDACTED + found.group(3), message)
        count += n

    def other(found: re.Match[str]) -> str:
        nonlocal count
        before = message[:found.start()].rstrip().rsplit(None, 1)
        word = before[-1].lower().strip(":(") if before else ""
        if word in _IDENTIFIER_WORDS or found.group(1) == _REDACTED:
            return found.group(0)
        count += 1
        return "'" + _REDACTED + "'"

    return _QUOTED.sub(other, message), count


def redact_error_message(message: str, masks: SessionMasks, *, quoted_values: bool) -> tuple[str, int]:
    """An ERR message with quoted values (when `quoted_values`) and detected content redacted."""
    count = 0
    if quoted_values:
        message, count = _redact_values(message)
    for mask in masks.content:
        strategy = MaskStrategy.FULL if mask.strategy is MaskStrategy.NULL else mask.strategy
        message, found = mask.detectors.redact(message, strategy, key=masks.hash_key)
        count += found
    return message, count


def redact_error(payload: bytes, masks: SessionMasks, *, quoted_values: bool) -> bytes:
    """The ERR packet as the client gets it (the same object when nothing changed)."""
    packet = m.ErrPacket.decode(payload)
    message, count = redact_error_message(packet.message.decode("utf-8", "surrogateescape"), masks,
                                          quoted_values=quoted_values)
    if not count:
        return payload
    return m.ErrPacket(packet.errno, packet.sqlstate, message.encode("utf-8", "surrogateescape")).encode()


# ----------------------------------------------------------------------------- one response


@dataclass(slots=True)
class ResultProgress:
    """Where a response's masking is: the statement whose result comes next (`index`), the
    current result's column definitions as they came and how many there will be, and its plan
    once they are all in. Stepped through by the general path (`ResponseMasking`) and, on a
    copy, by the hot path (`FastMasking`)."""

    plan: ResultPlan | None = None
    index: int = 0
    definitions: list[bytes] = field(default_factory=list)
    expected: int = 0

    def column_count(self, count: int) -> None:
        self.definitions = []
        self.expected = count
        self.plan = None

    def definition(self, payload: bytes) -> bool:
        """True when this was the result's last definition (its plan is due)."""
        self.definitions.append(payload)
        return len(self.definitions) == self.expected

    def copy(self) -> ResultProgress:
        return ResultProgress(self.plan, self.index, list(self.definitions), self.expected)


class ResponseMasking:
    """Masking of one command's response: result sets (and OKs) follow the message's
    statements in order; each result set gets its plan when its last column definition is in.

    `lineages`: one per statement, or None when result sets cannot be matched to statements
    (a CALL, EXECUTE or unparseable statement among several): then every result set uses the
    union of all statements' sources, positions unknown."""

    def __init__(self, masks: SessionMasks, catalog: Catalog, *, sql: str, database: str | None,
                 binary: bool, sql_mode: tuple[bool, bool] = (False, False), tables: Iterable[str] = (),
                 plan: ResultPlan | None = None) -> None:
        self.masks = masks
        self.catalog = catalog
        self.binary = binary
        self._sql = sql
        self._database = database
        self._sql_mode = sql_mode  # (ANSI_QUOTES, NO_BACKSLASH_ESCAPES)
        # "database.table" the statement reads or writes: iterated each time an error needs it
        # (a list, or the session's lazy view of its decision; never a one-shot generator)
        self._tables = tables
        self._lineages: tuple[ResultLineage, ...] | None = None
        self._union: ResultLineage | None = None
        self.progress = ResultProgress(plan)  # `plan`: a cursor's, for COM_STMT_FETCH
        self.shift = 0  # sequence ids to add for the client (a row re-framed in another packet count)
        self.errors = 0

    # -- lineage ---------------------------------------------------------------------------

    def _load(self) -> None:
        if self._union is None:
            self._union, self._lineages = loaded_lineage(self._sql, self._database, self._sql_mode)

    def lineage(self, index: int | None = None) -> ResultLineage:
        """The lineage of the result set now coming (or of the `index`th)."""
        self._load()
        assert self._union is not None
        if index is None:
            index = self.progress.index
        if self._lineages is not None and index < len(self._lineages):
            return self._lineages[index]
        return self._union

    def sensitive(self) -> bool:
        """Whether a column mask may apply to what the statement reads: its lineage's sources,
        or (an INSERT, UPDATE...) any column of the tables it names."""
        if not self.masks.has_column_masks:
            return False
        self._load()
        assert self._union is not None
        refs = set(self._union.sources)
        for lineage in self._lineages or ():
            refs |= lineage.sources
        if self.masks.sources(self.catalog.expand(refs)) is not None:
            return True
        tables = {SourceColumn(name.split(".", 1)[0], name.split(".", 1)[1], "*") for name in self._tables
                  if "." in name}
        return self.masks.sources(self.catalog.expand(tables)) is not None

    # -- packets ---------------------------------------------------------------------------

    @property
    def plan(self) -> ResultPlan | None:
        """The current result set's plan (None until its definitions are all in)."""
        return self.progress.plan

    def column_count(self, count: int) -> None:
        self.progress.column_count(count)

    def definition(self, payload: bytes, capabilities: m.Capability) -> None:
        progress = self.progress
        if progress.definition(payload):
            progress.plan = self.build(progress.definitions, progress.index, capabilities)

    def fast_view(self) -> FastMasking:
        """The session's hot path's view of this masking, for one read (see `FastMasking`)."""
        return FastMasking(self, self.progress.copy())

    def build(self, definitions: Sequence[bytes], index: int, capabilities: m.Capability) -> ResultPlan:
        """The plan of the result whose column definitions are in, from the catalog's cache
        when a result looked the same before. Its key holds all `build_plan` reads but the
        catalog, which drops the cache when it changes: the definitions (their bytes, and the
        capability that changes how they read), the statement's lineage at this result (by
        value: the same statement with other literals shares it), the masks (by identity: a
        reloaded policy gives new ones) and the protocol."""
        lineage = self.lineage(index)
        extended = int(capabilities) & _EXTENDED_TYPE_INFO  # an int: IntFlag's own `&` is ~6x slower
        key = (*definitions, extended, self.binary, self.masks, lineage)
        plans = self.catalog.plans
        plan = plans.get(key)
        if plan is None:
            decoded = [m.ColumnDefinition41.decode(payload, capabilities) for payload in definitions]
            plan = build_plan(decoded, lineage, self.masks, self.catalog, binary=self.binary)
            if sum(len(payload) for payload in definitions) <= _MAX_KEYED_DEFINITIONS:
                if len(plans) >= _MAX_PLANS:
                    plans.clear()
                plans[key] = plan
        return plan.fresh()

    def row(self, payload: bytes) -> bytes:
        plan = self.plan
        if plan is None:
            raise ProtocolViolation("a row before its column definitions")
        return plan.row(payload) if plan.rewrites else payload

    def result_end(self) -> tuple[tuple[str, int], ...]:
        """The current result set is over: its masked counts; the next statement's comes next."""
        self.progress.index += 1
        return self.plan.take_counts() if self.plan is not None else ()

    def ok(self) -> None:
        self.progress.index += 1

    def error(self, payload: bytes) -> bytes:
        return redact_error(payload, self.masks, quoted_values=self.sensitive())


class FastMasking:
    """A `ResponseMasking` as the session's hot path (`MysqlSession.upstream_fast`) walks one
    read: the general path's steps (column count, definitions, rows, a result's end, an OK) on
    copies of the state, written back by `commit()` only when the hot path takes the whole read,
    so that a read it gives up on reaches the general path with nothing changed. The hot path
    only relays: a row that masking would change (`rows_unchanged` False), or a result's end
    while values of it were masked earlier, sends the read to the general path (as does a
    response whose end must read the catalog: the session checks that)."""

    __slots__ = ("_masking", "progress")

    def __init__(self, masking: ResponseMasking, progress: ResultProgress) -> None:
        self._masking = masking
        self.progress = progress

    @property
    def plan(self) -> ResultPlan | None:
        return self.progress.plan

    def column_count(self, count: int) -> None:
        self.progress.column_count(count)

    def definition(self, payload: bytes, capabilities: m.Capability) -> bool:
        """False: a malformed definition (the general path reports it)."""
        progress = self.progress
        if progress.definition(payload):
            try:
                progress.plan = self._masking.build(progress.definitions, progress.index, capabilities)
            except ProtocolViolation:
                return False
        return True

    def rows_unchanged(self, payloads: Sequence[bytes]) -> bool:
        """False: a row masking would change, or a malformed one (the general path's)."""
        plan = self.plan
        if plan is None:
            return False
        try:
            return plan.rows_unchanged(payloads)
        except ProtocolViolation:
            return False

    def result_end(self) -> bool:
        """The current result set ends; False when some of its values were masked (their
        counts go to the journal by the general path)."""
        plan = self.plan
        if plan is None or plan.counts:
            return False
        self.progress.index += 1
        return True

    def ok(self) -> None:
        self.progress.index += 1

    def commit(self) -> None:
        self._masking.progress = self.progress
