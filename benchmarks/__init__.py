"""Benchmarks: ``./dev bench`` (or ``python -m benchmarks.run``)."""
