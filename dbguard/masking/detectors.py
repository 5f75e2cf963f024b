"""Content detectors: PII and secrets found inside text values, whatever the column.

Owns: the detectors a mask's `detect:` list names (`email`, `credit_card`, `us_ssn`, `phone`,
`iban`, `secret`: exactly `policy.rules.Detector`), `compile_detectors(names)` giving a
`DetectorSet` with `find(text)` (spans, earliest and longest first, never overlapping) and
`redact(text, strategy)` (each span replaced, same total length per span). A cheap pre-check
returns at once for values that cannot hold anything (too short, no digit, no '@', no secret
prefix), and the digit detectors first look at the lengths of the value's digit runs (one
C-level scan): a card needs a run of 4 or of 13-19 digits, an SSN one of 3, 5 or 9, a phone a
'+' or one of 2-5, so long runs of other lengths (ids, sysbench's digit groups) cost one scan.
Must not: know column types or wire formats (`masking.strategies` keeps a masked value valid
for its column), or decide which columns are scanned (the sessions will).

Tuning: detectors are conservative, a backstop behind column masks. Card numbers need a known
issuer prefix and length, a valid Luhn check and consistent grouping; SSNs need the dashed form
(or an "SSN"/"social security" label just before); phones need a `+` international form or a
separated national form; IBANs a known country length and mod-97 check. See docs/masking.md.
"""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import hmac
import json
import re
from collections.abc import Callable, Iterable, Iterator
from typing import Final, NamedTuple

from dbguard.masking.strategies import mask_partial
from dbguard.policy.rules import Detector, MaskStrategy

__all__ = ["DetectorSet", "Finding", "compile_detectors", "iban_valid", "luhn_valid"]


class Finding(NamedTuple):
    detector: Detector
    start: int
    end: int


Span = tuple[int, int]

# ---------------------------------------------------------------------------------------------
# email

_EMAIL_RE: Final = re.compile(
    r"(?<![A-Za-z0-9._%+-])[A-Za-z0-9._%+-]{1,64}@"
    r"(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z]{2,63}(?![A-Za-z0-9-])"
)


def _emails(text: str) -> Iterator[Span]:
    for m in _EMAIL_RE.finditer(text):
        yield m.span()


# ---------------------------------------------------------------------------------------------
# payment cards

_DIGIT_RUN_RE: Final = re.compile(r"(?<!\d)\d(?:[ -]?\d)*")
_GROUP_RE: Final = re.compile(r"\d+")


def luhn_valid(digits: str) -> bool:
    total = 0
    for i, c in enumerate(reversed(digits)):
        d = ord(c) - 48
        if i & 1:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return total % 10 == 0


def _issuer_length_ok(d: str) -> bool:
    """A known issuer prefix (IIN) with one of its lengths."""
    n, p2, p3, p4 = len(d), int(d[:2]), int(d[:3]), int(d[:4])
    if d[0] == "4":  # Visa
        return n in (13, 16, 19)
    if 51 <= p2 <= 55 or 2221 <= p4 <= 2720:  # Mastercard
        return n == 16
    if p2 in (34, 37):  # American Express
        return n == 15
    if 2200 <= p4 <= 2204:  # Mir
        return 16 <= n <= 19
    if 3528 <= p4 <= 3589:  # JCB
        return 16 <= n <= 19
    if 300 <= p3 <= 305 or p2 in (36, 38, 39):  # Diners Club
        return 14 <= n <= 19
    if d[0] == "6" or p2 == 50 or 56 <= p2 <= 59:  # Discover, UnionPay, Maestro, RuPay...
        return 13 <= n <= 19
    return False


def _card_ok(digits: str) -> bool:
    return 13 <= len(digits) <= 19 and _issuer_length_ok(digits) and luhn_valid(digits)


def _cards(text: str) -> Iterator[Span]:
    """Runs of digits with single spaces or dashes; in each run, windows of whole groups: one
    group of 13-19 digits, or a first group of 4 then groups of 3-6 with one kind of separator
    (4-4-4-4, 4-6-5, 4-4-4-4-3). Of the windows starting at a group, the longest valid wins."""
    for run in _DIGIT_RUN_RE.finditer(text):
        start, end = run.span()
        if end - start < 13:
            continue
        groups = [(start + m.start(), start + m.end()) for m in _GROUP_RE.finditer(run.group())]
        n = len(groups)
        i = 0
        while i < n:
            a, b = groups[i]
            found = -1
            if b - a == 4 and i + 1 < n:
                sep = text[b]
                last, digits = i, 4
                while last + 1 < n:
                    na, nb = groups[last + 1]
                    if text[groups[last][1]] != sep or not 3 <= nb - na <= 6 or digits + nb - na > 19:
                        break
                    last += 1
                    digits += nb - na
                for j in range(last, i, -1):
                    if _card_ok("".join(text[x:y] for x, y in groups[i : j + 1])):
                        found = j
                        break
            if found < 0 and 13 <= b - a <= 19 and _card_ok(text[a:b]):
                found = i
            if found < 0:
                i += 1
                continue
            yield a, groups[found][1]
            i = found + 1


# ---------------------------------------------------------------------------------------------
# US social security numbers

_SSN_DASHED_RE: Final = re.compile(r"(?<![\w-])(\d{3})-(\d{2})-(\d{4})(?![\w-])")
_SSN_LABELLED_RE: Final = re.compile(
    r"(?i)\b(?:ssn|ss\s?#|social\s+security(?:\s+(?:number|no\.?|num\.?|#))?)\s*(?:is\s+)?[:#=]?\s*"
    r"(?<![\w-])(\d{3})[ -]?(\d{2})[ -]?(\d{4})(?![\w-])"
)


def _ssn_parts_ok(area: str, group: str, serial: str) -> bool:
    return area != "000" and area != "666" and area[0] != "9" and group != "00" and serial != "0000"


def _ssns(text: str) -> Iterator[Span]:
    for pattern in (_SSN_DASHED_RE, _SSN_LABELLED_RE):
        for m in pattern.finditer(text):
            if _ssn_parts_ok(m.group(1), m.group(2), m.group(3)):
                yield m.start(1), m.end(3)


# ---------------------------------------------------------------------------------------------
# phone numbers

# International: '+', a country code, 8 to 15 digits in all, single separators (space . -) and
# at most one parenthesised area code.
_PHONE_INTL_RE: Final = re.compile(r"(?<![\w+])\+[1-9](?:[ .-]?\(?\d\)?){7,18}(?![\w-]|\.\d)")
_PHONE_INTL_SHAPE_RE: Final = re.compile(r"\+\d{1,3}(?:[ .-]?(?:\(\d{1,5}\)|\d{1,6})){1,7}")
# North American: (NXX) NXX-XXXX, NXX-NXX-XXXX or NXX.NXX.XXXX (the same separator twice).
_PHONE_NANP_RE: Final = re.compile(
    r"(?<![\w#/.+-])(?:\([2-9]\d\d\) ?[2-9]\d\d[-.]|[2-9]\d\d([-.])[2-9]\d\d\1)\d{4}(?![\w-]|\.\d)"
)
# National with a trunk 0 and space-separated groups: 020 7946 0958, 01 23 45 67 89, 030 1234567.
_PHONE_TRUNK_RE: Final = re.compile(r"(?<![\w+#/.-])0[1-9]\d{0,3}(?: \d{2,8}){1,4}(?![\w-]|\.\d)")


def _digit_count(s: str) -> int:
    return sum(c.isdigit() for c in s)


def _phones(text: str) -> Iterator[Span]:
    for m in _PHONE_INTL_RE.finditer(text):
        s = m.group()
        if 8 <= _digit_count(s) <= 15 and _PHONE_INTL_SHAPE_RE.fullmatch(s) and s.count("(") <= 1:
            yield m.span()
    for m in _PHONE_NANP_RE.finditer(text):
        yield m.span()
    for m in _PHONE_TRUNK_RE.finditer(text):
        if 10 <= _digit_count(m.group()) <= 11:
            yield m.span()


# ---------------------------------------------------------------------------------------------
# IBAN

# Lengths from the SWIFT IBAN registry.
_IBAN_LENGTHS: Final = {
    "AD": 24, "AE": 23, "AL": 28, "AT": 20, "AZ": 28, "BA": 20, "BE": 16, "BG": 22, "BH": 22, "BR": 29,
    "BY": 28, "CH": 21, "CR": 22, "CY": 28, "CZ": 24, "DE": 22, "DK": 18, "DO": 28, "EE": 20, "EG": 29,
    "ES": 24, "FI": 18, "FO": 18, "FR": 27, "GB": 22, "GE": 22, "GI": 23, "GL": 18, "GR": 27, "GT": 28,
    "HR": 21, "HU": 28, "IE": 22, "IL": 23, "IQ": 23, "IS": 26, "IT": 27, "JO": 30, "KW": 30, "KZ": 20,
    "LB": 28, "LC": 32, "LI": 21, "LT": 20, "LU": 20, "LV": 21, "LY": 25, "MC": 27, "MD": 24, "ME": 22,
    "MK": 19, "MR": 27, "MT": 31, "MU": 30, "NL": 18, "NO": 15, "PK": 24, "PL": 28, "PS": 29, "PT": 25,
    "QA": 29, "RO": 24, "RS": 22, "SA": 24, "SC": 31, "SE": 24, "SI": 19, "SK": 24, "SM": 27, "ST": 25,
    "SV": 28, "TL": 23, "TN": 24, "TR": 26, "UA": 29, "VA": 22, "VG": 24, "XK": 20,
}  # fmt: skip
_IBAN_START_RE: Final = re.compile(r"(?<![A-Za-z0-9])([A-Z]{2})\d\d(?= ?[A-Z0-9])")


def iban_valid(iban: str) -> bool:
    """Known country, its length, and the ISO 7064 mod-97 check (no spaces in `iban`)."""
    if _IBAN_LENGTHS.get(iban[:2]) != len(iban) or not iban.isascii() or not iban.isalnum():
        return False
    rearranged = iban[4:] + iban[:4]
    return int("".join(str(int(c, 36)) for c in rearranged)) % 97 == 1


def _ibans(text: str) -> Iterator[Span]:
    pos = 0
    while True:
        m = _IBAN_START_RE.search(text, pos)
        if m is None:
            return
        want = _IBAN_LENGTHS.get(m.group(1))
        end = _iban_end(text, m.start(), want) if want else None
        if end is not None and iban_valid(text[m.start() : end].replace(" ", "")):
            yield m.start(), end
            pos = end
        else:
            pos = m.start() + 1


def _iban_end(text: str, start: int, want: int) -> int | None:
    """Where `want` alphanumerics (single spaces allowed between them) starting at `start` end,
    if the IBAN stops there (no letter or digit right after)."""
    i, count, n = start, 0, len(text)
    while i < n and count < want:
        c = text[i]
        if c.isascii() and (c.isdigit() or c.isupper()):
            count += 1
            i += 1
        elif c == " " and count >= 4 and i + 1 < n and text[i + 1] != " ":
            i += 1
        else:
            return None
    if count < want or (i < n and text[i].isalnum()):
        return None
    return i


# ---------------------------------------------------------------------------------------------
# secrets

_SECRET_RE: Final = re.compile(
    r"(?P<aws>(?<![A-Za-z0-9/+=])(?:AKIA|ASIA|ABIA|ACCA)[A-Z0-9]{16}(?![A-Za-z0-9/+=]))"
    r"|(?P<github>(?<![A-Za-z0-9_])(?:gh[pousr]_[A-Za-z0-9]{36,251}|github_pat_[A-Za-z0-9_]{22,244})(?![A-Za-z0-9_]))"
    r"|(?P<slack>(?<![A-Za-z0-9-])xox[abposre]-[A-Za-z0-9-]{10,250}(?![A-Za-z0-9-]))"
    r"|(?P<google>(?<![A-Za-z0-9_-])AIza[0-9A-Za-z_-]{35}(?![A-Za-z0-9_-]))"
    r"|(?P<jwt>(?<![A-Za-z0-9_-])eyJ[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]{2,}\.[A-Za-z0-9_-]*)"
    r"|(?P<pem>-----BEGIN (?:[A-Z0-9]+ )*PRIVATE KEY-----"
    r"(?:.*?-----END (?:[A-Z0-9]+ )*PRIVATE KEY-----|.*\Z))",
    re.DOTALL,
)
_SECRET_HINT_RE: Final = re.compile(r"AKIA|ASIA|ABIA|ACCA|gh[pousr]_|github_pat_|xox|AIza|eyJ|-----BEGIN")


def _jwt_header_ok(token: str) -> bool:
    header = token.split(".", 1)[0]
    try:
        decoded = json.loads(base64.urlsafe_b64decode(header + "=" * (-len(header) % 4)))
    except (binascii.Error, ValueError):
        return False
    return isinstance(decoded, dict) and ("alg" in decoded or "typ" in decoded)


def _secrets(text: str) -> Iterator[Span]:
    for m in _SECRET_RE.finditer(text):
        if m.lastgroup == "jwt" and not _jwt_header_ok(m.group()):
            continue
        yield m.span()


# ---------------------------------------------------------------------------------------------
# The set


# What each digit detector needs among the lengths of a value's maximal digit runs (`\d+`, the
# same Unicode digits its patterns read), worked out from its patterns: a card's window starts
# with a group of exactly 4 or is one group of 13-19; an SSN's first group stands alone
# (`(?<![\w-])`) and is 3 (3-2-4, 3-6), 5 (5-4) or 9 digits; a phone is international ('+')
# or starts with a group of 3 (North American) or a trunk group of 2-5. A superset of what the
# detector can find: tests/unit/test_masking_detectors.py checks it against the bare patterns.
RunLengths = frozenset[int]
# ASCII digits to 'd', every other byte to a space: the runs are then what `split()` gives.
_DIGITS_ONLY: Final = bytes(0x64 if 0x30 <= b <= 0x39 else 0x20 for b in range(256))


def run_lengths(text: str) -> RunLengths:
    """The lengths of `text`'s maximal runs of `\\d` (empty: no digit). ASCII text (where `\\d`
    is 0-9) takes a translate and a split, both in C: about 3x cheaper than the regex."""
    if text.isascii():
        return frozenset(map(len, text.encode("ascii").translate(_DIGITS_ONLY).split()))
    return frozenset(map(len, _GROUP_RE.findall(text)))


_CARD_RUNS: Final = frozenset({4, *range(13, 20)})
_SSN_RUNS: Final = frozenset({3, 5, 9})
_PHONE_RUNS: Final = frozenset(range(2, 6))


def _card_runs(lengths: RunLengths, _text: str) -> bool:
    return not _CARD_RUNS.isdisjoint(lengths)


def _ssn_runs(lengths: RunLengths, _text: str) -> bool:
    return not _SSN_RUNS.isdisjoint(lengths)


def _phone_runs(lengths: RunLengths, text: str) -> bool:
    return "+" in text or not _PHONE_RUNS.isdisjoint(lengths)


class _Spec(NamedTuple):
    find: Callable[[str], Iterator[Span]]
    min_len: int
    trigger: str  # "digit", "@" or "secret": what a value must contain for the detector to run
    runs: Callable[[RunLengths, str], bool] | None = None  # the digit-run check, if it has one


_SPECS: Final[dict[Detector, _Spec]] = {
    Detector.EMAIL: _Spec(_emails, 6, "@"),
    Detector.CREDIT_CARD: _Spec(_cards, 13, "digit", _card_runs),
    Detector.US_SSN: _Spec(_ssns, 9, "digit", _ssn_runs),
    Detector.PHONE: _Spec(_phones, 8, "digit", _phone_runs),
    Detector.IBAN: _Spec(_ibans, 15, "digit"),
    Detector.SECRET: _Spec(_secrets, 15, "secret"),
}


class DetectorSet:
    """Detectors compiled from a mask's `detect:` list. Thread-safe and stateless."""

    __slots__ = ("_specs", "detectors", "min_len")

    def __init__(self, names: Iterable[Detector | str]) -> None:
        chosen: list[Detector] = []
        for name in names:
            try:
                det = Detector(name)
            except ValueError:
                known = ", ".join(d.value for d in Detector)
                raise ValueError(f"unknown detector {name!r} (known: {known})") from None
            if det not in chosen:
                chosen.append(det)
        self.detectors: tuple[Detector, ...] = tuple(chosen)
        self._specs = tuple((d, _SPECS[d]) for d in chosen)
        self.min_len = min((s.min_len for _, s in self._specs), default=0)

    def could_match(self, text: str) -> bool:
        """The pre-check: False means `find` is certain to find nothing. It is a superset for
        joined texts too: False for `"\\n".join(texts)` means False for each of them (a
        detector's triggers are lengths, characters and digit runs, which joining can only add
        to), so one call can clear a batch of values."""
        return bool(self._candidates(text))

    def _candidates(self, text: str) -> list[tuple[Detector, _Spec]]:
        """The detectors whose pre-checks `text` passes (the only ones `find` runs). A list,
        not a generator: `could_match` runs per batch of rows, and the checks are cheaper than
        a generator's frames."""
        size = len(text)
        passed: list[tuple[Detector, _Spec]] = []
        if size < self.min_len:
            return passed
        lengths: RunLengths | None = None
        for det, spec in self._specs:
            if size < spec.min_len:
                continue
            trigger = spec.trigger
            if trigger == "digit":
                if lengths is None:
                    lengths = run_lengths(text)
                if not lengths or (spec.runs is not None and not spec.runs(lengths, text)):
                    continue
            elif trigger == "@":
                if "@" not in text:
                    continue
            elif not _SECRET_HINT_RE.search(text):
                continue
            passed.append((det, spec))
        return passed

    def find(self, text: str) -> list[Finding]:
        """Every detected span, in order, never overlapping (of overlapping finds, the one that
        starts first wins, then the longest)."""
        found: list[Finding] = []
        for det, spec in self._candidates(text):
            found.extend(Finding(det, a, b) for a, b in spec.find(text))
        if len(found) < 2:
            return found
        found.sort(key=lambda f: (f.start, f.start - f.end))
        kept: list[Finding] = []
        end = -1
        for f in found:
            if f.start >= end:
                kept.append(f)
                end = f.end
        return kept

    def redact(self, text: str, strategy: MaskStrategy, *, key: bytes = b"") -> tuple[str, int]:
        """`text` with every detected span replaced, and how many were. Each replacement is as
        long as what it replaces: `full` and `null` give '*'s (the caller makes the whole value
        NULL for `null` when the count is not 0), `partial` keeps the span's last four
        characters, `email` keeps an address's '@domain', `hash` gives the start of the span's
        HMAC-SHA256 in hex (needs `key`)."""
        if strategy == MaskStrategy.HASH and not key:
            raise ValueError("the hash strategy needs a non-empty key")
        findings = self.find(text)
        if not findings:
            return text, 0
        strategy = MaskStrategy(strategy)
        replace = _replacer(strategy, key)
        parts: list[str] = []
        pos = 0
        for f in findings:
            parts.append(text[pos : f.start])
            parts.append(replace(f.detector, text[f.start : f.end]))
            pos = f.end
        parts.append(text[pos:])
        return "".join(parts), len(findings)


    def redact_json(self, doc: str, strategy: MaskStrategy, *, key: bytes = b"") -> tuple[str, int]:
        """`redact` for a JSON document, keeping it valid JSON: object keys and string values are
        redacted in place; a number holding a find becomes a string. The document is re-rendered
        (as jsonb prints it) only when something was found; text that is not JSON is redacted as
        plain text."""
        if not self.could_match(doc):
            return doc, 0
        try:
            parsed = json.loads(doc)
        except ValueError:
            return self.redact(doc, strategy, key=key)
        count = 0

        def walk(node: object) -> object:
            nonlocal count
            if isinstance(node, str):
                text, n = self.redact(node, strategy, key=key)
                count += n
                return text
            if isinstance(node, dict):
                return {walk(k): walk(v) for k, v in node.items()}
            if isinstance(node, list):
                return [walk(v) for v in node]
            if isinstance(node, int | float) and not isinstance(node, bool):
                text, n = self.redact(str(node), strategy, key=key)
                if n:
                    count += n
                    return text
            return node

        result = walk(parsed)
        return (json.dumps(result), count) if count else (doc, 0)


def _replacer(strategy: MaskStrategy, key: bytes) -> Callable[[Detector, str], str]:
    if strategy is MaskStrategy.PARTIAL:
        return lambda _det, span: mask_partial(span)
    if strategy is MaskStrategy.EMAIL:

        def email(det: Detector, span: str) -> str:
            if det is Detector.EMAIL:
                local, _, domain = span.rpartition("@")
                return "*" * len(local) + "@" + domain
            return "*" * len(span)

        return email
    if strategy is MaskStrategy.HASH:
        base = hmac.new(key, digestmod=hashlib.sha256)

        def hashed(_det: Detector, span: str) -> str:
            h = base.copy()
            h.update(span.encode("utf-8"))
            hexed = h.hexdigest()
            return (hexed * (len(span) // len(hexed) + 1))[: len(span)]

        return hashed
    return lambda _det, span: "*" * len(span)


@functools.lru_cache(maxsize=256)
def _compile(names: tuple[str, ...]) -> DetectorSet:
    return DetectorSet(names)


def compile_detectors(names: Iterable[Detector | str]) -> DetectorSet:
    """The detector set for a mask's `detect:` list (cached by names). ValueError for a name
    that is not a detector."""
    return _compile(tuple(str(n) for n in names))
