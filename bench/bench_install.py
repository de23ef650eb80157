"""Whole `install` throughput against the pipeline a user would type.

`nestos-installer install LOOP --image-file IMG --insecure` against
`<decoder> -dc IMG | dd of=LOOP bs=1M conv=fsync` on the same loop device, in
alternating pairs (bench/common.py). For zstd also against `dd` of the already-
decompressed image on a loop device with direct I/O: the rate of the device itself
(bench/images.zstd_against_device).
Inputs: bench/images.py (cached realistic images, fast presets). Needs root.

With NESTOS_BENCH_SIGNED=1 each format is also installed with a real GPG signature
(throw-away key) to show the cost of verification (informational).

Environment: NESTOS_BENCH_SIZE_MIB (default 1024), NESTOS_BENCH_FORMATS (default
xz,xz-T2,gz,zst), NESTOS_BENCH_RSS_GIB (default 0: also install an image this big and
check that peak RSS does not grow with it), NESTOS_BENCH_RUNS (pairs, default 5).
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
from bench.signing import publish, signing_workdir
from tests.helpers.gpgkey import SigningKey

RSS_LIMIT_MIB = 100


def ours(path: Path, dev: str, keyring: Path | None = None) -> Sample:
    argv = [sys.executable, "-m", "nestos_inst", "install", dev, "--image-file", str(path)]
    argv += ["--keyring", str(keyring)] if keyring else ["--insecure"]
    return run_pipeline([argv], env=python_env())


def main() -> int:
    if os.geteuid() != 0:
        print("bench_install needs root (losetup); skipped")
        return 0
    size_mib = int(os.environ.get("NESTOS_BENCH_SIZE_MIB", "1024"))
    rss_gib = int(os.environ.get("NESTOS_BENCH_RSS_GIB", "0"))
    wanted = os.environ.get("NESTOS_BENCH_FORMATS", ",".join(FORMATS)).split(",")
    inputs = {fmt: compressed(fmt, size_mib) for fmt in wanted}
    if os.environ.get("NESTOS_BENCH_SIGNED") != "1":
        _run(inputs, size_mib=size_mib, rss_gib=rss_gib, signed=None)
        return 0
    with signing_workdir("bench-install-") as signing:
        _run(inputs, size_mib=size_mib, rss_gib=rss_gib, signed=signing)
    return 0


def _run(
    inputs: dict[str, Path],
    *,
    size_mib: int,
    rss_gib: int,
    signed: tuple[Path, SigningKey] | None,
) -> None:
    """`signed`: a directory and key (bench/signing.py) for the informational signed
    installs; each input is published there, signed, just before its own."""
    print(f"install of a {size_mib} MiB image to a loop device")
    peak = 0.0
    with loop_device(max(size_mib, rss_gib * 1024) * MIB + MIB) as dev:
        decode_into(next(iter(inputs)), next(iter(inputs.values())), dev)  # allocate the loop file
        for fmt, path in inputs.items():
            r = compare(
                f"install {fmt} vs {FORMATS[fmt][2][0]} -dc | dd",
                lambda p=path: ours(p, dev),  # type: ignore[misc]
                lambda f=fmt, p=path: decode_into(f, p, dev),  # type: ignore[misc]
                goal=GOALS[fmt],
                setup=lambda: cold(dev),
            )
            peak = max(peak, r.ours_rss_mib)
            if fmt == "zst":
                zstd_against_device("install", ours, path, size_mib)
            if signed is not None:
                work, key = signed
                link = work / publish(fmt, size_mib, work, key)
                compare(
                    f"install {fmt} signed vs {FORMATS[fmt][2][0]} -dc | dd",
                    lambda s=link, k=key.public: ours(s, dev, k),  # type: ignore[misc]
                    lambda f=fmt, p=path: decode_into(f, p, dev),  # type: ignore[misc]
                    goal=None,
                    note="gpg verification on, baseline verifies nothing",
                    setup=lambda: cold(dev),
                )
        limit(f"install peak RSS ({size_mib} MiB image)", peak, RSS_LIMIT_MIB, unit="MiB")
        if rss_gib:
            fmt = "zst" if "zst" in inputs else next(iter(inputs))
            big = compressed(fmt, rss_gib * 1024)
            big_rss = ours(big, dev).rss_kib / 1024
            small_rss = ours(inputs[fmt], dev).rss_kib / 1024
            limit(
                f"install peak RSS ({rss_gib} GiB {fmt} image)",
                big_rss,
                min(RSS_LIMIT_MIB, small_rss * 1.10),
                unit="MiB",
                note=f"{size_mib} MiB image: {small_rss:.0f} MiB; must not grow >10%",
            )


if __name__ == "__main__":
    sys.exit(main())
