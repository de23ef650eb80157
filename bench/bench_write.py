"""The io layer alone (no CLI start-up, no partition checks): decompress + copy_to_fd into
a loop device, against `<decoder> -dc IMG | dd of=LOOP bs=1M conv=fsync`, and for zstd
against `dd` of the decoded image (bench/images.zstd_against_device). This is the
figure to profile when an install ratio drops
(`py-spy record -- python bench/bench_write.py --child DEV < IMG`).

Also checks that peak RSS does not grow with the image: ours on an image this many
times larger must stay within 10% of the 1 GiB figure and under 100 MiB.

Environment: NESTOS_BENCH_SIZE_MIB (default 1024), NESTOS_BENCH_FORMATS (default
xz-T2,zst: the two decoders with their own threads), NESTOS_BENCH_RSS_GIB (default 4;
0 disables), NESTOS_BENCH_RUNS (pairs, default 5). Needs root.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from bench.common import MIB, Sample, compare, limit, python_env, run_pipeline
from bench.images import (
    FORMATS,
    GOALS,
    cold,
    compressed,
    decode_into,
    loop_device,
    zstd_against_device,
)

RSS_LIMIT_MIB = 100


def ours(path: Path, dev: str) -> Sample:
    child = [sys.executable, str(Path(__file__).resolve()), "--child", dev]
    return run_pipeline([child], stdin=path, env=python_env())


def child(dev: str) -> int:
    """What `install` does for the copy: sniff, decompress, two-thread write, fsync."""
    from nestos_inst.io.compress import open_decompressed
    from nestos_inst.io.heap import configure
    from nestos_inst.io.pipeline import copy_to_fd

    configure()  # as the entry point does
    src = os.fdopen(sys.stdin.fileno(), "rb", buffering=0, closefd=False)
    fd = os.open(dev, os.O_WRONLY | os.O_CLOEXEC)
    try:
        copy_to_fd(open_decompressed(src), fd, offset=0)
        os.fsync(fd)
    finally:
        os.close(fd)
    return 0


def main() -> int:
    if os.geteuid() != 0:
        print("bench_write needs root (losetup); skipped")
        return 0
    size_mib = int(os.environ.get("NESTOS_BENCH_SIZE_MIB", "1024"))
    rss_gib = int(os.environ.get("NESTOS_BENCH_RSS_GIB", "4"))
    wanted = os.environ.get("NESTOS_BENCH_FORMATS", "xz-T2,zst").split(",")
    inputs = {fmt: compressed(fmt, size_mib) for fmt in wanted}
    print(f"io layer: decompress + write a {size_mib} MiB image to a loop device")
    with loop_device(max(size_mib, rss_gib * 1024) * MIB + MIB) as dev:
        decode_into(wanted[0], inputs[wanted[0]], dev)  # allocate the loop file's blocks
        for fmt, path in inputs.items():
            r = compare(
                f"io write {fmt} vs {FORMATS[fmt][2][0]} -dc | dd",
                lambda p=path: ours(p, dev),  # type: ignore[misc]
                lambda f=fmt, p=path: decode_into(f, p, dev),  # type: ignore[misc]
                goal=GOALS[fmt],
                setup=lambda: cold(dev),
            )
            if fmt == "zst":
                zstd_against_device("io write", ours, path, size_mib)
            if rss_gib and rss_gib * 1024 != size_mib:
                big = compressed(fmt, rss_gib * 1024)
                big_rss = ours(big, dev).rss_kib / 1024
                limit(
                    f"io write {fmt} peak RSS ({rss_gib} GiB image)",
                    big_rss,
                    min(RSS_LIMIT_MIB, r.ours_rss_mib * 1.10),
                    unit="MiB",
                    note=f"{size_mib} MiB image: {r.ours_rss_mib:.0f} MiB; must not grow >10%",
                )
    return 0


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--child":
        sys.exit(child(sys.argv[2]))
    sys.exit(main())
