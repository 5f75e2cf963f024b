# dbguard/config.py — owns dbguard.yaml: finding it (-c / $DBGUARD_CONFIG / ./dbguard.yaml),
# reading it with line numbers, ${ENV} expansion, validation, and the frozen dataclasses the rest
# of dbguard reads. Every error is a ConfigError naming file, line and key path. It checks that
# referenced files exist but never opens sockets or stores, and never puts a secret in a message.
from __future__ import annotations

import difflib
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
from secrets import token_hex
from typing import Final, Generic, Literal, NamedTuple, TypeVar, final
from urllib.parse import quote, unquote

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

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
    "ListenAddress",
    "ListenerConfig",
    "ListenerProtocol",
    "LogConfig",
    "LogFormat",
    "LogLevel",
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
DEFAULT_APPROVAL_TIMEOUT: Final = 300.0
DEFAULT_MAX_CONNECTIONS: Final = 1000
# A config file is a few kilobytes; refuse anything absurd before YAML parses it.
MAX_CONFIG_BYTES: Final = 4 * 1024 * 1024
# YAML merge keys (<<: *anchor) may nest; a recursive anchor must not loop forever.
_MAX_MERGE_DEPTH: Final = 32
# Values echoed in error messages are cut to this many characters.
_MAX_ECHO: Final = 80

_NAME_RE: Final = re.compile(r"[A-Za-z0-9_.-]+\Z")
# Identity names are database user names for clients: also allow e-mail-like names.
_IDENTITY_NAME_RE: Final = re.compile(r"[A-Za-z0-9_.@+-]{1,63}\Z")
_VAR_NAME_RE: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
_HOSTNAME_RE: Final = re.compile(r"[A-Za-z0-9_]([A-Za-z0-9_.-]*[A-Za-z0-9_])?\Z")
_INT_RE: Final = re.compile(r"[0-9][0-9_]*\Z")

_TAG_STR: Final = "tag:yaml.org,2002:str"
_TAG_NULL: Final = "tag:yaml.org,2002:null"
_TAG_BOOL: Final = "tag:yaml.org,2002:bool"
_TAG_INT: Final = "tag:yaml.org,2002:int"
_TAG_FLOAT: Final = "tag:yaml.org,2002:float"
_TAG_MERGE: Final = "tag:yaml.org,2002:merge"


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


_E = TypeVar("_E", bound=StrEnum)
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
# Errors and secrets


class ConfigError(Exception):
    """A configuration problem, rendered as ``FILE:LINE: KEY: MESSAGE``.

    ``line`` is 1-based, or None when the problem is not at a line (missing file, empty file).
    ``key`` is the key path (``listeners[0].listen``) or None for the file as a whole.
    """

    def __init__(self, path: Path | str, line: int | None, key: str | None, message: str) -> None:
        super().__init__(path, line, key, message)
        self.path = Path(path)
        self.line = line
        self.key = key
        self.message = message

    def __str__(self) -> str:
        where = str(self.path) if self.line is None else f"{self.path}:{self.line}"
        if self.key:
            return f"{where}: {self.key}: {self.message}"
        return f"{where}: {self.message}"


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


@dataclass(frozen=True)
class AdminConfig:
    listen: ListenAddress
    token: Secret


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


def expand_env(text: str, env: Mapping[str, str]) -> str:
    """Expand ``${VAR}`` and ``${VAR:-default}``; ``$${`` is a literal ``${``.

    The default applies when VAR is unset or empty. An unset VAR without a default is a
    ValueError naming the variable (never its value).
    """
    out: list[str] = []
    i = 0
    while True:
        j = text.find("$", i)
        if j < 0:
            out.append(text[i:])
            return "".join(out)
        out.append(text[i:j])
        if text.startswith("$${", j):
            out.append("${")
            i = j + 3
        elif text.startswith("${", j):
            end = text.find("}", j + 2)
            if end < 0:
                raise ValueError("unterminated '${' (write '$${' for a literal '${')")
            name, sep, default = text[j + 2 : end].partition(":-")
            if not _VAR_NAME_RE.match(name):
                raise ValueError(
                    f"invalid variable reference {_echo('${' + name + '}')}: expected ${{NAME}} or ${{NAME:-default}}"
                )
            value = env.get(name)
            if value is None or (sep and not value):
                if not sep:
                    raise ValueError(f"environment variable {name} is not set (set it, or write ${{{name}:-default}})")
                value = default
            out.append(value)
            i = end + 1
        else:
            out.append("$")
            i = j + 1


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


def load_config(path: str | Path, env: Mapping[str, str] | None = None) -> Config:
    """Read and validate a config file. Raises ConfigError (never OSError or YAMLError)."""
    p = Path(path)
    try:
        if p.is_dir():
            raise ConfigError(p, None, None, "is a directory, expected a YAML file")
        with p.open("rb") as f:
            data = f.read(MAX_CONFIG_BYTES + 1)
    except FileNotFoundError:
        raise ConfigError(p, None, None, f"config file not found (use -c FILE or ${CONFIG_ENV_VAR})") from None
    except OSError as e:
        raise ConfigError(p, None, None, f"cannot read config file: {e.strerror}") from None
    if len(data) > MAX_CONFIG_BYTES:
        raise ConfigError(p, None, None, f"larger than {MAX_CONFIG_BYTES} bytes")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = data[: e.start].count(b"\n") + 1
        raise ConfigError(p, line, None, "not valid UTF-8") from None
    return parse_config(text, p, env)


def parse_config(text: str, path: Path, env: Mapping[str, str] | None = None) -> Config:
    """Validate config text as if read from ``path`` (relative paths resolve against its dir)."""
    path = Path(path)
    protected, refs = _EnvRefs.protect(text)
    try:
        root = yaml.compose(protected, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        line = mark.line + 1 if mark is not None else None
        what = refs.restore("; ".join(x for x in (e.context, e.problem) if x))
        raise ConfigError(path, line, None, f"invalid YAML: {what}") from None
    except yaml.YAMLError as e:
        raise ConfigError(path, None, None, f"invalid YAML: {type(e).__name__}") from None
    reader = _Reader(path, os.environ if env is None else env, refs)
    return reader.config(root)


class _EnvRefs:
    """Hides ``${...}`` references from the YAML parser and puts them back in scalars.

    ``token: ${DBGUARD_ADMIN_TOKEN}`` inside a flow mapping (``{listen: …, token: ${X}}``, as in
    the product's own example) is not valid YAML: ``{`` and ``}`` end a plain scalar there. Each
    reference is swapped for a placeholder of plain-scalar-safe characters on the same line, so
    line numbers are unchanged, and restored verbatim in every scalar before expansion.
    """

    _REF_RE: Final = re.compile(r"\$?\$\{[^}\n]*\}")

    def __init__(self, prefix: str, originals: list[str]) -> None:
        self._originals = originals
        self._token_re = re.compile(re.escape(prefix) + r"([0-9]+)__")

    @classmethod
    def protect(cls, text: str) -> tuple[str, _EnvRefs]:
        prefix = "__dbguard_env_" + token_hex(6) + "_"
        originals: list[str] = []

        def swap(m: re.Match[str]) -> str:
            originals.append(m.group(0))
            return f"{prefix}{len(originals) - 1}__"

        return cls._REF_RE.sub(swap, text), cls(prefix, originals)

    def restore(self, text: str) -> str:
        if not self._originals:
            return text
        return self._token_re.sub(lambda m: self._originals[int(m.group(1))], text)


@dataclass(frozen=True)
class _Entry:
    key_node: ScalarNode
    value: Node


_TOP_KEYS: Final = ("listeners", "identities", "rules", "store", "approvals", "admin", "log")
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
_APPROVALS_KEYS: Final = ("timeout", "mode")
_ADMIN_KEYS: Final = ("listen", "token")
_LOG_KEYS: Final = ("level", "format")


class _Reader:
    """Walks the composed YAML nodes by schema, keeping each value's line for errors."""

    def __init__(self, path: Path, env: Mapping[str, str], refs: _EnvRefs) -> None:
        self.path = path
        self.refs = refs
        self.env = env
        self.base_dir = path.absolute().parent
        self.locations: dict[str, int] = {}

    # -- errors and node helpers --------------------------------------------------------------

    def err(self, node: Node | None, key: str | None, message: str) -> ConfigError:
        return ConfigError(self.path, _line(node), key, message)

    def mapping(self, node: Node, key: str, allowed: Sequence[str], depth: int = 0) -> dict[str, _Entry]:
        if not isinstance(node, MappingNode):
            raise self.err(node, key or None, f"expected a mapping, got {_kind(node)}")
        if depth > _MAX_MERGE_DEPTH:
            raise self.err(node, key or None, "merge keys (<<) nested too deeply")
        if key:
            self.locations.setdefault(key, _line(node) or 0)
        explicit: dict[str, _Entry] = {}
        merged: dict[str, _Entry] = {}
        for k, v in node.value:
            if isinstance(k, ScalarNode) and k.tag == _TAG_MERGE:
                sources = v.value if isinstance(v, SequenceNode) else [v]
                for src in sources:
                    for name, entry in self.mapping(src, key, allowed, depth + 1).items():
                        merged.setdefault(name, entry)
                continue
            if not isinstance(k, ScalarNode):
                raise self.err(k, key or None, f"keys must be plain strings, got {_kind(k)}")
            name = self.refs.restore(str(k.value))
            here = _join(key, name)
            if name in explicit:
                first = _line(explicit[name].key_node)
                raise self.err(k, here, f"duplicate key (first defined on line {first})")
            if name not in allowed:
                raise self.err(k, here, f"unknown key{_suggest(name, allowed, listing=True)}")
            explicit[name] = _Entry(k, v)
        return {**merged, **explicit}

    def sequence(self, node: Node, key: str) -> list[Node]:
        if not isinstance(node, SequenceNode):
            raise self.err(node, key, f"expected a list, got {_kind(node)}")
        return list(node.value)

    def present(self, entries: Mapping[str, _Entry], name: str) -> Node | None:
        """The value node of an optional key; an explicit null counts as absent."""
        entry = entries.get(name)
        if entry is None or _is_null(entry.value):
            return None
        return entry.value

    def required(self, entries: Mapping[str, _Entry], parent: Node, key: str, name: str) -> Node:
        entry = entries.get(name)
        here = _join(key, name)
        if entry is None:
            raise self.err(parent, here, "required key is missing")
        if _is_null(entry.value):
            raise self.err(entry.value, here, "required key has no value")
        return entry.value

    def scalar(self, node: Node, key: str, what: str) -> tuple[str, str, bool]:
        """(text after ${ENV} expansion, YAML tag, whether ${...} was expanded)."""
        if not isinstance(node, ScalarNode):
            raise self.err(node, key, f"expected {what}, got {_kind(node)}")
        self.locations.setdefault(key, _line(node) or 0)
        raw = self.refs.restore(str(node.value))
        if node.tag != _TAG_STR or "$" not in raw:
            return raw, node.tag, False
        try:
            expanded = expand_env(raw, self.env)
        except ValueError as e:
            raise self.err(node, key, str(e)) from None
        return expanded, node.tag, "${" in raw.replace("$${", "")

    # -- typed values -------------------------------------------------------------------------

    def string(self, node: Node, key: str, *, secret: bool = False) -> str:
        text, tag, from_env = self.scalar(node, key, "a string")
        if tag == _TAG_BOOL:
            hint = "" if secret else f" (quote it: '{text}')"
            raise self.err(node, key, f"expected a string, got a boolean{hint}")
        if tag == _TAG_NULL:
            raise self.err(node, key, "expected a string, got null")
        if not text:
            why = " (its ${...} expanded to nothing)" if from_env else ""
            raise self.err(node, key, f"must not be empty{why}")
        if "\x00" in text:
            raise self.err(node, key, "must not contain NUL characters")
        return text

    def name(self, node: Node, key: str, pattern: re.Pattern[str], allowed: str) -> str:
        text = self.string(node, key)
        if not pattern.match(text):
            raise self.err(node, key, f"expected a name of {allowed}, got {_echo(text)}")
        return text

    def boolean(self, node: Node, key: str) -> bool:
        text, tag, from_env = self.scalar(node, key, "true or false")
        if tag == _TAG_BOOL or from_env:
            lowered = text.strip().lower()
            if lowered in ("true", "yes", "on", "1"):
                return True
            if lowered in ("false", "no", "off", "0"):
                return False
        shown = "" if from_env else f", got {_echo(text)}"
        raise self.err(node, key, f"expected true or false{shown}")

    def integer(self, node: Node, key: str, minimum: int) -> int:
        text, tag, from_env = self.scalar(node, key, "an integer")
        if (tag == _TAG_INT or from_env) and _INT_RE.match(text.strip()):
            value = int(text.strip().replace("_", ""))
            if value < minimum:
                raise self.err(node, key, f"must be at least {minimum}, got {value}")
            return value
        raise self.err(node, key, f"expected a whole number >= {minimum}, got {_echo(text)}")

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

    def choice(self, node: Node, key: str, enum: type[_E], *, fold_case: bool = False) -> _E:
        text = self.string(node, key)
        lookup = text.lower() if fold_case else text
        try:
            return enum(lookup)
        except ValueError:
            options = _values(enum)
            raise self.err(
                node,
                key,
                f"expected one of {_choices(enum)}, got {_echo(text)}{_suggest(lookup, options)}",
            ) from None

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
        return ApprovalsConfig(
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


# ---------------------------------------------------------------------------------------------
# Small helpers


def _line(node: Node | None) -> int | None:
    if node is None or node.start_mark is None:
        return None
    return int(node.start_mark.line) + 1


def _join(parent: str, name: str) -> str:
    return f"{parent}.{name}" if parent else name


def _is_null(node: Node) -> bool:
    return isinstance(node, ScalarNode) and node.tag == _TAG_NULL


def _value_of(mapping: Node, name: str) -> Node | None:
    if isinstance(mapping, MappingNode):
        for k, v in mapping.value:
            if isinstance(k, ScalarNode) and k.value == name and isinstance(v, Node):
                return v
    return mapping


def _kind(node: Node) -> str:
    if isinstance(node, MappingNode):
        return "a mapping"
    if isinstance(node, SequenceNode):
        return "a list"
    return {
        _TAG_NULL: "null",
        _TAG_BOOL: "a boolean",
        _TAG_INT: "a number",
        _TAG_FLOAT: "a number",
        _TAG_STR: "a string",
    }.get(node.tag, "a scalar")


def _echo(text: str) -> str:
    """Quote a (non-secret) value for an error message, cut to a readable length."""
    if len(text) > _MAX_ECHO:
        text = text[: _MAX_ECHO - 3] + "..."
    return repr(text)


def _values(enum: type[StrEnum]) -> list[str]:
    return [e.value for e in enum]


def _choices(enum: type[StrEnum]) -> str:
    return ", ".join(_values(enum))


def _suggest(word: str, options: Sequence[str], *, listing: bool = False) -> str:
    close = difflib.get_close_matches(word, list(options), n=1, cutoff=0.6)
    if close:
        return f" (did you mean '{close[0]}'?)"
    if listing:
        return f" (expected one of: {', '.join(options)})"
    return ""
