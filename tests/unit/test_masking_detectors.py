# tests/unit/test_masking_detectors.py — content detectors: true positives (test card numbers
# of every major issuer, valid IBANs, dashed SSNs, phones in international and national forms,
# real-format secrets) are found; look-alikes (ids, order and invoice numbers, timestamps, dates,
# bad Luhn or mod-97 checksums, invalid SSN ranges) are not; redaction removes every detected
# value and keeps the text's length. Pure.
from __future__ import annotations

import base64
import json
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dbguard.masking import DetectorSet, compile_detectors
from dbguard.masking.detectors import _GROUP_RE, _SPECS, iban_valid, luhn_valid, run_lengths
from dbguard.policy.rules import Detector, MaskStrategy, parse_policy_text

KEY = b"k" * 32
ALL = compile_detectors(list(Detector))


def found(text: str, detectors: DetectorSet = ALL) -> list[tuple[str, str]]:
    return [(f.detector.value, text[f.start : f.end]) for f in detectors.find(text)]


def only(name: str) -> DetectorSet:
    return compile_detectors([name])


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


JWT = ".".join(
    [
        b64url(json.dumps({"alg": "HS256", "typ": "JWT"}).encode()),
        b64url(json.dumps({"sub": "1234567890", "name": "Jane", "iat": 1516239022}).encode()),
        "SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c",
    ]
)
PEM = (
    "-----BEGIN RSA PRIVATE KEY-----\n"
    "MIIEowIBAAKCAQEAu1SU1LfVLPHCozMxH2Mo4lgOEePzNm0tRgeLezV6ffAt0gun\n"
    "VTLw7onLRnrq0/IzW7yWR7QkrmBL7jTKEn5u+qKhbwKfBstIs+bMY2Zkp18gnTxK\n"
    "-----END RSA PRIVATE KEY-----"
)
SECRETS = [
    "AKIAIOSFODNN7EXAMPLE",
    "ASIAY34FZKBOKMUTVV7A",
    "ghp_" + "A1b2C3d4E5f6G7h8I9j0K1l2M3n4O5p6Q7r8",
    "gho_" + "16C7e42F292c6912E7710c838347Ae178B4a",
    "github_pat_11ABCDEFG0123456789abc_" + "a" * 59,
    "xoxb-123456789012-1234567890123-AbCdEfGhIjKlMnOpQrStUvWx",
    "xoxp-2233445566-7788990011-1122334455-abcdef0123456789abcdef0123456789",
    "AIzaSyA-1234567890abcdefghijklmnopqrstu",
    JWT,
    PEM,
    "-----BEGIN PRIVATE KEY-----\nMIIBVQIBADANBgkqhkiG9w0BAQEFAASCAT8wggE7AgEAAkEAq7BFUpkGp3+LQmlQ\n"
    "-----END PRIVATE KEY-----",
    "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQ\n(truncated",
]

CARDS = [
    "4111111111111111",  # Visa
    "4012888888881881",
    "4222222222222",  # Visa, 13 digits
    "4111 1111 1111 1111",
    "4111-1111-1111-1111",
    "5555555555554444",  # Mastercard
    "5105 1051 0510 5100",
    "2223003122003222",  # Mastercard 2-series
    "378282246310005",  # American Express
    "3782 822463 10005",
    "371449635398431",
    "6011111111111117",  # Discover
    "6011 0009 9013 9424",
    "3530111333300000",  # JCB
    "30569309025904",  # Diners Club, 14 digits
    "6200000000000005",  # UnionPay
]
IBANS = [
    "DE89 3704 0044 0532 0130 00",
    "DE89370400440532013000",
    "GB82 WEST 1234 5698 7654 32",
    "FR14 2004 1010 0505 0001 3M02 606",
    "NL91ABNA0417164300",
    "CH9300762011623852957",
    "BE68539007547034",
    "NO9386011117947",
]
SSNS = ["123-45-6789", "078-05-1120", "219-09-9999", "772-01-0001"]
PHONES = [
    "+1 415 555 2671",
    "+14155552671",
    "+44 20 7946 0958",
    "+33 1 23 45 67 89",
    "+49 (30) 1234567",
    "+81-3-1234-5678",
    "(415) 555-2671",
    "415-555-2671",
    "415.555.2671",
    "020 7946 0958",
    "01 23 45 67 89",
    "030 1234567",
]


# ---------------------------------------------------------------------------------------------
# true positives


@pytest.mark.parametrize("card", CARDS)
def test_cards_are_found(card: str) -> None:
    text = f"paid with {card}, thanks"
    assert found(text, only("credit_card")) == [("credit_card", card)]
    assert luhn_valid("".join(c for c in card if c.isdigit()))


@pytest.mark.parametrize("iban", IBANS)
def test_ibans_are_found(iban: str) -> None:
    text = f"IBAN: {iban} (BIC COBADEFFXXX)"
    assert found(text, only("iban")) == [("iban", iban)]


@pytest.mark.parametrize("ssn", SSNS)
def test_dashed_ssns_are_found(ssn: str) -> None:
    assert found(f"employee {ssn} on file", only("us_ssn")) == [("us_ssn", ssn)]


@pytest.mark.parametrize(
    ("text", "ssn"),
    [
        ("SSN: 123456789", "123456789"),
        ("ssn=123 45 6789", "123 45 6789"),
        ("Social Security Number 219099999", "219099999"),
        ("SS# 078051120", "078051120"),
    ],
)
def test_undashed_ssns_are_found_only_with_a_label(text: str, ssn: str) -> None:
    assert found(text, only("us_ssn")) == [("us_ssn", ssn)]
    assert found(text.replace(text[: text.index(ssn[0])], "id "), only("us_ssn")) == []


@pytest.mark.parametrize("phone", PHONES)
def test_phones_are_found(phone: str) -> None:
    assert found(f"call {phone} today", only("phone")) == [("phone", phone)]


@pytest.mark.parametrize("secret", SECRETS, ids=lambda s: s[:12])
def test_secrets_are_found(secret: str) -> None:
    text = f'config = {{"token": "{secret}"}}' if "\n" not in secret else f"key:\n{secret}"
    assert found(text, only("secret")) == [("secret", secret)]


@pytest.mark.parametrize(
    "email", ["john.doe@example.com", "a+tag@sub.example.co.uk", "x_y-z@mail-server.io", "JANE@EXAMPLE.ORG"]
)
def test_emails_are_found(email: str) -> None:
    assert found(f"<{email}>; cc {email}.", only("email")) == [("email", email), ("email", email)]


def test_values_in_json_and_csv_are_found() -> None:
    text = json.dumps({"card": "4111111111111111", "mail": "a@b.io", "iban": "NL91ABNA0417164300"})
    assert sorted(name for name, _ in found(text)) == ["credit_card", "email", "iban"]
    csv = "1,Jane,jane@example.com,415-555-2671,123-45-6789"
    assert [name for name, _ in found(csv)] == ["email", "phone", "us_ssn"]


# ---------------------------------------------------------------------------------------------
# what must not be flagged


@pytest.mark.parametrize(
    "text",
    [
        "order 1234567890123456 shipped",  # 16 digits, no issuer prefix
        "created_at 1700000000000",  # a millisecond timestamp
        "ts=2024-01-15T10:30:00.123456Z",
        "2024-01-15 10:30:00",
        "id 9876543210987654321",
        "ISBN 978-3-16-148410-0",
        "tracking 1Z999AA10123456784",
        "4111111111111112",  # Visa prefix, Luhn fails
        "5555555555554445",  # Mastercard prefix, Luhn fails
        "4111 1111 1111 1112",
        "41 11 11 11 11 11 11 11",  # not card grouping
        "4111-1111 1111-1111",  # mixed separators
        "3782822463100051",  # Amex prefix, wrong length
        "serial 4111",
    ],
)
def test_card_lookalikes_are_not_flagged(text: str) -> None:
    assert found(text, only("credit_card")) == []


def test_random_ids_are_rarely_cards() -> None:
    rng = random.Random(7)
    ids = [str(rng.randrange(10**12, 10**13)) for _ in range(2000)]  # 13-digit ids starting with 1-9
    hits = [i for i in ids if found(i, only("credit_card"))]
    assert len(hits) < 2000 * 0.1 * 0.6  # Luhn passes 10%; issuer prefixes and lengths cut most of it


@pytest.mark.parametrize(
    "text",
    [
        "DE89 3704 0044 0532 0130 01",  # checksum
        "GB82WEST12345698765433",
        "NL91ABNA0417164301",
        "DE89370400440532013000123",  # too long for DE
        "XX89370400440532013000",  # not a country
        "de89370400440532013000",  # lower case
        "REF DE1234",
    ],
)
def test_iban_lookalikes_are_not_flagged(text: str) -> None:
    assert found(text, only("iban")) == []
    assert not iban_valid(text.replace(" ", ""))


@pytest.mark.parametrize(
    "text",
    [
        "000-12-3456",
        "666-12-3456",
        "900-12-3456",
        "987-65-4321",
        "123-00-4567",
        "123-45-0000",
        "123456789",  # no dashes and no label
        "order 123-45-67890",
        "part AB-123-45-6789",
        "2024-123-45-6789",
        "date 2024-01-15",
        "phone 415-555-2671",
    ],
)
def test_ssn_lookalikes_are_not_flagged(text: str) -> None:
    assert found(text, only("us_ssn")) == []


@pytest.mark.parametrize(
    "text",
    [
        "INV-555-123-4567",
        "invoice #555-123-4567",
        "ref 100-200-3000",  # area codes do not start with 1
        "PO 1234-567-8901",
        "SKU 415-555-26710",
        "order 4155552671",  # bare digits: not conservative enough to call a phone
        "2024-03-15",
        "12:30:45",
        "version 1.2.3.4",
        "pi 3.14159265",
        "ip 192.168.100.200",
        "+1234",
        "score 3+4155552671",
        "invoice 2023-0001-4567",
        "amount 0.00 1234",
        "lot 0001 2345 6789",
    ],
)
def test_phone_lookalikes_are_not_flagged(text: str) -> None:
    assert found(text, only("phone")) == []


@pytest.mark.parametrize(
    "text",
    [
        "AKIA1234",
        "AKIAIOSFODNN7EXAMPLEXX",  # too long
        "ghp_short",
        "eyJub3QiOiJqd3QifQ.eyJhIjoxfQ.sig",  # base64 JSON header without alg/typ
        "eyJhbGciOiJIUzI1NiJ9",  # one part only
        "-----BEGIN PUBLIC KEY-----\nMIIBIjANBgkq\n-----END PUBLIC KEY-----",
        "-----BEGIN CERTIFICATE-----",
        "xox-1234",
        "AIzaShort",
    ],
)
def test_secret_lookalikes_are_not_flagged(text: str) -> None:
    assert found(text, only("secret")) == []


@pytest.mark.parametrize(
    "text",
    ["not an email", "user@localhost", "a@b", "@example.com", "x@-bad.com", "see https://example.com/@user"],
)
def test_email_lookalikes_are_not_flagged(text: str) -> None:
    assert found(text, only("email")) == []


# ---------------------------------------------------------------------------------------------
# The set: names, overlaps, the pre-check


def test_every_detector_the_config_accepts_is_implemented() -> None:
    policy = parse_policy_text(
        "masks:\n  - id: m\n    detect: [email, credit_card, us_ssn, phone, iban, secret]\n    strategy: full\n"
    )
    detect = policy.masks[0].detect
    assert set(detect) == set(Detector)
    assert compile_detectors(detect).detectors == detect
    with pytest.raises(ValueError, match="ssn"):
        compile_detectors(["email", "ssn"])


def test_only_the_named_detectors_run() -> None:
    text = "a@b.io 4111111111111111 123-45-6789"
    assert [n for n, _ in found(text, compile_detectors(["us_ssn"]))] == ["us_ssn"]
    assert [n for n, _ in found(text, compile_detectors(["email", "credit_card"]))] == ["email", "credit_card"]
    assert compile_detectors([]).find(text) == []


def test_overlapping_finds_keep_the_first_and_longest() -> None:
    text = "IBAN NL91ABNA0417164300 mail 4111111111111111@cards.example.com"
    assert found(text) == [("iban", "NL91ABNA0417164300"), ("email", "4111111111111111@cards.example.com")]


@pytest.mark.parametrize("text", ["", "ok", "hello world", "no digits here at all, nor at-signs", "2024"])
def test_the_pre_check_skips_values_that_cannot_match(text: str) -> None:
    assert not ALL.could_match(text)
    assert ALL.find(text) == []
    assert ALL.redact(text, MaskStrategy.FULL) == (text, 0)


def test_the_pre_check_is_per_detector() -> None:
    emails = only("email")
    assert not emails.could_match("4111111111111111")  # digits do not wake the e-mail detector
    assert emails.could_match("a@b.io")
    assert only("secret").could_match("x" * 10 + "AKIAIOSFODNN7EXAMPLE")
    assert not only("secret").could_match("x" * 40)


# Pieces a text is built from for the digit-run check: digit runs of every length (ASCII and
# other Unicode digits, which `\d` also reads), the separators and labels the patterns know,
# and characters that case-fold onto a label's letters.
_PIECES = st.one_of(
    st.text(alphabet="0123456789", min_size=1, max_size=20),
    st.integers(min_value=0, max_value=19).map(lambda n: "\u0663" * n + "4"),
    st.sampled_from([" ", "-", ".", "(", ")", "+", "#", "/", ":", "=", "x", "SSN ", "ss# ",
                     "social security no. ", "\u017fsn ", "SSN is ", "0", "415", "4111", "  "]),
)


@st.composite
def _near_values(draw: st.DrawFn) -> str:
    """A true card, SSN or phone with a few characters replaced by pieces, between pieces: most
    stay findable, many in a changed shape."""
    chars = list(draw(st.sampled_from([*CARDS, *SSNS, *PHONES, "SSN 123456789", "ssn: 12345-6789"])))
    for _ in range(draw(st.integers(min_value=0, max_value=3))):
        at = draw(st.integers(min_value=0, max_value=len(chars) - 1))
        chars[at] = draw(_PIECES)
    pieces = st.lists(_PIECES, max_size=3).map("".join)
    return draw(pieces) + "".join(chars) + draw(pieces)


@settings(max_examples=3000, deadline=None)
@given(st.one_of(st.lists(_PIECES, max_size=14).map("".join), _near_values()))
def test_the_digit_run_check_never_hides_a_find(text: str) -> None:
    # A detector with a digit-run check would have found nothing whenever the check says no:
    # the check is a pre-filter, never a second opinion.
    lengths = frozenset(map(len, _GROUP_RE.findall(text)))
    for detector, spec in _SPECS.items():
        if spec.runs is not None and not spec.runs(lengths, text):
            assert list(spec.find(text)) == [], (detector, text)


@settings(max_examples=2000, deadline=None)
@given(st.one_of(st.text(), st.text(alphabet="0123456789 -+@\t\n\x0b\x0c\x1c\x1dx\u0663\uff11\u00b2")))
def test_run_lengths_are_the_digit_runs_the_patterns_read(text: str) -> None:
    # The ASCII shortcut (translate and split) gives what `\d+` finds, separators that split()
    # or str.isdigit() treat specially included; other text takes the regex itself.
    assert run_lengths(text) == frozenset(map(len, _GROUP_RE.findall(text)))


@pytest.mark.parametrize("text", [*CARDS, *SSNS, *PHONES, "SSN 123456789", "ssn: 12345-6789", "ssn 123 456789"])
def test_the_digit_run_check_lets_true_values_through(text: str) -> None:
    lengths = frozenset(map(len, _GROUP_RE.findall(text)))
    checks = [spec.runs for spec in _SPECS.values() if spec.runs is not None and list(spec.find(text))]
    assert checks, text
    assert all(runs(lengths, text) for runs in checks)


def test_long_digit_groups_are_cheap_and_found_nothing_in() -> None:
    # sysbench's c and pad columns: 11-digit groups joined by dashes. No run has a length a
    # card, an SSN or a phone can start with, so the patterns never run (and find nothing).
    rng = random.Random(7)
    value = "-".join("".join(rng.choice("0123456789") for _ in range(11)) for _ in range(10))
    lengths = frozenset(map(len, _GROUP_RE.findall(value)))
    assert lengths == {11}
    assert not any(spec.runs(lengths, value) for spec in _SPECS.values() if spec.runs is not None)
    assert ALL.find(value) == []


def test_large_values_without_anything_are_cheap() -> None:
    text = "lorem ipsum dolor sit amet " * 40_000  # ~1 MB
    assert ALL.find(text) == []
    digits = "order 12345 " * 20_000
    assert ALL.find(digits) == []


# ---------------------------------------------------------------------------------------------
# Redaction


def everything() -> tuple[str, list[str]]:
    # The truncated PEM key last: a private key without its END line is masked to the end.
    values = [*CARDS, *IBANS, *SSNS, *PHONES, "john.doe@example.com", "a+tag@sub.example.co.uk", *SECRETS]
    return " | ".join(values), values


@pytest.mark.parametrize("strategy", list(MaskStrategy))
def test_redaction_removes_every_detected_value(strategy: MaskStrategy) -> None:
    text, values = everything()
    out, count = ALL.redact(text, strategy, key=KEY)
    assert count == len(values)
    assert len(out) == len(text)
    for value in values:
        assert value not in out, value
        digits = "".join(c for c in value if c.isdigit())
        if len(digits) >= 9:
            assert digits not in "".join(c for c in out if c.isdigit() or c == "|"), value
    assert ALL.find(out) == [] or strategy is MaskStrategy.EMAIL  # nothing left to find


def test_redaction_strategies() -> None:
    text = "card 4111 1111 1111 1111, mail john.doe@example.com"
    assert ALL.redact(text, MaskStrategy.FULL) == ("card *******************, mail ********************", 2)
    assert ALL.redact(text, MaskStrategy.PARTIAL)[0] == "card ***************1111, mail ****************.com"
    assert ALL.redact(text, MaskStrategy.EMAIL)[0] == "card *******************, mail ********@example.com"
    assert ALL.redact(text, MaskStrategy.NULL) == ALL.redact(text, MaskStrategy.FULL)
    hashed, count = ALL.redact(text, MaskStrategy.HASH, key=KEY)
    assert count == 2
    assert hashed == ALL.redact(text, MaskStrategy.HASH, key=KEY)[0]  # stable
    assert hashed != ALL.redact(text, MaskStrategy.HASH, key=b"another key")[0]  # keyed
    assert "4111" not in hashed
    assert "john" not in hashed
    with pytest.raises(ValueError, match="key"):
        ALL.redact(text, MaskStrategy.HASH)


def test_a_truncated_private_key_is_masked_to_the_end() -> None:
    text = "k=-----BEGIN EC PRIVATE KEY-----\nMHcCAQEEIIrYSSNQFaA2Hwf1duRSxKtLYX5CB04fSeQ6tF1aY/PuoAoGCCqGSM49"
    out, count = ALL.redact(text, MaskStrategy.FULL)
    assert (out, count) == ("k=" + "*" * (len(text) - 2), 1)


def test_redaction_keeps_json_valid_around_strings() -> None:
    doc = json.dumps({"note": "call +44 20 7946 0958 or mail jo@ex.io", "card": "5555555555554444"})
    out, count = ALL.redact(doc, MaskStrategy.FULL)
    assert count == 3
    parsed = json.loads(out)
    assert parsed["card"] == "*" * 16
    assert "@" not in parsed["note"]


def test_json_redaction_keeps_the_document_valid() -> None:
    doc = '{"card": 4111111111111111, "contacts": {"jo@ex.io": ["+44 20 7946 0958"]}, "n": 1.5, "ok": true}'
    out, count = ALL.redact_json(doc, MaskStrategy.PARTIAL)
    assert count == 3
    parsed = json.loads(out)
    assert parsed["card"] == "************1111"  # a number holding a card becomes a string
    assert parsed["contacts"] == {"****x.io": ["************0958"]}
    assert parsed["n"] == 1.5
    assert parsed["ok"] is True
    assert ALL.redact_json('{"a": 1}', MaskStrategy.FULL) == ('{"a": 1}', 0)
    assert ALL.redact_json("not json a@b.io", MaskStrategy.FULL) == ("not json ******", 1)
