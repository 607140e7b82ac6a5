"""Benchmarks and load tests: ``python -m benchmarks`` (see benchmarks/README.md)."""
