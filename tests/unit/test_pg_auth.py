"""Unit tests for dbguard.wire.pg.auth: SCRAM both ways, md5, cleartext, channel binding hash."""

from __future__ import annotations

import base64
import datetime
import hashlib
import hmac
import re

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import NameOID
from hypothesis import given
from hypothesis import strategies as st
from scramp import ScramClient, ScramMechanism
from scramp.core import CBindData

from dbguard.wire.pg.auth import (
    DEFAULT_ITERATIONS,
    MAX_SCRAM_MESSAGE_BYTES,
    SCRAM_SHA_256,
    SCRAM_SHA_256_PLUS,
    TLS_SERVER_END_POINT,
    AuthenticationFailed,
    ScramClientExchange,
    ScramServerExchange,
    ScramVerifier,
    UnsupportedMechanism,
    make_scram_verifier,
    md5_password_message,
    tls_server_end_point_hash,
    verify_cleartext,
)

# RFC 7677 section 3: user "user", password "pencil".
RFC_CLIENT_NONCE = "rOprNGfwEbeRWgbNEkqO"
RFC_SERVER_NONCE = "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0"
RFC_SALT = base64.b64decode("W22ZaJ0SNY7soEsUEjb6gQ==")
RFC_CLIENT_FIRST = b"n,,n=user,r=rOprNGfwEbeRWgbNEkqO"
RFC_SERVER_FIRST = b"r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096"
RFC_CLIENT_FINAL = (
    b"c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ="
)
RFC_SERVER_FINAL = b"v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="

CB = (TLS_SERVER_END_POINT, hashlib.sha256(b"pretend this is our certificate").digest())
GENERIC = "authentication failed"

# Verifiers cost a PBKDF2 each: make them once.
PENCIL = make_scram_verifier("pencil")
RFC_VERIFIER = make_scram_verifier("pencil", salt=RFC_SALT)


def _login(
    verifier: ScramVerifier | None,
    password: str,
    *,
    server_cb: tuple[str, bytes] | None = None,
    client_cb: tuple[str, bytes] | None = None,
    user: str = "alice",
) -> tuple[ScramServerExchange, ScramClientExchange]:
    server = ScramServerExchange(verifier, channel_binding=server_cb, user=user)
    client = ScramClientExchange(user, password, server.mechanisms(), channel_binding=client_cb)
    server_first = server.handle_client_first(client.mechanism, client.client_first())
    server_final = server.handle_client_final(client.client_final(server_first))
    client.verify_server_final(server_final)
    return server, client


def _started_server(verifier: ScramVerifier | None = PENCIL) -> tuple[ScramServerExchange, str]:
    """A server exchange past client-first; returns it and the combined nonce."""
    server = ScramServerExchange(verifier, user="alice")
    server_first = server.handle_client_first(SCRAM_SHA_256, b"n,,n=,r=abcdef")
    match = re.match(r"r=([^,]+),", server_first.decode())
    assert match is not None
    return server, match.group(1)


# --------------------------------------------------------------------------- round trips


def test_round_trip_without_channel_binding() -> None:
    server, client = _login(PENCIL, "pencil")
    assert server.succeeded
    assert client.completed
    assert server.mechanism == client.mechanism == SCRAM_SHA_256


def test_round_trip_with_channel_binding_uses_plus() -> None:
    server, client = _login(PENCIL, "pencil", server_cb=CB, client_cb=CB)
    assert server.mechanisms() == [SCRAM_SHA_256_PLUS, SCRAM_SHA_256]
    assert client.mechanism == server.mechanism == SCRAM_SHA_256_PLUS
    assert server.succeeded
    assert client.completed


def test_client_with_binding_but_server_without_sends_y_and_succeeds() -> None:
    server = ScramServerExchange(PENCIL)
    client = ScramClientExchange("alice", "pencil", server.mechanisms(), channel_binding=CB)
    assert client.mechanism == SCRAM_SHA_256
    first = client.client_first()
    assert first.startswith(b"y,,")
    server_first = server.handle_client_first(client.mechanism, first)
    client.verify_server_final(server.handle_client_final(client.client_final(server_first)))
    assert client.completed


def test_channel_binding_data_mismatch_fails() -> None:
    other = (TLS_SERVER_END_POINT, hashlib.sha256(b"a man in the middle's certificate").digest())
    with pytest.raises(AuthenticationFailed) as excinfo:
        _login(PENCIL, "pencil", server_cb=CB, client_cb=other)
    assert str(excinfo.value) == GENERIC
    assert "channel binding" in excinfo.value.log_detail


def test_libpq_style_empty_username_is_accepted() -> None:
    # libpq sends "n=" (empty); the user comes from the startup packet.
    scramp_client = ScramClient([SCRAM_SHA_256], "x", "pencil", c_nonce="fixednonce")
    client_first = scramp_client.get_client_first().replace("n=x,", "n=,")
    server = ScramServerExchange(PENCIL)
    server_first = server.handle_client_first(SCRAM_SHA_256, client_first.encode())
    # Compute the libpq client's answer by hand from the real client-first-bare.
    salt = base64.b64decode(server_first.decode().split(",")[1][2:])
    salted = hashlib.pbkdf2_hmac("sha256", b"pencil", salt, DEFAULT_ITERATIONS)
    client_key = hmac.new(salted, b"Client Key", "sha256").digest()
    nonce = server_first.decode().split(",")[0][2:]
    without_proof = f"c=biws,r={nonce}"
    auth_message = f"n=,r=fixednonce,{server_first.decode()},{without_proof}".encode()
    signature = hmac.new(hashlib.sha256(client_key).digest(), auth_message, "sha256").digest()
    proof = bytes(a ^ b for a, b in zip(client_key, signature, strict=True))
    final = f"{without_proof},p={base64.b64encode(proof).decode()}".encode()
    server_final = server.handle_client_final(final)
    server_key = hmac.new(salted, b"Server Key", "sha256").digest()
    expected = hmac.new(server_key, auth_message, "sha256").digest()
    assert server_final == b"v=" + base64.b64encode(expected)


def test_scramp_client_against_our_server() -> None:
    # An independent client implementation, including the extension-free 'p' flow.
    server = ScramServerExchange(PENCIL, channel_binding=CB)
    scramp_client = ScramClient([SCRAM_SHA_256_PLUS], "alice", "pencil", channel_binding=CB)
    server_first = server.handle_client_first(SCRAM_SHA_256_PLUS, scramp_client.get_client_first().encode())
    scramp_client.set_server_first(server_first.decode())
    final = server.handle_client_final(scramp_client.get_client_final().encode())
    scramp_client.set_server_final(final.decode())
    assert server.succeeded


# --------------------------------------------------------------------------- failures


def test_wrong_password_fails() -> None:
    with pytest.raises(AuthenticationFailed) as excinfo:
        _login(PENCIL, "pencil2")
    assert str(excinfo.value) == GENERIC
    assert excinfo.value.log_detail == "wrong password"


def test_unknown_user_fails_the_same_way() -> None:
    with pytest.raises(AuthenticationFailed) as wrong:
        _login(PENCIL, "nope")
    with pytest.raises(AuthenticationFailed) as unknown:
        _login(None, "nope", user="mallory")
    assert type(unknown.value) is type(wrong.value)
    assert unknown.value.args == wrong.value.args == (GENERIC,)
    assert unknown.value.log_detail == "unknown user"


def test_unknown_user_server_first_has_the_same_shape() -> None:
    shape = re.compile(r"r=abcdef[A-Za-z0-9+/]{24},s=[A-Za-z0-9+/]{22}==,i=4096")

    def server_first(verifier: ScramVerifier | None, user: str) -> bytes:
        server = ScramServerExchange(verifier, user=user)
        return server.handle_client_first(SCRAM_SHA_256, b"n,,n=,r=abcdef")

    def salt_of(message: bytes) -> str:
        return message.decode().split(",")[1]

    known = server_first(PENCIL, "alice")
    unknown = server_first(None, "mallory")
    assert shape.fullmatch(known.decode())
    assert shape.fullmatch(unknown.decode())
    # Like a real user's, the fake salt is stable between attempts, and differs between users.
    assert salt_of(server_first(None, "mallory")) == salt_of(unknown)
    assert salt_of(server_first(None, "eve")) != salt_of(unknown)


def test_unknown_user_requires_the_user_name() -> None:
    with pytest.raises(ValueError, match="user name"):
        ScramServerExchange(None)


def test_downgrade_y_while_offering_plus_fails() -> None:
    server = ScramServerExchange(PENCIL, channel_binding=CB)
    with pytest.raises(AuthenticationFailed) as excinfo:
        server.handle_client_first(SCRAM_SHA_256, b"y,,n=,r=abcdef")
    assert str(excinfo.value) == GENERIC
    assert "downgrade" in excinfo.value.log_detail


@pytest.mark.parametrize(
    ("binding", "mechanism", "client_first"),
    [
        (None, SCRAM_SHA_256_PLUS, b"p=tls-server-end-point,,n=,r=abc"),  # PLUS not offered
        (CB, SCRAM_SHA_256, b"p=tls-server-end-point,,n=,r=abc"),  # binding without PLUS
        (CB, SCRAM_SHA_256_PLUS, b"n,,n=,r=abc"),  # PLUS without binding
        (CB, SCRAM_SHA_256_PLUS, b"y,,n=,r=abc"),
        (CB, SCRAM_SHA_256_PLUS, b"p=tls-unique,,n=,r=abc"),
        (None, "SCRAM-SHA-1", b"n,,n=,r=abc"),
        (None, SCRAM_SHA_256, b"n,a=admin,n=,r=abc"),  # authorization identity
        (None, SCRAM_SHA_256, b"x,,n=,r=abc"),
        (None, SCRAM_SHA_256, b"n,,m=ext,n=,r=abc"),  # mandatory extension
        (None, SCRAM_SHA_256, b"n,,r=abc"),
        (None, SCRAM_SHA_256, b"n,,n=,r="),
        (None, SCRAM_SHA_256, b"n,,n=,r=ab\x7fc"),
        (None, SCRAM_SHA_256, b"n,,n=,r=abc,"),
        (None, SCRAM_SHA_256, b"n,,n=,"),
        (None, SCRAM_SHA_256, b"n,,"),
        (None, SCRAM_SHA_256, b"n,"),
        (None, SCRAM_SHA_256, b""),
        (None, SCRAM_SHA_256, b"\xff\xfe"),
        (None, SCRAM_SHA_256, b"n,,n=,r=" + b"a" * MAX_SCRAM_MESSAGE_BYTES),
    ],
)
def test_malformed_client_first(binding: tuple[str, bytes] | None, mechanism: str, client_first: bytes) -> None:
    server = ScramServerExchange(PENCIL, channel_binding=binding)
    with pytest.raises(AuthenticationFailed, match=f"^{GENERIC}$"):
        server.handle_client_first(mechanism, client_first)
    assert not server.succeeded


def test_client_first_extensions_are_ignored() -> None:
    server = ScramServerExchange(PENCIL)
    assert server.handle_client_first(SCRAM_SHA_256, b"n,,n=x,r=abc,x=ext").startswith(b"r=abc")


def _final_cases(nonce: str) -> list[bytes]:
    proof = base64.b64encode(bytes(32)).decode()
    return [
        b"",
        b"garbage",
        b"\xff\xfe\xfd",
        f"c=biws,r={nonce}".encode(),  # no proof
        f"c=biws,r={nonce},p=".encode(),
        f"c=biws,r={nonce},p={proof}"[:-5].encode(),  # truncated
        f"c=biws,r={nonce},p=not*base64!".encode(),
        f"c=bi!s,r={nonce},p={proof}".encode(),  # bad base64 in the binding
        f"c=eSws,r={nonce},p={proof}".encode(),  # 'y,,' where the client sent 'n,,'
        f"c=biws,r=abcdef,p={proof}".encode(),  # only the client's part of the nonce
        f"c=biws,r=zz{nonce[2:]},p={proof}".encode(),  # wrong nonce prefix
        f"c=biws,r={nonce}x,p={proof}".encode(),
        f"r={nonce},c=biws,p={proof}".encode(),
        f"c=biws,r={nonce},p={base64.b64encode(bytes(31)).decode()}".encode(),
        f"c=biws,r={nonce},p={proof}".encode(),  # well-formed, wrong proof
        f"c=biws,r={nonce},p={proof},x=1".encode(),
        f"c=biws,,r={nonce},p={proof}".encode(),
    ]


@pytest.mark.parametrize("case", range(len(_final_cases("n"))))
def test_malformed_client_final(case: int) -> None:
    server, nonce = _started_server()
    with pytest.raises(AuthenticationFailed, match=f"^{GENERIC}$"):
        server.handle_client_final(_final_cases(nonce)[case])
    assert not server.succeeded


def test_exchange_is_single_use_and_ordered() -> None:
    server = ScramServerExchange(PENCIL)
    with pytest.raises(AuthenticationFailed, match=f"^{GENERIC}$"):
        server.handle_client_final(b"c=biws,r=abc,p=AAAA")
    # A failed exchange stays failed, even for a correct message.
    with pytest.raises(AuthenticationFailed):
        server.handle_client_first(SCRAM_SHA_256, b"n,,n=,r=abc")

    server, _ = _login(PENCIL, "pencil")
    with pytest.raises(AuthenticationFailed):
        server.handle_client_first(SCRAM_SHA_256, b"n,,n=,r=abc")


def test_no_retry_after_a_wrong_proof() -> None:
    server, nonce = _started_server()
    bad = f"c=biws,r={nonce},p={base64.b64encode(bytes(32)).decode()}".encode()
    with pytest.raises(AuthenticationFailed):
        server.handle_client_final(bad)
    with pytest.raises(AuthenticationFailed):
        server.handle_client_final(bad)


# Fuzzing: anything a client sends ends in a server-first or AuthenticationFailed, nothing else.

_ATTRIBUTE = st.builds(
    lambda key, value: f"{key}={value}",
    st.sampled_from("nrcpmasixv"),
    st.text(st.characters(codec="utf-8"), max_size=12),
)
_SCRAMISH = st.builds(
    lambda header, attrs: header + ",".join(attrs),
    st.sampled_from(["n,,", "y,,", "p=tls-server-end-point,,", "p=x,,", "n,a=b,", ""]),
    st.lists(_ATTRIBUTE, max_size=5),
)


@given(
    mechanism=st.sampled_from([SCRAM_SHA_256, SCRAM_SHA_256_PLUS, "PLAIN", ""]),
    data=st.one_of(st.binary(max_size=300), _SCRAMISH.map(str.encode)),
    with_binding=st.booleans(),
    known=st.booleans(),
)
def test_fuzz_client_first(mechanism: str, data: bytes, with_binding: bool, known: bool) -> None:
    server = ScramServerExchange(PENCIL if known else None, channel_binding=CB if with_binding else None, user="u")
    outcome: bytes | AuthenticationFailed
    try:
        outcome = server.handle_client_first(mechanism, data)
    except AuthenticationFailed as exc:
        outcome = exc
    if isinstance(outcome, AuthenticationFailed):
        assert str(outcome) == GENERIC
    else:
        assert outcome.startswith(b"r=")


@given(data=st.one_of(st.binary(max_size=300), st.lists(_ATTRIBUTE, max_size=5).map(",".join)))
def test_fuzz_client_final(data: bytes | str) -> None:
    server, nonce = _started_server()
    if isinstance(data, str):  # structured: sometimes splice in the real nonce
        data = data.replace("r=", f"r={nonce}", 1).encode()
    with pytest.raises(AuthenticationFailed, match=f"^{GENERIC}$"):
        server.handle_client_final(data)


# --------------------------------------------------------------------------- RFC 7677 vectors


def test_rfc7677_client_side() -> None:
    client = ScramClientExchange("user", "pencil", [SCRAM_SHA_256], client_nonce=RFC_CLIENT_NONCE)
    assert client.client_first() == RFC_CLIENT_FIRST
    assert client.client_final(RFC_SERVER_FIRST) == RFC_CLIENT_FINAL
    client.verify_server_final(RFC_SERVER_FINAL)
    assert client.completed


def test_rfc7677_server_side() -> None:
    server = ScramServerExchange(RFC_VERIFIER, server_nonce=RFC_SERVER_NONCE)
    assert server.handle_client_first(SCRAM_SHA_256, RFC_CLIENT_FIRST) == RFC_SERVER_FIRST
    assert server.handle_client_final(RFC_CLIENT_FINAL) == RFC_SERVER_FINAL


def test_client_detects_a_fake_server() -> None:
    client = ScramClientExchange("user", "pencil", [SCRAM_SHA_256], client_nonce=RFC_CLIENT_NONCE)
    client.client_first()
    client.client_final(RFC_SERVER_FIRST)
    forged = b"v=" + base64.b64encode(bytes(32))
    with pytest.raises(AuthenticationFailed, match="does not know"):
        client.verify_server_final(forged)
    assert not client.completed


@pytest.mark.parametrize("server_final", [b"e=invalid-proof", b"v=@@@", b"garbage", b"\xff", b"v=" + b"A" * 44 + b"x"])
def test_client_rejects_bad_server_final(server_final: bytes) -> None:
    client = ScramClientExchange("user", "pencil", [SCRAM_SHA_256], client_nonce=RFC_CLIENT_NONCE)
    client.client_first()
    client.client_final(RFC_SERVER_FIRST)
    with pytest.raises(AuthenticationFailed):
        client.verify_server_final(server_final)


@pytest.mark.parametrize(
    "server_first",
    [
        b"r=someoneelse%hvYDpWUa2RaTCAfuxFIlj,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096",  # wrong prefix
        b"r=rOprNGfwEbeRWgbNEkqO,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096",  # no server part
        b"r=rOprNGfwEbeRWgbNEkqOxyz,s=not base64,i=4096",
        b"r=rOprNGfwEbeRWgbNEkqOxyz,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=1",
        b"r=rOprNGfwEbeRWgbNEkqOxyz,s=W22ZaJ0SNY7soEsUEjb6gQ==",
        b"e=other-error",
        b"\xc3\x28",
        b"",
    ],
)
def test_client_rejects_bad_server_first(server_first: bytes) -> None:
    client = ScramClientExchange("user", "pencil", [SCRAM_SHA_256], client_nonce=RFC_CLIENT_NONCE)
    client.client_first()
    with pytest.raises(AuthenticationFailed):
        client.client_final(server_first)
    with pytest.raises(AuthenticationFailed):  # and the exchange is over
        client.verify_server_final(RFC_SERVER_FINAL)


def test_client_steps_out_of_order() -> None:
    client = ScramClientExchange("user", "pencil", [SCRAM_SHA_256])
    with pytest.raises(AuthenticationFailed, match="out of order"):
        client.client_final(RFC_SERVER_FIRST)


# --------------------------------------------------------------------------- mechanism choice


def test_client_prefers_plus_only_with_binding_data() -> None:
    offered = [SCRAM_SHA_256_PLUS, SCRAM_SHA_256]
    assert ScramClientExchange("u", "p", offered).mechanism == SCRAM_SHA_256
    assert ScramClientExchange("u", "p", offered, channel_binding=CB).mechanism == (SCRAM_SHA_256_PLUS)
    plus = ScramClientExchange("u", "p", offered, channel_binding=CB)
    assert plus.client_first().startswith(b"p=tls-server-end-point,,")


@pytest.mark.parametrize(
    ("offered", "message"),
    [
        ([], "offers no supported SASL mechanism"),
        (["SCRAM-SHA-1", "OAUTHBEARER"], "offered: SCRAM-SHA-1, OAUTHBEARER"),
        ([SCRAM_SHA_256_PLUS], "needs TLS channel binding"),
    ],
)
def test_client_without_usable_mechanism(offered: list[str], message: str) -> None:
    with pytest.raises(UnsupportedMechanism, match=message):
        ScramClientExchange("u", "p", offered)


def test_client_odd_user_names_do_not_matter() -> None:
    # PostgreSQL ignores client-first's user name; one SASLprep refuses is replaced.
    client = ScramClientExchange("bad\x07user", "pencil", [SCRAM_SHA_256])
    assert client.client_first().startswith(b"n,,n=*,r=")
    escaped = ScramClientExchange("a=b,c", "pencil", [SCRAM_SHA_256])
    assert escaped.client_first().startswith(b"n,,n=a=3Db=2Cc,r=")


def test_client_refuses_a_password_scramp_cannot_prepare() -> None:
    with pytest.raises(AuthenticationFailed, match="SASLprep"):
        ScramClientExchange("u", "emoji \U0001f980", [SCRAM_SHA_256])
    with pytest.raises(AuthenticationFailed, match="SASLprep"):
        ScramClientExchange("u", "", [SCRAM_SHA_256])


def test_channel_binding_type_is_checked() -> None:
    with pytest.raises(ValueError, match="tls-unique"):
        ScramServerExchange(PENCIL, channel_binding=("tls-unique", b"x"))
    with pytest.raises(ValueError, match="non-empty"):
        ScramClientExchange("u", "p", [SCRAM_SHA_256], channel_binding=(TLS_SERVER_END_POINT, b""))


# --------------------------------------------------------------------------- verifiers


def test_verifier_matches_scramp() -> None:
    salt = bytes(range(16))
    ours = make_scram_verifier("pencil", iterations=5000, salt=salt)
    theirs = ScramMechanism(SCRAM_SHA_256).make_auth_info("pencil", iteration_count=5000, salt=salt)
    assert (ours.salt, ours.stored_key, ours.server_key, ours.iterations) == theirs


def test_verifier_saslprep_and_raw_fallback() -> None:
    salt = bytes(16)
    # SASLprep (RFC 4013 examples): soft hyphen maps to nothing, U+00AA to "a".
    assert make_scram_verifier("I\u00adX", salt=salt) == make_scram_verifier("IX", salt=salt)
    assert make_scram_verifier("\u00aa", salt=salt) == make_scram_verifier("a", salt=salt)
    # Refused by SASLprep (unassigned in Unicode 3.2): the raw UTF-8 is used, as PostgreSQL does.
    crab = make_scram_verifier("\U0001f980", salt=salt)
    salted = hashlib.pbkdf2_hmac("sha256", "\U0001f980".encode(), salt, DEFAULT_ITERATIONS)
    client_key = hmac.new(salted, b"Client Key", "sha256").digest()
    assert crab.stored_key == hashlib.sha256(client_key).digest()
    assert verify_cleartext(crab, "\U0001f980")


def test_verifier_validation_and_repr() -> None:
    with pytest.raises(ValueError, match="empty"):
        make_scram_verifier("")
    with pytest.raises(ValueError, match="iterations"):
        make_scram_verifier("x", iterations=100)
    with pytest.raises(ValueError, match="salt"):
        make_scram_verifier("x", salt=b"")
    assert "stored_key" not in repr(PENCIL)
    assert "server_key" not in repr(PENCIL)
    assert make_scram_verifier("x").salt != make_scram_verifier("x").salt


def test_postgres_secret_format() -> None:
    # The RFC vector as PostgreSQL stores it (the keys follow from salt and password).
    secret = RFC_VERIFIER.to_postgres_secret()
    assert secret.startswith("SCRAM-SHA-256$4096:W22ZaJ0SNY7soEsUEjb6gQ==$")
    assert ScramVerifier.from_postgres_secret(secret) == RFC_VERIFIER
    for bad in ["", "md5abc", "SCRAM-SHA-256$x:AA==$AA==:AA==", secret.replace("$4096", "$ 4096")]:
        with pytest.raises(ValueError, match="not a PostgreSQL"):
            ScramVerifier.from_postgres_secret(bad)


def test_verify_cleartext() -> None:
    assert verify_cleartext(PENCIL, "pencil")
    assert not verify_cleartext(PENCIL, "pencil ")
    assert not verify_cleartext(None, "pencil")
    assert not verify_cleartext(PENCIL, "\udcff")  # a lone surrogate does not raise


# --------------------------------------------------------------------------- md5


def test_md5_password_message() -> None:
    salt = b"\x01\x02\x03\xff"
    inner = hashlib.md5(b"secretalice", usedforsecurity=False).hexdigest()
    outer = hashlib.md5(inner.encode() + salt, usedforsecurity=False).hexdigest()
    assert md5_password_message("alice", "secret", salt) == f"md5{outer}".encode()
    assert md5_password_message("alice", "secret", salt) != md5_password_message("bob", "secret", salt)
    with pytest.raises(ValueError, match="4 bytes"):
        md5_password_message("alice", "secret", b"abc")


# --------------------------------------------------------------------------- channel binding hash


def _self_signed(
    key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey,
    algorithm: hashes.SHA256 | hashes.SHA384 | hashes.SHA512 | None,
) -> bytes:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "test")])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(days=1))
        .sign(key, algorithm)
    )
    return certificate.public_bytes(serialization.Encoding.DER)


@pytest.fixture(scope="module")
def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def test_end_point_hash_uses_the_signature_hash(rsa_key: rsa.RSAPrivateKey) -> None:
    ecdsa_sha256 = _self_signed(ec.generate_private_key(ec.SECP256R1()), hashes.SHA256())
    rsa_sha384 = _self_signed(rsa_key, hashes.SHA384())
    rsa_sha512 = _self_signed(rsa_key, hashes.SHA512())
    assert tls_server_end_point_hash(ecdsa_sha256) == hashlib.sha256(ecdsa_sha256).digest()
    assert tls_server_end_point_hash(rsa_sha384) == hashlib.sha384(rsa_sha384).digest()
    assert tls_server_end_point_hash(rsa_sha512) == hashlib.sha512(rsa_sha512).digest()
    for der in (ecdsa_sha256, rsa_sha384, rsa_sha512):  # scramp (asn1crypto) agrees
        assert tls_server_end_point_hash(der) == CBindData.from_der(der).data


@pytest.mark.parametrize("weak_oid_last_byte", [0x04, 0x05], ids=["md5", "sha1"])
def test_end_point_hash_upgrades_md5_and_sha1(rsa_key: rsa.RSAPrivateKey, weak_oid_last_byte: int) -> None:
    # cryptography no longer signs with MD5/SHA-1, so relabel a sha256WithRSAEncryption
    # certificate (OID 1.2.840.113549.1.1.11) as md5/sha1WithRSAEncryption (...1.4 / ...1.5).
    der = _self_signed(rsa_key, hashes.SHA256())
    sha256_oid = bytes.fromhex("06092a864886f70d01010b")
    assert der.count(sha256_oid) == 2  # in the TBSCertificate and in the outer structure
    weak = der.replace(sha256_oid, sha256_oid[:-1] + bytes([weak_oid_last_byte]))
    assert tls_server_end_point_hash(weak) == hashlib.sha256(weak).digest()
    assert tls_server_end_point_hash(weak) == CBindData.from_der(weak).data


def test_end_point_hash_undefined_cases() -> None:
    with pytest.raises(ValueError, match="no single hash"):
        tls_server_end_point_hash(_self_signed(ed25519.Ed25519PrivateKey.generate(), None))
    with pytest.raises(ValueError, match="DER"):
        tls_server_end_point_hash(b"not a certificate")


_SERVER_ATTRIBUTE = st.builds(
    lambda key, value: f"{key}={value}",
    st.sampled_from("rsievm"),
    st.one_of(
        st.text(st.characters(codec="utf-8"), max_size=12),
        st.integers(0, 5000).map(str),
        st.binary(min_size=12, max_size=18).map(lambda b: base64.b64encode(b).decode()),
    ),
)


@given(
    data=st.one_of(
        st.binary(max_size=300),
        st.lists(_SERVER_ATTRIBUTE, max_size=4).map(lambda a: ",".join(a).encode()),
    )
)
def test_fuzz_server_messages_to_client(data: bytes) -> None:
    # Whatever a (fake) upstream sends, the client either goes on or raises AuthenticationFailed.
    for step in ("server-first", "server-final"):
        client = ScramClientExchange("user", "pencil", [SCRAM_SHA_256], client_nonce=RFC_CLIENT_NONCE)
        client.client_first()
        spliced = data.replace(b"r=", b"r=" + RFC_CLIENT_NONCE.encode(), 1)
        try:
            if step == "server-first":
                client.client_final(spliced)
            else:
                client.client_final(RFC_SERVER_FIRST)
                client.verify_server_final(data)
        except AuthenticationFailed:
            continue
        assert step == "server-first" or data == RFC_SERVER_FINAL
