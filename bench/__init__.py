"""Benchmarks: ``python -m bench [NAME ...]``.

Each benchmark is a module ``bench/<name>.py`` with ``run() -> dict[str, float]``
that measures its figures and its baseline in the same process and returns one
flat mapping of named figures, the unit in each name (``cycle_10k_p99_ms``,
``speedup_vs_empyrical``). The runner prints them and writes
``bench/results/<name>.json``.
"""
