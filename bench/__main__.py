"""`make bench [BENCH=name]`: run every bench/bench_*.py (or one) and print ratios."""

from __future__ import annotations

import importlib
import os
import pkgutil
import sys

import bench


def main() -> int:
    wanted = os.environ.get("BENCH")
    names = sorted(
        m.name for m in pkgutil.iter_modules(bench.__path__) if m.name.startswith("bench_")
    )
    if wanted:
        names = [n for n in names if wanted in n]
    rc = 0
    for name in names:
        print(f"== {name}", flush=True)
        module = importlib.import_module(f"bench.{name}")
        rc |= int(module.main() or 0)
    return rc


if __name__ == "__main__":
    sys.exit(main())
