"""`dbguard demo --walkthrough`, the README's "run it" command, end to end.

Covers: the demo starts its own throwaway PostgreSQL and proxy with the sample rules/, the
scripted agent session reads data, and the refusals it shows come from the rules (a DROP,
a DELETE hidden in a CTE, a server file read, a write that needs approval) while a scratch
write runs; the session is then replayed from the journal; it exits 0 and leaves nothing running.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.integration.harness import REPO_ROOT

pytestmark = pytest.mark.integration


def test_walkthrough_shows_allow_hold_and_block() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "dbguard", "demo", "--walkthrough", "--port", "0"],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=180, check=False,
        env={**os.environ, "COLUMNS": "200"},
    )
    out = result.stdout
    assert result.returncode == 0, out + result.stderr
    assert "alice.anderson@example.com" not in out.lower()  # masked by the sample rules' pii-email
    assert "****@example.com" in out
    assert "ALICE.ANDERSON" not in out  # upper(email) is masked too (lineage)
    assert "blocked by rule no-drop-truncate" in out
    assert "blocked by rule no-unbounded-writes" in out
    assert "blocked by rule agents-no-server-access" in out
    assert "NOTICE: dbguard: held for approval ap_" in out  # the agent's delete waits for a DBA…
    assert "dbguard approvals approve ap_" in out  # …who approves it, and it runs
    assert out.count("DELETE 1") == 2  # that one, and the scratch table, which is the agent's to change
    # The same session, replayed from the journal the proxy wrote before each statement ran.
    assert "the journal: the same session, as recorded" in out
    assert "[BLOCK no-drop-truncate] DROP TABLE orders" in out
    assert "session end" in out
