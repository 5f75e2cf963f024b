# bench.relay_only — `dbguard serve` with no analysis and no policy: the bare relay, for benchmarks.
# Owns: loading a dbguard configuration exactly as `dbguard serve` does (same validation, logging
# set-up and event loop, SIGTERM/SIGINT drain, SIGHUP reload) but running the listeners with the
# allow-all gate and no masks, so that a benchmark can tell the relay's cost from the policy's.
# Bench-only: it is not a product switch and must never be offered as a way to run dbguard.
"""Run a dbguard configuration's listeners (PostgreSQL and MySQL) with `model.AllowAllGate` (no
analysis, no rules).

Usage (from the repository root):  python -m bench.relay_only -c dbguard.yaml [--log-level warning]
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from collections.abc import Sequence

from dbguard.config import Config, ConfigError, load_config, resolve_config_path
from dbguard.model import AllowAllGate
from dbguard.policy.rules import Policy
from dbguard.runtime import logs
from dbguard.runtime.server import Server, check_supported, run_event_loop


async def relay(config: Config) -> None:
    """Every listener of the configuration, allow-all, until SIGTERM/SIGINT (then drain)."""
    # The bare relay journals nothing either: it is the baseline for the policy's cost.
    config = dataclasses.replace(config, journal=dataclasses.replace(config.journal, enabled=False))
    server = Server(config, gate=AllowAllGate())
    # The server keeps enforcing the rules on MySQL listeners when given a gate (a protocol
    # test's gate is PostgreSQL-only); the relay baseline wants no policy there either.
    server.mysql_gate = AllowAllGate()
    # Nor masking: the rules' masks would otherwise still rewrite (and scan) results.
    server.masks.replace_policy(Policy())
    await server.start()
    await server.run_until_stopped()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.relay_only",
        description="dbguard's listeners with no analysis and no policy (benchmark baseline only).",
    )
    parser.add_argument("-c", "--config", metavar="FILE", help="configuration file (as for dbguard serve)")
    parser.add_argument("--log-level", choices=["debug", "info", "warning", "error"],
                        help="override log.level from the configuration")
    parser.add_argument("--log-format", choices=["text", "json"],
                        help="override log.format from the configuration")
    args = parser.parse_args(argv)
    try:
        config = load_config(resolve_config_path(args.config))  # errors exit 2, as for serve
    except ConfigError as exc:
        print(f"relay_only: configuration error: {exc}", file=sys.stderr)
        return 2
    logs.configure(args.log_level or config.log.level.value, args.log_format or config.log.format.value)
    check_supported(config)
    try:
        run_event_loop(lambda: relay(config))
    except OSError as exc:
        print(f"relay_only: cannot start: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
