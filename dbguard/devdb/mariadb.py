# dbguard.devdb.mariadb — throwaway MariaDB servers for tests (the MySQL side of dbguard).
# Owns: finding mariadbd / mariadb-install-db, installing a datadir into a temporary directory,
# starting / stopping / restarting / killing mariadbd on a free 127.0.0.1 port, bootstrap
# accounts (root password, database `app` owned by `app_owner`), extra users (native or ed25519),
# optional TLS, DSN / PyMySQL helpers. Always runs with --no-defaults and its own socket, so it
# never reads /etc/mysql and never touches the machine's stock MariaDB, its port, socket or datadir.
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
from pathlib import Path
from types import TracebackType
from typing import IO, Any, Final, Literal, Self, get_args
from urllib.parse import quote

from dbguard.devdb.certs import make_self_signed_cert
from dbguard.devdb.processes import LOOPBACK, DevDbError, pick_free_port, server_os_user, world_traversable

logger = logging.getLogger("dbguard.devdb")

# Authentication plugins create_user() offers. MariaDB has no caching_sha2_password (that is
# MySQL 8's default); a MySQL server would be needed to test it.
AuthPlugin = Literal["mysql_native_password", "ed25519"]

# Environment overrides: a directory holding mariadbd and mariadb-install-db, and the OS user
# that mariadbd switches to when we are root.
BINDIR_ENV: Final = "DBGUARD_MARIADB_BINDIR"
OS_USER_ENV: Final = "DBGUARD_MARIADB_OS_USER"
DEFAULT_START_TIMEOUT: Final = 60.0
SHUTDOWN_TIMEOUT: Final = 30.0
KILL_TIMEOUT: Final = 10.0
CONNECT_TIMEOUT: Final = 10
PORT_RETRIES: Final = 5
LOG_TAIL_LINES: Final = 40
# Small footprint: a throwaway server holds a few rows.
SERVER_OPTIONS: Final = (
    "--innodb-buffer-pool-size=32M",
    "--innodb-log-file-size=8M",
    "--skip-name-resolve",
    "--character-set-server=utf8mb4",
    "--collation-server=utf8mb4_general_ci",
    "--max-connections=200",
    "--default-time-zone=+00:00",
)

_APT_HINT: Final = (
    "no MariaDB server binaries (mariadbd, mariadb-install-db) found: install them with "
    "`apt-get install mariadb-server` (or run scripts/ensure-server-binaries), "
    f"or point ${BINDIR_ENV} at a directory holding both"
)
_SEARCH_DIRS: Final = ("/usr/sbin", "/usr/bin", "/usr/local/mysql/bin", "/usr/local/bin")
_BIND_FAILURE = re.compile(r"Bind on TCP/IP port|Address already in use|errno: 98", re.IGNORECASE)
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_$]{0,63}$")
ER_PLUGIN_INSTALLED: Final = 1968


def _find_program(name: str, dirs: tuple[str, ...]) -> Path | None:
    for directory in dirs:
        candidate = Path(directory) / name
        if os.access(candidate, os.X_OK):
            return candidate
    found = shutil.which(name)
    return Path(found) if found else None


def find_mariadb_binaries() -> tuple[Path, Path]:
    """(mariadbd, mariadb-install-db): from $DBGUARD_MARIADB_BINDIR, else the usual system
    directories and PATH. Raises DevDbError with installation advice when either is missing."""
    override = os.environ.get(BINDIR_ENV)
    dirs = (override,) if override else _SEARCH_DIRS
    server = _find_program("mariadbd", dirs)
    install_db = _find_program("mariadb-install-db", dirs)
    if server is None or install_db is None:
        if override:
            raise DevDbError(f"${BINDIR_ENV}={override} does not hold mariadbd and mariadb-install-db")
        raise DevDbError(_APT_HINT)
    return server, install_db


def mariadb_client_binary(name: str = "mariadb") -> Path:
    """A MariaDB client program (mariadb, mariadb-admin, mariadb-dump) from PATH or /usr/bin."""
    override = os.environ.get(BINDIR_ENV)
    found = _find_program(name, ((override,) if override else ()) + _SEARCH_DIRS)
    if found is None:
        raise DevDbError(f"{name} not found: apt-get install mariadb-client")
    return found


def _pymysql() -> Any:
    """PyMySQL, imported on first use: it is a test dependency, and importing dbguard.devdb
    (for `dbguard demo` and PostgreSQL) must not require it."""
    try:
        import pymysql
        import pymysql.constants.CLIENT
    except ImportError as exc:
        raise DevDbError("ThrowawayMariaDB needs PyMySQL: pip install 'dbguard[test]'") from exc
    return pymysql


def _sql_literal(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "''") + "'"


def _check_name(value: str) -> str:
    if not _NAME.match(value):
        raise DevDbError(f"unsupported MariaDB user or database name {value!r}")
    return value


# Servers started and not yet closed; stopped and deleted at interpreter exit as a safety net.
_LIVE_SERVERS: set[ThrowawayMariaDB] = set()


@atexit.register
def _close_leftover_servers() -> None:
    for server in list(_LIVE_SERVERS):
        with contextlib.suppress(Exception):
            server.close()


class ThrowawayMariaDB:
    """A private MariaDB server in a temporary directory, listening on 127.0.0.1 only.

    After the first start: `root` has `root_password` (on the socket and on 127.0.0.1), and
    `app_user` (mysql_native_password, random password) has ALL on `app_database`.* and nothing
    else. `ssl=True` makes a self-signed CA and server certificate (see `ca_path`); TLS is then
    offered, not required. `close()` (or leaving the `with` block) stops it and deletes every file.
    """

    def __init__(
        self,
        *,
        app_user: str = "app_owner",
        app_password: str | None = None,
        app_database: str = "app",
        root_password: str | None = None,
        port: int | None = None,
        ssl: bool = False,
        base_dir: str | os.PathLike[str] | None = None,
        start_timeout: float = DEFAULT_START_TIMEOUT,
    ) -> None:
        self.host: Final = LOOPBACK
        self.app_user: Final = _check_name(app_user)
        self.app_password: Final = app_password or secrets.token_hex(12)
        self.app_database: Final = _check_name(app_database)
        self.root_password: Final = root_password or secrets.token_hex(12)
        self.ssl: Final = ssl
        self.start_timeout = start_timeout
        self._server_bin, self._install_db_bin = find_mariadb_binaries()
        self._base_dir = Path(base_dir) if base_dir is not None else None
        self._fixed_port = port
        self._port: int | None = port
        self._os_user = server_os_user(OS_USER_ENV, "mysql", "mariadbd")
        self._root: Path | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._console: IO[bytes] | None = None
        self._bootstrapped = False
        self._closed = False
        self._passwords: dict[str, str] = {"root": self.root_password, app_user: self.app_password}

    # ------------------------------------------------------------------ properties

    @property
    def port(self) -> int:
        if self._port is None:
            raise DevDbError("the server has no port yet: call start() first")
        return self._port

    @property
    def root(self) -> Path:
        """The temporary directory holding data, socket, logs and TLS files."""
        if self._root is None:
            raise DevDbError("the server has not been started")
        return self._root

    @property
    def datadir(self) -> Path:
        return self.root / "data"

    @property
    def socket_path(self) -> Path:
        return self.root / "mariadbd.sock"

    @property
    def log_path(self) -> Path:
        return self.root / "error.log"

    @property
    def ca_path(self) -> Path:
        """The CA certificate to trust when `ssl=True`."""
        if not self.ssl:
            raise DevDbError("this server was made without ssl=True")
        return self.root / "tls" / "ca.crt"

    @property
    def pid(self) -> int | None:
        proc = self._proc
        return proc.pid if proc is not None and proc.poll() is None else None

    @property
    def is_running(self) -> bool:
        return self.pid is not None

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
        """Install the datadir on first use, start mariadbd, wait until it accepts connections,
        and on the first start set the root password and create the app user and database.
        After stop() or kill() it starts again on the same port with the same data."""
        if self._closed:
            raise DevDbError("this server was closed; make a new ThrowawayMariaDB")
        if self.is_running:
            return
        if self._root is None:
            self._install()
        attempts = PORT_RETRIES if self._fixed_port is None and not self._bootstrapped else 1
        for attempt in range(1, attempts + 1):
            try:
                self._launch_and_wait()
                break
            except DevDbError:
                if not (_BIND_FAILURE.search(self.log_tail()) and attempt < attempts):
                    raise
                self._port = pick_free_port()
                logger.info("devdb.mariadb.start_retry attempt=%d port=%d", attempt, self._port)
        if not self._bootstrapped:
            self._bootstrap()
        logger.info("devdb.mariadb.started port=%d pid=%s", self.port, self.pid)

    def stop(self) -> None:
        """Normal shutdown (SIGTERM); SIGKILL if it takes longer than 30 s."""
        proc = self._proc
        if proc is None:
            return
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(SHUTDOWN_TIMEOUT)
            except subprocess.TimeoutExpired:
                logger.warning("devdb.mariadb.stop_slow pid=%d", proc.pid)
                self.kill()
                return
        self._forget_process()
        logger.info("devdb.mariadb.stopped port=%s", self._port)

    def restart(self) -> None:
        """Stop and start again: same port, same data."""
        self.stop()
        self.start()

    def kill(self) -> None:
        """SIGKILL mariadbd (a crash, for fault tests); start() afterwards runs crash recovery."""
        proc = self._proc
        if proc is None:
            return
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGKILL)
            proc.wait(KILL_TIMEOUT)
            logger.info("devdb.mariadb.killed pid=%d", proc.pid)
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
        """The last lines of the error log and of mariadbd's console output."""
        if self._root is None:
            return ""
        parts: list[str] = []
        for path in (self.log_path, self.root / "console.log"):
            with contextlib.suppress(OSError):
                text = path.read_text(errors="replace").splitlines()[-lines:]
                if text:
                    parts.append(f"--- {path.name}\n" + "\n".join(text))
        return "\n".join(parts)

    # ------------------------------------------------------------------ clients

    def client_binary(self, name: str = "mariadb") -> Path:
        """A MariaDB client program (mariadb, mariadb-admin, mariadb-dump)."""
        return mariadb_client_binary(name)

    def password_for(self, user: str) -> str | None:
        """The password this object set for a user, if any."""
        return self._passwords.get(user)

    def dsn(self, user: str | None = None, database: str | None = None, password: str | None = None) -> str:
        """mysql://user:password@127.0.0.1:port/database. Defaults: the app user, its password
        (or the one this object set for `user`) and the app database ("app"); database=""
        leaves the path empty."""
        user = user or self.app_user
        if password is None:
            password = self._passwords.get(user)
        credentials = quote(user, safe="")
        if password is not None:
            credentials += ":" + quote(password, safe="")
        if database is None:
            database = self.app_database
        path = quote(database, safe="")
        return f"mysql://{credentials}@{self.host}:{self.port}/{path}"

    def connect_kwargs(
        self, user: str | None = None, password: str | None = None, database: str | None = None
    ) -> dict[str, Any]:
        """Keyword arguments for pymysql.connect() over TCP (autocommit, utf8mb4). Defaults: the
        app user, its password and the app database; database="" connects to no database."""
        user = user or self.app_user
        if password is None:
            password = self._passwords.get(user, "")
        kwargs: dict[str, Any] = {
            "host": self.host,
            "port": self.port,
            "user": user,
            "password": password,
            "charset": "utf8mb4",
            "connect_timeout": CONNECT_TIMEOUT,
            "autocommit": True,
        }
        if database is None:
            database = self.app_database
        if database:
            kwargs["database"] = database
        return kwargs

    def run_sql(
        self,
        sql: str,
        database: str | None = None,
        *,
        as_root: bool = True,
        user: str | None = None,
        password: str | None = None,
    ) -> list[tuple[Any, ...]]:
        """Run SQL (several `;`-separated statements allowed, autocommit) and return the rows of
        every statement that produced a result set, in order. As root by default, over the
        unix socket; otherwise over TCP as `user` (default: the app user). Errors: DevDbError
        with the server's error code and message (the PyMySQL error is its __cause__)."""
        if not self.is_running:
            raise DevDbError("the server is not running")
        if as_root and user is None:
            kwargs: dict[str, Any] = {
                "unix_socket": str(self.socket_path),
                "user": "root",
                "password": self.root_password if self._bootstrapped else "",
                "charset": "utf8mb4",
                "connect_timeout": CONNECT_TIMEOUT,
                "autocommit": True,
            }
            if database is not None:
                kwargs["database"] = database
        else:
            kwargs = self.connect_kwargs(user, password, database or self.app_database)
        login = kwargs["user"]
        pymysql = _pymysql()
        rows: list[tuple[Any, ...]] = []
        try:
            conn = pymysql.connect(client_flag=pymysql.constants.CLIENT.MULTI_STATEMENTS, **kwargs)
            try:
                with conn.cursor() as cursor:
                    cursor.execute(sql)
                    while True:
                        if cursor.description is not None:
                            rows.extend(tuple(row) for row in cursor.fetchall())
                        if not cursor.nextset():
                            break
            finally:
                conn.close()
        except pymysql.err.MySQLError as exc:
            raise DevDbError(f"SQL as {login} on port {self.port} failed: {exc.args}") from exc
        return rows

    def create_user(
        self,
        name: str,
        password: str,
        plugin: AuthPlugin = "mysql_native_password",
        *,
        host: str = "%",
        grant_database: str | None = None,
    ) -> None:
        """Create `name`@`host` authenticated by `plugin`; with `grant_database`, grant it ALL
        on that database. "ed25519" installs the auth_ed25519 plugin first (once per server).
        PyMySQL needs PyNaCl for ed25519; the `mariadb` CLI speaks it natively."""
        requested: str = plugin  # checked at run time too: callers may pass any string
        if requested not in get_args(AuthPlugin):
            hint = " (MariaDB has no caching_sha2_password)" if requested == "caching_sha2_password" else ""
            raise DevDbError(f"unsupported authentication plugin {requested!r}{hint}")
        _check_name(name)
        if plugin == "ed25519":
            self._ensure_ed25519()
        account = f"{_sql_literal(name)}@{_sql_literal(host)}"
        sql = f"CREATE USER {account} IDENTIFIED VIA {plugin} USING PASSWORD({_sql_literal(password)});"
        if grant_database is not None:
            sql += f" GRANT ALL ON `{_check_name(grant_database)}`.* TO {account};"
        self.run_sql(sql)
        self._passwords[name] = password

    # ------------------------------------------------------------------ internals

    def _ensure_ed25519(self) -> None:
        active = self.run_sql(
            "SELECT 1 FROM information_schema.PLUGINS "
            "WHERE PLUGIN_NAME = 'ed25519' AND PLUGIN_STATUS = 'ACTIVE'"
        )
        if active:
            return
        try:
            self.run_sql("INSTALL SONAME 'auth_ed25519'")
        except DevDbError as exc:
            cause = exc.__cause__
            if not (isinstance(cause, _pymysql().err.MySQLError) and cause.args[0] == ER_PLUGIN_INSTALLED):
                raise DevDbError(
                    f"cannot install the ed25519 authentication plugin (auth_ed25519.so, part of "
                    f"mariadb-server): {exc}\n{self.log_tail()}"
                ) from exc

    def _server_env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("MYSQL")}
        env.update({"HOME": str(self.root), "LC_ALL": "C", "LANG": "C", "TZ": "UTC"})
        return env

    def _give_to_server_user(self, path: Path) -> None:
        if self._os_user is not None:
            os.chown(path, self._os_user.uid, self._os_user.gid)

    def _user_option(self) -> list[str]:
        return [f"--user={self._os_user.name}"] if self._os_user is not None else []

    def _make_root(self) -> Path:
        base = self._base_dir
        if base is None:
            base = Path(tempfile.gettempdir())
            if self._os_user is not None and not world_traversable(base):
                base = Path("/tmp")  # noqa: S108
        root = Path(tempfile.mkdtemp(prefix="dbguard-mariadb-", dir=base))
        root.chmod(0o700)
        self._give_to_server_user(root)
        return root

    def _install(self) -> None:
        self._root = self._make_root()
        _LIVE_SERVERS.add(self)
        command = [
            str(self._install_db_bin),
            "--no-defaults",
            f"--datadir={self.datadir}",
            "--auth-root-authentication-method=normal",
            "--skip-test-db",
            *self._user_option(),
            *SERVER_OPTIONS,
        ]
        started = time.monotonic()
        result = subprocess.run(
            command,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            cwd=self.root,
            env=self._server_env(),
            timeout=self.start_timeout * 3,
            check=False,
        )
        if result.returncode != 0:
            raise DevDbError(
                f"mariadb-install-db failed ({result.returncode}) in {self.datadir}:\n"
                f"{result.stdout[-4000:]}\n{result.stderr[-4000:]}"
            )
        if self.ssl:
            tls_dir = self.root / "tls"
            make_self_signed_cert(tls_dir)
            for path in (tls_dir, *tls_dir.iterdir()):
                self._give_to_server_user(path)
        if self._port is None:
            self._port = pick_free_port()
        logger.info(
            "devdb.mariadb.install datadir=%s seconds=%.2f", self.datadir, time.monotonic() - started
        )

    def _server_command(self) -> list[str]:
        command = [
            str(self._server_bin),
            "--no-defaults",
            f"--datadir={self.datadir}",
            f"--socket={self.socket_path}",
            f"--pid-file={self.root / 'mariadbd.pid'}",
            f"--log-error={self.log_path}",
            f"--port={self.port}",
            f"--bind-address={LOOPBACK}",
            "--skip-networking=0",
            *self._user_option(),
            *SERVER_OPTIONS,
        ]
        if self.ssl:
            tls_dir = self.root / "tls"
            command += [
                f"--ssl-cert={tls_dir / 'server.crt'}",
                f"--ssl-key={tls_dir / 'server.key'}",
                f"--ssl-ca={tls_dir / 'ca.crt'}",
            ]
        return command

    def _launch_and_wait(self) -> None:
        self._console = (self.root / "console.log").open("ab")
        self._proc = subprocess.Popen(
            self._server_command(),
            stdin=subprocess.DEVNULL,
            stdout=self._console,
            stderr=subprocess.STDOUT,
            cwd=self.root,
            env=self._server_env(),
            start_new_session=True,
        )
        try:
            self._wait_until_ready()
        except BaseException:
            self.kill()
            raise

    def _wait_until_ready(self) -> None:
        proc = self._proc
        assert proc is not None
        deadline = time.monotonic() + self.start_timeout
        while True:
            code = proc.poll()
            if code is not None:
                raise DevDbError(
                    f"mariadbd exited with status {code} during start "
                    f"(port {self.port}, data {self.datadir}):\n{self.log_tail()}"
                )
            if self.socket_path.exists():
                try:
                    self.run_sql("SELECT 1")
                    return
                except DevDbError as exc:
                    last_error = str(exc)
            else:
                last_error = "no socket yet"
            if time.monotonic() > deadline:
                raise DevDbError(
                    f"mariadbd did not accept connections on {self.host}:{self.port} within "
                    f"{self.start_timeout:.0f}s ({last_error}):\n{self.log_tail()}"
                )
            time.sleep(0.05)

    def _forget_process(self) -> None:
        self._proc = None
        if self._console is not None:
            self._console.close()
            self._console = None

    def _bootstrap(self) -> None:
        """Root gets a password everywhere; the app user owns the app database."""
        # mariadb-install-db also makes root@<hostname>, which --skip-name-resolve ignores
        # (and ALTER USER refuses): drop those rows, keep socket and loopback root accounts.
        hosts = [
            row[0]
            for row in self.run_sql(
                "SELECT Host FROM mysql.user WHERE User = 'root' AND Host IN ('localhost', '127.0.0.1', '::1')"
            )
        ]
        password = _sql_literal(self.root_password)
        app = f"{_sql_literal(self.app_user)}@'%'"
        statements = [
            "DELETE FROM mysql.global_priv WHERE Host NOT IN ('localhost', '127.0.0.1', '::1')",
            "DELETE FROM mysql.proxies_priv WHERE Host NOT IN ('localhost', '127.0.0.1', '::1')",
            "FLUSH PRIVILEGES",
        ]
        statements += [
            f"ALTER USER 'root'@{_sql_literal(host)} "
            f"IDENTIFIED VIA mysql_native_password USING PASSWORD({password})"
            for host in hosts
        ]
        statements += [
            f"CREATE DATABASE `{self.app_database}`",
            f"CREATE USER {app} IDENTIFIED VIA mysql_native_password "
            f"USING PASSWORD({_sql_literal(self.app_password)})",
            f"GRANT ALL ON `{self.app_database}`.* TO {app}",
        ]
        self.run_sql(";\n".join(statements))
        self._bootstrapped = True
        logger.info("devdb.mariadb.bootstrap app_user=%s app_database=%s", self.app_user, self.app_database)
