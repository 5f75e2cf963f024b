"""MySQL/MariaDB analysis: the handlers of statements on tables and other schema objects.

Owns INSERT / REPLACE, UPDATE, DELETE (parsed by sqlglot), CREATE, ALTER, DROP, TRUNCATE and
RENAME: each takes a statement's tokens and records what it does on the facts, or raises
`Unparseable`. Part of `dbguard.sql.mysql` (its docstring has the table of statement kinds).

Must not dispatch statements or analyse a contained statement (that is `dbguard.sql.mysql`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

from sqlglot import exp

from dbguard.model import Feature, StatementKind
from dbguard.sql.mysql_facts import Cursor, Facts, Unparseable, find_keyword, is_punct, split_commas
from dbguard.sql.mysql_lexer import Token, TokenKind, rekeyed, render, respaced
from dbguard.sql.mysql_statements import deallocate_name
from dbguard.sql.mysql_tree import QUERY_ROOTS, collect, parse

_K = StatementKind
_F = Feature


# ------------------------------------------------------------------------ DML and queries


def _drop_modifiers(tokens: Sequence[Token], modifiers: frozenset[str]) -> list[Token]:
    """The statement without the priority/IGNORE words after its first keyword (sqlglot reads
    few of them; they do not change what the statement does)."""
    kept = [tokens[0]]
    index = 1
    while index < len(tokens) and tokens[index].keyword in modifiers:
        index += 1
    kept.extend(tokens[index:])
    if len(kept) > 1:
        kept[1] = respaced(kept[1])
    return kept


def insert(tokens: Sequence[Token], facts: Facts) -> None:
    replace = tokens[0].keyword == "REPLACE"
    kept = _drop_modifiers(tokens, frozenset({"LOW_PRIORITY", "DELAYED", "HIGH_PRIORITY"}))
    if replace:
        kept[0] = rekeyed(kept[0], "INSERT")
        facts.kind(_K.DELETE)
    facts.command = "REPLACE" if replace else "INSERT"
    root = parse(render(kept))
    if not isinstance(root, exp.Insert):
        raise Unparseable(f"unexpected {type(root).__name__} statement")
    collect(root, facts)


def update(tokens: Sequence[Token], facts: Facts) -> None:
    facts.command = "UPDATE"
    root = parse(render(_drop_modifiers(tokens, frozenset({"LOW_PRIORITY", "IGNORE"}))))
    if not isinstance(root, exp.Update):
        raise Unparseable(f"unexpected {type(root).__name__} statement")
    collect(root, facts)


def delete(tokens: Sequence[Token], facts: Facts) -> None:
    facts.command = "DELETE"
    root = parse(render(_drop_modifiers(tokens, frozenset({"LOW_PRIORITY", "QUICK", "IGNORE"}))))
    if not isinstance(root, exp.Delete):
        raise Unparseable(f"unexpected {type(root).__name__} statement")
    collect(root, facts)


# ------------------------------------------------------------------------------------ CREATE


def _create_header(cursor: Cursor, facts: Facts) -> bool:
    """Skip CREATE/ALTER modifiers; True for OR REPLACE. A DEFINER is a privilege change."""
    replace = False
    while True:
        if cursor.accept("OR", "REPLACE"):
            replace = True
        elif cursor.accept("DEFINER"):
            if not cursor.punct("="):
                raise Unparseable("expected = after DEFINER")
            cursor.skip_account()
            facts.feature(_F.PRIVILEGE_CHANGE)
            facts.note("DEFINER: runs with another account's privileges")
        elif cursor.accept("ALGORITHM"):
            cursor.punct("=")
            cursor.name()
        elif cursor.accept("SQL", "SECURITY"):
            cursor.name()
        elif cursor.kw() in ("TEMPORARY", "ONLINE", "OFFLINE", "IGNORE", "UNIQUE", "FULLTEXT", "AGGREGATE", "UNDO") or (
            cursor.kw() == "SPATIAL" and cursor.kw(1) == "INDEX"
        ):
            cursor.advance()
        else:
            return replace


def create(tokens: Sequence[Token], facts: Facts) -> None:
    cursor = Cursor(tokens)
    replace = _create_header(cursor, facts)
    facts.kind(_K.CREATE)
    if replace:
        facts.note("OR REPLACE")
    word = cursor.kw()
    facts.command = f"CREATE {word}"
    cursor.advance()
    if word == "TABLE":
        _create_table(tokens, cursor, replace, facts)
    elif word == "VIEW":
        _view(cursor, facts)
    elif word == "INDEX":
        cursor.if_exists()
        cursor.name()
        if cursor.accept("USING"):
            cursor.name()
        cursor.expect("ON")
        facts.writes.add(facts.table_from_parts(cursor.name()))
    elif word in ("DATABASE", "SCHEMA"):
        cursor.if_exists()
        facts.writes.add(f"{cursor.name()[0]}.*")
        if replace:
            facts.kind(_K.DROP)
    elif word == "SEQUENCE":
        cursor.if_exists()
        facts.writes.add(facts.table_from_parts(cursor.name()))
        if replace:
            facts.kind(_K.DROP)
    elif word in ("USER", "ROLE"):
        facts.feature(_F.PRIVILEGE_CHANGE)
    elif word in ("PROCEDURE", "FUNCTION", "TRIGGER", "EVENT", "PACKAGE"):
        _routine(word, cursor, facts)
    elif word in ("SERVER", "LOGFILE", "RESOURCE", "SPATIAL"):
        facts.feature(_F.SYSTEM_ADMIN)
    elif word == "TABLESPACE":
        facts.feature(_F.SYSTEM_ADMIN, _F.FILE_ACCESS)
    else:
        raise Unparseable(f"unknown CREATE {word or 'statement'}")


def _routine(word: str, cursor: Cursor, facts: Facts) -> None:
    facts.feature(_F.UNTRUSTED_CODE)
    facts.note("stored program body not analysed")
    if word == "TRIGGER":
        on = find_keyword(cursor.tokens, "ON", cursor.pos)
        if on < 0:
            raise Unparseable("CREATE TRIGGER without ON")
        facts.writes.add(facts.table_from_parts(Cursor(cursor.tokens, on + 1).name()))
    if word == "FUNCTION" and find_keyword(cursor.tokens, "SONAME", cursor.pos) >= 0:
        facts.feature(_F.SYSTEM_ADMIN)
        facts.note("loads a native library")


def _create_table(tokens: Sequence[Token], cursor: Cursor, replace: bool, facts: Facts) -> None:
    cursor.if_exists()
    name = facts.table_from_parts(cursor.name())
    facts.writes.add(name)
    if replace:
        facts.kind(_K.DROP)
    _table_options(tokens, facts)
    body = cursor.rest()
    try:
        root = parse(render(tokens))
        if not isinstance(root, exp.Create) or str(root.args.get("kind", "")).upper() != "TABLE":
            raise Unparseable(f"unexpected {type(root).__name__} statement")
    except Unparseable as error:
        # What sqlglot cannot read in a table definition (options, partitions...) runs nothing,
        # unless the table is filled from a query or copies another one.
        if _fills_from_elsewhere(body):
            raise
        facts.note(f"definition read from its tokens ({error.detail})")
        return
    collect(root, facts)


def _fills_from_elsewhere(body: Sequence[Token]) -> bool:
    """A table definition that copies another table or is filled by a query."""
    depth = 0
    for index, token in enumerate(body):
        if is_punct(token, "("):
            depth += 1
        elif is_punct(token, ")"):
            depth -= 1
        elif token.keyword in ("SELECT", "LIKE"):
            return True
        elif depth == 0 and token.keyword in ("TABLE", "VALUES", "WITH"):
            following = body[index + 1].keyword if index + 1 < len(body) else ""
            if not (token.keyword == "WITH" and following == "SYSTEM"):
                return True
    return False


def _table_options(tokens: Sequence[Token], facts: Facts) -> None:
    """Table options of CREATE/ALTER TABLE that reach outside the database."""
    for index, token in enumerate(tokens):
        word = token.keyword
        following = [item.keyword for item in tokens[index + 1 : index + 3]]
        if word == "ENGINE" and "CONNECT" in following:
            facts.feature(_F.FILE_ACCESS)
            facts.note("CONNECT engine reads and writes server files")
        elif word in ("DATA", "INDEX") and following[:1] == ["DIRECTORY"]:
            facts.feature(_F.FILE_ACCESS)
            facts.note(f"{word} DIRECTORY")
        elif (word == "ENGINE" and ("FEDERATED" in following or "FEDERATEDX" in following)) or (
            word == "CONNECTION" and index + 1 < len(tokens) and is_punct(tokens[index + 1], "=")
        ):
            facts.feature(_F.DYNAMIC_SQL)
            facts.note("table backed by a remote server")


def _view(cursor: Cursor, facts: Facts) -> None:
    cursor.if_exists()
    facts.writes.add(facts.table_from_parts(cursor.name()))
    if is_punct(cursor.peek(), "("):
        depth = 0
        while not cursor.at_end():
            token = cursor.peek()
            cursor.advance()
            if is_punct(token, "("):
                depth += 1
            elif is_punct(token, ")"):
                depth -= 1
                if depth == 0:
                    break
    cursor.expect("AS")
    body = list(cursor.rest())
    if [token.keyword for token in body[-2:]] == ["CHECK", "OPTION"]:
        body = body[:-2]
        if body and body[-1].keyword in ("CASCADED", "LOCAL"):
            body = body[:-1]
        if not body or body[-1].keyword != "WITH":
            raise Unparseable("expected WITH ... CHECK OPTION")
        body = body[:-1]
    if not body:
        raise Unparseable("view without a query")
    root = parse(render(body))
    if not isinstance(root, QUERY_ROOTS):
        raise Unparseable(f"unexpected {type(root).__name__} as a view body")
    collect(root, facts, definition=True)


# ------------------------------------------------------------------------------ ALTER, DROP


def alter(tokens: Sequence[Token], facts: Facts) -> None:
    cursor = Cursor(tokens)
    _create_header(cursor, facts)
    facts.kind(_K.ALTER)
    word = cursor.kw()
    facts.command = f"ALTER {word}"
    cursor.advance()
    if word == "TABLE":
        _alter_table(cursor, facts)
    elif word in ("DATABASE", "SCHEMA"):
        name = cursor.peek()
        if (
            name is not None
            and name.kind in (TokenKind.WORD, TokenKind.IDENT)
            and name.keyword
            not in (
                "CHARACTER",
                "CHARSET",
                "DEFAULT",
                "COLLATE",
                "ENCRYPTION",
                "READ",
                "COMMENT",
                "UPGRADE",
            )
        ):
            facts.writes.add(f"{name.value}.*")
        else:
            facts.writes.add(f"{facts.database or '?'}.*")
    elif word == "VIEW":
        _view(cursor, facts)
    elif word == "SEQUENCE":
        cursor.if_exists()
        facts.writes.add(facts.table_from_parts(cursor.name()))
    elif word in ("USER", "ROLE"):
        facts.feature(_F.PRIVILEGE_CHANGE)
    elif word == "EVENT":
        if find_keyword(tokens, "DO") >= 0:
            facts.feature(_F.UNTRUSTED_CODE)
            facts.note("stored program body not analysed")
    elif word in ("PROCEDURE", "FUNCTION"):
        pass
    elif word in ("SERVER", "INSTANCE", "TABLESPACE", "LOGFILE", "RESOURCE"):
        facts.feature(_F.SYSTEM_ADMIN)
    else:
        raise Unparseable(f"unknown ALTER {word or 'statement'}")


def _alter_table(cursor: Cursor, facts: Facts) -> None:
    facts.writes.add(facts.table_from_parts(cursor.name()))
    _table_options(cursor.tokens, facts)
    for action in split_commas(cursor.rest()):
        words = [token.keyword for token in action]
        first = words[0] if words else ""
        if first in ("DROP", "DISCARD"):
            facts.kind(_K.DROP)
        elif first == "TRUNCATE":
            facts.kind(_K.DROP, _K.TRUNCATE)
        elif first == "EXCHANGE":
            facts.kind(_K.DROP)
            with_at = words.index("WITH") if "WITH" in words else -1
            if with_at < 0:
                raise Unparseable("EXCHANGE PARTITION without WITH TABLE")
            exchanged = Cursor(action, with_at + 1)
            exchanged.expect("TABLE")
            facts.writes.add(facts.table_from_parts(exchanged.name()))
        elif first == "RENAME" and (words[1:2] or [""])[0] not in ("COLUMN", "INDEX", "KEY"):
            renamed = Cursor(action, 1)
            renamed.accept_any("TO", "AS")
            facts.writes.add(facts.table_from_parts(renamed.name()))
        if "BLACKHOLE" in words:
            facts.kind(_K.DROP)
            facts.note("ENGINE=BLACKHOLE discards the table's data")


_DROP_TABLE_LIKE: Final = frozenset({"TABLE", "TABLES", "VIEW", "SEQUENCE"})


def drop(tokens: Sequence[Token], facts: Facts) -> None:
    cursor = Cursor(tokens)
    while cursor.accept_any("TEMPORARY", "ONLINE", "OFFLINE", "UNDO"):
        pass
    word = cursor.kw()
    cursor.advance()
    facts.command = f"DROP {word}"
    if word == "PREPARE":
        deallocate_name(cursor, facts)
        return
    facts.kind(_K.DROP)
    if word in _DROP_TABLE_LIKE:
        cursor.if_exists()
        for name in cursor.names():
            facts.writes.add(facts.table_from_parts(name))
    elif word in ("DATABASE", "SCHEMA"):
        cursor.if_exists()
        facts.writes.add(f"{cursor.name()[0]}.*")
        cursor.end()
    elif word == "INDEX":
        cursor.if_exists()
        cursor.name()
        cursor.expect("ON")
        facts.writes.add(facts.table_from_parts(cursor.name()))
    elif word in ("USER", "ROLE"):
        facts.feature(_F.PRIVILEGE_CHANGE)
    elif word in ("PROCEDURE", "FUNCTION", "TRIGGER", "EVENT", "PACKAGE"):
        pass
    elif word in ("SERVER", "TABLESPACE", "LOGFILE", "SPATIAL", "RESOURCE"):
        facts.feature(_F.SYSTEM_ADMIN)
    else:
        raise Unparseable(f"unknown DROP {word or 'statement'}")


def truncate(tokens: Sequence[Token], facts: Facts) -> None:
    cursor = Cursor(tokens)
    cursor.accept("TABLE")
    facts.command = "TRUNCATE TABLE"
    facts.kind(_K.TRUNCATE)
    facts.writes.add(facts.table_from_parts(cursor.name()))
    if cursor.accept("WAIT"):
        cursor.advance()
    cursor.accept("NOWAIT")
    cursor.end()


def rename(tokens: Sequence[Token], facts: Facts) -> None:
    cursor = Cursor(tokens)
    word = cursor.accept_any("TABLE", "TABLES", "USER")
    facts.kind(_K.ALTER)
    if word == "USER":
        facts.command = "RENAME USER"
        facts.feature(_F.PRIVILEGE_CHANGE)
        return
    if not word:
        raise Unparseable("unknown RENAME statement")
    facts.command = "RENAME TABLE"
    while True:
        facts.writes.add(facts.table_from_parts(cursor.name()))
        cursor.expect("TO")
        facts.writes.add(facts.table_from_parts(cursor.name()))
        if not cursor.punct(","):
            break
    if cursor.accept("WAIT"):
        cursor.advance()
    cursor.accept("NOWAIT")
    cursor.end()
