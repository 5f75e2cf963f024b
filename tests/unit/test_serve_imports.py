# tests/unit/test_serve_imports.py — what `dbguard serve` keeps resident: a PostgreSQL-only proxy
# started the way the console script starts it does not import the MySQL side (sqlglot, the MySQL
# wire format, sessions and listener), psycopg (only the masking catalog's and the blast radius's
# side connections and a postgresql:// store use it), rich and the other commands' modules,
# cryptography, scramp or urllib.request; with a MySQL listener, the MySQL analyser is imported
# at start (so a missing sqlglot fails there, not at the first statement). The structure, not a
# number: bench/serve_memory.py measures the memory (docs/performance.md, "Memory").
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]

# Top-level packages and dbguard modules a PostgreSQL-only `serve` must not import.
NOT_FOR_POSTGRES_ONLY = (
    "sqlglot", "psycopg", "rich", "pygments", "cryptography", "scramp", "asn1crypto", "urllib.request",
    "importlib.metadata", "dbguard.sql.mysql", "dbguard.session.mysql", "dbguard.wire.mysql",
    "dbguard.runtime.mysql_listener", "dbguard.cli_policy", "dbguard.cli_journal", "dbguard.cli_approvals",
    "dbguard.demo", "dbguard.devdb",
)

# Starts every listener of the configuration as `dbguard serve` does (arguments through the
# console script's parser, then `runtime.server.serve` on its event loop), prints the imported
# modules once the listeners are up, and stops.
START_AND_LIST = """
import json, sys
from dbguard import cli
from dbguard.config import load_config
from dbguard.runtime.server import load_rules, run_event_loop, serve
args = cli.build_parser().parse_args(["serve", "-c", sys.argv[1]])
config = load_config(args.config)
policy = load_rules(config)
def ready(server):
    print(json.dumps(sorted(sys.modules)))
    server.request_stop()
run_event_loop(lambda: serve(config, policy, ready=ready))
"""


def _loaded(code: str, *args: str) -> set[str]:
    done = subprocess.run([sys.executable, "-c", code, *args], cwd=REPO_ROOT, capture_output=True, text=True,
                          timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    return set(json.loads(done.stdout.strip().splitlines()[-1]))


def _offenders(modules: set[str]) -> list[str]:
    return sorted(m for m in modules if any(m == name or m.startswith(name + ".") for name in NOT_FOR_POSTGRES_ONLY))


def _config(tmp_path: Path, *, journal: bool, mysql: bool = False) -> Path:
    lines = ["listeners:",
             "  - {name: app-pg, protocol: postgres, listen: '127.0.0.1:0',"
             " upstream: 'postgresql://svc:pw@127.0.0.1:1/app?sslmode=disable'}"]
    if mysql:
        lines.append("  - {name: app-my, protocol: mysql, listen: '127.0.0.1:0', upstream: 'mysql://svc:pw@127.0.0.1:1/app'}")
    lines += ["identities:", "  - {name: copilot, kind: agent, secret: copilot-secret, roles: [readers]}",
              f"rules: {REPO_ROOT / 'rules'}", f"store: sqlite:///{tmp_path / 'dbguard.db'}"]
    if not journal:
        lines.append("journal: {enabled: false}")
    path = tmp_path / "dbguard.yaml"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_importing_the_console_script_and_the_server_loads_nothing_heavy() -> None:
    modules = _loaded("import json, sys, dbguard.cli, dbguard.runtime.server; print(json.dumps(sorted(sys.modules)))")
    assert _offenders(modules) == []


@pytest.mark.parametrize("journal", [False, True], ids=["journal-off", "journal-on"])
def test_a_started_postgres_only_proxy_loads_nothing_heavy(tmp_path: Path, journal: bool) -> None:
    modules = _loaded(START_AND_LIST, str(_config(tmp_path, journal=journal)))
    assert "dbguard.runtime.pg_listener" in modules  # it did start
    assert ("dbguard.runtime.loop_journal" in modules) is journal
    assert _offenders(modules) == []


def test_a_mysql_listener_loads_the_mysql_analyser_at_start(tmp_path: Path) -> None:
    modules = _loaded(START_AND_LIST, str(_config(tmp_path, journal=False, mysql=True)))
    assert {"sqlglot", "dbguard.sql.mysql", "dbguard.runtime.mysql_listener", "cryptography"} <= modules
    assert "psycopg" not in modules
