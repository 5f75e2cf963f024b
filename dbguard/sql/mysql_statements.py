"""MySQL/MariaDB analysis: the handlers of statements that do not contain another statement,
other than those on tables (`mysql_tables`).

Owns SET assignments (variables, scopes, sql_mode values: `sql_mode_flags`), USE, SHOW,
maintenance (ANALYZE / CHECK / OPTIMIZE ... TABLE), transactions, GRANT / REVOKE, DEALLOCATE
PREPARE, CALL, DO, LOAD, HANDLER, and administration. Each handler takes a statement's tokens and
records what it does on the facts, or raises `Unparseable`. Part of `dbguard.sql.mysql` (its
docstring has the table of statement kinds).

Must not dispatch statements or analyse a contained statement (that is `dbguard.sql.mysql`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Final

from dbguard.model import Feature, StatementKind
from dbguard.sql.mysql_facts import (
    Cursor,
    Facts,
    Handler,
    Unparseable,
    find_keyword,
    is_punct,
    split_commas,
    split_words,
)
from dbguard.sql.mysql_lexer import Token, TokenKind
from dbguard.sql.mysql_tree import expressions

_K = StatementKind
_F = Feature


# ------------------------------------------------------------------------------------------ SET

# Session variables whose change alters how later statements are lexed or parsed.
_PARSING_VARIABLES: Final = frozenset(
    {"sql_mode", "character_set_client", "character_set_connection", "collation_connection"}
)
# Session variables only an administrator may set (binary logging, replication identity...).
_ADMIN_VARIABLES: Final = frozenset(
    {
        "sql_log_bin",
        "sql_log_off",
        "pseudo_thread_id",
        "pseudo_slave_mode",
        "pseudo_replica_mode",
        "gtid_next",
        "gtid_seq_no",
        "gtid_domain_id",
        "server_id",
        "debug",
        "debug_sync",
        "wsrep_on",
        "binlog_format",
        "sql_replica_skip_counter",
        "sql_slave_skip_counter",
        "rand_seed1",
        "rand_seed2",
        "original_commit_timestamp",
        "immediate_server_version",
        "original_server_version",
    }
)
SCOPES: Final = {
    "GLOBAL": "global",
    "PERSIST": "global",
    "PERSIST_ONLY": "global",
    "SESSION": "session",
    "LOCAL": "session",
}
_SQL_MODES: Final = frozenset(
    split_words(
        """ALLOW_INVALID_DATES ANSI_QUOTES ERROR_FOR_DIVISION_BY_ZERO HIGH_NOT_PRECEDENCE IGNORE_SPACE
    NO_AUTO_CREATE_USER NO_AUTO_VALUE_ON_ZERO NO_BACKSLASH_ESCAPES NO_DIR_IN_CREATE NO_ENGINE_SUBSTITUTION
    NO_FIELD_OPTIONS NO_KEY_OPTIONS NO_TABLE_OPTIONS NO_UNSIGNED_SUBTRACTION NO_ZERO_DATE NO_ZERO_IN_DATE
    ONLY_FULL_GROUP_BY PAD_CHAR_TO_FULL_LENGTH PIPES_AS_CONCAT REAL_AS_FLOAT STRICT_ALL_TABLES
    STRICT_TRANS_TABLES TIME_TRUNCATE_FRACTIONAL TRADITIONAL ANSI EMPTY_STRING_IS_NULL SIMULTANEOUS_ASSIGNMENT
    TIME_ROUND_FRACTIONAL MYSQL323 MYSQL40 NO_AUTO_VALUE_ON_ZERO"""
    )
)
# Combination modes that include ANSI_QUOTES (MySQL 5.7, MariaDB). ORACLE changes the grammar
# itself: a session in that mode cannot be analysed.
_ANSI_QUOTES_MODES: Final = frozenset({"ANSI_QUOTES", "ANSI", "DB2", "MAXDB", "MSSQL", "POSTGRESQL"})


def sql_mode_flags(sql_mode: str) -> tuple[bool, bool] | None:
    """(ansi_quotes, no_backslash_escapes) for an sql_mode value, None when the value is not
    understood (unknown mode names, or ORACLE, which changes the grammar itself)."""
    modes = {mode.strip().upper() for mode in sql_mode.split(",") if mode.strip()}
    if not modes <= _SQL_MODES | _ANSI_QUOTES_MODES | {"NO_BACKSLASH_ESCAPES"}:
        return None
    return bool(modes & _ANSI_QUOTES_MODES), "NO_BACKSLASH_ESCAPES" in modes


def assignments(cursor: Cursor, facts: Facts, statement_scoped: bool) -> None:
    """`assignment [, assignment ...]` of SET (and SET STATEMENT)."""
    previous_global = False
    while True:
        scope = SCOPES.get(cursor.kw(), "")
        if scope:
            cursor.advance()
        if cursor.accept("NAMES") or cursor.accept("CHARACTER", "SET") or cursor.accept("CHARSET"):
            _split_value(cursor)
            facts.feature(_F.SESSION_CHANGE)
            facts.changes_parsing = True
            facts.charset_changed = True
        elif is_punct(cursor.peek(), "@") and not is_punct(cursor.peek(1), "@"):
            cursor.advance()
            name_token = cursor.peek()
            if name_token is None or name_token.kind not in (TokenKind.WORD, TokenKind.IDENT, TokenKind.STRING):
                raise Unparseable("expected a user variable name")
            cursor.advance()
            while is_punct(cursor.peek(), ".") and not cursor.tokens[cursor.pos].spaced:
                cursor.advance(2)
            _assignment_operator(cursor)
            expressions(_split_value(cursor), facts)
        else:
            if is_punct(cursor.peek(), "@") and is_punct(cursor.peek(1), "@"):
                cursor.advance(2)
                parts = cursor.name()
                if len(parts) == 2 and parts[0].upper() in SCOPES:
                    scope = SCOPES[parts[0].upper()]
                    parts = parts[1:]
            else:
                parts = cursor.name()
            variable = ".".join(parts).lower()
            _assignment_operator(cursor)
            value = _split_value(cursor)
            _system_variable(variable, scope, previous_global, value, facts, statement_scoped)
            expressions(value, facts)
            previous_global = scope == "global" or (not scope and previous_global)
        if not cursor.punct(","):
            return


def _assignment_operator(cursor: Cursor) -> None:
    if cursor.punct("="):
        return
    if is_punct(cursor.peek(), ":") and is_punct(cursor.peek(1), "=") and not cursor.tokens[cursor.pos + 1].spaced:
        cursor.advance(2)
        return
    raise Unparseable("expected = in SET")


def _split_value(cursor: Cursor) -> Sequence[Token]:
    """The tokens up to the next comma outside parentheses."""
    rest = cursor.rest()
    value = split_commas(rest)[0]
    if not value:
        raise Unparseable("SET without a value")
    cursor.advance(len(value))
    return value


def _system_variable(
    variable: str, scope: str, previous_global: bool, value: Sequence[Token], facts: Facts, statement_scoped: bool
) -> None:
    maybe_global = scope == "global" or (not scope and previous_global)
    maybe_session = scope != "global"
    if maybe_global:
        facts.feature(_F.SYSTEM_ADMIN)
    if maybe_session:
        facts.feature(_F.SESSION_CHANGE)
    if variable in _ADMIN_VARIABLES:
        facts.feature(_F.SYSTEM_ADMIN)
    if variable not in _PARSING_VARIABLES:
        return
    if statement_scoped:
        raise Unparseable(f"SET STATEMENT {variable} changes how its own statement is read")
    facts.changes_parsing = True
    if not maybe_session:
        return
    if variable != "sql_mode":
        facts.charset_changed = True
        if maybe_global:
            facts.after = None
        return
    literal = value[0].value if len(value) == 1 and value[0].kind is TokenKind.STRING else None
    flags = sql_mode_flags(literal) if literal is not None else None
    if flags is None or maybe_global or facts.after is None:
        facts.after = None
        facts.note("sql_mode set to a value that is not known here")
        return
    facts.after = dataclasses.replace(facts.after, ansi_quotes=flags[0], no_backslash_escapes=flags[1])


# ----------------------------------------------------------------------- USE, SHOW, maintenance


def use(tokens: Sequence[Token], facts: Facts) -> None:
    cursor = Cursor(tokens)
    name = cursor.name()
    cursor.end()
    if len(name) != 1:
        raise Unparseable("USE takes a database name")
    facts.command = "USE"
    facts.kind(_K.USE)
    facts.feature(_F.SESSION_CHANGE)
    facts.changes_parsing = True  # unqualified names resolve against the new database
    if facts.after is not None:
        facts.after = dataclasses.replace(facts.after, search_path=(name[0],))


_SHOW_READS: Final = frozenset({"COLUMNS", "FIELDS", "INDEX", "INDEXES", "KEYS"})


def show(tokens: Sequence[Token], facts: Facts) -> None:
    facts.command = "SHOW"
    facts.kind(_K.SHOW)
    where = find_keyword(tokens, "WHERE")
    head = tokens[: where if where >= 0 else len(tokens)]
    if where >= 0:
        expressions(tokens[where + 1 :], facts)
    cursor = Cursor(head)
    cursor.accept_any("FULL", "EXTENDED")
    cursor.accept("FULL")
    word = cursor.accept_any(*_SHOW_READS, "CREATE")
    if word == "CREATE" and cursor.accept_any("TABLE", "VIEW"):
        facts.reads.add(facts.table_from_parts(cursor.name()))
    elif word and word != "CREATE" and cursor.accept_any("FROM", "IN"):
        table = cursor.name()
        if cursor.accept_any("FROM", "IN"):
            table = [cursor.name()[0], table[-1]]
        facts.reads.add(facts.table_from_parts(table))


def maintenance(tokens: Sequence[Token], facts: Facts) -> None:
    """ANALYZE / CHECK / CHECKSUM (read) and OPTIMIZE / REPAIR (write) TABLE t, ..."""
    word = tokens[0].keyword
    cursor = Cursor(tokens)
    cursor.accept_any("NO_WRITE_TO_BINLOG", "LOCAL")
    if not cursor.accept_any("TABLE", "TABLES"):
        raise Unparseable(f"unknown {word} statement")
    facts.command = f"{word} TABLE"
    facts.kind(_K.OTHER)
    target = facts.writes if word in ("OPTIMIZE", "REPAIR") else facts.reads
    for name in cursor.names():
        target.add(facts.table_from_parts(name))


# ------------------------------------------------------------------------------ transactions


def transaction(tokens: Sequence[Token], facts: Facts) -> None:
    """START TRANSACTION, BEGIN, COMMIT, ROLLBACK, SAVEPOINT, RELEASE SAVEPOINT, XA: read
    strictly, since BEGIN can also open a MariaDB anonymous block."""
    word = tokens[0].keyword
    cursor = Cursor(tokens)
    facts.kind(_K.TRANSACTION)
    facts.command = word
    if word == "START":
        if not cursor.accept("TRANSACTION"):
            replication(tokens, facts)
            return
        facts.command = "START TRANSACTION"
        while not cursor.at_end():
            if not (
                cursor.accept("READ", "ONLY")
                or cursor.accept("READ", "WRITE")
                or cursor.accept("WITH", "CONSISTENT", "SNAPSHOT")
            ):
                raise Unparseable(f"unexpected {cursor.rest()[0].text!r} in START TRANSACTION")
            cursor.punct(",")
    elif word == "BEGIN":
        if cursor.accept("NOT", "ATOMIC"):
            facts.kinds.discard(_K.TRANSACTION)
            facts.kind(_K.DO)
            facts.feature(_F.UNTRUSTED_CODE)
            facts.command = "BEGIN NOT ATOMIC"
            facts.note("anonymous block body not analysed")
            return
        cursor.accept("WORK")
    elif word in ("COMMIT", "ROLLBACK"):
        cursor.accept("WORK")
        if word == "ROLLBACK" and cursor.accept("TO"):
            cursor.accept("SAVEPOINT")
            cursor.name()
        else:
            if cursor.accept("AND"):
                cursor.accept("NO")
                cursor.expect("CHAIN")
            cursor.accept("NO")
            cursor.accept("RELEASE")
    elif word == "SAVEPOINT":
        cursor.name()
    elif word == "RELEASE":
        cursor.expect("SAVEPOINT")
        cursor.name()
        facts.command = "RELEASE SAVEPOINT"
    elif word == "XA":
        facts.command = f"XA {cursor.kw()}".strip()
        if any(token.kind is TokenKind.PUNCT and token.text != "," for token in cursor.rest()):
            raise Unparseable("unexpected punctuation in XA")
        return
    cursor.end()


# ----------------------------------------------------------------------- privileges, DEALLOCATE


def grant(tokens: Sequence[Token], facts: Facts) -> None:
    word = tokens[0].keyword
    facts.command = word
    facts.kind(_K.GRANT if word == "GRANT" else _K.REVOKE)
    facts.feature(_F.PRIVILEGE_CHANGE)


def statement_name(cursor: Cursor) -> str:
    name = cursor.name()
    if len(name) != 1:
        raise Unparseable("expected a statement name")
    return name[0].lower()  # prepared statement names are not case-sensitive


def deallocate(tokens: Sequence[Token], facts: Facts) -> None:
    cursor = Cursor(tokens)
    cursor.expect("PREPARE")
    facts.command = "DEALLOCATE PREPARE"
    deallocate_name(cursor, facts)


def deallocate_name(cursor: Cursor, facts: Facts) -> None:
    facts.kind(_K.PREPARE)
    facts.deallocates = statement_name(cursor)
    cursor.end()


# --------------------------------------------------------------------- CALL, DO, LOAD, HANDLER


def call(tokens: Sequence[Token], facts: Facts) -> None:
    cursor = Cursor(tokens)
    facts.command = "CALL"
    facts.kind(_K.CALL)
    parts = cursor.name()
    if len(parts) > 2:
        raise Unparseable("procedure name with more than two parts")
    name = ".".join(parts).lower()
    facts.functions.add(name)
    facts.user_code(f"calls procedure {name}")
    if cursor.punct("("):
        arguments = cursor.rest()
        if not arguments or not is_punct(arguments[-1], ")"):
            raise Unparseable("expected ) after CALL arguments")
        expressions(arguments[:-1], facts)
    else:
        cursor.end()


def do(tokens: Sequence[Token], facts: Facts) -> None:
    facts.command = "DO"
    facts.kind(_K.OTHER)
    if len(tokens) < 2:
        raise Unparseable("DO without an expression")
    expressions(tokens[1:], facts)


def load(tokens: Sequence[Token], facts: Facts) -> None:
    cursor = Cursor(tokens)
    if cursor.accept("INDEX", "INTO", "CACHE"):
        facts.command = "LOAD INDEX INTO CACHE"
        facts.kind(_K.OTHER)
        return
    word = cursor.accept_any("DATA", "XML")
    if not word:
        raise Unparseable("unknown LOAD statement")
    facts.command = f"LOAD {word}"
    facts.kind(_K.LOAD, _K.INSERT)
    facts.feature(_F.FILE_ACCESS)
    cursor.accept_any("LOW_PRIORITY", "CONCURRENT")
    local = cursor.accept("LOCAL")
    cursor.expect("INFILE")
    where = "client" if local else "server"
    facts.note(f"reads {where} file {cursor.string()!r}")
    if cursor.accept_any("REPLACE", "IGNORE") == "REPLACE":
        facts.kind(_K.DELETE)
    cursor.expect("INTO", "TABLE")
    facts.writes.add(facts.table_from_parts(cursor.name()))
    for index in range(cursor.pos, len(tokens)):  # SET col = expr, ... (not CHARACTER SET)
        if tokens[index].keyword == "SET" and tokens[index - 1].keyword != "CHARACTER":
            expressions(tokens[index + 1 :], facts)
            break


def handler_statement(tokens: Sequence[Token], facts: Facts) -> None:
    cursor = Cursor(tokens)
    table = facts.table_from_parts(cursor.name())
    action = cursor.accept_any("OPEN", "READ", "CLOSE")
    facts.command = f"HANDLER {action}".strip()
    if action == "OPEN":
        # Opening is what reads need: `HANDLER secrets OPEN AS h` then `HANDLER h READ` reads
        # secrets under another name, so the OPEN is where the table shows.
        facts.kind(_K.SELECT)
        facts.reads.add(table)
    elif action == "READ":
        facts.kind(_K.SELECT)
        facts.reads.add(table)
        where = find_keyword(tokens, "WHERE")
        if where >= 0:
            limit = find_keyword(tokens, "LIMIT", where)
            expressions(tokens[where + 1 : limit if limit >= 0 else len(tokens)], facts)
    elif action:
        facts.kind(_K.OTHER)
    else:
        raise Unparseable("unknown HANDLER statement")


# ---------------------------------------------------------------------------- administration


def other_statement(tokens: Sequence[Token], facts: Facts) -> None:
    """LOCK / UNLOCK TABLES, CACHE INDEX, HELP, SIGNAL, RESIGNAL, GET DIAGNOSTICS."""
    word = tokens[0].keyword
    facts.kind(_K.OTHER)
    cursor = Cursor(tokens)
    if word in ("LOCK", "UNLOCK") and cursor.kw() == "INSTANCE":
        facts.feature(_F.SYSTEM_ADMIN)
    if word == "GET" and not (cursor.accept("DIAGNOSTICS") or cursor.accept_any("CURRENT", "STACKED")):
        raise Unparseable("unknown GET statement")
    if word == "CACHE" and not cursor.accept("INDEX"):
        raise Unparseable("unknown CACHE statement")
    facts.command = f"{word} {cursor.kw()}".strip() if word in ("LOCK", "UNLOCK") else word


def admin(tokens: Sequence[Token], facts: Facts) -> None:
    """Server administration: KILL, SHUTDOWN, FLUSH, RESET, PURGE, replication, plugins..."""
    word = tokens[0].keyword
    facts.command = word
    facts.kind(_K.OTHER)
    facts.feature(_F.SYSTEM_ADMIN)
    cursor = Cursor(tokens)
    if word == "KILL":
        while cursor.accept_any("HARD", "SOFT", "CONNECTION", "QUERY", "ID", "USER"):
            pass
        expressions(cursor.rest(), facts)
    elif word == "PURGE":
        before = find_keyword(tokens, "BEFORE")
        if before >= 0:
            expressions(tokens[before + 1 :], facts)
    elif word in ("CLONE", "IMPORT"):
        facts.feature(_F.FILE_ACCESS)
    elif word in ("INSTALL", "UNINSTALL"):
        facts.feature(_F.UNTRUSTED_CODE)
        facts.note("loads or unloads native server code")


def replication(tokens: Sequence[Token], facts: Facts) -> None:
    """START / STOP SLAVE, REPLICA, GROUP_REPLICATION, ALL SLAVES."""
    facts.kinds.discard(_K.TRANSACTION)
    cursor = Cursor(tokens)
    cursor.accept("ALL")
    if not cursor.accept_any("SLAVE", "SLAVES", "REPLICA", "REPLICAS", "GROUP_REPLICATION"):
        raise Unparseable(f"unknown {tokens[0].keyword} statement")
    admin(tokens, facts)


def refuse(reason: str) -> Handler:
    def handler(tokens: Sequence[Token], facts: Facts) -> None:
        raise Unparseable(reason)

    return handler
