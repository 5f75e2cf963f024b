# tests/unit/test_config.py — dbguard.yaml loading: a full valid file, every error kind with its
# exact file:line:key, ${ENV} expansion, durations, listen addresses, DSNs, and that secrets never
# appear in repr/str or error messages. Pure: files only under pytest's tmp_path.
from __future__ import annotations

import copy
import pickle
import textwrap
from collections.abc import Mapping
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dbguard.config import (
    DEFAULT_APPROVAL_TIMEOUT,
    ApprovalMode,
    Config,
    ConfigError,
    IdentityKind,
    ListenAddress,
    ListenerProtocol,
    LogFormat,
    LogLevel,
    Secret,
    SslMode,
    expand_env,
    format_duration,
    format_listen_address,
    load_config,
    parse_config,
    parse_duration,
    parse_listen_address,
    parse_store_url,
    parse_upstream_dsn,
    resolve_config_path,
)

CFG = Path("dbguard.yaml")
SECRET = "s3cr3t-Copilot-Value"
DB_PASSWORD = "Db-Pa55word"
ADMIN_TOKEN = "admin-token-XYZ"
ENV = {
    "COPILOT_SECRET": SECRET,
    "ALICE_SECRET": "alice-secret",
    "DB_PASSWORD": DB_PASSWORD,
    "DBGUARD_ADMIN_TOKEN": ADMIN_TOKEN,
}

FULL = """\
listeners:
  - name: app-pg
    protocol: postgres
    listen: 127.0.0.1:15432
    upstream: postgresql://dbguard_svc:${DB_PASSWORD}@db.internal:5432/app?sslmode=require
    tls: {cert: certs/proxy.pem, key: certs/proxy.key, require: true}
    allow_cleartext: false
    idle_timeout: 10m
    max_connections: 200
  - name: app-mysql
    protocol: mysql
    listen: "[::1]:13306"
    upstream: mysql://dbguard_svc:${DB_PASSWORD}@db.internal/app
identities:
  - name: copilot
    kind: agent
    secret: ${COPILOT_SECRET}
    roles: [readers]
  - name: alice
    kind: human
    secret: ${ALICE_SECRET}
    roles: [dba, readers]
rules: rules/
store: sqlite:///var/lib/dbguard/dbguard.db
approvals: {timeout: 5m, mode: retry}
admin: {listen: 127.0.0.1:8765, token: "${DBGUARD_ADMIN_TOKEN}"}
log: {level: debug, format: json}
"""

# The example from PRODUCT.md, verbatim: it must load as written.
PRODUCT_EXAMPLE = """\
listeners:
  - name: app-pg
    protocol: postgres            # postgres | mysql
    listen: 127.0.0.1:15432
    upstream: postgresql://dbguard_svc:PASSWORD@db.internal:5432/app   # ${ENV_VAR} is expanded
    tls: {cert: certs/proxy.pem, key: certs/proxy.key, require: false}  # optional, client side
  - name: app-mysql
    protocol: mysql
    listen: 127.0.0.1:13306
    upstream: mysql://dbguard_svc:PASSWORD@db.internal:3306/app

identities:                       # who may connect through the proxy
  - name: copilot
    kind: agent                   # agent | human | service
    secret: ${COPILOT_SECRET}     # static secret; tokens from `dbguard token issue` also work
    roles: [readers]
  - name: alice
    kind: human
    secret: ${ALICE_SECRET}
    roles: [dba]

rules: rules/                     # a file or a folder of *.yaml, read in name order
store: sqlite:///var/lib/dbguard/dbguard.db   # journal + approvals + tokens; postgresql://… to share between proxies
approvals: {timeout: 5m, mode: wait}          # wait | retry
admin: {listen: 127.0.0.1:8765, token: ${DBGUARD_ADMIN_TOKEN}}   # optional
"""

MINIMAL = """\
listeners:
  - name: app-pg
    protocol: postgres
    listen: 127.0.0.1:15432
    upstream: postgresql://svc:pw@db:5432/app
"""


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A temporary config directory with the files FULL refers to; the cwd for the test."""
    (tmp_path / "certs").mkdir()
    (tmp_path / "certs" / "proxy.pem").write_text("cert")
    (tmp_path / "certs" / "proxy.key").write_text("key")
    (tmp_path / "rules").mkdir()
    monkeypatch.chdir(tmp_path)
    return tmp_path


def parse(text: str, env: Mapping[str, str] | None = None) -> Config:
    return parse_config(textwrap.dedent(text), CFG, ENV if env is None else env)


def error_of(text: str, env: Mapping[str, str] | None = None) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        parse(text, env)
    return info.value


# ---------------------------------------------------------------------------------------------
# A full, valid file


def test_full_config(workdir: Path) -> None:
    cfg = parse(FULL)
    assert cfg.path == CFG
    pg, my = cfg.listeners
    assert pg.name == "app-pg"
    assert pg.protocol is ListenerProtocol.POSTGRES
    assert pg.listen == ListenAddress("127.0.0.1", 15432)
    assert pg.upstream.scheme == "postgresql"
    assert pg.upstream.host == "db.internal"
    assert pg.upstream.port == 5432
    assert pg.upstream.user == "dbguard_svc"
    assert pg.upstream.password is not None
    assert pg.upstream.password.reveal() == DB_PASSWORD
    assert pg.upstream.database == "app"
    assert pg.upstream.sslmode is SslMode.REQUIRE
    assert pg.tls is not None
    assert pg.tls.cert == workdir / "certs" / "proxy.pem"
    assert pg.tls.key == workdir / "certs" / "proxy.key"
    assert pg.tls.require is True
    assert pg.allow_cleartext is False
    assert pg.idle_timeout == 600.0
    assert pg.max_connections == 200

    assert my.protocol is ListenerProtocol.MYSQL
    assert my.listen == ListenAddress("::1", 13306)
    assert str(my.listen) == "[::1]:13306"
    assert my.upstream.port == 3306
    assert my.upstream.sslmode is SslMode.PREFER
    assert my.tls is None
    assert my.idle_timeout == 0.0
    assert my.max_connections == 1000

    copilot = cfg.identity("copilot")
    assert copilot is not None
    assert copilot.kind is IdentityKind.AGENT
    assert copilot.secret.reveal() == SECRET
    assert copilot.secret.matches(SECRET)
    assert not copilot.secret.matches("wrong")
    assert copilot.roles == ("readers",)
    alice = cfg.identity("alice")
    assert alice is not None
    assert alice.roles == ("dba", "readers")
    assert cfg.identity("nobody") is None
    assert cfg.listener("app-mysql") is my

    assert cfg.rules_path == workdir / "rules"
    assert cfg.store_url == "sqlite:////var/lib/dbguard/dbguard.db"
    assert cfg.store.kind == "sqlite"
    assert cfg.store.path == Path("/var/lib/dbguard/dbguard.db")
    assert cfg.approvals.timeout == 300.0
    assert cfg.approvals.mode is ApprovalMode.RETRY
    assert cfg.admin is not None
    assert cfg.admin.listen == ListenAddress("127.0.0.1", 8765)
    assert cfg.admin.token.reveal() == ADMIN_TOKEN
    assert cfg.log.level is LogLevel.DEBUG
    assert cfg.log.format is LogFormat.JSON
    assert len(cfg.secrets()) == 5


def test_product_example_loads_verbatim(workdir: Path) -> None:
    cfg = parse(PRODUCT_EXAMPLE)
    assert [x.name for x in cfg.listeners] == ["app-pg", "app-mysql"]
    assert cfg.admin is not None
    assert cfg.admin.token.reveal() == ADMIN_TOKEN  # ${...} unquoted inside a flow mapping
    assert [i.name for i in cfg.identities] == ["copilot", "alice"]
    assert cfg.approvals.mode is ApprovalMode.WAIT


def test_env_reference_in_flow_context_with_comma_in_default(workdir: Path) -> None:
    cfg = parse(MINIMAL + "admin: {listen: 127.0.0.1:1, token: ${T:-a,b}}\n", {})
    assert cfg.admin is not None
    assert cfg.admin.token.reveal() == "a,b"


def test_minimal_config_defaults(workdir: Path) -> None:
    cfg = parse(MINIMAL)
    assert cfg.identities == ()
    assert cfg.rules_path is None
    assert cfg.store_url == f"sqlite:///{workdir / 'dbguard.db'}"
    assert cfg.store.path == workdir / "dbguard.db"
    assert cfg.approvals.timeout == DEFAULT_APPROVAL_TIMEOUT
    assert cfg.approvals.mode is ApprovalMode.WAIT
    assert cfg.admin is None
    assert cfg.log.level is LogLevel.INFO
    assert cfg.log.format is LogFormat.TEXT


def test_load_config_from_file(workdir: Path) -> None:
    (workdir / "dbguard.yaml").write_text(FULL)
    cfg = load_config("dbguard.yaml", ENV)
    assert cfg.listeners[0].name == "app-pg"
    assert cfg.locations["listeners[0].listen"] == 4
    assert str(cfg.error("store", "cannot open")) == "dbguard.yaml:24: store: cannot open"


def test_relative_paths_resolve_against_config_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    conf_dir = tmp_path / "etc"
    (conf_dir / "certs").mkdir(parents=True)
    (conf_dir / "certs" / "proxy.pem").write_text("cert")
    (conf_dir / "certs" / "proxy.key").write_text("key")
    (conf_dir / "rules").mkdir()
    (conf_dir / "dbguard.yaml").write_text(FULL.replace("sqlite:///var/lib", "sqlite:///./var"))
    monkeypatch.chdir(tmp_path)
    cfg = load_config(Path("etc/dbguard.yaml"), ENV)
    assert cfg.rules_path == tmp_path / "etc" / "rules"
    assert cfg.store.path == tmp_path / "etc" / "var" / "dbguard" / "dbguard.db"


def test_yaml_merge_keys_share_settings(workdir: Path) -> None:
    cfg = parse(
        """\
        listeners:
          - &base
            name: a
            protocol: postgres
            listen: 127.0.0.1:1
            upstream: postgresql://svc:pw@db/app
            idle_timeout: 30s
          - <<: *base
            name: b
            listen: 127.0.0.1:2
        """
    )
    assert [x.name for x in cfg.listeners] == ["a", "b"]
    assert cfg.listeners[1].idle_timeout == 30.0
    assert cfg.listeners[1].listen.port == 2


def test_null_optional_sections_are_absent(workdir: Path) -> None:
    cfg = parse(MINIMAL + "identities:\nadmin:\nrules: ~\n")
    assert cfg.identities == ()
    assert cfg.admin is None
    assert cfg.rules_path is None


def test_config_is_frozen_and_copyable(workdir: Path) -> None:
    cfg = parse(FULL)
    with pytest.raises(AttributeError):
        cfg.listeners[0].name = "x"  # type: ignore[misc]
    assert copy.deepcopy(cfg) == cfg
    ident = cfg.identity("copilot")
    assert ident is not None
    assert pickle.loads(pickle.dumps(ident.secret)) == ident.secret  # noqa: S301


# ---------------------------------------------------------------------------------------------
# Errors: each names file, line and key exactly


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param(
            MINIMAL + "listner: x\n",
            "dbguard.yaml:6: listner: unknown key (did you mean 'listeners'?)",
            id="unknown-top-key",
        ),
        pytest.param(
            MINIMAL + "    upstrem: x\n",
            "dbguard.yaml:6: listeners[0].upstrem: unknown key (did you mean 'upstream'?)",
            id="unknown-nested-key",
        ),
        pytest.param(
            MINIMAL + "zzz: 1\n",
            "dbguard.yaml:6: zzz: unknown key (expected one of: listeners, identities, rules, "
            "store, approvals, admin, log, journal, masking)",
            id="unknown-key-no-suggestion",
        ),
        pytest.param(
            MINIMAL + "    listen: 127.0.0.1:1\n",
            "dbguard.yaml:6: listeners[0].listen: duplicate key (first defined on line 4)",
            id="duplicate-key",
        ),
        pytest.param(
            MINIMAL
            + "  - name: app-pg\n    protocol: mysql\n    listen: 127.0.0.1:3\n"
            + "    upstream: mysql://u:p@db/app\n",
            "dbguard.yaml:6: listeners[1].name: duplicate listener name 'app-pg' "
            "(first used by listeners[0] on line 2)",
            id="duplicate-listener-name",
        ),
        pytest.param(
            MINIMAL.replace("protocol: postgres", "protocol: postgress"),
            "dbguard.yaml:3: listeners[0].protocol: expected one of postgres, mysql, "
            "got 'postgress' (did you mean 'postgres'?)",
            id="bad-protocol",
        ),
        pytest.param(
            MINIMAL.replace("127.0.0.1:15432", "127.0.0.1"),
            "dbguard.yaml:4: listeners[0].listen: expected HOST:PORT, got '127.0.0.1'",
            id="listen-without-port",
        ),
        pytest.param(
            MINIMAL.replace("127.0.0.1:15432", "127.0.0.1:99999"),
            "dbguard.yaml:4: listeners[0].listen: expected HOST:PORT: port 99999 is out of range 0..65535",
            id="listen-port-range",
        ),
        pytest.param(
            MINIMAL.replace("127.0.0.1:15432", "::1:15432"),
            "dbguard.yaml:4: listeners[0].listen: expected HOST:PORT: write IPv6 addresses in "
            "brackets, like [::1]:15432",
            id="listen-ipv6-without-brackets",
        ),
        pytest.param(
            MINIMAL.replace("postgresql://", "mysql://"),
            "dbguard.yaml:5: listeners[0].upstream: scheme mysql:// does not match protocol "
            "postgres (use postgres:// or postgresql://)",
            id="scheme-protocol-mismatch",
        ),
        pytest.param(
            MINIMAL.replace("/app", "/app?sslmode=bogus"),
            "dbguard.yaml:5: listeners[0].upstream: sslmode: expected one of disable, allow, "
            "prefer, require, verify-ca, verify-full, got 'bogus'",
            id="bad-sslmode",
        ),
        pytest.param(
            MINIMAL.replace("/app", "/app?sslmod=require"),
            "dbguard.yaml:5: listeners[0].upstream: unknown parameter 'sslmod' (did you mean "
            "'sslmode'?) (known: sslmode, sslrootcert, sslcert, sslkey, connect_timeout, host, "
            "port, application_name)",
            id="unknown-dsn-param",
        ),
        pytest.param(
            MINIMAL.replace("db:5432", "db:54x"),
            "dbguard.yaml:5: listeners[0].upstream: port: expected a port number 1..65535, got '54x'",
            id="bad-upstream-port",
        ),
        pytest.param(
            MINIMAL + "    idle_timeout: 5 minutes\n",
            "dbguard.yaml:6: listeners[0].idle_timeout: expected a duration such as 300ms, 30s, "
            "5m, 1h or a number of seconds, got '5 minutes'",
            id="bad-duration",
        ),
        pytest.param(
            MINIMAL + "approvals: {timeout: 0}\n",
            "dbguard.yaml:6: approvals.timeout: must be longer than 0",
            id="zero-approval-timeout",
        ),
        pytest.param(
            MINIMAL + "approvals:\n  mode: later\n",
            "dbguard.yaml:7: approvals.mode: expected one of wait, retry, got 'later'",
            id="bad-approval-mode",
        ),
        pytest.param(
            MINIMAL + "identities:\n  - name: bot\n    kind: agent\n",
            "dbguard.yaml:7: identities[0].secret: required key is missing",
            id="identity-without-secret",
        ),
        pytest.param(
            MINIMAL + "identities:\n  - name: bot\n    kind: agent\n    secret:\n",
            "dbguard.yaml:9: identities[0].secret: required key has no value",
            id="identity-null-secret",
        ),
        pytest.param(
            MINIMAL + "identities:\n  - name: bot\n    kind: robot\n    secret: x\n",
            "dbguard.yaml:8: identities[0].kind: expected one of agent, human, service, got 'robot'",
            id="bad-identity-kind",
        ),
        pytest.param(
            MINIMAL + "identities:\n  - {name: a, kind: agent, secret: x}\n  - {name: a, kind: human, secret: y}\n",
            "dbguard.yaml:8: identities[1].name: duplicate identity name 'a' (first used by identities[0] on line 7)",
            id="duplicate-identity-name",
        ),
        pytest.param(
            MINIMAL + "identities:\n  - {name: a, kind: agent, secret: x, roles: dba}\n",
            "dbguard.yaml:7: identities[0].roles: expected a list, got a string",
            id="roles-not-a-list",
        ),
        pytest.param(
            MINIMAL.replace("name: app-pg", "name: app pg"),
            "dbguard.yaml:2: listeners[0].name: expected a name of letters, digits, _ . -, got 'app pg'",
            id="bad-listener-name",
        ),
        pytest.param(
            MINIMAL.replace("    upstream: postgresql://svc:pw@db:5432/app\n", ""),
            "dbguard.yaml:2: listeners[0].upstream: required key is missing",
            id="missing-upstream",
        ),
        pytest.param(
            MINIMAL + "    max_connections: lots\n",
            "dbguard.yaml:6: listeners[0].max_connections: expected a whole number >= 1, got 'lots'",
            id="bad-int",
        ),
        pytest.param(
            MINIMAL + "    allow_cleartext: maybe\n",
            "dbguard.yaml:6: listeners[0].allow_cleartext: expected true or false, got 'maybe'",
            id="bad-bool",
        ),
        pytest.param(
            MINIMAL + "    tls: certs/proxy.pem\n",
            "dbguard.yaml:6: listeners[0].tls: expected a mapping, got a string",
            id="tls-not-a-mapping",
        ),
        pytest.param(
            "listeners: []\n",
            "dbguard.yaml:1: listeners: needs at least one listener",
            id="no-listeners",
        ),
        pytest.param(
            "identities: []\n",
            "dbguard.yaml:1: listeners: required key is missing",
            id="missing-listeners",
        ),
        pytest.param(
            "- just\n- a list\n",
            "dbguard.yaml:1: expected a mapping, got a list",
            id="root-not-a-mapping",
        ),
        pytest.param("", "dbguard.yaml: empty configuration: 'listeners' is required", id="empty"),
        pytest.param(
            MINIMAL + "log: {level: loud}\n",
            "dbguard.yaml:6: log.level: expected one of debug, info, warning, error, got 'loud'",
            id="bad-log-level",
        ),
        pytest.param(
            MINIMAL + "admin: {listen: 127.0.0.1:15432, token: t}\n",
            "dbguard.yaml:6: admin.listen: address 127.0.0.1:15432 is already used by listeners[0].listen",
            id="admin-port-clash",
        ),
        pytest.param(
            MINIMAL + "admin: {listen: 127.0.0.1:8765}\n",
            "dbguard.yaml:6: admin.token: required key is missing",
            id="admin-without-token",
        ),
        pytest.param(
            MINIMAL + "store: redis://cache\n",
            "dbguard.yaml:6: store: expected sqlite:///PATH or postgresql://USER:PASSWORD@HOST:PORT/DATABASE",
            id="bad-store",
        ),
        pytest.param(
            MINIMAL + "rules: missing-rules/\n",
            "dbguard.yaml:6: rules: file not found: {dir}/missing-rules",
            id="missing-rules",
        ),
        pytest.param(
            MINIMAL + "    tls: {cert: certs/nope.pem, key: certs/proxy.key}\n",
            "dbguard.yaml:6: listeners[0].tls.cert: file not found: {dir}/certs/nope.pem",
            id="missing-tls-cert",
        ),
        pytest.param(
            MINIMAL + "    tls: {cert: certs/proxy.pem}\n",
            "dbguard.yaml:6: listeners[0].tls.key: required key is missing",
            id="tls-without-key",
        ),
        pytest.param(
            MINIMAL + "listeners: []\n",
            "dbguard.yaml:6: listeners: duplicate key (first defined on line 1)",
            id="duplicate-top-key",
        ),
    ],
)
def test_errors_name_file_line_and_key(workdir: Path, text: str, expected: str) -> None:
    err = error_of(text)
    assert str(err) == expected.format(dir=workdir)


def test_error_attributes(workdir: Path) -> None:
    err = error_of(MINIMAL.replace("127.0.0.1:15432", "127.0.0.1"))
    assert err.path == CFG
    assert err.line == 4
    assert err.key == "listeners[0].listen"
    assert err.message == "expected HOST:PORT, got '127.0.0.1'"


def test_yaml_syntax_error_has_line(workdir: Path) -> None:
    err = error_of(MINIMAL + "  - name: [unclosed\n")
    assert err.line == 7
    assert str(err).startswith("dbguard.yaml:7: invalid YAML: ")


def test_yaml_syntax_error_does_not_echo_the_line(workdir: Path) -> None:
    err = error_of(f"listeners:\n  - secret: {SECRET}: : [\n")
    assert SECRET not in str(err)


def test_missing_file_names_the_path(tmp_path: Path) -> None:
    missing = tmp_path / "nope.yaml"
    with pytest.raises(ConfigError) as info:
        load_config(missing)
    assert info.value.line is None
    assert info.value.path == missing
    assert str(info.value) == f"{missing}: config file not found (use -c FILE or $DBGUARD_CONFIG)"


def test_directory_instead_of_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="is a directory"):
        load_config(tmp_path)


def test_invalid_utf8_names_the_line(tmp_path: Path) -> None:
    f = tmp_path / "dbguard.yaml"
    f.write_bytes(b"listeners:\n  - name: \xff\n")
    with pytest.raises(ConfigError) as info:
        load_config(f)
    assert info.value.line == 2


def test_error_in_aliased_value_points_where_it_is_written(workdir: Path) -> None:
    err = error_of(
        """\
        listeners:
          - name: a
            protocol: postgres
            listen: 127.0.0.1:1
            upstream: postgresql://svc:pw@db/app
            idle_timeout: &d 5m
          - name: b
            protocol: postgres
            listen: 127.0.0.1:2
            upstream: postgresql://svc:pw@db/app
            max_connections: *d
        """
    )
    assert str(err) == ("dbguard.yaml:6: listeners[1].max_connections: expected a whole number >= 1, got '5m'")


def test_unknown_key_in_merged_mapping(workdir: Path) -> None:
    err = error_of(
        """\
        listeners:
          - <<: {name: a, protocol: postgres, colour: red}
            listen: 127.0.0.1:2
            upstream: postgresql://svc:pw@db/app
        """
    )
    assert str(err).startswith("dbguard.yaml:2: listeners[0].colour: unknown key")


def test_recursive_merge_is_an_error_not_a_hang(workdir: Path) -> None:
    err = error_of("listeners:\n  - &a\n    <<: *a\n")
    assert err.key == "listeners[0]"


# ---------------------------------------------------------------------------------------------
# ${ENV} expansion


def test_env_expansion_with_default_and_escape(workdir: Path) -> None:
    cfg = parse(
        MINIMAL.replace("svc:pw@db", "${DB_USER:-svc}:${DB_PASSWORD}@${DB_HOST}")
        + "identities:\n"
        + "  - {name: a, kind: agent, secret: 'pre-${COPILOT_SECRET}-$${NOT_A_VAR}-$5'}\n",
        {"DB_PASSWORD": "pw", "DB_HOST": "db.example", "COPILOT_SECRET": "X"},
    )
    up = cfg.listeners[0].upstream
    assert up.user == "svc"
    assert up.host == "db.example"
    assert up.password is not None
    assert up.password.reveal() == "pw"
    ident = cfg.identity("a")
    assert ident is not None
    assert ident.secret.reveal() == "pre-X-${NOT_A_VAR}-$5"


def test_env_default_applies_when_empty(workdir: Path) -> None:
    cfg = parse(MINIMAL + "    max_connections: ${MAXC:-7}\n", {"MAXC": ""})
    assert cfg.listeners[0].max_connections == 7


def test_env_values_are_typed_after_expansion(workdir: Path) -> None:
    cfg = parse(
        MINIMAL + "    allow_cleartext: ${CLEAR}\n    idle_timeout: ${IDLE}\n",
        {"CLEAR": "true", "IDLE": "90s"},
    )
    assert cfg.listeners[0].allow_cleartext is True
    assert cfg.listeners[0].idle_timeout == 90.0


def test_missing_env_var_names_line_key_and_variable(workdir: Path) -> None:
    err = error_of(FULL, {k: v for k, v in ENV.items() if k != "COPILOT_SECRET"})
    assert str(err) == (
        "dbguard.yaml:17: identities[0].secret: environment variable COPILOT_SECRET is not set "
        "(set it, or write ${COPILOT_SECRET:-default})"
    )


def test_unterminated_reference(workdir: Path) -> None:
    err = error_of(MINIMAL + "store: ${STORE\n")
    assert str(err) == "dbguard.yaml:6: store: unterminated '${' (write '$${' for a literal '${')"


def test_env_expands_only_values_not_keys(workdir: Path) -> None:
    err = error_of(MINIMAL + "${X}: 1\n", {"X": "store"})
    assert err.key == "${X}"


def test_expand_env_function() -> None:
    env = {"A": "1", "B": ""}
    assert expand_env("${A}${A}-${B:-d}-${C:-}-$${A}-$$-$", env) == "11-d--${A}-$$-$"
    with pytest.raises(ValueError, match="invalid variable reference"):
        expand_env("${1X}", env)


# ---------------------------------------------------------------------------------------------
# Secrets never leak


def test_secrets_absent_from_repr_and_str(workdir: Path) -> None:
    cfg = parse(FULL)
    for text in (repr(cfg), str(cfg), repr(cfg.listeners), str(cfg.listeners[0].upstream)):
        for secret in (SECRET, DB_PASSWORD, ADMIN_TOKEN):
            assert secret not in text
    assert str(cfg.listeners[0].upstream).startswith("postgresql://dbguard_svc:***@db.internal")
    ident = cfg.identity("copilot")
    assert ident is not None
    assert f"{ident.secret}" == "********"
    assert repr(ident.secret) == "Secret('********')"


@pytest.mark.parametrize(
    "text",
    [
        # A listen address error while the secret is set: nothing about the secret shows.
        FULL.replace("127.0.0.1:15432", "nowhere"),
        # DSN errors never echo the password, even with unencoded ? # / in it.
        MINIMAL.replace("svc:pw@db:5432", "svc:${COPILOT_SECRET}?x#y/@db:54x"),
        MINIMAL.replace("svc:pw@db:5432/app", "svc:${COPILOT_SECRET}@db/app?sslmode=nope"),
        MINIMAL.replace("postgresql://svc:pw", "mysql://svc:${COPILOT_SECRET}"),
        MINIMAL.replace("svc:pw@db:5432/app", "svc:${COPILOT_SECRET}@db/app?bad"),
        MINIMAL + "store: postgresql://u:${COPILOT_SECRET}@db:x/journal\n",
        MINIMAL + "identities:\n  - {name: a, kind: robot, secret: '${COPILOT_SECRET}'}\n",
        MINIMAL + "identities:\n  - {name: a, kind: agent, secret: '${COPILOT_SECRET}', x: 1}\n",
        MINIMAL + "admin: {listen: 1.2.3.4, token: '${COPILOT_SECRET}'}\n",
    ],
)
def test_secrets_absent_from_error_messages(workdir: Path, text: str) -> None:
    err = error_of(text, {**ENV, "COPILOT_SECRET": SECRET})
    assert SECRET not in str(err)
    assert SECRET not in repr(err)


def test_boolean_secret_is_not_echoed(workdir: Path) -> None:
    err = error_of(MINIMAL + "identities:\n  - {name: a, kind: agent, secret: yes}\n")
    assert str(err) == "dbguard.yaml:7: identities[0].secret: expected a string, got a boolean"


# ---------------------------------------------------------------------------------------------
# Durations


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("300ms", 0.3), ("30s", 30.0), ("5m", 300.0), ("1h", 3600.0), ("1h30m", 5400.0),
     ("1.5s", 1.5), ("90", 90.0), ("0", 0.0), ("0.25", 0.25), (" 2m ", 120.0)],
)  # fmt: skip
def test_parse_duration(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "5", "-1s", "5 m", "1d", "1e3", "abc", "5m5", "nan", "m"])
def test_parse_duration_rejects(text: str) -> None:
    if text == "5":
        assert parse_duration(text) == 5.0
        return
    with pytest.raises(ValueError, match="expected a duration"):
        parse_duration(text)


@given(st.integers(min_value=0, max_value=10**9), st.sampled_from(["ms", "s", "m", "h", ""]))
def test_parse_duration_integer_units(n: int, unit: str) -> None:
    factor = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "": 1}[unit]
    assert parse_duration(f"{n}{unit}") == pytest.approx(n * factor, rel=1e-15)


@given(st.floats(min_value=0, max_value=1e12, allow_nan=False, allow_infinity=False))
def test_format_duration_round_trips(seconds: float) -> None:
    assert parse_duration(format_duration(seconds)) == seconds


@pytest.mark.parametrize(("seconds", "text"), [(0.3, "300ms"), (30.0, "30s"), (300.0, "5m"), (7200.0, "2h")])
def test_format_duration_is_readable(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text


# ---------------------------------------------------------------------------------------------
# Listen addresses


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("127.0.0.1:15432", ("127.0.0.1", 15432)),
        ("0.0.0.0:0", ("0.0.0.0", 0)),
        ("localhost:80", ("localhost", 80)),
        ("[::1]:15432", ("::1", 15432)),
        ("[::]:5432", ("::", 5432)),
    ],
)
def test_parse_listen_address(text: str, expected: tuple[str, int]) -> None:
    assert parse_listen_address(text) == expected


@pytest.mark.parametrize("text", ["127.0.0.1", ":5432", "host:", "host:-1", "[::1]", "[nope]:1", "a b:1", "::1:5432"])
def test_parse_listen_address_rejects(text: str) -> None:
    with pytest.raises(ValueError, match="expected HOST:PORT"):
        parse_listen_address(text)


_hosts = st.one_of(
    st.ip_addresses(v=4).map(str),
    st.ip_addresses(v=6).map(str),
    st.from_regex(r"[a-z0-9]([a-z0-9-]{0,20}[a-z0-9])?(\.[a-z0-9]{1,10}){0,3}", fullmatch=True),
)


@given(_hosts, st.integers(min_value=0, max_value=65535))
def test_listen_address_round_trips(host: str, port: int) -> None:
    assert parse_listen_address(format_listen_address(host, port)) == (host, port)


# ---------------------------------------------------------------------------------------------
# Upstream DSNs and store URLs


def test_dsn_defaults_and_decoding() -> None:
    d = parse_upstream_dsn("postgres://us%40er:p%3Ass%2Fw@[::1]/my%20db", "postgres")
    assert (d.scheme, d.host, d.port, d.user, d.database) == ("postgres", "::1", 5432, "us@er",
                                                              "my db")  # fmt: skip
    assert d.password is not None
    assert d.password.reveal() == "p:ss/w"
    assert d.sslmode is SslMode.PREFER
    assert d.connect_timeout is None
    assert parse_upstream_dsn("mysql://u@db", "mysql").port == 3306
    assert parse_upstream_dsn("mariadb://u@db:3307", "mysql").port == 3307
    assert parse_upstream_dsn("mysql://db", "mysql").user is None


def test_dsn_password_with_unencoded_special_characters() -> None:
    d = parse_upstream_dsn("postgresql://svc:a@b?c#d/e@db:6432/app?sslmode=disable", "postgres")
    assert d.password is not None
    assert d.password.reveal() == "a@b?c#d/e"
    assert (d.host, d.port, d.database, d.sslmode) == ("db", 6432, "app", SslMode.DISABLE)
    assert d.url() == "postgresql://svc:a%40b%3Fc%23d%2Fe@db:6432/app?sslmode=disable"


def test_dsn_params(tmp_path: Path) -> None:
    (tmp_path / "ca.pem").write_text("ca")
    d = parse_upstream_dsn(
        "postgresql://u:p@db/app?sslmode=verify-full&sslrootcert=ca.pem&connect_timeout=2.5&application_name=dbguard",
        "postgres",
        base_dir=tmp_path,
    )
    assert d.sslmode is SslMode.VERIFY_FULL
    assert d.sslrootcert == str(tmp_path / "ca.pem")
    assert d.connect_timeout == 2.5
    assert d.params["application_name"] == "dbguard"
    with pytest.raises(ValueError, match="sslrootcert: file not found"):
        parse_upstream_dsn("postgresql://u@db/app?sslrootcert=no.pem", "postgres",
                           base_dir=tmp_path)  # fmt: skip
    assert parse_upstream_dsn("postgresql://u@db/a?sslrootcert=system", "postgres",
                              base_dir=tmp_path).sslrootcert == "system"  # fmt: skip


def test_dsn_unix_socket_for_postgres() -> None:
    d = parse_upstream_dsn("postgresql://svc@/app?host=/var/run/postgresql&port=5433", "postgres")
    assert d.is_unix_socket
    assert (d.host, d.port) == ("/var/run/postgresql", 5433)
    assert str(d) == "postgresql://svc@/app?host=/var/run/postgresql&port=5433"
    with pytest.raises(ValueError, match="unknown parameter 'host'"):
        parse_upstream_dsn("mysql://svc@/app?host=/tmp", "mysql")


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("db.internal:5432", "expected a URL like postgresql://"),
        ("postgresql://u@/app", "missing host"),
        ("postgresql://u@h1,h2/app", "several hosts"),
        ("postgresql://u@db/app?connect_timeout=soon", "connect_timeout: expected a number"),
        ("postgresql://u@db/app?sslmode=require&sslmode=disable", "given twice"),
        ("postgresql://u@db:0/app", "port: expected a port number"),
        ("postgresql://u@db:5432/app?host=/tmp", "host given both"),
    ],
)
def test_dsn_errors(url: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_upstream_dsn(url, "postgres")


def test_store_urls(tmp_path: Path) -> None:
    assert parse_store_url("sqlite:///var/x.db", tmp_path).path == Path("/var/x.db")
    assert parse_store_url("sqlite:////var/x.db", tmp_path).path == Path("/var/x.db")
    rel = parse_store_url("sqlite:///./data/x.db", tmp_path)
    assert rel.path == tmp_path / "data" / "x.db"
    assert parse_store_url(rel.url, Path("/elsewhere")).path == rel.path  # canonical is stable
    assert parse_store_url("sqlite:///../x.db", tmp_path).path == tmp_path.parent / "x.db"
    assert parse_store_url("sqlite:///:memory:", tmp_path).path is None
    pg = parse_store_url(f"postgresql://j:{SECRET}@db/journal", tmp_path)
    assert pg.kind == "postgresql"
    assert SECRET not in repr(pg)
    assert SECRET not in pg.redacted()
    with pytest.raises(ValueError, match="must name a file"):
        parse_store_url("sqlite:///./", tmp_path)


def test_store_url_masked_in_config_repr(workdir: Path) -> None:
    cfg = parse(MINIMAL + "store: postgresql://j:${COPILOT_SECRET}@db/journal\n")
    assert cfg.store.kind == "postgresql"
    assert SECRET not in repr(cfg)
    assert cfg.store.redacted() == "postgresql://j:***@db:5432/journal"
    assert [x.reveal() for x in cfg.secrets()] == ["pw", SECRET]


# ---------------------------------------------------------------------------------------------
# Which file


def test_resolve_config_path_precedence() -> None:
    env = {"DBGUARD_CONFIG": "/etc/dbguard/prod.yaml"}
    assert resolve_config_path("my.yaml", env) == Path("my.yaml")
    assert resolve_config_path(None, env) == Path("/etc/dbguard/prod.yaml")
    assert resolve_config_path(None, {}) == Path("dbguard.yaml")
    assert resolve_config_path(None, {"DBGUARD_CONFIG": ""}) == Path("dbguard.yaml")


def test_secret_type() -> None:
    s = Secret("abc")
    assert s == Secret("abc")
    assert s != Secret("abd")
    assert len(s) == 3
    assert hash(s) == hash(Secret("abc"))
    with pytest.raises(AttributeError):
        s._value = "x"
