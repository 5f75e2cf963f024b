# dbguard/journal/intent.py — owns reading the intent a client declares for a statement from a
# sqlcommenter-style comment (`SELECT … /*dbguard_intent='nightly%20report'*/`): the comment's
# key='value' pairs, values URL-encoded as sqlcommenter writes them. It only reads text; the
# session decides which text to pass (the statement as received) and the startup option
# `dbguard.intent` is read by the session itself.
from __future__ import annotations

import re
from typing import Final
from urllib.parse import unquote

__all__ = ["INTENT_KEYS", "MAX_INTENT_CHARS", "intent_from_comment"]

# Keys accepted as the intent, in order of preference.
INTENT_KEYS: Final = ("dbguard.intent", "dbguard_intent", "intent")
# An intent is a short sentence; longer values are cut (the statement text keeps everything).
MAX_INTENT_CHARS: Final = 500
# Only the tail of a statement is searched: sqlcommenter appends its comment at the end.
_TAIL_CHARS: Final = 4096

_TRAILING_COMMENT: Final = re.compile(r"/\*(?P<body>[^*]*(?:\*(?!/)[^*]*)*)\*/\s*;?\s*\Z")
_PAIR: Final = re.compile(r"\s*(?P<key>[A-Za-z0-9_.%-]+)\s*=\s*'(?P<value>(?:[^'\\]|\\.)*)'\s*(?:,|\Z)")


def intent_from_comment(sql: str) -> str | None:
    """The declared intent of a statement whose text ends with a sqlcommenter comment, or None."""
    match = _TRAILING_COMMENT.search(sql[-_TAIL_CHARS:])
    if match is None:
        return None
    pairs: dict[str, str] = {}
    body = match.group("body").strip()
    pos = 0
    while pos < len(body):
        pair = _PAIR.match(body, pos)
        if pair is None:
            return None  # not a sqlcommenter comment
        key = unquote(pair.group("key"))
        value = unquote(pair.group("value").replace("\\'", "'"))
        pairs.setdefault(key, value)
        pos = pair.end()
    for key in INTENT_KEYS:
        if pairs.get(key):
            return pairs[key][:MAX_INTENT_CHARS]
    return None
