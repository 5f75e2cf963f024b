# tests/unit/test_journal_config.py — the `journal:` section of dbguard.yaml: defaults, values,
# and errors naming file, line and key (with did-you-mean), secrets never printed.
from __future__ import annotations

from pathlib import Path

import pytest

from dbguard.config import ConfigError, JournalConfig, OnStoreFailure, SegmentWrites, parse_config

BASE = (
    "listeners:\n  - name: app-pg\n    protocol: postgres\n    listen: 127.0.0.1:0\n"
    "    upstream: postgresql://svc:pw@127.0.0.1:5432/app\n"
)


def parse(extra: str, env: dict[str, str] | None = None) -> JournalConfig:
    return parse_config(BASE + extra, Path("dbguard.yaml"), env or {}).journal


def error(extra: str, env: dict[str, str] | None = None) -> str:
    with pytest.raises(ConfigError) as info:
        parse(extra, env)
    return str(info.value)


def test_defaults() -> None:
    journal = parse("")
    assert journal == JournalConfig()
    assert journal.hmac_key is None
    assert not journal.redact_parameters
    assert journal.on_store_failure is OnStoreFailure.REFUSE
    assert journal.segment_writes is SegmentWrites.AUTO


def test_segment_writes() -> None:
    assert parse("journal:\n  segment_writes: write\n").segment_writes is SegmentWrites.WRITE
    assert parse("journal:\n  segment_writes: auto\n").segment_writes is SegmentWrites.AUTO


def test_values() -> None:
    journal = parse(
        "journal:\n  hmac_key: ${KEY}\n  redact_parameters: true\n  on_store_failure: allow\n"
        "  queue_size: 500\n  max_batch: 50\n",
        {"KEY": "k" * 32},
    )
    assert journal.hmac_key is not None
    assert journal.hmac_key.reveal() == "k" * 32
    assert journal.redact_parameters
    assert journal.on_store_failure is OnStoreFailure.ALLOW
    assert (journal.queue_size, journal.max_batch) == (500, 50)
    config = parse_config(BASE + "journal:\n  hmac_key: ${KEY}\n", Path("dbguard.yaml"), {"KEY": "k" * 32})
    assert journal.hmac_key in config.secrets()
    assert "k" * 32 not in repr(config)


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        ("journal:\n  hmac_kye: x\n", "dbguard.yaml:7: journal.hmac_kye: unknown key (did you mean 'hmac_key'?)"),
        ("journal:\n  hmac_key: short\n", "dbguard.yaml:7: journal.hmac_key: too short"),
        ("journal:\n  on_store_failure: ignore\n",
         "dbguard.yaml:7: journal.on_store_failure: expected one of refuse, allow, got 'ignore'"),
        ("journal:\n  segment_writes: mmap\n",
         "dbguard.yaml:7: journal.segment_writes: expected one of auto, write, got 'mmap'"),
        ("journal:\n  redact_parameters: maybe\n", "dbguard.yaml:7: journal.redact_parameters: expected true or false"),
        ("journal:\n  queue_size: 0\n", "dbguard.yaml:7: journal.queue_size: must be at least 1"),
        ("journal: yes\n", "dbguard.yaml:6: journal: expected a mapping"),
        ("journal:\n  hmac_key: ${NOPE}\n", "dbguard.yaml:7: journal.hmac_key:"),
    ],
)
def test_errors_name_the_place(extra: str, expected: str) -> None:
    assert error(extra).startswith(expected)


def test_key_is_never_printed() -> None:
    message = error("journal:\n  hmac_key: ${KEY}\n", {"KEY": "tiny-secret"})
    assert "tiny-secret" not in message
