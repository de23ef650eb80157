"""The write stage: copy a stream to a file descriptor, decoding and writing overlapped.

Decompression (in the reader) and os.pwrite both release the GIL, so a reader thread
and a writer joined by a small bounded queue overlap them; memory stays at about
`depth` chunks whatever the image size. A decoder that already decodes on threads of
its own (parallel xz) is read on the writing thread: a reader thread would only add a
hand-over per chunk.
"""

from __future__ import annotations

import contextlib
import os
import queue
import threading
from collections.abc import Callable, Iterator
from typing import BinaryIO

from nestos_inst.errors import NestosError
from nestos_inst.io.limit import WriteLimit
from nestos_inst.io.stream import DecodesAhead, Stream, read_full

__all__ = [
    "ALIGN",
    "AlignedWriter",
    "copy_to_fd",
    "pwrite_all",
    "read_exact",
    "read_full",
    "write_all",
]

_EOF = object()
_POLL = 0.1


def read_exact(reader: BinaryIO | Stream, n: int) -> bytes:
    """n bytes from reader, fewer only at EOF (read() may return short counts)."""
    return read_full(reader.read, n)


def write_all(fd: int, data: bytes | bytearray | memoryview) -> None:
    """os.write until everything is written (pipes and signals may cut it short)."""
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        if n <= 0:
            raise NestosError("short write")
        view = view[n:]


def pwrite_all(fd: int, data: bytes | bytearray | memoryview, offset: int) -> None:
    """os.pwrite until everything is written (it may write less than asked)."""
    view = memoryview(data)
    while view:
        n = os.pwrite(fd, view, offset)
        if n <= 0:
            raise NestosError(f"short write at offset {offset}")
        view = view[n:]
        offset += n


# Writes start and end on multiples of this (absolute offsets in the target), except the
# very last. A write that covers a block partially makes the kernel read that block
# first (a synchronous read per write on a block device); decoders hand out pieces of
# any length, so their boundaries are smoothed out here.
ALIGN = 1 << 16


class AlignedWriter:
    """pwrite in runs that end on ALIGN boundaries; the unaligned tail of a piece waits
    (at most ALIGN bytes) and goes out with the next piece in one pwritev, uncopied.

    Public so that any driver of the copy writes the same runs: copy_to_fd, and the
    asyncio driver bench/bench_concurrency.py measures it against. Not thread-safe:
    one writer thread at a time; flush() after the last add()."""

    def __init__(self, fd: int, pos: int, progress_cb: Callable[[int], None] | None) -> None:
        self._fd = fd
        self._pos = pos
        self._tail = b""
        self._progress = progress_cb

    def _written(self, n: int) -> None:
        self._pos += n
        if self._progress is not None:
            self._progress(n)

    def add(self, data: bytes | bytearray | memoryview) -> None:
        view = memoryview(data).cast("B")
        total = len(self._tail) + len(view)
        cut = total - (self._pos + total) % ALIGN  # bytes that end on a boundary
        if cut <= 0:
            self._tail = self._tail + bytes(view)
            return
        if not self._tail:
            pwrite_all(self._fd, view[:cut], self._pos)
        else:
            head = view[: cut - len(self._tail)]
            n = os.pwritev(self._fd, [self._tail, head], self._pos)
            if n < cut:  # short write (rare): finish with plain writes
                rest = (self._tail + bytes(head))[n:]
                pwrite_all(self._fd, rest, self._pos + n)
        self._written(cut)
        self._tail = bytes(view[cut - total + len(view) :]) if cut < total else b""

    def flush(self) -> None:
        if self._tail:
            pwrite_all(self._fd, self._tail, self._pos)
            self._written(len(self._tail))
            self._tail = b""


def copy_to_fd(
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
    """Copy `reader` to `fd` starting at byte `offset`; return the bytes written.

    A reader thread fills a queue of at most `depth` chunks; the calling thread writes
    them with os.pwrite in ALIGN-aligned runs and calls `progress_cb(n)` after each
    write. A reader that decodes ahead on threads of its own (DecodesAhead) is read on
    the calling thread instead: another thread would only add a hand-over per chunk.
    `limit` is an absolute offset in `fd`: bytes up to it are written, the first byte
    past it raises NestosError(limit_message). Errors from either side propagate
    unchanged (with their cause chain); on a write error the reader thread is stopped
    and joined.
    """
    guard = WriteLimit(limit, limit_message) if limit is not None else None
    out = AlignedWriter(fd, offset, progress_cb)
    pos = offset  # end of the bytes taken from the reader (some may still wait in `out`)
    # read1 hands out whatever one decoder step produced, without assembling (copying)
    # full chunks; the writer does not care about chunk sizes.
    pull = reader.read1
    inline = isinstance(reader, DecodesAhead) and reader.decodes_ahead()
    with contextlib.ExitStack() as stack:
        if inline:
            pieces: Iterator[bytes | bytearray | memoryview] = iter(lambda: pull(chunk), b"")
        else:
            pieces = stack.enter_context(_read_ahead(pull, chunk, depth))
        for data in pieces:
            n = len(data)
            if guard is not None:
                allowed = guard.allowed(pos, n)
                if allowed < n:
                    out.add(memoryview(data)[:allowed])
                    out.flush()
                    raise guard.error()
            out.add(data)
            pos += n
        out.flush()
    return pos - offset


@contextlib.contextmanager
def _read_ahead(
    pull: Callable[[int], bytes], chunk: int, depth: int
) -> Iterator[Iterator[bytes | bytearray | memoryview]]:
    """The pieces of `pull`, read on a thread of their own up to `depth` pieces ahead
    (decompression and os.pwrite both release the GIL, so the two overlap)."""
    q: queue.Queue[object] = queue.Queue(maxsize=max(1, depth))
    stop = threading.Event()

    def put(item: object) -> bool:
        while not stop.is_set():
            try:
                q.put(item, timeout=_POLL)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            while not stop.is_set():
                data = pull(chunk)
                if not data:
                    put(_EOF)
                    return
                if not put(data):
                    return
        except BaseException as exc:  # handed to the writer, re-raised there
            put(exc)

    def pieces() -> Iterator[bytes | bytearray | memoryview]:
        while True:
            item = q.get()
            if item is _EOF:
                return
            if isinstance(item, BaseException):
                raise item
            assert isinstance(item, bytes | bytearray | memoryview)
            yield item

    thread = threading.Thread(target=produce, name="copy-reader", daemon=True)
    thread.start()
    try:
        yield pieces()
    finally:
        stop.set()
        thread.join()
