"""PostgreSQL built-in functions and operators, as the analyser needs to know them.

Owns three reviewed tables, written from the PostgreSQL documentation (not read from a live
server, so the verdict for a name never depends on which server the proxy talks to):

- `SIDE_EFFECTS`: built-in (or well-known extension) functions whose call is risky in itself,
  with the features each carries (`file_access`, `system_admin`, `dynamic_sql`,
  `session_change`). A call of one of these adds its features whatever schema it is called in.
- `BUILTIN_FUNCTIONS`: names of functions that ship with PostgreSQL (pg_catalog and the
  information_schema helpers). An unqualified call of any other name, or a call qualified with
  a schema other than pg_catalog / information_schema, is user code (`user_code_call`): its body
  is invisible to the proxy. A false "user code" verdict only fails closed, so this list aims to
  cover what applications, ORMs and psql really call, not every internal support function.
- `BUILTIN_OPERATORS`: operator symbols defined in pg_catalog; any other symbol is a
  user-defined operator, i.e. a call of a user function.

Exact names only, never prefixes: a prefix rule ("pg_stat_get_*") would let a user-defined
function named to match it pass as built-in. It imports nothing from dbguard but the model.
"""

from __future__ import annotations

from typing import Final, NamedTuple

from dbguard.model import Feature


class SideEffect(NamedTuple):
    """What calling one risky function means for policy."""

    features: frozenset[Feature]
    builtin: bool = True  # False: an extension's function (dblink): also user code
    changes_parsing: bool = False  # the call may change how later statements are parsed


def _words(text: str) -> frozenset[str]:
    """The whitespace-separated names of a text block."""
    return frozenset(text.split())


def _effect(*features: Feature, builtin: bool = True, changes_parsing: bool = False) -> SideEffect:
    return SideEffect(frozenset(features), builtin, changes_parsing)


_FILE = _effect(Feature.FILE_ACCESS)
_ADMIN = _effect(Feature.SYSTEM_ADMIN)
_DYNAMIC = _effect(Feature.DYNAMIC_SQL)
_DYNAMIC_EXTENSION = _effect(Feature.DYNAMIC_SQL, builtin=False)
_FILE_EXTENSION = _effect(Feature.FILE_ACCESS, builtin=False)

SIDE_EFFECTS: Final[dict[str, SideEffect]] = {
    # --- Server-side files: read, list or write files on the database host. The adminpack
    # extension's writers are not core but are the classic way to write files.
    **dict.fromkeys(
        (
            "pg_read_file",
            "pg_read_binary_file",
            "pg_stat_file",
            "pg_ls_dir",
            "pg_ls_logdir",
            "pg_ls_waldir",
            "pg_ls_tmpdir",
            "pg_ls_archive_statusdir",
            "pg_ls_logicalsnapdir",
            "pg_ls_logicalmapdir",
            "pg_ls_replslotdir",
            "pg_ls_summariesdir",
            "lo_import",
            "lo_export",
            "pg_show_all_file_settings",
            "pg_hba_file_rules",
            "pg_ident_file_mappings",
        ),
        _FILE,
    ),
    **dict.fromkeys(
        ("pg_file_write", "pg_file_rename", "pg_file_unlink", "pg_file_sync", "pg_logdir_ls"),
        _FILE_EXTENSION,
    ),
    # --- Server administration: other sessions, configuration, WAL, replication, backups,
    # statistics resets. Each needs superuser or a pg_* predefined role.
    **dict.fromkeys(
        (
            "pg_terminate_backend",
            "pg_cancel_backend",
            "pg_rotate_logfile",
            "pg_promote",
            "pg_switch_wal",
            "pg_switch_xlog",
            "pg_create_restore_point",
            "pg_backup_start",
            "pg_backup_stop",
            "pg_start_backup",
            "pg_stop_backup",
            "pg_wal_replay_pause",
            "pg_wal_replay_resume",
            "pg_xlog_replay_pause",
            "pg_xlog_replay_resume",
            "pg_create_physical_replication_slot",
            "pg_create_logical_replication_slot",
            "pg_drop_replication_slot",
            "pg_copy_physical_replication_slot",
            "pg_copy_logical_replication_slot",
            "pg_replication_slot_advance",
            "pg_sync_replication_slots",
            "pg_logical_slot_get_changes",
            "pg_logical_slot_get_binary_changes",
            "pg_logical_slot_peek_changes",
            "pg_logical_slot_peek_binary_changes",
            "pg_logical_emit_message",
            "pg_replication_origin_create",
            "pg_replication_origin_drop",
            "pg_replication_origin_session_setup",
            "pg_replication_origin_session_reset",
            "pg_replication_origin_xact_setup",
            "pg_replication_origin_xact_reset",
            "pg_replication_origin_advance",
            "pg_log_backend_memory_contexts",
            "pg_log_standby_snapshot",
            "pg_stat_reset",
            "pg_stat_reset_shared",
            "pg_stat_reset_single_table_counters",
            "pg_stat_reset_single_function_counters",
            "pg_stat_reset_slru",
            "pg_stat_reset_replication_slot",
            "pg_stat_reset_subscription_stats",
            "pg_stat_reset_backend_stats",
            "pg_stat_statements_reset",
            "pg_import_system_collations",
            "pg_restore_relation_stats",
            "pg_restore_attribute_stats",
            "pg_clear_relation_stats",
            "pg_clear_attribute_stats",
            "pg_set_relation_stats",
            "pg_set_attribute_stats",
        ),
        _ADMIN,
    ),
    # Re-reading the configuration can change every session's parsing defaults
    # (standard_conforming_strings set in postgresql.conf / ALTER SYSTEM).
    "pg_reload_conf": _effect(Feature.SYSTEM_ADMIN, changes_parsing=True),
    # --- SQL run from strings: the text is not analysed by the proxy. query_to_xml & co. run
    # a query string; table_to_xml & co. read a table named by a string; ts_stat and the
    # two-argument ts_rewrite run a query string; dblink runs SQL on another connection.
    **dict.fromkeys(
        (
            "query_to_xml",
            "query_to_xmlschema",
            "query_to_xml_and_xmlschema",
            "table_to_xml",
            "table_to_xmlschema",
            "table_to_xml_and_xmlschema",
            "schema_to_xml",
            "schema_to_xmlschema",
            "schema_to_xml_and_xmlschema",
            "database_to_xml",
            "database_to_xmlschema",
            "database_to_xml_and_xmlschema",
            "ts_stat",
            "ts_rewrite",
        ),
        _DYNAMIC,
    ),
    **dict.fromkeys(
        (
            "dblink",
            "dblink_exec",
            "dblink_send_query",
            "dblink_open",
            "dblink_fetch",
            "dblink_get_result",
            "dblink_connect",
            "dblink_connect_u",
        ),
        _DYNAMIC_EXTENSION,
    ),
    # --- Session settings: set_config is SET in function form. The analyser refines
    # changes_parsing from its first argument (see SETTINGS_THAT_CHANGE_PARSING).
    "set_config": _effect(Feature.SESSION_CHANGE),
}

# Settings whose value changes how the server lexes or resolves later statements: the session
# must not decide a later statement before one that sets them has completed.
SETTINGS_THAT_CHANGE_PARSING: Final = frozenset(
    {"standard_conforming_strings", "client_encoding", "backslash_quote", "search_path"}
)

# Functions whose verdict may depend on their literal arguments: analysis results for
# statements calling them are cached by exact text only, never by shape.
ARGUMENT_SENSITIVE: Final = frozenset(
    {"set_config"} | {name for name, effect in SIDE_EFFECTS.items() if Feature.DYNAMIC_SQL in effect.features}
)

# Schemas whose functions ship with PostgreSQL: a call qualified with one is built-in.
SYSTEM_SCHEMAS: Final = frozenset({"pg_catalog", "information_schema"})

_AGGREGATES = """
count sum avg min max array_agg string_agg bool_and bool_or every bit_and bit_or bit_xor
json_agg jsonb_agg json_agg_strict jsonb_agg_strict json_object_agg jsonb_object_agg
json_object_agg_strict jsonb_object_agg_strict json_object_agg_unique jsonb_object_agg_unique
json_object_agg_unique_strict jsonb_object_agg_unique_strict xmlagg range_agg
range_intersect_agg any_value stddev stddev_pop stddev_samp variance var_pop var_samp corr
covar_pop covar_samp regr_avgx regr_avgy regr_count regr_intercept regr_r2 regr_slope regr_sxx
regr_sxy regr_syy mode percentile_cont percentile_disc
"""

_WINDOW = """
row_number rank dense_rank percent_rank cume_dist ntile lag lead first_value last_value nth_value
"""

_MATH = """
abs cbrt ceil ceiling degrees div exp factorial floor gcd lcm ln log log10 min_scale mod pi
power pow radians round scale sign sqrt trim_scale trunc width_bucket random random_normal
setseed acos acosd asin asind atan atand atan2 atan2d cos cosd cot cotd sin sind tan tand sinh
cosh tanh asinh acosh atanh erf erfc gamma lgamma numeric_inc int2 int4 int8 float4 float8
numeric money bit_count
"""

_STRINGS = """
ascii bit_length btrim char_length character_length chr concat concat_ws convert convert_from
convert_to decode encode format initcap left length lower lpad ltrim md5 normalize is_normalized
octet_length overlay parse_ident pg_client_encoding position quote_ident quote_literal
quote_nullable regexp_count regexp_instr regexp_like regexp_match regexp_matches regexp_replace
regexp_split_to_array regexp_split_to_table regexp_substr repeat replace reverse right rpad rtrim
split_part starts_with string_to_array string_to_table strpos substr substring to_ascii to_hex
to_bin to_oct translate upper casefold unistr sha224 sha256 sha384 sha512 get_bit get_byte
set_bit set_byte crc32 crc32c textlen textcat like_escape similar_escape similar_to_escape
text varchar bpchar char name bytea bit varbit uuid gen_random_uuid uuidv4 uuidv7
uuid_extract_timestamp uuid_extract_version to_char to_date to_number to_timestamp
pg_size_pretty pg_size_bytes string_agg btrim ltrim rtrim hashtext hashtextextended
pg_collation_for pg_collation_actual_version pg_database_collation_actual_version
"""

_DATETIME = """
age clock_timestamp current_date date_add date_bin date_part date_subtract date_trunc extract
isfinite justify_days justify_hours justify_interval localtime localtimestamp make_date
make_interval make_time make_timestamp make_timestamptz now statement_timestamp timeofday
transaction_timestamp timezone overlaps pg_sleep pg_sleep_for pg_sleep_until date time timetz
timestamp timestamptz interval to_timestamp
"""

_JSON = """
to_json to_jsonb array_to_json row_to_json json_build_array jsonb_build_array json_build_object
jsonb_build_object json_object jsonb_object json_array_elements jsonb_array_elements
json_array_elements_text jsonb_array_elements_text json_array_length jsonb_array_length json_each
jsonb_each json_each_text jsonb_each_text json_extract_path jsonb_extract_path
json_extract_path_text jsonb_extract_path_text json_object_keys jsonb_object_keys
json_populate_record jsonb_populate_record jsonb_populate_record_valid json_populate_recordset
jsonb_populate_recordset json_to_record jsonb_to_record json_to_recordset jsonb_to_recordset
json_strip_nulls jsonb_strip_nulls jsonb_set jsonb_set_lax jsonb_insert jsonb_path_exists
jsonb_path_match jsonb_path_query jsonb_path_query_array jsonb_path_query_first
jsonb_path_exists_tz jsonb_path_match_tz jsonb_path_query_tz jsonb_path_query_array_tz
jsonb_path_query_first_tz jsonb_pretty json_typeof jsonb_typeof json jsonb jsonb_concat
jsonb_delete jsonb_delete_path jsonb_exists jsonb_exists_any jsonb_exists_all jsonb_contains
jsonb_contained json_scalar json_serialize
"""

_ARRAYS = """
array_append array_cat array_dims array_fill array_length array_lower array_ndims array_position
array_positions array_prepend array_remove array_replace array_sample array_shuffle
array_to_string array_upper cardinality trim_array unnest array_reverse array_sort
generate_subscripts generate_series string_to_array array_larger array_smaller
"""

_RANGES = """
lower upper isempty lower_inc upper_inc lower_inf upper_inf range_merge multirange int4range
int8range numrange tsrange tstzrange daterange int4multirange int8multirange nummultirange
tsmultirange tstzmultirange datemultirange
"""

_NETWORK_GEOMETRY = """
abbrev broadcast family host hostmask inet_merge inet_same_family masklen netmask network
set_masklen inet cidr macaddr macaddr8 macaddr8_set7bit area center diameter height isclosed
isopen npoints pclose popen radius slope width box bound_box circle line lseg path point polygon
"""

_TEXT_SEARCH = """
to_tsvector to_tsquery plainto_tsquery phraseto_tsquery websearch_to_tsquery ts_rank ts_rank_cd
ts_headline ts_debug ts_lexize ts_parse ts_token_type ts_filter ts_delete setweight strip
tsvector_to_array array_to_tsvector numnode querytree get_current_ts_config tsquery_phrase
json_to_tsvector jsonb_to_tsvector
"""

_XML = """
xmlcomment xmlconcat xmlelement xmlforest xmlpi xmlroot xmlexists xml_is_well_formed
xml_is_well_formed_document xml_is_well_formed_content xpath xpath_exists xmlparse xmlserialize
xmltext xml cursor_to_xml cursor_to_xmlschema
"""

_CONDITIONAL_MISC = """
num_nulls num_nonnulls enum_first enum_last enum_range pg_typeof pg_column_size
pg_column_compression pg_column_toast_chunk_id row_security_active nextval currval setval
lastval pg_sequence_last_value pg_sequence_parameters pg_notify pg_advisory_lock
pg_advisory_lock_shared pg_advisory_unlock pg_advisory_unlock_all pg_advisory_unlock_shared
pg_advisory_xact_lock pg_advisory_xact_lock_shared pg_try_advisory_lock
pg_try_advisory_lock_shared pg_try_advisory_xact_lock pg_try_advisory_xact_lock_shared
lo_open lo_close lo_creat lo_create lo_unlink lo_get lo_put lo_from_bytea lo_lseek lo_lseek64
lo_tell lo_tell64 lo_truncate lo_truncate64 loread lowrite pg_input_is_valid pg_input_error_info
current_setting format_type pg_basetype pg_char_to_encoding pg_encoding_to_char
pg_encoding_max_length pg_stat_clear_snapshot pg_stat_force_next_flush pg_stat_have_stats
"""

_SYSTEM_INFO = """
current_database current_query current_schema current_schemas current_user current_role
session_user user system_user current_catalog inet_client_addr inet_client_port
inet_server_addr inet_server_port pg_backend_pid pg_blocking_pids pg_conf_load_time
pg_current_logfile pg_my_temp_schema pg_is_other_temp_schema pg_jit_available
pg_listening_channels pg_notification_queue_usage pg_postmaster_start_time
pg_safe_snapshot_blocking_pids pg_trigger_depth version pg_get_keywords
pg_get_catalog_foreign_keys has_any_column_privilege has_column_privilege
has_database_privilege has_foreign_data_wrapper_privilege has_function_privilege
has_language_privilege has_parameter_privilege has_schema_privilege has_sequence_privilege
has_server_privilege has_table_privilege has_tablespace_privilege has_type_privilege
has_largeobject_privilege pg_has_role acldefault aclexplode makeaclitem aclcontains
pg_collation_is_visible pg_conversion_is_visible pg_function_is_visible pg_opclass_is_visible
pg_operator_is_visible pg_opfamily_is_visible pg_statistics_obj_is_visible pg_table_is_visible
pg_ts_config_is_visible pg_ts_dict_is_visible pg_ts_parser_is_visible
pg_ts_template_is_visible pg_type_is_visible pg_get_constraintdef pg_get_expr
pg_get_functiondef pg_get_function_arguments pg_get_function_identity_arguments
pg_get_function_result pg_get_function_arg_default pg_get_function_sqlbody pg_get_indexdef
pg_get_partkeydef pg_get_partition_constraintdef pg_get_ruledef pg_get_serial_sequence
pg_get_statisticsobjdef pg_get_statisticsobjdef_columns pg_get_statisticsobjdef_expressions
pg_get_triggerdef pg_get_userbyid pg_get_viewdef pg_index_column_has_property
pg_index_has_property pg_indexam_has_property pg_options_to_table pg_settings_get_flags
pg_tablespace_databases pg_tablespace_location to_regclass to_regcollation to_regnamespace
to_regoper to_regoperator to_regproc to_regprocedure to_regrole to_regtype to_regtypemod
col_description obj_description shobj_description pg_describe_object pg_identify_object
pg_identify_object_as_address pg_get_object_address pg_partition_tree pg_partition_ancestors
pg_partition_root pg_relation_is_publishable pg_get_publication_tables
pg_get_replica_identity_index pg_database_size pg_indexes_size pg_relation_size pg_table_size
pg_total_relation_size pg_tablespace_size pg_relation_filenode pg_relation_filepath
pg_filenode_relation txid_current txid_current_if_assigned txid_current_snapshot
txid_snapshot_xip txid_snapshot_xmax txid_snapshot_xmin txid_visible_in_snapshot txid_status
pg_current_xact_id pg_current_xact_id_if_assigned pg_current_snapshot pg_snapshot_xip
pg_snapshot_xmax pg_snapshot_xmin pg_visible_in_snapshot pg_xact_status
pg_xact_commit_timestamp pg_xact_commit_timestamp_origin pg_last_committed_xact
pg_control_checkpoint pg_control_init pg_control_recovery pg_control_system
pg_available_extensions pg_available_extension_versions pg_extension_update_paths
pg_show_all_settings pg_lock_status pg_prepared_xact pg_prepared_statement pg_cursor
pg_timezone_names pg_timezone_abbrevs pg_timezone_abbrevs_zone pg_timezone_abbrevs_abbrevs
pg_get_shmem_allocations pg_get_backend_memory_contexts pg_is_in_recovery
pg_is_wal_replay_paused pg_get_wal_replay_pause_state pg_is_in_backup pg_backup_start_time
pg_current_wal_lsn pg_current_wal_insert_lsn pg_current_wal_flush_lsn pg_walfile_name
pg_walfile_name_offset pg_split_walfile_name pg_wal_lsn_diff pg_last_wal_receive_lsn
pg_last_wal_replay_lsn pg_last_xact_replay_timestamp pg_export_snapshot
pg_replication_origin_oid pg_replication_origin_progress
pg_replication_origin_session_is_setup pg_replication_origin_session_progress
pg_get_replication_slots pg_get_wal_resource_managers pg_get_multixact_members
pg_get_wait_events pg_get_loaded_modules pg_get_acl pg_get_aios pg_numa_available
pg_stat_get_activity pg_stat_get_backend_pid pg_stat_get_backend_dbid
pg_stat_get_backend_userid pg_stat_get_backend_activity pg_stat_get_backend_activity_start
pg_stat_get_backend_client_addr pg_stat_get_backend_client_port pg_stat_get_backend_idset
pg_stat_get_backend_start pg_stat_get_backend_wait_event pg_stat_get_backend_wait_event_type
pg_stat_get_backend_xact_start pg_stat_get_backend_subxact pg_stat_get_progress_info
pg_stat_get_numscans pg_stat_get_tuples_returned pg_stat_get_tuples_fetched
pg_stat_get_tuples_inserted pg_stat_get_tuples_updated pg_stat_get_tuples_deleted
pg_stat_get_live_tuples pg_stat_get_dead_tuples pg_stat_get_blocks_fetched
pg_stat_get_blocks_hit pg_stat_get_last_vacuum_time pg_stat_get_last_autovacuum_time
pg_stat_get_last_analyze_time pg_stat_get_last_autoanalyze_time pg_stat_get_db_numbackends
pg_stat_get_db_xact_commit pg_stat_get_db_xact_rollback pg_stat_get_db_blocks_fetched
pg_stat_get_db_blocks_hit pg_stat_get_db_tuples_returned pg_stat_get_db_tuples_fetched
pg_stat_get_db_tuples_inserted pg_stat_get_db_tuples_updated pg_stat_get_db_tuples_deleted
pg_stat_get_db_conflict_all pg_stat_get_db_deadlocks pg_stat_get_db_temp_files
pg_stat_get_db_temp_bytes pg_stat_get_db_stat_reset_time pg_stat_get_wal_senders
pg_stat_get_wal_receiver pg_stat_get_replication_slot pg_stat_get_subscription
pg_stat_get_subscription_stats pg_stat_get_archiver pg_stat_get_bgwriter_buf_written_clean
pg_stat_get_checkpointer_num_timed pg_stat_get_io pg_stat_get_wal pg_stat_get_slru
pg_stat_get_function_calls pg_stat_get_function_total_time pg_stat_get_function_self_time
pg_stat_get_xact_numscans pg_stat_get_snapshot_timestamp pg_stat_get_lastscan
pg_stat_get_ins_since_vacuum pg_stat_get_mod_since_analyze pg_stat_get_vacuum_count
pg_stat_get_autovacuum_count pg_stat_get_analyze_count pg_stat_get_autoanalyze_count
pg_stat_statements pg_stat_statements_info pg_relation_is_updatable
pg_column_is_updatable pg_event_trigger_ddl_commands pg_event_trigger_dropped_objects
pg_event_trigger_table_rewrite_oid pg_event_trigger_table_rewrite_reason
pg_get_serial_sequence pg_char_to_encoding pg_conversion_is_visible pg_get_viewdef
pg_indexam_progress_phasename pg_sequences pg_mcv_list_items pg_get_shmem_allocations_numa
regclass regtype regproc regprocedure regoper regoperator regnamespace regrole regconfig
regdictionary regcollation oid tid xid xid8 cid pg_lsn bool boolean float double
"""

# information_schema's helper functions, called by its views and by drivers that use them.
_INFORMATION_SCHEMA = """
_pg_expandarray _pg_index_position _pg_truetypid _pg_truetypmod _pg_char_max_length
_pg_char_octet_length _pg_numeric_precision _pg_numeric_precision_radix _pg_numeric_scale
_pg_datetime_precision _pg_interval_type
"""

BUILTIN_FUNCTIONS: Final[frozenset[str]] = _words(
    " ".join(
        (
            _AGGREGATES,
            _WINDOW,
            _MATH,
            _STRINGS,
            _DATETIME,
            _JSON,
            _ARRAYS,
            _RANGES,
            _NETWORK_GEOMETRY,
            _TEXT_SEARCH,
            _XML,
            _CONDITIONAL_MISC,
            _SYSTEM_INFO,
            _INFORMATION_SCHEMA,
        )
    )
) | frozenset(name for name, effect in SIDE_EFFECTS.items() if effect.builtin)

# Operator symbols that exist in pg_catalog (comparison, arithmetic, text, pattern, bit, array,
# range, JSON, geometric, network, full-text search). OPERATOR(pg_catalog.x) is built-in too.
BUILTIN_OPERATORS: Final[frozenset[str]] = _words(
    """
    = <> != < > <= >= + - * / % ^ || |/ ||/ @ & | # ~ << >> ! !!
    ~~ ~~* !~~ !~~* ~ ~* !~ !~* ~<~ ~<=~ ~>=~ ~>~
    @> <@ && &< &> -|- << >> <<| |>> &<| |&> <-> <^ >^ ?# ?- ?| ?-| ?|| ## @@ @@@ <<= >>= !!=
    -> ->> #> #>> #- ? ?& @? ^@
    """
)
