"""Helpers for tests and benchmarks that need real things (the tiny test guest)."""
