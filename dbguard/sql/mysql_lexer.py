"""MySQL/MariaDB lexing for the analyser: one message's text -> statements of tokens, as the server
lexes it.

Owns: the character-level rules where bypasses live, mirrored from the server's lexer
(`sql/sql_lex.cc` in MySQL 8 and MariaDB): `'...'` and `"..."` strings with backslash escapes
(unless NO_BACKSLASH_ESCAPES) and doubled quotes; `"..."` as an identifier under ANSI_QUOTES;
backtick identifiers; `#` comments; `-- ` comments, which need a whitespace or control character
(or the end of the text) after the dashes (`1--1` is 2); `/* ... */` comments, not nested, with
`/*+ ... */` optimizer hints kept aside; versioned comments `/*! ... */`, `/*!50001 ... */`,
`/*M! ... */`, `/*M!100100 ... */`, whose content the server executes: every one of them is
treated as executed (the markers and version disappear, the content is lexed as SQL); splitting on
`;` outside strings, comments and identifiers -- including a `;` inside a versioned comment, which
ends a statement on the server too -- except inside the BEGIN ... END body of a stored program,
which the server reads as one statement. It also renders tokens back into a text sqlglot's MySQL
tokenizer reads with the same meaning (`render`), and into a literal-free shape (`render_shape`).

It does not classify statements (that is `dbguard.sql.mysql`) and imports neither sqlglot nor
anything from dbguard. Whatever it cannot lex exactly as the server would (an unterminated string
or comment, a backslash ending the text, NUL, a control character outside a string, a versioned
comment inside another, an ambiguous 6-digit version number) is reported as an error, so the
analyser fails closed.
"""

from __future__ import annotations

import bisect
import enum
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final, NamedTuple


class TokenKind(enum.Enum):
    WORD = "word"  # unquoted identifier or keyword
    IDENT = "ident"  # quoted identifier: `x`, or "x" under ANSI_QUOTES
    STRING = "string"  # '...' or "..." (value is the decoded text)
    NUMBER = "number"  # 1, 1.5, .5e3, 0x1F, 0b01
    PUNCT = "punct"  # one character of punctuation or operator


class Token(NamedTuple):
    kind: TokenKind
    text: str  # as written
    value: str  # STRING: decoded value; IDENT: the name; otherwise the text
    # Upper-case text of an unquoted word that can be a keyword; "" for identifiers the server
    # never reads as keywords (quoted ones, and the parts of a dotted name such as `t.select`).
    keyword: str
    start: int
    end: int
    spaced: bool  # whitespace or a comment separates it from the previous token
    condition: int  # the versioned comment it is in (see `Condition`); 0 outside any
    sql: str  # how it is written for sqlglot (see `render`)
    gap: str  # what separates it from the previous token when rendered: " " or ""


class Condition:
    """Which servers execute a versioned comment's content, as Token.condition encodes it:
    0 outside any; ALWAYS for `/*!` (every server); a version V (1..999999) for `/*!V`: MySQL
    runs it from version V on, MariaDB too except for 50700 <= V <= 99999 (MySQL-only versions,
    which MariaDB skips); MARIADB_VERSION + V for `/*M!V` and MARIADB for `/*M!`: MariaDB only
    (MySQL reads a plain comment)."""

    ALWAYS: Final = 1
    MARIADB_VERSION: Final = 1_000_000
    MARIADB: Final = 2_000_000


class Statement(NamedTuple):
    tokens: tuple[Token, ...]
    start: int  # the statement's own text is message[start:end] (whitespace trimmed)
    end: int
    next_pos: int  # where lexing resumes after this statement's `;`
    resume_condition: int  # the versioned comment the `;` was in (0: none)
    hints: tuple[str, ...]  # contents of /*+ ... */ optimizer hint comments


@dataclass(frozen=True, slots=True)
class LexedMessage:
    statements: tuple[Statement, ...]  # complete statements, in order (empty ones dropped)
    error: str = ""  # non-empty: message[error_start:] could not be lexed; this says why
    error_start: int = 0
    elided_chars: int = 0  # characters of literals longer than LONG_LITERAL_CHARS (see below)


# A string or number literal longer than this is lexed (its extent must be exact) but its value
# is not decoded or handed to sqlglot: it becomes ELIDED_VALUE, which is valid in every literal
# position (a string, X'..', B'..', _charset'..', 0x..), so a 20 MB BLOB in an INSERT costs one
# regex match instead of a character loop and a parse. Where a literal's value matters to the
# analysis (PREPARE ... FROM '...', EXECUTE IMMEDIATE, SET sql_mode / NAMES), ELIDED_VALUE reads
# as an unparseable statement, an unknown mode or an unknown character set: it fails closed.
LONG_LITERAL_CHARS: Final = 64 * 1024
ELIDED_VALUE: Final = "00"


class LexError(Exception):
    def __init__(self, message: str, position: int) -> None:
        super().__init__(message)
        self.position = position


_WHITESPACE = " \t\n\r\x0b\x0c"  # the server's my_isspace() for the ASCII range
_ID = "0-9A-Za-z_$\u0080-\U0010ffff"  # identifier characters (any non-ASCII character counts)
_IDENT_CHAR = re.compile(f"[{_ID}]")
_IDENT_RUN = re.compile(f"[{_ID}]+")
_PLAIN_WORD = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
_DIGITS = re.compile(r"[0-9]*")


def _master_pattern(ansi_quotes: bool, no_backslash_escapes: bool) -> re.Pattern[str]:
    if no_backslash_escapes:
        single = r"'(?:[^']++|'')*+'"
        double = r'"(?:[^"]++|"")*+"'
    else:
        single = r"'(?:[^'\\]++|\\[\s\S]|'')*+'"
        double = r'"(?:[^"\\]++|\\[\s\S]|"")*+"'
    if ansi_quotes:
        double = r'"(?:[^"]++|"")*+"'
    parts = [
        rf"(?P<ws>[{_WHITESPACE}]+)",
        r"(?P<hash>\#[^\n]*)",
        r"(?P<dash>--(?=[\x00-\x20\x7f]|\Z)[^\n]*)",
        r"(?P<vopen>/\*M?!)",
        r"(?P<comment>/\*)",
        r"(?P<vclose>\*/)",
        rf"(?P<single>{single})",
        rf"(?P<double>{double})",
        r"(?P<backtick>`(?:[^`]++|``)*+`)",
        rf"(?P<number>0x[0-9A-Fa-f]+(?![{_ID}])|0b[01]+(?![{_ID}])|[0-9]+[eE][+-]?[0-9]+"
        rf"|[0-9]+(?![{_ID}])(?:\.[0-9]*(?:[eE][+-]?[0-9]+)?)?|\.[0-9]+(?:[eE][+-]?[0-9]+)?)",
        rf"(?P<plain>[A-Za-z_][A-Za-z0-9_]*(?![{_ID}]))",
        rf"(?P<word>[{_ID}]+)",
        r"(?P<punct>[(),;.=<>!|&+\-*/%^~?:{}@\[\]\\])",
    ]
    # Leading whitespace is folded into the next token's match (half the loop turns).
    return re.compile(f"[{_WHITESPACE}]*(?:" + "|".join(parts) + ")")


_PATTERNS = {(a, b): _master_pattern(a, b) for a in (False, True) for b in (False, True)}

_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "b": "\b", "0": "\x00", "Z": "\x1a", "%": "\\%", "_": "\\_"}
_BACKSLASH_ESCAPE = re.compile(r"\\([\s\S])")


def _decode_string(body: str, quote: str, backslash_escapes: bool) -> str:
    """The value of a string literal's body (between its quotes), as the server's get_text()."""
    if backslash_escapes and "\\" in body:
        out: list[str] = []
        i = 0
        while i < len(body):
            char = body[i]
            if char == "\\":
                nxt = body[i + 1]
                out.append(_ESCAPES.get(nxt, nxt))
                i += 2
            elif char == quote:  # a doubled quote
                out.append(quote)
                i += 2
            else:
                out.append(char)
                i += 1
        return "".join(out)
    return body.replace(quote + quote, quote)


class _Lexer:
    def __init__(self, text: str, ansi_quotes: bool, no_backslash_escapes: bool) -> None:
        self.text = text
        self.pattern = _PATTERNS[(ansi_quotes, no_backslash_escapes)]
        self.backslash_escapes = not no_backslash_escapes
        self.ansi_quotes = ansi_quotes
        self.tokens: list[Token] = []
        self.hints: list[tuple[int, str]] = []
        self.semicolons: list[int] = []  # indices of the `;` tokens
        self.elided_chars = 0  # in literals longer than LONG_LITERAL_CHARS

    def run(self, pos: int, condition: int) -> None:
        """Lex text[pos:] into self.tokens; raises LexError at the first thing it cannot lex."""
        text = self.text
        end = len(text)
        spaced = True
        ident_next = False  # the previous token was a '.' after which the server reads an identifier
        tokens = self.tokens
        emit = self._emit
        pattern = self.pattern
        while pos < end:
            if ident_next:
                ident_next = False
                run = _IDENT_RUN.match(text, pos)
                if run is not None:
                    emit(TokenKind.WORD, run.group(), run.group(), "", pos, run.end(), spaced, condition)
                    spaced = False
                    pos = run.end()
                    continue
            if text[pos] == "." and _IDENT_CHAR.match(text, pos + 1) is not None:
                # After `name.` (and after a '.' that does not start a number such as `.5`) the
                # server reads an identifier, never a keyword or a number; `name` is one too.
                prev = tokens[-1] if tokens else None
                glued = prev is not None and prev.end == pos and prev.kind is TokenKind.WORD
                if glued or text[pos + 1] not in "0123456789":
                    if glued and prev is not None and prev.keyword:
                        tokens[-1] = prev._replace(keyword="", sql=self._word_sql(prev.text, "", len(tokens) - 1))
                    emit(TokenKind.PUNCT, ".", ".", "", pos, pos + 1, spaced, condition)
                    spaced = False
                    pos += 1
                    ident_next = True
                    continue
            match = pattern.match(text, pos)
            if match is None:
                skipped = len(text) - len(text[pos:].lstrip(_WHITESPACE))
                raise LexError(self._unexpected(skipped), skipped)
            kind = match.lastgroup
            assert kind is not None
            start = match.start(kind)
            if start != pos:
                spaced = True
                pos = start
            stop = match.end()
            if kind == "plain":  # the most common tokens first, inlined
                raw = match.group(kind)
                gap = " " if spaced or (tokens and tokens[-1].kind is not TokenKind.PUNCT) else ""
                tokens.append(Token(TokenKind.WORD, raw, raw, raw.upper(), pos, stop, spaced, condition, raw, gap))
                spaced = False
                pos = stop
                continue
            if kind == "punct":
                raw = match.group(kind)
                gap = " " if spaced or (tokens and _needs_space(tokens[-1], TokenKind.PUNCT, raw)) else ""
                tokens.append(Token(TokenKind.PUNCT, raw, raw, "", pos, stop, spaced, condition, raw, gap))
                if raw == "." and _IDENT_CHAR.match(text, stop) is not None:
                    ident_next = True
                elif raw == ";":
                    self.semicolons.append(len(tokens) - 1)
                spaced = False
                pos = stop
                continue
            if kind in ("ws", "hash", "dash"):
                spaced = True
            elif kind == "comment":
                close = text.find("*/", pos + 2)
                if close < 0:
                    raise LexError("unterminated /* comment", pos)
                if text.startswith("/*+", pos):
                    self.hints.append((pos, text[pos + 3 : close]))
                stop = close + 2
                spaced = True
            elif kind == "vopen":
                if condition:
                    raise LexError("versioned comment inside a versioned comment", pos)
                stop, opened = self._skip_version(pos, stop, mariadb=text[pos + 2] == "M")
                spaced = True
                if text.startswith("\\-", stop):
                    # mariadb-dump's first line, `/*M!999999\- enable the sandbox mode */`, is a
                    # command for the mariadb client; a server either skips it (version) or fails
                    # on the backslash. A comment, then.
                    close = text.find("*/", stop)
                    if close < 0:
                        raise LexError("unterminated versioned comment", pos)
                    stop = close + 2
                else:
                    condition = opened
            elif kind == "vclose":
                if condition:
                    condition = 0
                    spaced = True
                else:  # '*' then '/'
                    emit(TokenKind.PUNCT, "*", "*", "", pos, pos + 1, spaced, condition)
                    spaced = False
                    stop = pos + 1
            else:
                raw = match.group(kind)
                if len(raw) > LONG_LITERAL_CHARS and kind in ("single", "double", "number") and not (
                        kind == "double" and self.ansi_quotes):
                    self._emit_elided(raw, kind, pos, stop, spaced, condition)
                elif kind == "single" or (kind == "double" and not self.ansi_quotes):
                    value = _decode_string(raw[1:-1], raw[0], self.backslash_escapes)
                    emit(TokenKind.STRING, raw, value, "", pos, stop, spaced, condition)
                elif kind == "double" or kind == "backtick":
                    value = raw[1:-1].replace(raw[0] * 2, raw[0])
                    emit(TokenKind.IDENT, raw, value, "", pos, stop, spaced, condition)
                elif kind == "number":
                    emit(TokenKind.NUMBER, raw, raw, "", pos, stop, spaced, condition)
                else:  # a word that is not plain ASCII (non-ASCII letters, $, a leading digit)
                    emit(TokenKind.WORD, raw, raw, raw.upper() if raw.isascii() else "", pos, stop, spaced, condition)
                spaced = False
            pos = stop
        if condition:
            raise LexError("unterminated versioned comment", end)

    def _emit(
        self,
        kind: TokenKind,
        text: str,
        value: str,
        keyword: str,
        start: int,
        end: int,
        spaced: bool,
        condition: int,
    ) -> None:
        tokens = self.tokens
        if kind is TokenKind.STRING:
            sql = "'" + value.replace("\\", "\\\\").replace("'", "''") + "'"
        elif kind is TokenKind.IDENT:
            sql = "`" + value.replace("`", "``") + "`"
        elif kind is TokenKind.WORD:
            sql = self._word_sql(text, keyword, len(tokens))
        else:
            sql = text
        gap = " " if spaced or (tokens and _needs_space(tokens[-1], kind, text)) else ""
        tokens.append(Token(kind, text, value, keyword, start, end, spaced, condition, sql, gap))

    def _emit_elided(self, raw: str, kind: str, start: int, end: int, spaced: bool, condition: int) -> None:
        """A literal too long to decode and parse: exact extent, ELIDED_VALUE for its value."""
        self.elided_chars += len(raw)
        tokens = self.tokens
        if kind == "number":
            sql = raw[:2] + ELIDED_VALUE if raw[:2].lower() in ("0x", "0b") else ELIDED_VALUE
            token_kind = TokenKind.NUMBER
        else:
            sql = "'" + ELIDED_VALUE + "'"
            token_kind = TokenKind.STRING
        gap = " " if spaced or (tokens and _needs_space(tokens[-1], token_kind, raw)) else ""
        tokens.append(Token(token_kind, raw, ELIDED_VALUE if kind != "number" else sql, "", start, end, spaced,
                            condition, sql, gap))

    def _word_sql(self, text: str, keyword: str, index: int) -> str:
        if _PLAIN_WORD.match(text) is not None and (keyword or _in_system_variable(self.tokens, index)):
            return text
        return "`" + text.replace("`", "``") + "`"

    def _skip_version(self, start: int, pos: int, mariadb: bool) -> tuple[int, int]:
        """Skip the version number after `/*!` or `/*M!`: where the content starts, and its
        condition. MySQL reads exactly 5 digits, MariaDB 5 or 6. Six digits after `/*!` mean
        different things to the two servers unless a space follows (then it can only be a MariaDB
        version): anything else there is refused."""
        run = _DIGITS.match(self.text, pos)
        digits = len(run.group()) if run is not None else 0
        if digits < 5:
            return pos, Condition.MARIADB if mariadb else Condition.ALWAYS
        if digits > 5 and not mariadb:
            after = self.text[pos + 6 : pos + 7]
            if digits > 6 or not (after == "" or after in _WHITESPACE or after == "*"):
                raise LexError("ambiguous version number in a versioned comment", start)
        length = min(digits, 6)
        version = max(int(self.text[pos : pos + length]), Condition.ALWAYS)
        return pos + length, Condition.MARIADB_VERSION + version if mariadb else version

    def _unexpected(self, pos: int) -> str:
        char = self.text[pos]
        if char in "'\"`":
            if self.backslash_escapes and char != "`":
                return f"unterminated {char} quoted text (or a backslash escaping its closing quote)"
            return f"unterminated {char} quoted text"
        return f"unexpected character U+{ord(char):04X}"


def lex(
    text: str,
    pos: int = 0,
    *,
    ansi_quotes: bool = False,
    no_backslash_escapes: bool = False,
    condition: int = 0,
) -> LexedMessage:
    """Split text[pos:] into statements as the server does, with the given sql_mode flags.

    Complete statements before a lexing error are returned (the server runs them before it
    reaches the error); the error names where the unlexable statement starts.
    """
    lexer = _Lexer(text, ansi_quotes, no_backslash_escapes)
    error = ""
    nul = text.find("\x00", pos)
    if nul >= 0:
        error = "NUL character in the SQL text"
        lexer.text = text = text[:nul]
    try:
        lexer.run(pos, condition)
    except LexError as exc:
        error = error or str(exc)  # past a NUL, any lexing error is the NUL's doing
    statements, error_start = _split(text, lexer, pos, complete=not error)
    return LexedMessage(tuple(statements), error, error_start, lexer.elided_chars)


def _split(text: str, lexer: _Lexer, pos: int, complete: bool) -> tuple[list[Statement], int]:
    tokens, hints, semicolons = lexer.tokens, lexer.hints, lexer.semicolons
    statements: list[Statement] = []
    count = len(tokens)
    index = 0
    segment_start = pos
    while index < count:
        stop = _statement_end(tokens, index, semicolons)
        if stop >= count and not complete:
            break  # the statement the lexing error is in
        if stop < count:
            terminator = tokens[stop]
            raw_end, next_pos, resume = terminator.start, terminator.end, terminator.condition
        else:
            raw_end, next_pos, resume = len(text), len(text), 0
        if stop > index:
            start, end = _trim(text, segment_start, raw_end)
            own_hints = tuple(body for at, body in hints if segment_start <= at < raw_end)
            statements.append(Statement(tuple(tokens[index:stop]), start, end, next_pos, resume, own_hints))
        segment_start = next_pos
        index = stop + 1
    return statements, segment_start


def _trim(text: str, start: int, end: int) -> tuple[int, int]:
    while start < end and text[start] in _WHITESPACE:
        start += 1
    while end > start and text[end - 1] in _WHITESPACE:
        end -= 1
    return start, end


# --- where a statement ends: at the next `;`, unless it defines a stored program whose body is a
# BEGIN ... END block (or is MariaDB's BEGIN NOT ATOMIC ... END), which ends after the block.


def _is(tokens: Sequence[Token], index: int, text: str) -> bool:
    return index < len(tokens) and tokens[index].kind is TokenKind.PUNCT and tokens[index].text == text


def _kw(tokens: Sequence[Token], index: int) -> str:
    return tokens[index].keyword if index < len(tokens) else ""


def _statement_end(tokens: Sequence[Token], index: int, semicolons: list[int]) -> int:
    """Index of the `;` token that ends the statement starting at tokens[index] (or len(tokens))."""
    position = index
    if tokens[index].keyword in ("CREATE", "ALTER", "BEGIN"):
        body = _routine_body_start(tokens, index)
        if body is not None:
            block = _block_begin(tokens, body)
            if block is not None:
                position = _block_end(tokens, block)
    following = bisect.bisect_left(semicolons, position)
    return semicolons[following] if following < len(semicolons) else len(tokens)


def _skip_group(tokens: Sequence[Token], index: int) -> int | None:
    """tokens[index] is '(': the index after its matching ')'."""
    depth = 0
    for position in range(index, len(tokens)):
        token = tokens[position]
        if token.kind is TokenKind.PUNCT:
            if token.text == "(":
                depth += 1
            elif token.text == ")":
                depth -= 1
                if depth == 0:
                    return position + 1
            elif token.text == ";":
                return None
    return None


def _skip_name(tokens: Sequence[Token], index: int) -> int | None:
    """A possibly qualified object name at tokens[index]: the index after it."""
    if index >= len(tokens) or tokens[index].kind not in (TokenKind.WORD, TokenKind.IDENT):
        return None
    index += 1
    while _is(tokens, index, ".") and index + 1 < len(tokens):
        index += 2
    return index


def skip_account(tokens: Sequence[Token], index: int) -> int:
    """An account name (`u`, 'u'@'h', `u`@`h`, u@localhost, CURRENT_USER[()]) at tokens[index]:
    the index after it. The host part of u@host is the run of tokens glued to the '@'."""
    count = len(tokens)
    if index >= count:
        return index
    if tokens[index].keyword == "CURRENT_USER":
        index += 1
        if _is(tokens, index, "(") and _is(tokens, index + 1, ")"):
            index += 2
        return index
    index += 1
    if _is(tokens, index, "@"):
        index += 1
        if index < count:
            index += 1
            while index < count and not tokens[index].spaced and tokens[index].text not in (",", ";", "(", ")"):
                index += 1
    return index


_ROUTINES = frozenset({"PROCEDURE", "FUNCTION", "TRIGGER", "EVENT"})
_TYPE_WORDS = frozenset(
    {
        "PRECISION",
        "VARYING",
        "UNSIGNED",
        "SIGNED",
        "ZEROFILL",
        "BINARY",
        "ASCII",
        "UNICODE",
        "BYTE",
        "VARCHAR",
        "CHAR",
        "VARBINARY",
        "INT",
        "INTEGER",
    }
)


def _routine_body_start(tokens: Sequence[Token], index: int) -> int | None:
    """If the statement at tokens[index] defines a stored program (or is an anonymous MariaDB
    block), the index where its body starts."""
    first = tokens[index].keyword
    if first == "BEGIN" and _kw(tokens, index + 1) == "NOT" and _kw(tokens, index + 2) == "ATOMIC":
        return index
    if first not in ("CREATE", "ALTER"):
        return None
    position = index + 1
    while True:
        word = _kw(tokens, position)
        if word == "OR" and _kw(tokens, position + 1) == "REPLACE":
            position += 2
        elif word == "DEFINER" and _is(tokens, position + 1, "="):
            position = skip_account(tokens, position + 2)
        elif word == "AGGREGATE":
            position += 1
        else:
            break
    kind = _kw(tokens, position)
    if kind not in _ROUTINES or (first == "ALTER" and kind != "EVENT"):
        return None
    if kind == "EVENT":
        return _after_keyword(tokens, position, "DO")
    if kind == "TRIGGER":
        return _trigger_body(tokens, position)
    position += 1
    if _kw(tokens, position) == "IF" and _kw(tokens, position + 1) == "NOT" and _kw(tokens, position + 2) == "EXISTS":
        position += 3
    after_name = _skip_name(tokens, position)
    if after_name is None or not _is(tokens, after_name, "("):
        return None  # e.g. CREATE FUNCTION f RETURNS STRING SONAME 'udf.so': no body
    after_parameters = _skip_group(tokens, after_name)
    if after_parameters is None:
        return None
    position = after_parameters
    if kind == "FUNCTION":
        if _kw(tokens, position) != "RETURNS":
            return None
        position = _skip_type(tokens, position + 1)
    return _skip_characteristics(tokens, position)


def _after_keyword(tokens: Sequence[Token], index: int, keyword: str) -> int | None:
    for position in range(index, len(tokens)):
        if tokens[position].keyword == keyword:
            return position + 1
        if _is(tokens, position, ";"):
            return None
    return None


def _trigger_body(tokens: Sequence[Token], index: int) -> int | None:
    for position in range(index, len(tokens) - 2):
        if _is(tokens, position, ";"):
            return None
        if (tokens[position].keyword, tokens[position + 1].keyword, tokens[position + 2].keyword) == (
            "FOR",
            "EACH",
            "ROW",
        ):
            position += 3
            if _kw(tokens, position) in ("FOLLOWS", "PRECEDES"):
                return _skip_name(tokens, position + 1)
            return position
    return None


def _skip_type(tokens: Sequence[Token], index: int) -> int:
    position = index + 1  # the base type's word
    while position < len(tokens):
        word = tokens[position].keyword
        if _is(tokens, position, "("):
            after = _skip_group(tokens, position)
            if after is None:
                return position
            position = after
        elif word == "CHARACTER" and _kw(tokens, position + 1) == "SET":
            position += 3
        elif word in ("CHARSET", "COLLATE"):
            position += 2
        elif word in _TYPE_WORDS:
            position += 1
        else:
            break
    return position


_CHARACTERISTICS = (
    ("LANGUAGE", "SQL"),
    ("NOT", "DETERMINISTIC"),
    ("DETERMINISTIC",),
    ("CONTAINS", "SQL"),
    ("NO", "SQL"),
    ("READS", "SQL", "DATA"),
    ("MODIFIES", "SQL", "DATA"),
    ("SQL", "SECURITY", "DEFINER"),
    ("SQL", "SECURITY", "INVOKER"),
)


def _skip_characteristics(tokens: Sequence[Token], index: int) -> int:
    position = index
    while position < len(tokens):
        if tokens[position].keyword == "COMMENT" and position + 1 < len(tokens):
            position += 2
            continue
        words = tuple(_kw(tokens, position + offset) for offset in range(3))
        for characteristic in _CHARACTERISTICS:
            if words[: len(characteristic)] == characteristic:
                position += len(characteristic)
                break
        else:
            return position
    return position


def _is_label(tokens: Sequence[Token], index: int) -> bool:
    """`name:` (a label), not `name :=`."""
    return (
        index + 1 < len(tokens)
        and tokens[index].kind in (TokenKind.WORD, TokenKind.IDENT)
        and _is(tokens, index + 1, ":")
        and not (_is(tokens, index + 2, "=") and not tokens[index + 2].spaced)
    )


def _block_begin(tokens: Sequence[Token], index: int) -> int | None:
    """The BEGIN of a body that is a block (`BEGIN ...`, `label: BEGIN ...`), else None."""
    if _kw(tokens, index) == "BEGIN" and not _is_label(tokens, index):
        return index
    if _is_label(tokens, index) and _kw(tokens, index + 2) == "BEGIN":
        return index + 2
    return None


_NOT_CLOSED_BY_END = frozenset({"IF", "LOOP", "WHILE", "REPEAT", "FOR"})


def _block_end(tokens: Sequence[Token], begin: int) -> int:
    """The index after the END matching the BEGIN at tokens[begin] (len(tokens) if none).

    Only openers the server cannot read otherwise are counted: BEGIN at the start of a statement
    (after `;`, a label, THEN/ELSE outside a CASE expression, DO of WHILE/FOR, LOOP, REPEAT, a
    handler's condition list, or another BEGIN) and CASE (a reserved word). An END this misses
    ends the block early, which splits the text into more statements, never fewer.
    """
    count = len(tokens)
    stack: list[str] = []
    at_start = True
    awaiting_do = False
    position = begin
    while position < count:
        token = tokens[position]
        word = token.keyword
        starts, at_start = at_start, False
        top = stack[-1] if stack else ""
        if token.kind is TokenKind.PUNCT:
            if token.text == ";":
                at_start, awaiting_do = True, False
            position += 1
            continue
        if starts and _is_label(tokens, position):
            position += 2
            at_start = True
            continue
        if word == "BEGIN" and starts:
            stack.append("block")
            at_start = True
            if _kw(tokens, position + 1) == "NOT" and _kw(tokens, position + 2) == "ATOMIC":
                position += 2
        elif word == "CASE":
            stack.append("case statement" if starts else "case expression")
        elif word == "END":
            follower = _kw(tokens, position + 1)
            if follower in _NOT_CLOSED_BY_END:
                position += 2
                continue
            if stack:
                stack.pop()
            if follower == "CASE":
                position += 1
            if not stack:
                return position + 1
        elif word in ("THEN", "ELSE") and top != "case expression":
            at_start = True
        elif word in ("WHILE", "FOR") and starts:
            awaiting_do = True
        elif word == "DO" and awaiting_do and top != "case expression":
            awaiting_do = False
            at_start = True
        elif word in ("LOOP", "REPEAT") and starts:
            at_start = True
        elif word == "HANDLER" and _kw(tokens, position + 1) == "FOR":
            position = _skip_conditions(tokens, position + 2)
            at_start = True
            continue
        position += 1
    return count


def _skip_conditions(tokens: Sequence[Token], index: int) -> int:
    """A DECLARE ... HANDLER FOR condition list: the index of the handler's statement."""
    position = index
    while position < len(tokens):
        word = tokens[position].keyword
        if word == "SQLSTATE":
            position += 2 if _kw(tokens, position + 1) != "VALUE" else 3
        elif word == "NOT" and _kw(tokens, position + 1) == "FOUND":
            position += 2
        else:
            position += 1  # SQLWARNING, SQLEXCEPTION, an error number or a condition name
        if not _is(tokens, position, ","):
            return position
        position += 1
    return position


# --- rendering for sqlglot


def _needs_space(prev: Token, kind: TokenKind, text: str) -> bool:
    """Whether two glued tokens must be separated for sqlglot to read them as the server does."""
    if prev.kind is TokenKind.PUNCT or kind is TokenKind.PUNCT:
        # `- -1` must not become a `--` comment, nor `/ *` a `/*` one.
        return (prev.text == "-" and text[:1] == "-") or (prev.text == "/" and text[:1] == "*")
    # Glued atoms stay glued only for a prefix and its string: N'x', X'0A', _utf8mb4'x'.
    return not (prev.kind is TokenKind.WORD and kind is TokenKind.STRING)


def _in_system_variable(tokens: Sequence[Token], index: int) -> bool:
    """tokens[index] is `scope` or `x` in `@@scope.x`, which sqlglot only reads unquoted."""
    if index >= 2 and _is(tokens, index - 1, "@") and _is(tokens, index - 2, "@"):
        return True
    return index >= 4 and _is(tokens, index - 1, ".") and _is(tokens, index - 3, "@") and _is(tokens, index - 4, "@")


def respaced(token: Token) -> Token:
    """The token, separated from whatever now comes before it (after tokens were removed)."""
    return token._replace(spaced=True, gap=" ")


def rekeyed(token: Token, word: str) -> Token:
    """A keyword token rewritten as another keyword (REPLACE -> INSERT for sqlglot)."""
    return token._replace(text=word, value=word, keyword=word, sql=word)


def render(tokens: Sequence[Token]) -> str:
    """The tokens as a text sqlglot's MySQL dialect reads with the same meaning: comments gone,
    strings single-quoted with only `''` and `\\\\` escaped, quoted identifiers in backticks,
    identifiers that are not plain ASCII words (or come after a dot) quoted, glued tokens that
    sqlglot would read as one (`- -1`) separated."""
    if not tokens:
        return ""
    return tokens[0].sql + "".join([token.gap + token.sql for token in tokens[1:]])


def render_shape(tokens: Sequence[Token]) -> str:
    """`render`, with every string and number literal as `?` (for fingerprints)."""
    literal = (TokenKind.STRING, TokenKind.NUMBER)
    shape = "".join([token.gap + ("?" if token.kind in literal else token.sql) for token in tokens])
    return shape[1:] if tokens and tokens[0].gap else shape


__all__ = [
    "Condition",
    "LexError",
    "LexedMessage",
    "Statement",
    "Token",
    "TokenKind",
    "lex",
    "rekeyed",
    "render",
    "render_shape",
    "respaced",
    "skip_account",
]
