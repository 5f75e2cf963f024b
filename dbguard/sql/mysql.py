"""MySQL/MariaDB statement analysis: SQL text -> one `StatementInfo` per statement, with sqlglot.

Owns reading MySQL and MariaDB SQL the way the server will and describing what each statement
does in dbguard's vocabulary (`dbguard.model`). It is the only module that imports sqlglot; it
does no I/O and keeps no state between calls. It never raises: whatever it does not fully
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
import hashlib
import logging
import re
from collections.abc import Callable, Sequence
from typing import Any, Final

from sqlglot import exp
from sqlglot.dialects.mysql import MySQL
from sqlglot.parsers.mysql import MySQLParser
from sqlglot.tokenizer_core import TokenType

from dbguard.model import Feature, ParseSettings, StatementInfo, StatementKind
from dbguard.sql import MAX_ANALYSED_CHARS, unparseable
from dbguard.sql.mysql_lexer import (
    Condition,
    Statement,
    Token,
    TokenKind,
    lex,
    rekeyed,
    render,
    render_shape,
    respaced,
    skip_account,
)

_K = StatementKind
_F = Feature


def _words(text: str) -> list[str]:
    return text.split()


# sqlglot logs a warning for each statement it falls back to a Command for; those statements are
# unparseable here, and the log line would only be noise on the hot path.
logging.getLogger("sqlglot").setLevel(logging.ERROR)

# Kinds whose analysis does not depend on literal values (fingerprint-cacheable) unless a
# constant-only WHERE or a file name says otherwise.
_LITERAL_SAFE_KINDS: Final = frozenset({_K.SELECT, _K.INSERT, _K.UPDATE, _K.DELETE, _K.TRANSACTION, _K.EXPLAIN})
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
_SCOPES: Final = {
    "GLOBAL": "global",
    "PERSIST": "global",
    "PERSIST_ONLY": "global",
    "SESSION": "session",
    "LOCAL": "session",
}
_SQL_MODES: Final = frozenset(
    _words(
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
_QUERY_ROOTS: Final = (exp.Select, exp.SetOperation, exp.Values, exp.Subquery)


def _with_subclasses(*classes: type[exp.Expression]) -> frozenset[type[exp.Expression]]:
    found: set[type[exp.Expression]] = set()
    pending = list(classes)
    while pending:
        cls = pending.pop()
        if cls not in found:
            found.add(cls)
            pending.extend(cls.__subclasses__())
    return frozenset(found)


# Statement-level nodes that must never appear inside what is analysed as one statement.
_FORBIDDEN_NODES: Final = _with_subclasses(
    exp.Command,
    exp.Into,
    exp.Set,
    exp.Use,
    exp.Drop,
    exp.Alter,
    exp.Describe,
    exp.Show,
    exp.Transaction,
    exp.Commit,
    exp.Rollback,
    exp.Kill,
    exp.Merge,
    exp.TruncateTable,
    exp.Create,
)

# MySQL 8 and MariaDB built-in functions (what an unqualified, unquoted call can mean without a
# stored function being involved). Anything else is a user-defined function.
BUILTIN_FUNCTIONS: Final = frozenset(
    _words(
        """abs acos adddate addtime aes_decrypt aes_encrypt any_value ascii asin atan atan2 avg benchmark bin
    bin_to_uuid bit_and bit_count bit_length bit_or bit_xor can_access_column can_access_database
    can_access_table can_access_user can_access_view cast ceil ceiling char char_length character_length charset
    coalesce coercibility collation compress concat concat_ws connection_id conv convert convert_tz cos cot
    count crc32 crc32c cume_dist curdate current_date current_role current_time current_timestamp current_user
    curtime database date date_add date_format date_sub datediff day dayname dayofmonth dayofweek dayofyear
    default degrees dense_rank elt exp export_set extract extractvalue field find_in_set first_value floor
    format format_bytes format_pico_time found_rows from_base64 from_days from_unixtime geomcollection
    geometrycollection get_format get_lock greatest group_concat grouping gtid_subset gtid_subtract hex hour
    icu_version if ifnull inet_aton inet_ntoa inet6_aton inet6_ntoa insert instr interval is_free_lock
    is_ipv4 is_ipv4_compat is_ipv4_mapped is_ipv6 is_used_lock is_uuid isnull json_array json_array_append
    json_array_insert json_arrayagg json_contains json_contains_path json_depth json_extract json_insert
    json_keys json_length json_merge json_merge_patch json_merge_preserve json_object json_objectagg
    json_overlaps json_pretty json_quote json_remove json_replace json_schema_valid
    json_schema_validation_report json_search json_set json_storage_free json_storage_size json_table
    json_type json_unquote json_valid json_value lag last_day last_insert_id last_value lcase lead least left
    length linestring ln load_file localtime localtimestamp locate log log10 log2 lower lpad ltrim make_set
    makedate maketime master_pos_wait match max mbrcontains mbrcoveredby mbrcovers mbrdisjoint mbrequals
    mbrintersects mbroverlaps mbrtouches mbrwithin md5 microsecond mid min minute mod month monthname
    multilinestring multipoint multipolygon name_const now nth_value ntile nullif oct octet_length ord
    percent_rank period_add period_diff pi point polygon position pow power ps_current_thread_id ps_thread_id
    quarter quote radians rand random_bytes rank regexp_instr regexp_like regexp_replace regexp_substr
    release_all_locks release_lock repeat replace reverse right roles_graphml round row row_count row_number
    rpad rtrim schema sec_to_time second session_user sha sha1 sha2 sign sin sleep soundex source_pos_wait
    space sqrt statement_digest statement_digest_text std stddev stddev_pop stddev_samp str_to_date strcmp
    subdate substr substring substring_index subtime sum sysdate system_user tan time time_format time_to_sec
    timediff timestamp timestampadd timestampdiff to_base64 to_days to_seconds trim truncate ucase uncompress
    uncompressed_length unhex unix_timestamp updatexml upper user utc_date utc_time utc_timestamp uuid
    uuid_short uuid_to_bin validate_password_strength values var_pop var_samp variance version
    wait_for_executed_gtid_set wait_until_sql_thread_after_gtids week weekday weekofyear weight_string year
    yearweek
    st_area st_asbinary st_asgeojson st_astext st_aswkb st_aswkt st_boundary st_buffer st_buffer_strategy
    st_centroid st_collect st_contains st_convexhull st_crosses st_difference st_dimension st_disjoint
    st_distance st_distance_sphere st_endpoint st_envelope st_equals st_exteriorring st_frechetdistance
    st_geohash st_geomcollfromtext st_geomcollfromtxt st_geomcollfromwkb st_geometrycollectionfromtext
    st_geometrycollectionfromwkb st_geometryfromtext st_geometryfromwkb st_geometryn st_geometrytype
    st_geomfromgeojson st_geomfromtext st_geomfromwkb st_hausdorffdistance st_interiorringn st_intersection
    st_intersects st_isclosed st_isempty st_isring st_issimple st_isvalid st_latfromgeohash st_latitude
    st_length st_linefromtext st_linefromwkb st_lineinterpolatepoint st_lineinterpolatepoints
    st_linestringfromtext st_linestringfromwkb st_longfromgeohash st_longitude st_makeenvelope
    st_mlinefromtext st_mlinefromwkb st_mpointfromtext st_mpointfromwkb st_mpolyfromtext st_mpolyfromwkb
    st_multilinestringfromtext st_multilinestringfromwkb st_multipointfromtext st_multipointfromwkb
    st_multipolygonfromtext st_multipolygonfromwkb st_numgeometries st_numinteriorring st_numinteriorrings
    st_numpoints st_overlaps st_pointatdistance st_pointfromgeohash st_pointfromtext st_pointfromwkb
    st_pointn st_pointonsurface st_polyfromtext st_polyfromwkb st_polygonfromtext st_polygonfromwkb
    st_relate st_simplify st_srid st_startpoint st_swapxy st_symdifference st_touches st_transform st_union
    st_validate st_within st_x st_y
    add_months area asbinary astext aswkb aswkt binlog_gtid_pos boundary buffer centroid chr column_add
    column_check column_create column_delete column_exists column_get column_json column_list contains
    convexhull crosses decode decode_histogram des_decrypt des_encrypt dimension disjoint encode encrypt
    endpoint envelope equals exteriorring geomcollfromtext geometryfromtext geometryn geometrytype
    geomfromtext glength interiorringn intersects isclosed isempty isring issimple json_array_intersect
    json_compact json_detailed json_equals json_exists json_key_value json_loose json_normalize
    json_object_filter_keys json_object_to_array json_query kdf lastval linefromtext median mlinefromtext
    mpointfromtext mpolyfromtext natural_sort_key nextval numgeometries numinteriorrings numpoints nvl nvl2
    old_password overlaps password percentile_cont percentile_disc pointfromtext pointn polyfromtext rownum
    setval sformat srid startpoint sys_guid to_char touches uuid_v4 uuid_v7 vec_distance
    vec_distance_cosine vec_distance_euclidean vec_fromtext vec_totext within wsrep_last_seen_gtid
    wsrep_last_written_gtid wsrep_sync_wait_upto_gtid x y"""
    )
)
_FUNCTION_META: Final = "dbguard_function"


class _Parser(MySQLParser):
    """sqlglot's MySQL parser, recording on each function node the name it was called by.

    sqlglot maps many names onto one node class (IFNULL -> Coalesce, DATE_FORMAT -> TimeToStr);
    rules match the name the SQL used, so it is kept in the node's meta.
    """

    def _parse_function_call(
        self,
        functions: dict[str, Callable[..., Any]] | None = None,
        anonymous: bool = False,
        optional_parens: bool = True,
        any_token: bool = False,
    ) -> exp.Expr | None:
        token = self._curr
        called = token is not None and self._next is not None and self._next.token_type == TokenType.L_PAREN
        result = super()._parse_function_call(
            functions=functions, anonymous=anonymous, optional_parens=optional_parens, any_token=any_token
        )
        if called and result is not None and token.token_type not in self.SUBQUERY_PREDICATES:
            node = result.this if isinstance(result, exp.Window) and isinstance(result.this, exp.Expr) else result
            node.meta[_FUNCTION_META] = (token.text, token.token_type == TokenType.IDENTIFIER)
        return result


class _Dialect(MySQL):
    Parser = _Parser


_DIALECT: Final = _Dialect()


class _Unparseable(Exception):
    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


def _is(token: Token | None, text: str) -> bool:
    return token is not None and token.kind is TokenKind.PUNCT and token.text == text


# ---------------------------------------------------------------------------------------- facts


class _Facts:
    """What one top-level statement does, gathered by the handlers."""

    __slots__ = (
        "after",
        "changes_parsing",
        "charset_changed",
        "command",
        "database",
        "deallocates",
        "executes",
        "features",
        "functions",
        "kinds",
        "literal_sensitive",
        "notes",
        "prepares",
        "reads",
        "settings",
        "unfiltered",
        "writes",
    )

    def __init__(self, settings: ParseSettings) -> None:
        self.settings = settings
        self.database = settings.search_path[0] if settings.search_path else ""
        self.command = ""
        self.kinds: set[StatementKind] = set()
        self.reads: set[str] = set()
        self.writes: set[str] = set()
        self.functions: set[str] = set()
        self.features: set[Feature] = set()
        self.unfiltered: set[StatementKind] = set()
        self.prepares = ""
        self.executes = ""
        self.deallocates = ""
        self.changes_parsing = False
        self.literal_sensitive = False
        self.notes: list[str] = []
        # The settings the rest of the message is read with; None: unknown (rest unparseable).
        self.after: ParseSettings | None = settings
        self.charset_changed = False

    def kind(self, *kinds: StatementKind) -> None:
        self.kinds.update(kinds)

    def feature(self, *features: Feature) -> None:
        self.features.update(features)

    def note(self, text: str) -> None:
        self.notes.append(text)

    def table(self, database: str | None, name: str) -> str:
        return f"{database or self.database or '?'}.{name}"

    def table_from_parts(self, parts: Sequence[str]) -> str:
        if len(parts) == 1:
            return self.table(None, parts[0])
        if len(parts) == 2:
            return self.table(parts[0], parts[1])
        raise _Unparseable(f"name with {len(parts)} parts: {'.'.join(parts)}")

    def user_code(self, note: str) -> None:
        """User code runs: its body is invisible, and it could change any setting."""
        self.feature(_F.USER_CODE_CALL)
        self.changes_parsing = True
        self.after = None
        self.note(note)

    def function(self, name: str, quoted: bool, qualifier: str, definition: bool = False) -> None:
        lowered = name.lower()
        full = f"{qualifier.lower()}.{lowered}" if qualifier else lowered
        self.functions.add(full)
        if definition:
            return
        if lowered == "load_file" and not qualifier:
            self.feature(_F.FILE_ACCESS)
        if quoted or qualifier or lowered not in BUILTIN_FUNCTIONS:
            self.user_code(f"calls {full}()")

    def info(self, text: str, tokens: Sequence[Token]) -> StatementInfo:
        kinds = frozenset(self.kinds)
        literal_sensitive = self.literal_sensitive or not kinds <= _LITERAL_SAFE_KINDS
        if self.features & {_F.FILE_ACCESS, _F.DYNAMIC_SQL}:
            literal_sensitive = True
        return StatementInfo(
            text=text,
            command=self.command,
            kinds=kinds,
            reads=frozenset(self.reads),
            writes=frozenset(self.writes),
            functions=frozenset(self.functions),
            features=frozenset(self.features),
            unfiltered=frozenset(self.unfiltered),
            fingerprint=fingerprint(tokens),
            prepares=self.prepares,
            executes=self.executes,
            deallocates=self.deallocates,
            changes_parsing=self.changes_parsing,
            literal_sensitive=literal_sensitive,
            detail="; ".join(dict.fromkeys(self.notes)),
        )


def fingerprint(tokens: Sequence[Token]) -> str:
    """Same for statements that differ only in literal values (and comments)."""
    return hashlib.sha256(render_shape(tokens).encode("utf-8")).hexdigest()[:16]


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


def sql_mode_flags(sql_mode: str) -> tuple[bool, bool] | None:
    """(ansi_quotes, no_backslash_escapes) for an sql_mode value, None when the value is not
    understood (unknown mode names, or ORACLE, which changes the grammar itself)."""
    modes = {mode.strip().upper() for mode in sql_mode.split(",") if mode.strip()}
    if not modes <= _SQL_MODES | _ANSI_QUOTES_MODES | {"NO_BACKSLASH_ESCAPES"}:
        return None
    return bool(modes & _ANSI_QUOTES_MODES), "NO_BACKSLASH_ESCAPES" in modes


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
    except _Unparseable as error:
        first = tokens[0].keyword
        after = None if first in ("SET", "USE", "CALL", "EXECUTE") else settings
        return unparseable(text, error.detail), after, False
    except RecursionError:
        return unparseable(text, "statement nested too deeply"), settings, False
    return facts.info(text, tokens), facts.after, facts.charset_changed


def _analyse_tokens(tokens: Sequence[Token], settings: ParseSettings, hints: Sequence[str]) -> _Facts:
    facts = _Facts(settings)
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


def _merge(variants: list[_Facts]) -> _Facts:
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
                raise _Unparseable(f"server versions disagree on the statement name ({name})")
        if merged.after != other.after:
            merged.after = None
    if len(variants) > 1:
        merged.literal_sensitive = True
        merged.note(f"versioned comments: analysed as {len(variants)} server versions run it")
    return merged


# --------------------------------------------------------------------------------- dispatching

_Handler = Callable[[Sequence[Token], "_Facts"], None]


def _dispatch(tokens: Sequence[Token], facts: _Facts) -> None:
    first = tokens[0]
    if _is(first, "("):
        _query(tokens, facts)
        return
    handler = _HANDLERS.get(first.keyword)
    if handler is None:
        raise _Unparseable(f"unknown statement {first.text!r}")
    handler(tokens, facts)


class _Cursor:
    """Reading a keyword statement's tokens."""

    __slots__ = ("pos", "tokens")

    def __init__(self, tokens: Sequence[Token], pos: int = 1) -> None:
        self.tokens = tokens
        self.pos = pos

    def peek(self, offset: int = 0) -> Token | None:
        index = self.pos + offset
        return self.tokens[index] if index < len(self.tokens) else None

    def kw(self, offset: int = 0) -> str:
        token = self.peek(offset)
        return token.keyword if token is not None else ""

    def at_end(self) -> bool:
        return self.pos >= len(self.tokens)

    def rest(self) -> Sequence[Token]:
        return self.tokens[self.pos :]

    def advance(self, count: int = 1) -> None:
        self.pos += count

    def accept(self, *words: str) -> bool:
        """Consume the keyword sequence `words` if it comes next."""
        if all(self.kw(offset) == word for offset, word in enumerate(words)):
            self.pos += len(words)
            return True
        return False

    def accept_any(self, *words: str) -> str:
        word = self.kw()
        if word and word in words:
            self.pos += 1
            return word
        return ""

    def punct(self, text: str) -> bool:
        if _is(self.peek(), text):
            self.pos += 1
            return True
        return False

    def expect(self, *words: str) -> None:
        if not self.accept(*words):
            found = self.peek()
            raise _Unparseable(f"expected {' '.join(words)}, found {found.text if found else 'the end'!r}")

    def end(self) -> None:
        if not self.at_end():
            raise _Unparseable(f"unexpected {self.tokens[self.pos].text!r}")

    def name(self) -> list[str]:
        """A possibly qualified identifier: its parts."""
        parts = [self._identifier()]
        while _is(self.peek(), ".") and self.peek(1) is not None:
            self.pos += 1
            parts.append(self._identifier())
        return parts

    def _identifier(self) -> str:
        token = self.peek()
        if token is None or token.kind not in (TokenKind.WORD, TokenKind.IDENT):
            raise _Unparseable(f"expected a name, found {token.text if token else 'the end'!r}")
        self.pos += 1
        return token.value

    def string(self) -> str:
        token = self.peek()
        if token is None or token.kind is not TokenKind.STRING:
            raise _Unparseable(f"expected a string, found {token.text if token else 'the end'!r}")
        self.pos += 1
        return token.value

    def text_value(self) -> None:
        """A string, a hex/bit number, or X'..' / B'..' (what FIELDS TERMINATED BY takes)."""
        token = self.peek()
        if token is not None and token.kind is TokenKind.WORD and _is_string(self.peek(1)):
            self.pos += 1
            token = self.peek()
        if token is None or token.kind not in (TokenKind.STRING, TokenKind.NUMBER):
            raise _Unparseable(f"expected a string, found {token.text if token else 'the end'!r}")
        self.pos += 1

    def if_exists(self) -> None:
        if not self.accept("IF", "NOT", "EXISTS"):
            self.accept("IF", "EXISTS")

    def names(self) -> list[list[str]]:
        """A comma-separated list of names."""
        result = [self.name()]
        while self.punct(","):
            result.append(self.name())
        return result

    def skip_account(self) -> None:
        self.pos = skip_account(self.tokens, self.pos)


def _is_string(token: Token | None) -> bool:
    return token is not None and token.kind is TokenKind.STRING and not token.spaced


def _split_commas(tokens: Sequence[Token]) -> list[Sequence[Token]]:
    """Split on commas outside parentheses."""
    parts: list[Sequence[Token]] = []
    depth = 0
    start = 0
    for index, token in enumerate(tokens):
        if token.kind is TokenKind.PUNCT:
            if token.text == "(":
                depth += 1
            elif token.text == ")":
                depth -= 1
            elif token.text == "," and depth == 0:
                parts.append(tokens[start:index])
                start = index + 1
    parts.append(tokens[start:])
    return parts


def _find_keyword(tokens: Sequence[Token], keyword: str, start: int = 0) -> int:
    """Index of `keyword` outside parentheses, or -1."""
    depth = 0
    for index in range(start, len(tokens)):
        token = tokens[index]
        if token.kind is TokenKind.PUNCT:
            if token.text == "(":
                depth += 1
            elif token.text == ")":
                depth -= 1
        elif depth == 0 and token.keyword == keyword:
            return index
    return -1


# ------------------------------------------------------------------------------ sqlglot parsing


def _parse(text: str) -> exp.Expression:
    try:
        roots = [root for root in _DIALECT.parse(text) if root is not None]
    except RecursionError:
        raise _Unparseable("statement nested too deeply") from None
    except Exception as error:  # sqlglot's ParseError, TokenError, or anything it trips on
        raise _Unparseable(f"sqlglot: {str(error).splitlines()[0][:300]}") from None
    if len(roots) != 1 or not isinstance(roots[0], exp.Expression):
        raise _Unparseable("sqlglot did not read exactly one statement")
    return roots[0]


def _expressions(tokens: Sequence[Token], facts: _Facts) -> None:
    """Analyse a comma-separated list of expressions (SET values, DO, CALL arguments...)."""
    if not tokens:
        return
    if not any(_is(token, "(") for token in tokens):
        return  # no call and no subquery: nothing to see, whatever the server makes of it
    root = _parse("SELECT " + render(tokens))
    if not isinstance(root, exp.Select) or any(value for key, value in root.args.items() if key != "expressions"):
        raise _Unparseable("not an expression list")
    _collect(root, facts, wrapper=True)


def _query(tokens: Sequence[Token], facts: _Facts) -> None:
    """SELECT, TABLE, VALUES, WITH ..., (SELECT ...)."""
    first = tokens[0].keyword
    tokens = _strip_select_into(tokens, facts)
    root = _parse(render(tokens))
    if first == "WITH" and isinstance(root, (exp.Update, exp.Delete)):
        facts.command = "UPDATE" if isinstance(root, exp.Update) else "DELETE"
    elif isinstance(root, _QUERY_ROOTS):
        facts.command = first if first in ("TABLE", "VALUES") else "SELECT"
        if isinstance(root, exp.Values):
            facts.kind(_K.SELECT)
    else:
        raise _Unparseable(f"unexpected {type(root).__name__} statement")
    _collect(root, facts)


def _strip_select_into(tokens: Sequence[Token], facts: _Facts) -> Sequence[Token]:
    """Remove `INTO OUTFILE 'f' ...`, `INTO DUMPFILE 'f'`, `INTO @a, @b` (sqlglot reads none of
    them as MySQL means them); file targets are file_access."""
    if not any(token.keyword == "INTO" for token in tokens):
        return tokens
    kept: list[Token] = []
    cursor = _Cursor(tokens, 0)
    respace = False
    while not cursor.at_end():
        token = cursor.peek()
        assert token is not None
        if token.keyword != "INTO":
            kept.append(respaced(token) if respace else token)
            respace = False
            cursor.advance()
            continue
        cursor.advance()
        target = cursor.accept_any("OUTFILE", "DUMPFILE")
        if target:
            facts.feature(_F.FILE_ACCESS)
            facts.note(f"writes server file {cursor.string()!r}")
            if target == "OUTFILE":
                _skip_export_options(cursor)
        else:
            while True:
                cursor.punct("@")
                cursor.name()
                if not cursor.punct(","):
                    break
        respace = True
    return kept


def _skip_export_options(cursor: _Cursor) -> None:
    """[CHARACTER SET x] [{FIELDS|COLUMNS} ...] [LINES ...] of INTO OUTFILE and LOAD DATA."""
    while True:
        if cursor.accept("CHARACTER", "SET") or cursor.accept("CHARSET"):
            cursor.name()
        elif cursor.accept_any("FIELDS", "COLUMNS"):
            if not _skip_by_options(
                cursor, (("TERMINATED", "BY"), ("OPTIONALLY", "ENCLOSED", "BY"), ("ENCLOSED", "BY"), ("ESCAPED", "BY"))
            ):
                raise _Unparseable("FIELDS without options")
        elif cursor.accept("LINES"):
            if not _skip_by_options(cursor, (("STARTING", "BY"), ("TERMINATED", "BY"))):
                raise _Unparseable("LINES without options")
        else:
            return


def _skip_by_options(cursor: _Cursor, options: tuple[tuple[str, ...], ...]) -> bool:
    found = False
    while any(cursor.accept(*option) for option in options):
        cursor.text_value()
        found = True
    return found


# ------------------------------------------------------------------------------ the AST walk


def _collect(root: exp.Expression, facts: _Facts, *, wrapper: bool = False, definition: bool = False) -> None:
    """Record what a sqlglot tree does. wrapper: the root SELECT only carries expressions (DO,
    SET values...). definition: a stored body (view), not run now: only its reads and functions."""
    writes: set[int] = set()
    skipped: set[int] = set()
    # One breadth-first pass: a statement node is met before the tables under it, so its write
    # targets are known by the time they are.
    ctes = False  # a WITH was met: from then on an unqualified name may be a CTE
    for node in root.walk():
        node_type = type(node)
        if node_type not in _COLLECTED:
            if node_type in _FORBIDDEN_NODES:
                raise _Unparseable(f"unexpected {node_type.__name__} inside a statement")
        elif isinstance(node, exp.Table):
            if id(node) in skipped or node.find_ancestor(exp.Reference) is not None:
                continue
            name = _table_name(node, facts, ctes)
            if name is not None:
                (facts.writes if id(node) in writes else facts.reads).add(name)
        elif isinstance(node, exp.Select):
            if node.args.get("with_"):
                ctes = True  # its own WITH is a child, met after it
            if not (definition or (wrapper and node is root)):
                facts.kind(_K.SELECT)
                if _reads_a_table(node, facts, ctes):
                    _check_where(node, _K.SELECT, facts)
        elif isinstance(node, exp.Insert):
            _insert_targets(node, writes)
            facts.kind(_K.INSERT)
            conflict = node.args.get("conflict")
            if isinstance(conflict, exp.OnConflict) and conflict.args.get("duplicate"):
                facts.kind(_K.UPDATE)
        elif isinstance(node, exp.Update):
            _update_targets(node, writes)
            facts.kind(_K.UPDATE)
            _check_where(node, _K.UPDATE, facts)
        elif isinstance(node, exp.Delete):
            _delete_targets(node, facts, writes, skipped)
            facts.kind(_K.DELETE)
            _check_where(node, _K.DELETE, facts)
        elif isinstance(node, exp.Create):
            if node is not root:
                raise _Unparseable("unexpected Create inside a statement")
            target = node.this.this if isinstance(node.this, exp.Schema) else node.this
            writes.add(id(target))
        elif isinstance(node, exp.With):
            ctes = True
        called = node.meta_get(_FUNCTION_META)
        if called is not None:
            name, quoted = called
            facts.function(name, quoted, _qualifier(node), definition=definition)


_COLLECTED: Final = frozenset({exp.Table, exp.Select, exp.Insert, exp.Update, exp.Delete, exp.Create, exp.With})


def _table_name(node: exp.Table, facts: _Facts, ctes: bool = True) -> str | None:
    """ "db.table" for a table reference; None for a CTE, DUAL or a table function."""
    identifier = node.this
    if not isinstance(identifier, exp.Identifier):
        return None
    name = identifier.name
    if node.args.get("catalog"):
        raise _Unparseable(f"three-part table name {node.text('catalog')}.{node.text('db')}.{name}")
    database = node.text("db")
    if not database:
        if name.lower() == "dual" and not identifier.quoted:
            return None
        if ctes and _is_cte_reference(node, name):
            return None
    return facts.table(database or None, name)


def _is_cte_reference(node: exp.Table, name: str) -> bool:
    """An unqualified name that a WITH in scope defines (a CTE cannot see itself or a later one
    unless the WITH is RECURSIVE: there the name is a table)."""
    ancestors: list[exp.Expr] = []
    parent = node.parent
    while parent is not None:
        ancestors.append(parent)
        parent = parent.parent
    inside = {id(ancestor) for ancestor in ancestors}
    for ancestor in ancestors:
        with_ = ancestor.args.get("with_")
        if not isinstance(with_, exp.With):
            continue
        ctes = with_.expressions
        containing = next((index for index, cte in enumerate(ctes) if id(cte) in inside), None)
        for index, cte in enumerate(ctes):
            if cte.alias != name:
                continue
            if with_.args.get("recursive") or containing is None or index < containing:
                return True
    return False


def _qualifier(node: exp.Expr) -> str:
    parent = node.parent
    if isinstance(parent, exp.Dot) and parent.expression is node:
        return _dotted(parent.this)
    return ""


def _dotted(node: exp.Expr) -> str:
    if isinstance(node, exp.Identifier):
        return node.name
    if isinstance(node, exp.Column):
        return ".".join(part.name for part in node.parts)
    if isinstance(node, exp.Dot):
        return f"{_dotted(node.this)}.{_dotted(node.expression)}"
    return node.name or "?"


def _table_sources(node: exp.Expression, *keys: str) -> list[exp.Table]:
    """The exp.Table nodes directly in a FROM-like clause (and its joins)."""
    found: list[exp.Table] = []
    for key in keys:
        value = node.args.get(key)
        for item in value if isinstance(value, list) else [value]:
            if isinstance(item, exp.From):
                item = item.this
            if isinstance(item, exp.Table):
                found.append(item)
                found.extend(join.this for join in item.args.get("joins") or () if isinstance(join.this, exp.Table))
    found.extend(join.this for join in node.args.get("joins") or () if isinstance(join.this, exp.Table))
    return found


def _reads_a_table(select: exp.Select, facts: _Facts, ctes: bool) -> bool:
    return any(_table_name(table, facts, ctes) is not None for table in _table_sources(select, "from_"))


def _insert_targets(node: exp.Insert, writes: set[int]) -> None:
    target = node.this.this if isinstance(node.this, exp.Schema) else node.this
    if isinstance(target, exp.Table):
        writes.add(id(target))


def _by_alias(tables: Sequence[exp.Table]) -> dict[str, exp.Table]:
    index: dict[str, exp.Table] = {}
    for table in tables:
        index.setdefault(table.name, table)
    for table in tables:  # an alias hides the table's own name
        if table.alias:
            index[table.alias] = table
    return index


def _update_targets(node: exp.Update, writes: set[int]) -> None:
    tables = _table_sources(node, "this")
    qualifiers = set()
    for assignment in node.expressions:
        column = assignment.this if isinstance(assignment, exp.EQ) else None
        qualifiers.add(column.table if isinstance(column, exp.Column) else "")
    index = _by_alias(tables)
    if len(tables) > 1 and "" not in qualifiers and qualifiers <= set(index):
        writes.update(id(index[qualifier]) for qualifier in qualifiers)
    else:
        writes.update(id(table) for table in tables)


def _delete_targets(node: exp.Delete, facts: _Facts, writes: set[int], skipped: set[int]) -> None:
    named = node.args.get("tables")
    using = node.args.get("using")
    if named:  # DELETE t1, t2 FROM t1 JOIN t2 ...
        references, sources = list(named), _table_sources(node, "this")
    elif using:  # DELETE FROM t1, t2 USING t1 JOIN t2 ...
        references, sources = _table_sources(node, "this"), _table_sources(node, "using")
    else:
        writes.update(id(table) for table in _table_sources(node, "this"))
        return
    index = _by_alias(sources)
    for reference in references:
        if not isinstance(reference, exp.Table):
            raise _Unparseable("unexpected DELETE target")
        match = index.get(reference.name) if not reference.text("db") else None
        if match is not None and match is not reference:
            skipped.add(id(reference))
            writes.add(id(match))
        else:
            writes.add(id(reference))


# ------------------------------------------------------------------------------- WHERE truth

_UNKNOWN: Final = object()
_NUMBER_PREFIX: Final = re.compile(r"\s*[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")


def _check_where(node: exp.Expression, kind: StatementKind, facts: _Facts) -> None:
    """Record `kind` as unfiltered when the node's WHERE is missing or always true."""
    where = node.args.get("where")
    if not isinstance(where, exp.Where):
        facts.unfiltered.add(kind)
        return
    if _truth(where.this, facts) is True:
        facts.unfiltered.add(kind)


def _operands(node: exp.Expression, connective: type[exp.Expression]) -> list[exp.Expression]:
    """The operands of a chain of one connective (iteratively: chains can be long)."""
    operands: list[exp.Expression] = []
    stack = [node]
    while stack:
        current = stack.pop()
        while isinstance(current, exp.Paren):
            current = current.this
        if isinstance(current, connective):
            stack.append(current.expression)
            stack.append(current.this)
        else:
            operands.append(current)
    return operands


def _truth(node: exp.Expression, facts: _Facts) -> bool | None:
    """True / False when a condition has that value for every row, None when it depends."""
    while isinstance(node, exp.Paren):
        node = node.this
    if isinstance(node, exp.And):
        results = [_truth(operand, facts) for operand in _operands(node, exp.And)]
        if False in results:
            return False
        return True if all(result is True for result in results) else None
    if isinstance(node, exp.Or):
        results = [_truth(operand, facts) for operand in _operands(node, exp.Or)]
        if True in results:
            return True
        return False if all(result is False for result in results) else None
    if isinstance(node, exp.Not) and _mentions_rows(node):
        inner = _truth(node.this, facts)
        return None if inner is None else not inner
    if not _mentions_rows(node):
        # The same value for every row: all rows or none, so it counts as true unless provably false.
        facts.literal_sensitive = True
        value = _constant(node)
        return True if value is _UNKNOWN else bool(_truthy(value))  # NULL selects no row
    if isinstance(node, (exp.EQ, exp.NullSafeEQ, exp.GTE, exp.LTE)) and _same_sides(node):
        return True
    return None


def _mentions_rows(node: exp.Expression) -> bool:
    """Whether a condition can differ from row to row: it mentions a column of the filtered
    statement. A column of a subquery's own tables (qualified with one of their names) does not
    count; an unqualified one might be the outer row's (correlation), so it does."""
    for column in node.find_all(exp.Column):
        qualifier = column.table
        if not qualifier:
            return True
        scope = column.parent
        while scope is not None and scope is not node:
            if isinstance(scope, exp.Select) and qualifier in _source_names(scope):
                break
            scope = scope.parent
        else:
            return True
        if scope is node:
            return True
    return False


def _source_names(select: exp.Select) -> set[str]:
    """The names a column of this SELECT can be qualified with: its tables' names and aliases."""
    names: set[str] = set()
    sources: list[exp.Expr] = []
    from_ = select.args.get("from_")
    if isinstance(from_, exp.From):
        sources.append(from_.this)
    sources.extend(join.this for join in select.args.get("joins") or ())
    for source in sources:
        if isinstance(source, exp.Table):
            names.add(source.name)
        if isinstance(source, (exp.Table, exp.Subquery)) and source.alias:
            names.add(source.alias)
    return names


def _same_sides(node: exp.Expression) -> bool:
    left, right = node.this, node.expression
    if not isinstance(left, exp.Expression) or left.find(exp.Func, exp.Subquery, exp.Select) is not None:
        return False
    return bool(left == right)


def _number(value: object) -> float | None:
    if isinstance(value, float):
        return value
    if isinstance(value, str):
        match = _NUMBER_PREFIX.match(value)
        return float(match.group()) if match else 0.0
    return None  # NULL or unknown


def _truthy(value: object) -> bool | None:
    """MySQL truth of a constant: None for NULL or unknown."""
    number = _number(value)
    return None if number is None else number != 0


_COMPARISONS: Final[dict[type[exp.Expression], Callable[[int], bool]]] = {
    exp.EQ: lambda order: order == 0,
    exp.NullSafeEQ: lambda order: order == 0,
    exp.NEQ: lambda order: order != 0,
    exp.GT: lambda order: order > 0,
    exp.GTE: lambda order: order >= 0,
    exp.LT: lambda order: order < 0,
    exp.LTE: lambda order: order <= 0,
}


def _constant(node: exp.Expression) -> object:
    """The value of a constant expression (float, str, or None for NULL), or _UNKNOWN."""
    while isinstance(node, exp.Paren):
        node = node.this
    if isinstance(node, exp.Literal):
        if node.is_string:
            return str(node.this)
        try:
            return float(node.this)
        except ValueError:
            return _UNKNOWN
    if isinstance(node, exp.Boolean):
        return 1.0 if node.this else 0.0
    if isinstance(node, exp.Null):
        return None
    if isinstance(node, exp.Neg):
        number = _number(_constant(node.this))
        return _UNKNOWN if number is None else -number
    if isinstance(node, exp.Not):
        truth = _truthy(_constant(node.this))
        return None if truth is None else float(not truth)
    comparison = _COMPARISONS.get(type(node))
    if comparison is not None:
        left, right = _constant(node.this), _constant(node.expression)
        if left is _UNKNOWN or right is _UNKNOWN:
            return _UNKNOWN
        if left is None or right is None:
            return float(left is None and right is None) if isinstance(node, exp.NullSafeEQ) else None
        order = _compare(left, right)
        return _UNKNOWN if order is None else float(comparison(order))
    if isinstance(node, exp.Is) and isinstance(node.expression, exp.Null):
        value = _constant(node.this)
        return _UNKNOWN if value is _UNKNOWN else float(value is None)
    if isinstance(node, (exp.Add, exp.Sub, exp.Mul)):
        left_number, right_number = _number(_constant(node.this)), _number(_constant(node.expression))
        if left_number is None or right_number is None:
            return _UNKNOWN
        if isinstance(node, exp.Add):
            return left_number + right_number
        return left_number - right_number if isinstance(node, exp.Sub) else left_number * right_number
    return _UNKNOWN


def _compare(left: object, right: object) -> int | None:
    if isinstance(left, str) and isinstance(right, str):
        left_text, right_text = left.rstrip(" ").casefold(), right.rstrip(" ").casefold()
        return (left_text > right_text) - (left_text < right_text)
    left_number, right_number = _number(left), _number(right)
    if left_number is None or right_number is None:
        return None
    return (left_number > right_number) - (left_number < right_number)


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


def _insert(tokens: Sequence[Token], facts: _Facts) -> None:
    replace = tokens[0].keyword == "REPLACE"
    kept = _drop_modifiers(tokens, frozenset({"LOW_PRIORITY", "DELAYED", "HIGH_PRIORITY"}))
    if replace:
        kept[0] = rekeyed(kept[0], "INSERT")
        facts.kind(_K.DELETE)
    facts.command = "REPLACE" if replace else "INSERT"
    root = _parse(render(kept))
    if not isinstance(root, exp.Insert):
        raise _Unparseable(f"unexpected {type(root).__name__} statement")
    _collect(root, facts)


def _update(tokens: Sequence[Token], facts: _Facts) -> None:
    facts.command = "UPDATE"
    root = _parse(render(_drop_modifiers(tokens, frozenset({"LOW_PRIORITY", "IGNORE"}))))
    if not isinstance(root, exp.Update):
        raise _Unparseable(f"unexpected {type(root).__name__} statement")
    _collect(root, facts)


def _delete(tokens: Sequence[Token], facts: _Facts) -> None:
    facts.command = "DELETE"
    root = _parse(render(_drop_modifiers(tokens, frozenset({"LOW_PRIORITY", "QUICK", "IGNORE"}))))
    if not isinstance(root, exp.Delete):
        raise _Unparseable(f"unexpected {type(root).__name__} statement")
    _collect(root, facts)


# ------------------------------------------------------------------------------------ CREATE


def _create_header(cursor: _Cursor, facts: _Facts) -> bool:
    """Skip CREATE/ALTER modifiers; True for OR REPLACE. A DEFINER is a privilege change."""
    replace = False
    while True:
        if cursor.accept("OR", "REPLACE"):
            replace = True
        elif cursor.accept("DEFINER"):
            if not cursor.punct("="):
                raise _Unparseable("expected = after DEFINER")
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


def _create(tokens: Sequence[Token], facts: _Facts) -> None:
    cursor = _Cursor(tokens)
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
        raise _Unparseable(f"unknown CREATE {word or 'statement'}")


def _routine(word: str, cursor: _Cursor, facts: _Facts) -> None:
    facts.feature(_F.UNTRUSTED_CODE)
    facts.note("stored program body not analysed")
    if word == "TRIGGER":
        on = _find_keyword(cursor.tokens, "ON", cursor.pos)
        if on < 0:
            raise _Unparseable("CREATE TRIGGER without ON")
        facts.writes.add(facts.table_from_parts(_Cursor(cursor.tokens, on + 1).name()))
    if word == "FUNCTION" and _find_keyword(cursor.tokens, "SONAME", cursor.pos) >= 0:
        facts.feature(_F.SYSTEM_ADMIN)
        facts.note("loads a native library")


def _create_table(tokens: Sequence[Token], cursor: _Cursor, replace: bool, facts: _Facts) -> None:
    cursor.if_exists()
    name = facts.table_from_parts(cursor.name())
    facts.writes.add(name)
    if replace:
        facts.kind(_K.DROP)
    _table_options(tokens, facts)
    body = cursor.rest()
    try:
        root = _parse(render(tokens))
        if not isinstance(root, exp.Create) or str(root.args.get("kind", "")).upper() != "TABLE":
            raise _Unparseable(f"unexpected {type(root).__name__} statement")
    except _Unparseable as error:
        # What sqlglot cannot read in a table definition (options, partitions...) runs nothing,
        # unless the table is filled from a query or copies another one.
        if _fills_from_elsewhere(body):
            raise
        facts.note(f"definition read from its tokens ({error.detail})")
        return
    _collect(root, facts)


def _fills_from_elsewhere(body: Sequence[Token]) -> bool:
    """A table definition that copies another table or is filled by a query."""
    depth = 0
    for index, token in enumerate(body):
        if _is(token, "("):
            depth += 1
        elif _is(token, ")"):
            depth -= 1
        elif token.keyword in ("SELECT", "LIKE"):
            return True
        elif depth == 0 and token.keyword in ("TABLE", "VALUES", "WITH"):
            following = body[index + 1].keyword if index + 1 < len(body) else ""
            if not (token.keyword == "WITH" and following == "SYSTEM"):
                return True
    return False


def _table_options(tokens: Sequence[Token], facts: _Facts) -> None:
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
            word == "CONNECTION" and index + 1 < len(tokens) and _is(tokens[index + 1], "=")
        ):
            facts.feature(_F.DYNAMIC_SQL)
            facts.note("table backed by a remote server")


def _view(cursor: _Cursor, facts: _Facts) -> None:
    cursor.if_exists()
    facts.writes.add(facts.table_from_parts(cursor.name()))
    if _is(cursor.peek(), "("):
        depth = 0
        while not cursor.at_end():
            token = cursor.peek()
            cursor.advance()
            if _is(token, "("):
                depth += 1
            elif _is(token, ")"):
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
            raise _Unparseable("expected WITH ... CHECK OPTION")
        body = body[:-1]
    if not body:
        raise _Unparseable("view without a query")
    root = _parse(render(body))
    if not isinstance(root, _QUERY_ROOTS):
        raise _Unparseable(f"unexpected {type(root).__name__} as a view body")
    _collect(root, facts, definition=True)


# ------------------------------------------------------------------------------ ALTER, DROP


def _alter(tokens: Sequence[Token], facts: _Facts) -> None:
    cursor = _Cursor(tokens)
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
        if _find_keyword(tokens, "DO") >= 0:
            facts.feature(_F.UNTRUSTED_CODE)
            facts.note("stored program body not analysed")
    elif word in ("PROCEDURE", "FUNCTION"):
        pass
    elif word in ("SERVER", "INSTANCE", "TABLESPACE", "LOGFILE", "RESOURCE"):
        facts.feature(_F.SYSTEM_ADMIN)
    else:
        raise _Unparseable(f"unknown ALTER {word or 'statement'}")


def _alter_table(cursor: _Cursor, facts: _Facts) -> None:
    facts.writes.add(facts.table_from_parts(cursor.name()))
    _table_options(cursor.tokens, facts)
    for action in _split_commas(cursor.rest()):
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
                raise _Unparseable("EXCHANGE PARTITION without WITH TABLE")
            exchanged = _Cursor(action, with_at + 1)
            exchanged.expect("TABLE")
            facts.writes.add(facts.table_from_parts(exchanged.name()))
        elif first == "RENAME" and (words[1:2] or [""])[0] not in ("COLUMN", "INDEX", "KEY"):
            renamed = _Cursor(action, 1)
            renamed.accept_any("TO", "AS")
            facts.writes.add(facts.table_from_parts(renamed.name()))
        if "BLACKHOLE" in words:
            facts.kind(_K.DROP)
            facts.note("ENGINE=BLACKHOLE discards the table's data")


_DROP_TABLE_LIKE: Final = frozenset({"TABLE", "TABLES", "VIEW", "SEQUENCE"})


def _drop(tokens: Sequence[Token], facts: _Facts) -> None:
    cursor = _Cursor(tokens)
    while cursor.accept_any("TEMPORARY", "ONLINE", "OFFLINE", "UNDO"):
        pass
    word = cursor.kw()
    cursor.advance()
    facts.command = f"DROP {word}"
    if word == "PREPARE":
        _deallocate_name(cursor, facts)
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
        raise _Unparseable(f"unknown DROP {word or 'statement'}")


def _truncate(tokens: Sequence[Token], facts: _Facts) -> None:
    cursor = _Cursor(tokens)
    cursor.accept("TABLE")
    facts.command = "TRUNCATE TABLE"
    facts.kind(_K.TRUNCATE)
    facts.writes.add(facts.table_from_parts(cursor.name()))
    if cursor.accept("WAIT"):
        cursor.advance()
    cursor.accept("NOWAIT")
    cursor.end()


def _rename(tokens: Sequence[Token], facts: _Facts) -> None:
    cursor = _Cursor(tokens)
    word = cursor.accept_any("TABLE", "TABLES", "USER")
    facts.kind(_K.ALTER)
    if word == "USER":
        facts.command = "RENAME USER"
        facts.feature(_F.PRIVILEGE_CHANGE)
        return
    if not word:
        raise _Unparseable("unknown RENAME statement")
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


# --------------------------------------------------------------------------------------- SET


def _set(tokens: Sequence[Token], facts: _Facts) -> None:
    cursor = _Cursor(tokens)
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
    if word == "TRANSACTION" or (word in _SCOPES and cursor.kw(1) == "TRANSACTION"):
        facts.command = "SET TRANSACTION"
        facts.kinds.discard(_K.SET)
        facts.kind(_K.TRANSACTION)
        if _SCOPES.get(word) == "global":
            facts.feature(_F.SYSTEM_ADMIN)
        elif word in _SCOPES:
            facts.feature(_F.SESSION_CHANGE)
        return
    if word == "STATEMENT":
        _set_statement(cursor, facts)
        return
    _assignments(cursor, facts, statement_scoped=False)
    cursor.end()


def _assignments(cursor: _Cursor, facts: _Facts, statement_scoped: bool) -> None:
    """`assignment [, assignment ...]` of SET (and SET STATEMENT)."""
    previous_global = False
    while True:
        scope = _SCOPES.get(cursor.kw(), "")
        if scope:
            cursor.advance()
        if cursor.accept("NAMES") or cursor.accept("CHARACTER", "SET") or cursor.accept("CHARSET"):
            _split_value(cursor)
            facts.feature(_F.SESSION_CHANGE)
            facts.changes_parsing = True
            facts.charset_changed = True
        elif _is(cursor.peek(), "@") and not _is(cursor.peek(1), "@"):
            cursor.advance()
            name_token = cursor.peek()
            if name_token is None or name_token.kind not in (TokenKind.WORD, TokenKind.IDENT, TokenKind.STRING):
                raise _Unparseable("expected a user variable name")
            cursor.advance()
            while _is(cursor.peek(), ".") and not cursor.tokens[cursor.pos].spaced:
                cursor.advance(2)
            _assignment_operator(cursor)
            _expressions(_split_value(cursor), facts)
        else:
            if _is(cursor.peek(), "@") and _is(cursor.peek(1), "@"):
                cursor.advance(2)
                parts = cursor.name()
                if len(parts) == 2 and parts[0].upper() in _SCOPES:
                    scope = _SCOPES[parts[0].upper()]
                    parts = parts[1:]
            else:
                parts = cursor.name()
            variable = ".".join(parts).lower()
            _assignment_operator(cursor)
            value = _split_value(cursor)
            _system_variable(variable, scope, previous_global, value, facts, statement_scoped)
            _expressions(value, facts)
            previous_global = scope == "global" or (not scope and previous_global)
        if not cursor.punct(","):
            return


def _assignment_operator(cursor: _Cursor) -> None:
    if cursor.punct("="):
        return
    if _is(cursor.peek(), ":") and _is(cursor.peek(1), "=") and not cursor.tokens[cursor.pos + 1].spaced:
        cursor.advance(2)
        return
    raise _Unparseable("expected = in SET")


def _split_value(cursor: _Cursor) -> Sequence[Token]:
    """The tokens up to the next comma outside parentheses."""
    rest = cursor.rest()
    value = _split_commas(rest)[0]
    if not value:
        raise _Unparseable("SET without a value")
    cursor.advance(len(value))
    return value


def _system_variable(
    variable: str, scope: str, previous_global: bool, value: Sequence[Token], facts: _Facts, statement_scoped: bool
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
        raise _Unparseable(f"SET STATEMENT {variable} changes how its own statement is read")
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


def _set_statement(cursor: _Cursor, facts: _Facts) -> None:
    """MariaDB SET STATEMENT var = value [, ...] FOR statement."""
    cursor.advance()
    tokens = cursor.tokens
    for_at = _find_keyword(tokens, "FOR", cursor.pos)
    if for_at < 0 or for_at + 1 >= len(tokens):
        raise _Unparseable("SET STATEMENT without FOR")
    _assignments(_Cursor(tokens[:for_at], cursor.pos), facts, statement_scoped=True)
    _dispatch(tokens[for_at + 1 :], facts)
    facts.kind(_K.SET)
    facts.command = "SET STATEMENT"


# ------------------------------------------------------------------------ USE, SHOW, EXPLAIN


def _use(tokens: Sequence[Token], facts: _Facts) -> None:
    cursor = _Cursor(tokens)
    name = cursor.name()
    cursor.end()
    if len(name) != 1:
        raise _Unparseable("USE takes a database name")
    facts.command = "USE"
    facts.kind(_K.USE)
    facts.feature(_F.SESSION_CHANGE)
    facts.changes_parsing = True  # unqualified names resolve against the new database
    if facts.after is not None:
        facts.after = dataclasses.replace(facts.after, search_path=(name[0],))


_SHOW_READS: Final = frozenset({"COLUMNS", "FIELDS", "INDEX", "INDEXES", "KEYS"})


def _show(tokens: Sequence[Token], facts: _Facts) -> None:
    facts.command = "SHOW"
    facts.kind(_K.SHOW)
    where = _find_keyword(tokens, "WHERE")
    head = tokens[: where if where >= 0 else len(tokens)]
    if where >= 0:
        _expressions(tokens[where + 1 :], facts)
    cursor = _Cursor(head)
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


_EXPLAINABLE: Final = frozenset({"SELECT", "WITH", "TABLE", "VALUES", "INSERT", "REPLACE", "UPDATE", "DELETE"})


def _explain(tokens: Sequence[Token], facts: _Facts) -> None:
    cursor = _Cursor(tokens)
    while True:
        if cursor.accept_any("EXTENDED", "PARTITIONS", "ANALYZE"):
            continue
        if cursor.accept("FORMAT"):
            cursor.punct("=")
            cursor.name()
            continue
        break
    if cursor.kw() in _EXPLAINABLE or _is(cursor.peek(), "("):
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


def _analyze(tokens: Sequence[Token], facts: _Facts) -> None:
    """ANALYZE TABLE (maintenance) or MariaDB's ANALYZE statement (runs it, like EXPLAIN ANALYZE)."""
    if _Cursor(tokens).accept_any("TABLE", "TABLES", "NO_WRITE_TO_BINLOG", "LOCAL"):
        _maintenance(tokens, facts)
        return
    _explain(tokens, facts)


def _maintenance(tokens: Sequence[Token], facts: _Facts) -> None:
    """ANALYZE / CHECK / CHECKSUM (read) and OPTIMIZE / REPAIR (write) TABLE t, ..."""
    word = tokens[0].keyword
    cursor = _Cursor(tokens)
    cursor.accept_any("NO_WRITE_TO_BINLOG", "LOCAL")
    if not cursor.accept_any("TABLE", "TABLES"):
        raise _Unparseable(f"unknown {word} statement")
    facts.command = f"{word} TABLE"
    facts.kind(_K.OTHER)
    target = facts.writes if word in ("OPTIMIZE", "REPAIR") else facts.reads
    for name in cursor.names():
        target.add(facts.table_from_parts(name))


# ------------------------------------------------------------------------------ transactions


def _transaction(tokens: Sequence[Token], facts: _Facts) -> None:
    """START TRANSACTION, BEGIN, COMMIT, ROLLBACK, SAVEPOINT, RELEASE SAVEPOINT, XA: read
    strictly, since BEGIN can also open a MariaDB anonymous block."""
    word = tokens[0].keyword
    cursor = _Cursor(tokens)
    facts.kind(_K.TRANSACTION)
    facts.command = word
    if word == "START":
        if not cursor.accept("TRANSACTION"):
            _replication(tokens, facts)
            return
        facts.command = "START TRANSACTION"
        while not cursor.at_end():
            if not (
                cursor.accept("READ", "ONLY")
                or cursor.accept("READ", "WRITE")
                or cursor.accept("WITH", "CONSISTENT", "SNAPSHOT")
            ):
                raise _Unparseable(f"unexpected {cursor.rest()[0].text!r} in START TRANSACTION")
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
            raise _Unparseable("unexpected punctuation in XA")
        return
    cursor.end()


# --------------------------------------------------------------------- privileges, prepared


def _grant(tokens: Sequence[Token], facts: _Facts) -> None:
    word = tokens[0].keyword
    facts.command = word
    facts.kind(_K.GRANT if word == "GRANT" else _K.REVOKE)
    facts.feature(_F.PRIVILEGE_CHANGE)


def _prepare(tokens: Sequence[Token], facts: _Facts) -> None:
    cursor = _Cursor(tokens)
    facts.command = "PREPARE"
    facts.kind(_K.PREPARE)
    facts.feature(_F.DYNAMIC_SQL)
    facts.prepares = _statement_name(cursor)
    cursor.expect("FROM")
    if cursor.punct("@"):
        # The text is only known to the server, and EXECUTE would run it whatever it is: fail
        # closed here, as for EXECUTE IMMEDIATE of a computed text.
        raise _Unparseable("PREPARE of a text computed at run time (a user variable)")
    text = cursor.string()
    cursor.end()
    _inner(text, facts, "PREPARE")


def _inner(text: str, facts: _Facts, what: str) -> StatementInfo:
    """Add the analysis of a statement given as a string (PREPARE / EXECUTE IMMEDIATE)."""
    inner = _analyse_message(text, facts.after or facts.settings)
    if len(inner) != 1:
        raise _Unparseable(f"{what} text must be exactly one statement, found {len(inner)}")
    info = inner[0]
    facts.kinds.update(info.kinds)
    facts.reads.update(info.reads)
    facts.writes.update(info.writes)
    facts.functions.update(info.functions)
    facts.features.update(info.features)
    facts.unfiltered.update(info.unfiltered)
    facts.note(f"{what} text: {info.command}" + (f" ({info.detail})" if info.detail else ""))
    return info


def _statement_name(cursor: _Cursor) -> str:
    name = cursor.name()
    if len(name) != 1:
        raise _Unparseable("expected a statement name")
    return name[0].lower()  # prepared statement names are not case-sensitive


def _execute(tokens: Sequence[Token], facts: _Facts) -> None:
    cursor = _Cursor(tokens)
    facts.kind(_K.EXECUTE)
    if cursor.accept("IMMEDIATE"):
        facts.command = "EXECUTE IMMEDIATE"
        facts.feature(_F.DYNAMIC_SQL)
        token = cursor.peek()
        if token is None or token.kind is not TokenKind.STRING:
            raise _Unparseable("EXECUTE IMMEDIATE of a text computed at run time")
        cursor.advance()
        if _inner(token.value, facts, "EXECUTE IMMEDIATE").changes_parsing:  # it runs now
            facts.changes_parsing = True
            facts.after = None
    else:
        facts.command = "EXECUTE"
        facts.executes = _statement_name(cursor)
        facts.changes_parsing = True  # what it runs is only known to the session
        facts.after = None
    if cursor.accept("USING"):
        _expressions(cursor.rest(), facts)
    elif not cursor.at_end():
        raise _Unparseable(f"unexpected {cursor.rest()[0].text!r} in EXECUTE")


def _deallocate(tokens: Sequence[Token], facts: _Facts) -> None:
    cursor = _Cursor(tokens)
    cursor.expect("PREPARE")
    facts.command = "DEALLOCATE PREPARE"
    _deallocate_name(cursor, facts)


def _deallocate_name(cursor: _Cursor, facts: _Facts) -> None:
    facts.kind(_K.PREPARE)
    facts.deallocates = _statement_name(cursor)
    cursor.end()


# --------------------------------------------------------------------- CALL, DO, LOAD, HANDLER


def _call(tokens: Sequence[Token], facts: _Facts) -> None:
    cursor = _Cursor(tokens)
    facts.command = "CALL"
    facts.kind(_K.CALL)
    parts = cursor.name()
    if len(parts) > 2:
        raise _Unparseable("procedure name with more than two parts")
    name = ".".join(parts).lower()
    facts.functions.add(name)
    facts.user_code(f"calls procedure {name}")
    if cursor.punct("("):
        arguments = cursor.rest()
        if not arguments or not _is(arguments[-1], ")"):
            raise _Unparseable("expected ) after CALL arguments")
        _expressions(arguments[:-1], facts)
    else:
        cursor.end()


def _do(tokens: Sequence[Token], facts: _Facts) -> None:
    facts.command = "DO"
    facts.kind(_K.OTHER)
    if len(tokens) < 2:
        raise _Unparseable("DO without an expression")
    _expressions(tokens[1:], facts)


def _load(tokens: Sequence[Token], facts: _Facts) -> None:
    cursor = _Cursor(tokens)
    if cursor.accept("INDEX", "INTO", "CACHE"):
        facts.command = "LOAD INDEX INTO CACHE"
        facts.kind(_K.OTHER)
        return
    word = cursor.accept_any("DATA", "XML")
    if not word:
        raise _Unparseable("unknown LOAD statement")
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
            _expressions(tokens[index + 1 :], facts)
            break


def _handler(tokens: Sequence[Token], facts: _Facts) -> None:
    cursor = _Cursor(tokens)
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
        where = _find_keyword(tokens, "WHERE")
        if where >= 0:
            limit = _find_keyword(tokens, "LIMIT", where)
            _expressions(tokens[where + 1 : limit if limit >= 0 else len(tokens)], facts)
    elif action:
        facts.kind(_K.OTHER)
    else:
        raise _Unparseable("unknown HANDLER statement")


# ---------------------------------------------------------------------------- administration


def _other(tokens: Sequence[Token], facts: _Facts) -> None:
    """LOCK / UNLOCK TABLES, CACHE INDEX, HELP, SIGNAL, RESIGNAL, GET DIAGNOSTICS."""
    word = tokens[0].keyword
    facts.kind(_K.OTHER)
    cursor = _Cursor(tokens)
    if word in ("LOCK", "UNLOCK") and cursor.kw() == "INSTANCE":
        facts.feature(_F.SYSTEM_ADMIN)
    if word == "GET" and not (cursor.accept("DIAGNOSTICS") or cursor.accept_any("CURRENT", "STACKED")):
        raise _Unparseable("unknown GET statement")
    if word == "CACHE" and not cursor.accept("INDEX"):
        raise _Unparseable("unknown CACHE statement")
    facts.command = f"{word} {cursor.kw()}".strip() if word in ("LOCK", "UNLOCK") else word


def _admin(tokens: Sequence[Token], facts: _Facts) -> None:
    """Server administration: KILL, SHUTDOWN, FLUSH, RESET, PURGE, replication, plugins..."""
    word = tokens[0].keyword
    facts.command = word
    facts.kind(_K.OTHER)
    facts.feature(_F.SYSTEM_ADMIN)
    cursor = _Cursor(tokens)
    if word == "KILL":
        while cursor.accept_any("HARD", "SOFT", "CONNECTION", "QUERY", "ID", "USER"):
            pass
        _expressions(cursor.rest(), facts)
    elif word == "PURGE":
        before = _find_keyword(tokens, "BEFORE")
        if before >= 0:
            _expressions(tokens[before + 1 :], facts)
    elif word in ("CLONE", "IMPORT"):
        facts.feature(_F.FILE_ACCESS)
    elif word in ("INSTALL", "UNINSTALL"):
        facts.feature(_F.UNTRUSTED_CODE)
        facts.note("loads or unloads native server code")


def _replication(tokens: Sequence[Token], facts: _Facts) -> None:
    """START / STOP SLAVE, REPLICA, GROUP_REPLICATION, ALL SLAVES."""
    facts.kinds.discard(_K.TRANSACTION)
    cursor = _Cursor(tokens)
    cursor.accept("ALL")
    if not cursor.accept_any("SLAVE", "SLAVES", "REPLICA", "REPLICAS", "GROUP_REPLICATION"):
        raise _Unparseable(f"unknown {tokens[0].keyword} statement")
    _admin(tokens, facts)


def _refuse(reason: str) -> _Handler:
    def handler(tokens: Sequence[Token], facts: _Facts) -> None:
        raise _Unparseable(reason)

    return handler


_HANDLERS: Final[dict[str, _Handler]] = {
    "SELECT": _query,
    "WITH": _query,
    "TABLE": _query,
    "VALUES": _query,
    "INSERT": _insert,
    "REPLACE": _insert,
    "UPDATE": _update,
    "DELETE": _delete,
    "CREATE": _create,
    "ALTER": _alter,
    "DROP": _drop,
    "TRUNCATE": _truncate,
    "RENAME": _rename,
    "SET": _set,
    "USE": _use,
    "SHOW": _show,
    "EXPLAIN": _explain,
    "DESCRIBE": _explain,
    "DESC": _explain,
    "ANALYZE": _analyze,
    "OPTIMIZE": _maintenance,
    "CHECK": _maintenance,
    "REPAIR": _maintenance,
    "CHECKSUM": _maintenance,
    "START": _transaction,
    "BEGIN": _transaction,
    "COMMIT": _transaction,
    "ROLLBACK": _transaction,
    "SAVEPOINT": _transaction,
    "RELEASE": _transaction,
    "XA": _transaction,
    "STOP": _replication,
    "GRANT": _grant,
    "REVOKE": _grant,
    "PREPARE": _prepare,
    "EXECUTE": _execute,
    "DEALLOCATE": _deallocate,
    "CALL": _call,
    "DO": _do,
    "LOAD": _load,
    "HANDLER": _handler,
    "LOCK": _other,
    "UNLOCK": _other,
    "CACHE": _other,
    "HELP": _other,
    "SIGNAL": _other,
    "RESIGNAL": _other,
    "GET": _other,
    "KILL": _admin,
    "SHUTDOWN": _admin,
    "RESTART": _admin,
    "FLUSH": _admin,
    "RESET": _admin,
    "PURGE": _admin,
    "CHANGE": _admin,
    "INSTALL": _admin,
    "UNINSTALL": _admin,
    "CLONE": _admin,
    "BACKUP": _admin,
    "IMPORT": _admin,
    "BINLOG": _refuse("BINLOG applies binary-log events: any change at all"),
    "IF": _refuse("compound statement outside a stored program"),
    "CASE": _refuse("compound statement outside a stored program"),
    "WHILE": _refuse("compound statement outside a stored program"),
    "LOOP": _refuse("compound statement outside a stored program"),
    "REPEAT": _refuse("compound statement outside a stored program"),
    "FOR": _refuse("compound statement outside a stored program"),
}


__all__ = ["BUILTIN_FUNCTIONS", "analyse_mysql", "fingerprint", "mysql_shape", "sql_mode_flags"]
