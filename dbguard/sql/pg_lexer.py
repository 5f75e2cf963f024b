"""Text-level pre-processing so that pglast reads a SQL text the way the server will.

Owns one job: libpg_query (inside pglast) always lexes with `standard_conforming_strings = on`.
A session with it off makes the server treat a backslash in a plain '...' string as an escape,
so `SELECT 'x\\'' , pg_terminate_backend(1) --'` is one string literal to libpg_query but a
function call to such a server. `rewrite_for_scs_off` lexes the text exactly as the server does
with the setting off (comments, nested /* */, "identifiers", $tag$ dollar quotes $$, E'' B'' X''
N'' U&'' strings, string continuation across newlines) and turns every plain string that holds
a backslash into an E'' string, which means the same thing with the setting on. The analyser
parses the rewritten text and maps offsets back to the original with `Rewrite.original_offset`.

Anything this lexer cannot be sure the server reads the same way raises `LexError`; the analyser
then fails closed (unparseable). It does not parse SQL and knows nothing of dbguard's model.
"""

from __future__ import annotations

import re
from bisect import bisect_left
from dataclasses import dataclass
from typing import Final

# Inserted before the opening quote of a plain string that contains a backslash. The space
# keeps the E from gluing onto a preceding word: `interval'1\'` must not become `intervalE'..`.
PREFIX: Final = " E"

_IDENT_START: Final = re.compile(r"[A-Za-z_\x80-\U0010ffff]")
_IDENTIFIER: Final = re.compile(r"[A-Za-z_\x80-\U0010ffff][A-Za-z_0-9$\x80-\U0010ffff]*")
# Numbers (and the digit-led junk PostgreSQL 15+ rejects) never contain a quote, a $ or an &;
# consuming letters along keeps `1e'x'`-style adjacency visible to the check below.
_NUMBER: Final = re.compile(r"(?:[0-9]|\.[0-9])[0-9A-Za-z_.]*")
_DOLLAR_DELIMITER: Final = re.compile(r"\$(?:[A-Za-z_\x80-\U0010ffff][A-Za-z_0-9\x80-\U0010ffff]*)?\$")
_PARAMETER: Final = re.compile(r"\$[0-9]+")
# Characters that cannot start anything the lexer cares about: skipped in one step.
_PLAIN_RUN: Final = re.compile(r"[^-/'\"$A-Za-z_0-9.\x80-\U0010ffff]+")
_HORIZONTAL_SPACE: Final = frozenset(" \t\f\v")
_NEWLINE: Final = frozenset("\n\r")
_SPACE: Final = _HORIZONTAL_SPACE | _NEWLINE


class LexError(ValueError):
    """The text cannot be lexed with certainty; the caller must fail closed."""


@dataclass(frozen=True, slots=True)
class Rewrite:
    """A text rewritten for libpg_query, and where PREFIX was inserted."""

    text: str
    inserted_at: tuple[int, ...]  # offsets in `text` where each PREFIX starts, ascending

    def original_offset(self, offset: int) -> int:
        """The offset in the original text of character `offset` of the rewritten text.

        An offset at the start of an inserted PREFIX maps to the quote it was inserted before.
        """
        return offset - len(PREFIX) * bisect_left(self.inserted_at, offset)


def rewrite_for_scs_off(sql: str) -> Rewrite:
    """Rewrite `sql` so that lexing it with standard_conforming_strings=on means what the
    server reads with it off. Raises LexError for anything unterminated or ambiguous."""
    if "\\" not in sql:
        # Without a backslash both settings lex alike (a U&'' string, which the server refuses
        # when the setting is off, is then only analysed as something that will not run).
        return Rewrite(sql, ())
    pieces: list[str] = []
    inserted: list[int] = []
    copied = 0  # sql[:copied] is already in pieces
    position = 0
    length = len(sql)
    while position < length:
        plain = _PLAIN_RUN.match(sql, position)
        if plain is not None:
            position = plain.end()
            continue
        char = sql[position]
        if char == "'":
            end, has_backslash = _string_end(sql, position + 1, escapes=True)
            if has_backslash:
                pieces.append(sql[copied:position])
                inserted.append(position + len(PREFIX) * len(inserted))
                pieces.append(PREFIX)
                copied = position
            position = end
        elif char == '"':
            position = _quoted_identifier_end(sql, position + 1)
        elif char == "-" and sql.startswith("--", position):
            position = _line_comment_end(sql, position)
        elif char == "/" and sql.startswith("/*", position):
            position = _block_comment_end(sql, position)
        elif char == "$":
            position = _dollar_end(sql, position)
        elif _NUMBER.match(sql, position) is not None:
            position = _number_end(sql, position)
        elif _IDENT_START.match(char) is not None:
            position = _word_end(sql, position)
        else:
            position += 1  # "-", "/" or "." alone: an operator or punctuation character
    if not inserted:
        return Rewrite(sql, ())
    pieces.append(sql[copied:])
    return Rewrite("".join(pieces), tuple(inserted))


def _word_end(sql: str, start: int) -> int:
    """Lex an identifier or keyword, or the string it prefixes (E'', B'', X'', N'', U&'')."""
    match = _IDENTIFIER.match(sql, start)
    assert match is not None
    end = match.end()
    if end - start != 1 or end >= len(sql):
        return end
    prefix = sql[start].lower()
    following = sql[end]
    if following == "'":
        if prefix == "e":
            return _string_end(sql, end + 1, escapes=True)[0]
        if prefix in ("b", "x"):
            return _bit_string_end(sql, end + 1)
        if prefix == "n":
            # NATIONAL CHARACTER: a plain string follows, read with escapes when scs is off.
            # Prefixing it would turn N into an identifier, so a backslash in it is refused.
            string_end, has_backslash = _string_end(sql, end + 1, escapes=True)
            if has_backslash:
                raise LexError("backslash in an N'' string with standard_conforming_strings off")
            return string_end
    if prefix == "u" and following == "&" and end + 1 < len(sql):
        if sql[end + 1] == "'":
            raise LexError("U&'' string with standard_conforming_strings off")
        if sql[end + 1] == '"':
            return _quoted_identifier_end(sql, end + 2)
    return end


def _number_end(sql: str, start: int) -> int:
    match = _NUMBER.match(sql, start)
    assert match is not None
    end = match.end()
    # `1e'..'`, `1u&'..'`: servers before 15 split the letters off into a string prefix,
    # later ones reject the text; either way this lexer cannot be sure.
    if end < len(sql) and sql[end - 1].isalpha() and sql[end] in "'&$":
        raise LexError("a number runs into a string")
    return end


def _string_end(sql: str, position: int, *, escapes: bool) -> tuple[int, bool]:
    """End of a quoted string whose body starts at `position`, including continuation
    segments (a quote after whitespace that contains a newline); and whether any segment
    contains a backslash."""
    has_backslash = False
    length = len(sql)
    quote = -1
    while True:
        while True:
            if quote < position:  # search again only once the last quote found is behind us
                quote = sql.find("'", position)
                if quote < 0:
                    raise LexError("unterminated quoted string")
            backslash = sql.find("\\", position, quote) if escapes else -1
            if backslash >= 0:
                has_backslash = True
                position = backslash + 2  # the escaped character, whatever it is
                if position > length:
                    raise LexError("unterminated quoted string")
                continue
            if quote + 1 < length and sql[quote + 1] == "'":
                position = quote + 2  # a doubled quote inside the string
                continue
            position = quote + 1
            break
        continued = _continuation(sql, position)
        if continued < 0:
            return position, has_backslash
        position = continued


def _bit_string_end(sql: str, position: int) -> int:
    """B'' and X'' strings: no escapes and no doubled quotes, but continuation applies."""
    while True:
        quote = sql.find("'", position)
        if quote < 0:
            raise LexError("unterminated bit string")
        continued = _continuation(sql, quote + 1)
        if continued < 0:
            return quote + 1
        position = continued


def _continuation(sql: str, position: int) -> int:
    """If a string segment ending before `position` continues (whitespace with at least one
    newline, -- comments allowed, then a quote), the offset after that quote; else -1."""
    length = len(sql)
    seen_newline = False
    while position < length:
        char = sql[position]
        if char in _NEWLINE:
            seen_newline = True
            position += 1
        elif char in _HORIZONTAL_SPACE:
            position += 1
        elif char == "-" and sql.startswith("--", position):
            newline = _next_newline(sql, position)
            if newline < 0:
                return -1
            position = newline
        elif char == "'" and seen_newline:
            return position + 1
        else:
            return -1
    return -1


def _quoted_identifier_end(sql: str, position: int) -> int:
    while True:
        quote = sql.find('"', position)
        if quote < 0:
            raise LexError("unterminated quoted identifier")
        if quote + 1 < len(sql) and sql[quote + 1] == '"':
            position = quote + 2
            continue
        return quote + 1


def _next_newline(sql: str, position: int) -> int:
    candidates = [index for index in (sql.find("\n", position), sql.find("\r", position)) if index >= 0]
    return min(candidates) if candidates else -1


def _line_comment_end(sql: str, position: int) -> int:
    newline = _next_newline(sql, position)
    return len(sql) if newline < 0 else newline


def _block_comment_end(sql: str, position: int) -> int:
    """Block comments nest: /* /* */ */ is one comment."""
    depth = 0
    position += 2
    while True:
        opening = sql.find("/*", position)
        closing = sql.find("*/", position)
        if closing < 0:
            raise LexError("unterminated /* comment")
        if 0 <= opening < closing:
            depth += 1
            position = opening + 2
            continue
        if depth == 0:
            return closing + 2
        depth -= 1
        position = closing + 2


def _dollar_end(sql: str, position: int) -> int:
    """A $n parameter, a $tag$...$tag$ string, or a lone $."""
    parameter = _PARAMETER.match(sql, position)
    if parameter is not None:
        return parameter.end()
    delimiter = _DOLLAR_DELIMITER.match(sql, position)
    if delimiter is None:
        return position + 1
    closing = sql.find(delimiter.group(), delimiter.end())
    if closing < 0:
        raise LexError("unterminated dollar-quoted string")
    return closing + len(delimiter.group())


__all__ = ["PREFIX", "LexError", "Rewrite", "rewrite_for_scs_off"]
