"""Benchmarks, compile-only inspection and result comparison."""
