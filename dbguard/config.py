# dbguard/config.py — owns dbguard.yaml: finding it (-c / $DBGUARD_CONFIG / ./dbguard.yaml),
# its schema and validation (the line-tracking YAML walking and ${ENV} expansion are shared with
# the rule files in dbguard/yamlfile.py), and the frozen dataclasses the rest of dbguard reads.
# Every error is a ConfigError naming file, line and key path. It checks that referenced files
# exist but never opens sockets or stores, and never puts a secret in a message.
from __future__ import annotations

import hmac
import ipaddress
import math
import os
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from enum import StrEnum
from pathlib import Path
from typing import Final, Generic, Literal, NamedTuple, TypeVar, final
from urllib.parse import quote, unquote, urlsplit

from yaml.nodes import Node

from dbguard.yamlfile import TAG_BOOL as _TAG_BOOL
from dbguard.yamlfile import TAG_NULL as _TAG_NULL
from dbguard.yamlfile import ConfigError, EnvRefs, YamlReader, compose_yaml, expand_env, read_yaml_text
from dbguard.yamlfile import choices as _choices
from dbguard.yamlfile import echo as _echo
from dbguard.yamlfile import enum_values as _values
from dbguard.yamlfile import is_null as _is_null
from dbguard.yamlfile import line_of as _line
from dbguard.yamlfile import suggest as _suggest
from dbguard.yamlfile import value_of as _value_of

__all__ = [
    "CONFIG_ENV_VAR",
    "DEFAULT_APPROVAL_TIMEOUT",
    "DEFAULT_CONFIG_NAME",
    "DEFAULT_MAX_CONNECTIONS",
    "DEFAULT_STORE_URL",
    "AdminConfig",
    "ApprovalMode",
    "ApprovalsConfig",
    "Config",
    "ConfigError",
    "FrozenMap",
    "IdentityConfig",
    "IdentityKind",
    "JournalConfig",
    "JournalSync",
    "ListenAddress",
    "ListenerConfig",
    "ListenerProtocol",
    "LogConfig",
    "LogFormat",
    "LogLevel",
    "OnStoreFailure",
    "Secret",
    "SslMode",
    "StoreUrl",
    "TlsConfig",
    "UpstreamDsn",
    "expand_env",
    "format_duration",
    "format_listen_address",
    "load_config",
    "parse_config",
    "parse_duration",
    "parse_listen_address",
    "parse_store_url",
    "parse_upstream_dsn",
    "resolve_config_path",
]

DEFAULT_CONFIG_NAME: Final = "dbguard.yaml"
CONFIG_ENV_VAR: Final = "DBGUARD_CONFIG"
# Relative to the directory of the config file.
DEFAULT_STORE_URL: Final = "sqlite:///./dbguard.db"
DEFAULT_APPROVAL_TIMEOUT: Final = 60.0
DEFAULT_MAX_CONNECTIONS: Final = 1000
# A config file is a few kilobytes; refuse anything absurd before YAML parses it.
MAX_CONFIG_BYTES: Final = 4 * 1024 * 1024

_NAME_RE: Final = re.compile(r"[A-Za-z0-9_.-]+\Z")
# Identity names are database user names for clients: also allow e-mail-like names.
_IDENTITY_NAME_RE: Final = re.compile(r"[A-Za-z0-9_.@+-]{1,63}\Z")
_HOSTNAME_RE: Final = re.compile(r"[A-Za-z0-9_]([A-Za-z0-9_.-]*[A-Za-z0-9_])?\Z")


# ---------------------------------------------------------------------------------------------
# Vocabulary


class ListenerProtocol(StrEnum):
    POSTGRES = "postgres"
    MYSQL = "mysql"


class IdentityKind(StrEnum):
    AGENT = "agent"
    HUMAN = "human"
    SERVICE = "service"


class ApprovalMode(StrEnum):
    WAIT = "wait"
    RETRY = "retry"


class OnStoreFailure(StrEnum):
    """What a session does with a statement whose journal event could not be stored."""

    REFUSE = "refuse"
    ALLOW = "allow"


class JournalSync(StrEnum):
    """How durable a journal event is before its statement is forwarded."""

    NORMAL = "normal"  # written to the store: survives a crash or kill -9 of the proxy
    FULL = "full"  # also flushed to disk (fsync): survives a crash of the machine


class SegmentWrites(StrEnum):
    """How the proxy writes its write-ahead segment files (sqlite store, `sync: normal`)."""

    AUTO = "auto"  # through a memory map where the file system allocates up front, else write()
    WRITE = "write"  # always write(): a failing disk is an error, never a SIGBUS


class LogLevel(StrEnum):
    DEBUG = "debug"
    INFO = "info"
    WARNING = "warning"
    ERROR = "error"


class LogFormat(StrEnum):
    TEXT = "text"
    JSON = "json"


class SslMode(StrEnum):
    DISABLE = "disable"
    ALLOW = "allow"
    PREFER = "prefer"
    REQUIRE = "require"
    VERIFY_CA = "verify-ca"
    VERIFY_FULL = "verify-full"


_K = TypeVar("_K")
_V = TypeVar("_V")


@final
class FrozenMap(Mapping[_K, _V], Generic[_K, _V]):
    """An immutable, hashable, picklable mapping (MappingProxyType is neither of the last two)."""

    __slots__ = ("_data",)

    def __init__(self, data: Mapping[_K, _V] | Iterable[tuple[_K, _V]] = ()) -> None:
        self._data: dict[_K, _V] = dict(data)

    def __getitem__(self, key: _K) -> _V:
        return self._data[key]

    def __iter__(self) -> Iterator[_K]:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)

    def __hash__(self) -> int:
        return hash(frozenset(self._data.items()))

    def __repr__(self) -> str:
        return f"FrozenMap({self._data!r})"


# ---------------------------------------------------------------------------------------------
# Secrets (ConfigError lives in dbguard.yamlfile, shared with the rule files)


@final
class Secret:
    """A secret string that never shows itself in repr(), str() or f-strings.

    Use ``reveal()`` where the value is really needed, ``matches()`` to compare in constant time.
    """

    __slots__ = ("_value",)
    _value: str

    def __init__(self, value: str) -> None:
        object.__setattr__(self, "_value", value)

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError("Secret is immutable")

    def reveal(self) -> str:
        return self._value

    def matches(self, candidate: str | bytes) -> bool:
        other = candidate.encode() if isinstance(candidate, str) else candidate
        return hmac.compare_digest(self._value.encode(), other)

    def __repr__(self) -> str:
        return "Secret('********')"

    def __str__(self) -> str:
        return "********"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Secret):
            return NotImplemented
        return self.matches(other._value)

    def __hash__(self) -> int:
        return hash(("dbguard.Secret", self._value))

    def __len__(self) -> int:
        return len(self._value)

    def __copy__(self) -> Secret:
        return self

    def __deepcopy__(self, memo: object) -> Secret:
        return self

    def __reduce__(self) -> tuple[type[Secret], tuple[str]]:
        return (Secret, (self._value,))


# ---------------------------------------------------------------------------------------------
# Dataclasses


class ListenAddress(NamedTuple):
    host: str
    port: int

    def __str__(self) -> str:
        return format_listen_address(self.host, self.port)


@dataclass(frozen=True)
class TlsConfig:
    cert: Path
    key: Path
    require: bool = False


@dataclass(frozen=True)
class UpstreamDsn:
    """A parsed upstream (or store) URL. ``host`` starting with ``/`` is a Unix socket directory.

    ``params`` holds every query parameter, percent-decoded, with file parameters (sslrootcert,
    sslcert, sslkey) resolved against the config directory; the typed fields repeat the ones the
    proxy acts on, with their defaults applied.
    """

    scheme: str
    host: str
    port: int
    user: str | None
    password: Secret | None
    database: str | None
    params: Mapping[str, str] = field(default_factory=lambda: FrozenMap({}))
    sslmode: SslMode = SslMode.PREFER
    sslrootcert: str | None = None
    connect_timeout: float | None = None

    @property
    def is_unix_socket(self) -> bool:
        return self.host.startswith("/")

    def redacted(self) -> str:
        """The URL with the password replaced by ``***``: safe for logs and messages."""
        return self._url(redact=True)

    def url(self) -> str:
        """The full URL including the password (for a driver; never log it)."""
        return self._url(redact=False)

    def _url(self, *, redact: bool) -> str:
        auth = ""
        if self.user is not None:
            auth = quote(self.user, safe="")
            if self.password is not None:
                shown = "***" if redact else quote(self.password.reveal(), safe="")
                auth += ":" + shown
            auth += "@"
        params = dict(self.params)
        if self.is_unix_socket:
            netloc = auth
            rest = {k: v for k, v in params.items() if k not in ("host", "port")}
            params = {"host": self.host, "port": str(self.port), **rest}
        else:
            netloc = auth + format_listen_address(self.host, self.port)
        db = "/" + quote(self.database, safe="") if self.database is not None else ""
        query = "&".join(f"{quote(k, safe='')}={quote(v, safe='/')}" for k, v in params.items())
        return f"{self.scheme}://{netloc}{db}" + (f"?{query}" if query else "")

    def __str__(self) -> str:
        return self.redacted()


@dataclass(frozen=True)
class ListenerConfig:
    name: str
    protocol: ListenerProtocol
    listen: ListenAddress
    upstream: UpstreamDsn
    tls: TlsConfig | None = None
    allow_cleartext: bool = False
    idle_timeout: float = 0.0  # seconds; 0 = off
    max_connections: int = DEFAULT_MAX_CONNECTIONS


@dataclass(frozen=True)
class IdentityConfig:
    name: str
    kind: IdentityKind
    secret: Secret
    roles: tuple[str, ...] = ()


@dataclass(frozen=True)
class ApprovalsConfig:
    timeout: float = DEFAULT_APPROVAL_TIMEOUT  # seconds
    mode: ApprovalMode = ApprovalMode.WAIT
    # http(s) URLs POSTed a JSON summary when a request is created and resolved. Secrets:
    # a webhook URL usually carries its token (Slack's do).
    webhooks: tuple[Secret, ...] = ()


@dataclass(frozen=True)
class AdminConfig:
    listen: ListenAddress
    token: Secret


# Journal writer defaults (dbguard.journal.writer has the same numbers and their reasons).
DEFAULT_JOURNAL_QUEUE_SIZE: Final = 10_000
DEFAULT_JOURNAL_MAX_BATCH: Final = 1_000


@dataclass(frozen=True)
class JournalConfig:
    """The ``journal:`` section: how events are chained and what happens when the store fails."""

    hmac_key: Secret | None = None  # keys the hash chain (HMAC-SHA256); None: plain SHA-256
    redact_parameters: bool = False  # journal the number of bound parameters, not their values
    on_store_failure: OnStoreFailure = OnStoreFailure.REFUSE
    queue_size: int = DEFAULT_JOURNAL_QUEUE_SIZE
    max_batch: int = DEFAULT_JOURNAL_MAX_BATCH
    # False: sessions write no journal at all (benchmarks, troubleshooting); logged loudly.
    enabled: bool = True
    sync: JournalSync = JournalSync.NORMAL
    segment_writes: SegmentWrites = SegmentWrites.AUTO


@dataclass(frozen=True)
class MaskingConfig:
    """The ``masking:`` section. ``hash_key`` keys the `hash` strategy (HMAC-SHA256): with it,
    hashed values are stable across restarts and proxies; without it, each process draws a
    random key, so they are stable only within one run."""

    hash_key: Secret | None = None


@dataclass(frozen=True)
class LogConfig:
    level: LogLevel = LogLevel.INFO
    format: LogFormat = LogFormat.TEXT


@dataclass(frozen=True)
class StoreUrl:
    """A parsed ``store:`` URL. ``url`` is canonical: ``sqlite:////abs/path.db`` for sqlite."""

    kind: Literal["sqlite", "postgresql"]
    url: str = field(repr=False)
    path: Path | None = None  # the sqlite file; None for sqlite:///:memory: and postgresql
    dsn: UpstreamDsn | None = None  # postgresql only

    def redacted(self) -> str:
        return self.dsn.redacted() if self.dsn is not None else self.url


@dataclass(frozen=True)
class Config:
    path: Path
    listeners: tuple[ListenerConfig, ...]
    identities: tuple[IdentityConfig, ...] = ()
    rules_path: Path | None = None
    store_url: str = field(default=DEFAULT_STORE_URL, repr=False)
    approvals: ApprovalsConfig = field(default_factory=ApprovalsConfig)
    admin: AdminConfig | None = None
    log: LogConfig = field(default_factory=LogConfig)
    journal: JournalConfig = field(default_factory=JournalConfig)
    masking: MaskingConfig = field(default_factory=MaskingConfig)
    # key path -> 1-based line, for errors found after loading (bind failure, store unreachable).
    locations: Mapping[str, int] = field(default_factory=lambda: FrozenMap({}), repr=False, compare=False)
    _identities_by_name: Mapping[str, IdentityConfig] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        by_name = FrozenMap({i.name: i for i in self.identities})
        object.__setattr__(self, "_identities_by_name", by_name)

    @property
    def store(self) -> StoreUrl:
        return parse_store_url(self.store_url, self.path.absolute().parent)

    def identity(self, name: str) -> IdentityConfig | None:
        return self._identities_by_name.get(name)

    def listener(self, name: str) -> ListenerConfig | None:
        return next((lst for lst in self.listeners if lst.name == name), None)

    def secrets(self) -> tuple[Secret, ...]:
        """Every secret in the config: identity secrets, URL passwords, the admin token."""
        found = [i.secret for i in self.identities]
        found += [x.upstream.password for x in self.listeners if x.upstream.password is not None]
        if self.admin is not None:
            found.append(self.admin.token)
        if self.journal.hmac_key is not None:
            found.append(self.journal.hmac_key)
        if self.masking.hash_key is not None:
            found.append(self.masking.hash_key)
        found += self.approvals.webhooks
        store_dsn = self.store.dsn
        if store_dsn is not None and store_dsn.password is not None:
            found.append(store_dsn.password)
        return tuple(found)

    def error(self, key: str, message: str) -> ConfigError:
        """A ConfigError pointing at ``key``'s line, for problems found after loading."""
        return ConfigError(self.path, self.locations.get(key), key, message)


# ---------------------------------------------------------------------------------------------
# Standalone parsers (raise ValueError; the loader adds file, line and key)


_DURATION_UNITS: Final[Mapping[str, Decimal]] = {
    "ms": Decimal("0.001"),
    "s": Decimal(1),
    "m": Decimal(60),
    "h": Decimal(3600),
}
_NUMBER = r"(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)"
_DURATION_PART_RE: Final = re.compile(rf"({_NUMBER})(ms|s|m|h)")
_DURATION_RE: Final = re.compile(rf"(?:{_NUMBER}(?:ms|s|m|h))+\Z")
_BARE_NUMBER_RE: Final = re.compile(rf"{_NUMBER}\Z")


def parse_duration(text: str | float) -> float:
    """``300ms``, ``30s``, ``5m``, ``1h``, ``1h30m`` or a bare number of seconds -> seconds."""
    if isinstance(text, bool):
        raise ValueError("expected a duration such as 30s, 5m or 1h, got a boolean")
    if isinstance(text, int | float):
        if not math.isfinite(text) or text < 0:
            raise ValueError(f"expected a non-negative duration, got {text!r}")
        return float(text)
    s = text.strip()
    if _BARE_NUMBER_RE.match(s):
        return float(s)
    if not _DURATION_RE.match(s):
        raise ValueError(f"expected a duration such as 300ms, 30s, 5m, 1h or a number of seconds, got {_echo(s)}")
    # Exact decimal arithmetic, one rounding at the end: "300ms" is exactly float("0.3").
    total = sum((Decimal(n) * _DURATION_UNITS[u] for n, u in _DURATION_PART_RE.findall(s)), Decimal(0))
    return float(total)


def format_duration(seconds: float) -> str:
    """The shortest readable form that ``parse_duration`` reads back to exactly ``seconds``."""
    if not math.isfinite(seconds) or seconds < 0:
        raise ValueError(f"not a duration: {seconds!r}")
    candidates: list[str] = []
    if seconds == int(seconds):
        whole = int(seconds)
        if whole and whole % 3600 == 0:
            candidates.append(f"{whole // 3600}h")
        if whole and whole % 60 == 0:
            candidates.append(f"{whole // 60}m")
        candidates.append(f"{whole}s")
    elif seconds * 1000 == int(seconds * 1000):
        candidates.append(f"{int(seconds * 1000)}ms")
    # repr() round-trips; written without an exponent it is a plain number of seconds.
    candidates.append(format(Decimal(repr(seconds)), "f") + "s")
    return next(c for c in candidates if parse_duration(c) == seconds)


def parse_listen_address(text: str) -> ListenAddress:
    """``HOST:PORT`` or ``[IPV6]:PORT`` (port 0..65535; 0 = any free port)."""
    s = text.strip()
    hint = "expected HOST:PORT"
    if s.startswith("["):
        end = s.find("]")
        if end < 0 or not s[end + 1 :].startswith(":"):
            raise ValueError(f"{hint}, got {_echo(s)}")
        host, port_text = s[1:end], s[end + 2 :]
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise ValueError(f"{hint}: {_echo(host)} is not an IPv6 address") from None
    else:
        host, sep, port_text = s.rpartition(":")
        if not sep:
            raise ValueError(f"{hint}, got {_echo(s)}")
        if ":" in host:
            raise ValueError(f"{hint}: write IPv6 addresses in brackets, like [::1]:15432")
        if not host:
            raise ValueError(f"{hint}: missing host (0.0.0.0 listens on every interface)")
        if not _HOSTNAME_RE.match(host):
            raise ValueError(f"{hint}: {_echo(host)} is not a host name or address")
    if not port_text.isdigit() or not port_text.isascii():
        raise ValueError(f"{hint}: port {_echo(port_text)} is not a number")
    port = int(port_text)
    if port > 65535:
        raise ValueError(f"{hint}: port {port} is out of range 0..65535")
    return ListenAddress(host, port)


def format_listen_address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


_SCHEMES: Final[Mapping[str, frozenset[str]]] = {
    "postgres": frozenset({"postgres", "postgresql"}),
    "mysql": frozenset({"mysql", "mariadb"}),
}
_DEFAULT_PORTS: Final[Mapping[str, int]] = {"postgres": 5432, "mysql": 3306}
_COMMON_PARAMS: Final = ("sslmode", "sslrootcert", "sslcert", "sslkey", "connect_timeout")
_PARAMS: Final[Mapping[str, tuple[str, ...]]] = {
    "postgres": (*_COMMON_PARAMS, "host", "port", "application_name"),
    "mysql": (*_COMMON_PARAMS, "charset"),
}
_FILE_PARAMS: Final = ("sslrootcert", "sslcert", "sslkey")
_URL_SCHEME_RE: Final = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*)://")


def parse_upstream_dsn(url: str, protocol: str, *, base_dir: Path | None = None) -> UpstreamDsn:
    """Parse ``postgresql://user:password@host:port/db?params`` (or ``mysql://…``).

    ``protocol`` is the listener's (``postgres`` or ``mysql``) and decides the accepted schemes,
    default port and parameters. With ``base_dir``, relative sslrootcert/sslcert/sslkey paths are
    resolved against it and must exist. Error messages never contain the password: everything
    after the last ``@`` is host, port, database and parameters, so a password with unencoded
    ``?``, ``#`` or ``/`` still stays out of messages.
    """
    if protocol not in _SCHEMES:
        raise ValueError(f"unknown protocol {protocol!r}")
    example = "postgresql" if protocol == "postgres" else "mysql"
    shape = f"expected a URL like {example}://USER:PASSWORD@HOST:PORT/DATABASE"
    m = _URL_SCHEME_RE.match(url.strip())
    if m is None:
        raise ValueError(shape)
    scheme = m.group(1).lower()
    if scheme not in _SCHEMES[protocol]:
        accepted = " or ".join(f"{s}://" for s in sorted(_SCHEMES[protocol]))
        raise ValueError(f"scheme {scheme}:// does not match protocol {protocol} (use {accepted})")
    rest = url.strip()[m.end() :]
    user: str | None = None
    password: Secret | None = None
    if "@" in rest:
        userinfo, _, rest = rest.rpartition("@")
        raw_user, colon, raw_password = userinfo.partition(":")
        user = unquote(raw_user) or None
        if colon:
            password = Secret(unquote(raw_password))
    if "#" in rest:
        raise ValueError(f"{shape}: unexpected '#' (percent-encode it as %23)")
    rest, _, query = rest.partition("?")
    hostport, slash, path = rest.partition("/")
    database = unquote(path) if slash and path else None
    host, port = _split_host_port(hostport)
    params = _parse_query(query, protocol)

    if "host" in params:
        if host:
            raise ValueError("host given both in the URL and as ?host=")
        host = params["host"]
    if "port" in params:
        if port is not None:
            raise ValueError("port given both in the URL and as ?port=")
        port = _port_number(params["port"], "port=")
    if not host:
        raise ValueError(f"{shape}: missing host")
    try:
        sslmode = SslMode(params.get("sslmode", SslMode.PREFER.value))
    except ValueError:
        raise ValueError(
            f"sslmode: expected one of {_choices(SslMode)}, "
            f"got {_echo(params['sslmode'])}{_suggest(params['sslmode'], _values(SslMode))}"
        ) from None
    connect_timeout: float | None = None
    if "connect_timeout" in params:
        ct = params["connect_timeout"]
        if not _BARE_NUMBER_RE.match(ct):
            raise ValueError(f"connect_timeout: expected a number of seconds, got {_echo(ct)}")
        connect_timeout = float(ct)
    for name in _FILE_PARAMS:
        if name in params and base_dir is not None and params[name] != "system":
            resolved = base_dir / Path(params[name]).expanduser()
            if not resolved.is_file():
                raise ValueError(f"{name}: file not found: {resolved}")
            params[name] = str(resolved)
    return UpstreamDsn(
        scheme=scheme,
        host=host,
        port=port if port is not None else _DEFAULT_PORTS[protocol],
        user=user,
        password=password,
        database=database,
        params=FrozenMap(params),
        sslmode=sslmode,
        sslrootcert=params.get("sslrootcert"),
        connect_timeout=connect_timeout,
    )


def _split_host_port(hostport: str) -> tuple[str, int | None]:
    if "," in hostport:
        raise ValueError("several hosts in one URL are not supported")
    if hostport.startswith("["):
        end = hostport.find("]")
        if end < 0:
            raise ValueError("unterminated '[' in host")
        host, after = hostport[1:end], hostport[end + 1 :]
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise ValueError(f"{_echo(host)} is not an IPv6 address") from None
        if after and not after.startswith(":"):
            raise ValueError(f"unexpected {_echo(after)} after ']'")
        port_text = after[1:] if after else None
    else:
        host, colon, port_text_or_empty = hostport.partition(":")
        port_text = port_text_or_empty if colon else None
        host = unquote(host)
        if host and not (host.startswith("/") or _HOSTNAME_RE.match(host)):
            raise ValueError(f"{_echo(host)} is not a host name or address")
    port = _port_number(port_text, "port") if port_text is not None else None
    return host, port


def _port_number(text: str, what: str) -> int:
    if not text.isdigit() or not text.isascii() or not 1 <= int(text) <= 65535:
        raise ValueError(f"{what}: expected a port number 1..65535, got {_echo(text)}")
    return int(text)


def _parse_query(query: str, protocol: str) -> dict[str, str]:
    params: dict[str, str] = {}
    if not query:
        return params
    known = _PARAMS[protocol]
    for item in query.split("&"):
        if not item:
            continue
        raw_name, eq, raw_value = item.partition("=")
        name = unquote(raw_name)
        if not eq:
            raise ValueError(f"parameter {_echo(name)} has no '=value'")
        if name not in known:
            raise ValueError(f"unknown parameter {_echo(name)}{_suggest(name, known)} (known: {', '.join(known)})")
        if name in params:
            raise ValueError(f"parameter {name} given twice")
        params[name] = unquote(raw_value)
    return params


def parse_store_url(text: str, base_dir: Path) -> StoreUrl:
    """``sqlite:///PATH`` or ``postgresql://…`` -> StoreUrl.

    For sqlite the URL path is the file: ``sqlite:///var/lib/x.db`` and ``sqlite:////var/lib/x.db``
    are both ``/var/lib/x.db``; ``sqlite:///./x.db`` and ``sqlite:///../x.db`` are relative to
    ``base_dir`` (the config file's directory, or the working directory for ``--store``).
    """
    s = text.strip()
    scheme = s.partition("://")[0].lower() if "://" in s else ""
    if scheme == "sqlite":
        rest = s[len("sqlite://") :]
        if not rest.startswith("/"):
            raise ValueError("expected sqlite:///PATH (three slashes, then the file path)")
        if "?" in rest or "#" in rest:
            raise ValueError("a sqlite store URL takes no parameters")
        p = unquote(rest)
        if p == "/:memory:":
            return StoreUrl("sqlite", "sqlite:///:memory:", None)
        if p in ("/.", "/..") or p.startswith(("/./", "/../")):
            file = base_dir.absolute() / p[1:]
        else:
            file = Path("/" + p.lstrip("/"))
        if p.endswith("/") or file.name in ("", ".", ".."):
            raise ValueError("the sqlite store URL must name a file, not a directory")
        file = Path(os.path.normpath(file))
        return StoreUrl("sqlite", "sqlite:///" + file.as_posix(), file)
    if scheme in ("postgresql", "postgres"):
        dsn = parse_upstream_dsn(s, "postgres", base_dir=base_dir)
        return StoreUrl("postgresql", s, None, dsn)
    raise ValueError("expected sqlite:///PATH or postgresql://USER:PASSWORD@HOST:PORT/DATABASE")


def resolve_config_path(cli_value: str | None, env: Mapping[str, str] | None = None) -> Path:
    """The config file to read: ``-c`` if given, else ``$DBGUARD_CONFIG``, else ./dbguard.yaml."""
    environ = os.environ if env is None else env
    if cli_value is not None:
        return Path(cli_value).expanduser()
    from_env = environ.get(CONFIG_ENV_VAR)
    if from_env:
        return Path(from_env).expanduser()
    return Path(DEFAULT_CONFIG_NAME)


# ---------------------------------------------------------------------------------------------
# Loading


def load_config(path: str | Path, env: Mapping[str, str] | None = None, *, unset_env: str | None = None) -> Config:
    """Read and validate a config file. Raises ConfigError (never OSError or YAMLError).

    ``unset_env``: the value of ``${VAR}`` references to unset variables, instead of an error. For
    offline commands (`check`, `rules`) that need identities and paths, never secrets.
    """
    p = Path(path)
    text = read_yaml_text(
        p, MAX_CONFIG_BYTES, what="config file", not_found=f"config file not found (use -c FILE or ${CONFIG_ENV_VAR})"
    )
    return parse_config(text, p, env, unset_env=unset_env)


def parse_config(
    text: str, path: Path, env: Mapping[str, str] | None = None, *, unset_env: str | None = None
) -> Config:
    """Validate config text as if read from ``path`` (relative paths resolve against its dir)."""
    path = Path(path)
    protected, refs = EnvRefs.protect(text)
    root = compose_yaml(protected, path, refs)
    reader = _Reader(path, os.environ if env is None else env, refs, unset=unset_env)
    return reader.config(root)


_TOP_KEYS: Final = ("listeners", "identities", "rules", "store", "approvals", "admin", "log", "journal", "masking")
_MASKING_KEYS: Final = ("hash_key",)
_LISTENER_KEYS: Final = (
    "name",
    "protocol",
    "listen",
    "upstream",
    "tls",
    "allow_cleartext",
    "idle_timeout",
    "max_connections",
)
_TLS_KEYS: Final = ("cert", "key", "require")
_IDENTITY_KEYS: Final = ("name", "kind", "secret", "roles")
_APPROVALS_KEYS: Final = ("timeout", "mode", "webhooks")
_ADMIN_KEYS: Final = ("listen", "token")
_LOG_KEYS: Final = ("level", "format")
_JOURNAL_KEYS: Final = ("enabled", "sync", "segment_writes", "hmac_key", "redact_parameters", "on_store_failure",
                        "queue_size", "max_batch")
# An HMAC key shorter than this is guessable offline from a journal's hashes.
MIN_JOURNAL_KEY_BYTES: Final = 16


def _webhook_problem(url: str) -> str:
    """Why `url` cannot be a webhook (empty when it can); never echoes the URL (it is a secret)."""
    try:
        parts = urlsplit(url)
        port = parts.port  # raises ValueError on a bad port
    except ValueError:
        return "expected an http:// or https:// URL (this one does not parse)"
    if port == 0:
        return "port 0 cannot be reached"
    if parts.scheme not in ("http", "https"):
        return "expected an http:// or https:// URL"
    if not parts.hostname:
        return "expected an http:// or https:// URL with a host"
    if any(c.isspace() for c in url):
        return "a URL may not contain spaces"
    return ""


class _Reader(YamlReader):
    """Walks dbguard.yaml's composed YAML nodes by its schema (generic walking: YamlReader)."""

    # -- typed values -------------------------------------------------------------------------

    def duration(self, node: Node, key: str, *, positive: bool = False) -> float:
        text, tag, _ = self.scalar(node, key, "a duration")
        if tag in (_TAG_BOOL, _TAG_NULL):
            raise self.err(node, key, f"expected a duration such as 30s or 5m, got {_echo(text)}")
        try:
            seconds = parse_duration(text)
        except ValueError as e:
            raise self.err(node, key, str(e)) from None
        if positive and seconds <= 0:
            raise self.err(node, key, "must be longer than 0")
        return seconds

    def file_path(self, node: Node, key: str, *, kind: Literal["file", "any"]) -> Path:
        resolved = self.base_dir / Path(self.string(node, key)).expanduser()
        if not resolved.exists():
            raise self.err(node, key, f"file not found: {resolved}")
        if kind == "file" and not resolved.is_file():
            raise self.err(node, key, f"not a regular file: {resolved}")
        return resolved

    def listen(self, node: Node, key: str) -> ListenAddress:
        text = self.string(node, key)
        try:
            return parse_listen_address(text)
        except ValueError as e:
            raise self.err(node, key, str(e)) from None

    # -- sections -----------------------------------------------------------------------------

    def config(self, root: Node | None) -> Config:
        if root is None or _is_null(root):
            raise ConfigError(self.path, None, None, "empty configuration: 'listeners' is required")
        top = self.mapping(root, "", _TOP_KEYS)
        listeners_node = self.required(top, root, "", "listeners")
        listener_nodes = self.sequence(listeners_node, "listeners")
        if not listener_nodes:
            raise self.err(listeners_node, "listeners", "needs at least one listener")
        listeners = tuple(self.listener(n, f"listeners[{i}]") for i, n in enumerate(listener_nodes))
        self.check_unique_names(listener_nodes, [x.name for x in listeners], "listeners", "listener")

        identities: tuple[IdentityConfig, ...] = ()
        id_node = self.present(top, "identities")
        if id_node is not None:
            id_nodes = self.sequence(id_node, "identities")
            identities = tuple(self.identity(n, f"identities[{i}]") for i, n in enumerate(id_nodes))
            self.check_unique_names(id_nodes, [x.name for x in identities], "identities", "identity")

        rules_node = self.present(top, "rules")
        rules_path = self.file_path(rules_node, "rules", kind="any") if rules_node else None

        store_url = self.store(self.present(top, "store"))
        approvals = self.approvals(self.present(top, "approvals"))
        admin_node = self.present(top, "admin")
        admin = self.admin(admin_node) if admin_node is not None else None
        log = self.log(self.present(top, "log"))
        journal = self.journal(self.present(top, "journal"))
        masking = self.masking(self.present(top, "masking"))
        self.check_unique_addresses(listener_nodes, listeners, admin_node, admin)
        return Config(
            path=self.path,
            listeners=listeners,
            identities=identities,
            rules_path=rules_path,
            store_url=store_url,
            approvals=approvals,
            admin=admin,
            log=log,
            journal=journal,
            masking=masking,
            locations=FrozenMap(dict(self.locations)),
        )

    def listener(self, node: Node, key: str) -> ListenerConfig:
        m = self.mapping(node, key, _LISTENER_KEYS)
        self.locations[key] = _line(node) or 0
        name = self.name(self.required(m, node, key, "name"), f"{key}.name", _NAME_RE, "letters, digits, _ . -")
        protocol = self.choice(self.required(m, node, key, "protocol"), f"{key}.protocol", ListenerProtocol)
        listen = self.listen(self.required(m, node, key, "listen"), f"{key}.listen")
        up_node = self.required(m, node, key, "upstream")
        up_text = self.string(up_node, f"{key}.upstream", secret=True)
        try:
            upstream = parse_upstream_dsn(up_text, protocol.value, base_dir=self.base_dir)
        except ValueError as e:
            raise self.err(up_node, f"{key}.upstream", str(e)) from None

        tls: TlsConfig | None = None
        tls_node = self.present(m, "tls")
        if tls_node is not None:
            tk = f"{key}.tls"
            t = self.mapping(tls_node, tk, _TLS_KEYS)
            cert = self.file_path(self.required(t, tls_node, tk, "cert"), f"{tk}.cert", kind="file")
            tkey = self.file_path(self.required(t, tls_node, tk, "key"), f"{tk}.key", kind="file")
            req = self.present(t, "require")
            tls = TlsConfig(cert, tkey, self.boolean(req, f"{tk}.require") if req is not None else False)

        cleartext = self.present(m, "allow_cleartext")
        idle = self.present(m, "idle_timeout")
        maxconn = self.present(m, "max_connections")
        return ListenerConfig(
            name=name,
            protocol=protocol,
            listen=listen,
            upstream=upstream,
            tls=tls,
            allow_cleartext=(self.boolean(cleartext, f"{key}.allow_cleartext") if cleartext is not None else False),
            idle_timeout=self.duration(idle, f"{key}.idle_timeout") if idle is not None else 0.0,
            max_connections=(
                self.integer(maxconn, f"{key}.max_connections", 1) if maxconn is not None else DEFAULT_MAX_CONNECTIONS
            ),
        )

    def identity(self, node: Node, key: str) -> IdentityConfig:
        m = self.mapping(node, key, _IDENTITY_KEYS)
        self.locations[key] = _line(node) or 0
        name = self.name(
            self.required(m, node, key, "name"),
            f"{key}.name",
            _IDENTITY_NAME_RE,
            "up to 63 letters, digits, _ . @ + -",
        )
        kind = self.choice(self.required(m, node, key, "kind"), f"{key}.kind", IdentityKind)
        secret = self.string(self.required(m, node, key, "secret"), f"{key}.secret", secret=True)
        roles: list[str] = []
        roles_node = self.present(m, "roles")
        if roles_node is not None:
            for i, r in enumerate(self.sequence(roles_node, f"{key}.roles")):
                role = self.string(r, f"{key}.roles[{i}]")
                if role not in roles:
                    roles.append(role)
        return IdentityConfig(name, kind, Secret(secret), tuple(roles))

    def store(self, node: Node | None) -> str:
        if node is None:
            return parse_store_url(DEFAULT_STORE_URL, self.base_dir).url
        text = self.string(node, "store", secret=True)
        try:
            return parse_store_url(text, self.base_dir).url
        except ValueError as e:
            raise self.err(node, "store", str(e)) from None

    def approvals(self, node: Node | None) -> ApprovalsConfig:
        if node is None:
            return ApprovalsConfig()
        m = self.mapping(node, "approvals", _APPROVALS_KEYS)
        timeout = self.present(m, "timeout")
        mode = self.present(m, "mode")
        webhooks: list[Secret] = []
        hooks_node = self.present(m, "webhooks")
        if hooks_node is not None:
            for i, h in enumerate(self.sequence(hooks_node, "approvals.webhooks")):
                key = f"approvals.webhooks[{i}]"
                url = self.string(h, key, secret=True)
                why = _webhook_problem(url)
                if why:
                    raise self.err(h, key, why)
                webhooks.append(Secret(url))
        return ApprovalsConfig(
            webhooks=tuple(webhooks),
            timeout=(
                self.duration(timeout, "approvals.timeout", positive=True)
                if timeout is not None
                else DEFAULT_APPROVAL_TIMEOUT
            ),
            mode=self.choice(mode, "approvals.mode", ApprovalMode) if mode is not None else ApprovalMode.WAIT,
        )

    def admin(self, node: Node) -> AdminConfig:
        m = self.mapping(node, "admin", _ADMIN_KEYS)
        listen = self.listen(self.required(m, node, "admin", "listen"), "admin.listen")
        token = self.string(self.required(m, node, "admin", "token"), "admin.token", secret=True)
        return AdminConfig(listen, Secret(token))

    def log(self, node: Node | None) -> LogConfig:
        if node is None:
            return LogConfig()
        m = self.mapping(node, "log", _LOG_KEYS)
        level = self.present(m, "level")
        fmt = self.present(m, "format")
        return LogConfig(
            level=self.choice(level, "log.level", LogLevel, fold_case=True) if level is not None else LogLevel.INFO,
            format=self.choice(fmt, "log.format", LogFormat, fold_case=True) if fmt is not None else LogFormat.TEXT,
        )

    def journal(self, node: Node | None) -> JournalConfig:
        if node is None:
            return JournalConfig()
        m = self.mapping(node, "journal", _JOURNAL_KEYS)
        key: Secret | None = None
        key_node = self.present(m, "hmac_key")
        if key_node is not None:
            text = self.string(key_node, "journal.hmac_key", secret=True)
            if len(text.encode("utf-8")) < MIN_JOURNAL_KEY_BYTES:
                raise self.err(key_node, "journal.hmac_key",
                               f"too short: use at least {MIN_JOURNAL_KEY_BYTES} bytes (e.g. openssl rand -hex 32)")
            key = Secret(text)
        redact = self.present(m, "redact_parameters")
        failure = self.present(m, "on_store_failure")
        queue = self.present(m, "queue_size")
        batch = self.present(m, "max_batch")
        enabled = self.present(m, "enabled")
        sync = self.present(m, "sync")
        writes = self.present(m, "segment_writes")
        return JournalConfig(
            sync=self.choice(sync, "journal.sync", JournalSync) if sync is not None else JournalSync.NORMAL,
            segment_writes=(self.choice(writes, "journal.segment_writes", SegmentWrites) if writes is not None
                            else SegmentWrites.AUTO),
            enabled=self.boolean(enabled, "journal.enabled") if enabled is not None else True,
            hmac_key=key,
            redact_parameters=self.boolean(redact, "journal.redact_parameters") if redact is not None else False,
            on_store_failure=(
                self.choice(failure, "journal.on_store_failure", OnStoreFailure)
                if failure is not None
                else OnStoreFailure.REFUSE
            ),
            queue_size=(
                self.integer(queue, "journal.queue_size", 1) if queue is not None else DEFAULT_JOURNAL_QUEUE_SIZE
            ),
            max_batch=self.integer(batch, "journal.max_batch", 1) if batch is not None else DEFAULT_JOURNAL_MAX_BATCH,
        )

    def masking(self, node: Node | None) -> MaskingConfig:
        if node is None:
            return MaskingConfig()
        m = self.mapping(node, "masking", _MASKING_KEYS)
        key_node = self.present(m, "hash_key")
        if key_node is None:
            return MaskingConfig()
        text = self.string(key_node, "masking.hash_key", secret=True)
        if len(text.encode("utf-8")) < MIN_JOURNAL_KEY_BYTES:
            raise self.err(key_node, "masking.hash_key",
                           f"too short: use at least {MIN_JOURNAL_KEY_BYTES} bytes (e.g. openssl rand -hex 32)")
        return MaskingConfig(Secret(text))

    # -- cross checks -------------------------------------------------------------------------

    def check_unique_names(self, nodes: Sequence[Node], names: Sequence[str], section: str, what: str) -> None:
        seen: dict[str, int] = {}
        for i, name in enumerate(names):
            if name in seen:
                j = seen[name]
                first = _line(_value_of(nodes[j], "name"))
                raise self.err(
                    _value_of(nodes[i], "name"),
                    f"{section}[{i}].name",
                    f"duplicate {what} name {_echo(name)} (first used by {section}[{j}] on line {first})",
                )
            seen[name] = i

    def check_unique_addresses(
        self,
        nodes: Sequence[Node],
        listeners: Sequence[ListenerConfig],
        admin_node: Node | None,
        admin: AdminConfig | None,
    ) -> None:
        seen: dict[ListenAddress, str] = {}
        places: list[tuple[ListenAddress, str, Node | None]] = [
            (lst.listen, f"listeners[{i}].listen", _value_of(nodes[i], "listen")) for i, lst in enumerate(listeners)
        ]
        if admin is not None and admin_node is not None:
            places.append((admin.listen, "admin.listen", _value_of(admin_node, "listen")))
        for addr, key, node in places:
            if addr.port == 0:
                continue
            if addr in seen:
                raise self.err(node, key, f"address {addr} is already used by {seen[addr]}")
            seen[addr] = key
