"""Statement analysis: SQL text -> one `StatementInfo` per statement, in one vocabulary for
both dialects (`dbguard.model`). PostgreSQL is read with pglast (`sql.postgres`), MySQL and
MariaDB with sqlglot (`sql.mysql`); each third-party parser is wrapped in its own module.

The contract every analyser keeps: it never raises for any input text; whatever it does not
fully understand (a parse error, an unknown node, a statement too deep or too long) comes back
as kind `other` with the feature `unparseable`, so the policy fails closed. It returns one
StatementInfo per statement of the message, in order; with more than one, each carries the
feature `multi_statement`. An empty message (only whitespace, comments or semicolons) is an
empty tuple. It does no I/O and keeps no state between calls: per-session state (PREPARE names,
settings) belongs to the caller (`policy.gate`).
"""

from __future__ import annotations

from dbguard.model import Feature, ParseSettings, StatementInfo, StatementKind

# Longest SQL text analysed, in characters. A longer message is `unparseable` (and blocked by
# default): parsing is synchronous on the event loop, and pglast needs ~20 us per kB. For MySQL
# it counts the text outside literals longer than mysql_lexer.LONG_LITERAL_CHARS, which are lexed
# (one regex match each) but not parsed, so that BLOBs sent inline (PyMySQL interpolates every
# parameter) can be analysed: a MySQL message may be up to MAX_MYSQL_MESSAGE_CHARS in all.
MAX_ANALYSED_CHARS = 1 << 20
MAX_MYSQL_MESSAGE_CHARS = 64 << 20


def unparseable(text: str, detail: str) -> StatementInfo:
    """The fail-closed answer for a text the analyser does not fully understand."""
    return StatementInfo(
        text=text,
        command="UNPARSEABLE",
        kinds=frozenset({StatementKind.OTHER}),
        features=frozenset({Feature.UNPARSEABLE}),
        detail=detail,
    )


def analyse(sql: str, settings: ParseSettings) -> tuple[StatementInfo, ...]:
    """Analyse one message's SQL text as the server described by `settings` would read it."""
    limit = MAX_MYSQL_MESSAGE_CHARS if settings.dialect == "mysql" else MAX_ANALYSED_CHARS
    if len(sql) > limit:
        return (unparseable(sql[:200], f"statement longer than {limit} characters"),)
    if settings.dialect == "postgres":
        from dbguard.sql.postgres import analyse_postgres

        return analyse_postgres(sql, settings)
    if settings.dialect == "mysql":
        from dbguard.sql.mysql import analyse_mysql

        return analyse_mysql(sql, settings)
    raise ValueError(f"unknown dialect {settings.dialect!r}")


__all__ = ["MAX_ANALYSED_CHARS", "MAX_MYSQL_MESSAGE_CHARS", "analyse", "unparseable"]
