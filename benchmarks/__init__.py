"""Benchmarks: one command, every figure as a ratio taken in the same run (see docs/speed.md)."""
