"""Startup settings: only harmless ones reach the server; `options` is split as the server does.

Covers the ways a privilege change could hide in a startup packet: a `role` key, `-c role=…`,
`-crole=…`, `--role=…`, upper case, escaped whitespace, server switches such as `-d`.
"""

from __future__ import annotations

import pytest

from dbguard.session.pg_startup import refused_startup_setting, split_options


@pytest.mark.parametrize(("options", "expected"), [
    ("-c a=1 -c b=2", ["-c", "a=1", "-c", "b=2"]),
    ("  -c\ta=1  ", ["-c", "a=1"]),
    ("-c search_path=a\\ b", ["-c", "search_path=a b"]),
    ("-c x=\\\\", ["-c", "x=\\"]),
    ("", []),
])
def test_split_options_like_the_server(options: str, expected: list[str]) -> None:
    assert split_options(options) == expected


@pytest.mark.parametrize("params", [
    {"user": "u", "database": "d"},
    {"user": "u", "database": "d", "application_name": "psql", "client_encoding": "UTF8"},
    {"user": "u", "DateStyle": "ISO", "TimeZone": "UTC", "extra_float_digits": "3"},  # JDBC
    {"user": "u", "options": "-c statement_timeout=1000 -c search_path=scratch,public"},
    {"user": "u", "options": "--statement-timeout=5s -cDateStyle=SQL,DMY"},
    {"user": "u", "options": "-c enable_seqscan=off"},
    {"user": "u", "_pq_.some_extension": "x", "dbguard.intent": "cleanup"},
])
def test_harmless_settings_pass(params: dict[str, str]) -> None:
    assert refused_startup_setting(params) is None


@pytest.mark.parametrize(("params", "refused"), [
    ({"user": "u", "role": "postgres"}, "role"),
    ({"user": "u", "session_authorization": "postgres"}, "session_authorization"),
    ({"user": "u", "ROLE": "postgres"}, "ROLE"),
    ({"user": "u", "options": "-c role=postgres"}, "role"),
    ({"user": "u", "options": "-crole=postgres"}, "role"),
    ({"user": "u", "options": "--role=postgres"}, "role"),
    ({"user": "u", "options": "-c statement_timeout=1 -c Role=postgres"}, "Role"),
    ({"user": "u", "options": "-c session-authorization=postgres"}, "session_authorization"),
    ({"user": "u", "options": "-c standard_conforming_strings=off"}, "standard_conforming_strings"),
    ({"user": "u", "options": "-d 5"}, "options: -d"),
    ({"user": "u", "options": "-c"}, "options: -c"),
    ({"user": "u", "options": "-c =x"}, "options: -c"),
    ({"user": "u", "backslash_quote": "on"}, "backslash_quote"),
])
def test_anything_else_is_refused_by_name(params: dict[str, str], refused: str) -> None:
    assert refused_startup_setting(params) == refused
