"""Which concurrency model drives the install copy stage: the one we ship, or asyncio?

docs/internals-net.md ("The concurrency model") settles on one model: the byte
pipeline runs on the caller's thread with one reader thread (io/pipeline.copy_to_fd),
next to the network's event-loop thread, the gpg-verify thread and the decoders' own
threads. The alternative a reader of the design card expects is one asyncio
orchestration with the blocking work as executor jobs. This benchmark measures both on
the real stage, so the choice rests on figures:

  source (file, or nginx over plain HTTP) -> open_verified (GPG tap, progress)
  -> open_decompressed -> first MiB held back -> copy to a loop device with the
  target's size as the write limit -> finish() (signature settled) -> first MiB
  written -> fsync

(a) `threads`: copy_to_fd, as install/writer.py calls it;
(b) `asyncio`: copy_async() below, a prototype built only from public parts of
    nestos_inst.io: an event loop, decode (read1) and write (AlignedWriter) as
    run_in_executor jobs on a two-thread pool, a bounded asyncio.Queue of the same
    depth, a TaskGroup that cancels the other side when one fails.

Each run is a fresh process (as an install is). The ratio is asyncio seconds / threads
seconds (bench/common.py: higher is better for ours): goal >= 1.0, i.e. we keep our
model only if it is not slower. Before timing, one run of each driver is compared byte
for byte with the raw image, so both measure the same work.

The figures and the conclusion drawn from them: docs/internals-net.md, "Why not one
asyncio orchestration: measured".

Environment: NESTOS_BENCH_CONC_MIB (image size, default 512), NESTOS_BENCH_CONC_CASES
(default file:xz,file:xz-T2,file:zst,url:xz-T2; formats of bench/images.py),
NESTOS_BENCH_RUNS (pairs, default 5). Needs root (losetup).
"""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from bench.common import MIB, Sample, compare, python_env, run_pipeline
from bench.images import loop_device, raw_image
from bench.nginx import nginx
from bench.signing import publish, signing_workdir
from nestos_inst.io.limit import WriteLimit
from nestos_inst.io.pipeline import AlignedWriter
from nestos_inst.io.stream import DecodesAhead, Stream

GOAL = 1.0
DEFAULT_CASES = "file:xz,file:xz-T2,file:zst,url:xz-T2"


async def copy_async(
    reader: Stream,
    fd: int,
    *,
    offset: int,
    limit: int | None = None,
    limit_message: str = "",
    progress_cb: Callable[[int], None] | None = None,
    chunk: int = 1 << 20,
    depth: int = 4,
) -> int:
    """copy_to_fd's contract, orchestrated by the running event loop.

    The loop thread only moves pieces: decoding (reader.read1) and writing
    (AlignedWriter.add) run as executor jobs, so they overlap as in copy_to_fd. A
    reader that decodes ahead on its own threads (DecodesAhead) is read and written by
    one job per piece, as copy_to_fd reads it on the writing thread. On an error either
    task's failure cancels the other; a job already running in the pool finishes (a C
    call cannot be interrupted) and the pool is joined before returning.
    """
    loop = asyncio.get_running_loop()
    guard = WriteLimit(limit, limit_message) if limit is not None else None
    pieces: asyncio.Queue[bytes] = asyncio.Queue(maxsize=max(1, depth))
    out = AlignedWriter(fd, offset, progress_cb)

    def last(data: memoryview) -> None:
        out.add(data)
        out.flush()

    if isinstance(reader, DecodesAhead) and reader.decodes_ahead():
        return await _copy_inline(reader, out, offset=offset, guard=guard, chunk=chunk)

    with ThreadPoolExecutor(max_workers=2, thread_name_prefix="copy") as pool:

        async def produce() -> None:
            while True:
                data = await loop.run_in_executor(pool, reader.read1, chunk)
                await pieces.put(data)
                if not data:
                    return

        async def consume() -> int:
            pos = offset
            while data := await pieces.get():
                n = len(data)
                if guard is not None:
                    allowed = guard.allowed(pos, n)
                    if allowed < n:
                        await loop.run_in_executor(pool, last, memoryview(data)[:allowed])
                        raise guard.error()
                await loop.run_in_executor(pool, out.add, data)
                pos += n
            await loop.run_in_executor(pool, out.flush)
            return pos - offset

        try:
            async with asyncio.TaskGroup() as tasks:
                tasks.create_task(produce())
                written = tasks.create_task(consume())
        except BaseExceptionGroup as group:  # copy_to_fd raises the error itself
            raise group.exceptions[0] from group.exceptions[0].__cause__
    return written.result()


async def _copy_inline(
    reader: Stream, out: AlignedWriter, *, offset: int, guard: WriteLimit | None, chunk: int
) -> int:
    """copy_async for a reader that decodes ahead: read1 + write as one executor job."""
    loop = asyncio.get_running_loop()

    def step(pos: int) -> int:
        data = reader.read1(chunk)
        n = len(data)
        if guard is not None and guard.allowed(pos, n) < n:
            out.add(memoryview(data)[: guard.allowed(pos, n)])
            out.flush()
            raise guard.error()
        out.add(data)
        return n

    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="copy") as pool:
        pos = offset
        while n := await loop.run_in_executor(pool, step, pos):
            pos += n
        await loop.run_in_executor(pool, out.flush)
    return pos - offset


def child(mode: str, src: str, dev: str, keyring: str) -> int:
    """One install copy stage, driven by `mode` (threads | asyncio)."""
    from nestos_inst.io.heap import configure

    configure()  # as the entry point does, before any thread starts
    from nestos_inst.io.compress import open_decompressed
    from nestos_inst.io.pipeline import copy_to_fd, pwrite_all, read_exact
    from nestos_inst.net.http import stop_network
    from nestos_inst.progress import Progress
    from nestos_inst.sources import FileSource, ImageSource, UrlSource, open_verified

    source: ImageSource = UrlSource(src) if src.startswith("http://") else FileSource(src)
    fd = os.open(dev, os.O_RDWR | os.O_CLOEXEC)
    try:
        size = os.lseek(fd, 0, os.SEEK_END)
        progress = Progress(source.artifact_type, None)
        with open_verified(
            source, insecure=False, keyrings=[Path(keyring)], progress=progress
        ) as reader:
            decoded = open_decompressed(reader)
            first = read_exact(decoded, MIB)
            message = "image is larger than the target"
            if mode == "threads":
                copy_to_fd(decoded, fd, offset=MIB, limit=size, limit_message=message)
            else:
                coro = copy_async(decoded, fd, offset=MIB, limit=size, limit_message=message)
                asyncio.run(coro)
            reader.finish()
            pwrite_all(fd, first, 0)
        os.fsync(fd)
    finally:
        os.close(fd)
        stop_network()
    return 0


def run(mode: str, src: str, dev: str, keyring: Path) -> Sample:
    argv = [sys.executable, str(Path(__file__).resolve()), "--child", mode, src, dev]
    return run_pipeline([[*argv, str(keyring)]], env=python_env())


def same_bytes(dev: str, raw: Path) -> bool:
    """The device starts with exactly the raw image (a loop device may be larger)."""
    size = raw.stat().st_size
    with open(dev, "rb") as d, open(raw, "rb") as r:
        left = size
        while left:
            n = min(left, 8 * MIB)
            if d.read(n) != r.read(n):
                return False
            left -= n
    return True


def main() -> int:
    if os.geteuid() != 0:
        print("bench_concurrency needs root (losetup); skipped")
        return 0
    size_mib = int(os.environ.get("NESTOS_BENCH_CONC_MIB", "512"))
    wanted = os.environ.get("NESTOS_BENCH_CONC_CASES", DEFAULT_CASES)
    cases = [c.split(":", 1) for c in wanted.split(",")]
    with signing_workdir("bench-concurrency-") as (work, key):
        pub = key.public
        served = work / "served"
        served.mkdir()
        names = {fmt: publish(fmt, size_mib, served, key) for _where, fmt in cases}
        raw = raw_image(size_mib)
        with nginx(served, work) as server, loop_device(size_mib * MIB + MIB) as dev:
            print(f"install copy stage, {size_mib} MiB image to a loop device, gpg on")
            first = True
            for where, fmt in cases:
                src = server.url(names[fmt]) if where == "url" else str(served / names[fmt])
                if first:  # allocates the loop file's blocks, and checks both drivers
                    for mode in ("threads", "asyncio"):
                        run(mode, src, dev, pub)
                        if not same_bytes(dev, raw):
                            raise RuntimeError(f"{mode} driver wrote other bytes than the image")
                    first = False
                compare(
                    f"concurrency {where} {fmt}: threads (copy_to_fd) vs asyncio+executor",
                    lambda s=src: run("threads", s, dev, pub),  # type: ignore[misc]
                    lambda s=src: run("asyncio", s, dev, pub),  # type: ignore[misc]
                    goal=GOAL,
                    note="ratio = asyncio s / threads s",
                )
    return 0


if __name__ == "__main__":
    if len(sys.argv) == 6 and sys.argv[1] == "--child":
        sys.exit(child(*sys.argv[2:]))
    sys.exit(main())
