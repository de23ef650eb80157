"""`iso extract minimal-iso` throughput against `cp` + `sha256sum` of the same bytes.

Rebuilding the minimal ISO must copy every shared byte out of the full ISO and hash
it; the baseline does the same I/O and hashing with coreutils (copy the pristine
minimal ISO, then sha256sum it), in the same run. Ratio = baseline / ours (higher is
better; goal >= 0.8). Peak RSS must stay small (streaming, 1 MiB chunks).
The pair is built once with xorriso + our `pack minimal-iso` and cached in
/var/tmp/nestos-bench-cache/miniso; BENCH_MINISO_MIB resizes the shared payload.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from bench.common import REPO, Sample, compare, limit

CACHE = Path(os.environ.get("NESTOS_BENCH_CACHE", "/var/tmp/nestos-bench-cache")) / "miniso"
MIB = 1 << 20
SHARED_MIB = int(os.environ.get("BENCH_MINISO_MIB", "192"))
RSS_LIMIT_MIB = 100


def _pair() -> tuple[Path, Path]:
    """(full, minimal) with a large incompressible shared initrd."""
    full, minimal = CACHE / f"full-{SHARED_MIB}.iso", CACHE / f"minimal-{SHARED_MIB}.iso"
    if full.exists() and minimal.exists():
        return full, minimal
    sys.path.insert(0, str(REPO))
    from tests.helpers.isomedia import LiveIsoSpec
    from tests.helpers.minisomedia import build_pair

    CACHE.mkdir(parents=True, exist_ok=True)
    payload = os.urandom(SHARED_MIB * MIB)
    spec = LiveIsoSpec(extra_files={"images/pxeboot/initrd.img": payload})
    with tempfile.TemporaryDirectory(dir=CACHE) as tmp:
        pair, built = build_pair(Path(tmp), spec)
        os.replace(built.path, minimal)
        os.replace(pair.full.path, full)
    return full, minimal


def _run(argv: Sequence[str | Path]) -> tuple[float, int]:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    timed = ["/usr/bin/time", "-f", "maxrss=%M", *(str(a) for a in argv)]
    start = time.perf_counter()
    proc = subprocess.run(timed, capture_output=True, env=env, check=False)
    elapsed = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"{argv} failed: {proc.stderr.decode(errors='replace')}")
    rss = int(proc.stderr.decode().rsplit("maxrss=", 1)[1].split()[0])
    return elapsed, rss


def main() -> int:
    full, minimal = _pair()
    out = CACHE / "out.iso"
    copy = CACHE / "copy.iso"

    def clean() -> None:
        out.unlink(missing_ok=True)
        copy.unlink(missing_ok=True)

    def ours() -> Sample:
        t, r = _run(
            [sys.executable, "-m", "nestos_inst", "iso", "extract", "minimal-iso", full, out]
        )
        return Sample(t, r)

    def base() -> Sample:
        t1, _ = _run(["cp", minimal, copy])
        t2, _ = _run(["sha256sum", copy])
        return Sample(t1 + t2)

    size = minimal.stat().st_size / MIB
    r = compare(
        "iso extract minimal-iso vs cp + sha256sum",
        ours,
        base,
        goal=0.8,
        setup=clean,
        note=f"minimal ISO {size:.0f} MiB, shared payload {SHARED_MIB} MiB",
    )
    clean()
    limit("iso extract minimal-iso peak RSS", r.ours_rss_mib, RSS_LIMIT_MIB, unit="MiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
