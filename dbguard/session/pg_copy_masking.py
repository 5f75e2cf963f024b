"""COPY TO STDOUT rows of PostgreSQL rewritten so masked values come back masked (sans-IO;
docs/masking.md).

Owns: what masking needs to know of a COPY statement (`copy_statement`: the copied table and
column list or the query, and the options the server formats rows with: FORMAT, DELIMITER,
NULL, QUOTE, ESCAPE, HEADER, FORCE_QUOTE, ENCODING, with PostgreSQL's defaults), and
`CopyRowRewriter`, which rewrites one CopyData payload of a text or CSV copy (the server sends
exactly one row per CopyData, its newline included): fields split and de-escaped as a COPY
FROM would read them, each planned column's masker or content detectors applied, new values
escaped or quoted as COPY TO writes them. A header line goes out unchanged, a row with nothing
to change as its original bytes, and a row it cannot read as all NULLs (fail closed: never the
raw line).

Must not: decide which columns are masked (`session.pg_masking` does, from the catalog and the
statement's lineage), frame or read wire messages, do I/O, or keep values (only counts per
column).
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

from pglast.parser import parse_sql_json

from dbguard.masking.columns import pg_codec
from dbguard.masking.detectors import DetectorSet
from dbguard.masking.strategies import Masker
from dbguard.policy.rules import MaskStrategy
from dbguard.sql import MAX_ANALYSED_CHARS

__all__ = ["CopyColumn", "CopyOptions", "CopyRowRewriter", "CopyStatement", "copy_codec", "copy_statement"]

Node = dict[str, Any]

FORMATS: Final = ("text", "csv", "binary")
_TEXT_ESCAPES: Final = {"\b": "\\b", "\f": "\\f", "\n": "\\n", "\r": "\\r", "\t": "\\t", "\v": "\\v"}
_TEXT_UNESCAPES: Final = {"b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t", "v": "\v"}
# A backslash sequence of the text format: octal, hex, or one character (\N is handled before).
_TEXT_SEQUENCE: Final = re.compile(r"\\(?:([0-7]{1,3})|x([0-9A-Fa-f]{1,2})|(.))", re.DOTALL)
_TRUE: Final = frozenset({"true", "on", "1", "yes", "t", "y"})
_FALSE: Final = frozenset({"false", "off", "0", "no", "f", "n"})


@dataclass(frozen=True, slots=True)
class CopyOptions:
    """How the server formats the rows of one COPY TO (PostgreSQL's defaults per format)."""

    format: str = "text"  # text | csv | binary
    delimiter: str = "\t"
    null: str = "\\N"
    quote: str = '"'  # CSV only
    escape: str = '"'  # CSV only
    header: bool = False
    encoding: str | None = None  # ENCODING 'name': rows in that encoding, not client_encoding
    force_quote: frozenset[str] | None = frozenset()  # CSV columns always quoted; None: FORCE_QUOTE *


@dataclass(frozen=True, slots=True)
class CopyStatement:
    """A COPY ... TO STDOUT as masking needs it."""

    options: CopyOptions
    relation: tuple[str | None, str] | None  # COPY table: (schema or None, name); None: COPY (query)
    columns: tuple[str, ...] = ()  # COPY table (columns): the list; () for every column
    names: tuple[str, ...] | None = None  # COPY (query): its output names, when they can be told


def copy_statement(sql: str, index: int = -1) -> CopyStatement | None:
    """The statement at `index` of `sql` (default: the last) when it is a COPY TO STDOUT whose
    options are valid; None otherwise (parse error, another statement, a file or program)."""
    return _copy_statement(sql, index)


@functools.lru_cache(maxsize=256)
def _copy_statement(sql: str, index: int) -> CopyStatement | None:
    if len(sql) > MAX_ANALYSED_CHARS:  # as sql.pg_lineage: too costly to read, so not read
        return None
    try:
        stmts = [raw["stmt"] for raw in json.loads(parse_sql_json(sql)).get("stmts", ()) if "stmt" in raw]
        body = stmts[index].get("CopyStmt")
    except Exception:  # a parse error, no such statement, a tree too deep
        return None
    if not isinstance(body, dict) or body.get("is_from") or body.get("filename") or body.get("is_program"):
        return None
    options = _options(body.get("options") or ())
    if options is None:
        return None
    if "query" in body:
        return CopyStatement(options, None, names=_output_names(body["query"]))
    relation = body.get("relation") or {}
    if "relname" not in relation:
        return None
    columns = tuple(str(item["String"]["sval"]) for item in body.get("attlist") or () if "String" in item)
    return CopyStatement(options, (relation.get("schemaname"), str(relation["relname"])), columns)


def _options(items: Sequence[Node]) -> CopyOptions | None:
    """The options of a CopyStmt, PostgreSQL's defaults filled in; None when one is not valid."""
    given: dict[str, Node | None] = {}
    for item in items:
        elem = item.get("DefElem", {})
        given[str(elem.get("defname", "")).lower()] = elem.get("arg")
    fmt = _string(given.get("format"), "text")
    if fmt not in FORMATS:
        return None
    csv = fmt == "csv"
    delimiter = _string(given.get("delimiter"), "," if csv else "\t")
    null = _string(given.get("null"), "" if csv else "\\N")
    quote = _string(given.get("quote"), '"')
    escape = _string(given.get("escape"), quote)
    header = _header(given["header"]) if "header" in given else False
    encoding = _string(given["encoding"], "") if "encoding" in given else None
    if header is None or any(len(char) != 1 for char in (delimiter, quote, escape)):
        return None
    force: frozenset[str] | None = frozenset()
    if "force_quote" in given:
        arg = given["force_quote"] or {}
        names = arg.get("List", {}).get("items", ())
        force = None if "A_Star" in arg else frozenset(str(n["String"]["sval"]) for n in names if "String" in n)
    return CopyOptions(fmt, delimiter, null, quote, escape, header, encoding or None, force)


def _string(arg: Node | None, default: str) -> str:
    if arg is None:
        return default
    if "String" in arg:
        return str(arg["String"].get("sval", ""))
    return default


def _header(arg: Node | None) -> bool | None:
    """HEADER's value: no argument is true; a boolean, 0/1 or true/false/on/off; None: not a
    choice for COPY TO (MATCH)."""
    if arg is None:
        return True
    if "Boolean" in arg:
        return bool(arg["Boolean"].get("boolval", False))
    if "Integer" in arg:
        value = arg["Integer"].get("ival", 0)
        return bool(value) if value in (0, 1) else None
    text = _string(arg, "").lower()
    return True if text in _TRUE else False if text in _FALSE else None


def _output_names(query: Node) -> tuple[str, ...] | None:
    """The column names a plain SELECT's result gets (PostgreSQL's FigureColname, for the
    common forms); None when a `*` or a set operation hides them."""
    select = query.get("SelectStmt")
    if not isinstance(select, dict):
        return None
    while select.get("op", "SETOP_NONE") != "SETOP_NONE":
        select = select.get("larg") or {}
    names: list[str] = []
    for target in select.get("targetList") or ():
        res = target.get("ResTarget", {})
        name = res.get("name") or _figure_name(res.get("val") or {})
        if name is None:
            return None
        names.append(name)
    return tuple(names) if names else None


def _figure_name(value: Node) -> str | None:
    if "ColumnRef" in value:
        last = value["ColumnRef"].get("fields", [{}])[-1]
        return str(last["String"]["sval"]) if "String" in last else None  # `*`: unknown
    if "FuncCall" in value:
        return str(value["FuncCall"]["funcname"][-1]["String"]["sval"])
    if "TypeCast" in value:
        inner = _figure_name(value["TypeCast"].get("arg") or {})
        if inner is not None and inner != "?column?":
            return inner
        names = value["TypeCast"].get("typeName", {}).get("names", [])
        return str(names[-1]["String"]["sval"]) if names and "String" in names[-1] else "?column?"
    return "?column?"


def copy_codec(options: CopyOptions, client_codec: str) -> str:
    """The Python codec of the copy's rows: its ENCODING option's, else the client's."""
    if options.encoding is None:
        return client_codec
    compact = re.sub(r"[^A-Z0-9]", "", options.encoding.upper())
    for name in (options.encoding, compact, _PG_NAMES.get(compact, compact)):
        codec = pg_codec(name)
        if codec != "ascii":
            return codec
    return "ascii"


# Encoding names PostgreSQL accepts written without separators, for those whose canonical
# name has some (pg_codec knows the canonical names).
_PG_NAMES: Final = {"UNICODE": "UTF8", "ISO88595": "ISO_8859_5", "ISO88596": "ISO_8859_6",
                    "ISO88597": "ISO_8859_7", "ISO88598": "ISO_8859_8", "EUCJP": "EUC_JP",
                    "EUCCN": "EUC_CN", "EUCKR": "EUC_KR", "EUCJIS2004": "EUC_JIS_2004",
                    "SHIFTJIS": "SJIS", "MSKANJI": "SJIS", "SHIFTJIS2004": "SHIFT_JIS_2004",
                    "ISO885915": "LATIN9", "ISO88591": "LATIN1", "ISO88592": "LATIN2",
                    "WINDOWS1252": "WIN1252", "WINDOWS1251": "WIN1251", "WINDOWS1250": "WIN1250",
                    "KOI8": "KOI8R"}


# ---------------------------------------------------------------------------- rows


@dataclass(slots=True)
class CopyColumn:
    """A copied column with something to do: its position, the name counts are kept under,
    its masker (None: content detection only), its detectors."""

    index: int
    name: str
    masker: Masker | None
    detectors: tuple[tuple[DetectorSet, MaskStrategy], ...] = ()
    count: int = 0


class _Malformed(Exception):
    """A row that does not read as `width` fields of the copy's format."""


class CopyRowRewriter:
    """Rewrites the rows of one text or CSV COPY TO STDOUT (see the module docstring)."""

    def __init__(self, options: CopyOptions, width: int, columns: Sequence[CopyColumn], codec: str,
                 key: bytes) -> None:
        if options.format not in ("text", "csv"):
            raise ValueError(f"COPY rows in {options.format} format are not rewritten")
        self.options = options
        self.width = width
        self.columns = tuple(columns)
        self.codec = codec
        self._key = key
        self._header = options.header
        self._csv = options.format == "csv"
        delim = options.delimiter
        self._escapes = str.maketrans({"\\": "\\\\", **_TEXT_ESCAPES, **({} if delim in _TEXT_ESCAPES
                                                                        else {delim: "\\" + delim})})
        self._text_field = re.compile(rf"(?:[^\\{re.escape(delim)}]++|\\.)*+", re.DOTALL)
        q, e, d = (re.escape(c) for c in (options.quote, options.escape, delim))
        inner = f"(?:[^{q}]|{q}{q})*+" if options.quote == options.escape else f"(?>[^{q}{e}]|{e}[{q}{e}]|{e})*+"
        self._csv_quoted = re.compile(f"{q}({inner}){q}")
        self._csv_field = re.compile(f"(?:[^{q}{d}\\n\\r]++|{q}{inner}{q})*+")
        self._csv_unescape = re.compile(f"{e}([{q}{e}])")
        force = options.force_quote
        self._forced = frozenset(c.index for c in self.columns if force is None or c.name in force)

    def counts(self) -> dict[str, int]:
        """Masked values per column name so far (never the values)."""
        found: dict[str, int] = {}
        for column in self.columns:
            if column.count:
                found[column.name] = found.get(column.name, 0) + column.count
        return found

    def rewrite(self, payload: bytes) -> bytes | None:
        """The new payload of one CopyData, or None to relay the original bytes."""
        if self._header:
            self._header = False
            return None
        line = payload.decode(self.codec, "surrogateescape")
        try:
            if not line.endswith("\n"):
                raise _Malformed
            new = self._rewrite_csv(line[:-1]) if self._csv else self._rewrite_text(line[:-1])
        except _Malformed:
            for column in self.columns:
                column.count += 1
            new = self.options.delimiter.join([self.options.null] * self.width)
        return None if new is None else (new + "\n").encode(self.codec, "surrogateescape")

    # ------------------------------------------------------------------ text format

    def _rewrite_text(self, line: str) -> str | None:
        fields = self.split_text(line)
        null = self.options.null
        changed = False
        for column in self.columns:
            raw = fields[column.index]
            if raw == null:
                continue  # NULL stays NULL
            new = self._apply(column, unescape_text(raw))
            if not isinstance(new, _Same):
                fields[column.index] = null if new is None else self.escape_text(new)
                changed = True
        return self.options.delimiter.join(fields) if changed else None

    def split_text(self, line: str) -> list[str]:
        """The raw (still escaped) fields of a text-format line without its newline."""
        delim = self.options.delimiter
        fields = line.split(delim) if "\\" not in line else self._split_escaped(line, delim)
        if len(fields) != self.width or "\n" in line or "\r" in line:  # COPY escapes both
            raise _Malformed
        return fields

    def _split_escaped(self, line: str, delim: str) -> list[str]:
        fields: list[str] = []
        pos, end = 0, len(line)
        while True:
            stop = self._text_field.match(line, pos)
            assert stop is not None  # the pattern matches the empty string
            fields.append(line[pos : stop.end()])
            pos = stop.end()
            if pos == end:
                return fields
            if line[pos] != delim:  # a backslash at the very end
                raise _Malformed
            pos += 1

    def escape_text(self, value: str) -> str:
        """A value as COPY TO writes it in text format."""
        return value.translate(self._escapes)

    # ------------------------------------------------------------------ CSV

    def _rewrite_csv(self, line: str) -> str | None:
        fields = self.split_csv(line)
        null = self.options.null
        changed = False
        for column in self.columns:
            raw = fields[column.index]
            if raw == null:
                continue  # unquoted and equal to the NULL string: NULL stays NULL
            new = self._apply(column, self.unquote_csv(raw))
            if not isinstance(new, _Same):
                fields[column.index] = null if new is None else self.quote_csv(new, column.index in self._forced)
                changed = True
        return self.options.delimiter.join(fields) if changed else None

    def split_csv(self, line: str) -> list[str]:
        """The raw (still quoted) fields of a CSV line without its final newline."""
        delim = self.options.delimiter
        if self.options.quote not in line:
            fields = line.split(delim)
            if "\n" in line or "\r" in line:
                raise _Malformed
        else:
            fields = []
            pos, end = 0, len(line)
            while True:
                stop = self._csv_field.match(line, pos)
                assert stop is not None  # the pattern matches the empty string
                fields.append(line[pos : stop.end()])
                pos = stop.end()
                if pos == end:
                    break
                if line[pos] != delim:  # an unterminated quote, a bare newline
                    raise _Malformed
                pos += 1
        if len(fields) != self.width:
            raise _Malformed
        return fields

    def unquote_csv(self, raw: str) -> str:
        """A CSV field's value: quoted parts without their quotes, escapes resolved."""
        if self.options.quote not in raw:
            return raw
        options = self.options
        if options.quote == options.escape:
            pair, quote = options.quote * 2, options.quote
            return self._csv_quoted.sub(lambda m: m.group(1).replace(pair, quote), raw)
        unescape = self._csv_unescape
        return self._csv_quoted.sub(lambda m: unescape.sub(r"\1", m.group(1)), raw)

    def quote_csv(self, value: str, forced: bool = False) -> str:
        """A value as COPY TO writes it in CSV: quoted when FORCE_QUOTE says so, when it equals
        the NULL string (so it does not read as NULL), when it holds the delimiter, the quote, a
        newline or a carriage return, or when it is `\\.` alone on its line."""
        options = self.options
        quote = options.quote
        if not (forced or value == options.null or options.delimiter in value or quote in value
                or "\n" in value or "\r" in value or (self.width == 1 and value == "\\.")):
            return value
        escape = options.escape
        inner = value.replace(escape, escape + escape) if escape != quote else value
        return quote + inner.replace(quote, escape + quote) + quote

    # ------------------------------------------------------------------ values

    def _apply(self, column: CopyColumn, value: str) -> str | _Same | None:
        """The masked value (None: NULL), or _SAME when the detectors found nothing."""
        masker = column.masker
        if masker is not None:
            column.count += 1
            new = masker(value.encode(self.codec, "surrogateescape"))
            return None if new is None else new.decode(self.codec, "surrogateescape")
        text, changed = value, False
        for detectors, strategy in column.detectors:
            text, found = detectors.redact(text, strategy, key=self._key)
            if found and strategy is MaskStrategy.NULL:
                column.count += 1
                return None
            changed = changed or found > 0
        if not changed:
            return _SAME
        column.count += 1
        return text


class _Same:
    """The value stays as it was."""


_SAME: Final = _Same()


def unescape_text(raw: str) -> str:
    """A text-format field's value (not the NULL string): backslash sequences resolved as COPY
    FROM reads them. An octal or hex escape gives a byte; one of 0x80 and above is kept as the
    surrogate `surrogateescape` encodes back to that byte."""
    if "\\" not in raw:
        return raw
    return _TEXT_SEQUENCE.sub(_unescape_one, raw)


def _unescape_one(match: re.Match[str]) -> str:
    octal, hexa, char = match.groups()
    if char is not None:
        return _TEXT_UNESCAPES.get(char, char)
    byte = int(octal, 8) & 0xFF if octal is not None else int(hexa, 16)
    return chr(byte) if byte < 0x80 else chr(0xDC00 + byte)
