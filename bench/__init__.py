# bench — benchmarks of the proxy's hot path (relay, parse, decide, mask) against real servers.
# A package so that ruff and mypy (which list bench/ in pyproject.toml) have something to read.
