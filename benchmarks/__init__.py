"""Benchmarks, separate from the tests.

Run all with ``./dev bench``, or one with ``./dev bench NAME``.

Each ``bench_*.py`` module has ``main() -> None`` that prints its figures as ratios against a
baseline measured in the same run.
"""
