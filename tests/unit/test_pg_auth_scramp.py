"""dbguard.wire.pg.auth's SCRAM client and SASLprep against scramp's, which they replaced.

scramp (with asn1crypto) cost ~5 MiB resident in every proxy for a client of ~100 lines; the
replacement must accept exactly what scramp's `ScramClient` accepted and send exactly what it
sent, and `saslprep` must agree with scramp's (every code point of planes 0 and 1, a sample of
the others, and hypothesis strings).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import sys

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scramp import ScramClient, ScramException
from scramp.core import Nonce, ServerFirst, _set_server_first
from scramp.utils import saslprep as scramp_saslprep

from dbguard.wire.pg.auth import (
    SCRAM_SHA_256,
    SCRAM_SHA_256_PLUS,
    TLS_SERVER_END_POINT,
    AuthenticationFailed,
    ScramClientExchange,
    _read_server_first,
    saslprep,
)

NONCE = "rOprNGfwEbeRWgbNEkqO"
SALT = base64.b64encode(bytes(range(16))).decode()
CB = (TLS_SERVER_END_POINT, hashlib.sha256(b"the upstream's certificate").digest())


def _ours(text: str) -> str | None:
    try:
        return saslprep(text)
    except ValueError:
        return None


def _theirs(text: str) -> str | None:
    try:
        result: str = scramp_saslprep(text)
    except ScramException:
        return None
    return result


def _code_points() -> list[int]:
    """Every code point of planes 0 and 1 (where the stringprep tables and NFKC have nearly all
    their entries; lone surrogates included), the tags (E0000-E007F) and, in planes 2-16,
    every 251st code point and each plane's two noncharacters (the whole range: 23 s)."""
    points = set(range(0x20000)) | set(range(0xE0000, 0xE0080)) | set(range(0x20000, sys.maxunicode + 1, 251))
    points |= {plane << 16 | low for plane in range(2, 17) for low in (0xFFFE, 0xFFFF)}
    return sorted(points)


def test_saslprep_agrees_with_scramp_on_single_code_points() -> None:
    differ = [cp for cp in _code_points() if _ours(chr(cp)) != _theirs(chr(cp))]
    assert differ == []


_SASL_CHARS = st.one_of(
    st.characters(max_codepoint=0x7F),
    st.sampled_from("\u00a0\u2002\u3000\u00ad\u200b\u034f\ufeff\u00aa\u2168\ufb01\u0301"),  # C.1.2, B.1, NFKC
    st.sampled_from("\u05d0\u05d1\u0627\u0628\u0660\u200f\u202e\u0041\u00e9"),  # RandALCat, bidi, LCat
    st.characters(),
)


@given(st.text(_SASL_CHARS, max_size=12))
def test_saslprep_agrees_with_scramp_on_strings(text: str) -> None:
    assert _ours(text) == _theirs(text)


def test_saslprep_rfc4013_examples() -> None:
    assert saslprep("I\u00adX") == "IX"
    assert saslprep("user") == "user"
    assert saslprep("USER") == "USER"
    assert saslprep("\u00aa") == "a"
    assert saslprep("\u2168") == "IX"
    for refused in ("\u0007", "\u0627\u0031"):
        with pytest.raises(ValueError, match=r"prohibited|bidi"):
            saslprep(refused)


# --------------------------------------------------------------------------- the exchange


def _run_scramp(user: str, password: str, mechanism: str, binding: tuple[str, bytes] | None,
                server_first: str, server_final: str | None) -> tuple[str, str | None, bool]:
    """client-first, client-final (None when refused) and whether the server-final passed."""
    client = ScramClient([mechanism], user if _ours(user) else "*", password, channel_binding=binding,
                         c_nonce=NONCE)
    first = client.get_client_first()
    try:
        client.set_server_first(server_first)
        final = client.get_client_final()
    except ScramException:
        return first, None, False
    if server_final is None:
        return first, final, False
    try:
        client.set_server_final(server_final)
    except ScramException:
        return first, final, False
    return first, final, True


def _run_ours(user: str, password: str, mechanism: str, binding: tuple[str, bytes] | None,
              server_first: str, server_final: str | None) -> tuple[str, str | None, bool]:
    offered = [SCRAM_SHA_256_PLUS, SCRAM_SHA_256] if mechanism == SCRAM_SHA_256_PLUS else [SCRAM_SHA_256]
    client = ScramClientExchange(user, password, offered, channel_binding=binding, client_nonce=NONCE)
    assert client.mechanism == mechanism
    first = client.client_first().decode()
    try:
        final = client.client_final(server_first.encode()).decode()
    except AuthenticationFailed:
        return first, None, False
    if server_final is None:
        return first, final, False
    try:
        client.verify_server_final(server_final.encode())
    except AuthenticationFailed:
        return first, final, False
    assert client.completed
    return first, final, True


def _genuine_server_final(password: str, server_first: str, client_first: str, client_final: str) -> str:
    """What a server that knows the password answers (to check that both accept it)."""
    fields = dict(part.split("=", 1) for part in server_first.split(","))
    salted = hashlib.pbkdf2_hmac("sha256", saslprep(password).encode(), base64.b64decode(fields["s"]),
                                 int(fields["i"]))
    without_proof = client_final.rsplit(",p=", 1)[0]
    bare = client_first.split(",", 2)[2] if not client_first.startswith("p=") else client_first.split(",,", 1)[1]
    auth_message = f"{bare},{server_first},{without_proof}".encode()
    server_key = hmac.new(salted, b"Server Key", "sha256").digest()
    return "v=" + base64.b64encode(hmac.new(server_key, auth_message, "sha256").digest()).decode()


_USERS = st.one_of(st.sampled_from(["alice", "a=b,c", "", "bad\x07user", "\u00aaX", "dbguard_svc"]),
                   st.text(max_size=8))
_PASSWORDS = st.one_of(st.sampled_from(["pencil", "p\u00adw", "\u2168 x", "=,"]),
                       st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1, max_size=10))


@settings(max_examples=60, deadline=None)
@given(user=_USERS, password=_PASSWORDS, plus=st.booleans(), binding=st.booleans(),
       iterations=st.sampled_from([4096, 4097, 5000]), server_part=st.sampled_from(["x", "%hvYDpWUa2Ra", "0"]))
def test_a_genuine_exchange_sends_what_scramp_sends(user: str, password: str, plus: bool, binding: bool,
                                                     iterations: int, server_part: str) -> None:
    mechanism = SCRAM_SHA_256_PLUS if plus else SCRAM_SHA_256
    cb = CB if plus or binding else None
    server_first = f"r={NONCE}{server_part},s={SALT},i={iterations}"
    ours = _run_ours(user, password, mechanism, cb, server_first, None)
    theirs = _run_scramp(user, password, mechanism, cb, server_first, None)
    assert ours == theirs
    assert ours[1] is not None
    genuine = _genuine_server_final(password, server_first, ours[0], ours[1])
    assert _run_ours(user, password, mechanism, cb, server_first, genuine)[2]
    assert _run_scramp(user, password, mechanism, cb, server_first, genuine)[2]


def _attribute(name: str, values: list[str]) -> st.SearchStrategy[str]:
    return st.sampled_from(values).map(lambda v: f"{name}={v}")


_NONCES = [NONCE + "srv", NONCE, "other" + NONCE, NONCE + "\u00e9", NONCE + "x y", NONCE + "\x7f", ""]
_SALTS = [SALT, base64.b64encode(bytes(11)).decode(), base64.b64encode(bytes(12)).decode(), "not base64",
          SALT.rstrip("="), SALT + "=", "c2FsdHNhbHRzYWx0\n", ""]
_COUNTS = ["4096", "4095", "10000000", "10000001", "04096", "4096x", "\u0664\u0660\u0669\u0666", "-4096", "+4096",
           " 4096", ""]
_EXTRAS = st.sampled_from(["x=ext", "Z=ext", "x=", "x=nul\x00", "m=ext", "e=other-error", "e=made-up", "n=user",
                           "r=again", "", "r", "=r", "1=2", "\u00e9=x", "rr=x"])


def _valid_or(valid: str, others: list[str]) -> st.SearchStrategy[str]:
    return st.one_of(st.just(valid), st.sampled_from(others))


@settings(max_examples=1500, deadline=None)
@given(nonce=_valid_or(NONCE + "srv", _NONCES), salt=_valid_or(SALT, _SALTS), count=_valid_or("4096", _COUNTS),
       extras=st.lists(_EXTRAS, max_size=2), order=st.permutations(range(3)), keep=st.integers(0, 4))
def test_a_server_first_is_refused_exactly_when_scramp_refused_it(nonce: str, salt: str, count: str,
                                                                   extras: list[str], order: list[int],
                                                                   keep: int) -> None:
    # Mostly r, s, i in order (the valid shape), sometimes reordered, sometimes one dropped.
    parts = [f"r={nonce}", f"s={salt}", f"i={count}"]
    if keep == 0:
        parts = [parts[i] for i in order]
    elif keep == 1:
        del parts[order[0]]
    server_first = ",".join(parts + extras)
    try:  # parsed only (no PBKDF2): the exchanges above cover what comes after
        ours: tuple[str, bytes, int] | None = _read_server_first(server_first, NONCE)
    except ValueError:
        ours = None
    try:
        r, s, i = _set_server_first(ServerFirst(server_first), Nonce(NONCE))
        theirs: tuple[str, bytes, int] | None = (str(r), bytes(s), int(i))
    except ScramException:
        theirs = None
    assert ours == theirs


def _genuine_final_for_alice() -> str:
    server_first = f"r={NONCE}srv,s={SALT},i=4096"
    first, final, _ = _run_ours("alice", "pencil", SCRAM_SHA_256, None, server_first, None)
    assert final is not None
    return _genuine_server_final("pencil", server_first, first, final)


_GENUINE_FINAL = _genuine_final_for_alice()


@settings(max_examples=150, deadline=None)
@given(st.lists(st.one_of(st.just("GENUINE"), _attribute("v", ["@@@", base64.b64encode(bytes(32)).decode(), ""]),
                          _attribute("e", ["invalid-proof", "made-up"]), _attribute("x", ["ext", ""]),
                          _attribute("m", ["ext"]), _attribute("r", ["x"]), st.sampled_from(["", "v", "é=1"])),
                max_size=3))
def test_a_server_final_is_refused_exactly_when_scramp_refused_it(parts: list[str]) -> None:
    server_first = f"r={NONCE}srv,s={SALT},i=4096"
    genuine = _GENUINE_FINAL
    server_final = ",".join(genuine if part == "GENUINE" else part for part in parts)
    ours = _run_ours("alice", "pencil", SCRAM_SHA_256, None, server_first, server_final)
    assert ours == _run_scramp("alice", "pencil", SCRAM_SHA_256, None, server_first, server_final)
    extensions = parts[1:]
    assert ours[2] == (parts[:1] == ["GENUINE"] and len(set(extensions)) == len(extensions)
                       and all(p.startswith("x=") and p != "x=" for p in extensions))
