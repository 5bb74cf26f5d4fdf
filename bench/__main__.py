"""Run benchmarks and write their figures to ``bench/results/<name>.json``."""

from __future__ import annotations

import argparse
import importlib
import json
import pkgutil
import sys
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


def available() -> list[str]:
    here = Path(__file__).resolve().parent
    return sorted(m.name for m in pkgutil.iter_modules([str(here)]) if not m.name.startswith("_"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("names", nargs="*", help=f"benchmarks to run (default: all of {available()})")
    args = parser.parse_args(argv)
    names = args.names or available()
    unknown = sorted(set(names) - set(available()))
    if unknown:
        parser.error(f"unknown benchmark(s) {unknown}; available: {available()}")
    RESULTS.mkdir(exist_ok=True)
    for name in names:
        print(f"== {name}", flush=True)
        t0 = time.perf_counter()
        figures = importlib.import_module(f"bench.{name}").run()
        for key, value in figures.items():
            print(f"  {key:<32} {value}")
        out = RESULTS / f"{name}.json"
        out.write_text(json.dumps(figures, indent=2, sort_keys=True) + "\n")
        print(f"  -> {out.relative_to(Path.cwd()) if out.is_relative_to(Path.cwd()) else out} ({time.perf_counter() - t0:.1f}s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
