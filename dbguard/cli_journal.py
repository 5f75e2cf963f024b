"""The journal commands of the command line: `dbguard journal sessions|show|tail|replay|export|verify|prune`.

Owns: finding the store (`--store URL`, else the configuration's `store:`) and the chain key
(the configuration's `journal.hmac_key`, else `$DBGUARD_JOURNAL_KEY`), parsing times (ISO
8601), rendering with rich or as JSON, and these commands' exit statuses (0 ok, 1 a failed
verification or a replayed outcome that differs, 2 usage, configuration or store errors naming
the problem). Everything it shows comes from `dbguard.journal`; it records nothing itself except
what `prune` journals. `replay --execute` runs statements, for real, on the database it is given
(through `dbguard.journal.replay_execute`), never on the store.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Final, TextIO

from rich.console import Console
from rich.table import Table
from rich.text import Text

from dbguard.cli_store import KEY_ENV_VAR, StoreTarget, UsageError, store_target
from dbguard.config import (
    ConfigError,
    parse_upstream_dsn,
)
from dbguard.journal import ChainHasher, JournalStore, StoreError, open_store
from dbguard.journal.chain import ChainProblem, StoredEvent
from dbguard.journal.events import event_to_dict, iso_from_us, parse_time
from dbguard.journal.export import KeyRequired, export_range, verify_export
from dbguard.journal.replay import ReplayLine, describe, replay, replay_lines
from dbguard.journal.replay_execute import (
    DIFFERS,
    NOT_RECORDED,
    SAME,
    SKIPPED,
    ExecuteError,
    ExecuteTarget,
    PlannedStatement,
    ReplayResult,
    connect,
    execute_replay,
    plan,
    session_protocol,
)
from dbguard.journal.segments import recover_segments, segment_directory
from dbguard.journal.store import SessionSummary
from dbguard.journal.store_sqlite import SqliteJournalStore

EXIT_OK: Final = 0
EXIT_FAILED: Final = 1
EXIT_USAGE: Final = 2
_STYLE: Final = {"allow": "green", "hold": "yellow", "block": "red"}

_out = Console(highlight=False, soft_wrap=True)
_err = Console(stderr=True, highlight=False, soft_wrap=True)


def run_journal(args: argparse.Namespace) -> int:
    commands: dict[str, Callable[[argparse.Namespace], int]] = {
        "sessions": _sessions,
        "show": _show,
        "tail": _tail,
        "replay": _replay,
        "export": _export,
        "verify": _verify,
        "prune": _prune,
    }
    try:
        return commands[args.journal_command](args)
    except UsageError as exc:
        _err.print(f"dbguard: {exc}", markup=False, style="bold red")
        return EXIT_USAGE
    except ConfigError:
        raise  # cli.main prints it and exits 2
    except StoreError as exc:
        _err.print(f"dbguard: journal store: {exc}", markup=False, style="bold red")
        return EXIT_USAGE
    except BrokenPipeError:
        # The reader went away (`… | head`): stop quietly; the output is incomplete.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_FAILED


# ---------------------------------------------------------------------------------------------
# Shared: store, key, times, JSON


def _target(args: argparse.Namespace) -> StoreTarget:
    return store_target(args.config, args.store)


@contextmanager
def _store(args: argparse.Namespace, *, create: bool = False) -> Iterator[tuple[JournalStore, StoreTarget]]:
    target = _target(args)
    try:
        store = open_store(target.url, create=create, redacted_url=target.label)
    except StoreError as e:
        if target.config is not None:
            raise target.config.error("store", str(e)) from None
        raise UsageError(f"--store: {e}") from None
    try:
        _recover_segments(store, target)
        yield store, target
    finally:
        store.close()


def _recover_segments(store: JournalStore, target: StoreTarget) -> None:
    """Events a stopped or killed proxy left in its write-ahead segments go into the store
    first, so that every command sees them (journal/segments.py)."""
    if not isinstance(store, SqliteJournalStore) or store.path is None:
        return
    directory = segment_directory(store.path)
    if not directory.is_dir():
        return
    try:
        hasher = ChainHasher(target.key)
        store.check_hasher(hasher)
        recovered = recover_segments(store, hasher, directory)
    except (StoreError, ValueError) as e:
        _err.print(f"dbguard: warning: events left in {directory} were not recovered: {e}", markup=False,
                   style="yellow")
        return
    if recovered:
        _err.print(f"dbguard: recovered {recovered} events a stopped proxy left in {directory}", markup=False)


def _time(value: str | None, option: str) -> int | None:
    if value is None:
        return None
    try:
        return parse_time(value)
    except ValueError as e:
        raise UsageError(f"{option}: {e}") from None


def _write_json(payload: object) -> None:
    sys.stdout.write(json.dumps(payload, indent=2, ensure_ascii=False) + "\n")


def _json_line(payload: object) -> None:
    sys.stdout.write(json.dumps(payload, ensure_ascii=False) + "\n")
    sys.stdout.flush()


def _event_json(ev: StoredEvent) -> dict[str, Any]:
    return {"seq": ev.seq, "time": iso_from_us(ev.time_us), "prev_hash": ev.prev_hash, "hash": ev.hash,
            "event": event_to_dict(ev.event())}


def _short_time(time_us: int) -> str:
    return iso_from_us(time_us).replace("T", " ")[:23]


def _problem_json(p: ChainProblem) -> dict[str, Any]:
    return {"seq": p.seq, "problem": p.problem, "message": p.message}


# ---------------------------------------------------------------------------------------------
# sessions / show / tail


def _session_json(s: SessionSummary) -> dict[str, Any]:
    return {
        "session_id": s.session_id, "identity": s.identity, "identity_kind": s.identity_kind,
        "listener": s.listener, "protocol": s.protocol, "database": s.database, "client_address": s.client_address,
        "started": iso_from_us(s.start_us), "ended": None if s.end_us is None else iso_from_us(s.end_us),
        "end_reason": s.end_reason, "statements": s.statements, "blocked": s.blocked, "held": s.held,
    }


def _sessions(args: argparse.Namespace) -> int:
    since, until = _time(args.since, "--since"), _time(args.until, "--until")
    if args.limit < 1:
        raise UsageError("--limit: must be at least 1")
    with _store(args) as (store, target):
        found = store.sessions(since_us=since, until_us=until, identity=args.identity, limit=args.limit)
    if args.json:
        _write_json({"store": target.label, "sessions": [_session_json(s) for s in found]})
        return EXIT_OK
    if not found:
        _out.print("no sessions recorded" + (" in that range" if since or until or args.identity else ""), style="dim")
        return EXIT_OK
    table = Table()
    table.add_column("session", no_wrap=True)
    for column in ("identity", "listener", "database", "client", "started", "ended"):
        table.add_column(column, overflow="fold")
    for column in ("statements", "blocked", "held"):
        table.add_column(column, justify="right")
    for s in found:
        ended = "open" if s.end_us is None else f"{_short_time(s.end_us)} {s.end_reason}".rstrip()
        table.add_row(s.session_id, f"{s.identity} ({s.identity_kind})", s.listener, s.database, s.client_address,
                      _short_time(s.start_us), ended, str(s.statements),
                      Text(str(s.blocked), style="red" if s.blocked else ""),
                      Text(str(s.held), style="yellow" if s.held else ""))
    _out.print(table)
    return EXIT_OK


def _show(args: argparse.Namespace) -> int:
    with _store(args) as (store, target):
        session_id = _resolve(store, args.session)
        events = store.session_events(session_id)
    if args.json:
        _write_json({"store": target.label, "session_id": session_id, "events": [_event_json(e) for e in events]})
        return EXIT_OK
    table = Table(title=f"session {session_id}", title_justify="left")
    table.add_column("seq", justify="right")
    table.add_column("time", no_wrap=True)
    table.add_column("kind")
    table.add_column("event", overflow="fold")
    for line in replay_lines(events):
        table.add_row(str(line.seq), _short_time(line.time_us), line.kind, Text(line.text, style=line.style))
    _out.print(table)
    return EXIT_OK


def _resolve(store: JournalStore, session: str) -> str:
    try:
        return store.resolve_session(session)
    except StoreError as e:
        raise UsageError(str(e)) from None


def _tail_line(ev: StoredEvent) -> Text:
    text, style = describe(ev.event())
    return Text.assemble((f"{ev.seq:>8} ", "dim"), (_short_time(ev.time_us) + " ", "dim"),
                         (f"{ev.session_id[:12]:<12} ", "cyan"), (text, style))


def _tail(args: argparse.Namespace) -> int:
    if args.lines < 0:
        raise UsageError("-n: must be 0 or more")
    if args.interval <= 0:
        raise UsageError("--interval: must be more than 0")
    with _store(args) as (store, _):
        events = store.last_events(args.lines) if args.lines else []
        last = events[-1].seq if events else store.head().seq
        for ev in events:
            _json_line(_event_json(ev)) if args.json else _out.print(_tail_line(ev))
        while args.follow:
            time.sleep(args.interval)
            for ev in store.events_after(last):
                _json_line(_event_json(ev)) if args.json else _out.print(_tail_line(ev))
                last = ev.seq
    return EXIT_OK


# ---------------------------------------------------------------------------------------------
# replay


def _replay(args: argparse.Namespace) -> int:
    if args.speed is not None and args.speed < 0:
        raise UsageError("--speed: must be 0 or more")
    if args.max_wait is not None and args.max_wait < 0:
        raise UsageError("--max-wait: must be 0 or more")
    if args.execute is not None:
        return _replay_execute(args)
    if args.speed is None:
        args.speed = 1.0
    with _store(args) as (store, _):
        session_id = _resolve(store, args.session)
        lines = replay_lines(store.session_events(session_id))

    def emit(line: ReplayLine) -> None:
        if args.json:
            _json_line(line.to_json())
        else:
            _out.print(Text.assemble((f"+{line.offset_us / 1_000_000:9.3f}s ", "dim"), (line.text, line.style)))

    def wait_enter() -> None:
        _err.print("[Enter] next statement", style="dim", end="")
        sys.stdin.readline()

    replay(lines, emit, speed=args.speed, step=args.step, sleep=time.sleep, wait_enter=wait_enter,
           max_wait=args.max_wait)
    return EXIT_OK


# ---------------------------------------------------------------------------------------------
# replay --execute


_DSN_PROTOCOLS: Final = {"postgres": "postgres", "postgresql": "postgres", "mysql": "mysql", "mariadb": "mysql"}
_RESULT_STYLE: Final = {DIFFERS: "bold red", SAME: "green", SKIPPED: "dim", NOT_RECORDED: "yellow"}
_SHOWN_TEXT: Final = 120  # statement text shown in the table; --json has all of it


def _execute_target(dsn: str, session_protocol: str | None) -> ExecuteTarget:
    """The --execute DSN as a target; a UsageError (without the password) when it is not usable
    for this session."""
    scheme = dsn.strip().partition("://")[0].lower() if "://" in dsn else ""
    protocol = _DSN_PROTOCOLS.get(scheme)
    if protocol is None:
        raise UsageError("--execute: expected a DSN postgresql://USER:PASSWORD@HOST:PORT/DATABASE "
                         "or mysql://USER:PASSWORD@HOST:PORT/DATABASE")
    try:
        parsed = parse_upstream_dsn(dsn, protocol, base_dir=Path.cwd())
    except ValueError as e:
        raise UsageError(f"--execute: {e}") from None
    label = parsed.redacted()
    if session_protocol is not None and session_protocol != protocol:
        wanted = "postgresql://…" if session_protocol == "postgres" else "mysql://…"
        raise UsageError(f"--execute: the session was recorded through a {session_protocol} listener, "
                         f"but {label} is a {protocol} DSN (give a {wanted} DSN)")
    password = parsed.password.reveal() if parsed.password is not None else None
    params = parsed.params
    return ExecuteTarget(
        protocol=protocol, label=label, conninfo=parsed.url() if protocol == "postgres" else "",
        host=parsed.host, port=parsed.port, user=parsed.user, password=password, database=parsed.database,
        sslmode=parsed.sslmode.value, sslrootcert=parsed.sslrootcert, sslcert=params.get("sslcert"),
        sslkey=params.get("sslkey"), charset=params.get("charset", "utf8mb4"),
        connect_timeout=parsed.connect_timeout if parsed.connect_timeout is not None else 10.0,
    )


def _replay_execute(args: argparse.Namespace) -> int:
    """`journal replay SESSION --execute DSN`: the session's statements that ran, run again
    on one connection to DSN, in order; a report of where the outcomes differ. No waits unless
    --speed is given (then the recorded gaps between statements / X, at most --max-wait);
    --step asks before each statement. Exit 1 if any outcome differs (or the run was cut short)."""
    with _store(args) as (store, target):
        session_id = _resolve(store, args.session)
        events = store.session_events(session_id)
    protocol = session_protocol(events)
    exec_target = _execute_target(args.execute, protocol)
    if protocol is None:
        protocol = exec_target.protocol
        _err.print(f"dbguard: the start of session {session_id} is not in the journal (pruned?): "
                   f"assuming its statements are {protocol} SQL", markup=False, style="yellow")
    planned = plan(events, protocol)
    runnable = sum(1 for p in planned if not p.skip_reason)
    try:
        executor = connect(exec_target)
    except ExecuteError as e:
        raise UsageError(f"--execute: {e}") from None
    _err.print(f"dbguard: running {runnable} of the {len(planned)} statements of session {session_id} "
               f"against {exec_target.label}", markup=False, style="bold yellow")

    def before(item: PlannedStatement, gap_us: int) -> None:
        if args.step:
            _err.print(Text.assemble((f"#{item.statement.seq} ", "bold"), _shown(item.statement.text)))
            _err.print("[Enter] run it (Ctrl-C stops)", style="dim", end="")
            sys.stdin.readline()
        elif args.speed and gap_us > 0:
            seconds = gap_us / 1_000_000 / args.speed
            time.sleep(seconds if args.max_wait is None else min(seconds, args.max_wait))

    results: list[ReplayResult] = []
    interrupted = False
    try:
        for result in execute_replay(planned, executor, before=before):
            results.append(result)
    except KeyboardInterrupt:
        interrupted = True
    finally:
        executor.close()
    counts = {status: sum(1 for r in results if r.status == status)
              for status in (SAME, DIFFERS, SKIPPED, NOT_RECORDED)}
    not_run = len(planned) - len(results)
    if args.json:
        _write_json({"store": target.label, "session_id": session_id, "protocol": protocol,
                     "target": exec_target.label, "results": [r.to_json() for r in results],
                     "summary": {**counts, "not run": not_run}, "interrupted": interrupted})
    else:
        _print_execute_report(session_id, exec_target.label, results)
        words = {DIFFERS: "differ" if counts[DIFFERS] != 1 else "differs"}
        summary = ", ".join(f"{n} {words.get(status, status)}" for status, n in counts.items())
        if interrupted:
            summary += f"; interrupted, {not_run} not run"
        _out.print(summary, style="bold red" if counts[DIFFERS] or interrupted else "bold green")
    return EXIT_FAILED if counts[DIFFERS] or interrupted else EXIT_OK


def _shown(text: str) -> str:
    one_line = " ".join(text.split())
    return one_line if len(one_line) <= _SHOWN_TEXT else one_line[: _SHOWN_TEXT - 1] + "…"


def _print_execute_report(session_id: str, label: str, results: Sequence[ReplayResult]) -> None:
    table = Table(title=f"session {session_id} replayed against {label}", title_justify="left")
    table.add_column("#", justify="right")
    table.add_column("statement", overflow="fold")
    table.add_column("recorded")
    table.add_column("replayed")
    table.add_column("result", overflow="fold")
    for r in results:
        recorded = r.planned.recorded
        result = r.status if not r.detail or r.status == NOT_RECORDED else f"{r.status}: {r.detail}"
        replayed = "" if r.replayed is None else r.replayed.describe()
        if r.replayed is not None and r.replayed.error_code and r.replayed.error_message:
            replayed += f" ({_shown(r.replayed.error_message)})"
        table.add_row(str(r.planned.statement.seq), _shown(r.planned.statement.text),
                      "—" if recorded is None else recorded.describe(), replayed,
                      Text(result, style=_RESULT_STYLE.get(r.status, "")))
    _out.print(table)


# ---------------------------------------------------------------------------------------------
# export / verify / prune


def _export(args: argparse.Namespace) -> int:
    since, until = _time(args.since, "--since"), _time(args.until, "--until")
    if since is not None and until is not None and until <= since:
        raise UsageError("--until must be later than --since")
    with _store(args) as (store, target):
        hasher = _hasher(target)
        out: TextIO
        if args.output is None:
            out = sys.stdout
            summary = _do_export(store, out, args, hasher, since, until, target)
        else:
            path = Path(args.output)
            try:
                with path.open("w", encoding="utf-8", newline="") as out:
                    summary = _do_export(store, out, args, hasher, since, until, target)
            except OSError as e:
                raise UsageError(f"-o: cannot write {path}: {e.strerror}") from None
    rng = summary.header["range"]
    where = args.output or "standard output"
    if args.json and args.output is not None:
        _write_json({"file": args.output, "events": summary.events, "omitted": summary.omitted,
                     "first_seq": rng["first_seq"], "last_seq": rng["last_seq"], "anchor": summary.header["anchor"],
                     "algorithm": summary.header["algorithm"]})
    elif not args.json:
        _err.print(f"exported {summary.events} events ({summary.omitted} omitted by filters) "
                   f"seq {rng['first_seq']}..{rng['last_seq']} to {where}", style="green", markup=False)
    return EXIT_OK


def _do_export(store: JournalStore, out: TextIO, args: argparse.Namespace, hasher: ChainHasher, since: int | None,
               until: int | None, target: StoreTarget) -> Any:
    try:
        return export_range(store, out, fmt=args.format, hasher=hasher, since_us=since, until_us=until,
                            identity=args.identity, decision=args.decision, store_label=target.label)
    except KeyRequired as e:
        raise UsageError(f"{e} (${KEY_ENV_VAR} or journal.hmac_key)") from None


def _hasher(target: StoreTarget) -> ChainHasher:
    try:
        return ChainHasher(target.key)
    except ValueError as e:
        raise UsageError(str(e)) from None


def _verify(args: argparse.Namespace) -> int:
    if args.file is not None:
        return _verify_file(args)
    with _store(args) as (store, target):
        hasher = _hasher(target)
        params = store.chain_params()
        if params is not None:
            why = hasher.check_matches(*params)
            if why is not None:
                raise UsageError(why)
        report = store.verify(hasher)
        anchor, head = report.anchor, store.head()
    algorithm = params[0] if params else hasher.algorithm.value
    if args.json:
        _write_json({"ok": report.ok, "store": target.label, "algorithm": algorithm, "checked": report.checked,
                     "anchor": {"seq": anchor.seq, "hash": anchor.hash}, "head": {"seq": head.seq, "hash": head.hash},
                     "problems": [_problem_json(p) for p in report.problems]})
        return EXIT_OK if report.ok else EXIT_FAILED
    if report.ok:
        span = f"seq {report.first_seq}..{report.last_seq}" if report.checked else "empty"
        _out.print(f"OK: {report.checked} events verified ({span}, {algorithm}); anchor {anchor.seq}, "
                   f"head {head.seq} {head.hash[:16]}…", style="bold green", markup=False)
        return EXIT_OK
    _print_problems(report.problems, f"{target.label}: ")
    return EXIT_FAILED


def _print_problems(problems: list[ChainProblem], prefix: str) -> None:
    for p in problems:
        _err.print(f"{prefix}event {p.seq}: {p.problem}: {p.message}", style="bold red", markup=False)
    _err.print(f"FAILED: {len(problems)} problem(s); first bad event: {problems[0].seq}", style="bold red",
               markup=False)


def _verify_file(args: argparse.Namespace) -> int:
    path = Path(args.file)
    key: bytes | None
    if args.store is not None or args.config is not None:
        key = _target(args).key
    else:
        env_key = os.environ.get(KEY_ENV_VAR)
        key = env_key.encode() if env_key else None
    try:
        with path.open(encoding="utf-8", newline="") as f:
            report = verify_export(f, key)
    except FileNotFoundError:
        raise UsageError(f"{path}: file not found") from None
    except (OSError, UnicodeDecodeError) as e:
        raise UsageError(f"{path}: cannot read: {e}") from None
    except KeyRequired as e:
        raise UsageError(f"{path}: {e}") from None
    header = report.header
    if args.json:
        _write_json({"ok": report.ok, "file": str(path), "algorithm": header.get("algorithm"),
                     "range": header.get("range"), "anchor": header.get("anchor"), "checked": report.checked,
                     "omitted": report.omitted, "file_problems": report.file_problems,
                     "problems": [_problem_json(p) for p in report.problems]})
        return EXIT_OK if report.ok else EXIT_FAILED
    if report.ok:
        rng = header.get("range", {})
        _out.print(f"OK: {path}: {report.checked} events verified ({report.omitted} omitted links), seq "
                   f"{rng.get('first_seq')}..{rng.get('last_seq')}, {header.get('algorithm')}, anchor "
                   f"{header['anchor']['seq']}", style="bold green", markup=False)
        return EXIT_OK
    for problem in report.file_problems:
        _err.print(f"{path}: {problem}", style="bold red", markup=False)
    if report.problems:
        _print_problems(report.problems, f"{path}: ")
    else:
        _err.print(f"FAILED: {report.first_problem()}", style="bold red", markup=False)
    return EXIT_FAILED


def _prune(args: argparse.Namespace) -> int:
    before = _time(args.before, "--before")
    assert before is not None
    with _store(args) as (store, target):
        hasher = _hasher(target)
        try:
            store.check_hasher(hasher)
        except StoreError as e:
            raise UsageError(str(e)) from None
        result = store.prune(before, hasher)
    if args.json:
        _write_json({"deleted": result.deleted, "anchor": {"seq": result.anchor.seq, "hash": result.anchor.hash},
                     "prune_event_seq": result.prune_seq or None})
        return EXIT_OK
    if not result.deleted:
        _out.print(f"nothing to prune before {iso_from_us(before)}", style="dim", markup=False)
    else:
        _out.print(f"pruned {result.deleted} events through seq {result.anchor.seq}; the chain now starts at anchor "
                   f"{result.anchor.seq} {result.anchor.hash[:16]}…; recorded as event {result.prune_seq}",
                   style="green", markup=False)
    return EXIT_OK
