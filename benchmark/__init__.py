"""Benchmark harness: run specs, the single-run loop, evaluation, matrices, CLI."""
