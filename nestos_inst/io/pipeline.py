"""The write stage: copy a stream to a file descriptor, decoding and writing overlapped.

Decompression (in the reader) and os.pwrite both release the GIL, so a reader thread
and a writer joined by a small bounded queue overlap them; memory stays at about
`depth` chunks whatever the image size. A decoder that already decodes on threads of
its own (parallel xz) is read on the writing thread: a reader thread would only add a
hand-over per chunk.

On a block device the writer goes around the page cache (fast path `direct-io`,
`DirectWriter`): a buffered pwrite copies every byte into the device's page cache,
allocating a page for each 4 KiB, and that copy cost 0.9-1.0 s of CPU per 512 MiB on
the writing thread here (docs/internals-io.md, "Direct writes"). With O_DIRECT the
device reads our buffer itself: the decoded bytes are copied once, in user space, into
one reused page-aligned buffer, and written in large block-aligned writes.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import mmap
import os
import queue
import stat
import struct
import threading
from collections.abc import Callable, Iterator
from typing import BinaryIO

from nestos_inst import fastpaths
from nestos_inst.errors import NestosError
from nestos_inst.io.limit import WriteLimit
from nestos_inst.io.stream import DecodesAhead, DecodesInto, Stream, read_full

__all__ = [
    "ALIGN",
    "DIRECT_BUFFER",
    "AlignedWriter",
    "DirectWriter",
    "copy_to_fd",
    "direct_block",
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

    def close(self) -> None:
        """Nothing to release (DirectWriter's counterpart)."""


# Size of one direct write (and of the one buffer). Measured on loop devices: 1-8 MiB
# cost the same CPU; see docs/internals-io.md.
DIRECT_BUFFER = 4 << 20

# Buffers a decoder that fills them itself (DecodesInto) has: one being written, one
# being filled, one spare.
FILL_BUFFERS = 3

_BLKSSZGET = 0x1268  # logical block size of a block device (int)


def direct_block(fd: int, pos: int) -> int | None:
    """The logical block size to align direct writes to, or None when the buffered route
    is to be used: trick off, not a block device, or `pos` not aligned."""
    if not fastpaths.enabled("direct-io"):
        return None
    try:
        if not stat.S_ISBLK(os.fstat(fd).st_mode):
            return None
        raw = fcntl.ioctl(fd, _BLKSSZGET, struct.pack("i", 0))
    except OSError:
        return None
    block: int = struct.unpack("i", raw)[0]
    if block <= 0 or block & (block - 1) or block > mmap.PAGESIZE or pos % block:
        return None
    return block


class DirectWriter:
    """Collects pieces in a page-aligned buffer and writes it with O_DIRECT when full.

    Same contract as AlignedWriter: the bytes land at increasing offsets from `pos`,
    nothing is written past the last byte given (the end of an image that is not a
    whole block goes through the page cache, which reads the rest of that block first),
    `progress_cb(n)` follows each write, the caller owns the fd and the fsync (fsync on
    a block device also flushes the device's write cache, which covers direct writes).

    Coherency: the kernel writes back and drops cached pages that overlap a direct
    write, before and after it, so later buffered readers (the GPT re-read, blkid,
    mount) see the new bytes; `close()` also drops the written range from the cache in
    case a page could not be dropped then (mapped by someone else).

    Fallback, with the same bytes at the same offsets: a device that refuses O_DIRECT
    (EINVAL from fcntl), EINVAL from a direct write (a stacked driver that wants more
    alignment than it advertises) or a short direct write make the writer go on
    buffered.

    The fd gets O_DIRECT (fcntl) for the writer's lifetime; `close()` gives it back its
    flags, so the caller's later writes (the first MiB, /boot) are buffered as before.
    Not thread-safe: one writing thread; `flush()` after the last `add()`, `close()`
    always (also on errors)."""

    def __init__(
        self,
        fd: int,
        pos: int,
        progress_cb: Callable[[int], None] | None,
        *,
        block: int,
        size: int = DIRECT_BUFFER,
    ) -> None:
        assert size % mmap.PAGESIZE == 0 and pos % block == 0
        self._fd = fd
        self._start = pos
        self._pos = pos  # offset of the buffer's first byte in the target
        self._fill = 0
        self._block = block
        self._size = size
        self._progress = progress_cb
        self._flags = fcntl.fcntl(fd, fcntl.F_GETFL)
        self._map = mmap.mmap(-1, size)  # anonymous: page-aligned, reused for every write
        self._buf = memoryview(self._map)
        self._pool: mmap.mmap | None = None
        try:
            fcntl.fcntl(fd, fcntl.F_SETFL, self._flags | os.O_DIRECT)
            self._direct = True
        except OSError as exc:
            if exc.errno != errno.EINVAL:
                self._release()
                raise
            self._direct = False  # the device or driver does not do O_DIRECT

    @property
    def direct(self) -> bool:
        """Whether writes still go around the page cache (False after a fallback)."""
        return self._direct

    def _buffered(self) -> None:
        """Leave O_DIRECT: from here on the same bytes go through the page cache."""
        if self._direct:
            self._direct = False
            fcntl.fcntl(self._fd, fcntl.F_SETFL, self._flags)

    def _write(self, src: memoryview, n: int) -> None:
        """Write the first n bytes of `src` (page-aligned) at the current offset; n is a
        multiple of the block size while direct. A device error is reported here, with
        its offset (buffered, it would only surface at fsync, as `syncing data to
        disk`)."""
        done = 0
        try:
            if self._direct:
                try:
                    done = os.pwrite(self._fd, src[:n], self._pos)
                except OSError as exc:
                    if exc.errno != errno.EINVAL:
                        raise
                    done = 0  # a driver that wants more than it advertises: go buffered
                if done < n:  # refused or short (device end): the rest through the cache
                    self._buffered()
            if done < n:
                pwrite_all(self._fd, src[done:n], self._pos + done)
        except OSError as exc:
            raise NestosError(f"writing {n} bytes at {self._pos}") from exc
        self._pos += n
        if self._progress is not None:
            self._progress(n)

    def add(self, data: bytes | bytearray | memoryview) -> None:
        view = memoryview(data).cast("B")
        size = self._size
        while view:
            take = min(len(view), size - self._fill)
            self._buf[self._fill : self._fill + take] = view[:take]
            self._fill += take
            view = view[take:]
            if self._fill == size:
                self._write(self._buf, size)
                self._fill = 0

    def pool(self, count: int) -> list[memoryview]:
        """`count` more page-aligned buffers of the writer's size, for a producer that
        fills them itself (DecodesInto) and hands them to put(); freed by close()."""
        self._pool = mmap.mmap(-1, count * self._size)
        whole = memoryview(self._pool)
        return [whole[i * self._size : (i + 1) * self._size] for i in range(count)]

    def put(self, data: bytes | bytearray | memoryview) -> None:
        """Write a filled buffer from pool(), uncopied: `data` starts at the buffer's
        start. Only the last piece may end off a block boundary: its end waits for
        flush(), which sends it through the page cache."""
        view = memoryview(data).cast("B")
        if self._fill:  # not at a block boundary: keep the order, copy
            self.add(view)
            return
        whole = len(view) - len(view) % self._block
        if whole:
            self._write(view, whole)
        if whole < len(view):
            self.add(view[whole:])

    def flush(self) -> None:
        """Write what is buffered: the whole blocks directly, the rest (less than a
        block, the end of the image) through the page cache."""
        fill = self._fill
        if not fill:
            return
        whole = fill - fill % self._block
        if whole:
            self._write(self._buf, whole)
            self._buf[: fill - whole] = self._buf[whole:fill]
        if fill - whole:
            self._buffered()
            self._write(self._buf, fill - whole)
        self._fill = 0

    def _release(self) -> None:
        self._buf.release()
        self._map.close()
        if self._pool is not None:
            # A slice of a pool buffer still referenced somewhere (a traceback) keeps
            # the mapping exported; it is then unmapped when the last slice goes.
            with contextlib.suppress(BufferError):
                self._pool.close()
            self._pool = None

    def close(self) -> None:
        """Give the fd its flags back, drop the written range from the page cache (any
        page the kernel could not drop after a direct write) and free the buffer."""
        if self._map.closed:
            return
        try:
            self._buffered()
            if self._pos > self._start:
                os.posix_fadvise(
                    self._fd, self._start, self._pos - self._start, os.POSIX_FADV_DONTNEED
                )
        finally:
            self._release()


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
    them with os.pwrite in ALIGN-aligned runs (on a block device: DirectWriter's
    O_DIRECT writes, unless the fast path `direct-io` is off) and calls
    `progress_cb(n)` after each write. A reader that decodes ahead on threads of its
    own (DecodesAhead) is read on the calling thread instead: another thread would only
    add a hand-over per chunk.
    `limit` is an absolute offset in `fd`: bytes up to it are written, the first byte
    past it raises NestosError(limit_message). Errors from either side propagate
    unchanged (with their cause chain); on a write error the reader thread is stopped
    and joined.
    """
    guard = WriteLimit(limit, limit_message) if limit is not None else None
    block = direct_block(fd, offset)
    inline = isinstance(reader, DecodesAhead) and reader.decodes_ahead()
    fill = reader.readinto1 if isinstance(reader, DecodesInto) and not inline else None
    pos = offset  # end of the bytes taken from the reader (some may still wait in `out`)
    # read1 hands out whatever one decoder step produced, without assembling (copying)
    # full chunks; the writer does not care about chunk sizes.
    pull = reader.read1
    with contextlib.ExitStack() as stack:
        out: AlignedWriter | DirectWriter
        if block is None:
            out = AlignedWriter(fd, offset, progress_cb)
        else:
            out = DirectWriter(fd, offset, progress_cb, block=block)
        stack.callback(out.close)  # runs last: after the reader thread has stopped
        write = out.add
        pieces: Iterator[bytes | bytearray | memoryview]
        if inline:
            pieces = iter(lambda: pull(chunk), b"")
        elif fill is not None and isinstance(out, DirectWriter) and out.direct:
            # the decoder fills the direct writer's buffers itself: no copy at all
            pieces = stack.enter_context(_fill_ahead(fill, out.pool(FILL_BUFFERS)))
            write = out.put
        else:
            pieces = stack.enter_context(_read_ahead(pull, chunk, depth))
        for data in pieces:
            n = len(data)
            if guard is not None:
                allowed = guard.allowed(pos, n)
                if allowed < n:
                    write(memoryview(data)[:allowed])
                    out.flush()
                    raise guard.error()
            write(data)
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
        for item in _received(q):
            assert isinstance(item, bytes | bytearray | memoryview)
            yield item

    with _producer(produce, stop):
        yield pieces()


@contextlib.contextmanager
def _fill_ahead(
    readinto: Callable[[memoryview], int], buffers: list[memoryview]
) -> Iterator[Iterator[memoryview]]:
    """Pieces filled by `readinto` on a thread of its own, each a whole buffer of
    `buffers` (the last one may be shorter). A buffer goes back to the filling thread
    when the consumer asks for the next piece, i.e. once it has been written."""
    free: queue.Queue[memoryview] = queue.Queue()
    for buf in buffers:
        free.put(buf)
    full: queue.Queue[object] = queue.Queue()  # at most len(buffers) + 1 items
    stop = threading.Event()

    def produce() -> None:
        try:
            while not stop.is_set():
                try:
                    buf = free.get(timeout=_POLL)
                except queue.Empty:
                    continue
                n = 0
                while n < len(buf) and (got := readinto(buf[n:])):
                    n += got
                if n:
                    full.put((buf, n))
                if n < len(buf):
                    full.put(_EOF)
                    return
        except BaseException as exc:  # handed to the writer, re-raised there
            full.put(exc)

    def pieces() -> Iterator[memoryview]:
        for item in _received(full):
            assert isinstance(item, tuple)
            buf, n = item
            yield buf[:n]
            free.put(buf)

    with _producer(produce, stop):
        yield pieces()


def _received(q: queue.Queue[object]) -> Iterator[object]:
    """The producer's items up to its end marker; an exception it handed over is
    raised here, on the consuming (writing) thread."""
    while True:
        item = q.get()
        if item is _EOF:
            return
        if isinstance(item, BaseException):
            raise item
        yield item


@contextlib.contextmanager
def _producer(produce: Callable[[], None], stop: threading.Event) -> Iterator[None]:
    """Run `produce` on the `copy-reader` thread for the duration of the block; on
    leaving (normally or not) tell it to stop and wait for it."""
    thread = threading.Thread(target=produce, name="copy-reader", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()
