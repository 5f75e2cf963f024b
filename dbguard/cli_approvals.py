"""The approval commands of the command line: `dbguard approvals list|show|approve|deny|watch`.

Owns: finding the store (`--store URL`, else the configuration's `store:`), the chain key
(`journal.hmac_key`, else `$DBGUARD_JOURNAL_KEY`) with which decisions are journaled,
proving who decides (`--as IDENTITY` with that identity's secret from `$DBGUARD_SECRET` or a
prompt, compared in constant time against the configuration's identities), rendering with
rich or as JSON, the live `watch` view, and these commands' exit statuses (0 ok, 1 a decision
the queue refused or a failed proof of identity, 2 usage, configuration or store errors).
Every change goes through `dbguard.approvals.ApprovalStore`, which journals it; this module
decides nothing itself.
"""

from __future__ import annotations

import argparse
import getpass
import json
import os
import select
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Final

from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.syntax import Syntax
from rich.table import Table
from rich.text import Text

from dbguard.approvals import (
    CURRENT_APPROVALS_SCHEMA_VERSION,
    ApprovalNotFound,
    ApprovalRequest,
    ApprovalStatus,
    ApprovalStore,
    DecisionRefused,
    Verdict,
    request_to_dict,
)
from dbguard.cli_args import SECRET_ENV_VAR
from dbguard.cli_store import KEY_ENV_VAR, StoreTarget, UsageError, store_target
from dbguard.config import (
    DEFAULT_APPROVAL_TIMEOUT,
    Config,
    ConfigError,
    IdentityConfig,
    Secret,
)
from dbguard.journal import StoreError, now_us
from dbguard.journal.events import iso_from_us

EXIT_OK: Final = 0
EXIT_REFUSED: Final = 1
EXIT_USAGE: Final = 2
_STATUS_STYLE: Final = {"pending": "yellow", "approved": "green", "used": "green", "denied": "red",
                        "expired": "dim"}
_SQL_IN_LIST: Final = 70
# Compared against when --as names no identity, so a wrong name takes as long as a wrong secret.
_NO_SECRET: Final = Secret("dbguard: no such identity " + "x" * 32)

_out = Console(highlight=False, soft_wrap=True)
_err = Console(stderr=True, highlight=False, soft_wrap=True)


class Refused(Exception):
    """A refused decision or proof of identity: printed on stderr, exit status 1."""


def run_approvals(args: argparse.Namespace) -> int:
    commands: dict[str, Callable[[argparse.Namespace], int]] = {
        "list": _list, "show": _show, "approve": _decide, "deny": _decide, "watch": _watch,
    }
    try:
        return commands[args.approvals_command](args)
    except UsageError as exc:
        _err.print(f"dbguard: {exc}", markup=False, style="bold red")
        return EXIT_USAGE
    except Refused as exc:
        _err.print(f"dbguard: {exc}", markup=False, style="bold red")
        return EXIT_REFUSED
    except ConfigError:
        raise  # cli.main prints it and exits 2
    except StoreError as exc:
        _err.print(f"dbguard: store: {exc}", markup=False, style="bold red")
        return EXIT_USAGE
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_REFUSED


# ---------------------------------------------------------------------------------------------
# Store, configuration, identity


def _target(args: argparse.Namespace, *, need_config: bool) -> StoreTarget:
    return store_target(args.config, args.store, need_config=need_config)


@contextmanager
def _queue(args: argparse.Namespace, *, need_config: bool = False, create: bool = False
           ) -> Iterator[tuple[ApprovalStore, StoreTarget]]:
    """The queue on the store, journaling with the configured key. Readers never create the
    store nor the queue's tables (an empty queue has none yet); an older layout is upgraded."""
    target = _target(args, need_config=need_config)
    config = target.config
    webhooks = [w.reveal() for w in config.approvals.webhooks] if config is not None else []
    timeout = config.approvals.timeout if config is not None else DEFAULT_APPROVAL_TIMEOUT
    try:
        queue = ApprovalStore.open(target.url, key=target.key, timeout=timeout, webhooks=webhooks, create=False,
                                   migrate=create, redacted_url=target.label)
    except StoreError as e:
        if args.store is None and config is not None:
            raise config.error("store", str(e)) from None
        raise UsageError(f"--store: {e}") from None
    except ValueError as e:  # a chain key that cannot be used
        raise UsageError(str(e)) from None
    try:
        version = queue.schema_version()
        if 0 < version < CURRENT_APPROVALS_SCHEMA_VERSION:
            queue.migrate()
        yield queue, target
    finally:
        if queue.notifier is not None:
            queue.notifier.flush()  # webhooks of this command's decision, before the process exits
        queue.close()


def _has_queue(queue: ApprovalStore) -> bool:
    return queue.schema_version() > 0


def _get(queue: ApprovalStore, approval_id: str) -> ApprovalRequest:
    if not _has_queue(queue):
        raise UsageError(f"no approval request {approval_id!r} (this store has no approval queue yet)")
    try:
        return queue.get(approval_id.strip())
    except ApprovalNotFound as e:
        raise UsageError(str(e)) from None


def _authenticate(config: Config, name: str) -> IdentityConfig:
    """The identity `name`, proved by its secret ($DBGUARD_SECRET or a prompt); Refused if not."""
    secret = os.environ.get(SECRET_ENV_VAR)
    if secret is None:
        if not sys.stdin.isatty():
            raise UsageError(f"--as {name}: set ${SECRET_ENV_VAR} to {name}'s secret, or run in a terminal to be "
                             "asked for it")
        try:
            secret = getpass.getpass(f"secret of {name}: ")
        except EOFError:
            raise UsageError(f"--as {name}: no secret given") from None
    identity = config.identity(name)
    matched = (identity.secret if identity is not None else _NO_SECRET).matches(secret)
    if identity is None or not matched:
        raise Refused(f"--as {name}: unknown identity or wrong secret; nothing was decided")
    return identity


# ---------------------------------------------------------------------------------------------
# Rendering


def _write_json(payload: object) -> None:
    sys.stdout.write(json.dumps(payload, indent=2, ensure_ascii=False) + "\n")


def format_sql(request: ApprovalRequest) -> str:
    """The statement pretty-printed for its dialect; as written when it cannot be parsed."""
    sql = request.sql
    try:
        if request.protocol == "mysql":
            import sqlglot

            parts = sqlglot.transpile(sql, read="mysql", write="mysql", pretty=True)
            return ";\n".join(parts) if parts else sql
        import pglast

        return str(pglast.prettify(sql, preserve_comments=True))
    except Exception:  # any parser failure: show it as written
        return sql


def _duration(seconds: float) -> str:
    s = int(abs(seconds))
    if s >= 3600:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 60}m{s % 60:02d}s" if s >= 60 else f"{s}s"


def _short_time(time_us: int | None) -> str:
    return "" if time_us is None else iso_from_us(time_us).replace("T", " ")[:19]


def _deadline(r: ApprovalRequest, now: int) -> str:
    if r.status is ApprovalStatus.PENDING:
        left = (r.expires_us - now) / 1e6
        return f"in {_duration(left)}" if left > 0 else "expired"
    if r.status is ApprovalStatus.APPROVED:
        left = (r.expires_us - now) / 1e6
        return f"usable {_duration(left)}" if left > 0 else "grant ended"
    return ""


def _rows(r: ApprovalRequest) -> str:
    b = r.blast_radius
    if b.exact_rows is not None:
        return str(b.exact_rows)
    if b.estimated_rows is not None:
        return f"~{b.estimated_rows}"
    return "?"


def _one_line(sql: str) -> str:
    text = " ".join(sql.split())
    return text if len(text) <= _SQL_IN_LIST else text[: _SQL_IN_LIST - 1] + "…"


def _status_text(r: ApprovalRequest) -> Text:
    return Text(r.status.value, style=_STATUS_STYLE.get(r.status.value, ""))


def _table(found: list[ApprovalRequest], now: int, *, title: str | None = None) -> Table:
    """One line per request; SQL and decisions fold, the rest keeps its width (80 columns work)."""
    decided_any = any(r.decided_by or r.reason for r in found)
    table = Table(title=title, title_justify="left")
    table.add_column("id", no_wrap=True)
    table.add_column("status", no_wrap=True)
    table.add_column("expires", no_wrap=True)
    table.add_column("identity", no_wrap=True)
    table.add_column("database", overflow="fold", min_width=8, max_width=16)
    table.add_column("rules", overflow="fold", min_width=8, max_width=20)
    table.add_column("rows", justify="right", no_wrap=True)
    table.add_column("sql", overflow="fold", min_width=16, ratio=1)
    if decided_any:
        table.add_column("decided", overflow="fold", min_width=12)
    for r in found:
        cells: list[str | Text] = [r.id, _status_text(r), _deadline(r, now) or _short_time(r.created_us)[5:16],
                                   r.identity, r.database, ", ".join(r.rule_ids), _rows(r), _one_line(r.sql)]
        if decided_any:
            cells.append(f"{r.decided_by}: {r.reason}" if r.decided_by and r.reason else r.decided_by or r.reason)
        table.add_row(*cells)
    return table


def _details(r: ApprovalRequest, now: int) -> RenderableType:
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold", no_wrap=True)
    grid.add_column(overflow="fold")

    def row(name: str, value: str | Text) -> None:
        grid.add_row(name, value if isinstance(value, Text) else Text(value))

    status = _status_text(r)
    deadline = _deadline(r, now)
    if deadline:
        status.append(f" ({deadline})", style="dim")
    row("approval", r.id)
    row("status", status)
    row("requested", f"{_short_time(r.created_us)} UTC; expires {_short_time(r.expires_us)} UTC")
    row("identity", f"{r.identity} ({r.identity_kind})" + (f", roles {', '.join(r.roles)}" if r.roles else ""))
    row("intent", r.intent or "(none declared)")
    seq = f", statement {r.statement_seq}" if r.statement_seq is not None else ""
    row("session", f"{r.session_id}{seq}" if r.session_id else "-")
    row("client", r.client_address or "-")
    row("database", f"{r.database} via listener {r.listener} ({r.protocol})")
    row("rules", ", ".join(r.rule_ids) or "-")
    row("approvers", "roles " + " or ".join(r.approvers) if r.approvers else "any identity but the requester")
    row("tables", ", ".join(r.tables) or "-")
    b = r.blast_radius
    estimated = "?" if b.estimated_rows is None else str(b.estimated_rows)
    exact = "not measured" if b.exact_rows is None else str(b.exact_rows)
    row("rows", f"estimated {estimated}, exact {exact}" + (f" ({b.note})" if b.note else ""))
    if r.parameters is not None:
        row("parameters", ", ".join("NULL" if p is None else repr(p) for p in r.parameters))
    if r.decided_by or r.decided_us is not None:
        who = r.decided_by or "dbguard"
        row("decided", f"{r.status.value} by {who} at {_short_time(r.decided_us)} UTC"
            + (f": {r.reason}" if r.reason else ""))
    if r.used_us is not None:
        row("used", f"{_short_time(r.used_us)} UTC")
    sql = Syntax(format_sql(r), "sql", theme="ansi_dark", word_wrap=True, background_color="default")
    return Group(grid, Text(""), sql)


# ---------------------------------------------------------------------------------------------
# list / show


def _list(args: argparse.Namespace) -> int:
    if args.limit < 1:
        raise UsageError("--limit: must be at least 1")
    statuses = [] if args.all else [ApprovalStatus(s) for s in (args.status or ["pending"])]
    now = now_us()
    with _queue(args) as (queue, target):
        found = queue.list_requests(statuses or None, limit=args.limit, now=now) if _has_queue(queue) else []
    found = [r.effective(now) for r in found]
    if args.json:
        _write_json({"store": target.label, "requests": [request_to_dict(r) for r in found]})
        return EXIT_OK
    if not found:
        what = "pending " if statuses == [ApprovalStatus.PENDING] else ""
        _out.print(f"no {what}approval requests", style="dim")
        return EXIT_OK
    _out.print(_table(found, now))
    return EXIT_OK


def _show(args: argparse.Namespace) -> int:
    now = now_us()
    with _queue(args) as (queue, target):
        r = _get(queue, args.id).effective(now)
    if args.json:
        _write_json({"store": target.label, "request": {**request_to_dict(r), "sql_formatted": format_sql(r)}})
        return EXIT_OK
    _out.print(_details(r, now))
    return EXIT_OK


# ---------------------------------------------------------------------------------------------
# approve / deny


def _decide(args: argparse.Namespace) -> int:
    verdict = Verdict.APPROVE if args.approvals_command == "approve" else Verdict.DENY
    reason = (args.reason or "").strip()
    if verdict is Verdict.DENY and not reason:
        raise UsageError("deny: --reason TEXT is required (the client is told why)")
    with _queue(args, need_config=True) as (queue, target):
        assert target.config is not None
        identity = _authenticate(target.config, args.as_identity)
        _check_key(queue)
        r = _get(queue, args.id)
        try:
            decided = queue.decide(r.id, verdict, identity.name, identity.roles, reason)
        except DecisionRefused as e:
            if args.json:
                _write_json({"ok": False, "refusal": e.code.value, "message": str(e),
                             "request": request_to_dict(e.request)})
            raise Refused(str(e)) from None
    if args.json:
        _write_json({"ok": True, "request": request_to_dict(decided)})
        return EXIT_OK
    _out.print(_decided_text(decided), markup=False)
    return EXIT_OK


def _check_key(queue: ApprovalStore) -> None:
    """A decision is journaled with it: refuse before deciding when it does not fit the chain."""
    if queue.hasher is not None:
        try:
            queue.store.check_hasher(queue.hasher)
        except StoreError as e:
            raise UsageError(f"{e} (journal.hmac_key or ${KEY_ENV_VAR}); nothing was decided") from None


def _decided_text(r: ApprovalRequest) -> Text:
    if r.status is ApprovalStatus.APPROVED:
        return Text(f"approved {r.id} as {r.decided_by}: the statement of {r.identity} runs once "
                    f"(grant usable until {_short_time(r.expires_us)} UTC)", style="green")
    return Text(f"denied {r.id} as {r.decided_by}: {r.reason}", style="red")


# ---------------------------------------------------------------------------------------------
# watch


_WATCH_HELP: Final = ("press Enter, then: a ID [REASON] to approve · d ID REASON to deny · s ID to show · "
                      "q to quit")
_WATCH_READ_ONLY: Final = ("read-only view (no --as): decide in another terminal with "
                           "dbguard approvals approve ID --as NAME / deny ID --reason TEXT --as NAME; Ctrl-C quits")


def _watch(args: argparse.Namespace) -> int:
    if args.interval <= 0:
        raise UsageError("--interval: must be more than 0")
    interactive = args.as_identity is not None
    if interactive and not args.once and not sys.stdin.isatty():
        raise UsageError("watch --as: needs a terminal to read commands from")
    with _queue(args, need_config=interactive, create=not args.once) as (queue, target):
        identity: IdentityConfig | None = None
        if interactive:
            assert target.config is not None
            identity = _authenticate(target.config, args.as_identity)
            _check_key(queue)

        def snapshot() -> list[ApprovalRequest]:
            return queue.list_requests(ApprovalStatus.PENDING, limit=200) if _has_queue(queue) else []

        if args.once:
            found = snapshot()
            if args.json:
                _write_json({"store": target.label, "requests": [request_to_dict(r) for r in found]})
            else:
                _out.print(_watch_view(found, target.label, identity, ""))
            return EXIT_OK
        return _watch_live(queue, target.label, identity, snapshot, args.interval)


def _watch_view(found: list[ApprovalRequest], label: str, identity: IdentityConfig | None, message: str
                ) -> RenderableType:
    now = now_us()
    title = f"pending approvals in {label} ({len(found)}) · {_short_time(now)} UTC"
    parts: list[RenderableType] = [
        _table(found, now, title=title) if found else Text(f"{title}: none", style="dim"),
        Text(_WATCH_HELP if identity is not None else _WATCH_READ_ONLY, style="dim"),
    ]
    if message:
        parts.append(Text(message))
    return Group(*parts)


def _watch_live(queue: ApprovalStore, label: str, identity: IdentityConfig | None,
                snapshot: Callable[[], list[ApprovalRequest]], interval: float) -> int:
    message = ""
    reads_commands = identity is not None
    with Live(_watch_view(snapshot(), label, identity, message), console=_out, auto_refresh=False) as live:
        while True:
            queue.wait_for_update(min(interval, 0.5) if reads_commands else interval)
            if reads_commands and _stdin_ready():
                line = sys.stdin.readline()
                if not line:
                    return EXIT_OK  # end of input
                live.stop()
                command = line.strip() or _prompt()
                if command in ("q", "quit", "exit"):
                    return EXIT_OK
                assert identity is not None
                message = _watch_command(queue, identity, command) if command else ""
                live.start()
            live.update(_watch_view(snapshot(), label, identity, message), refresh=True)


def _stdin_ready() -> bool:
    try:
        ready, _, _ = select.select([sys.stdin], [], [], 0)
    except (OSError, ValueError):
        return False
    return bool(ready)


def _prompt() -> str:
    try:
        return input("approvals> ").strip()
    except EOFError:
        return "q"


def _watch_command(queue: ApprovalStore, identity: IdentityConfig, command: str) -> str:
    """Run one command typed in the watch view; the line to show under the table."""
    verb, _, rest = command.partition(" ")
    approval_id, _, reason = rest.strip().partition(" ")
    reason = reason.strip()
    if verb not in ("a", "d", "s") or not approval_id:
        return f"? {command!r}: " + _WATCH_HELP
    try:
        if verb == "s":
            _out.print(_details(queue.get(approval_id), now_us()))
            input("(Enter to go back) ")
            return ""
        if verb == "d" and not reason:
            return f"deny {approval_id}: a reason is required (d ID REASON)"
        verdict = Verdict.APPROVE if verb == "a" else Verdict.DENY
        decided = queue.decide(approval_id, verdict, identity.name, identity.roles, reason)
    except (ApprovalNotFound, DecisionRefused) as e:
        return f"refused: {e}"
    except EOFError:
        return ""
    return _decided_text(decided).plain
