# tests/unit/test_journal_imports.py — the journal depends on dbguard.model only (plus the
# standard library, and the client drivers that `journal replay --execute` and the PostgreSQL store
# use): docs/architecture.md's direction of imports, checked by parsing.
from __future__ import annotations

import ast
import sys
from pathlib import Path

import dbguard.journal

ALLOWED_THIRD_PARTY = {"psycopg", "pymysql"}


def test_journal_imports_only_model_stdlib_and_psycopg() -> None:
    package = Path(dbguard.journal.__file__).parent
    offenders: list[str] = []
    for path in sorted(package.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            for name in names:
                top = name.split(".")[0]
                if name == "dbguard.model" or name.startswith("dbguard.journal") or name == "__future__":
                    continue
                if top in sys.stdlib_module_names or top in ALLOWED_THIRD_PARTY:
                    continue
                offenders.append(f"{path.name}: {name}")
    assert offenders == []
