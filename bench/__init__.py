"""Benchmark suite: the gateway against direct access and nginx, on loopback only.

Run with ``.venv/bin/python -m bench.run`` (see docs/benchmarks.md). Nothing here asserts on
timings: it measures and reports.
"""
