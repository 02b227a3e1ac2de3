"""Benchmarks: `python -m bench.run [--quick]` (make bench). See docs/performance.md."""
