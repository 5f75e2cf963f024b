"""MySQL/MariaDB analysis: what one statement does, and reading its tokens.

Owns the facts accumulator (`Facts`: kinds, reads, writes, functions, features..., turned into a
`StatementInfo`), the fingerprint, the list of built-in functions, the `Unparseable` signal, and
the token helpers every handler reads with (`Cursor`, `split_commas`, `find_keyword`). Part of
`dbguard.sql.mysql` (see its docstring for what is analysed and how).

Must not import sqlglot, dispatch statements, or know any statement's grammar.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from typing import Final

from dbguard.model import Feature, ParseSettings, StatementInfo, StatementKind
from dbguard.sql.mysql_lexer import Token, TokenKind, render_shape, skip_account

_K = StatementKind
_F = Feature


def split_words(text: str) -> list[str]:
    return text.split()


# Kinds whose analysis does not depend on literal values (fingerprint-cacheable) unless a
# constant-only WHERE or a file name says otherwise.
_LITERAL_SAFE_KINDS: Final = frozenset({_K.SELECT, _K.INSERT, _K.UPDATE, _K.DELETE, _K.TRANSACTION, _K.EXPLAIN})

# MySQL 8 and MariaDB built-in functions (what an unqualified, unquoted call can mean without a
# stored function being involved). Anything else is a user-defined function.
BUILTIN_FUNCTIONS: Final = frozenset(
    split_words(
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


class Unparseable(Exception):
    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


def is_punct(token: Token | None, text: str) -> bool:
    return token is not None and token.kind is TokenKind.PUNCT and token.text == text


# ---------------------------------------------------------------------------------------- facts


class Facts:
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
        raise Unparseable(f"name with {len(parts)} parts: {'.'.join(parts)}")

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


# ------------------------------------------------------------------ handlers and reading tokens

Handler = Callable[[Sequence[Token], Facts], None]


class Cursor:
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
        if is_punct(self.peek(), text):
            self.pos += 1
            return True
        return False

    def expect(self, *words: str) -> None:
        if not self.accept(*words):
            found = self.peek()
            raise Unparseable(f"expected {' '.join(words)}, found {found.text if found else 'the end'!r}")

    def end(self) -> None:
        if not self.at_end():
            raise Unparseable(f"unexpected {self.tokens[self.pos].text!r}")

    def name(self) -> list[str]:
        """A possibly qualified identifier: its parts."""
        parts = [self._identifier()]
        while is_punct(self.peek(), ".") and self.peek(1) is not None:
            self.pos += 1
            parts.append(self._identifier())
        return parts

    def _identifier(self) -> str:
        token = self.peek()
        if token is None or token.kind not in (TokenKind.WORD, TokenKind.IDENT):
            raise Unparseable(f"expected a name, found {token.text if token else 'the end'!r}")
        self.pos += 1
        return token.value

    def string(self) -> str:
        token = self.peek()
        if token is None or token.kind is not TokenKind.STRING:
            raise Unparseable(f"expected a string, found {token.text if token else 'the end'!r}")
        self.pos += 1
        return token.value

    def text_value(self) -> None:
        """A string, a hex/bit number, or X'..' / B'..' (what FIELDS TERMINATED BY takes)."""
        token = self.peek()
        if token is not None and token.kind is TokenKind.WORD and _is_string(self.peek(1)):
            self.pos += 1
            token = self.peek()
        if token is None or token.kind not in (TokenKind.STRING, TokenKind.NUMBER):
            raise Unparseable(f"expected a string, found {token.text if token else 'the end'!r}")
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


def split_commas(tokens: Sequence[Token]) -> list[Sequence[Token]]:
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


def find_keyword(tokens: Sequence[Token], keyword: str, start: int = 0) -> int:
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
