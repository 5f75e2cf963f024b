# tests/unit/test_journal_intent.py — intents declared in sqlcommenter-style trailing comments.
from __future__ import annotations

import pytest

from dbguard.journal.intent import intent_from_comment


@pytest.mark.parametrize(
    ("sql", "intent"),
    [
        ("SELECT 1 /*dbguard_intent='nightly%20report'*/", "nightly report"),
        ("SELECT 1 /*action='index',dbguard.intent='clean up',framework='django'*/;", "clean up"),
        ("DELETE FROM t WHERE id = 1 /*intent='fix%20ticket%20%2342'*/ ", "fix ticket #42"),
        ("SELECT 1 /*intent='it\\'s fine'*/", "it's fine"),
        ("SELECT 1 /*action='index'*/", None),
        ("SELECT 1 /* a plain comment */", None),
        ("SELECT '/*intent=''x''*/' FROM t", None),
        ("SELECT 1", None),
        ("/*intent='leading'*/ SELECT 1", None),
    ],
)
def test_intent_from_comment(sql: str, intent: str | None) -> None:
    assert intent_from_comment(sql) == intent


def test_long_intent_is_cut() -> None:
    found = intent_from_comment("SELECT 1 /*intent='" + "x" * 2000 + "'*/")
    assert found == "x" * 500
