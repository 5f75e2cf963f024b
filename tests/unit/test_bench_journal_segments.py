"""bench.journal_segments stays runnable: it appends every record it wrote, and reads its numbers
from the code the proxy runs (a smoke run on a few hundred statements; the numbers are not judged)."""

from __future__ import annotations

import json
from pathlib import Path

from bench import journal_segments


def test_the_benchmark_appends_every_event_it_measures(tmp_path: Path) -> None:
    out = tmp_path / "run.json"
    assert journal_segments.main(["--statements", "300", "--out", str(out)]) == 0
    results = json.loads(out.read_text())["results"]
    assert [r["part"] for r in results] == [
        "loop: a simple query", "loop: a prepared execution (one parameter)",
        "appender: sqlite, SHA-256 chain", "appender: sqlite, HMAC-SHA256 chain"]
    assert [r["count"] for r in results] == [300, 300, 600, 600]  # a statement and its outcome each
    assert all(r["cpu_us_each"] > 0 for r in results)
