"""Benchmark scripts; see BENCHMARKS.md."""
