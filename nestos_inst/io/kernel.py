"""Linux zero-copy helpers: tee(2) and background writeback, through libc.

Python's os module has splice() but neither tee() nor sync_file_range(); both are
reached through ctypes. Every helper degrades to "not available" (None / no-op)
where libc lacks the symbol, so callers keep a plain read/write path.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import os
import select
from collections.abc import Sequence
from functools import cache
from typing import Any

from .pipeline import write_all

# sync_file_range(2): start writeback of dirty pages, do not wait for it.
SYNC_FILE_RANGE_WRITE = 2
# Start writeback once this much was written since the last kick: big enough to be
# cheap, small enough that the final fsync() only waits for the tail.
WRITEBACK_STEP = 16 << 20


@cache
def _libc() -> Any:
    try:
        # The process's own symbols include libc's; find_library() would run ldconfig.
        return ctypes.CDLL(None, use_errno=True)
    except OSError:
        return None


def _function(name: str, argtypes: list[type[Any]], restype: type[Any]) -> Any:
    """libc's `name` with its C prototype declared (ctypes' documented argtypes/restype
    on our own function object), or None where libc lacks it."""
    lib = _libc()
    fn = getattr(lib, name, None) if lib is not None else None
    if fn is not None:
        fn.argtypes = argtypes
        fn.restype = restype
    return fn


@cache
def _tee() -> Any:
    return _function(
        "tee", [ctypes.c_int, ctypes.c_int, ctypes.c_size_t, ctypes.c_uint], ctypes.c_ssize_t
    )


@cache
def _sync_file_range() -> Any:
    args = [ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint]
    return _function("sync_file_range", args, ctypes.c_int)


def zero_copy_available() -> bool:
    """True when both splice() and tee() can be used."""
    return hasattr(os, "splice") and _tee() is not None


def tee(fd_in: int, fd_out: int, count: int) -> int:
    """Duplicate up to `count` bytes from the head of pipe `fd_in` into pipe `fd_out`.

    Nothing is consumed from `fd_in`; blocks until `fd_out` has room for some data.
    Raises OSError (EPIPE when the reader of `fd_out` has gone).
    """
    fn = _tee()
    if fn is None:
        raise OSError(errno.ENOSYS, "tee() is not available")
    while True:
        n = int(fn(fd_in, fd_out, count, 0))
        if n >= 0:
            return n
        err = ctypes.get_errno()
        if err != errno.EINTR:
            raise OSError(err, os.strerror(err))


class Writeback:
    """Ask the kernel to write a growing file to disk while it is still being written.

    A download ends with fsync(); without this, every dirty page of a multi-GiB file
    is written out only then, which on slow disks is a long wait at the end.
    Kicking writeback every WRITEBACK_STEP bytes leaves fsync() just the tail. Only
    for files written sequentially from offset `start`; failures are ignored (fsync()
    still reports real I/O errors).
    """

    def __init__(self, fd: int, start: int = 0) -> None:
        self._fd = fd
        self._fn = _sync_file_range()
        self._flushed = start
        self._pos = start

    def advance(self, count: int) -> None:
        self._pos += count
        if self._fn is not None and self._pos - self._flushed >= WRITEBACK_STEP:
            self._fn(self._fd, self._flushed, self._pos - self._flushed, SYNC_FILE_RANGE_WRITE)
            self._flushed = self._pos


PIPE_SIZE = 1 << 20
_NO_SPLICE = frozenset({errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP})


class Fanout:
    """Pipes that copy what enters `inlet` to every tap (tee) and then into `sink`.

    One pipe stage per tap: a stage tees its content to its tap, then splices the
    same byte count on (to the next stage or the sink), so every tap sees exactly
    the sink's bytes in order even when a tap takes less than offered. A tap whose
    reader has gone (EPIPE) is dropped, like an early-exiting verifier; so is a
    non-blocking tap that takes nothing for `stall` seconds (its reader is stuck:
    it will then see a short input and fail). Errors writing `sink` raise OSError.
    """

    def __init__(self, taps: Sequence[int], sink: int, *, stall: float = 30.0) -> None:
        self._stall_ms = int(stall * 1000)
        self._taps: list[int | None] = list(taps) or [None]
        self._sink = sink
        self._sink_splice = True
        self._pipes: list[tuple[int, int]] = []
        try:
            for _ in self._taps:
                r, w = os.pipe()
                self._pipes.append((r, w))
                with contextlib.suppress(OSError):
                    fcntl.fcntl(w, fcntl.F_SETPIPE_SZ, PIPE_SIZE)
            self.size = fcntl.fcntl(self._pipes[0][1], fcntl.F_GETPIPE_SZ)
        except BaseException:
            self.close()
            raise
        self.inlet = self._pipes[0][1]

    def push(self, count: int) -> None:
        """Send on the `count` bytes just put into the inlet."""
        for i, (r, _) in enumerate(self._pipes):
            dest = self._pipes[i + 1][1] if i + 1 < len(self._pipes) else self._sink
            left = count
            while left:
                step = left
                tap = self._taps[i]
                if tap is not None:
                    try:
                        step = tee(r, tap, left)
                    except BlockingIOError:
                        poller = select.poll()
                        poller.register(tap, select.POLLOUT)
                        if not poller.poll(self._stall_ms):
                            self._taps[i] = None
                        continue
                    except BrokenPipeError:
                        self._taps[i] = None
                        continue
                done = 0
                while done < step:
                    n = self._move(r, dest, step - done) if step else 0
                    if n <= 0:
                        raise OSError(errno.EIO, "pipe stage made no progress")
                    done += n
                left -= step

    def _move(self, r: int, dest: int, count: int) -> int:
        if dest != self._sink or self._sink_splice:
            try:
                return os.splice(r, dest, count)
            except OSError as exc:
                # Some file systems (and O_APPEND files) refuse splice(): copy instead.
                if dest != self._sink or exc.errno not in _NO_SPLICE:
                    raise
                self._sink_splice = False
        data = os.read(r, count)
        write_all(dest, data)
        return len(data)

    def close(self) -> None:
        for r, w in self._pipes:
            os.close(r)
            os.close(w)
        self._pipes = []

    def __enter__(self) -> Fanout:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
