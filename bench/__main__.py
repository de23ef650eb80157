"""`make bench [BENCH=name]`: run every bench/bench_*.py (or those whose name contains
BENCH), print each ratio as it is measured, then a summary, and write
build/bench-report.json (see bench/common.py).

Exit status: 1 if a benchmark crashed; unmet goals only fail the run with
NESTOS_BENCH_STRICT=1, because timings on a shared machine swing with its load.
"""

from __future__ import annotations

import importlib
import os
import pkgutil
import sys
import time
import traceback

import bench
from bench.common import REPORT, RESULTS, load, write_report


def _summary() -> None:
    print(f"\n== summary ({len(RESULTS)} results, load {load():.1f})")
    for r in RESULTS:
        if r.met is None:
            continue
        if r.kind == "limit":
            figure = f"{r.ours:.1f} {r.unit} <= {r.goal:.1f}"
        else:
            spread = f"{r.ratio_min:.2f}-{r.ratio_max:.2f}" if r.ratio_min is not None else ""
            figure = f"{r.ratio:.2f} ({spread}) >= {r.goal:.2f}"
        print(f"{'ok  ' if r.met else 'MISS'} {r.name}: {figure}")


def main() -> int:
    wanted = os.environ.get("BENCH")
    names = sorted(
        m.name for m in pkgutil.iter_modules(bench.__path__) if m.name.startswith("bench_")
    )
    if wanted:
        names = [n for n in names if wanted in n]
        if not names:
            print(f"no benchmark matches BENCH={wanted}", file=sys.stderr)
            return 2
    crashed = []
    for name in names:
        start = time.monotonic()
        print(f"== {name} (load {load():.1f})", flush=True)
        try:
            module = importlib.import_module(f"bench.{name}")
            module.main()
        except Exception:
            traceback.print_exc()
            crashed.append(name)
        print(f"   {name} took {time.monotonic() - start:.0f} s", flush=True)
        write_report(RESULTS)  # after each module: an interrupted run keeps what it has
    _summary()
    print(f"report: {REPORT}")
    if crashed:
        print(f"crashed: {', '.join(crashed)}", file=sys.stderr)
        return 1
    missed = [r.name for r in RESULTS if r.met is False]
    return 1 if missed and os.environ.get("NESTOS_BENCH_STRICT") == "1" else 0


if __name__ == "__main__":
    sys.exit(main())
