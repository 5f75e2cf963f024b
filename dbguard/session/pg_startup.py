"""Which client startup parameters may reach the upstream server.

Owns: the allowlist of settings a client may set in its StartupMessage (directly, or as
`-c name=value` / `--name=value` inside `options`), and parsing `options` the way the server
splits it. Pure; the session calls `refused_startup_setting()` before connecting upstream.

Why: every setting in a startup packet takes effect without a SQL statement, so no policy
ever sees it. A `role=…` there would switch privileges silently (to any role the service
account belongs to), and settings that change how later SQL parses or runs must go through
SET, where the analyser and the rules see them. So the proxy fails closed: only settings
known to be harmless pass; anything else refuses the connection, naming the setting.
"""

from __future__ import annotations

# Lower-case names. Presentation, client-side timeouts and planner hints: none of them
# changes who the session is, what it may touch, or how SQL text is parsed.
ALLOWED_SETTINGS = frozenset({
    "application_name", "fallback_application_name", "client_encoding", "datestyle", "timezone",
    "intervalstyle", "extra_float_digits", "bytea_output", "client_min_messages", "xmloption",
    "lc_monetary", "lc_numeric", "lc_time", "timezone_abbreviations",
    "statement_timeout", "lock_timeout", "idle_in_transaction_session_timeout",
    "idle_session_timeout", "default_transaction_isolation", "default_transaction_read_only",
    "default_transaction_deferrable", "synchronous_commit", "work_mem", "maintenance_work_mem",
    "temp_buffers", "jit", "geqo", "random_page_cost", "seq_page_cost", "effective_cache_size",
    "search_path",
})
# Planner switches (enable_seqscan, enable_hashjoin…) are harmless hints as a family.
ALLOWED_PREFIXES = ("enable_",)
# Keys of the StartupMessage that are not settings (handled by the session itself).
PROTOCOL_KEYS = frozenset({"user", "database", "replication", "options"})


def is_allowed_setting(name: str) -> bool:
    lowered = name.lower()
    return lowered in ALLOWED_SETTINGS or lowered.startswith(ALLOWED_PREFIXES)


def split_options(options: str) -> list[str]:
    """Split `options` as the server does (pg_split_opts): on whitespace, where a backslash
    makes the next character literal."""
    args: list[str] = []
    current: list[str] = []
    escaped = False
    in_arg = False
    for char in options:
        if escaped:
            current.append(char)
            escaped = False
            in_arg = True
        elif char == "\\":
            escaped = True
            in_arg = True
        elif char.isspace():
            if in_arg:
                args.append("".join(current))
                current = []
                in_arg = False
        else:
            current.append(char)
            in_arg = True
    if in_arg:
        args.append("".join(current))
    return args


def _settings_in_options(options: str) -> list[str] | str:
    """The setting names `options` sets, or the first argument that is not a setting."""
    names: list[str] = []
    args = split_options(options)
    index = 0
    while index < len(args):
        arg = args[index]
        if arg == "-c" and index + 1 < len(args):
            assignment = args[index + 1]
            index += 2
        elif (arg.startswith("-c") and len(arg) > 2) or (arg.startswith("--") and "=" in arg):
            assignment = arg[2:]
            index += 1
        else:
            return arg  # a server switch (-d, -o, -E…) or something unparsable
        name, sep, _value = assignment.partition("=")
        if not sep or not name:
            return arg
        names.append(name.replace("-", "_"))
    return names


def refused_startup_setting(params: dict[str, str]) -> str | None:
    """None if every setting in the startup parameters may pass; else the offending name
    (or `options` argument), for the error message."""
    for key in params:
        if key in PROTOCOL_KEYS or key.startswith("_pq_.") or key.startswith("dbguard."):
            continue
        if not is_allowed_setting(key):
            return key
    options = params.get("options", "")
    if options.strip():
        names = _settings_in_options(options)
        if isinstance(names, str):
            return f"options: {names}"
        for name in names:
            if not name.startswith("dbguard.") and not is_allowed_setting(name):
                return name
    return None



def startup_settings(params: dict[str, str]) -> dict[str, str]:
    """The settings the startup parameters give (lower-case names), as the server applies
    them: `options` first, then the parameters themselves, later ones winning."""
    settings: dict[str, str] = {}
    args = split_options(params.get("options", ""))
    index = 0
    while index < len(args):
        arg = args[index]
        if arg == "-c" and index + 1 < len(args):
            assignment = args[index + 1]
            index += 2
        else:
            assignment = arg[2:] if arg.startswith(("-c", "--")) else ""
            index += 1
        name, sep, value = assignment.partition("=")
        if sep and name:
            settings[name.replace("-", "_").lower()] = value
    for key, value in params.items():
        if key not in PROTOCOL_KEYS and not key.startswith(("_pq_.", "dbguard.")):
            settings[key.lower()] = value
    return settings
