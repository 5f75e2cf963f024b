"""Command line front end (console script `dbguard`): argparse in, rich out, no logic.

Owns: parsing arguments, exit statuses (0 ok, 1 failed check, 2 bad usage or configuration),
and rendering. Everything it runs lives in runtime/, devdb/ and the feature packages; the policy
commands (`check`, `rules test|lint`) live in cli_policy.py, the journal's in cli_journal.py,
the approval queue's in cli_approvals.py, and their arguments in cli_args.py. Only the module of
the command given is imported (and rich only when something is printed): `dbguard serve` keeps
none of the other commands, nor rich, resident (docs/performance.md, "Memory").
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

from dbguard import __version__
from dbguard.cli_args import add_approvals_commands, add_journal_commands, add_policy_commands
from dbguard.config import ConfigError, load_config, resolve_config_path

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2


def _fail(message: str) -> None:
    """One unwrapped, unmarked-up line on stderr, so `file:line: key` stays greppable."""
    try:
        from rich.console import Console
    except ImportError:  # a broken install still says what went wrong
        print(message, file=sys.stderr)
        return
    Console(stderr=True, highlight=False, soft_wrap=True).print(message, markup=False, style="bold red")


def _add_config_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-c", "--config", metavar="FILE",
                        help="configuration file (default: $DBGUARD_CONFIG or ./dbguard.yaml)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dbguard",
        description="Governance proxy for PostgreSQL and MySQL/MariaDB.",
    )
    parser.add_argument("--version", action="version", version=f"dbguard {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    serve = sub.add_parser("serve", help="run every listener in the configuration")
    _add_config_option(serve)
    serve.add_argument("--log-level", choices=["debug", "info", "warning", "error"],
                       help="override log.level from the configuration")
    serve.add_argument("--log-format", choices=["text", "json"],
                       help="override log.format from the configuration")

    demo = sub.add_parser("demo", help="start a throwaway PostgreSQL with sample data behind dbguard")
    demo.add_argument("--port", type=int, default=15432, help="proxy port (default 15432; 0 = any free port)")
    demo.add_argument("--walkthrough", action="store_true",
                      help="play a scripted agent session through the proxy, then exit")
    demo.add_argument("--log-level", choices=["debug", "info", "warning", "error"], default="error",
                      help="the proxy's log on stderr (default: errors only, so the tour stays readable)")

    add_policy_commands(sub, _add_config_option)
    add_journal_commands(sub, _add_config_option)
    add_approvals_commands(sub, _add_config_option)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)  # a missing or unknown command exits 2 here
    commands: dict[str, Callable[[argparse.Namespace], int]] = {
        "serve": _serve, "demo": _demo, "check": _check, "rules": _rules, "journal": _journal,
        "approvals": _approvals}
    try:
        return commands[args.command](args)
    except ConfigError as exc:
        _fail(f"dbguard: configuration error: {exc}")
        return EXIT_USAGE
    except KeyboardInterrupt:
        return EXIT_OK


def _check(args: argparse.Namespace) -> int:
    from dbguard.cli_policy import run_check

    return run_check(args)


def _rules(args: argparse.Namespace) -> int:
    from dbguard.cli_policy import run_rules_lint, run_rules_test

    return run_rules_test(args) if args.rules_command == "test" else run_rules_lint(args)


def _journal(args: argparse.Namespace) -> int:
    from dbguard.cli_journal import run_journal

    return run_journal(args)


def _approvals(args: argparse.Namespace) -> int:
    from dbguard.cli_approvals import run_approvals

    return run_approvals(args)


def _demo(args: argparse.Namespace) -> int:
    from dbguard.demo import run_demo

    return run_demo(port=args.port, walkthrough=args.walkthrough, log_level=args.log_level)


def _serve(args: argparse.Namespace) -> int:
    from dbguard.runtime import logs
    from dbguard.runtime.server import check_supported, load_rules, run_event_loop, serve

    config = load_config(resolve_config_path(args.config))  # errors exit 2 before anything starts
    policy = load_rules(config)  # so do errors in the rules files
    logs.configure(args.log_level or config.log.level.value, args.log_format or config.log.format.value)
    check_supported(config)
    try:
        run_event_loop(lambda: serve(config, policy))
    except OSError as exc:
        _fail(f"dbguard: cannot start: {exc}")
        return EXIT_FAILED
    return EXIT_OK


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
