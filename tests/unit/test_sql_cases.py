# tests/unit/test_sql_cases.py — runs the analyser case files of both dialects.
# Owns: loading every tests/cases/postgres/*.yaml and tests/cases/mysql/*.yaml, one pytest case
# per entry, and comparing `dbguard.sql.analyse` with what the entry expects. The format:
#
#   settings: {standard_conforming_strings: true, search_path: [public]}  # optional, ParseSettings fields
#   cases:
#     - sql: "WITH d AS (DELETE FROM t RETURNING *) SELECT * FROM d"
#       kinds: [delete, select]   # exact set, union over all statements of the message
#       writes: [public.t]        # optional; exact set (union) when given; so are reads,
#                                 # features, functions, unfiltered
#       statements: 1             # optional; number of statements
#       changes_parsing: false    # optional; any statement / literal_sensitive likewise
#       prepares / executes / deallocates: "name"   # optional
#       command: "SELECT"         # optional; the first statement's command (commands: one each)
#       texts: ["..."]            # optional; each statement's own text
#       settings: {standard_conforming_strings: false}  # optional per-case override
#       note: "..."               # optional; for readers
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest
import yaml

from dbguard.model import ParseSettings, StatementInfo
from dbguard.sql import analyse

CASES_DIR = Path(__file__).resolve().parent.parent / "cases"
DIALECTS = ("postgres", "mysql")
SET_FIELDS = ("reads", "writes", "features", "functions", "unfiltered")
FLAG_FIELDS = ("changes_parsing", "literal_sensitive")
NAME_FIELDS = ("prepares", "executes", "deallocates")
KNOWN_KEYS = frozenset(
    {"sql", "settings", "kinds", "statements", "command", "commands", "texts", "note", "description", "id"}
    | set(SET_FIELDS)
    | set(FLAG_FIELDS)
    | set(NAME_FIELDS)
)
SETTINGS_FIELDS = frozenset(field.name for field in dataclasses.fields(ParseSettings)) - {"dialect"}


def _settings(dialect: str, *layers: dict[str, Any] | None) -> ParseSettings:
    values: dict[str, Any] = {}
    for layer in layers:
        values.update(layer or {})
    unknown = set(values) - SETTINGS_FIELDS
    if unknown:
        raise ValueError(f"unknown settings {sorted(unknown)}")
    if "search_path" in values:
        values["search_path"] = tuple(values["search_path"])
    return ParseSettings(dialect, **values)


def _load_cases() -> list[Any]:
    params: list[Any] = []
    for dialect in DIALECTS:
        for path in sorted((CASES_DIR / dialect).glob("*.yaml")):
            document = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
            file_settings = document.get("settings")
            for index, case in enumerate(document.get("cases") or ()):
                unknown = set(case) - KNOWN_KEYS
                if unknown:
                    raise ValueError(f"{path.name} case {index}: unknown keys {sorted(unknown)}")
                settings = _settings(dialect, file_settings, case.get("settings"))
                label = " ".join(str(case["sql"]).split())[:60]
                params.append(pytest.param(case, settings, id=f"{dialect}/{path.stem}/{index}:{label}"))
    return params


def _union(infos: tuple[StatementInfo, ...], field: str) -> set[str]:
    return {str(value) for info in infos for value in getattr(info, field)}


@pytest.mark.parametrize(("case", "settings"), _load_cases())
def test_case(case: dict[str, Any], settings: ParseSettings) -> None:
    infos = analyse(str(case["sql"]), settings)
    seen = {
        "statements": len(infos),
        "kinds": sorted(_union(infos, "kinds")),
        **{field: sorted(_union(infos, field)) for field in SET_FIELDS},
        "commands": [info.command for info in infos],
        "details": [info.detail for info in infos],
    }
    if "statements" in case:
        assert len(infos) == case["statements"], seen
    assert _union(infos, "kinds") == set(case["kinds"]), seen
    for field in SET_FIELDS:
        if field in case:
            assert _union(infos, field) == {str(item) for item in case[field] or ()}, (field, seen)
    for field in FLAG_FIELDS:
        if field in case:
            assert any(getattr(info, field) for info in infos) is bool(case[field]), (field, seen)
    for field in NAME_FIELDS:
        if field in case:
            names = {getattr(info, field) for info in infos} - {""}
            assert names == ({str(case[field])} if case[field] else set()), (field, seen)
    if "command" in case:
        assert infos, seen
        assert infos[0].command == case["command"], seen
    if "commands" in case:
        assert [info.command for info in infos] == list(case["commands"]), seen
    if "texts" in case:
        assert [info.text for info in infos] == list(case["texts"]), seen
