"""The policy commands of the command line: `dbguard check`, `dbguard rules test`, `dbguard rules lint`.

Owns: finding the rules (`--rules`, else the configuration's `rules:`, else the built-in
defaults, said out loud), who a statement is decided for (`--identity` from the configuration,
else an anonymous agent without roles), rendering results with rich or as JSON, and these
commands' exit statuses (0 ok, 1 refused / failed / lint errors, 2 usage or configuration).
Everything it shows comes from `dbguard.policy` and `dbguard.sql`; it decides nothing itself.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from rich.console import Console
from rich.padding import Padding
from rich.table import Table
from rich.text import Text

from dbguard.config import CONFIG_ENV_VAR, Config, ConfigError, load_config, resolve_config_path
from dbguard.model import Action, Decision, Identity, IdentityKind, StatementInfo
from dbguard.policy.engine import StatementTrace, evaluate, explain, format_details
from dbguard.policy.lint import Finding, KnownNames, lint_path
from dbguard.policy.rule_tests import ANONYMOUS, CaseResult, case_session, parse_settings, run_tests, unexercised_rules
from dbguard.policy.rules import BUILTIN_POLICY, Dialect, Policy, load_policy

EXIT_OK: Final = 0
EXIT_FAILED: Final = 1
EXIT_USAGE: Final = 2

# Offline commands read the configuration for identities, listeners and the rules path, never
# for secrets: an unset ${VAR} becomes this instead of an error.
_UNSET_ENV: Final = "unset-in-offline-command"

_out = Console(highlight=False, soft_wrap=True)
_err = Console(stderr=True, highlight=False, soft_wrap=True)

_ACTION_STYLE: Final = {Action.ALLOW: "bold green", Action.HOLD: "bold yellow", Action.BLOCK: "bold red"}


class UsageError(Exception):
    """Bad arguments: printed on stderr, exit status 2."""


# ---------------------------------------------------------------------------------------------
# Shared: configuration, rules, identity


def _load_config(config_arg: str | None) -> Config | None:
    """The configuration if one is named (-c, $DBGUARD_CONFIG) or ./dbguard.yaml exists."""
    path = resolve_config_path(config_arg)
    if config_arg is None and not os.environ.get(CONFIG_ENV_VAR) and not path.exists():
        return None
    return load_config(path, unset_env=_UNSET_ENV)


@dataclass(frozen=True)
class _Rules:
    policy: Policy
    description: str


def _rules_for(path_arg: str | None, config: Config | None, *, builtin_ok: bool) -> _Rules:
    if path_arg is not None:
        path = Path(path_arg).expanduser()
        if not path.exists():
            raise UsageError(f"dbguard: {path}: rule file or folder not found")
        return _Rules(load_policy(path), str(path))
    if config is not None and config.rules_path is not None:
        return _Rules(load_policy(config.rules_path), f"{_shown(config.rules_path)} (rules: of {config.path})")
    if builtin_ok:
        why = "no rules: in the configuration" if config is not None else "no configuration and no --rules"
        return _Rules(BUILTIN_POLICY, f"built-in defaults ({why}): allow, block what cannot be analysed")
    raise UsageError("dbguard: no rules to use: give PATH, or a configuration with rules: (-c FILE)")


def _identities(config: Config | None) -> dict[str, Identity] | None:
    if config is None:
        return None
    return {i.name: Identity(i.name, IdentityKind(i.kind.value), tuple(i.roles)) for i in config.identities}


def _only_listener(config: Config | None) -> tuple[str, str]:
    """(listener name, database) when the configuration has exactly one listener."""
    if config is not None and len(config.listeners) == 1:
        lst = config.listeners[0]
        return lst.name, lst.upstream.database or ""
    return "", ""


def _default_dialect(config: Config | None) -> Dialect:
    protocols = {lst.protocol.value for lst in config.listeners} if config is not None else set()
    return Dialect(protocols.pop()) if len(protocols) == 1 else Dialect.POSTGRES


def _print_config_error(exc: ConfigError) -> None:
    _err.print(f"dbguard: configuration error: {exc}", markup=False, style="bold red")


# ---------------------------------------------------------------------------------------------
# dbguard check


def run_check(args: argparse.Namespace) -> int:
    try:
        config = _load_config(args.config)
        rules = _rules_for(args.rules, config, builtin_ok=True)
        identity, identity_note = _check_identity(args, config)
    except UsageError as exc:
        _err.print(str(exc), markup=False, style="bold red")
        return EXIT_USAGE
    dialect = Dialect(args.dialect) if args.dialect else _default_dialect(config)
    listener, database = _only_listener(config)
    listener = args.listener if args.listener is not None else listener
    database = args.database if args.database is not None else database
    session = case_session(identity, dialect, listener, database)
    settings = parse_settings(dialect, database or None)

    from dbguard.sql import analyse

    texts = [sys.stdin.read() if sql == "-" else sql for sql in args.sql]
    results = []
    for text in texts:
        try:
            statements = analyse(text, settings)
        except ImportError:
            _err.print(f"dbguard: the {dialect} analyser is not available in this build", style="bold red")
            return EXIT_USAGE
        decision = evaluate(rules.policy, statements, session)
        traces = explain(rules.policy, statements, session) if args.explain else ()
        results.append((text, statements, decision, traces))

    refused = any(d.action is not Action.ALLOW and d.enforced for _, _, d, _ in results)
    if args.json:
        payload = {
            "rules": rules.description,
            "identity": _identity_json(identity),
            "identity_note": identity_note,
            "dialect": dialect.value,
            "listener": listener,
            "database": database,
            "results": [
                _check_json(text, statements, decision, traces, args.explain)
                for text, statements, decision, traces in results
            ],
        }
        _write_json(payload)
        return EXIT_FAILED if refused else EXIT_OK

    _out.print(Text.assemble(("rules     ", "dim"), rules.description))
    _out.print(Text.assemble(("identity  ", "dim"), identity_note))
    _out.print(Text.assemble(("dialect   ", "dim"), dialect.value,
                             (f"   listener {listener or '(none)'}   database {database or '(none)'}", "dim")))
    for number, (text, statements, decision, traces) in enumerate(results, 1):
        _out.print()
        _render_check(number, text, statements, decision, traces, args.explain)
    return EXIT_FAILED if refused else EXIT_OK


def _check_identity(args: argparse.Namespace, config: Config | None) -> tuple[Identity, str]:
    kind = IdentityKind(args.kind) if args.kind else None
    roles = tuple(dict.fromkeys(args.role)) if args.role else None
    if args.identity is None:
        identity = Identity(ANONYMOUS.name, kind or ANONYMOUS.kind, roles or ())
        note = f"anonymous {identity.kind} with {_roles_words(identity.roles)} (no --identity)"
        return identity, note
    known = (_identities(config) or {}).get(args.identity)
    if known is None:
        if kind is None:
            names = ", ".join(sorted(_identities(config) or {})) or "none"
            where = f"in {config.path}" if config is not None else "(no configuration)"
            raise UsageError(f"dbguard: unknown identity {args.identity!r} {where}; known: {names} "
                             "(or describe it with --kind and --role)")
        identity = Identity(args.identity, kind, roles or ())
        return identity, f"{identity.name} ({identity.kind}, {_roles_words(identity.roles)}) from the command line"
    identity = Identity(known.name, kind or known.kind, roles if roles is not None else known.roles)
    source = f"from {config.path}" if config is not None else ""
    override = " with command-line overrides" if kind or roles is not None else ""
    return identity, f"{identity.name} ({identity.kind}, {_roles_words(identity.roles)}) {source}{override}"


def _roles_words(roles: Sequence[str]) -> str:
    return f"roles {', '.join(roles)}" if roles else "no roles"


def _render_check(
    number: int,
    text: str,
    statements: tuple[StatementInfo, ...],
    decision: Decision,
    traces: tuple[StatementTrace, ...],
    with_explain: bool,
) -> None:
    _out.rule(f"SQL {number}", style="dim")
    _out.print(text.strip(), markup=False, style="cyan")
    verdict = Text(decision.action.value.upper(), style=_ACTION_STYLE[decision.action])
    if not decision.enforced:
        verdict = Text.assemble(("would ", "bold"), verdict, (" (observe-only: the statement runs)", "dim"))
    _out.print(Text.assemble(("decision  ", "dim"), verdict))
    if decision.rule_ids:
        _out.print(Text.assemble(("rules     ", "dim"), ", ".join(decision.rule_ids)))
    if decision.observed:
        _out.print(Text.assemble(("observed  ", "dim"), ", ".join(decision.observed)))
    if decision.reason:
        _out.print(Text.assemble(("message   ", "dim"), decision.reason))
    if decision.details:
        _out.print(Text.assemble(("detail    ", "dim"), format_details(decision.details)))
    if decision.hint:
        _out.print(Text.assemble(("hint      ", "dim"), decision.hint))
    if not statements:
        _out.print(Text("no statement (empty message)", style="dim"))
        return
    _out.print(Text(f"what the analyser saw ({len(statements)} statement{'s' if len(statements) > 1 else ''})",
                    style="bold"))
    for i, info in enumerate(statements, 1):
        grid = Table.grid(padding=(0, 2))
        grid.add_column(style="dim", no_wrap=True)
        grid.add_column(overflow="fold")
        if len(statements) > 1:
            grid.add_row("text", Text(info.text.strip(), style="cyan"))
        grid.add_row("command", info.command)
        for label, values in (
            ("kinds", info.kinds), ("reads", info.reads), ("writes", info.writes), ("functions", info.functions),
            ("features", info.features), ("unfiltered", info.unfiltered),
        ):
            grid.add_row(label, _join(values) or "-")
        grid.add_row("fingerprint", info.fingerprint or "-")
        if info.detail:
            grid.add_row("note", info.detail)
        if len(statements) > 1:
            _out.print(Text(f"  statement {i} of {len(statements)}", style="bold"))
        _out.print(Padding(grid, (0, 0, 0, 4 if len(statements) > 1 else 2), expand=False))
    if with_explain:
        _render_explain(traces, len(statements))


def _render_explain(traces: tuple[StatementTrace, ...], count: int) -> None:
    for trace in traces:
        title = f"rules for statement {trace.index + 1} of {count}"
        table = Table(title=title, title_justify="left")
        table.add_column("rule", overflow="fold")
        table.add_column("action")
        table.add_column("matched")
        table.add_column("why", overflow="fold")
        if count > 1:
            _out.print(Text.assemble((f"statement {trace.index + 1}: ", "dim"), (trace.info.text.strip(), "cyan")))
        for rt in trace.rules + trace.implicit:
            mark = Text("yes", style="bold") if rt.matched else Text("no", style="dim")
            action = rt.action.value + ("" if rt.enforce else " (observe)")
            table.add_row(rt.rule_id, Text(action, style=_ACTION_STYLE[rt.action] if rt.matched else ""), mark, rt.why)
        _out.print(table)


def _join(values: frozenset[str] | Sequence[str]) -> str:
    return ", ".join(sorted(values))


def _identity_json(identity: Identity) -> dict[str, Any]:
    return {"name": identity.name, "kind": identity.kind.value, "roles": list(identity.roles)}


def _statement_json(info: StatementInfo) -> dict[str, Any]:
    return {
        "text": info.text,
        "command": info.command,
        "kinds": sorted(info.kinds),
        "reads": sorted(info.reads),
        "writes": sorted(info.writes),
        "functions": sorted(info.functions),
        "features": sorted(info.features),
        "unfiltered": sorted(info.unfiltered),
        "fingerprint": info.fingerprint,
        "detail": info.detail,
    }


def _decision_json(decision: Decision) -> dict[str, Any]:
    return {
        "action": decision.action.value,
        "enforced": decision.enforced,
        "rule_ids": list(decision.rule_ids),
        "observed": list(decision.observed),
        "reason": decision.reason,
        "hint": decision.hint,
        "details": dict(decision.details),
        "detail_text": format_details(decision.details),
    }


def _check_json(
    text: str,
    statements: tuple[StatementInfo, ...],
    decision: Decision,
    traces: tuple[StatementTrace, ...],
    with_explain: bool,
) -> dict[str, Any]:
    out: dict[str, Any] = {"sql": text, **_decision_json(decision)}
    out["statements"] = [_statement_json(s) for s in statements]
    if with_explain:
        out["explain"] = [
            {
                "statement": t.index + 1,
                "rules": [
                    {"rule": r.rule_id, "action": r.action.value, "enforce": r.enforce, "matched": r.matched,
                     "why": r.why, "failed": r.failed}
                    for r in t.rules + t.implicit
                ],
            }
            for t in traces
        ]
    return out


def _write_json(payload: object) -> None:
    sys.stdout.write(json.dumps(payload, indent=2) + "\n")


# ---------------------------------------------------------------------------------------------
# dbguard rules test


def run_rules_test(args: argparse.Namespace) -> int:
    try:
        config = _load_config(args.config)
        rules = _rules_for(args.path, config, builtin_ok=False)
    except UsageError as exc:
        _err.print(str(exc), markup=False, style="bold red")
        return EXIT_USAGE
    listener, _ = _only_listener(config)
    results = run_tests(rules.policy, identities=_identities(config), listener=listener)
    unexercised = unexercised_rules(rules.policy, results)
    failed = [r for r in results if not r.passed]
    if args.json:
        _write_json({
            "rules": rules.description,
            "passed": len(results) - len(failed),
            "failed": len(failed),
            "cases": [_case_json(r) for r in results],
            "unexercised_rules": list(unexercised),
        })
        return EXIT_FAILED if failed else EXIT_OK

    _out.print(Text.assemble(("rules  ", "dim"), rules.description))
    if not results:
        _out.print("no tests: cases to run", style="yellow")
        return EXIT_OK
    table = Table(show_lines=False)
    table.add_column("case", no_wrap=True)
    for column in ("sql", "identity", "expect", "got", "rules", "result"):
        table.add_column(column, overflow="fold")
    for r in results:
        got = Text(r.got.value if r.got else "-", style=_ACTION_STYLE[r.got] if r.got else "")
        if r.got and not r.enforced:
            got.append(" (observe)", style="dim")
        who = f"{r.identity.name} ({r.identity.kind})" if r.identity else "-"
        verdict = Text("pass", style="green") if r.passed else Text("FAIL", style="bold red")
        table.add_row(_case_where(r), _short(r.case.sql), who, r.expected.value, got, ", ".join(r.matched), verdict)
    _out.print(table)
    for r in results:
        for problem in r.problems:
            _out.print(f"{_case_where(r)}: FAIL: {problem}", markup=False, style="red")
        for note in r.notes:
            _out.print(f"{_case_where(r)}: note: {note}", markup=False, style="dim")
    for rule_id in unexercised:
        rule = rules.policy.rule(rule_id)
        where = f"{_shown(rule.location.path)}:{rule.location.line}: " if rule is not None and rule.location else ""
        _out.print(f"{where}warning: rule {rule_id} is not exercised by any test case", markup=False, style="yellow")
    summary = f"{len(results) - len(failed)} passed, {len(failed)} failed"
    _out.print(summary, style="bold red" if failed else "bold green")
    return EXIT_FAILED if failed else EXIT_OK


def _shown(path: Path) -> str:
    """A path as people read it: relative to the working directory when it is below it."""
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def _case_where(r: CaseResult) -> str:
    loc = r.case.location
    return f"{_shown(loc.path)}:{loc.line}" if loc is not None else r.location


def _short(sql: str, limit: int = 60) -> str:
    flat = " ".join(sql.split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def _case_json(r: CaseResult) -> dict[str, Any]:
    return {
        "location": r.location,
        "sql": r.case.sql,
        "identity": _identity_json(r.identity) if r.identity else None,
        "dialect": r.case.dialect.value,
        "expected": r.expected.value,
        "got": r.got.value if r.got else None,
        "enforced": r.enforced,
        "rules": list(r.matched),
        "passed": r.passed,
        "problems": list(r.problems),
        "notes": list(r.notes),
    }


# ---------------------------------------------------------------------------------------------
# dbguard rules lint


def run_rules_lint(args: argparse.Namespace) -> int:
    try:
        config = _load_config(args.config)
        if args.path is not None:
            path = Path(args.path).expanduser()
            if not path.exists():
                raise UsageError(f"dbguard: {path}: rule file or folder not found")
        elif config is not None and config.rules_path is not None:
            path = config.rules_path
        else:
            raise UsageError("dbguard: no rules to lint: give PATH, or a configuration with rules: (-c FILE)")
    except UsageError as exc:
        _err.print(str(exc), markup=False, style="bold red")
        return EXIT_USAGE
    known = None
    if config is not None:
        known = KnownNames(
            identities=frozenset(i.name for i in config.identities),
            roles=frozenset(r for i in config.identities for r in i.roles),
            listeners=frozenset(lst.name for lst in config.listeners),
        )
    report = lint_path(path, known)
    failed = bool(report.errors) or (args.strict and bool(report.warnings))
    if args.json:
        _write_json({
            "path": str(path),
            "ok": not failed,
            "rules": len(report.policy.rules) if report.policy else 0,
            "errors": [_finding_json(f) for f in report.errors],
            "warnings": [_finding_json(f) for f in report.warnings],
        })
        return EXIT_FAILED if failed else EXIT_OK
    for finding in report.findings:
        style = "bold red" if finding.severity.value == "error" else "yellow"
        _out.print(f"{finding.severity.value}: {finding}", markup=False, style=style)
    if report.policy is not None:
        p = report.policy
        _out.print(f"{path}: {len(p.files)} file(s), {len(p.rules)} rules, {len(p.masks)} masks, "
                   f"{len(p.tests)} tests; {len(report.warnings)} warning(s)", markup=False,
                   style="bold red" if failed else "green")
    return EXIT_FAILED if failed else EXIT_OK


def _finding_json(finding: Finding) -> dict[str, Any]:
    return {"file": str(finding.path), "line": finding.line, "key": finding.key, "message": finding.message,
            "text": str(finding)}
