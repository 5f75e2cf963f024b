"""Mask strategies applied to one wire value, keeping it valid for the column type and the
client's decoder.

Owns: `build_masker(strategy, column, fmt, key=...)`, which picks once per column a `Masker`
(one call per value: raw wire bytes in, masked wire bytes or None for SQL NULL out),
`mask_value` for one-off use, and for callers that mask many e-mail addresses themselves
`is_plain_email_masker` / `plain_addresses` (which values the `email` masker turns into
`****@` + the domain). What each strategy gives per type is documented in
docs/masking.md and is the contract here: a text slot gets text the type's input function
accepts, a binary slot a well-formed binary value of the type (never text bytes), and a type
masking cannot produce a valid value for gets NULL. Must not: know sessions, sockets or
message framing (values arrive already cut out of DataRow / row packets), or find values by
content (`masking.detectors`).
"""

from __future__ import annotations

import abc
import codecs
import datetime
import decimal
import functools
import hashlib
import hmac
import ipaddress
import json
import re
import struct
import uuid
import weakref
from collections.abc import Callable, Sequence
from typing import Final

from dbguard.masking.columns import (
    ColumnKind,
    ColumnShape,
    Dialect,
    MysqlColumn,
    PgColumn,
    WireFormat,
    shape_of,
)
from dbguard.policy.rules import MaskStrategy

__all__ = [
    "FULL_MASK",
    "HASH_CHARS",
    "Masker",
    "build_masker",
    "is_plain_email_masker",
    "mask_email",
    "mask_partial",
    "mask_value",
    "plain_addresses",
]

# One value in (its raw bytes as they appear on the wire, never NULL), the masked value out
# (None: send SQL NULL). NULL is never masked: the caller keeps it.
Masker = Callable[[bytes], bytes | None]

FULL_MASK: Final = "****"
HASH_CHARS: Final = 16  # hex characters of the HMAC in a hashed text value (64 bits)
_KEEP: Final = 4  # `partial` keeps this many trailing characters

_EMAIL_RE: Final = re.compile(r"[^@\s]+@([^@\s]+)")
_EMAIL_PREFIX: Final = b"****@"
# mask_email's pattern on ASCII bytes (non-ASCII values take the decoding path).
_EMAIL_ASCII: Final = re.compile(
    rb"[\t\n\v\f\r\x1c-\x1f ]*[^@\s\x1c-\x1f\x80-\xff]+@([^@\s\x1c-\x1f\x80-\xff]+)[\t\n\v\f\r\x1c-\x1f ]*"
).fullmatch
# Codecs in which ASCII text is its own bytes (the e-mail fast path works on those bytes).
_ASCII_COMPATIBLE: Final = frozenset({"utf-8", "ascii", "latin-1", "iso8859-1", "cp1252", "iso8859-15"})
# A plain address (`plain_addresses`) is made of these bytes and one '@'.
_PLAIN_NOT_AT: Final = bytes(b for b in range(0x21, 0x80) if b != 0x40)
# The `email` maskers that use the ASCII fast path (`is_plain_email_masker`).
_PLAIN_EMAIL_MASKERS: Final[weakref.WeakSet[Callable[[bytes], bytes | None]]] = weakref.WeakSet()
_EPOCH: Final = datetime.datetime(1970, 1, 1, tzinfo=datetime.UTC)
_EPOCH_DATE: Final = datetime.date(1970, 1, 1)
_PG_EPOCH_DAYS: Final = 10957  # 1970-01-01 -> 2000-01-01
_PG_EPOCH_SECONDS: Final = _PG_EPOCH_DAYS * 86400
_HASH_SECONDS: Final = 2**31 - 2  # hashed timestamps stay in 1970-01-01 00:00:01 .. 2038-01-19
_HASH_DAYS: Final = _HASH_SECONDS // 86400
_MAX_DIGITS: Final = 15  # hashed numerics: at most this many integer digits
_DEC: Final = decimal.Context(prec=decimal.MAX_PREC)
_PG_NUMERIC_SPECIAL: Final = {0xC000: "NaN", 0xD000: "Infinity", 0xF000: "-Infinity"}


def _null(_value: bytes) -> None:
    return None


def _unchanged(value: bytes) -> bytes:
    return value


def _constant(out: bytes) -> Masker:
    def masker(_value: bytes) -> bytes:
        return out

    return masker


def _digester(key: bytes) -> Callable[[bytes], bytes]:
    """Keyed HMAC-SHA256: stable for a key, unpredictable without it."""
    base = hmac.new(key, digestmod=hashlib.sha256)

    def digest(data: bytes) -> bytes:
        h = base.copy()
        h.update(data)
        return h.digest()

    return digest


def _hash_int(digest: bytes) -> int:
    return int.from_bytes(digest[:8], "big")


# ---------------------------------------------------------------------------------------------
# Text helpers (shared with the detectors' redaction)


def mask_partial(text: str) -> str:
    """Keep the last four characters and replace the others by '*' (same length). Four
    characters or fewer: all replaced."""
    n = len(text)
    return "*" * (n - _KEEP) + text[-_KEEP:] if n > _KEEP else "*" * n


def mask_email(text: str) -> str | None:
    """`****@domain` for an e-mail address, None for anything else."""
    m = _EMAIL_RE.fullmatch(text.strip())
    return f"{FULL_MASK}@{m.group(1)}" if m else None


def plain_addresses(values: Sequence[bytes]) -> bool:
    """True when every value is a plain address: bytes 0x21-0x7f only (no space, control or
    non-ASCII byte) and exactly one '@', neither first nor last. For each of them the masker
    `is_plain_email_masker` accepts gives `****@` + what follows the '@' (all that
    `_EMAIL_ASCII` can match there). One pass over all the values: a caller that rewrites
    many values itself checks them at once."""
    # Joined with NULs (not plain): once the plain bytes other than '@' are deleted, what is
    # left must be "\0@\0@...\0": one '@' per value, nothing else; then no NUL next to an '@'.
    if not values:
        return True
    joined = b"\x00" + b"\x00".join(values) + b"\x00"
    return (joined.translate(None, _PLAIN_NOT_AT) == b"\x00@" * len(values) + b"\x00"
            and b"\x00@" not in joined and b"@\x00" not in joined)


def is_plain_email_masker(masker: Masker) -> bool:
    """True for the `email` masker of a text column whose encoding is ASCII-compatible (not
    char(n), no length limit): it masks every value `plain_addresses` accepts as `****@` +
    what follows the '@', so a caller may cut those values itself (the PostgreSQL row
    rewriter does, a whole run of DataRows at a time)."""
    return masker in _PLAIN_EMAIL_MASKERS


# ---------------------------------------------------------------------------------------------
# Entry points


def build_masker(
    strategy: MaskStrategy,
    column: PgColumn | MysqlColumn,
    fmt: WireFormat | int = WireFormat.TEXT,
    *,
    key: bytes = b"",
) -> Masker:
    """The masker for one result column: call it once per non-NULL value.

    `fmt` is the column's PostgreSQL format code, or for MySQL the text (COM_QUERY) or binary
    (COM_STMT_EXECUTE) protocol. `key` is the HMAC key of the `hash` strategy (required there,
    ignored otherwise). Built maskers are cached, so building one per column and result set is
    cheap. Raises ValueError for `hash` without a key or an unknown format code."""
    wire = WireFormat(fmt)
    strategy = MaskStrategy(strategy)
    if strategy is MaskStrategy.HASH and not key:
        raise ValueError("the hash strategy needs a non-empty key")
    return _build(strategy, column, wire, key if strategy is MaskStrategy.HASH else b"")


def mask_value(
    strategy: MaskStrategy,
    value: bytes | None,
    column: PgColumn | MysqlColumn,
    fmt: WireFormat | int = WireFormat.TEXT,
    *,
    key: bytes = b"",
) -> bytes | None:
    """Mask one value (NULL stays NULL). For many values, build the masker once."""
    if value is None:
        return None
    return build_masker(strategy, column, fmt, key=key)(value)


@functools.lru_cache(maxsize=4096)
def _build(strategy: MaskStrategy, column: PgColumn | MysqlColumn, fmt: WireFormat, key: bytes) -> Masker:
    shape = shape_of(column)
    if shape.kind is ColumnKind.ALWAYS_NULL:
        return _unchanged
    if strategy is MaskStrategy.NULL or shape.kind is ColumnKind.UNSUPPORTED:
        return _null
    if shape.kind is ColumnKind.TEXT:
        return _text_masker(strategy, shape, key)
    if shape.kind is ColumnKind.BYTES:
        return _bytes_masker(strategy, shape, fmt, key)
    if shape.kind in (ColumnKind.JSON, ColumnKind.JSONB):
        return _json_masker(strategy, shape, fmt, key)
    if shape.kind is ColumnKind.BIT:
        return _bit_masker(strategy, key)
    # Every other type has no partial or e-mail form: those give the full mask.
    codec = _CODECS[shape.kind](shape, fmt)
    if strategy is MaskStrategy.HASH:
        return _hashing(codec, _digester(key))
    return _constant(codec.render(codec.zero))


# ---------------------------------------------------------------------------------------------
# Text and bytes


def _text_masker(strategy: MaskStrategy, shape: ColumnShape, key: bytes) -> Masker:
    codec = shape.codec or "utf-8"
    limit, fixed = shape.max_chars, shape.fixed

    def encode(text: str) -> bytes:
        try:
            return text.encode(codec)
        except UnicodeEncodeError:
            return ("*" * len(text)).encode(codec)

    def decode(value: bytes) -> str | None:
        try:
            return value.decode(codec)
        except UnicodeDecodeError:
            return None

    # full
    if fixed and limit is not None:
        full_const = ("*" * limit).encode(codec)

        def full(value: bytes) -> bytes:
            return full_const
    elif fixed:

        def full(value: bytes) -> bytes:
            text = value.decode(codec, errors="replace")
            return ("*" * len(text)).encode(codec)

    else:
        var_const = FULL_MASK[:limit].encode(codec)

        def full(value: bytes) -> bytes:
            return var_const

    if strategy is MaskStrategy.FULL:
        return full

    if strategy is MaskStrategy.PARTIAL:

        def partial(value: bytes) -> bytes:
            text = decode(value)
            if text is None:
                return full(value)
            if fixed:
                core = text.rstrip(" ")
                return encode(mask_partial(core).ljust(len(text)))
            return encode(mask_partial(text))

        return partial

    if strategy is MaskStrategy.EMAIL:
        ascii_compatible = codecs.lookup(codec).name in _ASCII_COMPATIBLE and not fixed and limit is None

        def email(value: bytes) -> bytes:
            if ascii_compatible:
                # The common case without decoding: an ASCII address (as mask_email).
                match = _EMAIL_ASCII(value)
                if match is not None:
                    return _EMAIL_PREFIX + match.group(1)
            text = decode(value)
            masked = mask_email(text) if text is not None else None
            if text is None or masked is None or (limit is not None and len(masked) > limit):
                return full(value)
            return encode(masked.ljust(len(text)) if fixed else masked)

        if ascii_compatible:
            _PLAIN_EMAIL_MASKERS.add(email)
        return email

    digest = _digester(key)

    def hashed(value: bytes) -> bytes:
        text = decode(value)
        if text is None:
            hexed = digest(value).hex()
            width = len(value) if fixed else HASH_CHARS
        else:
            if fixed:
                text_core = text.rstrip(" ")
                width = len(text)
            else:
                text_core, width = text, HASH_CHARS
            hexed = digest(text_core.encode("utf-8")).hex()
        if fixed:  # char(n): n characters, the hash then blanks (compares equal to the text form)
            n = limit if limit is not None else width
            return encode(hexed[: min(HASH_CHARS, n)].ljust(n))
        return encode(hexed[: width if limit is None else min(width, limit)])

    return hashed


def _pg_bytea_in(text: bytes) -> bytes | None:
    """bytea's text output (hex `\\x…` or escape format) back to bytes; None if malformed."""
    if text.startswith(b"\\x"):
        try:
            return bytes.fromhex(text[2:].decode("ascii"))
        except ValueError:
            return None
    out = bytearray()
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if c != 0x5C:
            out.append(c)
            i += 1
        elif text[i + 1 : i + 2] == b"\\":
            out.append(0x5C)
            i += 2
        elif len(text) >= i + 4 and all(0x30 <= d <= 0x37 for d in text[i + 1 : i + 4]):
            out.append(int(text[i + 1 : i + 4], 8) & 0xFF)
            i += 4
        else:
            return None
    return bytes(out)


def _bytes_masker(strategy: MaskStrategy, shape: ColumnShape, fmt: WireFormat, key: bytes) -> Masker:
    limit, fixed = shape.max_chars, shape.fixed
    pg_text = shape.dialect is Dialect.POSTGRES and fmt is WireFormat.TEXT

    def full_bytes(raw: bytes) -> bytes:
        if fixed:
            return b"*" * (limit if limit is not None else len(raw))
        return FULL_MASK.encode()[:limit]

    def partial_bytes(raw: bytes) -> bytes:
        return mask_partial(raw.decode("latin-1")).encode("latin-1")

    digest = _digester(key) if strategy is MaskStrategy.HASH else None

    def hash_bytes(raw: bytes) -> bytes:
        assert digest is not None
        if fixed:  # BINARY(n): n bytes, padded with zero bytes as the server pads
            n = limit if limit is not None else len(raw)
            return digest(raw).hex()[: min(HASH_CHARS, n)].encode("ascii").ljust(n, b"\x00")
        return digest(raw).hex()[: HASH_CHARS if limit is None else min(HASH_CHARS, limit)].encode("ascii")

    if strategy is MaskStrategy.PARTIAL:
        inner: Callable[[bytes], bytes] = partial_bytes
    elif strategy is MaskStrategy.HASH:
        inner = hash_bytes
    else:
        inner = full_bytes
    if not pg_text:
        if inner is full_bytes and not fixed:
            return _constant(full_bytes(b""))
        return inner
    if inner is full_bytes:
        return _constant(b"\\x" + full_bytes(b"").hex().encode("ascii"))

    def pg_text_bytes(value: bytes) -> bytes:
        raw = _pg_bytea_in(value)
        out = inner(raw) if raw is not None else full_bytes(b"")
        return b"\\x" + out.hex().encode("ascii")

    return pg_text_bytes


def _bit_masker(strategy: MaskStrategy, key: bytes) -> Masker:
    if strategy is MaskStrategy.HASH:
        digest = _digester(key)

        def hashed(value: bytes) -> bytes:
            n = len(value)
            return (digest(value) * (n // 32 + 1))[:n]

        return hashed

    def zero(value: bytes) -> bytes:
        return bytes(len(value))

    return zero


# ---------------------------------------------------------------------------------------------
# JSON


def _json_masker(strategy: MaskStrategy, shape: ColumnShape, fmt: WireFormat, key: bytes) -> Masker:
    codec = shape.codec or "utf-8"
    jsonb_binary = shape.kind is ColumnKind.JSONB and fmt is WireFormat.BINARY
    prefix = b"\x01" if jsonb_binary else b""

    def out(doc: str) -> bytes:
        return prefix + doc.encode(codec)

    full_const = out(json.dumps(FULL_MASK))
    if strategy is MaskStrategy.FULL:
        return _constant(full_const)

    def inner_string(value: bytes) -> tuple[str | None, bytes]:
        """(the string if the document is one JSON string, the document's canonical bytes)."""
        body = value[1:] if jsonb_binary and value[:1] == b"\x01" else value
        stripped = body.strip()
        if stripped[:1] == b'"':
            try:
                parsed = json.loads(stripped.decode(codec))
            except (UnicodeDecodeError, ValueError):
                return None, body
            if isinstance(parsed, str):
                return parsed, parsed.encode("utf-8")
        return None, body

    if strategy is MaskStrategy.HASH:
        digest = _digester(key)

        def hashed(value: bytes) -> bytes:
            _, canon = inner_string(value)
            return out(json.dumps(digest(canon).hex()[:HASH_CHARS]))

        return hashed

    text_mask: Callable[[str], str | None] = mask_partial if strategy is MaskStrategy.PARTIAL else mask_email

    def masked(value: bytes) -> bytes:
        text, _ = inner_string(value)
        result = text_mask(text) if text is not None else None
        return full_const if result is None else out(json.dumps(result))  # ASCII: fits any encoding

    return masked


# ---------------------------------------------------------------------------------------------
# Scalar types: each kind's codec renders a Python value in the column's wire format, reads a
# wire value into canonical bytes (equal values hash equal in text and binary format), and
# derives a hashed value from an HMAC digest.


class _Codec(abc.ABC):
    zero: object = 0

    def __init__(self, shape: ColumnShape, fmt: WireFormat) -> None:
        self.shape = shape
        self.binary = fmt is WireFormat.BINARY
        self.pg = shape.dialect is Dialect.POSTGRES

    @abc.abstractmethod
    def render(self, value: object) -> bytes:
        """`value` in the column's wire format."""

    def canonical(self, raw: bytes) -> bytes:
        return raw

    @abc.abstractmethod
    def derive(self, digest: bytes) -> object:
        """A value of the column's type derived from an HMAC digest (the hash strategy)."""


def _hashing(codec: _Codec, digest: Callable[[bytes], bytes]) -> Masker:
    render, canonical, derive = codec.render, codec.canonical, codec.derive

    def hashed(value: bytes) -> bytes:
        try:
            canon = canonical(value)
        except (ValueError, struct.error, IndexError, ArithmeticError, OverflowError):
            canon = value
        return render(derive(digest(canon)))

    return hashed


class _IntCodec(_Codec):
    def render(self, value: object) -> bytes:
        assert isinstance(value, int)
        s = self.shape
        if not self.binary:
            return (b"%04d" if s.int_bits == 0 else b"%d") % value
        return value.to_bytes(s.int_bytes, "big" if self.pg else "little", signed=s.signed)

    def canonical(self, raw: bytes) -> bytes:
        if self.binary:
            signed = self.shape.signed and self.shape.int_bits != 0
            return b"%d" % int.from_bytes(raw, "big" if self.pg else "little", signed=signed)
        return b"%d" % int(raw)

    def derive(self, digest: bytes) -> object:
        s = self.shape
        if s.int_bits == 0:  # MySQL YEAR: 1901..2155
            return 1901 + _hash_int(digest) % 255
        return _hash_int(digest) % (1 << (s.int_bits - 1 if s.signed else s.int_bits))


def _pg_numeric_bytes(value: int, dscale: int) -> bytes:
    digits: list[int] = []
    while value:
        value, d = divmod(value, 10000)
        digits.append(d)
    digits.reverse()
    weight = len(digits) - 1 if digits else 0
    while digits and digits[-1] == 0:
        digits.pop()
    return struct.pack(f">hhHH{len(digits)}H", len(digits), weight, 0, dscale, *digits)


def _pg_numeric_text(raw: bytes) -> str:
    ndigits, weight, sign, _dscale = struct.unpack_from(">hhHH", raw)
    if sign in _PG_NUMERIC_SPECIAL:
        return _PG_NUMERIC_SPECIAL[sign]
    n = 0
    for d in struct.unpack_from(f">{ndigits}H", raw, 8):
        n = n * 10000 + d
    value = decimal.Decimal((1 if sign == 0x4000 else 0, tuple(int(c) for c in str(n)), (weight - ndigits + 1) * 4))
    return str(value.normalize(_DEC))


class _NumericCodec(_Codec):
    def __init__(self, shape: ColumnShape, fmt: WireFormat) -> None:
        super().__init__(shape, fmt)
        self.scale = max(shape.scale, 0)
        whole = _MAX_DIGITS if shape.precision is None else shape.precision - shape.scale
        self.digits = max(0, min(_MAX_DIGITS, whole))

    def render(self, value: object) -> bytes:
        assert isinstance(value, int)
        if self.binary and self.pg:
            return _pg_numeric_bytes(value, self.scale)
        return (b"%d.%s" % (value, b"0" * self.scale)) if self.scale else b"%d" % value

    def canonical(self, raw: bytes) -> bytes:
        if self.binary and self.pg:
            return _pg_numeric_text(raw).encode()
        return str(decimal.Decimal(raw.decode("ascii").strip()).normalize(_DEC)).encode()

    def derive(self, digest: bytes) -> object:
        return _hash_int(digest) % (10**self.digits)


class _FloatCodec(_Codec):
    def __init__(self, shape: ColumnShape, fmt: WireFormat) -> None:
        super().__init__(shape, fmt)
        letter = "f" if shape.int_bytes == 4 else "d"
        self.struct = struct.Struct((">" if self.pg else "<") + letter)
        self.single = struct.Struct("<f") if letter == "f" else None

    def render(self, value: object) -> bytes:
        assert isinstance(value, int)
        return self.struct.pack(float(value)) if self.binary else b"%d" % value

    def canonical(self, raw: bytes) -> bytes:
        if self.binary:
            x = float(self.struct.unpack(raw)[0])
        else:
            x = float(raw)
            if self.single is not None:  # a float4 as text is rounded: compare as float4
                x = float(self.single.unpack(self.single.pack(x))[0])
        return repr(x).encode()

    def derive(self, digest: bytes) -> object:
        return _hash_int(digest) % (1 << 24)  # exact in float4


class _BoolCodec(_Codec):
    zero = False

    def render(self, value: object) -> bytes:
        if self.binary:
            return b"\x01" if value else b"\x00"
        return b"t" if value else b"f"

    def canonical(self, raw: bytes) -> bytes:
        return b"t" if raw in (b"\x01", b"t", b"true", b"1") else b"f"

    def derive(self, digest: bytes) -> object:
        return bool(digest[0] & 1)


class _DateCodec(_Codec):
    """Values are days since 1970-01-01."""

    def render(self, value: object) -> bytes:
        assert isinstance(value, int)
        if self.binary and self.pg:
            return struct.pack(">i", value - _PG_EPOCH_DAYS)
        d = _EPOCH_DATE + datetime.timedelta(days=value)
        if self.binary:
            return struct.pack("<HBB", d.year, d.month, d.day)
        return d.isoformat().encode()

    def canonical(self, raw: bytes) -> bytes:
        if self.binary and self.pg:
            days = struct.unpack(">i", raw)[0] + _PG_EPOCH_DAYS
            return (_EPOCH_DATE + datetime.timedelta(days=days)).isoformat().encode()
        if self.binary:
            y, m, d = struct.unpack_from("<HBB", raw) if raw else (0, 0, 0)
            return b"%04d-%02d-%02d" % (y, m, d)
        return raw.strip()

    def derive(self, digest: bytes) -> object:
        return _hash_int(digest) % _HASH_DAYS


class _TimestampCodec(_Codec):
    """Values are whole seconds since 1970-01-01 00:00:00 (UTC for timestamptz)."""

    def __init__(self, shape: ColumnShape, fmt: WireFormat) -> None:
        super().__init__(shape, fmt)
        self.tz = shape.kind is ColumnKind.TIMESTAMPTZ
        self.fraction = b"." + b"0" * shape.decimals if shape.decimals else b""

    def render(self, value: object) -> bytes:
        assert isinstance(value, int)
        if self.binary and self.pg:
            return struct.pack(">q", (value - _PG_EPOCH_SECONDS) * 1_000_000)
        t = _EPOCH + datetime.timedelta(seconds=value)
        if self.binary:
            return struct.pack("<HBBBBB", t.year, t.month, t.day, t.hour, t.minute, t.second)
        text = t.strftime("%Y-%m-%d %H:%M:%S").encode() + self.fraction
        return text + b"+00" if self.tz else text

    def canonical(self, raw: bytes) -> bytes:
        if self.binary and self.pg:
            return b"%d" % (struct.unpack(">q", raw)[0] + _PG_EPOCH_SECONDS * 1_000_000)
        if self.binary:
            y, mo, d = struct.unpack_from("<HBB", raw) if raw else (0, 0, 0)
            h, mi, s = tuple(raw[4:7]) if len(raw) >= 7 else (0, 0, 0)
            us = int.from_bytes(raw[7:11], "little") if len(raw) == 11 else 0
            t = datetime.datetime(y, mo, d, h, mi, s, us, tzinfo=datetime.UTC)
        else:
            t = datetime.datetime.fromisoformat(raw.decode("ascii").strip())
            if t.tzinfo is None:
                t = t.replace(tzinfo=datetime.UTC)
        return b"%d" % ((t - _EPOCH) // datetime.timedelta(microseconds=1))

    def derive(self, digest: bytes) -> object:
        return 1 + _hash_int(digest) % _HASH_SECONDS


_TIME_RE: Final = re.compile(
    rb"\s*(-?)(\d+):(\d\d):(\d\d)(?:\.(\d{1,6}))?(?:([+-])(\d\d)(?::?(\d\d))?(?::?(\d\d))?)?\s*\Z"
)


class _TimeCodec(_Codec):
    """Values are whole seconds since midnight."""

    def __init__(self, shape: ColumnShape, fmt: WireFormat) -> None:
        super().__init__(shape, fmt)
        self.tz = shape.kind is ColumnKind.TIMETZ
        self.fraction = b"." + b"0" * shape.decimals if shape.decimals else b""

    def render(self, value: object) -> bytes:
        assert isinstance(value, int)
        if self.binary and self.pg:
            us = value * 1_000_000
            return struct.pack(">qi", us, 0) if self.tz else struct.pack(">q", us)
        h, rest = divmod(value, 3600)
        if self.binary:
            return struct.pack("<BIBBB", 0, 0, h, rest // 60, rest % 60) if value else b""
        text = b"%02d:%02d:%02d" % (h, rest // 60, rest % 60) + self.fraction
        return text + b"+00" if self.tz else text

    def canonical(self, raw: bytes) -> bytes:
        if self.binary and self.pg:
            if self.tz:
                us, west = struct.unpack(">qi", raw)
                return b"%d%+d" % (us, -west)
            return b"%d" % struct.unpack(">q", raw)[0]
        if self.binary:
            if not raw:
                return b"0"
            neg, days, h, m, s = struct.unpack_from("<BIBBB", raw)
            us = int.from_bytes(raw[8:12], "little") if len(raw) == 12 else 0
            total = ((days * 24 + h) * 60 + m) * 60 * 1_000_000 + s * 1_000_000 + us
            return b"%d" % (-total if neg else total)
        match = _TIME_RE.match(raw)
        if match is None or (self.tz and match.group(6) is None):
            return raw
        sign, hh, mm, ss, frac, zone, zh, zm, zs = match.groups()
        total = ((int(hh) * 60 + int(mm)) * 60 + int(ss)) * 1_000_000 + int((frac or b"").ljust(6, b"0"))
        total = -total if sign else total
        if not self.tz:
            return b"%d" % total
        east = int(zh) * 3600 + int(zm or 0) * 60 + int(zs or 0)
        return b"%d%+d" % (total, -east if zone == b"-" else east)

    def derive(self, digest: bytes) -> object:
        return _hash_int(digest) % 86400


class _UuidCodec(_Codec):
    zero = bytes(16)

    def render(self, value: object) -> bytes:
        assert isinstance(value, bytes)
        return value if self.binary else str(uuid.UUID(bytes=value)).encode()

    def canonical(self, raw: bytes) -> bytes:
        return raw if self.binary else uuid.UUID(raw.decode("ascii").strip()).bytes

    def derive(self, digest: bytes) -> object:
        b = bytearray(digest[:16])
        b[6] = (b[6] & 0x0F) | 0x80  # RFC 9562 version 8 (custom)
        b[8] = (b[8] & 0x3F) | 0x80  # RFC 4122 variant
        return bytes(b)


_PGSQL_AF_INET: Final = 2
_PGSQL_AF_INET6: Final = 3


class _InetCodec(_Codec):
    zero = bytes(4)

    def render(self, value: object) -> bytes:
        assert isinstance(value, bytes)
        cidr = self.shape.kind is ColumnKind.CIDR
        if self.binary:
            return bytes((_PGSQL_AF_INET, 32, 1 if cidr else 0, 4)) + value
        text = str(ipaddress.IPv4Address(value))
        return (text + "/32" if cidr else text).encode()

    def canonical(self, raw: bytes) -> bytes:
        if self.binary:
            family, bits, _is_cidr, nb = raw[0], raw[1], raw[2], raw[3]
            addr = raw[4 : 4 + nb]
            ip: ipaddress.IPv4Address | ipaddress.IPv6Address = (
                ipaddress.IPv4Address(addr) if family == _PGSQL_AF_INET else ipaddress.IPv6Address(addr)
            )
            return f"{ip}/{bits}".encode()
        return str(ipaddress.ip_interface(raw.decode("ascii").strip())).encode()

    def derive(self, digest: bytes) -> object:
        return digest[:4]


_CODECS: Final[dict[ColumnKind, Callable[[ColumnShape, WireFormat], _Codec]]] = {
    ColumnKind.INT: _IntCodec,
    ColumnKind.NUMERIC: _NumericCodec,
    ColumnKind.FLOAT: _FloatCodec,
    ColumnKind.BOOL: _BoolCodec,
    ColumnKind.DATE: _DateCodec,
    ColumnKind.TIMESTAMP: _TimestampCodec,
    ColumnKind.TIMESTAMPTZ: _TimestampCodec,
    ColumnKind.TIME: _TimeCodec,
    ColumnKind.TIMETZ: _TimeCodec,
    ColumnKind.UUID: _UuidCodec,
    ColumnKind.INET: _InetCodec,
    ColumnKind.CIDR: _InetCodec,
}
