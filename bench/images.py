"""Benchmark media shared by bench_install and bench_write, built once and cached.

A raw image that is mostly an ext4 filesystem (populated from /usr/share with
`mkfs.ext4 -d`), plus a random and a zero region, compressed with fast presets; cached
in /var/tmp/nestos-bench-cache (outside the repository) by recipe, so only the first
`make bench` pays for building them.
"""

from __future__ import annotations

import hashlib
import itertools
import os
import subprocess
import sys
import time
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from bench.common import CACHE, Sample, compare, run_pipeline

MIB = 1 << 20
RECIPE_VERSION = "v1"

# format name -> (compress argv, suffix, baseline decompress argv)
FORMATS: dict[str, tuple[list[str], str, list[str]]] = {
    "xz": (["xz", "-1", "-T1", "-c"], "xz", ["xz", "-dc", "-T1"]),
    "xz-T2": (["xz", "-1", "-T2", "-c"], "xz", ["xz", "-dc", "-T1"]),
    "gz": (["gzip", "-1", "-c"], "gz", ["gzip", "-dc"]),
    "zst": (["zstd", "-q", "-3", "-T2", "-c"], "zst", ["zstd", "-q", "-dc"]),
}
# Speed goals against `<decoder> -dc | dd` (ours / baseline, higher is better). Multi-block
# xz decodes on both cores, so its bound is 2x the single-threaded decoder.
GOALS = {"xz": 1.0, "xz-T2": 1.85, "gz": 1.2, "zst": 1.0}
# zstd decodes about as fast as the disk writes: the bound is `dd` of the
# decoded image (zstd_against_device below).
ZSTD_VS_DD_GOAL = 0.9


def dd_argv(dev: str) -> list[str]:
    """`dd` writing its stdin to DEV as a careful user would: 1 MiB blocks, full
    blocks from a pipe, fsync at the end."""
    return ["dd", f"of={dev}", "bs=1M", "conv=fsync", "status=none", "iflag=fullblock"]


def decode_into(fmt: str, path: Path, dev: str) -> Sample:
    """The disk-writing benchmarks' baseline: `<decoder> -dc IMG | dd of=DEV bs=1M
    conv=fsync`, the format's stock decoder (FORMATS)."""
    return run_pipeline([FORMATS[fmt][2], dd_argv(dev)], stdin=path)


def dd_raw(raw: Path, dev: str) -> Sample:
    """`dd` of the decoded image: what the device alone allows."""
    return run_pipeline([dd_argv(dev)], stdin=raw)


def dd_raw_direct(raw: Path, dev: str) -> Sample:
    """`dd` of the decoded image around the page cache (4 MiB O_DIRECT writes): the
    fastest way `dd` has to fill the device, so the strictest form of the bound."""
    argv = ["dd", f"if={raw}", f"of={dev}", "bs=4M", "oflag=direct", "conv=fsync", "status=none"]
    return run_pipeline([argv])


def zstd_against_device(
    label: str, ours: Callable[[Path, str], Sample], path: Path, size_mib: int
) -> None:
    """Goal 3, "decompression hidden behind the disk": `ours` writing the zstd image
    `path` against `dd` of the decoded image, on a loop device with direct I/O.

    The device: a loop device whose backing file is written with O_DIRECT
    (`losetup --direct-io=on`, fully allocated). Over a sparse, buffered backing file,
    as the other benchmarks use, every write lands in this VM's page cache twice and
    `dd`'s time swung 3x from run to run (docs/internals-io.md, "Direct writes"); with
    direct I/O the device behaves like a disk and its rate holds still. Compared on it:
    `dd bs=1M conv=fsync` (the goal's baseline), `dd bs=4M oflag=direct` (the fastest
    `dd`), and, without a goal, `zstd -dc` to /dev/null (the decoder alone, no disk):
    a single zstd frame decodes on one core, so that is as fast as any writer of a
    zstd image can be, whatever the device.
    """
    raw = raw_image(size_mib)
    with loop_device(size_mib * MIB + MIB, direct_io=True) as dev:
        dio = Path(f"/sys/block/{os.path.basename(dev)}/loop/dio").read_text().strip()
        note = f"loop device with direct I/O (dio={dio})"
        for name, baseline in (
            (f"{label} zst vs dd of the decoded image", dd_raw),
            (f"{label} zst vs dd oflag=direct of the decoded image", dd_raw_direct),
        ):
            compare(
                name,
                lambda: ours(path, dev),
                lambda b=baseline: b(raw, dev),  # type: ignore[misc]
                goal=ZSTD_VS_DD_GOAL,
                setup=lambda: cold(dev),
                note=note,
            )
        compare(
            f"{label} zst vs zstd -dc to /dev/null (the decoder alone)",
            lambda: ours(path, dev),
            lambda: run_pipeline([FORMATS["zst"][2]], stdin=path, stdout="/dev/null"),
            goal=None,
            setup=lambda: cold(dev),
            note=f"{note}; the baseline writes nothing",
        )


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _key(recipe: str) -> str:
    return hashlib.sha256(f"{RECIPE_VERSION}:{recipe}".encode()).hexdigest()[:12]


def _cached(name: str, recipe: str, build: Callable[[Path], None]) -> Path:
    """Build `name` into the cache once per recipe (atomic rename when done)."""
    CACHE.mkdir(mode=0o700, parents=True, exist_ok=True)
    path = CACHE / f"{name}-{_key(recipe)}"
    if path.exists():
        return path
    tmp = path.with_name(path.name + ".part")
    tmp.unlink(missing_ok=True)
    log(f"building {path.name} ({recipe})")
    start = time.monotonic()
    build(tmp)
    tmp.rename(path)
    log(f"  built in {time.monotonic() - start:.0f} s")
    return path


def base_image() -> Path:
    """1 GiB: 1 MiB zeros, 900 MiB ext4 of /usr/share, 64 MiB random, zeros."""
    recipe = "raw 1024MiB: zeros 1MiB, ext4(-d /usr/share) 900MiB, urandom 64MiB, zeros"

    def build(out: Path) -> None:
        fs = out.with_name(out.name + ".ext4")
        try:
            subprocess.run(["truncate", "-s", f"{900 * MIB}", str(fs)], check=True)
            subprocess.run(
                ["mkfs.ext4", "-q", "-F", "-E", "root_owner=0:0", "-d", "/usr/share", str(fs)],
                check=True,
            )
            with open(out, "wb") as dst:
                dst.truncate(1024 * MIB)
                dst.seek(MIB)
                with open(fs, "rb") as src:
                    while block := src.read(8 * MIB):
                        dst.write(block)
                dst.seek(901 * MIB)
                dst.write(os.urandom(64 * MIB))
        finally:
            fs.unlink(missing_ok=True)

    return _cached("image-1g.raw", recipe, build)


def raw_image(size_mib: int) -> Path:
    """`size_mib` MiB made of copies of the base image (same content mix)."""
    base = base_image()
    if size_mib == 1024:
        return base

    def build(out: Path) -> None:
        with open(out, "wb") as dst:
            left = size_mib * MIB
            while left:
                with open(base, "rb") as src:
                    while left and (block := src.read(min(8 * MIB, left))):
                        dst.write(block)
                        left -= len(block)

    return _cached(f"image-{size_mib}m.raw", f"{size_mib}MiB of copies of {base.name}", build)


def _replicate_xz(src: Path, copies: int, out: Path) -> None:
    """k copies of a multi-block xz stream's blocks under one rewritten index.

    Blocks of `xz -T` are independent, so this is the stream `xz -T2` would write for
    the k-fold image (modulo block boundaries) in seconds instead of many minutes.
    """
    from nestos_inst.io import xzpar

    total = src.stat().st_size
    with open(src, "rb") as f:
        head = f.read(12)
        f.seek(total - 12)
        footer = f.read(12)
        index_size = (int.from_bytes(footer[4:8], "little") + 1) * 4
        f.seek(total - 12 - index_size)
        index = f.read(index_size)
    count, pos = xzpar.decode_vli(index, 1)
    records = []
    for _ in range(count):
        unpadded, pos = xzpar.decode_vli(index, pos)
        uncompressed, pos = xzpar.decode_vli(index, pos)
        records.append((unpadded, uncompressed))
    new = bytearray(b"\x00" + xzpar.encode_vli(count * copies))
    for _ in range(copies):
        for unpadded, uncompressed in records:
            new += xzpar.encode_vli(unpadded) + xzpar.encode_vli(uncompressed)
    new += bytes(-len(new) % 4)
    new += (zlib.crc32(bytes(new)) & 0xFFFFFFFF).to_bytes(4, "little")
    tail = (len(new) // 4 - 1).to_bytes(4, "little") + footer[8:10]
    with open(out, "wb") as dst:
        dst.write(head)
        for _ in range(copies):
            with open(src, "rb") as f:
                f.seek(12)
                left = total - 24 - index_size
                while left:
                    block = f.read(min(left, 8 * MIB))
                    dst.write(block)
                    left -= len(block)
        dst.write(bytes(new))
        dst.write((zlib.crc32(tail) & 0xFFFFFFFF).to_bytes(4, "little") + tail + b"YZ")


def compressed(fmt: str, size_mib: int) -> Path:
    argv, suffix, _ = FORMATS[fmt]
    if size_mib > 1024 and size_mib % 1024 == 0 and fmt in ("xz-T2", "zst"):
        one = compressed(fmt, 1024)
        copies = size_mib // 1024

        def replicate(out: Path) -> None:
            if fmt == "zst":  # consecutive frames are one zstd stream
                with open(out, "wb") as dst:
                    for _ in range(copies):
                        with open(one, "rb") as src:
                            while block := src.read(8 * MIB):
                                dst.write(block)
            else:
                _replicate_xz(one, copies, out)

        return _cached(f"{one.name}.x{copies}", f"{copies} copies of {one.name}", replicate)
    raw = raw_image(size_mib)

    def build(out: Path) -> None:
        with open(raw, "rb") as src, open(out, "wb") as dst:
            subprocess.run(argv, stdin=src, stdout=dst, check=True)

    return _cached(f"{raw.name}.{fmt}.{suffix}", f"{' '.join(argv)} < {raw.name}", build)


_TARGETS = itertools.count()  # several loop devices at once (bench_fleet)


def cold(*devs: str) -> None:
    """Write back and drop the devices' cached pages (BLKFLSBUF) before a timed run,
    untimed, so no run pays for the previous run's writeback.

    It does not make a buffered writer's cost steady: `dd` of 512 MiB measured
    0.4-0.6 s in some series and 1.2-2.2 s in others, after buffered and after direct
    writers alike (docs/internals-io.md, "Direct writes")."""
    for dev in devs:
        subprocess.run(["blockdev", "--flushbufs", dev], check=True, capture_output=True)


@contextmanager
def loop_device(size: int, *, direct_io: bool = False) -> Iterator[str]:
    """A loop device over a file of `size` bytes in the cache, detached after: sparse,
    or with `direct_io` fully allocated and read/written by the loop driver with
    O_DIRECT (a disk-like device whose speed does not depend on this VM's page cache;
    where the file system refuses, losetup warns and the device stays buffered)."""
    backing = CACHE / f"io-write-target-{os.getpid()}-{next(_TARGETS)}.img"
    with open(backing, "wb") as f:
        if direct_io:
            os.posix_fallocate(f.fileno(), 0, size)
        else:
            f.truncate(size)
    argv = ["losetup", "-f", "--show", *(["--direct-io=on"] if direct_io else []), str(backing)]
    dev = subprocess.run(argv, check=True, capture_output=True, text=True).stdout.strip()
    try:
        yield dev
    finally:
        subprocess.run(["losetup", "-d", dev], check=False)
        backing.unlink(missing_ok=True)
