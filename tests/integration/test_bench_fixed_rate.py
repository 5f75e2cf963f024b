"""bench.fixed_rate stays runnable and honest: a run at a rate the proxy keeps up with reports the
loop's and the appender's CPU per transaction, `--pause-appender` leaves the appender nothing
(its events wait in the segment), and a run below the offered rate is flagged, not averaged in.
A smoke run on a tiny scale; the numbers themselves are not judged."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench import fixed_rate
from bench.fixed_rate import Run, summarise


def _run(target: str, tps: float, loop: float, repeat: int = 0) -> Run:
    return Run("select-simple", target, repeat, 1000, tps, 1000, loop, 2.0, False)


def test_saturated_runs_are_flagged_and_left_out_of_the_medians() -> None:
    runs = [_run("dbguard", 1000, 50.0), _run("dbguard", 990, 52.0, 1), _run("dbguard", 700, 10.0, 2),
            _run("relay", 600, 30.0), _run("relay", 650, 31.0, 1)]
    rows = {row.target: row for row in summarise(runs)}
    assert rows["dbguard"].saturated_runs == 1
    assert rows["dbguard"].loop_us_per_tx == 51.0, "the saturated run is not in the median"
    assert rows["dbguard"].total_us_per_tx == 53.0
    assert rows["relay"].saturated_runs == 2
    assert rows["relay"].loop_us_per_tx == 30.5, "with no run that kept up, all of them (flagged)"


def test_bad_arguments_are_refused() -> None:
    for argv in (["--rate", "0"], ["--duration", "0"], ["--target", "pgbouncer"]):
        with pytest.raises(SystemExit):
            fixed_rate.parse_args(argv)


@pytest.mark.parametrize("pause", [False, True], ids=["appender-running", "appender-paused"])
def test_the_loop_and_the_appender_are_measured_apart(tmp_path: Path, pause: bool) -> None:
    out = tmp_path / "run.json"
    assert fixed_rate.main(["--engine", "postgres", "--only", "select-simple", "--target", "dbguard",
                            "--rate", "1000", "--duration", "3", "--repeats", "1", "--scale", "1",
                            *(["--pause-appender"] if pause else []), "--out", str(out)]) == 0
    document = json.loads(out.read_text())
    (run,) = document["runs"]
    assert run["target"] == "dbguard"
    assert run["appender_paused"] == pause
    assert run["transactions"] > 0
    assert run["loop_us_per_tx"] > 0
    if pause:
        assert run["appender_us_per_tx"] == 0.0, "a stopped appender spends nothing"
    else:
        assert run["appender_us_per_tx"] > 0, "the appender's CPU is counted"
    assert document["summary"][0]["offered_tps"] == 1000
