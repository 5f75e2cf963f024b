"""MySQL/MariaDB statement analysis: SQL text -> one `StatementInfo` per statement, with sqlglot.

Owns reading MySQL and MariaDB SQL the way the server will and describing what each statement
does in dbguard's vocabulary (`dbguard.model`). It and its parts are the only modules that
import sqlglot; they do no I/O and keep no state between calls. It never raises: whatever it does not fully
understand is unparseable (`dbguard.sql.unparseable`), so the policy fails closed.

How: `mysql_lexer` splits the message into statements and tokens exactly as the server's lexer
does (strings, comments, versioned comments, sql_mode); each statement is dispatched on its
leading keywords. Queries and DML (SELECT, TABLE, VALUES, INSERT, REPLACE, UPDATE, DELETE,
CREATE TABLE) and every embedded expression (SET values, DO, CALL arguments, SHOW ... WHERE...)
are re-rendered from the tokens and parsed by sqlglot's MySQL dialect, then walked; the other
statements are read from the tokens directly, with a strict grammar where the statement could
hide another one. A sqlglot `Command` fallback, an unexpected node or a parse error is
unparseable.

Within a message: settings that change how the rest is read (`SET sql_mode`, `SET NAMES`, `USE`)
apply to the statements after them when their value is known. When it is not (a computed
sql_mode, user code, EXECUTE of a prepared statement), the rest is read as is only if it cannot
read differently (ASCII, no double quote, no backslash), else it is one unparseable statement.
Statements read with settings changed this way are literal_sensitive (never cache them by shape).

Versioned comments run on some servers and not others (a future version; /*!50700../*!99999
that MariaDB skips; /*M! that MySQL skips): a statement containing such a comment is analysed once
per set of comments a server (MySQL 5.7+, MariaDB 10.0+) runs, and the analyses are merged. A `;`
inside such a comment makes its two statements unparseable (where the comment is skipped they
are one statement).

This module owns the entry points, the message-level analysis (settings carried from one statement
to the next, versioned comments and server variants), the dispatch table, and the statements that
contain another statement (SET STATEMENT ... FOR, EXPLAIN / ANALYZE stmt, PREPARE, EXECUTE). The
rest is in its parts, each importing only those before it: `mysql_facts` (the facts accumulator,
the token cursor), `mysql_where` (WHERE truth), `mysql_tree` (sqlglot parsing, the AST walk),
`mysql_statements` (SET assignments, USE, SHOW, transactions, CALL, LOAD, administration...),
`mysql_tables` (DML, CREATE, ALTER, DROP...). It must not be imported by them.

Statement kinds and features (PRODUCT.md); "+ inner" adds the analysis of the contained
statement; features in brackets:

| statement                                              | kinds [features]                          |
| ------------------------------------------------------ | ----------------------------------------- |
| SELECT, TABLE t, VALUES ROW(...), (SELECT ...), WITH   | select (+ what a WITH ... UPDATE/DELETE does) |
| SELECT ... INTO OUTFILE / DUMPFILE 'file'              | select [file_access]                      |
| INSERT (... SELECT: + select)                          | insert; ON DUPLICATE KEY UPDATE: + update |
| REPLACE                                                | insert, delete                            |
| UPDATE / DELETE, multi-table too                       | update / delete                           |
| CREATE TABLE / INDEX / DATABASE / SEQUENCE             | create; OR REPLACE (table, database, sequence): + drop |
| CREATE VIEW                                            | create (its body: reads and functions only) |
| CREATE PROCEDURE / FUNCTION / TRIGGER / EVENT          | create [untrusted_code; SONAME: + system_admin] |
| CREATE USER / ROLE                                     | create [privilege_change]                 |
| CREATE SERVER / TABLESPACE / LOGFILE GROUP / ...       | create [system_admin; tablespace: + file_access] |
| any DEFINER = account clause                           | [privilege_change]                        |
| ENGINE=CONNECT, DATA / INDEX DIRECTORY                 | [file_access]                             |
| ENGINE=FEDERATED, CONNECTION = '...'                   | [dynamic_sql] (a remote server, like dblink) |
| ALTER TABLE                                            | alter                                     |
| ... DROP ..., DISCARD, EXCHANGE PARTITION, ENGINE=BLACKHOLE | + drop (TRUNCATE PARTITION: + truncate) |
| ALTER DATABASE / VIEW / EVENT / PROCEDURE / SEQUENCE   | alter [EVENT ... DO: untrusted_code]      |
| ALTER USER / ROLE, RENAME USER                         | alter [privilege_change]                  |
| ALTER SERVER / INSTANCE / TABLESPACE / ...             | alter [system_admin]                      |
| RENAME TABLE                                           | alter (writes both names)                 |
| DROP anything (DATABASE d writes "d.*")                | drop                                      |
| DROP USER / ROLE; DROP SERVER / TABLESPACE / ...       | drop [privilege_change; system_admin]     |
| TRUNCATE [TABLE]                                       | truncate                                  |
| GRANT / REVOKE                                         | grant / revoke [privilege_change]         |
| SET @user_var                                          | set                                       |
| SET [SESSION] system variable                          | set [session_change]                      |
| SET sql_mode, NAMES, CHARACTER SET, character_set_client, character_set_connection,       |  |
| collation_connection                                   | set [session_change]; changes_parsing     |
| SET GLOBAL / PERSIST / PERSIST_ONLY, sql_log_bin & co  | set [system_admin]                        |
| SET PASSWORD / ROLE / DEFAULT ROLE                     | set [privilege_change]                    |
| SET RESOURCE GROUP                                     | set [system_admin]                        |
| SET STATEMENT ... FOR stmt (MariaDB)                   | set + inner [session_change]              |
| SET TRANSACTION, START TRANSACTION, BEGIN, COMMIT, ROLLBACK, SAVEPOINT, RELEASE, XA | transaction |
| SHOW ...                                               | show; COLUMNS / INDEX / CREATE TABLE: reads the table |
| EXPLAIN / DESCRIBE stmt, MariaDB ANALYZE stmt          | explain + inner                           |
| DESCRIBE t, EXPLAIN t                                  | explain (reads t)                         |
| USE db                                                 | use [session_change]; changes_parsing     |
| PREPARE s FROM 'text' (FROM @var: unparseable)         | prepare + inner [dynamic_sql]; `prepares` |
| EXECUTE s [USING ...]                                  | execute; `executes`; changes_parsing      |
| EXECUTE IMMEDIATE 'text' (MariaDB)                     | execute + inner [dynamic_sql]; not a literal: unparseable |
| DEALLOCATE PREPARE s, DROP PREPARE s                   | prepare; `deallocates`                    |
| CALL p(...)                                            | call [user_code_call]; changes_parsing    |
| DO expr (MySQL's: evaluates expressions)               | other (+ select for subqueries)           |
| BEGIN NOT ATOMIC ... END (MariaDB anonymous block)     | do [untrusted_code]                       |
| LOAD DATA / LOAD XML [LOCAL] INFILE ... [REPLACE]      | load, insert (+ delete) [file_access]     |
| HANDLER t OPEN, HANDLER t READ / HANDLER t CLOSE       | select (reads t) / other                  |
| LOCK / UNLOCK TABLES, CACHE INDEX, LOAD INDEX, HELP, SIGNAL, RESIGNAL, GET DIAGNOSTICS | other |
| ANALYZE / CHECK / CHECKSUM (reads), OPTIMIZE / REPAIR (writes) TABLE | other               |
| KILL, SHUTDOWN, RESTART, FLUSH, RESET, PURGE, CHANGE MASTER / REPLICATION,              |  |
| START / STOP SLAVE / REPLICA, BACKUP, LOCK / UNLOCK INSTANCE | other [system_admin]                |
| INSTALL / UNINSTALL PLUGIN / SONAME / COMPONENT        | other [system_admin, untrusted_code]      |
| CLONE, IMPORT TABLE                                    | other [system_admin, file_access]         |
| BINLOG, top-level IF / CASE / WHILE / LOOP / REPEAT, anything else | other [unparseable]   |

Functions: every call written as `name(...)` anywhere, lower-case, qualified as written; a name
that is not a MySQL/MariaDB built-in, is quoted, or is qualified with a database is user code
(user_code_call, and changes_parsing: its body could change any setting). LOAD_FILE() is
file_access.

Names: tables are "database.table", case kept as written. An unqualified name resolves to the
current database (settings.search_path[0]); before any USE (empty search_path) it is "?.table":
the server refuses such a statement ("No database selected"), and "?" matches `*` globs but no
real database's. DROP / CREATE DATABASE d writes "d.*".

Unfiltered: a SELECT that reads a table, an UPDATE or a DELETE whose WHERE is missing or always
true; a condition that mentions no column has the same value for every row, so unless it is
provably false it counts as true (`WHERE 1`, `WHERE NOT 0`, `WHERE @x`, `WHERE EXISTS (SELECT 1
FROM u)`), and the verdict then depends on literals (literal_sensitive). `x = x` is true. LIMIT
does not filter.

Fingerprint: sha256 of the statement's tokens as rendered for sqlglot with every string and number
literal replaced by `?` (comments and versioned-comment markers gone), first 16 hex digits. It is
taken from the lexer's tokens rather than a sqlglot tree: the same for every statement (keyword-read
ones too), and what the server lexed. `mysql_shape()` gives the same for a whole message, from
lexing alone (~25-180 µs), for a decision cache keyed by shape.

Not analysed: stored program bodies (CREATE PROCEDURE ...: create + untrusted_code; MariaDB
BEGIN NOT ATOMIC: do + untrusted_code), correlation of subqueries (an unqualified column in a
subquery counts as the outer row's, so the WHERE counts as filtering), HANDLER ... READ scans
(never unfiltered), the tables of LOCK TABLES.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Final

from dbguard.model import Feature, ParseSettings, StatementInfo, StatementKind
from dbguard.sql import MAX_ANALYSED_CHARS, unparseable
from dbguard.sql.mysql_facts import (
    BUILTIN_FUNCTIONS,
    Cursor,
    Facts,
    Handler,
    Unparseable,
    find_keyword,
    fingerprint,
    is_punct,
)
from dbguard.sql.mysql_lexer import Condition, Statement, Token, TokenKind, lex, render_shape, respaced
from dbguard.sql.mysql_statements import (
    SCOPES,
    admin,
    assignments,
    call,
    deallocate,
    do,
    grant,
    handler_statement,
    load,
    maintenance,
    other_statement,
    refuse,
    replication,
    show,
    sql_mode_flags,
    statement_name,
    transaction,
    use,
)
from dbguard.sql.mysql_tables import alter, create, delete, drop, insert, rename, truncate, update
from dbguard.sql.mysql_tree import expressions, query

_K = StatementKind
_F = Feature


# ------------------------------------------------------------------------------- entry points


def analyse_mysql(sql: str, settings: ParseSettings) -> tuple[StatementInfo, ...]:
    """Analyse one message's SQL text as a MySQL/MariaDB server with `settings` reads it.

    Never raises: whatever cannot be fully understood comes back as unparseable.
    """
    try:
        return _analyse_message(sql, settings)
    except RecursionError:
        return (unparseable(sql, "statement nested too deeply"),)
    except Exception as error:  # fail closed on anything unexpected
        return (unparseable(sql, f"analyser error: {type(error).__name__}: {error}"),)


def mysql_shape(sql: str, settings: ParseSettings) -> str | None:
    """The message as the server lexes it, comments dropped and every string and number literal
    replaced by `?`, statements joined by `;`: the key for a decision cache by shape (only for
    messages whose statements are all not literal_sensitive). None when the text cannot be
    lexed: analyse it."""
    lexed = lex(sql, ansi_quotes=settings.ansi_quotes, no_backslash_escapes=settings.no_backslash_escapes)
    if lexed.error:
        return None
    return ";".join(render_shape(statement.tokens) for statement in lexed.statements)


def _analyse_message(sql: str, settings: ParseSettings) -> tuple[StatementInfo, ...]:
    infos: list[StatementInfo] = []
    position = 0
    condition = 0
    current = settings
    joined_to_previous = False  # the previous statement ended at a ; some servers skip
    while True:
        lexed = lex(
            sql,
            position,
            ansi_quotes=current.ansi_quotes,
            no_backslash_escapes=current.no_backslash_escapes,
            condition=condition,
        )
        if position == 0 and len(sql) - lexed.elided_chars > MAX_ANALYSED_CHARS:
            return (unparseable(sql[:200], f"statement longer than {MAX_ANALYSED_CHARS} characters "
                                           "outside its long literals"),)
        resume: tuple[int, int, ParseSettings] | None = None
        stop = False
        for statement in lexed.statements:
            info, after, charset_changed = _analyse_statement(sql, statement, current)
            if current != settings and not info.literal_sensitive:
                # Read with settings an earlier statement of the message set: not the session's,
                # so never to be reused for the same statement in another message.
                info = dataclasses.replace(info, literal_sensitive=True)
            joined, joined_to_previous = joined_to_previous, _skippable(statement.resume_condition)
            if joined or joined_to_previous:
                # Where the server skips that comment, this statement and the next are one: what
                # each does alone still shows, but neither is fully understood.
                info = dataclasses.replace(
                    info,
                    kinds=info.kinds | {_K.OTHER},
                    features=info.features | {_F.UNPARSEABLE},
                    detail="; ".join(filter(None, [info.detail, "a ; inside a versioned comment some servers skip"])),
                )
            infos.append(info)
            if after == current and not charset_changed:
                continue
            rest = sql[statement.next_pos :]
            if after is None and _reads_the_same_in_any_mode(rest):
                continue
            if after is None or (charset_changed and not rest.isascii()):
                if _has_tokens(rest, current):
                    infos.append(
                        unparseable(
                            rest.strip(),
                            f"follows {info.command or 'a statement'}, which may change how the rest is read",
                        )
                    )
                stop = True
                break
            resume = (statement.next_pos, statement.resume_condition, after)
            break
        if stop:
            break
        if resume is None:
            if lexed.error:
                infos.append(unparseable(sql[lexed.error_start :].strip(), lexed.error))
            break
        position, condition, current = resume
    if len(infos) > 1:
        infos = [dataclasses.replace(info, features=info.features | {_F.MULTI_STATEMENT}) for info in infos]
    return tuple(infos)


def _reads_the_same_in_any_mode(text: str) -> bool:
    """Text that every sql_mode (of those ParseSettings models) and every ASCII-compatible client
    character set lexes the same way: no double quote, no backslash, nothing but ASCII."""
    return text.isascii() and '"' not in text and "\\" not in text


def _has_tokens(text: str, settings: ParseSettings) -> bool:
    lexed = lex(text, ansi_quotes=settings.ansi_quotes, no_backslash_escapes=settings.no_backslash_escapes)
    return bool(lexed.statements or lexed.error)


def _analyse_statement(
    sql: str, statement: Statement, settings: ParseSettings
) -> tuple[StatementInfo, ParseSettings | None, bool]:
    text = sql[statement.start : statement.end]
    tokens = statement.tokens
    try:
        variants = [_analyse_tokens(variant, settings, statement.hints) for variant in _variants(tokens)]
        facts = _merge(variants)
    except Unparseable as error:
        first = tokens[0].keyword
        after = None if first in ("SET", "USE", "CALL", "EXECUTE") else settings
        return unparseable(text, error.detail), after, False
    except RecursionError:
        return unparseable(text, "statement nested too deeply"), settings, False
    return facts.info(text, tokens), facts.after, facts.charset_changed


def _analyse_tokens(tokens: Sequence[Token], settings: ParseSettings, hints: Sequence[str]) -> Facts:
    facts = Facts(settings)
    _dispatch(tokens, facts)
    if any("SET_VAR" in hint.upper() for hint in hints):
        facts.feature(_F.SESSION_CHANGE)
        facts.note("optimizer hint SET_VAR changes a variable for this statement")
    return facts


# ------------------------------------------------------------------ server versions and comments
# A versioned comment runs on some servers and not on others (a future version, MySQL-only
# /*!5xxxx and /*!8xxxx that MariaDB skips, MariaDB-only /*M! ...): a statement is analysed once
# for each set of comments some server runs, and the results are merged, so the analysis holds on
# every server. Servers older than MySQL 5.7 and MariaDB 10.0 are not considered.

_OLDEST_MYSQL: Final = 50700
_OLDEST_MARIADB: Final = 100000
_MYSQL_ONLY_VERSIONS: Final = range(50700, 100000)


def _runs(condition: int, flavour: str, version: int) -> bool:
    """Whether a server (flavour, version) runs the content of a comment with this condition."""
    if condition in (0, Condition.ALWAYS):
        return True
    if condition == Condition.MARIADB:
        return flavour == "mariadb"
    if condition > Condition.MARIADB_VERSION:
        return flavour == "mariadb" and condition - Condition.MARIADB_VERSION <= version
    if flavour == "mariadb" and condition in _MYSQL_ONLY_VERSIONS:
        return False
    return condition <= version


def _servers(conditions: set[int]) -> list[tuple[str, int]]:
    """One server per distinct set of comments run: the oldest of each flavour, and each version
    a comment names."""
    versions = {condition % Condition.MARIADB_VERSION for condition in conditions}
    return [("mysql", version) for version in {_OLDEST_MYSQL} | {v for v in versions if v > _OLDEST_MYSQL}] + [
        ("mariadb", version) for version in {_OLDEST_MARIADB} | {v for v in versions if v > _OLDEST_MARIADB}
    ]


def _skippable(condition: int) -> bool:
    return any(not _runs(condition, flavour, version) for flavour, version in _servers({condition}))


def _variants(tokens: Sequence[Token]) -> list[Sequence[Token]]:
    """The statement as each server runs it (most of the time: one variant, the tokens)."""
    conditions = {token.condition for token in tokens} - {0, Condition.ALWAYS}
    if not conditions:
        return [tokens]
    executed = {
        frozenset(condition for condition in conditions if _runs(condition, flavour, version))
        for flavour, version in _servers(conditions)
    }
    if executed == {frozenset(conditions)}:
        return [tokens]
    variants: list[Sequence[Token]] = []
    for runs in sorted(executed, key=len, reverse=True):
        kept: list[Token] = []
        dropped = False
        for token in tokens:
            if token.condition in runs or token.condition in (0, Condition.ALWAYS):
                kept.append(respaced(token) if dropped else token)
                dropped = False
            else:
                dropped = True
        if kept:
            variants.append(kept)
    return variants


def _merge(variants: list[Facts]) -> Facts:
    """One analysis that holds for every variant."""
    merged = variants[0]
    for other in variants[1:]:
        merged.kinds |= other.kinds
        merged.reads |= other.reads
        merged.writes |= other.writes
        merged.functions |= other.functions
        merged.features |= other.features
        merged.unfiltered |= other.unfiltered
        merged.changes_parsing |= other.changes_parsing
        merged.literal_sensitive |= other.literal_sensitive
        merged.charset_changed |= other.charset_changed
        merged.notes.extend(other.notes)
        for name in ("prepares", "executes", "deallocates"):
            if getattr(merged, name) != getattr(other, name):
                raise Unparseable(f"server versions disagree on the statement name ({name})")
        if merged.after != other.after:
            merged.after = None
    if len(variants) > 1:
        merged.literal_sensitive = True
        merged.note(f"versioned comments: analysed as {len(variants)} server versions run it")
    return merged


# ---------------------------------------------------------------------------------- dispatching


def _dispatch(tokens: Sequence[Token], facts: Facts) -> None:
    first = tokens[0]
    if is_punct(first, "("):
        query(tokens, facts)
        return
    handler = _HANDLERS.get(first.keyword)
    if handler is None:
        raise Unparseable(f"unknown statement {first.text!r}")
    handler(tokens, facts)


# ----------------------------------------------------------- statements that contain statements
# SET ... (SET STATEMENT ... FOR stmt), EXPLAIN / ANALYZE stmt, PREPARE, EXECUTE: the contained
# statement is analysed through the dispatch table, or as a message of its own.


def _set(tokens: Sequence[Token], facts: Facts) -> None:
    cursor = Cursor(tokens)
    facts.command = "SET"
    facts.kind(_K.SET)
    word = cursor.kw()
    if word == "PASSWORD" or word == "ROLE" or (word == "DEFAULT" and cursor.kw(1) == "ROLE"):
        facts.command = "SET DEFAULT ROLE" if word == "DEFAULT" else f"SET {word}"
        facts.feature(_F.PRIVILEGE_CHANGE)
        return
    if word == "RESOURCE" and cursor.kw(1) == "GROUP":
        facts.command = "SET RESOURCE GROUP"
        facts.feature(_F.SYSTEM_ADMIN)
        return
    if word == "TRANSACTION" or (word in SCOPES and cursor.kw(1) == "TRANSACTION"):
        facts.command = "SET TRANSACTION"
        facts.kinds.discard(_K.SET)
        facts.kind(_K.TRANSACTION)
        if SCOPES.get(word) == "global":
            facts.feature(_F.SYSTEM_ADMIN)
        elif word in SCOPES:
            facts.feature(_F.SESSION_CHANGE)
        return
    if word == "STATEMENT":
        _set_statement(cursor, facts)
        return
    assignments(cursor, facts, statement_scoped=False)
    cursor.end()


def _set_statement(cursor: Cursor, facts: Facts) -> None:
    """MariaDB SET STATEMENT var = value [, ...] FOR statement."""
    cursor.advance()
    tokens = cursor.tokens
    for_at = find_keyword(tokens, "FOR", cursor.pos)
    if for_at < 0 or for_at + 1 >= len(tokens):
        raise Unparseable("SET STATEMENT without FOR")
    assignments(Cursor(tokens[:for_at], cursor.pos), facts, statement_scoped=True)
    _dispatch(tokens[for_at + 1 :], facts)
    facts.kind(_K.SET)
    facts.command = "SET STATEMENT"


_EXPLAINABLE: Final = frozenset({"SELECT", "WITH", "TABLE", "VALUES", "INSERT", "REPLACE", "UPDATE", "DELETE"})


def _explain(tokens: Sequence[Token], facts: Facts) -> None:
    cursor = Cursor(tokens)
    while True:
        if cursor.accept_any("EXTENDED", "PARTITIONS", "ANALYZE"):
            continue
        if cursor.accept("FORMAT"):
            cursor.punct("=")
            cursor.name()
            continue
        break
    if cursor.kw() in _EXPLAINABLE or is_punct(cursor.peek(), "("):
        _dispatch(cursor.rest(), facts)
    elif cursor.accept("FOR", "CONNECTION"):
        pass
    else:  # DESCRIBE table [column | 'wild']
        facts.reads.add(facts.table_from_parts(cursor.name()))
        column = cursor.peek()
        if column is not None and column.kind in (TokenKind.WORD, TokenKind.IDENT, TokenKind.STRING):
            cursor.advance()
        cursor.end()
    facts.kind(_K.EXPLAIN)
    facts.command = "ANALYZE" if tokens[0].keyword == "ANALYZE" else "EXPLAIN"


def _analyze(tokens: Sequence[Token], facts: Facts) -> None:
    """ANALYZE TABLE (maintenance) or MariaDB's ANALYZE statement (runs it, like EXPLAIN ANALYZE)."""
    if Cursor(tokens).accept_any("TABLE", "TABLES", "NO_WRITE_TO_BINLOG", "LOCAL"):
        maintenance(tokens, facts)
        return
    _explain(tokens, facts)


def _prepare(tokens: Sequence[Token], facts: Facts) -> None:
    cursor = Cursor(tokens)
    facts.command = "PREPARE"
    facts.kind(_K.PREPARE)
    facts.feature(_F.DYNAMIC_SQL)
    facts.prepares = statement_name(cursor)
    cursor.expect("FROM")
    if cursor.punct("@"):
        # The text is only known to the server, and EXECUTE would run it whatever it is: fail
        # closed here, as for EXECUTE IMMEDIATE of a computed text.
        raise Unparseable("PREPARE of a text computed at run time (a user variable)")
    text = cursor.string()
    cursor.end()
    _inner(text, facts, "PREPARE")


def _inner(text: str, facts: Facts, what: str) -> StatementInfo:
    """Add the analysis of a statement given as a string (PREPARE / EXECUTE IMMEDIATE)."""
    inner = _analyse_message(text, facts.after or facts.settings)
    if len(inner) != 1:
        raise Unparseable(f"{what} text must be exactly one statement, found {len(inner)}")
    info = inner[0]
    facts.kinds.update(info.kinds)
    facts.reads.update(info.reads)
    facts.writes.update(info.writes)
    facts.functions.update(info.functions)
    facts.features.update(info.features)
    facts.unfiltered.update(info.unfiltered)
    facts.note(f"{what} text: {info.command}" + (f" ({info.detail})" if info.detail else ""))
    return info


def _execute(tokens: Sequence[Token], facts: Facts) -> None:
    cursor = Cursor(tokens)
    facts.kind(_K.EXECUTE)
    if cursor.accept("IMMEDIATE"):
        facts.command = "EXECUTE IMMEDIATE"
        facts.feature(_F.DYNAMIC_SQL)
        token = cursor.peek()
        if token is None or token.kind is not TokenKind.STRING:
            raise Unparseable("EXECUTE IMMEDIATE of a text computed at run time")
        cursor.advance()
        if _inner(token.value, facts, "EXECUTE IMMEDIATE").changes_parsing:  # it runs now
            facts.changes_parsing = True
            facts.after = None
    else:
        facts.command = "EXECUTE"
        facts.executes = statement_name(cursor)
        facts.changes_parsing = True  # what it runs is only known to the session
        facts.after = None
    if cursor.accept("USING"):
        expressions(cursor.rest(), facts)
    elif not cursor.at_end():
        raise Unparseable(f"unexpected {cursor.rest()[0].text!r} in EXECUTE")


# --------------------------------------------------------------------------- the dispatch table

_HANDLERS: Final[dict[str, Handler]] = {
    "SELECT": query,
    "WITH": query,
    "TABLE": query,
    "VALUES": query,
    "INSERT": insert,
    "REPLACE": insert,
    "UPDATE": update,
    "DELETE": delete,
    "CREATE": create,
    "ALTER": alter,
    "DROP": drop,
    "TRUNCATE": truncate,
    "RENAME": rename,
    "SET": _set,
    "USE": use,
    "SHOW": show,
    "EXPLAIN": _explain,
    "DESCRIBE": _explain,
    "DESC": _explain,
    "ANALYZE": _analyze,
    "OPTIMIZE": maintenance,
    "CHECK": maintenance,
    "REPAIR": maintenance,
    "CHECKSUM": maintenance,
    "START": transaction,
    "BEGIN": transaction,
    "COMMIT": transaction,
    "ROLLBACK": transaction,
    "SAVEPOINT": transaction,
    "RELEASE": transaction,
    "XA": transaction,
    "STOP": replication,
    "GRANT": grant,
    "REVOKE": grant,
    "PREPARE": _prepare,
    "EXECUTE": _execute,
    "DEALLOCATE": deallocate,
    "CALL": call,
    "DO": do,
    "LOAD": load,
    "HANDLER": handler_statement,
    "LOCK": other_statement,
    "UNLOCK": other_statement,
    "CACHE": other_statement,
    "HELP": other_statement,
    "SIGNAL": other_statement,
    "RESIGNAL": other_statement,
    "GET": other_statement,
    "KILL": admin,
    "SHUTDOWN": admin,
    "RESTART": admin,
    "FLUSH": admin,
    "RESET": admin,
    "PURGE": admin,
    "CHANGE": admin,
    "INSTALL": admin,
    "UNINSTALL": admin,
    "CLONE": admin,
    "BACKUP": admin,
    "IMPORT": admin,
    "BINLOG": refuse("BINLOG applies binary-log events: any change at all"),
    "IF": refuse("compound statement outside a stored program"),
    "CASE": refuse("compound statement outside a stored program"),
    "WHILE": refuse("compound statement outside a stored program"),
    "LOOP": refuse("compound statement outside a stored program"),
    "REPEAT": refuse("compound statement outside a stored program"),
    "FOR": refuse("compound statement outside a stored program"),
}


__all__ = ["BUILTIN_FUNCTIONS", "analyse_mysql", "fingerprint", "mysql_shape", "sql_mode_flags"]
