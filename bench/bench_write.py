"""Image write throughput: our decompress + copy_to_fd pipeline against
`<decompressor> -dc IMG | dd of=LOOP bs=1M conv=fsync`, same run, same loop device.

Inputs are built once and cached in /var/tmp/nestos-bench-cache by recipe: a raw image
that is mostly an ext4 filesystem (populated from /usr/share with `mkfs.ext4 -d`), plus
a random and a zero region; compressed with fast presets. Needs root (losetup).

Environment: NESTOS_BENCH_SIZE_MIB (default 1024), NESTOS_BENCH_REPS (default 2, best
of), NESTOS_BENCH_RSS_GIB (default 4: also run ours on an image this big and compare
peak RSS; 0 disables) for NESTOS_BENCH_RSS_FORMATS (default xz-T2,zst: the parallel
decoder and the frame walker), NESTOS_BENCH_FORMATS (default all: xz,xz-T2,gz,zst).
"""

from __future__ import annotations

import hashlib
import os
import resource
import subprocess
import sys
import time
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from bench.common import peak_rss_kib

MIB = 1 << 20
CACHE = Path(os.environ.get("NESTOS_BENCH_CACHE", "/var/tmp/nestos-bench-cache"))
RECIPE_VERSION = "v1"

# format name -> (compress argv, suffix, baseline decompress argv)
FORMATS: dict[str, tuple[list[str], str, list[str]]] = {
    "xz": (["xz", "-1", "-T1", "-c"], "xz", ["xz", "-dc", "-T1"]),
    "xz-T2": (["xz", "-1", "-T2", "-c"], "xz", ["xz", "-dc", "-T1"]),
    "gz": (["gzip", "-1", "-c"], "gz", ["gzip", "-dc"]),
    "zst": (["zstd", "-q", "-3", "-T2", "-c"], "zst", ["zstd", "-q", "-dc"]),
}
# issue 4 goals: ours / baseline
GOALS = {"xz": 1.0, "xz-T2": 1.6, "gz": 1.2, "zst": 1.0}


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


@contextmanager
def loop_device(size: int) -> Iterator[str]:
    backing = CACHE / f"io-write-target-{os.getpid()}.img"
    with open(backing, "wb") as f:
        f.truncate(size)
    dev = subprocess.run(
        ["losetup", "-f", "--show", str(backing)], check=True, capture_output=True, text=True
    ).stdout.strip()
    try:
        yield dev
    finally:
        subprocess.run(["losetup", "-d", dev], check=False)
        backing.unlink(missing_ok=True)


def timed(argv_list: list[list[str]], stdin_path: str) -> tuple[float, int, float]:
    """Run a pipeline of argv lists: wall seconds, peak RSS (KiB, largest member) and CPU
    seconds of all members."""
    start = time.monotonic()
    procs: list[subprocess.Popen[bytes]] = []
    with open(stdin_path, "rb") as first_in:
        prev: int | object = first_in
        for i, argv in enumerate(argv_list):
            last = i == len(argv_list) - 1
            proc = subprocess.Popen(
                argv,
                stdin=prev,  # type: ignore[arg-type]
                stdout=subprocess.DEVNULL if last else subprocess.PIPE,
                stderr=subprocess.DEVNULL,
            )
            if procs and procs[-1].stdout is not None:
                procs[-1].stdout.close()
            prev = proc.stdout if proc.stdout is not None else subprocess.DEVNULL
            procs.append(proc)
        peak: dict[int, int] = {}
        cpu = 0.0
        running = list(procs)
        while running:
            for proc in list(running):
                hwm = peak_rss_kib(proc.pid)
                peak[proc.pid] = max(peak.get(proc.pid, 0), hwm)
                pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
                if pid == 0:
                    continue
                running.remove(proc)
                cpu += usage.ru_utime + usage.ru_stime
                proc.returncode = os.waitstatus_to_exitcode(status)
                if proc.returncode != 0:
                    raise RuntimeError(f"{proc.args!r} failed with {proc.returncode}")
            time.sleep(0.05)
    return time.monotonic() - start, max(peak.values()), cpu


def ours(path: Path, dev: str) -> tuple[float, int, float]:
    return timed([[sys.executable, str(Path(__file__).resolve()), "--child", dev]], str(path))


def baseline(fmt: str, path: Path, dev: str) -> tuple[float, int, float]:
    dd = ["dd", f"of={dev}", "bs=1M", "conv=fsync", "status=none", "iflag=fullblock"]
    return timed([FORMATS[fmt][2], dd], str(path))


def child(dev: str) -> int:
    """What `install` does for the copy: sniff, decompress, two-thread write, fsync."""
    from nestos_inst.io.compress import open_decompressed
    from nestos_inst.io.pipeline import copy_to_fd

    src = os.fdopen(sys.stdin.fileno(), "rb", buffering=0, closefd=False)
    fd = os.open(dev, os.O_WRONLY | os.O_CLOEXEC)
    try:
        copy_to_fd(open_decompressed(src), fd, offset=0)
        os.fsync(fd)
    finally:
        os.close(fd)
    return 0


def _load() -> str:
    return f"{os.getloadavg()[0]:.1f}"


def main() -> int:
    if os.geteuid() != 0:
        print("bench_write needs root (losetup); skipped")
        return 0
    size_mib = int(os.environ.get("NESTOS_BENCH_SIZE_MIB", "1024"))
    reps = int(os.environ.get("NESTOS_BENCH_REPS", "2"))
    rss_gib = int(os.environ.get("NESTOS_BENCH_RSS_GIB", "4"))
    wanted = os.environ.get("NESTOS_BENCH_FORMATS", ",".join(FORMATS)).split(",")
    rss_formats = os.environ.get("NESTOS_BENCH_RSS_FORMATS", "xz-T2,zst").split(",")
    inputs = {fmt: compressed(fmt, size_mib) for fmt in wanted}
    nbytes = size_mib * MIB
    failed = False
    print(f"image {size_mib} MiB, best of {reps}; MB/s of decompressed data; load {_load()}")
    print(
        f"{'format':7} {'baseline':>9} {'ours':>9} {'ratio':>6} {'goal':>5}  "
        "peak RSS ours/base MiB, CPU s ours/base"
    )
    with loop_device(max(size_mib, rss_gib * 1024) * MIB + MIB) as dev:
        for fmt, path in inputs.items():
            base_t, ours_t, base_rss, ours_rss, base_cpu, ours_cpu = 1e9, 1e9, 0, 0, 0.0, 0.0
            for _ in range(reps):
                t, r, c = baseline(fmt, path, dev)
                if t < base_t:
                    base_t, base_cpu = t, c
                base_rss = max(base_rss, r)
                t, r, c = ours(path, dev)
                if t < ours_t:
                    ours_t, ours_cpu = t, c
                ours_rss = max(ours_rss, r)
            ratio = base_t / ours_t
            ok = ratio >= GOALS[fmt]
            failed |= not ok
            print(
                f"{fmt:7} {nbytes / base_t / 1e6:9.1f} {nbytes / ours_t / 1e6:9.1f} "
                f"{ratio:6.2f} {GOALS[fmt]:5.1f}  {ours_rss / 1024:.0f}/{base_rss / 1024:.0f}, "
                f"{ours_cpu:.1f}/{base_cpu:.1f}{'' if ok else '  BELOW GOAL'}  (load {_load()})",
                flush=True,
            )
            if rss_gib and rss_gib * 1024 != size_mib and fmt in rss_formats:
                big = compressed(fmt, rss_gib * 1024)
                t, big_rss, _ = ours(big, dev)
                growth = big_rss / max(ours_rss, 1)
                rss_ok = big_rss <= 100 * 1024 and growth <= 1.10
                failed |= not rss_ok
                print(
                    f"        {rss_gib} GiB: {rss_gib * 1024 * MIB / t / 1e6:.1f} MB/s, peak RSS "
                    f"{big_rss / 1024:.0f} MiB vs {ours_rss / 1024:.0f} MiB "
                    f"({growth:.2f}x){'' if rss_ok else '  RSS GOAL MISSED'}",
                    flush=True,
                )
    print(f"peak RSS of this process {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss} KiB")
    return 1 if failed else 0


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--child":
        sys.exit(child(sys.argv[2]))
    sys.exit(main())
