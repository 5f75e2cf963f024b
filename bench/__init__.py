"""Benchmarks of the proxy against real servers; see bench/README.md."""
