# bench.compare — the one benchmark command: PostgreSQL (bench.pgbench_compare) and MySQL
# (bench.sysbench_compare) in one run.
# Owns: passing the shared options on to both, running them one after the other (never at the same
# time: they would measure each other), and merging their JSON documents. Each part keeps its own
# command, options, tables and goals.
"""Run the PostgreSQL and the MySQL benchmarks one after the other.

Run from the repository root:  python -m bench.compare [--quick] [--out FILE.json]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

from bench import pgbench_compare, sysbench_compare


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.compare",
        description=("pgbench through dbguard's PostgreSQL listener (bench.pgbench_compare), then sysbench "
                     "through its MySQL listener (bench.sysbench_compare); each against direct, the bare "
                     "relay and dbguard with the sample policy."),
    )
    parser.add_argument("--quick", action="store_true", help="both parts in their --quick form")
    parser.add_argument("--duration", type=int, help="seconds per run (both parts; default 5, quick 3)")
    parser.add_argument("--repeats", type=int, help="repeats of every run (both parts; default 3, quick 1)")
    parser.add_argument("--only", choices=["postgres", "mysql"], help="run one part only")
    parser.add_argument("--out", type=Path, metavar="FILE.json",
                        help='write {"postgres": ..., "mysql": ...}: each part\'s raw runs, as its own --out')
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    shared: list[str] = []
    if args.quick:
        shared.append("--quick")
    if args.duration:
        shared += ["--duration", str(args.duration)]
    if args.repeats:
        shared += ["--repeats", str(args.repeats)]
    parts = {"postgres": pgbench_compare.main, "mysql": sysbench_compare.main}
    status = 0
    documents: dict[str, object] = {}
    with tempfile.TemporaryDirectory(prefix="dbguard-bench-") as tmp:
        for name, run in parts.items():
            if args.only is not None and args.only != name:
                continue
            out = Path(tmp) / f"{name}.json"
            try:
                code = run([*shared, "--out", str(out)])
            except SystemExit as exc:  # a part that cannot run (no pgbench, no sysbench...)
                print(f"bench.compare: the {name} part did not run: {exc}", file=sys.stderr)
                code = 2
            status = max(status, code)
            if out.exists():
                documents[name] = json.loads(out.read_text(encoding="utf-8"))
    if args.out is not None:
        args.out.write_text(json.dumps(documents, indent=2) + "\n", encoding="utf-8")
        print(f"raw runs of both parts written to {args.out}")
    return status


if __name__ == "__main__":
    sys.exit(main())
