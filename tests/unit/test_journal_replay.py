# tests/unit/test_journal_replay.py — replay pacing without real time: the recorded gaps scaled
# by the speed go to the sleep function, speed 0 never sleeps, --max-wait caps a gap, and
# stepping waits for the reader before each statement.
from __future__ import annotations

from dbguard.journal import ChainHasher, StoredEvent
from dbguard.journal.chain import GENESIS_HASH
from dbguard.journal.events import canonical_bytes
from dbguard.journal.replay import ReplayLine, replay, replay_lines
from tests.unit.journal_helpers import session_events


def stored() -> list[StoredEvent]:
    out = []
    prev = GENESIS_HASH
    for seq, event in enumerate(session_events(statements=2), 1):
        payload = canonical_bytes(event)
        digest = ChainHasher().link(prev, seq, payload)
        out.append(StoredEvent(seq, event.time_us, event.kind.value, event.session_id, payload, prev, digest))
        prev = digest
    return out


def play(speed: float, step: bool = False, max_wait: float | None = None) -> tuple[list[str], list[float], int]:
    shown: list[str] = []
    sleeps: list[float] = []
    enters: list[int] = []

    def emit(line: ReplayLine) -> None:
        shown.append(line.text)

    replay(replay_lines(stored()), emit, speed=speed, step=step, sleep=sleeps.append,
           wait_enter=lambda: enters.append(len(shown)), max_wait=max_wait)
    return shown, sleeps, len(enters)


def test_lines_show_decisions_and_outcomes() -> None:
    lines = replay_lines(stored())
    assert [line.kind for line in lines] == ["session_start", "statement", "outcome", "statement", "outcome",
                                            "session_end"]
    assert lines[1].text == "#1 [ALLOW] SELECT 1 FROM orders"
    assert lines[2].text == "  #1 → 1 row in 0.400 ms"
    assert [line.offset_us for line in lines] == [0, 1000, 1500, 2500, 3000, 4000]


def test_speed_scales_the_recorded_gaps() -> None:
    _, sleeps, _ = play(speed=2)
    assert sleeps == [0.0005, 0.00025, 0.0005, 0.00025, 0.0005]
    _, sleeps, _ = play(speed=0.5, max_wait=0.001)
    assert sleeps == [0.001, 0.001, 0.001, 0.001, 0.001]


def test_speed_zero_never_waits() -> None:
    shown, sleeps, enters = play(speed=0)
    assert len(shown) == 6
    assert sleeps == []
    assert enters == 0


def test_step_waits_before_each_statement() -> None:
    _, sleeps, enters = play(speed=1, step=True)
    assert enters == 2
    assert sleeps == []
