"""The runtime decision point: the SQL bytes of one session -> a Decision, fast.

Owns: turning a statement's bytes into text the way the server will read them (the session's
client encoding, strictly), the analysis and decision caches, per-session analysis state
(parse settings reported by the server, the search_path, SQL-level PREPARE names) and the
rendering of decisions the runtime cannot carry out (a hold, when no approval queue is open, is
a block).
On a miss it calls `dbguard.sql.analyse` and `dbguard.policy.engine.evaluate`.

Must not: do I/O, know wire formats, or block.

Caching (the hot path is a dictionary lookup):
- analysis by (exact bytes, parse settings), shared by every session of the listener;
- decisions by exact bytes, per *context* (identity, listener, database, parse settings): a
  decision depends on nothing else, except for statements that read or change session state
  (EXECUTE, PREPARE, DEALLOCATE, SET search_path), which are decided afresh each time;
- decisions by *shape* for simple-protocol texts that differ only in literal values (pgbench
  and ORMs inline them): the shape is computed only for pure-ASCII texts without quotes of
  other kinds, comments, dollar signs or backslashes, where a literal's boundaries cannot be in
  doubt, and only analyses that do not depend on literal values are cached that way;
- in front of the shape, decisions by *digit key* (every digit turned into 0, one C-speed
  `bytes.translate`), filled only from texts whose shape was cached and in which no digit
  follows a letter or underscore. Two texts with the same digit key have the same bytes
  except digit values at the same places; since the cached one's digits all start or continue
  numbers, so do the other's (their neighbours are the same bytes), and it passed the shape
  checks, so the other has the same shape: the digit key is exact, never a guess.
Every cache is bounded. A policy reload (`replace_policy`) starts new decision caches; every
open session notices at its next statement, so a tightened policy applies to live sessions too.

Imports: the MySQL analyser (`sql.mysql`, sqlglot) only once a MySQL session needs it, so a
proxy with PostgreSQL listeners only never loads it (docs/performance.md, "Memory").
"""

from __future__ import annotations

import dataclasses
import logging
import re
from collections.abc import Mapping
from typing import Final

from dbguard.model import (
    Action,
    Decision,
    Feature,
    ParseSettings,
    SessionInfo,
    StatementInfo,
    StatementKind,
    StatementSource,
)
from dbguard.policy.engine import evaluate
from dbguard.policy.rules import Policy
from dbguard.sql import analyse, unparseable

log = logging.getLogger("dbguard.policy")

# Entries per cache dictionary (FIFO eviction) and the longest text used as a cache key:
# longer texts (bulk INSERTs) are analysed each time rather than pinned in memory.
MAX_CACHE_ENTRIES: Final = 10_000
MAX_CACHED_TEXT: Final = 16 * 1024
MAX_CONTEXTS: Final = 1_000

# PostgreSQL's names for the client encodings, as Python codecs. An encoding missing here is
# decoded as UTF-8 strictly: text that is not valid UTF-8 then fails closed (unparseable).
PG_ENCODINGS: Final = {
    "UTF8": "utf-8", "SQL_ASCII": "ascii", "LATIN1": "latin-1", "LATIN2": "iso8859-2",
    "LATIN3": "iso8859-3", "LATIN4": "iso8859-4", "LATIN5": "iso8859-9", "LATIN6": "iso8859-10",
    "LATIN7": "iso8859-13", "LATIN8": "iso8859-14", "LATIN9": "iso8859-15", "LATIN10": "iso8859-16",
    "WIN1250": "cp1250", "WIN1251": "cp1251", "WIN1252": "cp1252", "WIN1253": "cp1253",
    "WIN1254": "cp1254", "WIN1255": "cp1255", "WIN1256": "cp1256", "WIN1257": "cp1257",
    "WIN1258": "cp1258", "WIN866": "cp866", "WIN874": "cp874", "KOI8R": "koi8-r", "KOI8U": "koi8-u",
    "ISO_8859_5": "iso8859-5", "ISO_8859_6": "iso8859-6", "ISO_8859_7": "iso8859-7",
    "ISO_8859_8": "iso8859-8", "SJIS": "cp932", "SHIFT_JIS_2004": "shift_jis_2004", "BIG5": "big5",
    "GBK": "gbk", "GB18030": "gb18030", "UHC": "cp949", "JOHAB": "johab", "EUC_JP": "euc_jp",
    "EUC_JIS_2004": "euc_jis_2004", "EUC_KR": "euc_kr", "EUC_CN": "gb2312",
}

# Features of statements that may run code dbguard does not see. After one of them, the
# session's SQL-level prepared statements may have been replaced behind dbguard's back.
_OPAQUE_FEATURES: Final = frozenset({Feature.UNTRUSTED_CODE, Feature.USER_CODE_CALL, Feature.DYNAMIC_SQL})
_TRANSACTION_ONLY: Final = frozenset({StatementKind.TRANSACTION})
_MULTI: Final = frozenset({Feature.MULTI_STATEMENT})
# ROLLBACK TO SAVEPOINT reverts settings but leaves the transaction (and its SET LOCALs) open.
_ROLLBACK_TO = re.compile(rb"\s*rollback\b.*\bto\b", re.IGNORECASE | re.DOTALL)
_SHAPE_KINDS: Final = frozenset({
    StatementKind.SELECT, StatementKind.INSERT, StatementKind.UPDATE, StatementKind.DELETE,
    StatementKind.TRANSACTION,
})
# A string literal, or a run of digits that is not part of an identifier (ASCII only).
_LITERAL = re.compile(rb"'[^']*'|(?<![A-Za-z_0-9])[0-9]+")
# What makes a text ineligible for shape caching: anything where a literal's extent depends on
# lexing rules beyond plain '...' strings and digits.
_SHAPE_UNSAFE = re.compile(rb'[^\x09\x0a\x0d\x20-\x7e]|[$\\"]|--|/\*')
_DIGITS_TO_ZERO: Final = bytes.maketrans(b"123456789", b"000000000")
# A digit right after a letter or underscore: part of an identifier (t1) or of a number's
# suffix (1e5); such texts never enter the digit-key cache.
_DIGIT_IN_WORD = re.compile(rb"[A-Za-z_][0-9]")
_SET_SEARCH_PATH = re.compile(
    r"\s*set\s+(?:session\s+|local\s+)?search_path\s*(?:to|=)\s*(.*?)[\s;]*\Z", re.IGNORECASE | re.DOTALL
)


# MySQL shapes (see `mysql_shape_key`). Every pattern works on bytes already checked to be
# printable ASCII, so every ASCII-compatible client character set reads them alike.
_MYSQL_NOT_PRINTABLE = re.compile(rb"[^\t\n\r\x20-\x7e]")
_MYSQL_STRING = re.compile(rb"'[^']*'")
# Outside string literals (whose bodies are gone by then): whatever starts a token or a comment
# whose extent depends on more than the rules this shape follows: double quotes (a string, or an
# identifier under ANSI_QUOTES), backticks, backslashes, user variables, `#`, `--`, `/*`, `*/`,
# and a quote right after a letter, digit, `_` or `$` (x'..', b'..', n'..', _charset'..').
_MYSQL_SHAPE_UNSAFE = re.compile(rb"[\\\"`#@]|--|/\*|\*/|[0-9A-Za-z_$]'")
# An integer literal: a digit run with no identifier character or '.' on either side (so not part
# of a name such as t1 or 1t, of a decimal or float such as 1.5, .5 or 1e5, or of 0x1F / 0b01),
# and not the exponent of a float such as 1e+5.
_MYSQL_INTEGER = re.compile(rb"(?<![0-9A-Za-z_$.])(?<![0-9.][eE][+-])[0-9]+(?![0-9A-Za-z_$.])")
# A digit that _MYSQL_INTEGER might leave in place: texts with one never enter the digit-key cache.
_MYSQL_DIGIT_KEPT = re.compile(rb"[A-Za-z_$.][0-9]|[0-9][A-Za-z_$.]|[eE][+-][0-9]")


def mysql_shape_key(sql: bytes, no_backslash_escapes: bool) -> bytes | None:
    """A MySQL/MariaDB text with the bodies of its '...' strings emptied and its integer literals
    turned into 0, or None when that cannot be done with certainty.

    Only for texts where the extent of every literal is beyond doubt: printable ASCII, no
    backslash at all while backslash escapes are on, and, outside string literals, none of what
    `_MYSQL_SHAPE_UNSAFE` lists (comments of any kind, versioned comments included, quoted
    identifiers, double-quoted text in either sql_mode, prefixed strings) and no unterminated
    string. In such a text the server's lexer meets only '...' strings (a doubled '' included:
    it reads as two adjacent '' pairs here, keeping the quotes where they were), and words,
    numbers and punctuation it reads the same way whatever the literal values: two texts with
    the same key differ only in string contents and integer values. Decimals, floats, hex and bit
    numbers stay as written (part of the key).
    """
    global _LAST_MYSQL_SHAPE
    last = _LAST_MYSQL_SHAPE
    if last is not None and last[1] is no_backslash_escapes and last[0] == sql:
        return last[2]
    key = _mysql_shape_key(sql, no_backslash_escapes)
    if type(sql) is bytes and len(sql) <= MAX_CACHED_TEXT:  # (immutable, and small: safe to keep)
        _LAST_MYSQL_SHAPE = (sql, no_backslash_escapes, key)
    return key


# The last text's shape key: the gate and then masking ask for the same text's key (a text
# query whose integers change every time misses the caches of both, and each needs the key).
_LAST_MYSQL_SHAPE: tuple[bytes, bool, bytes | None] | None = None


def _mysql_shape_key(sql: bytes, no_backslash_escapes: bool) -> bytes | None:
    if len(sql) > MAX_CACHED_TEXT or _MYSQL_NOT_PRINTABLE.search(sql):
        return None
    if not no_backslash_escapes and b"\\" in sql:
        return None
    shape = sql
    if b"'" in sql:
        shape = _MYSQL_STRING.sub(b"''", sql)
        if shape.count(b"'") & 1:
            return None  # an unterminated string
    if _MYSQL_SHAPE_UNSAFE.search(shape):
        return None
    return _MYSQL_INTEGER.sub(b"0", shape)


def mysql_integer_shape_key(sql: bytes, no_backslash_escapes: bool) -> bytes | None:
    """`mysql_shape_key` followed by the bodies of its strings, kept as written (NUL-separated:
    such texts hold no NUL): two texts with the same key differ only in the values of their
    integer literals. For what a string's value can change beyond a decision, such as the
    names a string alias gives (`SELECT a FROM (SELECT ssn AS 'a', name AS 'b') d`)."""
    shape = mysql_shape_key(sql, no_backslash_escapes)
    if shape is None:
        return None
    return b"\x00".join((shape, *_MYSQL_STRING.findall(sql)))


def pg_shape(sql: bytes) -> bytes | None:
    """The text with literal values replaced, or None when that cannot be done safely."""
    if len(sql) > MAX_CACHED_TEXT or _SHAPE_UNSAFE.search(sql):
        return None
    return _LITERAL.sub(b"?", sql)


def _parse_search_path(value: str) -> tuple[str, ...]:
    schemas = []
    for part in value.split(","):
        name = part.strip()
        if name.startswith('"') and name.endswith('"') and len(name) >= 2:
            name = name[1:-1].replace('""', '"')
        elif name.startswith("'") and name.endswith("'") and len(name) >= 2:
            name = name[1:-1]
        else:
            name = name.lower()
        if name and name != "$user":
            schemas.append(name)
    return tuple(schemas)


def _ends_transaction(info: StatementInfo) -> bool:
    """COMMIT, ROLLBACK and the like: they may revert settings made inside the transaction,
    which only matters when the session changed one (see PgSessionGate._settings_touched)."""
    return info.kinds == _TRANSACTION_ONLY and info.features <= _MULTI


def _render(decision: Decision, infos: tuple[StatementInfo, ...], holds: bool) -> Decision:
    """Adjust an engine decision for what the runtime can carry out: without an approval
    queue (`holds` False), a hold fails closed."""
    barrier = any((info.changes_parsing and not _ends_transaction(info)) or info.features & _OPAQUE_FEATURES
                  for info in infos)
    if decision.action is Action.HOLD and decision.enforced and not holds:
        # No approval queue to hold it in: a hold fails closed, saying so.
        details = dict(decision.details)
        details["approval"] = "unavailable"
        rule = decision.rule_ids[0] if decision.rule_ids else "?"
        reason = decision.reason.replace(f"dbguard: held by rule {rule}", f"dbguard: blocked by rule {rule}", 1)
        return dataclasses.replace(
            decision, action=Action.BLOCK,
            reason=f"{reason} (this statement needs approval, and approvals are not enabled)",
            details=details, barrier=barrier, analysis=infos,
            hint=decision.hint or "Ask a DBA to run it, or rephrase it so no hold rule matches.")
    return dataclasses.replace(decision, barrier=barrier, analysis=infos)


class _Bounded(dict[bytes, Decision]):
    """A dict that starts afresh when full (cheaper than evicting one by one: deleting from
    the front of a dict makes every later `next(iter())` walk the holes)."""

    def put(self, key: bytes, value: Decision) -> None:
        if len(self) >= MAX_CACHE_ENTRIES:
            self.clear()
        self[key] = value


_Caches = tuple[_Bounded, _Bounded, _Bounded]  # exact text, shape, digit key


class PolicyGate:
    """A listener's policy and its caches; `open()` gives each session its own gate."""

    def __init__(self, policy: Policy, dialect: str = "postgres") -> None:
        self.policy = policy
        self.dialect = dialect
        self._analyses: dict[tuple[bytes, ParseSettings, str], tuple[StatementInfo, ...]] = {}
        self._contexts: dict[tuple[object, ...], _Caches] = {}
        # Texts that end a transaction (COMMIT, END, ROLLBACK...), bounded like the caches.
        self.transaction_ends: set[bytes] = set()
        # The runtime holds statements for approval (an approval queue is open); otherwise a
        # hold decision is rendered as a refusal.
        self.holds_enabled = False

    def replace_policy(self, policy: Policy) -> None:
        """Put a new policy in force for new and open sessions (analyses stay valid)."""
        self._contexts = {}
        self.policy = policy

    def open(self, session: SessionInfo, startup: Mapping[str, str]) -> PgSessionGate:
        return PgSessionGate(self, session, dict(startup))

    def caches_for(self, key: tuple[object, ...]) -> _Caches:
        caches = self._contexts.get(key)
        if caches is None:
            if len(self._contexts) >= MAX_CONTEXTS:
                self._contexts.clear()
            caches = self._contexts[key] = (_Bounded(), _Bounded(), _Bounded())
        return caches

    def analysis(self, sql: bytes, settings: ParseSettings, encoding: str) -> tuple[StatementInfo, ...]:
        key = (sql, settings, encoding)
        infos = self._analyses.get(key)
        if infos is None:
            try:
                text = sql.decode(encoding)
            except UnicodeDecodeError as exc:
                infos = (unparseable("", f"the text is not valid {encoding} (byte {exc.start})"),)
            else:
                infos = analyse(text, settings)
            if len(sql) <= MAX_CACHED_TEXT:
                if len(self._analyses) >= MAX_CACHE_ENTRIES:
                    self._analyses.clear()
                self._analyses[key] = infos
        return infos


class PgSessionGate:
    """One PostgreSQL session's decision point (implements model.SessionGate)."""

    def __init__(self, gate: PolicyGate, session: SessionInfo, startup: dict[str, str]) -> None:
        self._gate = gate
        self._session = session
        self._encoding = "utf-8"
        self._scs = True
        schemas = list(_parse_search_path(startup.get("search_path", "")))
        # The union of every search_path the session has had, in order: resolving an
        # unqualified name against all of them over-approximates what the server does, so
        # an exemption on one schema can never cover a table the server finds in another.
        self._search_path: tuple[str, ...] = tuple(dict.fromkeys(schemas or ["public"]))
        self._prepared: dict[str, tuple[StatementInfo, ...]] = {}
        # Set after a statement that may run code dbguard does not see: from then on, a
        # prepared statement's name no longer proves what it runs.
        self._opaque_code_ran = False
        # Set once a statement that may change parsing settings ran: from then on, the next
        # COMMIT/ROLLBACK (which may revert a SET LOCAL) is a barrier too.
        self._settings_touched = False
        self._settings = ParseSettings("postgres", self._scs, self._search_path)
        self._policy = gate.policy
        self._exact, self._shapes, self._digit_keys = gate.caches_for(self._context_key())

    def _context_key(self) -> tuple[object, ...]:
        info = self._session
        return (info.identity, info.listener, info.database, self._settings, self._encoding)

    def _settings_changed(self) -> None:
        self._settings = ParseSettings("postgres", self._scs, self._search_path)
        self._policy = self._gate.policy
        self._exact, self._shapes, self._digit_keys = self._gate.caches_for(self._context_key())

    def server_parameter(self, name: str, value: str) -> None:
        if name == "client_encoding":
            self._encoding = PG_ENCODINGS.get(value.upper(), "utf-8")
            self._settings_changed()
        elif name == "standard_conforming_strings":
            self._scs = value.lower() != "off"
            self._settings_changed()

    def decide(self, sql: bytes, source: StatementSource, name: str) -> Decision:
        if self._policy is not self._gate.policy:
            self._settings_changed()  # the policy was reloaded: its own caches
        decision = self._exact.get(sql)
        if decision is None:
            if source is not StatementSource.SIMPLE_QUERY or len(sql) > MAX_CACHED_TEXT:
                return self._decide_fresh(sql, None)
            digit_key = sql.translate(_DIGITS_TO_ZERO)
            decision = self._digit_keys.get(digit_key)
            if decision is None:
                shape = pg_shape(sql)
                if shape is not None:
                    decision = self._shapes.get(shape)
                if decision is None:
                    return self._decide_fresh(sql, shape)
                if not _DIGIT_IN_WORD.search(sql):
                    self._digit_keys.put(digit_key, decision)
        if decision.barrier:
            self._opaque_code_ran = self._settings_touched = True
        elif self._settings_touched and sql in self._gate.transaction_ends:
            return self._transaction_end_barrier(sql, decision)
        return decision

    def _transaction_end_barrier(self, sql: bytes, decision: Decision) -> Decision:
        if not _ROLLBACK_TO.match(sql):
            self._settings_touched = False
        return dataclasses.replace(decision, barrier=True)

    def _decide_fresh(self, sql: bytes, shape: bytes | None) -> Decision:
        infos = self._gate.analysis(sql, self._settings, self._encoding)
        stateful = any(
            info.prepares or info.executes or info.deallocates
            or (StatementKind.SET in info.kinds and _SET_SEARCH_PATH.match(info.text))
            for info in infos
        )
        if stateful:
            infos = tuple(self._resolve_prepared(info) for info in infos)
        decision = _render(evaluate(self._policy, infos, self._session), infos, self._gate.holds_enabled)
        if decision.action is not Action.ALLOW and decision.enforced:
            return decision  # refused: no state changes, nothing worth caching per text
        if stateful:
            self._apply_state(infos)
        elif len(sql) <= MAX_CACHED_TEXT:
            self._exact.put(sql, decision)
            if shape is not None and not any(
                info.literal_sensitive or not info.kinds <= _SHAPE_KINDS for info in infos
            ):
                self._shapes.put(shape, decision)
                if not _DIGIT_IN_WORD.search(sql):
                    self._digit_keys.put(sql.translate(_DIGITS_TO_ZERO), decision)
        if any(_ends_transaction(info) for info in infos):
            ends = self._gate.transaction_ends
            if len(ends) >= MAX_CACHE_ENTRIES:
                ends.clear()
            ends.add(sql)
        if decision.barrier:
            self._opaque_code_ran = self._settings_touched = True
        elif self._settings_touched and sql in self._gate.transaction_ends:
            return self._transaction_end_barrier(sql, decision)
        return decision

    def _resolve_prepared(self, info: StatementInfo) -> StatementInfo:
        """EXECUTE name: decided as the statement it runs, when dbguard knows it for sure."""
        if not info.executes:
            return info
        prepared = self._prepared.get(info.executes)
        if prepared is None or self._opaque_code_ran:
            return dataclasses.replace(info, features=info.features | {Feature.DYNAMIC_SQL},
                                       detail=f"EXECUTE of a statement dbguard did not see prepared: {info.executes}")
        inner = prepared[0]
        return dataclasses.replace(
            info,
            kinds=info.kinds | inner.kinds,
            reads=info.reads | inner.reads,
            writes=info.writes | inner.writes,
            functions=info.functions | inner.functions,
            features=info.features | inner.features,
            unfiltered=info.unfiltered | inner.unfiltered,
            changes_parsing=info.changes_parsing or inner.changes_parsing,
        )

    def _apply_state(self, infos: tuple[StatementInfo, ...]) -> None:
        for info in infos:
            if info.deallocates == "*":
                self._prepared.clear()
            elif info.deallocates:
                self._prepared.pop(info.deallocates, None)
            if info.prepares:
                self._prepared[info.prepares] = (info,)
            match = _SET_SEARCH_PATH.match(info.text) if StatementKind.SET in info.kinds else None
            if match:
                added = _parse_search_path(match.group(1))
                if any(schema not in self._search_path for schema in added):
                    self._search_path = tuple(dict.fromkeys(self._search_path + added))
                    self._settings_changed()


# MySQL/MariaDB character set names (client side), as Python codecs. MySQL's latin1 is
# cp1252. A character set missing here is decoded as strict ASCII: every byte >= 0x80 then fails
# closed (unparseable), and ASCII bytes mean the same in every client character set MySQL allows.
MYSQL_ENCODINGS: Final = {
    "utf8mb4": "utf-8", "utf8mb3": "utf-8", "utf8": "utf-8", "ascii": "ascii", "latin1": "cp1252",
    "latin2": "iso8859-2", "latin5": "iso8859-9", "latin7": "iso8859-13", "cp1250": "cp1250",
    "cp1251": "cp1251", "cp1256": "cp1256", "cp1257": "cp1257", "cp850": "cp850", "cp852": "cp852",
    "cp866": "cp866", "koi8r": "koi8-r", "koi8u": "koi8-u", "greek": "iso8859-7", "hebrew": "iso8859-8",
    "macroman": "mac-roman", "macce": "mac-latin2", "gbk": "gbk", "gb2312": "gb2312", "gb18030": "gb18030",
    "big5": "big5", "sjis": "shift_jis", "cp932": "cp932", "ujis": "euc_jp", "eucjpms": "euc_jp",
    "euckr": "euc_kr",
}
# MySQL collation ids of the common client character sets (HandshakeResponse41.character_set).
MYSQL_COLLATION_CHARSETS: Final = {
    8: "latin1", 5: "latin1", 47: "latin1", 48: "latin1", 49: "latin1", 11: "ascii", 65: "ascii",
    33: "utf8mb3", 83: "utf8mb3", 192: "utf8mb3", 45: "utf8mb4", 46: "utf8mb4", 224: "utf8mb4",
    255: "utf8mb4", 28: "gbk", 87: "gbk", 13: "sjis", 88: "sjis", 95: "cp932", 96: "cp932",
}
# SET [SESSION|LOCAL|@@session.|@@]sql_mode = 'literal' (the only form whose effect dbguard can know).
_MYSQL_SQL_MODE = re.compile(
    r"\s*set\s+(?:session\s+|local\s+|@@session\.|@@local\.|@@)?sql_mode\s*:?=\s*(?:'([^'\\]*)'|\"([^\"\\]*)\")[\s;]*\Z",
    re.IGNORECASE | re.DOTALL)
# The server says the session runs in an sql_mode dbguard cannot read (e.g. MariaDB's ORACLE):
# nothing is analysable except the plain SET back to a known one.
_UNREADABLE_SERVER_MODE = Decision(
    Action.BLOCK, ("dbguard.sql_mode",),
    reason="dbguard: blocked: the session's sql_mode is one dbguard cannot read",
    hint="Set sql_mode to a quoted literal of known modes first, e.g. SET sql_mode = 'STRICT_TRANS_TABLES'.",
    details={"rule": "dbguard.sql_mode", "action": "block"},
)


def mysql_encoding(charset: str) -> str:
    """The Python codec for a MySQL character set name (strict ASCII when unknown: fail closed)."""
    return MYSQL_ENCODINGS.get(charset.strip().lower(), "ascii")


class MysqlPolicyGate:
    """The gate of `protocol: mysql` listeners: the same policy and caches as `policy_gate`
    (a policy reload applies to both), but MySQL sessions and the MySQL analyser."""

    def __init__(self, policy_gate: PolicyGate) -> None:
        self.policy_gate = policy_gate

    def open(self, session: SessionInfo, startup: Mapping[str, str]) -> MysqlSessionGate:
        return MysqlSessionGate(self.policy_gate, session, dict(startup))


class MysqlSessionGate:
    """One MySQL session's decision point (implements model.SessionGate).

    Decodes with the session's client character set, strictly; analyses with the MySQL
    dialect and the current database. Caches decisions per context (identity, listener, parse
    settings: current database and the sql_mode flags, client character set) as the PostgreSQL
    gate does: by exact text; for COM_QUERY texts also by shape (`mysql_shape_key`: string
    bodies emptied, integers as 0, only where literal extents are certain, and only analyses
    that do not depend on literal values), with the digit key in front of it. Statements that
    change how later ones are read (USE, SET NAMES, SET sql_mode...) are never cached; the gate
    does not follow them itself: the session reads the state back from the server once they
    have run (session.mysql_state_sync) and reports it through `server_parameter`.
    """

    def __init__(self, gate: PolicyGate, session: SessionInfo, startup: dict[str, str]) -> None:
        self._gate = gate
        self._session = session
        self._database = startup.get("database", "") or session.database
        charset = startup.get("charset", "utf8mb4")
        self._encoding = mysql_encoding(charset)
        self._ansi_quotes = False
        self._no_backslash_escapes = False
        # The server reported an sql_mode dbguard cannot read (e.g. ORACLE): every text is refused
        # until it reports one it can.
        self._unreadable_mode = False
        self._refresh()

    def _refresh(self) -> None:
        self._settings = ParseSettings(
            "mysql", search_path=(self._database,) if self._database else (),
            ansi_quotes=self._ansi_quotes, no_backslash_escapes=self._no_backslash_escapes)
        self._policy = self._gate.policy
        info = self._session
        key = ("mysql", info.identity, info.listener, self._settings, self._encoding)
        self._exact, self._shapes, self._digit_keys = self._gate.caches_for(key)

    def server_parameter(self, name: str, value: str) -> None:
        """What the server says the session's state is (session.mysql_state_sync): authoritative,
        replacing whatever the gate followed from the statements themselves."""
        if name == "database":
            self._database = value
        elif name in ("charset", "character_set_client"):
            self._encoding = mysql_encoding(value)
        elif name == "sql_mode":
            from dbguard.sql.mysql import sql_mode_flags  # sqlglot: only with MySQL listeners

            flags = sql_mode_flags(value)
            self._unreadable_mode = flags is None
            if flags is not None:
                self._ansi_quotes, self._no_backslash_escapes = flags
        else:
            return
        self._refresh()

    def decide(self, sql: bytes, source: StatementSource, name: str) -> Decision:
        if self._policy is not self._gate.policy:
            self._refresh()  # the policy was reloaded: its own caches
        if self._unreadable_mode and not self._plain_sql_mode_set(sql):
            return _UNREADABLE_SERVER_MODE
        decision = self._exact.get(sql)
        if decision is not None:
            return decision
        shape = None
        if source is StatementSource.SIMPLE_QUERY and len(sql) <= MAX_CACHED_TEXT:
            digit_key = sql.translate(_DIGITS_TO_ZERO)
            decision = self._digit_keys.get(digit_key)
            if decision is not None:
                return decision
            shape = mysql_shape_key(sql, self._no_backslash_escapes)
            if shape is not None:
                decision = self._shapes.get(shape)
                if decision is not None:
                    if not _MYSQL_DIGIT_KEPT.search(sql):
                        self._digit_keys.put(digit_key, decision)
                    return decision
        infos = self._gate.analysis(sql, self._settings, self._encoding)
        decision = _render(evaluate(self._policy, infos, self._session), infos, self._gate.holds_enabled)
        if decision.action is not Action.ALLOW and decision.enforced:
            return decision
        if any(info.changes_parsing for info in infos):
            # Never cached, never followed here: the session reads sql_mode, the character set
            # and the database back from the server once it has run (server_parameter).
            pass
        elif len(sql) <= MAX_CACHED_TEXT:
            self._exact.put(sql, decision)
            if shape is not None and not any(
                info.literal_sensitive or not info.kinds <= _SHAPE_KINDS for info in infos
            ):
                self._shapes.put(shape, decision)
                if not _MYSQL_DIGIT_KEPT.search(sql):
                    self._digit_keys.put(sql.translate(_DIGITS_TO_ZERO), decision)
        return decision

    @staticmethod
    def _plain_sql_mode_set(sql: bytes) -> bool:
        """`SET sql_mode = 'known,modes'` alone: ASCII that lexes the same in every sql_mode."""
        if not sql.isascii():
            return False
        from dbguard.sql.mysql import sql_mode_flags

        match = _MYSQL_SQL_MODE.match(sql.decode("ascii"))
        return match is not None and sql_mode_flags(match.group(1) or match.group(2) or "") is not None


__all__ = ["MYSQL_ENCODINGS", "PG_ENCODINGS", "MysqlPolicyGate", "MysqlSessionGate", "PgSessionGate", "PolicyGate",
           "mysql_encoding", "mysql_shape_key",
           "pg_shape"]
