"""The arguments of the command line's subcommands, argparse only: `check`, `rules test|lint`,
`journal …` and `approvals …` (`serve` and `demo` are in cli.py).

Owns: the subparsers, their options and help texts. Must not import what runs the commands
(cli_policy.py, cli_journal.py, cli_approvals.py, rich, the journal's readers, the approval
queue): `dbguard serve` parses its arguments with this module and keeps none of that resident.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Final

from dbguard.approvals.model import ApprovalStatus
from dbguard.model import IdentityKind
from dbguard.policy.rules import Dialect

__all__ = ["SECRET_ENV_VAR", "add_approvals_commands", "add_journal_commands", "add_policy_commands"]

SECRET_ENV_VAR: Final = "DBGUARD_SECRET"  # noqa: S105 (the variable's name, not a secret)
_PATH_HELP: Final = "rule file or folder (default: the configuration's rules:)"
_DECISIONS: Final = ("allow", "hold", "block")


def add_policy_commands(
    sub: argparse._SubParsersAction[argparse.ArgumentParser],
    add_config_option: Callable[[argparse.ArgumentParser], None],
) -> None:
    """Register `check` and `rules test|lint` on the top-level subparsers."""
    check = sub.add_parser("check", help="offline decision for SQL statements: action, rules, what the analyser saw")
    add_config_option(check)
    check.add_argument("sql", nargs="+", metavar="SQL", help="SQL text (one message per argument); - reads stdin")
    check.add_argument("--dialect", choices=[d.value for d in Dialect],
                       help="SQL dialect (default: the configuration's listeners' protocol, else postgres)")
    check.add_argument("--identity", metavar="NAME", help="decide for this identity of the configuration")
    check.add_argument("--kind", choices=[k.value for k in IdentityKind],
                       help="identity kind (overrides the configuration's; default agent without --identity)")
    check.add_argument("--role", action="append", metavar="ROLE", help="identity role (repeatable; overrides)")
    check.add_argument("--listener", metavar="NAME", help="listener name rules see (default: the only listener)")
    check.add_argument("--database", metavar="NAME", help="database name rules see")
    check.add_argument("--rules", metavar="PATH", help="rule file or folder (default: the configuration's rules:)")
    check.add_argument("--explain", action="store_true", help="show every rule, whether it matched and why")
    check.add_argument("--json", action="store_true", help="machine-readable output")

    rules = sub.add_parser("rules", help="test and lint rule files")
    rules_sub = rules.add_subparsers(dest="rules_command", metavar="SUBCOMMAND")
    rules_sub.required = True
    test = rules_sub.add_parser("test", help="run the tests: cases of rule files")
    add_config_option(test)
    test.add_argument("path", nargs="?", metavar="PATH", help=_PATH_HELP)
    test.add_argument("--json", action="store_true", help="machine-readable output")
    lint = rules_sub.add_parser("lint", help="validate rule files and warn about likely mistakes")
    add_config_option(lint)
    lint.add_argument("path", nargs="?", metavar="PATH", help=_PATH_HELP)
    lint.add_argument("--strict", action="store_true", help="exit 1 on warnings too")
    lint.add_argument("--json", action="store_true", help="machine-readable output")


def _store_options(p: argparse.ArgumentParser, add_config_option: Callable[[argparse.ArgumentParser], None],
                   verb: str) -> None:
    """What every command over a store takes: the configuration, `--store`, `--json`."""
    add_config_option(p)
    p.add_argument("--store", metavar="URL",
                   help=f"{verb} this store instead of the configuration's store: (sqlite:///PATH or postgresql://…)")
    p.add_argument("--json", action="store_true", help="machine-readable output")


def add_journal_commands(
    sub: argparse._SubParsersAction[argparse.ArgumentParser],
    add_config_option: Callable[[argparse.ArgumentParser], None],
) -> None:
    """Register `journal …` on the top-level subparsers."""
    journal = sub.add_parser("journal", help="the statement journal: sessions, replay, export, verify")
    jsub = journal.add_subparsers(dest="journal_command", metavar="SUBCOMMAND")
    jsub.required = True

    def common(p: argparse.ArgumentParser) -> None:
        _store_options(p, add_config_option, "read")

    sessions = jsub.add_parser("sessions", help="list recorded sessions, newest first")
    common(sessions)
    sessions.add_argument("--since", metavar="T", help="sessions started at or after T (ISO 8601)")
    sessions.add_argument("--until", metavar="T", help="sessions started before T (ISO 8601)")
    sessions.add_argument("--identity", metavar="NAME", help="only this identity's sessions")
    sessions.add_argument("--limit", type=int, default=50, metavar="N", help="at most N sessions (default 50)")

    show = jsub.add_parser("show", help="every event of one session")
    common(show)
    show.add_argument("session", metavar="SESSION", help="session id (or a unique prefix of it)")

    tail = jsub.add_parser("tail", help="the latest events; -f follows new ones")
    common(tail)
    tail.add_argument("-f", "--follow", action="store_true", help="keep printing events as they are recorded")
    tail.add_argument("-n", "--lines", type=int, default=20, metavar="N", help="how many past events (default 20)")
    tail.add_argument("--interval", type=float, default=0.5, metavar="SECONDS",
                      help="how often -f polls the store (default 0.5)")

    rep = jsub.add_parser("replay", help="replay a session line by line with its timing, decisions and outcomes")
    common(rep)
    rep.add_argument("session", metavar="SESSION", help="session id (or a unique prefix of it)")
    rep.add_argument("--speed", type=float, metavar="X",
                     help="play the recorded gaps X times faster (default 1; 0 = no waits; "
                          "with --execute: no waits unless given)")
    rep.add_argument("--step", action="store_true", help="wait for Enter before each statement")
    rep.add_argument("--max-wait", type=float, metavar="SECONDS", help="never wait longer than this between lines")
    rep.add_argument("--execute", metavar="DSN",
                     help="RUN the statements that were let through, for real, against the database at DSN "
                          "(postgresql://… or mysql://…: a staging copy, never production) and report where "
                          "their outcomes differ from the recorded ones; exit 1 if any differ")

    export = jsub.add_parser("export", help="export a range of the journal with its chain, for auditors")
    common(export)
    export.add_argument("--since", metavar="T", help="events at or after T (ISO 8601)")
    export.add_argument("--until", metavar="T", help="events before T (ISO 8601)")
    export.add_argument("--identity", metavar="NAME", help="only this identity's events (others stay as bare links)")
    export.add_argument("--decision", choices=_DECISIONS,
                        help="only statements with this decision and their outcomes (others stay as bare links)")
    export.add_argument("--format", choices=("jsonl", "csv"), default="jsonl", help="file format (default jsonl)")
    export.add_argument("-o", "--output", metavar="FILE", help="write to FILE (default: standard output)")

    verify = jsub.add_parser("verify", help="check the hash chain of the store, or of an exported FILE")
    common(verify)
    verify.add_argument("file", nargs="?", metavar="FILE", help="an exported file (default: the store)")

    prune = jsub.add_parser("prune", help="delete events before a time, keeping the rest verifiable")
    common(prune)
    prune.add_argument("--before", metavar="T", required=True, help="delete events recorded before T (ISO 8601)")


def add_approvals_commands(
    sub: argparse._SubParsersAction[argparse.ArgumentParser],
    add_config_option: Callable[[argparse.ArgumentParser], None],
) -> None:
    """Register `approvals …` on the top-level subparsers."""
    approvals = sub.add_parser("approvals", help="the approval queue: list, show, approve, deny, watch")
    asub = approvals.add_subparsers(dest="approvals_command", metavar="SUBCOMMAND")
    asub.required = True

    def common(p: argparse.ArgumentParser) -> None:
        _store_options(p, add_config_option, "use")

    lst = asub.add_parser("list", help="approval requests: pending ones (oldest first) unless --status/--all")
    common(lst)
    lst.add_argument("--status", action="append", choices=[s.value for s in ApprovalStatus],
                     help="only requests with this status (repeatable; default: pending)")
    lst.add_argument("--all", action="store_true", help="every status, newest first")
    lst.add_argument("--limit", type=int, default=100, metavar="N", help="at most N requests (default 100)")

    show = asub.add_parser("show", help="everything about one request: who, what SQL, rules, tables, rows")
    common(show)
    show.add_argument("id", metavar="ID", help="approval id (ap_…)")

    for verb, text in (("approve", "approve a pending request: its statement runs once"),
                       ("deny", "deny a pending request: its client gets an error")):
        p = asub.add_parser(verb, help=text)
        common(p)
        p.add_argument("id", metavar="ID", help="approval id (ap_…)")
        p.add_argument("--as", dest="as_identity", metavar="IDENTITY", required=True,
                       help=f"the dbguard identity deciding (its secret from ${SECRET_ENV_VAR} or a prompt)")
        p.add_argument("--reason", metavar="TEXT", required=verb == "deny",
                       help="why (required for deny; journaled and shown to the client)")

    watch = asub.add_parser("watch", help="a live view of pending requests; with --as, act on them from it")
    common(watch)
    watch.add_argument("--as", dest="as_identity", metavar="IDENTITY",
                       help="decide from the view as this identity (secret checked once, at start)")
    watch.add_argument("--interval", type=float, default=1.0, metavar="SECONDS",
                       help="redraw at least this often (default 1; changes show at once)")
    watch.add_argument("--once", action="store_true", help="print the pending requests once and exit")
