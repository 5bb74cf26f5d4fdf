"""Adapters: the only code that touches the outside world, each behind a small Protocol."""
