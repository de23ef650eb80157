"""ISO editing speed: in-place edits touch only the areas; `-o PATH` copies like cp.

Inputs are cached in /var/tmp/nestos-bench-cache: a small NestOS-layout live ISO grown
to 1 GiB and 4 GiB with holes (sparse), and a 512 MiB dense variant for throughput.
Baselines run side by side in the same run: `cp` of the same file, and the 1 GiB time
against the 4 GiB time (flat = only the areas are read and written).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from bench.common import MIN_RUNS, REPO, Sample, compare, info, limit

CACHE = Path(os.environ.get("NESTOS_BENCH_CACHE", "/var/tmp/nestos-bench-cache")) / "iso"
GIB = 1 << 30
MIB = 1 << 20
CONFIG = b'{"ignition": {"version": "3.0.0"}}\n'
DENSE_SIZE = 512 * MIB
EDIT_LIMIT = 0.2  # seconds for an in-place edit, whatever the ISO's size


def _base_iso() -> Path:
    sys.path.insert(0, str(REPO))
    from tests.helpers.isomedia import LiveIsoSpec, build_live_iso

    base = CACHE / "base.iso"
    if not base.exists():
        CACHE.mkdir(parents=True, exist_ok=True)
        build_live_iso(base, LiveIsoSpec(ignition_size=256 * 1024))
    return base


def _sparse(base: Path, size: int) -> Path:
    path = CACHE / f"sparse-{size // GIB}g.iso"
    if not path.exists():
        shutil.copyfile(base, path)
        os.truncate(path, size)
    return path


def _dense(base: Path) -> Path:
    path = CACHE / "dense.iso"
    if not path.exists() or path.stat().st_size != DENSE_SIZE:
        block = os.urandom(MIB)
        with open(path, "wb") as f:
            f.write(base.read_bytes())
            while f.tell() < DENSE_SIZE:
                f.write(block[: DENSE_SIZE - f.tell()])
    return path


def _run(argv: Sequence[str | Path], stdin: bytes = b"") -> tuple[float, int]:
    """Wall time and peak RSS (KiB, measured by GNU time so fork images don't count)."""
    env = dict(os.environ, PYTHONPATH=str(REPO))
    timed = ["/usr/bin/time", "-f", "maxrss=%M", *(str(a) for a in argv)]
    start = time.perf_counter()
    proc = subprocess.run(timed, input=stdin, capture_output=True, env=env, check=False)
    elapsed = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"{argv} failed: {proc.stderr.decode(errors='replace')}")
    rss = int(proc.stderr.decode().rsplit("maxrss=", 1)[1].split()[0])
    return elapsed, rss


def _cli(*args: str | Path, stdin: bytes = b"") -> tuple[float, int]:
    return _run([sys.executable, "-m", "nestos_inst", *args], stdin)


def _inproc_edit(path: Path) -> tuple[float, float, int, int]:
    """Library-level in-place embed and kargs edit: times and bytes read/written."""
    sys.path.insert(0, str(REPO))
    from nestos_inst.formats import isoedit
    from nestos_inst.formats.embed import IsoConfig

    def io_counters() -> tuple[int, int]:
        fields = dict(line.split(": ") for line in Path("/proc/self/io").read_text().splitlines())
        return int(fields["rchar"]), int(fields["wchar"])

    r0, w0 = io_counters()
    t0 = time.perf_counter()
    fd = os.open(path, os.O_RDWR)
    try:
        iso = IsoConfig(fd)
        members = iso.members()
        members["config.ign"] = CONFIG
        iso.set_members(members)
        isoedit.write_in_place(fd, iso.modified_regions(), str(path))
    finally:
        os.close(fd)
    t1 = time.perf_counter()
    fd = os.open(path, os.O_RDWR)
    try:
        iso = IsoConfig(fd)
        areas = iso.require_kargs()
        areas.set(areas.current + " bench")
        isoedit.write_in_place(fd, iso.modified_regions(), str(path))
    finally:
        os.close(fd)
    t2 = time.perf_counter()
    r1, w1 = io_counters()
    return t1 - t0, t2 - t1, r1 - r0, w1 - w0


OUT = CACHE / "out.iso"


def main() -> int:
    base = _base_iso()
    print(f"cache: {CACHE}")
    starts = sorted(_cli("--version")[0] for _ in range(MIN_RUNS))
    info("python + CLI start-up", starts[len(starts) // 2], unit="s")
    for size in (GIB, 4 * GIB):
        path = _sparse(base, size)
        lib_ign, lib_kargs, rbytes, wbytes = _inproc_edit(path)
        info(
            f"library in-place embed + kargs edit ({size // GIB} GiB ISO)",
            lib_ign + lib_kargs,
            unit="s",
            note=f"read {rbytes // 1024} KiB, wrote {wbytes // 1024} KiB",
        )
        for label, argv, stdin in (
            ("iso ignition embed", ("iso", "ignition", "embed", "-f", path), CONFIG),
            ("iso kargs modify", ("iso", "kargs", "modify", "-a", "x", path), b""),
        ):
            samples = sorted(_cli(*argv, stdin=stdin) for _ in range(MIN_RUNS))
            secs, _ = samples[len(samples) // 2]
            limit(
                f"{label} in place ({size // GIB} GiB ISO)",
                secs,
                EDIT_LIMIT,
                unit="s",
                note=f"median of {MIN_RUNS}; peak RSS {max(r for _, r in samples) // 1024} MiB",
            )
        _cli("iso", "reset", path)

    for label, src in (
        ("dense 512 MiB", _dense(base)),
        ("sparse 4 GiB", _sparse(base, 4 * GIB)),
    ):

        def ours(s: Path = src) -> Sample:
            t, r = _cli("iso", "kargs", "modify", "-a", "x", "-o", OUT, s)
            return Sample(t, r)

        def cp(s: Path = src) -> Sample:
            t, r = _run(["cp", s, OUT])
            return Sample(t, r)

        def library(s: Path = src) -> float:
            from nestos_inst.formats import isoedit

            start = time.perf_counter()
            fd = os.open(s, os.O_RDONLY)
            try:
                isoedit.write_copy(fd, [(40000, b"x")], str(OUT), ".nestos-installer-temp-")
            finally:
                os.close(fd)
            return time.perf_counter() - start

        def clean() -> None:
            OUT.unlink(missing_ok=True)

        compare(f"iso -o copy+patch, library ({label}) vs cp", library, cp, goal=0.9, setup=clean)
        compare(f"iso kargs modify -o, CLI ({label}) vs cp", ours, cp, goal=None, setup=clean)
        OUT.unlink(missing_ok=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
