"""`python -m tests.fuzz [--count N] [--mem MiB] [TARGET...]` (what `make fuzz` runs)."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from tests.fuzz.runner import cap_memory, fuzz
from tests.fuzz.targets import TARGETS


def main() -> int:
    p = argparse.ArgumentParser(prog="python -m tests.fuzz", description=__doc__)
    p.add_argument("targets", nargs="*", metavar="TARGET", help=f"of {', '.join(TARGETS)}")
    p.add_argument("--count", type=int, default=10_000, help="inputs per target")
    p.add_argument("--mem", type=int, default=2048, help="address-space cap in MiB")
    p.add_argument("--seed", type=int, default=None, help="random seed (default: random)")
    p.add_argument(
        "--hypothesis-share", type=float, default=0.1, help="share of inputs from Hypothesis"
    )
    p.add_argument("--report", type=Path, help="append one JSON line per target here")
    args = p.parse_args()
    names = args.targets or list(TARGETS)
    unknown = [n for n in names if n not in TARGETS]
    if unknown:
        p.error(f"unknown target(s): {', '.join(unknown)}")
    # Seeds are built before the cap (xorriso and friends run as child processes).
    for name in names:
        TARGETS[name].strategy()
    cap_memory(args.mem << 20)
    failed = False
    for name in names:
        result = fuzz(
            TARGETS[name], args.count, rng_seed=args.seed, hypothesis_share=args.hypothesis_share
        )
        rate = result.tried / result.seconds if result.seconds else 0.0
        line = (
            f"{name:9} {result.tried:8} inputs ({result.hypothesis} hypothesis)  "
            f"{result.seconds:8.1f} s  {rate:7.0f}/s  "
            f"{len(result.findings)} finding(s)"
        )
        print(line, flush=True)
        for key, (data, tb) in result.findings.items():
            failed = True
            print(f"  {key}: input {data[:80]!r}{'...' if len(data) > 80 else ''}")
            print("    " + tb.strip().replace("\n", "\n    "))
        if args.report:
            with open(args.report, "a") as f:
                entry = {
                    "target": name,
                    "inputs": result.tried,
                    "hypothesis": result.hypothesis,
                    "seconds": round(result.seconds, 1),
                    "findings": sorted(result.findings),
                    "mem_mib": args.mem,
                    "load": os.getloadavg()[0],
                }
                f.write(json.dumps(entry) + "\n")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
